/**
 * A worker: registers with the API, long-polls for as many tasks as it has free capacity,
 * and runs each in a TaskRun. It never polls on an interval: a claim waits on the server
 * until a task is queued.
 *
 * Stopping (SIGTERM): the worker marks itself draining, so its open claim returns at once
 * and no new task arrives, then waits up to the grace period for running tasks to end.
 * Tasks still running after that are stopped and handed back to the API.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type { Logger } from '../log.js';
import type { MirrorSet } from '../execution/checkout.js';
import type { ExecutorSet } from '../execution/select.js';
import { AgentError, type AgentClient, type Registration } from './client.js';
import type { TaskSpec } from '../dispatch/task-spec.js';
import { Backoff, RepeatLimiter } from './backoff.js';
import { TaskRun, type TaskRunOutcome } from './task-run.js';
import { redactUrl } from '../util/url.js';

export const WORKER_VERSION = '0.1.0';
/** First and maximum delay before claiming again after an error or an early empty response. */
const CLAIM_BACKOFF_INITIAL_MS = 100;
const CLAIM_BACKOFF_MAX_MS = 5_000;
/** Milliseconds between two log lines about the same repeated claim problem. */
const REPEAT_LOG_INTERVAL_MS = 60_000;
/** Milliseconds a draining worker waits for its open claim to return before aborting it. */
const DRAIN_WAIT_MS = 2_000;
/** Seconds a claim waits while an executor is unavailable, before the worker checks it again. */
const UNAVAILABLE_CLAIM_WAIT_SECONDS = 5;
/** Milliseconds between claims while an operator has set this worker draining. */
const DRAINED_RECHECK_MS = 5_000;

export interface WorkerOptions {
  /** Worker id, unique among running workers; claims and leases name it. */
  id: string;
  /** Name shown in listings and logs; several workers may share it. */
  name: string;
  capacity: number;
  labels: string[];
  /** Seconds to wait for running tasks when stopping, before handing them back. */
  shutdownGraceSeconds: number;
  workspacesRoot: string;
}

export class Worker {
  readonly #client: AgentClient;
  readonly #executors: ExecutorSet;
  readonly #mirrors: MirrorSet;
  readonly #options: WorkerOptions;
  readonly #logger: Logger;
  readonly #runs = new Set<TaskRun>();
  /** Newer attempts of running tasks, started once the old attempt has ended. */
  readonly #successors = new Map<string, TaskSpec>();
  /** Aborts the claim request in flight, if any, when the worker stops. */
  #claimAbort = new AbortController();
  /** Set when the claim in flight was aborted to be sent again at once. */
  #claimRestart = false;
  #registration: Registration | undefined;
  #reportingLeftovers = false;
  #loop: Promise<void> | undefined;
  #stopping = false;
  #taskEnded: (() => void) | undefined;
  readonly #outcomes = new Map<TaskRunOutcome, number>();
  readonly #backoff = new Backoff(CLAIM_BACKOFF_INITIAL_MS, CLAIM_BACKOFF_MAX_MS);
  readonly #repeats = new RepeatLimiter(REPEAT_LOG_INTERVAL_MS);
  /** Executors that could not run tasks at the last claim. */
  readonly #unavailable = new Set<string>();
  readonly #unavailableRepeats = new RepeatLimiter(REPEAT_LOG_INTERVAL_MS);
  /** Aborted when the worker starts stopping, to end a retry delay early. */
  readonly #stopSignal = new AbortController();
  /** Random value that distinguishes this process's registrations from another process's. */
  readonly #session = randomBytes(8).toString('hex');

  constructor(
    client: AgentClient,
    executors: ExecutorSet,
    mirrors: MirrorSet,
    options: WorkerOptions,
    logger: Logger,
  ) {
    this.#client = client;
    this.#executors = executors;
    this.#mirrors = mirrors;
    this.#options = options;
    this.#logger = logger.child({ worker: options.id });
    for (const executor of executors.byName.values()) {
      // The open claim may list the executor, and a task that the failure re-queues would go
      // straight back to it, so the claim is sent again without it.
      executor.onUnavailable?.(() => {
        this.#claimRestart = true;
        this.#claimAbort.abort();
      });
    }
  }

  get running(): number {
    return this.#runs.size;
  }

  /**
   * Registers and starts claiming. A rejected registration (the id is in use, the token is
   * invalid) throws, so the process exits with the reason. An API that does not respond yet,
   * as when workers start before it, is retried in the background until it does.
   */
  async start(): Promise<void> {
    try {
      this.#registration = await this.#register();
    } catch (error) {
      if (!(error instanceof AgentError) || !error.retryable) throw error;
      this.#logRepeated(
        'register',
        { err: error },
        `could not register worker ${this.#options.id} yet (${error.message}); retrying until the API answers`,
      );
      this.#loop = this.#registerThenClaim();
      return;
    }
    this.#logRegistered(this.#registration);
    this.#reportLeftovers();
    this.#loop = this.#claimLoop();
  }

  async #registerThenClaim(): Promise<void> {
    while (!this.#stopping) {
      await this.#sleep(this.#backoff.next());
      if (this.#stopping) return;
      try {
        this.#registration = await this.#register();
      } catch (error) {
        this.#logRepeated(
          'register',
          { err: error },
          `registering worker ${this.#options.id} failed; retrying`,
        );
        continue;
      }
      this.#backoff.reset();
      this.#repeats.clear();
      this.#logRegistered(this.#registration);
      this.#reportLeftovers();
      await this.#claimLoop();
      return;
    }
  }

  /**
   * Sends the API each search of the executors that killed processes of ended workers, so
   * that the audit log records them. A report that fails is logged, and the executor's own
   * log line stays.
   */
  #reportLeftovers(): void {
    if (this.#reportingLeftovers) return;
    this.#reportingLeftovers = true;
    for (const executor of this.#executors.byName.values()) {
      executor.onLeftoversStopped?.((stopped) => {
        this.#client.reportLeftovers(this.#options.id, stopped).catch((error: unknown) => {
          this.#logger.warn(
            { err: error, pids: stopped.killed.map((step) => step.pid) },
            'could not report the killed processes of ended workers to the API',
          );
        });
      });
    }
  }

  #logRegistered(registration: Registration): void {
    this.#logger.info(
      {
        api: redactUrl(this.#client.baseUrl),
        capacity: this.#options.capacity,
        executors: this.#executors.names,
        lease_seconds: registration.lease_seconds,
      },
      `worker ${registration.worker_id} registered; waiting for tasks`,
    );
  }

  #register(): Promise<Registration> {
    return this.#client.register({
      worker_id: this.#options.id,
      name: this.#options.name,
      session: this.#session,
      hostname: os.hostname(),
      executors: this.#executors.names,
      capacity: this.#options.capacity,
      labels: this.#options.labels,
      version: WORKER_VERSION,
    });
  }

  async #claimLoop(): Promise<void> {
    while (!this.#stopping) {
      const free = this.#options.capacity - this.#runs.size;
      if (free <= 0) {
        await new Promise<void>((resolve) => (this.#taskEnded = resolve));
        continue;
      }
      const registration = this.#registration!;
      const executors = await this.#availableExecutors();
      // A short wait while an executor is unavailable, so that it is checked again soon.
      const waitSeconds =
        executors === undefined
          ? registration.max_claim_wait_seconds
          : Math.min(registration.max_claim_wait_seconds, UNAVAILABLE_CLAIM_WAIT_SECONDS);
      this.#claimAbort = new AbortController();
      this.#claimRestart = false;
      const started = Date.now();
      let delay: number;
      try {
        const tasks = await this.#client.claim(
          registration.worker_id,
          this.#session,
          free,
          waitSeconds,
          // Tasks leased to this process and not listed come back: a lost claim response.
          [...this.#runs].map((run) => run.taskId),
          this.#claimAbort.signal,
          executors,
        );
        for (const spec of tasks) this.#startRun(spec);
        const waitedMs = Date.now() - started;
        if (tasks.length > 0 || waitedMs >= waitSeconds * 500) {
          this.#backoff.reset();
          this.#repeats.clear();
          continue;
        }
        if (this.#stopping) break;
        // An empty response long before the requested wait means the API ended the claim early
        // (it is stopping, or released this worker), and claiming again at once would spin.
        delay = this.#backoff.next();
        this.#logRepeated(
          'early-empty',
          { waited_ms: waitedMs, requested_wait_seconds: registration.max_claim_wait_seconds },
          `claim returned no tasks after ${waitedMs} ms; claiming again in ${delay} ms`,
        );
      } catch (error) {
        if (this.#stopping) break;
        if (this.#claimRestart) {
          this.#claimRestart = false;
          continue;
        }
        delay = this.#backoff.next();
        if (
          error instanceof AgentError &&
          error.code === 'worker_not_online' &&
          error.details.status === 'draining'
        ) {
          // Besides its own stop, only an operator sets a worker draining (status endpoint).
          // Its tasks run on, and it claims again once the operator sets it online.
          delay = DRAINED_RECHECK_MS;
          this.#logRepeated(
            'drained',
            { recheck_ms: delay },
            `worker ${registration.worker_id} is set draining; it finishes its running tasks ` +
              'and takes no new ones until it is set online again',
          );
        } else if (
          error instanceof AgentError &&
          (error.status === 404 ||
            error.code === 'worker_not_online' ||
            error.code === 'worker_session_replaced')
        ) {
          await this.#registerAgain(error);
        } else {
          this.#logRepeated(
            `claim-${error instanceof AgentError ? error.status : 'error'}`,
            { err: error },
            `claim failed; retrying in ${delay} ms`,
          );
        }
      }
      await this.#sleep(delay);
    }
  }

  /**
   * Returns the executors that can run tasks now, or undefined when all of them can. An
   * executor that cannot (a Docker engine that stopped responding) gets no tasks until it can,
   * so that the tasks wait for it or for another worker instead of failing here one by one.
   */
  async #availableExecutors(): Promise<string[] | undefined> {
    const available: string[] = [];
    for (const name of this.#executors.names) {
      const problem = await this.#executors.byName.get(name)?.unavailable?.();
      if (problem === undefined) {
        available.push(name);
        if (this.#unavailable.delete(name)) {
          this.#logger.info(`the ${name} executor can run tasks again; claiming ${name} tasks`);
          // So that a new failure is logged at once, not after the repeat interval.
          this.#unavailableRepeats.delete(name);
        }
        continue;
      }
      this.#unavailable.add(name);
      // Its own limiter, because a claim that returns clears the claim loop's.
      const skipped = this.#unavailableRepeats.take(name);
      if (skipped !== undefined) {
        this.#logger.warn(
          { executor: name, problem, repeats_skipped: skipped },
          `the ${name} executor cannot run tasks now (${problem}); worker ${this.#options.id} ` +
            `claims no ${name} tasks until it can`,
        );
      }
    }
    return available.length === this.#executors.names.length ? undefined : available;
  }

  /**
   * Registers again after the API rejected a claim because this worker is not registered or
   * not online (another process with the same worker id marked it offline), or because another
   * process registered the worker id since. Registering fails while that process is alive.
   */
  async #registerAgain(error: AgentError): Promise<void> {
    this.#logRepeated(
      `reregister-${error.code ?? error.status}`,
      { code: error.code, reason: error.message },
      `the API rejected the claim (${error.code ?? error.status}); registering worker ${this.#options.id} again`,
    );
    try {
      this.#registration = await this.#register();
      this.#logger.info(`worker ${this.#options.id} registered again; waiting for tasks`);
    } catch (registerError) {
      this.#logRepeated(
        'reregister-failed',
        { err: registerError },
        `registering worker ${this.#options.id} again failed; retrying`,
      );
    }
  }

  /** Logs a warning, or skips it when the same kind was logged less than a minute ago. */
  #logRepeated(key: string, fields: Record<string, unknown>, message: string): void {
    const skipped = this.#repeats.take(key);
    if (skipped === undefined) return;
    this.#logger.warn({ ...fields, repeats_skipped: skipped }, message);
  }

  /** Waits `ms`, or less when the worker starts stopping. */
  #sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const signal = this.#stopSignal.signal;
      if (signal.aborted) {
        resolve();
        return;
      }
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      }
      signal.addEventListener('abort', done, { once: true });
    });
  }

  #startRun(spec: TaskSpec): void {
    const previous = [...this.#runs].find((run) => run.taskId === spec.task_id);
    if (previous !== undefined && spec.attempt <= previous.attempt) {
      this.#logger.warn({ task: spec.task_id }, 'claim returned a task this worker already runs');
      return;
    }
    if (previous !== undefined) {
      // The API gave the task out again, to this worker, so the attempt running here lost its
      // lease while the worker was paused or cut off. Its result would be rejected, so it
      // stops, and the new attempt starts once the old one has ended.
      this.#logger.warn(
        { task: spec.task_id, attempt: previous.attempt, new_attempt: spec.attempt },
        `claim returned attempt ${spec.attempt} of a task running here as attempt ` +
          `${previous.attempt}; stopping the old attempt`,
      );
      this.#successors.set(spec.task_id, spec);
      previous.stop('lease_lost');
      return;
    }
    const run = new TaskRun(spec, {
      client: this.#client,
      workerId: this.#registration!.worker_id,
      instanceId: this.#registration!.instance_id,
      executors: this.#executors,
      mirrors: this.#mirrors,
      workspacesRoot: this.#options.workspacesRoot,
      heartbeatIntervalMs: this.#registration!.heartbeat_interval_ms,
      logger: this.#logger,
    });
    this.#runs.add(run);
    void run.done
      .catch((error: unknown) => {
        this.#logger.error({ err: error, task: run.taskId }, 'task run crashed');
        return 'error' as const;
      })
      .then((outcome) => {
        this.#outcomes.set(outcome, (this.#outcomes.get(outcome) ?? 0) + 1);
        this.#runs.delete(run);
        // Started here, before the claim loop finds a free slot, so capacity holds.
        const successor = this.#successors.get(run.taskId);
        this.#successors.delete(run.taskId);
        // A stopping worker leaves it to the lease, which the orchestrator recovers.
        if (successor !== undefined && !this.#stopping) this.#startRun(successor);
        this.#taskEnded?.();
        this.#taskEnded = undefined;
      });
  }

  /** Drains, waits up to the grace period for running tasks, and hands back the rest. */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#stopSignal.abort();
    this.#logger.info(
      { running: this.#runs.size, grace_seconds: this.#options.shutdownGraceSeconds },
      `worker stopping: taking no new tasks; waiting up to ${this.#options.shutdownGraceSeconds} s for running tasks`,
    );
    // Draining makes the API end the waiting claim with a 409. Aborting the claim instead
    // could drop a response that already carries tasks, which would then stay running
    // until their lease expired, so the claim is aborted only when the API is unreachable.
    let drained = false;
    if (this.#registration !== undefined) {
      drained = await this.#client
        .setStatus(this.#registration.worker_id, 'draining')
        .then(() => true)
        .catch((error: unknown) => {
          this.#logger.warn({ err: error }, 'could not mark the worker draining');
          return false;
        });
    }
    if (!drained) this.#claimAbort.abort();
    this.#taskEnded?.();
    const loop = this.#loop?.catch(() => undefined);
    const loopEnded = await Promise.race([
      loop?.then(() => true),
      new Promise<false>((resolve) => setTimeout(() => resolve(false), DRAIN_WAIT_MS).unref()),
    ]);
    // A claim that reached the API just after it marked the worker draining still waits.
    if (loopEnded === false) this.#claimAbort.abort();
    await loop;
    // A claim that returned tasks while stopping may have started runs, so count them only now.
    const running = [...this.#runs];
    this.#logger.info({ running: running.length }, `waiting for ${running.length} running task(s)`);

    const before = new Map(this.#outcomes);
    const all = Promise.all(running.map((run) => run.done.catch(() => undefined)));
    const graceOver = new Promise<'grace'>((resolve) =>
      setTimeout(() => resolve('grace'), this.#options.shutdownGraceSeconds * 1000).unref(),
    );
    if ((await Promise.race([all, graceOver])) === 'grace') {
      for (const run of this.#runs) run.stop('shutdown');
      await all;
    }
    // Let the runs' bookkeeping (the .then above) settle.
    await new Promise((resolve) => setImmediate(resolve));
    const delta = (outcome: TaskRunOutcome) =>
      (this.#outcomes.get(outcome) ?? 0) - (before.get(outcome) ?? 0);
    const handedBack = delta('handed_back');
    const finished = running.length - handedBack;
    if (this.#registration !== undefined) {
      await this.#client
        .setStatus(this.#registration.worker_id, 'offline')
        .catch((error: unknown) =>
          this.#logger.warn({ err: error }, 'could not mark the worker offline'),
        );
    }
    this.#client.close();
    this.#logger.info(
      { finished, handed_back: handedBack },
      `worker stopped: ${finished} task(s) finished, ${handedBack} handed back`,
    );
  }
}
