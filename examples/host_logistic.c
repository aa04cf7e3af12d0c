/*
 * A C host with its own logistic-regression objective asks metastep for a tuned step size,
 * then trains with it on its own buffers.
 *
 *   1. The host's data and objective are plain C: arrays, loops, its own value, gradient and
 *      Hessian-vector product, registered with ms_objective_new_raw (no engine operations in
 *      the callbacks; the engine differentiates through them with the callbacks themselves).
 *   2. metastep meta-trains gradient descent's step size (stored as log_lr) on the host's
 *      objective: G = (1/T) log f(w_T) over T = 40 steps, meta-gradients by back-propagation
 *      through the unroll, Adam on log_lr.
 *   3. The host trains from w = 0 with the initial and with the tuned step size, stepping the
 *      optimizer on its own double w[D] (ms_optim_state_step_buffer), and prints both losses.
 *
 * Exits nonzero unless the tuned step size trains to a lower loss. Built by CMake (target
 * example_host_logistic, run by ctest) and by tests/sh/test_install.sh against an installed
 * metastep: cc host_logistic.c $(pkg-config --cflags --libs metastep).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "metastep/metastep.h"

#define N 200
#define D 5
#define T 40

typedef struct data {
  double X[N][D], y[N], l2;
} data;

/* margins z_i = (2 y_i - 1) x_i . w */
static void margins(const data *dt, const double *w, double *z) {
  for (int i = 0; i < N; i++) {
    double s = 0;
    for (int j = 0; j < D; j++) s += dt->X[i][j] * w[j];
    z[i] = (2 * dt->y[i] - 1) * s;
  }
}

static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
static double sigmoid(double x) { return 1 / (1 + exp(-x)); }

/* f(w) = mean_i softplus(-z_i) + l2/2 |w|^2 */
static double loss(const data *dt, const double *w) {
  double z[N], f = 0, r = 0;
  margins(dt, w, z);
  for (int i = 0; i < N; i++) f += softplus(-z[i]) / N;
  for (int j = 0; j < D; j++) r += w[j] * w[j];
  return f + 0.5 * dt->l2 * r;
}

static void gradient(const data *dt, const double *w, double *g) {
  double z[N];
  margins(dt, w, z);
  for (int j = 0; j < D; j++) g[j] = dt->l2 * w[j];
  for (int i = 0; i < N; i++) {
    double c = -(2 * dt->y[i] - 1) * sigmoid(-z[i]) / N;
    for (int j = 0; j < D; j++) g[j] += c * dt->X[i][j];
  }
}

/* ---- the callbacks metastep calls (w and v arrive contiguous, [D]) ---- */

static int cb_value(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  return ms_tensor_scalar(ctx, loss(ud, ms_tensor_data(w)), out);
}

static int cb_grad(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  double g[D];
  int64_t d = D;
  gradient(ud, ms_tensor_data(w), g);
  return ms_tensor_from_data(ctx, 1, &d, g, out);
}

/* H v = X^T (p (1 - p) X v) / n + l2 v with p = sigmoid(X w) */
static int cb_hvp(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor *v, ms_tensor **out) {
  const data *dt = ud;
  const double *x = ms_tensor_data(w), *y = ms_tensor_data(v);
  double h[D];
  int64_t d = D;
  for (int j = 0; j < D; j++) h[j] = dt->l2 * y[j];
  for (int i = 0; i < N; i++) {
    double xw = 0, xv = 0;
    for (int j = 0; j < D; j++) xw += dt->X[i][j] * x[j], xv += dt->X[i][j] * y[j];
    double p = sigmoid(xw), c = p * (1 - p) * xv / N;
    for (int j = 0; j < D; j++) h[j] += c * dt->X[i][j];
  }
  return ms_tensor_from_data(ctx, 1, &d, h, out);
}

/* Trains from w = 0 for T steps of GD with the optimizer's stored log_lr theta, on the host's
 * buffer w; returns f(w_T). */
static double train(ms_ctx *ctx, const data *dt, ms_optim *gd, ms_tensor *theta, int *ok) {
  double w[D] = {0}, g[D];
  int64_t d = D;
  ms_tensor *w0 = NULL;
  ms_optim_state *s = NULL;
  *ok = ms_tensor_wrap(ctx, w, 1, &d, &w0) == MS_OK &&
        ms_optim_start(ctx, gd, theta ? &theta : NULL, w0, &s) == MS_OK;
  for (int t = 0; *ok && t < T; t++) {
    gradient(dt, w, g);
    *ok = ms_optim_state_step_buffer(ctx, s, D, w, loss(dt, w), g) == MS_OK;
  }
  ms_optim_state_free(s);
  ms_tensor_release(w0);
  return loss(dt, w);
}

int main(void) {
  static data dt; /* 8 kB: static storage, written once here, read-only afterwards */
  ms_rng rng;
  ms_rng_seed(&rng, 42);
  double wtrue[D];
  for (int j = 0; j < D; j++) wtrue[j] = ms_rng_normal(&rng);
  for (int i = 0; i < N; i++) {
    double s = 0;
    for (int j = 0; j < D; j++) s += (dt.X[i][j] = ms_rng_normal(&rng)) * wtrue[j];
    dt.y[i] = s + 0.5 * ms_rng_normal(&rng) > 0;
  }
  dt.l2 = 1e-3;

  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  if (ctx == NULL) return 1;
  ms_objective_def def;
  memset(&def, 0, sizeof def);
  def.name = "host_logistic";
  def.dim = D;
  def.value = cb_value;
  def.grad = cb_grad;
  def.hvp = cb_hvp;
  def.ud = &dt;
  ms_objective *obj = NULL;
  ms_optim *gd = NULL;
  ms_tensor *w0 = NULL;
  ms_train_result tr;
  memset(&tr, 0, sizeof tr);
  int64_t d = D;
  ms_optim_options oo;
  memset(&oo, 0, sizeof oo);
  oo.lr = 0.05;
  oo.log_lr = 1;
  int st = ms_objective_new_raw(ctx, &def, &obj);
  if (!st) st = ms_optim_builtin(ctx, MS_OPTIM_GD, &oo, &gd);
  if (!st) st = ms_tensor_zeros(ctx, 1, &d, &w0);
  if (st) goto out;

  ms_task task = {obj, NULL, w0, NULL};
  ms_meta_spec spec = ms_meta_spec_one(gd, &task, T, MS_META_LOG, MS_METHOD_REVERSE);
  ms_train_options to;
  memset(&to, 0, sizeof to);
  to.iterations = 60;
  to.meta_lr = 0.1;
  to.meta_optimizer = MS_METAOPT_ADAM;
  to.schedule = MS_SCHEDULE_CONSTANT;
  if ((st = ms_meta_train(ctx, &spec, &to, &tr))) goto out;
  double log_lr = NAN;
  ms_tensor_item(ctx, tr.theta[0], &log_lr);

  int ok0, ok1;
  double before = train(ctx, &dt, gd, NULL, &ok0), after = train(ctx, &dt, gd, tr.theta[0], &ok1);
  printf("step size %.4f: loss after %d steps %.6f\n", oo.lr, T, before);
  printf("step size %.4f (tuned): loss after %d steps %.6f\n", exp(log_lr), T, after);
  if (!ok0 || !ok1) st = MS_ECALLBACK;
  if (!st && !(after < before)) {
    fprintf(stderr, "the tuned step size did not lower the loss\n");
    st = MS_ENUMERIC;
  }
out:
  if (st && ms_ctx_error(ctx)[0]) fprintf(stderr, "metastep: %s\n", ms_ctx_error(ctx));
  ms_train_result_clear(ctx, &tr);
  ms_tensor_release(w0);
  ms_optim_release(gd);
  ms_objective_release(obj);
  if (!st && ms_ctx_bytes(ctx) != 0) st = MS_ESTATE;
  ms_ctx_free(ctx);
  return st ? 1 : 0;
}
