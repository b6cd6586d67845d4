"""torch_fixture.py: what the gen_*_fixtures scripts share on the torch side:
deterministic float64 inputs (most of them values that float32 holds
exactly, so the float32 tests read the same numbers) and the writer of a
tensor as a C array of doubles (tools/c_fixture.py writes the text), and of
tensors as a safetensors file."""
import math
import os

import torch

from c_fixture import c_double_array, c_ident
from gen_safetensors_fixture import build

D = torch.float64
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def f32(t):
    """t rounded to float32, held in float64."""
    return t.float().to(D)


def uniform(*shape, lo=-1.0, hi=1.0):
    """Draws of U(lo, hi) from torch's global generator, in float64."""
    return torch.rand(*shape, dtype=D) * (hi - lo) + lo


def rnd(*shape, lo=-1.0, hi=1.0):
    """uniform(*shape, lo=lo, hi=hi) rounded to float32 (held in float64)."""
    return f32(uniform(*shape, lo=lo, hi=hi))


def wave64(shape, a, b, scale):
    """Deterministic float64 values scale sin(a i + b) (1 + (i mod 3) / 4)
    for the flat index i, in the given shape (not rounded to float32)."""
    n = math.prod(shape)
    i = torch.arange(n, dtype=D)
    return (scale * torch.sin(a * i + b) * (1 + 0.25 * (i % 3))).reshape(shape)


def wave(shape, a, b, scale, shift=0.0):
    """wave64(shape, a, b, scale) + shift, rounded to float32 (held in
    float64): deterministic values that float32 holds exactly."""
    return f32(wave64(shape, a, b, scale) + shift)


def ties(shape):
    """Small integers (0, 1, 2): many pooling windows hold their maximum
    more than once."""
    n = math.prod(shape)
    return ((torch.arange(n, dtype=D) * 7) % 3).reshape(shape)


def nans(shape):
    """wave(shape, 0.9, 0.1, 2.0) with NaN at every 7th element and
    alternately +inf and -inf at every 11th from the 4th."""
    v = wave(shape, 0.9, 0.1, 2.0).flatten()
    for i in range(0, v.numel(), 7):
        v[i] = math.nan
    for i in range(3, v.numel(), 11):
        v[i] = math.inf if i % 2 else -math.inf
    return v.reshape(shape)


def neg_inf(shape):
    """wave(shape, 0.5, 0.2, 1.0) whose first half is -inf (whole pooling
    windows of -inf) and every 5th element of the second half too."""
    v = wave(shape, 0.5, 0.2, 1.0).flatten()
    v[: v.numel() // 2] = -math.inf
    for i in range(v.numel() // 2, v.numel(), 5):
        v[i] = -math.inf
    return v.reshape(shape)


def tensor_emitter(out):
    """emit(name, values): appends to the list out the C array `name` of
    the values (a tensor, or what torch.as_tensor takes, in torch's default
    dtype), flattened; returns name."""
    def emit(name, values):
        out.append(c_double_array(name, torch.as_tensor(values).flatten().tolist()))
        return name
    return emit


def moved_state(sd):
    """The state dict sd with its biases and norm weights moved away from
    PyTorch's 0 and 1 (so that their use is tested) and the other weights
    drawn anew within PyTorch's range (the copies in a stack start equal),
    rounded to float32 (from torch's global generator)."""
    r = {}
    for n, t in sd.items():
        if "norm" in n and n.endswith("weight"):
            r[n] = rnd(*t.shape, lo=0.7, hi=1.3)
        elif n.endswith("bias"):
            r[n] = rnd(*t.shape, lo=-0.3, hi=0.3)
        else:
            r[n] = f32(rnd(*t.shape) * t.abs().max())
    return r


def write_safetensors(name, tensors):
    """Writes the dict of tensors (a state dict, say) as the safetensors
    file tests/fixtures/<name>, metadata {"format": "pt"}; returns its
    path."""
    path = os.path.join(FIXTURES, name)
    with open(path, "wb") as f:
        f.write(build({k: v.contiguous() for k, v in tensors.items()}, {"format": "pt"}))
    return path


def padded_conv_case(m, k, shape, via_batch, emit, prefix):
    """Case k of the padding-mode tests on the float64 convolution m: its
    weight (and bias, if any) set from wave(), x = wave(shape, ...) run
    through m (as a batch of one when via_batch: PyTorch 1.13's F.pad
    refuses circular padding of an unbatched input), a cotangent gy and the
    gradients of sum(y * gy); emits <prefix>_{x,gy,w,y,dx,dw} and, with a
    bias, <prefix>_{b,db}."""
    with torch.no_grad():
        m.weight.copy_(wave(m.weight.shape, 0.9 + 0.1 * k, k, 0.5))
        if m.bias is not None:
            m.bias.copy_(wave(m.bias.shape, 0.6, k, 0.5))
    x = wave(shape, 0.77 + 0.1 * k, 0.3 * k, 1.5, 0.25).requires_grad_(True)
    y = m(x.unsqueeze(0)).squeeze(0) if via_batch else m(x)
    gy = wave(y.shape, 1.31, 0.5 + k, 1.0)
    (y * gy).sum().backward()
    arrays = [("x", x), ("gy", gy), ("w", m.weight), ("y", y), ("dx", x.grad),
              ("dw", m.weight.grad)]
    if m.bias is not None:
        arrays += [("b", m.bias), ("db", m.bias.grad)]
    for s, v in arrays:
        emit(f"{prefix}_{s}", v.detach())


def trained_checkpoint(ck, shape, emit, name):
    """The checkpoint case of the norm layers' tests: the float32 model ck
    takes one SGD step (lr 0.5) in training mode on ck_x = wave(shape,
    0.71, 0.3, 1.5, 0.4) with the cotangent wave(shape, 1.3, 0.1, 1.0) (so
    its running statistics move), then runs ck_x in evaluation mode, ck_y;
    emits ck_x and ck_y and writes ck's state dict as tests/fixtures/<name>."""
    xck = wave(shape, 0.71, 0.3, 1.5, 0.4).float()
    opt = torch.optim.SGD(ck.parameters(), lr=0.5)
    ck.train()
    (ck(xck) * wave(shape, 1.3, 0.1, 1.0).float()).sum().backward()
    opt.step()
    ck.eval()
    with torch.no_grad():
        yck = ck(xck)
    emit("ck_x", xck)
    emit("ck_y", yck)
    write_safetensors(name, ck.state_dict())


def scheduled_rates(opt, make, n):
    """The learning rates the optimizer opt trains steps 0 .. n-1 with under
    the scheduler make(opt): param_groups[0]["lr"] read before each
    opt.step() and scheduler.step()."""
    sched = make(opt)
    seq = []
    for _ in range(n):
        seq.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return seq


def layer_grads(layer, x, gy):
    """y = layer(x) on a copy of x, then the gradients of sum(y * gy) (its
    weight's and bias's, those it has, cleared first); returns y, the
    input's gradient and the list of the parameters' gradients."""
    x = x.clone().requires_grad_(True)
    y = layer(x)
    params = [p for p in (getattr(layer, "weight", None), getattr(layer, "bias", None))
              if p is not None]
    for p in params:
        p.grad = None
    (y * gy).sum().backward()
    return y.detach(), x.grad, [p.grad.clone() for p in params]


def tracked_steps(emit, prefix, m, X, GY, nbt, XE, GYE):
    """The affine norm layer m, tracking running statistics: a training step
    (layer_grads) on each X[t] with cotangent GY[t], after which its
    num_batches_tracked must be nbt, then evaluation mode on XE with GYE;
    emits prefix_{x,gy,y,dx,dw,db,rm,rv} (stacked over the steps) and
    prefix_{xe,gye,ye,dxe,dwe,dbe}."""
    ys, dxs, dws, dbs, rms, rvs = [], [], [], [], [], []
    m.train()
    for t in range(len(X)):
        y, dx, (dw, db) = layer_grads(m, X[t], GY[t])
        ys.append(y)
        dxs.append(dx)
        dws.append(dw)
        dbs.append(db)
        rms.append(m.running_mean.clone())
        rvs.append(m.running_var.clone())
    assert int(m.num_batches_tracked) == nbt
    for name, v in (("x", X), ("gy", GY), ("y", ys), ("dx", dxs), ("dw", dws), ("db", dbs),
                    ("rm", rms), ("rv", rvs)):
        emit(f"{prefix}_{name}", torch.stack(v) if isinstance(v, list) else v)
    m.eval()
    y, dx, (dw, db) = layer_grads(m, XE, GYE)
    for name, v in (("xe", XE), ("gye", GYE), ("ye", y), ("dxe", dx), ("dwe", dw), ("dbe", db)):
        emit(f"{prefix}_{name}", v)


def optimizer_trajectories(out, emit, prefix, cases, run):
    """For each case name -> (make, keys) of cases, in float64 then
    float32: traj, sd_keys = run(make, keys, dtype), emitted as
    <prefix>_<name>_f64 / _f32; then the C list <prefix>_<name>_keys of
    the state dict's keys (the last run's), NULL-terminated, appended to
    out."""
    for name, (make, keys) in cases.items():
        for dt, sfx in ((torch.float64, "f64"), (torch.float32, "f32")):
            traj, sd_keys = run(make, keys, dt)
            emit(f"{prefix}_{name}_{sfx}", traj)
        out.append(f"static const char *const {prefix}_{name}_keys[] = {{"
                   + "".join(f'"{k}", ' for k in sd_keys) + "NULL};")


def rnn_case_tensors(name, m, x, lengths, wy, wh, out, hn, h0=None, c0=None, wc=None, cn=None):
    """The tensors of one recurrent-layer case, each under "<name>.": the
    layer m's state dict, "grad.<param>" for its parameters, x and grad.x,
    h0 and c0 with their gradients (those given), lengths as I32 (when
    given), the loss weights wy, wh (and wc), out and h_n (and c_n); all
    contiguous, for a safetensors file."""
    ts = {}
    p = name + "."
    for k, v in m.state_dict().items():
        ts[p + k] = v.detach().clone()
    for k, v in m.named_parameters():
        ts[p + "grad." + k] = v.grad.detach().clone()
    ts[p + "x"] = x.detach().clone()
    ts[p + "grad.x"] = x.grad.detach().clone()
    for s, t in (("h0", h0), ("c0", c0)):
        if t is not None:
            ts[p + s] = t.detach().clone()
            ts[p + "grad." + s] = t.grad.detach().clone()
    if lengths is not None:
        ts[p + "lengths"] = torch.tensor(lengths, dtype=torch.int32)
    ts[p + "wy"] = wy
    ts[p + "wh"] = wh
    if wc is not None:
        ts[p + "wc"] = wc
    ts[p + "out"] = out.detach().clone()
    ts[p + "h_n"] = hn.detach().clone()
    if cn is not None:
        ts[p + "c_n"] = cn.detach().clone()
    return {k: v.contiguous() for k, v in ts.items()}


def two_dtype_case(emit, name, x, fn, gy_a, gy_b):
    """y = fn(x) in float64 and in float32 (x rounded), each with the
    gradient of sum(y * gy) for gy = wave(y.shape, gy_a, gy_b, 1.0);
    emits <name>_{x,gy,y,dx,y32,dx32}; returns the float64 y."""
    x64 = x.clone().requires_grad_(True)
    y = fn(x64)
    gy = wave(y.shape, gy_a, gy_b, 1.0)
    (y * gy).sum().backward()
    x32 = x.float().requires_grad_(True)
    y32 = fn(x32)
    (y32 * gy.float()).sum().backward()
    for s, v in (("x", x), ("gy", gy), ("y", y.detach()), ("dx", x64.grad),
                 ("y32", y32.detach()), ("dx32", x32.grad)):
        emit(f"{name}_{s}", v)
    return y


def encoder_case_arrays(emit, p, mod, src, y, mask, kpm, names):
    """For y = mod(src, mask, key padding mask kpm): a cotangent gy =
    rnd(y.shape) and the gradients of sum(y * gy); emits p_src, p_gy,
    p_out, p_dsrc, p_mask and p_kpm (those given) and p_d_<c_ident(n)> for
    the parameters named in names."""
    assert torch.isfinite(y).all()
    gy = rnd(*y.shape)
    (y * gy).sum().backward()
    grads = dict(mod.named_parameters())
    emit(p + "_src", src.detach())
    emit(p + "_gy", gy)
    emit(p + "_out", y.detach())
    emit(p + "_dsrc", src.grad)
    if mask is not None:
        emit(p + "_mask", mask)
    if kpm is not None:
        emit(p + "_kpm", kpm.to(D))
    for n in names:
        emit(f"{p}_d_{c_ident(n)}", grads[n].grad)
