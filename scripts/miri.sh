#!/usr/bin/env bash
# The ring protocol's unit tests (plain-memory rings: src/ring/tests.rs and
# friends, the spectator's copy-and-validate in src/ring/spectate_tests.rs
# included) under Miri, with strict provenance. Installs nightly Miri if
# missing. memfd/mmap/epoll do not run under Miri, so the fake-ring and
# kernel tests are not part of this.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup +nightly component list --installed 2>/dev/null | grep -q '^miri'; then
    rustup toolchain install nightly --profile minimal
    rustup +nightly component add miri rust-src
fi
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/miri"
start=$(date +%s)
cargo +nightly miri setup
cargo +nightly miri test -p bpf-ringbuf --lib -- ring::
# The threaded producer/consumer test, with the data-race detector but without
# weak-memory emulation (nightly Miri ICEs there on ring bytes reused from an
# atomic header to plain payload; see ring/spsc_tests.rs).
MIRIFLAGS="$MIRIFLAGS -Zmiri-disable-weak-memory-emulation" \
    cargo +nightly miri test -p bpf-ringbuf --lib -- ring::spsc --include-ignored
echo "miri: passed in $(( $(date +%s) - start )) s"
