/**
 * Requests that fail before routing (a path that is not valid percent-encoding, a parameter
 * over the length limit, headers over Node's limit, an unknown method) still get the
 * catalogue's error shape with a request id.
 */
import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countRows } from '../support/rows.js';
import { startTestServer, type TestServer } from '../support/server.js';

describe('errors raised before routing', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server.close();
  });

  it('a path that is not valid percent-encoding', async () => {
    const response = await server.request('GET', '/api/job/ci-%ZZ', { token: server.adminToken });
    expect(response.status).toBe(400);
    expect(response.body).toMatchObject({
      code: 'validation_failed',
      field: 'path',
      rule: 'encoding',
    });
    expect(response.body.request_id).toBe(response.headers.get('x-request-id'));
  });

  it('a path parameter over the length limit', async () => {
    const response = await server.request('GET', `/api/job/ci-${'a'.repeat(3_000)}`, {
      token: server.adminToken,
    });
    expect(response.status).toBe(400);
    expect(response.body).toMatchObject({
      code: 'validation_failed',
      field: 'path',
      rule: 'maxLength',
    });
  });

  it('headers over the size limit', async () => {
    const { status, body } = await new Promise<{ status: number; body: string }>(
      (resolve, reject) => {
        const request = http.request(
          `${server.url}/api/health/status`,
          { headers: { 'x-padding': 'a'.repeat(20_000) } },
          (response) => {
            let text = '';
            response.on('data', (chunk: Buffer) => (text += chunk.toString()));
            response.on('end', () => resolve({ status: response.statusCode!, body: text }));
          },
        );
        request.on('error', reject);
        request.end();
      },
    );
    expect(status).toBe(431);
    const parsed = JSON.parse(body) as Record<string, unknown>;
    expect(parsed).toEqual({
      error: 'the request headers are larger than the server accepts (16 KiB)',
      code: 'headers_too_large',
      field: 'headers',
      rule: 'maxBytes',
      request_id: expect.stringMatching(/^[0-9a-f-]{36}$/),
    });
  });

  /** Sends bytes on a new connection and returns everything the server sends back. */
  const sendRaw = (bytes: string | Buffer) => {
    const { port } = new URL(server.url);
    return new Promise<string>((resolve, reject) => {
      const socket = net.connect(Number(port), '127.0.0.1', () => {
        socket.write(bytes);
      });
      let text = '';
      socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
      socket.on('end', () => resolve(text));
      socket.on('error', reject);
    });
  };

  it('an unknown request method', async () => {
    const answer = await sendRaw('BREW /api/health/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    const [head, body] = answer.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 501 Not Implemented\r\n/);
    const parsed = JSON.parse(body!) as Record<string, unknown>;
    expect(parsed).toMatchObject({
      code: 'method_not_implemented',
      field: 'method',
      rule: 'known',
    });
    expect(parsed.request_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(head).toContain(`X-Request-Id: ${parsed.request_id as string}`);
  });

  it('an unknown Expect header', async () => {
    const before = await countRows(server.context.store.db);
    const body = JSON.stringify({ commit: 'abc1234', branch: 'expect' });
    const answer = await sendRaw(
      'POST /api/trigger/ci HTTP/1.1\r\n' +
        'Host: 127.0.0.1\r\n' +
        `Authorization: Bearer ${server.adminToken}\r\n` +
        'Content-Type: application/json\r\n' +
        'Expect: 200-ok\r\n' +
        `Content-Length: ${Buffer.byteLength(body)}\r\n` +
        'Connection: close\r\n\r\n' +
        body,
    );
    const [head, errorText] = answer.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 417 Expectation Failed\r\n/);
    const parsed = JSON.parse(errorText!) as Record<string, unknown>;
    expect(parsed).toEqual({
      error:
        'the server does not support Expect "200-ok"; send no Expect header, or Expect: 100-continue',
      code: 'expectation_failed',
      field: 'Expect',
      rule: '100-continue',
      request_id: expect.stringMatching(/^[0-9a-f-]{36}$/),
    });
    expect(head).toMatch(new RegExp(`\r\nX-Request-Id: ${parsed.request_id as string}\r\n`, 'i'));
    expect(await countRows(server.context.store.db)).toEqual(before);
  });

  it('an HTTP/1.1 request without Host', async () => {
    const answer = await sendRaw('GET /api/health/status HTTP/1.1\r\nConnection: close\r\n\r\n');
    const [head, body] = answer.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(head).toMatch(/\r\ncontent-type: application\/json/i);
    const parsed = JSON.parse(body!) as Record<string, unknown>;
    expect(parsed).toEqual({
      error: 'the request has no Host header, which HTTP/1.1 requires; send Host: <host>:<port>',
      code: 'validation_failed',
      field: 'Host',
      rule: 'required',
      request_id: expect.any(String),
    });
    expect(head).toMatch(new RegExp(`\r\nx-request-id: ${parsed.request_id as string}\r\n`, 'i'));
  });

  it('an HTTP/1.1 request with two Host headers', async () => {
    // No Connection: close here, so the server must close the connection itself.
    const answer = await sendRaw(
      'GET /api/health/status HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: example.com\r\n\r\n',
    );
    const [head, body] = answer.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(head).toMatch(/\r\nconnection: close\r\n/i);
    const parsed = JSON.parse(body!) as Record<string, unknown>;
    expect(parsed.code).toBe('validation_failed');
    expect(parsed.field).toBe('Host');
    expect(parsed.rule).toBe('single');
  });

  it('a trigger without Host changes nothing', async () => {
    const before = await countRows(server.context.store.db);
    const body = JSON.stringify({ commit: 'abc1234', branch: 'no-host' });
    const answer = await sendRaw(
      'POST /api/trigger/ci HTTP/1.1\r\n' +
        `Authorization: Bearer ${server.adminToken}\r\n` +
        'Content-Type: application/json\r\n' +
        `Content-Length: ${Buffer.byteLength(body)}\r\n` +
        'Connection: close\r\n\r\n' +
        body,
    );
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer).toContain('"field":"Host"');
    expect(await countRows(server.context.store.db)).toEqual(before);
  });

  it('bad bytes after a complete trigger', async () => {
    // The trigger before the bad bytes is handled and committed, so its response must arrive
    // before the 400 for the bytes, not be replaced by it. A client whose Content-Length is
    // shorter than its body sends such bytes.
    const before = await countRows(server.context.store.db);
    const body = JSON.stringify({ commit: 'abc1234', branch: 'trailing-bytes' });
    const answer = await sendRaw(
      'POST /api/trigger/ci HTTP/1.1\r\n' +
        'Host: 127.0.0.1\r\n' +
        `Authorization: Bearer ${server.adminToken}\r\n` +
        'Content-Type: application/json\r\n' +
        `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n` +
        body +
        '{"extra":1}\r\n\r\n',
    );
    expect(answer).toMatch(/^HTTP\/1\.1 201 Created\r\n/);
    const created = /"job_id":"([^"]+)"/.exec(answer);
    expect(created).not.toBeNull();
    // Then the error for the bytes, in the catalogue's shape.
    const second = answer.indexOf('HTTP/1.1 ', 1);
    expect(second).toBeGreaterThan(0);
    const [head, errorText] = answer.slice(second).split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 (400|501) /);
    expect(head).toMatch(/\r\nConnection: close(\r\n|$)/);
    const parsed = JSON.parse(errorText!) as Record<string, unknown>;
    expect(parsed.request_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(typeof parsed.code).toBe('string');
    const after = await countRows(server.context.store.db);
    expect(after.jobs).toBe(before.jobs + 1);
  });

  it('bad bytes after two pending requests', async () => {
    // Both long-poll claims are whole and still pending when the bad bytes arrive. The error
    // waits for each of their responses, and then closes the connection.
    const token = await server.token('agent', 'pipelined-claims');
    const registered = await server.request('POST', '/api/agent/workers', {
      token,
      body: { name: 'pipelined-worker', hostname: 'test', executors: ['local'], capacity: 1 },
    });
    expect(registered.status, registered.text).toBe(200);
    const claim = (waitSeconds: number) => {
      const body = JSON.stringify({ max: 1, wait_seconds: waitSeconds });
      return (
        'POST /api/agent/workers/pipelined-worker/claim HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
        `Authorization: Bearer ${token}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
      );
    };
    const answer = await Promise.race([
      sendRaw(claim(1) + claim(2) + '{"extra":1}\r\n\r\n'),
      new Promise<string>((resolve) => setTimeout(() => resolve('still open after 6 s'), 6_000)),
    ]);
    expect(answer).not.toBe('still open after 6 s');
    const statuses = answer.match(/HTTP\/1\.1 \d+/g);
    expect(statuses?.slice(0, 2)).toEqual(['HTTP/1.1 200', 'HTTP/1.1 200']);
    expect(statuses?.[2]).toMatch(/^HTTP\/1\.1 (400|501)$/);
    const errorHead = answer.slice(answer.lastIndexOf('HTTP/1.1 '));
    expect(errorHead).toMatch(/\r\nConnection: close\r\n/);
  }, 15_000);

  it('an HTTP/1.0 request without Host', async () => {
    // HTTP/1.0 has no Host header requirement, so such a request is served.
    const answer = await sendRaw('GET /api/openapi.json HTTP/1.0\r\n\r\n');
    expect(answer).toMatch(/^HTTP\/1\.[01] 200 /);
  });

  it.each([
    ['a control character in a header', 'X-Note: a\x01b\r\n', 'headers'],
    ['a space in a header name', 'X Note: b\r\n', 'headers'],
    ['a Content-Length that is no number', 'Content-Length: abc\r\n', 'Content-Length'],
    ['two Content-Length headers', 'Content-Length: 1\r\nContent-Length: 2\r\n', 'Content-Length'],
    [
      'both Content-Length and Transfer-Encoding',
      'Content-Length: 2\r\nTransfer-Encoding: chunked\r\n',
      'Transfer-Encoding',
    ],
  ])('a request with %s', async (_name, header, field) => {
    const answer = await sendRaw(
      `POST /api/trigger/ci HTTP/1.1\r\nHost: 127.0.0.1\r\n${header}\r\n{}`,
    );
    const [head, body] = answer.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    const parsed = JSON.parse(body!) as Record<string, unknown>;
    expect(parsed.code).toBe('validation_failed');
    expect(parsed.field).toBe(field);
    expect(parsed.rule).toBe('http');
    expect(parsed.error).toMatch(/^the request is not valid HTTP: \S/);
  });

  it('bytes that are not HTTP', async () => {
    // Node's parser reports both as an invalid method.
    const clientHello = Buffer.from('16030100a5010000a10303', 'hex');
    for (const bytes of ['hello world\r\n\r\n', clientHello]) {
      const answer = await sendRaw(bytes);
      const [head, body] = answer.split('\r\n\r\n');
      expect(head, String(bytes)).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
      const parsed = JSON.parse(body!) as Record<string, unknown>;
      expect(parsed.code, String(bytes)).toBe('validation_failed');
      expect(parsed.rule, String(bytes)).toBe('http');
    }
  });
});
