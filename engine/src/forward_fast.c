/*
 * The forward method's fast path (meta_internal.h): gd, heavy-ball momentum and Nesterov on a
 * quadratic f = 1/2 (w - w*)^T H (w - w*) + c or on least squares f = |X w - y|^2 / (2n),
 * unrolled on raw arrays with the tangents dw/dtheta_j carried beside w (forward mode by hand:
 * the updates are linear in w, m and their tangents, with the extra terms of d lr and d beta).
 *
 * One pass over H (or X) per step: the loss of step t needs H e_t, which is also the gradient
 * of step t + 1, and the tangents need H de_t: the fused kernel computes the k = 1 + ntan
 * products in one sweep (for least squares, r = X w - y and X^T r / n in one sweep over X).
 * Every buffer is allocated once per call. The values are those of the generic forward mode
 * (the same formulas: e = w - w* each step, f = 1/2 e.He + c with df = 1/2 (de.He + e.Hde),
 * the meta-objectives' formulas, the same statuses at the same steps), up to the rounding of
 * the sums; the generic path (unroll.c) keeps everything else.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "fused.h"
#include "meta_internal.h"
#include "metastep/autodiff.h"

enum { PAR_LR = 0, PAR_BETA = 1 };

typedef struct fwd {
  int k;    /* rows: the value (0) and the tangents (1 .. ntan) */
  int ntan; /* selected parameters, each with its kind par[] and output index where[] */
  int par[2], where[2];
  int ls, sym, mom, nesterov;
  int64_t d, n;          /* n: rows of X (least squares) */
  const double *A, *ref; /* H or X; w* or y (NULL: none) */
  int64_t ref_stride;
  double c;                        /* fstar */
  double lr, beta;                 /* mapped */
  double chain[2];                 /* lr for a log step size, else 1 */
  double *w, *m, *e, *g, *dir, *r; /* [k, d] each; r [k, n] */
  double *buf;
  size_t bytes;
} fwd;

/* Whether the objective's data is usable here: a quadratic or least squares whose tensors are
 * not traced by an active level (their derivatives would be lost). */
static int objective_parts(ms_ctx *ctx, ms_objective *obj, fwd *f, ms_tensor **A, ms_tensor **ref) {
  ms_objective_kind kind = ms_objective_kind_of(obj);
  if (kind == MS_OBJECTIVE_QUADRATIC) {
    ms_objective_quadratic_parts(obj, A, ref, &f->c);
  } else if (kind == MS_OBJECTIVE_LEAST_SQUARES) {
    ms_objective_data_parts(obj, A, ref, NULL);
    f->ls = 1;
  } else {
    return 0;
  }
  return !ms_ad_is_traced(ctx, *A) && !(*ref && ms_ad_is_traced(ctx, *ref));
}

static int covers(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                  ms_tensor *const *theta, const int *sel, int *lr, int *beta, int *log_lr) {
  ms_meta_kind kind = spec->meta.kind;
  if (kind != MS_META_NAIVE && kind != MS_META_LOG && kind != MS_META_SUM && kind != MS_META_LOGSUM)
    return 0;
  if (spec->meta.on != MS_META_TRAIN || spec->truncate != 0 || spec->freeze_norm > 0) return 0;
  if (ms_optim_batch(spec->optimizer) > 0) return 0;
  if (!ms__meta_linear_params(spec, theta, lr, beta, log_lr)) return 0;
  int np = ms_optim_nparams(spec->optimizer), any = 0;
  for (int i = 0; i < np; i++) {
    any |= sel[i] != 0;
    if (ms_ad_is_traced(ctx, theta[i])) return 0;
  }
  if (!any || (task->w0 && ms_ad_is_traced(ctx, task->w0))) return 0;
  return 1;
}

static int fwd_alloc(ms_ctx *ctx, fwd *f) {
  size_t k = (size_t)f->k, d = (size_t)f->d;
  f->bytes = sizeof(double) * k * (5 * d + (f->ls ? (size_t)f->n : 0));
  f->buf = ms_ctx_alloc(ctx, f->bytes);
  if (f->buf == NULL) return MS_ENOMEM;
  memset(f->buf, 0, f->bytes);
  f->w = f->buf;
  f->m = f->w + k * d;
  f->e = f->m + k * d;
  f->g = f->e + k * d;
  f->dir = f->g + k * d;
  f->r = f->dir + k * d;
  return MS_OK;
}

/* The loss at w and its tangents (dl[j]), leaving the gradient rows (H e or X^T r / n) in g:
 * one pass over the matrix. */
static double loss_and_grad(fwd *f, double *dl) {
  int64_t d = f->d, k = f->k;
  if (f->ls) {
    /* r = X w - y: start from -y (row 0) and 0 (tangents), add X w */
    int64_t n = f->n;
    for (int64_t i = 0; i < n; i++) f->r[i] = f->ref ? -f->ref[i * f->ref_stride] : 0.0;
    memset(f->r + n, 0, sizeof(double) * (size_t)((k - 1) * n));
    ms__fused_ls(f->k, n, d, f->A, d, 1.0, f->w, d, f->r, n, 1.0 / (double)n, f->g, d);
    double rr = 0;
    for (int64_t i = 0; i < n; i++) rr += f->r[i] * f->r[i];
    for (int j = 1; j < k; j++) {
      double s = 0;
      for (int64_t i = 0; i < n; i++) s += f->r[i] * f->r[j * n + i];
      dl[j - 1] = s / (double)n;
    }
    return rr / (2.0 * (double)n);
  }
  /* e = w - w* (its tangents are w's) */
  for (int64_t i = 0; i < d; i++) f->e[i] = f->w[i] - (f->ref ? f->ref[i * f->ref_stride] : 0.0);
  memcpy(f->e + d, f->w + d, sizeof(double) * (size_t)((k - 1) * d));
  if (f->sym)
    ms__fused_hmul_upper(f->k, d, f->A, d, f->e, d, f->g, d);
  else
    ms__fused_gemv(f->k, d, d, f->A, d, f->e, d, f->g, d);
  double q = 0;
  for (int64_t i = 0; i < d; i++) q += f->e[i] * f->g[i];
  for (int j = 1; j < k; j++) {
    double a = 0, b = 0;
    for (int64_t i = 0; i < d; i++) {
      a += f->e[j * d + i] * f->g[i];
      b += f->e[i] * f->g[j * d + i];
    }
    dl[j - 1] = 0.5 * (a + b);
  }
  return 0.5 * q + f->c;
}

/* One optimizer step on the rows: m' = beta m + g, dir = g | m' | g + beta m', w' = w - lr_t dir,
 * with the tangent rows' extra terms [d beta] m, [d beta] m' and [d lr] factor dir. The rows
 * go from the last to row 0, so the tangent rows still read row 0's old m. */
static void step(fwd *f, double lrt, double factor) {
  int64_t d = f->d;
  double beta = f->beta;
  const double *g0 = f->g, *m0 = f->m;
  for (int i = f->k - 1; i >= 0; i--) {
    int dbeta = i > 0 && f->par[i - 1] == PAR_BETA;
    const double *g = f->g + i * d;
    double *m = f->m + i * d, *dir = f->dir + i * d;
    if (!f->mom) {
      memcpy(dir, g, sizeof(double) * (size_t)d);
      continue;
    }
    for (int64_t l = 0; l < d; l++) {
      double mn = beta * m[l] + g[l] + (dbeta ? m0[l] : 0.0);
      /* row 0's m' (m0 is still the old one while i > 0) */
      double mn0 = i == 0 ? mn : beta * m0[l] + g0[l];
      dir[l] = f->nesterov ? g[l] + beta * mn + (dbeta ? mn0 : 0.0) : mn;
      m[l] = mn;
    }
  }
  for (int i = 0; i < f->k; i++) {
    int dlr = i > 0 && f->par[i - 1] == PAR_LR;
    double *w = f->w + i * d;
    const double *dir = f->dir + i * d;
    for (int64_t l = 0; l < d; l++) w[l] = w[l] - dir[l] * lrt - (dlr ? f->dir[l] * factor : 0.0);
  }
}

/* Status of a loss (as unroll.c's loss_status). */
static int loss_status(int zero_fails, double v) {
  if (isnan(v)) return MS_META_NAN;
  if (isinf(v)) return MS_META_OVERFLOW;
  if (zero_fails && (v == 0 || fabs(v) < DBL_MIN)) return MS_META_UNDERFLOW;
  return MS_META_OK;
}

/* Status of w after a step: overflow if an entry is not finite, NaN if one is NaN. */
static int w_status(const fwd *f) {
  int s = MS_META_OK;
  for (int64_t l = 0; l < f->d; l++) {
    if (isnan(f->w[l])) return MS_META_NAN;
    if (isinf(f->w[l])) s = MS_META_OVERFLOW;
  }
  return s;
}

static int set_grads(ms_ctx *ctx, const fwd *f, ms_tensor *const *theta, const double *dv,
                     ms_meta_out *out) {
  for (int j = 0; j < f->ntan; j++) {
    int i = f->where[j];
    int st = ms_tensor_full(ctx, ms_tensor_ndim(theta[i]), ms_tensor_shape(theta[i]), dv[j],
                            &out->grad[i]);
    if (st) return st;
  }
  return MS_OK;
}

static void first_status(ms_meta_out *out, int status, int64_t step) {
  if (out->status == MS_META_OK && status != MS_META_OK) {
    out->status = status;
    out->fail_step = step;
  }
}

/* The unroll and its meta-objective: value in *value, its tangents in dv[]; *fail_status and
 * *fail_step when a step's w or loss is not a faithful double (the run stops there). */
static int run(ms_ctx *ctx, const ms_meta_spec *spec, fwd *f, double *value, double *dv,
               int *fail_status, int64_t *fail_step) {
  ms_meta_kind kind = spec->meta.kind;
  int64_t T = spec->steps;
  int zero_fails = !spec->allow_zero_loss && (kind == MS_META_LOG || kind == MS_META_LOGSUM);
  int sum = kind == MS_META_SUM, logsum = kind == MS_META_LOGSUM;
  double l = NAN, dl[2] = {0, 0}, acc = 0, dacc[2] = {0, 0};
  ms_optim *opt = spec->optimizer;
  *fail_status = MS_META_OK;
  (void)loss_and_grad(f, dl); /* f(w_0) is not part of any meta-objective; g = grad f(w_0) */
  for (int64_t t = 1; t <= T; t++) {
    int st = ms_ctx_check_interrupt(ctx, "meta");
    double factor = 1.0;
    if (!st) st = ms_optim_factor(ctx, opt, t, &factor);
    if (st) return st;
    step(f, f->lr * factor, factor);
    int ws = w_status(f);
    if (ws == MS_META_OK) {
      l = loss_and_grad(f, dl);
      ws = loss_status(zero_fails, l);
    }
    if (ws != MS_META_OK) {
      *fail_status = ws;
      *fail_step = t;
      return MS_OK;
    }
    if (sum) {
      acc = t == 1 ? l : acc + l;
      for (int j = 0; j < f->ntan; j++) dacc[j] = t == 1 ? dl[j] : dacc[j] + dl[j];
    } else if (logsum) {
      /* s_1 = log l_1; s_t = logaddexp(s_{t-1}, log l_t) */
      double lt = log(l);
      if (t == 1) {
        acc = lt;
        for (int j = 0; j < f->ntan; j++) dacc[j] = dl[j] / l;
      } else {
        double mx = acc > lt ? acc : lt, ns = mx + log1p(exp(-fabs(acc - lt)));
        double wo = exp(acc - ns), wn = exp(lt - ns);
        for (int j = 0; j < f->ntan; j++) dacc[j] = dacc[j] * wo + dl[j] / l * wn;
        acc = ns;
      }
    }
  }
  if (sum) {
    *value = acc;
    for (int j = 0; j < f->ntan; j++) dv[j] = dacc[j];
  } else if (logsum) {
    *value = acc / (double)T;
    for (int j = 0; j < f->ntan; j++) dv[j] = dacc[j] / (double)T;
  } else if (kind == MS_META_LOG) {
    *value = log(l) / (double)T;
    for (int j = 0; j < f->ntan; j++) dv[j] = dl[j] / l / (double)T;
  } else {
    *value = l;
    for (int j = 0; j < f->ntan; j++) dv[j] = dl[j];
  }
  for (int j = 0; j < f->ntan; j++) dv[j] *= f->chain[j];
  return MS_OK;
}

int ms__meta_forward_fast(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                          ms_tensor *const *theta, const int *sel, ms_meta_out *out, int *handled) {
  fwd f;
  memset(&f, 0, sizeof f);
  int lr, beta, log_lr;
  ms_tensor *A = NULL, *ref = NULL, *hold = NULL;
  *handled = 0;
  if (!covers(ctx, spec, task, theta, sel, &lr, &beta, &log_lr)) return MS_OK;
  if (!objective_parts(ctx, task->objective, &f, &A, &ref)) return MS_OK;
  *handled = 1;
  ms_optim_kind kind = ms_optim_kind_of(spec->optimizer);
  f.mom = kind != MS_OPTIM_GD;
  f.nesterov = kind == MS_OPTIM_NESTEROV;
  f.d = ms_objective_dim(task->objective);
  f.n = f.ls ? ms_tensor_dim(A, 0) : 0;
  double th = ms_tensor_data(theta[lr])[0];
  f.lr = log_lr ? exp(th) : th;
  f.beta = beta >= 0 ? ms_tensor_data(theta[beta])[0] : 0.0;
  if (sel[lr]) {
    f.where[f.ntan] = lr;
    f.chain[f.ntan] = log_lr ? f.lr : 1.0;
    f.par[f.ntan++] = PAR_LR;
  }
  if (beta >= 0 && sel[beta]) {
    f.where[f.ntan] = beta;
    f.chain[f.ntan] = 1.0;
    f.par[f.ntan++] = PAR_BETA;
  }
  f.k = 1 + f.ntan;
  int st = ms_tensor_contiguous(ctx, A, &hold);
  if (!st) st = fwd_alloc(ctx, &f);
  if (st) goto out;
  f.A = ms_tensor_data(hold);
  if (ref) {
    f.ref = ms_tensor_data(ref);
    f.ref_stride = ms_tensor_strides(ref)[0];
  }
  f.sym = !f.ls && f.d >= MS_FUSED_SYM_MIN_DIM && ms__fused_is_symmetric(f.d, f.A, f.d);
  if (task->w0 && (st = ms_tensor_read(ctx, task->w0, f.w, f.d))) goto out;
  double value = NAN, dv[2] = {0, 0};
  int fail;
  int64_t fail_step = -1;
  if ((st = run(ctx, spec, &f, &value, dv, &fail, &fail_step))) goto out;
  if (fail) {
    /* as the generic path: value and gradients NaN, the status at the failing step */
    out->value = NAN;
    out->status = fail;
    out->fail_step = fail_step;
    for (int j = 0; j < f.ntan; j++) dv[j] = NAN;
    st = set_grads(ctx, &f, theta, dv, out);
    goto out;
  }
  out->value = value;
  if ((st = set_grads(ctx, &f, theta, dv, out))) goto out;
  int vs = isnan(value) ? MS_META_NAN : isinf(value) ? MS_META_OVERFLOW : MS_META_OK;
  if (value == -INFINITY && (spec->meta.kind == MS_META_LOG || spec->meta.kind == MS_META_LOGSUM))
    vs = spec->allow_zero_loss ? MS_META_OK : MS_META_UNDERFLOW;
  first_status(out, vs, spec->steps);
  for (int j = 0; j < f.ntan; j++)
    first_status(out,
                 isnan(dv[j])   ? MS_META_NAN
                 : isinf(dv[j]) ? MS_META_OVERFLOW
                                : MS_META_OK,
                 spec->steps);
out:
  if (f.buf) ms_ctx_dealloc(ctx, f.buf, f.bytes);
  ms_tensor_release(hold);
  if (st) ms_meta_out_clear(out);
  return st;
}
