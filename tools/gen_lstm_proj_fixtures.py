#!/usr/bin/python3
"""Writes tests/fixtures/torch_lstm_proj.safetensors: PyTorch's LSTM with
projections (proj_size).

Usage (from the repository root, with Debian's python3-torch 1.13):

    /usr/bin/python3 tools/gen_lstm_proj_fixtures.py [--out FILE]

For each case of CASES below (tests/test_nn_lstm_proj.c has the same
table), a torch.nn.LSTM(proj_size=P) with PyTorch's own initialisation
(seeded), run on a random input, and the gradients of the scalar loss

    L = sum(out * wy) + sum(h_n * wh) + sum(c_n * wc)

with wy, wh, wc fixed random weights. The file holds, under "<case>.":

  weight_ih_l0, ... the layer's state dict, as PyTorch names it (with
                    weight_hr_l<k>), so that a model whose layer is named
                    <case> loads it unchanged
  x, h0, c0         the input ([T, N, I], batch_first [N, T, I], or
                    unbatched [T, I]) and the initial states (h0 [L D, N,
                    P], c0 [L D, N, H]) when the case has them
  lengths           I32 [N] (variable-length cases): the input goes through
                    pack_padded_sequence(enforce_sorted=False) and the
                    output through pad_packed_sequence(total_length=T)
  wy, wh, wc        the loss weights
  out, h_n, c_n     the outputs
  grad.x, grad.h0, grad.c0, grad.<parameter>   dL/d of each

A case ending in _f32 runs in float32, the others in float64. Dropout is
0 (PyTorch's masks come from its own generator). Padded input steps hold
7.0, which must not matter. Rerunning gives the same bytes.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_safetensors_fixture import build  # noqa: E402
from torch_fixture import rnn_case_tensors  # noqa: E402

# name, input_size, hidden, proj, layers, batch_first, bias, bidirectional,
# T, N (0: unbatched), state, lengths
CASES = [
    ("p1", 3, 5, 2, 1, False, True, False, 4, 2, False, None),
    ("p2_bf_len", 3, 5, 3, 2, True, True, False, 5, 3, True, [5, 2, 4]),
    ("p2bi_len", 3, 4, 2, 2, False, True, True, 5, 3, True, [3, 5, 1]),
    ("p1bi_bf_nb", 2, 4, 3, 1, True, False, True, 4, 2, True, None),
    ("p2bi_unbatched", 3, 4, 1, 2, False, True, True, 4, 0, True, None),
    ("p2_len_f32", 3, 5, 2, 2, False, True, False, 5, 3, True, [2, 5, 3]),
    ("p2bi_bf_len_f32", 3, 4, 3, 2, True, True, True, 4, 3, True, [4, 1, 3]),
]


def run_case(seed, name, i, h, p, layers, bf, bias, bidir, t, n, state, lengths):
    dtype = torch.float32 if name.endswith("_f32") else torch.float64
    torch.manual_seed(seed)
    m = torch.nn.LSTM(i, h, num_layers=layers, batch_first=bf, bias=bias,
                      bidirectional=bidir, proj_size=p).to(dtype)
    d = 2 if bidir else 1
    unb = n == 0
    x = torch.randn((t, i) if unb else ((n, t, i) if bf else (t, n, i)), dtype=dtype)
    if lengths is not None:  # padding holds values, which must not matter
        for b, ln in enumerate(lengths):
            pad = x[b, ln:] if bf else x[ln:, b]
            pad.fill_(7.0)
    lead = (d * layers,) if unb else (d * layers, n)
    h0 = torch.randn(lead + (p,), dtype=dtype) if state else None
    c0 = torch.randn(lead + (h,), dtype=dtype) if state else None
    ys = (t, d * p) if unb else ((n, t, d * p) if bf else (t, n, d * p))
    wy = torch.randn(ys, dtype=dtype)
    wh = torch.randn(lead + (p,), dtype=dtype)
    wc = torch.randn(lead + (h,), dtype=dtype)
    x.requires_grad_(True)
    for s0 in (h0, c0):
        if s0 is not None:
            s0.requires_grad_(True)
    inp = x
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), batch_first=bf,
                                                      enforce_sorted=False)
    out, (hn, cn) = m(inp, (h0, c0) if state else None)
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=bf, total_length=t)
    loss = (out * wy).sum() + (hn * wh).sum() + (cn * wc).sum()
    loss.backward()

    return rnn_case_tensors(name, m, x, lengths, wy, wh, out, hn, h0, c0, wc, cn)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "tests", "fixtures",
                                                  "torch_lstm_proj.safetensors"))
    args = ap.parse_args()
    ts = {}
    for seed, case in enumerate(CASES):
        ts.update(run_case(300 + seed, *case))
    data = build(ts, {"format": "pt", "torch": torch.__version__})
    with open(args.out, "wb") as f:
        f.write(data)
    print(f"{args.out}: {len(data)} bytes, {len(ts)} tensors, torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
