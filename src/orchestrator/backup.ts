/**
 * Online backups with SQLite's backup API (better-sqlite3 `db.backup`), checked with
 * `PRAGMA integrity_check`, and restore of a backup in place of the database.
 *
 * A restore must not run while a process has the database open, because that process
 * would keep writing to the replaced file's pages. Long-running roles register in a
 * process folder next to the database (see running-processes.ts); a restore is rejected while
 * any of them is alive.
 */
import fs from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import type { AppContext } from '../app/context.js';
import { appendAudit, type AuditContext } from '../store/audit.js';
import { BUSY_TIMEOUT_MS } from '../store/database.js';
import { describeMigrations, findUnknownMigrations } from '../store/migration-check.js';
import { findRunningProcesses } from '../store/running-processes.js';

export interface BackupResult {
  path: string;
  bytes: number;
  durationMs: number;
}

const BACKUP_PREFIX = 'slipway-';
const BACKUP_SUFFIX = '.db';

/** Suffixes of the files SQLite keeps next to a database: the WAL, its index and the rollback journal. */
const DATABASE_FILE_SUFFIXES = ['', '-wal', '-shm', '-journal'];

/**
 * Returns the absolute path of `file` with symbolic links resolved in its folders. The file
 * itself may be missing, and so may its nearest folders.
 */
function realPathOf(file: string): string {
  const absolute = path.resolve(file);
  const parent = path.dirname(absolute);
  if (parent === absolute) return absolute;
  let realParent: string;
  try {
    realParent = fs.realpathSync(parent);
  } catch {
    realParent = realPathOf(parent);
  }
  return path.join(realParent, path.basename(absolute));
}

function statOrNull(file: string): fs.Stats | null {
  try {
    return fs.statSync(file);
  } catch {
    return null;
  }
}

/**
 * Returns the file of the database at `dbPath` (the database, or its -wal, -shm or -journal
 * file) that `target` names, or null. Paths are compared with symbolic links resolved in their
 * folders. An existing `target` also matches a file with the same device and inode, which
 * catches hard links and symbolic links to the file itself.
 */
export function findDatabaseFileAt(dbPath: string, target: string): string | null {
  const targetPath = realPathOf(target);
  const targetStat = statOrNull(target);
  // When dbPath is a symbolic link, SQLite may name the -wal and -shm files after its target.
  const bases = new Set([realPathOf(dbPath)]);
  const realDb = statOrNull(dbPath) === null ? null : fs.realpathSync(dbPath);
  if (realDb !== null) bases.add(realDb);
  for (const suffix of DATABASE_FILE_SUFFIXES) {
    for (const base of bases) {
      const file = `${base}${suffix}`;
      if (file === targetPath) return file;
      const stat = targetStat === null ? null : statOrNull(file);
      if (stat !== null && stat.dev === targetStat!.dev && stat.ino === targetStat!.ino) {
        return file;
      }
    }
  }
  return null;
}

/**
 * Describes `file` when it is a database that something may still write to: the database of
 * another Slipway installation whose processes run, or any SQLite database with a WAL file
 * next to it. Returns undefined for a missing file, a finished backup or another file.
 */
function describeLiveDatabase(file: string): string | undefined {
  const running = findRunningProcesses(file);
  if (running.length > 0) {
    const list = running.map(
      (entry) => `${entry.roles.join('+')} (pid ${entry.pid} on ${entry.hostname})`,
    );
    return `the database of running Slipway processes: ${list.join(', ')}`;
  }
  if (fs.existsSync(`${file}-wal`)) {
    return `a SQLite database in WAL mode (${file}-wal exists), which a process may have open`;
  }
  return undefined;
}

/** Runs `PRAGMA integrity_check` on `file` and returns its result: `ok` when it is sound. */
export function checkIntegrity(file: string): string {
  const db = new BetterSqlite3(file, { readonly: true, fileMustExist: true });
  try {
    const rows = db.pragma('integrity_check') as Array<{ integrity_check: string }>;
    const result = rows.map((row) => row.integrity_check).join('; ');
    return result;
  } finally {
    db.close();
  }
}

/**
 * Copies the database to `target` while other connections keep writing: the copy is the
 * database as of one commit. Writes to the source from other processes between backup
 * steps make SQLite restart the copy, so after the first step everything is copied in one.
 */
export async function backupDatabase(dbPath: string, target: string): Promise<BackupResult> {
  const started = Date.now();
  const clash = findDatabaseFileAt(dbPath, target);
  if (clash !== null) {
    throw new Error(
      `backup target ${target} is the database file ${clash}, so choose another path`,
    );
  }
  const live = describeLiveDatabase(target);
  if (live !== undefined) {
    throw new Error(
      `backup target ${target} is ${live}. Replacing it would leave its users writing to the ` +
        'replaced file and lose those writes, so choose another path',
    );
  }
  // Owner-only, as prepareDirectories creates folders, because a backup contains the whole state.
  fs.mkdirSync(path.dirname(target), { recursive: true, mode: 0o700 });
  const partial = `${target}.partial`;
  fs.rmSync(partial, { force: true });
  try {
    // Created owner-only before SQLite writes to it, so no one else can read it at any time.
    fs.writeFileSync(partial, '', { mode: 0o600, flag: 'wx' });
    await copyDatabase(dbPath, partial);
    const integrity = checkIntegrity(partial);
    if (integrity !== 'ok') {
      throw new Error(`backup ${target} failed its integrity check: ${integrity}`);
    }
    fs.renameSync(partial, target);
  } catch (error) {
    fs.rmSync(partial, { force: true });
    throw describeFullDisk(error, target);
  }
  return { path: target, bytes: fs.statSync(target).size, durationMs: Date.now() - started };
}

/**
 * Names the target in a full-disk error of a backup, keeping its code. SQLite's own message,
 * "database or disk is full", reads as if the database that is copied were full.
 */
function describeFullDisk(error: unknown, target: string): unknown {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (!(error instanceof Error) || (code !== 'SQLITE_FULL' && code !== 'ENOSPC')) return error;
  const described: Error & { code?: string } = new Error(
    `backup to ${target} failed: ${error.message} (${code}); free space on the file system ` +
      `of ${path.dirname(target)} or choose another path`,
    { cause: error },
  );
  described.code = code;
  return described;
}

/** Copies the database at `dbPath` to the new file `target` and switches the copy out of WAL. */
async function copyDatabase(dbPath: string, target: string): Promise<void> {
  // A connection of its own: the store's connection may be inside a write transaction.
  const source = new BetterSqlite3(dbPath, { fileMustExist: true, timeout: BUSY_TIMEOUT_MS });
  try {
    await source.backup(target, { progress: ({ totalPages }) => Math.max(totalPages, 100) });
  } finally {
    source.close();
  }
  // The copy inherits WAL mode from the source; a lone file is easier to move and restore.
  const copy = new BetterSqlite3(target, { fileMustExist: true });
  try {
    copy.pragma('journal_mode = DELETE');
  } finally {
    copy.close();
  }
}

/** Builds the file name of a scheduled backup, which sorts by time: `slipway-<UTC time>.db`. */
export function scheduledBackupName(at: Date = new Date()): string {
  return `${BACKUP_PREFIX}${at.toISOString().replace(/[-:.]/g, '')}${BACKUP_SUFFIX}`;
}

/** Writes a backup into ORCHESTRATION_BACKUP_PATH and removes all but the newest BACKUP_KEEP. */
export async function runScheduledBackup(
  context: AppContext,
  audit: AuditContext,
): Promise<Record<string, unknown>> {
  const target = path.join(context.config.backupPath, scheduledBackupName());
  const result = await backupDatabase(context.store.path, target);
  const removed = pruneBackups(context.config.backupPath, context.config.retention.backupsKept);
  await context.store.write((trx) =>
    appendAudit(trx, audit, {
      action: 'backup_created',
      details: { path: result.path, bytes: result.bytes, pruned: removed },
    }),
  );
  return { path: result.path, bytes: result.bytes, pruned: removed.length };
}

export function pruneBackups(dir: string, keep: number): string[] {
  const backups = fs
    .readdirSync(dir)
    .filter((name) => name.startsWith(BACKUP_PREFIX) && name.endsWith(BACKUP_SUFFIX))
    .sort();
  const old = backups.slice(0, Math.max(0, backups.length - keep));
  for (const name of old) fs.rmSync(path.join(dir, name), { force: true });
  return old.map((name) => path.join(dir, name));
}

export class RestoreRejected extends Error {
  override name = 'RestoreRejected';
}

/**
 * Returns the backup's migrations that this version does not have, or undefined when the file
 * has no schema_migrations table: an empty file or another program's database, which the
 * restore would replace the state with.
 */
function readUnknownMigrations(file: string): string[] | undefined {
  const db = new BetterSqlite3(file, { readonly: true, fileMustExist: true });
  try {
    const table = db
      .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
      .get();
    return table === undefined ? undefined : findUnknownMigrations(db);
  } finally {
    db.close();
  }
}

/**
 * Replaces the database at `dbPath` with the backup `source`. Throws RestoreRejected, before
 * it changes anything, while a registered process uses the database, when the backup fails its
 * integrity check, when it has no Slipway schema, and when a newer version of Slipway wrote
 * it. The replaced database is kept next to it as `<name>.before-restore-<time>`, so
 * undoRestore can put it back.
 */
export function restoreDatabase(
  dbPath: string,
  source: string,
): { previous: string | null; revocationsKept: string[] } {
  if (!fs.existsSync(source)) throw new RestoreRejected(`backup ${source} does not exist`);

  const running = findRunningProcesses(dbPath);
  if (running.length > 0) {
    const list = running.map(
      (entry) => `${entry.roles.join('+')} (pid ${entry.pid} on ${entry.hostname})`,
    );
    throw new RestoreRejected(
      `database ${dbPath} is in use by ${list.join(', ')}; stop those processes, then restore ` +
        `(if one of them is gone, delete its entry: ${running.map((entry) => entry.file).join(', ')})`,
    );
  }
  let integrity: string;
  try {
    integrity = checkIntegrity(source);
  } catch (error) {
    throw new RestoreRejected(
      `backup ${source} is not a readable SQLite database: ${(error as Error).message}`,
    );
  }
  if (integrity !== 'ok') {
    throw new RestoreRejected(`backup ${source} failed its integrity check: ${integrity}`);
  }
  const unknown = readUnknownMigrations(source);
  if (unknown === undefined) {
    throw new RestoreRejected(
      `backup ${source} is not a Slipway database: it has no schema_migrations table. Nothing ` +
        'was changed. Restore a file made by slipway backup or by the scheduled backup',
    );
  }
  if (unknown.length > 0) {
    throw new RestoreRejected(
      `backup ${source} was written by a newer version of Slipway: it lists ` +
        `${describeMigrations(unknown)}, which this version does not have. Nothing was ` +
        'changed. Restore it with that version of Slipway or a newer one',
    );
  }

  // Owner-only, as prepareDirectories creates folders, because the database contains the whole state.
  fs.mkdirSync(path.dirname(dbPath), { recursive: true, mode: 0o700 });
  const staged = `${dbPath}.restoring`;
  let previous: string | null = null;
  let revocationsKept: string[] = [];
  try {
    stageCopy(source, staged);
    if (fs.existsSync(dbPath)) revocationsKept = keepRevocations(dbPath, staged);
    if (fs.existsSync(dbPath)) {
      const beforeRestore = `${dbPath}.before-restore-${new Date().toISOString().replace(/[-:.]/g, '')}`;
      // Fold the WAL into the old file first, so the kept copy is complete on its own.
      const old = new BetterSqlite3(dbPath);
      old.pragma('wal_checkpoint(TRUNCATE)');
      old.close();
      fs.renameSync(dbPath, beforeRestore);
      previous = beforeRestore;
    }
    for (const suffix of ['-wal', '-shm']) fs.rmSync(`${dbPath}${suffix}`, { force: true });
    fs.renameSync(staged, dbPath);
  } catch (error) {
    fs.rmSync(staged, { force: true });
    if (previous !== null && !fs.existsSync(dbPath)) fs.renameSync(previous, dbPath);
    throw error;
  }
  return { previous, revocationsKept };
}

/**
 * Revokes in the staged copy each token that the database it replaces has revoked, so that a
 * backup made before a leaked token was revoked does not bring the token back. Returns the
 * names of those tokens. A database it replaces that cannot be read, as when the restore
 * repairs a damaged one, keeps nothing.
 */
function keepRevocations(dbPath: string, staged: string): string[] {
  let revoked: Array<{ token_hash: string; revoked_at: string }>;
  try {
    const current = new BetterSqlite3(dbPath, { readonly: true, fileMustExist: true });
    try {
      revoked = current
        .prepare('SELECT token_hash, revoked_at FROM api_tokens WHERE revoked_at IS NOT NULL')
        .all() as Array<{ token_hash: string; revoked_at: string }>;
    } finally {
      current.close();
    }
  } catch {
    return [];
  }
  if (revoked.length === 0) return [];
  const copy = new BetterSqlite3(staged, { fileMustExist: true });
  try {
    const revoke = copy.prepare(
      'UPDATE api_tokens SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL RETURNING name',
    );
    return copy.transaction(() =>
      revoked.flatMap((row) => {
        const token = revoke.get(row.revoked_at, row.token_hash) as { name: string } | undefined;
        return token === undefined ? [] : [token.name];
      }),
    )();
  } finally {
    copy.close();
  }
}

/** Copies `source` to `staged`, readable only by its owner, and syncs it to disk. */
function stageCopy(source: string, staged: string): void {
  fs.copyFileSync(source, staged);
  fs.chmodSync(staged, 0o600);
  const handle = fs.openSync(staged, 'r+');
  try {
    fs.fsyncSync(handle);
  } finally {
    fs.closeSync(handle);
  }
}

/**
 * Undoes restoreDatabase: removes the restored database with its -wal, -shm and -journal
 * files, then moves `previous` back, or leaves no database when `previous` is null.
 */
export function undoRestore(dbPath: string, previous: string | null): void {
  for (const suffix of DATABASE_FILE_SUFFIXES) fs.rmSync(`${dbPath}${suffix}`, { force: true });
  if (previous !== null) fs.renameSync(previous, dbPath);
}
