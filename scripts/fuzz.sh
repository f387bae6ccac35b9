#!/usr/bin/env bash
# Fuzzes the ring parser for a bounded time:
#   scripts/fuzz.sh [--write-docs] [SECONDS]   (default 60)
# Target fuzz/fuzz_targets/ring.rs: arbitrary bytes as ring memory and
# positions, read through the public Reader over a FakeRing in every mode.
# Installs cargo-fuzz (crates.io) and nightly if missing. Reports the number of
# executions; fails if libFuzzer found a crash (saved under fuzz/artifacts/).
# With --write-docs the figure goes into docs/RELIABILITY.md (between the
# fuzz markers); without it no tracked file changes.
set -euo pipefail
cd "$(dirname "$0")/.."
write_docs=0
if [[ "${1:-}" == "--write-docs" ]]; then
    write_docs=1
    shift
fi
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
if [ "$write_docs" -eq 0 ]; then
    exit 0
fi
doc=docs/RELIABILITY.md
printf '\nCommand: `scripts/fuzz.sh --write-docs %s` on %s, %s: %s executions (%ss), no crash.\n\n' \
    "$secs" "$(uname -r)" "$(date -u +%Y-%m-%d)" "${execs:-?}" "${runs:-?}" |
    scripts/marked-block.py write "$doc" fuzz
echo "(written to $doc)"
