/**
 * `slipway serve` killed with SIGKILL while a local step runs: the step's process group ends
 * with it, rather than running on beside the next attempt until a later start finds it.
 */
import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureBuilt, spawnCli, type CliProcess, waitUntil } from '../support/cli.js';
import { processesWith, writePipelineFile } from '../support/execution.js';
import { freePort } from '../support/ports.js';
import { makeTempDir } from '../support/server.js';

const ADMIN_TOKEN = 'slw_killed-worker-admin-token-000000000';

/** Returns the pids of the `sleep <seconds>` processes, leaving out the shells that name them. */
function sleeps(seconds: string): number[] {
  return processesWith(`sleep ${seconds}`).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8') === `sleep\0${seconds}\0`;
    } catch {
      return false;
    }
  });
}

describe('a worker killed with SIGKILL', () => {
  let serve: CliProcess | undefined;

  afterAll(async () => {
    if (serve !== undefined && serve.child.exitCode === null && serve.child.signalCode === null) {
      serve.child.kill('SIGKILL');
      await serve.exited;
    }
    for (const pid of [...sleeps('31.25'), ...sleeps('31.5')]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  });

  it('takes its running steps with it', { timeout: 60_000 }, async () => {
    await ensureBuilt();
    const port = await freePort();
    serve = spawnCli('serve', {
      SLIPWAY_DATA_DIR: makeTempDir('slipway-killed-worker-'),
      // The step's background sleep is a second process of its group.
      SLIPWAY_PIPELINES: writePipelineFile(`
pipelines:
  slow:
    executor: local
    steps: [{ run: 'sleep 31.25 & sleep 31.5; wait' }]
`),
      SLIPWAY_ADMIN_TOKEN: ADMIN_TOKEN,
      SLIPWAY_EXECUTOR: 'local',
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
    await waitUntil(
      () => sleeps('31.25').length > 0 && sleeps('31.5').length > 0,
      'both sleeps to start',
      20_000,
    );

    serve.child.kill('SIGKILL');
    await serve.exited;
    await waitUntil(() => sleeps('31.25').length === 0, 'the first sleep to end', 3_000);
    await waitUntil(() => sleeps('31.5').length === 0, 'the second sleep to end', 3_000);
  });
});
