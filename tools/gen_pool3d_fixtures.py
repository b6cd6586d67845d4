#!/usr/bin/python3
"""Generates tests/pool3d_fixtures.h: PyTorch 1.13's values and input
gradients for F.max_pool3d, F.avg_pool3d and F.adaptive_avg_pool3d
(nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveAvgPool3d), checked by
tests/test_nn_pool3d.c.

Usage (from the repository root, with Debian's python3-torch 1.13):

    /usr/bin/python3 tools/gen_pool3d_fixtures.py > tests/pool3d_fixtures.h

Each case runs in float64 and in float32 on the same input (which float32
holds exactly) with a cotangent gy; the gradient is that of sum(y * gy).
The header holds the cases' settings too (pool3d_cases[]), so the test
and this script cannot drift apart. Inputs with ties, NaN and -inf check
which element gets the gradient.
"""
import os
import sys
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_fixture import nans, neg_inf, tensor_emitter, ties, two_dtype_case, wave  # noqa: E402

warnings.simplefilter("ignore")
D = torch.float64
MAX, AVG, ADAPT = 0, 1, 2
out = []
emit = tensor_emitter(out)
rows = []


def trip(v, default):
    if v is None:
        return default
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


# name, kind, x shape, kwargs, input maker
CASES = [
    ("m_k2", MAX, (2, 1, 4, 4, 4), dict(kernel_size=2), None),
    ("m_k3s2p1", MAX, (1, 2, 5, 6, 7), dict(kernel_size=3, stride=2, padding=1), None),
    ("m_aniso", MAX, (1, 2, 6, 7, 4),
     dict(kernel_size=(2, 3, 1), stride=(1, 2, 1), padding=(1, 1, 0), dilation=(2, 1, 1)), None),
    ("m_dil", MAX, (1, 1, 5, 5, 7),
     dict(kernel_size=2, stride=1, padding=(1, 0, 1), dilation=(2, 2, 3)), None),
    ("m_ceil", MAX, (1, 1, 6, 6, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
     None),
    ("m_ceil_drop", MAX, (1, 1, 5, 5, 5),
     dict(kernel_size=2, stride=2, padding=1, ceil_mode=True), None),
    ("m_ceil_dil", MAX, (1, 2, 7, 6, 5),
     dict(kernel_size=(3, 2, 2), stride=(2, 3, 2), padding=(1, 1, 0), dilation=(2, 1, 2),
          ceil_mode=True), None),
    ("m_unbatched", MAX, (2, 3, 4, 5), dict(kernel_size=2, stride=1), None),
    ("m_ties", MAX, (1, 2, 3, 4, 4), dict(kernel_size=2, stride=1), ties),
    ("m_ties_pad", MAX, (1, 1, 4, 4, 5), dict(kernel_size=3, stride=2, padding=1), ties),
    ("m_nan", MAX, (1, 2, 4, 4, 4), dict(kernel_size=2, stride=1), nans),
    ("m_nan_s2", MAX, (1, 2, 4, 6, 4), dict(kernel_size=2), nans),
    ("m_neginf", MAX, (1, 1, 4, 3, 3), dict(kernel_size=2, stride=1, padding=1), neg_inf),
    ("a_k2", AVG, (2, 1, 4, 4, 4), dict(kernel_size=2), None),
    ("a_k3s2p1", AVG, (1, 2, 5, 6, 7), dict(kernel_size=3, stride=2, padding=1), None),
    ("a_k3s2p1_ex", AVG, (1, 2, 5, 6, 7),
     dict(kernel_size=3, stride=2, padding=1, count_include_pad=False), None),
    ("a_ceil", AVG, (1, 2, 6, 6, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
     None),
    ("a_ceil_ex", AVG, (1, 2, 6, 6, 6),
     dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), None),
    ("a_ceil_nopad", AVG, (1, 1, 5, 7, 5),
     dict(kernel_size=(2, 3, 2), stride=(2, 2, 3), ceil_mode=True), None),
    ("a_ceil_drop", AVG, (1, 1, 5, 5, 5),
     dict(kernel_size=2, stride=2, padding=1, ceil_mode=True), None),
    ("a_div", AVG, (1, 2, 4, 5, 6),
     dict(kernel_size=(2, 2, 3), stride=(1, 2, 2), padding=(1, 1, 1), divisor_override=5), None),
    ("a_div_ceil", AVG, (2, 1, 6, 5, 6),
     dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False,
          divisor_override=-3), None),
    ("a_unbatched", AVG, (2, 3, 4, 5), dict(kernel_size=(1, 2, 2)), None),
    ("a_aniso_ex", AVG, (1, 2, 7, 5, 6),
     dict(kernel_size=(3, 1, 2), stride=(2, 1, 1), padding=(1, 0, 1), count_include_pad=False),
     None),
    ("ad_2", ADAPT, (2, 1, 4, 5, 6), dict(output_size=2), None),
    ("ad_234", ADAPT, (1, 1, 5, 7, 9), dict(output_size=(2, 3, 4)), None),
    ("ad_1", ADAPT, (1, 2, 3, 4, 5), dict(output_size=1), None),
    ("ad_up", ADAPT, (1, 1, 3, 4, 5), dict(output_size=(5, 3, 7)), None),
    ("ad_unbatched", ADAPT, (2, 4, 4, 6), dict(output_size=(2, 2, 3)), None),
    ("ad_div", ADAPT, (1, 1, 4, 6, 8), dict(output_size=2), None),
    ("ad_d1", ADAPT, (2, 1, 6, 3, 4), dict(output_size=(4, 1, 1)), None),
]

FN = {MAX: F.max_pool3d, AVG: F.avg_pool3d, ADAPT: F.adaptive_avg_pool3d}

for k, (name, kind, shape, kw, make) in enumerate(CASES):
    x = make(shape) if make else wave(shape, 0.71 + 0.07 * k, 0.3 * k, 1.5, 0.2)
    y = two_dtype_case(emit, name, x, lambda t: FN[kind](t, **kw), 1.19, 0.4 + k)
    if kind == ADAPT:
        o = trip(kw["output_size"], None)
        kern = stride = pad = dil = (0, 0, 0)
    else:
        kern = trip(kw["kernel_size"], None)
        stride = trip(kw.get("stride"), (0, 0, 0))
        pad = trip(kw.get("padding"), (0, 0, 0))
        dil = trip(kw.get("dilation"), (0, 0, 0))
        o = tuple(y.shape[-3:])
    sh = ", ".join(str(s) for s in shape)
    t3 = lambda v: "{%d, %d, %d}" % v  # noqa: E731
    rows.append(
        f'    {{"{name}", {kind}, {t3(kern)}, {t3(stride)}, {t3(pad)}, {t3(dil)}, '
        f'{str(kw.get("ceil_mode", False)).lower()}, '
        f'{str(not kw.get("count_include_pad", True)).lower()}, '
        f'{kw.get("divisor_override") or 0}, {t3(o)}, {len(shape)}, {{{sh}}},\n'
        f'     {name}_x, {name}_gy, {name}_y, {name}_dx, {name}_y32, {name}_dx32, '
        f'{x.numel()}, {y.numel()}}},')

print("/* Generated by tools/gen_pool3d_fixtures.py (PyTorch %s); do not edit. */"
      % torch.__version__)
print("#ifndef POOL3D_FIXTURES_H")
print("#define POOL3D_FIXTURES_H")
print("#include <math.h>")
print("#include <stdbool.h>")
print("#include <stdint.h>")
print("\n\n".join(out))
print("""
/* kind: 0 max_pool3d, 1 avg_pool3d, 2 adaptive_avg_pool3d (out: its
 * output size); k, s, p, d: kernel, stride, padding, dilation (d, h, w),
 * 0 where PyTorch's default was used */
typedef struct pool3d_case {
  const char *name;
  int kind;
  int64_t k[3], s[3], p[3], d[3];
  bool ceil_mode, exclude_pad;
  int64_t divisor_override, out[3];
  int nd;
  int64_t shape[5];
  const double *x, *gy, *y, *dx, *y32, *dx32;
  int64_t nx, ny;
} pool3d_case;

static const pool3d_case pool3d_cases[] = {""")
print("\n".join(rows))
print("};")
print("#endif")
