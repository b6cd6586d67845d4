#!/usr/bin/python3
"""Writes tests/losses_pair_fixtures.h: the PyTorch reference values of
tests/test_nn_losses_pair.c (Gaussian and Poisson NLL, margin ranking,
hinge embedding, soft margin, cosine embedding, triplet margin, multilabel
soft margin and multi-class margin losses).

Usage (from the repository root, with Debian's python3-torch):

    /usr/bin/python3 tools/gen_losses_pair_fixtures.py > tests/losses_pair_fixtures.h

Each case names a loss, its scalar arguments and its input tensors (values,
shape, whether the input requires a gradient; multi_margin's labels are
doubles here, i32 in the test). Every case runs in float64
and in float32 (the float32 inputs are the float64 ones rounded) and gives
{loss, the gradients of the inputs that require one, in order} for
reduction 'mean', then the same for 'sum'. The inputs put the margins'
kinks at exactly 0 (dyadic values), a variance below eps, at eps and at 0,
targets 0, 1 and negative, y values other than +-1, zero vectors and NaN;
random ones come from torch.manual_seed(7). GAUSS_SECOND_F64 / _F32 hold
second derivatives (see the comment above their code). Deterministic: rerunning
prints the same text. The header also holds the table of cases
(PAIR_CASES) that the test walks; its struct is the test's pair_case.
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
torch.manual_seed(7)


def rnd(n, lo, hi):
    return uniform(n, lo=lo, hi=hi).tolist()


# ---- inputs
G_X = rnd(12, -2, 2)
G_T = rnd(12, -2, 2)
# var [4,3]: below eps (1e-8), exactly 0, exactly eps (1e-6), large, the rest random
G_V = [1e-8, 0.0, 1e-6, 0.5, 2.0, 0.25] + rnd(6, 0.1, 2)
G_V4 = [0.5, 1e-9, 0.0, 1.5]          # one per row: [4] or [4,1]
G_VNAN = [NAN, 0.5, 0.0, 1.0]
P_X = [0.5, -1.0, 0.0, 2.0, 0.25, -0.5, 1.5, 1.0, 0.75, -2.0, 3.0, 0.125]
P_XP = [0.5, 1.0, 0.0, 2.0, 0.25, 0.5, 1.5, 1.0, 0.75, 2.0, 3.0, 0.125]   # positive (rates)
P_T = [0.0, 0.5, 1.0, 1.5, 2.0, 3.5, 0.0, 4.0, -0.5, 1.0, 2.5, 7.0]
P_T_POS = [0.25, 0.5, 1.0, 1.5, 2.0, 3.5, 0.125, 4.0, 0.75, 1.0, 2.5, 7.0]
# margin ranking: -y (x1 - x2) + margin hits 0 exactly at several places (margin 0.5 and 0)
MR_X1 = [1.0, 0.5, 2.0, -1.0, 0.25, 3.0, 0.0, 1.5, -0.5, 2.0, 1.0, 0.75]
MR_X2 = [0.5, 1.0, 2.0, -0.5, 0.25, 1.0, 0.5, 0.5, -1.0, 2.5, 1.0, 0.25]
MR_Y = [1.0, -1.0, 1.0, -1.0, 0.0, 1.0, -1.0, 0.5, 1.0, -1.0, 2.0, 1.0]
MR_NAN_X1 = [NAN, 1.0, 0.5, 1.0]
MR_NAN_X2 = [0.0, NAN, 0.5, 1.0]
MR_NAN_Y = [1.0, 1.0, NAN, -1.0]
# hinge: x = margin exactly where y = -1 (margin 1 and 0.5); y other than +-1; NaN
H_X = [1.0, 0.5, -0.5, 2.0, 1.0, 0.25, 0.5, -1.0, 1.5, 0.0, 3.0, -0.25]
H_Y = [-1.0, -1.0, -1.0, 1.0, 1.0, 0.0, 2.0, -1.0, 0.5, -1.0, -1.0, 1.0]
H_NAN_X = [NAN, 1.0, 0.5, NAN]
H_NAN_Y = [1.0, NAN, -1.0, -1.0]
S_X = rnd(12, -3, 3)
S_Y = [1.0, -1.0, 1.0, 1.0, -1.0, -1.0, 0.5, 0.0, 1.0, -1.0, 2.0, -1.0]
# cosine [6,3]: a zero x1 row, a zero x2 row, both zero, parallel rows,
# orthogonal rows (cos 0: the kink for y = -1 at margin 0), random
C_X1 = [0.0, 0.0, 0.0, 1.0, 2.0, -1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 2.0, 1.0, 0.0, 0.0] + rnd(3, -1, 1)
C_X2 = [1.0, -2.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 4.0, 4.0, 0.0, 1.0, 0.0] + rnd(3, -1, 1)
C_Y = [1.0, -1.0, 1.0, -1.0, -1.0, 0.5]
C_Y2 = [-1.0, 1.0, -1.0, 1.0, -1.0, -1.0]
C1_X1, C1_X2 = [1.0, -0.5, 2.0, 0.25], [0.5, 1.0, -1.0, 2.0]
# triplet [4,3]
T_A = rnd(12, -1, 1)
T_P = rnd(12, -1, 1)
T_N = rnd(12, -1, 1)
# eps 0: zero distances (positive == anchor in row 0, negative == positive
# in row 1) and a swap tie, d(a, n) = d(p, n) (row 3: the minimum's halves)
T_A0 = [0.5, -0.5, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 2.0, 0.0, 0.0]
T_P0 = [0.5, -0.5, 1.0, 1.0, 0.0, 0.0, 1.0, 0.5, 1.0, 0.0, 2.0, 0.0]
T_N0 = [1.0, 0.5, 1.0, 1.0, 0.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def f(name, *a):
    return lambda ins, r: getattr(F, name)(*ins, *a, reduction=r)


# name, C kind, margin, p, eps, flag1, flag2, [(values, shape, requires_grad)], torch fn
CASES = []


def case(name, kind, ins, fn, margin=0.0, p=0.0, eps=0.0, f1=False, f2=False):
    CASES.append((name, kind, margin, p, eps, f1, f2, ins, fn))


def gauss(ins, r, full, eps):
    return F.gaussian_nll_loss(ins[0], ins[1], ins[2], full=full, eps=eps, reduction=r)


for full in (False, True):
    for eps in (1e-6, 0.1):
        tag = "%s eps %g" % ("full" if full else "", eps)
        case("gaussian hetero" + tag, "GAUSS",
             [(G_X, [4, 3], True), (G_T, [4, 3], True), (G_V, [4, 3], True)],
             lambda i, r, full=full, eps=eps: gauss(i, r, full, eps), eps=eps, f1=full)
case("gaussian homo [4]", "GAUSS", [(G_X, [4, 3], True), (G_T, [4, 3], True), (G_V4, [4], True)],
     lambda i, r: gauss(i, r, False, 1e-6), eps=1e-6)
case("gaussian homo [4,1]", "GAUSS",
     [(G_X, [4, 3], True), (G_T, [4, 3], True), (G_V4, [4, 1], True)],
     lambda i, r: gauss(i, r, True, 1e-6), eps=1e-6, f1=True)
case("gaussian NaN var", "GAUSS",
     [(G_X[:4], [4], True), (G_T[:4], [4], True), (G_VNAN, [4], True)],
     lambda i, r: gauss(i, r, False, 1e-6), eps=1e-6)
case("gaussian eps 0", "GAUSS",
     [(G_X[:4], [4], True), (G_T[:4], [4], True), ([0.5, 1e-30, 2.0, 1.0], [4], True)],
     lambda i, r: gauss(i, r, False, 0.0), eps=0.0)
for li in (True, False):
    for full in (False, True):
        x = P_X if li else P_XP
        tag = "%s%s" % ("log_input" if li else "rate", " full" if full else "")
        case("poisson " + tag, "POISSON", [(x, [3, 4], True), (P_T, [3, 4], True)],
             lambda i, r, li=li, full=full: F.poisson_nll_loss(i[0], i[1], log_input=li,
                                                               full=full, eps=1e-8, reduction=r),
             eps=1e-8, f1=li, f2=full)
case("poisson positive targets full eps 0.5", "POISSON",
     [(P_XP, [12], True), (P_T_POS, [12], True)],
     lambda i, r: F.poisson_nll_loss(i[0], i[1], log_input=False, full=True, eps=0.5,
                                     reduction=r), eps=0.5, f2=True)
for m in (0.5, 0.0, -0.25):
    case("margin_ranking margin %g" % m, "MR",
         [(MR_X1, [12], True), (MR_X2, [12], True), (MR_Y, [12], True)],
         f("margin_ranking_loss", m), margin=m)
case("margin_ranking NaN", "MR",
     [(MR_NAN_X1, [4], True), (MR_NAN_X2, [4], True), (MR_NAN_Y, [4], True)],
     f("margin_ranking_loss", 0.5), margin=0.5)
for m in (1.0, 0.5, -0.5):
    case("hinge margin %g" % m, "HINGE", [(H_X, [3, 4], True), (H_Y, [3, 4], False)],
         f("hinge_embedding_loss", m), margin=m)
case("hinge NaN", "HINGE", [(H_NAN_X, [4], True), (H_NAN_Y, [4], False)],
     f("hinge_embedding_loss", 1.0), margin=1.0)
case("soft_margin", "SOFT", [(S_X, [3, 4], True), (S_Y, [3, 4], False)], f("soft_margin_loss"))
for m, y in ((0.0, C_Y), (0.25, C_Y), (0.0, C_Y2), (-0.5, C_Y2)):
    case("cosine margin %g" % m, "COS",
         [(C_X1, [6, 3], True), (C_X2, [6, 3], True), (y, [6], False)],
         f("cosine_embedding_loss", m), margin=m)
case("cosine one pair", "COS", [(C1_X1, [4], True), (C1_X2, [4], True), ([-1.0], [], False)],
     f("cosine_embedding_loss", -0.5), margin=-0.5)
for p, swap in ((2.0, False), (2.0, True), (1.0, False), (3.0, True), (1.5, False)):
    case("triplet p %g swap %d" % (p, swap), "TRIP",
         [(T_A, [4, 3], True), (T_P, [4, 3], True), (T_N, [4, 3], True)],
         lambda i, r, p=p, swap=swap: F.triplet_margin_loss(*i, margin=1.0, p=p, eps=1e-6,
                                                           swap=swap, reduction=r),
         margin=1.0, p=p, eps=1e-6, f1=swap)
for p in (2.0, 1.0, 3.0):
    case("triplet zero distances p %g" % p, "TRIP",
         [(T_A0, [4, 3], True), (T_P0, [4, 3], True), (T_N0, [4, 3], True)],
         lambda i, r, p=p: F.triplet_margin_loss(*i, margin=2.0, p=p, eps=0.0, swap=True,
                                                 reduction=r),
         margin=2.0, p=p, eps=0.0, f1=True)
case("triplet 1-D", "TRIP", [(T_A[:3], [3], True), (T_P[:3], [3], True), (T_N[:3], [3], True)],
     lambda i, r: F.triplet_margin_loss(*i, margin=0.5, p=2.0, eps=1e-6, reduction=r),
     margin=0.5, p=2.0, eps=1e-6)

# multilabel soft margin [4,3]; multi margin [4,3] with labels (as doubles,
# i32 in the test): row 0 hits z = 0 at margin 1 (i = 2), row 3 holds NaN
ML_X = [0.0, 1.5, -2.0] + rnd(9, -3, 3)
ML_T = [1.0, 0.0, 1.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.25]
MM_X = [0.5, 1.5, -0.5, 1.0, 0.25, 2.0, -1.0, 0.0, 0.5, 0.75, NAN, -0.25]
MM_Y = [0.0, 2.0, 1.0, 0.0]
MM_X2 = rnd(12, -2, 2)
W3 = [0.5, 2.0, 1.25]
for w in (None, (W3, [3], True), ([0.5, 1.0, 2.0, 0.25], [4, 1], True)):
    ins = [(ML_X, [4, 3], True), (ML_T, [4, 3], True)] + ([w] if w else [])
    case("multilabel weight %s" % (w[1] if w else None), "MLSM", ins,
         lambda i, r: F.multilabel_soft_margin_loss(i[0], i[1], weight=i[2] if len(i) > 2 else None,
                                                    reduction=r))
case("multilabel 1-D", "MLSM", [(ML_X[:3], [3], True), (ML_T[:3], [3], True)],
     f("multilabel_soft_margin_loss"))
for p, m, w in ((1, 1.0, None), (2, 1.0, None), (1, 0.5, W3), (2, 0.25, W3)):
    for xs, nm in ((MM_X, "edge"), (MM_X2, "rand")):
        ins = [(xs, [4, 3], True), (MM_Y, [4], False)] + ([(w, [3], False)] if w else [])
        case("multi_margin %s p %d margin %g%s" % (nm, p, m, " weight" if w else ""), "MM", ins,
             lambda i, r, p=p, m=m: F.multi_margin_loss(i[0], i[1].long(), p=p, margin=m,
                                                        weight=i[2] if len(i) > 2 else None,
                                                        reduction=r), margin=m, p=p)
case("multi_margin one sample", "MM", [(MM_X2[:3], [3], True), ([2.0], [], False)],
     lambda i, r: F.multi_margin_loss(i[0], i[1].long(), margin=1.0, reduction=r),
     margin=1.0, p=1)


def run(c, dt):
    out = []
    for red in ("mean", "sum"):
        ins = []
        for v, shape, g in c[7]:
            t = torch.tensor(v, dtype=dt).view(shape).requires_grad_(g)
            ins.append(t)
        l = c[8](ins, red)
        grads = torch.autograd.grad(l, [t for t in ins if t.requires_grad])
        out.append(l.item())
        for g in grads:
            out += g.flatten().tolist()
    return out


def cname(i, suffix):
    return "PAIR_%d_%s" % (i, suffix)


print("/* generated by tools/gen_losses_pair_fixtures.py (PyTorch %s); do not edit */"
      % torch.__version__)
print("/* clang-format off */")
for i, c in enumerate(CASES):
    for j, (v, shape, g) in enumerate(c[7]):
        print(c_double_array(cname(i, "IN%d" % j), v))
    print(c_double_array(cname(i, "F64"), run(c, torch.float64)))
    print(c_double_array(cname(i, "F32"), run(c, torch.float32)))
# second order through the Gaussian NLL (sum, eps 1e-6, full): with g the
# gradients of input and var (create_graph), the gradients of sum(g) with
# respect to input, target and var; var holds one value below eps
for dname, dt in (("F64", torch.float64), ("F32", torch.float32)):
    x, t, v = (torch.tensor(a, dtype=dt, requires_grad=True)
               for a in (G_X[:4], G_T[:4], [0.5, 1e-8, 2.0, 0.25]))
    l = F.gaussian_nll_loss(x, t, v, full=True, eps=1e-6, reduction="sum")
    gx, gv = torch.autograd.grad(l, (x, v), create_graph=True)
    h = torch.autograd.grad(gx.sum() + gv.sum(), (x, t, v))
    print(c_double_array("GAUSS_SECOND_" + dname,
                         gx.tolist() + gv.tolist() + sum((a.tolist() for a in h), [])))
print("static const pair_case PAIR_CASES[] = {")
for i, c in enumerate(CASES):
    name, kind, margin, p, eps, f1, f2, ins, _ = c
    tens = ", ".join("{%d, {%s}, %s, %s}" % (len(s), ", ".join(str(d) for d in s) or "0",
                                              cname(i, "IN%d" % j), "true" if g else "false")
                     for j, (v, s, g) in enumerate(ins))
    print('    {"%s", %s, %s, %s, %s, %s, %s, %d, {%s}, {%s, %s}},'
          % (name, kind, c_double(margin), c_double(p), c_double(eps), "true" if f1 else "false",
             "true" if f2 else "false", len(ins), tens, cname(i, "F64"), cname(i, "F32")))
print("};")
print("/* clang-format on */")
