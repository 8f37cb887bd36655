import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countRows } from '../support/rows.js';
import { writePipelineFile } from '../support/execution.js';
import { startTestServer, type TestServer } from '../support/server.js';

const PIPELINES = `
pipelines:
  deploy:
    executor: local
    steps: [{ name: deploy, run: 'true' }]
  rollback:
    executor: local
    steps: [{ name: rollback, run: 'true' }]
  recovery:
    executor: local
    steps: [{ name: restart, run: 'true' }]
  nightly:
    executor: local
    steps: [{ name: build, run: 'true' }]
  sneaky:
    executor: local
    needs: [nightly-after-rollback]
    trigger_needs: true
    steps: [{ name: build, run: 'true' }]
  nightly-after-rollback:
    executor: local
    needs: [rollback]
    steps: [{ name: build, run: 'true' }]
`;

describe('generic trigger route roles', () => {
  let server: TestServer;
  let trigger: string;

  beforeAll(async () => {
    server = await startTestServer({ SLIPWAY_PIPELINES: writePipelineFile(PIPELINES) });
    trigger = await server.token('trigger', 'ci-bot');
  });
  afterAll(async () => {
    await server.close();
  });

  it.each([
    { type: 'rollback', endpoint: 'POST /api/rollback/execute' },
    { type: 'recovery', endpoint: 'POST /api/recovery/execute' },
  ])('$type needs an admin token', async ({ type, endpoint }) => {
    const before = await countRows(server.context.store.db);
    const response = await server.request('POST', `/api/trigger/${type}`, {
      token: trigger,
      body: { commit: 'abc1234' },
    });
    expect(response.status).toBe(403);
    expect(response.body.code).toBe('forbidden');
    expect(response.body.field).toBe('Authorization');
    expect(response.body.rule).toBe('role');
    expect(response.body.error).toContain(`job type ${type} needs role admin`);
    expect(response.body.error).toContain('token "ci-bot" has role trigger');
    expect(response.body.error).toContain(endpoint);
    expect(await countRows(server.context.store.db)).toEqual(before);

    const admin = await server.request('POST', `/api/trigger/${type}`, {
      token: server.adminToken,
      body: { commit: 'abc1234' },
    });
    expect(admin.status, admin.text).toBe(201);
  });

  it('retry of a rollback needs an admin token', async () => {
    const created = await server.request('POST', '/api/trigger/rollback', {
      token: server.adminToken,
      body: { commit: 'abc5678' },
    });
    expect(created.status, created.text).toBe(201);
    const id = created.body.job_id as string;
    const ended = await server.request('PATCH', `/api/job/${id}/status`, {
      token: server.adminToken,
      body: { status: 'cancelled' },
    });
    expect(ended.status, ended.text).toBe(200);

    const before = await countRows(server.context.store.db);
    const retried = await server.request('POST', `/api/job/${id}/retry`, { token: trigger });
    expect(retried.status).toBe(403);
    expect(retried.body.error).toContain('job type rollback needs role admin');
    expect(await countRows(server.context.store.db)).toEqual(before);
    const admin = await server.request('POST', `/api/job/${id}/retry`, {
      token: server.adminToken,
    });
    expect(admin.status, admin.text).toBe(201);
  });

  it('a type whose triggered needs include rollback needs admin', async () => {
    const before = await countRows(server.context.store.db);
    const response = await server.request('POST', '/api/trigger/sneaky', {
      token: trigger,
      body: { commit: 'abc9999' },
    });
    expect(response.status).toBe(403);
    expect(response.body.rule).toBe('role');
    expect(response.body.error).toContain('include rollback');
    expect(await countRows(server.context.store.db)).toEqual(before);

    const admin = await server.request('POST', '/api/trigger/sneaky', {
      token: server.adminToken,
      body: { commit: 'abc9999' },
    });
    expect(admin.status, admin.text).toBe(201);
  });

  it('rejects before reading the body', async () => {
    const response = await server.request('POST', '/api/trigger/rollback', {
      token: trigger,
      body: '{not json',
    });
    expect(response.status).toBe(403);
    expect(response.body.code).toBe('forbidden');
  });

  it.each(['deploy', 'nightly'])('%s accepts a trigger token', async (type) => {
    const response = await server.request('POST', `/api/trigger/${type}`, {
      token: trigger,
      body: { commit: 'abc1234' },
    });
    expect(response.status, response.text).toBe(201);
  });

  it('the OpenAPI document names the exception', async () => {
    const document = await server.request('GET', '/api/openapi.json');
    const description: string = document.body.paths['/api/trigger/{type}'].post.description;
    expect(description).toContain('Token role: trigger or admin.');
    expect(description).toContain('rollback and recovery need role admin');
    expect(description).toContain('POST /api/rollback/execute');
    expect(description).toContain('POST /api/recovery/execute');
  });
});
