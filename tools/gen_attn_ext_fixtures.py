#!/usr/bin/python3
"""Generates tests/attn_ext_fixtures.h: PyTorch's values for
nn.MultiheadAttention with kdim, vdim, add_bias_kv and add_zero_attn
(tests/test_nn_attn_ext.c).

Usage (from the repository root, with Debian's python3-torch 1.13):

    /usr/bin/python3 tools/gen_attn_ext_fixtures.py > tests/attn_ext_fixtures.h

E = 6, 2 heads, batch 2. Each case has its own layer: PyTorch's parameters
(the biases moved away from its zeros, so their use is tested) in its state
dict's order, which the C layer must list under the same names and shapes.
Inputs and parameters are float32 values held in float64, so the float32
tests read the same numbers; the references are float64. The layer is in
training mode with dropout 0 (PyTorch's composed path). Each case has
cotangents gy and gw; the gradients are those of sum(out * gy) +
sum(weights * gw).

Names (C): ax_cases[], one struct per case: its options, the inputs, the
masks (attn_mask as PyTorch's: float with -INFINITY, or 0/1 for a bool
mask; key_padding_mask 1 where PyTorch's bool is True), out, weights and
every gradient, and the parameters (names, shapes, values, gradients).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_fixture import c_bool, c_ident  # noqa: E402
from torch_fixture import f32, rnd, tensor_emitter  # noqa: E402

torch.manual_seed(20261205)
D = torch.float64
E, H, N = 6, 2, 2
out = []
emit = tensor_emitter(out)
cases = []


def causal_inf(L, S):
    return torch.zeros(L, S, dtype=D).masked_fill(
        ~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))


def case(name, L, S, kdim=None, vdim=None, bias_kv=False, zero_attn=False, batch_first=False,
         unbatched=False, self_attn=False, attn_mask=None, mask_bool=False, kpm=None,
         average=True, causal=False):
    m = torch.nn.MultiheadAttention(E, H, kdim=kdim, vdim=vdim, add_bias_kv=bias_kv,
                                    add_zero_attn=zero_attn, batch_first=batch_first, dtype=D)
    with torch.no_grad():
        for n, t in m.named_parameters():
            t.copy_(rnd(*t.shape, lo=-0.3, hi=0.3) if n.endswith("bias") and "proj" in n
                    else f32(t))
    m.train()
    kd, vd = kdim or E, vdim or E

    def shape(T, d):
        return (T, d) if unbatched else (N, T, d) if batch_first else (T, N, d)

    query = rnd(*shape(L, E)).requires_grad_(True)
    if self_attn:
        key = value = query
    else:
        key = rnd(*shape(S, kd)).requires_grad_(True)
        value = rnd(*shape(S, vd)).requires_grad_(True)
    if causal:
        attn_mask = causal_inf(L, S)
    am = None if attn_mask is None else attn_mask.bool() if mask_bool else attn_mask
    y, w = m(query, key, value, attn_mask=am,
             key_padding_mask=None if kpm is None else kpm.bool(), need_weights=True,
             average_attn_weights=average)
    assert torch.isfinite(y).all() and torch.isfinite(w).all()
    gy, gw = rnd(*y.shape), rnd(*w.shape)
    ((y * gy).sum() + (w * gw).sum()).backward()
    p = "ax_" + name
    a = dict(name=name, kdim=kd, vdim=vd, bias_kv=bias_kv, zero_attn=zero_attn,
             batch_first=batch_first, self_attn=self_attn, average=average, causal=causal,
             mask_bool=mask_bool, L=L, S=S, unbatched=unbatched)
    a["query"] = emit(p + "_query", query.detach())
    a["dquery"] = emit(p + "_dquery", query.grad)
    a["key"] = a["value"] = a["dkey"] = a["dvalue"] = "NULL"
    if not self_attn:
        a["key"], a["value"] = emit(p + "_key", key.detach()), emit(p + "_value", value.detach())
        a["dkey"], a["dvalue"] = emit(p + "_dkey", key.grad), emit(p + "_dvalue", value.grad)
    a["mask"] = "NULL" if attn_mask is None else emit(p + "_mask", attn_mask)
    a["mask_shape"] = [] if attn_mask is None else list(attn_mask.shape)
    a["kpm"] = "NULL" if kpm is None else emit(p + "_kpm", kpm.to(D))
    a["gy"], a["gw"] = emit(p + "_gy", gy), emit(p + "_gw", gw)
    a["out"], a["weights"] = emit(p + "_out", y.detach()), emit(p + "_weights", w.detach())
    a["w_shape"] = list(w.shape)
    a["params"] = []
    for n, t in m.named_parameters():
        a["params"].append((n, list(t.shape), emit(f"{p}_p_{c_ident(n)}", t.detach()),
                            emit(f"{p}_d_{c_ident(n)}", t.grad)))
    assert [n for n, _, _, _ in a["params"]] == list(m.state_dict())
    cases.append(a)


kpm = torch.zeros(N, 4, dtype=torch.int32)
kpm[1, 2] = 1
# separate projections, sequence first: a float attn_mask [L, S] and a
# key padding mask, weights averaged
case("kv_dims", 3, 4, kdim=4, vdim=5, attn_mask=rnd(3, 4), kpm=kpm)
# bias_k / bias_v (packed weights), batch first, a bool attn_mask, a key
# padding mask, weights per head
bm = torch.zeros(3, 4, dtype=D)
bm[0, 1] = bm[2, 3] = bm[1, 0] = 1
case("bias_kv", 3, 4, bias_kv=True, batch_first=True, attn_mask=bm, mask_bool=True, kpm=kpm,
     average=False)
# a zero key, batch first, a float 3-D mask [N * H, L, S] with -inf entries
m3 = rnd(N * H, 3, 4)
m3[0, 0, 2] = m3[3, 1, 0] = m3[2, 2, 1] = float("-inf")
case("zero_attn", 3, 4, zero_attn=True, batch_first=True, attn_mask=m3)
# everything, sequence first; sequence 0 fully padded (the added keys keep
# it finite), a bool attn_mask, weights per head
full = kpm.clone()
full[0, :] = 1
case("both", 3, 4, kdim=4, vdim=5, bias_kv=True, zero_attn=True, attn_mask=bm, mask_bool=True,
     kpm=full, average=False)
# everything, batch first, a 3-D float mask, weights averaged
case("both_bf", 3, 4, kdim=4, vdim=5, bias_kv=True, zero_attn=True, batch_first=True,
     attn_mask=rnd(N * H, 3, 4), kpm=kpm)
# everything, unbatched [L, E] with a key padding mask [S]
case("both_unbatched", 2, 5, kdim=4, vdim=5, bias_kv=True, zero_attn=True, unbatched=True,
     kpm=torch.tensor([0, 1, 0, 0, 1], dtype=torch.int32))
# causal self-attention with both added keys: PyTorch's causal float mask
# on the S keys, padded (the added keys stay visible)
case("causal", 4, 4, bias_kv=True, zero_attn=True, batch_first=True, self_attn=True,
     causal=True, average=False)

print("/* Generated by tools/gen_attn_ext_fixtures.py (PyTorch %s); do not edit. */" %
      torch.__version__)
print("#ifndef ATTN_EXT_FIXTURES_H")
print("#define ATTN_EXT_FIXTURES_H")
print("#include <math.h>")
print("#include <stdbool.h>")
print("#include <stddef.h>")
print("#include <stdint.h>")
print(f"enum {{ AX_E = {E}, AX_H = {H}, AX_N = {N}, AX_MAXP = 8 }};")
print("\n\n".join(out))
print("""
typedef struct ax_param {
  const char *name;
  int ndim;
  int64_t shape[3];
  const double *value, *grad;
} ax_param;

typedef struct ax_case {
  const char *name;
  int64_t kdim, vdim; /* as the layer has them (E when not given) */
  bool bias_kv, zero_attn, batch_first, unbatched, self_attn, average, causal, mask_bool;
  int64_t L, S;
  const double *query, *key, *value, *mask, *kpm; /* key, value NULL: self-attention */
  int mask_ndim;
  int64_t mask_shape[3];
  const double *gy, *gw, *out, *weights, *dquery, *dkey, *dvalue;
  int w_ndim;
  int64_t w_shape[4];
  int nparams;
  ax_param params[AX_MAXP];
} ax_case;
""")


def arr(v):
    return "{" + ", ".join(str(x) for x in v) + "}" if v else "{0}"


print("static const ax_case ax_cases[] = {")
for a in cases:
    print(f'    {{"{a["name"]}", {a["kdim"]}, {a["vdim"]}, {c_bool(a["bias_kv"])}, '
          f'{c_bool(a["zero_attn"])}, {c_bool(a["batch_first"])}, {c_bool(a["unbatched"])}, '
          f'{c_bool(a["self_attn"])}, {c_bool(a["average"])}, {c_bool(a["causal"])}, '
          f'{c_bool(a["mask_bool"])}, {a["L"]}, {a["S"]},')
    print(f'     {a["query"]}, {a["key"]}, {a["value"]}, {a["mask"]}, {a["kpm"]},')
    print(f'     {len(a["mask_shape"])}, {arr(a["mask_shape"])},')
    print(f'     {a["gy"]}, {a["gw"]}, {a["out"]}, {a["weights"]},')
    print(f'     {a["dquery"]}, {a["dkey"]}, {a["dvalue"]},')
    print(f'     {len(a["w_shape"])}, {arr(a["w_shape"])},')
    print(f'     {len(a["params"])},')
    print("     {" + ",\n      ".join(
        f'{{"{n}", {len(s)}, {arr(s)}, {v}, {g}}}' for n, s, v, g in a["params"]) + "}},")
print("};")
print("#endif")
