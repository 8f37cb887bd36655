import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, spawnCli, type CliProcess } from '../support/cli.js';
import { processesWith, writePipelineFile, type JobBody } from '../support/execution.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

const MARKER = `slipway-shutdown-marker-${process.pid}`;

describe('slipway worker on SIGTERM', () => {
  let server: TestServer;
  let agentToken: string;

  beforeAll(async () => {
    await ensureBuilt();
    const pipelines = writePipelineFile(`
pipelines:
  long:
    executor: local
    steps:
      - run: sleep 300 && echo ${MARKER}-long
  release:
    executor: local
    side_effects: true
    steps:
      - run: sleep 301 && echo ${MARKER}-release
  short:
    executor: local
    steps:
      - run: sleep 1 && echo short-done
  brief:
    executor: local
    steps:
      - run: sleep 2
`);
    server = await startTestServer({ SLIPWAY_PIPELINES: pipelines, SLIPWAY_LEASE_SECONDS: '10' });
    agentToken = await server.token('agent', 'shutdown-agent');
  });

  afterAll(async () => {
    await server?.close();
  });

  const startWorkerProcess = async (name: string, graceSeconds: number): Promise<CliProcess> => {
    const worker = spawnCli('worker', {
      SLIPWAY_API_URL: server.url,
      SLIPWAY_AGENT_TOKEN: agentToken,
      SLIPWAY_EXECUTOR: 'local',
      SLIPWAY_WORKER_NAME: name,
      SLIPWAY_WORKER_CAPACITY: '4',
      SLIPWAY_WORKER_SHUTDOWN_SECONDS: String(graceSeconds),
      SLIPWAY_DATA_DIR: makeTempDir('slipway-worker-'),
      LOG_LEVEL: 'info',
    });
    const deadline = Date.now() + 20_000;
    while (!worker.output().includes('registered; waiting for tasks')) {
      if (Date.now() > deadline) throw new Error(`worker did not register:\n${worker.output()}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return worker;
  };

  const trigger = async (type: string) => {
    const answer = await server.request('POST', `/api/trigger/${type}`, {
      token: server.adminToken,
      body: { commit: 'abcdef1' },
    });
    expect(answer.status).toBe(201);
    return answer.body.job_id as string;
  };

  const job = async (id: string): Promise<JobBody> =>
    (await server.request('GET', `/api/job/${id}`, { token: server.adminToken })).body;

  const waitForJob = async (id: string, done: (body: JobBody) => boolean) => {
    const deadline = Date.now() + 20_000;
    let body = await job(id);
    while (!done(body)) {
      if (Date.now() > deadline) throw new Error(`job ${id} is ${body.status}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
      body = await job(id);
    }
    return body;
  };

  it('hands back unfinished tasks after the grace period', async () => {
    const worker = await startWorkerProcess('worker-handback', 1);
    const long = await trigger('long');
    const release = await trigger('release');
    await waitForJob(long, (body) => body.status === 'running');
    await waitForJob(release, (body) => body.status === 'running');

    worker.child.kill('SIGTERM');
    expect(await worker.exited).toBe(0);

    const longJob = await job(long);
    expect(longJob.tasks[0].status).toBe('queued');
    expect(longJob.tasks[0].reason).toContain('worker-handback stopped before the task ended');
    const releaseJob = await job(release);
    expect(releaseJob.status).toBe('error');
    expect(releaseJob.reason).toContain('side effects');
    expect(worker.output()).toContain('worker stopping');
    expect(worker.output()).toContain('0 task(s) finished, 2 handed back');
    expect(processesWith(MARKER)).toEqual([]);
    const logOf = async (id: string) =>
      (await server.request('GET', `/api/job/${id}/logs`, { token: server.adminToken })).text;
    expect(await logOf(long)).toContain('the task is handed back and queued again');
    expect(await logOf(release)).toContain('the task has side effects, so it ends error');

    await server.request('POST', `/api/job/${long}/cancel`, { token: server.adminToken });
  });

  it('stops when the API rejects the finish', async () => {
    const worker = await startWorkerProcess('worker-rejected', 1);
    const brief = await trigger('brief');
    await waitForJob(brief, (body) => body.status === 'running');
    // With the database file moved away, the API returns 503 to every write, so the worker
    // retries its finish report until it stops.
    const dbPath = path.join(server.dataDir, 'state', 'orchestration.db');
    fs.renameSync(dbPath, `${dbPath}.moved`);
    let exitCode: number | null | 'hung';
    try {
      const deadline = Date.now() + 20_000;
      while (!worker.output().includes('finish failed; retrying')) {
        if (Date.now() > deadline) throw new Error(`no finish retry:\n${worker.output()}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      worker.child.kill('SIGTERM');
      exitCode = await Promise.race([
        worker.exited,
        new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 15_000)),
      ]);
    } finally {
      fs.renameSync(`${dbPath}.moved`, dbPath);
      worker.child.kill('SIGKILL');
    }

    expect(exitCode, worker.output()).toBe(0);
    expect(worker.output()).toContain('finish failed while the worker stops');
    await server.request('POST', `/api/job/${brief}/cancel`, { token: server.adminToken });
  }, 60_000);

  it('finishes a running task within the grace period', async () => {
    const worker = await startWorkerProcess('worker-finish', 15);
    const short = await trigger('short');
    await waitForJob(short, (body) => body.status === 'running');

    worker.child.kill('SIGTERM');
    expect(await worker.exited).toBe(0);
    const finished = await job(short);
    expect(finished.status, worker.output()).toBe('success');
    expect(worker.output()).toContain('1 task(s) finished, 0 handed back');
    const logs = await server.request('GET', `/api/job/${short}/logs`, {
      token: server.adminToken,
    });
    expect(logs.text).toContain('short-done');
  });
});
