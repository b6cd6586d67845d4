#!/usr/bin/env python3
"""Generates tests/nn_fixtures.h: PyTorch reference values for the nn tests.

The nn tests compare our optimizers, losses, Dense layer, activations,
gradient clipping and learning-rate schedules with PyTorch's, in float64
(and the optimizers also in float32).
The values are committed, so the test suite never needs torch; rerun this
script (it needs torch, tested with 1.13) after changing a fixture:

    python3 tools/gen_nn_fixtures.py > tests/nn_fixtures.h

Inputs are small hand-written arrays, so the fixtures do not depend on any
random number generator.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c_fixture import print_guarded  # noqa: E402
from torch_fixture import scheduled_rates, tensor_emitter, wave64, write_safetensors  # noqa: E402

torch.set_default_dtype(torch.float64)

out = []
emit = tensor_emitter(out)


def emit_int(name, values):
    flat = [int(v) for v in values]
    out.append(f"static const int32_t {name}[{len(flat)}] = {{{', '.join(map(str, flat))}}};")


# ---------------------------------------------------------------- optimizers
# Two parameters (a [2,3] weight and a [3] bias), three steps with fixed
# gradients. For each configuration: the parameters after each step,
# weight then bias, step after step.
P0_W = [[0.5, -0.3, 0.8], [-1.2, 0.1, 0.4]]
P0_B = [0.2, -0.7, 0.05]
G_W = [
    [[0.1, -0.2, 0.3], [0.05, 0.4, -0.6]],
    [[-0.3, 0.1, 0.2], [0.25, -0.15, 0.05]],
    [[0.2, 0.2, -0.1], [-0.4, 0.3, 0.1]],
]
G_B = [[0.3, -0.1, 0.02], [0.1, 0.2, -0.3], [-0.05, 0.15, 0.4]]

emit("opt_p0_w", P0_W)
emit("opt_p0_b", P0_B)
emit("opt_g_w", G_W)
emit("opt_g_b", G_B)

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1,
                                              weight_decay=0.01),
    "sgd_nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True,
                                              weight_decay=0.01),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=0.01, weight_decay=0.01,
                                             initial_accumulator_value=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9),
    "rmsprop_centered": lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, centered=True,
                                                      momentum=0.5, weight_decay=0.01),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
}

for name, make in OPTIMIZERS.items():
    w = torch.tensor(P0_W, requires_grad=True)
    b = torch.tensor(P0_B, requires_grad=True)
    opt = make([w, b])
    traj = []
    for t in range(3):
        w.grad = torch.tensor(G_W[t])
        b.grad = torch.tensor(G_B[t])
        opt.step()
        traj += w.detach().flatten().tolist() + b.detach().flatten().tolist()
    emit(f"opt_{name}", traj)

# f32: the same configurations over F32_STEPS steps (gradients cycling
# through G_W / G_B) in float32, as a float model trains. After each step:
# weight, bias, then each state tensor of ours (in the order of nn/optim.c's
# state_kinds: weight's then bias's), as torch computed them in float32.
# The "skip" runs leave a parameter's grad None at some steps: torch skips
# it, and its step count (Adam's bias correction, SGD's first momentum
# step) does not advance.
F32_STEPS = 6
STATE_KEYS = {  # ours, in order -> torch's state key
    "sgd": [], "sgd_momentum": ["momentum_buffer"], "sgd_nesterov": ["momentum_buffer"],
    "adagrad": ["sum"], "rmsprop": ["square_avg"],
    "rmsprop_centered": ["square_avg", "grad_avg", "momentum_buffer"],
    "adam": ["exp_avg", "exp_avg_sq"], "adamw": ["exp_avg", "exp_avg_sq"],
}
# (name, optimizer, {step index: parameter left without grad (0 w, 1 b)})
F32_RUNS = [(n, n, {}) for n in OPTIMIZERS] + [
    ("adam_skip", "adam", {0: 1, 3: 1, 4: 0}),
    ("adagrad_skip", "adagrad", {1: 1}),
    ("sgd_momentum_skip", "sgd_momentum", {0: 1, 2: 0}),
]


def f32_run(opt_name, skip):
    w = torch.tensor(P0_W, dtype=torch.float32, requires_grad=True)
    b = torch.tensor(P0_B, dtype=torch.float32, requires_grad=True)
    opt = OPTIMIZERS[opt_name]([w, b])
    traj = []
    for t in range(F32_STEPS):
        w.grad = torch.tensor(G_W[t % 3], dtype=torch.float32)
        b.grad = torch.tensor(G_B[t % 3], dtype=torch.float32)
        if t in skip:
            (w, b)[skip[t]].grad = None
        opt.step()
        traj += w.detach().flatten().tolist() + b.detach().flatten().tolist()
        for key in STATE_KEYS[opt_name]:
            for p in (w, b):
                st = opt.state[p].get(key) if p in opt.state else None
                traj += st.flatten().tolist() if st is not None else [0.0] * p.numel()
    return traj


emit_int("opt_f32_steps", [F32_STEPS])
for run, opt_name, skip in F32_RUNS:
    emit(f"opt_f32_{run}", f32_run(opt_name, skip))

# ------------------------------------------------------------- clipping
gw = torch.tensor(G_W[0]) * 10
gb = torch.tensor(G_B[0]) * 10
w = torch.zeros(2, 3, requires_grad=True)
b = torch.zeros(3, requires_grad=True)
w.grad, b.grad = gw.clone(), gb.clone()
norm = torch.nn.utils.clip_grad_norm_([w, b], max_norm=1.5)
emit("clip_norm_total", [norm.item()])
emit("clip_norm_grads", w.grad.flatten().tolist() + b.grad.flatten().tolist())

# ---------------------------------------------------------------- losses
# pred / target of shape [3,4]; for the class losses 4 classes, 3 samples.
PRED = [[0.2, 0.7, 0.1, 0.9], [0.5, 0.3, 0.8, 0.6], [0.05, 0.95, 0.4, 0.35]]
TARG = [[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0], [0.3, 0.6, 0.1, 0.0]]
LOGITS = [[1.5, -0.3, 0.2, 2.1], [-1.0, 0.4, 3.0, 0.0], [0.3, 0.3, -2.0, 1.1]]
LABELS = [3, 2, 0]
PROBS = [[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 1.0, 0.0], [0.25, 0.25, 0.25, 0.25]]
emit("loss_pred", PRED)
emit("loss_target", TARG)
emit("loss_logits", LOGITS)
emit_int("loss_labels", LABELS)
emit("loss_probs", PROBS)

F = torch.nn.functional


def loss_case(name, fn, x):
    for red in ("mean", "sum"):
        xt = torch.tensor(x, requires_grad=True)
        v = fn(xt, red)
        v.backward()
        emit(f"loss_{name}_{red}", [v.item()] + xt.grad.flatten().tolist())


tt = torch.tensor(TARG)
lab = torch.tensor(LABELS)
loss_case("mse", lambda x, r: F.mse_loss(x, tt, reduction=r), PRED)
loss_case("bce", lambda x, r: F.binary_cross_entropy(x, tt, reduction=r), PRED)
loss_case("bce_logits", lambda x, r: F.binary_cross_entropy_with_logits(x, tt, reduction=r),
          LOGITS)
loss_case("ce_labels", lambda x, r: F.cross_entropy(x, lab, reduction=r), LOGITS)
loss_case("ce_probs", lambda x, r: F.cross_entropy(x, torch.tensor(PROBS), reduction=r), LOGITS)
loss_case("nll", lambda x, r: F.nll_loss(x, lab, reduction=r),
          F.log_softmax(torch.tensor(LOGITS), dim=1).tolist())

# ----------------------------------------------------------------- Dense
# y = x W^T + b on x [4,3], W [2,3], b [2]; L = sum(y * R).
DX = [[0.1, -0.2, 0.3], [1.0, 0.5, -0.5], [-0.7, 0.2, 0.0], [0.3, 0.3, 0.3]]
DW = [[0.4, -0.1, 0.25], [-0.3, 0.6, 0.1]]
DB = [0.05, -0.2]
DR = [[1.0, -1.0], [0.5, 2.0], [-0.3, 0.7], [0.0, 1.5]]
emit("dense_x", DX)
emit("dense_w", DW)
emit("dense_b", DB)
emit("dense_r", DR)
x = torch.tensor(DX, requires_grad=True)
lin = torch.nn.Linear(3, 2)
with torch.no_grad():
    lin.weight.copy_(torch.tensor(DW))
    lin.bias.copy_(torch.tensor(DB))
y = lin(x)
(y * torch.tensor(DR)).sum().backward()
emit("dense_y", y.detach())
emit("dense_dx", x.grad)
emit("dense_dw", lin.weight.grad)
emit("dense_db", lin.bias.grad)

# ------------------------------------------------------------ activations
AX = [[-2.0, -0.5, 0.0, 0.7, 3.0], [1.0, -1.5, 2.5, -0.1, 0.2]]
emit("act_x", AX)
xa = torch.tensor(AX)
emit("act_sigmoid", torch.sigmoid(xa))
emit("act_tanh", torch.tanh(xa))
emit("act_relu", torch.relu(xa))
emit("act_leaky", F.leaky_relu(xa, 0.2))
emit("act_gelu", F.gelu(xa))
emit("act_softplus", F.softplus(xa))
emit("act_softmax", F.softmax(xa, dim=-1))
emit("act_log_softmax", F.log_softmax(xa, dim=-1))

# -------------------------------------------------------------- schedules
# lr at epochs 0..7 from lr0 = 0.1.


def lrs(make):
    p = torch.zeros(1, requires_grad=True)
    return scheduled_rates(torch.optim.SGD([p], lr=0.1), make, 8)


emit("sched_step", lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)))
emit("sched_exp", lrs(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9)))
emit("sched_cos", lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7,
                                                                           eta_min=0.001)))

# -------------------------------------------------------------- BatchNorm
# A Sequential mixing BatchNorm2d, Flatten, Linear, BatchNorm1d and ReLU:
#   0 BatchNorm2d(2)  1 Flatten  2 Linear(18, 5)  3 BatchNorm1d(5)
#   4 ReLU            5 Linear(5, 3)
# on x [N, 2, 3, 3]. Initial values come from formulas (no generator).
# Trained with SGD (lr 0.1, momentum 0.9, weight decay 0.01) on
# cross-entropy for BN_STEPS steps of batches of BN_N rows of bn_x, in
# order. Emitted for float64 and float32 runs: per step the train-mode
# logits and loss; after training the running statistics and
# num_batches_tracked of both BatchNorms, every parameter, and the
# eval-mode logits and mean loss on bn_xe.
BN_N, BN_STEPS = 4, 3
BN_PARAMS = ["0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias", "5.weight",
             "5.bias"]
BN_BUFFERS = ["0.running_mean", "0.running_var", "3.running_mean", "3.running_var"]


BN_X = wave64((BN_N * BN_STEPS, 2, 3, 3), 0.71, 0.3, 1.5) + 0.4
BN_Y = [(3 * i + 1) % 3 if i % 4 else i % 3 for i in range(BN_N * BN_STEPS)]
BN_XE = wave64((5, 2, 3, 3), 1.13, -0.2, 2.0) - 0.3
BN_YE = [2, 0, 1, 1, 0]


def bn_model(dtype):
    torch.manual_seed(0)  # the values are all overwritten below
    m = torch.nn.Sequential(torch.nn.BatchNorm2d(2), torch.nn.Flatten(), torch.nn.Linear(18, 5),
                            torch.nn.BatchNorm1d(5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    sd = m.state_dict()
    with torch.no_grad():
        for k, name in enumerate(BN_PARAMS):
            t = sd[name]
            if name in ("0.weight", "3.weight"):
                v = 1 + wave64(t.shape, 0.9, k, 0.2)
            else:
                v = wave64(t.shape, 0.53 + 0.1 * k, 0.7 * k, 0.4)
            t.copy_(v)
    return m.to(dtype)


def bn_init():
    m = bn_model(torch.float64)
    return [v for name in BN_PARAMS for v in m.state_dict()[name].flatten().tolist()]


def bn_run(dtype):
    m = bn_model(dtype)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    y = torch.tensor(BN_Y)
    traj = []
    m.train()
    for t in range(BN_STEPS):
        xb = BN_X[t * BN_N:(t + 1) * BN_N].to(dtype)
        opt.zero_grad()
        logits = m(xb)
        loss = F.cross_entropy(logits, y[t * BN_N:(t + 1) * BN_N])
        loss.backward()
        opt.step()
        traj += logits.detach().flatten().tolist() + [loss.item()]
    sd = m.state_dict()
    bufs = [v for name in BN_BUFFERS for v in sd[name].flatten().tolist()]
    bufs += [float(sd["0.num_batches_tracked"]), float(sd["3.num_batches_tracked"])]
    params = [v for name in BN_PARAMS for v in sd[name].flatten().tolist()]
    m.eval()
    with torch.no_grad():
        le = m(BN_XE.to(dtype))
        loss_e = F.cross_entropy(le, torch.tensor(BN_YE))
    return m, traj, bufs, params, le.flatten().tolist() + [loss_e.item()]


emit("bn_x", BN_X)
emit_int("bn_y", BN_Y)
emit("bn_xe", BN_XE)
emit_int("bn_ye", BN_YE)
emit("bn_init", bn_init())
for tag, dt in (("f64", torch.float64), ("f32", torch.float32)):
    m, traj, bufs, params, ev = bn_run(dt)
    emit(f"bn_{tag}_train", traj)
    emit(f"bn_{tag}_buffers", bufs)
    emit(f"bn_{tag}_params", params)
    emit(f"bn_{tag}_eval", ev)
    if dt == torch.float32:
        BN_TRAINED_F32 = m

# The trained float32 model's state dict as a safetensors file (written as
# tools/gen_safetensors_fixture.py writes one: Debian has no safetensors
# package), num_batches_tracked as I64, for the checkpoint round trip;
# bn_f32_eval holds its eval-mode logits.
write_safetensors("torch_bn.safetensors", BN_TRAINED_F32.state_dict())

# BatchNorm1d on [N, C, L] with momentum=None (the cumulative average) and
# affine weights: train-mode outputs of two batches, the running statistics
# after them, then the eval-mode output on the first batch; and a
# BatchNorm1d(3, affine=False, track_running_stats=False) in eval mode
# (batch statistics).
BC_X1 = wave64((4, 3, 5), 0.61, 0.2, 1.2) + 0.5
BC_X2 = wave64((4, 3, 5), 0.83, 1.1, 0.9) - 0.2
emit("bc_x1", BC_X1)
emit("bc_x2", BC_X2)
bc = torch.nn.BatchNorm1d(3, momentum=None, eps=1e-3)
with torch.no_grad():
    bc.weight.copy_(torch.tensor([1.5, 0.5, -1.0]))
    bc.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
bc.train()
o1, o2 = bc(BC_X1), bc(BC_X2)
emit("bc_train", torch.cat([o1.flatten(), o2.flatten()]).detach())
emit("bc_running", torch.cat([bc.running_mean, bc.running_var,
                              bc.num_batches_tracked.to(torch.float64).reshape(1)]))
bc.eval()
emit("bc_eval", bc(BC_X1).detach())
bn_free = torch.nn.BatchNorm1d(3, affine=False, track_running_stats=False).eval()
emit("bc_nostats_eval", bn_free(BC_X1))

# --------------------------------------------------------------- CNN
# A small network with the layers of examples/mnist_cnn (conv, relu, conv,
# relu, max-pool, dropout, flatten, linear, relu, dropout, linear) on
# [N, 1, 10, 10] inputs: eval-mode logits of the initial model (dropout
# is the identity there), three SGD steps in training mode with dropout
# p = 0 (PyTorch's dropout masks come from its own generator) giving the
# logits and loss of each step and the trained parameters, and the trained
# float32 model's state dict as tests/fixtures/torch_cnn.safetensors with
# its eval-mode logits.
CNN_N, CNN_STEPS = 4, 3
CNN_PARAMS = ["0.weight", "0.bias", "2.weight", "2.bias", "7.weight", "7.bias", "10.weight",
              "10.bias"]
CNN_X = wave64((CNN_N * CNN_STEPS, 1, 10, 10), 0.37, 0.1, 0.8) + 0.2
CNN_Y = [(5 * i + 2) % 3 for i in range(CNN_N * CNN_STEPS)]
CNN_XE = wave64((3, 1, 10, 10), 0.91, -0.4, 1.0)


def cnn_model(dtype, p):
    torch.manual_seed(0)  # the values are all overwritten below
    m = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Dropout(p), torch.nn.Flatten(), torch.nn.Linear(36, 8),
        torch.nn.ReLU(), torch.nn.Dropout(p), torch.nn.Linear(8, 3))
    sd = m.state_dict()
    with torch.no_grad():
        for k, name in enumerate(CNN_PARAMS):
            t = sd[name]
            t.copy_(wave64(t.shape, 0.47 + 0.13 * k, 0.5 * k, 0.6 / (1 + t[0].numel() ** 0.5)))
    return m.to(dtype)


emit("cnn_x", CNN_X)
emit_int("cnn_y", CNN_Y)
emit("cnn_xe", CNN_XE)
emit("cnn_init", [v for n in CNN_PARAMS for v in cnn_model(torch.float64, 0).state_dict()[n]
                  .flatten().tolist()])
for tag, dt in (("f64", torch.float64), ("f32", torch.float32)):
    m = cnn_model(dt, 0.0)
    m.eval()
    with torch.no_grad():
        emit(f"cnn_{tag}_eval0", m(CNN_XE.to(dt)))
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    traj = []
    m.train()
    for t in range(CNN_STEPS):
        xb = CNN_X[t * CNN_N:(t + 1) * CNN_N].to(dt)
        opt.zero_grad()
        logits = m(xb)
        loss = F.cross_entropy(logits, torch.tensor(CNN_Y[t * CNN_N:(t + 1) * CNN_N]))
        loss.backward()
        opt.step()
        traj += logits.detach().flatten().tolist() + [loss.item()]
    emit(f"cnn_{tag}_train", traj)
    emit(f"cnn_{tag}_params", [v for n in CNN_PARAMS for v in m.state_dict()[n].flatten().tolist()])
    if dt == torch.float32:
        trained = cnn_model(dt, 0.2)
        trained.load_state_dict(m.state_dict())
        trained.eval()
        with torch.no_grad():
            emit("cnn_f32_trained_eval", trained(CNN_XE.to(dt)))
        write_safetensors("torch_cnn.safetensors", trained.state_dict())

print("/* nn_fixtures.h: PyTorch %s reference values for the nn tests." % torch.__version__)
print(" * Generated by tools/gen_nn_fixtures.py; do not edit. */")
print_guarded("NN_FIXTURES_H", out, ["stdint.h"])
