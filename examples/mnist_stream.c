/* mnist_stream: the MLP of mnist_mlp, trained from a data set read sample by
 * sample from disk (PyTorch's Dataset + DataLoader), with augmentation done
 * in worker threads.
 *
 *   Dense(784 -> 64, relu) -> Dense(64 -> 64, relu) -> Dense(64 -> 10)
 *   softmax cross-entropy from the logits, Adam lr 0.001, batch 32, 5 epochs
 *
 * What a Dataset is. mnist_mlp loads all its digits into one tensor and
 * lets nn_fit cut batches out of it. That stops working when the data does
 * not fit in memory, or when every sample needs work of its own (decoding a
 * JPEG, a random crop). A data set is then described by two things only:
 * how many samples it has, and how to produce sample i. In PyTorch that is
 * a torch.utils.data.Dataset with __len__ and __getitem__; here it is an
 * nn_dataset with len and a callback get(ud, i, x, y, msg) that writes
 * sample i into memory the loader hands it. The loader (nn_loader_new,
 * PyTorch's DataLoader) decides which samples go into which batch, calls
 * get for each, and hands out batch tensors; nn_fit_loader trains on them.
 *
 * Here get reads one image (784 bytes) and one label (1 byte) straight from
 * the IDX files with pread at the sample's offset: the training images are
 * never all in memory. The IDX headers are checked once at the start.
 *
 * Why get may be called from several threads. With --workers N, the loader
 * starts N threads that call get for the batches ahead of the one being
 * trained on (up to --prefetch batches), so reading and augmenting overlap
 * with training. Several gets then run at once with the same ud, so get
 * only reads ud (the file descriptors, the seed; pread, unlike read, does
 * not move a shared file position) and writes nothing but its own sample.
 * It also must not call the engine with the loader's context: only the
 * thread that called nn_loader_next (here, nn_fit_loader's) touches it.
 *
 * Why the run is reproducible whatever --workers is. Two guarantees meet:
 *  - the loader's: batch k of an epoch holds the epoch's samples k*32 ..
 *    k*32+31 in the shuffle's order and comes out k-th, whichever worker
 *    finished it first (batches are delivered in order, not as they are
 *    done);
 *  - this file's: the random shift of a sample is drawn from a generator
 *    seeded from (the epoch's seed, the sample's index) alone, never from a
 *    generator shared by the threads, whose draws would go to whichever
 *    thread asked first, nor from one per worker (PyTorch's worker_init_fn
 *    idiom), which would tie the shifts to the number of workers.
 * So every batch has the same contents in the same order with 0 or 8
 * workers, and training, which runs in one thread, does the same float
 * operations: the final accuracy agrees bit for bit (the suite checks
 * --workers 0 against --workers 3). With --no-augment it is mnist_mlp's,
 * as the same digits come in the same batches (nn_fit_loader's contract).
 *
 * Data: by default the 10,000 bundled digits (data/, see data/README.md),
 * split 8000/2000 with the seeded shuffle mnist_mlp uses; with --data DIR
 * the standard MNIST files in DIR (train-images-idx3-ubyte,
 * train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte).
 * A gzip'd file (the bundled ones, or NAME.gz when NAME is absent) cannot be
 * read at an offset, so it is first inflated into a temporary file, deleted
 * on exit. The test digits are read into memory once (no augmentation).
 *
 * Usage: mnist_stream [--epochs N] [--workers N] [--prefetch N] [--seed N]
 *                     [--samples N] [--no-augment] [--data DIR]
 *   --epochs N     epochs of training (5)
 *   --workers N    loader threads calling get (0: get runs in the training
 *                  thread, between steps)
 *   --prefetch N   batches loaded ahead, with --workers (0: 2 per worker)
 *   --seed N       the split, the initial weights, the shuffle and the
 *                  shifts (42)
 *   --samples N    train on the first N training samples only (a quick run)
 *   --no-augment   the digits as they are, not shifted
 * The last line printed is exactly "test accuracy: NN.NN%". */
#include "args.h"
#include <autodiff/nn.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#ifndef NN_DATA_DIR
#define NN_DATA_DIR "data"
#endif

#define SIDE      28
#define PIXELS    (SIDE * SIDE)
#define MAX_SHIFT 2 /* pixels, in each direction */

typedef struct options {
  int epochs, workers, prefetch;
  int64_t samples; /* training samples used (default: all) */
  unsigned long long seed;
  bool augment;
  const char *data;
} options;

static int usage(const char *prog) {
  fprintf(stderr,
          "usage: %s [--epochs N] [--workers N] [--prefetch N] [--seed N] [--samples N] "
          "[--no-augment] [--data DIR]\n",
          prog);
  return 2;
}

static bool parse(int argc, char **argv, options *o) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--no-augment") == 0) {
      o->augment = false;
      continue;
    }
    const char *v = i + 1 < argc ? argv[++i] : NULL; /* a flag with a value */
    if (!v) return false;
    bool ok = true;
    if (strcmp(a, "--epochs") == 0)
      ok = arg_int(v, &o->epochs);
    else if (strcmp(a, "--workers") == 0)
      ok = arg_int(v, &o->workers);
    else if (strcmp(a, "--prefetch") == 0)
      ok = arg_int(v, &o->prefetch);
    else if (strcmp(a, "--seed") == 0)
      ok = arg_u64(v, &o->seed);
    else if (strcmp(a, "--samples") == 0)
      ok = arg_i64(v, &o->samples);
    else if (strcmp(a, "--data") == 0)
      o->data = v;
    else
      return false;
    if (!ok) return false;
  }
  return o->epochs >= 0 && o->workers >= 0 && o->workers <= 256 && o->prefetch >= 0 &&
         o->samples >= 1;
}

/* ------------------------------------------------------------ IDX files */

/* One IDX file opened for reading at offsets: the images (magic 0x803,
 * [n, 28, 28]) or the labels (magic 0x801, [n]). */
typedef struct idx_file {
  char path[4096]; /* for messages */
  int fd;          /* -1: not open */
  FILE *tmp;       /* the inflated copy of a gzip'd file, or NULL */
  int64_t n;       /* records */
  int64_t header;  /* bytes before the first record */
  int64_t record;  /* bytes per record: 784 or 1 */
} idx_file;

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Inflates the gzip file path into a temporary file (deleted when closed)
 * and returns it, or NULL with the reason in err. */
static FILE *inflate_to_tmp(const char *path, char *err, size_t n) {
  gzFile in = gzopen(path, "rb");
  if (!in) {
    snprintf(err, n, "cannot open %s: %s", path, strerror(errno ? errno : ENOMEM));
    return NULL;
  }
  FILE *out = tmpfile();
  if (!out) {
    snprintf(err, n, "cannot create a temporary file to inflate %s into: %s", path,
             strerror(errno));
    gzclose(in);
    return NULL;
  }
  unsigned char buf[1 << 16];
  int got;
  while ((got = gzread(in, buf, sizeof buf)) > 0)
    if (fwrite(buf, 1, (size_t)got, out) != (size_t)got) {
      snprintf(err, n, "cannot write the inflated %s: %s", path, strerror(errno));
      gzclose(in), fclose(out);
      return NULL;
    }
  int zerr = Z_OK;
  const char *zmsg = gzerror(in, &zerr); /* also a stream cut short: "unexpected end of file" */
  if (got < 0 || zerr != Z_OK) {
    snprintf(err, n, "cannot inflate %s", zmsg); /* zlib names the file */
    gzclose(in), fclose(out);
    return NULL;
  }
  gzclose(in);
  if (fflush(out) != 0) {
    snprintf(err, n, "cannot write the inflated %s: %s", path, strerror(errno));
    fclose(out);
    return NULL;
  }
  return out;
}

static void idx_close(idx_file *f) {
  if (f->tmp)
    fclose(f->tmp);
  else if (f->fd >= 0)
    close(f->fd);
  f->fd = -1, f->tmp = NULL;
}

/* Checks the header of the open file f: the magic, the image size, and
 * that the file holds every record it announces (a truncated file is
 * refused here, not halfway through an epoch). false with the reason in
 * err. */
static bool idx_check(idx_file *f, bool images, char *err, size_t n) {
  unsigned char h[16];
  f->header = images ? 16 : 8;
  f->record = images ? PIXELS : 1;
  struct stat st;
  ssize_t hb = pread(f->fd, h, (size_t)f->header, 0);
  if (hb < 0 || fstat(f->fd, &st) != 0) {
    snprintf(err, n, "cannot read %s: %s", f->path, strerror(errno));
    return false;
  }
  if (hb != (ssize_t)f->header) {
    snprintf(err, n, "%s: truncated: %lld bytes, shorter than an IDX header", f->path,
             (long long)hb);
    return false;
  }
  uint32_t magic = be32(h), want = images ? 0x803 : 0x801;
  if (magic != want) {
    snprintf(err, n, "%s: magic 0x%08x, expected 0x%08x (IDX %s)", f->path, (unsigned)magic,
             (unsigned)want, images ? "images of unsigned bytes, 3 axes" : "labels, 1 axis");
    return false;
  }
  if (images && (be32(h + 8) != SIDE || be32(h + 12) != SIDE)) {
    snprintf(err, n, "%s: images of %ux%u pixels, expected %dx%d", f->path, (unsigned)be32(h + 8),
             (unsigned)be32(h + 12), SIDE, SIDE);
    return false;
  }
  f->n = be32(h + 4);
  int64_t need = f->header + f->n * f->record;
  if ((int64_t)st.st_size < need) {
    snprintf(err, n, "%s: truncated: %lld bytes, its header announces %lld records (%lld bytes)",
             f->path, (long long)st.st_size, (long long)f->n, (long long)need);
    return false;
  }
  return true;
}

/* Opens dir/name (or dir/name.gz when only that exists, inflated into a
 * temporary file) and checks it. false with the reason in err, the file
 * closed. */
static bool idx_open(idx_file *f, const char *dir, const char *name, bool images, char *err,
                     size_t n) {
  *f = (idx_file){.fd = -1};
  snprintf(f->path, sizeof f->path, "%s/%s", dir, name);
  if (access(f->path, F_OK) != 0) { /* then NAME.gz */
    int why = errno;
    size_t len = strlen(f->path);
    if (len + 4 <= sizeof f->path) memcpy(f->path + len, ".gz", 4);
    if (len + 4 > sizeof f->path || access(f->path, F_OK) != 0) {
      f->path[len] = 0;
      snprintf(err, n, "cannot open %s (nor %s.gz): %s", f->path, name, strerror(why));
      return false;
    }
  }
  FILE *raw = fopen(f->path, "rb");
  if (!raw) {
    snprintf(err, n, "cannot open %s: %s", f->path, strerror(errno));
    return false;
  }
  unsigned char gz[2];
  size_t got = fread(gz, 1, 2, raw);
  fclose(raw);
  if (got == 2 && gz[0] == 0x1f && gz[1] == 0x8b) { /* gzip: inflate it first */
    if (!(f->tmp = inflate_to_tmp(f->path, err, n))) return false;
    f->fd = fileno(f->tmp);
  } else {
    f->fd = open(f->path, O_RDONLY);
    if (f->fd < 0) {
      snprintf(err, n, "cannot open %s: %s", f->path, strerror(errno));
      return false;
    }
  }
  if (!idx_check(f, images, err, n)) {
    idx_close(f);
    return false;
  }
  return true;
}

/* --------------------------------------------------------- the data set */

/* get's ud: read-only while the loader's threads run (see on_epoch_end). */
typedef struct digits {
  const idx_file *images, *labels;
  const int64_t *record; /* sample i is record[i] of the files */
  bool augment;
  uint64_t seed;  /* --seed */
  uint64_t epoch; /* 0-based; set between epochs only */
} digits;

/* splitmix64's finalizer: a 64-bit value to a well-mixed one. */
static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* x <- img shifted by (dx, dy) pixels, zeros where nothing shifted in. */
static void shift_image(const unsigned char *img, int dx, int dy, unsigned char *out) {
  memset(out, 0, PIXELS);
  for (int r = 0; r < SIDE; r++) {
    int sr = r - dy;
    if (sr < 0 || sr >= SIDE) continue;
    for (int c = 0; c < SIDE; c++) {
      int sc = c - dx;
      if (sc >= 0 && sc < SIDE) out[r * SIDE + c] = img[sr * SIDE + sc];
    }
  }
}

/* The nn_dataset's get (PyTorch's __getitem__): sample i into x (784 f32
 * in [0, 1]) and y (one i32 class). Called from the loader's threads with
 * --workers > 0, several at once: it reads d and the files, and writes only
 * x, y and msg. */
static int digits_get(void *ud, int64_t i, void *x, void *y, char *msg) {
  const digits *d = ud;
  int64_t rec = d->record[i];
  unsigned char img[PIXELS], label;
  /* pread reads at an offset without moving the descriptor's position, so
   * threads sharing the descriptor do not disturb each other */
  ssize_t got = pread(d->images->fd, img, PIXELS, (off_t)(d->images->header + rec * PIXELS));
  if (got != PIXELS) {
    snprintf(msg, NN_SAMPLE_MSG_MAX, "%.150s: record %lld: %s", d->images->path, (long long)rec,
             got < 0 ? strerror(errno) : "short read (the file shrank?)");
    return 1;
  }
  got = pread(d->labels->fd, &label, 1, (off_t)(d->labels->header + rec));
  if (got != 1 || label > 9) {
    snprintf(msg, NN_SAMPLE_MSG_MAX, "%.150s: record %lld: %s", d->labels->path, (long long)rec,
             got < 0    ? strerror(errno)
             : got != 1 ? "short read (the file shrank?)"
                        : "a label outside 0..9");
    return 1;
  }
  if (d->augment) {
    /* this sample's own generator, a function of (epoch seed, index) only:
     * the same shift whichever thread runs it, a new one every epoch */
    uint64_t epoch_seed = mix64(d->seed ^ mix64(d->epoch + 1));
    ad_rng rng;
    ad_rng_seed(&rng, epoch_seed ^ mix64((uint64_t)i));
    int dx = (int)ad_rng_below(&rng, 2 * MAX_SHIFT + 1) - MAX_SHIFT;
    int dy = (int)ad_rng_below(&rng, 2 * MAX_SHIFT + 1) - MAX_SHIFT;
    unsigned char moved[PIXELS];
    shift_image(img, dx, dy, moved);
    memcpy(img, moved, PIXELS);
  }
  float *xf = x;
  for (int p = 0; p < PIXELS; p++)
    xf[p] = (float)((double)img[p] * (1.0 / 255)); /* as nn_idx_load */
  *(int32_t *)y = label;
  return 0;
}

/* nn_fit_loader's on_epoch_end (PyTorch users call dataset.set_epoch(e),
 * as DistributedSampler.set_epoch). It runs between two epochs: the last
 * nn_loader_next of an epoch returned no batch after every get in flight
 * had returned, and the next epoch's work reaches the threads only when
 * nn_fit_loader asks for its first batch (under the loader's mutex, which
 * also publishes this write to them). So no get runs while epoch changes. */
static bool on_epoch_end(int epoch, const nn_history *h, void *ud) {
  (void)h;
  ((digits *)ud)->epoch = (uint64_t)epoch + 1;
  return true;
}

/* The test digits (records rec[0..n-1]) as tensors in memory, read with
 * get (no augmentation); NULL on error, with the reason in err. */
static bool read_all(ad_ctx *ctx, const idx_file *img, const idx_file *lab, const int64_t *rec,
                     int64_t n, ad_tensor **x, ad_tensor **y, char *err, size_t errn) {
  digits d = {.images = img, .labels = lab, .record = rec};
  *x = ad_zeros(ctx, AD_F32, 2, (int64_t[]){n, PIXELS});
  *y = ad_zeros(ctx, AD_I32, 1, (int64_t[]){n});
  if (!*x || !*y) {
    snprintf(err, errn, "%s", ad_last_error(ctx));
    return false;
  }
  char msg[NN_SAMPLE_MSG_MAX];
  for (int64_t i = 0; i < n; i++)
    if (digits_get(&d, i, (float *)(*x)->data + i * PIXELS, (int32_t *)(*y)->data + i, msg)) {
      snprintf(err, errn, "%s", msg);
      return false;
    }
  return true;
}

int main(int argc, char **argv) {
  options o = {.epochs = 5, .seed = 42, .samples = INT64_MAX, .augment = true};
  if (!parse(argc, argv, &o)) return usage(argv[0]);

  /* the files: the bundled digits (one pair, split 8000/2000) or --data's
   * training and test pairs */
  char err[2 * 4096 + 256];
  idx_file tr_img = {.fd = -1}, tr_lab = {.fd = -1}, te_img = {.fd = -1}, te_lab = {.fd = -1};
  const char *dir = o.data;
  bool bundled = !dir;
  if (bundled) /* from the working directory's data/ if there, else the source tree's */
    dir = access("data/mnist10k-images-idx3-ubyte.gz", R_OK) == 0 ? "data" : NN_DATA_DIR;
  bool ok =
      idx_open(&tr_img, dir, bundled ? "mnist10k-images-idx3-ubyte" : "train-images-idx3-ubyte",
               true, err, sizeof err) &&
      idx_open(&tr_lab, dir, bundled ? "mnist10k-labels-idx1-ubyte" : "train-labels-idx1-ubyte",
               false, err, sizeof err);
  if (ok && !bundled)
    ok = idx_open(&te_img, dir, "t10k-images-idx3-ubyte", true, err, sizeof err) &&
         idx_open(&te_lab, dir, "t10k-labels-idx1-ubyte", false, err, sizeof err);
  if (ok && tr_img.n != tr_lab.n) {
    snprintf(err, sizeof err, "%s has %lld images but %s %lld labels", tr_img.path,
             (long long)tr_img.n, tr_lab.path, (long long)tr_lab.n);
    ok = false;
  }
  if (ok && !bundled && te_img.n != te_lab.n) {
    snprintf(err, sizeof err, "%s has %lld images but %s %lld labels", te_img.path,
             (long long)te_img.n, te_lab.path, (long long)te_lab.n);
    ok = false;
  }
  if (!ok) {
    fprintf(stderr, "mnist_stream: %s\n", err);
    return 1;
  }
  const idx_file *ti = bundled ? &tr_img : &te_img, *tl = bundled ? &tr_lab : &te_lab;

  /* which records train and which test: the bundled ones split as
   * nn_train_test_split(..., 2000, shuffle, seed) splits them for mnist_mlp
   * (the first rows of a seeded permutation train), --data's in file order */
  int64_t n_all = tr_img.n, n_test = bundled ? 2000 : te_img.n;
  int64_t n_train = bundled ? n_all - n_test : n_all;
  if (bundled && n_all < n_test) {
    fprintf(stderr, "mnist_stream: %s has %lld digits, fewer than the %lld to test on\n",
            tr_img.path, (long long)n_all, (long long)n_test);
    return 1;
  }
  int64_t *perm = malloc((size_t)(n_all + n_test + 1) * sizeof *perm);
  if (!perm) {
    fprintf(stderr, "mnist_stream: out of memory\n");
    return 1;
  }
  ad_rng rng;
  ad_rng_seed(&rng, o.seed);
  nn_permutation(bundled ? &rng : NULL, n_all, perm);
  int64_t *test_rec = bundled ? perm + n_train : perm + n_all;
  if (!bundled)
    for (int64_t i = 0; i < n_test; i++) test_rec[i] = i;
  if (o.samples < n_train) n_train = o.samples;

  ad_ctx *ctx = ad_ctx_new();
  if (!ctx) return 1;
  ad_tensor *x_test, *y_test;
  if (!read_all(ctx, ti, tl, test_rec, n_test, &x_test, &y_test, err, sizeof err)) {
    fprintf(stderr, "mnist_stream: %s\n", err);
    return 1;
  }

  /* the Dataset: its length, one sample's shapes and dtypes, and get */
  digits d = {
      .images = &tr_img, .labels = &tr_lab, .record = perm, .augment = o.augment, .seed = o.seed};
  nn_dataset ds = {.len = n_train,
                   .x_dtype = AD_F32,
                   .x_ndim = 1,
                   .x_shape = {PIXELS},
                   .y_dtype = AD_I32,
                   .y_ndim = 0, /* a class per sample: batches of [32] labels */
                   .get = digits_get,
                   .ud = &d};
  /* the DataLoader: nn_fit's batch size, shuffle and seed, so that without
   * augmentation the batches are those of mnist_mlp's nn_fit */
  nn_loader_opts lo = {.batch_size = 32,
                       .shuffle = true,
                       .seed = o.seed,
                       .num_workers = o.workers,
                       .prefetch = o.prefetch};
  nn_loader *loader = nn_loader_new(ctx, &ds, &lo);
  if (!loader) {
    fprintf(stderr, "mnist_stream: %s\n", ad_last_error(ctx));
    return 1;
  }
  printf("mnist_stream: %lld training digits read from %s%s as needed, %lld test digits; "
         "%d workers, augmentation %s, seed %llu\n",
         (long long)n_train, tr_img.path, tr_img.tmp ? " (inflated into a temporary file)" : "",
         (long long)n_test, o.workers, o.augment ? "on" : "off", o.seed);

  /* the model: mnist_mlp's, initialized from the same seed */
  ad_rng_seed(&rng, o.seed);
  nn_model *m = nn_sequential_new(ctx);
  nn_model_add(m, nn_dense_new(ctx, PIXELS, 64, &rng, NULL));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_dense_new(ctx, 64, 64, &rng, NULL));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_dense_new(ctx, 64, 10, &rng, NULL));
  nn_optimizer *opt = nn_adam_new(nn_model_params(m), 0.001);
  if (!opt) {
    fprintf(stderr, "mnist_stream: %s\n", ad_last_error(ctx));
    return 1;
  }

  if (o.epochs > 0) {
    /* batch size, seed and shuffle are the loader's; on_epoch_end moves the
     * data set to the next epoch's shifts */
    nn_fit_opts fo = {.epochs = o.epochs, .accuracy = true, .on_epoch_end = on_epoch_end, .ud = &d};
    if (nn_fit_loader(m, opt, nn_cross_entropy_loss, loader, &fo, NULL) != AD_OK) {
      fprintf(stderr, "mnist_stream: %s\n", ad_last_error(ctx));
      return 1;
    }
  }

  double loss, acc;
  if (nn_evaluate(m, nn_cross_entropy_loss, x_test, y_test, 256, &loss, &acc) != AD_OK) {
    fprintf(stderr, "mnist_stream: %s\n", ad_last_error(ctx));
    return 1;
  }
  printf("test loss: %.4f\n", loss);
  printf("test accuracy: %.2f%%\n", 100 * acc);

  nn_loader_free(loader); /* joins the threads before the files close */
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x_test);
  ad_tensor_free(y_test);
  ad_ctx_free(ctx);
  free(perm);
  idx_close(&tr_img), idx_close(&tr_lab);
  if (!bundled) idx_close(&te_img), idx_close(&te_lab);
  return 0;
}
