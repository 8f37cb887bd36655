/**
 * Docker for tests. Tests that need an engine call `requireDocker()`, which fails the test
 * when no engine answers: they are never silently skipped. The test image is built by
 * scripts/build-test-images.sh (run by .ci/run), and built here when it is missing.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';

export const TEST_IMAGE = 'slipway-test-busybox:latest';

const BUILD_SCRIPT = fileURLToPath(new URL('../../scripts/build-test-images.sh', import.meta.url));

export async function requireDocker(): Promise<Docker> {
  const docker = new Docker();
  try {
    await docker.ping();
  } catch (error) {
    throw new Error(
      `this test needs a Docker engine and none answered (${(error as Error).message}); ` +
        'start one with: dockerd --iptables=false --bridge=none',
    );
  }
  try {
    await docker.getImage(TEST_IMAGE).inspect();
  } catch {
    execFileSync('bash', [BUILD_SCRIPT], { stdio: 'inherit' });
  }
  return docker;
}
