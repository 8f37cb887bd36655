/**
 * How long the concurrency group of a side-effects task waits after the task's lease expired
 * (see fenceUntil in leases.ts), and how a removed container ends the wait.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  endFencesOfRemovedContainers,
  recoverExpiredLeases,
} from '../../src/orchestrator/leases.js';
import { makeTempDir, startTestServer, type TestServer } from '../support/server.js';
import { auditRows, trigger } from './helpers.js';

const audit = { actor: 'orchestrator' };
const TIMEOUT_MS = 60_000;

describe('fence after a lost deploy lease', () => {
  let server: TestServer;

  beforeAll(async () => {
    const dir = makeTempDir();
    const pipelines = path.join(dir, 'slipway.yml');
    fs.writeFileSync(
      pipelines,
      `pipelines:
  deploy:
    executor: local
    timeout: 1m
    concurrency: { group: deploy, cancel_in_progress: false }
    steps: [{ run: 'true' }]
`,
    );
    server = await startTestServer({ SLIPWAY_DATA_DIR: dir, SLIPWAY_PIPELINES: pipelines });
  });
  afterAll(async () => {
    await server.close();
  });

  /**
   * Triggers a deploy and writes what a claim by `worker` writes, with a lease that has
   * expired and the task started `startedAgoMs` ago. Registers the worker with `status`.
   */
  async function lostDeploy(
    commit: string,
    worker: string,
    status: 'online' | 'offline',
    startedAgoMs: number,
  ): Promise<string> {
    const { job_id: jobId } = await trigger(server, 'deploy', commit);
    const now = new Date().toISOString();
    await server.context.store.write(async (trx) => {
      await trx
        .insertInto('workers')
        .values({
          id: worker,
          name: worker,
          hostname: 'test-host',
          executors: '["local"]',
          labels: '[]',
          capacity: 1,
          version: null,
          status,
          registered_at: now,
          last_heartbeat_at: now,
          session: null,
          token_id: null,
        })
        .execute();
      await trx
        .updateTable('tasks')
        .set({
          status: 'running',
          attempt: 1,
          worker_id: worker,
          lease_expires_at: new Date(Date.now() - 1_000).toISOString(),
          started_at: new Date(Date.now() - startedAgoMs).toISOString(),
          updated_at: now,
        })
        .where('job_id', '=', jobId)
        .execute();
      await trx
        .updateTable('jobs')
        .set({ status: 'running', started_at: now })
        .where('id', '=', jobId)
        .execute();
    });
    return jobId;
  }

  const taskOf = (jobId: string) =>
    server.context.store.db
      .selectFrom('tasks')
      .selectAll()
      .where('job_id', '=', jobId)
      .executeTakeFirstOrThrow();

  it('holds the group until the step timeout', async () => {
    const jobId = await lostDeploy('aa00000001', 'fence-live', 'online', 1_000);
    const startedAt = Date.parse((await taskOf(jobId)).started_at!);
    const [recovered] = await recoverExpiredLeases(server.context, audit);
    expect(recovered!.outcome).toBe('error');
    // The step's timeout comes first here: 1 minute, plus a lease, the kill's grace and a margin.
    const until = Date.parse(recovered!.fencedUntil!);
    const leaseMs = server.context.config.worker.leaseSeconds * 1000;
    expect(until - startedAt).toBeGreaterThanOrEqual(TIMEOUT_MS + leaseMs);
    expect(until - startedAt).toBeLessThan(TIMEOUT_MS + leaseMs + 10_000);
    const task = await taskOf(jobId);
    expect(task.status).toBe('error');
    expect(task.lease_expires_at).toBe(recovered!.fencedUntil);
    const rows = await auditRows(server, 'task_lease_expired', jobId);
    expect(rows[0]!.details.group_waits_until).toBe(recovered!.fencedUntil);
  });

  it('ends a fence when the container goes', async () => {
    const jobId = await lostDeploy('aa00000002', 'fence-docker', 'online', 1_000);
    await recoverExpiredLeases(server.context, audit);
    const { id: taskId } = await taskOf(jobId);
    // A container of another attempt does not show that this attempt's step stopped.
    await endFencesOfRemovedContainers(server.context, audit, [{ taskId, attempt: 2 }]);
    expect((await taskOf(jobId)).lease_expires_at).not.toBeNull();
    await endFencesOfRemovedContainers(server.context, audit, [{ taskId, attempt: 1 }]);
    expect((await taskOf(jobId)).lease_expires_at).toBeNull();
    const rows = await auditRows(server, 'task_step_stopped', jobId);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.details.reported).toBe('container removed by the orchestrator');
  });

  it('gives an offline worker no fence', async () => {
    const jobId = await lostDeploy('aa00000003', 'fence-offline', 'offline', 1_000);
    const [recovered] = await recoverExpiredLeases(server.context, audit);
    expect(recovered!.fencedUntil).toBeNull();
    expect((await taskOf(jobId)).lease_expires_at).toBeNull();
  });

  it('uses the default timeout without one stored', async () => {
    // A job stored before timeouts were kept in its pipeline snapshot ran with the default 1 h.
    const jobId = await lostDeploy('aa00000005', 'fence-old-row', 'online', 59 * 60_000);
    const snapshot = JSON.parse(
      (
        await server.context.store.db
          .selectFrom('jobs')
          .select('pipeline')
          .where('id', '=', jobId)
          .executeTakeFirstOrThrow()
      ).pipeline,
    ) as Record<string, unknown>;
    delete snapshot.timeoutMs;
    await server.context.store.write((trx) =>
      trx
        .updateTable('jobs')
        .set({ pipeline: JSON.stringify(snapshot) })
        .where('id', '=', jobId)
        .execute(),
    );
    const startedAt = Date.parse((await taskOf(jobId)).started_at!);
    const [recovered] = await recoverExpiredLeases(server.context, audit);
    // The timeout bound, about 1 minute and a lease from now, comes before the silence bound.
    const until = Date.parse(recovered!.fencedUntil!);
    const leaseMs = server.context.config.worker.leaseSeconds * 1000;
    expect(until - startedAt).toBeGreaterThanOrEqual(3_600_000 + leaseMs);
    expect(until - startedAt).toBeLessThan(3_600_000 + leaseMs + 10_000);
  });

  it('gives no fence after the timeout', async () => {
    const jobId = await lostDeploy('aa00000004', 'fence-late', 'online', 2 * TIMEOUT_MS);
    const [recovered] = await recoverExpiredLeases(server.context, audit);
    expect(recovered!.fencedUntil).toBeNull();
    expect((await taskOf(jobId)).lease_expires_at).toBeNull();
    expect((await taskOf(jobId)).reason).not.toContain('waits until');
  });
});
