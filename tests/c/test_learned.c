/*
 * Learned optimizers (learned.h) and continued runs (spec->start / stop, meta.train segments).
 *
 * Derivatives are checked against central differences computed here from untraced steps:
 * one step of each optimizer with respect to every meta-parameter, the point and the gradient;
 * and the meta-gradient through two unrolled inner steps by reverse mode, forward mode and the
 * engine's fd method. A continued run is checked against the one long run it continues.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "metastep/archive.h"
#include "metastep/metastep.h"

#define OK(call) CHECK_OK(ctx, call)

static ms_ctx *ctx;

static ms_tensor *randn(ms_rng *rng, int ndim, const int64_t *shape, double std) {
  ms_tensor *t = NULL;
  OK(ms_tensor_randn(ctx, rng, ndim, shape, 0.0, std, &t));
  return t;
}

/* Logistic regression on n random samples of dimension d (labels from a random direction). */
static ms_objective *logistic(int64_t n, int64_t d, uint64_t seed) {
  ms_rng rng;
  ms_rng_seed(&rng, seed);
  int64_t sx[2] = {n, d};
  ms_tensor *X = randn(&rng, 2, sx, 1.0), *y = NULL;
  OK(ms_tensor_zeros(ctx, 1, &n, &y));
  double *px = ms_tensor_data(X), *py = ms_tensor_data(y);
  for (int64_t i = 0; i < n; i++) {
    double s = 0;
    for (int64_t j = 0; j < d; j++) s += px[i * d + j] * (double)(j % 3 - 1);
    py[i] = s + 0.5 * ms_rng_normal(&rng) > 0 ? 1.0 : 0.0;
  }
  ms_objective *obj = NULL;
  OK(ms_objective_logistic(ctx, X, y, 0.01, &obj));
  CHECK_RELEASE(X, y);
  return obj;
}

/* ---- one step ---- */

/* J = sum(r * w') + sum(r2 * w''): w' = one step from (w, g), w'' a second step with gradient
 * g2 (so the state the first step leaves matters too). Inputs: theta[0..np-1], w, g. */
typedef struct step_case {
  ms_optim *opt;
  int np;
  ms_tensor *r, *r2, *g2;
} step_case;

static int eval_J(step_case *c, ms_tensor *const *in, ms_tensor **J) {
  ms_optim_state *s = NULL;
  ms_tensor *w1 = NULL, *w2 = NULL, *a = NULL, *b = NULL, *sa = NULL, *sb = NULL;
  ms_tensor *w = in[c->np], *g = in[c->np + 1];
  int st = ms_optim_start(ctx, c->opt, in, w, &s);
  if (!st) st = ms_optim_state_step(ctx, s, w, NULL, g, &w1);
  if (!st) st = ms_optim_state_step(ctx, s, w1, NULL, c->g2, &w2);
  /* the steps, not the points: J is then of the size of its derivatives (no cancellation) */
  ms_tensor *d1 = NULL, *d2 = NULL;
  if (!st) st = ms_binary(ctx, MS_SUB, w1, w, &d1);
  if (!st) st = ms_binary(ctx, MS_SUB, w2, w1, &d2);
  if (!st) st = ms_binary(ctx, MS_MUL, c->r, d1, &a);
  if (!st) st = ms_binary(ctx, MS_MUL, c->r2, d2, &b);
  CHECK_RELEASE(d1, d2);
  if (!st) st = ms_reduce(ctx, MS_SUM, a, MS_ALL, 0, &sa);
  if (!st) st = ms_reduce(ctx, MS_SUM, b, MS_ALL, 0, &sb);
  if (!st) st = ms_binary(ctx, MS_ADD, sa, sb, J);
  ms_optim_state_free(s);
  CHECK_RELEASE(w1, w2, a, b, sa, sb);
  return st;
}

static double eval_J_value(step_case *c, ms_tensor *const *in) {
  ms_tensor *J = NULL;
  double v = NAN;
  OK(eval_J(c, in, &J));
  if (J) OK(ms_tensor_item(ctx, J, &v));
  ms_tensor_release(J);
  return v;
}

/* Reverse-mode gradient of J in every input against central differences at up to 40 entries
 * of each input (spread over it). */
static void check_one_step(const char *what, ms_optim *opt, int64_t d, uint64_t seed) {
  ms_rng rng;
  ms_rng_seed(&rng, seed);
  step_case c = {opt, ms_optim_nparams(opt), NULL, NULL, NULL};
  int n = c.np + 2;
  ms_tensor *in[MS_OPTIM_MAXPARAMS + 2] = {0}, *xs[MS_OPTIM_MAXPARAMS + 2] = {0};
  ms_tensor *grads[MS_OPTIM_MAXPARAMS + 2] = {0}, *J = NULL;
  for (int i = 0; i < c.np; i++) OK(ms_tensor_copy(ctx, ms_optim_param_at(opt, i)->init, &in[i]));
  in[c.np] = randn(&rng, 1, &d, 0.5);
  in[c.np + 1] = randn(&rng, 1, &d, 0.1);
  c.r = randn(&rng, 1, &d, 1.0);
  c.r2 = randn(&rng, 1, &d, 1.0);
  c.g2 = randn(&rng, 1, &d, 0.1);
  ms_level *tape = NULL;
  OK(ms_ad_push(ctx, MS_AD_REVERSE, &tape));
  for (int i = 0; i < n; i++) OK(ms_ad_watch(ctx, tape, in[i], NULL, &xs[i]));
  int st = eval_J(&c, xs, &J);
  OK(st);
  OK(ms_ad_pop(ctx, tape));
  if (!st) OK(ms_ad_gradient(ctx, tape, J, NULL, n, xs, grads));
  for (int i = 0; i < n && !st; i++) {
    int64_t numel = ms_tensor_numel(in[i]), stride = numel > 40 ? numel / 40 : 1;
    double an[64], fd[64];
    int m = 0;
    double *p = ms_tensor_data(in[i]), *gp = ms_tensor_data(grads[i]);
    for (int64_t e = 0; e < numel && m < 64; e += stride, m++) {
      double x = p[e], h = 1e-5 * (fabs(x) > 1 ? fabs(x) : 1);
      p[e] = x + h;
      double vp = eval_J_value(&c, in);
      p[e] = x - h;
      double vm = eval_J_value(&c, in);
      p[e] = x;
      fd[m] = (vp - vm) / (2 * h);
      an[m] = gp[e];
    }
    char name[96];
    snprintf(name, sizeof name, "%s: one step, input %d", what, i + 1);
    check_near_arr(name, an, fd, m, 1e-6, 1e-8);
  }
  ms_ad_free(tape);
  for (int i = 0; i < n; i++) CHECK_RELEASE(in[i], xs[i], grads[i]);
  CHECK_RELEASE(J, c.r, c.r2, c.g2);
}

/* ---- meta-gradients through two inner steps ---- */

static void check_two_steps(const char *what, ms_optim *opt, ms_meta_kind kind, ms_meta_on on) {
  ms_objective *tr = logistic(12, 5, 11), *va = logistic(12, 5, 12);
  ms_rng rng;
  ms_rng_seed(&rng, 5);
  int64_t d = 5;
  ms_tensor *w0 = randn(&rng, 1, &d, 0.3);
  ms_task task = {tr, va, w0, NULL};
  ms_meta_spec spec = ms_meta_spec_one(opt, &task, 2, kind, MS_METHOD_REVERSE);
  spec.meta.on = on;
  ms_meta_out rev, fwd, fd;
  OK(ms_meta_value_and_grad(ctx, &spec, &rev));
  spec.method = MS_METHOD_FORWARD;
  OK(ms_meta_value_and_grad(ctx, &spec, &fwd));
  spec.method = MS_METHOD_FD;
  spec.fd_step = 1e-4;
  OK(ms_meta_value_and_grad(ctx, &spec, &fd));
  CHECK(rev.status == MS_META_OK && fwd.status == MS_META_OK && fd.status == MS_META_OK);
  CHECK_NEAR(rev.value, fd.value, 1e-14);
  int nonzero = 0;
  for (int i = 0; i < ms_optim_nparams(opt); i++) {
    if (!rev.grad[i] || !fwd.grad[i] || !fd.grad[i]) {
      CHECK(0);
      continue;
    }
    char name[96];
    int64_t n = ms_tensor_numel(rev.grad[i]);
    const double *a = ms_tensor_data(rev.grad[i]);
    for (int64_t e = 0; e < n; e++) nonzero += a[e] != 0;
    snprintf(name, sizeof name, "%s: reverse vs forward, %s", what,
             ms_optim_param_at(opt, i)->name);
    check_near_arr(name, a, ms_tensor_data(fwd.grad[i]), n, 1e-10, 1e-12);
    snprintf(name, sizeof name, "%s: reverse vs fd, %s", what, ms_optim_param_at(opt, i)->name);
    check_near_arr(name, a, ms_tensor_data(fd.grad[i]), n, 1e-6, 1e-9);
  }
  CHECK(nonzero > 0);
  ms_meta_out_clear(&rev);
  ms_meta_out_clear(&fwd);
  ms_meta_out_clear(&fd);
  ms_tensor_release(w0);
  ms_objective_release(tr);
  ms_objective_release(va);
}

static void test_mlp(void) {
  ms_learned_options o;
  memset(&o, 0, sizeof o);
  o.seed = 3;
  o.hidden = 6;
  o.step_scale = 0.1; /* steps that move w visibly, so second-order terms matter */
  o.exp_scale = 0.5;
  ms_optim *opt = NULL;
  OK(ms_optim_learned_mlp(ctx, &o, &opt));
  if (!opt) return;
  CHECK(strcmp(ms_optim_name(opt), "learned_mlp") == 0);
  CHECK(ms_optim_nparams(opt) == 5 && ms_optim_nstate(opt) == 2);
  CHECK(ms_tensor_dim(ms_optim_param_at(opt, 0)->init, 0) == 22);
  CHECK(ms_tensor_dim(ms_optim_param_at(opt, 1)->init, 0) == 11);
  const ms_learned_options *lo = ms_learned_options_of(opt);
  CHECK(lo && lo->hidden == 6 && lo->step_scale == 0.1);
  check_one_step("mlp", opt, 7, 21);
  check_two_steps("mlp sum/train", opt, MS_META_SUM, MS_META_TRAIN);
  check_two_steps("mlp log/valid", opt, MS_META_LOG, MS_META_VALID);
  ms_optim_release(opt);
}

/* The default initialisation is descent-like: the first step is -step_scale times the
 * normalised momentum at decay 0.9, m = 0.1 g, i.e. -0.001 g / rms(g) (plus the small random
 * terms, bounded here), so every coordinate moves against its gradient. */
static void test_mlp_descent_init(void) {
  ms_learned_options o;
  memset(&o, 0, sizeof o);
  ms_optim *opt = NULL;
  OK(ms_optim_learned_mlp(ctx, &o, &opt));
  if (!opt) return;
  ms_rng rng;
  ms_rng_seed(&rng, 9);
  int64_t d = 50;
  ms_tensor *w = randn(&rng, 1, &d, 1.0), *g = randn(&rng, 1, &d, 1e-3), *wn = NULL;
  ms_optim_state *s = NULL;
  OK(ms_optim_start(ctx, opt, NULL, w, &s));
  OK(ms_optim_state_step(ctx, s, w, NULL, g, &wn));
  if (wn) {
    const double *pw = ms_tensor_data(w), *pg = ms_tensor_data(g), *pn = ms_tensor_data(wn);
    double rms = 0;
    for (int64_t i = 0; i < d; i++) rms += pg[i] * pg[i] / (double)d;
    rms = sqrt(rms);
    int against = 1;
    double worst = 0;
    for (int64_t i = 0; i < d; i++) {
      double step = pn[i] - pw[i], expect = -1e-3 * pg[i] / rms;
      against &= step * pg[i] < 0 || fabs(pg[i]) < 0.05 * rms;
      if (fabs(step - expect) > worst) worst = fabs(step - expect);
    }
    CHECK(against);
    CHECK(worst < 2e-4); /* |random part| = 1e-3 * O(0.01 * sqrt(30)) at most */
  }
  ms_optim_state_free(s);
  CHECK_RELEASE(w, g, wn);
  ms_optim_release(opt);
}

static void test_lstm(void) {
  ms_learned_options o;
  memset(&o, 0, sizeof o);
  o.seed = 4;
  o.hidden = 3;
  ms_optim *opt = NULL;
  OK(ms_optim_learned_lstm(ctx, &o, &opt));
  if (!opt) return;
  CHECK(strcmp(ms_optim_name(opt), "learned_lstm") == 0);
  CHECK(ms_optim_nparams(opt) == 8 && ms_optim_nstate(opt) == 4);
  check_one_step("lstm", opt, 6, 22);
  check_two_steps("lstm sum/train", opt, MS_META_SUM, MS_META_TRAIN);
  ms_optim_release(opt);
  o.layers = 1;
  OK(ms_optim_learned_lstm(ctx, &o, &opt));
  if (!opt) return;
  CHECK(ms_optim_nparams(opt) == 5 && ms_optim_nstate(opt) == 2);
  check_one_step("lstm 1 layer", opt, 6, 23);
  check_two_steps("lstm 1 layer naive/valid", opt, MS_META_NAIVE, MS_META_VALID);
  ms_optim_release(opt);
}

/* The preprocessing of tiny gradients: below e^-10 the inputs are (-1, e^10 g). A gradient of
 * exactly 0 gives finite derivatives. */
static void test_lstm_zero_gradient(void) {
  ms_learned_options o;
  memset(&o, 0, sizeof o);
  o.hidden = 2;
  o.layers = 1;
  ms_optim *opt = NULL;
  OK(ms_optim_learned_lstm(ctx, &o, &opt));
  if (!opt) return;
  int64_t d = 3;
  double gv[3] = {0, 1e-6, -2.0};
  ms_tensor *w = NULL, *g = NULL, *gw = NULL, *wn = NULL, *sum = NULL, *grad = NULL;
  OK(ms_tensor_zeros(ctx, 1, &d, &w));
  OK(ms_tensor_from_data(ctx, 1, &d, gv, &g));
  ms_level *tape = NULL;
  ms_optim_state *s = NULL;
  OK(ms_ad_push(ctx, MS_AD_REVERSE, &tape));
  OK(ms_ad_watch(ctx, tape, g, NULL, &gw));
  OK(ms_optim_start(ctx, opt, NULL, w, &s));
  OK(ms_optim_state_step(ctx, s, w, NULL, gw, &wn));
  OK(ms_reduce(ctx, MS_SUM, wn, MS_ALL, 0, &sum));
  OK(ms_ad_pop(ctx, tape));
  OK(ms_ad_gradient(ctx, tape, sum, NULL, 1, &gw, &grad));
  CHECK(grad && ms_tensor_all_finite(grad) && wn && ms_tensor_all_finite(wn));
  ms_ad_free(tape);
  ms_optim_state_free(s);
  CHECK_RELEASE(w, g, gw, wn, sum, grad);
  ms_optim_release(opt);
}

static void test_options(void) {
  ms_learned_options o;
  memset(&o, 0, sizeof o);
  ms_optim *opt = NULL;
  o.hidden = 1;
  CHECK_FAILS(ctx, ms_optim_learned_mlp(ctx, &o, &opt), MS_EARG,
              "optim.learned_mlp: option 'hidden' must be in [2, 4096], got 1");
  o.hidden = 0;
  o.layers = 3;
  CHECK_FAILS(ctx, ms_optim_learned_lstm(ctx, &o, &opt), MS_EARG,
              "optim.learned_lstm: option 'layers' must be 1 or 2, got 3");
  CHECK_FAILS(ctx, ms_optim_learned_mlp(ctx, &o, &opt), MS_EARG,
              "optim.learned_mlp: option 'layers' applies to the LSTM optimizer only");
  o.layers = 0;
  o.step_scale = -1;
  CHECK_FAILS(ctx, ms_optim_learned_mlp(ctx, &o, &opt), MS_EARG,
              "option 'step_scale' must be finite and > 0, got -1");
  o.step_scale = 0;
  o.exp_scale = 1;
  CHECK_FAILS(ctx, ms_optim_learned_lstm(ctx, &o, &opt), MS_EARG,
              "optim.learned_lstm: option 'exp_scale' applies to the MLP optimizer only");
  o.exp_scale = 0;
  /* theta given: shapes checked; the values become the initial values */
  ms_tensor *th[5] = {0};
  int64_t s1[2] = {22, 4}, s2[2] = {11, 4}, s3 = 4, s4[2] = {4, 2}, s5 = 2;
  OK(ms_tensor_full(ctx, 2, s1, 0.5, &th[0]));
  OK(ms_tensor_zeros(ctx, 2, s2, &th[1]));
  OK(ms_tensor_zeros(ctx, 1, &s3, &th[2]));
  OK(ms_tensor_zeros(ctx, 2, s4, &th[3]));
  OK(ms_tensor_zeros(ctx, 1, &s5, &th[4]));
  o.theta = th;
  CHECK_FAILS(ctx, ms_optim_learned_mlp(ctx, &o, &opt), MS_ESHAPE,
              "optim.learned_mlp: meta-parameter 'w1' must have shape [22,32], got [22,4]");
  o.hidden = 4;
  OK(ms_optim_learned_mlp(ctx, &o, &opt));
  if (opt) {
    double v = 0;
    int64_t idx[2] = {3, 1};
    OK(ms_tensor_get(ctx, ms_optim_param_at(opt, 0)->init, idx, &v));
    CHECK(v == 0.5);
    CHECK(ms_optim_param_at(opt, 0)->init != th[0]); /* a copy */
    ms_optim_release(opt);
  }
  for (int i = 0; i < 5; i++) ms_tensor_release(th[i]);
  ms_optim *adam = NULL;
  ms_optim_options ao;
  memset(&ao, 0, sizeof ao);
  ao.lr = 0.1;
  OK(ms_optim_builtin(ctx, MS_OPTIM_ADAM, &ao, &adam));
  CHECK(adam && ms_learned_options_of(adam) == NULL);
  ms_optim_release(adam);
}

/* ---- continued runs ---- */

/* Two segments of 3 steps (the second starting where the first stopped) against one run of 6:
 * the second segment's NAIVE value is f(w_6) bit for bit, and its meta-gradient is the 6-step
 * run's truncated to the last 3 steps. The mini-batch optimizer checks that the continued run
 * draws the batches of steps 4..6. */
static void test_continue(void) {
  ms_learned_options o;
  memset(&o, 0, sizeof o);
  o.seed = 8;
  o.hidden = 5;
  o.step_scale = 0.05;
  o.batch = 4;
  o.batch_seed = 17;
  ms_optim *opt = NULL;
  OK(ms_optim_learned_mlp(ctx, &o, &opt));
  ms_objective *obj = logistic(20, 4, 31);
  if (!opt || !obj) goto out;
  ms_task task = {obj, NULL, NULL, NULL};
  ms_meta_spec full = ms_meta_spec_one(opt, &task, 6, MS_META_NAIVE, MS_METHOD_REVERSE);
  full.truncate = 3;
  ms_meta_out a, b1, b2;
  OK(ms_meta_value_and_grad(ctx, &full, &a));
  ms_run_state mid, end;
  memset(&mid, 0, sizeof mid);
  memset(&end, 0, sizeof end);
  ms_meta_spec seg = ms_meta_spec_one(opt, &task, 3, MS_META_NAIVE, MS_METHOD_REVERSE);
  seg.stop = &mid;
  OK(ms_meta_value_and_grad(ctx, &seg, &b1));
  CHECK(mid.w && mid.t == 3 && mid.nstate == 2 && mid.state[1]);
  CHECK(mid.w && !ms_ad_is_traced(ctx, mid.w));
  seg.start = &mid;
  seg.stop = &end;
  OK(ms_meta_value_and_grad(ctx, &seg, &b2));
  CHECK(end.t == 6);
  CHECK(a.value == b2.value);
  for (int i = 0; i < ms_optim_nparams(opt); i++) {
    if (!a.grad[i] || !b2.grad[i]) {
      CHECK(0);
      continue;
    }
    check_near_arr("continued segment vs truncated run", ms_tensor_data(b2.grad[i]),
                   ms_tensor_data(a.grad[i]), ms_tensor_numel(a.grad[i]), 1e-13, 1e-15);
  }
  /* the unroll of the second segment ends where the 6-step run ends */
  ms_traj t6, t3;
  full.truncate = 0;
  OK(ms_meta_unroll(ctx, &full, &task, 0, &t6));
  OK(ms_meta_unroll(ctx, &seg, &task, 0, &t3));
  double diff = 1;
  if (t6.w_T && t3.w_T) OK(ms_max_abs_diff(ctx, t6.w_T, t3.w_T, &diff));
  CHECK(diff == 0);
  ms_traj_clear(ctx, &t6);
  ms_traj_clear(ctx, &t3);
  /* checks */
  ms_meta_out_clear(&b1);
  seg.method = MS_METHOD_STABLE;
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &seg, &b1), MS_EARG,
              "meta: method 'stable' does not continue runs ('start', 'stop')");
  seg.method = MS_METHOD_REVERSE;
  seg.stop = (ms_run_state *)seg.start;
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &seg, &b1), MS_EARG,
              "meta: 'stop' must not be the 'start' array");
  seg.stop = NULL;
  mid.t = -1;
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &seg, &b1), MS_EARG,
              "meta: 'start' of task 1 has t = -1, expected >= 0");
  ms_meta_out_clear(&a);
  ms_meta_out_clear(&b1);
  ms_meta_out_clear(&b2);
  ms_run_state_clear(&mid);
  ms_run_state_clear(&end);
out:
  ms_optim_release(opt);
  ms_objective_release(obj);
}

/* meta.train with segments = 3 and meta_lr = 0 (theta fixed): iterations 1, 2, 3 see f(w_2),
 * f(w_4), f(w_6) of one long run; iteration 4 starts again and sees f(w_2). */
typedef struct seg_log {
  double v[8];
  int n;
} seg_log;

static int seg_cb(ms_ctx *c, void *ud, const ms_train_record *rec, ms_tensor *const *theta) {
  (void)c, (void)theta;
  seg_log *l = ud;
  if (l->n < 8) l->v[l->n++] = rec->value;
  return 0;
}

static void test_train_segments(void) {
  ms_learned_options o;
  memset(&o, 0, sizeof o);
  o.hidden = 4;
  o.step_scale = 0.05;
  ms_optim *opt = NULL;
  OK(ms_optim_learned_mlp(ctx, &o, &opt));
  ms_objective *obj = logistic(20, 4, 41);
  if (!opt || !obj) goto out;
  ms_task task = {obj, NULL, NULL, NULL};
  ms_meta_spec spec = ms_meta_spec_one(opt, &task, 2, MS_META_NAIVE, MS_METHOD_REVERSE);
  ms_train_options to;
  memset(&to, 0, sizeof to);
  to.iterations = 4;
  to.meta_lr = 0;
  to.segments = 3;
  to.callback = seg_cb;
  seg_log log = {{0}, 0};
  to.ud = &log;
  ms_train_result res;
  OK(ms_meta_train(ctx, &spec, &to, &res));
  ms_train_result_clear(ctx, &res);
  ms_traj traj;
  ms_meta_spec long_run = ms_meta_spec_one(opt, &task, 6, MS_META_NAIVE, MS_METHOD_REVERSE);
  OK(ms_meta_unroll(ctx, &long_run, &task, 0, &traj));
  CHECK(log.n == 4);
  if (traj.losses && log.n == 4) {
    double l2, l4, l6;
    OK(ms_tensor_item(ctx, traj.losses[2], &l2));
    OK(ms_tensor_item(ctx, traj.losses[4], &l4));
    OK(ms_tensor_item(ctx, traj.losses[6], &l6));
    CHECK(log.v[0] == l2 && log.v[1] == l4 && log.v[2] == l6 && log.v[3] == l2);
    CHECK(l6 < l2); /* the descent-like start trains */
  }
  ms_traj_clear(ctx, &traj);
  to.segments = -1;
  CHECK_FAILS(ctx, ms_meta_train(ctx, &spec, &to, &res), MS_EARG,
              "meta.train: option 'segments' must be >= 0, got -1");
  ms_train_result_clear(ctx, &res);
out:
  ms_optim_release(opt);
  ms_objective_release(obj);
}

/* With a sampler and segments = 3, tasks are drawn at iterations 1, 4, 7 only, kept alive
 * (not released) while their runs continue, and all released by the end. */
typedef struct sampler {
  ms_objective *obj;
  int drawn, released, live;
} sampler;

static int sample_fn(ms_ctx *c, void *ud, int64_t k, int i, ms_task *task) {
  (void)c, (void)i;
  sampler *s = ud;
  CHECK((k - 1) % 3 == 0);
  s->drawn++;
  s->live++;
  task->objective = s->obj;
  return MS_OK;
}

static void release_fn(ms_ctx *c, void *ud, ms_task *task) {
  (void)c;
  sampler *s = ud;
  CHECK(task->objective == s->obj);
  s->released++;
  s->live--;
}

static void test_train_segments_sampler(void) {
  ms_learned_options o;
  memset(&o, 0, sizeof o);
  o.hidden = 3;
  ms_optim *opt = NULL;
  OK(ms_optim_learned_mlp(ctx, &o, &opt));
  sampler sm = {logistic(16, 4, 51), 0, 0, 0};
  if (!opt || !sm.obj) goto out;
  ms_meta_spec spec = ms_meta_spec_one(opt, NULL, 2, MS_META_SUM, MS_METHOD_REVERSE);
  spec.ntasks = 0;
  ms_train_options to;
  memset(&to, 0, sizeof to);
  to.iterations = 7;
  to.meta_lr = 1e-3;
  to.meta_optimizer = MS_METAOPT_RMSPROP;
  to.segments = 3;
  to.sample = sample_fn;
  to.release_task = release_fn;
  to.batch = 2;
  to.ud = &sm;
  to.keep_history = 1;
  ms_train_result res;
  OK(ms_meta_train(ctx, &spec, &to, &res));
  CHECK(res.n == 7 && res.stopped == MS_STOP_DONE);
  CHECK(sm.drawn == 6 && sm.released == 6 && sm.live == 0);
  ms_train_result_clear(ctx, &res);
out:
  ms_optim_release(opt);
  ms_objective_release(sm.obj);
}

/* ---- saving and loading ---- */

static int same_bits(const ms_tensor *a, const ms_tensor *b) {
  if (ms_tensor_numel(a) != ms_tensor_numel(b) || ms_tensor_ndim(a) != ms_tensor_ndim(b)) return 0;
  for (int k = 0; k < ms_tensor_ndim(a); k++)
    if (ms_tensor_dim(a, k) != ms_tensor_dim(b, k)) return 0;
  return memcmp(ms_tensor_data(a), ms_tensor_data(b),
                (size_t)ms_tensor_numel(a) * sizeof(double)) == 0;
}

static void roundtrip(ms_optim *opt, const char *path) {
  ms_rng rng;
  ms_rng_seed(&rng, 77);
  int np = ms_optim_nparams(opt);
  ms_tensor *theta[MS_OPTIM_MAXPARAMS] = {0};
  /* trained-looking values: the initial ones plus noise (so nothing is a default) */
  for (int i = 0; i < np; i++) {
    const ms_tensor *init = ms_optim_param_at(opt, i)->init;
    ms_tensor *noise = randn(&rng, ms_tensor_ndim(init), ms_tensor_shape(init), 0.3);
    OK(ms_binary(ctx, MS_ADD, init, noise, &theta[i]));
    ms_tensor_release(noise);
  }
  OK(ms_optim_save(ctx, opt, theta, path));
  ms_optim *back = NULL;
  OK(ms_optim_load(ctx, path, &back));
  if (back) {
    CHECK(strcmp(ms_optim_name(back), ms_optim_name(opt)) == 0);
    CHECK(ms_optim_nparams(back) == np && ms_optim_nstate(back) == ms_optim_nstate(opt));
    const ms_learned_options *a = ms_learned_options_of(opt), *b = ms_learned_options_of(back);
    CHECK(b && a->seed == b->seed && a->hidden == b->hidden && a->layers == b->layers &&
          a->step_scale == b->step_scale && a->exp_scale == b->exp_scale && a->batch == b->batch &&
          a->batch_seed == b->batch_seed);
    for (int i = 0; i < np; i++) {
      CHECK(strcmp(ms_optim_param_at(back, i)->name, ms_optim_param_at(opt, i)->name) == 0);
      CHECK(same_bits(ms_optim_param_at(back, i)->init, theta[i]));
    }
    /* the loaded optimizer steps exactly as the original with those values */
    int64_t d = 9;
    ms_tensor *w = randn(&rng, 1, &d, 1.0), *g = randn(&rng, 1, &d, 0.1), *w1 = NULL, *w2 = NULL;
    ms_optim_state *s1 = NULL, *s2 = NULL;
    OK(ms_optim_start(ctx, opt, theta, w, &s1));
    OK(ms_optim_start(ctx, back, NULL, w, &s2));
    OK(ms_optim_state_step(ctx, s1, w, NULL, g, &w1));
    OK(ms_optim_state_step(ctx, s2, w, NULL, g, &w2));
    CHECK(w1 && w2 && same_bits(w1, w2));
    ms_optim_state_free(s1);
    ms_optim_state_free(s2);
    CHECK_RELEASE(w, g, w1, w2);
    ms_optim_release(back);
  }
  for (int i = 0; i < np; i++) ms_tensor_release(theta[i]);
}

static void test_save_load(void) {
  const char *path = "test_learned_roundtrip.msa";
  ms_learned_options o;
  memset(&o, 0, sizeof o);
  o.seed = 12;
  o.hidden = 7;
  o.batch = 3;
  o.batch_seed = 99;
  ms_optim *mlp = NULL, *lstm = NULL, *adam = NULL;
  OK(ms_optim_learned_mlp(ctx, &o, &mlp));
  o.layers = 1;
  OK(ms_optim_learned_lstm(ctx, &o, &lstm));
  if (mlp) roundtrip(mlp, path);
  if (lstm) roundtrip(lstm, path);
  /* NULL theta: the optimizer's own values */
  ms_optim *back = NULL;
  if (mlp) {
    OK(ms_optim_save(ctx, mlp, NULL, path));
    OK(ms_optim_load(ctx, path, &back));
    if (back) CHECK(same_bits(ms_optim_param_at(back, 0)->init, ms_optim_param_at(mlp, 0)->init));
    ms_optim_release(back);
    back = NULL;
  }
  ms_optim_options ao;
  memset(&ao, 0, sizeof ao);
  ao.lr = 0.1;
  OK(ms_optim_builtin(ctx, MS_OPTIM_ADAM, &ao, &adam));
  CHECK_FAILS(ctx, ms_optim_save(ctx, adam, NULL, path), MS_EARG,
              "optim.save: optimizer 'adam' is not a learned optimizer");
  CHECK_FAILS(ctx, ms_optim_load(ctx, "no/such/file.msa", &back), MS_ESTATE, "no/such/file.msa");
  /* an archive of something else */
  ms_archive *a = NULL;
  OK(ms_archive_new(ctx, &a));
  OK(ms_archive_put_number(a, "lr", 0.5));
  OK(ms_archive_save(a, path));
  ms_archive_free(a);
  CHECK_FAILS(ctx, ms_optim_load(ctx, path, &back), MS_EARG,
              "optim.load: 'test_learned_roundtrip.msa' is not a saved learned optimizer");
  /* a truncated file: the archive's checks name the path */
  if (mlp) OK(ms_optim_save(ctx, mlp, NULL, path));
  FILE *f = fopen(path, "rb");
  char buf[4096];
  size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
  if (f) fclose(f);
  f = fopen(path, "wb");
  if (f) {
    fwrite(buf, 1, n / 2, f);
    fclose(f);
  }
  CHECK_FAILS(ctx, ms_optim_load(ctx, path, &back), MS_EARG, "test_learned_roundtrip.msa");
  CHECK(back == NULL);
  remove(path);
  ms_optim_release(mlp);
  ms_optim_release(lstm);
  ms_optim_release(adam);
}

/* Runs a test and checks that it released everything it made. */
static void run(void (*test)(void), const char *name) {
  size_t before = ms_ctx_bytes(ctx);
  test();
  if (!check_record(ms_ctx_bytes(ctx) == before, __FILE__, __LINE__, "%s leaked %zu bytes", name,
                    ms_ctx_bytes(ctx) - before))
    return;
}

int main(void) {
  ctx = ms_ctx_new(NULL, NULL);
  run(test_mlp, "mlp");
  run(test_mlp_descent_init, "mlp_descent_init");
  run(test_lstm, "lstm");
  run(test_lstm_zero_gradient, "lstm_zero_gradient");
  run(test_options, "options");
  run(test_continue, "continue");
  run(test_train_segments, "train_segments");
  run(test_train_segments_sampler, "train_segments_sampler");
  run(test_save_load, "save_load");
  CHECK(ms_ctx_bytes(ctx) == 0);
  ms_ctx_free(ctx);
  return check_report();
}
