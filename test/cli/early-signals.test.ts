/**
 * The entry point's early signal handlers, in a child process of their own: a signal caught
 * while a long-running command loads is kept for the roles, and other commands keep Node's
 * default action.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { CLI_PATH, ensureBuilt } from '../support/cli.js';

const MODULE = pathToFileURL(
  path.join(path.dirname(CLI_PATH), '..', 'app', 'stop-signals.js'),
).href;

/**
 * Runs a child that installs the early handlers for `command`, prints "ready", waits for
 * "take" on stdin, then prints the signal that takeEarlySignal returns and exits 0.
 */
function startChild(command: string) {
  const script = `
    const { catchEarlySignals, takeEarlySignal } = await import(${JSON.stringify(MODULE)});
    catchEarlySignals(['node', 'slipway', ${JSON.stringify(command)}]);
    process.stdout.write('ready\\n');
    process.stdin.once('data', () => {
      process.stdout.write('taken ' + String(takeEarlySignal()) + '\\n');
      process.exit(0);
    });
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
  const waitFor = async (text: string) => {
    const deadline = Date.now() + 10_000;
    while (!output.includes(text)) {
      if (Date.now() > deadline) throw new Error(`child never printed "${text}":\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  };
  return { child, exited, waitFor, output: () => output };
}

describe('early signal handlers', () => {
  beforeAll(async () => {
    await ensureBuilt();
  });

  it('keeps a signal for the roles', async () => {
    const { child, exited, waitFor, output } = startChild('serve');
    await waitFor('ready');
    child.kill('SIGTERM');
    // The process must still be alive to hand the signal over.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(child.exitCode, output()).toBeNull();
    child.stdin.write('take\n');
    const [code, signal] = await exited;
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(output()).toContain('taken SIGTERM');
  });

  it('reports no signal when none came', async () => {
    const { child, exited, waitFor, output } = startChild('worker');
    await waitFor('ready');
    child.stdin.write('take\n');
    expect((await exited)[0]).toBe(0);
    expect(output()).toContain('taken undefined');
  });

  it('leaves short commands to Node', async () => {
    const { child, exited, waitFor } = startChild('token');
    await waitFor('ready');
    child.kill('SIGTERM');
    const [code, signal] = await exited;
    expect({ code, signal }).toEqual({ code: null, signal: 'SIGTERM' });
  });
});
