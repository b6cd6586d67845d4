#!/usr/bin/python3
"""Generates tests/transformer_fixtures.h: PyTorch's values for
nn.TransformerEncoderLayer (tests/test_nn_transformer.c).

Usage (from the repository root, with Debian's python3-torch 1.13):

    /usr/bin/python3 tools/gen_transformer_fixtures.py > tests/transformer_fixtures.h

One state dict (d_model 6, nhead 2, dim_feedforward 10; biases and norm
weights moved away from PyTorch's zeros and ones, so their use is tested)
serves every case. Everything is computed in float64 from inputs and
parameters that float32 holds exactly, so the float32 tests read the same
values and compare with the float64 results at a float tolerance. Each case
has a cotangent gy, and the gradients are those of sum(out * gy). The layer
is in eval mode (no dropout) and src requires a gradient, so PyTorch takes
its composed ("slow") path, the one with autograd: its no-grad fast path
(torch._transformer_encoder_layer_fwd: eval, batch_first, an even nhead, at
most one mask) is another implementation. The script measures how far the
fast path is from the slow one on the batch_first cases that it accepts and
on a fully padded sequence, and writes that into the header's comment.

Names (C):
  xf_param_names[12], xf_params[12], xf_param_sizes[12]   the state dict
  xf_cases[]   one struct per case: its settings, src, gy, out, dsrc, the
               masks (attn_mask float with -INFINITY, key padding mask 1
               where PyTorch's bool is True) and d[12], the parameters'
               gradients in xf_param_names' order
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_fixture import c_ident, print_param_tables  # noqa: E402
from torch_fixture import encoder_case_arrays, f32, rnd, tensor_emitter  # noqa: E402

torch.manual_seed(20260214)
D = torch.float64
E, H, F, N, S = 6, 2, 10, 2, 4
out = []
emit = tensor_emitter(out)
cases = []


def make_layer(norm_first, gelu, batch_first):
    layer = torch.nn.TransformerEncoderLayer(E, H, dim_feedforward=F, dropout=0.1,
                                             activation="gelu" if gelu else "relu",
                                             batch_first=batch_first, norm_first=norm_first,
                                             dtype=D)
    layer.load_state_dict(STATE)
    layer.eval()
    return layer


base = torch.nn.TransformerEncoderLayer(E, H, dim_feedforward=F, dtype=D)
STATE = {}
for n, t in base.state_dict().items():
    if n.startswith("norm") and n.endswith("weight"):
        STATE[n] = rnd(*t.shape, lo=0.7, hi=1.3)
    elif n.endswith("bias"):
        STATE[n] = rnd(*t.shape, lo=-0.3, hi=0.3)
    else:
        STATE[n] = f32(t)
NAMES = list(STATE)
for n in NAMES:
    emit("xf_p_" + c_ident(n), STATE[n])


def case(name, norm_first, gelu, batch_first, unbatched=False, mask=None, kpm=None,
         causal=False):
    layer = make_layer(norm_first, gelu, batch_first)
    shape = (S, E) if unbatched else (N, S, E) if batch_first else (S, N, E)
    src = rnd(*shape, lo=-2, hi=2).requires_grad_(True)
    if causal:  # PyTorch 1.13 has no is_causal: the same mask, spelled out
        mask = torch.zeros(S, S, dtype=D).masked_fill(
            ~torch.ones(S, S, dtype=torch.bool).tril(), float("-inf"))
    y = layer(src, src_mask=mask, src_key_padding_mask=None if kpm is None else kpm.bool())
    encoder_case_arrays(emit, "xf_" + name, layer, src, y, mask, kpm, NAMES)
    cases.append((name, norm_first, gelu, batch_first, unbatched, causal, mask is not None,
                  kpm is not None, list(shape)))


kpm = torch.zeros(N, S, dtype=torch.int32)
kpm[1, 1] = kpm[1, 3] = 1
case("post_relu", False, False, False)
case("post_gelu_bf_kpm", False, True, True, kpm=kpm)
case("pre_relu_bf_causal", True, False, True, causal=True)
case("pre_gelu_mask_kpm", True, True, False, mask=rnd(S, S), kpm=kpm)
case("post_relu_unbatched_kpm", False, False, False, unbatched=True,
     kpm=torch.tensor([0, 0, 1, 0], dtype=torch.int32))

# The fast path against the slow one (eval, no grad, batch_first).
notes = []
for norm_first in (False, True):
    layer = make_layer(norm_first, False, True)
    src = rnd(N, S, E, lo=-2, hi=2)
    slow = layer(src.clone().requires_grad_(True), src_key_padding_mask=kpm.bool()).detach()
    with torch.no_grad():
        fast = layer(src, src_key_padding_mask=kpm.bool())
    notes.append(f"norm_first={norm_first}, a key padding mask: max |fast - slow| = "
                 f"{(fast - slow).abs().max().item():.3g}")
full = kpm.clone()
full[0, :] = 1  # sequence 0 all padding
layer = make_layer(False, False, True)
src = rnd(N, S, E, lo=-2, hi=2)
slow = layer(src.clone().requires_grad_(True), src_key_padding_mask=full.bool()).detach()
with torch.no_grad():
    fast = layer(src, src_key_padding_mask=full.bool())
notes.append(f"a fully padded sequence: the slow path gives NaN in "
             f"{int(slow[0].isnan().sum())} of its {slow[0].numel()} outputs, the fast path "
             f"in {int(fast[0].isnan().sum())}")

print("/* Generated by tools/gen_transformer_fixtures.py (PyTorch %s); do not edit." %
      torch.__version__)
print(" * References from the slow path (autograd). PyTorch's fast path, measured:")
for n in notes:
    print(" *   " + n)
print(" */")
print("#ifndef TRANSFORMER_FIXTURES_H")
print("#define TRANSFORMER_FIXTURES_H")
print("#include <math.h>")
print("#include <stdbool.h>")
print("#include <stddef.h>")
print("#include <stdint.h>")
print(f"enum {{ XF_E = {E}, XF_H = {H}, XF_F = {F}, XF_N = {N}, XF_S = {S}, "
      f"XF_NPARAMS = {len(NAMES)} }};")
print("\n\n".join(out))
print()
print_param_tables("xf", "XF_NPARAMS", STATE)
print("""
typedef struct xf_case {
  const char *name;
  bool norm_first, gelu, batch_first, unbatched, causal;
  int ndim;
  int64_t shape[3];
  const double *src, *gy, *out, *dsrc, *mask, *kpm; /* mask, kpm NULL: none */
  const double *d[XF_NPARAMS];
} xf_case;
""")
print("static const xf_case xf_cases[] = {")
for (name, nf, gelu, bf, ub, causal, has_mask, has_kpm, shape) in cases:
    p = "xf_" + name
    b = lambda v: "true" if v else "false"  # noqa: E731
    sh = ", ".join(str(d) for d in shape)
    print(f'    {{"{name}", {b(nf)}, {b(gelu)}, {b(bf)}, {b(ub)}, {b(causal)}, {len(shape)}, '
          f'{{{sh}}},')
    print(f"     {p}_src, {p}_gy,\n     {p}_out, {p}_dsrc,")
    print(f'     {p + "_mask" if has_mask else "NULL"}, {p + "_kpm" if has_kpm else "NULL"},')
    print("     {" + ",\n      ".join(f"{p}_d_{c_ident(n)}" for n in NAMES) + "}},")
print("};")
print("#endif")
