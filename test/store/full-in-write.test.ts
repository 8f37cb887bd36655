/**
 * A write that meets SQLITE_FULL inside a statement. SQLite then rolls back the whole
 * transaction, not only the statement, whenever the statement has no statement journal, as a
 * single-row INSERT has none. `PRAGMA max_page_count` gives SQLITE_FULL without filling a disk.
 */
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../../src/store/database.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

describe('SQLITE_FULL inside a write', () => {
  let store: Store;

  beforeAll(async () => {
    store = await openStore(path.join(makeTempDir('slipway-full-'), 'orchestration.db'));
    await store.write(async (trx) => {
      await sql`create table filler (id integer primary key, value text)`.execute(trx);
    });
  });
  afterAll(async () => {
    await store.close();
  });

  it('rejects the batch with SQLITE_FULL', async () => {
    const pages = Number(store.sqlite.pragma('page_count', { simple: true }));
    store.sqlite.pragma(`max_page_count = ${pages}`);
    let results: PromiseSettledResult<string>[];
    try {
      // Both writes share one commit, and the second needs pages the database may not add.
      results = await Promise.allSettled([
        store.write(async (trx) => {
          await sql`insert into filler (value) values ('small')`.execute(trx);
          return 'small';
        }),
        store.write(async (trx) => {
          for (let i = 0; i < 100; i += 1) {
            await sql`insert into filler (value) values (${'x'.repeat(3000)})`.execute(trx);
          }
          return 'large';
        }),
      ]);
    } finally {
      store.sqlite.pragma('max_page_count = 4294967294');
    }
    const codes = results.map((result) =>
      result.status === 'rejected' ? (result.reason as { code?: string }).code : result.value,
    );

    // The rollback took the first write's rows too, so it must fail rather than resolve.
    expect(codes).toEqual(['SQLITE_FULL', 'SQLITE_FULL']);
    expect(store.lastWriteFailure?.code).toBe('SQLITE_FULL');
    expect(store.sqlite.inTransaction).toBe(false);
    const rows = await sql<{ count: number }>`select count(*) as count from filler`.execute(
      store.db,
    );
    expect(rows.rows[0]!.count).toBe(0);
    // The queue still commits once the database may grow again.
    await store.write(async (trx) => {
      await sql`insert into filler (value) values ('after')`.execute(trx);
    });
    expect(store.lastWriteFailure).toBeUndefined();
  });
});

describe('API write while the database cannot grow', () => {
  let server: TestServer;
  let agent: string;

  beforeAll(async () => {
    server = await startTestServer();
    agent = await server.token('agent');
  });
  afterAll(async () => {
    await server.close();
  });

  it('returns 503 naming the full disk', async () => {
    const sqlite = server.context.store.sqlite;
    const pages = Number(sqlite.pragma('page_count', { simple: true }));
    sqlite.pragma(`max_page_count = ${pages}`);
    let failed;
    try {
      // Each registration adds a worker row and an audit row, so a new page is needed soon.
      for (let i = 0; i < 500 && failed === undefined; i += 1) {
        const response = await server.request('POST', '/api/agent/workers', {
          token: agent,
          body: {
            name: `worker-${i}`,
            hostname: 'h'.repeat(250),
            executors: ['local'],
            capacity: 1,
          },
        });
        if (response.status !== 200) failed = response;
      }
    } finally {
      sqlite.pragma('max_page_count = 4294967294');
    }

    expect(failed).toBeDefined();
    expect(failed!.status).toBe(503);
    expect(failed!.body.field).toBe('storage');
    expect(failed!.body.rule).toBe('full');
  });
});
