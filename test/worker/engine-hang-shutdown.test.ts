/**
 * A worker that stops while its Docker engine hangs under a deploy. The stop cannot remove the
 * step's container, so the steps may still run: the task must end without a hand-back, which
 * would end its lease at once, and the next deploy of its concurrency group must wait. The
 * engine is the real one, behind a proxy that keeps its bytes back.
 */
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { claimCandidates } from '../../src/dispatch/claim.js';
import { LABEL_JOB } from '../../src/jobs/labels.js';
import { requireDocker, TEST_IMAGE } from '../support/docker.js';
import { startEngineProxy, type EngineProxy } from '../support/engine-proxy.js';
import { startHarness, writePipelineFile, type ExecutionHarness } from '../support/execution.js';

const COMMIT = '0123456789abcdef0123456789abcdef01234567';

describe('a worker that stops while its Docker engine hangs', () => {
  let docker: Docker;
  let proxy: EngineProxy;
  let harness: ExecutionHarness;
  const jobs: string[] = [];

  beforeAll(async () => {
    docker = await requireDocker();
    proxy = await startEngineProxy();
    harness = await startHarness({
      SLIPWAY_PIPELINES: writePipelineFile(`
pipelines:
  deploy-long:
    executor: docker
    image: ${TEST_IMAGE}
    network: none
    side_effects: true
    concurrency: { group: deploy, cancel_in_progress: false }
    steps:
      - name: roll-out
        run: echo rolling; sleep 300
  ci-long:
    executor: docker
    image: ${TEST_IMAGE}
    network: none
    concurrency: { group: test-env, cancel_in_progress: false }
    steps:
      - name: test
        run: echo testing; sleep 300
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
    concurrency: { group: test-env, cancel_in_progress: false }
    steps:
      - name: test
        run: echo quick
`),
      SLIPWAY_EXECUTOR: 'docker',
      SLIPWAY_WORKER_CAPACITY: '2',
      SLIPWAY_WORKER_SHUTDOWN_SECONDS: '0',
      DOCKER_HOST: `unix://${proxy.socketPath}`,
      SLIPWAY_DOCKER_TIMEOUT_SECONDS: '3',
    });
  });

  afterAll(async () => {
    proxy?.thaw();
    await harness?.close();
    await proxy?.close();
    // The stopped worker could not remove the containers, so the test does.
    for (const job of jobs) {
      for (const container of await containersOf(job)) {
        await docker.getContainer(container.Id).remove({ force: true, v: true });
      }
    }
  });

  const containersOf = (jobId: string) =>
    docker.listContainers({ all: true, filters: { label: [`${LABEL_JOB}=${jobId}`] } });

  async function waitForLog(jobId: string, text: string): Promise<void> {
    const deadline = Date.now() + 20_000;
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

  const auditOf = (jobId: string) =>
    harness.server.context.store.db
      .selectFrom('audit_log')
      .select(['action', 'details'])
      .where('job_id', '=', jobId)
      .where('action', 'in', ['task_finished', 'task_released', 'task_step_stopped'])
      .orderBy('id')
      .execute();

  it('keeps the leases of steps that may run', async () => {
    const deploy = await harness.trigger('deploy-long', { commit: COMMIT });
    const ci = await harness.trigger('ci-long', { commit: COMMIT });
    jobs.push(deploy, ci);
    await waitForLog(deploy, 'rolling');
    await waitForLog(ci, 'testing');
    proxy.freeze();

    // The grace period is 0 s: the stop kills the steps at once, the engine does not confirm
    // within 3 s, and the cleanup's listing of the containers gets no response within 3 s.
    await harness.worker.stop();

    for (const job of [deploy, ci]) {
      const task = await taskOf(job);
      expect(task.lease_expires_at).not.toBeNull();
      expect(task.status).toBe('error');
      expect(task.reason).toMatch(
        /^worker \S+ stopped before the task ended; the Docker engine did not confirm within 3 s that container \S+ stopped/,
      );
      const rows = await auditOf(job);
      expect(rows.map((row) => row.action)).toEqual(['task_finished']);
      expect(JSON.parse(rows[0]!.details!)).toMatchObject({ status: 'error', step_stopped: false });
      expect((await containersOf(job))[0]?.State).toBe('running');
    }
    const log = await harness.logs(deploy);
    expect(log).toContain(
      "[slipway] the worker is stopping, and the step's container could not be removed",
    );

    // The next job of each group waits while the old step may run.
    const nextDeploy = await harness.trigger('deploy-quick', { commit: COMMIT });
    const nextCi = await harness.trigger('ci-quick', { commit: COMMIT });
    jobs.push(nextDeploy, nextCi);
    const db = harness.server.context.store.db;
    const claimable = await claimCandidates(db, ['docker', 'local'], 10).execute();
    expect(claimable.map((task) => task.job_id)).not.toContain(nextDeploy);
    expect(claimable.map((task) => task.job_id)).not.toContain(nextCi);
  });
});
