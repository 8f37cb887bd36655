import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countRows } from '../support/rows.js';
import { startTestServer, type TestServer } from '../support/server.js';

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

  it('agent tokens are not limited', async () => {
    const agent = await server.token('agent', 'worker-1');
    for (let index = 0; index < LIMIT * 3; index += 1) {
      const response = await server.request('GET', '/metrics', { token: agent });
      expect(response.status).toBe(200);
    }
  });
});
