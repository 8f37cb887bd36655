/** A small client for the Slipway HTTP API, used by `slipway trigger`. */
import { redactUrl, redactUrls, withoutCredentials } from '../util/url.js';
import { CliError } from './run.js';

/** Exit code for an API that cannot be reached or rejects a request (see trigger.ts). */
const API_EXIT_CODE = 8;

export interface TriggerResponse {
  job_id: string;
  status: string;
  /** True when an earlier request with the same key or GitHub run created the job. */
  reused: boolean;
}

export interface JobResponse {
  id: string;
  status: string;
  reason: string | null;
  attempt: number;
  tasks: Array<{ id: string; name: string; status: string; attempt: number }>;
}

/** A non-2xx response of the API, with its status and parsed JSON body (exit 8). */
export class ApiResponseError extends CliError {
  constructor(
    message: string,
    readonly status: number,
    readonly body: Record<string, unknown>,
  ) {
    super(message, API_EXIT_CODE);
    this.name = 'ApiResponseError';
  }
}

/**
 * Seconds that a cancel request may take, so an interrupted command still ends in time. With
 * the trigger's 3 s grace and 2 s repeat (send-trigger.ts), 1 s of the runner's 10 s between
 * SIGINT and SIGKILL is left to report the end.
 */
const CANCEL_TIMEOUT_SECONDS = 4;

/** Returns the bearer token for the next request. */
export type TokenSource = () => Promise<string>;

/** Milliseconds before its expiry at which a GitHub Actions OIDC token is requested again. */
const OIDC_RENEW_MS = 60_000;

/**
 * Returns a source of GitHub Actions OIDC tokens for `audience`, requested from the URL and
 * with the token that GitHub gives a job with `permissions: id-token: write`. A token is kept
 * until it expires within OIDC_RENEW_MS, so a long wait for a job renews it.
 */
export function githubOidcTokens(
  audience: string,
  env: Record<string, string | undefined> = process.env,
): TokenSource {
  const url = env.ACTIONS_ID_TOKEN_REQUEST_URL;
  const requestToken = env.ACTIONS_ID_TOKEN_REQUEST_TOKEN;
  if (url === undefined || url === '' || requestToken === undefined || requestToken === '') {
    throw new CliError(
      'SLIPWAY_OIDC_AUDIENCE is set, but ACTIONS_ID_TOKEN_REQUEST_URL is not: give the ' +
        'workflow job "permissions: id-token: write"',
      2,
    );
  }
  let current: { token: string; expiresAt: number } | undefined;
  return async () => {
    if (current !== undefined && current.expiresAt - OIDC_RENEW_MS > Date.now()) {
      return current.token;
    }
    const requestUrl = new URL(url);
    requestUrl.searchParams.set('audience', audience);
    let response: Response;
    try {
      response = await fetch(requestUrl, { headers: { authorization: `bearer ${requestToken}` } });
    } catch (error) {
      throw new CliError(
        `could not get a GitHub Actions OIDC token: ${String(error)}`,
        API_EXIT_CODE,
      );
    }
    if (!response.ok) {
      throw new CliError(
        `the GitHub Actions OIDC token request failed with ${response.status}`,
        API_EXIT_CODE,
      );
    }
    let value: unknown;
    try {
      value = ((await response.json()) as { value?: unknown }).value;
    } catch {
      // Not JSON: reported below as a response without a token.
    }
    if (typeof value !== 'string' || value.split('.').length !== 3) {
      throw new CliError('the GitHub Actions OIDC token request returned no token', API_EXIT_CODE);
    }
    let expiresAt = 0;
    try {
      const claims = JSON.parse(Buffer.from(value.split('.')[1]!, 'base64url').toString('utf8'));
      if (typeof claims.exp === 'number') expiresAt = claims.exp * 1000;
    } catch {
      // Unreadable claims: the token is used once and requested again for the next request.
    }
    current = { token: value, expiresAt };
    return value;
  };
}

export class SlipwayClient {
  /**
   * The base URL without a user name or password. Slipway authenticates with the bearer
   * token, and fetch rejects every URL that carries credentials, so they are dropped here as
   * the worker's client ignores them.
   */
  readonly #requestUrl: string;

  constructor(
    readonly baseUrl: string,
    readonly token: string | TokenSource,
  ) {
    this.#requestUrl = withoutCredentials(baseUrl);
  }

  /** Triggers a job; `signal` aborts the request, which then throws the abort's reason. */
  async trigger(
    type: string,
    body: Record<string, unknown>,
    idempotencyKey?: string,
    signal?: AbortSignal,
  ): Promise<TriggerResponse> {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (idempotencyKey !== undefined) headers['idempotency-key'] = idempotencyKey;
    const response = await this.fetch(`/api/trigger/${encodeURIComponent(type)}`, {
      method: 'POST',
      headers,
      body: JSON.stringify(body),
      signal,
    });
    const created = (await response.json()) as { job_id: string; status: string };
    return { ...created, reused: response.status === 200 };
  }

  async job(jobId: string): Promise<JobResponse> {
    const response = await this.fetch(`/api/job/${encodeURIComponent(jobId)}`);
    return (await response.json()) as JobResponse;
  }

  /** Cancels the job; throws ApiResponseError (409 job_finished for an ended job) or CliError. */
  async cancel(jobId: string, reason: string): Promise<void> {
    const path = `/api/job/${encodeURIComponent(jobId)}/cancel`;
    const signal = AbortSignal.timeout(CANCEL_TIMEOUT_SECONDS * 1000);
    try {
      await this.fetch(path, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ reason }),
        signal,
      });
    } catch (error) {
      if (!signal.aborted) throw error;
      throw new CliError(`POST ${path} timed out after ${CANCEL_TIMEOUT_SECONDS}s`, API_EXIT_CODE);
    }
  }

  /** Opens the followed log of one task: the body streams until the task ends. */
  async taskLog(
    jobId: string,
    taskId: string,
    attempt: number,
    signal: AbortSignal,
  ): Promise<Response> {
    const query = new URLSearchParams({ task: taskId, attempt: String(attempt), follow: 'true' });
    return this.fetch(`/api/job/${encodeURIComponent(jobId)}/logs?${query}`, { signal });
  }

  /** Sends a request with the bearer token; throws CliError (exit 8) unless the response is 2xx. */
  async fetch(path: string, init: RequestInit = {}): Promise<Response> {
    const token = typeof this.token === 'string' ? this.token : await this.token();
    let response: Response;
    try {
      response = await fetch(`${this.#requestUrl}${path}`, {
        ...init,
        headers: {
          ...(init.headers as Record<string, string>),
          authorization: `Bearer ${token}`,
        },
      });
    } catch (error) {
      if (init.signal?.aborted === true) throw error;
      const cause = (error as { cause?: { message?: string } }).cause?.message ?? String(error);
      throw new CliError(
        `cannot reach the Slipway API at ${redactUrl(this.baseUrl)}: ${redactUrls(cause)}`,
        API_EXIT_CODE,
      );
    }
    if (response.ok) return response;
    const text = await response.text();
    let message = text;
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(text) as Record<string, unknown>;
      if (typeof body.error === 'string') message = body.error;
    } catch {
      // Not JSON: keep the text.
    }
    throw new ApiResponseError(
      `${init.method ?? 'GET'} ${path} failed with ${response.status}: ${message}`,
      response.status,
      body,
    );
  }
}
