/**
 * Self-healing: after `after` failing results in a row a check's action runs, at most once
 * per cooldown and at most max_per_hour times in any sliding hour. An action that would break
 * either limit is suppressed. Every action, its outcome and every suppression is in the audit
 * log with the reason; health_actions keeps them for the limits, across restarts.
 */
import type { Transaction } from 'kysely';
import type { AppContext } from '../app/context.js';
import { runRecoveryProcedure } from '../orchestrator/recovery.js';
import { triggerJob } from '../orchestrator/trigger.js';
import { isTerminal, type Status } from '../jobs/status.js';
import type { HealAction, HealthCheckDefinition } from '../pipeline/types.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import { parseJsonColumn } from '../store/json.js';
import type { Database } from '../store/schema.js';
import { getStateVariable } from '../store/state-variables.js';
import { isoAfter, nowIso } from '../util/time.js';
import { restartWithinLimit } from '../execution/engine-calls.js';
import { dockerClient } from './checks/docker.js';
import { describeError } from './types.js';

const HOUR_MS = 3_600_000;
/**
 * Age after which health_actions rows are deleted. The limits need only the last hour, and
 * the audit log keeps the permanent record.
 */
const ACTION_RETENTION_MS = 30 * 86_400_000;
/** Seconds Docker waits for a container to stop before it kills it, on restart. */
const RESTART_STOP_SECONDS = 10;
/** Maximum time an action may run before it is recorded as failed. */
export const ACTION_TIMEOUT_MS = 120_000;

export interface HealDecision {
  actionId: number;
  check: HealthCheckDefinition;
  heal: HealAction;
}

export function healTarget(heal: HealAction): string | null {
  if (heal.action === 'restart_container') return heal.container ?? null;
  if (heal.action === 'trigger_job') return heal.jobType ?? null;
  return heal.procedure ?? null;
}

/**
 * Decides, inside the transaction that records a failing result, whether the check's action
 * runs now. Records the start or the suppression with its audit row, and returns the action
 * to run after the commit, if any.
 */
export async function decideHeal(
  trx: Transaction<Database>,
  check: HealthCheckDefinition,
  failures: number,
  audit: AuditContext,
): Promise<HealDecision | undefined> {
  const heal = check.heal;
  if (heal === undefined || failures < heal.after) return undefined;
  const now = Date.now();
  const target = healTarget(heal);
  await trx
    .deleteFrom('health_actions')
    .where('component', '=', check.name)
    .where('created_at', '<', new Date(now - ACTION_RETENTION_MS).toISOString())
    .execute();
  // The last action is read without the hour window, because its job may still be queued or
  // running an hour later, and a cooldown may be longer than an hour.
  const lastAction = await trx
    .selectFrom('health_actions')
    .select(['created_at', 'finished_at', 'details'])
    .where('component', '=', check.name)
    .where('outcome', '!=', 'suppressed')
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
  const attempts = await trx
    .selectFrom('health_actions')
    .select(['created_at', 'finished_at'])
    .where('component', '=', check.name)
    .where('outcome', '!=', 'suppressed')
    .where('created_at', '>=', new Date(now - HOUR_MS).toISOString())
    .orderBy('created_at', 'desc')
    .execute();
  const lastJobs = lastAction === undefined ? [] : await findActionJobs(trx, lastAction.details);
  const suppression = findSuppression(heal, lastAction, attempts, lastJobs, now);
  const base = {
    component: check.name,
    action: heal.action,
    target,
    created_at: new Date(now).toISOString(),
  };
  if (suppression !== undefined) {
    // A check that keeps failing is held back on every run until next_allowed_at. The audit
    // log gets one row per hold, and health_actions (kept ACTION_RETENTION_MS) every run.
    const last = await trx
      .selectFrom('health_actions')
      .select(['outcome', 'details'])
      .where('component', '=', check.name)
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .limit(1)
      .executeTakeFirst();
    const hold = { next_allowed_at: suppression.nextAllowedAt, job_id: suppression.jobId };
    const lastHold = parseJsonColumn<Record<string, unknown>>(last?.details ?? '{}', {});
    // A failure count no higher than the last hold's means the check passed in between, so
    // this is a new outage and the audit log gets a row for it, even with the same hold.
    const repeated =
      last?.outcome === 'suppressed' &&
      (lastHold.next_allowed_at ?? null) === hold.next_allowed_at &&
      (lastHold.job_id ?? null) === hold.job_id &&
      typeof lastHold.failures === 'number' &&
      failures > lastHold.failures;
    await trx
      .insertInto('health_actions')
      .values({
        ...base,
        outcome: 'suppressed',
        reason: suppression.reason,
        details: JSON.stringify({ failures, ...hold }),
        finished_at: base.created_at,
      })
      .execute();
    if (repeated) return undefined;
    await appendAudit(trx, audit, {
      action: 'health_action_suppressed',
      jobId: suppression.jobId,
      details: {
        component: check.name,
        action: heal.action,
        target,
        failures,
        reason: suppression.reason,
        ...hold,
      },
    });
    return undefined;
  }
  const reason = `${failures} failing result(s) in a row, action after ${heal.after}`;
  const inserted = await trx
    .insertInto('health_actions')
    .values({ ...base, outcome: 'running', reason, details: '{}', finished_at: null })
    .returning('id')
    .executeTakeFirstOrThrow();
  await appendAudit(trx, audit, {
    action: 'health_action_started',
    details: { component: check.name, action: heal.action, target, failures, reason },
  });
  return { actionId: inserted.id, check, heal };
}

interface Attempt {
  created_at: string;
  finished_at: string | null;
}

/** A job that an action started, as findActionJobs reads it. */
interface ActionJob {
  id: string;
  status: Status;
  finished_at: string | null;
}

/**
 * Returns the jobs named in an action's details: the job of `trigger_job`, or the jobs of a
 * recovery procedure such as `run_pipeline`.
 */
async function findActionJobs(trx: Transaction<Database>, details: string): Promise<ActionJob[]> {
  const ids = actionJobIds(parseJsonColumn<Record<string, unknown>>(details, {}));
  if (ids.length === 0) return [];
  return trx
    .selectFrom('jobs')
    .select(['id', 'status', 'finished_at'])
    .where('id', 'in', ids)
    .execute();
}

/**
 * Returns when an attempt ended. The cooldown counts from the end of the last action, so a slow
 * restart still leaves the service the whole cooldown to come up. An action that started jobs
 * ends when the last of them finished. An action still running counts as ending now, unless it
 * is older than ACTION_TIMEOUT_MS: then its process died and it ended at that limit.
 */
function attemptEnd(attempt: Attempt, jobs: readonly ActionJob[], now: number): number {
  const ended =
    attempt.finished_at !== null
      ? Date.parse(attempt.finished_at)
      : Math.min(now, Date.parse(attempt.created_at) + ACTION_TIMEOUT_MS);
  const jobsEnded = jobs.map((job) => (job.finished_at === null ? 0 : Date.parse(job.finished_at)));
  return Math.max(ended, ...jobsEnded);
}

interface Suppression {
  reason: string;
  /** When the action may run again, or null while it waits for `jobId` to finish. */
  nextAllowedAt: string | null;
  jobId: string | null;
}

/**
 * Returns why the action may not run now, if it may not. `last` is the component's latest
 * action of any age, and `attempts` are its actions of the last hour, newest first.
 */
function findSuppression(
  heal: HealAction,
  last: Attempt | undefined,
  attempts: readonly Attempt[],
  lastJobs: readonly ActionJob[],
  now: number,
): Suppression | undefined {
  // A heal job that has not finished is still healing: a second one would run next to it.
  const active = lastJobs.find((job) => !isTerminal(job.status));
  if (active !== undefined) {
    return {
      reason: `the last action's job ${active.id} is ${active.status}; the check acts again once it has finished and the cooldown has passed`,
      nextAllowedAt: null,
      jobId: active.id,
    };
  }
  if (last !== undefined) {
    const ended = attemptEnd(last, lastJobs, now);
    if (now - ended < heal.cooldownMs) {
      const endedAt =
        last.finished_at === null
          ? 'is still running'
          : `ended at ${new Date(ended).toISOString()}`;
      return {
        reason: `cooldown: the last action ${endedAt} and the cooldown is ${heal.cooldownMs / 1000}s`,
        nextAllowedAt: isoAfter(heal.cooldownMs, ended),
        jobId: null,
      };
    }
  }
  if (attempts.length >= heal.maxPerHour) {
    // The oldest attempt of the hour leaves the window first.
    const oldest = attempts[attempts.length - 1]!;
    return {
      reason: `hourly cap: ${attempts.length} action(s) in the last hour, max_per_hour is ${heal.maxPerHour}`,
      nextAllowedAt: isoAfter(HOUR_MS, Date.parse(oldest.created_at)),
      jobId: null,
    };
  }
  return undefined;
}

/**
 * Runs a decided action and records its outcome with an audit row. Errors of the action and
 * of the write are caught and logged, so the caller gets an outcome and no exception.
 */
export async function performHeal(
  context: AppContext,
  decision: HealDecision,
  audit: AuditContext,
): Promise<{ outcome: 'succeeded' | 'failed'; details: Record<string, unknown> }> {
  const { check, heal, actionId } = decision;
  const logger = context.logger.child({ component: check.name, action: heal.action });
  let outcome: 'succeeded' | 'failed' = 'succeeded';
  let details: Record<string, unknown> = {};
  try {
    details = await withTimeout(runAction(context, decision, audit), ACTION_TIMEOUT_MS);
    logger.info({ ...details }, 'self-healing action succeeded');
  } catch (error) {
    outcome = 'failed';
    details = {
      ...(error instanceof ActionFailed ? error.details : {}),
      error: describeError(error),
    };
    logger.error({ err: error }, 'self-healing action failed');
  }
  const target = healTarget(heal);
  try {
    await context.store.write(async (trx) => {
      await trx
        .updateTable('health_actions')
        .set({ outcome, details: JSON.stringify(details), finished_at: nowIso() })
        .where('id', '=', actionId)
        .execute();
      await appendAudit(trx, audit, {
        action: outcome === 'succeeded' ? 'health_action_succeeded' : 'health_action_failed',
        jobId: actionJobId(details),
        details: { component: check.name, action: heal.action, target, ...details },
      });
    });
  } catch (error) {
    logger.error({ err: error, actionId }, 'cannot record the outcome of a self-healing action');
  }
  return { outcome, details };
}

/** Returns the ids of the jobs an action's details name: `job_id` and each of `jobs`. */
function actionJobIds(details: Record<string, unknown>): string[] {
  const jobs = Array.isArray(details.jobs) ? (details.jobs as unknown[]) : [];
  const named = [details.job_id, ...jobs].map((item) =>
    typeof item === 'object' && item !== null ? (item as { job_id?: unknown }).job_id : item,
  );
  return named.filter((id): id is string => typeof id === 'string');
}

/**
 * Returns the job that an action started, for its audit row: the triggered job, or the one job
 * of a recovery procedure. A procedure that started several jobs names them in its details only.
 */
function actionJobId(details: Record<string, unknown>): string | null {
  const ids = actionJobIds(details);
  return ids.length === 1 ? ids[0]! : null;
}

async function runAction(
  context: AppContext,
  { check, heal, actionId }: HealDecision,
  audit: AuditContext,
): Promise<Record<string, unknown>> {
  switch (heal.action) {
    case 'restart_container': {
      const socket = check.type === 'docker' ? check.settings.socket : undefined;
      const container = dockerClient(socket).getContainer(heal.container!);
      // Limited, so that a hung engine cannot block the health monitor.
      const timeoutMs = context.config.worker.dockerTimeoutMs;
      await restartWithinLimit(container, RESTART_STOP_SECONDS, timeoutMs);
      return { container: heal.container };
    }
    case 'trigger_job': {
      const commit = await resolveCommit(context, heal);
      const result = await triggerJob(
        context,
        {
          type: heal.jobType!,
          commit,
          branch: heal.branch ?? null,
          inputs: {},
          params: heal.params,
          githubRunId: null,
          githubRunAttempt: null,
          // One job per action, even if this write is retried after a crash.
          idempotencyKey: `health-action-${actionId}`,
          auditDetails: { health_check: check.name, health_action_id: actionId },
        },
        audit,
      );
      return { job_id: result.job.id, job_status: result.job.status, commit };
    }
    case 'recovery_procedure': {
      const commit = await resolveCommit(context, heal);
      const result = await runRecoveryProcedure(
        context,
        heal.procedure!,
        { commit: commit ?? undefined, branch: heal.branch, params: heal.params },
        audit,
      );
      const details = {
        procedure: result.procedure,
        message: result.message,
        jobs: result.jobs,
        container: result.container ?? null,
      };
      if (!result.ok) throw new ActionFailed(result.message, details);
      return details;
    }
  }
}

/** A failed action that still has details worth recording. */
class ActionFailed extends Error {
  constructor(
    message: string,
    readonly details: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'ActionFailed';
  }
}

async function resolveCommit(context: AppContext, heal: HealAction): Promise<string | null> {
  if (heal.commit !== undefined) return heal.commit;
  if (heal.commitFromState === undefined) return null;
  const value = await getStateVariable(context.store.db, heal.commitFromState);
  if (value === undefined || value === '') {
    throw new Error(`state variable ${heal.commitFromState} is not set, so there is no commit`);
  }
  return value;
}

function withTimeout<T>(work: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(
      () => reject(new Error(`the action did not finish within ${timeoutMs / 1000}s`)),
      timeoutMs,
    );
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
