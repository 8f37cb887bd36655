import path from 'node:path';
import Docker from 'dockerode';
import { describe, expect, it } from 'vitest';
import { DockerExecutor } from '../../src/execution/docker.js';
import type { ExecutionSpec } from '../../src/execution/executor.js';
import { isImageReference } from '../../src/execution/image-reference.js';
import { makeTempDir } from '../support/server.js';

describe('image references', () => {
  it.each([
    'busybox',
    'python:3.11-slim',
    'node:20-bookworm',
    'slipway-test-busybox:latest',
    'library/python:3.12',
    'localhost:5000/team/app:v1.2',
    'registry.example.com:443/a/b_c/d__e/f---g:tag_1.0-rc',
    `ghcr.io/org/app@sha256:${'a'.repeat(64)}`,
    `app:1.0@sha256:${'b'.repeat(64)}`,
  ])('accepts %s', (image) => {
    expect(isImageReference(image)).toBe(true);
  });

  it.each([
    '',
    'python:../../x-slim',
    '../x',
    'a/../b',
    'a..b',
    'Python:3',
    'a//b',
    'a:b:c',
    'python:',
    'python:3.11 ',
    'python:3.11?x',
    'python:3.11#x',
    'python:3.11/../x',
    `python:${'x'.repeat(129)}`,
    'app@sha256:abc',
  ])('rejects %j', (image) => {
    expect(isImageReference(image)).toBe(false);
  });

  it('stops the docker executor before the engine', async () => {
    // No engine listens on this socket, so a request to it would fail with another message.
    const socketPath = path.join(makeTempDir('slipway-image-'), 'no-engine.sock');
    const executor = new DockerExecutor(new Docker({ socketPath }));
    const spec = { taskId: 't', jobId: 'j', attempt: 1, steps: [], image: 'python:../../x-slim' };
    await expect(
      executor.run(
        spec as unknown as ExecutionSpec,
        { write: () => {} } as never,
        new AbortController().signal,
      ),
    ).rejects.toThrow(/image "python:..\/..\/x-slim" is not a valid Docker image reference/);
  });
});
