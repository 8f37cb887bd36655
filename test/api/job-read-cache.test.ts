/**
 * GET /api/job/{id} serves a serialised response again while nothing was committed. These
 * tests change the job through every kind of writer and expect the very next read to show it.
 */
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ResponseCache } from '../../src/api/response-cache.js';
import { ensureBuilt, startApiProcess, type ApiProcess } from '../support/cli.js';
import { startTestServer, type TestServer } from '../support/server.js';

const COMMIT = '0123456789abcdef0123456789abcdef01234567';

describe('job reads between changes', () => {
  let server: TestServer;
  let other: ApiProcess;

  const getJob = async (id: string) => {
    const response = await server.request('GET', `/api/job/${id}`, { token: server.adminToken });
    expect(response.status).toBe(200);
    return response.body;
  };
  const trigger = async () => {
    const response = await server.request('POST', '/api/trigger/recovery', {
      token: server.adminToken,
      body: { commit: COMMIT },
    });
    expect(response.status).toBe(201);
    return response.body.job_id as string;
  };

  beforeAll(async () => {
    await ensureBuilt();
    server = await startTestServer();
    other = await startApiProcess({
      SLIPWAY_DATA_DIR: server.dataDir,
      SLIPWAY_ADMIN_TOKEN: server.adminToken,
    });
  }, 60_000);
  afterAll(async () => {
    await other?.stop();
    await server?.close();
  });

  it('shows a change made by this process on the next read', async () => {
    const id = await trigger();
    expect((await getJob(id)).status).toBe('queued');
    expect((await getJob(id)).status).toBe('queued');
    const cancelled = await server.request('POST', `/api/job/${id}/cancel`, {
      token: server.adminToken,
    });
    expect(cancelled.status).toBe(202);
    expect((await getJob(id)).status).toBe('cancelled');
  });

  it('shows a change made by another API process on the next read', async () => {
    const id = await trigger();
    expect((await getJob(id)).status).toBe('queued');
    const response = await fetch(`${other.url}/api/job/${id}/cancel`, {
      method: 'POST',
      headers: { authorization: `Bearer ${server.adminToken}` },
    });
    expect(response.status).toBe(202);
    expect((await getJob(id)).status).toBe('cancelled');
  });

  it('shows a row changed by a plain SQLite connection on the next read', async () => {
    const id = await trigger();
    expect((await getJob(id)).branch).toBeNull();
    const sqlite = new BetterSqlite3(path.join(server.dataDir, 'state', 'orchestration.db'));
    try {
      sqlite.prepare('UPDATE jobs SET branch = ? WHERE id = ?').run('edited-by-hand', id);
    } finally {
      sqlite.close();
    }
    expect((await getJob(id)).branch).toBe('edited-by-hand');
  });

  it('answers 404 for a job deleted since it was read', async () => {
    const id = await trigger();
    await getJob(id);
    const sqlite = new BetterSqlite3(path.join(server.dataDir, 'state', 'orchestration.db'));
    try {
      sqlite.pragma('foreign_keys = ON');
      sqlite.prepare('DELETE FROM jobs WHERE id = ?').run(id);
    } finally {
      sqlite.close();
    }
    const response = await server.request('GET', `/api/job/${id}`, { token: server.adminToken });
    expect(response.status).toBe(404);
  });
});

describe('ResponseCache', () => {
  it('entry expires on version or time', () => {
    const cache = new ResponseCache(10, 1_000);
    cache.set('a', 7, '{"a":1}', 0);
    expect(cache.get('a', 7, 500)).toBe('{"a":1}');
    expect(cache.get('a', 8, 500)).toBeUndefined();
    expect(cache.get('a', 7, 500)).toBeUndefined();
    cache.set('a', 7, '{"a":1}', 0);
    expect(cache.get('a', 7, 1_000)).toBeUndefined();
  });

  it('drops the oldest entry when full', () => {
    const cache = new ResponseCache(2, 1_000);
    cache.set('a', 1, 'A', 0);
    cache.set('b', 1, 'B', 0);
    cache.set('c', 1, 'C', 0);
    expect(cache.size).toBe(2);
    expect(cache.get('a', 1, 1)).toBeUndefined();
    expect(cache.get('b', 1, 1)).toBe('B');
    expect(cache.get('c', 1, 1)).toBe('C');
  });
});
