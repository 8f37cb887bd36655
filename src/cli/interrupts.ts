/**
 * The signals that stop `slipway trigger`: SIGINT and SIGTERM, which the GitHub Actions runner
 * sends when a workflow run is cancelled, and SIGHUP, which comes when the terminal or SSH
 * session that runs the command closes.
 */
const INTERRUPTS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * Records these signals from start() to stop(), in place of Node's default of exiting, so the
 * command can cancel its job first. `signal` is the last one received.
 */
export class InterruptWatch {
  signal: NodeJS.Signals | undefined;
  readonly #listeners = new Set<(signal: NodeJS.Signals) => void>();
  readonly #onSignal = (signal: NodeJS.Signals) => {
    this.signal = signal;
    for (const listener of this.#listeners) listener(signal);
  };

  start(): this {
    for (const signal of INTERRUPTS) process.on(signal, this.#onSignal);
    return this;
  }

  stop(): void {
    for (const signal of INTERRUPTS) process.off(signal, this.#onSignal);
    this.#listeners.clear();
  }

  /** Calls `listener` on each later signal; returns the function that removes it. */
  listen(listener: (signal: NodeJS.Signals) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
