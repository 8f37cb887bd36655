import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENV_AGENT_TOKEN_NAME } from '../../src/app/agent-token.js';
import { RESERVED_ACTOR_NAMES } from '../../src/store/audit.js';
import { ensureBuilt, runCli } from '../support/cli.js';
import { makeTempDir, startTestServer } from '../support/server.js';

const dbFile = (dataDir: string) => path.join(dataDir, 'state', 'orchestration.db');

function readOnly<T>(dataDir: string, read: (sqlite: BetterSqlite3.Database) => T): T {
  const sqlite = new BetterSqlite3(dbFile(dataDir), { readonly: true });
  try {
    return read(sqlite);
  } finally {
    sqlite.close();
  }
}

describe('slipway init-db', { timeout: 120_000 }, () => {
  let dataDir: string;

  beforeAll(async () => {
    await ensureBuilt();
    dataDir = makeTempDir('slipway-init-');
  });
  afterAll(() => {
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('creates the schema, then changes nothing on a second run', async () => {
    const first = await runCli(['init-db'], { SLIPWAY_DATA_DIR: dataDir });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/is at the latest schema \(\d+ migrations\)/);
    const migrations = readOnly(dataDir, (sqlite) =>
      sqlite.prepare('SELECT name, timestamp FROM schema_migrations ORDER BY name').all(),
    ) as Array<{ name: string; timestamp: string }>;
    const names = migrations.map((row) => row.name);
    expect(names.slice(0, 2)).toEqual(['0001_initial', '0002_default_dependencies']);
    expect([...names].sort()).toEqual(names);

    const second = await runCli(['init-db'], { SLIPWAY_DATA_DIR: dataDir });
    expect(second.code, second.stderr).toBe(0);
    // pino writes asynchronously, so its lines may come before or after the summary.
    const summary = (text: string) => /^database .* is at the latest schema .*$/m.exec(text)?.[0];
    expect(summary(first.stdout)).toBeDefined();
    expect(summary(second.stdout)).toBe(summary(first.stdout));
    // Only the first run applies migrations, and it logs each one.
    expect(first.stdout).toContain('"migration":"0001_initial"');
    expect(second.stdout).not.toContain('migration applied');
    const again = readOnly(dataDir, (sqlite) =>
      sqlite.prepare('SELECT name, timestamp FROM schema_migrations ORDER BY name').all(),
    );
    expect(again).toEqual(migrations);
  });

  it('runs of init-db racing on a new database all succeed', async () => {
    const fresh = makeTempDir('slipway-init-race-');
    try {
      const results = await Promise.all(
        Array.from({ length: 4 }, () => runCli(['init-db'], { SLIPWAY_DATA_DIR: fresh }, 60_000)),
      );
      for (const result of results) expect(result.code, result.stderr).toBe(0);
      const names = readOnly(fresh, (sqlite) =>
        sqlite.prepare('SELECT name FROM schema_migrations').all(),
      ) as Array<{ name: string }>;
      expect(new Set(names.map((row) => row.name)).size).toBe(names.length);
      const applied = results
        .flatMap((result) => [...result.stdout.matchAll(/"migration":"([^"]+)"/g)])
        .map((match) => match[1]);
      // Each migration ran in exactly one of the processes.
      expect([...applied].sort()).toEqual(names.map((row) => row.name).sort());
    } finally {
      fs.rmSync(fresh, { recursive: true, force: true });
    }
  });

  it('has the tables, default dependencies and WAL mode', () => {
    const tables = readOnly(dataDir, (sqlite) =>
      sqlite
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .all()
        .map((row) => (row as { name: string }).name),
    );
    for (const table of [
      'jobs',
      'tasks',
      'workflow_dependencies',
      'state_variables',
      'health_metrics',
      'audit_log',
      'api_tokens',
      'workers',
      'schema_migrations',
    ]) {
      expect(tables).toContain(table);
    }
    const dependencies = readOnly(dataDir, (sqlite) =>
      sqlite
        .prepare(
          "SELECT workflow, depends_on FROM workflow_dependencies WHERE source = 'default' ORDER BY workflow",
        )
        .all(),
    );
    expect(dependencies).toEqual([
      { workflow: 'deploy', depends_on: 'integration-tests' },
      { workflow: 'integration-tests', depends_on: 'ci' },
    ]);
    const mode = readOnly(dataDir, (sqlite) => sqlite.pragma('journal_mode', { simple: true }));
    expect(mode).toBe('wal');
  });
});

describe('slipway token', { timeout: 120_000 }, () => {
  let dataDir: string;

  beforeAll(async () => {
    await ensureBuilt();
    dataDir = makeTempDir('slipway-token-');
  });
  afterAll(() => {
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('create prints the token once and stores its hash', async () => {
    const created = await runCli(['token', 'create', '--name', 'ci-bot', '--role', 'trigger'], {
      SLIPWAY_DATA_DIR: dataDir,
    });
    expect(created.code, created.stderr).toBe(0);
    const lines = created.stdout.split('\n').filter((line) => line !== '');
    expect(lines).toHaveLength(1);
    const token = lines[0]!;
    expect(token).toMatch(/^slw_[A-Za-z0-9_-]{32}$/);
    expect(created.stderr).toContain('token "ci-bot" (role trigger) created');
    expect(created.stderr).toContain('shown only this once');
    expect(created.stderr).not.toContain(token);
    // The first command on a new data folder reports that it created the database.
    expect(created.stderr).toContain(
      `slipway: no database was at ${path.join(dataDir, 'state', 'orchestration.db')}, so a new one was created there`,
    );

    const row = readOnly(dataDir, (sqlite) =>
      sqlite.prepare("SELECT * FROM api_tokens WHERE name = 'ci-bot'").get(),
    ) as Record<string, unknown>;
    expect(row.role).toBe('trigger');
    expect(row.token_hash).toBe(createHash('sha256').update(token).digest('hex'));
    for (const value of Object.values(row)) expect(String(value)).not.toContain(token);

    const listed = await runCli(['token', 'list'], { SLIPWAY_DATA_DIR: dataDir });
    expect(listed.code).toBe(0);
    expect(listed.stderr).not.toContain('no database was at');
    expect(listed.stdout.split('\n')[0]).toBe('ID\tNAME\tROLE\tPREFIX\tSTATE');
    expect(listed.stdout).toMatch(/\tci-bot\ttrigger\tslw_.{4}…\tactive/);
    expect(listed.stdout).not.toContain(token);

    const audit = readOnly(dataDir, (sqlite) =>
      sqlite
        .prepare("SELECT actor, source, details FROM audit_log WHERE action = 'token_created'")
        .all(),
    ) as Array<{ actor: string; source: string; details: string }>;
    expect(audit).toHaveLength(1);
    expect(audit[0]!.source).toBe('cli');
    expect(audit[0]!.details).not.toContain(token);
  });

  it('a created token works against the API until revoked', async () => {
    const created = await runCli(
      ['token', 'create', '--name', 'dashboard', '--role', 'read', '--json'],
      { SLIPWAY_DATA_DIR: dataDir },
    );
    expect(created.code, created.stderr).toBe(0);
    const output = JSON.parse(created.stdout) as { name: string; role: string; token: string };
    expect(output.name).toBe('dashboard');
    expect(output.role).toBe('read');

    const server = await startTestServer({ SLIPWAY_DATA_DIR: dataDir });
    try {
      const read = await server.request('GET', '/api/state', { token: output.token });
      expect(read.status).toBe(200);
      const trigger = await server.request('POST', '/api/trigger/ci', {
        token: output.token,
        body: { commit: 'abc1234' },
      });
      expect(trigger.status).toBe(403);

      const revoked = await runCli(['token', 'revoke', 'dashboard'], { SLIPWAY_DATA_DIR: dataDir });
      expect(revoked.code, revoked.stderr).toBe(0);
      expect(revoked.stdout).toMatch(
        /^revoked token "dashboard" \(id \d+\); running API processes reject it from now on\n$/,
      );
      const audit = await server.context.store.db
        .selectFrom('audit_log')
        .select('actor')
        .where('action', '=', 'token_revoked')
        .executeTakeFirstOrThrow();
      expect(audit.actor).toBe(`cli:${os.userInfo().username}`);
      server.api.app.log.level = 'silent';
      // The server caches a verified token for a few seconds; wait that out.
      await new Promise((resolve) => setTimeout(resolve, 5_200));
      const after = await server.request('GET', '/api/state', { token: output.token });
      expect(after.status).toBe(401);
    } finally {
      await server.close();
    }
  });

  it('rejects a bad role, a bad name and a taken name', async () => {
    const env = { SLIPWAY_DATA_DIR: dataDir };
    const role = await runCli(['token', 'create', '--name', 'x', '--role', 'root'], env);
    expect(role.code).toBe(2);
    expect(role.stderr).toContain('must be one of read, trigger, agent, admin');
    const name = await runCli(['token', 'create', '--name', 'two words', '--role', 'read'], env);
    expect(name.code).toBe(2);
    expect(name.stderr).toContain('must be 1 to 64 letters');
    const missing = await runCli(['token', 'create', '--role', 'read'], env);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("required option '--name <name>' not specified");

    const taken = await runCli(['token', 'create', '--name', 'ci-bot', '--role', 'admin'], env);
    expect(taken.code).toBe(1);
    expect(taken.stderr).toMatch(/a token named "ci-bot" already exists \(id \d+, active\)/);
    expect(taken.stdout).toBe('');
    const count = readOnly(dataDir, (sqlite) =>
      sqlite.prepare("SELECT count(*) AS n FROM api_tokens WHERE name = 'ci-bot'").get(),
    ) as { n: number };
    expect(count.n).toBe(1);

    const unknown = await runCli(['token', 'revoke', 'nobody'], env);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('no token named or numbered nobody');
  });

  it('create rejects names of only digits', async () => {
    const env = { SLIPWAY_DATA_DIR: dataDir };
    const digits = await runCli(['token', 'create', '--name', '42', '--role', 'read'], env);
    expect(digits.code).toBe(2);
    expect(digits.stdout).toBe('');
    expect(digits.stderr).toContain("option '--name <name>' argument '42' is invalid");
    expect(digits.stderr).toContain('must contain a character other than a digit');
    const count = readOnly(dataDir, (sqlite) =>
      sqlite.prepare("SELECT count(*) AS n FROM api_tokens WHERE name = '42'").get(),
    ) as { n: number };
    expect(count.n).toBe(0);

    const mixed = await runCli(['token', 'create', '--name', 'runner-42', '--role', 'read'], env);
    expect(mixed.code, mixed.stderr).toBe(0);
  });

  it("create rejects the names of Slipway's own audit actors", async () => {
    const env = { SLIPWAY_DATA_DIR: dataDir };
    for (const name of ['orchestrator', 'GitHub-Webhook', 'agent-from-env']) {
      const reserved = await runCli(['token', 'create', '--name', name, '--role', 'admin'], env);
      expect(reserved.code, name).toBe(2);
      expect(reserved.stdout).toBe('');
      expect(reserved.stderr).toContain('a name Slipway writes as the actor of its own audit rows');
    }
    const count = readOnly(dataDir, (sqlite) =>
      sqlite
        .prepare(
          "SELECT count(*) AS n FROM api_tokens WHERE lower(name) IN ('orchestrator', 'github-webhook', 'agent-from-env')",
        )
        .get(),
    ) as { n: number };
    expect(count.n).toBe(0);
  });

  it('the reserved names cover every actor Slipway writes', () => {
    // Every actor written as a string literal in the source, and the two named by constants.
    const actors = new Set<string>();
    const scan = (folder: string) => {
      for (const entry of fs.readdirSync(folder, { withFileTypes: true })) {
        const file = path.join(folder, entry.name);
        if (entry.isDirectory()) scan(file);
        else if (file.endsWith('.ts')) {
          for (const match of fs.readFileSync(file, 'utf8').matchAll(/\bactor: '([^']+)'/g)) {
            actors.add(match[1]!);
          }
        }
      }
    };
    scan(path.join(import.meta.dirname, '../../src'));
    actors.add(ENV_AGENT_TOKEN_NAME);
    actors.add('github-webhook');
    expect(actors.size).toBeGreaterThan(5);
    for (const actor of actors) expect(RESERVED_ACTOR_NAMES.has(actor), actor).toBe(true);
  });

  it('revoke rejects an argument that is an id and a name', async () => {
    const fresh = makeTempDir('slipway-token-ambiguous-');
    const env = { SLIPWAY_DATA_DIR: fresh };
    try {
      const created = await runCli(
        ['token', 'create', '--name', 'deploy-bot', '--role', 'read'],
        env,
      );
      expect(created.code, created.stderr).toBe(0);
      const { id } = readOnly(fresh, (sqlite) =>
        sqlite.prepare("SELECT id FROM api_tokens WHERE name = 'deploy-bot'").get(),
      ) as { id: number };
      // A token named with the first token's id, written directly so that the test does not
      // depend on whether `token create` accepts names made only of digits.
      const sqlite = new BetterSqlite3(dbFile(fresh));
      const digitsId = sqlite
        .prepare(
          `INSERT INTO api_tokens (name, role, token_hash, prefix, created_at)
           VALUES (?, 'read', 'hash-of-digits-token', 'slw_abcd', '2024-01-01T00:00:00.000Z')`,
        )
        .run(String(id)).lastInsertRowid;
      sqlite.close();
      const active = () =>
        readOnly(fresh, (db) =>
          db.prepare('SELECT name FROM api_tokens WHERE revoked_at IS NULL ORDER BY id').all(),
        );

      const ambiguous = await runCli(['token', 'revoke', String(id)], env);
      expect(ambiguous.code).toBe(2);
      expect(ambiguous.stdout).toBe('');
      expect(ambiguous.stderr).toContain('nothing was revoked');
      expect(ambiguous.stderr).toContain(`id ${id}, named "deploy-bot" (active)`);
      expect(ambiguous.stderr).toContain(`id ${digitsId}, named "${id}" (active)`);
      expect(ambiguous.stderr).toContain(`slipway token revoke --id ${id}`);
      expect(ambiguous.stderr).toContain(`slipway token revoke --name ${id}`);
      expect(active()).toEqual([{ name: 'deploy-bot' }, { name: String(id) }]);

      const byName = await runCli(['token', 'revoke', '--name', String(id)], env);
      expect(byName.code, byName.stderr).toBe(0);
      expect(byName.stdout).toBe(
        `revoked token "${id}" (id ${digitsId}); running API processes reject it from now on\n`,
      );
      expect(active()).toEqual([{ name: 'deploy-bot' }]);

      const byId = await runCli(['token', 'revoke', '--id', String(id)], env);
      expect(byId.code, byId.stderr).toBe(0);
      expect(byId.stdout).toBe(
        `revoked token "deploy-bot" (id ${id}); running API processes reject it from now on\n`,
      );
      expect(active()).toEqual([]);

      const again = await runCli(['token', 'revoke', '--id', String(id)], env);
      expect(again.code).toBe(1);
      expect(again.stderr).toContain(`token "deploy-bot" (id ${id}) is already revoked`);
      const both = await runCli(['token', 'revoke', '--id', '1', '--name', 'deploy-bot'], env);
      expect(both.code).toBe(2);
      expect(both.stderr).toContain(
        "option '--id <id>' cannot be used with option '--name <name>'",
      );
      const none = await runCli(['token', 'revoke'], env);
      expect(none.code).toBe(2);
      expect(none.stderr).toContain('give exactly one of NAME-OR-ID, --id ID or --name NAME');
    } finally {
      fs.rmSync(fresh, { recursive: true, force: true });
    }
  });
});
