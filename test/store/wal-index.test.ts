/**
 * WalIndexHeader: commits seen through the WAL index header of a real SQLite file, by this
 * connection, another connection and another process.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../../src/store/database.js';
import { WalIndexHeader } from '../../src/store/wal-index.js';
import { makeTempDir } from '../support/server.js';

const require = createRequire(import.meta.url);

function openWalDatabase(file: string): BetterSqlite3.Database {
  const sqlite = new BetterSqlite3(file);
  sqlite.pragma('journal_mode = WAL');
  sqlite.exec('CREATE TABLE IF NOT EXISTS t (v INTEGER)');
  return sqlite;
}

describe('WAL index header', () => {
  const opened: Array<{ close(): void }> = [];
  afterEach(() => {
    for (const item of opened.splice(0).reverse()) item.close();
  });

  function setUp(): { file: string; sqlite: BetterSqlite3.Database; header: WalIndexHeader } {
    const file = path.join(makeTempDir(), 'wal-index.db');
    const sqlite = openWalDatabase(file);
    opened.push(sqlite);
    const header = WalIndexHeader.open(file)!;
    expect(header).toBeDefined();
    opened.push(header);
    return { file, sqlite, header };
  }

  it('stays the same while nothing commits', () => {
    const { sqlite, header } = setUp();
    const before = header.changeCount();
    sqlite.prepare('SELECT count(*) FROM t').get();
    expect(header.changeCount()).toBe(before);
    expect(header.changeCount()).toBe(before);
  });

  it('changes with each commit of another connection', () => {
    const { file, header } = setUp();
    const other = openWalDatabase(file);
    opened.push(other);
    let last = header.changeCount();
    for (let i = 0; i < 5; i += 1) {
      other.prepare('INSERT INTO t (v) VALUES (?)').run(i);
      const now = header.changeCount();
      expect(now).toBeGreaterThan(last);
      last = now;
    }
  });

  it('changes with a commit of another process', () => {
    const { file, header } = setUp();
    const before = header.changeCount();
    const script = `
      const Database = require(${JSON.stringify(require.resolve('better-sqlite3'))});
      const sqlite = new Database(${JSON.stringify(file)});
      sqlite.prepare('INSERT INTO t (v) VALUES (1)').run();
      sqlite.close();`;
    execFileSync(process.execPath, ['-e', script]);
    expect(header.changeCount()).toBeGreaterThan(before);
  });

  it('changes with a commit after the WAL restarts', () => {
    const { sqlite, header } = setUp();
    sqlite.prepare('INSERT INTO t (v) VALUES (1)').run();
    const before = header.changeCount();
    sqlite.pragma('wal_checkpoint(TRUNCATE)');
    sqlite.prepare('INSERT INTO t (v) VALUES (2)').run();
    expect(header.changeCount()).toBeGreaterThan(before);
  });

  it('counts a read of two different copies as a change', () => {
    // A file laid out as a WAL index whose two header copies differ, as during a commit.
    const file = path.join(makeTempDir(), 'torn.db');
    const shm = Buffer.alloc(136);
    shm[12] = 1;
    shm[48 + 12] = 1;
    shm[8] = 7;
    fs.writeFileSync(`${file}-shm`, shm);
    const header = WalIndexHeader.open(file)!;
    opened.push(header);
    const first = header.changeCount();
    expect(header.changeCount()).toBe(first + 1);
    shm[48 + 8] = 7;
    fs.writeFileSync(`${file}-shm`, shm);
    const intact = header.changeCount();
    expect(intact).toBe(first + 2);
    expect(header.changeCount()).toBe(intact);
  });

  it('reports the frames that SQLite reports', () => {
    const { file, sqlite, header } = setUp();
    sqlite.pragma('wal_autocheckpoint = 0');
    const insert = sqlite.prepare('INSERT INTO t (v) VALUES (?)');
    for (let i = 0; i < 50; i += 1) insert.run(i);

    const before = header.use()!;
    const [checkpoint] = sqlite.pragma('wal_checkpoint(PASSIVE)') as Array<{
      log: number;
      checkpointed: number;
    }>;
    const after = header.use()!;

    expect(before.frames).toBe(checkpoint!.log);
    expect(before.checkpointedFrames).toBe(0);
    expect(after.frames).toBe(checkpoint!.log);
    expect(after.checkpointedFrames).toBe(checkpoint!.checkpointed);
    // The WAL has not started over, so the frames fill the whole file.
    expect(before.bytes).toBe(fs.statSync(`${file}-wal`).size);
  });

  it('grows while a read transaction is open', () => {
    const { file, sqlite, header } = setUp();
    const insert = sqlite.prepare('INSERT INTO t (v) VALUES (?)');
    const reader = openWalDatabase(file);
    opened.push(reader);
    reader.exec('BEGIN');
    reader.prepare('SELECT count(*) FROM t').get();

    const sizes: number[] = [];
    for (let round = 0; round < 3; round += 1) {
      for (let i = 0; i < 20; i += 1) insert.run(i);
      sqlite.pragma('wal_checkpoint(PASSIVE)');
      sizes.push(header.use()!.frames);
    }
    expect(sizes[1]).toBeGreaterThan(sizes[0]!);
    expect(sizes[2]).toBeGreaterThan(sizes[1]!);

    reader.exec('COMMIT');
    sqlite.pragma('wal_checkpoint(PASSIVE)');
    insert.run(0);
    // The checkpoint copied every frame, so the next write started the WAL over.
    expect(header.use()!.frames).toBeLessThan(sizes[0]!);
  });

  it('is absent for a database without a WAL', () => {
    const file = path.join(makeTempDir(), 'rollback.db');
    const sqlite = new BetterSqlite3(file);
    opened.push(sqlite);
    sqlite.exec('CREATE TABLE t (v INTEGER)');
    expect(WalIndexHeader.open(file)).toBeUndefined();
  });
});

describe('store data version', () => {
  let store: Store | undefined;
  afterEach(async () => {
    await store?.close();
    store = undefined;
  });

  it('changes when another process commits', async () => {
    const file = path.join(makeTempDir(), 'store.db');
    store = await openStore(file);
    const before = store.dataVersion();
    expect(store.dataVersion()).toBe(before);
    const script = `
      const Database = require(${JSON.stringify(require.resolve('better-sqlite3'))});
      const sqlite = new Database(${JSON.stringify(file)});
      sqlite.prepare("INSERT INTO state_variables (name, value, updated_at) VALUES ('X', '1', 'now')").run();
      sqlite.close();`;
    execFileSync(process.execPath, ['-e', script]);
    expect(store.dataVersion()).not.toBe(before);
  });
});
