/**
 * Writes after the database file was deleted or replaced under the running server. SQLite
 * would keep writing to the open file, which is lost at the next start, so the server must
 * reject those writes instead of returning 201.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../support/server.js';

describe('write after the database file moved', () => {
  let server: TestServer;
  let token: string;
  let dbPath: string;

  beforeAll(async () => {
    server = await startTestServer();
    token = await server.token('trigger');
    dbPath = path.join(server.dataDir, 'state', 'orchestration.db');
  });
  afterAll(async () => {
    await server.close();
  });

  const trigger = () =>
    server.request('POST', '/api/trigger/ci', { token, body: { commit: 'abc1234' } });

  /**
   * Moves the database file aside (and puts a copy in its place when `copy` is set), runs
   * `action`, then puts the original file back.
   */
  async function withFileMoved<T>(copy: boolean, action: () => Promise<T>): Promise<T> {
    const original = `${dbPath}.original`;
    fs.renameSync(dbPath, original);
    if (copy) fs.copyFileSync(original, dbPath);
    try {
      return await action();
    } finally {
      fs.renameSync(original, dbPath);
    }
  }

  it('returns 503 while the file is gone', async () => {
    const response = await withFileMoved(false, trigger);

    expect(response.status).toBe(503);
    expect(response.body.code).toBe('service_unavailable');
    expect(response.body.field).toBe('storage');
    expect(response.body.rule).toBe('replaced');
    expect(response.body.error).toContain('deleted or replaced');
    expect((await trigger()).status).toBe(201);
  });

  it('health reports failed writes until one succeeds', async () => {
    const health = await withFileMoved(false, async () => {
      expect((await trigger()).status).toBe(503);
      return server.request('GET', '/api/health/status', { token });
    });
    const database = health.body.components.database;
    expect(database.status).toBe('unhealthy');
    expect(database.details.reason).toContain('SLIPWAY_DATABASE_REPLACED');
    expect(database.details.last_write_failure.code).toBe('SLIPWAY_DATABASE_REPLACED');

    expect((await trigger()).status).toBe(201);
    const after = await server.request('GET', '/api/health/status', { token });
    expect(after.body.components.database.status).toBe('healthy');
  });

  it('returns 503 after the file was replaced', async () => {
    const response = await withFileMoved(true, trigger);

    expect(response.status).toBe(503);
    expect(response.body.rule).toBe('replaced');
  });
});

describe('first read after the database file moved', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server.close();
  });

  it('returns 503 naming the storage', async () => {
    const dbPath = path.join(server.dataDir, 'state', 'orchestration.db');
    fs.renameSync(dbPath, `${dbPath}.moved`);
    let response;
    try {
      // Job reads use a second connection, opened on the first read, which finds no file.
      response = await server.request('GET', '/api/job/ci-00000000', {
        token: server.adminToken,
      });
    } finally {
      fs.renameSync(`${dbPath}.moved`, dbPath);
    }

    expect(response.status).toBe(503);
    expect(response.body.field).toBe('storage');
    expect(response.body.rule).toBe('io');
    expect(response.body.error).toContain('SQLITE_CANTOPEN');
  });
});
