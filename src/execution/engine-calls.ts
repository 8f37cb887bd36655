/**
 * Time limits on Docker Engine API requests. An engine that hangs (a stuck daemon, a full disk
 * under its data root) leaves a request open forever, and a worker or orchestrator waiting on
 * it would never end the task or finish its pass. So every request that should get a quick
 * response gets SLIPWAY_DOCKER_TIMEOUT_SECONDS, and its error names the engine and the request.
 */
import type Docker from 'dockerode';
import { ExecutionError } from './executor.js';

/** SLIPWAY_DOCKER_TIMEOUT_SECONDS by default. */
export const DEFAULT_ENGINE_TIMEOUT_MS = 60_000;

/**
 * Error of a Docker engine that stopped responding or dropped the connection, rather than one
 * that rejected a request. The worker takes no docker tasks until the engine responds again.
 */
export class EngineFailure extends ExecutionError {
  constructor(
    message: string,
    options?: { cause?: unknown; exitCode?: number; stepMayRun?: boolean },
  ) {
    super(message, options);
    this.name = 'EngineFailure';
  }
}

/** Error of an engine request that got no response within its time limit. */
export class EngineTimeoutError extends EngineFailure {
  constructor(
    request: string,
    timeoutMs: number,
    options?: { cause?: unknown; stepMayRun?: boolean },
  ) {
    super(
      `the Docker engine did not respond to ${request} within ${formatSeconds(timeoutMs)}; ` +
        'check that the engine runs and responds (docker info)',
      options,
    );
    this.name = 'EngineTimeoutError';
  }
}

/**
 * Runs one engine request with a time limit on its response. `call` gets the abort signal to
 * pass to dockerode as `abortSignal`, which closes the request when the limit passes first.
 * After the response the limit no longer applies, so a stream that the response opens (attach)
 * stays open. `stop`, when given, aborts the request too, at any time, without the timeout error.
 */
export async function engineCall<T>(
  request: string,
  timeoutMs: number,
  call: (abortSignal: AbortSignal) => Promise<T>,
  stop?: AbortSignal,
): Promise<T> {
  const timeout = new AbortController();
  // Raced with the call too, for requests whose dockerode method drops the signal
  // (Image.inspect). Those requests stay open, but the caller goes on.
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      timeout.abort();
      reject(new EngineTimeoutError(request, timeoutMs));
    }, timeoutMs);
  });
  const signal = stop === undefined ? timeout.signal : AbortSignal.any([timeout.signal, stop]);
  try {
    return await Promise.race([call(signal), timedOut]);
  } catch (error) {
    if (timeout.signal.aborted && !(error instanceof EngineTimeoutError)) {
      throw new EngineTimeoutError(request, timeoutMs, { cause: error });
    }
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Restarts a container. The engine responds only after it stopped the container, which takes up
 * to `stopSeconds`, so the time limit is that plus `timeoutMs`.
 */
export async function restartWithinLimit(
  container: Docker.Container,
  stopSeconds: number,
  timeoutMs: number,
): Promise<void> {
  await engineCall('the restart', stopSeconds * 1000 + timeoutMs, (abortSignal) =>
    container.restart({ t: stopSeconds, abortSignal }),
  );
}

/** Formats milliseconds as seconds for messages: `60 s`, `0.5 s`. */
export function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}
