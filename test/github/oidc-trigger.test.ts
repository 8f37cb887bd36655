/**
 * `slipway trigger` and scripts/slipway-trigger.sh in a GitHub Actions job without a stored
 * token: with SLIPWAY_OIDC_AUDIENCE they request OIDC tokens from the job's token endpoint (a
 * stand-in, test/support/oidc-issuer.ts) and renew them while they wait for the job.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runCli } from '../support/cli.js';
import {
  OIDC_REPOSITORY,
  OIDC_REQUEST_TOKEN,
  startOidcIssuer,
  type OidcIssuer,
} from '../support/oidc-issuer.js';
import { startTestServer, type TestServer } from '../support/server.js';
import { AgentClient } from './agent-client.js';
import { waitFor } from './helpers.js';
import { runTriggerScript } from './workflow-runner.js';

const AUDIENCE = 'https://slipway.test';

let issuer: OidcIssuer;
let server: TestServer;
let agent: AgentClient;

beforeAll(async () => {
  issuer = await startOidcIssuer();
  server = await startTestServer({
    SLIPWAY_OIDC_AUDIENCE: AUDIENCE,
    SLIPWAY_OIDC_ISSUER: issuer.url,
    SLIPWAY_OIDC_REPOSITORIES: OIDC_REPOSITORY,
  });
  agent = await AgentClient.register(server, 'oidc-trigger-worker');
});
afterAll(async () => {
  await server?.close();
  await issuer?.close();
});

/** Returns the environment of a GitHub Actions job with `id-token: write` and no SLIPWAY_TOKEN. */
function jobEnv(): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/tmp',
    SLIPWAY_API_URL: server.url,
    SLIPWAY_OIDC_AUDIENCE: AUDIENCE,
    GITHUB_REPOSITORY: OIDC_REPOSITORY,
    ACTIONS_ID_TOKEN_REQUEST_URL: issuer.requestUrl,
    ACTIONS_ID_TOKEN_REQUEST_TOKEN: OIDC_REQUEST_TOKEN,
  };
}

const runScript = runTriggerScript;

/** Waits for the job of `commit`, checks who queued it, and ends it with success. */
async function finishJobOf(commit: string): Promise<void> {
  const job = await waitFor(async () => {
    const list = await server.request('GET', `/api/admin/jobs?commit=${commit}`, {
      token: server.adminToken,
    });
    return list.body.jobs[0] as { id: string; requested_by: string } | undefined;
  }, 15_000);
  expect(job.requested_by).toBe(`github:${OIDC_REPOSITORY}`);
  // Long enough for the waiting client to send requests past its first token's renewal time.
  await new Promise((resolve) => setTimeout(resolve, 2_500));
  const [task] = await agent.claimJob(job.id, 1);
  await agent.log(task!, 'tests passed\n');
  await agent.finish(task!, 'success');
}

describe('triggering with GitHub Actions OIDC', () => {
  it('works from the script and renews tokens', { timeout: 60_000 }, async () => {
    // A token valid for 62 s is kept for 2 s, then renewed.
    issuer.lifetimeSeconds = 62;
    const before = issuer.issued;
    const commit = 'c1'.repeat(20);
    const run = runScript(['ci', '--commit', commit, '--wait', '--poll-interval', '0.5'], jobEnv());
    await finishJobOf(commit);
    const result = await run;
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain('tests passed');
    expect(issuer.issued - before).toBeGreaterThan(1);
  });

  it('works from slipway trigger and renews tokens', { timeout: 60_000 }, async () => {
    await ensureBuilt();
    issuer.lifetimeSeconds = 62;
    const before = issuer.issued;
    const commit = 'c2'.repeat(20);
    const run = runCli(
      ['trigger', 'ci', '--commit', commit, '--wait', '--poll-interval', '500ms'],
      jobEnv(),
      30_000,
    );
    await finishJobOf(commit);
    const result = await run;
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain('tests passed');
    expect(issuer.issued - before).toBeGreaterThan(1);
  });

  it('keeps a token until it is about to expire', { timeout: 60_000 }, async () => {
    issuer.lifetimeSeconds = 300;
    const before = issuer.issued;
    const commit = 'c3'.repeat(20);
    const run = runScript(['ci', '--commit', commit, '--wait', '--poll-interval', '0.5'], jobEnv());
    await finishJobOf(commit);
    expect((await run).code).toBe(0);
    expect(issuer.issued - before).toBe(1);
  });

  it('needs id-token permission', async () => {
    const env = jobEnv();
    delete env.ACTIONS_ID_TOKEN_REQUEST_URL;
    const script = await runScript(['ci', '--commit', 'c4'.repeat(20)], env);
    expect(script.code).toBe(2);
    expect(script.stderr).toContain('id-token: write');
    await ensureBuilt();
    const cli = await runCli(['trigger', 'ci', '--commit', 'c4'.repeat(20)], env);
    expect(cli.code).toBe(2);
    expect(cli.stderr).toContain('id-token: write');
  });
});
