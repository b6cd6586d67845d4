#!/usr/bin/python3
"""Generates tests/conv3d_fixtures.h and tests/fixtures/torch_conv3d.safetensors:
PyTorch's values for F.conv3d, F.conv_transpose3d and F.conv_transpose1d
(and so nn.Conv3d, nn.ConvTranspose3d, nn.ConvTranspose1d), read by
tests/test_nn_conv3d.c.

Usage (from the repository root, with Debian's python3-torch 1.13):

    /usr/bin/python3 tools/gen_conv3d_fixtures.py > tests/conv3d_fixtures.h

Everything is computed in float64 from inputs that float32 holds exactly
(the float32 tests read the same inputs and compare with the float64
values at a float tolerance). Each case has a cotangent gy, and the
gradients are those of sum(y * gy). The cases, with their settings, are
the table c3_cases (kind 0 conv3d, 1 conv_transpose3d, 2
conv_transpose1d; for the 1-D kind only the first stride, dilation and
output_padding entries and padding[0..1] count).

The safetensors file is the float32 state dict of the checkpoint's model,
Sequential(Conv3d(2, 3, (2, 3, 3), stride=(1, 2, 2), padding=1), ReLU(),
ConvTranspose3d(3, 2, 2, stride=2, output_padding=(1, 0, 1), groups=1),
ReLU(), Conv3d(2, 2, 3, padding='same', groups=2, bias=False)), from
torch.manual_seed(0); ck_x [2, 2, 3, 5, 4] and ck_y its output. The
1-D checkpoint (torch_convt1d.safetensors) is Sequential(
ConvTranspose1d(2, 4, 3, stride=2, padding=1, output_padding=1), ReLU(),
ConvTranspose1d(4, 2, 2, groups=2, bias=False, dilation=2)) on ck1_x
[2, 2, 5].
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_fixture import tensor_emitter, wave, write_safetensors  # noqa: E402

D = torch.float64
nn = torch.nn
out = []
emit = tensor_emitter(out)


# kind, name, x shape, w shape, bias, stride, padding (per axis, or 'same'),
# dilation, groups, output_padding
CASES = [
    (0, "basic", (2, 3, 4, 5, 5), (4, 3, 2, 3, 3), True, (1, 1, 1), (0, 0, 0), (1, 1, 1), 1, None),
    (0, "sdp", (1, 2, 6, 6, 5), (3, 2, 3, 2, 2), True, (2, 1, 2), (1, 0, 1), (1, 2, 1), 1, None),
    (0, "groups", (2, 4, 7, 4, 4), (6, 2, 2, 2, 2), True, (3, 1, 1), (2, 1, 0), (2, 1, 1), 2, None),
    (0, "depthwise", (1, 3, 5, 4, 4), (6, 1, 3, 3, 1), True, (1, 1, 1), (1, 1, 0), (1, 1, 1), 3,
     None),
    (0, "same", (1, 2, 5, 4, 6), (3, 2, 4, 2, 3), False, (1, 1, 1), "same", (1, 2, 1), 1, None),
    (0, "unbatched", (2, 4, 4, 4), (3, 2, 2, 2, 2), True, (2, 2, 2), (0, 0, 0), (1, 1, 1), 1,
     None),
    # padding 3 at stride 5 over one plane: no tap reaches x (y is the bias)
    (0, "padonly", (1, 1, 1, 3, 3), (2, 1, 1, 2, 2), True, (5, 1, 1), (3, 0, 0), (1, 1, 1), 1,
     None),
    (0, "stride4", (1, 2, 9, 3, 3), (2, 2, 2, 2, 2), False, (4, 1, 1), (0, 1, 1), (1, 1, 1), 1,
     None),
    (1, "basic", (2, 3, 3, 4, 4), (3, 2, 2, 3, 3), True, (1, 1, 1), (0, 0, 0), (1, 1, 1), 1,
     (0, 0, 0)),
    (1, "stride", (1, 2, 3, 3, 2), (2, 3, 3, 3, 2), True, (2, 2, 2), (1, 1, 0), (1, 1, 1), 1,
     (1, 1, 1)),
    (1, "groups", (2, 4, 3, 3, 3), (4, 3, 2, 2, 2), True, (1, 2, 1), (0, 0, 0), (2, 1, 1), 2,
     (1, 1, 0)),
    (1, "depthwise", (1, 3, 4, 3, 3), (3, 1, 3, 2, 2), False, (1, 1, 1), (1, 0, 0), (1, 1, 1), 3,
     (0, 0, 0)),
    (1, "unbatched", (2, 3, 3, 3), (2, 2, 2, 2, 2), True, (3, 1, 2), (2, 0, 1), (1, 1, 1), 1,
     (0, 0, 1)),
    (1, "bigpad", (1, 2, 3, 2, 2), (2, 2, 3, 2, 2), True, (2, 1, 1), (3, 0, 0), (1, 1, 1), 1,
     (0, 0, 0)),
    (2, "basic", (2, 3, 7), (3, 4, 3), True, (1,), (0,), (1,), 1, (0,)),
    (2, "sdgo", (2, 4, 5), (4, 3, 3), True, (2,), (1,), (2,), 2, (1,)),
    (2, "unbatched", (3, 6), (3, 2, 4), False, (3,), (2,), (1,), 1, (2,)),
]


def run(kind, x, w, b, st, pad, dil, g, op):
    if kind == 0:
        return F.conv3d(x, w, b, st, pad, dil, g)
    if kind == 1:
        return F.conv_transpose3d(x, w, b, st, pad, op, g, dil)
    return F.conv_transpose1d(x, w, b, st, pad, op, g, dil)


def c_ints(v, n):
    v = list(v) + [0] * (n - len(v))
    return "{" + ", ".join(str(int(a)) for a in v) + "}"


table = []
for k, (kind, name, xs, wsh, has_b, st, pad, dil, g, op) in enumerate(CASES):
    pre = ("c3", "ct3", "ct1")[kind] + "_" + name
    x = wave(xs, 0.77 + 0.05 * k, 0.3 * k, 1.5, 0.25).requires_grad_(True)
    w = wave(wsh, 0.9 + 0.07 * k, k, 0.5).requires_grad_(True)
    b = wave((wsh[0] if kind == 0 else wsh[1] * g,), 0.6, k, 0.5).requires_grad_(True) \
        if has_b else None
    y = run(kind, x, w, b, st, pad, dil, g, op)
    gy = wave(y.shape, 1.31, 0.5 + k, 1.0)
    (y * gy).sum().backward()
    for s, v in (("x", x), ("w", w), ("b", b), ("gy", gy), ("y", y)):
        if v is not None:
            emit(f"{pre}_{s}", v.detach())
    emit(f"{pre}_dx", x.grad)
    emit(f"{pre}_dw", w.grad)
    if b is not None:
        emit(f"{pre}_db", b.grad)
    same = pad == "same"
    pads = [0] * 6 if same else [p for p in pad for _ in range(2)]
    bname = f"{pre}_b" if b is not None else "NULL"
    dbname = f"{pre}_db" if b is not None else "NULL"
    table.append(
        f"    {{{kind}, \"{pre}\", {len(xs)}, {c_ints(xs, 5)}, {c_ints(wsh, 5)}, {c_ints(st, 3)}, "
        f"{c_ints(pads, 6)}, {c_ints(dil, 3)}, {g}, {c_ints(op or (), 3)}, {int(same)}, "
        f"{pre}_x, {pre}_w, {bname}, {pre}_gy, {pre}_y, {pre}_dx, {pre}_dw, {dbname}, "
        f"{len(y.flatten())}}},")

# ------------------------------------------------------------ checkpoints
torch.manual_seed(0)
ck = nn.Sequential(nn.Conv3d(2, 3, (2, 3, 3), stride=(1, 2, 2), padding=1), nn.ReLU(),
                   nn.ConvTranspose3d(3, 2, 2, stride=2, output_padding=(1, 0, 1)), nn.ReLU(),
                   nn.Conv3d(2, 2, 3, padding="same", groups=2, bias=False))
xck = wave((2, 2, 3, 5, 4), 0.71, 0.3, 1.5, 0.4).float()
with torch.no_grad():
    yck = ck(xck)
emit("ck_x", xck)
emit("ck_y", yck)
write_safetensors("torch_conv3d.safetensors", ck.state_dict())
torch.manual_seed(1)
ck1 = nn.Sequential(nn.ConvTranspose1d(2, 4, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
                    nn.ConvTranspose1d(4, 2, 2, groups=2, bias=False, dilation=2))
xck1 = wave((2, 2, 5), 0.63, 0.1, 1.5, 0.2).float()
with torch.no_grad():
    yck1 = ck1(xck1)
emit("ck1_x", xck1)
emit("ck1_y", yck1)
write_safetensors("torch_convt1d.safetensors", ck1.state_dict())

print("/* Generated by tools/gen_conv3d_fixtures.py (PyTorch %s); do not edit. */"
      % torch.__version__)
print("#ifndef CONV3D_FIXTURES_H")
print("#define CONV3D_FIXTURES_H")
print("#include <stddef.h>")
print("#include <stdint.h>")
print("\n\n".join(out))
print("""
/* One case: kind 0 conv3d, 1 conv_transpose3d, 2 conv_transpose1d. */
typedef struct c3_case {
  int kind;
  const char *name;
  int nd; /* x's rank */
  int64_t xs[5], ws[5], stride[3], padding[6], dilation[3], groups, output_padding[3];
  int same;
  const double *x, *w, *b, *gy, *y, *dx, *dw, *db; /* b, db NULL without bias */
  int64_t ny;
} c3_case;

static const c3_case c3_cases[] = {""")
print("\n".join(table))
print("};")
print("#endif")
