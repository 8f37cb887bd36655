/**
 * A worker started with an open descriptor that lacks close-on-exec (from a supervisor or a
 * shell's `exec 200>file`) must not pass it to its local steps: a step could write there, or
 * keep a pipe open after the worker has exited.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { ensureBuilt, spawnCli, type CliProcess, waitUntil } from '../support/cli.js';
import { writePipelineFile } from '../support/execution.js';
import { freePort } from '../support/ports.js';
import { makeTempDir } from '../support/server.js';

const ADMIN_TOKEN = 'slw_step-descriptors-admin-token-000000';
/** Node.js 20 leaves close-on-exec unset on an inherited descriptor this high. */
const HIGH_FD = 200;

describe('descriptors that the worker inherited', () => {
  let serve: CliProcess | undefined;

  afterAll(async () => {
    if (serve !== undefined && serve.child.exitCode === null && serve.child.signalCode === null) {
      serve.child.kill('SIGTERM');
      await serve.exited;
    }
  });

  it('reach a local step as /dev/null', { timeout: 60_000 }, async () => {
    await ensureBuilt();
    const port = await freePort();
    const extra: Array<'ignore' | 'pipe'> = Array.from({ length: HIGH_FD - 3 }, () => 'ignore');
    serve = spawnCli(
      'serve',
      {
        SLIPWAY_DATA_DIR: makeTempDir('slipway-step-descriptors-'),
        SLIPWAY_PIPELINES: writePipelineFile(`
pipelines:
  show:
    executor: local
    steps: [{ run: 'echo "fd ${HIGH_FD}: $(readlink /proc/self/fd/${HIGH_FD} || echo closed)"' }]
`),
        SLIPWAY_ADMIN_TOKEN: ADMIN_TOKEN,
        SLIPWAY_EXECUTOR: 'local',
        API_HOST: '127.0.0.1',
        API_PORT: String(port),
      },
      [...extra, 'pipe'],
    );
    await waitUntil(() => serve!.output().includes('registered; waiting for tasks'), 'the start');
    const headers = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };
    const triggered = await fetch(`http://127.0.0.1:${port}/api/trigger/show`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ commit: 'abcdef1' }),
    });
    expect(triggered.status).toBe(201);
    const { job_id: jobId } = (await triggered.json()) as { job_id: string };

    const deadline = Date.now() + 20_000;
    let status = 'queued';
    while (!['success', 'failure', 'error'].includes(status) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      const job = await fetch(`http://127.0.0.1:${port}/api/job/${jobId}`, { headers });
      status = ((await job.json()) as { status: string }).status;
    }
    expect(status).toBe('success');
    const logs = await fetch(`http://127.0.0.1:${port}/api/job/${jobId}/logs`, { headers });
    const text = await logs.text();
    expect(text).toContain(`fd ${HIGH_FD}: /dev/null`);
    expect(text).not.toContain('pipe:');
  });
});
