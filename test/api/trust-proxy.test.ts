/** X-Forwarded-For from the reverse proxies that API_TRUST_PROXY names, and from no one else. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../support/server.js';

let sequence = 0;

/** Triggers a job with the given X-Forwarded-For and returns the audit row's source. */
async function triggerSource(server: TestServer, token: string, forwardedFor: string) {
  const requestId = `trust-proxy-${++sequence}`;
  const response = await server.request('POST', '/api/trigger/ci', {
    token,
    body: { commit: 'abc1234', branch: 'proxy/test' },
    headers: { 'x-request-id': requestId, 'x-forwarded-for': forwardedFor },
  });
  expect(response.status).toBe(201);
  const row = server.context.store.sqlite
    .prepare('SELECT source FROM audit_log WHERE request_id = ?')
    .get(requestId) as { source: string };
  return row.source;
}

/** Sends a request with an unknown token and the given X-Forwarded-For, and returns its status. */
async function guessFrom(server: TestServer, forwardedFor: string) {
  const response = await server.request('GET', '/api/state', {
    token: 'slw_proxied-guess-000000000000000000',
    headers: { 'x-forwarded-for': forwardedFor },
  });
  return response.status;
}

describe('API_TRUST_PROXY set to the proxy', () => {
  let server: TestServer;
  let token: string;

  beforeAll(async () => {
    server = await startTestServer({ API_TRUST_PROXY: '127.0.0.1', API_AUTH_FAILURE_LIMIT: '2' });
    token = await server.token('trigger', 'behind-proxy');
  });
  afterAll(async () => {
    await server.close();
  });

  it('records the forwarded client as the source', async () => {
    expect(await triggerSource(server, token, '198.51.100.7')).toBe('198.51.100.7');
  });

  it('takes the last address the proxy added', async () => {
    // A client may send its own X-Forwarded-For, and the proxy appends the address it saw.
    expect(await triggerSource(server, token, '203.0.113.9, 198.51.100.8')).toBe('198.51.100.8');
  });

  it('counts failures per forwarded client', async () => {
    expect(await guessFrom(server, '192.0.2.10')).toBe(401);
    expect(await guessFrom(server, '192.0.2.10')).toBe(401);
    expect(await guessFrom(server, '192.0.2.10')).toBe(429);
    expect(await guessFrom(server, '192.0.2.11')).toBe(401);
  });

  it('uses the proxy when the forwarded value is no address', async () => {
    expect(await triggerSource(server, token, 'unknown')).toBe('127.0.0.1');
    // Invented values share the proxy's count instead of each getting a new one.
    expect(await guessFrom(server, 'invented-1')).toBe(401);
    expect(await guessFrom(server, 'invented-2')).toBe(401);
    expect(await guessFrom(server, 'invented-3')).toBe(429);
  });
});

describe('API_TRUST_PROXY unset', () => {
  let server: TestServer;
  let token: string;

  beforeAll(async () => {
    server = await startTestServer({ API_AUTH_FAILURE_LIMIT: '2' });
    token = await server.token('trigger', 'direct');
  });
  afterAll(async () => {
    await server.close();
  });

  it('ignores X-Forwarded-For', async () => {
    expect(await triggerSource(server, token, '198.51.100.7')).toBe('127.0.0.1');
  });

  it('counts failures per connecting address', async () => {
    expect(await guessFrom(server, '192.0.2.20')).toBe(401);
    expect(await guessFrom(server, '192.0.2.21')).toBe(401);
    expect(await guessFrom(server, '192.0.2.22')).toBe(429);
  });
});
