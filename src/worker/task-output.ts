/**
 * A task's output on its way to the API: bytes are decoded as UTF-8 (invalid sequences
 * become U+FFFD), secrets and Slipway API tokens are replaced by `***`, and the text is
 * uploaded in order, in chunks, each with its byte offset so a retried upload is not stored
 * twice. Nothing
 * unmasked leaves this class: the last characters are held back until more output shows
 * they do not begin a secret.
 */
import type { Logger } from '../log.js';
import type { OutputSink } from '../execution/executor.js';
import { FAILURE_LOG_INTERVAL_MS, RepeatLimiter } from './backoff.js';
import { AgentError, type AgentClient } from './client.js';
import { OutputMasker } from './output-mask.js';

export { MASK, mask } from './output-mask.js';
/** Characters per upload; with JSON escaping this stays well under a 1 MiB body limit. */
const MAX_UPLOAD_CHARS = 64 * 1024;
const FLUSH_DELAY_MS = 50;
/**
 * Default maximum of masked characters waiting for upload. While uploads fail (API away, its
 * disk full) or lag behind a fast step, later output is dropped past this, so the buffer stays
 * bounded: V8 throws RangeError for strings above about 2^29 characters, which would end the
 * worker process.
 */
export const MAX_PENDING_CHARS = 32 * 1024 * 1024;
const RETRY_DELAYS_MS = [100, 250, 500, 1_000, 2_000, 5_000];

export interface TaskOutputOptions {
  client: AgentClient;
  taskId: string;
  workerId: string;
  attempt: number;
  secrets: string[];
  logger: Logger;
  /** Characters kept waiting for upload before later output is dropped (MAX_PENDING_CHARS). */
  maxPendingChars?: number;
}

export class TaskOutput implements OutputSink {
  readonly #options: TaskOutputOptions;
  readonly #failures = new RepeatLimiter(FAILURE_LOG_INTERVAL_MS);
  readonly #decoder = new TextDecoder('utf-8', { fatal: false });
  readonly #masker: OutputMasker;
  /** Masked text waiting to be uploaded. */
  #pending = '';
  #offset = 0;
  #endsWithNewline = true;
  #timer: NodeJS.Timeout | undefined;
  #uploading: Promise<void> | undefined;
  #lost = false;
  /** Set once an upload response reports that the log reached SLIPWAY_LOG_MAX_BYTES. */
  #cut = false;
  /** Set when the worker stops after its grace period, so a failing upload is not retried. */
  #abandoned = false;
  /** Characters dropped because the buffer was full, not yet reported in the log. */
  #droppedChars = 0;
  readonly #maxPendingChars: number;

  constructor(options: TaskOutputOptions) {
    this.#options = options;
    this.#masker = new OutputMasker(options.secrets);
    this.#maxPendingChars = options.maxPendingChars ?? MAX_PENDING_CHARS;
  }

  /** Bytes uploaded so far. */
  get offset(): number {
    return this.#offset;
  }

  write(chunk: Buffer): void {
    this.#push(this.#decoder.decode(chunk, { stream: true }), false);
  }

  note(line: string): void {
    // Output before a note is complete (a step ended), so nothing needs holding back.
    this.#push(this.#decoder.decode(), true);
    this.#push(`${this.#endsWithNewline ? '' : '\n'}${line}\n`, true);
  }

  /** Makes a failing upload drop the rest of the output instead of retrying it. */
  abandon(): void {
    this.#abandoned = true;
  }

  /** Uploads everything written so far; call before finishing the task. */
  async close(): Promise<void> {
    this.#push(this.#decoder.decode(), true);
    if (this.#droppedChars > 0 && !this.#cut && !this.#lost) this.#pending += this.#droppedNote();
    clearTimeout(this.#timer);
    this.#timer = undefined;
    while (this.#pending.length > 0 || this.#uploading !== undefined) {
      await (this.#uploading ?? this.#startUpload());
    }
  }

  #push(text: string, flushHeld: boolean): void {
    if (text.length > 0) this.#endsWithNewline = text.endsWith('\n');
    const masked = flushHeld ? this.#masker.flush(text) : this.#masker.push(text);
    if (masked.length === 0) return;
    // The API drops everything after its cut, so sending more would only cost memory and time.
    if (this.#cut || this.#lost) return;
    // Once full, the buffer drops output until it has drained to half, so a slow API gets one
    // note per stall in the log rather than one per upload.
    const limit = this.#droppedChars > 0 ? this.#maxPendingChars / 2 : this.#maxPendingChars;
    if (this.#pending.length + masked.length > limit) {
      // NOTE: this also drops output when uploads succeed but lag behind a fast step.
      const skipped = this.#droppedChars === 0 ? this.#failures.take('drop') : undefined;
      if (skipped !== undefined) {
        const { taskId, attempt, logger } = this.#options;
        logger.warn(
          {
            task: taskId,
            attempt,
            max_pending_chars: this.#maxPendingChars,
            repeats_skipped: skipped,
          },
          'log uploads fell behind; dropping output until they catch up',
        );
      }
      this.#droppedChars += masked.length;
      void this.#startUpload();
      return;
    }
    if (this.#droppedChars > 0) this.#pending += this.#droppedNote();
    this.#pending += masked;
    if (this.#pending.length >= MAX_UPLOAD_CHARS) void this.#startUpload();
    else this.#timer ??= setTimeout(() => void this.#startUpload(), FLUSH_DELAY_MS);
  }

  /** Returns the log line that reports the dropped characters, and resets their count. */
  #droppedNote(): string {
    const note = `\n[slipway] dropped ${this.#droppedChars} characters of output here because log uploads fell behind\n`;
    this.#droppedChars = 0;
    return note;
  }

  #startUpload(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#uploading ??= this.#uploadAll().finally(() => {
      this.#uploading = undefined;
    });
    return this.#uploading;
  }

  async #uploadAll(): Promise<void> {
    while (this.#pending.length > 0) {
      let cut = Math.min(this.#pending.length, MAX_UPLOAD_CHARS);
      if (cut < this.#pending.length && isHighSurrogate(this.#pending.charCodeAt(cut - 1)))
        cut -= 1;
      const piece = this.#pending.slice(0, cut);
      this.#pending = this.#pending.slice(cut);
      if (this.#lost || this.#cut) continue;
      await this.#upload(piece);
      this.#offset += Buffer.byteLength(piece, 'utf8');
    }
  }

  async #upload(data: string): Promise<void> {
    const { client, taskId, workerId, attempt, logger } = this.#options;
    for (let retry = 0; ; retry += 1) {
      try {
        const answer = await client.uploadLog(taskId, {
          worker_id: workerId,
          attempt,
          offset: this.#offset,
          data,
        });
        if ((answer as { truncated?: unknown } | null)?.truncated === true) this.#cut = true;
        return;
      } catch (error) {
        if (error instanceof AgentError && !error.retryable) {
          // The lease is gone or the server rejected the chunk: later output goes nowhere.
          this.#lost = true;
          logger.warn(
            { err: error, task: taskId, attempt },
            "log upload rejected; dropping the rest of this attempt's output",
          );
          return;
        }
        if (this.#abandoned) {
          this.#lost = true;
          logger.warn(
            { err: error, task: taskId, attempt },
            "log upload failed while the worker stops; dropping the rest of this attempt's output",
          );
          return;
        }
        const delay = RETRY_DELAYS_MS[Math.min(retry, RETRY_DELAYS_MS.length - 1)]!;
        const skipped = this.#failures.take('upload');
        if (skipped !== undefined) {
          logger.warn(
            { err: error, task: taskId, retry: retry + 1, repeats_skipped: skipped },
            `log upload failed; retrying in ${delay} ms`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}
