import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningRole } from '../../src/app/roles.js';
import { startOrchestrator } from '../../src/orchestrator/role.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';
import { auditRows, getJob, trigger, waitFor, writePipelines } from './helpers.js';

interface ClaimedTask {
  task_id: string;
  attempt: number;
}

describe('lease expiry through the agent API', () => {
  let server: TestServer;
  let orchestrator: RunningRole;
  let agent: string;

  beforeAll(async () => {
    const dir = makeTempDir();
    server = await startTestServer({
      SLIPWAY_DATA_DIR: dir,
      SLIPWAY_PIPELINES: writePipelines(dir),
      SLIPWAY_LEASE_SECONDS: '2',
      BACKUP_INTERVAL: '0',
    });
    agent = await server.token('agent');
    for (const name of ['worker-a', 'worker-b']) {
      const response = await server.request('POST', '/api/agent/workers', {
        token: agent,
        body: { name, hostname: 'test-host', executors: ['local'], capacity: 1 },
      });
      expect(response.status, response.text).toBeLessThan(300);
    }
    orchestrator = await startOrchestrator(server.context);
  });
  afterAll(async () => {
    await orchestrator.stop();
    await server.close();
  });

  async function claim(worker: string, waitSeconds = 0): Promise<ClaimedTask[]> {
    const response = await server.request('POST', `/api/agent/workers/${worker}/claim`, {
      token: agent,
      body: { max: 1, wait_seconds: waitSeconds },
    });
    expect(response.status, response.text).toBe(200);
    return response.body.tasks;
  }

  function finish(worker: string, task: ClaimedTask) {
    return server.request('POST', `/api/agent/tasks/${task.task_id}/finish`, {
      token: agent,
      body: {
        worker_id: worker,
        attempt: task.attempt,
        status: 'success',
        exit_code: 0,
        duration_ms: 10,
      },
    });
  }

  it('requeues a ci task and fences the worker that lost it', async () => {
    const ci = await trigger(server, 'ci', '9a9a9a9a9a');
    const [first] = await claim('worker-a');
    expect(first).toMatchObject({ attempt: 1 });

    // worker-b is already waiting in a long poll: the requeue must wake it.
    const [second] = await claim('worker-b', 15);
    expect(second).toMatchObject({ task_id: first!.task_id, attempt: 2 });
    const leaseExpiredAt = Date.parse(
      (await auditRows(server, 'task_lease_expired', ci.job_id))[0]!.created_at,
    );
    const claimedAt = Date.parse(
      (await auditRows(server, 'task_claimed', ci.job_id)).at(-1)!.created_at,
    );
    expect(claimedAt - leaseExpiredAt).toBeLessThan(1000);

    const stale = await server.request('POST', `/api/agent/tasks/${first!.task_id}/heartbeat`, {
      token: agent,
      body: { worker_id: 'worker-a', attempt: 1 },
    });
    expect(stale.status).toBe(409);
    expect(stale.body.code).toBe('lease_lost');
    const staleFinish = await finish('worker-a', first!);
    expect(staleFinish.status).toBe(409);
    expect((await getJob(server, ci.job_id)).status).toBe('running');
    // The late result changes nothing, and the audit trail still shows what the worker saw.
    const late = await auditRows(server, 'task_report_rejected', ci.job_id);
    expect(late).toHaveLength(1);
    expect(late[0]!.task_id).toBe(first!.task_id);
    expect(late[0]!.details).toMatchObject({
      worker_id: 'worker-a',
      attempt: 1,
      reported_status: 'success',
      exit_code: 0,
      task_status: 'running',
      task_attempt: 2,
    });

    const done = await finish('worker-b', second!);
    expect(done.status, done.text).toBe(200);
    const job = await getJob(server, ci.job_id);
    expect(job.status).toBe('success');
    expect(job.tasks[0]?.attempt).toBe(2);
    expect(job.tasks[0]?.worker_id).toBe('worker-b');

    const expired = await auditRows(server, 'task_lease_expired', ci.job_id);
    expect(expired.map((row) => [row.details.worker_id, row.details.outcome])).toEqual([
      ['worker-a', 'requeued'],
    ]);
    const all = await server.context.store.db
      .selectFrom('audit_log')
      .select(['action', 'actor', 'details'])
      .where('job_id', '=', ci.job_id)
      .orderBy('id')
      .execute();
    const attempts = all
      .map((row) => JSON.parse(row.details) as { attempt?: number; worker_id?: string })
      .filter((details) => details.worker_id !== undefined && details.attempt !== undefined)
      .map((details) => `${details.worker_id}:${details.attempt}`);
    expect(attempts).toContain('worker-a:1');
    expect(attempts).toContain('worker-b:2');
  });

  it('ends a rollback task error and does not hand it out again', async () => {
    const rollback = await trigger(server, 'rollback', '8b8b8b8b8b');
    const [task] = await claim('worker-a');
    expect(task).toMatchObject({ attempt: 1 });
    const ended = await waitFor(
      async () => {
        const job = await getJob(server, rollback.job_id);
        return job.status === 'error' ? job : undefined;
      },
      10_000,
      'the rollback to end error',
    );
    expect(ended.reason).toContain('rollback has side effects, so it is not re-run automatically');
    expect(await claim('worker-b')).toEqual([]);
    const rows = await auditRows(server, 'task_lease_expired', rollback.job_id);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.details.outcome).toBe('error');
  });
});
