import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runHealthChecks } from '../../src/health/runner.js';
import type { TestServer } from '../support/server.js';
import { auditRows, startHealthServer, stateVariable } from './helpers.js';

/** A service on 127.0.0.1 that returns 200 or 500, or stops listening. */
class FlakyService {
  mode: 'ok' | 'error' = 'ok';
  port = 0;
  readonly server = http.createServer((request, response) => {
    if (this.mode === 'ok') response.writeHead(200).end('status: ok');
    else response.writeHead(500).end('status: broken');
  });

  async listen(port = 0): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(port, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

describe('http and tcp checks', () => {
  const service = new FlakyService();
  let server: TestServer;

  beforeAll(async () => {
    await service.listen();
    server = await startHealthServer(`
  - name: web
    type: http
    url: http://127.0.0.1:${service.port}/health
    expect_body: "status: ok"
    timeout: 2s
    thresholds: { down: 2, up: 2 }
  - name: web-port
    type: tcp
    port: ${service.port}
    timeout: 2s
`);
  });
  afterAll(async () => {
    await server.close();
    await service.stop().catch(() => undefined);
  });

  const run = () => runHealthChecks(server.context, { force: true });
  const outcome = async (name: string) => (await run()).find((each) => each.name === name)!;

  it('reports healthy while the service answers', async () => {
    const outcomes = await run();
    expect(outcomes.map((each) => each.name).sort()).toEqual(['web', 'web-port']);
    expect(outcomes.every((each) => each.status === 'healthy')).toBe(true);
    const status = await server.request('GET', '/api/health/status', { token: server.adminToken });
    expect(status.status).toBe(200);
    expect(status.body.status).toBe('healthy');
    expect(status.body.components.web).toMatchObject({ status: 'healthy' });
    expect(status.body.components.web.details.status_code).toBe(200);
    expect(status.body.components.web.age_seconds).toBeLessThan(5);
    expect(status.body.components['web-port'].status).toBe('healthy');
    expect(status.body.components.api.status).toBe('healthy');
    expect((await stateVariable(server, 'HEALTH_WEB'))?.value).toBe('healthy');
    expect((await stateVariable(server, 'HEALTH_STATUS'))?.value).toBe('healthy');
  });

  it('goes unhealthy only after the down threshold', async () => {
    const before = await stateVariable(server, 'HEALTH_WEB');
    service.mode = 'error';
    const first = await outcome('web');
    expect(first.observed).toBe('unhealthy');
    expect(first.status).toBe('healthy');
    expect(first.reason).toContain('HTTP 500');
    // The value did not change, so the variable was not written again.
    expect((await stateVariable(server, 'HEALTH_WEB'))?.updated_at).toBe(before?.updated_at);

    const second = await outcome('web');
    expect(second.status).toBe('unhealthy');
    const status = await server.request('GET', '/api/health/status', { token: server.adminToken });
    expect(status.status).toBe(503);
    expect(status.body.status).toBe('unhealthy');
    expect(status.body.components.web.details.reason).toContain('HTTP 500');
    expect((await stateVariable(server, 'HEALTH_WEB'))?.value).toBe('unhealthy');
    expect((await stateVariable(server, 'HEALTH_STATUS'))?.value).toBe('unhealthy');
    const changes = await auditRows(server, 'health_status_changed');
    expect(changes.at(-1)?.details).toMatchObject({
      component: 'web',
      from: 'healthy',
      to: 'unhealthy',
    });
  });

  it('reports a stopped service on both checks', async () => {
    await service.stop();
    const outcomes = await run();
    const web = outcomes.find((each) => each.name === 'web')!;
    const port = outcomes.find((each) => each.name === 'web-port')!;
    expect(web.status).toBe('unhealthy');
    expect(web.reason).toContain('ECONNREFUSED');
    expect(port.status).toBe('unhealthy');
    expect(port.reason).toContain(`127.0.0.1:${service.port}`);
  });

  it('comes back only after the up threshold', async () => {
    service.mode = 'ok';
    await service.listen(service.port);
    const first = await outcome('web');
    expect(first.observed).toBe('healthy');
    expect(first.status).toBe('unhealthy');
    const second = await outcome('web');
    expect(second.status).toBe('healthy');
    const status = await server.request('GET', '/api/health/status', { token: server.adminToken });
    expect(status.status).toBe(200);
    expect(status.body.status).toBe('healthy');
    expect((await stateVariable(server, 'HEALTH_WEB'))?.value).toBe('healthy');
    expect((await stateVariable(server, 'HEALTH_WEB_PORT'))?.value).toBe('healthy');
    expect((await stateVariable(server, 'HEALTH_STATUS'))?.value).toBe('healthy');
  });

  it('skips checks that are not due', async () => {
    // The default interval is HEALTH_CHECK_INTERVAL (300 s), so nothing is due again yet.
    expect(await runHealthChecks(server.context)).toEqual([]);
  });

  it('returns history with a summary', async () => {
    const reader = await server.token('read');
    const history = await server.request('GET', '/api/health/history?component=web', {
      token: reader,
    });
    expect(history.status).toBe(200);
    const statuses = history.body.results.map((row: { status: string }) => row.status);
    // Newest first: healthy, unhealthy (up threshold), unhealthy x2, healthy x2.
    expect(statuses).toEqual([
      'healthy',
      'unhealthy',
      'unhealthy',
      'unhealthy',
      'healthy',
      'healthy',
    ]);
    expect(history.body.summary).toMatchObject({ total: 6, healthy: 3, unhealthy: 3 });
    expect(history.body.results[0].details.observed).toBe('healthy');

    const page = await server.request('GET', '/api/health/history?component=web&limit=4', {
      token: reader,
    });
    expect(page.body.count).toBe(4);
    expect(page.body.next_cursor).not.toBeNull();
    const rest = await server.request(
      'GET',
      `/api/health/history?component=web&limit=4&cursor=${page.body.next_cursor}`,
      { token: reader },
    );
    expect(rest.body.count).toBe(2);
    expect(rest.body.next_cursor).toBeNull();
  });

  it('exports status and latency to Prometheus', async () => {
    const reader = await server.token('read');
    const metrics = await server.request('GET', '/metrics', { token: reader });
    expect(metrics.status).toBe(200);
    expect(metrics.text).toContain(
      'slipway_health_check_status{component="web",status="healthy"} 1',
    );
    expect(metrics.text).toContain(
      'slipway_health_check_status{component="web",status="unhealthy"} 0',
    );
    expect(metrics.text).toMatch(/slipway_health_check_latency_ms\{component="web-port"\} \d/);
  });

  it('rejects bad history queries', async () => {
    const reader = await server.token('read');
    const anonymous = await server.request('GET', '/api/health/history');
    expect(anonymous.status).toBe(401);
    const reversed = await server.request(
      'GET',
      '/api/health/history?since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z',
      { token: reader },
    );
    expect(reversed.status).toBe(400);
    expect(reversed.body).toMatchObject({ field: 'until', rule: 'after_since' });
    const badName = await server.request('GET', '/api/health/history?component=Bad%20Name', {
      token: reader,
    });
    expect(badName.status).toBe(400);
    expect(badName.body.field).toBe('component');
    const empty = await server.request(
      'GET',
      '/api/health/history?component=web&since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z',
      { token: reader },
    );
    expect(empty.body.results).toEqual([]);
  });
});
