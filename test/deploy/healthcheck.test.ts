import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../support/compose.js';
import { startTestServer, type TestServer } from '../support/server.js';

const SCRIPT = fileURLToPath(new URL('../../src/cli/healthcheck.ts', import.meta.url));

/** Runs the container health check with this environment and returns its exit code. */
function runCheck(env: Record<string, string>): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', SCRIPT],
      { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 20_000 },
      (error, stdout) => {
        let code = 0;
        if (error !== null) code = typeof error.code === 'number' ? error.code : -1;
        resolve({ code, output: stdout });
      },
    );
  });
}

let server: TestServer;
let port: string;
let closedPort: string;

beforeAll(async () => {
  server = await startTestServer();
  port = new URL(server.url).port;
  closedPort = String(await freePort());
});

afterAll(async () => {
  await server.close();
});

describe('container health check', () => {
  it('passes for a running API', async () => {
    const result = await runCheck({ ORCHESTRATION_MODE: 'api', API_PORT: port });
    expect(result.output).toContain('api healthy');
    expect(result.code).toBe(0);
  });

  it('fails when no API listens', async () => {
    const result = await runCheck({ ORCHESTRATION_MODE: 'api', API_PORT: closedPort });
    expect(result.output).toContain('health check failed');
    expect(result.code).toBe(1);
  });

  it('passes for a worker that reaches the API', async () => {
    const result = await runCheck({ ORCHESTRATION_MODE: 'worker', SLIPWAY_API_URL: server.url });
    expect(result.code).toBe(0);
  });

  it('checks the agent token of a worker', async () => {
    const agent = await server.token('agent', 'healthcheck-agent');
    const env = { ORCHESTRATION_MODE: 'worker', SLIPWAY_API_URL: server.url };
    const valid = await runCheck({ ...env, SLIPWAY_AGENT_TOKEN: agent });
    expect(valid.code, valid.output).toBe(0);
    const revoked = await runCheck({
      ...env,
      SLIPWAY_AGENT_TOKEN: 'slw_revoked-or-never-issued-000000000000',
    });
    expect(revoked.output).toContain('SLIPWAY_AGENT_TOKEN is unknown or revoked');
    expect(revoked.code).toBe(1);
  });

  it('fails for a worker without an API', async () => {
    const result = await runCheck({
      ORCHESTRATION_MODE: 'worker',
      SLIPWAY_API_URL: `http://127.0.0.1:${closedPort}`,
    });
    expect(result.code).toBe(1);
  });

  it('hides credentials in the API URL of a worker', async () => {
    const url = new URL(server.url);
    url.username = 'user';
    url.password = 's3cret-pw';
    const result = await runCheck({ ORCHESTRATION_MODE: 'worker', SLIPWAY_API_URL: url.href });
    expect(result.output).toContain(`http://***@127.0.0.1:${port}`);
    expect(result.output).not.toContain('s3cret-pw');
    // The credentials are left out of the request, which fetch would reject.
    expect(result.output).toContain(': HTTP 200');
    expect(result.code).toBe(0);
  });

  it('passes for roles without HTTP', async () => {
    for (const mode of ['orchestrator', 'health-monitor']) {
      const result = await runCheck({ ORCHESTRATION_MODE: mode, API_PORT: closedPort });
      expect(result.output).toContain(`role ${mode} serves no HTTP`);
      expect(result.code).toBe(0);
    }
  });
});
