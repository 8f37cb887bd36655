/**
 * Statuses shared by jobs and tasks, and the transitions between them.
 *
 *   waiting ──> queued ──> running ──> success | failure | error | timed_out | cancelled
 *      │          │           │
 *      │          │           └──> queued       (lease expired, attempt counted)
 *      │          └──> error | cancelled | skipped
 *      └──> skipped | cancelled | error
 *
 * A job's status is derived from its tasks (see deriveJobStatus). Terminal statuses never
 * change again; a retry starts a new attempt of the job with new tasks instead.
 */
export const STATUSES = [
  'waiting',
  'queued',
  'running',
  'success',
  'failure',
  'error',
  'timed_out',
  'cancelled',
  'skipped',
] as const;

export type Status = (typeof STATUSES)[number];

/** One-line meaning of every status, used in the API reference and in `slipway --help`. */
export const STATUS_MEANINGS: Record<Status, string> = {
  waiting: 'a dependency has not succeeded yet',
  queued: 'may start; no worker holds it',
  running: 'a worker holds its lease',
  success: 'every step exited 0',
  failure: 'a step exited non-zero (the code under test failed)',
  error: 'Slipway or the infrastructure failed',
  timed_out: 'a timeout stopped it',
  cancelled: 'a person, an API call or a newer run in the same concurrency group stopped it',
  skipped: 'a dependency ended in anything but success',
};

export const TERMINAL_STATUSES: ReadonlySet<Status> = new Set([
  'success',
  'failure',
  'error',
  'timed_out',
  'cancelled',
  'skipped',
]);

export const ACTIVE_STATUSES: readonly Status[] = ['waiting', 'queued', 'running'];

const TRANSITIONS: Record<Status, readonly Status[]> = {
  waiting: ['queued', 'skipped', 'cancelled', 'error'],
  queued: ['running', 'skipped', 'cancelled', 'error'],
  running: ['queued', 'success', 'failure', 'error', 'timed_out', 'cancelled'],
  success: [],
  failure: [],
  error: [],
  timed_out: [],
  cancelled: [],
  skipped: [],
};

export function isStatus(value: string): value is Status {
  return (STATUSES as readonly string[]).includes(value);
}

export function isTerminal(status: Status): boolean {
  return TERMINAL_STATUSES.has(status);
}

export function canTransition(from: Status, to: Status): boolean {
  return TRANSITIONS[from].includes(to);
}

export function allowedTransitions(from: Status): readonly Status[] {
  return TRANSITIONS[from];
}

/**
 * Returns why an exit code contradicts a status, or undefined when it does not. Success means
 * every step exited 0 and failure that a step exited non-zero. Any other status takes any exit
 * code or none, because a task that timed out, was cancelled or hit an error may or may not
 * have one.
 */
export function exitCodeConflict(
  status: Status,
  exitCode: number | null | undefined,
): string | undefined {
  if (exitCode === null || exitCode === undefined) return undefined;
  if (status === 'success' && exitCode !== 0) {
    return (
      `exit_code ${exitCode} contradicts status success, which means every step exited 0; ` +
      'send exit_code 0 or leave it out, or report failure'
    );
  }
  if (status === 'failure' && exitCode === 0) {
    return (
      'exit_code 0 contradicts status failure, which means a step exited non-zero; ' +
      "send that step's exit code or leave it out, or report success"
    );
  }
  return undefined;
}

/**
 * Derives a job's status from its tasks' statuses.
 *
 * While any task is active the job is active: running once any task has started or
 * finished, else queued, else waiting. Once every task is terminal, the job takes the most
 * serious outcome: error, then timed_out, then failure, then cancelled, then skipped, and
 * success only when every task succeeded.
 */
export function deriveJobStatus(taskStatuses: readonly Status[]): Status {
  if (taskStatuses.length === 0) return 'queued';
  const present = new Set(taskStatuses);
  const active = taskStatuses.some((status) => !isTerminal(status));
  if (active) {
    if (present.has('running') || taskStatuses.some(isTerminal)) return 'running';
    return present.has('queued') ? 'queued' : 'waiting';
  }
  for (const status of ['error', 'timed_out', 'failure', 'cancelled', 'skipped'] as const) {
    if (present.has(status)) return status;
  }
  return 'success';
}
