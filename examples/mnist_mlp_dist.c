/* mnist_mlp_dist: examples/mnist_mlp's model and training, data-parallel
 * across the ranks of an MPI job (libnn_dist, docs/distributed.md):
 *
 *   mpirun -np 2 build/examples/mnist_mlp_dist [--epochs N] [--batch N]
 *       [--seed N] [--deterministic] [--save FILE]
 *
 * Every rank loads the same digits and builds the same model (rank 0's
 * values are broadcast anyway); --batch is the global batch (default 32,
 * as mnist_mlp's), so the steps are mnist_mlp's and the test accuracy is
 * the same (to f32 rounding of the summed gradients). One engine thread
 * per rank. Rank 0 prints the progress; every rank evaluates the test set
 * (identical models) and rank 0 prints its last line, exactly
 * "test accuracy: NN.NN%". --save writes the checkpoint from rank 0. */
#include "args.h"
#include "mnist_data.h"
#include <autodiff/nn_dist.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  if (nn_dist_init(&argc, &argv) != AD_OK) return 1;
  int epochs = 5;
  int64_t batch = 32;
  unsigned long long seed = 42;
  const char *save = NULL;
  nn_dist_opts dopts = {0};
  bool bad = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--deterministic") == 0)
      dopts.deterministic = true;
    else if (strcmp(a, "--epochs") == 0 && arg_int(v, &epochs))
      i++;
    else if (strcmp(a, "--batch") == 0 && arg_i64(v, &batch))
      i++;
    else if (strcmp(a, "--seed") == 0 && arg_u64(v, &seed))
      i++;
    else if (strcmp(a, "--save") == 0 && v)
      save = argv[++i];
    else
      bad = true; /* and stays so, whatever follows */
  }
  if (bad || epochs < 0 || batch < 1) {
    fprintf(stderr,
            "usage: mpirun -np N %s [--epochs N] [--batch N] [--seed N] "
            "[--deterministic] [--save FILE]\n",
            argv[0]);
    nn_dist_finalize();
    return 2;
  }
  ad_set_num_threads(1); /* the ranks share the machine's cores */
  ad_ctx *ctx = ad_ctx_new();
  nn_dist *d = ctx ? nn_dist_new(ctx, &dopts) : NULL;
  mnist_data data;
  if (!d || !mnist_load(ctx, NULL, seed, 2, &data)) {
    fprintf(stderr, "mnist_mlp_dist: %s\n", ctx ? ad_last_error(ctx) : "out of memory");
    return 1; /* MPI ends the job when a rank exits without finalising */
  }
  int rank = nn_dist_rank(d);
  if (rank == 0)
    printf("mnist_mlp_dist: %d ranks, global batch %lld, %lld training digits\n", nn_dist_size(d),
           (long long)batch, (long long)data.x_train->shape[0]);

  ad_rng rng;
  ad_rng_seed(&rng, seed);
  nn_model *m = nn_sequential_new(ctx);
  nn_model_add(m, nn_dense_new(ctx, data.x_train->shape[1], 64, &rng, NULL));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_dense_new(ctx, 64, 64, &rng, NULL));
  nn_model_add(m, nn_activation_new(ctx, NN_ACT_RELU));
  nn_model_add(m, nn_dense_new(ctx, 64, 10, &rng, NULL));
  nn_optimizer *opt = nn_adam_new(nn_model_params(m), 0.001);

  nn_fit_opts fo = {.epochs = epochs,
                    .batch_size = batch,
                    .seed = seed,
                    .accuracy = true,
                    .dist = nn_dist_fit_ops(d)};
  ad_status st = nn_fit(m, opt, nn_cross_entropy_loss, data.x_train, data.y_train, &fo, NULL);
  if (st == AD_OK && save) st = nn_dist_save(d, m, opt, save);
  double loss = 0, acc = 0;
  if (st == AD_OK)
    st = nn_evaluate(m, nn_cross_entropy_loss, data.x_test, data.y_test, 256, &loss, &acc);
  if (st != AD_OK)
    fprintf(stderr, "mnist_mlp_dist: rank %d: %s\n", rank, ad_last_error(ctx));
  else if (rank == 0)
    printf("test loss: %.4f\ntest accuracy: %.2f%%\n", loss, 100 * acc);
  nn_optimizer_free(opt);
  nn_model_free(m);
  mnist_free(&data);
  nn_dist_free(d);
  ad_ctx_free(ctx);
  nn_dist_finalize();
  return st == AD_OK ? 0 : 1;
}
