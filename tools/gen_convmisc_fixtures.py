#!/usr/bin/python3
"""Generates tests/convmisc_fixtures.h: PyTorch 1.13's values for
nn.Conv1d / nn.Conv2d with padding_mode 'reflect', 'replicate',
'circular' (and 'zeros') (tests/test_nn_convmisc.c).

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
computed on the batch of one and its batch axis dropped.
"""
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_fixture import c_double_array  # noqa: E402

warnings.simplefilter("ignore")
D = torch.float64
nn = torch.nn
out = []
MODES = {"zeros": 0, "reflect": 1, "replicate": 2, "circular": 3}


def emit(name, values):
    out.append(c_double_array(name, torch.as_tensor(values).flatten().tolist()))


def wave(shape, a, b, scale, shift=0.0):
    """Deterministic values that float32 holds exactly."""
    n = 1
    for d in shape:
        n *= d
    i = torch.arange(n, dtype=D)
    v = (scale * torch.sin(a * i + b) * (1 + 0.25 * (i % 3)) + shift).reshape(shape)
    return v.float().to(D)


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
    with torch.no_grad():
        m.weight.copy_(wave(m.weight.shape, 0.9 + 0.1 * k, k, 0.5))
        if m.bias is not None:
            m.bias.copy_(wave(m.bias.shape, 0.6, k, 0.5))
    x = wave(shape, 0.77 + 0.1 * k, 0.3 * k, 1.5, 0.25).requires_grad_(True)
    y = m(x.unsqueeze(0)).squeeze(0) if via_batch else m(x)
    gy = wave(y.shape, 1.31, 0.5 + k, 1.0)
    (y * gy).sum().backward()
    arrays = [("x", x), ("gy", gy), ("w", m.weight), ("y", y), ("dx", x.grad),
              ("dw", m.weight.grad)]
    if m.bias is not None:
        arrays += [("b", m.bias), ("db", m.bias.grad)]
    for s, v in arrays:
        emit(f"{name}_{s}", v.detach())
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

print("/* Generated by tools/gen_convmisc_fixtures.py (PyTorch %s); do not edit. */"
      % torch.__version__)
print("#ifndef CONVMISC_FIXTURES_H")
print("#define CONVMISC_FIXTURES_H")
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
print("\n\n".join(out))
print("\nstatic const conv_fx conv_cases[] = {")
print("\n".join(table))
print("};")
print("#endif")
