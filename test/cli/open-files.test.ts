/** The check of the open files limit that runs before the program loads. */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { MIN_OPEN_FILES, openFilesLimit, openFilesProblem } from '../../src/cli/open-files.js';
import { CLI_PATH, ensureBuilt } from '../support/cli.js';
import { makeTempDir } from '../support/server.js';

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
`;

describe('open files limit', () => {
  it('reads the soft limit', () => {
    expect(openFilesLimit(LIMITS)).toBe(1024);
    expect(openFilesLimit(LIMITS.replace('1024 ', 'unlimited '))).toBe(Infinity);
    expect(openFilesLimit('Limit  Soft Limit\n')).toBeUndefined();
    expect(openFilesLimit('')).toBeUndefined();
  });

  it('names a limit that is too low', () => {
    expect(openFilesProblem(MIN_OPEN_FILES)).toBeUndefined();
    expect(openFilesProblem(undefined)).toBeUndefined();
    expect(openFilesProblem(100)).toContain('may open only 100 files (ulimit -Hn)');
  });

  it('stops the command under a low limit', { timeout: 60_000 }, async () => {
    await ensureBuilt();
    const dataDir = makeTempDir('slipway-open-files-');
    const run = (limit: number) =>
      spawnSync(
        'bash',
        ['-c', `ulimit -n ${limit} && exec "$0" "$1" init-db`, process.execPath, CLI_PATH],
        {
          env: { ...process.env, SLIPWAY_DATA_DIR: dataDir },
          encoding: 'utf8',
          timeout: 30_000,
        },
      );

    const low = run(256);
    const enough = run(MIN_OPEN_FILES);

    expect(low.status).toBe(2);
    expect(low.stderr).toBe(openFilesProblem(256));
    expect(enough.stderr).not.toContain('ulimit');
    expect(enough.status).toBe(0);
  });
});
