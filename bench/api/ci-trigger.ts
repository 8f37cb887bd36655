/** The trigger both in-process benchmarks send: POST /api/trigger/ci's request, as triggerJob takes it. */
import type { TriggerRequest } from '../../src/orchestrator/trigger.js';

/** Returns a `ci` trigger with a unique GitHub run id, on `branch`. */
export function ciTrigger(runId: number, branch = 'main'): TriggerRequest {
  return {
    type: 'ci',
    commit: '0123456789abcdef0123456789abcdef01234567',
    branch,
    inputs: { python_versions: ['3.10', '3.11'] },
    params: {},
    githubRunId: String(runId),
    githubRunAttempt: 1,
    idempotencyKey: null,
  };
}
