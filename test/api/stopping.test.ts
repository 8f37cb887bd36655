/**
 * A request that reaches a stopping server gets the error shape of every other error. Such a
 * request is one whose headers were still arriving when the stop began, or one sent on a
 * keep-alive connection during the drain window.
 */
import net from 'node:net';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DRAIN_WINDOW_MS } from '../../src/api/server.js';
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

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Everything that happens on a client socket: the bytes received, errors and the close. */
interface SocketRecord {
  text: () => string;
  errors: string[];
  closed: Promise<void>;
}

function recordSocket(socket: net.Socket): SocketRecord {
  let text = '';
  const errors: string[] = [];
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => (text += chunk));
  socket.on('error', (error: NodeJS.ErrnoException) => errors.push(error.code ?? error.message));
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  return { text: () => text, errors, closed };
}

/** Waits until `record` contains `count` complete responses, each with a Content-Length. */
async function waitForResponses(record: SocketRecord, count: number): Promise<void> {
  for (;;) {
    let rest = record.text();
    let complete = 0;
    for (;;) {
      const end = rest.indexOf('\r\n\r\n');
      if (end < 0) break;
      const length = /\r\ncontent-length: *(\d+)/i.exec(rest.slice(0, end));
      if (length === null || rest.length < end + 4 + Number(length[1])) break;
      rest = rest.slice(end + 4 + Number(length[1]));
      complete++;
    }
    if (complete >= count) return;
    await sleep(5);
  }
}

/** Splits the text of consecutive responses with Content-Length into heads and bodies. */
function splitResponses(text: string): { head: string; body: string }[] {
  const responses: { head: string; body: string }[] = [];
  let rest = text;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    const head = rest.slice(0, end);
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? rest.length);
    responses.push({ head, body: rest.slice(end + 4, end + 4 + length) });
    rest = rest.slice(end + 4 + length);
  }
  return responses;
}

describe('keep-alive connection at a stop', () => {
  /** Time after the stop begins that a client sends its next request on an idle connection. */
  const NEXT_REQUEST_DELAY_MS = 20;
  let server: TestServer;
  let token: string;

  beforeEach(async () => {
    server = await startTestServer();
    token = await server.token('admin', 'drain-admin');
  });
  afterEach(async () => {
    await server.context.store.close();
  });

  const stateRequest = () =>
    `GET /api/state HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer ${token}\r\n\r\n`;

  it('gets 503 on its next request', async () => {
    const socket = await connect(server.url);
    const record = recordSocket(socket);
    socket.write(stateRequest());
    await waitForResponses(record, 1);

    const stopStarted = Date.now();
    const stopped = server.api.stop();
    await sleep(NEXT_REQUEST_DELAY_MS);
    socket.write(stateRequest());
    await record.closed;
    await stopped;
    const stopMs = Date.now() - stopStarted;

    expect(record.errors).toEqual([]);
    const responses = splitResponses(record.text());
    expect(responses.map((response) => response.head.split('\r\n')[0])).toEqual([
      'HTTP/1.1 200 OK',
      'HTTP/1.1 503 Service Unavailable',
    ]);
    const { head, body } = responses[1]!;
    expect(head.toLowerCase()).toContain('\r\nconnection: close');
    expect(head.toLowerCase()).toContain('\r\nx-request-id:');
    const error = JSON.parse(body);
    expect(error.code).toBe('service_unavailable');
    expect(error.field).toBe('server');
    expect(error.rule).toBe('stopping');
    expect(typeof error.request_id).toBe('string');
    // The window ends when the 503 closes the last connection, not when it runs out.
    expect(stopMs).toBeLessThan(DRAIN_WINDOW_MS / 2);
  });

  it('is closed when the window ends', async () => {
    const socket = await connect(server.url);
    const record = recordSocket(socket);
    socket.write(stateRequest());
    await waitForResponses(record, 1);

    const stopStarted = Date.now();
    const stopped = server.api.stop();
    await sleep(NEXT_REQUEST_DELAY_MS);
    // The listener closes when the window begins, so a new client is refused at once.
    const lateConnection = await connect(server.url).then(
      (late) => {
        late.destroy();
        return 'connected';
      },
      (error: NodeJS.ErrnoException) => error.code,
    );
    await record.closed;
    const closedMs = Date.now() - stopStarted;
    await stopped;

    expect(lateConnection).toBe('ECONNREFUSED');
    expect(record.errors).toEqual([]);
    expect(splitResponses(record.text())).toHaveLength(1);
    // Timers may fire a little early, and the margin above covers a slow test machine.
    expect(closedMs).toBeGreaterThanOrEqual(DRAIN_WINDOW_MS - 50);
    expect(closedMs).toBeLessThan(DRAIN_WINDOW_MS + 2_000);
  });

  it('does not delay a stop without connections', async () => {
    const socket = await connect(server.url);
    const record = recordSocket(socket);
    socket.write(stateRequest().replace('\r\n\r\n', '\r\nConnection: close\r\n\r\n'));
    await record.closed;
    expect(splitResponses(record.text())[0]!.head).toMatch(/^HTTP\/1\.1 200 /);

    const stopStarted = Date.now();
    await server.api.stop();
    const stopMs = Date.now() - stopStarted;

    expect(stopMs).toBeLessThan(DRAIN_WINDOW_MS / 4);
  });
});
