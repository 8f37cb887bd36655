/**
 * A worker that stops while it retries the removal of a container on a hung Docker engine.
 * Each retry's engine requests take up to SLIPWAY_DOCKER_TIMEOUT_SECONDS; the stop must not
 * wait for the one in flight, since its grace period is over. The engine is the real one,
 * behind a proxy that withholds its bytes.
 */
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LABEL_JOB } from '../../src/jobs/labels.js';
import { requireDocker, TEST_IMAGE } from '../support/docker.js';
import { startEngineProxy, type EngineProxy } from '../support/engine-proxy.js';
import { startHarness, writePipelineFile, type ExecutionHarness } from '../support/execution.js';

const COMMIT = '0123456789abcdef0123456789abcdef01234567';

describe('a worker that stops during the container removal', () => {
  let docker: Docker;
  let proxy: EngineProxy;
  let harness: ExecutionHarness;
  let jobId: string | undefined;

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
    timeout: 1s
    concurrency: { group: deploy, cancel_in_progress: false }
    steps:
      - name: roll-out
        run: echo rolling; sleep 300
`),
      SLIPWAY_EXECUTOR: 'docker',
      SLIPWAY_WORKER_SHUTDOWN_SECONDS: '0',
      DOCKER_HOST: `unix://${proxy.socketPath}`,
      SLIPWAY_DOCKER_TIMEOUT_SECONDS: '5',
    });
  });

  afterAll(async () => {
    proxy?.thaw();
    await harness?.close();
    await proxy?.close();
    // The stopped worker gave up the removal, so the test removes the container.
    if (jobId === undefined) return;
    const left = await docker.listContainers({
      all: true,
      filters: { label: [`${LABEL_JOB}=${jobId}`] },
    });
    for (const container of left) {
      await docker.getContainer(container.Id).remove({ force: true, v: true });
    }
  });

  async function waitForLog(text: string): Promise<void> {
    const deadline = Date.now() + 30_000;
    while (!(await harness.logs(jobId!)).includes(text)) {
      if (Date.now() > deadline) throw new Error(`no "${text}" in the log of ${jobId}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  it('ends the removal at once', async () => {
    jobId = await harness.trigger('deploy-hang', { commit: COMMIT });
    await waitForLog('rolling');
    proxy.freeze();

    // 1 s timeout, 5 s for the engine to confirm the kill, 5 s for the cleanup, then the
    // report with step_stopped=false.
    await waitForLog("[slipway] the step's container could not be removed");
    const job = await harness.waitForJob(jobId, 20_000);
    expect(job.status).toBe('timed_out');
    // The first retry starts 1 s after the report, and its listing of the containers waits
    // for the engine for up to 5 s.
    await new Promise((resolve) => setTimeout(resolve, 2_000));

    const started = Date.now();
    await harness.worker.stop();
    expect(Date.now() - started).toBeLessThan(2_000);
    const task = await harness.server.context.store.db
      .selectFrom('tasks')
      .select(['lease_expires_at'])
      .where('job_id', '=', jobId)
      .executeTakeFirstOrThrow();
    expect(task.lease_expires_at).not.toBeNull();
  });
});
