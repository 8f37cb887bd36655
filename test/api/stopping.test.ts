/**
 * A request that reaches a stopping server gets the error shape of every other error. Such a
 * request is one whose headers were still arriving when the stop began.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../support/server.js';

/** Opens a connection to `url` and resolves once it is connected. */
function connect(url: string): Promise<net.Socket> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => resolve(socket));
    socket.on('error', reject);
  });
}

/** Resolves with everything the server sends on `socket` until it closes the connection. */
function readUntilClose(socket: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('close', () => resolve(text));
  });
}

describe('request to a stopping server', () => {
  let server: TestServer;
  let token: string;

  beforeAll(async () => {
    server = await startTestServer();
    token = await server.token('admin', 'stopping-admin');
    const registered = await server.request('POST', '/api/agent/workers', {
      token,
      body: { name: 'idle-worker', hostname: 'test', executors: ['local'], capacity: 1 },
    });
    expect(registered.status).toBe(200);
  });
  afterAll(async () => {
    await server.context.store.close();
  });

  it('gets 503 in the error shape', async () => {
    // A claim that waits for a task keeps the server stopping for a while.
    const claimed = fetch(`${server.url}/api/agent/workers/idle-worker/claim`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ max: 1, wait_seconds: 5 }),
    });
    const late = await connect(server.url);
    const received = readUntilClose(late);
    late.write('GET /api/state HTTP/1.1\r\nHost: test\r\n');
    await new Promise((resolve) => setTimeout(resolve, 200));

    const stopped = server.api.stop();
    await new Promise((resolve) => setTimeout(resolve, 50));
    late.write(`Authorization: Bearer ${token}\r\n\r\n`);
    const response = await received;
    await stopped;
    await claimed;

    expect(response).toMatch(/^HTTP\/1\.1 503 /);
    const [head, body] = response.split('\r\n\r\n') as [string, string];
    expect(head.toLowerCase()).toContain('x-request-id:');
    const error = JSON.parse(body);
    expect(error.code).toBe('service_unavailable');
    expect(error.field).toBe('server');
    expect(error.rule).toBe('stopping');
    expect(typeof error.request_id).toBe('string');
  });
});
