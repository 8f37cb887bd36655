/**
 * The `health-monitor` role: starts each check when it is due, without waiting for the
 * others, so a check that hangs until its timeout delays nothing else. Schedules live in
 * health_components, so several processes running the role share the work and a restart
 * keeps each check's rhythm.
 */
import type { AppContext } from '../app/context.js';
import type { RunningRole } from '../app/roles.js';
import { isDue, readComponents, type ComponentRow } from './components.js';
import { healthAudit, newHolderId, runCheck } from './runner.js';
import { removeStaleComponentVariables } from './state.js';

/**
 * The monitor wakes when the next check is due, and at least this often, so that it notices
 * schedules another process changed.
 */
const MAX_TICK_MS = 1_000;
/** Shortest sleep between two looks, so a burst of finishing runs reads the schedules once. */
const MIN_TICK_MS = 20;

export class HealthMonitor {
  readonly #context: AppContext;
  readonly #holder = newHolderId();
  readonly #inFlight = new Map<string, Promise<unknown>>();
  readonly #stop = new AbortController();
  #timer: NodeJS.Timeout | undefined;
  #wakeAt = 0;
  /** The tick in progress, which stop() waits for: it may still start checks. */
  #currentTick: Promise<void> | undefined;

  constructor(context: AppContext) {
    this.#context = context;
  }

  start(): void {
    const names = this.#context.pipelines.healthChecks.map((check) => check.name);
    this.#context.logger.info({ checks: names }, 'health monitor started');
    this.#startTick();
  }

  /** Stops starting checks, aborts running ones and waits for them to give back their leases. */
  async stop(): Promise<void> {
    this.#stop.abort();
    clearTimeout(this.#timer);
    await this.#currentTick;
    await Promise.allSettled(this.#inFlight.values());
  }

  #startTick(): void {
    if (this.#currentTick !== undefined || this.#stop.signal.aborted) return;
    this.#currentTick = this.#tick().finally(() => (this.#currentTick = undefined));
  }

  async #tick(): Promise<void> {
    let wakeInMs = MAX_TICK_MS;
    try {
      const rows = await readComponents(this.#context.store.db);
      // A stop that came while the schedules were read must not see a check start after it.
      if (this.#stop.signal.aborted) return;
      const now = Date.now();
      for (const check of this.#context.pipelines.healthChecks) {
        if (this.#inFlight.has(check.name)) continue;
        const row = rows.get(check.name);
        if (!isDue(row, now)) {
          wakeInMs = Math.min(wakeInMs, nextDueInMs(row, now));
          continue;
        }
        const run = runCheck(this.#context, check, {
          holder: this.#holder,
          signal: this.#stop.signal,
        }).finally(() => {
          this.#inFlight.delete(check.name);
          this.#wakeSoon();
        });
        this.#inFlight.set(check.name, run);
      }
    } catch (error) {
      this.#context.logger.error({ err: error }, 'health monitor cannot read check schedules');
    } finally {
      this.#schedule(wakeInMs);
    }
  }

  /** After a run, look again soon: the check may already be due again (short intervals). */
  #wakeSoon(): void {
    this.#schedule(MIN_TICK_MS);
  }

  #schedule(delayMs: number): void {
    if (this.#stop.signal.aborted) return;
    const at = Date.now() + Math.max(MIN_TICK_MS, delayMs);
    if (this.#timer !== undefined && this.#wakeAt <= at) return;
    clearTimeout(this.#timer);
    this.#wakeAt = at;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#startTick();
    }, at - Date.now());
  }
}

/** Milliseconds until a check that is not due now becomes due, or its lease runs out. */
function nextDueInMs(row: ComponentRow | undefined, now: number): number {
  const times = [row?.next_due_at, row?.lease_expires_at]
    .filter((time): time is string => typeof time === 'string')
    .map((time) => Date.parse(time) - now)
    .filter((delay) => delay > 0);
  return times.length === 0 ? MAX_TICK_MS : Math.max(...times);
}

/** Deletes the state variables of removed checks, and logs rather than stops on failure. */
async function removeStaleVariables(context: AppContext): Promise<void> {
  const checks = context.pipelines.healthChecks.map((check) => check.name);
  try {
    const removed = await context.store.write((trx) =>
      removeStaleComponentVariables(trx, checks, healthAudit()),
    );
    if (removed.length > 0) {
      context.logger.info({ variables: removed }, 'removed state variables of removed checks');
    }
  } catch (error) {
    context.logger.error({ err: error }, 'failed to remove state variables of removed checks');
  }
}

export async function startHealthMonitor(context: AppContext): Promise<RunningRole> {
  // Not awaited, because a long write of another process must not delay the first checks.
  const removal = removeStaleVariables(context);
  const monitor = new HealthMonitor(context);
  monitor.start();
  return {
    name: 'health-monitor',
    stop: async () => {
      await monitor.stop();
      await removal;
    },
  };
}
