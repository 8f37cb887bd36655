import type { Transaction } from 'kysely';
import { isTerminal, type Status } from '../jobs/status.js';
import { writeAudit, type AuditContext } from '../store/audit.js';
import { param, prepare, updateById } from '../store/prepared.js';
import { writeConnection } from '../store/write-queue.js';
import type { Database, JobRow, TaskRow } from '../store/schema.js';
import { nowIso } from '../util/time.js';
import type { ChangeSet } from './changes.js';
import { refreshJobStatus, transitionTask, type TransitionedTask } from './job-status.js';

type CancelTask = TransitionedTask & Pick<TaskRow, 'worker_id' | 'cancel_requested_at'>;

/**
 * The current tasks of a job with only the columns a cancel reads. Reading every column costs
 * several times as much here, because better-sqlite3 builds an object property per column.
 */
const CANCEL_TASKS = prepare<{ job_id: string; job_attempt: number }>((db) =>
  db
    .selectFrom('tasks')
    .select(['id', 'job_id', 'status', 'reason', 'worker_id', 'cancel_requested_at'])
    .where('job_id', '=', param('job_id'))
    .where('job_attempt', '=', param<number>('job_attempt'))
    .orderBy('idx'),
);

/**
 * Cancels a job's current tasks. Tasks that no worker runs end `cancelled` at once, including
 * running ones that a status update started. For a task that a worker runs, the cancel is
 * requested, and the worker stops its containers or processes and reports `cancelled` (or the
 * lease expires and the orchestrator ends it).
 * Returns the job as it is after the change. A cancel that finds every running task already
 * asked to stop returns the job unchanged.
 */
export async function cancelJob(
  trx: Transaction<Database>,
  job: JobRow,
  reason: string,
  changes: ChangeSet,
  audit: AuditContext,
): Promise<JobRow> {
  const sqlite = writeConnection(trx);
  const now = nowIso();
  const tasks = CANCEL_TASKS.all<CancelTask>(sqlite, { job_id: job.id, job_attempt: job.attempt });
  // A repeated cancel of a job whose running tasks were all asked to stop changes nothing, so
  // it keeps the first reason and writes no second audit row.
  const alreadyRequested = tasks.every(
    (task) => isTerminal(task.status) || (held(task) && task.cancel_requested_at !== null),
  );
  if (alreadyRequested && tasks.some(held)) return job;

  let requested = 0;
  const taskStatuses: Status[] = [];
  for (const task of tasks) {
    if (isTerminal(task.status)) {
      taskStatuses.push(task.status);
    } else if (held(task)) {
      if (task.cancel_requested_at === null) {
        updateById(sqlite, 'tasks', task.id, { cancel_requested_at: now, reason, updated_at: now });
        changes.record('task-cancel-requested', task.id);
      }
      requested += 1;
      taskStatuses.push(task.status);
    } else {
      const cancelled = await transitionTask(trx, task, 'cancelled', changes, { reason });
      taskStatuses.push(cancelled.status);
    }
  }
  // This row records the request. When the cancel ends the job, refreshJobStatus adds the
  // job_finished row that every end of a job gets. Its status is not always cancelled: a task
  // that already ended failure, error or timed_out decides the job's status instead.
  writeAudit(sqlite, audit, {
    action: 'job_cancelled',
    jobId: job.id,
    details: { reason, running_tasks_signalled: requested, previous_status: job.status },
  });
  // The reason is written with the status change, and the task statuses are the ones above.
  return refreshJobStatus(trx, job, changes, audit, {
    taskStatuses,
    update: { reason, updated_at: now },
  });
}

/**
 * Returns whether a worker runs the task and must stop it. A task set running
 * through PATCH /api/job/{id}/status has no worker, so nothing would ever act on a request.
 */
function held(task: Pick<TaskRow, 'status' | 'worker_id'>): boolean {
  return task.status === 'running' && task.worker_id !== null;
}
