/*
 * Meta-objectives on quadratics without losing the scale of the trajectory: the GD
 * closed form in log space, and the stable unroll (unit state times exp(log-scale)).
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "internal.h"

const char *ms_meta_status_name(int status) {
  switch (status) {
    case MS_META_OK: return "ok";
    case MS_META_OVERFLOW: return "overflow";
    case MS_META_UNDERFLOW: return "underflow";
    case MS_META_NAN: return "nan";
    default: return "unknown";
  }
}

static const double LOG_DBL_MAX = 709.782712893384;

static void result_init(ms_meta_result *res, int nparams) {
  memset(res, 0, sizeof *res);
  res->nparams = nparams;
  res->fail_step = -1;
}

static void set_status(ms_meta_result *res, int status, int64_t step) {
  if (res->status == MS_META_OK) {
    res->status = status;
    res->fail_step = step;
  }
}

/* log(exp(a) + exp(b)) for a, b possibly -inf. */
static double logaddexp(double a, double b) {
  if (a == -INFINITY) return b;
  if (b == -INFINITY) return a;
  double m = a > b ? a : b;
  return m + log1p(exp(-fabs(a - b)));
}

/*
 * Fills value and gradients from the log of the loss part (ll), its derivatives dll[j]
 * = d ll / d theta_j, and the kind: LOG and LOGSUM divide by T; NAIVE and SUM
 * exponentiate, reporting overflow/underflow of the double results honestly.
 */
static void finish(ms_meta_result *res, double ll, const double *dll, int64_t T,
                   ms_meta_kind kind) {
  res->log_loss = ll;
  if (isnan(ll)) {
    set_status(res, MS_META_NAN, T);
    res->value = NAN;
    for (int j = 0; j < res->nparams; j++) res->grad[j] = res->log_abs_grad[j] = NAN;
    return;
  }
  if (ll == -INFINITY) set_status(res, MS_META_UNDERFLOW, T);
  if (kind == MS_META_LOG || kind == MS_META_LOGSUM) {
    res->value = ll / (double)T;
    for (int j = 0; j < res->nparams; j++) {
      res->grad[j] = dll[j] / (double)T;
      res->log_abs_grad[j] = log(fabs(res->grad[j]));
      if (isnan(res->grad[j])) set_status(res, MS_META_NAN, T);
    }
    return;
  }
  res->value = exp(ll);
  if (ll > LOG_DBL_MAX) set_status(res, MS_META_OVERFLOW, T);
  if (res->value < DBL_MIN && ll != -INFINITY) set_status(res, MS_META_UNDERFLOW, T);
  for (int j = 0; j < res->nparams; j++) {
    double lg = ll + log(fabs(dll[j]));
    res->log_abs_grad[j] = lg;
    res->grad[j] = dll[j] == 0 ? 0.0 : copysign(exp(lg), dll[j]);
    if (isnan(dll[j])) set_status(res, MS_META_NAN, T);
    else if (lg > LOG_DBL_MAX) set_status(res, MS_META_OVERFLOW, T);
    else if (dll[j] != 0 && fabs(res->grad[j]) < DBL_MIN) set_status(res, MS_META_UNDERFLOW, T);
  }
}

static int check_vector(ms_ctx *ctx, const char *what, const char *name, const ms_tensor *t,
                        int64_t d) {
  char b[MS_SHAPE_STRLEN];
  if (t->ndim != 1 || (d >= 0 && t->shape[0] != d))
    return ms_ctx_fail(ctx, MS_ESHAPE, "%s: %s must be a vector of length %lld, got shape %s", what,
                       name, (long long)d, ms_shape_str(t->ndim, t->shape, b, sizeof b));
  if (!ms_tensor_all_finite(t))
    return ms_ctx_fail(ctx, MS_EARG, "%s: %s has non-finite entries", what, name);
  return MS_OK;
}

static int check_common(ms_ctx *ctx, const char *what, double eta, int64_t T, ms_meta_kind kind) {
  if (!isfinite(eta) || eta < 0)
    return ms_ctx_fail(ctx, MS_EARG, "%s: step size must be finite and >= 0, got %g", what, eta);
  if (T < 1) return ms_ctx_fail(ctx, MS_EARG, "%s: steps must be >= 1, got %lld", what, (long long)T);
  if ((int)kind < MS_META_NAIVE || kind > MS_META_LOGSUM)
    return ms_ctx_fail(ctx, MS_EARG, "%s: unknown meta-objective %d", what, (int)kind);
  return MS_OK;
}

int ms_meta_gd_exact(ms_ctx *ctx, const ms_tensor *lambda, const ms_tensor *c, double eta,
                     int64_t T, ms_meta_kind kind, ms_meta_result *res) {
  const char *what = "meta_gd_exact";
  result_init(res, 1);
  int st = check_common(ctx, what, eta, T, kind);
  if (st) return st;
  if (kind != MS_META_NAIVE && kind != MS_META_LOG)
    return ms_ctx_fail(ctx, MS_EARG, "%s: the closed form covers the naive and log meta-objectives", what);
  if ((st = check_vector(ctx, what, "eigenvalues", lambda, -1))) return st;
  int64_t d = lambda->shape[0];
  if ((st = check_vector(ctx, what, "coordinates", c, d))) return st;
  const double *lam = MS_TENSOR_DATA(lambda), *cc = MS_TENSOR_DATA(c);
  int64_t ls = lambda->strides[0], cs = c->strides[0];
  /* a_i = log(1/2 lambda_i c_i^2) + 2T log|1 - eta lambda_i|; ll = logsumexp_i a_i */
  double ll = -INFINITY;
  for (int64_t i = 0; i < d; i++) {
    double l = lam[i * ls], ci = cc[i * cs];
    if (l < 0) return ms_ctx_fail(ctx, MS_EARG, "%s: eigenvalue %lld is negative (%g)", what, (long long)i + 1, l);
    if (l == 0 || ci == 0) continue;
    double a = log(0.5 * l * ci * ci) + 2.0 * (double)T * log(fabs(1.0 - eta * l));
    ll = logaddexp(ll, a);
  }
  /* d ll / d eta = sum_i p_i 2T (-lambda_i) / (1 - eta lambda_i), p_i = exp(a_i - ll) */
  double dll = 0;
  if (ll > -INFINITY) {
    for (int64_t i = 0; i < d; i++) {
      double l = lam[i * ls], ci = cc[i * cs];
      if (l == 0 || ci == 0) continue;
      double q = 1.0 - eta * l;
      if (q == 0) continue; /* its weight is exactly zero */
      double a = log(0.5 * l * ci * ci) + 2.0 * (double)T * log(fabs(q));
      dll += exp(a - ll) * 2.0 * (double)T * (-l) / q;
    }
  }
  finish(res, ll, &dll, T, kind);
  return MS_OK;
}

/* y = H x for a dense row-major-strided H [d,d]. */
static void matvec(const ms_tensor *H, const double *x, double *y, int64_t d) {
  const double *h = MS_TENSOR_DATA(H);
  int64_t s0 = H->strides[0], s1 = H->strides[1];
  for (int64_t i = 0; i < d; i++) {
    double acc = 0;
    for (int64_t k = 0; k < d; k++) acc += h[i * s0 + k * s1] * x[k];
    y[i] = acc;
  }
}

static double dotp(const double *a, const double *b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

int ms_meta_stable_quadratic(ms_ctx *ctx, const ms_tensor *H, const ms_tensor *w0,
                             const ms_tensor *wstar, const ms_meta_optimizer *opt, int64_t T,
                             ms_meta_kind kind, ms_meta_result *res) {
  const char *what = "meta_stable";
  char b[MS_SHAPE_STRLEN];
  int mom = opt->kind == MS_META_MOMENTUM;
  int p = mom ? 2 : 1;
  result_init(res, p);
  if (opt->kind != MS_META_GD && opt->kind != MS_META_MOMENTUM)
    return ms_ctx_fail(ctx, MS_EARG, "%s: unknown optimizer %d", what, (int)opt->kind);
  int st = check_common(ctx, what, opt->lr, T, kind);
  if (st) return st;
  if (mom && (!isfinite(opt->beta) || opt->beta < 0))
    return ms_ctx_fail(ctx, MS_EARG, "%s: momentum must be finite and >= 0, got %g", what, opt->beta);
  if (H->ndim != 2 || H->shape[0] != H->shape[1])
    return ms_ctx_fail(ctx, MS_ESHAPE, "%s: H must be a square matrix, got shape %s", what,
                       ms_shape_str(H->ndim, H->shape, b, sizeof b));
  if (!ms_tensor_all_finite(H)) return ms_ctx_fail(ctx, MS_EARG, "%s: H has non-finite entries", what);
  int64_t d = H->shape[0];
  {
    /* the loss f = 1/2 e^T H e and its derivative assume a symmetric H */
    const double *h = MS_TENSOR_DATA(H);
    double big = 0, asym = 0;
    for (int64_t i = 0; i < d; i++)
      for (int64_t j = 0; j < d; j++) {
        double a = h[i * H->strides[0] + j * H->strides[1]], b = h[j * H->strides[0] + i * H->strides[1]];
        if (fabs(a) > big) big = fabs(a);
        if (fabs(a - b) > asym) asym = fabs(a - b);
      }
    if (asym > 1e-10 * (big > 1 ? big : 1))
      return ms_ctx_fail(ctx, MS_EARG, "%s: H must be symmetric (max |H - H^T| = %g)", what, asym);
  }
  if ((st = check_vector(ctx, what, "w0", w0, d))) return st;
  if (wstar && (st = check_vector(ctx, what, "wstar", wstar, d))) return st;

  /* state z = (e, m) of length n; u = z / |z|; v[j] = (dz/dtheta_j) / |z| */
  int64_t n = mom ? 2 * d : d;
  size_t bytes = sizeof(double) * (size_t)(n * (2 + 2 * p) + d * (2 + p));
  double *buf = ms_ctx_alloc(ctx, bytes);
  if (buf == NULL) return MS_ENOMEM;
  double *u = buf, *un = u + n, *v = un + n, *vn = v + n * p, *Hu = vn + n * p, *tmp = Hu + d,
         *Hv = tmp + d;
  memset(buf, 0, bytes);
  const double *w0d = MS_TENSOR_DATA(w0), *wsd = wstar ? MS_TENSOR_DATA(wstar) : NULL;
  for (int64_t i = 0; i < d; i++)
    u[i] = w0d[i * w0->strides[0]] - (wsd ? wsd[i * wstar->strides[0]] : 0.0);
  double s = sqrt(dotp(u, u, n));
  double ll = -INFINITY, dll[2] = {0, 0};
  double lsum = -INFINITY, dsum[2] = {0, 0}; /* running log sum_t f_t and its derivative */
  if (s == 0) {
    set_status(res, MS_META_UNDERFLOW, 0); /* w0 = w*: every loss is exactly zero */
    goto out;
  }
  for (int64_t i = 0; i < n; i++) u[i] /= s;
  double logscale = log(s);
  double eta = opt->lr, beta = opt->beta;
  matvec(H, u, Hu, d);
  for (int j = 0; j < p; j++) matvec(H, v + j * n, Hv + j * d, d);

  for (int64_t t = 1; t <= T; t++) {
    if ((t & 4095) == 0 && (st = ms_ctx_check_interrupt(ctx, what))) goto out;
    if (!mom) {
      /* e' = e - eta H e;  de' = de - eta H de - H e (for d/d eta) */
      for (int64_t i = 0; i < d; i++) {
        un[i] = u[i] - eta * Hu[i];
        vn[i] = v[i] - eta * Hv[i] - Hu[i];
      }
    } else {
      /* m' = beta m + H e;  e' = e - eta m' */
      double *ue = u, *um = u + d;
      for (int64_t i = 0; i < d; i++) {
        double mn = beta * um[i] + Hu[i];
        un[d + i] = mn;
        un[i] = ue[i] - eta * mn;
      }
      for (int j = 0; j < 2; j++) {
        double *ve = v + j * n, *vm = ve + d, *vne = vn + j * n, *vnm = vne + d;
        const double *hv = Hv + j * d;
        for (int64_t i = 0; i < d; i++) {
          double dm = beta * vm[i] + hv[i] + (j == 1 ? um[i] : 0.0);
          vnm[i] = dm;
          vne[i] = ve[i] - eta * dm - (j == 0 ? un[d + i] : 0.0);
        }
      }
    }
    double r = sqrt(dotp(un, un, n));
    if (!(r > 0) || !isfinite(r)) {
      if (r == 0) {
        /* the iterate reached w* exactly: every later loss is zero */
        ll = -INFINITY;
        set_status(res, MS_META_UNDERFLOW, t);
      } else {
        set_status(res, MS_META_NAN, t);
        ll = NAN;
      }
      goto out;
    }
    for (int64_t i = 0; i < n; i++) u[i] = un[i] / r;
    for (int64_t i = 0; i < n * p; i++) v[i] = vn[i] / r;
    logscale += log(r);
    matvec(H, u, Hu, d);
    for (int j = 0; j < p; j++) matvec(H, v + j * n, Hv + j * d, d);
    /* f_t = 1/2 exp(2 l) e^T H e, d log f_t / d theta_j = 2 e^T H de_j / e^T H e */
    double q = dotp(u, Hu, d);
    ll = q > 0 ? 2.0 * logscale + log(0.5 * q) : -INFINITY;
    for (int j = 0; j < p; j++) dll[j] = q > 0 ? 2.0 * dotp(Hv + j * d, u, d) / q : 0.0;
    if (kind == MS_META_SUM || kind == MS_META_LOGSUM) {
      double nl = logaddexp(lsum, ll);
      if (nl > -INFINITY) {
        double wo = lsum == -INFINITY ? 0.0 : exp(lsum - nl), wn = ll == -INFINITY ? 0.0 : exp(ll - nl);
        for (int j = 0; j < p; j++) dsum[j] = dsum[j] * wo + dll[j] * wn;
      }
      lsum = nl;
    }
  }
out:
  ms_ctx_dealloc(ctx, buf, bytes);
  if (st) return st;
  if (kind == MS_META_SUM || kind == MS_META_LOGSUM) {
    finish(res, lsum, dsum, T, kind);
  } else {
    finish(res, ll, dll, T, kind);
  }
  return MS_OK;
}
