/**
 * A claim that has taken a docker task when the worker's Docker engine fails: the worker
 * aborts the claim to send it again without docker, so the response with the task is lost.
 * The task must wait in the queue for the engine, not come back to this worker and fail on the
 * hung engine. The engine is the real one, behind a proxy that makes it hang. A second proxy in
 * front of the API keeps back the claim response, so that it is still in flight at the failure.
 */
import net from 'node:net';
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

const COMMIT = '0123456789abcdef0123456789abcdef01234567';

/**
 * Starts a TCP proxy to the API that passes everything through, except that while `hold` is
 * on it keeps back each response that carries claimed tasks, until the client goes away.
 */
async function startHoldingProxy(target: string) {
  const url = new URL(target);
  let hold = false;
  const sockets = new Set<net.Socket>();
  const proxy = net.createServer((client) => {
    const upstream = net.connect(Number(url.port), url.hostname);
    sockets.add(client).add(upstream);
    let keptBack = false;
    client.on('data', (chunk) => upstream.write(chunk));
    upstream.on('data', (chunk: Buffer) => {
      if (hold && chunk.toString('latin1').includes('"tasks":[{')) keptBack = true;
      if (!keptBack) client.write(chunk);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const address = proxy.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${address.port}`,
    hold(on: boolean) {
      hold = on;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        proxy.close(() => resolve());
      }),
  };
}

describe('a claim lost at an engine failure', () => {
  let docker: Docker;
  let server: TestServer;
  let engine: EngineProxy;
  let api: Awaited<ReturnType<typeof startHoldingProxy>>;
  let worker: Worker | undefined;

  beforeAll(async () => {
    docker = await requireDocker();
    engine = await startEngineProxy();
    server = await startTestServer({
      SLIPWAY_PIPELINES: writePipelineFile(`
pipelines:
  stuck:
    executor: docker
    image: ${TEST_IMAGE}
    network: none
    timeout: 4s
    steps:
      - name: wait
        run: echo started; sleep 300
  quick:
    executor: docker
    image: ${TEST_IMAGE}
    network: none
    steps:
      - name: test
        run: echo quick test
`),
      SLIPWAY_LEASE_SECONDS: '6',
    });
    api = await startHoldingProxy(server.url);
    const token = await server.token('agent', 'lost-claim-engine');
    const executor = new DockerExecutor(new Docker({ socketPath: engine.socketPath }), {
      timeoutMs: 3_000,
    });
    worker = new Worker(
      new AgentClient(api.url, token),
      { names: ['docker'], byName: new Map([['docker', executor]]) },
      new MirrorSet(makeTempDir('slipway-lost-claim-mirrors-')),
      {
        id: 'lost-claim-engine',
        name: 'lost-claim-engine',
        capacity: 2,
        labels: [],
        shutdownGraceSeconds: 0,
        workspacesRoot: makeTempDir('slipway-lost-claim-workspaces-'),
      },
      pino({ level: 'silent' }),
    );
    await worker.start();
  });

  afterAll(async () => {
    engine?.thaw();
    await worker?.stop();
    await server?.close();
    await api?.close();
    await engine?.close();
    // The stuck step's container, straight from the engine.
    const left = await docker.listContainers({
      all: true,
      filters: { name: ['slipway-stuck-'] },
    });
    for (const info of left) await docker.getContainer(info.Id).remove({ force: true });
  });

  const trigger = async (type: string) => {
    const answer = await server.request('POST', `/api/trigger/${type}`, {
      token: server.adminToken,
      body: { commit: COMMIT },
    });
    expect(answer.status, answer.text).toBe(201);
    return answer.body.job_id as string;
  };
  const taskOf = (jobId: string) =>
    server.context.store.db
      .selectFrom('tasks')
      .selectAll()
      .where('job_id', '=', jobId)
      .executeTakeFirstOrThrow();
  async function waitFor(what: string, check: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + 20_000;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  it('keeps the lost task queued', async () => {
    const stuck = await trigger('stuck');
    await waitFor('the stuck step to start', async () =>
      (
        await server.request('GET', `/api/job/${stuck}/logs`, { token: server.adminToken })
      ).text.includes('started'),
    );

    // The worker's open claim takes the quick task, and its response stays in the proxy.
    api.hold(true);
    const quick = await trigger('quick');
    await waitFor('the claim of the quick task', async () => {
      return (await taskOf(quick)).status === 'running';
    });

    // The stuck task times out, and the engine does not confirm the kill: an engine failure.
    engine.freeze();
    await waitFor('the stuck task to end', async () => (await taskOf(stuck)).status !== 'running');
    api.hold(false);
    await new Promise((resolve) => setTimeout(resolve, 4_000));
    const waiting = await taskOf(quick);
    expect(waiting.status).toBe('queued');
    expect(waiting.reason).toContain('takes no docker tasks now');
    const redelivered = await server.context.store.db
      .selectFrom('audit_log')
      .select('id')
      .where('job_id', '=', quick)
      .where('action', '=', 'task_redelivered')
      .execute();
    expect(redelivered).toEqual([]);

    engine.thaw();
    await waitFor('the quick task to end', async () =>
      ['success', 'failure', 'error'].includes((await taskOf(quick)).status),
    );
    expect((await taskOf(quick)).status).toBe('success');
  });
});
