/**
 * Reports job and task statuses to GitHub as commit statuses, without ever blocking a job.
 *
 * Two paths add reports to the outbox (status-outbox.ts). The `job-created`, `job-status`,
 * `task-status` and `tasks-queued` events of this process add them within milliseconds. A reconcile pass
 * every `reconcileMs` over recently changed jobs catches changes made by other processes
 * (the orchestrator expiring a lease) and events lost in a crash after a commit.
 * One loop, in the process holding the `github-status-sender` lease, drains the outbox one
 * request at a time and retries failures with exponential backoff until `maxAgeMs`.
 */
import os from 'node:os';
import type { AppContext } from '../app/context.js';
import type { Logger } from '../log.js';
import type { GitHubStatusRow } from '../store/schema.js';
import { isoAfter } from '../util/time.js';
import { describeGitHubError, type GitHubClient } from './client.js';
import { holdLease, releaseLease } from './lock.js';
import {
  enqueueJobStatuses,
  hasReportsBefore,
  jobsChangedSince,
  markReportFailed,
  markReportRetry,
  markReportSent,
  nextDueTime,
  supersedeReplacedReports,
  takeDueReports,
  type OutboxSettings,
} from './status-outbox.js';

export interface StatusSenderOptions {
  /** Maximum sleep between two reads of the outbox in ms, which bounds the delay for reports of other processes. */
  pollMs?: number;
  /** Interval of the reconcile pass over recently changed jobs, in ms. */
  reconcileMs?: number;
  /**
   * How far back the first reconcile pass after start looks, in ms. With no report ever
   * written for the repository, it looks back only to the start.
   */
  startLookbackMs?: number;
  /** First retry delay in ms; doubles per attempt up to backoffMaxMs. */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** A report still unsent this long after it was written is given up, in ms. */
  maxAgeMs?: number;
}

const LEASE_NAME = 'github-status-sender';
const BATCH_SIZE = 20;
/** Time in ms after which a status request and its retries are aborted. */
const SEND_TIMEOUT_MS = 30_000;

export class StatusSender {
  readonly #context: AppContext;
  readonly #client: GitHubClient;
  readonly #log: Logger;
  readonly #settings: OutboxSettings;
  readonly #options: Required<StatusSenderOptions>;
  readonly #holder = `${os.hostname()}:${process.pid}:status-sender`;
  readonly #pendingJobs = new Set<string>();
  #flushScheduled = false;
  #running = false;
  #wake: (() => void) | undefined;
  #wakeRequested = false;
  #loop: Promise<void> | undefined;
  #lastReconcile = 0;
  /** Epoch ms before which no report is sent, set by a rate limit or a `retry-after`. */
  #pausedUntil = 0;
  #reconcileFrom: string;
  /** When start ran; reconcile passes run only after it. */
  #startedAt = '';
  readonly #unsubscribe: Array<() => void> = [];

  constructor(context: AppContext, client: GitHubClient, options: StatusSenderOptions = {}) {
    this.#context = context;
    this.#client = client;
    this.#log = context.logger.child({ component: 'github-status' });
    this.#settings = { repository: client.repository, publicUrl: context.config.api.publicUrl };
    this.#options = {
      pollMs: options.pollMs ?? 5_000,
      reconcileMs: options.reconcileMs ?? 30_000,
      startLookbackMs: options.startLookbackMs ?? 24 * 3_600_000,
      backoffBaseMs: options.backoffBaseMs ?? 5_000,
      backoffMaxMs: options.backoffMaxMs ?? 10 * 60_000,
      maxAgeMs: options.maxAgeMs ?? 24 * 3_600_000,
    };
    this.#reconcileFrom = isoAfter(-this.#options.startLookbackMs);
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#startedAt = new Date().toISOString();
    this.#subscribe();
    this.#loop = this.#run();
    if (this.#settings.publicUrl === undefined) {
      this.#log.info('SLIPWAY_PUBLIC_URL is not set, so commit statuses carry no link to the job');
    }
  }

  /** Stops the loop after the request in flight; unsent reports stay in the outbox. */
  async stop(): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    for (const unsubscribe of this.#unsubscribe.splice(0)) unsubscribe();
    this.#notify();
    await this.#loop;
    await this.#flush();
    await releaseLease(this.#context.store, LEASE_NAME, this.#holder).catch(() => undefined);
  }

  /** Adds reports for a job now, as an event would. */
  async enqueueJob(jobId: string): Promise<void> {
    this.#pendingJobs.add(jobId);
    await this.#flush();
  }

  #subscribe(): void {
    const events = this.#context.events;
    const onJob = (change: { jobId: string }) => this.#schedule(change.jobId);
    const onTask = (change: { jobId: string }) => this.#schedule(change.jobId);
    const onCreated = (job: { jobId: string }) => this.#schedule(job.jobId);
    // A retried job starts its new attempt without a status change event, only this one.
    const onQueued = (taskIds: string[]) => {
      for (const id of taskIds) this.#schedule(id.split('.').slice(0, -2).join('.'));
    };
    events.on('job-status', onJob);
    events.on('task-status', onTask);
    events.on('job-created', onCreated);
    events.on('tasks-queued', onQueued);
    this.#unsubscribe.push(
      () => events.off('job-status', onJob),
      () => events.off('task-status', onTask),
      () => events.off('job-created', onCreated),
      () => events.off('tasks-queued', onQueued),
    );
  }

  /** Collects job ids changed in one tick, so a matrix of many tasks costs one write. */
  #schedule(jobId: string): void {
    this.#pendingJobs.add(jobId);
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      this.#flush().catch((error: unknown) => {
        this.#log.error(
          { err: error },
          'recording commit statuses failed; the reconcile pass retries',
        );
      });
    });
  }

  async #flush(): Promise<void> {
    if (this.#pendingJobs.size === 0) return;
    const jobIds = [...this.#pendingJobs];
    this.#pendingJobs.clear();
    const added = await this.#context.store.write(async (trx) => {
      let count = 0;
      for (const id of jobIds) count += await enqueueJobStatuses(trx, id, this.#settings);
      return count;
    });
    if (added > 0) this.#notify();
  }

  async #run(): Promise<void> {
    while (this.#running) {
      try {
        await this.#reconcileIfDue();
        if (await this.#holdLease()) await this.#drain();
      } catch (error) {
        this.#log.error({ err: error }, 'commit status loop failed; retrying');
      }
      await this.#sleep(await this.#sleepTime());
    }
  }

  /**
   * Takes or extends the sender lease. It lasts twice as long as one request may take, so a
   * request sent right after a renewal has ended before another process can take the lease
   * and send a newer status of the same context.
   */
  #holdLease(): Promise<boolean> {
    const ttlMs = Math.max(2 * SEND_TIMEOUT_MS, this.#options.pollMs * 3);
    return holdLease(this.#context.store, LEASE_NAME, this.#holder, ttlMs);
  }

  async #reconcileIfDue(): Promise<void> {
    const now = Date.now();
    if (now - this.#lastReconcile < this.#options.reconcileMs) return;
    let since = this.#reconcileFrom;
    // Reporting that is new for this repository (just turned on, or pointed at another one)
    // starts with the jobs of now. The jobs of the day before would otherwise go first, one
    // request a second, and hold back the statuses that branch protection waits for. Only
    // reports from before the start count: a job that ended since may have written one.
    const { db } = this.#context.store;
    if (
      this.#lastReconcile === 0 &&
      !(await hasReportsBefore(db, this.#client.repository, this.#startedAt))
    ) {
      since = this.#startedAt;
    }
    // Overlap the next pass by a second, because updated_at has millisecond precision and
    // a row committed during this pass may carry a time just before `now`.
    this.#reconcileFrom = isoAfter(-1_000, now);
    this.#lastReconcile = now;
    for (const id of await jobsChangedSince(this.#context.store.db, since)) {
      this.#pendingJobs.add(id);
    }
    await this.#flush();
  }

  async #drain(): Promise<void> {
    const { store } = this.#context;
    const repository = this.#client.repository;
    await store.write((trx) => supersedeReplacedReports(trx, repository));
    while (this.#running) {
      const due = await takeDueReports(store.db, repository, BATCH_SIZE);
      if (due.length === 0) return;
      for (const report of due) {
        if (!this.#running || Date.now() < this.#pausedUntil) return;
        // A drain can outlast the lease, because writes are spaced a second apart and failed
        // sends wait for their retries. If another API process took the lease meanwhile, a
        // request from this one could land after its newer status of a context and replace it.
        if (!(await this.#holdLease())) {
          this.#log.info('another process took the commit status lease; this one stops sending');
          return;
        }
        // During an outage each failed send takes time, and a newer report of the same
        // context may be written meanwhile. Sending the old one would only cost a request.
        const replaced = await store.write((trx) =>
          supersedeReplacedReports(trx, repository, report.id),
        );
        if (replaced === 0) await this.#send(report);
      }
      await store.write((trx) => supersedeReplacedReports(trx, repository));
    }
  }

  async #send(report: GitHubStatusRow): Promise<void> {
    const { store } = this.#context;
    const attempts = report.attempts + 1;
    const log = this.#log.child({
      job_id: report.job_id,
      task_id: report.task_id,
      commit: report.commit_sha,
      context: report.context,
    });
    try {
      await this.#client.octokit.rest.repos.createCommitStatus({
        owner: this.#client.owner,
        repo: this.#client.repo,
        sha: report.commit_sha,
        state: report.state,
        context: report.context,
        description: report.description,
        ...(report.target_url === null ? {} : { target_url: report.target_url }),
        request: { signal: AbortSignal.timeout(SEND_TIMEOUT_MS) },
      });
      await store.write((trx) => markReportSent(trx, report.id, attempts));
      log.debug({ state: report.state }, 'commit status sent');
    } catch (error) {
      const failure = describeGitHubError(error);
      const age = Date.now() - Date.parse(report.created_at);
      if (!failure.retryable || age > this.#options.maxAgeMs) {
        await store.write((trx) => markReportFailed(trx, report.id, attempts, failure.message));
        log.warn(
          { status: failure.status, attempts },
          `commit status not sent, giving up: ${failure.message}`,
        );
        return;
      }
      // After a rate limit, GitHub's "Best practices for using the REST API" advise making no
      // request until the reset or the retry-after time, so the other reports wait too.
      if (failure.retryAt !== undefined && failure.retryAt > Date.now()) {
        this.#pausedUntil = Math.max(this.#pausedUntil, failure.retryAt);
      }
      const delay = Math.min(
        this.#options.backoffMaxMs,
        this.#options.backoffBaseMs * 2 ** Math.min(attempts - 1, 20),
      );
      const next = Math.max(Date.now() + delay, failure.retryAt ?? 0);
      await store.write((trx) =>
        markReportRetry(trx, report.id, attempts, failure.message, new Date(next).toISOString()),
      );
      log.warn(
        { status: failure.status, attempt: attempts, retry_at: new Date(next).toISOString() },
        `commit status not sent (attempt ${attempts}); retrying: ${failure.message}`,
      );
    }
  }

  async #sleepTime(): Promise<number> {
    const due = await nextDueTime(this.#context.store.db, this.#client.repository).catch(
      () => undefined,
    );
    const nextSend = due === undefined ? Infinity : Math.max(Date.parse(due), this.#pausedUntil);
    const untilDue = nextSend - Date.now();
    const untilReconcile = this.#lastReconcile + this.#options.reconcileMs - Date.now();
    return Math.max(10, Math.min(this.#options.pollMs, untilDue, untilReconcile));
  }

  /** Ends the current sleep, or the next one if the loop is busy, so new reports go at once. */
  #notify(): void {
    this.#wakeRequested = true;
    this.#wake?.();
  }

  #sleep(ms: number): Promise<void> {
    if (!this.#running || this.#wakeRequested) {
      this.#wakeRequested = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = () => {
        this.#wake = undefined;
        this.#wakeRequested = false;
        done();
      };
    });
  }
}
