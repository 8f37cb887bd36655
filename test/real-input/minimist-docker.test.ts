import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type Docker from 'dockerode';
import { LABEL_INSTANCE, instanceId } from '../../src/jobs/labels.js';
import { requireDocker } from '../support/docker.js';
import { startHarness, writePipelineFile, type ExecutionHarness } from '../support/execution.js';
import {
  makeMinimistRepository,
  MINIMIST_STEPS,
  type MinimistRepository,
} from '../support/minimist.js';

const NODE_IMAGE = 'node:20-bookworm-slim';
const BUILD_BASE_IMAGE = fileURLToPath(
  new URL('../../scripts/build-base-image.sh', import.meta.url),
);
const CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

describe('minimist test suite, docker executor', () => {
  let docker: Docker;
  let repo: MinimistRepository;
  let harness: ExecutionHarness;

  beforeAll(async () => {
    docker = await requireDocker();
    try {
      await docker.getImage(NODE_IMAGE).inspect();
    } catch {
      execFileSync('bash', [BUILD_BASE_IMAGE, NODE_IMAGE], { stdio: 'inherit' });
    }
    // npm in the container trusts the same CA as the host; the copy lives in the checkout,
    // where installing packages does not rewrite it.
    repo = makeMinimistRepository({ '.slipway/ca.crt': fs.readFileSync(CA_BUNDLE, 'utf8') });
    const pipelines = writePipelineFile(`
repository: ${repo.dir}
pipelines:
  ci:
    executor: docker
    image: ${NODE_IMAGE}
    network: host
    timeout: 5m
    env:
      NODE_EXTRA_CA_CERTS: /workspace/.slipway/ca.crt
      npm_config_cafile: /workspace/.slipway/ca.crt
      npm_config_cache: /workspace/.slipway/npm-cache
${MINIMIST_STEPS}`);
    harness = await startHarness({
      SLIPWAY_PIPELINES: pipelines,
      SLIPWAY_EXECUTOR: 'docker',
      SLIPWAY_WORKER_CAPACITY: '2',
    });
  });

  afterAll(async () => {
    await harness?.close();
    if (docker !== undefined && harness !== undefined) {
      const instance = instanceId(harness.server.context.store);
      const left = await docker.listContainers({
        all: true,
        filters: { label: [`${LABEL_INSTANCE}=${instance}`] },
      });
      for (const info of left) await docker.getContainer(info.Id).remove({ force: true });
    }
  });

  it('passes on the published commit and fails on the broken one', async () => {
    const good = await harness.trigger('ci', { commit: repo.good, branch: 'main' });
    const broken = await harness.trigger('ci', { commit: repo.broken, branch: 'main' });

    const passed = await harness.waitForJob(good, 170_000);
    expect(passed.status).toBe('success');
    expect(passed.tasks[0].executor).toBe('docker');
    const passedLogs = await harness.logs(good);
    expect(passedLogs).toContain(`image ${NODE_IMAGE}`);
    expect(passedLogs).toMatch(/# tests \d+/);
    expect(passedLogs).toContain('# ok');

    const failed = await harness.waitForJob(broken, 170_000);
    expect(failed.status).toBe('failure');
    const failedLogs = await harness.logs(broken);
    expect(failedLogs).toContain('not ok');
    expect(failedLogs).toMatch(/# fail {2}1/);
  }, 180_000);
});
