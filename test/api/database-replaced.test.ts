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

  it('returns 503 while the file is gone', async () => {
    const moved = `${dbPath}.moved`;
    fs.renameSync(dbPath, moved);
    let response;
    try {
      response = await server.request('POST', '/api/trigger/ci', {
        token,
        body: { commit: 'abc1234' },
      });
    } finally {
      fs.renameSync(moved, dbPath);
    }

    expect(response.status).toBe(503);
    expect(response.body.code).toBe('service_unavailable');
    expect(response.body.field).toBe('storage');
    expect(response.body.rule).toBe('replaced');
    expect(response.body.error).toContain('deleted or replaced');

    const retried = await server.request('POST', '/api/trigger/ci', {
      token,
      body: { commit: 'abc1234' },
    });
    expect(retried.status).toBe(201);
  });

  it('health reports the failed writes until one succeeds', async () => {
    const moved = `${dbPath}.away`;
    fs.renameSync(dbPath, moved);
    let health;
    try {
      const rejected = await server.request('POST', '/api/trigger/ci', {
        token,
        body: { commit: 'abc1234' },
      });
      expect(rejected.status).toBe(503);
      health = await server.request('GET', '/api/health/status', { token });
    } finally {
      fs.renameSync(moved, dbPath);
    }
    const database = health.body.components.database;
    expect(database.status).toBe('unhealthy');
    expect(database.details.reason).toContain('SLIPWAY_DATABASE_REPLACED');
    expect(database.details.last_write_failure.code).toBe('SLIPWAY_DATABASE_REPLACED');

    const accepted = await server.request('POST', '/api/trigger/ci', {
      token,
      body: { commit: 'abc1234' },
    });
    expect(accepted.status).toBe(201);
    const after = await server.request('GET', '/api/health/status', { token });
    expect(after.body.components.database.status).toBe('healthy');
  });

  it('returns 503 after the file was replaced', async () => {
    const kept = `${dbPath}.kept`;
    fs.renameSync(dbPath, kept);
    fs.copyFileSync(kept, dbPath);
    let response;
    try {
      response = await server.request('POST', '/api/trigger/ci', {
        token,
        body: { commit: 'abc1234' },
      });
    } finally {
      fs.renameSync(kept, dbPath);
    }

    expect(response.status).toBe(503);
    expect(response.body.rule).toBe('replaced');
  });
});
