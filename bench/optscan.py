#!/usr/bin/env python3
"""optscan.py: bench/optscan's optimizer cases beside PyTorch's, to find cliffs.

Runs build/bench/optscan (one update of every optimizer kind and option on
two parameter sets, the seed MLP's 55,050 values and the wide MLP's
1,863,690: see bench/optscan.c) and the same updates with torch.optim, in
turn, ROUNDS times, each run printing the least of REPS timings per case;
then prints, per case, the least of the rounds for each side and the ratio
ours / torch on each set, and marks "cliff" where a ratio exceeds --cliff
(default 2). PyTorch's side is at its best: each case runs with
foreach=False (the loop per parameter, 1.13's default on the CPU) and
foreach=True, and the faster counts. The clipping cases call
torch.nn.utils.clip_grad_value_ or clip_grad_norm_ before the step, as
the engine's step clips inside it.

  bench/optscan.py [--build DIR] [--rounds 3] [--reps 15] [--filter SUBSTR]
                   [--threads 1] [--dtype f32|f64] [--python EXE] [--cliff 2]

The torch side is this file run by an interpreter with torch (this one or
/usr/bin/python3) with --torch-side. Exit status 0 whatever the ratios: a
measurement, not a test.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import opscan  # noqa: E402  (the scans' driver)


def torch_cases(f64=False):
    """The cases of bench/optscan.c, the same names and settings: (name,
    make(params, foreach) -> optimizer, clip(params) or None). Learning
    rate 1e-3 everywhere (the engine's nn_opt_defaults_ext(kind, 1e-3));
    the rest PyTorch's defaults, which are the engine's."""
    import torch
    from torch.nn.utils import clip_grad_norm_, clip_grad_value_
    O = torch.optim
    lr = 1e-3

    def c(name, cls, clip=None, **kw):
        return (name, lambda ps, fe: cls(ps, lr=lr, foreach=fe, **kw), clip)

    return [
        c("sgd", O.SGD),
        c("sgd_momentum", O.SGD, momentum=0.9),
        c("sgd_nesterov_wd", O.SGD, momentum=0.9, nesterov=True, weight_decay=1e-4),
        c("sgd_dampening_maximize", O.SGD, momentum=0.9, dampening=0.1, maximize=True),
        c("sgd_clip_value", O.SGD, clip=lambda ps: clip_grad_value_(ps, 0.005)),
        c("adagrad", O.Adagrad),
        c("adagrad_decay_wd", O.Adagrad, lr_decay=1e-3, weight_decay=1e-4,
          initial_accumulator_value=0.1),
        c("rmsprop", O.RMSprop),
        c("rmsprop_centered_momentum", O.RMSprop, centered=True, momentum=0.9),
        c("adam", O.Adam),
        c("adam_amsgrad", O.Adam, amsgrad=True),
        c("adam_wd_maximize", O.Adam, weight_decay=1e-4, maximize=True),
        c("adam_clip_norm", O.Adam, clip=lambda ps: clip_grad_norm_(ps, 1.0)),
        c("adamw", O.AdamW),
        c("adamw_amsgrad", O.AdamW, amsgrad=True),
        c("adamax", O.Adamax),
        c("adamax_wd", O.Adamax, weight_decay=1e-4),
        c("nadam", O.NAdam),
        c("nadam_wd", O.NAdam, weight_decay=1e-4),
        c("radam", O.RAdam),
        c("radam_wd", O.RAdam, weight_decay=1e-4),
        c("adadelta", O.Adadelta),
        c("adadelta_wd", O.Adadelta, weight_decay=1e-4),
        c("asgd", O.ASGD),
        c("asgd_averaging", O.ASGD, t0=0),
        c("rprop", O.Rprop),
    ]


def torch_side(reps, filt, threads, dtype="f32", tool="optscan", cases_fn=torch_cases):
    """Prints the torch timings in bench/optscan's format."""
    import time
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    if dtype == "f64":
        torch.set_default_dtype(torch.float64)

    def pset(widths):
        ps = []
        for i in range(3):
            for shape in ((widths[i + 1], widths[i]), (widths[i + 1],)):
                p = (torch.randn(*shape) * 0.05).requires_grad_()
                p.grad = torch.randn(*shape) * 0.01
                ps.append(p)
        return ps

    sets = [pset((784, 64, 64, 10)), pset((784, 1024, 1024, 10))]
    print("# %s (PyTorch %s): %s, %d thread(s), least of %d runs, microseconds"
          % (tool, torch.__version__, "float64" if dtype == "f64" else "float32", threads, reps))
    for name, make, clip in cases_fn(dtype == "f64"):
        if filt and filt not in name:
            continue
        best = []
        for ps in sets:
            t_best = float("inf")
            for foreach in (False, True):
                opt = make(ps, foreach)
                for r in range(-2, reps):
                    t0 = time.perf_counter()
                    if clip:
                        clip(ps)
                    opt.step()
                    t = time.perf_counter() - t0
                    if r >= 0:
                        t_best = min(t_best, t)
            best.append(t_best)
        print("%s/%s fwd_us %.1f bwd_us %.1f" % (tool, name, best[0] * 1e6, best[1] * 1e6),
              flush=True)


if __name__ == "__main__":
    sys.exit(opscan.main("optscan", __file__, __doc__, torch_cases, dtypes=("f32", "f64"),
                         side=torch_side, cols=("seed", "wide")))
