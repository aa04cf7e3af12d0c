/* Tensors: refcounted views onto refcounted storage; construction, views, element access. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "kernels.h"

/* Largest element count we accept: keeps numel * sizeof(double) far from overflow. */
#define MS_MAX_NUMEL ((int64_t)1 << 50)

char *ms_shape_str(int ndim, const int64_t *shape, char *buf, size_t size) {
  size_t used = 0;
  if (size == 0) return buf;
  buf[0] = '\0';
  used += (size_t)snprintf(buf, size, "[");
  for (int i = 0; i < ndim && used < size; i++)
    used += (size_t)snprintf(buf + used, size - used, i ? ",%lld" : "%lld", (long long)shape[i]);
  if (used < size) snprintf(buf + used, size - used, "]");
  return buf;
}

/*
 * The one check of shape arithmetic, called wherever a shape is made (construction, views,
 * reshape, expand, broadcasting, cat). Every size must be >= 0 and the product of the
 * NONZERO sizes at most MS_MAX_NUMEL: then numel, every contiguous stride, every offset
 * and numel * sizeof(double) fit their types. Zero sizes are left out of the product on
 * purpose: [0, 2^62, 2] holds no element, yet its contiguous strides (2^63, 2, 1) overflow,
 * and a later expand, permute or cat computes with the other sizes too.
 */
int ms__shape_numel(ms_ctx *ctx, const char *what, int ndim, const int64_t *shape, int64_t *numel) {
  if (ndim < 0 || ndim > MS_MAXDIM)
    return ms_ctx_fail(ctx, MS_EARG, "%s: expected at most %d dimensions, got %d", what, MS_MAXDIM,
                       ndim);
  int64_t extent = 1, n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0)
      return ms_ctx_fail(ctx, MS_EARG, "%s: size %lld of dimension %d is negative", what,
                         (long long)shape[i], i + 1);
    if (shape[i] > 0 && extent > MS_MAX_NUMEL / shape[i]) {
      char b[MS_SHAPE_STRLEN];
      ms_shape_str(ndim, shape, b, sizeof b);
      if (n == 0)
        return ms_ctx_fail(ctx, MS_EARG,
                           "%s: shape %s is too large (its nonzero sizes multiply to more than "
                           "2^50)",
                           what, b);
      return ms_ctx_fail(ctx, MS_EARG, "%s: shape %s has more than 2^50 elements", what, b);
    }
    if (shape[i] > 0) extent *= shape[i];
    n = shape[i] == 0 ? 0 : n * shape[i]; /* <= extent: cannot overflow */
  }
  if (numel) *numel = n;
  return MS_OK;
}

int ms__axis(ms_ctx *ctx, const char *what, int axis, int ndim, int *out) {
  int a = axis < 0 ? axis + ndim : axis;
  if (a < 0 || a >= ndim)
    return ms_ctx_fail(ctx, MS_EINDEX, "%s: axis %d out of range for %d-d tensor", what, axis,
                       ndim);
  *out = a;
  return MS_OK;
}

static void contiguous_strides(int ndim, const int64_t *shape, int64_t *strides) {
  int64_t s = 1;
  for (int i = ndim - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i] > 0 ? shape[i] : 1;
  }
}

static ms_tensor *header_new(ms_ctx *ctx) {
  ms_tensor *t = ms_ctx_alloc(ctx, sizeof(ms_tensor));
  if (t == NULL) return NULL;
  /* the tracking entries (most of the header) are only read below ntrack: leave them */
  memset(t, 0, offsetof(ms_tensor, track));
  t->ctx = ctx;
  t->refcount = 1;
  return t;
}

/* A contiguous tensor over new storage of n = numel(shape) doubles (checked by the caller):
 * owned (allocated after the header) when data is NULL, else the host's memory at data. */
static int tensor_new(ms_ctx *ctx, double *data, int ndim, const int64_t *shape, int64_t n,
                      ms_tensor **out) {
  size_t bytes = sizeof(ms_storage) + (data ? 0 : (size_t)n * sizeof(double));
  ms_storage *s = ms_ctx_alloc(ctx, bytes);
  if (s == NULL) return MS_ENOMEM;
  s->ctx = ctx;
  s->refcount = 1;
  s->version = 0;
  s->n = n;
  s->data = data ? data : (double *)(s + 1);
  s->external = data != NULL;
  ms_tensor *t = header_new(ctx);
  if (t == NULL) {
    ms_ctx_dealloc(ctx, s, bytes);
    return MS_ENOMEM;
  }
  t->st = s;
  t->ndim = ndim;
  t->numel = n;
  if (ndim > 0) memcpy(t->shape, shape, (size_t)ndim * sizeof(int64_t));
  contiguous_strides(ndim, shape, t->strides);
  *out = t;
  return MS_OK;
}

int ms__tensor_alloc(ms_ctx *ctx, int ndim, const int64_t *shape, ms_tensor **out) {
  *out = NULL;
  int64_t n = 0;
  int st = ms__shape_numel(ctx, "tensor", ndim, shape, &n);
  return st ? st : tensor_new(ctx, NULL, ndim, shape, n, out);
}

int ms_tensor_wrap(ms_ctx *ctx, double *data, int ndim, const int64_t *shape, ms_tensor **out) {
  *out = NULL;
  int64_t n = 0;
  int st = ms__shape_numel(ctx, "ms_tensor_wrap", ndim, shape, &n);
  if (st) return st;
  if (data == NULL && n > 0)
    return ms_ctx_fail(ctx, MS_EARG, "ms_tensor_wrap: data is NULL for %lld elements",
                       (long long)n);
  return tensor_new(ctx, data, ndim, shape, n, out);
}

void ms_tensor_touch(ms_tensor *t) { ms__tensor_touch(t); }

int ms__tensor_view(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape,
                    const int64_t *strides, int64_t offset, ms_tensor **out) {
  *out = NULL;
  int64_t n = 0;
  /* views keep the invariant of ms__shape_numel: an expand can grow the sizes */
  int st = ms__shape_numel(ctx, "view", ndim, shape, &n);
  if (st) return st;
  ms_tensor *v = header_new(ctx);
  if (v == NULL) return MS_ENOMEM;
  v->st = t->st;
  v->st->refcount++;
  v->offset = offset;
  v->ndim = ndim;
  v->numel = n;
  v->readonly = t->readonly;
  if (ndim > 0) {
    memcpy(v->shape, shape, (size_t)ndim * sizeof(int64_t));
    memcpy(v->strides, strides, (size_t)ndim * sizeof(int64_t));
  }
  *out = v;
  return MS_OK;
}

void ms__tensor_touch(ms_tensor *t) { t->st->version++; }

int64_t ms__offset_of(const ms_tensor *t, int64_t i) {
  int64_t off = 0;
  for (int d = t->ndim - 1; d >= 0; d--) {
    int64_t n = t->shape[d];
    off += (i % n) * t->strides[d];
    i /= n;
  }
  return off;
}

/* ---- references and inspection ---- */

ms_tensor *ms_tensor_retain(ms_tensor *t) {
  if (t) t->refcount++;
  return t;
}

void ms_tensor_release(ms_tensor *t) {
  if (t == NULL || --t->refcount > 0) return;
  ms_ctx *ctx = t->ctx;
  ms_storage *s = t->st;
  if (t->ntrack) ms__track_clear(t);
  if (--s->refcount == 0)
    ms_ctx_dealloc(ctx, s, sizeof(ms_storage) + (s->external ? 0 : (size_t)s->n * sizeof(double)));
  ms_ctx_dealloc(ctx, t, sizeof(ms_tensor));
}

int ms_tensor_ndim(const ms_tensor *t) { return t->ndim; }
int64_t ms_tensor_dim(const ms_tensor *t, int axis) { return t->shape[axis]; }
const int64_t *ms_tensor_shape(const ms_tensor *t) { return t->shape; }
const int64_t *ms_tensor_strides(const ms_tensor *t) { return t->strides; }
int64_t ms_tensor_numel(const ms_tensor *t) { return t->numel; }
ms_ctx *ms_tensor_ctx(const ms_tensor *t) { return t->ctx; }
double *ms_tensor_data(const ms_tensor *t) { return MS_TENSOR_DATA(t); }
uint64_t ms_tensor_version(const ms_tensor *t) { return t->st->version; }
int ms_tensor_shares_storage(const ms_tensor *a, const ms_tensor *b) { return a->st == b->st; }

int ms_tensor_is_contiguous(const ms_tensor *t) {
  /* No elements, no layout: fresh [3,0] tensors have strides {1,1} and must count as contiguous. */
  if (t->numel == 0) return 1;
  int64_t s = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    if (t->shape[d] != 1 && t->strides[d] != s) return 0;
    s *= t->shape[d];
  }
  return 1;
}

/* ---- construction ---- */

int ms_tensor_empty(ms_ctx *ctx, int ndim, const int64_t *shape, ms_tensor **out) {
  return ms__tensor_alloc(ctx, ndim, shape, out);
}

int ms_tensor_full(ms_ctx *ctx, int ndim, const int64_t *shape, double value, ms_tensor **out) {
  int st = ms__tensor_alloc(ctx, ndim, shape, out);
  if (st) return st;
  double *p = MS_TENSOR_DATA(*out);
  for (int64_t i = 0; i < (*out)->numel; i++) p[i] = value;
  return MS_OK;
}

int ms_tensor_zeros(ms_ctx *ctx, int ndim, const int64_t *shape, ms_tensor **out) {
  return ms_tensor_full(ctx, ndim, shape, 0.0, out);
}

int ms_tensor_ones(ms_ctx *ctx, int ndim, const int64_t *shape, ms_tensor **out) {
  return ms_tensor_full(ctx, ndim, shape, 1.0, out);
}

int ms_tensor_scalar(ms_ctx *ctx, double value, ms_tensor **out) {
  return ms_tensor_full(ctx, 0, NULL, value, out);
}

int ms_tensor_from_data(ms_ctx *ctx, int ndim, const int64_t *shape, const double *data,
                        ms_tensor **out) {
  int st = ms__tensor_alloc(ctx, ndim, shape, out);
  if (st) return st;
  if ((*out)->numel > 0) memcpy(MS_TENSOR_DATA(*out), data, (size_t)(*out)->numel * sizeof(double));
  return MS_OK;
}

int ms_tensor_eye(ms_ctx *ctx, int64_t n, int64_t m, ms_tensor **out) {
  *out = NULL;
  if (m < 0) m = n;
  if (n < 0) return ms_ctx_fail(ctx, MS_EARG, "eye: size %lld is negative", (long long)n);
  int64_t shape[2] = {n, m};
  int st = ms_tensor_zeros(ctx, 2, shape, out);
  if (st) return st;
  double *p = MS_TENSOR_DATA(*out);
  for (int64_t i = 0; i < n && i < m; i++) p[i * m + i] = 1.0;
  return MS_OK;
}

int ms__diag(ms_ctx *ctx, const ms_tensor *t, ms_tensor **out) {
  *out = NULL;
  const double *src = MS_TENSOR_DATA(t);
  if (t->ndim == 1) {
    int64_t n = t->shape[0], shape[2] = {n, n};
    int st = ms_tensor_zeros(ctx, 2, shape, out);
    if (st) return st;
    double *p = MS_TENSOR_DATA(*out);
    for (int64_t i = 0; i < n; i++) p[i * n + i] = src[i * t->strides[0]];
    return MS_OK;
  }
  if (t->ndim == 2) {
    int64_t k = t->shape[0] < t->shape[1] ? t->shape[0] : t->shape[1];
    int st = ms__tensor_alloc(ctx, 1, &k, out);
    if (st) return st;
    double *p = MS_TENSOR_DATA(*out);
    for (int64_t i = 0; i < k; i++) p[i] = src[i * (t->strides[0] + t->strides[1])];
    return MS_OK;
  }
  char b[MS_SHAPE_STRLEN];
  return ms_ctx_fail(ctx, MS_ESHAPE, "diag: expected a vector or a matrix, got shape %s",
                     ms_shape_str(t->ndim, t->shape, b, sizeof b));
}

int ms_tensor_arange(ms_ctx *ctx, double start, double stop, double step, ms_tensor **out) {
  *out = NULL;
  if (!isfinite(start) || !isfinite(stop) || !isfinite(step))
    return ms_ctx_fail(ctx, MS_EARG, "arange: start, stop and step must be finite (got %g, %g, %g)",
                       start, stop, step);
  if (step == 0) return ms_ctx_fail(ctx, MS_EARG, "arange: step must be nonzero");
  double span = ceil((stop - start) / step);
  if (span > (double)MS_MAX_NUMEL)
    return ms_ctx_fail(ctx, MS_EARG, "arange: %g elements is too many", span);
  int64_t n = span > 0 ? (int64_t)span : 0;
  int st = ms__tensor_alloc(ctx, 1, &n, out);
  if (st) return st;
  double *p = MS_TENSOR_DATA(*out);
  for (int64_t i = 0; i < n; i++) p[i] = start + (double)i * step;
  return MS_OK;
}

int ms_tensor_linspace(ms_ctx *ctx, double a, double b, int64_t n, ms_tensor **out) {
  *out = NULL;
  if (n < 1)
    return ms_ctx_fail(ctx, MS_EARG, "linspace: count must be >= 1, got %lld", (long long)n);
  if (!isfinite(a) || !isfinite(b))
    return ms_ctx_fail(ctx, MS_EARG, "linspace: endpoints must be finite (got %g, %g)", a, b);
  int st = ms__tensor_alloc(ctx, 1, &n, out);
  if (st) return st;
  double *p = MS_TENSOR_DATA(*out);
  /* b - a overflows for endpoints near +-DBL_MAX; then interpolate each endpoint separately. */
  double span = b - a, last = n > 1 ? (double)(n - 1) : 1.0;
  for (int64_t i = 0; i < n; i++)
    p[i] = isfinite(span) ? a + span * (double)i / last
                          : a * (1 - (double)i / last) + b * ((double)i / last);
  if (n > 1) p[n - 1] = b;
  return MS_OK;
}

int ms_tensor_rand(ms_ctx *ctx, ms_rng *rng, int ndim, const int64_t *shape, double lo, double hi,
                   ms_tensor **out) {
  *out = NULL;
  if (!isfinite(lo) || !isfinite(hi) || lo > hi)
    return ms_ctx_fail(ctx, MS_EARG, "rand: expected finite lo <= hi, got [%g, %g)", lo, hi);
  int st = ms__tensor_alloc(ctx, ndim, shape, out);
  if (st) return st;
  if (rng == NULL) rng = &ctx->rng;
  double *p = MS_TENSOR_DATA(*out);
  /* lo + (hi - lo) * u can round up to hi when u is close to 1; keep the interval half-open. */
  for (int64_t i = 0; i < (*out)->numel; i++) {
    double x = lo + (hi - lo) * ms_rng_uniform(rng);
    p[i] = x < hi || lo == hi ? x : nextafter(hi, lo);
  }
  return MS_OK;
}

int ms_tensor_randn(ms_ctx *ctx, ms_rng *rng, int ndim, const int64_t *shape, double mean,
                    double std, ms_tensor **out) {
  *out = NULL;
  if (!isfinite(mean) || !isfinite(std) || std < 0)
    return ms_ctx_fail(ctx, MS_EARG, "randn: expected finite mean and std >= 0, got %g and %g",
                       mean, std);
  int st = ms__tensor_alloc(ctx, ndim, shape, out);
  if (st) return st;
  if (rng == NULL) rng = &ctx->rng;
  double *p = MS_TENSOR_DATA(*out);
  for (int64_t i = 0; i < (*out)->numel; i++) p[i] = mean + std * ms_rng_normal(rng);
  return MS_OK;
}

/* ---- copies and views ---- */

/* Copies t's elements in row-major order into dst (contiguous, numel entries). */
static void gather(const ms_tensor *t, double *dst) {
  const double *src = MS_TENSOR_DATA(t);
  if (t->numel == 0) return;
  if (ms_tensor_is_contiguous(t)) {
    memcpy(dst, src, (size_t)t->numel * sizeof(double));
    return;
  }
  int64_t idx[MS_MAXDIM] = {0}, off = 0;
  for (int64_t i = 0; i < t->numel; i++) {
    dst[i] = src[off];
    for (int d = t->ndim - 1; d >= 0; d--) {
      off += t->strides[d];
      if (++idx[d] < t->shape[d]) break;
      off -= t->strides[d] * t->shape[d];
      idx[d] = 0;
    }
  }
}

int ms__copy(ms_ctx *ctx, const ms_tensor *t, ms_tensor **out) {
  int st = ms__tensor_alloc(ctx, t->ndim, t->shape, out);
  if (st) return st;
  gather(t, MS_TENSOR_DATA(*out));
  return MS_OK;
}

int ms__contiguous(ms_ctx *ctx, const ms_tensor *t, ms_tensor **out) {
  if (ms_tensor_is_contiguous(t)) {
    *out = ms_tensor_retain((ms_tensor *)t);
    return MS_OK;
  }
  return ms__copy(ctx, t, out);
}

/* Resolves a target shape with at most one -1 against numel; message names `what`. */
static int resolve_shape(ms_ctx *ctx, const char *what, const ms_tensor *t, int ndim,
                         const int64_t *shape, int64_t *res) {
  char b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
  if (ndim < 0 || ndim > MS_MAXDIM)
    return ms_ctx_fail(ctx, MS_EARG, "%s: expected at most %d dimensions, got %d", what, MS_MAXDIM,
                       ndim);
  int infer = -1;
  for (int i = 0; i < ndim; i++) {
    res[i] = shape[i];
    if (shape[i] == -1 && infer < 0) {
      infer = i;
      res[i] = 1; /* checked below as a size of 1, then replaced */
    } else if (shape[i] < 0) {
      return ms_ctx_fail(ctx, MS_EARG, "%s: invalid size %lld in shape %s", what,
                         (long long)shape[i], ms_shape_str(ndim, shape, b1, sizeof b1));
    }
  }
  int64_t n = 0;
  int st = ms__shape_numel(ctx, what, ndim, res, &n);
  if (st) return st;
  if (infer >= 0) {
    if (n == 0 || t->numel % n != 0)
      return ms_ctx_fail(ctx, MS_ESHAPE, "%s: cannot infer -1 in %s for %lld elements", what,
                         ms_shape_str(ndim, shape, b1, sizeof b1), (long long)t->numel);
    res[infer] = t->numel / n;
    n = t->numel;
  }
  if (n != t->numel)
    return ms_ctx_fail(ctx, MS_ESHAPE, "%s: cannot reshape %s (%lld elements) to %s", what,
                       ms_shape_str(t->ndim, t->shape, b1, sizeof b1), (long long)t->numel,
                       ms_shape_str(ndim, shape, b2, sizeof b2));
  return MS_OK;
}

int ms__view(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape, ms_tensor **out) {
  int64_t res[MS_MAXDIM], strides[MS_MAXDIM];
  *out = NULL;
  int st = resolve_shape(ctx, "view", t, ndim, shape, res);
  if (st) return st;
  if (!ms_tensor_is_contiguous(t)) {
    char b[MS_SHAPE_STRLEN];
    return ms_ctx_fail(ctx, MS_ESTATE,
                       "view: tensor of shape %s is not contiguous (use reshape, which copies)",
                       ms_shape_str(t->ndim, t->shape, b, sizeof b));
  }
  contiguous_strides(ndim, res, strides);
  return ms__tensor_view(ctx, t, ndim, res, strides, t->offset, out);
}

int ms__reshape(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape, ms_tensor **out) {
  int64_t res[MS_MAXDIM];
  *out = NULL;
  int st = resolve_shape(ctx, "reshape", t, ndim, shape, res);
  if (st) return st;
  if (ms_tensor_is_contiguous(t)) return ms__view(ctx, t, ndim, res, out);
  ms_tensor *c;
  st = ms__copy(ctx, t, &c);
  if (st) return st;
  st = ms__view(ctx, c, ndim, res, out);
  ms_tensor_release(c);
  return st;
}

int ms__transpose(ms_ctx *ctx, const ms_tensor *t, int axis0, int axis1, ms_tensor **out) {
  int a = 0, b = 0; /* set by ms__axis; initialized for gcc -O2 -Wmaybe-uninitialized */
  *out = NULL;
  int st = ms__axis(ctx, "transpose", axis0, t->ndim, &a);
  if (!st) st = ms__axis(ctx, "transpose", axis1, t->ndim, &b);
  if (st) return st;
  int64_t shape[MS_MAXDIM], strides[MS_MAXDIM];
  memcpy(shape, t->shape, sizeof shape);
  memcpy(strides, t->strides, sizeof strides);
  shape[a] = t->shape[b], shape[b] = t->shape[a];
  strides[a] = t->strides[b], strides[b] = t->strides[a];
  return ms__tensor_view(ctx, t, t->ndim, shape, strides, t->offset, out);
}

int ms__permute(ms_ctx *ctx, const ms_tensor *t, const int *perm, ms_tensor **out) {
  int seen[MS_MAXDIM] = {0};
  int64_t shape[MS_MAXDIM], strides[MS_MAXDIM];
  *out = NULL;
  for (int i = 0; i < t->ndim; i++) {
    int a = 0;
    int st = ms__axis(ctx, "permute", perm[i], t->ndim, &a);
    if (st) return st;
    if (seen[a]++) return ms_ctx_fail(ctx, MS_EARG, "permute: axis %d repeated", perm[i]);
    shape[i] = t->shape[a];
    strides[i] = t->strides[a];
  }
  return ms__tensor_view(ctx, t, t->ndim, shape, strides, t->offset, out);
}

int ms__slice(ms_ctx *ctx, const ms_tensor *t, int axis, int64_t start, int64_t stop, int64_t step,
              ms_tensor **out) {
  int a = 0;
  *out = NULL;
  int st = ms__axis(ctx, "slice", axis, t->ndim, &a);
  if (st) return st;
  int64_t n = t->shape[a];
  if (step < 1)
    return ms_ctx_fail(ctx, MS_EARG, "slice: step must be >= 1, got %lld", (long long)step);
  if (start < 0 || stop < start || stop > n)
    return ms_ctx_fail(ctx, MS_EINDEX,
                       "slice: range [%lld, %lld) out of bounds for axis %d of size %lld",
                       (long long)start, (long long)stop, axis, (long long)n);
  int64_t shape[MS_MAXDIM], strides[MS_MAXDIM];
  memcpy(shape, t->shape, sizeof shape);
  memcpy(strides, t->strides, sizeof strides);
  shape[a] = stop == start ? 0 : (stop - start - 1) / step + 1; /* no overflow for huge step */
  /* A step past the axis leaves at most one element, whose stride is never used: clamp it so
   * stride * step stays within the storage's extent (both <= 2^50 by ms__shape_numel). */
  strides[a] = t->strides[a] * (step < n ? step : 1);
  return ms__tensor_view(ctx, t, t->ndim, shape, strides, t->offset + start * t->strides[a], out);
}

int ms__select(ms_ctx *ctx, const ms_tensor *t, int axis, int64_t index, ms_tensor **out) {
  int a = 0;
  *out = NULL;
  int st = ms__axis(ctx, "select", axis, t->ndim, &a);
  if (st) return st;
  if (index < 0 || index >= t->shape[a])
    return ms_ctx_fail(ctx, MS_EINDEX, "index %lld out of range for axis %d of size %lld",
                       (long long)index, a, (long long)t->shape[a]);
  int64_t shape[MS_MAXDIM], strides[MS_MAXDIM];
  int k = 0;
  for (int d = 0; d < t->ndim; d++) {
    if (d == a) continue;
    shape[k] = t->shape[d];
    strides[k++] = t->strides[d];
  }
  return ms__tensor_view(ctx, t, t->ndim - 1, shape, strides, t->offset + index * t->strides[a],
                         out);
}

int ms__expand(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape, ms_tensor **out) {
  char b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
  *out = NULL;
  int st = ms__shape_numel(ctx, "expand", ndim, shape, NULL);
  if (st) return st;
  if (ndim < t->ndim) goto bad;
  int64_t strides[MS_MAXDIM] = {0};
  int repeats = 0;
  for (int i = 0; i < ndim; i++) {
    int j = i - (ndim - t->ndim);
    if (j < 0) {
      strides[i] = 0;
    } else if (t->shape[j] == shape[i]) {
      strides[i] = t->strides[j];
    } else if (t->shape[j] == 1) {
      strides[i] = 0;
    } else {
      goto bad;
    }
    if (strides[i] == 0 && shape[i] > 1) repeats = 1;
  }
  st = ms__tensor_view(ctx, t, ndim, shape, strides, t->offset, out);
  if (st == MS_OK && repeats) (*out)->readonly = 1;
  return st;
bad:
  return ms_ctx_fail(ctx, MS_ESHAPE, "expand: cannot broadcast %s to %s",
                     ms_shape_str(t->ndim, t->shape, b1, sizeof b1),
                     ms_shape_str(ndim, shape, b2, sizeof b2));
}

int ms__cat(ms_ctx *ctx, int n, ms_tensor *const *ts, int axis, ms_tensor **out) {
  char b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
  *out = NULL;
  if (n < 1) return ms_ctx_fail(ctx, MS_EARG, "cat: expected at least one tensor");
  const ms_tensor *t0 = ts[0];
  if (t0->ndim == 0) return ms_ctx_fail(ctx, MS_ESHAPE, "cat: cannot concatenate 0-d tensors");
  int a = 0;
  int st = ms__axis(ctx, "cat", axis, t0->ndim, &a);
  if (st) return st;
  int64_t shape[MS_MAXDIM];
  memcpy(shape, t0->shape, sizeof shape);
  shape[a] = 0;
  for (int k = 0; k < n; k++) {
    const ms_tensor *t = ts[k];
    int ok = t->ndim == t0->ndim;
    for (int d = 0; ok && d < t->ndim; d++)
      if (d != a && t->shape[d] != t0->shape[d]) ok = 0;
    if (!ok)
      return ms_ctx_fail(ctx, MS_ESHAPE, "cat: tensor %d has shape %s, incompatible with %s", k + 1,
                         ms_shape_str(t->ndim, t->shape, b1, sizeof b1),
                         ms_shape_str(t0->ndim, t0->shape, b2, sizeof b2));
    if (t->shape[a] > MS_MAX_NUMEL - shape[a]) /* each size <= 2^50: no overflow */
      return ms_ctx_fail(ctx, MS_EARG, "cat: the sizes along axis %d add up to more than 2^50",
                         a + 1);
    shape[a] += t->shape[a];
  }
  st = ms__tensor_alloc(ctx, t0->ndim, shape, out);
  if (st) return st;
  int64_t pos = 0;
  for (int k = 0; k < n; k++) {
    ms_tensor *dst;
    st = ms__slice(ctx, *out, a, pos, pos + ts[k]->shape[a], 1, &dst);
    if (!st) st = ms_tensor_copy_(ctx, dst, ts[k]);
    ms_tensor_release(dst);
    if (st) {
      ms_tensor_release(*out);
      *out = NULL;
      return st;
    }
    pos += ts[k]->shape[a];
  }
  (*out)->st->version = 0;
  return MS_OK;
}

/* ---- element access ---- */

/*
 * An expand that repeats elements (stride 0 on an axis of size > 1) and every view taken of
 * it are read-only: one write through them would change every aliased row of the source at
 * once. In-place writes refuse them; clone() gives a writable copy.
 */
static int check_writable(ms_ctx *ctx, const char *what, const ms_tensor *t) {
  if (!t->readonly) return MS_OK;
  char b[MS_SHAPE_STRLEN];
  return ms_ctx_fail(ctx, MS_ESTATE,
                     "%s: cannot write into a view of an expanded tensor (shape %s shares "
                     "its elements with other positions; clone it first)",
                     what, ms_shape_str(t->ndim, t->shape, b, sizeof b));
}

static int element_offset(ms_ctx *ctx, const ms_tensor *t, const int64_t *index, int64_t *off) {
  int64_t o = t->offset;
  for (int d = 0; d < t->ndim; d++) {
    if (index[d] < 0 || index[d] >= t->shape[d])
      return ms_ctx_fail(ctx, MS_EINDEX, "index %lld out of range for dimension %d of size %lld",
                         (long long)index[d] + 1, d + 1, (long long)t->shape[d]);
    o += index[d] * t->strides[d];
  }
  *off = o;
  return MS_OK;
}

int ms_tensor_get(ms_ctx *ctx, const ms_tensor *t, const int64_t *index, double *value) {
  int64_t off = 0;
  int st = element_offset(ctx, t, index, &off);
  if (st) return st;
  *value = t->st->data[off];
  return MS_OK;
}

int ms_tensor_set(ms_ctx *ctx, ms_tensor *t, const int64_t *index, double value) {
  int64_t off = 0;
  int st = check_writable(ctx, "set", t);
  if (!st) st = element_offset(ctx, t, index, &off);
  if (st) return st;
  t->st->data[off] = value;
  ms__tensor_touch(t);
  return MS_OK;
}

int ms_tensor_item(ms_ctx *ctx, const ms_tensor *t, double *value) {
  if (t->numel != 1) {
    char b[MS_SHAPE_STRLEN];
    return ms_ctx_fail(ctx, MS_ESHAPE, "item: expected a tensor with one element, got shape %s",
                       ms_shape_str(t->ndim, t->shape, b, sizeof b));
  }
  *value = MS_TENSOR_DATA(t)[0];
  return MS_OK;
}

int ms_tensor_read(ms_ctx *ctx, const ms_tensor *t, double *buf, int64_t n) {
  if (n < t->numel)
    return ms_ctx_fail(ctx, MS_EARG, "read: buffer holds %lld values, tensor has %lld",
                       (long long)n, (long long)t->numel);
  gather(t, buf);
  return MS_OK;
}

int ms_tensor_fill_(ms_ctx *ctx, ms_tensor *t, double value) {
  int st = check_writable(ctx, "fill", t);
  if (st) return st;
  double *p = MS_TENSOR_DATA(t);
  for (int64_t i = 0; i < t->numel; i++) p[ms__offset_of(t, i)] = value;
  ms__tensor_touch(t);
  return MS_OK;
}

int ms_tensor_copy_(ms_ctx *ctx, ms_tensor *dst, const ms_tensor *src) {
  ms_tensor *e, *tmp = NULL;
  /* an in-place copy is not recorded: refuse to drop a derivative silently */
  int st = ms__not_differentiable(ctx, "in-place copy (assign)", 1, &src);
  if (!st) st = check_writable(ctx, "assign", dst);
  if (st) return st;
  st = ms__expand(ctx, src, dst->ndim, dst->shape, &e);
  if (st) return st;
  /* If src shares dst's storage, read everything first so overlapping views copy correctly. */
  if (src->st == dst->st) {
    st = ms__copy(ctx, e, &tmp);
    ms_tensor_release(e);
    if (st) return st;
    e = tmp;
  }
  double *d = MS_TENSOR_DATA(dst);
  const double *s = MS_TENSOR_DATA(e);
  if (ms_tensor_is_contiguous(dst) && ms_tensor_is_contiguous(e)) {
    memcpy(d, s, (size_t)dst->numel * sizeof(double));
  } else {
    for (int64_t i = 0; i < dst->numel; i++) d[ms__offset_of(dst, i)] = s[ms__offset_of(e, i)];
  }
  ms_tensor_release(e);
  ms__tensor_touch(dst);
  return MS_OK;
}

int ms__tensor_plain_copy(ms_ctx *ctx, const ms_tensor *t, ms_tensor **out) {
  ms_tensor *c = NULL;
  *out = NULL;
  int st = ms_tensor_empty(ctx, t->ndim, t->shape, &c);
  if (st == MS_OK) st = ms_tensor_read(ctx, t, MS_TENSOR_DATA(c), c->numel);
  if (st) {
    ms_tensor_release(c);
    return st;
  }
  *out = c;
  return MS_OK;
}
