/**
 * Checkpoints of the write-ahead log on a worker thread.
 *
 * SQLite checkpoints the WAL inside the COMMIT that makes it reach wal_autocheckpoint pages
 * (1,000 by default). Such a checkpoint copies every new page into the database file and
 * fsyncs both files, on the main thread, so the request that happens to commit then waits
 * for it, and so does every other request of the process. A bench/api run spent 388 of its
 * 978 ms of COMMIT in checkpoints, and single COMMITs took up to 6 ms.
 *
 * Here another connection, on a worker thread, runs passive checkpoints after writes, at most
 * one at a time and one per CHECKPOINT_INTERVAL_MS. A passive checkpoint waits for no reader
 * or writer, so it never holds up the main connection. The main connection's own
 * auto-checkpoint stays on at a higher threshold: under writes that never pause, the log is
 * restarted only when a writer finds it fully copied, which a checkpoint running beside the
 * writer may never achieve. Then the main connection checkpoints at MAIN_AUTOCHECKPOINT_PAGES,
 * copying only the pages the thread had not reached yet, and the next write restarts the log.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { Logger } from '../log.js';

/** Shortest time between the starts of two background checkpoints. */
const CHECKPOINT_INTERVAL_MS = 100;

/** wal_autocheckpoint of the main connection while a Checkpointer runs (40 MB of 4 KiB pages). */
export const MAIN_AUTOCHECKPOINT_PAGES = 10_000;

/** How long close waits for the thread to close its connection. */
const CLOSE_TIMEOUT_MS = 5_000;

/**
 * The thread's code. It is CommonJS evaluated from a string, so the same code runs from the
 * built files and from the TypeScript sources under the tests.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const sqlite = new Database(workerData.path, { fileMustExist: true });
parentPort.on('message', (message) => {
  if (message === 'close') {
    sqlite.close();
    parentPort.close();
    return;
  }
  try {
    sqlite.pragma('wal_checkpoint(PASSIVE)');
    parentPort.postMessage({});
  } catch (error) {
    // Another connection's checkpoint is running, so the next write requests one again.
    if (error && error.code === 'SQLITE_BUSY') parentPort.postMessage({ busy: true });
    else parentPort.postMessage({ error: String(error && error.message ? error.message : error) });
  }
});
`;

interface CheckpointResult {
  busy?: boolean;
  error?: string;
}

export class Checkpointer {
  readonly #worker: Worker;
  readonly #logger: Logger | undefined;
  /** Set while the thread runs a checkpoint. */
  #running = false;
  /** Set when a write came after the running checkpoint began, or a timer is waiting. */
  #wanted = false;
  #timer: NodeJS.Timeout | undefined;
  #lastStartedAt = 0;
  #closed = false;
  #failures = 0;

  constructor(dbPath: string, logger?: Logger) {
    this.#logger = logger;
    this.#worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: {
        path: dbPath,
        driver: createRequire(import.meta.url).resolve('better-sqlite3'),
      },
    });
    // The thread does not keep the process alive. A checkpoint cut short by an exit loses
    // nothing, because the WAL stays valid and SQLite reads it on the next open.
    this.#worker.unref();
    this.#worker.on('message', (result: CheckpointResult) => this.#finished(result));
    this.#worker.on('error', (error) => {
      this.#closed = true;
      this.#logger?.error(
        { err: error },
        'the WAL checkpoint thread failed; the write connection checkpoints the WAL itself ' +
          `at ${MAIN_AUTOCHECKPOINT_PAGES} pages`,
      );
    });
  }

  /** Requests a checkpoint after a commit. At most one starts per interval. */
  afterCommit(): void {
    if (this.#closed) return;
    if (this.#running || this.#timer !== undefined) {
      this.#wanted = true;
      return;
    }
    const wait = this.#lastStartedAt + CHECKPOINT_INTERVAL_MS - Date.now();
    if (wait <= 0) {
      this.#start();
      return;
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#start();
    }, wait);
    this.#timer.unref();
  }

  /** Waits for a running checkpoint, then closes the thread's connection and ends the thread. */
  async close(): Promise<void> {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    const wasClosed = this.#closed;
    this.#closed = true;
    if (wasClosed) {
      await this.#worker.terminate();
      return;
    }
    // Referenced again, so that the process does not exit while close awaits the thread.
    this.#worker.ref();
    const exited = new Promise<void>((resolve) => this.#worker.once('exit', () => resolve()));
    // Messages are handled in order, so the close comes after a running checkpoint.
    this.#worker.postMessage('close');
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), CLOSE_TIMEOUT_MS);
    });
    try {
      if ((await Promise.race([exited, timeout])) === 'timeout') await this.#worker.terminate();
    } finally {
      clearTimeout(timer);
    }
  }

  #start(): void {
    if (this.#closed) return;
    this.#running = true;
    this.#wanted = false;
    this.#lastStartedAt = Date.now();
    this.#worker.postMessage('checkpoint');
  }

  #finished(result: CheckpointResult): void {
    this.#running = false;
    if (result.error !== undefined) {
      this.#failures += 1;
      // Logged once, and again only after a checkpoint has succeeded in between.
      if (this.#failures === 1) {
        this.#logger?.warn(
          { error: result.error },
          'a WAL checkpoint failed; the next write tries again',
        );
      }
    } else if (result.busy !== true) {
      this.#failures = 0;
    }
    if (this.#wanted) this.afterCommit();
  }
}
