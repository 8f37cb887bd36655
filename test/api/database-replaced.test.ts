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
