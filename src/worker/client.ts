/**
 * The worker's HTTP client for the agent API. Workers never touch the database: everything
 * goes through these calls, with the agent token as a bearer token.
 */
import http from 'node:http';
import https from 'node:https';
import { printableReportReason, type TaskSpec } from '../dispatch/task-spec.js';
import type { StoppedLeftovers } from '../execution/executor.js';
import { redactUrl } from '../util/url.js';

export class AgentError extends Error {
  constructor(
    message: string,
    /** HTTP status, or 0 when no response arrived. */
    readonly status: number,
    readonly code: string | undefined,
    options?: { cause?: unknown },
    /** Fields of the error body beyond the message and code, such as a worker's `status`. */
    readonly details: Record<string, unknown> = {},
  ) {
    super(message, options);
    this.name = 'AgentError';
  }

  /** Whether the same request may succeed later: no response, a 5xx or a rate limit. */
  get retryable(): boolean {
    return this.status === 0 || this.status >= 500 || this.status === 429;
  }

  get leaseLost(): boolean {
    return this.code === 'lease_lost';
  }
}

export interface Registration {
  worker_id: string;
  lease_seconds: number;
  heartbeat_interval_ms: number;
  max_claim_wait_seconds: number;
  /** Value of the slipway.instance label, from the API's database path. */
  instance_id: string;
}

export interface LeaseBody {
  worker_id: string;
  attempt: number;
}

export interface FinishBody extends LeaseBody {
  status: 'success' | 'failure' | 'error' | 'timed_out' | 'cancelled';
  exit_code: number | null;
  reason: string | null;
  duration_ms: number;
  /**
   * False when the worker could not make sure that the steps stopped (a Docker engine that
   * stopped responding): the task ends, but keeps its lease until a later report sets it to true.
   */
  step_stopped?: boolean;
}

export class AgentClient {
  readonly #httpAgent = new http.Agent({ keepAlive: true });
  readonly #httpsAgent = new https.Agent({ keepAlive: true });

  constructor(
    readonly baseUrl: string,
    readonly token: string,
  ) {}

  register(body: {
    worker_id: string;
    name: string;
    session: string;
    hostname: string;
    executors: string[];
    capacity: number;
    labels: string[];
    version: string;
  }): Promise<Registration> {
    return this.#post('/api/agent/workers', body);
  }

  async claim(
    workerId: string,
    session: string,
    max: number,
    waitSeconds: number,
    holding: string[],
    signal?: AbortSignal,
    executors?: string[],
  ): Promise<TaskSpec[]> {
    const answer = await this.#post<{ tasks: TaskSpec[] }>(
      `/api/agent/workers/${encodeURIComponent(workerId)}/claim`,
      { max, wait_seconds: waitSeconds, session, holding, executors },
      signal,
    );
    return answer.tasks;
  }

  setStatus(workerId: string, status: 'online' | 'draining' | 'offline'): Promise<unknown> {
    return this.#post(`/api/agent/workers/${encodeURIComponent(workerId)}/status`, { status });
  }

  /** Reports the processes of ended workers that this worker's executor killed. */
  reportLeftovers(workerId: string, stopped: StoppedLeftovers): Promise<unknown> {
    const steps = (list: Array<{ pid: number; taskId: string | undefined; code?: string }>) =>
      list.map((step) => ({ pid: step.pid, task_id: step.taskId ?? null, code: step.code }));
    return this.#post(`/api/agent/workers/${encodeURIComponent(workerId)}/leftovers`, {
      killed: steps(stopped.killed),
      failed: steps(stopped.failed),
    });
  }

  heartbeat(
    taskId: string,
    body: LeaseBody,
  ): Promise<{ lease_expires_at: string; cancel_requested: boolean; ended_status?: string }> {
    return this.#post(`/api/agent/tasks/${taskId}/heartbeat`, body);
  }

  uploadLog(taskId: string, body: LeaseBody & { offset: number; data: string }): Promise<unknown> {
    return this.#post(`/api/agent/tasks/${taskId}/logs`, body);
  }

  finish(taskId: string, body: FinishBody): Promise<{ status: string; retried: boolean }> {
    // The API rejects a longer reason, and the task would then stay running until its lease
    // ran out. Error messages that quote git's output or a long path can be longer, and
    // engine messages can hold line breaks, which the reason must not carry into logs.
    const reason = body.reason === null ? null : printableReportReason(body.reason);
    return this.#post(`/api/agent/tasks/${taskId}/finish`, { ...body, reason });
  }

  release(taskId: string, body: LeaseBody & { reason: string }): Promise<{ status: string }> {
    const reason = printableReportReason(body.reason);
    return this.#post(`/api/agent/tasks/${taskId}/release`, { ...body, reason });
  }

  /** Closes the client's kept-alive connections; call when the worker has stopped. */
  close(): void {
    this.#httpAgent.destroy();
    this.#httpsAgent.destroy();
  }

  async #post<T>(urlPath: string, body: unknown, signal?: AbortSignal): Promise<T> {
    let response: { status: number; text: string };
    try {
      response = await this.#request(urlPath, JSON.stringify(body), signal);
    } catch (error) {
      if (signal?.aborted === true) throw error;
      throw new AgentError(
        `POST ${urlPath} failed: no response from ${redactUrl(this.baseUrl)} (${(error as Error).message})`,
        0,
        undefined,
        { cause: error },
      );
    }
    if (response.status < 200 || response.status >= 300) {
      let code: string | undefined;
      let message = response.text;
      let details: Record<string, unknown> = {};
      try {
        const parsed = JSON.parse(response.text) as Record<string, unknown>;
        code = typeof parsed.code === 'string' ? parsed.code : undefined;
        message = typeof parsed.error === 'string' ? parsed.error : response.text;
        details = parsed;
      } catch {
        // The body was not JSON (a proxy's error page); keep it as text.
      }
      throw new AgentError(
        `POST ${urlPath} returned ${response.status}: ${message}`,
        response.status,
        code,
        undefined,
        details,
      );
    }
    return JSON.parse(response.text) as T;
  }

  /**
   * One POST through the client's own keep-alive agents (node:http rather than fetch), so
   * that `close` can end the connections and a stopping API is not kept waiting for them.
   */
  #request(
    urlPath: string,
    payload: string,
    signal: AbortSignal | undefined,
  ): Promise<{ status: number; text: string }> {
    const url = new URL(`${this.baseUrl}${urlPath}`);
    const secure = url.protocol === 'https:';
    const send = secure ? https.request : http.request;
    return new Promise((resolve, reject) => {
      // The abort listener is removed as soon as the request is over: the socket then goes
      // back to the keep-alive pool, and a late abort must not destroy another request's socket.
      const onAbort = () => request.destroy(new Error('request aborted'));
      const settle = () => signal?.removeEventListener('abort', onAbort);
      const request = send(
        url,
        {
          method: 'POST',
          agent: secure ? this.#httpsAgent : this.#httpAgent,
          headers: {
            authorization: `Bearer ${this.token}`,
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(payload),
          },
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('error', (error) => {
            settle();
            reject(error);
          });
          response.on('end', () => {
            settle();
            resolve({
              status: response.statusCode ?? 0,
              text: Buffer.concat(chunks).toString('utf8'),
            });
          });
        },
      );
      request.on('error', (error) => {
        settle();
        reject(error);
      });
      if (signal?.aborted === true) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
      request.end(payload);
    });
  }
}
