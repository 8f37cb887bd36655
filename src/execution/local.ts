/**
 * The local executor: each step runs as `/bin/sh -c <run>` in its own process group (a
 * detached child), in the task's workspace. Cancel and timeout signal the whole group, so
 * grandchildren stop too; after each step the group is killed, so background processes a
 * step left behind do not outlive it.
 *
 * NOTE: a process that moves itself into a new session or process group (setsid, a
 * daemonizing server) escapes the group and is not killed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
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

  async run(
    spec: ExecutionSpec,
    output: OutputSink,
    signal: AbortSignal,
  ): Promise<ExecutionResult> {
    const env = { ...inheritedEnv(), ...spec.env };
    for (const [index, step] of spec.steps.entries()) {
      if (signal.aborted) return { exitCode: 130 };
      output.note(stepHeader(index, spec.steps.length, step));
      const exitCode = await this.#runStep(spec, step.run, env, output, signal);
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
  }

  #runStep(
    spec: ExecutionSpec,
    command: string,
    env: Record<string, string>,
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
        killTimer = setTimeout(() => killGroup(pid, 'SIGKILL'), KILL_GRACE_MS);
      };
      signal.addEventListener('abort', stop, { once: true });
      child.stdout?.on('data', (chunk: Buffer) => output.write(chunk));
      child.stderr?.on('data', (chunk: Buffer) => output.write(chunk));
      child.on('error', (error) => {
        output.note(`[slipway] could not start the step: ${error.message}`);
      });

      let exitCode = 0;
      child.once('exit', (code, killedBy) => {
        exitCode = code ?? 128 + signalNumber(killedBy);
        // Background processes of the step would keep its pipes open and outlive it.
        if (pid !== undefined) killGroup(pid, 'SIGKILL');
      });
      child.once('close', () => {
        clearTimeout(killTimer);
        signal.removeEventListener('abort', stop);
        if (pid !== undefined) groups.delete(pid);
        resolve(exitCode);
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

function signalNumber(name: NodeJS.Signals | null): number {
  return name === null ? 0 : (os.constants.signals[name] ?? 0);
}
