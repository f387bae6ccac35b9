#!/usr/bin/env bash
# Stress tests on the real kernel (needs root / CAP_BPF):
#   scripts/stress.sh [--write-docs] [SECONDS]   (the load test runs SECONDS, default 60)
# Runs the #[ignore]d tests of crates/bpf-ringbuf/tests/stress.rs in release:
# load (two kernel producers, one per CPU, one reader), edge-triggered
# wakeups (100,000 records), 1,000 close/flush races, reopen mid-batch.
# (The fault tests, tests/faults.rs, run with the ordinary suite.)
# The tests write their figures as JSON lines to $STRESS_FIGURES_OUT; this
# script prints them, and with --write-docs writes them into
# docs/RELIABILITY.md (between the stress markers). Without it no tracked
# file changes, so CI runs it without.
set -euo pipefail
cd "$(dirname "$0")/.."
write_docs=0
if [[ "${1:-}" == "--write-docs" ]]; then
    write_docs=1
    shift
fi
secs="${1:-60}"
scripts/setup.sh >/dev/null 2>&1 || true
export BPF_RINGBUF_REQUIRE_PRIVILEGED=1
export STRESS_SECONDS="$secs"
export STRESS_FIGURES_OUT
STRESS_FIGURES_OUT="$(mktemp)"
trap 'rm -f "$STRESS_FIGURES_OUT"' EXIT
start=$(date +%s)
status=0
cargo test -p bpf-ringbuf --features testing --release --test stress -- \
    --include-ignored --nocapture --test-threads=1 || status=$?
elapsed=$(( $(date +%s) - start ))
if [ "$status" -ne 0 ]; then
    echo "stress: FAILED (status $status)" >&2
    exit "$status"
fi
# One Markdown bullet per figure, sorted by name.
figures="$(python3 - "$STRESS_FIGURES_OUT" <<'PY'
import json, sys
with open(sys.argv[1]) as f:
    figs = [json.loads(line) for line in f if line.strip()]
if not figs:
    sys.exit("stress: the tests reported no figures")
for fig in sorted(figs, key=lambda fig: fig["name"]):
    print(f"- **{fig['name']}**: {fig['text']}")
PY
)"
echo
echo "=== stress figures (scripts/stress.sh $secs, ${elapsed} s total)"
echo "$figures"
if [ "$write_docs" -eq 0 ]; then
    exit 0
fi
doc=docs/RELIABILITY.md
printf '\nCommand: `scripts/stress.sh --write-docs %s` on %s, %s CPUs, %s, %s s in all.\n\n%s\n\n' \
    "$secs" "$(uname -r)" "$(nproc)" "$(date -u +%Y-%m-%d)" "$elapsed" "$figures" |
    scripts/marked-block.py write "$doc" stress
echo "(written to $doc)"
