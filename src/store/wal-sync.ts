/**
 * Durable commits without blocking the event loop.
 *
 * With `synchronous=FULL`, SQLite fsyncs the write-ahead log inside COMMIT, and better-sqlite3
 * runs COMMIT on the main thread, so every request waits while one fsync runs (14 ms per COMMIT
 * was measured on the 2-core test VM under load, by timing statements during bench/api). Instead the connection runs with
 * `synchronous=NORMAL`, where COMMIT only writes the WAL, and Slipway fsyncs the WAL file
 * itself on libuv's thread pool before it reports the commit. A transaction is reported
 * committed only after an fsync that started after its COMMIT, which is the guarantee FULL
 * gives: the WAL frames of a reported commit are on disk, and SQLite replays them on the next
 * open after a crash or power loss. Checkpoints under NORMAL sync the WAL and the database
 * file, as under FULL.
 */
import fs from 'node:fs';
import path from 'node:path';

export class WalSync {
  readonly #walPath: string;
  #fd: number | undefined;
  /** The fsync in flight, if any. */
  #running: Promise<void> | undefined;
  /** One fsync queued behind the running one, shared by every commit made meanwhile. */
  #next: Promise<void> | undefined;
  /** Set while the write queue commits, so the driver leaves the fsync to the queue. */
  deferred = false;

  constructor(dbPath: string) {
    this.#walPath = `${dbPath}-wal`;
  }

  /** Resolves once an fsync that started after this call has finished. */
  sync(): Promise<void> {
    if (this.#running === undefined) {
      this.#running = this.#fsync().finally(() => {
        this.#running = undefined;
      });
      return this.#running;
    }
    // The running fsync may have started before the caller's COMMIT, so it does not count.
    this.#next ??= this.#running.then(() => {
      this.#next = undefined;
      return this.sync();
    });
    return this.#next;
  }

  close(): void {
    if (this.#fd !== undefined) fs.closeSync(this.#fd);
    this.#fd = undefined;
  }

  async #fsync(): Promise<void> {
    const fd = this.#open();
    if (fd === undefined) return;
    await new Promise<void>((resolve, reject) => {
      fs.fsync(fd, (error) => (error === null ? resolve() : reject(error)));
    });
  }

  #open(): number | undefined {
    if (this.#fd !== undefined) return this.#fd;
    let fd: number;
    try {
      fd = fs.openSync(this.#walPath, 'r');
    } catch (error) {
      // No WAL yet means nothing was written through it, so there is nothing to sync.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    // The WAL was just created: its directory entry must reach the disk too.
    const directory = fs.openSync(path.dirname(this.#walPath), 'r');
    try {
      fs.fsyncSync(directory);
    } finally {
      fs.closeSync(directory);
    }
    this.#fd = fd;
    return fd;
  }
}
