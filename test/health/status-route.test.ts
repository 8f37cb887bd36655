import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

  it('reports the api alone before any check ran', async () => {
    const status = await server.request('GET', '/api/health/status');
    expect(status.status).toBe(200);
    expect(Object.keys(status.body.components)).toEqual(['api']);
    expect(status.body.components.api.details.database).toBe(server.context.store.path);
  });

  it('reports a slow answer as degraded with 200', async () => {
    const [outcome] = await runHealthChecks(server.context, { force: true, names: ['slow'] });
    expect(outcome?.status).toBe('degraded');
    expect(outcome?.reason).toMatch(/above degraded_latency of 100 ms/);
    expect(outcome?.latencyMs).toBeGreaterThanOrEqual(240);
    const status = await server.request('GET', '/api/health/status');
    expect(status.status).toBe(200);
    expect(status.body.status).toBe('degraded');
    expect(status.body.components.slow.latency_ms).toBeGreaterThanOrEqual(240);
  });

  it('marks a result older than three intervals as stale', async () => {
    await insertMetric('idle', 10_000);
    const status = await server.request('GET', '/api/health/status');
    const idle = status.body.components.idle;
    expect(idle.status).toBe('degraded');
    expect(idle.age_seconds).toBeGreaterThanOrEqual(10);
    expect(idle.details.stale).toBe(true);
    expect(idle.details.stale_reason).toContain('is the health monitor running?');
  });

  it('leaves out components no longer in the pipeline file', async () => {
    await insertMetric('removed-check', 0);
    const status = await server.request('GET', '/api/health/status');
    expect(status.body.components['removed-check']).toBeUndefined();
  });
});
