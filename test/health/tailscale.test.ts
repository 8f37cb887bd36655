import net from 'node:net';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runHealthChecks, type CheckOutcome } from '../../src/health/runner.js';
import { makeTempDir, type TestServer } from '../support/server.js';
import { startHealthServer } from './helpers.js';
import { TailscaleStandIn } from './tailscale-stand-in.js';

describe('tailscale check', () => {
  const dir = makeTempDir('slipway-tailscale-');
  const standIn = new TailscaleStandIn(path.join(dir, 'tailscaled.sock'));
  const tcp = net.createServer((socket) => socket.end());
  let server: TestServer;

  beforeAll(async () => {
    await standIn.listen();
    await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
    const port = (tcp.address() as AddressInfo).port;
    server = await startHealthServer(
      `
  - name: tailnet
    type: tailscale
    timeout: 3s
  - name: missing-socket
    type: tailscale
    socket: ${path.join(dir, 'absent.sock')}
  - name: neighbour
    type: tcp
    port: ${port}
    timeout: 1s
`,
      { TAILSCALE_SOCKET: standIn.socketPath },
    );
  });
  afterAll(async () => {
    await server.close();
    await standIn.close();
    await new Promise((resolve) => tcp.close(resolve));
  });

  const check = async (name: string) => {
    const outcomes = await runHealthChecks(server.context, { force: true, names: [name] });
    return outcomes[0]!;
  };
  const latestDetails = async (name: string) => {
    const status = await server.request('GET', '/api/health/status', { token: server.adminToken });
    return status.body.components[name].details;
  };

  it('is healthy when running and online', async () => {
    standIn.mode = 'running';
    const outcome = await check('tailnet');
    expect(outcome.status).toBe('healthy');
    expect(standIn.hosts.at(-1)).toBe('local-tailscaled.sock');
    const details = await latestDetails('tailnet');
    expect(details).toMatchObject({
      backend_state: 'Running',
      online: true,
      host_name: 'build-host',
      tailscale_ips: ['100.101.102.103', 'fd7a:115c:a1e0::1'],
    });
  });

  it('is unhealthy when stopped', async () => {
    standIn.mode = 'stopped';
    const outcome = await check('tailnet');
    expect(outcome.status).toBe('unhealthy');
    expect(outcome.reason).toContain('backend state is Stopped');
  });

  it('is unhealthy when it needs a login', async () => {
    standIn.mode = 'needs-login';
    const outcome = await check('tailnet');
    expect(outcome.status).toBe('unhealthy');
    expect(outcome.reason).toContain('NeedsLogin');
    expect(outcome.reason).toContain('tailscale up');
  });

  it('is unhealthy when running but offline', async () => {
    standIn.mode = 'offline';
    const outcome = await check('tailnet');
    expect(outcome.status).toBe('unhealthy');
    expect(outcome.reason).toContain('not online');
  });

  it('is degraded when tailscaled reports health problems', async () => {
    standIn.mode = 'warning';
    const outcome = await check('tailnet');
    expect(outcome.status).toBe('degraded');
    expect(outcome.reason).toContain('DERP');
  });

  it('is unhealthy with a reason when the socket is missing', async () => {
    const outcome = await check('missing-socket');
    expect(outcome.status).toBe('unhealthy');
    expect(outcome.reason).toMatch(/socket .*absent\.sock not found/);
  });

  it('times out a hanging LocalAPI without delaying other checks', async () => {
    standIn.mode = 'hang';
    const finished: Record<string, number> = {};
    const started = performance.now();
    const runs = ['tailnet', 'neighbour'].map(async (name) => {
      const [outcome] = await runHealthChecks(server.context, { force: true, names: [name] });
      finished[name] = performance.now() - started;
      return outcome!;
    });
    const [tailnet, neighbour] = (await Promise.all(runs)) as [CheckOutcome, CheckOutcome];
    expect(neighbour.status).toBe('healthy');
    expect(finished.neighbour).toBeLessThan(2000);
    expect(tailnet.status).toBe('unhealthy');
    expect(tailnet.reason).toBe('tailscale check timed out after 3000 ms');
    expect(finished.tailnet).toBeGreaterThanOrEqual(2900);
    expect(finished.tailnet).toBeLessThan(6000);
  });

  it('runs all due checks at once in one call', async () => {
    standIn.mode = 'hang';
    const startedAt = Date.now();
    const started = performance.now();
    const outcomes = await runHealthChecks(server.context, { force: true });
    const elapsed = performance.now() - started;
    const neighbourRow = await server.context.store.db
      .selectFrom('health_metrics')
      .select('recorded_at')
      .where('component', '=', 'neighbour')
      .orderBy('id', 'desc')
      .executeTakeFirstOrThrow();
    // The neighbour's result was committed long before the hanging check timed out.
    expect(Date.parse(neighbourRow.recorded_at) - startedAt).toBeLessThan(2000);
    expect(outcomes).toHaveLength(3);
    // The call lasts as long as its slowest check, the 3 s timeout, and not longer.
    expect(elapsed).toBeLessThan(6000);
    const neighbour = outcomes.find((outcome) => outcome.name === 'neighbour')!;
    expect(neighbour.status).toBe('healthy');
  });
});
