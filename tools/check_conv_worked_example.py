#!/usr/bin/env python3
"""Checks examples/conv_worked_example against independent reference values.

    check_conv_worked_example.py CONV_WORKED_EXAMPLE_EXE [--tutorial FILE.md]

Runs the example (plain and with --trace) and reports TAP:
  - the printed x, w, y, p, L and the gradients from the tape (dL/dp,
    dL/dy, dL/dw, dL/dx) equal the reference values below to 1e-9;
  - the window lines name each window's argmax (the first maximum on the
    tie of window (1,0));
  - the hand-computed dL/dy (routing), dL/dw (correlation) and dL/dx (full
    convolution with the flipped kernel) equal the reference, and the
    table of differences (hand and ops vs the tape) shows 0;
  - the im2col matrix is the one built here from x, and the matrix
    products printed give y, dL/dw and (col2im) dL/dx of the reference;
  - the trace has the three backward steps, conv2d's attributes and its
    rule in words;
  - --dot writes a graph whose conv node shows its attributes, and it
    renders with `dot -Tsvg` with nothing on stderr (skipped, with a
    message, when Graphviz's dot is not installed);
  - with --tutorial, every ```text block that follows a line
    `<!-- output of: conv_worked_example ARGS -->` is a run of consecutive
    lines of what `conv_worked_example ARGS` prints (spaces may differ,
    numbers to 1e-9), so the tutorial shows what the program really prints.

The reference values were computed once, independently of this engine, with
PyTorch 1.13 in float64 (Debian's /usr/bin/python3):

    F = torch.nn.functional
    x = torch.tensor([[1,2,0,1],[0,1,3,1],[1,1,0,2],[1,0,0,1]], dtype=torch.float64)
          .reshape(1,1,4,4).requires_grad_()
    w = torch.tensor([[1,-1],[0,2]], dtype=torch.float64).reshape(1,1,2,2).requires_grad_()
    y = F.conv2d(x, w); y.retain_grad()
    p = F.max_pool2d(y, 2, stride=1); p.retain_grad()
    L = p.sum(); L.backward()

and printed with repr(float(v)) for each element of y, p, L, p.grad,
y.grad, w.grad, x.grad. Only the standard library is used here.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tutorial_blocks import NUM, TOL, check_blocks, tap_report  # noqa: E402

X = [1.0, 2.0, 0.0, 1.0, 0.0, 1.0, 3.0, 1.0, 1.0, 1.0, 0.0, 2.0, 1.0, 0.0, 0.0, 1.0]
W = [1.0, -1.0, 0.0, 2.0]
REF = {
    "y": [1.0, 8.0, 1.0, 1.0, -2.0, 6.0, 0.0, 1.0, 0.0],
    "p": [8.0, 8.0, 1.0, 6.0],
    "L": [23.0],
    "dL/dp": [1.0, 1.0, 1.0, 1.0],
    "dL/dy": [0.0, 2.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    "dL/dw": [7.0, 2.0, 3.0, 9.0],
    "dL/dx": [0.0, 2.0, -2.0, 0.0, 1.0, -1.0, 5.0, -1.0, 0.0, 2.0, 0.0, 2.0,
              0.0, 0.0, 0.0, 0.0],
}
NUMS_LINE = re.compile(r"^\s*(?:" + NUM + r"\s*)+$")

results = []


def check(ok, name, detail=""):
    results.append((bool(ok), name, str(detail)))


def close(got, want):
    return (got is not None and len(got) == len(want)
            and all(abs(g - w) <= TOL for g, w in zip(got, want)))


def grid(lines, head, start=0):
    """The numbers of the lines of numbers right after the first line that
    starts with head at or after start; None if there is no such line."""
    for i in range(start, len(lines)):
        if lines[i].startswith(head):
            vals = []
            j = i + 1
            while j < len(lines) and NUMS_LINE.match(lines[j]):
                vals += [float(v) for v in re.findall(NUM, lines[j])]
                j += 1
            return vals
    return None


def labelled_rows(lines, head):
    """Rows '(u,v)  n n n ...' after the line starting with head."""
    for i, l in enumerate(lines):
        if l.startswith(head):
            rows = []
            for m in lines[i + 1:]:
                if m.startswith("       "):  # the column labels
                    continue
                r = re.match(r"^\((\d),(\d)\)\s+(.*)$", m)
                if not r:
                    break
                rows.append([float(v) for v in re.findall(NUM, r.group(3))])
            return rows
    return None


def im2col():
    """col[(u,v)][(i,j)] = x[i+u, j+v], built here from X."""
    return [[X[(i + u) * 4 + j + v] for i in range(3) for j in range(3)]
            for u in range(2) for v in range(2)]


def main():
    argv = sys.argv[1:]
    tutorial = None
    if len(argv) == 3 and argv[1] == "--tutorial":
        tutorial = argv[2]
        argv = argv[:1]
    if len(argv) != 1:
        print("usage: check_conv_worked_example.py EXE [--tutorial FILE.md]", file=sys.stderr)
        return 2
    exe = argv[0]
    if tutorial:
        check_blocks(exe, tutorial, "conv_worked_example", check)

    run = subprocess.run([exe], capture_output=True, text=True)
    check(run.returncode == 0, "conv_worked_example exits 0", run.stderr)
    lines = run.stdout.splitlines()

    check(close(grid(lines, "x (input"), X), "x printed", grid(lines, "x (input"))
    check(close(grid(lines, "w (kernel"), W), "w printed", grid(lines, "w (kernel"))
    check(close(grid(lines, "y = conv2d(x, w)"), REF["y"]), "y = conv2d(x, w) matches the reference",
          grid(lines, "y = conv2d(x, w)"))
    check(close(grid(lines, "p = max_pool2d"), REF["p"]), "p = max_pool2d(y) matches the reference",
          grid(lines, "p = max_pool2d"))
    lv = [l for l in lines if l.startswith("L = sum(p) = ")]
    check(lv and close([float(re.findall(NUM, lv[0])[-1])], REF["L"]), "L matches the reference",
          lv)
    wins = [l for l in lines if l.startswith("window (")]
    want_arg = ["y[0,1]", "y[0,1]", "y[1,0]", "y[1,2]"]
    check(len(wins) == 4 and all(l.endswith(a) or (a + " (tie") in l
                                 for l, a in zip(wins, want_arg)),
          "each window's argmax is named", "\n".join(wins))
    check(len(wins) == 4 and "tie with y[2,1]: the first wins" in wins[2],
          "the tie in window (1,0) goes to the first maximum", "\n".join(wins))

    try:
        tape = lines.index("gradients from the tape")
        hand = lines.index("by hand")
    except ValueError:
        tape = hand = 0
        check(False, "sections 'gradients from the tape' and 'by hand' printed")
    for name in ("dL/dp", "dL/dy", "dL/dw", "dL/dx"):
        got = grid(lines, name, tape)
        check(close(got, REF[name]), f"{name} from the tape matches the reference",
              f"got {got}, want {REF[name]}")
    for head, name in (("dL/dy: each window", "dL/dy"), ("dL/dw[u,v] = sum", "dL/dw"),
                       ("dL/dx: the flipped kernel", "dL/dx")):
        got = grid(lines, head, hand)
        check(close(got, REF[name]), f"{name} by hand matches the reference",
              f"got {got}, want {REF[name]}")
    flipped = grid(lines, "the kernel flipped", hand)
    check(close(flipped, W[::-1]), "the kernel flipped is w rotated by 180 degrees", flipped)
    diffs = [l for l in lines if re.match(r"^dL/d[ywx]  ", l)]
    check(len(diffs) == 5 and all(abs(float(re.findall(NUM, l)[-1])) <= 1e-12 for l in diffs),
          "hand and ops equal the tape (5 rows of differences, each 0)", "\n".join(diffs))

    col = labelled_rows(lines, "col (4x9)")
    check(col is not None and len(col) == 4 and all(close(r, c) for r, c in zip(col, im2col())),
          "the im2col matrix is x's windows as columns", col)
    yrow = grid(lines, "forward  y (1x9)")
    check(close(yrow, REF["y"]), "w times col gives y", yrow)
    dwrow = grid(lines, "backward dL/dw (1x4)")
    check(close(dwrow, REF["dL/dw"]), "dL/dy times col^T gives dL/dw", dwrow)
    dcol = labelled_rows(lines, "backward dcol (4x9)")
    want_dcol = [[W[r] * d for d in REF["dL/dy"]] for r in range(4)]
    check(dcol is not None and len(dcol) == 4 and all(close(a, b) for a, b in zip(dcol, want_dcol)),
          "dcol = w^T dL/dy", dcol)
    c2i = grid(lines, "col2im adds")
    check(close(c2i, REF["dL/dx"]), "col2im of dcol gives dL/dx", c2i)
    check("largest difference from the tape: 0" in lines, "largest difference from the tape: 0")

    tr = subprocess.run([exe, "--trace"], capture_output=True, text=True)
    check(tr.returncode == 0, "conv_worked_example --trace exits 0", tr.stderr)
    tl = tr.stdout.splitlines()
    steps = [l for l in tl if re.match(r"^step \d+: ", l)]
    check([s.split("=")[1].split("(")[0].strip() for s in steps] == ["sum", "max_pool2d", "conv2d"],
          "the trace has the steps sum, max_pool2d, conv2d", steps)
    check("  attrs      stride 1x1 pad 0,0,0,0 dil 1x1 groups 1" in tl,
          "the trace shows conv2d's attributes")
    check("  attrs      kernel 2x2 stride 1x1 pad 0x0 dil 1x1" in tl,
          "the trace shows max_pool2d's attributes")
    check(sum(l.startswith("  in words   ") for l in tl) == 2,
          "the trace explains max_pool2d and conv2d in words")
    check(any(l.strip().startswith("-> w       dL/dw += [[[[7, 2], [3, 9]]]]") for l in tl),
          "the trace sends dL/dw")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "conv.dot")
        r = subprocess.run([exe, "--dot", path], capture_output=True, text=True)
        text = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
        check(r.returncode == 0 and "y = conv2d(x, w)\\lstride 1x1 pad 0,0,0,0 dil 1x1 groups 1"
              in text, "--dot: the conv node shows its attributes", r.stderr + text)
        dot = shutil.which("dot")
        if not dot:
            results.append((True, "--dot renders with dot -Tsvg",
                            "# SKIP Graphviz 'dot' not found on PATH"))
        else:
            d = subprocess.run([dot, "-Tsvg", "-o", os.path.join(tmp, "out.svg"), path],
                               capture_output=True, text=True)
            check(d.returncode == 0 and d.stderr.strip() == "",
                  "--dot renders with dot -Tsvg without warnings", d.stderr)

    return tap_report(results, run.stdout)


if __name__ == "__main__":
    sys.exit(main())
