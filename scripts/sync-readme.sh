#!/usr/bin/env bash
# README.md's quick example is the full text of
# crates/bpf-ringbuf/examples/quickstart.rs (which CI compiles), between the
# markers <!-- quickstart:begin --> and <!-- quickstart:end -->.
#   scripts/sync-readme.sh           rewrites that block from the file
#   scripts/sync-readme.sh --check   fails if the block differs from the file (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
src=crates/bpf-ringbuf/examples/quickstart.rs
want="$(printf '```rust\n'; cat "$src"; printf '```\n')"
case "${1:-}" in
--check)
    have="$(scripts/marked-block.py show README.md quickstart)"
    if [[ "$have" != "$want" ]]; then
        echo "sync-readme: README.md's quick example differs from $src:" >&2
        diff -u --label "README.md (quickstart block)" --label "$src" \
            <(printf '%s\n' "$have") <(printf '%s\n' "$want") >&2 || true
        echo "sync-readme: run scripts/sync-readme.sh to copy the file into README.md" >&2
        exit 1
    fi
    echo "sync-readme: README.md shows $src as it is"
    ;;
"")
    printf '%s\n' "$want" | scripts/marked-block.py write README.md quickstart
    echo "sync-readme: copied $src into README.md"
    ;;
*)
    echo "usage: scripts/sync-readme.sh [--check]" >&2
    exit 2
    ;;
esac
