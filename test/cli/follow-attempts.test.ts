/**
 * `slipway trigger --wait` follows a task whose first attempt was handed back, while its
 * connection to the API was cut. When it connects again the task runs its second attempt,
 * and the follower must print that attempt from its start rather than skip as many bytes
 * as it had printed of the first.
 */
import net from 'node:net';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { followJob } from '../../src/cli/follow-job.js';
import { SlipwayClient } from '../../src/cli/slipway-client.js';
import { writePipelineFile } from '../support/execution.js';
import { startTestServer, type TestServer } from '../support/server.js';

/** Starts a TCP proxy to `target` whose connections can be cut, rejecting new ones until resumed. */
async function startCuttableProxy(target: URL) {
  let rejecting = false;
  const sockets = new Set<net.Socket>();
  const proxy = net.createServer((client) => {
    if (rejecting) {
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const { port } = proxy.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    cut() {
      rejecting = true;
      for (const socket of sockets) socket.destroy();
    },
    resume() {
      rejecting = false;
    },
    close: () => new Promise<void>((resolve) => proxy.close(() => resolve())),
  };
}

describe('following a task across attempts', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer({
      SLIPWAY_PIPELINES: writePipelineFile(`
pipelines:
  build:
    executor: local
    steps: [{ run: 'true' }]
`),
    });
  });

  afterAll(async () => {
    await server?.close();
  });

  it('prints the second attempt whole after a reconnect', async () => {
    const admin = { token: server.adminToken };
    const post = async (path: string, body: unknown) => {
      const answer = await server.request('POST', path, { ...admin, body });
      expect(answer.status, `${path}: ${answer.text}`).toBeLessThan(300);
      return answer.body;
    };
    await post('/api/agent/workers', {
      name: 'w',
      hostname: 'h',
      executors: ['local'],
      capacity: 1,
    });
    const { job_id: jobId } = await post('/api/trigger/build', { commit: 'abcdef1' });
    const claim = async () =>
      (await post('/api/agent/workers/w/claim', { max: 1, wait_seconds: 0 })).tasks[0];
    const first = await claim();
    const firstOutput = 'first attempt, a line longer than the second attempt writes\n'.repeat(4);
    await post(`/api/agent/tasks/${first.task_id}/logs`, {
      worker_id: 'w',
      attempt: first.attempt,
      offset: 0,
      data: firstOutput,
    });

    const proxy = await startCuttableProxy(new URL(server.url));
    let printed = '';
    const output = new Writable({
      write(chunk: Buffer, _encoding, done) {
        printed += chunk.toString();
        done();
      },
    });
    const following = followJob(new SlipwayClient(proxy.url, server.adminToken), jobId, {
      pollIntervalMs: 100,
      timeoutMs: 30_000,
      cancelOnTimeout: false,
      cancelOnInterrupt: false,
      output,
    });
    try {
      const deadline = Date.now() + 10_000;
      while (!printed.includes(firstOutput)) {
        if (Date.now() > deadline) throw new Error(`the first attempt was not printed: ${printed}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }

      // The worker hands the task back and claims it again while the follower is cut off.
      proxy.cut();
      await post(`/api/agent/tasks/${first.task_id}/release`, {
        worker_id: 'w',
        attempt: first.attempt,
        reason: 'the worker is stopping',
      });
      const second = await claim();
      expect(second.attempt).toBe(2);
      await post(`/api/agent/tasks/${second.task_id}/logs`, {
        worker_id: 'w',
        attempt: 2,
        offset: 0,
        data: 'second attempt\n',
      });
      await post(`/api/agent/tasks/${second.task_id}/finish`, {
        worker_id: 'w',
        attempt: 2,
        status: 'success',
        exit_code: 0,
        duration_ms: 5,
      });
      proxy.resume();

      const result = await following;
      expect(result.status).toBe('success');
      expect(printed).toContain('second attempt\n');
      expect(printed.split(firstOutput).length - 1).toBe(1);
    } finally {
      proxy.cut();
      await proxy.close();
    }
  });
});
