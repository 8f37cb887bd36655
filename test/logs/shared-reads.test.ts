/**
 * SharedReads on real log files: followers that read the same file at the same offset at
 * the same time share one read, and an append makes the next reader look at the file again.
 */
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SharedReads } from '../../src/logs/follow.js';
import { TaskLogStore } from '../../src/logs/task-log-store.js';
import { makeTempDir } from '../support/server.js';

async function storeWithLog(text: string): Promise<{ logs: TaskLogStore; file: string }> {
  const logs = new TaskLogStore(makeTempDir('slipway-shared-reads-'), 1_000_000);
  const file = logs.pathFor('ci-0123abcd', 'ci-0123abcd.1.0', 1);
  await logs.create(file);
  await logs.append(file, 0, Buffer.from(text));
  return { logs, file };
}

describe('shared reads of a followed log', () => {
  it('shares a read in progress', async () => {
    const { logs, file } = await storeWithLog('first line\n');
    const shared = new SharedReads(logs);

    const first = shared.read(file, 0);
    const second = shared.read(file, 0);
    const elsewhere = shared.read(file, 6);

    expect(second).toBe(first);
    expect(elsewhere).not.toBe(first);
    expect((await first).toString()).toBe('first line\n');
    expect((await elsewhere).toString()).toBe('line\n');
  });

  it('reads again once a read ended', async () => {
    const { logs, file } = await storeWithLog('first line\n');
    const shared = new SharedReads(logs);

    const first = shared.read(file, 0);
    await first;
    fs.appendFileSync(file, 'written by another process\n');
    const later = shared.read(file, 0);

    expect(later).not.toBe(first);
    expect((await later).toString()).toBe('first line\nwritten by another process\n');
  });

  it('reads again after an append', async () => {
    const { logs, file } = await storeWithLog('first line\n');
    const shared = new SharedReads(logs);

    // The read starts before the append, so its end of file may come before the new bytes.
    // The store emits the event of an append once the bytes are written, as here.
    const before = shared.read(file, 0);
    fs.appendFileSync(file, 'second line\n');
    logs.changes.emit('append', file);
    const after = shared.read(file, 0);

    expect(after).not.toBe(before);
    expect((await after).toString()).toBe('first line\nsecond line\n');
  });

  it('finds no bytes in a missing file', async () => {
    const { logs } = await storeWithLog('');
    const shared = new SharedReads(logs);

    const bytes = await shared.read(logs.pathFor('ci-0123abcd', 'ci-0123abcd.1.0', 2), 0);

    expect(bytes.length).toBe(0);
  });
});
