import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { executionServices } from '../../src/dispatch/services.js';
import { writePipelineFile } from '../support/execution.js';
import { startTestServer, type TestServer } from '../support/server.js';

describe('worker registration and claims', () => {
  let server: TestServer;
  let agent: string;

  beforeAll(async () => {
    const pipelines = writePipelineFile(`
pipelines:
  quick:
    executor: local
    steps:
      - run: echo quick
`);
    server = await startTestServer({ SLIPWAY_LEASE_SECONDS: '30', SLIPWAY_PIPELINES: pipelines });
    agent = await server.token('agent', 'registration-test');
  });

  afterAll(async () => {
    await server?.close();
  });

  const post = (path: string, body: unknown) =>
    server.request('POST', path, { token: agent, body });
  const register = (body: Record<string, unknown>) =>
    post('/api/agent/workers', { hostname: 'host-a', executors: ['local'], capacity: 1, ...body });
  const workerRow = (id: string) =>
    server.context.store.db
      .selectFrom('workers')
      .selectAll()
      .where('id', '=', id)
      .executeTakeFirst();

  it('stores worker_id apart from the display name', async () => {
    const answer = await register({
      worker_id: 'build-1-4242',
      name: 'build',
      session: 'aaaaaaaa01',
    });
    expect(answer.status).toBe(200);
    expect(answer.body.worker_id).toBe('build-1-4242');
    const row = await workerRow('build-1-4242');
    expect(row?.name).toBe('build');
    expect(row?.session).toBe('aaaaaaaa01');
  });

  it('rejects an online id from another session', async () => {
    expect((await register({ name: 'shared', session: 'session-one' })).status).toBe(200);
    const again = await register({ name: 'shared', session: 'session-one' });
    expect(again.status).toBe(200);

    const other = await register({ name: 'shared', session: 'session-two', hostname: 'host-b' });
    expect(other.status).toBe(409);
    expect(other.body.code).toBe('worker_id_in_use');
    expect(other.body.field).toBe('worker_id');
    expect(other.body.error).toContain('"host-a"');
    expect((await workerRow('shared'))?.session).toBe('session-one');
  });

  it('accepts an id whose worker went offline', async () => {
    expect((await register({ name: 'handover', session: 'session-old' })).status).toBe(200);
    const offline = await post('/api/agent/workers/handover/status', { status: 'offline' });
    expect(offline.status).toBe(200);
    const next = await register({ name: 'handover', session: 'session-new' });
    expect(next.status).toBe(200);
    expect((await workerRow('handover'))?.session).toBe('session-new');
  });

  it('rejects a claim from a draining worker', async () => {
    expect((await register({ name: 'drainer', session: 'session-d1' })).status).toBe(200);
    await post('/api/agent/workers/drainer/status', { status: 'draining' });
    const claim = await post('/api/agent/workers/drainer/claim', { max: 1, wait_seconds: 5 });
    expect(claim.status).toBe(409);
    expect(claim.body.code).toBe('worker_not_online');
    expect(claim.body.status).toBe('draining');
    expect(claim.body.error).toContain('register it again');
  });

  it('refreshes the heartbeat on each claim', async () => {
    expect((await register({ name: 'claimer', session: 'session-c1' })).status).toBe(200);
    const before = (await workerRow('claimer'))!.last_heartbeat_at;
    await new Promise((resolve) => setTimeout(resolve, 20));
    const claim = await post('/api/agent/workers/claimer/claim', { max: 1, wait_seconds: 0 });
    expect(claim.status).toBe(200);
    expect(claim.body.tasks).toEqual([]);
    expect((await workerRow('claimer'))!.last_heartbeat_at > before).toBe(true);
  });

  it('ends a waiting claim on offline', async () => {
    expect((await register({ name: 'waiter', session: 'session-w1' })).status).toBe(200);
    const started = Date.now();
    const claim = post('/api/agent/workers/waiter/claim', { max: 1, wait_seconds: 20 });
    await waitFor(() => executionServices(server.context).dispatcher.waiting === 1);

    // A plain SQLite connection plays another Slipway process on the same file, so the API
    // process learns of the change only through the database.
    const other = new Database(server.context.store.path);
    try {
      other.prepare(`UPDATE workers SET status = 'offline' WHERE id = 'waiter'`).run();
    } finally {
      other.close();
    }
    const answer = await claim;
    expect(answer.status).toBe(409);
    expect(answer.body.code).toBe('worker_not_online');
    expect(answer.body.status).toBe('offline');
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('gives a draining waiter no task', async () => {
    expect((await register({ name: 'drained', session: 'session-w2' })).status).toBe(200);
    const claim = post('/api/agent/workers/drained/claim', { max: 1, wait_seconds: 20 });
    await waitFor(() => executionServices(server.context).dispatcher.waiting === 1);

    const other = new Database(server.context.store.path);
    try {
      other.prepare(`UPDATE workers SET status = 'draining' WHERE id = 'drained'`).run();
    } finally {
      other.close();
    }
    const triggered = await server.request('POST', '/api/trigger/quick', {
      token: server.adminToken,
      body: { commit: 'abcdef1' },
    });
    expect(triggered.status).toBe(201);
    const answer = await claim;
    expect(answer.status).toBe(409);
    expect(answer.body.status).toBe('draining');
    const tasks = await server.context.store.db
      .selectFrom('tasks')
      .select(['status', 'worker_id'])
      .where('job_id', '=', triggered.body.job_id as string)
      .execute();
    expect(tasks).toEqual([{ status: 'queued', worker_id: null }]);
  });
});

describe('claims from a replaced session', () => {
  let server: TestServer;
  let agent: string;

  beforeAll(async () => {
    server = await startTestServer({ SLIPWAY_LEASE_SECONDS: '30' });
    agent = await server.token('agent', 'session-test');
  });

  afterAll(async () => {
    await server?.close();
  });

  const post = (path: string, body: unknown) =>
    server.request('POST', path, { token: agent, body });
  const register = (session: string) =>
    post('/api/agent/workers', {
      name: 'moved',
      session,
      hostname: 'host-a',
      executors: ['local'],
      capacity: 1,
    });
  /**
   * Ages the worker's heartbeat past the live window, as if its process had frozen. The change
   * goes through the server's own connection, which the dispatcher does not watch, so only the
   * registration that follows can end a waiting claim.
   */
  const freeze = () =>
    server.context.store.write((trx) =>
      trx
        .updateTable('workers')
        .set({ last_heartbeat_at: '2000-01-01T00:00:00.000Z' })
        .where('id', '=', 'moved')
        .execute(),
    );

  it('rejects the old session', async () => {
    expect((await register('session-old-1')).status).toBe(200);
    await freeze();
    expect((await register('session-new-1')).status).toBe(200);

    const old = await post('/api/agent/workers/moved/claim', {
      max: 1,
      wait_seconds: 0,
      session: 'session-old-1',
    });
    expect(old.status).toBe(409);
    expect(old.body.code).toBe('worker_session_replaced');
    expect(old.body.field).toBe('session');
    expect(old.body.error).toContain('register again');

    const current = await post('/api/agent/workers/moved/claim', {
      max: 1,
      wait_seconds: 0,
      session: 'session-new-1',
    });
    expect(current.status).toBe(200);
    const unnamed = await post('/api/agent/workers/moved/claim', { max: 1, wait_seconds: 0 });
    expect(unnamed.status).toBe(200);
  });

  it('ends a waiting claim on takeover', async () => {
    await freeze();
    expect((await register('session-old-2')).status).toBe(200);
    const started = Date.now();
    const claim = post('/api/agent/workers/moved/claim', {
      max: 1,
      wait_seconds: 20,
      session: 'session-old-2',
    });
    await waitFor(() => executionServices(server.context).dispatcher.waiting === 1);
    await freeze();
    expect((await register('session-new-2')).status).toBe(200);

    const answer = await claim;
    expect(answer.status).toBe(409);
    expect(answer.body.code).toBe('worker_session_replaced');
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('rejects the old session of a drained id', async () => {
    await freeze();
    expect((await register('session-old-3')).status).toBe(200);
    await freeze();
    expect((await register('session-new-3')).status).toBe(200);
    const drained = await post('/api/agent/workers/moved/status', { status: 'draining' });
    expect(drained.status).toBe(200);
    await freeze();

    const old = await post('/api/agent/workers/moved/claim', {
      max: 1,
      wait_seconds: 0,
      session: 'session-old-3',
    });
    expect(old.status).toBe(409);
    expect(old.body.code).toBe('worker_session_replaced');
    // Only the process that owns the id may keep its row looking alive.
    const row = await server.context.store.db
      .selectFrom('workers')
      .select('last_heartbeat_at')
      .where('id', '=', 'moved')
      .executeTakeFirstOrThrow();
    expect(row.last_heartbeat_at).toBe('2000-01-01T00:00:00.000Z');
  });
});

async function waitFor(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
