/**
 * A deploy whose Docker engine stops responding while its step runs. The task must end at its
 * timeout, and say why, instead of running forever; but its container may still run, so the
 * next deploy of the concurrency group waits until the worker could remove it. An engine that
 * restarts under a running step ends the task `error`, and it is retried once the container
 * is removed, also when the engine was away for a while. The engine is the real one, behind a proxy that makes it hang or drop connections.
 */
import fs from 'node:fs';
import path from 'node:path';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workspaceFor } from '../../src/execution/checkout.js';
import { LABEL_JOB } from '../../src/jobs/labels.js';
import { requireDocker, TEST_IMAGE } from '../support/docker.js';
import { startEngineProxy, type EngineProxy } from '../support/engine-proxy.js';
import { startHarness, writePipelineFile, type ExecutionHarness } from '../support/execution.js';

const COMMIT = '0123456789abcdef0123456789abcdef01234567';

describe('a worker whose Docker engine fails under a running step', () => {
  let docker: Docker;
  let proxy: EngineProxy;
  let harness: ExecutionHarness;

  beforeAll(async () => {
    docker = await requireDocker();
    proxy = await startEngineProxy();
    harness = await startHarness({
      SLIPWAY_PIPELINES: writePipelineFile(`
pipelines:
  deploy-hang:
    executor: docker
    image: ${TEST_IMAGE}
    network: none
    side_effects: true
    timeout: 3s
    concurrency: { group: deploy, cancel_in_progress: false }
    steps:
      - name: roll-out
        run: echo rolling; sleep 300
  deploy-long:
    executor: docker
    image: ${TEST_IMAGE}
    network: none
    side_effects: true
    concurrency: { group: deploy, cancel_in_progress: false }
    steps:
      - name: roll-out
        run: echo rolling; sleep 300
  deploy-quick:
    executor: docker
    image: ${TEST_IMAGE}
    network: none
    side_effects: true
    concurrency: { group: deploy, cancel_in_progress: false }
    steps:
      - name: roll-out
        run: echo quick
  ci-quick:
    executor: docker
    image: ${TEST_IMAGE}
    network: none
    retries: 1
    steps:
      - name: test
        run: echo quick test
  ci-long:
    executor: docker
    image: ${TEST_IMAGE}
    network: none
    retries: 1
    steps:
      - name: test
        run: echo testing; sleep 300
  ci-once:
    executor: docker
    image: ${TEST_IMAGE}
    network: none
    steps:
      - name: test
        run: echo testing once; sleep 300
`),
      SLIPWAY_EXECUTOR: 'docker',
      SLIPWAY_WORKER_CAPACITY: '2',
      DOCKER_HOST: `unix://${proxy.socketPath}`,
      // Short, but not so short that a busy engine (the whole suite runs in parallel) passes for
      // a hung one and the worker stops claiming docker tasks.
      SLIPWAY_DOCKER_TIMEOUT_SECONDS: '3',
    });
  });

  afterAll(async () => {
    proxy?.thaw();
    await harness?.close();
    await proxy?.close();
  });

  const containersOf = (jobId: string) =>
    docker.listContainers({ all: true, filters: { label: [`${LABEL_JOB}=${jobId}`] } });

  async function waitForLog(jobId: string, text: string): Promise<void> {
    const deadline = Date.now() + 40_000;
    while (!(await harness.logs(jobId)).includes(text)) {
      if (Date.now() > deadline) throw new Error(`no "${text}" in the log of ${jobId}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  const taskOf = (jobId: string) =>
    harness.server.context.store.db
      .selectFrom('tasks')
      .selectAll()
      .where('job_id', '=', jobId)
      .executeTakeFirstOrThrow();

  /**
   * Waits until the worker, back on the engine, removed the job's container, which ends its
   * kept lease, and claims docker tasks again, as the next test needs.
   */
  async function waitForRemovalAfterRestart(jobId: string): Promise<void> {
    const deadline = Date.now() + 40_000;
    while ((await taskOf(jobId)).lease_expires_at !== null) {
      if (Date.now() > deadline) throw new Error('the kept lease did not end');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(await containersOf(jobId)).toEqual([]);

    const unavailable = () =>
      harness.server.context.store.db
        .selectFrom('workers')
        .select('unavailable_executors')
        .executeTakeFirstOrThrow();
    while ((await unavailable()).unavailable_executors !== null) {
      if (Date.now() > deadline) throw new Error('the worker did not claim docker tasks again');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  it('holds the deploy group on a hung engine', async () => {
    const hung = await harness.trigger('deploy-hang', { commit: COMMIT });
    await waitForLog(hung, 'rolling');
    proxy.freeze();

    // 3 s timeout, 3 s for the engine to confirm the kill, 3 s for the cleanup.
    const job = await harness.waitForJob(hung, 30_000);
    expect(job.status).toBe('timed_out');
    expect(job.reason).toMatch(
      /timed out after 3s; the Docker engine did not confirm within 3 s that container slipway-deploy-hang-[0-9a-f]{8}\.1\.0-a1 stopped/,
    );
    const log = await harness.logs(hung);
    expect(log).toContain(
      "[slipway] the step's container could not be removed, so its steps may still run",
    );
    const task = await taskOf(hung);
    expect(task.lease_expires_at).not.toBeNull();
    expect((await containersOf(hung))[0]?.State).toBe('running');
    // The running steps keep their workspace.
    const workspace = workspaceFor(harness.server.context.config.workspacePath, task.id);
    expect(fs.existsSync(path.join(workspace.scratch, 'docker', 'run.sh'))).toBe(true);

    // The next deploy of the group waits while the old step may run.
    const next = await harness.trigger('deploy-quick', { commit: COMMIT });
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const waiting = (
      await harness.server.request('GET', `/api/job/${next}`, { token: harness.token })
    ).body;
    expect(waiting.status).toBe('queued');
    expect(waiting.reason).toBe(
      `waits for a worker to confirm that a step of job ${hung} in concurrency group deploy ` +
        'stopped; the job ended while the step could still run',
    );

    proxy.thaw();
    const done = await harness.waitForJob(next, 30_000);
    expect(done.status).toBe('success');
    expect(await containersOf(hung)).toEqual([]);
    expect((await taskOf(hung)).lease_expires_at).toBeNull();
    expect(fs.existsSync(workspace.root)).toBe(false);
    const stopped = await harness.server.context.store.db
      .selectFrom('audit_log')
      .select(['action', 'details'])
      .where('job_id', '=', hung)
      .where('action', 'in', ['task_finished', 'task_step_stopped'])
      .orderBy('id')
      .execute();
    expect(stopped.map((row) => row.action)).toEqual(['task_finished', 'task_step_stopped']);
    expect(JSON.parse(stopped[0]!.details!)).toMatchObject({
      status: 'timed_out',
      step_stopped: false,
    });
  });

  it('holds the group after a status update', async () => {
    const hung = await harness.trigger('deploy-long', { commit: COMMIT });
    await waitForLog(hung, 'rolling');
    proxy.freeze();
    const ended = await harness.server.request('PATCH', `/api/job/${hung}/status`, {
      token: harness.token,
      body: { status: 'failure', exit_code: 1 },
    });
    expect(ended.status, ended.text).toBe(200);

    // The next heartbeat stops the step; the engine confirms nothing within 3 s.
    await waitForLog(hung, "[slipway] the step's container could not be removed");
    const log = await harness.logs(hung);
    expect(log).not.toContain('the step was stopped');
    expect(log).toMatch(
      /\[slipway\] a status update ended the task failure; the worker tried to stop the step after [\d.]+ s, but could not make sure that it stopped/,
    );
    const task = await taskOf(hung);
    expect(task.status).toBe('failure');
    expect(task.lease_expires_at).not.toBeNull();

    proxy.thaw();
    const deadline = Date.now() + 30_000;
    while ((await taskOf(hung)).lease_expires_at !== null) {
      if (Date.now() > deadline) throw new Error('the lease of the stopped step did not end');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(await containersOf(hung)).toEqual([]);
    expect((await taskOf(hung)).status).toBe('failure');
  });

  it('retries a task after dropped connections', async () => {
    const id = await harness.trigger('ci-long', { commit: COMMIT });
    await waitForLog(id, 'testing');
    const [first] = await containersOf(id);
    proxy.dropConnections();

    // The first attempt ends `error`, its container goes, and the retry runs the step again.
    const { id: taskId } = await taskOf(id);
    const deadline = Date.now() + 30_000;
    while (!(await harness.logs(id, `?task=${taskId}&attempt=2`)).includes('testing')) {
      if (Date.now() > deadline) throw new Error('the second attempt did not start its step');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const log = await harness.logs(id, `?task=${taskId}&attempt=1`);
    expect(log).toMatch(
      /task ended error after [\d.]+ s: lost the connection to the Docker engine while container slipway-ci-long-[0-9a-f]{8}\.1\.0-a1 ran \(its output stream closed while it still ran\)/,
    );
    const left = await containersOf(id);
    expect(left.map((container) => container.Id)).not.toContain(first!.Id);

    await harness.server.request('POST', `/api/job/${id}/cancel`, { token: harness.token });
    expect((await harness.waitForJob(id, 15_000)).status).toBe('cancelled');
  });

  it('retries a task after an engine restart', async () => {
    const id = await harness.trigger('ci-long', { commit: COMMIT });
    await waitForLog(id, 'testing');
    const { id: taskId } = await taskOf(id);
    const [first] = await containersOf(id);
    await proxy.down();

    // The step's container cannot be removed while the engine is away. The task waits for it
    // instead of ending without its retry, and the engine comes back within that wait.
    await waitForLog(id, "[slipway] the step's container could not be removed; the worker tries");
    expect((await taskOf(id)).status).toBe('running');
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    await proxy.up();

    const deadline = Date.now() + 40_000;
    while (!(await harness.logs(id, `?task=${taskId}&attempt=2`)).includes('testing')) {
      if (Date.now() > deadline) throw new Error('the second attempt did not start its step');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const log = await harness.logs(id, `?task=${taskId}&attempt=1`);
    expect(log).toMatch(
      /task ended error after [\d.]+ s: lost the connection to the Docker engine/,
    );
    expect(log).not.toContain('the task keeps its lease');
    const left = await containersOf(id);
    expect(left.map((container) => container.Id)).not.toContain(first!.Id);
    const retried = await harness.server.context.store.db
      .selectFrom('audit_log')
      .select('action')
      .where('task_id', '=', taskId)
      .where('action', 'in', ['task_retried', 'task_finished'])
      .execute();
    expect(retried.map((row) => row.action)).toEqual(['task_retried']);

    await harness.server.request('POST', `/api/job/${id}/cancel`, { token: harness.token });
    expect((await harness.waitForJob(id, 15_000)).status).toBe('cancelled');
  });

  it('ends a task without retries at once', async () => {
    const id = await harness.trigger('ci-once', { commit: COMMIT });
    await waitForLog(id, 'testing once');
    const downAt = Date.now();
    await proxy.down();

    try {
      // The stream's end, 2 s, and the failed inspection end the step; no wait for the removal.
      const job = await harness.waitForJob(id, 20_000);
      expect(job.status).toBe('error');
      expect(Date.now() - downAt).toBeLessThan(15_000);

      const log = await harness.logs(id);
      expect(log).not.toContain('the worker tries again');
      expect(log).toContain("[slipway] the step's container could not be removed, so its steps");
    } finally {
      await proxy.up();
    }

    await waitForRemovalAfterRestart(id);
  });

  it('ends the removal wait on a cancel', async () => {
    const id = await harness.trigger('ci-long', { commit: COMMIT });
    await waitForLog(id, 'testing');
    await proxy.down();

    let job: Awaited<ReturnType<typeof harness.waitForJob>>;
    let waitedMs: number;
    try {
      await waitForLog(id, "[slipway] the step's container could not be removed; the worker tries");
      const cancelledAt = Date.now();
      const cancel = await harness.server.request('POST', `/api/job/${id}/cancel`, {
        token: harness.token,
      });
      expect(cancel.status).toBeLessThan(300);
      job = await harness.waitForJob(id, 40_000);
      waitedMs = Date.now() - cancelledAt;
    } finally {
      await proxy.up();
    }
    // A cancelled task gets no retry, so the worker reports it without waiting out the 30 s.
    expect(waitedMs).toBeLessThan(10_000);
    expect(job.status).toBe('error');

    const log = await harness.logs(id);
    expect(log).toContain("[slipway] the step's container could not be removed, so its steps");
    const { id: taskId } = await taskOf(id);
    const retried = await harness.server.context.store.db
      .selectFrom('audit_log')
      .select('action')
      .where('task_id', '=', taskId)
      .where('action', '=', 'task_retried')
      .execute();
    expect(retried).toEqual([]);

    await waitForRemovalAfterRestart(id);
  });

  it('claims no docker tasks while the engine hangs', async () => {
    proxy.freeze();
    const id = await harness.trigger('ci-quick', { commit: COMMIT });

    // The first attempt finds the engine hung and ends `error`, and the retry stays queued.
    const deadline = Date.now() + 30_000;
    let task = await taskOf(id);
    while (task.status !== 'queued' || task.attempt !== 1) {
      if (Date.now() > deadline)
        throw new Error(`task still ${task.status}, attempt ${task.attempt}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
      task = await taskOf(id);
    }
    expect(task.reason).toContain(
      'the Docker engine did not respond to the lookup of the image within 3 s',
    );
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect((await taskOf(id)).status).toBe('queued');
    const waiting = await harness.server.request('GET', `/api/job/${id}`, {
      token: harness.token,
    });
    expect(waiting.body.reason).toMatch(
      /^every worker with the docker executor left it out of its claims because it cannot run it now \(/,
    );

    proxy.thaw();
    const job = await harness.waitForJob(id, 30_000);
    expect(job.status).toBe('success');
    expect(job.tasks[0].attempt).toBe(2);
  });
});
