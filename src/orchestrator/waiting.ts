/**
 * Time-based and repair work on `waiting` jobs: a job whose dependency has not succeeded
 * within its dependency timeout ends `skipped`, and a waiting job whose dependencies were
 * decided without it being released (an event missed) is released or skipped.
 */
import type { Kysely, Transaction } from 'kysely';
import type { AppContext } from '../app/context.js';
import type { Pipeline } from '../pipeline/types.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import { parseJsonColumn } from '../store/json.js';
import type { Database, JobRow } from '../store/schema.js';
import { writeConnection } from '../store/write-queue.js';
import { ChangeSet } from './changes.js';
import { dependenciesOf, endWaiting, evaluateDependencies } from './dependencies.js';
import { refreshJobStatus } from './job-status.js';

export interface WaitingOutcome {
  jobId: string;
  to: 'queued' | 'skipped';
  reason: string | null;
}

/** When the job's current attempt started waiting: the creation time of its tasks. */
async function waitingSince(trx: Kysely<Database>, job: JobRow): Promise<number> {
  const task = await trx
    .selectFrom('tasks')
    .select('created_at')
    .where('job_id', '=', job.id)
    .where('job_attempt', '=', job.attempt)
    .orderBy('idx')
    .executeTakeFirst();
  return Date.parse(task?.created_at ?? job.created_at);
}

export function dependencyTimeoutMs(context: AppContext, job: JobRow): number {
  const pipeline = parseJsonColumn<Partial<Pipeline>>(job.pipeline, {});
  return pipeline.dependencyTimeoutMs ?? context.config.dependencyTimeoutSeconds * 1000;
}

/**
 * Re-evaluates every waiting job: releases those whose dependencies succeeded, skips those
 * whose dependency ended otherwise or did not succeed within the dependency timeout.
 * Returns the jobs it changed; each change has an audit row.
 */
export async function settleWaitingJobs(
  context: AppContext,
  audit: AuditContext,
  now: number = Date.now(),
): Promise<WaitingOutcome[]> {
  // Reading first keeps the frequent pass that finds nothing out of the write queue.
  const candidates: string[] = [];
  const waiting = await context.store.db
    .selectFrom('jobs')
    .selectAll()
    .where('status', '=', 'waiting')
    .execute();
  for (const job of waiting) {
    if (await isSettled(context.store.db, context, job, now)) candidates.push(job.id);
  }
  if (candidates.length === 0) return [];
  const changes = new ChangeSet();
  const outcomes = await context.store.write(async (trx) => {
    const jobs = await trx
      .selectFrom('jobs')
      .selectAll()
      .where('id', 'in', candidates)
      .where('status', '=', 'waiting')
      .execute();
    const done: WaitingOutcome[] = [];
    for (const job of jobs) {
      const outcome = await settleJob(trx, context, job, now, changes, audit);
      if (outcome !== undefined) done.push(outcome);
    }
    return done;
  });
  changes.emit(context.events);
  for (const outcome of outcomes) {
    context.logger.info(
      { jobId: outcome.jobId, reason: outcome.reason },
      `waiting job ${outcome.to}`,
    );
  }
  return outcomes;
}

async function isSettled(
  db: Kysely<Database>,
  context: AppContext,
  job: JobRow,
  now: number,
): Promise<boolean> {
  const decision = context.store.read((sqlite) =>
    evaluateDependencies(sqlite, job.type, job.commit_sha),
  );
  if (decision.state !== 'waiting') return true;
  return now - (await waitingSince(db, job)) >= dependencyTimeoutMs(context, job);
}

async function settleJob(
  trx: Transaction<Database>,
  context: AppContext,
  job: JobRow,
  now: number,
  changes: ChangeSet,
  audit: AuditContext,
): Promise<WaitingOutcome | undefined> {
  const decision = evaluateDependencies(writeConnection(trx), job.type, job.commit_sha);
  let to: WaitingOutcome['to'];
  let reason: string | null;
  let action: string;
  let problem: string | undefined;
  if (decision.state === 'waiting') {
    const timeoutMs = dependencyTimeoutMs(context, job);
    if (now - (await waitingSince(trx, job)) < timeoutMs) return undefined;
    to = 'skipped';
    reason = `${decision.reason.replace(/^waiting for/, 'gave up waiting for')} after ${formatMs(timeoutMs)} (dependency timeout)`;
    action = 'dependency_timed_out';
  } else {
    // The dependencies were decided, or removed from the pipeline file, but the job was not
    // released: an event was missed, or no job of its dependencies will end now.
    to = decision.state === 'satisfied' ? 'queued' : 'skipped';
    reason = decision.state === 'failed' ? decision.reason : null;
    action = 'state_repaired';
    problem = waitingProblem(trx, job, decision.state);
  }
  await endWaiting(trx, job, to, reason, changes);
  await appendAudit(trx, audit, {
    action,
    jobId: job.id,
    details: problem === undefined ? { to, reason } : { problem, from: 'waiting', to, reason },
  });
  await refreshJobStatus(trx, job.id, changes, audit);
  return { jobId: job.id, to, reason };
}

/** Describes why a waiting job that was not released can go on, for its state_repaired row. */
function waitingProblem(
  trx: Transaction<Database>,
  job: JobRow,
  state: 'satisfied' | 'failed',
): string {
  if (state === 'failed') return 'waiting job whose dependency failed';
  if (dependenciesOf(writeConnection(trx), job.type).length === 0) {
    return 'waiting job whose type no longer has dependencies in the pipeline file';
  }
  return 'waiting job whose dependencies succeeded';
}

function formatMs(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
