/**
 * The failed-authentication limit while token checks fail on the database: a request that got
 * a database error instead of 401 must not use up a failure, and a token that was valid must
 * keep working once the database reads again.
 */
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../support/server.js';
import { getFrom } from '../support/source-address.js';

describe('failed authentication limit on database errors', () => {
  let server: TestServer;

  /** Sends GET /api/state from the loopback address `from` and returns the status. */
  async function getStateFrom(from: string, token?: string): Promise<number> {
    return (await getFrom(server.url, from, '/api/state', token)).status;
  }

  /**
   * Runs `work` while api_tokens is renamed by another connection, so that every token query
   * of the server fails with "no such table". The rename commits, which changes the data
   * version as a revoke would.
   */
  async function withoutTokenTable(work: () => Promise<void>): Promise<void> {
    const other = new BetterSqlite3(path.join(server.dataDir, 'state', 'orchestration.db'));
    try {
      other.exec('ALTER TABLE api_tokens RENAME TO api_tokens_aside');
      try {
        await work();
      } finally {
        other.exec('ALTER TABLE api_tokens_aside RENAME TO api_tokens');
      }
    } finally {
      other.close();
    }
  }

  beforeAll(async () => {
    server = await startTestServer({ API_AUTH_FAILURE_LIMIT: '1' });
  });
  afterAll(async () => {
    await server.close();
  });

  it('gives back the failure of a lookup error', async () => {
    const fresh = await server.token('read', 'first-use-during-error');
    await withoutTokenTable(async () => {
      const status = await getStateFrom('127.0.0.4', fresh);
      expect(status).toBeGreaterThanOrEqual(500);
    });

    // The lookup error was not a failed authentication, so the one failure is still there.
    expect(await getStateFrom('127.0.0.4', fresh)).toBe(200);
    expect(await getStateFrom('127.0.0.4', 'slw_guess-after-error-00000000000000')).toBe(401);
    expect(await getStateFrom('127.0.0.4', 'slw_guess-after-error-00000000000001')).toBe(429);
  });

  it('keeps a known token through a failed check', async () => {
    const known = await server.token('read', 'known-before-error');
    expect(await getStateFrom('127.0.0.5', known)).toBe(200);
    expect(await getStateFrom('127.0.0.5', 'slw_guess-before-error-0000000000000')).toBe(401);
    expect(await getStateFrom('127.0.0.5', 'slw_guess-before-error-0000000000001')).toBe(429);

    await withoutTokenTable(async () => {
      const status = await getStateFrom('127.0.0.5', known);
      expect(status).toBeGreaterThanOrEqual(500);
    });

    // The address is still blocked, and the token was valid before the block.
    expect(await getStateFrom('127.0.0.5', known)).toBe(200);
  });
});
