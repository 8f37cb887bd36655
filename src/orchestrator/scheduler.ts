/**
 * Scheduled tasks (sweep, cleanup, backup, health checks): each runs every `intervalSeconds`
 * in whichever orchestrator process takes its lock row in `scheduler_locks` first.
 *
 * A run starts only when the lock is free or expired AND the last run anywhere started at
 * least one interval ago (less a small tolerance), so several orchestrator processes together
 * run each task once per interval. A holder refreshes its lock while it runs; when the
 * process dies, the lock expires after `lockSeconds` and another process takes over.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { Cron } from 'croner';
import type { AppContext } from '../app/context.js';
import type { AuditContext } from '../store/audit.js';
import { isoAfter, nowIso } from '../util/time.js';

export interface ScheduledTask {
  name: string;
  /** Seconds between runs; 0 disables the task's schedule (it can still run on demand). */
  intervalSeconds: number;
  /** Seconds the lock is valid without a refresh; default DEFAULT_LOCK_SECONDS. */
  lockSeconds?: number;
  /** Does the work and returns a summary for the log line of the run. */
  run(context: AppContext, audit: AuditContext): Promise<Record<string, unknown>>;
}

export type RunResult =
  | { ran: true; ok: true; durationMs: number; summary: Record<string, unknown> }
  | { ran: true; ok: false; durationMs: number; error: Error }
  | { ran: false; reason: string };

const DEFAULT_LOCK_SECONDS = 60;
/**
 * Computes how much earlier than one interval after the last start a timer may fire and
 * still count as due: a tenth of the interval, at most a second. Timers drift by milliseconds, while two
 * processes' timers fire whole seconds apart, so this never lets both run in one interval.
 */
function toleranceMs(intervalSeconds: number): number {
  return Math.min(1000, intervalSeconds * 100);
}

export function newHolderId(): string {
  return `${os.hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
}

export class Scheduler {
  readonly holder = newHolderId();
  readonly #crons: Cron[] = [];
  readonly #running = new Set<Promise<RunResult>>();
  readonly #audit: AuditContext;

  constructor(
    readonly context: AppContext,
    readonly tasks: ScheduledTask[],
  ) {
    this.#audit = { actor: 'orchestrator', source: os.hostname() };
  }

  start(): void {
    for (const task of this.tasks) {
      if (task.intervalSeconds <= 0) continue;
      // Every second, at least `interval` apart; the lock row decides across processes.
      const cron = new Cron(
        '* * * * * *',
        { interval: task.intervalSeconds, protect: true },
        async () => {
          try {
            await this.#track(this.runTask(task.name, { ifDue: true }));
          } catch (error) {
            this.context.logger.error(
              { err: error, task: task.name },
              'scheduled task not started',
            );
          }
        },
      );
      this.#crons.push(cron);
    }
    this.context.logger.info(
      {
        holder: this.holder,
        tasks: Object.fromEntries(this.tasks.map((task) => [task.name, task.intervalSeconds])),
      },
      'scheduler started',
    );
  }

  /** Stops the timers and waits for runs in progress. */
  async stop(): Promise<void> {
    for (const cron of this.#crons) cron.stop();
    await Promise.allSettled([...this.#running]);
  }

  /**
   * Runs the task now if its lock is free. With `ifDue`, only when no process started it
   * within the last interval (the scheduled path); without, at once (`slipway run-task`).
   */
  async runTask(name: string, options: { ifDue?: boolean } = {}): Promise<RunResult> {
    const task = this.tasks.find((candidate) => candidate.name === name);
    if (task === undefined) {
      const known = this.tasks.map((candidate) => candidate.name).join(', ');
      throw new Error(`unknown scheduled task "${name}"; known tasks: ${known}`);
    }
    const blocked = await this.#acquire(task, options.ifDue === true);
    if (blocked !== undefined) return { ran: false, reason: blocked };
    const log = this.context.logger.child({ task: task.name, holder: this.holder });
    const lockMs = (task.lockSeconds ?? DEFAULT_LOCK_SECONDS) * 1000;
    const refresh = setInterval(() => void this.#refresh(task, lockMs), lockMs / 3);
    const started = Date.now();
    try {
      const summary = await task.run(this.context, this.#audit);
      const durationMs = Date.now() - started;
      log.info({ durationMs, outcome: 'success', ...summary }, 'scheduled task finished');
      return { ran: true, ok: true, durationMs, summary };
    } catch (error) {
      const durationMs = Date.now() - started;
      log.error({ err: error, durationMs, outcome: 'error' }, 'scheduled task failed');
      return { ran: true, ok: false, durationMs, error: error as Error };
    } finally {
      clearInterval(refresh);
      await this.#release(task);
    }
  }

  #track(run: Promise<RunResult>): Promise<RunResult> {
    this.#running.add(run);
    void run.finally(() => this.#running.delete(run));
    return run;
  }

  /** Takes the lock; returns why not when another holder has it or the task is not due. */
  async #acquire(task: ScheduledTask, ifDue: boolean): Promise<string | undefined> {
    const lockSeconds = task.lockSeconds ?? DEFAULT_LOCK_SECONDS;
    return this.context.store.write(async (trx) => {
      const now = Date.now();
      const lock = await trx
        .selectFrom('scheduler_locks')
        .selectAll()
        .where('name', '=', task.name)
        .executeTakeFirst();
      if (lock !== undefined && Date.parse(lock.expires_at) > now && lock.holder !== this.holder) {
        return `running in ${lock.holder} until ${lock.expires_at} at the latest`;
      }
      if (ifDue && lock?.last_started_at != null) {
        const since = now - Date.parse(lock.last_started_at);
        if (since < task.intervalSeconds * 1000 - toleranceMs(task.intervalSeconds)) {
          return `last started ${Math.round(since / 1000)} s ago by ${lock.holder}`;
        }
      }
      const row = {
        holder: this.holder,
        expires_at: isoAfter(lockSeconds * 1000, now),
        last_started_at: new Date(now).toISOString(),
      };
      await trx
        .insertInto('scheduler_locks')
        .values({ name: task.name, ...row, last_finished_at: lock?.last_finished_at ?? null })
        .onConflict((oc) => oc.column('name').doUpdateSet(row))
        .execute();
      return undefined;
    });
  }

  async #refresh(task: ScheduledTask, lockMs: number): Promise<void> {
    try {
      await this.context.store.write((trx) =>
        trx
          .updateTable('scheduler_locks')
          .set({ expires_at: isoAfter(lockMs) })
          .where('name', '=', task.name)
          .where('holder', '=', this.holder)
          .execute(),
      );
    } catch (error) {
      this.context.logger.warn({ err: error, task: task.name }, 'scheduler lock refresh failed');
    }
  }

  async #release(task: ScheduledTask): Promise<void> {
    const now = nowIso();
    try {
      await this.context.store.write((trx) =>
        trx
          .updateTable('scheduler_locks')
          .set({ expires_at: now, last_finished_at: now })
          .where('name', '=', task.name)
          .where('holder', '=', this.holder)
          .execute(),
      );
    } catch (error) {
      this.context.logger.warn({ err: error, task: task.name }, 'scheduler lock release failed');
    }
  }
}
