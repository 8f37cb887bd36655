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

export const MASK = '***';
/** Characters per upload; with JSON escaping this stays well under a 1 MiB body limit. */
const MAX_UPLOAD_CHARS = 64 * 1024;
const FLUSH_DELAY_MS = 50;
const RETRY_DELAYS_MS = [100, 250, 500, 1_000, 2_000, 5_000];

export interface TaskOutputOptions {
  client: AgentClient;
  taskId: string;
  workerId: string;
  attempt: number;
  secrets: string[];
  logger: Logger;
}

export class TaskOutput implements OutputSink {
  readonly #options: TaskOutputOptions;
  readonly #failures = new RepeatLimiter(FAILURE_LOG_INTERVAL_MS);
  readonly #decoder = new TextDecoder('utf-8', { fatal: false });
  readonly #secrets: string[];
  readonly #hold: number;
  /** Decoded text not yet masked, because a secret may continue in the next chunk. */
  #held = '';
  /** Masked text waiting to be uploaded. */
  #pending = '';
  #offset = 0;
  #endsWithNewline = true;
  #timer: NodeJS.Timeout | undefined;
  #uploading: Promise<void> | undefined;
  #lost = false;

  constructor(options: TaskOutputOptions) {
    this.#options = options;
    this.#secrets = options.secrets;
    this.#hold = Math.max(0, ...this.#secrets.map((secret) => secret.length - 1));
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

  /** Uploads everything written so far; call before finishing the task. */
  async close(): Promise<void> {
    this.#push(this.#decoder.decode(), true);
    clearTimeout(this.#timer);
    this.#timer = undefined;
    while (this.#pending.length > 0 || this.#uploading !== undefined) {
      await (this.#uploading ?? this.#startUpload());
    }
  }

  #push(text: string, flushHeld: boolean): void {
    if (text.length > 0) this.#endsWithNewline = text.endsWith('\n');
    let buffer = mask(this.#held + text, this.#secrets);
    let keep = flushHeld ? 0 : Math.min(Math.max(this.#hold, apiTokenTail(buffer)), buffer.length);
    // Never split a surrogate pair between the part sent and the part held.
    if (keep > 0 && isHighSurrogate(buffer.charCodeAt(buffer.length - keep - 1))) keep += 1;
    this.#held = buffer.slice(buffer.length - keep);
    buffer = buffer.slice(0, buffer.length - keep);
    if (buffer.length === 0) return;
    this.#pending += buffer;
    if (this.#pending.length >= MAX_UPLOAD_CHARS) void this.#startUpload();
    else this.#timer ??= setTimeout(() => void this.#startUpload(), FLUSH_DELAY_MS);
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
      if (this.#lost) continue;
      await this.#upload(piece);
      this.#offset += Buffer.byteLength(piece, 'utf8');
    }
  }

  async #upload(data: string): Promise<void> {
    const { client, taskId, workerId, attempt, logger } = this.#options;
    for (let retry = 0; ; retry += 1) {
      try {
        await client.uploadLog(taskId, {
          worker_id: workerId,
          attempt,
          offset: this.#offset,
          data,
        });
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

/**
 * A Slipway API token (`slw_` and 32 URL-safe characters, see store/tokens.ts). A step that
 * prints one, such as the worker's own token read from its environment or a file, would
 * otherwise show it to every reader of the job's logs.
 */
// No check of what follows: `slw_<32 characters>_old.txt` still contains the token.
const API_TOKEN = /slw_[A-Za-z0-9_-]{32}/g;
/** The end of a text that may be the start of an API token continued in the next chunk. */
const API_TOKEN_START = /s(?:l(?:w(?:_[A-Za-z0-9_-]{0,32})?)?)?$/;

/**
 * Replaces every occurrence of each secret, and every Slipway API token, with `***`. The
 * matches are all found in the original text, and overlapping ones are masked together: a
 * secret replaced first would otherwise break up a token that contains it, and the rest of
 * the token would show.
 */
export function mask(text: string, secrets: readonly string[]): string {
  const ranges: Array<[number, number]> = [];
  for (const secret of secrets) {
    if (secret === '') continue;
    for (let at = text.indexOf(secret); at >= 0; at = text.indexOf(secret, at + 1)) {
      ranges.push([at, at + secret.length]);
    }
  }
  if (text.includes('slw_')) {
    for (const match of text.matchAll(API_TOKEN)) {
      ranges.push([match.index, match.index + match[0].length]);
    }
  }
  if (ranges.length === 0) return text;
  ranges.sort((a, b) => a[0] - b[0]);
  let masked = '';
  let copied = 0;
  let end = -1;
  for (const [from, to] of ranges) {
    if (from > end) {
      if (end >= 0) masked += MASK;
      masked += text.slice(copied, from);
      end = to;
    } else {
      end = Math.max(end, to);
    }
    copied = end;
  }
  return masked + MASK + text.slice(copied);
}

/** Returns how many characters at the end of `text` could begin an API token. */
function apiTokenTail(text: string): number {
  return API_TOKEN_START.exec(text)?.[0].length ?? 0;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}
