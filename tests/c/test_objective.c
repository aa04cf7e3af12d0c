/*
 * Objectives (engine/src/objective.c).
 *
 * Golden values are closed forms computed here with plain loops over plain arrays
 * (never with engine operations): values, gradients and Hessians of the quadratic,
 * least-squares and logistic objectives. On top of that: gradients against central
 * differences of value, Hessian-vector products against central differences of grad,
 * the Hessian obtained by differentiating ms_objective_grad on a tape (second order),
 * objectives with C callbacks whose missing grad/hvp the engine derives, every error
 * message, and allocation failures at every point (no leak, no wrong status).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "metastep/metastep.h"
#include "metastep/objective.h"

#define MAXD 8
#define MAXN 16

#define OK(call) CHECK_OK_OR_OUT(ctx, call)

/* max |a - b| <= tol * max(1, max |b|) over n elements. */
static void near_arr(const char *what, const double *a, const double *b, int n, double tol) {
  check_near_arr(what, a, b, n, tol, 1.0);
}

static ms_tensor *vec(ms_ctx *ctx, int n, const double *x) {
  ms_tensor *t = NULL;
  int64_t shape[1] = {n};
  ms_tensor_from_data(ctx, 1, shape, x, &t);
  return t;
}

static ms_tensor *mat(ms_ctx *ctx, int n, int m, const double *x) {
  ms_tensor *t = NULL;
  int64_t shape[2] = {n, m};
  ms_tensor_from_data(ctx, 2, shape, x, &t);
  return t;
}

/* Reads a tensor of n elements into buf; checks the shape is [n] (or 0-d when n == 0). */
static int readv(ms_ctx *ctx, const ms_tensor *t, int n, double *buf) {
  if (n == 0) return ms_tensor_ndim(t) == 0 ? ms_tensor_read(ctx, t, buf, 1) : MS_ESHAPE;
  if (ms_tensor_ndim(t) != 1 || ms_tensor_dim(t, 0) != n) return MS_ESHAPE;
  return ms_tensor_read(ctx, t, buf, n);
}

static void fill_normal(ms_rng *rng, double *x, int n) {
  for (int i = 0; i < n; i++) x[i] = ms_rng_normal(rng);
}

/* ---- closed forms (plain loops) ---- */

typedef struct problem {
  int kind; /* 0 quadratic, 1 least squares, 2 logistic */
  int d, n;
  double H[MAXD * MAXD], ws[MAXD], fstar; /* quadratic */
  int has_ws;
  double X[MAXN * MAXD], y[MAXN], l2; /* data objectives */
} problem;

static double sigm(double x) { return 1 / (1 + exp(-x)); }

static void closed_form(const problem *p, const double *w, double *f, double *g, double *Hm) {
  int d = p->d, n = p->n;
  memset(g, 0, sizeof(double) * (size_t)d);
  memset(Hm, 0, sizeof(double) * (size_t)(d * d));
  *f = 0;
  if (p->kind == 0) {
    double r[MAXD];
    for (int i = 0; i < d; i++) r[i] = w[i] - (p->has_ws ? p->ws[i] : 0);
    for (int i = 0; i < d; i++)
      for (int j = 0; j < d; j++) {
        *f += 0.5 * r[i] * p->H[i * d + j] * r[j];
        g[i] += p->H[i * d + j] * r[j];
        Hm[i * d + j] = p->H[i * d + j];
      }
    *f += p->fstar;
  } else if (p->kind == 1) {
    for (int k = 0; k < n; k++) {
      double r = -p->y[k];
      for (int j = 0; j < d; j++) r += p->X[k * d + j] * w[j];
      *f += r * r / (2.0 * n);
      for (int i = 0; i < d; i++) {
        g[i] += p->X[k * d + i] * r / n;
        for (int j = 0; j < d; j++) Hm[i * d + j] += p->X[k * d + i] * p->X[k * d + j] / n;
      }
    }
  } else {
    for (int k = 0; k < n; k++) {
      double z = 0, s = 2 * p->y[k] - 1;
      for (int j = 0; j < d; j++) z += p->X[k * d + j] * w[j];
      *f += log1p(exp(-s * z)) / n;
      double a = sigm(z) * (1 - sigm(z));
      for (int i = 0; i < d; i++) {
        g[i] += -s * sigm(-s * z) * p->X[k * d + i] / n;
        for (int j = 0; j < d; j++) Hm[i * d + j] += a * p->X[k * d + i] * p->X[k * d + j] / n;
      }
    }
    for (int i = 0; i < d; i++) {
      *f += 0.5 * p->l2 * w[i] * w[i];
      g[i] += p->l2 * w[i];
      Hm[i * d + i] += p->l2;
    }
  }
}

static void make_problem(problem *p, int kind, int d, int n, uint64_t seed) {
  ms_rng rng;
  ms_rng_seed(&rng, seed);
  memset(p, 0, sizeof *p);
  p->kind = kind, p->d = d, p->n = n;
  if (kind == 0) {
    double A[MAXD * MAXD];
    fill_normal(&rng, A, d * d);
    for (int i = 0; i < d; i++)
      for (int j = 0; j < d; j++) {
        double s = 0;
        for (int k = 0; k < d; k++) s += A[k * d + i] * A[k * d + j]; /* A^T A: PSD */
        p->H[i * d + j] = s + (i == j);
      }
    fill_normal(&rng, p->ws, d);
    p->has_ws = 1;
    p->fstar = 0.75;
  } else {
    fill_normal(&rng, p->X, n * d);
    fill_normal(&rng, p->y, n);
    if (kind == 2) {
      for (int k = 0; k < n; k++) p->y[k] = p->y[k] > 0 ? 1 : 0;
      p->l2 = 0.3;
    }
  }
}

static int make_objective(ms_ctx *ctx, const problem *p, ms_objective **obj) {
  ms_tensor *a = NULL, *b = NULL;
  int st;
  *obj = NULL;
  if (p->kind == 0) {
    a = mat(ctx, p->d, p->d, p->H);
    b = p->has_ws ? vec(ctx, p->d, p->ws) : NULL;
    st = (a == NULL || (p->has_ws && b == NULL)) ? MS_ENOMEM
                                                 : ms_objective_quadratic(ctx, a, b, p->fstar, obj);
  } else {
    a = mat(ctx, p->n, p->d, p->X);
    b = vec(ctx, p->n, p->y);
    if (a == NULL || b == NULL)
      st = MS_ENOMEM;
    else if (p->kind == 1)
      st = ms_objective_least_squares(ctx, a, b, obj);
    else
      st = ms_objective_logistic(ctx, a, b, p->l2, obj);
  }
  ms_tensor_release(a);
  ms_tensor_release(b);
  return st;
}

static const char *kind_name[] = {"quadratic", "least_squares", "logistic"};

/* ---- values, gradients, Hessian-vector products against closed forms ---- */

static void check_problem(const problem *p) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  ms_objective *obj = NULL;
  ms_tensor *w = NULL, *v = NULL, *f = NULL, *g = NULL, *hv = NULL, *wp = NULL, *t = NULL;
  int d = p->d;
  double wd[MAXD], vd[MAXD], f0, g0[MAXD], H0[MAXD * MAXD], buf[MAXD], ref[MAXD] = {0};
  ms_rng rng;
  ms_rng_seed(&rng, 99 + (uint64_t)p->kind);
  fill_normal(&rng, wd, d);
  fill_normal(&rng, vd, d);
  closed_form(p, wd, &f0, g0, H0);
  char what[96];
  const char *name = kind_name[p->kind];

  OK(make_objective(ctx, p, &obj));
  CHECK(strcmp(ms_objective_name(obj), name) == 0);
  CHECK(ms_objective_dim(obj) == d);
  w = vec(ctx, d, wd);
  v = vec(ctx, d, vd);
  OK(ms_objective_value(ctx, obj, w, &f));
  CHECK(ms_tensor_ndim(f) == 0);
  OK(ms_tensor_item(ctx, f, &buf[0]));
  snprintf(what, sizeof what, "%s value%s", name, p->has_ws ? "" : " (no wstar)");
  near_arr(what, buf, &f0, 1, 1e-12);

  OK(ms_objective_grad(ctx, obj, w, &g));
  OK(readv(ctx, g, d, buf));
  snprintf(what, sizeof what, "%s grad vs closed form", name);
  near_arr(what, buf, g0, d, 1e-12);

  OK(ms_objective_hvp(ctx, obj, w, v, &hv));
  OK(readv(ctx, hv, d, buf));
  for (int i = 0; i < d; i++) {
    ref[i] = 0;
    for (int j = 0; j < d; j++) ref[i] += H0[i * d + j] * vd[j];
  }
  snprintf(what, sizeof what, "%s hvp vs closed form", name);
  near_arr(what, buf, ref, d, 1e-12);

  /* grad against central differences of value */
  double num[MAXD] = {0}, gd[MAXD] = {0};
  OK(readv(ctx, g, d, gd));
  for (int i = 0; i < d; i++) {
    double x[MAXD], fp, fm, h = 1e-6;
    memcpy(x, wd, sizeof x);
    x[i] = wd[i] + h;
    wp = vec(ctx, d, x);
    OK(ms_objective_value(ctx, obj, wp, &t));
    OK(ms_tensor_item(ctx, t, &fp));
    ms_tensor_release(wp), ms_tensor_release(t), wp = t = NULL;
    x[i] = wd[i] - h;
    wp = vec(ctx, d, x);
    OK(ms_objective_value(ctx, obj, wp, &t));
    OK(ms_tensor_item(ctx, t, &fm));
    ms_tensor_release(wp), ms_tensor_release(t), wp = t = NULL;
    num[i] = (fp - fm) / (2 * h);
  }
  snprintf(what, sizeof what, "%s grad vs central differences", name);
  near_arr(what, gd, num, d, 1e-7);

  /* hvp against central differences of grad along v */
  {
    double x[MAXD], gp[MAXD], gm[MAXD], h = 1e-6, hd[MAXD];
    for (int i = 0; i < d; i++) x[i] = wd[i] + h * vd[i];
    wp = vec(ctx, d, x);
    OK(ms_objective_grad(ctx, obj, wp, &t));
    OK(readv(ctx, t, d, gp));
    ms_tensor_release(wp), ms_tensor_release(t), wp = t = NULL;
    for (int i = 0; i < d; i++) x[i] = wd[i] - h * vd[i];
    wp = vec(ctx, d, x);
    OK(ms_objective_grad(ctx, obj, wp, &t));
    OK(readv(ctx, t, d, gm));
    ms_tensor_release(wp), ms_tensor_release(t), wp = t = NULL;
    for (int i = 0; i < d; i++) num[i] = (gp[i] - gm[i]) / (2 * h);
    OK(readv(ctx, hv, d, hd));
    snprintf(what, sizeof what, "%s hvp vs central differences", name);
    near_arr(what, hd, num, d, 1e-7);
  }
out:
  ms_tensor_release(w), ms_tensor_release(v), ms_tensor_release(f), ms_tensor_release(g);
  ms_tensor_release(hv), ms_tensor_release(wp), ms_tensor_release(t);
  ms_objective_release(obj);
  check_ctx_free(ctx);
}

/* ---- second order: a tape around ms_objective_grad gives the Hessian ---- */

static void check_hessian_by_tape(const problem *p) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  ms_objective *obj = NULL;
  ms_level *tape = NULL, *fwd = NULL;
  ms_tensor *w = NULL, *ww = NULL, *g = NULL, *e = NULL, *row = NULL, *f = NULL, *gf = NULL;
  ms_tensor *v = NULL, *hv = NULL, *hvt = NULL;
  int d = p->d;
  double wd[MAXD], f0, g0[MAXD], H0[MAXD * MAXD], Ht[MAXD * MAXD], buf[MAXD];
  char what[96];
  ms_rng rng;
  ms_rng_seed(&rng, 7 + (uint64_t)p->kind);
  fill_normal(&rng, wd, d);
  closed_form(p, wd, &f0, g0, H0);
  OK(make_objective(ctx, p, &obj));
  w = vec(ctx, d, wd);

  /* reverse over the objective's grad: row i of H is the gradient of e_i . grad(w) */
  OK(ms_ad_push(ctx, MS_AD_REVERSE, &tape));
  OK(ms_ad_watch(ctx, tape, w, NULL, &ww));
  OK(ms_objective_grad(ctx, obj, ww, &g));
  OK(ms_objective_value(ctx, obj, ww, &f));
  OK(ms_ad_pop(ctx, tape));
  for (int i = 0; i < d; i++) {
    double ed[MAXD] = {0};
    ed[i] = 1;
    e = vec(ctx, d, ed);
    OK(ms_ad_gradient(ctx, tape, g, e, 1, &ww, &row));
    OK(readv(ctx, row, d, &Ht[i * d]));
    ms_tensor_release(e), ms_tensor_release(row), e = row = NULL;
  }
  snprintf(what, sizeof what, "%s Hessian by a tape over grad", kind_name[p->kind]);
  near_arr(what, Ht, H0, d * d, 1e-12);
  /* and the tape over value gives the gradient */
  OK(ms_ad_gradient(ctx, tape, f, NULL, 1, &ww, &gf));
  OK(readv(ctx, gf, d, buf));
  snprintf(what, sizeof what, "%s gradient by a tape over value", kind_name[p->kind]);
  near_arr(what, buf, g0, d, 1e-12);
  ms_ad_free(tape), tape = NULL;

  /* forward mode over the objective's hvp: for the quadratic and least squares the
   * Hessian is constant, so the tangent of H(w) v along any direction is 0; for the
   * logistic objective it is a third derivative, checked against differences of hvp. */
  {
    double vd[MAXD], ud[MAXD], tv[MAXD], num[MAXD], h = 1e-5;
    fill_normal(&rng, vd, d);
    fill_normal(&rng, ud, d);
    v = vec(ctx, d, vd);
    e = vec(ctx, d, ud);
    ms_tensor *wf = NULL;
    OK(ms_ad_push(ctx, MS_AD_FORWARD, &fwd));
    OK(ms_ad_watch(ctx, fwd, w, e, &wf));
    int st = ms_objective_hvp(ctx, obj, wf, v, &hv);
    ms_tensor_release(wf);
    OK(st);
    OK(ms_ad_pop(ctx, fwd));
    OK(ms_ad_tangent(ctx, fwd, hv, &hvt));
    OK(readv(ctx, hvt, d, tv));
    for (int sgn = 1; sgn >= -1; sgn -= 2) {
      double x[MAXD], gp[MAXD];
      for (int i = 0; i < d; i++) x[i] = wd[i] + sgn * h * ud[i];
      ms_tensor *xp = vec(ctx, d, x), *r = NULL;
      st = ms_objective_hvp(ctx, obj, xp, v, &r);
      if (st == MS_OK) st = readv(ctx, r, d, gp);
      ms_tensor_release(xp), ms_tensor_release(r);
      OK(st);
      for (int i = 0; i < d; i++) num[i] = sgn == 1 ? gp[i] : (num[i] - gp[i]) / (2 * h);
    }
    snprintf(what, sizeof what, "%s third derivative (forward over hvp)", kind_name[p->kind]);
    near_arr(what, tv, num, d, 1e-6);
  }
out:
  ms_ad_free(tape);
  ms_ad_free(fwd);
  ms_tensor_release(w), ms_tensor_release(ww), ms_tensor_release(g), ms_tensor_release(e);
  ms_tensor_release(row), ms_tensor_release(f), ms_tensor_release(gf), ms_tensor_release(v);
  ms_tensor_release(hv), ms_tensor_release(hvt);
  ms_objective_release(obj);
  CHECK(ms_ad_depth(ctx) == 0);
  check_ctx_free(ctx);
}

/* ---- objectives from C callbacks ---- */

/*
 * f(w) = 1/4 sum_i c_i w_i^4 + sum_i w_i, written with engine ops:
 * grad c w^3 + 1, H = diag(3 c w^2).
 */
typedef struct quartic {
  ms_tensor *c;
  int freed;
  int mode; /* which misbehaviour the callbacks show (0 = none) */
} quartic;

enum {
  Q_FINE,
  Q_GRAD_SHAPE,
  Q_VALUE_SHAPE,
  Q_VALUE_ONE,
  Q_NO_TENSOR,
  Q_FAIL_MSG,
  Q_FAIL_SILENT,
  Q_HVP_SHAPE
};

static int q_value(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  quartic *q = ud;
  ms_tensor *w4 = NULL, *cw = NULL, *s = NULL, *s4 = NULL, *sw = NULL;
  int st;
  if (q->mode == Q_NO_TENSOR) return MS_OK;
  if (q->mode == Q_FAIL_MSG) return ms_ctx_fail(ctx, MS_ENUMERIC, "quartic exploded at step 3");
  if (q->mode == Q_FAIL_SILENT) return MS_ENUMERIC;
  if (q->mode == Q_VALUE_SHAPE) return ms_tensor_copy(ctx, w, out);
  st = ms_binary_scalar(ctx, MS_POW, w, 4.0, 0, &w4);
  if (st == MS_OK) st = ms_binary(ctx, MS_MUL, q->c, w4, &cw);
  if (st == MS_OK) st = ms_reduce(ctx, MS_SUM, cw, MS_ALL, 0, &s);
  if (st == MS_OK) st = ms_binary_scalar(ctx, MS_MUL, s, 0.25, 0, &s4);
  if (st == MS_OK) st = ms_reduce(ctx, MS_SUM, w, MS_ALL, 0, &sw);
  if (st == MS_OK) st = ms_binary(ctx, MS_ADD, s4, sw, out);
  if (st == MS_OK && q->mode == Q_VALUE_ONE) { /* a one-element [1] instead of 0-d */
    ms_tensor *r = NULL;
    int64_t one = 1;
    st = ms_tensor_reshape(ctx, *out, 1, &one, &r);
    ms_tensor_release(*out);
    *out = r;
  }
  ms_tensor_release(w4), ms_tensor_release(cw), ms_tensor_release(s), ms_tensor_release(s4);
  ms_tensor_release(sw);
  return st;
}

static int q_grad(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  quartic *q = ud;
  ms_tensor *w3 = NULL, *cw = NULL;
  if (q->mode == Q_GRAD_SHAPE) {
    int64_t two = 2;
    return ms_tensor_zeros(ctx, 1, &two, out);
  }
  int st = ms_binary_scalar(ctx, MS_POW, w, 3.0, 0, &w3);
  if (st == MS_OK) st = ms_binary(ctx, MS_MUL, q->c, w3, &cw);
  if (st == MS_OK) st = ms_binary_scalar(ctx, MS_ADD, cw, 1.0, 0, out);
  ms_tensor_release(w3), ms_tensor_release(cw);
  return st;
}

static int q_hvp(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor *v, ms_tensor **out) {
  (void)ud, (void)w, (void)v;
  ms_tensor_scalar(ctx, 1.0, out); /* Q_HVP_SHAPE: a 0-d result */
  return MS_OK;
}

static void q_free(void *ud) { ((quartic *)ud)->freed++; }

static void quartic_closed(const double *c, const double *w, const double *v, int d, double *f,
                           double *g, double *hv) {
  *f = 0;
  for (int i = 0; i < d; i++) {
    *f += 0.25 * c[i] * pow(w[i], 4) + w[i];
    g[i] = c[i] * pow(w[i], 3) + 1;
    hv[i] = 3 * c[i] * w[i] * w[i] * v[i];
  }
}

static void test_callbacks(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  enum { D = 3 };
  double cd[D] = {1.5, 0.5, 2}, wd[D] = {0.7, -1.2, 0.4}, vd[D] = {1, -0.5, 2};
  double f0, g0[D], hv0[D], buf[D];
  quartic q = {NULL, 0, Q_FINE};
  ms_objective *full = NULL, *vonly = NULL, *withgrad = NULL;
  ms_tensor *w = NULL, *v = NULL, *f = NULL, *g = NULL, *hv = NULL, *bad = NULL;
  quartic_closed(cd, wd, vd, D, &f0, g0, hv0);
  q.c = vec(ctx, D, cd);
  w = vec(ctx, D, wd);
  v = vec(ctx, D, vd);

  /* value + grad: hvp derived by forward mode over grad */
  ms_objective_def def = {"quartic", D, q_value, q_grad, NULL, q_free, &q, 0, NULL};
  OK(ms_objective_new(ctx, &def, &withgrad));
  CHECK(strcmp(ms_objective_name(withgrad), "quartic") == 0);
  OK(ms_objective_value(ctx, withgrad, w, &f));
  OK(ms_tensor_item(ctx, f, &buf[0]));
  near_arr("callback value", buf, &f0, 1, 1e-14);
  OK(ms_objective_hvp(ctx, withgrad, w, v, &hv));
  OK(readv(ctx, hv, D, buf));
  near_arr("hvp derived from a C grad (forward over grad)", buf, hv0, D, 1e-13);
  ms_tensor_release(hv), ms_tensor_release(f), f = hv = NULL;

  /* value only: grad by reverse mode, hvp by forward over reverse */
  def.name = "quartic_value_only";
  def.grad = NULL;
  def.free_ud = NULL;
  OK(ms_objective_new(ctx, &def, &vonly));
  OK(ms_objective_grad(ctx, vonly, w, &g));
  OK(readv(ctx, g, D, buf));
  near_arr("grad derived from a C value (reverse mode)", buf, g0, D, 1e-13);
  OK(ms_objective_hvp(ctx, vonly, w, v, &hv));
  OK(readv(ctx, hv, D, buf));
  near_arr("hvp derived from a C value (forward over reverse)", buf, hv0, D, 1e-13);
  CHECK(ms_ad_depth(ctx) == 0);
  ms_tensor_release(hv), ms_tensor_release(g), g = hv = NULL;

  /* refcounting: free_ud runs once, with the last reference */
  CHECK(ms_objective_retain(withgrad) == withgrad);
  ms_objective_release(withgrad);
  CHECK(q.freed == 0);
  ms_objective_release(withgrad), withgrad = NULL;
  CHECK(q.freed == 1);

  /* misbehaving callbacks */
  def.name = "quartic";
  def.grad = q_grad;
  def.hvp = q_hvp;
  def.free_ud = q_free;
  OK(ms_objective_new(ctx, &def, &full));
  q.mode = Q_GRAD_SHAPE;
  CHECK_FAILS(ctx, ms_objective_grad(ctx, full, w, &g), MS_ESHAPE,
              "quartic: grad returned shape [2], expected [3]");
  CHECK(g == NULL);
  q.mode = Q_HVP_SHAPE;
  CHECK_FAILS(ctx, ms_objective_hvp(ctx, full, w, v, &hv), MS_ESHAPE,
              "quartic: hvp returned shape [], expected [3]");
  q.mode = Q_VALUE_SHAPE;
  CHECK_FAILS(ctx, ms_objective_value(ctx, full, w, &f), MS_ESHAPE,
              "quartic: value returned shape [3], expected a scalar (0-d tensor)");
  q.mode = Q_NO_TENSOR;
  CHECK_FAILS(ctx, ms_objective_value(ctx, full, w, &f), MS_ECALLBACK,
              "quartic: value returned no tensor");
  q.mode = Q_FAIL_MSG;
  CHECK_FAILS(ctx, ms_objective_value(ctx, full, w, &f), MS_ENUMERIC, "quartic exploded at step 3");
  q.mode = Q_FAIL_SILENT;
  CHECK_FAILS(ctx, ms_objective_value(ctx, full, w, &f), MS_ENUMERIC,
              "quartic: value callback failed (");
  CHECK(f == NULL);
  /* a failure inside a derived gradient or hvp leaves no level behind */
  q.mode = Q_FAIL_MSG;
  CHECK_FAILS(ctx, ms_objective_grad(ctx, vonly, w, &g), MS_ENUMERIC, "quartic exploded");
  CHECK_FAILS(ctx, ms_objective_hvp(ctx, vonly, w, v, &hv), MS_ENUMERIC, "quartic exploded");
  CHECK(ms_ad_depth(ctx) == 0);
  q.mode = Q_VALUE_SHAPE;
  CHECK_FAILS(ctx, ms_objective_hvp(ctx, vonly, w, v, &hv), MS_ESHAPE,
              "quartic_value_only: value returned shape [3]");
  CHECK(ms_ad_depth(ctx) == 0);
  /* a one-element [1] value is handed out as 0-d */
  q.mode = Q_VALUE_ONE;
  OK(ms_objective_value(ctx, full, w, &f));
  CHECK(ms_tensor_ndim(f) == 0);
  OK(ms_tensor_item(ctx, f, &buf[0]));
  near_arr("one-element value", buf, &f0, 1, 1e-14);
  OK(ms_objective_grad(ctx, vonly, w, &g));
  OK(readv(ctx, g, D, buf));
  near_arr("grad derived from a one-element value", buf, g0, D, 1e-13);
  q.mode = Q_FINE;
  ms_tensor_release(f), ms_tensor_release(g), f = g = NULL;

  /* definitions the engine refuses */
  ms_objective *none = NULL;
  ms_objective_def nodef = {"nofun", 3, NULL, NULL, NULL, NULL, NULL, 0, NULL};
  CHECK_FAILS(ctx, ms_objective_new(ctx, &nodef, &none), MS_EARG,
              "nofun: a value callback is required");
  nodef.value = q_value;
  nodef.dim = 0;
  CHECK_FAILS(ctx, ms_objective_new(ctx, &nodef, &none), MS_EARG, "nofun: dim must be >= 1, got 0");
  nodef.name = NULL;
  CHECK_FAILS(ctx, ms_objective_new(ctx, &nodef, &none), MS_EARG, "objective: dim must be >= 1");
  CHECK(none == NULL);
  /* not a quadratic */
  CHECK_FAILS(ctx, ms_objective_quadratic_parts(full, NULL, NULL, NULL), MS_EARG,
              "quadratic_parts: objective 'quartic' is not a quadratic");
  /* wrong points */
  bad = vec(ctx, 2, wd);
  CHECK_FAILS(ctx, ms_objective_value(ctx, full, bad, &f), MS_ESHAPE,
              "quartic: w has shape [2], expected [3]");
out:
  ms_tensor_release(w), ms_tensor_release(v), ms_tensor_release(f), ms_tensor_release(g);
  ms_tensor_release(hv), ms_tensor_release(bad);
  ms_objective_release(withgrad);
  ms_objective_release(vonly);
  ms_objective_release(full);
  CHECK(q.freed == 2);
  ms_tensor_release(q.c);
  CHECK(ms_ad_depth(ctx) == 0);
  check_ctx_free(ctx);
}

/* ---- built-ins: parts, wstar/fstar defaults, argument errors ---- */

static void test_builtin_args(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  double Hd[9] = {2, 1, 0, 1, 3, 0.5, 0, 0.5, 1}, wsd[3] = {1, -1, 2}, buf[9];
  double Xd[8] = {1, 2, 3, 4, 5, 6, 7, 8}, yd[4] = {1, 0, 1, 1};
  ms_tensor *H = mat(ctx, 3, 3, Hd), *ws = vec(ctx, 3, wsd), *X = mat(ctx, 4, 2, Xd),
            *y = vec(ctx, 4, yd);
  ms_tensor *t = NULL, *w2 = vec(ctx, 2, wsd), *w5 = NULL, *m = NULL, *e = NULL;
  ms_objective *q = NULL, *q0 = NULL, *obj = NULL;
  ms_tensor *pH = NULL, *pw = NULL;
  double fs = -1;
  double five[5] = {0};
  w5 = vec(ctx, 5, five);

  OK(ms_objective_quadratic(ctx, H, ws, 1.25, &q));
  OK(ms_objective_quadratic_parts(q, &pH, &pw, &fs));
  OK(ms_tensor_read(ctx, pH, buf, 9));
  near_arr("parts H", buf, Hd, 9, 0);
  OK(readv(ctx, pw, 3, buf));
  near_arr("parts wstar", buf, wsd, 3, 0);
  CHECK(fs == 1.25);
  /* the objective keeps copies: writing to H afterwards does not change it */
  OK(ms_tensor_fill_(ctx, H, 100));
  OK(ms_tensor_read(ctx, pH, buf, 9));
  near_arr("parts H after writing to the argument", buf, Hd, 9, 0);
  OK(ms_objective_value(ctx, q, ws, &t)); /* at w = w*: f = fstar */
  OK(ms_tensor_item(ctx, t, &buf[0]));
  CHECK(buf[0] == 1.25);
  ms_tensor_release(t), t = NULL;
  ms_tensor_release(H);
  H = mat(ctx, 3, 3, Hd);

  /* no wstar, fstar 0 */
  OK(ms_objective_quadratic(ctx, H, NULL, 0, &q0));
  OK(ms_objective_quadratic_parts(q0, NULL, &pw, &fs));
  CHECK(pw == NULL);
  CHECK(fs == 0);

  /* point shapes */
  CHECK_FAILS(ctx, ms_objective_value(ctx, q, w5, &t), MS_ESHAPE,
              "quadratic: w has shape [5], expected [3]");
  CHECK_FAILS(ctx, ms_objective_grad(ctx, q, w2, &t), MS_ESHAPE,
              "quadratic: w has shape [2], expected [3]");
  CHECK_FAILS(ctx, ms_objective_hvp(ctx, q, ws, w2, &t), MS_ESHAPE,
              "quadratic: v has shape [2], expected [3]");
  CHECK_FAILS(ctx, ms_objective_hvp(ctx, q, ws, NULL, &t), MS_EARG, "quadratic: v is NULL");
  CHECK_FAILS(ctx, ms_objective_value(ctx, q, H, &t), MS_ESHAPE,
              "quadratic: w has shape [3,3], expected [3]");
  CHECK(t == NULL);

  /* quadratic arguments */
  CHECK_FAILS(ctx, ms_objective_quadratic(ctx, X, NULL, 0, &obj), MS_ESHAPE,
              "quadratic: H must be a square matrix [d,d], got shape [4,2]");
  CHECK_FAILS(ctx, ms_objective_quadratic(ctx, ws, NULL, 0, &obj), MS_ESHAPE,
              "quadratic: H must be a square matrix [d,d], got shape [3]");
  CHECK_FAILS(ctx, ms_objective_quadratic(ctx, NULL, NULL, 0, &obj), MS_EARG,
              "quadratic: H is NULL");
  CHECK_FAILS(ctx, ms_objective_quadratic(ctx, H, w2, 0, &obj), MS_ESHAPE,
              "quadratic: wstar has shape [2], expected [3] (H is [3,3])");
  CHECK_FAILS(ctx, ms_objective_quadratic(ctx, H, ws, INFINITY, &obj), MS_EARG,
              "quadratic: fstar must be finite, got inf");
  {
    int64_t zero[2] = {0, 0};
    OK(ms_tensor_zeros(ctx, 2, zero, &e));
    CHECK_FAILS(ctx, ms_objective_quadratic(ctx, e, NULL, 0, &obj), MS_ESHAPE,
                "quadratic: H must not be empty");
  }
  {
    double A[9];
    memcpy(A, Hd, sizeof A);
    A[1] = 1 + 1e-6; /* H[0,1] != H[1,0] */
    m = mat(ctx, 3, 3, A);
    CHECK_FAILS(ctx, ms_objective_quadratic(ctx, m, NULL, 0, &obj), MS_EARG,
                "quadratic: H must be symmetric, got H[0,1] = 1.000001");
    ms_tensor_release(m);
    A[1] = 1 + 1e-12; /* within 1e-10 * max|H| = 3e-10 */
    m = mat(ctx, 3, 3, A);
    OK(ms_objective_quadratic(ctx, m, NULL, 0, &obj));
    ms_objective_release(obj), obj = NULL;
    ms_tensor_release(m);
    A[1] = 1, A[5] = NAN;
    m = mat(ctx, 3, 3, A);
    CHECK_FAILS(ctx, ms_objective_quadratic(ctx, m, NULL, 0, &obj), MS_EARG,
                "quadratic: H must be finite, got H[1,2] = nan");
    ms_tensor_release(m);
    double bw[3] = {0, INFINITY, 0};
    m = vec(ctx, 3, bw);
    CHECK_FAILS(ctx, ms_objective_quadratic(ctx, H, m, 0, &obj), MS_EARG,
                "quadratic: wstar must be finite, got wstar[1] = inf");
    ms_tensor_release(m), m = NULL;
  }
  /* a transposed (strided) symmetric H is accepted */
  OK(ms_tensor_transpose(ctx, H, 0, 1, &m));
  OK(ms_objective_quadratic(ctx, m, NULL, 0, &obj));
  ms_objective_release(obj), obj = NULL;
  ms_tensor_release(m), m = NULL;

  /* data objectives */
  CHECK_FAILS(ctx, ms_objective_least_squares(ctx, y, y, &obj), MS_ESHAPE,
              "least_squares: X must be a matrix [n,d], got shape [4]");
  CHECK_FAILS(ctx, ms_objective_least_squares(ctx, X, ws, &obj), MS_ESHAPE,
              "least_squares: y has shape [3], expected [4] (one entry per row of X [4,2])");
  CHECK_FAILS(ctx, ms_objective_least_squares(ctx, X, NULL, &obj), MS_EARG,
              "least_squares: y is NULL");
  CHECK_FAILS(ctx, ms_objective_logistic(ctx, X, X, 0, &obj), MS_ESHAPE,
              "logistic: y has shape [4,2], expected [4]");
  CHECK_FAILS(ctx, ms_objective_logistic(ctx, X, y, -1, &obj), MS_EARG,
              "logistic: l2 must be finite and >= 0, got -1");
  CHECK_FAILS(ctx, ms_objective_logistic(ctx, X, y, NAN, &obj), MS_EARG,
              "logistic: l2 must be finite and >= 0, got nan");
  {
    double yb[4] = {1, 0, 0.5, 1};
    m = vec(ctx, 4, yb);
    CHECK_FAILS(ctx, ms_objective_logistic(ctx, X, m, 0, &obj), MS_EARG,
                "logistic: y must hold labels 0 or 1, got y[2] = 0.5");
    ms_tensor_release(m), m = NULL;
  }
  {
    int64_t shape[2] = {0, 2};
    ms_tensor_release(e), e = NULL;
    OK(ms_tensor_zeros(ctx, 2, shape, &e));
    CHECK_FAILS(ctx, ms_objective_least_squares(ctx, e, y, &obj), MS_ESHAPE,
                "least_squares: X must have at least one row and one column, got shape [0,2]");
  }
  CHECK(obj == NULL);
  OK(ms_objective_logistic(ctx, X, y, 0, &obj));
  CHECK(ms_objective_dim(obj) == 2);
  CHECK_FAILS(ctx, ms_objective_quadratic_parts(obj, &pH, NULL, NULL), MS_EARG,
              "quadratic_parts: objective 'logistic' is not a quadratic");
  CHECK_FAILS(ctx, ms_objective_grad(ctx, obj, ws, &t), MS_ESHAPE,
              "logistic: w has shape [3], expected [2]");
out:
  ms_tensor_release(H), ms_tensor_release(ws), ms_tensor_release(X), ms_tensor_release(y);
  ms_tensor_release(t), ms_tensor_release(w2), ms_tensor_release(w5), ms_tensor_release(m);
  ms_tensor_release(e);
  ms_objective_release(q), ms_objective_release(q0), ms_objective_release(obj);
  check_ctx_free(ctx);
}

/* ---- samples: grad_batch, subset, data parts ---- */

/* The problem made of the rows idx of p (a least-squares or logistic problem). */
static void sub_problem(const problem *p, int m, const int64_t *idx, problem *sp) {
  *sp = *p;
  sp->n = m;
  for (int k = 0; k < m; k++) {
    memcpy(&sp->X[k * p->d], &p->X[idx[k] * p->d], sizeof(double) * (size_t)p->d);
    sp->y[k] = p->y[idx[k]];
  }
}

static void test_samples(int kind) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  problem p, sp;
  make_problem(&p, kind, 3, 6, 700 + (uint64_t)kind);
  const int64_t idx[5] = {4, 0, 4, 5, 2}; /* repeats allowed */
  const int m = 5;
  sub_problem(&p, m, idx, &sp);
  ms_objective *obj = NULL, *sub = NULL, *hand = NULL, *q = NULL;
  ms_tensor *w = NULL, *ww = NULL, *g = NULL, *t = NULL, *e = NULL, *row = NULL;
  ms_tensor *pX = NULL, *py = NULL;
  ms_level *tape = NULL;
  double wd[3] = {0.4, -1.1, 0.7}, f0, g0[3], H0[9], buf[MAXN * MAXD], l2 = -1;
  char what[96];
  const char *name = kind_name[kind];
  closed_form(&sp, wd, &f0, g0, H0);

  OK(make_objective(ctx, &p, &obj));
  CHECK(ms_objective_kind_of(obj) ==
        (kind == 1 ? MS_OBJECTIVE_LEAST_SQUARES : MS_OBJECTIVE_LOGISTIC));
  CHECK(ms_objective_nsamples(obj) == 6);
  w = vec(ctx, 3, wd);

  /* grad_batch: the full gradient of the objective on the rows idx (closed form) */
  OK(ms_objective_grad_batch(ctx, obj, w, m, idx, &g));
  OK(readv(ctx, g, 3, buf));
  snprintf(what, sizeof what, "%s grad_batch vs closed form on the rows", name);
  near_arr(what, buf, g0, 3, 1e-12);
  ms_tensor_release(g), g = NULL;
  /* ... and the grad of an objective built by hand from those rows */
  OK(make_objective(ctx, &sp, &hand));
  OK(ms_objective_grad(ctx, hand, w, &t));
  OK(ms_objective_grad_batch(ctx, obj, w, m, idx, &g));
  {
    double ref[3];
    OK(readv(ctx, t, 3, ref));
    OK(readv(ctx, g, 3, buf));
    snprintf(what, sizeof what, "%s grad_batch vs grad of a hand-made objective", name);
    near_arr(what, buf, ref, 3, 1e-14);
  }
  ms_tensor_release(g), ms_tensor_release(t), g = t = NULL;
  /* every row once, in order: the full gradient */
  {
    const int64_t all[6] = {0, 1, 2, 3, 4, 5};
    double ref[3], fa, Ha[9];
    closed_form(&p, wd, &fa, ref, Ha);
    OK(ms_objective_grad_batch(ctx, obj, w, 6, all, &g));
    OK(readv(ctx, g, 3, buf));
    snprintf(what, sizeof what, "%s grad_batch on all rows vs full grad", name);
    near_arr(what, buf, ref, 3, 1e-12);
    ms_tensor_release(g), g = NULL;
  }
  /* differentiable in w: a tape over grad_batch gives the Hessian of the batch */
  OK(ms_ad_push(ctx, MS_AD_REVERSE, &tape));
  OK(ms_ad_watch(ctx, tape, w, NULL, &ww));
  OK(ms_objective_grad_batch(ctx, obj, ww, m, idx, &g));
  OK(ms_ad_pop(ctx, tape));
  for (int i = 0; i < 3; i++) {
    double ed[3] = {0};
    ed[i] = 1;
    e = vec(ctx, 3, ed);
    OK(ms_ad_gradient(ctx, tape, g, e, 1, &ww, &row));
    OK(readv(ctx, row, 3, &buf[i * 3]));
    ms_tensor_release(e), ms_tensor_release(row), e = row = NULL;
  }
  snprintf(what, sizeof what, "%s Hessian by a tape over grad_batch", name);
  near_arr(what, buf, H0, 9, 1e-12);
  ms_ad_free(tape), tape = NULL;
  ms_tensor_release(g), ms_tensor_release(ww), g = ww = NULL;

  /* subset: the same kind of objective on the rows */
  OK(ms_objective_subset(ctx, obj, m, idx, &sub));
  CHECK(ms_objective_kind_of(sub) == ms_objective_kind_of(obj));
  CHECK(ms_objective_nsamples(sub) == m);
  CHECK(strcmp(ms_objective_name(sub), name) == 0);
  OK(ms_objective_value(ctx, sub, w, &t));
  OK(ms_tensor_item(ctx, t, &buf[0]));
  snprintf(what, sizeof what, "%s subset value", name);
  near_arr(what, buf, &f0, 1, 1e-12);
  ms_tensor_release(t), t = NULL;
  OK(ms_objective_grad(ctx, sub, w, &t));
  OK(readv(ctx, t, 3, buf));
  snprintf(what, sizeof what, "%s subset grad", name);
  near_arr(what, buf, g0, 3, 1e-12);
  ms_tensor_release(t), t = NULL;
  OK(ms_objective_data_parts(sub, &pX, &py, &l2));
  CHECK(ms_tensor_ndim(pX) == 2 && ms_tensor_dim(pX, 0) == m && ms_tensor_dim(pX, 1) == 3);
  OK(ms_tensor_read(ctx, pX, buf, m * 3));
  near_arr("subset X", buf, sp.X, m * 3, 0);
  OK(readv(ctx, py, m, buf));
  near_arr("subset y (labels as given)", buf, sp.y, m, 0);
  CHECK(l2 == (kind == 2 ? p.l2 : 0));
  OK(ms_objective_data_parts(obj, NULL, &py, NULL));
  OK(readv(ctx, py, 6, buf));
  near_arr("data_parts y", buf, p.y, 6, 0);

  /* errors */
  {
    int64_t bad[3] = {1, 7, 2}, neg[1] = {-1};
    snprintf(what, sizeof what, "%s.grad_batch: sample index 7 out of range [0, 6)", name);
    CHECK_FAILS(ctx, ms_objective_grad_batch(ctx, obj, w, 3, bad, &g), MS_EINDEX, what);
    CHECK(g == NULL);
    snprintf(what, sizeof what, "%s.grad_batch: sample index -1 out of range [0, 6)", name);
    CHECK_FAILS(ctx, ms_objective_grad_batch(ctx, obj, w, 1, neg, &g), MS_EINDEX, what);
    snprintf(what, sizeof what, "%s.grad_batch: needs at least one sample index, got n = 0", name);
    CHECK_FAILS(ctx, ms_objective_grad_batch(ctx, obj, w, 0, idx, &g), MS_EARG, what);
    snprintf(what, sizeof what, "%s.subset: sample index 7 out of range [0, 6)", name);
    CHECK_FAILS(ctx, ms_objective_subset(ctx, obj, 3, bad, &q), MS_EINDEX, what);
    CHECK(q == NULL);
    t = vec(ctx, 2, wd);
    snprintf(what, sizeof what, "%s: w has shape [2], expected [3]", name);
    CHECK_FAILS(ctx, ms_objective_grad_batch(ctx, obj, t, m, idx, &g), MS_ESHAPE, what);
    ms_tensor_release(t), t = NULL;
  }
out:
  ms_ad_free(tape);
  ms_tensor_release(w), ms_tensor_release(ww), ms_tensor_release(g), ms_tensor_release(t);
  ms_tensor_release(e), ms_tensor_release(row);
  ms_objective_release(obj), ms_objective_release(sub), ms_objective_release(hand);
  ms_objective_release(q);
  CHECK(ms_ad_depth(ctx) == 0);
  check_ctx_free(ctx);
}

/* A custom objective with samples: f(w) = 1/(2N) sum_i (w - a_i)^2 summed over coordinates,
 * whose batch gradient is w - mean_{k} a_{idx[k]} (written with engine ops). */
typedef struct centers {
  double a[4]; /* scalar centers, broadcast over the coordinates */
  int wrong_shape;
} centers;

static int c_value(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  (void)ud;
  ms_tensor *ww = NULL;
  int st = ms_dot(ctx, w, w, &ww);
  if (st == MS_OK) st = ms_binary_scalar(ctx, MS_MUL, ww, 0.5, 0, out);
  ms_tensor_release(ww);
  return st;
}

static int c_grad_batch(ms_ctx *ctx, void *ud, ms_tensor *w, int64_t n, const int64_t *idx,
                        ms_tensor **out) {
  centers *c = ud;
  if (c->wrong_shape) return ms_tensor_scalar(ctx, 0, out);
  double mean = 0;
  for (int64_t k = 0; k < n; k++) mean += c->a[idx[k]] / (double)n;
  return ms_binary_scalar(ctx, MS_SUB, w, mean, 0, out);
}

static void test_custom_samples(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  centers c = {{1, 2, 4, 8}, 0};
  ms_objective *obj = NULL, *none = NULL, *sub = NULL;
  ms_tensor *w = NULL, *g = NULL;
  double wd[2] = {3, -1}, buf[2];
  ms_objective_def def = {"centers", 2, c_value, NULL, NULL, NULL, &c, 4, c_grad_batch};
  OK(ms_objective_new(ctx, &def, &obj));
  CHECK(ms_objective_kind_of(obj) == MS_OBJECTIVE_CUSTOM);
  CHECK(ms_objective_nsamples(obj) == 4);
  w = vec(ctx, 2, wd);
  {
    const int64_t idx[3] = {3, 1, 3}; /* mean of 8, 2, 8 = 6 */
    double ref[2] = {3 - 6, -1 - 6};
    OK(ms_objective_grad_batch(ctx, obj, w, 3, idx, &g));
    OK(readv(ctx, g, 2, buf));
    near_arr("custom grad_batch", buf, ref, 2, 1e-15);
    ms_tensor_release(g), g = NULL;
    c.wrong_shape = 1;
    CHECK_FAILS(ctx, ms_objective_grad_batch(ctx, obj, w, 3, idx, &g), MS_ESHAPE,
                "centers: grad_batch returned shape [], expected [2]");
    CHECK(g == NULL);
    c.wrong_shape = 0;
    int64_t bad[1] = {4};
    CHECK_FAILS(ctx, ms_objective_grad_batch(ctx, obj, w, 1, bad, &g), MS_EINDEX,
                "centers.grad_batch: sample index 4 out of range [0, 4)");
    CHECK_FAILS(ctx, ms_objective_grad_batch(ctx, obj, w, 1, NULL, &g), MS_EARG,
                "centers.grad_batch: idx is NULL");
    CHECK_FAILS(ctx, ms_objective_subset(ctx, obj, 3, idx, &sub), MS_EARG,
                "subset: objective 'centers' is not a least-squares or logistic objective");
    CHECK_FAILS(ctx, ms_objective_data_parts(obj, NULL, NULL, NULL), MS_EARG,
                "data_parts: objective 'centers' is not a least-squares or logistic objective");
  }
  /* nsamples and grad_batch go together */
  def.grad_batch = NULL;
  CHECK_FAILS(ctx, ms_objective_new(ctx, &def, &none), MS_EARG,
              "centers: nsamples is 4 but grad_batch is NULL (set both or neither)");
  def.nsamples = 0;
  def.grad_batch = c_grad_batch;
  CHECK_FAILS(ctx, ms_objective_new(ctx, &def, &none), MS_EARG,
              "centers: grad_batch is set but nsamples is 0 (set both or neither)");
  def.nsamples = -2;
  CHECK_FAILS(ctx, ms_objective_new(ctx, &def, &none), MS_EARG,
              "centers: nsamples must be >= 0, got -2");
  CHECK(none == NULL);
  /* an objective without samples */
  def.nsamples = 0;
  def.grad_batch = NULL;
  OK(ms_objective_new(ctx, &def, &none));
  CHECK(ms_objective_nsamples(none) == 0);
  {
    const int64_t idx[1] = {0};
    CHECK_FAILS(ctx, ms_objective_grad_batch(ctx, none, w, 1, idx, &g), MS_EARG,
                "centers.grad_batch: the objective has no samples");
  }
out:
  ms_tensor_release(w), ms_tensor_release(g);
  ms_objective_release(obj), ms_objective_release(none), ms_objective_release(sub);
  check_ctx_free(ctx);
}

/* ---- positive semi-definiteness and the cached eigendecomposition ---- */

/* H = Q diag(lam) Q^T with Q = I - 2 u u^T / |u|^2 (a Householder reflection), plain loops. */
static void spectral(int d, const double *lam, const double *u, double *Q, double *H) {
  double uu = 0;
  for (int i = 0; i < d; i++) uu += u[i] * u[i];
  for (int i = 0; i < d; i++)
    for (int j = 0; j < d; j++) Q[i * d + j] = (i == j) - 2 * u[i] * u[j] / uu;
  for (int i = 0; i < d; i++)
    for (int j = 0; j <= i; j++) {
      double s = 0;
      for (int k = 0; k < d; k++) s += Q[i * d + k] * lam[k] * Q[j * d + k];
      H[i * d + j] = H[j * d + i] = s;
    }
}

static void test_psd(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  enum { D = 4 };
  const double u[D] = {1, -2, 0.5, 3};
  const double neg[D] = {1, -3, 10, 2}, psd[D] = {2, 0, 10, 1}, sorted_psd[D] = {0, 1, 2, 10};
  double Q[D * D], Hd[D * D], buf[D * D];
  ms_objective *qn = NULL, *qp = NULL, *obj = NULL, *cb = NULL, *tq = NULL;
  ms_tensor *H = NULL, *lam = NULL, *V = NULL, *lam2 = NULL, *V2 = NULL, *X = NULL, *y = NULL;
  ms_tensor *Ht = NULL;
  ms_level *tape = NULL;

  spectral(D, neg, u, Q, Hd);
  H = mat(ctx, D, D, Hd);
  OK(ms_objective_quadratic(ctx, H, NULL, 0, &qn));
  CHECK(ms_objective_kind_of(qn) == MS_OBJECTIVE_QUADRATIC);
  CHECK(ms_objective_nsamples(qn) == 0);
  CHECK_FAILS(ctx, ms_objective_check_psd(ctx, qn, "meta.stable"), MS_EARG,
              "meta.stable: needs a positive semi-definite H (smallest eigenvalue -3, largest 10)");
  CHECK(strcmp(
            ms_ctx_error(ctx),
            "meta.stable: needs a positive semi-definite H (smallest eigenvalue -3, largest 10)") ==
        0);
  /* a second call answers from the cache, with the same message */
  CHECK_FAILS(ctx, ms_objective_check_psd(ctx, qn, "again"), MS_EARG,
              "again: needs a positive semi-definite H (smallest eigenvalue -3, largest 10)");
  ms_tensor_release(H), H = NULL;

  spectral(D, psd, u, Q, Hd);
  H = mat(ctx, D, D, Hd);
  OK(ms_objective_quadratic(ctx, H, NULL, 0, &qp));
  OK(ms_objective_check_psd(ctx, qp, "test")); /* smallest eigenvalue 0 (up to rounding) */
  OK(ms_objective_quadratic_eigh(ctx, qp, &lam, &V));
  OK(ms_objective_quadratic_eigh(ctx, qp, &lam2, &V2));
  CHECK(lam == lam2 && V == V2); /* cached: the same tensors */
  OK(ms_objective_quadratic_eigh(ctx, qp, NULL, &V2));
  CHECK(V == V2);
  OK(readv(ctx, lam, D, buf));
  near_arr("eigenvalues, ascending", buf, sorted_psd, D, 1e-13);
  /* H V = V diag(lam), columns orthonormal (plain loops) */
  {
    double Vd[D * D], r1[D * D], r2[D * D], I[D * D] = {0}, VtV[D * D];
    CHECK(ms_tensor_ndim(V) == 2 && ms_tensor_dim(V, 0) == D && ms_tensor_dim(V, 1) == D);
    OK(ms_tensor_read(ctx, V, Vd, D * D));
    for (int i = 0; i < D; i++)
      for (int j = 0; j < D; j++) {
        double s = 0, o = 0;
        for (int k = 0; k < D; k++) s += Hd[i * D + k] * Vd[k * D + j];
        for (int k = 0; k < D; k++) o += Vd[k * D + i] * Vd[k * D + j];
        r1[i * D + j] = s;
        r2[i * D + j] = Vd[i * D + j] * buf[j];
        VtV[i * D + j] = o;
        I[i * D + j] = i == j;
      }
    near_arr("H V = V diag(lambda)", r1, r2, D * D, 1e-12);
    near_arr("V^T V = I", VtV, I, D * D, 1e-13);
  }

  /* a quadratic made from a tracked H while a tape is active: the spectrum is a constant */
  OK(ms_ad_push(ctx, MS_AD_REVERSE, &tape));
  OK(ms_ad_watch(ctx, tape, H, NULL, &Ht));
  OK(ms_objective_quadratic(ctx, Ht, NULL, 0, &tq));
  OK(ms_objective_check_psd(ctx, tq, "tracked"));
  OK(ms_ad_pop(ctx, tape));
  ms_ad_free(tape), tape = NULL;

  /* least squares is always fine; others are refused by kind */
  {
    double Xd[6] = {1, 2, 3, 4, 5, 6}, yd[3] = {1, 0, 1};
    X = mat(ctx, 3, 2, Xd);
    y = vec(ctx, 3, yd);
  }
  OK(ms_objective_least_squares(ctx, X, y, &obj));
  OK(ms_objective_check_psd(ctx, obj, "test"));
  CHECK_FAILS(ctx, ms_objective_quadratic_eigh(ctx, obj, &lam2, &V2), MS_EARG,
              "quadratic_eigh: objective 'least_squares' is not a quadratic");
  CHECK(lam2 == NULL && V2 == NULL);
  ms_objective_release(obj), obj = NULL;
  OK(ms_objective_logistic(ctx, X, y, 0.1, &obj));
  CHECK_FAILS(ctx, ms_objective_check_psd(ctx, obj, "meta.stable"), MS_EARG,
              "meta.stable: needs a quadratic or least-squares objective, got logistic");
  {
    ms_objective_def def = {"mine", 2, c_value, NULL, NULL, NULL, NULL, 0, NULL};
    OK(ms_objective_new(ctx, &def, &cb));
    CHECK_FAILS(ctx, ms_objective_check_psd(ctx, cb, "exact"), MS_EARG,
                "exact: needs a quadratic or least-squares objective, got mine");
  }
out:
  ms_ad_free(tape);
  ms_tensor_release(H), ms_tensor_release(X), ms_tensor_release(y), ms_tensor_release(Ht);
  ms_objective_release(qn), ms_objective_release(qp), ms_objective_release(obj);
  ms_objective_release(cb), ms_objective_release(tq);
  CHECK(ms_ad_depth(ctx) == 0);
  CHECK(ms_ctx_bytes(ctx) == 0); /* the cached spectra went with their objectives */
  ms_ctx_free(ctx);
}

/* ---- allocation failures at every point ---- */

/* Builds the objective and runs value, grad, hvp and a tape over grad; returns a status. */
static int exercise_once(ms_ctx *ctx, const problem *p, int derived, quartic *qq, ms_tensor *w,
                         ms_tensor *v) {
  ms_objective *obj = NULL;
  ms_tensor *f = NULL, *g = NULL, *hv = NULL, *ww = NULL, *gg = NULL, *h = NULL;
  ms_level *tape = NULL;
  int st;
  if (derived) {
    ms_objective_def def = {"quartic", p->d, q_value, NULL, NULL, NULL, qq, 0, NULL};
    st = ms_objective_new(ctx, &def, &obj);
  } else {
    st = make_objective(ctx, p, &obj);
  }
  if (st == MS_OK) st = ms_objective_value(ctx, obj, w, &f);
  if (st == MS_OK) st = ms_objective_grad(ctx, obj, w, &g);
  if (st == MS_OK) st = ms_objective_hvp(ctx, obj, w, v, &hv);
  if (st == MS_OK) st = ms_ad_push(ctx, MS_AD_REVERSE, &tape);
  if (st == MS_OK) st = ms_ad_watch(ctx, tape, w, NULL, &ww);
  if (st == MS_OK) st = ms_objective_grad(ctx, obj, ww, &gg);
  if (st == MS_OK) st = ms_ad_pop(ctx, tape);
  if (st == MS_OK) st = ms_ad_gradient(ctx, tape, gg, v, 1, &ww, &h);
  ms_objective *sub = NULL;
  ms_tensor *gb = NULL, *fs = NULL;
  if (st == MS_OK && !derived && p->kind != 0) {
    const int64_t idx[3] = {1, 4, 1};
    st = ms_objective_grad_batch(ctx, obj, w, 3, idx, &gb);
    if (st == MS_OK) st = ms_objective_subset(ctx, obj, 3, idx, &sub);
    if (st == MS_OK) st = ms_objective_value(ctx, sub, w, &fs);
  }
  if (st == MS_OK && !derived && p->kind == 0) st = ms_objective_check_psd(ctx, obj, "psd");
  ms_objective_release(sub);
  ms_tensor_release(gb), ms_tensor_release(fs);
  ms_ad_free(tape);
  ms_tensor_release(f), ms_tensor_release(g), ms_tensor_release(hv), ms_tensor_release(ww);
  ms_tensor_release(gg), ms_tensor_release(h);
  ms_objective_release(obj);
  return st;
}

static void test_alloc_failures(void) {
  for (int kind = 0; kind < 4; kind++) {
    problem p;
    make_problem(&p, kind == 3 ? 0 : kind, 3, 5, 500 + (uint64_t)kind);
    check_alloc fs = {0, -1, 0};
    ms_ctx *ctx = ms_ctx_new(check_failing_alloc, &fs);
    double wd[3] = {0.3, -0.2, 0.9}, vd[3] = {1, 2, -1}, cd[3] = {1, 2, 3};
    quartic qq = {vec(ctx, 3, cd), 0, Q_FINE};
    ms_tensor *w = vec(ctx, 3, wd), *v = vec(ctx, 3, vd);
    size_t base = ms_ctx_bytes(ctx);
    int ok = 0, wrong = 0, leaks = 0;
    for (long k = 0; k < 100000 && !ok; k++) {
      fs.n = 0, fs.fail_at = k;
      int st = exercise_once(ctx, &p, kind == 3, &qq, w, v);
      if (st == MS_OK)
        ok = 1;
      else if (st != MS_ENOMEM) {
        if (!wrong)
          fprintf(stderr, "[alloc %d] failing allocation %ld gave %d: %s\n", kind, k, st,
                  ms_ctx_error(ctx));
        wrong++;
      }
      if (check_sweep_leaked(ctx, base, kind, k, &leaks)) break;
    }
    fs.fail_at = -1;
    CHECK(ok);
    CHECK(wrong == 0);
    CHECK(leaks == 0);
    ms_tensor_release(w), ms_tensor_release(v), ms_tensor_release(qq.c);
    check_ctx_free(ctx);
  }
}

int main(void) {
  for (int kind = 0; kind < 3; kind++) {
    problem p;
    make_problem(&p, kind, kind == 0 ? 5 : 4, 9, 100 + (uint64_t)kind);
    check_problem(&p);
    check_hessian_by_tape(&p);
    if (kind == 0) { /* no wstar, no fstar */
      p.has_ws = 0;
      p.fstar = 0;
      check_problem(&p);
    }
    if (kind == 2) { /* no regularization */
      p.l2 = 0;
      check_problem(&p);
      check_hessian_by_tape(&p);
    }
  }
  test_callbacks();
  test_builtin_args();
  test_samples(1);
  test_samples(2);
  test_custom_samples();
  test_psd();
  test_alloc_failures();
  return check_report();
}
