#!/usr/bin/env bash
# Cross-checks the Windows backend (eBPF for Windows) from Linux: clippy with
# warnings denied and a build of the library's tests for
# x86_64-pc-windows-gnu, so every Windows line is type-checked and linked.
# Nothing runs on Windows here.
#
# Installs what it needs, once: the Rust target (rustup) and the MinGW-w64
# cross toolchain from the distribution (`gcc-mingw-w64-x86-64`, which brings
# the linker and dlltool). Quiet when both are there.
#
# Features: the default set, and `zerocopy` (platform-independent). `testing`
# and `tokio` are Linux-only: the crate refuses to build with them on Windows.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-pc-windows-gnu

if ! rustup target list --installed | grep -qx "$target"; then
    echo "windows-check.sh: rustup target add $target" >&2
    rustup target add "$target" >/dev/null
fi
if ! command -v x86_64-w64-mingw32-gcc >/dev/null || ! command -v x86_64-w64-mingw32-dlltool >/dev/null; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "windows-check.sh: MinGW-w64 is missing; run as root or: sudo apt-get install gcc-mingw-w64-x86-64" >&2
        exit 1
    fi
    echo "windows-check.sh: installing gcc-mingw-w64-x86-64" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-mingw-w64-x86-64 >/dev/null
fi

start=$(date +%s)
cargo clippy -p bpf-ringbuf --target "$target" --all-targets -- -D warnings
cargo clippy -p bpf-ringbuf --target "$target" --all-targets --features zerocopy -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc -p bpf-ringbuf --no-deps --target "$target" --features zerocopy
cargo build -p bpf-ringbuf --tests --target "$target"
cargo build -p bpf-ringbuf --tests --target "$target" --features zerocopy
echo "windows-check: clippy, rustdoc and the test build for $target passed ($(( $(date +%s) - start )) s; nothing was run)"
