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

/**
 * Prefix of the images that tests build for themselves, such as `slipway-test-no-shell`.
 * SLIPWAY_TEST_IMAGE_PREFIX changes it, so runs that share an engine keep apart.
 */
export const TEST_IMAGE_PREFIX = process.env.SLIPWAY_TEST_IMAGE_PREFIX ?? 'slipway-test';

/**
 * Builds an image from the host's static busybox with `docker import`, as
 * scripts/build-test-images.sh does, with busybox at `binDir` and the applets linked next to
 * it. With `binDir` other than /bin, the image has no /bin/sh. `user` sets the image's USER.
 */
export function buildBusyboxImage(tag: string, options: { binDir: string; user?: string }): void {
  const { binDir, user } = options;
  const script = `
set -euo pipefail
busybox=$(command -v busybox || true)
if [[ -z "$busybox" ]] || ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
  busybox=/bin/busybox
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root${binDir}" "$root/tmp" "$root/workspace"
cp "$busybox" "$root${binDir}/busybox"
for applet in $("$root${binDir}/busybox" --list); do
  [[ "$applet" == busybox ]] || ln -sf busybox "$root${binDir}/$applet"
done
chmod 1777 "$root/tmp"
tar -C "$root" -c . | docker import --change 'ENV PATH=${binDir}' ${
    user === undefined ? '' : `--change 'USER ${user}'`
  } - '${tag}' >/dev/null
`;
  execFileSync('bash', ['-c', script], { stdio: ['ignore', 'inherit', 'inherit'] });
}
