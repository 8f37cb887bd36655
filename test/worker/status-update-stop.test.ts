/**
 * A status update that ends a job whose step a worker runs. The task ends at once, and the
 * worker stops the step at its next heartbeat. Until it reports the step stopped, the next job
 * of the concurrency group must not start, or two deploys would run side by side.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHarness, writePipelineFile, type ExecutionHarness } from '../support/execution.js';
import { makeTempDir } from '../support/server.js';

describe('a status update that ends a running step', () => {
  let harness: ExecutionHarness;
  const pidFile = path.join(makeTempDir('slipway-stop-'), 'first.pid');

  beforeAll(async () => {
    // The first job's step sleeps under the shell's pid. The second checks that it is gone.
    const pipelines = writePipelineFile(`
pipelines:
  deploy:
    executor: local
    concurrency: { group: deploy, cancel_in_progress: false }
    steps:
      - name: deploy
        run: |
          if [ "$SLIPWAY_PARAM_ROLE" = first ]; then echo $$ > ${pidFile}; exec sleep 300; fi
          if kill -0 "$(cat ${pidFile})" 2>/dev/null; then echo "first step still runs"; exit 1; fi
          echo "first step gone"
`);
    harness = await startHarness({ SLIPWAY_PIPELINES: pipelines, SLIPWAY_EXECUTOR: 'local' });
  });
  afterAll(async () => {
    await harness?.close();
  });

  const patch = (id: string, body: Record<string, unknown>) =>
    harness.server.request('PATCH', `/api/job/${id}/status`, { token: harness.token, body });

  it('holds the group until the step stopped', { timeout: 60_000 }, async () => {
    const first = await harness.trigger('deploy', { commit: 'abc1234', params: { role: 'first' } });
    await harness.waitForStatus(first, 'running');
    const second = await harness.trigger('deploy', {
      commit: 'abc1235',
      params: { role: 'second' },
    });

    const requeued = await patch(first, { status: 'queued' });
    expect(requeued.status, requeued.text).toBe(409);
    expect(requeued.body.code).toBe('invalid_transition');
    expect(requeued.body.error).toContain('Cancel the job and retry it instead');

    const ended = await patch(first, { status: 'failure', exit_code: 1 });
    expect(ended.status, ended.text).toBe(200);
    expect(ended.body.status).toBe('failure');

    const done = await harness.waitForJob(second, 30_000);
    const logs = await harness.logs(second);
    expect(logs).toContain('first step gone');
    expect(logs).not.toContain('first step still runs');
    expect(done.status).toBe('success');

    const firstJob = (
      await harness.server.request('GET', `/api/job/${first}`, {
        token: harness.token,
      })
    ).body;
    expect(firstJob.status).toBe('failure');
    expect(firstJob.tasks[0].status).toBe('failure');
    const stopped = await harness.server.context.store.db
      .selectFrom('audit_log')
      .select(['task_id', 'details'])
      .where('action', '=', 'task_step_stopped')
      .where('job_id', '=', first)
      .execute();
    expect(stopped.map((row) => row.task_id)).toEqual([firstJob.tasks[0].id]);
    expect(JSON.parse(stopped[0]!.details!).status).toBe('failure');
    expect(await harness.logs(first)).toContain(
      '[slipway] a status update ended the task failure; the step was stopped after',
    );
  });
});
