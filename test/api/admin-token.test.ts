import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { revokeToken } from '../../src/store/tokens.js';
import { makeTempDir, startTestServer } from '../support/server.js';

const ENV_TOKEN = 'slw_admin-token-from-the-environment-01';

describe('first admin token', () => {
  let dataDir: string;

  beforeAll(() => {
    dataDir = makeTempDir('slipway-admin-');
  });
  afterAll(() => {
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  const tokenRows = async (env: Record<string, string>) => {
    const server = await startTestServer({ SLIPWAY_DATA_DIR: dataDir, ...env });
    try {
      return await server.context.store.db
        .selectFrom('api_tokens')
        .select(['name', 'role', 'revoked_at'])
        .orderBy('id')
        .execute();
    } finally {
      await server.close();
    }
  };

  it('is generated into a 0600 file when none is configured', async () => {
    const rows = await tokenRows({ SLIPWAY_ADMIN_TOKEN: '' });
    expect(rows).toEqual([{ name: 'admin', role: 'admin', revoked_at: null }]);
    const file = path.join(dataDir, 'admin-token');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(file, 'utf8')).toMatch(/^slw_[A-Za-z0-9_-]{32}\n$/);
  });

  it('a later SLIPWAY_ADMIN_TOKEN is added beside it under a free name', async () => {
    const rows = await tokenRows({ SLIPWAY_ADMIN_TOKEN: ENV_TOKEN });
    expect(rows.map((row) => row.name)).toEqual(['admin', 'admin-2']);
    const again = await tokenRows({ SLIPWAY_ADMIN_TOKEN: ENV_TOKEN });
    expect(again).toEqual(rows);
  });

  it('both tokens authenticate and their creation is audited', async () => {
    const generated = fs.readFileSync(path.join(dataDir, 'admin-token'), 'utf8').trim();
    const server = await startTestServer({
      SLIPWAY_DATA_DIR: dataDir,
      SLIPWAY_ADMIN_TOKEN: ENV_TOKEN,
    });
    try {
      for (const token of [generated, ENV_TOKEN]) {
        const response = await server.request('GET', '/api/admin/audit-log?action=token_created', {
          token,
        });
        expect(response.status).toBe(200);
        expect(response.body.entries.map((entry: { details: unknown }) => entry.details)).toEqual([
          { name: 'admin-2', role: 'admin', origin: 'SLIPWAY_ADMIN_TOKEN' },
          { name: 'admin', role: 'admin', origin: 'generated' },
        ]);
        expect(response.body.entries[0].actor).toBe('slipway');
      }
    } finally {
      await server.close();
    }
  });

  it('a revoked SLIPWAY_ADMIN_TOKEN stays revoked', async () => {
    const server = await startTestServer({
      SLIPWAY_DATA_DIR: dataDir,
      SLIPWAY_ADMIN_TOKEN: ENV_TOKEN,
    });
    await server.context.store.write((trx) => revokeToken(trx, 'admin-2'));
    await server.close();

    const restarted = await startTestServer({
      SLIPWAY_DATA_DIR: dataDir,
      SLIPWAY_ADMIN_TOKEN: ENV_TOKEN,
    });
    try {
      const response = await restarted.request('GET', '/api/state', { token: ENV_TOKEN });
      expect(response.status).toBe(401);
      const rows = await restarted.context.store.db
        .selectFrom('api_tokens')
        .select('name')
        .execute();
      expect(rows.map((row) => row.name)).toEqual(['admin', 'admin-2']);
    } finally {
      await restarted.close();
    }
  });
});
