/**
 * Claiming queued tasks for a worker, inside one write transaction: each claim moves the
 * task to `running`, counts a lease attempt, records the worker and the lease expiry, and
 * refreshes the job's derived status.
 */
import { sql, type Kysely, type Transaction } from 'kysely';
import { ChangeSet } from '../orchestrator/changes.js';
import { refreshJobStatus, transitionTask } from '../orchestrator/job-status.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import { findJob } from '../store/jobs.js';
import { literal } from '../store/prepared.js';
import type { Database, JobRow, TaskRow } from '../store/schema.js';
import { isoAfter, nowIso } from '../util/time.js';
import { buildTaskSpec, type TaskSpec } from './task-spec.js';

type Trx = Transaction<Database>;

export interface ClaimRequest {
  workerId: string;
  /**
   * Executors the worker can run now; a task whose pipeline names another is left queued.
   * Tasks whose pipeline names none are taken only when the default executor is listed.
   */
  executors: readonly string[];
  /** Executor for tasks whose pipeline names none. */
  defaultExecutor: string;
  max: number;
  leaseMs: number;
  /** The session the worker registered with; when given, a claim from another is rejected. */
  session?: string | undefined;
}

export interface ClaimContext {
  audit: AuditContext;
  changes: ChangeSet;
  /** Path of the attempt's log file, stored on the task. */
  logPathFor(jobId: string, taskId: string, attempt: number): string;
}

/**
 * Error thrown by `claimTasks` when the worker is not registered, is not online, or was
 * registered since by another process. The check runs in the claim's transaction, so a worker
 * that any process marked offline or draining gets no more tasks, even through a claim that
 * was already waiting.
 */
export class ClaimRejected extends Error {
  constructor(
    readonly workerId: string,
    /** The worker's status, or null when no worker has this id. */
    readonly status: string | null,
    /** True when another session registered the id since, so the claiming process lost it. */
    readonly sessionReplaced = false,
  ) {
    super(
      status === null
        ? `worker ${JSON.stringify(workerId)} is not registered`
        : sessionReplaced
          ? `worker ${JSON.stringify(workerId)} was registered again by another process`
          : `worker ${JSON.stringify(workerId)} is ${status}`,
    );
    this.name = 'ClaimRejected';
  }
}

/**
 * Returns why the worker may not claim, or undefined when it may. The session comes first: a
 * replaced process must register again, not wait as if it were drained, and its claims must
 * not keep the new owner's row looking alive.
 */
export function claimRejection(
  workerId: string,
  worker: { status: string; session: string | null } | undefined,
  session: string | undefined,
): ClaimRejected | undefined {
  if (worker === undefined) return new ClaimRejected(workerId, null);
  if (session !== undefined && worker.session !== session) {
    return new ClaimRejected(workerId, worker.status, true);
  }
  if (worker.status !== 'online') return new ClaimRejected(workerId, worker.status);
  return undefined;
}

/**
 * Claims up to `request.max` of the oldest queued tasks the worker can run. Throws
 * `ClaimRejected` before writing anything when the worker may not claim.
 */
export async function claimTasks(
  trx: Trx,
  request: ClaimRequest,
  context: ClaimContext,
): Promise<TaskSpec[]> {
  const worker = await trx
    .selectFrom('workers')
    .select(['status', 'session'])
    .where('id', '=', request.workerId)
    .executeTakeFirst();
  const rejected = claimRejection(request.workerId, worker, request.session);
  if (rejected !== undefined) throw rejected;
  if (request.max <= 0) return [];
  if (request.executors.length === 0) return [];
  const candidates = await claimCandidates(
    trx,
    request.executors,
    request.max,
    request.executors.includes(request.defaultExecutor),
  ).execute();
  if (candidates.length === 0) return [];

  const specs: TaskSpec[] = [];
  const jobs = new Map<string, JobRow>();
  const leaseExpiresAt = isoAfter(request.leaseMs);
  // claimCandidates returns the tasks of one job per concurrency group at most: its oldest
  // queued job, or the one that runs.
  for (const candidate of candidates) {
    const job = jobs.get(candidate.job_id) ?? (await findJob(trx, candidate.job_id));
    if (job === undefined) continue;
    jobs.set(job.id, job);
    const claimed = await claimOne(trx, candidate, job, request, leaseExpiresAt, context);
    specs.push(buildTaskSpec(job, claimed));
  }
  for (const jobId of jobs.keys()) {
    await refreshJobStatus(trx, jobId, context.changes, context.audit);
  }
  return specs;
}

/**
 * Builds the query for up to `limit` queued tasks that a worker with `executors` may claim,
 * oldest queued first. A task of a concurrency group is left out while another job of its
 * group runs, or while its own job has not started and an older job of the group is queued.
 * So the jobs of a group start in the order they were created (created_at, then id), even
 * when an older job's task was queued again after its lease expired. It is also left out
 * while a worker still stops the step of a task of the group that a status update ended.
 */
export function claimCandidates(
  db: Kysely<Database>,
  executors: readonly string[],
  limit: number,
  takeUnnamed = true,
) {
  return db
    .selectFrom('tasks')
    .selectAll()
    .where('status', '=', literal('queued'))
    .where((eb) =>
      takeUnnamed
        ? eb.or([eb('executor', 'is', null), eb('executor', 'in', [...executors])])
        : eb('executor', 'in', [...executors]),
    )
    .where((eb) =>
      eb.not(
        eb.exists(
          eb
            .selectFrom('tasks as stopping')
            .innerJoin('jobs as other', 'other.id', 'stopping.job_id')
            .innerJoin('jobs as job', 'job.id', 'tasks.job_id')
            .select('stopping.id')
            // The terms of the partial index tasks_stopping, which has the fewest rows. The
            // unary + keeps SQLite from starting at every job of the group instead.
            .where('stopping.status', '!=', literal('running'))
            .where('stopping.lease_expires_at', '>', nowIso())
            .where(
              sql<string>`+${sql.ref('other.concurrency_group')}`,
              '=',
              sql.ref<string>('job.concurrency_group'),
            ),
        ),
      ),
    )
    .where((eb) =>
      eb.not(
        eb.exists(
          eb
            .selectFrom('jobs as job')
            .innerJoin('jobs as other', 'other.concurrency_group', 'job.concurrency_group')
            .select('other.id')
            .whereRef('job.id', '=', 'tasks.job_id')
            .where('other.status', '=', 'running')
            .whereRef('other.id', '!=', 'job.id'),
        ),
      ),
    )
    .where((eb) =>
      eb.not(
        eb.exists(
          eb
            .selectFrom('jobs as job')
            .innerJoin('jobs as older', 'older.concurrency_group', 'job.concurrency_group')
            .select('older.id')
            .whereRef('job.id', '=', 'tasks.job_id')
            // A running job's remaining tasks go on, because the job has already started.
            .where('job.status', '=', 'queued')
            .where('older.status', '=', 'queued')
            .where((older) =>
              older(
                older.refTuple('older.created_at', 'older.id'),
                '<',
                older.refTuple('job.created_at', 'job.id'),
              ),
            ),
        ),
      ),
    )
    .orderBy('queued_at')
    .orderBy('id')
    .limit(limit);
}

async function claimOne(
  trx: Trx,
  task: TaskRow,
  job: JobRow,
  request: ClaimRequest,
  leaseExpiresAt: string,
  context: ClaimContext,
): Promise<TaskRow> {
  const attempt = task.attempt + 1;
  const running = await transitionTask(trx, task, 'running', context.changes, {
    workerId: request.workerId,
    leaseExpiresAt,
    reason: null,
    exitCode: null,
  });
  const logPath = context.logPathFor(job.id, task.id, attempt);
  const extra = {
    attempt,
    worker_session: request.session ?? null,
    executor: task.executor ?? request.defaultExecutor,
    log_path: logPath,
    cancel_requested_at: null,
    duration_ms: null,
    finished_at: null,
    lease_renewed_at: null,
  };
  await trx.updateTable('tasks').set(extra).where('id', '=', task.id).execute();
  await appendAudit(trx, context.audit, {
    action: 'task_claimed',
    jobId: job.id,
    taskId: task.id,
    details: { worker_id: request.workerId, attempt, lease_expires_at: leaseExpiresAt },
  });
  return { ...running, ...extra };
}

/**
 * Returns again the running tasks that this worker process claimed (same worker id and
 * session) but does not list in `holding`: the response of the claim that took them was
 * lost, so the worker never started them. Each gets a fresh lease and a `task_redelivered`
 * audit row. Without a session, or for another process with the worker's id, nothing is
 * returned, because that process may have started the task before it went away.
 *
 * A lost task whose executor the claim leaves out (docker while the worker's engine does not
 * respond) is queued again instead, with a `task_released` audit row, because the worker
 * would run it on that executor. It uses up no attempt, since it never started.
 */
export async function redeliverTasks(
  trx: Trx,
  request: ClaimRequest,
  holding: readonly string[],
  audit: AuditContext,
  changes: ChangeSet,
): Promise<TaskSpec[]> {
  if (request.session === undefined || request.max <= 0) return [];
  const lost = await trx
    .selectFrom('tasks')
    .selectAll()
    .where('worker_id', '=', request.workerId)
    .where('status', '=', literal('running'))
    .where('worker_session', '=', request.session)
    .$if(holding.length > 0, (query) => query.where('id', 'not in', [...holding]))
    .orderBy('queued_at')
    .orderBy('id')
    .limit(request.max)
    .execute();
  const specs: TaskSpec[] = [];
  const leaseExpiresAt = isoAfter(request.leaseMs);
  for (const task of lost) {
    const job = await findJob(trx, task.job_id);
    if (job === undefined) continue;
    const executor = task.executor ?? request.defaultExecutor;
    if (!request.executors.includes(executor)) {
      await requeueUnstarted(trx, task, request.workerId, executor, audit, changes);
      continue;
    }
    await trx
      .updateTable('tasks')
      .set({ lease_expires_at: leaseExpiresAt, lease_renewed_at: null, updated_at: nowIso() })
      .where('id', '=', task.id)
      .execute();
    await appendAudit(trx, audit, {
      action: 'task_redelivered',
      jobId: job.id,
      taskId: task.id,
      details: {
        worker_id: request.workerId,
        attempt: task.attempt,
        lease_expires_at: leaseExpiresAt,
        reason: 'the worker did not list the task in its claim, so the claim response was lost',
      },
    });
    specs.push(buildTaskSpec(job, { ...task, lease_expires_at: leaseExpiresAt }));
  }
  return specs;
}

/** Queues again a lost task that the worker never started, with a `task_released` row. */
async function requeueUnstarted(
  trx: Trx,
  task: TaskRow,
  workerId: string,
  executor: string,
  audit: AuditContext,
  changes: ChangeSet,
): Promise<void> {
  const reason =
    `the worker did not receive the claim response and takes no ${executor} tasks now; ` +
    'queued again';
  await transitionTask(trx, task, 'queued', changes, { reason });
  await trx
    .updateTable('tasks')
    .set({ hand_backs: task.hand_backs + 1 })
    .where('id', '=', task.id)
    .execute();
  await appendAudit(trx, audit, {
    action: 'task_released',
    jobId: task.job_id,
    taskId: task.id,
    details: { worker_id: workerId, attempt: task.attempt, status: 'queued', reason },
  });
  await refreshJobStatus(trx, task.job_id, changes, audit);
}

/** Marks the worker as seen now; called on every claim and heartbeat. */
export async function touchWorker(trx: Trx, workerId: string): Promise<boolean> {
  const result = await trx
    .updateTable('workers')
    .set({ last_heartbeat_at: nowIso() })
    .where('id', '=', workerId)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}
