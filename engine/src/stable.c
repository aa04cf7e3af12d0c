/*
 * The stable and exact meta-gradient methods (meta.h): meta-objectives of optimizers whose
 * dynamics are linear in a state, computed in log space so no T or step size over- or
 * underflows.
 *
 * Exact: the closed form of GD on a quadratic in its eigenbasis (ms_meta_gd_exact).
 *
 * Stable: GD, heavy-ball momentum and Nesterov on a quadratic or on full-batch least squares
 * move a HOMOGENEOUS linear state z_t = M_t(theta) z_{t-1} made of blocks
 *   training   a: e = w - w* (quadratic; gradient H e) or the residual r = X w - y (least
 *                 squares; gradient X^T r / n). Carrying r rather than w avoids the
 *                 cancellation of X w - y once the loss is tiny (n < d: it goes to 0);
 *   momentum   m (momentum and Nesterov);
 *   validation b: e_v = w - w*_v or r_v = X_v w - y_v (meta-objective on 'valid').
 * Every block moves by the same step s = lr_t dir with dir linear in (g, m):
 *   m' = beta m + g;  dir = g (gd), m' (momentum), g + beta m' (nesterov);
 *   e' = e - s,  r' = r - X s,
 * so z stays closed under M_t even though e, e_v and r are affine in w. z is kept as
 * 2^scale u with 1/2 <= |u| < 1 and the tangents dz/dtheta_j as 2^scale v_j: every step
 * divides all of them by the power of two that brings |u| back, which is exact, and the
 * integer scale accumulates no rounding (a double log-scale would lose ulp(|log l|) per step,
 * 1e-8 relative in the loss at T = 1e5). The loss of step t is 2^(2 scale) q(u) with q the
 * block's quadratic form, and d log l_t / d theta_j = 2 <Q u, v_j> / <Q u, u>.
 * The state and its tangents are the k rows of one matrix, so every product with H or X is
 * one fused kernel call (fused.h) reading the matrix once: H u and H v_j in one pass over H,
 * over its upper triangle only when H is exactly symmetric; for least squares the residual
 * step r' = r - X s and the next gradient X^T r' / n in one pass over X.
 */
#include <cblas.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fused.h"
#include "meta_internal.h"

static const double LOG_DBL_MAX = 709.782712893384;
static const double LN2 = 0.693147180559945309417232121458;

/* ======================================================================================
 * Results in log space
 * ====================================================================================== */

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
 * exponentiate, reporting overflow/underflow of the double results honestly. A loss part
 * of exactly zero (ll = -inf) is an underflow unless accept_zero.
 */
static void finish(ms_meta_result *res, double ll, const double *dll, int64_t T, ms_meta_kind kind,
                   int accept_zero) {
  res->log_loss = ll;
  if (isnan(ll)) {
    set_status(res, MS_META_NAN, T);
    res->value = NAN;
    for (int j = 0; j < res->nparams; j++) res->grad[j] = res->log_abs_grad[j] = NAN;
    return;
  }
  if (ll == -INFINITY && !accept_zero) set_status(res, MS_META_UNDERFLOW, T);
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
    if (isnan(dll[j]))
      set_status(res, MS_META_NAN, T);
    else if (lg > LOG_DBL_MAX)
      set_status(res, MS_META_OVERFLOW, T);
    else if (dll[j] != 0 && fabs(res->grad[j]) < DBL_MIN)
      set_status(res, MS_META_UNDERFLOW, T);
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
  if (T < 1)
    return ms_ctx_fail(ctx, MS_EARG, "%s: steps must be >= 1, got %lld", what, (long long)T);
  if ((int)kind < MS_META_NAIVE || kind > MS_META_LOGSUM)
    return ms_ctx_fail(ctx, MS_EARG, "%s: unknown meta-objective %d", what, (int)kind);
  return MS_OK;
}

/* ======================================================================================
 * The closed form of GD on a quadratic
 * ====================================================================================== */

int ms_meta_gd_exact(ms_ctx *ctx, const ms_tensor *lambda, const ms_tensor *c, double eta,
                     int64_t T, ms_meta_kind kind, ms_meta_result *res) {
  const char *what = "meta_gd_exact";
  result_init(res, 1);
  int st = check_common(ctx, what, eta, T, kind);
  if (st) return st;
  if (kind != MS_META_NAIVE && kind != MS_META_LOG)
    return ms_ctx_fail(ctx, MS_EARG, "%s: the closed form covers the naive and log meta-objectives",
                       what);
  if ((st = check_vector(ctx, what, "eigenvalues", lambda, -1))) return st;
  int64_t d = lambda->shape[0];
  if ((st = check_vector(ctx, what, "coordinates", c, d))) return st;
  const double *lam = MS_TENSOR_DATA(lambda), *cc = MS_TENSOR_DATA(c);
  int64_t ls = lambda->strides[0], cs = c->strides[0];
  /* a_i = log(1/2 lambda_i c_i^2) + 2T log|1 - eta lambda_i|; ll = logsumexp_i a_i */
  double ll = -INFINITY;
  for (int64_t i = 0; i < d; i++) {
    double l = lam[i * ls], ci = cc[i * cs];
    if (l < 0)
      return ms_ctx_fail(ctx, MS_EARG, "%s: eigenvalue %lld is negative (%g)", what,
                         (long long)i + 1, l);
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
  finish(res, ll, &dll, T, kind, 0);
  return MS_OK;
}

/* ======================================================================================
 * The stable unroll on raw arrays
 * ====================================================================================== */

enum { PAR_LR = 0, PAR_BETA = 1 };

/* One block of the state: a quadratic's error (A = H [d,d], len = d) or a least-squares
 * residual (A = X [len,d]); both matrices contiguous row-major. */
typedef struct lin_block {
  int ls;
  int sym; /* H equals its transpose exactly: products read its upper triangle only */
  int64_t len;
  const double *A;
  double half; /* the loss is half * e^T H e, or half * |r|^2 with half = 1/(2n) */
} lin_block;

typedef struct lin_problem {
  const char *what;   /* names the loop in the interrupt message */
  ms_optim_kind opt;  /* MS_OPTIM_GD, MS_OPTIM_MOMENTUM or MS_OPTIM_NESTEROV */
  double lr, beta;    /* mapped values */
  ms_optim *schedule; /* its factor at step t multiplies lr; NULL: factor 1 */
  int64_t d, T;
  ms_meta_kind kind;
  lin_block train;
  lin_block valid;  /* valid.len == 0: the losses are the training block's */
  const double *a0; /* initial training block [train.len] */
  const double *b0; /* initial validation block [valid.len] */
  int ntan;         /* tangents: d/d par[j] for j < ntan, times chain[j] */
  int par[2];
  double chain[2]; /* lr for a step size stored as its log (d/dlog lr = lr d/dlr), else 1 */
  int accept_zero; /* a loss of exactly 0 is fine (no underflow status) */
} lin_problem;

/* Working arrays: k rows of length N = na + nm + nb (training, momentum, validation). */
typedef struct lin_work {
  int k;
  int64_t d, na, nm, nb, N;
  double *z, *zn; /* [k, N] the state u (row 0) and tangents v_j (rows 1..), and the next */
  double *g;      /* [k, d] gradient rows of the training block */
  double *dir;    /* [k, d] update directions */
  double *s;      /* [k, d] steps lr_t dir and their tangents */
  double *y;      /* [k, ny] products X s, H_v b */
  double *buf;
  size_t bytes;
} lin_work;

static double dotp(const double *a, const double *b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

/* out[i] = H rows[i] for k rows of length d (leading dimension ld), one pass over H; H is read
 * as given (in full unless exactly symmetric), so an H symmetric only up to rounding gives
 * exactly the objective's gradient H e up to the rounding of the sums. */
static void mul_h(const lin_block *b, int k, int64_t d, const double *rows, int64_t ld,
                  double *out) {
  if (b->sym)
    ms__fused_hmul_upper(k, d, b->A, d, rows, ld, out, d);
  else
    ms__fused_gemv(k, d, d, b->A, d, rows, ld, out, d);
}

static int work_alloc(ms_ctx *ctx, const lin_problem *pb, lin_work *wk) {
  memset(wk, 0, sizeof *wk);
  int mom = pb->opt != MS_OPTIM_GD;
  wk->k = 1 + pb->ntan;
  wk->d = pb->d;
  wk->na = pb->train.len;
  wk->nm = mom ? pb->d : 0;
  wk->nb = pb->valid.len;
  wk->N = wk->na + wk->nm + wk->nb;
  int64_t ny = pb->d;
  if (pb->train.ls && pb->train.len > ny) ny = pb->train.len;
  if (pb->valid.len > ny) ny = pb->valid.len;
  size_t k = (size_t)wk->k;
  size_t n = k * (2 * (size_t)wk->N + 3 * (size_t)pb->d + (size_t)ny);
  wk->bytes = n * sizeof(double);
  wk->buf = ms_ctx_alloc(ctx, wk->bytes);
  if (wk->buf == NULL) return MS_ENOMEM;
  memset(wk->buf, 0, wk->bytes);
  wk->z = wk->buf;
  wk->zn = wk->z + k * wk->N;
  wk->g = wk->zn + k * wk->N;
  wk->dir = wk->g + k * pb->d;
  wk->s = wk->dir + k * pb->d;
  wk->y = wk->s + k * pb->d;
  return MS_OK;
}

/* g rows = gradient of the training block of every row of z (least squares: alpha X^T r, one
 * pass over X with nothing added to r). */
static void grad_rows(const lin_problem *pb, lin_work *wk) {
  const lin_block *b = &pb->train;
  if (b->ls)
    ms__fused_ls(wk->k, b->len, wk->d, b->A, wk->d, 0.0, NULL, wk->d, wk->z, wk->N, 2.0 * b->half,
                 wk->g, wk->d);
  else
    mul_h(b, wk->k, wk->d, wk->z, wk->N, wk->g);
}

/* The momentum rows of zn and the direction rows (tangent rows add d(beta)/d theta terms). */
static void directions(const lin_problem *pb, lin_work *wk) {
  int64_t d = wk->d, N = wk->N;
  double beta = pb->beta;
  const double *m0 = wk->z + wk->na, *mn0 = wk->zn + wk->na;
  for (int i = 0; i < wk->k; i++) {
    int dbeta = i > 0 && pb->par[i - 1] == PAR_BETA;
    const double *g = wk->g + i * d, *m = wk->z + i * N + wk->na;
    double *mn = wk->zn + i * N + wk->na, *dir = wk->dir + i * d;
    if (pb->opt == MS_OPTIM_GD) {
      memcpy(dir, g, sizeof(double) * (size_t)d);
      continue;
    }
    /* m' = beta m + g;  dm' = beta dm + dg + [d beta] m */
    for (int64_t l = 0; l < d; l++) mn[l] = beta * m[l] + g[l] + (dbeta ? m0[l] : 0.0);
    if (pb->opt == MS_OPTIM_MOMENTUM) {
      memcpy(dir, mn, sizeof(double) * (size_t)d);
    } else {
      /* dir = g + beta m';  d dir = dg + beta dm' + [d beta] m' */
      for (int64_t l = 0; l < d; l++) dir[l] = g[l] + beta * mn[l] + (dbeta ? mn0[l] : 0.0);
    }
  }
}

/* Moves one block (offset off in the rows) by the steps: e' = e - s or r' = r - X s, where
 * s = lr_t dir and its tangent lr_t d dir + [d lr] factor_t dir. A quadratic block subtracts
 * the two terms one after the other, in the order of the original GD/momentum routine. The
 * training least-squares block also leaves the next gradient rows alpha X^T r' in g (the same
 * pass over X); the caller scales them with the state. */
static void move_block(const lin_problem *pb, lin_work *wk, const lin_block *b, int64_t off,
                       double lrt, double f) {
  int64_t d = wk->d, N = wk->N;
  if (!b->ls) {
    for (int i = 0; i < wk->k; i++) {
      int dlr = i > 0 && pb->par[i - 1] == PAR_LR;
      const double *z = wk->z + i * N + off, *dir = wk->dir + i * d;
      double *zn = wk->zn + i * N + off;
      for (int64_t l = 0; l < d; l++) zn[l] = z[l] - lrt * dir[l] - (dlr ? f * wk->dir[l] : 0.0);
    }
    return;
  }
  for (int i = 0; i < wk->k; i++) {
    int dlr = i > 0 && pb->par[i - 1] == PAR_LR;
    const double *dir = wk->dir + i * d;
    double *s = wk->s + i * d;
    for (int64_t l = 0; l < d; l++) s[l] = lrt * dir[l] + (dlr ? f * wk->dir[l] : 0.0);
    memcpy(wk->zn + i * N + off, wk->z + i * N + off, sizeof(double) * (size_t)b->len);
  }
  if (b == &pb->train)
    ms__fused_ls(wk->k, b->len, d, b->A, d, -1.0, wk->s, d, wk->zn + off, N, 2.0 * b->half, wk->g,
                 d);
  else
    ms__fused_ls(wk->k, b->len, d, b->A, d, -1.0, wk->s, d, wk->zn + off, N, 0.0, NULL, d);
}

/* sum_l a_l b_l, with both factors scaled by 2^-e2 (exact) when e2 != 0. */
static double scaled_dot(const double *a, const double *b, int64_t n, int e2) {
  if (e2 == 0) return dotp(a, b, n);
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += ldexp(a[i], -e2) * ldexp(b[i], -e2);
  return s;
}

/*
 * log of the loss of the measured block (validation when there is one, else training) and
 * its derivatives dll[j] = d log l / d theta_j, from the normalized rows; -inf when the loss
 * is exactly 0. A block far below the rest of the state is scaled by a power of two first,
 * so its quadratic form does not underflow long before its entries do. The rows are the
 * state over 2^scale; the caller adds the scale.
 */
static double block_log_loss(const lin_problem *pb, lin_work *wk, double *dll) {
  int valid = pb->valid.len > 0;
  const lin_block *b = valid ? &pb->valid : &pb->train;
  int64_t off = valid ? wk->na + wk->nm : 0, N = wk->N;
  const double *u = wk->z + off;
  /* qrows[j * qld ..]: Q applied to row j (H rows; the training gradient rows are H rows) */
  const double *qrows = wk->z + off;
  int64_t qld = N;
  if (!b->ls && !valid) {
    qrows = wk->g;
    qld = wk->d;
  } else if (!b->ls) {
    mul_h(b, wk->k, wk->d, wk->z + off, N, wk->y);
    qrows = wk->y;
    qld = wk->d;
  }
  double big = 0;
  for (int64_t l = 0; l < b->len; l++)
    if (fabs(u[l]) > big) big = fabs(u[l]);
  int e2 = 0;
  if (big > 0 && big < 0x1p-200) (void)frexp(big, &e2);
  double q = scaled_dot(u, qrows, b->len, e2);
  for (int j = 0; j < pb->ntan; j++) {
    double dq = scaled_dot(qrows + (j + 1) * qld, u, b->len, e2);
    dll[j] = q > 0 ? 2.0 * dq / q : 0.0;
  }
  /* l = half q(u) = half 2^(2 e2) q_scaled */
  return q > 0 ? log(b->half * q) + 2.0 * LN2 * (double)e2 : -INFINITY;
}

/*
 * Divides the k rows of the state by 2^e, e the binary exponent of the norm of row 0 (so
 * |u| lands in [1/2, 1)), and adds e to *scale. Scaling by a power of two is exact, and the
 * scale is an integer: no rounding accumulates in it over any T. With_g: the gradient rows in
 * g, computed from the unscaled state, are divided by the same 2^e (exactly what computing
 * them from the scaled state gives). Returns 1, or 0 when the norm is 0 (*zero set) or not
 * finite.
 */
static int renormalize(lin_work *wk, const double *src, int with_g, int64_t *scale, int *zero) {
  double r = sqrt(dotp(src, src, wk->N));
  *zero = r == 0;
  if (!(r > 0) || !isfinite(r)) return 0;
  int e;
  (void)frexp(r, &e);
  int64_t n = wk->k * wk->N, ng = with_g ? wk->k * wk->d : 0;
  if (e > -1000) {
    /* 2^-e is a double: multiplying by it is ldexp's exact scaling, without the calls */
    double p = ldexp(1.0, -e);
    for (int64_t i = 0; i < n; i++) wk->z[i] = src[i] * p;
    for (int64_t i = 0; i < ng; i++) wk->g[i] *= p;
  } else {
    for (int64_t i = 0; i < n; i++) wk->z[i] = ldexp(src[i], -e);
    for (int64_t i = 0; i < ng; i++) wk->g[i] = ldexp(wk->g[i], -e);
  }
  *scale += e;
  return 1;
}

/* The first state (a0, 0, b0), renormalized; sets the status when it is zero or not finite. */
static int first_state(const lin_problem *pb, lin_work *wk, int64_t *scale, ms_meta_result *res) {
  memcpy(wk->zn, pb->a0, sizeof(double) * (size_t)wk->na);
  if (wk->nb) memcpy(wk->zn + wk->na + wk->nm, pb->b0, sizeof(double) * (size_t)wk->nb);
  int zero;
  if (renormalize(wk, wk->zn, 0, scale, &zero)) return 1;
  /* zero: w0 minimizes every block, so every loss is exactly zero */
  if (!zero)
    set_status(res, MS_META_NAN, 0);
  else if (!pb->accept_zero)
    set_status(res, MS_META_UNDERFLOW, 0);
  return 0;
}

/*
 * Runs the unroll of pb into res (finish applied). Returns MS_OK with res->status telling
 * whether the double results are faithful, or MS_ENOMEM, MS_EINTERRUPT, a schedule's failure.
 */
static int lin_run(ms_ctx *ctx, const lin_problem *pb, ms_meta_result *res) {
  result_init(res, pb->ntan);
  lin_work wk;
  int st = work_alloc(ctx, pb, &wk);
  if (st) return st;
  int sum = pb->kind == MS_META_SUM || pb->kind == MS_META_LOGSUM, zero;
  int64_t scale = 0; /* z = 2^scale u */
  double ll = -INFINITY, dll[2] = {0, 0};
  double lsum = -INFINITY, dsum[2] = {0, 0}; /* running log sum_t l_t and its derivatives */
  if (!first_state(pb, &wk, &scale, res)) {
    if (res->status == MS_META_NAN) ll = lsum = NAN;
    goto out;
  }
  grad_rows(pb, &wk);
  /* Poll the interrupt flag (and a host's budget) every ~4096 multiply-adds of work at most:
   * every step once a step costs that much. */
  int64_t work = pb->d * (pb->train.len + pb->valid.len + 1);
  int64_t every = work >= 4096 ? 1 : 4096 / work;
  for (int64_t t = 1; t <= pb->T; t++) {
    if (t % every == 0 && (st = ms_ctx_check_interrupt(ctx, pb->what))) goto out;
    double f = 1.0;
    if (pb->schedule && (st = ms_optim_factor(ctx, pb->schedule, t, &f))) goto out;
    double lrt = pb->lr * f;
    directions(pb, &wk);
    move_block(pb, &wk, &pb->train, 0, lrt, f);
    if (wk.nb) move_block(pb, &wk, &pb->valid, wk.na + wk.nm, lrt, f);
    if (!renormalize(&wk, wk.zn, pb->train.ls, &scale, &zero)) {
      if (zero) {
        /* the state reached zero exactly: every later loss is zero */
        ll = -INFINITY;
        if (!pb->accept_zero) set_status(res, MS_META_UNDERFLOW, t);
      } else {
        set_status(res, MS_META_NAN, t);
        ll = lsum = NAN;
      }
      goto out;
    }
    if (!pb->train.ls) grad_rows(pb, &wk); /* least squares: move_block made them */
    if (!sum && t < pb->T) continue;
    /* l_t = 2^(2 scale) q(u) */
    ll = block_log_loss(pb, &wk, dll);
    if (ll > -INFINITY) ll += 2.0 * LN2 * (double)scale;
    if (sum) {
      double nl = logaddexp(lsum, ll);
      if (nl > -INFINITY) {
        double wo = lsum == -INFINITY ? 0.0 : exp(lsum - nl),
               wn = ll == -INFINITY ? 0.0 : exp(ll - nl);
        for (int j = 0; j < pb->ntan; j++) dsum[j] = dsum[j] * wo + dll[j] * wn;
      }
      lsum = nl;
    }
  }
out:
  ms_ctx_dealloc(ctx, wk.buf, wk.bytes);
  if (st) return st;
  double *dl = sum ? dsum : dll;
  for (int j = 0; j < pb->ntan; j++) dl[j] *= pb->chain[j];
  finish(res, sum ? lsum : ll, dl, pb->T, pb->kind, pb->accept_zero);
  return MS_OK;
}

/* ======================================================================================
 * ms_meta_stable_quadratic: GD or momentum on one quadratic, through the general unroll
 * ====================================================================================== */

/*
 * The loss f = 1/2 e^T H e and its derivative assume a symmetric H, and the log-domain state
 * assumes f >= 0: with an indefinite H the loss goes negative (its log is NaN) and the run
 * reported 0 with status underflow. Both are refused, as ms_objective_check_psd does for
 * the meta-gradient methods.
 */
static int check_symmetric_psd(ms_ctx *ctx, const char *what, const ms_tensor *H) {
  int st = ms__check_symmetric(ctx, what, "H", H);
  if (st || H->shape[0] == 0) return st;
  ms_tensor *h = NULL, *lam = NULL, *vec = NULL;
  st = ms_stop_gradient(ctx, (ms_tensor *)H, &h);
  if (!st) st = ms_eigh(ctx, h, &lam, &vec);
  if (!st) {
    const double *l = MS_TENSOR_DATA(lam);
    double lo = l[0], hi = l[lam->numel - 1];
    if (lo < -1e-12 * fmax(1.0, fabs(hi)))
      st = ms_ctx_fail(ctx, MS_EARG,
                       "%s: needs a positive semi-definite H (smallest eigenvalue %g, largest %g)",
                       what, lo, hi);
  }
  ms_tensor_release(h);
  ms_tensor_release(lam);
  ms_tensor_release(vec);
  return st;
}

int ms_meta_stable_quadratic(ms_ctx *ctx, const ms_tensor *H, const ms_tensor *w0,
                             const ms_tensor *wstar, const ms_meta_optimizer *opt, int64_t T,
                             ms_meta_kind kind, ms_meta_result *res) {
  const char *what = "meta_stable";
  char b[MS_SHAPE_STRLEN];
  int mom = opt->kind == MS_META_MOMENTUM;
  result_init(res, mom ? 2 : 1);
  if (opt->kind != MS_META_GD && opt->kind != MS_META_MOMENTUM)
    return ms_ctx_fail(ctx, MS_EARG, "%s: unknown optimizer %d", what, (int)opt->kind);
  int st = check_common(ctx, what, opt->lr, T, kind);
  if (st) return st;
  if (mom && (!isfinite(opt->beta) || opt->beta < 0))
    return ms_ctx_fail(ctx, MS_EARG, "%s: momentum must be finite and >= 0, got %g", what,
                       opt->beta);
  if (H->ndim != 2 || H->shape[0] != H->shape[1])
    return ms_ctx_fail(ctx, MS_ESHAPE, "%s: H must be a square matrix, got shape %s", what,
                       ms_shape_str(H->ndim, H->shape, b, sizeof b));
  if (!ms_tensor_all_finite(H))
    return ms_ctx_fail(ctx, MS_EARG, "%s: H has non-finite entries", what);
  if ((st = check_symmetric_psd(ctx, what, H))) return st;
  int64_t d = H->shape[0];
  if (d > INT_MAX)
    return ms_ctx_fail(ctx, MS_EARG, "%s: H is too large for BLAS (%lld rows)", what, (long long)d);
  if ((st = check_vector(ctx, what, "w0", w0, d))) return st;
  if (wstar && (st = check_vector(ctx, what, "wstar", wstar, d))) return st;

  ms_tensor *Hc = NULL;
  if ((st = ms_tensor_contiguous(ctx, H, &Hc))) return st;
  size_t bytes = sizeof(double) * (size_t)d;
  double *e0 = ms_ctx_alloc(ctx, bytes);
  if (e0 == NULL) {
    ms_tensor_release(Hc);
    return MS_ENOMEM;
  }
  const double *w0d = MS_TENSOR_DATA(w0), *wsd = wstar ? MS_TENSOR_DATA(wstar) : NULL;
  for (int64_t i = 0; i < d; i++)
    e0[i] = w0d[i * w0->strides[0]] - (wsd ? wsd[i * wstar->strides[0]] : 0.0);
  lin_problem pb = {.what = what,
                    .opt = mom ? MS_OPTIM_MOMENTUM : MS_OPTIM_GD,
                    .lr = opt->lr,
                    .beta = opt->beta,
                    .d = d,
                    .T = T,
                    .kind = kind,
                    .train = {.ls = 0,
                              .sym = d >= MS_FUSED_SYM_MIN_DIM &&
                                     ms__fused_is_symmetric(d, MS_TENSOR_DATA(Hc), d),
                              .len = d,
                              .A = MS_TENSOR_DATA(Hc),
                              .half = 0.5},
                    .a0 = e0,
                    .ntan = mom ? 2 : 1,
                    .par = {PAR_LR, PAR_BETA},
                    .chain = {1.0, 1.0}};
  st = lin_run(ctx, &pb, res);
  ms_ctx_dealloc(ctx, e0, bytes);
  ms_tensor_release(Hc);
  return st;
}

/* ======================================================================================
 * The methods of ms_meta_value_and_grad
 * ====================================================================================== */

static const char STABLE_COVERS[] = "gd, momentum and nesterov on quadratics and least squares";
static const char EXACT_COVERS[] =
    "gd without a schedule on a quadratic, with the naive or log meta-objective on the training "
    "loss";

/* Stored value of parameter i: theta[i] when given, else the spec's, else the initial one. */
static const ms_tensor *theta_at(const ms_meta_spec *spec, ms_tensor *const *theta, int i) {
  if (theta && theta[i]) return theta[i];
  if (spec->theta && spec->theta[i]) return spec->theta[i];
  return ms_optim_param_at(spec->optimizer, i)->init;
}

/* Where the optimizer keeps its step size and momentum (-1: none), the step size's map. */
typedef struct param_roles {
  int lr, beta;
  int log_lr;
} param_roles;

/*
 * Whether the optimizer's parameters are a one-element step size "lr" (plain) or "log_lr"
 * (log) and, when with_beta, a one-element "beta"; 0, or 1 with what[] saying what is not.
 */
static int params_gap(const ms_meta_spec *spec, ms_tensor *const *theta, int with_beta,
                      param_roles *roles, char *what, size_t size) {
  const ms_optim *opt = spec->optimizer;
  roles->lr = roles->beta = -1;
  roles->log_lr = 0;
  for (int i = 0; i < ms_optim_nparams(opt); i++) {
    const ms_optim_param *p = ms_optim_param_at(opt, i);
    int64_t n = ms_tensor_numel(theta_at(spec, theta, i));
    if (strcmp(p->name, "lr") == 0 && p->map == MS_PARAM_PLAIN) {
      roles->lr = i;
    } else if (strcmp(p->name, "log_lr") == 0 && p->map == MS_PARAM_LOG) {
      roles->lr = i;
      roles->log_lr = 1;
    } else if (with_beta && strcmp(p->name, "beta") == 0 && p->map == MS_PARAM_PLAIN) {
      roles->beta = i;
    } else {
      snprintf(what, size, "the parameter '%s' of %s", p->name, ms_optim_name(opt));
      return 1;
    }
    if (n != 1) {
      snprintf(what, size, "a parameter '%s' with %lld elements (only one-element ones)", p->name,
               (long long)n);
      return 1;
    }
  }
  if (roles->lr < 0 || (with_beta && roles->beta < 0)) {
    snprintf(what, size, "%s without %s", ms_optim_name(opt),
             roles->lr < 0 ? "a step size 'lr' or 'log_lr'" : "a momentum 'beta'");
    return 1;
  }
  return 0;
}

int ms__meta_linear_params(const ms_meta_spec *spec, ms_tensor *const *theta, int *lr, int *beta,
                           int *log_lr) {
  char what[256];
  param_roles roles;
  ms_optim_kind k = ms_optim_kind_of(spec->optimizer);
  if (k != MS_OPTIM_GD && k != MS_OPTIM_MOMENTUM && k != MS_OPTIM_NESTEROV) return 0;
  if (params_gap(spec, theta, k != MS_OPTIM_GD, &roles, what, sizeof what)) return 0;
  *lr = roles.lr;
  *beta = roles.beta;
  *log_lr = roles.log_lr;
  return 1;
}

/* Whether obj is a quadratic with fstar = 0 or least squares; role names it in what[]. */
static int objective_gap(const ms_objective *obj, const char *role, char *what, size_t size) {
  ms_objective_kind kind = ms_objective_kind_of(obj);
  if (kind == MS_OBJECTIVE_LEAST_SQUARES) return 0;
  if (kind == MS_OBJECTIVE_QUADRATIC) {
    double fstar = 0;
    ms_objective_quadratic_parts(obj, NULL, NULL, &fstar);
    if (fstar == 0) return 0;
    snprintf(what, size, "a %s quadratic with fstar = %g (only fstar = 0)", role, fstar);
    return 1;
  }
  snprintf(what, size, "the %s objective '%s'", role, ms_objective_name(obj));
  return 1;
}

/* What neither method takes: a custom meta-objective or a kind past kinds_upto, truncate,
 * freeze_norm (checkpoint only changes how reverse mode stores the run: ignored). */
static int spec_gap(const ms_meta_spec *spec, int kinds_upto, char *what, size_t size) {
  const char *names[] = {"naive", "log", "sum", "logsum"};
  if (spec->meta.kind == MS_META_CUSTOM || (int)spec->meta.kind < 0 ||
      spec->meta.kind > MS_META_LOGSUM) {
    snprintf(what, size, "a custom meta-objective");
    return 1;
  }
  if ((int)spec->meta.kind > kinds_upto) {
    snprintf(what, size, "the %s meta-objective", names[spec->meta.kind]);
    return 1;
  }
  if (spec->truncate != 0) {
    snprintf(what, size, "truncate = %lld", (long long)spec->truncate);
    return 1;
  }
  if (spec->freeze_norm > 0) {
    snprintf(what, size, "freeze_norm = %g", spec->freeze_norm);
    return 1;
  }
  return 0;
}

/* What the stable method does not cover in (spec, task) (1, with what[]), or 0. */
static int stable_gap(const ms_meta_spec *spec, const ms_task *task, ms_tensor *const *theta,
                      param_roles *roles, char *what, size_t size) {
  if (spec_gap(spec, MS_META_LOGSUM, what, size)) return 1;
  ms_optim_kind k = ms_optim_kind_of(spec->optimizer);
  if (k != MS_OPTIM_GD && k != MS_OPTIM_MOMENTUM && k != MS_OPTIM_NESTEROV) {
    snprintf(what, size, "the optimizer %s", ms_optim_name(spec->optimizer));
    return 1;
  }
  if (params_gap(spec, theta, k != MS_OPTIM_GD, roles, what, size)) return 1;
  if (objective_gap(task->objective, "training", what, size)) return 1;
  if (spec->meta.on != MS_META_VALID) return 0;
  if (task->valid == NULL) {
    snprintf(what, size, "a meta-objective on 'valid' for a task without a validation objective");
    return 1;
  }
  if (ms_objective_dim(task->valid) != ms_objective_dim(task->objective)) {
    snprintf(what, size, "a validation objective of dimension %lld (the training one has %lld)",
             (long long)ms_objective_dim(task->valid),
             (long long)ms_objective_dim(task->objective));
    return 1;
  }
  return objective_gap(task->valid, "validation", what, size);
}

/* The PSD checks of the quadratics the stable method reads (messages name `what`). */
static int stable_psd(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                      const char *what) {
  int st = ms_objective_check_psd(ctx, task->objective, what);
  if (st == MS_OK && spec->meta.on == MS_META_VALID)
    st = ms_objective_check_psd(ctx, task->valid, what);
  return st;
}

int ms__meta_stable_applies(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task, char *why,
                            size_t size) {
  char what[256];
  param_roles roles;
  if (stable_gap(spec, task, NULL, &roles, what, sizeof what)) {
    if (why && size)
      snprintf(why, size, "method 'stable' does not cover %s (it handles %s)", what, STABLE_COVERS);
    return 0;
  }
  /* the PSD check reports through the context: keep the caller's error as it was */
  char saved[sizeof ctx->err];
  int saved_status = ms_ctx_status(ctx);
  snprintf(saved, sizeof saved, "%s", ms_ctx_error(ctx));
  int st = stable_psd(ctx, spec, task, "method 'stable'");
  if (st && why && size) snprintf(why, size, "%s", ms_ctx_error(ctx));
  if (saved_status != MS_OK)
    ms_ctx_fail(ctx, saved_status, "%s", saved);
  else
    ms_ctx_clear_error(ctx);
  return st == MS_OK;
}

/* A training or validation block of the unroll from its objective: H or X, as a contiguous
 * tensor kept alive in *hold (released by the caller, also after a failure). */
static int block_of(ms_ctx *ctx, ms_objective *obj, lin_block *b, ms_tensor **hold) {
  ms_tensor *A = NULL;
  int ls = ms_objective_kind_of(obj) == MS_OBJECTIVE_LEAST_SQUARES;
  int st = ls ? ms_objective_data_parts(obj, &A, NULL, NULL)
              : ms_objective_quadratic_parts(obj, &A, NULL, NULL);
  if (st) return st;
  if ((st = ms_tensor_contiguous(ctx, A, hold))) return st;
  if (ms_tensor_dim(A, 0) > INT_MAX || ms_tensor_dim(A, 1) > INT_MAX)
    return ms_ctx_fail(ctx, MS_EARG, "meta: method 'stable': %s is too large for BLAS",
                       ms_objective_name(obj));
  b->ls = ls;
  b->len = ms_tensor_dim(A, 0);
  b->A = ms_tensor_data(*hold);
  b->half = ls ? 0.5 / (double)b->len : 0.5;
  b->sym = !ls && b->len >= MS_FUSED_SYM_MIN_DIM && ms__fused_is_symmetric(b->len, b->A, b->len);
  return MS_OK;
}

/* The block's value at w ([d], contiguous): w - w* or X w - y. */
static int block_init(ms_objective *obj, const lin_block *b, const double *w, int64_t d,
                      double *out) {
  ms_tensor *ref = NULL;
  int st = b->ls ? ms_objective_data_parts(obj, NULL, &ref, NULL)
                 : ms_objective_quadratic_parts(obj, NULL, &ref, NULL);
  if (st) return st;
  if (b->ls) {
    /* r0 = X w0 - y */
    cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)b->len, (int)d, 1.0, b->A, (int)d, w, 1, 0.0, out,
                1);
  } else {
    memcpy(out, w, sizeof(double) * (size_t)d);
  }
  if (ref) {
    const double *r = ms_tensor_data(ref);
    int64_t rs = ms_tensor_strides(ref)[0];
    for (int64_t i = 0; i < b->len; i++) out[i] -= r[i * rs];
  }
  return MS_OK;
}

/* w0 as a contiguous [d] array (zeros when the task has none). */
static int start_point(ms_ctx *ctx, const ms_task *task, int64_t d, double *w) {
  char b[MS_SHAPE_STRLEN];
  if (task->w0 == NULL) {
    memset(w, 0, sizeof(double) * (size_t)d);
    return MS_OK;
  }
  if (ms_tensor_ndim(task->w0) != 1 || ms_tensor_dim(task->w0, 0) != d)
    return ms_ctx_fail(
        ctx, MS_ESHAPE, "meta: w0 has shape %s, expected [%lld]",
        ms_shape_str(ms_tensor_ndim(task->w0), ms_tensor_shape(task->w0), b, sizeof b),
        (long long)d);
  return ms_tensor_read(ctx, task->w0, w, d);
}

static double item_of(const ms_tensor *t) { return ms_tensor_data(t)[0]; }

/*
 * Copies a result into out for the selected parameters: grad[j] of res is the parameter
 * index[j]. Gradients are one-element tensors shaped like theta.
 */
static int fill_out(ms_ctx *ctx, const ms_meta_result *res, int n, const int *index,
                    ms_tensor *const *theta, ms_meta_out *out) {
  out->value = res->value;
  out->log_loss = res->log_loss;
  out->status = res->status;
  out->fail_step = res->fail_step;
  for (int j = 0; j < n; j++) {
    int i = index[j];
    int st = ms_tensor_full(ctx, ms_tensor_ndim(theta[i]), ms_tensor_shape(theta[i]), res->grad[j],
                            &out->grad[i]);
    if (st) {
      for (int l = 0; l < j; l++) {
        ms_tensor_release(out->grad[index[l]]);
        out->grad[index[l]] = NULL;
      }
      return st;
    }
    out->log_abs_grad[i] = res->log_abs_grad[j];
  }
  return MS_OK;
}

static int selected(const int *sel, int i) { return i >= 0 && (sel == NULL || sel[i]); }

int ms__meta_stable(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                    ms_tensor *const *theta, const int *sel, ms_meta_out *out) {
  char what[256];
  param_roles roles;
  if (stable_gap(spec, task, theta, &roles, what, sizeof what))
    return ms_ctx_fail(ctx, MS_EARG, "meta: method 'stable' does not cover %s (it handles %s)",
                       what, STABLE_COVERS);
  int st = stable_psd(ctx, spec, task, "meta: method 'stable'");
  if (st) return st;
  ms_optim *opt = spec->optimizer;
  int valid = spec->meta.on == MS_META_VALID;
  lin_problem pb = {.what = "meta",
                    .opt = ms_optim_kind_of(opt),
                    .schedule = ms_optim_has_schedule(opt) ? opt : NULL,
                    .d = ms_objective_dim(task->objective),
                    .T = spec->steps,
                    .kind = spec->meta.kind,
                    .accept_zero = spec->allow_zero_loss != 0};
  double th = item_of(theta[roles.lr]);
  pb.lr = roles.log_lr ? exp(th) : th;
  pb.beta = roles.beta >= 0 ? item_of(theta[roles.beta]) : 0.0;
  int index[2] = {0, 0};
  if (selected(sel, roles.lr)) {
    index[pb.ntan] = roles.lr;
    pb.chain[pb.ntan] = roles.log_lr ? pb.lr : 1.0;
    pb.par[pb.ntan++] = PAR_LR;
  }
  if (selected(sel, roles.beta)) {
    index[pb.ntan] = roles.beta;
    pb.chain[pb.ntan] = 1.0;
    pb.par[pb.ntan++] = PAR_BETA;
  }
  ms_tensor *hold[2] = {NULL, NULL};
  double *buf = NULL;
  size_t bytes = 0;
  if ((st = block_of(ctx, task->objective, &pb.train, &hold[0]))) goto out;
  if (valid && (st = block_of(ctx, task->valid, &pb.valid, &hold[1]))) goto out;
  /* w0, then the first training and validation blocks */
  bytes = sizeof(double) * (size_t)(pb.d + pb.train.len + pb.valid.len);
  if ((buf = ms_ctx_alloc(ctx, bytes)) == NULL) {
    st = MS_ENOMEM;
    goto out;
  }
  double *a0 = buf + pb.d, *b0 = a0 + pb.train.len;
  if ((st = start_point(ctx, task, pb.d, buf))) goto out;
  if ((st = block_init(task->objective, &pb.train, buf, pb.d, a0))) goto out;
  if (valid && (st = block_init(task->valid, &pb.valid, buf, pb.d, b0))) goto out;
  pb.a0 = a0;
  pb.b0 = b0;
  ms_meta_result res;
  if ((st = lin_run(ctx, &pb, &res))) goto out;
  st = fill_out(ctx, &res, pb.ntan, index, theta, out);
out:
  ms_ctx_dealloc(ctx, buf, bytes);
  ms_tensor_release(hold[0]);
  ms_tensor_release(hold[1]);
  return st;
}

/* What the exact method does not cover (1, with what[]), or 0. */
static int exact_gap(const ms_meta_spec *spec, const ms_task *task, ms_tensor *const *theta,
                     param_roles *roles, char *what, size_t size) {
  if (spec_gap(spec, MS_META_LOG, what, size)) return 1;
  if (spec->meta.on != MS_META_TRAIN) {
    snprintf(what, size, "a meta-objective on the validation loss");
    return 1;
  }
  if (ms_optim_kind_of(spec->optimizer) != MS_OPTIM_GD) {
    snprintf(what, size, "the optimizer %s", ms_optim_name(spec->optimizer));
    return 1;
  }
  if (ms_optim_has_schedule(spec->optimizer)) {
    snprintf(what, size, "a step-size schedule");
    return 1;
  }
  if (params_gap(spec, theta, 0, roles, what, size)) return 1;
  if (ms_objective_kind_of(task->objective) != MS_OBJECTIVE_QUADRATIC) {
    snprintf(what, size, "the training objective '%s'", ms_objective_name(task->objective));
    return 1;
  }
  return objective_gap(task->objective, "training", what, size);
}

/* c = Q^T (w0 - w*), the start's coordinates in the eigenbasis (new reference). */
static int eigen_coordinates(ms_ctx *ctx, const ms_task *task, ms_tensor *Q, ms_tensor **c) {
  int64_t d = ms_objective_dim(task->objective);
  ms_tensor *e = NULL, *Qt = NULL, *wstar = NULL;
  int st = ms_objective_quadratic_parts(task->objective, NULL, &wstar, NULL);
  if (st == MS_OK) st = ms_tensor_zeros(ctx, 1, &d, &e);
  if (st == MS_OK) st = start_point(ctx, task, d, ms_tensor_data(e));
  if (st == MS_OK && wstar) {
    double *ed = ms_tensor_data(e);
    const double *ws = ms_tensor_data(wstar);
    int64_t s = ms_tensor_strides(wstar)[0];
    for (int64_t i = 0; i < d; i++) ed[i] -= ws[i * s];
  }
  if (st == MS_OK) st = ms_tensor_transpose(ctx, Q, 0, 1, &Qt);
  if (st == MS_OK) st = ms_matvec(ctx, Qt, e, c);
  ms_tensor_release(Qt);
  ms_tensor_release(e);
  return st;
}

/* The eigenvalues with the rounding-level negatives of a PSD H set to 0 (new reference). */
static int clamped_eigenvalues(ms_ctx *ctx, const ms_tensor *lambda, ms_tensor **out) {
  int st = ms_tensor_copy(ctx, lambda, out);
  if (st) return st;
  double *l = ms_tensor_data(*out);
  for (int64_t i = 0; i < ms_tensor_numel(*out); i++)
    if (l[i] < 0) l[i] = 0;
  return MS_OK;
}

int ms__meta_exact(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                   ms_tensor *const *theta, const int *sel, ms_meta_out *out) {
  char what[256];
  param_roles roles;
  if (exact_gap(spec, task, theta, &roles, what, sizeof what))
    return ms_ctx_fail(ctx, MS_EARG, "meta: method 'exact' does not cover %s (it handles %s)", what,
                       EXACT_COVERS);
  int st = ms_objective_check_psd(ctx, task->objective, "meta: method 'exact'");
  if (st) return st;
  ms_tensor *lambda = NULL, *Q = NULL, *lam = NULL, *c = NULL;
  if ((st = ms_objective_quadratic_eigh(ctx, task->objective, &lambda, &Q))) return st;
  if ((st = clamped_eigenvalues(ctx, lambda, &lam))) return st;
  if ((st = eigen_coordinates(ctx, task, Q, &c))) goto out;
  double th = item_of(theta[roles.lr]);
  double lr = roles.log_lr ? exp(th) : th;
  ms_meta_result res;
  if ((st = ms_meta_gd_exact(ctx, lam, c, lr, spec->steps, spec->meta.kind, &res))) goto out;
  if (roles.log_lr) {
    /* d/dlog lr = lr d/dlr */
    res.grad[0] *= lr;
    res.log_abs_grad[0] += th;
    if (res.status == MS_META_OK && isinf(res.grad[0]) && !isnan(res.log_abs_grad[0]))
      set_status(&res, MS_META_OVERFLOW, spec->steps);
  }
  int index[1] = {roles.lr};
  st = fill_out(ctx, &res, selected(sel, roles.lr) ? 1 : 0, index, theta, out);
out:
  ms_tensor_release(lam);
  ms_tensor_release(c);
  return st;
}
