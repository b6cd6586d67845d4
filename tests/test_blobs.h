/* test_blobs.h: a small classification problem for the Criterion tests of
 * training: 3 Gaussian blobs in 4-d. Header-only; includes ad.h.
 *
 * test_blobs(c, n, seed, x, y): *x a new float64 [n, 4] tensor of c and *y
 * a new int32 [n] one: row i's class y[i] is uniform over {0, 1, 2}
 * (ad_rng_below) and its features N(0, 0.8^2), 2 added to the feature of
 * its class, drawn from an ad_rng seeded with seed. */
#ifndef TEST_BLOBS_H
#define TEST_BLOBS_H

#include "ad.h"

#include <stdint.h>

static inline void test_blobs(ad_ctx *c, int64_t n, uint64_t seed, ad_tensor **x, ad_tensor **y) {
  ad_rng rng;
  ad_rng_seed(&rng, seed);
  int64_t s[2] = {n, 4};
  *x = ad_zeros(c, AD_F64, 2, s);
  *y = ad_zeros(c, AD_I32, 1, s);
  for (int64_t i = 0; i < n; i++) {
    int cls = (int)ad_rng_below(&rng, 3);
    ad_tensor_set(*y, i, cls);
    for (int k = 0; k < 4; k++)
      ad_tensor_set(*x, 4 * i + k, (k == cls ? 2.0 : 0.0) + 0.8 * ad_rng_normal(&rng));
  }
}

#endif
