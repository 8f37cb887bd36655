/**
 * A claim whose response never reaches the worker: the API committed the claim, so the task
 * is leased to the worker, which does not know it. The worker's next claim lists the tasks it
 * holds, and the API returns the lost one again, so it runs once, without waiting for its lease
 * to expire (which ends a task with side effects `error`).
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createToken } from '../../src/store/tokens.js';
import { ensureBuilt, spawnCli, type CliProcess, waitUntil } from '../support/cli.js';
import { writePipelineFile } from '../support/execution.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

const AGENT_TOKEN = 'slw_lost-claim-agent-token-00000000000';
const MARKER = `lost-claim-ran-${process.pid}`;

/**
 * Starts a TCP proxy to the API that passes everything through, except that it closes the
 * client's connection instead of forwarding the first response that carries a claimed task.
 */
async function startDroppingProxy(
  target: URL,
): Promise<{ url: string; dropped(): number; close(): Promise<void> }> {
  let dropped = 0;
  const sockets = new Set<net.Socket>();
  const proxy = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    client.on('data', (chunk) => upstream.write(chunk));
    upstream.on('data', (chunk: Buffer) => {
      if (dropped === 0 && chunk.toString('latin1').includes('"tasks":[{')) {
        dropped += 1;
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(chunk);
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
    dropped: () => dropped,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        proxy.close(() => resolve());
      }),
  };
}

describe('a claim response the worker never receives', () => {
  let server: TestServer;
  let worker: CliProcess | undefined;
  let proxy: Awaited<ReturnType<typeof startDroppingProxy>> | undefined;

  beforeAll(async () => {
    await ensureBuilt();
    server = await startTestServer({
      SLIPWAY_PIPELINES: writePipelineFile(`
pipelines:
  release:
    executor: local
    side_effects: true
    steps:
      - run: echo ${MARKER}
`),
    });
    await server.context.store.write((trx) =>
      createToken(trx, 'lost-claim-agent', 'agent', AGENT_TOKEN),
    );
  });

  afterAll(async () => {
    if (worker !== undefined && worker.child.exitCode === null) {
      worker.child.kill('SIGTERM');
      await worker.exited;
    }
    await proxy?.close();
    await server?.close();
  });

  it('returns a lost task only to the session that claimed it', async () => {
    const admin = { token: server.adminToken };
    const post = (path: string, body: unknown) => server.request('POST', path, { ...admin, body });
    const register = (session: string) =>
      post('/api/agent/workers', {
        name: 'direct',
        hostname: 'direct-host',
        executors: ['local'],
        capacity: 2,
        session,
      });
    expect((await register('session-one')).status).toBe(200);
    const triggered = await post('/api/trigger/release', { commit: 'abcdef2' });
    expect(triggered.status).toBe(201);
    const claim = (session: string, holding: string[]) =>
      post('/api/agent/workers/direct/claim', { max: 2, wait_seconds: 0, session, holding });

    const first = await claim('session-one', []);
    expect(first.body.tasks).toHaveLength(1);
    const task = first.body.tasks[0];
    const again = await claim('session-one', []);
    expect(again.body.tasks).toEqual([
      expect.objectContaining({ task_id: task.task_id, attempt: task.attempt }),
    ]);
    expect((await claim('session-one', [task.task_id])).body.tasks).toEqual([]);

    // Another process that takes over the worker id may not run what the first one started.
    expect((await post('/api/agent/workers/direct/status', { status: 'offline' })).status).toBe(
      200,
    );
    expect((await register('session-two')).status).toBe(200);
    expect((await claim('session-two', [])).body.tasks).toEqual([]);
    const job = await server.request('GET', `/api/job/${triggered.body.job_id}`, admin);
    expect(job.body.tasks[0]).toMatchObject({ status: 'running', attempt: 1 });
  });

  it('gets the task again on its next claim and runs it once', async () => {
    proxy = await startDroppingProxy(new URL(server.url));
    worker = spawnCli('worker', {
      SLIPWAY_API_URL: proxy.url,
      SLIPWAY_AGENT_TOKEN: AGENT_TOKEN,
      SLIPWAY_EXECUTOR: 'local',
      SLIPWAY_WORKER_NAME: 'lost-claim',
      SLIPWAY_DATA_DIR: makeTempDir('slipway-worker-'),
      LOG_LEVEL: 'info',
    });
    await waitUntil(
      () => worker!.output().includes('worker lost-claim registered; waiting for tasks'),
      'the registration',
    );
    const triggered = await server.request('POST', '/api/trigger/release', {
      token: server.adminToken,
      body: { commit: 'abcdef1' },
    });
    expect(triggered.status).toBe(201);
    const id = triggered.body.job_id as string;

    let job = (await server.request('GET', `/api/job/${id}`, { token: server.adminToken })).body;
    const deadline = Date.now() + 20_000;
    while (!['success', 'failure', 'error', 'cancelled'].includes(job.status)) {
      if (Date.now() > deadline) throw new Error(`job still ${job.status}:\n${worker.output()}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
      job = (await server.request('GET', `/api/job/${id}`, { token: server.adminToken })).body;
    }
    expect(proxy.dropped()).toBe(1);
    expect(job.status, worker.output()).toBe('success');
    expect(job.tasks[0].attempt).toBe(1);

    const logs = await server.request('GET', `/api/job/${id}/logs`, { token: server.adminToken });
    expect(logs.text.split(MARKER).length - 1).toBe(1);
    const audit = await server.request('GET', `/api/admin/audit-log?job_id=${id}`, {
      token: server.adminToken,
    });
    const actions = (audit.body.entries as { action: string }[]).map((entry) => entry.action);
    expect(actions.filter((action) => action === 'task_claimed')).toHaveLength(1);
    expect(actions.filter((action) => action === 'task_redelivered')).toHaveLength(1);
  });
});
