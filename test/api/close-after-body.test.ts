/**
 * A connection whose error response was sent before the request body arrived stays open to
 * drop the rest of the body. Nothing the client sends after that body may be served.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countRows } from '../support/rows.js';
import { startTestServer, type TestServer } from '../support/server.js';

const BODY_LIMIT = 1024;

/** Connects a client that keeps sending after the server has closed its side. */
function connectHalfOpen(url: string): { socket: net.Socket; received: () => string } {
  const { hostname, port } = new URL(url);
  const socket = net.connect({ port: Number(port), host: hostname, allowHalfOpen: true });
  let text = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => (text += chunk));
  // The server may close while the client still writes.
  socket.on('error', () => undefined);
  return { socket, received: () => text };
}

function headOfTrigger(token: string, length: number): string {
  return (
    'POST /api/trigger/ci HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
    `Authorization: Bearer ${token}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${length}\r\n\r\n`
  );
}

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('connection closed after a body', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer({ API_BODY_LIMIT: String(BODY_LIMIT) });
  });
  afterAll(async () => {
    await server.close();
  });

  it('drops a request sent after a 413 body', async () => {
    const before = await countRows(server.context.store.db);
    const { socket, received } = connectHalfOpen(server.url);
    const body = 'x'.repeat(BODY_LIMIT * 2);
    socket.write(headOfTrigger(server.adminToken, body.length));
    await waitFor(() => received().includes('\r\n\r\n{'), 'the 413');
    expect(received()).toMatch(/^HTTP\/1\.1 413 /);

    // The rest of the body, then a whole trigger on the same connection.
    const trigger = JSON.stringify({ commit: 'abc1234', branch: 'after-413' });
    socket.write(body + headOfTrigger(server.adminToken, trigger.length) + trigger);
    await new Promise((resolve) => setTimeout(resolve, 500));

    expect(received().match(/HTTP\/1\.1 /g)).toHaveLength(1);
    const after = await countRows(server.context.store.db);
    expect(after.jobs).toBe(before.jobs);
    socket.destroy();
  });

  it('serves a keep-alive request after a 401 body', async () => {
    // A 401 leaves the connection open, so the next request on it is served.
    const { socket, received } = connectHalfOpen(server.url);
    const body = JSON.stringify({ commit: 'abc1234' });
    socket.write(headOfTrigger('slw_unknown-token', body.length));
    await waitFor(() => received().includes('\r\n\r\n{'), 'the 401');
    expect(received()).toMatch(/^HTTP\/1\.1 401 /);
    socket.write(body + 'GET /api/health/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    await waitFor(() => (received().match(/HTTP\/1\.1 /g) ?? []).length === 2, 'the 200');
    expect(received()).toMatch(/\r\n\r\n\{[^]*HTTP\/1\.1 200 OK\r\n/);
    socket.destroy();
  });
});

describe('stop with a connection dropping a body', () => {
  it('stops at once', async () => {
    const server = await startTestServer({ API_BODY_LIMIT: String(BODY_LIMIT), API_TIMEOUT: '60' });
    try {
      // A client that sent headers only: the 413 is sent and the body never comes.
      const { socket, received } = connectHalfOpen(server.url);
      socket.write(headOfTrigger(server.adminToken, BODY_LIMIT * 2));
      await waitFor(() => received().includes('\r\n\r\n{'), 'the 413');
      expect(received()).toMatch(/^HTTP\/1\.1 413 /);

      const started = Date.now();
      await server.api.stop();
      // The drain window of a stop is 1 s, and API_TIMEOUT is 60 s.
      expect(Date.now() - started).toBeLessThan(5_000);
      socket.destroy();
    } finally {
      await server.context.store.close();
    }
  }, 90_000);
});
