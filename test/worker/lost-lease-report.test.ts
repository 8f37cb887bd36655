/**
 * A worker that finds, through a rejected heartbeat, that its task's lease expired stops the
 * step. Its result no longer counts, but the audit log must still show that the late step ran
 * on and when the worker stopped it: a person checking what a lost attempt did has nothing
 * else to go on.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  expireLease,
  processesWith,
  startHarness,
  writePipelineFile,
  type ExecutionHarness,
} from '../support/execution.js';

describe('a step stopped after its lease was lost', () => {
  let harness: ExecutionHarness;
  // A duration of its own, to find the step's process by its command line.
  const marker = `sleep 29.${String(process.pid % 1000).padStart(3, '0')}1`;

  beforeAll(async () => {
    const pipelines = writePipelineFile(`
pipelines:
  long:
    executor: local
    steps:
      - name: work
        run: ${marker}
`);
    harness = await startHarness({
      SLIPWAY_PIPELINES: pipelines,
      SLIPWAY_EXECUTOR: 'local',
      SLIPWAY_MAX_TASK_ATTEMPTS: '1',
    });
  });
  afterAll(async () => {
    await harness?.close();
  });

  it('is recorded in the audit log as a rejected report', { timeout: 60_000 }, async () => {
    const id = await harness.trigger('long', { commit: 'abc1234' });
    const running = await harness.waitForStatus(id, 'running');
    const taskId = running.tasks[0].id as string;
    const { context } = harness.server;
    const deadline = Date.now() + 10_000;
    while (processesWith(marker).length === 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(processesWith(marker)).not.toEqual([]);

    // What the orchestrator does once the lease has run out while the worker was cut off.
    const recovered = await expireLease(context, taskId);
    expect(recovered).toHaveLength(1);
    const job = await harness.waitForJob(id, 5_000);
    expect(job.status).toBe('error');

    // The next heartbeat (every 2 s with a 6 s lease) is rejected and the worker stops the step.
    let rows: Array<{ details: string | null }> = [];
    while (rows.length === 0 && Date.now() < deadline + 10_000) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      rows = await context.store.db
        .selectFrom('audit_log')
        .select('details')
        .where('action', '=', 'task_report_rejected')
        .where('task_id', '=', taskId)
        .execute();
    }
    expect(rows).toHaveLength(1);
    const details = JSON.parse(rows[0]!.details!) as Record<string, unknown>;
    expect(details).toMatchObject({
      worker_id: running.tasks[0].worker_id,
      attempt: 1,
      reported_status: 'error',
      task_status: 'error',
    });
    expect(details.reason).toMatch(/rejected the lease, so worker .* stopped the steps/);
    expect(processesWith(marker)).toEqual([]);

    // The rejected report changed nothing.
    const after = (await harness.server.request('GET', `/api/job/${id}`, { token: harness.token }))
      .body;
    expect(after.status).toBe('error');
    expect(after.tasks[0].reason).toBe(job.tasks[0].reason);
  });
});
