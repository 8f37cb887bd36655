import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyRequest } from 'fastify';
import { TOKEN_CACHE_MS, type Principal } from '../../src/api/auth.js';
import { rateLimitKey } from '../../src/api/server.js';
import { countRows } from '../support/rows.js';
import { startTestServer, type TestServer } from '../support/server.js';
import { getFrom as getFromAddress } from '../support/source-address.js';

const LIMIT = 5;

describe('per-token rate limit', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer({ API_RATE_LIMIT: String(LIMIT) });
  });
  afterAll(async () => {
    await server.close();
  });

  it('answers 429 after the limit, in the error shape', async () => {
    const token = await server.token('trigger', 'busy-client');
    for (let index = 0; index < LIMIT; index += 1) {
      const response = await server.request('GET', '/api/state', { token });
      expect(response.status).toBe(200);
      expect(response.headers.get('x-ratelimit-limit')).toBe(String(LIMIT));
      expect(response.headers.get('x-ratelimit-remaining')).toBe(String(LIMIT - index - 1));
    }
    const before = await countRows(server.context.store.db);
    const limited = await server.request('POST', '/api/trigger/ci', {
      token,
      body: { commit: 'abc1234' },
    });
    expect(limited.status).toBe(429);
    expect(limited.body.code).toBe('rate_limited');
    expect(limited.body.field).toBe('Authorization');
    expect(limited.body.rule).toBe('rate');
    expect(limited.body.request_id).toBe(limited.headers.get('x-request-id'));
    expect(limited.body.error).toMatch(/rate limit of 5 requests per minute exceeded/);
    const retryAfter = Number(limited.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(await countRows(server.context.store.db)).toEqual(before);
  });

  it('counts requests that fail validation', async () => {
    const token = await server.token('read', 'sloppy-client');
    for (let index = 0; index < LIMIT; index += 1) {
      // An unknown query parameter and a malformed job id both end 400 before the handler.
      const path = index % 2 === 0 ? '/api/state?unknown=1' : '/api/job/not%20an%20id';
      const response = await server.request('GET', path, { token });
      expect(response.status, `request ${index + 1}`).toBe(400);
    }
    const limited = await server.request('GET', '/api/state?unknown=1', { token });
    expect(limited.status).toBe(429);
    expect(limited.body.code).toBe('rate_limited');
  });

  it('other tokens keep their own budget', async () => {
    const first = await server.token('read', 'first-reader');
    const second = await server.token('read', 'second-reader');
    for (let index = 0; index < LIMIT; index += 1) {
      await server.request('GET', '/api/admin/jobs', { token: first });
    }
    expect((await server.request('GET', '/api/admin/jobs', { token: first })).status).toBe(429);
    for (let index = 0; index < LIMIT; index += 1) {
      const response = await server.request('GET', '/api/admin/jobs', { token: second });
      expect(response.status).toBe(200);
    }
  });

  it('unknown tokens share the address limit', async () => {
    for (let index = 0; index < LIMIT; index += 1) {
      const response = await server.request('GET', '/api/health/status');
      expect([200, 503], `request ${index + 1}`).toContain(response.status);
    }
    expect((await server.request('GET', '/api/health/status')).status).toBe(429);
    // A token the server does not know names no client, so it must not buy a fresh budget.
    for (let index = 0; index < 3; index += 1) {
      const invented = await server.request('GET', '/api/health/status', {
        token: `slw_invented-${index}-000000000000000000`,
      });
      expect(invented.status, `invented token ${index + 1}`).toBe(429);
      expect(invented.body.code).toBe('rate_limited');
    }
  });

  it('agent tokens are not limited', async () => {
    const agent = await server.token('agent', 'worker-1');
    for (let index = 0; index < LIMIT * 3; index += 1) {
      const response = await server.request('GET', '/metrics', { token: agent });
      expect(response.status).toBe(200);
    }
  });
});

const FAILURES = 5;

// The tests run in order: the first one uses up the failures of 127.0.0.1 for this minute.
describe('failed authentication limit', () => {
  let server: TestServer;
  /** A token used before the address is blocked. */
  let knownToken: string;

  const getFrom = (from: string, path: string, token?: string) =>
    getFromAddress(server.url, from, path, token);

  beforeAll(async () => {
    server = await startTestServer({ API_AUTH_FAILURE_LIMIT: String(FAILURES) });
    knownToken = await server.token('read', 'known-before');
  });
  afterAll(async () => {
    await server.close();
  });

  it('failures past the limit get 429', async () => {
    expect((await getFrom('127.0.0.1', '/api/state', knownToken)).status).toBe(200);

    for (let index = 0; index < FAILURES; index += 1) {
      const token = index % 2 === 0 ? undefined : `slw_guess-${index}-0000000000000000`;
      const response = await getFrom('127.0.0.1', '/api/state', token);
      expect(response.status, `failure ${index + 1}`).toBe(401);
    }
    const limited = await getFrom('127.0.0.1', '/api/state');
    expect(limited.status).toBe(429);
    expect(limited.body.code).toBe('rate_limited');
    expect(limited.body.field).toBe('Authorization');
    expect(limited.body.rule).toBe('rate');
    expect(limited.body.error).toMatch(/more than 5 failed authentications from 127\.0\.0\.1/);
    expect(limited.body.error).toContain('API_AUTH_FAILURE_LIMIT');
    const retryAfter = Number(limited.retryAfter);
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(60);

    const guess = await getFrom('127.0.0.1', '/api/state', 'slw_another-guess-000000000000');
    expect(guess.status).toBe(429);
  });

  it('a blocked address gets 429 for a right guess too', async () => {
    // Created after the block, so the server has never checked it: a guess that happens to
    // be right must not stand out from the wrong ones.
    const fresh = await server.token('read', 'created-after-block');
    const response = await getFrom('127.0.0.1', '/api/state', fresh);
    expect(response.status).toBe(429);
    expect(response.body.code).toBe('rate_limited');
  });

  it('a token valid before the block keeps working', async () => {
    expect((await getFrom('127.0.0.1', '/api/state', knownToken)).status).toBe(200);
    // Once its cache entry has expired, the token needs a lookup, which it still gets.
    await new Promise((resolve) => setTimeout(resolve, TOKEN_CACHE_MS + 200));
    expect((await getFrom('127.0.0.1', '/api/state', knownToken)).status).toBe(200);
  });

  it('health status stays usable while blocked', async () => {
    const plain = await getFrom('127.0.0.1', '/api/health/status');
    expect([200, 503]).toContain(plain.status);
    const withGuess = await getFrom('127.0.0.1', '/api/health/status', 'slw_guess-000000000000000');
    expect([200, 503]).toContain(withGuess.status);
  });

  it('guesses sent at once stop at the limit', async () => {
    // Sent at once, as a client that tries many tokens would send them.
    const guesses = Array.from({ length: 4 * FAILURES }, (_, index) =>
      getFrom('127.0.0.3', '/api/state', `slw_burst-guess-${index}-000000000000`),
    );
    const statuses = (await Promise.all(guesses)).map((response) => response.status);
    expect(statuses.filter((status) => status === 401)).toHaveLength(FAILURES);
    expect(statuses.filter((status) => status === 429)).toHaveLength(3 * FAILURES);
  });

  it('another address keeps its own count', async () => {
    const response = await getFrom('127.0.0.2', '/api/state');
    expect(response.status).toBe(401);
    expect(response.body.code).toBe('unauthorized');
  });
});

describe('rate limit key', () => {
  const requestFrom = (ip: string, authorization?: string, principal?: Principal) =>
    ({ ip, headers: { authorization }, principal }) as unknown as FastifyRequest;

  it('counts the addresses of one IPv6 /64 together', () => {
    expect(rateLimitKey(requestFrom('2001:db8:1:2::a'))).toBe(
      rateLimitKey(requestFrom('2001:db8:1:2:ffff::1')),
    );
    expect(rateLimitKey(requestFrom('2001:db8:1:2::a'))).not.toBe(
      rateLimitKey(requestFrom('2001:db8:1:3::a')),
    );
    expect(rateLimitKey(requestFrom('::ffff:192.0.2.1'))).toBe('ip:192.0.2.1');
  });

  it('keys a known token by itself and an unknown one by address', () => {
    const principal: Principal = { tokenId: 1, name: 'reader', role: 'read' };
    const known = rateLimitKey(requestFrom('192.0.2.1', 'Bearer slw_known', principal));
    expect(known).toMatch(/^token:/);
    expect(rateLimitKey(requestFrom('192.0.2.9', 'Bearer slw_known', principal))).toBe(known);
    expect(rateLimitKey(requestFrom('192.0.2.1', 'Bearer slw_invented'))).toBe('ip:192.0.2.1');
  });
});
