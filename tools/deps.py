#!/usr/bin/env python3
"""deps.py: the dependency drawing of autodiff/, and its layering check.

Reads which source file calls (or refers to) which from the compiled
objects (`nm`: a symbol one object uses and another defines is an edge)
and which header includes which from the sources, then

  --check        exits 1, naming the files, if calls form a cycle through
                 more than one source file, or includes through more than
                 one header (a header and its own source are one unit);
  --dot FILE     writes the graph as Graphviz DOT, one box per source
                 file, grouped by layer, an arrow per caller -> callee;
  --svg FILE     the same, drawn by Graphviz's dot (FILE.dot beside it).

  tools/deps.py OBJDIR SRCDIR [--check] [--dot FILE]

OBJDIR holds the library's objects (build/autodiff, or its
libautodiff.so.*.p), SRCDIR is autodiff/. The test 'layering' runs the
check; `ninja -C build deps-img` redraws docs/img/autodiff-deps.svg. Layers, from the bottom: kernels (GEMM, threads),
core (errors, memory, tensors, tape and registry, broadcasting, scopes), ops (the
table and the op families), tools (gradcheck, graph dumps), context
(making a context, which sets up the rest).
"""
import argparse
import glob
import os
import re
import subprocess
import sys

LAYERS = [
    ("kernels", ("kernels/",)),
    ("core", ("core.c", "tape.c", "profile.c", "broadcast.c", "scope.c")),
    ("ops", ("ops.c", "op_")),
    ("tools", ("gradcheck.c", "graph.c")),
    ("context", ("context.c",)),
]


def layer_of(src):
    for name, prefixes in LAYERS:
        if any(src.startswith(p) for p in prefixes):
            return name
    return "other"


def objects(objdir):
    """{source path relative to SRCDIR: object path}; objdir may also be the
    build directory of autodiff/, holding the shared library's object dir."""
    found = glob.glob(os.path.join(objdir, "*.o"))
    if not found:  # the shared library's objects, and gemm.c's (built apart,
        # at its own optimisation level, and linked whole into the library)
        found = glob.glob(os.path.join(objdir, "libautodiff.so*.p", "*.o"))
        found += glob.glob(os.path.join(objdir, "libad_gemm.a.p", "*.o"))
    out = {}
    for o in sorted(found):
        base = os.path.basename(o)[:-2]  # kernels_gemm.c
        src = base.replace("kernels_", "kernels/", 1) if base.startswith("kernels_") else base
        out[src] = o
    return out


def symbols(obj):
    """(defined, used) global symbols of an object."""
    text = subprocess.run(["nm", "-P", obj], check=True, capture_output=True,
                          text=True).stdout
    defined, used = set(), set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind == "U":
            used.add(name)
        elif kind in "TDRBCVWG":  # global code and data
            defined.add(name)
    return defined, used


def call_graph(objs):
    defs, uses = {}, {}
    for src, o in objs.items():
        d, u = symbols(o)
        uses[src] = u
        for name in d:
            defs[name] = src
    edges = {src: set() for src in objs}
    for src, u in uses.items():
        for name in u:
            dst = defs.get(name)
            if dst and dst != src:
                edges[src].add(dst)
    return edges


def include_graph(srcdir):
    edges = {}
    for path in glob.glob(os.path.join(srcdir, "**", "*.h"), recursive=True):
        rel = os.path.relpath(path, srcdir)
        here = os.path.dirname(rel)
        with open(path) as f:
            incs = re.findall(r'^#include "([^"]+)"', f.read(), re.M)
        targets = set()
        for inc in incs:
            for cand in (os.path.normpath(os.path.join(here, inc)), inc):
                if os.path.exists(os.path.join(srcdir, cand)) and cand.endswith(".h"):
                    targets.add(cand)
                    break
        edges[rel] = targets
    return edges


def cycles(edges):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def write_dot(path, edges):
    with open(path, "w") as f:
        f.write("digraph autodiff {\n  rankdir=BT;\n  node [shape=box, fontname=\"Helvetica\", "
                "fontsize=10];\n  edge [color=\"#555555\", arrowsize=0.6];\n")
        for name, _ in LAYERS:
            members = sorted(s for s in edges if layer_of(s) == name)
            if not members:
                continue
            f.write(f"  subgraph cluster_{name} {{\n    label=\"{name}\"; style=rounded; "
                    "color=\"#999999\"; fontname=\"Helvetica\";\n")
            for m in members:
                f.write(f"    \"{m}\";\n")
            f.write("  }\n")
        for src in sorted(edges):
            for dst in sorted(edges[src]):
                f.write(f"  \"{src}\" -> \"{dst}\";\n")
        f.write("}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("objdir")
    ap.add_argument("srcdir")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--dot")
    ap.add_argument("--svg")
    args = ap.parse_args()
    objs = objects(args.objdir)
    if not objs:
        sys.exit(f"deps: no objects in {args.objdir}")
    calls = call_graph(objs)
    if args.dot:
        write_dot(args.dot, calls)
    if args.svg:
        dot_file = os.path.splitext(args.svg)[0] + ".dot"
        write_dot(dot_file, calls)
        subprocess.run(["dot", "-Tsvg", "-o", args.svg, dot_file], check=True)
        print(f"deps: wrote {args.svg}")
    if not args.check:
        return
    bad = 0
    for comp in cycles(calls):
        print("not ok - a call cycle through " + " -> ".join(comp))
        bad += 1
    for comp in cycles(include_graph(args.srcdir)):
        print("not ok - an include cycle through " + " -> ".join(comp))
        bad += 1
    for s in sorted(calls):  # a file of no layer would escape the check below
        if layer_of(s) == "other":
            print(f"not ok - {s} is in no layer (deps.py's LAYERS)")
            bad += 1
    rank = {name: i for i, (name, _) in enumerate(LAYERS)}
    up = [(s, d) for s in calls for d in calls[s]
          if rank.get(layer_of(d), -1) > rank.get(layer_of(s), len(LAYERS))]
    for s, d in sorted(up):
        print(f"not ok - {s} ({layer_of(s)}) calls up into {d} ({layer_of(d)})")
        bad += 1
    n = sum(len(v) for v in calls.values())
    print(f"deps: {len(calls)} source files, {n} call edges, {bad} problems")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
