/*
 * Embedding metastep in a C program: tune the step size eta of gradient descent on a
 * quadratic by meta-gradient descent on G(eta) = (1/T) log f(w_T), with no Lua at all and
 * no hand-written unroll: the engine's learning-to-learn API does the work.
 *
 *   1. an objective (ms_objective_quadratic) and an optimizer (ms_optim_builtin, GD);
 *   2. a task (objective + start point) and a spec (optimizer, T, meta-objective, method);
 *   3. ms_meta_value_and_grad: G and dG/deta by back-propagation through the unroll
 *      (MS_METHOD_REVERSE), checked against the stable log-space unroll and the closed form;
 *   4. ms_meta_train: meta-gradient descent on eta with steps meta_lr / sqrt(k), checked
 *      against the minimizer of G found independently from the closed form below.
 *
 * Build: part of the CMake build (target example_tune_step), run by ctest.
 * Prints "N passed, N failed" like the C tests and exits nonzero on a failure.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "metastep/metastep.h"

#define D 10
#define T 40

static int passes, fails;

static void require(int ok, const char *what, ms_ctx *ctx) {
  if (ok) {
    passes++;
  } else {
    fprintf(stderr, "%s failed: %s\n", what, ms_ctx_error(ctx));
    fails++;
  }
}

/* The closed form on H = diag(lam), w* = 0: f(w_T) = 1/2 sum_i lam_i c_i^2 (1 - eta lam_i)^(2T)
 * with c = w_0, so G(eta) = (1/T) log f(w_T). Plain doubles, independent of the engine. */
static double closed_G(const double *lam, const double *c, double eta) {
  double s = 0;
  for (int i = 0; i < D; i++) s += 0.5 * lam[i] * c[i] * c[i] * pow(1 - eta * lam[i], 2.0 * T);
  return log(s) / T;
}

/* d value / d eta of a method at eta = 0.05 (NaN on failure). */
static double meta_grad(ms_ctx *ctx, ms_meta_spec spec, ms_meta_method method, double *value) {
  ms_meta_out out;
  double g = NAN;
  spec.method = method;
  int st = ms_meta_value_and_grad(ctx, &spec, &out);
  require(st == MS_OK && out.status == MS_META_OK, ms_meta_method_name(method), ctx);
  if (st == MS_OK) {
    ms_tensor_item(ctx, out.grad[0], &g);
    *value = out.value;
    printf("%-8s G = %.17g  dG/deta = %.17g\n", ms_meta_method_name(method), out.value, g);
  }
  ms_meta_out_clear(&out);
  return g;
}

int main(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  if (ctx == NULL) return 1;

  /* f(w) = 1/2 w^T H w with H = diag(1, 2, ..., 10); w_0 drawn from a seeded generator */
  double lam[D], c[D];
  int64_t d = D;
  ms_rng rng;
  ms_rng_seed(&rng, 7);
  for (int i = 0; i < D; i++) lam[i] = 1.0 + i, c[i] = ms_rng_normal(&rng);
  ms_tensor *lamt = NULL, *H = NULL, *w0 = NULL;
  ms_objective *obj = NULL;
  ms_optim *gd = NULL;
  require(!ms_tensor_from_data(ctx, 1, &d, lam, &lamt), "eigenvalues", ctx);
  require(!ms_tensor_diag(ctx, lamt, &H), "H", ctx);
  require(!ms_tensor_from_data(ctx, 1, &d, c, &w0), "w0", ctx);
  require(!ms_objective_quadratic(ctx, H, NULL, 0.0, &obj), "quadratic", ctx);

  /* GD, w' = w - lr grad f(w), with its meta-parameter "lr" starting at 0.05 */
  ms_optim_options oo;
  memset(&oo, 0, sizeof oo);
  oo.lr = 0.05;
  require(!ms_optim_builtin(ctx, MS_OPTIM_GD, &oo, &gd), "gd", ctx);
  if (fails) goto out;

  /* one task, T steps, G = (1/T) log f(w_T) */
  ms_task task = {obj, NULL, w0, NULL};
  ms_meta_spec spec = ms_meta_spec_one(gd, &task, T, MS_META_LOG, MS_METHOD_REVERSE);

  /* the meta-gradient by back-propagation agrees with the stable unroll and the closed form */
  double Gr = NAN, Gs = NAN, Ge = NAN;
  double gr = meta_grad(ctx, spec, MS_METHOD_REVERSE, &Gr);
  double gs = meta_grad(ctx, spec, MS_METHOD_STABLE, &Gs);
  double ge = meta_grad(ctx, spec, MS_METHOD_EXACT, &Ge);
  require(fabs(gr - gs) <= 1e-10 * fabs(gs), "reverse vs stable meta-gradient", ctx);
  require(fabs(gr - ge) <= 1e-10 * fabs(ge), "reverse vs exact meta-gradient", ctx);
  require(fabs(Gr - Gs) <= 1e-10 * fabs(Gs) && fabs(Gr - Ge) <= 1e-10 * fabs(Ge), "values agree",
          ctx);
  require(fabs(Gr - closed_G(lam, c, 0.05)) <= 1e-10 * fabs(Gr), "value matches the closed form",
          ctx);

  /* the minimizer of G, independently: a fine grid over eta in (0, 2/10) on the closed form */
  double eta_star = 0, G_star = INFINITY;
  for (int k = 1; k < 200000; k++) {
    double eta = 0.2 * k / 200000.0, G = closed_G(lam, c, eta);
    if (G < G_star) G_star = G, eta_star = eta;
  }

  /* meta-gradient descent on lr from 0.01: lr_k = meta_lr / sqrt(k), reverse mode */
  ms_tensor *lr0 = NULL;
  require(!ms_tensor_scalar(ctx, 0.01, &lr0), "lr0", ctx);
  ms_tensor *theta[1] = {lr0};
  spec.theta = theta;
  spec.method = MS_METHOD_REVERSE;
  ms_train_options to;
  memset(&to, 0, sizeof to);
  to.iterations = 2000;
  to.meta_lr = 0.003;
  to.schedule = MS_SCHEDULE_INV_SQRT;
  to.meta_optimizer = MS_METAOPT_SGD;
  ms_train_result tr;
  require(!ms_meta_train(ctx, &spec, &to, &tr), "meta-train", ctx);
  double eta = NAN;
  if (tr.theta[0]) ms_tensor_item(ctx, tr.theta[0], &eta);
  printf("learned lr = %.8f after %lld iterations; argmin G = %.8f (G = %.6f vs %.6f)\n", eta,
         (long long)tr.n, eta_star, closed_G(lam, c, eta), G_star);
  require(fabs(eta - eta_star) < 1e-4, "learned lr near the minimizer of G", ctx);
  ms_train_result_clear(ctx, &tr);
  ms_tensor_release(lr0);

out:
  ms_optim_release(gd);
  ms_objective_release(obj);
  ms_tensor_release(w0);
  ms_tensor_release(H);
  ms_tensor_release(lamt);
  require(ms_ctx_bytes(ctx) == 0, "no leaks", ctx);
  ms_ctx_free(ctx);
  printf("%d passed, %d failed\n", passes, fails);
  return fails ? 1 : 0;
}
