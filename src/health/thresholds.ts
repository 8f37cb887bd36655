/**
 * The status of a component after its thresholds. A failing (`unhealthy`) result moves a
 * healthy or degraded component to `unhealthy` only when `down` results in a row have failed.
 * An unhealthy component comes back only after `up` passing results in a row. A passing
 * result of an up component takes effect at once, so `degraded` shows without delay. The
 * first result of a component is taken as it is, since there is no earlier status to keep.
 */
import type { HealthThresholds } from '../pipeline/types.js';
import type { HealthState } from './types.js';

export interface ComponentStreak {
  status: HealthState | null;
  failures: number;
  successes: number;
}

export function applyResult(
  previous: ComponentStreak,
  observed: HealthState,
  thresholds: HealthThresholds,
): ComponentStreak & { status: HealthState } {
  const failing = observed === 'unhealthy';
  const failures = failing ? previous.failures + 1 : 0;
  const successes = failing ? 0 : previous.successes + 1;
  let status: HealthState;
  if (previous.status === null) {
    status = observed;
  } else if (failing) {
    status = failures >= thresholds.down ? 'unhealthy' : previous.status;
  } else if (previous.status === 'unhealthy') {
    status = successes >= thresholds.up ? observed : 'unhealthy';
  } else {
    status = observed;
  }
  return { status, failures, successes };
}
