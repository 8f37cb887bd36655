/**
 * The executor contract: how a worker runs one task's steps. Two executors implement it:
 * `docker` (one container per task) and `local` (one process group per step on the
 * worker's host).
 *
 * Call order, per task: `run` once, then `cleanup` once, always, even when `run` threw or
 * was aborted. The worker has already checked out the workspace and resolved secrets.
 *
 * Concurrency: one executor instance serves every task of its worker. `run` and `cleanup`
 * of different tasks may run at the same time and share nothing but the instance.
 *
 * Abort: when `signal` aborts (cancel, timeout, lease lost, shutdown), `run` stops
 * everything it started within a few seconds (containers are killed, process groups get
 * SIGTERM and then SIGKILL) and resolves. The worker decides the status from the abort
 * reason, not from the exit code `run` returns.
 *
 * Errors: `run` resolves with the exit code of the first failing step (a `failure`) or 0,
 * and throws ExecutionError when the infrastructure failed (image missing, engine gone, a
 * container killed from outside): an `error`.
 *
 * Safe to repeat: `cleanup` may be called again and for a task that never started; it
 * removes the task's containers or kills its leftover processes. The worker removes the
 * workspace itself, after `cleanup`. A `cleanup` that resolves means that nothing of the task
 * runs any more; the worker relies on that when `run` threw with `stepMayRun`.
 */
import type { Resources, Step } from '../pipeline/types.js';

export type ExecutorName = 'docker' | 'local';

export interface ExecutionSpec {
  taskId: string;
  jobId: string;
  /** Lease attempt, part of container names and labels. */
  attempt: number;
  steps: Step[];
  /** Every variable the steps get, secrets included. */
  env: Record<string, string>;
  image: string | null;
  network: string | null;
  /**
   * Container user (docker executor only): a Docker user spec, or `worker` for the worker
   * process's uid and gid. Null keeps the image's USER. The loader allows it only on job types
   * with `executor: docker`.
   */
  user: string | null;
  resources: Resources;
  /** Host path of the checkout; the steps' working directory. */
  workspace: string;
  /** Host path of a directory the executor may write its own files to. */
  scratch: string;
  /** Container labels naming the installation, job, task and attempt. */
  labels: Record<string, string>;
}

/** Destination of a task's output: raw bytes from the steps, plus lines the executor adds. */
export interface OutputSink {
  write(chunk: Buffer): void;
  /** Writes one line of Slipway's own, such as a step header. */
  note(line: string): void;
}

export interface ExecutionResult {
  /** 0 when every step exited 0, else the failing step's exit code. */
  exitCode: number;
  /** Name of the step that failed. */
  failedStep?: string | undefined;
  /** Extra detail for the task's reason, e.g. "the container ran out of memory". */
  detail?: string | undefined;
}

/** Processes of ended workers that an executor killed, and those it could not kill. */
export interface StoppedLeftovers {
  killed: Array<{ pid: number; taskId: string | undefined }>;
  /** With the error code (EPERM: another user's process). */
  failed: Array<{ pid: number; taskId: string | undefined; code: string }>;
}

export interface Executor {
  readonly name: ExecutorName;
  /**
   * Stops what workers that have ended left running on this host, before a task runs again
   * after its lease was lost. Its earlier attempt may still run here, in the same workspace.
   */
  stopLeftovers?(): Promise<void>;
  /**
   * Calls `listener` with each search for the leftovers of ended workers that found some,
   * including searches made before the call, so that the worker can report them for the
   * audit log.
   */
  onLeftoversStopped?(listener: (stopped: StoppedLeftovers) => void): void;
  /**
   * Returns why the executor cannot run tasks now, such as a Docker engine that stopped
   * responding, or undefined when it can. The worker claims no tasks for it meanwhile.
   */
  unavailable?(): Promise<string | undefined>;
  /** Calls `listener` each time the executor becomes unavailable (see `unavailable`). */
  onUnavailable?(listener: () => void): void;
  run(spec: ExecutionSpec, output: OutputSink, signal: AbortSignal): Promise<ExecutionResult>;
  cleanup(spec: ExecutionSpec): Promise<void>;
}

/** The infrastructure failed: the task ends as `error` with this message as its reason. */
export class ExecutionError extends Error {
  /** Exit code that the task reports with its `error`, such as that of a killed container. */
  readonly exitCode: number | null;
  /**
   * True when the steps may still run after this error: the container started and the Docker
   * engine stopped responding, or the connection to it broke, before it reported the exit. The
   * worker then counts the steps as stopped only once `cleanup` succeeds.
   */
  readonly stepMayRun: boolean;

  constructor(
    message: string,
    options?: { cause?: unknown; exitCode?: number; stepMayRun?: boolean },
  ) {
    super(message, options);
    this.name = 'ExecutionError';
    this.exitCode = options?.exitCode ?? null;
    this.stepMayRun = options?.stepMayRun ?? false;
  }
}

/** Formats the header line written before each step. */
export function stepHeader(index: number, total: number, step: Step): string {
  return `[slipway] step ${index + 1}/${total}: ${step.name}`;
}
