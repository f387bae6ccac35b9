#!/usr/bin/env bash
# Fuzzes the ring parser for a bounded time:  scripts/fuzz.sh [SECONDS]  (default 60)
# Target fuzz/fuzz_targets/ring.rs: arbitrary bytes as ring memory and
# positions, read through the public Reader over a FakeRing in every mode.
# Installs cargo-fuzz (crates.io) and nightly if missing. Reports the number of
# executions; fails if libFuzzer found a crash (saved under fuzz/artifacts/).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
mkdir -p fuzz/corpus/ring
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cd fuzz
set +e
cargo +nightly fuzz run ring --release -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>&1 | tee "$log" | grep -v '^#[0-9]*.*\(NEW\|REDUCE\|pulse\)'
status=${PIPESTATUS[0]}
set -e
runs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1)
execs=$(grep '^stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -1)
echo
if [ "$status" -ne 0 ]; then
    echo "fuzz: FAILED (status $status): a crash, hang or leak; see fuzz/artifacts/ring/" >&2
    exit "$status"
fi
echo "fuzz: ${execs:-?} executions (${runs:-?}s), no crash"
cd ..
doc=docs/RELIABILITY.md
if [ -f "$doc" ] && grep -q '<!-- fuzz:begin -->' "$doc"; then
    {
        sed '/<!-- fuzz:begin -->/q' "$doc"
        echo
        echo "Command: \`scripts/fuzz.sh $secs\` on $(uname -r), $(date -u +%Y-%m-%d): ${execs:-?} executions (${runs:-?}s), no crash."
        echo
        sed -n '/<!-- fuzz:end -->/,$p' "$doc"
    } > "$doc.tmp" && mv "$doc.tmp" "$doc"
    echo "(written to $doc)"
fi
