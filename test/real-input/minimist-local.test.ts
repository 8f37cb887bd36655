import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHarness, writePipelineFile, type ExecutionHarness } from '../support/execution.js';
import {
  makeMinimistRepository,
  MINIMIST_STEPS,
  type MinimistRepository,
} from '../support/minimist.js';

describe('minimist test suite, local executor', () => {
  let repo: MinimistRepository;
  let harness: ExecutionHarness;

  beforeAll(async () => {
    repo = makeMinimistRepository();
    const pipelines = writePipelineFile(`
repository: ${repo.dir}
pipelines:
  ci:
    executor: local
    timeout: 5m
${MINIMIST_STEPS}`);
    harness = await startHarness({
      SLIPWAY_PIPELINES: pipelines,
      SLIPWAY_EXECUTOR: 'local',
      SLIPWAY_WORKER_CAPACITY: '2',
    });
  });

  afterAll(async () => {
    await harness?.close();
  });

  it('passes on the published commit and fails on the broken one', async () => {
    // Exactly what a workflow's curl step sends.
    const good = await harness.trigger('ci', {
      commit: repo.good,
      branch: 'main',
      github_run_id: '1001',
    });
    const broken = await harness.trigger('ci', {
      commit: repo.broken,
      branch: 'main',
      github_run_id: '1002',
    });

    const passed = await harness.waitForJob(good, 170_000);
    expect(passed.status).toBe('success');
    const passedLogs = await harness.logs(good);
    expect(passedLogs).toMatch(/# tests \d+/);
    expect(passedLogs).toMatch(/# pass {2}\d+/);
    expect(passedLogs).toContain('# ok');

    const failed = await harness.waitForJob(broken, 170_000);
    expect(failed.status).toBe('failure');
    expect(failed.reason).toContain('step "test" exited with code 1');
    const failedLogs = await harness.logs(broken);
    expect(failedLogs).toContain('not ok');
    expect(failedLogs).toContain('whitespace should be whitespace');
    expect(failedLogs).toMatch(/# fail {2}1/);
  }, 180_000);
});
