/**
 * The GitHub integration of one API process: the client, the commit status sender and the
 * scheduled variable sync. Without GITHUB_TOKEN or GITHUB_REPOSITORY it starts nothing and
 * logs that GitHub reporting is off; everything else keeps working.
 */
import os from 'node:os';
import type { AppContext } from '../app/context.js';
import {
  createGitHubClient,
  gitHubDisabledReason,
  type GitHubClient,
  type GitHubClientOptions,
} from './client.js';
import { holdLease } from './lock.js';
import { pruneGitHubRecords } from './prune.js';
import { StatusSender, type StatusSenderOptions } from './status-sender.js';
import { syncVariables } from './variables.js';
import { redactUrl } from '../util/url.js';

export interface GitHubServiceOptions {
  client?: GitHubClientOptions;
  statuses?: StatusSenderOptions;
}

const SYNC_LEASE = 'github-variable-sync';
const PRUNE_INTERVAL_MS = 3_600_000;

export class GitHubService {
  readonly client: GitHubClient | undefined;
  readonly statuses: StatusSender | undefined;
  readonly #context: AppContext;
  #syncTimer: NodeJS.Timeout | undefined;
  #pruneTimer: NodeJS.Timeout | undefined;
  #started = false;

  constructor(context: AppContext, options: GitHubServiceOptions = {}) {
    this.#context = context;
    this.client = createGitHubClient(context.config, context.logger, options.client);
    this.statuses =
      this.client === undefined
        ? undefined
        : new StatusSender(context, this.client, options.statuses);
  }

  start(): void {
    if (this.#started) return;
    this.#started = true;
    const log = this.#context.logger.child({ component: 'github' });
    // Webhook deliveries are recorded with or without a token, so pruning always runs.
    this.#schedulePrune();
    const disabled = gitHubDisabledReason(this.#context.config);
    if (this.client === undefined || disabled !== undefined) {
      log.info(
        `GitHub reporting is off: ${disabled}; commit statuses and variable sync are disabled`,
      );
      return;
    }
    log.info(
      { repository: this.client.repository, api_url: redactUrl(this.client.apiUrl) },
      `GitHub reporting is on for ${this.client.repository}`,
    );
    this.statuses?.start();
    this.#scheduleSync();
  }

  async stop(): Promise<void> {
    if (!this.#started) return;
    this.#started = false;
    if (this.#syncTimer !== undefined) clearInterval(this.#syncTimer);
    if (this.#pruneTimer !== undefined) clearInterval(this.#pruneTimer);
    await this.statuses?.stop();
  }

  #schedulePrune(): void {
    const log = this.#context.logger.child({ component: 'github' });
    this.#pruneTimer = setInterval(() => {
      pruneGitHubRecords(this.#context, { actor: 'github-retention', source: os.hostname() })
        .then((summary) => {
          if (summary.statusReports + summary.webhookDeliveries > 0) {
            log.info(summary, 'old commit status reports and webhook deliveries deleted');
          }
        })
        .catch((error: unknown) => {
          log.error({ err: error }, 'pruning GitHub records failed; the next hour retries');
        });
    }, PRUNE_INTERVAL_MS);
    this.#pruneTimer.unref();
  }

  #scheduleSync(): void {
    const seconds = this.#context.config.intervals.githubSyncSeconds;
    if (seconds === 0 || this.client === undefined) return;
    const client = this.client;
    const holder = `${os.hostname()}:${process.pid}:variable-sync`;
    const log = this.#context.logger.child({ component: 'github-variables' });
    this.#syncTimer = setInterval(() => {
      void (async () => {
        // The lease lasts a little under one interval, so one process syncs per interval.
        const leaseMs = Math.max(1_000, seconds * 1000 - 1_000);
        if (!(await holdLease(this.#context.store, SYNC_LEASE, holder, leaseMs))) return;
        await syncVariables(this.#context, client, {
          audit: { actor: 'github-variable-sync', source: os.hostname() },
          auditUnchanged: false,
        });
      })().catch((error: unknown) => {
        log.error({ err: error }, 'scheduled variable sync failed; the next interval retries');
      });
    }, seconds * 1000);
    this.#syncTimer.unref();
  }
}
