#!/usr/bin/env bash
# Prepares this machine for the demo and the tests. Idempotent.
# - checks the Rust toolchain (cargo, rustfmt, clippy come with the image);
# - mounts bpffs at /sys/fs/bpf (pinning tests) and tracefs, when root.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi

if [ "$(id -u)" = 0 ]; then
  if ! grep -qs ' /sys/fs/bpf bpf ' /proc/mounts; then
    mkdir -p /sys/fs/bpf
    mount -t bpf bpf /sys/fs/bpf || echo "setup: could not mount bpffs (pin tests mount it themselves)" >&2
  fi
  if [ -d /sys/kernel/tracing ] && ! grep -qs ' /sys/kernel/tracing tracefs ' /proc/mounts; then
    mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
  fi
else
  echo "setup: not root: privileged tests will be SKIPPED (they need CAP_BPF)" >&2
fi
