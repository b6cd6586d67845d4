#!/usr/bin/python3
"""Generates tests/norm3d_fixtures.h and tests/fixtures/torch_norm3d.safetensors:
PyTorch 1.13's values for the 3-D layers nn.BatchNorm3d, nn.InstanceNorm3d,
nn.ConstantPad3d, nn.ReflectionPad3d and nn.ReplicationPad3d
(tests/test_nn_norm3d.c). nn.Dropout3d draws from torch's generator, so its
test checks the mask's structure against the engine's own draws instead.

Usage (from the repository root, with Debian's python3-torch 1.13):

    /usr/bin/python3 tools/gen_norm3d_fixtures.py > tests/norm3d_fixtures.h

Everything is computed in float64 from inputs that float32 holds exactly
(the float32 tests read the same inputs and compare with the float64
values at a float tolerance). Each case has a cotangent gy, and the
gradients are those of sum(y * gy).

Names:
  bn_t_{w,b}                     BatchNorm3d(3, momentum=0.2)'s weight, bias
  bn_t_{x,gy,y,dx,dw,db,rm,rv}   three training steps on x [3 steps][2,3,2,2,3]
                                 (rm, rv: the running statistics after each)
  bn_t_{xe,gye,ye,dxe,dwe,dbe}   then evaluation mode on xe [2,3,2,2,3]
  bn_c_{x,y,rm,rv}               BatchNorm3d(2, momentum=None, affine=False):
                                 three training steps on x [3][3,2,2,1,2]
  bn_n_{x,gy,y,dx}               BatchNorm3d(2, affine=False,
                                 track_running_stats=False) on [2,2,1,2,3]
  in_t_{w,b}                     InstanceNorm3d(3, momentum=0.3, affine=True,
                                 track_running_stats=True)'s weight, bias
  in_t_{x,gy,y,dx,dw,db,rm,rv}   two training steps on x [2 steps][2,3,2,2,2]
  in_t_{xe,gye,ye,dxe,dwe,dbe}   then evaluation mode on xe [2,3,2,2,2]
  in_d_{x,gy,y,dx}               InstanceNorm3d(3) (the defaults) on
                                 [2,3,2,3,2]
  in_u_{x,rm,rv,xe,ye}           InstanceNorm3d(2, track_running_stats=True)
                                 on unbatched [2,2,2,3]: the statistics after
                                 one training step, then evaluation on xe
  <pad case>_{x,gy,y,dx}         the padding cases (PAD_CASES below; their
                                 settings and shapes are repeated in the test)
  ck_x, ck_y                     the checkpoint's model in evaluation mode
The safetensors file is the float32 state dict of Sequential(BatchNorm3d(2),
InstanceNorm3d(2, affine=True, track_running_stats=True)) after one step of
SGD and its statistics' update.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_fixture import (layer_grads, tensor_emitter, tracked_steps,  # noqa: E402
                           trained_checkpoint, wave)

D = torch.float64
nn = torch.nn
out = []
emit = tensor_emitter(out)


def emit_all(prefix, pairs):
    for name, v in pairs:
        emit(f"{prefix}_{name}", torch.stack(v) if isinstance(v, list) else v)


# ----------------------------------------------------------- BatchNorm3d
m = nn.BatchNorm3d(3, momentum=0.2).to(D)
with torch.no_grad():
    m.weight.copy_(wave((3,), 0.9, 1, 0.5, 1.0))
    m.bias.copy_(wave((3,), 0.6, 2, 0.5))
emit("bn_t_w", m.weight)
emit("bn_t_b", m.bias)
S = (2, 3, 2, 2, 3)
tracked_steps(emit, "bn_t", m, wave((3,) + S, 0.83, 0.1, 1.5, 0.5), wave((3,) + S, 1.17, 0.9, 1.0),
              3, wave(S, 1.07, 0.4, 2.0, -0.3), wave(S, 0.61, 0.2, 1.0))

m = nn.BatchNorm3d(2, momentum=None, affine=False).to(D)
S = (3, 2, 2, 1, 2)
X = wave((3,) + S, 0.71, 0.5, 1.3, 0.2)
ys, rms, rvs = [], [], []
for t in range(3):
    with torch.no_grad():
        ys.append(m(X[t]))
    rms.append(m.running_mean.clone())
    rvs.append(m.running_var.clone())
emit_all("bn_c", (("x", X), ("y", ys), ("rm", rms), ("rv", rvs)))

m = nn.BatchNorm3d(2, affine=False, track_running_stats=False).to(D)
x = wave((2, 2, 1, 2, 3), 0.63, 0.7, 1.4, -0.1)
gy = wave((2, 2, 1, 2, 3), 1.23, 0.1, 1.0)
m.eval()  # batch statistics in evaluation mode too
y, dx, _ = layer_grads(m, x, gy)
emit_all("bn_n", (("x", x), ("gy", gy), ("y", y), ("dx", dx)))

# -------------------------------------------------------- InstanceNorm3d
m = nn.InstanceNorm3d(3, momentum=0.3, affine=True, track_running_stats=True).to(D)
with torch.no_grad():
    m.weight.copy_(wave((3,), 0.7, 3, 0.5, 1.0))
    m.bias.copy_(wave((3,), 0.5, 4, 0.5))
emit("in_t_w", m.weight)
emit("in_t_b", m.bias)
S = (2, 3, 2, 2, 2)
tracked_steps(emit, "in_t", m, wave((2,) + S, 0.79, 0.2, 1.5, 0.5), wave((2,) + S, 1.13, 0.7, 1.0),
              0, wave(S, 1.03, 0.3, 2.0, -0.3), wave(S, 0.67, 0.1, 1.0))

m = nn.InstanceNorm3d(3).to(D)
x = wave((2, 3, 2, 3, 2), 0.57, 0.8, 1.2, 0.1)
gy = wave((2, 3, 2, 3, 2), 1.41, 0.3, 1.0)
y, dx, _ = layer_grads(m, x, gy)
emit_all("in_d", (("x", x), ("gy", gy), ("y", y), ("dx", dx)))

m = nn.InstanceNorm3d(2, track_running_stats=True).to(D)
x = wave((2, 2, 2, 3), 0.49, 0.6, 1.3, 0.7)
m(x)
xe = wave((2, 2, 2, 3), 0.93, 0.2, 1.1)
rm, rv = m.running_mean.clone(), m.running_var.clone()
m.eval()
with torch.no_grad():
    ye = m(xe)
emit_all("in_u", (("x", x), ("rm", rm), ("rv", rv), ("xe", xe), ("ye", ye)))

# --------------------------------------------------------------- padding
PAD_CASES = [  # name, module, x shape
    ("cp3", nn.ConstantPad3d((1, 0, -1, 2, 2, 1), -1.5), (1, 2, 3, 4, 3)),
    ("cp3_u", nn.ConstantPad3d((0, -1, 1, 1, 0, -1), 2.0), (2, 3, 4, 3)),
    ("cp3_0", nn.ConstantPad3d((1, 1, 0, 1, 1, 0), 0.0), (1, 1, 2, 2, 2)),
    ("rf3", nn.ReflectionPad3d((1, 2, 2, 1, 1, 1)), (2, 2, 2, 3, 3)),
    ("rf3_u", nn.ReflectionPad3d((-1, 2, 1, 0, 0, 1)), (2, 3, 4, 3)),
    ("rp3", nn.ReplicationPad3d((2, 0, 1, 3, 1, 2)), (1, 2, 2, 3, 3)),
    ("rp3_u", nn.ReplicationPad3d((1, 1, 1, 1, 1, 1)), (2, 2, 2, 3)),
    ("rp3_neg", nn.ReplicationPad3d((-1, 2, 1, -1, 0, 1)), (1, 1, 3, 4, 4)),
]
for k, (name, m, shape) in enumerate(PAD_CASES):
    x = wave(shape, 0.71 + 0.07 * k, 0.3 * k, 1.5, 0.2)
    x64 = x.clone().requires_grad_(True)
    y = m(x64)
    gy = wave(y.shape, 1.19, 0.4 + k, 1.0)
    (y * gy).sum().backward()
    assert torch.equal(m(x.float()).to(D), y.detach()), name  # a gather: exact in float32
    emit_all(name, (("x", x), ("gy", gy), ("y", y.detach()), ("dx", x64.grad)))

# ------------------------------------------------------------ checkpoint
torch.manual_seed(0)
ck = nn.Sequential(nn.BatchNorm3d(2), nn.InstanceNorm3d(2, affine=True, track_running_stats=True))
trained_checkpoint(ck, (2, 2, 2, 2, 3), emit, "torch_norm3d.safetensors")

print("/* Generated by tools/gen_norm3d_fixtures.py (PyTorch %s); do not edit. */"
      % torch.__version__)
print("#ifndef NORM3D_FIXTURES_H")
print("#define NORM3D_FIXTURES_H")
print("\n\n".join(out))
print("#endif")
