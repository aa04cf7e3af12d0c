/*
 * A C host's path: tensors over its own memory, optimizer steps on its buffers, objectives
 * written with raw loops (meta-gradients through them), meta-training with a task sampler and
 * a cancelling callback, the failure statuses, and two contexts that never interfere.
 */
#include "check.h"
#include "metastep/metastep.h"

/* ---- tensors over host memory ---- */

static void test_wrap(ms_ctx *ctx) {
  double buf[6] = {1, 2, 3, 4, 5, 6};
  int64_t shape[2] = {2, 3};
  ms_tensor *t = NULL, *s = NULL, *row = NULL;
  size_t before = ms_ctx_bytes(ctx);
  CHECK_OK(ctx, ms_tensor_wrap(ctx, buf, 2, shape, &t));
  CHECK(ms_tensor_data(t) == buf);                               /* no copy */
  CHECK(ms_ctx_bytes(ctx) - before < 6 * sizeof(double) + 1024); /* headers only */
  CHECK_OK(ctx, ms_reduce(ctx, MS_SUM, t, 0, 0, &s));            /* reads the host's numbers */
  CHECK(s && ms_tensor_data(s)[0] == 5 && ms_tensor_data(s)[2] == 9);
  CHECK_OK(ctx, ms_tensor_select(ctx, t, 0, 1, &row));
  CHECK_OK(ctx, ms_tensor_fill_(ctx, row, -1)); /* writes land in the host's buffer */
  CHECK(buf[3] == -1 && buf[5] == -1 && buf[0] == 1);
  ms_tensor_release(row);
  ms_tensor_release(s);
  ms_tensor_release(t);
  CHECK(ms_ctx_bytes(ctx) == before); /* the buffer was never the engine's */
  CHECK(buf[4] == -1);
  CHECK_FAILS(ctx, ms_tensor_wrap(ctx, NULL, 2, shape, &t), MS_EARG,
              "ms_tensor_wrap: data is NULL for 6 elements");
  shape[0] = -2;
  CHECK_FAILS(ctx, ms_tensor_wrap(ctx, buf, 2, shape, &t), MS_EARG, "ms_tensor_wrap");
}

/* ---- steps on host buffers: Adam's update written out by hand ---- */

static void test_step_buffer(ms_ctx *ctx) {
  ms_optim_options o;
  memset(&o, 0, sizeof o);
  o.lr = 0.1;
  ms_optim *adam = NULL;
  CHECK_OK(ctx, ms_optim_builtin(ctx, MS_OPTIM_ADAM, &o, &adam));
  double w[3] = {1, -2, 0.5}, ref[3] = {1, -2, 0.5}, m[3] = {0}, v[3] = {0};
  int64_t n = 3;
  ms_tensor *w0 = NULL;
  ms_optim_state *s = NULL;
  CHECK_OK(ctx, ms_tensor_from_data(ctx, 1, &n, w, &w0));
  CHECK_OK(ctx, ms_optim_start(ctx, adam, NULL, w0, &s));
  for (int t = 1; t <= 5 && s; t++) {
    double g[3];
    for (int i = 0; i < 3; i++) g[i] = (i + 1) * w[i]; /* f = 1/2 sum (i+1) w_i^2 */
    CHECK_OK(ctx, ms_optim_state_step_buffer(ctx, s, 3, w, NAN, g));
    for (int i = 0; i < 3; i++) {
      double gi = (i + 1) * ref[i];
      m[i] = 0.9 * m[i] + 0.1 * gi;
      v[i] = 0.999 * v[i] + 0.001 * gi * gi;
      double mh = m[i] / (1 - pow(0.9, t)), vh = v[i] / (1 - pow(0.999, t));
      ref[i] -= 0.1 * mh / (sqrt(vh) + 1e-8);
    }
  }
  for (int i = 0; i < 3; i++) CHECK_NEAR(w[i], ref[i], 1e-14);
  CHECK(s && ms_optim_state_steps(s) == 5);
  double g[3] = {1, 1, 1}, keep[3] = {w[0], w[1], w[2]};
  CHECK_FAILS(ctx, ms_optim_state_step_buffer(ctx, s, 2, w, NAN, g), MS_ESHAPE, "");
  CHECK(w[0] == keep[0] && w[1] == keep[1] && w[2] == keep[2]); /* unchanged on failure */
  CHECK_FAILS(ctx, ms_optim_state_step_buffer(ctx, s, 3, w, NAN, NULL), MS_EARG, "g NULL");
  ms_optim_state_free(s);
  ms_tensor_release(w0);
  ms_optim_release(adam);
}

/* ---- an objective in raw C: f(w) = 1/2 sum_i a_i w_i^2 + sum_i w_i^4 / 4 ---- */

#define RD 4
static const double RA[RD] = {1, 2, 3, 5};
static int r_value(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  (void)ud;
  const double *x = ms_tensor_data(w);
  double s = 0;
  for (int i = 0; i < RD; i++) s += 0.5 * RA[i] * x[i] * x[i] + 0.25 * pow(x[i], 4);
  return ms_tensor_scalar(ctx, s, out);
}
static int r_grad(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  (void)ud;
  const double *x = ms_tensor_data(w);
  double g[RD];
  int64_t d = RD;
  for (int i = 0; i < RD; i++) g[i] = RA[i] * x[i] + pow(x[i], 3);
  return ms_tensor_from_data(ctx, 1, &d, g, out);
}
static int r_hvp(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor *v, ms_tensor **out) {
  (void)ud;
  const double *x = ms_tensor_data(w), *y = ms_tensor_data(v);
  double g[RD];
  int64_t d = RD;
  for (int i = 0; i < RD; i++) g[i] = (RA[i] + 3 * x[i] * x[i]) * y[i];
  return ms_tensor_from_data(ctx, 1, &d, g, out);
}

/* f(w_T) after T steps of GD with step size lr from w0, in plain doubles. */
static double plain_gd(double lr, int T, const double *w0) {
  double w[RD];
  memcpy(w, w0, sizeof w);
  for (int t = 0; t < T; t++)
    for (int i = 0; i < RD; i++) w[i] -= lr * (RA[i] * w[i] + pow(w[i], 3));
  double s = 0;
  for (int i = 0; i < RD; i++) s += 0.5 * RA[i] * w[i] * w[i] + 0.25 * pow(w[i], 4);
  return s;
}

static void test_raw_objective(ms_ctx *ctx) {
  ms_objective_def def;
  memset(&def, 0, sizeof def);
  def.name = "raw";
  def.dim = RD;
  def.value = r_value;
  def.grad = r_grad;
  def.hvp = r_hvp;
  ms_objective *obj = NULL, *nohvp = NULL;
  CHECK_OK(ctx, ms_objective_new_raw(ctx, &def, &obj));
  ms_optim_options o;
  memset(&o, 0, sizeof o);
  o.lr = 0.05;
  ms_optim *gd = NULL;
  CHECK_OK(ctx, ms_optim_builtin(ctx, MS_OPTIM_GD, &o, &gd));
  double w0d[RD] = {0.5, -0.3, 0.2, 0.1};
  int64_t d = RD;
  ms_tensor *w0 = NULL;
  CHECK_OK(ctx, ms_tensor_from_data(ctx, 1, &d, w0d, &w0));
  ms_task task = {obj, NULL, w0, NULL};
  const int T = 20;
  double h = 1e-6;
  double fd = (plain_gd(0.05 + h, T, w0d) - plain_gd(0.05 - h, T, w0d)) / (2 * h);
  ms_meta_method methods[2] = {MS_METHOD_REVERSE, MS_METHOD_FORWARD};
  for (int m = 0; m < 2; m++) {
    ms_meta_spec spec = ms_meta_spec_one(gd, &task, T, MS_META_NAIVE, methods[m]);
    ms_meta_out out;
    CHECK_OK(ctx, ms_meta_value_and_grad(ctx, &spec, &out));
    double g = NAN;
    if (out.grad[0]) ms_tensor_item(ctx, out.grad[0], &g);
    CHECK_NEAR(out.value, plain_gd(0.05, T, w0d), 1e-14);
    CHECK_NEAR(g, fd, 1e-7);
    ms_meta_out_clear(&out);
  }
  /* without hvp: the meta-gradient needs second derivatives, refused with a clear message */
  def.hvp = NULL;
  CHECK_OK(ctx, ms_objective_new_raw(ctx, &def, &nohvp));
  ms_task t2 = {nohvp, NULL, w0, NULL};
  ms_meta_spec spec = ms_meta_spec_one(gd, &t2, T, MS_META_NAIVE, MS_METHOD_REVERSE);
  ms_meta_out out;
  CHECK_FAILS(ctx, ms_meta_value_and_grad(ctx, &spec, &out), MS_EARG,
              "raw: second derivatives need the objective's hvp callback");
  ms_meta_out_clear(&out);
  def.grad = NULL;
  CHECK_FAILS(ctx, ms_objective_new_raw(ctx, &def, &nohvp), MS_EARG,
              "value and grad callbacks are required");
  ms_objective_release(t2.objective);
  ms_tensor_release(w0);
  ms_optim_release(gd);
  ms_objective_release(obj);
}

/* ---- meta-training from C: a sampler, a cancelling callback, the failure statuses ---- */

typedef struct sampler {
  ms_objective *objs[3];
  ms_tensor *w0;
  int calls, stop_at, seen;
} sampler;

static int sample(ms_ctx *ctx, void *ud, int64_t k, int i, ms_task *task) {
  (void)ctx;
  sampler *s = ud;
  s->calls++;
  task->objective = s->objs[(k + i) % 3];
  task->valid = NULL;
  task->w0 = s->w0;
  task->host = NULL;
  return MS_OK;
}

static int progress(ms_ctx *ctx, void *ud, const ms_train_record *rec, ms_tensor *const *theta) {
  (void)ctx;
  (void)theta;
  sampler *s = ud;
  s->seen++;
  return rec->k >= s->stop_at ? 1 : 0; /* 1: stop */
}

static void test_train(ms_ctx *ctx) {
  sampler smp;
  memset(&smp, 0, sizeof smp);
  int64_t d = 3;
  ms_tensor *H = NULL, *diag = NULL;
  for (int j = 0; j < 3; j++) {
    double lam[3] = {1.0 + j, 2.0 + j, 4.0 + j};
    CHECK_OK(ctx, ms_tensor_from_data(ctx, 1, &d, lam, &diag));
    CHECK_OK(ctx, ms_tensor_diag(ctx, diag, &H));
    CHECK_OK(ctx, ms_objective_quadratic(ctx, H, NULL, 0, &smp.objs[j]));
    ms_tensor_release(H);
    ms_tensor_release(diag);
  }
  CHECK_OK(ctx, ms_tensor_ones(ctx, 1, &d, &smp.w0));
  ms_optim_options o;
  memset(&o, 0, sizeof o);
  o.lr = 0.01;
  ms_optim *gd = NULL;
  CHECK_OK(ctx, ms_optim_builtin(ctx, MS_OPTIM_GD, &o, &gd));
  ms_meta_spec spec = ms_meta_spec_one(gd, NULL, 10, MS_META_LOG, MS_METHOD_REVERSE);
  spec.ntasks = 0;
  ms_train_options to;
  memset(&to, 0, sizeof to);
  to.iterations = 50;
  to.meta_lr = 0.01;
  to.sample = sample;
  to.batch = 2;
  to.callback = progress;
  to.ud = &smp;
  smp.stop_at = 7;
  ms_train_result tr;
  CHECK_OK(ctx, ms_meta_train(ctx, &spec, &to, &tr));
  CHECK(tr.stopped == MS_STOP_CALLBACK && tr.n == 7 && smp.seen == 7 && smp.calls == 14);
  double lr = 0;
  if (tr.theta[0]) ms_tensor_item(ctx, tr.theta[0], &lr);
  CHECK(lr > 0.01); /* G decreases with the step size here: it grew */
  ms_train_result_clear(ctx, &tr);
  /* a diverging step size: the meta-gradient overflows at a step, named in the error */
  ms_tensor *big = NULL;
  CHECK_OK(ctx, ms_tensor_scalar(ctx, 1.0, &big)); /* |1 - lr * lambda| up to 5 */
  spec.theta = &big;
  spec.steps = 600;
  to.on_failure = MS_FAIL_ERROR;
  to.callback = NULL;
  CHECK_FAILS(ctx, ms_meta_train(ctx, &spec, &to, &tr), MS_ENUMERIC,
              "meta.train: iteration 1: meta-gradient status overflow (step ");
  CHECK(tr.n == 1 && tr.history == NULL && tr.stopped == MS_STOP_ERROR);
  ms_train_result_clear(ctx, &tr);
  ms_tensor_release(big);
  ms_optim_release(gd);
  ms_tensor_release(smp.w0);
  for (int j = 0; j < 3; j++) ms_objective_release(smp.objs[j]);
}

/* ---- two contexts, alternately, give what each gives alone ---- */

typedef struct job {
  ms_ctx *ctx;
  ms_objective *obj;
  ms_optim *opt;
  ms_tensor *w0, *theta;
  ms_task task;
} job;

static void job_start(job *j, uint64_t seed) {
  ms_ctx *ctx = j->ctx;
  ms_ctx_seed(ctx, seed);
  int64_t d = 6, dd[2] = {6, 6};
  ms_tensor *A = NULL, *At = NULL, *H = NULL;
  CHECK_OK(ctx, ms_tensor_randn(ctx, NULL, 2, dd, 0, 1, &A));
  CHECK_OK(ctx, ms_tensor_transpose(ctx, A, 0, 1, &At));
  CHECK_OK(ctx, ms_matmul(ctx, At, A, &H));
  CHECK_OK(ctx, ms_objective_quadratic(ctx, H, NULL, 0, &j->obj));
  CHECK_OK(ctx, ms_tensor_randn(ctx, NULL, 1, &d, 0, 1, &j->w0));
  ms_optim_options o;
  memset(&o, 0, sizeof o);
  o.lr = 0.01;
  o.beta = 0.5;
  o.beta_set = 1;
  CHECK_OK(ctx, ms_optim_builtin(ctx, MS_OPTIM_MOMENTUM, &o, &j->opt));
  j->task = (ms_task){j->obj, NULL, j->w0, NULL};
  j->theta = NULL;
  ms_tensor_release(A);
  ms_tensor_release(At);
  ms_tensor_release(H);
}

/* One round: a meta-gradient step (SGD, constant rate) on lr and beta, and a random draw. */
static void job_round(job *j) {
  ms_ctx *ctx = j->ctx;
  ms_meta_spec spec = ms_meta_spec_one(j->opt, &j->task, 30, MS_META_LOG, MS_METHOD_REVERSE);
  ms_tensor *th[2] = {j->theta, NULL};
  spec.theta = j->theta ? th : NULL;
  ms_train_options to;
  memset(&to, 0, sizeof to);
  to.iterations = 1;
  to.meta_lr = 0.001;
  to.schedule = MS_SCHEDULE_CONSTANT;
  ms_train_result tr;
  CHECK_OK(ctx, ms_meta_train(ctx, &spec, &to, &tr));
  ms_tensor_release(j->theta);
  j->theta = ms_tensor_retain(tr.theta[0]);
  ms_train_result_clear(ctx, &tr);
  (void)ms_rng_uniform(ms_ctx_rng(ctx));
}

static void job_end(job *j, double *out) {
  ms_tensor_item(j->ctx, j->theta, &out[0]);
  out[1] = ms_rng_uniform(ms_ctx_rng(j->ctx));
  ms_tensor_release(j->theta);
  ms_tensor_release(j->w0);
  ms_objective_release(j->obj);
  ms_optim_release(j->opt);
}

static void test_two_contexts(void) {
  double alone[2][2], mixed[2][2];
  for (int k = 0; k < 2; k++) {
    job j = {ms_ctx_new(NULL, NULL), NULL, NULL, NULL, NULL, {0}};
    job_start(&j, 11 + k);
    for (int r = 0; r < 8; r++) job_round(&j);
    job_end(&j, alone[k]);
    CHECK(ms_ctx_bytes(j.ctx) == 0);
    ms_ctx_free(j.ctx);
  }
  job a = {ms_ctx_new(NULL, NULL), NULL, NULL, NULL, NULL, {0}};
  job b = {ms_ctx_new(NULL, NULL), NULL, NULL, NULL, NULL, {0}};
  job_start(&a, 11);
  job_start(&b, 12);
  for (int r = 0; r < 8; r++) {
    job_round(&a);
    job_round(&b);
  }
  job_end(&a, mixed[0]);
  job_end(&b, mixed[1]);
  for (int k = 0; k < 2; k++)
    CHECK(memcmp(alone[k], mixed[k], sizeof alone[k]) == 0); /* bit for bit */
  CHECK(alone[0][0] != alone[1][0]);                         /* and the seeds matter */
  ms_ctx_free(a.ctx);
  ms_ctx_free(b.ctx);
}

int main(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  test_wrap(ctx);
  test_step_buffer(ctx);
  test_raw_objective(ctx);
  test_train(ctx);
  CHECK(ms_ctx_bytes(ctx) == 0);
  ms_ctx_free(ctx);
  test_two_contexts();
  return check_report();
}
