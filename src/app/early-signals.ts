/**
 * Handlers for signals that arrive while a long-running command is still loading its modules,
 * which takes about a second here and longer on a busy host. Node's default action for SIGTERM
 * would end the process without a log line. This module imports nothing, so its handlers are
 * in place at once, and the roles take over the caught signal when they install their own.
 */
/** Commands that run until a signal stops them. */
const LONG_RUNNING = new Set(['serve', 'api', 'orchestrator', 'health-monitor', 'worker']);

/** How long a caught signal may wait for the roles before the process ends anyway. */
const UNCLAIMED_SIGNAL_EXIT_MS = 30_000;

let caught: NodeJS.Signals | undefined;
const signalTimers: NodeJS.Timeout[] = [];

function onSignal(signal: NodeJS.Signals): void {
  caught ??= signal;
  // Start-up may itself hang (a database that stays locked), and the signal must still end it.
  const timer = setTimeout(
    () => process.exit(signal === 'SIGINT' ? 130 : 143),
    UNCLAIMED_SIGNAL_EXIT_MS,
  );
  timer.unref();
  signalTimers.push(timer);
}

/** Installs the early handlers when `argv` names a long-running command. */
export function catchEarlySignals(argv: readonly string[]): void {
  if (!LONG_RUNNING.has(argv[2] ?? '')) return;
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

/**
 * Removes the early handlers and returns the signal they caught, if any. The caller installs
 * its own handlers first, so that no signal falls between the two.
 */
export function takeEarlySignal(): NodeJS.Signals | undefined {
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  for (const timer of signalTimers.splice(0)) clearTimeout(timer);
  return caught;
}
