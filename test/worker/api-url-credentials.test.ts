import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, spawnCli, type CliProcess } from '../support/cli.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

const SECRET = 's3cret-pw';

/** Adds a user name and password to `url`, as an operator might in SLIPWAY_API_URL. */
function withCredentials(url: string): string {
  const parsed = new URL(url);
  parsed.username = 'user';
  parsed.password = SECRET;
  return parsed.href.replace(/\/$/, '');
}

async function waitForOutput(worker: CliProcess, text: string): Promise<string> {
  const deadline = Date.now() + 20_000;
  while (!worker.output().includes(text)) {
    if (Date.now() > deadline) throw new Error(`no "${text}" in:\n${worker.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return worker.output();
}

async function stop(worker: CliProcess): Promise<void> {
  worker.child.kill('SIGTERM');
  await worker.exited;
}

describe('slipway worker with credentials in SLIPWAY_API_URL', () => {
  let server: TestServer;
  let agentToken: string;

  beforeAll(async () => {
    await ensureBuilt();
    server = await startTestServer();
    agentToken = await server.token('agent', 'credentials-agent');
  });

  afterAll(async () => {
    await server?.close();
  });

  const startWorker = (apiUrl: string, name: string) =>
    spawnCli('worker', {
      SLIPWAY_API_URL: apiUrl,
      SLIPWAY_AGENT_TOKEN: agentToken,
      SLIPWAY_EXECUTOR: 'local',
      SLIPWAY_WORKER_NAME: name,
      SLIPWAY_DATA_DIR: makeTempDir('slipway-worker-'),
      LOG_LEVEL: 'info',
    });

  it('logs registration with the URL redacted', async () => {
    const port = new URL(server.url).port;
    const worker = startWorker(withCredentials(server.url), 'credentials-registered');
    try {
      const output = await waitForOutput(worker, 'registered; waiting for tasks');
      expect(output).toContain(`"api":"http://***@127.0.0.1:${port}"`);
      expect(output).not.toContain(SECRET);
    } finally {
      await stop(worker);
    }
  });

  it('logs an unreachable API redacted', async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as net.AddressInfo;
    await new Promise((resolve) => closed.close(resolve));
    const worker = startWorker(
      withCredentials(`http://127.0.0.1:${port}`),
      'credentials-unreachable',
    );
    try {
      const output = await waitForOutput(worker, 'no response from');
      expect(output).toContain(`no response from http://***@127.0.0.1:${port}`);
      expect(output).not.toContain(SECRET);
    } finally {
      await stop(worker);
    }
  });
});
