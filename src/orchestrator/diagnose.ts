/**
 * Why a queued job is not running yet, in words for `GET /api/job/{id}`: no live worker at
 * all, none with the executor its tasks need, or every such worker busy.
 */
import type { Kysely } from 'kysely';
import type { Config } from '../config/env.js';
import { parseJsonColumn } from '../store/json.js';
import type { Database, TaskRow, WorkerRow } from '../store/schema.js';

/** A worker counts as live while its last heartbeat is newer than this many leases. */
const LIVE_LEASES = 3;

export function liveSince(config: Config, now: number = Date.now()): string {
  return new Date(now - LIVE_LEASES * config.worker.leaseSeconds * 1000).toISOString();
}

export async function liveWorkers(db: Kysely<Database>, config: Config): Promise<WorkerRow[]> {
  return db
    .selectFrom('workers')
    .selectAll()
    .where('status', '=', 'online')
    .where('last_heartbeat_at', '>=', liveSince(config))
    .execute();
}

export function canRun(worker: WorkerRow, executor: string | null): boolean {
  if (executor === null) return true;
  return parseJsonColumn<string[]>(worker.executors, []).includes(executor);
}

/** Returns why the queued tasks have no worker, or undefined when one may claim them now. */
export async function explainQueued(
  db: Kysely<Database>,
  config: Config,
  tasks: TaskRow[],
): Promise<string | undefined> {
  const queued = tasks.filter((task) => task.status === 'queued');
  if (queued.length === 0) return undefined;
  const workers = await liveWorkers(db, config);
  if (workers.length === 0) return 'no worker is online';
  for (const executor of new Set(queued.map((task) => task.executor))) {
    const able = workers.filter((worker) => canRun(worker, executor));
    const label = executor === null ? '' : ` with the ${executor} executor`;
    if (able.length === 0) return `no worker${label}`;
    const free = await freeSlots(db, able);
    if (free === 0) return `every worker${label} is busy (${able.length} online)`;
  }
  return undefined;
}

async function freeSlots(db: Kysely<Database>, workers: WorkerRow[]): Promise<number> {
  const running = await db
    .selectFrom('tasks')
    .select(['worker_id', (eb) => eb.fn.countAll<number>().as('count')])
    .where('status', '=', 'running')
    .where(
      'worker_id',
      'in',
      workers.map((worker) => worker.id),
    )
    .groupBy('worker_id')
    .execute();
  const busy = new Map(running.map((row) => [row.worker_id, Number(row.count)]));
  return workers.reduce(
    (sum, worker) => sum + Math.max(0, worker.capacity - (busy.get(worker.id) ?? 0)),
    0,
  );
}
