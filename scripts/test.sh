#!/usr/bin/env bash
# Every test: unit tests of the ring logic, property tests over the fake ring,
# compile-fail proofs, and the privileged tests against the real kernel.
# As root they all run; set BPF_RINGBUF_REQUIRE_PRIVILEGED=1 to make a
# privileged test fail instead of skipping (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --all-features
