/**
 * A second SIGINT or SIGTERM while `slipway serve` waits for running tasks to stop: the
 * process exits at once, as Node's default action would, and logs what that leaves behind.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { listStepCgroups, stepCgroupParent } from '../../src/execution/cgroup.js';
import { ensureBuilt, spawnCli, type CliProcess, waitUntil } from '../support/cli.js';
import { processesWith, writePipelineFile } from '../support/execution.js';
import { freePort } from '../support/ports.js';
import { makeTempDir } from '../support/server.js';

const ADMIN_TOKEN = 'slw_repeated-signal-admin-token-00000000';

describe('a second signal during the stop', () => {
  let serve: CliProcess | undefined;

  afterAll(async () => {
    if (serve !== undefined && serve.child.exitCode === null && serve.child.signalCode === null) {
      serve.child.kill('SIGKILL');
      await serve.exited;
    }
  });

  it('exits at once and logs why', { timeout: 60_000 }, async () => {
    await ensureBuilt();
    const port = await freePort();
    serve = spawnCli('serve', {
      SLIPWAY_DATA_DIR: makeTempDir('slipway-repeated-signal-'),
      SLIPWAY_PIPELINES: writePipelineFile(`
pipelines:
  slow:
    executor: local
    steps: [{ run: 'sleep 30.25' }]
`),
      SLIPWAY_ADMIN_TOKEN: ADMIN_TOKEN,
      SLIPWAY_EXECUTOR: 'local',
      SLIPWAY_WORKER_SHUTDOWN_SECONDS: '20',
      API_HOST: '127.0.0.1',
      API_PORT: String(port),
      LOG_LEVEL: 'info',
    });
    await waitUntil(() => serve!.output().includes('registered; waiting for tasks'), 'the start');
    const triggered = await fetch(`http://127.0.0.1:${port}/api/trigger/slow`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ commit: 'abcdef1' }),
    });
    expect(triggered.status).toBe(201);
    const { job_id: jobId } = (await triggered.json()) as { job_id: string };
    const deadline = Date.now() + 20_000;
    for (;;) {
      const job = await fetch(`http://127.0.0.1:${port}/api/job/${jobId}`, {
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      });
      if (((await job.json()) as { status: string }).status === 'running') break;
      if (Date.now() > deadline) throw new Error(`job ${jobId} did not start:\n${serve.output()}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }

    serve.child.kill('SIGTERM');
    await waitUntil(() => serve!.output().includes('waiting for 1 running task(s)'), 'the wait');
    const second = Date.now();
    serve.child.kill('SIGINT');
    expect(await serve.exited).toBe(130);
    expect(Date.now() - second).toBeLessThan(5_000);
    expect(serve.output()).toContain('received SIGINT again, exiting now');
    // The step ends with the process instead of running on until the next start finds it.
    expect(serve.output()).toContain('1 local step(s) were killed');
    await waitUntil(() => processesWith('sleep 30.25').length === 0, 'the step to end', 3_000);
    // Its step cgroup, where the worker can make one, is removed before the exit.
    const parent = stepCgroupParent();
    if (parent !== undefined) {
      const left = listStepCgroups(parent).filter(({ owner }) => owner.pid === serve!.child.pid);
      expect(left.map(({ cgroup }) => cgroup.dir)).toEqual([]);
    }
  });
});
