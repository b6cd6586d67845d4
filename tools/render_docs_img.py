#!/usr/bin/env python3
"""Redraws the pictures of docs/tutorial-chain-rule.md.

    render_docs_img.py WORKED_EXAMPLE_EXE DOT_EXE OUTDIR

Runs the worked example with --dot-forward and --dot, keeps the DOT sources
as OUTDIR/worked_example_{forward,backward}.dot and renders each with
`dot -Tsvg` into the matching .svg. Run through `ninja -C build docs-img`
(defined in docs/meson.build when Graphviz is found). Fails when dot prints
anything on stderr.
"""
import os
import subprocess
import sys


def main():
    if len(sys.argv) != 4:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    exe, dot, outdir = sys.argv[1:]
    os.makedirs(outdir, exist_ok=True)
    fwd = os.path.join(outdir, "worked_example_forward.dot")
    back = os.path.join(outdir, "worked_example_backward.dot")
    subprocess.run([exe, "--dot-forward", fwd, "--dot", back], check=True,
                   stdout=subprocess.DEVNULL)
    for src in (fwd, back):
        svg = src[:-4] + ".svg"
        r = subprocess.run([dot, "-Tsvg", "-o", svg, src], capture_output=True, text=True)
        if r.returncode != 0 or r.stderr.strip():
            print(f"dot failed on {src}:\n{r.stderr}", file=sys.stderr)
            return 1
        print(f"wrote {svg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
