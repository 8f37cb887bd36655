/**
 * Why a queued job is not running yet, in words for `GET /api/job/{id}`. Another job of its
 * concurrency group runs or an older one is queued, no worker is live, none has the executor
 * its tasks need, every such worker left it out of its claims, or every such worker is busy.
 */
import type BetterSqlite3 from 'better-sqlite3';
import { sql, type Kysely } from 'kysely';
import type { Config } from '../config/env.js';
import { parseJsonColumn } from '../store/json.js';
import { literal, param, prepare, queryOnce } from '../store/prepared.js';
import type { Database, JobRow, TaskRow, WorkerRow } from '../store/schema.js';
import { nowIso } from '../util/time.js';

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

/**
 * Builds the query for what each job of `ids` waits for in its concurrency group: `running_id`,
 * a running job of the group, and `older_id`, the oldest queued job of the group created before
 * it. `stopping_id` is a job of the group, itself included, with a task that a status update
 * ended while its worker still stops the step at time `now`. A claim leaves a job's tasks
 * queued for the same reasons (see claimCandidates). Jobs in no group are left out.
 */
export function groupBlockersQuery(db: Kysely<Database>, ids: readonly string[], now: string) {
  return db
    .selectFrom('jobs as job')
    .select('job.id')
    .select((eb) =>
      eb
        .selectFrom('tasks as stopping')
        .innerJoin('jobs as other', 'other.id', 'stopping.job_id')
        .select('other.id')
        // See claimCandidates for the unary +.
        .where('stopping.status', '!=', literal('running'))
        .where('stopping.lease_expires_at', '>', now)
        .where(
          sql<string>`+${sql.ref('other.concurrency_group')}`,
          '=',
          sql.ref<string>('job.concurrency_group'),
        )
        .limit(1)
        .as('stopping_id'),
    )
    .select((eb) =>
      eb
        .selectFrom('jobs as other')
        .select('other.id')
        .whereRef('other.concurrency_group', '=', 'job.concurrency_group')
        .where('other.status', '=', 'running')
        .whereRef('other.id', '!=', 'job.id')
        .limit(1)
        .as('running_id'),
    )
    .select((eb) =>
      eb
        .selectFrom('jobs as older')
        .select('older.id')
        .whereRef('older.concurrency_group', '=', 'job.concurrency_group')
        .where('older.status', '=', 'queued')
        .where((older) =>
          older(
            older.refTuple('older.created_at', 'older.id'),
            '<',
            older.refTuple('job.created_at', 'job.id'),
          ),
        )
        .orderBy('older.created_at')
        .orderBy('older.id')
        .limit(1)
        .as('older_id'),
    )
    .where('job.id', 'in', ids)
    .where('job.concurrency_group', 'is not', null);
}

/** A row of groupBlockersQuery. */
export interface GroupBlockers {
  id: string;
  running_id: string | null;
  older_id: string | null;
  stopping_id: string | null;
}

const GROUP_BLOCKERS = prepare<{ id: string; now: string }>((db) =>
  groupBlockersQuery(db, [param('id')], param('now')),
);

/**
 * Returns what `job` waits for in its concurrency group (see groupBlockersQuery), or undefined
 * when the job is in no group.
 */
export function findGroupBlockers(
  sqlite: BetterSqlite3.Database,
  job: Pick<JobRow, 'id' | 'concurrency_group'>,
): GroupBlockers | undefined {
  if (job.concurrency_group === null) return undefined;
  return GROUP_BLOCKERS.get<GroupBlockers>(sqlite, { id: job.id, now: nowIso() });
}

function describeGroupBlockers(
  group: string,
  blockers: GroupBlockers | undefined,
): string | undefined {
  if (blockers === undefined) return undefined;
  if (blockers.running_id !== null) {
    return `waits for job ${blockers.running_id} in concurrency group ${group}`;
  }
  if (blockers.older_id !== null) {
    return `waits for the older job ${blockers.older_id} in concurrency group ${group} to start`;
  }
  if (blockers.stopping_id !== null) {
    // A status update or an engine failure ended that job while its step could still run.
    return (
      `waits for a worker to confirm that a step of job ${blockers.stopping_id} in concurrency ` +
      `group ${group} stopped; the job ended while the step could still run`
    );
  }
  return undefined;
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
 * Returns whether the worker's latest claim left out the executor, or for a task that names
 * none, the worker's first executor, which runs it.
 */
function leavesOut(worker: WorkerRow, executor: string | null): boolean {
  if (worker.unavailable_executors === null) return false;
  const name = executor ?? parseJsonColumn<string[]>(worker.executors, [])[0];
  return parseJsonColumn<string[]>(worker.unavailable_executors, []).includes(name ?? '');
}

/** Describes workers that registered the executor but left it out of their latest claims. */
function describeUnavailable(workers: readonly WorkerRow[], executor: string | null): string {
  const ids = workers.map((worker) => worker.id).join(', ');
  const subject =
    executor === null
      ? 'every online worker left its first executor'
      : `every worker with the ${executor} executor left it`;
  const check =
    executor === 'docker'
      ? 'check the Docker engine on its host (docker info) and the worker log'
      : 'see the worker log';
  return `${subject} out of its claims because it cannot run it now (${ids}); ${check}`;
}

/**
 * Returns why the job's queued tasks have no worker, or undefined when one may claim them
 * now. Run it inside Store.read, so the workers and their running tasks are read together.
 */
export function explainQueued(
  sqlite: BetterSqlite3.Database,
  config: Config,
  job: Pick<JobRow, 'id' | 'concurrency_group'>,
  tasks: readonly Pick<TaskRow, 'status' | 'executor'>[],
): string | undefined {
  const queued = tasks.filter((task) => task.status === 'queued');
  if (queued.length === 0) return undefined;
  if (job.concurrency_group !== null) {
    const blockers = findGroupBlockers(sqlite, job);
    const reason = describeGroupBlockers(job.concurrency_group, blockers);
    if (reason !== undefined) return reason;
  }
  return explainWorkers(queued, new WorkerLoad(sqlite, config));
}

/**
 * Returns why each queued job of `jobs` is not running, by job id, as explainQueued does for
 * one job. The number of queries does not grow with the number of jobs. A job that a worker
 * may claim now has no entry. Run it inside Store.read.
 */
export function explainEachQueued(
  sqlite: BetterSqlite3.Database,
  config: Config,
  jobs: readonly JobRow[],
): Map<string, string> {
  const reasons = new Map<string, string>();
  const queuedJobs = jobs.filter((job) => job.status === 'queued');
  if (queuedJobs.length === 0) return reasons;
  const tasks = readQueuedTasks(sqlite, queuedJobs);
  const blockers = readGroupBlockers(sqlite, queuedJobs);
  const load = new WorkerLoad(sqlite, config);
  for (const job of queuedJobs) {
    const queued = tasks.get(job.id) ?? [];
    if (queued.length === 0) continue;
    const reason =
      (job.concurrency_group === null
        ? undefined
        : describeGroupBlockers(job.concurrency_group, blockers.get(job.id))) ??
      explainWorkers(queued, load);
    if (reason !== undefined) reasons.set(job.id, reason);
  }
  return reasons;
}

type QueuedTask = Pick<TaskRow, 'job_id' | 'job_attempt' | 'status' | 'executor'>;

/** Reads the queued tasks of each job's current attempt, by job id, with one query. */
function readQueuedTasks(
  sqlite: BetterSqlite3.Database,
  jobs: readonly JobRow[],
): Map<string, QueuedTask[]> {
  const attempts = new Map(jobs.map((job) => [job.id, job.attempt]));
  const rows = queryOnce<QueuedTask>(sqlite, (db) =>
    db
      .selectFrom('tasks')
      .select(['job_id', 'job_attempt', 'status', 'executor'])
      .where('job_id', 'in', [...attempts.keys()]),
  );
  const byJob = new Map<string, QueuedTask[]>();
  for (const row of rows) {
    if (row.status !== 'queued' || row.job_attempt !== attempts.get(row.job_id)) continue;
    const list = byJob.get(row.job_id) ?? [];
    list.push(row);
    byJob.set(row.job_id, list);
  }
  return byJob;
}

/** Runs groupBlockersQuery for the jobs that are in a concurrency group, by job id. */
function readGroupBlockers(
  sqlite: BetterSqlite3.Database,
  jobs: readonly JobRow[],
): Map<string, GroupBlockers> {
  const ids = jobs.filter((job) => job.concurrency_group !== null).map((job) => job.id);
  if (ids.length === 0) return new Map();
  const rows = queryOnce<GroupBlockers>(sqlite, (db) => groupBlockersQuery(db, ids, nowIso()));
  return new Map(rows.map((row) => [row.id, row]));
}

/** Live workers and the tasks each runs, read on first use and shared by the jobs of one read. */
class WorkerLoad {
  #workers: WorkerRow[] | undefined;
  #running: Map<string | null, number> | undefined;

  constructor(
    readonly sqlite: BetterSqlite3.Database,
    readonly config: Config,
  ) {}

  get workers(): WorkerRow[] {
    this.#workers ??= liveWorkers(this.sqlite, this.config);
    return this.#workers;
  }

  /** Returns how many tasks the worker runs now. */
  running(workerId: string): number {
    this.#running ??= new Map(
      RUNNING_BY_WORKER.all<{ worker_id: string | null; count: number }>(this.sqlite, {}).map(
        (row) => [row.worker_id, Number(row.count)],
      ),
    );
    return this.#running.get(workerId) ?? 0;
  }
}

/** Returns why no live worker may claim the queued tasks now, or undefined when one may. */
function explainWorkers(
  queued: readonly Pick<TaskRow, 'executor'>[],
  load: WorkerLoad,
): string | undefined {
  const workers = load.workers;
  if (workers.length === 0) return 'no worker is online';
  for (const executor of new Set(queued.map((task) => task.executor))) {
    const registered = workers.filter((worker) => canRun(worker, executor));
    const label = executor === null ? '' : ` with the ${executor} executor`;
    if (registered.length === 0) return `no worker${label}`;
    const able = registered.filter((worker) => !leavesOut(worker, executor));
    if (able.length === 0) return describeUnavailable(registered, executor);
    const free = able.reduce(
      (sum, worker) => sum + Math.max(0, worker.capacity - load.running(worker.id)),
      0,
    );
    if (free === 0) return `every worker${label} is busy (${able.length} online)`;
  }
  return undefined;
}
