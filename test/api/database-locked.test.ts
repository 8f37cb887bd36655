import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUSY_TIMEOUT_MS } from '../../src/store/database.js';
import { countRows } from '../support/rows.js';
import { startTestServer, type TestServer } from '../support/server.js';

describe('write while another process holds the lock', () => {
  let server: TestServer;
  let token: string;

  beforeAll(async () => {
    server = await startTestServer();
    token = await server.token('trigger');
  });
  afterAll(async () => {
    await server.close();
  });

  it(
    'answers 503 with Retry-After',
    async () => {
      // Another process, such as an operator's sqlite3 shell, keeps the write lock longer than
      // the server's busy_timeout.
      const other = new BetterSqlite3(path.join(server.dataDir, 'state', 'orchestration.db'));
      other.exec('BEGIN IMMEDIATE');
      let response;
      try {
        response = await server.request('POST', '/api/trigger/ci', {
          token,
          body: { commit: 'abc1234' },
        });
      } finally {
        other.exec('ROLLBACK');
        other.close();
      }
      const before = await countRows(server.context.store.db);
      expect(response.status).toBe(503);
      expect(response.body.code).toBe('service_unavailable');
      expect(response.body.field).toBe('database');
      expect(response.body.rule).toBe('locked');
      expect(response.body.error).toContain('retry');
      expect(response.headers.get('retry-after')).toBe('5');

      const retried = await server.request('POST', '/api/trigger/ci', {
        token,
        body: { commit: 'abc1234' },
      });
      expect(retried.status).toBe(201);
      expect((await countRows(server.context.store.db)).jobs).toBe(before.jobs + 1);
    },
    BUSY_TIMEOUT_MS + 15_000,
  );
});
