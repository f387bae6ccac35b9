#!/usr/bin/env bash
# The demo: a kernel producer (a hand-assembled BPF program) feeds a ring
# buffer; our reader reads it zero-copy with one commit per batch, verifies
# every sequence number and prints records/s. Needs root (CAP_BPF).
# Extra arguments go to `bpf-ringbuf demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --quiet --release -p bpf-ringbuf-cli -- demo "$@"
