/*
 * Objectives (objective.h): the checked call path around user callbacks, the derived
 * gradient (reverse over value) and Hessian-vector product (forward over grad), and
 * the built-in quadratic, least-squares and logistic objectives, their samples (grad_batch on
 * rows, subsets) and a quadratic's cached eigendecomposition (PSD check).
 *
 * The built-ins use only public differentiable operations, never raw loops over the
 * data, so a tape active around a call records every step (the engine's own derived
 * hvp relies on that too).
 */
#include "metastep/objective.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "meta_internal.h"
#include "metastep/autodiff.h"
#include "metastep/linalg.h"
#include "metastep/ops.h"

struct ms_objective {
  ms_ctx *ctx;
  int refcount;
  ms_objective_def def;
  char name[64];
  ms_objective_kind kind;
  /* a quadratic's eigendecomposition (ms_objective_quadratic_eigh), computed on first use and
   * again once H's storage version moved past eig_version (H written in place); eig_count
   * counts the decompositions (ms__objective_eigh_count) */
  ms_tensor *eig_val, *eig_vec;
  uint64_t eig_version;
  int64_t eig_count;
  /* ms_objective_check_psd passed for H at storage version psd_version (psd_ok) */
  int psd_ok;
  uint64_t psd_version;
};

/* ---- handles ---- */

int ms_objective_new(ms_ctx *ctx, const ms_objective_def *def, ms_objective **out) {
  *out = NULL;
  const char *name = def->name ? def->name : "objective";
  if (def->value == NULL)
    return ms_ctx_fail(ctx, MS_EARG, "%s: a value callback is required", name);
  if (def->dim < 1)
    return ms_ctx_fail(ctx, MS_EARG, "%s: dim must be >= 1, got %lld", name, (long long)def->dim);
  if (def->nsamples < 0)
    return ms_ctx_fail(ctx, MS_EARG, "%s: nsamples must be >= 0, got %lld", name,
                       (long long)def->nsamples);
  if (def->nsamples > 0 && def->grad_batch == NULL)
    return ms_ctx_fail(ctx, MS_EARG,
                       "%s: nsamples is %lld but grad_batch is NULL (set both or neither)", name,
                       (long long)def->nsamples);
  if (def->nsamples == 0 && def->grad_batch != NULL)
    return ms_ctx_fail(ctx, MS_EARG,
                       "%s: grad_batch is set but nsamples is 0 (set both or neither)", name);
  ms_objective *o = ms_ctx_alloc(ctx, sizeof *o);
  if (o == NULL) return MS_ENOMEM;
  o->ctx = ctx;
  o->refcount = 1;
  o->def = *def;
  o->kind = MS_OBJECTIVE_CUSTOM;
  o->eig_val = o->eig_vec = NULL;
  o->eig_version = 0;
  o->eig_count = 0;
  o->psd_ok = 0;
  o->psd_version = 0;
  snprintf(o->name, sizeof o->name, "%s", name);
  o->def.name = o->name;
  *out = o;
  return MS_OK;
}

ms_objective *ms_objective_retain(ms_objective *obj) {
  if (obj) obj->refcount++;
  return obj;
}

void ms_objective_release(ms_objective *obj) {
  if (obj == NULL || --obj->refcount > 0) return;
  if (obj->def.free_ud) obj->def.free_ud(obj->def.ud);
  ms_tensor_release(obj->eig_val);
  ms_tensor_release(obj->eig_vec);
  ms_ctx_dealloc(obj->ctx, obj, sizeof *obj);
}

const char *ms_objective_name(const ms_objective *obj) { return obj->name; }
int64_t ms_objective_dim(const ms_objective *obj) { return obj->def.dim; }
ms_objective_kind ms_objective_kind_of(const ms_objective *obj) { return obj->kind; }
int64_t ms_objective_nsamples(const ms_objective *obj) { return obj->def.nsamples; }

/* ---- the checked call path ---- */

/* w (or v) must be a vector of the objective's dimension. */
static int check_point(ms_ctx *ctx, const ms_objective *o, const char *arg, const ms_tensor *w) {
  char b[MS_SHAPE_STRLEN];
  if (w == NULL) return ms_ctx_fail(ctx, MS_EARG, "%s: %s is NULL", o->name, arg);
  if (ms_tensor_ndim(w) != 1 || ms_tensor_dim(w, 0) != o->def.dim)
    return ms_ctx_fail(ctx, MS_ESHAPE, "%s: %s has shape %s, expected [%lld]", o->name, arg,
                       ms_shape_str(ms_tensor_ndim(w), ms_tensor_shape(w), b, sizeof b),
                       (long long)o->def.dim);
  return MS_OK;
}

/*
 * Normalizes what a callback handed back: a failure keeps the callback's message (or
 * gets one naming the callback if it set none) and never leaks *t; success without a
 * tensor is MS_ECALLBACK.
 */
static int after_callback(ms_ctx *ctx, const ms_objective *o, const char *what, int st,
                          ms_tensor **t) {
  if (st != MS_OK) {
    ms_tensor_release(*t);
    *t = NULL;
    if (ms_ctx_status(ctx) == MS_OK || *ms_ctx_error(ctx) == '\0')
      ms_ctx_fail(ctx, st, "%s: %s callback failed (%s)", o->name, what, ms_status_name(st));
    return st;
  }
  if (*t == NULL) return ms_ctx_fail(ctx, MS_ECALLBACK, "%s: %s returned no tensor", o->name, what);
  return MS_OK;
}

/* *t must have shape [dim]; released on mismatch. */
static int check_vector_result(ms_ctx *ctx, const ms_objective *o, const char *what,
                               ms_tensor **t) {
  char b[MS_SHAPE_STRLEN];
  if (ms_tensor_ndim(*t) == 1 && ms_tensor_dim(*t, 0) == o->def.dim) return MS_OK;
  int st = ms_ctx_fail(ctx, MS_ESHAPE, "%s: %s returned shape %s, expected [%lld]", o->name, what,
                       ms_shape_str(ms_tensor_ndim(*t), ms_tensor_shape(*t), b, sizeof b),
                       (long long)o->def.dim);
  ms_tensor_release(*t);
  *t = NULL;
  return st;
}

static int call_value(ms_ctx *ctx, ms_objective *o, ms_tensor *w, ms_tensor **out) {
  char b[MS_SHAPE_STRLEN];
  ms_tensor *f = NULL;
  ms_ctx_clear_error(ctx);
  int st = after_callback(ctx, o, "value", o->def.value(ctx, o->def.ud, w, &f), &f);
  if (st) return st;
  if (ms_tensor_numel(f) != 1) {
    st = ms_ctx_fail(ctx, MS_ESHAPE, "%s: value returned shape %s, expected a scalar (0-d tensor)",
                     o->name, ms_shape_str(ms_tensor_ndim(f), ms_tensor_shape(f), b, sizeof b));
    ms_tensor_release(f);
    return st;
  }
  if (ms_tensor_ndim(f) == 0) {
    *out = f;
    return MS_OK;
  }
  /* a one-element [1] or [1,1]: hand out a 0-d view (differentiable like any reshape) */
  st = ms_tensor_reshape(ctx, f, 0, NULL, out);
  ms_tensor_release(f);
  return st;
}

/* Reverse mode over value: the gradient of one value call, recorded on the outer levels. */
static int derived_grad(ms_ctx *ctx, ms_objective *o, ms_tensor *w, ms_tensor **out) {
  ms_level *tape = NULL;
  ms_tensor *ww = NULL, *f = NULL;
  int st = ms_ad_push(ctx, MS_AD_REVERSE, &tape);
  if (st) return st;
  st = ms_ad_watch(ctx, tape, w, NULL, &ww);
  if (st == MS_OK) st = call_value(ctx, o, ww, &f);
  if (st == MS_OK) st = ms_ad_pop(ctx, tape); /* fails if value left a level of its own pushed */
  if (st == MS_OK) st = ms_ad_gradient(ctx, tape, f, NULL, 1, &ww, out);
  ms_tensor_release(f);
  ms_tensor_release(ww);
  ms_ad_free(tape); /* pops it (and anything a failed callback left above it) if still active */
  return st;
}

static int call_grad(ms_ctx *ctx, ms_objective *o, ms_tensor *w, ms_tensor **out) {
  int st;
  if (o->def.grad == NULL) {
    st = derived_grad(ctx, o, w, out);
  } else {
    ms_ctx_clear_error(ctx);
    st = after_callback(ctx, o, "grad", o->def.grad(ctx, o->def.ud, w, out), out);
  }
  if (st) return st;
  return check_vector_result(ctx, o, "grad", out);
}

/* Forward mode over grad: the tangent of grad(w) along v. */
static int derived_hvp(ms_ctx *ctx, ms_objective *o, ms_tensor *w, ms_tensor *v, ms_tensor **out) {
  ms_level *level = NULL;
  ms_tensor *wf = NULL, *g = NULL;
  int st = ms_ad_push(ctx, MS_AD_FORWARD, &level);
  if (st) return st;
  st = ms_ad_watch(ctx, level, w, v, &wf);
  if (st == MS_OK) st = call_grad(ctx, o, wf, &g);
  if (st == MS_OK) st = ms_ad_pop(ctx, level);
  if (st == MS_OK) st = ms_ad_tangent(ctx, level, g, out);
  ms_tensor_release(g);
  ms_tensor_release(wf);
  ms_ad_free(level);
  return st;
}

int ms_objective_value(ms_ctx *ctx, ms_objective *obj, ms_tensor *w, ms_tensor **out) {
  *out = NULL;
  int st = check_point(ctx, obj, "w", w);
  if (st) return st;
  return call_value(ctx, obj, w, out);
}

int ms_objective_grad(ms_ctx *ctx, ms_objective *obj, ms_tensor *w, ms_tensor **out) {
  *out = NULL;
  int st = check_point(ctx, obj, "w", w);
  if (st) return st;
  return call_grad(ctx, obj, w, out);
}

int ms_objective_hvp(ms_ctx *ctx, ms_objective *obj, ms_tensor *w, ms_tensor *v, ms_tensor **out) {
  *out = NULL;
  int st = check_point(ctx, obj, "w", w);
  if (st == MS_OK) st = check_point(ctx, obj, "v", v);
  if (st) return st;
  if (obj->def.hvp == NULL) {
    st = derived_hvp(ctx, obj, w, v, out);
  } else {
    ms_ctx_clear_error(ctx);
    st = after_callback(ctx, obj, "hvp", obj->def.hvp(ctx, obj->def.ud, w, v, out), out);
  }
  if (st) return st;
  return check_vector_result(ctx, obj, "hvp", out);
}

/* n >= 1 sample indices, each in [0, nsamples); `what` names the call in messages. */
static int check_indices(ms_ctx *ctx, const ms_objective *o, const char *what, int64_t n,
                         const int64_t *idx) {
  int64_t ns = o->def.nsamples;
  if (ns == 0)
    return ms_ctx_fail(ctx, MS_EARG, "%s.%s: the objective has no samples", o->name, what);
  if (n < 1)
    return ms_ctx_fail(ctx, MS_EARG, "%s.%s: needs at least one sample index, got n = %lld",
                       o->name, what, (long long)n);
  if (idx == NULL) return ms_ctx_fail(ctx, MS_EARG, "%s.%s: idx is NULL", o->name, what);
  for (int64_t k = 0; k < n; k++) {
    if (idx[k] < 0 || idx[k] >= ns)
      return ms_ctx_fail(ctx, MS_EINDEX, "%s.%s: sample index %lld out of range [0, %lld)", o->name,
                         what, (long long)idx[k], (long long)ns);
  }
  return MS_OK;
}

int ms_objective_grad_batch(ms_ctx *ctx, ms_objective *obj, ms_tensor *w, int64_t n,
                            const int64_t *idx, ms_tensor **out) {
  *out = NULL;
  int st = check_indices(ctx, obj, "grad_batch", n, idx);
  if (st == MS_OK) st = check_point(ctx, obj, "w", w);
  if (st) return st;
  ms_ctx_clear_error(ctx);
  st = after_callback(ctx, obj, "grad_batch", obj->def.grad_batch(ctx, obj->def.ud, w, n, idx, out),
                      out);
  if (st) return st;
  return check_vector_result(ctx, obj, "grad_batch", out);
}

/* ---- built-ins ---- */

/*
 * Shared state of the built-ins: a and b are the tensors (quadratic: H and w* or NULL;
 * least squares: X and y; logistic: X and the signs 1 - 2y), c a number (quadratic:
 * fstar; logistic: l2), n the number of rows.
 */
typedef struct builtin {
  ms_ctx *ctx;
  ms_tensor *a, *b;
  ms_tensor *y; /* logistic: the labels as given (for ms_objective_data_parts and subsets) */
  double c, n;
} builtin;

static void builtin_free(void *ud) {
  builtin *bi = ud;
  ms_tensor_release(bi->a);
  ms_tensor_release(bi->b);
  ms_tensor_release(bi->y);
  ms_ctx_dealloc(bi->ctx, bi, sizeof *bi);
}

typedef int (*grad_batch_fn)(ms_ctx *, void *, ms_tensor *, int64_t, const int64_t *, ms_tensor **);

/* Makes the objective; on failure releases bi (the caller's tensors go with it). */
static int builtin_new(ms_ctx *ctx, builtin *bi, ms_objective_kind kind, const char *name,
                       int64_t dim, int (*value)(ms_ctx *, void *, ms_tensor *, ms_tensor **),
                       int (*grad)(ms_ctx *, void *, ms_tensor *, ms_tensor **),
                       int (*hvp)(ms_ctx *, void *, ms_tensor *, ms_tensor *, ms_tensor **),
                       int64_t nsamples, grad_batch_fn grad_batch, ms_objective **out) {
  ms_objective_def def = {name, dim, value, grad, hvp, builtin_free, bi, nsamples, grad_batch};
  int st = ms_objective_new(ctx, &def, out);
  if (st) {
    builtin_free(bi);
    return st;
  }
  (*out)->kind = kind;
  return MS_OK;
}

static builtin *builtin_alloc(ms_ctx *ctx) {
  builtin *bi = ms_ctx_alloc(ctx, sizeof *bi);
  if (bi) {
    bi->ctx = ctx;
    bi->a = bi->b = bi->y = NULL;
    bi->c = bi->n = 0;
  }
  return bi;
}

#define TRY(call)                          \
  do {                                     \
    if ((st = (call)) != MS_OK) goto done; \
  } while (0)

/* The cleanup after `done:`: releases every temporary named. */
#define RELEASE(...)                        \
  release_all((ms_tensor *[]){__VA_ARGS__}, \
              sizeof((ms_tensor *[]){__VA_ARGS__}) / sizeof(ms_tensor *))

static inline void release_all(ms_tensor *const *ts, size_t n) {
  for (size_t i = 0; i < n; i++) ms_tensor_release(ts[i]);
}

/* Takes over *t as *out (for the last step of a computation). */
static void take(ms_tensor **out, ms_tensor **t) {
  *out = *t;
  *t = NULL;
}

/* t + s (s != 0) or t itself, as a new reference in *out; *t is consumed. */
static int add_scalar(ms_ctx *ctx, ms_tensor **t, double s, ms_tensor **out) {
  if (s == 0) {
    take(out, t);
    return MS_OK;
  }
  int st = ms_binary_scalar(ctx, MS_ADD, *t, s, 0, out);
  ms_tensor_release(*t);
  *t = NULL;
  return st;
}

/* ---- quadratic ---- */

static int quad_value(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  builtin *q = ud;
  ms_tensor *r = NULL, *hr = NULL, *d = NULL, *h = NULL;
  int st;
  if (q->b) {
    TRY(ms_binary(ctx, MS_SUB, w, q->b, &r));
  } else {
    r = ms_tensor_retain(w);
  }
  TRY(ms_matvec(ctx, q->a, r, &hr));
  TRY(ms_dot(ctx, r, hr, &d));
  TRY(ms_binary_scalar(ctx, MS_MUL, d, 0.5, 0, &h));
  st = add_scalar(ctx, &h, q->c, out);
done:
  RELEASE(r, hr, d, h);
  return st;
}

static int quad_grad(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  builtin *q = ud;
  if (q->b == NULL) return ms_matvec(ctx, q->a, w, out);
  ms_tensor *r = NULL;
  int st = ms_binary(ctx, MS_SUB, w, q->b, &r);
  if (st == MS_OK) st = ms_matvec(ctx, q->a, r, out);
  ms_tensor_release(r);
  return st;
}

static int quad_hvp(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor *v, ms_tensor **out) {
  builtin *q = ud;
  (void)w;
  return ms_matvec(ctx, q->a, v, out);
}

int ms_objective_quadratic(ms_ctx *ctx, const ms_tensor *H, const ms_tensor *wstar, double fstar,
                           ms_objective **out) {
  char b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
  *out = NULL;
  if (H == NULL) return ms_ctx_fail(ctx, MS_EARG, "quadratic: H is NULL");
  if (ms_tensor_ndim(H) != 2 || ms_tensor_dim(H, 0) != ms_tensor_dim(H, 1))
    return ms_ctx_fail(ctx, MS_ESHAPE, "quadratic: H must be a square matrix [d,d], got shape %s",
                       ms_shape_str(ms_tensor_ndim(H), ms_tensor_shape(H), b1, sizeof b1));
  int64_t d = ms_tensor_dim(H, 0);
  if (d < 1) return ms_ctx_fail(ctx, MS_ESHAPE, "quadratic: H must not be empty, got shape [0,0]");
  if (wstar && (ms_tensor_ndim(wstar) != 1 || ms_tensor_dim(wstar, 0) != d))
    return ms_ctx_fail(ctx, MS_ESHAPE, "quadratic: wstar has shape %s, expected [%lld] (H is %s)",
                       ms_shape_str(ms_tensor_ndim(wstar), ms_tensor_shape(wstar), b1, sizeof b1),
                       (long long)d, ms_shape_str(2, ms_tensor_shape(H), b2, sizeof b2));
  if (!isfinite(fstar))
    return ms_ctx_fail(ctx, MS_EARG, "quadratic: fstar must be finite, got %g", fstar);
  builtin *q = builtin_alloc(ctx);
  if (q == NULL) return MS_ENOMEM;
  q->c = fstar;
  q->n = (double)d;
  int st = ms_tensor_copy(ctx, H, &q->a);
  if (st == MS_OK && wstar) st = ms_tensor_copy(ctx, wstar, &q->b);
  if (st) {
    builtin_free(q);
    return st;
  }
  /* the copies are contiguous: check finiteness and symmetry on the raw data */
  const double *h = ms_tensor_data(q->a);
  double scale = 0;
  for (int64_t i = 0; i < d * d; i++) {
    if (!isfinite(h[i])) {
      double bad = h[i];
      builtin_free(q);
      return ms_ctx_fail(ctx, MS_EARG,
                         "quadratic: H must be finite, got H[%lld,%lld] = %g (0-based)",
                         (long long)(i / d), (long long)(i % d), bad);
    }
    if (fabs(h[i]) > scale) scale = fabs(h[i]);
  }
  double tol = 1e-10 * scale;
  for (int64_t i = 0; i < d; i++) {
    for (int64_t j = i + 1; j < d; j++) {
      double hij = h[i * d + j], hji = h[j * d + i];
      if (fabs(hij - hji) > tol) {
        builtin_free(q);
        return ms_ctx_fail(ctx, MS_EARG,
                           "quadratic: H must be symmetric, got H[%lld,%lld] = %.16g and "
                           "H[%lld,%lld] = %.16g (0-based; tolerance 1e-10 * max|H| = %g)",
                           (long long)i, (long long)j, hij, (long long)j, (long long)i, hji, tol);
      }
    }
  }
  if (q->b) {
    const double *ws = ms_tensor_data(q->b);
    for (int64_t i = 0; i < d; i++) {
      if (!isfinite(ws[i])) {
        double bad = ws[i];
        builtin_free(q);
        return ms_ctx_fail(ctx, MS_EARG,
                           "quadratic: wstar must be finite, got wstar[%lld] = %g (0-based)",
                           (long long)i, bad);
      }
    }
  }
  return builtin_new(ctx, q, MS_OBJECTIVE_QUADRATIC, "quadratic", d, quad_value, quad_grad,
                     quad_hvp, 0, NULL, out);
}

int ms_objective_quadratic_parts(const ms_objective *obj, ms_tensor **H, ms_tensor **wstar,
                                 double *fstar) {
  if (obj->kind != MS_OBJECTIVE_QUADRATIC)
    return ms_ctx_fail(obj->ctx, MS_EARG, "quadratic_parts: objective '%s' is not a quadratic",
                       obj->name);
  const builtin *q = obj->def.ud;
  if (H) *H = q->a;
  if (wstar) *wstar = q->b;
  if (fstar) *fstar = q->c;
  return MS_OK;
}

/* ---- data objectives: shared argument checks ---- */

/* X: [n,d], n, d >= 1; y: [n]. */
static int check_data(ms_ctx *ctx, const char *name, const ms_tensor *X, const ms_tensor *y) {
  char b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
  if (X == NULL) return ms_ctx_fail(ctx, MS_EARG, "%s: X is NULL", name);
  if (y == NULL) return ms_ctx_fail(ctx, MS_EARG, "%s: y is NULL", name);
  if (ms_tensor_ndim(X) != 2)
    return ms_ctx_fail(ctx, MS_ESHAPE, "%s: X must be a matrix [n,d], got shape %s", name,
                       ms_shape_str(ms_tensor_ndim(X), ms_tensor_shape(X), b1, sizeof b1));
  if (ms_tensor_dim(X, 0) < 1 || ms_tensor_dim(X, 1) < 1)
    return ms_ctx_fail(ctx, MS_ESHAPE,
                       "%s: X must have at least one row and one column, got shape %s", name,
                       ms_shape_str(2, ms_tensor_shape(X), b1, sizeof b1));
  if (ms_tensor_ndim(y) != 1 || ms_tensor_dim(y, 0) != ms_tensor_dim(X, 0))
    return ms_ctx_fail(
        ctx, MS_ESHAPE, "%s: y has shape %s, expected [%lld] (one entry per row of X %s)", name,
        ms_shape_str(ms_tensor_ndim(y), ms_tensor_shape(y), b1, sizeof b1),
        (long long)ms_tensor_dim(X, 0), ms_shape_str(2, ms_tensor_shape(X), b2, sizeof b2));
  return MS_OK;
}

/*
 * The rows idx[0..m-1] of the contiguous matrix X ([n,d]) into *Xb ([m,d]), and the entries
 * idx of the contiguous vector v ([n]) into *vb ([m]): fresh tensors no level tracks (the
 * data of a batch are constants). The indices were checked by the caller.
 */
static int gather(ms_ctx *ctx, const ms_tensor *X, const ms_tensor *v, int64_t m,
                  const int64_t *idx, ms_tensor **Xb, ms_tensor **vb) {
  *Xb = *vb = NULL;
  int64_t d = ms_tensor_dim(X, 1);
  int64_t xs[2] = {m, d};
  int st = ms_tensor_empty(ctx, 2, xs, Xb);
  if (st == MS_OK) st = ms_tensor_empty(ctx, 1, &m, vb);
  if (st) {
    ms_tensor_release(*Xb);
    *Xb = NULL;
    return st;
  }
  const double *x = ms_tensor_data(X), *vv = ms_tensor_data(v);
  double *xo = ms_tensor_data(*Xb), *vo = ms_tensor_data(*vb);
  for (int64_t k = 0; k < m; k++) {
    memcpy(xo + k * d, x + idx[k] * d, (size_t)d * sizeof *x);
    vo[k] = vv[idx[k]];
  }
  return MS_OK;
}

/*
 * grad_batch of a data objective: its grad on a temporary builtin holding the rows idx
 * (the signs 1 - 2y for logistic, whose b holds them); the same engine ops as the full
 * gradient, so differentiable in w.
 */
static int batch_grad(ms_ctx *ctx, builtin *bi, ms_tensor *w, int64_t m, const int64_t *idx,
                      int (*grad)(ms_ctx *, void *, ms_tensor *, ms_tensor **), ms_tensor **out) {
  builtin tmp = *bi;
  tmp.y = NULL;
  tmp.n = (double)m;
  int st = gather(ctx, bi->a, bi->b, m, idx, &tmp.a, &tmp.b);
  if (st == MS_OK) st = grad(ctx, &tmp, w, out);
  ms_tensor_release(tmp.a);
  ms_tensor_release(tmp.b);
  return st;
}

/* ---- least squares ---- */

/* X w - y */
static int ls_residual(ms_ctx *ctx, builtin *ls, ms_tensor *w, ms_tensor **out) {
  ms_tensor *xw = NULL;
  int st = ms_matvec(ctx, ls->a, w, &xw);
  if (st == MS_OK) st = ms_binary(ctx, MS_SUB, xw, ls->b, out);
  ms_tensor_release(xw);
  return st;
}

/* X^T u / n, as u^T X (a vector-matrix product: no transposed copy of X) */
static int xt_mean(ms_ctx *ctx, builtin *bi, ms_tensor *u, ms_tensor **out) {
  ms_tensor *s = NULL;
  int st = ms_matmul(ctx, u, bi->a, &s);
  if (st == MS_OK) st = ms_binary_scalar(ctx, MS_DIV, s, bi->n, 0, out);
  ms_tensor_release(s);
  return st;
}

static int ls_value(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  builtin *ls = ud;
  ms_tensor *r = NULL, *rr = NULL;
  int st;
  TRY(ls_residual(ctx, ls, w, &r));
  TRY(ms_dot(ctx, r, r, &rr));
  st = ms_binary_scalar(ctx, MS_DIV, rr, 2 * ls->n, 0, out);
done:
  RELEASE(r, rr);
  return st;
}

static int ls_grad(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  builtin *ls = ud;
  ms_tensor *r = NULL;
  int st = ls_residual(ctx, ls, w, &r);
  if (st == MS_OK) st = xt_mean(ctx, ls, r, out);
  ms_tensor_release(r);
  return st;
}

static int ls_hvp(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor *v, ms_tensor **out) {
  builtin *ls = ud;
  ms_tensor *xv = NULL;
  (void)w;
  int st = ms_matvec(ctx, ls->a, v, &xv);
  if (st == MS_OK) st = xt_mean(ctx, ls, xv, out);
  ms_tensor_release(xv);
  return st;
}

static int ls_grad_batch(ms_ctx *ctx, void *ud, ms_tensor *w, int64_t m, const int64_t *idx,
                         ms_tensor **out) {
  return batch_grad(ctx, ud, w, m, idx, ls_grad, out);
}

int ms_objective_least_squares(ms_ctx *ctx, const ms_tensor *X, const ms_tensor *y,
                               ms_objective **out) {
  *out = NULL;
  int st = check_data(ctx, "least_squares", X, y);
  if (st) return st;
  builtin *ls = builtin_alloc(ctx);
  if (ls == NULL) return MS_ENOMEM;
  ls->n = (double)ms_tensor_dim(X, 0);
  st = ms_tensor_copy(ctx, X, &ls->a);
  if (st == MS_OK) st = ms_tensor_copy(ctx, y, &ls->b);
  if (st) {
    builtin_free(ls);
    return st;
  }
  return builtin_new(ctx, ls, MS_OBJECTIVE_LEAST_SQUARES, "least_squares", ms_tensor_dim(X, 1),
                     ls_value, ls_grad, ls_hvp, ms_tensor_dim(X, 0), ls_grad_batch, out);
}

/* ---- logistic regression ---- */

/* u = (1 - 2y) * X w: minus the margins, so the loss of row i is softplus(u_i). */
static int lg_negmargin(ms_ctx *ctx, builtin *lg, ms_tensor *w, ms_tensor **out) {
  ms_tensor *z = NULL;
  int st = ms_matvec(ctx, lg->a, w, &z);
  if (st == MS_OK) st = ms_binary(ctx, MS_MUL, lg->b, z, out);
  ms_tensor_release(z);
  return st;
}

/* *acc + l2 * w (or *acc when l2 == 0); *acc is consumed. */
static int add_ridge(ms_ctx *ctx, builtin *lg, ms_tensor **acc, ms_tensor *w, ms_tensor **out) {
  if (lg->c == 0) {
    take(out, acc);
    return MS_OK;
  }
  ms_tensor *rw = NULL;
  int st = ms_binary_scalar(ctx, MS_MUL, w, lg->c, 0, &rw);
  if (st == MS_OK) st = ms_binary(ctx, MS_ADD, *acc, rw, out);
  ms_tensor_release(rw);
  ms_tensor_release(*acc);
  *acc = NULL;
  return st;
}

static int lg_value(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  builtin *lg = ud;
  ms_tensor *u = NULL, *sp = NULL, *m = NULL, *ww = NULL, *reg = NULL;
  int st;
  TRY(lg_negmargin(ctx, lg, w, &u));
  TRY(ms_unary(ctx, MS_SOFTPLUS, u, &sp));
  TRY(ms_reduce(ctx, MS_MEAN, sp, MS_ALL, 0, &m));
  if (lg->c == 0) {
    take(out, &m);
  } else {
    TRY(ms_dot(ctx, w, w, &ww));
    TRY(ms_binary_scalar(ctx, MS_MUL, ww, 0.5 * lg->c, 0, &reg));
    TRY(ms_binary(ctx, MS_ADD, m, reg, out));
  }
done:
  RELEASE(u, sp, m, ww, reg);
  return st;
}

static int lg_grad(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  builtin *lg = ud;
  ms_tensor *u = NULL, *p = NULL, *c = NULL, *g = NULL;
  int st;
  /* d softplus(u_i) / d(x_i^T w) = sigmoid(u_i) (1 - 2 y_i) */
  TRY(lg_negmargin(ctx, lg, w, &u));
  TRY(ms_unary(ctx, MS_SIGMOID, u, &p));
  TRY(ms_binary(ctx, MS_MUL, p, lg->b, &c));
  TRY(xt_mean(ctx, lg, c, &g));
  st = add_ridge(ctx, lg, &g, w, out);
done:
  RELEASE(u, p, c, g);
  return st;
}

static int lg_hvp(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor *v, ms_tensor **out) {
  builtin *lg = ud;
  ms_tensor *u = NULL, *nu = NULL, *p = NULL, *q = NULL, *a = NULL, *xv = NULL, *t = NULL,
            *g = NULL;
  int st;
  /* p (1 - p) = sigmoid(u) sigmoid(-u): a product of two sigmoids, no cancellation */
  TRY(lg_negmargin(ctx, lg, w, &u));
  TRY(ms_unary(ctx, MS_NEG, u, &nu));
  TRY(ms_unary(ctx, MS_SIGMOID, u, &p));
  TRY(ms_unary(ctx, MS_SIGMOID, nu, &q));
  TRY(ms_binary(ctx, MS_MUL, p, q, &a));
  TRY(ms_matvec(ctx, lg->a, v, &xv));
  TRY(ms_binary(ctx, MS_MUL, a, xv, &t));
  TRY(xt_mean(ctx, lg, t, &g));
  st = add_ridge(ctx, lg, &g, v, out);
done:
  RELEASE(u, nu, p, q, a, xv, t, g);
  return st;
}

static int lg_grad_batch(ms_ctx *ctx, void *ud, ms_tensor *w, int64_t m, const int64_t *idx,
                         ms_tensor **out) {
  return batch_grad(ctx, ud, w, m, idx, lg_grad, out);
}

int ms_objective_logistic(ms_ctx *ctx, const ms_tensor *X, const ms_tensor *y, double l2,
                          ms_objective **out) {
  *out = NULL;
  int st = check_data(ctx, "logistic", X, y);
  if (st) return st;
  if (!(l2 >= 0) || !isfinite(l2))
    return ms_ctx_fail(ctx, MS_EARG, "logistic: l2 must be finite and >= 0, got %g", l2);
  builtin *lg = builtin_alloc(ctx);
  if (lg == NULL) return MS_ENOMEM;
  lg->n = (double)ms_tensor_dim(X, 0);
  lg->c = l2;
  ms_tensor *yc = NULL, *t = NULL;
  st = ms_tensor_copy(ctx, X, &lg->a);
  if (st == MS_OK) st = ms_tensor_copy(ctx, y, &yc);
  if (st == MS_OK) {
    const double *yd = ms_tensor_data(yc);
    for (int64_t i = 0; i < ms_tensor_numel(yc); i++) {
      if (yd[i] != 0 && yd[i] != 1) {
        st = ms_ctx_fail(ctx, MS_EARG,
                         "logistic: y must hold labels 0 or 1, got y[%lld] = %g (0-based)",
                         (long long)i, yd[i]);
        break;
      }
    }
  }
  /* the signs 1 - 2y: -1 for label 1, +1 for label 0 */
  if (st == MS_OK) st = ms_binary_scalar(ctx, MS_MUL, yc, -2.0, 0, &t);
  if (st == MS_OK) st = ms_binary_scalar(ctx, MS_ADD, t, 1.0, 0, &lg->b);
  lg->y = yc; /* kept: the labels, for data_parts and subsets */
  ms_tensor_release(t);
  if (st) {
    builtin_free(lg);
    return st;
  }
  return builtin_new(ctx, lg, MS_OBJECTIVE_LOGISTIC, "logistic", ms_tensor_dim(X, 1), lg_value,
                     lg_grad, lg_hvp, ms_tensor_dim(X, 0), lg_grad_batch, out);
}

/* ---- data parts, subsets ---- */

static int is_data(const ms_objective *obj) {
  return obj->kind == MS_OBJECTIVE_LEAST_SQUARES || obj->kind == MS_OBJECTIVE_LOGISTIC;
}

int ms_objective_data_parts(const ms_objective *obj, ms_tensor **X, ms_tensor **y, double *l2) {
  if (!is_data(obj))
    return ms_ctx_fail(obj->ctx, MS_EARG,
                       "data_parts: objective '%s' is not a least-squares or logistic objective",
                       obj->name);
  const builtin *bi = obj->def.ud;
  if (X) *X = bi->a;
  if (y) *y = obj->kind == MS_OBJECTIVE_LOGISTIC ? bi->y : bi->b;
  if (l2) *l2 = obj->kind == MS_OBJECTIVE_LOGISTIC ? bi->c : 0.0;
  return MS_OK;
}

int ms_objective_subset(ms_ctx *ctx, const ms_objective *obj, int64_t n, const int64_t *idx,
                        ms_objective **out) {
  *out = NULL;
  if (!is_data(obj))
    return ms_ctx_fail(ctx, MS_EARG,
                       "subset: objective '%s' is not a least-squares or logistic objective",
                       obj->name);
  int st = check_indices(ctx, obj, "subset", n, idx);
  if (st) return st;
  const builtin *bi = obj->def.ud;
  int logistic = obj->kind == MS_OBJECTIVE_LOGISTIC;
  ms_tensor *Xb = NULL, *yb = NULL;
  st = gather(ctx, bi->a, logistic ? bi->y : bi->b, n, idx, &Xb, &yb);
  if (st == MS_OK) {
    st = logistic ? ms_objective_logistic(ctx, Xb, yb, bi->c, out)
                  : ms_objective_least_squares(ctx, Xb, yb, out);
  }
  ms_tensor_release(Xb);
  ms_tensor_release(yb);
  return st;
}

/* ---- spectrum of a quadratic ---- */

int ms_objective_quadratic_eigh(ms_ctx *ctx, ms_objective *obj, ms_tensor **lambda, ms_tensor **Q) {
  if (lambda) *lambda = NULL;
  if (Q) *Q = NULL;
  if (obj->kind != MS_OBJECTIVE_QUADRATIC)
    return ms_ctx_fail(ctx, MS_EARG, "quadratic_eigh: objective '%s' is not a quadratic",
                       obj->name);
  const builtin *q = obj->def.ud;
  uint64_t version = ms_tensor_version(q->a);
  if (obj->eig_val == NULL || obj->eig_version != version) {
    /* H may be tracked (copied from a tracked argument while a level was active): the
     * spectrum is a constant, taken from an untracked copy */
    ms_tensor *h = NULL, *val = NULL, *vec = NULL;
    int st = ms_stop_gradient(ctx, q->a, &h);
    if (st == MS_OK) st = ms_eigh(ctx, h, &val, &vec);
    ms_tensor_release(h);
    if (st) return st;
    ms_tensor_release(obj->eig_val);
    ms_tensor_release(obj->eig_vec);
    obj->eig_val = val;
    obj->eig_vec = vec;
    obj->eig_version = version;
    obj->eig_count++;
  }
  if (lambda) *lambda = obj->eig_val;
  if (Q) *Q = obj->eig_vec;
  return MS_OK;
}

int64_t ms__objective_eigh_count(const ms_objective *obj) { return obj->eig_count; }

int ms_objective_check_psd(ms_ctx *ctx, ms_objective *obj, const char *what) {
  if (what == NULL) what = "check_psd";
  if (obj->kind == MS_OBJECTIVE_LEAST_SQUARES) return MS_OK; /* X^T X / n */
  if (obj->kind != MS_OBJECTIVE_QUADRATIC)
    return ms_ctx_fail(ctx, MS_EARG, "%s: needs a quadratic or least-squares objective, got %s",
                       what, obj->name);
  const builtin *q = obj->def.ud;
  uint64_t version = ms_tensor_version(q->a);
  if (obj->psd_ok && obj->psd_version == version) return MS_OK;
  int st = MS_OK;
  if (obj->eig_val == NULL || obj->eig_version != version) {
    /* No spectrum yet: a Cholesky factorization of H + tau I, tau = 1e-12 max(1, max_i H_ii),
     * costs a sixth of the eigenvalues or less (d^3/3 flops; at d = 4000 a second or two instead
     * of half a minute). H PSD makes it succeed: tau is at most the eigenvalue tolerance below,
     * as the largest eigenvalue is at least max_i H_ii. When it fails, the eigenvalues decide and
     * give the message. */
    ms_tensor *h = NULL, *c = NULL, *l = NULL;
    st = ms_stop_gradient(ctx, q->a, &h);
    if (st == MS_OK) st = ms_tensor_copy(ctx, h, &c);
    if (st == MS_OK) {
      int64_t d = ms_tensor_shape(c)[0];
      double *a = ms_tensor_data(c), dmax = 1.0;
      for (int64_t i = 0; i < d; i++) dmax = fmax(dmax, a[i * d + i]);
      for (int64_t i = 0; i < d; i++) a[i * d + i] += 1e-12 * dmax;
      st = ms_cholesky(ctx, c, &l);
    }
    ms_tensor_release(h);
    ms_tensor_release(c);
    ms_tensor_release(l);
    if (st == MS_OK) {
      obj->psd_ok = 1;
      obj->psd_version = version;
      return MS_OK;
    }
    if (st != MS_ENUMERIC) return st;
  }
  ms_tensor *lam = NULL;
  st = ms_objective_quadratic_eigh(ctx, obj, &lam, NULL);
  if (st) return st;
  const double *l = ms_tensor_data(lam);
  double lo = l[0], hi = l[ms_tensor_numel(lam) - 1];
  if (lo < -1e-12 * fmax(1.0, fabs(hi)))
    return ms_ctx_fail(ctx, MS_EARG,
                       "%s: needs a positive semi-definite H (smallest eigenvalue %g, largest %g)",
                       what, lo, hi);
  obj->psd_ok = 1;
  obj->psd_version = version;
  return MS_OK;
}
