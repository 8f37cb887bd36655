import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

describe('concurrency groups', () => {
  let server: TestServer;
  let token: string;

  const trigger = async (type: string, body: Record<string, unknown>) => {
    const response = await server.request('POST', `/api/trigger/${type}`, { token, body });
    expect(response.status).toBe(201);
    return response.body.job_id as string;
  };
  const job = async (id: string) => (await server.request('GET', `/api/job/${id}`, { token })).body;

  beforeAll(async () => {
    const dir = makeTempDir('slipway-concurrency-');
    const pipelines = path.join(dir, 'slipway.yml');
    fs.writeFileSync(
      pipelines,
      `pipelines:
  ci:
    executor: local
    steps: [{ run: 'true' }]
    concurrency: { group: branch, cancel_in_progress: true }
  lint:
    executor: local
    steps: [{ run: 'true' }]
    concurrency: { group: branch, cancel_in_progress: true }
  release:
    executor: local
    steps: [{ run: 'true' }]
    concurrency: { group: 'release-\${{ branch }}', cancel_in_progress: true }
`,
    );
    server = await startTestServer({ SLIPWAY_DATA_DIR: dir, SLIPWAY_PIPELINES: pipelines });
    token = await server.token('admin', 'concurrency');
  });
  afterAll(async () => {
    await server?.close();
  });

  it('cancels the older job of the same branch', async () => {
    const older = await trigger('ci', { commit: 'aaaa0001', branch: 'feature/a' });
    const newer = await trigger('ci', { commit: 'aaaa0002', branch: 'feature/a' });
    expect((await job(older)).status).toBe('cancelled');
    expect((await job(older)).reason).toContain(`newer job ${newer}`);
    expect((await job(newer)).status).toBe('queued');
    expect((await job(newer)).concurrency_group).toBe('ci:feature/a');
  });

  it('puts jobs without a branch in no group', async () => {
    const first = await trigger('ci', { commit: 'bbbb0001' });
    const second = await trigger('ci', { commit: 'bbbb0002' });
    const third = await trigger('release', { commit: 'bbbb0003' });
    for (const id of [first, second, third]) {
      const view = await job(id);
      expect(view.status).toBe('queued');
      expect(view.concurrency_group).toBeNull();
    }
  });

  it('keeps the branch shorthand apart per job type', async () => {
    const ci = await trigger('ci', { commit: 'cccc0001', branch: 'feature/c' });
    const lint = await trigger('lint', { commit: 'cccc0001', branch: 'feature/c' });
    expect((await job(ci)).status).toBe('queued');
    expect((await job(lint)).concurrency_group).toBe('lint:feature/c');
  });
});
