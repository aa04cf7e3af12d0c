/*
 * The primitive table: forward (raw kernels), reverse-mode rule (VJP) and forward-mode
 * rule (JVP) of every differentiable operation, in one place. Rules are written with
 * the public, differentiable operations, so they are themselves recorded on the levels
 * outside the one being differentiated: that is what makes grad(grad(f)) work.
 *
 * The element-wise families have one primitive each; their rules switch on the op
 * (binary_partials, unary_deriv, reduce_weights), and an op without a case fails with
 * "<name>: no derivative" when differentiated.
 */
#include <math.h>
#include <string.h>

#include "ad.h"

/* ---- small differentiable helpers (each returns a status; *out is a new reference) ---- */

#define TRY(call)        \
  do {                   \
    int st_ = (call);    \
    if (st_) return st_; \
  } while (0)

static int bin(ms_ctx *ctx, ms_binop op, ms_tensor *a, ms_tensor *b, ms_tensor **out) {
  return ms_binary(ctx, op, a, b, out);
}

/* a op b, then release a (for chaining temporaries). */
static int bin_take(ms_ctx *ctx, ms_binop op, ms_tensor *a, ms_tensor *b, ms_tensor **out) {
  int st = ms_binary(ctx, op, a, b, out);
  ms_tensor_release(a);
  return st;
}

static int scal(ms_ctx *ctx, ms_binop op, ms_tensor *a, double s, ms_tensor **out) {
  return ms_binary_scalar(ctx, op, a, s, 0, out);
}

static int un(ms_ctx *ctx, ms_unop op, ms_tensor *a, ms_tensor **out) {
  return ms_unary(ctx, op, a, out);
}

/* op(a) / a op s, then release a (for chaining temporaries without leaking on failure). */
static int un_take(ms_ctx *ctx, ms_unop op, ms_tensor *a, ms_tensor **out) {
  int st = ms_unary(ctx, op, a, out);
  ms_tensor_release(a);
  return st;
}

static int scal_take(ms_ctx *ctx, ms_binop op, ms_tensor *a, double s, int scalar_left,
                     ms_tensor **out) {
  int st = ms_binary_scalar(ctx, op, a, s, scalar_left, out);
  ms_tensor_release(a);
  return st;
}

static int sum_to_like(ms_ctx *ctx, ms_tensor *g, const ms_tensor *like, ms_tensor **out) {
  return ms_sum_to(ctx, g, like->ndim, like->shape, out);
}

/* Same as sum_to_like but releases g. */
static int sum_to_take(ms_ctx *ctx, ms_tensor *g, const ms_tensor *like, ms_tensor **out) {
  int st = sum_to_like(ctx, g, like, out);
  ms_tensor_release(g);
  return st;
}

/* Broadcasts t to out's shape (view, differentiable). */
static int expand_like(ms_ctx *ctx, ms_tensor *t, const ms_tensor *like, ms_tensor **out) {
  return ms_tensor_expand(ctx, t, like->ndim, like->shape, out);
}

/* 1 if some element of t (possibly strided) is exactly 0: the rules below take a slower,
 * guarded form only then. */
static int has_zero(const ms_tensor *t) {
  const double *d = MS_TENSOR_DATA(t);
  for (int64_t i = 0; i < t->numel; i++)
    if (d[ms__offset_of(t, i)] == 0.0) return 1;
  return 0;
}

/* ---- identity, copy ---- */

static int f_identity(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  (void)attr;
  return ms__tensor_view(ctx, in[0], in[0]->ndim, in[0]->shape, in[0]->strides, in[0]->offset, out);
}

static int f_copy(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  (void)attr;
  return ms__copy(ctx, in[0], out);
}

static int v_identity(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                      ms_tensor *g, const int *need, ms_tensor **gin) {
  (void)ctx, (void)attr, (void)in, (void)out, (void)need;
  gin[0] = ms_tensor_retain(g);
  return MS_OK;
}

static int j_identity(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *const *tin,
                      ms_tensor *out, ms_tensor **tout) {
  (void)ctx, (void)attr, (void)in, (void)out;
  *tout = ms_tensor_retain(tin[0]);
  return MS_OK;
}

/* ---- element-wise binary ---- */

static int f_binary(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  return ms__binary(ctx, attr->binop, in[0], in[1], out);
}

/* Partial derivatives d out / d a and d out / d b (element-wise, broadcast shape). */
static int binary_partials(ms_ctx *ctx, ms_binop op, ms_tensor *a, ms_tensor *b, ms_tensor *out,
                           int want_a, int want_b, ms_tensor **da, ms_tensor **db) {
  ms_tensor *t = NULL, *u = NULL;
  *da = *db = NULL;
  switch (op) {
    case MS_MUL:
      if (want_a) TRY(expand_like(ctx, b, out, da));
      if (want_b) TRY(expand_like(ctx, a, out, db));
      return MS_OK;
    case MS_DIV: /* 1/b and -out/b */
      if (want_a) TRY(ms_binary_scalar(ctx, MS_DIV, b, 1.0, 1, da));
      if (want_b) {
        TRY(bin(ctx, MS_DIV, out, b, &t));
        int st = un(ctx, MS_NEG, t, db);
        ms_tensor_release(t);
        return st;
      }
      return MS_OK;
    case MS_POW: /* b a^(b-1) and out log(a) (0 where a <= 0, the limit for a = 0) */
      if (want_a && has_zero(b) && has_zero(a)) { /* b first: usually one number */
        /* Where a = b = 0 the formula gives 0 * 0^-1 = NaN, but d a^0 / da = 0: the partial
         * is where(z, 0, b base^(b-1)) with z = (a == 0 and b == 0). The base is read as
         * where(z, 1, a) so the branch not taken stays finite for derivatives of this
         * partial (a where passes a zero cotangent into it; times 0^-1 that is NaN again).
         * Only a = 0 is masked: at b = 0, a != 0 the partial 0 * a^-1 keeps its mixed
         * derivative a^-1 with respect to b. This is what makes x^1 twice differentiable
         * at 0 too: its first partial is 1 * x^0. */
        ms_tensor *za = NULL, *zb = NULL, *z = NULL, *one = NULL, *zero = NULL, *base = NULL;
        ms_tensor *v = NULL;
        int st = ms__binary_scalar(ctx, MS_EQ, a, 0.0, 0, &za);
        if (st == MS_OK) st = ms__binary_scalar(ctx, MS_EQ, b, 0.0, 0, &zb);
        if (st == MS_OK) st = ms__binary(ctx, MS_MUL, za, zb, &z);
        if (st == MS_OK) st = ms_tensor_scalar(ctx, 1.0, &one);
        if (st == MS_OK) st = ms_tensor_scalar(ctx, 0.0, &zero);
        if (st == MS_OK) st = ms_where(ctx, z, one, a, &base);
        if (st == MS_OK) st = scal(ctx, MS_SUB, b, 1.0, &t);
        if (st == MS_OK) st = bin(ctx, MS_POW, base, t, &u);
        if (st == MS_OK) st = bin(ctx, MS_MUL, u, b, &v);
        if (st == MS_OK) st = ms_where(ctx, z, zero, v, da);
        ms_tensor_release(za);
        ms_tensor_release(zb);
        ms_tensor_release(z);
        ms_tensor_release(one);
        ms_tensor_release(zero);
        ms_tensor_release(base);
        ms_tensor_release(t);
        ms_tensor_release(u);
        ms_tensor_release(v);
        t = u = NULL;
        if (st) return st;
      } else if (want_a) {
        TRY(scal(ctx, MS_SUB, b, 1.0, &t));
        int st = bin(ctx, MS_POW, a, t, &u);
        ms_tensor_release(t);
        if (st) return st;
        st = bin(ctx, MS_MUL, u, b, da);
        ms_tensor_release(u);
        if (st) return st;
      }
      if (want_b) {
        /* log(a) is read through where(a > 0, a, 1) so it stays finite, and with the
         * differentiable where so that d/da of this partial (the mixed second
         * derivative a^(b-1) (1 + b log a)) is not lost. */
        ms_tensor *pos = NULL, *one = NULL, *safe = NULL, *la = NULL, *zero = NULL, *lg = NULL;
        int st = ms__binary_scalar(ctx, MS_GT, a, 0.0, 0, &pos);
        if (st == MS_OK) st = ms_tensor_scalar(ctx, 1.0, &one);
        if (st == MS_OK) st = ms_where(ctx, pos, a, one, &safe);
        if (st == MS_OK) st = un(ctx, MS_LOG, safe, &la);
        if (st == MS_OK) st = ms_tensor_scalar(ctx, 0.0, &zero);
        if (st == MS_OK) st = ms_where(ctx, pos, la, zero, &lg);
        if (st == MS_OK) st = bin(ctx, MS_MUL, lg, out, db);
        ms_tensor_release(pos);
        ms_tensor_release(one);
        ms_tensor_release(safe);
        ms_tensor_release(la);
        ms_tensor_release(zero);
        ms_tensor_release(lg);
        return st;
      }
      return MS_OK;
    case MS_MAXIMUM:
    case MS_MINIMUM: { /* ties go to a */
      ms_tensor *mask;
      TRY(ms__binary(ctx, op == MS_MAXIMUM ? MS_GE : MS_LE, a, b, &mask));
      int st = MS_OK;
      if (want_a) st = expand_like(ctx, mask, out, da);
      if (st == MS_OK && want_b) {
        st = ms__binary_scalar(ctx, MS_SUB, mask, 1.0, 1, &t);
        if (st == MS_OK) st = expand_like(ctx, t, out, db), ms_tensor_release(t);
      }
      ms_tensor_release(mask);
      return st;
    }
    case MS_ATAN2: { /* atan2(a, b): b/(a²+b²), -a/(a²+b²) */
      ms_tensor *a2 = NULL, *b2 = NULL, *r = NULL;
      int st = un(ctx, MS_SQUARE, a, &a2);
      if (st == MS_OK) st = un(ctx, MS_SQUARE, b, &b2);
      if (st == MS_OK) st = bin(ctx, MS_ADD, a2, b2, &r);
      ms_tensor_release(a2);
      ms_tensor_release(b2);
      if (st) return st;
      if (want_a) st = bin(ctx, MS_DIV, b, r, da);
      if (st == MS_OK && want_b) {
        st = bin(ctx, MS_DIV, a, r, &t);
        if (st == MS_OK) st = un(ctx, MS_NEG, t, db), ms_tensor_release(t);
      }
      ms_tensor_release(r);
      return st;
    }
    default:
      return ms_ctx_fail(ctx, MS_EARG, "%s: no derivative", ms_binop_name(op));
  }
}

static int v_binary(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                    ms_tensor *g, const int *need, ms_tensor **gin) {
  ms_binop op = attr->binop;
  ms_tensor *t;
  if (op == MS_ADD || op == MS_SUB) {
    if (need[0]) TRY(sum_to_like(ctx, g, in[0], &gin[0]));
    if (need[1]) {
      if (op == MS_ADD) {
        TRY(sum_to_like(ctx, g, in[1], &gin[1]));
      } else {
        TRY(un(ctx, MS_NEG, g, &t));
        TRY(sum_to_take(ctx, t, in[1], &gin[1]));
      }
    }
    return MS_OK;
  }
  ms_tensor *da, *db;
  int st = binary_partials(ctx, op, in[0], in[1], out, need[0], need[1], &da, &db);
  if (st == MS_OK && da) {
    if ((st = bin(ctx, MS_MUL, g, da, &t)) == MS_OK) st = sum_to_take(ctx, t, in[0], &gin[0]);
  }
  if (st == MS_OK && db) {
    if ((st = bin(ctx, MS_MUL, g, db, &t)) == MS_OK) st = sum_to_take(ctx, t, in[1], &gin[1]);
  }
  ms_tensor_release(da);
  ms_tensor_release(db);
  return st;
}

/* Broadcasts a (possibly NULL) tangent term to out's shape and adds it to *acc. */
static int add_term(ms_ctx *ctx, ms_tensor **acc, ms_tensor *term, const ms_tensor *out) {
  if (term == NULL) return MS_OK;
  if (*acc == NULL) return expand_like(ctx, term, out, acc);
  ms_tensor *s;
  TRY(bin(ctx, MS_ADD, *acc, term, &s));
  ms_tensor_release(*acc);
  *acc = s;
  return MS_OK;
}

static int j_binary(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *const *tin,
                    ms_tensor *out, ms_tensor **tout) {
  ms_binop op = attr->binop;
  ms_tensor *acc = NULL, *t = NULL;
  int st = MS_OK;
  if (op == MS_ADD || op == MS_SUB) {
    st = add_term(ctx, &acc, tin[0], out);
    if (st == MS_OK && tin[1]) {
      if (op == MS_SUB) {
        if ((st = un(ctx, MS_NEG, tin[1], &t)) == MS_OK) st = add_term(ctx, &acc, t, out);
      } else {
        st = add_term(ctx, &acc, tin[1], out);
      }
    }
  } else {
    ms_tensor *da, *db;
    st = binary_partials(ctx, op, in[0], in[1], out, tin[0] != NULL, tin[1] != NULL, &da, &db);
    if (st == MS_OK && da) {
      if ((st = bin(ctx, MS_MUL, tin[0], da, &t)) == MS_OK) st = add_term(ctx, &acc, t, out);
      ms_tensor_release(t);
      t = NULL;
    }
    if (st == MS_OK && db) {
      if ((st = bin(ctx, MS_MUL, tin[1], db, &t)) == MS_OK) st = add_term(ctx, &acc, t, out);
    }
    ms_tensor_release(da);
    ms_tensor_release(db);
  }
  ms_tensor_release(t);
  if (st) {
    ms_tensor_release(acc);
    return st;
  }
  *tout = acc;
  return MS_OK;
}

/* ---- element-wise unary ---- */

static int f_unary(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  return ms__unary(ctx, attr->unop, in[0], out);
}

/* d out / d a, element-wise, as a differentiable expression of a and out. */
static int unary_deriv(ms_ctx *ctx, ms_unop op, ms_tensor *a, ms_tensor *out, ms_tensor **d) {
  ms_tensor *t;
  switch (op) {
    case MS_NEG:
      return ms_tensor_full(ctx, a->ndim, a->shape, -1.0, d);
    case MS_ABS:
      return ms__unary(ctx, MS_SIGN, a, d); /* piecewise constant */
    case MS_EXP:
      *d = ms_tensor_retain(out);
      return MS_OK;
    case MS_LOG:
      return un(ctx, MS_RECIPROCAL, a, d);
    case MS_LOG1P:
      TRY(scal(ctx, MS_ADD, a, 1.0, &t));
      return un_take(ctx, MS_RECIPROCAL, t, d);
    case MS_EXPM1:
      return scal(ctx, MS_ADD, out, 1.0, d);
    case MS_SQRT:
      TRY(un(ctx, MS_RECIPROCAL, out, &t));
      return scal_take(ctx, MS_MUL, t, 0.5, 0, d);
    case MS_SQUARE:
      return scal(ctx, MS_MUL, a, 2.0, d);
    case MS_RECIPROCAL:
      TRY(un(ctx, MS_SQUARE, out, &t));
      return un_take(ctx, MS_NEG, t, d);
    case MS_TANH:
      TRY(un(ctx, MS_SQUARE, out, &t));
      return scal_take(ctx, MS_SUB, t, 1.0, 1, d);
    case MS_SIGMOID:
      TRY(ms_binary_scalar(ctx, MS_SUB, out, 1.0, 1, &t));
      return bin_take(ctx, MS_MUL, t, out, d);
    case MS_RELU:
      return ms__binary_scalar(ctx, MS_GT, a, 0.0, 0, d);
    case MS_SOFTPLUS:
      return un(ctx, MS_SIGMOID, a, d);
    case MS_SIN:
      return un(ctx, MS_COS, a, d);
    case MS_COS:
      TRY(un(ctx, MS_SIN, a, &t));
      return un_take(ctx, MS_NEG, t, d);
    default:
      return ms_ctx_fail(ctx, MS_EARG, "%s: no derivative", ms_unop_name(op));
  }
}

static int v_unary(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                   ms_tensor *g, const int *need, ms_tensor **gin) {
  (void)need;
  ms_tensor *d;
  if (attr->unop == MS_NEG) return un(ctx, MS_NEG, g, &gin[0]);
  TRY(unary_deriv(ctx, attr->unop, in[0], out, &d));
  return bin_take(ctx, MS_MUL, d, g, &gin[0]);
}

static int j_unary(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *const *tin,
                   ms_tensor *out, ms_tensor **tout) {
  ms_tensor *d;
  if (attr->unop == MS_NEG) return un(ctx, MS_NEG, tin[0], tout);
  TRY(unary_deriv(ctx, attr->unop, in[0], out, &d));
  return bin_take(ctx, MS_MUL, d, tin[0], tout);
}

/* ---- reductions ---- */

static int f_reduce(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  return ms__reduce(ctx, attr->redop, in[0], attr->axis, attr->keepdim, out);
}

/* Reshapes a reduction's result r to keep the reduced axes as size 1 (broadcastable to a). */
static int keepdims(ms_ctx *ctx, const ms_attr *attr, const ms_tensor *a, ms_tensor *r,
                    ms_tensor **out) {
  int64_t shape[MS_MAXDIM];
  for (int d = 0; d < a->ndim; d++) shape[d] = a->shape[d];
  if (attr->axis == MS_ALL) {
    for (int d = 0; d < a->ndim; d++) shape[d] = 1;
  } else {
    int ax = attr->axis < 0 ? attr->axis + a->ndim : attr->axis;
    shape[ax] = 1;
  }
  return ms_tensor_reshape(ctx, r, a->ndim, shape, out);
}

/*
 * d prod / d a_i is the product of the other entries of a_i's group. With zeros present,
 * out / a_i is 0/0, so it is built as F_i G_i from differentiable operations:
 *   F_i = prod(nz) / nz_i with nz = where(a == 0, 1, a): the product of the other nonzero
 *         entries (nz_i = 1 when a_i is itself zero);
 *   G_i = the product of the other zero entries: 1 if there is none; if there is one, that
 *         entry itself, read as s - z_i with z = where(a == 0, a, 0) and s = sum(z) over
 *         the group (value 0, slope 1 in that entry); 0 if there are two or more.
 * The zero pattern is a constant and a stays differentiable through the where's, so the
 * gradient and the Hessian are exact at any zero pattern: for m >= 2 other zeros, G_i = 0
 * is right to order m - 1. (A derivative of order k >= 3 misses terms where an entry has
 * 2..k-1 other zeros in its group; the exact G_i, an elementary symmetric polynomial of
 * the zeros, would cost O(zeros^2) operations.)
 */
static int prod_weights_zeros(ms_ctx *ctx, const ms_attr *attr, ms_tensor *a, ms_tensor **w) {
  ms_tensor *zm = NULL, *one = NULL, *zero = NULL, *nz = NULL, *q = NULL, *f = NULL;
  ms_tensor *zc = NULL, *m = NULL, *m0 = NULL, *m1 = NULL, *z = NULL, *s = NULL, *g1 = NULL;
  ms_tensor *g0 = NULL, *g = NULL;
  int st = ms__binary_scalar(ctx, MS_EQ, a, 0.0, 0, &zm);
  if (st == MS_OK) st = ms_tensor_scalar(ctx, 1.0, &one);
  if (st == MS_OK) st = ms_tensor_scalar(ctx, 0.0, &zero);
  if (st == MS_OK) st = ms_where(ctx, zm, one, a, &nz);
  if (st == MS_OK) st = ms_reduce(ctx, MS_PROD, nz, attr->axis, 1, &q);
  if (st == MS_OK) st = bin(ctx, MS_DIV, q, nz, &f);
  /* m: the number of zeros among the other entries of each entry's group */
  if (st == MS_OK) st = ms__reduce(ctx, MS_SUM, zm, attr->axis, 1, &zc);
  if (st == MS_OK) st = ms__binary(ctx, MS_SUB, zc, zm, &m);
  if (st == MS_OK) st = ms__binary_scalar(ctx, MS_EQ, m, 0.0, 0, &m0);
  if (st == MS_OK) st = ms__binary_scalar(ctx, MS_EQ, m, 1.0, 0, &m1);
  if (st == MS_OK) st = ms_where(ctx, zm, a, zero, &z);
  if (st == MS_OK) st = ms_reduce(ctx, MS_SUM, z, attr->axis, 1, &s);
  if (st == MS_OK) st = bin(ctx, MS_SUB, s, z, &g1);
  if (st == MS_OK) st = ms_where(ctx, m1, g1, zero, &g0);
  if (st == MS_OK) st = ms_where(ctx, m0, one, g0, &g);
  if (st == MS_OK) st = bin(ctx, MS_MUL, f, g, w);
  ms_tensor *tmp[] = {zm, one, zero, nz, q, f, zc, m, m0, m1, z, s, g1, g0, g};
  for (size_t i = 0; i < sizeof tmp / sizeof tmp[0]; i++) ms_tensor_release(tmp[i]);
  return st;
}

/* Weights w with d out / d a = w (broadcast against a, reduced axes kept). */
static int reduce_weights(ms_ctx *ctx, const ms_attr *attr, ms_tensor *a, ms_tensor *out,
                          ms_tensor **w) {
  ms_tensor *ok = NULL, *t = NULL, *u = NULL;
  int st;
  switch (attr->redop) {
    case MS_SUM:
      return ms_tensor_ones(ctx, a->ndim, a->shape, w);
    case MS_MEAN: {
      double n = attr->axis == MS_ALL
                     ? (double)a->numel
                     : (double)a->shape[attr->axis < 0 ? attr->axis + a->ndim : attr->axis];
      return ms_tensor_full(ctx, a->ndim, a->shape, 1.0 / n, w);
    }
    case MS_MAX:
    case MS_MIN: { /* ties share the derivative equally */
      ms_tensor *mask, *cnt, *cntk;
      TRY(keepdims(ctx, attr, a, out, &ok));
      st = ms__binary(ctx, MS_EQ, a, ok, &mask);
      ms_tensor_release(ok);
      if (st) return st;
      st = ms__reduce(ctx, MS_SUM, mask, attr->axis, attr->keepdim, &cnt);
      if (st == MS_OK) {
        st = keepdims(ctx, attr, a, cnt, &cntk);
        ms_tensor_release(cnt);
        if (st == MS_OK) st = ms__binary(ctx, MS_DIV, mask, cntk, w), ms_tensor_release(cntk);
      }
      ms_tensor_release(mask);
      return st;
    }
    case MS_PROD:
      if (has_zero(a)) return prod_weights_zeros(ctx, attr, a, w);
      /* out / a: the product of the other entries, exact at every order without zeros */
      TRY(keepdims(ctx, attr, a, out, &ok));
      st = bin(ctx, MS_DIV, ok, a, w);
      ms_tensor_release(ok);
      return st;
    case MS_NORM: /* a / norm, 0 where the norm is 0 */
      TRY(keepdims(ctx, attr, a, out, &ok));
      st = bin(ctx, MS_DIV, a, ok, &t);
      if (st == MS_OK) st = ms__binary_scalar(ctx, MS_EQ, ok, 0.0, 0, &u);
      ms_tensor_release(ok);
      if (st == MS_OK) {
        ms_tensor *zero, *fin;
        if ((st = ms_tensor_scalar(ctx, 0.0, &zero)) == MS_OK) {
          if ((st = ms_tensor_expand(ctx, u, t->ndim, t->shape, &fin)) == MS_OK) {
            st = ms_where(ctx, fin, zero, t, w);
            ms_tensor_release(fin);
          }
          ms_tensor_release(zero);
        }
      }
      ms_tensor_release(t);
      ms_tensor_release(u);
      return st;
    case MS_LOGSUMEXP: /* softmax */
      TRY(keepdims(ctx, attr, a, out, &ok));
      st = bin(ctx, MS_SUB, a, ok, &t);
      ms_tensor_release(ok);
      if (st) return st;
      st = un(ctx, MS_EXP, t, w);
      ms_tensor_release(t);
      return st;
    default:
      return ms_ctx_fail(ctx, MS_EARG, "%s: no derivative", ms_redop_name(attr->redop));
  }
}

static int v_reduce(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                    ms_tensor *g, const int *need, ms_tensor **gin) {
  (void)need;
  ms_tensor *w, *gk;
  TRY(reduce_weights(ctx, attr, in[0], out, &w));
  int st = keepdims(ctx, attr, in[0], g, &gk);
  if (st == MS_OK) {
    st = bin(ctx, MS_MUL, w, gk, &gin[0]);
    ms_tensor_release(gk);
  }
  ms_tensor_release(w);
  return st;
}

static int j_reduce(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *const *tin,
                    ms_tensor *out, ms_tensor **tout) {
  (void)out;
  ms_tensor *w, *t;
  TRY(reduce_weights(ctx, attr, in[0], out, &w));
  int st = bin(ctx, MS_MUL, w, tin[0], &t);
  ms_tensor_release(w);
  if (st) return st;
  st = ms_reduce(ctx, MS_SUM, t, attr->axis, attr->keepdim, tout);
  ms_tensor_release(t);
  return st;
}

/* ---- where, clamp ---- */

static int f_where(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  (void)attr;
  return ms__where(ctx, in[0], in[1], in[2], out);
}

/* where(cond, g, 0) or where(cond, 0, g), broadcast to out, as branch k (1 or 2). */
static int masked(ms_ctx *ctx, ms_tensor *cond, ms_tensor *g, int branch, ms_tensor **out) {
  ms_tensor *zero;
  TRY(ms_tensor_scalar(ctx, 0.0, &zero));
  int st = branch == 1 ? ms_where(ctx, cond, g, zero, out) : ms_where(ctx, cond, zero, g, out);
  ms_tensor_release(zero);
  return st;
}

static int v_where(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                   ms_tensor *g, const int *need, ms_tensor **gin) {
  (void)attr, (void)out;
  ms_tensor *t;
  for (int k = 1; k <= 2; k++) {
    if (!need[k]) continue;
    TRY(masked(ctx, in[0], g, k, &t));
    TRY(sum_to_take(ctx, t, in[k], &gin[k]));
  }
  return MS_OK; /* the condition is not differentiable: gin[0] stays NULL */
}

static int j_where(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *const *tin,
                   ms_tensor *out, ms_tensor **tout) {
  (void)attr;
  ms_tensor *ta = tin[1], *tb = tin[2], *zero = NULL, *t;
  int st = MS_OK;
  if (ta == NULL || tb == NULL) TRY(ms_tensor_scalar(ctx, 0.0, &zero));
  st = ms_where(ctx, in[0], ta ? ta : zero, tb ? tb : zero, &t);
  ms_tensor_release(zero);
  if (st) return st;
  st = expand_like(ctx, t, out, tout);
  ms_tensor_release(t);
  return st;
}

static int f_clamp(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  return ms__clamp(ctx, in[0], attr->lo, attr->hi, out);
}

static int clamp_mask(ms_ctx *ctx, const ms_attr *attr, ms_tensor *a, ms_tensor **mask) {
  ms_tensor *lo, *hi;
  TRY(ms__binary_scalar(ctx, MS_GE, a, attr->lo, 0, &lo));
  int st = ms__binary_scalar(ctx, MS_LE, a, attr->hi, 0, &hi);
  if (st == MS_OK) st = ms__binary(ctx, MS_MUL, lo, hi, mask), ms_tensor_release(hi);
  ms_tensor_release(lo);
  return st;
}

static int v_clamp(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                   ms_tensor *g, const int *need, ms_tensor **gin) {
  (void)out, (void)need;
  ms_tensor *m;
  TRY(clamp_mask(ctx, attr, in[0], &m));
  return bin_take(ctx, MS_MUL, m, g, &gin[0]);
}

static int j_clamp(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *const *tin,
                   ms_tensor *out, ms_tensor **tout) {
  (void)out;
  ms_tensor *m;
  TRY(clamp_mask(ctx, attr, in[0], &m));
  return bin_take(ctx, MS_MUL, m, tin[0], tout);
}

/* ---- products ---- */

static int f_dot(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  (void)attr;
  return ms__dot(ctx, in[0], in[1], out);
}
static int f_matvec(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  (void)attr;
  return ms__matvec(ctx, in[0], in[1], out);
}
static int f_matmul(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  (void)attr;
  return ms__matmul(ctx, in[0], in[1], out);
}
static int f_outer(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  (void)attr;
  return ms__outer(ctx, in[0], in[1], out);
}

/* Transpose of a matrix (view); vectors are returned as they are. */
static int tr(ms_ctx *ctx, ms_tensor *a, ms_tensor **out) {
  if (a->ndim < 2) {
    *out = ms_tensor_retain(a);
    return MS_OK;
  }
  return ms_tensor_transpose(ctx, a, 0, 1, out);
}

/*
 * Gradients of out = A @ B for every 1-D/2-D case (dot, matvec, matmul and outer are
 * all instances): gA = g @ B^T and gB = A^T @ g, with vectors promoted as NumPy does.
 */
static int v_product(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                     ms_tensor *g, const int *need, ms_tensor **gin) {
  (void)attr, (void)out;
  ms_tensor *a = in[0], *b = in[1], *t;
  int outer = a->ndim == 1 && b->ndim == 1 && out->ndim == 2;
  if (need[0]) {
    if (outer) {
      TRY(ms_matvec(ctx, g, b, &gin[0]));
    } else if (a->ndim == 1 && b->ndim == 1) {
      TRY(bin(ctx, MS_MUL, g, b, &gin[0]));
    } else if (a->ndim == 2 && b->ndim == 1) {
      TRY(ms_outer(ctx, g, b, &gin[0]));
    } else { /* g @ B^T: [n] x [n,k]^T or [m,n] x [k,n]^T */
      TRY(tr(ctx, b, &t));
      int st = ms_matmul(ctx, g, t, &gin[0]);
      ms_tensor_release(t);
      if (st) return st;
    }
  }
  if (need[1]) {
    if (outer) {
      TRY(tr(ctx, g, &t));
      int st = ms_matvec(ctx, t, a, &gin[1]);
      ms_tensor_release(t);
      if (st) return st;
    } else if (a->ndim == 1 && b->ndim == 1) {
      TRY(bin(ctx, MS_MUL, g, a, &gin[1]));
    } else if (a->ndim == 1 && b->ndim == 2) {
      TRY(ms_outer(ctx, a, g, &gin[1]));
    } else { /* A^T @ g */
      TRY(tr(ctx, a, &t));
      int st = ms_matmul(ctx, t, g, &gin[1]);
      ms_tensor_release(t);
      if (st) return st;
    }
  }
  return MS_OK;
}

/* Bilinear: d(A op B) = dA op B + A op dB, op being the node's own forward. */
static int j_product(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *const *tin,
                     ms_tensor *out, ms_tensor **tout, ms_prim p) {
  ms_tensor *acc = NULL, *t, *args[2];
  for (int k = 0; k < 2; k++) {
    if (tin[k] == NULL) continue;
    args[0] = k == 0 ? tin[0] : in[0];
    args[1] = k == 1 ? tin[1] : in[1];
    int st = ms__apply(ctx, p, attr, 2, args, &t);
    if (st) {
      ms_tensor_release(acc);
      return st;
    }
    st = add_term(ctx, &acc, t, out);
    ms_tensor_release(t);
    if (st) {
      ms_tensor_release(acc);
      return st;
    }
  }
  *tout = acc;
  return MS_OK;
}

static int j_dot(ms_ctx *c, const ms_attr *a, ms_tensor *const *i, ms_tensor *const *t,
                 ms_tensor *o, ms_tensor **r) {
  return j_product(c, a, i, t, o, r, P_DOT);
}
static int j_matvec(ms_ctx *c, const ms_attr *a, ms_tensor *const *i, ms_tensor *const *t,
                    ms_tensor *o, ms_tensor **r) {
  return j_product(c, a, i, t, o, r, P_MATVEC);
}
static int j_matmul(ms_ctx *c, const ms_attr *a, ms_tensor *const *i, ms_tensor *const *t,
                    ms_tensor *o, ms_tensor **r) {
  return j_product(c, a, i, t, o, r, P_MATMUL);
}
static int j_outer(ms_ctx *c, const ms_attr *a, ms_tensor *const *i, ms_tensor *const *t,
                   ms_tensor *o, ms_tensor **r) {
  return j_product(c, a, i, t, o, r, P_OUTER);
}

/* ---- diag ---- */

static int unslice(ms_ctx *ctx, const ms_attr *attr, const ms_tensor *src, ms_tensor *g,
                   ms_tensor **out);

static int f_diag(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  (void)attr;
  return ms__diag(ctx, in[0], out);
}

static int v_diag(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                  ms_tensor *g, const int *need, ms_tensor **gin) {
  (void)attr, (void)out, (void)need;
  if (in[0]->ndim == 2 && in[0]->shape[0] != in[0]->shape[1]) {
    /* the diagonal of a rectangular matrix: diag(g) is the gradient's leading square
     * block, scattered (differentiably) into zeros along the longer axis */
    ms_tensor *d;
    ms_attr u;
    memset(&u, 0, sizeof u);
    u.axis = in[0]->shape[0] > in[0]->shape[1] ? 0 : 1;
    u.start = 0, u.stop = g->shape[0], u.step = 1;
    TRY(ms_tensor_diag(ctx, g, &d));
    int st = unslice(ctx, &u, in[0], d, &gin[0]);
    ms_tensor_release(d);
    return st;
  }
  return ms_tensor_diag(ctx, g, &gin[0]);
}

static int j_diag(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *const *tin,
                  ms_tensor *out, ms_tensor **tout) {
  (void)attr, (void)in, (void)out;
  return ms_tensor_diag(ctx, tin[0], tout);
}

/* ---- shape operations ---- */

/* attr->reshape says which (ms_reshape_kind). */
static int f_reshape(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  switch (attr->reshape) {
    case RESHAPE:
      return ms__reshape(ctx, in[0], attr->ndim, attr->shape, out);
    case RESHAPE_VIEW:
      return ms__view(ctx, in[0], attr->ndim, attr->shape, out);
    case RESHAPE_DROP_AXIS:
      return ms__select(ctx, in[0], attr->axis, 0, out);
  }
  return ms_ctx_fail(ctx, MS_EARG, "reshape: unknown kind %d", (int)attr->reshape);
}

static int v_reshape(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                     ms_tensor *g, const int *need, ms_tensor **gin) {
  (void)attr, (void)out, (void)need;
  return ms_tensor_reshape(ctx, g, in[0]->ndim, in[0]->shape, &gin[0]);
}

static int j_reshape(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *const *tin,
                     ms_tensor *out, ms_tensor **tout) {
  (void)attr, (void)in;
  return ms_tensor_reshape(ctx, tin[0], out->ndim, out->shape, tout);
}

static int f_transpose(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  return ms__transpose(ctx, in[0], attr->axis, attr->axis2, out);
}

static int v_transpose(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                       ms_tensor *g, const int *need, ms_tensor **gin) {
  (void)in, (void)out, (void)need;
  return ms_tensor_transpose(ctx, g, attr->axis, attr->axis2, &gin[0]);
}

static int j_transpose(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in,
                       ms_tensor *const *tin, ms_tensor *out, ms_tensor **tout) {
  (void)in, (void)out;
  return ms_tensor_transpose(ctx, tin[0], attr->axis, attr->axis2, tout);
}

static int f_permute(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  return ms__permute(ctx, in[0], attr->perm, out);
}

static int v_permute(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                     ms_tensor *g, const int *need, ms_tensor **gin) {
  (void)out, (void)need;
  int inv[MS_MAXDIM];
  for (int i = 0; i < in[0]->ndim; i++) {
    int p = attr->perm[i] < 0 ? attr->perm[i] + in[0]->ndim : attr->perm[i];
    inv[p] = i;
  }
  return ms_tensor_permute(ctx, g, inv, &gin[0]);
}

static int j_permute(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *const *tin,
                     ms_tensor *out, ms_tensor **tout) {
  (void)in, (void)out;
  return ms_tensor_permute(ctx, tin[0], attr->perm, tout);
}

static int f_slice(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  return ms__slice(ctx, in[0], attr->axis, attr->start, attr->stop, attr->step, out);
}

/* Scatter of a slice back into zeros of the source's shape (attr->shape). */
static int f_unslice(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  ms_tensor *z, *dst;
  TRY(ms_tensor_zeros(ctx, attr->ndim, attr->shape, &z));
  int st = ms__slice(ctx, z, attr->axis, attr->start, attr->stop, attr->step, &dst);
  if (st == MS_OK) {
    st = ms_tensor_copy_(ctx, dst, in[0]);
    ms_tensor_release(dst);
  }
  if (st) {
    ms_tensor_release(z);
    return st;
  }
  z->st->version = 0;
  *out = z;
  return MS_OK;
}

static int unslice(ms_ctx *ctx, const ms_attr *attr, const ms_tensor *src, ms_tensor *g,
                   ms_tensor **out) {
  ms_attr u = *attr;
  u.ndim = src->ndim;
  memcpy(u.shape, src->shape, sizeof(int64_t) * (size_t)src->ndim);
  return ms__apply(ctx, P_UNSLICE, &u, 1, &g, out);
}

static int v_slice(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                   ms_tensor *g, const int *need, ms_tensor **gin) {
  (void)out, (void)need;
  return unslice(ctx, attr, in[0], g, &gin[0]);
}

static int j_slice(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *const *tin,
                   ms_tensor *out, ms_tensor **tout) {
  (void)in, (void)out;
  return ms__apply(ctx, P_SLICE, attr, 1, &tin[0], tout);
}

static int v_unslice(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                     ms_tensor *g, const int *need, ms_tensor **gin) {
  (void)in, (void)out, (void)need;
  return ms__apply(ctx, P_SLICE, attr, 1, &g, &gin[0]);
}

static int j_unslice(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *const *tin,
                     ms_tensor *out, ms_tensor **tout) {
  (void)in, (void)out;
  return ms__apply(ctx, P_UNSLICE, attr, 1, &tin[0], tout);
}

static int f_expand(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  return ms__expand(ctx, in[0], attr->ndim, attr->shape, out);
}

static int v_expand(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                    ms_tensor *g, const int *need, ms_tensor **gin) {
  (void)attr, (void)out, (void)need;
  return sum_to_like(ctx, g, in[0], &gin[0]);
}

static int j_expand(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *const *tin,
                    ms_tensor *out, ms_tensor **tout) {
  (void)in, (void)out;
  return ms_tensor_expand(ctx, tin[0], attr->ndim, attr->shape, tout);
}

/* Raw sum of t over broadcast axes down to shape (checked to broadcast to t's shape). */
static int f_sum_to(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  const ms_tensor *t = in[0];
  int nd = attr->ndim, lead = t->ndim - nd;
  char b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
  int ok = lead >= 0;
  for (int i = 0; ok && i < nd; i++)
    ok = attr->shape[i] == t->shape[lead + i] || attr->shape[i] == 1;
  if (!ok)
    return ms_ctx_fail(ctx, MS_ESHAPE, "sum_to: cannot sum shape %s down to %s",
                       ms_shape_str(t->ndim, t->shape, b1, sizeof b1),
                       ms_shape_str(nd, attr->shape, b2, sizeof b2));
  ms_tensor *cur = ms_tensor_retain((ms_tensor *)t), *next;
  for (int i = 0; i < lead; i++) {
    int st = ms__reduce(ctx, MS_SUM, cur, 0, 0, &next);
    ms_tensor_release(cur);
    if (st) return st;
    cur = next;
  }
  for (int i = 0; i < nd; i++) {
    if (attr->shape[i] != 1 || cur->shape[i] == 1) continue;
    int st = ms__reduce(ctx, MS_SUM, cur, i, 1, &next);
    ms_tensor_release(cur);
    if (st) return st;
    cur = next;
  }
  if (cur == t) { /* nothing to sum: hand out a fresh header */
    int st = ms__tensor_view(ctx, cur, cur->ndim, cur->shape, cur->strides, cur->offset, &next);
    ms_tensor_release(cur);
    if (st) return st;
    cur = next;
  }
  *out = cur;
  return MS_OK;
}

static int v_sum_to(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                    ms_tensor *g, const int *need, ms_tensor **gin) {
  (void)attr, (void)out, (void)need;
  return expand_like(ctx, g, in[0], &gin[0]);
}

static int j_sum_to(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *const *tin,
                    ms_tensor *out, ms_tensor **tout) {
  (void)in, (void)out;
  return ms_sum_to(ctx, tin[0], attr->ndim, attr->shape, tout);
}

static int f_cat(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  return ms__cat(ctx, attr->ncat, in, attr->axis, out);
}

static int v_cat(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                 ms_tensor *g, const int *need, ms_tensor **gin) {
  (void)out;
  int ax = attr->axis < 0 ? attr->axis + in[0]->ndim : attr->axis;
  int64_t pos = 0;
  for (int k = 0; k < attr->ncat; k++) {
    int64_t len = in[k]->shape[ax];
    if (need[k]) {
      ms_attr s;
      memset(&s, 0, sizeof s);
      s.axis = ax, s.start = pos, s.stop = pos + len, s.step = 1;
      TRY(ms__apply(ctx, P_SLICE, &s, 1, &g, &gin[k]));
    }
    pos += len;
  }
  return MS_OK;
}

static int j_cat(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *const *tin,
                 ms_tensor *out, ms_tensor **tout) {
  (void)out;
  int n = attr->ncat, st = MS_OK;
  /* the tangent of cat is the cat of the tangents, zeros standing in for constant inputs */
  ms_tensor *parts_small[16] = {0}, **parts = parts_small;
  if (n > 16) {
    parts = ms_ctx_alloc(ctx, (size_t)n * sizeof *parts);
    if (parts == NULL) return MS_ENOMEM;
  }
  for (int k = 0; k < n; k++) {
    parts[k] = NULL;
    if (st) continue;
    if (tin[k]) {
      parts[k] = ms_tensor_retain(tin[k]);
    } else {
      st = ms_tensor_zeros(ctx, in[k]->ndim, in[k]->shape, &parts[k]);
    }
  }
  if (st == MS_OK) st = ms_tensor_cat(ctx, n, parts, attr->axis, tout);
  for (int k = 0; k < n; k++) ms_tensor_release(parts[k]);
  if (parts != parts_small) ms_ctx_dealloc(ctx, parts, (size_t)n * sizeof *parts);
  return st;
}

/* ---- losses ---- */

static int f_log_softmax(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  ms_tensor *lse;
  TRY(ms__reduce(ctx, MS_LOGSUMEXP, in[0], attr->axis, 1, &lse));
  int st = ms__binary(ctx, MS_SUB, in[0], lse, out);
  ms_tensor_release(lse);
  return st;
}

/* g - softmax * sum(g): the VJP, and with g = tangent the JVP is t - sum(softmax * t). */
static int v_log_softmax(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                         ms_tensor *g, const int *need, ms_tensor **gin) {
  (void)in, (void)need;
  ms_tensor *p, *s, *t;
  TRY(un(ctx, MS_EXP, out, &p));
  int st = ms_reduce(ctx, MS_SUM, g, attr->axis, 1, &s);
  if (st == MS_OK) {
    st = bin(ctx, MS_MUL, p, s, &t);
    ms_tensor_release(s);
    if (st == MS_OK) st = bin(ctx, MS_SUB, g, t, &gin[0]), ms_tensor_release(t);
  }
  ms_tensor_release(p);
  return st;
}

static int j_log_softmax(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in,
                         ms_tensor *const *tin, ms_tensor *out, ms_tensor **tout) {
  (void)in;
  ms_tensor *p, *pt, *s;
  TRY(un(ctx, MS_EXP, out, &p));
  int st = bin(ctx, MS_MUL, p, tin[0], &pt);
  ms_tensor_release(p);
  if (st) return st;
  st = ms_reduce(ctx, MS_SUM, pt, attr->axis, 1, &s);
  ms_tensor_release(pt);
  if (st) return st;
  st = bin(ctx, MS_SUB, tin[0], s, tout);
  ms_tensor_release(s);
  return st;
}

/* Checks labels and builds the one-hot matrix [n,k] (a constant). */
static int onehot(ms_ctx *ctx, const ms_tensor *logits, const ms_tensor *labels, ms_tensor **out) {
  char b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
  if (logits->ndim != 2 || labels->ndim != 1 || labels->shape[0] != logits->shape[0])
    return ms_ctx_fail(ctx, MS_ESHAPE,
                       "softmax_xent: expected logits [n,k] and labels [n], got %s and %s",
                       ms_shape_str(logits->ndim, logits->shape, b1, sizeof b1),
                       ms_shape_str(labels->ndim, labels->shape, b2, sizeof b2));
  int64_t n = logits->shape[0], k = logits->shape[1];
  TRY(ms_tensor_zeros(ctx, 2, logits->shape, out));
  double *oh = MS_TENSOR_DATA(*out);
  const double *lab = MS_TENSOR_DATA(labels);
  for (int64_t i = 0; i < n; i++) {
    double c = lab[i * labels->strides[0]];
    if (!(c >= 0 && c < (double)k) || c != floor(c)) {
      ms_tensor_release(*out);
      *out = NULL;
      return ms_ctx_fail(ctx, MS_EINDEX,
                         "softmax_xent: label %g of example %lld is not a class index in 0..%lld",
                         c, (long long)i, (long long)k - 1);
    }
    oh[i * k + (int64_t)c] = 1.0;
  }
  return MS_OK;
}

static int f_softmax_xent(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  (void)attr;
  ms_tensor *oh, *lse, *picked, *prod;
  TRY(onehot(ctx, in[0], in[1], &oh));
  int st = ms__binary(ctx, MS_MUL, in[0], oh, &prod);
  ms_tensor_release(oh);
  if (st) return st;
  st = ms__reduce(ctx, MS_SUM, prod, 1, 0, &picked);
  ms_tensor_release(prod);
  if (st) return st;
  st = ms__reduce(ctx, MS_LOGSUMEXP, in[0], 1, 0, &lse);
  if (st == MS_OK) st = ms__binary(ctx, MS_SUB, lse, picked, out), ms_tensor_release(lse);
  ms_tensor_release(picked);
  return st;
}

/* d loss_i / d logits_i = softmax_i - onehot_i */
static int xent_partial(ms_ctx *ctx, ms_tensor *logits, ms_tensor *labels, ms_tensor **d) {
  ms_tensor *oh, *ls, *p;
  TRY(onehot(ctx, logits, labels, &oh));
  int st = ms_log_softmax(ctx, logits, 1, &ls);
  if (st == MS_OK) {
    st = un(ctx, MS_EXP, ls, &p);
    ms_tensor_release(ls);
    if (st == MS_OK) st = bin_take(ctx, MS_SUB, p, oh, d);
  }
  ms_tensor_release(oh);
  return st;
}

static int v_softmax_xent(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                          ms_tensor *g, const int *need, ms_tensor **gin) {
  (void)attr, (void)out;
  if (!need[0]) return MS_OK; /* labels are not differentiable */
  ms_tensor *d, *gc;
  int64_t shape[2] = {g->shape[0], 1};
  TRY(xent_partial(ctx, in[0], in[1], &d));
  int st = ms_tensor_reshape(ctx, g, 2, shape, &gc);
  if (st == MS_OK) st = bin(ctx, MS_MUL, d, gc, &gin[0]), ms_tensor_release(gc);
  ms_tensor_release(d);
  return st;
}

static int j_softmax_xent(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in,
                          ms_tensor *const *tin, ms_tensor *out, ms_tensor **tout) {
  (void)attr, (void)out;
  if (tin[0] == NULL) return MS_OK;
  ms_tensor *d, *t;
  TRY(xent_partial(ctx, in[0], in[1], &d));
  int st = bin_take(ctx, MS_MUL, d, tin[0], &t);
  if (st) return st;
  st = ms_reduce(ctx, MS_SUM, t, 1, 0, tout);
  ms_tensor_release(t);
  return st;
}

/* ---- the table ---- */

static const char *binop_name_of(const ms_attr *attr) { return ms_binop_name(attr->binop); }
static const char *unop_name_of(const ms_attr *attr) { return ms_unop_name(attr->unop); }
static const char *redop_name_of(const ms_attr *attr) { return ms_redop_name(attr->redop); }

const ms_prim_def ms__prims[] = {
    [P_LEAF] = {"leaf", NULL, 0, NULL, NULL, NULL},
    [P_IDENTITY] = {"identity", NULL, 1, f_identity, v_identity, j_identity},
    [P_COPY] = {"copy", NULL, 1, f_copy, v_identity, j_identity},
    [P_BINARY] = {"binary", binop_name_of, 2, f_binary, v_binary, j_binary},
    [P_UNARY] = {"unary", unop_name_of, 1, f_unary, v_unary, j_unary},
    [P_REDUCE] = {"reduce", redop_name_of, 1, f_reduce, v_reduce, j_reduce},
    [P_WHERE] = {"where", NULL, 3, f_where, v_where, j_where},
    [P_CLAMP] = {"clamp", NULL, 1, f_clamp, v_clamp, j_clamp},
    [P_DOT] = {"dot", NULL, 2, f_dot, v_product, j_dot},
    [P_MATVEC] = {"matvec", NULL, 2, f_matvec, v_product, j_matvec},
    [P_MATMUL] = {"matmul", NULL, 2, f_matmul, v_product, j_matmul},
    [P_OUTER] = {"outer", NULL, 2, f_outer, v_product, j_outer},
    [P_DIAG] = {"diag", NULL, 1, f_diag, v_diag, j_diag},
    [P_RESHAPE] = {"reshape", NULL, 1, f_reshape, v_reshape, j_reshape},
    [P_TRANSPOSE] = {"transpose", NULL, 1, f_transpose, v_transpose, j_transpose},
    [P_PERMUTE] = {"permute", NULL, 1, f_permute, v_permute, j_permute},
    [P_SLICE] = {"slice", NULL, 1, f_slice, v_slice, j_slice},
    [P_UNSLICE] = {"unslice", NULL, 1, f_unslice, v_unslice, j_unslice},
    [P_EXPAND] = {"expand", NULL, 1, f_expand, v_expand, j_expand},
    [P_SUM_TO] = {"sum_to", NULL, 1, f_sum_to, v_sum_to, j_sum_to},
    [P_CAT] = {"cat", NULL, -1, f_cat, v_cat, j_cat},
    [P_LOG_SOFTMAX] = {"log_softmax", NULL, 1, f_log_softmax, v_log_softmax, j_log_softmax},
    [P_SOFTMAX_XENT] = {"softmax_xent", NULL, 2, f_softmax_xent, v_softmax_xent, j_softmax_xent},
    [P_CUSTOM] = {"custom", ms__custom_name, -1, ms__custom_forward, ms__custom_vjp,
                  ms__custom_jvp},
};
_Static_assert(sizeof ms__prims / sizeof ms__prims[0] == P_COUNT,
               "ms__prims needs one row per ms_prim");

const char *ms__prim_name(ms_prim p, const ms_attr *attr) {
  const ms_prim_def *def = &ms__prims[p];
  return def->name_of ? def->name_of(attr) : def->name;
}
