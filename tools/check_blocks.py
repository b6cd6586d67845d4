#!/usr/bin/env python3
"""Checks that a tutorial shows what a program really prints.

    check_blocks.py EXE PROGRAM FILE.md

Every ```text block that follows a line `<!-- output of: PROGRAM ARGS -->`
in FILE.md must be a run of consecutive lines of what `EXE ARGS` prints
(spaces may differ, numbers equal to 1e-9; tools/tutorial_blocks.py). The
program runs in a scratch directory, so files it writes (a CSV) land there.
Reports TAP. Only the standard library.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tutorial_blocks import check_blocks, tap_report  # noqa: E402


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    exe, program, tutorial = (os.path.abspath(sys.argv[1]), sys.argv[2],
                              os.path.abspath(sys.argv[3]))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        check_blocks(exe, tutorial, program, lambda ok, name, detail="": results.append(
            (bool(ok), name, detail)))
    return tap_report(results, "")


if __name__ == "__main__":
    sys.exit(main())
