/*
 * Autodiff (engine/src/ad.c, ad_rules.c, api.c).
 *
 * Every differentiable primitive is run through one generic harness that checks, on
 * well-conditioned inputs away from kinks:
 *   - the primal value under a tape equals the untracked value;
 *   - reverse mode J^T u against central differences of <u, f(x)> (first order);
 *   - forward mode against reverse mode: <u, J v> = <J^T u, v>;
 *   - H v three ways (reverse-over-reverse with nested tapes, forward-over-reverse,
 *     reverse-over-forward) against central differences of gradients
 *     (g(x + h v) - g(x - h v)) / 2h, and against each other;
 *   - no bytes left in the context afterwards.
 * Then: H v of a quadratic to 1e-12, the meta-gradient through 100 unrolled gradient-descent
 * steps against its closed form, third order and forward over forward, a tangent that
 * depends on an outer tape, the error paths, and a failing allocation at every point of
 * every case's second-order computation (MS_ENOMEM, nothing leaked).
 * Golden values come from central differences or closed forms, never from the engine's
 * own derivative code.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "metastep/metastep.h"

#define MAXIN 4
#define MAXEL 256

static const char *cur_case = "";

/* A call that must succeed: on failure records it (with the engine's message) and jumps
 * to the enclosing function's `out` label, where everything is released. */
#define OK(call)                                                                                 \
  do {                                                                                           \
    int ok_st_ = (call);                                                                         \
    if (ok_st_ != MS_OK) {                                                                       \
      check_failed++;                                                                            \
      fprintf(stderr, "%s:%d: [%s] %s failed: %d \"%s\"\n", __FILE__, __LINE__, cur_case, #call, \
              ok_st_, ms_ctx_error(ctx));                                                        \
      goto out;                                                                                  \
    }                                                                                            \
  } while (0)

/* Pushes a level of the given mode and watches x on it (tangent v, NULL on a reverse level). */
static int push_watch(ms_ctx *ctx, ms_ad_mode mode, ms_tensor *x, ms_tensor *v, ms_level **l,
                      ms_tensor **xw) {
  int st = ms_ad_push(ctx, mode, l);
  return st == MS_OK ? ms_ad_watch(ctx, *l, x, v, xw) : st;
}

/* check_near_arr with the current case in the message. */
static int near_arr(const char *what, const double *a, const double *b, int64_t n, double tol,
                    double floor) {
  char label[256];
  snprintf(label, sizeof label, "[%s] %s", cur_case, what);
  return check_near_arr(label, a, b, (long)n, tol, floor);
}

static void near_val(const char *what, double a, double b, double tol) {
  double s = fabs(b) > 1 ? fabs(b) : 1;
  if (fabs(a - b) <= tol * s) {
    check_passed++;
  } else {
    check_failed++;
    fprintf(stderr, "[%s] %s: %.17g vs %.17g (diff %.3g)\n", cur_case, what, a, b, fabs(a - b));
  }
}

/* ---- the cases ---- */

typedef enum { G_ANY, G_POS, G_AWAY } gen_kind;

typedef struct fcase fcase;
/* Computes *y from inputs x with public engine operations. */
typedef int (*fn_t)(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y);

struct fcase {
  const char *name;
  fn_t f;
  int nin;
  int ndim[MAXIN];
  int64_t shape[MAXIN][4];
  gen_kind gen[MAXIN];
  int code, axis, keepdim;
};

static double gen_value(ms_rng *r, gen_kind g) {
  double u = ms_rng_uniform(r);
  switch (g) {
    case G_POS:
      return 0.5 + 1.5 * u; /* [0.5, 2) */
    case G_AWAY: {          /* +-[0.3, 1.3): away from 0 */
      double m = 0.3 + u;
      return ms_rng_uniform(r) < 0.5 ? -m : m;
    }
    default:
      return 2 * u - 1; /* [-1, 1) */
  }
}

static int64_t numel_of(int nd, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < nd; i++) n *= shape[i];
  return n;
}

static int f_bin(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  return ms_binary(ctx, (ms_binop)c->code, x[0], x[1], y);
}
/* s op x (keepdim = 1) or x op s, through ms_binary_scalar */
static int f_bin_scalar(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  return ms_binary_scalar(ctx, (ms_binop)c->code, x[0], 1.3, c->keepdim, y);
}
static int f_un(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  return ms_unary(ctx, (ms_unop)c->code, x[0], y);
}
static int f_red(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  return ms_reduce(ctx, (ms_redop)c->code, x[0], c->axis, c->keepdim, y);
}
/* reduction of a transposed (strided) input */
static int f_red_t(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  ms_tensor *t;
  int st = ms_tensor_transpose(ctx, x[0], 0, 1, &t);
  if (st) return st;
  st = ms_reduce(ctx, (ms_redop)c->code, t, c->axis, c->keepdim, y);
  ms_tensor_release(t);
  return st;
}
/* where(cond, x0, x1) with a fixed checkerboard condition of shape [2,3] */
static int f_where(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  (void)c;
  ms_tensor *cond;
  int st = ms_tensor_from_data(ctx, 2, (const int64_t[]){2, 3}, (const double[]){1, 0, 1, 0, 1, 0},
                               &cond);
  if (st) return st;
  st = ms_where(ctx, cond, x[0], x[1], y);
  ms_tensor_release(cond);
  return st;
}
/* where(relu(x0), x1, x2): a tracked condition (not differentiable: zero gradient) */
static int f_where_tracked(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  (void)c;
  ms_tensor *cond;
  int st = ms_unary(ctx, MS_RELU, x[0], &cond);
  if (st) return st;
  st = ms_where(ctx, cond, x[1], x[2], y);
  ms_tensor_release(cond);
  return st;
}
/* A case function that needs nothing of its case: *y = the call, of ctx and the inputs x. */
#define CASE_FN(name, ...)                                                           \
  static int name(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) { \
    (void)c;                                                                         \
    return __VA_ARGS__;                                                              \
  }
CASE_FN(f_clamp, ms_clamp(ctx, x[0], -0.5, 0.5, y))
CASE_FN(f_dot, ms_dot(ctx, x[0], x[1], y))
CASE_FN(f_matvec, ms_matvec(ctx, x[0], x[1], y))
CASE_FN(f_matmul, ms_matmul(ctx, x[0], x[1], y))
/* x0^T @ x1: a strided left operand */
static int f_matmul_t(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  (void)c;
  ms_tensor *t;
  int st = ms_tensor_transpose(ctx, x[0], 0, 1, &t);
  if (st) return st;
  st = ms_matmul(ctx, t, x[1], y);
  ms_tensor_release(t);
  return st;
}
CASE_FN(f_outer, ms_outer(ctx, x[0], x[1], y))
CASE_FN(f_diag, ms_tensor_diag(ctx, x[0], y))
/* view (code 1) or reshape (code 0) of x to [3,-1] */
static int f_reshape(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  const int64_t shape[2] = {3, -1};
  return c->code ? ms_tensor_view(ctx, x[0], 2, shape, y)
                 : ms_tensor_reshape(ctx, x[0], 2, shape, y);
}
/* reshape of a transposed (non-contiguous) tensor: copies */
static int f_reshape_t(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  (void)c;
  ms_tensor *t;
  int st = ms_tensor_transpose(ctx, x[0], 0, 1, &t);
  if (st) return st;
  st = ms_tensor_reshape(ctx, t, 1, (const int64_t[]){-1}, y);
  ms_tensor_release(t);
  return st;
}
CASE_FN(f_transpose, ms_tensor_transpose(ctx, x[0], 0, -1, y))
CASE_FN(f_permute, ms_tensor_permute(ctx, x[0], (const int[]){2, 0, 1}, y))
/* slice along c->axis: [1, 6) step 2 when code = 2, [1, 3) step 1 otherwise */
static int f_slice(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  return c->code == 2 ? ms_tensor_slice(ctx, x[0], c->axis, 1, 6, 2, y)
                      : ms_tensor_slice(ctx, x[0], c->axis, 1, 3, 1, y);
}
static int f_select(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  return ms_tensor_select(ctx, x[0], c->axis, c->code, y);
}
/* expand to [2,3,4] */
CASE_FN(f_expand, ms_tensor_expand(ctx, x[0], 3, (const int64_t[]){2, 3, 4}, y))
/* sum_to shape c->shape[1] of rank c->code */
static int f_sum_to(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  return ms_sum_to(ctx, x[0], c->code, c->shape[1], y);
}
static int f_cat(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  return ms_tensor_cat(ctx, c->nin, x, c->axis, y);
}
/* cat of a tracked and an untracked (constant) tensor */
static int f_cat_const(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  (void)c;
  ms_tensor *k, *parts[2];
  int st = ms_tensor_full(ctx, 2, (const int64_t[]){2, 2}, 0.7, &k);
  if (st) return st;
  parts[0] = k, parts[1] = x[0];
  st = ms_tensor_cat(ctx, 2, parts, 1, y);
  ms_tensor_release(k);
  return st;
}
static int f_log_softmax(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  return ms_log_softmax(ctx, x[0], c->axis, y);
}
static int f_xent(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  (void)c;
  ms_tensor *labels;
  int st = ms_tensor_from_data(ctx, 1, (const int64_t[]){3}, (const double[]){2, 0, 3}, &labels);
  if (st) return st;
  st = ms_softmax_xent(ctx, x[0], labels, y);
  ms_tensor_release(labels);
  return st;
}
CASE_FN(f_copy, ms_tensor_copy(ctx, x[0], y))
/* contiguous of a transposed view (code 1, copies) or of x itself (code 0) */
static int f_contiguous(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  if (!c->code) return ms_tensor_contiguous(ctx, x[0], y);
  ms_tensor *t;
  int st = ms_tensor_transpose(ctx, x[0], 0, 1, &t);
  if (st) return st;
  st = ms_tensor_contiguous(ctx, t, y);
  ms_tensor_release(t);
  return st;
}
/* x used twice in one node and twice overall: x * x + sin(x) (accumulation) */
static int f_reuse(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  (void)c;
  ms_tensor *a = NULL, *b = NULL;
  int st = ms_binary(ctx, MS_MUL, x[0], x[0], &a);
  if (st == MS_OK) st = ms_unary(ctx, MS_SIN, x[0], &b);
  if (st == MS_OK) st = ms_binary(ctx, MS_ADD, a, b, y);
  ms_tensor_release(a);
  ms_tensor_release(b);
  return st;
}
/* A small network loss: softmax_xent(tanh(X W1) W2) with X = x0 [3,4], W1 = x1 [4,5],
 * W2 = x2 [5,4], averaged over the batch. */
static int f_mlp(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  (void)c;
  ms_tensor *h = NULL, *a = NULL, *z = NULL, *l = NULL, *labels = NULL;
  int st = ms_matmul(ctx, x[0], x[1], &h);
  if (st == MS_OK) st = ms_unary(ctx, MS_TANH, h, &a);
  if (st == MS_OK) st = ms_matmul(ctx, a, x[2], &z);
  if (st == MS_OK)
    st = ms_tensor_from_data(ctx, 1, (const int64_t[]){3}, (const double[]){1, 3, 0}, &labels);
  if (st == MS_OK) st = ms_softmax_xent(ctx, z, labels, &l);
  if (st == MS_OK) st = ms_reduce(ctx, MS_MEAN, l, MS_ALL, 0, y);
  ms_tensor_release(h);
  ms_tensor_release(a);
  ms_tensor_release(z);
  ms_tensor_release(l);
  ms_tensor_release(labels);
  return st;
}

/* ---- a custom primitive: out = a * a * b, with engine-op rules ---- */

static int cust_forward(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor **out) {
  (void)ud;
  ms_tensor *aa;
  int st = ms_binary(ctx, MS_MUL, in[0], in[0], &aa);
  if (st) return st;
  st = ms_binary(ctx, MS_MUL, aa, in[1], out);
  ms_tensor_release(aa);
  return st;
}
/* d/da = 2ab, d/db = a^2 (ud != NULL: also sets the unneeded entries, which must be ignored) */
static int cust_vjp(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor *out, ms_tensor *gout,
                    const int *need, ms_tensor **gin) {
  (void)out;
  ms_tensor *t = NULL, *u = NULL;
  int st = MS_OK;
  int all = ud != NULL;
  if (need[0] || all) {
    st = ms_binary(ctx, MS_MUL, in[0], in[1], &t);
    if (st == MS_OK) st = ms_binary_scalar(ctx, MS_MUL, t, 2.0, 0, &u);
    if (st == MS_OK) st = ms_binary(ctx, MS_MUL, u, gout, &gin[0]);
    ms_tensor_release(t);
    ms_tensor_release(u);
    t = u = NULL;
  }
  if (st == MS_OK && (need[1] || all)) {
    st = ms_binary(ctx, MS_MUL, in[0], in[0], &t);
    if (st == MS_OK) st = ms_binary(ctx, MS_MUL, t, gout, &gin[1]);
    ms_tensor_release(t);
  }
  return st;
}
static int cust_jvp(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor *const *tin,
                    ms_tensor *out, ms_tensor **tout) {
  (void)ud, (void)out;
  ms_tensor *t = NULL, *u = NULL, *p = NULL, *q = NULL;
  int st = MS_OK;
  if (tin[0]) {
    st = ms_binary(ctx, MS_MUL, in[0], in[1], &t);
    if (st == MS_OK) st = ms_binary_scalar(ctx, MS_MUL, t, 2.0, 0, &u);
    if (st == MS_OK) st = ms_binary(ctx, MS_MUL, u, tin[0], &p);
  }
  if (st == MS_OK && tin[1]) {
    ms_tensor_release(t);
    st = ms_binary(ctx, MS_MUL, in[0], in[0], &t);
    if (st == MS_OK) st = ms_binary(ctx, MS_MUL, t, tin[1], &q);
  }
  if (st == MS_OK) {
    if (p && q) {
      st = ms_binary(ctx, MS_ADD, p, q, tout);
    } else {
      *tout = ms_tensor_retain(p ? p : q);
    }
  }
  ms_tensor_release(t);
  ms_tensor_release(u);
  ms_tensor_release(p);
  ms_tensor_release(q);
  return st;
}

static int f_custom(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  ms_custom *op;
  ms_custom_op def = {
      "a2b", 2, cust_forward, cust_vjp, cust_jvp, NULL, c->code ? (void *)&def : NULL};
  int st = ms_custom_new(ctx, &def, &op);
  if (st) return st;
  st = ms_custom_apply(ctx, op, x, y);
  ms_custom_release(op);
  return st;
}
/* the custom primitive with only its second input tracked (first is a constant) */
static int f_custom_half(ms_ctx *ctx, const fcase *c, ms_tensor *const *x, ms_tensor **y) {
  ms_tensor *k, *in[2];
  int st = ms_tensor_full(ctx, 1, (const int64_t[]){3}, 1.7, &k);
  if (st) return st;
  ms_custom *op;
  ms_custom_op def = {
      "a2b", 2, cust_forward, cust_vjp, cust_jvp, NULL, c->code ? (void *)&def : NULL};
  st = ms_custom_new(ctx, &def, &op);
  if (st == MS_OK) {
    in[0] = k, in[1] = x[0];
    st = ms_custom_apply(ctx, op, in, y);
    ms_custom_release(op);
  }
  ms_tensor_release(k);
  return st;
}

/* ---- the harness ---- */

typedef struct {
  int nin;
  int ndim[MAXIN];
  int64_t shape[MAXIN][4];
  int64_t n[MAXIN];
  double x[MAXIN][MAXEL], v[MAXIN][MAXEL];
  int ynd;
  int64_t yshape[MS_MAXDIM], yn;
  double u[MAXEL];
} problem;

static int make_inputs(ms_ctx *ctx, const problem *p, double (*xd)[MAXEL], ms_tensor **x) {
  for (int i = 0; i < p->nin; i++) x[i] = NULL;
  for (int i = 0; i < p->nin; i++) {
    int st = ms_tensor_from_data(ctx, p->ndim[i], p->shape[i], xd[i], &x[i]);
    if (st) {
      for (int j = 0; j < i; j++) ms_tensor_release(x[j]);
      return st;
    }
  }
  return MS_OK;
}

static void release_all(ms_tensor **t, int n) {
  for (int i = 0; i < n; i++) {
    ms_tensor_release(t[i]);
    t[i] = NULL;
  }
}

static int tensor_u(ms_ctx *ctx, const problem *p, ms_tensor **u) {
  return ms_tensor_from_data(ctx, p->ynd, p->yshape, p->u, u);
}

/* <u, f(x)> with nothing tracked */
static int eval_s(ms_ctx *ctx, const fcase *c, const problem *p, double (*xd)[MAXEL], double *s) {
  ms_tensor *x[MAXIN], *y = NULL;
  double yd[MAXEL];
  int st = make_inputs(ctx, p, xd, x);
  if (st) return st;
  st = c->f(ctx, c, x, &y);
  if (st == MS_OK) st = ms_tensor_read(ctx, y, yd, MAXEL);
  if (st == MS_OK) {
    *s = 0;
    for (int64_t k = 0; k < p->yn; k++) *s += p->u[k] * yd[k];
  }
  ms_tensor_release(y);
  release_all(x, p->nin);
  return st;
}

/* J^T u at xd with one reverse tape, into g[i][...] */
static int eval_grad(ms_ctx *ctx, const fcase *c, const problem *p, double (*xd)[MAXEL],
                     double (*g)[MAXEL]) {
  ms_tensor *x[MAXIN] = {0}, *xw[MAXIN] = {0}, *gr[MAXIN] = {0}, *y = NULL, *u = NULL;
  ms_level *tape = NULL;
  int st = make_inputs(ctx, p, xd, x);
  if (st) return st;
  if ((st = ms_ad_push(ctx, MS_AD_REVERSE, &tape))) goto done;
  for (int i = 0; i < p->nin; i++)
    if ((st = ms_ad_watch(ctx, tape, x[i], NULL, &xw[i]))) goto done;
  if ((st = c->f(ctx, c, xw, &y))) goto done;
  if ((st = ms_ad_pop(ctx, tape))) goto done;
  if ((st = tensor_u(ctx, p, &u))) goto done;
  if ((st = ms_ad_gradient(ctx, tape, y, u, p->nin, xw, gr))) goto done;
  for (int i = 0; i < p->nin && st == MS_OK; i++) st = ms_tensor_read(ctx, gr[i], g[i], MAXEL);
done:
  ms_ad_free(tape);
  ms_tensor_release(y);
  ms_tensor_release(u);
  release_all(x, p->nin);
  release_all(xw, p->nin);
  release_all(gr, p->nin);
  return st;
}

static double dotn(const double *a, const double *b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

/* *acc += sum(g * v), a differentiable 0-d tensor (*acc NULL: the first term); on failure *acc
 * is released and NULL. */
static int add_dot(ms_ctx *ctx, ms_tensor **acc, ms_tensor *g, ms_tensor *v) {
  ms_tensor *gv = NULL, *r = NULL, *sum = NULL;
  int st = ms_binary(ctx, MS_MUL, g, v, &gv);
  if (st == MS_OK) st = ms_reduce(ctx, MS_SUM, gv, MS_ALL, 0, &r);
  if (st == MS_OK && *acc) st = ms_binary(ctx, MS_ADD, *acc, r, &sum);
  ms_tensor_release(gv);
  if (*acc) {
    ms_tensor_release(r);
    ms_tensor_release(*acc);
    *acc = sum;
  } else {
    *acc = r;
  }
  return st;
}

/* sum_i sum(g[i] * v[i]) as a differentiable 0-d tensor */
static int pair_with_v(ms_ctx *ctx, const problem *p, ms_tensor **g, ms_tensor **s) {
  ms_tensor *acc = NULL;
  *s = NULL;
  for (int i = 0; i < p->nin; i++) {
    ms_tensor *v = NULL;
    int st = ms_tensor_from_data(ctx, p->ndim[i], p->shape[i], p->v[i], &v);
    if (st == MS_OK) st = add_dot(ctx, &acc, g[i], v);
    ms_tensor_release(v);
    if (st) {
      ms_tensor_release(acc);
      return st;
    }
  }
  *s = acc;
  return MS_OK;
}

/* Pushes a forward level *l and watches each input x[i] on it as xw[i], with the tangent p->v[i]
 * (a new tensor in tv[i]). */
static int push_forward_inputs(ms_ctx *ctx, const fcase *c, const problem *p, ms_tensor **x,
                               ms_level **l, ms_tensor **tv, ms_tensor **xw) {
  int st = ms_ad_push(ctx, MS_AD_FORWARD, l);
  for (int i = 0; i < c->nin && st == MS_OK; i++) {
    st = ms_tensor_from_data(ctx, c->ndim[i], c->shape[i], p->v[i], &tv[i]);
    if (st == MS_OK) st = ms_ad_watch(ctx, *l, x[i], tv[i], &xw[i]);
  }
  return st;
}

/* On a new reverse level *l2 watching each xw[i] as xw2[i]: *y = the case's function and, once
 * *l2 is popped, its gradients g2 with output weights u (still tracked by the levels below). */
static int inner_grad(ms_ctx *ctx, const fcase *c, ms_tensor **xw, ms_tensor *u, ms_level **l2,
                      ms_tensor **xw2, ms_tensor **y, ms_tensor **g2) {
  int st = ms_ad_push(ctx, MS_AD_REVERSE, l2);
  for (int i = 0; i < c->nin && st == MS_OK; i++) st = ms_ad_watch(ctx, *l2, xw[i], NULL, &xw2[i]);
  if (st == MS_OK) st = c->f(ctx, c, xw2, y);
  if (st == MS_OK) st = ms_ad_pop(ctx, *l2);
  if (st == MS_OK) st = ms_ad_gradient(ctx, *l2, *y, u, c->nin, xw2, g2);
  return st;
}

static void run_case(const fcase *c, uint64_t seed) {
  static problem P;
  problem *p = &P;
  memset(p, 0, sizeof *p);
  cur_case = c->name;
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  ms_rng rng;
  ms_rng_seed(&rng, seed);
  ms_tensor *x[MAXIN] = {0}, *xw[MAXIN] = {0}, *xw2[MAXIN] = {0}, *gr[MAXIN] = {0};
  ms_tensor *g2[MAXIN] = {0}, *hv[MAXIN] = {0}, *tv[MAXIN] = {0};
  ms_tensor *y = NULL, *y0 = NULL, *u = NULL, *s = NULL, *jv = NULL;
  ms_level *l1 = NULL, *l2 = NULL;
  static double g0[MAXIN][MAXEL], gp[MAXIN][MAXEL], gm[MAXIN][MAXEL], xp[MAXIN][MAXEL];
  static double hv_rr[MAXIN][MAXEL], hv_fr[MAXIN][MAXEL], hv_rf[MAXIN][MAXEL], fd[MAXEL];
  double yd[MAXEL], yd0[MAXEL];

  p->nin = c->nin;
  for (int i = 0; i < c->nin; i++) {
    p->ndim[i] = c->ndim[i];
    memcpy(p->shape[i], c->shape[i], sizeof p->shape[i]);
    p->n[i] = numel_of(c->ndim[i], c->shape[i]);
    for (int64_t k = 0; k < p->n[i]; k++) {
      p->x[i][k] = gen_value(&rng, c->gen[i]);
      p->v[i][k] = 2 * ms_rng_uniform(&rng) - 1;
    }
  }
  /* the untracked value fixes the output shape and the cotangent u */
  OK(make_inputs(ctx, p, p->x, x));
  OK(c->f(ctx, c, x, &y0));
  p->ynd = ms_tensor_ndim(y0);
  memcpy(p->yshape, ms_tensor_shape(y0), sizeof(int64_t) * (size_t)p->ynd);
  p->yn = ms_tensor_numel(y0);
  for (int64_t k = 0; k < p->yn; k++) p->u[k] = 2 * ms_rng_uniform(&rng) - 1;
  OK(ms_tensor_read(ctx, y0, yd0, MAXEL));

  /* 1. first order: J^T u against central differences of <u, f> */
  OK(ms_ad_push(ctx, MS_AD_REVERSE, &l1));
  for (int i = 0; i < c->nin; i++) OK(ms_ad_watch(ctx, l1, x[i], NULL, &xw[i]));
  OK(c->f(ctx, c, xw, &y));
  OK(ms_ad_pop(ctx, l1));
  CHECK(ms_ad_depth(ctx) == 0);
  OK(ms_tensor_read(ctx, y, yd, MAXEL));
  near_arr("value under a tape", yd, yd0, p->yn, 0, 1e-300);
  OK(tensor_u(ctx, p, &u));
  OK(ms_ad_gradient(ctx, l1, y, u, c->nin, xw, gr));
  for (int i = 0; i < c->nin; i++) {
    OK(ms_tensor_read(ctx, gr[i], g0[i], MAXEL));
    CHECK(ms_tensor_ndim(gr[i]) == c->ndim[i]);
    memcpy(xp, p->x, sizeof xp);
    for (int64_t k = 0; k < p->n[i]; k++) {
      double h = 1e-5 * (fabs(p->x[i][k]) > 1 ? fabs(p->x[i][k]) : 1), sp, sm;
      xp[i][k] = p->x[i][k] + h;
      OK(eval_s(ctx, c, p, xp, &sp));
      xp[i][k] = p->x[i][k] - h;
      OK(eval_s(ctx, c, p, xp, &sm));
      xp[i][k] = p->x[i][k];
      fd[k] = (sp - sm) / (2 * h);
    }
    near_arr("gradient vs central differences", g0[i], fd, p->n[i], 1e-6, 1e-3);
  }
  release_all(xw, c->nin);
  release_all(gr, c->nin);
  ms_tensor_release(y), y = NULL;
  ms_ad_free(l1), l1 = NULL;

  /* 2. forward mode: <u, J v> = <J^T u, v> */
  OK(push_forward_inputs(ctx, c, p, x, &l1, tv, xw));
  OK(c->f(ctx, c, xw, &y));
  OK(ms_tensor_read(ctx, y, yd, MAXEL));
  near_arr("value under a forward level", yd, yd0, p->yn, 0, 1e-300);
  OK(ms_ad_tangent(ctx, l1, y, &jv));
  OK(ms_ad_pop(ctx, l1));
  CHECK(ms_tensor_ndim(jv) == p->ynd && ms_tensor_numel(jv) == p->yn);
  OK(ms_tensor_read(ctx, jv, yd, MAXEL));
  {
    double lhs = dotn(p->u, yd, p->yn), rhs = 0;
    for (int i = 0; i < c->nin; i++) rhs += dotn(g0[i], p->v[i], p->n[i]);
    near_val("<u, Jv> = <J^T u, v>", lhs, rhs, 1e-10);
  }
  release_all(xw, c->nin);
  release_all(tv, c->nin);
  CHECK_DROP(&y, &jv);
  ms_ad_free(l1), l1 = NULL;

  /* 3. second order. Golden: central differences of gradients along v. */
  for (int i = 0; i < c->nin; i++)
    for (int64_t k = 0; k < p->n[i]; k++) xp[i][k] = p->x[i][k] + 1e-5 * p->v[i][k];
  OK(eval_grad(ctx, c, p, xp, gp));
  for (int i = 0; i < c->nin; i++)
    for (int64_t k = 0; k < p->n[i]; k++) xp[i][k] = p->x[i][k] - 1e-5 * p->v[i][k];
  OK(eval_grad(ctx, c, p, xp, gm));
  for (int i = 0; i < c->nin; i++)
    for (int64_t k = 0; k < p->n[i]; k++) gp[i][k] = (gp[i][k] - gm[i][k]) / 2e-5;

  /* 3a. reverse over reverse: nested tapes */
  OK(ms_ad_push(ctx, MS_AD_REVERSE, &l1));
  for (int i = 0; i < c->nin; i++) OK(ms_ad_watch(ctx, l1, x[i], NULL, &xw[i]));
  OK(inner_grad(ctx, c, xw, u, &l2, xw2, &y, g2));
  for (int i = 0; i < c->nin; i++) {
    OK(ms_tensor_read(ctx, g2[i], gm[i], MAXEL));
    near_arr("inner gradient under an outer tape", gm[i], g0[i], p->n[i], 1e-14, 1e-3);
  }
  OK(pair_with_v(ctx, p, g2, &s));
  OK(ms_ad_pop(ctx, l1));
  OK(ms_ad_gradient(ctx, l1, s, NULL, c->nin, xw, hv));
  for (int i = 0; i < c->nin; i++) {
    OK(ms_tensor_read(ctx, hv[i], hv_rr[i], MAXEL));
    near_arr("Hv (reverse over reverse) vs differences", hv_rr[i], gp[i], p->n[i], 1e-6, 1e-3);
  }
  release_all(xw, c->nin);
  release_all(xw2, c->nin);
  release_all(g2, c->nin);
  release_all(hv, c->nin);
  CHECK_DROP(&y, &s);
  ms_ad_free(l2), l2 = NULL;
  ms_ad_free(l1), l1 = NULL;

  /* 3b. forward over reverse: tangent of the gradient */
  OK(push_forward_inputs(ctx, c, p, x, &l1, tv, xw));
  OK(inner_grad(ctx, c, xw, u, &l2, xw2, &y, g2));
  for (int i = 0; i < c->nin; i++) {
    OK(ms_ad_tangent(ctx, l1, g2[i], &hv[i]));
    OK(ms_tensor_read(ctx, hv[i], hv_fr[i], MAXEL));
    near_arr("Hv (forward over reverse) vs reverse over reverse", hv_fr[i], hv_rr[i], p->n[i],
             1e-10, 1e-3);
  }
  OK(ms_ad_pop(ctx, l1));
  release_all(xw, c->nin);
  release_all(xw2, c->nin);
  release_all(g2, c->nin);
  release_all(hv, c->nin);
  release_all(tv, c->nin);
  ms_tensor_release(y), y = NULL;
  ms_ad_free(l2), l2 = NULL;
  ms_ad_free(l1), l1 = NULL;

  /* 3c. reverse over forward: gradient of <u, J v> */
  OK(ms_ad_push(ctx, MS_AD_REVERSE, &l1));
  for (int i = 0; i < c->nin; i++) OK(ms_ad_watch(ctx, l1, x[i], NULL, &xw[i]));
  OK(ms_ad_push(ctx, MS_AD_FORWARD, &l2));
  for (int i = 0; i < c->nin; i++) {
    OK(ms_tensor_from_data(ctx, c->ndim[i], c->shape[i], p->v[i], &tv[i]));
    OK(ms_ad_watch(ctx, l2, xw[i], tv[i], &xw2[i]));
  }
  OK(c->f(ctx, c, xw2, &y));
  OK(ms_ad_tangent(ctx, l2, y, &jv));
  OK(ms_ad_pop(ctx, l2));
  {
    ms_tensor *prod = NULL;
    OK(ms_binary(ctx, MS_MUL, jv, u, &prod));
    int st = ms_reduce(ctx, MS_SUM, prod, MS_ALL, 0, &s);
    ms_tensor_release(prod);
    OK(st);
  }
  OK(ms_ad_pop(ctx, l1));
  OK(ms_ad_gradient(ctx, l1, s, NULL, c->nin, xw, hv));
  for (int i = 0; i < c->nin; i++) {
    OK(ms_tensor_read(ctx, hv[i], hv_rf[i], MAXEL));
    near_arr("Hv (reverse over forward) vs reverse over reverse", hv_rf[i], hv_rr[i], p->n[i],
             1e-10, 1e-3);
  }

out:
  ms_ad_free(l2);
  ms_ad_free(l1);
  release_all(x, MAXIN);
  release_all(xw, MAXIN);
  release_all(xw2, MAXIN);
  release_all(gr, MAXIN);
  release_all(g2, MAXIN);
  release_all(hv, MAXIN);
  release_all(tv, MAXIN);
  ms_tensor_release(y);
  ms_tensor_release(y0);
  ms_tensor_release(u);
  ms_tensor_release(s);
  ms_tensor_release(jv);
  CHECK(ms_ad_depth(ctx) == 0);
  if (ms_ctx_bytes(ctx) != 0) {
    check_failed++;
    fprintf(stderr, "[%s] %zu bytes leaked\n", c->name, ms_ctx_bytes(ctx));
  } else {
    check_passed++;
  }
  ms_ctx_free(ctx);
}

/* ---- the table of cases ---- */

/* clang-format off */

#define S(...) {__VA_ARGS__}
/* binary op on [2,3]x[2,3], [3,1]x[4], [2,3]x[3], 0-d x [2,3], [2,3] x 0-d */
#define BINCASES(NAME, OP, G0, G1)                                                            \
  {NAME " [2,3]x[2,3]", f_bin, 2, {2, 2}, {S(2, 3), S(2, 3)}, {G0, G1}, OP, 0, 0},            \
  {NAME " [3,1]x[4]", f_bin, 2, {2, 1}, {S(3, 1), S(4)}, {G0, G1}, OP, 0, 0},                 \
  {NAME " [2,3]x[3]", f_bin, 2, {2, 1}, {S(2, 3), S(3)}, {G0, G1}, OP, 0, 0},                 \
  {NAME " []x[2,3]", f_bin, 2, {0, 2}, {S(0), S(2, 3)}, {G0, G1}, OP, 0, 0},                  \
  {NAME " [2,3]x[]", f_bin, 2, {2, 0}, {S(2, 3), S(0)}, {G0, G1}, OP, 0, 0}
#define UNCASE(NAME, OP, G) {NAME, f_un, 1, {2}, {S(2, 3)}, {G}, OP, 0, 0}
/* reduction over axis 0, axis 1 keepdim, axis -1, all, all keepdim; and a strided input */
#define REDCASES(NAME, OP, G)                                                                 \
  {NAME " axis 0", f_red, 1, {2}, {S(3, 4)}, {G}, OP, 0, 0},                                  \
  {NAME " axis 1 keepdim", f_red, 1, {2}, {S(3, 4)}, {G}, OP, 1, 1},                          \
  {NAME " axis -1 of [2,3,4]", f_red, 1, {3}, {S(2, 3, 4)}, {G}, OP, -1, 0},                  \
  {NAME " axis 1 of [2,3,4] keepdim", f_red, 1, {3}, {S(2, 3, 4)}, {G}, OP, 1, 1},            \
  {NAME " all", f_red, 1, {2}, {S(3, 4)}, {G}, OP, MS_ALL, 0},                                \
  {NAME " all keepdim", f_red, 1, {2}, {S(3, 4)}, {G}, OP, MS_ALL, 1},                        \
  {NAME " axis 0 of a transpose", f_red_t, 1, {2}, {S(4, 3)}, {G}, OP, 0, 0}

static const fcase cases[] = {
  BINCASES("add", MS_ADD, G_ANY, G_ANY),
  BINCASES("sub", MS_SUB, G_ANY, G_ANY),
  BINCASES("mul", MS_MUL, G_ANY, G_ANY),
  BINCASES("div", MS_DIV, G_ANY, G_AWAY),
  BINCASES("pow", MS_POW, G_POS, G_ANY),
  BINCASES("maximum", MS_MAXIMUM, G_ANY, G_ANY),
  BINCASES("minimum", MS_MINIMUM, G_ANY, G_ANY),
  BINCASES("atan2", MS_ATAN2, G_AWAY, G_AWAY),
  {"sub scalar (x - s)", f_bin_scalar, 1, {2}, {S(2, 3)}, {G_ANY}, MS_SUB, 0, 0},
  {"sub scalar (s - x)", f_bin_scalar, 1, {2}, {S(2, 3)}, {G_ANY}, MS_SUB, 0, 1},
  {"div scalar (s / x)", f_bin_scalar, 1, {2}, {S(2, 3)}, {G_AWAY}, MS_DIV, 0, 1},
  {"pow scalar (x ^ s)", f_bin_scalar, 1, {2}, {S(2, 3)}, {G_POS}, MS_POW, 0, 0},
  {"pow scalar (s ^ x)", f_bin_scalar, 1, {2}, {S(2, 3)}, {G_ANY}, MS_POW, 0, 1},
  UNCASE("neg", MS_NEG, G_ANY),
  UNCASE("abs", MS_ABS, G_AWAY),
  UNCASE("exp", MS_EXP, G_ANY),
  UNCASE("log", MS_LOG, G_POS),
  UNCASE("log1p", MS_LOG1P, G_ANY),
  UNCASE("expm1", MS_EXPM1, G_ANY),
  UNCASE("sqrt", MS_SQRT, G_POS),
  UNCASE("square", MS_SQUARE, G_ANY),
  UNCASE("reciprocal", MS_RECIPROCAL, G_AWAY),
  UNCASE("tanh", MS_TANH, G_ANY),
  UNCASE("sigmoid", MS_SIGMOID, G_ANY),
  UNCASE("relu", MS_RELU, G_AWAY),
  UNCASE("softplus", MS_SOFTPLUS, G_ANY),
  UNCASE("sin", MS_SIN, G_ANY),
  UNCASE("cos", MS_COS, G_ANY),
  {"exp of 0-d", f_un, 1, {0}, {S(0)}, {G_ANY}, MS_EXP, 0, 0},
  REDCASES("sum", MS_SUM, G_ANY),
  REDCASES("mean", MS_MEAN, G_ANY),
  REDCASES("max", MS_MAX, G_ANY),
  REDCASES("min", MS_MIN, G_ANY),
  REDCASES("prod", MS_PROD, G_AWAY),
  REDCASES("norm", MS_NORM, G_ANY),
  REDCASES("logsumexp", MS_LOGSUMEXP, G_ANY),
  {"where [2,3] [2,3]", f_where, 2, {2, 2}, {S(2, 3), S(2, 3)}, {G_ANY, G_ANY}, 0, 0, 0},
  {"where [3] []", f_where, 2, {1, 0}, {S(3), S(0)}, {G_ANY, G_ANY}, 0, 0, 0},
  {"where, tracked condition", f_where_tracked, 3, {2, 2, 1}, {S(2, 3), S(2, 3), S(3)},
   {G_AWAY, G_ANY, G_ANY}, 0, 0, 0},
  {"clamp", f_clamp, 1, {2}, {S(3, 4)}, {G_ANY}, 0, 0, 0},
  {"dot [4].[4]", f_dot, 2, {1, 1}, {S(4), S(4)}, {G_ANY, G_ANY}, 0, 0, 0},
  {"matvec [3,4]x[4]", f_matvec, 2, {2, 1}, {S(3, 4), S(4)}, {G_ANY, G_ANY}, 0, 0, 0},
  {"matmul [3,4]x[4,2]", f_matmul, 2, {2, 2}, {S(3, 4), S(4, 2)}, {G_ANY, G_ANY}, 0, 0, 0},
  {"matmul [3,4]x[4]", f_matmul, 2, {2, 1}, {S(3, 4), S(4)}, {G_ANY, G_ANY}, 0, 0, 0},
  {"matmul [4]x[4,2]", f_matmul, 2, {1, 2}, {S(4), S(4, 2)}, {G_ANY, G_ANY}, 0, 0, 0},
  {"matmul [4]x[4]", f_matmul, 2, {1, 1}, {S(4), S(4)}, {G_ANY, G_ANY}, 0, 0, 0},
  {"matmul [4,3]^T x[4,2]", f_matmul_t, 2, {2, 2}, {S(4, 3), S(4, 2)}, {G_ANY, G_ANY}, 0, 0, 0},
  {"outer [3]x[4]", f_outer, 2, {1, 1}, {S(3), S(4)}, {G_ANY, G_ANY}, 0, 0, 0},
  {"diag [3] -> [3,3]", f_diag, 1, {1}, {S(3)}, {G_ANY}, 0, 0, 0},
  {"diag [3,3] -> [3]", f_diag, 1, {2}, {S(3, 3)}, {G_ANY}, 0, 0, 0},
  {"diag [3,5] -> [3]", f_diag, 1, {2}, {S(3, 5)}, {G_ANY}, 0, 0, 0},
  {"diag [4,2] -> [2]", f_diag, 1, {2}, {S(4, 2)}, {G_ANY}, 0, 0, 0},
  {"view [2,6] -> [3,-1]", f_reshape, 1, {2}, {S(2, 6)}, {G_ANY}, 1, 0, 0},
  {"reshape [12] -> [3,-1]", f_reshape, 1, {1}, {S(12)}, {G_ANY}, 0, 0, 0},
  {"reshape of a transpose", f_reshape_t, 1, {2}, {S(3, 4)}, {G_ANY}, 0, 0, 0},
  {"transpose", f_transpose, 1, {3}, {S(2, 3, 4)}, {G_ANY}, 0, 0, 0},
  {"permute", f_permute, 1, {3}, {S(2, 3, 4)}, {G_ANY}, 0, 0, 0},
  {"slice axis 1 step 2", f_slice, 1, {2}, {S(3, 7)}, {G_ANY}, 2, 1, 0},
  {"slice axis -2", f_slice, 1, {2}, {S(4, 3)}, {G_ANY}, 1, -2, 0},
  {"select axis 0", f_select, 1, {2}, {S(3, 4)}, {G_ANY}, 1, 0, 0},
  {"select axis 1", f_select, 1, {2}, {S(3, 4)}, {G_ANY}, 2, 1, 0},
  {"select axis -1 of [2,3,4]", f_select, 1, {3}, {S(2, 3, 4)}, {G_ANY}, 3, -1, 0},
  {"select of a vector", f_select, 1, {1}, {S(5)}, {G_ANY}, 4, 0, 0},
  {"expand [3,1] -> [2,3,4]", f_expand, 1, {2}, {S(3, 1)}, {G_ANY}, 0, 0, 0},
  {"expand [] -> [2,3,4]", f_expand, 1, {0}, {S(0)}, {G_ANY}, 0, 0, 0},
  {"sum_to [2,3,4] -> [3,1]", f_sum_to, 1, {3, 0}, {S(2, 3, 4), S(3, 1)}, {G_ANY}, 2, 0, 0},
  {"sum_to [2,3,4] -> [4]", f_sum_to, 1, {3, 0}, {S(2, 3, 4), S(4)}, {G_ANY}, 1, 0, 0},
  {"sum_to [2,3] -> []", f_sum_to, 1, {2, 0}, {S(2, 3), S(0)}, {G_ANY}, 0, 0, 0},
  {"sum_to [2,3] -> [2,3]", f_sum_to, 1, {2, 0}, {S(2, 3), S(2, 3)}, {G_ANY}, 2, 0, 0},
  {"cat axis 1", f_cat, 2, {2, 2}, {S(2, 3), S(2, 1)}, {G_ANY, G_ANY}, 0, 1, 0},
  {"cat of three axis 0", f_cat, 3, {1, 1, 1}, {S(2), S(3), S(1)}, {G_ANY, G_ANY, G_ANY}, 0, 0, 0},
  {"cat with a constant", f_cat_const, 1, {2}, {S(2, 3)}, {G_ANY}, 0, 0, 0},
  {"log_softmax axis 1", f_log_softmax, 1, {2}, {S(3, 4)}, {G_ANY}, 0, 1, 0},
  {"log_softmax axis 0", f_log_softmax, 1, {2}, {S(3, 4)}, {G_ANY}, 0, 0, 0},
  {"log_softmax axis -1 of a vector", f_log_softmax, 1, {1}, {S(5)}, {G_ANY}, 0, -1, 0},
  {"softmax_xent", f_xent, 1, {2}, {S(3, 4)}, {G_ANY}, 0, 0, 0},
  {"copy", f_copy, 1, {2}, {S(3, 4)}, {G_ANY}, 0, 0, 0},
  {"contiguous (already)", f_contiguous, 1, {2}, {S(3, 4)}, {G_ANY}, 0, 0, 0},
  {"contiguous of a transpose", f_contiguous, 1, {2}, {S(3, 4)}, {G_ANY}, 1, 0, 0},
  {"x*x + sin(x)", f_reuse, 1, {2}, {S(2, 3)}, {G_ANY}, 0, 0, 0},
  {"mlp loss", f_mlp, 3, {2, 2, 2}, {S(3, 4), S(4, 5), S(5, 4)}, {G_ANY, G_ANY, G_ANY}, 0, 0, 0},
  {"custom a*a*b", f_custom, 2, {1, 1}, {S(3), S(3)}, {G_ANY, G_ANY}, 0, 0, 0},
  {"custom, rule sets unneeded grads", f_custom, 2, {1, 1}, {S(3), S(3)}, {G_ANY, G_ANY}, 1, 0, 0},
  {"custom, first input constant", f_custom_half, 1, {1}, {S(3)}, {G_ANY}, 0, 0, 0},
  {"custom, first input constant, rule sets it", f_custom_half, 1, {1}, {S(3)}, {G_ANY}, 1, 0, 0},
};
/* clang-format on */

/* ---- Hessian-vector products of a quadratic ---- */

/* f(w) = 1/2 w^T H w */
static int quad(ms_ctx *ctx, ms_tensor *h, ms_tensor *w, ms_tensor **f) {
  ms_tensor *hw = NULL, *d = NULL;
  int st = ms_matvec(ctx, h, w, &hw);
  if (st == MS_OK) st = ms_dot(ctx, w, hw, &d);
  if (st == MS_OK) st = ms_binary_scalar(ctx, MS_MUL, d, 0.5, 0, f);
  ms_tensor_release(hw);
  ms_tensor_release(d);
  return st;
}

/* On a new reverse level *l2 watching ww as *ww2: *f = quad(h, ww2) and, once *l2 is popped, its
 * gradient *g = H ww2 (still tracked by the levels below). */
static int inner_quad_grad(ms_ctx *ctx, ms_tensor *h, ms_tensor *ww, ms_level **l2, ms_tensor **ww2,
                           ms_tensor **f, ms_tensor **g) {
  int st = push_watch(ctx, MS_AD_REVERSE, ww, NULL, l2, ww2);
  if (st == MS_OK) st = quad(ctx, h, *ww2, f);
  if (st == MS_OK) st = ms_ad_pop(ctx, *l2);
  if (st == MS_OK) st = ms_ad_gradient(ctx, *l2, *f, NULL, 1, ww2, g);
  return st;
}

static void test_hvp_quadratic(void) {
  cur_case = "hvp of a quadratic";
  enum { N = 6 };
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  ms_rng rng;
  ms_rng_seed(&rng, 42);
  double a[N * N], hd[N * N], wd[N], vd[N], want[N], got[N];
  for (int i = 0; i < N * N; i++) a[i] = 2 * ms_rng_uniform(&rng) - 1;
  for (int i = 0; i < N; i++)
    for (int j = 0; j < N; j++) hd[i * N + j] = a[i * N + j] + a[j * N + i];
  for (int i = 0; i < N; i++)
    wd[i] = 2 * ms_rng_uniform(&rng) - 1, vd[i] = 2 * ms_rng_uniform(&rng) - 1;
  for (int i = 0; i < N; i++) {
    want[i] = 0;
    for (int j = 0; j < N; j++) want[i] += hd[i * N + j] * vd[j];
  }
  ms_tensor *h = NULL, *w = NULL, *v = NULL, *ww = NULL, *ww2 = NULL, *f = NULL, *g = NULL;
  ms_tensor *gv = NULL, *s = NULL, *hv = NULL;
  ms_level *l1 = NULL, *l2 = NULL;
  OK(ms_tensor_from_data(ctx, 2, (const int64_t[]){N, N}, hd, &h));
  OK(ms_tensor_from_data(ctx, 1, (const int64_t[]){N}, wd, &w));
  OK(ms_tensor_from_data(ctx, 1, (const int64_t[]){N}, vd, &v));

  /* reverse over reverse */
  OK(push_watch(ctx, MS_AD_REVERSE, w, NULL, &l1, &ww));
  OK(inner_quad_grad(ctx, h, ww, &l2, &ww2, &f, &g));
  OK(ms_dot(ctx, g, v, &s));
  OK(ms_ad_pop(ctx, l1));
  OK(ms_ad_gradient(ctx, l1, s, NULL, 1, &ww, &hv));
  OK(ms_tensor_read(ctx, hv, got, N));
  for (int i = 0; i < N; i++) CHECK_NEAR(got[i], want[i], 1e-12);
  /* the gradient itself is H w */
  OK(ms_tensor_read(ctx, g, got, N));
  for (int i = 0; i < N; i++) {
    double hw = 0;
    for (int j = 0; j < N; j++) hw += hd[i * N + j] * wd[j];
    CHECK_NEAR(got[i], hw, 1e-12);
  }
  ms_ad_free(l2), l2 = NULL;
  ms_ad_free(l1), l1 = NULL;
  CHECK_DROP(&ww, &ww2, &f, &g, &s, &hv);

  /* forward over reverse */
  OK(push_watch(ctx, MS_AD_FORWARD, w, v, &l1, &ww));
  OK(inner_quad_grad(ctx, h, ww, &l2, &ww2, &f, &g));
  OK(ms_ad_tangent(ctx, l1, g, &hv));
  OK(ms_ad_pop(ctx, l1));
  OK(ms_tensor_read(ctx, hv, got, N));
  for (int i = 0; i < N; i++) CHECK_NEAR(got[i], want[i], 1e-12);
out:
  ms_ad_free(l2);
  ms_ad_free(l1);
  ms_tensor_release(h);
  ms_tensor_release(w);
  ms_tensor_release(v);
  ms_tensor_release(ww);
  ms_tensor_release(ww2);
  ms_tensor_release(f);
  ms_tensor_release(g);
  ms_tensor_release(gv);
  ms_tensor_release(s);
  ms_tensor_release(hv);
  check_ctx_free(ctx);
}

/* ---- meta-gradient through 100 unrolled gradient-descent steps ---- */

/*
 * f(w) = 1/2 w^T H w with H = Q diag(lambda) Q^T and w_0 = Q c. Gradient descent
 * w <- w - eta H w gives w_T = Q diag((1 - eta lambda)^T) c, so
 *   f(w_T)          = 1/2 sum_i lambda_i c_i^2 (1 - eta lambda_i)^(2T)
 *   d f(w_T) / deta = -T sum_i lambda_i^2 c_i^2 (1 - eta lambda_i)^(2T-1).
 * The inner gradient is taken on a nested tape at every step, so the outer level
 * (a reverse tape, or a forward level with d eta = 1) differentiates through it.
 */
enum { GD_N = 4, GD_T = 100 };

static void rotation(double *q) {
  for (int i = 0; i < GD_N * GD_N; i++) q[i] = i % (GD_N + 1) == 0;
  const int pairs[][2] = {{0, 1}, {1, 2}, {2, 3}, {0, 3}, {0, 2}, {1, 3}};
  const double angles[] = {0.3, -1.1, 0.7, 2.0, -0.4, 0.9};
  for (int k = 0; k < 6; k++) { /* q <- q G_k */
    int a = pairs[k][0], b = pairs[k][1];
    double cs = cos(angles[k]), sn = sin(angles[k]);
    for (int i = 0; i < GD_N; i++) {
      double qa = q[i * GD_N + a], qb = q[i * GD_N + b];
      q[i * GD_N + a] = cs * qa - sn * qb;
      q[i * GD_N + b] = sn * qa + cs * qb;
    }
  }
}

/* Runs the unrolled loop under level outer (tracking eta); *fT is f(w_T). */
static int unrolled(ms_ctx *ctx, ms_tensor *h, ms_tensor *w0, ms_tensor *eta, ms_tensor **fT) {
  ms_tensor *w = ms_tensor_retain(w0);
  int st = MS_OK;
  for (int t = 0; t < GD_T && st == MS_OK; t++) {
    ms_level *inner = NULL;
    ms_tensor *wi = NULL, *f = NULL, *g = NULL, *step = NULL, *next = NULL;
    st = ms_ad_push(ctx, MS_AD_REVERSE, &inner);
    if (st == MS_OK) st = ms_ad_watch(ctx, inner, w, NULL, &wi);
    if (st == MS_OK) st = quad(ctx, h, wi, &f);
    if (st == MS_OK) st = ms_ad_pop(ctx, inner);
    if (st == MS_OK) st = ms_ad_gradient(ctx, inner, f, NULL, 1, &wi, &g);
    if (st == MS_OK) st = ms_binary(ctx, MS_MUL, eta, g, &step);
    if (st == MS_OK) st = ms_binary(ctx, MS_SUB, w, step, &next);
    ms_ad_free(inner);
    ms_tensor_release(wi);
    ms_tensor_release(f);
    ms_tensor_release(g);
    ms_tensor_release(step);
    ms_tensor_release(w);
    w = next;
  }
  if (st == MS_OK) st = quad(ctx, h, w, fT);
  ms_tensor_release(w);
  return st;
}

static void test_unrolled_gd(void) {
  cur_case = "unrolled gradient descent";
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  const double lam[GD_N] = {0.2, 0.5, 1.0, 1.7}, c[GD_N] = {1.0, -2.0, 0.5, 1.5}, eta0 = 0.05;
  double q[GD_N * GD_N], hd[GD_N * GD_N], wd[GD_N], f_want = 0, d_want = 0, v;
  rotation(q);
  for (int i = 0; i < GD_N; i++) {
    wd[i] = 0;
    for (int j = 0; j < GD_N; j++) {
      wd[i] += q[i * GD_N + j] * c[j];
      hd[i * GD_N + j] = 0;
      for (int k = 0; k < GD_N; k++) hd[i * GD_N + j] += q[i * GD_N + k] * lam[k] * q[j * GD_N + k];
    }
  }
  for (int i = 0; i < GD_N; i++) {
    double r = 1 - eta0 * lam[i];
    f_want += 0.5 * lam[i] * c[i] * c[i] * pow(r, 2 * GD_T);
    d_want += -GD_T * lam[i] * lam[i] * c[i] * c[i] * pow(r, 2 * GD_T - 1);
  }
  ms_tensor *h = NULL, *w0 = NULL, *eta = NULL, *etaw = NULL, *fT = NULL, *d = NULL, *one = NULL;
  ms_level *outer = NULL;
  OK(ms_tensor_from_data(ctx, 2, (const int64_t[]){GD_N, GD_N}, hd, &h));
  OK(ms_tensor_from_data(ctx, 1, (const int64_t[]){GD_N}, wd, &w0));
  OK(ms_tensor_scalar(ctx, eta0, &eta));

  /* reverse over reverse */
  OK(push_watch(ctx, MS_AD_REVERSE, eta, NULL, &outer, &etaw));
  OK(unrolled(ctx, h, w0, etaw, &fT));
  OK(ms_ad_pop(ctx, outer));
  OK(ms_tensor_item(ctx, fT, &v));
  near_arr("f(w_T), reverse", &v, &f_want, 1, 1e-10, 1e-300);
  OK(ms_ad_gradient(ctx, outer, fT, NULL, 1, &etaw, &d));
  CHECK(ms_tensor_ndim(d) == 0);
  OK(ms_tensor_item(ctx, d, &v));
  near_arr("d f(w_T) / d eta, reverse over reverse", &v, &d_want, 1, 1e-9, 1e-300);
  ms_ad_free(outer), outer = NULL;
  CHECK_DROP(&etaw, &fT, &d);

  /* forward over reverse: d eta = 1 */
  OK(ms_tensor_scalar(ctx, 1.0, &one));
  OK(push_watch(ctx, MS_AD_FORWARD, eta, one, &outer, &etaw));
  OK(unrolled(ctx, h, w0, etaw, &fT));
  OK(ms_ad_tangent(ctx, outer, fT, &d));
  OK(ms_ad_pop(ctx, outer));
  OK(ms_tensor_item(ctx, fT, &v));
  near_arr("f(w_T), forward", &v, &f_want, 1, 1e-10, 1e-300);
  OK(ms_tensor_item(ctx, d, &v));
  near_arr("d f(w_T) / d eta, forward over reverse", &v, &d_want, 1, 1e-9, 1e-300);
out:
  ms_ad_free(outer);
  ms_tensor_release(h);
  ms_tensor_release(w0);
  ms_tensor_release(eta);
  ms_tensor_release(etaw);
  ms_tensor_release(fT);
  ms_tensor_release(d);
  ms_tensor_release(one);
  CHECK(ms_ad_depth(ctx) == 0);
  check_ctx_free(ctx);
}

/* ---- higher order: three nested tapes ---- */

/* d^3/dx^3 x^4 = 24 x; also d^2 = 12 x^2, d = 4 x^3 at x = 1.5. */
static void test_third_order(void) {
  cur_case = "third order";
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  ms_level *l[3] = {0};
  ms_tensor *x = NULL, *xw[3] = {0}, *y = NULL, *g[3] = {0};
  double v;
  OK(ms_tensor_scalar(ctx, 1.5, &x));
  ms_tensor *cur = x;
  for (int k = 0; k < 3; k++) {
    OK(ms_ad_push(ctx, MS_AD_REVERSE, &l[k]));
    OK(ms_ad_watch(ctx, l[k], cur, NULL, &xw[k]));
    cur = xw[k];
  }
  CHECK(ms_ad_depth(ctx) == 3);
  OK(ms_binary_scalar(ctx, MS_POW, xw[2], 4.0, 0, &y));
  ms_tensor *top = y;
  for (int k = 2; k >= 0; k--) {
    OK(ms_ad_pop(ctx, l[k]));
    OK(ms_ad_gradient(ctx, l[k], top, NULL, 1, &xw[k], &g[k]));
    top = g[k];
  }
  OK(ms_tensor_item(ctx, g[2], &v));
  CHECK_NEAR(v, 4 * 1.5 * 1.5 * 1.5, 1e-13);
  OK(ms_tensor_item(ctx, g[1], &v));
  CHECK_NEAR(v, 12 * 1.5 * 1.5, 1e-13);
  OK(ms_tensor_item(ctx, g[0], &v));
  CHECK_NEAR(v, 24 * 1.5, 1e-13);
  for (int k = 2; k >= 0; k--) ms_ad_free(l[k]), l[k] = NULL;
  release_all(xw, 3);
  release_all(g, 3);
  ms_tensor_release(y), y = NULL;

  /* forward over forward: tangents of tangents, d^2/dx^2 x^4 = 12 x^2 */
  {
    ms_tensor *one = NULL;
    OK(ms_tensor_scalar(ctx, 1.0, &one));
    int st = ms_ad_push(ctx, MS_AD_FORWARD, &l[0]);
    if (st == MS_OK) st = ms_ad_watch(ctx, l[0], x, one, &xw[0]);
    if (st == MS_OK) st = ms_ad_push(ctx, MS_AD_FORWARD, &l[1]);
    if (st == MS_OK) st = ms_ad_watch(ctx, l[1], xw[0], one, &xw[1]);
    ms_tensor_release(one);
    OK(st);
  }
  OK(ms_binary_scalar(ctx, MS_POW, xw[1], 4.0, 0, &y));
  OK(ms_ad_tangent(ctx, l[1], y, &g[1]));
  OK(ms_ad_pop(ctx, l[1]));
  OK(ms_ad_tangent(ctx, l[0], g[1], &g[0]));
  OK(ms_ad_tangent(ctx, l[0], y, &g[2]));
  OK(ms_ad_pop(ctx, l[0]));
  OK(ms_tensor_item(ctx, g[1], &v));
  CHECK_NEAR(v, 4 * 1.5 * 1.5 * 1.5, 1e-13);
  OK(ms_tensor_item(ctx, g[2], &v));
  CHECK_NEAR(v, 4 * 1.5 * 1.5 * 1.5, 1e-13);
  OK(ms_tensor_item(ctx, g[0], &v));
  CHECK_NEAR(v, 12 * 1.5 * 1.5, 1e-13);
out:
  for (int k = 2; k >= 0; k--) ms_ad_free(l[k]);
  release_all(xw, 3);
  release_all(g, 3);
  ms_tensor_release(y);
  ms_tensor_release(x);
  check_ctx_free(ctx);
}

/* ---- a tangent that is itself a function of an outer level's variable ---- */

/* Outer tape watches p [2,3]; the forward level's tangent for x [3,2] is p^T (a strided
 * view, or a contiguous copy). sum(tangent of x*x) = sum(2 x . p^T), so d/dp = 2 x^T. */
static void test_tracked_tangent(void) {
  cur_case = "tracked tangent";
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  const double xd[6] = {0.5, -1, 2, 0.25, 1.5, -0.75}, pd[6] = {1, 2, 3, 4, 5, 6};
  ms_level *t = NULL, *f = NULL;
  ms_tensor *x = NULL, *p = NULL, *pw = NULL, *pt = NULL, *pc = NULL, *xf = NULL, *y = NULL;
  ms_tensor *jv = NULL, *s = NULL, *g = NULL;
  OK(ms_tensor_from_data(ctx, 2, (const int64_t[]){3, 2}, xd, &x));
  OK(ms_tensor_from_data(ctx, 2, (const int64_t[]){2, 3}, pd, &p));
  for (int contiguous = 0; contiguous < 2; contiguous++) {
    OK(push_watch(ctx, MS_AD_REVERSE, p, NULL, &t, &pw));
    OK(ms_tensor_transpose(ctx, pw, 0, 1, &pt));
    if (contiguous) OK(ms_tensor_contiguous(ctx, pt, &pc));
    OK(ms_ad_push(ctx, MS_AD_FORWARD, &f));
    OK(ms_ad_watch(ctx, f, x, contiguous ? pc : pt, &xf));
    OK(ms_binary(ctx, MS_MUL, xf, xf, &y));
    OK(ms_ad_tangent(ctx, f, y, &jv));
    OK(ms_ad_pop(ctx, f));
    OK(ms_reduce(ctx, MS_SUM, jv, MS_ALL, 0, &s));
    OK(ms_ad_pop(ctx, t));
    OK(ms_ad_gradient(ctx, t, s, NULL, 1, &pw, &g));
    double gd[6];
    OK(ms_tensor_read(ctx, g, gd, 6));
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 3; j++) CHECK_NEAR(gd[i * 3 + j], 2 * xd[j * 2 + i], 1e-15);
    ms_ad_free(f), f = NULL;
    ms_ad_free(t), t = NULL;
    CHECK_DROP(&pw, &pt, &pc, &xf, &y, &jv, &s, &g);
  }
out:
  ms_ad_free(f);
  ms_ad_free(t);
  ms_tensor_release(x);
  ms_tensor_release(p);
  ms_tensor_release(pw);
  ms_tensor_release(pt);
  ms_tensor_release(pc);
  ms_tensor_release(xf);
  ms_tensor_release(y);
  ms_tensor_release(jv);
  ms_tensor_release(s);
  ms_tensor_release(g);
  check_ctx_free(ctx);
}

/* ---- levels, tracking, and errors ---- */

static int bad_vjp(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor *out, ms_tensor *gout,
                   const int *need, ms_tensor **gin) {
  (void)ud, (void)in, (void)out, (void)need;
  return ms_reduce(ctx, MS_SUM, gout, MS_ALL, 0, &gin[0]); /* [] for an input of shape [3] */
}
static int bad_jvp(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor *const *tin,
                   ms_tensor *out, ms_tensor **tout) {
  (void)ud, (void)in, (void)out;
  return ms_reduce(ctx, MS_SUM, tin[0], MS_ALL, 0, tout);
}
static int fail_vjp(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor *out, ms_tensor *gout,
                    const int *need, ms_tensor **gin) {
  (void)ud, (void)in, (void)out, (void)gout, (void)need, (void)gin;
  return ms_ctx_fail(ctx, MS_ECALLBACK, "twice: callback said no");
}
static int twice_forward(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor **out) {
  (void)ud;
  return ms_binary_scalar(ctx, MS_MUL, in[0], 2.0, 0, out);
}
static int n_freed;
static void count_free(void *ud) {
  (void)ud;
  n_freed++;
}

static void test_errors(void) {
  cur_case = "errors";
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  ms_level *l1 = NULL, *l2 = NULL;
  ms_tensor *x = NULL, *xw = NULL, *y = NULL, *z = NULL, *g = NULL, *g2[2] = {0}, *k = NULL;
  ms_custom *op = NULL;
  OK(ms_tensor_from_data(ctx, 1, (const int64_t[]){3}, (const double[]){1, 2, 3}, &x));

  /* non-scalar output without a seed; a seed of the wrong shape */
  OK(push_watch(ctx, MS_AD_REVERSE, x, NULL, &l1, &xw));
  OK(ms_unary(ctx, MS_SIN, xw, &y));
  CHECK(ms_ad_size(l1) == 2);
  /* gradient while the tape is still recording */
  CHECK_FAILS(ctx, ms_ad_gradient(ctx, l1, y, NULL, 1, &xw, &g), MS_ESTATE, "still recording");
  CHECK(g == NULL);
  OK(ms_ad_pop(ctx, l1));
  CHECK_FAILS(ctx, ms_ad_pop(ctx, l1), MS_ESTATE, "not active");
  CHECK_FAILS(ctx, ms_ad_gradient(ctx, l1, y, NULL, 1, &xw, &g), MS_ESHAPE,
              "must return a scalar (one element), got shape [3]");
  CHECK(g == NULL);
  OK(ms_tensor_scalar(ctx, 1.0, &k));
  CHECK_FAILS(ctx, ms_ad_gradient(ctx, l1, y, k, 1, &xw, &g), MS_ESHAPE,
              "seed has shape [], output has shape [3]");
  CHECK_FAILS(ctx, ms_ad_tangent(ctx, l1, y, &g), MS_EARG, "not a forward level");
  CHECK_FAILS(ctx, ms_ad_watch(ctx, l1, x, NULL, &z), MS_ESTATE, "not active");
  CHECK(z == NULL);
  ms_tensor_release(k), k = NULL;

  /* the seed works; gradient of an untracked tensor and w.r.t. an unrelated one is zero */
  OK(ms_tensor_full(ctx, 1, (const int64_t[]){3}, 1.0, &k));
  OK(ms_ad_gradient(ctx, l1, y, k, 1, &xw, &g));
  {
    double gd[3];
    OK(ms_tensor_read(ctx, g, gd, 3));
    for (int i = 0; i < 3; i++) CHECK_NEAR(gd[i], cos(i + 1.0), 1e-15);
  }
  ms_tensor_release(g), g = NULL;
  {
    ms_tensor *xs[2] = {xw, x};
    OK(ms_ad_gradient(ctx, l1, k, k, 2, xs, g2)); /* k is not on the tape */
    double gd[3];
    for (int i = 0; i < 2; i++) {
      OK(ms_tensor_read(ctx, g2[i], gd, 3));
      CHECK(gd[0] == 0 && gd[1] == 0 && gd[2] == 0);
    }
    release_all(g2, 2);
    /* x itself is not on the tape (only its watched copy xw is): zeros */
    OK(ms_ad_gradient(ctx, l1, y, k, 2, xs, g2));
    OK(ms_tensor_read(ctx, g2[1], gd, 3));
    CHECK(gd[0] == 0 && gd[1] == 0 && gd[2] == 0);
    release_all(g2, 2);
    /* the tape can be read twice, and w.r.t. an intermediate value */
    OK(ms_ad_gradient(ctx, l1, y, k, 1, &y, &g));
    OK(ms_tensor_read(ctx, g, gd, 3));
    CHECK(gd[0] == 1 && gd[1] == 1 && gd[2] == 1);
    ms_tensor_release(g), g = NULL;
  }

  /* an interrupt stops the backward pass */
  ms_ctx_interrupt(ctx);
  CHECK_FAILS(ctx, ms_ad_gradient(ctx, l1, y, k, 1, &xw, &g), MS_EINTERRUPT, "gradient");
  CHECK(g == NULL);

  /* a saved input modified in place */
  OK(ms_tensor_set(ctx, x, (const int64_t[]){1}, 5.0));
  CHECK_FAILS(ctx, ms_ad_gradient(ctx, l1, y, k, 1, &xw, &g), MS_ESTATE, "modified in place");
  CHECK(g == NULL);
  ms_ad_free(l1), l1 = NULL;
  CHECK_DROP(&xw, &y, &k);

  /* an intermediate (saved output of one node, input of the next) modified in place */
  OK(push_watch(ctx, MS_AD_REVERSE, x, NULL, &l1, &xw));
  OK(ms_unary(ctx, MS_EXP, xw, &y));
  OK(ms_reduce(ctx, MS_SUM, y, MS_ALL, 0, &z));
  OK(ms_ad_pop(ctx, l1));
  OK(ms_tensor_fill_(ctx, y, 0.0));
  CHECK_FAILS(ctx, ms_ad_gradient(ctx, l1, z, NULL, 1, &xw, &g), MS_ESTATE, "modified in place");
  ms_ad_free(l1), l1 = NULL;
  CHECK_DROP(&xw, &y, &z);

  /* pop of a level that is not the innermost; freeing an outer level pops inner ones */
  OK(ms_ad_push(ctx, MS_AD_REVERSE, &l1));
  OK(ms_ad_push(ctx, MS_AD_FORWARD, &l2));
  CHECK_FAILS(ctx, ms_ad_pop(ctx, l1), MS_ESTATE, "not the innermost");
  CHECK(ms_ad_depth(ctx) == 2);
  CHECK_FAILS(ctx, ms_ad_gradient(ctx, l2, x, NULL, 1, &x, &g), MS_EARG, "forward-mode level");
  {
    ms_level *l3 = NULL;
    CHECK_FAILS(ctx, ms_ad_push(ctx, (ms_ad_mode)7, &l3), MS_EARG, "unknown mode");
    CHECK(l3 == NULL);
  }
  ms_ad_free(l1), l1 = NULL; /* pops l2 too */
  CHECK(ms_ad_depth(ctx) == 0);
  ms_ad_free(l2), l2 = NULL;
  {
    ms_level *ls[MS_AD_MAXLEVELS + 1] = {0};
    for (int i = 0; i < MS_AD_MAXLEVELS; i++) OK(ms_ad_push(ctx, MS_AD_REVERSE, &ls[i]));
    CHECK_FAILS(ctx, ms_ad_push(ctx, MS_AD_REVERSE, &ls[MS_AD_MAXLEVELS]), MS_ESTATE, "at most 8");
    CHECK(ls[MS_AD_MAXLEVELS] == NULL);
    for (int i = MS_AD_MAXLEVELS - 1; i >= 0; i--) {
      OK(ms_ad_pop(ctx, ls[i]));
      ms_ad_free(ls[i]);
    }
  }

  /* forward level: tangent of the wrong shape */
  OK(ms_ad_push(ctx, MS_AD_FORWARD, &l1));
  OK(ms_tensor_zeros(ctx, 1, (const int64_t[]){4}, &k));
  CHECK_FAILS(ctx, ms_ad_watch(ctx, l1, x, k, &xw), MS_ESHAPE,
              "tangent has shape [4], point has shape [3]");
  ms_tensor_release(k), k = NULL;
  /* no tangent given: zeros; an untracked output: zeros */
  OK(ms_ad_watch(ctx, l1, x, NULL, &xw));
  OK(ms_ad_tangent(ctx, l1, xw, &g));
  OK(ms_tensor_read(ctx, g, (double[3]){0}, 3));
  CHECK(ms_tensor_data(g)[0] == 0 && ms_tensor_data(g)[2] == 0);
  ms_tensor_release(g), g = NULL;
  OK(ms_ad_tangent(ctx, l1, x, &g));
  CHECK(ms_tensor_numel(g) == 3 && ms_tensor_data(g)[1] == 0);
  ms_tensor_release(g), g = NULL;
  OK(ms_ad_pop(ctx, l1));
  ms_ad_free(l1), l1 = NULL;
  ms_tensor_release(xw), xw = NULL;

  /* stop_gradient: the derivative does not flow through it */
  OK(push_watch(ctx, MS_AD_REVERSE, x, NULL, &l1, &xw));
  OK(ms_stop_gradient(ctx, xw, &z));
  CHECK(!ms_ad_is_tracked(l1, z) && ms_ad_is_tracked(l1, xw));
  OK(ms_binary(ctx, MS_MUL, xw, z, &y));
  ms_tensor_release(z), z = NULL;
  OK(ms_reduce(ctx, MS_SUM, y, MS_ALL, 0, &z));
  OK(ms_ad_pop(ctx, l1));
  OK(ms_ad_gradient(ctx, l1, z, NULL, 1, &xw, &g));
  {
    double gd[3], xd[3];
    OK(ms_tensor_read(ctx, g, gd, 3));
    OK(ms_tensor_read(ctx, x, xd, 3));
    for (int i = 0; i < 3; i++) CHECK(gd[i] == xd[i]); /* d/dx (x * c) = c = x */
  }
  ms_tensor_release(g), g = NULL;
  ms_ad_free(l1), l1 = NULL;
  CHECK_DROP(&xw, &y, &z);

  /* non-differentiable ops on tracked inputs are constants (never recorded) */
  OK(push_watch(ctx, MS_AD_REVERSE, x, NULL, &l1, &xw));
  OK(ms_unary(ctx, MS_FLOOR, xw, &y));
  CHECK(!ms_ad_is_tracked(l1, y));
  ms_tensor_release(y), y = NULL;
  OK(ms_binary(ctx, MS_GT, xw, x, &y));
  CHECK(!ms_ad_is_tracked(l1, y));
  ms_tensor_release(y), y = NULL;
  OK(ms_reduce(ctx, MS_ARGMAX, xw, 0, 0, &y));
  CHECK(!ms_ad_is_tracked(l1, y));
  ms_tensor_release(y), y = NULL;
  /* labels of softmax_xent are not differentiable; a label out of range */
  {
    ms_tensor *logits = NULL, *lw = NULL, *labels = NULL;
    OK(ms_tensor_zeros(ctx, 2, (const int64_t[]){3, 4}, &logits));
    CHECK_FAILS(ctx, ms_softmax_xent(ctx, logits, xw, &y), MS_EARG, "not differentiable");
    int st = ms_ad_watch(ctx, l1, logits, NULL, &lw);
    if (st == MS_OK)
      st = ms_tensor_from_data(ctx, 1, (const int64_t[]){3}, (const double[]){0, 4, 1}, &labels);
    if (st == MS_OK)
      CHECK_FAILS(ctx, ms_softmax_xent(ctx, lw, labels, &y), MS_EINDEX,
                  "label 4 of example 1 is not a class index in 0..3");
    CHECK(y == NULL);
    ms_tensor_release(logits);
    ms_tensor_release(lw);
    ms_tensor_release(labels);
    OK(st);
  }
  OK(ms_ad_pop(ctx, l1));
  ms_ad_free(l1), l1 = NULL;
  ms_tensor_release(xw), xw = NULL;

  /* custom primitive whose VJP returns the wrong shape */
  {
    ms_custom_op def = {"twice", 1, twice_forward, bad_vjp, bad_jvp, count_free, NULL};
    n_freed = 0;
    OK(ms_custom_new(ctx, &def, &op));
    OK(push_watch(ctx, MS_AD_REVERSE, x, NULL, &l1, &xw));
    OK(ms_custom_apply(ctx, op, &xw, &y));
    OK(ms_tensor_read(ctx, y, (double[3]){0}, 3));
    CHECK(ms_tensor_data(y)[2] == 6.0);
    OK(ms_reduce(ctx, MS_SUM, y, MS_ALL, 0, &z));
    OK(ms_ad_pop(ctx, l1));
    CHECK_FAILS(ctx, ms_ad_gradient(ctx, l1, z, NULL, 1, &xw, &g), MS_ESHAPE,
                "reverse-mode rule of 'twice' returned shape [] for input 1 of shape [3]");
    CHECK(g == NULL);
    ms_ad_free(l1), l1 = NULL;
    CHECK_DROP(&xw, &y, &z);
    /* ... and whose JVP returns the wrong shape */
    OK(push_watch(ctx, MS_AD_FORWARD, x, x, &l1, &xw));
    CHECK_FAILS(ctx, ms_custom_apply(ctx, op, &xw, &y), MS_ESHAPE,
                "twice: forward-mode rule returned shape [] for an output of shape [3]");
    CHECK(y == NULL);
    ms_ad_free(l1), l1 = NULL;
    ms_tensor_release(xw), xw = NULL;
    CHECK(n_freed == 0);
    ms_custom_release(op), op = NULL;
    CHECK(n_freed == 1);
  }
  /* a custom VJP that fails: its status and message propagate; no JVP rule */
  {
    ms_custom_op def = {"twice", 1, twice_forward, fail_vjp, NULL, NULL, NULL};
    OK(ms_custom_new(ctx, &def, &op));
    OK(push_watch(ctx, MS_AD_REVERSE, x, NULL, &l1, &xw));
    OK(ms_custom_apply(ctx, op, &xw, &y));
    OK(ms_reduce(ctx, MS_SUM, y, MS_ALL, 0, &z));
    OK(ms_ad_pop(ctx, l1));
    CHECK_FAILS(ctx, ms_ad_gradient(ctx, l1, z, NULL, 1, &xw, &g), MS_ECALLBACK,
                "twice: callback said no");
    ms_ad_free(l1), l1 = NULL;
    CHECK_DROP(&xw, &y, &z);
    OK(push_watch(ctx, MS_AD_FORWARD, x, NULL, &l1, &xw));
    CHECK_FAILS(ctx, ms_custom_apply(ctx, op, &xw, &y), MS_EARG,
                "twice: custom primitive has no JVP rule");
    ms_ad_free(l1), l1 = NULL;
    ms_tensor_release(xw), xw = NULL;
    /* untracked inputs: just the forward */
    OK(ms_custom_apply(ctx, op, &x, &y));
    CHECK(ms_tensor_numel(y) == 3 && ms_tensor_data(y)[1] == 10.0); /* x[1] was set to 5 */
    ms_tensor_release(y), y = NULL;
    ms_custom_release(op), op = NULL;
    ms_custom_op bad = {"nofwd", 1, NULL, NULL, NULL, NULL, NULL};
    CHECK_FAILS(ctx, ms_custom_new(ctx, &bad, &op), MS_EARG, "forward function is required");
    bad.forward = twice_forward, bad.nin = 17;
    CHECK_FAILS(ctx, ms_custom_new(ctx, &bad, &op), MS_EARG, "nin must be in 1..16, got 17");
    CHECK(op == NULL);
  }
  /* a tracked select of an index out of range */
  OK(push_watch(ctx, MS_AD_REVERSE, x, NULL, &l1, &xw));
  CHECK_FAILS(ctx, ms_tensor_select(ctx, xw, 0, 3, &y), MS_EINDEX, "out of range");
  CHECK_FAILS(ctx, ms_sum_to(ctx, xw, 1, (const int64_t[]){2}, &y), MS_ESHAPE,
              "sum_to: cannot sum shape [3] down to [2]");
  OK(ms_ad_pop(ctx, l1));
out:
  ms_ad_free(l2);
  ms_ad_free(l1);
  ms_custom_release(op);
  ms_tensor_release(x);
  ms_tensor_release(xw);
  ms_tensor_release(y);
  ms_tensor_release(z);
  ms_tensor_release(g);
  ms_tensor_release(k);
  release_all(g2, 2);
  CHECK(ms_ad_depth(ctx) == 0);
  check_ctx_free(ctx);
}

/* ---- allocation failure at every point of a second-order computation ---- */

/* H v of case c by reverse over reverse, forward over reverse and reverse over forward
 * (mode 0, 1, 2); returns a status. */
static int second_order_once(ms_ctx *ctx, const fcase *c, ms_tensor *const *x,
                             ms_tensor *const *v) {
  ms_level *l1 = NULL, *l2 = NULL;
  ms_tensor *xw[MAXIN] = {0}, *xw2[MAXIN] = {0}, *g[MAXIN] = {0}, *hv[MAXIN] = {0};
  ms_tensor *y = NULL, *s = NULL, *t = NULL;
  int st;
  for (int mode = 0; mode < 3; mode++) {
    if ((st = ms_ad_push(ctx, mode == 1 ? MS_AD_FORWARD : MS_AD_REVERSE, &l1))) goto done;
    for (int i = 0; i < c->nin; i++)
      if ((st = ms_ad_watch(ctx, l1, x[i], mode == 1 ? v[i] : NULL, &xw[i]))) goto done;
    if ((st = ms_ad_push(ctx, mode == 2 ? MS_AD_FORWARD : MS_AD_REVERSE, &l2))) goto done;
    for (int i = 0; i < c->nin; i++)
      if ((st = ms_ad_watch(ctx, l2, xw[i], mode == 2 ? v[i] : NULL, &xw2[i]))) goto done;
    if ((st = c->f(ctx, c, xw2, &y))) goto done;
    if ((st = ms_reduce(ctx, MS_SUM, y, MS_ALL, 0, &t))) goto done;
    if (mode == 2) {
      if ((st = ms_ad_tangent(ctx, l2, t, &s))) goto done;
      if ((st = ms_ad_pop(ctx, l2))) goto done;
      if ((st = ms_ad_pop(ctx, l1))) goto done;
      if ((st = ms_ad_gradient(ctx, l1, s, NULL, c->nin, xw, hv))) goto done;
      goto done;
    }
    if ((st = ms_ad_pop(ctx, l2))) goto done;
    if ((st = ms_ad_gradient(ctx, l2, t, NULL, c->nin, xw2, g))) goto done;
    if (mode == 0) {
      ms_tensor *acc = NULL;
      for (int i = 0; i < c->nin && st == MS_OK; i++) st = add_dot(ctx, &acc, g[i], v[i]);
      s = acc;
      if (st) goto done;
      if ((st = ms_ad_pop(ctx, l1))) goto done;
      if ((st = ms_ad_gradient(ctx, l1, s, NULL, c->nin, xw, hv))) goto done;
    } else {
      for (int i = 0; i < c->nin; i++)
        if ((st = ms_ad_tangent(ctx, l1, g[i], &hv[i]))) goto done;
    }
  done:
    ms_ad_free(l2), l2 = NULL;
    ms_ad_free(l1), l1 = NULL;
    release_all(xw, MAXIN);
    release_all(xw2, MAXIN);
    release_all(g, MAXIN);
    release_all(hv, MAXIN);
    CHECK_DROP(&y, &s, &t);
    if (st) return st;
  }
  return MS_OK;
}

static void test_alloc_failures(void) {
  int n = (int)(sizeof cases / sizeof cases[0]);
  for (int ci = 0; ci < n; ci++) {
    const fcase *c = &cases[ci];
    cur_case = c->name;
    check_alloc fs = {0, -1, 0};
    ms_ctx *ctx = ms_ctx_new(check_failing_alloc, &fs);
    ms_tensor *x[MAXIN] = {0}, *v[MAXIN] = {0};
    ms_rng rng;
    ms_rng_seed(&rng, 7);
    int leaks = 0, wrong = 0, ok = 0;
    for (int i = 0; i < c->nin; i++) {
      double xd[MAXEL], vd[MAXEL];
      int64_t m = numel_of(c->ndim[i], c->shape[i]);
      for (int64_t k = 0; k < m; k++) xd[k] = gen_value(&rng, c->gen[i]), vd[k] = 1;
      ms_tensor_from_data(ctx, c->ndim[i], c->shape[i], xd, &x[i]);
      ms_tensor_from_data(ctx, c->ndim[i], c->shape[i], vd, &v[i]);
    }
    size_t base = ms_ctx_bytes(ctx);
    for (long k = 0; k < 100000 && !ok; k++) {
      fs.n = 0, fs.fail_at = k;
      int st = second_order_once(ctx, c, x, v);
      if (st == MS_OK)
        ok = 1;
      else if (st != MS_ENOMEM && wrong++ == 0)
        fprintf(stderr, "[%s] failing allocation %ld gave status %d: %s\n", c->name, k, st,
                ms_ctx_error(ctx));
      if (ms_ctx_bytes(ctx) != base || ms_ad_depth(ctx) != 0) {
        if (!leaks)
          fprintf(stderr, "[%s] failing allocation %ld: %zu bytes leaked (status %d: %s)\n",
                  c->name, k, ms_ctx_bytes(ctx) - base, st, ms_ctx_error(ctx));
        leaks++;
        break;
      }
    }
    CHECK(ok);
    CHECK(wrong == 0);
    CHECK(leaks == 0);
    fs.fail_at = -1;
    release_all(x, MAXIN);
    release_all(v, MAXIN);
    check_ctx_free(ctx);
  }
}

/* ---- closed forms at points where the generic formulas break down ---- */

/* A scalar function of one tensor, for the checks below. */
typedef int (*sfn_t)(ms_ctx *ctx, const void *arg, ms_tensor *x, ms_tensor **y);

typedef struct {
  double g[MAXEL];     /* gradient, reverse mode */
  double jv;           /* <gradient, v>, forward mode */
  double hv[3][MAXEL]; /* H v: reverse over reverse, forward over reverse, reverse over forward */
} sderivs;

static const char *const hv_mode[3] = {"reverse over reverse", "forward over reverse",
                                       "reverse over forward"};

/* The first and second derivatives of f at x, every way the engine can take them. */
static int scalar_derivs(ms_ctx *ctx, sfn_t f, const void *arg, ms_tensor *x, ms_tensor *v,
                         sderivs *d) {
  int st = MS_OK;
  for (int mode = 0; mode < 5 && st == MS_OK; mode++) {
    /* 0: gradient; 1: forward mode; 2, 3, 4: H v as hv_mode[mode - 2] */
    int outer_fwd = mode == 1 || mode == 3, inner = mode >= 2, inner_fwd = mode == 4;
    int64_t n = ms_tensor_numel(x);
    ms_level *l1 = NULL, *l2 = NULL;
    ms_tensor *xw = NULL, *xw2 = NULL, *y = NULL, *g = NULL, *gv = NULL, *s = NULL, *r = NULL;
    st = ms_ad_push(ctx, outer_fwd ? MS_AD_FORWARD : MS_AD_REVERSE, &l1);
    if (st == MS_OK) st = ms_ad_watch(ctx, l1, x, outer_fwd ? v : NULL, &xw);
    if (st == MS_OK && inner) st = ms_ad_push(ctx, inner_fwd ? MS_AD_FORWARD : MS_AD_REVERSE, &l2);
    if (st == MS_OK && inner) st = ms_ad_watch(ctx, l2, xw, inner_fwd ? v : NULL, &xw2);
    if (st == MS_OK) st = f(ctx, arg, inner ? xw2 : xw, &y);
    if (st == MS_OK && mode == 0) {
      if ((st = ms_ad_pop(ctx, l1)) == MS_OK) st = ms_ad_gradient(ctx, l1, y, NULL, 1, &xw, &r);
      if (st == MS_OK) st = ms_tensor_read(ctx, r, d->g, n);
    } else if (st == MS_OK && mode == 1) {
      if ((st = ms_ad_tangent(ctx, l1, y, &r)) == MS_OK) st = ms_ad_pop(ctx, l1);
      if (st == MS_OK) st = ms_tensor_item(ctx, r, &d->jv);
    } else if (st == MS_OK) {
      if (mode == 4) {
        if ((st = ms_ad_tangent(ctx, l2, y, &s)) == MS_OK) st = ms_ad_pop(ctx, l2);
      } else {
        if ((st = ms_ad_pop(ctx, l2)) == MS_OK) st = ms_ad_gradient(ctx, l2, y, NULL, 1, &xw2, &g);
        if (st == MS_OK && mode == 2 && (st = ms_binary(ctx, MS_MUL, g, v, &gv)) == MS_OK)
          st = ms_reduce(ctx, MS_SUM, gv, MS_ALL, 0, &s);
        if (st == MS_OK && mode == 3) st = ms_ad_tangent(ctx, l1, g, &r);
      }
      if (st == MS_OK) st = ms_ad_pop(ctx, l1);
      if (st == MS_OK && mode != 3) st = ms_ad_gradient(ctx, l1, s, NULL, 1, &xw, &r);
      if (st == MS_OK) st = ms_tensor_read(ctx, r, d->hv[mode - 2], n);
    }
    ms_ad_free(l2);
    ms_ad_free(l1);
    ms_tensor *tmp[] = {xw, xw2, y, g, gv, s, r};
    for (size_t i = 0; i < sizeof tmp / sizeof tmp[0]; i++) ms_tensor_release(tmp[i]);
  }
  return st;
}

/* Checks every derivative in d against the closed forms g, jv = <g, v> and hv. */
static void check_derivs(const char *what, const sderivs *d, const double *g, const double *v,
                         const double *hv, int64_t n, double tol) {
  char b[160];
  snprintf(b, sizeof b, "%s: gradient", what);
  near_arr(b, d->g, g, n, tol, 1);
  snprintf(b, sizeof b, "%s: forward mode", what);
  near_val(b, d->jv, dotn(g, v, n), tol);
  for (int m = 0; m < 3; m++) {
    snprintf(b, sizeof b, "%s: H v, %s", what, hv_mode[m]);
    near_arr(b, d->hv[m], hv, n, tol, 1);
  }
}

/* Runs scalar_derivs failing each allocation in turn: MS_ENOMEM and nothing leaked each time. */
static void check_alloc_failures(const char *what, sfn_t f, const void *arg, int nd,
                                 const int64_t *shape, const double *xd, const double *vd);

typedef struct {
  int axis, keepdim;
} red_arg;

/* sum_k (1 + k/2) prod(x, axis)_k: a distinct weight per group */
static int f_prod_weighted(ms_ctx *ctx, const void *arg, ms_tensor *x, ms_tensor **y) {
  const red_arg *a = arg;
  ms_tensor *r = NULL, *c = NULL, *rc = NULL;
  double cd[MAXEL];
  int st = ms_reduce(ctx, MS_PROD, x, a->axis, a->keepdim, &r);
  if (st == MS_OK) {
    for (int64_t k = 0; k < ms_tensor_numel(r); k++) cd[k] = 1 + 0.5 * (double)k;
    st = ms_tensor_from_data(ctx, ms_tensor_ndim(r), ms_tensor_shape(r), cd, &c);
  }
  if (st == MS_OK) st = ms_binary(ctx, MS_MUL, r, c, &rc);
  if (st == MS_OK) st = ms_reduce(ctx, MS_SUM, rc, MS_ALL, 0, y);
  ms_tensor_release(r);
  ms_tensor_release(c);
  ms_tensor_release(rc);
  return st;
}

/* The group (output element) of row-major element i when reducing axis ax of shape sh. */
static int64_t group_of(int nd, const int64_t *sh, int ax, int64_t i) {
  if (ax == MS_ALL) return 0;
  if (ax < 0) ax += nd;
  int64_t inner = 1;
  for (int d = ax + 1; d < nd; d++) inner *= sh[d];
  return i / (inner * sh[ax]) * inner + i % inner;
}

/*
 * prod with zeros in its input: d prod / d x_i is the product of the other entries of x_i's
 * group, d^2 prod / d x_i d x_j (i != j, same group) the product of the entries other than
 * x_i and x_j, and 0 on the diagonal; computed here by direct loops over the groups. Before
 * the fix the rule was out / x, NaN at every zero.
 */
static void test_prod_zeros(void) {
  /* clang-format off */
  static const struct {
    const char *name;
    int nd;
    int64_t shape[2];
    double x[12];
    int axis, keepdim;
  } pc[] = {
    {"prod of {0,2,3}", 1, {3}, {0, 2, 3}, MS_ALL, 0},
    {"prod of {0,2,3} keepdim", 1, {3}, {0, 2, 3}, MS_ALL, 1},
    {"prod of {0,0,3}", 1, {3}, {0, 0, 3}, MS_ALL, 0},
    {"prod of {3,0,0} axis 0 keepdim", 1, {3}, {3, 0, 0}, 0, 1},
    {"prod of {2,0,-1,0,0}", 1, {5}, {2, 0, -1, 0, 0}, MS_ALL, 0},
    {"prod of [2,3], one zero", 2, {2, 3}, {1.5, -2, 0, 0.5, 3, -1}, MS_ALL, 0},
    {"prod of [2,3], one zero, keepdim", 2, {2, 3}, {1.5, -2, 0, 0.5, 3, -1}, MS_ALL, 1},
    /* rows with 1, 2 and no zeros; columns with 2, 1 and no zeros */
#define ZM {0, 2, 3, -1, 0, 0, 5, 2, 1.5, 4, -2, 0.5}
    {"prod axis 1 of [3,4]", 2, {3, 4}, ZM, 1, 0},
    {"prod axis 1 of [3,4] keepdim", 2, {3, 4}, ZM, 1, 1},
    {"prod axis -1 of [3,4]", 2, {3, 4}, ZM, -1, 0},
    {"prod axis 0 of [3,4]", 2, {3, 4}, ZM, 0, 0},
    {"prod axis 0 of [3,4] keepdim", 2, {3, 4}, ZM, 0, 1},
    {"prod of [3,4] with 3 zeros", 2, {3, 4}, ZM, MS_ALL, 0},
#undef ZM
  };
  /* clang-format on */
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  ms_tensor *x = NULL, *v = NULL;
  static sderivs d;
  for (size_t ci = 0; ci < sizeof pc / sizeof pc[0]; ci++) {
    cur_case = pc[ci].name;
    int nd = pc[ci].nd;
    const int64_t *sh = pc[ci].shape;
    int64_t n = numel_of(nd, sh);
    red_arg arg = {pc[ci].axis, pc[ci].keepdim};
    double vd[12], g[12], hv[12];
    for (int64_t i = 0; i < n; i++) vd[i] = (i % 2 ? -0.5 : 1.0) + 0.25 * (double)i;
    for (int64_t i = 0; i < n; i++) {
      int64_t gi = group_of(nd, sh, arg.axis, i);
      double c = 1 + 0.5 * (double)gi;
      g[i] = c, hv[i] = 0;
      for (int64_t j = 0; j < n; j++) {
        if (j == i || group_of(nd, sh, arg.axis, j) != gi) continue;
        g[i] *= pc[ci].x[j];
        double h = c;
        for (int64_t k = 0; k < n; k++)
          if (k != i && k != j && group_of(nd, sh, arg.axis, k) == gi) h *= pc[ci].x[k];
        hv[i] += h * vd[j];
      }
    }
    OK(ms_tensor_from_data(ctx, nd, sh, pc[ci].x, &x));
    OK(ms_tensor_from_data(ctx, nd, sh, vd, &v));
    OK(scalar_derivs(ctx, f_prod_weighted, &arg, x, v, &d));
    check_derivs(pc[ci].name, &d, g, vd, hv, n, 1e-14);
    CHECK_DROP(&x, &v);
    check_alloc_failures(pc[ci].name, f_prod_weighted, &arg, nd, sh, pc[ci].x, vd);
  }
  /* the reviewed cases, spelled out */
  cur_case = "prod of {0,2,3}, literally";
  red_arg all = {MS_ALL, 0};
  OK(ms_tensor_from_data(ctx, 1, (const int64_t[]){3}, (const double[]){0, 2, 3}, &x));
  OK(ms_tensor_from_data(ctx, 1, (const int64_t[]){3}, (const double[]){1, 10, 100}, &v));
  OK(scalar_derivs(ctx, f_prod_weighted, &all, x, v, &d));
  CHECK(d.g[0] == 6 && d.g[1] == 0 && d.g[2] == 0);
  /* H = [[0,3,2],[3,0,0],[2,0,0]] */
  for (int m = 0; m < 3; m++) CHECK(d.hv[m][0] == 230 && d.hv[m][1] == 3 && d.hv[m][2] == 2);
  ms_tensor_release(x), x = NULL;
  cur_case = "prod of {0,0,3}, literally";
  OK(ms_tensor_from_data(ctx, 1, (const int64_t[]){3}, (const double[]){0, 0, 3}, &x));
  OK(scalar_derivs(ctx, f_prod_weighted, &all, x, v, &d));
  CHECK(d.g[0] == 0 && d.g[1] == 0 && d.g[2] == 0);
  /* H = [[0,3,0],[3,0,0],[0,0,0]] */
  for (int m = 0; m < 3; m++) CHECK(d.hv[m][0] == 30 && d.hv[m][1] == 3 && d.hv[m][2] == 0);
out:
  ms_tensor_release(x);
  ms_tensor_release(v);
  check_ctx_free(ctx);
}

/* sum(x ^ p) */
static int f_pow_sum(ms_ctx *ctx, const void *arg, ms_tensor *x, ms_tensor **y) {
  ms_tensor *t = NULL;
  int st = ms_binary_scalar(ctx, MS_POW, x, *(const double *)arg, 0, &t);
  if (st == MS_OK) st = ms_reduce(ctx, MS_SUM, t, MS_ALL, 0, y);
  ms_tensor_release(t);
  return st;
}

/*
 * x^p at and around x = 0: d x^p / dx = p x^(p-1) and d^2 = p (p-1) x^(p-2), with the
 * exact limits 0 for p = 0 (where the formula reads 0 * 0^-1) and for the second derivative
 * of p = 1 (1 * 0 * 0^-1). Also the mixed derivative d^2 a^b / da db = a^(b-1) (1 + b log a),
 * 1/a at b = 0, which the p = 0 guard must leave alone where a != 0.
 */
static void test_pow_zeros(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  static sderivs d;
  const int64_t n = 4;
  const double xd[4] = {0, 0.5, -1.5, 0}, vd[4] = {1, -2, 0.5, 3};
  ms_tensor *x = NULL, *v = NULL;
  OK(ms_tensor_from_data(ctx, 1, &n, xd, &x));
  OK(ms_tensor_from_data(ctx, 1, &n, vd, &v));
  for (int p = 0; p <= 3; p++) {
    static const char *const names[] = {"x^0 at 0", "x^1 at 0", "x^2 at 0", "x^3 at 0"};
    double pw = p, g[4], hv[4];
    cur_case = names[p];
    for (int i = 0; i < 4; i++) {
      g[i] = p == 0 ? 0 : p * pow(xd[i], p - 1);
      hv[i] = p < 2 ? 0 : p * (p - 1) * pow(xd[i], p - 2) * vd[i];
    }
    OK(scalar_derivs(ctx, f_pow_sum, &pw, x, v, &d));
    check_derivs(names[p], &d, g, vd, hv, n, 1e-14);
    check_alloc_failures(names[p], f_pow_sum, &pw, 1, &n, xd, vd);
  }

  /* s = sum(d/da sum(a^b)) at a = {0, 2}, b = {0, 0}: ds/da = b (b-1) a^(b-2) = 0 and
   * ds/db = a^(b-1) (1 + b log a) = {0 (the guarded corner), 1/2} */
  cur_case = "mixed derivative of a^b at b = 0";
  {
    ms_level *l1 = NULL, *l2 = NULL;
    ms_tensor *in[2] = {0}, *w1[2] = {0}, *w2[2] = {0}, *g[2] = {0}, *h[2] = {0};
    ms_tensor *y = NULL, *t = NULL, *s = NULL;
    const int64_t two = 2;
    double gd[2][2], hd[2][2];
    int st = ms_tensor_from_data(ctx, 1, &two, (const double[]){0, 2}, &in[0]);
    if (st == MS_OK) st = ms_tensor_from_data(ctx, 1, &two, (const double[]){0, 0}, &in[1]);
    if (st == MS_OK) st = ms_ad_push(ctx, MS_AD_REVERSE, &l1);
    for (int i = 0; i < 2 && st == MS_OK; i++) st = ms_ad_watch(ctx, l1, in[i], NULL, &w1[i]);
    if (st == MS_OK) st = ms_ad_push(ctx, MS_AD_REVERSE, &l2);
    for (int i = 0; i < 2 && st == MS_OK; i++) st = ms_ad_watch(ctx, l2, w1[i], NULL, &w2[i]);
    if (st == MS_OK) st = ms_binary(ctx, MS_POW, w2[0], w2[1], &t);
    if (st == MS_OK) st = ms_reduce(ctx, MS_SUM, t, MS_ALL, 0, &y);
    if (st == MS_OK) st = ms_ad_pop(ctx, l2);
    if (st == MS_OK) st = ms_ad_gradient(ctx, l2, y, NULL, 2, w2, g);
    if (st == MS_OK) st = ms_reduce(ctx, MS_SUM, g[0], MS_ALL, 0, &s);
    if (st == MS_OK) st = ms_ad_pop(ctx, l1);
    if (st == MS_OK) st = ms_ad_gradient(ctx, l1, s, NULL, 2, w1, h);
    for (int i = 0; i < 2 && st == MS_OK; i++) st = ms_tensor_read(ctx, g[i], gd[i], 2);
    for (int i = 0; i < 2 && st == MS_OK; i++) st = ms_tensor_read(ctx, h[i], hd[i], 2);
    CHECK(st == MS_OK);
    if (st == MS_OK) {
      CHECK(gd[0][0] == 0 && gd[0][1] == 0); /* b a^(b-1) */
      CHECK(gd[1][0] == 0);                  /* a^b log a, 0 at a = 0 */
      CHECK_NEAR(gd[1][1], log(2.0), 1e-15);
      CHECK(hd[0][0] == 0 && hd[0][1] == 0);
      CHECK(hd[1][0] == 0);
      CHECK_NEAR(hd[1][1], 0.5, 1e-15);
    }
    ms_ad_free(l2);
    ms_ad_free(l1);
    release_all(in, 2);
    release_all(w1, 2);
    release_all(w2, 2);
    release_all(g, 2);
    release_all(h, 2);
    ms_tensor_release(y);
    ms_tensor_release(t);
    ms_tensor_release(s);
  }
out:
  ms_tensor_release(x);
  ms_tensor_release(v);
  check_ctx_free(ctx);
}

/* ---- cat of many tracked tensors ---- */

enum { WIDE_MAX = 200 };

/* Every fifth input is a constant (never watched): its tangent is missing in forward mode. */
static int wide_const(int k) { return k % 5 == 4; }
static double wide_w(int64_t j) { return 1 + (double)(j % 7) / 7; }

/* f = sum(w . cat(x_0, ..., x_{n-1})^2), every x_k of shape [2]. */
static int wide_f(ms_ctx *ctx, int n, ms_tensor *const *x, ms_tensor **y) {
  double wd[2 * WIDE_MAX];
  const int64_t len = 2 * (int64_t)n;
  ms_tensor *c = NULL, *sq = NULL, *w = NULL, *p = NULL;
  for (int64_t j = 0; j < len; j++) wd[j] = wide_w(j);
  int st = ms_tensor_cat(ctx, n, x, 0, &c);
  if (st == MS_OK) st = ms_unary(ctx, MS_SQUARE, c, &sq);
  if (st == MS_OK) st = ms_tensor_from_data(ctx, 1, &len, wd, &w);
  if (st == MS_OK) st = ms_binary(ctx, MS_MUL, sq, w, &p);
  if (st == MS_OK) st = ms_reduce(ctx, MS_SUM, p, MS_ALL, 0, y);
  ms_tensor_release(c);
  ms_tensor_release(sq);
  ms_tensor_release(w);
  ms_tensor_release(p);
  return st;
}

/* mode 0: the gradient into out[2n]; 1: forward-mode <g, v> into out[0]; 2, 3, 4: H v (as
 * hv_mode[mode - 2]) into out[2n]. Reverse over reverse pairs the gradients with v through
 * another wide cat, recorded on the outer tape. */
static int wide_derivs(ms_ctx *ctx, int n, ms_tensor *const *x, ms_tensor *const *v, int mode,
                       double *out) {
  static ms_tensor *xw[WIDE_MAX], *xw2[WIDE_MAX], *g[WIDE_MAX], *r[WIDE_MAX];
  int outer_fwd = mode == 1 || mode == 3, inner = mode >= 2, inner_fwd = mode == 4;
  ms_level *l1 = NULL, *l2 = NULL;
  ms_tensor *y = NULL, *s = NULL, *gc = NULL, *vc = NULL, *gv = NULL;
  for (int k = 0; k < n; k++) xw[k] = xw2[k] = g[k] = r[k] = NULL;
  int st = ms_ad_push(ctx, outer_fwd ? MS_AD_FORWARD : MS_AD_REVERSE, &l1);
  for (int k = 0; k < n && st == MS_OK; k++) {
    if (wide_const(k))
      xw[k] = ms_tensor_retain(x[k]);
    else
      st = ms_ad_watch(ctx, l1, x[k], outer_fwd ? v[k] : NULL, &xw[k]);
  }
  if (st == MS_OK && inner) st = ms_ad_push(ctx, inner_fwd ? MS_AD_FORWARD : MS_AD_REVERSE, &l2);
  for (int k = 0; k < n && st == MS_OK && inner; k++) {
    if (wide_const(k))
      xw2[k] = ms_tensor_retain(x[k]);
    else
      st = ms_ad_watch(ctx, l2, xw[k], inner_fwd ? v[k] : NULL, &xw2[k]);
  }
  if (st == MS_OK) st = wide_f(ctx, n, inner ? xw2 : xw, &y);
  if (st == MS_OK && mode == 0) {
    if ((st = ms_ad_pop(ctx, l1)) == MS_OK) st = ms_ad_gradient(ctx, l1, y, NULL, n, xw, r);
  } else if (st == MS_OK && mode == 1) {
    if ((st = ms_ad_tangent(ctx, l1, y, &s)) == MS_OK) st = ms_ad_pop(ctx, l1);
    if (st == MS_OK) st = ms_tensor_item(ctx, s, out);
  } else if (st == MS_OK) {
    if (mode == 4) {
      if ((st = ms_ad_tangent(ctx, l2, y, &s)) == MS_OK) st = ms_ad_pop(ctx, l2);
    } else {
      if ((st = ms_ad_pop(ctx, l2)) == MS_OK) st = ms_ad_gradient(ctx, l2, y, NULL, n, xw2, g);
      if (st == MS_OK && mode == 2) {
        st = ms_tensor_cat(ctx, n, g, 0, &gc);
        if (st == MS_OK) st = ms_tensor_cat(ctx, n, v, 0, &vc);
        if (st == MS_OK) st = ms_binary(ctx, MS_MUL, gc, vc, &gv);
        if (st == MS_OK) st = ms_reduce(ctx, MS_SUM, gv, MS_ALL, 0, &s);
      }
      for (int k = 0; k < n && st == MS_OK && mode == 3; k++)
        st = ms_ad_tangent(ctx, l1, g[k], &r[k]);
    }
    if (st == MS_OK) st = ms_ad_pop(ctx, l1);
    if (st == MS_OK && mode != 3) st = ms_ad_gradient(ctx, l1, s, NULL, n, xw, r);
  }
  for (int k = 0; k < n && st == MS_OK && mode != 1; k++)
    st = ms_tensor_read(ctx, r[k], out + 2 * k, 2);
  ms_ad_free(l2);
  ms_ad_free(l1);
  release_all(xw, n);
  release_all(xw2, n);
  release_all(g, n);
  release_all(r, n);
  ms_tensor *tmp[] = {y, s, gc, vc, gv};
  for (size_t i = 0; i < sizeof tmp / sizeof tmp[0]; i++) ms_tensor_release(tmp[i]);
  return st;
}

static void make_wide(ms_ctx *ctx, int n, ms_tensor **x, ms_tensor **v, double *xd, double *vd) {
  for (int k = 0; k < n; k++) {
    const int64_t two = 2;
    xd[2 * k] = 0.1 + 0.01 * k, xd[2 * k + 1] = -0.5 + 0.003 * k;
    vd[2 * k] = 1 - 0.002 * k, vd[2 * k + 1] = 0.3 + 0.001 * k;
    CHECK(ms_tensor_from_data(ctx, 1, &two, xd + 2 * k, &x[k]) == MS_OK);
    CHECK(ms_tensor_from_data(ctx, 1, &two, vd + 2 * k, &v[k]) == MS_OK);
  }
}

/*
 * A cat of 200 tracked tensors (the gradient's scratch arrays, forward mode's input tangents
 * and cat's own tangent rule used to stop at 64 or 16 inputs). With f = sum(w . y^2),
 * y = cat(x): df/dx = 2 w x, and H v = 2 w v, 0 for the constant inputs.
 */
static void test_wide_cat(void) {
  cur_case = "cat of 200 tensors";
  static ms_tensor *x[WIDE_MAX], *v[WIDE_MAX];
  static double xd[2 * WIDE_MAX], vd[2 * WIDE_MAX], got[2 * WIDE_MAX], g[2 * WIDE_MAX],
      hv[2 * WIDE_MAX];
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  make_wide(ctx, WIDE_MAX, x, v, xd, vd);
  double jv = 0;
  for (int j = 0; j < 2 * WIDE_MAX; j++) {
    int c = wide_const(j / 2);
    g[j] = c ? 0 : 2 * wide_w(j) * xd[j];
    hv[j] = c ? 0 : 2 * wide_w(j) * vd[j];
    jv += g[j] * vd[j];
  }
  for (int mode = 0; mode < 5; mode++) {
    int st = wide_derivs(ctx, WIDE_MAX, x, v, mode, got);
    if (st) fprintf(stderr, "[%s] mode %d: %d \"%s\"\n", cur_case, mode, st, ms_ctx_error(ctx));
    CHECK(st == MS_OK);
    if (st) continue;
    if (mode == 0) near_arr("gradient", got, g, 2 * WIDE_MAX, 1e-14, 1);
    if (mode == 1) near_val("forward mode", got[0], jv, 1e-13);
    if (mode >= 2) near_arr(hv_mode[mode - 2], got, hv, 2 * WIDE_MAX, 1e-14, 1);
  }
  CHECK(ms_ad_depth(ctx) == 0);
  release_all(x, WIDE_MAX);
  release_all(v, WIDE_MAX);
  check_ctx_free(ctx);

  /* every allocation failing in turn, on a cat of 20 (past the stack buffers of 16) */
  enum { NW = 20 };
  for (int mode = 0; mode < 5; mode++) {
    check_alloc fs = {0, -1, 0};
    ctx = ms_ctx_new(check_failing_alloc, &fs);
    make_wide(ctx, NW, x, v, xd, vd);
    size_t base = ms_ctx_bytes(ctx);
    int ok = 0, wrong = 0, leaks = 0;
    for (long k = 0; k < 100000 && !ok && !leaks; k++) {
      fs.n = 0, fs.fail_at = k;
      int st = wide_derivs(ctx, NW, x, v, mode, got);
      ok = st == MS_OK;
      if (!ok && st != MS_ENOMEM && wrong++ == 0)
        fprintf(stderr, "[%s] mode %d, failing allocation %ld: status %d \"%s\"\n", cur_case, mode,
                k, st, ms_ctx_error(ctx));
      if (ms_ctx_bytes(ctx) != base || ms_ad_depth(ctx) != 0) {
        fprintf(stderr, "[%s] mode %d, failing allocation %ld: %zu bytes leaked\n", cur_case, mode,
                k, ms_ctx_bytes(ctx) - base);
        leaks++;
      }
    }
    CHECK(ok && wrong == 0 && leaks == 0);
    fs.fail_at = -1;
    release_all(x, NW);
    release_all(v, NW);
    check_ctx_free(ctx);
  }
}

static void check_alloc_failures(const char *what, sfn_t f, const void *arg, int nd,
                                 const int64_t *shape, const double *xd, const double *vd) {
  static sderivs d;
  check_alloc fs = {0, -1, 0};
  ms_ctx *ctx = ms_ctx_new(check_failing_alloc, &fs);
  ms_tensor *x = NULL, *v = NULL;
  CHECK(ms_tensor_from_data(ctx, nd, shape, xd, &x) == MS_OK);
  CHECK(ms_tensor_from_data(ctx, nd, shape, vd, &v) == MS_OK);
  size_t base = ms_ctx_bytes(ctx);
  int ok = 0, wrong = 0, leaks = 0;
  for (long k = 0; k < 100000 && !ok && !leaks; k++) {
    fs.n = 0, fs.fail_at = k;
    int st = scalar_derivs(ctx, f, arg, x, v, &d);
    ok = st == MS_OK;
    if (!ok && st != MS_ENOMEM && wrong++ == 0)
      fprintf(stderr, "[%s] failing allocation %ld: status %d \"%s\"\n", what, k, st,
              ms_ctx_error(ctx));
    if (ms_ctx_bytes(ctx) != base || ms_ad_depth(ctx) != 0) {
      fprintf(stderr, "[%s] failing allocation %ld: %zu bytes leaked\n", what, k,
              ms_ctx_bytes(ctx) - base);
      leaks++;
    }
  }
  CHECK(ok && wrong == 0 && leaks == 0);
  fs.fail_at = -1;
  ms_tensor_release(x);
  ms_tensor_release(v);
  check_ctx_free(ctx);
}

int main(void) {
  int n = (int)(sizeof cases / sizeof cases[0]);
  for (int i = 0; i < n; i++) run_case(&cases[i], 1000 + (uint64_t)i);
  test_hvp_quadratic();
  test_unrolled_gd();
  test_third_order();
  test_tracked_tangent();
  test_errors();
  test_alloc_failures();
  test_prod_zeros();
  test_pow_zeros();
  test_wide_cat();
  return check_report();
}
