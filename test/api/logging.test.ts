import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runCli, startApiProcess } from '../support/cli.js';
import { makeTempDir } from '../support/server.js';

interface LogLine {
  level: number;
  time: string;
  msg: string;
  reqId?: string;
  req?: { method: string; url: string };
  res?: { statusCode: number };
  [key: string]: unknown;
}

const ADMIN_TOKEN = 'slw_log-test-admin-token-must-not-leak-0001';

describe('process logs', { timeout: 120_000 }, () => {
  let dataDir: string;

  beforeAll(async () => {
    await ensureBuilt();
    dataDir = makeTempDir('slipway-logs-');
  });
  afterAll(() => {
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('are pino JSON with request ids and never a token', async () => {
    const created = await runCli(['token', 'create', '--name', 'ci', '--role', 'trigger'], {
      SLIPWAY_DATA_DIR: dataDir,
    });
    const triggerToken = created.stdout.trim();
    const unknownToken = 'slw_unknown-token-that-must-not-leak-0002';
    const api = await startApiProcess({
      SLIPWAY_DATA_DIR: dataDir,
      SLIPWAY_ADMIN_TOKEN: ADMIN_TOKEN,
    });
    try {
      const send = (
        token: string,
        requestId: string,
        init: RequestInit = {},
        route = '/api/trigger/ci',
      ) =>
        fetch(`${api.url}${route}`, {
          method: 'POST',
          ...init,
          headers: {
            authorization: `Bearer ${token}`,
            'content-type': 'application/json',
            'x-request-id': requestId,
          },
        });
      const ok = await send(triggerToken, 'log-created', {
        body: JSON.stringify({ commit: 'abc1234', params: { token: triggerToken } }),
      });
      expect(ok.status).toBe(201);
      expect((await send(unknownToken, 'log-unknown', { body: '{}' })).status).toBe(401);
      expect((await send(ADMIN_TOKEN, 'log-invalid', { body: '{"commit":1}' })).status).toBe(400);
      const read = await fetch(`${api.url}/api/admin/jobs`, {
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'x-request-id': 'log-read' },
      });
      expect(read.status).toBe(200);
      // A client that puts a token in the query string by mistake gets 401, and the request
      // line keeps the URL without it.
      const inQuery = await fetch(`${api.url}/api/state?token=${unknownToken}&x=1`, {
        headers: { 'x-request-id': 'log-query' },
      });
      expect(inQuery.status).toBe(401);
      // Heartbeats arrive every few seconds per running task; their requests are not logged.
      const heartbeat = await send(
        ADMIN_TOKEN,
        'log-heartbeat',
        { body: JSON.stringify({ worker_id: 'log-worker', attempt: 1 }) },
        '/api/agent/tasks/ci-00000000.1.0/heartbeat',
      );
      expect(heartbeat.status).toBeGreaterThanOrEqual(400);
      expect(heartbeat.status).toBeLessThan(500);
      // GitHub is not configured here, so the sync returns 503 by design.
      const sync = await send(ADMIN_TOKEN, 'log-sync', { body: '{}' }, '/api/sync-variables');
      expect(sync.status).toBe(503);
    } finally {
      await api.stop();
    }

    const output = api.stdout();
    for (const secret of [ADMIN_TOKEN, triggerToken, unknownToken]) {
      expect(output).not.toContain(secret);
      expect(output).not.toContain(secret.slice(4));
    }
    const lines = output
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as LogLine);
    expect(lines.length).toBeGreaterThan(5);
    for (const line of lines) {
      expect(typeof line.level).toBe('number');
      expect(line.time).toMatch(/Z$/);
      expect(typeof line.msg).toBe('string');
    }
    expect(lines.some((line) => line.msg.startsWith('API listening on http://127.0.0.1:'))).toBe(
      true,
    );

    const forRequest = (id: string) => lines.filter((line) => line.reqId === id);
    const created201 = forRequest('log-created');
    expect(created201.find((line) => line.req !== undefined)?.req).toMatchObject({
      method: 'POST',
      url: '/api/trigger/ci',
    });
    expect(created201.find((line) => line.res !== undefined)?.res?.statusCode).toBe(201);
    for (const id of ['log-unknown', 'log-invalid']) {
      const completed = forRequest(id).find((line) => line.res !== undefined);
      expect(completed, id).toBeDefined();
      // Client errors are routine: info, never error.
      expect(completed!.level).toBe(30);
    }
    // One line per request at info, when it completes, naming the request and the status.
    expect(forRequest('log-read')).toEqual([
      expect.objectContaining({
        level: 30,
        msg: 'request completed',
        req: expect.objectContaining({ method: 'GET', url: '/api/admin/jobs' }),
        res: { statusCode: 200 },
      }),
    ]);
    const syncFailed = forRequest('log-sync').find((line) => line.msg === 'request failed');
    expect(syncFailed?.level).toBe(40);
    expect(syncFailed?.err).toBeUndefined();
    expect(JSON.stringify(forRequest('log-sync'))).not.toContain('    at ');
    expect(forRequest('log-heartbeat')).toEqual([]);
    expect(forRequest('log-query').find((line) => line.req !== undefined)?.req?.url).toBe(
      '/api/state?token=[redacted]&x=1',
    );
    expect(lines.some((line) => line.msg.includes('stopping'))).toBe(true);
  });

  it('a generated admin token goes to a private file, not the log', async () => {
    const freshDir = path.join(dataDir, 'fresh');
    const api = await startApiProcess({ SLIPWAY_DATA_DIR: freshDir });
    let token: string;
    try {
      const file = path.join(freshDir, 'admin-token');
      expect(fs.statSync(file).mode & 0o777).toBe(0o600);
      token = fs.readFileSync(file, 'utf8').trim();
      expect(token).toMatch(/^slw_/);
      const response = await fetch(`${api.url}/api/admin/audit-log`, {
        headers: { authorization: `Bearer ${token}` },
      });
      expect(response.status).toBe(200);
    } finally {
      await api.stop();
    }
    const output = api.stdout();
    expect(output).toContain(path.join(freshDir, 'admin-token'));
    expect(output).not.toContain(token);

    // A later start creates no token and logs where the first one is.
    const again = await startApiProcess({ SLIPWAY_DATA_DIR: freshDir });
    await again.stop();
    expect(again.stdout()).toContain(
      `the admin token made at the first start is in ${path.join(freshDir, 'admin-token')}`,
    );
    expect(again.stdout()).not.toContain(token);
  });
});
