/**
 * Lease expiry. A worker holds a running task through a lease that its heartbeats extend.
 * When the lease expires because the worker was killed or its host is gone, the task is
 * recovered here:
 *
 *   - a task whose pipeline has no side effects returns to `queued` while its claim count
 *     (`tasks.attempt`), less the claims that a stopping worker handed back, is below
 *     `max_attempts`, and ends `error` after that;
 *   - a task whose pipeline has side effects (deploy, rollback, recovery by default; the
 *     pipeline's `side_effects` setting) ends `error` at once, because running it again
 *     without a person checking the target could deploy twice.
 *
 * A worker whose lease expired may only be stalled or cut off, with its step still running.
 * So a side-effects task keeps a lease after it ends `error` (see fenceUntil), and the rest of
 * its concurrency group waits, as for a task that a status update ended while its worker ran
 * the step (see dispatch/lease.ts). The wait ends when the worker returns and confirms that
 * the step stopped, when the orchestrator removed the attempt's container, or at the fence's
 * end.
 *
 * A worker that returns after its lease expired cannot overwrite the newer attempt: the
 * agent API compares the attempt number it sends with `tasks.attempt` (409 `lease_lost`).
 */
import type { Transaction } from 'kysely';
import type { AppContext } from '../app/context.js';
import { endStoppedLease } from '../dispatch/lease.js';
import { taskLogStore } from '../dispatch/services.js';
import { DEFAULT_TIMEOUT_MS } from '../pipeline/load.js';
import type { Pipeline } from '../pipeline/types.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import { parseJsonColumn } from '../store/json.js';
import { findRunningProcesses } from '../store/running-processes.js';
import { literal } from '../store/prepared.js';
import type { Database, TaskRow } from '../store/schema.js';
import { KILL_GRACE_MS } from '../execution/local.js';
import { isoAfter, nowIso } from '../util/time.js';
import { ChangeSet } from './changes.js';
import { refreshJobStatus, transitionTask } from './job-status.js';
import { silentAfterMs } from './silent-workers.js';

export interface LeaseRecovery {
  taskId: string;
  jobId: string;
  outcome: 'requeued' | 'error' | 'cancelled';
  attempt: number;
  maxAttempts: number;
  /** Claims that ended in a hand-back, which use up no attempt. */
  handBacks: number;
  /** The lost attempt's log file, and the line that ends it. */
  logPath: string | null;
  reason: string;
  /** When the concurrency group stops waiting for the lost worker's step (see fenceUntil). */
  fencedUntil: string | null;
}

/** Max tasks recovered per transaction, so one pass never holds the write lock for long. */
const BATCH = 100;

/**
 * Returns whether an API serves workers now, so that they can renew their leases: this
 * process's own, or that of another process registered on the same database.
 * NOTE: an API process on another host that was killed with SIGKILL counts as serving until
 * its registry entry is stale, up to 30 s later (see running-processes.ts).
 */
export function apiServing(context: AppContext): boolean {
  if (context.apiServing === true) return true;
  return findRunningProcesses(context.store.path).some(
    (entry) => entry.roles.includes('api') && entry.serving_since !== undefined,
  );
}

/** Contexts whose lease recovery is paused because no API serves, to log each change once. */
const paused = new WeakSet<AppContext>();

/**
 * Recovers every running task whose lease expired before now; returns what it did. While no
 * API serves, workers cannot renew their leases, so nothing is recovered: a task whose worker
 * was only cut off would run twice, or a deploy that finished would end `error`. The API that
 * starts next gives running tasks a full lease (see renewLeasesOnStart).
 */
export async function recoverExpiredLeases(
  context: AppContext,
  audit: AuditContext,
): Promise<LeaseRecovery[]> {
  if (!apiServing(context)) {
    if (!paused.has(context)) {
      paused.add(context);
      context.logger.warn(
        'no API process serves workers, so they cannot renew their leases; expired leases ' +
          'are recovered once an API serves again',
      );
    }
    return [];
  }
  if (paused.delete(context)) {
    context.logger.info('an API serves workers again; lease recovery resumes');
  }
  const recovered: LeaseRecovery[] = [];
  for (;;) {
    const changes = new ChangeSet();
    const batch = await context.store.write(async (trx) => {
      const expired = await trx
        .selectFrom('tasks')
        .selectAll()
        .where('status', '=', literal('running'))
        .where('lease_expires_at', '<', nowIso())
        .orderBy('lease_expires_at')
        .limit(BATCH)
        .execute();
      const done: LeaseRecovery[] = [];
      for (const task of expired) {
        done.push(await recoverTask(trx, task, changes, audit, context.config.worker.leaseSeconds));
      }
      return done;
    });
    for (const item of batch) {
      logRecovery(context, item);
      await closeAttemptLog(context, item);
    }
    // Only now wake the waiting claims, because a follower of the log that finds the next
    // attempt started reads the rest of this attempt's file, which must contain the note.
    changes.emit(context.events);
    recovered.push(...batch);
    if (batch.length < BATCH) return recovered;
  }
}

export interface StartRenewal {
  /** Running tasks that got a full lease. */
  renewed: number;
  /** Running tasks left as they were: an earlier start renewed them, and no worker reported since. */
  notRenewed: number;
}

/**
 * Gives every running task at least a full lease from now; called when an API process starts
 * to listen. While no API responded, workers could not renew their leases, and a task that
 * went on running or finished meanwhile would be queued again, or end `error` when its
 * pipeline has side effects, before its worker could report. A worker that is really gone
 * loses its task one lease later. Each renewed task gets a `task_lease_renewed` audit row.
 *
 * Tasks that ended while their step may still run, and keep a lease for it, are renewed too
 * while their worker may still confirm the stop.
 *
 * A task is renewed once per word from its worker: the renewal sets `lease_renewed_at`, and
 * only the worker's next heartbeat clears it. An API that restarts again before that leaves
 * the lease as it is, so restarts cannot keep the task of a lost worker from being recovered.
 */
export async function renewLeasesOnStart(
  context: AppContext,
  audit: AuditContext,
): Promise<StartRenewal> {
  const now = nowIso();
  const until = isoAfter(context.config.worker.leaseSeconds * 1000);
  return context.store.write(async (trx) => {
    const running = await trx
      .selectFrom('tasks')
      .select(['id', 'job_id', 'worker_id', 'attempt', 'lease_expires_at', 'lease_renewed_at'])
      .where('status', '=', literal('running'))
      // A task set running through PATCH has no worker and no lease: the sweep times it out.
      .where('worker_id', 'is not', null)
      .where((eb) =>
        eb.or([eb('lease_expires_at', 'is', null), eb('lease_expires_at', '<', until)]),
      )
      .execute();
    // Tasks that ended while their step may still run keep their lease, and their concurrency
    // group waits until it runs out (see dispatch/lease.ts). Their worker renews it while it
    // makes sure that the step stopped, so it is renewed here too. A worker that went on with
    // other work since (its last word is after the lease) or is offline has given up the task,
    // and so has a process whose worker id another process registered since (a new session).
    const keptLeases = await trx
      .selectFrom('tasks')
      .innerJoin('workers', 'workers.id', 'tasks.worker_id')
      .select([
        'tasks.id',
        'tasks.job_id',
        'tasks.worker_id',
        'tasks.attempt',
        'tasks.lease_expires_at',
        'tasks.lease_renewed_at',
      ])
      .where('tasks.status', '!=', literal('running'))
      .where('tasks.lease_expires_at', 'is not', null)
      .where('tasks.lease_expires_at', '<', until)
      .where('workers.status', '!=', literal('offline'))
      .whereRef('tasks.lease_expires_at', '>', 'workers.last_heartbeat_at')
      .where((eb) => eb('tasks.worker_session', 'is', eb.ref('workers.session')))
      .execute();
    let notRenewed = 0;
    for (const task of [...running, ...keptLeases]) {
      if (task.lease_renewed_at !== null) {
        notRenewed += 1;
        continue;
      }
      await trx
        .updateTable('tasks')
        .set({ lease_expires_at: until, lease_renewed_at: now, updated_at: now })
        .where('id', '=', task.id)
        .execute();
      await appendAudit(trx, audit, {
        action: 'task_lease_renewed',
        jobId: task.job_id,
        taskId: task.id,
        details: {
          worker_id: task.worker_id,
          attempt: task.attempt,
          previous_lease_expires_at: task.lease_expires_at,
          lease_expires_at: until,
          reason: 'the API started; its workers get a full lease to report again',
        },
      });
    }
    return { renewed: running.length + keptLeases.length - notRenewed, notRenewed };
  });
}

/** Decides what becomes of a task whose lease expired, and the reason stored with it. */
function decideRecovery(
  task: TaskRow,
  type: string,
  sideEffects: boolean,
): { outcome: LeaseRecovery['outcome']; reason: string } {
  const worker = task.worker_id ?? 'an unknown worker';
  // Hand-backs from stopping workers use up no attempt.
  const counted = task.attempt - task.hand_backs;
  const count = describeAttempt(task.attempt, task.hand_backs, task.max_attempts);
  if (task.cancel_requested_at !== null) {
    // The worker was asked to stop and vanished before it reported back. The reason keeps
    // both facts, because the log may have stopped with the worker, before the cancel.
    const reason =
      `${task.reason ?? 'cancelled'}; lease expired on ${worker} before it confirmed ` +
      'that the step stopped';
    return { outcome: 'cancelled', reason };
  }
  if (sideEffects) {
    const reason =
      `lease expired on ${worker} (${count}); ${type} has side effects, so it is not ` +
      're-run automatically: check the target, then retry the job';
    return { outcome: 'error', reason };
  }
  if (counted < task.max_attempts) {
    return { outcome: 'requeued', reason: `lease expired on ${worker} (${count}); queued again` };
  }
  return { outcome: 'error', reason: `lease expired on ${worker} (${count}); no attempts left` };
}

/** Describes the attempts a task used: `attempt 1 of 3, not counting 1 hand-back(s)`. */
function describeAttempt(attempt: number, handBacks: number, maxAttempts: number): string {
  const count = `attempt ${attempt - handBacks} of ${maxAttempts}`;
  return handBacks > 0 ? `${count}, not counting ${handBacks} hand-back(s)` : count;
}

/**
 * Extra milliseconds of a fence past the step's timeout and kill grace, for the worker's timer
 * to fire and for the kill to take effect.
 */
const FENCE_MARGIN_MS = 5_000;

/**
 * Returns until when the concurrency group of a side-effects task whose lease expired waits
 * for the step to stop, or undefined when it need not wait. A worker that is alive ends the
 * step at its timeout even when it cannot reach the API. A worker that stays silent is marked
 * offline after silentAfterMs, and the fence ends then too, so a host that is gone keeps the
 * group waiting for at most that long. A worker already marked offline is known to be gone (a serve
 * process that restarted kills the steps its predecessor left), so it gets no fence.
 *
 * NOTE: a worker process that is frozen (SIGSTOP, a paused VM) enforces no timeout, so its
 * step can outlast the fence. When it resumes, its heartbeat stops the step.
 */
async function fenceUntil(
  trx: Transaction<Database>,
  task: TaskRow,
  timeoutMs: number,
  leaseSeconds: number,
): Promise<string | undefined> {
  if (task.worker_id === null || task.started_at === null) return undefined;
  const worker = await trx
    .selectFrom('workers')
    .select(['status', 'last_heartbeat_at'])
    .where('id', '=', task.worker_id)
    .executeTakeFirst();
  if (worker === undefined || worker.status === 'offline') return undefined;
  // The worker starts its timeout when it takes up the claim, which can be up to a lease
  // after the claim was written: later, its heartbeat before the first step is rejected.
  const leaseMs = leaseSeconds * 1000;
  const bounds = [
    Date.parse(worker.last_heartbeat_at) + silentAfterMs(leaseSeconds),
    Date.parse(task.started_at) + leaseMs + timeoutMs + KILL_GRACE_MS + FENCE_MARGIN_MS,
  ];
  const until = Math.min(...bounds.filter(Number.isFinite));
  return until > Date.now() ? new Date(until).toISOString() : undefined;
}

async function recoverTask(
  trx: Transaction<Database>,
  task: TaskRow,
  changes: ChangeSet,
  audit: AuditContext,
  leaseSeconds: number,
): Promise<LeaseRecovery> {
  const job = await trx
    .selectFrom('jobs')
    .select(['pipeline', 'type', 'concurrency_group'])
    .where('id', '=', task.job_id)
    .executeTakeFirstOrThrow();
  const pipeline = parseJsonColumn<Partial<Pipeline>>(job.pipeline, {});
  const sideEffects = pipeline.sideEffects === true;
  const decided = decideRecovery(task, job.type, sideEffects);
  const { outcome } = decided;
  let { reason } = decided;
  const fencedUntil =
    outcome === 'error' && sideEffects && job.concurrency_group !== null
      ? ((await fenceUntil(trx, task, pipeline.timeoutMs ?? DEFAULT_TIMEOUT_MS, leaseSeconds)) ??
        null)
      : null;
  if (fencedUntil !== null) {
    reason +=
      `; concurrency group ${job.concurrency_group} waits until the worker confirms that ` +
      `the step stopped, or until ${fencedUntil}`;
  }

  const to = outcome === 'requeued' ? 'queued' : outcome;
  await transitionTask(trx, task, to, changes, { reason, keepLease: fencedUntil !== null });
  if (fencedUntil !== null) {
    await trx
      .updateTable('tasks')
      .set({ lease_expires_at: fencedUntil })
      .where('id', '=', task.id)
      .execute();
  }

  await appendAudit(trx, audit, {
    action: 'task_lease_expired',
    jobId: task.job_id,
    taskId: task.id,
    details: {
      worker_id: task.worker_id,
      attempt: task.attempt,
      max_attempts: task.max_attempts,
      lease_expired_at: task.lease_expires_at,
      side_effects: sideEffects,
      outcome,
      reason,
      group_waits_until: fencedUntil,
    },
  });
  await refreshJobStatus(trx, task.job_id, changes, audit);
  return {
    taskId: task.id,
    jobId: task.job_id,
    outcome,
    attempt: task.attempt,
    maxAttempts: task.max_attempts,
    handBacks: task.hand_backs,
    logPath: task.log_path,
    reason,
    fencedUntil,
  };
}

/**
 * Ends the fences of lost attempts whose containers the orchestrator removed, because their
 * steps stopped with them, so that the rest of each concurrency group may start. Each ended
 * fence gets a `task_step_stopped` audit row.
 */
export async function endFencesOfRemovedContainers(
  context: AppContext,
  audit: AuditContext,
  removed: ReadonlyArray<{ taskId: string; attempt: number }>,
): Promise<void> {
  if (removed.length === 0) return;
  const changes = new ChangeSet();
  await context.store.write(async (trx) => {
    for (const { taskId, attempt } of removed) {
      const fenced = await trx
        .selectFrom('tasks')
        .select(['id', 'job_id', 'worker_id', 'attempt', 'status'])
        .where('id', '=', taskId)
        .where('attempt', '=', attempt)
        .where('status', '!=', literal('running'))
        .where('lease_expires_at', 'is not', null)
        .executeTakeFirst();
      if (fenced === undefined) continue;
      await endStoppedLease(trx, fenced, 'container removed by the orchestrator', changes, audit);
    }
  });
  changes.emit(context.events);
}

/**
 * Ends the lost attempt's log with the reason, since its worker could not write its own last
 * line. Only the process that keeps the logs (the API's host) finds the file.
 */
async function closeAttemptLog(context: AppContext, item: LeaseRecovery): Promise<void> {
  const logs = taskLogStore(context);
  const file = item.logPath ?? logs.pathFor(item.jobId, item.taskId, item.attempt);
  try {
    await logs.note(file, `[slipway] ${item.reason}`);
  } catch (error) {
    context.logger.warn(
      { err: error, taskId: item.taskId, file },
      'could not end the log of a lost attempt',
    );
  }
  logs.release(file);
}

function logRecovery(context: AppContext, item: LeaseRecovery): void {
  const fields = { taskId: item.taskId, jobId: item.jobId, attempt: item.attempt };
  const count = describeAttempt(item.attempt, item.handBacks, item.maxAttempts);
  if (item.outcome === 'requeued') {
    context.logger.warn(fields, `lease expired, task queued again after ${count}`);
  } else {
    context.logger.error(fields, `lease expired, task ended ${item.outcome} after ${count}`);
  }
}
