#!/usr/bin/env python3
"""The API reference: Doxygen over the public headers' contract comments.

  api_docs.py build DOXYFILE   writes the HTML reference where DOXYFILE says
                               (ninja -C build api-docs: build/docs/api/html)
  api_docs.py check DOXYFILE   the test 'api-docs' (TAP): Doxygen must run
                               without a warning over the headers, so a
                               public function, type, macro or struct member
                               without a contract comment fails; and an
                               undocumented function in a scratch header must
                               fail the same check (the check can fail)

Without doxygen, build fails and check skips, each saying what to install.
The check writes its HTML to a temporary directory, not the reference's.
"""
import os
import shutil
import subprocess
import sys
import tempfile

INSTALL = "doxygen not found (apt-get install doxygen)"


def run_doxygen(doxygen, doxyfile, overrides):
    """Runs doxygen with doxyfile plus overrides; returns (status, warnings)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "Doxyfile")
        with open(cfg, "w") as f:
            f.write('@INCLUDE = "%s"\n' % doxyfile)
            f.write('OUTPUT_DIRECTORY = "%s"\n' % os.path.join(tmp, "out"))
            for key, value in overrides.items():
                f.write("%s = %s\n" % (key, value))
        p = subprocess.run([doxygen, cfg], cwd=tmp, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True)
        lines = (p.stdout + p.stderr).splitlines()
        return p.returncode, [l for l in lines if "warning:" in l or "error:" in l]


# What the test asks of Doxygen beyond the reference's configuration:
# warnings (undocumented members included; the contracts are prose, so no
# @param lists are asked for) fail the run.
STRICT = {
    "WARN_IF_UNDOCUMENTED": "YES",
    "WARN_IF_DOC_ERROR": "YES",
    "WARN_NO_PARAMDOC": "NO",
    "WARN_IF_INCOMPLETE_DOC": "NO",
    "WARN_AS_ERROR": "FAIL_ON_WARNINGS",
}

SCRATCH = """/** @file
 * scratch.h: one documented function and one without a contract. */

/** Documented. */
int scratch_documented(int x);

int scratch_undocumented(int x);
"""


def check(doxygen, doxyfile):
    print("1..2")
    rc, warnings = run_doxygen(doxygen, doxyfile, STRICT)
    if rc == 0 and not warnings:
        print("ok 1 - Doxygen over the public headers: no warning")
    else:
        print("not ok 1 - Doxygen over the public headers: %d warning(s), status %d"
              % (len(warnings), rc))
        for w in warnings:
            print("# " + w)
        print("# every public declaration needs a /** ... */ contract comment"
              " (docs/testing.md, 'API reference')")

    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "scratch.h"), "w") as f:
            f.write(SCRATCH)
        scratch = dict(STRICT, INPUT='"%s"' % tmp, STRIP_FROM_PATH='"%s"' % tmp)
        rc2, warnings2 = run_doxygen(doxygen, doxyfile, scratch)
    named = any("scratch_undocumented" in w for w in warnings2)
    others = [w for w in warnings2 if "scratch_undocumented" not in w]
    if rc2 != 0 and named and not others:
        print("ok 2 - an undocumented function fails the check, named in the warning")
    else:
        print("not ok 2 - an undocumented function: status %d, warnings %r" % (rc2, warnings2))
    return 0 if (rc == 0 and not warnings and rc2 != 0 and named and not others) else 1


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("build", "check"):
        sys.stderr.write(__doc__)
        return 2
    mode, doxyfile = sys.argv[1], os.path.abspath(sys.argv[2])
    doxygen = shutil.which("doxygen")
    if mode == "check":
        if not doxygen:
            print("1..0 # SKIP " + INSTALL)
            return 0
        return check(doxygen, doxyfile)
    if not doxygen:
        sys.stderr.write("api-docs: %s\n" % INSTALL)
        return 1
    rc = subprocess.call([doxygen, doxyfile])
    if rc == 0:
        out = None
        with open(doxyfile) as f:
            for line in f:
                k, _, v = line.partition("=")
                if k.strip() == "OUTPUT_DIRECTORY":
                    out = v.strip().strip('"')
        if out:
            print("api-docs: %s" % os.path.join(out, "html", "index.html"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
