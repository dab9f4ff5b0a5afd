#!/usr/bin/env bash
# Test-machine set-up for the MAP tests, never product code: podman and runc from Debian's packages,
# this sandbox's containers.conf (runc, cgroupfs, no ulimits above the current ones), and a Debian
# base image made with debootstrap (python3 with venv, numpy, nibabel). Without root or apt it does nothing:
# the tests that need podman then skip.
set -euo pipefail
BASE_IMAGE=localhost/monaideployer-test-base:bookworm
SDK_IMAGE=localhost/monaideployer-test-sdk:cpu

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
  debootstrap --variant=minbase --include=python3,python3-venv,python3-numpy,python3-nibabel bookworm "$rootfs" >/dev/null
  tar -C "$rootfs" -c . | podman import --quiet - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
fi
# A MAP base: the Debian root file system plus a venv with the CPU torch wheel of this machine, MONAI, the
# MONAI Deploy App SDK and the CUDA runtime library Holoscan loads even on the CPU. pip inside the build
# needs the host's CA bundle (this sandbox intercepts TLS).
if ! podman image exists "$SDK_IMAGE"; then
  context=$(mktemp -d)
  python3 -m pip download -q --no-deps -d "$context" torch==2.13.0
  wheel=$(basename "$context"/torch-*.whl)
  cat > "$context/Containerfile" <<CONTAINERFILE
FROM $BASE_IMAGE
COPY $wheel /tmp/
RUN python3 -m venv /opt/venv && PIP_CERT=/host-certs/ca-certificates.crt /opt/venv/bin/pip install -q \
    --no-cache-dir /tmp/$wheel monai==1.6.1 monai-deploy-app-sdk==4.0.0 pydicom==3.0.2 highdicom==0.28.2 \
    nibabel "nvidia-cuda-runtime==13.*" && rm /tmp/$wheel \
    && find /opt/venv -name "libcudart.so.13*" -printf "%h\n" | head -1 > /etc/ld.so.conf.d/cuda-runtime.conf \
    && ldconfig
CONTAINERFILE
  podman build -q -v /etc/ssl/certs:/host-certs:ro -t "$SDK_IMAGE" "$context" >/dev/null
  rm -rf "$context"
fi
echo "setup_containers: podman $(podman --version | awk '{print $3}'), images $BASE_IMAGE, $SDK_IMAGE"
