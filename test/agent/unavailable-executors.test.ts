/**
 * A worker that leaves an executor out of its claims, as it does with docker while its engine
 * does not respond. The API records it, so that the reason of a queued job that needs the
 * executor names the worker, and the health check `workers` shows it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runHealthChecks } from '../../src/health/runner.js';
import { writePipelineFile } from '../support/execution.js';
import { startTestServer, type TestServer } from '../support/server.js';

const SESSION = 'unavailable-session-1';

describe('executors left out of claims', () => {
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
  lint:
    executor: local
    steps: [{ name: lint, run: 'true' }]
health_checks:
  - name: workers
    type: workers
    stale_after: 60s
    min_online: 1
`),
      SLIPWAY_LEASE_SECONDS: '30',
    });
    agent = await server.token('agent', 'unavailable-test');
    await register();
  });

  afterAll(async () => {
    await server?.close();
  });

  async function register(): Promise<void> {
    const registered = await post('/api/agent/workers', {
      name: 'worker-u',
      session: SESSION,
      hostname: 'host-u',
      executors: ['docker', 'local'],
      capacity: 4,
    });
    expect(registered.status, registered.text).toBe(200);
  }

  const claim = async (body: Record<string, unknown>) => {
    const reply = await post('/api/agent/workers/worker-u/claim', {
      wait_seconds: 0,
      session: SESSION,
      max: 1,
      ...body,
    });
    expect(reply.status, reply.text).toBe(200);
    return reply.body.tasks as Array<{ job: { id: string } }>;
  };
  const changes = () =>
    server.context.store.db
      .selectFrom('audit_log')
      .select('details')
      .where('action', '=', 'worker_executors_changed')
      .orderBy('id')
      .execute()
      .then((rows) => rows.map((row) => JSON.parse(row.details!).unavailable_executors));
  const stored = async () =>
    (
      await server.context.store.db
        .selectFrom('workers')
        .select('unavailable_executors')
        .where('id', '=', 'worker-u')
        .executeTakeFirstOrThrow()
    ).unavailable_executors;
  const jobOf = async (id: string) =>
    (await server.request('GET', `/api/job/${id}`, { token: server.adminToken })).body;
  const workersCheck = async () =>
    (await runHealthChecks(server.context, { force: true, names: ['workers'] }))[0]!;

  it('explains a queued job without a claiming worker', async () => {
    expect(await claim({ executors: ['local'] })).toEqual([]);
    const triggered = await server.request('POST', '/api/trigger/build', {
      token: server.adminToken,
      body: { commit: 'c1c1c1c1c1' },
    });
    expect(triggered.status, triggered.text).toBe(201);
    const id = triggered.body.job_id as string;

    const job = await jobOf(id);
    expect(job.status).toBe('queued');
    expect(job.reason).toBe(
      'every worker with the docker executor left it out of its claims because it cannot run ' +
        'it now (worker-u); check the Docker engine on its host (docker info) and the worker log',
    );
    expect(await stored()).toBe('["docker"]');
    const check = await workersCheck();
    expect(check.status).toBe('degraded');
    expect(check.reason).toBe(
      '1 worker(s) cannot run some of their executors now: worker-u (docker)',
    );

    // The same claim again changes nothing and writes no second audit row.
    expect(await claim({ executors: ['local'] })).toEqual([]);
    expect(await changes()).toEqual([['docker']]);

    // Once the worker claims docker tasks again, it takes the job.
    const claimed = await claim({ executors: ['docker', 'local'] });
    expect(claimed.map((task) => task.job.id)).toEqual([id]);
    expect(await stored()).toBeNull();
    expect(await changes()).toEqual([['docker'], []]);
    expect((await workersCheck()).status).toBe('healthy');
  });

  it('forgets left-out executors at registration', async () => {
    expect(await claim({ executors: ['local'] })).toEqual([]);
    expect(await stored()).toBe('["docker"]');
    await register();
    expect(await stored()).toBeNull();
    // A claim that names no executors takes every registered one.
    expect(await claim({ executors: ['local'] })).toEqual([]);
    expect(await claim({})).toEqual([]);
    expect(await stored()).toBeNull();
  });
});
