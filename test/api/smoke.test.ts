import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../support/server.js';

describe('API start', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server.close();
  });

  it('queues a ci job and reads it back', async () => {
    const created = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit: 'abc1234', branch: 'main' },
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ status: 'queued' });
    expect(created.body.job_id).toMatch(/^ci-[0-9a-f]{8}$/);
    const job = await server.request('GET', `/api/job/${created.body.job_id}`, {
      token: server.adminToken,
    });
    expect(job.status).toBe(200);
    expect(job.body).toMatchObject({ id: created.body.job_id, type: 'ci', commit: 'abc1234' });
  });
});
