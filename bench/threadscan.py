#!/usr/bin/env python3
"""threadscan.py: every op and layer case on 1 thread and on T, to find
cases that more threads make slower.

Runs build/bench/opscan and build/bench/layerscan (their cases: see
bench/opscan.c and bench/layerscan.c; with --tools optscan also
build/bench/optscan, whose two columns are an optimizer step on the seed
and on the wide parameter set, headed fwd and bwd here as for the others)
with --threads 1 and --threads T in
turn, ROUNDS times each, every run printing the least of REPS timings per
case; then prints, per case, the least of the rounds on each thread count
and the speed-up t1 / tT of the forward and of the backward, and marks
"slower" where one of them is below --slower (default 0.9: the T-thread
run took more than 1/0.9 of the one-thread run's time). A case whose work
is below the library's split thresholds runs on one thread either way and
should read about 1.0; one that splits should gain; one marked slower
falls off a cliff when a user turns threads on (docs/performance.md,
"Threads").

  bench/threadscan.py [--build DIR] [--threads 2] [--rounds 3] [--reps 15]
                      [--filter SUBSTR] [--tools opscan,layerscan,optscan] [--slower 0.9]

Before and after the runs it prints bench/cores' probe (pair efficiency
about 1 when the first two CPUs are two cores, 0.5 when they share one):
with another process on the machine, the T-thread rows mean little. Exit
status 0 whatever the speed-ups: a measurement, not a test.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--filter")
    ap.add_argument("--tools", default="opscan,layerscan")
    ap.add_argument("--slower", type=float, default=0.9)
    args = ap.parse_args()
    if args.threads < 2 or args.rounds < 1 or args.reps < 1:
        sys.exit("threadscan.py: --threads >= 2, --rounds >= 1 and --reps >= 1")
    sys.path.insert(0, HERE)
    import compare  # ours_env, run, cores_probe
    from opscan import parse, ratio  # the tools' line format

    tools = [t for t in args.tools.split(",") if t]
    for tool in tools:
        if tool not in ("opscan", "layerscan", "optscan"):
            sys.exit("threadscan.py: unknown tool %s (opscan, layerscan, optscan)" % tool)
        if not os.path.exists(os.path.join(args.build, "bench", tool)):
            sys.exit("threadscan.py: %s/bench/%s is missing: build with -Dbench=true first"
                     % (args.build, tool))
    cores = os.path.join(args.build, "bench", "cores")

    def probe():
        if not os.path.exists(cores):
            return "no bench/cores"
        r = compare.cores_probe(cores)
        if r is None:
            return "bench/cores did not run"
        eff, gf = r
        return "pair efficiency %.2f, one CPU %.0f GFLOPS" % (eff, gf)

    print("# threadscan: 1 and %d threads in turn, %d rounds, least of %d runs; before: %s"
          % (args.threads, args.rounds, args.reps, probe()), flush=True)
    best = {}  # (tool, threads) -> {case: (fwd, bwd)}
    for _ in range(args.rounds):
        for tool in tools:
            exe = os.path.join(args.build, "bench", tool)
            for t in (1, args.threads):
                cmd = [exe, "--reps", str(args.reps), "--threads", str(t)]
                cmd += ["--filter", args.filter] if args.filter else []
                cur = best.setdefault((tool, t), {})
                for k, v in parse(compare.run(cmd, env=compare.ours_env()), tool).items():
                    cur[k] = tuple(map(min, zip(cur.get(k, v), v)))
    print("# after: %s" % probe())
    slower = []
    for tool in tools:
        one, many = best[(tool, 1)], best[(tool, args.threads)]
        width = max([14] + [len(k) for k in one])
        print("%-*s %10s %10s %6s %10s %10s %6s" %
              (width, tool, "fwd 1 us", "fwd %d us" % args.threads, "x", "bwd 1 us",
               "bwd %d us" % args.threads, "x"))
        for name, (f1, b1) in one.items():
            fn, bn = many.get(name, (float("nan"), float("nan")))
            sf, sb = ratio(f1, fn), ratio(b1, bn)
            mark = "  slower" if sf < args.slower or sb < args.slower else ""
            if mark:
                slower.append("%s/%s" % (tool, name))
            print("%-*s %10.1f %10.1f %6.2f %10.1f %10.1f %6.2f%s" %
                  (width, name, f1, fn, sf, b1, bn, sb, mark))
    print("slower on %d threads (speed-up < %g): %s" %
          (args.threads, args.slower, " ".join(slower) if slower else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
