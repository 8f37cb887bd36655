import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runHealthChecks } from '../../src/health/runner.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

const MAX_WAIT_MS = 1000;

const PIPELINES = `
pipelines:
  build:
    executor: docker
    image: busybox
    steps: [{ run: 'true' }]
  lint:
    executor: local
    steps: [{ run: 'true' }]
health_checks:
  - name: queue
    type: queue
    max_wait: ${MAX_WAIT_MS}ms
`;

describe('queue check', () => {
  let server: TestServer;
  let agent: string;

  beforeAll(async () => {
    const dir = makeTempDir('slipway-health-');
    const file = path.join(dir, 'slipway.yml');
    fs.writeFileSync(file, PIPELINES);
    server = await startTestServer({ SLIPWAY_PIPELINES: file, SLIPWAY_DATA_DIR: dir });
    agent = await server.token('agent');
  });
  afterAll(async () => {
    await server.close();
  });

  const check = async () =>
    (await runHealthChecks(server.context, { force: true, names: ['queue'] }))[0]!;

  const details = async () => {
    const status = await server.request('GET', '/api/health/status', { token: server.adminToken });
    // 503 while a component is unhealthy.
    expect([200, 503], status.text).toContain(status.status);
    return status.body.components.queue.details;
  };

  const trigger = async (type: string): Promise<string> => {
    const response = await server.request('POST', `/api/trigger/${type}`, {
      token: server.adminToken,
      body: { commit: 'abc1234', branch: 'main' },
    });
    expect(response.status, response.text).toBe(201);
    return `${response.body.job_id}.1.0`;
  };

  /** Registers a worker and has it claim one task, as `slipway worker` does. */
  const claimWith = async (name: string, executor: string): Promise<string[]> => {
    const registered = await server.request('POST', '/api/agent/workers', {
      token: agent,
      body: { name, hostname: 'build-1', executors: [executor], capacity: 1 },
    });
    expect(registered.status, registered.text).toBe(200);
    const claimed = await server.request('POST', `/api/agent/workers/${name}/claim`, {
      token: agent,
      body: { max: 1, wait_seconds: 0 },
    });
    expect(claimed.status, claimed.text).toBe(200);
    return claimed.body.tasks.map((task: { task_id: string }) => task.task_id);
  };

  const pastMaxWait = () => new Promise((resolve) => setTimeout(resolve, MAX_WAIT_MS + 200));

  it('is healthy with an empty queue', async () => {
    const outcome = await check();
    expect(outcome.status).toBe('healthy');
    expect(await details()).toMatchObject({ queued: 0, oldest_queued_seconds: null, late: 0 });
    const metrics = await server.request('GET', '/metrics', { token: agent });
    expect(metrics.text).toMatch(/^slipway_queued_tasks 0$/m);
    expect(metrics.text).toMatch(/^slipway_oldest_queued_task_seconds 0$/m);
  });

  it('is healthy while tasks are young', async () => {
    await trigger('lint');
    expect((await check()).status).toBe('healthy');
    expect(await details()).toMatchObject({ queued: 1, late: 0 });
  });

  it('is unhealthy with no worker online', async () => {
    await pastMaxWait();
    const outcome = await check();
    expect(outcome.status).toBe('unhealthy');
    expect(outcome.reason).toContain('1 task(s) queued longer than 1s that no live worker can run');
    expect(outcome.reason).toContain('no worker is online');
    expect(await details()).toMatchObject({ queued: 1, late: 1, stuck: 1 });

    const metrics = await server.request('GET', '/metrics', { token: agent });
    expect(metrics.status).toBe(200);
    expect(metrics.text).toMatch(/^slipway_queued_tasks 1$/m);
    const oldest = /^slipway_oldest_queued_task_seconds (\d+)$/m.exec(metrics.text);
    expect(Number(oldest?.[1])).toBeGreaterThanOrEqual(1);
  });

  it('names the missing executor', async () => {
    const lint = (await details()).tasks[0].task_id as string;
    expect(await claimWith('local-1', 'local')).toEqual([lint]);
    const build = await trigger('build');
    await pastMaxWait();

    const outcome = await check();
    expect(outcome.status).toBe('unhealthy');
    expect(outcome.reason).toContain(`${build} (1s, no worker with the docker executor)`);
    const listed = (await details()).tasks;
    expect(listed).toEqual([
      expect.objectContaining({ task_id: build, executor: 'docker', runnable: false }),
    ]);
  });

  it('is degraded while able workers are busy', async () => {
    const build = (await details()).tasks[0].task_id as string;
    expect(await claimWith('docker-1', 'docker')).toEqual([build]);
    const next = await trigger('build');
    await pastMaxWait();

    const outcome = await check();
    expect(outcome.status).toBe('degraded');
    expect(outcome.reason).toContain('1 task(s) queued longer than 1s');
    expect(outcome.reason).toContain(`${next} (1s, every worker with the docker executor is busy`);
    expect(await details()).toMatchObject({ queued: 1, late: 1, stuck: 0 });
  });
});
