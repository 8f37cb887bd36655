/**
 * A `slipway serve` restarted while a separate worker runs its tasks. The stop must not wait
 * for a worker's long-poll claim or a followed log, and the new process must give the worker
 * a full lease to report before it judges the leases that ran out while no API responded.
 */
import Database from 'better-sqlite3';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt } from '../support/cli.js';
import { writePipelineFile } from '../support/execution.js';
import { callServe, startServe, stopServe, type ServeProcess } from '../support/serve.js';
import { makeTempDir } from '../support/server.js';

const ADMIN_TOKEN = 'slw_api-restart-admin-token-0000000000000';
const LEASE_SECONDS = 2;
/** Far below the 25 s a claim may wait: what a stop may take with a claim and a follower open. */
const STOP_LIMIT_MS = 8_000;

describe('an API restart while a separate worker holds tasks', { timeout: 90_000 }, () => {
  let dataDir: string;
  let pipelines: string;
  let serve: ServeProcess | undefined;

  beforeAll(async () => {
    await ensureBuilt();
    dataDir = makeTempDir('slipway-api-restart-');
    // Only the separate worker runs docker tasks: serve's own worker has the local executor.
    pipelines = writePipelineFile(`
pipelines:
  ci:
    executor: docker
    image: busybox:latest
    steps: [{ name: work, run: 'true' }]
  deploy:
    executor: docker
    image: busybox:latest
    steps: [{ name: work, run: 'true' }]
`);
  });

  afterAll(async () => {
    if (serve !== undefined) await stopServe(serve);
  });

  const startApiServe = () =>
    startServe({
      SLIPWAY_DATA_DIR: dataDir,
      SLIPWAY_PIPELINES: pipelines,
      SLIPWAY_ADMIN_TOKEN: ADMIN_TOKEN,
      SLIPWAY_EXECUTOR: 'local',
      SLIPWAY_LEASE_SECONDS: String(LEASE_SECONDS),
      SLIPWAY_WORKER_SHUTDOWN_SECONDS: '2',
      API_HOST: '127.0.0.1',
      API_PORT: '0',
      LOG_LEVEL: 'info',
    });
  const call = (path: string, body?: unknown) =>
    callServe(serve!, ADMIN_TOKEN, body === undefined ? 'GET' : 'POST', path, body);

  const auditActions = (jobId: string): string[] => {
    const db = new Database(path.join(dataDir, 'state', 'orchestration.db'), { readonly: true });
    try {
      const rows = db
        .prepare('SELECT action FROM audit_log WHERE job_id = ? ORDER BY id')
        .all(jobId) as { action: string }[];
      return rows.map((row) => row.action);
    } finally {
      db.close();
    }
  };

  it('stops at once and lets the worker report after its lease ran out', async () => {
    serve = await startApiServe();
    const registered = await call('/api/agent/workers', {
      name: 'outside',
      hostname: 'outside-host',
      executors: ['docker'],
      capacity: 3,
    });
    expect(registered.status).toBe(200);
    const jobs: Record<string, string> = {};
    for (const type of ['ci', 'deploy']) {
      const triggered = await call(`/api/trigger/${type}`, { commit: 'abcdef1' });
      expect(triggered.status).toBe(201);
      jobs[type] = triggered.body.job_id as string;
    }
    const claimed = await call('/api/agent/workers/outside/claim', { max: 3, wait_seconds: 0 });
    expect(claimed.status).toBe(200);
    const tasks = claimed.body.tasks as { task_id: string; job: { id: string }; attempt: number }[];
    expect(tasks.map((task) => task.job.id).sort()).toEqual(Object.values(jobs).sort());

    // A long-poll claim and a followed log are open when the stop comes.
    const waiting = call('/api/agent/workers/outside/claim', { max: 1, wait_seconds: 25 });
    const followed = fetch(`${serve.url}/api/job/${jobs.ci}/logs?follow=true`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    }).then((response) => response.text());
    await new Promise((resolve) => setTimeout(resolve, 300));

    const stopStarted = Date.now();
    serve.child.kill('SIGTERM');
    expect(await serve.exited).toBe(0);
    expect(Date.now() - stopStarted).toBeLessThan(STOP_LIMIT_MS);
    expect(await waiting).toMatchObject({ status: 200, body: { tasks: [] } });
    await followed;

    // The leases run out while no API responds, then the API starts again.
    await new Promise((resolve) => setTimeout(resolve, LEASE_SECONDS * 1000 + 1_000));
    serve = await startApiServe();
    expect(serve.output()).toContain('renewed the leases of 2 running task(s)');
    // Longer than the watchdog's first pass after the start, which saw the expired leases.
    await new Promise((resolve) => setTimeout(resolve, 700));

    for (const task of tasks) {
      const report = {
        worker_id: 'outside',
        attempt: task.attempt,
        status: 'success',
        exit_code: 0,
        duration_ms: 5_000,
      };
      const finished = await call(`/api/agent/tasks/${task.task_id}/finish`, report);
      expect(finished.status, JSON.stringify(finished.body)).toBe(200);
    }
    for (const id of Object.values(jobs)) {
      const job = await call(`/api/job/${id}`);
      expect(job.body).toMatchObject({ status: 'success', attempt: 1 });
      const actions = auditActions(id);
      expect(actions).toContain('task_lease_renewed');
      expect(actions).not.toContain('task_lease_expired');
    }
  });

  it('still recovers a task whose worker never comes back', async () => {
    serve ??= await startApiServe();
    const triggered = await call('/api/trigger/ci', { commit: 'abcdef2', branch: 'lost' });
    expect(triggered.status).toBe(201);
    const id = triggered.body.job_id as string;
    const claimed = await call('/api/agent/workers/outside/claim', { max: 1, wait_seconds: 0 });
    expect(claimed.body.tasks).toHaveLength(1);

    serve.child.kill('SIGTERM');
    expect(await serve.exited).toBe(0);
    serve = await startApiServe();
    expect(auditActions(id)).toContain('task_lease_renewed');

    // Renewed for one lease from the start, then recovered by the watchdog.
    const deadline = Date.now() + LEASE_SECONDS * 1000 + 10_000;
    while (!auditActions(id).includes('task_lease_expired')) {
      if (Date.now() > deadline) throw new Error(`job ${id} was not recovered:\n${serve.output()}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const job = await call(`/api/job/${id}`);
    expect(job.body.tasks[0].reason).toContain('lease expired on outside');
  });
});
