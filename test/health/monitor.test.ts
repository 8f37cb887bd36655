import net from 'node:net';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningRole } from '../../src/app/roles.js';
import { startHealthMonitor } from '../../src/health/monitor.js';
import { runHealthChecks } from '../../src/health/runner.js';
import { makeTempDir, type TestServer } from '../support/server.js';
import { auditRows, startHealthServer } from './helpers.js';
import { TailscaleStandIn } from './tailscale-stand-in.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Returns a port on 127.0.0.1 that nothing listens on, by binding it and closing it. */
async function closedPort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

describe('health monitor role', () => {
  const dir = makeTempDir('slipway-monitor-');
  const standIn = new TailscaleStandIn(path.join(dir, 'tailscaled.sock'));
  const tcp = net.createServer((socket) => socket.end());
  let server: TestServer;
  let monitor: RunningRole | undefined;

  beforeAll(async () => {
    standIn.mode = 'hang';
    await standIn.listen();
    await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
    const port = (tcp.address() as AddressInfo).port;
    const down = await closedPort();
    server = await startHealthServer(
      `
  - name: quick
    type: tcp
    port: ${port}
    interval: 300ms
    timeout: 1s
  - name: stuck
    type: tailscale
    interval: 300ms
    timeout: 20s
  - name: service
    type: http
    url: http://127.0.0.1:${down}/
    interval: 1h
    timeout: 1s
    heal:
      action: trigger_job
      job_type: deploy
      commit_from_state: LAST_DEPLOYED_COMMIT
      branch: main
  - name: service-again
    type: tcp
    port: ${down}
    interval: 1h
    timeout: 1s
    heal:
      action: recovery_procedure
      procedure: redeploy
      commit: abcdef0123
recovery:
  redeploy:
    action: run_pipeline
    pipeline: deploy
`,
      { TAILSCALE_SOCKET: standIn.socketPath },
    );
    await server.context.store.write(async (trx) => {
      await trx
        .insertInto('state_variables')
        .values({
          name: 'LAST_DEPLOYED_COMMIT',
          value: '1234567abc',
          updated_at: new Date().toISOString(),
          synced_at: null,
          synced_value: null,
        })
        .execute();
    });
  });
  afterAll(async () => {
    await monitor?.stop();
    await server.close();
    await standIn.close();
    await new Promise((resolve) => tcp.close(resolve));
  });

  const metricCount = async (component: string) => {
    const rows = await server.context.store.db
      .selectFrom('health_metrics')
      .select('id')
      .where('component', '=', component)
      .execute();
    return rows.length;
  };

  it('keeps running quick checks while one hangs', async () => {
    monitor = await startHealthMonitor(server.context);
    await sleep(2500);
    // `quick` is due every 300 ms; `stuck` hangs until its 20 s timeout.
    expect(await metricCount('quick')).toBeGreaterThanOrEqual(4);
    expect(await metricCount('stuck')).toBe(0);
  });

  it('skips a check another holder is running', async () => {
    const outcomes = await runHealthChecks(server.context, { force: true, names: ['stuck'] });
    expect(outcomes).toEqual([]);
  });

  it('triggers a job when a check fails', async () => {
    const succeeded = await auditRows(server, 'health_action_succeeded');
    const triggered = succeeded.find((row) => row.details.component === 'service');
    expect(triggered?.details).toMatchObject({ action: 'trigger_job', target: 'deploy' });
    const job = await server.request('GET', `/api/job/${triggered!.job_id}`, {
      token: server.adminToken,
    });
    expect(job.status).toBe(200);
    expect(job.body).toMatchObject({ type: 'deploy', commit: '1234567abc', branch: 'main' });
    const audit = await auditRows(server, 'job_triggered');
    const jobAudit = audit.find((row) => row.job_id === triggered!.job_id);
    expect(jobAudit?.actor).toBe('health-monitor');
    expect(jobAudit?.details.health_check).toBe('service');
  });

  it('holds the action while its job is active', async () => {
    const succeeded = await auditRows(server, 'health_action_succeeded');
    const jobId = succeeded.find((row) => row.details.component === 'service')!.job_id!;
    for (let run = 0; run < 3; run += 1) {
      await runHealthChecks(server.context, { force: true, names: ['service'] });
    }
    const suppressed = (await auditRows(server, 'health_action_suppressed')).filter(
      (row) => row.details.component === 'service',
    );
    expect(suppressed).toHaveLength(1);
    expect(suppressed[0]!.details).toMatchObject({ job_id: jobId, next_allowed_at: null });
    expect(suppressed[0]!.job_id).toBe(jobId);
    expect(suppressed[0]!.details.reason).toContain(`the last action's job ${jobId} is queued`);

    // Once the job has ended, the cooldown counts from its end.
    const cancel = await server.request('POST', `/api/job/${jobId}/cancel`, {
      token: server.adminToken,
    });
    expect(cancel.status).toBe(202);
    await runHealthChecks(server.context, { force: true, names: ['service'] });
    const after = (await auditRows(server, 'health_action_suppressed')).filter(
      (row) => row.details.component === 'service',
    );
    expect(after).toHaveLength(2);
    expect(after.at(-1)!.details.reason).toContain(`ended at ${cancel.body.finished_at}`);
    expect(after.at(-1)!.details.job_id).toBeNull();
  });

  it('runs a recovery procedure when a check fails', async () => {
    const succeeded = await auditRows(server, 'health_action_succeeded');
    const recovered = succeeded.find((row) => row.details.component === 'service-again');
    expect(recovered?.details).toMatchObject({
      action: 'recovery_procedure',
      target: 'redeploy',
      procedure: 'redeploy',
    });
    const jobs = recovered!.details.jobs as Array<{ job_id: string; type: string }>;
    expect(jobs).toHaveLength(1);
    expect(jobs[0]!.type).toBe('deploy');
    // The row names the procedure's one job, so a search of the audit log by job finds it.
    expect(recovered!.job_id).toBe(jobs[0]!.job_id);
    const executed = await auditRows(server, 'recovery_executed');
    expect(executed.length).toBeGreaterThanOrEqual(1);
  });

  it('stops without waiting for the hanging check', async () => {
    const started = performance.now();
    await monitor!.stop();
    monitor = undefined;
    expect(performance.now() - started).toBeLessThan(1500);
    const stuck = await server.context.store.db
      .selectFrom('health_components')
      .selectAll()
      .where('name', '=', 'stuck')
      .executeTakeFirstOrThrow();
    // The aborted run recorded nothing and gave its lease back.
    expect(stuck.lease_holder).toBeNull();
    expect(stuck.status).toBeNull();
    expect(await metricCount('stuck')).toBe(0);
  });
});

describe('health monitor stop', () => {
  it('waits for a tick that is reading schedules', async () => {
    const tcp = net.createServer((socket) => socket.end());
    await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
    const server = await startHealthServer(`
  - name: port
    type: tcp
    port: ${(tcp.address() as AddressInfo).port}
    interval: 1h
    timeout: 1s
`);
    let release: () => void = () => undefined;
    try {
      // An open write transaction keeps the store's connection, so the monitor's first tick
      // waits in its read of the check schedules while stop() is called.
      const gate = new Promise<void>((resolve) => (release = resolve));
      let holdingStarted = false;
      const holding = server.context.store.write(() => {
        holdingStarted = true;
        return gate;
      });
      while (!holdingStarted) await sleep(5);
      const monitor = await startHealthMonitor(server.context);
      let stopped = false;
      const stopping = monitor.stop().then(() => (stopped = true));
      await sleep(200);
      expect(stopped).toBe(false);

      release();
      await holding;
      await stopping;
      // The tick saw the stop after its read, so no check started behind the stop's back.
      await sleep(200);
      const rows = await server.context.store.db
        .selectFrom('health_metrics')
        .select('id')
        .where('component', '=', 'port')
        .execute();
      expect(rows).toEqual([]);
    } finally {
      release();
      await server.close();
      await new Promise((resolve) => tcp.close(resolve));
    }
  });
});
