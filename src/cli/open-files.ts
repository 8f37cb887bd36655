/**
 * The limit on open files, checked before the program loads. Node.js loads Slipway's modules
 * with many files open at once, so under a low limit it failed with a misleading "Cannot find
 * package" or EMFILE error that named no limit.
 */
import fs from 'node:fs';

/**
 * Open files a process needs at least. On the test machine `slipway serve` failed to load
 * its modules with a limit of 256 and started with 300. Connections, log files and SQLite's
 * files each take one more, so this leaves room for about 200 of them.
 */
export const MIN_OPEN_FILES = 512;

/**
 * Returns the soft limit on open files from `limits` (the text of /proc/self/limits), or
 * undefined when there is no such file, as outside Linux, or it has no such line.
 */
export function openFilesLimit(limits = readLimits()): number | undefined {
  const line = limits?.split('\n').find((row) => row.startsWith('Max open files'));
  const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
  if (soft === undefined) return undefined;
  if (soft === 'unlimited') return Infinity;
  const value = Number(soft);
  return Number.isInteger(value) ? value : undefined;
}

function readLimits(): string | undefined {
  try {
    return fs.readFileSync('/proc/self/limits', 'utf8');
  } catch {
    return undefined;
  }
}

/** Returns the message for a limit below MIN_OPEN_FILES, or undefined when it is enough. */
export function openFilesProblem(limit: number | undefined): string | undefined {
  if (limit === undefined || limit >= MIN_OPEN_FILES) return undefined;
  // Node.js raises the soft limit to the hard limit as it starts, so the hard limit is low.
  return (
    `slipway: this process may open only ${limit} files (ulimit -Hn), fewer than the ` +
    `${MIN_OPEN_FILES} it needs to load its modules and serve; raise the hard limit ` +
    '(ulimit -n 4096 as root, LimitNOFILE=4096 in a systemd unit, or ' +
    'docker run --ulimit nofile=4096) and start it again\n'
  );
}
