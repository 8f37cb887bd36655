import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../support/server.js';

/** Sends `head`, then resolves with the server's response and the seconds until it came. */
function stall(url: string, head: string): Promise<{ answer: string; seconds: number }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = net.connect(Number(port), hostname, () => socket.write(head));
    let answer = '';
    socket.on('data', (chunk: Buffer) => {
      answer += chunk.toString();
    });
    socket.on('close', () => resolve({ answer, seconds: (Date.now() - started) / 1000 }));
    socket.on('error', reject);
    socket.setTimeout(30_000, () => socket.destroy());
  });
}

describe('API_TIMEOUT', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer({ API_TIMEOUT: '2' });
  });
  afterAll(async () => {
    await server.close();
  });

  it('ends a stalled body with 408', { timeout: 40_000 }, async () => {
    const { answer, seconds } = await stall(
      server.url,
      'POST /api/trigger/ci HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
        `Authorization: Bearer ${server.adminToken}\r\n` +
        'Content-Type: application/json\r\nContent-Length: 20\r\n\r\n{"com',
    );
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(answer).toContain('"code":"request_timeout"');
    // Two seconds, and at most one check interval (half a second here) more.
    expect(seconds).toBeGreaterThanOrEqual(1.9);
    expect(seconds).toBeLessThan(5);
  });

  it('ends stalled headers with 408', { timeout: 40_000 }, async () => {
    const { answer, seconds } = await stall(server.url, 'GET /api/state HTTP/1.1\r\nHost: x\r\n');
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(seconds).toBeLessThan(5);
  });
});
