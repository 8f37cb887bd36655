/**
 * A claim response that the worker never received, while the worker leaves an executor out of
 * its claims (docker while its engine does not respond). The next claim must not return the
 * lost task when its executor is left out, because the worker would run it on that engine.
 * The task goes back to the queue instead, using up no attempt.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../support/server.js';
import { writePipelineFile } from '../support/execution.js';

const SESSION = 'redeliver-session-1';

describe('redelivery of a lost claim', () => {
  let server: TestServer;
  let agent: string;
  const post = (path: string, body: unknown) =>
    server.request('POST', path, { token: agent, body });

  beforeAll(async () => {
    server = await startTestServer({
      SLIPWAY_PIPELINES: writePipelineFile(`
pipelines:
  build:
    executor: docker
    image: busybox:latest
    steps: [{ name: build, run: 'true' }]
  deploy:
    executor: docker
    image: busybox:latest
    side_effects: true
    steps: [{ name: roll-out, run: 'true' }]
  lint:
    executor: local
    steps: [{ name: lint, run: 'true' }]
`),
      SLIPWAY_LEASE_SECONDS: '30',
    });
    agent = await server.token('agent', 'redeliver-test');
    const registered = await post('/api/agent/workers', {
      name: 'worker-r',
      session: SESSION,
      hostname: 'host-r',
      executors: ['docker', 'local'],
      capacity: 4,
    });
    expect(registered.status, registered.text).toBe(200);
  });

  afterAll(async () => {
    await server?.close();
  });

  const trigger = async (type: string, commit: string) => {
    const answer = await server.request('POST', `/api/trigger/${type}`, {
      token: server.adminToken,
      body: { commit },
    });
    expect(answer.status, answer.text).toBe(201);
    return answer.body.job_id as string;
  };
  const taskOf = (jobId: string) =>
    server.context.store.db
      .selectFrom('tasks')
      .selectAll()
      .where('job_id', '=', jobId)
      .executeTakeFirstOrThrow();
  const claim = (body: Record<string, unknown>) =>
    post('/api/agent/workers/worker-r/claim', { wait_seconds: 0, session: SESSION, ...body });

  it('queues lost tasks of a left-out executor again', async () => {
    const build = await trigger('build', 'a1a1a1a1a1');
    const deploy = await trigger('deploy', 'a2a2a2a2a2');
    // This response is lost: the worker never starts the tasks.
    const lost = await claim({ max: 2 });
    expect(lost.status, lost.text).toBe(200);
    expect(lost.body.tasks).toHaveLength(2);

    const lint = await trigger('lint', 'a3a3a3a3a3');
    const next = await claim({ max: 4, holding: [], executors: ['local'] });
    expect(next.status, next.text).toBe(200);
    expect(next.body.tasks.map((task: { job: { id: string } }) => task.job.id)).toEqual([lint]);

    for (const id of [build, deploy]) {
      const task = await taskOf(id);
      expect(task.status).toBe('queued');
      expect(task.worker_id).toBeNull();
      expect(task.lease_expires_at).toBeNull();
      // The worker never started it, so it uses up no attempt.
      expect(task.attempt - task.hand_backs).toBe(0);
    }
    const released = await server.context.store.db
      .selectFrom('audit_log')
      .select(['job_id', 'details'])
      .where('action', '=', 'task_released')
      .where('job_id', 'in', [build, deploy])
      .execute();
    expect(released).toHaveLength(2);
    expect(JSON.parse(released[0]!.details!)).toMatchObject({
      worker_id: 'worker-r',
      status: 'queued',
      reason:
        'the worker did not receive the claim response and takes no docker tasks now; queued again',
    });

    // Once the worker takes docker tasks again, it gets them as new attempts.
    const again = await claim({ max: 4, holding: [next.body.tasks[0].task_id] });
    expect(again.status, again.text).toBe(200);
    expect(
      again.body.tasks.map((task: { job: { id: string }; attempt: number }) => [
        task.job.id,
        task.attempt,
      ]),
    ).toEqual([
      [build, 2],
      [deploy, 2],
    ]);
  });

  it('still returns lost tasks of a listed executor', async () => {
    const lint = await trigger('lint', 'b1b1b1b1b1');
    const lost = await claim({ max: 1 });
    expect(lost.body.tasks).toHaveLength(1);
    const running = await server.context.store.db
      .selectFrom('tasks')
      .select('id')
      .where('status', '=', 'running')
      .where('id', '!=', lost.body.tasks[0].task_id)
      .execute();
    const next = await claim({
      max: 1,
      holding: running.map((task) => task.id),
      executors: ['local'],
    });
    expect(next.body.tasks.map((task: { job: { id: string } }) => task.job.id)).toEqual([lint]);
    expect(next.body.tasks[0].attempt).toBe(lost.body.tasks[0].attempt);
  });
});
