#!/usr/bin/env python3
"""Prints the test-case totals of one or more meson runs as its last line:

    N passed, M failed

Reads meson-logs/testlog.json of each build directory given. A test that
speaks TAP counts each of its "ok" / "not ok" lines as a case (a TAP test
that died before its plan was complete counts the missing cases as failed);
any other test counts as one case. Skipped tests count as neither.
Exits 1 when any case failed or no case ran, else 0.
"""
import json
import re
import sys

PLAN = re.compile(r"^1\.\.(\d+)\s*$", re.M)
OK = re.compile(r"^ok\b", re.M)
NOT_OK = re.compile(r"^not ok\b", re.M)


def count(logfile):
    passed = failed = 0
    with open(logfile, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            t = json.loads(line)
            result = t.get("result", "")
            if result == "SKIP":
                continue
            out = t.get("stdout") or ""
            plan = PLAN.search(out)
            if plan:
                ok, bad = len(OK.findall(out)), len(NOT_OK.findall(out))
                missing = max(int(plan.group(1)) - ok - bad, 0)
                if result not in ("OK", "EXPECTEDFAIL") and bad == 0 and missing == 0:
                    bad = 1  # the runner failed after all its cases passed
                passed += ok
                failed += bad + missing
            elif result in ("OK", "EXPECTEDFAIL"):
                passed += 1
            else:
                failed += 1
    return passed, failed


def main(argv):
    if len(argv) < 2:
        print("usage: test_summary.py BUILDDIR [BUILDDIR...]", file=sys.stderr)
        return 2
    passed = failed = 0
    for d in argv[1:]:
        try:
            p, f = count(d.rstrip("/") + "/meson-logs/testlog.json")
        except OSError as e:
            print(f"test_summary: {e}", file=sys.stderr)
            p, f = 0, 1
        passed += p
        failed += f
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
