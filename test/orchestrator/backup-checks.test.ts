import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import BetterSqlite3 from 'better-sqlite3';
import { backupDatabase, findDatabaseFileAt } from '../../src/orchestrator/backup.js';
import { ensureBuilt, runCli } from '../support/cli.js';
import { makeTempDir } from '../support/server.js';

const dbFile = (dataDir: string) => path.join(dataDir, 'state', 'orchestration.db');

/** Creates a data directory with a migrated database. */
async function initDataDir(prefix: string): Promise<string> {
  const dataDir = makeTempDir(prefix);
  const init = await runCli(['init-db'], { SLIPWAY_DATA_DIR: dataDir, LOG_LEVEL: 'warn' });
  expect(init.code, init.stderr).toBe(0);
  return dataDir;
}

describe('findDatabaseFileAt', () => {
  const dir = makeTempDir('slipway-backup-target-');
  const db = path.join(dir, 'state', 'orchestration.db');

  beforeAll(() => {
    fs.mkdirSync(path.dirname(db));
    fs.writeFileSync(db, '');
    fs.writeFileSync(`${db}-wal`, '');
    fs.symlinkSync(path.join(dir, 'state'), path.join(dir, 'state-link'));
    fs.linkSync(db, path.join(dir, 'hard-link.db'));
    fs.symlinkSync(db, path.join(dir, 'file-link.db'));
  });
  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it.each([
    ['the database', 'state/orchestration.db', db],
    ['the WAL', 'state/orchestration.db-wal', `${db}-wal`],
    ['a missing -shm', 'state/orchestration.db-shm', `${db}-shm`],
    ['a missing -journal', 'state/orchestration.db-journal', `${db}-journal`],
    ['a dot segment', 'state/../state/orchestration.db', db],
    ['a linked folder', 'state-link/orchestration.db', db],
    ['a hard link', 'hard-link.db', db],
    ['a symbolic link', 'file-link.db', db],
  ])('matches %s', (_case, target, expected) => {
    expect(findDatabaseFileAt(db, path.join(dir, target))).toBe(expected);
  });

  it.each([
    ['another file', 'state/other.db'],
    ['a missing folder', 'missing/orchestration.db'],
    ['a partial name', 'state/orchestration.db.partial'],
  ])('ignores %s', (_case, target) => {
    expect(findDatabaseFileAt(db, path.join(dir, target))).toBeNull();
  });
});

describe('slipway backup --output', { timeout: 120_000 }, () => {
  let dataDir: string;

  beforeAll(async () => {
    await ensureBuilt();
    dataDir = await initDataDir('slipway-backup-output-');
  });
  afterAll(() => {
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it.each(['', '-wal', '-shm', '-journal'])('rejects the database file%s', async (suffix) => {
    const live = dbFile(dataDir);
    const before = fs.statSync(live);
    const target = `${live}${suffix}`;
    const result = await runCli(['backup', '--output', target], { SLIPWAY_DATA_DIR: dataDir });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`--output ${target} is the database file`);
    expect(result.stderr).toContain('must not replace the database');
    expect(fs.statSync(live).ino).toBe(before.ino);
    expect(fs.existsSync(`${target}.partial`)).toBe(false);
  });
});

describe('backup without a database', { timeout: 120_000 }, () => {
  const parent = makeTempDir('slipway-backup-missing-');
  const dataDir = path.join(parent, 'typo');

  beforeAll(async () => {
    await ensureBuilt();
  });
  afterAll(() => {
    fs.rmSync(parent, { recursive: true, force: true });
  });

  it.each([[['backup']], [['run-task', 'backup']]])('%j fails', async (args) => {
    const result = await runCli(args, { SLIPWAY_DATA_DIR: dataDir, LOG_LEVEL: 'warn' });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`database ${dbFile(dataDir)} not found`);
    expect(result.stderr).toContain('SLIPWAY_DATA_DIR');
    expect(fs.existsSync(dataDir)).toBe(false);
  });
});

describe('backupDatabase', () => {
  const dir = makeTempDir('slipway-backup-partial-');

  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('removes the partial file on failure', async () => {
    const db = path.join(dir, 'source.db');
    const sqlite = new BetterSqlite3(db);
    sqlite.exec('CREATE TABLE t (x INTEGER)');
    sqlite.close();
    const target = path.join(dir, 'existing-folder');
    fs.mkdirSync(target);
    await expect(backupDatabase(db, target)).rejects.toThrow();
    expect(fs.existsSync(`${target}.partial`)).toBe(false);
  });

  it('names the target on a full disk', async () => {
    const db = path.join(dir, 'large.db');
    const sqlite = new BetterSqlite3(db);
    sqlite.exec('CREATE TABLE t (x TEXT); INSERT INTO t VALUES (randomblob(1048576));');
    sqlite.close();
    // A file system of its own, smaller than the database, so only the backup fills it.
    const mountPoint = makeTempDir('slipway-backup-full-');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mountPoint]);
    try {
      const target = path.join(mountPoint, 'copy.db');
      const failure = backupDatabase(db, target);
      await expect(failure).rejects.toThrow(
        `backup to ${target} failed: database or disk is full (SQLITE_FULL); ` +
          `free space on the file system of ${mountPoint} or choose another path`,
      );
      await expect(failure).rejects.toMatchObject({ code: 'SQLITE_FULL' });
      expect(fs.readdirSync(mountPoint)).toEqual([]);
    } finally {
      execFileSync('umount', [mountPoint]);
    }
  });

  it('writes an owner-only file', async () => {
    const db = path.join(dir, 'private.db');
    const sqlite = new BetterSqlite3(db);
    sqlite.exec('CREATE TABLE t (x INTEGER)');
    sqlite.close();
    const target = path.join(dir, 'private-backup.db');
    await backupDatabase(db, target);
    expect(fs.statSync(target).mode & 0o777).toBe(0o600);
  });
});

describe('backup into a directory', { timeout: 120_000 }, () => {
  let dataDir: string;
  const outside = makeTempDir('slipway-backup-folder-');

  beforeAll(async () => {
    await ensureBuilt();
    dataDir = await initDataDir('slipway-backup-folder-data-');
  });
  afterAll(() => {
    fs.rmSync(dataDir, { recursive: true, force: true });
    fs.rmSync(outside, { recursive: true, force: true });
  });

  it.each([
    ['an existing directory', 'existing', true],
    ['a trailing slash', 'existing/', true],
    ['a new path with a slash', 'new/', false],
  ])('writes into %s', async (_case, output, exists) => {
    const folder = path.join(outside, output);
    if (exists) fs.mkdirSync(folder, { recursive: true });
    const env = { SLIPWAY_DATA_DIR: dataDir, LOG_LEVEL: 'warn' };
    const result = await runCli(['backup', '--output', folder], env);
    expect(result.code, result.stderr).toBe(0);
    const written = JSON.parse(result.stdout.trim()).path as string;
    expect(path.dirname(written)).toBe(path.resolve(folder));
    expect(path.basename(written)).toMatch(/^slipway-\d{8}T\d{9}Z\.db$/);
    expect(fs.statSync(written).isFile()).toBe(true);
    expect(fs.existsSync(`${path.resolve(folder)}.partial`)).toBe(false);
  });

  it('restore creates owner-only folders', async () => {
    const backup = path.join(outside, 'copy.db');
    const env = { SLIPWAY_DATA_DIR: dataDir, LOG_LEVEL: 'warn' };
    const backedUp = await runCli(['backup', '--output', backup], env);
    expect(backedUp.code, backedUp.stderr).toBe(0);
    const fresh = path.join(outside, 'fresh-data');
    const restored = await runCli(['restore', backup], { ...env, SLIPWAY_DATA_DIR: fresh });
    expect(restored.code, restored.stderr).toBe(0);
    const mode = (file: string) => fs.statSync(file).mode & 0o777;
    expect(mode(fresh)).toBe(0o700);
    expect(mode(path.join(fresh, 'state'))).toBe(0o700);
    expect(mode(path.join(fresh, 'backups'))).toBe(0o700);
    expect(mode(dbFile(fresh))).toBe(0o600);
  });
});

describe('restore of a backup older than a revocation', { timeout: 120_000 }, () => {
  it('keeps the token revoked', async () => {
    await ensureBuilt();
    const dataDir = await initDataDir('slipway-restore-revoked-');
    const env = { SLIPWAY_DATA_DIR: dataDir, LOG_LEVEL: 'warn' };
    const backup = path.join(makeTempDir('slipway-restore-revoked-backup-'), 'before.db');
    const create = (name: string) =>
      runCli(['token', 'create', '--name', name, '--role', 'trigger'], env);
    expect((await create('leaked')).code).toBe(0);
    expect((await create('kept')).code).toBe(0);
    expect((await runCli(['backup', '--output', backup], env)).code).toBe(0);
    const revoked = await runCli(['token', 'revoke', 'leaked'], env);
    expect(revoked.code, revoked.stderr).toBe(0);

    const restored = await runCli(['restore', backup], env);

    expect(restored.code, restored.stderr).toBe(0);
    expect(JSON.parse(restored.stdout).revocations_kept).toEqual(['leaked']);
    const sqlite = new BetterSqlite3(dbFile(dataDir), { readonly: true });
    const tokens = sqlite
      .prepare(
        "SELECT name, revoked_at FROM api_tokens WHERE name IN ('leaked', 'kept') ORDER BY name",
      )
      .all() as Array<{ name: string; revoked_at: string | null }>;
    const audit = sqlite
      .prepare("SELECT details FROM audit_log WHERE action = 'database_restored'")
      .get() as { details: string };
    sqlite.close();
    expect(tokens[0]).toEqual({ name: 'kept', revoked_at: null });
    expect(tokens[1]!.name).toBe('leaked');
    expect(tokens[1]!.revoked_at).not.toBeNull();
    expect(JSON.parse(audit.details).revocations_kept).toEqual(['leaked']);
    // The backup itself is left as it was.
    const original = new BetterSqlite3(backup, { readonly: true });
    const inBackup = original
      .prepare("SELECT revoked_at FROM api_tokens WHERE name = 'leaked'")
      .get() as { revoked_at: string | null };
    original.close();
    expect(inBackup.revoked_at).toBeNull();
  });
});

describe('restore of an unusable backup', { timeout: 120_000 }, () => {
  let dataDir: string;
  const outside = makeTempDir('slipway-restore-undo-');
  const env = () => ({ SLIPWAY_DATA_DIR: dataDir, LOG_LEVEL: 'warn' });

  /** Backs up the data directory to `name` and runs `edit` on the copy. */
  async function editedBackup(name: string, edit: string): Promise<string> {
    const file = path.join(outside, name);
    const result = await runCli(['backup', '--output', file], env());
    expect(result.code, result.stderr).toBe(0);
    const sqlite = new BetterSqlite3(file);
    sqlite.exec(edit);
    sqlite.close();
    return file;
  }

  /** Returns the names of the data directory's state folder, which contains kept databases too. */
  const stateFiles = () => fs.readdirSync(path.dirname(dbFile(dataDir))).sort();

  beforeAll(async () => {
    await ensureBuilt();
    dataDir = await initDataDir('slipway-restore-undo-data-');
  });
  afterAll(() => {
    fs.rmSync(dataDir, { recursive: true, force: true });
    fs.rmSync(outside, { recursive: true, force: true });
  });

  it('rejects a backup from a newer version', async () => {
    const backup = await editedBackup(
      'newer.db',
      "INSERT INTO schema_migrations (name, timestamp) VALUES ('0050_future_feature', 'x')",
    );
    const inode = fs.statSync(dbFile(dataDir)).ino;
    const files = stateFiles();
    const result = await runCli(['restore', backup], env());
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('was written by a newer version of Slipway');
    expect(result.stderr).toContain('migration 0050_future_feature');
    expect(result.stderr).toContain('Nothing was changed');
    expect(fs.statSync(dbFile(dataDir)).ino).toBe(inode);
    expect(stateFiles()).toEqual(files);
    const init = await runCli(['init-db'], env());
    expect(init.code, init.stderr).toBe(0);
  });

  it('puts the previous database back', async () => {
    // The index of 0042 stays, so applying that migration again fails after the swap.
    const backup = await editedBackup(
      'failing.db',
      "DELETE FROM schema_migrations WHERE name = '0042_task_stopping'",
    );
    const inode = fs.statSync(dbFile(dataDir)).ino;
    const files = stateFiles();
    const result = await runCli(['restore', backup], env());
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('restore failed after replacing the database');
    expect(result.stderr).toContain(`the previous database was put back at ${dbFile(dataDir)}`);
    expect(result.stderr).toContain('tasks_stopping already exists');
    expect(fs.statSync(dbFile(dataDir)).ino).toBe(inode);
    expect(stateFiles()).toEqual(files);
    const init = await runCli(['init-db'], env());
    expect(init.code, init.stderr).toBe(0);
  });

  it('init-db names the newer migration', async () => {
    const sqlite = new BetterSqlite3(dbFile(dataDir));
    sqlite.exec(
      "INSERT INTO schema_migrations (name, timestamp) VALUES ('0050_future_feature', 'x')",
    );
    sqlite.close();
    const result = await runCli(['init-db'], env());
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(
      `database ${dbFile(dataDir)} was written by a newer version of Slipway`,
    );
    expect(result.stderr).toContain('migration 0050_future_feature');
    expect(result.stderr).not.toContain('corrupted migrations');
  });
});

describe('backupDatabase over a live database', () => {
  const dir = makeTempDir('slipway-backup-live-');
  const source = path.join(dir, 'source.db');
  const other = path.join(dir, 'other.db');
  let otherConnection: BetterSqlite3.Database;

  beforeAll(() => {
    const sourceConnection = new BetterSqlite3(source);
    sourceConnection.exec('CREATE TABLE jobs (id TEXT)');
    sourceConnection.close();
    // Another installation's database, open in WAL mode as a running server keeps it.
    otherConnection = new BetterSqlite3(other);
    otherConnection.pragma('journal_mode = WAL');
    otherConnection.exec("CREATE TABLE jobs (id TEXT); INSERT INTO jobs VALUES ('kept')");
  });
  afterAll(() => {
    otherConnection.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('rejects a target with a WAL file', async () => {
    const before = fs.statSync(other);
    await expect(backupDatabase(source, other)).rejects.toThrow(/is a SQLite database in WAL mode/);
    expect(fs.statSync(other).ino).toBe(before.ino);
    expect(fs.existsSync(`${other}.partial`)).toBe(false);
    expect(otherConnection.prepare('SELECT id FROM jobs').pluck().all()).toEqual(['kept']);
  });

  it('writes over a finished backup', async () => {
    const previous = path.join(dir, 'previous-backup.db');
    await backupDatabase(source, previous);
    const result = await backupDatabase(source, previous);
    expect(result.path).toBe(previous);
  });
});
