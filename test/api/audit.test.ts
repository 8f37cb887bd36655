import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countRows } from '../support/rows.js';
import { startTestServer, type TestServer } from '../support/server.js';

describe('audit log', () => {
  let server: TestServer;
  let bot: string;
  let agent: string;
  let sequence = 0;

  const auditRows = (requestId: string) =>
    server.context.store.db
      .selectFrom('audit_log')
      .selectAll()
      .where('request_id', '=', requestId)
      .orderBy('id')
      .execute();

  /** Sends a request with a fresh X-Request-Id and returns the response and that id. */
  async function send(method: string, path: string, token: string, body?: unknown) {
    const requestId = `test-req-${++sequence}`;
    const response = await server.request(method, path, {
      token,
      body,
      headers: { 'x-request-id': requestId },
    });
    return { response, requestId };
  }

  beforeAll(async () => {
    server = await startTestServer();
    bot = await server.token('trigger', 'github-actions');
    agent = await server.token('agent', 'worker-7');
  });
  afterAll(async () => {
    await server.close();
  });

  it('trigger writes job_triggered with actor, request id and source', async () => {
    const { response, requestId } = await send('POST', '/api/trigger/ci', bot, {
      commit: 'abc1234',
      branch: 'audit/trigger',
      github_run_id: 99,
    });
    expect(response.status).toBe(201);
    expect(response.headers.get('x-request-id')).toBe(requestId);
    const rows = await auditRows(requestId);
    expect(rows).toHaveLength(1);
    const row = rows[0]!;
    expect(row.action).toBe('job_triggered');
    expect(row.actor).toBe('github-actions');
    expect(row.job_id).toBe(response.body.job_id);
    expect(row.source).toBe('127.0.0.1');
    expect(row.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(JSON.parse(row.details)).toMatchObject({
      type: 'ci',
      status: 'queued',
      commit: 'abc1234',
      branch: 'audit/trigger',
      tasks: 1,
      github_run_id: '99',
      github_run_attempt: 1,
    });
  });

  it('cancel, retry and PATCH status each write their rows', async () => {
    const created = await send('POST', '/api/trigger/ci', bot, {
      commit: 'abc1235',
      branch: 'audit/cancel',
    });
    const id = created.response.body.job_id as string;

    const cancel = await send('POST', `/api/job/${id}/cancel`, bot, { reason: 'not needed' });
    expect(cancel.response.status).toBe(202);
    const cancelRows = await auditRows(cancel.requestId);
    expect(cancelRows.map((row) => row.action)).toEqual(['job_cancelled', 'job_finished']);
    expect(cancelRows.every((row) => row.actor === 'github-actions' && row.job_id === id)).toBe(
      true,
    );
    expect(JSON.parse(cancelRows[0]!.details)).toMatchObject({
      reason: 'not needed',
      previous_status: 'queued',
    });

    const retry = await send('POST', `/api/job/${id}/retry`, bot);
    expect(retry.response.status).toBe(201);
    const retryRows = await auditRows(retry.requestId);
    expect(retryRows).toHaveLength(1);
    expect(retryRows[0]!.action).toBe('job_retried');
    expect(JSON.parse(retryRows[0]!.details)).toEqual({
      attempt: 2,
      previous_status: 'cancelled',
      status: 'queued',
    });

    const running = await send('PATCH', `/api/job/${id}/status`, agent, { status: 'running' });
    expect(running.response.status).toBe(200);
    const runningRows = await auditRows(running.requestId);
    expect(runningRows).toHaveLength(1);
    expect(runningRows[0]).toMatchObject({
      action: 'job_status_updated',
      actor: 'worker-7',
      job_id: id,
      source: '127.0.0.1',
    });
    expect(JSON.parse(runningRows[0]!.details)).toEqual({
      from: 'queued',
      to: 'running',
      reason: null,
    });

    const failed = await send('PATCH', `/api/job/${id}/status`, agent, {
      status: 'failure',
      reason: 'exit 2',
    });
    const failedRows = await auditRows(failed.requestId);
    expect(failedRows.map((row) => row.action)).toEqual(['job_status_updated', 'job_finished']);
    expect(JSON.parse(failedRows[1]!.details)).toMatchObject({ status: 'failure', attempt: 2 });
  });

  it('an invalid X-Request-Id is replaced by a generated one', async () => {
    const response = await server.request('POST', '/api/trigger/ci', {
      token: bot,
      body: { commit: 'abc1236', branch: 'audit/request-id' },
      headers: { 'x-request-id': 'has spaces and ; semicolons' },
    });
    expect(response.status).toBe(201);
    const generated = response.headers.get('x-request-id')!;
    expect(generated).toMatch(/^[0-9a-f-]{36}$/);
    expect(await auditRows(generated)).toHaveLength(1);
  });

  it('reads write no audit rows', async () => {
    const before = await countRows(server.context.store.db);
    await send('GET', '/api/admin/jobs', bot);
    await send('GET', '/api/state', bot);
    await send('GET', '/api/admin/audit-log', server.adminToken);
    expect((await countRows(server.context.store.db)).audit_log).toBe(before.audit_log);
  });

  it('failed requests write no audit rows', async () => {
    const created = await send('POST', '/api/trigger/ci', bot, {
      commit: 'abc1237',
      branch: 'audit/failures',
    });
    const id = created.response.body.job_id as string;
    await server.request('POST', '/api/trigger/ci', {
      token: bot,
      body: { commit: 'abc1237', branch: 'audit/keyed' },
      headers: { 'idempotency-key': 'audit-key' },
    });
    const failures: Array<[string, string, string, unknown, number]> = [
      ['PATCH', `/api/job/${id}/status`, agent, { status: 'success' }, 409],
      ['POST', `/api/job/${id}/retry`, bot, undefined, 409],
      ['POST', '/api/job/ci-00000000/cancel', bot, undefined, 404],
      ['POST', '/api/trigger/ci', bot, { commit: 'nothex!' }, 400],
      ['POST', '/api/trigger/ci', agent, { commit: 'abc1234' }, 403],
    ];
    for (const [method, path, token, body, status] of failures) {
      const before = await countRows(server.context.store.db);
      const { response, requestId } = await send(method, path, token, body);
      expect(response.status, `${method} ${path}`).toBe(status);
      expect(await auditRows(requestId)).toEqual([]);
      expect(await countRows(server.context.store.db)).toEqual(before);
    }
    const reused = await server.request('POST', '/api/trigger/ci', {
      token: bot,
      body: { commit: 'abc1238', branch: 'audit/keyed' },
      headers: { 'idempotency-key': 'audit-key', 'x-request-id': 'reused-key' },
    });
    expect(reused.status).toBe(422);
    expect(await auditRows('reused-key')).toEqual([]);
  });

  it('a failed audit insert rolls back the change it records', async () => {
    const db = server.context.store.db;
    await server.context.store.write((trx) =>
      sql`CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log
          BEGIN SELECT RAISE(ABORT, 'audit log unavailable'); END`.execute(trx),
    );
    try {
      const created = await send('POST', '/api/trigger/ci', bot, {
        commit: 'abc1239',
        branch: 'audit/refused-1',
      });
      const before = await countRows(db);
      const { response, requestId } = await send('POST', '/api/trigger/ci', bot, {
        commit: 'abc1240',
        branch: 'audit/refused-2',
      });
      expect(response.status).toBe(500);
      expect(response.body.code).toBe('internal_error');
      expect(response.body.request_id).toBe(requestId);
      expect(await countRows(db)).toEqual(before);
      const jobs = await db.selectFrom('jobs').select('id').where('commit_sha', '=', 'abc1240');
      expect(await jobs.execute()).toEqual([]);

      // The first trigger failed the same way, so no job exists for it either.
      expect(created.response.status).toBe(500);
      const cancel = await send('POST', `/api/job/${await anyQueuedJob()}/cancel`, bot);
      expect(cancel.response.status).toBe(500);
      expect(await countRows(db)).toEqual(before);
    } finally {
      await server.context.store.write((trx) => sql`DROP TRIGGER refuse_audit`.execute(trx));
    }
    const after = await send('POST', '/api/trigger/ci', bot, {
      commit: 'abc1241',
      branch: 'audit/after',
    });
    expect(after.response.status).toBe(201);
  });

  async function anyQueuedJob(): Promise<string> {
    const row = await server.context.store.db
      .selectFrom('jobs')
      .select('id')
      .where('status', '=', 'queued')
      .executeTakeFirstOrThrow();
    return row.id;
  }
});

describe('audit log of a cancel', () => {
  let server: TestServer;
  let agent: string;

  beforeAll(async () => {
    server = await startTestServer();
    agent = await server.token('agent', 'audit-worker');
    const registered = await server.request('POST', '/api/agent/workers', {
      token: agent,
      body: { name: 'audit-worker', hostname: 'host', executors: ['docker'], capacity: 4 },
    });
    expect(registered.status, registered.text).toBe(200);
  });
  afterAll(async () => {
    await server.close();
  });

  // job_cancelled records the request and job_finished the job's end, which every way of
  // ending a job records. Here they differ: the failed task makes the job end failure.
  it('records the request and the end apart', async () => {
    const created = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit: 'abc1242', branch: 'audit/partial', python_versions: ['3.11', '3.12'] },
    });
    expect(created.status, created.text).toBe(201);
    const id = created.body.job_id as string;
    const claim = await server.request('POST', '/api/agent/workers/audit-worker/claim', {
      token: agent,
      body: { max: 1, wait_seconds: 0 },
    });
    const task = claim.body.tasks[0];
    expect(task.job.id).toBe(id);
    const finish = await server.request('POST', `/api/agent/tasks/${task.task_id}/finish`, {
      token: agent,
      body: {
        worker_id: 'audit-worker',
        attempt: 1,
        status: 'failure',
        exit_code: 1,
        duration_ms: 5,
      },
    });
    expect(finish.status, finish.text).toBe(200);

    const cancel = await server.request('POST', `/api/job/${id}/cancel`, {
      token: server.adminToken,
      body: { reason: 'not needed' },
      headers: { 'x-request-id': 'cancel-partial' },
    });
    expect(cancel.status, cancel.text).toBe(202);
    expect(cancel.body.status).toBe('failure');
    const rows = await server.context.store.db
      .selectFrom('audit_log')
      .selectAll()
      .where('request_id', '=', 'cancel-partial')
      .orderBy('id')
      .execute();
    expect(rows.map((row) => row.action)).toEqual(['job_cancelled', 'job_finished']);
    expect(JSON.parse(rows[0]!.details)).toEqual({
      reason: 'not needed',
      running_tasks_signalled: 0,
      previous_status: 'running',
    });
    expect(JSON.parse(rows[1]!.details)).toEqual({
      status: 'failure',
      attempt: 1,
      reason: 'not needed',
    });
  });
});
