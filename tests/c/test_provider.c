/* Step-size providers: a schedule, a tuned optimizer's settings, hypergradient descent. */
#include "check.h"
#include "metastep/metastep.h"

static void test_schedule(ms_ctx *ctx) {
  ms_step_params base = {0.1, 0.9, 0.999, 1e-8, 0.01, 0};
  double f[3] = {1, 0.5, 0.25};
  ms_provider *p = NULL;
  CHECK_OK(ctx, ms_provider_schedule(ctx, &base, 3, f, &p));
  ms_step_params s;
  double want[5] = {0.1, 0.05, 0.025, 0.025, 0.025};
  for (int t = 1; t <= 5; t++) {
    CHECK_OK(ctx, ms_provider_get(p, t, &s));
    CHECK(s.lr == want[t - 1] && s.t == t && s.beta1 == 0.9 && s.beta2 == 0.999 && s.eps == 1e-8 &&
          s.weight_decay == 0.01);
  }
  CHECK_FAILS(ctx, ms_provider_get(p, 0, &s), MS_EARG,
              "ms_provider_get: step t must be >= 1, got 0");
  /* callback-shaped: 1, 2, 3, ... */
  for (int t = 1; t <= 4; t++) {
    ms_step_params r = ms_provider_next(p);
    CHECK(r.t == t && r.lr == want[t - 1]);
  }
  CHECK(ms_provider_steps(p) == 4);
  ms_provider_free(p);
  f[1] = -1;
  CHECK_FAILS(ctx, ms_provider_schedule(ctx, &base, 3, f, &p), MS_EARG,
              "factors[1] (0-based) must be finite and >= 0, got -1");
  CHECK(p == NULL);
  base.lr = NAN;
  CHECK_FAILS(ctx, ms_provider_schedule(ctx, &base, 0, NULL, &p), MS_EARG, "base lr");
}

static void test_from_optim(ms_ctx *ctx) {
  ms_optim_options o;
  memset(&o, 0, sizeof o);
  o.lr = 0.5;
  o.log_lr = 1;
  ms_optim *gd = NULL, *mom = NULL, *adam = NULL;
  CHECK_OK(ctx, ms_optim_builtin(ctx, MS_OPTIM_GD, &o, &gd));
  /* a tuned theta: log_lr = log(0.3) -> lr 0.3; with a schedule 1, 1/2 on top */
  ms_tensor *th = NULL;
  CHECK_OK(ctx, ms_tensor_scalar(ctx, log(0.3), &th));
  double f[2] = {1, 0.5};
  CHECK_OK(ctx, ms_optim_set_schedule(ctx, gd, 2, f));
  ms_provider *p = NULL;
  ms_step_params s;
  CHECK_OK(ctx, ms_provider_from_optim(ctx, gd, &th, &p));
  CHECK_OK(ctx, ms_provider_get(p, 1, &s));
  CHECK_NEAR(s.lr, 0.3, 1e-15);
  CHECK_OK(ctx, ms_provider_get(p, 7, &s));
  CHECK_NEAR(s.lr, 0.15, 1e-15);
  ms_provider_free(p);
  /* momentum: lr and beta */
  memset(&o, 0, sizeof o);
  o.lr = 0.1;
  o.beta = 0.8;
  o.beta_set = 1;
  CHECK_OK(ctx, ms_optim_builtin(ctx, MS_OPTIM_MOMENTUM, &o, &mom));
  CHECK_OK(ctx, ms_provider_from_optim(ctx, mom, NULL, &p));
  CHECK_OK(ctx, ms_provider_get(p, 1, &s));
  CHECK(s.lr == 0.1 && s.beta1 == 0.8);
  ms_provider_free(p);
  /* adam: its fixed hyper-parameters */
  memset(&o, 0, sizeof o);
  o.lr = 0.01;
  CHECK_OK(ctx, ms_optim_builtin(ctx, MS_OPTIM_ADAM, &o, &adam));
  CHECK_OK(ctx, ms_provider_from_optim(ctx, adam, NULL, &p));
  CHECK_OK(ctx, ms_provider_get(p, 3, &s));
  CHECK(s.lr == 0.01 && s.beta1 == 0.9 && s.beta2 == 0.999 && s.eps == 1e-8);
  ms_provider_free(p);
  ms_optim_release(adam);
  ms_optim_release(mom);
  /* one step size per coordinate has no single answer */
  ms_tensor *lrs = NULL;
  int64_t d = 3;
  CHECK_OK(ctx, ms_tensor_full(ctx, 1, &d, 0.1, &lrs));
  memset(&o, 0, sizeof o);
  o.lr_init = lrs;
  ms_optim *per = NULL;
  CHECK_OK(ctx, ms_optim_builtin(ctx, MS_OPTIM_GD, &o, &per));
  CHECK_FAILS(ctx, ms_provider_from_optim(ctx, per, NULL, &p), MS_EARG,
              "meta-parameter 'lr' of 'gd' has 3 entries, expected 1");
  ms_optim_release(per);
  ms_tensor_release(lrs);
  ms_tensor_release(th);
  ms_optim_release(gd);
}

/* f(w) = 1/2 sum_i a_i w_i^2: SGD with lr from the hypergradient tuner, checked against the
 * recurrence lr <- clamp(lr + beta g_t . g_{t-1}) written out here, and against a constant lr. */
#define HD_N 3
#define HD_T 60
static double run_hd(ms_ctx *ctx, double lr0, double beta, double *lr_end, int use_provider) {
  const double a[HD_N] = {1, 2, 3};
  double w[HD_N] = {1, -1, 0.5}, g[HD_N], gprev[HD_N];
  ms_step_params base = {lr0, 0, 0, 0, 0, 0};
  ms_provider *p = NULL;
  if (use_provider) CHECK_OK(ctx, ms_provider_hypergradient(ctx, &base, beta, 0, 0.6, &p));
  double lr = lr0;
  for (int t = 1; t <= HD_T; t++) {
    for (int i = 0; i < HD_N; i++) g[i] = a[i] * w[i];
    if (p) {
      ms_step_params s;
      CHECK_OK(ctx, ms_provider_observe(p, HD_N, g, NULL));
      CHECK_OK(ctx, ms_provider_get(p, t, &s));
      lr = s.lr;
    } else if (t > 1 && beta > 0) {
      double dot = 0;
      for (int i = 0; i < HD_N; i++) dot += g[i] * gprev[i];
      lr = lr + beta * dot;
      if (lr > 0.6) lr = 0.6;
      if (lr < 0) lr = 0;
    }
    for (int i = 0; i < HD_N; i++) gprev[i] = g[i], w[i] -= lr * g[i];
  }
  double f = 0;
  for (int i = 0; i < HD_N; i++) f += 0.5 * a[i] * w[i] * w[i];
  *lr_end = lr;
  ms_provider_free(p);
  return f;
}

static void test_hypergradient(ms_ctx *ctx) {
  double lr_p, lr_r, lr_c;
  double fp = run_hd(ctx, 0.01, 0.01, &lr_p, 1);
  double fr = run_hd(ctx, 0.01, 0.01, &lr_r, 0);
  double fc = run_hd(ctx, 0.01, 0, &lr_c, 0);
  CHECK_NEAR(lr_p, lr_r, 1e-14);
  CHECK_NEAR(fp, fr, 1e-14);
  CHECK(lr_p > 0.05 && lr_c == 0.01); /* the step size grew from 0.01 */
  CHECK(fp < 0.01 * fc);              /* and the loss is far lower than with 0.01 throughout */
  /* errors: the tuner is left as it was */
  ms_step_params base = {0.1, 0, 0, 0, 0, 0};
  ms_provider *p = NULL;
  CHECK_FAILS(ctx, ms_provider_hypergradient(ctx, &base, -1, 0, 0, &p), MS_EARG,
              "hyper_lr must be finite and >= 0, got -1");
  CHECK_FAILS(ctx, ms_provider_hypergradient(ctx, &base, 0.1, 0.5, 0.2, &p), MS_EARG,
              "needs lr_min <= lr_max, got 0.5 > 0.2");
  CHECK_OK(ctx, ms_provider_hypergradient(ctx, &base, 0.1, 0, 0, &p));
  double g[3] = {1, 2, 3}, bad[3] = {1, NAN, 3};
  CHECK_OK(ctx, ms_provider_observe(p, 3, g, NULL));
  CHECK_FAILS(ctx, ms_provider_observe(p, 2, g, NULL), MS_ESHAPE,
              "gradient has 2 entries, the earlier ones had 3");
  CHECK_FAILS(ctx, ms_provider_observe(p, 3, bad, NULL), MS_EARG, "g[1] (0-based) is nan");
  ms_step_params s;
  CHECK_OK(ctx, ms_provider_get(p, 2, &s));
  CHECK(s.lr == 0.1);
  CHECK_OK(ctx, ms_provider_observe(p, 3, g, NULL)); /* lr += 0.1 * |g|^2 = 1.4 */
  CHECK_OK(ctx, ms_provider_get(p, 2, &s));
  CHECK_NEAR(s.lr, 0.1 + 0.1 * 14, 1e-15);
  ms_provider_free(p);
}

int main(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  test_schedule(ctx);
  test_from_optim(ctx);
  test_hypergradient(ctx);
  CHECK(ms_ctx_bytes(ctx) == 0);
  ms_ctx_free(ctx);
  return check_report();
}
