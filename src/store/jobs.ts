import type BetterSqlite3 from 'better-sqlite3';
import { sql, type Insertable, type Kysely } from 'kysely';
import { ACTIVE_STATUSES, type Status } from '../jobs/status.js';
import { param, paramsFor, prepare, queryOnce } from './prepared.js';
import type { Database, IdempotencyKeysTable, JobRow, TaskRow } from './schema.js';

const JOB_BY_ID = prepare<{ id: string }>((db) =>
  db.selectFrom('jobs').selectAll().where('id', '=', param('id')),
);

const CURRENT_TASKS = prepare<{ job_id: string; job_attempt: number }>((db) =>
  db
    .selectFrom('tasks')
    .selectAll()
    .where('job_id', '=', param('job_id'))
    .where('job_attempt', '=', param<number>('job_attempt'))
    .orderBy('idx'),
);

/** Reads the job with a prepared statement, for Store.read and other synchronous paths. */
export function readJob(sqlite: BetterSqlite3.Database, id: string): JobRow | undefined {
  return JOB_BY_ID.get<JobRow>(sqlite, { id });
}

/** Tasks of the job's current attempt, in matrix order, with a prepared statement. */
export function readCurrentTasks(sqlite: BetterSqlite3.Database, job: JobRow): TaskRow[] {
  return CURRENT_TASKS.all<TaskRow>(sqlite, { job_id: job.id, job_attempt: job.attempt });
}

const JOB_BY_IDEMPOTENCY_KEY = prepare<{ requested_by: string; key: string }>((db) =>
  db
    .selectFrom('jobs')
    .selectAll()
    .where('requested_by', '=', param('requested_by'))
    .where('idempotency_key', '=', param('key')),
);

const JOB_BY_GITHUB_RUN = prepare<{ type: string; run_id: string; run_attempt: number }>((db) =>
  db
    .selectFrom('jobs')
    .selectAll()
    .where('type', '=', param('type'))
    .where('github_run_id', '=', param('run_id'))
    .where('github_run_attempt', '=', param<number>('run_attempt')),
);

/** Returns the job that `requestedBy` (a token name) triggered with this Idempotency-Key. */
const JOB_BY_RECORDED_KEY = prepare<{ requested_by: string; key: string }>((db) =>
  db
    .selectFrom('idempotency_keys')
    .innerJoin('jobs', 'jobs.id', 'idempotency_keys.job_id')
    .selectAll('jobs')
    .select('idempotency_keys.request_hash as key_request_hash')
    .where('idempotency_keys.requested_by', '=', param('requested_by'))
    .where('idempotency_keys.idempotency_key', '=', param('key')),
);

const INSERT_RECORDED_KEY = prepare<Insertable<IdempotencyKeysTable>>((db) =>
  db
    .insertInto('idempotency_keys')
    .values(
      paramsFor([
        'requested_by',
        'idempotency_key',
        'job_id',
        'request_hash',
        'created_at',
      ] as const),
    ),
);

/** A job found by an Idempotency-Key, with the hash of the request that sent the key. */
export interface KeyedJob {
  job: JobRow;
  requestHash: string | null;
}

/**
 * Finds the job that a token's Idempotency-Key names: the job created with the key, or one
 * the key was recorded for by recordIdempotencyKey.
 */
export function readJobByIdempotencyKey(
  sqlite: BetterSqlite3.Database,
  requestedBy: string,
  key: string,
): KeyedJob | undefined {
  const job = JOB_BY_IDEMPOTENCY_KEY.get<JobRow>(sqlite, { requested_by: requestedBy, key });
  if (job !== undefined) return { job, requestHash: job.request_hash };
  const recorded = JOB_BY_RECORDED_KEY.get<JobRow & { key_request_hash: string }>(sqlite, {
    requested_by: requestedBy,
    key,
  });
  if (recorded === undefined) return undefined;
  const { key_request_hash: requestHash, ...row } = recorded;
  return { job: row, requestHash };
}

/** Records that a token's Idempotency-Key names an existing job it did not create. */
export function recordIdempotencyKey(
  sqlite: BetterSqlite3.Database,
  key: Insertable<IdempotencyKeysTable>,
): void {
  INSERT_RECORDED_KEY.run(sqlite, key);
}

export function readJobByGithubRun(
  sqlite: BetterSqlite3.Database,
  type: string,
  runId: string,
  runAttempt: number,
): JobRow | undefined {
  return JOB_BY_GITHUB_RUN.get<JobRow>(sqlite, {
    type,
    run_id: runId,
    run_attempt: runAttempt,
  });
}

export async function findJob(db: Kysely<Database>, id: string): Promise<JobRow | undefined> {
  return db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
}

/** Tasks of the job's current attempt, in matrix order. */
export async function listCurrentTasks(db: Kysely<Database>, job: JobRow): Promise<TaskRow[]> {
  return db
    .selectFrom('tasks')
    .selectAll()
    .where('job_id', '=', job.id)
    .where('job_attempt', '=', job.attempt)
    .orderBy('idx')
    .execute();
}

export interface JobListQuery {
  status?: Status | undefined;
  type?: string | undefined;
  branch?: string | undefined;
  commit?: string | undefined;
  /** Only jobs older than this (created_at, id) position: the cursor of the previous page. */
  before?: { createdAt: string; id: string } | undefined;
  limit: number;
}

/**
 * Reads jobs newest first, filtered, one page at a time (keyset paging on created_at and id).
 * Synchronous, for Store.read.
 */
export function readJobList(sqlite: BetterSqlite3.Database, query: JobListQuery): JobRow[] {
  return queryOnce<JobRow>(sqlite, (db) => listJobsQuery(db, query));
}

/** Builds readJobList's query. */
export function listJobsQuery(db: Kysely<Database>, query: JobListQuery) {
  let select = db.selectFrom('jobs').selectAll();
  // A commit prefix matches few jobs, so with one the other filters are kept off the indexes
  // by SQLite's unary +. Without statistics SQLite would walk every job of the status, type or
  // branch instead.
  const column = (name: 'status' | 'type' | 'branch') =>
    query.commit === undefined ? sql.ref(name) : sql`+${sql.ref(name)}`;
  if (query.status !== undefined) select = select.where(column('status'), '=', query.status);
  if (query.type !== undefined) select = select.where(column('type'), '=', query.type);
  if (query.branch !== undefined) select = select.where(column('branch'), '=', query.branch);
  if (query.commit !== undefined) {
    // Commits are stored as lowercase hex, so the prefix is a range that an index on
    // commit_sha serves: 'g' sorts after every hex digit. LIKE could not use the index.
    const prefix = query.commit.toLowerCase();
    select = select.where('commit_sha', '>=', prefix).where('commit_sha', '<', `${prefix}g`);
  }
  const before = query.before;
  if (before !== undefined) {
    select = select.where((eb) =>
      eb.or([
        eb('created_at', '<', before.createdAt),
        eb.and([eb('created_at', '=', before.createdAt), eb('id', '<', before.id)]),
      ]),
    );
  }
  return select.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(query.limit);
}

/**
 * Counts jobs by status, leaving out statuses without a job. The active statuses are counted
 * in jobs_status_created and the finished ones read from job_status_counts, which triggers on
 * jobs keep, so the cost grows with the number of active jobs only. One statement reads both,
 * so a job that finishes meanwhile is counted once.
 */
export async function countJobsByStatus(db: Kysely<Database>): Promise<Record<string, number>> {
  const rows = await db
    .selectFrom('jobs')
    .select(['status', (eb) => eb.fn.countAll<number>().as('count')])
    .where('status', 'in', ACTIVE_STATUSES)
    .groupBy('status')
    .unionAll(db.selectFrom('job_status_counts').select(['status', 'count']))
    .execute();
  return Object.fromEntries(
    rows.filter((row) => Number(row.count) > 0).map((row) => [row.status, Number(row.count)]),
  );
}
