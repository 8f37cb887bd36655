import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runHealthChecks } from '../../src/health/runner.js';
import type { TestServer } from '../support/server.js';
import { startHealthServer } from './helpers.js';

describe('health status endpoint', () => {
  const slow = http.createServer((_request, response) => {
    setTimeout(() => response.writeHead(200).end('ok'), 250);
  });
  let server: TestServer;

  beforeAll(async () => {
    await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', resolve));
    const port = (slow.address() as AddressInfo).port;
    server = await startHealthServer(`
  - name: slow
    type: http
    url: http://127.0.0.1:${port}/
    degraded_latency: 100ms
  - name: database
    type: database
  - name: idle
    type: tcp
    port: 9
    interval: 1s
    timeout: 1s
`);
  });
  afterAll(async () => {
    await server.close();
    slow.closeAllConnections();
    await new Promise((resolve) => slow.close(resolve));
  });

  const insertMetric = (component: string, ageMs: number) =>
    server.context.store.write(async (trx) => {
      await trx
        .insertInto('health_metrics')
        .values({
          component,
          status: 'healthy',
          latency_ms: 1,
          details: '{}',
          recorded_at: new Date(Date.now() - ageMs).toISOString(),
        })
        .execute();
    });

  it('shows details only to token holders', async () => {
    const anonymous = await server.request('GET', '/api/health/status');
    expect(anonymous.status).toBe(200);
    expect(anonymous.body.components.database.status).toBe('healthy');
    for (const component of Object.values(anonymous.body.components)) {
      expect((component as { details: unknown }).details).toBeNull();
    }
    const reader = await server.token('read', 'health-reader');
    const read = await server.request('GET', '/api/health/status', { token: reader });
    expect(read.body.components.database.details.path).toBe(server.context.store.path);
  });

  it('reports api and database before any check', async () => {
    const status = await server.request('GET', '/api/health/status', { token: server.adminToken });
    expect(status.status).toBe(200);
    expect(Object.keys(status.body.components).sort()).toEqual(['api', 'database']);
    expect(status.body.components.database.status).toBe('healthy');
    expect(status.body.components.database.details.path).toBe(server.context.store.path);
  });

  it('ignores a cache-busting parameter', async () => {
    const status = await server.request('GET', '/api/health/status?_=1733400000');
    expect(status.status).toBe(200);
    expect(status.body.components.api.status).toBe('healthy');
  });

  it('merges the database check into database', async () => {
    const [outcome] = await runHealthChecks(server.context, { force: true, names: ['database'] });
    expect(outcome?.status).toBe('healthy');
    const status = await server.request('GET', '/api/health/status', { token: server.adminToken });
    const database = status.body.components.database;
    expect(database.status).toBe('healthy');
    expect(database.details.path).toBe(server.context.store.path);
    expect(database.details.query).toBe('SELECT 1');
    expect(database.details.integrity.ok).toBe(true);
  });

  it('shows the live WAL over the recorded one', async () => {
    const [outcome] = await runHealthChecks(server.context, { force: true, names: ['database'] });
    expect(outcome?.status).toBe('healthy');
    // About 295 MiB of 4 KiB pages, over the 256 MiB at which the database is degraded.
    const frames = 75_000;
    const bytes = 32 + frames * (4096 + 24);
    const walUse = vi
      .spyOn(server.context.store, 'walUse')
      .mockReturnValue({ frames, checkpointedFrames: 10, bytes });
    try {
      const status = await server.request('GET', '/api/health/status', {
        token: server.adminToken,
      });
      const database = status.body.components.database;
      expect(status.status).toBe(200);
      expect(status.body.status).toBe('degraded');
      expect(database.status).toBe('degraded');
      expect(database.details.wal).toEqual({ frames, checkpointed_frames: 10, bytes });
      expect(database.details.reason).toContain('the write-ahead log holds 294.7 MiB');
      // The recorded check's details stay.
      expect(database.details.integrity.ok).toBe(true);

      walUse.mockReturnValue({ frames: 7, checkpointedFrames: 7, bytes: 32 + 7 * 4120 });
      const small = await server.request('GET', '/api/health/status', {
        token: server.adminToken,
      });
      expect(small.body.components.database.status).toBe('healthy');
      expect(small.body.components.database.details.wal.frames).toBe(7);
      expect(small.body.components.database.details.reason).toBeNull();
    } finally {
      walUse.mockRestore();
    }
  });

  it('reports a slow answer as degraded with 200', async () => {
    const [outcome] = await runHealthChecks(server.context, { force: true, names: ['slow'] });
    expect(outcome?.status).toBe('degraded');
    expect(outcome?.reason).toMatch(/above degraded_latency of 100 ms/);
    expect(outcome?.latencyMs).toBeGreaterThanOrEqual(240);
    const status = await server.request('GET', '/api/health/status', { token: server.adminToken });
    expect(status.status).toBe(200);
    expect(status.body.status).toBe('degraded');
    expect(status.body.components.slow.latency_ms).toBeGreaterThanOrEqual(240);
  });

  it('marks a result older than three intervals as stale', async () => {
    await insertMetric('idle', 10_000);
    const status = await server.request('GET', '/api/health/status', { token: server.adminToken });
    const idle = status.body.components.idle;
    expect(idle.status).toBe('degraded');
    expect(idle.age_seconds).toBeGreaterThanOrEqual(10);
    expect(idle.details.stale).toBe(true);
    expect(idle.details.stale_reason).toContain('is the health monitor running?');
  });

  it('shows a recent result of an unlisted check', async () => {
    // Another process (a health monitor with its own pipeline file) may record it.
    await insertMetric('elsewhere', 1000);
    const status = await server.request('GET', '/api/health/status', { token: server.adminToken });
    expect(status.body.components.elsewhere.status).toBe('healthy');
  });

  it('leaves out stale results of unlisted checks', async () => {
    // Three default intervals (HEALTH_CHECK_INTERVAL, 300 s) and a minute more.
    await insertMetric('removed-check', 3 * 300_000 + 60_000);
    const status = await server.request('GET', '/api/health/status', { token: server.adminToken });
    expect(status.body.components['removed-check']).toBeUndefined();
  });
});
