import type { AppContext } from '../app/context.js';
import { ApiError, jobNotFound } from '../api/errors.js';
import { expandMatrix, MatrixError } from '../jobs/matrix.js';
import { isTerminal, type Status } from '../jobs/status.js';
import type { Pipeline } from '../pipeline/types.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import { parseJsonColumn } from '../store/json.js';
import { findJob } from '../store/jobs.js';
import type { JobRow } from '../store/schema.js';
import { writeConnection } from '../store/write-queue.js';
import { nowIso } from '../util/time.js';
import { ChangeSet } from './changes.js';
import { evaluateDependencies, resolveDependents } from './dependencies.js';
import { insertTasks } from './trigger.js';

/**
 * Starts a new attempt of a finished job: same id, attempt + 1, new tasks from the pipeline
 * the job was created with. The tasks and logs of earlier attempts are kept.
 */
export async function retryJob(
  context: AppContext,
  jobId: string,
  audit: AuditContext,
): Promise<JobRow> {
  const changes = new ChangeSet();
  const job = await context.store.write(async (trx) => {
    const sqlite = writeConnection(trx);
    const current = await findJob(trx, jobId);
    if (current === undefined) throw jobNotFound(jobId);
    if (!isTerminal(current.status)) {
      throw new ApiError(
        'job_active',
        `job ${jobId} is ${current.status}; only a finished job can be retried (cancel it first)`,
        'job_id',
        'finished',
      );
    }
    const pipeline = parseJsonColumn<Pipeline>(current.pipeline, {} as Pipeline);
    const inputs = parseJsonColumn<Record<string, unknown>>(current.params, {});
    const params = (inputs.params ?? {}) as Record<string, unknown>;
    const combinations = expandRetryMatrix(jobId, pipeline, { ...params, ...inputs });
    const dependencies = evaluateDependencies(sqlite, current.type, current.commit_sha);
    const status: Status = (
      { satisfied: 'queued', waiting: 'waiting', failed: 'skipped' } as const
    )[dependencies.state];
    const now = nowIso();
    const next: JobRow = {
      ...current,
      status,
      attempt: current.attempt + 1,
      reason: dependencies.state === 'satisfied' ? null : dependencies.reason,
      queued_at: status === 'queued' ? now : null,
      started_at: null,
      finished_at: status === 'skipped' ? now : null,
      updated_at: now,
    };
    await trx
      .updateTable('jobs')
      .set({
        status: next.status,
        attempt: next.attempt,
        reason: next.reason,
        queued_at: next.queued_at,
        started_at: null,
        finished_at: next.finished_at,
        updated_at: now,
      })
      .where('id', '=', jobId)
      .execute();
    insertTasks(sqlite, next, combinations, pipeline, changes, context.config.maxTaskAttempts);
    await appendAudit(trx, audit, {
      action: 'job_retried',
      jobId,
      details: { attempt: next.attempt, previous_status: current.status, status },
    });
    if (status === 'skipped') {
      // The new attempt ends as it starts, and it gets the job_finished row of every end, as
      // a job created skipped does. Jobs waiting on its type for this commit go on as well.
      await appendAudit(trx, audit, {
        action: 'job_finished',
        jobId,
        details: { status, attempt: next.attempt, reason: next.reason },
      });
      await resolveDependents(trx, next, changes, audit);
    }
    return next;
  });
  changes.emit(context.events);
  return job;
}

/**
 * Expands the stored matrix of the job again. A job that an earlier version stored without the
 * values of an axis that has no default has no matrix to reuse, so it gets 400.
 */
function expandRetryMatrix(
  jobId: string,
  pipeline: Pipeline,
  inputs: Record<string, unknown>,
): Array<Record<string, string>> {
  try {
    return expandMatrix(pipeline.matrix ?? [], inputs);
  } catch (error) {
    if (!(error instanceof MatrixError)) throw error;
    throw new ApiError(
      'validation_failed',
      `job ${jobId} cannot be retried: ${error.message}; trigger a new job instead`,
      error.field,
      error.rule,
    );
  }
}
