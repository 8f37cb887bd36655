import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ensureBuilt, runCli } from '../support/cli.js';
import { makeTempDir } from '../support/server.js';

describe('slipway serve registration errors', () => {
  it('exits when it cannot register', { timeout: 90_000 }, async () => {
    await ensureBuilt();
    const dataDir = makeTempDir();
    const env = { SLIPWAY_DATA_DIR: dataDir, API_PORT: '0', LOG_LEVEL: 'warn' };
    const init = await runCli(['init-db'], env);
    expect(init.code, init.stderr).toBe(0);
    // A file in place of the directory of process entries fails the registration before any
    // role starts, as a full disk does.
    const entries = path.join(dataDir, 'state', 'orchestration.db.processes');
    fs.rmSync(entries, { recursive: true, force: true });
    fs.writeFileSync(entries, '');

    const result = await runCli(['serve'], env, 30_000);

    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`cannot register this process in ${entries}`);
    expect(result.stderr).toContain('EEXIST');
  });
});
