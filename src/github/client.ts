/**
 * The GitHub REST client: Octokit with its retry plugin (5xx and network failures, with
 * backoff) and its throttling plugin (primary and secondary rate limits, waiting for the
 * reset time GitHub sends). The token goes only into the Authorization header; Octokit
 * replaces it with `[REDACTED]` in the request copy that errors carry, and this module never
 * puts it in a message.
 */
import { retry } from '@octokit/plugin-retry';
import { throttling } from '@octokit/plugin-throttling';
import { Octokit } from '@octokit/rest';
import type { Config } from '../config/env.js';
import type { Logger } from '../log.js';

const SlipwayOctokit = Octokit.plugin(retry, throttling);
export type GitHubOctokit = InstanceType<typeof SlipwayOctokit>;

/** Maximum rate-limit wait inside one request, in seconds; a longer wait fails the request. */
export const MAX_RATE_LIMIT_WAIT_SECONDS = 60;

/**
 * Statuses that a repeat of the same request cannot fix. 409 is here because a create that
 * conflicts must become an update, and 429 because the throttling plugin owns rate limits.
 */
const DO_NOT_RETRY = [400, 401, 403, 404, 409, 410, 422, 429, 451];

export interface GitHubClientOptions {
  /** Base of the retry backoff in ms: waits are 1, 4 and 9 times this (default 1000). */
  retryBaseMs?: number;
  /** Retries of a request that failed with 5xx or a network error (default 3). */
  retries?: number;
}

export interface GitHubClient {
  octokit: GitHubOctokit;
  owner: string;
  repo: string;
  /** `owner/name`. */
  repository: string;
  apiUrl: string;
}

/** Returns why GitHub reporting is off, or undefined when the token and repository are set. */
export function gitHubDisabledReason(config: Config): string | undefined {
  if (config.github.token === undefined) return 'GITHUB_TOKEN is not set';
  if (config.github.repository === undefined) return 'GITHUB_REPOSITORY is not set';
  return undefined;
}

/** Creates the client, or returns undefined when GITHUB_TOKEN or GITHUB_REPOSITORY is unset. */
export function createGitHubClient(
  config: Config,
  logger: Logger,
  options: GitHubClientOptions = {},
): GitHubClient | undefined {
  const { token, repository, apiUrl } = config.github;
  if (token === undefined || repository === undefined) return undefined;
  const [owner, repo] = repository.split('/') as [string, string];
  const log = logger.child({ component: 'github' });
  const octokit = new SlipwayOctokit({
    auth: token,
    baseUrl: apiUrl,
    userAgent: 'slipway/0.1.0',
    log: {
      debug: (message: string) => log.debug(message),
      info: (message: string) => log.debug(message),
      warn: (message: string) => log.warn(message),
      error: (message: string) => log.error(message),
    },
    retry: {
      doNotRetry: DO_NOT_RETRY,
      retries: options.retries ?? 3,
      retryAfterBaseValue: options.retryBaseMs ?? 1000,
    },
    throttle: {
      onRateLimit: (
        retryAfter: number,
        request: RequestOptions,
        _octokit: unknown,
        count: number,
      ) => onLimit(log, 'rate limit', retryAfter, request, count),
      onSecondaryRateLimit: (
        retryAfter: number,
        request: RequestOptions,
        _octokit: unknown,
        count: number,
      ) => onLimit(log, 'secondary rate limit', retryAfter, request, count),
    },
  });
  return { octokit, owner, repo, repository, apiUrl };
}

interface RequestOptions {
  method?: string;
  url?: string;
}

/** Waits out one rate limit per request when the wait is short; otherwise the request fails. */
function onLimit(
  log: Logger,
  kind: string,
  retryAfter: number,
  request: RequestOptions,
  retryCount: number,
): boolean {
  const retrying = retryCount < 1 && retryAfter <= MAX_RATE_LIMIT_WAIT_SECONDS;
  log.warn(
    { method: request.method, url: request.url, retry_after_s: retryAfter, retrying },
    `GitHub ${kind} reached; ${retrying ? `retrying in ${retryAfter} s` : 'giving up on this request'}`,
  );
  return retrying;
}

/** A failed GitHub call: its HTTP status (0 without a response) and whether and when to retry. */
export interface GitHubFailure {
  status: number;
  message: string;
  /** Epoch ms from `x-ratelimit-reset` or `retry-after`, when GitHub sent either. */
  retryAt: number | undefined;
  /** True when the same request may succeed later (5xx, network, rate limit, auth). */
  retryable: boolean;
}

/** Classifies an error thrown by Octokit. The message comes from GitHub's response body or the error, never from the request headers. */
export function describeGitHubError(error: unknown): GitHubFailure {
  const candidate = error as {
    status?: unknown;
    message?: unknown;
    response?: { headers?: Record<string, string | undefined>; data?: unknown };
  };
  const status = typeof candidate.status === 'number' ? candidate.status : 0;
  const headers = candidate.response?.headers ?? {};
  const retryAt = retryTime(headers);
  const message = gitHubMessage(candidate.response?.data) ?? String(candidate.message ?? error);
  const rateLimited =
    status === 429 ||
    (status === 403 && (headers['x-ratelimit-remaining'] === '0' || retryAt !== undefined));
  // 401 and 403 may be fixed by an operator (a new token, a granted permission) without
  // Slipway changing the request, so they are retried on the slow schedule.
  const retryable =
    status === 0 || status >= 500 || rateLimited || status === 401 || status === 403;
  return {
    status,
    message: `${status === 0 ? 'no response' : status}: ${message}`,
    retryAt,
    retryable,
  };
}

function retryTime(headers: Record<string, string | undefined>): number | undefined {
  const reset = Number(headers['x-ratelimit-reset']);
  if (headers['x-ratelimit-remaining'] === '0' && Number.isFinite(reset) && reset > 0) {
    return reset * 1000;
  }
  const after = Number(headers['retry-after']);
  if (Number.isFinite(after) && after > 0) return Date.now() + after * 1000;
  return undefined;
}

function gitHubMessage(data: unknown): string | undefined {
  if (data === null || typeof data !== 'object') return undefined;
  const body = data as { message?: unknown; errors?: unknown };
  if (typeof body.message !== 'string') return undefined;
  const details = Array.isArray(body.errors)
    ? body.errors
        .map((entry) =>
          typeof entry === 'string' ? entry : (entry as { message?: string }).message,
        )
        .filter((text): text is string => typeof text === 'string')
    : [];
  return details.length === 0 ? body.message : `${body.message} (${details.join('; ')})`;
}
