import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/database.js';
import { makeTempDir } from '../support/server.js';

const modeOf = (file: string) => fs.statSync(file).mode & 0o777;

describe('database file modes', () => {
  it('new database, WAL and shared memory files are owner-only', async () => {
    const shared = path.join(makeTempDir(), 'shared');
    fs.mkdirSync(shared, { mode: 0o755 });
    const dbPath = path.join(shared, 'orchestration.db');
    const store = await openStore(dbPath);
    try {
      await store.write(async (trx) => {
        await trx
          .insertInto('state_variables')
          .values({ name: 'MODE_CHECK', value: '1', updated_at: new Date().toISOString() })
          .execute();
      });
      for (const file of [dbPath, `${dbPath}-wal`, `${dbPath}-shm`]) {
        expect(modeOf(file), file).toBe(0o600);
      }
    } finally {
      await store.close();
    }
  });

  it('an existing database keeps its mode', async () => {
    const dbPath = path.join(makeTempDir(), 'orchestration.db');
    await (await openStore(dbPath)).close();
    fs.chmodSync(dbPath, 0o640);
    await (await openStore(dbPath)).close();
    expect(modeOf(dbPath)).toBe(0o640);
  });
});
