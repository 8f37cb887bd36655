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

export class SlipwayClient {
  /**
   * The base URL without a user name or password. Slipway authenticates with the bearer
   * token, and fetch rejects every URL that carries credentials, so they are dropped here as
   * the worker's client ignores them.
   */
  readonly #requestUrl: string;

  constructor(
    readonly baseUrl: string,
    readonly token: string,
  ) {
    this.#requestUrl = withoutCredentials(baseUrl);
  }

  async trigger(
    type: string,
    body: Record<string, unknown>,
    idempotencyKey?: string,
  ): Promise<TriggerResponse> {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (idempotencyKey !== undefined) headers['idempotency-key'] = idempotencyKey;
    const response = await this.fetch(`/api/trigger/${encodeURIComponent(type)}`, {
      method: 'POST',
      headers,
      body: JSON.stringify(body),
    });
    const created = (await response.json()) as { job_id: string; status: string };
    return { ...created, reused: response.status === 200 };
  }

  async job(jobId: string): Promise<JobResponse> {
    const response = await this.fetch(`/api/job/${encodeURIComponent(jobId)}`);
    return (await response.json()) as JobResponse;
  }

  async cancel(jobId: string, reason: string): Promise<void> {
    await this.fetch(`/api/job/${encodeURIComponent(jobId)}/cancel`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ reason }),
      signal: AbortSignal.timeout(5_000),
    });
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
    let response: Response;
    try {
      response = await fetch(`${this.#requestUrl}${path}`, {
        ...init,
        headers: {
          ...(init.headers as Record<string, string>),
          authorization: `Bearer ${this.token}`,
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
    try {
      message = (JSON.parse(text) as { error?: string }).error ?? text;
    } catch {
      // Not JSON: keep the text.
    }
    throw new CliError(
      `${init.method ?? 'GET'} ${path} failed with ${response.status}: ${message}`,
      API_EXIT_CODE,
    );
  }
}
