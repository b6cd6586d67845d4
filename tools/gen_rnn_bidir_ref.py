#!/usr/bin/python3
"""Writes tests/rnn_bidir_ref.h: PyTorch 1.13's bidirectional RNN, LSTM, GRU.

Usage (from the repository root, with Debian's python3-torch 1.13):

    /usr/bin/python3 tools/gen_rnn_bidir_ref.py > tests/rnn_bidir_ref.h

Every case of CASES is a 2-layer torch.nn.RNN (tanh) / LSTM / GRU with
bidirectional=True in float64 whose tensors come from formulas (below, and
the same in tests/test_nn_rnn.c), so the test builds them without a file:

  parameter i (in named_parameters() order), flat element e:
                 0.4 sin(1.7 (i + 1) + 0.31 e)
  x [e]          sin(0.5 e + 0.2)      (in the case's layout)
  h0 [e]         0.5 cos(0.3 e + 0.1)
  c0 [e]         0.5 sin(0.7 e + 0.4)
  wy, wh, wc [e] cos(0.37 e + 0.5), sin(0.23 e + 0.9), cos(0.41 e + 1.1)

With lengths the input goes through pack_padded_sequence(
enforce_sorted=False) and the output through pad_packed_sequence(
total_length=T). The header holds, per case, the output, h_n, c_n, and the
gradients of L = sum(out wy) + sum(h_n wh) [+ sum(c_n wc)] w.r.t. x, h0,
c0 and every parameter (concatenated in named_parameters() order), at 17
significant digits.
"""
import math
import textwrap

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# name, cell, input_size, hidden, batch_first, bias, T, N (0: unbatched), state, lengths
CASES = [
    ("tanh_len", "tanh", 3, 2, False, True, 4, 3, True, [4, 2, 3]),
    ("lstm", "lstm", 3, 2, False, True, 3, 2, False, None),
    ("lstm_bf_len", "lstm", 3, 2, True, True, 4, 3, True, [2, 4, 1]),
    ("gru_bf", "gru", 3, 2, True, True, 3, 2, True, None),
    ("gru_len_short", "gru", 2, 3, False, True, 4, 2, True, [2, 3]),
    ("gru_nb_bf_len", "gru", 2, 2, True, False, 3, 3, False, [3, 1, 2]),
    ("lstm_unbatched", "lstm", 3, 2, False, True, 3, 0, True, None),
    ("tanh_unbatched_bf", "tanh", 2, 3, True, True, 3, 0, False, None),
]


def fill(t, f):
    flat = t.view(-1)
    for e in range(flat.numel()):
        flat[e] = f(e)
    return t


def run(name, cell, i, h, bf, bias, t, n, state, lengths):
    dt = torch.float64
    kw = dict(num_layers=2, batch_first=bf, bias=bias, bidirectional=True)
    if cell == "tanh":
        m = torch.nn.RNN(i, h, nonlinearity="tanh", **kw)
    else:
        m = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(i, h, **kw)
    m = m.to(dt)
    with torch.no_grad():
        for k, (_, p) in enumerate(m.named_parameters()):
            fill(p, lambda e, k=k: 0.4 * math.sin(1.7 * (k + 1) + 0.31 * e))
    xs = (t, i) if n == 0 else ((n, t, i) if bf else (t, n, i))
    ss = (4, h) if n == 0 else (4, n, h)
    x = fill(torch.empty(xs, dtype=dt), lambda e: math.sin(0.5 * e + 0.2)).requires_grad_()
    h0 = c0 = None
    if state:
        h0 = fill(torch.empty(ss, dtype=dt), lambda e: 0.5 * math.cos(0.3 * e + 0.1))
        h0.requires_grad_()
        if cell == "lstm":
            c0 = fill(torch.empty(ss, dtype=dt), lambda e: 0.5 * math.sin(0.7 * e + 0.4))
            c0.requires_grad_()
    hx = None if h0 is None else ((h0, c0) if cell == "lstm" else h0)
    if cell == "lstm" and h0 is None:
        hx = None
    if lengths is not None:
        packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=bf,
                                      enforce_sorted=False)
        po, hn = m(packed, hx)
        out, _ = pad_packed_sequence(po, batch_first=bf, total_length=t)
    else:
        out, hn = m(x, hx)
    cn = None
    if cell == "lstm":
        hn, cn = hn
    wy = fill(torch.empty(out.shape, dtype=dt), lambda e: math.cos(0.37 * e + 0.5))
    wh = fill(torch.empty(hn.shape, dtype=dt), lambda e: math.sin(0.23 * e + 0.9))
    loss = (out * wy).sum() + (hn * wh).sum()
    if cn is not None:
        wc = fill(torch.empty(cn.shape, dtype=dt), lambda e: math.cos(0.41 * e + 1.1))
        loss = loss + (cn * wc).sum()
    loss.backward()
    res = [("out", out), ("hn", hn), ("cn", cn), ("gx", x.grad),
           ("gh0", None if h0 is None else h0.grad), ("gc0", None if c0 is None else c0.grad),
           ("gp", torch.cat([p.grad.reshape(-1) for p in m.parameters()]))]
    return res, [k for k, _ in m.named_parameters()]


def main():
    print("/* rnn_bidir_ref.h: written by tools/gen_rnn_bidir_ref.py (PyTorch %s); do not"
          % torch.__version__)
    print(" * edit. The reference values of tests/test_nn_rnn.c's bidirectional cases. */")
    for c in CASES:
        res, names = run(*c)
        print(textwrap.fill("%s; parameters: %s" % (c[0], " ".join(names)), 94,
                            initial_indent="/* ", subsequent_indent=" * ") + " */")
        for what, v in res:
            if v is None:
                continue
            vals = ["%.17g" % a for a in v.detach().reshape(-1).tolist()]
            print("static const double ref_%s_%s[%d] = {" % (c[0], what, len(vals)))
            for k in range(0, len(vals), 3):
                print("    " + ", ".join(vals[k:k + 3]) + ",")
            print("};")


main()
