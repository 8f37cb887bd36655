/**
 * `PATCH /api/job/{id}/status`: the original API's direct status update, kept for workers and
 * scripts written against it. The new status is applied to every active task of the job's
 * current attempt, so the job's derived status follows; illegal transitions are rejected.
 */
import type { Kysely, Transaction } from 'kysely';
import type { AppContext } from '../app/context.js';
import { ApiError, jobNotFound } from '../api/errors.js';
import {
  allowedTransitions,
  canTransition,
  exitCodeConflict,
  isTerminal,
  type Status,
} from '../jobs/status.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import { findJob, listCurrentTasks } from '../store/jobs.js';
import type { Database, JobRow, TaskRow } from '../store/schema.js';
import { writeConnection } from '../store/write-queue.js';
import { ChangeSet } from './changes.js';
import { evaluateDependencies } from './dependencies.js';
import { findGroupBlockers } from './diagnose.js';
import { refreshJobStatus, transitionTask } from './job-status.js';

export interface StatusUpdate {
  status: Status;
  reason?: string | undefined;
  exitCode?: number | undefined;
}

/**
 * Check that the caller may act for each worker holding a lease on a task of the job. It runs
 * in the update's transaction before anything changes, and throws to reject the update.
 */
export type LeaseHolderCheck = (trx: Kysely<Database>, workerIds: string[]) => Promise<void>;

export async function updateJobStatus(
  context: AppContext,
  jobId: string,
  update: StatusUpdate,
  audit: AuditContext,
  checkLeaseHolders?: LeaseHolderCheck,
): Promise<JobRow> {
  const conflict = exitCodeConflict(update.status, update.exitCode);
  if (conflict !== undefined) {
    throw new ApiError('validation_failed', conflict, 'exit_code', 'matches_status');
  }
  const changes = new ChangeSet();
  const job = await context.store.write(async (trx) => {
    const current = await findJob(trx, jobId);
    if (current === undefined) throw jobNotFound(jobId);
    if (!canTransition(current.status, update.status)) {
      const allowed = allowedTransitions(current.status);
      throw new ApiError(
        'invalid_transition',
        `job ${jobId} cannot change from ${current.status} to ${update.status}; ` +
          (allowed.length === 0
            ? `${current.status} is final (retry the job to run it again)`
            : `allowed: ${allowed.join(', ')}`),
        'status',
        'transition',
        { current_status: current.status, allowed },
      );
    }
    if (current.status === 'waiting' && update.status === 'queued') {
      checkDependenciesMet(trx, current);
    }
    if (update.status === 'running') checkGroupIdle(trx, current);
    const tasks = await listCurrentTasks(trx, current);
    if (update.status === 'queued') checkNoneHeld(jobId, tasks);
    if (checkLeaseHolders !== undefined) {
      const holders = tasks
        .filter((task) => task.status === 'running' && task.worker_id !== null)
        .map((task) => task.worker_id!);
      await checkLeaseHolders(trx, [...new Set(holders)]);
    }
    for (const task of tasks) {
      if (isTerminal(task.status)) continue;
      // A job running because some tasks run may hold queued tasks: start them first.
      if (
        update.status !== 'queued' &&
        task.status === 'queued' &&
        !canTransition('queued', update.status)
      ) {
        await transitionTask(trx, task, 'running', changes);
        task.status = 'running';
      }
      if (!canTransition(task.status, update.status)) continue;
      await transitionTask(trx, task, update.status, changes, {
        reason: update.reason ?? null,
        exitCode: update.exitCode ?? null,
        // The worker learns of the end at its next heartbeat and stops the step then.
        keepLease: task.status === 'running' && task.worker_id !== null,
      });
    }
    await appendAudit(trx, audit, {
      action: 'job_status_updated',
      jobId,
      details: { from: current.status, to: update.status, reason: update.reason ?? null },
    });
    const refreshed = await refreshJobStatus(trx, jobId, changes, audit);
    if (update.reason !== undefined && update.reason !== refreshed.reason) {
      await trx
        .updateTable('jobs')
        .set({ reason: update.reason })
        .where('id', '=', jobId)
        .execute();
      return { ...refreshed, reason: update.reason };
    }
    return refreshed;
  });
  changes.emit(context.events);
  return job;
}

/**
 * Throws 409 `invalid_transition` when a worker runs one of the tasks. Queued again, the task
 * could go to a second worker while the first still runs its step.
 */
function checkNoneHeld(jobId: string, tasks: readonly TaskRow[]): void {
  const heldTasks = tasks.filter((task) => task.status === 'running' && task.worker_id !== null);
  if (heldTasks.length === 0) return;
  throw new ApiError(
    'invalid_transition',
    `job ${jobId} cannot change from running to queued while worker ${heldTasks[0]!.worker_id} runs ` +
      `its task ${heldTasks[0]!.id}: the task could start on a second worker before the first stops ` +
      'it. Cancel the job and retry it instead.',
    'status',
    'transition',
    { current_status: 'running', held_task_ids: heldTasks.map((task) => task.id) },
  );
}

/**
 * Throws 409 `dependency_not_met` unless, for every job type that `job` depends on, the latest
 * job for its commit succeeded. The orchestrator releases waiting jobs by the same rule, and
 * queuing one earlier would run it before, or without, the jobs it needs.
 */
function checkDependenciesMet(trx: Transaction<Database>, job: JobRow): void {
  const decision = evaluateDependencies(writeConnection(trx), job.type, job.commit_sha);
  if (decision.state === 'satisfied') return;
  const unmet = decision.state === 'waiting' ? decision.waitingFor : [decision.dependency];
  const next =
    decision.state === 'waiting'
      ? 'The orchestrator queues it once they succeed.'
      : 'The orchestrator skips it instead.';
  throw new ApiError(
    'dependency_not_met',
    `job ${job.id} cannot change from waiting to queued because its dependencies are not met: ` +
      `${decision.reason}. ${next}`,
    'status',
    'dependencies',
    { current_status: job.status, unmet_dependencies: unmet },
  );
}

/**
 * Throws 409 `concurrency_group_busy` when another job of `job`'s concurrency group is running,
 * or when `job` is queued and an older job of its group is queued too. A claim skips such a job
 * for the same reasons, so the jobs of a group start one at a time, in the order they were
 * created. The check runs in the update's write transaction, after every claim and update
 * committed before it, so two jobs of one group cannot both start.
 */
function checkGroupIdle(trx: Transaction<Database>, job: JobRow): void {
  const blockers = findGroupBlockers(writeConnection(trx), job);
  if (blockers === undefined) return;
  const prefix = `job ${job.id} cannot change from ${job.status} to running because`;
  const details = { current_status: job.status, concurrency_group: job.concurrency_group };
  if (blockers.running_id !== null) {
    throw new ApiError(
      'concurrency_group_busy',
      `${prefix} job ${blockers.running_id} of its concurrency group ${job.concurrency_group} ` +
        `is running. The jobs of a group run one at a time: set it running after ` +
        `${blockers.running_id} ends.`,
      'status',
      'concurrency',
      { ...details, running_job_id: blockers.running_id },
    );
  }
  if (blockers.stopping_id !== null) {
    throw new ApiError(
      'concurrency_group_busy',
      `${prefix} a worker has not confirmed yet that a step of job ${blockers.stopping_id} of ` +
        `its concurrency group ${job.concurrency_group} stopped; the job ended while the step ` +
        'could still run. The jobs of a group run one at a time: set it running once the ' +
        'worker reports the step stopped (usually within seconds, longer while its Docker ' +
        'engine does not respond).',
      'status',
      'concurrency',
      { ...details, stopping_job_id: blockers.stopping_id },
    );
  }
  if (job.status === 'queued' && blockers.older_id !== null) {
    throw new ApiError(
      'concurrency_group_busy',
      `${prefix} the older job ${blockers.older_id} of its concurrency group ` +
        `${job.concurrency_group} is queued. The jobs of a group start in the order they were ` +
        `created: set it running after ${blockers.older_id} starts, or cancel ${blockers.older_id}.`,
      'status',
      'concurrency',
      { ...details, older_job_id: blockers.older_id },
    );
  }
}
