/* test_nn_header.c: nn.h is self-contained: it is included first, with
 * nothing before it, and brings ad.h and nn_io.h with it. */
#include "nn.h"
#include "nn.h" /* include guard: a second inclusion is harmless */

#include <criterion/criterion.h>

Test(nn_header, types_and_defaults_are_usable) {
  /* all-zero option structs mean the defaults */
  nn_dense_opts dense = {0};
  nn_fit_opts fit = {0};
  nn_schedule sched = {0};
  cr_assert_eq(dense.activation, NN_ACT_NONE);
  cr_assert_eq(dense.weight_init.kind, NN_INIT_DEFAULT);
  cr_assert_eq(dense.dtype, AD_F32);
  cr_assert_eq(fit.epochs, 0);
  cr_assert_eq(sched.kind, NN_SCHED_CONSTANT);
  cr_assert_eq(NN_MEAN, 0);
  nn_init i = nn_init_make(NN_INIT_HE_UNIFORM, 2.0, 0.0);
  cr_assert(i.kind == NN_INIT_HE_UNIFORM && i.a == 2.0);
  nn_loss_fn losses[] = {nn_mse_loss, nn_bce_loss, nn_bce_with_logits_loss, nn_cross_entropy_loss,
                         nn_nll_loss};
  cr_assert_not_null(losses[4]);
  nn_opt_config c = nn_opt_defaults(NN_OPT_ADAMW, 1e-3);
  cr_assert_eq(c.weight_decay, 0.01);
  /* nn_io.h comes along */
  nn_checkpoint_entry e = {0};
  cr_assert_null(e.name);
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
