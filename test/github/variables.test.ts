import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { setStateVariable } from '../../src/store/state-variables.js';
import { startTestServer } from '../support/server.js';
import { startGitHubSetup, waitFor, type GitHubSetup } from './helpers.js';

const COMMIT = 'a'.repeat(40);

describe('POST /api/sync-variables', () => {
  let setup: GitHubSetup;

  beforeAll(async () => {
    setup = await startGitHubSetup();
  });
  afterAll(async () => {
    await setup.close();
  });
  afterEach(async () => {
    setup.standin.variables.clear();
    setup.standin.requests.length = 0;
    await setup.server.context.store.write((trx) => trx.deleteFrom('state_variables').execute());
  });

  async function setState(values: Record<string, string>) {
    await setup.server.context.store.write(async (trx) => {
      for (const [name, value] of Object.entries(values)) await setStateVariable(trx, name, value);
    });
  }

  function seedGitHub(name: string, value: string) {
    const now = new Date().toISOString();
    setup.standin.variables.set(name, { name, value, created_at: now, updated_at: now });
  }

  function sync(body?: unknown, token = setup.server.adminToken) {
    return setup.server.request('POST', '/api/sync-variables', { token, body });
  }

  it('creates, updates and skips by comparing with GitHub', async () => {
    seedGitHub('LAST_DEPLOYED_COMMIT', 'b'.repeat(40));
    seedGitHub('DEPLOY_STATUS', 'success');
    await setState({
      LAST_DEPLOYED_COMMIT: COMMIT,
      DEPLOY_STATUS: 'success',
      HEALTH_STATUS: 'healthy',
    });

    const response = await sync();

    expect(response.status).toBe(200);
    expect(response.body.status).toBe('ok');
    expect(response.body.repository).toBe(setup.standin.repository);
    const outcomes = Object.fromEntries(
      response.body.results.map((r: { name: string; outcome: string }) => [r.name, r.outcome]),
    );
    expect(outcomes).toEqual({
      DEPLOY_STATUS: 'unchanged',
      HEALTH_STATUS: 'created',
      LAST_DEPLOYED_COMMIT: 'updated',
    });
    expect(setup.standin.variables.get('LAST_DEPLOYED_COMMIT')?.value).toBe(COMMIT);
    expect(setup.standin.variables.get('HEALTH_STATUS')?.value).toBe('healthy');
    const writes = setup.standin.requests.filter((r) => r.method !== 'GET');
    expect(writes.map((r) => `${r.method} ${r.status}`).sort()).toEqual(['PATCH 204', 'POST 201']);
  });

  it('stores synced_at and synced_value and audits the sync', async () => {
    await setState({ LAST_DEPLOYED_COMMIT: COMMIT });
    const response = await sync();
    expect(response.status).toBe(200);

    const row = await setup.server.context.store.db
      .selectFrom('state_variables')
      .selectAll()
      .where('name', '=', 'LAST_DEPLOYED_COMMIT')
      .executeTakeFirstOrThrow();
    expect(row.synced_at).toBe(response.body.timestamp);
    expect(row.synced_value).toBe(COMMIT);
    expect(row.synced_at).toMatch(/Z$/);

    const audit = await setup.server.request(
      'GET',
      '/api/admin/audit-log?action=variables_synced',
      {
        token: setup.server.adminToken,
      },
    );
    expect(audit.status).toBe(200);
    expect(audit.text).toContain('LAST_DEPLOYED_COMMIT');
    expect(audit.text).not.toContain(setup.standin.token);
  });

  it('rejects names and values GitHub would reject, without sending them', async () => {
    await setState({
      'bad-name': 'x',
      GITHUB_SHA: 'x',
      '1ST_RUN': 'x',
      BIG_VALUE: 'v'.repeat(48 * 1024 + 1),
      GOOD: 'fine',
    });

    const response = await sync();

    expect(response.status).toBe(200);
    expect(response.body.status).toBe('partial');
    const byName = Object.fromEntries(
      response.body.results.map((r: { name: string }) => [r.name, r]),
    );
    expect(byName['bad-name'].outcome).toBe('failed');
    expect(byName['bad-name'].reason).toContain('letters, digits and underscores');
    expect(byName.GITHUB_SHA.reason).toContain('GITHUB_');
    expect(byName['1ST_RUN'].reason).toContain('digit');
    expect(byName.BIG_VALUE.reason).toContain('48 KB');
    expect(byName.GOOD.outcome).toBe('created');
    const sentNames = setup.standin.requests.map((r) => r.path);
    expect(sentNames.some((path) => /bad-name|GITHUB_SHA|1ST_RUN|BIG_VALUE/.test(path))).toBe(
      false,
    );
    expect(
      setup.standin.requests.every((r) => (r.body as { name?: string })?.name !== 'BIG_VALUE'),
    ).toBe(true);
  });

  it('updates when a create answers 409', async () => {
    seedGitHub('DEPLOY_STATUS', 'failure');
    await setState({ DEPLOY_STATUS: 'success' });
    // GitHub reports the variable missing, then another writer creates it first.
    setup.standin.failNext(1, { kind: 'not-found' }, /^GET /);

    const response = await sync();

    expect(response.body.results).toEqual([{ name: 'DEPLOY_STATUS', outcome: 'updated' }]);
    expect(setup.standin.requests.map((r) => `${r.method} ${r.status}`)).toEqual([
      'GET 404',
      'POST 409',
      'PATCH 204',
    ]);
    expect(setup.standin.variables.get('DEPLOY_STATUS')?.value).toBe('success');
  });

  it('retries a 502 and succeeds', async () => {
    await setState({ HEALTH_STATUS: 'healthy' });
    setup.standin.failNext(1, { kind: '502' }, /^GET /);

    const response = await sync();

    expect(response.body.results).toEqual([{ name: 'HEALTH_STATUS', outcome: 'created' }]);
    expect(setup.standin.requests.map((r) => `${r.method} ${r.status}`)).toEqual([
      'GET 502',
      'GET 404',
      'POST 201',
    ]);
  });

  it('waits for the rate-limit reset and retries', async () => {
    await setState({ HEALTH_STATUS: 'healthy' });
    setup.standin.failNext(1, { kind: 'rate-limit', resetInSeconds: 1 }, /^GET /);

    const response = await sync();

    expect(response.body.results).toEqual([{ name: 'HEALTH_STATUS', outcome: 'created' }]);
    const [limited, retried] = setup.standin.requests;
    expect(limited?.status).toBe(403);
    expect(retried?.status).toBe(404);
    expect(retried!.at - limited!.at).toBeGreaterThanOrEqual(900);
  });

  it('reports every variable failed while GitHub is down', async () => {
    await setState({ A_VAR: '1', B_VAR: '2' });
    setup.standin.setDown(true);
    try {
      const response = await sync();
      expect(response.status).toBe(200);
      expect(response.body.status).toBe('failed');
      for (const result of response.body.results) {
        expect(result.outcome).toBe('failed');
        expect(result.reason).toContain('502');
      }
      // The first variable gets the client's retries; the second is not tried at all.
      expect(response.body.results[1].reason).toContain('not sent: GitHub was unavailable');
      expect(setup.standin.requests).toHaveLength(4);
      expect(setup.standin.requests.every((r) => r.path.endsWith('/A_VAR'))).toBe(true);
      const row = await setup.server.context.store.db
        .selectFrom('state_variables')
        .select('synced_at')
        .where('name', '=', 'A_VAR')
        .executeTakeFirstOrThrow();
      expect(row.synced_at).toBeNull();
    } finally {
      setup.standin.setDown(false);
    }
  });

  it('syncs only the named variables', async () => {
    await setState({ A_VAR: '1', B_VAR: '2' });
    const response = await sync({ names: ['B_VAR'] });
    expect(response.body.results).toEqual([{ name: 'B_VAR', outcome: 'created' }]);
    expect(setup.standin.variables.has('A_VAR')).toBe(false);
  });

  it('rejects unknown names with 400 naming the field', async () => {
    const response = await sync({ names: ['NOPE'] });
    expect(response.status).toBe(400);
    expect(response.body.field).toBe('names');
    expect(response.body.error).toContain('NOPE');
    expect(setup.standin.requests).toHaveLength(0);
  });

  it('quotes unknown names and lists at most ten', async () => {
    const blank = await sync({ names: [' 1 '] });
    expect(blank.status).toBe(400);
    expect(blank.body.error).toBe(
      'names: no state variable named " 1 "; GET /api/state lists the state variables',
    );
    const many = await sync({ names: Array.from({ length: 500 }, (_, i) => `N${i}`) });
    expect(many.status).toBe(400);
    expect(many.body.error).toBe(
      'names: no state variable named "N0", "N1", "N2", "N3", "N4", "N5", "N6", "N7", "N8", "N9" ' +
        'or 490 more; GET /api/state lists the state variables',
    );
    expect(setup.standin.requests).toHaveLength(0);
  });

  it('needs the admin role', async () => {
    const token = await setup.server.token('trigger');
    const response = await sync(undefined, token);
    expect(response.status).toBe(403);
  });

  it('keeps the token out of the log', async () => {
    await setState({ HEALTH_STATUS: 'healthy' });
    setup.standin.setDown(true);
    try {
      await sync();
    } finally {
      setup.standin.setDown(false);
    }
    expect(setup.logs.length).toBeGreaterThan(0);
    expect(setup.logs.join('\n')).not.toContain(setup.standin.token);
  });
});

describe('scheduled variable sync', () => {
  it('pushes variables every GITHUB_SYNC_INTERVAL seconds', async () => {
    const setup = await startGitHubSetup({ GITHUB_SYNC_INTERVAL: '1' });
    try {
      await setup.server.context.store.write((trx) =>
        setStateVariable(trx, 'LAST_DEPLOYED_COMMIT', COMMIT),
      );
      const variable = await waitFor(
        () => setup.standin.variables.get('LAST_DEPLOYED_COMMIT'),
        8_000,
        'the scheduled sync',
      );
      expect(variable.value).toBe(COMMIT);
      const row = await waitFor(async () => {
        const found = await setup.server.context.store.db
          .selectFrom('state_variables')
          .select('synced_at')
          .where('name', '=', 'LAST_DEPLOYED_COMMIT')
          .executeTakeFirst();
        return found?.synced_at ?? undefined;
      });
      expect(row).toMatch(/Z$/);
    } finally {
      await setup.close();
    }
  });
});

describe('without GITHUB_TOKEN', () => {
  it('answers 503 for a sync and keeps triggers working', async () => {
    const server = await startTestServer();
    try {
      const sync = await server.request('POST', '/api/sync-variables', {
        token: server.adminToken,
      });
      expect(sync.status).toBe(503);
      expect(sync.body.code).toBe('github_not_configured');
      expect(sync.body.error).toContain('GITHUB_TOKEN');
      const trigger = await server.request('POST', '/api/trigger/ci', {
        token: server.adminToken,
        body: { commit: COMMIT, branch: 'main' },
      });
      expect(trigger.status).toBe(201);
    } finally {
      await server.close();
    }
  });
});
