#!/usr/bin/python3
"""Writes tests/fixtures/torch_seq.safetensors: PyTorch's values for the
sequence layers and loss of issue 11 (tests/test_nn_seq.c reads them).

Usage (from the repository root, with Debian's python3-torch):

    /usr/bin/python3 tools/gen_seq_fixtures.py [--out FILE]

Everything is float64 (int32 for indices and labels); the C tests copy
the values into float32 tensors for the float32 checks. Contents:

  emb.*    nn.Embedding(7, 4, padding_idx=0) as PyTorch initialises it
           (N(0, 1), padding row zeroed; torch.manual_seed(11)), indices
           [3, 5] holding the padding index, the output, a cotangent
           ("seed") and the weight's gradient (its row 0 is zero).
  ln.*     nn.LayerNorm((3, 4)) with weight and bias set to non-trivial
           values, an input [2, 3, 4], the output, a cotangent and the
           gradients of x, weight and bias.
  model.*  nn.Sequential(Embedding(7, 4, padding_idx=0), LayerNorm(4),
           Linear(4, 5)) (seed 12) reading token ids [3, 5]; its state
           dict ("model.0.weight", ...), the logits [3, 5, 5], labels [3,
           5] with -100 at padded steps, F.cross_entropy(logits.transpose(1,
           2), labels) (mean, ignore_index -100) and its sum, and the
           gradients of the mean loss ("model.grad.0.weight", ...).

The file is written as tools/gen_safetensors_fixture.py writes one (Debian
has no safetensors package); rerunning gives the same bytes.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_safetensors_fixture import build  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D = torch.float64


def seeded(shape, seed, lo=-1.0, hi=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=D) * (hi - lo) + lo)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out",
                    default=os.path.join(ROOT, "tests", "fixtures", "torch_seq.safetensors"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = {}

    torch.manual_seed(11)
    emb = torch.nn.Embedding(7, 4, padding_idx=0).to(D)
    idx = torch.tensor([[1, 3, 0, 6, 0], [2, 2, 5, 0, 0], [6, 1, 4, 3, 2]], dtype=torch.int32)
    y = emb(idx.long())
    seed = seeded(tuple(y.shape), 1)
    (gw,) = torch.autograd.grad(y, [emb.weight], seed)
    out.update({"emb.weight": emb.weight.detach(), "emb.idx": idx, "emb.out": y.detach(),
                "emb.seed": seed, "emb.grad": gw})

    ln = torch.nn.LayerNorm((3, 4)).to(D)
    with torch.no_grad():
        ln.weight.copy_(seeded((3, 4), 2, 0.5, 1.5))
        ln.bias.copy_(seeded((3, 4), 3))
    x = seeded((2, 3, 4), 4, -2.0, 3.0).requires_grad_()
    y = ln(x)
    seed = seeded((2, 3, 4), 5)
    gx, gw, gb = torch.autograd.grad(y, [x, ln.weight, ln.bias], seed)
    out.update({"ln.weight": ln.weight.detach(), "ln.bias": ln.bias.detach(),
                "ln.x": x.detach(), "ln.out": y.detach(), "ln.seed": seed, "ln.grad_x": gx,
                "ln.grad_weight": gw, "ln.grad_bias": gb})

    torch.manual_seed(12)
    m = torch.nn.Sequential(torch.nn.Embedding(7, 4, padding_idx=0), torch.nn.LayerNorm(4),
                            torch.nn.Linear(4, 5)).to(D)
    labels = torch.tensor([[3, 0, -100, 4, -100], [1, 1, 2, -100, -100], [0, 4, 4, 2, 1]],
                          dtype=torch.int32)
    logits = m(idx.long())
    loss = F.cross_entropy(logits.transpose(1, 2), labels.long(), ignore_index=-100)
    loss_sum = F.cross_entropy(logits.transpose(1, 2), labels.long(), ignore_index=-100,
                               reduction="sum")
    names = [n for n, _ in m.named_parameters()]
    grads = torch.autograd.grad(loss, [p for _, p in m.named_parameters()])
    for n, t in m.state_dict().items():
        out[f"model.{n}"] = t.detach()
    for n, g in zip(names, grads):
        out[f"model.grad.{n}"] = g
    out.update({"model.x": idx, "model.labels": labels, "model.logits": logits.detach(),
                "model.loss": loss.detach().reshape(()), "model.loss_sum": loss_sum.detach()})

    with open(args.out, "wb") as f:
        f.write(build({k: v.contiguous() for k, v in out.items()},
                      {"format": "pt", "generator": "tools/gen_seq_fixtures.py"}))
    print(f"wrote {len(out)} tensors to {args.out}")


if __name__ == "__main__":
    main()
