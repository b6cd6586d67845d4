#!/usr/bin/python3
"""Generates tests/gnorm_fixtures.h and tests/fixtures/torch_gnorm.safetensors:
PyTorch's values for nn.GroupNorm and nn.InstanceNorm1d / 2d
(tests/test_nn_gnorm.c).

Usage (from the repository root, with Debian's python3-torch 1.13):

    /usr/bin/python3 tools/gen_gnorm_fixtures.py > tests/gnorm_fixtures.h

Everything is computed in float64 from inputs that float32 holds exactly
(so the float32 tests read the same inputs and compare with the float64
values at a float tolerance). Each case has a cotangent gy, and the
gradients are those of sum(y * gy).

Names:
  gn_<case>_{x,gy,w,b,y,dx,dw,db}   GroupNorm cases (w, b absent without
                                    affine), shapes in tests/test_nn_gnorm.c
  in_t_{x,gy,y,dx,dw,db}            InstanceNorm1d(3, momentum=0.2,
                                    affine=True, track_running_stats=True),
                                    weight in_t_w and bias in_t_b, three
                                    training steps on x [3 steps][2,3,5]
  in_t_rm, in_t_rv                  its running statistics after each step
  in_t_{xe,gye,ye,dxe,dwe,dbe}      then evaluation mode on xe [2,3,5]
  in_d_{x,gy,y,dx}                  InstanceNorm2d(3) (the defaults) on
                                    [2,3,2,3]
  in_u_{x,rm,rv,xe,ye}              InstanceNorm2d(2, track_running_stats=
                                    True) on unbatched [2,3,3]: running
                                    statistics after one training step, then
                                    evaluation mode on unbatched xe
  ck_x, ck_y                        the checkpoint's model in evaluation
                                    mode on ck_x [2,4,3]
The safetensors file is the state dict of Sequential(GroupNorm(2, 4),
InstanceNorm1d(4, affine=True, track_running_stats=True)) in float32 after
one step of SGD and its statistics' update.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_fixture import tensor_emitter, trained_checkpoint, wave  # noqa: E402

D = torch.float64
out = []
emit = tensor_emitter(out)


def run(layer, x, gy):
    x = x.clone().requires_grad_(True)
    y = layer(x)
    params = [p for p in (layer.weight, layer.bias) if p is not None]
    for p in params:
        p.grad = None
    (y * gy).sum().backward()
    return y.detach(), x.grad, [p.grad.clone() for p in params]


# ------------------------------------------------------------- GroupNorm
GN_CASES = [  # name, groups, channels, shape, affine
    ("a", 2, 4, (2, 4, 3), True),
    ("one", 1, 4, (1, 4, 3), True),      # N = 1, G = 1
    ("gc", 4, 4, (2, 4, 3), True),       # G = C
    ("const", 2, 4, (2, 4, 2, 2), True),  # group 0 of sample 0 constant
    ("rank2", 2, 6, (3, 6), True),
    ("rank5", 2, 4, (2, 4, 2, 1, 2), True),
    ("noaff", 3, 6, (2, 6, 2), False),
]
for k, (name, g, c, shape, affine) in enumerate(GN_CASES):
    m = torch.nn.GroupNorm(g, c, affine=affine).to(D)
    x = wave(shape, 0.77 + 0.1 * k, 0.3 * k, 1.5, 0.25)
    if name == "const":
        x[0, :2] = 1.5
    gy = wave(shape, 1.31, 0.5 + k, 1.0)
    emit(f"gn_{name}_x", x)
    emit(f"gn_{name}_gy", gy)
    if affine:
        with torch.no_grad():
            m.weight.copy_(wave((c,), 0.9, k, 0.5, 1.0))
            m.bias.copy_(wave((c,), 0.6, k, 0.5))
        emit(f"gn_{name}_w", m.weight)
        emit(f"gn_{name}_b", m.bias)
    y, dx, dp = run(m, x, gy)
    emit(f"gn_{name}_y", y)
    emit(f"gn_{name}_dx", dx)
    if affine:
        emit(f"gn_{name}_dw", dp[0])
        emit(f"gn_{name}_db", dp[1])

# ---------------------------------------------------------- InstanceNorm
m = torch.nn.InstanceNorm1d(3, momentum=0.2, affine=True, track_running_stats=True).to(D)
with torch.no_grad():
    m.weight.copy_(wave((3,), 0.9, 1, 0.5, 1.0))
    m.bias.copy_(wave((3,), 0.6, 2, 0.5))
emit("in_t_w", m.weight)
emit("in_t_b", m.bias)
X = wave((3, 2, 3, 5), 0.83, 0.1, 1.5, 0.5)
GY = wave((3, 2, 3, 5), 1.17, 0.9, 1.0)
ys, dxs, dws, dbs, rms, rvs = [], [], [], [], [], []
m.train()
for t in range(3):
    y, dx, (dw, db) = run(m, X[t], GY[t])
    ys.append(y)
    dxs.append(dx)
    dws.append(dw)
    dbs.append(db)
    rms.append(m.running_mean.clone())
    rvs.append(m.running_var.clone())
assert int(m.num_batches_tracked) == 0
for name, v in (("x", X), ("gy", GY), ("y", ys), ("dx", dxs), ("dw", dws), ("db", dbs),
                ("rm", rms), ("rv", rvs)):
    emit(f"in_t_{name}", torch.stack(v) if isinstance(v, list) else v)
m.eval()
XE = wave((2, 3, 5), 1.07, 0.4, 2.0, -0.3)
GYE = wave((2, 3, 5), 0.61, 0.2, 1.0)
y, dx, (dw, db) = run(m, XE, GYE)
for name, v in (("xe", XE), ("gye", GYE), ("ye", y), ("dxe", dx), ("dwe", dw), ("dbe", db)):
    emit(f"in_t_{name}", v)

m = torch.nn.InstanceNorm2d(3).to(D)
x = wave((2, 3, 2, 3), 0.57, 0.8, 1.2, 0.1)
gy = wave((2, 3, 2, 3), 1.41, 0.3, 1.0)
y, dx, _ = run(m, x, gy)
for name, v in (("x", x), ("gy", gy), ("y", y), ("dx", dx)):
    emit(f"in_d_{name}", v)

m = torch.nn.InstanceNorm2d(2, track_running_stats=True).to(D)
x = wave((2, 3, 3), 0.49, 0.6, 1.3, 0.7)
m(x)
xe = wave((2, 3, 3), 0.93, 0.2, 1.1)
rm, rv = m.running_mean.clone(), m.running_var.clone()
m.eval()
with torch.no_grad():
    ye = m(xe)
for name, v in (("x", x), ("rm", rm), ("rv", rv), ("xe", xe), ("ye", ye)):
    emit(f"in_u_{name}", v)

# ------------------------------------------------------------ checkpoint
torch.manual_seed(0)
ck = torch.nn.Sequential(torch.nn.GroupNorm(2, 4),
                         torch.nn.InstanceNorm1d(4, affine=True, track_running_stats=True))
trained_checkpoint(ck, (2, 4, 3), emit, "torch_gnorm.safetensors")

print("/* Generated by tools/gen_gnorm_fixtures.py (PyTorch %s); do not edit. */"
      % torch.__version__)
print("#ifndef GNORM_FIXTURES_H")
print("#define GNORM_FIXTURES_H")
print("\n\n".join(out))
print("#endif")
