/**
 * Task transitions and the job status derived from them. Every status change of a task
 * goes through transitionTask, and every change of a job through refreshJobStatus, so the
 * rules of jobs/status.ts are enforced in one place.
 */
import type BetterSqlite3 from 'better-sqlite3';
import { sql, type Transaction } from 'kysely';
import { canTransition, deriveJobStatus, isTerminal, type Status } from '../jobs/status.js';
import { writeAudit, type AuditContext } from '../store/audit.js';
import { readJob } from '../store/jobs.js';
import { param, prepare, updateById } from '../store/prepared.js';
import type { Database, JobRow, TaskRow } from '../store/schema.js';
import { writeConnection } from '../store/write-queue.js';
import { nowIso } from '../util/time.js';
import type { ChangeSet } from './changes.js';
import { applyOnSuccess } from './on-success.js';
import { resolveDependents } from './dependencies.js';

type Trx = Transaction<Database>;

const TASK_STATUSES = prepare<{ job_id: string; job_attempt: number }>((db) =>
  db
    .selectFrom('tasks')
    .select('status')
    .where('job_id', '=', param('job_id'))
    .where('job_attempt', '=', param<number>('job_attempt')),
);

const FIRST_UNSUCCESSFUL_TASK = prepare<{ job_id: string; job_attempt: number }>((db) =>
  db
    .selectFrom('tasks')
    .select(['name', 'status', 'reason', 'exit_code'])
    .where('job_id', '=', param('job_id'))
    .where('job_attempt', '=', param<number>('job_attempt'))
    .where('status', '!=', 'success')
    .orderBy('idx')
    .limit(1),
);

/**
 * Queued tasks of the queued jobs of a concurrency group, which wait while another runs. The
 * jobs come first, through jobs_concurrency_group: starting from the queued tasks would read
 * every queued task of every job.
 */
export const QUEUED_IN_GROUP = prepare<{ group: string }>((db) =>
  db
    .selectFrom('tasks')
    .select('id')
    // The unary + keeps SQLite from starting at tasks_status_queued.
    .where(sql<string>`+${sql.ref('status')}`, '=', 'queued')
    .where('job_id', 'in', (eb) =>
      eb
        .selectFrom('jobs')
        .select('id')
        .where('concurrency_group', '=', param('group'))
        .where('status', '=', 'queued'),
    ),
);

export class TransitionError extends Error {
  constructor(
    readonly from: Status,
    readonly to: Status,
    readonly subject: string,
  ) {
    super(`${subject} cannot change from ${from} to ${to}`);
    this.name = 'TransitionError';
  }
}

export interface TaskTransition {
  reason?: string | null | undefined;
  exitCode?: number | null | undefined;
  workerId?: string | null | undefined;
  leaseExpiresAt?: string | null | undefined;
  /**
   * Keeps the lease of a task that ends while its worker still runs the step, so that the
   * rest of its concurrency group waits until the worker confirms the stop (see lease.ts).
   */
  keepLease?: boolean;
}

/** The columns of a task that transitionTask reads. */
export type TransitionedTask = Pick<TaskRow, 'id' | 'job_id' | 'status' | 'reason'>;

/**
 * Moves one task to `to`, checking the transition, and records the change. Returns the task
 * with the written columns.
 */
export async function transitionTask<T extends TransitionedTask>(
  trx: Trx,
  task: T,
  to: Status,
  changes: ChangeSet,
  details: TaskTransition = {},
): Promise<T> {
  if (!canTransition(task.status, to))
    throw new TransitionError(task.status, to, `task ${task.id}`);
  const now = nowIso();
  const update: Partial<TaskRow> = { status: to, updated_at: now };
  if (details.reason !== undefined) update.reason = details.reason;
  // A task that succeeded before a requested cancel reached it keeps no cancel reason.
  else if (to === 'success' && task.reason !== null) update.reason = null;
  if (details.exitCode !== undefined) update.exit_code = details.exitCode;
  if (details.workerId !== undefined) update.worker_id = details.workerId;
  if (details.leaseExpiresAt !== undefined) update.lease_expires_at = details.leaseExpiresAt;
  if (to === 'queued') {
    update.queued_at = now;
    update.worker_id = null;
    update.lease_expires_at = null;
    changes.taskQueued(task.id);
  }
  // A task's times are those of its current attempt: a claim after a hand-back or an expired
  // lease starts it again, after its new queued_at.
  if (to === 'running') update.started_at = now;
  if (isTerminal(to)) {
    update.finished_at = now;
    if (details.keepLease !== true) update.lease_expires_at = null;
  }
  updateById(writeConnection(trx), 'tasks', task.id, update);
  changes.record('task-status', { taskId: task.id, jobId: task.job_id, from: task.status, to });
  return { ...task, ...update };
}

export interface JobRefresh {
  /**
   * The statuses of all the job's current tasks, when the caller has just read and written
   * them in this transaction, so they need not be read again.
   */
  taskStatuses?: Status[];
  /**
   * Columns the caller changes on the job. They are written with the status change, in one
   * update, or alone when the status stays.
   */
  update?: Partial<JobRow>;
  /**
   * The status the job takes instead of the one its tasks give, for a job without tasks,
   * whose derived status would stay `queued` for good.
   */
  status?: Status;
}

/**
 * Recomputes the job's status from its current tasks and stores it when it changed. When
 * the job ends, applies its on-success state and releases or skips the jobs waiting on it.
 * Takes the job's id, or its row as this transaction last wrote it.
 */
export async function refreshJobStatus(
  trx: Trx,
  jobOrId: string | JobRow,
  changes: ChangeSet,
  audit: AuditContext,
  refresh: JobRefresh = {},
): Promise<JobRow> {
  const sqlite = writeConnection(trx);
  const found = typeof jobOrId === 'string' ? readJob(sqlite, jobOrId) : jobOrId;
  if (found === undefined)
    throw new Error(`job ${String(jobOrId)} vanished inside its own transaction`);
  const job: JobRow = { ...found, ...refresh.update };
  const derived =
    refresh.status ??
    deriveJobStatus(
      refresh.taskStatuses ??
        TASK_STATUSES.all<{ status: Status }>(sqlite, {
          job_id: job.id,
          job_attempt: job.attempt,
        }).map((row) => row.status),
    );
  if (derived === job.status) {
    if (refresh.update !== undefined) updateById(sqlite, 'jobs', job.id, refresh.update);
    return job;
  }

  const now = nowIso();
  const update: Partial<JobRow> = { ...refresh.update, status: derived, updated_at: now };
  if (derived === 'queued' && job.queued_at === null) update.queued_at = now;
  if (derived === 'running' && job.started_at === null) update.started_at = now;
  if (isTerminal(derived)) update.finished_at = now;
  if (derived === 'queued' || derived === 'running' || derived === 'success') update.reason = null;
  if (isTerminal(derived) && derived !== 'success' && job.reason === null) {
    update.reason = firstTaskReason(sqlite, job);
  }
  updateById(sqlite, 'jobs', job.id, update);
  const updated: JobRow = { ...job, ...update };
  changes.record('job-status', { jobId: job.id, type: job.type, from: job.status, to: derived });

  if (isTerminal(derived)) {
    writeAudit(sqlite, audit, {
      action: 'job_finished',
      jobId: job.id,
      details: { status: derived, attempt: job.attempt, reason: updated.reason },
    });
    if (derived === 'success') await applyOnSuccess(trx, updated, audit);
    await resolveDependents(trx, updated, changes, audit);
    if (job.concurrency_group !== null && (job.status === 'running' || job.status === 'queued')) {
      // The next job of the group may start now, so waiting workers must look again. A running
      // job keeps the others waiting, and so does a queued job older than they are.
      wakeGroup(sqlite, job.concurrency_group, changes);
    }
  }
  return updated;
}

/** Tells waiting workers about the queued tasks of a concurrency group, which may start now. */
export function wakeGroup(sqlite: BetterSqlite3.Database, group: string, changes: ChangeSet): void {
  const waiting = QUEUED_IN_GROUP.all<{ id: string }>(sqlite, { group });
  for (const task of waiting) changes.taskQueued(task.id);
}

function firstTaskReason(sqlite: BetterSqlite3.Database, job: JobRow): string | null {
  const row = FIRST_UNSUCCESSFUL_TASK.get<
    Pick<TaskRow, 'name' | 'status' | 'reason' | 'exit_code'>
  >(sqlite, { job_id: job.id, job_attempt: job.attempt });
  if (row === undefined) return null;
  if (row.reason !== null) return `${row.name}: ${row.reason}`;
  if (row.exit_code !== null) return `${row.name}: a step exited with code ${row.exit_code}`;
  return `${row.name} ended ${row.status}`;
}
