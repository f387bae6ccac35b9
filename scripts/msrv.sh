#!/usr/bin/env bash
# Checks that the library builds with the Rust version it declares:
# `rust-version` in the workspace Cargo.toml (installed with rustup if
# missing). The library alone, with and without its features: the CLI, the
# tests and the benchmark may use newer Rust.
set -euo pipefail
cd "$(dirname "$0")/.."
msrv=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml)
if [[ -z "$msrv" ]]; then
    echo "msrv: no rust-version in Cargo.toml" >&2
    exit 1
fi
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$msrv" --profile minimal
fi
# Its own target dir: another compiler would otherwise churn the main one.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/msrv"
start=$(date +%s)
cargo "+$msrv" check -p bpf-ringbuf --lib
cargo "+$msrv" check -p bpf-ringbuf --lib --all-features
echo "msrv: the library builds with Rust $msrv ($(( $(date +%s) - start )) s)"
