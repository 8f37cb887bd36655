/**
 * Detects commits by reading the header of SQLite's WAL index, the `-shm` file next to the
 * database. Every commit by any connection, in any process, rewrites that header with a new
 * change counter (`iChange`). One `pread` of it costs less than `PRAGMA data_version`, which
 * starts a read transaction and so takes and releases a file lock. In a loop of a scratch
 * script on the 2-core AMD EPYC benchmark machine, the read took about 1 µs a call and the
 * pragma 1.8 to 3.9 µs.
 *
 * The layout is SQLite's documented file format (https://www.sqlite.org/walformat.html,
 * "The WAL-Index Header"): two copies of a 48-byte header at offsets 0 and 48. A writer
 * updates the second copy and then the first, so a reader that finds them different has read
 * during a commit, and counts that read as a change.
 */
import fs from 'node:fs';
import os from 'node:os';

const HEADER_BYTES = 48;
/** Offset of `isInit` in a header copy: 1 once SQLite has built the index. */
const IS_INIT_OFFSET = 12;
/** Offset of `szpage` in a header copy, a 16-bit page size where 1 means 65536. */
const PAGE_SIZE_OFFSET = 14;
/** Offset of `mxFrame` in a header copy: the frames written since the WAL was last reset. */
const MAX_FRAME_OFFSET = 16;
/** Offset of `nBackfill`, in the checkpoint information that follows the two header copies. */
const BACKFILL_OFFSET = 96;
/** Bytes of the WAL file's own header, and of the header in front of each frame's page. */
const WAL_HEADER_BYTES = 32;
const FRAME_HEADER_BYTES = 24;

/** The part of the write-ahead log in use, read from its index. */
export interface WalUse {
  /** Frames written since the WAL was last reset. */
  frames: number;
  /** Frames of those that a checkpoint has copied into the database file. */
  checkpointedFrames: number;
  /** Bytes of the WAL file that the frames take. */
  bytes: number;
}

export class WalIndexHeader {
  readonly #fd: number;
  readonly #buffer = Buffer.alloc(HEADER_BYTES * 2);
  readonly #last = Buffer.alloc(HEADER_BYTES);
  #changes = 0;
  #closed = false;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * Opens the WAL index of the database at `databasePath`. Returns undefined when there is
   * none, as for a database not in WAL mode. Open it only while a connection to the database
   * is open, because the last connection to close may delete the file.
   */
  static open(databasePath: string): WalIndexHeader | undefined {
    let fd: number;
    try {
      fd = fs.openSync(`${databasePath}-shm`, 'r');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    const header = new WalIndexHeader(fd);
    header.changeCount();
    return header;
  }

  /**
   * Returns a number that grows whenever a commit happened since the last call, and stays the
   * same while none did. A read that races a commit also counts as a change.
   */
  changeCount(): number {
    const header = this.#readHeader();
    if (header === undefined) {
      // Read during a commit: count a change now, and another at the next intact read.
      this.#last.fill(0);
      this.#changes += 1;
    } else if (!header.equals(this.#last)) {
      header.copy(this.#last);
      this.#changes += 1;
    }
    return this.#changes;
  }

  /**
   * Returns how much of the WAL is in use. SQLite writes the index in the machine's byte
   * order. Returns undefined while a commit rewrites the header.
   */
  use(): WalUse | undefined {
    const checkpoint = Buffer.alloc(4);
    const header = this.#readHeader();
    if (header === undefined) return undefined;
    fs.readSync(this.#fd, checkpoint, 0, 4, BACKFILL_OFFSET);
    const little = os.endianness() === 'LE';
    const storedPageSize = little
      ? header.readUInt16LE(PAGE_SIZE_OFFSET)
      : header.readUInt16BE(PAGE_SIZE_OFFSET);
    const pageSize = storedPageSize === 1 ? 65536 : storedPageSize;
    const frames = little
      ? header.readUInt32LE(MAX_FRAME_OFFSET)
      : header.readUInt32BE(MAX_FRAME_OFFSET);
    const checkpointedFrames = little ? checkpoint.readUInt32LE(0) : checkpoint.readUInt32BE(0);
    return {
      frames,
      checkpointedFrames,
      bytes: frames === 0 ? 0 : WAL_HEADER_BYTES + frames * (pageSize + FRAME_HEADER_BYTES),
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    fs.closeSync(this.#fd);
  }

  /** Returns the first header copy, or undefined when the two copies differ or are unset. */
  #readHeader(): Buffer | undefined {
    const bytes = fs.readSync(this.#fd, this.#buffer, 0, this.#buffer.length, 0);
    if (bytes < this.#buffer.length) return undefined;
    const first = this.#buffer.subarray(0, HEADER_BYTES);
    if (first[IS_INIT_OFFSET] !== 1) return undefined;
    if (!first.equals(this.#buffer.subarray(HEADER_BYTES))) return undefined;
    return first;
  }
}
