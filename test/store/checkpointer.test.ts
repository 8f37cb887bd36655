import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MAIN_AUTOCHECKPOINT_PAGES } from '../../src/store/checkpointer.js';
import { openStore, type Store } from '../../src/store/database.js';
import { makeTempDir } from '../support/server.js';

/** Reads the WAL header's checkpoint sequence number, which grows each time the log restarts. */
function walSequence(dbPath: string): number {
  const header = Buffer.alloc(16);
  const fd = fs.openSync(`${dbPath}-wal`, 'r');
  try {
    fs.readSync(fd, header, 0, 16, 0);
  } finally {
    fs.closeSync(fd);
  }
  return header.readUInt32BE(12);
}

/** Writes `rows` state variables of 4 KiB each, eight per commit. */
async function writeRows(store: Store, first: number, rows: number): Promise<void> {
  for (let start = first; start < first + rows; start += 8) {
    await Promise.all(
      Array.from({ length: 8 }, (_, offset) =>
        store.write((trx) =>
          trx
            .insertInto('state_variables')
            .values({
              name: `V${start + offset}`,
              value: 'x'.repeat(4096),
              updated_at: 'now',
              synced_at: null,
              synced_value: null,
            })
            .execute(),
        ),
      ),
    );
  }
}

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('background checkpoints', () => {
  it('copy the WAL into the database', async () => {
    const dbPath = path.join(makeTempDir(), 'db.sqlite');
    const store = await openStore(dbPath, { backgroundCheckpoints: true });
    expect(store.sqlite.pragma('wal_autocheckpoint', { simple: true })).toBe(
      MAIN_AUTOCHECKPOINT_PAGES,
    );
    const sizeBefore = fs.statSync(dbPath).size;

    // Fewer than 1,000 pages, SQLite's default threshold, so no COMMIT checkpoints by itself.
    await writeRows(store, 0, 400);
    await waitFor(
      () => fs.statSync(dbPath).size > sizeBefore + 1_000_000,
      'the database file to receive the rows',
    );
    expect(store.sqlite.prepare('SELECT count(*) FROM state_variables').pluck().get()).toBe(400);
    await store.close();
  });

  it('restart the WAL after a pause', async () => {
    const dbPath = path.join(makeTempDir(), 'db.sqlite');
    const store = await openStore(dbPath, { backgroundCheckpoints: true });
    await writeRows(store, 0, 200);
    const sequence = walSequence(dbPath);

    // One small commit every 50 ms: once a checkpoint has copied the whole log, the next
    // write starts it again from the beginning. Together they stay below the 1,000 pages at
    // which a COMMIT would checkpoint by itself.
    for (let next = 200; next < 400 && walSequence(dbPath) === sequence; next += 8) {
      await writeRows(store, next, 8);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(walSequence(dbPath)).not.toBe(sequence);
    await store.close();
  });

  it('end with the store', async () => {
    const dbPath = path.join(makeTempDir(), 'db.sqlite');
    const store = await openStore(dbPath, { backgroundCheckpoints: true });
    await writeRows(store, 0, 40);
    await store.close();
    // The main connection closes last, so it checkpoints and removes the WAL as before.
    expect(fs.existsSync(`${dbPath}-wal`)).toBe(false);

    const again = await openStore(dbPath);
    expect(again.sqlite.prepare('SELECT count(*) FROM state_variables').pluck().get()).toBe(40);
    await again.close();
  });
});
