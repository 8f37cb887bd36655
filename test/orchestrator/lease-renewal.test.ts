import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recoverExpiredLeases, renewLeasesOnStart } from '../../src/orchestrator/leases.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';
import { auditRows, trigger, writePipelines } from './helpers.js';

const LEASE_SECONDS = 60;
const api = { actor: 'api' };

interface ClaimedTask {
  task_id: string;
  attempt: number;
}

/**
 * The renewal that a starting API gives running tasks, and its bound: an API that starts again
 * before the worker reported does not renew the lease a second time.
 */
describe('lease renewal when the API starts', () => {
  let server: TestServer;
  let agent: string;

  beforeAll(async () => {
    const dir = makeTempDir();
    server = await startTestServer({
      SLIPWAY_DATA_DIR: dir,
      SLIPWAY_PIPELINES: writePipelines(dir),
      SLIPWAY_LEASE_SECONDS: String(LEASE_SECONDS),
      SLIPWAY_MAX_TASK_ATTEMPTS: '3',
      BACKUP_INTERVAL: '0',
    });
    agent = await server.token('agent');
  });
  afterAll(async () => {
    await server.close();
  });

  async function claimOne(worker: string): Promise<ClaimedTask> {
    const registered = await server.request('POST', '/api/agent/workers', {
      token: agent,
      body: { name: worker, hostname: 'test-host', executors: ['local'], capacity: 1 },
    });
    expect(registered.status, registered.text).toBeLessThan(300);
    const response = await server.request('POST', `/api/agent/workers/${worker}/claim`, {
      token: agent,
      body: { max: 1, wait_seconds: 0 },
    });
    expect(response.status, response.text).toBe(200);
    expect(response.body.tasks).toHaveLength(1);
    return response.body.tasks[0];
  }

  /** The lease ran out while no API responded: what a stop longer than a lease leaves. */
  async function expireLease(taskId: string): Promise<void> {
    await server.context.store.write(async (trx) => {
      await trx
        .updateTable('tasks')
        .set({ lease_expires_at: new Date(Date.now() - 1_000).toISOString() })
        .where('id', '=', taskId)
        .execute();
    });
  }

  async function task(taskId: string) {
    return server.context.store.db
      .selectFrom('tasks')
      .selectAll()
      .where('id', '=', taskId)
      .executeTakeFirstOrThrow();
  }

  it('renews a lease only once', async () => {
    const job = await trigger(server, 'ci', 'e1e1e1e1e1');
    const claimed = await claimOne('gone-worker');
    await expireLease(claimed.task_id);

    const startedAt = Date.now();
    expect(await renewLeasesOnStart(server.context, api)).toEqual({ renewed: 1, notRenewed: 0 });
    const renewed = await task(claimed.task_id);
    expect(Date.parse(renewed.lease_expires_at!)).toBeGreaterThanOrEqual(
      startedAt + LEASE_SECONDS * 1000 - 1_000,
    );
    expect(renewed.lease_renewed_at).not.toBeNull();
    expect(await auditRows(server, 'task_lease_renewed', job.job_id)).toHaveLength(1);

    // The worker never reports. The renewed lease runs out, and the API starts again before
    // the watchdog looked: this start must not renew it a second time.
    await expireLease(claimed.task_id);
    expect(await renewLeasesOnStart(server.context, api)).toEqual({ renewed: 0, notRenewed: 1 });
    expect(Date.parse((await task(claimed.task_id)).lease_expires_at!)).toBeLessThan(Date.now());
    expect(await auditRows(server, 'task_lease_renewed', job.job_id)).toHaveLength(1);

    const recovered = await recoverExpiredLeases(server.context, { actor: 'orchestrator' });
    expect(recovered).toEqual([
      expect.objectContaining({ taskId: claimed.task_id, outcome: 'requeued', attempt: 1 }),
    ]);
    expect((await task(claimed.task_id)).status).toBe('queued');
    // Out of the way of the later tests' claims.
    const cancelled = await server.request('POST', `/api/job/${job.job_id}/cancel`, {
      token: server.adminToken,
    });
    expect(cancelled.status, cancelled.text).toBe(202);
  });

  it('leaves a task without a worker alone', async () => {
    const job = await trigger(server, 'ci', 'e4e4e4e4e4');
    const running = await server.request('PATCH', `/api/job/${job.job_id}/status`, {
      token: server.adminToken,
      body: { status: 'running' },
    });
    expect(running.status, running.text).toBe(200);
    const taskId = running.body.tasks[0].id as string;

    expect(await renewLeasesOnStart(server.context, api)).toEqual({ renewed: 0, notRenewed: 0 });
    expect((await task(taskId)).lease_expires_at).toBeNull();
    expect(await auditRows(server, 'task_lease_renewed', job.job_id)).toHaveLength(0);
    expect(await recoverExpiredLeases(server.context, { actor: 'orchestrator' })).toEqual([]);
    expect((await task(taskId)).status).toBe('running');
    await server.request('PATCH', `/api/job/${job.job_id}/status`, {
      token: server.adminToken,
      body: { status: 'cancelled' },
    });
  });

  it('renews again after a heartbeat', async () => {
    await trigger(server, 'ci', 'e2e2e2e2e2');
    const claimed = await claimOne('live-worker');
    await expireLease(claimed.task_id);
    expect(await renewLeasesOnStart(server.context, api)).toEqual({ renewed: 1, notRenewed: 0 });

    // The lease is fresh, but the first heartbeat after a renewal still writes, because it is
    // the word from the worker that the next start looks for.
    const beat = await server.request('POST', `/api/agent/tasks/${claimed.task_id}/heartbeat`, {
      token: agent,
      body: { worker_id: 'live-worker', attempt: claimed.attempt },
    });
    expect(beat.status, beat.text).toBe(200);
    expect((await task(claimed.task_id)).lease_renewed_at).toBeNull();

    await expireLease(claimed.task_id);
    expect(await renewLeasesOnStart(server.context, api)).toEqual({ renewed: 1, notRenewed: 0 });
    expect(Date.parse((await task(claimed.task_id)).lease_expires_at!)).toBeGreaterThan(Date.now());
  });

  it('clears the mark on a new claim', async () => {
    await trigger(server, 'ci', 'e3e3e3e3e3');
    const first = await claimOne('first-worker');
    await expireLease(first.task_id);
    await renewLeasesOnStart(server.context, api);
    await expireLease(first.task_id);
    await recoverExpiredLeases(server.context, { actor: 'orchestrator' });

    const second = await claimOne('second-worker');
    expect(second).toMatchObject({ task_id: first.task_id, attempt: first.attempt + 1 });
    expect((await task(first.task_id)).lease_renewed_at).toBeNull();
    await expireLease(second.task_id);
    // The task of the test above is still running too, renewed and not heard from since.
    expect(await renewLeasesOnStart(server.context, api)).toEqual({ renewed: 1, notRenewed: 1 });
    expect((await task(second.task_id)).lease_renewed_at).not.toBeNull();
  });

  it('renews a lease kept for a step', async () => {
    /** Claims a task and ends it with its step possibly running, which keeps its lease. */
    async function keptLease(worker: string, commit: string): Promise<ClaimedTask> {
      await trigger(server, 'ci', commit);
      const claimed = await claimOne(worker);
      const finished = await server.request('POST', `/api/agent/tasks/${claimed.task_id}/finish`, {
        token: agent,
        body: {
          worker_id: worker,
          attempt: claimed.attempt,
          status: 'timed_out',
          reason: 'the engine did not confirm the stop',
          duration_ms: 10,
          step_stopped: false,
        },
      });
      expect(finished.status, finished.text).toBe(200);
      expect((await task(claimed.task_id)).lease_expires_at).not.toBeNull();
      await expireLease(claimed.task_id);
      return claimed;
    }
    const setWorker = (
      id: string,
      values: { status?: 'online' | 'offline'; last_heartbeat_at?: string },
    ) =>
      server.context.store.write((trx) =>
        trx.updateTable('workers').set(values).where('id', '=', id).execute(),
      );

    const cutOff = await keptLease('cut-off-worker', 'e5e5e5e5e5');
    await setWorker('cut-off-worker', {
      last_heartbeat_at: new Date(Date.now() - 60_000).toISOString(),
    });
    const offline = await keptLease('offline-worker', 'e6e6e6e6e6');
    await setWorker('offline-worker', {
      status: 'offline',
      last_heartbeat_at: new Date(Date.now() - 60_000).toISOString(),
    });
    const movedOn = await keptLease('moved-on-worker', 'e7e7e7e7e7');
    await setWorker('moved-on-worker', { last_heartbeat_at: new Date().toISOString() });

    await renewLeasesOnStart(server.context, api);
    expect(Date.parse((await task(cutOff.task_id)).lease_expires_at!)).toBeGreaterThan(Date.now());
    expect((await task(cutOff.task_id)).status).toBe('timed_out');
    expect(Date.parse((await task(offline.task_id)).lease_expires_at!)).toBeLessThan(Date.now());
    expect(Date.parse((await task(movedOn.task_id)).lease_expires_at!)).toBeLessThan(Date.now());

    // Once per word from the worker, as for running tasks.
    await expireLease(cutOff.task_id);
    await renewLeasesOnStart(server.context, api);
    expect(Date.parse((await task(cutOff.task_id)).lease_expires_at!)).toBeLessThan(Date.now());
  });

  it('leaves a kept lease of a replaced session', async () => {
    const register = (session: string) =>
      server.request('POST', '/api/agent/workers', {
        token: agent,
        body: {
          name: 'restarted-worker',
          session,
          hostname: 'test-host',
          executors: ['local'],
          capacity: 1,
        },
      });
    expect((await register('session-one')).status).toBe(200);
    await trigger(server, 'ci', 'e8e8e8e8e8');
    const claim = await server.request('POST', '/api/agent/workers/restarted-worker/claim', {
      token: agent,
      body: { max: 1, wait_seconds: 0, session: 'session-one' },
    });
    expect(claim.body.tasks, claim.text).toHaveLength(1);
    const claimed = claim.body.tasks[0] as ClaimedTask;
    const finished = await server.request('POST', `/api/agent/tasks/${claimed.task_id}/finish`, {
      token: agent,
      body: {
        worker_id: 'restarted-worker',
        attempt: claimed.attempt,
        status: 'timed_out',
        reason: 'the engine did not confirm the stop',
        duration_ms: 10,
        step_stopped: false,
      },
    });
    expect(finished.status, finished.text).toBe(200);
    const keptUntil = (await task(claimed.task_id)).lease_expires_at;
    expect(keptUntil).not.toBeNull();

    // The process stopped with the step unconfirmed, and a new process took the worker id, so
    // no process will confirm the stop any more.
    const offline = await server.request('POST', '/api/agent/workers/restarted-worker/status', {
      token: agent,
      body: { status: 'offline' },
    });
    expect(offline.status, offline.text).toBe(200);
    expect((await register('session-two')).status).toBe(200);

    await renewLeasesOnStart(server.context, api);
    const after = await task(claimed.task_id);
    expect(after.lease_renewed_at).toBeNull();
    expect(after.lease_expires_at).toBe(keptUntil);
  });
});
