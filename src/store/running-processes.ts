/**
 * A record of the processes that have a database open, so that `slipway restore` can reject
 * a restore that would replace the file under them. Each long-running process writes one JSON file into
 * `<database>.processes/` and touches it every REFRESH_MS; it removes the file when it stops.
 *
 * An entry counts as alive when its process exists (same host, checked with signal 0) or,
 * for an entry written on another host sharing the volume, when it was touched within
 * STALE_MS. A process killed with SIGKILL leaves a file behind that stops counting as soon
 * as its pid is gone (same host) or STALE_MS after its last refresh (other hosts).
 *
 * NOTE: a pid that the system reuses for an unrelated process after a SIGKILL keeps the dead
 * process's entry counted as running; restore names the entry's file so it can be deleted.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface RunningProcess {
  /** Path of the entry's file in the process folder. */
  file?: string;
  pid: number;
  hostname: string;
  roles: string[];
  started_at: string;
  /**
   * When the process's API began to serve workers, after it renewed their leases; absent until
   * then and in processes without the API role.
   */
  serving_since?: string;
}

const REFRESH_MS = 10_000;
const STALE_MS = 3 * REFRESH_MS;

/** This process's entries by file, for markApiServing. */
const ownEntries = new Map<string, RunningProcess>();

export function processFolder(dbPath: string): string {
  return `${dbPath}.processes`;
}

/** Removes `file` if it exists, ignoring errors such as ENOTDIR when its directory is a file. */
function removeQuietly(file: string): void {
  try {
    fs.rmSync(file, { force: true });
  } catch {
    // The directory is missing or is a file, so it contains no entry to remove.
  }
}

/** Registers this process as a user of the database; call `stop` on the result when it ends. */
export function registerRunningProcess(
  dbPath: string,
  roles: readonly string[],
): { name: string; stop(): Promise<void> } {
  const folder = processFolder(dbPath);
  const file = path.join(folder, `${os.hostname()}-${process.pid}.json`);
  const entry: RunningProcess = {
    pid: process.pid,
    hostname: os.hostname(),
    roles: [...roles],
    started_at: new Date().toISOString(),
  };
  try {
    fs.mkdirSync(folder, { recursive: true });
    fs.writeFileSync(file, JSON.stringify(entry));
  } catch (error) {
    // A write that fails on a full disk leaves an empty entry for a process that will not run.
    removeQuietly(file);
    throw new Error(
      `cannot register this process in ${folder} (${(error as Error).message}); ` +
        'free space there, or move aside a file that has its name, then start again',
    );
  }
  ownEntries.set(file, entry);
  const timer = setInterval(() => {
    const now = new Date();
    fs.promises
      .utimes(file, now, now)
      .catch(() => fs.promises.writeFile(file, JSON.stringify(entry)))
      // The folder is gone (a test or an operator removed the data folder): nothing to touch.
      .catch(() => undefined);
  }, REFRESH_MS);
  timer.unref();
  return {
    name: 'process registration',
    async stop() {
      clearInterval(timer);
      ownEntries.delete(file);
      fs.rmSync(file, { force: true });
    },
  };
}

/**
 * Records in this process's entry whether its API serves workers, so that lease recovery in
 * other processes can tell whether workers can renew their leases (see apiServing). Returns
 * the error when the entry could not be written (its folder was deleted, say) instead of
 * throwing it, because an API that stops must close its server whatever became of the folder.
 */
export function markApiServing(dbPath: string, serving: boolean): Error | undefined {
  const file = path.join(processFolder(dbPath), `${os.hostname()}-${process.pid}.json`);
  const entry = ownEntries.get(file);
  if (entry === undefined) return undefined;
  if (serving) entry.serving_since = new Date().toISOString();
  else delete entry.serving_since;
  try {
    fs.writeFileSync(file, JSON.stringify(entry));
    return undefined;
  } catch (error) {
    return error instanceof Error ? error : new Error(String(error));
  }
}

/**
 * Lists the registered processes that are still alive and deletes the stale entries it finds.
 * This process's own entry is left out unless `includeSelf` is set.
 */
export function findRunningProcesses(
  dbPath: string,
  { includeSelf = false, now = Date.now() }: { includeSelf?: boolean; now?: number } = {},
): RunningProcess[] {
  const folder = processFolder(dbPath);
  let names: string[];
  try {
    names = fs.readdirSync(folder);
  } catch {
    return [];
  }
  const alive: RunningProcess[] = [];
  for (const name of names.filter((candidate) => candidate.endsWith('.json'))) {
    const file = path.join(folder, name);
    let entry: RunningProcess;
    let mtime: number;
    try {
      entry = JSON.parse(fs.readFileSync(file, 'utf8')) as RunningProcess;
      mtime = fs.statSync(file).mtimeMs;
    } catch {
      continue;
    }
    if (isSelf(entry)) {
      if (includeSelf) alive.push({ ...entry, file });
    } else if (isAlive(entry, mtime, now)) {
      alive.push({ ...entry, file });
    } else {
      fs.rmSync(file, { force: true });
    }
  }
  return alive;
}

function isSelf(entry: RunningProcess): boolean {
  return entry.hostname === os.hostname() && entry.pid === process.pid;
}

function isAlive(entry: RunningProcess, mtime: number, now: number): boolean {
  if (entry.hostname !== os.hostname()) return now - mtime < STALE_MS;
  try {
    process.kill(entry.pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
