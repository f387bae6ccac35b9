#!/usr/bin/env bash
# Stress and fault tests on the real kernel (needs root / CAP_BPF):
#   scripts/stress.sh SECONDS     (the load test runs SECONDS, default 60)
# Runs the #[ignore]d tests of crates/bpf-ringbuf/tests/stress.rs in release:
# load (two kernel producers, one per CPU, one reader), edge-triggered
# wakeups (100,000 records), 1,000 close/flush races, reopen mid-batch; and
# the fault tests (no privileges, closed fd, regular file). Prints the
# figures and writes them into docs/RELIABILITY.md (between the markers).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
scripts/setup.sh >/dev/null 2>&1 || true
export BPF_RINGBUF_REQUIRE_PRIVILEGED=1
export STRESS_SECONDS="$secs"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
start=$(date +%s)
cargo test -p bpf-ringbuf --features testing --release --test stress -- \
    --include-ignored --nocapture --test-threads=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
elapsed=$(( $(date +%s) - start ))
if [ "$status" -ne 0 ]; then
    echo "stress: FAILED (status $status)" >&2
    exit "$status"
fi
figures="$(grep '^test .*FIGURE\|^FIGURE' "$log" | sed 's/^test [^ ]* \.\.\. //' | sed 's/^FIGURE /- **/; s/: /**: /')"
echo
echo "=== stress figures (scripts/stress.sh $secs, ${elapsed} s total)"
echo "$figures"
doc=docs/RELIABILITY.md
if [ -f "$doc" ] && grep -q '<!-- stress:begin -->' "$doc"; then
    {
        sed '/<!-- stress:begin -->/q' "$doc"
        echo
        echo "Command: \`scripts/stress.sh $secs\` on $(uname -r), $(nproc) CPUs, $(date -u +%Y-%m-%d), ${elapsed} s in all."
        echo
        echo "$figures"
        echo
        sed -n '/<!-- stress:end -->/,$p' "$doc"
    } > "$doc.tmp" && mv "$doc.tmp" "$doc"
    echo "(written to $doc)"
fi
