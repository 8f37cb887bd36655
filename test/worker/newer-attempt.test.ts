/**
 * A worker that was paused or cut off for longer than its lease still runs the task, while the
 * orchestrator has queued it again and the worker's next claim returns the newer attempt. The
 * worker must stop the old attempt and run the new one, instead of ignoring the claim and
 * waiting for the API to deliver it a second time.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  expireLease,
  startHarness,
  writePipelineFile,
  type ExecutionHarness,
} from '../support/execution.js';

describe('a claim of a newer attempt of a running task', () => {
  let harness: ExecutionHarness;

  beforeAll(async () => {
    const pipelines = writePipelineFile(`
pipelines:
  long:
    executor: local
    steps:
      - name: work
        run: sleep 3 && echo work-finished
`);
    harness = await startHarness({ SLIPWAY_PIPELINES: pipelines, SLIPWAY_EXECUTOR: 'local' });
  });
  afterAll(async () => {
    await harness?.close();
  });

  it('stops the old attempt and runs the new one', { timeout: 60_000 }, async () => {
    const id = await harness.trigger('long', { commit: 'abc1234' });
    const running = await harness.waitForStatus(id, 'running');
    const taskId = running.tasks[0].id as string;
    const { context } = harness.server;

    // What the orchestrator does once the lease has run out while the worker was paused.
    const recovered = await expireLease(context, taskId);
    expect(recovered).toHaveLength(1);

    // Without the stop, the API delivers the task again only after the worker's next claim.
    const job = await harness.waitForJob(id, 15_000);
    expect(job.status).toBe('success');
    expect(job.tasks[0].attempt).toBe(2);
    const logs = await harness.logs(id);
    expect(logs).toContain(`(task ${taskId}, attempt 2)`);
    expect(logs).toContain('work-finished');
    const redelivered = await context.store.db
      .selectFrom('audit_log')
      .select('id')
      .where('action', '=', 'task_redelivered')
      .where('job_id', '=', id)
      .execute();
    expect(redelivered).toEqual([]);
    // The stopped first attempt reports its stop, and the API records the rejected report.
    const rejected = await context.store.db
      .selectFrom('audit_log')
      .select('details')
      .where('action', '=', 'task_report_rejected')
      .where('task_id', '=', taskId)
      .execute();
    expect(rejected).toHaveLength(1);
    expect(JSON.parse(rejected[0]!.details)).toMatchObject({ attempt: 1, task_attempt: 2 });
  });
});
