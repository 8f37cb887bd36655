/** `slipway serve` child processes for tests that restart, kill or share a data directory. */
import { spawnCli, type CliProcess } from './cli.js';
import type { JobBody } from './execution.js';

export interface ServeProcess extends CliProcess {
  /** Base URL of the API, read from the process's log. */
  url: string;
}

/**
 * Starts `slipway serve` with `env` (see spawnCli), and resolves once its output
 * contains `ready` (by default, the in-process worker's registration). The URL comes from the
 * log, so API_PORT may be 0.
 */
export async function startServe(
  env: Record<string, string>,
  ready = 'registered; waiting for tasks',
): Promise<ServeProcess> {
  const { child, output, exited } = spawnCli('serve', env);
  const deadline = Date.now() + 20_000;
  while (!output().includes(ready)) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error(`serve did not log "${ready}":\n${output()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const url = /API listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(output())?.[1];
  if (url === undefined) throw new Error(`serve logged no API address:\n${output()}`);
  return { child, url, output, exited };
}

/** Sends `signal` to a serve process that still runs, then waits for it to exit. */
export async function stopServe(serve: ServeProcess, signal: NodeJS.Signals = 'SIGTERM') {
  if (serve.child.exitCode === null && serve.child.signalCode === null) serve.child.kill(signal);
  return serve.exited;
}

/** Sends a request with a bearer token; returns the status and the JSON body. */
export async function callServe(
  serve: ServeProcess,
  token: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: JobBody }> {
  const response = await fetch(`${serve.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json()) as JobBody };
}
