/* descent: the 2-3-1 network of docs/tutorial-chain-rule.md (the one
 * examples/worked_example takes through one step by hand), trained by
 * gradient descent for many steps.
 *
 * Every step is the tutorial's step: forward, L = (y - yhat)^2, backward,
 * p <- p - lr dL/dp for the four parameters. Three runs from the same
 * weights, at learning rates 0.1, 1 and 10, record the loss and the norms
 * of the two weight gradients, ||dL/dW1|| and ||dL/dW2||. The chain rule
 * reaches W1 through W2 and the hidden sigmoid, whose derivative is at
 * most 1/4, so W1's gradient is the smaller one throughout.
 *
 * Prints the loss after some steps at each rate; writes descent.csv and
 * with --plot descent.svg (the loss) and descent_grads.svg (the gradient
 * norms at lr 1). Exits 1 unless the loss falls at every rate, a larger
 * rate ends lower, and W1's gradient is the smaller at every step.
 *
 * Usage: descent [--steps 1000] [--out DIR] [--plot] */
#include "teach.h"

static const double init[4][6] = {
    {0.1, 0.2, 0.3, 0.4, 0.5, 0.6}, {0.1, 0.2, 0.3}, {0.7, 0.8, 0.9}, {0.4}};
static const int64_t shapes[4][2] = {{3, 2}, {3, 1}, {1, 3}, {1, 1}}; /* W1, b1, W2, b2 */

int main(int argc, char **argv) {
  int steps = 1000;
  teach_opts o;
  teach_flag flags[] = {{"--steps", 'i', &steps, 1, 0}};
  if (!teach_parse(argc, argv, 1, flags, &o)) return 2;
  ad_ctx *ctx = ad_ctx_new();
  ad_tensor *x = ad_from_data(ctx, AD_F64, 2, (int64_t[]){2, 1}, (double[]){1, 2});
  ad_tensor *y = ad_from_data(ctx, AD_F64, 2, (int64_t[]){1, 1}, (double[]){1});
  const double rates[3] = {0.1, 1, 10};
  teach_table *t = teach_table_new(steps + 1);
  bool ok = x && y, smaller = true; /* ||dL/dW1|| < ||dL/dW2|| at every step */
  for (int s = 0; s <= steps; s++) teach_col(t, "step")[s] = s;
  printf("%8s %12s %12s %12s\n", "step", "lr=0.1", "lr=1", "lr=10");
  for (int r = 0; ok && r < 3; r++) {
    ad_tensor *p[4]; /* W1, b1, W2, b2 */
    for (int i = 0; i < 4; i++) {
      p[i] = ad_from_data(ctx, AD_F64, 2, shapes[i], init[i]);
      ad_tensor_set_requires_grad(p[i], true);
    }
    double *loss = teach_col(t, "loss_lr%g", rates[r]);
    double *g1 = teach_col(t, "dW1_lr%g", rates[r]), *g2 = teach_col(t, "dW2_lr%g", rates[r]);
    for (int s = 0; ok && s <= steps; s++) {
      ad_tape_reset(ctx);
      for (int i = 0; i < 4; i++) ad_tensor_zero_grad(p[i]);
      ad_tensor *a1 = ad_sigmoid(ctx, ad_add(ctx, ad_matmul(ctx, p[0], x, false, false), p[1]));
      ad_tensor *yhat = ad_sigmoid(ctx, ad_add(ctx, ad_matmul(ctx, p[2], a1, false, false), p[3]));
      ad_tensor *L = ad_square(ctx, ad_sub(ctx, y, yhat));
      ok = L && ad_backward(ctx, L, NULL) == AD_OK;
      if (!ok) break;
      loss[s] = ad_tensor_item(L), g1[s] = teach_grad_norm(p[0]), g2[s] = teach_grad_norm(p[2]);
      smaller &= g1[s] < g2[s];
      for (int i = 0; i < 4; i++) /* one step of gradient descent */
        for (int64_t k = 0; k < p[i]->size; k++)
          ad_tensor_set(p[i], k, ad_tensor_get(p[i], k) - rates[r] * ad_tensor_get(p[i]->grad, k));
    }
    for (int i = 0; i < 4; i++) ad_tensor_free(p[i]);
  }
  if (!ok) fprintf(stderr, "descent: %s\n", ad_last_error(ctx));
  double *l[3] = {teach_col(t, "loss_lr0.1"), teach_col(t, "loss_lr1"), teach_col(t, "loss_lr10")};
  for (int s = 0; ok && s <= steps; s = s ? s * 10 : 1)
    printf("%8d %12.4g %12.4g %12.4g\n", s, l[0][s], l[1][s], l[2][s]);
  plot_opts lo = {"The 2-3-1 network: loss under gradient descent", "step", "L", .logy = true};
  plot_opts go = {"The 2-3-1 network: weight gradients (lr = 1)", "step", "||dL/dW||",
                  .logy = true};
  ok = ok && teach_save(t, &o, "descent.csv") &&
       teach_chart(t, &o, "descent.svg", lo, "step", "loss_lr0.1=lr 0.1", "loss_lr1=lr 1",
                   "loss_lr10=lr 10", NULL) &&
       teach_chart(t, &o, "descent_grads.svg", go, "step", "dW1_lr1=||dL/dW1||",
                   "dW2_lr1=||dL/dW2||", NULL);
  bool fell = ok && l[0][steps] < l[0][0] && l[1][steps] < l[0][steps] && l[2][steps] < l[1][steps];
  teach_table_free(t);
  ad_tensor_free(x), ad_tensor_free(y);
  ad_ctx_free(ctx);
  return fell && smaller ? 0 : 1;
}
