/**
 * Output of earlier attempts stays readable: a task handed back runs again as attempt 2, and
 * `?task=&attempt=1` still returns what attempt 1 wrote.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

describe('logs of earlier attempts', () => {
  let server: TestServer;
  let jobId: string;
  let taskId: string;

  const agent = (path: string, body: Record<string, unknown>) =>
    server.request('POST', path, { token: server.adminToken, body });
  const logs = (query: string) =>
    server.request('GET', `/api/job/${jobId}/logs${query}`, { token: server.adminToken });

  const claimAndWrite = async (output: string) => {
    const claimed = await agent('/api/agent/workers/attempts-worker/claim', {
      max: 1,
      wait_seconds: 0,
    });
    expect(claimed.status, claimed.text).toBe(200);
    const task = claimed.body.tasks[0];
    expect(task.task_id).toBe(taskId);
    const holder = { worker_id: 'attempts-worker', attempt: task.attempt };
    const written = await agent(`/api/agent/tasks/${taskId}/logs`, {
      ...holder,
      offset: 0,
      data: output,
    });
    expect(written.status, written.text).toBe(200);
    return holder;
  };

  beforeAll(async () => {
    const dir = makeTempDir('slipway-log-attempts-');
    const pipelines = path.join(dir, 'slipway.yml');
    fs.writeFileSync(
      pipelines,
      `pipelines:
  solo:
    executor: local
    steps: [{ run: 'true' }]
`,
    );
    server = await startTestServer({ SLIPWAY_DATA_DIR: dir, SLIPWAY_PIPELINES: pipelines });
    const registered = await agent('/api/agent/workers', {
      name: 'attempts-worker',
      hostname: 'localhost',
      executors: ['local', 'docker'],
      capacity: 1,
    });
    expect(registered.status, registered.text).toBe(200);
    const triggered = await agent('/api/trigger/solo', { commit: 'abcdef1' });
    expect(triggered.status, triggered.text).toBe(201);
    jobId = triggered.body.job_id;
    const job = await server.request('GET', `/api/job/${jobId}`, { token: server.adminToken });
    taskId = job.body.tasks[0].id;
  });
  afterAll(async () => {
    await server.close();
  });

  it('reads each attempt of a task that was handed back', async () => {
    const first = await claimAndWrite('first attempt output\n');
    const released = await agent(`/api/agent/tasks/${taskId}/release`, {
      ...first,
      reason: 'worker stopping',
    });
    expect(released.status, released.text).toBe(200);
    const second = await claimAndWrite('second attempt output\n');

    const latest = await logs(`?task=${taskId}`);
    expect(latest.status).toBe(200);
    expect(latest.text).toBe('second attempt output\n');
    const earlier = await logs(`?task=${taskId}&attempt=1`);
    expect(earlier.status).toBe(200);
    expect(earlier.text).toBe('first attempt output\n');
    const current = await logs(`?task=${taskId}&attempt=2`);
    expect(current.text).toBe('second attempt output\n');

    // A retry of the job makes new tasks; the old task stays readable by its id.
    const finished = await agent(`/api/agent/tasks/${taskId}/finish`, {
      ...second,
      status: 'failure',
      exit_code: 1,
      duration_ms: 5,
    });
    expect(finished.status, finished.text).toBe(200);
    const retried = await agent(`/api/job/${jobId}/retry`, {});
    expect(retried.status, retried.text).toBe(201);
    expect(retried.body.tasks[0].id).not.toBe(taskId);
    const old = await logs(`?task=${taskId}`);
    expect(old.status).toBe(200);
    expect(old.text).toBe('second attempt output\n');
  });

  it('refuses an attempt that has not run, or one without a task', async () => {
    const future = await logs(`?task=${taskId}&attempt=3`);
    expect(future.status).toBe(400);
    expect(future.body).toMatchObject({ field: 'attempt', rule: 'maximum' });
    const noTask = await logs('?attempt=1');
    expect(noTask.status).toBe(400);
    expect(noTask.body).toMatchObject({ field: 'attempt', rule: 'requires_task' });
  });
});
