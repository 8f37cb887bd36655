import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { ENV_AGENT_TOKEN_NAME } from '../../src/app/agent-token.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

const FIRST = 'slw_agent-from-env-first-000000000000';
const SECOND = 'slw_agent-from-env-second-00000000000';
const REGISTER = { name: 'env-worker', hostname: 'test-host', executors: ['local'], capacity: 1 };

const dirs: string[] = [];
let server: TestServer | undefined;

afterEach(async () => {
  await server?.close();
  server = undefined;
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

async function start(dataDir: string, agentToken: string): Promise<TestServer> {
  server = await startTestServer({ SLIPWAY_DATA_DIR: dataDir, SLIPWAY_AGENT_TOKEN: agentToken });
  return server;
}

async function restart(dataDir: string, agentToken: string): Promise<TestServer> {
  await server?.close();
  server = undefined;
  return start(dataDir, agentToken);
}

function envTokens(api: TestServer) {
  return api.context.store.db
    .selectFrom('api_tokens')
    .selectAll()
    .where('name', '=', ENV_AGENT_TOKEN_NAME)
    .orderBy('id')
    .execute();
}

describe('SLIPWAY_AGENT_TOKEN', () => {
  it('registers an agent token that workers can use', async () => {
    const dataDir = makeTempDir();
    dirs.push(dataDir);
    const api = await start(dataDir, FIRST);

    const registered = await api.request('POST', '/api/agent/workers', {
      token: FIRST,
      body: REGISTER,
    });
    expect(registered.status).toBe(200);
    const tokens = await envTokens(api);
    expect(tokens).toHaveLength(1);
    expect(tokens[0]?.role).toBe('agent');

    const audit = await api.context.store.db
      .selectFrom('audit_log')
      .selectAll()
      .where('action', '=', 'token_created')
      .execute();
    const details = audit.map((row) => JSON.parse(row.details) as Record<string, unknown>);
    const agentRows = details.filter((row) => row.name === ENV_AGENT_TOKEN_NAME);
    expect(agentRows).toHaveLength(1);
    expect(agentRows[0]).toMatchObject({ role: 'agent', from: 'SLIPWAY_AGENT_TOKEN' });
  });

  it('keeps one token across restarts', async () => {
    const dataDir = makeTempDir();
    dirs.push(dataDir);
    await start(dataDir, FIRST);
    const api = await restart(dataDir, FIRST);
    expect(await envTokens(api)).toHaveLength(1);
  });

  it('rotates when the value changes', async () => {
    const dataDir = makeTempDir();
    dirs.push(dataDir);
    await start(dataDir, FIRST);
    const api = await restart(dataDir, SECOND);

    const old = await api.request('POST', '/api/agent/workers', { token: FIRST, body: REGISTER });
    expect(old.status).toBe(401);
    const current = await api.request('POST', '/api/agent/workers', {
      token: SECOND,
      body: REGISTER,
    });
    expect(current.status).toBe(200);
    const tokens = await envTokens(api);
    expect(tokens).toHaveLength(1);
    expect(tokens[0]?.revoked_at).toBeNull();

    const revoked = await api.context.store.db
      .selectFrom('audit_log')
      .selectAll()
      .where('action', '=', 'token_revoked')
      .execute();
    expect(revoked).toHaveLength(1);
    expect(revoked[0]?.actor).toBe('api');
    expect(JSON.parse(revoked[0]!.details)).toEqual({
      token: ENV_AGENT_TOKEN_NAME,
      count: 1,
      prefix: FIRST.slice(0, 8),
      reason: 'SLIPWAY_AGENT_TOKEN changed',
    });
  });

  it('audits no revoke on restart', async () => {
    const dataDir = makeTempDir();
    dirs.push(dataDir);
    await start(dataDir, FIRST);
    const api = await restart(dataDir, FIRST);
    const revoked = await api.context.store.db
      .selectFrom('audit_log')
      .selectAll()
      .where('action', '=', 'token_revoked')
      .execute();
    expect(revoked).toEqual([]);
  });

  it('rejects the admin token value', async () => {
    const dataDir = makeTempDir();
    dirs.push(dataDir);
    await expect(
      startTestServer({
        SLIPWAY_DATA_DIR: dataDir,
        SLIPWAY_ADMIN_TOKEN: FIRST,
        SLIPWAY_AGENT_TOKEN: FIRST,
      }),
    ).rejects.toThrow(/SLIPWAY_AGENT_TOKEN: is already registered as the admin token/);
  });
});
