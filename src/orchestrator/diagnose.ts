/**
 * Why a queued job is not running yet, in words for `GET /api/job/{id}`: another job of its
 * concurrency group runs, no live worker at all, none with the executor its tasks need, or
 * every such worker busy.
 */
import type BetterSqlite3 from 'better-sqlite3';
import type { Config } from '../config/env.js';
import { parseJsonColumn } from '../store/json.js';
import { param, prepare } from '../store/prepared.js';
import type { JobRow, TaskRow, WorkerRow } from '../store/schema.js';

/** A worker counts as live while its last heartbeat is newer than this many leases. */
const LIVE_LEASES = 3;

const LIVE_WORKERS = prepare<{ since: string }>((db) =>
  db
    .selectFrom('workers')
    .selectAll()
    .where('status', '=', 'online')
    .where('last_heartbeat_at', '>=', param('since')),
);

const RUNNING_BY_WORKER = prepare((db) =>
  db
    .selectFrom('tasks')
    .select(['worker_id', (eb) => eb.fn.countAll<number>().as('count')])
    .where('status', '=', 'running')
    .groupBy('worker_id'),
);

const RUNNING_IN_GROUP = prepare<{ group: string; id: string }>((db) =>
  db
    .selectFrom('jobs')
    .select('id')
    .where('concurrency_group', '=', param('group'))
    .where('status', '=', 'running')
    .where('id', '!=', param('id'))
    .limit(1),
);

/**
 * Returns the id of a running job of `job`'s concurrency group other than `job` itself, or
 * undefined when the job is in no group or none runs.
 */
export function findRunningInGroup(
  sqlite: BetterSqlite3.Database,
  job: Pick<JobRow, 'id' | 'concurrency_group'>,
): string | undefined {
  if (job.concurrency_group === null) return undefined;
  const running = RUNNING_IN_GROUP.get<{ id: string }>(sqlite, {
    group: job.concurrency_group,
    id: job.id,
  });
  return running?.id;
}

export function liveSince(config: Config, now: number = Date.now()): string {
  return new Date(now - LIVE_LEASES * config.worker.leaseSeconds * 1000).toISOString();
}

export function liveWorkers(sqlite: BetterSqlite3.Database, config: Config): WorkerRow[] {
  return LIVE_WORKERS.all<WorkerRow>(sqlite, { since: liveSince(config) });
}

export function canRun(worker: WorkerRow, executor: string | null): boolean {
  if (executor === null) return true;
  return parseJsonColumn<string[]>(worker.executors, []).includes(executor);
}

/**
 * Returns why the job's queued tasks have no worker, or undefined when one may claim them
 * now. Run it inside Store.read, so the workers and their running tasks are read together.
 */
export function explainQueued(
  sqlite: BetterSqlite3.Database,
  config: Config,
  job: Pick<JobRow, 'id' | 'concurrency_group'>,
  tasks: TaskRow[],
): string | undefined {
  const queued = tasks.filter((task) => task.status === 'queued');
  if (queued.length === 0) return undefined;
  const running = findRunningInGroup(sqlite, job);
  if (running !== undefined) {
    return `waits for job ${running} in concurrency group ${job.concurrency_group}`;
  }
  const workers = liveWorkers(sqlite, config);
  if (workers.length === 0) return 'no worker is online';
  let busy: Map<string | null, number> | undefined;
  for (const executor of new Set(queued.map((task) => task.executor))) {
    const able = workers.filter((worker) => canRun(worker, executor));
    const label = executor === null ? '' : ` with the ${executor} executor`;
    if (able.length === 0) return `no worker${label}`;
    busy ??= new Map(
      RUNNING_BY_WORKER.all<{ worker_id: string | null; count: number }>(sqlite, {}).map((row) => [
        row.worker_id,
        Number(row.count),
      ]),
    );
    const free = able.reduce(
      (sum, worker) => sum + Math.max(0, worker.capacity - (busy!.get(worker.id) ?? 0)),
      0,
    );
    if (free === 0) return `every worker${label} is busy (${able.length} online)`;
  }
  return undefined;
}
