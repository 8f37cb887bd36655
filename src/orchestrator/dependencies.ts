/**
 * Dependency gating: a job whose type depends on other types for the same commit waits
 * until a job of each of them succeeded, and is skipped when one ends otherwise.
 *
 * Commits are compared as git does with abbreviations: `8d77f61` and the full
 * `8d77f61ddf9f...` name the same commit, so a job triggered by hand with a short SHA and
 * one triggered by GitHub with the full SHA depend on each other.
 */
import type BetterSqlite3 from 'better-sqlite3';
import { sql, type Expression, type SqlBool, type Transaction } from 'kysely';
import { isTerminal, type Status } from '../jobs/status.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import { param, prepare, updateById } from '../store/prepared.js';
import type { Database, JobRow, TaskRow } from '../store/schema.js';
import { writeConnection } from '../store/write-queue.js';
import type { ChangeSet } from './changes.js';
import { refreshJobStatus, transitionTask } from './job-status.js';

export type DependencyState =
  | { state: 'satisfied' }
  /**
   * `waitingFor` lists the needed types whose latest job has not ended, or that have no job.
   * `missing` lists the needed types that have no job at all for the commit yet.
   */
  | { state: 'waiting'; reason: string; waitingFor: string[]; missing: string[] }
  /** `dependency` is the needed type whose latest job ended in anything but success. */
  | { state: 'failed'; reason: string; dependency: string };

const NEEDS = prepare<{ type: string }>((db) =>
  db
    .selectFrom('workflow_dependencies')
    .select('depends_on')
    .where('workflow', '=', param('type'))
    .orderBy('depends_on'),
);

/** Minimum number of hex digits in a commit, as the API accepts them. */
const MIN_COMMIT_DIGITS = 7;

/**
 * Conditions on `column` that together match the commits naming the same commit as the
 * `commit` parameter: the same text, a longer text that starts with it, and a shorter one of
 * at least MIN_COMMIT_DIGITS digits that it starts with. Commits are lower-case hex, so every
 * longer one sorts between `commit` and `commit || 'g'`, and every shorter one between its
 * first digits and `commit`. Each condition reads one range of an index on the column, and
 * the last two are almost always empty. They go into a UNION ALL each, because a single OR
 * of them let SQLite read every job of the type instead.
 * NOTE: two commits that share their first digits both match a short SHA of those digits,
 * which git would call ambiguous. Then the newest job of the two counts.
 */
function sameCommit(column: 'commit_sha' | 'jobs.commit_sha'): Array<Expression<SqlBool>> {
  const ref = sql.ref(column);
  const commit = param('commit');
  return [
    sql<SqlBool>`${ref} = ${commit}`,
    sql<SqlBool>`${ref} > ${commit} AND ${ref} < ${commit} || 'g'`,
    sql<SqlBool>`${ref} >= substr(${commit}, 1, ${sql.lit(MIN_COMMIT_DIGITS)}) AND ${ref} < ${commit}
      AND ${ref} = substr(${commit}, 1, length(${ref}))`,
  ];
}

export const LATEST_OF_TYPE = prepare<{ commit: string; type: string }>((db) => {
  const [same, ...others] = sameCommit('commit_sha').map((condition, index) =>
    db
      .selectFrom('jobs')
      .select(['id', 'status', 'created_at'])
      .where(condition)
      // The unary + keeps SQLite from reading the rare branches through jobs_type_created,
      // in created_at order for the ORDER BY, which visits every job of the type.
      .where(index === 0 ? sql.ref('type') : sql<string>`+${sql.ref('type')}`, '=', param('type')),
  );
  return others
    .reduce((query, other) => query.unionAll(other), same!)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(1);
});

const WAITING_DEPENDENTS = prepare<{ type: string; commit: string }>((db) => {
  const [same, ...others] = sameCommit('jobs.commit_sha').map((condition, index) =>
    db
      .selectFrom('jobs')
      .innerJoin('workflow_dependencies', 'workflow_dependencies.workflow', 'jobs.type')
      .selectAll('jobs')
      .where('workflow_dependencies.depends_on', '=', param('type'))
      .where(condition)
      // As in LATEST_OF_TYPE: through jobs_status_created the rare branches would visit every
      // waiting job.
      .where(
        index === 0 ? sql.ref('jobs.status') : sql<string>`+${sql.ref('jobs.status')}`,
        '=',
        'waiting',
      ),
  );
  return others.reduce((query, other) => query.unionAll(other), same!);
});

const WAITING_TASKS = prepare<{ job_id: string; job_attempt: number }>((db) =>
  db
    .selectFrom('tasks')
    .selectAll()
    .where('job_id', '=', param('job_id'))
    .where('job_attempt', '=', param<number>('job_attempt'))
    .where('status', '=', 'waiting'),
);

/** Returns the job types that `type` needs, from workflow_dependencies. */
export function dependenciesOf(sqlite: BetterSqlite3.Database, type: string): string[] {
  return NEEDS.all<{ depends_on: string }>(sqlite, { type }).map((row) => row.depends_on);
}

export function shortCommit(commit: string | null): string {
  return commit === null ? '(no commit)' : commit.slice(0, 7);
}

/**
 * Decides whether a job of `type` for `commit` may start, from the latest job of each need.
 * `sqlite` is a write's connection (writeConnection) or a read's (Store.read).
 */
export function evaluateDependencies(
  sqlite: BetterSqlite3.Database,
  type: string,
  commit: string | null,
): DependencyState {
  if (commit === null) return { state: 'satisfied' };
  const needs = dependenciesOf(sqlite, type);
  const waitingFor: string[] = [];
  const missing: string[] = [];
  for (const need of needs) {
    const latest = LATEST_OF_TYPE.get<{ id: string; status: Status }>(sqlite, {
      commit,
      type: need,
    });
    if (latest === undefined || !isTerminal(latest.status)) {
      waitingFor.push(need);
      if (latest === undefined) missing.push(need);
    } else if (latest.status !== 'success') {
      return {
        state: 'failed',
        reason: `${need} of ${shortCommit(commit)} ended ${latest.status} (${latest.id})`,
        dependency: need,
      };
    }
  }
  if (waitingFor.length === 0) return { state: 'satisfied' };
  return {
    state: 'waiting',
    reason: `waiting for ${waitingFor.join(' and ')} of ${shortCommit(commit)}`,
    waitingFor,
    missing,
  };
}

/** Re-evaluates the waiting jobs of the same commit that depend on the job that just ended. */
export async function resolveDependents(
  trx: Transaction<Database>,
  finished: JobRow,
  changes: ChangeSet,
  audit: AuditContext,
): Promise<void> {
  if (finished.commit_sha === null) return;
  const sqlite = writeConnection(trx);
  const dependents = WAITING_DEPENDENTS.all<JobRow>(sqlite, {
    type: finished.type,
    commit: finished.commit_sha,
  });
  for (const job of dependents) {
    const decision = evaluateDependencies(sqlite, job.type, job.commit_sha);
    if (decision.state === 'waiting') {
      updateById(sqlite, 'jobs', job.id, { reason: decision.reason });
      continue;
    }
    const to = decision.state === 'satisfied' ? 'queued' : 'skipped';
    const reason = decision.state === 'failed' ? decision.reason : null;
    await endWaiting(trx, job, to, reason, changes);
    // A skipped job gets its job_finished row from refreshJobStatus.
    if (to === 'queued') {
      await appendAudit(trx, audit, {
        action: 'job_released',
        jobId: job.id,
        details: { from: 'waiting', to, after_job_id: finished.id, after_type: finished.type },
      });
    }
    await refreshJobStatus(trx, job.id, changes, audit);
  }
}

/** Moves the waiting tasks of a job's current attempt to `to`, storing `reason` on the job. */
export async function endWaiting(
  trx: Transaction<Database>,
  job: JobRow,
  to: 'queued' | 'skipped',
  reason: string | null,
  changes: ChangeSet,
): Promise<void> {
  const sqlite = writeConnection(trx);
  const tasks = WAITING_TASKS.all<TaskRow>(sqlite, { job_id: job.id, job_attempt: job.attempt });
  for (const task of tasks) await transitionTask(trx, task, to, changes, { reason });
  if (reason !== null) updateById(sqlite, 'jobs', job.id, { reason });
}
