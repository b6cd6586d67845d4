#!/usr/bin/env python3
"""Generates tests/lbfgs_fixtures.h: PyTorch's torch.optim.LBFGS
trajectories for tests/test_nn_lbfgs.c.

The values are committed, so the test suite never needs torch; rerun this
script (it needs torch, tested with 1.13) after changing a case:

    python3 tools/gen_lbfgs_fixtures.py > tests/lbfgs_fixtures.h

Two objectives, each written so that its gradient is computed with the
same roundings by PyTorch's autograd and by the engine's ops:
  rosen  Rosenbrock in N_ROSEN dimensions, sum(100 (x[1:] - x[:-1]^2)^2 +
         (1 - x[:-1])^2), from ROSEN_X0;
  mlp    Linear(2, 3), ReLU, Linear(3, 1), mean squared error over 8 rows
         (a full batch), from fixed weights.
Each case runs STEPS optimizer steps; after each: the step's returned
loss, state n_iter and func_evals, then the parameters (flattened in
parameters() order). Both in float64 and float32 (the default dtype set to
match). The vectors have fewer than 16 elements, where BLAS's dot sums in
element order as the engine does.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_fixture import emitter, print_guarded  # noqa: E402

out = []
emit = emitter(out)
STEPS = 4
N_ROSEN = 4
ROSEN_X0 = [-1.2, 1.0, -0.5, 0.8]
MLP_X = [[0.5, -1.0], [1.5, 0.3], [-0.7, 0.8], [0.2, 0.1],
         [-1.3, -0.4], [0.9, 1.2], [-0.2, -1.5], [1.1, -0.6]]
MLP_Y = [0.3, 1.2, -0.4, 0.1, -0.9, 1.5, -1.1, 0.6]
MLP_W1 = [[0.4, -0.6], [0.7, 0.2], [-0.3, 0.5]]
MLP_B1 = [0.1, -0.2, 0.05]
MLP_W2 = [[0.6, -0.4, 0.8]]
MLP_B2 = [0.02]

# name -> (objective, LBFGS keyword arguments)
CASES = {
    "rosen_none": ("rosen", dict(lr=0.1, max_iter=10, history_size=3)),
    "rosen_wolfe": ("rosen", dict(max_iter=10, history_size=3, line_search_fn="strong_wolfe")),
    "rosen_wolfe_default": ("rosen", dict(line_search_fn="strong_wolfe")),
    "rosen_eval": ("rosen", dict(lr=0.05, max_iter=7, max_eval=5, history_size=2)),
    "mlp_none": ("mlp", dict(lr=0.2, max_iter=5, history_size=2)),
    "mlp_wolfe": ("mlp", dict(max_iter=5, history_size=4, line_search_fn="strong_wolfe")),
    # run on past convergence: the line search's bracket tolerance stays
    # 1e-9 (LBFGS.step does not pass tolerance_change to _strong_wolfe)
    "rosen_wolfe_tol0": ("rosen", dict(max_iter=100, history_size=3, tolerance_grad=0,
                                       tolerance_change=0, line_search_fn="strong_wolfe")),
}


def make(obj):
    if obj == "rosen":
        x = torch.tensor(ROSEN_X0, requires_grad=True)

        def f():
            a, b = x[:-1], x[1:]
            return (100 * (b - a**2)**2 + (1 - a)**2).sum()
        return [x], f
    w1 = torch.tensor(MLP_W1, requires_grad=True)
    b1 = torch.tensor(MLP_B1, requires_grad=True)
    w2 = torch.tensor(MLP_W2, requires_grad=True)
    b2 = torch.tensor(MLP_B2, requires_grad=True)
    xs = torch.tensor(MLP_X)
    ys = torch.tensor(MLP_Y).reshape(8, 1)

    def f():
        h = torch.relu(torch.nn.functional.linear(xs, w1, b1))
        return torch.nn.functional.mse_loss(torch.nn.functional.linear(h, w2, b2), ys)
    return [w1, b1, w2, b2], f


def run(obj, kw, dtype):
    torch.set_default_dtype(dtype)
    params, f = make(obj)
    opt = torch.optim.LBFGS(params, **kw)

    def closure():
        opt.zero_grad()
        loss = f()
        loss.backward()
        return loss
    traj = []
    for _ in range(STEPS):
        loss = opt.step(closure)
        st = opt.state[params[0]]
        traj += [float(loss), st["n_iter"], st["func_evals"]]
        traj += torch.cat([p.detach().flatten() for p in params]).tolist()
    return traj




# The first step's length, min(1, 1 / sum |g|) lr, reads PyTorch's sum
# kernel, which adds in vector lanes: a linear objective sum(c x) (its
# gradient c exactly, in either engine), one iteration, and vectors of
# every length from 1 to LIN_MAX, from a seed where the lanes' order gives
# another sum than element order for the longer ones.
LIN_MAX = 40


def linear_step(c, x0, dtype):
    x = torch.tensor(x0, dtype=dtype, requires_grad=True)
    ct = torch.tensor(c, dtype=dtype)
    opt = torch.optim.LBFGS([x], max_iter=1)

    def closure():
        opt.zero_grad()
        loss = (x * ct).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return x.detach().tolist()


def in_order(v, dtype):
    s = torch.zeros((), dtype=dtype)
    for e in torch.tensor(v, dtype=dtype).abs():
        s = s + e
    return s.item()


gen = torch.Generator().manual_seed(11)
lin_c = (torch.rand(LIN_MAX, generator=gen, dtype=torch.float64) * 2 - 1).tolist()
lin_x0 = torch.randn(LIN_MAX, generator=gen, dtype=torch.float64).tolist()
for dt in (torch.float64, torch.float32):
    assert any(torch.tensor(lin_c[:n], dtype=dt).abs().sum().item() != in_order(lin_c[:n], dt)
               for n in range(1, LIN_MAX + 1))
lin = {"f64": [], "f32": []}
for n in range(1, LIN_MAX + 1):
    lin["f64"] += linear_step(lin_c[:n], lin_x0[:n], torch.float64)
    lin["f32"] += linear_step(lin_c[:n], lin_x0[:n], torch.float32)

out.append(f"enum {{ LB_STEPS = {STEPS}, LB_N_ROSEN = {N_ROSEN}, LB_LIN_MAX = {LIN_MAX} }};")
emit("lb_lin_c", lin_c)
emit("lb_lin_x0", lin_x0)
emit("lb_lin_f64", lin["f64"])
emit("lb_lin_f32", lin["f32"])
emit("lb_rosen_x0", ROSEN_X0)
emit("lb_mlp_x", sum(MLP_X, []))
emit("lb_mlp_y", MLP_Y)
emit("lb_mlp_p0", sum(MLP_W1, []) + MLP_B1 + sum(MLP_W2, []) + MLP_B2)
names = []
for name, (obj, kw) in CASES.items():
    for dt, sfx in ((torch.float64, "f64"), (torch.float32, "f32")):
        emit(f"lb_{name}_{sfx}", run(obj, kw, dt))
    k = dict(lr=1, max_iter=20, max_eval=0, history_size=100, tolerance_grad=1e-7,
             tolerance_change=1e-9)
    k.update(kw)
    names.append(f'    {{"{name}", {int(obj == "mlp")}, {float(k["lr"])!r}, {k["max_iter"]}, '
                 f'{k.get("max_eval") or 0}, {k["history_size"]}, '
                 f'{int(k.get("line_search_fn") == "strong_wolfe")}, '
                 f'{float(k["tolerance_grad"])!r}, {float(k["tolerance_change"])!r}, '
                 f'lb_{name}_f64, lb_{name}_f32}},')
out.append("typedef struct lb_case {\n  const char *name;\n  int mlp;\n  double lr;\n"
           "  int max_iter, max_eval, history_size, wolfe;\n  double tolerance_grad, tolerance_change;\n"
           "  const double *f64, *f32;\n} lb_case;")
out.append("static const lb_case lb_cases[] = {\n" + "\n".join(names) + "\n};")

print("/* lbfgs_fixtures.h: PyTorch %s torch.optim.LBFGS trajectories for" % torch.__version__)
print(" * tests/test_nn_lbfgs.c. Generated by tools/gen_lbfgs_fixtures.py;")
print(" * do not edit. */")
print_guarded("LBFGS_FIXTURES_H", out, ["math.h"])
