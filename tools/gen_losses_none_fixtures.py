#!/usr/bin/python3
"""Writes tests/losses_none_fixtures.h: the PyTorch reference values of
tests/test_nn_losses_none.c, every loss of nn.h with reduction='none'
(NN_NONE).

Usage (from the repository root, with Debian's python3-torch):

    /usr/bin/python3 tools/gen_losses_none_fixtures.py > tests/losses_none_fixtures.h

Each case names a loss (its C kind), its scalar options and its input
tensors (values, shape, whether the input requires a gradient, whether it is
class labels: doubles here, i32 in the test; an absent optional tensor, such
as a weight, is NULL). Every case runs in float64 and in float32 (the
float32 inputs are the float64 ones rounded) with reduction='none' and gives
the unreduced loss's shape (NONE_k_SHAPE in the case table) and
{the loss's elements, the gradients of the inputs that require one, in
order}, the gradients being those of sum(loss * W) for the fixed random
weights W of the loss's shape (NONE_k_W): a gradient that reaches each
element with its own factor, so an element's value and gradient are both
checked. Class-last logits ([N, T..., C], the C option class_last) are moved
to dim 1 for torch. Random inputs come from torch.manual_seed(11).
Deterministic: rerunning prints the same text. The header also holds the
table of cases (NONE_CASES) that the test walks; its struct is the test's
none_case.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_fixture import c_double, c_double_array  # noqa: E402
from torch_fixture import uniform  # noqa: E402

NAN = math.nan
torch.manual_seed(11)


def rnd(n, lo, hi):
    return uniform(n, lo=lo, hi=hi).tolist()


def n_of(shape):
    return math.prod(shape)


CASES = []


def inp(v, shape, grad=False, labels=False):
    assert v is None or len(v) == n_of(shape), (len(v), shape)
    return (v, shape, grad, labels)


NONE = inp(None, [])


def case(name, kind, ins, fn, a=0.0, p=0.0, eps=0.0, f1=False, f2=False, ignore=False,
         ignore_index=0, class_last=False):
    CASES.append(dict(name=name, kind=kind, ins=ins, fn=fn, a=a, p=p, eps=eps, f1=f1, f2=f2,
                      ignore=ignore, ignore_index=ignore_index, class_last=class_last))


def cl(z, on):
    """class_last logits [N, T..., C] as torch's [N, C, T...]"""
    return z.movedim(-1, 1) if on and z.dim() > 2 else z


# ---- elementwise regression losses, [3,4] with a few exact kinks
X = rnd(12, -2, 2)
T = X[:3] + rnd(9, -2, 2)                                  # d = 0 at elements 0..2
T_K = [X[0] - 1.0, X[1] + 0.5, X[2]] + rnd(9, -2, 2)       # |d| = 1, 0.5, 0
case("mse", "MSE", [inp(X, [3, 4], True), inp(T, [3, 4], True)],
     lambda i: F.mse_loss(i[0], i[1], reduction="none"))
case("mse target [6] for [6,1]", "MSE", [inp(X[:6], [6, 1], True), inp(T[:6], [6], True)],
     lambda i: F.mse_loss(i[0], i[1].view(6, 1), reduction="none"))
case("l1", "L1", [inp(X, [3, 4], True), inp(T, [3, 4], True)],
     lambda i: F.l1_loss(i[0], i[1], reduction="none"))
for beta in (1.0, 0.5, 0.0):
    case("smooth_l1 beta %g" % beta, "SMOOTH", [inp(X, [3, 4], True), inp(T_K, [3, 4], True)],
         lambda i, b=beta: F.smooth_l1_loss(i[0], i[1], beta=b, reduction="none"), a=beta)
for delta in (1.0, 0.5):
    case("huber delta %g" % delta, "HUBER", [inp(X, [3, 4], True), inp(T_K, [3, 4], True)],
         lambda i, d=delta: F.huber_loss(i[0], i[1], delta=d, reduction="none"), a=delta)
LP = torch.log_softmax(torch.tensor(X).view(3, 4), 1).flatten().tolist()
PT = [0.0, 0.25, 0.5, 0.25] + torch.softmax(torch.tensor(rnd(8, -1, 1)).view(2, 4), 1).flatten().tolist()
case("kl_div", "KL", [inp(LP, [3, 4], True), inp(PT, [3, 4], True)],
     lambda i: F.kl_div(i[0], i[1], reduction="none"))
case("kl_div log_target", "KL", [inp(LP, [3, 4], True), inp(X, [3, 4], True)],
     lambda i: F.kl_div(i[0], i[1], reduction="none", log_target=True), f1=True)

# ---- likelihood, ranking and embedding losses
V = [1e-8, 0.5, 2.0, 0.25] + rnd(8, 0.1, 2)
case("gaussian hetero full", "GAUSS",
     [inp(X, [3, 4], True), inp(T, [3, 4], True), inp(V, [3, 4], True)],
     lambda i: F.gaussian_nll_loss(i[0], i[1], i[2], full=True, eps=1e-6, reduction="none"),
     eps=1e-6, f1=True)
case("gaussian homo [3]", "GAUSS",
     [inp(X, [3, 4], True), inp(T, [3, 4], True), inp(V[1:4], [3], True)],
     lambda i: F.gaussian_nll_loss(i[0], i[1], i[2], eps=1e-6, reduction="none"), eps=1e-6)
P_T = [0.0, 0.5, 1.0, 1.5, 2.0, 3.5, 0.25, 4.0, 0.75, 1.0, 2.5, 7.0]
case("poisson log_input", "POISSON", [inp(X, [3, 4], True), inp(P_T, [3, 4], True)],
     lambda i: F.poisson_nll_loss(i[0], i[1], log_input=True, reduction="none"),
     eps=1e-8, f1=True)
case("poisson rate full", "POISSON",
     [inp([abs(v) + 0.1 for v in X], [3, 4], True), inp(P_T, [3, 4], False)],
     lambda i: F.poisson_nll_loss(i[0], i[1], log_input=False, full=True, eps=1e-8,
                                  reduction="none"), eps=1e-8, f2=True)
MR_X1 = [1.0, 0.5, 2.0, -1.0, 0.25, 3.0] + rnd(6, -1, 1)
MR_X2 = [0.5, 1.0, 2.0, -0.5, 0.25, 1.0] + rnd(6, -1, 1)
MR_Y = [1.0, -1.0, 1.0, -1.0, 0.0, 1.0, -1.0, 0.5, 1.0, -1.0, 2.0, 1.0]
case("margin_ranking", "MR", [inp(MR_X1, [12], True), inp(MR_X2, [12], True),
                              inp(MR_Y, [12], True)],
     lambda i: F.margin_ranking_loss(*i, margin=0.5, reduction="none"), a=0.5)
H_Y = [-1.0, -1.0, -1.0, 1.0, 1.0, 0.0, 2.0, -1.0, 0.5, -1.0, -1.0, 1.0]
case("hinge_embedding", "HINGE", [inp([1.0] + X[1:], [3, 4], True), inp(H_Y, [3, 4])],
     lambda i: F.hinge_embedding_loss(*i, margin=1.0, reduction="none"), a=1.0)
case("soft_margin", "SOFT", [inp(X, [3, 4], True), inp(H_Y, [3, 4])],
     lambda i: F.soft_margin_loss(*i, reduction="none"))
C_X1 = [0.0, 0.0, 0.0, 1.0, 2.0, -1.0, 1.0, 0.0, 0.0] + rnd(9, -1, 1)
C_X2 = [1.0, -2.0, 0.5, 2.0, 4.0, -2.0, 0.0, 1.0, 0.0] + rnd(9, -1, 1)
C_Y = [1.0, -1.0, -1.0, 1.0, -1.0, 0.5]
case("cosine_embedding", "COS", [inp(C_X1, [6, 3], True), inp(C_X2, [6, 3], True),
                                 inp(C_Y, [6])],
     lambda i: F.cosine_embedding_loss(*i, margin=0.25, reduction="none"), a=0.25)
case("cosine_embedding one pair", "COS", [inp(C_X1[9:13], [4], True),
                                          inp(C_X2[9:13], [4], True), inp([-1.0], [])],
     lambda i: F.cosine_embedding_loss(*i, margin=-0.5, reduction="none"), a=-0.5)
T_A, T_P, T_N = rnd(24, -1, 1), rnd(24, -1, 1), rnd(24, -1, 1)
for p, swap in ((2.0, True), (1.0, False), (3.0, False)):
    case("triplet [6,4] p %g swap %d" % (p, swap), "TRIP",
         [inp(T_A, [6, 4], True), inp(T_P, [6, 4], True), inp(T_N, [6, 4], True)],
         lambda i, p=p, s=swap: F.triplet_margin_loss(*i, margin=1.0, p=p, eps=1e-6, swap=s,
                                                     reduction="none"),
         a=1.0, p=p, eps=1e-6, f1=swap)
case("triplet [2,3,4]", "TRIP",
     [inp(T_A, [2, 3, 4], True), inp(T_P, [2, 3, 4], True), inp(T_N, [2, 3, 4], True)],
     lambda i: F.triplet_margin_loss(*i, margin=1.0, reduction="none"), a=1.0, p=2.0, eps=1e-6)
case("triplet 1-D", "TRIP",
     [inp(T_A[:5], [5], True), inp(T_P[:5], [5], True), inp(T_N[:5], [5], True)],
     lambda i: F.triplet_margin_loss(*i, margin=2.0, reduction="none"), a=2.0, p=2.0, eps=1e-6)
ML_T = [1.0, 0.0, 1.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.25]
W3 = [0.5, 2.0, 1.25]
case("multilabel_soft_margin weight", "MLSM",
     [inp(X, [4, 3], True), inp(ML_T, [4, 3], True), inp(W3, [3], True)],
     lambda i: F.multilabel_soft_margin_loss(i[0], i[1], weight=i[2], reduction="none"))
case("multilabel_soft_margin 1-D", "MLSM", [inp(X[:3], [3], True), inp(ML_T[:3], [3], True)],
     lambda i: F.multilabel_soft_margin_loss(i[0], i[1], reduction="none"))
MM_X = [0.5, 1.5, -0.5, 1.0, 0.25, 2.0, -1.0, 0.0, 0.5, 0.75, 1.0, -0.25]
MM_Y = [0.0, 2.0, 1.0, 0.0]
for p, m, w in ((1, 1.0, W3), (2, 0.5, None)):
    case("multi_margin p %d%s" % (p, " weight" if w else ""), "MM",
         [inp(MM_X, [4, 3], True), inp(MM_Y, [4], labels=True),
          inp(w, [3]) if w else NONE],
         lambda i, p=p, m=m: F.multi_margin_loss(i[0], i[1], p=p, margin=m, weight=i[2],
                                                 reduction="none"), a=m, p=p)
for lshape in ([], [1]):
    case("multi_margin one sample label %s" % lshape, "MM",
         [inp(X[:3], [3], True), inp([2.0], lshape, labels=True), NONE],
         lambda i: F.multi_margin_loss(i[0], i[1], margin=1.0, reduction="none"), a=1.0, p=1)

# ---- binary cross-entropy
B_P = [0.0, 1.0, 0.5] + rnd(9, 0.05, 0.95)
B_T = [0.0, 1.0, 0.25] + rnd(9, 0, 1)
case("bce", "BCE", [inp(B_P, [3, 4], True), inp(B_T, [3, 4], True)],
     lambda i: F.binary_cross_entropy(i[0], i[1], reduction="none"))
case("bce weight [4]", "BCE_EXT",
     [inp(B_P, [3, 4], True), inp(B_T, [3, 4], True), inp([0.5, 2.0, 1.0, 0.0], [4])],
     lambda i: F.binary_cross_entropy(i[0], i[1], weight=i[2], reduction="none"))
case("bce_with_logits", "BCEL", [inp(X, [3, 4], True), inp(B_T, [3, 4], True)],
     lambda i: F.binary_cross_entropy_with_logits(i[0], i[1], reduction="none"))
case("bce_with_logits weight pos_weight", "BCEL_EXT",
     [inp(X, [3, 4], True), inp(B_T, [3, 4], True), inp([0.5, 2.0, 1.5], [3, 1]),
      inp([1.0, 3.0, 0.5, 2.0], [4])],
     lambda i: F.binary_cross_entropy_with_logits(i[0], i[1], weight=i[2], pos_weight=i[3],
                                                  reduction="none"))

# ---- class losses
Z = rnd(20, -3, 3)                       # [5,4]
Y = [0.0, 3.0, 1.0, 1.0, 2.0]
PR = torch.softmax(torch.tensor(rnd(20, -2, 2)).view(5, 4), 1).flatten().tolist()
Z3 = rnd(24, -3, 3)                      # [2,4,3] or class_last [2,3,4]
Y3 = [0.0, 3.0, 1.0, 2.0, 1.0, 0.0]      # [2,3]
PR3 = torch.softmax(torch.tensor(rnd(24, -2, 2)).view(2, 4, 3), 1).flatten().tolist()
W4 = [0.5, 2.0, 1.0, 0.25]


def lab(i):
    return i.long()


case("cross_entropy labels", "CE", [inp(Z, [5, 4], True), inp(Y, [5], labels=True)],
     lambda i: F.cross_entropy(i[0], lab(i[1]), reduction="none"))
case("cross_entropy probabilities", "CE", [inp(Z, [5, 4], True), inp(PR, [5, 4], True)],
     lambda i: F.cross_entropy(i[0], i[1], reduction="none"))
case("nll", "NLL", [inp(LP, [3, 4], True), inp(Y[:3], [3], labels=True)],
     lambda i: F.nll_loss(i[0], lab(i[1]), reduction="none"))


def ce_ext(name, ins, weight=False, eps=0.0, ignore=False, ii=0, last=False, probs=False):
    def fn(i):
        w = i[2] if weight else None
        t = i[1] if probs else lab(i[1])
        kw = dict(weight=w, label_smoothing=eps, reduction="none")
        if ignore:
            kw["ignore_index"] = ii
        out = F.cross_entropy(cl(i[0], last), cl(t, last) if probs else t, **kw)
        return out
    case(name, "CE_EXT", ins, fn, a=eps, ignore=ignore, ignore_index=ii, class_last=last)


Y_IGN = [0.0, -100.0, 1.0, 3.0, -100.0]
ce_ext("ce_ext weight", [inp(Z, [5, 4], True), inp(Y, [5], labels=True), inp(W4, [4])],
       weight=True)
ce_ext("ce_ext ignore -100", [inp(Z, [5, 4], True), inp(Y_IGN, [5], labels=True), NONE],
       ignore=True, ii=-100)
ce_ext("ce_ext smoothing 0.2", [inp(Z, [5, 4], True), inp(Y, [5], labels=True), NONE], eps=0.2)
ce_ext("ce_ext weight smoothing ignore 1 [2,4,3]",
       [inp(Z3, [2, 4, 3], True), inp(Y3, [2, 3], labels=True), inp(W4, [4])],
       weight=True, eps=0.3, ignore=True, ii=1)
ce_ext("ce_ext class_last weight ignore 0 [2,3,4]",
       [inp(Z3, [2, 3, 4], True), inp(Y3, [2, 3], labels=True), inp(W4, [4])],
       weight=True, ignore=True, ii=0, last=True)
ce_ext("ce_ext probabilities weight smoothing [2,4,3]",
       [inp(Z3, [2, 4, 3], True), inp(PR3, [2, 4, 3], True), inp(W4, [4], True)],
       weight=True, eps=0.1, probs=True)
ce_ext("ce_ext probabilities class_last [2,3,4]",
       [inp(Z3, [2, 3, 4], True), inp(PR3, [2, 3, 4], True), NONE], last=True, probs=True)
ce_ext("ce_ext probabilities [5,4]", [inp(Z, [5, 4], True), inp(PR, [5, 4], True), NONE],
       probs=True)


def nll_ext(name, ins, weight=False, ignore=False, ii=0, last=False):
    def fn(i):
        kw = dict(weight=i[2] if weight else None, reduction="none")
        if ignore:
            kw["ignore_index"] = ii
        return F.nll_loss(cl(i[0], last), lab(i[1]), **kw)
    case(name, "NLL_EXT", ins, fn, ignore=ignore, ignore_index=ii, class_last=last)


LP3 = torch.log_softmax(torch.tensor(Z3).view(2, 4, 3), 1).flatten().tolist()
LP3L = torch.log_softmax(torch.tensor(Z3).view(2, 3, 4), 2).flatten().tolist()
nll_ext("nll_ext weight ignore 2 [2,4,3]",
        [inp(LP3, [2, 4, 3], True), inp(Y3, [2, 3], labels=True), inp(W4, [4])],
        weight=True, ignore=True, ii=2)
nll_ext("nll_ext class_last [2,3,4]",
        [inp(LP3L, [2, 3, 4], True), inp(Y3, [2, 3], labels=True), NONE], last=True)
nll_ext("nll_ext [3,4]", [inp(LP, [3, 4], True), inp(Y[:3], [3], labels=True), NONE])


def seq(name, ins, ignore=False, ii=0, last=False):
    def fn(i):
        kw = dict(reduction="none")
        if ignore:
            kw["ignore_index"] = ii
        return F.cross_entropy(cl(i[0], last), lab(i[1]), **kw)
    case(name, "SEQ", ins, fn, ignore=ignore, ignore_index=ii, class_last=last)


Y3_IGN = [0.0, -1.0, 1.0, 2.0, -1.0, 0.0]
seq("sequence [2,4,3] ignore -1", [inp(Z3, [2, 4, 3], True), inp(Y3_IGN, [2, 3], labels=True)],
    ignore=True, ii=-1)
seq("sequence class_last [2,3,4] ignore 0",
    [inp(Z3, [2, 3, 4], True), inp(Y3, [2, 3], labels=True)], ignore=True, ii=0, last=True)
seq("sequence class_last [5,4]", [inp(Z, [5, 4], True), inp(Y, [5], labels=True)], last=True)
seq("sequence [5,4]", [inp(Z, [5, 4], True), inp(Y, [5], labels=True)])


def run(c, dt, w_of):
    ins = []
    for v, shape, g, is_lab in c["ins"]:
        if v is None:
            ins.append(None)
            continue
        t = torch.tensor(v, dtype=dt).view(shape)
        ins.append(t.long() if is_lab else t.requires_grad_(g))
    l = c["fn"](ins)
    w = w_of(l.shape)
    gin = [t for t, (v, s, g, il) in zip(ins, c["ins"]) if v is not None and g]
    grads = torch.autograd.grad((l * torch.tensor(w, dtype=dt).view(l.shape)).sum(), gin)
    out = l.detach().flatten().tolist()
    for g in grads:
        out += g.flatten().tolist()
    return list(l.shape), out


def cname(i, suffix):
    return "NONE_%d_%s" % (i, suffix)


print("/* generated by tools/gen_losses_none_fixtures.py (PyTorch %s); do not edit */"
      % torch.__version__)
print("/* clang-format off */")
rows = []
for i, c in enumerate(CASES):
    for j, (v, shape, g, il) in enumerate(c["ins"]):
        if v is not None:
            print(c_double_array(cname(i, "IN%d" % j), v))
    ws = {}

    def w_of(shape):
        key = tuple(shape)
        if key not in ws:
            ws[key] = rnd(max(n_of(shape), 1), -1, 2)[:n_of(shape)]
        return ws[key]
    shape64, v64 = run(c, torch.float64, w_of)
    shape32, v32 = run(c, torch.float32, w_of)
    assert shape64 == shape32
    print(c_double_array(cname(i, "W"), w_of(shape64)))
    print(c_double_array(cname(i, "F64"), v64))
    print(c_double_array(cname(i, "F32"), v32))
    rows.append(shape64)
print("static const none_case NONE_CASES[] = {")
for i, c in enumerate(CASES):
    tens = ", ".join(
        "{%d, {%s}, %s, %s, %s}" % (len(s), ", ".join(str(d) for d in s) or "0",
                                     cname(i, "IN%d" % j) if v is not None else "NULL",
                                     "true" if g else "false", "true" if il else "false")
        for j, (v, s, g, il) in enumerate(c["ins"]))
    shape = rows[i]
    print('    {"%s", %s, %s, %s, %s, %s, %s, %s, %d, %s, %d, {%s}, %d, {%s}, %s, {%s, %s}},'
          % (c["name"], c["kind"], c_double(c["a"]), c_double(c["p"]), c_double(c["eps"]),
             "true" if c["f1"] else "false", "true" if c["f2"] else "false",
             "true" if c["ignore"] else "false", c["ignore_index"],
             "true" if c["class_last"] else "false", len(c["ins"]), tens, len(shape),
             ", ".join(str(d) for d in shape) or "0", cname(i, "W"), cname(i, "F64"),
             cname(i, "F32")))
print("};")
print("/* clang-format on */")
