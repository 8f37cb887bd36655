/**
 * Helpers for execution tests: a pipeline file, a real git repository, a worker started
 * next to the test API, and waiting for a job to end.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { AppContext } from '../../src/app/context.js';
import type { RunningRole } from '../../src/app/roles.js';
import { isTerminal, type Status } from '../../src/jobs/status.js';
import { recoverExpiredLeases, type LeaseRecovery } from '../../src/orchestrator/leases.js';
import { startWorker } from '../../src/worker/role.js';
import { makeTempDir, startTestServer, type TestServer } from './server.js';

export function writePipelineFile(yaml: string): string {
  const dir = makeTempDir('slipway-pipelines-');
  const file = path.join(dir, 'slipway.yml');
  fs.writeFileSync(file, yaml);
  return file;
}

export function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, {
    cwd,
    encoding: 'utf8',
    env: {
      ...process.env,
      GIT_AUTHOR_NAME: 'Slipway Test',
      GIT_AUTHOR_EMAIL: 'test@example.invalid',
      GIT_COMMITTER_NAME: 'Slipway Test',
      GIT_COMMITTER_EMAIL: 'test@example.invalid',
      GIT_CONFIG_GLOBAL: '/dev/null',
    },
  }).trim();
}

/** Creates a git repository with the given files committed; returns its path and commit. */
export function makeRepository(files: Record<string, string>): { dir: string; commit: string } {
  const dir = makeTempDir('slipway-repo-');
  git(dir, 'init', '--quiet', '--initial-branch=main');
  return { dir, commit: commitFiles(dir, files, 'initial commit') };
}

export function commitFiles(dir: string, files: Record<string, string>, message: string): string {
  for (const [name, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), content);
  }
  git(dir, 'add', '--all');
  git(dir, 'commit', '--quiet', '-m', message);
  return git(dir, 'rev-parse', 'HEAD');
}

/** A job as GET /api/job/{id} returns it; tests read only a few fields. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON read by tests
export type JobBody = Record<string, any> & { status: Status };

export interface ExecutionHarness {
  server: TestServer;
  worker: RunningRole;
  token: string;
  trigger(type: string, body: Record<string, unknown>): Promise<string>;
  waitForJob(id: string, timeoutMs?: number): Promise<JobBody>;
  waitForStatus(id: string, status: Status, timeoutMs?: number): Promise<JobBody>;
  logs(id: string, query?: string): Promise<string>;
  close(): Promise<void>;
}

/** Starts the API and an in-process worker (over HTTP, as `slipway serve` does). */
export async function startHarness(env: Record<string, string>): Promise<ExecutionHarness> {
  const server = await startTestServer({ SLIPWAY_LEASE_SECONDS: '6', ...env });
  const worker = await startWorker(server.context);
  const token = server.adminToken;
  const getJob = async (id: string): Promise<JobBody> =>
    (await server.request('GET', `/api/job/${id}`, { token })).body;
  const harness: ExecutionHarness = {
    server,
    worker,
    token,
    async trigger(type, body) {
      const answer = await server.request('POST', `/api/trigger/${type}`, { token, body });
      if (answer.status !== 201)
        throw new Error(`trigger answered ${answer.status}: ${answer.text}`);
      return answer.body.job_id as string;
    },
    async waitForJob(id, timeoutMs = 30_000) {
      return waitUntil(getJob, id, (job) => isTerminal(job.status), timeoutMs);
    },
    async waitForStatus(id, status, timeoutMs = 30_000) {
      return waitUntil(getJob, id, (job) => job.status === status, timeoutMs);
    },
    async logs(id, query = '') {
      return (await server.request('GET', `/api/job/${id}/logs${query}`, { token })).text;
    },
    async close() {
      await worker.stop();
      await server.close();
    },
  };
  return harness;
}

async function waitUntil(
  get: (id: string) => Promise<JobBody>,
  id: string,
  done: (job: JobBody) => boolean,
  timeoutMs: number,
): Promise<JobBody> {
  const deadline = Date.now() + timeoutMs;
  let job = await get(id);
  while (!done(job)) {
    if (Date.now() > deadline) {
      throw new Error(
        `job ${id} still ${job.status} after ${timeoutMs} ms: ${JSON.stringify(job)}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
    job = await get(id);
  }
  return job;
}

/**
 * Expires the task's lease and runs lease recovery, as the orchestrator does once a lease has
 * run out while its worker was paused or cut off. Returns what the recovery did.
 */
export async function expireLease(context: AppContext, taskId: string): Promise<LeaseRecovery[]> {
  await context.store.write((trx) =>
    trx
      .updateTable('tasks')
      .set({ lease_expires_at: '2000-01-01T00:00:00.000Z' })
      .where('id', '=', taskId)
      .execute(),
  );
  return recoverExpiredLeases(context, { actor: 'test', source: 'test' });
}

/** PIDs of processes whose command line contains `marker`. */
export function processesWith(marker: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmdline.includes(marker) && Number(entry) !== process.pid) pids.push(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return pids;
}
