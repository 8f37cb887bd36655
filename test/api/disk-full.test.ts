/**
 * Writes while the database cannot grow. `PRAGMA max_page_count` makes SQLite return
 * SQLITE_FULL, the code a full disk gives, without filling a real file system.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countRows } from '../support/rows.js';
import { startTestServer, type TestServer } from '../support/server.js';

describe('write while the disk is full', () => {
  let server: TestServer;
  let token: string;

  beforeAll(async () => {
    server = await startTestServer();
    token = await server.token('trigger');
  });
  afterAll(async () => {
    await server.close();
  });

  it('returns 503 naming the full disk', async () => {
    const sqlite = server.context.store.sqlite;
    const pages = Number(sqlite.pragma('page_count', { simple: true }));
    const before = await countRows(server.context.store.db);
    sqlite.pragma(`max_page_count = ${pages}`);
    const statuses: number[] = [];
    let failed;
    try {
      // Each trigger adds rows, so the database needs a new page within a few of them.
      for (let i = 0; i < 200 && failed === undefined; i += 1) {
        const response = await server.request('POST', '/api/trigger/ci', {
          token,
          body: { commit: 'abc1234', params: { NOTE: 'x'.repeat(4000) } },
        });
        statuses.push(response.status);
        if (response.status !== 201) failed = response;
      }
    } finally {
      sqlite.pragma('max_page_count = 4294967294');
    }
    const created = statuses.filter((status) => status === 201).length;

    expect(failed).toBeDefined();
    expect(failed!.status).toBe(503);
    expect(failed!.body.code).toBe('service_unavailable');
    expect(failed!.body.field).toBe('storage');
    expect(failed!.body.rule).toBe('full');
    expect(failed!.body.error).toContain('disk is full (SQLITE_FULL)');
    expect((await countRows(server.context.store.db)).jobs).toBe(before.jobs + created);
    // Reads still work, so only the health of the database shows that writes fail.
    const health = await server.request('GET', '/api/health/status', { token });
    expect(health.body.components.database.status).toBe('unhealthy');
    expect(health.body.components.database.details.last_write_failure.code).toBe('SQLITE_FULL');

    const retried = await server.request('POST', '/api/trigger/ci', {
      token,
      body: { commit: 'abc1234' },
    });
    expect(retried.status).toBe(201);
  });
});
