/** Prepared queries: Kysely builders compiled once, bound by name on a real SQLite file. */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../../src/store/database.js';
import { param, prepare } from '../../src/store/prepared.js';
import { makeTempDir } from '../support/server.js';

describe('prepared queries', () => {
  let store: Store;

  beforeAll(async () => {
    store = await openStore(path.join(makeTempDir(), 'prepared.db'));
  });
  afterAll(async () => {
    await store.close();
  });

  const byName = prepare<{ name: string; limit: number }>((db) =>
    db
      .selectFrom('state_variables')
      .selectAll()
      .where('name', '=', param('name'))
      .where('name', '!=', 'constant-never-matching')
      .limit(param<number>('limit')),
  );

  it('binds named values and writes constants into the text', () => {
    expect(byName.sql).toBe(
      `select * from "state_variables" where "name" = ? and "name" != 'constant-never-matching' limit ?`,
    );
    expect(byName.bind({ name: 'X', limit: 3 })).toEqual(['X', 3]);
  });

  it('quotes a constant with a quote in it', () => {
    const quoted = prepare((db) =>
      db.selectFrom('state_variables').select('name').where('value', '=', "it's"),
    );
    expect(quoted.sql).toBe(`select "name" from "state_variables" where "value" = 'it''s'`);
  });

  it('refuses a call without one of its values', () => {
    expect(() => byName.bind({ name: 'X' } as never)).toThrow(/no value for parameter limit/);
  });

  it('reads what a committed write stored, on the read connection', async () => {
    await store.write((trx) =>
      trx
        .insertInto('state_variables')
        .values({ name: 'PREPARED_TEST', value: 'one', updated_at: new Date().toISOString() })
        .execute(),
    );
    const rows = store.read((sqlite) =>
      byName.all<{ name: string; value: string }>(sqlite, { name: 'PREPARED_TEST', limit: 1 }),
    );
    expect(rows.map((row) => [row.name, row.value])).toEqual([['PREPARED_TEST', 'one']]);
  });

  it('changes the data version when a write commits, and only then', async () => {
    const before = store.dataVersion();
    expect(store.dataVersion()).toBe(before);
    await store.write((trx) =>
      trx
        .updateTable('state_variables')
        .set({ value: 'two' })
        .where('name', '=', 'PREPARED_TEST')
        .execute(),
    );
    expect(store.dataVersion()).not.toBe(before);
  });

  it('does not see a write transaction that is still open', async () => {
    let inside: string | undefined;
    await store.write(async (trx) => {
      await trx
        .updateTable('state_variables')
        .set({ value: 'uncommitted' })
        .where('name', '=', 'PREPARED_TEST')
        .execute();
      inside = store.read(
        (sqlite) =>
          byName.get<{ value: string }>(sqlite, { name: 'PREPARED_TEST', limit: 1 })?.value,
      );
    });
    expect(inside).toBe('two');
  });
});
