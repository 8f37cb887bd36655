/**
 * The orchestrator's fast loop: recovers expired leases every few seconds, far more often
 * than the sweep, because a lease is tens of seconds long. It also settles waiting jobs and
 * marks offline the workers that stopped without saying so (see silent-workers.ts). Several
 * orchestrator processes may run it at once: each change re-checks its condition inside its
 * own transaction, so a task is recovered once.
 */
import os from 'node:os';
import type { AppContext } from '../app/context.js';
import type { AuditContext } from '../store/audit.js';
import { endFencesOfRemovedContainers, recoverExpiredLeases } from './leases.js';
import { markSilentWorkersOffline } from './silent-workers.js';
import { removeOrphanContainers } from './orphans.js';
import { settleWaitingJobs } from './waiting.js';

const MIN_PERIOD_MS = 500;
const MAX_PERIOD_MS = 5_000;
/**
 * Waiting jobs are settled at most this often: events release them as their dependencies
 * end, so this pass only enforces dependency timeouts, which are minutes to hours long.
 */
const WAITING_PERIOD_MS = 15_000;
/** Workers are checked for silence at most this often, because one is marked only after minutes. */
const WORKERS_PERIOD_MS = 60_000;

/** Computes the pause between passes: a quarter of the lease, within MIN_PERIOD_MS and MAX_PERIOD_MS. */
export function watchdogPeriodMs(leaseSeconds: number): number {
  return Math.min(MAX_PERIOD_MS, Math.max(MIN_PERIOD_MS, (leaseSeconds * 1000) / 4));
}

export class Watchdog {
  readonly #audit: AuditContext = { actor: 'orchestrator', source: os.hostname() };
  #timer: NodeJS.Timeout | undefined;
  #pass: Promise<void> | undefined;
  #stopped = false;
  #waitingSettledAt = 0;
  #workersCheckedAt = 0;

  constructor(readonly context: AppContext) {}

  start(): void {
    this.#schedule(0);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#pass;
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#pass = this.runOnce().finally(() => {
        this.#pass = undefined;
        this.#schedule(watchdogPeriodMs(this.context.config.worker.leaseSeconds));
      });
    }, delayMs);
  }

  async runOnce(): Promise<void> {
    try {
      const recovered = await recoverExpiredLeases(this.context, this.#audit);
      if (recovered.length > 0) {
        // The lost worker's containers may still run, next to the attempt that replaces them.
        const lost = new Map(recovered.map((item) => [item.taskId, item.attempt]));
        const { attempts } = await removeOrphanContainers(
          this.context,
          this.#audit,
          Date.now(),
          lost,
        );
        await endFencesOfRemovedContainers(this.context, this.#audit, attempts);
      }
      if (Date.now() - this.#waitingSettledAt >= WAITING_PERIOD_MS) {
        this.#waitingSettledAt = Date.now();
        await settleWaitingJobs(this.context, this.#audit);
      }
      if (Date.now() - this.#workersCheckedAt >= WORKERS_PERIOD_MS) {
        this.#workersCheckedAt = Date.now();
        await markSilentWorkersOffline(this.context, this.#audit);
      }
    } catch (error) {
      this.context.logger.error({ err: error }, 'watchdog pass failed; retrying next period');
    }
  }
}
