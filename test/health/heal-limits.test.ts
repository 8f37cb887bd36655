import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { runHealthChecks } from '../../src/health/runner.js';
import type { TestServer } from '../support/server.js';
import { auditRows, startHealthServer } from './helpers.js';

const MINUTE_MS = 60_000;

/** Returns a port on 127.0.0.1 that nothing listens on, by binding it and closing it. */
async function closedPort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

// The test server runs no worker, so a job that a heal action triggers stays queued.
describe('heal limits past one hour', () => {
  let server: TestServer;

  beforeAll(async () => {
    const down = await closedPort();
    server = await startHealthServer(`
  - name: waiting
    type: tcp
    port: ${down}
    interval: 1h
    timeout: 1s
    heal: { action: trigger_job, job_type: deploy, commit: abcdef0123, cooldown: 1m }
  - name: slow
    type: tcp
    port: ${down}
    interval: 1h
    timeout: 1s
    heal: { action: trigger_job, job_type: deploy, commit: 0123abcdef, cooldown: 2h }
`);
  });
  afterEach(() => {
    vi.useRealTimers();
  });
  afterAll(async () => {
    await server.close();
  });

  const deployJobs = async (commit: string) =>
    server.context.store.db
      .selectFrom('jobs')
      .select(['id', 'status'])
      .where('type', '=', 'deploy')
      .where('commit_sha', '=', commit)
      .execute();

  const runAt = async (name: string, time: number) => {
    vi.setSystemTime(time);
    await runHealthChecks(server.context, { force: true, names: [name] });
  };

  it('holds an action whose job is queued an hour later', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const start = Date.now();
    await runAt('waiting', start);
    const jobs = await deployJobs('abcdef0123');
    expect(jobs).toHaveLength(1);
    expect(jobs[0]!.status).toBe('queued');

    await runAt('waiting', start + 61 * MINUTE_MS);
    expect(await deployJobs('abcdef0123')).toHaveLength(1);
    const suppressed = (await auditRows(server, 'health_action_suppressed')).filter(
      (row) => row.details.component === 'waiting',
    );
    expect(suppressed).toHaveLength(1);
    expect(suppressed[0]!.details.job_id).toBe(jobs[0]!.id);
  });

  it('keeps a cooldown longer than an hour', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const start = Date.now();
    await runAt('slow', start);
    const jobs = await deployJobs('0123abcdef');
    expect(jobs).toHaveLength(1);
    const cancel = await server.request('POST', `/api/job/${jobs[0]!.id}/cancel`, {
      token: server.adminToken,
    });
    expect(cancel.status).toBe(202);

    await runAt('slow', start + 61 * MINUTE_MS);
    expect(await deployJobs('0123abcdef')).toHaveLength(1);
    const suppressed = (await auditRows(server, 'health_action_suppressed')).filter(
      (row) => row.details.component === 'slow',
    );
    expect(suppressed).toHaveLength(1);
    expect(suppressed[0]!.details.reason).toContain('the cooldown is 7200s');
  });
});

describe('heal suppression audit rows', () => {
  let server: TestServer;
  let up = false;
  const service = http.createServer((_request, response) => {
    response.writeHead(up ? 200 : 503).end();
  });

  beforeAll(async () => {
    await new Promise<void>((resolve) => service.listen(0, '127.0.0.1', resolve));
    const port = (service.address() as AddressInfo).port;
    server = await startHealthServer(`
  - name: flaky
    type: http
    url: http://127.0.0.1:${port}/
    interval: 1h
    timeout: 1s
    heal: { action: trigger_job, job_type: deploy, commit: abcdef0123, max_per_hour: 1 }
`);
  });
  afterAll(async () => {
    await server.close();
    await new Promise((resolve) => service.close(resolve));
  });

  const run = async (serviceUp: boolean) => {
    up = serviceUp;
    await runHealthChecks(server.context, { force: true, names: ['flaky'] });
  };
  const suppressedRows = async () =>
    (await auditRows(server, 'health_action_suppressed')).filter(
      (row) => row.details.component === 'flaky',
    );

  it('writes one row per outage', async () => {
    await run(false);
    await run(false);
    await run(false);
    expect(await suppressedRows()).toHaveLength(1);

    // The service recovers and fails again while the same hold applies.
    await run(true);
    await run(false);
    await run(false);
    const rows = await suppressedRows();
    expect(rows).toHaveLength(2);
    expect(rows[1]!.details.next_allowed_at).toBe(rows[0]!.details.next_allowed_at);
    expect(rows[1]!.details.failures).toBe(1);
  });
});
