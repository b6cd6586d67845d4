/* update.c: the optimizers' update loops (PyTorch's rules) over plain
 * arrays, compiled twice: for the baseline and for AVX2, picked at run
 * time. */
#include "update.h"
#include "divc.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* One set of loops per dtype, generated from the same body; arithmetic in
 * the parameter's dtype, coefficients computed in double and rounded once
 * to it (so 1 - beta2 is the double difference rounded, not 1 minus the
 * rounded beta2: in float those differ by 1.3e-5 relative). t is the
 * 1-based step of the parameter. g is the gradient plus the L2 term; the
 * stored gradient is never changed (zeroing it is the caller's one
 * explicit call). Options are tested outside the loops and the arrays are
 * restrict, so the compiler can vectorize each loop.
 *
 * Each element follows the operations of torch.optim's single-tensor step
 * on the CPU, in their order and rounding: x.add_(y, alpha=a) is
 * fma(a, y, x), x.addcmul_(y, z, value=a) is fma(a * y, z, x),
 * x.addcdiv_(y, z, value=a) is x + (a * y) / z, and x.mul_(a) a rounded
 * product (PyTorch's AVX2 kernels, built with FMA contraction, compute
 * these so). A float parameter then stays within about 1e-7 relative of
 * PyTorch's over a run, also where an update cancels most of it
 * (tests/test_nn_optim.c, f32_steps_match_torch_f32); with separate
 * rounding instead, such a parameter drifted by 3.5e-6 in 5 steps of SGD
 * with momentum.
 * FMA is an explicit call, never a contraction left to the compiler, so
 * every code path computes the same bits.
 *
 * First moments and momentum buffers (numerators of an update) are stored
 * as 0 once their magnitude falls below TMIN, the smallest normal number of
 * the type. A weight whose gradient is exactly 0 step after step (a ReLU
 * unit that never fires) would otherwise keep a subnormal moment for ever:
 * 0.9 times the smallest subnormal rounds back to it, so m = 0.9 m never
 * reaches 0, and every later step computes with subnormals, on the CPU's
 * slow path (docs/performance.md measures how often and how much). A
 * flushed m would
 * have moved its parameter by less than step * TMIN / eps: 1e-32 in float
 * with Adam's default eps of 1e-8, below the last bit of any parameter
 * larger than about 1e-25. Second moments (denominators) are never
 * flushed: with eps = 0 a 0 there would divide by zero. */
/* g + wd p, the L2 term, added only when wd != 0 as torch.optim does (its
 * `if weight_decay != 0`): with 0 wd, an infinite parameter would
 * otherwise make 0 * inf = NaN of its gradient, and so of its state. */
#define NN_L2(l2, p, g, FMA) ((l2) != 0 ? FMA(l2, p, g) : (g))

#define NN_FLUSH(x, TMIN) ((x) < (TMIN) && (x) > -(TMIN) ? 0 : (x))

/* dst = torch.maximum(a, b) / amax: NaN when either is (a and b are
 * plain variables or elements). Two selects, not `a != a || a > b ? a :
 * b`: GCC keeps the || as control flow, and a loop with it is not
 * vectorized (Adamax and amsgrad on the AVX2 path ran one element at a
 * time, branching on each). */
#define NN_MAXNAN_SET(T, dst, a, b)                                                                \
  do {                                                                                             \
    T mx_ = (a) > (b) ? (a) : (b);                                                                 \
    (dst) = (a) != (a) ? (a) : mx_;                                                                \
  } while (0)

/* The gradient as the loops read it: negated for maximize. NEG is a
 * literal 0 or 1 of each instantiation, so the default loops are those of
 * a build without maximize (no sign test or multiply per element). */
#define NN_G(NEG, x) ((NEG) ? -(x) : (x))

/* RMSprop's loop for one set of options, CENTERED and MOMENTUM literal 0
 * or 1: one loop per set, not a test of m and b per element, which kept
 * the compiler from vectorizing it (GCC 12 at -O2 made the AVX-512 build
 * a masked loop 50 times slower per element than Adam's, bench/mlp
 * --optim rmsprop). The same operations in the same order either way. */
#define NN_RMSPROP_LOOP(T, TMIN, SQRT, FMA, NEG, CENTERED, MOMENTUM)                               \
  for (int64_t i = 0; i < n; i++) {                                                                \
    T g = NN_L2(l2, p[i], NN_G(NEG, gr[i]), FMA);                                                  \
    v[i] = FMA(a1 * g, g, a * v[i]);                                                               \
    T var = v[i];                                                                                  \
    if (CENTERED) {                                                                                \
      m[i] = NN_FLUSH(FMA(a1, g, a * m[i]), TMIN);                                                 \
      var = FMA(-m[i], m[i], var);                                                                 \
    }                                                                                              \
    T avg = SQRT(var) + eps;                                                                       \
    if (MOMENTUM) {                                                                                \
      b[i] = NN_FLUSH(mom * b[i] + g / avg, TMIN);                                                 \
      p[i] = FMA(nlr, b[i], p[i]);                                                                 \
    } else {                                                                                       \
      p[i] += nlr * g / avg;                                                                       \
    }                                                                                              \
  }

/* The loops of the kinds with maximize (but Adam's, below), once per
 * sign: NEG 0 and MX empty, NEG 1 and MX _max. */
#define DEFINE_SIGNED(T, TMIN, SQRT, FMA, SFX, ATTR, NEG, MX)                                      \
  ATTR static void sgd##MX##_##T##SFX(const nn_opt_config *c, int64_t n, T *restrict p,            \
                                      const T *restrict gr, T *restrict b, int64_t t) {            \
    T nlr = (T)-c->lr, l2 = (T)c->weight_decay, mom = (T)c->momentum;                              \
    T damp = (T)(1.0 - c->dampening);                                                              \
    if (!b) {                                                                                      \
      for (int64_t i = 0; i < n; i++)                                                              \
        p[i] = FMA(nlr, NN_L2(l2, p[i], NN_G(NEG, gr[i]), FMA), p[i]);                             \
    } else if (t == 1) { /* the buffer starts as the parameter's first gradient */                 \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T g = NN_L2(l2, p[i], NN_G(NEG, gr[i]), FMA);                                              \
        b[i] = g;                                                                                  \
        p[i] = FMA(nlr, c->nesterov ? FMA(mom, g, g) : g, p[i]);                                   \
      }                                                                                            \
    } else if (c->nesterov) {                                                                      \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T g = NN_L2(l2, p[i], NN_G(NEG, gr[i]), FMA);                                              \
        b[i] = NN_FLUSH(FMA(damp, g, mom * b[i]), TMIN);                                           \
        p[i] = FMA(nlr, FMA(mom, b[i], g), p[i]);                                                  \
      }                                                                                            \
    } else {                                                                                       \
      for (int64_t i = 0; i < n; i++) {                                                            \
        b[i] = NN_FLUSH(FMA(damp, NN_L2(l2, p[i], NN_G(NEG, gr[i]), FMA), mom * b[i]), TMIN);      \
        p[i] = FMA(nlr, b[i], p[i]);                                                               \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  ATTR static void adagrad##MX##_##T##SFX(const nn_opt_config *c, int64_t n, T *restrict p,        \
                                          const T *restrict gr, T *restrict s, int64_t t) {        \
    T nclr = (T)(-c->lr / (1.0 + (double)(t - 1) * c->lr_decay));                                  \
    T l2 = (T)c->weight_decay, eps = (T)c->eps;                                                    \
    for (int64_t i = 0; i < n; i++) {                                                              \
      T g = NN_L2(l2, p[i], NN_G(NEG, gr[i]), FMA);                                                \
      s[i] = FMA(g, g, s[i]);                                                                      \
      p[i] += nclr * g / (SQRT(s[i]) + eps);                                                       \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  ATTR static void rmsprop##MX##_##T##SFX(const nn_opt_config *c, int64_t n, T *restrict p,        \
                                          const T *restrict gr, T *restrict v, T *restrict m,      \
                                          T *restrict b) {                                         \
    T nlr = (T)-c->lr, l2 = (T)c->weight_decay, eps = (T)c->eps, mom = (T)c->momentum;             \
    T a = (T)c->alpha, a1 = (T)(1.0 - c->alpha);                                                   \
    if (!m && !b)                                                                                  \
      NN_RMSPROP_LOOP(T, TMIN, SQRT, FMA, NEG, 0, 0)                                               \
    else if (!b)                                                                                   \
      NN_RMSPROP_LOOP(T, TMIN, SQRT, FMA, NEG, 1, 0)                                               \
    else if (!m)                                                                                   \
      NN_RMSPROP_LOOP(T, TMIN, SQRT, FMA, NEG, 0, 1)                                               \
    else                                                                                           \
      NN_RMSPROP_LOOP(T, TMIN, SQRT, FMA, NEG, 1, 1)                                               \
  }                                                                                                \
                                                                                                   \
  /* exp_avg.mul_(b1).add_(g, alpha=1-b1); exp_inf = amax(exp_inf * b2,                            \
   * |g| + eps); p.addcdiv_(exp_avg, exp_inf, value=-lr / (1 - b1^t)) */                           \
  ATTR static void adamax##MX##_##T##SFX(const nn_opt_config *c, int64_t n, T *restrict p,         \
                                         const T *restrict gr, T *restrict m, T *restrict u,       \
                                         int64_t t) {                                              \
    T b1 = (T)c->beta1, b2 = (T)c->beta2, eps = (T)c->eps, a1 = (T)(1.0 - c->beta1);               \
    T nclr = (T)(-c->lr / (1.0 - pow(c->beta1, (double)t)));                                       \
    T l2 = (T)c->weight_decay;                                                                     \
    for (int64_t i = 0; i < n; i++) {                                                              \
      T g = NN_L2(l2, p[i], NN_G(NEG, gr[i]), FMA);                                                \
      m[i] = NN_FLUSH(FMA(a1, g, b1 * m[i]), TMIN);                                                \
      T d = b2 * u[i], e = (g < 0 ? -g : g) + eps;                                                 \
      NN_MAXNAN_SET(T, u[i], d, e);                                                                \
      p[i] += nclr * m[i] / u[i];                                                                  \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  /* torch.optim.Adadelta: square_avg.mul_(rho).addcmul_(g, g, value=1-rho);                       \
   * std = (square_avg + eps).sqrt_(); delta = (acc_delta + eps).sqrt_()                           \
   * .div_(std).mul_(g); acc_delta likewise from delta; p.add_(delta,                              \
   * alpha=-lr) */                                                                                 \
  ATTR static void adadelta##MX##_##T##SFX(const nn_opt_config *c, const nn_update_aux *x,         \
                                           int64_t n, T *restrict p, const T *restrict gr,         \
                                           T *restrict v, T *restrict u) {                         \
    T rho = (T)x->xc->rho, a1 = (T)(1.0 - x->xc->rho), eps = (T)c->eps, nlr = (T)-c->lr;           \
    T l2 = (T)c->weight_decay;                                                                     \
    for (int64_t i = 0; i < n; i++) {                                                              \
      T g = NN_L2(l2, p[i], NN_G(NEG, gr[i]), FMA);                                                \
      v[i] = FMA(a1 * g, g, v[i] * rho);                                                           \
      T d = SQRT(u[i] + eps) / SQRT(v[i] + eps) * g;                                               \
      u[i] = FMA(a1 * d, d, u[i] * rho);                                                           \
      p[i] = FMA(nlr, d, p[i]);                                                                    \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  /* torch.optim.ASGD: p.mul_(1 - lambd eta); p.add_(g, alpha=-eta);                               \
   * ax.add_(p.sub(ax).mul(mu)) if mu != 1, else ax.copy_(p); eta and mu                           \
   * (float values) before this step's update of them */                                           \
  ATTR static void asgd##MX##_##T##SFX(const nn_opt_config *c, const nn_update_aux *x, int64_t n,  \
                                       T *restrict p, const T *restrict gr, T *restrict ax) {      \
    T decay = (T)(1.0 - x->xc->lambd * x->eta), neta = (T)-x->eta, mu = (T)x->mu;                  \
    T l2 = (T)c->weight_decay;                                                                     \
    if (x->mu != 1) /* a loop each: a test per element kept them from vectorizing */               \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T g = NN_L2(l2, p[i], NN_G(NEG, gr[i]), FMA);                                              \
        p[i] = FMA(neta, g, p[i] * decay);                                                         \
        ax[i] = ax[i] + (p[i] - ax[i]) * mu;                                                       \
      }                                                                                            \
    else                                                                                           \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T g = NN_L2(l2, p[i], NN_G(NEG, gr[i]), FMA);                                              \
        p[i] = FMA(neta, g, p[i] * decay);                                                         \
        ax[i] = p[i];                                                                              \
      }                                                                                            \
  }                                                                                                \
                                                                                                   \
  /* torch.optim.Rprop: sign = (g prev).sign() mapped to etaplus, etaminus                         \
   * or 1 (torch's sign of NaN is 0); step_size.mul_(sign).clamp_(min, max)                        \
   * (NaN stays); g = 0 where sign == etaminus; p.addcmul_(g.sign(),                               \
   * step_size, value=-1); prev = g. Step 1 first fills the step sizes with                        \
   * lr, as PyTorch's state made then. */                                                          \
  ATTR static void rprop##MX##_##T##SFX(const nn_opt_config *c, const nn_update_aux *x, int64_t n, \
                                        T *restrict p, const T *restrict gr, T *restrict prev,     \
                                        T *restrict ss, int64_t t) {                               \
    T em = (T)x->xc->etaminus, ep = (T)x->xc->etaplus;                                             \
    T lo = (T)x->xc->step_size_min, hi = (T)x->xc->step_size_max;                                  \
    if (t == 1)                                                                                    \
      for (int64_t i = 0; i < n; i++) ss[i] = (T)c->lr;                                            \
    /* each choice one select of two values (nested choices and the sign                           \
     * as (g > 0) - (g < 0) kept GCC from vectorizing the loop) */                                 \
    for (int64_t i = 0; i < n; i++) {                                                              \
      T g = NN_G(NEG, gr[i]), q = g * prev[i];                                                     \
      T f = q < 0 ? em : (T)1;                                                                     \
      f = q > 0 ? ep : f;                                                                          \
      T s = ss[i] * f;                                                                             \
      s = s < lo ? lo : s;                                                                         \
      s = hi < s ? hi : s;                                                                         \
      ss[i] = s;                                                                                   \
      g = f == em ? (T)0 : g;                                                                      \
      T sg = g > 0 ? (T)1 : (T)0;                                                                  \
      sg = g < 0 ? (T)-1 : sg;                                                                     \
      p[i] = FMA(-sg, s, p[i]);                                                                    \
      prev[i] = g;                                                                                 \
    }                                                                                              \
  }

#define DEFINE_UPDATE(T, TMIN, SQRT, FMA, SFX, ATTR)                                               \
  DEFINE_SIGNED(T, TMIN, SQRT, FMA, SFX, ATTR, 0, )                                                \
  DEFINE_SIGNED(T, TMIN, SQRT, FMA, SFX, ATTR, 1, _max)                                            \
                                                                                                   \
  /* amsgrad and maximize in a loop of their own, so that the default                              \
   * loop is as it was (no per-element test, no extra array) */                                    \
  ATTR static void adam_##T##SFX(const nn_opt_config *c, int64_t n, T *restrict p,                 \
                                 const T *restrict gr, T *restrict m, T *restrict v,               \
                                 T *restrict vmax, int64_t t) {                                    \
    T b1 = (T)c->beta1, b2 = (T)c->beta2, eps = (T)c->eps;                                         \
    T a1 = (T)(1.0 - c->beta1), a2 = (T)(1.0 - c->beta2);                                          \
    T nstep = (T)(-c->lr / (1.0 - pow(c->beta1, (double)t)));                                      \
    T bc2 = (T)sqrt(1.0 - pow(c->beta2, (double)t));                                               \
    double ibc2 = 1.0 / (double)bc2;                                                               \
    T l2 = (T)c->weight_decay;                                                                     \
    if (c->kind == NN_OPT_ADAMW) { /* decoupled decay, then no L2 term */                          \
      T decay = (T)(1.0 - c->lr * c->weight_decay);                                                \
      for (int64_t i = 0; i < n; i++) p[i] *= decay;                                               \
      l2 = 0;                                                                                      \
    }                                                                                              \
    if (!vmax && !c->maximize) {                                                                   \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T g = NN_L2(l2, p[i], gr[i], FMA);                                                         \
        m[i] = NN_FLUSH(FMA(a1, g, b1 * m[i]), TMIN);                                              \
        v[i] = FMA(a2 * g, g, b2 * v[i]);                                                          \
        p[i] += nstep * m[i] / (NN_DIVC_##T(SQRT(v[i]), bc2, ibc2) + eps);                         \
      }                                                                                            \
    } else if (!vmax) { /* maximize: -1 g is -g, exactly */                                        \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T g = NN_L2(l2, p[i], -gr[i], FMA);                                                        \
        m[i] = NN_FLUSH(FMA(a1, g, b1 * m[i]), TMIN);                                              \
        v[i] = FMA(a2 * g, g, b2 * v[i]);                                                          \
        p[i] += nstep * m[i] / (NN_DIVC_##T(SQRT(v[i]), bc2, ibc2) + eps);                         \
      }                                                                                            \
    } else { /* amsgrad: torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq) */          \
      T gs = c->maximize ? (T)-1 : (T)1;                                                           \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T g = NN_L2(l2, p[i], gs * gr[i], FMA);                                                    \
        m[i] = NN_FLUSH(FMA(a1, g, b1 * m[i]), TMIN);                                              \
        v[i] = FMA(a2 * g, g, b2 * v[i]);                                                          \
        NN_MAXNAN_SET(T, vmax[i], vmax[i], v[i]);                                                  \
        p[i] += nstep * m[i] / (NN_DIVC_##T(SQRT(vmax[i]), bc2, ibc2) + eps);                      \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  /* torch.optim.NAdam's single-tensor step; mp is mu_product after this                           \
   * step's factor, a value of T (PyTorch's 0-d state tensor), mu_product_next                     \
   * its product with mu and mu_next in T, as torch's tensor arithmetic;                           \
   * the step sizes in double from them, as PyTorch's .item() */                                   \
  ATTR static void nadam_##T##SFX(const nn_opt_config *c, const nn_update_aux *x, int64_t n,       \
                                  T *restrict p, const T *restrict gr, T *restrict m,              \
                                  T *restrict v, int64_t t) {                                      \
    T b1 = (T)c->beta1, b2 = (T)c->beta2, eps = (T)c->eps;                                         \
    T a1 = (T)(1.0 - c->beta1), a2 = (T)(1.0 - c->beta2);                                          \
    T bc2 = (T)(1.0 - pow(c->beta2, (double)t));                                                   \
    double mu = c->beta1 * (1.0 - 0.5 * pow(0.96, (double)t * x->momentum_decay));                 \
    double mu_next = c->beta1 * (1.0 - 0.5 * pow(0.96, (double)(t + 1) * x->momentum_decay));      \
    T mp = (T)x->mu_product, mpn = mp * (T)mu * (T)mu_next;                                        \
    T cg = (T)(-c->lr * (1.0 - mu) / (1.0 - (double)mp));                                          \
    T cm = (T)(-c->lr * mu_next / (1.0 - (double)mpn));                                            \
    T l2 = (T)c->weight_decay;                                                                     \
    for (int64_t i = 0; i < n; i++) {                                                              \
      T g = NN_L2(l2, p[i], gr[i], FMA);                                                           \
      m[i] = NN_FLUSH(FMA(a1, g, b1 * m[i]), TMIN);                                                \
      v[i] = FMA(a2 * g, g, b2 * v[i]);                                                            \
      T d = SQRT(v[i] / bc2) + eps;                                                                \
      p[i] += cg * g / d;                                                                          \
      p[i] += cm * m[i] / d;                                                                       \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  /* torch.optim.RAdam's single-tensor step: m' = exp_avg / bc1; rectified:                        \
   * p.add_(m' * lr * (sqrt(bc2) / (sqrt(v) + eps)) * rect, alpha=-1), where                       \
   * a Python number over a tensor is its reciprocal times the number                              \
   * (Tensor.__rdiv__); else p.add_(m' * lr, alpha=-1) */                                          \
  ATTR static void radam_##T##SFX(const nn_opt_config *c, int64_t n, T *restrict p,                \
                                  const T *restrict gr, T *restrict m, T *restrict v, int64_t t) { \
    T b1 = (T)c->beta1, b2 = (T)c->beta2, eps = (T)c->eps;                                         \
    T a1 = (T)(1.0 - c->beta1), a2 = (T)(1.0 - c->beta2);                                          \
    double bc1 = 1.0 - pow(c->beta1, (double)t), bc2 = 1.0 - pow(c->beta2, (double)t);             \
    double rho_inf = 2 / (1 - c->beta2) - 1;                                                       \
    double rho_t = rho_inf - 2 * (double)t * pow(c->beta2, (double)t) / bc2;                       \
    T tbc1 = (T)bc1, lr = (T)c->lr, l2 = (T)c->weight_decay;                                       \
    if (rho_t > 5) {                                                                               \
      T rect =                                                                                     \
          (T)sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t));  \
      T sbc2 = (T)sqrt(bc2);                                                                       \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T g = NN_L2(l2, p[i], gr[i], FMA);                                                         \
        m[i] = NN_FLUSH(FMA(a1, g, b1 * m[i]), TMIN);                                              \
        v[i] = FMA(a2 * g, g, b2 * v[i]);                                                          \
        T alr = (T)1 / (SQRT(v[i]) + eps) * sbc2;                                                  \
        p[i] -= m[i] / tbc1 * lr * alr * rect;                                                     \
      }                                                                                            \
    } else {                                                                                       \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T g = NN_L2(l2, p[i], gr[i], FMA);                                                         \
        m[i] = NN_FLUSH(FMA(a1, g, b1 * m[i]), TMIN);                                              \
        v[i] = FMA(a2 * g, g, b2 * v[i]);                                                          \
        p[i] -= m[i] / tbc1 * lr;                                                                  \
      }                                                                                            \
    }                                                                                              \
  }                                                                                                \
                                                                                                   \
  ATTR static void update_##T##SFX(const nn_opt_config *c, const nn_update_aux *x, int64_t t,      \
                                   int64_t n, T *p, const T *g, T *s0, T *s1, T *s2) {             \
    bool mx = c->maximize;                                                                         \
    switch (c->kind) {                                                                             \
    case NN_OPT_SGD:                                                                               \
      (mx ? sgd_max_##T##SFX : sgd_##T##SFX)(c, n, p, g, s0, t);                                   \
      break;                                                                                       \
    case NN_OPT_ADAGRAD:                                                                           \
      (mx ? adagrad_max_##T##SFX : adagrad_##T##SFX)(c, n, p, g, s0, t);                           \
      break;                                                                                       \
    case NN_OPT_RMSPROP:                                                                           \
      (mx ? rmsprop_max_##T##SFX : rmsprop_##T##SFX)(c, n, p, g, s0, s1, s2);                      \
      break;                                                                                       \
    case NN_OPT_ADAM:                                                                              \
    case NN_OPT_ADAMW:                                                                             \
      adam_##T##SFX(c, n, p, g, s0, s1, c->amsgrad ? s2 : NULL, t);                                \
      break;                                                                                       \
    case NN_OPT_ADAMAX:                                                                            \
      (mx ? adamax_max_##T##SFX : adamax_##T##SFX)(c, n, p, g, s0, s1, t);                         \
      break;                                                                                       \
    case NN_OPT_NADAM:                                                                             \
      nadam_##T##SFX(c, x, n, p, g, s0, s1, t);                                                    \
      break;                                                                                       \
    case NN_OPT_RADAM:                                                                             \
      radam_##T##SFX(c, n, p, g, s0, s1, t);                                                       \
      break;                                                                                       \
    case NN_OPT_ADADELTA:                                                                          \
      (mx ? adadelta_max_##T##SFX : adadelta_##T##SFX)(c, x, n, p, g, s0, s1);                     \
      break;                                                                                       \
    case NN_OPT_ASGD:                                                                              \
      (mx ? asgd_max_##T##SFX : asgd_##T##SFX)(c, x, n, p, g, s0);                                 \
      break;                                                                                       \
    case NN_OPT_RPROP:                                                                             \
      (mx ? rprop_max_##T##SFX : rprop_##T##SFX)(c, x, n, p, g, s0, s1, t);                        \
      break;                                                                                       \
    }                                                                                              \
  }

DEFINE_UPDATE(float, FLT_MIN, sqrtf, fmaf, , )
DEFINE_UPDATE(double, DBL_MIN, sqrt, fma, , )

/* The same loops compiled for AVX2 and FMA, picked at run time: twice the
 * lanes of the baseline build's SSE2, square roots and divisions included,
 * and fma in one instruction (the baseline build calls the C library's
 * fma, which is exact but slower). Without FMA contraction (ISO C mode)
 * each element is computed by the same correctly rounded operations, so
 * both versions give bit-identical results. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define NN_OPT_AVX2    1
#define NN_AVX2_ATTR   __attribute__((target("avx2,fma")))
#define NN_AVX512_ATTR __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma")))
DEFINE_UPDATE(float, FLT_MIN, sqrtf, fmaf, _avx2, NN_AVX2_ATTR)
DEFINE_UPDATE(double, DBL_MIN, sqrt, fma, _avx2, NN_AVX2_ATTR)
/* And the float loops for AVX-512: twice the lanes again for everything
 * but the divider (a square root or a division costs the same per element
 * at either width), and in float the rest of the instructions bound these
 * loops more than the divider does; in double the divider bounds them at
 * either width, so double keeps the AVX2 loops. Same operations, same
 * bits. */
#define NN_OPT_AVX512 1
DEFINE_UPDATE(float, FLT_MIN, sqrtf, fmaf, _avx512, NN_AVX512_ATTR)
#endif

/* nn_sum_squares' loops: GCC's vector extensions, so each path runs the
 * same lane arithmetic (four vectors of 8 doubles are the 32 partials;
 * ZMM registers on AVX-512, pairs of YMM on AVX2, four XMM on the
 * baseline). A plain array of partials stayed in memory, each addition
 * waiting on a store and a load. */
typedef float nn_v8f __attribute__((vector_size(32)));
typedef double nn_v8d __attribute__((vector_size(64)));

/* Element k + 8 j + i of the block at k, as a double, into lane i of a_j. */
#define SUMSQ_F32(a, j)                                                                            \
  do {                                                                                             \
    nn_v8f v;                                                                                      \
    memcpy(&v, x + k + 8 * (j), sizeof v);                                                         \
    nn_v8d d = __builtin_convertvector(v, nn_v8d);                                                 \
    a += d * d;                                                                                    \
  } while (0)
#define SUMSQ_F64(a, j)                                                                            \
  do {                                                                                             \
    nn_v8d d;                                                                                      \
    memcpy(&d, x + k + 8 * (j), sizeof d);                                                         \
    a += d * d;                                                                                    \
  } while (0)

#define DEFINE_SUMSQ(T, SFX, ATTR, STEP, FX, DX)                                                   \
  ATTR static double sumsq_##T##SFX(int64_t n, const T *x) {                                       \
    nn_v8d a0 = {0}, a1 = a0, a2 = a0, a3 = a0;                                                    \
    int64_t k = 0;                                                                                 \
    for (; k + 32 <= n; k += 32) {                                                                 \
      STEP(a0, 0);                                                                                 \
      STEP(a1, 1);                                                                                 \
      STEP(a2, 2);                                                                                 \
      STEP(a3, 3);                                                                                 \
    }                                                                                              \
    nn_v8d a[4] = {a0, a1, a2, a3};                                                                \
    return sumsq_finish(a, k, n, FX, DX);                                                          \
  }

/* The tail x[k..n) (fewer than 32 elements, of f or of d) into its
 * partials, then the 32 partials added in a fixed tree. */
static double sumsq_finish(const nn_v8d *a, int64_t k, int64_t n, const float *f, const double *d) {
  double p[32];
  memcpy(p, a, sizeof p);
  for (int j = 0; k < n; k++, j++) {
    double v = f ? (double)f[k] : d[k];
    p[j] += v * v;
  }
  for (int w = 16; w >= 1; w /= 2)
    for (int j = 0; j < w; j++) p[j] += p[j + w];
  return p[0];
}

DEFINE_SUMSQ(float, , , SUMSQ_F32, x, NULL)
DEFINE_SUMSQ(double, , , SUMSQ_F64, NULL, x)
#ifdef NN_OPT_AVX2
DEFINE_SUMSQ(float, _avx2, NN_AVX2_ATTR, SUMSQ_F32, x, NULL)
DEFINE_SUMSQ(double, _avx2, NN_AVX2_ATTR, SUMSQ_F64, NULL, x)
DEFINE_SUMSQ(float, _avx512, NN_AVX512_ATTR, SUMSQ_F32, x, NULL)
DEFINE_SUMSQ(double, _avx512, NN_AVX512_ATTR, SUMSQ_F64, NULL, x)
#endif

/* nn_clip_outside's and nn_clip_clamp's loops, plain C compiled for each
 * path. The test has no early exit inside a block of CLIP_BLOCK elements
 * (so it vectorizes: its flags as wide as the elements) and ends at the
 * first block with an element outside. The clamp is two selects that keep
 * NaN (a comparison with NaN is false), which compile to a minimum and a
 * maximum. */
#define CLIP_BLOCK 1024
#define DEFINE_CLIP(T, FLAG, SFX, ATTR)                                                            \
  ATTR static bool outside_##T##SFX(int64_t n, const T *x, T c) {                                  \
    for (int64_t k0 = 0; k0 < n; k0 += CLIP_BLOCK) {                                               \
      int64_t k1 = n - k0 < CLIP_BLOCK ? n : k0 + CLIP_BLOCK;                                      \
      FLAG any = 0;                                                                                \
      for (int64_t k = k0; k < k1; k++) any |= (FLAG)((x[k] > c) | (x[k] < -c));                   \
      if (any) return true;                                                                        \
    }                                                                                              \
    return false;                                                                                  \
  }                                                                                                \
  ATTR static void clamp_##T##SFX(int64_t n, T *x, T c) {                                          \
    for (int64_t k = 0; k < n; k++) {                                                              \
      T v = x[k] > c ? c : x[k];                                                                   \
      x[k] = v < -c ? -c : v;                                                                      \
    }                                                                                              \
  }

DEFINE_CLIP(float, int32_t, , )
DEFINE_CLIP(double, int64_t, , )
#ifdef NN_OPT_AVX2
DEFINE_CLIP(float, int32_t, _avx2, NN_AVX2_ATTR)
DEFINE_CLIP(double, int64_t, _avx2, NN_AVX2_ATTR)
DEFINE_CLIP(float, int32_t, _avx512, NN_AVX512_ATTR)
DEFINE_CLIP(double, int64_t, _avx512, NN_AVX512_ATTR)
#endif

static bool path_available(nn_update_path path) {
  switch (path) {
  case NN_UPDATE_BASELINE:
    return true;
  case NN_UPDATE_AVX2:
#ifdef NN_OPT_AVX2
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
  case NN_UPDATE_AVX512:
#ifdef NN_OPT_AVX512
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq") && path_available(NN_UPDATE_AVX2);
#else
    return false;
#endif
  default:
    return false;
  }
}

/* NN_UPDATE_BEST as the best path this build and CPU have; others as
 * they are. */
static nn_update_path resolve(nn_update_path path) {
  if (path != NN_UPDATE_BEST) return path;
  return path_available(NN_UPDATE_AVX512) ? NN_UPDATE_AVX512
         : path_available(NN_UPDATE_AVX2) ? NN_UPDATE_AVX2
                                          : NN_UPDATE_BASELINE;
}

bool nn_update_on(nn_update_path path, const nn_opt_config *c, const nn_update_aux *x, ad_dtype dt,
                  int64_t t, int64_t n, void *p, const void *g, void *s0, void *s1, void *s2) {
  path = resolve(path);
  if (!path_available(path)) return false;
#ifdef NN_OPT_AVX512
  if (path == NN_UPDATE_AVX512 && dt == AD_F32) {
    update_float_avx512(c, x, t, n, p, g, s0, s1, s2);
    return true;
  }
#endif
#ifdef NN_OPT_AVX2
  if (path >= NN_UPDATE_AVX2) { /* AVX-512 in double: the AVX2 loops */
    if (dt == AD_F32)
      update_float_avx2(c, x, t, n, p, g, s0, s1, s2);
    else
      update_double_avx2(c, x, t, n, p, g, s0, s1, s2);
    return true;
  }
#endif
  if (dt == AD_F32)
    update_float(c, x, t, n, p, g, s0, s1, s2);
  else
    update_double(c, x, t, n, p, g, s0, s1, s2);
  return true;
}

void nn_update(const nn_opt_config *c, const nn_update_aux *x, ad_dtype dt, int64_t t, int64_t n,
               void *p, const void *g, void *s0, void *s1, void *s2) {
  nn_update_on(NN_UPDATE_BEST, c, x, dt, t, n, p, g, s0, s1, s2);
}

/* Runs S(SFX) with the suffix of a resolved path's loops: _avx512, _avx2,
 * or none (the baseline). */
#ifdef NN_OPT_AVX2
#define ON_PATH(path, S)                                                                           \
  do {                                                                                             \
    if ((path) == NN_UPDATE_AVX512)                                                                \
      S(_avx512);                                                                                  \
    else if ((path) == NN_UPDATE_AVX2)                                                             \
      S(_avx2);                                                                                    \
    else                                                                                           \
      S();                                                                                         \
  } while (0)
#else
#define ON_PATH(path, S) S()
#endif

bool nn_sum_squares_on(nn_update_path path, ad_dtype dt, int64_t n, const void *x, double *out) {
  path = resolve(path);
  if (!path_available(path)) return false;
  bool f = dt == AD_F32;
#define SUMSQ_ON(SFX) *out = f ? sumsq_float##SFX(n, x) : sumsq_double##SFX(n, x)
  ON_PATH(path, SUMSQ_ON);
#undef SUMSQ_ON
  return true;
}

double nn_sum_squares(ad_dtype dt, int64_t n, const void *x) {
  double s = 0;
  nn_sum_squares_on(NN_UPDATE_BEST, dt, n, x, &s);
  return s;
}

bool nn_clip_outside_on(nn_update_path path, ad_dtype dt, int64_t n, const void *x, double clip,
                        bool *out) {
  path = resolve(path);
  if (!path_available(path)) return false;
  bool f = dt == AD_F32;
  float cf = (float)clip;
#define OUTSIDE_ON(SFX) *out = f ? outside_float##SFX(n, x, cf) : outside_double##SFX(n, x, clip)
  ON_PATH(path, OUTSIDE_ON);
#undef OUTSIDE_ON
  return true;
}

bool nn_clip_outside(ad_dtype dt, int64_t n, const void *x, double clip) {
  bool out = false;
  nn_clip_outside_on(NN_UPDATE_BEST, dt, n, x, clip, &out);
  return out;
}

bool nn_clip_clamp_on(nn_update_path path, ad_dtype dt, int64_t n, void *x, double clip) {
  path = resolve(path);
  if (!path_available(path)) return false;
  bool f = dt == AD_F32;
  float cf = (float)clip;
#define CLAMP_ON(SFX) f ? clamp_float##SFX(n, x, cf) : clamp_double##SFX(n, x, clip)
  ON_PATH(path, CLAMP_ON);
#undef CLAMP_ON
  return true;
}

void nn_clip_clamp(ad_dtype dt, int64_t n, void *x, double clip) {
  nn_clip_clamp_on(NN_UPDATE_BEST, dt, n, x, clip);
}
