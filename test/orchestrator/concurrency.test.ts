import fs from 'node:fs';
import path from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { claimCandidates, claimTasks } from '../../src/dispatch/claim.js';
import { executionServices } from '../../src/dispatch/services.js';
import { ChangeSet } from '../../src/orchestrator/changes.js';
import { explainEachQueued } from '../../src/orchestrator/diagnose.js';
import { recoverExpiredLeases } from '../../src/orchestrator/leases.js';
import { readJobList } from '../../src/store/jobs.js';
import { QUEUED_IN_GROUP } from '../../src/orchestrator/job-status.js';
import { queryPlan } from '../support/plan.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';

const WORKER = 'worker-concurrency';

/** Wraps a connection so that every run of a statement prepared through it is counted. */
function countStatementRuns(sqlite: BetterSqlite3.Database) {
  let runs = 0;
  const countRuns = (statement: BetterSqlite3.Statement) =>
    new Proxy(statement, {
      get(target, name) {
        const value: unknown = Reflect.get(target, name, target);
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          if (['all', 'get', 'run', 'iterate'].includes(String(name))) runs += 1;
          return (value as (...inner: unknown[]) => unknown).apply(target, args);
        };
      },
    });
  const connection = new Proxy(sqlite, {
    get(target, name) {
      if (name === 'prepare') return (source: string) => countRuns(target.prepare(source));
      const value: unknown = Reflect.get(target, name, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return { connection, runs: () => runs };
}

describe('concurrency groups', () => {
  let server: TestServer;
  let token: string;

  const trigger = async (type: string, body: Record<string, unknown>) => {
    const response = await server.request('POST', `/api/trigger/${type}`, { token, body });
    expect(response.status).toBe(201);
    return response.body.job_id as string;
  };
  const job = async (id: string) => (await server.request('GET', `/api/job/${id}`, { token })).body;
  const patchStatus = (id: string, status: string) =>
    server.request('PATCH', `/api/job/${id}/status`, { token, body: { status } });
  /**
   * Ends a job that the test's worker runs through PATCH. Then reports as that worker that the
   * steps stopped, as a real worker does after its next heartbeat.
   */
  const endClaimed = async (id: string, body: Record<string, unknown>) => {
    const ended = await server.request('PATCH', `/api/job/${id}/status`, { token, body });
    expect(ended.status, ended.text).toBe(200);
    for (const task of (await job(id)).tasks as Array<{ id: string; attempt: number }>) {
      const stopped = await server.request('POST', `/api/agent/tasks/${task.id}/finish`, {
        token,
        body: { worker_id: WORKER, attempt: task.attempt, status: 'cancelled', duration_ms: 1 },
      });
      expect(stopped.status, stopped.text).toBe(200);
    }
  };
  /** Claims as the test's worker, returning the job ids of the claimed tasks. */
  const claim = async (max: number) => {
    const changes = new ChangeSet();
    const specs = await server.context.store.write((trx) =>
      claimTasks(
        trx,
        { workerId: WORKER, executors: ['local'], defaultExecutor: 'local', max, leaseMs: 60_000 },
        {
          audit: { actor: WORKER },
          changes,
          logPathFor: (jobId, taskId, attempt) => `${jobId}/${taskId}-${attempt}.log`,
        },
      ),
    );
    changes.emit(server.context.events);
    return specs.map((spec) => spec.job.id);
  };

  beforeAll(async () => {
    const dir = makeTempDir('slipway-concurrency-');
    const pipelines = path.join(dir, 'slipway.yml');
    fs.writeFileSync(
      pipelines,
      `pipelines:
  ci:
    executor: local
    steps: [{ run: 'true' }]
    concurrency: { group: branch, cancel_in_progress: true }
  lint:
    executor: local
    steps: [{ run: 'true' }]
    concurrency: { group: branch, cancel_in_progress: true }
  release:
    executor: local
    steps: [{ run: 'true' }]
    concurrency: { group: 'release-\${{ branch }}', cancel_in_progress: true }
  ship:
    executor: local
    steps: [{ run: 'true' }]
    concurrency: { group: ship, cancel_in_progress: false }
  solo:
    executor: local
    steps: [{ run: 'true' }]
  serial:
    executor: local
    steps: [{ run: 'true' }]
    concurrency: 'serial-\${{ branch }}'
  mixed-docker:
    executor: docker
    image: busybox:latest
    steps: [{ run: 'true' }]
    concurrency: mixed
  mixed-local:
    executor: local
    steps: [{ run: 'true' }]
    concurrency: mixed
`,
    );
    server = await startTestServer({ SLIPWAY_DATA_DIR: dir, SLIPWAY_PIPELINES: pipelines });
    token = await server.token('admin', 'concurrency');
    const now = new Date().toISOString();
    await server.context.store.write((trx) =>
      trx
        .insertInto('workers')
        .values({
          id: WORKER,
          name: WORKER,
          hostname: 'localhost',
          executors: JSON.stringify(['local']),
          labels: '[]',
          capacity: 8,
          version: null,
          status: 'online',
          registered_at: now,
          last_heartbeat_at: now,
          session: null,
          token_id: null,
        })
        .execute(),
    );
  });
  afterAll(async () => {
    await server?.close();
  });

  it('cancels the older job of the same branch', async () => {
    const older = await trigger('ci', { commit: 'aaaa0001', branch: 'feature/a' });
    const newer = await trigger('ci', { commit: 'aaaa0002', branch: 'feature/a' });
    expect((await job(older)).status).toBe('cancelled');
    expect((await job(older)).reason).toContain(`newer job ${newer}`);
    expect((await job(newer)).status).toBe('queued');
    expect((await job(newer)).concurrency_group).toBe('ci:feature/a');
  });

  it('puts jobs without a branch in no group', async () => {
    const first = await trigger('ci', { commit: 'bbbb0001' });
    const second = await trigger('ci', { commit: 'bbbb0002' });
    const third = await trigger('release', { commit: 'bbbb0003' });
    for (const id of [first, second, third]) {
      const view = await job(id);
      expect(view.status).toBe('queued');
      expect(view.concurrency_group).toBeNull();
    }
  });

  it('keeps the branch shorthand apart per job type', async () => {
    const ci = await trigger('ci', { commit: 'cccc0001', branch: 'feature/c' });
    const lint = await trigger('lint', { commit: 'cccc0001', branch: 'feature/c' });
    expect((await job(ci)).status).toBe('queued');
    expect((await job(lint)).concurrency_group).toBe('lint:feature/c');
  });

  it('runs one job of a group at a time', async () => {
    // Earlier tests' queued jobs are claimed first, so only this test's jobs remain.
    await claim(100);
    const first = await trigger('ship', { commit: 'dddd0001' });
    const second = await trigger('ship', { commit: 'dddd0002' });
    const other = await trigger('solo', { commit: 'dddd0003' });
    expect(await claim(1)).toEqual([first]);
    // The second job waits, and the job after it in the queue is not held up by it.
    expect(await claim(1)).toEqual([other]);
    expect(await claim(4)).toEqual([]);
    expect((await job(second)).status).toBe('queued');
    expect((await job(second)).reason).toBe(`waits for job ${first} in concurrency group ship`);

    const woken: string[][] = [];
    server.context.events.on('tasks-queued', (ids) => woken.push(ids));
    await endClaimed(first, { status: 'success', exit_code: 0 });
    // Woken when the job ends, and again when the worker reports its step stopped.
    expect([...new Set(woken.flat())]).toEqual(
      (await job(second)).tasks.map((task: { id: string }) => task.id),
    );
    expect(await claim(4)).toEqual([second]);
    await endClaimed(second, { status: 'failure', exit_code: 1 });
  });

  it('starts only the oldest queued job of a group in one claim', async () => {
    await claim(100);
    const first = await trigger('ship', { commit: 'eeee0001' });
    const second = await trigger('ship', { commit: 'eeee0002' });
    expect(await claim(4)).toEqual([first]);
    expect((await job(second)).status).toBe('queued');
  });

  it('starts a requeued older job first', async () => {
    await claim(100);
    const older = await trigger('serial', { commit: 'abab0001', branch: 'order' });
    const newer = await trigger('serial', { commit: 'abab0002', branch: 'order' });
    expect(await claim(1)).toEqual([older]);

    // The older job's worker is lost: its task returns to the queue after the newer job's.
    await server.context.store.write((trx) =>
      trx
        .updateTable('tasks')
        .set({ lease_expires_at: new Date(Date.now() - 1000).toISOString() })
        .where('job_id', '=', older)
        .execute(),
    );
    const recovered = await recoverExpiredLeases(server.context, { actor: 'test' });
    expect(recovered.map((item) => item.outcome)).toEqual(['requeued']);
    const olderTask = (await job(older)).tasks[0];
    const newerTask = (await job(newer)).tasks[0];
    expect(olderTask.queued_at > newerTask.queued_at).toBe(true);
    expect((await job(newer)).reason).toBe(
      `waits for the older job ${older} in concurrency group serial-order to start`,
    );

    expect(await claim(4)).toEqual([older]);
    expect((await job(newer)).status).toBe('queued');
    expect((await job(newer)).reason).toBe(
      `waits for job ${older} in concurrency group serial-order`,
    );
    await endClaimed(older, { status: 'success' });
    expect(await claim(4)).toEqual([newer]);
    await endClaimed(newer, { status: 'success' });
  });

  it('wakes a waiting claim when an older queued job ends', async () => {
    await claim(100);
    // No worker here runs docker, so the older job stays queued and keeps the newer one waiting.
    const older = await trigger('mixed-docker', { commit: 'abab0006' });
    const newer = await trigger('mixed-local', { commit: 'abab0007' });
    const request = {
      workerId: WORKER,
      executors: ['local'],
      defaultExecutor: 'local',
      max: 1,
      leaseMs: 60_000,
    };
    const started = Date.now();
    const waiting = executionServices(server.context).dispatcher.claim(
      request,
      { actor: WORKER },
      5_000,
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    const cancelled = await server.request('POST', `/api/job/${older}/cancel`, { token });
    expect(cancelled.status).toBeLessThan(300);
    const tasks = await waiting;
    expect(tasks.map((task) => task.job.id)).toEqual([newer]);
    expect(Date.now() - started).toBeLessThan(2_000);
    await endClaimed(newer, { status: 'success' });
  });

  it('orders a group by creation, not queue time', async () => {
    await claim(100);
    const first = await trigger('serial', { commit: 'abab0003', branch: 'created' });
    const second = await trigger('serial', { commit: 'abab0004', branch: 'created' });
    const third = await trigger('serial', { commit: 'abab0005', branch: 'created' });
    // The first job was queued last, as a requeued task would be; creation order still wins.
    const later = new Date(Date.now() + 60_000).toISOString();
    await server.context.store.write((trx) =>
      trx.updateTable('tasks').set({ queued_at: later }).where('job_id', '=', first).execute(),
    );
    expect((await job(third)).reason).toBe(
      `waits for the older job ${first} in concurrency group serial-created to start`,
    );
    for (const id of [first, second, third]) {
      expect(await claim(4)).toEqual([id]);
      await endClaimed(id, { status: 'success' });
    }
  });

  it('lists the reasons a single read gives', async () => {
    await claim(100);
    const first = await trigger('serial', { commit: 'cdcd0001', branch: 'listing' });
    const second = await trigger('serial', { commit: 'cdcd0002', branch: 'listing' });
    const third = await trigger('serial', { commit: 'cdcd0003', branch: 'listing' });
    expect(await claim(1)).toEqual([first]);
    // A reason stored by the sweep goes stale; reads work out a queued job's reason anew.
    await server.context.store.write((trx) =>
      trx
        .updateTable('jobs')
        .set({ reason: 'no worker is online' })
        .where('id', '=', third)
        .execute(),
    );

    const listed = await server.request('GET', '/api/admin/jobs?branch=listing', { token });
    expect(listed.status, listed.text).toBe(200);
    const reasons = Object.fromEntries(
      listed.body.jobs.map((item: { id: string; reason: string | null }) => [item.id, item.reason]),
    );
    expect(Object.keys(reasons).sort()).toEqual([first, second, third].sort());
    expect(reasons[first]).toBeNull();
    expect(reasons[second]).toBe(`waits for job ${first} in concurrency group serial-listing`);
    expect(reasons[third]).toBe(`waits for job ${first} in concurrency group serial-listing`);
    for (const id of [first, second, third]) {
      expect(reasons[id], id).toBe((await job(id)).reason);
    }

    // With the first job ended, the second goes next and the third names it.
    await endClaimed(first, { status: 'success' });
    const next = await server.request('GET', '/api/admin/jobs?branch=listing', { token });
    const after = Object.fromEntries(
      next.body.jobs.map((item: { id: string; reason: string | null }) => [item.id, item.reason]),
    );
    expect(after[third]).toBe(
      `waits for the older job ${second} in concurrency group serial-listing to start`,
    );
    for (const id of [first, second, third]) {
      expect(after[id], id).toBe((await job(id)).reason);
    }
    for (const id of [second, third]) {
      expect(await claim(4)).toEqual([id]);
      await endClaimed(id, { status: 'success' });
    }
  });

  it('explains a page with fixed queries', async () => {
    await claim(100);
    await trigger('solo', { commit: 'efef0001', branch: 'count' });
    const serial: string[] = [];
    for (let index = 2; index <= 6; index += 1) {
      serial.push(await trigger('serial', { commit: `efef000${index}`, branch: 'count' }));
    }
    const { runs, reasons } = server.context.store.read((sqlite) => {
      const jobs = readJobList(sqlite, { branch: 'count', limit: 50 });
      expect(jobs).toHaveLength(6);
      const counted = countStatementRuns(sqlite);
      const explained = explainEachQueued(counted.connection, server.context.config, jobs);
      return { runs: counted.runs(), reasons: explained };
    });
    // One query each for tasks, concurrency groups, live workers and their running tasks. A
    // query per job would take at least 6.
    expect(runs).toBeGreaterThan(0);
    expect(runs).toBeLessThanOrEqual(4);
    for (const id of serial.slice(1)) {
      expect(reasons.get(id)).toBe(
        `waits for the older job ${serial[0]} in concurrency group serial-count to start`,
      );
    }
    await claim(100);
  });

  it('rejects PATCH running while another runs', async () => {
    const first = await trigger('serial', { commit: 'ffff0001', branch: 'patch' });
    const second = await trigger('serial', { commit: 'ffff0002', branch: 'patch' });
    const started = await patchStatus(first, 'running');
    expect(started.status, started.text).toBe(200);
    const tasksBefore = (await job(second)).tasks;

    const rejected = await patchStatus(second, 'running');
    expect(rejected.status).toBe(409);
    expect(rejected.body.code).toBe('concurrency_group_busy');
    expect(rejected.body.field).toBe('status');
    expect(rejected.body.rule).toBe('concurrency');
    expect(rejected.body.request_id).toEqual(expect.any(String));
    expect(rejected.body.current_status).toBe('queued');
    expect(rejected.body.concurrency_group).toBe('serial-patch');
    expect(rejected.body.running_job_id).toBe(first);
    expect(rejected.body.error).toContain(`job ${second} cannot change from queued to running`);
    expect(rejected.body.error).toContain(`job ${first} of its concurrency group serial-patch`);
    expect((await job(second)).status).toBe('queued');
    expect((await job(second)).tasks).toEqual(tasksBefore);

    // Once the first job ended, the second may start.
    expect((await patchStatus(first, 'success')).status).toBe(200);
    const after = await patchStatus(second, 'running');
    expect(after.status, after.text).toBe(200);
    expect((await patchStatus(second, 'success')).status).toBe(200);
  });

  it('rejects PATCH running ahead of an older job', async () => {
    const first = await trigger('serial', { commit: 'ffff0005', branch: 'order' });
    const second = await trigger('serial', { commit: 'ffff0006', branch: 'order' });
    const tasksBefore = (await job(second)).tasks;

    const rejected = await patchStatus(second, 'running');
    expect(rejected.status).toBe(409);
    expect(rejected.body.code).toBe('concurrency_group_busy');
    expect(rejected.body.rule).toBe('concurrency');
    expect(rejected.body.older_job_id).toBe(first);
    expect(rejected.body.running_job_id).toBeUndefined();
    expect(rejected.body.error).toContain(`the older job ${first} of its concurrency group`);
    expect((await job(second)).status).toBe('queued');
    expect((await job(second)).tasks).toEqual(tasksBefore);

    // Once the older job started, the next PATCH waits for it to end instead.
    expect((await patchStatus(first, 'running')).status).toBe(200);
    expect((await patchStatus(second, 'running')).body.running_job_id).toBe(first);
    expect((await patchStatus(first, 'success')).status).toBe(200);
    expect((await patchStatus(second, 'running')).status).toBe(200);
    expect((await patchStatus(second, 'success')).status).toBe(200);
  });

  it('lets one of two concurrent PATCHes start', async () => {
    const first = await trigger('serial', { commit: 'ffff0003', branch: 'race' });
    const second = await trigger('serial', { commit: 'ffff0004', branch: 'race' });
    const responses = await Promise.all([
      patchStatus(first, 'running'),
      patchStatus(second, 'running'),
    ]);
    const codes = responses.map((response) => response.status).sort();
    expect(codes).toEqual([200, 409]);
    const statuses = [(await job(first)).status, (await job(second)).status].sort();
    expect(statuses).toEqual(['queued', 'running']);
    for (const id of [first, second]) {
      if ((await job(id)).status === 'running') await patchStatus(id, 'success');
    }
  });

  it('finds waiting tasks through the jobs index', () => {
    const plan = server.context.store.read((sqlite) =>
      queryPlan(sqlite, QUEUED_IN_GROUP.sql, QUEUED_IN_GROUP.bind({ group: 'ship' })),
    );
    expect(plan).toMatch(/SEARCH jobs USING (COVERING )?INDEX jobs_concurrency_group/);
    expect(plan).not.toMatch(/tasks_status_queued/);
  });

  it('claims through the group index', () => {
    const query = claimCandidates(server.context.store.db, ['local'], 4).compile();
    const plan = server.context.store.read((sqlite) =>
      queryPlan(sqlite, query.sql, query.parameters),
    );
    expect(plan).not.toMatch(/\bSCAN\b/);
    expect(plan).toMatch(
      /SEARCH other USING COVERING INDEX jobs_concurrency_group \(concurrency_group=\? AND status=\?\)/,
    );
    expect(plan).toMatch(
      /SEARCH older USING COVERING INDEX jobs_concurrency_group \(concurrency_group=\? AND status=\? AND created_at<\?\)/,
    );
    expect(plan).toMatch(/SEARCH stopping USING INDEX tasks_stopping \(lease_expires_at>\?\)/);
  });
});
