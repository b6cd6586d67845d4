#!/usr/bin/env python3
"""compare_kann.py: the engine's MLP training benchmark side by side with KANN.

KANN (github attractivechaos/kann, Heng Li's C autodiff and neural-network
library, MIT) is not part of this tree: give the directory of its source
(the one with kann.c, kautodiff.c and their headers) as --kann. This
script compiles KANN's kann.c and kautodiff.c with our drivers
bench/kann/kann_mlp.c and kann_cnn.c (written against KANN's public API)
into a temporary directory, in four builds:

  makefile        KANN's own Makefile flags (gcc -g -Wall -Wextra -O2
                  -DHAVE_PTHREAD): its SSE kernels, its own GEMM
  native          -O3 -march=native -DHAVE_PTHREAD
  makefile+cblas  KANN's flags with -DHAVE_CBLAS, as its Makefile's CBLAS=
                  build (-fopenmp -pthread -lopenblas): its products in
                  OpenBLAS's sgemm (Debian's libopenblas-dev)
  native+cblas    -O3 -march=native with -DHAVE_CBLAS

and runs bench/mlp (bench/cnn) --optim rmsprop --alpha 0.9 (our build's)
and each KANN build on the same workloads, interleaved, REPEATS times (each in turn
first):

  seed   784-64-64-10, batch 32, 5 epochs x 8000 samples
  wide   784-1024-1024-10, batch 256, 2 epochs x 8000 samples
  cnn    the network of examples/mnist_cnn (bench/cnn; KANN's driver
         bench/kann/kann_cnn.c), batch 64, 1 epoch x 8000 samples

with 1 and 2 threads (ours: --threads; KANN: kann_mt, which splits each
mini-batch over its threads). Both train with RMSprop at lr 1e-3 and
decay 0.9 (the value of KANN's own kann_train_fnn1; ours as --alpha),
float32, softmax cross-entropy, on synthetic data of the same scheme
(bench/mlp.c); only the training loop is timed ("train_s"). KANN
at its best is its fastest build per workload (the lowest median),
printed with every build's median. Printed: each run's seconds, medians
and ranges, ours / KANN's best (lower is better), and the loss of the
first and last epoch of both sides (a comparison of runs that do not
learn is worth nothing).

Our side runs with inherited OPENBLAS_* variables cleared (as compare.py
runs it); KANN's CBLAS builds with OPENBLAS_NUM_THREADS=1 (KANN's threads
are its own) and, where OpenBLAS misdetects the CPU, the right
OPENBLAS_CORETYPE, as compare.py gives PyTorch. Without --kann, or with
a directory that has no kann.c, it says so and exits 0 (skipped, as
compare.py skips PyTorch when torch cannot be imported).

  bench/compare_kann.py --kann DIR [--build DIR] [--repeats N]
                        [--only seed,wide,cnn] [--builds NAME,...] [--cc CC]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from compare import (cpu_isa, last_value, med, openblas_core, ours_env,  # noqa: E402
                     run, torch_coretype)

CONFIGS = [
    # name, layers, batch, epochs, samples, threads
    ("seed 1 thread", "784,64,64,10", 32, 5, 8000, 1),
    ("seed 2 threads", "784,64,64,10", 32, 5, 8000, 2),
    ("wide 1 thread", "784,1024,1024,10", 256, 2, 8000, 1),
    ("wide 2 threads", "784,1024,1024,10", 256, 2, 8000, 2),
    ("cnn 1 thread", "cnn", 64, 1, 8000, 1),
    ("cnn 2 threads", "cnn", 64, 1, 8000, 2),
]
DRIVERS = ("mlp", "cnn")  # bench/kann/kann_NAME.c

# KANN's Makefile: CFLAGS=-g -Wall -Wextra -Wc++-compat -O2, CPPFLAGS=-DHAVE_PTHREAD,
# LIBS=-lpthread -lz -lm (zlib only for its data reader, not linked here);
# with CBLAS=: -DHAVE_CBLAS and LIBS=-fopenmp -pthread -lopenblas -lz -lm.
MAKEFILE_FLAGS = ["-g", "-Wall", "-Wextra", "-O2", "-DHAVE_PTHREAD"]
NATIVE_FLAGS = ["-O3", "-march=native", "-DHAVE_PTHREAD"]
CBLAS = (["-DHAVE_CBLAS"], ["-fopenmp", "-pthread", "-lopenblas", "-lm"])
PLAIN_LIBS = ["-lpthread", "-lm"]
BUILDS = [
    # name, compile flags, link flags
    ("makefile", MAKEFILE_FLAGS, PLAIN_LIBS),
    ("native", NATIVE_FLAGS, PLAIN_LIBS),
    ("makefile+cblas", MAKEFILE_FLAGS + CBLAS[0], CBLAS[1]),
    ("native+cblas", NATIVE_FLAGS + CBLAS[0], CBLAS[1]),
]


def kann_version(kann):
    """KANN_VERSION from kann.h, or '?'."""
    try:
        with open(os.path.join(kann, "kann.h")) as f:
            for line in f:
                if line.startswith("#define KANN_VERSION"):
                    return line.split()[2].strip('"')
    except OSError:
        pass
    return "?"


def build_kann(kann, cc, name, cflags, libs, outdir):
    """Compiles KANN with each of our drivers as outdir/kann_DRIVER.NAME;
    the directory, or None (with the compiler's message printed) when one
    fails."""
    for drv in DRIVERS:
        exe = os.path.join(outdir, "kann_%s.%s" % (drv, name))
        cmd = ([cc] + cflags + ["-I", kann, "-o", exe,
                                os.path.join(HERE, "kann", "kann_%s.c" % drv),
                                os.path.join(kann, "kann.c"), os.path.join(kann, "kautodiff.c")]
               + libs)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            print("KANN build %s failed (skipped): %s\n%s" % (name, " ".join(cmd), p.stdout))
            return None
    return outdir


def kann_env(cblas, coretype):
    """KANN's threads are its own (kann_mt): OpenBLAS runs on one thread in
    the CBLAS builds, on the core it should detect."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    if cblas:
        env["OPENBLAS_NUM_THREADS"] = "1"
        env["OMP_NUM_THREADS"] = "1"
        if coretype:
            env["OPENBLAS_CORETYPE"] = coretype
    return env


def args_of(cfg):
    _, layers, batch, epochs, samples, threads = cfg
    common = ["--batch", str(batch), "--epochs", str(epochs), "--samples", str(samples),
              "--threads", str(threads)]
    return common if layers == "cnn" else ["--layers", layers] + common


def driver_of(cfg):
    return "cnn" if cfg[1] == "cnn" else "mlp"


def losses(out):
    """(first, last) epoch loss from a 'loss: epoch 1 A, epoch N B' line."""
    line = next((l for l in out.splitlines() if l.startswith("loss: epoch 1 ")), None)
    if not line:
        return (float("nan"), float("nan"))
    parts = line.replace(",", "").split()
    return (float(parts[3]), float(parts[6]))


def rng(v):
    return "%.3f-%.3f" % (min(v), max(v)) if v else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kann", help="KANN's source directory (with kann.c and kautodiff.c)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"),
                    help="build directory with bench/mlp (default: build/)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", help="run only these models, comma-separated: seed, wide, cnn")
    ap.add_argument("--builds", help="KANN builds to try, comma-separated (default: all of %s)"
                    % ", ".join(b[0] for b in BUILDS))
    ap.add_argument("--cc", default=os.environ.get("CC", "gcc"),
                    help="compiler for KANN (default: $CC, else gcc, as KANN's Makefile)")
    a = ap.parse_args()

    if not a.kann or not os.path.exists(os.path.join(a.kann, "kann.c")):
        print("compare_kann.py: KANN's source not given or not found (%s): skipped; pass "
              "--kann DIR, the directory of a KANN checkout (github attractivechaos/kann) "
              "with kann.c and kautodiff.c" % (
                  "no --kann" if not a.kann else os.path.join(a.kann, "kann.c") + " missing"))
        return 0
    mlp = os.path.join(a.build, "bench", "mlp")
    if not os.path.exists(mlp):
        sys.exit("compare_kann.py: %s not found (build first, or pass --build)" % mlp)
    wanted = a.builds.split(",") if a.builds else [b[0] for b in BUILDS]
    unknown = [w for w in wanted if w not in [b[0] for b in BUILDS]]
    if unknown:
        sys.exit("compare_kann.py: unknown build %s (known: %s)" % (
            ", ".join(unknown), ", ".join(b[0] for b in BUILDS)))

    only = a.only.split(",") if a.only else None
    configs = [c for c in CONFIGS if not only or c[0].split()[0] in only]
    if not configs:
        sys.exit("compare_kann.py: --only %s names no model (seed, wide, cnn)" % a.only)
    if any(driver_of(c) == "cnn" for c in configs) and not os.path.exists(
            os.path.join(a.build, "bench", "cnn")):
        sys.exit("compare_kann.py: %s not found (build first, or pass --build)"
                 % os.path.join(a.build, "bench", "cnn"))

    isa, core = cpu_isa(), openblas_core()
    coretype = torch_coretype(isa, core)
    tmp = tempfile.mkdtemp(prefix="compare_kann_")
    try:
        builds = []
        for name, cflags, libs in BUILDS:
            if name in wanted:
                if build_kann(a.kann, a.cc, name, cflags, libs, tmp):
                    builds.append((name, tmp, "cblas" in name))
        if not builds:
            sys.exit("compare_kann.py: no KANN build succeeded")
        print("KANN %s from %s, %s; builds: %s" % (
            kann_version(a.kann), a.kann, a.cc, "; ".join(
                "%s (%s)" % (n, " ".join(f for f in dict((b[0], b[1]) for b in BUILDS)[n]
                                         if f != "-g"))
                for n, _, _ in builds)))
        print("CPU: %s; OpenBLAS detects core %s; KANN's CBLAS builds run with "
              "OPENBLAS_NUM_THREADS=1 and OPENBLAS_CORETYPE=%s; ours with inherited OPENBLAS_* "
              "cleared" % (isa, core or "-", coretype or "(unset: the detected core is right)"))
        print("compare_kann.py: %d repeats, ours (bench/mlp or bench/cnn, --optim rmsprop "
              "--alpha 0.9) and each KANN build interleaved; 1-min load average before %.2f"
              % (a.repeats, os.getloadavg()[0]), flush=True)

        who = ["ours"] + [b[0] for b in builds]
        res = {}
        for cfg in configs:
            times = {w: [] for w in who}
            loss = {w: [] for w in who}
            for r in range(a.repeats):
                shift = r % len(who)
                for w in who[shift:] + who[:shift]:
                    if w == "ours":
                        ours = mlp if driver_of(cfg) == "mlp" else os.path.join(
                            os.path.dirname(mlp), "cnn")
                        out = run([ours] + args_of(cfg) + ["--optim", "rmsprop", "--alpha", "0.9"],
                                  env=ours_env())
                    else:
                        _, where, cblas = next(b for b in builds if b[0] == w)
                        exe = os.path.join(where, "kann_%s.%s" % (driver_of(cfg), w))
                        out = run([exe] + args_of(cfg) + ["--decay", "0.9"],
                                  env=kann_env(cblas, coretype))
                    times[w].append(last_value(out, "train_s"))
                    loss[w].append(losses(out))
            best = min(who[1:], key=lambda w: med(times[w]))
            res[cfg[0]] = (times, loss, best)
            print("  %-15s %s" % (cfg[0], "  ".join(
                "%s %s" % (w, " ".join("%.3f" % v for v in times[w])) for w in who)), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print("1-min load average after: %.2f (it counts these runs, up to 2)" % os.getloadavg()[0])
    print()
    print("| config | ours s (range) | KANN best build | KANN s (range) | ours / KANN | %s |"
          % " | ".join("KANN %s s" % b[0] for b in builds))
    print("|---|---:|---|---:|---:|%s" % ("---:|" * len(builds)))
    for cfg in configs:
        times, loss, best = res[cfg[0]]
        o, k = med(times["ours"]), med(times[best])
        print("| %s | %.3f (%s) | %s | %.3f (%s) | %.2f | %s |" % (
            cfg[0], o, rng(times["ours"]), best, k, rng(times[best]), o / k,
            " | ".join("%.3f" % med(times[b[0]]) for b in builds)))
    print()
    print("loss, first -> last epoch (median over the repeats):")
    for cfg in configs:
        times, loss, best = res[cfg[0]]
        print("  %-15s %s" % (cfg[0], "; ".join(
            "%s %.4f -> %.4f" % (w, med([v[0] for v in loss[w]]), med([v[1] for v in loss[w]]))
            for w in ["ours"] + [b[0] for b in builds])))
    for model in ("seed", "wide", "cnn"):
        one, two = res.get(model + " 1 thread"), res.get(model + " 2 threads")
        if one and two:
            print("%s: 1 -> 2 threads speedup ours %.2fx, KANN (best builds %s, %s) %.2fx" % (
                model, med(one[0]["ours"]) / med(two[0]["ours"]), one[2], two[2],
                med(one[0][one[2]]) / med(two[0][two[2]])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
