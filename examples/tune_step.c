/*
 * Embedding metastep in a C program: tune the step size of gradient descent on a
 * quadratic by meta-gradient descent on G(eta) = (1/T) log f(w_T), with no Lua at all.
 *
 * The meta-gradient is computed twice, by back-propagation through the unrolled
 * optimizer on the engine's tape and by the engine's stable log-space routine, and
 * the two must agree; then eta is trained with steps 0.01/sqrt(k).
 * Build: part of the CMake build (target example_tune_step), run by ctest.
 * Prints "N passed, N failed" like the other C tests.
 */
#include <math.h>
#include <stdio.h>

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

/* G(eta) and dG/deta by reverse mode through T steps of w <- w - eta grad f(w). */
static int meta_reverse(ms_ctx *ctx, ms_objective *obj, ms_tensor *w0, double eta, double *G,
                        double *dG) {
  ms_level *tape;
  ms_tensor *e0 = NULL, *e = NULL, *w = NULL, *fT = NULL, *logf = NULL, *g = NULL;
  int st = ms_ad_push(ctx, MS_AD_REVERSE, &tape);
  if (st) return st;
  if (!(st = ms_tensor_scalar(ctx, eta, &e0)) && !(st = ms_ad_watch(ctx, tape, e0, NULL, &e))) {
    w = ms_tensor_retain(w0);
    for (int t = 0; t < T && !st; t++) {
      ms_tensor *gw = NULL, *step = NULL, *next = NULL;
      if (!(st = ms_objective_grad(ctx, obj, w, &gw)) && !(st = ms_binary(ctx, MS_MUL, gw, e, &step)))
        st = ms_binary(ctx, MS_SUB, w, step, &next);
      ms_tensor_release(gw);
      ms_tensor_release(step);
      ms_tensor_release(w);
      w = next;
    }
    if (!st && !(st = ms_objective_value(ctx, obj, w, &fT)) && !(st = ms_unary(ctx, MS_LOG, fT, &logf)))
      st = ms_ad_pop(ctx, tape);
    if (!st) st = ms_ad_gradient(ctx, tape, logf, NULL, 1, &e, &g);
    if (!st) {
      ms_tensor_item(ctx, logf, G);
      ms_tensor_item(ctx, g, dG);
      *G /= T;
      *dG /= T;
    }
  }
  ms_tensor_release(g);
  ms_tensor_release(logf);
  ms_tensor_release(fT);
  ms_tensor_release(w);
  ms_tensor_release(e);
  ms_tensor_release(e0);
  ms_ad_free(tape);
  return st;
}

int main(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  if (ctx == NULL) return 1;
  /* H = Q diag(1..10) Q^T with Q from the QR of a seeded Gaussian matrix */
  ms_tensor *lam, *A, *Q, *R, *QD, *Qt, *H, *w0, *D_;
  int64_t dd[2] = {D, D}, d1[1] = {D};
  ms_objective *obj = NULL;
  ms_rng rng;
  ms_rng_seed(&rng, 7);
  require(!ms_tensor_linspace(ctx, 1, 10, D, &lam), "linspace", ctx);
  require(!ms_tensor_randn(ctx, &rng, 2, dd, 0, 1, &A), "randn", ctx);
  require(!ms_qr(ctx, A, &Q, &R), "qr", ctx);
  require(!ms_tensor_diag(ctx, lam, &D_), "diag", ctx);
  require(!ms_matmul(ctx, Q, D_, &QD), "matmul", ctx);
  require(!ms_tensor_transpose(ctx, Q, 0, 1, &Qt), "transpose", ctx);
  require(!ms_matmul(ctx, QD, Qt, &H), "matmul", ctx);
  /* symmetrize exactly: (H + H^T) / 2 */
  ms_tensor *Ht, *S;
  require(!ms_tensor_transpose(ctx, H, 0, 1, &Ht), "transpose", ctx);
  require(!ms_binary(ctx, MS_ADD, H, Ht, &S), "add", ctx);
  ms_tensor_release(H);
  require(!ms_binary_scalar(ctx, MS_MUL, S, 0.5, 0, &H), "scale", ctx);
  require(!ms_tensor_randn(ctx, &rng, 1, d1, 0, 1, &w0), "randn", ctx);
  require(!ms_objective_quadratic(ctx, H, NULL, 0.0, &obj), "quadratic", ctx);

  /* the two meta-gradient methods agree */
  double G, dG;
  ms_meta_result res;
  ms_meta_optimizer gd = {MS_META_GD, 0.05, 0};
  require(!meta_reverse(ctx, obj, w0, 0.05, &G, &dG), "reverse meta-gradient", ctx);
  require(!ms_meta_stable_quadratic(ctx, H, w0, NULL, &gd, T, MS_META_LOG, &res), "stable", ctx);
  require(fabs(dG - res.grad[0]) <= 1e-9 * fabs(res.grad[0]), "reverse vs stable agree", ctx);
  require(fabs(G - res.value) <= 1e-12 * fabs(res.value), "values agree", ctx);

  /* meta-gradient descent on eta */
  double eta = 0.01;
  for (int k = 1; k <= 300; k++) {
    if (meta_reverse(ctx, obj, w0, eta, &G, &dG)) {
      require(0, "meta step", ctx);
      break;
    }
    eta -= 0.01 / sqrt((double)k) * dG;
    if (eta < 0) eta = 0;
  }
  printf("learned eta = %.6f (2/(lmin+lmax) = %.6f)\n", eta, 2.0 / 11.0);
  /* the learned step minimizes G: dG vanishes (or G has a kink there) and eta is near 2/11 */
  require(fabs(eta - 2.0 / 11.0) < 0.02, "eta near 2/(lmin + lmax)", ctx);

  ms_objective_release(obj);
  ms_tensor *all[] = {lam, A, Q, R, QD, Qt, H, w0, D_, Ht, S};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) ms_tensor_release(all[i]);
  require(ms_ctx_bytes(ctx) == 0, "no leaks", ctx);
  ms_ctx_free(ctx);
  printf("%d passed, %d failed\n", passes, fails);
  return fails ? 1 : 0;
}
