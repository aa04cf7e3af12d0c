/*
 * Meta-training (engine/src/train.c: ms_meta_train, ms_train_result_clear).
 *
 * Golden values are computed here with plain loops over plain doubles, never with engine
 * operations: for GD with step size eta on a diagonal quadratic with eigenvalues lambda_i and
 * start w_0 = c (w* = 0), the closed form
 *   f(w_T) = 1/2 sum_i lambda_i c_i^2 (1 - eta lambda_i)^(2T),
 *   G(eta) = (1/T) log f(w_T),
 *   G'(eta) = -(1/T) sum_i lambda_i^2 c_i^2 2T (1 - eta lambda_i)^(2T-1) / (2 f(w_T)),
 * gives the meta-objective and meta-gradient at every theta, and the meta-optimizers (SGD,
 * Adam, RMSprop, the schedules, clipping, projection) are replayed by hand on top of it.
 * With one step size per coordinate, T = 1 and the NAIVE objective on a quadratic with
 * f* = 1, F(eta) = 1 + 1/2 sum_i lambda_i (1 - eta_i lambda_i)^2 c_i^2 is minimized exactly at
 * eta_i = 1/lambda_i; Adam must get there.
 * Then: every option check and its message, stopping by callback and by ms_ctx_interrupt,
 * on_failure on an unroll that overflows, best_theta, samplers, selection, the project
 * callback, and allocation failures at every point (no leak, MS_ENOMEM).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "metastep/metastep.h"

#define OK(call) CHECK_OK_OR_OUT(ctx, call)

#define MAXD 4
#define MAXK 700

static ms_tensor *vec(ms_ctx *ctx, int n, const double *x) {
  ms_tensor *t = NULL;
  int64_t shape[1] = {n};
  ms_tensor_from_data(ctx, 1, shape, x, &t);
  return t;
}

static ms_tensor *diag(ms_ctx *ctx, int n, const double *x) {
  double a[MAXD * MAXD] = {0};
  for (int i = 0; i < n; i++) a[i * n + i] = x[i];
  ms_tensor *t = NULL;
  int64_t shape[2] = {n, n};
  ms_tensor_from_data(ctx, 2, shape, a, &t);
  return t;
}

/* Entry j of a tensor (row-major), NaN for NULL. */
static double at(const ms_tensor *t, int j) {
  if (!t || j >= ms_tensor_numel(t)) return NAN;
  double buf[64];
  ms_tensor_read(ms_tensor_ctx(t), t, buf, 64);
  return buf[j];
}

/* ---- closed forms ---- */

/* F(eta) = f(w_T) and F'(eta) for GD on the diagonal quadratic. */
static void closed_F(int d, const double *lam, const double *c, int T, double eta, double *F,
                     double *dF) {
  double s = 0, ds = 0;
  for (int i = 0; i < d; i++) {
    double q = 1 - eta * lam[i];
    s += 0.5 * lam[i] * c[i] * c[i] * pow(q, 2.0 * T);
    ds += 0.5 * lam[i] * c[i] * c[i] * 2.0 * T * pow(q, 2.0 * T - 1) * (-lam[i]);
  }
  *F = s, *dF = ds;
}

/* G(eta) = (1/T) log f(w_T) and G'(eta). */
static void closed_G(int d, const double *lam, const double *c, int T, double eta, double *G,
                     double *dG) {
  double s, ds;
  closed_F(d, lam, c, T, eta, &s, &ds);
  *G = log(s) / T;
  *dG = ds / s / T;
}

/* The meta-optimizer, replayed by hand on one scalar theta. */
typedef struct hand {
  int metaopt;  /* 0 sgd, 1 adam, 2 rmsprop */
  int constant; /* 1: constant schedule, else 1/sqrt(k) */
  double meta_lr, clip, lo, hi;
  double b1, b2, eps, rho;
} hand;

/* theta[k-1], value[k-1], grad[k-1]: record k (k = 1..K); theta[K]: the final value. */
static void hand_run(const hand *h, int d, const double *lam, const double *c, int T, double eta0,
                     int K, double *theta, double *value, double *grad, double *lr) {
  double eta = eta0, m = 0, v = 0;
  for (int k = 1; k <= K; k++) {
    double G, dG;
    closed_G(d, lam, c, T, eta, &G, &dG);
    theta[k - 1] = eta, value[k - 1] = G, grad[k - 1] = dG;
    double lrk = h->meta_lr * (h->constant ? 1.0 : 1.0 / sqrt((double)k));
    lr[k - 1] = lrk;
    double g = dG;
    if (h->clip > 0) g = fmax(-h->clip, fmin(h->clip, g));
    if (h->metaopt == 1) {
      m = h->b1 * m + (1 - h->b1) * g;
      v = h->b2 * v + (1 - h->b2) * g * g;
      double mh = m / (1 - pow(h->b1, k)), vh = v / (1 - pow(h->b2, k));
      eta = eta - lrk * mh / (sqrt(vh) + h->eps);
    } else if (h->metaopt == 2) {
      v = h->rho * v + (1 - h->rho) * g * g;
      eta = eta - lrk * g / (sqrt(v) + h->eps);
    } else {
      eta = eta - lrk * g;
    }
    eta = fmin(fmax(eta, h->lo), h->hi);
  }
  theta[K] = eta;
}

/* ---- fixtures ---- */

typedef struct fixture {
  ms_task task;      /* borrows obj and w0 */
  ms_meta_spec spec; /* borrows opt and task */
  ms_objective *obj;
  ms_tensor *w0;
  ms_optim *opt;
} fixture;

static void fixture_free(fixture *f) {
  ms_objective_release(f->obj);
  ms_tensor_release(f->w0);
  ms_optim_release(f->opt);
  memset(f, 0, sizeof *f);
}

/* The end of a test on one fixture: clears the result, frees the fixture and the context. */
static void train_test_end(ms_ctx *ctx, fixture *f, ms_train_result *r) {
  ms_train_result_clear(ctx, r);
  fixture_free(f);
  check_ctx_free(ctx);
}

/* GD (lr, or lr_vec per coordinate when not NULL) on diag(lam) from w0 = c, w* = 0. */
static int make_fixture(ms_ctx *ctx, int d, const double *lam, const double *c, double fstar,
                        double lr, const double *lr_vec, int64_t T, ms_meta_kind kind,
                        ms_meta_method method, fixture *f) {
  memset(f, 0, sizeof *f);
  ms_tensor *H = diag(ctx, d, lam), *lrt = lr_vec ? vec(ctx, d, lr_vec) : NULL;
  f->w0 = vec(ctx, d, c);
  int st = H && f->w0 && (lrt || !lr_vec) ? MS_OK : MS_ENOMEM;
  if (st == MS_OK) st = ms_objective_quadratic(ctx, H, NULL, fstar, &f->obj);
  ms_optim_options oo;
  memset(&oo, 0, sizeof oo);
  oo.lr = lr;
  oo.lr_init = lrt;
  if (st == MS_OK) st = ms_optim_builtin(ctx, MS_OPTIM_GD, &oo, &f->opt);
  ms_tensor_release(H);
  ms_tensor_release(lrt);
  if (st) {
    fixture_free(f);
    return st;
  }
  f->task.objective = f->obj;
  f->task.w0 = f->w0;
  f->spec.optimizer = f->opt;
  f->spec.ntasks = 1;
  f->spec.tasks = &f->task;
  f->spec.steps = T;
  f->spec.meta.kind = kind;
  f->spec.meta.on = MS_META_TRAIN;
  f->spec.method = method;
  return MS_OK;
}

static ms_train_options base_options(void) {
  ms_train_options o;
  memset(&o, 0, sizeof o);
  o.iterations = 10;
  o.meta_lr = 0.01;
  o.schedule = MS_SCHEDULE_CONSTANT;
  o.keep_history = 1;
  return o;
}

/* base_options with the given number of iterations and meta step size. */
static ms_train_options train_options(int64_t iterations, double meta_lr) {
  ms_train_options o = base_options();
  o.iterations = iterations;
  o.meta_lr = meta_lr;
  return o;
}

/* Compares a run of the scalar-lr fixture with the hand replay. */
static void compare_scalar_run(const char *what, const ms_train_result *r, int K, const double *th,
                               const double *val, const double *gr, const double *lr, double tol) {
  int bad = 0;
  CHECK(r->n == K);
  CHECK(r->history != NULL);
  if (r->n != K || !r->history) return;
  for (int k = 0; k < K; k++) {
    const ms_train_record *rec = &r->history[k];
    double e_th = fabs(at(rec->theta[0], 0) - th[k]), e_v = fabs(rec->value - val[k]);
    double e_g = fabs(at(rec->grad[0], 0) - gr[k]) / fmax(1, fabs(gr[k]));
    if (rec->k != k + 1 || rec->status != MS_META_OK || !rec->updated || rec->lr != lr[k] ||
        !(e_th <= tol) || !(e_v <= tol * fmax(1, fabs(val[k]))) || !(e_g <= tol)) {
      if (!bad)
        fprintf(
            stderr,
            "%s: record %d: k %lld status %d updated %d lr %.17g (want %.17g) theta %.17g (want "
            "%.17g) value %.17g (want %.17g) grad %.17g (want %.17g)\n",
            what, k + 1, (long long)rec->k, rec->status, rec->updated, rec->lr, lr[k],
            at(rec->theta[0], 0), th[k], rec->value, val[k], at(rec->grad[0], 0), gr[k]);
      bad++;
    }
  }
  CHECK(bad == 0);
  CHECK_NEAR(at(r->theta[0], 0), th[K], tol);
}

/* ---- (1) SGD / Adam / RMSprop on G(eta) with the exact method, against the closed form ---- */

static const double LAM3[3] = {0.5, 2.0, 5.0}, C3[3] = {1.0, -0.5, 0.8};

/* The fixture most tests use: GD at lr 0.05 on diag(LAM3) from C3 (f* = 0), T = 10, the LOG
 * meta-objective by the exact method. */
static int base_fixture(ms_ctx *ctx, fixture *f) {
  return make_fixture(ctx, 3, LAM3, C3, 0, 0.05, NULL, 10, MS_META_LOG, MS_METHOD_EXACT, f);
}

static void test_scalar_closed_form(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  fixture f = {0};
  ms_train_result r = {0};
  const int T = 10;
  static double th[MAXK + 1], val[MAXK], gr[MAXK], lr[MAXK];
  OK(make_fixture(ctx, 3, LAM3, C3, 0, 0.05, NULL, T, MS_META_LOG, MS_METHOD_EXACT, &f));
  struct {
    const char *name;
    ms_train_metaopt mo;
    ms_train_schedule sched;
    double meta_lr, clip;
    int K;
  } cases[] = {
      {"sgd constant", MS_METAOPT_SGD, MS_SCHEDULE_CONSTANT, 0.01, 0, 25},
      {"sgd inv_sqrt", MS_METAOPT_SGD, MS_SCHEDULE_INV_SQRT, 0.02, 0, 25},
      {"sgd clipped", MS_METAOPT_SGD, MS_SCHEDULE_CONSTANT, 0.01, 0.5, 20},
      {"adam", MS_METAOPT_ADAM, MS_SCHEDULE_CONSTANT, 0.01, 0, 30},
      {"rmsprop", MS_METAOPT_RMSPROP, MS_SCHEDULE_INV_SQRT, 0.005, 0, 30},
  };
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    ms_train_options o = train_options(cases[ci].K, cases[ci].meta_lr);
    o.schedule = cases[ci].sched;
    o.meta_optimizer = cases[ci].mo;
    o.clip = cases[ci].clip;
    hand h = {(int)cases[ci].mo,
              cases[ci].sched == MS_SCHEDULE_CONSTANT,
              cases[ci].meta_lr,
              cases[ci].clip,
              0,
              INFINITY,
              0.9,
              0.999,
              1e-8,
              0.9};
    hand_run(&h, 3, LAM3, C3, T, 0.05, cases[ci].K, th, val, gr, lr);
    OK(ms_meta_train(ctx, &f.spec, &o, &r));
    compare_scalar_run(cases[ci].name, &r, cases[ci].K, th, val, gr, lr, 1e-10);
    CHECK(r.stopped == MS_STOP_DONE);
    CHECK(r.nparams == 1);
    /* every value below decreases (checked on the hand replay), so the best is the last */
    if (ci == 0) {
      for (int k = 1; k < cases[ci].K; k++) CHECK(val[k] < val[k - 1]);
      CHECK(r.best_k == cases[ci].K);
      CHECK_NEAR(r.best_value, val[cases[ci].K - 1], 1e-10);
      CHECK_NEAR(at(r.best_theta[0], 0), th[cases[ci].K - 1], 1e-10);
    }
    if (ci == 2) { /* the clip binds on the first iterations */
      CHECK(fabs(gr[0]) > 0.5);
    }
    ms_train_result_clear(ctx, &r);
    CHECK(r.history == NULL && r.theta[0] == NULL && r.n == 0);
  }
  /* spec->theta overrides the optimizer's initial value; explicit bounds replace the domain */
  {
    ms_tensor *t0 = NULL;
    OK(ms_tensor_scalar(ctx, 0.08, &t0));
    ms_tensor *thetas[1] = {t0};
    f.spec.theta = thetas;
    ms_train_options o = base_options();
    o.iterations = 20;
    o.has_bounds[0] = 1;
    o.lo[0] = 0.02;
    o.hi[0] = 0.1;
    hand h = {0, 1, 0.01, 0, 0.02, 0.1, 0.9, 0.999, 1e-8, 0.9};
    hand_run(&h, 3, LAM3, C3, T, 0.08, 20, th, val, gr, lr);
    int st = ms_meta_train(ctx, &f.spec, &o, &r);
    f.spec.theta = NULL;
    ms_tensor_release(t0);
    OK(st);
    compare_scalar_run("bounds", &r, 20, th, val, gr, lr, 1e-10);
    CHECK(th[20] == 0.1); /* the upper bound binds */
    CHECK(at(r.theta[0], 0) == 0.1);
    ms_train_result_clear(ctx, &r);
  }
  /* keep_history = 0: the same run without records */
  {
    ms_train_options o = base_options();
    o.iterations = 25;
    o.keep_history = 0;
    hand h = {0, 1, 0.01, 0, 0, INFINITY, 0.9, 0.999, 1e-8, 0.9};
    hand_run(&h, 3, LAM3, C3, T, 0.05, 25, th, val, gr, lr);
    OK(ms_meta_train(ctx, &f.spec, &o, &r));
    CHECK(r.n == 25);
    CHECK(r.history == NULL);
    CHECK_NEAR(at(r.theta[0], 0), th[25], 1e-10);
    CHECK(r.best_k == 25);
    CHECK_NEAR(r.best_value, val[24], 1e-10);
    ms_train_result_clear(ctx, &r);
  }
  /* iterations = 0: theta is the start, nothing recorded */
  {
    ms_train_options o = base_options();
    o.iterations = 0;
    OK(ms_meta_train(ctx, &f.spec, &o, &r));
    CHECK(r.n == 0 && r.history == NULL && r.stopped == MS_STOP_DONE);
    CHECK(at(r.theta[0], 0) == 0.05);
    CHECK(r.best_k == 0 && isnan(r.best_value) && r.best_theta[0] == NULL);
    ms_train_result_clear(ctx, &r);
  }
out:
  train_test_end(ctx, &f, &r);
}

/* ---- schedule_fn: lr_k = meta_lr * factor(k) ---- */

static int sched_inv_k(ms_ctx *ctx, void *ud, int64_t k, double *factor) {
  (void)ctx;
  int *calls = ud;
  (*calls)++;
  *factor = 1.0 / (double)k;
  return MS_OK;
}

static int sched_bad(ms_ctx *ctx, void *ud, int64_t k, double *factor) {
  (void)ctx, (void)ud;
  *factor = k == 3 ? -1 : 1;
  return MS_OK;
}

static int sched_fails(ms_ctx *ctx, void *ud, int64_t k, double *factor) {
  (void)ud;
  *factor = 1;
  if (k == 2) return ms_ctx_fail(ctx, MS_ECALLBACK, "schedule exploded");
  return MS_OK;
}

static void test_schedule_fn(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  fixture f = {0};
  ms_train_result r = {0};
  int calls = 0;
  OK(base_fixture(ctx, &f));
  ms_train_options o = train_options(6, 0.03);
  o.schedule = MS_SCHEDULE_INV_SQRT;
  o.schedule_fn = sched_inv_k;
  o.ud = &calls;
  OK(ms_meta_train(ctx, &f.spec, &o, &r));
  CHECK(calls == 6);
  CHECK(r.n == 6);
  double eta = 0.05;
  for (int k = 1; k <= 6 && r.n == 6; k++) {
    double G, dG;
    closed_G(3, LAM3, C3, 10, eta, &G, &dG);
    CHECK(r.history[k - 1].lr == 0.03 * (1.0 / k));
    CHECK_NEAR(at(r.history[k - 1].theta[0], 0), eta, 1e-12);
    eta = fmax(0, eta - 0.03 * (1.0 / k) * dG);
  }
  CHECK_NEAR(at(r.theta[0], 0), eta, 1e-12);
  ms_train_result_clear(ctx, &r);

  o.schedule_fn = sched_bad;
  CHECK_FAILS(ctx, ms_meta_train(ctx, &f.spec, &o, &r), MS_EARG,
              "meta.train: schedule_fn gave factor -1 at iteration 3");
  CHECK(r.n == 2 && r.stopped == MS_STOP_ERROR && r.theta[0] != NULL);
  ms_train_result_clear(ctx, &r);

  o.schedule_fn = sched_fails;
  CHECK_FAILS(ctx, ms_meta_train(ctx, &f.spec, &o, &r), MS_ECALLBACK, "schedule exploded");
  CHECK(r.n == 1 && r.stopped == MS_STOP_ERROR);
  ms_train_result_clear(ctx, &r);
out:
  train_test_end(ctx, &f, &r);
}

/* ---- (2) one step size per coordinate, reverse mode, Adam: eta_i -> 1/lambda_i ---- */

static void test_vector_adam(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  fixture f = {0};
  ms_train_result r = {0};
  const double lam[3] = {1.0, 2.0, 4.0}, c[3] = {1.0, -1.0, 0.5}, eta0[3] = {0.1, 0.1, 0.1};
  OK(make_fixture(ctx, 3, lam, c, 1.0, 0, eta0, 1, MS_META_NAIVE, MS_METHOD_REVERSE, &f));
  ms_train_options o = train_options(600, 0.02);
  o.meta_optimizer = MS_METAOPT_ADAM;
  OK(ms_meta_train(ctx, &f.spec, &o, &r));
  CHECK(r.n == 600 && r.stopped == MS_STOP_DONE);
  CHECK(r.theta[0] != NULL && ms_tensor_ndim(r.theta[0]) == 1 && ms_tensor_dim(r.theta[0], 0) == 3);
  for (int i = 0; i < 3; i++) CHECK_NEAR(at(r.theta[0], i), 1.0 / lam[i], 1e-6);
  /* the first 40 records against Adam replayed by hand on dF/deta_i = -lambda_i^2 c_i^2 (1 - eta_i
   * lambda_i) */
  {
    double eta[3], m[3] = {0}, v[3] = {0};
    int bad = 0;
    memcpy(eta, eta0, sizeof eta);
    for (int k = 1; k <= 40 && r.n >= 40; k++) {
      const ms_train_record *rec = &r.history[k - 1];
      double F = 1;
      for (int i = 0; i < 3; i++) F += 0.5 * lam[i] * pow(1 - eta[i] * lam[i], 2) * c[i] * c[i];
      if (fabs(rec->value - F) > 1e-12) bad++;
      for (int i = 0; i < 3; i++) {
        double g = -lam[i] * lam[i] * c[i] * c[i] * (1 - eta[i] * lam[i]);
        if (fabs(at(rec->theta[0], i) - eta[i]) > 1e-12 || fabs(at(rec->grad[0], i) - g) > 1e-12) {
          if (!bad)
            fprintf(stderr,
                    "vector adam: record %d entry %d: theta %.17g (want %.17g) grad %.17g (want "
                    "%.17g)\n",
                    k, i, at(rec->theta[0], i), eta[i], at(rec->grad[0], i), g);
          bad++;
        }
        m[i] = 0.9 * m[i] + (1 - 0.9) * g;
        v[i] = 0.999 * v[i] + (1 - 0.999) * g * g;
        double mh = m[i] / (1 - pow(0.9, k)), vh = v[i] / (1 - pow(0.999, k));
        eta[i] = fmax(0, eta[i] - 0.02 * mh / (sqrt(vh) + 1e-8));
      }
    }
    CHECK(bad == 0);
  }
  /* the best iteration: the first record with the lowest value, F = 1 at the optimum */
  {
    int64_t kb = 0;
    for (int64_t k = 0; k < r.n; k++)
      if (r.history[k].status == MS_META_OK &&
          (kb == 0 || r.history[k].value < r.history[kb - 1].value))
        kb = k + 1;
    CHECK(r.best_k == kb && kb > 100);
    CHECK(kb > 0 && r.best_value == r.history[kb - 1].value);
    CHECK(kb > 0 && at(r.best_theta[0], 1) == at(r.history[kb - 1].theta[0], 1));
    CHECK_NEAR(r.best_value, 1.0, 1e-12);
  }
  ms_train_result_clear(ctx, &r);
out:
  train_test_end(ctx, &f, &r);
}

/* ---- (3) option checks ---- */

static int dummy_sample(ms_ctx *ctx, void *ud, int64_t k, int i, ms_task *task) {
  (void)ctx, (void)k, (void)i;
  *task = *(const ms_task *)ud;
  return MS_OK;
}

static void test_options(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  fixture f = {0};
  ms_train_result r = {0};
  OK(base_fixture(ctx, &f));
  size_t base = ms_ctx_bytes(ctx);
  struct {
    ms_train_options o;
    const char *msg;
  } bad[32];
  int nbad = 0;
#define BAD(field, value, message) \
  do {                             \
    bad[nbad].o = base_options();  \
    bad[nbad].o.field = value;     \
    bad[nbad].msg = message;       \
    nbad++;                        \
  } while (0)
  BAD(iterations, -1, "meta.train: option 'iterations' must be >= 0, got -1");
  BAD(meta_lr, -1, "meta.train: option 'meta_lr' must be >= 0, got -1");
  BAD(meta_lr, NAN, "meta.train: option 'meta_lr' must be >= 0, got nan");
  BAD(meta_lr, INFINITY, "meta.train: option 'meta_lr' must be finite, got inf");
  BAD(schedule, (ms_train_schedule)7,
      "meta.train: option 'schedule' must be inv_sqrt (0) or constant (1), got 7");
  BAD(schedule, (ms_train_schedule)-1,
      "meta.train: option 'schedule' must be inv_sqrt (0) or constant (1), got -1");
  BAD(meta_optimizer, (ms_train_metaopt)3,
      "meta.train: option 'meta_optimizer' must be sgd (0), adam (1) or rmsprop (2), got 3");
  BAD(beta1, 1, "meta.train: option 'beta1' must be in [0, 1) (0 = default 0.9), got 1");
  BAD(beta1, -0.1, "meta.train: option 'beta1' must be in [0, 1) (0 = default 0.9), got -0.1");
  BAD(beta2, 1.5, "meta.train: option 'beta2' must be in [0, 1) (0 = default 0.999), got 1.5");
  BAD(beta2, NAN, "meta.train: option 'beta2' must be in [0, 1) (0 = default 0.999), got nan");
  BAD(rho, 1, "meta.train: option 'rho' must be in [0, 1) (0 = default 0.9), got 1");
  BAD(eps, -1e-8, "meta.train: option 'eps' must be > 0 (0 = default 1e-8), got -1e-08");
  BAD(eps, INFINITY, "meta.train: option 'eps' must be finite, got inf");
  BAD(clip, -1, "meta.train: option 'clip' must be >= 0, got -1");
  BAD(clip, NAN, "meta.train: option 'clip' must be >= 0, got nan");
  BAD(clip, INFINITY, "meta.train: option 'clip' must be finite (0 = off), got inf");
  BAD(on_failure, (ms_train_failure)3,
      "meta.train: option 'on_failure' must be skip (0), zero (1) or error (2), got 3");
  BAD(has_bounds[2], 1,
      "meta.train: option 'has_bounds[2]' is set but optimizer 'gd' has 1 parameter(s)");
  BAD(sample, dummy_sample, "meta.train: option 'batch' must be >= 1 with a sampler, got 0");
#undef BAD
  bad[nbad].o = base_options();
  bad[nbad].o.has_bounds[0] = 1;
  bad[nbad].o.lo[0] = 2, bad[nbad].o.hi[0] = 1;
  bad[nbad++].msg =
      "meta.train: option 'bounds' of 'lr' must have lo <= hi (lo < inf, hi > -inf), got [2, 1]";
  bad[nbad].o = base_options();
  bad[nbad].o.has_bounds[0] = 1;
  bad[nbad].o.lo[0] = 0, bad[nbad].o.hi[0] = NAN;
  bad[nbad++].msg =
      "meta.train: option 'bounds' of 'lr' must have lo <= hi (lo < inf, hi > -inf), got [0, nan]";
  bad[nbad].o = base_options();
  bad[nbad].o.has_bounds[0] = 1;
  bad[nbad].o.lo[0] = INFINITY, bad[nbad].o.hi[0] = INFINITY;
  bad[nbad++].msg =
      "meta.train: option 'bounds' of 'lr' must have lo <= hi (lo < inf, hi > -inf), got [inf, "
      "inf]";
  for (int i = 0; i < nbad; i++) {
    ms_ctx_clear_error(ctx);
    int st = ms_meta_train(ctx, &f.spec, &bad[i].o, &r);
    if (st == MS_EARG && strcmp(ms_ctx_error(ctx), bad[i].msg) == 0) {
      check_passed++;
    } else {
      check_failed++;
      fprintf(stderr, "option check %d: got %d \"%s\", wanted \"%s\"\n", i, st, ms_ctx_error(ctx),
              bad[i].msg);
    }
    CHECK(r.n == 0 && r.history == NULL && r.theta[0] == NULL && r.stopped == MS_STOP_ERROR &&
          isnan(r.best_value) && r.nparams == 1);
    ms_train_result_clear(ctx, &r);
    CHECK(ms_ctx_bytes(ctx) == base);
  }
  ms_train_options o = base_options();
  CHECK_FAILS(ctx, ms_meta_train(ctx, &f.spec, &o, NULL), MS_EARG, "meta.train: result is NULL");
  CHECK_FAILS(ctx, ms_meta_train(ctx, NULL, &o, &r), MS_EARG, "meta.train: spec is NULL");
  CHECK_FAILS(ctx, ms_meta_train(ctx, &f.spec, NULL, &r), MS_EARG, "meta.train: options are NULL");
  {
    ms_meta_spec s = f.spec;
    s.optimizer = NULL;
    CHECK_FAILS(ctx, ms_meta_train(ctx, &s, &o, &r), MS_EARG, "meta.train: spec has no optimizer");
  }
  /* with a sampler: theta and select are checked up front by meta.train itself */
  {
    ms_meta_spec s = f.spec;
    int sel[1] = {3};
    s.select = sel;
    s.nselect = 1;
    s.ntasks = 0;
    s.tasks = NULL;
    o.sample = dummy_sample;
    o.ud = &f.task;
    o.batch = 1;
    CHECK_FAILS(ctx, ms_meta_train(ctx, &s, &o, &r), MS_EINDEX,
                "meta.train: spec select[0] = 3 is not a parameter of 'gd' (0..0)");
    ms_tensor *neg = NULL;
    OK(ms_tensor_scalar(ctx, -0.5, &neg));
    ms_tensor *th[1] = {neg};
    s.select = NULL;
    s.nselect = 0;
    s.theta = th;
    CHECK_FAILS(ctx, ms_meta_train(ctx, &s, &o, &r), MS_EARG, "meta.train: theta");
    ms_tensor_release(neg);
    CHECK(r.n == 0 && r.theta[0] == NULL);
    ms_train_result_clear(ctx, &r);
  }
  /* without a sampler the spec goes through ms_meta_check_spec first */
  {
    ms_meta_spec s = f.spec;
    s.steps = 0;
    o = base_options();
    int st = ms_meta_train(ctx, &s, &o, &r);
    CHECK(st == MS_EARG);
    CHECK(r.n == 0 && r.theta[0] == NULL);
    ms_train_result_clear(ctx, &r);
  }
  CHECK(ms_ctx_bytes(ctx) == base);
out:
  train_test_end(ctx, &f, &r);
}

/* ---- (4) a callback stops the run, (5) ms_ctx_interrupt from inside it ---- */

typedef struct cb_state {
  int64_t stop_at, interrupt_at, fail_at;
  int calls;
  int64_t last_k;
  double last_theta;
} cb_state;

static int stop_cb(ms_ctx *ctx, void *ud, const ms_train_record *rec, ms_tensor *const *theta) {
  cb_state *s = ud;
  s->calls++;
  s->last_k = rec->k;
  s->last_theta = at(theta[0], 0);
  if (rec->k == s->interrupt_at) ms_ctx_interrupt(ctx);
  if (rec->k == s->fail_at)
    return ms_ctx_fail(ctx, MS_ECALLBACK, "callback gave up at %lld", (long long)rec->k);
  return rec->k == s->stop_at ? 1 : 0;
}

static void test_stop(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  fixture f = {0};
  ms_train_result r = {0};
  static double th[MAXK + 1], val[MAXK], gr[MAXK], lr[MAXK];
  OK(base_fixture(ctx, &f));
  hand h = {0, 1, 0.01, 0, 0, INFINITY, 0.9, 0.999, 1e-8, 0.9};
  hand_run(&h, 3, LAM3, C3, 10, 0.05, 10, th, val, gr, lr);
  ms_train_options o = base_options();
  cb_state s = {3, -1, -1, 0, 0, 0};
  o.callback = stop_cb;
  o.ud = &s;
  OK(ms_meta_train(ctx, &f.spec, &o, &r));
  CHECK(r.stopped == MS_STOP_CALLBACK);
  CHECK(s.calls == 3 && s.last_k == 3);
  CHECK_NEAR(s.last_theta, th[3], 1e-12); /* the callback sees theta after the update */
  compare_scalar_run("callback stop", &r, 3, th, val, gr, lr, 1e-12);
  CHECK(r.best_k == 3);
  ms_train_result_clear(ctx, &r);

  /* a callback failure stops with its status, the history kept */
  s = (cb_state){-1, -1, 4, 0, 0, 0};
  CHECK_FAILS(ctx, ms_meta_train(ctx, &f.spec, &o, &r), MS_ECALLBACK, "callback gave up at 4");
  CHECK(r.stopped == MS_STOP_ERROR && r.n == 4 && r.history && r.history[3].k == 4);
  CHECK_NEAR(at(r.theta[0], 0), th[4], 1e-12);
  ms_train_result_clear(ctx, &r);

  /* ms_ctx_interrupt inside the callback of iteration 2: the next check stops the run */
  s = (cb_state){-1, 2, -1, 0, 0, 0};
  CHECK_FAILS(ctx, ms_meta_train(ctx, &f.spec, &o, &r), MS_EINTERRUPT, "meta.train");
  CHECK(r.stopped == MS_STOP_INTERRUPT);
  CHECK(s.calls == 2);
  compare_scalar_run("interrupt", &r, 2, th, val, gr, lr, 1e-12);
  CHECK(ms_ctx_check_interrupt(ctx, "after") == MS_OK); /* the flag was consumed */
  ms_train_result_clear(ctx, &r);

  /* interrupted before the first iteration: nothing recorded, theta is the start */
  ms_ctx_interrupt(ctx);
  o.callback = NULL;
  CHECK_FAILS(ctx, ms_meta_train(ctx, &f.spec, &o, &r), MS_EINTERRUPT, "meta.train");
  CHECK(r.stopped == MS_STOP_INTERRUPT && r.n == 0 && at(r.theta[0], 0) == 0.05);
  ms_train_result_clear(ctx, &r);
out:
  train_test_end(ctx, &f, &r);
}

typedef struct sampler {
  const ms_task *tasks;
  int ntasks;
  int drawn, released;
  int64_t fail_k;
  int fail_i;
} sampler;

static int sample_fn(ms_ctx *ctx, void *ud, int64_t k, int i, ms_task *task) {
  sampler *s = ud;
  if (k == s->fail_k && i == s->fail_i) return ms_ctx_fail(ctx, MS_ECALLBACK, "no more tasks");
  *task = s->tasks[(k + i) % s->ntasks];
  s->drawn++;
  return MS_OK;
}

static void release_fn(ms_ctx *ctx, void *ud, ms_task *task) {
  (void)ctx;
  sampler *s = ud;
  CHECK(task->objective != NULL);
  s->released++;
}

/* ---- (6) on_failure on an unroll that overflows, (7) best_theta ---- */

/* theta_k+1 from record k by the documented SGD update with non-finite -> 0, clip, [lo, hi]. */
static double sgd_expect(double theta, double g, double lr, double clip, double lo, double hi) {
  if (!isfinite(g)) g = 0;
  if (clip > 0) g = fmax(-clip, fmin(clip, g));
  return fmin(fmax(theta - lr * g, lo), hi);
}

static void test_on_failure(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  fixture f = {0};
  ms_train_result r = {0};
  /* NAIVE over T = 400 steps: at eta = 0.01 fine (|1 - eta lambda| < 1); one step of meta_lr 10
   * takes eta above 1, where |1 - 10 eta| > 9 and f(w_t) overflows a double long before T. */
  const double lam[2] = {1, 10}, c[2] = {1, 1};
  OK(make_fixture(ctx, 2, lam, c, 0, 0.01, NULL, 400, MS_META_NAIVE, MS_METHOD_REVERSE, &f));
  ms_train_options o = train_options(4, 10);
  o.on_failure = MS_FAIL_SKIP;
  OK(ms_meta_train(ctx, &f.spec, &o, &r));
  CHECK(r.stopped == MS_STOP_DONE && r.n == 4);
  if (r.n == 4) {
    CHECK(r.history[0].status == MS_META_OK && r.history[0].updated);
    double eta1 = at(r.history[1].theta[0], 0);
    CHECK(eta1 > 1);
    CHECK_NEAR(eta1, sgd_expect(0.01, at(r.history[0].grad[0], 0), 10, 0, 0, INFINITY), 1e-15);
    for (int k = 1; k < 4; k++) {
      CHECK(r.history[k].status != MS_META_OK);
      CHECK(r.history[k].fail_step >= 1 && r.history[k].fail_step <= 400);
      CHECK(!r.history[k].updated);
      CHECK(at(r.history[k].theta[0], 0) == eta1); /* skipped: theta stays */
    }
    CHECK(at(r.theta[0], 0) == eta1);
    /* (7) the best iteration is the only ok one */
    CHECK(r.best_k == 1);
    CHECK(r.best_value == r.history[0].value);
    CHECK(at(r.best_theta[0], 0) == 0.01);
  }
  ms_train_result_clear(ctx, &r);

  /* ERROR: stops at iteration 2 with the status and the step, the record kept */
  o.on_failure = MS_FAIL_ERROR;
  int st = ms_meta_train(ctx, &f.spec, &o, &r);
  CHECK(st == MS_ENUMERIC);
  CHECK(r.stopped == MS_STOP_ERROR && r.n == 2);
  if (r.n == 2) {
    char want[200];
    snprintf(want, sizeof want, "meta.train: iteration 2: meta-gradient status %s (step %lld)",
             ms_meta_status_name(r.history[1].status), (long long)r.history[1].fail_step);
    CHECK(strcmp(ms_ctx_error(ctx), want) == 0);
    CHECK(!r.history[1].updated);
    CHECK(at(r.theta[0], 0) == at(r.history[1].theta[0], 0));
    CHECK(r.best_k == 1);
  }
  ms_train_result_clear(ctx, &r);

  /* ZERO: every iteration updates, with non-finite entries as 0 and then the clip */
  o.on_failure = MS_FAIL_ZERO;
  o.clip = 0.05;
  o.meta_lr = 0.5;
  o.iterations = 6;
  ms_tensor *t0 = NULL;
  OK(ms_tensor_scalar(ctx, 1.5, &t0)); /* overflowing from the start */
  ms_tensor *thetas[1] = {t0};
  f.spec.theta = thetas;
  st = ms_meta_train(ctx, &f.spec, &o, &r);
  f.spec.theta = NULL;
  ms_tensor_release(t0);
  OK(st);
  CHECK(r.stopped == MS_STOP_DONE && r.n == 6);
  int nonok = 0, moved = 0;
  for (int k = 0; k < r.n; k++) {
    const ms_train_record *rec = &r.history[k];
    double next = k + 1 < r.n ? at(r.history[k + 1].theta[0], 0) : at(r.theta[0], 0);
    CHECK(rec->updated);
    CHECK_NEAR(next, sgd_expect(at(rec->theta[0], 0), at(rec->grad[0], 0), 0.5, 0.05, 0, INFINITY),
               1e-15);
    nonok += rec->status != MS_META_OK;
    moved += next != at(rec->theta[0], 0);
  }
  CHECK(nonok >= 1);
  CHECK(r.history[0].status != MS_META_OK);
  if (r.best_k == 0) CHECK(isnan(r.best_value) && r.best_theta[0] == NULL);
  (void)moved;
  ms_train_result_clear(ctx, &r);

  /* SKIP from an overflowing start: nothing moves, no best */
  o.on_failure = MS_FAIL_SKIP;
  OK(ms_tensor_scalar(ctx, 1.5, &t0));
  thetas[0] = t0;
  f.spec.theta = thetas;
  st = ms_meta_train(ctx, &f.spec, &o, &r);
  f.spec.theta = NULL;
  ms_tensor_release(t0);
  OK(st);
  CHECK(r.n == 6 && at(r.theta[0], 0) == 1.5);
  for (int k = 0; k < r.n; k++) CHECK(!r.history[k].updated && r.history[k].status != MS_META_OK);
  CHECK(r.best_k == 0 && isnan(r.best_value) && r.best_theta[0] == NULL);
  ms_train_result_clear(ctx, &r);
out:
  train_test_end(ctx, &f, &r);
}

/*
 * SKIP and ZERO with Adam, on batches that alternate between a fine task A (even k) and a task
 * B whose unroll overflows (odd k), NAIVE objective with the exact method over T = 400 steps:
 * SKIP leaves theta and Adam's state alone on B and its bias correction counts the updates
 * made (1, 2, 3 at k = 2, 4, 6); ZERO updates on B with the non-finite meta-gradient as 0,
 * so Adam's momentum still moves theta and the count advances.
 */
static void test_adam_failure_counts(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  fixture a = {0}, b = {0};
  ms_train_result r = {0};
  const int T = 400, K = 9;
  const double lamB[1] = {1000}, cB[1] = {1};
  OK(make_fixture(ctx, 3, LAM3, C3, 0, 0.05, NULL, T, MS_META_NAIVE, MS_METHOD_EXACT, &a));
  OK(make_fixture(ctx, 1, lamB, cB, 0, 0.05, NULL, T, MS_META_NAIVE, MS_METHOD_EXACT, &b));
  ms_task tasks[2] = {a.task, b.task}; /* sample_fn: task (k + 0) % 2, so B on odd k */
  for (int mode = 0; mode < 2; mode++) {
    sampler s = {tasks, 2, 0, 0, -1, -1};
    ms_train_options o = train_options(K, 0.002);
    o.meta_optimizer = MS_METAOPT_ADAM;
    o.on_failure = mode == 0 ? MS_FAIL_SKIP : MS_FAIL_ZERO;
    o.sample = sample_fn;
    o.batch = 1;
    o.ud = &s;
    OK(ms_meta_train(ctx, &a.spec, &o, &r));
    CHECK(r.n == K && r.stopped == MS_STOP_DONE);
    if (r.n != K) break;
    double eta = 0.05, m = 0, v = 0;
    int u = 0, bad = 0, moved_on_b = 0;
    for (int k = 1; k <= K; k++) {
      const ms_train_record *rec = &r.history[k - 1];
      double th = at(rec->theta[0], 0), g;
      if (fabs(th - eta) > 1e-12 * fmax(1, fabs(eta))) bad++;
      if (k % 2 == 1) { /* task B */
        if (rec->status == MS_META_OK) bad++;
        if (mode == 0) {
          if (rec->updated) bad++;
          continue;
        }
        g = at(rec->grad[0], 0);
        if (isfinite(g)) bad++; /* the exact method reports the overflowing derivative as inf */
        g = 0;
      } else {
        double F, dF;
        closed_F(3, LAM3, C3, T, eta, &F, &dF);
        if (rec->status != MS_META_OK || fabs(rec->value - F) > 1e-10 * fabs(F) ||
            fabs(at(rec->grad[0], 0) - dF) > 1e-10 * fabs(dF))
          bad++;
        g = dF;
      }
      if (!rec->updated) bad++;
      u++;
      m = 0.9 * m + (1 - 0.9) * g;
      v = 0.999 * v + (1 - 0.999) * g * g;
      double next = eta - 0.002 * (m / (1 - pow(0.9, u))) / (sqrt(v / (1 - pow(0.999, u))) + 1e-8);
      if (k % 2 == 1 && next != eta) moved_on_b++;
      eta = fmax(0, next);
    }
    if (bad)
      fprintf(stderr, "adam %s: %d mismatches against the hand replay\n", mode ? "zero" : "skip",
              bad);
    CHECK(bad == 0);
    CHECK_NEAR(at(r.theta[0], 0), eta, 1e-12);
    CHECK(mode == 0 || moved_on_b >= 4); /* ZERO: Adam's momentum moves theta on B's iterations */
    CHECK(u == (mode == 0 ? 4 : 9));
    ms_train_result_clear(ctx, &r);
  }
out:
  ms_train_result_clear(ctx, &r);
  fixture_free(&a);
  fixture_free(&b);
  check_ctx_free(ctx);
}

/* (7) best on an oscillating run: the lowest value, not the last; the projection onto lr >= 0 binds
 */
static void test_best(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  fixture f = {0};
  ms_train_result r = {0};
  static double th[MAXK + 1], val[MAXK], gr[MAXK], lr[MAXK];
  const int K = 25;
  OK(base_fixture(ctx, &f));
  hand h = {0, 1, 0.05, 0, 0, INFINITY, 0.9, 0.999, 1e-8, 0.9};
  hand_run(&h, 3, LAM3, C3, 10, 0.05, K, th, val, gr, lr);
  int best = 0, zeros = 0;
  for (int k = 1; k < K; k++) {
    if (val[k] < val[best]) best = k;
    zeros += th[k] == 0;
  }
  CHECK(best + 1 < K); /* the design: the best is not the last */
  CHECK(zeros >= 1);   /* and the domain lr >= 0 binds somewhere */
  ms_train_options o = train_options(K, 0.05);
  OK(ms_meta_train(ctx, &f.spec, &o, &r));
  compare_scalar_run("best", &r, K, th, val, gr, lr, 1e-9);
  CHECK(r.best_k == best + 1);
  CHECK_NEAR(r.best_value, val[best], 1e-10);
  CHECK_NEAR(at(r.best_theta[0], 0), th[best], 1e-10);
out:
  train_test_end(ctx, &f, &r);
}

/* ---- samplers ---- */

static void test_sampler(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  fixture f = {0}, g = {0};
  ms_train_result r, r2;
  memset(&r, 0, sizeof r);
  memset(&r2, 0, sizeof r2);
  const double c2[3] = {-0.3, 1.0, 0.2};
  OK(base_fixture(ctx, &f));
  OK(make_fixture(ctx, 3, LAM3, c2, 0, 0.05, NULL, 10, MS_META_LOG, MS_METHOD_EXACT, &g));
  ms_task tasks[2] = {f.task, g.task};
  sampler s = {tasks, 2, 0, 0, -1, -1};
  ms_train_options o = base_options();
  o.iterations = 5;
  o.sample = sample_fn;
  o.release_task = release_fn;
  o.batch = 2;
  o.ud = &s;
  ms_meta_spec spec = f.spec;
  spec.ntasks = 0, spec.tasks = NULL; /* ignored with a sampler */
  OK(ms_meta_train(ctx, &spec, &o, &r));
  CHECK(s.drawn == 10 && s.released == 10);
  /* a batch of both tasks: the mean of the two closed forms */
  double eta = 0.05;
  for (int k = 1; k <= 5 && r.n == 5; k++) {
    double G1, d1, G2, d2;
    closed_G(3, LAM3, C3, 10, eta, &G1, &d1);
    closed_G(3, LAM3, c2, 10, eta, &G2, &d2);
    CHECK_NEAR(r.history[k - 1].value, (G1 + G2) / 2, 1e-12);
    CHECK_NEAR(at(r.history[k - 1].grad[0], 0), (d1 + d2) / 2, 1e-12);
    eta = fmax(0, eta - 0.01 * (d1 + d2) / 2);
  }
  CHECK_NEAR(at(r.theta[0], 0), eta, 1e-12);
  ms_train_result_clear(ctx, &r);

  /* batch 1 from a sampler always giving f's task = the run on f's task without one */
  s = (sampler){tasks, 1, 0, 0, -1, -1};
  o.batch = 1;
  OK(ms_meta_train(ctx, &spec, &o, &r));
  o.sample = NULL, o.release_task = NULL;
  OK(ms_meta_train(ctx, &f.spec, &o, &r2));
  CHECK(r.n == 5 && r2.n == 5);
  for (int k = 0; k < 5 && r.n == 5 && r2.n == 5; k++) {
    CHECK(r.history[k].value == r2.history[k].value);
    CHECK(at(r.history[k].theta[0], 0) == at(r2.history[k].theta[0], 0));
  }
  ms_train_result_clear(ctx, &r);
  ms_train_result_clear(ctx, &r2);

  /* a sampler failure at iteration 3, task 1: task 0 of that batch is released, history kept */
  s = (sampler){tasks, 2, 0, 0, 3, 1};
  o.sample = sample_fn, o.release_task = release_fn, o.batch = 2;
  CHECK_FAILS(ctx, ms_meta_train(ctx, &spec, &o, &r), MS_ECALLBACK, "no more tasks");
  CHECK(r.n == 2 && r.stopped == MS_STOP_ERROR);
  CHECK(s.drawn == 5 && s.released == 5);
  ms_train_result_clear(ctx, &r);
out:
  ms_train_result_clear(ctx, &r);
  ms_train_result_clear(ctx, &r2);
  fixture_free(&f);
  fixture_free(&g);
  check_ctx_free(ctx);
}

/* ---- selection and the project callback ---- */

static int project_cap(ms_ctx *ctx, void *ud, int nparams, ms_tensor **theta) {
  (void)ud;
  CHECK(nparams == 1);
  ms_tensor *t = NULL;
  int st = ms_clamp(ctx, theta[0], 0, 0.06, &t);
  if (st) return st;
  ms_tensor_release(theta[0]);
  theta[0] = t;
  return MS_OK;
}

static int project_bad_shape(ms_ctx *ctx, void *ud, int nparams, ms_tensor **theta) {
  (void)ud, (void)nparams;
  ms_tensor *t = NULL;
  int64_t shape[1] = {2};
  int st = ms_tensor_zeros(ctx, 1, shape, &t);
  if (st) return st;
  ms_tensor_release(theta[0]);
  theta[0] = t;
  return MS_OK;
}

static void test_select_project(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  fixture f = {0};
  ms_optim *mom = NULL;
  ms_train_result r = {0};
  static double th[MAXK + 1], val[MAXK], gr[MAXK], lr[MAXK];
  OK(base_fixture(ctx, &f));
  ms_train_options o = base_options();
  o.iterations = 12;
  o.project = project_cap;
  hand h = {0, 1, 0.01, 0, 0, 0.06, 0.9, 0.999, 1e-8, 0.9};
  hand_run(&h, 3, LAM3, C3, 10, 0.05, 12, th, val, gr, lr);
  CHECK(th[12] == 0.06);
  OK(ms_meta_train(ctx, &f.spec, &o, &r));
  compare_scalar_run("project", &r, 12, th, val, gr, lr, 1e-12);
  ms_train_result_clear(ctx, &r);
  o.project = project_bad_shape;
  CHECK_FAILS(ctx, ms_meta_train(ctx, &f.spec, &o, &r), MS_ESHAPE,
              "meta.train: project changed the size");
  CHECK(r.n == 1 && at(r.theta[0], 0) == 0.05);
  ms_train_result_clear(ctx, &r);

  /* momentum (lr, beta) with only beta selected: lr never moves, its grad is not recorded */
  {
    ms_optim_options oo;
    memset(&oo, 0, sizeof oo);
    oo.lr = 0.05;
    oo.beta = 0.3;
    oo.beta_set = 1;
    OK(ms_optim_builtin(ctx, MS_OPTIM_MOMENTUM, &oo, &mom));
    ms_meta_spec s = f.spec;
    s.optimizer = mom;
    s.method = MS_METHOD_REVERSE;
    int sel[1] = {1};
    s.select = sel;
    s.nselect = 1;
    o = base_options();
    o.iterations = 5;
    OK(ms_meta_train(ctx, &s, &o, &r));
    CHECK(r.nparams == 2 && r.n == 5);
    for (int k = 0; k < r.n; k++) {
      CHECK(r.history[k].grad[0] == NULL && r.history[k].grad[1] != NULL);
      CHECK(at(r.history[k].theta[0], 0) == 0.05);
      double next = k + 1 < r.n ? at(r.history[k + 1].theta[1], 0) : at(r.theta[1], 0);
      CHECK_NEAR(next,
                 sgd_expect(at(r.history[k].theta[1], 0), at(r.history[k].grad[1], 0), 0.01, 0, 0,
                            INFINITY),
                 1e-15);
    }
    CHECK(at(r.theta[0], 0) == 0.05);
    CHECK(at(r.theta[1], 0) != 0.3);
    ms_train_result_clear(ctx, &r);
  }
out:
  ms_train_result_clear(ctx, &r);
  ms_optim_release(mom);
  fixture_free(&f);
  check_ctx_free(ctx);
}

/* ---- (8) allocation failures at every point ---- */

static int project_copy(ms_ctx *ctx, void *ud, int nparams, ms_tensor **theta) {
  (void)ud;
  for (int i = 0; i < nparams; i++) {
    ms_tensor *t = NULL;
    int st = ms_tensor_copy(ctx, theta[i], &t);
    if (st) return st;
    ms_tensor_release(theta[i]);
    theta[i] = t;
  }
  return MS_OK;
}

static int alloc_cb(ms_ctx *ctx, void *ud, const ms_train_record *rec, ms_tensor *const *theta) {
  (void)ud, (void)rec;
  ms_tensor *t = NULL;
  int st = ms_tensor_copy(ctx, theta[0], &t); /* a callback that allocates */
  ms_tensor_release(t);
  return st == MS_OK ? 0 : st == MS_ENOMEM ? MS_ECALLBACK + 100 : st;
}

static void test_alloc_failures(void) {
  for (int variant = 0; variant < 2; variant++) {
    check_alloc fs = {0, -1, 0};
    ms_ctx *ctx = ms_ctx_new(check_failing_alloc, &fs);
    fixture f = {0};
    ms_train_result r;
    memset(&r, 0, sizeof r);
    const double lam[3] = {1.0, 2.0, 4.0}, c[3] = {1.0, -1.0, 0.5}, eta0[3] = {0.1, 0.2, 0.1};
    if (variant == 0)
      OK(make_fixture(ctx, 3, lam, c, 1.0, 0, eta0, 2, MS_META_NAIVE, MS_METHOD_REVERSE, &f));
    else
      OK(base_fixture(ctx, &f));
    sampler s = {&f.task, 1, 0, 0, -1, -1};
    ms_train_options o = base_options();
    o.iterations = 20; /* more than the history's first capacity */
    o.meta_optimizer = variant == 0 ? MS_METAOPT_ADAM : MS_METAOPT_RMSPROP;
    o.sample = sample_fn;
    o.release_task = release_fn;
    o.batch = 2;
    o.ud = &s;
    o.project = project_copy;
    ms_meta_spec spec = f.spec;
    /* one run first: the quadratic caches its eigendecomposition (PSD check) on first use */
    OK(ms_meta_train(ctx, &spec, &o, &r));
    ms_train_result_clear(ctx, &r);
    size_t base = ms_ctx_bytes(ctx);
    int ok = 0, wrong = 0, leaks = 0;
    long k;
    for (k = 0; k < 1000000 && !ok; k++) {
      fs.n = 0, fs.fail_at = k;
      s.drawn = s.released = 0;
      int st = ms_meta_train(ctx, &spec, &o, &r);
      if (st == MS_OK) {
        ok = 1;
        CHECK(r.n == 20 && r.stopped == MS_STOP_DONE);
      } else if (st != MS_ENOMEM) {
        if (!wrong)
          fprintf(stderr, "[alloc %d] failing allocation %ld gave %d: %s\n", variant, k, st,
                  ms_ctx_error(ctx));
        wrong++;
      } else if (r.stopped != MS_STOP_ERROR || r.n > 20 || (r.n > 0 && !r.history) ||
                 (r.n > 0 && !r.theta[0])) {
        wrong++;
      }
      if (s.drawn != s.released) wrong++;
      ms_train_result_clear(ctx, &r);
      if (check_sweep_leaked(ctx, base, variant, k, &leaks)) break;
    }
    fs.fail_at = -1;
    CHECK(ok);
    CHECK(wrong == 0);
    CHECK(leaks == 0);
    CHECK(k > 20); /* the sweep went through the run */
    /* with a callback that turns its own ENOMEM into a status meta.train passes on */
    o.callback = alloc_cb;
    ok = 0;
    for (k = 0; k < 1000000 && !ok; k++) {
      fs.n = 0, fs.fail_at = k;
      int st = ms_meta_train(ctx, &spec, &o, &r);
      if (st == MS_OK)
        ok = 1;
      else if (st != MS_ENOMEM && st != MS_ECALLBACK)
        wrong++;
      ms_train_result_clear(ctx, &r);
      if (ms_ctx_bytes(ctx) != base) {
        leaks++;
        break;
      }
    }
    fs.fail_at = -1;
    CHECK(ok);
    CHECK(wrong == 0);
    CHECK(leaks == 0);
  out:
    ms_train_result_clear(ctx, &r);
    fixture_free(&f);
    check_ctx_free(ctx);
  }
}

int main(void) {
  return check_run((const check_test[]){test_scalar_closed_form, test_schedule_fn, test_vector_adam,
                                        test_options, test_stop, test_on_failure, test_best,
                                        test_adam_failure_counts, test_sampler, test_select_project,
                                        test_alloc_failures, NULL});
}
