/**
 * The worker's log lines about a Docker engine that stops responding, comes back and stops
 * responding again within a minute. After "can run tasks again", the next failure must be
 * logged at once, or the last line in the log reports that docker runs tasks while the worker
 * claims none. The engine is the real one, behind a proxy that makes it hang.
 */
import Docker from 'dockerode';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MirrorSet } from '../../src/execution/checkout.js';
import { DockerExecutor } from '../../src/execution/docker.js';
import { AgentClient } from '../../src/worker/client.js';
import { Worker } from '../../src/worker/worker.js';
import { requireDocker, TEST_IMAGE } from '../support/docker.js';
import { startEngineProxy, type EngineProxy } from '../support/engine-proxy.js';
import { writePipelineFile } from '../support/execution.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

const UNAVAILABLE = 'the docker executor cannot run tasks now';
const AVAILABLE = 'the docker executor can run tasks again';

describe('log of an engine that fails twice', () => {
  let server: TestServer;
  let proxy: EngineProxy;
  let worker: Worker | undefined;
  const lines: string[] = [];

  beforeAll(async () => {
    await requireDocker();
    proxy = await startEngineProxy();
    server = await startTestServer({
      SLIPWAY_PIPELINES: writePipelineFile(`
pipelines:
  ci:
    executor: docker
    image: ${TEST_IMAGE}
    network: none
    steps:
      - name: test
        run: echo test
`),
      SLIPWAY_LEASE_SECONDS: '6',
    });
    const token = await server.token('agent', 'flapping-engine');
    const workspaces = makeTempDir('slipway-flapping-engine-');
    const docker = new DockerExecutor(new Docker({ socketPath: proxy.socketPath }), {
      timeoutMs: 3_000,
    });
    worker = new Worker(
      new AgentClient(server.url, token),
      { names: ['docker'], byName: new Map([['docker', docker]]) },
      new MirrorSet(makeTempDir('slipway-flapping-mirrors-')),
      {
        id: 'flapping-engine',
        name: 'flapping-engine',
        capacity: 1,
        labels: [],
        shutdownGraceSeconds: 0,
        workspacesRoot: workspaces,
      },
      pino({ level: 'info' }, { write: (line: string) => lines.push(line) }),
    );
    await worker.start();
  });

  afterAll(async () => {
    proxy?.thaw();
    await worker?.stop();
    await server?.close();
    await proxy?.close();
  });

  /** Waits until `count` log lines contain `text`. */
  async function waitForLines(text: string, count: number): Promise<void> {
    const deadline = Date.now() + 20_000;
    while (lines.filter((line) => line.includes(text)).length < count) {
      if (Date.now() > deadline) {
        throw new Error(`fewer than ${count} lines with "${text}" in:\n${lines.join('')}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  async function failOnFrozenEngine(commit: string): Promise<void> {
    proxy.freeze();
    const triggered = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit },
    });
    expect(triggered.status, triggered.text).toBe(201);
  }

  it('logs the second failure at once', async () => {
    await failOnFrozenEngine('c1c1c1c1c1');
    await waitForLines(UNAVAILABLE, 1);
    proxy.thaw();
    await waitForLines(AVAILABLE, 1);

    await failOnFrozenEngine('c2c2c2c2c2');
    await waitForLines(UNAVAILABLE, 2);
    proxy.thaw();
    await waitForLines(AVAILABLE, 2);
  }, 90_000);
});
