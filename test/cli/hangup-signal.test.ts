/**
 * SIGHUP, which a closing terminal or SSH session sends, stops `slipway serve` in the same
 * order as SIGTERM: the log names the signal, the running local step is stopped, and the
 * process exits 0.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureBuilt, spawnCli, type CliProcess, waitUntil } from '../support/cli.js';
import { writePipelineFile } from '../support/execution.js';
import { freePort } from '../support/ports.js';
import { makeTempDir } from '../support/server.js';

const ADMIN_TOKEN = 'slw_hangup-signal-admin-token-000000000';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('SIGHUP to serve', () => {
  let serve: CliProcess | undefined;
  let stepPid: number | undefined;

  afterAll(async () => {
    if (stepPid !== undefined && isAlive(stepPid)) process.kill(stepPid, 'SIGKILL');
    if (serve !== undefined && serve.child.exitCode === null && serve.child.signalCode === null) {
      serve.child.kill('SIGKILL');
      await serve.exited;
    }
  });

  it('stops in order and stops the step', { timeout: 60_000 }, async () => {
    await ensureBuilt();
    const port = await freePort();
    const pidFile = path.join(makeTempDir('slipway-hangup-step-'), 'step.pid');
    serve = spawnCli('serve', {
      SLIPWAY_DATA_DIR: makeTempDir('slipway-hangup-signal-'),
      SLIPWAY_PIPELINES: writePipelineFile(`
pipelines:
  slow:
    executor: local
    steps: [{ run: 'echo $$ > ${pidFile}; exec sleep 30' }]
`),
      SLIPWAY_ADMIN_TOKEN: ADMIN_TOKEN,
      SLIPWAY_EXECUTOR: 'local',
      SLIPWAY_WORKER_SHUTDOWN_SECONDS: '1',
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
      () => fs.existsSync(pidFile) && fs.readFileSync(pidFile, 'utf8').trim() !== '',
      'the step start',
    );
    stepPid = Number(fs.readFileSync(pidFile, 'utf8').trim());
    expect(isAlive(stepPid)).toBe(true);

    serve.child.kill('SIGHUP');
    expect(await serve.exited, serve.output()).toBe(0);
    expect(serve.output()).toContain('received SIGHUP, stopping');
    expect(serve.output()).toContain('worker stopped: 0 task(s) finished, 1 handed back');
    expect(isAlive(stepPid)).toBe(false);
  });
});
