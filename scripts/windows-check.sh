#!/usr/bin/env bash
# Cross-checks the Windows backend (eBPF for Windows) from Linux, for
# x86_64-pc-windows-gnu: clippy with warnings denied, rustdoc, a build of the
# library's tests (every Windows line type-checked and linked) and a check
# with the minimum Rust version of Cargo.toml; then the
# test binaries run under Wine, which has no eBPF for Windows: they check the
# shared ring parser, the Win32 event waits and that a missing ebpfapi.dll is
# `Error::PlatformNotInstalled` (tests/windows.rs, with
# BPF_RINGBUF_EXPECT_NO_EFW=1). Nothing runs against eBPF for Windows here.
#   scripts/windows-check.sh [--no-wine]
#
# Installs what it needs, once: the Rust target (rustup), MinGW-w64
# (`gcc-mingw-w64-x86-64`: the linker and dlltool) and Wine (`wine64`) from
# the distribution. Quiet when they are there. The Wine prefix lives in
# target/wine-prefix.
#
# Features: the default set, and `zerocopy` (platform-independent). `testing`
# and `tokio` are Linux-only: the crate refuses to build with them on Windows.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-pc-windows-gnu
run_wine=1
if [[ "${1:-}" == "--no-wine" ]]; then
    run_wine=0
fi

missing=()
command -v x86_64-w64-mingw32-gcc >/dev/null && command -v x86_64-w64-mingw32-dlltool >/dev/null ||
    missing+=(gcc-mingw-w64-x86-64)
if ((run_wine)) && [[ ! -x /usr/lib/wine/wine64 ]]; then
    missing+=(wine64)
fi
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "windows-check.sh: missing ${missing[*]}; run as root or: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
    echo "windows-check.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! rustup target list --installed | grep -qx "$target"; then
    echo "windows-check.sh: rustup target add $target" >&2
    rustup target add "$target" >/dev/null
fi

start=$(date +%s)
cargo clippy -p bpf-ringbuf --target "$target" --all-targets -- -D warnings
cargo clippy -p bpf-ringbuf --target "$target" --all-targets --features zerocopy -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc -p bpf-ringbuf --no-deps --target "$target" --features zerocopy
cargo build -p bpf-ringbuf --tests --target "$target"
cargo build -p bpf-ringbuf --tests --target "$target" --features zerocopy
# The library with the declared minimum Rust (scripts/msrv.sh does Linux).
msrv=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml)
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$msrv" --profile minimal >/dev/null
fi
if ! rustup target list --installed --toolchain "$msrv" | grep -qx "$target"; then
    rustup target add --toolchain "$msrv" "$target" >/dev/null
fi
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/msrv" cargo "+$msrv" check -p bpf-ringbuf --lib --target "$target" --features zerocopy
if ((run_wine)); then
    export WINEPREFIX="$PWD/target/wine-prefix" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
    if [[ ! -d "$WINEPREFIX/drive_c/windows/system32" ]]; then
        /usr/lib/wine/wine64 wineboot --init >/dev/null 2>&1 || true
    fi
    shim="$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
    if [[ ! -e "$shim" ]]; then
        x86_64-w64-mingw32-gcc -shared -O2 -o "$shim" scripts/wine-bcryptprimitives.c -ladvapi32
    fi
    export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=/usr/lib/wine/wine64
    export BPF_RINGBUF_EXPECT_NO_EFW=1
    cargo test -p bpf-ringbuf --target "$target"
    cargo test -p bpf-ringbuf --target "$target" --features zerocopy
fi
echo "windows-check: clippy, rustdoc, the test build and Rust $msrv for $target passed$( ((run_wine)) && echo ", and the tests under Wine (without eBPF for Windows)") ($(( $(date +%s) - start )) s)"
