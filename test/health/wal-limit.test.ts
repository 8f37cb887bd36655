/** The live database probe of the status endpoint takes the WAL limit of the `database` check. */
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runHealthChecks } from '../../src/health/runner.js';
import type { TestServer } from '../support/server.js';
import { startHealthServer } from './helpers.js';

describe('live WAL limit', () => {
  let server: TestServer;
  let reader: BetterSqlite3.Database;

  beforeAll(async () => {
    server = await startHealthServer(`
  - name: database
    type: database
    wal_warn: 1KiB
`);
    // An open read keeps checkpoints from copying the frames written after it started.
    reader = new BetterSqlite3(server.context.store.path, { readonly: true });
    reader.exec('BEGIN');
    reader.prepare('SELECT count(*) FROM jobs').get();
    await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit: 'abc1234' },
    });
  });
  afterAll(async () => {
    reader.exec('COMMIT');
    reader.close();
    await server.close();
  });

  const database = async () =>
    (await server.request('GET', '/api/health/status', { token: server.adminToken })).body
      .components.database;

  it('degrades the database before any check ran', async () => {
    const component = await database();

    expect(component.status).toBe('degraded');
    expect(component.details.reason).toContain('over 1.0 KiB');
  });

  it('keeps the limit after the check ran', async () => {
    await runHealthChecks(server.context, { force: true, names: ['database'] });

    const component = await database();

    expect(component.status).toBe('degraded');
    expect(component.details.wal.bytes).toBeGreaterThan(1024);
    expect(component.details.query).toBe('SELECT 1');
  });
});
