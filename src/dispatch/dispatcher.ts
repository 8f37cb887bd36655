/**
 * Hands queued tasks to long-polling workers. A claim that finds nothing waits here; it is
 * answered as soon as tasks become queued: in this process through the `tasks-queued` event,
 * and from other processes (an orchestrator re-queueing after a lease expiry) by watching
 * SQLite's `PRAGMA data_version`, which changes whenever another connection commits.
 *
 * Dispatch runs in rounds, one at a time: a round claims, in one write transaction, tasks for
 * every waiting worker in arrival order, so two workers never receive the same task.
 */
import type { AppContext } from '../app/context.js';
import { ChangeSet } from '../orchestrator/changes.js';
import type { AuditContext } from '../store/audit.js';
import { ClaimRejected, claimTasks, touchWorker, type ClaimRequest } from './claim.js';
import type { TaskSpec } from './task-spec.js';

/** Milliseconds between checks of `PRAGMA data_version` while a worker waits. */
export const CHANGE_WATCH_INTERVAL_MS = 20;

interface Waiter {
  request: ClaimRequest;
  audit: AuditContext;
  resolve(tasks: TaskSpec[]): void;
  reject(error: ClaimRejected): void;
  timer: NodeJS.Timeout;
  done: boolean;
}

export class Dispatcher {
  readonly #context: AppContext;
  readonly #logPathFor: (jobId: string, taskId: string, attempt: number) => string;
  #waiters: Waiter[] = [];
  #round: Promise<void> | undefined;
  #again = false;
  #watch: NodeJS.Timeout | undefined;
  #dataVersion = -1;
  #closed = false;
  readonly #onQueued = () => this.wake();

  constructor(
    context: AppContext,
    logPathFor: (jobId: string, taskId: string, attempt: number) => string,
  ) {
    this.#context = context;
    this.#logPathFor = logPathFor;
    context.events.on('tasks-queued', this.#onQueued);
  }

  get waiting(): number {
    return this.#waiters.length;
  }

  /**
   * Marks the worker as seen and claims at once when tasks are queued, else waits up to
   * `waitMs` for some. Aborting `signal` (the client went away) ends the wait with no tasks.
   * Rejects with `ClaimRejected` when the worker is not online, at the start or later while it
   * waits: every dispatch round checks each waiting worker again.
   */
  async claim(
    request: ClaimRequest,
    audit: AuditContext,
    waitMs: number,
    signal?: AbortSignal,
  ): Promise<TaskSpec[]> {
    const now = await this.#claimNow(request, audit);
    if (now.length > 0 || waitMs <= 0 || this.#closed || signal?.aborted === true) return now;
    return new Promise<TaskSpec[]>((resolve, reject) => {
      const waiter: Waiter = {
        request,
        audit,
        resolve,
        reject,
        done: false,
        timer: setTimeout(() => this.#settle(waiter, []), waitMs),
      };
      this.#waiters.push(waiter);
      signal?.addEventListener('abort', () => this.#settle(waiter, []), { once: true });
      this.#startWatch();
      // A task queued between the first claim and now would otherwise wait for the next event.
      this.wake();
    });
  }

  /**
   * Rejects the waiting claims of one worker that was set draining or offline in this
   * process, so the worker learns why at once instead of from an empty response.
   */
  releaseWorker(workerId: string, status: string): number {
    const mine = this.#waiters.filter((waiter) => waiter.request.workerId === workerId);
    for (const waiter of mine) this.#settle(waiter, new ClaimRejected(workerId, status));
    return mine.length;
  }

  /** Starts a dispatch round, or schedules one after the round in progress. */
  wake(): void {
    if (this.#closed || this.#waiters.length === 0) return;
    if (this.#round !== undefined) {
      this.#again = true;
      return;
    }
    this.#round = this.#runRound()
      .catch((error: unknown) => {
        this.#context.logger.error({ err: error }, 'dispatch round failed');
      })
      .finally(() => {
        this.#round = undefined;
        if (this.#again) {
          this.#again = false;
          this.wake();
        }
      });
  }

  close(): void {
    this.#closed = true;
    this.#context.events.off('tasks-queued', this.#onQueued);
    this.#stopWatch();
    for (const waiter of [...this.#waiters]) this.#settle(waiter, []);
  }

  async #claimNow(request: ClaimRequest, audit: AuditContext): Promise<TaskSpec[]> {
    const changes = new ChangeSet();
    const specs = await this.#context.store.write(async (trx) => {
      await touchWorker(trx, request.workerId);
      return claimTasks(trx, request, { audit, changes, logPathFor: this.#logPathFor });
    });
    changes.emit(this.#context.events);
    return specs;
  }

  async #runRound(): Promise<void> {
    const waiters = this.#waiters.filter((waiter) => !waiter.done);
    if (waiters.length === 0) return;
    const changes = new ChangeSet();
    const claimed = await this.#context.store.write(async (trx) => {
      const result = new Map<Waiter, TaskSpec[] | ClaimRejected>();
      for (const waiter of waiters) {
        if (waiter.done) continue;
        try {
          const specs = await claimTasks(trx, waiter.request, {
            audit: waiter.audit,
            changes,
            logPathFor: this.#logPathFor,
          });
          // A waiter that found nothing keeps waiting. Later ones may run other executors.
          if (specs.length > 0) result.set(waiter, specs);
        } catch (error) {
          // The rejected claim wrote nothing, so the round's other claims are kept.
          if (!(error instanceof ClaimRejected)) throw error;
          result.set(waiter, error);
        }
      }
      return result;
    });
    changes.emit(this.#context.events);
    for (const [waiter, outcome] of claimed) this.#settle(waiter, outcome);
  }

  #settle(waiter: Waiter, outcome: TaskSpec[] | ClaimRejected): void {
    const tasks = outcome instanceof ClaimRejected ? [] : outcome;
    if (waiter.done) {
      // A round can claim tasks for a waiter that timed out at the same moment. The worker's
      // next claim does not list them, so it gets them again (redeliverTasks in claim.ts).
      if (tasks.length > 0) {
        this.#context.logger.warn(
          { worker: waiter.request.workerId, tasks: tasks.map((task) => task.task_id) },
          'claimed tasks for a claim request that had already been answered',
        );
      }
      return;
    }
    waiter.done = true;
    clearTimeout(waiter.timer);
    this.#waiters = this.#waiters.filter((candidate) => candidate !== waiter);
    if (this.#waiters.length === 0) this.#stopWatch();
    if (outcome instanceof ClaimRejected) waiter.reject(outcome);
    else waiter.resolve(tasks);
  }

  #startWatch(): void {
    if (this.#watch !== undefined) return;
    this.#dataVersion = this.#readDataVersion();
    this.#watch = setInterval(() => {
      const version = this.#readDataVersion();
      if (version !== this.#dataVersion) {
        this.#dataVersion = version;
        this.wake();
      }
    }, CHANGE_WATCH_INTERVAL_MS);
    this.#watch.unref();
  }

  #stopWatch(): void {
    if (this.#watch === undefined) return;
    clearInterval(this.#watch);
    this.#watch = undefined;
  }

  #readDataVersion(): number {
    try {
      return Number(this.#context.store.sqlite.pragma('data_version', { simple: true }));
    } catch {
      return this.#dataVersion;
    }
  }
}
