#!/usr/bin/python3
"""Write tests/fixtures/ops.txt: PyTorch reference values for every op.

For every differentiable op of autodiff/ops.def (and a few composite
builders such as ad_mean), in float32 and in float64, this script builds
small deterministic inputs, computes the op's output in PyTorch, the
gradient g_k of sum(v * out) with respect to each float input k for a fixed
cotangent v, and the second derivatives: the gradient of sum_k <r_k, g_k>
for fixed cotangents r_k. tests/test_ops_values.c replays every case
through the C API and compares. The C tests never need torch: the fixture
is committed.

Regenerate from the repository root with Debian's python (it has torch):

    /usr/bin/python3 tools/gen_fixtures.py            # tests/fixtures/ops.txt
    /usr/bin/python3 tools/gen_fixtures.py -o FILE    # somewhere else

The output is deterministic: the inputs of a case come from a NumPy
generator seeded with the CRC-32 of the case label, and are rounded to
float32 so both dtypes see the same numbers. Float32 cases are computed by
torch in float32, float64 cases in float64.

File format (line based, whitespace separated, '#' starts a comment line):

    fixture ops 2                 format name and version
    torch <version>               the torch that computed the values
    numpy <version>
    cases <n>                     number of case blocks that follow
    case <label> <op> <dtype>     op: a registered op name or a builder
    attr <key> <values>           the op's attributes (absent: none)
    tensor <role> <dtype> <ndim> d0 ... d(ndim-1) : v0 v1 ... (row-major)
    end

At most one attr line, right after the case line. Its key names the
member of ad_attrs the op reads (include/autodiff/ad.h), or for a composite
builder the arguments it takes:

    attr scalar S                 add_scalar, mul_scalar, pow_scalar (p),
                                  leaky_relu (alpha), sub_scalar,
                                  rsub_scalar, div_scalar, prelu (0:
                                  ad_prelu; nn_prelu_new gives 1)
    attr dtype f32|f64            cast: the target dtype
    attr cmp eq|gt|ge|lt|le       compare
    attr axis A                   softmax, log_softmax, concat, stack,
                                  index_select, resample_axis,
                                  gather, scatter_add, flip, cumsum
    attr rows R [A]               index_add, index_select_add,
                                  resample_axis_adjoint (A: the axis, 0 if
                                  left out)
    attr matmul TA TB             matmul: trans_a, trans_b (0 or 1)
    attr reduce all|A K           sum, max, logsumexp, mean_axis, argmax,
                                  argmin, min: every dimension or axis A,
                                  keepdim K (0 or 1)
    attr narrow A START LEN       narrow
    attr pad A BEFORE AFTER       pad
    attr shape D0 D1 ...          reshape, expand, sum_to (none: 0-d)
    attr permute P0 P1 ...        permute
    attr transpose D0 D1          transpose
    attr dims D0 D1 ...           flip_dims: the axes of ad_flip
    attr var C K D0 ...           var, std: correction, keepdim (0 or 1),
                                  the axes (none: every dim)
    attr axes K D0 ...            sum_axes, mean_axes, max_axes, min_axes:
                                  keepdim (0 or 1), the axes (none: every
                                  dim)
    attr pool KH KW SH SW PH PW DH DW CEIL CIP IH IW
                                  max_pool2d, avg_pool2d and their partner
                                  ops: kernel, stride, padding, dilation
                                  (h, w), ceil_mode and count_include_pad
                                  (0 or 1), the input's H, W (IH IW) for
                                  avg_pool2d_backward, else 0 0
    attr conv SH SW PT PB PL PR DH DW G SAME OPH OPW KH KW
                                  conv2d, conv_transpose2d, conv2d_weight:
                                  stride, padding (top, bottom, left,
                                  right), dilation, groups, same (0 or 1),
                                  output_padding, kernel (0 where unused)
    attr conv1d S PL PR D G SAME  conv1d: stride, padding, dilation, groups
    attr embedding PAD IDX [FREQ] embedding: padding (0 or 1), padding_idx,
                                  scale_grad_by_freq (0 or 1; absent: 0)
    attr layer_norm EPS D0 ...    layer_norm: eps, the normalized shape
    attr clamp LO HI              clamp, clamp_backward: the bounds (reals;
                                  inf, -inf and nan as written)
    attr pad_nd V N MODE P0 ...   pad_nd, pad_nd_backward: the constant value
                                  (a real), the padded axes N, the mode
                                  (0 constant, 1 reflect, 2 replicate,
                                  3 circular), the 2 N amounts in F.pad's
                                  order (the last axis's first)
    attr elu A S IS GIS           elu, elu_backward: alpha, scale,
                                  input_scale and the gradient's
                                  input_scale (reals; celu's 1 /
                                  float32(alpha) differs from the third)
    attr cosine EPS A             cosine_similarity and its backward: eps,
                                  the axis
    attr threshold T V            threshold: the threshold and the value
                                  (reals)
    attr cross_entropy IGN IDX SUM
                                  softmax_cross_entropy: ignore (0 or 1),
                                  ignore_index, sum (0 or 1)

Axes are written as the builders take them (negative counts from the
end); the C test turns a reduction's into the bit mask of ad_attrs.

Roles, in this order: 'in' (a float input that requires grad) and 'const'
(an input that does not: labels, indices, the condition of where) in the
op's input order; 'seed' (the cotangent v, shaped like the output); 'out';
then one 'grad' per 'in' input, in input order; then, optionally, one
'seed2' (r_k) and after them one 'grad2' (d sum_k <r_k, g_k> / d in_j, zero
where no g_k depends on in_j) per 'in' input. A case without seed and grad
lines (compare) checks the forward only. Values are printed with
%.17g, so float32 values round-trip exactly.

Semantics follow our engine where PyTorch offers a choice: GELU is the exact
(erf) form; softplus is computed without torch's linear cut-off above 20;
max/amax, maximum and minimum share the gradient equally between ties,
which torch 1.13 also does (the tie cases below rely on it); relu'(0) = 0,
|x|'(0) = 0 and leaky_relu'(0) = alpha, as in torch.

The edges of the domains follow torch, and have cases here: NaN through
every op that compares (relu, maximum, minimum, max, logsumexp, softmax,
cross-entropy), pow at a zero base, reductions and softmax over dims of
length 0 (empty tensors are written with no values after the colon; NaN
and infinities as nan, inf, -inf).
"""

import argparse
import os
import re
import sys
import warnings
import zlib

import numpy as np
import torch
import torch.nn.functional as F

ALL = "all"  # attr reduce: over every dimension
NAN, INF = float("nan"), float("inf")

TORCH_DT = {"f32": torch.float32, "f64": torch.float64}
CASES = []
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def table_ops(builder):
    """Names of the ops of autodiff/ops.def whose builder column is builder
    ("B1": ad_NAME(ctx, x), "B2": ad_NAME(ctx, a, b)), in table order."""
    with open(os.path.join(ROOT, "autodiff", "ops.def")) as f:
        rows = re.findall(r"^AD_OP\(\w+, (\w+), (\w+)\)", f.read(), re.M)
    return [name for name, b in rows if b == builder]


def add(label, op, make, fn, attr=None, grad=True, second=True, grid=None):
    """Registers a case: make(rng) -> [(role, ndarray)], fn(tensors) -> out;
    attr: None or (key, value, ...), written as an 'attr' line; second: with
    second derivatives (seed2 and grad2 lines); grid: round the cotangents
    (seed, seed2) to multiples of 1/grid, as such a case's make does its
    inputs, so that sums of products are exact in float32 and the result
    does not depend on the order they are added in."""
    CASES.append(dict(label=label, op=op, make=make, fn=fn, attr=attr, grad=grad, second=second,
                      grid=grid))


def f32r(a):
    """Rounds to float32-representable values (kept as float64)."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def U(rng, shape, lo=-2.0, hi=2.0):
    return f32r(rng.uniform(lo, hi, size=shape))


def signed(rng, shape, lo, hi):
    """Magnitudes in [lo, hi], random signs: away from zero."""
    return f32r(rng.uniform(lo, hi, size=shape) * rng.choice([-1.0, 1.0], size=shape))


def distinct(rng, shape, step=0.25):
    """Distinct values step apart, shuffled: no ties for max."""
    n = int(np.prod(shape, dtype=np.int64))
    v = np.arange(n, dtype=np.float64) * step - step * n / 2
    rng.shuffle(v)
    return f32r(v.reshape(shape))


def idx(values, shape=None):
    a = np.asarray(values, dtype=np.int32)
    return a.reshape(shape) if shape is not None else a


def const(v):
    return lambda rng: v


# ------------------------------------------------------ elementwise binary

BIN_SHAPES = [
    ("same", (3, 4), (3, 4)),
    ("row", (3, 4), (4,)),
    ("col", (3, 1), (3, 4)),
    ("both", (2, 1, 3), (4, 1)),
    ("scalar_l", (), (2, 3)),
    ("scalar_r", (2, 3), ()),
]

BINARY = {
    "add": (lambda a, b: a + b, (-2, 2), (-2, 2)),
    "sub": (lambda a, b: a - b, (-2, 2), (-2, 2)),
    "mul": (lambda a, b: a * b, (-2, 2), (-2, 2)),
    "div": (lambda a, b: a / b, (-2, 2), "signed"),
    "pow": (torch.pow, (0.5, 2), (-2, 2)),
    "maximum": (torch.maximum, (-2, 2), (-2, 2)),
    "minimum": (torch.minimum, (-2, 2), (-2, 2)),
    "prelu": (lambda a, b: torch.where(a > 0, a, b * a), (-2, 2), (-2, 2)),
}

# binary_cross_entropy (nn_bce_loss's op), torch's elementwise BCE
# (reduction 'none') on p in (0.05, 0.95) and t in [0, 1], the pair
# broadcast first (F's function wants one shape; broadcast_tensors' backward
# sums down as the engine does). Value: F.binary_cross_entropy. Gradients:
# torch's formulas, dp = dy (p - t) / max((1 - p) p, 1e-12f) and
# dt = dy (log(1 - p) - log p), written with torch ops: bit for bit what
# F's backward gives (asserted below), and differentiable exactly; torch's
# own double backward is another formula, off by up to ~5e-9 relative in
# float64 (measured against 50-digit arithmetic), beyond the tolerance.
class _BCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p, t):
        ctx.save_for_backward(p, t)
        return F.binary_cross_entropy(p, t, reduction="none")

    @staticmethod
    def backward(ctx, g):
        p, t = ctx.saved_tensors
        eps = torch.tensor(float(np.float32(1e-12)), dtype=p.dtype)
        return (g * (p - t) / torch.maximum((1 - p) * p, eps),
                g * (torch.log(1 - p) - torch.log(p)))


def _bce(a, b):
    a, b = torch.broadcast_tensors(a, b)
    if not torch.is_grad_enabled() or not a.requires_grad:
        return _BCE.apply(a, b)
    ref = [x.detach().requires_grad_() for x in (a, b)]
    seed = torch.linspace(-1, 1, a.numel(), dtype=a.dtype).reshape(a.shape)
    want = torch.autograd.grad(F.binary_cross_entropy(*ref, reduction="none"), ref, seed)
    got = torch.autograd.grad(_BCE.apply(*ref), ref, seed)
    assert all(torch.equal(w, g) for w, g in zip(want, got)), "bce: formula is not torch's"
    return _BCE.apply(a, b)


BINARY["binary_cross_entropy"] = (_bce, (0.05, 0.95), (0, 1))

# binary_cross_entropy_logits (nn_bce_with_logits_loss's op without
# pos_weight): F's function with reduction 'none' on the pair broadcast
# first; z in (-4, 4), t in [0, 1]
BINARY["binary_cross_entropy_logits"] = (
    lambda a, b: F.binary_cross_entropy_with_logits(*torch.broadcast_tensors(a, b),
                                                    reduction="none"), (-4, 4), (0, 1))

# binary_cross_entropy_logits_pw (nn_bce_with_logits_loss_ext's op with a
# pos_weight): F's function with reduction 'none' on z and t broadcast
# first, pos_weight broadcast against them; pw a constant (PyTorch gives it
# no gradient; ad-gradcheck checks ours)
for tag, sz, st, sw in (("same", (3, 4), (3, 4), (3, 4)), ("per_class", (3, 4), (3, 4), (4,)),
                        ("bcast_all", (2, 1, 3), (4, 1), (3,))):
    add(f"binary_cross_entropy_logits_pw_{tag}", "binary_cross_entropy_logits_pw",
        lambda rng, sz=sz, st=st, sw=sw: [("in", U(rng, sz, -4, 4)), ("in", U(rng, st, 0, 1)),
                                          ("const", U(rng, sw, 0.5, 2))],
        lambda t: F.binary_cross_entropy_with_logits(*torch.broadcast_tensors(t[0], t[1]),
                                                     pos_weight=t[2], reduction="none"))

# channel_affine (batch norm's evaluation mode in one pass): (x - m[c]) a[c]
# + b[c] along dim 1, b optional
def _channel_affine(t):
    shape = [1] * t[0].dim()
    shape[1] = t[0].shape[1]
    y = (t[0] - t[1].view(shape)) * t[2].view(shape)
    return y + t[3].view(shape) if len(t) > 3 else y


for tag, xs, bias in (("3d", (2, 3, 4), True), ("2d", (3, 2), True), ("4d_no_bias", (2, 3, 2, 2), False)):
    add(f"channel_affine_{tag}", "channel_affine",
        lambda rng, xs=xs, bias=bias: [("in", U(rng, xs)), ("in", U(rng, (xs[1],), -1, 1)),
                                       ("in", U(rng, (xs[1],), 0.5, 1.5))]
        + ([("in", U(rng, (xs[1],), -1, 1))] if bias else []),
        _channel_affine)

# binary_cross_entropy where a log is clamped at -100: a confident wrong p
# (0 for t = 1, 1 for t = 0) gets torch's (p - t) / max(p (1 - p), 1e-12),
# not the clamped log's 0; t gets log(1 - p) - log p, infinite there.
# F's own backward, first order only (ad-gradcheck checks second order)
add("binary_cross_entropy_saturated", "binary_cross_entropy",
    const([("in", f32r([0.0, 1.0, 1e-13, 1.0, 0.0, 0.5])),
           ("in", f32r([1.0, 0.0, 1.0, 1.0, 0.0, 0.25]))]),
    lambda t: F.binary_cross_entropy(t[0], t[1], reduction="none"), second=False)

# smooth_l1 and huber (nn_smooth_l1_loss_beta's and nn_huber_loss_delta's
# ops): F.smooth_l1_loss / F.huber_loss with reduction 'none' on the pair
# broadcast first; d = p - t at |d| in [0.1, 0.7] or [1.3, 2.5] times k,
# off the kinks (0, +-k) by more than the checks' step; then the kinks
# themselves, first order (the switch point takes the linear side)
_SL1 = {"smooth_l1": lambda a, b, k: F.smooth_l1_loss(a, b, reduction="none", beta=k),
        "huber": lambda a, b, k: F.huber_loss(a, b, reduction="none", delta=k)}


def _sl1_make(shape_t, k):
    def make(rng):
        t = U(rng, shape_t)
        d = rng.choice([-1.0, 1.0], size=(3, 4)) * np.where(
            rng.uniform(size=(3, 4)) < 0.5, rng.uniform(0.1, 0.7, (3, 4)),
            rng.uniform(1.3, 2.5, (3, 4))) * k
        return [("in", f32r(np.broadcast_to(t, (3, 4)) + d)), ("in", t)]
    return make


for name, fn in _SL1.items():
    for k in (1.0, 0.5):
        for tag, st in (("same", (3, 4)), ("row", (4,))):
            add(f"{name}_{k:g}_{tag}", name, _sl1_make(st, k),
                lambda t, fn=fn, k=k: fn(*torch.broadcast_tensors(t[0], t[1]), k),
                attr=("scalar", k))
    add(f"{name}_kinks", name,
        const([("in", f32r([0.0, 1.0, -1.0, 2.5, 0.25, -0.5])), ("in", f32r([0.0] * 6))]),
        lambda t, fn=fn: fn(t[0], t[1], 1.0), attr=("scalar", 1.0), second=False)

def torch_fn(name, table):
    """torch.NAME for an op of the table given no entry in table; an op
    whose PyTorch function has another name stops the script, saying so."""
    fn = getattr(torch, name, None)
    if fn is None:
        sys.exit(f"gen_fixtures.py: op '{name}' of autodiff/ops.def has no torch.{name}: "
                 f"give it an entry in {table} with its PyTorch function and input ranges "
                 "(docs/new-ops.md)")
    return fn


# a binary op of the table without an entry above: torch.NAME on the usual ranges
for name in table_ops("B2"):
    if name not in BINARY and name not in ("index_select", "softmax_cross_entropy"):
        BINARY[name] = (lambda a, b, fn=torch_fn(name, "BINARY"): fn(a, b), (-2, 2), (-2, 2))

for name, (fn, ra, rb) in BINARY.items():
    for tag, sa, sb in BIN_SHAPES:
        def make(rng, sa=sa, sb=sb, ra=ra, rb=rb):
            a = U(rng, sa, *ra)
            b = signed(rng, sb, 0.5, 2) if rb == "signed" else U(rng, sb, *rb)
            return [("in", a), ("in", b)]
        # prelu's attr scalar 0 is ad_prelu's rule (nn_prelu_new's layer
        # gives 1; the two differ only in second derivatives at a NaN x)
        add(f"{name}_{tag}", name, make, lambda t, fn=fn: fn(t[0], t[1]),
            **({"attr": ("scalar", 0.0)} if name == "prelu" else {}))

# ties: torch 1.13 (like our engine) gives each side half the gradient
for name, fn in (("maximum", torch.maximum), ("minimum", torch.minimum)):
    add(f"{name}_ties", name,
        const([("in", f32r([[1.0, -0.5, 2.0], [0.25, 3.0, -1.0]])),
               ("in", f32r([[1.0, 0.5, -2.0], [0.25, 1.0, -1.0]]))]),
        lambda t, fn=fn: fn(t[0], t[1]))

# pow with a = 0 and an integer exponent, and a negative base with an integer one
add("pow_int_exp", "pow",
    const([("in", f32r([[-1.5, 0.5, 2.0], [-0.75, 1.25, -2.0]])),
           ("in", f32r([2.0, 3.0, -1.0]))]),
    lambda t: torch.pow(t[0], t[1]))
# a = 0: torch's masks (d/da = 0 where b = 0; d/db = 0 where b >= 0), and the
# formulas elsewhere (inf for b = 0.5, -inf for b = -1)
add("pow_zero_base", "pow",
    const([("in", f32r([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5])),
           ("in", f32r([0.0, 1.0, 2.0, 3.0, 0.5, -1.0, 0.0]))]),
    lambda t: torch.pow(t[0], t[1]))
add("pow_zero_base_bcast", "pow",
    const([("in", f32r([[0.0], [2.0]])), ("in", f32r([0.0, 2.0, 1.0]))]),
    lambda t: torch.pow(t[0], t[1]))
# NaN in either input gives NaN, and both inputs the whole gradient
for name, fn in (("maximum", torch.maximum), ("minimum", torch.minimum)):
    add(f"{name}_nan", name,
        const([("in", f32r([NAN, 0.0, 1.0, NAN, 2.0])), ("in", f32r([0.0, NAN, 1.0, NAN, -1.0]))]),
        lambda t, fn=fn: fn(t[0], t[1]))


def cmp_fn(mode):
    ops = {"eq": torch.eq, "gt": torch.gt, "ge": torch.ge, "lt": torch.lt, "le": torch.le}
    return lambda t: ops[mode](t[0], t[1]).to(t[0].dtype)


for mode in ("eq", "gt", "ge", "lt", "le"):
    add(f"compare_{mode}", "compare",
        const([("const", f32r([[1.0, -0.5, 2.0, 0.0], [0.25, 3.0, -1.0, 4.0]])),
               ("const", f32r([0.25, -0.5, 1.0, 0.0]))]),
        cmp_fn(mode), attr=("cmp", mode), grad=False)

# where: any nonzero condition selects a; no gradient reaches the condition
add("where_same", "where",
    const([("const", f32r([[1, 0, 2, 0], [0, -0.5, 0, 1], [3, 0, 0, 1]])),
           ("in", f32r(np.linspace(-2, 2, 12).reshape(3, 4))),
           ("in", f32r(np.linspace(3, -1, 12).reshape(3, 4)))]),
    lambda t: torch.where(t[0] != 0, t[1], t[2]))
add("where_bcast_b", "where",
    lambda rng: [("const", f32r((rng.uniform(size=(3, 4)) < 0.5).astype(np.float64))),
                 ("in", U(rng, (3, 4))), ("in", U(rng, (4,)))],
    lambda t: torch.where(t[0] != 0, t[1], t[2]))
add("where_bcast_all", "where",
    const([("const", f32r([[1.0], [0.0], [1.0]])),
           ("in", f32r([[0.5, -1.0, 1.5, 2.0]])),
           ("in", f32r(-0.75))]),
    lambda t: torch.where(t[0] != 0, t[1], t[2]))

# ------------------------------------------------------------ scalar forms

for s in (0.75, -2.5):
    add(f"add_scalar_{s:+g}", "add_scalar", lambda rng: [("in", U(rng, (3, 4)))],
        lambda t, s=s: t[0] + s, attr=("scalar", s))
    add(f"mul_scalar_{s:+g}", "mul_scalar", lambda rng: [("in", U(rng, (2, 3, 2)))],
        lambda t, s=s: t[0] * s, attr=("scalar", s))
add("add_scalar_0d", "add_scalar", const([("in", f32r(1.25))]), lambda t: t[0] + 0.5,
    attr=("scalar", 0.5))
add("mul_scalar_zero", "mul_scalar", lambda rng: [("in", U(rng, (4,)))], lambda t: t[0] * 0.0,
    attr=("scalar", 0.0))

for p, lo, hi in ((2.0, -2, 2), (3.0, -2, 2), (-1.5, 0.5, 2), (0.5, 0.5, 2), (3.5, 0.5, 2)):
    add(f"pow_scalar_{p:+g}", "pow_scalar", lambda rng, lo=lo, hi=hi: [("in", U(rng, (3, 4), lo, hi))],
        lambda t, p=p: torch.pow(t[0], p), attr=("scalar", p))
add("pow_scalar_2_at_zero", "pow_scalar", const([("in", f32r([0.0, -1.0, 1.5]))]),
    lambda t: torch.pow(t[0], 2.0), attr=("scalar", 2.0))
# x^0 = 1 has gradient 0 everywhere, x = 0 included; x^1 at 0 has 1
for p in (0.0, 1.0):
    add(f"pow_scalar_{p:g}_at_zero", "pow_scalar", const([("in", f32r([0.0, -2.0, 1.5]))]),
        lambda t, p=p: torch.pow(t[0], p), attr=("scalar", p))

# --------------------------------------------------------- elementwise unary

UNARY = {
    "neg": (torch.neg, "any"),
    "exp": (torch.exp, "any"),
    "log": (torch.log, "pos"),
    "sqrt": (torch.sqrt, "pos"),
    "abs": (torch.abs, "any"),
    "sin": (torch.sin, "wide"),
    "cos": (torch.cos, "wide"),
    "tanh": (torch.tanh, "any"),
    "sigmoid": (torch.sigmoid, "any"),
    "relu": (torch.relu, "any"),
    "gelu": (lambda x: F.gelu(x, approximate="none"), "any"),
    "softplus": (lambda x: F.softplus(x, beta=1, threshold=1000), "any"),
    "erf": (torch.erf, "any"),
    "square": (torch.square, "any"),
    "hardswish": (F.hardswish, "wide"),
    "logsigmoid": (F.logsigmoid, "any"),
}
RANGES = {"any": (-3, 3), "pos": (0.1, 4), "wide": (-6, 6)}
# a unary op of the table without an entry above: torch.NAME on (-3, 3); an
# op with a narrower domain needs an entry with its range
for name in table_ops("B1"):
    # detach: no gradient (issue 11's block has its cases); hardsigmoid: its own, below
    if name not in UNARY and name not in ("detach", "hardsigmoid"):
        UNARY[name] = (torch_fn(name, "UNARY"), "any")

for name, (fn, rk) in UNARY.items():
    lo, hi = RANGES[rk]
    add(f"{name}_2d", name, lambda rng, lo=lo, hi=hi: [("in", U(rng, (3, 4), lo, hi))],
        lambda t, fn=fn: fn(t[0]))
    add(f"{name}_3d", name, lambda rng, lo=lo, hi=hi: [("in", U(rng, (2, 3, 2), lo, hi))],
        lambda t, fn=fn: fn(t[0]))
    add(f"{name}_0d", name, lambda rng, lo=lo, hi=hi: [("in", U(rng, (), lo, hi))],
        lambda t, fn=fn: fn(t[0]))

# subgradients at 0 and large magnitudes
EDGE = f32r([-30.0, -1.0, 0.0, 0.5, 30.0])
for name in ("abs", "relu"):
    add(f"{name}_at_zero", name, const([("in", f32r([-1.5, 0.0, 2.0, -0.0]))]),
        lambda t, fn=UNARY[name][0]: fn(t[0]))
for name in ("sigmoid", "softplus", "tanh", "gelu", "erf", "logsigmoid"):
    add(f"{name}_edges", name, const([("in", EDGE)]), lambda t, fn=UNARY[name][0]: fn(t[0]))
# hardswish's and hardsigmoid's kinks: torch's slopes at -3 and 3 (hardswish
# -1/2 and 3/2, its [-3, 3] closed; hardsigmoid 0, its (-3, 3) open).
# hardsigmoid (B1, cases of its own): torch 1.13 has no second derivative
# of it (hardsigmoid_backward's is not implemented); ours is 0
KINKS = f32r([-4.0, -3.0, -1.5, 0.0, 3.0, 4.5])
add("hardswish_kinks", "hardswish", const([("in", KINKS)]), lambda t: F.hardswish(t[0]))
add("hardsigmoid_kinks", "hardsigmoid", const([("in", KINKS)]), lambda t: F.hardsigmoid(t[0]),
    second=False)
for tag, shape in (("2d", (3, 4)), ("3d", (2, 3, 2)), ("0d", ())):
    add(f"hardsigmoid_{tag}", "hardsigmoid", lambda rng, shape=shape: [("in", U(rng, shape, -6, 6))],
        lambda t: F.hardsigmoid(t[0]), second=False)
add("log_small", "log", const([("in", f32r([1e-3, 0.25, 1.0, 1e3]))]), lambda t: torch.log(t[0]))

for alpha in (0.1, 0.01, -0.5):
    add(f"leaky_relu_{alpha:+g}", "leaky_relu",
        lambda rng: [("in", np.concatenate([signed(rng, (5,), 0.2, 2), f32r([0.0])]))],
        lambda t, a=alpha: F.leaky_relu(t[0], a), attr=("scalar", alpha))
add("leaky_relu_2d", "leaky_relu", lambda rng: [("in", U(rng, (3, 4)))],
    lambda t: F.leaky_relu(t[0], 0.2), attr=("scalar", 0.2))

# softshrink and hardshrink (lambd as the scalar attr): bounds, NaN (softshrink
# 0, hardshrink NaN) and random values; their gradients as torch's
# softshrink_backward and hardshrink_backward (at a NaN x: case shrinks_and_
# threshold_at_nan of tests/test_nn_misc2.c, torch's kernels differ there)
SHRINK_EDGE = f32r([-2.0, -0.5, -0.25, -0.0, 0.5, 0.75])
for name, fn in (("softshrink", F.softshrink), ("hardshrink", F.hardshrink)):
    add(f"{name}_2d", name, lambda rng: [("in", U(rng, (3, 4)))],
        lambda t, fn=fn: fn(t[0], 0.5), attr=("scalar", 0.5))
    add(f"{name}_edges", name, const([("in", SHRINK_EDGE)]), lambda t, fn=fn: fn(t[0], 0.5),
        attr=("scalar", 0.5))
    for tag, sg, st in (("same", (3, 4), (3, 4)), ("row", (3, 4), (4,))):
        add(f"{name}_backward_{tag}", f"{name}_backward",
            lambda rng, sg=sg, st=st: [("in", U(rng, sg)), ("in", U(rng, st, -2, 2))],
            lambda t, bw=getattr(torch.ops.aten, f"{name}_backward"): bw(t[0], t[1], 0.5),
            attr=("scalar", 0.5))
add("hardshrink_negative_lambd", "hardshrink", lambda rng: [("in", U(rng, (4,)))],
    lambda t: F.hardshrink(t[0], -0.25), attr=("scalar", -0.25))

# elu (aten's elu(x, alpha, scale, input_scale), under nn's elu, selu and
# celu): celu's gradient takes 1 / float32(alpha) (its own derivative in
# torch); at 0 the left slope and a second derivative of 0; elu_backward
# as torch's aten op (is_result false)
SELU_A, SELU_S = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
ELU_EDGE = f32r([-0.0, 0.0, -100.0, 50.0, -1e-3, 1e-3, -2.5, 0.75])
for tag, make in (("2d", lambda rng: [("in", U(rng, (3, 4), -3, 3))]),
                  ("edges", const([("in", ELU_EDGE)]))):
    add(f"elu_{tag}", "elu", make, lambda t: F.elu(t[0], 0.5), attr=("elu", 0.5, 1.0, 1.0, 1.0))
    add(f"elu_selu_{tag}", "elu", make, lambda t: torch.selu(t[0]),
        attr=("elu", SELU_A, SELU_S, 1.0, 1.0))
    add(f"elu_celu_{tag}", "elu", make, lambda t: F.celu(t[0], 0.1),
        attr=("elu", 0.1, 1.0, 1 / 0.1, 1 / float(np.float32(0.1))))
add("elu_scaled_input", "elu", lambda rng: [("in", U(rng, (2, 3, 2), -3, 3))],
    lambda t: torch.ops.aten.elu(t[0], 1.25, 1.5, 0.75), attr=("elu", 1.25, 1.5, 0.75, 0.75))
for tag, sg, st in (("same", (3, 4), (3, 4)), ("row", (3, 4), (4,))):
    add(f"elu_backward_{tag}", "elu_backward",
        lambda rng, sg=sg, st=st: [("in", U(rng, sg)), ("in", U(rng, st, -3, 3))],
        lambda t: torch.ops.aten.elu_backward(t[0], 1.25, 1.5, 0.75, False, t[1]),
        attr=("elu", 1.25, 1.5, 0.75, 0.75))

# threshold (torch's F.threshold; threshold and value rounded to the dtype:
# x = float32(0.1) is replaced in float32, kept in float64), NaN kept with
# the gradient dy, 0 at the threshold; threshold_backward as torch's aten op
THR_EDGE = f32r([NAN, 0.1, -0.0, 0.0, INF, -INF, 0.5, -1.0, 0.2])
for tag, make in (("2d", lambda rng: [("in", U(rng, (3, 4)))]),
                  ("3d", lambda rng: [("in", U(rng, (2, 3, 2)))]),
                  ("0d", lambda rng: [("in", U(rng, ()))]),
                  ("edges", const([("in", THR_EDGE)]))):
    add(f"threshold_{tag}", "threshold", make, lambda t: F.threshold(t[0], 0.1, 20.0),
        attr=("threshold", 0.1, 20.0))
add("threshold_at_zero", "threshold", const([("in", THR_EDGE)]),
    lambda t: F.threshold(t[0], 0.0, -1.5), attr=("threshold", 0.0, -1.5))
for tag, sg, st in (("same", (3, 4), (3, 4)), ("row", (3, 4), (4,)), ("col", (2, 3), (2, 1))):
    add(f"threshold_backward_{tag}", "threshold_backward",
        lambda rng, sg=sg, st=st: [("in", U(rng, sg)), ("in", U(rng, st, -2, 2))],
        lambda t: torch.ops.aten.threshold_backward(t[0], t[1], 0.1), attr=("scalar", 0.1))
add("threshold_backward_edges", "threshold_backward",
    const([("in", f32r([0.5, -1.5, 2.0, 1.0, 3.0, -2.0, 0.25, 4.0, 1.5])), ("in", THR_EDGE)]),
    lambda t: torch.ops.aten.threshold_backward(t[0], t[1], 0.1), attr=("scalar", 0.1))

# fused activation gradients: y = g * f'(.) from the saved tanh / sigmoid
# output or relu / gelu input; torch's aten ops of the same names (relu's is
# threshold_backward at 0, which gives its second input no gradient either)
FUSED = {
    "tanh_backward": (torch.ops.aten.tanh_backward, (-0.95, 0.95)),
    "sigmoid_backward": (torch.ops.aten.sigmoid_backward, (0.02, 0.98)),
    "relu_backward": (lambda g, x: torch.ops.aten.threshold_backward(g, x, 0.0), (-2, 2)),
    "gelu_backward": (torch.ops.aten.gelu_backward, (-4, 4)),
    "abs_backward": (lambda g, x: g * torch.sgn(x.detach()), (-2, 2)),
    "hardswish_backward": (torch.ops.aten.hardswish_backward, (-5, 5)),
    "logsigmoid_backward": (lambda g, x: g * torch.sigmoid(-x), (-4, 4)),
}
for name, (fn, (lo, hi)) in FUSED.items():
    for tag, sg, st in (("same", (3, 4), (3, 4)), ("row", (3, 4), (4,)), ("col", (2, 3), (2, 1))):
        add(f"{name}_{tag}", name,
            lambda rng, sg=sg, st=st, lo=lo, hi=hi: [("in", U(rng, sg)), ("in", U(rng, st, lo, hi))],
            lambda t, fn=fn: fn(t[0], t[1]))
for tag, sg, st in (("same", (3, 4), (3, 4)), ("row", (3, 4), (4,))):
    add(f"leaky_relu_backward_{tag}", "leaky_relu_backward",
        lambda rng, sg=sg, st=st: [("in", U(rng, sg)), ("in", U(rng, st, -2, 2))],
        lambda t: torch.where(t[1] > 0, t[0], t[0] * 0.2), attr=("scalar", 0.2))
add("abs_backward_edges", "abs_backward",
    const([("in", f32r([0.5, -1.5, 2.0, 1.0])), ("in", f32r([0.0, -0.0, NAN, -3.0]))]),
    lambda t: t[0] * torch.sgn(t[1].detach()))
add("relu_backward_at_zero", "relu_backward",
    const([("in", f32r([0.5, -1.5, 2.0, 1.0])), ("in", f32r([0.0, 1.0, -0.5, -0.0]))]),
    lambda t: torch.ops.aten.threshold_backward(t[0], t[1], 0.0))
# NaN: relu and leaky_relu give NaN; relu's gradient there is dy (torch's
# threshold_backward tests x <= 0), leaky_relu's alpha dy, abs's 0 (sign(NaN) = 0)
NAN_IN = f32r([NAN, -1.0, 0.0, 2.0])
for name in ("relu", "abs"):
    add(f"{name}_nan", name, const([("in", NAN_IN)]), lambda t, fn=UNARY[name][0]: fn(t[0]))
add("leaky_relu_nan", "leaky_relu", const([("in", NAN_IN)]), lambda t: F.leaky_relu(t[0], 0.1),
    attr=("scalar", 0.1))
add("relu_backward_nan", "relu_backward",
    const([("in", f32r([0.5, -1.5, 2.0])), ("in", f32r([NAN, 1.0, -1.0]))]),
    lambda t: torch.ops.aten.threshold_backward(t[0], t[1], 0.0))

# clamp: torch.clamp, bounds as the attr (inf for a missing one: the same
# values and gradient as torch's min=None / max=None, which the one-sided
# cases check); the gradient is dy where lo <= x <= hi, inclusive at both
# bounds, 0 at NaN x; lo > hi gives hi; a NaN bound NaN everywhere
CLAMP_EDGE = f32r([-1.0, 1.0, -0.0, 0.0, NAN, INF, -INF, -2.0, 2.0, 0.5])
for tag, make in (("2d", lambda rng: [("in", U(rng, (3, 4), -3, 3))]),
                  ("3d", lambda rng: [("in", U(rng, (2, 3, 2), -3, 3))]),
                  ("0d", lambda rng: [("in", U(rng, (), -3, 3))]),
                  ("edges", const([("in", CLAMP_EDGE)]))):
    add(f"clamp_{tag}", "clamp", make, lambda t: torch.clamp(t[0], -1.0, 1.0),
        attr=("clamp", -1.0, 1.0))
add("clamp_min_only", "clamp", lambda rng: [("in", U(rng, (3, 4), -3, 3))],
    lambda t: torch.clamp(t[0], min=-0.5), attr=("clamp", -0.5, INF))
add("clamp_max_only", "clamp", const([("in", CLAMP_EDGE)]), lambda t: torch.clamp(t[0], max=0.25),
    attr=("clamp", -INF, 0.25))
add("clamp_inf_bounds", "clamp", const([("in", CLAMP_EDGE)]),
    lambda t: torch.clamp(t[0], -INF, INF), attr=("clamp", -INF, INF))
add("clamp_zero_bounds", "clamp", const([("in", f32r([-0.0, 0.0, -1.0, 1.0, 0.5]))]),
    lambda t: torch.clamp(t[0], 0.0, 0.0), attr=("clamp", 0.0, 0.0))
add("clamp_crossed", "clamp", const([("in", CLAMP_EDGE)]), lambda t: torch.clamp(t[0], 1.0, -1.0),
    attr=("clamp", 1.0, -1.0))
add("clamp_nan_min", "clamp", const([("in", CLAMP_EDGE)]), lambda t: torch.clamp(t[0], NAN, 1.0),
    attr=("clamp", NAN, 1.0))
add("clamp_nan_max", "clamp", const([("in", CLAMP_EDGE)]), lambda t: torch.clamp(t[0], -1.0, NAN),
    attr=("clamp", -1.0, NAN))
# x = float32(0.1) and max 0.1: in f32 the bound rounds to x (inside, dy
# passes), in f64 x is above it (clamped, 0)
add("clamp_bound_rounding", "clamp", const([("in", f32r([0.1, -0.1, 0.0]))]),
    lambda t: torch.clamp(t[0], -0.1, 0.1), attr=("clamp", -0.1, 0.1))
for tag, sg, st in (("same", (3, 4), (3, 4)), ("row", (3, 4), (4,))):
    add(f"clamp_backward_{tag}", "clamp_backward",
        lambda rng, sg=sg, st=st: [("in", U(rng, sg)), ("in", U(rng, st))],
        lambda t: torch.where((t[1] >= -1.0) & (t[1] <= 1.0), t[0], torch.zeros(())),
        attr=("clamp", -1.0, 1.0))
add("clamp_backward_edges", "clamp_backward",
    const([("in", f32r([NAN, NAN, INF, -INF, 1.5, 2.0, NAN, 0.5, -1.0, 3.0])), ("in", CLAMP_EDGE)]),
    lambda t: torch.where((t[1] >= -1.0) & (t[1] <= 1.0), t[0], torch.zeros(())),
    attr=("clamp", -1.0, 1.0))
# sign: -1, 0, 1; sign(-0.0) = +0 and sign(NaN) = 0 in torch 1.13; the
# gradient is 0 everywhere
add("sign_edges", "sign", const([("in", f32r([-0.0, 0.0, NAN, INF, -INF, -2.0, 3.0]))]),
    lambda t: torch.sign(t[0]))

# cast: each dtype to the other; the gradient comes back in the input dtype
# (run_case sets the target and its attr line)
add("cast_other", "cast", lambda rng: [("in", U(rng, (3, 4)))], None)

# ---------------------------------------------------------------- matmul


def mm(ta, tb):
    def f(t):
        a = t[0].transpose(-1, -2) if ta else t[0]
        b = t[1].transpose(-1, -2) if tb else t[1]
        return a @ b
    return f


def mm_case(label, ta, tb, batch_a, batch_b, m=3, k=4, n=5):
    sa = tuple(batch_a) + ((k, m) if ta else (m, k))
    sb = tuple(batch_b) + ((n, k) if tb else (k, n))
    add(label, "matmul", lambda rng: [("in", U(rng, sa, -1, 1)), ("in", U(rng, sb, -1, 1))],
        mm(ta, tb), attr=("matmul", int(ta), int(tb)))


for ta in (0, 1):
    for tb in (0, 1):
        tag = ("t" if ta else "n") + ("t" if tb else "n")
        mm_case(f"matmul_{tag}", ta, tb, (), ())
        mm_case(f"matmul_batched_{tag}", ta, tb, (2,), (2,))
mm_case("matmul_batched_x_2d", 0, 0, (2,), ())
mm_case("matmul_2d_x_batched", 0, 0, (), (2,))
mm_case("matmul_batched_x_2d_tt", 1, 1, (3,), ())
mm_case("matmul_4d", 0, 0, (2, 2), (2, 2))
mm_case("matmul_outer", 0, 0, (), (), m=4, k=1, n=3)
mm_case("matmul_vec", 0, 1, (), (), m=1, k=6, n=1)

# matmul with NumPy/PyTorch semantics (issue 11): batch dims that
# broadcast, batch ranks that differ, 1-D operands. A flag on a 1-D operand
# is ignored (a vector is its own transpose), which mm_nd mirrors.


def mm_nd(ta, tb):
    def f(t):
        a = t[0].transpose(-1, -2) if ta and t[0].dim() >= 2 else t[0]
        b = t[1].transpose(-1, -2) if tb and t[1].dim() >= 2 else t[1]
        return torch.matmul(a, b)
    return f


for label, sa, sb, ta, tb in (
        ("matmul_bcast_both", (2, 1, 3, 4), (1, 5, 4, 6), 0, 0),
        ("matmul_bcast_both_tt", (2, 1, 4, 3), (1, 5, 6, 4), 1, 1),
        ("matmul_bcast_rank", (7, 3, 4), (4, 5), 0, 0),
        ("matmul_bcast_rank_tn", (4, 5), (7, 4, 6), 1, 0),
        ("matmul_bcast_4d_3d", (2, 7, 3, 4), (7, 4, 5), 0, 0),
        ("matmul_bcast_3d_4d_nt", (7, 3, 4), (2, 1, 5, 4), 0, 1),
        ("matmul_bcast_ones", (1, 1, 3, 4), (2, 4, 5), 0, 0),
        ("matmul_1d_2d", (4,), (4, 5), 0, 0),
        ("matmul_1d_2d_t", (4,), (5, 4), 0, 1),
        ("matmul_2d_1d", (3, 4), (4,), 0, 0),
        ("matmul_2d_1d_t", (4, 3), (4,), 1, 1),
        ("matmul_1d_1d", (6,), (6,), 0, 0),
        ("matmul_1d_3d", (4,), (2, 4, 5), 0, 0),
        ("matmul_4d_1d", (2, 3, 5, 4), (4,), 0, 0)):
    add(label, "matmul",
        lambda rng, sa=sa, sb=sb: [("in", U(rng, sa, -1, 1)), ("in", U(rng, sb, -1, 1))],
        mm_nd(ta, tb), attr=("matmul", ta, tb))

# ------------------------------------------------------------- shape ops


def shape_attr(shape):
    return ("shape",) + tuple(shape)


for label, src, dst in (("reshape_infer", (3, 4), (2, -1, 3)), ("reshape_flat", (2, 3, 4), (24,)),
                        ("reshape_to_0d", (1, 1), ()), ("reshape_from_0d", (), (1, 1, 1)),
                        ("reshape_4d", (2, 3, 4), (2, 2, 3, 2))):
    add(label, "reshape", lambda rng, src=src: [("in", U(rng, src))],
        lambda t, dst=dst: t[0].reshape(dst), attr=shape_attr(dst))

for label, src, perm in (("permute_201", (2, 3, 4), (2, 0, 1)), ("permute_120", (2, 3, 4), (1, 2, 0)),
                         ("permute_2d", (3, 5), (1, 0)), ("permute_4d", (2, 3, 2, 2), (3, 1, 0, 2)),
                         ("permute_identity", (2, 3), (0, 1))):
    add(label, "permute", lambda rng, src=src: [("in", U(rng, src))],
        lambda t, perm=perm: t[0].permute(perm), attr=("permute",) + tuple(perm))

for label, src, dst in (("expand_col", (3, 1), (2, 3, 4)), ("expand_0d", (), (2, 3)),
                        ("expand_row", (4,), (3, 4)), ("expand_ones", (1, 1), (2, 3)),
                        ("expand_same", (2, 3), (2, 3))):
    add(label, "expand", lambda rng, src=src: [("in", U(rng, src))],
        lambda t, dst=dst: t[0].expand(dst), attr=shape_attr(dst))


def sum_to(x, shape):
    lead = x.dim() - len(shape)
    if lead:
        x = x.sum(dim=tuple(range(lead)))
    dims = tuple(d for d, n in enumerate(shape) if n == 1 and x.shape[d] != 1)
    return x.sum(dim=dims, keepdim=True) if dims else x


for label, src, dst in (("sum_to_col", (2, 3, 4), (3, 1)), ("sum_to_row", (2, 3, 4), (4,)),
                        ("sum_to_0d", (2, 3, 4), ()), ("sum_to_mid", (2, 3, 4), (1, 3, 1)),
                        ("sum_to_same", (3, 4), (3, 4))):
    add(label, "sum_to", lambda rng, src=src: [("in", U(rng, src))],
        lambda t, dst=dst: sum_to(t[0], dst), attr=shape_attr(dst))

for label, src, ax, start, ln in (("narrow_axis0", (4, 5), 0, 1, 2), ("narrow_last", (4, 5), -1, 1, 3),
                                  ("narrow_mid", (2, 5, 3), 1, 2, 3), ("narrow_full", (3, 2), 0, 0, 3),
                                  ("narrow_1d", (6,), 0, 5, 1)):
    add(label, "narrow", lambda rng, src=src: [("in", U(rng, src))],
        lambda t, ax=ax, s=start, n=ln: t[0].narrow(ax, s, n), attr=("narrow", ax, start, ln))


def pad(x, ax, before, after):
    ax = ax % x.dim()
    zs = list(x.shape)
    parts = []
    if before:
        zs[ax] = before
        parts.append(torch.zeros(zs, dtype=x.dtype))
    parts.append(x)
    if after:
        zs[ax] = after
        parts.append(torch.zeros(zs, dtype=x.dtype))
    return torch.cat(parts, ax)


for label, src, ax, before, after in (("pad_axis0", (3, 2), 0, 1, 2), ("pad_axis1", (3, 2), 1, 1, 2),
                                      ("pad_last_3d", (2, 2, 3), -1, 0, 2),
                                      ("pad_mid_3d", (2, 2, 3), 1, 3, 0), ("pad_none", (2, 3), 0, 0, 0)):
    add(label, "pad", lambda rng, src=src: [("in", U(rng, src))],
        lambda t, ax=ax, b=before, a=after: pad(t[0], ax, b, a), attr=("pad", ax, before, after))

# pad_nd: F.pad's four modes over the last 1-3 axes (pad_nd_backward: its
# adjoint, the vector-Jacobian product of F.pad, linear in the gradient)
PAD_MODES = ("constant", "reflect", "replicate", "circular")
for label, src, pads, mode, value in (
        ("pad_nd_constant_2d", (2, 3, 4), (1, 2, 2, 0), 0, 0.5),
        ("pad_nd_constant_1d_zero", (3, 5), (0, 3), 0, 0.0),
        ("pad_nd_reflect_1d", (2, 5), (2, 3), 1, 0.0),
        ("pad_nd_reflect_2d", (2, 3, 4), (2, 1, 1, 2), 1, 0.0),
        ("pad_nd_reflect_3d", (1, 2, 3, 3, 4), (1, 2, 2, 1, 1, 1), 1, 0.0),
        ("pad_nd_replicate_2d", (1, 2, 3, 4), (3, 1, 0, 2), 2, 0.0),
        ("pad_nd_circular_2d", (1, 2, 3, 4), (2, 4, 1, 3), 3, 0.0)):
    n = len(pads) // 2
    attr = ("pad_nd", float(value), n, mode) + pads

    def fpad(x, pads=pads, mode=mode, value=value):
        return F.pad(x, pads, PAD_MODES[mode], value) if mode == 0 else F.pad(x, pads, PAD_MODES[mode])

    add(label, "pad_nd", lambda rng, src=src: [("in", U(rng, src))],
        lambda t, f=fpad: f(t[0]), attr=attr)
    out_shape = tuple(fpad(torch.zeros(src)).shape)

    def back(t, f=fpad, src=src):
        z = torch.zeros(src, dtype=t[0].dtype, requires_grad=True)
        return torch.autograd.grad(f(z), z, t[0], create_graph=True)[0]

    add(label.replace("pad_nd", "pad_nd_backward"), "pad_nd_backward",
        lambda rng, os=out_shape: [("in", U(rng, os))], back,
        attr=("pad_nd", 0.0, n, mode) + pads)

for label, shapes, ax in (("concat_axis0", [(2, 3), (1, 3), (4, 3)], 0),
                          ("concat_last", [(3, 2), (3, 1)], -1),
                          ("concat_3d_mid", [(2, 1, 2), (2, 3, 2), (2, 2, 2)], 1),
                          ("concat_single", [(2, 3)], 1),
                          ("concat_1d_many", [(2,), (1,), (3,), (1,), (2,)], 0)):
    add(label, "concat", lambda rng, shapes=shapes: [("in", U(rng, s)) for s in shapes],
        lambda t, ax=ax: torch.cat(list(t), ax), attr=("axis", ax))

# issue 11 (recurrent networks), core conveniences: stack (the composite
# builder ad_stack, new axis, negative axis allowed) and detach (values only:
# it has no gradient)
for label, shapes, ax in (("stack_axis0", [(2, 3), (2, 3), (2, 3)], 0),
                          ("stack_last", [(3, 2), (3, 2)], -1),
                          ("stack_mid_neg", [(2, 2, 3)] * 4, -2),
                          ("stack_single", [(2, 3)], 1),
                          ("stack_scalars", [()] * 5, 0),
                          ("stack_8", [(2,)] * 8, 1)):
    add(label, "stack", lambda rng, shapes=shapes: [("in", U(rng, s)) for s in shapes],
        lambda t, ax=ax: torch.stack(list(t), ax), attr=("axis", ax))
for label, shape in (("detach_2d", (3, 4)), ("detach_0d", ())):
    add(label, "detach", lambda rng, shape=shape: [("in", U(rng, shape))],
        lambda t: t[0].detach(), grad=False)

# index_select: rows of x picked by i32 indices; repeated rows add up
for label, xs, ix in (("index_select_repeat", (5, 3), idx([0, 2, 2, 4, 0, 2])),
                      ("index_select_2d_idx", (4, 2), idx([[3, 1, 3], [0, 3, 1]])),
                      ("index_select_1d_x", (6,), idx([5, 5, 0, 2])),
                      ("index_select_3d_x", (3, 2, 2), idx([2, 0, 2]))):
    add(label, "index_select", lambda rng, xs=xs, ix=ix: [("in", U(rng, xs)), ("const", ix)],
        lambda t: t[0][t[1]], attr=("axis", 0))
# ... along another axis (torch.index_select(x, dim, idx); a 2-D idx is
# idx.shape inserted at the axis)
for label, xs, ax, ix in (("index_select_axis1", (2, 5, 3), 1, idx([4, 0, 4, 2])),
                          ("index_select_last_2d_idx", (2, 3, 4), -1, idx([[3, 0], [3, 1]]))):
    def isel(x, i, ax=ax):
        a = ax % x.dim()
        return torch.index_select(x, a, i.reshape(-1)).reshape(
            x.shape[:a] + i.shape + x.shape[a + 1:])

    add(label, "index_select", lambda rng, xs=xs, ix=ix: [("in", U(rng, xs)), ("const", ix)],
        lambda t, f=isel: f(t[0], t[1]), attr=("axis", ax))


def index_add(src, ix, rows):
    out = torch.zeros((rows,) + tuple(src.shape[ix.dim():]), dtype=src.dtype)
    return out.index_put((ix,), src, accumulate=True)


for label, ss, ix, rows in (("index_add_repeat", (5, 3), idx([0, 2, 2, 1, 0]), 3),
                            ("index_add_2d_idx", (2, 3, 2), idx([[3, 1, 3], [0, 3, 1]]), 5),
                            ("index_add_1d", (4,), idx([1, 1, 1, 0]), 2)):
    add(label, "index_add", lambda rng, ss=ss, ix=ix: [("in", U(rng, ss)), ("const", ix)],
        lambda t, rows=rows: index_add(t[0], t[1], rows), attr=("rows", rows))

# ... along another axis of the result (torch.index_add along dim)
for label, ss, ax, ix, rows in (("index_add_axis1", (2, 5, 3), 1, idx([2, 0, 2, 3, 2]), 4),
                                ("index_add_last", (3, 4), -1, idx([1, 1, 0, 2]), 3)):
    def iadd(src, i, ax=ax, rows=rows):
        a = ax % src.dim()
        shape = list(src.shape)
        shape[a] = rows
        return torch.zeros(shape, dtype=src.dtype).index_add(a, i.long(), src)

    add(label, "index_add", lambda rng, ss=ss, ix=ix: [("in", U(rng, ss)), ("const", ix)],
        lambda t, f=iadd: f(t[0], t[1]), attr=("rows", rows, ax))

# index_select_add: index_add(index_select(x, src), dst, rows) along an
# axis in one op (src and dst read flat); repeats on both sides add up
for label, xs, ax, src, dst, rows in (
        ("index_select_add_bags", (5, 3), 0, idx([0, 2, 2, 4, 1]), idx([1, 1, 0, 1, 2]), 3),
        ("index_select_add_axis1", (2, 5, 3), 1, idx([4, 0, 4, 2]), idx([3, 0, 3, 1]), 4),
        ("index_select_add_last_2d", (4, 6), -1, idx([[5, 0], [3, 5]]), idx([[1, 1], [0, 2]]), 3)):
    def isadd(x, s, d, ax=ax, rows=rows):
        a = ax % x.dim()
        shape = list(x.shape)
        shape[a] = rows
        picked = torch.index_select(x, a, s.reshape(-1).long())
        return torch.zeros(shape, dtype=x.dtype).index_add(a, d.reshape(-1).long(), picked)

    add(label, "index_select_add",
        lambda rng, xs=xs, src=src, dst=dst: [("in", U(rng, xs)), ("const", src), ("const", dst)],
        lambda t, f=isadd: f(t[0], t[1], t[2]), attr=("rows", rows, ax))

# resample_axis: y[.., i, ..] = sum_t w[t, i] x[.., idx[t, i], ..] along an
# axis (index_select, mul, add in order of the taps); its adjoint adds w[t, i]
# x[.., i, ..] into zeros at idx[t, i] (index_add of each tap's products).
# Repeated indices, four taps, the last axis; w gets gradients too.
RESAMPLE = (("resample_axis0_2taps", (5, 3), 0, idx([[0, 0, 1, 2, 3, 4, 4], [1, 1, 2, 3, 4, 4, 4]]), 5),
            ("resample_axis1_4taps", (2, 5, 3), 1, idx([[4, 0, 2, 1], [0, 1, 3, 2], [1, 2, 4, 3],
                                                         [2, 3, 0, 4]]), 5),
            ("resample_last_1tap", (4, 6), -1, idx([[5, 0, 0, 2, 3, 5, 1, 1]]), 6))


def rs_gather(x, ix, w, ax):
    a = ax % x.dim()
    shape = [1] * x.dim()
    shape[a] = ix.shape[1]
    y = None
    for t in range(ix.shape[0]):
        term = torch.index_select(x, a, ix[t].long()) * w[t].reshape(shape)
        y = term if y is None else y + term
    return y


def rs_adjoint(x, ix, w, ax, rows):
    a = ax % x.dim()
    shape = [1] * x.dim()
    shape[a] = ix.shape[1]
    out = list(x.shape)
    out[a] = rows
    y = torch.zeros(out, dtype=x.dtype)
    for t in range(ix.shape[0]):
        y = y.index_add(a, ix[t].long(), x * w[t].reshape(shape))
    return y


for label, xs, ax, ix, n in RESAMPLE:
    add(label, "resample_axis",
        lambda rng, xs=xs, ix=ix: [("in", U(rng, xs)), ("const", ix), ("in", U(rng, ix.shape))],
        lambda t, ax=ax: rs_gather(t[0], t[1], t[2], ax), attr=("axis", ax))
    ys = list(xs)
    ys[ax % len(xs)] = ix.shape[1]
    add(label + "_adjoint", "resample_axis_adjoint",
        lambda rng, ys=tuple(ys), ix=ix: [("in", U(rng, ys)), ("const", ix), ("in", U(rng, ix.shape))],
        lambda t, ax=ax, n=n: rs_adjoint(t[0], t[1], t[2], ax, n), attr=("rows", n, ax))

# gather / scatter_add along an axis (torch.gather, torch.scatter_add): index
# of x's rank, shorter than x off the axis allowed; repeats add up in the
# gradient; negative axes; empty index and empty axis
GATHER = (("gather_axis0", (3, 4), idx([[0, 2, 1, 2], [1, 0, 0, 2]]), 0),
          ("gather_axis1_short", (3, 5), idx([[4, 0, 4], [1, 1, 3]]), 1),
          ("gather_neg_axis_3d", (2, 3, 4), idx([[[2, 0, 1, 1], [0, 0, 2, 1]],
                                                 [[1, 2, 2, 0], [2, 1, 0, 0]]]), -2),
          ("gather_1d", (5,), idx([4, 0, 0, 2, 3, 4, 1]), -1),
          ("gather_empty_index", (3, 4), idx(np.zeros((0, 4))), 0),
          ("gather_empty_axis", (2, 0), idx(np.zeros((2, 0))), 1))
for label, xs, ix, ax in GATHER:
    add(label, "gather", lambda rng, xs=xs, ix=ix: [("in", U(rng, xs)), ("const", ix)],
        lambda t, ax=ax: torch.gather(t[0], ax, t[1]), attr=("axis", ax))
SCATTER = (("scatter_add_axis0", (3, 4), idx([[0, 2, 1, 2], [1, 0, 0, 2], [2, 2, 0, 1],
                                              [0, 1, 1, 1], [2, 0, 2, 0]]), 0),
           ("scatter_add_neg_axis_short", (3, 5), idx([[4, 0, 4], [1, 1, 3]]), -1),
           ("scatter_add_3d", (2, 3, 4), idx([[[2, 0, 1], [0, 0, 2]], [[1, 2, 2], [2, 1, 0]]]), 1),
           ("scatter_add_empty_index", (3, 4), idx(np.zeros((0, 4))), 0))
for label, xs, ix, ax in SCATTER:
    add(label, "scatter_add",
        lambda rng, xs=xs, ix=ix: [("in", U(rng, xs)), ("const", ix), ("in", U(rng, ix.shape))],
        lambda t, ax=ax: torch.scatter_add(t[0], ax, t[1], t[2]), attr=("axis", ax))

# flip: the op along one axis (attr axis); ad_flip over several (flip_dims,
# attr dims: the axes as ad_flip takes them)
for label, xs, ax in (("flip_axis0", (3, 4), 0), ("flip_neg_axis_3d", (2, 3, 4), -1),
                      ("flip_mid_3d", (2, 3, 4), 1), ("flip_vec", (5,), 0),
                      ("flip_empty_axis", (2, 0, 3), 1), ("flip_empty_other", (0, 3), -1)):
    add(label, "flip", lambda rng, xs=xs: [("in", U(rng, xs))],
        lambda t, ax=ax: torch.flip(t[0], (ax,)), attr=("axis", ax))
for label, xs, dims in (("flip_dims_two", (2, 3, 4), (0, -1)), ("flip_dims_all", (2, 3), (1, 0)),
                        ("flip_dims_three", (2, 2, 3), (2, 0, 1))):
    add(label, "flip_dims", lambda rng, xs=xs: [("in", U(rng, xs))],
        lambda t, dims=dims: torch.flip(t[0], dims), attr=("dims",) + dims)

# ------------------------------------------------------------- reductions


def reduce_fn(kind, axis, keep):
    def f(t):
        x = t[0]
        dims = tuple(range(x.dim())) if axis == ALL else axis
        if kind == "sum":
            return x.sum(dim=dims, keepdim=bool(keep))
        if kind == "max":
            return torch.amax(x, dim=dims, keepdim=bool(keep))
        return torch.logsumexp(x, dim=dims, keepdim=bool(keep))
    return f


RED = (("all", (2, 3, 4), ALL, 0), ("all_keep", (3, 4), ALL, 1), ("axis0", (3, 4), 0, 0),
       ("axis1_keep", (3, 4), 1, 1), ("neg_axis", (2, 3, 4), -1, 0), ("mid_3d", (2, 3, 4), 1, 0),
       ("mid_keep_3d", (2, 3, 4), 1, 1), ("vec", (5,), 0, 0))
for kind in ("sum", "max", "logsumexp"):
    for tag, shape, axis, keep in RED:
        gen = (lambda rng, s=shape: [("in", distinct(rng, s))]) if kind == "max" else \
              (lambda rng, s=shape: [("in", U(rng, s))])
        add(f"{kind}_{tag}", kind, gen, reduce_fn(kind, axis, keep), attr=("reduce", axis, keep))

# ties share the gradient equally (torch.amax does the same)
add("max_ties_axis", "max", const([("in", f32r([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]]))]),
    reduce_fn("max", 1, 0), attr=("reduce", 1, 0))
add("max_ties_all", "max", const([("in", f32r([[1.0, 3.0, 3.0], [2.0, 0.0, 3.0]]))]),
    reduce_fn("max", ALL, 0), attr=("reduce", ALL, 0))
# stability: no overflow for large entries
add("logsumexp_huge", "logsumexp", const([("in", f32r([[1000.0, 999.0, -1000.0], [-5.0, 0.0, 5.0]]))]),
    reduce_fn("logsumexp", 1, 0), attr=("reduce", 1, 0))
# NaN: a lane holding one reduces to NaN (beside +inf too); amax sends NaN to
# every element of such a lane
NAN_LANES = f32r([[1.0, NAN, 2.0], [INF, NAN, 1.0], [1.0, 3.0, 3.0]])
for kind in ("max", "logsumexp"):
    add(f"{kind}_nan_axis", kind, const([("in", NAN_LANES)]), reduce_fn(kind, 1, 0),
        attr=("reduce", 1, 0))
add("max_nan_all", "max", const([("in", NAN_LANES)]), reduce_fn("max", ALL, 0),
    attr=("reduce", ALL, 0))
# empty dims: sum gives 0 and logsumexp -inf for each output element, an
# empty output is empty; max of nothing is an error (tests/test_misuse_ops.c)
for kind in ("sum", "logsumexp"):
    for tag, shape, axis in (("all", (2, 0), ALL), ("axis", (2, 0, 3), 1), ("other", (2, 0), 0)):
        add(f"{kind}_empty_{tag}", kind, lambda rng, s=shape: [("in", U(rng, s))],
            reduce_fn(kind, axis, 0), attr=("reduce", axis, 0))
add("max_empty_other", "max", lambda rng: [("in", U(rng, (2, 0)))], reduce_fn("max", 0, 1),
    attr=("reduce", 0, 1))

for name, fn in (("softmax", torch.softmax), ("log_softmax", torch.log_softmax)):
    for tag, shape, axis in (("last", (2, 3, 4), -1), ("mid", (2, 3, 4), 1), ("first", (3, 4), 0),
                             ("vec", (5,), 0)):
        add(f"{name}_{tag}", name, lambda rng, s=shape: [("in", U(rng, s))],
            lambda t, fn=fn, ax=axis: fn(t[0], ax), attr=("axis", axis))
    add(f"{name}_huge", name,
        const([("in", f32r([[1000.0, 1001.0, 999.0], [-1000.0, 0.0, 1000.0]]))]),
        lambda t, fn=fn: fn(t[0], 1), attr=("axis", 1))
    add(f"{name}_nan", name, const([("in", f32r([[1.0, NAN, 2.0], [0.0, 1.0, 2.0]]))]),
        lambda t, fn=fn: fn(t[0], 1), attr=("axis", 1))
    for tag, shape, axis in (("empty_axis", (2, 0), 1), ("empty_other", (0, 3), 1)):
        add(f"{name}_{tag}", name, lambda rng, s=shape: [("in", U(rng, s))],
            lambda t, fn=fn, ax=axis: fn(t[0], ax), attr=("axis", axis))

# cumsum along an axis: torch sums a float32 lane in a double too; values
# of mixed signs and magnitudes; NaN and inf run to the end of their lane
for label, xs, ax in (("cumsum_axis0", (3, 4), 0), ("cumsum_neg_axis_3d", (2, 3, 4), -1),
                      ("cumsum_mid_3d", (2, 3, 4), 1), ("cumsum_vec", (7,), 0),
                      ("cumsum_long", (2, 300), 1),
                      ("cumsum_empty_axis", (2, 0, 3), 1), ("cumsum_empty_other", (0, 3), -1)):
    add(label, "cumsum", lambda rng, xs=xs: [("in", U(rng, xs))],
        lambda t, ax=ax: torch.cumsum(t[0], ax), attr=("axis", ax))
add("cumsum_mixed_scale", "cumsum",
    const([("in", f32r([[1e8, 1.0, -1e8, 3.0, 1e-3], [0.1, 0.2, 0.3, 0.4, 0.5]]))]),
    lambda t: torch.cumsum(t[0], 1), attr=("axis", 1))
add("cumsum_nan_inf", "cumsum",
    const([("in", f32r([[1.0, NAN, 2.0, 3.0], [INF, 1.0, -INF, 2.0]]))]),
    lambda t: torch.cumsum(t[0], -1), attr=("axis", -1))


# cumsum_reverse (registry only: cumsum's gradient), torch's flip(cumsum(flip(x)))
def rcumsum(t, ax):
    return torch.flip(torch.cumsum(torch.flip(t, [ax]), ax), [ax])


for label, xs, ax in (("cumsum_reverse_axis0", (3, 4), 0), ("cumsum_reverse_neg_axis_3d", (2, 3, 4), -1),
                      ("cumsum_reverse_mid_3d", (2, 3, 4), 1), ("cumsum_reverse_vec", (7,), 0),
                      ("cumsum_reverse_long", (2, 300), 1),
                      ("cumsum_reverse_empty_axis", (2, 0, 3), 1)):
    add(label, "cumsum_reverse", lambda rng, xs=xs: [("in", U(rng, xs))],
        lambda t, ax=ax: rcumsum(t[0], ax), attr=("axis", ax))
add("cumsum_reverse_nan_inf", "cumsum_reverse",
    const([("in", f32r([[1.0, NAN, 2.0, 3.0], [INF, 1.0, -INF, 2.0]]))]),
    lambda t: rcumsum(t[0], -1), attr=("axis", -1))

# argmax / argmin (int32, no gradient): ties give the first index, a NaN
# counts as the extreme (its first index), -0 and 0 tie
ARG_TIES = f32r([[1.0, 3.0, 3.0, -1.0], [2.0, 0.0, 2.0, 0.0], [5.0, 5.0, 5.0, 5.0]])
ARG_NAN = f32r([[1.0, NAN, 2.0, NAN], [INF, 1.0, INF, -INF], [-INF, 0.0, -INF, NAN],
                [-0.0, 0.0, 0.0, -0.0]])
for name, fn in (("argmax", torch.argmax), ("argmin", torch.argmin)):
    for tag, gen, axis, keep in (
            ("axis0", lambda rng: [("in", distinct(rng, (3, 4)))], 0, 0),
            ("neg_axis_keep", lambda rng: [("in", distinct(rng, (2, 3, 4)))], -1, 1),
            ("mid_3d", lambda rng: [("in", distinct(rng, (2, 3, 4)))], 1, 0),
            ("ties", const([("in", ARG_TIES)]), 1, 0),
            ("ties_axis0", const([("in", ARG_TIES)]), 0, 1),
            ("nan_inf", const([("in", ARG_NAN)]), 1, 0),
            ("nan_axis0", const([("in", ARG_NAN)]), -2, 0),
            ("empty_other", lambda rng: [("in", U(rng, (0, 3)))], 1, 0)):
        add(f"{name}_{tag}", name, gen,
            lambda t, fn=fn, axis=axis, keep=keep: fn(t[0], axis, bool(keep)).to(torch.int32),
            attr=("reduce", axis, keep), grad=False)

# softmax's gradient as one op: y (g - sum(g y)) along the axis, torch's
# _softmax_backward_data of the same inputs (y any values here, as the op
# takes them; a softmax output in use)
for tag, shape, axis in (("last", (2, 3, 4), -1), ("mid", (2, 3, 4), 1), ("first", (3, 4), 0)):
    add(f"softmax_backward_{tag}", "softmax_backward",
        lambda rng, s=shape: [("in", U(rng, s)), ("in", U(rng, s, 0.05, 0.5))],
        lambda t, ax=axis: torch.ops.aten._softmax_backward_data(t[0], t[1], ax, t[1].dtype),
        attr=("axis", axis))

# cosine_similarity along an axis (1.13's formula: each vector over its own
# clamped norm, the clamp made under no_grad) and its gradient as one op,
# cosine_similarity_backward(g, a, b) = d/da of <g, cos(a, b)>; a zero
# vector and one below eps, whose gradient flows as if unclamped
COS_ZERO = f32r([[0.0, 0.0, 0.0, 0.0], [3e-9, 4e-9, 0.0, 0.0], [0.5, -1.0, 2.0, 0.25]])
for tag, make, axis, eps in (
        ("last", lambda rng: [("in", U(rng, (2, 3, 4))), ("in", U(rng, (2, 3, 4)))], -1, 1e-8),
        ("mid", lambda rng: [("in", U(rng, (2, 3, 4))), ("in", U(rng, (2, 3, 4)))], 1, 1e-8),
        ("eps", lambda rng: [("in", U(rng, (3, 2), -0.3, 0.3)), ("in", U(rng, (3, 2)))], 0, 0.5),
        ("zero", lambda rng: [("in", COS_ZERO), ("in", U(rng, (3, 4)))], 1, 1e-8)):
    add(f"cosine_similarity_{tag}", "cosine_similarity", make,
        lambda t, ax=axis, e=eps: F.cosine_similarity(t[0], t[1], ax, e), attr=("cosine", eps, axis),
        second=tag != "eps" and tag != "zero")


def cos_bwd(t, ax, e):
    a, b = t[1], t[2]
    y = F.cosine_similarity(a, b, ax, e)
    return torch.autograd.grad(y, a, t[0], create_graph=True)[0]


for tag, gs, axis in (("last", (2, 3), -1), ("mid", (2, 4), 1)):
    add(f"cosine_similarity_backward_{tag}", "cosine_similarity_backward",
        lambda rng, gs=gs: [("in", U(rng, gs)), ("in", U(rng, (2, 3, 4))), ("in", U(rng, (2, 3, 4)))],
        lambda t, ax=axis: cos_bwd(t, ax, 1e-8), attr=("cosine", 1e-8, axis))

# ------------------------------------------------------------------ losses


def ce(t):
    return F.cross_entropy(t[0], t[1], reduction="mean")


CE0 = ("cross_entropy", 0, 0, 0)  # no ignore_index, the mean


add("softmax_ce_small", "softmax_cross_entropy",
    lambda rng: [("in", U(rng, (4, 5), -3, 3)), ("const", idx([0, 4, 2, 2]))], ce, attr=CE0)
add("softmax_ce_one_row", "softmax_cross_entropy",
    lambda rng: [("in", U(rng, (1, 3))), ("const", idx([1]))], ce, attr=CE0)
add("softmax_ce_one_class", "softmax_cross_entropy",
    lambda rng: [("in", U(rng, (3, 1))), ("const", idx([0, 0, 0]))], ce, attr=CE0)
add("softmax_ce_huge", "softmax_cross_entropy",
    const([("in", f32r([[1000.0, 0.0, -1000.0], [1000.0, 1000.0, 0.0], [-1000.0, 1000.0, 999.0]])),
           ("const", idx([0, 2, 2]))]), ce, attr=CE0)
add("softmax_ce_nan", "softmax_cross_entropy",
    const([("in", f32r([[1.0, NAN, 0.5], [0.0, 1.0, 2.0]])), ("const", idx([0, 2]))]), ce, attr=CE0)
# the mean over no sample is NaN
add("softmax_ce_empty", "softmax_cross_entropy",
    lambda rng: [("in", U(rng, (0, 3))), ("const", idx([]))], ce, attr=CE0)

# ---------------- sequences (issue 11): embedding, layer_norm, and
# softmax_cross_entropy over [N, C, d1, ...] with ignore_index. Torch's
# F.embedding with padding_idx (the padding row gets no gradient),
# F.layer_norm (biased variance), F.cross_entropy on K-dim logits.


def emb_case(label, ws, ix, pad=None, freq=False):
    attr = ("embedding", 0 if pad is None else 1, 0 if pad is None else pad)
    if freq:
        attr += (1,)
    add(label, "embedding", lambda rng, ws=ws, ix=ix: [("in", U(rng, ws)), ("const", ix)],
        lambda t, pad=pad: F.embedding(t[1], t[0], padding_idx=pad, scale_grad_by_freq=freq),
        attr=attr)


emb_case("embedding_2d_idx", (5, 3), idx([[0, 2, 2], [4, 1, 0]]))
emb_case("embedding_1d_idx", (6, 4), idx([5, 0, 5, 3]))
emb_case("embedding_3d_idx", (4, 2), idx([[[3, 1], [0, 3]], [[2, 2], [1, 0]]]))
emb_case("embedding_0d_idx", (3, 5), idx(2))
emb_case("embedding_pad", (5, 3), idx([[0, 2, 2], [4, 2, 0]]), pad=2)
emb_case("embedding_pad_neg", (5, 3), idx([[4, 1], [4, 3]]), pad=-1)
emb_case("embedding_pad_absent", (4, 2), idx([0, 1, 1]), pad=3)
# scale_grad_by_freq: each row's gradient over its count among the indices
emb_case("embedding_freq", (5, 3), idx([[0, 2, 2], [4, 2, 0]]), freq=True)
emb_case("embedding_freq_pad", (5, 3), idx([[1, 2, 2], [4, 2, 1], [1, 3, 3]]), pad=2, freq=True)


def ln_case(label, xs, k, affine=(True, True), eps=1e-5):
    ns = tuple(xs[len(xs) - k:])

    def make(rng):
        spec = [("in", U(rng, xs))]
        if affine[0]:
            spec.append(("in", U(rng, ns, 0.5, 1.5)))
        if affine[1]:
            spec.append(("in", U(rng, ns, -1, 1)))
        return spec

    def fn(t):  # float32 from float64, rounded: torch's float32 kernel is ~1e-7 off
        d = [v.double() for v in t]
        y = F.layer_norm(d[0], ns, d[1] if len(d) > 1 else None, d[2] if len(d) > 2 else None, eps)
        return y.to(t[0].dtype)
    add(label, "layer_norm", make, fn, attr=("layer_norm", float(eps)) + ns)


ln_case("layer_norm_last", (3, 4), 1)
ln_case("layer_norm_two_dims", (2, 3, 4), 2)
ln_case("layer_norm_whole", (3, 4), 2)
ln_case("layer_norm_no_affine", (2, 5), 1, (False, False))
ln_case("layer_norm_weight_only", (2, 3, 4), 1, (True, False))
ln_case("layer_norm_eps", (4, 6), 1, eps=0.1)


def lnb_case(label, xs, k, weight):
    """layer_norm_backward(dy, x, w): layer_norm's gradient in x, in float64. First order
    only: torch 1.13 differentiates its layer_norm double backward with the saved mean and
    rstd held constant, and its values then disagree with central differences (by O(1));
    ad-gradcheck checks our second order numerically."""
    ns = tuple(xs[len(xs) - k:])

    def make(rng):
        spec = [("in", U(rng, xs, -1, 1)), ("in", U(rng, xs))]
        return spec + ([("in", U(rng, ns, 0.5, 1.5))] if weight else [])

    def fn(t):
        d = [v.double() for v in t]
        y = F.layer_norm(d[1], ns, d[2] if len(d) > 2 else None, None, 1e-5)
        return torch.autograd.grad(y, d[1], d[0], create_graph=True)[0].to(t[0].dtype)
    add(label, "layer_norm_backward", make, fn, attr=("layer_norm", 1e-5) + ns, second=False)


lnb_case("layer_norm_backward_last", (3, 4), 1, True)
lnb_case("layer_norm_backward_two_dims", (2, 3, 4), 2, False)


def bn_case(label, xs, affine=(True, True), eps=1e-5):
    """batch_norm: F.batch_norm in training mode without running statistics (the
    batch's mean and biased variance over every dim but 1), in float64, rounded."""
    cs = (xs[1],)

    def make(rng):
        spec = [("in", U(rng, xs))]
        if affine[0]:
            spec.append(("in", U(rng, cs, 0.5, 1.5)))
        if affine[1]:
            spec.append(("in", U(rng, cs, -1, 1)))
        return spec

    def fn(t):
        d = [v.double() for v in t]
        y = F.batch_norm(d[0], None, None, d[1] if len(d) > 1 else None,
                         d[2] if len(d) > 2 else None, training=True, eps=eps)
        return y.to(t[0].dtype)
    add(label, "batch_norm", make, fn, attr=("scalar", float(eps)))


bn_case("batch_norm_2d", (5, 3))
bn_case("batch_norm_nchw", (2, 3, 2, 2))
bn_case("batch_norm_runs", (2, 2, 16))
bn_case("batch_norm_no_affine", (3, 2, 5), (False, False))
bn_case("batch_norm_weight_only", (4, 3), (True, False), eps=0.1)


def ctc_alpha_ref(e, skip, a):
    """ctc_alpha: the alpha recursion of the CTC loss in log space from the
    start a, -1e30 for a missing candidate and (a constant) for a state no
    path reaches."""
    T, N, L = e.shape
    neg = torch.full((N, 2), -1e30, dtype=e.dtype)
    k = skip.bool() & (torch.arange(L) >= 2)
    rows = [a]
    for t in range(T):
        p = torch.cat([neg, a], 1)
        a2 = torch.where(k, p[:, :L], torch.tensor(-1e30, dtype=e.dtype))
        c = torch.stack([a, p[:, 1:L + 1], a2], 2)
        gone = (c.max(2).values < -5e29).detach()
        a = torch.where(gone, -1e30 + (e[t] - e[t]).detach(), torch.logsumexp(c, 2) + e[t])
        rows.append(a)
    return torch.stack(rows, 0)


# finite starts: every state reached (nn_ctc_loss's start of -1e30 is
# tests/test_nn_ctc.c's, against F.ctc_loss); in float64, rounded (float32's
# sums over T steps differ from torch's in the fifth digit)
for label, es, sk in (("ctc_alpha_labels", (4, 2, 5), idx([[0, 0, 0, 1, 0], [0, 1, 0, 0, 0]])),
                      ("ctc_alpha_empty_target", (3, 1, 1), idx([[0]])),
                      ("ctc_alpha_skips", (5, 2, 7), idx([[0, 1, 0, 1, 0, 1, 0],
                                                           [0, 1, 0, 0, 0, 1, 0]]))):
    add(label, "ctc_alpha",
        lambda rng, es=es, sk=sk: [("in", U(rng, es, -1.5, 0)), ("const", sk),
                                   ("in", U(rng, es[1:], -1, 0))],
        lambda t: ctc_alpha_ref(t[0].double(), t[1], t[2].double()).to(t[0].dtype))


def gn_case(label, xs, affine=(True, True), eps=1e-5):
    """group_norm: x [N, G, K, ...] (F.group_norm with G groups on x seen as
    [N, G * K, ...]), weight and bias [G, K], in float64, rounded."""
    gk = (xs[1], xs[2])

    def make(rng):
        spec = [("in", U(rng, xs))]
        if affine[0]:
            spec.append(("in", U(rng, gk, 0.5, 1.5)))
        if affine[1]:
            spec.append(("in", U(rng, gk, -1, 1)))
        return spec

    def fn(t):
        d = [v.double() for v in t]
        x = d[0].reshape(xs[0], xs[1] * xs[2], *xs[3:])
        y = F.group_norm(x, xs[1], d[1].reshape(-1) if len(d) > 1 else None,
                         d[2].reshape(-1) if len(d) > 2 else None, eps=eps)
        return y.reshape(xs).to(t[0].dtype)
    add(label, "group_norm", make, fn, attr=("scalar", float(eps)))


gn_case("group_norm_rows", (2, 2, 3, 4))
gn_case("group_norm_3d", (3, 2, 2))
gn_case("group_norm_no_affine", (2, 3, 2, 5), (False, False))
gn_case("group_norm_weight_only", (2, 2, 2, 3), (True, False), eps=0.1)


def ce_opts(ignore=None, red="mean"):
    def f(t):
        return F.cross_entropy(t[0], t[1], reduction=red,
                               ignore_index=-100 if ignore is None else ignore)
    return f


def ce_case(label, zs, labels, ignore=None, red="mean"):
    attr = ("cross_entropy", 0 if ignore is None else 1, 0 if ignore is None else ignore,
            int(red == "sum"))
    add(label, "softmax_cross_entropy",
        lambda rng, zs=zs, labels=labels: [("in", U(rng, zs, -3, 3)), ("const", labels)],
        ce_opts(ignore, red), attr=attr)


ce_case("softmax_ce_seq", (2, 4, 3), idx([[0, 3, 1], [2, 2, 0]]))
ce_case("softmax_ce_seq_ignore", (3, 5, 4),
        idx([[0, 4, -100, 1], [-100, -100, 2, 3], [4, 0, 0, -100]]), ignore=-100)
ce_case("softmax_ce_seq_ignore_pad0", (2, 3, 4), idx([[2, 1, 0, 0], [1, 0, 2, 0]]), ignore=0)
ce_case("softmax_ce_2d_ignore", (4, 3), idx([1, -100, 2, 0]), ignore=-100)
ce_case("softmax_ce_4d_sum", (2, 3, 2, 2), idx([[[0, 1], [2, 1]], [[1, 1], [0, 2]]]), ignore=1,
        red="sum")
ce_case("softmax_ce_2d_sum", (3, 4), idx([3, 0, 1]), red="sum")
ce_case("softmax_ce_all_ignored", (2, 3, 2), idx([[-100, -100], [-100, -100]]), ignore=-100)
ce_case("softmax_ce_all_ignored_sum", (2, 3, 2), idx([[5, 5], [5, 5]]), ignore=5, red="sum")

# ----------------------------------------------- composites (named builders)

add("mean_all", "mean", lambda rng: [("in", U(rng, (2, 3, 4)))], lambda t: t[0].mean())
add("mean_axis", "mean_axis", lambda rng: [("in", U(rng, (3, 4)))],
    lambda t: t[0].mean(dim=-1), attr=("reduce", -1, 0))
add("mean_axis_keep", "mean_axis", lambda rng: [("in", U(rng, (2, 3, 4)))],
    lambda t: t[0].mean(dim=1, keepdim=True), attr=("reduce", 1, 1))
# the mean of nothing is NaN
add("mean_empty", "mean", lambda rng: [("in", U(rng, (2, 0)))], lambda t: t[0].mean())
add("mean_axis_empty", "mean_axis", lambda rng: [("in", U(rng, (3, 0)))],
    lambda t: t[0].mean(dim=1), attr=("reduce", 1, 0))
# var / std (torch.var / torch.std with correction): attr var C K D0 ...
# (correction, keepdim, the axes; none: every dim). correction >= n divides
# by 0 (values only: the gradients differ there, see ad.h)
for name, fn in (("var", torch.var), ("std", torch.std)):
    for tag, xs, dims, c, k in (("all_c1", (3, 4), (), 1, 0), ("axis_c0", (3, 4), (1,), 0, 0),
                                ("two_axes_keep", (2, 3, 4), (0, -1), 1, 1),
                                ("neg_c2", (2, 5), (-1,), 2, 0), ("mid_3d", (2, 3, 4), (1,), 1, 0),
                                ("three_axes", (2, 2, 3), (2, 0, 1), 0, 1),
                                ("neg_corr", (3, 4), (0,), -1, 0),
                                ("empty_other", (0, 3), (1,), 1, 0)):
        add(f"{name}_{tag}", name, lambda rng, xs=xs: [("in", U(rng, xs))],
            lambda t, fn=fn, dims=dims, c=c, k=k: fn(t[0], dim=dims if dims else None,
                                                      correction=c, keepdim=bool(k)),
            attr=("var", c, k) + dims)
    for tag, xs, dims, c in (("corr_eq_n", (2, 3), (1,), 3), ("corr_past_n", (2, 3), (1,), 5),
                             ("empty_axis", (2, 0), (1,), 1), ("scalar_c1", (), (), 1),
                             ("const_lane", None, (1,), 1)):
        gen = (lambda rng: [("const", f32r([[1.0, 1.0, 1.0], [0.5, -1.0, 2.0]]))]) if xs is None \
            else (lambda rng, xs=xs: [("const", U(rng, xs))])
        add(f"{name}_{tag}", name, gen,
            lambda t, fn=fn, dims=dims, c=c: fn(t[0], dim=dims if dims else None, correction=c),
            attr=("var", c, 0) + dims, grad=False)

# sum_sq_dev (var's and std's reduction): sum of (x - mean)^2 over a run
# of axes, float64 for either input dtype (torch's var accumulates float32
# in double); long lanes (32 partial sums), strided lanes past one block of
# 64, no element (0)
def _sum_sq_dev(axis, keep):
    def f(t):
        x = t[0].double()
        dims = tuple(range(x.dim())) if axis == ALL else axis
        return ((x - x.mean(dim=dims, keepdim=True)) ** 2).sum(dim=dims, keepdim=bool(keep))
    return f


for tag, xs, axis, keep in (("all", (2, 3, 4), ALL, 0), ("axis1_keep", (3, 4), 1, 1),
                            ("mid_3d", (2, 3, 4), 1, 0), ("long_rows", (2, 45), 1, 0),
                            ("strided_wide", (3, 70), 0, 0), ("empty", (2, 0), 1, 0)):
    add(f"sum_sq_dev_{tag}", "sum_sq_dev", lambda rng, xs=xs: [("in", U(rng, xs))],
        _sum_sq_dev(axis, keep), attr=("reduce", axis, keep))

# sum_axes / mean_axes (torch.sum / torch.mean over several dims): attr
# axes K D0 ... (keepdim, the axes; none: every dim); adjacent axes are one
# sum, others one sum per run
for name, fn in (("sum_axes", torch.sum), ("mean_axes", torch.mean)):
    for tag, xs, dims, k in (("hw", (2, 3, 4, 5), (2, 3), 0), ("apart_keep", (2, 3, 4), (0, 2), 1),
                             ("all", (3, 4), (), 0), ("three_neg", (2, 3, 4, 2), (-1, -2, 0), 0),
                             ("lead_keep", (3, 4, 2), (1, 0), 1), ("empty", (2, 0, 3), (1,), 0)):
        add(f"{name}_{tag}", name, lambda rng, xs=xs: [("in", U(rng, xs))],
            lambda t, fn=fn, dims=dims, k=k: fn(t[0], dim=dims if dims else tuple(range(t[0].dim())),
                                                keepdim=bool(k)),
            attr=("axes", k) + dims)

# max_axes / min_axes (torch.amax / torch.amin over several dims): one
# reduction (ties share across all the reduced dims); axes apart are
# permuted together first; distinct values, and a tie across two dims
for name, fn in (("max_axes", torch.amax), ("min_axes", torch.amin)):
    for tag, xs, dims, k in (("hw", (2, 3, 4, 5), (2, 3), 0), ("apart_keep", (2, 3, 4), (0, 2), 1),
                             ("all", (3, 4), (), 0), ("three_neg", (2, 3, 4, 2), (-1, -2, 0), 0)):
        add(f"{name}_{tag}", name, lambda rng, xs=xs: [("in", distinct(rng, xs))],
            lambda t, fn=fn, dims=dims, k=k: fn(t[0], dim=dims if dims else tuple(range(t[0].dim())),
                                                keepdim=bool(k)),
            attr=("axes", k) + dims)
    add(f"{name}_tie_apart", name,
        const([("in", f32r([[[1.0, 5.0], [2.0, -5.0]], [[5.0, 0.0], [-5.0, 3.0]]]))]),
        lambda t, fn=fn: fn(t[0], dim=(0, 2)), attr=("axes", 0, 0, 2))

# min / min_axis: -max(-x), max's rules (ties share, NaN wins)
add("min_all", "min", lambda rng: [("in", distinct(rng, (2, 3, 4)))], lambda t: torch.amin(t[0]),
    attr=("reduce", ALL, 0))
for tag, shape, axis, keep in (("axis0", (3, 4), 0, 0), ("neg_axis_keep", (2, 3, 4), -1, 1),
                               ("mid_3d", (2, 3, 4), 1, 0)):
    add(f"min_{tag}", "min", lambda rng, s=shape: [("in", distinct(rng, s))],
        lambda t, axis=axis, keep=keep: torch.amin(t[0], axis, bool(keep)),
        attr=("reduce", axis, keep))
add("min_ties", "min", const([("in", f32r([[1.0, -3.0, -3.0], [2.0, 0.0, 0.0]]))]),
    lambda t: torch.amin(t[0], 1), attr=("reduce", 1, 0))
add("min_nan", "min", const([("in", NAN_LANES)]), lambda t: torch.amin(t[0], 1),
    attr=("reduce", 1, 0))
add("min_empty_other", "min", lambda rng: [("in", U(rng, (2, 0)))],
    lambda t: torch.amin(t[0], 0, True), attr=("reduce", 0, 1))
add("transpose_3d", "transpose", lambda rng: [("in", U(rng, (2, 3, 4)))],
    lambda t: t[0].transpose(0, -1), attr=("transpose", 0, -1))
add("sub_scalar", "sub_scalar", lambda rng: [("in", U(rng, (3, 4)))], lambda t: t[0] - 1.5,
    attr=("scalar", 1.5))
add("rsub_scalar", "rsub_scalar", lambda rng: [("in", U(rng, (3, 4)))], lambda t: 1.5 - t[0],
    attr=("scalar", 1.5))
add("div_scalar", "div_scalar", lambda rng: [("in", U(rng, (3, 4)))], lambda t: t[0] / -4.0,
    attr=("scalar", -4.0))

# ---------------- pooling
# max_pool2d, avg_pool2d, their partner ops (the gradient of max_pool2d is
# max_pool2d_backward, whose gradient is max_pool2d_select, and back;
# avg_pool2d and avg_pool2d_backward are each other's adjoint) and the
# global average (a composite builder). Torch's aten ops of the same
# meaning: max_pool2d_with_indices_backward, a gather at max_pool2d's
# indices, avg_pool2d_backward.


def pool_attr(k, s=None, p=0, d=1, ceil=False, cip=True, in_hw=(0, 0)):
    """The 'attr pool' line: each of k, s, p, d an int or an (h, w) pair;
    s None: the kernel (PyTorch's default)."""
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    k = pair(k)
    s = k if s is None else pair(s)
    return ("pool",) + k + s + pair(p) + pair(d) + (int(ceil), int(cip)) + tuple(in_hw)


def pool_args(a):
    """kernel, stride, padding, dilation, ceil_mode, count_include_pad of an attr."""
    v = a[1:]
    return v[0:2], v[2:4], v[4:6], v[6:8], bool(v[8]), bool(v[9])


def max_pool(t, a):
    k, s, p, d, ceil, _ = pool_args(a)
    return F.max_pool2d(t, k, s, p, d, ceil_mode=ceil)


def max_indices(x, a):
    k, s, p, d, ceil, _ = pool_args(a)
    with torch.no_grad():
        return F.max_pool2d(x, k, s, p, d, ceil_mode=ceil, return_indices=True)[1]


def max_pool_backward(dy, x, a):
    k, s, p, d, ceil, _ = pool_args(a)
    return torch.ops.aten.max_pool2d_with_indices_backward(dy, x, k, s, p, d, ceil,
                                                           max_indices(x, a))


def max_pool_select(g, x, a):
    ix = max_indices(x, a)
    return g.flatten(-2).gather(-1, ix.flatten(-2)).reshape(ix.shape)


def avg_pool(t, a):
    k, s, p, _, ceil, cip = pool_args(a)
    return F.avg_pool2d(t, k, s, p, ceil_mode=ceil, count_include_pad=cip)


def avg_pool_backward(dy, a):
    k, s, p, _, ceil, cip = pool_args(a)
    x = torch.zeros(tuple(dy.shape[:-2]) + tuple(a[11:13]), dtype=dy.dtype)
    return torch.ops.aten.avg_pool2d_backward(dy, x, k, s, p, ceil, cip, None)


def pooled_shape(shape, a):
    with torch.no_grad():
        return tuple(max_pool(torch.zeros(shape), a).shape)


# (label, input shape, attr): non-overlapping with the default stride,
# overlapping windows with padding, dilation, ceil_mode with a clipped last
# window (with and without padding), a 3-D (C, H, W) input
POOLS = [
    ("2x2", (2, 3, 4, 6), pool_attr(2)),
    ("overlap_pad", (1, 2, 7, 6), pool_attr(3, 2, 1)),
    ("dilation", (1, 2, 6, 7), pool_attr((2, 3), (1, 2), (1, 0), (2, 1))),
    ("ceil_pad", (2, 1, 6, 5), pool_attr((3, 2), 2, 1, ceil=True)),
    ("ceil_clip", (1, 1, 5, 5), pool_attr(2, 2, 0, ceil=True)),
    ("chw", (2, 5, 5), pool_attr(2, (1, 2), (0, 1), ceil=True)),
]
for tag, shape, a in POOLS:
    add(f"max_pool2d_{tag}", "max_pool2d", lambda rng, s=shape: [("in", distinct(rng, s))],
        lambda t, a=a: max_pool(t[0], a), attr=a)
    if a[7] == 1 and a[8] == 1:  # average pooling has no dilation
        for cip in (1, 0):
            ac = a[:10] + (cip,) + a[11:]
            add(f"avg_pool2d_{tag}{'' if cip else '_excl'}", "avg_pool2d",
                lambda rng, s=shape: [("in", U(rng, s))], lambda t, a=ac: avg_pool(t[0], a), attr=ac)

# ties: the first maximum in row-major window order takes the gradient;
# NaN: a window holding one gives NaN and its gradient goes to the (last)
# NaN; a window of -inf gives -inf, its gradient to its first element
add("max_pool2d_ties", "max_pool2d",
    const([("in", f32r([[[[1, 1, 1, 0], [1, 1, 2, 2], [0, 2, 2, 2], [3, 0, 3, 3]]]]))]),
    lambda t, a=pool_attr(2, 1): max_pool(t[0], a), attr=pool_attr(2, 1))
add("max_pool2d_nan", "max_pool2d",
    const([("in", f32r([[[[1, NAN, 2, NAN], [NAN, 0, 3, 1], [-INF, -INF, 1, 1],
                          [-INF, -INF, 1, 0.5]]]]))]),
    lambda t, a=pool_attr(2): max_pool(t[0], a), attr=pool_attr(2))

for tag, shape, a in (POOLS[1], POOLS[2], POOLS[3], POOLS[5]):
    add(f"max_pool2d_backward_{tag}", "max_pool2d_backward",
        lambda rng, s=shape, a=a: [("in", U(rng, pooled_shape(s, a))), ("in", distinct(rng, s))],
        lambda t, a=a: max_pool_backward(t[0], t[1], a), attr=a)
    add(f"max_pool2d_select_{tag}", "max_pool2d_select",
        lambda rng, s=shape: [("in", U(rng, s)), ("in", distinct(rng, s))],
        lambda t, a=a: max_pool_select(t[0], t[1], a), attr=a)

# pool_gather / pool_scatter: x's dims from axis on are one plane, index
# (of x's rank, x's dims before axis) names an element of its plane; torch's
# gather / scatter_add along the flattened plane (the meaning of the max
# poolings' indices); repeats add up in the gradient
PLANE = (("nchw", (2, 3, 4, 5), idx(np.arange(36) * 7 % 20, (2, 3, 2, 3)), -2),
         ("volume", (2, 2, 3, 4), idx(np.arange(8) * 5 % 24, (2, 1, 2, 2)), 1),
         ("one_plane", (3, 4), idx([[11, 0, 5, 5, 2], [7, 11, 3, 0, 9]]), 0))


def plane_gather(x, ix, a):
    a = a % x.dim()
    return x.flatten(a).gather(a, ix.flatten(a).long()).reshape(ix.shape)


def plane_scatter(g, ix, x, a):
    a = a % x.dim()
    z = torch.zeros_like(x).flatten(a)
    return z.scatter_add(a, ix.flatten(a).long(), g.flatten(a)).reshape(x.shape)


for tag, xs, ix, ax in PLANE:
    add(f"pool_gather_{tag}", "pool_gather",
        lambda rng, xs=xs, ix=ix: [("in", U(rng, xs)), ("const", ix)],
        lambda t, ax=ax: plane_gather(t[0], t[1], ax), attr=("axis", ax))
    add(f"pool_scatter_{tag}", "pool_scatter",
        lambda rng, xs=xs, ix=ix: [("in", U(rng, ix.shape)), ("const", ix), ("const", U(rng, xs))],
        lambda t, ax=ax: plane_scatter(t[0], t[1], t[2], ax), attr=("axis", ax))

for tag, shape, a in (POOLS[1], POOLS[3], POOLS[4], POOLS[5]):
    for cip in (1, 0):
        ac = a[:10] + (cip,) + tuple(shape[-2:])
        add(f"avg_pool2d_backward_{tag}{'' if cip else '_excl'}", "avg_pool2d_backward",
            lambda rng, s=shape, a=a: [("in", U(rng, pooled_shape(s, a)))],
            lambda t, a=ac: avg_pool_backward(t[0], a), attr=ac)

# global average pooling: adaptive_avg_pool2d(x, 1), a composite builder
for tag, shape in (("nchw", (2, 3, 4, 5)), ("chw", (3, 2, 5))):
    add(f"global_avg_pool2d_{tag}", "global_avg_pool2d", lambda rng, s=shape: [("in", U(rng, s))],
        lambda t: F.adaptive_avg_pool2d(t[0], 1))
# ------------------------------------------------------------ convolution
# conv2d, conv_transpose2d, conv2d_weight and the conv1d builder against
# torch.nn.functional. Inputs and cotangents are multiples of 1/16 in
# [-1, 1] (grid=16): every product and sum is exact in float32, so the
# float32 values do not depend on the order of the sums. conv2d's cases are
# a sampled grid that covers every pair of factor values (kernel, stride,
# padding, dilation, groups, batch, parity of the size, bias), not their
# product. The attr line: conv SH SW PT PB PL PR DH DW GROUPS SAME OPH OPW
# KH KW (padding top, bottom, left, right; SAME 0 or 1; output_padding and
# kernel where the op reads them, else 0); conv1d S PL PR D GROUPS SAME.

CONV_GRID = 16
# torch notes that 'same' with an even kernel pads a copy of the input
warnings.filterwarnings("ignore", message="Using padding='same'")


def grid16(rng, shape):
    return np.round(rng.uniform(-1, 1, size=shape) * CONV_GRID) / CONV_GRID


def conv_attr(stride=(1, 1), pad=(0, 0, 0, 0), dil=(1, 1), groups=1, same=0, opad=(0, 0),
              kernel=(0, 0)):
    return ("conv",) + tuple(stride) + tuple(pad) + tuple(dil) + (groups, same) + tuple(opad) + \
        tuple(kernel)


def conv_spec(a):
    _, sh, sw, pt, pb, pl, pr, dh, dw, groups, same, oph, opw, kh, kw = a
    return (sh, sw), (pt, pb, pl, pr), (dh, dw), groups, same, (oph, opw), (kh, kw)


def torch_conv2d(x, w, b, a):
    stride, (pt, pb, pl, pr), dil, groups, same, _, _ = conv_spec(a)
    if same:
        return F.conv2d(x, w, b, 1, "same", dil, groups)
    if pt == pb and pl == pr:
        return F.conv2d(x, w, b, stride, (pt, pl), dil, groups)
    return F.conv2d(F.pad(x, (pl, pr, pt, pb)), w, b, stride, 0, dil, groups)


def torch_conv_transpose2d(x, w, b, a):
    stride, (pt, pb, pl, pr), dil, groups, _, (oph, opw), _ = conv_spec(a)
    if pt == pb and pl == pr:
        return F.conv_transpose2d(x, w, b, stride, (pt, pl), (oph, opw), groups, dil)
    # asymmetric: the full output, cropped (negative padding) and extended
    y = F.conv_transpose2d(x, w, None, stride, 0, 0, groups, dil)
    y = F.pad(y, (-pl, -pr + opw, -pt, -pb + oph))
    return y if b is None else y + b.view(1, -1, 1, 1)


def torch_conv2d_weight(x, g, a):
    """dL/dw of conv2d(x, w) for dL/dout = g, differentiable in x and g."""
    _, _, _, groups, _, _, (kh, kw) = conv_spec(a)
    w0 = torch.zeros((g.shape[1], x.shape[1] // groups, kh, kw), dtype=x.dtype, requires_grad=True)
    return torch.autograd.grad(torch_conv2d(x, w0, None, a), w0, g, create_graph=True)[0]


def conv_case(label, op, xs, ws, nb, a, fn):
    def make(rng):
        spec = [("in", grid16(rng, xs)), ("in", grid16(rng, ws))]
        return spec + ([("in", grid16(rng, (nb,)))] if nb else [])
    add(label, op, make, lambda t: fn(t[0], t[1], t[2] if len(t) > 2 else None, a), attr=a,
        grid=CONV_GRID)


def pairwise(factors, valid, cost):
    """A few rows of the product of factors (name -> values) that hold every
    pair of values of two factors at least once: greedily the valid row
    that covers most pairs not yet covered, the cheapest among those."""
    import itertools
    names = list(factors)
    rows = [dict(zip(names, r)) for r in itertools.product(*factors.values())]
    rows = [r for r in rows if valid(r)]

    def pairs(r):
        return {(a, r[a], b, r[b]) for a, b in itertools.combinations(names, 2)}
    todo = set().union(*(pairs(r) for r in rows))
    picked = []
    while todo:
        best = max(rows, key=lambda r: (len(pairs(r) & todo), -cost(r)))
        picked.append(best)
        todo -= pairs(best)
    return picked


PADS = {"0": (0, 0, 0, 0), "1": (1, 1, 1, 1), "2": (2, 2, 2, 2), "asym": (1, 0, 0, 2)}
CHANNELS = {"1": (2, 3), "2": (4, 2), "C": (3, 3)}  # groups -> (C, O)


def conv2d_grid_case(r):
    k, s, d = r["k"], r["s"], r["d"]
    c, o = CHANNELS[r["g"]]
    groups = {"1": 1, "2": 2, "C": c}[r["g"]]
    same = r["pad"] == "same"
    pad = (0, 0, 0, 0) if same else PADS[r["pad"]]
    span = d * (k - 1) + 1
    h = max(span - pad[0] - pad[1], 1) + s
    if (h % 2 == 1) != (r["par"] == "odd"):
        h += 1
    w = max(span - pad[2] - pad[3], 1) + 2  # of the other parity, or the same
    return (r["n"], c, h, w), (o, c // groups, k, k), o if r["bias"] else 0, \
        conv_attr((s, s), pad, (d, d), groups, int(same))


def conv2d_grid_cost(r):
    xs, ws, _, _ = conv2d_grid_case(r)
    return int(np.prod(xs)) + int(np.prod(ws))


CONV2D_FACTORS = {"k": (1, 2, 3, 5), "s": (1, 2, 3), "pad": ("0", "1", "2", "asym", "same"),
                  "d": (1, 2), "g": ("1", "2", "C"), "n": (1, 3), "par": ("odd", "even"),
                  "bias": (0, 1)}
for i, r in enumerate(pairwise(CONV2D_FACTORS, lambda r: r["pad"] != "same" or r["s"] == 1,
                               conv2d_grid_cost)):
    xs, ws, nb, a = conv2d_grid_case(r)
    conv_case(f"conv2d_grid{i:02d}_k{r['k']}s{r['s']}p{r['pad']}d{r['d']}g{r['g']}", "conv2d",
              xs, ws, nb, a, torch_conv2d)
# per-axis strides, dilations and kernels; 'same' with an odd and an even
# total; a depthwise multiplier; the 1x1 path
conv_case("conv2d_rect", "conv2d", (2, 2, 6, 5), (3, 2, 2, 3), 3,
          conv_attr((2, 1), (1, 0, 2, 1), (1, 2)), torch_conv2d)
conv_case("conv2d_same_k4", "conv2d", (1, 2, 5, 6), (2, 2, 4, 4), 2, conv_attr(same=1),
          torch_conv2d)
conv_case("conv2d_same_rect_d2", "conv2d", (2, 2, 4, 5), (2, 2, 2, 3), 0,
          conv_attr(dil=(2, 1), same=1), torch_conv2d)
conv_case("conv2d_depthwise_x2", "conv2d", (2, 2, 4, 4), (4, 1, 3, 3), 4,
          conv_attr(pad=(1, 1, 1, 1), groups=2), torch_conv2d)
conv_case("conv2d_1x1", "conv2d", (3, 3, 3, 2), (4, 3, 1, 1), 4, conv_attr(), torch_conv2d)
conv_case("conv2d_1x1_stride2", "conv2d", (1, 2, 5, 4), (3, 2, 1, 1), 0, conv_attr((2, 2)),
          torch_conv2d)

for label, xs, ws, nb, a in (
        ("k3s2p1op1", (2, 3, 3, 3), (3, 2, 3, 3), 2, conv_attr((2, 2), (1, 1, 1, 1), opad=(1, 1))),
        ("k2s2", (1, 2, 3, 2), (2, 3, 2, 2), 3, conv_attr((2, 2))),
        ("k4s2p1", (1, 2, 2, 3), (2, 2, 4, 4), 0, conv_attr((2, 2), (1, 1, 1, 1))),
        ("k3p1g2", (2, 4, 3, 3), (4, 1, 3, 3), 2, conv_attr(pad=(1, 1, 1, 1), groups=2)),
        ("k3s3op2", (1, 2, 2, 2), (2, 2, 3, 3), 0, conv_attr((3, 3), opad=(2, 1))),
        ("k2d2op1", (1, 2, 3, 3), (2, 2, 2, 2), 2, conv_attr(dil=(2, 2), opad=(1, 1))),
        ("asym", (1, 2, 3, 3), (2, 3, 3, 2), 0, conv_attr((2, 1), (1, 0, 2, 1), opad=(1, 0))),
        ("depthwise", (2, 3, 3, 2), (3, 1, 2, 2), 3, conv_attr((2, 2), groups=3)),
        ("1x1", (2, 3, 2, 3), (3, 2, 1, 1), 2, conv_attr()),
        ("rect_d21_n3", (3, 2, 2, 3), (2, 2, 2, 3), 2, conv_attr((1, 2), (0, 0, 1, 1), (2, 1),
                                                                 opad=(1, 1)))):
    conv_case(f"conv_transpose2d_{label}", "conv_transpose2d", xs, ws, nb, a,
              torch_conv_transpose2d)

for label, xs, gs, a in (
        ("k3", (2, 2, 5, 4), (2, 3, 3, 2), conv_attr(kernel=(3, 3))),
        ("k2s2p1g2", (1, 4, 5, 5), (1, 2, 3, 3), conv_attr((2, 2), (1, 1, 1, 1), groups=2,
                                                            kernel=(2, 2))),
        ("asym_d2", (3, 2, 5, 4), (3, 2, 4, 4), conv_attr(pad=(1, 0, 0, 2), dil=(2, 2),
                                                          kernel=(2, 2))),
        ("same_k4", (1, 2, 4, 4), (1, 2, 4, 4), conv_attr(same=1, kernel=(4, 3))),
        ("depthwise_s3", (2, 3, 7, 5), (2, 3, 2, 2), conv_attr((3, 3), groups=3, kernel=(3, 2))),
        ("1x1", (2, 3, 2, 3), (2, 2, 2, 3), conv_attr(kernel=(1, 1)))):
    conv_case(f"conv2d_weight_{label}", "conv2d_weight", xs, gs, 0, a,
              lambda x, g, _b, a: torch_conv2d_weight(x, g, a))


def torch_conv1d(x, w, b, a):
    _, s, pl, pr, d, groups, same = a
    if same:
        return F.conv1d(x, w, b, 1, "same", d, groups)
    if pl == pr:
        return F.conv1d(x, w, b, s, pl, d, groups)
    return F.conv1d(F.pad(x, (pl, pr)), w, b, s, 0, d, groups)


for label, xs, ws, nb, a in (("k3p1", (2, 2, 6), (3, 2, 3), 3, ("conv1d", 1, 1, 1, 1, 1, 0)),
                             ("k5s2p2", (1, 2, 9), (2, 2, 5), 0, ("conv1d", 2, 2, 2, 1, 1, 0)),
                             ("same_k4", (2, 1, 5), (2, 1, 4), 2, ("conv1d", 1, 0, 0, 1, 1, 1)),
                             ("g2d2", (1, 4, 7), (2, 2, 2), 0, ("conv1d", 1, 0, 0, 2, 2, 0)),
                             ("asym_s3", (3, 2, 8), (2, 2, 2), 2, ("conv1d", 3, 2, 0, 1, 1, 0))):
    conv_case(f"conv1d_{label}", "conv1d", xs, ws, nb, a, torch_conv1d)

# ---------------- fused recurrent cells (lstm_cell, gru_cell): PyTorch's
# LSTM and GRU step equations composed with torch ops, outputs laid out as
# the ops' [h' | c' | i f g o | tanh(c')] and [h' | r z n].


def lstm_cell_ref(t):
    a, c = t
    i, f, g, o = a.chunk(4, 1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    cn = f * c + i * g
    tc = torch.tanh(cn)
    return torch.cat([o * tc, cn, i, f, g, o, tc], 1)


def gru_cell_ref(t):
    a, b, h = t
    ar, az, an = a.chunk(3, 1)
    br, bz, bn = b.chunk(3, 1)
    r, z = torch.sigmoid(ar + br), torch.sigmoid(az + bz)
    n = torch.tanh(an + r * bn)
    return torch.cat([(h - n) * z + n, r, z, n], 1)


def in_f64(ref):
    """ref computed in float64 and rounded to the inputs' dtype: torch's float32
    composition rounds after every op, and the GRU's h' = (h - n) z + n cancels.
    The LSTM's float32 case is torch's own float32 composition: its backward,
    like the op's, reads the saved activations (s (1 - s) cancels near s = 1
    in both)."""
    return lambda t: ref([x.double() for x in t]).to(t[0].dtype)


for n, h in ((3, 2), (1, 5), (4, 1)):
    add(f"lstm_cell_{n}x{h}", "lstm_cell",
        lambda rng, n=n, h=h: [("in", U(rng, (n, 4 * h), -3, 3)), ("in", U(rng, (n, h)))],
        lstm_cell_ref)
    add(f"gru_cell_{n}x{h}", "gru_cell",
        lambda rng, n=n, h=h: [("in", U(rng, (n, 3 * h), -3, 3)), ("in", U(rng, (n, 3 * h))),
                               ("in", U(rng, (n, h)))],
        in_f64(gru_cell_ref))


# ---------------- whole-sequence recurrent ops (lstm_seq, gru_seq): the
# cells above unrolled over T steps with torch ops; a 0 in the mask keeps
# the state and zeroes the rest of that row.


def lstm_seq_ref(t):
    xp, w, b, h, c = t[:5]
    mask = t[5] if len(t) > 5 else None
    H = w.shape[1]
    ys = []
    for s in range(xp.shape[0]):
        y = lstm_cell_ref([(xp[s] + b) + h @ w.t(), c])
        if mask is not None:
            m = mask[s].unsqueeze(1)
            keep = torch.cat([h, c, torch.zeros_like(y[:, 2 * H:])], 1)
            y = torch.where(m != 0, y, keep)
        h, c = y[:, :H], y[:, H:2 * H]
        ys.append(y)
    return torch.stack(ys, 0)


def gru_seq_ref(t):
    xp, w, bx, b, h = t[:5]
    mask = t[5] if len(t) > 5 else None
    H = w.shape[1]
    ys = []
    for s in range(xp.shape[0]):
        bt = h @ w.t() + b
        y = torch.cat([gru_cell_ref([xp[s] + bx, bt, h]), bt[:, 2 * H:]], 1)
        if mask is not None:
            m = mask[s].unsqueeze(1)
            y = torch.where(m != 0, y, torch.cat([h, torch.zeros_like(y[:, H:])], 1))
        h = y[:, :H]
        ys.append(y)
    return torch.stack(ys, 0)


def seq_mask(T, lengths):
    return np.array([[1.0 if n > s else 0.0 for n in lengths] for s in range(T)])


def batch_major(ref):
    """ref on [N, T, .] inputs and output (the attribute axis 1)."""
    return lambda t: ref([t[0].transpose(0, 1)] + list(t[1:])).transpose(0, 1)


for T, n, h, lengths, bf in ((3, 2, 2, None, 0), (4, 3, 2, (4, 1, 3), 0), (2, 1, 3, None, 0),
                             (3, 2, 2, (3, 2), 1)):
    def lstm_make(rng, T=T, n=n, h=h, lengths=lengths, bf=bf):
        ins = [("in", U(rng, (n, T, 4 * h) if bf else (T, n, 4 * h), -2, 2)),
               ("in", U(rng, (4 * h, h), -0.5, 0.5)), ("in", U(rng, (4 * h,), -0.5, 0.5)),
               ("in", U(rng, (n, h))), ("in", U(rng, (n, h)))]
        return ins + ([("const", seq_mask(T, lengths))] if lengths else [])

    def gru_make(rng, T=T, n=n, h=h, lengths=lengths, bf=bf):
        ins = [("in", U(rng, (n, T, 3 * h) if bf else (T, n, 3 * h), -2, 2)),
               ("in", U(rng, (3 * h, h), -0.5, 0.5)), ("in", U(rng, (3 * h,), -0.5, 0.5)),
               ("in", U(rng, (3 * h,), -1, 1)), ("in", U(rng, (n, h)))]
        return ins + ([("const", seq_mask(T, lengths))] if lengths else [])

    tag = f"{T}x{n}x{h}" + ("_mask" if lengths else "") + ("_bf" if bf else "")
    lref, gref = (batch_major(lstm_seq_ref), batch_major(gru_seq_ref)) if bf else \
        (lstm_seq_ref, gru_seq_ref)
    add(f"lstm_seq_{tag}", "lstm_seq", lstm_make, in_f64(lref), attr=("axis", bf))
    add(f"gru_seq_{tag}", "gru_seq", gru_make, in_f64(gref), attr=("axis", bf))


# --------------------------------------------------------------- writing

NAMES = {torch.float32: "f32", torch.float64: "f64", torch.int32: "i32"}


def fmt_tensor(role, t):
    t = t.detach()
    dt = NAMES[t.dtype]
    vals = t.reshape(-1).tolist()
    if dt == "i32":
        body = " ".join(str(int(v)) for v in vals)
    else:
        body = " ".join("%.17g" % v for v in vals)
    dims = " ".join(str(d) for d in t.shape)
    head = f"tensor {role} {dt} {t.dim()}" + (f" {dims}" if dims else "")
    return f"{head} : {body}" if body else f"{head} :"


def fmt_attr(attr):
    """'attr KEY V ...': reals with %.17g (as tensor values), words as they are."""
    key, *vals = attr
    words = [key] + ["%.17g" % v if isinstance(v, float) else v if isinstance(v, str)
                     else str(int(v)) for v in vals]
    return "attr " + " ".join(words)


# Ops whose torch kernel is the machine's BLAS: their float32 results
# would depend on the CPU that generated the file (the kernel OpenBLAS
# picks, its blocking), so float32 cases of these are computed in float64
# and rounded to float32 (the correctly rounded values, the same on every
# machine); the test compares them with float32's tolerance.
BLAS_OPS = {"matmul", "conv2d", "conv_transpose2d", "conv2d_weight", "conv1d"}
# Likewise ops whose torch float32 kernel is far from the correctly rounded
# value: torch 1.13's float32 GELU is 30-100 ulp off at x = -2.7 (its
# vectorised erf), beyond the engine's own error (under 6 ulp), and its
# gradient (gelu_backward) with it.
F64_REF_OPS = BLAS_OPS | {"gelu", "gelu_backward"}


def run_case(c, dtname):
    dt = TORCH_DT[dtname]
    # the dtype torch computes in, and what the file shows: dt, or for a
    # BLAS op in float32, float64 rounded to float32
    calc = torch.float64 if c["op"] in F64_REF_OPS and dt == torch.float32 else dt

    def shown(t):
        return t.to(dt) if calc != dt else t

    rng = np.random.RandomState(zlib.crc32(c["label"].encode()))
    spec = c["make"](rng)
    attr, fn = c["attr"], c["fn"]
    if c["op"] == "cast":  # to the other float dtype
        other = torch.float64 if dt == torch.float32 else torch.float32
        attr = ("dtype", NAMES[other])
        fn = lambda t: t[0].to(other)  # noqa: E731
    ins, lines = [], []
    for role, arr in spec:
        arr = np.asarray(arr)
        if arr.dtype.kind == "i":
            ins.append(torch.tensor(arr, dtype=torch.int32))
        else:
            ins.append(torch.tensor(arr, dtype=calc, requires_grad=(role == "in")))
        lines.append(fmt_tensor(role, shown(ins[-1]) if arr.dtype.kind != "i" else ins[-1]))
    targs = [x.long() if x.dtype == torch.int32 else x for x in ins]
    out = fn(targs)
    head = [f"case {c['label']} {c['op']} {dtname}"]
    if attr is not None:
        head.append(fmt_attr(attr))
    if not c["grad"]:
        return head + lines + [fmt_tensor("out", shown(out)), "end"]
    srng = np.random.RandomState(zlib.crc32(("seed:" + c["label"]).encode()))
    gridded = (lambda a: np.round(a * c["grid"]) / c["grid"]) if c["grid"] else (lambda a: a)
    seed = torch.tensor(gridded(U(srng, tuple(out.shape), -1, 1)), dtype=out.dtype)
    req = [x for (role, _), x in zip(spec, ins) if role == "in"]
    grads = torch.autograd.grad(out, req, seed, create_graph=c["second"], allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, req)]
    lines += [fmt_tensor("seed", shown(seed)), fmt_tensor("out", shown(out))]
    lines += [fmt_tensor("grad", shown(g)) for g in grads]
    if c["second"]:
        # h = sum_k <r_k, grad_k> for cotangents r_k shaped like the inputs;
        # grad2_j = dh / d in_j (zero where no grad depends on in_j)
        rrng = np.random.RandomState(zlib.crc32(("seed2:" + c["label"]).encode()))
        rs = [torch.tensor(gridded(U(rrng, tuple(x.shape), -1, 1)), dtype=x.dtype) for x in req]
        h = sum((r * g).sum() for r, g in zip(rs, grads))
        g2 = torch.autograd.grad(h, req, allow_unused=True) if h.requires_grad else [None] * len(req)
        g2 = [torch.zeros_like(x) if g is None else g.clone() for g, x in zip(g2, req)]
        lines += [fmt_tensor("seed2", shown(r)) for r in rs]
        lines += [fmt_tensor("grad2", shown(g)) for g in g2]
    return head + lines + ["end"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("-o", "--output", default=os.path.join(root, "tests", "fixtures", "ops.txt"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    labels = [c["label"] for c in CASES]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        sys.exit(f"duplicate case labels: {sorted(dup)}")
    blocks = [run_case(c, d) for c in CASES for d in ("f32", "f64")]
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write("# Reference values for tests/test_ops_values.c, computed by PyTorch.\n"
                "# Generated by tools/gen_fixtures.py (see its docstring for the format);\n"
                "# do not edit. Regenerate: /usr/bin/python3 tools/gen_fixtures.py\n")
        f.write("fixture ops 2\n")
        f.write(f"torch {torch.__version__}\n")
        f.write(f"numpy {np.__version__}\n")
        f.write(f"cases {len(blocks)}\n")
        for b in blocks:
            f.write("\n".join(b) + "\n")
    print(f"wrote {len(blocks)} cases to {args.output}")


if __name__ == "__main__":
    main()
