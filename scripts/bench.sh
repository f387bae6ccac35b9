#!/usr/bin/env bash
# Side-by-side benchmark of bpf-ringbuf against libbpf C, libbpf-rs and aya
# (issue 3). Installs what libbpf-sys needs to build, builds crates/bench in
# release, runs every scenario and regenerates BENCHMARKS.md from the output.
#
#   scripts/bench.sh            # full run, rewrites BENCHMARKS.md
#   scripts/bench.sh --quick    # smoke run (fewer rounds, 4 MiB only), prints to stdout
#   scripts/bench.sh --scenario policies   # one scenario (drain, stream, cost,
#                               # policies, rings, tokio, spectator, callgrind), prints to stdout
#   scripts/bench.sh --scenario rings,tokio  # several, comma-separated
#
# Needs root (or CAP_BPF + CAP_PERFMON): it creates ring buffer maps and runs
# BPF programs with BPF_PROG_TEST_RUN. Takes about three to four minutes on 2 cores,
# plus a first build of under a minute (vendored libbpf included).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "bench.sh: needs root (creates BPF maps and programs)" >&2
    exit 1
fi

# What libbpf-sys needs to build its vendored libbpf (scripts/bench-deps.sh),
# and valgrind, which counts instructions per record (callgrind) for the report.
scripts/bench-deps.sh valgrind

manifest=crates/bench/Cargo.toml
start=$(date +%s)
cargo build --release --manifest-path "$manifest"
built=$(date +%s)
echo "bench.sh: build took $((built - start)) s" >&2

bin=crates/bench/target/release/ringbuf-bench
rustc_v=$(rustc --version)
if [[ $# -gt 0 ]]; then
    # --quick, --scenario NAME[,NAME], --policy-rounds N ...: print to stdout,
    # never rewrite BENCHMARKS.md with part of the run.
    exec "$bin" --rustc "$rustc_v" --command "scripts/bench.sh $*" "$@"
fi
"$bin" --rustc "$rustc_v" --command "scripts/bench.sh" \
    --template crates/bench/BENCHMARKS.in.md --out BENCHMARKS.md "$@"
echo "bench.sh: total $(( $(date +%s) - start )) s (build $((built - start)) s)" >&2
