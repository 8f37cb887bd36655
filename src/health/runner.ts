/**
 * Runs health checks. One run of a check takes its lease and runs its probe under its
 * timeout. One transaction then records the metric, applies the thresholds, updates state
 * variables and decides on self-healing. The action itself runs after that commit.
 *
 * Checks run concurrently and each is bounded by its own timeout, so a check that hangs
 * delays no other. A probe that ignores its abort signal is abandoned at the timeout.
 */
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import type { AppContext } from '../app/context.js';
import type { HealthCheckDefinition } from '../pipeline/types.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import { isoAfter, nowIso } from '../util/time.js';
import { probe } from './checks/index.js';
import { claimCheck, releaseCheck } from './components.js';
import { decideHeal, performHeal, type HealDecision } from './heal.js';
import { updateComponentVariable, updateOverallVariable } from './state.js';
import { applyResult } from './thresholds.js';
import { describeError, type HealthState, type ProbeResult } from './types.js';

export interface CheckOutcome {
  name: string;
  observed: HealthState;
  status: HealthState;
  reason: string | undefined;
  latencyMs: number;
  /** Outcome of a self-healing action started by this run, if any. */
  action?: { outcome: 'succeeded' | 'failed'; details: Record<string, unknown> } | undefined;
}

export interface RunOptions {
  /** Run every check now, due or not (a check another process is running is still skipped). */
  force?: boolean;
  /** Only these checks. */
  names?: string[];
  /** Stops the runs; a stopped run records nothing. */
  signal?: AbortSignal;
  /** Lease holder; defaults to a fresh id for this call. */
  holder?: string;
}

export function healthAudit(): AuditContext {
  return { actor: 'health-monitor', source: os.hostname() };
}

export function newHolderId(): string {
  return `${os.hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
}

export function checkIntervalMs(context: AppContext, check: HealthCheckDefinition): number {
  return check.intervalMs ?? context.config.intervals.healthCheckSeconds * 1000;
}

/**
 * Runs every due check once, concurrently, and resolves when all have finished (each within
 * its timeout, plus the time of a self-healing action it starts). Checks that are not due or
 * that another process is running are left out of the result.
 */
export async function runHealthChecks(
  context: AppContext,
  options: RunOptions = {},
): Promise<CheckOutcome[]> {
  const holder = options.holder ?? newHolderId();
  const checks = context.pipelines.healthChecks.filter(
    (check) => options.names === undefined || options.names.includes(check.name),
  );
  const outcomes = await Promise.all(
    checks.map((check) => runCheck(context, check, { ...options, holder })),
  );
  return outcomes.filter((outcome): outcome is CheckOutcome => outcome !== undefined);
}

/** Runs one check if it is due (or forced); errors are logged and return undefined. */
export async function runCheck(
  context: AppContext,
  check: HealthCheckDefinition,
  options: RunOptions & { holder: string },
): Promise<CheckOutcome | undefined> {
  const logger = context.logger.child({ component: check.name, check_type: check.type });
  try {
    const claim = await claimCheck(context.store, check.name, options.holder, {
      intervalMs: checkIntervalMs(context, check),
      leaseMs: check.timeoutMs,
      force: options.force ?? false,
    });
    if (claim === undefined) return undefined;

    const started = performance.now();
    const result = await probeWithTimeout(context, check, claim.memo, options.signal);
    const latencyMs = result.latencyMs ?? performance.now() - started;
    if (options.signal?.aborted === true) {
      await releaseCheck(context.store, check.name, options.holder);
      return undefined;
    }

    const streak = applyResult(claim.previous, result.status, check.thresholds);
    const decision = await recordResult(context, check, {
      result,
      latencyMs,
      streak,
      previousStatus: claim.previous.status,
      memo: claim.memo,
    });
    logResult(logger, check, result, streak.status, claim.previous.status, latencyMs);

    const outcome: CheckOutcome = {
      name: check.name,
      observed: result.status,
      status: streak.status,
      reason: result.reason,
      latencyMs,
    };
    if (decision !== undefined) {
      outcome.action = await performHeal(context, decision, healthAudit());
    }
    return outcome;
  } catch (error) {
    logger.error({ err: error }, 'health check could not run or record its result');
    return undefined;
  }
}

async function probeWithTimeout(
  context: AppContext,
  check: HealthCheckDefinition,
  memo: Record<string, unknown>,
  outer: AbortSignal | undefined,
): Promise<ProbeResult> {
  const controller = new AbortController();
  const onStop = () => controller.abort(new Error('the health monitor is stopping'));
  outer?.addEventListener('abort', onStop, { once: true });
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<ProbeResult>((resolve) => {
    timer = setTimeout(() => {
      controller.abort(new Error(`timed out after ${check.timeoutMs} ms`));
      resolve({
        status: 'unhealthy',
        reason: `${check.type} check timed out after ${check.timeoutMs} ms`,
        details: { timeout_ms: check.timeoutMs },
      });
    }, check.timeoutMs);
  });
  const probed = probe(check, { app: context, signal: controller.signal, memo }).catch(
    (error: unknown): ProbeResult => ({
      status: 'unhealthy',
      reason: describeError(error),
      details: {},
    }),
  );
  try {
    return await Promise.race([probed, timedOut]);
  } finally {
    clearTimeout(timer);
    outer?.removeEventListener('abort', onStop);
  }
}

interface Recorded {
  result: ProbeResult;
  latencyMs: number;
  streak: { status: HealthState; failures: number; successes: number };
  previousStatus: HealthState | null;
  memo: Record<string, unknown>;
}

/** Writes the metric, the component, state variables and the heal decision in one commit. */
async function recordResult(
  context: AppContext,
  check: HealthCheckDefinition,
  recorded: Recorded,
): Promise<HealDecision | undefined> {
  const { result, streak } = recorded;
  const audit = healthAudit();
  const configured = context.pipelines.healthChecks.map((each) => each.name);
  return context.store.write(async (trx) => {
    const now = nowIso();
    await trx
      .insertInto('health_metrics')
      .values({
        component: check.name,
        status: streak.status,
        latency_ms: Math.round(recorded.latencyMs * 100) / 100,
        details: JSON.stringify({
          observed: result.status,
          reason: result.reason ?? null,
          failures: streak.failures,
          successes: streak.successes,
          ...result.details,
        }),
        recorded_at: now,
      })
      .execute();
    const changed = recorded.previousStatus !== streak.status;
    await trx
      .updateTable('health_components')
      .set({
        status: streak.status,
        observed: result.status,
        failures: streak.failures,
        successes: streak.successes,
        reason: result.reason ?? null,
        last_checked_at: now,
        lease_holder: null,
        lease_expires_at: null,
        memo: JSON.stringify(recorded.memo),
        updated_at: now,
        ...(changed ? { changed_at: now } : {}),
        ...(result.recheckInMs !== undefined && result.recheckInMs < checkIntervalMs(context, check)
          ? { next_due_at: isoAfter(result.recheckInMs) }
          : {}),
      })
      .where('name', '=', check.name)
      .execute();

    await updateComponentVariable(trx, check.name, streak.status);
    const overall = await updateOverallVariable(trx, configured);
    if (changed) {
      await appendAudit(trx, audit, {
        action: 'health_status_changed',
        details: {
          component: check.name,
          from: recorded.previousStatus,
          to: streak.status,
          reason: result.reason ?? null,
          overall: overall.status,
          overall_from: overall.changed ? (overall.previous ?? null) : overall.status,
        },
      });
    }
    if (result.status !== 'unhealthy') return undefined;
    return decideHeal(trx, check, streak.failures, audit);
  });
}

function logResult(
  logger: AppContext['logger'],
  check: HealthCheckDefinition,
  result: ProbeResult,
  status: HealthState,
  previous: HealthState | null,
  latencyMs: number,
): void {
  const fields = {
    status,
    observed: result.status,
    reason: result.reason,
    latency_ms: Math.round(latencyMs),
  };
  if (status !== previous) {
    let level: 'error' | 'warn' | 'info' = 'info';
    if (status === 'unhealthy') level = 'error';
    else if (status === 'degraded') level = 'warn';
    logger[level]({ ...fields, from: previous }, `${check.name} is ${status}`);
  } else {
    logger.debug(fields, 'health check finished');
  }
}
