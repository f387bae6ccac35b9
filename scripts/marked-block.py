#!/usr/bin/env python3
"""Reads or rewrites a generated block of a Markdown file: the lines between
`<!-- NAME:begin -->` and `<!-- NAME:end -->` (the marker lines stay).

    scripts/marked-block.py show FILE NAME      prints the block
    scripts/marked-block.py write FILE NAME     replaces it with standard input

Used by scripts/sync-readme.sh (README.md's quick example), and with
--write-docs by scripts/stress.sh and scripts/fuzz.sh (docs/RELIABILITY.md).
"""
import os
import sys


def split(path, name):
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    with open(path) as f:
        lines = f.read().splitlines(keepends=True)
    starts = [i for i, l in enumerate(lines) if l.strip() == begin]
    ends = [i for i, l in enumerate(lines) if l.strip() == end]
    if len(starts) != 1 or len(ends) != 1 or starts[0] > ends[0]:
        sys.exit(f"{path}: expected one {begin} line followed by one {end} line")
    b, e = starts[0], ends[0]
    return lines[: b + 1], "".join(lines[b + 1 : e]), lines[e:]


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("show", "write"):
        sys.exit(__doc__)
    cmd, path, name = sys.argv[1:]
    head, block, tail = split(path, name)
    if cmd == "show":
        sys.stdout.write(block)
        return
    new = sys.stdin.read()
    if new and not new.endswith("\n"):
        new += "\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(head) + new + "".join(tail))
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
