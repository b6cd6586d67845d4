#!/usr/bin/python3
"""Generates tests/state_dict_fixtures.h and
tests/fixtures/torch_state_dict.safetensors: a PyTorch 1.13 state dict of
the layer kinds that no other fixture loads from PyTorch, and what the
loaded layers compute (tests/test_nn_state_dict.c).

Usage (from the repository root, with Debian's python3-torch 1.13):

    /usr/bin/python3 tools/gen_state_dict_fixtures.py > tests/state_dict_fixtures.h

The module, float64, written by hand as a user porting it would:

  bag     EmbeddingBag(10, 4, mode="mean", padding_idx=1)
  prelu   PReLU(3, init=0.2)
  bil     Bilinear(3, 2, 4)
  convt2d ConvTranspose2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0),
          output_padding=(1, 0), dilation=(1, 2), groups=2)
  convt3d ConvTranspose3d(2, 4, (2, 1, 2), stride=(1, 2, 1), groups=2,
          bias=False)
  rnn     RNN(3, 4, num_layers=2, nonlinearity="relu", bias=False,
          bidirectional=True)
  bn      BatchNorm1d(3, momentum=None)
  inorm   InstanceNorm2d(3, momentum=0.3, affine=True,
          track_running_stats=True)

from torch.manual_seed(0), after three steps of SGD (lr 0.1) on the sum of
every layer's mean square output in training mode, so that the weights,
the running statistics and BatchNorm's num_batches_tracked (3, int64) have
moved. Its state dict is the safetensors file (25 tensors). Then, on fresh
inputs (<layer>_x; bil_x2 the second input; bag_x the indices [3, 5]):

  <layer>_y        the output in evaluation mode (rnn: the output sequence)
  bn_yt, inorm_yt  the output of one more forward in training mode
  bn_rm, bn_rv, inorm_rm, inorm_rv
                   the running statistics after it

Inputs are values float32 holds exactly; everything is computed in float64.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_fixture import c_double_array  # noqa: E402
from gen_safetensors_fixture import build  # noqa: E402

D = torch.float64
nn = torch.nn
out = []


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


class Kinds(nn.Module):
    def __init__(self):
        super().__init__()
        self.bag = nn.EmbeddingBag(10, 4, mode="mean", padding_idx=1)
        self.prelu = nn.PReLU(3, init=0.2)
        self.bil = nn.Bilinear(3, 2, 4)
        self.convt2d = nn.ConvTranspose2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0),
                                          output_padding=(1, 0), dilation=(1, 2), groups=2)
        self.convt3d = nn.ConvTranspose3d(2, 4, (2, 1, 2), stride=(1, 2, 1), groups=2, bias=False)
        self.rnn = nn.RNN(3, 4, num_layers=2, nonlinearity="relu", bias=False,
                          bidirectional=True)
        self.bn = nn.BatchNorm1d(3, momentum=None)
        self.inorm = nn.InstanceNorm2d(3, momentum=0.3, affine=True, track_running_stats=True)

    def outputs(self, xs):
        return {
            "bag": self.bag(xs["bag"]),
            "prelu": self.prelu(xs["prelu"]),
            "bil": self.bil(xs["bil"], xs["bil2"]),
            "convt2d": self.convt2d(xs["convt2d"]),
            "convt3d": self.convt3d(xs["convt3d"]),
            "rnn": self.rnn(xs["rnn"])[0],
            "bn": self.bn(xs["bn"]),
            "inorm": self.inorm(xs["inorm"]),
        }


SHAPES = {"prelu": (2, 3, 4), "bil": (5, 3), "bil2": (5, 2), "convt2d": (2, 4, 3, 4),
          "convt3d": (1, 2, 2, 3, 2), "rnn": (4, 2, 3), "bn": (5, 3, 2), "inorm": (2, 3, 3, 4)}


def inputs(k):
    xs = {name: wave(s, 0.7 + 0.11 * j + 0.05 * k, 0.3 * j + k, 1.5, 0.1 * k)
          for j, (name, s) in enumerate(SHAPES.items())}
    xs["bag"] = torch.tensor([(3 * i + 5 * k + i * i) % 10 for i in range(15)]).reshape(3, 5)
    return xs


torch.manual_seed(0)
m = Kinds().to(D)
opt = torch.optim.SGD(m.parameters(), lr=0.1)
m.train()
for step in range(3):
    opt.zero_grad()
    sum((y * y).mean() for y in m.outputs(inputs(step)).values()).backward()
    opt.step()
assert int(m.bn.num_batches_tracked) == 3
sd = {k: v.detach().clone() for k, v in m.state_dict().items()}  # not views: the buffers move below
assert len(sd) == 25

xs = inputs(7)
m.eval()
with torch.no_grad():
    ys = m.outputs(xs)
emit("bag_x", xs["bag"])
for name in SHAPES:
    emit(f"{name}_x", xs[name])
for name, y in ys.items():
    emit(f"{name}_y", y)
m.train()
with torch.no_grad():
    emit("bn_yt", m.bn(xs["bn"]))
    emit("inorm_yt", m.inorm(xs["inorm"]))
emit("bn_rm", m.bn.running_mean)
emit("bn_rv", m.bn.running_var)
emit("inorm_rm", m.inorm.running_mean)
emit("inorm_rv", m.inorm.running_var)

ST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                  "torch_state_dict.safetensors")
with open(ST, "wb") as f:
    f.write(build(sd, {"format": "pt"}))

print("/* Generated by tools/gen_state_dict_fixtures.py (PyTorch %s); do not edit. */"
      % torch.__version__)
print("#ifndef STATE_DICT_FIXTURES_H")
print("#define STATE_DICT_FIXTURES_H")
print("\n\n".join(out))
print("#endif")
