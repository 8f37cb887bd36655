/**
 * `slipway worker` started before the API responds, as compose may start it: it keeps trying
 * to register instead of exiting, runs tasks once the API is up, and stops cleanly on SIGTERM
 * while it is still waiting.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createToken } from '../../src/store/tokens.js';
import { ensureBuilt, spawnCli, type CliProcess, waitUntil } from '../support/cli.js';
import { writePipelineFile } from '../support/execution.js';
import { freePort } from '../support/ports.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

const AGENT_TOKEN = 'slw_late-api-agent-token-0000000000000';

function startWorker(port: number, name: string): CliProcess {
  return spawnCli('worker', {
    SLIPWAY_API_URL: `http://127.0.0.1:${port}`,
    SLIPWAY_AGENT_TOKEN: AGENT_TOKEN,
    SLIPWAY_EXECUTOR: 'local',
    SLIPWAY_WORKER_NAME: name,
    SLIPWAY_DATA_DIR: makeTempDir('slipway-worker-'),
    LOG_LEVEL: 'info',
  });
}

describe('slipway worker before the API', () => {
  let server: TestServer | undefined;

  beforeAll(async () => {
    await ensureBuilt();
  });

  afterAll(async () => {
    await server?.close();
  });

  it('stops on SIGTERM while waiting', async () => {
    const worker = startWorker(await freePort(), 'late-stop');
    await waitUntil(() => worker.output().includes('retrying until the API answers'), 'a retry');
    worker.child.kill('SIGTERM');
    expect(await worker.exited).toBe(0);
  });

  it('registers once the API answers', async () => {
    const port = await freePort();
    const worker = startWorker(port, 'late-start');
    try {
      await waitUntil(() => worker.output().includes('retrying until the API answers'), 'a retry');
      expect(worker.child.exitCode).toBeNull();

      server = await startTestServer({
        API_PORT: String(port),
        SLIPWAY_PIPELINES: writePipelineFile(`
pipelines:
  quick:
    executor: local
    steps:
      - run: echo late-api-done
`),
      });
      await server.context.store.write((trx) =>
        createToken(trx, 'late-agent', 'agent', AGENT_TOKEN),
      );
      await waitUntil(
        () => worker.output().includes('worker late-start registered; waiting for tasks'),
        'the registration',
      );
      const triggered = await server.request('POST', '/api/trigger/quick', {
        token: server.adminToken,
        body: { commit: 'abcdef1' },
      });
      expect(triggered.status).toBe(201);
      const id = triggered.body.job_id as string;
      let status = '';
      for (let tries = 0; tries < 200 && status !== 'success'; tries += 1) {
        if (tries > 0) await new Promise((resolve) => setTimeout(resolve, 100));
        const job = await server.request('GET', `/api/job/${id}`, { token: server.adminToken });
        status = job.body.status as string;
      }
      expect(status).toBe('success');
    } finally {
      worker.child.kill('SIGTERM');
      await worker.exited;
    }
  });
});
