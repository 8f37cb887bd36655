/**
 * Dependency gating: a job whose type depends on other types for the same commit waits
 * until a job of each of them succeeded, and is skipped when one ends otherwise.
 */
import type { Kysely, Transaction } from 'kysely';
import { isTerminal } from '../jobs/status.js';
import type { AuditContext } from '../store/audit.js';
import type { Database, JobRow } from '../store/schema.js';
import type { ChangeSet } from './changes.js';
import { refreshJobStatus, transitionTask } from './job-status.js';

export type DependencyState =
  | { state: 'satisfied' }
  /** `missing` lists the needed types that have no job at all for the commit yet. */
  | { state: 'waiting'; reason: string; missing: string[] }
  | { state: 'failed'; reason: string };

export async function dependenciesOf(db: Kysely<Database>, type: string): Promise<string[]> {
  const rows = await db
    .selectFrom('workflow_dependencies')
    .select('depends_on')
    .where('workflow', '=', type)
    .orderBy('depends_on')
    .execute();
  return rows.map((row) => row.depends_on);
}

export function shortCommit(commit: string | null): string {
  return commit === null ? '(no commit)' : commit.slice(0, 7);
}

/** Decides whether a job of `type` for `commit` may start, from the latest job of each need. */
export async function evaluateDependencies(
  db: Kysely<Database>,
  type: string,
  commit: string | null,
): Promise<DependencyState> {
  if (commit === null) return { state: 'satisfied' };
  const needs = await dependenciesOf(db, type);
  const waitingFor: string[] = [];
  const missing: string[] = [];
  for (const need of needs) {
    const latest = await db
      .selectFrom('jobs')
      .select(['id', 'status'])
      .where('commit_sha', '=', commit)
      .where('type', '=', need)
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .executeTakeFirst();
    if (latest === undefined || !isTerminal(latest.status)) {
      waitingFor.push(need);
      if (latest === undefined) missing.push(need);
    } else if (latest.status !== 'success') {
      return {
        state: 'failed',
        reason: `${need} of ${shortCommit(commit)} ended ${latest.status} (${latest.id})`,
      };
    }
  }
  if (waitingFor.length === 0) return { state: 'satisfied' };
  return {
    state: 'waiting',
    reason: `waiting for ${waitingFor.join(' and ')} of ${shortCommit(commit)}`,
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
  const dependents = await trx
    .selectFrom('jobs')
    .innerJoin('workflow_dependencies', 'workflow_dependencies.workflow', 'jobs.type')
    .selectAll('jobs')
    .where('workflow_dependencies.depends_on', '=', finished.type)
    .where('jobs.commit_sha', '=', finished.commit_sha)
    .where('jobs.status', '=', 'waiting')
    .execute();
  for (const job of dependents) {
    const decision = await evaluateDependencies(trx, job.type, job.commit_sha);
    if (decision.state === 'waiting') {
      await trx
        .updateTable('jobs')
        .set({ reason: decision.reason })
        .where('id', '=', job.id)
        .execute();
      continue;
    }
    const to = decision.state === 'satisfied' ? 'queued' : 'skipped';
    const reason = decision.state === 'failed' ? decision.reason : null;
    await endWaiting(trx, job, to, reason, changes);
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
  const tasks = await trx
    .selectFrom('tasks')
    .selectAll()
    .where('job_id', '=', job.id)
    .where('job_attempt', '=', job.attempt)
    .where('status', '=', 'waiting')
    .execute();
  for (const task of tasks) await transitionTask(trx, task, to, changes, { reason });
  if (reason !== null) {
    await trx.updateTable('jobs').set({ reason }).where('id', '=', job.id).execute();
  }
}
