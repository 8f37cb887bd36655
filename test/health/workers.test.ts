import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runHealthChecks } from '../../src/health/runner.js';
import { scheduledTasks } from '../../src/orchestrator/role.js';
import { Scheduler } from '../../src/orchestrator/scheduler.js';
import type { TestServer } from '../support/server.js';
import { startHealthServer } from './helpers.js';

describe('workers check', () => {
  let server: TestServer;
  let agent: string;

  beforeAll(async () => {
    server = await startHealthServer(`
  - name: workers
    type: workers
    stale_after: 2s
    min_online: 1
`);
    agent = await server.token('agent');
  });
  afterAll(async () => {
    await server.close();
  });

  const check = async () =>
    (await runHealthChecks(server.context, { force: true, names: ['workers'] }))[0]!;
  /** Registering again is what a worker's heartbeat does to last_heartbeat_at. */
  const register = async (name: string) => {
    const reply = await server.request('POST', '/api/agent/workers', {
      token: agent,
      body: { name, hostname: 'build-1', executors: ['local'], capacity: 1 },
    });
    expect(reply.status).toBe(200);
  };

  it('runs as the scheduled task health-checks', async () => {
    const scheduler = new Scheduler(server.context, scheduledTasks(server.context));
    const result = await scheduler.runTask('health-checks');
    expect(result).toMatchObject({
      ran: true,
      ok: true,
      summary: { checks: 1, not_due: 0, healthy: 0, unhealthy: 1, actions: 0 },
    });
    // The check ran, so it is not due again within its interval.
    const again = await scheduler.runTask('health-checks');
    expect(again).toMatchObject({ ran: true, summary: { checks: 0, not_due: 1 } });
  });

  /** Milliseconds until the monitor runs the check again. */
  const dueInMs = async () => {
    const row = await server.context.store.db
      .selectFrom('health_components')
      .select('next_due_at')
      .where('name', '=', 'workers')
      .executeTakeFirstOrThrow();
    return Date.parse(row.next_due_at!) - Date.now();
  };

  it('is unhealthy with no worker at all', async () => {
    const outcome = await check();
    expect(outcome.status).toBe('unhealthy');
    expect(outcome.reason).toContain('fewer than min_online of 1');
    // Checked again soon, so a worker that registers just after the first run counts.
    expect(await dueInMs()).toBeLessThanOrEqual(15_000);
  });

  it('is healthy with a fresh heartbeat', async () => {
    await register('worker-a');
    const outcome = await check();
    expect(outcome.status).toBe('healthy');
    expect(await dueInMs()).toBeGreaterThan(60_000);
  });

  it('is unhealthy when the only worker goes quiet', async () => {
    await new Promise((resolve) => setTimeout(resolve, 2200));
    const outcome = await check();
    expect(outcome.status).toBe('unhealthy');
    expect(outcome.reason).toContain('stale: worker-a');
  });

  it('is degraded while another worker is fresh', async () => {
    await register('worker-b');
    const outcome = await check();
    expect(outcome.status).toBe('degraded');
    expect(outcome.reason).toContain('1 worker(s) sent no heartbeat in the last 2s: worker-a');
    const status = await server.request('GET', '/api/health/status', { token: server.adminToken });
    const details = status.body.components.workers.details;
    expect(details).toMatchObject({ registered: 2, online: 1, stale: 1 });
    expect(details.workers.map((worker: { id: string }) => worker.id).sort()).toEqual([
      'worker-a',
      'worker-b',
    ]);
  });

  it('names a stale worker by name and id', async () => {
    const reply = await server.request('POST', '/api/agent/workers', {
      token: agent,
      body: {
        worker_id: 'build-1-4242-ab12',
        name: 'build-1',
        hostname: 'build-1',
        executors: ['local'],
        capacity: 1,
      },
    });
    expect(reply.status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 2200));
    await register('worker-b');
    const outcome = await check();
    expect(outcome.reason).toContain('build-1 (id build-1-4242-ab12, ');
    expect(outcome.reason).toContain('worker-a (');
    const offline = await server.request('POST', '/api/agent/workers/build-1-4242-ab12/status', {
      token: agent,
      body: { status: 'offline' },
    });
    expect(offline.status).toBe(200);
  });

  it('ignores a worker that went offline', async () => {
    const reply = await server.request('POST', '/api/agent/workers/worker-a/status', {
      token: agent,
      body: { status: 'offline' },
    });
    expect(reply.status).toBe(200);
    const outcome = await check();
    expect(outcome.status).toBe('healthy');
  });
});
