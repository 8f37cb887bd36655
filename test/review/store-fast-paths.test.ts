/**
 * Review tests for the store's fast paths: the read connection behind Store.read, the
 * savepoints that the write queue runs on the connection directly, prepared queries, and
 * BEGIN IMMEDIATE retried on a timer while another process holds the write lock.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type BetterSqlite3 from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../../src/store/database.js';
import { param, prepare, updateById } from '../../src/store/prepared.js';
import { writeConnection } from '../../src/store/write-queue.js';
import { makeTempDir } from '../support/server.js';

const SET_VARIABLE = prepare<{ name: string; value: string; now: string }>((db) =>
  db.insertInto('state_variables').values({
    name: param('name'),
    value: param('value'),
    updated_at: param('now'),
    synced_at: null,
    synced_value: null,
  }),
);

const VARIABLE = prepare<{ name: string }>((db) =>
  db.selectFrom('state_variables').select('value').where('name', '=', param('name')),
);

/** Runs `work` inside Store.write on the write's connection. */
function writeOnConnection<T>(
  store: Store,
  work: (sqlite: BetterSqlite3.Database) => Promise<T>,
): Promise<T> {
  return store.write((trx) => work(writeConnection(trx)));
}

function readVariable(store: Store, name: string): string | undefined {
  return store.read((sqlite) => VARIABLE.get<{ value: string }>(sqlite, { name })?.value);
}

function setVariable(store: Store, name: string, value: string): Promise<void> {
  return writeOnConnection(store, async (sqlite) => {
    SET_VARIABLE.run(sqlite, { name, value, now: new Date().toISOString() });
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('store fast paths', () => {
  let dir: string;
  let store: Store;
  const children: ChildProcess[] = [];

  beforeEach(async () => {
    dir = makeTempDir('slipway-review-');
    store = await openStore(path.join(dir, 'state.db'));
  });
  afterEach(async () => {
    for (const child of children.splice(0)) {
      if (child.exitCode === null && child.pid !== undefined) child.kill('SIGKILL');
    }
    await store.close().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('read hides an open write transaction', async () => {
    let inserted!: () => void;
    const insertedSignal = new Promise<void>((resolve) => {
      inserted = resolve;
    });
    let finish!: () => void;
    const writeHeldOpen = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const before = store.dataVersion();
    const write = writeOnConnection(store, async (sqlite) => {
      SET_VARIABLE.run(sqlite, { name: 'OPEN', value: 'uncommitted', now: '2026-01-01T00:00:00Z' });
      inserted();
      await writeHeldOpen;
    });
    await insertedSignal;
    expect(store.sqlite.inTransaction).toBe(true);
    expect(readVariable(store, 'OPEN')).toBeUndefined();
    expect(store.dataVersion()).toBe(before);
    finish();
    await write;
    expect(store.dataVersion()).not.toBe(before);
    expect(readVariable(store, 'OPEN')).toBe('uncommitted');
  });

  it('read hides a rolled-back write', async () => {
    const failed = writeOnConnection(store, async (sqlite) => {
      SET_VARIABLE.run(sqlite, { name: 'GONE', value: 'x', now: '2026-01-01T00:00:00Z' });
      throw new Error('work failed after its insert');
    });
    await expect(failed).rejects.toThrow('work failed after its insert');
    expect(readVariable(store, 'GONE')).toBeUndefined();
    const row = store.sqlite.prepare("SELECT 1 FROM state_variables WHERE name = 'GONE'").get();
    expect(row).toBeUndefined();
  });

  it('failing write in a batch rolls back alone', async () => {
    // Queued in one turn of the event loop, so the three share one commit.
    const first = setVariable(store, 'FIRST', '1');
    const middle = writeOnConnection(store, async (sqlite) => {
      SET_VARIABLE.run(sqlite, { name: 'MIDDLE', value: '2', now: '2026-01-01T00:00:00Z' });
      // A constraint error from the second statement of the same write.
      SET_VARIABLE.run(sqlite, { name: 'MIDDLE', value: '3', now: '2026-01-01T00:00:00Z' });
    });
    const kysely = store.write(async (trx) => {
      await trx
        .insertInto('state_variables')
        .values({ name: 'THIRD', value: '4', updated_at: '2026-01-01T00:00:00Z' })
        .execute();
    });
    const outcomes = await Promise.allSettled([first, middle, kysely]);
    expect(outcomes[0]!.status).toBe('fulfilled');
    expect(outcomes[1]!.status).toBe('rejected');
    expect(String((outcomes[1] as PromiseRejectedResult).reason)).toMatch(/UNIQUE|PRIMARY/);
    expect(outcomes[2]!.status).toBe('fulfilled');
    expect(readVariable(store, 'FIRST')).toBe('1');
    expect(readVariable(store, 'MIDDLE')).toBeUndefined();
    expect(readVariable(store, 'THIRD')).toBe('4');
    expect(store.sqlite.inTransaction).toBe(false);
  });

  it('nested savepoint inside a failing write', async () => {
    const ok = setVariable(store, 'OUTER_OK', 'yes');
    const failing = writeOnConnection(store, async (sqlite) => {
      sqlite.exec('SAVEPOINT inner');
      SET_VARIABLE.run(sqlite, { name: 'INNER', value: 'x', now: '2026-01-01T00:00:00Z' });
      throw new Error('failed with its own savepoint still open');
    });
    const after = setVariable(store, 'AFTER', 'yes');
    const outcomes = await Promise.allSettled([ok, failing, after]);
    expect(outcomes.map((outcome) => outcome.status)).toEqual([
      'fulfilled',
      'rejected',
      'fulfilled',
    ]);
    expect(readVariable(store, 'OUTER_OK')).toBe('yes');
    expect(readVariable(store, 'INNER')).toBeUndefined();
    expect(readVariable(store, 'AFTER')).toBe('yes');
  });

  it('updateById binds null and rejects undefined', async () => {
    // updateById serves the jobs and tasks tables, so the test inserts a job row by hand.
    const now = '2026-01-01T00:00:00.000Z';
    await writeOnConnection(store, async (sqlite) => {
      sqlite
        .prepare(
          `INSERT INTO jobs (id, type, status, params, attempt, pipeline, created_at, updated_at,
             reason, queued_at)
           VALUES ('j-1', 'ci', 'queued', '{}', 1, '{}', ?, ?, 'old reason', ?)`,
        )
        .run(now, now, now);
    });
    const changed = await writeOnConnection(store, async (sqlite) =>
      updateById(sqlite, 'jobs', 'j-1', { reason: null, queued_at: null, updated_at: now }),
    );
    expect(changed).toBe(1);
    const row = store.read((sqlite) =>
      sqlite.prepare("SELECT reason, queued_at FROM jobs WHERE id = 'j-1'").get(),
    ) as { reason: string | null; queued_at: string | null };
    expect(row.reason).toBeNull();
    expect(row.queued_at).toBeNull();
    const missing = writeOnConnection(store, async (sqlite) =>
      updateById(sqlite, 'jobs', 'j-1', { reason: undefined, updated_at: now }),
    );
    await expect(missing).rejects.toThrow(/reason/);
  });

  it('read left with a statement open', async () => {
    await setVariable(store, 'SEEN', 'before');
    const version = store.dataVersion();
    // A read that stops part way through an iterator leaves its statement active.
    const stopped = () =>
      store.read((sqlite) => {
        const rows = sqlite.prepare('SELECT name FROM state_variables').iterate();
        return rows.next().value as { name: string } | undefined;
      });
    expect(stopped).toThrow(/read transaction/);
    await store.write(async (trx) => {
      await trx
        .updateTable('state_variables')
        .set({ value: 'after' })
        .where('name', '=', 'SEEN')
        .execute();
    });
    expect(store.dataVersion()).not.toBe(version);
    expect(readVariable(store, 'SEEN')).toBe('after');
  });

  it('read after close throws', async () => {
    expect(readVariable(store, 'ANY')).toBeUndefined();
    await store.close();
    expect(() => readVariable(store, 'ANY')).toThrow(/closed/);
    expect(() => store.dataVersion()).toThrow(/closed/);
  });

  it('close releases a reader opened late', async () => {
    await store.close();
    // A read that slips in after close (a timer of a stopping role) must not leave a
    // connection open on the file.
    try {
      readVariable(store, 'ANY');
    } catch {
      // expected: the store is closed
    }
    const handles = fs
      .readdirSync('/proc/self/fd')
      .map((fd) => {
        try {
          return fs.readlinkSync(`/proc/self/fd/${fd}`);
        } catch {
          return '';
        }
      })
      .filter((target) => target.startsWith(path.join(dir, 'state.db')));
    expect(handles).toEqual([]);
  });

  it('waits for another process holding the lock', async () => {
    const script = `
      const Database = require('better-sqlite3');
      const db = new Database(process.argv[1]);
      db.pragma('busy_timeout = 5000');
      db.exec('BEGIN IMMEDIATE');
      db.prepare("INSERT INTO state_variables (name, value, updated_at) VALUES ('HOLDER', 'h', '2026-01-01T00:00:00Z')").run();
      process.stdout.write('locked\\n');
      setTimeout(() => { db.exec('COMMIT'); db.close(); process.stdout.write('released\\n'); }, Number(process.argv[2]));
    `;
    const holdMs = 1_500;
    const child = spawn(process.execPath, ['-e', script, path.join(dir, 'state.db'), `${holdMs}`], {
      cwd: process.cwd(),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(child);
    let output = '';
    const locked = new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('locked')) resolve();
      });
      child.on('exit', (code) => reject(new Error(`lock holder exited with ${code}`)));
    });
    await locked;

    const started = Date.now();
    const write = setVariable(store, 'WAITER', 'w');
    // While the write waits for the lock, the event loop keeps running: timers fire on time
    // and reads return.
    let maxLagMs = 0;
    for (let index = 0; index < 10; index += 1) {
      const tick = Date.now();
      await sleep(50);
      maxLagMs = Math.max(maxLagMs, Date.now() - tick - 50);
      expect(readVariable(store, 'WAITER')).toBeUndefined();
    }
    expect(maxLagMs).toBeLessThan(200);
    await write;
    const waitedMs = Date.now() - started;
    expect(waitedMs).toBeGreaterThanOrEqual(holdMs - 200);
    expect(readVariable(store, 'WAITER')).toBe('w');
    expect(readVariable(store, 'HOLDER')).toBe('h');
  });
});
