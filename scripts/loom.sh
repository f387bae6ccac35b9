#!/usr/bin/env bash
# Loom model of the wakeup fence (crates/bpf-ringbuf/tests/loom.rs): with the
# fence no wakeup is lost (one producer, and two committing out of order);
# without it loom finds the lost wakeup (a should_panic test, so deleting the
# fence fails this script). Separate target dir: --cfg bpf_ringbuf_loom rebuilds everything (not
# `--cfg loom`: tokio, a dev-dependency, has a cfg(loom) of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg bpf_ringbuf_loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom"
start=$(date +%s)
cargo test -p bpf-ringbuf --test loom --release -- --test-threads=1
echo "loom: passed in $(( $(date +%s) - start )) s"
