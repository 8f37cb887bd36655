/**
 * Fencing, heartbeats, finishing and handing back a claimed task. Every call names the task,
 * the worker and the lease attempt. When the task is no longer running under that worker and
 * attempt, the call fails with `lease_lost` and changes nothing. This happens when the lease
 * expired and another worker took the task, or when the task ended. So a stale worker can
 * never overwrite a newer result.
 */
import type { Kysely, Transaction } from 'kysely';
import { ApiError } from '../api/errors.js';
import { exitCodeConflict, type Status } from '../jobs/status.js';
import type { ChangeSet } from '../orchestrator/changes.js';
import { refreshJobStatus, transitionTask, wakeGroup } from '../orchestrator/job-status.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import { parseJsonColumn } from '../store/json.js';
import { findJob } from '../store/jobs.js';
import type { Database, TaskRow } from '../store/schema.js';
import { updateById } from '../store/prepared.js';
import { writeConnection } from '../store/write-queue.js';
import type { Pipeline } from '../pipeline/types.js';
import { isoAfter } from '../util/time.js';
import { touchWorker } from './claim.js';

type Trx = Transaction<Database>;

export interface LeaseHolder {
  taskId: string;
  workerId: string;
  attempt: number;
}

export const FINISH_STATUSES = ['success', 'failure', 'error', 'timed_out', 'cancelled'] as const;
export type FinishStatus = (typeof FINISH_STATUSES)[number];

/**
 * Loads the task and checks the caller still holds its lease; throws `lease_lost` if not.
 * With `stopping`, a task that a status update ended while the caller ran its step counts as
 * held too, so that the output of the step up to its stop is kept.
 */
export async function requireLease(
  db: Kysely<Database>,
  holder: LeaseHolder,
  options: { stopping?: boolean } = {},
): Promise<TaskRow> {
  const task = await findHeldTask(db, holder);
  if (options.stopping === true && isStopping(task, holder)) return task;
  checkLease(task, holder);
  return task;
}

/** Loads the task a lease holder names, or throws `task_not_found` when there is none. */
async function findHeldTask(db: Kysely<Database>, holder: LeaseHolder): Promise<TaskRow> {
  const task = await db
    .selectFrom('tasks')
    .selectAll()
    .where('id', '=', holder.taskId)
    .executeTakeFirst();
  if (task === undefined) {
    throw new ApiError(
      'task_not_found',
      `task ${JSON.stringify(holder.taskId)} not found`,
      'task_id',
      'exists',
    );
  }
  return task;
}

/** Throws `lease_lost` unless the holder's worker and attempt run the task now. */
function checkLease(task: TaskRow, holder: LeaseHolder): void {
  let problem: string | undefined;
  if (task.status !== 'running') problem = `the task is ${task.status}`;
  else if (task.worker_id !== holder.workerId) {
    problem = `worker ${task.worker_id ?? '(none)'} holds it now`;
  } else if (task.attempt !== holder.attempt) {
    problem = `its current attempt is ${task.attempt}`;
  }
  if (problem !== undefined) {
    throw new ApiError(
      'lease_lost',
      `worker ${holder.workerId} no longer holds task ${holder.taskId} attempt ${holder.attempt}: ${problem}; stop working on it`,
      'attempt',
      'lease',
      { status: task.status, attempt: task.attempt },
    );
  }
}

export interface HeartbeatResult {
  leaseExpiresAt: string;
  cancelRequested: boolean;
  /** Whether the lease was extended (a write) or was still fresh enough (a read only). */
  extended: boolean;
  /** The status that a status update ended the task with while the worker ran its step. */
  endedStatus?: Status;
}

/**
 * Extends the lease to now + leaseMs when less than two thirds of it remain. Frequent
 * heartbeats therefore cost a read, and a write only every third of a lease. The first
 * heartbeat after a starting API renewed the lease always writes, to clear lease_renewed_at.
 */
export async function heartbeat(
  trx: Trx,
  holder: LeaseHolder,
  leaseMs: number,
): Promise<HeartbeatResult> {
  const task = await requireLease(trx, holder, { stopping: true });
  // The heartbeat of a stopping task requests the stop of its step, as a cancel does.
  const stopping = isStopping(task, holder);
  const cancelRequested = task.cancel_requested_at !== null || stopping;
  const ended = stopping ? { endedStatus: task.status } : {};
  const remaining = Date.parse(task.lease_expires_at ?? '') - Date.now();
  const fresh = Number.isFinite(remaining) && remaining > (leaseMs * 2) / 3;
  if (fresh && task.lease_renewed_at === null) {
    return { leaseExpiresAt: task.lease_expires_at!, cancelRequested, extended: false, ...ended };
  }
  const leaseExpiresAt = isoAfter(leaseMs);
  await trx
    .updateTable('tasks')
    .set({ lease_expires_at: leaseExpiresAt, lease_renewed_at: null })
    .where('id', '=', task.id)
    .execute();
  await touchWorker(trx, holder.workerId);
  return { leaseExpiresAt, cancelRequested, extended: true, ...ended };
}

export interface FinishReport {
  status: FinishStatus;
  exitCode: number | null;
  reason: string | null;
  durationMs: number;
  /** False when the steps may still run; see the finish route's `step_stopped`. */
  stepStopped: boolean;
}

export interface FinishResult {
  task: TaskRow;
  /** True when an `error` outcome was re-queued under the pipeline's `retries`. */
  retried: boolean;
}

/**
 * Ends the task with the worker's outcome and refreshes the job. An `error` outcome is
 * queued again while the pipeline's `retries` allow (attempt 2 of 3 ...); a failure never is.
 * A report whose exit code contradicts its status (see exitCodeConflict) is rejected with 400.
 */
export async function finishTask(
  trx: Trx,
  holder: LeaseHolder,
  report: FinishReport,
  changes: ChangeSet,
  audit: AuditContext,
): Promise<FinishResult> {
  const conflict = exitCodeConflict(report.status, report.exitCode);
  if (conflict !== undefined) {
    throw new ApiError('validation_failed', conflict, 'exit_code', 'matches_status');
  }
  const task = await findHeldTask(trx, holder);
  // Checked before a repeated report, because the report that confirms the stop repeats the
  // status, exit code and reason of the one that ended the task with its steps still running.
  if (isStopping(task, holder)) {
    // Steps that may still run keep the lease, also when a status update ended the task.
    if (!report.stepStopped) return { task, retried: false };
    return {
      task: await confirmStopped(trx, task, holder, report.status, changes, audit),
      retried: false,
    };
  }
  if (isRepeatedFinish(task, holder, report)) return { task, retried: false };
  checkLease(task, holder);
  const pipeline = await jobPipeline(trx, task.job_id);
  const allowedAttempts = (pipeline.retries ?? 0) + 1;
  // Hand-backs from stopping workers use up no attempt.
  const counted = task.attempt - task.hand_backs;
  // A new attempt next to steps that may still run could do their work twice.
  // NOTE: a worker retries the removal for 30 s before it reports (see TaskRun), so a task
  // whose engine is away for longer ends without the retry that `retries` would have given it.
  const retry =
    report.status === 'error' &&
    counted < allowedAttempts &&
    task.cancel_requested_at === null &&
    report.stepStopped;

  const outcome = retry ? 'queued' : report.status;
  const reason = retry
    ? `attempt ${counted} of ${allowedAttempts} ended in error (${report.reason ?? 'no reason given'}); retrying`
    : report.reason;
  const updated = await transitionTask(trx, task, outcome, changes, {
    reason,
    exitCode: report.exitCode,
    keepLease: !report.stepStopped,
  });
  await trx
    .updateTable('tasks')
    .set({ duration_ms: Math.round(report.durationMs) })
    .where('id', '=', task.id)
    .execute();
  await appendAudit(trx, audit, {
    action: retry ? 'task_retried' : 'task_finished',
    jobId: task.job_id,
    taskId: task.id,
    details: {
      worker_id: holder.workerId,
      attempt: task.attempt,
      status: report.status,
      exit_code: report.exitCode,
      reason: report.reason,
      duration_ms: Math.round(report.durationMs),
      ...(report.stepStopped ? {} : { step_stopped: false }),
    },
  });
  await touchWorker(trx, holder.workerId);
  await refreshJobStatus(trx, task.job_id, changes, audit);
  return { task: { ...updated, duration_ms: Math.round(report.durationMs) }, retried: retry };
}

/**
 * Returns whether the task ended while the holder still ran its step: a status update ended
 * it, and it keeps the lease until the worker confirms that the step stopped.
 */
function isStopping(task: TaskRow, holder: LeaseHolder): boolean {
  return (
    task.status !== 'running' &&
    task.lease_expires_at !== null &&
    task.worker_id === holder.workerId &&
    task.attempt === holder.attempt
  );
}

/**
 * Ends the lease of a stopping task once its worker reports that the step stopped. The
 * task keeps the status that the update gave it, and the queued jobs of its concurrency
 * group may start.
 */
async function confirmStopped(
  trx: Trx,
  task: TaskRow,
  holder: LeaseHolder,
  reported: string,
  changes: ChangeSet,
  audit: AuditContext,
): Promise<TaskRow> {
  await endStoppedLease(trx, { ...task, worker_id: holder.workerId }, reported, changes, audit);
  await touchWorker(trx, holder.workerId);
  return { ...task, lease_expires_at: null };
}

/**
 * Ends the lease that an ended task kept while its step may still run, once the step is known
 * to have stopped (`reported` describes how), with a `task_step_stopped` audit row. The queued jobs
 * of its concurrency group may start then.
 */
export async function endStoppedLease(
  trx: Trx,
  task: Pick<TaskRow, 'id' | 'job_id' | 'worker_id' | 'attempt' | 'status'>,
  reported: string,
  changes: ChangeSet,
  audit: AuditContext,
): Promise<void> {
  await trx
    .updateTable('tasks')
    .set({ lease_expires_at: null })
    .where('id', '=', task.id)
    .execute();
  await appendAudit(trx, audit, {
    action: 'task_step_stopped',
    jobId: task.job_id,
    taskId: task.id,
    details: { worker_id: task.worker_id, attempt: task.attempt, status: task.status, reported },
  });
  const job = await findJob(trx, task.job_id);
  if (job !== undefined && job.concurrency_group !== null) {
    wakeGroup(writeConnection(trx), job.concurrency_group, changes);
  }
}

/**
 * Returns whether this exact report already ended the task. A worker retries a finish whose
 * response was lost on the way, and a lease_lost error would then be wrong. The reason counts:
 * lease recovery may have ended the task with the status and exit code of a worker's late
 * report, which must still be rejected and recorded.
 */
function isRepeatedFinish(task: TaskRow, holder: LeaseHolder, report: FinishReport): boolean {
  return (
    task.status === report.status &&
    task.worker_id === holder.workerId &&
    task.attempt === holder.attempt &&
    task.exit_code === report.exitCode &&
    task.reason === report.reason
  );
}

/**
 * Hands a task back from a stopping worker. A task without side effects returns to `queued`,
 * and the claim counts as a hand-back, which uses up no attempt. A task with side effects
 * ends as `error`, because running a deploy a second time without a person deciding could do
 * harm.
 */
export async function releaseTask(
  trx: Trx,
  holder: LeaseHolder,
  reason: string,
  changes: ChangeSet,
  audit: AuditContext,
): Promise<TaskRow> {
  const task = await findHeldTask(trx, holder);
  if (isStopping(task, holder)) {
    return confirmStopped(trx, task, holder, 'released', changes, audit);
  }
  checkLease(task, holder);
  const sideEffects = (await jobPipeline(trx, task.job_id)).sideEffects === true;
  const cancelled = task.cancel_requested_at !== null;
  let to: 'cancelled' | 'error' | 'queued' = 'queued';
  if (cancelled) to = 'cancelled';
  else if (sideEffects) to = 'error';
  const fullReason =
    to === 'error'
      ? `${reason}; not re-run automatically because the pipeline has side effects`
      : reason;
  let updated = await transitionTask(trx, task, to, changes, { reason: fullReason });
  if (to === 'queued') {
    const handBacks = task.hand_backs + 1;
    updateById(writeConnection(trx), 'tasks', task.id, { hand_backs: handBacks });
    updated = { ...updated, hand_backs: handBacks };
  }
  await appendAudit(trx, audit, {
    action: 'task_released',
    jobId: task.job_id,
    taskId: task.id,
    details: { worker_id: holder.workerId, attempt: task.attempt, status: to, reason },
  });
  await refreshJobStatus(trx, task.job_id, changes, audit);
  return updated;
}

/** Reads the pipeline a job was created with, as stored on the job. */
async function jobPipeline(trx: Trx, jobId: string): Promise<Partial<Pipeline>> {
  const job = await trx
    .selectFrom('jobs')
    .select(['pipeline'])
    .where('id', '=', jobId)
    .executeTakeFirstOrThrow();
  return parseJsonColumn<Partial<Pipeline>>(job.pipeline, {});
}
