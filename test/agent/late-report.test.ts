/**
 * A finish report after a lost lease adds a `task_report_rejected` audit row, but only when the
 * reporting worker held the attempt it names. Otherwise any agent token could fill the audit
 * log of tasks that its workers never ran.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writePipelineFile } from '../support/execution.js';
import { startTestServer, type TestServer } from '../support/server.js';

interface Claimed {
  task_id: string;
  attempt: number;
}

describe('late finish reports', () => {
  let server: TestServer;
  let ownerToken: string;
  let otherToken: string;
  let branchCounter = 0;

  beforeAll(async () => {
    const pipelines = writePipelineFile(`
pipelines:
  ci:
    executor: local
    steps:
      - name: test
        run: 'true'
`);
    server = await startTestServer({ SLIPWAY_PIPELINES: pipelines, SLIPWAY_LEASE_SECONDS: '30' });
    ownerToken = await server.token('agent', 'agent-owner');
    otherToken = await server.token('agent', 'agent-other');
    for (const [token, name] of [
      [ownerToken, 'worker-a'],
      [ownerToken, 'worker-b'],
      [otherToken, 'worker-z'],
    ] as const) {
      const registered = await server.request('POST', '/api/agent/workers', {
        token,
        body: { name, hostname: 'host', executors: ['local'], capacity: 4 },
      });
      expect(registered.status, registered.text).toBe(200);
    }
  });
  afterAll(async () => {
    await server?.close();
  });

  async function claimNewTask(worker: string): Promise<Claimed> {
    branchCounter += 1;
    const created = await server.request('POST', '/api/trigger/ci', {
      token: server.adminToken,
      body: { commit: 'abc1234', branch: `late-${branchCounter}` },
    });
    expect(created.status, created.text).toBe(201);
    return claim(worker);
  }

  async function claim(worker: string): Promise<Claimed> {
    const claimed = await server.request('POST', `/api/agent/workers/${worker}/claim`, {
      token: ownerToken,
      body: { max: 1, wait_seconds: 0 },
    });
    expect(claimed.status, claimed.text).toBe(200);
    expect(claimed.body.tasks).toHaveLength(1);
    return claimed.body.tasks[0] as Claimed;
  }

  function finish(token: string, worker: string, taskId: string, attempt: number) {
    return server.request('POST', `/api/agent/tasks/${taskId}/finish`, {
      token,
      body: {
        worker_id: worker,
        attempt,
        status: 'success',
        exit_code: 0,
        reason: null,
        duration_ms: 5,
      },
    });
  }

  async function rejectedRows(taskId: string) {
    const rows = await server.context.store.db
      .selectFrom('audit_log')
      .select('details')
      .where('action', '=', 'task_report_rejected')
      .where('task_id', '=', taskId)
      .execute();
    return rows.map((row) => JSON.parse(row.details) as Record<string, unknown>);
  }

  async function taskOf(taskId: string) {
    return server.context.store.db
      .selectFrom('tasks')
      .select(['status', 'worker_id', 'attempt'])
      .where('id', '=', taskId)
      .executeTakeFirstOrThrow();
  }

  function expectLeaseLost(response: { status: number; body: Record<string, unknown> }) {
    expect(response.status).toBe(409);
    expect(response.body.code).toBe('lease_lost');
    expect(response.body.field).toBe('attempt');
    expect(response.body.rule).toBe('lease');
  }

  it('reports on attempts never held add no row', async () => {
    const task = await claimNewTask('worker-a');

    // Another token's worker names the running attempt, or one that does not exist.
    expectLeaseLost(await finish(otherToken, 'worker-z', task.task_id, task.attempt));
    expectLeaseLost(await finish(otherToken, 'worker-z', task.task_id, 7));
    // The holder names an attempt that no claim has given out.
    expectLeaseLost(await finish(ownerToken, 'worker-a', task.task_id, task.attempt + 1));
    expect(await rejectedRows(task.task_id)).toEqual([]);
    expect(await taskOf(task.task_id)).toEqual({
      status: 'running',
      worker_id: 'worker-a',
      attempt: task.attempt,
    });

    // After the holder's finish, a stranger's report still adds no row.
    const done = await finish(ownerToken, 'worker-a', task.task_id, task.attempt);
    expect(done.status, done.text).toBe(200);
    expectLeaseLost(await finish(otherToken, 'worker-z', task.task_id, task.attempt));
    expect(await rejectedRows(task.task_id)).toEqual([]);
    expect((await taskOf(task.task_id)).status).toBe('success');
  });

  it('a holder of an earlier attempt adds a row', async () => {
    const first = await claimNewTask('worker-a');
    const released = await server.request('POST', `/api/agent/tasks/${first.task_id}/release`, {
      token: ownerToken,
      body: { worker_id: 'worker-a', attempt: first.attempt, reason: 'worker stopping' },
    });
    expect(released.status, released.text).toBe(200);
    const second = await claim('worker-b');
    expect(second.task_id).toBe(first.task_id);
    expect(second.attempt).toBe(first.attempt + 1);

    // worker-b has attempt 2 now, but never held attempt 1.
    expectLeaseLost(await finish(ownerToken, 'worker-b', first.task_id, first.attempt));
    expect(await rejectedRows(first.task_id)).toEqual([]);

    // worker-a held attempt 1, which only the task_claimed audit row still shows.
    expectLeaseLost(await finish(ownerToken, 'worker-a', first.task_id, first.attempt));
    const rows = await rejectedRows(first.task_id);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      worker_id: 'worker-a',
      attempt: first.attempt,
      reported_status: 'success',
      task_status: 'running',
      task_attempt: second.attempt,
    });
  });

  it('the current holder after its lease ended adds a row', async () => {
    const task = await claimNewTask('worker-a');
    // A status update ends the task; the holder's confirmation ends the kept lease.
    const ended = await server.request('PATCH', `/api/job/${task.task_id.split('.')[0]}/status`, {
      token: server.adminToken,
      body: { status: 'error', reason: 'ended by hand' },
    });
    expect(ended.status, ended.text).toBe(200);
    const confirmed = await finish(ownerToken, 'worker-a', task.task_id, task.attempt);
    expect(confirmed.status, confirmed.text).toBe(200);

    expectLeaseLost(await finish(otherToken, 'worker-z', task.task_id, task.attempt));
    expect(await rejectedRows(task.task_id)).toEqual([]);
    expectLeaseLost(await finish(ownerToken, 'worker-a', task.task_id, task.attempt));
    const rows = await rejectedRows(task.task_id);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ worker_id: 'worker-a', task_status: 'error' });
  });
});
