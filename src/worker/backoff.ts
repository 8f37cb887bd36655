/** Retry delays and log rate limiting for the worker's claim loop. */

/** Exponential delay: doubles from `initialMs` up to `maxMs` on each failure, until reset. */
export class Backoff {
  #failures = 0;

  constructor(
    readonly initialMs: number,
    readonly maxMs: number,
  ) {}

  get failures(): number {
    return this.#failures;
  }

  /** Returns the delay before the next attempt and counts one more failure. */
  next(): number {
    const delay = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.#failures, 30));
    this.#failures += 1;
    return delay;
  }

  reset(): void {
    this.#failures = 0;
  }
}

/** Milliseconds between log lines about a task's heartbeats or log uploads failing again. */
export const FAILURE_LOG_INTERVAL_MS = 30_000;

/**
 * Rate limiter for repeated log lines: a key is logged on its first occurrence and then at
 * most once per `intervalMs`, with the number of repeats skipped in between.
 */
export class RepeatLimiter {
  readonly #entries = new Map<string, { loggedAt: number; skipped: number }>();

  constructor(
    readonly intervalMs: number,
    readonly now: () => number = Date.now,
  ) {}

  /** Returns the number of skipped repeats to report when the line should be logged now, else undefined. */
  take(key: string): number | undefined {
    const now = this.now();
    const entry = this.#entries.get(key);
    if (entry === undefined || now - entry.loggedAt >= this.intervalMs) {
      const skipped = entry?.skipped ?? 0;
      this.#entries.set(key, { loggedAt: now, skipped: 0 });
      return skipped;
    }
    entry.skipped += 1;
    return undefined;
  }

  clear(): void {
    this.#entries.clear();
  }

  /** Forgets one kind of line, so that its next repeat is logged at once. */
  delete(key: string): void {
    this.#entries.delete(key);
  }
}
