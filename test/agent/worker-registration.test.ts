import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { executionServices } from '../../src/dispatch/services.js';
import { revokeToken } from '../../src/store/tokens.js';
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

  it('rejects a host name with control characters', async () => {
    const hostnames = [
      'host\u0000a',
      'host\na',
      'host\u007fa',
      'host\u0085a',
      'host\u009b31ma',
      'host\u2028a',
      'host\u2029a',
    ];
    for (const hostname of hostnames) {
      const answer = await register({ name: 'control-chars', hostname });
      expect(answer.status, JSON.stringify(hostname)).toBe(400);
      expect(answer.body.code).toBe('validation_failed');
      expect(answer.body.field).toBe('hostname');
      expect(answer.body.rule).toBe('pattern');
      expect(answer.body.error).toBe(
        'hostname must not contain control characters (C0, DEL and C1) or line or paragraph ' +
          'separators (U+2028, U+2029)',
      );
    }
    expect(await workerRow('control-chars')).toBeUndefined();
  });

  it('rejects labels and versions with control characters', async () => {
    const cases = [
      { body: { labels: ['gpu', 'x\u001b[2Jy'] }, field: 'labels.1' },
      { body: { labels: ['line\nbreak'] }, field: 'labels.0' },
      { body: { version: '1.0\u2028fake' }, field: 'version' },
      { body: { version: '1.0\u009b31m' }, field: 'version' },
    ];
    for (const { body, field } of cases) {
      const answer = await register({ name: 'control-labels', hostname: 'host-l', ...body });
      expect(answer.status, JSON.stringify(body)).toBe(400);
      expect(answer.body.field).toBe(field);
      expect(answer.body.rule).toBe('pattern');
    }
    expect(await workerRow('control-labels')).toBeUndefined();
  });

  it('accepts an empty label and version', async () => {
    const answer = await register({ name: 'empty-label', labels: [''], version: '' });
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    const row = await workerRow('empty-label');
    expect(row?.labels).toBe('[""]');
    expect(row?.version).toBe('');
  });

  it('rejects an empty host name by its length', async () => {
    const answer = await register({ name: 'empty-host', hostname: '' });
    expect(answer.status).toBe(400);
    expect(answer.body.field).toBe('hostname');
    expect(answer.body.rule).toBe('minLength');
    expect(answer.body.error).not.toContain('control characters');
    expect(await workerRow('empty-host')).toBeUndefined();
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

  it('keeps an offline worker offline until it registers', async () => {
    expect((await register({ name: 'gone', session: 'session-g1' })).status).toBe(200);
    expect((await post('/api/agent/workers/gone/status', { status: 'offline' })).status).toBe(200);
    for (const status of ['online', 'draining']) {
      const back = await post('/api/agent/workers/gone/status', { status });
      expect(back.status, status).toBe(409);
      expect(back.body.code).toBe('invalid_transition');
      expect(back.body.error).toContain('registers again');
    }
    expect((await workerRow('gone'))?.status).toBe('offline');
  });

  it('audits a worker status only when it changes', async () => {
    expect((await register({ name: 'steady', session: 'session-s1' })).status).toBe(200);
    const audited = async () =>
      (
        await server.context.store.db
          .selectFrom('audit_log')
          .select('details')
          .where('action', '=', 'worker_status_changed')
          .where('details', 'like', '%"steady"%')
          .execute()
      ).length;
    for (let index = 0; index < 3; index += 1) {
      expect((await post('/api/agent/workers/steady/status', { status: 'draining' })).status).toBe(
        200,
      );
    }
    expect(await audited()).toBe(1);
    expect((await post('/api/agent/workers/steady/status', { status: 'online' })).status).toBe(200);
    expect(await audited()).toBe(2);
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

describe('worker ownership by token', () => {
  let server: TestServer;
  let owner: string;
  let other: string;

  beforeAll(async () => {
    const pipelines = writePipelineFile(`
pipelines:
  quick:
    executor: local
    steps:
      - run: echo quick
`);
    server = await startTestServer({ SLIPWAY_LEASE_SECONDS: '30', SLIPWAY_PIPELINES: pipelines });
    owner = await server.token('agent', 'agent-owner');
    other = await server.token('agent', 'agent-other');
  });

  afterAll(async () => {
    await server?.close();
  });

  const post = (token: string, path: string, body: unknown) =>
    server.request('POST', path, { token, body });
  const register = (token: string, id: string, session: string) =>
    post(token, '/api/agent/workers', {
      name: id,
      session,
      hostname: 'host-a',
      executors: ['local'],
      capacity: 1,
    });
  const workerRow = (id: string) =>
    server.context.store.db
      .selectFrom('workers')
      .selectAll()
      .where('id', '=', id)
      .executeTakeFirstOrThrow();

  it('keeps a worker id to the token that registered it', async () => {
    expect((await register(owner, 'kept', 'session-k1')).status).toBe(200);

    const drained = await post(other, '/api/agent/workers/kept/status', { status: 'draining' });
    expect(drained.status).toBe(403);
    expect(drained.body.code).toBe('worker_owned');
    expect(drained.body.field).toBe('Authorization');
    expect(drained.body.error).toContain('"agent-owner"');
    expect(drained.body.owner).toBe('agent-owner');
    const claim = await post(other, '/api/agent/workers/kept/claim', { max: 1, wait_seconds: 0 });
    expect(claim.status).toBe(403);
    expect((await workerRow('kept')).status).toBe('online');
    const own = await post(owner, '/api/agent/workers/kept/claim', { max: 1, wait_seconds: 0 });
    expect(own.status).toBe(200);

    // An operator's admin token acts for every worker.
    const byAdmin = await post(server.adminToken, '/api/agent/workers/kept/status', {
      status: 'draining',
    });
    expect(byAdmin.status).toBe(200);
  });

  it('moves a stopped id to the next token', async () => {
    expect((await register(owner, 'moved-on', 'session-m1')).status).toBe(200);
    const stopped = await post(owner, '/api/agent/workers/moved-on/status', { status: 'offline' });
    expect(stopped.status).toBe(200);

    const reregistered = await register(other, 'moved-on', 'session-m2');
    expect(reregistered.status).toBe(200);
    const drained = await post(owner, '/api/agent/workers/moved-on/status', {
      status: 'draining',
    });
    expect(drained.status).toBe(403);
    expect(drained.body.owner).toBe('agent-other');
  });

  it('takes task reports only from the owning token', async () => {
    expect((await register(owner, 'runner', 'session-r1')).status).toBe(200);
    const triggered = await post(server.adminToken, '/api/trigger/quick', { commit: 'abcdef2' });
    expect(triggered.status).toBe(201);
    const claim = await post(owner, '/api/agent/workers/runner/claim', {
      max: 1,
      wait_seconds: 5,
    });
    expect(claim.status).toBe(200);
    expect(claim.body.tasks).toHaveLength(1);
    const task = claim.body.tasks[0] as { task_id: string; attempt: number };
    const lease = { worker_id: 'runner', attempt: task.attempt };

    const paths = ['heartbeat', 'logs', 'finish', 'release'];
    const bodies = [
      lease,
      { ...lease, offset: 0, data: 'forged output\n' },
      { ...lease, status: 'success', exit_code: 0, duration_ms: 5 },
      { ...lease, reason: 'forged release' },
    ];
    for (const [index, path] of paths.entries()) {
      const answer = await post(other, `/api/agent/tasks/${task.task_id}/${path}`, bodies[index]);
      expect(answer.status, path).toBe(403);
      expect(answer.body.code, path).toBe('worker_owned');
    }
    const row = await server.context.store.db
      .selectFrom('tasks')
      .select(['status', 'worker_id'])
      .where('id', '=', task.task_id)
      .executeTakeFirstOrThrow();
    expect(row).toEqual({ status: 'running', worker_id: 'runner' });

    const finished = await post(owner, `/api/agent/tasks/${task.task_id}/finish`, {
      ...lease,
      status: 'success',
      exit_code: 0,
      duration_ms: 5,
    });
    expect(finished.status).toBe(200);
    expect(finished.body.status).toBe('success');
  });

  it('takes job status updates only from the owning token', async () => {
    expect((await register(owner, 'patched', 'session-p1')).status).toBe(200);
    const triggered = await post(server.adminToken, '/api/trigger/quick', { commit: 'abcdef3' });
    expect(triggered.status).toBe(201);
    const jobId = triggered.body.job_id as string;
    const claim = await post(owner, '/api/agent/workers/patched/claim', {
      max: 1,
      wait_seconds: 5,
    });
    expect(claim.body.tasks).toHaveLength(1);

    const patch = (token: string) =>
      server.request('PATCH', `/api/job/${jobId}/status`, {
        token,
        body: { status: 'success', reason: 'set by hand' },
      });
    const forged = await patch(other);
    expect(forged.status).toBe(403);
    expect(forged.body.code).toBe('worker_owned');
    expect(forged.body.worker_id).toBe('patched');
    const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
    expect(job.body.status).toBe('running');

    const own = await patch(owner);
    expect(own.status).toBe(200);
    expect(own.body.status).toBe('success');
  });

  it('hands the id over once its token is revoked', async () => {
    const revoked = await server.token('agent', 'agent-revoked');
    expect((await register(revoked, 'rotated', 'session-o1')).status).toBe(200);
    const early = await post(other, '/api/agent/workers/rotated/status', { status: 'draining' });
    expect(early.status).toBe(403);

    expect(await revokeToken(server.context.store.db, { name: 'agent-revoked' })).toBe(1);
    const drained = await post(other, '/api/agent/workers/rotated/status', { status: 'draining' });
    expect(drained.status).toBe(200);
    const next = await register(other, 'rotated', 'session-o2');
    expect(next.status).toBe(200);
    const tokenId = await server.context.store.db
      .selectFrom('api_tokens')
      .select('id')
      .where('name', '=', 'agent-other')
      .executeTakeFirstOrThrow();
    expect((await workerRow('rotated')).token_id).toBe(tokenId.id);
  });

  it('frees the id of a deleted token', async () => {
    // `slipway serve` deletes its own agent token when it stops, and SQLite gives the next
    // token the id of the deleted row with the highest id.
    const serveToken = await server.token('agent', 'serve-self');
    expect((await register(serveToken, 'reused', 'session-d1')).status).toBe(200);
    await post(serveToken, '/api/agent/workers/reused/status', { status: 'offline' });
    const { id: deletedId } = await server.context.store.write((trx) =>
      trx
        .deleteFrom('api_tokens')
        .where('name', '=', 'serve-self')
        .returning('id')
        .executeTakeFirstOrThrow(),
    );
    const later = await server.token('agent', 'created-later');
    const laterRow = await server.context.store.db
      .selectFrom('api_tokens')
      .select('id')
      .where('name', '=', 'created-later')
      .executeTakeFirstOrThrow();
    expect(laterRow.id).toBe(deletedId);
    expect((await workerRow('reused')).token_id).toBeNull();

    // The next `slipway serve` registers the id with a token of its own.
    const next = await register(other, 'reused', 'session-d2');
    expect(next.status).toBe(200);
    const drained = await post(later, '/api/agent/workers/reused/status', { status: 'draining' });
    expect(drained.status).toBe(403);
    expect(drained.body.owner).toBe('agent-other');
  });
});

async function waitFor(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
