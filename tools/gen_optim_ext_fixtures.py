#!/usr/bin/env python3
"""Generates tests/optim_ext_fixtures.h: PyTorch's trajectories for
tests/test_nn_optim_ext.c (amsgrad, maximize, Adamax, NAdam, RAdam).

The values are committed, so the test suite never needs torch; rerun this
script (it needs torch, tested with 1.13) after changing a case:

    python3 tools/gen_optim_ext_fixtures.py > tests/optim_ext_fixtures.h

Two parameters (a [2,3] weight and a [3] bias), STEPS steps with fixed
gradients cycling through three hand-written sets, every optimizer with
foreach=False (the single-tensor step nn/kernels/update.c follows), in
float64 (torch's default dtype float64, so NAdam's mu_product is float64
too) and in float32 (default dtype float32, as a float model trains).
After each step: the weight, the bias, then each state tensor of
STATE_KEYS (the weight's, then the bias's; mu_product is one value each).
Each case also lists the keys of its state_dict entry, which the test
compares with our state names.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_fixture import emitter, print_guarded  # noqa: E402
from torch_fixture import optimizer_trajectories  # noqa: E402

out = []
emit = emitter(out)
STEPS = 8
P0_W = [[0.5, -0.3, 0.8], [-1.2, 0.1, 0.4]]
P0_B = [0.2, -0.7, 0.05]
G_W = [
    [[0.1, -0.2, 0.3], [0.05, 0.4, -0.6]],
    [[-0.3, 0.1, 0.2], [0.25, -0.15, 0.05]],
    [[0.2, 0.2, -0.1], [-0.4, 0.3, 0.1]],
]
G_B = [[0.3, -0.1, 0.02], [0.1, 0.2, -0.3], [-0.05, 0.15, 0.4]]

O = torch.optim
# name -> (constructor, the state keys recorded, in our order).
# beta2 0.5 in the amsgrad cases: v then falls at some steps, so that
# max_exp_avg_sq differs from exp_avg_sq.
CASES = {
    "adam_amsgrad": (lambda p: O.Adam(p, lr=0.01, betas=(0.9, 0.5), weight_decay=0.01,
                                      amsgrad=True, foreach=False),
                     ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
    "adamw_amsgrad": (lambda p: O.AdamW(p, lr=0.01, betas=(0.9, 0.5), weight_decay=0.1,
                                        amsgrad=True, foreach=False),
                      ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
    "adam_amsgrad_max": (lambda p: O.Adam(p, lr=0.01, betas=(0.9, 0.5), weight_decay=0.01,
                                          amsgrad=True, maximize=True, foreach=False),
                         ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
    "adam_max": (lambda p: O.Adam(p, lr=0.01, weight_decay=0.01, maximize=True, foreach=False),
                 ["exp_avg", "exp_avg_sq"]),
    "adamw_max": (lambda p: O.AdamW(p, lr=0.01, weight_decay=0.1, maximize=True, foreach=False),
                  ["exp_avg", "exp_avg_sq"]),
    "sgd_max": (lambda p: O.SGD(p, lr=0.1, weight_decay=0.01, maximize=True, foreach=False), []),
    "sgd_momentum_max": (lambda p: O.SGD(p, lr=0.1, momentum=0.9, dampening=0.1,
                                         weight_decay=0.01, maximize=True, foreach=False),
                         ["momentum_buffer"]),
    "sgd_nesterov_max": (lambda p: O.SGD(p, lr=0.1, momentum=0.9, nesterov=True,
                                         weight_decay=0.01, maximize=True, foreach=False),
                         ["momentum_buffer"]),
    "adagrad_max": (lambda p: O.Adagrad(p, lr=0.1, lr_decay=0.01, weight_decay=0.01,
                                        initial_accumulator_value=0.1, maximize=True,
                                        foreach=False),
                    ["sum"]),
    "rmsprop_max": (lambda p: O.RMSprop(p, lr=0.01, alpha=0.9, centered=True, momentum=0.5,
                                        weight_decay=0.01, maximize=True, foreach=False),
                    ["square_avg", "grad_avg", "momentum_buffer"]),
    "adamax": (lambda p: O.Adamax(p, lr=0.01, weight_decay=0.01, foreach=False),
               ["exp_avg", "exp_inf"]),
    "adamax_max": (lambda p: O.Adamax(p, lr=0.01, betas=(0.8, 0.9), eps=1e-3,
                                      weight_decay=0.01, maximize=True, foreach=False),
                   ["exp_avg", "exp_inf"]),
    "nadam": (lambda p: O.NAdam(p, lr=0.01, weight_decay=0.01, foreach=False),
              ["exp_avg", "exp_avg_sq", "mu_product"]),
    "nadam_md": (lambda p: O.NAdam(p, lr=0.01, betas=(0.8, 0.99), weight_decay=0.01,
                                   momentum_decay=0.3, foreach=False),
                 ["exp_avg", "exp_avg_sq", "mu_product"]),
    "radam": (lambda p: O.RAdam(p, lr=0.01, weight_decay=0.01, foreach=False),
              ["exp_avg", "exp_avg_sq"]),
    "radam_b2": (lambda p: O.RAdam(p, lr=0.01, betas=(0.8, 0.9), weight_decay=0.01,
                                   foreach=False),
                 ["exp_avg", "exp_avg_sq"]),
}


def run(make, keys, dtype):
    torch.set_default_dtype(dtype)
    w = torch.tensor(P0_W, requires_grad=True)
    b = torch.tensor(P0_B, requires_grad=True)
    opt = make([w, b])
    traj = []
    for t in range(STEPS):
        w.grad = torch.tensor(G_W[t % 3])
        b.grad = torch.tensor(G_B[t % 3])
        opt.step()
        traj += w.detach().flatten().tolist() + b.detach().flatten().tolist()
        for key in keys:
            for p in (w, b):
                traj += opt.state[p][key].flatten().tolist()
    sd_keys = [k for k, v in opt.state_dict()["state"][0].items() if v is not None]
    return traj, sd_keys


def rho(beta2, t):
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf - 2 * t * beta2**t / (1 - beta2**t)


out.append(f"enum {{ OX_STEPS = {STEPS} }};")
emit("ox_p0_w", sum(P0_W, []))
emit("ox_p0_b", P0_B)
emit("ox_g_w", [v for g in G_W for row in g for v in row])
emit("ox_g_b", sum(G_B, []))
out.append("/* RAdam's r_t at steps 1..%d: beta2 0.999 %s; beta2 0.9 %s (> 5: rectified) */"
           % (STEPS, " ".join(f"{rho(0.999, t):.3g}" for t in range(1, STEPS + 1)),
              " ".join(f"{rho(0.9, t):.3g}" for t in range(1, STEPS + 1))))
optimizer_trajectories(out, emit, "ox", CASES, run)

print("/* optim_ext_fixtures.h: PyTorch %s optimizer trajectories for" % torch.__version__)
print(" * tests/test_nn_optim_ext.c. Generated by tools/gen_optim_ext_fixtures.py;")
print(" * do not edit. */")
print_guarded("OPTIM_EXT_FIXTURES_H", out, ["math.h", "stddef.h"])
