/**
 * A Kysely driver for better-sqlite3 that keeps prepared statements and starts every
 * transaction with BEGIN IMMEDIATE.
 *
 * Kysely's own SqliteDriver prepares each statement anew and opens transactions with a
 * plain BEGIN. A deferred transaction that reads first and writes later fails at once with
 * SQLITE_BUSY when another process committed in between, and busy_timeout does not help
 * there; BEGIN IMMEDIATE takes the write lock up front, so busy_timeout applies.
 */
import type BetterSqlite3 from 'better-sqlite3';
import {
  CompiledQuery,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
  type DatabaseConnection,
  type Dialect,
  type Driver,
  type Kysely,
  type QueryResult,
} from 'kysely';
import type { Checkpointer } from './checkpointer.js';
import type { WalSync } from './wal-sync.js';
import { isBusyError } from './write-queue.js';

const STATEMENT_CACHE_SIZE = 500;

const TRANSACTION_CONTROL = /^\s*(BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE)\b/i;

class CachedConnection implements DatabaseConnection {
  readonly #statements = new Map<string, BetterSqlite3.Statement>();

  constructor(
    readonly sqlite: BetterSqlite3.Database,
    readonly walSync: WalSync | undefined,
    readonly checkpointer: Checkpointer | undefined,
  ) {}

  prepare(sqlText: string): BetterSqlite3.Statement {
    let statement = this.#statements.get(sqlText);
    if (statement === undefined) {
      statement = this.sqlite.prepare(sqlText);
      if (this.#statements.size >= STATEMENT_CACHE_SIZE) {
        const oldest = this.#statements.keys().next().value as string;
        this.#statements.delete(oldest);
      }
      this.#statements.set(sqlText, statement);
    }
    return statement;
  }

  executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    const statement = this.prepare(compiledQuery.sql);
    const parameters = compiledQuery.parameters as unknown[];
    if (statement.reader) {
      return Promise.resolve({ rows: statement.all(parameters) as R[] });
    }
    const { changes, lastInsertRowid } = statement.run(parameters);
    const result: QueryResult<R> = {
      numAffectedRows: BigInt(changes),
      insertId: BigInt(lastInsertRowid),
      rows: [],
    };
    // A write outside a transaction committed on its own: make it durable before returning.
    if (
      this.walSync !== undefined &&
      !this.sqlite.inTransaction &&
      !TRANSACTION_CONTROL.test(compiledQuery.sql)
    ) {
      this.checkpointer?.afterCommit();
      return this.walSync.sync().then(() => result);
    }
    return Promise.resolve(result);
  }

  async *streamQuery<R>(compiledQuery: CompiledQuery): AsyncIterableIterator<QueryResult<R>> {
    const statement = this.prepare(compiledQuery.sql);
    for (const row of statement.iterate(compiledQuery.parameters as unknown[])) {
      yield { rows: [row as R] };
    }
  }
}

/** Serialises use of the one connection, which a transaction keeps until it ends. */
class ConnectionMutex {
  #tail: Promise<void> = Promise.resolve();

  async lock(): Promise<() => void> {
    let release!: () => void;
    const next = new Promise<void>((resolve) => {
      release = resolve;
    });
    const previous = this.#tail;
    this.#tail = previous.then(() => next);
    await previous;
    return release;
  }
}

/** Maximum pause between two tries to take the write lock while another process has it. */
const MAX_LOCK_WAIT_MS = 4;

class CachingSqliteDriver implements Driver {
  readonly #connection: CachedConnection;
  readonly #mutex = new ConnectionMutex();
  readonly #busyTimeoutMs: number;
  readonly #noWait: BetterSqlite3.Statement;
  readonly #restoreWait: BetterSqlite3.Statement;
  readonly #beginImmediate: BetterSqlite3.Statement;
  #release: (() => void) | undefined;

  constructor(
    sqlite: BetterSqlite3.Database,
    walSync: WalSync | undefined,
    checkpointer: Checkpointer | undefined,
  ) {
    this.#connection = new CachedConnection(sqlite, walSync, checkpointer);
    this.#busyTimeoutMs = Number(sqlite.pragma('busy_timeout', { simple: true }));
    this.#noWait = sqlite.prepare('PRAGMA busy_timeout = 0');
    this.#restoreWait = sqlite.prepare(`PRAGMA busy_timeout = ${this.#busyTimeoutMs}`);
    this.#beginImmediate = sqlite.prepare('BEGIN IMMEDIATE');
  }

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    this.#release = await this.#mutex.lock();
    return this.#connection;
  }

  /**
   * Takes the write lock. While another process has it, SQLite's busy handler would sleep on
   * the main thread and stop this process from serving anything, reads included. So the lock
   * is tried without waiting, and the wait happens on a timer, up to busy_timeout.
   */
  async beginTransaction(): Promise<void> {
    const deadline = Date.now() + this.#busyTimeoutMs;
    for (let pause = 1; ; pause = Math.min(pause * 2, MAX_LOCK_WAIT_MS)) {
      this.#noWait.run();
      try {
        this.#beginImmediate.run();
        return;
      } catch (error) {
        if (!isBusyError(error) || Date.now() >= deadline) throw error;
      } finally {
        this.#restoreWait.run();
      }
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('COMMIT'));
    this.#connection.checkpointer?.afterCommit();
    const walSync = this.#connection.walSync;
    if (walSync !== undefined && !walSync.deferred) await walSync.sync();
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    // A failed COMMIT or a constraint error may already have ended the transaction.
    if (this.#connection.sqlite.inTransaction) {
      await connection.executeQuery(CompiledQuery.raw('ROLLBACK'));
    }
  }

  async savepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(`SAVEPOINT "${name}"`));
  }

  async rollbackToSavepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(`ROLLBACK TO SAVEPOINT "${name}"`));
  }

  async releaseSavepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(`RELEASE SAVEPOINT "${name}"`));
  }

  async releaseConnection(): Promise<void> {
    const release = this.#release;
    this.#release = undefined;
    release?.();
  }

  async destroy(): Promise<void> {
    this.#connection.sqlite.close();
    this.#connection.walSync?.close();
  }
}

/**
 * SQLite runs CREATE and ALTER inside transactions, but Kysely 0.28's SqliteAdapter reports
 * that it does not, so its Migrator runs migrations without a transaction and with a no-op
 * lock. Two processes starting on a new database then apply the same migration twice. With
 * this adapter the Migrator reads the applied migrations and runs the pending ones in one
 * BEGIN IMMEDIATE transaction, so a second process waits (busy_timeout) and finds nothing
 * left to do. A migration therefore cannot change PRAGMA foreign_keys, which is a no-op
 * inside a transaction.
 */
class TransactionalDdlAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
}

export class CachingSqliteDialect implements Dialect {
  /**
   * `walSync` makes every commit durable before it is reported (see WalSync), and
   * `checkpointer` checkpoints the WAL after commits on a worker thread (see Checkpointer).
   */
  constructor(
    readonly sqlite: BetterSqlite3.Database,
    readonly walSync?: WalSync,
    readonly checkpointer?: Checkpointer,
  ) {}

  createDriver(): Driver {
    return new CachingSqliteDriver(this.sqlite, this.walSync, this.checkpointer);
  }

  createQueryCompiler() {
    return new SqliteQueryCompiler();
  }

  createAdapter() {
    return new TransactionalDdlAdapter();
  }

  createIntrospector(db: Kysely<unknown>) {
    return new SqliteIntrospector(db);
  }
}
