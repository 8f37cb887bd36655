/**
 * Creating a job: idempotency, matrix expansion into tasks, dependency gating and the
 * concurrency group, all in one transaction with its audit row.
 */
import { createHash } from 'node:crypto';
import type BetterSqlite3 from 'better-sqlite3';
import type { Transaction } from 'kysely';
import type { AppContext } from '../app/context.js';
import { ApiError } from '../api/errors.js';
import { isImageReference } from '../execution/image-reference.js';
import { newJobId, taskId } from '../jobs/ids.js';
import { expandMatrix, MatrixError, taskName } from '../jobs/matrix.js';
import type { Status } from '../jobs/status.js';
import { renderConcurrencyGroup, renderImage } from '../pipeline/load.js';
import type { Pipeline } from '../pipeline/types.js';
import { writeAudit, type AuditContext } from '../store/audit.js';
import {
  readJobByGithubRun,
  readJobByIdempotencyKey,
  recordIdempotencyKey,
} from '../store/jobs.js';
import { param, paramsFor, prepare, updateById } from '../store/prepared.js';
import type { Database, JobRow, TaskRow } from '../store/schema.js';
import { writeConnection } from '../store/write-queue.js';
import { nowIso } from '../util/time.js';
import { cancelJob } from './cancel.js';
import { ChangeSet } from './changes.js';
import {
  dependenciesOf,
  evaluateDependencies,
  LATEST_OF_TYPE,
  resolveDependents,
} from './dependencies.js';

type Trx = Transaction<Database>;

export interface TriggerRequest {
  type: string;
  commit: string | null;
  branch: string | null;
  /** Trigger body fields that may feed matrix axes (e.g. `python_versions`) and `params`. */
  inputs: Record<string, unknown>;
  params: Record<string, unknown>;
  githubRunId: string | null;
  githubRunAttempt: number | null;
  idempotencyKey: string | null;
  /** Extra detail for the audit row, such as the webhook delivery that caused the trigger. */
  auditDetails?: Record<string, unknown>;
}

export interface TriggerResult {
  job: JobRow;
  /** False when an earlier request with the same key or GitHub run created the job. */
  created: boolean;
}

const PRIMARY_KEY_RETRIES = 5;

const JOB_COLUMNS = [
  'id',
  'type',
  'status',
  'commit_sha',
  'branch',
  'params',
  'github_run_id',
  'github_run_attempt',
  'idempotency_key',
  'request_hash',
  'attempt',
  'reason',
  'requested_by',
  'concurrency_group',
  'pipeline',
  'created_at',
  'queued_at',
  'started_at',
  'finished_at',
  'updated_at',
] as const satisfies ReadonlyArray<keyof JobRow>;

// A column added to JobsTable but not to JOB_COLUMNS would be left out of every insert.
const everyJobColumn: Exclude<keyof JobRow, (typeof JOB_COLUMNS)[number]> extends never
  ? true
  : never = true;
void everyJobColumn;

const TASK_COLUMNS = [
  'id',
  'job_id',
  'job_attempt',
  'idx',
  'name',
  'matrix',
  'status',
  'executor',
  'worker_id',
  'lease_expires_at',
  'attempt',
  'max_attempts',
  'exit_code',
  'log_path',
  'reason',
  'cancel_requested_at',
  'created_at',
  'queued_at',
  'started_at',
  'finished_at',
  'updated_at',
] as const satisfies ReadonlyArray<keyof TaskRow>;

type NewTaskRow = Pick<TaskRow, (typeof TASK_COLUMNS)[number]>;

// The same for tasks. Four columns are never written at insert: duration_ms when a task
// ends, worker_session when a worker claims it, lease_renewed_at when an API starts and
// hand_backs (0 by default) when a worker hands it back.
const everyTaskColumn: Exclude<
  keyof TaskRow,
  | (typeof TASK_COLUMNS)[number]
  | 'duration_ms'
  | 'worker_session'
  | 'lease_renewed_at'
  | 'hand_backs'
> extends never
  ? true
  : never = true;
void everyTaskColumn;

const INSERT_JOB = prepare<JobRow>((db) => db.insertInto('jobs').values(paramsFor(JOB_COLUMNS)));
const INSERT_TASK = prepare<NewTaskRow>((db) =>
  db.insertInto('tasks').values(paramsFor(TASK_COLUMNS)),
);
const ACTIVE_IN_GROUP = prepare<{ group: string; id: string }>((db) =>
  db
    .selectFrom('jobs')
    .selectAll()
    .where('concurrency_group', '=', param('group'))
    .where('status', 'in', ['waiting', 'queued', 'running'])
    .where('id', '!=', param('id')),
);

export function findPipeline(context: AppContext, type: string): Pipeline {
  const pipeline = context.pipelines.pipelines[type];
  if (pipeline === undefined) {
    throw new ApiError(
      'job_type_not_found',
      // A trigger token needs the defined types, not the server's file paths.
      `job type "${type}" is not defined in the pipeline file; defined types: ` +
        Object.keys(context.pipelines.pipelines).join(', '),
      'type',
      'defined',
    );
  }
  return pipeline;
}

export async function triggerJob(
  context: AppContext,
  request: TriggerRequest,
  audit: AuditContext,
): Promise<TriggerResult> {
  const pipeline = findPipeline(context, request.type);
  const combinations = matrixOf(pipeline, request);
  const requestHash = hashRequest(request);
  const changes = new ChangeSet();
  const result = await context.store.write(async (trx) => {
    const sqlite = writeConnection(trx);
    const existing = findExisting(sqlite, request, requestHash, audit.actor);
    if (existing !== undefined) return { job: existing, created: false };
    const job = await insertJob(trx, context, request, pipeline, combinations, requestHash, {
      sqlite,
      changes,
      audit,
    });
    return { job, created: true };
  });
  changes.emit(context.events);
  return result;
}

function matrixOf(pipeline: Pipeline, request: TriggerRequest): Array<Record<string, string>> {
  let combinations: Array<Record<string, string>>;
  try {
    combinations = expandMatrix(pipeline.matrix, request.inputs, request.params);
  } catch (error) {
    if (error instanceof MatrixError) {
      throw new ApiError('validation_failed', error.message, error.field, error.rule);
    }
    throw error;
  }
  if (pipeline.image !== undefined) {
    for (const combination of combinations) checkImage(pipeline, request, combination);
  }
  return combinations;
}

/**
 * Rejects a combination whose values make the job type's image an invalid Docker image
 * reference, naming the trigger field of the first value that does.
 */
function checkImage(
  pipeline: Pipeline,
  request: TriggerRequest,
  combination: Record<string, string>,
): void {
  const image = renderImage(pipeline.image!, combination);
  if (isImageReference(image)) return;
  const culprit =
    pipeline.matrix.find((axis) =>
      isImageReference(renderImage(pipeline.image!, { ...combination, [axis.name]: 'x' })),
    ) ?? pipeline.matrix[0];
  let field = 'image';
  if (culprit?.from !== undefined) {
    const inInputs = request.inputs[culprit.from] !== undefined;
    const supplied = inInputs ? request.inputs[culprit.from] : request.params[culprit.from];
    field = inInputs ? culprit.from : `params.${culprit.from}`;
    if (Array.isArray(supplied)) {
      const index = supplied.map(String).indexOf(combination[culprit.name]!);
      if (index >= 0) field = `${field}.${index}`;
    }
  }
  const value = culprit === undefined ? '' : ` value ${JSON.stringify(combination[culprit.name])}`;
  throw new ApiError(
    'validation_failed',
    `the matrix${value} makes the image ${JSON.stringify(image)} of job type ${request.type}, ` +
      'which is not a valid Docker image reference; use letters, digits, dots, dashes and underscores',
    field,
    'image_reference',
  );
}

function findExisting(
  sqlite: BetterSqlite3.Database,
  request: TriggerRequest,
  requestHash: string,
  requestedBy: string,
): JobRow | undefined {
  if (request.idempotencyKey !== null) {
    const keyed = readJobByIdempotencyKey(sqlite, requestedBy, request.idempotencyKey);
    if (keyed !== undefined) {
      const { job } = keyed;
      if (keyed.requestHash === null || !matchesRequest(keyed.requestHash, request, requestHash)) {
        throw new ApiError(
          'idempotency_key_reused',
          `Idempotency-Key ${JSON.stringify(request.idempotencyKey)} was already used for job ${job.id} with a different request; use a new key`,
          // Lower case, as in the 400 that the header's schema gives.
          'idempotency-key',
          'unique',
          { job_id: job.id },
        );
      }
      return job;
    }
  }
  if (request.githubRunId !== null) {
    const attempt = request.githubRunAttempt ?? 1;
    const job = readJobByGithubRun(sqlite, request.type, request.githubRunId, attempt);
    if (job !== undefined && !sameRunRequest(job, request, requestHash)) {
      // Returning this job would tell the caller that its different commit or params ran.
      throw new ApiError(
        'github_run_reused',
        `GitHub run ${request.githubRunId} attempt ${attempt} already triggered ${request.type} ` +
          `job ${job.id} with a different commit, branch, inputs or params; one run triggers ` +
          'each job type once, so give this trigger another job type or trigger it without ' +
          'github_run_id',
        'github_run_id',
        'unique',
        { job_id: job.id },
      );
    }
    if (job !== undefined && request.idempotencyKey !== null) {
      // The key now names this job, so a later, different request under it gets 422.
      if (
        job.idempotency_key === null &&
        job.requested_by === requestedBy &&
        job.request_hash === requestHash
      ) {
        updateById(sqlite, 'jobs', job.id, { idempotency_key: request.idempotencyKey });
        return { ...job, idempotency_key: request.idempotencyKey };
      }
      // The job contains another key, belongs to another token, or was made by an equivalent
      // request with another hash (github_run_attempt left out rather than 1).
      recordIdempotencyKey(sqlite, {
        requested_by: requestedBy,
        idempotency_key: request.idempotencyKey,
        job_id: job.id,
        request_hash: requestHash,
        created_at: nowIso(),
      });
    }
    return job;
  }
  return undefined;
}

/**
 * Returns whether the job was made by this request, repeated. A request that leaves out
 * github_run_attempt means attempt 1, so its hash is compared both ways. Jobs without a
 * stored hash cannot be compared and count as the same.
 */
function sameRunRequest(job: JobRow, request: TriggerRequest, requestHash: string): boolean {
  return job.request_hash === null || matchesRequest(job.request_hash, request, requestHash);
}

/**
 * Returns whether a stored request hash is this request's, counting a left-out
 * github_run_attempt and attempt 1 of the same run as the same request.
 */
function matchesRequest(stored: string, request: TriggerRequest, requestHash: string): boolean {
  if (stored === requestHash) return true;
  if (request.githubRunId === null) return false;
  const attempt = request.githubRunAttempt ?? 1;
  const otherAttempt = request.githubRunAttempt === null ? attempt : null;
  if (otherAttempt === null && attempt !== 1) return false;
  return stored === hashRequest({ ...request, githubRunAttempt: otherAttempt });
}

async function insertJob(
  trx: Trx,
  context: AppContext,
  request: TriggerRequest,
  pipeline: Pipeline,
  combinations: Array<Record<string, string>>,
  requestHash: string,
  options: InsertOptions,
): Promise<JobRow> {
  const { sqlite, changes, audit } = options;
  if (pipeline.triggerNeeds || options.triggerMissing === true) {
    await triggerMissingNeeds(trx, context, request, options);
  }
  const now = nowIso();
  const dependencies = evaluateDependencies(sqlite, request.type, request.commit);
  let status: Status = 'queued';
  let reason: string | null = null;
  if (dependencies.state === 'waiting') {
    status = 'waiting';
    reason = dependencies.reason;
  } else if (dependencies.state === 'failed') {
    status = 'skipped';
    reason = dependencies.reason;
  }

  const values = { commit: request.commit ?? '', branch: request.branch ?? '', type: request.type };
  const group =
    pipeline.concurrency === undefined
      ? null
      : renderConcurrencyGroup(pipeline.concurrency.group, values);

  const row: JobRow = {
    id: newJobId(request.type),
    type: request.type,
    status,
    commit_sha: request.commit,
    branch: request.branch,
    params: JSON.stringify({ ...request.inputs, params: request.params }),
    github_run_id: request.githubRunId,
    github_run_attempt: request.githubRunId === null ? null : (request.githubRunAttempt ?? 1),
    idempotency_key: request.idempotencyKey,
    request_hash: requestHash,
    attempt: 1,
    reason,
    requested_by: audit.actor,
    concurrency_group: group,
    pipeline: pipelineSnapshot(pipeline, context.pipelines.repository),
    created_at: now,
    queued_at: status === 'queued' ? now : null,
    started_at: null,
    finished_at: status === 'skipped' ? now : null,
    updated_at: now,
  };
  insertWithFreshId(sqlite, row);
  changes.record('job-created', { jobId: row.id, type: row.type, status });
  insertTasks(sqlite, row, combinations, pipeline, changes, context.config.maxTaskAttempts);

  writeAudit(sqlite, audit, {
    action: 'job_triggered',
    jobId: row.id,
    details: {
      type: row.type,
      status,
      commit: row.commit_sha,
      branch: row.branch,
      tasks: combinations.length,
      github_run_id: row.github_run_id,
      github_run_attempt: row.github_run_attempt,
      idempotency_key: row.idempotency_key,
      // Jobs are pruned before audit rows, which then still record what the job was given.
      ...(Object.keys(request.inputs).length > 0 ? { inputs: request.inputs } : {}),
      ...(Object.keys(request.params).length > 0 ? { params: request.params } : {}),
      ...request.auditDetails,
    },
  });

  if (status === 'skipped') {
    // A job that ends as it is created is finished like any other: the audit trail shows it,
    // and jobs already waiting on its type for this commit are released or skipped now.
    writeAudit(sqlite, audit, {
      action: 'job_finished',
      jobId: row.id,
      details: { status, attempt: row.attempt, reason },
    });
    await resolveDependents(trx, row, changes, audit);
  }

  if (group !== null && pipeline.concurrency?.cancelInProgress === true && status !== 'skipped') {
    await cancelOlderInGroup(trx, sqlite, row, changes, audit);
  }
  return row;
}

/** The JSON of each loaded pipeline as a job stores it, made once per pipeline and repository. */
const snapshots = new WeakMap<Pipeline, { repository: string | undefined; json: string }>();

/**
 * Returns the pipeline with its repository as JSON, the snapshot that a job keeps so that a
 * retry runs what the first attempt ran. A reload of the pipeline file makes new Pipeline
 * objects, so a cached snapshot never outlives the definition it was made from.
 */
function pipelineSnapshot(pipeline: Pipeline, repository: string | undefined): string {
  const cached = snapshots.get(pipeline);
  if (cached !== undefined && cached.repository === repository) return cached.json;
  const json = JSON.stringify({ ...pipeline, repository });
  snapshots.set(pipeline, { repository, json });
  return json;
}

interface InsertOptions {
  /** The write's connection, for the prepared queries. */
  sqlite: BetterSqlite3.Database;
  changes: ChangeSet;
  audit: AuditContext;
  /** Trigger needed job types that have no job for the commit yet, transitively. */
  triggerMissing?: boolean;
}

/**
 * Creates a job of every needed type that has no job for the request's commit, so the new
 * job waits for them instead of for a trigger that may never come. Each created job gets its
 * own audit row naming the job type that asked for it.
 */
async function triggerMissingNeeds(
  trx: Trx,
  context: AppContext,
  request: TriggerRequest,
  options: InsertOptions,
): Promise<void> {
  if (request.commit === null) return;
  for (const need of dependenciesOf(options.sqlite, request.type)) {
    const existing = LATEST_OF_TYPE.get(options.sqlite, { commit: request.commit, type: need });
    if (existing !== undefined) continue;
    const pipeline = findPipeline(context, need);
    const needRequest: TriggerRequest = {
      type: need,
      commit: request.commit,
      branch: request.branch,
      inputs: {},
      params: request.params,
      githubRunId: null,
      githubRunAttempt: null,
      idempotencyKey: null,
      auditDetails: { triggered_as_dependency_of: request.type },
    };
    await insertJob(
      trx,
      context,
      needRequest,
      pipeline,
      needMatrixOf(pipeline, needRequest, request.type),
      hashRequest(needRequest),
      { ...options, triggerMissing: true },
    );
  }
}

/**
 * Expands the matrix of a needed job that a trigger creates. The needed job gets only the
 * trigger's params, so an error names the needed job type and the field in params.
 */
function needMatrixOf(
  pipeline: Pipeline,
  needRequest: TriggerRequest,
  neededBy: string,
): Array<Record<string, string>> {
  try {
    return matrixOf(pipeline, needRequest);
  } catch (error) {
    if (!(error instanceof ApiError) || error.code !== 'validation_failed') throw error;
    const name = error.field?.replace(/^params\./, '');
    const needed =
      `job type ${needRequest.type}, which ${neededBy} needs and which this trigger creates ` +
      '(trigger_needs)';
    const advice = `or trigger ${needRequest.type} for this commit first`;
    if (name !== undefined && error.message.startsWith(`${name} is required:`)) {
      throw new ApiError(
        'validation_failed',
        `${needed}, has a matrix axis without default that reads "${name}"; a needed job ` +
          `gets only the trigger's params, so send params.${name}, ${advice}`,
        `params.${name}`,
        error.rule,
      );
    }
    const field = name === undefined ? undefined : `params.${name}`;
    throw new ApiError(
      'validation_failed',
      `${needed}, cannot be created from the trigger's params: ${error.message}; ` +
        `correct ${field ?? 'params'}, ${advice}`,
      field,
      error.rule,
    );
  }
}

/** Inserts the job, drawing a new random id when the 8 hex digits collide with another job. */
function insertWithFreshId(sqlite: BetterSqlite3.Database, row: JobRow): void {
  for (let attempt = 1; ; attempt += 1) {
    try {
      INSERT_JOB.run(sqlite, row);
      return;
    } catch (error) {
      // A failed INSERT ends only its own statement; the transaction goes on.
      const clash = (error as { code?: unknown }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
      if (!clash) throw error;
      if (attempt >= PRIMARY_KEY_RETRIES) throw new Error(`no free job id after ${attempt} tries`);
      row.id = newJobId(row.type);
    }
  }
}

export function insertTasks(
  sqlite: BetterSqlite3.Database,
  job: JobRow,
  combinations: Array<Record<string, string>>,
  pipeline: Pipeline,
  changes: ChangeSet,
  maxAttempts: number,
): void {
  const now = nowIso();
  const status: Status = job.status;
  const tasks: NewTaskRow[] = combinations.map((matrix, index) => ({
    id: taskId(job.id, job.attempt, index),
    job_id: job.id,
    job_attempt: job.attempt,
    idx: index,
    name: taskName(job.type, matrix),
    matrix: JSON.stringify(matrix),
    status,
    executor: pipeline.executor ?? null,
    worker_id: null,
    lease_expires_at: null,
    attempt: 0,
    max_attempts: pipeline.sideEffects ? 1 : maxAttempts,
    exit_code: null,
    log_path: null,
    reason: status === 'skipped' ? job.reason : null,
    cancel_requested_at: null,
    created_at: now,
    queued_at: status === 'queued' ? now : null,
    started_at: null,
    finished_at: status === 'skipped' ? now : null,
    updated_at: now,
  }));
  for (const task of tasks) INSERT_TASK.run(sqlite, task);
  if (status === 'queued') for (const task of tasks) changes.taskQueued(task.id);
}

/** With cancel-in-progress, a new job in a concurrency group cancels the older active ones. */
async function cancelOlderInGroup(
  trx: Trx,
  sqlite: BetterSqlite3.Database,
  job: JobRow,
  changes: ChangeSet,
  audit: AuditContext,
): Promise<void> {
  const older = ACTIVE_IN_GROUP.all<JobRow>(sqlite, { group: job.concurrency_group!, id: job.id });
  for (const other of older) {
    await cancelJob(
      trx,
      other,
      `cancelled by newer job ${job.id} in concurrency group ${job.concurrency_group}`,
      changes,
      audit,
    );
  }
}

/** Hash of what makes two trigger requests the same request, for Idempotency-Key checks. */
function hashRequest(request: TriggerRequest): string {
  const canonical = JSON.stringify([
    request.type,
    request.commit,
    request.branch,
    sortKeys(request.inputs),
    sortKeys(request.params),
    request.githubRunId,
    request.githubRunAttempt,
  ]);
  return createHash('sha256').update(canonical).digest('hex');
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((key) => [key, sortKeys((value as Record<string, unknown>)[key])]),
    );
  }
  return value;
}
