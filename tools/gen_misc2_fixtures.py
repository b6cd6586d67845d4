#!/usr/bin/python3
"""Writes tests/misc2_fixtures.h: the PyTorch reference values of
tests/test_nn_misc2.c (F.unfold and F.fold; F.bilinear; F.glu;
F.cosine_similarity and F.pairwise_distance; the shrinks, threshold,
softmin, softmax2d; F.local_response_norm; F.rrelu in eval mode).

Usage (from the repository root, with Debian's python3-torch):

    /usr/bin/python3 tools/gen_misc2_fixtures.py > tests/misc2_fixtures.h

Each case of FOLD_CASES names unfold or fold, the input's shape, fold's
output_size and the options (kernel_size, dilation, padding, stride as
pairs, PyTorch's defaults where the case gives none). The input x and a
cotangent g (the output's shape) are random (torch.manual_seed(3)); some
inputs hold NaN and infinities. For float64 and float32 (the inputs
rounded) the arrays hold y = F.unfold/F.fold(x) and dx, the gradient of
sum(y * g). BIL_CASES: F.bilinear(x1, x2, weight, bias) with the same
cotangent rule; the arrays hold y and the gradients of x1, x2, weight and
bias (when there is one). GLU_CASES: F.glu(x, dim), y and dx, with
saturating and non-finite halves. PAIR_CASES: F.cosine_similarity(x1, x2,
dim, eps) or F.pairwise_distance(x1, x2, p, eps, keepdim), y and the
gradients of x1 and x2, with zero vectors, norms below eps and
broadcasting. ACT_CASES: F.softshrink, F.hardshrink, F.threshold,
F.softmin, nn.Softmax2d on inputs that hold the kinks exactly, y and dx.
LRN_CASES: F.local_response_norm(x, size, alpha, beta, k), 3-D to 5-D, a
window wider than the channels, y and dx. RRELU_CASES: F.rrelu(x, lower,
upper, training=False), y and dx (0 included). Deterministic: rerunning prints the same text.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_fixture import c_double_array  # noqa: E402

torch.manual_seed(3)

# name, fold?, input shape, output_size (fold), kernel, dilation, padding, stride, special values
CASES = [
    ("unfold_k23", False, [2, 3, 4, 5], None, (2, 3), (1, 1), (0, 0), (1, 1), False),
    ("unfold_k3_p1_s2", False, [1, 2, 5, 6], None, (3, 3), (1, 1), (1, 1), (2, 2), False),
    ("unfold_dil_pad_stride", False, [2, 1, 7, 6], None, (2, 2), (2, 3), (1, 2), (1, 2), False),
    ("unfold_unbatched", False, [3, 4, 4], None, (2, 2), (1, 1), (0, 0), (2, 2), False),
    ("unfold_pad_beyond_kernel", False, [1, 1, 2, 3], None, (1, 1), (1, 1), (3, 3), (2, 2), False),
    ("unfold_stride_gaps", False, [1, 2, 7, 8], None, (2, 2), (1, 1), (0, 0), (3, 3), False),
    ("unfold_nonfinite", False, [1, 1, 3, 3], None, (2, 2), (1, 1), (0, 0), (1, 1), True),
    ("fold_k23", True, [2, 18, 9], (4, 5), (2, 3), (1, 1), (0, 0), (1, 1), False),
    ("fold_k3_p1_s2", True, [1, 18, 9], (5, 6), (3, 3), (1, 1), (1, 1), (2, 2), False),
    ("fold_dil_pad_stride", True, [2, 4, 28], (7, 6), (2, 2), (2, 3), (1, 2), (1, 2), False),
    ("fold_unbatched", True, [12, 4], (4, 4), (2, 2), (1, 1), (0, 0), (2, 2), False),
    ("fold_pad_beyond_kernel", True, [1, 1, 20], (2, 3), (1, 1), (1, 1), (3, 3), (2, 2), False),
    ("fold_stride_gaps", True, [1, 8, 6], (7, 8), (2, 2), (1, 1), (0, 0), (3, 3), False),
    ("fold_overlap_nonfinite", True, [1, 4, 4], (3, 3), (2, 2), (1, 1), (0, 0), (1, 1), True),
]


def unary_case(out, prefix, i, comment, x, fn):
    """y = fn(x) in float64 and in float32 (x rounded) and the gradient of
    sum(y * g), g = linspace(-1, 1) over y's elements; appends to out the
    comment, the arrays <prefix>_X_<i>, <prefix>_Y64_<i>, <prefix>_DX64_<i>,
    <prefix>_Y32_<i>, <prefix>_DX32_<i> and a blank line."""
    res = {}
    for dt in (torch.float64, torch.float32):
        xx = x.to(dt).detach().requires_grad_(True)
        y = fn(xx)
        g = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape)
        (y * g.to(dt)).sum().backward()
        res[dt] = (y.detach().double().flatten().tolist(), xx.grad.double().flatten().tolist())
    out.append(comment)
    out.append(c_double_array(f"{prefix}_X_{i}", x.flatten().tolist()))
    for tag, dt in (("64", torch.float64), ("32", torch.float32)):
        out.append(c_double_array(f"{prefix}_Y{tag}_{i}", res[dt][0]))
        out.append(c_double_array(f"{prefix}_DX{tag}_{i}", res[dt][1]))
    out.append("")


def run(case, dtype, x64, g64):
    name, fold, shape, osz, k, d, p, s, _ = case
    x = x64.to(dtype).detach().requires_grad_(True)
    if fold:
        y = F.fold(x, osz, k, dilation=d, padding=p, stride=s)
    else:
        y = F.unfold(x, k, dilation=d, padding=p, stride=s)
    g = g64.to(dtype)
    (y * g).sum().backward()
    return y.detach().double().flatten().tolist(), x.grad.double().flatten().tolist(), list(y.shape)


# name, x1 shape, x2 shape, out, bias?, special values
BIL = [
    ("bilinear_2d", [4, 3], [4, 5], 2, True, False),
    ("bilinear_unbatched", [3], [2], 4, True, False),
    ("bilinear_3d_no_bias", [2, 3, 3], [2, 3, 2], 4, False, False),
    ("bilinear_one_feature", [5, 1], [5, 1], 1, True, False),
    ("bilinear_nonfinite", [2, 2], [2, 3], 2, True, True),
]


def run_bil(case, dtype, x1, x2, w, b, g):
    ts = [t.to(dtype).detach().requires_grad_(True) for t in (x1, x2, w)]
    bb = b.to(dtype).detach().requires_grad_(True) if b is not None else None
    y = F.bilinear(ts[0], ts[1], ts[2], bb)
    (y * g.to(dtype)).sum().backward()
    grads = [t.grad.double().flatten().tolist() for t in ts]
    if bb is not None:
        grads.append(bb.grad.double().flatten().tolist())
    return y.detach().double().flatten().tolist(), sum(grads, [])


def bilinear(out):
    rows = []
    for i, (name, s1, s2, o, has_b, special) in enumerate(BIL):
        x1 = torch.rand(s1, dtype=torch.float64) * 4 - 2
        x2 = torch.rand(s2, dtype=torch.float64) * 4 - 2
        if special:
            x1.view(-1)[0] = math.nan
            x2.view(-1)[1] = math.inf
        w = torch.rand([o, s1[-1], s2[-1]], dtype=torch.float64) * 2 - 1
        b = torch.rand([o], dtype=torch.float64) * 2 - 1 if has_b else None
        g = torch.rand(s1[:-1] + [o], dtype=torch.float64) * 2 - 1
        y64, d64 = run_bil(None, torch.float64, x1, x2, w, b, g)
        y32, d32 = run_bil(None, torch.float32, x1, x2, w, b, g)
        out.append(f"/* {name}: F.bilinear of {s1}, {s2} -> {o} */")
        out.append(c_double_array(f"BIL_X1_{i}", x1.flatten().tolist()))
        out.append(c_double_array(f"BIL_X2_{i}", x2.flatten().tolist()))
        out.append(c_double_array(f"BIL_W_{i}", w.flatten().tolist()))
        out.append(c_double_array(f"BIL_B_{i}", b.flatten().tolist() if has_b else [0.0]))
        out.append(c_double_array(f"BIL_G_{i}", g.flatten().tolist()))
        out.append(c_double_array(f"BIL_Y64_{i}", y64))
        out.append(c_double_array(f"BIL_D64_{i}", d64))
        out.append(c_double_array(f"BIL_Y32_{i}", y32))
        out.append(c_double_array(f"BIL_D32_{i}", d32))
        out.append("")
        sh1 = ", ".join(str(v) for v in s1)
        sh2 = ", ".join(str(v) for v in s2)
        rows.append(
            f'    {{"{name}", {len(s1)}, {{{sh1}}}, {{{sh2}}}, {o}, {"true" if has_b else "false"},\n'
            f"     BIL_X1_{i}, BIL_X2_{i}, BIL_W_{i}, BIL_B_{i}, BIL_G_{i}, "
            f"{{BIL_Y64_{i}, BIL_Y32_{i}}}, {{BIL_D64_{i}, BIL_D32_{i}}}}},")
    out.append("static const bil_case BIL_CASES[] = {")
    out.extend(rows)
    out.append("};")


# name, shape, dim, special values
GLU = [
    ("glu_last", [4, 6], -1, False),
    ("glu_dim1", [3, 4, 2], 1, False),
    ("glu_dim0_1d", [8], 0, False),
    ("glu_neg3", [2, 3, 5], -3, False),
    ("glu_saturate_nonfinite", [2, 8], 1, True),
]


def glu(out):
    rows = []
    for i, (name, shape, dim, special) in enumerate(GLU):
        x = torch.rand(shape, dtype=torch.float64) * 6 - 3
        if special:
            # the gates: -1000, 1000, NaN, inf; the values: NaN, -inf
            x[0, 4:8] = torch.tensor([-1000.0, 1000.0, math.nan, math.inf])
            x[1, 0], x[1, 1], x[1, 5] = math.nan, -math.inf, -math.inf
        unary_case(out, "GLU", i,
                   f"/* {name}: F.glu of {shape}, dim {dim}; cotangent linspace(-1, 1) */", x,
                   lambda xx: F.glu(xx, dim))
        sh = ", ".join(str(v) for v in shape)
        rows.append(f'    {{"{name}", {len(shape)}, {{{sh}}}, {dim}, GLU_X_{i}, '
                    f"{{GLU_Y64_{i}, GLU_Y32_{i}}}, {{GLU_DX64_{i}, GLU_DX32_{i}}}}},")
    out.append("static const glu_case GLU_CASES[] = {")
    out.extend(rows)
    out.append("};")


# name, cos?, x1 shape, x2 shape, dim (cos) / p (pdist), eps, keepdim, special
PAIRS = [
    ("cos_dim1", True, [4, 5], [4, 5], 1, 1e-8, False, False),
    ("cos_broadcast_last", True, [3, 4], [4], -1, 1e-8, False, False),
    ("cos_dim0_3d", True, [3, 2, 4], [3, 2, 4], 0, 1e-8, False, False),
    ("cos_zero_and_tiny", True, [5, 3], [5, 3], 1, 1e-8, False, True),
    ("cos_eps_large", True, [4, 3], [1, 3], 1, 0.5, False, False),
    ("pdist_p2", False, [4, 5], [4, 5], 2.0, 1e-6, False, False),
    ("pdist_p1_keepdim", False, [4, 5], [4, 5], 1.0, 1e-6, True, False),
    ("pdist_p3_broadcast", False, [3, 4], [4], 3.0, 1e-6, False, False),
    ("pdist_1d", False, [6], [6], 2.0, 1e-6, False, False),
    ("pdist_zero_distance", False, [3, 4], [3, 4], 2.0, 0.0, True, True),
    ("pdist_p1_5_3d", False, [2, 3, 4], [2, 3, 4], 1.5, 1e-3, False, False),
]


def pairs(out):
    rows = []
    for i, (name, cos, s1, s2, a, eps, keep, special) in enumerate(PAIRS):
        x1 = torch.rand(s1, dtype=torch.float64) * 4 - 2
        x2 = torch.rand(s2, dtype=torch.float64) * 4 - 2
        if special and cos:
            x1[0] = 0.0                                  # zero x1
            x2[1] = 0.0                                  # zero x2
            x1[2] = torch.tensor([3e-9, 4e-9, 0.0])      # norm below eps
            x1[3], x2[3] = 1e-5 * x1[3], 1e-5 * x2[3]    # small, above eps
        if special and not cos:
            x2[0] = x1[0]                                # zero distance, eps 0
        res = {}
        for dt in (torch.float64, torch.float32):
            a1 = x1.to(dt).detach().requires_grad_(True)
            a2 = x2.to(dt).detach().requires_grad_(True)
            if cos:
                y = F.cosine_similarity(a1, a2, dim=a, eps=eps)
            else:
                y = F.pairwise_distance(a1, a2, p=a, eps=eps, keepdim=keep)
            g = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape)
            (y * g.to(dt)).sum().backward()
            res[dt] = (y.detach().double().flatten().tolist(),
                       a1.grad.double().flatten().tolist() + a2.grad.double().flatten().tolist(),
                       list(y.shape))
        out.append(f"/* {name} */")
        out.append(c_double_array(f"PAIR_X1_{i}", x1.flatten().tolist()))
        out.append(c_double_array(f"PAIR_X2_{i}", x2.flatten().tolist()))
        for tag, dt in (("64", torch.float64), ("32", torch.float32)):
            out.append(c_double_array(f"PAIR_Y{tag}_{i}", res[dt][0]))
            out.append(c_double_array(f"PAIR_D{tag}_{i}", res[dt][1]))
        out.append("")
        ys = res[torch.float64][2]
        sh1 = ", ".join(str(v) for v in s1)
        sh2 = ", ".join(str(v) for v in s2)
        shy = ", ".join(str(v) for v in ys) or "0"
        rows.append(
            f'    {{"{name}", {"true" if cos else "false"}, {len(s1)}, {{{sh1}}}, {len(s2)}, '
            f'{{{sh2}}}, {len(ys)}, {{{shy}}},\n     {a!r}, {eps!r}, {"true" if keep else "false"}, '
            f"PAIR_X1_{i}, PAIR_X2_{i}, {{PAIR_Y64_{i}, PAIR_Y32_{i}}}, "
            f"{{PAIR_D64_{i}, PAIR_D32_{i}}}}},")
    out.append("static const pair_case PAIR_CASES[] = {")
    out.extend(rows)
    out.append("};")


# name, kind (0 softshrink, 1 hardshrink, 2 threshold, 3 softmin, 4 softmax2d),
# shape, a (lambd / threshold / dim), b (value)
ACTS = [
    ("softshrink_default", 0, [4, 6], 0.5, 0.0),
    ("softshrink_zero", 0, [3, 4], 0.0, 0.0),
    ("softshrink_wide", 0, [2, 2, 5], 1.25, 0.0),
    ("hardshrink_default", 1, [4, 6], 0.5, 0.0),
    ("hardshrink_negative", 1, [3, 4], -1.0, 0.0),
    ("hardshrink_wide", 1, [2, 2, 5], 1.25, 0.0),
    ("threshold_pos", 2, [4, 6], 0.1, 20.0),
    ("threshold_neg", 2, [3, 4], -1.0, -3.5),
    ("softmin_dim1", 3, [4, 6], 1, 0.0),
    ("softmin_dim0_3d", 3, [3, 2, 4], 0, 0.0),
    ("softmin_last", 3, [2, 5], -1, 0.0),
    ("softmax2d_4d", 4, [2, 3, 2, 2], 0, 0.0),
    ("softmax2d_3d", 4, [4, 2, 3], 0, 0.0),
]


def act(kind, x, a, b):
    """The activation of ACTS' kind on x."""
    if kind == 0:
        return F.softshrink(x, a)
    if kind == 1:
        return F.hardshrink(x, a)
    if kind == 2:
        return F.threshold(x, a, b)
    if kind == 3:
        return F.softmin(x, dim=a)
    return torch.nn.Softmax2d()(x)


def acts(out):
    rows = []
    kinks = [0.5, -0.5, 0.0, 0.1, -1.0, 1.0, 1.25, -1.25, -3.5, 20.0]
    for i, (name, kind, shape, a, b) in enumerate(ACTS):
        x = torch.rand(shape, dtype=torch.float64) * 6 - 3
        flat = x.view(-1)
        for j, v in enumerate(kinks[: flat.numel() // 2]):
            flat[2 * j] = v
        unary_case(out, "ACT", i, f"/* {name} */", x, lambda xx: act(kind, xx, a, b))
        sh = ", ".join(str(v) for v in shape)
        rows.append(f'    {{"{name}", {kind}, {len(shape)}, {{{sh}}}, {float(a)!r}, {b!r}, ACT_X_{i}, '
                    f"{{ACT_Y64_{i}, ACT_Y32_{i}}}, {{ACT_DX64_{i}, ACT_DX32_{i}}}}},")
    out.append("static const act_case ACT_CASES[] = {")
    out.extend(rows)
    out.append("};")


# name, shape, size, alpha, beta, k
LRNS = [
    ("lrn_3d_size2", [2, 5, 3], 2, 1e-4, 0.75, 1.0),
    ("lrn_4d_default5", [2, 6, 3, 4], 5, 1e-4, 0.75, 1.0),
    ("lrn_4d_strong", [1, 4, 2, 3], 3, 2.0, 0.75, 0.5),
    ("lrn_5d", [1, 3, 2, 2, 2], 3, 0.5, 2.0, 0.5),
    ("lrn_wide_window", [1, 2, 4], 7, 1.0, 0.75, 1.0),
]


def lrns(out):
    rows = []
    for i, (name, shape, size, alpha, beta, k) in enumerate(LRNS):
        x = torch.rand(shape, dtype=torch.float64) * 6 - 3
        unary_case(out, "LRN", i, f"/* {name} */", x,
                   lambda xx: F.local_response_norm(xx, size, alpha, beta, k))
        sh = ", ".join(str(v) for v in shape)
        rows.append(f'    {{"{name}", {len(shape)}, {{{sh}}}, {size}, {alpha!r}, {beta!r}, {k!r}, '
                    f"LRN_X_{i}, {{LRN_Y64_{i}, LRN_Y32_{i}}}, {{LRN_DX64_{i}, LRN_DX32_{i}}}}},")
    out.append("static const lrn_case LRN_CASES[] = {")
    out.extend(rows)
    out.append("};")


RRELUS = [("rrelu_default", [4, 5], 1.0 / 8, 1.0 / 3), ("rrelu_wide", [3, 4], -0.5, 0.75)]


def rrelus(out):
    rows = []
    for i, (name, shape, lo, hi) in enumerate(RRELUS):
        x = torch.rand(shape, dtype=torch.float64) * 6 - 3
        x.view(-1)[0] = 0.0
        unary_case(out, "RRELU", i, f"/* {name} */", x,
                   lambda xx: F.rrelu(xx, lo, hi, training=False))
        sh = ", ".join(str(v) for v in shape)
        rows.append(f'    {{"{name}", 2, {{{sh}}}, 0, {lo!r}, {hi!r}, 0.0, '
                    f"RRELU_X_{i}, {{RRELU_Y64_{i}, RRELU_Y32_{i}}}, {{RRELU_DX64_{i}, RRELU_DX32_{i}}}}},")
    out.append("static const lrn_case RRELU_CASES[] = { /* alpha lower, beta upper */")
    out.extend(rows)
    out.append("};")


def main():
    out = ["/* Generated by tools/gen_misc2_fixtures.py from PyTorch "
           + torch.__version__ + ": do not edit. */", ""]
    rows = []
    for i, case in enumerate(CASES):
        name, fold, shape, osz, k, d, p, s, special = case
        x = torch.rand(shape, dtype=torch.float64) * 4 - 2
        if special:
            flat = x.view(-1)
            flat[0] = math.nan
            flat[4] = math.inf
            flat[-1] = -math.inf
        # the output's shape from a first run
        _, _, yshape = run(case, torch.float64, x, torch.zeros(1, dtype=torch.float64))
        g = torch.rand(yshape, dtype=torch.float64) * 2 - 1
        y64, dx64, _ = run(case, torch.float64, x, g)
        y32, dx32, _ = run(case, torch.float32, x, g)
        out.append(f"/* {name}: {'F.fold' if fold else 'F.unfold'} of {shape} -> {yshape} */")
        out.append(c_double_array(f"FOLD_X_{i}", x.flatten().tolist()))
        out.append(c_double_array(f"FOLD_G_{i}", g.flatten().tolist()))
        out.append(c_double_array(f"FOLD_Y64_{i}", y64))
        out.append(c_double_array(f"FOLD_DX64_{i}", dx64))
        out.append(c_double_array(f"FOLD_Y32_{i}", y32))
        out.append(c_double_array(f"FOLD_DX32_{i}", dx32))
        out.append("")
        sh = ", ".join(str(v) for v in shape)
        ysh = ", ".join(str(v) for v in yshape)
        o = osz or (0, 0)
        rows.append(
            f'    {{"{name}", {"true" if fold else "false"}, {len(shape)}, {{{sh}}}, '
            f"{len(yshape)}, {{{ysh}}}, {{{o[0]}, {o[1]}}},\n"
            f"     {{{{{k[0]}, {k[1]}}}, {{{d[0]}, {d[1]}}}, {{{p[0]}, {p[1]}}}, {{{s[0]}, {s[1]}}}}},\n"
            f"     FOLD_X_{i}, FOLD_G_{i}, {{FOLD_Y64_{i}, FOLD_Y32_{i}}}, "
            f"{{FOLD_DX64_{i}, FOLD_DX32_{i}}}}},")
    out.append("static const fold_case FOLD_CASES[] = {")
    out.extend(rows)
    out.append("};")
    out.append("")
    bilinear(out)
    out.append("")
    glu(out)
    out.append("")
    pairs(out)
    out.append("")
    acts(out)
    out.append("")
    lrns(out)
    out.append("")
    rrelus(out)
    print("\n".join(out))


if __name__ == "__main__":
    main()
