/* conv_worked_example: backpropagation through a convolution and a
 * max-pool, by the tape and by hand, side by side (docs/tutorial-cnn.md).
 *
 *   x: 4x4 input, w: 2x2 kernel (one image, one channel, float64)
 *   y = conv2d(x, w), stride 1, no padding       3x3
 *   p = max_pool2d(y, 2x2, stride 1)             2x2 (the windows overlap)
 *   L = sum(p)
 *
 * Prints the forward values and each window's argmax, the gradients the
 * tape computes (dL/dp, dL/dy, dL/dw, dL/dx), the same gradients by hand
 *   dL/dy: each window's dL/dp goes to its argmax (first maximum on a
 *          tie), overlapping windows add
 *   dL/dw: the correlation of x with dL/dy
 *   dL/dx: the full convolution of dL/dy with w (the kernel flipped and
 *          slid over dL/dy padded with zeros)
 * and by the engine's ops (conv2d_weight, conv_transpose2d), with their
 * differences; then how the engine computes them: im2col and matrix
 * products, with the numbers.
 *
 *   conv_worked_example [--trace] [--dot FILE]
 *
 * --trace prints the backward pass step by step (ad_graph_trace_begin);
 * --dot writes the graph with its gradients (ad_graph_dot, backward view)
 * as Graphviz DOT.
 * Exit status 0, 1 on an error or a difference, 2 for a usage error. */
#include <autodiff/ad.h>

#include <math.h>
#include <string.h>

enum { H = 4, K = 2, HO = H - K + 1, HP = HO - 1 }; /* 4x4 -> 3x3 -> 2x2 */

static const double x_init[H * H] = {1, 2, 0, 1, 0, 1, 3, 1, 1, 1, 0, 2, 1, 0, 0, 1};
static const double w_init[K * K] = {1, -1, 0, 2};

/* Prints "name" and then the rows of a rows x cols grid. */
static void print_grid(const char *name, const double *v, int rows, int cols) {
  printf("%s\n", name);
  for (int r = 0; r < rows; r++) {
    for (int c = 0; c < cols; c++) printf("%6.12g", v[r * cols + c]);
    printf("\n");
  }
}

static void tensor_vals(const ad_tensor *t, double *v) {
  for (int64_t i = 0; i < t->size; i++) v[i] = ad_tensor_get(t, i);
}

static void print_tensor(const char *name, const ad_tensor *t, int rows, int cols) {
  double v[H * H];
  tensor_vals(t, v);
  print_grid(name, v, rows, cols);
}

/* Largest |a[i] - b[i]| over n values. */
static double max_diff(const double *a, const double *b, int n) {
  double d = 0;
  for (int i = 0; i < n; i++) d = fmax(d, fabs(a[i] - b[i]));
  return d;
}

int main(int argc, char **argv) {
  bool trace = false;
  const char *dot = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--trace")) {
      trace = true;
    } else if (!strcmp(argv[i], "--dot") && i + 1 < argc) {
      dot = argv[++i];
    } else {
      fprintf(stderr, "usage: conv_worked_example [--trace] [--dot FILE]\n");
      return 2;
    }
  }

  ad_ctx *ctx = ad_ctx_new();
  if (!ctx) return 1;
  const int64_t sx[4] = {1, 1, H, H}, sw[4] = {1, 1, K, K};
  ad_tensor *x = ad_from_data(ctx, AD_F64, 4, sx, x_init);
  ad_tensor *w = ad_from_data(ctx, AD_F64, 4, sw, w_init);
  ad_graph *g = ad_graph_new(ctx);
  int rc = 1;
  if (!x || !w || !g) goto out;
  ad_tensor_set_requires_grad(x, true);
  ad_tensor_set_requires_grad(w, true);

  /* forward: three ops on the tape */
  const ad_pool2d_opts pool = {.stride = {1, 1}};
  ad_tensor *y = ad_conv2d(ctx, x, w, NULL, NULL); /* stride 1, no padding */
  ad_tensor *p = ad_max_pool2d(ctx, y, K, K, &pool);
  ad_tensor *L = ad_sum(ctx, p);
  if (!L || ad_tensor_retain_grad(y) != AD_OK || ad_tensor_retain_grad(p) != AD_OK) goto out;
  const char *names[] = {"x", "w", "y", "p", "L"};
  ad_tensor *named[] = {x, w, y, p, L};
  for (int i = 0; i < 5; i++) ad_graph_name(g, named[i], names[i]);

  printf("forward pass\n");
  print_grid("x (input, 4x4)", x_init, H, H);
  print_grid("w (kernel, 2x2)", w_init, K, K);
  print_tensor("y = conv2d(x, w), stride 1, no padding (3x3)", y, HO, HO);
  double yv[HO * HO], pv[HP * HP];
  tensor_vals(y, yv);
  tensor_vals(p, pv);
  printf("y[0,1] = x[0,1] w[0,0] + x[0,2] w[0,1] + x[1,1] w[1,0] + x[1,2] w[1,1]\n");
  printf("       = %g*%g + %g*(%g) + %g*%g + %g*%g = %g\n", x_init[1], w_init[0], x_init[2],
         w_init[1], x_init[5], w_init[2], x_init[6], w_init[3], yv[1]);
  print_tensor("p = max_pool2d(y, 2x2, stride 1) (2x2)", p, HP, HP);

  /* each window's argmax, by hand: the first maximum in row-major order */
  int arg[HP * HP];
  for (int a = 0; a < HP; a++)
    for (int b = 0; b < HP; b++) {
      int best = -1, ties = 0;
      for (int u = 0; u < K; u++)
        for (int v = 0; v < K; v++) {
          int at = (a + u) * HO + b + v;
          if (best < 0 || yv[at] > yv[best])
            best = at, ties = 0;
          else if (yv[at] == yv[best])
            ties = at;
        }
      arg[a * HP + b] = best;
      printf("window (%d,%d): y[%d..%d, %d..%d], max %g at y[%d,%d]", a, b, a, a + 1, b, b + 1,
             yv[best], best / HO, best % HO);
      if (ties) printf(" (tie with y[%d,%d]: the first wins)", ties / HO, ties % HO);
      printf("\n");
    }
  printf("L = sum(p) = %.12g\n\n", ad_tensor_item(L));

  /* backward, observed (never changed) by the graph's trace */
  if (trace) printf("backward trace\n");
  ad_graph_trace_begin(g, trace ? stdout : NULL);
  ad_status st = ad_backward(ctx, L, NULL);
  ad_graph_trace_end(g);
  if (st != AD_OK) goto out;
  if (trace) printf("\n");
  if (dot) { /* the picture with gradients, while the tape holds the graph */
    FILE *f = fopen(dot, "w");
    if (!f) {
      fprintf(stderr, "conv_worked_example: cannot write %s\n", dot);
      goto out;
    }
    st = ad_graph_dot(g, f, L, AD_DOT_BACKWARD);
    if (fclose(f) != 0 && st == AD_OK) st = AD_ERR_IO;
    if (st != AD_OK) goto out;
  }

  printf("gradients from the tape\n");
  print_tensor("dL/dp", p->grad, HP, HP);
  print_tensor("dL/dy", y->grad, HO, HO);
  print_tensor("dL/dw", w->grad, K, K);
  print_tensor("dL/dx", x->grad, H, H);
  double dy[HO * HO], dw[K * K], dx[H * H];
  tensor_vals(y->grad, dy);
  tensor_vals(w->grad, dw);
  tensor_vals(x->grad, dx);

  /* the same gradients by hand */
  printf("\nby hand\n");
  double hdy[HO * HO] = {0}, hdw[K * K] = {0}, hdx[H * H] = {0};
  for (int k = 0; k < HP * HP; k++) hdy[arg[k]] += ad_tensor_get(p->grad, k);
  print_grid("dL/dy: each window's dL/dp added at its argmax", hdy, HO, HO);
  for (int u = 0; u < K; u++)
    for (int v = 0; v < K; v++)
      for (int i = 0; i < HO; i++)
        for (int j = 0; j < HO; j++)
          hdw[u * K + v] += x_init[(i + u) * H + j + v] * hdy[i * HO + j];
  print_grid("dL/dw[u,v] = sum over i,j of x[i+u, j+v] dL/dy[i,j] (x correlated with dL/dy)", hdw,
             K, K);
  printf("dL/dw[0,0] =");
  for (int i = 0, first = 1; i < HO * HO; i++)
    if (hdy[i] != 0) printf(" %sx[%d,%d]*%g", first ? "" : "+ ", i / HO, i % HO, hdy[i]), first = 0;
  printf(" =");
  for (int i = 0, first = 1; i < HO * HO; i++)
    if (hdy[i] != 0)
      printf(" %s%g*%g", first ? "" : "+ ", x_init[(i / HO) * H + i % HO], hdy[i]), first = 0;
  printf(" = %g\n", hdw[0]);
  /* full convolution: dL/dy padded by K - 1 zeros, the kernel flipped */
  double pad[(HO + 2) * (HO + 2)] = {0}, flip[K * K];
  for (int i = 0; i < HO; i++)
    for (int j = 0; j < HO; j++) pad[(i + 1) * (HO + 2) + j + 1] = hdy[i * HO + j];
  for (int u = 0; u < K; u++)
    for (int v = 0; v < K; v++) flip[u * K + v] = w_init[(K - 1 - u) * K + K - 1 - v];
  for (int r = 0; r < H; r++)
    for (int c = 0; c < H; c++)
      for (int u = 0; u < K; u++)
        for (int v = 0; v < K; v++)
          hdx[r * H + c] += pad[(r + u) * (HO + 2) + c + v] * flip[u * K + v];
  print_grid("dL/dy padded with a border of K - 1 = 1 zeros (5x5)", pad, HO + 2, HO + 2);
  print_grid("the kernel flipped (rotated 180 degrees)", flip, K, K);
  print_grid("dL/dx: the flipped kernel slid over the padded dL/dy (full convolution)", hdx, H, H);

  /* and by the engine's ops, without recording */
  ad_set_grad_enabled(ctx, false);
  ad_tensor *ow = ad_conv2d_weight(ctx, x, y->grad, K, K, NULL);
  ad_tensor *ox = ad_conv_transpose2d(ctx, y->grad, w, NULL, NULL);
  ad_set_grad_enabled(ctx, true);
  if (!ow || !ox) goto out;
  double odw[K * K], odx[H * H];
  tensor_vals(ow, odw);
  tensor_vals(ox, odx);

  printf("\nhand and ops vs the tape (largest difference)\n");
  printf("dL/dy  routing by hand                  %g\n", max_diff(hdy, dy, HO * HO));
  printf("dL/dw  correlation by hand              %g\n", max_diff(hdw, dw, K * K));
  printf("dL/dw  conv2d_weight(x, dL/dy)          %g\n", max_diff(odw, dw, K * K));
  printf("dL/dx  full convolution by hand         %g\n", max_diff(hdx, dx, H * H));
  printf("dL/dx  conv_transpose2d(dL/dy, w)       %g\n", max_diff(odx, dx, H * H));
  double worst = fmax(
      fmax(max_diff(hdy, dy, HO * HO), max_diff(hdw, dw, K * K)),
      fmax(fmax(max_diff(odw, dw, K * K), max_diff(hdx, dx, H * H)), max_diff(odx, dx, H * H)));

  /* how the engine computes them: im2col, then matrix products */
  printf("\nim2col: column (i,j) of col holds the window of x under y[i,j]\n");
  double col[K * K][HO * HO];
  for (int u = 0; u < K; u++)
    for (int v = 0; v < K; v++)
      for (int i = 0; i < HO; i++)
        for (int j = 0; j < HO; j++) col[u * K + v][i * HO + j] = x_init[(i + u) * H + j + v];
  printf("  x, the window of y[0,1] in brackets   column (0,1) of col\n");
  for (int r = 0; r < H; r++) { /* row r of x beside tap r of the column */
    char line[48];
    int n = 0;
    for (int c = 0; c < H; c++)
      n += snprintf(line + n, sizeof line - (size_t)n, "%s%3g",
                    r < K && c == 1       ? " ["
                    : r < K && c == K + 1 ? " ]"
                                          : "  ",
                    x_init[r * H + c]);
    printf("  %-36s  tap (%d,%d): x[%d,%d] = %g\n", line, r / K, r % K, r / K, 1 + r % K,
           col[r][1]);
  }
  printf("col (4x9): one row per kernel tap (u,v), one column per output pixel (i,j)\n");
  printf("       ");
  for (int i = 0; i < HO * HO; i++) printf("  (%d,%d)", i / HO, i % HO);
  printf("\n");
  for (int r = 0; r < K * K; r++) {
    printf("(%d,%d)  ", r / K, r % K);
    for (int i = 0; i < HO * HO; i++) printf("%7.12g", col[r][i]);
    printf("\n");
  }
  double gy[HO * HO] = {0}, gw[K * K] = {0}, dcol[K * K][HO * HO], gx[H * H] = {0};
  for (int i = 0; i < HO * HO; i++)
    for (int r = 0; r < K * K; r++) gy[i] += w_init[r] * col[r][i];
  printf("forward  y (1x9) = w as a row (1x4) times col (4x9):\n        ");
  for (int i = 0; i < HO * HO; i++) printf("%7.12g", gy[i]);
  printf("\n");
  for (int r = 0; r < K * K; r++)
    for (int i = 0; i < HO * HO; i++) gw[r] += dy[i] * col[r][i];
  printf("backward dL/dw (1x4) = dL/dy as a row (1x9) times col^T (9x4):\n        ");
  for (int r = 0; r < K * K; r++) printf("%7.12g", gw[r]);
  printf("\n");
  printf("backward dcol (4x9) = w^T (4x1) times dL/dy as a row (1x9):\n");
  for (int r = 0; r < K * K; r++) {
    printf("(%d,%d)  ", r / K, r % K);
    for (int i = 0; i < HO * HO; i++) {
      dcol[r][i] = w_init[r] * dy[i] + 0.0; /* + 0.0: no -0 printed */
      printf("%7.12g", dcol[r][i]);
    }
    printf("\n");
  }
  for (int r = 0; r < K * K; r++)
    for (int i = 0; i < HO * HO; i++) gx[(i / HO + r / K) * H + i % HO + r % K] += dcol[r][i];
  print_grid("col2im adds each column of dcol back into its window: dL/dx", gx, H, H);
  worst = fmax(worst, fmax(max_diff(gy, yv, HO * HO), max_diff(gw, dw, K * K)));
  worst = fmax(worst, max_diff(gx, dx, H * H));
  printf("largest difference from the tape: %g\n", worst);
  rc = worst == 0 ? 0 : 1;

out:
  if (rc && ad_last_status(ctx) != AD_OK)
    fprintf(stderr, "conv_worked_example: %s\n", ad_last_error(ctx));
  ad_graph_free(g);
  ad_tape_reset(ctx);
  ad_tensor_free(x);
  ad_tensor_free(w);
  ad_ctx_free(ctx);
  return rc;
}
