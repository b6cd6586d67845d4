/* test_nn_header.c: nn.h is self-contained: it is included first, with
 * nothing before it, and brings ad.h and nn_io.h with it. */
#include "nn.h"
#include "nn.h" /* include guard: a second inclusion is harmless */

#include <criterion/criterion.h>

/* The types compile against nn.h alone (that is the test); the option
 * structs' documented rule, "all-zero means the defaults", holds because
 * each default enumerator is 0. */
nn_dense_opts nn_header_probe_dense;
nn_fit_opts nn_header_probe_fit;
nn_schedule nn_header_probe_sched;
nn_checkpoint_entry nn_header_probe_entry; /* nn_io.h comes along */
nn_loss_fn nn_header_probe_losses[] = {nn_mse_loss, nn_bce_loss, nn_bce_with_logits_loss,
                                       nn_cross_entropy_loss, nn_nll_loss};

Test(nn_header, zero_means_default) {
  cr_assert_eq(NN_ACT_NONE, 0);
  cr_assert_eq(NN_INIT_DEFAULT, 0);
  cr_assert_eq(AD_F32, 0);
  cr_assert_eq(NN_SCHED_CONSTANT, 0);
  cr_assert_eq(NN_MEAN, 0);
}

Test(nn_header, functions_link) {
  nn_init i = nn_init_make(NN_INIT_HE_UNIFORM, 2.0, 0.0);
  cr_assert(i.kind == NN_INIT_HE_UNIFORM && i.a == 2.0);
  nn_opt_config c = nn_opt_defaults(NN_OPT_ADAMW, 1e-3);
  cr_assert_eq(c.weight_decay, 0.01);
}

/* NULL handles are accepted everywhere and do nothing. */
Test(nn_header, null_handles_are_harmless) {
  nn_params_free(NULL);
  nn_layer_free(NULL);
  nn_model_free(NULL);
  nn_optimizer_free(NULL);
  nn_batcher_free(NULL);
  nn_history_free(NULL);
  cr_assert_eq(nn_params_count(NULL), 0);
  cr_assert_null(nn_params_find(NULL, "x"));
  cr_assert_null(nn_model_forward(NULL, NULL));
  cr_assert_null(nn_layer_forward(NULL, NULL, true));
  cr_assert_eq(nn_optimizer_step(NULL), AD_ERR_NULL);
  cr_assert_eq(nn_history_epochs(NULL), 0);
  cr_assert_null(nn_history_values(NULL, "loss"));
  cr_assert_eq(nn_fit(NULL, NULL, NULL, NULL, NULL, NULL, NULL), AD_ERR_NULL);
  cr_assert_null(nn_dense_new(NULL, 1, 1, NULL, NULL));
  cr_assert_null(nn_sequential_new(NULL));
  cr_assert(!nn_batcher_next(NULL, NULL, NULL));
  cr_assert_eq(nn_count_correct(NULL, NULL, 0.5), -1);
}
