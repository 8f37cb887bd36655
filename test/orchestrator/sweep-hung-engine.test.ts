/**
 * The orchestrator's engine requests against a Docker engine that stops responding, through a
 * proxy in front of the real engine. The container sweep runs inside the watchdog's pass,
 * which also recovers expired leases, so a hung engine must not block it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppContext } from '../../src/app/context.js';
import { removeOrphanContainers } from '../../src/orchestrator/orphans.js';
import { requireDocker } from '../support/docker.js';
import { startEngineProxy, type EngineProxy } from '../support/engine-proxy.js';
import { startTestServer, type TestServer } from '../support/server.js';

describe('container sweep on a hung engine', () => {
  let proxy: EngineProxy;
  let server: TestServer;

  beforeAll(async () => {
    await requireDocker();
    proxy = await startEngineProxy();
    server = await startTestServer({
      DOCKER_HOST: `unix://${proxy.socketPath}`,
      SLIPWAY_DOCKER_TIMEOUT_SECONDS: '3',
    });
  });

  afterAll(async () => {
    proxy?.thaw();
    await server?.close();
    await proxy?.close();
  });

  it('gives up on a hung engine', async () => {
    const context: AppContext = server.context;
    expect((await removeOrphanContainers(context, { actor: 'orchestrator' })).error).toBeNull();

    proxy.freeze();
    const started = Date.now();
    const result = await removeOrphanContainers(context, { actor: 'orchestrator' });
    expect(result.removed).toBe(0);
    expect(result.error).toBe(
      "the Docker engine did not respond to the listing of Slipway's containers within 3 s; " +
        'check that the engine runs and responds (docker info)',
    );
    expect(Date.now() - started).toBeLessThan(8_000);

    proxy.thaw();
    expect((await removeOrphanContainers(context, { actor: 'orchestrator' })).error).toBeNull();
  });
});
