#!/usr/bin/python3
"""Generates tests/transformer_dec_fixtures.h: PyTorch's values for
nn.TransformerDecoderLayer and the stacks nn.TransformerEncoder and
nn.TransformerDecoder (tests/test_nn_transformer_dec.c).

Usage (from the repository root, with Debian's python3-torch 1.13):

    /usr/bin/python3 tools/gen_transformer_dec_fixtures.py > tests/transformer_dec_fixtures.h

As tools/gen_transformer_fixtures.py: one state dict per module (d_model 6,
nhead 2, dim_feedforward 10; biases and norm weights moved away from
PyTorch's zeros and ones; in the stacks every layer has values of its own,
so a layer that reads another's parameters is caught), inputs and
parameters that float32 holds exactly, everything computed in float64 in
eval mode with the inputs requiring gradients (PyTorch's composed "slow"
path, the one with autograd). Each case has a cotangent gy; the gradients
are those of sum(out * gy). Target length T = 4 and memory length S = 3
differ, so that a transposed mask or memory is caught.

Names (C):
  xd_param_names[XD_NPARAMS], xd_params[], xd_param_sizes[]    decoder layer
  xs_param_names[XS_NPARAMS], ...   encoder stack (2 layers and a norm)
  xds_param_names[XDS_NPARAMS], ... decoder stack (2 layers and a norm)
  xd_cases[], xds_cases[]   dec_case: settings, tgt, memory, gy, out, dtgt,
                            dmem, masks (float with -INFINITY; key padding
                            masks 1 where PyTorch's bool is True; NULL: none)
                            and d[], the parameters' gradients in the
                            names' order
  xs_cases[]   enc_case: the same for the encoder stack (src, dsrc)
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_fixture import c_bool, c_ident, print_param_tables  # noqa: E402
from torch_fixture import encoder_case_arrays, moved_state, rnd, tensor_emitter  # noqa: E402

torch.manual_seed(20261205)
D = torch.float64
E, H, F, N, T, S, L = 6, 2, 10, 2, 4, 3, 2
out = []
emit = tensor_emitter(out)


def dec_layer(norm_first, gelu, batch_first):
    return torch.nn.TransformerDecoderLayer(E, H, dim_feedforward=F, dropout=0.1,
                                            activation="gelu" if gelu else "relu",
                                            batch_first=batch_first, norm_first=norm_first,
                                            dtype=D)


def enc_layer(norm_first, gelu, batch_first):
    return torch.nn.TransformerEncoderLayer(E, H, dim_feedforward=F, dropout=0.1,
                                            activation="gelu" if gelu else "relu",
                                            batch_first=batch_first, norm_first=norm_first,
                                            dtype=D)


def make(kind, norm_first, gelu, batch_first):
    if kind == "xd":
        return dec_layer(norm_first, gelu, batch_first)
    if kind == "xs":
        return torch.nn.TransformerEncoder(enc_layer(norm_first, gelu, batch_first), L,
                                           norm=torch.nn.LayerNorm(E, dtype=D),
                                           enable_nested_tensor=False)
    return torch.nn.TransformerDecoder(dec_layer(norm_first, gelu, batch_first), L,
                                       norm=torch.nn.LayerNorm(E, dtype=D))


STATES = {k: moved_state(make(k, False, False, False).state_dict()) for k in ("xd", "xs", "xds")}
for k, st in STATES.items():
    for n, t in st.items():
        emit(f"{k}_p_{c_ident(n)}", t)


def causal_mask(n):
    """PyTorch 1.13 has no is_causal: the causal mask, spelled out."""
    return torch.zeros(n, n, dtype=D).masked_fill(
        ~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))


def seq(length, batch_first, unbatched):
    shape = (length, E) if unbatched else (N, length, E) if batch_first else (length, N, E)
    return rnd(*shape, lo=-2, hi=2).requires_grad_(True)


def opt_bool(m):
    return None if m is None else m.bool()


dec_cases, enc_cases = [], []


def dec_case(kind, name, norm_first, gelu, batch_first, unbatched=False, causal=False,
             tmask=None, mmask=None, tkpm=None, mkpm=None):
    mod = make(kind, norm_first, gelu, batch_first)
    mod.load_state_dict(STATES[kind])
    mod.eval()
    tgt, mem = seq(T, batch_first, unbatched), seq(S, batch_first, unbatched)
    if causal:
        tmask = causal_mask(T)
    y = mod(tgt, mem, tgt_mask=tmask, memory_mask=mmask, tgt_key_padding_mask=opt_bool(tkpm),
            memory_key_padding_mask=opt_bool(mkpm))
    assert torch.isfinite(y).all()
    gy = rnd(*y.shape)
    (y * gy).sum().backward()
    grads = dict(mod.named_parameters())
    p = f"{kind}_{name}"
    emit(p + "_tgt", tgt.detach())
    emit(p + "_mem", mem.detach())
    emit(p + "_gy", gy)
    emit(p + "_out", y.detach())
    emit(p + "_dtgt", tgt.grad)
    emit(p + "_dmem", mem.grad)
    for m, suffix in ((tmask, "tmask"), (mmask, "mmask"), (tkpm, "tkpm"), (mkpm, "mkpm")):
        if m is not None:
            emit(f"{p}_{suffix}", m.to(D))
    for n in STATES[kind]:
        emit(f"{p}_d_{c_ident(n)}", grads[n].grad)
    dec_cases.append((kind, name, norm_first, gelu, batch_first, unbatched, causal,
                      [m is not None for m in (tmask, mmask, tkpm, mkpm)],
                      list(tgt.shape), list(mem.shape)))


def enc_case(name, norm_first, gelu, batch_first, causal=False, kpm=None):
    mod = make("xs", norm_first, gelu, batch_first)
    mod.load_state_dict(STATES["xs"])
    mod.eval()
    src = seq(T, batch_first, False)
    mask = causal_mask(T) if causal else None
    y = mod(src, mask=mask, src_key_padding_mask=opt_bool(kpm))
    encoder_case_arrays(emit, f"xs_{name}", mod, src, y, mask, kpm, STATES["xs"])
    enc_cases.append((name, norm_first, gelu, batch_first, causal, mask is not None,
                      kpm is not None, list(src.shape)))


tkpm = torch.zeros(N, T, dtype=torch.int32)
tkpm[1, 2] = 1
mkpm = torch.zeros(N, S, dtype=torch.int32)
mkpm[1, 1] = 1
mkpm[0, 2] = 1
dec_case("xd", "post_relu", False, False, False)
dec_case("xd", "post_gelu_bf_mkpm", False, True, True, mkpm=mkpm)
dec_case("xd", "pre_relu_bf_causal_tkpm", True, False, True, causal=True, tkpm=tkpm)
dec_case("xd", "pre_gelu_masks_mkpm", True, True, False, tmask=rnd(T, T), mmask=rnd(T, S),
         mkpm=mkpm)
dec_case("xd", "post_relu_unbatched_causal", False, False, False, unbatched=True, causal=True,
         mkpm=torch.tensor([0, 1, 0], dtype=torch.int32))
dec_case("xds", "post_relu_causal_mkpm", False, False, False, causal=True, mkpm=mkpm)
dec_case("xds", "pre_gelu_bf", True, True, True)
enc_case("post_relu_causal_kpm", False, False, False, causal=True, kpm=tkpm)
enc_case("pre_gelu_bf", True, True, True)

# PyTorch's own initialisation of the stacks: deep copies, all layers equal
init = torch.nn.TransformerEncoder(enc_layer(False, False, False), L)
sd = init.state_dict()
equal = all(torch.equal(sd[n], sd[n.replace("layers.0.", "layers.1.")])
            for n in sd if n.startswith("layers.0."))
assert equal

print("/* Generated by tools/gen_transformer_dec_fixtures.py (PyTorch %s); do not edit." %
      torch.__version__)
print(" * References from the slow path (autograd). A freshly built nn.TransformerEncoder's")
print(" * layers were checked to start equal (copy.deepcopy in _get_clones).")
print(" */")
print("#ifndef TRANSFORMER_DEC_FIXTURES_H")
print("#define TRANSFORMER_DEC_FIXTURES_H")
print("#include <math.h>")
print("#include <stdbool.h>")
print("#include <stddef.h>")
print("#include <stdint.h>")
print(f"enum {{ XD_E = {E}, XD_H = {H}, XD_F = {F}, XD_N = {N}, XD_T = {T}, XD_S = {S}, "
      f"XD_LAYERS = {L},\n       XD_NPARAMS = {len(STATES['xd'])}, "
      f"XS_NPARAMS = {len(STATES['xs'])}, XDS_NPARAMS = {len(STATES['xds'])} }};")
print("\n\n".join(out))
print()
for k, st in STATES.items():
    print_param_tables(k, f"{k.upper()}_NPARAMS", st)


print("""
/* a decoder layer's or a decoder stack's case; d: XD_NPARAMS or
 * XDS_NPARAMS gradients */
typedef struct dec_case {
  const char *name;
  bool norm_first, gelu, batch_first, unbatched, causal;
  int ndim;
  int64_t tshape[3], mshape[3];
  const double *tgt, *mem, *gy, *out, *dtgt, *dmem;
  const double *tmask, *mmask, *tkpm, *mkpm; /* NULL: none */
  const double *d[XDS_NPARAMS];
} dec_case;

/* an encoder stack's case */
typedef struct enc_case {
  const char *name;
  bool norm_first, gelu, batch_first, causal;
  int ndim;
  int64_t shape[3];
  const double *src, *gy, *out, *dsrc, *mask, *kpm; /* mask, kpm NULL: none */
  const double *d[XS_NPARAMS];
} enc_case;
""")
for kind in ("xd", "xds"):
    print(f"static const dec_case {kind}_cases[] = {{")
    for (k, name, nf, gelu, bf, ub, causal, has, tsh, msh) in dec_cases:
        if k != kind:
            continue
        p = f"{k}_{name}"
        ms = [f"{p}_{s}" if h else "NULL" for s, h in zip(("tmask", "mmask", "tkpm", "mkpm"), has)]
        print(f'    {{"{name}", {c_bool(nf)}, {c_bool(gelu)}, {c_bool(bf)}, {c_bool(ub)}, '
              f'{c_bool(causal)}, {len(tsh)}, '
              f'{{{", ".join(map(str, tsh))}}}, {{{", ".join(map(str, msh))}}},')
        print(f"     {p}_tgt, {p}_mem, {p}_gy,\n     {p}_out, {p}_dtgt, {p}_dmem,")
        print("     " + ",\n     ".join(ms) + ",")
        print("     {" + ",\n      ".join(f"{p}_d_{c_ident(n)}" for n in STATES[k]) + "}},")
    print("};")
print("static const enc_case xs_cases[] = {")
for (name, nf, gelu, bf, causal, has_mask, has_kpm, shape) in enc_cases:
    p = f"xs_{name}"
    print(f'    {{"{name}", {c_bool(nf)}, {c_bool(gelu)}, {c_bool(bf)}, {c_bool(causal)}, '
          f'{len(shape)}, {{{", ".join(map(str, shape))}}},')
    print(f"     {p}_src, {p}_gy, {p}_out, {p}_dsrc,")
    print(f'     {p + "_mask" if has_mask else "NULL"}, {p + "_kpm" if has_kpm else "NULL"},')
    print("     {" + ",\n      ".join(f"{p}_d_{c_ident(n)}" for n in STATES["xs"]) + "}},")
print("};")
print("#endif")
