#!/usr/bin/python3
"""Generates tests/unpool_fixtures.h: PyTorch 1.13's max pooling indices
(return_indices=True of F.max_pool1d/2d/3d and F.adaptive_max_pool1d/2d/3d),
F.max_unpool1d/2d/3d and F.lp_pool1d/2d, checked by tests/test_nn_unpool.c.

Usage (from the repository root, with Debian's python3-torch 1.13):

    /usr/bin/python3 tools/gen_unpool_fixtures.py > tests/unpool_fixtures.h

Pooling cases (idx_cases[]): values, indices and the input gradient of
sum(y * gy), in float64 and float32 on one input that float32 holds
exactly; inputs with ties, NaN and -inf check which element the index
names. Unpooling cases (unpool_cases[]): the input and indices come from a
max pooling of a wave (or are written out: duplicates, NaN), then y and
the gradient of sum(y * gy). Where several inputs of a plane name one
output, PyTorch keeps the last one's value (as we do), but its backward
gives every one of them the output's gradient; ours gives 0 to the ones
overwritten (the derivative of the forward), so dx here is PyTorch's
gradient times that mask (dx_torch keeps PyTorch's own, for the record).
LPPool cases (lp_cases[]): norm types 1, 1.5, 2, 2.5, 3, 4 and -1, windows
of zeros (gradient 0), negative windows (NaN under a fractional 1/p),
stride and ceil_mode.
"""
import math
import os
import sys
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_fixture import c_double_array  # noqa: E402
from torch_fixture import nans, neg_inf, tensor_emitter, ties, two_dtype_case, wave  # noqa: E402

warnings.simplefilter("ignore")
D = torch.float64
NAN, INF = float("nan"), float("inf")
out, irows, urows = [], [], []
emit = tensor_emitter(out)


def tup(v, n, default):
    if v is None:
        return default
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def t3(v):
    v = tuple(v) + (0,) * (3 - len(v))
    return "{%d, %d, %d}" % v


# kinds: 0..2 max_pool1d/2d/3d, 3..5 adaptive_max_pool1d/2d/3d
MP1, MP2, MP3, AM1, AM2, AM3 = range(6)
FN = {MP1: F.max_pool1d, MP2: F.max_pool2d, MP3: F.max_pool3d,
      AM1: F.adaptive_max_pool1d, AM2: F.adaptive_max_pool2d, AM3: F.adaptive_max_pool3d}
SP = {MP1: 1, MP2: 2, MP3: 3, AM1: 1, AM2: 2, AM3: 3}

ICASES = [
    ("p1_k3s2p1", MP1, (2, 2, 9), dict(kernel_size=3, stride=2, padding=1), None),
    ("p1_dil_ceil", MP1, (1, 2, 10), dict(kernel_size=3, stride=2, padding=1, dilation=2,
                                          ceil_mode=True), None),
    ("p1_ties", MP1, (2, 7), dict(kernel_size=3, stride=1), ties),
    ("p1_empty_win", MP1, (1, 1, 1), dict(kernel_size=2, stride=1, padding=1, dilation=2,
                                          ceil_mode=True), None),
    ("p2_k2", MP2, (2, 2, 4, 6), dict(kernel_size=2), None),
    ("p2_k3s2p1", MP2, (1, 2, 7, 6), dict(kernel_size=3, stride=2, padding=1), None),
    ("p2_dil", MP2, (1, 2, 6, 7), dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0),
                                       dilation=(2, 1)), None),
    ("p2_ceil", MP2, (2, 1, 6, 5), dict(kernel_size=(3, 2), stride=2, padding=1,
                                        ceil_mode=True), None),
    ("p2_unbatched", MP2, (3, 5, 5), dict(kernel_size=2, stride=1), None),
    ("p2_ties", MP2, (1, 2, 5, 5), dict(kernel_size=3, stride=2, padding=1), ties),
    ("p2_nan", MP2, (1, 2, 6, 6), dict(kernel_size=2, stride=1), nans),
    ("p2_neginf", MP2, (1, 1, 4, 4), dict(kernel_size=2, stride=1, padding=1), neg_inf),
    ("p2_empty_win", MP2, (1, 1, 3, 1), dict(kernel_size=2, stride=1, padding=1,
                                             dilation=(1, 2), ceil_mode=True), None),
    ("p3_k2", MP3, (2, 1, 4, 4, 4), dict(kernel_size=2), None),
    ("p3_k3s2p1", MP3, (1, 2, 5, 6, 7), dict(kernel_size=3, stride=2, padding=1), None),
    ("p3_dil_ceil", MP3, (1, 2, 7, 6, 5), dict(kernel_size=(3, 2, 2), stride=(2, 3, 2),
                                               padding=(1, 1, 0), dilation=(2, 1, 2),
                                               ceil_mode=True), None),
    ("p3_unbatched", MP3, (2, 3, 4, 5), dict(kernel_size=2, stride=1), None),
    ("p3_ties", MP3, (1, 2, 3, 4, 4), dict(kernel_size=2, stride=1), ties),
    ("p3_nan", MP3, (1, 2, 4, 4, 4), dict(kernel_size=2, stride=1), nans),
    ("p3_neginf", MP3, (1, 1, 4, 3, 3), dict(kernel_size=2, stride=1, padding=1), neg_inf),
    ("p3_empty_win", MP3, (1, 2, 1, 3, 2), dict(kernel_size=2, stride=1, padding=1,
                                                dilation=(2, 1, 1)), None),
    ("a1_3", AM1, (2, 2, 8), dict(output_size=3), None),
    ("a1_up", AM1, (1, 3, 4), dict(output_size=6), None),
    ("a1_ties", AM1, (2, 9), dict(output_size=4), ties),
    ("a2_23", AM2, (2, 1, 5, 7), dict(output_size=(2, 3)), None),
    ("a2_div", AM2, (1, 2, 6, 4), dict(output_size=(3, 2)), None),
    ("a2_nan", AM2, (1, 2, 5, 6), dict(output_size=(3, 4)), nans),
    ("a2_neginf", AM2, (1, 1, 6, 6), dict(output_size=4), neg_inf),
    ("a3_2", AM3, (2, 1, 4, 5, 6), dict(output_size=2), None),
    ("a3_234", AM3, (1, 1, 5, 7, 9), dict(output_size=(2, 3, 4)), None),
    ("a3_up", AM3, (1, 1, 3, 4, 5), dict(output_size=(5, 3, 7)), None),
    ("a3_unbatched", AM3, (2, 4, 4, 6), dict(output_size=(2, 2, 3)), None),
    ("a3_ties", AM3, (1, 2, 4, 5, 3), dict(output_size=(3, 2, 2)), ties),
    ("a3_nan", AM3, (1, 2, 4, 4, 5), dict(output_size=(3, 3, 2)), nans),
    ("a3_neginf", AM3, (1, 1, 4, 4, 4), dict(output_size=3), neg_inf),
]

for k, (name, kind, shape, kw, make) in enumerate(ICASES):
    x = make(shape) if make else wave(shape, 0.71 + 0.07 * k, 0.3 * k, 1.5, 0.2)
    f = FN[kind]
    sp = SP[kind]
    x64 = x.clone().requires_grad_(True)
    y, idx = f(x64, **kw, return_indices=True)
    gy = wave(y.shape, 1.19, 0.4 + k, 1.0)
    # a window with no element of the input has an index outside the
    # plane, where PyTorch's backward writes out of bounds: no gradient
    grad = "empty_win" not in name
    if grad:
        (y * gy).sum().backward()
    x32 = x.float().requires_grad_(True)
    y32, idx32 = f(x32, **kw, return_indices=True)
    if grad:
        (y32 * gy.float()).sum().backward()
    assert torch.equal(idx, idx32)
    for s, v in (("x", x), ("gy", gy), ("y", y.detach()), ("idx", idx), ("dx", x64.grad),
                 ("y32", y32.detach()), ("dx32", x32.grad)):
        if v is not None:
            out.append(c_double_array(f"{name}_{s}", v.flatten().tolist()))
    if kind >= AM1:
        kern = tup(kw["output_size"], sp, None)
        stride = pad = dil = ()
    else:
        kern = tup(kw["kernel_size"], sp, None)
        stride = tup(kw.get("stride"), sp, ())
        pad = tup(kw.get("padding"), sp, ())
        dil = tup(kw.get("dilation"), sp, ())
    sh = ", ".join(str(s) for s in shape)
    irows.append(
        f'    {{"{name}", {kind}, {t3(kern)}, {t3(stride)}, {t3(pad)}, {t3(dil)}, '
        f'{str(kw.get("ceil_mode", False)).lower()}, {len(shape)}, {{{sh}}},\n'
        f'     {name}_x, {name}_gy, {name}_y, {name}_idx, '
        f'{name + "_dx" if grad else "NULL"}, {name}_y32, {name + "_dx32" if grad else "NULL"}, '
        f'{x.numel()}, {y.numel()}}},')

# unpooling: name, spatial dims, pooled input shape, pool kwargs (kernel,
# stride, padding, dilation, ceil_mode), unpool output_size, input maker;
# the unpool takes kernel, stride and padding of the pool
UCASES = [
    ("u1_k2", 1, (2, 2, 8), dict(kernel_size=2), None, None),
    ("u1_k3s1_dup", 1, (1, 2, 9), dict(kernel_size=3, stride=1), None, None),
    ("u1_k3s2p1_out", 1, (2, 1, 10), dict(kernel_size=3, stride=2, padding=1), [10], None),
    ("u2_k2", 2, (2, 2, 4, 6), dict(kernel_size=2), None, None),
    ("u2_k3s2p1_out", 2, (1, 2, 7, 6), dict(kernel_size=3, stride=2, padding=1), [7, 6], None),
    ("u2_out", 2, (1, 1, 7, 9), dict(kernel_size=2), [7, 9], None),
    ("u2_unbatched_dup", 2, (2, 5, 5), dict(kernel_size=(3, 2), stride=1), None, ties),
    ("u2_nan", 2, (1, 2, 6, 6), dict(kernel_size=2, stride=1), None, nans),
    ("u3_k2", 3, (2, 1, 4, 4, 4), dict(kernel_size=2), None, None),
    ("u3_k3s2p1_out", 3, (1, 2, 5, 6, 7), dict(kernel_size=3, stride=2, padding=1), [5, 6, 7],
     None),
    ("u3_unbatched_dup", 3, (2, 3, 4, 5), dict(kernel_size=2, stride=1), None, ties),
]
POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
UNPOOL = {1: F.max_unpool1d, 2: F.max_unpool2d, 3: F.max_unpool3d}


def winners(idx, sp):
    """1 where an input's value stays (no later input of its plane names
    the same output), else 0."""
    flat = idx.reshape(-1, math.prod(idx.shape[idx.dim() - sp:]))
    keep = torch.zeros(flat.shape, dtype=D)
    for p in range(flat.shape[0]):
        last = {}
        for i, j in enumerate(flat[p].tolist()):
            last[j] = i
        for i in last.values():
            keep[p, i] = 1
    return keep.reshape(idx.shape)


def unpool_case(name, sp, xin, idx, kw, osize):
    k = len(urows)
    uk = dict(kernel_size=kw["kernel_size"], stride=kw.get("stride"),
              padding=kw.get("padding", 0))
    x64 = xin.clone().requires_grad_(True)
    y = UNPOOL[sp](x64, idx, **uk, output_size=osize)
    gy = wave(y.shape, 1.31, 0.2 + k, 1.0)
    (y * gy).sum().backward()
    x32 = xin.float().requires_grad_(True)
    y32 = UNPOOL[sp](x32, idx, **uk, output_size=osize)
    (y32 * gy.float()).sum().backward()
    keep = winners(idx, sp)
    dx, dx32 = x64.grad * keep, (x32.grad.to(D) * keep)
    for s, v in (("x", xin), ("idx", idx), ("gy", gy), ("y", y.detach()), ("dx", dx),
                 ("dx_torch", x64.grad), ("y32", y32.detach()), ("dx32", dx32)):
        out.append(c_double_array(f"{name}_{s}", v.flatten().tolist()))
    kern = tup(kw["kernel_size"], sp, None)
    stride = tup(kw.get("stride"), sp, ())
    pad = tup(kw.get("padding"), sp, ())
    sh = ", ".join(str(s) for s in xin.shape)
    osh = ", ".join(str(s) for s in y.shape)
    urows.append(
        f'    {{"{name}", {sp}, {t3(kern)}, {t3(stride)}, {t3(pad)}, '
        f'{"true" if osize else "false"}, {t3(osize or ())}, {xin.dim()}, {{{sh}}}, '
        f'{{{osh}}},\n     {name}_x, {name}_idx, {name}_gy, {name}_y, {name}_dx, '
        f'{name}_y32, {name}_dx32, {xin.numel()}, {y.numel()}}},')


for k, (name, sp, shape, kw, osize, make) in enumerate(UCASES):
    src = make(shape) if make else wave(shape, 0.83 + 0.05 * k, 0.2 * k, 1.5, 0.1)
    yp, idx = POOL[sp](src, **kw, return_indices=True)
    unpool_case(name, sp, yp.detach(), idx, kw, osize)

# written out: duplicates with different values (the last one stays), a
# NaN overwritten (it goes nowhere) and a NaN kept
unpool_case("u1_dup_written", 1, torch.tensor([[[1.0, 2, 3, 4], [NAN, 5, 6, -INF]]], dtype=D),
            torch.tensor([[[0, 0, 0, 1], [1, 1, 3, 0]]]), dict(kernel_size=2), None)

# LPPool: name, 2-D, norm_type, x shape, kwargs, input maker


def zeros_in(shape):
    """Whole windows of zeros (gradient 0 in PyTorch), and some negatives."""
    v = wave(shape, 0.6, 0.3, 1.5).flatten()
    v[: v.numel() // 3] = 0
    return v.reshape(shape)


def positive(shape):
    return wave(shape, 0.77, 0.1, 1.0).abs() + 0.25


LCASES = [
    ("l1_p2_k3", False, 2.0, (2, 2, 9), dict(kernel_size=3), None),
    ("l1_p1_s1", False, 1.0, (1, 2, 7), dict(kernel_size=2, stride=1), None),
    ("l1_p3_ceil", False, 3.0, (2, 8), dict(kernel_size=3, stride=2, ceil_mode=True), positive),
    ("l1_p15_neg", False, 1.5, (1, 2, 8), dict(kernel_size=2), None),
    ("l1_p2_zeros", False, 2.0, (1, 2, 12), dict(kernel_size=2), zeros_in),
    ("l2_p2_k2", True, 2.0, (2, 2, 4, 6), dict(kernel_size=2), None),
    ("l2_p2_k23_s1", True, 2.0, (1, 2, 5, 6), dict(kernel_size=(2, 3), stride=1), None),
    ("l2_p4_ceil", True, 4.0, (1, 1, 7, 5), dict(kernel_size=3, stride=2, ceil_mode=True),
     positive),
    ("l2_p25_unbatched", True, 2.5, (2, 5, 4), dict(kernel_size=2, stride=(1, 2)), positive),
    ("l2_p1_neg", True, 1.0, (1, 2, 4, 4), dict(kernel_size=2), None),
    ("l2_p3_neg", True, 3.0, (1, 2, 4, 6), dict(kernel_size=2), None),
    ("l2_p2_zeros", True, 2.0, (1, 2, 6, 6), dict(kernel_size=2), zeros_in),
    ("l2_pm1", True, -1.0, (1, 1, 4, 4), dict(kernel_size=2), positive),
]
lrows = []
for k, (name, two, p, shape, kw, make) in enumerate(LCASES):
    x = make(shape) if make else wave(shape, 0.67 + 0.05 * k, 0.25 * k, 1.5, 0.1)
    f = F.lp_pool2d if two else F.lp_pool1d
    y = two_dtype_case(emit, name, x, lambda t: f(t, p, **kw), 1.07, 0.3 + k)
    sp = 2 if two else 1
    kern = tup(kw["kernel_size"], sp, None)
    stride = tup(kw.get("stride"), sp, ())
    sh = ", ".join(str(s) for s in shape)
    lrows.append(
        f'    {{"{name}", {str(two).lower()}, {p!r}, {t3(kern)}, {t3(stride)}, '
        f'{str(kw.get("ceil_mode", False)).lower()}, {len(shape)}, {{{sh}}},\n'
        f'     {name}_x, {name}_gy, {name}_y, {name}_dx, {name}_y32, {name}_dx32, '
        f'{x.numel()}, {y.numel()}}},')

print("/* Generated by tools/gen_unpool_fixtures.py (PyTorch %s); do not edit. */"
      % torch.__version__)
print("#ifndef UNPOOL_FIXTURES_H")
print("#define UNPOOL_FIXTURES_H")
print("#include <math.h>")
print("#include <stdbool.h>")
print("#include <stdint.h>")
print("\n\n".join(out))
print("""
/* kind: 0..2 max_pool1d/2d/3d, 3..5 adaptive_max_pool1d/2d/3d; k: the
 * kernel (adaptive: the output size), s, p, d: stride, padding, dilation,
 * per spatial axis in order, 0 where PyTorch's default was used; idx:
 * PyTorch's return_indices; dx NULL where PyTorch's backward cannot run
 * (an index outside the plane) */
typedef struct idx_case {
  const char *name;
  int kind;
  int64_t k[3], s[3], p[3], d[3];
  bool ceil_mode;
  int nd;
  int64_t shape[5];
  const double *x, *gy, *y, *idx, *dx, *y32, *dx32;
  int64_t nx, ny;
} idx_case;

static const idx_case idx_cases[] = {""")
print("\n".join(irows))
print("""};

/* sp: 1..3 (max_unpool1d/2d/3d); k, s, p per spatial axis (0: default);
 * out: output_size when has_out; x, idx: the unpooling's input and
 * indices (shape), y (oshape) and dx: its output and the gradient of
 * sum(y * gy) (see the top of tools/gen_unpool_fixtures.py) */
typedef struct unpool_case {
  const char *name;
  int sp;
  int64_t k[3], s[3], p[3];
  bool has_out;
  int64_t out[3];
  int nd;
  int64_t shape[5], oshape[5];
  const double *x, *idx, *gy, *y, *dx, *y32, *dx32;
  int64_t nx, ny;
} unpool_case;

static const unpool_case unpool_cases[] = {""")
print("\n".join(urows))
print("""};

/* two: LPPool2d (else 1d); p: norm_type; k, s: kernel and stride per
 * spatial axis (0: stride=None); x, y, dx as above */
typedef struct lp_case {
  const char *name;
  bool two;
  double p;
  int64_t k[3], s[3];
  bool ceil_mode;
  int nd;
  int64_t shape[4];
  const double *x, *gy, *y, *dx, *y32, *dx32;
  int64_t nx, ny;
} lp_case;

static const lp_case lp_cases[] = {""")
print("\n".join(lrows))
print("};")
print("#endif")
