/**
 * Starts the real API wired to a GitHub stand-in, with short retry delays so failure tests
 * stay fast, and a logger that keeps every line so tests can check what reached the log.
 */
import { pino } from 'pino';
import { GitHubService, type GitHubServiceOptions } from '../../src/github/service.js';
import { startTestServer, type TestServer } from '../support/server.js';
import { startGitHubStandin, type GitHubStandin } from '../support/github-standin.js';

export interface GitHubSetup {
  standin: GitHubStandin;
  server: TestServer;
  /** Every log line written by the server, as JSON text. */
  logs: string[];
  close(): Promise<void>;
}

export const FAST_GITHUB: GitHubServiceOptions = {
  client: { retryBaseMs: 20 },
  statuses: { pollMs: 100, reconcileMs: 200, backoffBaseMs: 100, backoffMaxMs: 400 },
};

export async function startGitHubSetup(
  env: Record<string, string> = {},
  options: GitHubServiceOptions = FAST_GITHUB,
): Promise<GitHubSetup> {
  const standin = await startGitHubStandin();
  const logs: string[] = [];
  const server = await startTestServer(
    {
      GITHUB_TOKEN: standin.token,
      GITHUB_REPOSITORY: standin.repository,
      GITHUB_API_URL: standin.url,
      GITHUB_SYNC_INTERVAL: '0',
      ...env,
    },
    {
      prepare(context) {
        context.logger = pino(
          { level: 'debug', redact: ['req.headers.authorization'] },
          { write: (line: string) => void logs.push(line) },
        );
        context.github = new GitHubService(context, options);
      },
    },
  );
  return {
    standin,
    server,
    logs,
    async close() {
      await server.close();
      await standin.close();
    },
  };
}

/** Polls `check` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function waitFor<T>(
  check: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
