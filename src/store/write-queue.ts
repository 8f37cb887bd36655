/**
 * Group commit: writes that arrive while the event loop is busy share one transaction and
 * one fsync. With synchronous=FULL an fsync costs far more than the statements of a trigger,
 * so sharing it is what lets durable writes keep up with many concurrent requests.
 */
import type { Kysely, Transaction } from 'kysely';
import type { Logger } from '../log.js';
import type { Database } from './schema.js';

export type WriteWork<T> = (trx: Transaction<Database>) => Promise<T>;

interface PendingWrite {
  work: WriteWork<unknown>;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/** Upper bound on writes per commit, so one commit never holds the write lock for long. */
const MAX_BATCH = 256;

const BUSY_CODES = new Set(['SQLITE_BUSY', 'SQLITE_BUSY_SNAPSHOT', 'SQLITE_LOCKED']);
const MAX_BUSY_RETRIES = 5;

export function isBusyError(error: unknown): boolean {
  return (
    typeof error === 'object' &&
    error !== null &&
    'code' in error &&
    BUSY_CODES.has(String((error as { code: unknown }).code))
  );
}

export class WriteQueue {
  readonly #db: Kysely<Database>;
  readonly #logger: Logger | undefined;
  readonly #delayMs: number;
  #pending: PendingWrite[] = [];
  #scheduled = false;
  #flushing: Promise<void> | undefined;

  constructor(db: Kysely<Database>, options: { logger?: Logger; commitDelayMs?: number }) {
    this.#db = db;
    this.#logger = options.logger;
    this.#delayMs = options.commitDelayMs ?? 0;
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
    for (let attempt = 1; ; attempt += 1) {
      try {
        const outcomes = await this.#commit(batch);
        batch.forEach((write, index) => {
          const outcome = outcomes[index]!;
          if (outcome.ok) write.resolve(outcome.value);
          else write.reject(outcome.error);
        });
        return;
      } catch (error) {
        if (isBusyError(error) && attempt < MAX_BUSY_RETRIES) {
          this.#logger?.warn({ err: error, attempt }, 'database busy, retrying commit');
          await new Promise((resolve) => setTimeout(resolve, 10 * attempt));
          continue;
        }
        this.#logger?.error({ err: error, writes: batch.length }, 'commit failed');
        for (const write of batch) write.reject(error);
        return;
      }
    }
  }

  async #commit(
    batch: PendingWrite[],
  ): Promise<Array<{ ok: true; value: unknown } | { ok: false; error: unknown }>> {
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    const trx = await this.#db.startTransaction().execute();
    try {
      for (const write of batch) {
        const savepoint = await trx.savepoint('write').execute();
        try {
          const value = await write.work(savepoint);
          await savepoint.releaseSavepoint('write').execute();
          outcomes.push({ ok: true, value });
        } catch (error) {
          if (isBusyError(error)) throw error;
          await savepoint.rollbackToSavepoint('write').execute();
          await savepoint.releaseSavepoint('write').execute();
          outcomes.push({ ok: false, error });
        }
      }
      await trx.commit().execute();
      return outcomes;
    } catch (error) {
      await trx.rollback().execute();
      throw error;
    }
  }
}
