/**
 * TaskLogStore on a file that cannot grow: a child process under `ulimit -f 1` gets EFBIG part
 * way through a write, as a full disk gives ENOSPC.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { TaskLogStore } from '../../src/logs/task-log-store.js';
import { CLI_PATH, ensureBuilt } from '../support/cli.js';
import { makeTempDir } from '../support/server.js';

/** Appends three uploads to a log whose process may write at most 1,024 bytes to a file. */
const SCRIPT = `
const { TaskLogStore } = await import(process.argv[1]);
const store = new TaskLogStore(process.argv[2], 1_000_000);
const file = store.pathFor('ci-0123abcd', 'ci-0123abcd.1.0', 1);
const results = [];
for (const [offset, text] of [[0, 'a'.repeat(600)], [600, 'b'.repeat(600)], [600, 'b'.repeat(300)]]) {
  results.push(await store.append(file, offset, Buffer.from(text)).then(
    (result) => result.received,
    (error) => error.code,
  ));
}
console.log(JSON.stringify({ file, results }));
`;

describe('task log store', () => {
  beforeAll(async () => {
    await ensureBuilt();
  });

  it('stores nothing of an upload that failed part way', () => {
    const root = makeTempDir('slipway-log-store-');
    const dist = path.dirname(path.dirname(CLI_PATH));
    const module = pathToFileURL(path.join(dist, 'logs', 'task-log-store.js')).href;
    // bash counts ulimit -f in blocks of 1,024 bytes. bash -c passes node, the script and
    // its two arguments as $0 to $3.
    const command = 'ulimit -f 1 && exec "$0" --input-type=module -e "$1" "$2" "$3"';
    const child = spawnSync('bash', ['-c', command, process.execPath, SCRIPT, module, root], {
      encoding: 'utf8',
    });
    expect(child.stderr).toBe('');
    const { file, results } = JSON.parse(child.stdout) as { file: string; results: unknown[] };
    // The second upload fails after 424 bytes. Its shorter retry fits.
    expect(results).toEqual([600, 'EFBIG', 900]);
    expect(fs.readFileSync(file, 'utf8')).toBe('a'.repeat(600) + 'b'.repeat(300));
  });

  it('creates owner-only logs in an open root', async () => {
    // An operator may create ORCHESTRATION_LOG_PATH readable by all, as mkdir does under the
    // usual umask 022.
    const root = makeTempDir('slipway-log-modes-');
    fs.chmodSync(root, 0o755);
    const store = new TaskLogStore(root, 1_000_000);
    const created = store.pathFor('ci-0123abcd', 'ci-0123abcd.1.0', 1);
    const appended = store.pathFor('ci-4567abcd', 'ci-4567abcd.1.0', 1);

    await store.create(created);
    await store.append(appended, 0, Buffer.from('output\n'));

    for (const file of [created, appended]) {
      expect(fs.statSync(path.dirname(file)).mode & 0o777, path.dirname(file)).toBe(0o700);
      expect(fs.statSync(file).mode & 0o777, file).toBe(0o600);
    }
  });
});
