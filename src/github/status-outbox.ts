/**
 * The commit status outbox. A report is a row written in a database transaction, so it
 * survives a restart; the sender (status-sender.ts) drains the table.
 *
 * Order per commit and context: rows are only added with the job's status read inside the
 * write transaction, so a later row never describes an older state. The sender sends only
 * the newest pending row of each (repository, commit, context) and marks older pending rows
 * `superseded`, so a retried old report can never overwrite a newer one.
 */
import { sql, type ExpressionBuilder, type Kysely, type Transaction } from 'kysely';
import { listCurrentTasks } from '../store/jobs.js';
import { literal } from '../store/prepared.js';
import type { Database, GitHubStatusRow, JobRow, TaskRow } from '../store/schema.js';
import { nowIso } from '../util/time.js';
import {
  describeStatus,
  GITHUB_STATES,
  isFullSha,
  jobContext,
  taskContext,
} from './status-format.js';

type Trx = Transaction<Database>;
type OutboxAs<A extends string> = Database & { [K in A]: Database['github_status_outbox'] };

/** Selects the pending or sent reports for report `o`'s commit and context that came after it. */
function newerReport(eb: ExpressionBuilder<OutboxAs<'o'>, 'o'>) {
  return eb
    .selectFrom('github_status_outbox as newer')
    .select('newer.id')
    .whereRef('newer.repository', '=', 'o.repository')
    .whereRef('newer.commit_sha', '=', 'o.commit_sha')
    .whereRef('newer.context', '=', 'o.context')
    .whereRef('newer.id', '>', 'o.id')
    .where('newer.outcome', 'in', ['pending', 'sent']);
}

export interface OutboxSettings {
  /** `owner/name` of the repository the commits belong to. */
  repository: string;
  /** SLIPWAY_PUBLIC_URL; without it statuses carry no target URL. */
  publicUrl: string | undefined;
}

interface Report {
  context: string;
  job: JobRow;
  task: TaskRow | undefined;
}

/**
 * Adds a report for the job's context and each matrix task's context whose state or
 * description changed since the last report. Returns the number of rows added.
 *
 * Only the newest job of its type for the commit is reported: an older job that ends later
 * (for example one cancelled by a newer run) must not replace the newer job's status.
 */
export async function enqueueJobStatuses(
  trx: Trx,
  jobId: string,
  settings: OutboxSettings,
): Promise<number> {
  const job = await trx.selectFrom('jobs').selectAll().where('id', '=', jobId).executeTakeFirst();
  if (job === undefined || !isFullSha(job.commit_sha)) return 0;
  if (!(await isNewestOfType(trx, job))) return 0;
  const reports: Report[] = [{ context: jobContext(job.type), job, task: undefined }];
  for (const task of await listCurrentTasks(trx, job)) {
    const context = taskContext(job.type, task);
    if (context !== undefined) reports.push({ context, job, task });
  }
  let added = 0;
  for (const report of reports) {
    if (await enqueueIfChanged(trx, report, settings)) added += 1;
  }
  return added;
}

async function isNewestOfType(trx: Trx, job: JobRow): Promise<boolean> {
  const newer = await trx
    .selectFrom('jobs')
    .select('id')
    .where('commit_sha', '=', job.commit_sha)
    .where('type', '=', job.type)
    .where((eb) =>
      eb.or([
        eb('created_at', '>', job.created_at),
        eb.and([eb('created_at', '=', job.created_at), eb('id', '>', job.id)]),
      ]),
    )
    .limit(1)
    .executeTakeFirst();
  return newer === undefined;
}

async function enqueueIfChanged(
  trx: Trx,
  { context, job, task }: Report,
  settings: OutboxSettings,
): Promise<boolean> {
  const subject = task ?? job;
  const state = GITHUB_STATES[subject.status];
  const description = describeStatus(subject);
  const targetUrl =
    settings.publicUrl === undefined ? null : `${settings.publicUrl}/api/job/${job.id}`;
  const latest = await trx
    .selectFrom('github_status_outbox')
    .select(['state', 'description', 'target_url'])
    .where('repository', '=', settings.repository)
    .where('commit_sha', '=', job.commit_sha!)
    .where('context', '=', context)
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
  if (
    latest !== undefined &&
    latest.state === state &&
    latest.description === description &&
    latest.target_url === targetUrl
  ) {
    return false;
  }
  const now = nowIso();
  await trx
    .insertInto('github_status_outbox')
    .values({
      repository: settings.repository,
      commit_sha: job.commit_sha!,
      context,
      state,
      description,
      target_url: targetUrl,
      job_id: job.id,
      task_id: task?.id ?? null,
      status: subject.status,
      outcome: 'pending',
      attempts: 0,
      next_attempt_at: now,
      last_error: null,
      created_at: now,
      sent_at: null,
    })
    .execute();
  return true;
}

/**
 * Returns up to `limit` due reports, each the newest pending one of its commit and context
 * with no newer report sent, job contexts before task contexts. Run
 * supersedeReplacedReports first so older ones are retired.
 */
export async function takeDueReports(
  db: Kysely<Database>,
  repository: string,
  limit: number,
): Promise<GitHubStatusRow[]> {
  return (
    db
      .selectFrom('github_status_outbox as o')
      .selectAll()
      .where('o.outcome', '=', literal('pending'))
      .where('o.repository', '=', repository)
      .where('o.next_attempt_at', '<=', nowIso())
      .where((eb) => eb.not(eb.exists(newerReport(eb))))
      // Job contexts first: they are what branch protection usually requires, and GitHub
      // writes are spaced a second apart, so a large matrix would otherwise delay them.
      .orderBy(sql`o.task_id IS NOT NULL`)
      .orderBy('o.id')
      .limit(limit)
      .execute()
  );
}

/**
 * Marks pending reports that a newer pending or sent report replaced, or only report `id`.
 * Run before each drain so that old reports stuck in backoff do not wait there for nothing,
 * and before each send, because a newer report may have arrived during the batch.
 */
export async function supersedeReplacedReports(
  trx: Trx,
  repository: string,
  id?: number,
): Promise<number> {
  let query = trx
    .updateTable('github_status_outbox as o')
    .set({ outcome: 'superseded' })
    .where('o.outcome', '=', literal('pending'))
    .where('o.repository', '=', repository)
    .where((eb) => eb.exists(newerReport(eb)));
  if (id !== undefined) query = query.where('o.id', '=', id);
  const result = await query.executeTakeFirst();
  return Number(result.numUpdatedRows);
}

export async function markReportSent(trx: Trx, id: number, attempts: number): Promise<void> {
  await trx
    .updateTable('github_status_outbox')
    .set({ outcome: 'sent', sent_at: nowIso(), attempts, last_error: null })
    .where('id', '=', id)
    .execute();
}

export async function markReportRetry(
  trx: Trx,
  id: number,
  attempts: number,
  error: string,
  nextAttemptAt: string,
): Promise<void> {
  await trx
    .updateTable('github_status_outbox')
    .set({ attempts, last_error: error, next_attempt_at: nextAttemptAt })
    .where('id', '=', id)
    .where('outcome', '=', literal('pending'))
    .execute();
}

export async function markReportFailed(
  trx: Trx,
  id: number,
  attempts: number,
  error: string,
): Promise<void> {
  await trx
    .updateTable('github_status_outbox')
    .set({ outcome: 'failed', attempts, last_error: error })
    .where('id', '=', id)
    .execute();
}

/** Returns the earliest time a pending report becomes due, if any is pending. */
export async function nextDueTime(
  db: Kysely<Database>,
  repository: string,
): Promise<string | undefined> {
  const row = await db
    .selectFrom('github_status_outbox')
    .select('next_attempt_at')
    .where('outcome', '=', literal('pending'))
    .where('repository', '=', repository)
    .orderBy('next_attempt_at')
    .limit(1)
    .executeTakeFirst();
  return row?.next_attempt_at;
}

/** Ids of jobs with a commit whose row changed at or after `since`, oldest change first. */
export async function jobsChangedSince(db: Kysely<Database>, since: string): Promise<string[]> {
  // NOTE: jobs has no index on updated_at, so this scans the table once per reconcile pass:
  // 42 ms with 200,000 synthetic jobs on a 2-core machine, growing with RETENTION_JOBS_DAYS.
  // An index would cost every job insert and status change instead.
  const rows = await db
    .selectFrom('jobs')
    .select('id')
    .where('updated_at', '>=', since)
    .where('commit_sha', 'is not', null)
    .orderBy('updated_at')
    .execute();
  return rows.map((row) => row.id);
}

/**
 * Returns whether a report for the repository was written before the ISO time `before` (and
 * not yet pruned).
 */
export async function hasReportsBefore(
  db: Kysely<Database>,
  repository: string,
  before: string,
): Promise<boolean> {
  const row = await db
    .selectFrom('github_status_outbox')
    .select('id')
    .where('repository', '=', repository)
    .where('created_at', '<', before)
    .limit(1)
    .executeTakeFirst();
  return row !== undefined;
}
