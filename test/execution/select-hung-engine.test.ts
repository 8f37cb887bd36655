/**
 * The choice of executors when a worker starts on a Docker engine that does not respond. The
 * ping that finds the engine must end with its time limit: a request left open keeps the
 * socket, and with it the worker process, alive after the worker stopped or failed to start.
 * The engine is the real one, behind a proxy that keeps its bytes back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/env.js';
import { selectExecutors } from '../../src/execution/select.js';
import { createLogger } from '../../src/log.js';
import { requireDocker } from '../support/docker.js';
import { startEngineProxy, type EngineProxy } from '../support/engine-proxy.js';
import { makeTempDir } from '../support/server.js';

describe('executor choice on a hung engine', () => {
  let proxy: EngineProxy;

  beforeAll(async () => {
    await requireDocker();
    proxy = await startEngineProxy();
  });

  afterAll(async () => {
    proxy?.thaw();
    await proxy?.close();
  });

  const configFor = (executor: string) =>
    loadConfig({
      SLIPWAY_DATA_DIR: makeTempDir(),
      SLIPWAY_EXECUTOR: executor,
      DOCKER_HOST: `unix://${proxy.socketPath}`,
    });

  async function waitForNoConnections(): Promise<number> {
    const deadline = Date.now() + 1_000;
    while (proxy.openConnections() > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return proxy.openConnections();
  }

  it('closes the ping of a failed start', async () => {
    proxy.freeze();
    const logger = createLogger('silent');
    await expect(selectExecutors(configFor('docker'), logger)).rejects.toThrow(
      /SLIPWAY_EXECUTOR=docker but the Docker engine at unix:\/\/\S+ did not respond \(no response within 3000 ms\)/,
    );
    expect(await waitForNoConnections()).toBe(0);
    proxy.thaw();
  });

  it('closes the ping before a fallback', async () => {
    proxy.freeze();
    const logger = createLogger('silent');
    const executors = await selectExecutors(configFor('auto'), logger);
    expect(executors.names).toEqual(['local']);
    expect(await waitForNoConnections()).toBe(0);
    proxy.thaw();
  });
});
