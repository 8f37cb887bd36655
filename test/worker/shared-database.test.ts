/**
 * Two `slipway serve` processes on one data directory, each with its in-process worker.
 * Stopping one, or another client marking a worker offline, must leave the other worker
 * running jobs without spinning on claims.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CLI_PATH, childEnv, ensureBuilt, runCli, signalOnLine } from '../support/cli.js';
import Database from 'better-sqlite3';
import path from 'node:path';
import { writePipelineFile, type JobBody } from '../support/execution.js';
import { callServe, startServe, type ServeProcess } from '../support/serve.js';
import { makeTempDir } from '../support/server.js';

const ADMIN_TOKEN = 'slw_shared-database-admin-token-00000000';
const MARKER = `shared-database-done-${process.pid}`;
/** Claims one idle worker may send in the measuring window: a few re-registrations at most. */
const MAX_CLAIMS_IN_WINDOW = 10;
const WINDOW_MS = 3_000;

describe('serve processes sharing one database', { timeout: 60_000 }, () => {
  let dataDir: string;
  let pipelines: string;
  const started: ServeProcess[] = [];

  beforeAll(async () => {
    await ensureBuilt();
    dataDir = makeTempDir('slipway-shared-db-');
    pipelines = writePipelineFile(`
pipelines:
  quick:
    executor: local
    steps:
      - run: echo ${MARKER}
`);
  });

  afterEach(async () => {
    for (const serve of started.splice(0)) {
      if (serve.child.exitCode === null && serve.child.signalCode === null) {
        serve.child.kill('SIGTERM');
      }
      await serve.exited;
    }
  });

  afterAll(() => {
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  /** Environment of a `slipway serve` on the shared data directory, listening on `port`. */
  const serveEnv = (port: number): Record<string, string> => ({
    SLIPWAY_DATA_DIR: dataDir,
    SLIPWAY_PIPELINES: pipelines,
    SLIPWAY_ADMIN_TOKEN: ADMIN_TOKEN,
    SLIPWAY_EXECUTOR: 'local',
    SLIPWAY_WORKER_SHUTDOWN_SECONDS: '2',
    API_HOST: '127.0.0.1',
    API_PORT: String(port),
    LOG_LEVEL: 'info',
  });

  const startSharedServe = async (
    port: number,
    extraEnv: Record<string, string> = {},
    waitFor = 'registered; waiting for tasks',
  ): Promise<ServeProcess> => {
    const serve = await startServe({ ...serveEnv(port), ...extraEnv }, waitFor);
    started.push(serve);
    return serve;
  };

  const request = (serve: ServeProcess, method: string, path: string, body?: unknown) =>
    callServe(serve, ADMIN_TOKEN, method, path, body);

  /** Triggers a `quick` job through `serve` and waits until it has finished. */
  const runJob = async (serve: ServeProcess): Promise<JobBody> => {
    const triggered = await request(serve, 'POST', '/api/trigger/quick', { commit: 'abcdef1' });
    expect(triggered.status).toBe(201);
    const id = triggered.body.job_id as string;
    const deadline = Date.now() + 20_000;
    for (;;) {
      const job = (await request(serve, 'GET', `/api/job/${id}`)).body;
      if (['success', 'failure', 'error', 'cancelled', 'timed_out'].includes(job.status)) {
        return job;
      }
      if (Date.now() > deadline) throw new Error(`job ${id} is still ${job.status}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };

  /** Counts the claim requests `serve` received during the next `WINDOW_MS`. */
  const countClaims = async (serve: ServeProcess): Promise<number> => {
    const before = serve.output().length;
    await new Promise((resolve) => setTimeout(resolve, WINDOW_MS));
    return serve
      .output()
      .slice(before)
      .split('\n')
      .filter((line) => line.includes('request completed') && line.includes('/claim"')).length;
  };

  const registeredId = (serve: ServeProcess): string => {
    const match = /worker (\S+) registered; waiting for tasks/.exec(serve.output());
    expect(match, serve.output()).not.toBeNull();
    return match![1]!;
  };

  it('gives each process its own worker id', async () => {
    const first = await startSharedServe(5341);
    const second = await startSharedServe(5342);
    const firstId = registeredId(first);
    const secondId = registeredId(second);
    expect(firstId).not.toBe(secondId);
    expect(firstId).toContain(`-serve-${first.child.pid}-`);

    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);

    const claims = await countClaims(first);
    expect(claims).toBeLessThanOrEqual(MAX_CLAIMS_IN_WINDOW);
    const job = await runJob(first);
    expect(job.status, first.output()).toBe('success');
    expect(job.attempt).toBe(1);
  });

  it('rejects a second process with the same worker name', async () => {
    const first = await startSharedServe(5343, { SLIPWAY_WORKER_NAME: 'vm-serve' });
    const second = await startSharedServe(
      5344,
      { SLIPWAY_WORKER_NAME: 'vm-serve' },
      'returned 409',
    );
    expect(await second.exited).not.toBe(0);
    expect(second.output()).toContain('worker id "vm-serve" is already online');

    const claims = await countClaims(first);
    expect(claims).toBeLessThanOrEqual(MAX_CLAIMS_IN_WINDOW);
    const job = await runJob(first);
    expect(job.status, first.output()).toBe('success');
  });

  it('registers again after another client marks it offline', async () => {
    const serve = await startSharedServe(5345, { SLIPWAY_WORKER_NAME: 'vm-serve-offline' });
    const marked = await request(serve, 'POST', '/api/agent/workers/vm-serve-offline/status', {
      status: 'offline',
    });
    expect(marked.status).toBe(200);

    const claims = await countClaims(serve);
    expect(claims).toBeLessThanOrEqual(MAX_CLAIMS_IN_WINDOW);
    const reRegistered = serve
      .output()
      .split('\n')
      .filter((line) => line.includes('registering worker vm-serve-offline again'));
    expect(reRegistered).toHaveLength(1);
    expect(reRegistered[0]).toContain('worker_not_online');
    expect(serve.output()).toContain('worker vm-serve-offline registered again; waiting for tasks');

    const job = await runJob(serve);
    expect(job.status, serve.output()).toBe('success');
    const logs = await fetch(`${serve.url}/api/job/${job.id as string}/logs`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(await logs.text()).toContain(MARKER);
  });

  // Each line is logged while later work of the start is still running: the API's before the
  // worker registers, the health monitor's while its first check may be reading the store.
  it.each(['Server listening at', 'health monitor started'])(
    'stops cleanly on a signal after "%s"',
    async (line) => {
      const run = await signalOnLine(['serve'], serveEnv(5346), line);
      expect(run.signalled).toBe(true);
      expect({ code: run.code, signal: run.signal }, run.output).toEqual({
        code: 0,
        signal: null,
      });
      expect(run.output).toContain('received SIGTERM, stopping');
      expect(run.output).toContain('worker stopped');
      // No role may still be using the store when it closes.
      expect(run.output).not.toContain('destroyed');
      expect(run.output).not.toContain('"level":50');
    },
  );

  it('leaves the database to the server', async () => {
    const serve = await startSharedServe(5348);
    const dbPath = path.join(dataDir, 'state', 'orchestration.db');
    const snapshot = () => {
      const sqlite = new Database(dbPath, { readonly: true });
      try {
        return {
          dependencies: sqlite
            .prepare('SELECT workflow, depends_on, source FROM workflow_dependencies ORDER BY 1, 2')
            .all(),
          migrations: sqlite.prepare('SELECT name FROM schema_migrations ORDER BY name').all(),
        };
      } finally {
        sqlite.close();
      }
    };
    const token = await runCli(
      ['token', 'create', '--name', 'shared-dir-worker', '--role', 'agent'],
      {
        SLIPWAY_DATA_DIR: dataDir,
      },
    );
    expect(token.code, token.stderr).toBe(0);
    const agentToken = token.stdout.split('\n').find((line) => line.startsWith('slw_'))!;
    const before = snapshot();

    // No SLIPWAY_PIPELINES: the worker would load the built-in file, whose dependencies
    // differ from the server's.
    const worker = spawn(process.execPath, [CLI_PATH, 'worker'], {
      env: childEnv({
        SLIPWAY_DATA_DIR: dataDir,
        SLIPWAY_API_URL: serve.url,
        SLIPWAY_AGENT_TOKEN: agentToken,
        SLIPWAY_EXECUTOR: 'local',
        LOG_LEVEL: 'info',
      }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    worker.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    worker.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = once(worker, 'exit') as Promise<[number | null, string | null]>;
    const deadline = Date.now() + 20_000;
    while (!output.includes('registered; waiting for tasks')) {
      if (Date.now() > deadline) throw new Error(`worker did not register:\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    worker.kill('SIGTERM');
    expect((await exited)[0], output).toBe(0);

    const after = snapshot();
    expect(after.dependencies).toEqual(before.dependencies);
    expect(after.migrations).toEqual(before.migrations);
    expect(output).not.toContain('migration applied');
  });

  it('honours a drain until set online', async () => {
    const serve = await startSharedServe(5349, { SLIPWAY_WORKER_NAME: 'vm-serve-drained' });
    const drained = await request(serve, 'POST', '/api/agent/workers/vm-serve-drained/status', {
      status: 'draining',
    });
    expect(drained.status).toBe(200);

    const triggered = await request(serve, 'POST', '/api/trigger/quick', { commit: 'abcdef2' });
    expect(triggered.status).toBe(201);
    const id = triggered.body.job_id as string;
    // Longer than the worker's recheck interval, so a worker that ignored the drain would
    // have claimed the task by now.
    await new Promise((resolve) => setTimeout(resolve, 6_000));
    expect((await request(serve, 'GET', `/api/job/${id}`)).body.status).toBe('queued');
    expect(serve.output()).toContain('worker vm-serve-drained is set draining');
    expect(serve.output()).not.toContain('registering worker vm-serve-drained again');

    const online = await request(serve, 'POST', '/api/agent/workers/vm-serve-drained/status', {
      status: 'online',
    });
    expect(online.status).toBe(200);
    const deadline = Date.now() + 20_000;
    let status = 'queued';
    while (!['success', 'failure', 'error'].includes(status)) {
      if (Date.now() > deadline) throw new Error(`job ${id} is still ${status}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
      status = (await request(serve, 'GET', `/api/job/${id}`)).body.status as string;
    }
    expect(status, serve.output()).toBe('success');
  });
});
