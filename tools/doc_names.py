#!/usr/bin/env python3
"""Every ad_/nn_/AD_/NN_ name the documentation mentions exists.

    doc_names.py ROOT

Scans README.md and docs/*.md under ROOT for identifiers that start with
ad_, nn_, AD_ or NN_ and checks that each occurs as a whole word in the
code: the public headers first, then the library, tool, test, example and
benchmark sources (a page may explain an internal function). A name that
ends with "_" is a prefix ("the NN_ACT_ values") and is skipped. Writes
TAP, one test per document; a document that names something the code
does not have fails with the names listed. A renamed or removed function
then fails here instead of leaving a page that points nowhere.

The check can fail: it runs itself first on a scratch page naming
ad_no_such_function and requires that page to fail.
"""
import glob
import os
import re
import sys

NAME = re.compile(r"\b(?:ad|nn|AD|NN)_[A-Za-z0-9_]*[A-Za-z0-9]\b")
CODE_DIRS = ["include", "autodiff", "nn", "nn_dist", "tools", "tests", "examples", "bench"]
CODE_EXT = (".h", ".c", ".cpp", ".py", ".sh", ".build")


def code_words(root):
    """Every identifier-like word of the code under root."""
    words = set()
    for d in CODE_DIRS:
        for dirpath, _, files in os.walk(os.path.join(root, d)):
            for f in files:
                path = os.path.join(dirpath, f)
                if os.path.realpath(path) == os.path.realpath(__file__):
                    continue  # its scratch name is not code
                if f.endswith(CODE_EXT) or f == "meson.build":
                    with open(path, encoding="utf-8", errors="replace") as fh:
                        words.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", fh.read()))
    return words


def missing(text, words):
    return sorted({n for n in NAME.findall(text) if n not in words})


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    words = code_words(root)
    docs = [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))
    print("1..%d" % (len(docs) + 1))
    bad = 0
    # the scratch page must fail, or the check proves nothing
    scratch = missing("call `ad_no_such_function` and `ad_backward`", words)
    if scratch == ["ad_no_such_function"]:
        print("ok 1 - a scratch page naming ad_no_such_function fails the check")
    else:
        print("not ok 1 - the scratch page gave %s" % scratch)
        bad += 1
    for i, path in enumerate(docs, start=2):
        with open(path, encoding="utf-8") as fh:
            names = missing(fh.read(), words)
        rel = os.path.relpath(path, root)
        if names:
            print("not ok %d - %s names what the code lacks: %s" % (i, rel, ", ".join(names)))
            bad += 1
        else:
            print("ok %d - %s" % (i, rel))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
