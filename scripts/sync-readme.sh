#!/usr/bin/env bash
# README.md's examples are the full text of files in crates/bpf-ringbuf/examples/
# (which CI compiles), each between the markers <!-- NAME:begin --> and
# <!-- NAME:end -->: quickstart.rs (the quick example), ring_set.rs (many rings),
# tokio_reader.rs (async) and spectator.rs (spectators, flight recorders).
#   scripts/sync-readme.sh           rewrites those blocks from the files
#   scripts/sync-readme.sh --check   fails if a block differs from its file (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
blocks=(quickstart ring_set tokio_reader spectator)
want() {
    printf '```rust\n'
    cat "crates/bpf-ringbuf/examples/$1.rs"
    printf '```\n'
}
case "${1:-}" in
--check)
    status=0
    for name in "${blocks[@]}"; do
        src=crates/bpf-ringbuf/examples/$name.rs
        have="$(scripts/marked-block.py show README.md "$name")"
        if [[ "$have" != "$(want "$name")" ]]; then
            echo "sync-readme: README.md's $name block differs from $src:" >&2
            diff -u --label "README.md ($name block)" --label "$src" \
                <(printf '%s\n' "$have") <(printf '%s\n' "$(want "$name")") >&2 || true
            status=1
        else
            echo "sync-readme: README.md shows $src as it is"
        fi
    done
    if [[ $status != 0 ]]; then
        echo "sync-readme: run scripts/sync-readme.sh to copy the files into README.md" >&2
    fi
    exit $status
    ;;
"")
    for name in "${blocks[@]}"; do
        want "$name" | scripts/marked-block.py write README.md "$name"
        echo "sync-readme: copied crates/bpf-ringbuf/examples/$name.rs into README.md"
    done
    ;;
*)
    echo "usage: scripts/sync-readme.sh [--check]" >&2
    exit 2
    ;;
esac
