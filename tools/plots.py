#!/usr/bin/env python3
"""Redraws the pictures of docs/faq.md (and of the tutorials), and checks that they are current.

    plots.py regen EXAMPLES_BUILD_DIR SOURCE_ROOT
    plots.py check SOURCE_ROOT

regen runs each teaching example of RECIPES with --plot --out docs/img (its
CSV and SVGs land there) and then writes docs/img/plots.sha256: the SHA-256
of every input of the pictures (the examples' sources, teach.h, the chart
writer tools/plot/, this script, which holds the recipes, and the CSVs the
examples wrote) and the list of the SVGs. Run it as `ninja -C build plots`.

check recomputes those hashes and fails (TAP) when an input changed since
the pictures were drawn (an example or the chart writer was edited, a CSV
was touched by hand) or a listed SVG is missing. It compares the inputs, not
the SVG bytes: a picture is current when what it is drawn from is.
"""
import hashlib
import os
import subprocess
import sys

# example -> (extra flags, the CSV files it writes, the pictures it draws);
# the defaults of each example are the ones docs/faq.md shows.
RECIPES = {
    "vanishing": ([], ["vanishing.csv"], ["vanishing.svg", "vanishing_loss.svg"]),
    "optimizers": ([], ["optimizers.csv"], ["optimizers.svg", "optimizers_time.svg"]),
    "learning_rate": ([], ["learning_rate.csv", "learning_rate_range.csv"],
                      ["learning_rate.svg", "learning_rate_range.svg"]),
    "overfitting": ([], ["overfitting.csv"], ["overfitting.svg", "overfitting_acc.svg"]),
    "exploding": ([], ["exploding.csv"], ["exploding.svg", "exploding_loss.svg"]),
    "vanishing_rnn": ([], ["vanishing_rnn.csv"], ["vanishing_rnn.svg"]),
    "descent": ([], ["descent.csv"], ["descent.svg", "descent_grads.svg"]),
    "parallel": ([], ["parallel.csv", "parallel_threads.csv"], ["parallel.svg"]),
}
SHARED = ["examples/teach.h", "tools/plot/plot.c", "tools/plot/plot.h", "tools/plots.py"]
MANIFEST = "docs/img/plots.sha256"


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def inputs():
    files = list(SHARED)
    for name, (_, csvs, _) in RECIPES.items():
        files += [f"examples/{name}.c"] + [f"docs/img/{c}" for c in csvs]
    return files


def regen(build, root):
    img = os.path.join(root, "docs", "img")
    for name, (flags, csvs, svgs) in RECIPES.items():
        exe = os.path.join(build, name)
        print(f"running {name} {' '.join(flags)}", flush=True)
        r = subprocess.run([exe, "--plot", "--out", img] + flags)
        if r.returncode != 0:
            print(f"{name} exited with {r.returncode}", file=sys.stderr)
            return 1
        for svg in csvs + svgs:
            if not os.path.exists(os.path.join(img, svg)):
                print(f"{name} did not draw {svg}", file=sys.stderr)
                return 1
    lines = ["# The inputs of the pictures of docs/faq.md, as tools/plots.py last drew them",
             "# (ninja -C build plots). The test 'plots-current' compares them."]
    lines += [f"{sha(os.path.join(root, p))}  {p}" for p in inputs()]
    lines += [f"svg  docs/img/{svg}" for _, _, svgs in RECIPES.values() for svg in svgs]
    with open(os.path.join(root, MANIFEST), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {MANIFEST}")
    return 0


def check(root):
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            rows = [l.split(None, 1) for l in f.read().splitlines() if l and l[0] != "#"]
    except OSError as e:
        print(f"1..1\nnot ok 1 - {MANIFEST}: {e}")
        return 1
    recorded = {p: h for h, p in rows if h != "svg"}
    svgs = [p for h, p in rows if h == "svg"]
    want = inputs() + [f"docs/img/{s}" for _, _, ss in RECIPES.values() for s in ss]
    print(f"1..{len(want)}")
    bad = 0
    for i, p in enumerate(want, 1):
        full = os.path.join(root, p)
        if p.endswith(".svg"):
            ok, why = p in svgs and os.path.exists(full), "missing or not drawn by plots.py"
        elif not os.path.exists(full):
            ok, why = False, "missing"
        else:
            ok = recorded.get(p) == sha(full)
            why = "changed since the pictures were drawn" if p in recorded else "not recorded"
        print(f"ok {i} - {p}" if ok else
              f"not ok {i} - {p}: {why}; run `ninja -C build plots` and commit docs/img")
        bad += not ok
    return 1 if bad else 0


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "regen":
        return regen(sys.argv[2], sys.argv[3])
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        return check(sys.argv[2])
    print(__doc__.strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
