/**
 * A worker whose Docker engine is down, as while dockerd restarts: its socket refuses
 * connections or is missing, so each request fails at once instead of hanging. The worker must
 * claim no docker tasks until the engine is back, or it burns every queued task and all their
 * retries within a second. The engine comes back as a socket in front of the real one.
 */
import net from 'node:net';
import path from 'node:path';
import Docker from 'dockerode';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MirrorSet } from '../../src/execution/checkout.js';
import { DockerExecutor } from '../../src/execution/docker.js';
import { AgentClient } from '../../src/worker/client.js';
import { Worker } from '../../src/worker/worker.js';
import { requireDocker, TEST_IMAGE } from '../support/docker.js';
import { writePipelineFile } from '../support/execution.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

describe('a worker whose Docker engine is down', () => {
  let server: TestServer;
  let worker: Worker | undefined;
  let engine: net.Server | undefined;
  const socketPath = path.join(makeTempDir('slipway-engine-down-'), 'docker.sock');

  beforeAll(async () => {
    await requireDocker();
    server = await startTestServer({
      SLIPWAY_PIPELINES: writePipelineFile(`
pipelines:
  ci:
    executor: docker
    image: ${TEST_IMAGE}
    network: none
    retries: 2
    steps:
      - name: test
        run: echo test
`),
      SLIPWAY_LEASE_SECONDS: '6',
    });
    const token = await server.token('agent', 'engine-down');
    const executor = new DockerExecutor(new Docker({ socketPath }), { timeoutMs: 1_000 });
    worker = new Worker(
      new AgentClient(server.url, token),
      { names: ['docker'], byName: new Map([['docker', executor]]) },
      new MirrorSet(makeTempDir('slipway-engine-down-mirrors-')),
      {
        id: 'engine-down',
        name: 'engine-down',
        capacity: 1,
        labels: [],
        shutdownGraceSeconds: 0,
        workspacesRoot: makeTempDir('slipway-engine-down-workspaces-'),
      },
      pino({ level: 'silent' }),
    );
    await worker.start();
  });

  afterAll(async () => {
    await worker?.stop();
    await server?.close();
    await new Promise((resolve) =>
      engine === undefined ? resolve(undefined) : engine.close(resolve),
    );
  });

  /** Starts passing connections on `socketPath` to the real engine, as a restarted dockerd. */
  async function startEngine(): Promise<void> {
    engine = net.createServer((client) => {
      const upstream = net.connect('/var/run/docker.sock');
      client.pipe(upstream);
      upstream.pipe(client);
      const end = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
    });
    await new Promise<void>((resolve) => engine!.listen(socketPath, resolve));
  }

  const taskOf = (jobId: string) =>
    server.context.store.db
      .selectFrom('tasks')
      .selectAll()
      .where('job_id', '=', jobId)
      .executeTakeFirstOrThrow();

  it('keeps the retries for the engine', async () => {
    const triggered = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit: 'd0d0d0d0d0' },
    });
    expect(triggered.status, triggered.text).toBe(201);
    const id = triggered.body.job_id as string;

    const deadline = Date.now() + 10_000;
    while ((await taskOf(id)).attempt < 1 || (await taskOf(id)).status === 'running') {
      if (Date.now() > deadline) throw new Error('the first attempt did not end');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    // The first attempt finds the engine down, and the retries wait for it.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const waiting = await taskOf(id);
    expect(waiting.attempt).toBe(1);
    expect(waiting.status).toBe('queued');
    expect(waiting.reason).toContain('the Docker engine failed: connect ENOENT');

    await startEngine();
    const done = await waitForEnd(id);
    expect(done.status).toBe('success');
    expect(done.attempt).toBe(2);
  });

  async function waitForEnd(id: string) {
    const deadline = Date.now() + 20_000;
    let task = await taskOf(id);
    while (!['success', 'failure', 'error'].includes(task.status)) {
      if (Date.now() > deadline) throw new Error(`task still ${task.status}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
      task = await taskOf(id);
    }
    return task;
  }
});
