/*
 * Meta-training Adam's step size on a logistic regression from C alone: no Lua state, no Lua
 * header, only the engine library (metastep_engine).
 *
 * The task: n = 200 points x_i ~ N(0, I) in d = 10 dimensions, labelled by a random
 * hyperplane (y_i = 1 when x_i . w_true > 0), L2-regularized logistic loss. The optimizer:
 * Adam with its step size stored as log_lr (so it stays positive), unrolled for T = 50 steps
 * from w_0 = 0. The meta-objective: G = (1/T) log f(w_T). ms_meta_train runs Adam on log_lr
 * with meta-gradients by back-propagation through the unroll.
 *
 * Checks: the reverse meta-gradient matches finite differences at the initial log_lr, the
 * meta-objective decreases, and every engine byte is released at the end.
 * Build: part of the CMake build (target example_adam_logistic), run by ctest.
 * Prints "N passed, N failed" and exits nonzero on a failure.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "metastep/metastep.h"

#define N 200
#define D 10
#define T 50

static int passes, fails;

static void require(int ok, const char *what, ms_ctx *ctx) {
  if (ok) {
    passes++;
  } else {
    fprintf(stderr, "%s failed: %s\n", what, ms_ctx_error(ctx));
    fails++;
  }
}

/* G and dG/dlog_lr at the spec's theta by one method (NaN on failure). */
static double meta_grad(ms_ctx *ctx, ms_meta_spec spec, ms_meta_method method, double *value) {
  ms_meta_out out;
  double g = NAN;
  spec.method = method;
  int st = ms_meta_value_and_grad(ctx, &spec, &out);
  require(st == MS_OK && out.status == MS_META_OK, ms_meta_method_name(method), ctx);
  if (st == MS_OK) {
    ms_tensor_item(ctx, out.grad[0], &g);
    *value = out.value;
    printf("%-8s G = %.12f  dG/dlog_lr = %.12f\n", ms_meta_method_name(method), out.value, g);
  }
  ms_meta_out_clear(&out);
  return g;
}

int main(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  if (ctx == NULL) return 1;
  ms_tensor *X = NULL, *w_true = NULL, *s = NULL, *y = NULL, *log_lr = NULL;
  ms_objective *obj = NULL;
  ms_optim *adam = NULL;
  ms_train_result tr;
  memset(&tr, 0, sizeof tr);

  /* seeded synthetic data: X ~ N(0, 1), y = [X w_true > 0] */
  ms_rng rng;
  ms_rng_seed(&rng, 2021);
  int64_t xshape[2] = {N, D}, d = D;
  require(!ms_tensor_randn(ctx, &rng, 2, xshape, 0, 1, &X), "X", ctx);
  require(!ms_tensor_randn(ctx, &rng, 1, &d, 0, 1, &w_true), "w_true", ctx);
  if (fails) goto out;
  require(!ms_matvec(ctx, X, w_true, &s), "X w_true", ctx);
  if (fails) goto out;
  require(!ms_binary_scalar(ctx, MS_GT, s, 0.0, 0, &y), "labels", ctx);
  if (fails) goto out;
  require(!ms_objective_logistic(ctx, X, y, 1e-3, &obj), "logistic", ctx);

  /* Adam with log_lr = log(1e-3) as its meta-parameter (default beta1, beta2, eps) */
  ms_optim_options oo;
  memset(&oo, 0, sizeof oo);
  oo.lr = 1e-3;
  oo.log_lr = 1;
  require(!ms_optim_builtin(ctx, MS_OPTIM_ADAM, &oo, &adam), "adam", ctx);
  if (fails) goto out;

  ms_task task = {obj, NULL, NULL, NULL}; /* w_0 = 0 */
  ms_meta_spec spec = ms_meta_spec_one(adam, &task, T, MS_META_LOG, MS_METHOD_REVERSE);

  /* (b) back-propagation through the unroll agrees with central finite differences */
  double G0 = NAN, Gfd = NAN;
  double g_rev = meta_grad(ctx, spec, MS_METHOD_REVERSE, &G0);
  double g_fd = meta_grad(ctx, spec, MS_METHOD_FD, &Gfd);
  printf("relative difference %.2g\n", fabs(g_rev - g_fd) / fabs(g_fd));
  require(fabs(g_rev - g_fd) <= 1e-5 * fabs(g_fd), "reverse vs fd meta-gradient", ctx);

  /* meta-train log_lr with Adam: 100 iterations, meta step 0.5 / sqrt(k) */
  ms_train_options to;
  memset(&to, 0, sizeof to);
  to.iterations = 100;
  to.meta_lr = 0.5;
  to.schedule = MS_SCHEDULE_INV_SQRT;
  to.meta_optimizer = MS_METAOPT_ADAM;
  require(!ms_meta_train(ctx, &spec, &to, &tr), "meta-train", ctx);
  if (tr.theta[0] == NULL) goto out;

  /* (a) the meta-objective at the learned log_lr is lower than at the start */
  double theta = NAN, G1 = NAN;
  int status = -1;
  ms_tensor_item(ctx, tr.theta[0], &theta);
  log_lr = ms_tensor_retain(tr.theta[0]);
  ms_tensor *learned[1] = {log_lr};
  spec.theta = learned;
  require(!ms_meta_value(ctx, &spec, &G1, &status) && status == MS_META_OK, "meta value", ctx);
  printf("before: lr = %.6g  G = %.6f  f(w_T) = %.6f\n", 1e-3, G0, exp(T * G0));
  printf("after:  lr = %.6g  G = %.6f  f(w_T) = %.6f  (%lld iterations)\n", exp(theta), G1,
         exp(T * G1), (long long)tr.n);
  require(G1 < G0 - 0.01, "meta-objective decreased", ctx);

out:
  ms_train_result_clear(ctx, &tr);
  ms_tensor_release(log_lr);
  ms_optim_release(adam);
  ms_objective_release(obj);
  ms_tensor *all[] = {X, w_true, s, y};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) ms_tensor_release(all[i]);
  /* (c) nothing the engine allocated is still held */
  require(ms_ctx_bytes(ctx) == 0, "no engine bytes leak", ctx);
  ms_ctx_free(ctx);
  printf("%d passed, %d failed\n", passes, fails);
  return fails ? 1 : 0;
}
