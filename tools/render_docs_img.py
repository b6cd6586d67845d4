#!/usr/bin/env python3
"""Redraws the pictures of docs/tutorial-chain-rule.md and docs/tutorial-cnn.md.

    render_docs_img.py WORKED_EXAMPLE_EXE DOT_EXE OUTDIR [CONV_WORKED_EXAMPLE_EXE]
                       [--scopes RNN_SCOPES_EXE]

Runs the worked example with --dot-forward and --dot, keeps the DOT sources
as OUTDIR/worked_example_{forward,backward}.dot, and, when given, the conv
example with --dot as OUTDIR/conv_worked_example_backward.dot, and with
--scopes the unrolled RNN's dumps grouped by time step as
OUTDIR/rnn_scopes_{clusters,collapsed}.dot and a 2-layer LSTM layer's
collapsed dump as OUTDIR/rnn_scopes_lstm.dot; renders each
with `dot -Tsvg` into the matching .svg. Run through `ninja -C build docs-img`
(defined in docs/meson.build when Graphviz is found). Fails when dot prints
anything on stderr.
"""
import os
import subprocess
import sys


def main():
    args = sys.argv[1:]
    scopes = None
    if "--scopes" in args:
        i = args.index("--scopes")
        if i + 1 >= len(args):
            print(__doc__.strip(), file=sys.stderr)
            return 2
        scopes = args[i + 1]
        del args[i:i + 2]
    if len(args) not in (3, 4):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    exe, dot, outdir = args[:3]
    os.makedirs(outdir, exist_ok=True)
    fwd = os.path.join(outdir, "worked_example_forward.dot")
    back = os.path.join(outdir, "worked_example_backward.dot")
    subprocess.run([exe, "--dot-forward", fwd, "--dot", back], check=True,
                   stdout=subprocess.DEVNULL)
    sources = [fwd, back]
    if len(args) == 4:
        conv = os.path.join(outdir, "conv_worked_example_backward.dot")
        subprocess.run([args[3], "--dot", conv], check=True, stdout=subprocess.DEVNULL)
        sources.append(conv)
    if scopes:
        clusters = os.path.join(outdir, "rnn_scopes_clusters.dot")
        collapsed = os.path.join(outdir, "rnn_scopes_collapsed.dot")
        lstm = os.path.join(outdir, "rnn_scopes_lstm.dot")
        subprocess.run([scopes, "--dot", clusters, "--dot-collapsed", collapsed,
                        "--lstm-dot", lstm], check=True, stdout=subprocess.DEVNULL)
        sources += [clusters, collapsed, lstm]
    for src in sources:
        svg = src[:-4] + ".svg"
        r = subprocess.run([dot, "-Tsvg", "-o", svg, src], capture_output=True, text=True)
        if r.returncode != 0 or r.stderr.strip():
            print(f"dot failed on {src}:\n{r.stderr}", file=sys.stderr)
            return 1
        print(f"wrote {svg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
