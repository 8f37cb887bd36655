/**
 * A cgroup v2 group for the processes of one task's local steps. Every process that a step
 * starts stays in its cgroup, whatever it does to its session, process group or environment.
 * So writing `cgroup.kill` stops each of them, also those that `setsid` and `env -i` hide from
 * the process group kill and the mark search (see local.ts).
 *
 * The cgroups are made below the worker's own cgroup, in the cgroup v2 hierarchy that
 * /proc/self/mountinfo lists. That takes write access to it, which root has on most hosts and
 * a user has where the service manager delegates a subtree (systemd's `Delegate=yes`), and
 * `cgroup.kill`, which Linux has since 5.14. Without them, stepCgroupParent returns undefined
 * and the local executor works as before, with process groups and marks alone.
 */
import fs from 'node:fs';
import path from 'node:path';

/** Prefix of the name of every step cgroup, before the install id (see stepCgroupName). */
const NAME_PREFIX = 'slipway-steps';
/** Milliseconds between two attempts to remove a cgroup whose killed processes still run. */
const REMOVE_RETRY_MS = 20;

/**
 * Returns the directory of this process's cgroup in the cgroup v2 hierarchy when this process
 * may make cgroups there, or undefined. `mountinfo` and `membership` default to this process's
 * /proc/self/mountinfo and /proc/self/cgroup.
 */
export function stepCgroupParent(mountinfo?: string, membership?: string): string | undefined {
  try {
    mountinfo ??= fs.readFileSync('/proc/self/mountinfo', 'utf8');
    membership ??= fs.readFileSync('/proc/self/cgroup', 'utf8');
  } catch {
    return undefined;
  }
  // In cgroup v2 the line is `0::<path>`, the path from the hierarchy's root.
  const own = /^0::(\/.*)$/m.exec(membership)?.[1];
  if (own === undefined) return undefined;
  // The hierarchy may be mounted more than once, and a read-only mount (a container's view,
  // say) may come before a writable one, so every mount that shows this cgroup is tried.
  for (const line of mountinfo.split('\n')) {
    // Fields: id, parent, device, root, mount point, options, optional fields, "-", type.
    const [before, after] = line.split(' - ');
    if (after?.split(' ')[0] !== 'cgroup2') continue;
    const fields = before!.split(' ');
    const root = unescapeMountPath(fields[3]!);
    const mountPoint = unescapeMountPath(fields[4]!);
    // A mount of part of the hierarchy (a container's) shows only the cgroups below its root.
    let relative: string | undefined;
    if (root === '/') relative = own;
    else if (own === root) relative = '/';
    else if (own.startsWith(`${root}/`)) relative = own.slice(root.length);
    if (relative === undefined) continue;
    const parent = relative === '/' ? mountPoint : path.join(mountPoint, relative);
    try {
      fs.accessSync(parent, fs.constants.W_OK);
      return parent;
    } catch {
      // Read-only or missing here: another mount of the hierarchy may still be writable.
    }
  }
  return undefined;
}

/** Decodes the octal escapes that the kernel writes for space, tab, newline and backslash. */
function unescapeMountPath(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_match, octal: string) =>
    String.fromCharCode(parseInt(octal, 8)),
  );
}

/** The worker that made a step cgroup, as its name records it. */
export interface StepCgroupOwner {
  pid: number;
  /** The worker's start time in clock ticks after boot, which differs from a later process's with the same pid. */
  ticks: string;
  /** The inode number of the worker's pid namespace. */
  namespace: string;
}

/** Returns the name of a task's step cgroup, which records the install and the worker. */
export function stepCgroupName(install: string, owner: StepCgroupOwner, mark: string): string {
  return `${NAME_PREFIX}.${install}.${owner.namespace}.${owner.pid}.${owner.ticks}.${mark}`;
}

/** Returns the install and worker recorded in a step cgroup's name, or undefined for others. */
export function parseStepCgroupName(
  name: string,
): { install: string; owner: StepCgroupOwner } | undefined {
  const parts = name.split('.');
  if (parts.length !== 6 || parts[0] !== NAME_PREFIX) return undefined;
  const [, install, namespace, pidText, ticks] = parts as [string, string, string, string, string];
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  return { install, owner: { pid, ticks, namespace } };
}

export class StepCgroup {
  /** The file that a process writes its pid into to join the cgroup. */
  readonly procsPath: string;

  private constructor(readonly dir: string) {
    this.procsPath = path.join(dir, 'cgroup.procs');
  }

  /**
   * Makes the cgroup `name` below `parent` and returns it, or returns undefined when it cannot
   * be made or the kernel has no `cgroup.kill` (before Linux 5.14).
   */
  static create(parent: string, name: string): StepCgroup | undefined {
    const dir = path.join(parent, name);
    try {
      fs.mkdirSync(dir);
    } catch {
      return undefined;
    }
    if (!fs.existsSync(path.join(dir, 'cgroup.kill'))) {
      fs.rmdirSync(dir);
      return undefined;
    }
    return new StepCgroup(dir);
  }

  /** Removes the cgroup if no process is in it, and returns whether it is gone. */
  removeIfEmpty(): boolean {
    try {
      fs.rmdirSync(this.dir);
      return true;
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === 'ENOENT';
    }
  }

  /** Returns the cgroup at `dir`, made earlier, for the search for leftovers. */
  static open(dir: string): StepCgroup {
    return new StepCgroup(dir);
  }

  /** Returns the pids of the processes in the cgroup, or none once it is gone. */
  pids(): number[] {
    let text: string;
    try {
      text = fs.readFileSync(this.procsPath, 'utf8');
    } catch {
      return [];
    }
    return text
      .split('\n')
      .filter((line) => line !== '')
      .map(Number);
  }

  /**
   * Sends `signal` to every process in the cgroup. SIGKILL goes through `cgroup.kill`, which
   * also reaches the processes that fork meanwhile. Other signals go to each listed process.
   */
  signal(signal: NodeJS.Signals): void {
    if (signal === 'SIGKILL') {
      try {
        fs.writeFileSync(path.join(this.dir, 'cgroup.kill'), '1');
      } catch {
        // ENOENT: the cgroup is gone already.
      }
      return;
    }
    for (const pid of this.pids()) {
      try {
        process.kill(pid, signal);
      } catch {
        // ESRCH: it has ended since.
      }
    }
  }

  /**
   * Kills every process in the cgroup, waits up to `timeoutMs` for them to end, and removes
   * the cgroup. Returns whether it is gone. A cgroup with a process that has not ended yet
   * stays, for the next search for leftovers.
   */
  async remove(timeoutMs: number): Promise<boolean> {
    this.signal('SIGKILL');
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        fs.rmdirSync(this.dir);
        return true;
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return true;
        // EBUSY: a killed process has not ended yet.
        if (code !== 'EBUSY' || Date.now() >= deadline) return false;
      }
      await new Promise((resolve) => setTimeout(resolve, REMOVE_RETRY_MS));
    }
  }
}

/** Returns the step cgroups below `parent` with the install and worker that made each. */
export function listStepCgroups(
  parent: string,
): Array<{ cgroup: StepCgroup; install: string; owner: StepCgroupOwner }> {
  let names: string[];
  try {
    names = fs.readdirSync(parent);
  } catch {
    return [];
  }
  return names.flatMap((name) => {
    const parsed = parseStepCgroupName(name);
    if (parsed === undefined) return [];
    return [{ cgroup: StepCgroup.open(path.join(parent, name)), ...parsed }];
  });
}
