#!/usr/bin/python3
"""Generates tests/transformer_model_fixtures.h and
tests/fixtures/torch_transformer.safetensors: PyTorch's values for the
whole nn.Transformer (tests/test_nn_transformer_model.c).

Usage (from the repository root, with Debian's python3-torch 1.13):

    /usr/bin/python3 tools/gen_transformer_model_fixtures.py > tests/transformer_model_fixtures.h

The module is nn.Transformer(d_model=8, nhead=2, num_encoder_layers=2,
num_decoder_layers=2, dim_feedforward=16). Its state dict, written in
float32 to the safetensors file by PyTorch's names, has every parameter
drawn anew (biases and norm weights away from PyTorch's zeros and ones;
every layer its own values, so a layer that reads another's parameters is
caught). norm_first, activation and batch_first do not change the state
dict, so every case loads the same file. The references are computed in
float64 from those float32 values, in eval mode with the inputs requiring
gradients (PyTorch's composed "slow" path, the one with autograd), with
inputs that float32 holds exactly. Each case has a cotangent gy; the
gradients are those of sum(out * gy). The source length S = 5 and target
length T = 4 differ, so that a transposed mask or memory is caught.

Names (C):
  xt_param_names[XT_NPARAMS], xt_param_sizes[]   the state dict's order
  xt_cases[]   xt_case: settings, src, tgt, gy, out, dsrc, dtgt, the six
               masks (float with -INFINITY; key padding masks 1 where
               PyTorch's bool is True; NULL: none) and d[], the parameters'
               gradients in the names' order (NULL: not recorded)
  xt_gen_mask5   generate_square_subsequent_mask(5)
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_fixture import c_bool, c_ident, print_param_tables  # noqa: E402
from gen_safetensors_fixture import build  # noqa: E402
from torch_fixture import moved_state, rnd, tensor_emitter  # noqa: E402

torch.manual_seed(20261206)
D = torch.float64
E, H, F, NE, ND, N, S, T = 8, 2, 16, 2, 2, 2, 5, 4
SAFETENSORS = "tests/fixtures/torch_transformer.safetensors"
out = []
emit = tensor_emitter(out)


def make(norm_first, gelu, batch_first):
    return torch.nn.Transformer(E, H, NE, ND, dim_feedforward=F, dropout=0.1,
                                activation="gelu" if gelu else "relu", batch_first=batch_first,
                                norm_first=norm_first, dtype=D)


STATE = moved_state(make(False, False, False).state_dict())
assert len(STATE) == len(list(make(False, False, False).parameters()))
with open(SAFETENSORS, "wb") as fh:
    fh.write(build({n: t.float() for n, t in STATE.items()}, {"format": "pt"}))


def causal(n):
    return torch.nn.Transformer.generate_square_subsequent_mask(n).to(D)


def seq(length, batch_first, unbatched):
    shape = (length, E) if unbatched else (N, length, E) if batch_first else (length, N, E)
    return rnd(*shape, lo=-2, hi=2).requires_grad_(True)


def opt_bool(m):
    return None if m is None else m.bool()


MASKS = ("src_mask", "tgt_mask", "memory_mask", "skpm", "tkpm", "mkpm")
cases = []


def case(name, norm_first, gelu, batch_first, unbatched=False, param_grads=True, **masks):
    mod = make(norm_first, gelu, batch_first)
    mod.load_state_dict(STATE)
    mod.eval()
    src, tgt = seq(S, batch_first, unbatched), seq(T, batch_first, unbatched)
    m = {k: masks.get(k) for k in MASKS}
    y = mod(src, tgt, src_mask=m["src_mask"], tgt_mask=m["tgt_mask"],
            memory_mask=m["memory_mask"], src_key_padding_mask=opt_bool(m["skpm"]),
            tgt_key_padding_mask=opt_bool(m["tkpm"]),
            memory_key_padding_mask=opt_bool(m["mkpm"]))
    assert torch.isfinite(y).all()
    gy = rnd(*y.shape)
    (y * gy).sum().backward()
    grads = dict(mod.named_parameters())
    p = f"xt_{name}"
    emit(p + "_src", src.detach())
    emit(p + "_tgt", tgt.detach())
    emit(p + "_gy", gy)
    emit(p + "_out", y.detach())
    emit(p + "_dsrc", src.grad)
    emit(p + "_dtgt", tgt.grad)
    for k in MASKS:
        if m[k] is not None:
            emit(f"{p}_{k}", m[k].to(D))
    if param_grads:
        for n in STATE:
            emit(f"{p}_d_{c_ident(n)}", grads[n].grad)
    cases.append((name, norm_first, gelu, batch_first, unbatched, param_grads,
                  [m[k] is not None for k in MASKS], list(src.shape), list(tgt.shape)))


skpm = torch.zeros(N, S, dtype=torch.int32)
skpm[1, 3] = 1
skpm[0, 0] = 1
tkpm = torch.zeros(N, T, dtype=torch.int32)
tkpm[1, 2] = 1
case("post_relu", False, False, False)
case("post_relu_masks", False, False, False, src_mask=rnd(S, S), tgt_mask=causal(T),
     memory_mask=rnd(T, S), skpm=skpm, tkpm=tkpm, mkpm=skpm)
case("pre_gelu_bf_causal", True, True, True, tgt_mask=causal(T), mkpm=skpm)
case("post_gelu_bf", False, True, True, param_grads=False, src_mask=rnd(S, S))
case("pre_relu_unbatched", True, False, False, unbatched=True, param_grads=False,
     tgt_mask=causal(T), skpm=torch.tensor([0, 0, 1, 0, 0], dtype=torch.int32))
emit("xt_gen_mask5", torch.nn.Transformer.generate_square_subsequent_mask(5))

# PyTorch's own initialisation: xavier_uniform_ on every parameter of 2+
# dims (the layers then differ), the rest as the submodules made them
init = make(False, False, False).state_dict()
w = "encoder.layers.0.self_attn.out_proj.weight"
assert not torch.equal(init[w], init[w.replace("layers.0", "layers.1")])
b = "encoder.layers.0.linear1.bias"
assert torch.equal(init[b], init[b.replace("layers.0", "layers.1")])
assert init["decoder.layers.1.multihead_attn.in_proj_bias"].abs().max() == 0

print("/* Generated by tools/gen_transformer_model_fixtures.py (PyTorch %s); do not edit." %
      torch.__version__)
print(" * The parameters are in %s (float32, PyTorch's names)." % SAFETENSORS)
print(" * References from the slow path (autograd), in float64. */")
print("#ifndef TRANSFORMER_MODEL_FIXTURES_H")
print("#define TRANSFORMER_MODEL_FIXTURES_H")
print("#include <math.h>")
print("#include <stdbool.h>")
print("#include <stddef.h>")
print("#include <stdint.h>")
print(f'#define XT_SAFETENSORS "{SAFETENSORS}"')
print(f"enum {{ XT_E = {E}, XT_H = {H}, XT_F = {F}, XT_NE = {NE}, XT_ND = {ND}, XT_N = {N}, "
      f"XT_S = {S}, XT_T = {T},\n       XT_NPARAMS = {len(STATE)} }};")
print("\n\n".join(out))
print()
print_param_tables("xt", "XT_NPARAMS", STATE, arrays=False)


print("""
/* one case; masks in the order src_mask, tgt_mask, memory_mask,
 * src_key_padding_mask, tgt_key_padding_mask, memory_key_padding_mask */
typedef struct xt_case {
  const char *name;
  bool norm_first, gelu, batch_first, unbatched;
  int ndim;
  int64_t sshape[3], tshape[3];
  const double *src, *tgt, *gy, *out, *dsrc, *dtgt;
  const double *masks[6]; /* NULL: none */
  const double *d[XT_NPARAMS]; /* d[0] NULL: not recorded */
} xt_case;
""")
print("static const xt_case xt_cases[] = {")
for (name, nf, gelu, bf, ub, pg, has, ssh, tsh) in cases:
    p = f"xt_{name}"
    ms = [f"{p}_{k}" if h else "NULL" for k, h in zip(MASKS, has)]
    print(f'    {{"{name}", {c_bool(nf)}, {c_bool(gelu)}, {c_bool(bf)}, {c_bool(ub)}, {len(ssh)}, '
          f'{{{", ".join(map(str, ssh))}}}, {{{", ".join(map(str, tsh))}}},')
    print(f"     {p}_src, {p}_tgt, {p}_gy,\n     {p}_out, {p}_dsrc, {p}_dtgt,")
    print("     {" + ", ".join(ms) + "},")
    if pg:
        print("     {" + ",\n      ".join(f"{p}_d_{c_ident(n)}" for n in STATE) + "}},")
    else:
        print("     {NULL}},")
print("};")
print("#endif")
