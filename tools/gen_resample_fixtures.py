#!/usr/bin/python3
"""Generates tests/resample_fixtures.h: PyTorch 1.13's values for
nn.Upsample (nearest, nearest-exact, linear, bilinear, bicubic, trilinear;
3-D, 4-D and 5-D inputs), nn.PixelShuffle,
nn.PixelUnshuffle and the padding layers (tests/test_nn_resample.c).

Usage (from the repository root, with Debian's python3-torch 1.13):

    /usr/bin/python3 tools/gen_resample_fixtures.py > tests/resample_fixtures.h

Each case runs in float64 and in float32 on the same inputs (which float32
holds exactly) with a cotangent gy; the gradient is that of sum(y * gy).
The float32 outputs are kept too (<name>_y32), since the linear modes
compute their weights in the input's dtype.

Names (the cases' settings and shapes are in tests/test_nn_resample.c, in
the order of the lists below): <case>_{x,gy,y,dx,y32}.

The upsampling inputs have C >= 2 and W >= 2 where it matters, so that
PyTorch takes its [N, C, ...] kernels: a tensor that is also
channels-last contiguous (C = 1) may take the channels-last nearest
kernel, whose shortcuts for out = in and out = 2 in differ (checked below).
"""
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_fixture import tensor_emitter, wave  # noqa: E402

warnings.simplefilter("ignore")
D = torch.float64
nn = torch.nn
out = []
emit = tensor_emitter(out)


U = nn.Upsample
CASES = [  # name, module, x shape
    ("up_n1_5_8", U(size=8), (2, 2, 5)),
    ("up_n1_s15", U(scale_factor=1.5), (2, 2, 5)),
    ("up_n1_7_3", U(size=3), (1, 2, 7)),
    ("up_ne1_5_8", U(size=8, mode="nearest-exact"), (2, 2, 5)),
    ("up_n2_s2x15", U(scale_factor=(2.0, 1.5)), (1, 2, 3, 4)),
    ("up_n2_s06", U(scale_factor=0.6), (2, 1, 7, 5)),
    ("up_ne2_5x3", U(size=(5, 3), mode="nearest-exact"), (1, 2, 3, 7)),
    ("up_l1_5_8", U(size=8, mode="linear"), (2, 2, 5)),
    ("up_l1_5_8_ac", U(size=8, mode="linear", align_corners=True), (2, 2, 5)),
    ("up_l1_s15", U(scale_factor=1.5, mode="linear"), (2, 2, 5)),
    ("up_l1_s06_ac", U(scale_factor=0.6, mode="linear", align_corners=True), (1, 2, 7)),
    ("up_l1_7_3", U(size=3, mode="linear"), (1, 2, 7)),
    ("up_b_8x7", U(size=(8, 7), mode="bilinear"), (2, 2, 5, 4)),
    ("up_b_8x7_ac", U(size=(8, 7), mode="bilinear", align_corners=True), (2, 2, 5, 4)),
    ("up_b_s15x06", U(scale_factor=(1.5, 0.6), mode="bilinear"), (1, 2, 5, 7)),
    ("up_b_s15_rc", lambda x: torch.nn.functional.interpolate(  # recompute_scale_factor
        x, scale_factor=1.5, mode="bilinear", recompute_scale_factor=True), (1, 2, 5, 4)),
    ("up_b_3x3", U(size=3, mode="bilinear"), (1, 1, 7, 7)),
    ("up_b_1x5_ac", U(size=(1, 5), mode="bilinear", align_corners=True), (1, 1, 4, 4)),
    ("ps_r2", nn.PixelShuffle(2), (2, 8, 3, 3)),
    ("ps_r3_u", nn.PixelShuffle(3), (9, 2, 2)),
    ("pu_r2", nn.PixelUnshuffle(2), (2, 2, 6, 4)),
    ("pu_r3_u", nn.PixelUnshuffle(3), (1, 6, 3)),
    ("zp", nn.ZeroPad2d((1, 2, 3, 0)), (2, 2, 3, 4)),
    ("zp_neg", nn.ZeroPad2d((-1, 2, 0, -1)), (1, 2, 3, 4)),
    ("cp1", nn.ConstantPad1d((2, 1), 3.5), (2, 2, 5)),
    ("cp1_u", nn.ConstantPad1d((0, -2), -1.0), (2, 5)),
    ("cp2", nn.ConstantPad2d((1, 0, -1, 2), -1.5), (1, 2, 4, 3)),
    ("rf1", nn.ReflectionPad1d((2, 3)), (2, 2, 5)),
    ("rf1_u", nn.ReflectionPad1d((-1, 2)), (2, 5)),
    ("rf2", nn.ReflectionPad2d((1, 2, 2, 1)), (2, 2, 3, 4)),
    ("rp1", nn.ReplicationPad1d((3, 1)), (2, 2, 4)),
    ("rp2", nn.ReplicationPad2d((2, 0, 1, 3)), (1, 2, 3, 3)),
    ("rp2_u", nn.ReplicationPad2d((1, 1, 1, 1)), (2, 2, 3)),
    ("rp2_neg", nn.ReplicationPad2d((-1, 2, 1, -1)), (1, 1, 4, 4)),
]


def interp(**kw):
    return lambda x: torch.nn.functional.interpolate(x, **kw)


BC, TL = "bicubic", "trilinear"
CASES_MORE = [  # name, module, x shape: bicubic, trilinear, 5-D nearest
    ("bc_8x7", U(size=(8, 7), mode=BC), (2, 2, 5, 4)),
    ("bc_8x7_ac", U(size=(8, 7), mode=BC, align_corners=True), (2, 2, 5, 4)),
    ("bc_s15x06", U(scale_factor=(1.5, 0.6), mode=BC), (1, 2, 5, 7)),
    ("bc_s15x06_ac", U(scale_factor=(1.5, 0.6), mode=BC, align_corners=True), (1, 2, 5, 7)),
    ("bc_s13_rc", interp(scale_factor=1.3, mode=BC, recompute_scale_factor=True), (1, 2, 5, 4)),
    ("bc_s27", U(scale_factor=2.7, mode=BC), (1, 2, 2, 3)),
    ("bc_s2", U(scale_factor=2.0, mode=BC), (2, 3, 3, 3)),
    ("bc_3x3", U(size=3, mode=BC), (1, 2, 7, 7)),
    ("bc_same", U(size=(3, 4), mode=BC), (2, 2, 3, 4)),
    ("bc_s105", U(scale_factor=(1.05, 1.3), mode=BC), (1, 2, 10, 4)),
    ("bc_1x5", U(size=(3, 1), mode=BC), (1, 2, 1, 5)),
    ("bc_4x1_ac", U(size=(1, 3), mode=BC, align_corners=True), (1, 2, 4, 2)),
    ("bc_1to3_ac", U(size=(3, 1), mode=BC, align_corners=True), (1, 2, 1, 2)),
    ("tl_4x5x6", U(size=(4, 5, 6), mode=TL), (1, 2, 2, 3, 4)),
    ("tl_4x5x6_ac", U(size=(4, 5, 6), mode=TL, align_corners=True), (1, 2, 2, 3, 4)),
    ("tl_s", U(scale_factor=(1.5, 0.6, 2.0), mode=TL), (1, 2, 3, 5, 2)),
    ("tl_s_ac", U(scale_factor=(1.5, 0.6, 2.0), mode=TL, align_corners=True), (1, 2, 3, 5, 2)),
    ("tl_s17_rc", interp(scale_factor=1.7, mode=TL, recompute_scale_factor=True), (2, 2, 2, 3, 3)),
    ("tl_1", U(size=(2, 1, 4), mode=TL), (2, 2, 1, 3, 2)),
    ("tl_s105", U(scale_factor=(1.05, 2.5, 0.5), mode=TL), (1, 2, 10, 2, 5)),
    ("n3_size", U(size=(3, 5, 4)), (1, 2, 2, 3, 6)),
    ("n3_s", U(scale_factor=(2.0, 1.5, 0.6)), (1, 2, 2, 3, 5)),
    ("n3_1", U(size=(2, 3, 1)), (2, 2, 1, 1, 3)),
    ("ne3_size", U(size=(3, 5, 4), mode="nearest-exact"), (1, 2, 2, 3, 6)),
    ("ne3_s", U(scale_factor=(1.7, 0.5, 2.3), mode="nearest-exact"), (2, 2, 3, 4, 2)),
]
for name, m, shape in CASES_MORE:
    cl = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    assert not torch.zeros(shape).is_contiguous(memory_format=cl), name
CASES += CASES_MORE

for k, (name, m, shape) in enumerate(CASES):
    x = wave(shape, 0.71 + 0.07 * k, 0.3 * k, 1.5, 0.2)
    x64 = x.clone().requires_grad_(True)
    y = m(x64)
    gy = wave(y.shape, 1.19, 0.4 + k, 1.0)
    (y * gy).sum().backward()
    y32 = m(x.float())
    for s, v in (("x", x), ("gy", gy), ("y", y.detach()), ("dx", x64.grad), ("y32", y32)):
        emit(f"{name}_{s}", v)

print("/* Generated by tools/gen_resample_fixtures.py (PyTorch %s); do not edit. */"
      % torch.__version__)
print("#ifndef RESAMPLE_FIXTURES_H")
print("#define RESAMPLE_FIXTURES_H")
print("\n\n".join(out))
print("#endif")
