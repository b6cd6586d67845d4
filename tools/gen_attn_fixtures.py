#!/usr/bin/python3
"""Writes tests/fixtures/torch_attn.safetensors: PyTorch's values for
scaled dot-product attention and nn.MultiheadAttention (tests/test_nn_attn.c).

Usage (from the repository root, with Debian's python3-torch 1.13):

    /usr/bin/python3 tools/gen_attn_fixtures.py

Everything is float64. torch 1.13 has no fused scaled_dot_product_attention,
so the reference composes it: softmax(q k^T * scale + mask) v, the causal
mask being the top-left lower triangle (key j visible to query i when
j <= i), as PyTorch 2's is_causal builds it.

Names:
  sdpa.<case>.{q,k,v,mask,gy,out,weights,dq,dk,dv} and sdpa.<case>.opts
  ([scale (0: default), causal]); gy is the cotangent of out.
  mha.{in_proj_weight,in_proj_bias,out_proj.weight,out_proj.bias}: the
  parameters shared by every layer case (E = 6, 2 heads).
  mha.<case>.{query,key,value,attn_mask,key_padding_mask,gy,gw,out,weights,
  dquery,dkey,dvalue,d.<param>}: a layer call, loss = sum(out * gy) +
  sum(weights * gw); key_padding_mask is 1 where PyTorch's bool is True.
  A self-attention case has only query (and dquery), which is also key and
  value.
The plain names "in_proj_weight", "in_proj_bias", "out_proj.weight" and
"out_proj.bias" hold a state dict of the layer as PyTorch saves it.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_fixture import uniform, write_safetensors  # noqa: E402

torch.manual_seed(20261130)
D = torch.float64
T = {}


def causal_keep(L, S):
    return torch.ones(L, S, dtype=torch.bool).tril()


# ------------------------------------------------------------------ SDPA

def sdpa_case(name, qs, ks, vs, scale=0.0, causal=False, mask=None):
    q, k, v = uniform(*qs), uniform(*ks), uniform(*vs)
    q.requires_grad_(True)
    k.requires_grad_(True)
    v.requires_grad_(True)
    E = qs[-1]
    s = q @ k.transpose(-1, -2) * (scale if scale else 1.0 / E ** 0.5)
    if causal:
        s = s.masked_fill(~causal_keep(qs[-2], ks[-2]), float("-inf"))
    if mask is not None:
        s = s + mask
    w = torch.softmax(s, -1)
    out = w @ v
    gy = uniform(*out.shape)
    (out * gy).sum().backward()
    p = f"sdpa.{name}."
    T[p + "q"], T[p + "k"], T[p + "v"] = q.detach(), k.detach(), v.detach()
    if mask is not None:
        T[p + "mask"] = mask
    T[p + "opts"] = torch.tensor([scale, 1.0 if causal else 0.0], dtype=D)
    T[p + "gy"], T[p + "out"], T[p + "weights"] = gy, out.detach(), w.detach()
    T[p + "dq"], T[p + "dk"], T[p + "dv"] = q.grad, k.grad, v.grad


sdpa_case("basic", (2, 3, 4), (2, 5, 4), (2, 5, 6))
sdpa_case("heads", (2, 2, 4, 3), (2, 2, 4, 3), (2, 2, 4, 5), scale=0.7)
sdpa_case("causal", (2, 4, 3), (2, 4, 3), (2, 4, 3), causal=True)
sdpa_case("causal_wide", (2, 3, 4), (2, 5, 4), (2, 5, 2), causal=True)
sdpa_case("causal_tall", (5, 4), (3, 4), (3, 2), causal=True)
m = uniform(3, 4)
m[0, 1] = m[2, 3] = m[1, 0] = float("-inf")
sdpa_case("mask", (2, 3, 4), (2, 4, 4), (2, 4, 2), mask=m)
m = torch.zeros(2, 1, 1, 4, dtype=D)
m[0, 0, 0, 3] = m[1, 0, 0, 1] = m[1, 0, 0, 2] = float("-inf")
sdpa_case("mask_bcast", (2, 2, 3, 4), (2, 2, 4, 4), (2, 2, 4, 3), mask=m)
sdpa_case("causal_mask", (4, 3), (4, 3), (4, 2), causal=True, mask=uniform(4, 4))

# ------------------------------------------------------------------- MHA

E, H, N = 6, 2, 2
mha = torch.nn.MultiheadAttention(E, H, dtype=D)
with torch.no_grad():  # biases away from PyTorch's zeros, so their use is tested
    mha.in_proj_bias.copy_(uniform(3 * E, lo=-0.3, hi=0.3))
    mha.out_proj.bias.copy_(uniform(E, lo=-0.3, hi=0.3))
PARAMS = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
for n, t in mha.state_dict().items():
    T["mha." + n] = t.clone()
    T[n] = t.clone()


def mha_case(name, batch_first, query, key=None, value=None, attn_mask=None, kpm=None,
             average=True):
    m = torch.nn.MultiheadAttention(E, H, batch_first=batch_first, dtype=D)
    m.load_state_dict(mha.state_dict())
    m.train()
    self_attn = key is None
    query = query.clone().requires_grad_(True)
    if self_attn:
        key = value = query
    else:
        key = key.clone().requires_grad_(True)
        value = value.clone().requires_grad_(True)
    out, w = m(query, key, value, attn_mask=attn_mask,
               key_padding_mask=None if kpm is None else kpm.bool(), need_weights=True,
               average_attn_weights=average)
    gy, gw = uniform(*out.shape), uniform(*w.shape)
    ((out * gy).sum() + (w.nan_to_num() * gw).sum()).backward()
    p = f"mha.{name}."
    T[p + "query"] = query.detach()
    T[p + "dquery"] = query.grad
    if not self_attn:
        T[p + "key"], T[p + "value"] = key.detach(), value.detach()
        T[p + "dkey"], T[p + "dvalue"] = key.grad, value.grad
    if attn_mask is not None:
        T[p + "attn_mask"] = attn_mask
    if kpm is not None:
        T[p + "key_padding_mask"] = kpm.to(torch.int32)
    T[p + "gy"], T[p + "gw"] = gy, gw
    T[p + "out"], T[p + "weights"] = out.detach(), w.detach()
    params = dict(m.named_parameters())
    for n in PARAMS:
        T[p + "d." + n] = params[n].grad


# cross-attention, sequence first: query [L, N, E], key and value [S, N, E],
# a float mask [L, S] and a key padding mask [N, S]
kpm = torch.zeros(N, 4, dtype=torch.int32)
kpm[1, 2] = 1
mha_case("cross", False, uniform(3, N, E), uniform(4, N, E), uniform(4, N, E),
         attn_mask=uniform(3, 4), kpm=kpm)
# causal self-attention, batch first, weights per head
causal = torch.zeros(4, 4, dtype=D).masked_fill(~causal_keep(4, 4), float("-inf"))
mha_case("causal", True, uniform(N, 4, E), attn_mask=causal, average=False)
# self-attention with a 3-D float mask [N * H, L, S] holding -inf entries
m3 = uniform(N * H, 3, 3)
m3[0, 0, 2] = m3[3, 1, 0] = m3[2, 2, 1] = float("-inf")
mha_case("mask3d", True, uniform(N, 3, E), attn_mask=m3)
# unbatched [L, E] cross-attention with a key padding mask [S]
kpm1 = torch.tensor([0, 1, 0, 0, 0], dtype=torch.int32)
mha_case("unbatched", False, uniform(2, E), uniform(5, E), uniform(5, E), kpm=kpm1)

OUT = write_safetensors("torch_attn.safetensors", T)
print(f"{OUT}: {len(T)} tensors")
