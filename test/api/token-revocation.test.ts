/**
 * A token revoked by another process (`slipway token revoke`, another API process) is rejected
 * at the next request, even while the token is in the API's token cache.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/database.js';
import { createToken, revokeToken } from '../../src/store/tokens.js';
import { startTestServer, type TestServer } from '../support/server.js';

describe('token revocation', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer();
  });

  afterAll(async () => {
    await server.close();
  });

  /** Runs a write on a connection of its own, as the CLI does. */
  async function writeElsewhere(work: Parameters<TestServer['context']['store']['write']>[0]) {
    const other = await openStore(server.context.config.dbPath);
    try {
      await other.write(work);
    } finally {
      await other.close();
    }
  }

  it('rejects a cached token at once', async () => {
    const token = await server.token('trigger', 'leaked');
    const first = await server.request('POST', '/api/trigger/ci', {
      token,
      body: { commit: 'abc1234' },
    });
    expect(first.status).toBe(201);

    await writeElsewhere((trx) => revokeToken(trx, { name: 'leaked' }));

    const trigger = await server.request('POST', '/api/trigger/ci', {
      token,
      body: { commit: 'abc1234' },
    });
    expect(trigger.status).toBe(401);
    expect(trigger.body.error).toBe('unknown or revoked token');
    const read = await server.request('GET', '/api/state', { token });
    expect(read.status).toBe(401);
    const jobs = await server.context.store.db
      .selectFrom('jobs')
      .select('id')
      .where('requested_by', '=', 'leaked')
      .execute();
    expect(jobs).toHaveLength(1);
  });

  it('keeps an active token after other commits', async () => {
    const token = await server.token('trigger', 'still-valid');
    for (let round = 0; round < 3; round += 1) {
      const response = await server.request('POST', '/api/trigger/ci', {
        token,
        body: { commit: 'abc1234' },
      });
      expect(response.status).toBe(201);
      await writeElsewhere((trx) => createToken(trx, `other-${round}`, 'read'));
    }
  });
});
