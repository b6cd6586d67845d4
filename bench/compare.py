#!/usr/bin/env python3
"""compare.py: the engine's training benchmarks side by side with PyTorch.

Runs bench/mlp, bench/cnn and bench/rnn and the same training loops in PyTorch (same layers, batch,
epochs, samples, Adam lr 1e-3, float32, torch.set_num_threads(T) and
OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=T, since torch's products run in
OpenBLAS, whose thread count set_num_threads does not change; only the
training loop is timed, on synthetic data held in memory), alternating ours
and theirs within each configuration, REPEATS times (a model's 1- and
2-thread configurations interleaved, each repeat running both, in turn
first), and prints medians:

  config           the issues' targets: the seed model (784-64-64-10, batch
                   32, 5 epochs x 8000), the wide one (784-1024-1024-10,
                   batch 256, 2 epochs x 8000) and the CNN of
                   examples/mnist_cnn (bench/cnn, batch 64, 1 epoch x 8000),
                   and the recurrent language model of bench/rnn (LSTM and
                   GRU, hidden 256, sequences of 64, batch 32, 50 steps),
                   with 1 and 2 threads
  ours s, torch s  median wall seconds of the training loop ("train_s")
  ratio            ours / torch (lower is better)
  ours GFLOPS      the matrix products' flops per second of training (see
                   bench/mlp.c for how they are counted)
  RSS              peak resident set of our process and of the torch one

then the thread scaling (1 -> 2 threads; for the wide model, the LSTM and
the GRU also measured inside one process, with blocks of 4 steps on 1 and 2
threads in turn: --alternate of bench/mlp and bench/rnn, between two
bench/cores probes, and not judged against the target when a probe found
the two CPUs sharing a core), bench/scalar_chain's ns per op
(median of REPEATS processes; subnormals flushed, as nn_fit trains, and,
printed beside it, kept), and the built-in GEMM against OpenBLAS on
the seed model: end to end (a -Dblas=disabled build's bench/mlp, given
with --builtin-mlp, against the default build's) and per product
(bench/ops: the seed step's eight matrix products, time-weighted).

Before every round of a configuration and after its last one, bench/cores
measures whether the two CPUs are two cores at that moment (a virtual
machine's two CPUs can be hyperthreads of one core, or share it with another
guest, and the host moves them between the two from one second to the next;
then two threads get half a core each): its pair efficiency, about 1 for two
cores and 0.5 for one, is printed per configuration with the range of one
CPU's multiply-add GFLOPS alone (which moves too when another guest shares
the core), and each speed-up verdict says whether every probe around its
two-thread runs found two cores, and gives the speed-up over the runs that
did. A probe is a snapshot: the state can change during a run.

Each process is fresh, so every run pays its own warm-up, as a user's
script does. PyTorch runs at its best: where OpenBLAS misdetects the CPU
(generic kernels on an AVX-512 or AVX2 CPU it does not know), its
OPENBLAS_CORETYPE is forced to SkylakeX or Haswell; our side runs with every
inherited OPENBLAS_* variable cleared, as a user's program would. The first
line prints the CPU, the core OpenBLAS detects, both settings and what our
GEMM dispatch decided. PyTorch is skipped with a message when it cannot be imported
(by this interpreter or by /usr/bin/python3, or by --python).

  bench/compare.py [--build DIR] [--builtin-mlp PATH] [--repeats N]
                   [--python EXE] [--only seed|wide|cnn|lstm|gru]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CONFIGS = [
    # name, layers ("cnn": bench/cnn's network), batch, epochs, samples,
    # threads, target ratio (the speed issue's; the CNN issue's for cnn)
    ("seed 1 thread", "784,64,64,10", 32, 5, 8000, 1, 0.12),
    ("seed 2 threads", "784,64,64,10", 32, 5, 8000, 2, None),
    ("wide 1 thread", "784,1024,1024,10", 256, 2, 8000, 1, 0.75),
    ("wide 2 threads", "784,1024,1024,10", 256, 2, 8000, 2, None),
    ("cnn 1 thread", "cnn", 64, 1, 8000, 1, 0.7),
    ("cnn 2 threads", "cnn", 64, 1, 8000, 2, None),
    # bench/rnn: embedding(64->64), a recurrent layer (64->256), dense(256->64),
    # sequences of 64, batch 32; "epochs" is the number of steps
    ("lstm 1 thread", "rnn:lstm", 32, 50, 0, 1, 0.6),
    ("lstm 2 threads", "rnn:lstm", 32, 50, 0, 2, None),
    ("gru 1 thread", "rnn:gru", 32, 50, 0, 1, 0.6),
    ("gru 2 threads", "rnn:gru", 32, 50, 0, 2, None),
]
# 1 -> 2 threads speedup targets of our side
SCALING = {"seed": None, "wide": 1.85, "cnn": 1.7, "lstm": 1.5, "gru": 1.5}

# The PyTorch side: the loop nn_fit runs (shuffle each epoch, gather the
# batch, zero_grad, forward, cross-entropy, backward, step, loss.item()).
TORCH_SCRIPT = r"""
import resource, sys, time
import torch
batch, epochs, samples, threads = (int(v) for v in sys.argv[2:6])
torch.set_num_threads(threads)
torch.manual_seed(1)
nn = torch.nn
if sys.argv[1].startswith("rnn:"):  # bench/rnn's model; epochs is the step count
    V, E, H, T = 64, 64, 256, 64
    cells = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, E)
            self.rnn = cells[sys.argv[1][4:]](E, H, batch_first=True)
            self.out = nn.Linear(H, V)
        def forward(self, t):
            return self.out(self.rnn(self.emb(t))[0])
    model = LM()
    data = torch.randint(0, V, (1024, T + 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lossf = torch.nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for s in range(epochs):
        r = s * batch % (1024 - batch + 1)
        xb, yb = data[r:r + batch, :T], data[r:r + batch, 1:]
        opt.zero_grad()
        loss = lossf(model(xb).reshape(-1, V), yb.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()
    secs = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("peak_rss_mb: %.1f" % rss)
    print("train_s: %.4f" % secs)
    sys.exit(0)
if sys.argv[1] == "cnn":  # bench/cnn's network and data
    x = torch.rand(samples, 1, 28, 28)
    templates = torch.randn(28 * 28, 10)
    y = ((x - 0.5).flatten(1) @ templates).argmax(1)
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Dropout(0.2), nn.Flatten(), nn.Linear(4608, 128),
                          nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10))
else:
    layers = [int(v) for v in sys.argv[1].split(",")]
    x = torch.rand(samples, layers[0])
    teacher = torch.randn(layers[0], layers[-1])
    y = ((x - 0.5) @ teacher).argmax(1)
    mods = []
    for i in range(len(layers) - 1):
        mods.append(nn.Linear(layers[i], layers[i + 1]))
        if i + 2 < len(layers):
            mods.append(nn.ReLU())
    model = nn.Sequential(*mods)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
lossf = torch.nn.CrossEntropyLoss()
t0 = time.perf_counter()
for e in range(epochs):
    perm = torch.randperm(samples)
    total = 0.0
    for i in range(0, samples, batch):
        idx = perm[i:i + batch]
        xb, yb = x[idx], y[idx]
        opt.zero_grad()
        loss = lossf(model(xb), yb)
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
secs = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print("peak_rss_mb: %.1f" % rss)
print("train_s: %.4f" % secs)
"""


def last_value(out, key):
    """The number after 'key:' on the last line that has it."""
    for line in reversed(out.splitlines()):
        if line.startswith(key + ":"):
            return float(line.split(":", 1)[1].split()[0])
    raise RuntimeError("no '%s:' in output:\n%s" % (key, out))


def run(cmd, env=None, cpus=None):
    """cmd's stdout; with cpus, the process runs on those CPUs only."""
    pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                       preexec_fn=pre)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s%s" % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
    return p.stdout


def cores_probe(exe):
    """bench/cores now: (pair efficiency, about 1 when the first two CPUs
    are two cores and 0.5 when they share one; a CPU's multiply-add GFLOPS
    alone, the mean of the two), or None when it cannot run."""
    try:
        p = subprocess.run([exe], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if p.returncode != 0:
            return None
        alone = [float(v) for v in next(l for l in p.stdout.splitlines()
                                        if l.startswith("alone_gflops:")).split()[1:]]
        return last_value(p.stdout, "pair_efficiency"), sum(alone) / len(alone)
    except (OSError, StopIteration, ValueError, RuntimeError, ZeroDivisionError):
        return None  # absent (not Linux), not runnable, or output not understood


# a probe below this: the two CPUs were not two whole cores (two cores read
# 0.9-1.1, one shared core 0.4-0.6)
TWO_CORES = 0.8


def find_torch_python(explicit):
    """An interpreter that imports torch, or None."""
    cands = [explicit] if explicit else [sys.executable, "/usr/bin/python3"]
    for py in cands:
        if not py or not os.path.exists(py):
            continue
        p = subprocess.run([py, "-c", "import torch; print(torch.__version__)"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if p.returncode == 0:
            return py, p.stdout.strip()
    return None, None


def ours_cmd(mlp, cfg):
    _, layers, batch, epochs, samples, threads, _ = cfg
    common = ["--batch", str(batch), "--epochs", str(epochs), "--samples", str(samples),
              "--threads", str(threads)]
    if layers == "cnn":  # bench/cnn beside bench/mlp
        return [os.path.join(os.path.dirname(mlp), "cnn")] + common
    if layers.startswith("rnn:"):  # bench/rnn; epochs is the step count
        return [os.path.join(os.path.dirname(mlp), "rnn"), "--cell", layers[4:], "--batch",
                str(batch), "--steps", str(epochs), "--threads", str(threads)]
    return [mlp, "--layers", layers] + common + ["--optim", "adam", "--dtype", "f32"]


def torch_cmd(py, script, cfg):
    _, layers, batch, epochs, samples, threads, _ = cfg
    return [py, script, layers, str(batch), str(epochs), str(samples), str(threads)]


def cpu_isa():
    """'avx512', 'avx2' (with FMA) or 'other', from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((l for l in f if l.startswith("flags")), "").split())
    except OSError:
        return "other"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else "other"


# OpenBLAS cores whose kernels use AVX-512 / AVX2 (the rest are older)
CORES_AVX512 = {"skylakex", "cooperlake", "sapphirerapids"}
CORES_AVX2 = {"haswell", "zen", "skylake", "alderlake"} | CORES_AVX512


def openblas_core():
    """The core OpenBLAS detects by itself (no OPENBLAS_* variables), or
    None when libopenblas cannot be loaded."""
    code = ("import ctypes; f = ctypes.CDLL('libopenblas.so.0').openblas_get_corename; "
            "f.restype = ctypes.c_char_p; print(f().decode())")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    p = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True, env=env)
    return p.stdout.strip() or None if p.returncode == 0 else None


def torch_coretype(isa, core):
    """The OPENBLAS_CORETYPE that gives PyTorch (whose products run in
    OpenBLAS) its best kernels when OpenBLAS misdetects this CPU, or None."""
    c = (core or "").lower()
    if isa == "avx512" and c not in CORES_AVX512:
        return "SkylakeX"
    if isa == "avx2" and c not in CORES_AVX2:
        return "Haswell"
    return None


def torch_env(threads, coretype):
    """torch.set_num_threads sets PyTorch's own (OpenMP) threads, but OpenBLAS,
    which runs its matrix products, keeps its default of one thread per core
    unless told otherwise: without this, 'torch 1 thread' multiplies on 2.
    PyTorch runs at its best: OpenBLAS's core forced where it misdetects the
    CPU, and no inherited OPENBLAS_* setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    return env


def ours_env():
    """Our bench/mlp sets OpenBLAS to one thread itself (ad_set_num_threads),
    but only after OpenBLAS has started its pool at load time, whose idle
    threads spin for about 0.1 s: on a busy machine they compete with the
    training loop. Set at launch, as for PyTorch, no pool is started. Every
    inherited OPENBLAS_* variable is cleared: the engine picks its kernels
    itself, as a user's program would run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    return env


def backend_of(mlp):
    """What bench/mlp says of its GEMM (ad_gemm_backend), from a 0-epoch run."""
    out = run([mlp, "--epochs", "1", "--samples", "64", "--batch", "32"], env=ours_env())
    line = next((l for l in out.splitlines() if l.startswith("gemm: ")), "")
    return line.split(": ", 1)[1] if line else "?"


def med(v):
    return statistics.median(v) if v else float("nan")


def gemm_products(ops_exe):
    """bench/ops' seed products: (builtin s, openblas s) for one training step,
    each product's time from its GFLOPS, summed; None without OpenBLAS."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    out = run([ops_exe, "--filter", "matmul/f32/seed.", "--reps", "9"], env=env)
    tb = to = 0.0
    rows = 0
    for line in out.splitlines():
        f = line.split()
        if not f or not f[0].startswith("matmul/f32/seed.") or ".io." in f[0]:
            continue
        m, n, k = (int(v) for v in f[1].split("x"))
        nums = [v for v in f[2:] if v.replace(".", "", 1).isdigit()]
        if len(nums) < 4:
            return None
        _, openblas, builtin = (float(v) for v in nums[:3])
        flops = 2.0 * m * n * k
        tb += flops / (builtin * 1e9)
        to += flops / (openblas * 1e9)
        rows += 1
    return (tb, to, rows) if rows else None


# In-process alternation (--alternate K of bench/mlp and bench/rnn): blocks
# of K steps on 1 and 2 threads in turn, so both see the same moments.
ALTERNATE = {
    "wide": ["--layers", "784,1024,1024,10", "--batch", "256", "--epochs", "2", "--samples", "8000",
             "--threads", "2", "--alternate", "4"],
    "lstm": ["--cell", "lstm", "--steps", "200", "--threads", "2", "--alternate", "4"],
    "gru": ["--cell", "gru", "--steps", "200", "--threads", "2", "--alternate", "4"],
}


def alternate_speedup(mlp, model):
    """(speed-up, low, high of the middle half, pairs) of bench/mlp or
    bench/rnn alternating 1 and 2 threads inside one process, or None."""
    args = ALTERNATE.get(model)
    if not args:
        return None
    exe = mlp if model == "wide" else os.path.join(os.path.dirname(mlp), "rnn")
    try:
        out = run([exe] + args, env=ours_env())
    except (RuntimeError, OSError):
        return None
    m = re.search(r"^alternate_speedup: ([0-9.]+) \(median over (\d+) neighbouring pairs; "
                  r"middle half ([0-9.]+)-([0-9.]+)\)", out, re.M)
    return (float(m.group(1)), float(m.group(3)), float(m.group(4)), int(m.group(2))) if m else None


def two_cores_note(one, two, tgt):
    """What bench/cores found around the two-thread runs of res entry two,
    and the speed-up over those of its runs that two probes (before and
    after) saw on two whole cores."""
    runs, probes = two[5], [p[0] if p else None for p in two[6]]
    got = [p for p in probes if p is not None]
    if not got:
        return "two cores: not probed"
    missing = "" if len(got) == len(probes) else " (%d of %d probes failed)" % (
        len(probes) - len(got), len(probes))
    if min(got) >= TWO_CORES:
        return "every probe found two cores (pair efficiency >= %.2f)%s" % (min(got), missing)
    good = [t for i, t in enumerate(runs)
            if probes[i] is not None and probes[i + 1] is not None and
            min(probes[i], probes[i + 1]) >= TWO_CORES]
    note = ("the two CPUs shared a core during part of it (pair efficiency %.2f-%.2f)%s: "
            "the figure says little about the code" % (min(got), max(got), missing))
    if good:
        sp = one[0] / med(good)
        note += "; over the %d of %d runs between two-core probes: %.2fx" % (len(good), len(runs), sp)
        if tgt:
            note += " (%s)" % ("met" if sp >= tgt else "MISSED")
    else:
        note += "; no run fell between two-core probes"
    return note


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"),
                    help="build directory with bench/mlp (default: build/)")
    ap.add_argument("--builtin-mlp", help="bench/mlp of a -Dblas=disabled build")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--python", help="interpreter with torch (default: this one, /usr/bin/python3)")
    ap.add_argument("--only", choices=["seed", "wide", "cnn", "lstm", "gru"],
                    help="run only these configurations")
    a = ap.parse_args()

    mlp = os.path.join(a.build, "bench", "mlp")
    chain = os.path.join(a.build, "bench", "scalar_chain")
    ops = os.path.join(a.build, "bench", "ops")
    cores = os.path.join(a.build, "bench", "cores")
    if not os.path.exists(mlp):
        sys.exit("compare.py: %s not found (build first, or pass --build)" % mlp)
    py, tv = find_torch_python(a.python)
    if not py:
        print("PyTorch not found (import torch failed): the torch columns are skipped")
    script = None
    if py:
        fd, script = tempfile.mkstemp(suffix=".py", prefix="compare_torch_")
        with os.fdopen(fd, "w") as f:
            f.write(TORCH_SCRIPT)

    isa, core = cpu_isa(), openblas_core()
    coretype = torch_coretype(isa, core)
    inherited = sorted(k for k in os.environ if k.startswith("OPENBLAS_"))
    print("CPU: %s; OpenBLAS detects core %s; PyTorch runs with OPENBLAS_CORETYPE=%s; "
          "ours with inherited OPENBLAS_* cleared (%s); our GEMM: %s" % (
              isa, core or "-", coretype or "(unset: the detected core is right)",
              ", ".join("%s=%s" % (k, os.environ[k]) for k in inherited) or "none set",
              backend_of(mlp)))
    configs = [c for c in CONFIGS if not a.only or c[0].startswith(a.only)]
    print("compare.py: %d repeats, ours and torch alternating; medians; torch %s (%s); "
          "1-min load average before %.2f" % (a.repeats, tv or "absent", py or "-",
                                               os.getloadavg()[0]))
    # A model's configurations (1 and 2 threads) run interleaved: each
    # repeat runs all of them, in turn first, so that the speed-up compares
    # runs made in the same minutes (run back to back, the second process of
    # a pair often runs a few percent slower, docs/performance.md).
    groups = []
    for cfg in configs:
        model = cfg[0].split()[0]
        if groups and groups[-1][0] == model:
            groups[-1][1].append(cfg)
        else:
            groups.append((model, [cfg]))
    res = {}
    try:
        for model, cfgs in groups:
            runs = {c[0]: ([], [], [], [], []) for c in cfgs}  # ours, theirs, RSS both, GFLOPS
            probes = []
            for r in range(a.repeats):
                probes.append(cores_probe(cores))
                shift = r % len(cfgs)
                for cfg in cfgs[shift:] + cfgs[:shift]:
                    ours, theirs, ours_rss, their_rss, gflops = runs[cfg[0]]
                    order = ["ours", "torch"] if r % 2 == 0 else ["torch", "ours"]
                    for who in order:
                        if who == "ours":
                            out = run(ours_cmd(mlp, cfg), env=ours_env())
                            ours.append(last_value(out, "train_s"))
                            ours_rss.append(last_value(out, "peak_rss_mb"))
                            gflops.append(last_value(out, "gflops"))
                        elif py:
                            out = run(torch_cmd(py, script, cfg), env=torch_env(cfg[5], coretype))
                            theirs.append(last_value(out, "train_s"))
                            their_rss.append(last_value(out, "peak_rss_mb"))
            probes.append(cores_probe(cores))
            got = [v for v in probes if v]
            for cfg in cfgs:
                ours, theirs, ours_rss, their_rss, gflops = runs[cfg[0]]
                res[cfg[0]] = (med(ours), med(theirs), max(ours_rss),
                               max(their_rss) if their_rss else None, med(gflops), ours, probes)
                print("  %-15s ours %s  torch %s  cores %s%s" % (
                    cfg[0], " ".join("%.3f" % v for v in ours),
                    " ".join("%.3f" % v for v in theirs),
                    " ".join("-" if v is None else "%.2f" % v[0] for v in probes),
                    ", one CPU alone %.0f-%.0f GFLOPS" % (min(v[1] for v in got),
                                                          max(v[1] for v in got))
                    if got else ""), flush=True)
    finally:
        if script:
            os.unlink(script)

    print("1-min load average after: %.2f (it counts these runs, up to 2; well above that, other "
          "processes shared the cores and the 2-thread rows mean little)" % os.getloadavg()[0])
    print()
    print("| config | ours s | torch s | ratio | target | ours GFLOPS | ours RSS MB | torch RSS MB |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for cfg in configs:
        o, t, orss, trss, gf = res[cfg[0]][:5]
        ratio = o / t if py else float("nan")
        tgt = cfg[6]
        verdict = "-"
        if tgt is not None and py:
            verdict = "<= %.2f %s" % (tgt, "met" if ratio <= tgt else "MISSED")
        print("| %s | %.3f | %s | %s | %s | %.1f | %.1f | %s |" % (
            cfg[0], o, "%.3f" % t if py else "-", "%.3f" % ratio if py else "-", verdict, gf, orss,
            "%.1f" % trss if trss else "-"))

    print()
    for model, tgt in SCALING.items():
        one, two = res.get(model + " 1 thread"), res.get(model + " 2 threads")
        if not one or not two:
            continue
        line = "%s: 1 -> 2 threads speedup ours %.2fx" % (model, one[0] / two[0])
        if py:
            line += ", torch %.2fx" % (one[1] / two[1])
        if tgt:
            line += " (target >= %.2fx: %s)" % (tgt, "met" if one[0] / two[0] >= tgt else "MISSED")
        else:
            line += " (target: not slower: %s)" % ("met" if two[0] <= one[0] * 1.02 else "MISSED")
        line += "; " + two_cores_note(one, two, tgt)
        print(line)
        before = cores_probe(cores)
        alt = alternate_speedup(mlp, model)
        after = cores_probe(cores)
        if alt:
            # as for whole runs: a core taken away during the blocks makes
            # the figure one core's, whatever the code does
            pair = [v[0] for v in (before, after) if v]
            shared = any(v < TWO_CORES for v in pair)
            verdict = ""
            if tgt and shared:
                verdict = " (target >= %.2fx: not judged, see the probes)" % tgt
            elif tgt:
                verdict = " (target >= %.2fx: %s)" % (tgt, "met" if alt[0] >= tgt else "MISSED")
            print("  %s in one process, 1 and 2 threads alternating every 4 steps: %.2fx "
                  "(median of %d neighbouring pairs, middle half %.2f-%.2f)%s; %s" % (
                      model, alt[0], alt[3], alt[1], alt[2], verdict,
                      "cores before and after %s%s" % (
                          " ".join("%.2f" % v for v in pair) if pair else "not probed",
                          ": the two CPUs shared a core, the figure says little about the code"
                          if shared else "")))
    seed = res.get("seed 1 thread")
    if seed:
        # Two threads on one core (a container's CPU quota, taskset, a core
        # another process keeps busy): the worker must not take the core
        # from the caller, so the time stays about that of one thread.
        cpu = {min(os.sched_getaffinity(0))}
        one, two = [], []
        for r in range(a.repeats):
            for threads in ([1, 2] if r % 2 == 0 else [2, 1]):
                cfg = CONFIGS[0][:5] + (threads,) + CONFIGS[0][6:]
                t = last_value(run(ours_cmd(mlp, cfg), env=ours_env(), cpus=cpu), "train_s")
                (one if threads == 1 else two).append(t)
        print("seed, 2 threads sharing one core (CPU %d) / 1 thread there: %.3f / %.3f s = %.2fx "
              "(target <= 1.15x: %s)" % (min(cpu), med(two), med(one), med(two) / med(one),
                                         "met" if med(two) <= 1.15 * med(one) else "MISSED"))
        print("seed peak RSS: ours %.1f MB (target <= 30: %s)%s" % (
            seed[2], "met" if seed[2] <= 30 else "MISSED",
            ", torch %.1f MB" % seed[3] if seed[3] else ""))

    if os.path.exists(chain):
        # alternating: subnormals flushed (the default, as nn_fit trains) and
        # kept (the chain's gradient then sits at the smallest subnormal,
        # which some CPUs compute in microcode: printed, not the target)
        runs, kept = [], []
        for _ in range(a.repeats):
            runs.append(last_value(run([chain]), "ns_per_op"))
            kept.append(last_value(run([chain, "--keep-denormals"]), "ns_per_op"))
        ns = med(runs)
        print("scalar_chain: %.1f ns per op forward + backward, median of %d runs (%s) "
              "(target <= 60: %s); with subnormals kept %.1f (%s)" % (
                  ns, len(runs), " ".join("%.1f" % v for v in runs),
                  "met" if ns <= 60 else "MISSED", med(kept),
                  " ".join("%.1f" % v for v in kept)))

    if a.builtin_mlp and os.path.exists(a.builtin_mlp) and seed:
        cfg = CONFIGS[0]
        b, o = [], []
        for r in range(a.repeats):
            for who in (["builtin", "blas"] if r % 2 == 0 else ["blas", "builtin"]):
                if who == "builtin":
                    b.append(last_value(run(ours_cmd(a.builtin_mlp, cfg), env=ours_env()), "train_s"))
                else:
                    o.append(last_value(run(ours_cmd(mlp, cfg), env=ours_env()), "train_s"))
        print("seed model, -Dblas=disabled build / default (OpenBLAS) build: %.3f / %.3f s = %.2fx"
              % (med(b), med(o), med(b) / med(o)))
    elif not a.builtin_mlp:
        print("built-in GEMM build: not given (--builtin-mlp PATH to a -Dblas=disabled bench/mlp)")
    if os.path.exists(ops):
        g = gemm_products(ops)
        if g:
            tb, to, rows = g
            print("seed step's %d matrix products (bench/ops, 1 thread): built-in %.1f us, "
                  "OpenBLAS %.1f us, built-in / OpenBLAS %.2fx (target <= 2: %s)"
                  % (rows, tb * 1e6, to * 1e6, tb / to, "met" if tb / to <= 2 else "MISSED"))


if __name__ == "__main__":
    main()
