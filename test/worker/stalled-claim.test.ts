/**
 * A worker that stalls after the API sent its claim response. The lease expires, the
 * orchestrator ends the task with side effects `error`, and only then does the worker read the
 * claim. It must not start the steps of that task, because a newer deploy may have run since.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recoverExpiredLeases } from '../../src/orchestrator/leases.js';
import { createToken } from '../../src/store/tokens.js';
import { ensureBuilt, spawnCli, type CliProcess, waitUntil } from '../support/cli.js';
import { writePipelineFile } from '../support/execution.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

const AGENT_TOKEN = 'slw_stalled-claim-agent-token-000000000';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('a worker that stalls after its claim', () => {
  const marker = path.join(makeTempDir('slipway-stalled-'), 'deployed');
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
    steps:
      - run: touch '${marker}'
`),
    });
    await server.context.store.write((trx) =>
      createToken(trx, 'stalled-claim-agent', 'agent', AGENT_TOKEN),
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

  it('does not start a deploy whose lease expired', async () => {
    worker = spawnCli('worker', {
      SLIPWAY_API_URL: server.url,
      SLIPWAY_AGENT_TOKEN: AGENT_TOKEN,
      SLIPWAY_EXECUTOR: 'local',
      SLIPWAY_WORKER_NAME: 'stalled',
      SLIPWAY_DATA_DIR: makeTempDir('slipway-worker-'),
      LOG_LEVEL: 'info',
    });
    await waitUntil(
      () => worker!.output().includes('worker stalled registered; waiting for tasks'),
      'the registration',
    );
    // Let the first claim reach the API and wait there, then stop the worker process.
    await sleep(500);
    worker.child.kill('SIGSTOP');

    const triggered = await server.request('POST', '/api/trigger/deploy', {
      token: server.adminToken,
      body: { commit: 'abcdef1' },
    });
    expect(triggered.status).toBe(201);
    const taskOf = () =>
      server.context.store.db
        .selectFrom('tasks')
        .select(['status', 'worker_id', 'lease_expires_at'])
        .where('job_id', '=', triggered.body.job_id)
        .executeTakeFirstOrThrow();
    const deadline = Date.now() + 10_000;
    while ((await taskOf()).worker_id !== 'stalled') {
      if (Date.now() > deadline) throw new Error('timed out waiting for the claim');
      await sleep(50);
    }

    const leaseEnd = Date.parse((await taskOf()).lease_expires_at!);
    await sleep(leaseEnd - Date.now() + 100);
    const recovered = await recoverExpiredLeases(server.context, { actor: 'orchestrator' });
    expect(recovered).toHaveLength(1);
    expect((await taskOf()).status).toBe('error');

    worker.child.kill('SIGCONT');
    // The worker drops the task either before its steps or when the API rejects its result.
    await waitUntil(() => worker!.output().includes('dropped'), 'the dropped task');
    expect(fs.existsSync(marker), worker.output()).toBe(false);
  });
});
