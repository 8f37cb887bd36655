/**
 * A worker that stalls while a deploy step runs. Its lease expires and the deploy ends
 * `error`, but the step may still run, so the next deploy of the concurrency group must wait
 * until the worker returns and confirms that the step stopped.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recoverExpiredLeases } from '../../src/orchestrator/leases.js';
import { createToken } from '../../src/store/tokens.js';
import { ensureBuilt, spawnCli, type CliProcess, waitUntil } from '../support/cli.js';
import { writePipelineFile } from '../support/execution.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

const AGENT_TOKEN = 'slw_lease-fence-agent-token-0000000000';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('a worker that stalls during a deploy step', () => {
  const steps = path.join(makeTempDir('slipway-fence-'), 'steps.log');
  let server: TestServer;
  let worker: CliProcess | undefined;

  beforeAll(async () => {
    await ensureBuilt();
    server = await startTestServer({
      SLIPWAY_LEASE_SECONDS: '2',
      SLIPWAY_PIPELINES: writePipelineFile(`
pipelines:
  deploy:
    executor: local
    concurrency: { group: deploy, cancel_in_progress: false }
    steps:
      - run: echo "started $SLIPWAY_JOB_ID" >> '${steps}'; sleep 30; echo "finished $SLIPWAY_JOB_ID" >> '${steps}'
`),
    });
    await server.context.store.write((trx) =>
      createToken(trx, 'lease-fence-agent', 'agent', AGENT_TOKEN),
    );
  });

  afterAll(async () => {
    if (worker !== undefined && worker.child.exitCode === null) {
      worker.child.kill('SIGCONT');
      worker.child.kill('SIGTERM');
      await worker.exited;
    }
    await server?.close();
  });

  const taskOf = (jobId: string) =>
    server.context.store.db
      .selectFrom('tasks')
      .selectAll()
      .where('job_id', '=', jobId)
      .executeTakeFirstOrThrow();

  /** Claims as a second worker with no wait, and returns the ids of the tasks it got. */
  async function claimAsOther(): Promise<string[]> {
    const response = await server.request('POST', '/api/agent/workers/fence-other/claim', {
      token: AGENT_TOKEN,
      body: { max: 1, wait_seconds: 0 },
    });
    expect(response.status, response.text).toBe(200);
    return (response.body.tasks as Array<{ task_id: string }>).map((task) => task.task_id);
  }

  it('holds the group until the step stopped', async () => {
    worker = spawnCli('worker', {
      SLIPWAY_API_URL: server.url,
      SLIPWAY_AGENT_TOKEN: AGENT_TOKEN,
      SLIPWAY_EXECUTOR: 'local',
      SLIPWAY_WORKER_NAME: 'fence-stalled',
      SLIPWAY_DATA_DIR: makeTempDir('slipway-worker-'),
      LOG_LEVEL: 'info',
    });
    await waitUntil(
      () => worker!.output().includes('worker fence-stalled registered; waiting for tasks'),
      'the registration',
    );
    const first = await server.request('POST', '/api/trigger/deploy', {
      token: server.adminToken,
      body: { commit: 'abcdef1' },
    });
    expect(first.status).toBe(201);
    await waitUntil(
      () => fs.existsSync(steps) && fs.readFileSync(steps, 'utf8').includes('started'),
      'the first deploy step',
    );
    worker.child.kill('SIGSTOP');

    const leaseEnd = Date.parse((await taskOf(first.body.job_id)).lease_expires_at!);
    await sleep(leaseEnd - Date.now() + 100);
    const recovered = await recoverExpiredLeases(server.context, { actor: 'orchestrator' });
    expect(recovered).toHaveLength(1);
    expect(recovered[0]!.fencedUntil).not.toBeNull();
    const lost = await taskOf(first.body.job_id);
    expect(lost.status).toBe('error');
    expect(lost.reason).toContain('concurrency group deploy waits until the worker confirms');

    const registered = await server.request('POST', '/api/agent/workers', {
      token: AGENT_TOKEN,
      body: { name: 'fence-other', hostname: 'test-host', executors: ['local'], capacity: 1 },
    });
    expect(registered.status, registered.text).toBeLessThan(300);
    const second = await server.request('POST', '/api/trigger/deploy', {
      token: server.adminToken,
      body: { commit: 'abcdef2' },
    });
    expect(second.status).toBe(201);
    // The stalled worker's step may still run, so the next deploy of the group waits.
    expect(await claimAsOther()).toEqual([]);
    const waiting = await server.request('GET', `/api/job/${second.body.job_id}`, {
      token: server.adminToken,
    });
    expect(waiting.body.reason).toContain(
      `waits for a worker to confirm that a step of job ${first.body.job_id}`,
    );

    worker.child.kill('SIGCONT');
    const deadline = Date.now() + 20_000;
    while ((await taskOf(first.body.job_id)).lease_expires_at !== null) {
      if (Date.now() > deadline) throw new Error(`no confirmed stop: ${worker.output()}`);
      await sleep(50);
    }
    const stopped = await server.context.store.db
      .selectFrom('audit_log')
      .select('details')
      .where('action', '=', 'task_step_stopped')
      .where('job_id', '=', first.body.job_id)
      .execute();
    expect(stopped).toHaveLength(1);
    expect((await taskOf(first.body.job_id)).status).toBe('error');
    // Now either worker may claim the next deploy: the resumed one waits in a claim of its own.
    await claimAsOther();
    while ((await taskOf(second.body.job_id)).worker_id === null) {
      if (Date.now() > deadline) throw new Error('the next deploy was not claimed');
      await sleep(50);
    }
    expect(fs.readFileSync(steps, 'utf8')).not.toContain(`finished ${first.body.job_id}`);
  });
});
