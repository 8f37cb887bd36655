import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  ensureBuilt,
  runCli,
  signalOnLine,
  startApiProcess,
  type ApiProcess,
} from '../support/cli.js';
import { writePipelineFile } from '../support/execution.js';
import { freePort } from '../support/ports.js';
import { makeTempDir } from '../support/server.js';

function childPids(pid: number): number[] {
  try {
    return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' })
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map(Number);
  } catch {
    return [];
  }
}

/**
 * Waits until both API processes log that they listen. startApiProcess returns at the first
 * process's line.
 */
async function bothListening(api: ApiProcess): Promise<void> {
  const deadline = Date.now() + 60_000;
  while ((api.stdout().match(/API listening on/g) ?? []).length < 2) {
    if (Date.now() > deadline)
      throw new Error(`second API process never listened: ${api.stdout()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The fields of the API responses that the log upload test reads. */
interface ResponseBody {
  job_id?: string;
  tasks?: { task_id: string; attempt: number }[];
}

describe('slipway api with API_WORKERS', () => {
  it('serves from every process and stops on SIGTERM', { timeout: 120_000 }, async () => {
    await ensureBuilt();
    const port = await freePort();
    const api = await startApiProcess(
      {
        SLIPWAY_DATA_DIR: makeTempDir('slipway-cluster-'),
        API_PORT: String(port),
        API_WORKERS: '2',
        SLIPWAY_ADMIN_TOKEN: 'slw_cluster-admin-token-00000000000000',
      },
      'api',
      60_000,
    );
    let workers: number[] = [];
    try {
      workers = childPids(api.child.pid!);
      expect(workers).toHaveLength(2);
      await bothListening(api);

      const pids = new Set<number>();
      for (let i = 0; i < 200 && pids.size < 2; i++) {
        const response = await fetch(`${api.url}/api/health/status`, {
          // The details, which name the process, need a token.
          headers: {
            connection: 'close',
            authorization: 'Bearer slw_cluster-admin-token-00000000000000',
          },
        });
        const body = (await response.json()) as {
          components: { api: { details: { pid: number } } };
        };
        pids.add(body.components.api.details.pid);
      }
      expect(pids.size).toBe(2);
    } finally {
      const stopped = await Promise.race([
        api.stop().then(() => true),
        new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 30_000)),
      ]);
      if (!stopped) {
        // Leave no process behind for later tests, then fail.
        for (const pid of [...workers, api.child.pid!]) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // Already gone.
          }
        }
      }
      expect(stopped).toBe(true);
    }
    expect(api.child.signalCode).toBeNull();
    for (const pid of workers) {
      expect(() => process.kill(pid, 0)).toThrow();
    }
  });

  it('stores log uploads spread over processes', { timeout: 120_000 }, async () => {
    await ensureBuilt();
    const admin = 'slw_cluster-logs-admin-token-0000000000';
    const pipelines = writePipelineFile(`
pipelines:
  build:
    executor: local
    steps: [{ run: 'true' }]
`);
    const api = await startApiProcess(
      {
        SLIPWAY_DATA_DIR: makeTempDir('slipway-cluster-logs-'),
        SLIPWAY_PIPELINES: pipelines,
        API_PORT: String(await freePort()),
        API_WORKERS: '2',
        SLIPWAY_ADMIN_TOKEN: admin,
      },
      'api',
      60_000,
    );
    // A new connection per request, so the primary spreads them over both processes, as it
    // does a worker's requests once their kept-alive connections close.
    const post = async (route: string, body: object) => {
      const response = await fetch(`${api.url}${route}`, {
        method: 'POST',
        headers: {
          connection: 'close',
          authorization: `Bearer ${admin}`,
          'content-type': 'application/json',
        },
        body: JSON.stringify(body),
      });
      return { status: response.status, body: (await response.json()) as ResponseBody };
    };
    try {
      await bothListening(api);
      const trigger = await post('/api/trigger/build', { commit: 'abcdef1' });
      expect(trigger.status).toBe(201);
      const worker = { name: 'log-worker', hostname: 'test', executors: ['local'], capacity: 1 };
      expect((await post('/api/agent/workers', worker)).status).toBe(200);
      const claim = await post('/api/agent/workers/log-worker/claim', { max: 1, wait_seconds: 5 });
      expect(claim.body.tasks).toHaveLength(1);
      const task = claim.body.tasks![0]!;

      let offset = 0;
      const statuses: number[] = [];
      for (let i = 0; i < 8; i++) {
        const data = `upload ${i}\n`;
        const upload = await post(`/api/agent/tasks/${task.task_id}/logs`, {
          worker_id: 'log-worker',
          attempt: task.attempt,
          offset,
          data,
        });
        statuses.push(upload.status);
        offset += Buffer.byteLength(data);
      }
      expect(statuses).toEqual(Array(8).fill(200));

      const logs = await fetch(`${api.url}/api/job/${trigger.body.job_id}/logs`, {
        headers: { authorization: `Bearer ${admin}` },
      });
      const expected = Array.from({ length: 8 }, (_, i) => `upload ${i}\n`).join('');
      expect(await logs.text()).toBe(expected);
    } finally {
      await api.stop();
    }
  });

  it('applies one rate limit per token across processes', { timeout: 120_000 }, async () => {
    await ensureBuilt();
    const limit = 12;
    const admin = 'slw_cluster-limit-admin-token-000000000';
    const api = await startApiProcess(
      {
        SLIPWAY_DATA_DIR: makeTempDir('slipway-cluster-limit-'),
        API_PORT: String(await freePort()),
        API_WORKERS: '2',
        API_RATE_LIMIT: String(limit),
        SLIPWAY_ADMIN_TOKEN: admin,
      },
      'api',
      60_000,
    );
    try {
      await bothListening(api);
      // A new connection per request, so the primary spreads them over both processes.
      const admitted = new Set<number>();
      const statuses: number[] = [];
      for (let i = 0; i < 3 * limit; i++) {
        const response = await fetch(`${api.url}/api/health/status`, {
          headers: { connection: 'close', authorization: `Bearer ${admin}` },
        });
        statuses.push(response.status);
        if (response.status === 200) {
          const body = (await response.json()) as {
            components: { api: { details: { pid: number } } };
          };
          admitted.add(body.components.api.details.pid);
        } else {
          await response.arrayBuffer();
        }
      }
      const ok = statuses.filter((status) => status === 200).length;
      expect(admitted.size).toBe(2);
      expect(ok).toBeLessThanOrEqual(limit);
      // Blocks shrink to one request as the quota runs low, so little of it goes unused.
      expect(ok).toBeGreaterThanOrEqual(limit - 2);
      expect(statuses.filter((status) => status !== 200).every((status) => status === 429)).toBe(
        true,
      );
    } finally {
      await api.stop();
    }
  });

  it('counts failed authentications across processes', { timeout: 120_000 }, async () => {
    await ensureBuilt();
    const limit = 6;
    const api = await startApiProcess(
      {
        SLIPWAY_DATA_DIR: makeTempDir('slipway-cluster-failures-'),
        API_PORT: String(await freePort()),
        API_WORKERS: '2',
        API_AUTH_FAILURE_LIMIT: String(limit),
        SLIPWAY_ADMIN_TOKEN: 'slw_cluster-failures-admin-token-000000',
      },
      'api',
      60_000,
    );
    try {
      await bothListening(api);
      const statuses: number[] = [];
      for (let i = 0; i < 4 * limit; i++) {
        const response = await fetch(`${api.url}/api/admin/jobs`, {
          headers: {
            connection: 'close',
            authorization: 'Bearer slw_wrong-token-0000000000000000',
          },
        });
        statuses.push(response.status);
        await response.arrayBuffer();
      }
      const unauthorized = statuses.filter((status) => status === 401).length;
      // Each process alone would return 401 up to the limit, twice the limit in all. A failure
      // the primary granted to one process but that it has not used is refused to the other.
      expect(unauthorized).toBeGreaterThanOrEqual(limit - 1);
      expect(unauthorized).toBeLessThanOrEqual(limit);
      expect(statuses.filter((status) => status === 429)).toHaveLength(4 * limit - unauthorized);
    } finally {
      await api.stop();
    }
  });

  it('keeps a burst of failures to the limit', { timeout: 120_000 }, async () => {
    await ensureBuilt();
    const limit = 10;
    const api = await startApiProcess(
      {
        SLIPWAY_DATA_DIR: makeTempDir('slipway-cluster-failure-burst-'),
        API_PORT: String(await freePort()),
        API_WORKERS: '2',
        API_AUTH_FAILURE_LIMIT: String(limit),
        SLIPWAY_ADMIN_TOKEN: 'slw_cluster-burst-admin-token-00000000',
      },
      'api',
      60_000,
    );
    try {
      await bothListening(api);
      // Guesses sent at once reach both processes before either has counted a failure.
      const statuses = await Promise.all(
        Array.from({ length: 8 * limit }, async (_, index) => {
          const response = await fetch(`${api.url}/api/admin/jobs`, {
            headers: {
              connection: 'close',
              authorization: `Bearer slw_burst-guess-${index}-000000000000000`,
            },
          });
          await response.arrayBuffer();
          return response.status;
        }),
      );
      const unauthorized = statuses.filter((status) => status === 401).length;
      expect(unauthorized).toBeLessThanOrEqual(limit);
      expect(unauthorized).toBeGreaterThanOrEqual(limit - 2);
      expect(statuses.filter((status) => status === 429)).toHaveLength(8 * limit - unauthorized);
    } finally {
      await api.stop();
    }
  });

  it('stops cleanly on an early signal', { timeout: 60_000 }, async () => {
    await ensureBuilt();
    // The primary logs its migrations before it writes the admin token and forks.
    const run = await signalOnLine(
      ['api'],
      {
        SLIPWAY_DATA_DIR: makeTempDir('slipway-cluster-early-'),
        API_PORT: String(await freePort()),
        API_WORKERS: '2',
        LOG_LEVEL: 'info',
      },
      'migration applied',
    );
    expect(run.signalled).toBe(true);
    expect({ code: run.code, signal: run.signal }, run.output).toEqual({ code: 0, signal: null });
    expect(run.output).toContain('received SIGTERM, stopping 2 API processes');
  });

  it('stops cleanly on a group signal', { timeout: 120_000 }, async () => {
    await ensureBuilt();
    const api = await startApiProcess(
      {
        SLIPWAY_DATA_DIR: makeTempDir('slipway-cluster-group-'),
        API_PORT: String(await freePort()),
        API_WORKERS: '2',
      },
      'api',
      60_000,
    );
    await bothListening(api);
    const workers = childPids(api.child.pid!);
    expect(workers).toHaveLength(2);

    // As Ctrl-C in a terminal or systemd's default KillMode=control-group deliver it: to every
    // process at once, and then the primary forwards its own SIGTERM to each API process.
    const exited = new Promise((resolve) => api.child.once('exit', resolve));
    for (const pid of [api.child.pid!, ...workers]) process.kill(pid, 'SIGTERM');
    await exited;

    expect(api.stdout()).not.toContain('again, exiting now');
    expect(api.stdout().match(/"msg":"api stopped"/g) ?? []).toHaveLength(2);
    expect(api.child.exitCode).toBe(0);
  });

  it('forks API processes for serve in api mode', { timeout: 120_000 }, async () => {
    await ensureBuilt();
    // The compose stack's api service runs `serve` with ORCHESTRATION_MODE=api.
    const api = await startApiProcess(
      {
        SLIPWAY_DATA_DIR: makeTempDir('slipway-cluster-serve-'),
        API_PORT: String(await freePort()),
        API_WORKERS: '2',
        ORCHESTRATION_MODE: 'api',
      },
      'serve',
      60_000,
    );
    try {
      await bothListening(api);
      expect(childPids(api.child.pid!)).toHaveLength(2);
    } finally {
      await api.stop();
    }
    expect(api.child.exitCode).toBe(0);
  });

  it('rejects API_WORKERS for serve with every role', { timeout: 60_000 }, async () => {
    await ensureBuilt();

    const result = await runCli(['serve'], {
      SLIPWAY_DATA_DIR: makeTempDir('slipway-cluster-all-'),
      API_PORT: String(await freePort()),
      API_WORKERS: '2',
    });

    expect(result.code).toBe(2);
    expect(result.stderr).toContain(
      'slipway: configuration: API_WORKERS: must be 1 when one process runs the API with other ' +
        'roles, got 2',
    );
    expect(result.stdout).not.toContain('API listening');
  });
});
