/**
 * Holds back repeats of an error that every request meets until an operator acts, such as a
 * full disk. Each would log a stack trace, so at thousands of requests per second the log
 * would flood, perhaps onto the same full disk.
 */

/** Time after a logged error during which errors of the same kind are only counted. */
export const REPEAT_WINDOW_MS = 10_000;

/** The part of a pino or Fastify logger that RepeatedErrors.log uses. */
interface ErrorLogger {
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
}

export class RepeatedErrors {
  readonly #kinds = new Map<string, { loggedAt: number; held: number }>();

  constructor(
    readonly windowMs = REPEAT_WINDOW_MS,
    readonly now: () => number = Date.now,
  ) {}

  /**
   * Records an error of `kind`. Returns how many of that kind were held back since the last
   * one logged, when this one is to be logged, and undefined when it is held back too.
   */
  record(kind: string): number | undefined {
    const now = this.now();
    const entry = this.#kinds.get(kind);
    if (entry !== undefined && now - entry.loggedAt < this.windowMs) {
      entry.held += 1;
      return undefined;
    }
    this.#kinds.set(kind, { loggedAt: now, held: 0 });
    return entry?.held ?? 0;
  }

  /**
   * Logs `message` with `fields` at `level` unless an error of `kind` was logged within the
   * window, and adds `held_back`, the count of those held back since the last line.
   */
  log(
    logger: ErrorLogger,
    level: 'warn' | 'error',
    kind: string,
    fields: Record<string, unknown>,
    message: string,
  ): void {
    const heldBack = this.record(kind);
    if (heldBack === undefined) return;
    logger[level](
      { ...fields, held_back: heldBack },
      `${message} (repeats within ${this.windowMs / 1000} s are counted in held_back, not logged)`,
    );
  }
}
