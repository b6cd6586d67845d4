#!/usr/bin/python3
"""Generates tests/convmisc_fixtures.h: PyTorch 1.13's values for
nn.Conv1d / nn.Conv2d with padding_mode 'reflect', 'replicate',
'circular' (and 'zeros'), and for nn.AdaptiveMaxPool1d / 2d
(tests/test_nn_convmisc.c).

Usage (from the repository root, with Debian's python3-torch 1.13):

    /usr/bin/python3 tools/gen_convmisc_fixtures.py > tests/convmisc_fixtures.h

Everything is computed in float64 from inputs, weights and cotangents that
float32 holds exactly (the float32 tests read the same values and compare
with the float64 results at a float tolerance). The gradients are those of
sum(y * gy) in the input, weight and bias.

The header holds the arrays <case>_{x,gy,w,b,y,dx,dw,db} and a table,
conv_cases[], with each case's settings (as nn_conv1d_opts /
nn_conv2d_opts take them) and its arrays. PyTorch 1.13's F.pad refuses
circular padding of an unbatched input; such a case ("unbatched": 1) is
computed on the batch of one and its batch axis dropped. The adaptive max
pooling cases are in amax_cases[]: overlapping and disjoint windows, more
outputs than inputs, unbatched inputs, windows with ties (few distinct
values) and with NaN (two in some windows) and -inf.
"""
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_fixture import padded_conv_case, tensor_emitter, wave  # noqa: E402

warnings.simplefilter("ignore")
D = torch.float64
nn = torch.nn
out = []
MODES = {"zeros": 0, "reflect": 1, "replicate": 2, "circular": 3}
emit = tensor_emitter(out)


def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


# name, dims, in, out, kernel, kwargs, x shape, unbatched through a batch of one
CONV = [
    ("c1_reflect", 1, 3, 4, 3, dict(padding=2, padding_mode="reflect"), (2, 3, 9), False),
    ("c1_replicate_sdg", 1, 4, 6, 3,
     dict(stride=2, padding=3, dilation=2, groups=2, padding_mode="replicate"), (2, 4, 11), False),
    ("c1_circular_same_even", 1, 2, 3, 4,
     dict(padding="same", bias=False, padding_mode="circular"), (1, 2, 7), False),
    ("c1_reflect_same_dil", 1, 2, 2, 3,
     dict(padding="same", dilation=2, padding_mode="reflect"), (2, 2, 6), False),
    ("c1_replicate_u", 1, 3, 2, 2, dict(padding=1, padding_mode="replicate"), (3, 8), False),
    ("c1_circular_full", 1, 2, 2, 3, dict(padding=3, padding_mode="circular"), (2, 2, 3), False),
    ("c1_circular_u", 1, 2, 3, 3, dict(padding=2, padding_mode="circular"), (2, 5), True),
    ("c1_zeros", 1, 2, 3, 3, dict(padding=1, padding_mode="zeros"), (2, 2, 5), False),
    ("c2_reflect", 2, 2, 3, (3, 3), dict(padding=(1, 2), padding_mode="reflect"), (2, 2, 5, 6),
     False),
    ("c2_replicate_sd", 2, 2, 2, (2, 3),
     dict(stride=(2, 1), padding=(1, 1), dilation=(1, 2), padding_mode="replicate"), (1, 2, 5, 7),
     False),
    ("c2_circular_g", 2, 4, 2, 3, dict(padding=1, groups=2, padding_mode="circular"),
     (2, 4, 4, 5), False),
    ("c2_reflect_same_even", 2, 2, 3, (4, 2),
     dict(padding="same", dilation=(1, 2), bias=False, padding_mode="reflect"), (1, 2, 6, 5),
     False),
    ("c2_circular_same", 2, 2, 2, (2, 3), dict(padding="same", padding_mode="circular"),
     (1, 2, 4, 4), False),
    ("c2_replicate_u", 2, 2, 2, 3, dict(padding=(2, 1), padding_mode="replicate"), (2, 4, 4),
     False),
    ("c2_circular_u", 2, 1, 2, 3, dict(padding=(1, 2), padding_mode="circular"), (1, 3, 4), True),
]

table = []
for k, (name, dims, cin, cout, ks, kw, shape, via_batch) in enumerate(CONV):
    m = (nn.Conv1d if dims == 1 else nn.Conv2d)(cin, cout, ks, **kw).to(D)
    padded_conv_case(m, k, shape, via_batch, emit, name)
    kh, kwd = pair(ks) if dims == 2 else (1, ks)
    st = pair(kw.get("stride", 1)) if dims == 2 else (1, kw.get("stride", 1))
    di = pair(kw.get("dilation", 1)) if dims == 2 else (1, kw.get("dilation", 1))
    p = kw.get("padding", 0)
    same = p == "same"
    pd = (0, 0) if same else (pair(p) if dims == 2 else (0, p))
    sh = list(shape) + [0] * (4 - len(shape))
    has_b = m.bias is not None

    def ref(s, present=True):
        return f"{{{name}_{s}, LEN({name}_{s})}}" if present else "{NULL, 0}"

    table.append(
        f"    {{\"{name}\", {dims}, {len(shape)}, {{{', '.join(map(str, sh))}}}, {cin}, {cout}, "
        f"{{{kh}, {kwd}}}, {{{st[0]}, {st[1]}}}, {{{pd[0]}, {pd[1]}}}, {{{di[0]}, {di[1]}}}, "
        f"{kw.get('groups', 1)}, {int(same)}, {int(has_b)}, {MODES[kw['padding_mode']]},\n"
        + ",\n".join("     " + r for r in (ref("x"), ref("gy"), ref("w"), ref("b", has_b),
                                             ref("y"), ref("dx"), ref("dw"), ref("db", has_b)))
        + "},")

# -------------------------------------------------- adaptive max pooling
def quantized(shape, a, b):
    """Few distinct values, so windows hold ties."""
    return torch.round(wave(shape, a, b, 2.0)).to(D)


def with_nans(x, every, inf_every):
    """NaN at every `every`-th element (two per window somewhere), -inf at
    every `inf_every`-th."""
    x = x.clone().flatten()
    x[3::every] = float("nan")
    x[4::every] = float("nan")
    x[1::inf_every] = float("-inf")
    return x


AMAX = [  # name, dims, output size, x shape, values
    ("am1_l10_3", 1, 3, (2, 3, 10), None),
    ("am1_l7_4", 1, 4, (2, 2, 7), None),
    ("am1_l3_5", 1, 5, (1, 2, 3), None),   # more outputs than inputs: windows repeat
    ("am1_l8_4", 1, 4, (2, 2, 8), None),   # divisible: disjoint windows
    ("am1_l6_1", 1, 1, (2, 3, 6), None),   # global
    ("am1_u10_4", 1, 4, (3, 10), None),    # unbatched
    ("am1_ties", 1, 4, (2, 2, 9), "ties"),
    ("am1_nan", 1, 3, (1, 2, 11), "nan"),
    ("am2_h10w7_3x4", 2, (3, 4), (2, 3, 10, 7), None),
    ("am2_h8w6_4x3", 2, (4, 3), (2, 2, 8, 6), None),   # divisible
    ("am2_h5w5_1x1", 2, (1, 1), (1, 2, 5, 5), None),   # global
    ("am2_u6x4_2x5", 2, (2, 5), (2, 6, 4), None),      # unbatched; H divisible, W widened
    ("am2_h7w6_7x4", 2, (7, 4), (1, 2, 7, 6), None),   # H kept
    ("am2_ties", 2, (4, 3), (2, 2, 6, 7), "ties"),
    ("am2_ties_div", 2, (2, 2), (1, 2, 4, 6), "ties"),  # divisible, with ties
    ("am2_nan", 2, (3, 2), (1, 2, 7, 5), "nan"),
    # short windows (laid out with a repeat) whose first and last elements
    # are NaN: the gradient goes to the last one
    ("am1_nan_short", 1, 4, (1, 2, 7), [0, 1, 12, 13]),
    ("am2_nan_short", 2, (3, 3), (1, 1, 5, 5), [0, 6, 18, 24]),
]
amax_table = []
for k, (name, dims, osz, shape, kind) in enumerate(AMAX):
    m = nn.AdaptiveMaxPool1d(osz) if dims == 1 else nn.AdaptiveMaxPool2d(osz)
    if kind == "ties":
        x = quantized(shape, 0.71 + 0.1 * k, 0.2 * k)
    elif isinstance(kind, list):
        x = wave(shape, 0.57 + 0.1 * k, 0.3 * k, 1.5).flatten()
        x[kind] = float("nan")
        x = x.reshape(shape)
    elif kind == "nan":
        x = with_nans(wave(shape, 0.57 + 0.1 * k, 0.3 * k, 1.5), 7, 5).reshape(shape)
    else:
        x = wave(shape, 0.61 + 0.1 * k, 0.4 * k, 1.5, 0.3)
    x = x.clone().requires_grad_(True)
    y = m(x)
    gy = wave(y.shape, 1.23, 0.7 + k, 1.0)
    (y * gy).sum().backward()
    for s_, v in (("x", x), ("gy", gy), ("y", y), ("dx", x.grad)):
        emit(f"{name}_{s_}", v.detach())
    oh, ow = (1, osz) if dims == 1 else osz
    sh = list(shape) + [0] * (4 - len(shape))
    amax_table.append(
        f"    {{\"{name}\", {dims}, {len(shape)}, {{{', '.join(map(str, sh))}}}, {oh}, {ow},\n"
        + ",\n".join(f"     {{{name}_{s_}, LEN({name}_{s_})}}" for s_ in ("x", "gy", "y", "dx"))
        + "},")

print("/* Generated by tools/gen_convmisc_fixtures.py (PyTorch %s); do not edit. */"
      % torch.__version__)
print("#ifndef CONVMISC_FIXTURES_H")
print("#define CONVMISC_FIXTURES_H")
print("#include <math.h>")
print("#include <stddef.h>")
print("#include <stdint.h>\n")
print("#define LEN(a) ((int64_t)(sizeof(a) / sizeof((a)[0])))\n")
print("typedef struct fx_ref {\n  const double *v;\n  int64_t n;\n} fx_ref;\n")
print("""/* A convolution case: dims 1 (Conv1d: kernel, stride, padding, dilation
 * in the second entries) or 2; the input's rank and shape; groups, same,
 * bias, padding_mode (nn_padding_mode's value); the arrays. */
typedef struct conv_fx {
  const char *name;
  int dims, nd;
  int64_t shape[4], in, out, k[2], stride[2], padding[2], dilation[2], groups;
  int same, bias, mode;
  fx_ref x, gy, w, b, y, dx, dw, db;
} conv_fx;
""")
print("""/* An adaptive max pooling case: dims 1 (AdaptiveMaxPool1d(ow), oh = 1)
 * or 2; the input's rank and shape; the arrays (x and y may hold NaN and
 * -inf). */
typedef struct amax_fx {
  const char *name;
  int dims, nd;
  int64_t shape[4], oh, ow;
  fx_ref x, gy, y, dx;
} amax_fx;
""")
print("\n\n".join(out))
print("\nstatic const conv_fx conv_cases[] = {")
print("\n".join(table))
print("};")
print("\nstatic const amax_fx amax_cases[] = {")
print("\n".join(amax_table))
print("};")
print("#endif")
