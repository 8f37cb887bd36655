/**
 * The built-in deploy, rollback and recovery steps run `docker compose` in the task's
 * checkout. Compose also searches parent folders for a compose file, so the steps must stop
 * when the checkout has none. A stand-in `docker` on PATH records whether it was called.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadPipelineFile } from '../../src/pipeline/load.js';
import { makeTempDir } from '../support/server.js';

const DEFAULT_FILE = fileURLToPath(new URL('../../slipway.default.yml', import.meta.url));

function runStep(script: string, withComposeFile: boolean) {
  const root = makeTempDir('slipway-compose-');
  // A compose file above the checkout, as Slipway's own is above ./data.
  fs.writeFileSync(path.join(root, 'docker-compose.yml'), 'services: {}\n');
  const checkout = path.join(root, 'data', 'workspaces', 'task');
  fs.mkdirSync(checkout, { recursive: true });
  if (withComposeFile) fs.writeFileSync(path.join(checkout, 'compose.yaml'), 'services: {}\n');
  const bin = path.join(root, 'bin');
  fs.mkdirSync(bin);
  const calls = path.join(root, 'docker-calls');
  fs.writeFileSync(path.join(bin, 'docker'), `#!/bin/sh\necho "$@" >> ${calls}\n`, {
    mode: 0o755,
  });
  const result = spawnSync('/bin/sh', ['-c', script], {
    cwd: checkout,
    env: { PATH: `${bin}:/usr/bin:/bin`, SLIPWAY_COMMIT: 'c0ffee1' },
    encoding: 'utf8',
  });
  const called = fs.existsSync(calls) ? fs.readFileSync(calls, 'utf8').trim() : null;
  return { status: result.status, stderr: result.stderr, called };
}

describe('built-in compose steps', () => {
  const pipelines = loadPipelineFile(DEFAULT_FILE).pipelines;

  it.each([
    ['deploy', 'compose up -d --build'],
    ['rollback', 'compose up -d --build'],
    ['recovery', 'compose restart'],
  ])('%s needs a compose file in the checkout', (type, command) => {
    const script = pipelines[type]!.steps[0]!.run;

    const without = runStep(script, false);
    expect(without.status).toBe(1);
    expect(without.stderr).toContain('no compose file in the checkout of c0ffee1');
    expect(without.called).toBeNull();

    const withFile = runStep(script, true);
    expect(withFile.status).toBe(0);
    expect(withFile.called).toBe(command);
  });
});
