/**
 * A separate `slipway orchestrator` while `slipway api` is down. Workers cannot renew their
 * leases then, so the orchestrator must leave them until an API serves again: a deploy that
 * finished during the outage must end `success`, not `error`.
 */
import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, spawnCli, type CliProcess } from '../support/cli.js';
import { writePipelineFile } from '../support/execution.js';
import { makeTempDir } from '../support/server.js';

const ADMIN_TOKEN = 'slw_api-outage-admin-token-00000000000000';
const AGENT_TOKEN = 'slw_api-outage-agent-token-00000000000000';
const LEASE_SECONDS = 2;

interface Claimed {
  task_id: string;
  attempt: number;
  job: { id: string };
}

describe('an API outage with a separate orchestrator', { timeout: 90_000 }, () => {
  let dataDir: string;
  let env: Record<string, string>;
  const running: CliProcess[] = [];
  let url = '';

  beforeAll(async () => {
    await ensureBuilt();
    dataDir = makeTempDir('slipway-api-outage-');
    const pipelines = writePipelineFile(`
pipelines:
  deploy:
    executor: docker
    image: busybox:latest
    side_effects: true
    steps: [{ name: work, run: 'true' }]
`);
    env = {
      SLIPWAY_DATA_DIR: dataDir,
      SLIPWAY_PIPELINES: pipelines,
      SLIPWAY_ADMIN_TOKEN: ADMIN_TOKEN,
      SLIPWAY_AGENT_TOKEN: AGENT_TOKEN,
      SLIPWAY_LEASE_SECONDS: String(LEASE_SECONDS),
      BACKUP_INTERVAL: '0',
      API_HOST: '127.0.0.1',
      API_PORT: '0',
      LOG_LEVEL: 'info',
    };
  });

  afterAll(async () => {
    for (const cli of running) {
      if (cli.child.exitCode === null && cli.child.signalCode === null) {
        cli.child.kill('SIGTERM');
        await cli.exited;
      }
    }
  });

  const waitFor = async (what: string, probe: () => boolean, cli: CliProcess) => {
    const deadline = Date.now() + 20_000;
    while (!probe()) {
      if (Date.now() > deadline || cli.child.exitCode !== null) {
        throw new Error(`${what}:\n${cli.output()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };

  const startApi = async (): Promise<CliProcess> => {
    const api = spawnCli('api', env);
    running.push(api);
    await waitFor('the API did not start', () => api.output().includes('API listening on'), api);
    url = /API listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(api.output())![1]!;
    return api;
  };

  const startOrchestrator = async (): Promise<CliProcess> => {
    const orchestrator = spawnCli('orchestrator', env);
    running.push(orchestrator);
    const folder = path.join(dataDir, 'state', 'orchestration.db.processes');
    const registered = () =>
      fs.existsSync(folder) &&
      fs.readdirSync(folder).some((name) => name.endsWith(`-${orchestrator.child.pid}.json`));
    await waitFor('the orchestrator did not start', registered, orchestrator);
    return orchestrator;
  };

  const call = async (route: string, token: string, body?: unknown) => {
    const response = await fetch(`${url}${route}`, {
      method: body === undefined ? 'GET' : 'POST',
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };

  const claimDeploy = async (): Promise<Claimed> => {
    const triggered = await call('/api/trigger/deploy', ADMIN_TOKEN, { commit: 'abcdef1' });
    expect(triggered.status).toBe(201);
    const claimed = await call('/api/agent/workers/outside/claim', AGENT_TOKEN, {
      max: 1,
      wait_seconds: 0,
    });
    expect(claimed.status).toBe(200);
    const tasks = claimed.body.tasks as Claimed[];
    expect(tasks).toHaveLength(1);
    return tasks[0]!;
  };

  const taskStatus = (taskId: string): string => {
    const db = new Database(path.join(dataDir, 'state', 'orchestration.db'), { readonly: true });
    try {
      const row = db.prepare('SELECT status FROM tasks WHERE id = ?').get(taskId) as {
        status: string;
      };
      return row.status;
    } finally {
      db.close();
    }
  };

  it('leaves leases alone until an API serves again', async () => {
    let api = await startApi();
    const orchestrator = await startOrchestrator();
    const registered = await call('/api/agent/workers', AGENT_TOKEN, {
      name: 'outside',
      hostname: 'outside-host',
      executors: ['docker'],
      capacity: 2,
    });
    expect(registered.status).toBe(200);
    const task = await claimDeploy();

    api.child.kill('SIGTERM');
    expect(await api.exited).toBe(0);
    // Twice the lease, and many watchdog passes (a quarter of the lease, at least 0.5 s).
    await new Promise((resolve) => setTimeout(resolve, 2 * LEASE_SECONDS * 1000 + 500));
    expect(taskStatus(task.task_id)).toBe('running');
    expect(orchestrator.output()).toContain('no API process serves workers');

    // The worker reports through the API that started again, within the lease it renewed.
    api = await startApi();
    const beat = await call(`/api/agent/tasks/${task.task_id}/heartbeat`, AGENT_TOKEN, {
      worker_id: 'outside',
      attempt: task.attempt,
    });
    expect(beat.status).toBe(200);
    const finished = await call(`/api/agent/tasks/${task.task_id}/finish`, AGENT_TOKEN, {
      worker_id: 'outside',
      attempt: task.attempt,
      status: 'success',
      exit_code: 0,
      duration_ms: 10,
    });
    expect(finished.status).toBe(200);
    const job = await call(`/api/job/${task.job.id}`, ADMIN_TOKEN);
    expect(job.body.status).toBe('success');

    // With the API up, a worker that goes quiet still loses its task one lease later.
    const quiet = await claimDeploy();
    const deadline = Date.now() + 4 * LEASE_SECONDS * 1000;
    while (taskStatus(quiet.task_id) === 'running' && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(taskStatus(quiet.task_id)).toBe('error');
    expect(orchestrator.output()).toContain('lease recovery resumes');
  });
});
