/**
 * The local executor: each step runs as `/bin/sh -c <run>` in its own process group (a
 * detached child), in the task's workspace. Cancel and timeout signal the whole group, so
 * grandchildren stop too; after each step the group is killed, so background processes a
 * step left behind do not outlive it. A guard process in the group kills it when the worker
 * dies, even by SIGKILL.
 *
 * A process that moves itself into a new session or process group (setsid, a daemonizing
 * server) leaves the group. Where the worker may make cgroups (see cgroup.ts), each task's
 * steps run in a cgroup of their own, which no process can leave, and the same kills reach
 * every process in it. Every step's environment also carries a random SLIPWAY_PROCESS_MARK,
 * and the kills reach each process whose /proc/<pid>/environ contains it.
 *
 * NOTE: without a step cgroup, a process escapes both the group and the mark when it starts
 * with a cleared environment (env -i) or without the variable. It also escapes when it writes
 * its process title over the environment block, as Perl 5.36 does for a long `$0 = ...`.
 * Outside Linux there is no /proc to search. When such a process keeps the step's output
 * open, the step ends OUTPUT_CLOSE_GRACE_MS after its shell exits, and the process's later
 * output is not logged.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from '../log.js';
import { processStartTicks } from '../util/proc.js';
import {
  listStepCgroups,
  StepCgroup,
  stepCgroupName,
  stepCgroupParent,
  type StepCgroupOwner,
} from './cgroup.js';
import {
  ExecutionError,
  stepHeader,
  type ExecutionResult,
  type ExecutionSpec,
  type Executor,
  type OutputSink,
  type StoppedLeftovers,
} from './executor.js';

/** Milliseconds between SIGTERM and SIGKILL when a step is stopped. */
export const KILL_GRACE_MS = 2_000;

/**
 * Milliseconds that a step's output pipes may stay open after its shell exited and its group and
 * marked processes were killed. Past that, the worker closes its ends of the pipes, because a
 * process that escaped both kills keeps them open for as long as it runs.
 */
export const OUTPUT_CLOSE_GRACE_MS = 2_000;

/** The variable that marks every process a task's steps start (see killMarked). */
export const PROCESS_MARK_VARIABLE = 'SLIPWAY_PROCESS_MARK';
/** The variable that names the worker process of every step process (see killOrphanedSteps). */
export const PROCESS_OWNER_VARIABLE = 'SLIPWAY_PROCESS_OWNER';
/**
 * The outer shell of every step. It first moves itself into the task's cgroup when `$2` names
 * that cgroup's `cgroup.procs`, so every process it starts is in the cgroup too. It then starts
 * the guard that kills the step's process group once fd 3 reaches end of file, closes fd 3 for
 * the step itself, and runs the step. The guard is started from a subshell that exits at once,
 * so it is not a child of the step's process.
 * Otherwise a step that waits for all its children (`exec` of a program that calls wait()
 * until ECHILD) would wait for the guard forever, and `pkill -P $$` would kill it.
 */
const STEP_SHELL =
  'exec 2>&1; ' +
  '[ -z "$2" ] || { echo $$ > "$2"; } 2>/dev/null; ' +
  '({ read -r line <&3; kill -KILL 0; } </dev/null >/dev/null 2>&1 &); ' +
  'exec 3<&-; exec /bin/sh -c "$1"';

/** Milliseconds between searches for step processes whose worker has died. */
const ORPHAN_SEARCH_INTERVAL_MS = 60_000;

/**
 * Milliseconds that removing a task's cgroup waits for its killed processes to end. A killed
 * process ends within milliseconds unless it waits on storage, so a cgroup still busy after
 * this is left for the next search for leftovers, which removes it then.
 */
const CGROUP_REMOVE_TIMEOUT_MS = 5_000;

/** Variables of the worker's own environment that steps inherit; everything else is dropped. */
const INHERITED_ENV = [
  'PATH',
  'HOME',
  'USER',
  'LOGNAME',
  'SHELL',
  'LANG',
  'LC_ALL',
  'TZ',
  'TMPDIR',
  'TERM',
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'NO_PROXY',
  'http_proxy',
  'https_proxy',
  'no_proxy',
  'NODE_EXTRA_CA_CERTS',
  'SSL_CERT_FILE',
];

/** The mark of a task's step processes, the pid of its first step's shell, and its cgroup. */
interface TaskMark {
  mark: string;
  firstPid?: number;
  cgroup?: StepCgroup;
}

export interface LocalExecutorOptions {
  /**
   * Whether to run each task's steps in a cgroup of their own when the host allows it (see
   * cgroup.ts). True by default, and false keeps to process groups and marks.
   */
  stepCgroups?: boolean;
}

export class LocalExecutor implements Executor {
  readonly name = 'local' as const;
  readonly #groups = new Map<string, Set<number>>();
  readonly #marks = new Map<string, TaskMark>();
  readonly #install: string;
  readonly #owner: string | undefined;
  /** This worker as the names of its step cgroups record it. */
  readonly #cgroupOwner: StepCgroupOwner | undefined;
  /** The cgroup below which the tasks' cgroups are made, when the host allows it. */
  readonly #cgroupParent: string | undefined;
  readonly #logger: Logger;
  #orphansSearchedAt = 0;
  readonly #leftoverListeners: Array<(stopped: StoppedLeftovers) => void> = [];
  readonly #unreported: StoppedLeftovers[] = [];

  /**
   * `workspaceRoot` is the folder of the tasks' workspaces. Its path identifies this install,
   * so the orphan search skips the steps of another Slipway install on the same host.
   */
  constructor(logger: Logger, workspaceRoot: string, options: LocalExecutorOptions = {}) {
    this.#logger = logger;
    this.#install = installId(workspaceRoot);
    const owner = processOwner(process.pid);
    this.#owner = owner === undefined ? undefined : `${owner}.${this.#install}`;
    const ticks = processStartTicks(process.pid);
    if (ticks !== undefined && PID_NAMESPACE !== undefined && options.stepCgroups !== false) {
      this.#cgroupOwner = { pid: process.pid, ticks: String(ticks), namespace: PID_NAMESPACE };
      this.#cgroupParent = stepCgroupParent();
    }
    logger.debug(
      { cgroup: this.#cgroupParent ?? null },
      this.#cgroupParent === undefined
        ? 'local steps run without cgroups: no writable cgroup v2 hierarchy'
        : 'local steps run in cgroups of their own',
    );
    // A worker killed with SIGKILL leaves its steps running. The next worker on the host
    // stops them when it starts, and any worker there does every minute while it runs tasks.
    void this.#searchOrphans();
  }

  async run(
    spec: ExecutionSpec,
    output: OutputSink,
    signal: AbortSignal,
  ): Promise<ExecutionResult> {
    if (Date.now() - this.#orphansSearchedAt >= ORPHAN_SEARCH_INTERVAL_MS) {
      void this.#searchOrphans();
    }
    const mark = randomBytes(12).toString('hex');
    const marked: TaskMark = { mark };
    this.#marks.set(spec.taskId, marked);
    const env: Record<string, string> = {
      ...inheritedEnv(),
      ...spec.env,
      [PROCESS_MARK_VARIABLE]: mark,
    };
    if (this.#owner !== undefined) env[PROCESS_OWNER_VARIABLE] = this.#owner;
    // spawn would reject such a variable with a message that quotes its value, which may be a
    // secret. The NUL would also keep that value from being masked in the log.
    for (const [name, value] of Object.entries(env)) {
      if (value.includes('\0')) {
        throw new ExecutionError(
          `variable ${name} contains a NUL character, which no process can receive`,
        );
      }
    }
    if (this.#cgroupParent !== undefined && this.#cgroupOwner !== undefined) {
      const name = stepCgroupName(this.#install, this.#cgroupOwner, mark);
      marked.cgroup = StepCgroup.create(this.#cgroupParent, name);
      if (marked.cgroup === undefined) {
        this.#logger.warn(
          { task: spec.taskId, parent: this.#cgroupParent },
          'could not make a cgroup for the steps; they run in process groups alone',
        );
      } else {
        liveStepCgroups.add(marked.cgroup);
      }
    }
    for (const [index, step] of spec.steps.entries()) {
      if (signal.aborted) return { exitCode: 130 };
      output.note(stepHeader(index, spec.steps.length, step));
      const exitCode = await this.#runStep(spec, step, env, marked, output, signal);
      if (signal.aborted) return { exitCode };
      if (exitCode !== 0) {
        output.note(`[slipway] step "${step.name}" exited with code ${exitCode}`);
        return { exitCode, failedStep: step.name };
      }
    }
    return { exitCode: 0 };
  }

  /** Kills the step processes of ended workers of this install, and waits for the search. */
  stopLeftovers(): Promise<void> {
    return this.#searchOrphans();
  }

  onLeftoversStopped(listener: (stopped: StoppedLeftovers) => void): void {
    for (const stopped of this.#unreported.splice(0)) listener(stopped);
    this.#leftoverListeners.push(listener);
  }

  #searchOrphans(): Promise<void> {
    this.#orphansSearchedAt = Date.now();
    return killOrphanedSteps(this.#install, this.#cgroupParent).then(
      (result) => {
        logOrphanedSteps(this.#logger, result);
        if (result.killed.length === 0 && result.failed.length === 0) return;
        // The first search runs before the worker has registered and can report.
        if (this.#leftoverListeners.length === 0) this.#unreported.push(result);
        for (const listener of this.#leftoverListeners) listener(result);
      },
      (error: unknown) =>
        this.#logger.error({ err: error }, 'search for step processes of ended workers failed'),
    );
  }

  async cleanup(spec: ExecutionSpec): Promise<void> {
    for (const pid of this.#groups.get(spec.taskId) ?? []) killGroup(pid, 'SIGKILL');
    this.#groups.delete(spec.taskId);
    const marked = this.#marks.get(spec.taskId);
    if (marked !== undefined) await killMarked(marked.mark, 'SIGKILL', marked.firstPid);
    this.#marks.delete(spec.taskId);
    const cgroup = marked?.cgroup;
    if (cgroup === undefined) return;
    // The cgroup stays live while it is removed, so that a search for leftovers meanwhile
    // does not report the processes of a task that ended normally.
    const removed = await cgroup.remove(CGROUP_REMOVE_TIMEOUT_MS);
    liveStepCgroups.delete(cgroup);
    if (!removed) {
      this.#logger.warn(
        { task: spec.taskId, cgroup: cgroup.dir, pids: cgroup.pids() },
        'processes of the steps did not end after SIGKILL; the next search for leftovers ' +
          'removes their cgroup',
      );
    }
  }

  #runStep(
    spec: ExecutionSpec,
    step: ExecutionSpec['steps'][number],
    env: Record<string, string>,
    marked: TaskMark,
    output: OutputSink,
    signal: AbortSignal,
  ): Promise<number> {
    const { mark, cgroup } = marked;
    const { name: stepName, run: command } = step;
    return new Promise((resolve, reject) => {
      let child: ChildProcess;
      // A step that could not start is Slipway's or the host's failure, not the code's, so it
      // ends the task as error rather than failure.
      const notStarted = (error: Error) =>
        new ExecutionError(`could not start the step: ${error.message}`, { cause: error });
      let startError: Error | undefined;
      try {
        // The step's stderr goes into the pipe of its stdout, so the log keeps the order in
        // which the step wrote. The command reaches the inner shell as an argument, unquoted.
        // A guard in the step's group reads fd 3, whose other end only this process holds. It
        // kills the group at end of file, which comes when this process dies, even by SIGKILL.
        child = spawn('/bin/sh', ['-c', STEP_SHELL, 'sh', command, cgroup?.procsPath ?? ''], {
          cwd: spec.workspace,
          env,
          detached: true,
          stdio: stepStdio(),
        });
      } catch (error) {
        output.note(`[slipway] could not start the step: ${(error as Error).message}`);
        reject(notStarted(error as Error));
        return;
      }
      const pid = child.pid;
      const groups = this.#groups.get(spec.taskId) ?? new Set<number>();
      this.#groups.set(spec.taskId, groups);
      if (pid !== undefined) groups.add(pid);
      if (pid !== undefined) liveStepGroups.add(pid);
      if (pid !== undefined) marked.firstPid ??= pid;

      let killTimer: NodeJS.Timeout | undefined;
      const stop = () => {
        if (pid === undefined) return;
        killGroup(pid, 'SIGTERM');
        cgroup?.signal('SIGTERM');
        void killMarked(mark, 'SIGTERM', pid);
        killTimer = setTimeout(() => {
          killGroup(pid, 'SIGKILL');
          cgroup?.signal('SIGKILL');
          void killMarked(mark, 'SIGKILL', pid);
        }, KILL_GRACE_MS);
      };
      signal.addEventListener('abort', stop, { once: true });
      child.stdout?.on('data', (chunk: Buffer) => output.write(chunk));
      child.stderr?.on('data', (chunk: Buffer) => output.write(chunk));
      child.on('error', (error) => {
        output.note(`[slipway] could not start the step: ${error.message}`);
        if (child.pid === undefined) startError = error;
      });

      let exitCode = 0;
      let markedKilled: Promise<number> | undefined;
      let closeTimer: NodeJS.Timeout | undefined;
      let closed = false;
      const closeOutput = () => {
        output.note(
          `[slipway] a process that step "${stepName}" started still holds its output open, so ` +
            "later output is not logged. It may still run: it left the step's process group, " +
            `and the search for ${PROCESS_MARK_VARIABLE} did not stop it (env -i clears the ` +
            "variable, and another user's process cannot be killed)",
        );
        this.#logger.warn(
          { task: spec.taskId, step: stepName, pid },
          'a process that escaped the step still holds its output open; closed the output pipes',
        );
        for (const stream of child.stdio) stream?.destroy();
      };
      child.once('exit', (code, killedBy) => {
        exitCode = code ?? 128 + signalNumber(killedBy);
        // Background processes of the step would keep its pipes open and outlive it.
        if (pid !== undefined) killGroup(pid, 'SIGKILL');
        cgroup?.signal('SIGKILL');
        if (pid !== undefined) liveStepGroups.delete(pid);
        markedKilled = killMarked(mark, 'SIGKILL', pid);
        // A process that escaped both kills would otherwise keep the step and its task running.
        void markedKilled.then(() => {
          if (!closed) closeTimer = setTimeout(closeOutput, OUTPUT_CLOSE_GRACE_MS);
        });
      });
      child.once('close', () => {
        closed = true;
        clearTimeout(closeTimer);
        clearTimeout(killTimer);
        signal.removeEventListener('abort', stop);
        if (pid !== undefined) groups.delete(pid);
        // The next step starts once the processes this one left behind are gone.
        void (markedKilled ?? Promise.resolve(0)).then(() =>
          startError === undefined ? resolve(exitCode) : reject(notStarted(startError)),
        );
      });
    });
  }
}

function inheritedEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of INHERITED_ENV) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  return env;
}

/** The close-on-exec bit in the flags line of /proc/self/fdinfo/<fd> (octal), as on Linux. */
const O_CLOEXEC = 0o2000000;
/** Descriptors that each step would inherit and gets as /dev/null instead, found once. */
let inheritedDescriptors: number[] | undefined;
let devNullDescriptor: number | undefined;

/**
 * Returns the stdio of a step's shell: no stdin, pipes for stdout and stderr, and fd 3 for the
 * guard. A descriptor open in this process without close-on-exec, inherited from whatever
 * started it (a supervisor, a shell's `exec 200>file`), would pass to every step. A step could
 * write there, or keep a pipe open after the worker exits. Node.js 20 leaves such descriptors
 * as they are (seen for fd 20 and above), so each step gets /dev/null at those numbers.
 */
function stepStdio(): Array<'ignore' | 'pipe' | number> {
  const stdio: Array<'ignore' | 'pipe' | number> = ['ignore', 'pipe', 'pipe', 'pipe'];
  inheritedDescriptors ??= findInheritedDescriptors();
  if (inheritedDescriptors.length === 0) return stdio;
  devNullDescriptor ??= fs.openSync('/dev/null', 'r+');
  for (const fd of inheritedDescriptors) {
    while (stdio.length <= fd) stdio.push('ignore');
    stdio[fd] = devNullDescriptor;
  }
  return stdio;
}

/** Returns the descriptors above 3 that are open in this process without close-on-exec. */
function findInheritedDescriptors(): number[] {
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc/self/fd');
  } catch {
    // Outside Linux there is no /proc to read, and steps inherit what the worker inherited.
    return [];
  }
  const found: number[] = [];
  for (const entry of entries) {
    const fd = Number(entry);
    if (!Number.isInteger(fd) || fd <= 3) continue;
    try {
      const flags = /^flags:\s*([0-7]+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
      if (flags !== null && (parseInt(flags[1]!, 8) & O_CLOEXEC) === 0) found.push(fd);
    } catch {
      // The descriptor of the directory listing itself, closed since.
    }
  }
  return found.sort((a, b) => a - b);
}

/** Process groups of the steps running in this process, for killLiveSteps. */
const liveStepGroups = new Set<number>();
/** Cgroups of the tasks of this process whose cleanup has not run, for killLiveSteps. */
const liveStepCgroups = new Set<StepCgroup>();

/** How long killLiveSteps waits for the killed cgroups to empty, so it can remove them. */
const KILLED_CGROUP_WAIT_MS = 500;

/**
 * Kills the process group and the cgroup of every step running in this process, at once and
 * synchronously, for a process that exits without stopping its tasks (a second stop signal).
 * Returns how many groups it signalled. It removes each killed cgroup once empty, waiting up to
 * KILLED_CGROUP_WAIT_MS. Processes that left their group without a cgroup, and cgroups still
 * not empty, are found at the next start.
 */
export function killLiveSteps(): number {
  for (const cgroup of liveStepCgroups) cgroup.signal('SIGKILL');
  removeWhenEmpty([...liveStepCgroups], KILLED_CGROUP_WAIT_MS);
  liveStepCgroups.clear();
  let killed = 0;
  for (const pid of liveStepGroups) {
    try {
      killGroup(pid, 'SIGKILL');
      killed += 1;
    } catch {
      // Not ours to kill any more (EPERM): the next start's search for leftovers reports it.
    }
  }
  liveStepGroups.clear();
  return killed;
}

/**
 * Removes each cgroup once its processes have exited, polling every 5 ms for up to `waitMs`.
 * It blocks the thread, for a process about to exit.
 */
function removeWhenEmpty(cgroups: StepCgroup[], waitMs: number): void {
  const deadline = Date.now() + waitMs;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  let left = cgroups.filter((cgroup) => !cgroup.removeIfEmpty());
  while (left.length > 0 && Date.now() < deadline) {
    Atomics.wait(pause, 0, 0, 5);
    left = left.filter((cgroup) => !cgroup.removeIfEmpty());
  }
}

/** Sends `signal` to every process of the group led by `pid`; a gone group is fine. */
export function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

/**
 * Sends `signal` to every other process whose environment contains the mark, and resolves to
 * how many there were. It searches again while it finds any, because a marked process may
 * start another between the search and the kill. The search reads /proc on libuv's thread
 * pool: reading every process took about 3 ms with 100 processes, on the event loop that
 * `slipway serve` shares with the API. `startedAfter`, the pid of the step's shell, limits
 * it to the processes started since (see processEnvironments). It never rejects.
 */
export async function killMarked(
  mark: string,
  signal: NodeJS.Signals,
  startedAfter?: number,
): Promise<number> {
  const entry = Buffer.from(`${PROCESS_MARK_VARIABLE}=${mark}\0`);
  const signalled = new Set<number>();
  for (let round = 0; round < MARK_SEARCH_ROUNDS; round += 1) {
    const found = (await markedProcesses(entry, startedAfter)).filter((pid) => !signalled.has(pid));
    if (found.length === 0) break;
    for (const pid of found) {
      signalled.add(pid);
      try {
        process.kill(pid, signal);
      } catch {
        // ESRCH: it has ended since. EPERM: it belongs to another user, so nothing here can stop it.
      }
    }
  }
  return signalled.size;
}

const MARK_SEARCH_ROUNDS = 5;

async function markedProcesses(entry: Buffer, startedAfter?: number): Promise<number[]> {
  const environs = await processEnvironments(startedAfter);
  return [...environs].filter(([, environ]) => entryAt(environ, entry) >= 0).map(([pid]) => pid);
}

/** A step process whose worker process has ended, with the task it ran a step of. */
export interface OrphanedStep {
  pid: number;
  /** SLIPWAY_TASK_ID from the process's environment; undefined when it has none. */
  taskId: string | undefined;
}

export interface OrphanedStepsKilled {
  killed: OrphanedStep[];
  /** Processes that could not be signalled, with the error code (EPERM: another user's). */
  failed: Array<OrphanedStep & { code: string }>;
}

/**
 * Sends SIGKILL to every step process of the install whose worker process has ended, and
 * resolves to the processes it killed and those it could not. A process that ended in between
 * counts as neither. With `cgroupParent`, the step cgroups of such workers below it are
 * killed and removed first.
 */
export async function killOrphanedSteps(
  install: string,
  cgroupParent?: string,
): Promise<OrphanedStepsKilled> {
  const result: OrphanedStepsKilled = { killed: [], failed: [] };
  if (cgroupParent !== undefined)
    result.killed.push(...(await killOrphanedCgroups(install, cgroupParent)));
  const killedPids = new Set(result.killed.map((step) => step.pid));
  for (const orphan of await findOrphanedSteps(install)) {
    if (killedPids.has(orphan.pid)) continue;
    try {
      process.kill(orphan.pid, 'SIGKILL');
      result.killed.push(orphan);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? String(error);
      if (code !== 'ESRCH') result.failed.push({ ...orphan, code });
    }
  }
  return result;
}

/**
 * Kills the processes of the install's step cgroups below `parent` whose worker has ended, as
 * findOrphanedSteps judges workers, and removes those cgroups. Resolves to the processes that
 * were in them. A cgroup whose processes have not ended within a second stays for the next
 * search. Empty step cgroups of other installs' ended workers are removed too. A worker that
 * was killed leaves its cgroups, and another install may never start a worker again.
 */
async function killOrphanedCgroups(install: string, parent: string): Promise<OrphanedStep[]> {
  const killed: OrphanedStep[] = [];
  for (const { cgroup, install: cgroupInstall, owner } of listStepCgroups(parent)) {
    if (owner.namespace !== PID_NAMESPACE) continue;
    const key = `${owner.pid}.${owner.ticks}.${owner.namespace}`;
    // This process's own cgroups count as leftovers once their task's cleanup gave up on them.
    const ownLeftover = owner.pid === process.pid && !isLiveCgroup(cgroup.dir);
    if (!ownLeftover && processOwner(owner.pid) === key) continue;
    if (cgroupInstall !== install) {
      cgroup.removeIfEmpty();
      continue;
    }
    for (const pid of cgroup.pids()) killed.push({ pid, taskId: taskIdOf(pid) });
    await cgroup.remove(1_000);
  }
  return killed;
}

function isLiveCgroup(dir: string): boolean {
  for (const cgroup of liveStepCgroups) if (cgroup.dir === dir) return true;
  return false;
}

/** Returns SLIPWAY_TASK_ID from a process's environment, or undefined. */
function taskIdOf(pid: number): string | undefined {
  try {
    return variableValue(fs.readFileSync(`/proc/${pid}/environ`), 'SLIPWAY_TASK_ID');
  } catch {
    return undefined;
  }
}

/**
 * Finds the install's step processes whose worker process has ended. The owner variable
 * names the worker's pid and start time, so a new process that got a dead worker's pid does
 * not count as its owner. It also names the worker's pid namespace: a worker in a container
 * is pid 7 there and another process on the host, so only owners in this namespace are
 * judged. Last, it names the install (see installId). Steps of a worker in another namespace
 * or of another install, and of an older worker whose variable names neither, are left alone.
 */
async function findOrphanedSteps(install: string): Promise<OrphanedStep[]> {
  const alive = new Map<string, boolean>();
  const orphans: OrphanedStep[] = [];
  for (const [pid, environ] of await processEnvironments()) {
    const owner = variableValue(environ, PROCESS_OWNER_VARIABLE);
    if (owner === undefined) continue;
    const [pidText, ticks, namespace, ownerInstall] = owner.split('.');
    if (namespace === undefined || namespace !== PID_NAMESPACE) continue;
    if (ownerInstall !== install) continue;
    const ownerPid = Number(pidText);
    if (!Number.isInteger(ownerPid) || ownerPid <= 0) continue;
    let ownerAlive = alive.get(owner);
    if (ownerAlive === undefined) {
      ownerAlive = processOwner(ownerPid) === `${pidText}.${ticks}.${namespace}`;
      alive.set(owner, ownerAlive);
    }
    if (!ownerAlive) orphans.push({ pid, taskId: variableValue(environ, 'SLIPWAY_TASK_ID') });
  }
  return orphans;
}

/** Returns a variable's value from a NUL-separated environment, or undefined. */
function variableValue(environ: Buffer, name: string): string | undefined {
  const prefix = Buffer.from(`${name}=`);
  const start = entryAt(environ, prefix);
  if (start < 0) return undefined;
  const end = environ.indexOf(0, start);
  return environ.subarray(start + prefix.length, end < 0 ? undefined : end).toString();
}

/** Logs the step processes of ended workers that a search killed, and those it could not. */
function logOrphanedSteps(logger: Logger, { killed, failed }: OrphanedStepsKilled): void {
  if (killed.length > 0) {
    logger.warn(
      { pids: killed.map((step) => step.pid), taskIds: taskIdsOf(killed) },
      `killed ${killed.length} step processes left running by ended workers`,
    );
  }
  if (failed.length > 0) {
    logger.error(
      {
        pids: failed.map((step) => step.pid),
        taskIds: taskIdsOf(failed),
        codes: [...new Set(failed.map((step) => step.code))],
      },
      `failed to kill ${failed.length} step processes left running by ended workers; ` +
        'kill them as their owner or as root',
    );
  }
}

function taskIdsOf(steps: OrphanedStep[]): string[] {
  return [...new Set(steps.flatMap((step) => (step.taskId === undefined ? [] : [step.taskId])))];
}

/**
 * Returns the install's id for step owners: a hash of the workspace folder's real path, so
 * that two installs on one host, which keep their workspaces apart, get different ids.
 */
export function installId(workspaceRoot: string): string {
  // The folder may not exist yet, so the real path of its nearest existing parent is used.
  let existing = path.resolve(workspaceRoot);
  let rest = '';
  while (!fs.existsSync(existing) && path.dirname(existing) !== existing) {
    rest = path.join(path.basename(existing), rest);
    existing = path.dirname(existing);
  }
  const root = path.join(fs.realpathSync(existing), rest);
  return createHash('sha256').update(root).digest('hex').slice(0, 12);
}

/** This process's pid namespace: the inode number of /proc/self/ns/pid, or undefined. */
export const PID_NAMESPACE = readPidNamespace();

function readPidNamespace(): string | undefined {
  try {
    return /^pid:\[(\d+)\]$/.exec(fs.readlinkSync('/proc/self/ns/pid'))?.[1];
  } catch {
    return undefined;
  }
}

/**
 * Returns a process of this pid namespace as `<pid>.<start time>.<namespace>`, with the start
 * time in clock ticks after boot, or undefined when /proc does not list it.
 */
export function processOwner(pid: number): string | undefined {
  const ticks = processStartTicks(pid);
  if (ticks === undefined || PID_NAMESPACE === undefined) return undefined;
  return `${pid}.${ticks}.${PID_NAMESPACE}`;
}

/**
 * Reads the starting environment of every other process that can be read. With
 * `startedAfter`, only of processes with a higher pid: Linux hands out pids in increasing
 * order until they wrap around, so a step's processes have higher pids than the step's
 * shell. When the pids have wrapped since (the last pid handed out is lower), or that
 * cannot be read, every process is read.
 */
async function processEnvironments(startedAfter?: number): Promise<Map<number, Buffer>> {
  let names: string[];
  try {
    names = await fs.promises.readdir('/proc');
  } catch {
    return new Map();
  }
  const after = startedAfter !== undefined && (await lastPid()) >= startedAfter ? startedAfter : 0;
  const pids = names.filter(
    (name) => /^\d+$/.test(name) && Number(name) > after && Number(name) !== process.pid,
  );
  const environs = await Promise.all(
    pids.map((pid) =>
      // The process has ended, or belongs to another user.
      fs.promises.readFile(`/proc/${pid}/environ`).catch(() => undefined),
    ),
  );
  const found = new Map<number, Buffer>();
  pids.forEach((pid, index) => {
    const environ = environs[index];
    if (environ !== undefined) found.set(Number(pid), environ);
  });
  return found;
}

/** Returns the last pid Linux handed out in this pid namespace, or 0 when unknown. */
async function lastPid(): Promise<number> {
  try {
    return Number((await fs.promises.readFile('/proc/sys/kernel/ns_last_pid', 'utf8')).trim());
  } catch {
    return 0;
  }
}

/** Returns where the variable entry starts in the NUL-separated environment, or -1. */
function entryAt(environ: Buffer, entry: Buffer): number {
  let position = environ.indexOf(entry);
  // Each variable starts the buffer or follows a NUL.
  while (position > 0 && environ[position - 1] !== 0) {
    position = environ.indexOf(entry, position + 1);
  }
  return position;
}

function signalNumber(name: NodeJS.Signals | null): number {
  return name === null ? 0 : (os.constants.signals[name] ?? 0);
}
