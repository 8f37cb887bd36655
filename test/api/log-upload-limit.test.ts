/**
 * A worker's largest log upload (64 Ki characters, each escaped as \uXXXX in JSON) is stored
 * even when API_BODY_LIMIT is set to its minimum, while other endpoints keep that limit.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

describe('log upload under small API_BODY_LIMIT', () => {
  let server: TestServer;

  const agent = (urlPath: string, body: Record<string, unknown>) =>
    server.request('POST', urlPath, { token: server.adminToken, body });

  beforeAll(async () => {
    const dir = makeTempDir('slipway-log-upload-limit-');
    const pipelines = path.join(dir, 'slipway.yml');
    fs.writeFileSync(
      pipelines,
      'pipelines:\n  solo:\n    executor: local\n    steps: [{ run: "true" }]\n',
    );
    server = await startTestServer({
      SLIPWAY_DATA_DIR: dir,
      SLIPWAY_PIPELINES: pipelines,
      API_BODY_LIMIT: '1024',
    });
  });
  afterAll(async () => {
    await server.close();
  });

  it('stores an upload of escaped characters', async () => {
    const registered = await agent('/api/agent/workers', {
      name: 'limit-worker',
      hostname: 'localhost',
      executors: ['local'],
      capacity: 1,
    });
    expect(registered.status, registered.text).toBe(200);
    const triggered = await agent('/api/trigger/solo', { commit: 'abcdef1' });
    expect(triggered.status, triggered.text).toBe(201);
    const claimed = await agent('/api/agent/workers/limit-worker/claim', {
      max: 1,
      wait_seconds: 0,
    });
    expect(claimed.status, claimed.text).toBe(200);
    const task = claimed.body.tasks[0];
    const data = '\u0001'.repeat(64 * 1024);

    const written = await agent(`/api/agent/tasks/${task.task_id}/logs`, {
      worker_id: 'limit-worker',
      attempt: task.attempt,
      offset: 0,
      data,
    });

    expect(written.status, written.text).toBe(200);
    expect(written.body.received).toBe(data.length);
  });

  it('keeps API_BODY_LIMIT for triggers', async () => {
    const triggered = await agent('/api/trigger/solo', {
      commit: 'abcdef1',
      params: { NOTE: 'x'.repeat(2000) },
    });

    expect(triggered.status).toBe(413);
    expect(triggered.body.error).toContain('API_BODY_LIMIT');
  });
});
