/**
 * The local executor: each step runs as `/bin/sh -c <run>` in its own process group (a
 * detached child), in the task's workspace. Cancel and timeout signal the whole group, so
 * grandchildren stop too; after each step the group is killed, so background processes a
 * step left behind do not outlive it.
 *
 * A process that moves itself into a new session or process group (setsid, a daemonizing
 * server) leaves the group, but it keeps the environment it started with. Every step's
 * environment carries a random SLIPWAY_PROCESS_MARK, and the same kills also reach each
 * process whose /proc/<pid>/environ contains it.
 *
 * NOTE: a process escapes both when it starts with a cleared environment (env -i) or
 * without the variable, and when it writes its process title over the environment block, as
 * Perl 5.36 does for a long `$0 = ...`. Outside Linux there is no /proc to search.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import {
  stepHeader,
  type ExecutionResult,
  type ExecutionSpec,
  type Executor,
  type OutputSink,
} from './executor.js';

/** Milliseconds between SIGTERM and SIGKILL when a step is stopped. */
export const KILL_GRACE_MS = 2_000;

/** The variable that marks every process a task's steps start (see killMarked). */
export const PROCESS_MARK_VARIABLE = 'SLIPWAY_PROCESS_MARK';

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

export class LocalExecutor implements Executor {
  readonly name = 'local' as const;
  readonly #groups = new Map<string, Set<number>>();
  readonly #marks = new Map<string, string>();

  async run(
    spec: ExecutionSpec,
    output: OutputSink,
    signal: AbortSignal,
  ): Promise<ExecutionResult> {
    const mark = randomBytes(12).toString('hex');
    this.#marks.set(spec.taskId, mark);
    const env = { ...inheritedEnv(), ...spec.env, [PROCESS_MARK_VARIABLE]: mark };
    for (const [index, step] of spec.steps.entries()) {
      if (signal.aborted) return { exitCode: 130 };
      output.note(stepHeader(index, spec.steps.length, step));
      const exitCode = await this.#runStep(spec, step.run, env, mark, output, signal);
      if (signal.aborted) return { exitCode };
      if (exitCode !== 0) {
        output.note(`[slipway] step "${step.name}" exited with code ${exitCode}`);
        return { exitCode, failedStep: step.name };
      }
    }
    return { exitCode: 0 };
  }

  async cleanup(spec: ExecutionSpec): Promise<void> {
    for (const pid of this.#groups.get(spec.taskId) ?? []) killGroup(pid, 'SIGKILL');
    this.#groups.delete(spec.taskId);
    const mark = this.#marks.get(spec.taskId);
    if (mark !== undefined) await killMarked(mark, 'SIGKILL');
    this.#marks.delete(spec.taskId);
  }

  #runStep(
    spec: ExecutionSpec,
    command: string,
    env: Record<string, string>,
    mark: string,
    output: OutputSink,
    signal: AbortSignal,
  ): Promise<number> {
    return new Promise((resolve) => {
      let child: ChildProcess;
      try {
        child = spawn('/bin/sh', ['-c', command], {
          cwd: spec.workspace,
          env,
          detached: true,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
      } catch (error) {
        output.note(`[slipway] could not start the step: ${(error as Error).message}`);
        resolve(127);
        return;
      }
      const pid = child.pid;
      const groups = this.#groups.get(spec.taskId) ?? new Set<number>();
      this.#groups.set(spec.taskId, groups);
      if (pid !== undefined) groups.add(pid);

      let killTimer: NodeJS.Timeout | undefined;
      const stop = () => {
        if (pid === undefined) return;
        killGroup(pid, 'SIGTERM');
        void killMarked(mark, 'SIGTERM');
        killTimer = setTimeout(() => {
          killGroup(pid, 'SIGKILL');
          void killMarked(mark, 'SIGKILL');
        }, KILL_GRACE_MS);
      };
      signal.addEventListener('abort', stop, { once: true });
      child.stdout?.on('data', (chunk: Buffer) => output.write(chunk));
      child.stderr?.on('data', (chunk: Buffer) => output.write(chunk));
      child.on('error', (error) => {
        output.note(`[slipway] could not start the step: ${error.message}`);
      });

      let exitCode = 0;
      let markedKilled: Promise<number> | undefined;
      child.once('exit', (code, killedBy) => {
        exitCode = code ?? 128 + signalNumber(killedBy);
        // Background processes of the step would keep its pipes open and outlive it.
        if (pid !== undefined) killGroup(pid, 'SIGKILL');
        markedKilled = killMarked(mark, 'SIGKILL');
      });
      child.once('close', () => {
        clearTimeout(killTimer);
        signal.removeEventListener('abort', stop);
        if (pid !== undefined) groups.delete(pid);
        // The next step starts once the processes this one left behind are gone.
        void (markedKilled ?? Promise.resolve(0)).then(() => resolve(exitCode));
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
 * pool: with about 100 processes it took 3 ms of reads, which would otherwise hold the event
 * loop that `slipway serve` shares with the API. It never rejects.
 */
export async function killMarked(mark: string, signal: NodeJS.Signals): Promise<number> {
  const entry = Buffer.from(`${PROCESS_MARK_VARIABLE}=${mark}\0`);
  const signalled = new Set<number>();
  for (let round = 0; round < MARK_SEARCH_ROUNDS; round += 1) {
    const found = (await markedProcesses(entry)).filter((pid) => !signalled.has(pid));
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

async function markedProcesses(entry: Buffer): Promise<number[]> {
  let names: string[];
  try {
    names = await fs.promises.readdir('/proc');
  } catch {
    return [];
  }
  const pids = names.filter((name) => /^\d+$/.test(name) && Number(name) !== process.pid);
  const marked = await Promise.all(pids.map((pid) => hasEntry(pid, entry)));
  return pids.filter((_, index) => marked[index]).map(Number);
}

async function hasEntry(pid: string, entry: Buffer): Promise<boolean> {
  let environ: Buffer;
  try {
    environ = await fs.promises.readFile(`/proc/${pid}/environ`);
  } catch {
    // The process has ended, or belongs to another user.
    return false;
  }
  const position = environ.indexOf(entry);
  // Each variable starts the buffer or follows a NUL.
  return position === 0 || (position > 0 && environ[position - 1] === 0);
}

function signalNumber(name: NodeJS.Signals | null): number {
  return name === null ? 0 : (os.constants.signals[name] ?? 0);
}
