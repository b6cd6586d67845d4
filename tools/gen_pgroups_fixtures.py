#!/usr/bin/env python3
"""Generates tests/pgroups_fixtures.h: PyTorch's trajectories of optimizers
with several parameter groups, for tests/test_nn_pgroups.c.

The values are committed, so the test suite never needs torch; rerun this
script (it needs torch, tested with 1.13) after changing a case:

    python3 tools/gen_pgroups_fixtures.py > tests/pgroups_fixtures.h

Three float64 parameters (w [2,3], b [3], h [3]), STEPS steps with fixed
gradients cycling through three sets, foreach=False (the single-tensor
step nn/kernels/update.c follows). Each case lists its groups: the
parameters (0 w, 1 b, 2 h), the step before which the group is added
(0: at construction) and its settings; optionally a schedule stepped after
each optimizer step. After each step: w, b, h, then every group's lr (0
for a group not added yet).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_fixture import emitter, print_guarded  # noqa: E402

torch.set_default_dtype(torch.float64)
out = []
emit = emitter(out)
STEPS = 6
P0 = [[0.5, -0.3, 0.8, -1.2, 0.1, 0.4], [0.2, -0.7, 0.05], [0.9, -0.4, 0.3]]
SHAPES = [(2, 3), (3,), (3,)]
G = [
    [[0.1, -0.2, 0.3, 0.05, 0.4, -0.6], [0.3, -0.1, 0.02], [-0.2, 0.5, 0.1]],
    [[-0.3, 0.1, 0.2, 0.25, -0.15, 0.05], [0.1, 0.2, -0.3], [0.4, -0.1, -0.25]],
    [[0.2, 0.2, -0.1, -0.4, 0.3, 0.1], [-0.05, 0.15, 0.4], [0.05, 0.3, -0.2]],
]
O = torch.optim
S = torch.optim.lr_scheduler
MAXG = 3

# name -> (class, [(params, added before step, settings)], schedule or None)
CASES = {
    "sgd3": (O.SGD, [([0], 0, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
                     ([1], 0, dict(lr=0.05)),
                     ([2], 0, dict(lr=0.2, momentum=0.8, nesterov=True, weight_decay=0.001))],
             None),
    "sgd_damp": (O.SGD, [([0, 2], 0, dict(lr=0.1, momentum=0.9, dampening=0.3)),
                         ([1], 0, dict(lr=0.3, momentum=0.5, weight_decay=0.1, maximize=True))],
                 None),
    "adam2": (O.Adam, [([0, 2], 0, dict(lr=0.01, weight_decay=0.01)),
                       ([1], 0, dict(lr=0.001, betas=(0.8, 0.5), amsgrad=True))], None),
    "adamw2": (O.AdamW, [([0, 2], 0, dict(lr=0.01, weight_decay=0.1)),
                         ([1], 0, dict(lr=0.01, weight_decay=0.0))], None),
    "rmsprop2": (O.RMSprop, [([0], 0, dict(lr=0.01, alpha=0.9, centered=True, momentum=0.5)),
                             ([1, 2], 0, dict(lr=0.02, weight_decay=0.01))], None),
    # PyTorch 1.13's Adagrad fills every group's sum with the constructor's
    # initial_accumulator_value (a group's own is ignored): ours is each
    # group's, here 0.1 in all three
    "adagrad3": (lambda g, **kw: O.Adagrad(g, initial_accumulator_value=0.1, **kw),
                 [([0], 0, dict(lr=0.1, lr_decay=0.01)),
                  ([1], 0, dict(lr=0.05, weight_decay=0.01)),
                  ([2], 0, dict(lr=0.2, eps=1e-3))], None),
    "adam_late": (O.Adam, [([0, 1], 0, dict(lr=0.01)),
                           ([2], 3, dict(lr=0.02, weight_decay=0.01, betas=(0.5, 0.9)))], None),
    "sgd_late": (O.SGD, [([1], 0, dict(lr=0.1, momentum=0.9)),
                         ([0, 2], 2, dict(lr=0.05, momentum=0.5, weight_decay=0.01))], None),
    "sgd_steplr": (O.SGD, [([0, 1], 0, dict(lr=0.1, momentum=0.9)),
                           ([2], 0, dict(lr=0.01, momentum=0.9))],
                   lambda o: S.StepLR(o, step_size=2, gamma=0.5)),
    # ours: max_lr 0.1 with group rates 0.04 and 0.01 (max_lr scaled by
    # each group's rate / group 0's): torch's list [0.1, 0.025]
    "adam_onecycle": (O.Adam, [([0, 1], 0, dict(lr=0.04)), ([2], 0, dict(lr=0.01))],
                      lambda o: S.OneCycleLR(o, max_lr=[0.1, 0.025], total_steps=STEPS)),
    # each group reduced on its own; min_lr (one number here) stops group 1
    "sgd_plateau": (O.SGD, [([0], 0, dict(lr=0.1, momentum=0.9)),
                            ([1, 2], 0, dict(lr=0.03, weight_decay=0.01))],
                    lambda o: S.ReduceLROnPlateau(o, factor=0.5, patience=0, min_lr=0.01)),
}
# the metric given to ReduceLROnPlateau after each step
METRICS = [1.0, 2.0, 3.0, 0.5, 0.6, 0.4]


def run(cls, groups, sched):
    ps = [torch.tensor(v).reshape(s).requires_grad_() for v, s in zip(P0, SHAPES)]
    first = [g for g in groups if g[1] == 0]
    opt = cls([dict(params=[ps[i] for i in g[0]], **g[2]) for g in first], foreach=False)
    sch = sched(opt) if sched else None
    traj = []
    for t in range(STEPS):
        for g in groups:
            if g[1] == t and t > 0:
                opt.add_param_group(dict(params=[ps[i] for i in g[0]], **g[2]))
        for i, p in enumerate(ps):
            p.grad = torch.tensor(G[t % 3][i]).reshape(SHAPES[i])
        opt.step()
        if isinstance(sch, S.ReduceLROnPlateau):
            sch.step(METRICS[t])
        elif sch:
            sch.step()
        for p in ps:
            traj += p.detach().flatten().tolist()
        lrs = [g["lr"] for g in opt.param_groups]
        traj += lrs + [0.0] * (MAXG - len(lrs))
    return traj


out.append(f"enum {{ PG_STEPS = {STEPS}, PG_MAXG = {MAXG} }};")
emit("pg_p0", sum(P0, []))
emit("pg_g", [v for s in G for p in s for v in p])
emit("pg_metrics", METRICS)
for name, (cls, groups, sched) in CASES.items():
    emit(f"pg_{name}", run(cls, groups, sched))

print("/* pgroups_fixtures.h: PyTorch %s trajectories of optimizers with" % torch.__version__)
print(" * parameter groups for tests/test_nn_pgroups.c. Generated by")
print(" * tools/gen_pgroups_fixtures.py; do not edit. */")
print_guarded("PGROUPS_FIXTURES_H", out)
