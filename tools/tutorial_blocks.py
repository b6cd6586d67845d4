"""tutorial_blocks.py: what the worked-example checkers share (tools/).

A tutorial shows a program's output in ```text blocks, each after a line
`<!-- output of: PROGRAM ARGS -->`; check_blocks runs PROGRAM with ARGS and
checks that the block is a run of consecutive lines of what it prints
(spaces may differ, numbers equal to TOL). A FILE argument is replaced by
a path in a scratch directory (for --dot FILE). Only the standard library.
"""
import os
import re
import subprocess
import tempfile

TOL = 1e-9
NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def tokens(line):
    """The words of line with each number replaced by its value."""
    out = []
    for w in re.split(r"(" + NUM + r")", line):
        if re.fullmatch(NUM, w):
            out.append(float(w))
        else:
            out += w.split()
    return out


def same_line(shown, printed):
    a, b = tokens(shown), tokens(printed)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, float) != isinstance(y, float):
            return False
        if isinstance(x, float) and abs(x - y) > TOL:
            return False
        if not isinstance(x, float) and x != y:
            return False
    return True


def check_blocks(exe, path, program, check):
    """Checks every block of the tutorial at path marked as program's
    output against what exe prints; reports through check(ok, name,
    detail), and fails when the tutorial shows none."""
    text = open(path, encoding="utf-8").read().split("\n")
    found = 0
    for i, line in enumerate(text):
        m = re.match(r"^<!-- output of: " + re.escape(program) + r"(.*?)-->\s*$", line)
        if not m:
            continue
        found += 1
        args = m.group(1).split()
        j = i + 1
        while j < len(text) and not text[j].startswith("```"):
            j += 1
        k = j + 1
        while k < len(text) and not text[k].startswith("```"):
            k += 1
        shown = text[j + 1:k]
        with tempfile.TemporaryDirectory() as tmp:
            run = [a.replace("FILE", os.path.join(tmp, "f.dot")) for a in args]
            out = subprocess.run([exe] + run, capture_output=True, text=True).stdout.split("\n")
        ok = j < len(text) and text[j].strip() == "```text" and any(
            all(same_line(s, out[p + n]) for n, s in enumerate(shown))
            for p in range(len(out) - len(shown) + 1))
        where = f"{os.path.basename(path)}:{i + 1}"
        check(ok and shown, f"{where}: the block is what '{program} {' '.join(args)}' prints",
              "block:\n" + "\n".join(shown) + "\nprogram printed:\n" + "\n".join(out))
    check(found > 0, f"{os.path.basename(path)} shows the program's output")


def tap_report(results, output):
    """Prints results ((ok, name, detail) triples; a detail starting
    '# SKIP' skips) as TAP, and the program's output when a check failed.
    Returns the exit status: 1 if any failed."""
    print("TAP version 13")
    print(f"1..{len(results)}")
    failed = 0
    for i, (ok, name, detail) in enumerate(results, 1):
        detail = str(detail)
        if detail.startswith("# SKIP"):
            print(f"ok {i} - {name} {detail}")
            continue
        print(f"{'ok' if ok else 'not ok'} {i} - {name}")
        if not ok:
            failed += 1
            for d in detail.splitlines() or [""]:
                print(f"  # {d}")
    if failed and output:
        print("# output was:")
        for line in output.splitlines():
            print("#   " + line)
    return 1 if failed else 0
