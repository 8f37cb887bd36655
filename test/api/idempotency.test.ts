import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countRows } from '../support/rows.js';
import { startTestServer, type TestServer } from '../support/server.js';

const RACERS = 24;

describe('idempotent triggers', () => {
  let server: TestServer;
  let token: string;

  const trigger = (type: string, body: Record<string, unknown>, key?: string) =>
    server.request('POST', `/api/trigger/${type}`, {
      token,
      body,
      headers: key === undefined ? {} : { 'idempotency-key': key },
    });
  const jobsWhere = (column: 'idempotency_key' | 'github_run_id', value: string) =>
    server.context.store.db.selectFrom('jobs').selectAll().where(column, '=', value).execute();

  beforeAll(async () => {
    server = await startTestServer();
    token = await server.token('trigger', 'workflow');
  });
  afterAll(async () => {
    await server.close();
  });

  it('same Idempotency-Key returns the first job with 200', async () => {
    const body = { commit: 'abc1234', branch: 'idem-1', params: { b: 2, a: 1 } };
    const first = await trigger('ci', body, 'key-1');
    expect(first.status).toBe(201);
    const before = await countRows(server.context.store.db);
    // Same request with its params in another order.
    const again = await trigger('ci', { ...body, params: { a: 1, b: 2 } }, 'key-1');
    expect(again.status).toBe(200);
    expect(again.body).toEqual(first.body);
    expect(await countRows(server.context.store.db)).toEqual(before);
    expect(await jobsWhere('idempotency_key', 'key-1')).toHaveLength(1);
  });

  it('same key with a different body answers 422', async () => {
    const first = await trigger('ci', { commit: 'abc1234', branch: 'idem-2' }, 'key-2');
    expect(first.status).toBe(201);
    const before = await countRows(server.context.store.db);
    for (const [type, body] of [
      ['ci', { commit: 'abc9999', branch: 'idem-2' }],
      ['ci', { commit: 'abc1234', branch: 'idem-other' }],
      ['integration-tests', { commit: 'abc1234', branch: 'idem-2' }],
    ] as const) {
      const reused = await trigger(type, body, 'key-2');
      expect(reused.status).toBe(422);
      expect(reused.body.code).toBe('idempotency_key_reused');
      expect(reused.body.field).toBe('idempotency-key');
      expect(reused.body.rule).toBe('unique');
      expect(reused.body.job_id).toBe(first.body.job_id);
    }
    expect(await countRows(server.context.store.db)).toEqual(before);
  });

  it('scopes a key to its token', async () => {
    const other = await server.token('trigger', 'other-workflow');
    const body = { commit: 'abc1234', branch: 'idem-scope' };
    const send = (as: string, sent: Record<string, unknown>) =>
      server.request('POST', '/api/trigger/ci', {
        token: as,
        body: sent,
        headers: { 'idempotency-key': 'key-shared' },
      });

    const first = await send(token, body);
    expect(first.status).toBe(201);
    const second = await send(other, body);
    expect(second.status).toBe(201);
    expect(second.body.job_id).not.toBe(first.body.job_id);

    const repeated = await send(other, body);
    expect(repeated.status).toBe(200);
    expect(repeated.body.job_id).toBe(second.body.job_id);
    const changed = await send(other, { ...body, commit: 'abc9999' });
    expect(changed.status).toBe(422);
    expect(changed.body.job_id).toBe(second.body.job_id);

    const jobs = await jobsWhere('idempotency_key', 'key-shared');
    expect(jobs.map((job) => job.requested_by).sort()).toEqual(['other-workflow', 'workflow']);
  });

  it('same github_run_id and attempt returns the first job', async () => {
    const body = { commit: 'abc1234', branch: 'run-1', github_run_id: '5001' };
    const first = await trigger('integration-tests', body);
    expect(first.status).toBe(201);
    const again = await trigger('integration-tests', { ...body, github_run_attempt: 1 });
    expect(again.status).toBe(200);
    expect(again.body.job_id).toBe(first.body.job_id);
    const numeric = await trigger('integration-tests', { ...body, github_run_id: 5001 });
    expect(numeric.status).toBe(200);
    expect(numeric.body.job_id).toBe(first.body.job_id);

    const secondAttempt = await trigger('integration-tests', { ...body, github_run_attempt: '2' });
    expect(secondAttempt.status).toBe(201);
    expect(secondAttempt.body.job_id).not.toBe(first.body.job_id);
    const otherType = await trigger('deploy', body);
    expect(otherType.status).toBe(201);
    expect(await jobsWhere('github_run_id', '5001')).toHaveLength(3);
  });

  it('records a key sent with a known run', async () => {
    const body = { commit: 'abc1234', branch: 'idem-run-key', github_run_id: 9090 };
    const first = await trigger('ci', body);
    expect(first.status).toBe(201);
    const keyed = await trigger('ci', body, 'key-run');
    expect(keyed.status).toBe(200);
    expect(keyed.body.job_id).toBe(first.body.job_id);

    const other = await trigger('ci', { commit: 'abc9999', branch: 'idem-run-key' }, 'key-run');
    expect(other.status).toBe(422);
    expect(other.body.code).toBe('idempotency_key_reused');
    expect(other.body.job_id).toBe(first.body.job_id);
    const again = await trigger('ci', { commit: 'abc1234', branch: 'idem-run-key' }, 'key-run');
    expect(again.status).toBe(422);
  });

  it('records a second key of a run whose job already holds one', async () => {
    const body = { commit: 'abc1234', branch: 'idem-run-two-keys', github_run_id: 9191 };
    const first = await trigger('ci', body, 'key-run-first');
    expect(first.status).toBe(201);
    const second = await trigger('ci', body, 'key-run-second');
    expect(second.status).toBe(200);
    expect(second.body.job_id).toBe(first.body.job_id);

    const repeated = await trigger('ci', body, 'key-run-second');
    expect(repeated.status).toBe(200);
    expect(repeated.body.job_id).toBe(first.body.job_id);
    const before = await countRows(server.context.store.db);
    const other = await trigger('ci', { commit: 'abc9999' }, 'key-run-second');
    expect(other.status).toBe(422);
    expect(other.body.job_id).toBe(first.body.job_id);
    expect(await countRows(server.context.store.db)).toEqual(before);
  });

  it("records a key sent with another token's run", async () => {
    const other = await server.token('trigger', 'run-owner');
    const body = { commit: 'abc1234', branch: 'idem-run-owner', github_run_id: 9292 };
    const first = await server.request('POST', '/api/trigger/ci', { token: other, body });
    expect(first.status).toBe(201);
    const keyed = await trigger('ci', body, 'key-run-owner');
    expect(keyed.status).toBe(200);
    expect(keyed.body.job_id).toBe(first.body.job_id);

    const changed = await trigger('ci', { commit: 'abc9999' }, 'key-run-owner');
    expect(changed.status).toBe(422);
    expect(changed.body.job_id).toBe(first.body.job_id);
    const jobs = await jobsWhere('github_run_id', '9292');
    expect(jobs.map((job) => [job.requested_by, job.idempotency_key])).toEqual([
      ['run-owner', null],
    ]);
  });

  it('repeats a key first sent with the attempt the run left out', async () => {
    const body = { commit: 'abc1234', branch: 'idem-run-attempt', github_run_id: 9393 };
    const first = await trigger('ci', body);
    expect(first.status).toBe(201);
    const withAttempt = { ...body, github_run_attempt: 1 };
    const keyed = await trigger('ci', withAttempt, 'key-run-attempt');
    expect(keyed.status).toBe(200);
    const repeated = await trigger('ci', withAttempt, 'key-run-attempt');
    expect(repeated.status).toBe(200);
    expect(repeated.body.job_id).toBe(first.body.job_id);
  });

  it('repeats a key with the attempt given or left out', async () => {
    const body = { commit: 'abc1234', branch: 'idem-key-attempt', github_run_id: 9595 };
    const first = await trigger('ci', body, 'key-attempt');
    expect(first.status).toBe(201);
    const withAttempt = await trigger('ci', { ...body, github_run_attempt: 1 }, 'key-attempt');
    expect(withAttempt.status).toBe(200);
    expect(withAttempt.body.job_id).toBe(first.body.job_id);
    const second = await trigger('ci', { ...body, github_run_attempt: 2 }, 'key-attempt');
    expect(second.status).toBe(422);
  });

  it('deletes recorded keys with their job', async () => {
    const body = { commit: 'abc1234', branch: 'idem-run-delete', github_run_id: 9494 };
    const first = await trigger('ci', body, 'key-delete-first');
    await trigger('ci', body, 'key-delete-second');
    const keys = () =>
      server.context.store.db
        .selectFrom('idempotency_keys')
        .select('idempotency_key')
        .where('job_id', '=', first.body.job_id as string)
        .execute();
    expect(await keys()).toEqual([{ idempotency_key: 'key-delete-second' }]);
    await server.context.store.write((trx) =>
      trx
        .deleteFrom('jobs')
        .where('id', '=', first.body.job_id as string)
        .execute(),
    );
    expect(await keys()).toEqual([]);
  });

  it('reads run ids with leading zeros as the same run', async () => {
    const body = { commit: 'abc1234', branch: 'idem-zeros' };
    const first = await trigger('ci', { ...body, github_run_id: 7070 });
    expect(first.status).toBe(201);
    for (const runId of ['7070', '0007070']) {
      const again = await trigger('ci', { ...body, github_run_id: runId });
      expect(again.status).toBe(200);
      expect(again.body.job_id).toBe(first.body.job_id);
    }
    expect(await jobsWhere('github_run_id', '7070')).toHaveLength(1);
    expect(await jobsWhere('github_run_id', '0007070')).toHaveLength(0);
  });

  it('rejects a different request in one run', async () => {
    const body = { commit: 'abc1234', branch: 'run-2', github_run_id: '5002' };
    const first = await trigger('integration-tests', body);
    expect(first.status).toBe(201);
    const before = await countRows(server.context.store.db);

    const changes = [
      { commit: 'def5678' },
      { branch: 'run-3' },
      { params: { target: 'production' } },
      { github_run_attempt: 1, params: { target: 'production' } },
    ];
    for (const change of changes) {
      const other = await trigger('integration-tests', { ...body, ...change });
      expect(other.status, JSON.stringify(change)).toBe(422);
      expect(other.body.code).toBe('github_run_reused');
      expect(other.body.field).toBe('github_run_id');
      expect(other.body.job_id).toBe(first.body.job_id);
      expect(other.body.error).toContain('different commit');
    }
    expect(await countRows(server.context.store.db)).toEqual(before);
    expect(await jobsWhere('github_run_id', '5002')).toHaveLength(1);
  });

  it(`${RACERS} racing requests with one key create one job`, async () => {
    const before = (await countRows(server.context.store.db)).jobs;
    const body = { commit: 'def5678', branch: 'race-key', python_versions: ['3.11', '3.12'] };
    const responses = await Promise.all(
      Array.from({ length: RACERS }, () => trigger('ci', body, 'race-key')),
    );
    const statuses = responses.map((response) => response.status).sort();
    expect(statuses.filter((status) => status === 201)).toHaveLength(1);
    expect(statuses.filter((status) => status === 200)).toHaveLength(RACERS - 1);
    expect(new Set(responses.map((response) => response.body.job_id)).size).toBe(1);
    expect(await jobsWhere('idempotency_key', 'race-key')).toHaveLength(1);
    const after = await countRows(server.context.store.db);
    expect(after.jobs).toBe(before + 1);
  });

  it(`${RACERS} racing requests with one GitHub run create one job`, async () => {
    const body = {
      commit: 'def5679',
      branch: 'race-run',
      github_run_id: '6001',
      github_run_attempt: 3,
    };
    const responses = await Promise.all(
      Array.from({ length: RACERS }, (_, index) =>
        // Each retry carries its own key, as a client that builds a key per attempt would.
        trigger('ci', body, index % 2 === 0 ? undefined : `run-retry-${index}`),
      ),
    );
    expect(responses.filter((response) => response.status === 201)).toHaveLength(1);
    expect(responses.filter((response) => response.status === 200)).toHaveLength(RACERS - 1);
    expect(new Set(responses.map((response) => response.body.job_id)).size).toBe(1);
    expect(await jobsWhere('github_run_id', '6001')).toHaveLength(1);
  });

  it('racing keys with different bodies: one job, the rest 422', async () => {
    const responses = await Promise.all(
      Array.from({ length: RACERS }, (_, index) =>
        trigger(
          'integration-tests',
          { commit: `abc${String(index).padStart(4, '0')}` },
          'race-conflict',
        ),
      ),
    );
    expect(responses.filter((response) => response.status === 201)).toHaveLength(1);
    expect(responses.filter((response) => response.status === 422)).toHaveLength(RACERS - 1);
    expect(await jobsWhere('idempotency_key', 'race-conflict')).toHaveLength(1);
  });
});
