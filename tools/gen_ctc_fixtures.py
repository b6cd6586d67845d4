#!/usr/bin/python3
"""Writes tests/ctc_fixtures.h: the PyTorch reference values of
tests/test_nn_ctc.c (nn_ctc_loss, torch.nn.functional.ctc_loss).

Usage (from the repository root, with Debian's python3-torch):

    /usr/bin/python3 tools/gen_ctc_fixtures.py > tests/ctc_fixtures.h

Each case gives T, N, C, blank, zero_infinity, whether log_probs are
unbatched [T,C], whether the targets are padded [N,S] or concatenated, the
targets (1-D concatenated or [N,S] padded, also unbatched, as torch
takes them), input and target lengths, and the input values: logits [T,N,C]
(the test takes log_softmax over C, as a model would) or, for `direct`
cases, log-probabilities that are the loss's input themselves. Every case
runs in float64 and in float32 (the float32 inputs are the float64 ones
rounded) and gives, for reduction 'mean', then 'sum', then 'none':

    {loss, d loss / d logits [T*N*C], d loss / d log_probs [T*N*C]}

where for 'none' the loss is the N per-sample losses (1 unbatched) and the
gradients are those of sum_n W_n loss_n with W_n = 1 + n / 2.

(direct cases: the logits part is absent). d/dlogits is torch's own,
end to end through log_softmax. d/dlog_probs is the TRUE derivative,
-posterior (times the reduction's weight), which nn_ctc_loss gives and
torch's native backward does not (it returns exp(log_probs) - posterior,
assuming a log_softmax before it): it is computed here as torch's native
gradient minus exp(log_probs) times each sample's weight on the frames
t < input_length, and cross-checked (float64, possible samples) against
the autograd gradient of a plain alpha recursion written with torch ops
below. Impossible samples without zero_infinity: torch's loss inf and its
NaN gradient on the sample's frames.

Inputs come from torch.manual_seed(11). Deterministic: rerunning prints
the same text.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_fixture import c_double_array  # noqa: E402

torch.manual_seed(11)
NAN = math.nan


def ref_loglik(lp, tg, il, tl, blank):
    """The alpha recursion with torch ops (float64, autograd), [N]."""
    T, N, C = lp.shape
    out = []
    for n in range(N):
        ext = [blank]
        for c in tg[n][: tl[n]]:
            ext += [c, blank]
        L = len(ext)
        neg = torch.tensor(-1e300, dtype=lp.dtype)  # -inf would make NaN gradients
        if il[n] == 0:  # no frame: the empty target alone, with probability 1
            out.append(lp[0, n, 0] * 0 + (0.0 if L == 1 else -1e300))
            continue
        a = [lp[0, n, ext[0]]] + [lp[0, n, ext[1]] if L > 1 else neg] + [neg] * (L - 2)
        a = a[:L]
        for t in range(1, il[n]):
            b = []
            for s in range(L):
                c = [a[s]]
                if s >= 1:
                    c.append(a[s - 1])
                if s >= 2 and ext[s] != blank and ext[s] != ext[s - 2]:
                    c.append(a[s - 2])
                b.append(torch.logsumexp(torch.stack(c), 0) + lp[t, n, ext[s]])
            a = b
        ends = [a[L - 1]] + ([a[L - 2]] if L > 1 else [])
        out.append(torch.logsumexp(torch.stack(ends), 0))
    return torch.stack(out)


CASES = []


def case(name, T, N, C, targets, il, tl, blank=0, zinf=False, padded=True, unbatched=False,
         direct=None):
    x = direct if direct is not None else torch.randn(T * N * C, dtype=torch.float64) * 1.5
    CASES.append(dict(name=name, T=T, N=N, C=C, tg=targets, il=il, tl=tl, blank=blank, zinf=zinf,
                      padded=padded, unbatched=unbatched, x=[float(v) for v in x],
                      direct=direct is not None))


# padded, random labels, varied lengths
case("padded", 10, 3, 5, [[1, 3, 2, 4], [2, 2, 0, 0], [4, 1, 3, 0]], [10, 7, 9], [4, 2, 3])
# concatenated; repeated labels need a blank between them; one sample at
# its shortest feasible input (3 labels + 2 repeats = 5 frames)
case("concatenated repeats", 8, 3, 4, [1, 1, 2, 3, 3, 3, 2, 1], [8, 5, 6], [3, 3, 2],
     padded=False)
# blank last and in the middle (labels around it)
case("blank last", 7, 2, 5, [[0, 1, 3], [2, 2, 1]], [7, 6], [3, 3], blank=4)
case("blank middle", 7, 2, 5, [[0, 1, 3], [4, 4, 1]], [7, 7], [3, 2], blank=2, padded=True)
# an impossible sample (3 labels with 2 repeats need 5 frames, it has 4):
# inf and NaN gradients, or 0 with zero_infinity
for z in (False, True):
    case("impossible zinf %d" % z, 6, 3, 4, [[1, 1, 1], [2, 3, 0], [3, 1, 2]], [4, 6, 6],
         [3, 2, 3], zinf=z)
# empty targets (input length 0 is left out: torch 1.13 reads memory it
# never wrote there, a different value each run; tests/test_nn_ctc.c checks
# it on its own)
case("empty targets", 5, 3, 3, [[1, 2], [0, 0], [0, 0]], [5, 4, 1], [2, 0, 0])
# unbatched [T,C]: as in torch, 1-D targets are concatenated (their size the
# target length), 2-D ones padded [1,S]
case("unbatched", 6, 1, 4, [2, 1, 1], [6], [3], padded=False, unbatched=True)
case("unbatched padded blank 1", 5, 1, 3, [[2, 0, 2, 0]], [5], [3], blank=1, unbatched=True)
# log-probabilities given directly (not normalised), NaN in the frames
# past a sample's input length, which are read by neither value nor gradient
lp = torch.randn(6, 2, 4, dtype=torch.float64).log_softmax(2)
lp[4:, 0, :] = NAN
case("direct NaN padding", 6, 2, 4, [[1, 2], [3, 3]], [4, 6], [2, 2], direct=lp.flatten())


def run(c, dt, red):
    T, N, C = c["T"], c["N"], c["C"]
    x = torch.tensor(c["x"], dtype=torch.float64).to(dt).reshape(T, N, C)
    x.requires_grad_()
    lp = x if c["direct"] else x.log_softmax(2)
    lp.retain_grad()
    tg = torch.tensor(c["tg"], dtype=torch.int32)
    il, tl = torch.tensor(c["il"]), torch.tensor(c["tl"])
    if c["unbatched"]:
        loss = F.ctc_loss(lp[:, 0], tg, il[0], tl[0], blank=c["blank"], reduction=red,
                          zero_infinity=c["zinf"])
    else:
        loss = F.ctc_loss(lp, tg, il, tl, blank=c["blank"], reduction=red,
                          zero_infinity=c["zinf"])
    # 'none': the per-sample losses, differentiated through sum(loss * W)
    W = torch.tensor([1.0 + 0.5 * n for n in range(N)], dtype=torch.float64)
    if red == "none":
        (loss * W.to(dt).reshape(loss.shape)).sum().backward()
    else:
        loss.backward()
    # the true gradient: torch's native one minus w_n exp(lp) on t < il_n
    w = torch.ones(N, dtype=torch.float64)
    if red == "mean":
        w = 1.0 / (N * torch.clamp(tl.double(), min=1))
    elif red == "none":
        w = W
    frames = (torch.arange(T)[:, None] < il[None, :]).double()[:, :, None]
    e = torch.where(frames > 0, lp.detach().double().exp(), torch.zeros(()))
    true = lp.grad.double() - e * w[None, :, None]
    if c["zinf"]:  # torch zeroes an infinite sample's gradient, exp term included
        with torch.no_grad():
            inf = torch.isinf(F.ctc_loss(lp.detach(), tg, il, tl, blank=c["blank"],
                                         reduction="none"))
        true[:, inf, :] = 0
    if dt == torch.float64:
        check_true(c, lp.detach(), true, w)
    out = loss.detach().double().flatten().tolist()
    if not c["direct"]:
        out += x.grad.double().flatten().tolist()
    return out + true.flatten().tolist()


def check_true(c, lp, true, w):
    """The true gradient against autograd through ref_loglik on possible
    samples (float64)."""
    T, N, C = lp.shape
    tg = c["tg"]
    if not c["padded"]:
        rows, at = [], 0
        for n in range(N):
            rows.append(tg[at: at + c["tl"][n]])
            at += c["tl"][n]
        tg = rows
    lp = torch.where(torch.isnan(lp), torch.zeros(()), lp).requires_grad_()
    ll = ref_loglik(lp, tg, c["il"], c["tl"], c["blank"])
    ok = ll > -1e200  # the impossible ones hold about -1e300
    (-(ll[ok] * w[ok]).sum()).backward()
    for n in range(N):
        if ok[n]:
            d = (lp.grad[:, n] - true[:, n]).abs().max().item()
            assert d < 1e-10, (c["name"], n, d)


ver = torch.__version__
print("/* generated by tools/gen_ctc_fixtures.py (PyTorch %s); do not edit */" % ver)
print("/* clang-format off */")
for i, c in enumerate(CASES):
    print(c_double_array("CTC_%d_X" % i, c["x"]))
    flat = c["tg"] if not c["padded"] else [v for r in c["tg"] for v in r]
    print("static const int32_t CTC_%d_TG[%d] = {%s};" % (i, len(flat),
                                                     ", ".join(str(v) for v in flat)))
    print("static const int64_t CTC_%d_IL[%d] = {%s};" % (i, c["N"],
                                                     ", ".join(str(v) for v in c["il"])))
    print("static const int64_t CTC_%d_TL[%d] = {%s};" % (i, c["N"],
                                                     ", ".join(str(v) for v in c["tl"])))
    for dn, dt in (("F64", torch.float64), ("F32", torch.float32)):
        vals = run(c, dt, "mean") + run(c, dt, "sum") + run(c, dt, "none")
        print(c_double_array("CTC_%d_%s" % (i, dn), vals))
print("static const ctc_case CTC_CASES[] = {")
for i, c in enumerate(CASES):
    S = len(c["tg"][0]) if c["padded"] else len(c["tg"])
    print('    {"%s", %d, %d, %d, %d, %d, %s, %s, %s, %s, CTC_%d_X, CTC_%d_TG, CTC_%d_IL, '
          'CTC_%d_TL, {CTC_%d_F64, CTC_%d_F32}},'
          % (c["name"], c["T"], c["N"], c["C"], S, c["blank"], str(c["zinf"]).lower(),
             str(c["padded"]).lower(), str(c["unbatched"]).lower(), str(c["direct"]).lower(),
             i, i, i, i, i, i))
print("};")
print("/* clang-format on */")
