/**
 * One claimed task on a worker, from checkout to finish. Heartbeats keep the lease and bring
 * cancel requests, and a timer enforces the pipeline's timeout. Output streams to the API.
 * The container or processes and the workspace are removed whatever the outcome. Only while
 * the steps may still run in a container that the worker could not remove, the workspace stays.
 */
import { mkdir } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  LABEL_ATTEMPT,
  LABEL_INSTANCE,
  LABEL_JOB,
  LABEL_MANAGED,
  LABEL_TASK,
} from '../jobs/labels.js';
import type { Logger } from '../log.js';
import type { TaskSpec } from '../dispatch/task-spec.js';
import {
  checkout,
  createWorkspace,
  removeWorkspace,
  type MirrorSet,
  type Workspace,
} from '../execution/checkout.js';
import { ExecutionError, type ExecutionSpec, type Executor } from '../execution/executor.js';
import { maskedStrings, resolveSecrets } from '../execution/secrets.js';
import { escapeControlCharacters } from '../util/printable.js';
import type { ExecutorSet } from '../execution/select.js';
import { FAILURE_LOG_INTERVAL_MS, RepeatLimiter } from './backoff.js';
import { AgentError, type AgentClient, type FinishBody } from './client.js';
import { TaskOutput } from './task-output.js';

/** Reason a run was stopped before its steps ended. */
export type StopReason = 'cancelled' | 'timed_out' | 'lease_lost' | 'shutdown';

export interface TaskRunDeps {
  client: AgentClient;
  workerId: string;
  instanceId: string;
  executors: ExecutorSet;
  mirrors: MirrorSet;
  workspacesRoot: string;
  heartbeatIntervalMs: number;
  logger: Logger;
}

export type TaskRunOutcome = FinishBody['status'] | 'handed_back' | 'lease_lost';

const FINISH_RETRY_DELAYS_MS = [200, 500, 1_000, 2_000, 5_000];
/** Pauses between attempts to remove the container of steps that may still run. */
const REMOVE_RETRY_DELAYS_MS = [1_000, 2_000, 5_000, 10_000, 30_000];
/**
 * Milliseconds that a task which ended `error` before its container was removed stays running
 * while the worker retries the removal, when the pipeline's `retries` would run it again. An
 * engine that restarts under a step fails the first removal, and the API retries only a task
 * whose steps stopped.
 */
const REMOVAL_GRACE_MS = 30_000;

export class TaskRun {
  readonly #spec: TaskSpec;
  readonly #deps: TaskRunDeps;
  readonly #logger: Logger;
  readonly #controller = new AbortController();
  #shuttingDown = false;
  #output: TaskOutput | undefined;
  /** The final status that a status update gave the task while its step ran. */
  #endedStatus: string | undefined;
  readonly #failures = new RepeatLimiter(FAILURE_LOG_INTERVAL_MS);
  /** Set when the API rejected a heartbeat: the lease is gone. */
  #leaseRejected = false;
  /** Aborted when the worker stops or loses the lease, which ends #removeLeftSteps. */
  readonly #removalEnd = new AbortController();
  readonly done: Promise<TaskRunOutcome>;

  constructor(spec: TaskSpec, deps: TaskRunDeps) {
    this.#spec = spec;
    this.#deps = deps;
    this.#logger = deps.logger.child({
      job: spec.job.id,
      task: spec.task_id,
      attempt: spec.attempt,
    });
    this.done = this.#run();
  }

  get taskId(): string {
    return this.#spec.task_id;
  }

  get attempt(): number {
    return this.#spec.attempt;
  }

  /** Stops the run; the reason decides how the task ends. The first reason wins. */
  stop(reason: StopReason): void {
    // Set even when the task was already stopped for another reason and only its report is
    // left, so that a report the API keeps failing does not hold the worker's shutdown.
    if (reason === 'shutdown') {
      this.#shuttingDown = true;
      this.#output?.abandon();
      this.#removalEnd.abort();
    }
    if (!this.#controller.signal.aborted) this.#controller.abort(reason);
  }

  async #run(): Promise<TaskRunOutcome> {
    const spec = this.#spec;
    const started = performance.now();
    const heartbeat = this.#startHeartbeat();
    const timeout = setTimeout(() => this.stop('timed_out'), spec.timeout_ms);
    let secrets: Record<string, string> = {};
    let secretProblem: Error | undefined;
    try {
      secrets = await resolveSecrets(spec.secrets);
    } catch (error) {
      secretProblem = error as Error;
    }
    const output = new TaskOutput({
      client: this.#deps.client,
      taskId: spec.task_id,
      workerId: this.#deps.workerId,
      attempt: spec.attempt,
      secrets: maskedStrings(Object.values(secrets)),
      logger: this.#logger,
    });
    this.#output = output;
    if (this.#shuttingDown) output.abandon();
    let workspace: Workspace | undefined;
    let executionSpec: ExecutionSpec | undefined;
    let executor: Executor | undefined;
    let result: Omit<FinishBody, 'worker_id' | 'attempt' | 'duration_ms'>;
    let stepsStarted = false;
    // Whether the executor left the steps possibly running (see ExecutionError.stepMayRun)
    // and whether its cleanup, which would have removed them, succeeded.
    let stepMayRun = false;
    let cleanedUp = false;
    try {
      executor = this.#executorFor(spec);
      output.note(
        `[slipway] ${spec.name} (task ${spec.task_id}, attempt ${spec.attempt}) on worker ${this.#deps.workerId}, executor ${executor.name}${executor.name === 'docker' ? `, image ${spec.image ?? '(none)'}` : ''}`,
      );
      // After the header, so that the log of a task without its secret shows where it ran.
      if (secretProblem !== undefined) throw secretProblem;
      // An attempt after a lost lease: the earlier one may still run here, in this workspace.
      if (spec.attempt > 1) await executor.stopLeftovers?.();
      workspace = await createWorkspace(this.#deps.workspacesRoot, spec.task_id);
      await this.#checkout(workspace, output);
      executionSpec = this.#executionSpec(workspace, secrets);
      if (spec.side_effects && !(await this.#confirmLease())) {
        throw new ExecutionError('the task was stopped before its first step');
      }
      stepsStarted = true;
      const execution = await executor.run(executionSpec, output, this.#controller.signal);
      result = this.#resultOf(execution.exitCode, execution.failedStep, execution.detail);
    } catch (error) {
      result = this.#resultOfError(error);
      stepMayRun = error instanceof ExecutionError && error.stepMayRun;
    } finally {
      clearTimeout(timeout);
      cleanedUp = await this.#cleanUp(executor, executionSpec);
      // Steps that may still run read and write the workspace, so it stays until their
      // container is gone (see #removeLeftSteps).
      if (!stepMayRun || cleanedUp) await this.#removeWorkspace(workspace);
    }
    if (
      stepMayRun &&
      !cleanedUp &&
      result.status === 'error' &&
      spec.retry_on_error !== false &&
      !this.#controller.signal.aborted &&
      !this.#leaseRejected
    ) {
      output.note(
        "[slipway] the step's container could not be removed; the worker tries again for up " +
          `to ${REMOVAL_GRACE_MS / 1000} s, so that the task's retries can run it again`,
      );
      cleanedUp = await this.#removeWithin(executor!, executionSpec!, REMOVAL_GRACE_MS);
      if (cleanedUp) await this.#removeWorkspace(workspace);
    }
    const stopReason = this.#controller.signal.reason as StopReason | undefined;
    const stepStopped = !stepMayRun || cleanedUp;
    // A task whose steps may still run keeps its lease, so the heartbeat goes on until the
    // worker removed them (see #removeLeftSteps).
    const keepLease =
      !stepStopped &&
      stopReason !== 'lease_lost' &&
      stopReason !== 'shutdown' &&
      !this.#leaseRejected;
    if (!keepLease) heartbeat.stop();
    // A hand-back ends the lease and may queue the task again, so a stopping worker hands back
    // only a task whose steps stopped.
    const handBack = stopReason === 'shutdown' && stepStopped;
    const durationMs = performance.now() - started;
    if (stopReason === 'lease_lost') {
      await output.close();
      await this.#reportLostLease(stepsStarted, durationMs);
      return 'lease_lost';
    }
    const seconds = (durationMs / 1000).toFixed(1);
    if (handBack) {
      output.note(
        this.#spec.side_effects
          ? '[slipway] the worker is stopping; the task has side effects, so it ends error and is not run again'
          : '[slipway] the worker is stopping; the task is handed back and queued again',
      );
    } else if (stopReason === 'shutdown') {
      output.note(
        "[slipway] the worker is stopping, and the step's container could not be removed, so " +
          'its steps may still run; the task ends error, is not run again, and keeps its ' +
          'lease until the lease runs out',
      );
    } else if (stopReason === 'cancelled' && this.#endedStatus !== undefined) {
      const stop = keepLease
        ? `the worker tried to stop the step after ${seconds} s, but could not make sure that it stopped`
        : `the step was stopped after ${seconds} s`;
      output.note(`[slipway] a status update ended the task ${this.#endedStatus}; ${stop}`);
    } else {
      output.note(
        `[slipway] task ended ${result.status} after ${seconds} s${result.reason === null ? '' : `: ${escapeControlCharacters(result.reason)}`}`,
      );
    }
    if (keepLease) {
      output.note(
        "[slipway] the step's container could not be removed, so its steps may still run; " +
          'the task keeps its lease, and its concurrency group waits, until worker ' +
          `${this.#deps.workerId} removes it`,
      );
    }
    await output.close();
    if (handBack) return this.#handBack();
    if (stopReason === 'shutdown') {
      // No heartbeat renews the kept lease, so the concurrency group waits until it runs out.
      return this.#finish({
        ...result,
        reason: `worker ${this.#deps.workerId} stopped before the task ended; ${result.reason ?? ''}`,
        duration_ms: durationMs,
        step_stopped: false,
      });
    }
    if (!keepLease) return this.#finish({ ...result, duration_ms: durationMs });
    try {
      const body = { ...result, duration_ms: durationMs };
      const outcome = await this.#finish({ ...body, step_stopped: false });
      if (outcome !== 'lease_lost') {
        await this.#removeLeftSteps(executor!, executionSpec!, workspace, body, heartbeat);
      }
      return outcome;
    } finally {
      heartbeat.stop();
    }
  }

  /**
   * Retries the executor's cleanup of a task whose steps may still run, until it succeeds, and
   * then reports that they stopped, which ends the lease. Gives up when the worker stops or
   * loses the lease: the lease then runs out, and with it the wait of the concurrency group.
   * The workspace is removed only with the container, so a worker that gives up leaves it.
   */
  async #removeLeftSteps(
    executor: Executor,
    spec: ExecutionSpec,
    workspace: Workspace | undefined,
    result: Omit<FinishBody, 'worker_id' | 'attempt'>,
    heartbeat: { stop(): void },
  ): Promise<void> {
    for (let retry = 0; ; retry += 1) {
      const delay = REMOVE_RETRY_DELAYS_MS[Math.min(retry, REMOVE_RETRY_DELAYS_MS.length - 1)]!;
      const signal = this.#removalEnd.signal;
      const paused = await sleep(delay, 'retry' as const, { signal }).catch(() => 'ended' as const);
      const outcome = paused === 'ended' ? paused : await this.#tryRemoval(executor, spec);
      if (outcome === 'failed') continue;
      if (outcome === 'ended') {
        this.#logger.warn(
          "the step's container was not removed before the worker stopped or lost the lease; " +
            'the lease runs out on its own',
        );
        return;
      }
      await this.#removeWorkspace(workspace);
      // The report ends the lease, and a heartbeat sent meanwhile would be rejected and logged.
      heartbeat.stop();
      const body: FinishBody = { ...this.#lease(), ...result, step_stopped: true };
      const ok = await this.#withRetries('finish', () =>
        this.#deps.client.finish(this.#spec.task_id, body),
      );
      if (ok) this.#logger.info("the step's container is removed; the task's lease ends");
      return;
    }
  }

  /**
   * Retries the executor's cleanup of steps that may still run, while the task keeps its lease,
   * for up to `graceMs`. Returns whether the container is gone, which is false when the worker
   * stops or loses the lease first, or when the task is cancelled, since a cancelled task gets
   * no retry to wait for.
   */
  async #removeWithin(executor: Executor, spec: ExecutionSpec, graceMs: number): Promise<boolean> {
    const deadline = Date.now() + graceMs;
    const signal = AbortSignal.any([this.#removalEnd.signal, this.#controller.signal]);
    for (let retry = 0; ; retry += 1) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      const delay = REMOVE_RETRY_DELAYS_MS[Math.min(retry, REMOVE_RETRY_DELAYS_MS.length - 1)]!;
      const paused = await sleep(Math.min(delay, left), 'retry' as const, { signal }).catch(
        () => 'ended' as const,
      );
      if (paused === 'ended' || this.#leaseRejected) return false;
      const outcome = await this.#tryRemoval(executor, spec);
      if (outcome !== 'failed') return outcome === 'removed';
      if (signal.aborted) return false;
    }
  }

  /**
   * Runs the executor's cleanup once; returns `ended` when the worker stopped or lost the lease
   * first. A stopping worker does not wait for the cleanup, whose requests to a hung engine take
   * up to SLIPWAY_DOCKER_TIMEOUT_SECONDS each and then end on their own.
   */
  async #tryRemoval(
    executor: Executor,
    spec: ExecutionSpec,
  ): Promise<'removed' | 'failed' | 'ended'> {
    const cleanup = executor.cleanup(spec).then(
      () => 'removed' as const,
      (error: unknown) => {
        const skipped = this.#failures.take('cleanup');
        if (skipped !== undefined) {
          this.#logger.warn(
            { err: error, repeats_skipped: skipped },
            "the step's container is still not removed; retrying",
          );
        }
        return 'failed' as const;
      },
    );
    const signal = this.#removalEnd.signal;
    if (signal.aborted) return 'ended';
    return new Promise((resolve) => {
      const onEnd = () => resolve('ended');
      signal.addEventListener('abort', onEnd, { once: true });
      void cleanup.then((outcome) => {
        signal.removeEventListener('abort', onEnd);
        resolve(outcome);
      });
    });
  }

  #executorFor(spec: TaskSpec): Executor {
    const name = spec.executor ?? this.#deps.executors.names[0]!;
    const executor = this.#deps.executors.byName.get(name);
    if (executor === undefined) {
      throw new ExecutionError(
        `executor ${name} is not available on worker ${this.#deps.workerId}`,
      );
    }
    return executor;
  }

  async #checkout(workspace: Workspace, output: TaskOutput): Promise<void> {
    const { repository, job } = this.#spec;
    if (repository === null || job.commit === null) {
      const missing =
        repository === null ? 'the pipeline file sets no repository' : 'the job has no commit';
      output.note(`[slipway] nothing to check out (${missing}); the workspace starts empty`);
      await mkdir(workspace.src, { recursive: true });
      return;
    }
    output.note(`[slipway] checking out ${job.commit} from ${repository}`);
    const resolved = await checkout(
      this.#deps.mirrors,
      repository,
      job.commit,
      job.id,
      workspace,
      this.#controller.signal,
    );
    if (resolved !== job.commit) output.note(`[slipway] commit ${job.commit} is ${resolved}`);
  }

  #executionSpec(workspace: Workspace, secrets: Record<string, string>): ExecutionSpec {
    const spec = this.#spec;
    return {
      taskId: spec.task_id,
      jobId: spec.job.id,
      attempt: spec.attempt,
      steps: spec.steps,
      env: { ...spec.env, ...secrets },
      image: spec.image,
      network: spec.network,
      user: spec.user,
      resources: spec.resources,
      workspace: workspace.src,
      scratch: workspace.scratch,
      labels: {
        [LABEL_MANAGED]: 'true',
        [LABEL_INSTANCE]: this.#deps.instanceId,
        [LABEL_JOB]: spec.job.id,
        [LABEL_TASK]: spec.task_id,
        [LABEL_ATTEMPT]: String(spec.attempt),
      },
    };
  }

  #resultOf(exitCode: number, failedStep: string | undefined, detail: string | undefined) {
    const stopped = this.#stoppedResult();
    if (stopped !== undefined) return stopped;
    if (exitCode === 0) return { status: 'success' as const, exit_code: 0, reason: null };
    const step = failedStep === undefined ? 'a step' : `step "${failedStep}"`;
    return {
      status: 'failure' as const,
      exit_code: exitCode,
      reason: `${step} exited with code ${exitCode}${detail === undefined ? '' : ` (${detail})`}`,
    };
  }

  #resultOfError(error: unknown) {
    const stopped = this.#stoppedResult();
    if (stopped !== undefined) {
      // The engine's failure to confirm the stop belongs in the reason of a stopped task too.
      if (!(error instanceof ExecutionError && error.stepMayRun)) return stopped;
      return { ...stopped, reason: `${stopped.reason}; ${error.message}` };
    }
    if (!(error instanceof ExecutionError)) {
      this.#logger.error({ err: error }, 'task failed inside the worker');
    }
    const message = error instanceof Error ? error.message : String(error);
    const exitCode = error instanceof ExecutionError ? error.exitCode : null;
    return { status: 'error' as const, exit_code: exitCode, reason: message };
  }

  #stoppedResult() {
    const reason = this.#controller.signal.reason as StopReason | undefined;
    if (reason === 'cancelled') {
      return { status: 'cancelled' as const, exit_code: null, reason: 'cancel requested' };
    }
    if (reason === 'timed_out') {
      return {
        status: 'timed_out' as const,
        exit_code: null,
        reason: `timed out after ${formatDuration(this.#spec.timeout_ms)}`,
      };
    }
    return undefined;
  }

  /** Removes the task's containers or processes; returns whether the executor's cleanup succeeded. */
  async #cleanUp(
    executor: Executor | undefined,
    spec: ExecutionSpec | undefined,
  ): Promise<boolean> {
    let cleanedUp = true;
    if (executor !== undefined && spec !== undefined) {
      cleanedUp = await executor.cleanup(spec).then(
        () => true,
        (error: unknown) => {
          this.#logger.error(
            { err: error },
            'executor cleanup failed; the sweep will remove what is left',
          );
          return false;
        },
      );
    }
    return cleanedUp;
  }

  async #removeWorkspace(workspace: Workspace | undefined): Promise<void> {
    if (workspace === undefined) return;
    await removeWorkspace(workspace).catch((error: unknown) => {
      this.#logger.error(
        { err: error, workspace: workspace.root },
        'could not remove the workspace',
      );
    });
  }

  #startHeartbeat(): { stop(): void } {
    let stopped = false;
    let timer: NodeJS.Timeout | undefined;
    const beat = async () => {
      try {
        const answer = await this.#deps.client.heartbeat(this.#spec.task_id, this.#lease());
        this.#endedStatus ??= answer.ended_status;
        if (answer.cancel_requested) this.stop('cancelled');
      } catch (error) {
        // A heartbeat in flight while the task finished is rejected; that is expected.
        if (stopped) return;
        if (error instanceof AgentError && !error.retryable) {
          this.#logger.warn({ err: error }, 'heartbeat rejected; stopping the task');
          this.#leaseRejected = true;
          this.#removalEnd.abort();
          this.stop('lease_lost');
          return;
        }
        // While the API is away, every heartbeat fails. Only the first failure is logged, then
        // one line per FAILURE_LOG_INTERVAL_MS with the count of failures skipped.
        const skipped = this.#failures.take('heartbeat');
        if (skipped !== undefined) {
          this.#logger.warn({ err: error, repeats_skipped: skipped }, 'heartbeat failed; retrying');
        }
      }
      if (!stopped) timer = setTimeout(() => void beat(), this.#deps.heartbeatIntervalMs);
    };
    timer = setTimeout(() => void beat(), this.#deps.heartbeatIntervalMs);
    return {
      stop() {
        stopped = true;
        clearTimeout(timer);
      },
    };
  }

  #lease() {
    return { worker_id: this.#deps.workerId, attempt: this.#spec.attempt };
  }

  /**
   * Sends a heartbeat before the first step of a task with side effects and returns whether
   * the run may go on. A worker that stalled after the API sent the claim response (a stopped
   * process, a frozen host) may find that the lease expired, the task ended `error` and a
   * newer deploy of its concurrency group ran since. Then it must not start the steps. The
   * heartbeat is retried while the API does not respond.
   */
  async #confirmLease(): Promise<boolean> {
    for (let retry = 0; !this.#controller.signal.aborted; retry += 1) {
      try {
        const answer = await this.#deps.client.heartbeat(this.#spec.task_id, this.#lease());
        this.#endedStatus ??= answer.ended_status;
        if (answer.cancel_requested) this.stop('cancelled');
        break;
      } catch (error) {
        if (error instanceof AgentError && !error.retryable) {
          this.#logger.warn(
            { err: error },
            'the API rejected the heartbeat before the first step; the task is not started',
          );
          this.stop('lease_lost');
          break;
        }
        const delay = FINISH_RETRY_DELAYS_MS[Math.min(retry, FINISH_RETRY_DELAYS_MS.length - 1)]!;
        this.#logger.warn(
          { err: error, retry: retry + 1 },
          `heartbeat before the first step failed; retrying in ${delay} ms`,
        );
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
    return !this.#controller.signal.aborted;
  }

  /**
   * Reports once that this attempt stopped after its lease was lost. The API rejects the
   * report and leaves the task as lease recovery ended it. It records the report in the audit
   * log (`task_report_rejected`), which shows when the late step stopped, or that none started.
   */
  async #reportLostLease(stepsStarted: boolean, durationMs: number): Promise<void> {
    const seconds = (durationMs / 1000).toFixed(1);
    const reason = stepsStarted
      ? `the API rejected the lease, so worker ${this.#deps.workerId} stopped the steps ` +
        `${seconds} s after the task started`
      : `the API rejected the lease before the first step, so worker ${this.#deps.workerId} ` +
        'ran no step';
    this.#logger.warn(`lease lost; ${reason}; the result of this attempt is dropped`);
    try {
      await this.#deps.client.finish(this.#spec.task_id, {
        ...this.#lease(),
        status: 'error',
        exit_code: null,
        reason,
        duration_ms: durationMs,
      });
    } catch (error) {
      if (error instanceof AgentError && error.leaseLost) return;
      this.#logger.warn({ err: error }, 'could not report the stop after the lost lease');
    }
  }

  async #finish(result: Omit<FinishBody, 'worker_id' | 'attempt'>): Promise<TaskRunOutcome> {
    const body: FinishBody = { ...this.#lease(), ...result };
    const ok = await this.#withRetries('finish', () =>
      this.#deps.client.finish(this.#spec.task_id, body),
    );
    if (!ok) return 'lease_lost';
    const fields = {
      status: result.status,
      duration_ms: Math.round(result.duration_ms),
      exit_code: result.exit_code,
    };
    if (result.status === 'success') this.#logger.info(fields, 'task succeeded');
    else if (result.status === 'error') {
      this.#logger.error(
        { ...fields, reason: result.reason },
        `task ended in error on attempt ${this.#spec.attempt}`,
      );
    } else this.#logger.warn({ ...fields, reason: result.reason }, `task ended ${result.status}`);
    return result.status;
  }

  async #handBack(): Promise<TaskRunOutcome> {
    const ok = await this.#withRetries('release', () =>
      this.#deps.client.release(this.#spec.task_id, {
        ...this.#lease(),
        reason: `worker ${this.#deps.workerId} stopped before the task ended`,
      }),
    );
    this.#logger.info('task handed back');
    return ok ? 'handed_back' : 'lease_lost';
  }

  /** Retries a report while the API does not respond. Returns false when the lease is gone. */
  async #withRetries(what: string, call: () => Promise<unknown>): Promise<boolean> {
    for (let retry = 0; ; retry += 1) {
      try {
        await call();
        return true;
      } catch (error) {
        if (error instanceof AgentError && !error.retryable) {
          this.#logger.warn(
            { err: error },
            `${what} rejected; the result of this attempt is dropped`,
          );
          return false;
        }
        if (this.#shuttingDown) {
          this.#logger.warn(
            { err: error, retry: retry + 1 },
            `${what} failed while the worker stops after its grace period; the report is ` +
              'dropped, and the task is recovered when its lease expires',
          );
          return false;
        }
        const delay = FINISH_RETRY_DELAYS_MS[Math.min(retry, FINISH_RETRY_DELAYS_MS.length - 1)]!;
        this.#logger.warn(
          { err: error, retry: retry + 1 },
          `${what} failed; retrying in ${delay} ms`,
        );
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }
}

function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms} ms`;
}
