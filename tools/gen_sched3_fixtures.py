#!/usr/bin/env python3
"""Generates tests/sched3_fixtures.h: PyTorch's learning rates (and
CyclicLR's cycled momentum) for the cyclic, sequential and chained
schedules of nn_schedule_ext2 in tests/test_nn_sched3.c.

The values are committed, so the test suite never needs torch; rerun this
script (it needs torch, tested with 1.13) after changing a case:

    python3 tools/gen_sched3_fixtures.py > tests/sched3_fixtures.h

Every case drives an optimizer with two parameter groups, lr 0.1 and
0.05; each array holds the value group g trains step t with, t = 0, 1,
..., read from param_groups[g] before scheduler.step(). The lambdas
mirror the C callbacks of the test.
"""
import math
import os
import sys
import warnings

import torch
from torch.optim import lr_scheduler as L

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_fixture import emitter  # noqa: E402

warnings.simplefilter("ignore")
torch.set_default_dtype(torch.float64)
out = []
emit = emitter(out)
R0, R1 = 0.1, 0.05


def make_opt(kind):
    p, q = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    groups = [{"params": [p]}, {"params": [q], "lr": R1}]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=R0, momentum=0.9)
    if kind == "rmsprop":
        return torch.optim.RMSprop(groups, lr=R0, momentum=0.5)
    return torch.optim.Adam(groups, lr=R0)


def run(name, opt, sched, n, momentum=False):
    lr = [[], []]
    mom = [[], []]
    for _ in range(n):
        for g in range(2):
            lr[g].append(opt.param_groups[g]["lr"])
            mom[g].append(opt.param_groups[g].get("momentum", float("nan")))
        opt.step()
        sched.step()
    emit(name + "_g0", lr[0])
    emit(name + "_g1", lr[1])
    if momentum:
        if mom[0] != mom[1]:
            raise SystemExit(name + ": the groups' momenta differ")
        emit(name + "_mom", mom[0])


# ---- CyclicLR: group 1's base_lr and max_lr scaled as nn.h describes
def scale_recip(x):  # C: f_recip
    return 1.0 / x


def scale_decay(x):  # C: f_decay
    return 0.97 ** x


CYCLIC = [
    ("cy_tri", "sgd", 0.01, 0.1, dict(step_size_up=4), 26),
    ("cy_tri2", "sgd", 0.02, 0.2, dict(step_size_up=3, step_size_down=5, mode="triangular2"), 35),
    ("cy_exp", "rmsprop", 0.001, 0.05, dict(step_size_up=2, step_size_down=3, mode="exp_range",
                                             gamma=0.9, base_momentum=0.6, max_momentum=0.95), 30),
    ("cy_fn_cycle", "sgd", 0.01, 0.1, dict(step_size_up=3, scale_fn=scale_recip), 25),
    ("cy_fn_iter", "sgd", 0.05, 0.01, dict(step_size_up=5, step_size_down=2, scale_fn=scale_decay,
                                           scale_mode="iterations"), 30),
    ("cy_adam", "adam", 0.003, 0.03, dict(step_size_up=2, cycle_momentum=False), 12),
]
for name, kind, b, m, kw, n in CYCLIC:
    opt = make_opt(kind)
    b1 = b * (R1 / R0)
    m1 = m * (b1 / b)
    s = L.CyclicLR(opt, base_lr=[b, b1], max_lr=[m, m1], **kw)
    run(name, opt, s, n, momentum=kw.get("cycle_momentum", True))

# CyclicLR refuses cycle_momentum on Adam in 1.13
try:
    L.CyclicLR(make_opt("adam"), base_lr=0.01, max_lr=0.1)
    raise SystemExit("torch 1.13 CyclicLR accepted Adam with cycle_momentum")
except ValueError as e:
    assert "optimizer must support momentum" in str(e)


# ---- SequentialLR
def lam_recip(e):  # C: f_lam_recip
    return 1.0 / (e + 1)


def mul_09(e):  # C: f_mul09
    return 0.9


def lam_cycle3(e):  # C: f_cycle3
    return 0.5 ** (e % 3)


SEQUENTIAL = [
    ("seq_lin_cos", lambda o: [L.LinearLR(o, 0.25, 1.0, 4), L.CosineAnnealingLR(o, 6, 0.001)],
     [4], 22),
    ("seq_const_exp_step", lambda o: [L.ConstantLR(o, 0.5, 3), L.ExponentialLR(o, 0.9),
                                      L.StepLR(o, 3, 0.5)], [5, 12], 26),
    ("seq_ms_poly_mul_lam", lambda o: [L.MultiStepLR(o, [0, 2, 2, 5], 0.5),
                                       L.PolynomialLR(o, 4, 2.0),
                                       L.MultiplicativeLR(o, mul_09),
                                       L.LambdaLR(o, lam_recip)], [6, 10, 15], 22),
    ("seq_exp_restarts_ms", lambda o: [L.ExponentialLR(o, 0.8),
                                       L.CosineAnnealingWarmRestarts(o, 3, 2, 0.01),
                                       L.MultiStepLR(o, [2, 4], 0.1)], [3, 12], 20),
    ("seq_one", lambda o: [L.LinearLR(o, 0.5, 0.1, 3)], [], 6),
]
for name, make, ms, n in SEQUENTIAL:
    opt = make_opt("sgd")
    s = L.SequentialLR(opt, make(opt), ms)
    run(name, opt, s, n)

# ---- ChainedScheduler (the children made in list order)
CHAINED = [
    ("ch_const_exp", lambda o: [L.ConstantLR(o, 0.1, 3), L.ExponentialLR(o, 0.9)], 12),
    ("ch_lin_cos_ms", lambda o: [L.LinearLR(o, 0.5, 1.0, 4), L.CosineAnnealingLR(o, 10, 0.001),
                                 L.MultiStepLR(o, [3, 6, 6], 0.5)], 26),
    ("ch_step_poly_mul", lambda o: [L.StepLR(o, 2, 0.7), L.PolynomialLR(o, 6, 1.5),
                                    L.MultiplicativeLR(o, mul_09)], 15),
    ("ch_exp_lam_restarts_const", lambda o: [L.ExponentialLR(o, 0.9), L.LambdaLR(o, lam_cycle3),
                                             L.CosineAnnealingWarmRestarts(o, 4, 1, 0.0),
                                             L.ConstantLR(o, 0.5, 2)], 14),
]
for name, make, n in CHAINED:
    opt = make_opt("sgd")
    s = L.ChainedScheduler(make(opt))
    run(name, opt, s, n)

print("/* Generated by tools/gen_sched3_fixtures.py from PyTorch %s: do not edit. */"
      % torch.__version__)
print("#ifndef SCHED3_FIXTURES_H\n#define SCHED3_FIXTURES_H\n")
print("\n".join(out))
print("\n#endif")
