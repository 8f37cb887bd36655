#!/usr/bin/env bash
# Builds the images the tests run containers from, locally, since no registry is reachable:
#   slipway-test-busybox:latest  a busybox root file system (sh, sleep, wget, ...)
# Safe to run again: an image that exists is left alone unless --force is given.
set -euo pipefail

force=false
[[ "${1:-}" == "--force" ]] && force=true

image=slipway-test-busybox:latest
if ! $force && docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image exists"
  exit 0
fi

busybox=$(command -v busybox || true)
if [[ -z "$busybox" ]] || ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
  busybox=/bin/busybox
fi
if [[ ! -x "$busybox" ]]; then
  echo "busybox-static is not installed (apt-get install busybox-static)" >&2
  exit 1
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/workspace"
cp "$busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [[ "$applet" == busybox ]] || ln -sf busybox "$root/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >> "$root/etc/passwd"
chmod 1777 "$root/tmp"
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' - "$image" >/dev/null
echo "$image built"
