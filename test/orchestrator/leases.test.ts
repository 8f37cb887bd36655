import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { releaseTask } from '../../src/dispatch/lease.js';
import { taskLogStore } from '../../src/dispatch/services.js';
import { ChangeSet } from '../../src/orchestrator/changes.js';
import { recoverExpiredLeases } from '../../src/orchestrator/leases.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';
import { auditRows, getJob, trigger, writePipelines } from './helpers.js';

const audit = { actor: 'orchestrator' };

/** Writes what a worker's claim writes: attempt + 1, the worker, a lease, status running. */
async function claim(server: TestServer, jobId: string, worker: string, leaseMs: number) {
  await server.context.store.write(async (trx) => {
    const task = await trx
      .selectFrom('tasks')
      .selectAll()
      .where('job_id', '=', jobId)
      .orderBy('job_attempt', 'desc')
      .executeTakeFirstOrThrow();
    const now = new Date().toISOString();
    await trx
      .updateTable('tasks')
      .set({
        status: 'running',
        attempt: task.attempt + 1,
        worker_id: worker,
        lease_expires_at: new Date(Date.now() + leaseMs).toISOString(),
        started_at: task.started_at ?? now,
        updated_at: now,
      })
      .where('id', '=', task.id)
      .execute();
    await trx
      .updateTable('jobs')
      .set({ status: 'running', started_at: now })
      .where('id', '=', jobId)
      .execute();
  });
}

describe('lease expiry', () => {
  let server: TestServer;
  beforeAll(async () => {
    const dir = makeTempDir();
    server = await startTestServer({
      SLIPWAY_DATA_DIR: dir,
      SLIPWAY_PIPELINES: writePipelines(dir),
      SLIPWAY_MAX_TASK_ATTEMPTS: '2',
    });
  });
  afterAll(async () => {
    await server.close();
  });

  it('leaves a live lease alone', async () => {
    const ci = await trigger(server, 'ci', 'aa11223344');
    await claim(server, ci.job_id, 'worker-a', 60_000);
    expect(await recoverExpiredLeases(server.context, audit)).toEqual([]);
    expect((await getJob(server, ci.job_id)).status).toBe('running');
  });

  it('ends the lost attempt log with why', async () => {
    const logs = taskLogStore(server.context);
    const ci = await trigger(server, 'ci', 'ab11223344');
    const other = await trigger(server, 'ci', 'ac11223344');
    await claim(server, ci.job_id, 'worker-b', -1);
    await claim(server, other.job_id, 'worker-b', -1);
    const taskId = (await getJob(server, ci.job_id)).tasks[0]!.id;
    const file = logs.pathFor(ci.job_id, taskId, 1);
    await logs.create(file);
    await logs.append(file, 0, Buffer.from('tick 1\ntick 2'));
    const otherTaskId = (await getJob(server, other.job_id)).tasks[0]!.id;
    const otherFile = logs.pathFor(other.job_id, otherTaskId, 1);

    expect(await recoverExpiredLeases(server.context, audit)).toHaveLength(2);
    expect(fs.readFileSync(file, 'utf8')).toBe(
      'tick 1\ntick 2\n[slipway] lease expired on worker-b (attempt 1 of 2); queued again\n',
    );
    // A log kept on another host is not created here.
    expect(fs.existsSync(otherFile)).toBe(false);
  });

  it('ends the lost attempt log before queueing', async () => {
    const logs = taskLogStore(server.context);
    const ci = await trigger(server, 'ci', 'ad11223344');
    await claim(server, ci.job_id, 'worker-c', -1);
    const taskId = (await getJob(server, ci.job_id)).tasks[0]!.id;
    const file = logs.pathFor(ci.job_id, taskId, 1);
    await logs.create(file);
    await logs.append(file, 0, Buffer.from('tick 1\n'));
    // What the next attempt's claim would find in the file when the queued event wakes it.
    let atQueued: string | undefined;
    const onQueued = () => {
      atQueued = fs.readFileSync(file, 'utf8');
    };
    server.context.events.on('tasks-queued', onQueued);
    try {
      await recoverExpiredLeases(server.context, audit);
    } finally {
      server.context.events.off('tasks-queued', onQueued);
    }
    expect(atQueued).toBe(
      'tick 1\n[slipway] lease expired on worker-c (attempt 1 of 2); queued again\n',
    );
  });

  it('requeues a ci task, then ends it error after the last attempt', async () => {
    const ci = await trigger(server, 'ci', 'bb11223344');
    const queuedEvents: string[][] = [];
    server.context.events.on('tasks-queued', (ids) => queuedEvents.push(ids));

    await claim(server, ci.job_id, 'worker-a', -1);
    const first = await recoverExpiredLeases(server.context, audit);
    expect(first).toHaveLength(1);
    expect(first[0]).toMatchObject({ outcome: 'requeued', attempt: 1, maxAttempts: 2 });
    let job = await getJob(server, ci.job_id);
    expect(job.status).toBe('queued');
    expect(job.tasks[0]?.worker_id).toBeNull();
    expect(job.tasks[0]?.lease_expires_at).toBeNull();
    expect(job.tasks[0]?.attempt).toBe(1);
    expect(job.tasks[0]?.reason).toBe('lease expired on worker-a (attempt 1 of 2); queued again');
    expect(queuedEvents).toEqual([[job.tasks[0]?.id]]);

    await claim(server, ci.job_id, 'worker-b', -1);
    const second = await recoverExpiredLeases(server.context, audit);
    expect(second[0]).toMatchObject({ outcome: 'error', attempt: 2 });
    job = await getJob(server, ci.job_id);
    expect(job.status).toBe('error');
    expect(job.reason).toContain('lease expired on worker-b (attempt 2 of 2); no attempts left');

    const rows = await auditRows(server, 'task_lease_expired', ci.job_id);
    expect(
      rows.map((row) => [row.details.worker_id, row.details.attempt, row.details.outcome]),
    ).toEqual([
      ['worker-a', 1, 'requeued'],
      ['worker-b', 2, 'error'],
    ]);
    server.context.events.removeAllListeners('tasks-queued');
  });

  it('counts no hand-back as an attempt', async () => {
    const ci = await trigger(server, 'ci', 'bc11223344');
    const taskId = (await getJob(server, ci.job_id)).tasks[0]!.id;
    // Two clean restarts of the worker: each claim ends in a hand-back.
    for (const attempt of [1, 2]) {
      await claim(server, ci.job_id, 'worker-h', 60_000);
      await server.context.store.write((trx) =>
        releaseTask(
          trx,
          { taskId, workerId: 'worker-h', attempt },
          'worker-h stopped before the task ended',
          new ChangeSet(),
          audit,
        ),
      );
    }
    let job = await getJob(server, ci.job_id);
    expect(job.status).toBe('queued');
    expect(job.tasks[0]?.attempt).toBe(2);

    // Then the worker is lost: with SLIPWAY_MAX_TASK_ATTEMPTS=2 the task still runs again.
    await claim(server, ci.job_id, 'worker-h', -1);
    const warn = vi.spyOn(server.context.logger, 'warn');
    try {
      const recovered = await recoverExpiredLeases(server.context, audit);
      expect(recovered[0]).toMatchObject({ outcome: 'requeued', attempt: 3, handBacks: 2 });
      // The log line counts the attempts as the stored reason does.
      expect(warn).toHaveBeenCalledWith(
        { taskId, jobId: ci.job_id, attempt: 3 },
        'lease expired, task queued again after attempt 1 of 2, not counting 2 hand-back(s)',
      );
    } finally {
      warn.mockRestore();
    }
    job = await getJob(server, ci.job_id);
    expect(job.status).toBe('queued');
    expect(job.tasks[0]?.reason).toBe(
      'lease expired on worker-h (attempt 1 of 2, not counting 2 hand-back(s)); queued again',
    );
  });

  it('ends a deploy task error without running it again', async () => {
    const commit = 'cc11223344';
    const deploy = await trigger(server, 'deploy', commit, {});
    // Release the deploy by recording succeeded dependencies directly.
    await server.context.store.write(async (trx) => {
      await trx
        .updateTable('tasks')
        .set({ status: 'queued' })
        .where('job_id', '=', deploy.job_id)
        .execute();
      await trx
        .updateTable('jobs')
        .set({ status: 'queued', reason: null })
        .where('id', '=', deploy.job_id)
        .execute();
    });
    await claim(server, deploy.job_id, 'worker-a', -1);
    const recovered = await recoverExpiredLeases(server.context, audit);
    expect(recovered).toEqual([expect.objectContaining({ outcome: 'error', attempt: 1 })]);
    const job = await getJob(server, deploy.job_id);
    expect(job.status).toBe('error');
    expect(job.tasks[0]?.attempt).toBe(1);
    expect(job.reason).toContain('deploy has side effects, so it is not re-run automatically');
    const rows = await auditRows(server, 'task_lease_expired', deploy.job_id);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.details.side_effects).toBe(true);
    expect(await recoverExpiredLeases(server.context, audit)).toEqual([]);
  });

  it('ends a task cancelled when its cancel was requested', async () => {
    const ci = await trigger(server, 'ci', 'dd11223344');
    await claim(server, ci.job_id, 'worker-a', 60_000);
    const cancel = await server.request('POST', `/api/job/${ci.job_id}/cancel`, {
      token: server.adminToken,
      body: { reason: 'stop it' },
    });
    expect(cancel.status).toBe(202);
    await server.context.store.write((trx) =>
      trx
        .updateTable('tasks')
        .set({ lease_expires_at: new Date(Date.now() - 1).toISOString() })
        .where('job_id', '=', ci.job_id)
        .execute(),
    );
    const recovered = await recoverExpiredLeases(server.context, audit);
    expect(recovered[0]?.outcome).toBe('cancelled');
    const job = await getJob(server, ci.job_id);
    expect(job.status).toBe('cancelled');
    expect(job.tasks[0]?.reason).toBe(
      'stop it; lease expired on worker-a before it confirmed that the step stopped',
    );
  });
});
