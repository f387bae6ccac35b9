#!/usr/bin/env bash
# Installs the apt packages crates/bench needs to build: libbpf-sys compiles
# its vendored libbpf, which needs libelf, zlib, pkg-config and make.
#   scripts/bench-deps.sh [EXTRA_PACKAGE...]
# Extra packages are installed too (scripts/bench.sh adds valgrind). Only the
# missing ones are installed; nothing happens when all are there.
set -euo pipefail
missing=()
for p in libelf-dev zlib1g-dev pkg-config make "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "bench-deps.sh: missing ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "bench-deps.sh: installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
