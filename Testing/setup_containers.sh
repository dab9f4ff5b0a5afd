#!/usr/bin/env bash
# Test-machine set-up for the MAP tests, never product code: podman and runc from Debian's packages,
# this sandbox's containers.conf (runc, cgroupfs, no ulimits above the current ones), and a Debian
# base image made with debootstrap (python3, numpy, nibabel). Without root or apt it does nothing:
# the tests that need podman then skip.
set -euo pipefail
BASE_IMAGE=localhost/monaideployer-test-base:bookworm

if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "setup_containers: no podman and no way to install it; the MAP tests will skip" >&2
    exit 0
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
fi

if [ "$(id -u)" = 0 ] && [ ! -f /etc/containers/containers.conf ]; then
  mkdir -p /etc/containers
  cat > /etc/containers/containers.conf <<'CONF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
fi

if ! podman image exists "$BASE_IMAGE"; then
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,python3-numpy,python3-nibabel bookworm "$rootfs" \
    http://deb.debian.org/debian >/dev/null
  tar -C "$rootfs" -c . | podman import --quiet - "$BASE_IMAGE" >/dev/null
fi
echo "setup_containers: podman $(podman --version | awk '{print $3}'), base image $BASE_IMAGE"
