/* worked_example: backpropagation through the 2-3-1 network of the teaching
 * material, by the tape and by the hand-derived formulas, side by side.
 *
 *   x = [1, 2]^T, y = 1
 *   z1 = W1 x + b1,  a1 = sigmoid(z1)        (3 hidden units)
 *   z2 = W2 a1 + b2, yhat = sigmoid(z2)
 *   L  = (y - yhat)^2
 *
 * Vectors are columns ([n,1] tensors), so the code reads like the math.
 * Prints the forward values, the gradients from the tape (dL/dW1, dL/db1,
 * dL/dW2, dL/db2, 12 significant digits), the same gradients from the
 * formulas
 *   dL/dz2 = 2 (yhat - y) yhat (1 - yhat)
 *   dL/dz1 = (W2^T dL/dz2) .* a1 .* (1 - a1)
 *   dL/dW  = dL/dz a^T,  dL/db = dL/dz
 * with their difference, and the weights after one SGD step (lr 0.1).
 *
 *   worked_example [--trace] [--dot FILE] [--dot-forward FILE]
 *
 * --trace prints the backward pass step by step; --dot writes the graph
 * with its gradients (backward view) as Graphviz DOT, --dot-forward the
 * forward view with values only (drawn before backward runs). Exit status 0, 1 on an error, 2 for a
 * usage error. */
#include <autodiff/ad.h>
#include <autodiff/ad_ext.h> /* ad_set_error */

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const double W1_init[6] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6};
static const double b1_init[3] = {0.1, 0.2, 0.3};
static const double W2_init[3] = {0.7, 0.8, 0.9};
static const double b2_init[1] = {0.4};
static const double x_init[2] = {1, 2};
static const double y_init[1] = {1};

/* Prints "name = [a, b, ...]" or, for a matrix, "[[..], [..]]". */
static void print_vals(const char *name, const ad_tensor *t) {
  printf("%s = ", name);
  bool matrix = t->ndim == 2 && t->shape[1] > 1;
  int64_t cols = matrix ? t->shape[1] : t->size;
  printf(matrix ? "[[" : "[");
  for (int64_t i = 0; i < t->size; i++) {
    if (i && i % cols == 0)
      printf("], [");
    else if (i)
      printf(", ");
    printf("%.12g", ad_tensor_get(t, i));
  }
  printf(matrix ? "]]\n" : "]\n");
}

static double sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }

static int usage(void) {
  fprintf(stderr, "usage: worked_example [--trace] [--dot FILE] [--dot-forward FILE]\n");
  return 2;
}

/* Writes the graph of L to path; returns false on error, recorded on ctx
 * (main prints it). */
static bool write_dot(ad_ctx *ctx, ad_graph *g, ad_tensor *L, const char *path, int flags) {
  FILE *f = fopen(path, "w");
  if (!f) {
    ad_set_error(ctx, AD_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    return false;
  }
  ad_status st = ad_graph_dot(g, f, L, flags);
  if (fclose(f) != 0 && st == AD_OK) st = ad_set_error(ctx, AD_ERR_IO, "cannot write %s", path);
  return st == AD_OK;
}

int main(int argc, char **argv) {
  bool trace = false;
  const char *dot_back = NULL, *dot_fwd = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--trace"))
      trace = true;
    else if (!strcmp(argv[i], "--dot") && i + 1 < argc)
      dot_back = argv[++i];
    else if (!strcmp(argv[i], "--dot-forward") && i + 1 < argc)
      dot_fwd = argv[++i];
    else
      return usage();
  }

  ad_ctx *ctx = ad_ctx_new();
  if (!ctx) return 1;
  const int64_t s32[2] = {3, 2}, s31[2] = {3, 1}, s13[2] = {1, 3}, s11[2] = {1, 1}, s21[2] = {2, 1};
  ad_tensor *W1 = ad_from_data(ctx, AD_F64, 2, s32, W1_init);
  ad_tensor *b1 = ad_from_data(ctx, AD_F64, 2, s31, b1_init);
  ad_tensor *W2 = ad_from_data(ctx, AD_F64, 2, s13, W2_init);
  ad_tensor *b2 = ad_from_data(ctx, AD_F64, 2, s11, b2_init);
  ad_tensor *x = ad_from_data(ctx, AD_F64, 2, s21, x_init);
  ad_tensor *y = ad_from_data(ctx, AD_F64, 2, s11, y_init);
  ad_tensor *params[4] = {W1, b1, W2, b2};
  ad_graph *g = ad_graph_new(ctx);
  int rc = 1;
  if (!W1 || !b1 || !W2 || !b2 || !x || !y || !g) goto out;
  for (int i = 0; i < 4; i++) ad_tensor_set_requires_grad(params[i], true);

  /* forward: every op is recorded on the tape */
  ad_tensor *W1x = ad_matmul(ctx, W1, x, false, false);
  ad_tensor *z1 = ad_add(ctx, W1x, b1);
  ad_tensor *a1 = ad_sigmoid(ctx, z1);
  ad_tensor *W2a1 = ad_matmul(ctx, W2, a1, false, false);
  ad_tensor *z2 = ad_add(ctx, W2a1, b2);
  ad_tensor *yhat = ad_sigmoid(ctx, z2);
  ad_tensor *e = ad_sub(ctx, y, yhat);
  ad_tensor *L = ad_square(ctx, e);
  if (!L) goto out;

  /* names for the trace and the pictures */
  const char *names[] = {"W1", "b1", "W2",   "b2", "x",    "y", "W1x",
                         "z1", "a1", "W2a1", "z2", "yhat", "e", "L"};
  ad_tensor *named[] = {W1, b1, W2, b2, x, y, W1x, z1, a1, W2a1, z2, yhat, e, L};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) ad_graph_name(g, named[i], names[i]);

  printf("forward pass\n");
  print_vals("z1", z1);
  print_vals("a1", a1);
  print_vals("z2", z2);
  print_vals("yhat", yhat);
  printf("L = %.12g\n\n", ad_tensor_item(L));
  if (dot_fwd && !write_dot(ctx, g, L, dot_fwd, 0)) goto out; /* values only */

  /* backward, observed (never changed) by the graph's trace */
  if (trace) printf("backward trace\n");
  ad_graph_trace_begin(g, trace ? stdout : NULL);
  ad_status st = ad_backward(ctx, L, NULL);
  ad_graph_trace_end(g);
  if (st != AD_OK) {
    fprintf(stderr, "worked_example: %s\n", ad_last_error(ctx));
    goto out;
  }
  if (trace) printf("\n");

  printf("gradients from the tape\n");
  printf("L = %.12g\n", ad_tensor_item(L));
  print_vals("dL/dW1", W1->grad);
  print_vals("dL/db1", b1->grad);
  print_vals("dL/dW2", W2->grad);
  print_vals("dL/db2", b2->grad);

  /* the hand-derived formulas, in plain C */
  double a[3], yh, dz2, dz1[3], hW1[6], hb1[3], hW2[3], hb2;
  for (int j = 0; j < 3; j++)
    a[j] = sigmoid(W1_init[2 * j] * x_init[0] + W1_init[2 * j + 1] * x_init[1] + b1_init[j]);
  yh = sigmoid(W2_init[0] * a[0] + W2_init[1] * a[1] + W2_init[2] * a[2] + b2_init[0]);
  dz2 = 2 * (yh - y_init[0]) * yh * (1 - yh); /* dL/dz2 */
  hb2 = dz2;
  for (int j = 0; j < 3; j++) {
    hW2[j] = dz2 * a[j];                           /* dL/dW2 = dL/dz2 a1^T */
    dz1[j] = W2_init[j] * dz2 * a[j] * (1 - a[j]); /* (W2^T dL/dz2) .* a1 .* (1 - a1) */
    hb1[j] = dz1[j];
    hW1[2 * j] = dz1[j] * x_init[0]; /* dL/dW1 = dL/dz1 x^T */
    hW1[2 * j + 1] = dz1[j] * x_init[1];
  }

  printf("\nhand-derived formulas vs the tape\n");
  printf("dL/dz2 = 2 (yhat - y) yhat (1 - yhat) = %.12g\n", dz2);
  printf("dL/dz1 = (W2^T dL/dz2) .* a1 .* (1 - a1) = [%.12g, %.12g, %.12g]\n", dz1[0], dz1[1],
         dz1[2]);
  printf("%-10s %20s %20s %12s\n", "gradient", "formula", "tape", "difference");
  struct {
    const char *name;
    const double *hand;
    const ad_tensor *tape;
  } rows[] = {{"dL/dW1", hW1, W1->grad},
              {"dL/db1", hb1, b1->grad},
              {"dL/dW2", hW2, W2->grad},
              {"dL/db2", &hb2, b2->grad}};
  double worst = 0;
  for (int r = 0; r < 4; r++)
    for (int64_t i = 0; i < rows[r].tape->size; i++) {
      double t = ad_tensor_get(rows[r].tape, i), d = t - rows[r].hand[i];
      char label[32];
      snprintf(label, sizeof label, "%s[%lld]", rows[r].name, (long long)i);
      printf("%-10s %20.12g %20.12g %12.3g\n", label, rows[r].hand[i], t, d);
      worst = fabs(d) > worst ? fabs(d) : worst;
    }
  printf("largest difference: %.3g\n", worst);

  /* the picture with gradients, while the tape still holds the graph */
  if (dot_back && !write_dot(ctx, g, L, dot_back, AD_DOT_BACKWARD)) goto out;

  /* one SGD step: p -= lr * dL/dp */
  const double lr = 0.1;
  for (int i = 0; i < 4; i++)
    for (int64_t j = 0; j < params[i]->size; j++)
      ad_tensor_set(params[i], j,
                    ad_tensor_get(params[i], j) - lr * ad_tensor_get(params[i]->grad, j));
  printf("\nafter one SGD step (lr = %g)\n", lr);
  print_vals("W1", W1);
  print_vals("b1", b1);
  print_vals("W2", W2);
  print_vals("b2", b2);

  /* the loss at the new weights, without recording */
  ad_tape_reset(ctx);
  ad_set_grad_enabled(ctx, false);
  ad_tensor *a1n = ad_sigmoid(ctx, ad_add(ctx, ad_matmul(ctx, W1, x, false, false), b1));
  ad_tensor *yn = ad_sigmoid(ctx, ad_add(ctx, ad_matmul(ctx, W2, a1n, false, false), b2));
  ad_tensor *Ln = ad_square(ctx, ad_sub(ctx, y, yn));
  ad_set_grad_enabled(ctx, true);
  if (!Ln) goto out;
  printf("L after the step = %.12g (was %.12g)\n", ad_tensor_item(Ln),
         (y_init[0] - yh) * (y_init[0] - yh));
  rc = 0;

out:
  if (rc) fprintf(stderr, "worked_example: %s\n", ad_last_error(ctx));
  ad_graph_free(g);
  ad_tape_reset(ctx);
  for (int i = 0; i < 4; i++) ad_tensor_free(params[i]);
  ad_tensor_free(x);
  ad_tensor_free(y);
  ad_ctx_free(ctx);
  return rc;
}
