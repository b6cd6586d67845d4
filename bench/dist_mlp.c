/* dist_mlp: data-parallel training on MPI (libnn_dist) of the wide MLP
 * 784-1024-1024-10 (ReLU, softmax cross-entropy, Adam lr 1e-3, f32) on
 * synthetic data through nn_fit; run it under mpirun with 1, 2, ... ranks.
 *
 *   mpirun -np 2 build/bench/dist_mlp [--batch 256] [--epochs 1] [--samples 4096]
 *       [--threads 1] [--bucket-kb 4096] [--deterministic] [--no-overlap]
 *       [--no-shm] [--ranks-per-node N] [--shard] [--profile]
 *
 * --batch is the global batch (each of N ranks trains batch / N rows per
 * step). Data: --samples rows of uniform [0,1) features, labels from a
 * random linear teacher, the same on every rank (seeded). Rank 0 prints:
 * the configuration, seconds per epoch and samples/s (all ranks together),
 * the gradient bytes each rank allreduces per step, the seconds per step
 * spent waiting for the reduction after backward (communication the
 * backward did not hide, plus the status exchange; the largest over the
 * ranks), how many buckets were launched from the backward hook, the
 * parameters' hash, and a blocking MPI_Allreduce of the whole gradient
 * timed alone (its bus bandwidth 2 K (N - 1) / N / t, the ring model of
 * docs/distributed.md), the CPU seconds of training summed over the ranks
 * and of the busiest rank. Last line "train_s: S". Not a test: the machine's
 * other load moves its figures. --profile runs the op profile
 * (ad_profile_start) on every rank over nn_fit and prints rank 0's before
 * that line: its "hook" is the time the backward spent in libnn_dist's
 * hook (the gradients' sums of the buckets it launched), and train_s less
 * the ops' time is what runs outside ops (the optimizer, the wait for the
 * last buckets, the batch gather). */
#include "ad_ext.h"
#include "bench_util.h"
#include "nn_dist.h"

#include <mpi.h>
#include <string.h>

static int usage(void) {
  fprintf(stderr, "usage: dist_mlp [--batch 256] [--epochs 1] [--samples 4096] [--threads 1]\n"
                  "                [--bucket-kb 4096] [--deterministic] [--no-overlap]\n"
                  "                [--no-shm] [--ranks-per-node N] [--shard] [--profile]\n");
  return 2;
}

int main(int argc, char **argv) {
  if (nn_dist_init(&argc, &argv) != AD_OK) return 1;
  long long batch = 256, epochs = 1, samples = 4096, threads = 1, bucket_kb = 4096, rpn = 0;
  nn_dist_opts dopts = {0};
  bool profile = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    bool ok = true;
    if (!strcmp(a, "--batch"))
      ok = bench_parse_int(v, 1, &batch), i++;
    else if (!strcmp(a, "--epochs"))
      ok = bench_parse_int(v, 1, &epochs), i++;
    else if (!strcmp(a, "--samples"))
      ok = bench_parse_int(v, 1, &samples), i++;
    else if (!strcmp(a, "--threads"))
      ok = bench_parse_int(v, 1, &threads), i++;
    else if (!strcmp(a, "--bucket-kb"))
      ok = bench_parse_int(v, 1, &bucket_kb), i++;
    else if (!strcmp(a, "--deterministic"))
      dopts.deterministic = true;
    else if (!strcmp(a, "--no-overlap"))
      dopts.no_overlap = true;
    else if (!strcmp(a, "--no-shm"))
      dopts.no_shm = true;
    else if (!strcmp(a, "--shard"))
      dopts.shard_optimizer = true;
    else if (!strcmp(a, "--profile"))
      profile = true;
    else if (!strcmp(a, "--ranks-per-node"))
      ok = bench_parse_int(v, 1, &rpn), i++;
    else
      ok = false;
    if (!ok) {
      nn_dist_finalize();
      return usage();
    }
  }
  dopts.bucket_bytes = (size_t)bucket_kb << 10;
  dopts.ranks_per_node = (int)rpn;
  bench_set_threads((int)threads);
  ad_ctx *ctx = ad_ctx_new();
  nn_dist *d = nn_dist_new(ctx, &dopts);
  int rank = nn_dist_rank(d), size = nn_dist_size(d);

  /* data and model, the same on every rank */
  ad_rng rng;
  ad_rng_seed(&rng, 1);
  const int64_t w[4] = {784, 1024, 1024, 10};
  int64_t sx[2] = {samples, w[0]}, st[2] = {w[0], w[3]};
  ad_tensor *x = ad_rand(ctx, &rng, AD_F32, 2, sx, 0, 1);
  ad_tensor *teacher = ad_randn(ctx, &rng, AD_F32, 2, st, 0, 1);
  ad_tensor *y = ad_zeros(ctx, AD_I32, 1, sx);
  const float *xd = x->data, *td = teacher->data;
  for (int64_t i = 0; i < samples; i++) {
    int best = 0;
    double bv = -1e300;
    for (int c = 0; c < w[3]; c++) {
      double s = 0;
      for (int64_t k = 0; k < w[0]; k++) s += xd[i * w[0] + k] * td[k * w[3] + c];
      if (s > bv) bv = s, best = c;
    }
    ad_tensor_set(y, i, best);
  }
  nn_model *m = nn_sequential_new(ctx);
  for (int l = 0; l < 3; l++) {
    nn_dense_opts o = {.activation = l < 2 ? NN_ACT_RELU : NN_ACT_NONE};
    nn_model_add(m, nn_dense_new(ctx, w[l], w[l + 1], &rng, &o));
  }
  nn_optimizer *opt = nn_adam_new(nn_model_params(m), 1e-3);
  nn_fit_opts fo = {.epochs = (int)epochs,
                    .batch_size = batch,
                    .seed = 1,
                    .verbose = -1,
                    .dist = nn_dist_fit_ops(d)};
  nn_history *h = NULL;
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = bench_now_s(), c0 = bench_cpu_s();
  ad_status s = profile ? ad_profile_start(ctx) : AD_OK;
  if (s == AD_OK) s = nn_fit(m, opt, nn_cross_entropy_loss, x, y, &fo, &h);
  if (s == AD_OK && profile) s = ad_profile_stop(ctx);
  double secs = bench_now_s() - t0, cpu = bench_cpu_s() - c0;
  if (s != AD_OK) {
    fprintf(stderr, "rank %d: %s\n", rank, ad_last_error(ctx));
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  nn_dist_stats ds;
  nn_dist_get_stats(d, &ds, true);
  double wait = ds.wait_seconds / (double)ds.steps;
  struct {
    double v;
    int rank;
  } least = {wait, rank};
  MPI_Allreduce(MPI_IN_PLACE, &wait, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, &least, 1, MPI_DOUBLE_INT, MPI_MINLOC, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, &secs, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  double cpu_max = cpu;
  MPI_Allreduce(MPI_IN_PLACE, &cpu, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, &cpu_max, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);

  /* the whole gradient in one blocking allreduce, alone */
  int64_t np = nn_params_numel(nn_model_params(m));
  float *buf = calloc((size_t)np, sizeof *buf);
  double best = 1e300;
  for (int r = 0; r < 5; r++) {
    MPI_Barrier(MPI_COMM_WORLD);
    double a = bench_now_s();
    MPI_Allreduce(MPI_IN_PLACE, buf, (int)np, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    a = bench_now_s() - a;
    MPI_Allreduce(MPI_IN_PLACE, &a, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (a < best) best = a;
  }
  free(buf);
  if (rank == 0) {
    double k = (double)np * 4;
    printf("dist: %d ranks x %lld engine threads, model 784-1024-1024-10 f32 (%lld parameters), "
           "global batch %lld, %lld samples, %lld epochs%s%s\n",
           size, threads, (long long)np, batch, samples, epochs,
           dopts.deterministic ? ", deterministic" : "", dopts.no_overlap ? ", no overlap" : "");
    printf("loss: epoch 1 %.4f\n", nn_history_get(h, "loss", 0));
    printf("params_hash: %016llx\n", bench_params_hash(nn_model_params(m)));
    printf("epoch_s: %.3f\n", secs / (double)epochs);
    printf("samples_per_s: %.0f\n", (double)samples * (double)epochs / secs);
    printf("steps: %lld, buckets per step: %lld (%lld KiB each at most), launched from the "
           "backward hook: %lld of %lld\n",
           (long long)ds.steps, (long long)ds.buckets, bucket_kb, (long long)ds.overlapped,
           (long long)(ds.steps * ds.buckets));
    printf("allreduced_bytes_per_step: %.0f\n", (double)ds.bytes / (double)ds.steps);
    printf("reduction: %s, %d node(s); sharded optimizer steps: %lld; parameters: %s\n",
           ds.shared_memory ? "shared memory on each node (MPI-3 window)" : "MPI collectives",
           ds.nodes, (long long)ds.sharded_steps,
           ds.shared_params ? "one copy per node (shared window)" : "each rank's own");
    printf("wait_ms_per_step: %.3f (not hidden by backward; largest over ranks; step %.3f ms)\n",
           1e3 * wait, 1e3 * secs / (double)ds.steps);
    /* the rank that waits least is the one the others wait for: a gap
     * between the two is imbalance (a slower CPU), not communication */
    printf("wait_ms_per_step_least: %.3f (rank %d: the rank the others waited for)\n",
           1e3 * least.v, least.rank);
    printf("allreduce_alone_ms: %.3f for %.0f bytes (bus bandwidth 2K(N-1)/N/t: %.2f GB/s)\n",
           1e3 * best, k, size > 1 ? 2 * k * (size - 1) / size / best * 1e-9 : 0.0);
    printf("cpu_s: %.3f summed over ranks, %.3f the busiest rank (user + system: less "
           "disturbed by other load than wall time; MPI's waits poll and count)\n",
           cpu, cpu_max);
    if (profile) {
      printf("rank 0's op profile (over nn_fit):\n");
      if (ad_profile_print(ctx, stdout) != AD_OK) fprintf(stderr, "%s\n", ad_last_error(ctx));
    }
    printf("train_s: %.4f\n", secs);
  }
  nn_history_free(h);
  nn_optimizer_free(opt);
  nn_model_free(m);
  ad_tensor_free(x);
  ad_tensor_free(y);
  ad_tensor_free(teacher);
  nn_dist_free(d);
  ad_ctx_free(ctx);
  nn_dist_finalize();
  return 0;
}
