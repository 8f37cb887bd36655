/**
 * The docker health check on an engine that does not respond. The check ends at its timeout,
 * and its requests must end with it: each run on a hung engine would otherwise leave a socket
 * open until the engine responds. The engine is the real one, behind a proxy that keeps its
 * bytes back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runHealthChecks } from '../../src/health/runner.js';
import { requireDocker } from '../support/docker.js';
import { startEngineProxy, type EngineProxy } from '../support/engine-proxy.js';
import { writePipelineFile } from '../support/execution.js';
import { startTestServer, type TestServer } from '../support/server.js';

describe('docker check on a hung engine', () => {
  let proxy: EngineProxy;
  let server: TestServer;

  beforeAll(async () => {
    await requireDocker();
    proxy = await startEngineProxy();
    server = await startTestServer({
      SLIPWAY_PIPELINES: writePipelineFile(`
pipelines:
  ci:
    executor: local
    steps: [{ run: 'true' }]
health_checks:
  - name: engine
    type: docker
    socket: ${proxy.socketPath}
    timeout: 500ms
`),
    });
  });

  afterAll(async () => {
    proxy?.thaw();
    await server?.close();
    await proxy?.close();
  });

  it('closes its requests at the timeout', async () => {
    const healthy = await runHealthChecks(server.context, { force: true, names: ['engine'] });
    expect(healthy[0]?.observed).toBe('healthy');

    proxy.freeze();
    for (let run = 0; run < 3; run += 1) {
      const [outcome] = await runHealthChecks(server.context, { force: true, names: ['engine'] });
      expect(outcome?.reason).toBe('docker check timed out after 500 ms');
    }
    const deadline = Date.now() + 1_000;
    while (proxy.openConnections() > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(proxy.openConnections()).toBe(0);
  });
});
