/** Types of the probe of a health check: its result and its context. */
import type { AppContext } from '../app/context.js';

/**
 * Component statuses, from best to worst:
 * - `healthy`: the component does its job;
 * - `degraded`: it works but needs attention (slow, little disk left, a stale worker);
 * - `unhealthy`: it does not work; a self-healing action may follow.
 */
export const HEALTH_STATES = ['healthy', 'degraded', 'unhealthy'] as const;
export type HealthState = (typeof HEALTH_STATES)[number];

export interface ProbeResult {
  status: HealthState;
  /** Reason the status is not healthy, in a sentence that names the value and the limit. */
  reason?: string | undefined;
  /** Latency the probe measured itself (an HTTP response); else the runner times the probe. */
  latencyMs?: number | undefined;
  details: Record<string, unknown>;
  /** Milliseconds after which the check runs again, when sooner than its interval. */
  recheckInMs?: number | undefined;
}

export interface ProbeContext {
  app: AppContext;
  /** Aborted when the check's timeout passes or the monitor stops. */
  signal: AbortSignal;
  /** Values the check kept from its previous run; a probe may change them for the next run. */
  memo: Record<string, unknown>;
}

export function worstOf(states: Iterable<HealthState>): HealthState {
  let worst: HealthState = 'healthy';
  for (const state of states) {
    if (HEALTH_STATES.indexOf(state) > HEALTH_STATES.indexOf(worst)) worst = state;
  }
  return worst;
}

/** Describes an error by its message and the system error code of its cause, if any. */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause as { code?: string; message?: string } | undefined;
  const code = (error as NodeJS.ErrnoException).code ?? cause?.code;
  const message =
    cause?.message !== undefined && error.message === 'fetch failed'
      ? cause.message
      : error.message;
  return code !== undefined && !message.includes(code) ? `${message} (${code})` : message;
}
