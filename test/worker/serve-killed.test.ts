/**
 * A `slipway serve` killed with SIGKILL while its in-process worker runs a task. The next
 * start finds that process gone, so it marks the old worker offline and ends its leases at
 * once: the task runs again well before its 30 s lease would have run out. The step's
 * process group dies with the serve process, so the step's sleep leaves the group (setsid)
 * and stays behind for the new worker to find and kill.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt } from '../support/cli.js';
import { processesWith, writePipelineFile, type JobBody } from '../support/execution.js';
import { callServe, startServe, stopServe, type ServeProcess } from '../support/serve.js';
import { makeTempDir } from '../support/server.js';

const ADMIN_TOKEN = 'slw_serve-killed-admin-token-00000000000';
const LEASE_SECONDS = 30;

describe('a serve process killed while its worker runs a task', { timeout: 60_000 }, () => {
  let dataDir: string;
  let pipelines: string;
  let serve: ServeProcess | undefined;

  beforeAll(async () => {
    await ensureBuilt();
    dataDir = makeTempDir('slipway-serve-killed-');
    pipelines = writePipelineFile(`
pipelines:
  ci:
    executor: local
    steps: [{ name: work, run: 'echo started; setsid sleep 20.75' }]
`);
  });

  afterAll(async () => {
    if (serve !== undefined) await stopServe(serve, 'SIGKILL');
    // The second attempt's sleep left its group too, so it outlives this SIGKILL.
    for (const pid of processesWith('sleep 20.75')) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  });

  const startKilledServe = () =>
    startServe({
      SLIPWAY_DATA_DIR: dataDir,
      SLIPWAY_PIPELINES: pipelines,
      SLIPWAY_ADMIN_TOKEN: ADMIN_TOKEN,
      SLIPWAY_EXECUTOR: 'local',
      SLIPWAY_LEASE_SECONDS: String(LEASE_SECONDS),
      API_HOST: '127.0.0.1',
      API_PORT: '0',
      LOG_LEVEL: 'info',
    });
  const callText = async (path: string) =>
    (
      await fetch(`${serve!.url}${path}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
    ).text();
  const call = (path: string, body?: unknown) =>
    callServe(serve!, ADMIN_TOKEN, body === undefined ? 'GET' : 'POST', path, body);

  const waitForTask = async (id: string, done: (task: JobBody) => boolean): Promise<JobBody> => {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const task = (await call(`/api/job/${id}`)).body.tasks[0] as JobBody;
      if (done(task)) return task;
      if (Date.now() > deadline) {
        throw new Error(`task of ${id} is ${JSON.stringify(task)}:\n${serve!.output()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };

  const query = <T>(sql: string, ...parameters: string[]): T[] => {
    const db = new Database(path.join(dataDir, 'state', 'orchestration.db'), { readonly: true });
    try {
      return db.prepare(sql).all(...parameters) as T[];
    } finally {
      db.close();
    }
  };
  const readAudit = (action: string) =>
    query<{ details: string }>(
      'SELECT details FROM audit_log WHERE action = ? ORDER BY id',
      action,
    ).map((row) => JSON.parse(row.details) as Record<string, unknown>);

  it('runs the task again without waiting out the lease', async () => {
    serve = await startKilledServe();
    const triggered = await call('/api/trigger/ci', { commit: 'abcdef1' });
    expect(triggered.status).toBe(201);
    const id = triggered.body.job_id as string;
    const first = await waitForTask(id, (task) => task.status === 'running');
    const oldWorker = first.worker_id as string;
    // Killed once the step runs, so that it is left running.
    const stepStarted = Date.now() + 10_000;
    while (!(await callText(`/api/job/${id}/logs`)).includes('started')) {
      if (Date.now() > stepStarted) throw new Error(`the step did not start:\n${serve.output()}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }

    await stopServe(serve, 'SIGKILL');
    const restartedAt = Date.now();
    serve = await startKilledServe();

    const second = await waitForTask(id, (task) => task.status === 'running' && task.attempt === 2);
    expect(Date.now() - restartedAt).toBeLessThan((LEASE_SECONDS * 1000) / 2);
    expect(second.worker_id).not.toBe(oldWorker);

    const retired = readAudit('worker_marked_offline');
    expect(retired).toHaveLength(1);
    expect(retired[0]).toMatchObject({
      worker_id: oldWorker,
      leases_ended: [first.id],
      reason: 'its serve process is no longer running',
    });
    const expired = readAudit('task_lease_expired');
    expect(expired).toHaveLength(1);
    expect(expired[0]).toMatchObject({ worker_id: oldWorker, outcome: 'requeued' });
    const statuses = query<{ status: string }>(
      'SELECT status FROM workers WHERE id = ?',
      oldWorker,
    );
    expect(statuses).toEqual([{ status: 'offline' }]);

    // The new worker killed the step that the killed serve left running, and reported it.
    const deadline = Date.now() + 5_000;
    while (readAudit('leftover_steps_stopped').length === 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const stopped = readAudit('leftover_steps_stopped');
    expect(stopped).toHaveLength(1);
    expect(stopped[0]!.worker_id).toBe(second.worker_id);
    const killed = stopped[0]!.killed as Array<{ pid: number; task_id: string | null }>;
    expect(killed.map((step) => step.task_id)).toContain(first.id);
    expect(stopped[0]!.failed).toEqual([]);
  });
});
