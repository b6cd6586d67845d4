/* mnist_data.h: the digits the MNIST examples train on (header-only, for
 * examples/): the 10,000 bundled digits (data/, see data/README.md) split
 * 8000/2000 with a seeded shuffle, or with a directory the standard MNIST
 * files (train-images-idx3-ubyte, train-labels-idx1-ubyte,
 * t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each optionally .gz):
 * 60,000 to train, 10,000 to test. Images are f32 in [0, 1]. */
#ifndef MNIST_DATA_H
#define MNIST_DATA_H

#include <autodiff/nn.h>

#include <stdio.h>
#include <unistd.h>

#ifndef NN_DATA_DIR
#define NN_DATA_DIR "data"
#endif

typedef struct mnist_data {
  ad_tensor *x_train, *y_train, *x_test, *y_test;
  char source[4096]; /* where the digits came from */
} mnist_data;

/* dir/name, or dir/name.gz when only that exists. */
static inline void mnist_path(char *buf, size_t n, const char *dir, const char *name) {
  snprintf(buf, n, "%s/%s", dir, name);
  if (access(buf, R_OK) != 0) snprintf(buf, n, "%s/%s.gz", dir, name);
}

/* Images as f32 in [0, 1]: [N, 784] (image_ndim 2) or [N, 1, 28, 28]
 * (image_ndim 4); NULL on error. */
static inline ad_tensor *mnist_images(ad_ctx *ctx, const char *path, int image_ndim) {
  ad_tensor *raw = nn_idx_load(ctx, path, AD_F32, 1.0 / 255);
  if (!raw) return NULL;
  int64_t n = raw->shape[0], per = n ? raw->size / n : 0;
  int64_t flat[2] = {n, per},
          img[4] = {n, 1, raw->ndim == 3 ? raw->shape[1] : per, raw->ndim == 3 ? raw->shape[2] : 1};
  ad_tensor *x = image_ndim == 4 ? ad_from_data(ctx, AD_F32, 4, img, raw->data)
                                 : ad_from_data(ctx, AD_F32, 2, flat, raw->data);
  ad_tensor_free(raw);
  return x;
}

/* Loads the digits into d (from dir, or the bundled ones when dir is NULL,
 * split with seed). Returns false with the error on ctx. */
static inline bool mnist_load(ad_ctx *ctx, const char *dir, unsigned long long seed, int image_ndim,
                              mnist_data *d) {
  char p1[4096], p2[4096];
  *d = (mnist_data){0};
  if (dir) {
    mnist_path(p1, sizeof p1, dir, "train-images-idx3-ubyte");
    mnist_path(p2, sizeof p2, dir, "train-labels-idx1-ubyte");
    d->x_train = mnist_images(ctx, p1, image_ndim);
    d->y_train = d->x_train ? nn_idx_load(ctx, p2, AD_I32, 1) : NULL;
    mnist_path(p1, sizeof p1, dir, "t10k-images-idx3-ubyte");
    mnist_path(p2, sizeof p2, dir, "t10k-labels-idx1-ubyte");
    d->x_test = d->y_train ? mnist_images(ctx, p1, image_ndim) : NULL;
    d->y_test = d->x_test ? nn_idx_load(ctx, p2, AD_I32, 1) : NULL;
    snprintf(d->source, sizeof d->source, "%s", dir);
  } else {
    /* the bundled digits: from the working directory's data/ if there,
     * else from the source tree this was built from */
    const char *src =
        access("data/mnist10k-images-idx3-ubyte.gz", R_OK) == 0 ? "data" : NN_DATA_DIR;
    snprintf(p1, sizeof p1, "%s/mnist10k-images-idx3-ubyte.gz", src);
    snprintf(p2, sizeof p2, "%s/mnist10k-labels-idx1-ubyte.gz", src);
    ad_tensor *x = mnist_images(ctx, p1, image_ndim);
    ad_tensor *y = x ? nn_idx_load(ctx, p2, AD_I32, 1) : NULL;
    if (y)
      nn_train_test_split(ctx, x, y, 2000, true, seed, &d->x_train, &d->y_train, &d->x_test,
                          &d->y_test);
    ad_tensor_free(x);
    ad_tensor_free(y);
    snprintf(d->source, sizeof d->source, "%s", src);
  }
  return d->y_test != NULL;
}

static inline void mnist_free(mnist_data *d) {
  ad_tensor_free(d->x_train);
  ad_tensor_free(d->y_train);
  ad_tensor_free(d->x_test);
  ad_tensor_free(d->y_test);
}

#endif
