/** The live database probe of the status endpoint takes the WAL limit of the `database` check. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runHealthChecks } from '../../src/health/runner.js';
import type { TestServer } from '../support/server.js';
import { startHealthServer } from './helpers.js';

describe('live WAL limit', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startHealthServer(`
  - name: database
    type: database
    wal_warn: 1KiB
`);
    await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit: 'abc1234' },
    });
  });
  afterAll(async () => {
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
