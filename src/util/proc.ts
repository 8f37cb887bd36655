import fs from 'node:fs';

/**
 * Returns when the process with this pid started, in clock ticks after boot (field 22 of
 * /proc/<pid>/stat), or undefined when /proc has no such process or the process has exited
 * and only waits for its parent to reap it.
 */
export function processStartTicks(pid: number): number | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name in parentheses may contain spaces, so fields are counted after it.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // State Z (zombie) or X (dead): the process has exited.
  if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
  const ticks = Number(fields[19]);
  return Number.isFinite(ticks) ? ticks : undefined;
}
