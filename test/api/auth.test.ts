import { createHash } from 'node:crypto';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOKEN_CACHE_MS, TokenVerifier } from '../../src/api/auth.js';
import type { TokenRole } from '../../src/store/schema.js';
import { revokeToken, storeTokenUse } from '../../src/store/tokens.js';
import { countRows } from '../support/rows.js';
import { startTestServer, type TestServer } from '../support/server.js';

interface Route {
  method: string;
  /** `{job}` stands for an existing job id. */
  path: string;
  body?: unknown;
  /** Roles besides admin that may call the route. */
  roles: TokenRole[];
}

const ROUTES: Route[] = [
  { method: 'POST', path: '/api/trigger/ci', body: { commit: 'abc1234' }, roles: ['trigger'] },
  {
    method: 'POST',
    path: '/api/trigger/integration-tests',
    body: { commit: 'abc1234' },
    roles: ['trigger'],
  },
  { method: 'POST', path: '/api/trigger/deploy', body: { commit: 'abc1234' }, roles: ['trigger'] },
  { method: 'POST', path: '/api/trigger/recovery', body: { commit: 'abc1234' }, roles: [] },
  { method: 'POST', path: '/api/trigger/rollback', body: { commit: 'abc1234' }, roles: [] },
  { method: 'GET', path: '/api/job/{job}', roles: ['read', 'trigger'] },
  { method: 'GET', path: '/api/job/{job}/logs', roles: ['read', 'trigger'] },
  { method: 'POST', path: '/api/job/{job}/cancel', roles: ['trigger'] },
  { method: 'POST', path: '/api/job/{job}/retry', roles: ['trigger'] },
  { method: 'PATCH', path: '/api/job/{job}/status', body: { status: 'error' }, roles: ['agent'] },
  { method: 'GET', path: '/api/state', roles: ['read', 'trigger'] },
  { method: 'GET', path: '/api/admin/jobs', roles: ['read', 'trigger'] },
  { method: 'GET', path: '/api/admin/audit-log', roles: [] },
  { method: 'GET', path: '/metrics', roles: ['read', 'trigger', 'agent'] },
];

const ROLES: TokenRole[] = ['read', 'trigger', 'agent', 'admin'];

describe('authentication and roles', () => {
  let server: TestServer;
  const tokens = {} as Record<TokenRole, string>;
  let revoked: string;

  let jobs = 0;
  // A branch per job, because ci cancels the older jobs of a branch.
  const newJob = async () => {
    const response = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit: 'abc1234', branch: `auth-${++jobs}` },
    });
    return response.body.job_id as string;
  };

  beforeAll(async () => {
    // The 401 table fails authentication about 60 times from one address within a minute, and
    // the default API_AUTH_FAILURE_LIMIT (60) would reject the later failures with 429.
    server = await startTestServer({ API_AUTH_FAILURE_LIMIT: '1000' });
    for (const role of ROLES) tokens[role] = await server.token(role, `${role}-client`);
    revoked = await server.token('admin', 'former-admin');
    await server.context.store.write((trx) => revokeToken(trx, { name: 'former-admin' }));
  });
  afterAll(async () => {
    await server.close();
  });

  const cases = ROUTES.flatMap((route) =>
    [
      { route, label: 'no token', authorization: undefined, rule: 'required' },
      {
        route,
        label: 'unknown token',
        authorization: 'Bearer slw_not-a-real-token',
        rule: 'valid',
      },
      { route, label: 'revoked token', authorization: 'revoked', rule: 'valid' },
      { route, label: 'Basic scheme', authorization: 'Basic YWRtaW46YWRtaW4=', rule: 'required' },
    ].map((item) => ({ ...item, name: `${route.method} ${route.path}: ${item.label}` })),
  );

  it.each(cases)('401 for $name', async ({ route, authorization, rule }) => {
    const job = await newJob();
    const before = await countRows(server.context.store.db);
    const headers: Record<string, string> = {};
    if (authorization !== undefined) {
      headers.authorization = authorization === 'revoked' ? `Bearer ${revoked}` : authorization;
    }
    const response = await server.request(route.method, route.path.replace('{job}', job), {
      body: route.body,
      headers,
    });
    expect(response.status).toBe(401);
    expect(response.body.code).toBe('unauthorized');
    expect(response.body.field).toBe('Authorization');
    expect(response.body.rule).toBe(rule);
    expect(await countRows(server.context.store.db)).toEqual(before);
  });

  const roleCases = ROUTES.flatMap((route) =>
    ROLES.map((role) => ({
      route,
      role,
      allowed: role === 'admin' || route.roles.includes(role),
      name: `${route.method} ${route.path} as ${role}`,
    })),
  );

  it.each(roleCases)('roles: $name', async ({ route, role, allowed }) => {
    const job = await newJob();
    if (route.path.endsWith('/retry')) {
      await server.request('POST', `/api/job/${job}/cancel`, { token: server.adminToken });
    }
    const before = await countRows(server.context.store.db);
    const response = await server.request(route.method, route.path.replace('{job}', job), {
      token: tokens[role],
      body: route.body,
    });
    if (allowed) {
      expect(response.status, response.text).toBeLessThan(300);
      return;
    }
    expect(response.status).toBe(403);
    expect(response.body.code).toBe('forbidden');
    expect(response.body.field).toBe('Authorization');
    expect(response.body.rule).toBe('role');
    expect(response.body.error).toContain(`role ${role}`);
    expect(await countRows(server.context.store.db)).toEqual(before);
  });

  it('forbidden message names each role once', async () => {
    const adminOnly = await server.request('GET', '/api/admin/audit-log', { token: tokens.read });
    expect(adminOnly.status).toBe(403);
    expect(adminOnly.body.error).toMatch(/has role read; this endpoint needs role admin$/);
    const job = await newJob();
    const cancel = await server.request('POST', `/api/job/${job}/cancel`, { token: tokens.read });
    expect(cancel.status).toBe(403);
    expect(cancel.body.error).toMatch(/has role read; this endpoint needs role trigger or admin$/);
  });

  it('health, OpenAPI and docs need no token', async () => {
    for (const path of ['/api/health/status', '/api/openapi.json', '/api/docs/']) {
      const response = await server.request('GET', path);
      expect(response.status, path).toBe(200);
    }
  });

  it('an unknown route answers 404 in the error shape', async () => {
    const response = await server.request('GET', '/api/nothing-here', { token: tokens.read });
    expect(response.status).toBe(404);
    expect(response.body.code).toBe('route_not_found');
    expect(response.body.field).toBe('path');
    expect(response.body.rule).toBe('exists');
  });

  it('wrong method returns 405', async () => {
    const cases = [
      { method: 'GET', path: '/api/trigger/ci', allow: 'POST' },
      { method: 'DELETE', path: '/api/job/ci-0123abcd', allow: 'GET, HEAD' },
      { method: 'POST', path: '/api/job/ci-0123abcd/status', allow: 'PATCH' },
      { method: 'PUT', path: '/api/health/status', allow: 'GET, HEAD' },
    ];
    const countJobs = async () =>
      (await server.context.store.db.selectFrom('jobs').select('id').execute()).length;
    const jobsBefore = await countJobs();
    for (const { method, path, allow } of cases) {
      const response = await server.request(method, path, { token: tokens.admin });
      expect(response.status, `${method} ${path}`).toBe(405);
      expect(response.headers.get('allow'), `${method} ${path}`).toBe(allow);
      expect(response.body.code).toBe('method_not_allowed');
      expect(response.body.field).toBe('method');
      expect(response.body.allowed).toEqual(allow.split(', '));
      expect(response.body.error).toContain(`${method} is not allowed on ${path}`);
    }
    expect(await countJobs()).toBe(jobsBefore);

    const options = await server.request('OPTIONS', '/api/trigger/ci');
    expect(options.status).toBe(204);
    expect(options.headers.get('allow')).toBe('POST, OPTIONS');

    // A parameter too long for the API's router still shows which methods the path has,
    // and the message repeats only the start of the path.
    const long = `/api/job/ci-${'a'.repeat(5_000)}`;
    const response = await server.request('DELETE', long, { token: tokens.admin });
    expect(response.status).toBe(405);
    expect(response.headers.get('allow')).toBe('GET, HEAD');
    expect(response.body.error.length).toBeLessThan(400);
  });

  it('tokens are stored as SHA-256 hashes only', async () => {
    const rows = await server.context.store.db.selectFrom('api_tokens').selectAll().execute();
    expect(rows.length).toBeGreaterThanOrEqual(ROLES.length + 1);
    const clear = [...Object.values(tokens), revoked, server.adminToken];
    for (const row of rows) {
      for (const value of Object.values(row)) {
        for (const token of clear) expect(String(value)).not.toContain(token);
      }
      expect(row.token_hash).toMatch(/^[0-9a-f]{64}$/);
      expect(row.prefix.length).toBeLessThanOrEqual(8);
    }
    const readRow = rows.find((row) => row.name === 'read-client')!;
    expect(readRow.token_hash).toBe(createHash('sha256').update(tokens.read).digest('hex'));
    expect(readRow.role).toBe('read');
  });

  it('a token revoked while in use stops working within the cache time', async () => {
    const token = await server.token('read', 'soon-revoked');
    expect((await server.request('GET', '/api/state', { token })).status).toBe(200);
    await server.context.store.write((trx) => revokeToken(trx, { name: 'soon-revoked' }));
    const deadline = Date.now() + TOKEN_CACHE_MS + 2_000;
    let status = 200;
    while (Date.now() < deadline) {
      status = (await server.request('GET', '/api/state', { token })).status;
      if (status === 401) break;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(status).toBe(401);
  });

  /**
   * Sends a request with one header line per Authorization value. fetch would join the values
   * into one line, so this uses node:http with a flat list of header names and values.
   */
  function sendWithAuthorizations(
    method: string,
    path: string,
    authorizations: string[],
    body?: unknown,
    /** More header lines, as a flat list of names and values. */
    extra: string[] = [],
  ): Promise<{ status: number; body: Record<string, unknown> }> {
    const url = new URL(path, server.url);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const request = http.request(
        {
          host: url.hostname,
          port: url.port,
          path: url.pathname,
          method,
          // A flat list of names and values, which node:http sends as given, without adding Host.
          headers: [
            'host',
            url.host,
            ...authorizations.flatMap((value) => ['authorization', value]),
            ...(payload === undefined ? [] : ['content-type', 'application/json']),
            ...extra,
          ],
        },
        (response) => {
          let text = '';
          response.setEncoding('utf8');
          response.on('data', (chunk: string) => (text += chunk));
          response.on('end', () =>
            resolve({ status: response.statusCode!, body: JSON.parse(text) }),
          );
        },
      );
      request.on('error', reject);
      request.end(payload);
    });
  }

  it.each([
    { label: 'admin first', first: 'admin', second: 'unknown' },
    { label: 'admin second', first: 'unknown', second: 'admin' },
    { label: 'two valid tokens', first: 'trigger', second: 'admin' },
  ] as const)('two Authorization headers, $label: 400', async ({ first, second }) => {
    const value = (tokenName: 'admin' | 'trigger' | 'unknown') =>
      tokenName === 'unknown' ? 'Bearer slw_not-a-real-token' : `Bearer ${tokens[tokenName]}`;
    const before = await countRows(server.context.store.db);
    const response = await sendWithAuthorizations(
      'POST',
      '/api/trigger/ci',
      [value(first), value(second)],
      { commit: 'abc1234', branch: 'two-headers' },
    );
    expect(response.status).toBe(400);
    expect(response.body.code).toBe('validation_failed');
    expect(response.body.field).toBe('Authorization');
    expect(response.body.rule).toBe('single');
    expect(response.body.error).toContain('more than one Authorization header');
    expect(await countRows(server.context.store.db)).toEqual(before);
  });

  it('one Authorization header through node:http is accepted', async () => {
    const response = await sendWithAuthorizations('GET', '/api/state', [`Bearer ${tokens.read}`]);
    expect(response.status).toBe(200);
  });

  it('two Authorization headers on a public route: 400', async () => {
    const response = await sendWithAuthorizations('GET', '/api/health/status', [
      `Bearer ${tokens.read}`,
      `Bearer ${tokens.read}`,
    ]);
    expect(response.status).toBe(400);
    expect(response.body.rule).toBe('single');
  });

  it('two Idempotency-Key headers: 400', async () => {
    const before = await countRows(server.context.store.db);
    const response = await sendWithAuthorizations(
      'POST',
      '/api/trigger/ci',
      [`Bearer ${tokens.trigger}`],
      { commit: 'abc1234', branch: 'two-keys' },
      ['idempotency-key', 'key-a', 'idempotency-key', 'key-b'],
    );
    expect(response.status).toBe(400);
    expect(response.body.field).toBe('idempotency-key');
    expect(response.body.rule).toBe('single');
    expect(response.body.error).toContain('more than one Idempotency-Key header');
    expect(await countRows(server.context.store.db)).toEqual(before);
  });

  it('two Content-Type headers: 400', async () => {
    const before = await countRows(server.context.store.db);
    const response = await sendWithAuthorizations(
      'POST',
      '/api/trigger/ci',
      [`Bearer ${tokens.trigger}`],
      { commit: 'abc1234', branch: 'two-types' },
      ['content-type', 'text/plain'],
    );
    expect(response.status).toBe(400);
    expect(response.body.field).toBe('Content-Type');
    expect(response.body.rule).toBe('single');
    expect(response.body.error).toContain('more than one Content-Type header');
    expect(await countRows(server.context.store.db)).toEqual(before);
  });

  it('text after the token: 401 naming the format', async () => {
    const response = await server.request('GET', '/api/state', {
      headers: { authorization: `Bearer ${tokens.read} extra` },
    });
    expect(response.status).toBe(401);
    expect(response.body.rule).toBe('format');
    expect(response.body.error).toContain('malformed Authorization header');
  });

  it('a request stores when its token was last used', async () => {
    const token = await server.token('read', 'usage-reader');
    const lastUsed = () =>
      server.context.store.db
        .selectFrom('api_tokens')
        .select('last_used_at')
        .where('name', '=', 'usage-reader')
        .executeTakeFirstOrThrow();
    expect((await lastUsed()).last_used_at).toBeNull();
    const before = new Date().toISOString();
    expect((await server.request('GET', '/api/state', { token })).status).toBe(200);
    // The use is written after the response, through the write queue.
    let stored: string | null = null;
    for (let wait = 0; wait < 100 && stored === null; wait += 1) {
      stored = (await lastUsed()).last_used_at;
      if (stored === null) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(stored).not.toBeNull();
    expect(stored! >= before).toBe(true);
  });

  it('a lookup writes the last use at most once a minute', async () => {
    const token = await server.token('read', 'usage-counted');
    const uses: number[] = [];
    const verifier = new TokenVerifier(server.context.store.db, (tokenId, at) => {
      uses.push(tokenId);
      void server.context.store.write((trx) => storeTokenUse(trx, tokenId, at));
    });
    expect(await verifier.verify(token)).toBeDefined();
    await server.context.store.write(async () => undefined);
    // Each forget makes the next request look the token up again, as the cache's expiry does.
    verifier.forget();
    expect(await verifier.verify(token)).toBeDefined();
    verifier.forget();
    expect(await verifier.verify(token)).toBeDefined();
    expect(uses).toHaveLength(1);
    expect(await verifier.verify('slw_unknown-000000000000000000000000')).toBeUndefined();
    expect(uses).toHaveLength(1);
  });

  it('the bearer scheme is case-insensitive', async () => {
    const response = await server.request('GET', '/api/state', {
      headers: { authorization: `bearer ${tokens.read}` },
    });
    expect(response.status).toBe(200);
  });
});
