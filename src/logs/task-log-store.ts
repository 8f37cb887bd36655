/**
 * Task log files on the API's host: one file per task attempt under ORCHESTRATION_LOG_PATH,
 * appended by worker uploads. Uploads carry the byte offset of their first byte within the
 * attempt's log, so a retried upload is never written twice. The file keeps at most
 * `maxBytes` bytes of output, then one line that marks where it was cut.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';

export interface AppendResult {
  /** Bytes of the attempt's output received so far, counting what the cap dropped. */
  received: number;
  /** Bytes of this upload that were new (not a repeat of an earlier upload). */
  accepted: number;
  truncated: boolean;
}

/**
 * An upload that cannot continue the log: its offset is past the bytes received (rule
 * `contiguous`), or its new bytes would start inside a character (rule `characterBoundary`).
 */
export class LogOffsetError extends Error {
  readonly rule: 'contiguous' | 'characterBoundary';

  constructor(
    readonly offset: number,
    readonly received: number,
  ) {
    const contiguous = offset > received;
    super(
      contiguous
        ? `log offset ${offset} is beyond the ${received} bytes received so far; ` +
            `upload again from offset ${received}`
        : `log offset ${offset} does not match the data: its new bytes from byte ${received} ` +
            'start inside a UTF-8 character; upload the output again from a character boundary',
    );
    this.name = 'LogOffsetError';
    this.rule = contiguous ? 'contiguous' : 'characterBoundary';
  }
}

/**
 * Modes of the per-job directories and log files. Step output can contain anything a build
 * prints, and ORCHESTRATION_LOG_PATH may be a directory that the operator made readable by all.
 */
const LOG_DIRECTORY_MODE = 0o700;
const LOG_FILE_MODE = 0o600;

/**
 * Appends `data` to `file` whole or not at all. A write that fails part way (ENOSPC, EFBIG) is
 * cut off again, so that the upload's retry, which sends the same bytes, does not store the
 * written part twice. When even that fails, the state is reloaded from the file on the next
 * append.
 */
async function appendWhole(file: string, data: Buffer, state: FileState): Promise<void> {
  const handle = await fs.promises.open(file, 'a', LOG_FILE_MODE);
  try {
    const { size } = await handle.stat();
    try {
      await handle.appendFile(data);
    } catch (error) {
      await handle.truncate(size).catch(() => {
        state.received = -1;
      });
      throw error;
    }
  } finally {
    await handle.close();
  }
}

/** Returns whether `byte` continues a UTF-8 character rather than starting one. */
function isContinuationByte(byte: number | undefined): boolean {
  return byte !== undefined && (byte & 0xc0) === 0x80;
}

/** Returns the last index up to `index` where a character of `data` starts. */
function characterStart(data: Buffer, index: number): number {
  let start = Math.min(index, data.length);
  while (start > 0 && isContinuationByte(data[start])) start -= 1;
  return start;
}

interface FileState {
  received: number;
  truncated: boolean;
  /** Appends to one file run one after another. */
  tail: Promise<unknown>;
}

export const CUT_MARKER_PREFIX = '[slipway] log cut at';

/** Relative path of an attempt's log file: `<job id>/<task id>.<attempt>.log`. */
export function taskLogRelativePath(jobId: string, taskId: string, attempt: number): string {
  return path.join(jobId, `${taskId}.${attempt}.log`);
}

export class TaskLogStore {
  readonly #files = new Map<string, FileState>();
  /** Emits `append` with the file path after bytes were written to it. */
  readonly changes = new EventEmitter<{ append: [file: string] }>();

  constructor(
    readonly root: string,
    readonly maxBytes: number,
  ) {
    this.changes.setMaxListeners(0);
  }

  pathFor(jobId: string, taskId: string, attempt: number): string {
    return path.join(this.root, taskLogRelativePath(jobId, taskId, attempt));
  }

  /** Creates the attempt's empty log file, so readers find it as soon as the task runs. */
  async create(file: string): Promise<void> {
    await fs.promises.mkdir(path.dirname(file), { recursive: true, mode: LOG_DIRECTORY_MODE });
    await fs.promises.writeFile(file, '', { flag: 'a', mode: LOG_FILE_MODE });
  }

  /**
   * Appends `data` (the attempt's output from byte `offset`). Bytes before the received
   * count are repeats and are skipped; an offset past it throws LogOffsetError.
   */
  append(file: string, offset: number, data: Buffer): Promise<AppendResult> {
    const state = this.#state(file);
    const run = state.tail.then(() => this.#append(file, state, offset, data));
    state.tail = run.catch(() => undefined);
    return run;
  }

  async #append(
    file: string,
    state: FileState,
    offset: number,
    data: Buffer,
  ): Promise<AppendResult> {
    // Until the cut, every byte received is on disk, so the file's size is the received count.
    // It is read again for each upload because with API_WORKERS above 1 another API process
    // may have appended since this one did.
    // NOTE: two processes that append to one file at the same time (a retry sent while the
    // first try still runs elsewhere) are not ordered, and the file may get both.
    if (state.received < 0 || !state.truncated) await this.#load(file, state);
    if (offset > state.received && !state.truncated) {
      throw new LogOffsetError(offset, state.received);
    }
    const skip = Math.max(0, state.received - offset);
    const fresh = skip >= data.length ? Buffer.alloc(0) : data.subarray(skip);
    if (fresh.length === 0)
      return { received: state.received, accepted: 0, truncated: state.truncated };
    // The bytes received so far end on a character boundary, so a correct offset never puts
    // the first new byte inside a character. Storing it would leave broken UTF-8 in the log.
    if (skip > 0 && isContinuationByte(fresh[0])) throw new LogOffsetError(offset, state.received);

    const written = Math.min(state.received, this.maxBytes);
    const room = Math.max(0, this.maxBytes - written);
    const parts: Buffer[] = [];
    if (!state.truncated) {
      // The cut falls on a character boundary, so the kept part stays valid UTF-8.
      parts.push(fresh.subarray(0, fresh.length > room ? characterStart(fresh, room) : room));
      if (fresh.length > room) {
        parts.push(
          Buffer.from(
            `\n${CUT_MARKER_PREFIX} ${this.maxBytes} bytes (SLIPWAY_LOG_MAX_BYTES); ` +
              'later output of this attempt was dropped\n',
          ),
        );
        state.truncated = true;
      }
    }
    if (parts.length > 0) {
      await fs.promises.mkdir(path.dirname(file), { recursive: true, mode: LOG_DIRECTORY_MODE });
      await appendWhole(file, Buffer.concat(parts), state);
      this.changes.emit('append', file);
    }
    state.received += fresh.length;
    return { received: state.received, accepted: fresh.length, truncated: state.truncated };
  }

  /**
   * Appends a line that Slipway itself writes, such as why an attempt ended when its worker
   * could not say so. The line starts on a line of its own. Use it only once the attempt can
   * upload no more, because a reload from disk counts the line as output. A file that does
   * not exist is left alone, since the attempt's log is then kept on another host. Resolves to
   * whether the line was written.
   */
  note(file: string, line: string): Promise<boolean> {
    const state = this.#state(file);
    const run = state.tail.then(async () => {
      let size: number;
      try {
        size = (await fs.promises.stat(file)).size;
      } catch {
        return false;
      }
      let start = '';
      if (size > 0) {
        const handle = await fs.promises.open(file, 'r');
        try {
          const last = Buffer.alloc(1);
          await handle.read(last, 0, 1, size - 1);
          if (last[0] !== 0x0a) start = '\n';
        } finally {
          await handle.close();
        }
      }
      await fs.promises.appendFile(file, `${start}${line}\n`);
      this.changes.emit('append', file);
      return true;
    });
    state.tail = run.catch(() => undefined);
    return run;
  }

  /**
   * Appends `line` with note() when the attempt's log was cut at `maxBytes`. The worker stops
   * uploading at the cut, so its closing line with the task's outcome never reaches
   * the file. Resolves to whether the line was written.
   */
  async noteIfCut(file: string, line: string): Promise<boolean> {
    // This reads the size on disk rather than this process's state, because with API_WORKERS
    // above 1 another process may have stored the uploads. Only a cut file, whose cut line
    // comes after maxBytes of output, is larger than maxBytes.
    const size = await fs.promises
      .stat(file)
      .then((stats) => stats.size)
      .catch(() => 0);
    if (size <= this.maxBytes) return false;
    return this.note(file, line);
  }

  #state(file: string): FileState {
    let state = this.#files.get(file);
    if (state === undefined) {
      state = { received: -1, truncated: false, tail: Promise.resolve() };
      this.#files.set(file, state);
    }
    return state;
  }

  /** Reads the received count from the file after a restart of the API. */
  async #load(file: string, state: FileState): Promise<void> {
    const size = await fs.promises
      .stat(file)
      .then((stats) => stats.size)
      .catch(() => 0);
    state.received = size;
    // NOTE: after a restart the bytes the cap dropped are no longer counted, so uploads to
    // a cut log are accepted at any offset and dropped.
    state.truncated = size > this.maxBytes;
  }

  /** Forgets the state of a finished attempt's file; later uploads reload it from disk. */
  release(file: string): void {
    this.#files.delete(file);
  }
}
