/** Errors of opening the database name the file and what to check. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { explainOpenError, openStore } from '../../src/store/database.js';
import { childEnv, CLI_PATH, ensureBuilt, runCli } from '../support/cli.js';
import { makeTempDir } from '../support/server.js';

/** The user nobody, whom file permissions bind when the tests run as root. */
const NOBODY = 65534;

/**
 * Runs `slipway <args>` on a data directory whose database file is read-only. As root, which
 * ignores file modes, the command runs as the user nobody, who owns the directory.
 */
function runOnReadOnlyDatabase(args: string[]): {
  code: number | null;
  stderr: string;
  db: string;
} {
  const dataDir = makeTempDir('slipway-read-only-db-');
  const db = path.join(dataDir, 'state', 'orchestration.db');
  fs.mkdirSync(path.dirname(db), { mode: 0o700 });
  new BetterSqlite3(db).close();
  fs.chmodSync(db, 0o400);
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    for (const file of [dataDir, path.dirname(db), db]) fs.chownSync(file, NOBODY, NOBODY);
  }
  const result = spawnSync(process.execPath, [CLI_PATH, ...args], {
    env: childEnv({ SLIPWAY_DATA_DIR: dataDir, API_PORT: '0', HOME: dataDir }),
    encoding: 'utf8',
    timeout: 20_000,
    ...(asRoot ? { uid: NOBODY, gid: NOBODY } : {}),
  });
  return { code: result.status, stderr: result.stderr, db };
}

/** Writes a text file longer than SQLite's 100-byte header, which SQLite rejects as no database. */
function writeNonDatabase(): string {
  const file = path.join(makeTempDir('slipway-open-errors-'), 'orchestration.db');
  fs.writeFileSync(file, 'these are notes, not a database\n'.repeat(20), { mode: 0o600 });
  return file;
}

describe('database open errors', () => {
  it('names the file that is not a database', async () => {
    const file = writeNonDatabase();

    const error = await openStore(file).then(
      () => undefined,
      (thrown: unknown) => thrown as Error & { code: string },
    );

    expect(error).toBeDefined();
    expect(error!.code).toBe('SQLITE_NOTADB');
    expect(error!.message).toBe(
      `could not open the database ${file}: file is not a database (SQLITE_NOTADB); ` +
        'the file is not a SQLite database; move it aside or point ORCHESTRATION_DB_PATH elsewhere',
    );
    expect(error!.cause).toBeInstanceOf(BetterSqlite3.SqliteError);
    // The file is left as it was.
    expect(fs.readFileSync(file, 'utf8')).toBe('these are notes, not a database\n'.repeat(20));
  });

  it('tells the CLI user what to check', { timeout: 60_000 }, async () => {
    await ensureBuilt();
    const file = writeNonDatabase();

    const result = await runCli(['init-db'], {
      SLIPWAY_DATA_DIR: path.dirname(file),
      ORCHESTRATION_DB_PATH: file,
    });

    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`slipway: could not open the database ${file}`);
    expect(result.stderr).toContain('(SQLITE_NOTADB)');
  });

  it('adds the checks for a full or failing disk', () => {
    const dbPath = '/var/lib/slipway/state/orchestration.db';
    const ioError = new BetterSqlite3.SqliteError('disk I/O error', 'SQLITE_IOERR_SHMSIZE');
    const full = new BetterSqlite3.SqliteError('database or disk is full', 'SQLITE_FULL');
    const readOnly = new BetterSqlite3.SqliteError(
      'attempt to write a readonly database',
      'SQLITE_READONLY',
    );

    expect((explainOpenError(ioError, dbPath) as Error).message).toBe(
      `could not open the database ${dbPath}: disk I/O error (SQLITE_IOERR_SHMSIZE); ` +
        'check that the file system of /var/lib/slipway/state has free space ' +
        '(df -h /var/lib/slipway/state) and no errors',
    );
    expect((explainOpenError(full, dbPath) as Error).message).toContain(
      'free space on the file system of /var/lib/slipway/state',
    );
    expect((explainOpenError(readOnly, dbPath) as Error).message).toContain(
      'check that this user may write /var/lib/slipway/state and the files in it',
    );
  });

  it('leaves other errors alone', () => {
    const busy = new BetterSqlite3.SqliteError('database is locked', 'SQLITE_BUSY');
    const missing = Object.assign(new Error('no such file'), { code: 'ENOENT' });

    expect(explainOpenError(busy, '/tmp/x.db')).toBe(busy);
    expect(explainOpenError(missing, '/tmp/x.db')).toBe(missing);
  });

  it('explains a database file it may not write', () => {
    const dbPath = '/var/lib/slipway/state/orchestration.db';
    const denied = Object.assign(new Error(`EACCES: permission denied, open '${dbPath}'`), {
      code: 'EACCES',
    });

    const explained = explainOpenError(denied, dbPath) as Error & { code: string };

    expect(explained.message).toBe(
      `could not open the database ${dbPath} for writing: permission denied (EACCES); ` +
        'check that this user may write the file and /var/lib/slipway/state, or point ' +
        'ORCHESTRATION_DB_PATH at a file it may write',
    );
    expect(explained.code).toBe('EACCES');
    expect(explained.cause).toBe(denied);
  });

  it('names the read-only file in init-db', { timeout: 60_000 }, async () => {
    await ensureBuilt();

    const result = runOnReadOnlyDatabase(['init-db']);

    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      `slipway: could not open the database ${result.db} for writing: permission denied ` +
        `(EACCES); check that this user may write the file and ${path.dirname(result.db)}, ` +
        'or point ORCHESTRATION_DB_PATH at a file it may write\n',
    );
  });

  it('names the variable when serve starts', { timeout: 60_000 }, async () => {
    await ensureBuilt();

    const result = runOnReadOnlyDatabase(['serve']);

    expect(result.code).toBe(2);
    expect(result.stderr).toContain(
      `slipway: configuration: ORCHESTRATION_DB_PATH: could not open the database ${result.db} ` +
        'for writing: permission denied (EACCES)',
    );
    expect(result.stderr).not.toContain('    at ');
  });
});
