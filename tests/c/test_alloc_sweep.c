/*
 * The allocation-failure sweep over every major operation, as Lua's ltests.c does for the
 * interpreter: each case runs whole (inputs made inside it) with its k-th allocation failing,
 * for k = 0, 1, ... until a run succeeds. Every failing run must return MS_ENOMEM, give back
 * every byte it took (ms_ctx_bytes back at its starting value: no leak) and leave no autodiff
 * level pushed; under ASan it must not touch freed memory or crash. Cases: tensor
 * construction, views, cat, in-place copies and formatting; element-wise ops, broadcasting
 * and reductions; linear algebra; the tape (backward, gradients of gradients, forward mode);
 * the objectives; unrolls; the five meta-gradient methods; meta-training.
 * (test_autodiff sweeps every primitive, test_unroll the checkpointed unrolls and test_train
 * the training options in depth; this file covers each subsystem through its public API.)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "metastep/metastep.h"

#define TRY(call)                         \
  do {                                    \
    if ((st = (call)) != MS_OK) goto out; \
  } while (0)

typedef int (*sweep_fn)(ms_ctx *ctx);

#define MAXT 24

/* Tensors a case makes, released together at its end. */
typedef struct pool {
  ms_tensor *t[MAXT];
  int n;
} pool;

static ms_tensor **slot(pool *p) {
  p->t[p->n] = NULL;
  return &p->t[p->n++];
}

static void pool_free(pool *p) {
  for (int i = 0; i < p->n; i++) ms_tensor_release(p->t[i]);
  p->n = 0;
}

static const int64_t S2[2] = {2, 3}, S1[1] = {3};
static const double D6[6] = {1, -2, 0.5, 3, 4, -1};
static const double SPD[9] = {4, 1, 0, 1, 3, 1, 0, 1, 2};

/* ---- the cases ---- */

static int case_tensor(ms_ctx *ctx) {
  pool p = {0};
  int st;
  char *s = NULL;
  ms_tensor *a, *b, *e;
  TRY(ms_tensor_from_data(ctx, 2, S2, D6, slot(&p)));
  a = p.t[0];
  TRY(ms_tensor_zeros(ctx, 2, S2, slot(&p)));
  TRY(ms_tensor_eye(ctx, 3, -1, slot(&p)));
  TRY(ms_tensor_arange(ctx, 0, 6, 1, slot(&p)));
  TRY(ms_tensor_linspace(ctx, 0, 1, 5, slot(&p)));
  TRY(ms_tensor_randn(ctx, NULL, 2, S2, 0, 1, slot(&p)));
  TRY(ms_tensor_transpose(ctx, a, 0, 1, slot(&p)));
  b = p.t[p.n - 1];
  TRY(ms_tensor_contiguous(ctx, b, slot(&p))); /* a copy: b is not contiguous */
  TRY(ms_tensor_reshape(ctx, b, 1, (const int64_t[]){6}, slot(&p)));
  TRY(ms_tensor_permute(ctx, a, (const int[]){1, 0}, slot(&p)));
  TRY(ms_tensor_slice(ctx, a, 1, 0, 3, 2, slot(&p)));
  TRY(ms_tensor_select(ctx, a, 0, 1, slot(&p)));
  TRY(ms_tensor_diag(ctx, p.t[2], slot(&p)));
  TRY(ms_tensor_from_data(ctx, 1, S1, D6, slot(&p)));
  e = p.t[p.n - 1]; /* read before slot() moves p.n: argument order is unspecified */
  TRY(ms_tensor_expand(ctx, e, 2, S2, slot(&p)));
  e = p.t[p.n - 1];
  TRY(ms_tensor_cat(ctx, 3, (ms_tensor *[]){a, e, a}, 0, slot(&p)));
  TRY(ms_tensor_copy_(ctx, p.t[1], e)); /* broadcast source */
  /* a's second row (p.t[11]) into a: overlapping storage, read through a copy */
  TRY(ms_tensor_copy_(ctx, a, p.t[11]));
  TRY(ms_tensor_format(ctx, a, 0, 0, &s));
out:
  if (s) ms_string_free(ctx, s);
  pool_free(&p);
  return st;
}

static int case_ops(ms_ctx *ctx) {
  pool p = {0};
  int st;
  ms_tensor *a, *v;
  TRY(ms_tensor_from_data(ctx, 2, S2, D6, slot(&p)));
  a = p.t[0];
  TRY(ms_tensor_from_data(ctx, 1, S1, D6, slot(&p)));
  v = p.t[1];
  TRY(ms_binary(ctx, MS_MUL, a, v, slot(&p))); /* broadcast [2,3] * [3] */
  TRY(ms_binary_scalar(ctx, MS_SUB, a, 2.0, 1, slot(&p)));
  TRY(ms_unary(ctx, MS_EXP, a, slot(&p)));
  TRY(ms_reduce(ctx, MS_SUM, a, 0, 0, slot(&p)));
  TRY(ms_reduce(ctx, MS_LOGSUMEXP, a, 1, 1, slot(&p)));
  TRY(ms_reduce(ctx, MS_MAX, a, -1, 0, slot(&p)));
  TRY(ms_where(ctx, a, v, a, slot(&p)));
  TRY(ms_clamp(ctx, a, -1, 1, slot(&p)));
  TRY(ms_sum_to(ctx, a, 1, S1, slot(&p)));
  TRY(ms_log_softmax(ctx, a, 1, slot(&p)));
out:
  pool_free(&p);
  return st;
}

static int case_linalg(ms_ctx *ctx) {
  pool p = {0};
  int st;
  ms_tensor *h, *v, *a;
  static const int64_t S33[2] = {3, 3};
  TRY(ms_tensor_from_data(ctx, 2, S33, SPD, slot(&p)));
  h = p.t[0];
  TRY(ms_tensor_from_data(ctx, 1, S1, D6, slot(&p)));
  v = p.t[1];
  TRY(ms_tensor_from_data(ctx, 2, S2, D6, slot(&p)));
  a = p.t[2];
  TRY(ms_matmul(ctx, a, h, slot(&p)));
  TRY(ms_matvec(ctx, h, v, slot(&p)));
  TRY(ms_dot(ctx, v, v, slot(&p)));
  TRY(ms_outer(ctx, v, v, slot(&p)));
  TRY(ms_solve(ctx, h, v, slot(&p)));
  TRY(ms_inv(ctx, h, slot(&p)));
  TRY(ms_det(ctx, h, slot(&p)));
  TRY(ms_cholesky(ctx, h, slot(&p)));
  ms_tensor **w = slot(&p), **q = slot(&p);
  TRY(ms_eigh(ctx, h, w, q));
  ms_tensor **qq = slot(&p), **rr = slot(&p);
  TRY(ms_qr(ctx, a, qq, rr));
out:
  pool_free(&p);
  return st;
}

/* f(x) = sum(exp(x) * x) + log(1 + x.x), through ops that record on the tape */
static int fscalar(ms_ctx *ctx, void *ud, ms_tensor *x, ms_tensor **y) {
  (void)ud;
  ms_tensor *e = NULL, *m = NULL, *s = NULL, *d = NULL, *l = NULL;
  int st;
  TRY(ms_unary(ctx, MS_EXP, x, &e));
  TRY(ms_binary(ctx, MS_MUL, e, x, &m));
  TRY(ms_reduce(ctx, MS_SUM, m, 0, 0, &s));
  TRY(ms_dot(ctx, x, x, &d));
  TRY(ms_unary(ctx, MS_LOG1P, d, &l));
  TRY(ms_binary(ctx, MS_ADD, s, l, y));
out:
  ms_tensor_release(e);
  ms_tensor_release(m);
  ms_tensor_release(s);
  ms_tensor_release(d);
  ms_tensor_release(l);
  return st;
}

/* g(x) = grad f (x) . v: differentiating it again is a Hessian-vector product */
static int fgrad_dot(ms_ctx *ctx, void *ud, ms_tensor *x, ms_tensor **y) {
  ms_tensor *val = NULL, *g = NULL;
  int st;
  TRY(ms_grad(ctx, fscalar, NULL, x, &val, &g));
  TRY(ms_dot(ctx, g, (ms_tensor *)ud, y));
out:
  ms_tensor_release(val);
  ms_tensor_release(g);
  return st;
}

static int case_tape(ms_ctx *ctx) {
  pool p = {0};
  int st;
  ms_level *tape = NULL, *fwd = NULL;
  ms_tensor *x, *v;
  TRY(ms_tensor_from_data(ctx, 1, S1, D6, slot(&p)));
  x = p.t[0];
  TRY(ms_tensor_from_data(ctx, 1, S1, D6 + 3, slot(&p)));
  v = p.t[1];
  /* reverse: value and gradient; then the gradient of a gradient (second order) */
  TRY(ms_grad(ctx, fscalar, NULL, x, slot(&p), slot(&p)));
  TRY(ms_grad(ctx, fgrad_dot, v, x, slot(&p), slot(&p)));
  /* by hand: a tape, a watched input, backward with a seed */
  TRY(ms_ad_push(ctx, MS_AD_REVERSE, &tape));
  ms_tensor **xw = slot(&p), **y = slot(&p);
  TRY(ms_ad_watch(ctx, tape, x, NULL, xw));
  TRY(fscalar(ctx, NULL, *xw, y));
  TRY(ms_ad_pop(ctx, tape));
  TRY(ms_ad_gradient(ctx, tape, *y, NULL, 1, xw, slot(&p)));
  /* forward mode: the directional derivative along v */
  TRY(ms_ad_push(ctx, MS_AD_FORWARD, &fwd));
  ms_tensor **xf = slot(&p), **yf = slot(&p);
  TRY(ms_ad_watch(ctx, fwd, x, v, xf));
  TRY(fscalar(ctx, NULL, *xf, yf));
  TRY(ms_ad_tangent(ctx, fwd, *yf, slot(&p)));
  TRY(ms_ad_pop(ctx, fwd));
out:
  /* popping is part of freeing a level that is still pushed after a failure */
  ms_ad_free(fwd);
  ms_ad_free(tape);
  pool_free(&p);
  return st;
}

static int case_objectives(ms_ctx *ctx) {
  pool p = {0};
  int st;
  ms_objective *q = NULL, *ls = NULL, *lg = NULL;
  static const int64_t S33[2] = {3, 3}, S32[2] = {3, 2}, S2v[1] = {2};
  static const double X[6] = {1, 0, 0, 1, 1, 1}, Y[3] = {0, 1, 1};
  TRY(ms_tensor_from_data(ctx, 2, S33, SPD, slot(&p)));
  TRY(ms_tensor_from_data(ctx, 1, S1, D6, slot(&p)));
  TRY(ms_tensor_from_data(ctx, 2, S32, X, slot(&p)));
  TRY(ms_tensor_from_data(ctx, 1, S1, Y, slot(&p)));
  TRY(ms_tensor_from_data(ctx, 1, S2v, D6, slot(&p)));
  ms_tensor *H = p.t[0], *w3 = p.t[1], *Xt = p.t[2], *Yt = p.t[3], *w2 = p.t[4];
  TRY(ms_objective_quadratic(ctx, H, NULL, 0, &q));
  TRY(ms_objective_value(ctx, q, w3, slot(&p)));
  TRY(ms_objective_grad(ctx, q, w3, slot(&p)));
  TRY(ms_objective_hvp(ctx, q, w3, w3, slot(&p)));
  TRY(ms_objective_check_psd(ctx, q, "sweep"));
  TRY(ms_objective_least_squares(ctx, Xt, Yt, &ls));
  TRY(ms_objective_value(ctx, ls, w2, slot(&p)));
  TRY(ms_objective_grad(ctx, ls, w2, slot(&p)));
  TRY(ms_objective_hvp(ctx, ls, w2, w2, slot(&p)));
  TRY(ms_objective_logistic(ctx, Xt, Yt, 0.1, &lg));
  TRY(ms_objective_value(ctx, lg, w2, slot(&p)));
  TRY(ms_objective_grad(ctx, lg, w2, slot(&p)));
  TRY(ms_objective_hvp(ctx, lg, w2, w2, slot(&p)));
out:
  ms_objective_release(q);
  ms_objective_release(ls);
  ms_objective_release(lg);
  pool_free(&p);
  return st;
}

/* A quadratic task and a gd optimizer: the shared setup of the meta cases. */
typedef struct meta_setup {
  pool p;
  ms_objective *obj;
  ms_optim *opt;
  ms_task task;
  ms_meta_spec spec;
} meta_setup;

static int meta_setup_make(ms_ctx *ctx, meta_setup *m, ms_optim_kind kind, ms_meta_method method) {
  static const int64_t S33[2] = {3, 3};
  int st;
  memset(m, 0, sizeof *m);
  TRY(ms_tensor_from_data(ctx, 2, S33, SPD, slot(&m->p)));
  TRY(ms_tensor_from_data(ctx, 1, S1, D6, slot(&m->p)));
  TRY(ms_objective_quadratic(ctx, m->p.t[0], NULL, 0, &m->obj));
  ms_optim_options o;
  memset(&o, 0, sizeof o);
  o.lr = 0.1;
  TRY(ms_optim_builtin(ctx, kind, &o, &m->opt));
  m->task.objective = m->obj;
  m->task.w0 = m->p.t[1];
  m->spec.optimizer = m->opt;
  m->spec.ntasks = 1;
  m->spec.tasks = &m->task;
  m->spec.steps = 4;
  m->spec.meta.kind = MS_META_LOG;
  m->spec.method = method;
out:
  return st;
}

static void meta_setup_free(meta_setup *m) {
  ms_optim_release(m->opt);
  ms_objective_release(m->obj);
  pool_free(&m->p);
}

static int meta_method(ms_ctx *ctx, ms_optim_kind kind, ms_meta_method method) {
  meta_setup m;
  ms_meta_out out;
  memset(&out, 0, sizeof out);
  int st;
  TRY(meta_setup_make(ctx, &m, kind, method));
  TRY(ms_meta_value_and_grad(ctx, &m.spec, &out));
  if (out.status != MS_META_OK || out.grad[0] == NULL) st = ms_ctx_fail(ctx, MS_EARG, "bad result");
out:
  ms_meta_out_clear(&out);
  meta_setup_free(&m);
  return st;
}

static int case_meta_reverse(ms_ctx *ctx) {
  return meta_method(ctx, MS_OPTIM_ADAM, MS_METHOD_REVERSE);
}
static int case_meta_forward(ms_ctx *ctx) {
  return meta_method(ctx, MS_OPTIM_MOMENTUM, MS_METHOD_FORWARD);
}
static int case_meta_stable(ms_ctx *ctx) { return meta_method(ctx, MS_OPTIM_GD, MS_METHOD_STABLE); }
static int case_meta_exact(ms_ctx *ctx) { return meta_method(ctx, MS_OPTIM_GD, MS_METHOD_EXACT); }
static int case_meta_fd(ms_ctx *ctx) { return meta_method(ctx, MS_OPTIM_RMSPROP, MS_METHOD_FD); }

static int case_unroll(ms_ctx *ctx) {
  meta_setup m;
  ms_traj traj;
  memset(&traj, 0, sizeof traj);
  int st;
  TRY(meta_setup_make(ctx, &m, MS_OPTIM_NESTEROV, MS_METHOD_REVERSE));
  TRY(ms_meta_unroll(ctx, &m.spec, &m.task, 1, &traj));
  double value = 0;
  int status = 0;
  TRY(ms_meta_value(ctx, &m.spec, &value, &status));
out:
  ms_traj_clear(ctx, &traj);
  meta_setup_free(&m);
  return st;
}

static int case_train(ms_ctx *ctx) {
  meta_setup m;
  ms_train_result r;
  memset(&r, 0, sizeof r);
  int st;
  TRY(meta_setup_make(ctx, &m, MS_OPTIM_GD, MS_METHOD_REVERSE));
  ms_train_options o;
  memset(&o, 0, sizeof o);
  o.iterations = 3;
  o.meta_lr = 0.01;
  o.meta_optimizer = MS_METAOPT_ADAM;
  o.keep_history = 1;
  o.clip = 1.0;
  TRY(ms_meta_train(ctx, &m.spec, &o, &r));
  if (r.n != 3) st = ms_ctx_fail(ctx, MS_EARG, "train: %lld records", (long long)r.n);
out:
  ms_train_result_clear(ctx, &r);
  meta_setup_free(&m);
  return st;
}

/* ---- the sweep ---- */

static void sweep(const char *name, sweep_fn fn) {
  check_alloc fs = {0, -1, 0};
  ms_ctx *ctx = ms_ctx_new(check_failing_alloc, &fs);
  CHECK(ctx != NULL);
  if (ctx == NULL) return;
  ms_ctx_seed(ctx, 3);
  size_t base = ms_ctx_bytes(ctx);
  int ok = 0, wrong = 0, leaks = 0;
  long k;
  for (k = 0; k < 200000 && !ok && !leaks; k++) {
    fs.n = 0, fs.fail_at = k;
    int st = fn(ctx);
    if (st == MS_OK) {
      ok = 1;
    } else if (st != MS_ENOMEM && wrong++ == 0) {
      fprintf(stderr, "[%s] failing allocation %ld: status %d \"%s\"\n", name, k, st,
              ms_ctx_error(ctx));
    }
    if (ms_ctx_bytes(ctx) != base || ms_ad_depth(ctx) != 0) {
      fprintf(stderr, "[%s] failing allocation %ld: %zu bytes leaked, depth %d\n", name, k,
              ms_ctx_bytes(ctx) - base, ms_ad_depth(ctx));
      leaks++;
    }
  }
  fs.fail_at = -1;
  CHECK(ok);
  CHECK(wrong == 0);
  CHECK(leaks == 0);
  CHECK(k > 1); /* the case allocates: the first run failed */
  printf("%-16s %6ld allocation points, each failing cleanly\n", name, k - 1);
  check_ctx_free(ctx);
}

static void test_sweeps(void) {
  static const struct {
    const char *name;
    sweep_fn fn;
  } cases[] = {
      {"tensor", case_tensor},
      {"ops", case_ops},
      {"linalg", case_linalg},
      {"tape", case_tape},
      {"objectives", case_objectives},
      {"unroll", case_unroll},
      {"meta reverse", case_meta_reverse},
      {"meta forward", case_meta_forward},
      {"meta stable", case_meta_stable},
      {"meta exact", case_meta_exact},
      {"meta fd", case_meta_fd},
      {"meta train", case_train},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) sweep(cases[i].name, cases[i].fn);
}

int main(void) { return check_run((const check_test[]){test_sweeps, NULL}); }
