import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Status } from '../../src/jobs/status.js';
import { countRows } from '../support/rows.js';
import { startTestServer, type TestServer } from '../support/server.js';

/**
 * The job status machine, written out here rather than imported, so that a change to the
 * rules in src/jobs/status.ts has to be made on purpose in both places.
 */
const ALLOWED: Record<string, string[]> = {
  waiting: ['queued', 'skipped', 'cancelled', 'error'],
  queued: ['running', 'skipped', 'cancelled', 'error'],
  running: ['queued', 'success', 'failure', 'error', 'timed_out', 'cancelled'],
  success: [],
  failure: [],
  error: [],
  timed_out: [],
  cancelled: [],
  skipped: [],
};
const STATUSES = Object.keys(ALLOWED);

describe('PATCH status state machine', () => {
  let server: TestServer;
  let commitCounter = 0;

  const patch = (id: string, status: string) =>
    server.request('PATCH', `/api/job/${id}/status`, {
      token: server.adminToken,
      body: { status },
    });

  /** Creates a job and moves it into `status` through the API. */
  async function jobIn(status: string): Promise<string> {
    // A fresh commit per job, so dependencies and concurrency groups do not interfere.
    const commit = (++commitCounter).toString(16).padStart(7, '0');
    const type = status === 'waiting' ? 'integration-tests' : 'recovery';
    const created = await server.request('POST', `/api/trigger/${type}`, {
      token: server.adminToken,
      body: { commit },
    });
    const id = created.body.job_id as string;
    const path: Record<string, string[]> = {
      waiting: [],
      queued: [],
      running: ['running'],
      skipped: ['skipped'],
    };
    for (const step of path[status] ?? ['running', status]) {
      expect((await patch(id, step)).status).toBe(200);
    }
    const job = await server.request('GET', `/api/job/${id}`, { token: server.adminToken });
    expect(job.body.status).toBe(status);
    return id;
  }

  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server.close();
  });

  // waiting -> queued also needs the job's dependencies to have succeeded. The tests after
  // the table cover it.
  const cases = STATUSES.flatMap((from) =>
    STATUSES.map((to) => ({ from, to, allowed: ALLOWED[from]!.includes(to) })),
  ).filter(({ from, to }) => !(from === 'waiting' && to === 'queued'));

  it.each(cases)('$from -> $to', async ({ from, to, allowed }) => {
    const id = await jobIn(from);
    const db = server.context.store.db;
    const before = await db.selectFrom('jobs').selectAll().where('id', '=', id).execute();
    const tasksBefore = await db.selectFrom('tasks').selectAll().where('job_id', '=', id).execute();
    const rowsBefore = await countRows(db);

    const response = await patch(id, to);
    if (allowed) {
      expect(response.status).toBe(200);
      expect(response.body.status).toBe(to);
      expect(response.body.tasks.every((task: { status: string }) => task.status === to)).toBe(
        true,
      );
      if (['success', 'failure', 'error', 'timed_out', 'cancelled', 'skipped'].includes(to)) {
        expect(response.body.finished_at).toMatch(/Z$/);
      }
      return;
    }
    expect(response.status).toBe(409);
    expect(response.body.code).toBe('invalid_transition');
    expect(response.body.field).toBe('status');
    expect(response.body.rule).toBe('transition');
    expect(response.body.current_status).toBe(from);
    expect(response.body.allowed).toEqual(ALLOWED[from]);
    expect(response.body.error).toContain(`from ${from} to ${to}`);
    if (ALLOWED[from]!.length === 0) {
      expect(response.body.error).toContain('is final');
    } else {
      expect(response.body.error).toContain(`allowed: ${ALLOWED[from]!.join(', ')}`);
    }
    expect(await db.selectFrom('jobs').selectAll().where('id', '=', id).execute()).toEqual(before);
    expect(await db.selectFrom('tasks').selectAll().where('job_id', '=', id).execute()).toEqual(
      tasksBefore,
    );
    expect(await countRows(db)).toEqual(rowsBefore);
  });

  /**
   * Triggers an integration-tests job, which waits for ci of its commit, and then a ci job
   * whose status is set in the database. Setting it there leaves the integration-tests job
   * waiting, as an event the orchestrator missed would.
   */
  async function waitingOnCi(ciStatus: Status | undefined) {
    const commit = (++commitCounter).toString(16).padStart(7, '0');
    const send = (type: string) =>
      server.request('POST', `/api/trigger/${type}`, {
        token: server.adminToken,
        body: { commit },
      });
    const waiting = await send('integration-tests');
    expect(waiting.body.status).toBe('waiting');
    if (ciStatus !== undefined) {
      const ci = (await send('ci')).body.job_id as string;
      await server.context.store.write(async (trx) => {
        await trx.updateTable('tasks').set({ status: ciStatus }).where('job_id', '=', ci).execute();
        await trx.updateTable('jobs').set({ status: ciStatus }).where('id', '=', ci).execute();
      });
    }
    return { id: waiting.body.job_id as string, commit };
  }

  it.each([
    { label: 'no ci job', ci: undefined, reason: 'waiting for ci of' },
    { label: 'ci queued', ci: 'queued', reason: 'waiting for ci of' },
    { label: 'ci running', ci: 'running', reason: 'waiting for ci of' },
    { label: 'ci failed', ci: 'failure', reason: 'ended failure' },
    { label: 'ci cancelled', ci: 'cancelled', reason: 'ended cancelled' },
  ] as const)('waiting -> queued rejected: $label', async ({ ci, reason }) => {
    const { id, commit } = await waitingOnCi(ci);
    const db = server.context.store.db;
    const tasksBefore = await db.selectFrom('tasks').selectAll().where('job_id', '=', id).execute();
    const rowsBefore = await countRows(db);

    const response = await patch(id, 'queued');
    expect(response.status).toBe(409);
    expect(response.body.code).toBe('dependency_not_met');
    expect(response.body.field).toBe('status');
    expect(response.body.rule).toBe('dependencies');
    expect(response.body.current_status).toBe('waiting');
    expect(response.body.unmet_dependencies).toEqual(['ci']);
    expect(response.body.error).toContain(`job ${id} cannot change from waiting to queued`);
    expect(response.body.error).toContain(reason);
    expect(response.body.error).toContain(commit);
    expect(await db.selectFrom('tasks').selectAll().where('job_id', '=', id).execute()).toEqual(
      tasksBefore,
    );
    expect(await countRows(db)).toEqual(rowsBefore);
  });

  it('waiting -> queued once dependencies succeeded', async () => {
    const { id } = await waitingOnCi('success');
    const response = await patch(id, 'queued');
    expect(response.status, response.text).toBe(200);
    expect(response.body.status).toBe('queued');
    expect(response.body.tasks[0].status).toBe('queued');
  });

  it('waiting -> queued without dependencies', async () => {
    const created = await server.request('POST', '/api/trigger/recovery', {
      token: server.adminToken,
      body: { commit: (++commitCounter).toString(16).padStart(7, '0') },
    });
    const id = created.body.job_id as string;
    // A job type without dependencies is never waiting unless something put it there.
    await server.context.store.write(async (trx) => {
      await trx.updateTable('tasks').set({ status: 'waiting' }).where('job_id', '=', id).execute();
      await trx.updateTable('jobs').set({ status: 'waiting' }).where('id', '=', id).execute();
    });
    const response = await patch(id, 'queued');
    expect(response.status, response.text).toBe(200);
    expect(response.body.status).toBe('queued');
  });

  it('running -> queued returns the task to the queue', async () => {
    const id = await jobIn('running');
    const response = await patch(id, 'queued');
    expect(response.status).toBe(200);
    expect(response.body.tasks[0].status).toBe('queued');
    expect(response.body.tasks[0].worker_id).toBeNull();
    expect(response.body.tasks[0].lease_expires_at).toBeNull();
  });

  it('a job with a finished task and a queued one can still end', async () => {
    const created = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit: 'fedcba9', branch: 'two-tasks', python_versions: ['3.11', '3.12'] },
    });
    const id = created.body.job_id as string;
    // A worker finished the first task; the second is still queued, so the job is running.
    await server.context.store.write(async (trx) => {
      await trx
        .updateTable('tasks')
        .set({ status: 'success', exit_code: 0 })
        .where('id', '=', `${id}.1.0`)
        .execute();
      await trx.updateTable('jobs').set({ status: 'running' }).where('id', '=', id).execute();
    });
    const response = await patch(id, 'success');
    expect(response.status).toBe(200);
    expect(response.body.status).toBe('success');
    expect(response.body.tasks.map((task: { status: string }) => task.status)).toEqual([
      'success',
      'success',
    ]);
    const audit = await server.context.store.db
      .selectFrom('audit_log')
      .select('action')
      .where('job_id', '=', id)
      .orderBy('id')
      .execute();
    expect(audit.map((row) => row.action)).toEqual([
      'job_triggered',
      'job_status_updated',
      'job_finished',
    ]);
  });
});
