/**
 * `queue` check: no task has waited in the queue for longer than `max_wait`. A late task that
 * no live worker can run (no worker online, none with its executor) stays queued until a
 * person starts such a worker, so it makes the result unhealthy. Late tasks that a worker
 * could run, once it is free or once its concurrency group lets it, make it degraded.
 */
import type BetterSqlite3 from 'better-sqlite3';
import {
  canRun,
  explainEachQueued,
  explainQueued,
  liveWorkers,
} from '../../orchestrator/diagnose.js';
import type { QueueCheckSettings } from '../../pipeline/types.js';
import { param, prepare, queryOnce } from '../../store/prepared.js';
import type { JobRow, TaskRow } from '../../store/schema.js';
import { formatDuration } from '../../util/time.js';
import type { ProbeContext, ProbeResult } from '../types.js';

/** Late tasks read, oldest first, to find their reasons; the counts cover all of them. */
const MAX_EXAMINED = 200;
/** Late tasks listed in the details and named in the reason. */
const MAX_LISTED = 20;
const MAX_NAMED = 3;

// Each query reads only the queued entries of tasks_status_queued, so its cost grows with the
// queue and not with the tasks table.
const QUEUED = prepare((db) =>
  db
    .selectFrom('tasks')
    .select((eb) => [eb.fn.countAll<number>().as('count'), eb.fn.min('queued_at').as('oldest')])
    .where('status', '=', 'queued'),
);

const LATE_COUNT = prepare<{ before: string }>((db) =>
  db
    .selectFrom('tasks')
    .select((eb) => eb.fn.countAll<number>().as('count'))
    .where('status', '=', 'queued')
    .where('queued_at', '<', param('before')),
);

const LATE = prepare<{ before: string; limit: number }>((db) =>
  db
    .selectFrom('tasks')
    .select(['id', 'job_id', 'executor', 'queued_at'])
    .where('status', '=', 'queued')
    .where('queued_at', '<', param('before'))
    .orderBy('queued_at')
    .orderBy('id')
    .limit(param<number>('limit')),
);

type LateRow = Pick<TaskRow, 'id' | 'job_id' | 'executor' | 'queued_at'>;

export interface QueueSummary {
  /** Tasks queued now. */
  queued: number;
  /** Seconds since the oldest queued task was queued, or null with an empty queue. */
  oldestSeconds: number | null;
}

/** Counts the queued tasks and measures the oldest one's wait, for the check and /metrics. */
export function readQueueSummary(sqlite: BetterSqlite3.Database, now = Date.now()): QueueSummary {
  const row = QUEUED.get<{ count: number; oldest: string | null }>(sqlite, {})!;
  return {
    queued: Number(row.count),
    oldestSeconds: row.oldest === null ? null : Math.round((now - Date.parse(row.oldest)) / 1000),
  };
}

interface LateTask {
  task_id: string;
  job_id: string;
  executor: string | null;
  queued_seconds: number;
  /** Whether a live worker has the task's executor, so the task can start without a person. */
  runnable: boolean;
  reason: string;
}

export async function probeQueue(
  settings: QueueCheckSettings,
  context: ProbeContext,
): Promise<ProbeResult> {
  const { app } = context;
  const now = Date.now();
  const before = new Date(now - settings.maxWaitMs).toISOString();
  const read = app.store.read((sqlite) => {
    const queued = readQueueSummary(sqlite, now);
    const lateCount = LATE_COUNT.get<{ count: number }>(sqlite, { before })!.count;
    const rows = LATE.all<LateRow>(sqlite, { before, limit: MAX_EXAMINED });
    const jobIds = [...new Set(rows.map((row) => row.job_id))];
    const jobs =
      jobIds.length === 0
        ? []
        : queryOnce<JobRow>(sqlite, (db) =>
            db.selectFrom('jobs').selectAll().where('id', 'in', jobIds),
          );
    const reasons = explainEachQueued(sqlite, app.config, jobs);
    // explainEachQueued covers queued jobs. A running job's remaining tasks are explained one
    // job at a time, and there are at most as many such jobs as running tasks.
    for (const job of jobs) {
      if (reasons.has(job.id) || job.status !== 'running') continue;
      const tasks = rows
        .filter((row) => row.job_id === job.id)
        .map((row) => ({ status: 'queued' as const, executor: row.executor }));
      const reason = explainQueued(sqlite, app.config, job, tasks);
      if (reason !== undefined) reasons.set(job.id, reason);
    }
    const workers = liveWorkers(sqlite, app.config);
    const late = rows.map((row): LateTask => {
      const runnable = workers.some((worker) => canRun(worker, row.executor));
      return {
        task_id: row.id,
        job_id: row.job_id,
        executor: row.executor,
        queued_seconds: Math.round((now - Date.parse(row.queued_at ?? '')) / 1000),
        runnable,
        reason: reasons.get(row.job_id) ?? describeUnexplained(row, workers.length, runnable),
      };
    });
    return { queued, lateCount, late };
  });

  const { queued, lateCount, late } = read;
  const stuck = late.filter((task) => !task.runnable);
  const maxWait = formatDuration(settings.maxWaitMs);
  const details = {
    queued: queued.queued,
    oldest_queued_seconds: queued.oldestSeconds,
    late: Number(lateCount),
    stuck: stuck.length,
    max_wait_seconds: settings.maxWaitMs / 1000,
    tasks: [...stuck, ...late.filter((task) => task.runnable)].slice(0, MAX_LISTED),
  };
  if (stuck.length > 0) {
    const more = stuck.length === MAX_EXAMINED ? ' or more' : '';
    return {
      status: 'unhealthy',
      reason:
        `${stuck.length}${more} task(s) queued longer than ${maxWait} that no live worker can ` +
        `run; start a worker that can: ${name(stuck)}`,
      details,
    };
  }
  if (late.length > 0) {
    return {
      status: 'degraded',
      reason: `${Number(lateCount)} task(s) queued longer than ${maxWait}: ${name(late)}`,
      details,
    };
  }
  return { status: 'healthy', details };
}

/** Returns why a task waits when diagnose found nothing that keeps workers from it. */
function describeUnexplained(row: LateRow, liveCount: number, runnable: boolean): string {
  if (liveCount === 0) return 'no worker is online';
  if (!runnable) return `no worker with the ${row.executor ?? 'default'} executor`;
  return 'a live worker with free capacity can run it but has not claimed it';
}

function name(tasks: readonly LateTask[]): string {
  const named = tasks
    .slice(0, MAX_NAMED)
    .map(
      (task) => `${task.task_id} (${formatDuration(task.queued_seconds * 1000)}, ${task.reason})`,
    )
    .join('; ');
  return tasks.length > MAX_NAMED ? `${named}; ...` : named;
}
