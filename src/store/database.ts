/**
 * Opens the SQLite state store: one better-sqlite3 connection per process behind Kysely,
 * migrated to the latest schema, with writes grouped into shared commits (see WriteQueue).
 */
import fs from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, Migrator } from 'kysely';
import type { Logger } from '../log.js';
import { Checkpointer, MAIN_AUTOCHECKPOINT_PAGES } from './checkpointer.js';
import { CachingSqliteDialect } from './driver.js';
import {
  explainMigrationError,
  findUnknownMigrations,
  NewerDatabaseError,
} from './migration-check.js';
import { migrationProvider } from './migrations/index.js';
import type { Database } from './schema.js';
import { WalIndexHeader, type WalUse } from './wal-index.js';
import { WalSync } from './wal-sync.js';
import { isBusyError, WriteQueue, type WriteFailure, type WriteWork } from './write-queue.js';

export const BUSY_TIMEOUT_MS = 15_000;

export interface StoreOptions {
  logger?: Logger;
  /** Apply pending migrations when opening (default true). */
  migrate?: boolean;
  /** Milliseconds a write may wait for others to share its commit (default 0). */
  commitDelayMs?: number;
  readonly?: boolean;
  /**
   * Checkpoint the WAL on a worker thread instead of inside the COMMIT that fills it (see
   * Checkpointer). Meant for processes that run roles, because a short command does not need
   * the thread.
   */
  backgroundCheckpoints?: boolean;
}

export class Store {
  readonly #writes: WriteQueue;
  readonly #checkpointer: Checkpointer | undefined;
  #reader: Reader | undefined;
  #closed = false;
  #readersOpened = 0;
  /** Null when the database has no WAL index. */
  #walIndex: WalIndexHeader | null | undefined;

  constructor(
    readonly sqlite: BetterSqlite3.Database,
    readonly db: Kysely<Database>,
    readonly path: string,
    options: StoreOptions & { walSync?: WalSync; checkpointer?: Checkpointer },
  ) {
    this.#writes = new WriteQueue(db, sqlite, {
      ...options,
      dbPath: options.readonly === true ? undefined : path,
    });
    this.#checkpointer = options.checkpointer;
    if (options.readonly === true) this.#reader = new Reader(sqlite);
  }

  /**
   * Runs `work` on a second connection that only reads, inside one read transaction, so the
   * rows it reads come from one committed state. It does not read from or wait for a write
   * transaction that the main connection has open. `work` is synchronous, so use prepared
   * queries (see prepared.ts).
   */
  read<T>(work: (sqlite: BetterSqlite3.Database) => T): T {
    const reader = this.#openReader();
    try {
      return reader.run(work);
    } finally {
      // A reader whose transaction could not end would serve its old snapshot forever.
      if (reader.stuck && reader.sqlite !== this.sqlite) this.#reader = undefined;
    }
  }

  /**
   * Returns a number that changes whenever any connection, in this process or another,
   * commits a change. Equal values mean nothing was committed in between, so a result read at
   * the first is still current. It comes from the WAL index header (see WalIndexHeader), or
   * from SQLite's data_version on the read connection for a database without one.
   */
  dataVersion(): number {
    const reader = this.#openReader();
    // Opened after a connection, which keeps the WAL index from being deleted.
    if (this.#walIndex === undefined) this.#walIndex = WalIndexHeader.open(this.path) ?? null;
    if (this.#walIndex !== null) return this.#walIndex.changeCount();
    const version = reader.dataVersion();
    // Each connection counts from its own start, so a replaced reader could repeat a number
    // that the one before it returned. Adding the count of readers opened keeps them apart.
    return this.#readersOpened * 2 ** 32 + version;
  }

  /**
   * Returns how much of the write-ahead log is in use, or undefined for a database without
   * one, while a commit rewrites its index, or when its index cannot be read.
   */
  walUse(): WalUse | undefined {
    if (this.#closed) return undefined;
    try {
      // The main connection is open while the store is, which keeps the WAL index in place.
      if (this.#walIndex === undefined) this.#walIndex = WalIndexHeader.open(this.path) ?? null;
      return this.#walIndex?.use();
    } catch {
      // A report of the WAL's size is not worth failing a health check for.
      return undefined;
    }
  }

  /**
   * Opens the read connection on first use. After close it throws instead, because a read
   * from a timer or request that outlives the store would otherwise open a connection that
   * nothing closes.
   */
  #openReader(): Reader {
    if (this.#closed) throw new Error(`the store for ${this.path} is closed`);
    if (this.#reader === undefined) {
      this.#reader = new Reader(openReader(this.path));
      this.#readersOpened += 1;
    }
    return this.#reader;
  }

  /**
   * Runs `work` inside a write transaction and resolves once it is committed and synced.
   * Writes that arrive together share one commit; each runs in its own savepoint, so one
   * that throws rolls back alone and rejects only its own caller. `work` must only touch the
   * database: awaiting anything else would hold every other write.
   */
  write<T>(work: WriteWork<T>): Promise<T> {
    return this.#writes.enqueue(work);
  }

  /** The last failure of the writes on storage (see WriteQueue.lastFailure), until it clears. */
  get lastWriteFailure(): WriteFailure | undefined {
    return this.#writes.lastFailure;
  }

  /** Waits for queued writes to commit, then closes the connection. */
  async close(): Promise<void> {
    await this.#writes.drain();
    this.#closed = true;
    if (this.#reader !== undefined && this.#reader.sqlite !== this.sqlite) {
      this.#reader.sqlite.close();
    }
    this.#reader = undefined;
    this.#walIndex?.close();
    // Closed first, so that the main connection is the last one and checkpoints on close.
    await this.#checkpointer?.close();
    await this.db.destroy();
  }
}

class Reader {
  readonly #begin: BetterSqlite3.Statement;
  readonly #commit: BetterSqlite3.Statement;
  readonly #dataVersion: BetterSqlite3.Statement;

  constructor(readonly sqlite: BetterSqlite3.Database) {
    this.#begin = sqlite.prepare('BEGIN');
    this.#commit = sqlite.prepare('COMMIT');
    this.#dataVersion = sqlite.prepare('PRAGMA data_version').pluck();
  }

  dataVersion(): number {
    return this.#dataVersion.get() as number;
  }

  /** Set when the read transaction could not end; the store then opens a new reader. */
  stuck = false;

  run<T>(work: (sqlite: BetterSqlite3.Database) => T): T {
    if (this.sqlite.inTransaction) return work(this.sqlite);
    this.#begin.run();
    let value: T;
    try {
      value = work(this.sqlite);
    } finally {
      this.#end();
    }
    return value;
  }

  /**
   * Ends the read transaction. better-sqlite3 refuses COMMIT, ROLLBACK and close while an
   * iterator that `work` left unfinished is still open, so such a connection is dropped.
   * NOTE: a dropped connection stays open until its iterator finishes or is collected.
   */
  #end(): void {
    try {
      this.#commit.run();
    } catch (error) {
      this.stuck = true;
      throw new Error(
        'could not end the read transaction; a read must finish or return() every iterator',
        { cause: error },
      );
    }
  }
}

function openReader(dbPath: string): BetterSqlite3.Database {
  const reader = new BetterSqlite3(dbPath, { fileMustExist: true, timeout: BUSY_TIMEOUT_MS });
  reader.pragma('query_only = ON');
  reader.pragma('cache_size = -16000');
  return reader;
}

/** Milliseconds between two tries to switch a database to WAL. */
const WAL_SWITCH_RETRY_MS = 20;

/**
 * Switches the database to WAL, trying again while SQLite returns SQLITE_BUSY, until
 * BUSY_TIMEOUT_MS. With two API processes starting on a new database at the same moment, the
 * switch failed with SQLITE_BUSY despite the busy timeout (test/store/multi-process.test.ts,
 * about 1 run in 10 under load).
 * NOTE: which lock SQLite does not wait for there was not traced.
 */
function enableWal(sqlite: BetterSqlite3.Database): void {
  const deadline = Date.now() + BUSY_TIMEOUT_MS;
  for (;;) {
    try {
      sqlite.pragma('journal_mode = WAL');
      return;
    } catch (error) {
      if (!isBusyError(error) || Date.now() >= deadline) throw error;
      // A synchronous wait, because opening a store is synchronous up to here.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, WAL_SWITCH_RETRY_MS);
    }
  }
}

export function openSqlite(dbPath: string, readonly = false): BetterSqlite3.Database {
  // Readable only by the owner, as prepareDirectories makes it, because it contains the whole state.
  if (!readonly) {
    fs.mkdirSync(path.dirname(dbPath), { recursive: true, mode: 0o700 });
    // SQLite would create the file with mode 0644 (under the usual umask 022), and it gives the
    // -wal and -shm files the mode of the database. The folder may be shared when
    // ORCHESTRATION_DB_PATH points outside SLIPWAY_DATA_DIR, so a new database is made
    // owner-only here. An existing file keeps the mode its operator gave it.
    fs.closeSync(fs.openSync(dbPath, fs.constants.O_CREAT | fs.constants.O_RDWR, 0o600));
  }
  const sqlite = new BetterSqlite3(dbPath, { readonly, timeout: BUSY_TIMEOUT_MS });
  if (!readonly) enableWal(sqlite);
  // NORMAL leaves the WAL fsync out of COMMIT; WalSync runs it off the main thread before any
  // commit is reported, so a commit that was reported survives a power loss, as under FULL. Read-only
  // connections write nothing and keep FULL.
  sqlite.pragma(readonly ? 'synchronous = FULL' : 'synchronous = NORMAL');
  sqlite.pragma('foreign_keys = ON');
  sqlite.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
  sqlite.pragma('cache_size = -32000');
  sqlite.pragma('temp_store = MEMORY');
  return sqlite;
}

/**
 * Applies pending migrations. They run in one IMMEDIATE transaction (see
 * TransactionalDdlAdapter), so a second process starting at the same time waits for the
 * first and then finds them applied.
 */
export async function migrateToLatest(db: Kysely<Database>, logger?: Logger): Promise<string[]> {
  const applied = await runMigrations(db);
  for (const name of applied) logger?.info({ migration: name }, 'migration applied');
  return applied;
}

async function runMigrations(db: Kysely<Database>): Promise<string[]> {
  const migrator = new Migrator({
    db,
    provider: migrationProvider,
    migrationTableName: 'schema_migrations',
    migrationLockTableName: 'schema_migrations_lock',
    allowUnorderedMigrations: true,
  });
  const { error, results } = await migrator.migrateToLatest();
  const applied = (results ?? [])
    .filter((result) => result.status === 'Success')
    .map((result) => result.migrationName);
  const failed = results?.find((result) => result.status === 'Error');
  if (error !== undefined) {
    const cause = error instanceof Error ? error.message : String(error);
    throw new Error(`migration ${failed?.migrationName ?? '(unknown)'} failed: ${cause}`, {
      cause: error,
    });
  }
  return applied;
}

/** Advice for each SQLite primary code that opening the database can fail with. */
const OPEN_ERROR_CHECKS: Record<string, (folder: string) => string> = {
  SQLITE_FULL: (folder) => `free space on the file system of ${folder} (df -h ${folder})`,
  SQLITE_IOERR: (folder) =>
    `check that the file system of ${folder} has free space (df -h ${folder}) and no errors`,
  SQLITE_CANTOPEN: (folder) => `check that this user may create and write files in ${folder}`,
  SQLITE_READONLY: (folder) => `check that this user may write ${folder} and the files in it`,
  SQLITE_PERM: (folder) => `check that this user may write ${folder} and the files in it`,
  SQLITE_CORRUPT: () =>
    'the file is damaged; move it aside and restore a backup (slipway restore FILE)',
  SQLITE_NOTADB: () =>
    'the file is not a SQLite database; move it aside or point ORCHESTRATION_DB_PATH elsewhere',
};

/**
 * File system errors of the owner-only create in openSqlite, which opens the database file for
 * writing before SQLite does. Node's message ("EACCES: permission denied, open ...") names what
 * failed but not what to change.
 */
const FILE_ACCESS_ERRORS: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
};

/**
 * Returns an error that names the database file and what to check, for a storage error that
 * SQLite raised while the store opened, or a file system error that kept the file from being
 * opened for writing. SQLite's own message ("disk I/O error") names neither. Other errors are
 * returned unchanged.
 */
export function explainOpenError(error: unknown, dbPath: string): unknown {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && FILE_ACCESS_ERRORS[code] !== undefined) {
    const explained = new Error(
      `could not open the database ${dbPath} for writing: ${FILE_ACCESS_ERRORS[code]} (${code}); ` +
        `check that this user may write the file and ${path.dirname(dbPath)}, or point ` +
        'ORCHESTRATION_DB_PATH at a file it may write',
      { cause: error },
    );
    return Object.assign(explained, { code });
  }
  if (typeof code !== 'string' || !code.startsWith('SQLITE_')) return error;
  const check = OPEN_ERROR_CHECKS[code.split('_').slice(0, 2).join('_')];
  if (check === undefined) return error;
  const message = error instanceof Error ? error.message : String(error);
  const explained = new Error(
    `could not open the database ${dbPath}: ${message} (${code}); ${check(path.dirname(dbPath))}`,
    { cause: error },
  );
  return Object.assign(explained, { code });
}

export async function openStore(dbPath: string, options: StoreOptions = {}): Promise<Store> {
  try {
    return await openCheckedStore(dbPath, options);
  } catch (error) {
    throw explainOpenError(error, dbPath);
  }
}

async function openCheckedStore(dbPath: string, options: StoreOptions): Promise<Store> {
  const sqlite = openSqlite(dbPath, options.readonly);
  const inWal = sqlite.pragma('journal_mode', { simple: true }) === 'wal';
  // Without a WAL (a file system that cannot hold one) COMMIT must sync by itself.
  if (!inWal) sqlite.pragma('synchronous = FULL');
  const walSync = options.readonly === true || !inWal ? undefined : new WalSync(dbPath);
  let checkpointer: Checkpointer | undefined;
  if (walSync !== undefined && options.backgroundCheckpoints === true) {
    checkpointer = new Checkpointer(dbPath, options.logger);
    sqlite.pragma(`wal_autocheckpoint = ${MAIN_AUTOCHECKPOINT_PAGES}`);
  }
  const db = new Kysely<Database>({
    dialect: new CachingSqliteDialect(sqlite, walSync, checkpointer),
  });
  if (options.migrate !== false && !options.readonly) {
    try {
      const unknown = findUnknownMigrations(sqlite);
      if (unknown.length > 0) throw new NewerDatabaseError(dbPath, unknown);
      await migrateToLatest(db, options.logger);
    } catch (error) {
      await checkpointer?.close();
      // Closed here, because a caller that puts another file in place must not share it. Kysely
      // closes nothing when it never ran a query, so the connection is closed directly too.
      await db.destroy();
      if (sqlite.open) sqlite.close();
      walSync?.close();
      throw explainMigrationError(error, dbPath);
    }
    await walSync?.sync();
  }
  return new Store(sqlite, db, dbPath, { ...options, walSync, checkpointer });
}
