/**
 * The orchestration sweep: repairs what events missed. Each repair writes an audit row.
 *
 *   - running tasks whose lease expired are recovered (see leases.ts);
 *   - waiting jobs whose dependencies were decided are released or skipped, and those past
 *     their dependency timeout are skipped (see waiting.ts);
 *   - a job whose status differs from the one its tasks give is corrected, and active tasks
 *     of a finished job or of an older attempt end `error`;
 *   - an active job without tasks of its attempt, which no worker can ever take, ends `error`;
 *   - running tasks without a worker (set running through PATCH) end `timed_out` once
 *     their pipeline's timeout has passed, since no worker enforces it;
 *   - queued jobs no live worker can take get the reason on the job;
 *   - containers and workspaces of this installation that no running task owns are removed;
 *   - LAST_DEPLOYED_COMMIT is set to the commit of the last successful deploy when they differ;
 *   - the counts of finished jobs in job_status_counts are set to the counts in jobs when they
 *     differ, which happens only when something wrote jobs without the table's triggers.
 */
import type { Transaction } from 'kysely';
import type { AppContext } from '../app/context.js';
import { deriveJobStatus, isTerminal, TERMINAL_STATUSES } from '../jobs/status.js';
import { DEFAULT_TIMEOUT_MS, renderTemplate } from '../pipeline/load.js';
import type { Pipeline } from '../pipeline/types.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import { parseJsonColumn } from '../store/json.js';
import type { Database, TaskRow } from '../store/schema.js';
import { getStateVariable, setStateVariable } from '../store/state-variables.js';
import { ChangeSet } from './changes.js';
import { explainQueued } from './diagnose.js';
import { refreshJobStatus, transitionTask } from './job-status.js';
import { endFencesOfRemovedContainers, recoverExpiredLeases } from './leases.js';
import { jobTemplateValues } from './on-success.js';
import { lastSuccessfulDeploy } from './rollback.js';
import { removeOrphanContainers, removeOrphanWorkspaces } from './orphans.js';
import { settleWaitingJobs } from './waiting.js';

/** A queued job younger than this is not reported: a worker may be about to claim it. */
const QUEUED_GRACE_MS = 30_000;

export async function runSweep(
  context: AppContext,
  audit: AuditContext,
): Promise<Record<string, unknown>> {
  const leases = await recoverExpiredLeases(context, audit);
  const waiting = await settleWaitingJobs(context, audit);
  const statuses = await repairJobStatuses(context, audit);
  const taskless = await endTasklessJobs(context, audit);
  const strayTasks = await endStrayTasks(context, audit);
  const unheldTimedOut = await timeOutUnheldTasks(context, audit);
  const unschedulable = await explainQueuedJobs(context, audit);
  const containers = await removeOrphanContainers(context, audit);
  await endFencesOfRemovedContainers(context, audit, containers.attempts);
  const workspaces = await removeOrphanWorkspaces(context, audit);
  const deployState = await repairDeployState(context, audit);
  const jobCounts = await repairJobCounts(context, audit);
  return {
    leasesRecovered: leases.length,
    waitingSettled: waiting.length,
    jobStatusesRepaired: statuses,
    tasklessJobsEnded: taskless,
    strayTasksEnded: strayTasks,
    unheldTasksTimedOut: unheldTimedOut,
    queuedWithoutWorker: unschedulable,
    containersRemoved: containers.removed,
    containerError: containers.error,
    workspacesRemoved: workspaces,
    deployStateRepaired: deployState,
    jobCountsRepaired: jobCounts,
  };
}

/** Active jobs whose stored status is not the one derived from their current tasks. */
export async function repairJobStatuses(context: AppContext, audit: AuditContext): Promise<number> {
  const rows = await context.store.db
    .selectFrom('jobs')
    .innerJoin('tasks', (join) =>
      join.onRef('tasks.job_id', '=', 'jobs.id').onRef('tasks.job_attempt', '=', 'jobs.attempt'),
    )
    .select(['jobs.id', 'jobs.status', 'tasks.status as task_status'])
    .where('jobs.status', 'in', ['waiting', 'queued', 'running'])
    .execute();
  const byJob = new Map<
    string,
    { status: string; tasks: (typeof rows)[number]['task_status'][] }
  >();
  for (const row of rows) {
    const entry = byJob.get(row.id) ?? { status: row.status, tasks: [] };
    entry.tasks.push(row.task_status);
    byJob.set(row.id, entry);
  }
  const wrong = [...byJob.entries()].filter(
    ([, entry]) => deriveJobStatus(entry.tasks) !== entry.status,
  );
  if (wrong.length === 0) return 0;
  const changes = new ChangeSet();
  const repaired = await context.store.write(async (trx) => {
    let count = 0;
    for (const [jobId, entry] of wrong) {
      const before = await trx
        .selectFrom('jobs')
        .select('status')
        .where('id', '=', jobId)
        .executeTakeFirst();
      if (before === undefined || before.status !== entry.status) continue;
      const after = await refreshJobStatus(trx, jobId, changes, audit);
      if (after.status === before.status) continue;
      await appendAudit(trx, audit, {
        action: 'state_repaired',
        jobId,
        details: {
          problem: 'job status did not match its tasks',
          from: before.status,
          to: after.status,
        },
      });
      count += 1;
    }
    return count;
  });
  changes.emit(context.events);
  return repaired;
}

/**
 * Ends the active jobs that have no task of their current attempt, which no worker could take.
 * A job and its tasks are written in one transaction, so only a hand edit or an older version
 * leaves such a job.
 */
export async function endTasklessJobs(context: AppContext, audit: AuditContext): Promise<number> {
  const rows = await context.store.db
    .selectFrom('jobs')
    .select('jobs.id')
    .where('jobs.status', 'in', ['waiting', 'queued', 'running'])
    .where(({ exists, not, selectFrom }) =>
      not(
        exists(
          selectFrom('tasks')
            .select('tasks.id')
            .whereRef('tasks.job_id', '=', 'jobs.id')
            .whereRef('tasks.job_attempt', '=', 'jobs.attempt'),
        ),
      ),
    )
    .execute();
  if (rows.length === 0) return 0;
  const changes = new ChangeSet();
  const ended = await context.store.write(async (trx) => {
    let count = 0;
    for (const { id } of rows) {
      const job = await trx.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
      if (job === undefined || isTerminal(job.status)) continue;
      const tasks = await trx
        .selectFrom('tasks')
        .select('id')
        .where('job_id', '=', id)
        .where('job_attempt', '=', job.attempt)
        .limit(1)
        .execute();
      if (tasks.length > 0) continue;
      const reason = `attempt ${job.attempt} of the job has no tasks; trigger it again`;
      await refreshJobStatus(trx, job, changes, audit, { status: 'error', update: { reason } });
      await appendAudit(trx, audit, {
        action: 'state_repaired',
        jobId: id,
        details: { problem: 'job has no tasks', from: job.status, to: 'error', reason },
      });
      count += 1;
    }
    return count;
  });
  changes.emit(context.events);
  return ended;
}

/** Ends `task` with status `to` and writes a `state_repaired` audit row with the reason. */
async function repairTask(
  trx: Transaction<Database>,
  task: TaskRow,
  to: 'error' | 'timed_out',
  problem: string,
  reason: string,
  { changes, audit }: { changes: ChangeSet; audit: AuditContext },
): Promise<void> {
  await transitionTask(trx, task, to, changes, { reason });
  await appendAudit(trx, audit, {
    action: 'state_repaired',
    jobId: task.job_id,
    taskId: task.id,
    details: { problem, from: task.status, to, reason },
  });
}

/** Active tasks that belong to a finished job or to an older attempt of the job. */
export async function endStrayTasks(context: AppContext, audit: AuditContext): Promise<number> {
  const stray = await context.store.db
    .selectFrom('tasks')
    .innerJoin('jobs', 'jobs.id', 'tasks.job_id')
    .selectAll('tasks')
    .select(['jobs.status as job_status', 'jobs.attempt as job_current_attempt'])
    .where('tasks.status', 'in', ['waiting', 'queued', 'running'])
    .where((eb) =>
      eb.or([
        eb('jobs.status', 'not in', ['waiting', 'queued', 'running']),
        eb('tasks.job_attempt', '!=', eb.ref('jobs.attempt')),
      ]),
    )
    .execute();
  if (stray.length === 0) return 0;
  const changes = new ChangeSet();
  const ended = await context.store.write(async (trx) => {
    let count = 0;
    for (const row of stray) {
      const task = await trx
        .selectFrom('tasks')
        .selectAll()
        .where('id', '=', row.id)
        .executeTakeFirst();
      if (task === undefined || isTerminal(task.status)) continue;
      const reason =
        row.job_attempt !== row.job_current_attempt
          ? `attempt ${row.job_attempt} of the job was replaced by attempt ${row.job_current_attempt}`
          : `the job already ended ${row.job_status}`;
      await repairTask(trx, task, 'error', 'active task of a finished job attempt', reason, {
        changes,
        audit,
      });
      count += 1;
    }
    return count;
  });
  changes.emit(context.events);
  return ended;
}

/**
 * Ends `timed_out` the running tasks without a worker whose pipeline timeout has passed since
 * they started. A worker ends its own tasks at the timeout, but a task set running through
 * `PATCH /api/job/{id}/status` has none, and its concurrency group would stay blocked.
 */
export async function timeOutUnheldTasks(
  context: AppContext,
  audit: AuditContext,
  now = Date.now(),
): Promise<number> {
  const candidates = await context.store.db
    .selectFrom('tasks')
    .innerJoin('jobs', 'jobs.id', 'tasks.job_id')
    .select(['tasks.id', 'tasks.started_at', 'jobs.pipeline'])
    .where('tasks.status', '=', 'running')
    .where('tasks.worker_id', 'is', null)
    .execute();
  const due = candidates.flatMap((row) => {
    const timeoutMs =
      parseJsonColumn<Partial<Pipeline>>(row.pipeline, {}).timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (row.started_at === null) return [];
    return now - Date.parse(row.started_at) > timeoutMs ? [{ id: row.id, timeoutMs }] : [];
  });
  if (due.length === 0) return 0;
  const changes = new ChangeSet();
  const ended = await context.store.write(async (trx) => {
    let count = 0;
    for (const { id, timeoutMs } of due) {
      const task = await trx
        .selectFrom('tasks')
        .selectAll()
        .where('id', '=', id)
        .executeTakeFirst();
      // A worker may have claimed it, or someone ended it, since the read above.
      if (task === undefined || task.status !== 'running' || task.worker_id !== null) continue;
      const reason =
        `no worker holds this task and its timeout of ${timeoutMs / 1000}s passed since it ` +
        `started at ${task.started_at}`;
      await repairTask(trx, task, 'timed_out', 'running task without a worker', reason, {
        changes,
        audit,
      });
      await refreshJobStatus(trx, task.job_id, changes, audit);
      count += 1;
    }
    return count;
  });
  changes.emit(context.events);
  return ended;
}

/**
 * Queued jobs older than QUEUED_GRACE_MS: stores why no worker takes them on the job and
 * wakes in-process dispatchers again in case their event was lost.
 */
export async function explainQueuedJobs(context: AppContext, audit: AuditContext): Promise<number> {
  const cutoff = new Date(Date.now() - QUEUED_GRACE_MS).toISOString();
  const jobs = await context.store.db
    .selectFrom('jobs')
    .selectAll()
    .where('status', '=', 'queued')
    .where('queued_at', '<', cutoff)
    .execute();
  let reported = 0;
  const wake: string[] = [];
  for (const job of jobs) {
    const tasks = await context.store.db
      .selectFrom('tasks')
      .selectAll()
      .where('job_id', '=', job.id)
      .where('job_attempt', '=', job.attempt)
      .execute();
    wake.push(...tasks.filter((task) => task.status === 'queued').map((task) => task.id));
    const reason =
      context.store.read((sqlite) => explainQueued(sqlite, context.config, job, tasks)) ?? null;
    if (reason === job.reason) continue;
    await context.store.write(async (trx) => {
      const updated = await trx
        .updateTable('jobs')
        .set({ reason })
        .where('id', '=', job.id)
        .where('status', '=', 'queued')
        .executeTakeFirst();
      if (Number(updated.numUpdatedRows) === 0) return;
      await appendAudit(trx, audit, {
        action: reason === null ? 'job_schedulable' : 'job_unschedulable',
        jobId: job.id,
        details: { reason, previous_reason: job.reason, queued_at: job.queued_at },
      });
    });
    if (reason !== null) reported += 1;
  }
  if (wake.length > 0) context.events.emit('tasks-queued', wake);
  return reported;
}

/** Sets LAST_DEPLOYED_COMMIT to the commit of the last successful deploy when they differ. */
export async function repairDeployState(
  context: AppContext,
  audit: AuditContext,
): Promise<boolean> {
  const last = await lastSuccessfulDeploy(context);
  if (last === undefined) return false;
  const pipeline = parseJsonColumn<Partial<Pipeline>>(last.pipeline, {});
  const template = pipeline.onSuccess?.state.LAST_DEPLOYED_COMMIT;
  // A deploy pipeline that does not set the variable says nothing about its value.
  if (template === undefined) return false;
  const commit = renderTemplate(template, jobTemplateValues(last));
  return context.store.write(async (trx) => {
    const stored = await getStateVariable(trx, 'LAST_DEPLOYED_COMMIT');
    if (stored === commit) return false;
    await setStateVariable(trx, 'LAST_DEPLOYED_COMMIT', commit);
    await appendAudit(trx, audit, {
      action: 'state_repaired',
      jobId: last.id,
      details: {
        problem: 'LAST_DEPLOYED_COMMIT did not match the last successful deploy',
        name: 'LAST_DEPLOYED_COMMIT',
        from: stored ?? null,
        to: commit,
      },
    });
    return true;
  });
}

/**
 * Sets each finished status's row of job_status_counts to the number of jobs in that status,
 * where they differ, and returns how many rows it changed. It counts every finished job, with
 * the write lock held so that no change falls between the count and the fix. The same count
 * took about 70 ms for a million jobs on a 2-core machine (bench/api/metrics-scrape.ts, run on
 * the code from before the table), once per sweep interval.
 */
export async function repairJobCounts(context: AppContext, audit: AuditContext): Promise<number> {
  return context.store.write(async (trx) => {
    const actual = await trx
      .selectFrom('jobs')
      .select(['status', (eb) => eb.fn.countAll<number>().as('count')])
      .where('status', 'in', [...TERMINAL_STATUSES])
      .groupBy('status')
      .execute();
    const counts = new Map(actual.map((row) => [row.status as string, Number(row.count)]));
    const stored = await trx.selectFrom('job_status_counts').selectAll().execute();
    let repaired = 0;
    for (const row of stored) {
      const count = counts.get(row.status) ?? 0;
      if (Number(row.count) === count) continue;
      await trx
        .updateTable('job_status_counts')
        .set({ count })
        .where('status', '=', row.status)
        .execute();
      await appendAudit(trx, audit, {
        action: 'state_repaired',
        details: {
          problem: `job_status_counts did not match the ${row.status} jobs`,
          name: `job_status_counts.${row.status}`,
          from: Number(row.count),
          to: count,
        },
      });
      repaired += 1;
    }
    if (repaired > 0) {
      context.logger.warn(
        { statuses: repaired },
        'repaired the counts of finished jobs; something changed jobs without the triggers that keep them',
      );
    }
    return repaired;
  });
}
