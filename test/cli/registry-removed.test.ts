/**
 * An API whose process registry folder was removed while it ran (an operator cleaning the
 * data folder, or a benchmark starting its next round) must still stop on SIGTERM.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ensureBuilt, spawnCli } from '../support/cli.js';
import { makeTempDir } from '../support/server.js';

describe('an API without its registry folder', { timeout: 60_000 }, () => {
  it('stops on SIGTERM', async () => {
    await ensureBuilt();
    const dataDir = makeTempDir('slipway-registry-');
    const api = spawnCli('api', {
      SLIPWAY_DATA_DIR: dataDir,
      API_HOST: '127.0.0.1',
      API_PORT: '0',
      LOG_LEVEL: 'info',
    });
    const deadline = Date.now() + 20_000;
    while (!api.output().includes('API listening on')) {
      if (Date.now() > deadline || api.child.exitCode !== null) throw new Error(api.output());
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    fs.rmSync(path.join(dataDir, 'state', 'orchestration.db.processes'), {
      recursive: true,
      force: true,
    });

    const stopped = Date.now();
    api.child.kill('SIGTERM');
    const code = await Promise.race([
      api.exited,
      new Promise((resolve) => setTimeout(() => resolve('still running'), 10_000)),
    ]);
    if (code === 'still running') api.child.kill('SIGKILL');
    expect(code, api.output()).toBe(0);
    expect(Date.now() - stopped).toBeLessThan(10_000);
    expect(api.output()).toContain('could not clear the serving mark in the process registry');
  });
});
