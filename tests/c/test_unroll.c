/*
 * Unrolls and meta-gradient methods (meta.h) driven from C: reverse, forward, fd and the
 * checkpointed reverse mode against closed forms and against each other, tensor-valued
 * meta-parameters, custom meta-objectives and the spec's checks.
 *
 * Golden values come from the closed form of GD on a diagonal quadratic, written here
 * independently of the engine: with c_i = w0_i, f(w_T) = 1/2 sum_i l_i c_i^2 (1 - eta_i l_i)^(2T).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "metastep/metastep.h"

#define OK(call) CHECK_OK(ctx, call)

static ms_ctx *ctx;

static ms_tensor *vec(int64_t n, const double *x) {
  ms_tensor *t = NULL;
  OK(ms_tensor_from_data(ctx, 1, &n, x, &t));
  return t;
}

static ms_tensor *scalar(double v) {
  ms_tensor *t = NULL;
  OK(ms_tensor_scalar(ctx, v, &t));
  return t;
}

static double item(ms_tensor *t) {
  double v = NAN;
  CHECK(t != NULL);
  if (t == NULL) return v;
  OK(ms_tensor_item(ctx, t, &v));
  return v;
}

/* A diagonal quadratic 1/2 w^T diag(l) w. */
static ms_objective *diag_quadratic(int64_t d, const double *l) {
  ms_tensor *lt = vec(d, l), *H = NULL;
  ms_objective *obj = NULL;
  OK(ms_tensor_diag(ctx, lt, &H));
  OK(ms_objective_quadratic(ctx, H, NULL, 0, &obj));
  ms_tensor_release(lt);
  ms_tensor_release(H);
  return obj;
}

/* The task of diag_quadratic(d, l) from w0 = c; task_free releases what it made. */
static ms_task diag_task(int64_t d, const double *l, const double *c) {
  ms_task t = {diag_quadratic(d, l), NULL, vec(d, c), NULL};
  return t;
}

static void task_free(ms_task *t) {
  ms_tensor_release(t->w0);
  ms_objective_release(t->objective);
}

/* G = (1/T) log f(w_T) and dG/deta_i for per-coordinate step sizes eta (closed form). */
static double closed_G(int64_t d, const double *l, const double *c, const double *eta,
                       int per_coord, int64_t T, double *dG) {
  double a[256], m = -INFINITY;
  for (int64_t i = 0; i < d; i++) {
    double q = 1 - eta[per_coord ? i : 0] * l[i];
    a[i] = q == 0 || c[i] == 0 ? -INFINITY
                               : log(0.5 * l[i] * c[i] * c[i]) + 2.0 * (double)T * log(fabs(q));
    if (a[i] > m) m = a[i];
  }
  double s = 0;
  for (int64_t i = 0; i < d; i++) s += exp(a[i] - m);
  double ll = m + log(s);
  double total = 0;
  for (int64_t i = 0; i < d; i++) {
    double q = 1 - eta[per_coord ? i : 0] * l[i];
    double g = a[i] == -INFINITY ? 0 : exp(a[i] - ll) * 2.0 * (-l[i]) / q;
    if (per_coord) dG[i] = g;
    total += g;
  }
  if (!per_coord) dG[0] = total;
  return ll / (double)T;
}

static ms_optim *make(ms_optim_kind kind, double lr, int log_lr) {
  ms_optim_options o;
  memset(&o, 0, sizeof o);
  o.lr = lr;
  o.log_lr = log_lr;
  o.batch = 3;
  o.seed = 7;
  ms_optim *opt = NULL;
  OK(ms_optim_builtin(ctx, kind, &o, &opt));
  return opt;
}

/* ---- closed form, and the methods against each other ---- */

/* ms_meta_value_and_grad on task's LOG meta-objective over T steps by method m, into *r: it
 * must succeed with the value G (to 1e-12). */
static void log_meta(ms_optim *opt, const ms_task *task, int64_t T, ms_meta_method m, double G,
                     ms_meta_out *r) {
  ms_meta_spec s = ms_meta_spec_one(opt, task, T, MS_META_LOG, m);
  OK(ms_meta_value_and_grad(ctx, &s, r));
  CHECK(r->status == MS_META_OK);
  CHECK_NEAR(r->value, G, 1e-12);
}

static void test_closed_form(void) {
  double l[5] = {1, 2.5, 4, 7, 10}, c[5] = {1, -0.5, 0.3, 2, -1}, eta = 0.05, dG;
  ms_task task = diag_task(5, l, c);
  ms_optim *gd = make(MS_OPTIM_GD, eta, 0);
  double G = closed_G(5, l, c, &eta, 0, 30, &dG);
  ms_meta_method methods[] = {MS_METHOD_REVERSE, MS_METHOD_FORWARD, MS_METHOD_FD, MS_METHOD_EXACT,
                              MS_METHOD_STABLE};
  for (int k = 0; k < 5; k++) {
    ms_meta_out r;
    log_meta(gd, &task, 30, methods[k], G, &r);
    CHECK_NEAR(item(r.grad[0]), dG, methods[k] == MS_METHOD_FD ? 1e-7 : 1e-10);
    ms_meta_out_clear(&r);
  }
  /* log_lr: d/dlog_lr = lr d/dlr */
  ms_optim *lg = make(MS_OPTIM_GD, eta, 1);
  ms_meta_spec s = ms_meta_spec_one(lg, &task, 30, MS_META_LOG, MS_METHOD_REVERSE);
  ms_meta_out r;
  OK(ms_meta_value_and_grad(ctx, &s, &r));
  CHECK_NEAR(item(r.grad[0]), eta * dG, 1e-10);
  CHECK(strcmp(ms_optim_param_at(lg, 0)->name, "log_lr") == 0);
  ms_meta_out_clear(&r);
  ms_optim_release(lg);
  ms_optim_release(gd);
  task_free(&task);
}

/* Per-coordinate step sizes: theta of shape [d]; every method gives the closed form's
 * gradient per coordinate. */
static void test_vector_theta(void) {
  double l[4] = {1, 3, 5, 9}, c[4] = {0.7, -1.2, 0.4, 1}, eta[4] = {0.1, 0.05, 0.02, 0.03}, dG[4];
  ms_objective *obj = diag_quadratic(4, l);
  ms_tensor *w0 = vec(4, c), *lr = vec(4, eta);
  ms_task task = {obj, NULL, w0, NULL};
  ms_optim_options o;
  memset(&o, 0, sizeof o);
  o.lr_init = lr;
  ms_optim *gd = NULL;
  OK(ms_optim_builtin(ctx, MS_OPTIM_GD, &o, &gd));
  double G = closed_G(4, l, c, eta, 1, 25, dG);
  ms_meta_method methods[] = {MS_METHOD_REVERSE, MS_METHOD_FORWARD, MS_METHOD_FD};
  for (int k = 0; k < 3; k++) {
    ms_meta_out r;
    log_meta(gd, &task, 25, methods[k], G, &r);
    CHECK(ms_tensor_ndim(r.grad[0]) == 1 && ms_tensor_dim(r.grad[0], 0) == 4);
    for (int i = 0; i < 4; i++)
      CHECK_NEAR(ms_tensor_data(r.grad[0])[i], dG[i], methods[k] == MS_METHOD_FD ? 1e-6 : 1e-10);
    ms_meta_out_clear(&r);
  }
  /* a theta of the wrong shape names the parameter, expected and actual */
  ms_tensor *bad = vec(3, eta);
  ms_tensor *th[1] = {bad};
  ms_meta_spec s = ms_meta_spec_one(gd, &task, 25, MS_META_LOG, MS_METHOD_REVERSE);
  s.theta = th;
  ms_meta_out r;
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &s, &r), MS_ESHAPE,
              "meta: meta-parameter 'lr' of optimizer 'gd' must have shape [4], got [3]");
  ms_tensor_release(bad);
  ms_optim_release(gd);
  ms_tensor_release(lr);
  ms_tensor_release(w0);
  ms_objective_release(obj);
}

/* The case: eigenvalues log-spaced in [1e3, 1e6], w0 ones, T = 50, eta = 1e-6. A fixed
 * absolute step straddled eta and 2/lambda_max; the relative one agrees with the closed form. */
static void test_fd_small_step(void) {
  double l[20], c[20], eta = 1e-6, dG;
  for (int i = 0; i < 20; i++) l[i] = pow(10, 3 + 3.0 * i / 19), c[i] = 1;
  closed_G(20, l, c, &eta, 0, 50, &dG);
  CHECK_NEAR(dG / 50 * 50, -21677.90672, 1e-9 * 21677.9); /* the number */
  ms_task task = diag_task(20, l, c);
  ms_optim *gd = make(MS_OPTIM_GD, eta, 0);
  ms_meta_spec s = ms_meta_spec_one(gd, &task, 50, MS_META_LOG, MS_METHOD_FD);
  ms_meta_out r;
  OK(ms_meta_value_and_grad(ctx, &s, &r));
  double g = item(r.grad[0]);
  CHECK(r.status != MS_META_OK || fabs(g - dG) <= 1e-6 * fabs(dG));
  CHECK(r.status == MS_META_OK);
  ms_meta_out_clear(&r);
  ms_optim_release(gd);
  task_free(&task);
}

/* ---- checkpointing: the identical meta-gradient, bit for bit ---- */

static int same_bits(ms_tensor *a, ms_tensor *b) {
  if (a == NULL || b == NULL) return a == b;
  return ms_tensor_numel(a) == ms_tensor_numel(b) &&
         memcmp(ms_tensor_data(a), ms_tensor_data(b),
                sizeof(double) * (size_t)ms_tensor_numel(a)) == 0;
}

static void compare_ckpt(ms_meta_spec s, const char *what) {
  ms_meta_out plain, ck;
  s.checkpoint = 0;
  OK(ms_meta_value_and_grad(ctx, &s, &plain));
  int64_t Ks[] = {1, 3, 7, s.steps - 1, s.steps, s.steps + 5};
  for (int k = 0; k < 6; k++) {
    if (Ks[k] < 1) continue;
    s.checkpoint = Ks[k];
    CHECK(ms_meta_value_and_grad(ctx, &s, &ck) == MS_OK);
    int same = plain.value == ck.value && plain.status == ck.status;
    for (int i = 0; i < plain.nparams; i++) same = same && same_bits(plain.grad[i], ck.grad[i]);
    if (!same) {
      fprintf(stderr,
              "checkpoint %lld differs for %s: value %.17g vs %.17g, grad0 %.17g vs %.17g\n",
              (long long)Ks[k], what, plain.value, ck.value,
              plain.grad[0] ? ms_tensor_data(plain.grad[0])[0] : 0.0,
              ck.grad[0] ? ms_tensor_data(ck.grad[0])[0] : 0.0);
    }
    CHECK(same);
    ms_meta_out_clear(&ck);
  }
  ms_meta_out_clear(&plain);
}

static void test_checkpoint(void) {
  int64_t n = 12, d = 5;
  ms_tensor *X = NULL, *y = NULL, *Xv = NULL, *yv = NULL, *w0 = NULL;
  ms_rng rng;
  ms_rng_seed(&rng, 3);
  int64_t sx[2] = {n, d};
  OK(ms_tensor_randn(ctx, &rng, 2, sx, 0, 1, &X));
  OK(ms_tensor_randn(ctx, &rng, 1, &n, 0, 1, &y));
  OK(ms_tensor_randn(ctx, &rng, 2, sx, 0, 1, &Xv));
  OK(ms_tensor_randn(ctx, &rng, 1, &n, 0, 1, &yv));
  OK(ms_tensor_randn(ctx, &rng, 1, &d, 0, 1, &w0));
  ms_objective *ls = NULL, *lv = NULL;
  OK(ms_objective_least_squares(ctx, X, y, &ls));
  OK(ms_objective_least_squares(ctx, Xv, yv, &lv));
  ms_task task = {ls, lv, w0, NULL};
  ms_optim_kind kinds[] = {MS_OPTIM_GD,       MS_OPTIM_SGD,     MS_OPTIM_MOMENTUM,
                           MS_OPTIM_NESTEROV, MS_OPTIM_RMSPROP, MS_OPTIM_ADAM};
  ms_meta_kind metas[] = {MS_META_NAIVE, MS_META_LOG, MS_META_SUM, MS_META_LOGSUM};
  char what[96];
  for (int k = 0; k < 6; k++) {
    ms_optim *opt = make(kinds[k], kinds[k] >= MS_OPTIM_RMSPROP ? 0.01 : 0.05, k % 2);
    for (int m = 0; m < 4; m++) {
      for (int on = 0; on < 2; on++) {
        ms_meta_spec s = ms_meta_spec_one(opt, &task, 17, metas[m], MS_METHOD_REVERSE);
        s.meta.on = on;
        snprintf(what, sizeof what, "%s meta %d on %d", ms_optim_name(opt), m, on);
        compare_ckpt(s, what);
        s.truncate = 6;
        compare_ckpt(s, what);
      }
    }
    ms_optim_release(opt);
  }
  /* freeze_norm: a run that freezes part-way */
  ms_optim *big = make(MS_OPTIM_GD, 0.4, 0);
  ms_meta_spec s = ms_meta_spec_one(big, &task, 20, MS_META_SUM, MS_METHOD_REVERSE);
  s.freeze_norm = 3;
  compare_ckpt(s, "freeze_norm");
  ms_optim_release(big);
  ms_objective_release(ls);
  ms_objective_release(lv);
  ms_tensor_release(X), ms_tensor_release(y), ms_tensor_release(Xv), ms_tensor_release(yv);
  ms_tensor_release(w0);
}

/* ---- reverse mode of GD on a quadratic without a tape ----
 * With no autodiff level active, reverse mode of GD on a quadratic runs on buffers; inside a
 * level (an empty forward level here) it runs on the tape. Both must give the same value, status
 * and fail_step, and gradients within 1e-13, and checkpointing must not change a bit. */

static double rel_diff(double a, double b) {
  if (a == b || (isnan(a) && isnan(b))) return 0;
  return fabs(a - b) / fmax(fabs(b), 1e-300);
}

static void fast_vs_tape(ms_meta_spec s, const char *what) {
  ms_meta_out fast, tape, ck;
  ms_level *lv = NULL;
  OK(ms_meta_value_and_grad(ctx, &s, &fast));
  OK(ms_ad_push(ctx, MS_AD_FORWARD, &lv));
  OK(ms_meta_value_and_grad(ctx, &s, &tape));
  ms_ad_free(lv);
  double worst = rel_diff(fast.value, tape.value);
  for (int64_t i = 0; i < ms_tensor_numel(tape.grad[0]); i++)
    worst = fmax(worst, rel_diff(ms_tensor_data(fast.grad[0])[i], ms_tensor_data(tape.grad[0])[i]));
  int ok = worst <= 1e-13 && fast.status == tape.status && fast.fail_step == tape.fail_step;
  if (!ok)
    fprintf(stderr, "%s: fast and tape differ by %g (status %d/%d at %lld/%lld)\n", what, worst,
            fast.status, tape.status, (long long)fast.fail_step, (long long)tape.fail_step);
  CHECK(ok);
  s.checkpoint = 7;
  OK(ms_meta_value_and_grad(ctx, &s, &ck));
  CHECK(ck.value == fast.value || (isnan(ck.value) && isnan(fast.value)));
  CHECK(same_bits(ck.grad[0], fast.grad[0]) || fast.status != MS_META_OK);
  ms_meta_out_clear(&fast), ms_meta_out_clear(&tape), ms_meta_out_clear(&ck);
}

static int interrupt_at_5(ms_ctx *c, void *ud, int64_t t, double *factor) {
  (void)ud;
  if (t == 5) ms_ctx_interrupt(c);
  *factor = 1;
  return MS_OK;
}

static void test_fast_reverse(void) {
  double h[16] = {4, 1, 0.5, 0, 1, 3, 0.2, 0.1, 0.5, 0.2, 2, 0.3, 0, 0.1, 0.3, 1};
  double ws[4] = {1, -1, 0.5, 2}, w0v[4] = {0.2, 0.4, -1, 3}, lrs[4] = {0.1, 0.05, 0.2, 0.15};
  double factors[3] = {1, 0.5, 0.25};
  int64_t sh[2] = {4, 4}, d = 4;
  ms_tensor *H = NULL, *wst = vec(4, ws), *w0 = vec(4, w0v), *lrt = vec(4, lrs);
  ms_objective *obj = NULL;
  OK(ms_tensor_from_data(ctx, 2, sh, h, &H));
  OK(ms_objective_quadratic(ctx, H, wst, 0.3, &obj));
  ms_task task = {obj, NULL, w0, NULL};
  ms_optim_options o;
  memset(&o, 0, sizeof o);
  ms_optim *opts[5] = {NULL};
  const char *names[5] = {"gd", "gd log_lr", "gd per-coordinate lr", "gd with a schedule",
                          "gd that overflows"};
  o.lr = 0.1;
  OK(ms_optim_builtin(ctx, MS_OPTIM_GD, &o, &opts[0]));
  o.log_lr = 1;
  OK(ms_optim_builtin(ctx, MS_OPTIM_GD, &o, &opts[1]));
  o.log_lr = 0;
  o.lr_init = lrt;
  OK(ms_optim_builtin(ctx, MS_OPTIM_GD, &o, &opts[2]));
  o.lr_init = NULL;
  OK(ms_optim_builtin(ctx, MS_OPTIM_GD, &o, &opts[3]));
  OK(ms_optim_set_schedule(ctx, opts[3], 3, factors));
  o.lr = 0.9; /* 1 - 0.9 * 4.6 < -1: diverges */
  OK(ms_optim_builtin(ctx, MS_OPTIM_GD, &o, &opts[4]));
  char what[96];
  for (int k = 0; k < 5; k++) {
    for (int m = 0; m < 2; m++) {
      ms_meta_spec s = ms_meta_spec_one(opts[k], &task, k == 4 ? 3000 : 40,
                                        m ? MS_META_NAIVE : MS_META_LOG, MS_METHOD_REVERSE);
      snprintf(what, sizeof what, "%s, %s", names[k], m ? "naive" : "log");
      fast_vs_tape(s, what);
    }
  }
  /* an H symmetric only within the objective's tolerance is read whole (dgemv, H and H^T) */
  ms_tensor *Ha = NULL;
  ms_objective *obja = NULL;
  h[1] += 1e-13;
  OK(ms_tensor_from_data(ctx, 2, sh, h, &Ha));
  OK(ms_objective_quadratic(ctx, Ha, wst, 0.3, &obja));
  ms_task taska = {obja, NULL, w0, NULL};
  fast_vs_tape(ms_meta_spec_one(opts[0], &taska, 40, MS_META_LOG, MS_METHOD_REVERSE),
               "asymmetric H");
  ms_objective_release(obja);
  ms_tensor_release(Ha);
  /* Ctrl-C (the flag set by a callback at step 5) stops it at the next step */
  ms_optim *intr = NULL;
  o.lr = 0.1;
  OK(ms_optim_builtin(ctx, MS_OPTIM_GD, &o, &intr));
  OK(ms_optim_set_schedule_fn(ctx, intr, interrupt_at_5, NULL, NULL));
  ms_meta_spec si = ms_meta_spec_one(intr, &task, 40, MS_META_LOG, MS_METHOD_REVERSE);
  ms_meta_out ri;
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &si, &ri), MS_EINTERRUPT, "meta: interrupted");
  CHECK(ri.grad[0] == NULL);
  ms_optim_release(intr);
  /* the overflowing run stops where the tape's does, with its status */
  ms_meta_spec s = ms_meta_spec_one(opts[4], &task, 3000, MS_META_LOG, MS_METHOD_REVERSE);
  ms_meta_out r;
  OK(ms_meta_value_and_grad(ctx, &s, &r));
  CHECK(r.status == MS_META_OVERFLOW && r.fail_step > 1 && r.fail_step < 3000);
  ms_meta_out_clear(&r);
  for (int k = 0; k < 5; k++) ms_optim_release(opts[k]);
  ms_objective_release(obj);
  ms_tensor_release(H), ms_tensor_release(wst), ms_tensor_release(w0), ms_tensor_release(lrt);
  (void)d;
}

/* ---- custom meta-objectives ---- */

static int meta_mean_log(ms_ctx *c, void *ud, const ms_traj *traj, ms_tensor **out) {
  (void)ud;
  ms_tensor *s = NULL, *a = NULL, *b = NULL;
  int st = ms_unary(c, MS_LOG, traj->losses[traj->T], &s);
  if (!st) st = ms_binary_scalar(c, MS_DIV, s, (double)traj->T, 0, &a);
  ms_tensor_release(s);
  (void)b;
  *out = a;
  return st;
}

static int meta_detached(ms_ctx *c, void *ud, const ms_traj *traj, ms_tensor **out) {
  (void)ud;
  double v;
  int st = ms_tensor_item(c, traj->losses[traj->T], &v);
  if (!st) st = ms_tensor_scalar(c, log(v) / (double)traj->T, out);
  return st;
}

static void test_custom(void) {
  double l[3] = {1, 2, 3}, c[3] = {1, 1, 1};
  ms_task task = diag_task(3, l, c);
  ms_optim *gd = make(MS_OPTIM_GD, 0.1, 0);
  ms_meta_spec s = ms_meta_spec_one(gd, &task, 10, MS_META_LOG, MS_METHOD_REVERSE);
  ms_meta_out a, b;
  OK(ms_meta_value_and_grad(ctx, &s, &a));
  s.meta.kind = MS_META_CUSTOM;
  s.meta.fn = meta_mean_log;
  s.meta.name = "mean_log";
  OK(ms_meta_value_and_grad(ctx, &s, &b));
  CHECK(a.value == b.value && same_bits(a.grad[0], b.grad[0]));
  ms_meta_out_clear(&b);
  s.checkpoint = 4;
  OK(ms_meta_value_and_grad(ctx, &s, &b));
  CHECK(a.value == b.value && same_bits(a.grad[0], b.grad[0]));
  ms_meta_out_clear(&b);
  s.checkpoint = 0;
  s.meta.fn = meta_detached;
  s.meta.name = "detached";
  const char *msg =
      "meta: the meta-objective 'detached' returned a value cut off from the trajectory";
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &s, &b), MS_EARG, msg);
  s.method = MS_METHOD_FORWARD;
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &s, &b), MS_EARG, msg);
  s.method = MS_METHOD_REVERSE;
  s.checkpoint = 3;
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &s, &b), MS_EARG, msg);
  /* fd only needs values: a number is fine there */
  s.checkpoint = 0;
  s.method = MS_METHOD_FD;
  OK(ms_meta_value_and_grad(ctx, &s, &b));
  CHECK_NEAR(item(b.grad[0]), item(a.grad[0]), 1e-6);
  ms_meta_out_clear(&b);
  ms_meta_out_clear(&a);
  ms_optim_release(gd);
  task_free(&task);
}

/* ---- statuses, Adam at a zero gradient, bad specs ---- */

static void test_status_and_errors(void) {
  double l[3] = {1, 2, 30}, c[3] = {1, 0, 1};
  ms_task task = diag_task(3, l, c);
  ms_objective *obj = task.objective;
  /* lr far above 2/30: reverse mode overflows and says at which step */
  ms_optim *big = make(MS_OPTIM_GD, 1.0, 0);
  ms_meta_spec s = ms_meta_spec_one(big, &task, 400, MS_META_NAIVE, MS_METHOD_REVERSE);
  ms_meta_out r;
  OK(ms_meta_value_and_grad(ctx, &s, &r));
  CHECK(r.status == MS_META_OVERFLOW && r.fail_step > 0 && r.fail_step <= 400);
  CHECK(isnan(r.value) && isnan(item(r.grad[0])));
  ms_meta_out_clear(&r);
  /* Adam: coordinate 2 has gradient exactly 0 all along; derivatives stay finite */
  ms_optim *adam = make(MS_OPTIM_ADAM, 0.01, 0);
  s = ms_meta_spec_one(adam, &task, 20, MS_META_LOG, MS_METHOD_REVERSE);
  OK(ms_meta_value_and_grad(ctx, &s, &r));
  CHECK(r.status == MS_META_OK && isfinite(item(r.grad[0])));
  ms_meta_out fd;
  s.method = MS_METHOD_FD;
  OK(ms_meta_value_and_grad(ctx, &s, &fd));
  CHECK_NEAR(item(r.grad[0]), item(fd.grad[0]), 1e-6);
  ms_meta_out_clear(&r);
  ms_meta_out_clear(&fd);
  /* bad specs: the message names the field, expected and actual */
  s = ms_meta_spec_one(adam, &task, 0, MS_META_LOG, MS_METHOD_REVERSE);
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &s, &r), MS_EARG,
              "meta: 'steps' must be >= 1, got 0");
  s.steps = 5;
  s.fd_step = 1e-3;
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &s, &r), MS_EARG,
              "meta: 'fd_step' applies to method 'fd', not 'reverse'");
  s.fd_step = 0;
  s.method = MS_METHOD_FORWARD;
  s.checkpoint = 2;
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &s, &r), MS_EARG,
              "meta: 'checkpoint' applies to method 'reverse', not 'forward'");
  s.checkpoint = 0;
  s.freeze_norm = -1;
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &s, &r), MS_EARG,
              "meta: 'freeze_norm' must be finite and > 0 (or 0 = off), got -1");
  s.freeze_norm = 0;
  s.method = MS_METHOD_EXACT;
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &s, &r), MS_EARG, "exact");
  ms_tensor *w0bad = vec(2, c);
  ms_task bad = {obj, NULL, w0bad, NULL};
  s = ms_meta_spec_one(adam, &bad, 5, MS_META_LOG, MS_METHOD_REVERSE);
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &s, &r), MS_ESHAPE,
              "meta: 'w0' has shape [2] but the objective has dimension 3");
  s.tasks = &task;
  s.meta.on = MS_META_VALID;
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &s, &r), MS_EARG,
              "task 1 has no validation objective");
  ms_optim *sgd = make(MS_OPTIM_SGD, 0.1, 0);
  s = ms_meta_spec_one(sgd, &task, 5, MS_META_LOG, MS_METHOD_REVERSE);
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &s, &r), MS_EARG,
              "optimizer 'sgd' draws mini-batches");
  ms_tensor *neg = scalar(-0.1);
  ms_tensor *th[1] = {neg};
  s = ms_meta_spec_one(big, &task, 5, MS_META_LOG, MS_METHOD_REVERSE);
  s.theta = th;
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &s, &r), MS_EARG,
              "meta: meta-parameter 'lr' must be >= 0, got -0.1");
  ms_tensor_release(neg);
  ms_tensor_release(w0bad);
  ms_optim_release(sgd);
  ms_optim_release(adam);
  ms_optim_release(big);
  task_free(&task);
}

/* Adam at a coordinate whose gradient is exactly 0 all along: the second meta-derivative,
 * forward mode over the reverse method, is finite and matches differences of the first. */
static void test_adam_second_derivative(void) {
  double l[3] = {1, 2, 30}, c[3] = {1, 0, 1};
  ms_task task = diag_task(3, l, c);
  ms_optim *adam = make(MS_OPTIM_ADAM, 0.01, 0);
  double lr = 0.01, h = 1e-6, d2 = NAN, g[2];
  ms_level *fwd = NULL;
  ms_tensor *x = scalar(lr), *one = scalar(1.0), *xw = NULL, *t2 = NULL;
  OK(ms_ad_push(ctx, MS_AD_FORWARD, &fwd));
  OK(ms_ad_watch(ctx, fwd, x, one, &xw));
  ms_tensor *th[1] = {xw};
  ms_meta_spec s = ms_meta_spec_one(adam, &task, 20, MS_META_LOG, MS_METHOD_REVERSE);
  s.theta = th;
  ms_meta_out r;
  OK(ms_meta_value_and_grad(ctx, &s, &r));
  OK(ms_ad_pop(ctx, fwd));
  OK(ms_ad_tangent(ctx, fwd, r.grad[0], &t2));
  d2 = item(t2);
  ms_meta_out_clear(&r);
  for (int k = 0; k < 2; k++) {
    ms_tensor *p = scalar(lr + (k ? h : -h));
    th[0] = p;
    OK(ms_meta_value_and_grad(ctx, &s, &r));
    g[k] = item(r.grad[0]);
    ms_meta_out_clear(&r);
    ms_tensor_release(p);
  }
  CHECK(isfinite(d2));
  CHECK_NEAR(d2, (g[1] - g[0]) / (2 * h), 1e-5 * fabs(d2));
  ms_tensor_release(t2), ms_tensor_release(xw), ms_tensor_release(x), ms_tensor_release(one);
  ms_ad_free(fwd);
  ms_optim_release(adam);
  task_free(&task);
}

/* ---- found in review: limits, validation zeros, outer levels, allocation failures ---- */

static void test_review_cases(void) {
  double l[2] = {1, 2}, c[2] = {1, 1};
  ms_task task = diag_task(2, l, c);
  ms_objective *obj = task.objective;
  ms_tensor *w0 = task.w0;
  ms_optim *gd = make(MS_OPTIM_GD, 0.1, 0);
  ms_meta_out r;
  /* a T whose trajectory arrays cannot exist is refused, not overflowed */
  ms_meta_spec s = ms_meta_spec_one(gd, &task, (int64_t)1 << 61, MS_META_NAIVE, MS_METHOD_REVERSE);
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &s, &r), MS_EARG,
              "is more than a recorded trajectory can hold");
  s.checkpoint = 5;
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &s, &r), MS_EARG,
              "is more than a recorded trajectory can hold");
  /* the exact method takes any T */
  s = ms_meta_spec_one(gd, &task, (int64_t)1 << 61, MS_META_LOG, MS_METHOD_EXACT);
  OK(ms_meta_value_and_grad(ctx, &s, &r));
  ms_meta_out_clear(&r);
  /* a schedule step below 1 */
  double f = 0;
  CHECK_FAILS(ctx, ms_optim_factor(ctx, gd, 0, &f), MS_EARG, "schedule step must be >= 1, got 0");
  /* a validation loss of exactly 0 under LOG is an underflow (ok with allow_zero_loss) */
  double z[2] = {0, 0};
  ms_tensor *zero = vec(2, z);
  ms_objective *vq = NULL;
  ms_tensor *Hv = NULL, *lt = vec(2, l);
  OK(ms_tensor_diag(ctx, lt, &Hv));
  OK(ms_objective_quadratic(ctx, Hv, NULL, 0, &vq));
  ms_task vt = {obj, vq, zero, NULL}; /* w stays 0 under GD from 0: the validation loss is 0 */
  s = ms_meta_spec_one(gd, &vt, 3, MS_META_LOG, MS_METHOD_REVERSE);
  s.meta.on = MS_META_VALID;
  OK(ms_meta_value_and_grad(ctx, &s, &r));
  CHECK(r.status == MS_META_UNDERFLOW);
  ms_meta_out_clear(&r);
  s.allow_zero_loss = 1;
  OK(ms_meta_value_and_grad(ctx, &s, &r));
  CHECK(r.status == MS_META_OK || r.status == MS_META_NAN);
  ms_meta_out_clear(&r);
  /* ms_meta_unroll checks the task it is given */
  ms_task novalid = {obj, NULL, w0, NULL};
  s = ms_meta_spec_one(gd, &task, 3, MS_META_SUM, MS_METHOD_REVERSE);
  s.meta.on = MS_META_VALID;
  s.tasks = &vt;
  ms_traj traj;
  CHECK_FAILS(ctx, ms_meta_unroll(ctx, &s, &novalid, 0, &traj), MS_EARG,
              "has no validation objective");
  /* checkpointing refuses a theta traced by an outer level (its result would be first order) */
  ms_level *fwd = NULL;
  ms_tensor *x = scalar(0.1), *one = scalar(1), *xw = NULL;
  OK(ms_ad_push(ctx, MS_AD_FORWARD, &fwd));
  OK(ms_ad_watch(ctx, fwd, x, one, &xw));
  ms_tensor *th[1] = {xw};
  s = ms_meta_spec_one(gd, &task, 5, MS_META_LOG, MS_METHOD_REVERSE);
  s.theta = th;
  s.checkpoint = 2;
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &s, &r), MS_EARG,
              "'checkpoint' gives first-order meta-gradients only");
  OK(ms_ad_pop(ctx, fwd));
  ms_ad_free(fwd);
  ms_tensor_release(xw), ms_tensor_release(x), ms_tensor_release(one);
  ms_tensor_release(zero), ms_tensor_release(Hv), ms_tensor_release(lt);
  ms_objective_release(vq);
  ms_optim_release(gd);
  task_free(&task);
}

/* Every allocation of a checkpointed, a plain reverse and a forward run fails in turn: the
 * call returns MS_ENOMEM or succeeds, and nothing leaks. */
static void test_allocation_failures(void) {
  ms_meta_method methods[] = {MS_METHOD_REVERSE, MS_METHOD_REVERSE, MS_METHOD_FORWARD};
  for (int m = 0; m < 3; m++) {
    long points = 0;
    for (long at = 0;; at++) {
      check_alloc fa = {0, -1, 0};
      ms_ctx *c = ms_ctx_new(check_failing_alloc, &fa);
      double l[2] = {1, 3}, w[2] = {1, -1};
      int64_t d = 2;
      ms_tensor *lt = NULL, *H = NULL, *w0 = NULL;
      ms_objective *obj = NULL;
      ms_optim *opt = NULL;
      ms_optim_options o;
      memset(&o, 0, sizeof o);
      o.lr = 0.05;
      int st = ms_tensor_from_data(c, 1, &d, l, &lt);
      if (!st) st = ms_tensor_diag(c, lt, &H);
      if (!st) st = ms_tensor_from_data(c, 1, &d, w, &w0);
      if (!st) st = ms_objective_quadratic(c, H, NULL, 0, &obj);
      if (!st) st = ms_optim_builtin(c, MS_OPTIM_ADAM, &o, &opt);
      CHECK(st == MS_OK);
      ms_task task = {obj, NULL, w0, NULL};
      ms_meta_spec s = ms_meta_spec_one(opt, &task, 7, MS_META_LOGSUM, methods[m]);
      s.checkpoint = m == 0 ? 3 : 0;
      size_t base = ms_ctx_bytes(c);
      fa.n = 0;
      fa.fail_at = at;
      ms_meta_out r;
      st = ms_meta_value_and_grad(c, &s, &r);
      int done = fa.n <= at; /* the failure point was never reached: the sweep is complete */
      CHECK(st == MS_OK || st == MS_ENOMEM);
      if (st == MS_OK) ms_meta_out_clear(&r);
      fa.fail_at = -1;
      CHECK(ms_ctx_bytes(c) >= base);
      ms_optim_release(opt);
      ms_objective_release(obj);
      ms_tensor_release(lt), ms_tensor_release(H), ms_tensor_release(w0);
      check_ctx_free(c);
      points++;
      if (done) break;
    }
    CHECK(points > 50);
  }
}

/* ---- host conveniences: ms_grad and the version ---- */

static int sum_squares(ms_ctx *c, void *ud, ms_tensor *x, ms_tensor **y) {
  (void)ud;
  ms_tensor *sq = NULL;
  int st = ms_unary(c, MS_SQUARE, x, &sq);
  if (!st) st = ms_reduce(c, MS_SUM, sq, MS_ALL, 0, y);
  ms_tensor_release(sq);
  return st;
}

static void test_host_conveniences(void) {
  double x[3] = {1, -2, 0.5};
  ms_tensor *xt = vec(3, x), *v = NULL, *g = NULL;
  OK(ms_grad(ctx, sum_squares, NULL, xt, &v, &g));
  CHECK_NEAR(item(v), 5.25, 1e-15);
  for (int i = 0; i < 3; i++) CHECK_NEAR(ms_tensor_data(g)[i], 2 * x[i], 1e-15);
  ms_tensor_release(v), ms_tensor_release(g);
  CHECK_FAILS(ctx, ms_grad(ctx, NULL, NULL, xt, NULL, &g), MS_EARG, "grad: the function is NULL");
  ms_tensor_release(xt);
  CHECK(strcmp(ms_version(), METASTEP_VERSION) == 0);
  CHECK(ms_version_number() == METASTEP_VERSION_NUMBER);
  ms_status st = MS_ESHAPE;
  CHECK(strcmp(ms_status_name(st), ms_status_name(MS_ESHAPE)) == 0);
}

/* Reverse mode makes one product by H per step forward (the untraced loss of a quadratic comes
 * from the next step's gradient) and one backward, plus the first loss, the last loss and its
 * backward: 2T + 3 (three per step before). The result is still the closed form's. */
static void test_reverse_products(void) {
  double l[5] = {1, 2.5, 4, 7, 10}, c[5] = {1, -0.5, 0.3, 2, -1}, eta = 0.05, dG;
  int64_t T = 40;
  ms_task task = diag_task(5, l, c);
  ms_optim *gd = make(MS_OPTIM_GD, eta, 0);
  double G = closed_G(5, l, c, &eta, 0, T, &dG);
  uint64_t before = ms_ctx_products(ctx);
  ms_meta_out r;
  log_meta(gd, &task, T, MS_METHOD_REVERSE, G, &r);
  uint64_t n = ms_ctx_products(ctx) - before;
  /* without a tape (no level active): T + 1 forward (g_0 .. g_{T-1}, H r_T), T backward (the
   * loss, steps T .. 2; w_0 needs no adjoint) */
  CHECK(n == (uint64_t)(2 * T + 1));
  CHECK_NEAR(item(r.grad[0]), dG, 1e-10);
  ms_meta_out_clear(&r);
  /* on the tape (inside a level): the first loss, T gradients and the last loss forward, their
   * T + 1 products backward (g_0's input is constant: none) */
  ms_level *lv = NULL;
  OK(ms_ad_push(ctx, MS_AD_FORWARD, &lv));
  before = ms_ctx_products(ctx);
  log_meta(gd, &task, T, MS_METHOD_REVERSE, G, &r);
  n = ms_ctx_products(ctx) - before;
  ms_ad_free(lv);
  CHECK(n <= (uint64_t)(2 * T + 3));
  CHECK(n >= (uint64_t)(2 * T));
  CHECK_NEAR(item(r.grad[0]), dG, 1e-10);
  ms_meta_out_clear(&r);
  ms_optim_release(gd);
  task_free(&task);
}

int main(void) {
  return check_main(
      &ctx,
      (const check_test[]){test_closed_form, test_vector_theta, test_fd_small_step, test_checkpoint,
                           test_custom, test_status_and_errors, test_host_conveniences,
                           test_adam_second_derivative, test_review_cases, test_allocation_failures,
                           test_reverse_products, test_fast_reverse, NULL});
}
