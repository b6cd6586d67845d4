#!/usr/bin/env python3
"""opscan.py: bench/opscan's op cases beside PyTorch's, to find cliffs.

Runs build/bench/opscan (every op family's forward, and backward from a
seed of ones, on one float32 case each: see bench/opscan.c) and the same cases in PyTorch,
in turn, ROUNDS times, each run printing the least of REPS timings per case;
then prints, per case, the least of the rounds for each side and the ratio
ours / torch of the forward and of the backward, and marks "cliff" where a
ratio exceeds --cliff (default 2). --threads T on both sides (default 1:
torch.set_num_threads(T), OPENBLAS_NUM_THREADS=T; OpenBLAS's core type
forced where it misdetects the CPU, as in compare.py): with 2, an op that
runs on one thread where PyTorch's runs on two shows.

  bench/opscan.py [--build DIR] [--rounds 3] [--reps 15] [--filter SUBSTR]
                  [--threads 1] [--dtype f32|f64] [--python EXE] [--cliff 2]

--dtype f64 runs both sides in float64 (torch.set_default_dtype; the cast
case then casts to float32 and is named cast32).

The torch side is this file run by an interpreter with torch (this one or
/usr/bin/python3) with --torch-side. Exit status 0 whatever the ratios: a
measurement, not a test.
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def torch_cases(f64=False):
    """The cases of bench/opscan.c, the same names, shapes and inputs'
    ranges (other random values)."""
    import torch
    import torch.nn.functional as F

    def leaf(*shape, lo=None, hi=None):
        t = torch.randn(*shape) if lo is None else torch.rand(*shape) * (hi - lo) + lo
        return t.requires_grad_()

    a, b = leaf(256, 1024), leaf(256, 1024)
    p, q = leaf(256, 1024, lo=0.5, hi=2), leaf(256, 1024, lo=-2, hi=2)
    sq = leaf(1024, 1024)
    bias, gamma, beta = leaf(1024), leaf(1024, lo=0.5, hi=1.5), leaf(1024)
    idx = torch.tensor([k * 37 % 1024 for k in range(256)])
    emb = leaf(1000, 256)
    eidx = torch.tensor([k * 7919 % 1000 for k in range(2048)]).view(32, 64)
    logits = leaf(256, 1000)
    labels = torch.tensor([k * 13 % 1000 for k in range(256)])
    prob, target = leaf(256, 1024, lo=0.01, hi=0.99), torch.rand(256, 1024)
    img, w = leaf(32, 64, 32, 32), leaf(64, 64, 3, 3, lo=-0.1, hi=0.1)
    ch, col = leaf(64, lo=0.5, hi=1.5), leaf(256, 1)
    bq, bk = leaf(16, 64, 256), leaf(16, 256, 64)
    gidx = labels.view(256, 1)
    img2, plane, gate = leaf(32, 64, 32, 32), leaf(32, 1, 32, 32), leaf(32, 64, 1, 1, lo=0, hi=1)
    sidx = torch.tensor([k * 37 % 1024 for k in range(256 * 64)]).view(256, 64)
    src = leaf(256, 64)
    row, pcol = leaf(1, 1024), leaf(256, 1, lo=0.5, hi=2)
    px, py = leaf(64, 1, 128), leaf(1, 64, 128)
    sh4, sh16, lg2 = leaf(65536, 4), leaf(16384, 16), leaf(65536, 2)
    labels2 = torch.tensor([k * 7 % 2 for k in range(65536)])
    rows2k = leaf(2048, 256)
    idx2k = torch.tensor([k * 7919 % 1000 for k in range(2048)])
    zeros1k = torch.zeros(1000, 256)
    t3, tall, w16, vec = leaf(64, 256, 64), leaf(65536, 16), leaf(16, 16), leaf(1024)
    long2, bk2 = leaf(4, 65536), leaf(256, 64)
    gidx0 = torch.tensor([k * 37 % 256 for k in range(16 * 1024)]).view(16, 1024)
    pieces = [leaf(256, 64) for _ in range(16)]
    e3 = leaf(64, 1, 64)
    aq, ak, av = leaf(8, 8, 128, 64), leaf(8, 8, 128, 64), leaf(8, 8, 128, 64)

    lgv, labv = leaf(64, 32000), torch.tensor([k * 7919 % 32000 for k in range(64)])
    idx3 = torch.tensor([k * 37 % 256 for k in range(64)])
    gidx3 = torch.tensor([k * 37 % 64 for k in range(64 * 256 * 8)]).view(64, 256, 8)
    b4a, b4b = leaf(16, 1, 64, 256), leaf(1, 8, 256, 64)
    sh4b, x64 = leaf(65536, 4), leaf(4096, 64)
    c4, r4, c16 = leaf(65536, 1), leaf(4), leaf(16384, 1)
    t8, m8, t44, k4 = leaf(64, 256, 8), leaf(64, 1, 8), leaf(16384, 4, 4), leaf(1, 4, 1)

    def sdpa():  # torch 1.13 has no fused attention: its math path
        return torch.softmax(aq @ ak.transpose(-2, -1) * (64 ** -0.5), -1) @ av
    leaves = [a, b, p, q, sq, bias, gamma, beta, emb, logits, prob, img, w, ch, col, bq, bk, img2,
              plane, gate, src, row, pcol, px, py, sh4, sh16, lg2, rows2k, t3, tall, w16, vec,
              long2, bk2, e3, aq, ak, av, lgv, b4a, b4b, sh4b, x64, c4, r4, c16, t8, m8, t44,
              k4] + pieces
    cases = [
        ("div", lambda: a / p), ("pow", lambda: torch.pow(p, q)),
        ("maximum", lambda: torch.maximum(a, b)), ("where_lt", lambda: torch.where(a < b, a, b)),
        ("sqrt", lambda: torch.sqrt(p)), ("abs", lambda: torch.abs(a)),
        ("leaky_relu", lambda: F.leaky_relu(a, 0.01)), ("gelu", lambda: F.gelu(a)),
        ("clamp", lambda: torch.clamp(a, -1.0, 1.0)), ("hardtanh", lambda: F.hardtanh(a)),
        ("sign", lambda: torch.sign(a)),
        ("relu", lambda: F.relu(a)), ("tanh", lambda: torch.tanh(a)),
        ("sigmoid", lambda: torch.sigmoid(a)), ("exp", lambda: torch.exp(a)),
        ("log", lambda: torch.log(p)), ("sin", lambda: torch.sin(a)),
        ("atan", lambda: torch.atan(a)), ("softplus", lambda: F.softplus(a)),
        ("erf", lambda: torch.erf(a)), ("square", lambda: torch.pow(a, 2.0)),
        ("mul", lambda: a * b), ("bias_add", lambda: a + bias),
        ("cast32", lambda: a.float()) if f64 else ("cast64", lambda: a.double()),
        ("transpose", lambda: sq.t().contiguous()),
        ("narrow", lambda: a.narrow(1, 100, 800)), ("pad", lambda: F.pad(a, (3, 5))),
        ("concat", lambda: torch.cat([a, b], 1)), ("index_select", lambda: sq.index_select(0, idx)),
        ("embedding", lambda: F.embedding(eidx, emb)), ("sum0", lambda: a.sum(0)),
        ("sum1", lambda: a.sum(1)), ("max0", lambda: a.amax(0)), ("max1", lambda: a.amax(1)),
        ("logsumexp1", lambda: torch.logsumexp(a, 1)), ("softmax0", lambda: torch.softmax(a, 0)),
        ("softmax1", lambda: torch.softmax(a, 1)),
        ("log_softmax1", lambda: torch.log_softmax(a, 1)),
        ("cross_entropy", lambda: F.cross_entropy(logits, labels)),
        ("bce", lambda: F.binary_cross_entropy(prob, target)),
        ("max_pool", lambda: F.max_pool2d(img, 2)), ("avg_pool", lambda: F.avg_pool2d(img, 2)),
        ("layer_norm", lambda: F.layer_norm(a, (1024,), gamma, beta, 1e-5)),
        ("conv3x3", lambda: F.conv2d(img, w, padding=1)), ("matmul", lambda: a @ sq),
        ("mul_channel", lambda: img * ch.view(1, 64, 1, 1)), ("add_col", lambda: a + col),
        ("permute_nhwc", lambda: img.permute(0, 2, 3, 1).contiguous()),
        ("bmm", lambda: torch.matmul(bq, bk)), ("gather1", lambda: torch.gather(logits, 1, gidx)),
        ("cumsum1", lambda: torch.cumsum(a, 1)), ("cumsum0", lambda: torch.cumsum(a, 0)),
        ("var1", lambda: torch.var(a, 1)), ("mean_hw", lambda: img.mean((2, 3))),
        ("flip1", lambda: torch.flip(a, (1,))),
        ("sum_nhw", lambda: img.sum((0, 2, 3))),
        ("var_nhw", lambda: torch.var(img, (0, 2, 3), unbiased=False)),
        ("softmax_ch", lambda: torch.softmax(img, 1)), ("cat_ch", lambda: torch.cat([img, img2], 1)),
        ("add_plane", lambda: img + plane), ("max_w", lambda: img.amax(-1)),
        ("max_hw", lambda: img.amax((2, 3))),
        ("pad_hw", lambda: F.pad(img, (1, 1, 1, 1))), ("mul_gate", lambda: img * gate),
        ("sum_ch", lambda: img.sum(1)),
        ("where_mask", lambda: torch.where(plane > 0, img, torch.zeros(()))),
        ("bmm_tb", lambda: torch.matmul(bq, bq.transpose(1, 2))),
        ("min1", lambda: a.amin(1)), ("isel1", lambda: a.index_select(1, idx)),
        ("scatter1", lambda: a.scatter_add(1, sidx, src)), ("stack0", lambda: torch.stack([a, b])),
        ("cos1", lambda: F.cosine_similarity(a, b, 1, 1e-8)),
        ("outer", lambda: col * row), ("pairwise", lambda: px - py),
        ("div_col", lambda: a / pcol), ("expand", lambda: col.expand(256, 1024).contiguous()),
        ("mean_all", lambda: a.mean()), ("softmax_short", lambda: torch.softmax(sh4, 1)),
        ("sum_short", lambda: sh4.sum(1)), ("ln16", lambda: F.layer_norm(sh16, (16,), eps=1e-5)),
        ("ce2", lambda: F.cross_entropy(lg2, labels2)), ("pow3", lambda: torch.pow(a, 3.0)),
        ("rsqrt", lambda: torch.pow(p, -0.5)), ("minimum", lambda: torch.minimum(a, b)),
        ("log_softmax0", lambda: torch.log_softmax(a, 0)),
        ("index_add", lambda: zeros1k.index_add(0, idx2k, rows2k)),
        ("affine", lambda: -(a * 2 + 1)),
        ("sum_mid", lambda: t3.sum(1)), ("mean02", lambda: t3.mean((0, 2))),
        ("max_mid", lambda: t3.amax(1)), ("std1", lambda: torch.std(a, 1)),
        ("var0", lambda: torch.var(a, 0)), ("logsumexp0", lambda: torch.logsumexp(a, 0)),
        ("cumsum_mid", lambda: torch.cumsum(t3, 1)),
        ("permute3", lambda: t3.permute(2, 0, 1).contiguous()),
        ("transpose_short", lambda: sh4.t().contiguous()),
        ("softmax_long", lambda: torch.softmax(long2, 1)), ("matmul_tall", lambda: tall @ w16),
        ("matmul_tn", lambda: a.t() @ b), ("matvec", lambda: a @ vec),
        ("bmm_bcast", lambda: torch.matmul(bq, bk2)),
        ("gather0", lambda: torch.gather(a, 0, gidx0)),
        ("narrow_short", lambda: sh4.narrow(1, 1, 2)), ("concat16", lambda: torch.cat(pieces, 1)),
        ("expand_mid", lambda: e3.expand(64, 256, 64).contiguous()), ("sdpa", sdpa),
        ("max_all", lambda: a.max()), ("div_scalar", lambda: a / 3.0), ("sub_row", lambda: row - a),
        ("log_softmax_short", lambda: torch.log_softmax(sh4, 1)),
        ("logsumexp_short", lambda: torch.logsumexp(sh4, 1)),
        ("ce_vocab", lambda: F.cross_entropy(lgv, labv)),
        ("cumsum_short", lambda: torch.cumsum(sh4, 1)), ("std_all", lambda: a.std()),
        ("pow_col", lambda: torch.pow(p, pcol)), ("maximum_row", lambda: torch.maximum(a, row)),
        ("isel_3d", lambda: t3.index_select(1, idx3)), ("gather_3d", lambda: torch.gather(t3, 2, gidx3)),
        ("bmm_bcast2", lambda: torch.matmul(b4a, b4b)), ("var_ch", lambda: torch.var(img, 1)),
        ("softmax_mid", lambda: torch.softmax(t3, 1)),
        ("stack_last", lambda: torch.stack([a, b], 2)),
        ("concat_short", lambda: torch.cat([sh4, sh4b], 1)),
        ("flip_hw", lambda: torch.flip(img, (2, 3))), ("flip0", lambda: torch.flip(a, (0,))),
        ("sum_chw", lambda: img.sum((1, 2, 3))), ("ln64", lambda: F.layer_norm(x64, (64,), eps=1e-5)),
        ("softmax0_3d", lambda: torch.softmax(t3, 0)),
        ("sub_col4", lambda: sh4 - c4), ("mul_row4", lambda: sh4 * r4),
        ("add_col16", lambda: sh16 + c16), ("maximum_col4", lambda: torch.maximum(sh4, c4)),
        ("where_col4", lambda: torch.where(c4 > 0, sh4, sh4b)),
        ("add_mid8", lambda: t8 + m8), ("mul_mid4", lambda: t44 * k4),
        ("sum_mid4", lambda: t44.sum(1)), ("max_mid4", lambda: t44.amax(1)),
        ("softmax_mid4", lambda: torch.softmax(t44, 1)), ("cumsum_mid4", lambda: torch.cumsum(t44, 1)),
        ("var_mid8", lambda: torch.var(t8, 1)),
        ("argmax1", lambda: a.argmax(1)), ("argmax0", lambda: a.argmax(0)),
        ("argmax_short", lambda: sh4.argmax(1)), ("eq", lambda: a == b),
    ]
    return cases, leaves


def torch_side(reps, filt, threads, dtype="f32", tool="opscan", cases_fn=torch_cases):
    """Prints the torch timings in bench/TOOL's format (cases_fn(f64)
    gives the cases and the leaves whose gradients each run releases)."""
    import time
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    if dtype == "f64":
        torch.set_default_dtype(torch.float64)
    cases, leaves = cases_fn(dtype == "f64")
    print("# %s (PyTorch %s): %s, %d thread(s), least of %d runs, microseconds"
          % (tool, torch.__version__, "float64" if dtype == "f64" else "float32", threads, reps))
    for name, fn in cases:
        if filt and filt not in name:
            continue
        fwd = bwd = float("inf")
        for _ in range(reps):
            for t in leaves:
                t.grad = None
            t0 = time.perf_counter()
            y = fn()
            t1 = time.perf_counter()
            if y.requires_grad:  # else an op without a gradient: bwd_us 0
                y.backward(torch.ones_like(y))
            t2 = time.perf_counter()
            fwd, bwd = min(fwd, t1 - t0), min(bwd, t2 - t1)
        print("%s/%s fwd_us %.1f bwd_us %.1f" % (tool, name, fwd * 1e6, bwd * 1e6), flush=True)


def ratio(a, b):
    """a / b, or NaN where either is not a positive time (a case that
    printed 0.0, an op without a gradient's backward, or one that did not
    run on one side): a table row, never a crash."""
    return a / b if a > 0 and b > 0 else float("nan")


def parse(out, tool="opscan"):
    """{name: (fwd_us, bwd_us)} from TOOL's lines."""
    res = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 5 and f[0].startswith(tool + "/"):
            res[f[0][len(tool) + 1:]] = (float(f[2]), float(f[4]))
    return res


def main(tool="opscan", script=__file__, doc=__doc__, cases_fn=torch_cases, dtypes=("f32", "f64"),
         side=torch_side, cols=("fwd", "bwd")):
    """The driver of opscan.py, layerscan.py and optscan.py: runs
    build/bench/TOOL and SCRIPT --torch-side (side(reps, filter, threads,
    dtype, tool, cases_fn) prints its lines; torch_side times cases_fn's
    forward and backward) in turn and prints the table, whose two time
    columns cols names."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--filter")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", choices=list(dtypes), default="f32")
    ap.add_argument("--python", help="interpreter with torch (default: this one, /usr/bin/python3)")
    ap.add_argument("--cliff", type=float, default=2.0)
    ap.add_argument("--torch-side", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_side:
        side(args.reps, args.filter, args.threads, args.dtype, tool, cases_fn)
        return 0
    sys.path.insert(0, HERE)
    import compare  # its PyTorch-at-its-best settings
    exe = os.path.join(args.build, "bench", tool)
    if not os.path.exists(exe):
        sys.exit("%s.py: %s is missing: build first (ninja -C %s)" % (tool, exe, args.build))
    py, ver = compare.find_torch_python(args.python)
    coretype = compare.torch_coretype(compare.cpu_isa(), compare.openblas_core())
    print("# ours: %s; PyTorch: %s; OPENBLAS_CORETYPE for PyTorch: %s" %
          (exe, ver or "not found", coretype or "(its own choice)"))
    common = ["--reps", str(args.reps), "--threads", str(args.threads)]
    common += ["--dtype", args.dtype] if len(dtypes) > 1 else []
    common += ["--filter", args.filter] if args.filter else []
    ours, theirs = {}, {}
    for _ in range(args.rounds):
        for k, v in parse(compare.run([exe] + common, env=compare.ours_env()), tool).items():
            ours[k] = tuple(map(min, zip(ours.get(k, v), v)))
        if py:
            out = compare.run([py, os.path.abspath(script), "--torch-side"] + common,
                              env=compare.torch_env(args.threads, coretype))
            for k, v in parse(out, tool).items():
                theirs[k] = tuple(map(min, zip(theirs.get(k, v), v)))
    width = max([14] + [len(k) for k in ours])
    print("%-*s %10s %10s %6s %10s %10s %6s" %
          (width, "case", "ours " + cols[0], "torch " + cols[0], "ratio", "ours " + cols[1],
           "torch " + cols[1], "ratio"))
    cliffs = []
    for name, (of, ob) in ours.items():
        tf, tb = theirs.get(name, (float("nan"), float("nan")))
        rf, rb = ratio(of, tf), ratio(ob, tb)
        mark = "  cliff" if rf > args.cliff or rb > args.cliff else ""
        if mark:
            cliffs.append(name)
        print("%-*s %10.1f %10.1f %6.2f %10.1f %10.1f %6.2f%s" %
              (width, name, of, tf, rf, ob, tb, rb, mark))
    print("cliffs (ratio > %g): %s" % (args.cliff, " ".join(cliffs) if cliffs else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
