/**
 * Following a job from the CLI: one log stream per task (`GET /api/job/{id}/logs?task=&
 * follow=true`) printed as it arrives, and a status poll that decides when the job ended.
 * A log stream that ends early (a restarted API, a dropped connection) is opened again and
 * the bytes already printed are skipped, so output is neither lost nor repeated.
 */
import type { Writable } from 'node:stream';
import { escapeControlCharacters } from '../util/printable.js';
import { formatDuration } from '../util/time.js';
import { InterruptWatch } from './interrupts.js';
import { CliError } from './run.js';
import { ApiResponseError, type JobResponse, type SlipwayClient } from './slipway-client.js';

const TERMINAL = new Set(['success', 'failure', 'error', 'timed_out', 'cancelled', 'skipped']);

/** How long log streams may take to deliver their last bytes after the job ended. */
const DRAIN_GRACE_MS = 10_000;
/** Consecutive failed status polls tolerated before giving up (an API restart takes a few). */
const MAX_POLL_FAILURES = 30;

export interface FollowOptions {
  pollIntervalMs: number;
  timeoutMs: number | undefined;
  cancelOnTimeout: boolean;
  cancelOnInterrupt: boolean;
  output: Writable;
  /**
   * The signals received so far, from a watch that the caller started before it triggered the
   * job. Without it, the follower watches for signals itself while it runs.
   */
  interrupts?: InterruptWatch;
}

export interface FollowResult {
  /**
   * The job's final status, `wait_timeout` when --timeout passed first, `cancel_failed` when
   * a signal arrived and the cancel request failed, so that the job may still be running, or
   * `interrupted` when a signal arrived with --no-cancel-on-interrupt.
   */
  status: string;
  reason: string | null;
  /** The signal that ended an `interrupted` command. */
  signal?: NodeJS.Signals;
}

export async function followJob(
  client: SlipwayClient,
  jobId: string,
  options: FollowOptions,
): Promise<FollowResult> {
  const follower = new JobFollower(client, jobId, options);
  return follower.run();
}

class JobFollower {
  readonly #stop = new AbortController();
  readonly #taskStatus = new Map<string, string>();
  readonly #taskAttempt = new Map<string, number>();
  readonly #streams = new Map<string, Promise<void>>();
  readonly #interrupts: InterruptWatch;
  #wake: (() => void) | undefined;
  /** The last line #reportWait printed, while the job is still queued or waiting. */
  #lastWait: string | undefined;

  constructor(
    readonly client: SlipwayClient,
    readonly jobId: string,
    readonly options: FollowOptions,
  ) {
    this.#interrupts = options.interrupts ?? new InterruptWatch();
  }

  async run(): Promise<FollowResult> {
    const ownWatch = this.options.interrupts === undefined;
    if (ownWatch) this.#interrupts.start();
    const unlisten = this.#interrupts.listen(() => this.#wake?.());
    try {
      return await this.#poll();
    } finally {
      unlisten();
      if (ownWatch) this.#interrupts.stop();
      this.#stop.abort();
    }
  }

  async #poll(): Promise<FollowResult> {
    const deadline =
      this.options.timeoutMs === undefined ? Infinity : Date.now() + this.options.timeoutMs;
    let failures = 0;
    let lastStatus: string | undefined;
    for (;;) {
      let job: JobResponse | undefined;
      try {
        job = await this.client.job(this.jobId);
        failures = 0;
        lastStatus = job.status;
      } catch (error) {
        failures += 1;
        if (failures >= MAX_POLL_FAILURES) throw error;
        process.stderr.write(`slipway: ${(error as Error).message}; retrying\n`);
      }
      if (job !== undefined) {
        this.#reportWait(job);
        this.#followTasks(job);
        if (TERMINAL.has(job.status)) {
          await this.#drain();
          return { status: job.status, reason: printableReason(job.reason) };
        }
      }
      const signal = this.#interrupts.signal;
      if (signal !== undefined) {
        return interruptedResult(this.client, this.jobId, signal, this.options);
      }
      if (Date.now() >= deadline) return this.#timedOut(lastStatus);
      await this.#sleep(Math.min(this.options.pollIntervalMs, deadline - Date.now()));
    }
  }

  /**
   * Prints to stderr why a queued or waiting job has not started, such as the job of its
   * concurrency group that runs, each time the reason changes.
   */
  #reportWait(job: JobResponse): void {
    if (job.status !== 'queued' && job.status !== 'waiting') {
      this.#lastWait = undefined;
      return;
    }
    if (job.reason === null) return;
    const line = `slipway: job ${this.jobId} is ${job.status}: ${printableReason(job.reason)}\n`;
    if (line === this.#lastWait) return;
    this.#lastWait = line;
    process.stderr.write(line);
  }

  #followTasks(job: JobResponse): void {
    const prefix = job.tasks.length > 1;
    for (const task of job.tasks) {
      this.#taskStatus.set(task.id, task.status);
      this.#taskAttempt.set(task.id, task.attempt);
      if (this.#streams.has(task.id)) continue;
      const printer = new LinePrinter(this.options.output, prefix ? `[${task.name}] ` : '');
      this.#streams.set(task.id, this.#followTask(task.id, printer));
    }
  }

  /**
   * Prints each attempt's log of the task in turn. A stream names its attempt and ends when a
   * newer one starts. So the bytes already printed, which a reopened stream skips, belong to
   * one attempt and never hide the start of the next.
   */
  async #followTask(taskId: string, printer: LinePrinter): Promise<void> {
    let attempt = Math.max(1, this.#taskAttempt.get(taskId) ?? 1);
    let printed = 0;
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      try {
        const response = await this.client.taskLog(this.jobId, taskId, attempt, signal);
        let received = 0;
        for await (const chunk of response.body ?? []) {
          const bytes = Buffer.from(chunk as Uint8Array);
          const skip = Math.max(0, printed - received);
          received += bytes.length;
          if (skip < bytes.length) {
            printer.write(bytes.subarray(skip));
            printed += bytes.length - skip;
          }
        }
      } catch (error) {
        if (signal.aborted) break;
        if (!(error instanceof CliError) && !(error instanceof TypeError)) throw error;
      }
      if ((this.#taskAttempt.get(taskId) ?? 0) > attempt) {
        attempt += 1;
        printed = 0;
        continue;
      }
      if (TERMINAL.has(this.#taskStatus.get(taskId) ?? '')) break;
      await delay(this.options.pollIntervalMs, signal);
    }
    printer.flush();
  }

  /** Gives the log streams a moment to print the end of each task, then stops them. */
  async #drain(): Promise<void> {
    const streams = Promise.allSettled(this.#streams.values());
    await Promise.race([streams, delay(DRAIN_GRACE_MS, this.#stop.signal)]);
    this.#stop.abort();
    await streams;
  }

  /**
   * Builds the wait_timeout result and, with --cancel-on-timeout, cancels the job. `lastStatus`
   * is the job's status at the last poll that succeeded, or undefined when none did.
   */
  async #timedOut(lastStatus: string | undefined): Promise<FollowResult> {
    const timeout = `--timeout ${formatDuration(this.options.timeoutMs ?? 0)}`;
    let reason =
      lastStatus === undefined
        ? `status unknown after ${timeout}, because no status poll succeeded`
        : `still ${lastStatus} after ${timeout}`;
    if (this.options.cancelOnTimeout) {
      try {
        await this.client.cancel(this.jobId, `slipway trigger --timeout passed`);
        reason += '; cancel requested';
      } catch (error) {
        if (!(error instanceof CliError)) throw error;
        reason += `; cancel request failed: ${error.message}`;
      }
    }
    return { status: 'wait_timeout', reason };
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, Math.max(0, ms));
      const wake = () => done();
      this.#wake = wake;
      function done() {
        clearTimeout(timer);
        resolve();
      }
    });
  }
}

/**
 * Returns the result of a command that received `signal`: the job is cancelled unless
 * --no-cancel-on-interrupt was given.
 */
export async function interruptedResult(
  client: SlipwayClient,
  jobId: string,
  signal: NodeJS.Signals,
  options: { cancelOnInterrupt: boolean },
): Promise<FollowResult> {
  if (!options.cancelOnInterrupt) {
    return { status: 'interrupted', reason: `${signal} received; the job keeps running`, signal };
  }
  return cancelAfterSignal(client, jobId, signal);
}

/**
 * Cancels the job because the command received `signal`, with the same words as
 * scripts/slipway-trigger.sh. A job that ended before the cancel arrived keeps its status.
 * When the cancel request fails, the result is `cancel_failed` with the request's error.
 */
export async function cancelAfterSignal(
  client: SlipwayClient,
  jobId: string,
  signal: NodeJS.Signals,
): Promise<FollowResult> {
  const reason = `slipway trigger received ${signal} (the workflow run was cancelled)`;
  try {
    await client.cancel(jobId, reason);
    return { status: 'cancelled', reason };
  } catch (error) {
    if (!(error instanceof CliError)) throw error;
    const ended = endedStatus(error);
    if (ended !== undefined) {
      return { status: ended, reason: `it ended before the cancel that ${signal} requested` };
    }
    return {
      status: 'cancel_failed',
      reason: `after ${signal} failed, so the job may still be running: ${error.message}`,
    };
  }
}

/** Returns the status of an ended job from the 409 job_finished that cancelling it gets. */
function endedStatus(error: CliError): string | undefined {
  if (!(error instanceof ApiResponseError) || error.status !== 409) return undefined;
  if (error.body.code !== 'job_finished' || typeof error.body.status !== 'string') return undefined;
  return TERMINAL.has(error.body.status) ? error.body.status : undefined;
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(finish, ms);
    signal.addEventListener('abort', finish, { once: true });
    function finish() {
      clearTimeout(timer);
      signal.removeEventListener('abort', finish);
      resolve();
    }
  });
}

/** Writes output whole lines at a time, each with a prefix naming the task. */
class LinePrinter {
  #partial = Buffer.alloc(0);

  constructor(
    readonly output: Writable,
    readonly prefix: string,
  ) {}

  write(bytes: Buffer): void {
    if (this.prefix === '') {
      this.output.write(bytes);
      return;
    }
    let data = Buffer.concat([this.#partial, bytes]);
    for (let end = data.indexOf(10); end !== -1; end = data.indexOf(10)) {
      this.output.write(this.prefix + data.subarray(0, end + 1).toString('utf8'));
      data = data.subarray(end + 1);
    }
    this.#partial = data;
  }

  flush(): void {
    if (this.#partial.length === 0) return;
    this.output.write(`${this.prefix}${this.#partial.toString('utf8')}\n`);
    this.#partial = Buffer.alloc(0);
  }
}

/**
 * Returns a job's reason ready to print. Any caller with a trigger token can set a cancel reason,
 * so control characters in it are escaped, rather than moving the cursor or forging a line.
 */
function printableReason(reason: string | null): string | null {
  return reason === null ? null : escapeControlCharacters(reason);
}
