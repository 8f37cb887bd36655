#!/usr/bin/env bash
# Builds a local stand-in for the Dockerfile's base image, node:20-bookworm-slim, on a machine
# that reaches Debian's package mirror but no container registry.
#
# The stand-in follows the layout of the official image. It is a Debian bookworm minbase root
# file system (debootstrap) with this host's Node.js binary in /usr/local/bin and npm and
# corepack in /usr/local/lib/node_modules. Node's C++ headers are in /usr/local/include/node,
# where node-gyp finds them to build better-sqlite3, and a `node` user has uid and gid 1000. It carries the label
# org.slipway.base-image-stand-in=true so it can be told apart from the real image.
#
# Usage: scripts/build-base-image.sh [--force] [IMAGE]
#   IMAGE    tag to build, default node:20-bookworm-slim; its major version must match the host's
#            Node.js, because the host's binary is what goes in
#   --force  rebuild even when IMAGE exists (by default an existing image is left alone)
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian).
# Needs root (debootstrap, chroot), debootstrap, and a Docker engine. Takes about a minute.
set -euo pipefail

force=false
image=node:20-bookworm-slim
for argument in "$@"; do
  case "$argument" in
    --force) force=true ;;
    -h | --help)
      sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    -*)
      echo "unknown option: $argument (expected --force or an image tag)" >&2
      exit 2
      ;;
    *) image=$argument ;;
  esac
done
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if ! $force && docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image exists (use --force to rebuild it)"
  exit 0
fi

for tool in debootstrap chroot node docker; do
  if ! command -v "$tool" >/dev/null; then
    echo "$tool is not installed; install it first (debootstrap: apt-get install debootstrap)" >&2
    exit 1
  fi
done
if [[ $(id -u) != 0 ]]; then
  echo "debootstrap needs root; run this script as root" >&2
  exit 1
fi

node_binary=$(readlink -f "$(command -v node)")
node_version=$("$node_binary" --version)
node_version=${node_version#v}
wanted_major=$(sed -E 's/^[^:]*:([0-9]+).*/\1/' <<<"$image")
if [[ "$wanted_major" =~ ^[0-9]+$ && "${node_version%%.*}" != "$wanted_major" ]]; then
  echo "the host has Node.js $node_version but $image needs major version $wanted_major" >&2
  exit 1
fi
node_prefix=$(dirname "$(dirname "$node_binary")")
node_modules=$node_prefix/lib/node_modules
if [[ ! -d "$node_modules/npm" ]]; then
  echo "npm was not found in $node_modules" >&2
  exit 1
fi
if [[ ! -f "$node_prefix/include/node/node.h" ]]; then
  echo "Node.js headers were not found in $node_prefix/include/node" >&2
  exit 1
fi

root=$(mktemp -d /var/tmp/slipway-base-image.XXXXXX)
trap 'rm -rf "$root"' EXIT

echo "debootstrap bookworm from $mirror into $root"
if ! debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1; then
  tail -n 30 "$root.log" >&2
  rm -f "$root.log"
  exit 1
fi
rm -f "$root.log"

# The official image lists bookworm, its updates and its security fixes.
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

install -D -m 0755 "$node_binary" "$root/usr/local/bin/node"
mkdir -p "$root/usr/local/lib/node_modules" "$root/usr/local/include"
cp -a "$node_modules/npm" "$root/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
if [[ -d "$node_modules/corepack" ]]; then
  cp -a "$node_modules/corepack" "$root/usr/local/lib/node_modules/corepack"
  ln -s ../lib/node_modules/corepack/dist/corepack.js "$root/usr/local/bin/corepack"
fi
cp -a "$node_prefix/include/node" "$root/usr/local/include/node"

chroot "$root" groupadd --gid 1000 node
chroot "$root" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
# A clean environment, so that the host's NODE_OPTIONS or NODE_EXTRA_CA_CERTS stay out.
chroot "$root" env -i PATH=/usr/local/bin:/usr/bin:/bin node --version >/dev/null
chroot "$root" env -i PATH=/usr/local/bin:/usr/bin:/bin npm --version >/dev/null

chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log "$root"/tmp/*

tar --numeric-owner -C "$root" -c . | docker import \
  --change "ENV NODE_VERSION=$node_version" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'LABEL org.slipway.base-image-stand-in=true' \
  --change 'CMD ["node"]' \
  - "$image" >/dev/null
echo "$image built (Node.js $node_version)"
