#!/usr/bin/env python3
"""regen.py: rewrites the generated files of the source tree after an op
is added or changed; `ninja -C build regen` runs it.

  docs/derivatives.md     from the op registry (build/tools/gen_derivatives)
  tests/fixtures/ops.txt  PyTorch's values for every case (tools/gen_fixtures.py;
                          needs torch: Debian's python3-torch)

Both generators are deterministic, so the files change only where an op
changed: a new op's rows and cases are added, the rest stays byte for byte.

  tools/regen.py GEN_DERIVATIVES SOURCE_ROOT
"""
import os
import subprocess
import sys


def torch_python():
    """An interpreter that can import torch, or None."""
    for exe in (sys.executable, "/usr/bin/python3"):
        if exe and os.path.exists(exe) and subprocess.run(
                [exe, "-c", "import torch, numpy"], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL).returncode == 0:
            return exe
    return None


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    gen, root = sys.argv[1], sys.argv[2]
    doc = os.path.join(root, "docs", "derivatives.md")
    subprocess.run([gen, "-o", doc], check=True)
    print(f"regen: wrote {doc}")
    py = torch_python()
    if not py:
        sys.exit("regen: torch is not installed (Debian: apt-get install python3-torch); "
                 "tests/fixtures/ops.txt was not regenerated")
    subprocess.run([py, os.path.join(root, "tools", "gen_fixtures.py")], check=True)


if __name__ == "__main__":
    main()
