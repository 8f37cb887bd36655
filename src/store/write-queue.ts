/**
 * Group commit: writes that arrive while the event loop is busy share one transaction and
 * one fsync. An fsync costs far more than the statements of a trigger, so sharing it is what
 * lets durable writes keep up with many concurrent requests. The fsync runs off the main
 * thread (see WalSync) and the next batch may commit while it runs; each write resolves only
 * after an fsync that started after its own COMMIT.
 */
import fs from 'node:fs';
import type BetterSqlite3 from 'better-sqlite3';
import type { Kysely, Transaction } from 'kysely';
import type { Logger } from '../log.js';
import { RepeatedErrors } from '../util/repeated-errors.js';
import type { Database } from './schema.js';
import type { WalSync } from './wal-sync.js';

export type WriteWork<T> = (trx: Transaction<Database>) => Promise<T>;

/** The connection under each open write transaction, for writeConnection. */
const connections = new WeakMap<Transaction<Database>, BetterSqlite3.Database>();

/**
 * Returns the connection that a Store.write transaction runs on, for prepared queries (see
 * prepared.ts). Throws for any other transaction, because a prepared statement on the bare
 * connection would run outside it.
 */
export function writeConnection(trx: Transaction<Database>): BetterSqlite3.Database {
  const sqlite = connections.get(trx);
  if (sqlite === undefined) throw new Error('prepared writes need the transaction of Store.write');
  return sqlite;
}

interface PendingWrite {
  work: WriteWork<unknown>;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/** Upper bound on writes per commit, so one commit never holds the write lock for long. */
const MAX_BATCH = 256;

const BUSY_CODES = new Set(['SQLITE_BUSY', 'SQLITE_BUSY_SNAPSHOT', 'SQLITE_LOCKED']);
const MAX_BUSY_RETRIES = 5;
/**
 * A busy error is retried only this soon after the flush began. Taking the write lock already
 * waits up to busy_timeout (see the driver), and retrying after that wait would make a caller
 * wait several times as long.
 */
const BUSY_RETRY_WINDOW_MS = 1_000;

export function isBusyError(error: unknown): boolean {
  return (
    typeof error === 'object' &&
    error !== null &&
    'code' in error &&
    BUSY_CODES.has(String((error as { code: unknown }).code))
  );
}

/**
 * Thrown before a commit when the database file at the configured path is no longer the file
 * this connection opened. SQLite in WAL mode keeps writing to a deleted or replaced file, and
 * those writes would be gone at the next start.
 */
export class DatabaseReplacedError extends Error {
  readonly code = 'SLIPWAY_DATABASE_REPLACED';

  constructor(readonly path: string) {
    super(
      `the database file ${path} was deleted or replaced while this process had it open, ` +
        'so writes are rejected; stop every Slipway process that uses it, put the database ' +
        'back (slipway restore FILE), then start them again',
    );
  }
}

/** Device and inode of the database file when the connection opened it. */
interface FileIdentity {
  path: string;
  dev: number;
  ino: number;
}

/** A failed commit, a failed fsync after one, or a write that failed on storage. */
export interface WriteFailure {
  at: string;
  code: string | undefined;
  message: string;
}

/**
 * SQLite primary codes of a write that fails on the store itself rather than on its request:
 * the next writes fail the same way until an operator acts. SQLite can raise them inside a
 * statement, where they fail one write alone, and not only at COMMIT.
 */
const STORAGE_CODES = new Set(['SQLITE_FULL', 'SQLITE_IOERR', 'SQLITE_READONLY', 'SQLITE_PERM']);

function describeFailure(error: unknown): WriteFailure {
  const code = (error as { code?: unknown } | null)?.code;
  return {
    at: new Date().toISOString(),
    code: typeof code === 'string' ? code : undefined,
    message: error instanceof Error ? error.message : String(error),
  };
}

/** Returns the failure of the first write in `outcomes` that failed on storage, if any. */
function failureOfStorage(
  outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }>,
): WriteFailure | undefined {
  for (const outcome of outcomes) {
    if (outcome.ok) continue;
    const failure = describeFailure(outcome.error);
    const primary = failure.code?.split('_').slice(0, 2).join('_');
    if (primary !== undefined && STORAGE_CODES.has(primary)) return failure;
  }
  return undefined;
}

export class WriteQueue {
  readonly #db: Kysely<Database>;
  readonly #sqlite: BetterSqlite3.Database;
  readonly #savepoint: BetterSqlite3.Statement;
  readonly #release: BetterSqlite3.Statement;
  readonly #rollbackTo: BetterSqlite3.Statement;
  readonly #logger: Logger | undefined;
  readonly #repeatedFailures = new RepeatedErrors();
  readonly #delayMs: number;
  readonly #walSync: WalSync | undefined;
  readonly #file: FileIdentity | undefined;
  readonly #syncing = new Set<Promise<void>>();
  #pending: PendingWrite[] = [];
  #scheduled = false;
  #flushing: Promise<void> | undefined;
  #lastFailure: WriteFailure | undefined;

  constructor(
    db: Kysely<Database>,
    sqlite: BetterSqlite3.Database,
    options: { logger?: Logger; commitDelayMs?: number; walSync?: WalSync; dbPath?: string },
  ) {
    this.#db = db;
    this.#sqlite = sqlite;
    // Savepoints run on the connection directly, because the transaction below owns it and
    // going through Kysely would cost three more async queries for every write.
    this.#savepoint = sqlite.prepare('SAVEPOINT write');
    this.#release = sqlite.prepare('RELEASE SAVEPOINT write');
    this.#rollbackTo = sqlite.prepare('ROLLBACK TO SAVEPOINT write');
    this.#logger = options.logger;
    this.#delayMs = options.commitDelayMs ?? 0;
    this.#walSync = options.walSync;
    const stat =
      options.dbPath === undefined
        ? undefined
        : fs.statSync(options.dbPath, { throwIfNoEntry: false });
    if (stat !== undefined) this.#file = { path: options.dbPath!, dev: stat.dev, ino: stat.ino };
  }

  enqueue<T>(work: WriteWork<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#pending.push({ work, resolve: resolve as (value: unknown) => void, reject });
      this.#schedule();
    });
  }

  async drain(): Promise<void> {
    while (this.#pending.length > 0 || this.#flushing !== undefined || this.#scheduled) {
      await (this.#flushing ?? new Promise((resolve) => setImmediate(resolve)));
    }
    await Promise.allSettled([...this.#syncing]);
  }

  #schedule(): void {
    if (this.#scheduled || this.#flushing !== undefined) return;
    this.#scheduled = true;
    const run = () => {
      this.#scheduled = false;
      this.#flushing = this.#flush().finally(() => {
        this.#flushing = undefined;
        if (this.#pending.length > 0) this.#schedule();
      });
    };
    // setImmediate runs after the poll phase, so every request read in this turn of the
    // event loop has queued its write before the commit starts.
    if (this.#delayMs > 0) setTimeout(run, this.#delayMs);
    else setImmediate(run);
  }

  async #flush(): Promise<void> {
    const batch = this.#pending.splice(0, MAX_BATCH);
    const started = Date.now();
    for (let attempt = 1; ; attempt += 1) {
      try {
        this.#checkFile();
        const outcomes = await this.#commit(batch);
        const settle = () => {
          this.#lastFailure = failureOfStorage(outcomes);
          batch.forEach((write, index) => {
            const outcome = outcomes[index]!;
            if (outcome.ok) write.resolve(outcome.value);
            else write.reject(outcome.error);
          });
        };
        if (this.#walSync === undefined) {
          settle();
          return;
        }
        const synced = this.#walSync.sync().then(settle, (error: unknown) => {
          this.#recordFailure(error, batch.length, 'fsync of the WAL failed');
          for (const write of batch) write.reject(error);
        });
        this.#syncing.add(synced);
        void synced.finally(() => this.#syncing.delete(synced));
        return;
      } catch (error) {
        const retry = attempt < MAX_BUSY_RETRIES && Date.now() - started < BUSY_RETRY_WINDOW_MS;
        if (isBusyError(error) && retry) {
          this.#logger?.warn({ err: error, attempt }, 'database busy, retrying commit');
          await new Promise((resolve) => setTimeout(resolve, 10 * attempt));
          continue;
        }
        this.#recordFailure(error, batch.length, 'commit failed');
        for (const write of batch) write.reject(error);
        return;
      }
    }
  }

  /**
   * The failure of the last batch that could not be committed or synced, or of a write in it
   * that failed on storage (see STORAGE_CODES), until a later batch commits without one. A
   * write that fails alone for another reason (a constraint, a rejected request) leaves it unset.
   */
  get lastFailure(): WriteFailure | undefined {
    return this.#lastFailure;
  }

  /**
   * Stores and logs the failure of a batch of `writes` writes. A full disk fails every batch
   * until someone frees space, so repeats of the same error are only counted for a while.
   */
  #recordFailure(error: unknown, writes: number, message: string): void {
    this.#lastFailure = describeFailure(error);
    if (this.#logger === undefined) return;
    this.#repeatedFailures.log(
      this.#logger,
      'error',
      `${message}: ${this.#lastFailure.code ?? 'no code'}`,
      { err: error, writes },
      message,
    );
  }

  #checkFile(): void {
    if (this.#file === undefined) return;
    const stat = fs.statSync(this.#file.path, { throwIfNoEntry: false });
    if (stat === undefined || stat.dev !== this.#file.dev || stat.ino !== this.#file.ino) {
      throw new DatabaseReplacedError(this.#file.path);
    }
  }

  async #commit(
    batch: PendingWrite[],
  ): Promise<Array<{ ok: true; value: unknown } | { ok: false; error: unknown }>> {
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    const trx = await this.#db.startTransaction().execute();
    connections.set(trx, this.#sqlite);
    try {
      for (const write of batch) {
        this.#savepoint.run();
        try {
          const value = await write.work(trx);
          this.#release.run();
          outcomes.push({ ok: true, value });
        } catch (error) {
          if (isBusyError(error)) throw error;
          // SQLite may roll back the whole transaction, savepoints included, after SQLITE_FULL,
          // SQLITE_IOERR or SQLITE_NOMEM in a statement (see full-in-write.test.ts). The batch
          // then fails with that error, because ROLLBACK TO would fail with "no such savepoint".
          if (!this.#sqlite.inTransaction) throw error;
          this.#rollbackTo.run();
          this.#release.run();
          outcomes.push({ ok: false, error });
        }
      }
      // The queue waits for the fsync itself, after releasing the connection (see #flush).
      if (this.#walSync !== undefined) this.#walSync.deferred = true;
      try {
        await trx.commit().execute();
      } finally {
        if (this.#walSync !== undefined) this.#walSync.deferred = false;
      }
      return outcomes;
    } catch (error) {
      await trx.rollback().execute();
      throw error;
    } finally {
      connections.delete(trx);
    }
  }
}
