#!/usr/bin/python3
"""Writes tests/fixtures/torch_rnn.safetensors: PyTorch's recurrent layers.

With --bidir it writes BIDIR_CASES (bidirectional=True; h0, c0, wh, wc
[2 layers, N, H], wy [., ., 2 H]) to tests/fixtures/torch_rnn_bidir.safetensors
instead, the same way.

Usage (from the repository root, with Debian's python3-torch 1.13):

    /usr/bin/python3 tools/gen_rnn_fixtures.py [--out FILE]
    /usr/bin/python3 tools/gen_rnn_fixtures.py --bidir [--out FILE]

For each case of CASES below (tests/test_nn_rnn.c has the same table), a
torch.nn.RNN / LSTM / GRU with PyTorch's own initialisation (seeded), run
on a random input, and the gradients of the scalar loss

    L = sum(out * wy) + sum(h_n * wh) [+ sum(c_n * wc) for LSTM]

with wy, wh, wc fixed random weights. The file holds, under "<case>.":

  weight_ih_l0, ... the layer's state dict, as PyTorch names it, so that
                    a model whose layer is named <case> loads it unchanged
  x, h0, c0         the input ([T, N, I] or batch_first [N, T, I]) and the
                    initial states [layers, N, H] (when the case has them)
  lengths           I32 [N] (variable-length cases): the input goes through
                    pack_padded_sequence(enforce_sorted=False) and the
                    output through pad_packed_sequence(total_length=T)
  wy, wh, wc        the loss weights
  out, h_n, c_n     the outputs
  grad.x, grad.h0, grad.c0, grad.<parameter>   dL/d of each

A case ending in _f32 runs in float32, the others in float64. Dropout is
0 (PyTorch's masks come from its own generator). The file is written as
tools/gen_safetensors_fixture.py writes one (Debian has no safetensors
package); rerunning gives the same bytes.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_safetensors_fixture import build  # noqa: E402
from torch_fixture import rnn_case_tensors  # noqa: E402

# name, cell, input_size, hidden, layers, batch_first, bias, T, N, state, lengths
CASES = [
    ("tanh1", "tanh", 3, 4, 1, False, True, 4, 2, False, None),
    ("relu2", "relu", 3, 4, 2, True, True, 4, 3, True, [4, 2, 3]),
    ("lstm1", "lstm", 3, 4, 1, False, True, 5, 2, False, None),
    ("lstm2", "lstm", 3, 4, 2, True, True, 5, 3, True, [5, 3, 1]),
    ("lstm2nb", "lstm", 2, 3, 2, False, False, 4, 3, False, [2, 4, 3]),
    ("gru1", "gru", 3, 4, 1, True, True, 5, 2, False, None),
    ("gru2", "gru", 3, 4, 2, False, True, 5, 3, True, [3, 5, 2]),
    ("gru2nb", "gru", 2, 3, 2, True, False, 3, 2, True, None),
    ("tanh2_f32", "tanh", 3, 4, 2, False, True, 4, 2, True, [4, 3]),
    ("lstm2_f32", "lstm", 3, 4, 2, True, True, 5, 3, True, [5, 3, 1]),
    ("gru2_f32", "gru", 3, 4, 2, False, True, 5, 3, True, [3, 5, 2]),
]

# bidirectional=True, in tests/fixtures/torch_rnn_bidir.safetensors (a file
# of its own, so that the first one keeps its bytes): PyTorch's own
# initialisation, so a model loads a state dict PyTorch wrote
BIDIR_CASES = [
    ("lstm2bi", "lstm", 3, 4, 2, True, True, 5, 3, True, [5, 3, 1]),
    ("gru2bi_f32", "gru", 3, 4, 2, False, True, 5, 3, True, [3, 5, 2]),
]


def make(cell, i, h, layers, batch_first, bias, bidirectional=False):
    kw = dict(num_layers=layers, batch_first=batch_first, bias=bias, bidirectional=bidirectional)
    if cell in ("tanh", "relu"):
        return torch.nn.RNN(i, h, nonlinearity=cell, **kw)
    return (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(i, h, **kw)


def run_case(seed, name, cell, i, h, layers, bf, bias, t, n, state, lengths, bidir=False):
    dtype = torch.float32 if name.endswith("_f32") else torch.float64
    torch.manual_seed(seed)
    m = make(cell, i, h, layers, bf, bias, bidir).to(dtype)
    d = 2 if bidir else 1
    x = torch.randn((n, t, i) if bf else (t, n, i), dtype=dtype)
    if lengths is not None:  # padding holds values, which must not matter
        for b, ln in enumerate(lengths):
            pad = x[b, ln:] if bf else x[ln:, b]
            pad.fill_(7.0)
    h0 = torch.randn(d * layers, n, h, dtype=dtype) if state else None
    c0 = torch.randn(d * layers, n, h, dtype=dtype) if state and cell == "lstm" else None
    wy = torch.randn((n, t, d * h) if bf else (t, n, d * h), dtype=dtype)
    wh = torch.randn(d * layers, n, h, dtype=dtype)
    wc = torch.randn(d * layers, n, h, dtype=dtype)
    x.requires_grad_(True)
    for s0 in (h0, c0):
        if s0 is not None:
            s0.requires_grad_(True)
    inp = x
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), batch_first=bf,
                                                      enforce_sorted=False)
    hx = None
    if cell == "lstm" and state:
        hx = (h0, c0)
    elif state:
        hx = h0
    out, hn = m(inp, hx)
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=bf, total_length=t)
    cn = None
    if cell == "lstm":
        hn, cn = hn
    loss = (out * wy).sum() + (hn * wh).sum()
    if cell == "lstm":
        loss = loss + (cn * wc).sum()
    loss.backward()
    return rnn_case_tensors(name, m, x, lengths, wy, wh, out, hn, h0, c0,
                            wc if cell == "lstm" else None, cn)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "tests", "fixtures",
                                                  "torch_rnn.safetensors"))
    ap.add_argument("--bidir", action="store_true",
                    help="write BIDIR_CASES (to torch_rnn_bidir.safetensors by default)")
    args = ap.parse_args()
    cases, first = (BIDIR_CASES, 200) if args.bidir else (CASES, 100)
    if args.bidir and args.out == ap.get_default("out"):
        args.out = args.out.replace("torch_rnn.", "torch_rnn_bidir.")
    ts = {}
    for seed, case in enumerate(cases):
        ts.update(run_case(first + seed, *case, bidir=args.bidir))
    data = build(ts, {"format": "pt", "torch": torch.__version__})
    with open(args.out, "wb") as f:
        f.write(data)
    print(f"{args.out}: {len(data)} bytes, {len(ts)} tensors, torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
