#!/usr/bin/python3
"""Generates tests/cnn1d_fixtures.h and tests/fixtures/torch_cnn1d.safetensors:
PyTorch's values for nn.Conv1d, nn.MaxPool1d, nn.AvgPool1d,
nn.AdaptiveAvgPool1d and nn.AdaptiveAvgPool2d (tests/test_nn_cnn1d.c).

Usage (from the repository root, with Debian's python3-torch 1.13):

    /usr/bin/python3 tools/gen_cnn1d_fixtures.py > tests/cnn1d_fixtures.h

Everything is computed in float64 from inputs that float32 holds exactly
(the float32 tests read the same inputs and compare with the float64
values at a float tolerance). Each case has a cotangent gy, and the
gradients are those of sum(y * gy).

Names (the cases' settings and shapes are in tests/test_nn_cnn1d.c, in
the order of the lists below):
  conv_<case>_{x,gy,w,b,y,dx,dw,db}   Conv1d cases (b, db absent without
                                      bias)
  pool_<case>_{x,gy,y,dx}             MaxPool1d / AvgPool1d cases
  ad1_<case>_{x,gy,y,dx}              AdaptiveAvgPool1d cases
  ad2_<case>_{x,gy,y,dx}              AdaptiveAvgPool2d cases
  ck_x, ck_y                          the checkpoint's model in evaluation
                                      mode on ck_x [2,2,16]
The safetensors file is the float32 state dict of the checkpoint's model,
Sequential(Conv1d(2, 4, 3, padding=1), ReLU(), MaxPool1d(2),
Conv1d(4, 4, 3, groups=2), AvgPool1d(2, ceil_mode=True),
AdaptiveAvgPool1d(3), Flatten(), Linear(12, 3)), initialised from
torch.manual_seed(0).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# wave's values are distinct enough for max pooling to have no ties
from torch_fixture import tensor_emitter, wave, write_safetensors  # noqa: E402

D = torch.float64
nn = torch.nn
out = []
emit = tensor_emitter(out)


def run(layer, x, gy):
    x = x.clone().requires_grad_(True)
    y = layer(x)
    params = [p for p in (getattr(layer, "weight", None), getattr(layer, "bias", None))
              if p is not None]
    (y * gy).sum().backward()
    return y.detach(), x.grad, [p.grad.clone() for p in params]


# ---------------------------------------------------------------- Conv1d
CONV = [  # name, in, out, k, kwargs, x shape
    ("basic", 3, 4, 3, {}, (2, 3, 9)),
    ("sdg", 4, 6, 3, dict(stride=2, padding=1, dilation=2, groups=2), (2, 4, 11)),
    ("same", 2, 3, 4, dict(padding="same", bias=False), (1, 2, 7)),
    ("dw", 3, 6, 2, dict(stride=3, groups=3), (3, 8)),  # depthwise, unbatched
]
for k, (name, cin, cout, ks, kw, shape) in enumerate(CONV):
    m = nn.Conv1d(cin, cout, ks, **kw).to(D)
    with torch.no_grad():
        m.weight.copy_(wave(m.weight.shape, 0.9 + 0.1 * k, k, 0.5))
        if m.bias is not None:
            m.bias.copy_(wave(m.bias.shape, 0.6, k, 0.5))
    x = wave(shape, 0.77 + 0.1 * k, 0.3 * k, 1.5, 0.25)
    y0 = m(x)
    gy = wave(y0.shape, 1.31, 0.5 + k, 1.0)
    y, dx, dp = run(m, x, gy)
    emit(f"conv_{name}_x", x)
    emit(f"conv_{name}_gy", gy)
    emit(f"conv_{name}_w", m.weight)
    if m.bias is not None:
        emit(f"conv_{name}_b", m.bias)
    emit(f"conv_{name}_y", y)
    emit(f"conv_{name}_dx", dx)
    emit(f"conv_{name}_dw", dp[0])
    if m.bias is not None:
        emit(f"conv_{name}_db", dp[1])

# ------------------------------------------------------- Max / AvgPool1d
POOL = [  # name, module, x shape
    ("max_a", nn.MaxPool1d(2), (2, 3, 8)),
    ("max_b", nn.MaxPool1d(3, stride=2, padding=1, dilation=2, ceil_mode=True), (2, 2, 10)),
    ("max_u", nn.MaxPool1d(3, stride=2, ceil_mode=True), (2, 10)),
    ("avg_a", nn.AvgPool1d(3), (2, 3, 9)),
    ("avg_b", nn.AvgPool1d(4, stride=3, padding=2, ceil_mode=True, count_include_pad=False),
     (2, 2, 11)),
    ("avg_c", nn.AvgPool1d(3, stride=2, padding=1, ceil_mode=True), (2, 2, 10)),
]
for k, (name, m, shape) in enumerate(POOL):
    x = wave(shape, 0.83 + 0.1 * k, 0.2 * k, 1.5, 0.1)
    gy = wave(m(x).shape, 1.17, 0.9 + k, 1.0)
    y, dx, _ = run(m, x, gy)
    for s, v in (("x", x), ("gy", gy), ("y", y), ("dx", dx)):
        emit(f"pool_{name}_{s}", v)

# --------------------------------------------------- adaptive averages
AD1 = [  # name, output size, x shape
    ("l10_3", 3, (2, 3, 10)),
    ("l7_4", 4, (2, 2, 7)),
    ("l3_5", 5, (1, 2, 3)),   # more outputs than inputs: windows repeat
    ("l8_4", 4, (2, 2, 8)),   # divisible: disjoint windows
    ("l6_1", 1, (2, 3, 6)),   # global
    ("u10_4", 4, (3, 10)),    # unbatched
]
for k, (name, n, shape) in enumerate(AD1):
    m = nn.AdaptiveAvgPool1d(n)
    x = wave(shape, 0.61 + 0.1 * k, 0.4 * k, 1.5, 0.3)
    gy = wave(m(x).shape, 1.23, 0.7 + k, 1.0)
    y, dx, _ = run(m, x, gy)
    for s, v in (("x", x), ("gy", gy), ("y", y), ("dx", dx)):
        emit(f"ad1_{name}_{s}", v)

AD2 = [  # name, (oh, ow), x shape
    ("h10w7_3x4", (3, 4), (2, 3, 10, 7)),
    ("h8w6_4x3", (4, 3), (2, 2, 8, 6)),   # divisible
    ("h5w5_1x1", (1, 1), (1, 2, 5, 5)),   # global
    ("u6x4_2x5", (2, 5), (2, 6, 4)),      # unbatched; H divisible, W widened
    ("h7w6_7x4", (7, 4), (1, 2, 7, 6)),   # H kept
]
for k, (name, o, shape) in enumerate(AD2):
    m = nn.AdaptiveAvgPool2d(o)
    x = wave(shape, 0.53 + 0.1 * k, 0.1 * k, 1.5, -0.2)
    gy = wave(m(x).shape, 1.07, 0.3 + k, 1.0)
    y, dx, _ = run(m, x, gy)
    for s, v in (("x", x), ("gy", gy), ("y", y), ("dx", dx)):
        emit(f"ad2_{name}_{s}", v)

# ------------------------------------------------------------ checkpoint
torch.manual_seed(0)
ck = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
                   nn.Conv1d(4, 4, 3, groups=2), nn.AvgPool1d(2, ceil_mode=True),
                   nn.AdaptiveAvgPool1d(3), nn.Flatten(), nn.Linear(12, 3))
ck.eval()
xck = wave((2, 2, 16), 0.71, 0.3, 1.5, 0.4).float()
with torch.no_grad():
    yck = ck(xck)
emit("ck_x", xck)
emit("ck_y", yck)
write_safetensors("torch_cnn1d.safetensors", ck.state_dict())

print("/* Generated by tools/gen_cnn1d_fixtures.py (PyTorch %s); do not edit. */"
      % torch.__version__)
print("#ifndef CNN1D_FIXTURES_H")
print("#define CNN1D_FIXTURES_H")
print("\n\n".join(out))
print("#endif")
