/*
 * The stable and exact meta-gradient methods (engine/src/stable.c).
 *
 * Golden values come from an independent computation written here: a plain unroll of the
 * optimizer in long double (x87 extended precision: 64-bit mantissa, exponents to 1e+-4932)
 * with forward-mode dual numbers (each quantity carried with its derivatives in lr and beta),
 * no renormalization, no BLAS. It runs in w - w* for a training quadratic (w itself would
 * cancel against w* once the error is tiny) and in w for least squares, except for training
 * losses far below |y| eps, where it carries the residual X w - y instead. Each case checks
 * that the reference loss stays inside the long double range (STABLE_TEST_VERBOSE=1 prints it).
 * Cases are chosen where the meta-gradient is well conditioned: e.g. a validation loss after
 * GD has converged on n < d least squares has a meta-gradient ~1e-18 made of cancelling O(1)
 * contributions, below what any fixed precision resolves.
 * On top of that: the stable method against the GD closed form (ms_meta_gd_exact), the exact
 * method, schedules, log-parametrized step sizes, exact zeros, interrupts, allocation
 * failures, and the messages of what the methods do not cover.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/src/meta_internal.h"
#include "check.h"
#include "metastep/metastep.h"

#define OK(call) CHECK_OK(ctx, call)

#define MAXD 20
#define MAXN 10
#define TOL 1e-8

typedef long double ld;

static ms_ctx *ctx;

/* Largest errors seen, reported at the end: log of the loss (= relative error of the loss),
 * relative errors of meta-values and meta-gradients. */
static double worst_loss, worst_value, worst_grad;

/* ---- data ---- */

/* An objective as plain arrays: quadratic 1/2 (w - b)^T A (w - b) (A = H [d,d], b = w* or
 * NULL) or least squares |A w - b|^2 / (2n) (A = X [n,d], b = y). */
typedef struct plain_obj {
  int ls, n, d;
  double A[MAXD * MAXD];
  double b[MAXD];
  int has_b;
  ms_objective *obj;
} plain_obj;

static void randn(ms_rng *rng, double *x, int n, double scale) {
  for (int i = 0; i < n; i++) x[i] = scale * ms_rng_normal(rng);
}

static ms_tensor *tensor(int ndim, int64_t n0, int64_t n1, const double *x) {
  int64_t shape[2] = {n0, n1};
  ms_tensor *t = NULL;
  OK(ms_tensor_from_data(ctx, ndim, shape, x, &t));
  return t;
}

/* Least squares with X [n,d] and y [n] drawn from the generator. */
static void make_ls(plain_obj *o, ms_rng *rng, int n, int d) {
  memset(o, 0, sizeof *o);
  o->ls = 1, o->n = n, o->d = d, o->has_b = 1;
  randn(rng, o->A, n * d, 1.0);
  randn(rng, o->b, n, 1.0);
  ms_tensor *X = tensor(2, n, d, o->A), *y = tensor(1, n, 0, o->b);
  OK(ms_objective_least_squares(ctx, X, y, &o->obj));
  ms_tensor_release(X);
  ms_tensor_release(y);
}

/* Quadratic with H = B B^T / (2d) + shift I (B drawn from the generator), w* drawn or 0. */
static void make_quad(plain_obj *o, ms_rng *rng, int d, double shift, int with_wstar,
                      double fstar) {
  memset(o, 0, sizeof *o);
  o->n = d, o->d = d, o->has_b = with_wstar;
  double B[MAXD * MAXD];
  randn(rng, B, d * d, 1.0);
  for (int i = 0; i < d; i++)
    for (int j = 0; j < d; j++) {
      double s = 0;
      for (int k = 0; k < d; k++) s += B[i * d + k] * B[j * d + k];
      o->A[i * d + j] = s / (2.0 * d) + (i == j ? shift : 0.0);
    }
  if (with_wstar) randn(rng, o->b, d, 1.0);
  ms_tensor *H = tensor(2, d, d, o->A), *ws = with_wstar ? tensor(1, d, 0, o->b) : NULL;
  OK(ms_objective_quadratic(ctx, H, ws, fstar, &o->obj));
  ms_tensor_release(H);
  ms_tensor_release(ws);
}

/* The matrix whose spectrum drives GD: H, or X X^T / n (the residual's). */
static void dynamics_matrix(const plain_obj *o, ld *M, int *m) {
  *m = o->n;
  for (int i = 0; i < o->n; i++)
    for (int j = 0; j < o->n; j++) {
      if (!o->ls) {
        M[i * o->n + j] = o->A[i * o->d + j];
        continue;
      }
      ld s = 0;
      for (int k = 0; k < o->d; k++) s += (ld)o->A[i * o->d + k] * o->A[j * o->d + k];
      M[i * o->n + j] = s / o->n;
    }
}

/* Largest eigenvalue of M - shift I (power iteration; picks the regimes, not a golden value). */
static ld top_eig(const ld *M, int m, ld shift) {
  ld x[MAXD], y[MAXD], lam = 0;
  for (int i = 0; i < m; i++) x[i] = 1.0L + 0.01L * i;
  for (int it = 0; it < 5000; it++) {
    ld nrm = 0;
    for (int i = 0; i < m; i++) {
      ld s = -shift * x[i];
      for (int j = 0; j < m; j++) s += M[i * m + j] * x[j];
      y[i] = s;
      nrm += s * s;
    }
    nrm = sqrtl(nrm);
    ld xn = 0;
    for (int i = 0; i < m; i++) xn += x[i] * x[i];
    lam = nrm / sqrtl(xn);
    for (int i = 0; i < m; i++) x[i] = y[i] / nrm;
  }
  return lam;
}

static void spectrum(const plain_obj *o, double *lo, double *hi) {
  ld M[MAXD * MAXD];
  int m;
  dynamics_matrix(o, M, &m);
  ld top = top_eig(M, m, 0);
  *hi = (double)top;
  *lo = (double)(top - top_eig(M, m, top));
}

/* From the seed: make_quad's quadratic of dimension d (with w*, f* = 0), a start w0 ~ N(0, 1)
 * and the ends of the spectrum. */
static void quad_problem(uint64_t seed, int d, double shift, plain_obj *q, double *w0, double *lo,
                         double *hi) {
  ms_rng rng;
  ms_rng_seed(&rng, seed);
  make_quad(q, &rng, d, shift, 1, 0.0);
  randn(&rng, w0, d, 1.0);
  spectrum(q, lo, hi);
}

/* ---- the long double reference ---- */

typedef struct ref_case {
  ms_optim_kind opt;
  double lr, beta;
  const double *factors; /* schedule (the last one repeats), or NULL */
  int nfactors;
  const plain_obj *train, *valid; /* valid: losses on it (meta on 'valid'), or NULL */
  const double *w0;               /* NULL = zeros */
  int64_t T;
  ms_meta_kind kind;
  int residual; /* least-squares training, carry r = X w - y instead of w */
} ref_case;

typedef struct ref_out {
  ld value, dvalue[2], log_loss; /* d/dlr, d/dbeta */
} ref_out;

/* g = gradient of o at w (affine = 1) or its tangent along w (affine = 0). */
static void ref_grad(const plain_obj *o, const ld *w, int affine, ld *g) {
  int d = o->d;
  if (!o->ls) {
    for (int i = 0; i < d; i++) {
      ld s = 0;
      for (int j = 0; j < d; j++)
        s += o->A[i * d + j] * (w[j] - (affine && o->has_b ? o->b[j] : 0));
      g[i] = s;
    }
    return;
  }
  ld r[MAXN];
  for (int i = 0; i < o->n; i++) {
    ld s = affine ? -(ld)o->b[i] : 0;
    for (int j = 0; j < d; j++) s += o->A[i * d + j] * w[j];
    r[i] = s;
  }
  for (int j = 0; j < d; j++) {
    ld s = 0;
    for (int i = 0; i < o->n; i++) s += o->A[i * d + j] * r[i];
    g[j] = s / o->n;
  }
}

static ld ref_value(const plain_obj *o, const ld *w) {
  int d = o->d;
  ld s = 0;
  if (!o->ls) {
    for (int i = 0; i < d; i++)
      for (int j = 0; j < d; j++)
        s +=
            (w[i] - (o->has_b ? o->b[i] : 0)) * o->A[i * d + j] * (w[j] - (o->has_b ? o->b[j] : 0));
    return s / 2;
  }
  for (int i = 0; i < o->n; i++) {
    ld r = -(ld)o->b[i];
    for (int j = 0; j < d; j++) r += o->A[i * d + j] * w[j];
    s += r * r;
  }
  return s / (2 * o->n);
}

/*
 * Dual numbers: x[0] value, x[1] d/dlr, x[2] d/dbeta. The state is w - shift (shift = w* of a
 * training quadratic, else 0), or the residual r, and m. ref_loss sets l[0..2] to the loss of
 * the current step and its two derivatives.
 */
static void ref_loss(const ref_case *c, const plain_obj *tr, const double *shift, ld (*x)[MAXD],
                     ld (*r)[MAXN], ld *l) {
  if (c->residual) {
    int n = tr->n;
    ld s = 0, s1 = 0, s2 = 0;
    for (int i = 0; i < n; i++)
      s += r[0][i] * r[0][i], s1 += r[0][i] * r[1][i], s2 += r[0][i] * r[2][i];
    l[0] = s / (2 * n), l[1] = s1 / n, l[2] = s2 / n;
    return;
  }
  const plain_obj *o = c->valid ? c->valid : tr;
  ld w[MAXD], g[MAXD];
  for (int i = 0; i < o->d; i++) w[i] = x[0][i] + (c->valid && shift ? shift[i] : 0);
  ref_grad(o, w, 1, g);
  l[0] = ref_value(o, w);
  l[1] = l[2] = 0;
  for (int i = 0; i < o->d; i++) l[1] += g[i] * x[1][i], l[2] += g[i] * x[2][i];
}

static ref_out reference(const ref_case *c) {
  /* a training quadratic runs on e = w - w*: w itself would cancel against w* once e is tiny */
  plain_obj tr = *c->train;
  const double *shift = !tr.ls && tr.has_b ? c->train->b : NULL;
  tr.has_b = tr.ls;
  int d = tr.d, n = tr.n;
  ld w[3][MAXD] = {{0}}, m[3][MAXD] = {{0}}, r[3][MAXN] = {{0}};
  ld g[3][MAXD], mn[3][MAXD], dir[3][MAXD], s[3][MAXD];
  for (int i = 0; i < d; i++) w[0][i] = (ld)(c->w0 ? c->w0[i] : 0) - (shift ? shift[i] : 0);
  if (c->residual)
    for (int i = 0; i < n; i++) {
      ld x = -(ld)tr.b[i];
      for (int j = 0; j < d; j++) x += tr.A[i * d + j] * w[0][j];
      r[0][i] = x;
    }
  ld l[3], sum[3] = {0, 0, 0};
  for (int64_t t = 1; t <= c->T; t++) {
    ld f = c->factors ? c->factors[(t < c->nfactors ? t : c->nfactors) - 1] : 1;
    ld lrt = c->lr * f, beta = c->beta;
    for (int k = 0; k < 3; k++) {
      if (!c->residual) {
        ref_grad(&tr, w[k], k == 0, g[k]);
        continue;
      }
      for (int j = 0; j < d; j++) {
        ld x = 0;
        for (int i = 0; i < n; i++) x += tr.A[i * d + j] * r[k][i];
        g[k][j] = x / n;
      }
    }
    for (int k = 0; k < 3; k++)
      for (int i = 0; i < d; i++) {
        mn[k][i] = beta * m[k][i] + g[k][i] + (k == 2 ? m[0][i] : 0);
        if (c->opt == MS_OPTIM_GD)
          dir[k][i] = g[k][i];
        else if (c->opt == MS_OPTIM_MOMENTUM)
          dir[k][i] = mn[k][i];
        else
          dir[k][i] = g[k][i] + beta * mn[k][i] + (k == 2 ? mn[0][i] : 0);
      }
    for (int k = 0; k < 3; k++)
      for (int i = 0; i < d; i++) {
        s[k][i] = lrt * dir[k][i] + (k == 1 ? f * dir[0][i] : 0);
        m[k][i] = mn[k][i];
        w[k][i] -= s[k][i];
      }
    if (c->residual)
      for (int k = 0; k < 3; k++)
        for (int i = 0; i < n; i++) {
          ld x = 0;
          for (int j = 0; j < d; j++) x += tr.A[i * d + j] * s[k][j];
          r[k][i] -= x;
        }
    int sums = c->kind == MS_META_SUM || c->kind == MS_META_LOGSUM;
    if (!sums && t < c->T) continue;
    ref_loss(c, &tr, shift, w, r, l);
    for (int k = 0; k < 3; k++) sum[k] += l[k];
  }
  ref_out o;
  ld T = (ld)c->T;
  o.log_loss = logl(sum[0]);
  int logk = c->kind == MS_META_LOG || c->kind == MS_META_LOGSUM;
  o.value = logk ? o.log_loss / T : sum[0];
  for (int k = 0; k < 2; k++) o.dvalue[k] = logk ? sum[k + 1] / (sum[0] * T) : sum[k + 1];
  return o;
}

/* ---- running the methods ---- */

static ms_optim *make_opt(ms_optim_kind kind, double lr, double beta, int log_lr) {
  ms_optim_options o;
  memset(&o, 0, sizeof o);
  o.lr = lr;
  o.log_lr = log_lr;
  o.beta = beta;
  o.beta_set = 1;
  ms_optim *opt = NULL;
  OK(ms_optim_builtin(ctx, kind, &o, &opt));
  return opt;
}

static ms_meta_spec spec_of(ms_optim *opt, const ms_task *task, int64_t T, ms_meta_kind kind,
                            ms_meta_on on, ms_meta_method method) {
  ms_meta_spec s = ms_meta_spec_one(opt, task, T, kind, method);
  s.meta.on = on;
  return s;
}

static double grad_item(const ms_meta_out *o, int i) {
  double v = NAN;
  if (o->grad[i] == NULL) return v;
  OK(ms_tensor_item(ctx, o->grad[i], &v));
  return v;
}

/* |a - b| <= tol |b|, recording the error into *worst. */
static int rel_ok(const char *what, double a, ld b, double tol, double *worst) {
  double e = (double)(fabsl((ld)a - b) / fabsl(b));
  if (b == 0) e = fabs(a);
  if (!(e <= tol)) {
    fprintf(stderr, "  %s: %.17g vs reference %.17Lg (relative error %.3g)\n", what, a, b, e);
    return 0;
  }
  if (e > *worst) *worst = e;
  return 1;
}

/* The stable method's result for case c (through ms_meta_value_and_grad) against the long
 * double reference. lr_chain: d/dstored = lr_chain * d/dlr (lr for log_lr). */
static void check_case(const char *name, const ref_case *c, ms_optim *opt, int log_lr) {
  ref_out ref = reference(c);
  ld log10_loss = ref.log_loss / logl(10.0L);
  int in_range = isfinite((double)ref.log_loss) && fabsl(log10_loss) < 4900;
  CHECK(in_range);
  if (getenv("STABLE_TEST_VERBOSE"))
    fprintf(stderr, "%-45s log10 loss %10.2Lf\n", name, log10_loss);
  if (!in_range) {
    fprintf(stderr, "%s: the reference left the long double range (log10 loss %Lg)\n", name,
            log10_loss);
    return;
  }
  ms_tensor *w0 = c->w0 ? tensor(1, c->train->d, 0, c->w0) : NULL;
  ms_task task = {c->train->obj, c->valid ? c->valid->obj : NULL, w0, NULL};
  ms_meta_spec spec = spec_of(opt, &task, c->T, c->kind, c->valid ? MS_META_VALID : MS_META_TRAIN,
                              MS_METHOD_STABLE);
  ms_meta_out out;
  int st = ms_meta_value_and_grad(ctx, &spec, &out);
  OK(st);
  if (st) {
    ms_tensor_release(w0);
    return;
  }
  int ok = 1, logk = c->kind == MS_META_LOG || c->kind == MS_META_LOGSUM;
  double ll_err = fabs(out.log_loss - (double)ref.log_loss);
  if (!(ll_err <= TOL)) {
    fprintf(stderr, "  log_loss: %.17g vs reference %.17Lg\n", out.log_loss, ref.log_loss);
    ok = 0;
  } else if (ll_err > worst_loss) {
    worst_loss = ll_err;
  }
  int overflow = !logk && ref.log_loss > 709.78L;
  int underflow = !logk && ref.log_loss < -708.39L;
  if (overflow) {
    ok &= out.status == MS_META_OVERFLOW && isinf(out.value);
  } else if (underflow) {
    ok &= out.status == MS_META_UNDERFLOW;
  } else {
    ok &= out.status == MS_META_OK;
    ok &= rel_ok("value", out.value, ref.value, TOL, &worst_value);
  }
  int np = ms_optim_nparams(opt);
  ld lr = c->lr;
  for (int i = 0; i < np; i++) {
    const char *pname = ms_optim_param_at(opt, i)->name;
    ld dref = strcmp(pname, "beta") == 0 ? ref.dvalue[1] : ref.dvalue[0] * (log_lr ? lr : 1);
    double lag_err = fabs(out.log_abs_grad[i] - (double)logl(fabsl(dref)));
    if (!(lag_err <= TOL)) {
      fprintf(stderr, "  log|d/d%s|: %.17g vs reference %.17Lg\n", pname, out.log_abs_grad[i],
              logl(fabsl(dref)));
      ok = 0;
    }
    if (logk || !(overflow || underflow))
      ok &= rel_ok(pname, grad_item(&out, i), dref, TOL, &worst_grad);
  }
  CHECK(ok);
  if (!ok)
    fprintf(stderr, "%s: status %s, log10 loss %.6Lg\n", name, ms_meta_status_name(out.status),
            log10_loss);
  ms_meta_out_clear(&out);
  ms_tensor_release(w0);
}

/* ---- least squares, n < d ---- */

static void test_least_squares(void) {
  ms_rng rng;
  ms_rng_seed(&rng, 2021);
  plain_obj tr, va, qv;
  make_ls(&tr, &rng, MAXN, MAXD);
  make_ls(&va, &rng, MAXN, MAXD);
  make_quad(&qv, &rng, MAXD, 0.1, 1, 0.0);
  double w0[MAXD];
  randn(&rng, w0, MAXD, 0.3);
  double lo, hi;
  spectrum(&tr, &lo, &hi);
  struct {
    const char *name;
    double lr;
    int64_t T;
    ms_meta_kind kind;
    int valid, residual, log_lr, start; /* valid: 1 least squares, 2 quadratic */
    ms_optim_kind opt;
  } cases[] = {
      /* train-by-train: the loss goes to 0 (n < d), so far below |y| eps at large T */
      {"ls train log T=300", 1.0 / hi, 300, MS_META_LOG, 0, 0, 0, 1, MS_OPTIM_GD},
      {"ls train log T=1e5 (loss ~1e-2000)", 1.0 / hi, 100000, MS_META_LOG, 0, 1, 0, 0,
       MS_OPTIM_GD},
      {"ls train naive T=15000 (underflows a double)", 1.0 / hi, 15000, MS_META_NAIVE, 0, 1, 0, 1,
       MS_OPTIM_GD},
      {"ls train naive T=2e4 (overflows a double)", 2.05 / hi, 20000, MS_META_NAIVE, 0, 0, 0, 1,
       MS_OPTIM_GD},
      {"ls train sum T=2000", 0.5 / hi, 2000, MS_META_SUM, 0, 1, 0, 1, MS_OPTIM_GD},
      {"ls train logsum T=1e4 log_lr", 0.7 / hi, 10000, MS_META_LOGSUM, 0, 1, 1, 0, MS_OPTIM_GD},
      /* train-by-validation: the validation loss settles at a positive value */
      {"ls valid naive T=1e5", 1e-4 / hi, 100000, MS_META_NAIVE, 1, 0, 0, 1, MS_OPTIM_GD},
      {"ls valid log T=1e5 log_lr", 2e-4 / hi, 100000, MS_META_LOG, 1, 0, 1, 0, MS_OPTIM_GD},
      {"ls valid log T=300", 0.5 / hi, 300, MS_META_LOG, 1, 0, 0, 1, MS_OPTIM_GD},
      {"ls valid naive T=2e4 (overflows a double)", 2.05 / hi, 20000, MS_META_NAIVE, 1, 0, 0, 1,
       MS_OPTIM_GD},
      {"ls valid log T=2e4 lr > 2/lambda", 2.05 / hi, 20000, MS_META_LOG, 1, 0, 0, 0, MS_OPTIM_GD},
      {"ls valid logsum T=3000", 0.01 / hi, 3000, MS_META_LOGSUM, 1, 0, 0, 1, MS_OPTIM_GD},
      {"ls valid nesterov log T=2000", 0.001 / hi, 2000, MS_META_LOG, 1, 0, 0, 1,
       MS_OPTIM_NESTEROV},
      {"ls train momentum log T=5000", 0.3 / hi, 5000, MS_META_LOG, 0, 1, 0, 1, MS_OPTIM_MOMENTUM},
      {"ls train, quadratic valid naive", 0.01 / hi, 3000, MS_META_NAIVE, 2, 0, 0, 1, MS_OPTIM_GD},
      {"ls train, quadratic valid nesterov log", 0.002 / hi, 3000, MS_META_LOG, 2, 0, 0, 1,
       MS_OPTIM_NESTEROV},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    double beta = 0.6;
    ms_optim *opt = make_opt(cases[k].opt, cases[k].lr, beta, cases[k].log_lr);
    const plain_obj *valid = cases[k].valid == 1 ? &va : cases[k].valid == 2 ? &qv : NULL;
    ref_case c = {cases[k].opt,
                  cases[k].lr,
                  beta,
                  NULL,
                  0,
                  &tr,
                  valid,
                  cases[k].start ? w0 : NULL,
                  cases[k].T,
                  cases[k].kind,
                  cases[k].residual};
    if (opt) check_case(cases[k].name, &c, opt, cases[k].log_lr);
    ms_optim_release(opt);
  }
  ms_objective_release(tr.obj);
  ms_objective_release(va.obj);
  ms_objective_release(qv.obj);
}

/* ---- momentum and Nesterov on a quadratic ---- */

static void test_momentum_quadratic(void) {
  ms_rng rng;
  ms_rng_seed(&rng, 12);
  plain_obj q, q0, qv, lsv;
  make_quad(&q, &rng, MAXD, 0.2, 1, 0.0);
  make_quad(&q0, &rng, MAXD, 0.2, 0, 0.0);
  make_quad(&qv, &rng, MAXD, 0.05, 1, 0.0);
  make_ls(&lsv, &rng, MAXN, MAXD);
  double w0[MAXD];
  randn(&rng, w0, MAXD, 1.0);
  double lo, hi, lo0, hi0;
  spectrum(&q, &lo, &hi);
  spectrum(&q0, &lo0, &hi0);
  struct {
    const char *name;
    const plain_obj *train, *valid;
    ms_optim_kind opt;
    double lr, beta;
    int64_t T;
    ms_meta_kind kind;
  } cases[] = {
      {"momentum log T=1000", &q, NULL, MS_OPTIM_MOMENTUM, 0.5 / hi, 0.5, 1000, MS_META_LOG},
      {"momentum log T=1e5 (loss ~1e-1000)", &q0, NULL, MS_OPTIM_MOMENTUM, 0.006 / lo0, 0.5, 100000,
       MS_META_LOG},
      {"momentum naive T=4000 (underflows a double)", &q0, NULL, MS_OPTIM_MOMENTUM, 0.5 / hi0, 0.5,
       4000, MS_META_NAIVE},
      {"momentum naive T=2e4 (overflows a double)", &q0, NULL, MS_OPTIM_MOMENTUM, 3.1 / hi0, 0.5,
       20000, MS_META_NAIVE},
      {"momentum sum T=500", &q, NULL, MS_OPTIM_MOMENTUM, 0.3 / hi, 0.8, 500, MS_META_SUM},
      {"momentum logsum T=3000", &q, NULL, MS_OPTIM_MOMENTUM, 0.3 / hi, 0.8, 3000, MS_META_LOGSUM},
      {"momentum valid log T=3000", &q, &qv, MS_OPTIM_MOMENTUM, 0.3 / hi, 0.7, 3000, MS_META_LOG},
      {"nesterov log T=1000", &q, NULL, MS_OPTIM_NESTEROV, 0.5 / hi, 0.5, 1000, MS_META_LOG},
      {"nesterov log T=1e5 (loss ~1e-1000)", &q0, NULL, MS_OPTIM_NESTEROV, 0.006 / lo0, 0.5, 100000,
       MS_META_LOG},
      {"nesterov naive T=2e4 (overflows a double)", &q0, NULL, MS_OPTIM_NESTEROV, 1.6 / hi0, 0.5,
       20000, MS_META_NAIVE},
      {"nesterov sum T=800", &q, NULL, MS_OPTIM_NESTEROV, 0.2 / hi, 0.9, 800, MS_META_SUM},
      {"nesterov valid naive T=3000", &q, &qv, MS_OPTIM_NESTEROV, 0.2 / hi, 0.9, 3000,
       MS_META_NAIVE},
      {"momentum quadratic, least-squares valid", &q, &lsv, MS_OPTIM_MOMENTUM, 0.01 / hi, 0.5, 2000,
       MS_META_LOG},
      {"gd quadratic, least-squares valid logsum", &q, &lsv, MS_OPTIM_GD, 0.02 / hi, 0.5, 2000,
       MS_META_LOGSUM},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    ms_optim *opt = make_opt(cases[k].opt, cases[k].lr, cases[k].beta, 0);
    ref_case c = {cases[k].opt,   cases[k].lr, cases[k].beta, NULL,          0, cases[k].train,
                  cases[k].valid, w0,          cases[k].T,    cases[k].kind, 0};
    if (opt) check_case(cases[k].name, &c, opt, 0);
    ms_optim_release(opt);
  }
  ms_objective_release(q.obj);
  ms_objective_release(q0.obj);
  ms_objective_release(qv.obj);
  ms_objective_release(lsv.obj);
}

/* ---- schedules ---- */

static void test_schedule(void) {
  ms_rng rng;
  ms_rng_seed(&rng, 5);
  plain_obj q, tr;
  make_quad(&q, &rng, 8, 0.3, 1, 0.0);
  make_ls(&tr, &rng, 6, 12);
  double w0[MAXD], lo, hi, lls, hls;
  randn(&rng, w0, MAXD, 1.0);
  spectrum(&q, &lo, &hi);
  spectrum(&tr, &lls, &hls);
  double factors[] = {1.0, 1.5, 0.5, 2.5, 0.8, 0.25};
  struct {
    const char *name;
    const plain_obj *obj;
    ms_optim_kind opt;
    double lr;
    ms_meta_kind kind;
    int residual;
  } cases[] = {
      {"schedule momentum log", &q, MS_OPTIM_MOMENTUM, 0.4 / hi, MS_META_LOG, 0},
      {"schedule nesterov logsum", &q, MS_OPTIM_NESTEROV, 0.4 / hi, MS_META_LOGSUM, 0},
      {"schedule gd least squares log", &tr, MS_OPTIM_GD, 1.0 / hls, MS_META_LOG, 1},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    ms_optim *opt = make_opt(cases[k].opt, cases[k].lr, 0.6, 0);
    OK(ms_optim_set_schedule(ctx, opt, 6, factors));
    ref_case c = {cases[k].opt, cases[k].lr, 0.6,           factors,          6, cases[k].obj, NULL,
                  w0,           2000,        cases[k].kind, cases[k].residual};
    if (opt) check_case(cases[k].name, &c, opt, 0);
    ms_optim_release(opt);
  }
  ms_objective_release(q.obj);
  ms_objective_release(tr.obj);
}

/* ---- stable against the closed form of GD, and the exact method ---- */

static void test_closed_form(void) {
  plain_obj q;
  double w0[MAXD], lo, hi;
  quad_problem(99, 12, 0.1, &q, w0, &lo, &hi);
  ms_tensor *w0t = tensor(1, 12, 0, w0);
  ms_task task = {q.obj, NULL, w0t, NULL};
  /* c = Q^T (w0 - w*) from the cached eigendecomposition */
  ms_tensor *lam = NULL, *Q = NULL;
  OK(ms_objective_quadratic_eigh(ctx, q.obj, &lam, &Q));
  double e[12], c[12], Qd[144];
  OK(ms_tensor_read(ctx, Q, Qd, 144));
  for (int i = 0; i < 12; i++) e[i] = w0[i] - q.b[i];
  for (int j = 0; j < 12; j++) {
    c[j] = 0;
    for (int i = 0; i < 12; i++) c[j] += Qd[i * 12 + j] * e[i];
  }
  ms_tensor *ct = tensor(1, 12, 0, c);
  double etas[] = {0.3 / hi, 1.0 / hi, 1.9 / hi, 2.1 / hi};
  int64_t Ts[] = {1, 50, 20000};
  double worst = 0;
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 3; b++)
      for (int k = MS_META_NAIVE; k <= MS_META_LOG; k++)
        for (int log_lr = 0; log_lr < 2; log_lr++) {
          ms_optim *opt = make_opt(MS_OPTIM_GD, etas[a], 0, log_lr);
          ms_meta_result ex;
          OK(ms_meta_gd_exact(ctx, lam, ct, etas[a], Ts[b], (ms_meta_kind)k, &ex));
          for (int m = 0; m < 2; m++) {
            ms_meta_spec spec = spec_of(opt, &task, Ts[b], (ms_meta_kind)k, MS_META_TRAIN,
                                        m ? MS_METHOD_EXACT : MS_METHOD_STABLE);
            ms_meta_out out;
            OK(ms_meta_value_and_grad(ctx, &spec, &out));
            double chain = log_lr ? etas[a] : 1;
            double ev = fabs(out.log_loss - ex.log_loss);
            double eg = fabs(out.log_abs_grad[0] - ex.log_abs_grad[0] - log(chain));
            int ok = ev < 1e-9 && eg < 1e-9 && out.status == ex.status;
            if (ex.status == MS_META_OK) {
              ok &= fabs(out.value - ex.value) <= 1e-9 * fabs(ex.value);
              ok &=
                  fabs(grad_item(&out, 0) - chain * ex.grad[0]) <= 1e-9 * fabs(chain * ex.grad[0]);
            }
            if (ev > worst) worst = ev;
            if (eg > worst) worst = eg;
            CHECK(ok);
            if (!ok)
              fprintf(
                  stderr,
                  "closed form %s eta=%g T=%lld kind %d log_lr %d: %.17g %.17g vs %.17g %.17g\n",
                  m ? "exact" : "stable", etas[a], (long long)Ts[b], k, log_lr, out.log_loss,
                  out.log_abs_grad[0], ex.log_loss, ex.log_abs_grad[0]);
            ms_meta_out_clear(&out);
          }
          ms_optim_release(opt);
        }
  printf("stable and exact vs ms_meta_gd_exact: max |log difference| %.3g\n", worst);
  ms_tensor_release(ct);
  ms_tensor_release(w0t);
  ms_objective_release(q.obj);
}

/* The public quadratic routine agrees with the reference too (it runs on the same unroll). */
static void test_stable_quadratic(void) {
  plain_obj q;
  double w0[MAXD], lo, hi;
  quad_problem(3, 10, 0.2, &q, w0, &lo, &hi);
  ms_tensor *H = tensor(2, 10, 10, q.A), *ws = tensor(1, 10, 0, q.b), *w0t = tensor(1, 10, 0, w0);
  for (int mom = 0; mom < 2; mom++) {
    ms_meta_optimizer o = {mom ? MS_META_MOMENTUM : MS_META_GD, 0.4 / hi, 0.7};
    ref_case c = {mom ? MS_OPTIM_MOMENTUM : MS_OPTIM_GD,
                  o.lr,
                  o.beta,
                  NULL,
                  0,
                  &q,
                  NULL,
                  w0,
                  5000,
                  MS_META_LOG,
                  0};
    ref_out ref = reference(&c);
    ms_meta_result r;
    OK(ms_meta_stable_quadratic(ctx, H, w0t, ws, &o, 5000, MS_META_LOG, &r));
    CHECK(r.nparams == (mom ? 2 : 1) && r.status == MS_META_OK);
    CHECK(fabs(r.log_loss - (double)ref.log_loss) < TOL);
    for (int j = 0; j < r.nparams; j++)
      CHECK(rel_ok("meta_stable grad", r.grad[j], ref.dvalue[j], TOL, &worst_grad));
  }
  ms_tensor_release(H);
  ms_tensor_release(ws);
  ms_tensor_release(w0t);
  ms_objective_release(q.obj);

  /* An indefinite H (issue 14): the loss goes negative, which the log-domain state cannot
   * hold; the routine returned 0 with status underflow. Refused, as is an asymmetric H. */
  const double hind[4] = {1, 0, 0, -1}, hasym[4] = {2, 1, 0, 2}, w2[2] = {1, 1};
  ms_tensor *Hi = tensor(2, 2, 2, hind), *Ha = tensor(2, 2, 2, hasym), *w2t = tensor(1, 2, 0, w2);
  ms_meta_optimizer gd = {MS_META_GD, 0.1, 0};
  ms_meta_result r;
  CHECK_FAILS(ctx, ms_meta_stable_quadratic(ctx, Hi, w2t, NULL, &gd, 10, MS_META_NAIVE, &r),
              MS_EARG,
              "meta_stable: needs a positive semi-definite H (smallest eigenvalue -1, largest 1)");
  CHECK_FAILS(ctx, ms_meta_stable_quadratic(ctx, Ha, w2t, NULL, &gd, 10, MS_META_NAIVE, &r),
              MS_EARG, "meta_stable: H must be symmetric, max |H - H^T| = 1 at H[0,1]");
  ms_tensor_release(Hi);
  ms_tensor_release(Ha);
  ms_tensor_release(w2t);
}

/* ---- selections, exact zeros, interrupts, memory ---- */

static void test_edges(void) {
  double h[1] = {2.0}, one[1] = {1.0};
  ms_tensor *H = tensor(2, 1, 1, h), *w0 = tensor(1, 1, 0, one);
  ms_objective *obj = NULL;
  OK(ms_objective_quadratic(ctx, H, NULL, 0, &obj));
  ms_task task = {obj, NULL, w0, NULL};

  /* lr = 1/lambda reaches w* = 0 exactly at step 1: a zero loss */
  ms_optim *gd = make_opt(MS_OPTIM_GD, 0.5, 0, 0);
  ms_meta_spec spec = spec_of(gd, &task, 10, MS_META_LOG, MS_META_TRAIN, MS_METHOD_STABLE);
  ms_meta_out out;
  OK(ms_meta_value_and_grad(ctx, &spec, &out));
  CHECK(out.status == MS_META_UNDERFLOW && out.fail_step == 1 && out.value == -INFINITY);
  ms_meta_out_clear(&out);
  spec.allow_zero_loss = 1;
  OK(ms_meta_value_and_grad(ctx, &spec, &out));
  CHECK(out.status == MS_META_OK && out.fail_step == -1 && out.value == -INFINITY);
  ms_meta_out_clear(&out);
  ms_optim_release(gd);

  /* selections: only beta, or nothing (the value alone) */
  ms_optim *mom = make_opt(MS_OPTIM_MOMENTUM, 0.1, 0.5, 0);
  spec = spec_of(mom, &task, 20, MS_META_LOG, MS_META_TRAIN, MS_METHOD_STABLE);
  ms_meta_out all;
  OK(ms_meta_value_and_grad(ctx, &spec, &all));
  int only_beta[1] = {1};
  spec.nselect = 1;
  spec.select = only_beta;
  OK(ms_meta_value_and_grad(ctx, &spec, &out));
  CHECK(out.grad[0] == NULL && out.grad[1] != NULL);
  CHECK(out.value == all.value && grad_item(&out, 1) == grad_item(&all, 1));
  CHECK(out.log_abs_grad[1] == all.log_abs_grad[1]);
  ms_meta_out_clear(&out);
  ms_tensor *theta[2] = {ms_optim_param_at(mom, 0)->init, ms_optim_param_at(mom, 1)->init};
  int none[2] = {0, 0};
  memset(&out, 0, sizeof out);
  OK(ms__meta_stable(ctx, &spec, &task, theta, none, &out));
  CHECK(out.grad[0] == NULL && out.grad[1] == NULL && out.value == all.value);
  ms_meta_out_clear(&all);

  /* interrupt: checked every 4096 steps */
  spec = spec_of(mom, &task, 10000, MS_META_LOG, MS_META_TRAIN, MS_METHOD_STABLE);
  ms_ctx_interrupt(ctx);
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &spec, &out), MS_EINTERRUPT, "meta: interrupted");
  ms_ctx_clear_interrupt(ctx);

  /* every allocation failing in turn: MS_ENOMEM, nothing leaked */
  size_t before = ms_ctx_bytes(ctx);
  int enomem = 0;
  for (size_t limit = 8; limit < 4096; limit *= 2) {
    ms_ctx_set_limit(ctx, before + limit);
    int st = ms_meta_value_and_grad(ctx, &spec, &out);
    ms_ctx_set_limit(ctx, 0);
    if (st == MS_ENOMEM)
      enomem++;
    else
      CHECK(st == MS_OK);
    ms_meta_out_clear(&out);
    CHECK(ms_ctx_bytes(ctx) == before);
  }
  CHECK(enomem > 0);
  ms_optim_release(mom);
  ms_objective_release(obj);
  ms_tensor_release(H);
  ms_tensor_release(w0);
}

/* ---- what the methods do not cover ---- */

static const char STABLE_TAIL[] =
    " (it handles gd, momentum and nesterov on quadratics and least squares)";

static int custom_fn(ms_ctx *c, void *ud, const ms_traj *traj, ms_tensor **out) {
  (void)c, (void)ud, (void)traj, (void)out;
  return MS_OK;
}

/* ms__meta_stable fails with MS_EARG "meta: method 'stable' does not cover <what> (...)",
 * and ms__meta_stable_applies says the same, keeping the context's error as it was. */
static void refuse(const ms_meta_spec *spec, const ms_task *task, const char *what) {
  char msg[512], why[512];
  snprintf(msg, sizeof msg, "meta: method 'stable' does not cover %s%s", what, STABLE_TAIL);
  ms_tensor *theta[MS_OPTIM_MAXPARAMS] = {0};
  int sel[MS_OPTIM_MAXPARAMS] = {1, 1, 1, 1, 1, 1, 1, 1};
  for (int i = 0; i < ms_optim_nparams(spec->optimizer); i++)
    theta[i] = ms_optim_param_at(spec->optimizer, i)->init;
  ms_meta_out out;
  memset(&out, 0, sizeof out);
  int st = ms__meta_stable(ctx, spec, task, theta, sel, &out);
  CHECK(st == MS_EARG && strcmp(ms_ctx_error(ctx), msg) == 0);
  if (st != MS_EARG || strcmp(ms_ctx_error(ctx), msg) != 0)
    fprintf(stderr, "  got %d \"%s\"\n  wanted \"%s\"\n", st, ms_ctx_error(ctx), msg);
  ms_meta_out_clear(&out);
  ms_ctx_fail(ctx, MS_ESTATE, "an earlier error");
  CHECK(ms__meta_stable_applies(ctx, spec, task, why, sizeof why) == 0);
  CHECK(strcmp(why, msg + strlen("meta: ")) == 0);
  CHECK(ms_ctx_status(ctx) == MS_ESTATE && strcmp(ms_ctx_error(ctx), "an earlier error") == 0);
  ms_ctx_clear_error(ctx);
}

static void test_not_covered(void) {
  ms_rng rng;
  ms_rng_seed(&rng, 8);
  plain_obj q, ls, qf;
  make_quad(&q, &rng, 4, 0.5, 0, 0.0);
  make_ls(&ls, &rng, 3, 4);
  make_quad(&qf, &rng, 4, 0.5, 0, 2.0);
  double X[12], y[3] = {0, 1, 1};
  randn(&rng, X, 12, 1.0);
  ms_tensor *Xt = tensor(2, 3, 4, X), *yt = tensor(1, 3, 0, y);
  ms_objective *logi = NULL;
  OK(ms_objective_logistic(ctx, Xt, yt, 0.1, &logi));
  ms_task task = {q.obj, NULL, NULL, NULL};
  ms_optim *gd = make_opt(MS_OPTIM_GD, 0.1, 0, 0);
  ms_meta_spec spec = spec_of(gd, &task, 5, MS_META_LOG, MS_META_TRAIN, MS_METHOD_STABLE);

  /* covered: applies says yes and keeps the error as it was */
  ms_ctx_fail(ctx, MS_ESTATE, "an earlier error");
  CHECK(ms__meta_stable_applies(ctx, &spec, &task, NULL, 0) == 1);
  CHECK(ms_ctx_status(ctx) == MS_ESTATE && strcmp(ms_ctx_error(ctx), "an earlier error") == 0);
  ms_ctx_clear_error(ctx);

  ms_optim_options oo;
  memset(&oo, 0, sizeof oo);
  oo.lr = 0.1;
  ms_optim *adam = NULL, *sgd = NULL, *vec_lr = NULL;
  OK(ms_optim_builtin(ctx, MS_OPTIM_ADAM, &oo, &adam));
  OK(ms_optim_builtin(ctx, MS_OPTIM_SGD, &oo, &sgd));
  double lrs[4] = {0.1, 0.1, 0.2, 0.2};
  oo.lr_init = tensor(1, 4, 0, lrs);
  OK(ms_optim_builtin(ctx, MS_OPTIM_GD, &oo, &vec_lr));
  ms_tensor_release(oo.lr_init);

  spec.optimizer = adam;
  refuse(&spec, &task, "the optimizer adam");
  spec.optimizer = sgd;
  refuse(&spec, &task, "the optimizer sgd");
  spec.optimizer = vec_lr;
  refuse(&spec, &task, "a parameter 'lr' with 4 elements (only one-element ones)");
  spec.optimizer = gd;
  spec.truncate = 2;
  refuse(&spec, &task, "truncate = 2");
  spec.truncate = 0;
  spec.freeze_norm = 10;
  refuse(&spec, &task, "freeze_norm = 10");
  spec.freeze_norm = 0;
  spec.meta.kind = MS_META_CUSTOM;
  spec.meta.fn = custom_fn;
  refuse(&spec, &task, "a custom meta-objective");
  spec.meta.kind = MS_META_LOG;
  spec.meta.fn = NULL;
  task.objective = logi;
  refuse(&spec, &task, "the training objective 'logistic'");
  task.objective = qf.obj;
  refuse(&spec, &task, "a training quadratic with fstar = 2 (only fstar = 0)");
  task.objective = q.obj;
  spec.meta.on = MS_META_VALID;
  refuse(&spec, &task, "a meta-objective on 'valid' for a task without a validation objective");
  task.valid = logi;
  refuse(&spec, &task, "the validation objective 'logistic'");
  task.valid = ls.obj;
  CHECK(ms__meta_stable_applies(ctx, &spec, &task, NULL, 0) == 1);
  spec.meta.on = MS_META_TRAIN;
  task.valid = NULL;

  /* an indefinite H: the PSD check's message */
  double hi[4] = {1, 0, 0, -1};
  ms_tensor *Hi = tensor(2, 2, 2, hi);
  ms_objective *indef = NULL;
  OK(ms_objective_quadratic(ctx, Hi, NULL, 0, &indef));
  ms_task ti = {indef, NULL, NULL, NULL};
  spec.tasks = &ti;
  ms_meta_out out;
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &spec, &out), MS_EARG,
              "meta: method 'stable': needs a positive semi-definite H (smallest eigenvalue -1, "
              "largest 1)");
  char why[256] = "";
  CHECK(ms__meta_stable_applies(ctx, &spec, &ti, why, sizeof why) == 0);
  CHECK(strcmp(why,
               "method 'stable': needs a positive semi-definite H (smallest eigenvalue -1, largest "
               "1)") == 0);
  spec.method = MS_METHOD_EXACT;
  CHECK_FAILS(
      ctx, ms_meta_value_and_grad(ctx, &spec, &out), MS_EARG,
      "meta: method 'exact': needs a positive semi-definite H (smallest eigenvalue -1, largest 1)");

  /* the exact method: gd without a schedule, naive or log on the training loss */
  const char *exact_tail =
      " (it handles gd without a schedule on a quadratic, with the naive or log meta-objective on "
      "the training loss)";
  char msg[512];
  spec.tasks = &task;
  ms_optim *mom = make_opt(MS_OPTIM_MOMENTUM, 0.1, 0.5, 0);
  spec.optimizer = mom;
  snprintf(msg, sizeof msg, "meta: method 'exact' does not cover the optimizer momentum%s",
           exact_tail);
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &spec, &out), MS_EARG, msg);
  spec.optimizer = gd;
  spec.meta.kind = MS_META_SUM;
  snprintf(msg, sizeof msg, "meta: method 'exact' does not cover the sum meta-objective%s",
           exact_tail);
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &spec, &out), MS_EARG, msg);
  spec.meta.kind = MS_META_LOG;
  task.objective = ls.obj;
  snprintf(msg, sizeof msg,
           "meta: method 'exact' does not cover the training objective 'least_squares'%s",
           exact_tail);
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &spec, &out), MS_EARG, msg);
  task.objective = q.obj;
  double f[2] = {1, 0.5};
  ms_optim *sched = make_opt(MS_OPTIM_GD, 0.1, 0, 0);
  OK(ms_optim_set_schedule(ctx, sched, 2, f));
  spec.optimizer = sched;
  snprintf(msg, sizeof msg, "meta: method 'exact' does not cover a step-size schedule%s",
           exact_tail);
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &spec, &out), MS_EARG, msg);

  ms_optim_release(sched);
  ms_optim_release(mom);
  ms_objective_release(indef);
  ms_tensor_release(Hi);
  ms_optim_release(adam);
  ms_optim_release(sgd);
  ms_optim_release(vec_lr);
  ms_optim_release(gd);
  ms_objective_release(logi);
  ms_tensor_release(Xt);
  ms_tensor_release(yt);
  ms_objective_release(q.obj);
  ms_objective_release(ls.obj);
  ms_objective_release(qf.obj);
}

/* The worst errors the tests above saw, for the log. */
static void report_worst(void) {
  printf(
      "stable vs long double unroll: max |log loss error| %.3g, max relative error of values %.3g, "
      "of meta-gradients %.3g\n",
      worst_loss, worst_value, worst_grad);
}

int main(void) {
  return check_main(&ctx,
                    (const check_test[]){test_least_squares, test_momentum_quadratic, test_schedule,
                                         test_closed_form, test_stable_quadratic, test_edges,
                                         test_not_covered, report_worst, NULL});
}
