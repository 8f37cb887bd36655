/**
 * The claim payload of one task: everything a worker needs to run it without reading the
 * database or the pipeline file.
 */
import { DEFAULT_TIMEOUT_MS, renderImage } from '../pipeline/load.js';
import type { Pipeline, Resources, SecretRef, Step } from '../pipeline/types.js';
import { parseJsonColumn } from '../store/json.js';
import type { JobRow, TaskRow } from '../store/schema.js';
import { escapeControlCharacters } from '../util/printable.js';

/** Longest `reason`, in characters, that a worker's finish or release report may carry. */
export const MAX_REPORT_REASON_LENGTH = 2000;

/**
 * Returns a finish or release reason as a worker sends it and the API stores it: control
 * characters other than tab escaped as escapeControlCharacters does, then cut to
 * MAX_REPORT_REASON_LENGTH. A reason that has been through this comes back unchanged.
 */
export function printableReportReason(reason: string): string {
  return fitReason(escapeControlCharacters(reason));
}

/** Cuts a report reason to MAX_REPORT_REASON_LENGTH, ending it with "…" when cut. */
function fitReason(reason: string): string {
  if (reason.length <= MAX_REPORT_REASON_LENGTH) return reason;
  let end = MAX_REPORT_REASON_LENGTH - 1;
  // A cut inside a surrogate pair would leave a lone surrogate, which has no UTF-8 form.
  const last = reason.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end -= 1;
  return `${reason.slice(0, end)}…`;
}

export interface TaskSpec {
  task_id: string;
  /** Lease attempt; every heartbeat, log upload and finish must name it. */
  attempt: number;
  lease_expires_at: string;
  job: {
    id: string;
    type: string;
    attempt: number;
    commit: string | null;
    branch: string | null;
  };
  name: string;
  matrix: Record<string, string>;
  /** `docker`, `local`, or null for the worker's default executor. */
  executor: 'docker' | 'local' | null;
  /** The image with matrix values filled in; null when the pipeline names none. */
  image: string | null;
  repository: string | null;
  steps: Step[];
  /** Every environment variable the steps get, except secrets. */
  env: Record<string, string>;
  /** Secrets by name and source; the worker reads their values on its own host. */
  secrets: SecretRef[];
  timeout_ms: number;
  network: string | null;
  /**
   * Container user of the docker executor, with `worker` not yet resolved. Null keeps the
   * image's USER.
   */
  user: string | null;
  resources: Resources;
  side_effects: boolean;
  /**
   * Whether an `error` outcome of this attempt is queued again under the pipeline's `retries`.
   * An API from before this field sends none.
   */
  retry_on_error?: boolean;
}

/** Variables that taskEnvironment sets for every task, over `env` entries of the same name. */
export const TASK_VARIABLES = [
  'CI',
  'SLIPWAY',
  'SLIPWAY_JOB_ID',
  'SLIPWAY_JOB_TYPE',
  'SLIPWAY_JOB_ATTEMPT',
  'SLIPWAY_TASK_ID',
  'SLIPWAY_TASK_NAME',
  'SLIPWAY_COMMIT',
  'SLIPWAY_BRANCH',
] as const;

/** Prefix of the variable that carries each trigger parameter, SLIPWAY_PARAM_<NAME>. */
export const PARAM_VARIABLE_PREFIX = 'SLIPWAY_PARAM_';

/** Turns a matrix axis or parameter name into an environment variable name. */
export function envName(name: string): string {
  return name
    .toUpperCase()
    .replace(/[^A-Z0-9_]/g, '_')
    .replace(/^(?=\d)/, '_');
}

/**
 * Builds the environment of a task's steps. Trigger values (commit, branch, matrix values,
 * params) reach steps only here, as variables, never inside a command line.
 */
export function taskEnvironment(
  job: JobRow,
  task: TaskRow,
  pipeline: Pipeline,
  matrix: Record<string, string>,
): Record<string, string> {
  const env: Record<string, string> = { ...pipeline.env };
  const inputs = parseJsonColumn<{ params?: Record<string, unknown> }>(job.params, {});
  for (const [key, value] of Object.entries(inputs.params ?? {})) {
    if (value === null || value === undefined) continue;
    env[`${PARAM_VARIABLE_PREFIX}${envName(key)}`] =
      typeof value === 'string' ? value : JSON.stringify(value);
  }
  for (const [axis, value] of Object.entries(matrix)) env[envName(axis)] = value;
  // The type makes this list and TASK_VARIABLES name the same variables.
  const own: Record<(typeof TASK_VARIABLES)[number], string> = {
    CI: 'true',
    SLIPWAY: 'true',
    SLIPWAY_JOB_ID: job.id,
    SLIPWAY_JOB_TYPE: job.type,
    SLIPWAY_JOB_ATTEMPT: String(job.attempt),
    SLIPWAY_TASK_ID: task.id,
    SLIPWAY_TASK_NAME: task.name,
    SLIPWAY_COMMIT: job.commit_sha ?? '',
    SLIPWAY_BRANCH: job.branch ?? '',
  };
  return Object.assign(env, own);
}

export function buildTaskSpec(job: JobRow, task: TaskRow): TaskSpec {
  const pipeline = parseJsonColumn<Pipeline & { repository?: string }>(
    job.pipeline,
    {} as Pipeline,
  );
  const matrix = parseJsonColumn<Record<string, string>>(task.matrix, {});
  return {
    task_id: task.id,
    attempt: task.attempt,
    lease_expires_at: task.lease_expires_at ?? '',
    job: {
      id: job.id,
      type: job.type,
      attempt: job.attempt,
      commit: job.commit_sha,
      branch: job.branch,
    },
    name: task.name,
    matrix,
    executor: (task.executor as TaskSpec['executor']) ?? pipeline.executor ?? null,
    image: pipeline.image === undefined ? null : renderImage(pipeline.image, matrix),
    repository: pipeline.repository ?? null,
    steps: pipeline.steps ?? [],
    env: taskEnvironment(job, task, pipeline, matrix),
    secrets: pipeline.secrets ?? [],
    timeout_ms: pipeline.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    network: pipeline.network ?? null,
    // Jobs stored before `user` existed have no such field.
    user: pipeline.user ?? null,
    resources: pipeline.resources ?? { memory: undefined, cpus: undefined, pids: undefined },
    side_effects: pipeline.sideEffects ?? false,
    // The rule of finishTask, without its cancel check: hand-backs use up no attempt.
    retry_on_error: task.attempt - task.hand_backs < (pipeline.retries ?? 0) + 1,
  };
}
