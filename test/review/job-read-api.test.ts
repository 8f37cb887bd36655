/**
 * Review tests for GET /api/job/{id} behind the response cache and for the trigger, cancel
 * and dependency paths that now run prepared queries. Every step reads the job once before
 * the change, so a cached response exists that the change must replace.
 */
import fs from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Row = Record<string, any>;

describe('job reads and prepared writes', () => {
  let server: TestServer;
  let dbPath: string;

  const getJob = async (id: string) => {
    const response = await server.request('GET', `/api/job/${id}`, { token: server.adminToken });
    expect(response.status, response.text).toBe(200);
    return response.body;
  };
  const trigger = async (
    type: string,
    body: Record<string, unknown>,
    headers: Record<string, string> = {},
  ) => {
    const response = await server.request('POST', `/api/trigger/${type}`, {
      token: server.adminToken,
      body,
      headers,
    });
    expect(response.status, response.text).toBe(201);
    return response.body.job_id as string;
  };
  const setStatus = async (id: string, status: string, exitCode?: number) => {
    const response = await server.request('PATCH', `/api/job/${id}/status`, {
      token: server.adminToken,
      body: { status, ...(exitCode === undefined ? {} : { exit_code: exitCode }) },
    });
    expect(response.status, response.text).toBe(200);
    return response.body;
  };
  /** Reads rows with a connection of its own, outside the store under test. */
  const rows = (sql: string, ...values: unknown[]): Row[] => {
    const sqlite = new BetterSqlite3(dbPath, { readonly: true });
    try {
      return sqlite.prepare(sql).all(...values) as Row[];
    } finally {
      sqlite.close();
    }
  };

  beforeAll(async () => {
    const dir = makeTempDir('slipway-review-');
    const pipelines = path.join(dir, 'slipway.yml');
    fs.writeFileSync(
      pipelines,
      `pipelines:
  ci:
    executor: local
    matrix:
      python_version: { from: python_versions, default: ['3.11', '3.12'] }
    steps: [{ run: 'true' }]
    concurrency: { group: 'ci-\${{ branch }}', cancel_in_progress: true }
  integration-tests:
    needs: [ci]
    executor: local
    steps: [{ run: 'true' }]
  deploy:
    needs: [integration-tests]
    executor: local
    steps: [{ run: 'true' }]
  solo:
    executor: local
    steps: [{ run: 'true' }]
`,
    );
    server = await startTestServer({
      SLIPWAY_DATA_DIR: dir,
      SLIPWAY_PIPELINES: pipelines,
      SLIPWAY_LEASE_SECONDS: '2',
    });
    dbPath = server.context.config.dbPath;
  });
  afterAll(async () => {
    await server?.close();
  });

  it('trigger stores every job and task column', async () => {
    const id = await trigger(
      'ci',
      {
        commit: 'c0ffee0000000000000000000000000000000001',
        branch: 'columns',
        github_run_id: '987654321',
        github_run_attempt: 3,
        python_versions: ['3.10', '3.13'],
        params: { note: 'kept' },
      },
      { 'idempotency-key': 'review-columns-1' },
    );
    const [job] = rows('SELECT * FROM jobs WHERE id = ?', id);
    expect(job).toBeDefined();
    expect(job!.type).toBe('ci');
    expect(job!.status).toBe('queued');
    expect(job!.commit_sha).toBe('c0ffee0000000000000000000000000000000001');
    expect(job!.branch).toBe('columns');
    expect(job!.github_run_id).toBe('987654321');
    expect(job!.github_run_attempt).toBe(3);
    expect(job!.idempotency_key).toBe('review-columns-1');
    expect(job!.request_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(job!.attempt).toBe(1);
    expect(job!.reason).toBeNull();
    expect(job!.requested_by).toEqual(expect.any(String));
    expect(job!.concurrency_group).toBe('ci-columns');
    expect(JSON.parse(job!.params).params).toEqual({ note: 'kept' });
    expect(JSON.parse(job!.pipeline).executor).toBe('local');
    expect(job!.created_at).toMatch(ISO_UTC);
    expect(job!.queued_at).toBe(job!.created_at);
    expect(job!.started_at).toBeNull();
    expect(job!.finished_at).toBeNull();
    expect(job!.updated_at).toMatch(ISO_UTC);

    const tasks = rows('SELECT * FROM tasks WHERE job_id = ? ORDER BY idx', id);
    expect(tasks).toHaveLength(2);
    expect(tasks.map((task) => JSON.parse(task.matrix).python_version)).toEqual(['3.10', '3.13']);
    for (const [index, task] of tasks.entries()) {
      expect(task.idx).toBe(index);
      expect(task.job_attempt).toBe(1);
      expect(task.status).toBe('queued');
      expect(task.executor).toBe('local');
      expect(task.worker_id).toBeNull();
      expect(task.lease_expires_at).toBeNull();
      expect(task.attempt).toBe(0);
      expect(task.max_attempts).toBeGreaterThanOrEqual(1);
      expect(task.exit_code).toBeNull();
      expect(task.cancel_requested_at).toBeNull();
      expect(task.queued_at).toMatch(ISO_UTC);
      expect(task.finished_at).toBeNull();
    }
    const audit = rows("SELECT * FROM audit_log WHERE action = 'job_triggered' AND job_id = ?", id);
    expect(audit).toHaveLength(1);
    expect(audit[0]!.created_at).toMatch(ISO_UTC);
    const details = JSON.parse(audit[0]!.details as string) as Record<string, unknown>;
    expect(details.params).toEqual({ note: 'kept' });
    expect(details.inputs).toEqual({ python_versions: ['3.10', '3.13'] });

    // The same key and body return the same job; a second GitHub run attempt is a new job.
    const again = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      headers: { 'idempotency-key': 'review-columns-1' },
      body: {
        commit: 'c0ffee0000000000000000000000000000000001',
        branch: 'columns',
        github_run_id: '987654321',
        github_run_attempt: 3,
        python_versions: ['3.10', '3.13'],
        params: { note: 'kept' },
      },
    });
    expect(again.status, again.text).toBe(200);
    expect(again.body.job_id).toBe(id);
  });

  it('chain releases, skips and stamps times', async () => {
    const commit = 'c0ffee0000000000000000000000000000000002';
    const ci = await trigger('ci', { commit, branch: 'chain' });
    const tests = await trigger('integration-tests', { commit, branch: 'chain' });
    const deploy = await trigger('deploy', { commit, branch: 'chain' });
    expect((await getJob(tests)).status).toBe('waiting');
    expect((await getJob(tests)).reason).toBe('waiting for ci of c0ffee0');
    expect((await getJob(deploy)).status).toBe('waiting');

    await setStatus(ci, 'running');
    const running = await getJob(ci);
    expect(running.status).toBe('running');
    const [ciRunning] = rows('SELECT started_at, finished_at FROM jobs WHERE id = ?', ci);
    expect(ciRunning!.started_at).toMatch(ISO_UTC);
    expect(ciRunning!.finished_at).toBeNull();

    await setStatus(ci, 'success', 0);
    expect((await getJob(ci)).status).toBe('success');
    const released = await getJob(tests);
    expect(released.status).toBe('queued');
    expect(released.reason).not.toBe('waiting for ci of c0ffee0');
    const [testsRow] = rows('SELECT queued_at, reason FROM jobs WHERE id = ?', tests);
    expect(testsRow!.queued_at).toMatch(ISO_UTC);
    const testTasks = rows('SELECT status, queued_at FROM tasks WHERE job_id = ?', tests);
    expect(testTasks.map((task) => task.status)).toEqual(['queued']);
    expect(testTasks[0]!.queued_at).toMatch(ISO_UTC);
    const ciTasks = rows(
      'SELECT status, finished_at, lease_expires_at, exit_code FROM tasks WHERE job_id = ?',
      ci,
    );
    expect(ciTasks).toHaveLength(2);
    for (const task of ciTasks) {
      expect(task.status).toBe('success');
      expect(task.finished_at).toMatch(ISO_UTC);
      expect(task.lease_expires_at).toBeNull();
      expect(task.exit_code).toBe(0);
    }
    expect((await getJob(deploy)).status).toBe('waiting');

    await setStatus(tests, 'running');
    await setStatus(tests, 'failure', 1);
    const failed = await getJob(tests);
    expect(failed.status).toBe('failure');
    const skipped = await getJob(deploy);
    expect(skipped.status).toBe('skipped');
    expect(skipped.reason).toContain('integration-tests');
    const [deployRow] = rows('SELECT finished_at FROM jobs WHERE id = ?', deploy);
    expect(deployRow!.finished_at).toMatch(ISO_UTC);
    const deployTasks = rows('SELECT status, finished_at FROM tasks WHERE job_id = ?', deploy);
    expect(deployTasks.map((task) => task.status)).toEqual(['skipped']);
    expect(deployTasks[0]!.finished_at).toMatch(ISO_UTC);
  });

  it('cancel-in-progress cancels the older job', async () => {
    const older = await trigger('ci', {
      commit: 'c0ffee0000000000000000000000000000000003',
      branch: 'race',
    });
    expect((await getJob(older)).status).toBe('queued');
    const running = await trigger('ci', {
      commit: 'c0ffee0000000000000000000000000000000004',
      branch: 'race',
    });
    await setStatus(running, 'running');
    expect((await getJob(older)).status).toBe('cancelled');
    expect((await getJob(running)).status).toBe('running');

    const newest = await trigger('ci', {
      commit: 'c0ffee0000000000000000000000000000000005',
      branch: 'race',
    });
    // No worker runs the tasks that the status update started, so they end at once. A task
    // that a worker runs gets a cancel request instead (see "parallel cancels" below).
    const ended = rows('SELECT status FROM tasks WHERE job_id = ?', running);
    expect(ended.map((task) => task.status)).toEqual(['cancelled', 'cancelled']);
    expect((await getJob(running)).status).toBe('cancelled');
    expect((await getJob(newest)).status).toBe('queued');
    const cancelled = rows(
      "SELECT job_id FROM audit_log WHERE action = 'job_cancelled' AND job_id IN (?, ?)",
      older,
      running,
    );
    expect(cancelled.map((row) => row.job_id).sort()).toEqual([older, running].sort());
  });

  it('queued reason follows workers', async () => {
    const id = await trigger('ci', {
      commit: 'c0ffee0000000000000000000000000000000006',
      branch: 'reason',
    });
    expect((await getJob(id)).reason).toBe('no worker is online');
    const registered = await server.request('POST', '/api/agent/workers', {
      token: server.adminToken,
      body: { name: 'review-worker', hostname: 'localhost', executors: ['local'], capacity: 2 },
    });
    expect(registered.status, registered.text).toBe(200);
    expect((await getJob(id)).reason).toBeNull();

    // With 2 s leases a worker counts as live for 6 s after its last heartbeat. The reason
    // may lag that by the cache's 1 s, not more.
    const [worker] = rows("SELECT last_heartbeat_at FROM workers WHERE id = 'review-worker'");
    const deadAt = Date.parse(worker!.last_heartbeat_at) + 6_000;
    let reason: string | null = null;
    while (Date.now() < deadAt + 1_500) {
      reason = (await getJob(id)).reason;
      if (reason !== null) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(reason).toBe('no worker is online');
    expect(Date.now()).toBeGreaterThanOrEqual(deadAt);
  }, 20_000);

  it('worker claim and finish show at once', async () => {
    const id = await trigger('solo', { commit: 'c0ffee0000000000000000000000000000000007' });
    expect((await getJob(id)).status).toBe('queued');
    const registered = await server.request('POST', '/api/agent/workers', {
      token: server.adminToken,
      body: { name: 'claim-worker', hostname: 'localhost', executors: ['local'], capacity: 64 },
    });
    expect(registered.status, registered.text).toBe(200);
    const claimed = await server.request('POST', '/api/agent/workers/claim-worker/claim', {
      token: server.adminToken,
      body: { max: 64, wait_seconds: 0 },
    });
    expect(claimed.status, claimed.text).toBe(200);
    const task = (claimed.body.tasks as Row[]).find((spec) => spec.job.id === id);
    expect(task).toBeDefined();
    expect((await getJob(id)).status).toBe('running');
    const [leased] = rows(
      'SELECT worker_id, lease_expires_at, started_at, attempt FROM tasks WHERE id = ?',
      task!.task_id,
    );
    expect(leased!.worker_id).toBe('claim-worker');
    expect(leased!.lease_expires_at).toMatch(ISO_UTC);
    expect(leased!.started_at).toMatch(ISO_UTC);
    expect(leased!.attempt).toBe(task!.attempt);

    const finished = await server.request('POST', `/api/agent/tasks/${task!.task_id}/finish`, {
      token: server.adminToken,
      body: {
        worker_id: 'claim-worker',
        attempt: task!.attempt,
        status: 'success',
        exit_code: 0,
        duration_ms: 5,
      },
    });
    expect(finished.status, finished.text).toBe(200);
    expect((await getJob(id)).status).toBe('success');
    const [done] = rows(
      'SELECT lease_expires_at, finished_at, exit_code, duration_ms FROM tasks WHERE id = ?',
      task!.task_id,
    );
    expect(done!.lease_expires_at).toBeNull();
    expect(done!.finished_at).toMatch(ISO_UTC);
    expect(done!.exit_code).toBe(0);
    expect(done!.duration_ms).toBe(5);
    const [job] = rows('SELECT started_at, finished_at FROM jobs WHERE id = ?', id);
    expect(job!.started_at).toMatch(ISO_UTC);
    expect(job!.finished_at).toMatch(ISO_UTC);
    const offline = await server.request('POST', '/api/agent/workers/claim-worker/status', {
      token: server.adminToken,
      body: { status: 'offline' },
    });
    expect(offline.status, offline.text).toBe(200);
  });

  /** Registers worker `name` and claims every queued task; returns the task of job `id`. */
  const claimTaskOf = async (id: string, name: string): Promise<Row> => {
    const registered = await server.request('POST', '/api/agent/workers', {
      token: server.adminToken,
      body: { name, hostname: 'localhost', executors: ['local'], capacity: 64 },
    });
    expect(registered.status, registered.text).toBe(200);
    const claimed = await server.request('POST', `/api/agent/workers/${name}/claim`, {
      token: server.adminToken,
      body: { max: 64, wait_seconds: 0 },
    });
    const task = (claimed.body.tasks as Row[]).find((spec) => spec.job.id === id);
    expect(task).toBeDefined();
    return task!;
  };

  it('a task that succeeds before its cancel keeps no cancel reason', async () => {
    const id = await trigger('solo', { commit: 'c0ffee0000000000000000000000000000000008' });
    const task = await claimTaskOf(id, 'race-worker');

    const cancel = await server.request('POST', `/api/job/${id}/cancel`, {
      token: server.adminToken,
    });
    expect(cancel.status, cancel.text).toBe(202);
    expect((await getJob(id)).reason).toMatch(/^cancelled by /);

    const finished = await server.request('POST', `/api/agent/tasks/${task!.task_id}/finish`, {
      token: server.adminToken,
      body: {
        worker_id: 'race-worker',
        attempt: task!.attempt,
        status: 'success',
        exit_code: 0,
        duration_ms: 5,
      },
    });
    expect(finished.status, finished.text).toBe(200);
    const job = await getJob(id);
    expect(job.status).toBe('success');
    expect(job.reason).toBeNull();
    expect(job.tasks[0].reason).toBeNull();
  });

  it('parallel cancels write one audit row', async () => {
    const id = await trigger('solo', { commit: 'c0ffee0000000000000000000000000000000009' });
    await claimTaskOf(id, 'cancel-worker');

    const cancels = await Promise.all(
      Array.from({ length: 10 }, (_, index) =>
        server.request('POST', `/api/job/${id}/cancel`, {
          token: server.adminToken,
          body: { reason: `cancel number ${index}` },
        }),
      ),
    );
    for (const cancel of cancels) expect(cancel.status, cancel.text).toBe(202);
    const audits = rows(
      "SELECT details FROM audit_log WHERE action = 'job_cancelled' AND job_id = ?",
      id,
    );
    expect(audits).toHaveLength(1);
    const job = await getJob(id);
    expect(job.status).toBe('running');
    expect(job.reason).toBe(JSON.parse(audits[0]!.details as string).reason);
    const [task] = rows('SELECT cancel_requested_at FROM tasks WHERE job_id = ?', id);
    expect(task!.cancel_requested_at).toMatch(ISO_UTC);
  });

  it('cancel ends a job set running by a status update', async () => {
    const id = await trigger('solo', { commit: 'c0ffee0000000000000000000000000000000010' });
    const running = await server.request('PATCH', `/api/job/${id}/status`, {
      token: server.adminToken,
      body: { status: 'running' },
    });
    expect(running.status, running.text).toBe(200);
    const cancel = await server.request('POST', `/api/job/${id}/cancel`, {
      token: server.adminToken,
    });
    expect(cancel.status, cancel.text).toBe(202);
    const job = await getJob(id);
    expect(job.status).toBe('cancelled');
    expect(job.tasks.map((task: { status: string }) => task.status)).toEqual(['cancelled']);
  });

  it('reads 404 before create and 200 after', async () => {
    const missing = await server.request('GET', '/api/job/ci-00000000', {
      token: server.adminToken,
    });
    expect(missing.status).toBe(404);
    const ids = await Promise.all(
      Array.from({ length: 20 }, (_, index) =>
        trigger('integration-tests', {
          commit: `c0ffee00000000000000000000000000000001${String(index).padStart(2, '0')}`,
        }),
      ),
    );
    for (const id of ids) expect((await getJob(id)).id).toBe(id);
  });
});
