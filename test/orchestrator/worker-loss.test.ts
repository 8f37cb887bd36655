import { spawn, type ChildProcess } from 'node:child_process';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningRole } from '../../src/app/roles.js';
import { instanceId, LABEL_INSTANCE, LABEL_TASK } from '../../src/jobs/labels.js';
import { startOrchestrator } from '../../src/orchestrator/role.js';
import { CLI_PATH, childEnv, ensureBuilt } from '../support/cli.js';
import { requireDocker, TEST_IMAGE } from '../support/docker.js';
import { makeRepository, writePipelineFile } from '../support/execution.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';
import { auditRows, getJob, waitFor } from './helpers.js';

const LEASE_SECONDS = '2';

/** Starts a real `slipway worker` process with its own data folder and the docker executor. */
function startWorkerProcess(server: TestServer, token: string, name: string): ChildProcess {
  return spawn(process.execPath, [CLI_PATH, 'worker'], {
    env: childEnv({
      SLIPWAY_DATA_DIR: makeTempDir(`slipway-${name}-`),
      SLIPWAY_API_URL: server.url,
      SLIPWAY_AGENT_TOKEN: token,
      SLIPWAY_WORKER_NAME: name,
      SLIPWAY_EXECUTOR: 'docker',
      SLIPWAY_WORKER_CAPACITY: '1',
      SLIPWAY_LEASE_SECONDS: LEASE_SECONDS,
      LOG_LEVEL: 'warn',
    }),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

async function killHard(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

async function stopGently(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

describe('a worker killed in the middle of a task', () => {
  let server: TestServer;
  let orchestrator: RunningRole;
  let docker: Docker;
  let agentToken: string;
  let commit: string;
  const workers: ChildProcess[] = [];

  beforeAll(async () => {
    docker = await requireDocker();
    await ensureBuilt();
    const repository = makeRepository({ 'README.md': 'worker loss test\n' });
    commit = repository.commit;
    const step = 'echo started; sleep 6; echo finished';
    const pipelines = writePipelineFile(`repository: ${repository.dir}
pipelines:
  ci:
    executor: docker
    image: ${TEST_IMAGE}
    steps: [{ name: work, run: '${step}' }]
  deploy:
    executor: docker
    image: ${TEST_IMAGE}
    steps: [{ name: work, run: '${step}' }]
`);
    server = await startTestServer({
      SLIPWAY_PIPELINES: pipelines,
      SLIPWAY_LEASE_SECONDS: LEASE_SECONDS,
      BACKUP_INTERVAL: '0',
    });
    agentToken = await server.token('agent');
    orchestrator = await startOrchestrator(server.context);
  });

  afterAll(async () => {
    for (const worker of workers) await stopGently(worker);
    await orchestrator.stop();
    const instance = instanceId(server.context.store);
    const mine = await docker.listContainers({
      all: true,
      filters: { label: [`${LABEL_INSTANCE}=${instance}`] },
    });
    for (const info of mine) await docker.getContainer(info.Id).remove({ force: true });
    await server.close();
  });

  async function triggerJob(type: string): Promise<string> {
    const response = await server.request('POST', `/api/trigger/${type}`, {
      token: server.adminToken,
      body: { commit, branch: 'main' },
    });
    expect(response.status, response.text).toBe(201);
    return response.body.job_id;
  }

  /** Waits until `worker` runs the job's task and its step has printed "started". */
  async function waitUntilStarted(jobId: string, worker: string): Promise<void> {
    await waitFor(
      async () => {
        const job = await getJob(server, jobId);
        if (job.tasks[0]?.worker_id !== worker || job.tasks[0]?.status !== 'running') return false;
        const logs = await server.request('GET', `/api/job/${jobId}/logs`, {
          token: server.adminToken,
        });
        return logs.text.includes('started');
      },
      60_000,
      `${worker} to start ${jobId}`,
    );
  }

  it('requeues a ci task onto another worker', async () => {
    const workerA = startWorkerProcess(server, agentToken, 'worker-a');
    workers.push(workerA);
    const jobId = await triggerJob('ci');
    await waitUntilStarted(jobId, 'worker-a');
    await killHard(workerA);

    const workerB = startWorkerProcess(server, agentToken, 'worker-b');
    workers.push(workerB);
    const job = await waitFor(
      async () => {
        const current = await getJob(server, jobId);
        return current.status === 'success' || current.status === 'error' ? current : undefined;
      },
      60_000,
      `${jobId} to finish on worker-b`,
    );
    expect(job.status).toBe('success');
    expect(job.tasks[0]?.worker_id).toBe('worker-b');
    expect(job.tasks[0]?.attempt).toBe(2);

    const claims = await auditRows(server, 'task_claimed', jobId);
    expect(claims.map((row) => `${row.details.worker_id}:${row.details.attempt}`)).toEqual([
      'worker-a:1',
      'worker-b:2',
    ]);
    const expired = await auditRows(server, 'task_lease_expired', jobId);
    expect(expired.map((row) => [row.details.worker_id, row.details.outcome])).toEqual([
      ['worker-a', 'requeued'],
    ]);
    const finished = await auditRows(server, 'task_finished', jobId);
    expect(finished).toHaveLength(1);
    expect(finished[0]!.details.attempt).toBe(2);

    // worker-a's container outlived it; worker-b's executor removes every container of the
    // task before it starts, and its own when it ends, so none is left.
    const left = await docker.listContainers({
      all: true,
      filters: { label: [`${LABEL_TASK}=${job.tasks[0]!.id}`] },
    });
    expect(left).toEqual([]);
  });

  it('ends a deploy task error and does not run it again', async () => {
    const survivor = workers.at(-1)!;
    await stopGently(survivor);
    const workerC = startWorkerProcess(server, agentToken, 'worker-c');
    workers.push(workerC);
    const jobId = await triggerJob('deploy');
    await waitUntilStarted(jobId, 'worker-c');
    await killHard(workerC);
    const workerD = startWorkerProcess(server, agentToken, 'worker-d');
    workers.push(workerD);

    const job = await waitFor(
      async () => {
        const current = await getJob(server, jobId);
        return current.status === 'error' ? current : undefined;
      },
      30_000,
      `${jobId} to end error`,
    );
    expect(job.reason).toContain('deploy has side effects, so it is not re-run automatically');
    // Give worker-d time to claim, had the task been queued again.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const claims = await auditRows(server, 'task_claimed', jobId);
    expect(claims.map((row) => row.details.worker_id)).toEqual(['worker-c']);
    const final = await getJob(server, jobId);
    expect(final.status).toBe('error');
    expect(final.tasks[0]?.attempt).toBe(1);
    const expired = await auditRows(server, 'task_lease_expired', jobId);
    expect(expired).toHaveLength(1);
    expect(expired[0]!.details.outcome).toBe('error');
  });
});
