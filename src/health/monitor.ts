/**
 * The `health-monitor` role: starts each check when it is due, without waiting for the
 * others, so a check that hangs until its timeout delays nothing else. Schedules live in
 * health_components, so several processes running the role share the work and a restart
 * keeps each check's rhythm.
 */
import type { AppContext } from '../app/context.js';
import type { RunningRole } from '../app/roles.js';
import { isDue, readComponents } from './components.js';
import { newHolderId, runCheck } from './runner.js';

/** How often the monitor looks for due checks; a check starts at most this late. */
const TICK_MS = 1_000;

export class HealthMonitor {
  readonly #context: AppContext;
  readonly #holder = newHolderId();
  readonly #inFlight = new Map<string, Promise<unknown>>();
  readonly #stop = new AbortController();
  #timer: NodeJS.Timeout | undefined;
  #ticking = false;

  constructor(context: AppContext) {
    this.#context = context;
  }

  start(): void {
    const names = this.#context.pipelines.healthChecks.map((check) => check.name);
    this.#context.logger.info({ checks: names }, 'health monitor started');
    void this.#tick();
  }

  /** Stops starting checks, aborts running ones and waits for them to give back their leases. */
  async stop(): Promise<void> {
    this.#stop.abort();
    clearTimeout(this.#timer);
    await Promise.allSettled(this.#inFlight.values());
  }

  async #tick(): Promise<void> {
    if (this.#ticking || this.#stop.signal.aborted) return;
    this.#ticking = true;
    try {
      const rows = await readComponents(this.#context.store.db);
      const now = Date.now();
      for (const check of this.#context.pipelines.healthChecks) {
        if (this.#inFlight.has(check.name) || !isDue(rows.get(check.name), now)) continue;
        const run = runCheck(this.#context, check, {
          holder: this.#holder,
          signal: this.#stop.signal,
        }).finally(() => this.#inFlight.delete(check.name));
        this.#inFlight.set(check.name, run);
      }
    } catch (error) {
      this.#context.logger.error({ err: error }, 'health monitor cannot read check schedules');
    } finally {
      this.#ticking = false;
      if (!this.#stop.signal.aborted) {
        this.#timer = setTimeout(() => void this.#tick(), TICK_MS);
      }
    }
  }
}

export async function startHealthMonitor(context: AppContext): Promise<RunningRole> {
  const monitor = new HealthMonitor(context);
  monitor.start();
  return {
    name: 'health-monitor',
    stop: () => monitor.stop(),
  };
}
