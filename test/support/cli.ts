/**
 * Runs the built `slipway` command (dist/cli/main.js) as a child process, as an operator
 * would. The build is refreshed first when any file under src/ is newer than it.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI_PATH = path.join(ROOT, 'dist', 'cli', 'main.js');
const LOCK_DIR = path.join(ROOT, 'dist', '.test-build-lock');

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    const mtime = entry.isDirectory() ? newestMtime(full) : fs.statSync(full).mtimeMs;
    newest = Math.max(newest, mtime);
  }
  return newest;
}

function isStale(): boolean {
  if (!fs.existsSync(CLI_PATH)) return true;
  return newestMtime(path.join(ROOT, 'src')) > fs.statSync(CLI_PATH).mtimeMs;
}

/**
 * Builds dist/ when it is missing or older than src/. Test files run in parallel forks, so a
 * lock directory keeps two builds from writing the same files at once.
 */
export async function ensureBuilt(): Promise<void> {
  if (!isStale()) return;
  fs.mkdirSync(path.dirname(LOCK_DIR), { recursive: true });
  for (;;) {
    try {
      fs.mkdirSync(LOCK_DIR);
      break;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  try {
    if (isStale()) execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT });
  } finally {
    fs.rmdirSync(LOCK_DIR);
  }
}

/** Returns a child's environment: only PATH and HOME of this process, plus `env`. */
export function childEnv(env: Record<string, string>): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...env };
}

/** A running `slipway` child process whose stdout and stderr are collected together. */
export interface CliProcess {
  child: ChildProcess;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves to the exit code, or null when a signal ended the process. */
  exited: Promise<number | null>;
}

/**
 * Starts `slipway <role>` with `env` added to childEnv's variables. `extraStdio` gives the
 * child's descriptors from 3 on, as spawn's stdio does.
 */
export function spawnCli(
  role: string,
  env: Record<string, string>,
  extraStdio: Array<'ignore' | 'pipe' | number> = [],
): CliProcess {
  const child = spawn(process.execPath, [CLI_PATH, role], {
    env: childEnv(env),
    stdio: ['ignore', 'pipe', 'pipe', ...extraStdio],
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { child, output: () => output, exited };
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `slipway <args>` to completion; kills it and rejects after `timeoutMs`. */
export function runCli(
  args: string[],
  env: Record<string, string>,
  timeoutMs = 20_000,
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_PATH, ...args], {
      env: childEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`slipway ${args.join(' ')} still running after ${timeoutMs} ms: ${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export interface SignalledRun {
  /** Whether `line` appeared, so that the signal was sent. */
  signalled: boolean;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Everything the process wrote to stdout and stderr. */
  output: string;
}

/**
 * Runs `slipway <args>` and sends it SIGTERM the moment its output first contains `line`,
 * then resolves once the process has exited. The signal thus arrives while the work that
 * follows that line is still running.
 */
export function signalOnLine(
  args: string[],
  env: Record<string, string>,
  line: string,
): Promise<SignalledRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_PATH, ...args], {
      env: childEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    let signalled = false;
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (!signalled && output.includes(line)) {
        signalled = true;
        child.kill('SIGTERM');
      }
    });
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve({ signalled, code, signal, output }));
  });
}

export interface ApiProcess {
  child: ChildProcess;
  url: string;
  /** Everything the process wrote to stdout so far. */
  stdout(): string;
  /** Sends SIGTERM and waits for the exit. */
  stop(): Promise<void>;
  /** Sends SIGKILL and waits for the exit. */
  kill(): Promise<void>;
}

/** Starts `slipway <role>` and resolves once it logs the URL it listens on. */
export function startApiProcess(
  env: Record<string, string>,
  role = 'api',
  timeoutMs = 20_000,
): Promise<ApiProcess> {
  const child = spawn(process.execPath, [CLI_PATH, role], {
    env: childEnv({ API_PORT: '0', LOG_LEVEL: 'info', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const waitExit = async (signal: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    await exited;
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`slipway ${role} did not start in ${timeoutMs} ms: ${stderr}${stdout}`));
    }, timeoutMs);
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout!.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      const match = /"url":"(http:\/\/[^"]+)"/.exec(stdout);
      if (match !== null) {
        clearTimeout(timer);
        resolve({
          child,
          url: match[1]!,
          stdout: () => stdout,
          stop: () => waitExit('SIGTERM'),
          kill: () => waitExit('SIGKILL'),
        });
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      const how = signal === null ? `with code ${code}` : `on ${signal}`;
      reject(new Error(`slipway ${role} exited ${how} before listening: ${stderr}${stdout}`));
    });
  });
}

/** Waits until `check` returns true, polling every 50 ms; throws naming `what` after the timeout. */
export async function waitUntil(
  check: () => boolean,
  what: string,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
