/* update.h: the optimizers' update sweeps (private to nn): one optimizer
 * step over n elements of plain arrays. Knows nothing of tensors, slots or
 * threads; nn/optim.c cuts the parameters into ranges and calls it. */
#ifndef NN_UPDATE_H
#define NN_UPDATE_H

#include "nn.h"

/* What an update reads besides c and its arrays: NAdam's momentum_decay
 * and the parameter's mu_product after this step's factor (a value of the
 * parameter's dtype; nn/optim.c keeps it, once per step, not per range);
 * the settings of nn_opt_config_ext (Adadelta, ASGD and Rprop read them:
 * xc not NULL then); ASGD's eta and mu before this step (float values,
 * nn/optim.c updates them once per step). */
typedef struct nn_update_aux {
  double momentum_decay, mu_product;
  const nn_opt_config_ext *xc;
  double eta, mu;
} nn_update_aux;

/* Updates p[0..n) in place from the gradient g (never written) and the
 * optimizer's state arrays s0..s2 (those its kind keeps, else NULL; in
 * the order of nn/optim.c's state_kinds), for step t (1-based), in dtype
 * dt (AD_F32 or AD_F64); x is read by NAdam, Adadelta, ASGD and Rprop
 * only (may be NULL for the others). Rprop's step t 1 first fills its
 * step sizes with lr (PyTorch's state made at the first step). Bit-identical results on every code
 * path. */
void nn_update(const nn_opt_config *c, const nn_update_aux *x, ad_dtype dt, int64_t t, int64_t n,
               void *p, const void *g, void *s0, void *s1, void *s2);

/* The compiled versions of those loops; nn_update runs the best one this
 * CPU has (AVX-512 for float, AVX2 and FMA, or the baseline build). */
typedef enum nn_update_path {
  NN_UPDATE_BEST,
  NN_UPDATE_BASELINE,
  NN_UPDATE_AVX2,
  NN_UPDATE_AVX512
} nn_update_path;

/* nn_update on the given path (for tests, which compare the paths' bits).
 * Returns false, changing nothing, when this build or CPU lacks it. */
bool nn_update_on(nn_update_path path, const nn_opt_config *c, const nn_update_aux *x, ad_dtype dt,
                  int64_t t, int64_t n, void *p, const void *g, void *s0, void *s1, void *s2);

/* The sum of the squares of x[0..n) (dtype dt: AD_F32 or AD_F64), in
 * double: 32 partial sums (element k goes to partial k mod 32), each a
 * product then an addition in double (a float's square is exact there),
 * added at the end in a fixed tree, so every path gives the same bits.
 * The gradient norms of clipping and of the training history. */
double nn_sum_squares(ad_dtype dt, int64_t n, const void *x);

/* nn_sum_squares on the given path, into *out (for tests, which compare
 * the paths' bits). Returns false, writing nothing, when this build or
 * CPU lacks it. */
bool nn_sum_squares_on(nn_update_path path, ad_dtype dt, int64_t n, const void *x, double *out);

/* Clipping by value (nn_clip_grad_value, the optimizers' clip_value):
 * nn_clip_outside tells whether an element of x[0..n) lies outside
 * [-clip, clip] (NaN does not: it stays), so that the caller announces a
 * write only where one happens; nn_clip_clamp clamps every element into
 * [-clip, clip], NaN kept. clip >= 0, converted to x's dtype. Loops
 * compiled per path (vectorized on each); a minimum and a maximum are
 * exact, so every path gives the same values. */
bool nn_clip_outside(ad_dtype dt, int64_t n, const void *x, double clip);
void nn_clip_clamp(ad_dtype dt, int64_t n, void *x, double clip);

/* nn_clip_outside and nn_clip_clamp on the given path (for tests, which
 * compare the paths). Return false, doing nothing, when this build or CPU
 * lacks it; *out takes nn_clip_outside's answer. */
bool nn_clip_outside_on(nn_update_path path, ad_dtype dt, int64_t n, const void *x, double clip,
                        bool *out);
bool nn_clip_clamp_on(nn_update_path path, ad_dtype dt, int64_t n, void *x, double clip);

#endif
