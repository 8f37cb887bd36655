/**
 * SIGTERM, SIGINT and SIGHUP for the long-running commands. A signal can arrive while the
 * command is still loading its modules (about a second here, longer on a busy host), and Node's
 * default action would end the process without a log line. This module imports nothing, so its
 * early handlers are in place at once, and listenForStop takes the caught signal over.
 *
 * SIGHUP arrives when the terminal or SSH session that runs the command closes. Node's default
 * action would end the process at once, and local steps, which run in process groups of their
 * own, would keep running with no worker to stop them.
 */

/** Commands that run until a signal stops them. */
const LONG_RUNNING = new Set(['serve', 'api', 'orchestrator', 'health-monitor', 'worker']);

/** How long a caught signal may wait for the roles before the process ends anyway. */
const UNCLAIMED_SIGNAL_EXIT_MS = 30_000;

/** Signals that stop a long-running command in order. */
const STOP_SIGNALS: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];

/** Exit codes as for Node's default action: 128 plus the signal number. */
const SIGNAL_EXIT_CODES: Partial<Record<NodeJS.Signals, number>> = {
  SIGHUP: 129,
  SIGINT: 130,
  SIGTERM: 143,
};

function exitCodeFor(signal: NodeJS.Signals): number {
  return SIGNAL_EXIT_CODES[signal] ?? 1;
}

function addHandler(handler: (signal: NodeJS.Signals) => void): void {
  for (const signal of STOP_SIGNALS) process.on(signal, handler);
}

function removeHandler(handler: (signal: NodeJS.Signals) => void): void {
  for (const signal of STOP_SIGNALS) process.off(signal, handler);
}

let caught: NodeJS.Signals | undefined;
const signalTimers: NodeJS.Timeout[] = [];

function onSignal(signal: NodeJS.Signals): void {
  caught ??= signal;
  // Start-up may itself hang (a database that stays locked), and the signal must still end it.
  const timer = setTimeout(() => process.exit(exitCodeFor(signal)), UNCLAIMED_SIGNAL_EXIT_MS);
  timer.unref();
  signalTimers.push(timer);
}

/** Installs the early handlers when `argv` names a long-running command. */
export function catchEarlySignals(argv: readonly string[]): void {
  if (!LONG_RUNNING.has(argv[2] ?? '')) return;
  addHandler(onSignal);
}

/**
 * Removes the early handlers and returns the signal they caught, if any. The caller installs
 * its own handlers first, so that no signal falls between the two.
 */
export function takeEarlySignal(): NodeJS.Signals | undefined {
  removeHandler(onSignal);
  for (const timer of signalTimers.splice(0)) clearTimeout(timer);
  return caught;
}

export interface StopListener {
  /** The signal that arrived while the command was loading or starting, if one did. */
  early: NodeJS.Signals | undefined;
  /** Resolves with the first SIGTERM, SIGINT or SIGHUP after the listener was installed. */
  received: Promise<NodeJS.Signals>;
  /** Removes the listener's handlers. */
  dispose(): void;
}

/**
 * Installs handlers for SIGTERM, SIGINT and SIGHUP and takes over a signal that the early
 * handlers caught. The first signal starts the stop. A second one ends a stop that takes too
 * long, such as a worker's wait for running tasks. `onRepeat` logs it, and the process exits at
 * once with 129 (SIGHUP), 130 (SIGINT) or 143 (SIGTERM), as Node's default action would.
 * With `exitOnRepeat` false, `onRepeat` is called and the process goes on stopping.
 */
export function listenForStop(
  onRepeat?: (signal: NodeJS.Signals) => void,
  exitOnRepeat = true,
): StopListener {
  let signalled: (signal: NodeJS.Signals) => void = () => undefined;
  const received = new Promise<NodeJS.Signals>((resolve) => (signalled = resolve));
  let count = 0;
  const handler = (signal: NodeJS.Signals) => {
    count += 1;
    if (count === 1) {
      signalled(signal);
      return;
    }
    onRepeat?.(signal);
    if (exitOnRepeat) process.exit(exitCodeFor(signal));
  };
  addHandler(handler);
  return {
    early: takeEarlySignal(),
    received,
    dispose() {
      removeHandler(handler);
    },
  };
}
