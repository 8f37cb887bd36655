/**
 * The error catalogue: every error the API returns has a stable code, an HTTP status and a
 * message that names the value and the fix. The body keeps the original API's `error` string and
 * adds the code, the field and the rule:
 *
 *   {"error": "commit must be a hex SHA of 7 to 64 characters", "code": "validation_failed",
 *    "field": "commit", "rule": "pattern", "request_id": "req-1"}
 */

export const ERROR_CODES = {
  validation_failed: { status: 400, summary: 'a body, parameter or query value is invalid' },
  invalid_json: {
    status: 400,
    summary:
      'the body is not valid JSON, or an object in it repeats a key or has a key that changes prototypes',
  },
  unauthorized: { status: 401, summary: 'no bearer token, or an unknown or revoked one' },
  invalid_signature: { status: 401, summary: 'the webhook signature does not match the body' },
  forbidden: {
    status: 403,
    summary:
      "the token's role may not use this endpoint, or an OIDC token's repository did not trigger the job, or an OIDC token named another workflow run",
  },
  worker_owned: {
    status: 403,
    summary: 'the worker id was registered with another agent token, which is still active',
  },
  route_not_found: { status: 404, summary: 'no endpoint has this path' },
  method_not_allowed: {
    status: 405,
    summary: 'the path has endpoints, but not for this method; the Allow header lists them',
  },
  job_not_found: { status: 404, summary: 'no job has this id' },
  task_not_found: { status: 404, summary: 'the job has no task with this id' },
  worker_not_found: { status: 404, summary: 'no worker is registered with this id' },
  job_type_not_found: { status: 404, summary: 'the pipeline file defines no such job type' },
  procedure_not_found: {
    status: 404,
    summary: 'the pipeline file defines no such recovery procedure',
  },
  invalid_transition: {
    status: 409,
    summary: 'the status change is not allowed from the current status',
  },
  dependency_not_met: {
    status: 409,
    summary: 'a waiting job cannot be queued before every job type it depends on has succeeded',
  },
  concurrency_group_busy: {
    status: 409,
    summary:
      'another job of the concurrency group is running, or an older one is queued, so this job cannot be set running yet',
  },
  job_active: { status: 409, summary: 'the job has not finished, so it cannot be retried' },
  job_finished: { status: 409, summary: 'the job has already finished' },
  worker_not_online: {
    status: 409,
    summary:
      'the worker is draining or offline, so it may not claim tasks until it is set online or registers again',
  },
  worker_session_replaced: {
    status: 409,
    summary: 'another worker process has registered this worker id since this one did',
  },
  worker_id_in_use: {
    status: 409,
    summary: 'another running worker process is registered with this worker id',
  },
  lease_lost: { status: 409, summary: 'the worker no longer holds the lease on this task' },
  no_previous_deploy: {
    status: 409,
    summary: 'there is no earlier successful deploy to roll back to',
  },
  request_timeout: {
    status: 408,
    summary: 'the request did not arrive completely within API_TIMEOUT',
  },
  body_too_large: {
    status: 413,
    summary: 'the body is larger than API_BODY_LIMIT, or 25 MB for the GitHub webhook',
  },
  unsupported_media_type: { status: 415, summary: 'the body must be application/json' },
  expectation_failed: {
    status: 417,
    summary: 'the Expect header names an expectation other than 100-continue',
  },
  idempotency_key_reused: {
    status: 422,
    summary: 'the Idempotency-Key was used for a different request',
  },
  github_run_reused: {
    status: 422,
    summary: 'the GitHub run already triggered this job type with a different request',
  },
  headers_too_large: {
    status: 431,
    summary: 'the request headers are larger than the server accepts (16 KiB)',
  },
  rate_limited: {
    status: 429,
    summary:
      'too many requests for this token, or too many failed authentications from this address; retry after the given time',
  },
  method_not_implemented: {
    status: 501,
    summary: 'the request method is not one the server knows',
  },
  internal_error: {
    status: 500,
    summary: 'an unexpected failure; the request id is in the server log',
  },
  recovery_failed: { status: 502, summary: 'the recovery procedure ran and failed' },
  github_unavailable: { status: 502, summary: 'GitHub did not answer or failed' },
  github_not_configured: {
    status: 503,
    summary: 'GITHUB_TOKEN or GITHUB_REPOSITORY is not set, so nothing can be sent to GitHub',
  },
  webhook_not_configured: {
    status: 503,
    summary: 'GITHUB_WEBHOOK_SECRET is not set, so webhooks cannot be verified and are rejected',
  },
  service_unavailable: {
    status: 503,
    summary:
      'the server is starting, stopping or overloaded, another process holds the database lock, the disk is full or cannot be written, or the database file was deleted or replaced while the server ran',
  },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class ApiError extends Error {
  readonly status: number;

  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly field?: string,
    readonly rule?: string,
    readonly extra?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'ApiError';
    this.status = ERROR_CODES[code].status;
  }
}

export interface ErrorBody {
  error: string;
  code: ErrorCode;
  field?: string;
  rule?: string;
  request_id?: string;
  [key: string]: unknown;
}

export function errorBody(error: ApiError, requestId?: string): ErrorBody {
  const body: ErrorBody = { error: error.message, code: error.code };
  if (error.field !== undefined) body.field = error.field;
  if (error.rule !== undefined) body.rule = error.rule;
  if (requestId !== undefined) body.request_id = requestId;
  return { ...body, ...error.extra };
}

export function jobNotFound(id: string): ApiError {
  return new ApiError('job_not_found', `job ${JSON.stringify(id)} not found`, 'job_id', 'exists');
}
