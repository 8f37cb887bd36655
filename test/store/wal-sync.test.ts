import { fork } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { openStore } from '../../src/store/database.js';
import { WalSync } from '../../src/store/wal-sync.js';
import { makeTempDir } from '../support/server.js';

afterEach(() => {
  vi.restoreAllMocks();
});

describe('WalSync', () => {
  it('runs a new fsync for calls made during one', async () => {
    const dir = makeTempDir();
    const dbPath = path.join(dir, 'db.sqlite');
    fs.writeFileSync(`${dbPath}-wal`, 'frames');
    const fsync = vi.spyOn(fs, 'fsync');
    const walSync = new WalSync(dbPath);

    const first = walSync.sync();
    const second = walSync.sync();
    const third = walSync.sync();
    await Promise.all([first, second, third]);

    // The calls made while the first fsync ran share one more fsync that started after them.
    expect(fsync).toHaveBeenCalledTimes(2);
    expect(second).toBe(third);
    walSync.close();
  });

  it('skips the fsync while no WAL exists', async () => {
    const dir = makeTempDir();
    const fsync = vi.spyOn(fs, 'fsync');
    const walSync = new WalSync(path.join(dir, 'db.sqlite'));
    await walSync.sync();
    expect(fsync).not.toHaveBeenCalled();
  });
});

describe('store durability', () => {
  it('uses NORMAL with a WAL and syncs each reported commit', async () => {
    const dir = makeTempDir();
    const store = await openStore(path.join(dir, 'db.sqlite'));
    expect(store.sqlite.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(store.sqlite.pragma('synchronous', { simple: true })).toBe(1);
    const fsync = vi.spyOn(fs, 'fsync');
    await store.write((trx) =>
      trx
        .insertInto('state_variables')
        .values({ name: 'A', value: '1', updated_at: 'now', synced_at: null, synced_value: null })
        .execute(),
    );
    expect(fsync).toHaveBeenCalledTimes(1);
    await store.close();
  });

  it('keeps every write reported before a SIGKILL', async () => {
    const dir = makeTempDir();
    const dbPath = path.join(dir, 'db.sqlite');
    const script = path.join(dir, 'writer.mjs');
    const databaseModule = new URL('../../src/store/database.ts', import.meta.url).href;
    fs.writeFileSync(
      script,
      `import { openStore } from ${JSON.stringify(databaseModule)};
const store = await openStore(process.argv[2]);
let next = 0;
const writeOne = async () => {
  const name = 'V' + next++;
  await store.write((trx) =>
    trx.insertInto('state_variables')
      .values({ name, value: 'x', updated_at: 'now', synced_at: null, synced_value: null })
      .execute(),
  );
  process.send(name);
};
for (let i = 0; i < 16; i++) (async () => { for (;;) await writeOne(); })();
`,
    );
    const child = fork(script, [dbPath], { execArgv: ['--import', 'tsx'], stdio: 'ignore' });
    const reported: string[] = [];
    child.on('message', (name) => reported.push(String(name)));
    await vi.waitUntil(() => reported.length >= 300, { timeout: 30_000, interval: 20 });
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));

    const sqlite = new BetterSqlite3(dbPath);
    const stored = new Set(
      sqlite
        .prepare('SELECT name FROM state_variables')
        .all()
        .map((row) => (row as { name: string }).name),
    );
    sqlite.close();
    const lost = reported.filter((name) => !stored.has(name));
    expect(lost).toEqual([]);
  });
});
