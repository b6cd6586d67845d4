#!/usr/bin/env python3
"""Checks examples/worked_example against independent reference values.

    check_worked_example.py WORKED_EXAMPLE_EXE [--tutorial FILE.md]

Runs the example with --trace and --dot, and reports TAP:
  - the printed L, dL/dW1, dL/db1, dL/dW2, dL/db2 (at least 10 significant
    digits each) equal the reference values below to 1e-9;
  - the formula-vs-tape table shows differences below 1e-12;
  - the SGD step (lr 0.1) gives the reference weights and loss;
  - the trace has the eight backward steps;
  - the DOT file renders with `dot -Tsvg` with nothing on stderr (skipped,
    with a message, when Graphviz's dot is not installed);
  - with --tutorial, every ```text block that follows a line
    `<!-- output of: worked_example ARGS -->` is a run of consecutive lines
    of what `worked_example ARGS` prints (spaces may differ, numbers to
    1e-9), so the tutorial shows what the program really prints.

The reference values were computed once, independently of this engine, with
PyTorch 1.13 in float64 (Debian's /usr/bin/python3):

    x = [[1],[2]]; y = [[1]]; W1 = [[.1,.2],[.3,.4],[.5,.6]]; b1 = [[.1],[.2],[.3]]
    W2 = [[.7,.8,.9]]; b2 = [[.4]]   (all torch.float64, parameters requires_grad)
    L = ((y - sigmoid(W2 @ sigmoid(W1 @ x + b1) + b2)) ** 2).sum(); L.backward()
    then p -= 0.1 * p.grad for each parameter, and L evaluated again.

and printed with repr(float(v)). Only the standard library is used here.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tutorial_blocks import NUM, TOL, check_blocks, tap_report  # noqa: E402

REF = {
    "L": [0.00871510501094903],
    "dL/dW1": [-0.0025308369533985947, -0.0050616739067971895,
               -0.002127697577585358, -0.004255395155170716,
               -0.0014932939233848748, -0.0029865878467697496],
    "dL/db1": [-0.0025308369533985947, -0.002127697577585358,
               -0.0014932939233848748],
    "dL/dW2": [-0.010203317924156017, -0.012418564010901063,
               -0.013919251661631054],
    "dL/db2": [-0.015803017527699588],
}
FORWARD = {
    "z1": [0.6, 1.3, 2.0],
    "a1": [0.6456563062257954, 0.7858349830425586, 0.8807970779778823],
    "z2": [2.273344770972198],
    "yhat": [0.9066452732265311],
}
AFTER_SGD = {
    "W1": [0.10025308369533986, 0.20050616739067972, 0.3002127697577585,
           0.40042553951551707, 0.5001493293923385, 0.6002986587846769],
    "b1": [0.10025308369533986, 0.20021276975775854, 0.30014932939233846],
    "W2": [0.7010203317924155, 0.8012418564010901, 0.9013919251661632],
    "b2": [0.40158030175277],
}
L_AFTER = 0.008637348160408722

results = []


def check(ok, name, detail=""):
    results.append((bool(ok), name, detail))


def sig_digits(tok):
    mant = re.sub(r"[eE].*", "", tok).lstrip("+-").replace(".", "").lstrip("0")
    return len(mant)


def parse_line(lines, name, start=0):
    """Numbers on the first line 'name = ...' at or after index start."""
    for i in range(start, len(lines)):
        if lines[i].startswith(name + " = "):
            rest = lines[i][len(name) + 3:]
            return re.findall(NUM, rest), i
    return None, -1


def close(got, want):
    return len(got) == len(want) and all(abs(float(g) - w) <= TOL for g, w in zip(got, want))


def main():
    argv = sys.argv[1:]
    tutorial = None
    if len(argv) == 3 and argv[1] == "--tutorial":
        tutorial = argv[2]
        argv = argv[:1]
    if len(argv) != 1:
        print("usage: check_worked_example.py WORKED_EXAMPLE_EXE [--tutorial FILE.md]",
              file=sys.stderr)
        return 2
    exe = argv[0]
    if tutorial:
        check_blocks(exe, tutorial, "worked_example", check)
    with tempfile.TemporaryDirectory() as tmp:
        dot_path = os.path.join(tmp, "worked.dot")
        fwd_path = os.path.join(tmp, "worked_forward.dot")
        run = subprocess.run([exe, "--trace", "--dot", dot_path, "--dot-forward", fwd_path],
                             capture_output=True, text=True)
        check(run.returncode == 0, "worked_example exits 0", run.stderr)
        lines = run.stdout.splitlines()

        for name, want in FORWARD.items():
            got, _ = parse_line(lines, name)
            check(got is not None and close(got, want), f"forward {name}", f"got {got}")

        try:
            tape = lines.index("gradients from the tape")
        except ValueError:
            tape = 0
            check(False, "section 'gradients from the tape' printed")
        for name, want in REF.items():
            got, _ = parse_line(lines, name, tape)
            check(got is not None and close(got, want), f"{name} matches the reference to {TOL}",
                  f"got {got}, want {want}")
            check(got is not None and all(sig_digits(t) >= 10 or float(t) == 0 for t in got),
                  f"{name} printed with at least 10 significant digits", f"got {got}")

        rows = [l for l in lines if re.match(r"^dL/d(W1|b1|W2|b2)\[\d\]\s", l)]
        check(len(rows) == 13, "13 formula-vs-tape rows", f"got {len(rows)}")
        for r in rows:
            f = re.findall(NUM, r.split("]", 1)[1])
            check(len(f) == 3 and abs(float(f[0]) - float(f[1])) <= 1e-12
                  and abs(float(f[2])) <= 1e-12, f"formula equals tape: {r.split()[0]}", r)

        try:
            sgd = next(i for i, l in enumerate(lines) if l.startswith("after one SGD step"))
        except StopIteration:
            sgd = len(lines)
            check(False, "section 'after one SGD step' printed")
        for name, want in AFTER_SGD.items():
            got, _ = parse_line(lines, name, sgd)
            check(got is not None and close(got, want), f"{name} after one SGD step",
                  f"got {got}, want {want}")
        m = [l for l in lines if l.startswith("L after the step = ")]
        got = re.findall(NUM, m[0])[:1] if m else []
        check(close(got, [L_AFTER]), "L after the step", f"got {got}")

        steps = [l for l in lines if re.match(r"^step \d+: ", l)]
        check(len(steps) == 8, "the trace has 8 backward steps", f"got {len(steps)}")
        check(any("dL/dW1 += " in l for l in lines), "the trace sends dL/dW1")

        dot = shutil.which("dot")
        for path, what in ((dot_path, "backward"), (fwd_path, "forward")):
            if not dot:
                results.append((True, f"--dot {what} view renders with dot -Tsvg",
                                "# SKIP Graphviz 'dot' not found on PATH"))
                continue
            r = subprocess.run([dot, "-Tsvg", "-o", os.path.join(tmp, "out.svg"), path],
                               capture_output=True, text=True)
            check(r.returncode == 0 and r.stderr.strip() == "",
                  f"--dot {what} view renders with dot -Tsvg without warnings", r.stderr)

    return tap_report(results, run.stdout)


if __name__ == "__main__":
    sys.exit(main())
