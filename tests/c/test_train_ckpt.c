/*
 * Meta-training checkpoints (train.h: checkpoint, every, resume, save_state, load_state).
 *
 * The golden run is the same run left uninterrupted: a run stopped part-way (by its
 * callback), whose process state is then scrambled (the context reseeded, the sampler's
 * position reset, as in a new process), resumed from its checkpoint must give the same
 * records, theta, best and generator state bit for bit. Tasks draw w0 from the context's
 * generator and count their position in the host's state, so both must be restored.
 * A damaged or mismatched checkpoint is refused with its message and nothing changed;
 * an allocation failure at every point of a checkpointed and a resumed run leaks nothing.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "metastep/metastep.h"

static char dir[256];

typedef struct host {
  ms_objective *obj;
  int64_t position; /* tasks drawn so far */
  int64_t loaded_k; /* k given to load_state, -1 when not called */
  int64_t stop_at;  /* the callback stops after this iteration (0: never) */
} host;

static int sample(ms_ctx *ctx, void *ud, int64_t k, int i, ms_task *task) {
  host *h = ud;
  (void)k, (void)i;
  memset(task, 0, sizeof *task);
  int st = ms_tensor_randn(ctx, NULL, 1, (const int64_t[]){3}, 0, 1, &task->w0);
  if (st) return st;
  task->objective = h->obj;
  h->position++;
  return MS_OK;
}

static void release(ms_ctx *ctx, void *ud, ms_task *task) {
  (void)ctx, (void)ud;
  ms_tensor_release(task->w0);
  memset(task, 0, sizeof *task);
}

static int save_state(ms_ctx *ctx, void *ud, ms_archive *a) {
  (void)ctx;
  return ms_archive_put_integer(a, "host/position", ((host *)ud)->position);
}

static int load_state(ms_ctx *ctx, void *ud, const ms_archive *a, int64_t k) {
  (void)ctx;
  host *h = ud;
  int st = ms_archive_get_integer(a, "host/position", &h->position);
  if (st == MS_OK) h->loaded_k = k;
  return st;
}

static int stop_cb(ms_ctx *ctx, void *ud, const ms_train_record *rec, ms_tensor *const *theta) {
  (void)ctx, (void)theta;
  const host *h = ud;
  return h->stop_at > 0 && rec->k == h->stop_at;
}

static uint64_t bits(double x) {
  uint64_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

/* Same values bit for bit (both NULL counts as the same). */
static int same_tensor(const ms_tensor *a, const ms_tensor *b) {
  if (!a || !b) return a == b;
  if (ms_tensor_numel(a) != ms_tensor_numel(b)) return 0;
  const double *x = ms_tensor_data(a), *y = ms_tensor_data(b);
  for (int64_t i = 0; i < ms_tensor_numel(a); i++)
    if (bits(x[i]) != bits(y[i])) return 0;
  return 1;
}

static int same_result(const ms_train_result *a, const ms_train_result *b) {
  if (a->n != b->n || a->best_k != b->best_k || bits(a->best_value) != bits(b->best_value))
    return 0;
  for (int i = 0; i < a->nparams; i++)
    if (!same_tensor(a->theta[i], b->theta[i]) || !same_tensor(a->best_theta[i], b->best_theta[i]))
      return 0;
  for (int64_t k = 0; k < a->n; k++) {
    const ms_train_record *p = &a->history[k], *q = &b->history[k];
    if (p->k != q->k || bits(p->value) != bits(q->value) || p->status != q->status ||
        p->fail_step != q->fail_step || p->updated != q->updated || bits(p->lr) != bits(q->lr))
      return 0;
    for (int i = 0; i < a->nparams; i++)
      if (!same_tensor(p->theta[i], q->theta[i]) || !same_tensor(p->grad[i], q->grad[i])) return 0;
  }
  return 1;
}

typedef struct setup {
  ms_objective *obj;
  ms_optim *opt;
  ms_meta_spec spec;
} setup;

/* GD with one step size per coordinate on diag(1, 2, 4), T = 4, the LOG meta-objective. */
static int make_setup(ms_ctx *ctx, setup *s) {
  memset(s, 0, sizeof *s);
  ms_tensor *H = NULL, *lr = NULL;
  int st = ms_tensor_from_data(ctx, 2, (const int64_t[]){3, 3},
                               (const double[]){1, 0, 0, 0, 2, 0, 0, 0, 4}, &H);
  if (!st)
    st = ms_tensor_from_data(ctx, 1, (const int64_t[]){3}, (const double[]){.1, .1, .1}, &lr);
  if (!st) st = ms_objective_quadratic(ctx, H, NULL, 0, &s->obj);
  ms_optim_options oo;
  memset(&oo, 0, sizeof oo);
  oo.lr_init = lr;
  if (!st) st = ms_optim_builtin(ctx, MS_OPTIM_GD, &oo, &s->opt);
  ms_tensor_release(H);
  ms_tensor_release(lr);
  s->spec.optimizer = s->opt;
  s->spec.steps = 4;
  s->spec.meta.kind = MS_META_LOG;
  s->spec.meta.on = MS_META_TRAIN;
  s->spec.method = MS_METHOD_REVERSE;
  return st;
}

static void setup_free(setup *s) {
  ms_objective_release(s->obj);
  ms_optim_release(s->opt);
}

static ms_train_options options(host *h, int metaopt) {
  ms_train_options o;
  memset(&o, 0, sizeof o);
  o.iterations = 12;
  o.meta_lr = 0.02;
  o.meta_optimizer = (ms_train_metaopt)metaopt;
  o.sample = sample;
  o.release_task = release;
  o.batch = 2;
  o.callback = stop_cb;
  o.save_state = save_state;
  o.load_state = load_state;
  o.keep_history = 1;
  o.ud = h;
  return o;
}

static void test_resume_equals_uninterrupted(void) {
  char path[512];
  snprintf(path, sizeof path, "%s/run.ckpt", dir);
  for (int metaopt = 0; metaopt < 3; metaopt++) {
    ms_ctx *ctx = ms_ctx_new(NULL, NULL);
    setup s;
    ms_train_result full = {0}, part = {0}, rest = {0};
    CHECK_OK_OR_OUT(ctx, make_setup(ctx, &s));
    host h = {s.obj, 0, -1, 0};
    ms_train_options o = options(&h, metaopt);
    ms_ctx_seed(ctx, 42);
    CHECK_OK_OR_OUT(ctx, ms_meta_train(ctx, &s.spec, &o, &full));
    double next_full = ms_rng_uniform(ms_ctx_rng(ctx));
    int64_t pos_full = h.position;
    CHECK(full.n == 12 && pos_full == 24);

    /* the same run stopped after iteration 7 (checkpoints at 3, 6 and the stop) */
    ms_ctx_seed(ctx, 42);
    h.position = 0, h.stop_at = 7;
    o.checkpoint = path;
    o.every = 3;
    CHECK_OK_OR_OUT(ctx, ms_meta_train(ctx, &s.spec, &o, &part));
    CHECK(part.n == 7 && part.stopped == MS_STOP_CALLBACK);

    /* a "new process": another generator state, the sampler back at 0 */
    ms_ctx_seed(ctx, 999);
    h.position = 0, h.stop_at = 0;
    o.resume = path;
    CHECK_OK_OR_OUT(ctx, ms_meta_train(ctx, &s.spec, &o, &rest));
    CHECK(h.loaded_k == 7);
    CHECK(rest.stopped == MS_STOP_DONE);
    CHECK(h.position == pos_full);
    CHECK(same_result(&full, &rest));
    CHECK(bits(ms_rng_uniform(ms_ctx_rng(ctx))) == bits(next_full));
  out:
    ms_train_result_clear(ctx, &full);
    ms_train_result_clear(ctx, &part);
    ms_train_result_clear(ctx, &rest);
    setup_free(&s);
    check_ctx_free(ctx);
  }
  unlink(path);
}

static void copy_file(const char *from, const char *to, long len, long flip_at) {
  FILE *f = fopen(from, "rb"), *g = fopen(to, "wb");
  if (!f || !g) abort();
  int c;
  for (long i = 0; (c = fgetc(f)) != EOF && (len < 0 || i < len); i++)
    fputc(i == flip_at ? c ^ 0x20 : c, g);
  fclose(f);
  fclose(g);
}

static void test_refused(void) {
  char path[512], bad[512];
  snprintf(path, sizeof path, "%s/good.ckpt", dir);
  snprintf(bad, sizeof bad, "%s/bad.ckpt", dir);
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  setup s;
  ms_train_result r = {0};
  CHECK_OK_OR_OUT(ctx, make_setup(ctx, &s));
  host h = {s.obj, 0, -1, 0};
  ms_train_options o = options(&h, MS_METAOPT_ADAM);
  o.iterations = 3;
  o.checkpoint = path;
  CHECK_OK_OR_OUT(ctx, ms_meta_train(ctx, &s.spec, &o, &r));
  ms_train_result_clear(ctx, &r);
  o.checkpoint = NULL;
  char want[700];
  struct {
    long len, flip;
    const char *why;
  } cases[] = {{100, -1, "truncated"},
               {-1, 77, "checksum mismatch"},
               {-1, 0, "not a metastep archive (bad magic)"}};
  for (int c = 0; c < 3; c++) {
    copy_file(path, bad, cases[c].len, cases[c].flip);
    o.resume = bad;
    ms_ctx_seed(ctx, 5);
    h.position = 17, h.loaded_k = -1;
    snprintf(want, sizeof want, "meta.train: cannot resume: '%s': %s", bad, cases[c].why);
    CHECK_FAILS(ctx, ms_meta_train(ctx, &s.spec, &o, &r), MS_EARG, want);
    CHECK(r.n == 0 && r.history == NULL && r.stopped == MS_STOP_ERROR);
    CHECK(h.position == 17 && h.loaded_k == -1); /* the host's state untouched */
    ms_rng fresh;
    ms_rng_seed(&fresh, 5);
    CHECK(ms_rng_next(ms_ctx_rng(ctx)) == ms_rng_next(&fresh)); /* the generator untouched */
    ms_train_result_clear(ctx, &r);
  }
  /* a checkpoint of another run */
  o.resume = path;
  o.meta_lr = 0.5;
  snprintf(want, sizeof want,
           "meta.train: cannot resume from '%s': option 'meta_lr' was 0.02, this run has 0.5",
           path);
  CHECK_FAILS(ctx, ms_meta_train(ctx, &s.spec, &o, &r), MS_EARG, want);
  ms_train_result_clear(ctx, &r);
  o.meta_lr = 0.02;
  o.meta_optimizer = MS_METAOPT_SGD;
  CHECK_FAILS(ctx, ms_meta_train(ctx, &s.spec, &o, &r), MS_EARG, "option 'meta_optimizer' was 1");
  ms_train_result_clear(ctx, &r);
  o.meta_optimizer = MS_METAOPT_ADAM;
  o.every = -1;
  o.resume = NULL;
  CHECK_FAILS(ctx, ms_meta_train(ctx, &s.spec, &o, &r), MS_EARG,
              "meta.train: option 'every' must be >= 0, got -1");
  ms_train_result_clear(ctx, &r);
  /* an archive that is not a checkpoint */
  ms_archive *a = NULL;
  CHECK_OK_OR_OUT(ctx, ms_archive_new(ctx, &a));
  CHECK_OK(ctx, ms_archive_put_string(a, "format", "something else"));
  CHECK_OK(ctx, ms_archive_save(a, bad));
  ms_archive_free(a);
  o.every = 0;
  o.resume = bad;
  CHECK_FAILS(ctx, ms_meta_train(ctx, &s.spec, &o, &r), MS_EARG,
              "it is not a meta.train checkpoint ('something else')");
  /* a checkpoint that cannot be written stops the run with the reason */
  ms_train_result_clear(ctx, &r);
  o.resume = NULL;
  o.checkpoint = "/nonexistent-dir/x.ckpt";
  CHECK_FAILS(ctx, ms_meta_train(ctx, &s.spec, &o, &r), MS_ESTATE,
              "meta.train: iteration 1: cannot save the checkpoint: ms_archive_save: "
              "'/nonexistent-dir/x.ckpt': cannot create");
  CHECK(r.n == 1 && r.stopped == MS_STOP_ERROR);
out:
  ms_train_result_clear(ctx, &r);
  setup_free(&s);
  check_ctx_free(ctx);
  unlink(path);
  unlink(bad);
}

/* Every allocation of a checkpointed run, then of a resumed one, failing in turn. */
static void test_alloc_failures(void) {
  char path[512], out2[512];
  snprintf(path, sizeof path, "%s/alloc.ckpt", dir);
  snprintf(out2, sizeof out2, "%s/alloc2.ckpt", dir);
  check_alloc fs = {0, -1, 0};
  ms_ctx *ctx = ms_ctx_new(check_failing_alloc, &fs);
  setup s;
  ms_train_result r = {0};
  CHECK_OK_OR_OUT(ctx, make_setup(ctx, &s));
  host h = {s.obj, 0, -1, 0};
  ms_train_options o = options(&h, MS_METAOPT_ADAM);
  o.iterations = 3;
  o.every = 3; /* one save per run: each one is fsync'd */
  o.checkpoint = path;
  CHECK_OK_OR_OUT(ctx, ms_meta_train(ctx, &s.spec, &o, &r)); /* caches the eigendecomposition */
  ms_train_result_clear(ctx, &r);
  size_t base = ms_ctx_bytes(ctx);
  for (int phase = 0; phase < 2; phase++) {
    int ok = 0, wrong = 0, leaks = 0;
    /* phase 1 resumes from the checkpoint at iteration 3 and saves elsewhere */
    o.iterations = phase == 0 ? 3 : 5;
    o.resume = phase == 0 ? NULL : path;
    o.checkpoint = phase == 0 ? path : out2;
    long k;
    for (k = 0; k < 1000000 && !ok; k++) {
      fs.n = 0, fs.fail_at = k;
      int st = ms_meta_train(ctx, &s.spec, &o, &r);
      if (st == MS_OK)
        ok = 1;
      else if (st != MS_ENOMEM)
        wrong++, fprintf(stderr, "[ckpt alloc %d] %ld: %d %s\n", phase, k, st, ms_ctx_error(ctx));
      ms_train_result_clear(ctx, &r);
      if (check_sweep_leaked(ctx, base, phase, k, &leaks)) break;
    }
    fs.fail_at = -1;
    CHECK(ok && wrong == 0 && leaks == 0 && k > 10);
  }
out:
  fs.fail_at = -1;
  ms_train_result_clear(ctx, &r);
  setup_free(&s);
  check_ctx_free(ctx);
  unlink(path);
  unlink(out2);
}

int main(void) {
  snprintf(dir, sizeof dir, "%s/metastep_ckpt_XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (mkdtemp(dir) == NULL) return 1;
  int rc = check_run((const check_test[]){test_resume_equals_uninterrupted, test_refused,
                                          test_alloc_failures, NULL});
  rmdir(dir);
  return rc;
}
