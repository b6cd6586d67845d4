#!/usr/bin/python3
"""Writes tests/embbag_fixtures.h: the PyTorch reference values of
tests/test_nn_embbag.c (F.embedding_bag and F.embedding with max_norm,
norm_type and scale_grad_by_freq).

Usage (from the repository root, with Debian's python3-torch):

    /usr/bin/python3 tools/gen_embbag_fixtures.py > tests/embbag_fixtures.h

Each case gives the weight [num, dim], the input (AD_I32; 1-D with offsets
or 2-D), per_sample_weights or none, the options and a cotangent for the
output. It runs in float64 and in float32 (the float32 inputs are the
float64 ones rounded) and gives {output, dL/dweight, dL/dper_sample_weights
(when given), the weight after the forward (when max_norm renormalises it)}
with L = sum(cotangent * output). The weights hold exact ties (max mode's
first-wins rule), NaN, rows above and below max_norm and a padding row;
random ones come from torch.manual_seed(11). Deterministic: rerunning
prints the same text. The header also holds the table of cases
(EMBBAG_CASES) that the test walks; its struct is the test's embbag_case.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_fixture import c_double_array  # noqa: E402

NAN = math.nan
INF = math.inf
torch.manual_seed(11)


def rnd(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float64) * scale).tolist()


def flat(v):
    if isinstance(v, list):
        return [x for e in v for x in flat(e)]
    return [v]


# weights
W_RAND = rnd(6, 3)                                  # [6, 3]
W_TIES = [[1.0, 5.0, -2.0], [3.0, 2.0, -2.0], [3.0, 7.0, 0.5],
          [0.0, 0.0, 0.0], [-1.0, 5.0, 0.5], [3.0, -4.0, -2.0]]
W_NAN = [[NAN, 1.0, 0.0], [2.0, 3.0, NAN], [0.5, -1.0, 4.0], [1.0, 1.0, 1.0]]
# rows of norm 5, 0.5, 10, 1.5, 0.1, 3 (2-norm); scaled for the others
W_NORM = [[3.0, 4.0, 0.0], [0.3, 0.0, 0.4], [6.0, 0.0, 8.0],
          [0.9, 1.2, 0.0], [0.0, 0.06, 0.08], [1.0, 2.0, 2.0]]

IN7 = [1, 2, 0, 3, 3, 2, 1]
OFF_EMPTY = [0, 3, 3, 5]


# (name, kind 'bag'/'emb', weight, input (nested list), offsets or None,
#  per_sample_weights or None, options)
CASES = [
    ("sum_offsets_empty_bag", "bag", W_RAND, IN7, OFF_EMPTY, None, dict(mode="sum")),
    ("mean_offsets_padding", "bag", W_RAND, IN7, OFF_EMPTY, None, dict(mode="mean", padding_idx=2)),
    ("mean_all_padding_bag", "bag", W_RAND, [3, 3, 1, 2], [0, 2], None,
     dict(mode="mean", padding_idx=3)),
    ("max_ties_first_wins", "bag", W_TIES, [1, 2, 0, 3, 3, 2, 1, 5, 4], [0, 3, 5, 5, 7], None,
     dict(mode="max")),
    ("max_padding_neg", "bag", W_TIES, [[1, 5, 4], [5, 5, 5], [2, 0, 5]], None, None,
     dict(mode="max", padding_idx=-1)),
    ("max_nan", "bag", W_NAN, [0, 1, 1, 0, 2, 3, 1], [0, 2, 4], None, dict(mode="max")),
    ("sum_psw_padding", "bag", W_RAND, IN7, [0, 3, 5], [0.5, -1.0, 2.0, 0.25, 1.5, -0.75, 3.0],
     dict(mode="sum", padding_idx=2)),
    ("sum_psw_2d", "bag", W_RAND, [[0, 4, 4], [5, 1, 0]], None, rnd(2, 3),
     dict(mode="sum")),
    ("mean_2d", "bag", W_RAND, [[0, 1, 5, 5], [2, 3, 3, 3], [4, 4, 0, 1]], None, None,
     dict(mode="mean")),
    ("sum_include_last_offset", "bag", W_RAND, IN7, [0, 2, 2, 6, 7], None,
     dict(mode="sum", include_last_offset=True)),
    ("mean_freq", "bag", W_RAND, IN7 + [5, 1], [0, 3, 5], None,
     dict(mode="mean", scale_grad_by_freq=True)),
    ("sum_freq_psw_padding", "bag", W_RAND, IN7 + [5, 1], [0, 4, 8], rnd(9),
     dict(mode="sum", scale_grad_by_freq=True, padding_idx=1)),
    ("mean_max_norm", "bag", W_NORM, [0, 1, 0, 2, 4, 2, 3], [0, 3, 5], None,
     dict(mode="mean", max_norm=1.0)),
    ("max_max_norm_inf", "bag", W_NORM, [[0, 1, 2], [5, 3, 0]], None, None,
     dict(mode="max", max_norm=1.5, norm_type=INF)),
    ("sum_max_norm_p1_padding", "bag", W_NORM, [5, 2, 1, 4, 5, 0], [0, 2, 4], None,
     dict(mode="sum", max_norm=2.0, norm_type=1.0, padding_idx=5)),
    ("mean_max_norm_p3", "bag", W_RAND, [0, 1, 2, 3, 4, 5], [0, 1, 3], None,
     dict(mode="mean", max_norm=0.7, norm_type=3.0)),
    ("emb_freq_padding", "emb", W_RAND, [[1, 2, 2, 0], [4, 2, 1, 1]], None, None,
     dict(padding_idx=1, scale_grad_by_freq=True)),
    ("emb_max_norm", "emb", W_NORM, [[0, 1, 0], [2, 4, 5]], None, None, dict(max_norm=1.0)),
    ("emb_max_norm_inf_freq", "emb", W_NORM, [2, 0, 2, 3, 2], None, None,
     dict(max_norm=2.0, norm_type=INF, scale_grad_by_freq=True)),
    ("emb_max_norm_p1_padding", "emb", W_NORM, [[5, 5], [0, 3]], None, None,
     dict(max_norm=2.5, norm_type=1.0, padding_idx=0)),
]
MODES = {"mean": 0, "sum": 1, "max": 2}


def run(case, dtype):
    name, kind, wv, inp, off, psw, o = case
    w = torch.tensor(wv, dtype=torch.float64).to(dtype).requires_grad_(True)
    idx = torch.tensor(inp, dtype=torch.long)
    p = None
    if psw is not None:
        p = torch.tensor(psw, dtype=torch.float64).reshape(idx.shape).to(dtype)
        p.requires_grad_(True)
    if kind == "bag" and o.get("scale_grad_by_freq"):
        y = bag_by_embedding(idx, w, off, p, o)
        with torch.no_grad():
            y_torch = F.embedding_bag(idx, w, None if off is None else torch.tensor(off),
                                      mode=o.get("mode", "mean"), per_sample_weights=p,
                                      padding_idx=o.get("padding_idx"))
        assert torch.allclose(y, y_torch, rtol=1e-6, atol=1e-6), name
    elif kind == "bag":
        y = F.embedding_bag(idx, w, None if off is None else torch.tensor(off),
                            max_norm=o.get("max_norm"), norm_type=o.get("norm_type", 2.0),
                            scale_grad_by_freq=o.get("scale_grad_by_freq", False),
                            mode=o.get("mode", "mean"), per_sample_weights=p,
                            include_last_offset=o.get("include_last_offset", False),
                            padding_idx=o.get("padding_idx"))
    else:
        y = F.embedding(idx, w, padding_idx=o.get("padding_idx"), max_norm=o.get("max_norm"),
                        norm_type=o.get("norm_type", 2.0),
                        scale_grad_by_freq=o.get("scale_grad_by_freq", False))
    g = torch.Generator().manual_seed(hash_name(name))
    seed = (torch.rand(y.shape, generator=g, dtype=torch.float64) * 2 - 1)
    (y * seed.to(dtype)).sum().backward()
    vals = flat(y.tolist()) + flat(w.grad.tolist())
    if p is not None:
        vals += flat(p.grad.tolist())
    if o.get("max_norm") is not None:
        vals += flat(w.detach().tolist())
    return list(y.shape), flat(seed.tolist()), vals


def bag_by_embedding(idx, w, off, p, o):
    """EmbeddingBag (sum or mean) with scale_grad_by_freq as PyTorch
    documents it, each row's gradient over its own count in the indices,
    composed of F.embedding (whose scale_grad_by_freq does that) and
    index_add. PyTorch 1.13's own CPU backward of embedding_bag divides by
    the count of another row (counts[indices[i]], i the number of the row's
    group among the sorted indices, not its start), so it is not the
    reference here (docs/porting-from-pytorch.md)."""
    flat_idx = idx.reshape(-1)
    n = flat_idx.numel()
    if off is None:
        bag = torch.arange(n) // idx.shape[1]
        nb = idx.shape[0]
    else:
        bag = torch.zeros(n, dtype=torch.long)
        for b in range(1, len(off)):
            bag[off[b]:] += 1
        nb = len(off)
    e = F.embedding(flat_idx, w, scale_grad_by_freq=True)
    keep = torch.ones(n, 1, dtype=w.dtype)
    pad = o.get("padding_idx")
    if pad is not None:
        pad = pad % w.shape[0]
        keep[flat_idx == pad] = 0
    e = e * keep
    if p is not None:
        e = e * p.reshape(-1, 1)
    y = torch.zeros(nb, w.shape[1], dtype=w.dtype).index_add(0, bag, e)
    if o.get("mode", "mean") == "mean":
        cnt = torch.zeros(nb, dtype=w.dtype).index_add(0, bag, keep.reshape(-1))
        y = y / cnt.clamp(min=1).reshape(-1, 1)
    return y


def hash_name(s):
    h = 0
    for ch in s.encode():
        h = (h * 131 + ch) % 1000003
    return h


def main():
    out = [f"/* generated by tools/gen_embbag_fixtures.py (PyTorch {torch.__version__}); "
           "do not edit */", "/* clang-format off */"]
    rows = []
    for i, case in enumerate(CASES):
        name, kind, wv, inp, off, psw, o = case
        shape, seed, v64 = run(case, torch.float64)
        _, _, v32 = run(case, torch.float32)
        out.append(c_double_array(f"EB_{i}_W", flat(wv)))
        out.append(f"static const int32_t EB_{i}_IN[{len(flat(inp))}] = "
                   "{" + ", ".join(str(x) for x in flat(inp)) + "};")
        if off is not None:
            out.append(f"static const int64_t EB_{i}_OFF[{len(off)}] = "
                       "{" + ", ".join(str(x) for x in off) + "};")
        if psw is not None:
            out.append(c_double_array(f"EB_{i}_PSW", flat(psw)))
        out.append(c_double_array(f"EB_{i}_SEED", seed))
        out.append(c_double_array(f"EB_{i}_F64", v64))
        out.append(c_double_array(f"EB_{i}_F32", v32))
        it = torch.tensor(inp)
        ishape = list(it.shape) + [0] * (2 - it.dim())
        rows.append(
            f'    {{"{name}", {1 if kind == "emb" else 0}, {MODES[o.get("mode", "mean")]}, '
            f'{"true" if "padding_idx" in o else "false"}, {o.get("padding_idx", 0)}, '
            f'{"true" if o.get("include_last_offset") else "false"}, '
            f'{c_num(o.get("max_norm", 0.0))}, {c_num(o.get("norm_type", 0.0))}, '
            f'{"true" if o.get("scale_grad_by_freq") else "false"}, '
            f'{len(wv)}, {len(wv[0])}, EB_{i}_W, {it.dim()}, {{{ishape[0]}, {ishape[1]}}}, '
            f'EB_{i}_IN, {0 if off is None else len(off)}, {"NULL" if off is None else f"EB_{i}_OFF"}, '
            f'{"NULL" if psw is None else f"EB_{i}_PSW"}, {len(shape)}, '
            f'{{{", ".join(str(x) for x in shape + [0] * (3 - len(shape)))}}}, '
            f'EB_{i}_SEED, EB_{i}_F64, EB_{i}_F32}},')
    out.append("#define EMBBAG_CASES \\")
    out.append(" \\\n".join(rows).rstrip(","))
    out.append("/* clang-format on */")
    print("\n".join(out))


def c_num(v):
    if math.isinf(v):
        return "INFINITY"
    return repr(float(v))


if __name__ == "__main__":
    main()
