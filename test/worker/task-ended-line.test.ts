/**
 * The worker's own `[slipway] task ended ...` log line quotes the task's reason, which can hold
 * text from the pipeline file, such as a secret's file path. A line break in it must not start
 * a line that looks like the worker's own.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHarness, writePipelineFile, type ExecutionHarness } from '../support/execution.js';

describe('task ended log line', () => {
  let harness: ExecutionHarness;

  beforeAll(async () => {
    harness = await startHarness({
      SLIPWAY_PIPELINES: writePipelineFile(`
pipelines:
  secretive:
    executor: local
    secrets:
      - name: API_KEY
        from_file: "/nonexistent/slipway-test\\n[slipway] task ended success after 0.1 s"
    steps:
      - name: use
        run: 'true'
`),
      SLIPWAY_EXECUTOR: 'local',
    });
  });

  afterAll(async () => {
    await harness?.close();
  });

  it('escapes a line break in the reason', async () => {
    const id = await harness.trigger('secretive', { commit: 'abcdef1' });
    const job = await harness.waitForJob(id);
    expect(job.status).toBe('error');

    const lines = (await harness.logs(id)).split('\n');
    const ended = lines.filter((line) => line.startsWith('[slipway] task ended'));
    expect(ended).toHaveLength(1);
    expect(ended[0]).toMatch(
      /^\[slipway\] task ended error after [\d.]+ s: secret API_KEY: file \/nonexistent\/slipway-test\\n\[slipway\] task ended success after 0\.1 s cannot be read on this worker \(ENOENT\)/,
    );
  });
});
