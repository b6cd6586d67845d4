#!/usr/bin/env python3
"""Compiles every ```c block of docs/*.md against the library; runs programs.

    doc_snippets.py --docs DIR [--also FILE.md]... [-I DIR]... [--lib FILE]...
                    [--data DIR] [--sanitize LIST] -- CC [CC ARGS...]

--also adds a Markdown file outside DIR (the README); a missing one is
skipped.

Each block whose fence is exactly ```c, or ```c followed by a word, is
checked according to its kind:

  program      the block defines main(): compiled as it stands, linked
               against the libraries, and run (it must exit 0 within two
               minutes, in a temporary directory holding only a link named
               data to --data, the repository's data/ with the MNIST digits).
  fragment     the fence is ```c fragment: statements, compiled as the body
               of `void fragment(ad_ctx *ctx)` after the prelude (so ctx is
               in scope and every other name must be declared in the block).
  unit         anything else: declarations and functions, compiled after the
               prelude as a translation unit and linked with an empty main()
               (so every library function it calls must exist).

The prelude includes <autodiff/ad_ext.h> (and with it ad.h), <autodiff/nn.h> when libnn is
given, and
<math.h>, <stdio.h>, <stdlib.h>, <string.h>. Programs include what they
use. Everything compiles with -std=c11 -Wall -Wextra -Wpedantic -Werror
(fragments and units may leave names unused). Writes TAP; exits 1 if any
block fails, 0 otherwise.
"""
import argparse
import concurrent.futures
import glob
import os
import re
import subprocess
import sys
import tempfile

FENCE = re.compile(r"^```c(?:\s+(\w+))?\s*$")


def blocks(path):
    """(line number, kind word or '', code) of each ```c block in path."""
    out = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, word, body = i + 1, m.group(1) or "", []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        out.append((start, word, "\n".join(body) + "\n"))
        i += 1
    return out


def kind_of(word, code):
    if word == "fragment":
        return "fragment"
    if re.search(r"\bmain\s*\(", code):
        return "program"
    return "unit"


def prelude(libs):
    p = ["#include <autodiff/ad_ext.h>"]
    if any(os.path.basename(l).startswith("libnn") for l in libs):
        p.append("#include <autodiff/nn.h>")
    p += ["#include <math.h>", "#include <stdio.h>", "#include <stdlib.h>",
          "#include <string.h>", ""]
    return "\n".join(p) + "\n"


def check_block(args, where, kind, code, workdir):
    rel, line = where.rsplit(":", 1)
    mark = f'#line {int(line) + 1} "{rel}"\n'  # errors point into the .md file
    src = os.path.join(workdir, "snippet.c")
    exe = os.path.join(workdir, "snippet")
    pre = prelude(args.lib)
    if kind == "program":
        text = code
    elif kind == "fragment":
        body = "".join("  " + l + "\n" if l else "\n" for l in code.rstrip("\n").split("\n"))
        text = (pre + "void fragment(ad_ctx *ctx);\nvoid fragment(ad_ctx *ctx) {\n" + mark + body +
                "}\n\nint main(void) { return 0; }\n")
    else:
        text = pre + mark + code + "\nint main(void) { return 0; }\n"
    if kind == "program":
        text = mark + text
    with open(src, "w", encoding="utf-8") as f:
        f.write(text)
    flags = ["-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-D_POSIX_C_SOURCE=200809L"]
    if kind != "program":
        flags += ["-Wno-unused-variable", "-Wno-unused-but-set-variable", "-Wno-unused-function",
                  "-Wno-unused-parameter"]
    if args.sanitize and args.sanitize != "none":
        flags += ["-fsanitize=" + args.sanitize, "-fno-omit-frame-pointer"]
    inc = [x for d in args.include for x in ("-I", d)]
    libs = []
    for lib in args.lib:
        libs += [lib, "-Wl,-rpath," + os.path.dirname(os.path.abspath(lib))]
    cmd = args.cc + flags + inc + [src, "-o", exe] + libs + ["-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return False, "compile failed:\n" + r.stderr + "\n--- source ---\n" + text
    if kind != "program":
        return True, ""
    if args.data:
        os.symlink(os.path.abspath(args.data), os.path.join(workdir, "data"))
    try:
        r = subprocess.run([exe], capture_output=True, text=True, cwd=workdir, timeout=120)
    except subprocess.TimeoutExpired:
        return False, "timed out after 120 s"
    if r.returncode != 0:
        return False, f"exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return True, ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", required=True)
    ap.add_argument("--also", action="append", default=[])
    ap.add_argument("-I", dest="include", action="append", default=[])
    ap.add_argument("--lib", action="append", default=[])
    ap.add_argument("--sanitize", default="none")
    ap.add_argument("--data")
    ap.add_argument("cc", nargs="+")
    args = ap.parse_args()

    todo = []
    files = [(md, os.path.join("docs", os.path.basename(md)))
             for md in sorted(glob.glob(os.path.join(args.docs, "*.md")))]
    files += [(md, os.path.basename(md)) for md in args.also if os.path.exists(md)]
    for md, rel in files:
        for line, word, code in blocks(md):
            todo.append((f"{rel}:{line}", kind_of(word, code), code))
    print("TAP version 13")
    print(f"1..{len(todo)}")
    if not todo:
        print("# no ```c blocks found")
        return 0

    def run(item):
        where, kind, code = item
        with tempfile.TemporaryDirectory() as tmp:
            return check_block(args, where, kind, code, tmp)

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(run, todo))
    failed = 0
    for i, ((where, kind, _), (ok, msg)) in enumerate(zip(todo, results), 1):
        print(f"{'ok' if ok else 'not ok'} {i} - {where} ({kind})")
        if not ok:
            failed += 1
            for l in msg.splitlines():
                print("  # " + l)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
