import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Migrator, sql } from 'kysely';
import { ensureAdminToken } from '../../src/app/admin-token.js';
import { loadConfig } from '../../src/config/env.js';
import type { Logger } from '../../src/log.js';
import { openStore } from '../../src/store/database.js';
import { migrationProvider } from '../../src/store/migrations/index.js';
import { createToken, revokeToken } from '../../src/store/tokens.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

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
    await server.context.store.write((trx) => revokeToken(trx, { name: 'admin-2' }));
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

describe('changing SLIPWAY_ADMIN_TOKEN', () => {
  const FIRST = 'slw_first-admin-value-0000000000000000';
  const SECOND = 'slw_second-admin-value-000000000000000';
  let dataDir: string;

  beforeAll(() => {
    dataDir = makeTempDir('slipway-rotate-');
  });
  afterAll(() => {
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  const status = async (server: TestServer, token: string) =>
    (await server.request('GET', '/api/state', { token })).status;

  it('revokes the token of the earlier value and keeps other admin tokens', async () => {
    const first = await startTestServer({ SLIPWAY_DATA_DIR: dataDir, SLIPWAY_ADMIN_TOKEN: FIRST });
    const { token: manual } = await first.context.store.write((trx) =>
      createToken(trx, 'ops', 'admin'),
    );
    expect(await status(first, FIRST)).toBe(200);
    await first.close();

    const second = await startTestServer({
      SLIPWAY_DATA_DIR: dataDir,
      SLIPWAY_ADMIN_TOKEN: SECOND,
    });
    try {
      expect(await status(second, FIRST)).toBe(401);
      expect(await status(second, SECOND)).toBe(200);
      expect(await status(second, manual)).toBe(200);
      const rows = await second.context.store.db
        .selectFrom('api_tokens')
        .select(['name', 'env_variable'])
        .select((eb) => eb('revoked_at', 'is not', null).as('revoked'))
        .orderBy('id')
        .execute();
      expect(rows).toEqual([
        { name: 'admin', env_variable: 'SLIPWAY_ADMIN_TOKEN', revoked: 1 },
        { name: 'ops', env_variable: null, revoked: 0 },
        { name: 'admin-2', env_variable: 'SLIPWAY_ADMIN_TOKEN', revoked: 0 },
      ]);
      const audit = await second.request('GET', '/api/admin/audit-log?action=token_revoked', {
        token: SECOND,
      });
      expect(audit.body.entries.map((entry: { details: unknown }) => entry.details)).toEqual([
        { token: 'admin', count: 1, reason: 'SLIPWAY_ADMIN_TOKEN changed' },
      ]);
    } finally {
      await second.close();
    }
  });

  it('changes nothing when started again with the same value', async () => {
    const again = await startTestServer({ SLIPWAY_DATA_DIR: dataDir, SLIPWAY_ADMIN_TOKEN: SECOND });
    try {
      expect(await status(again, SECOND)).toBe(200);
      const active = await again.context.store.db
        .selectFrom('api_tokens')
        .select('name')
        .where('revoked_at', 'is', null)
        .orderBy('id')
        .execute();
      expect(active.map((row) => row.name)).toEqual(['ops', 'admin-2']);
    } finally {
      await again.close();
    }
  });

  it('set back to an earlier value, revokes the later value too', async () => {
    const back = await startTestServer({ SLIPWAY_DATA_DIR: dataDir, SLIPWAY_ADMIN_TOKEN: FIRST });
    try {
      expect(await status(back, FIRST)).toBe(401);
      expect(await status(back, SECOND)).toBe(401);
      const active = await back.context.store.db
        .selectFrom('api_tokens')
        .select('name')
        .where('revoked_at', 'is', null)
        .execute();
      expect(active.map((row) => row.name)).toEqual(['ops']);
    } finally {
      await back.close();
    }
  });
});

describe('token origin of an earlier schema', () => {
  it('marks admin tokens registered from the variable before the column existed', async () => {
    const dbPath = path.join(makeTempDir('slipway-token-origin-'), 'old.db');
    const old = await openStore(dbPath, { migrate: false });
    const migrator = new Migrator({
      db: old.db,
      provider: migrationProvider,
      migrationTableName: 'schema_migrations',
      migrationLockTableName: 'schema_migrations_lock',
      allowUnorderedMigrations: true,
    });
    const { error } = await migrator.migrateTo('0003_jobs_commit_status');
    expect(error).toBeUndefined();
    const now = new Date().toISOString();
    for (const [name, origin] of [
      ['admin', 'generated'],
      ['admin-2', 'SLIPWAY_ADMIN_TOKEN'],
    ] as const) {
      await sql`INSERT INTO api_tokens (name, role, token_hash, prefix, created_at)
        VALUES (${name}, 'admin', ${name + '-hash'}, 'slw_xxxx', ${now})`.execute(old.db);
      await sql`INSERT INTO audit_log (action, actor, details, created_at)
        VALUES ('token_created', 'slipway', ${JSON.stringify({ name, role: 'admin', origin })}, ${now})`.execute(
        old.db,
      );
    }
    await old.close();

    const store = await openStore(dbPath);
    try {
      const rows = await store.db
        .selectFrom('api_tokens')
        .select(['name', 'env_variable'])
        .orderBy('id')
        .execute();
      expect(rows).toEqual([
        { name: 'admin', env_variable: null },
        { name: 'admin-2', env_variable: 'SLIPWAY_ADMIN_TOKEN' },
      ]);
    } finally {
      await store.close();
    }
  });
});

describe('SLIPWAY_ADMIN_TOKEN of another role', () => {
  it('logs a warning naming the token', async () => {
    const dataDir = makeTempDir('slipway-admin-role-');
    const store = await openStore(path.join(dataDir, 'state', 'orchestration.db'));
    try {
      const { token } = await store.write((trx) => createToken(trx, 'ci-bot', 'trigger'));
      const config = loadConfig({ SLIPWAY_DATA_DIR: dataDir, SLIPWAY_ADMIN_TOKEN: token });
      const warnings: string[] = [];
      const fields: Array<Record<string, unknown>> = [];
      const logger = {
        warn: (logged: Record<string, unknown>, message: string) => {
          fields.push(logged);
          warnings.push(message);
        },
      };

      const result = await ensureAdminToken(config, store, logger as unknown as Logger);

      expect(result.created).toBe(false);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain('token "ci-bot", whose role is trigger');
      expect(warnings[0]).toContain('set SLIPWAY_ADMIN_TOKEN to a new value');
      // The logger redacts any field named token, so the name has a field of its own.
      expect(fields[0]).toEqual({ token_name: 'ci-bot', role: 'trigger' });
    } finally {
      await store.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
