/*
 * Meta-training checkpoints (train.h, train_ckpt.h): the run's state as one archive
 * (archive.h). Names follow the Lua encoding of docs/format.md ("theta/#1" is theta[1]),
 * so ms.load of a checkpoint gives a readable table:
 *   format = "metastep meta.train checkpoint", optimizer = name, k, n, updates,
 *   theta/#i, moments/m, moments/v, rng/#1..#4 (the generator's words as int64),
 *   rng/has_spare, rng/spare, best/value, best/k, best/theta/#i,
 *   history/#j/{k, value, status, fail_step, updated, lr, theta/#i, grad/#i},
 *   options/{meta_optimizer, schedule, meta_lr, beta1, beta2, eps, rho, clip, on_failure,
 *   batch, keep_history, bounds/#i}, and the host's entries under host/.
 * A resume checks every one of them against the run before changing anything.
 */
#include "train_ckpt.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define FORMAT "metastep meta.train checkpoint"

/* ---- saving ---- */

typedef struct saver {
  ms_archive *a;
  int st;
  char name[96];
} saver;

static const char *nm(saver *w, const char *fmt, long long i, long long j) {
  snprintf(w->name, sizeof w->name, fmt, i, j);
  return w->name;
}

static void s_int(saver *w, const char *name, int64_t v) {
  if (!w->st) w->st = ms_archive_put_integer(w->a, name, v);
}
static void s_num(saver *w, const char *name, double v) {
  if (!w->st) w->st = ms_archive_put_number(w->a, name, v);
}
static void s_tensor(saver *w, const char *name, const ms_tensor *t) {
  if (!w->st && t) w->st = ms_archive_put_tensor(w->a, name, t);
}

/* The options that shape the trajectory: a resume must give the same. */
typedef struct optval {
  const char *name;
  double value;
} optval;

static int option_values(const ms_train_options *o, optval *out) {
  int n = 0;
  out[n++] = (optval){"meta_optimizer", (double)o->meta_optimizer};
  out[n++] = (optval){"schedule", o->schedule_fn ? -1.0 : (double)o->schedule};
  out[n++] = (optval){"meta_lr", o->meta_lr};
  out[n++] = (optval){"beta1", o->beta1};
  out[n++] = (optval){"beta2", o->beta2};
  out[n++] = (optval){"eps", o->eps};
  out[n++] = (optval){"rho", o->rho};
  out[n++] = (optval){"clip", o->clip};
  out[n++] = (optval){"on_failure", (double)o->on_failure};
  out[n++] = (optval){"batch", o->sample ? (double)o->batch : 0.0};
  out[n++] = (optval){"keep_history", o->keep_history ? 1.0 : 0.0};
  return n;
}
#define MAX_OPTVALS 16

int ms__train_checkpoint(ms_ctx *ctx, const ms_train_options *o, const ms__train_state *s,
                         int64_t k) {
  saver w = {NULL, MS_OK, {0}};
  int st = ms_archive_new(ctx, &w.a);
  if (st) return st;
  const ms_train_result *res = s->result;
  w.st = ms_archive_put_string(w.a, "format", FORMAT);
  if (!w.st) w.st = ms_archive_put_string(w.a, "optimizer", ms_optim_name(s->opt));
  s_int(&w, "k", k);
  s_int(&w, "n", res->n);
  s_int(&w, "updates", *s->updates);
  for (int i = 0; i < s->np; i++) {
    snprintf(w.name, sizeof w.name, "theta/#%d", i + 1);
    s_tensor(&w, w.name, s->cur[i]);
  }
  ms_tensor *mv[2] = {NULL, NULL};
  const int64_t shape[1] = {s->nmom};
  if (!w.st) w.st = ms_tensor_from_data(ctx, 1, shape, s->m, &mv[0]);
  if (!w.st) w.st = ms_tensor_from_data(ctx, 1, shape, s->v, &mv[1]);
  s_tensor(&w, "moments/m", mv[0]);
  s_tensor(&w, "moments/v", mv[1]);
  ms_tensor_release(mv[0]);
  ms_tensor_release(mv[1]);
  const ms_rng *rng = ms_ctx_rng(ctx);
  for (int i = 0; i < 4; i++) {
    snprintf(w.name, sizeof w.name, "rng/#%d", i + 1);
    s_int(&w, w.name, (int64_t)rng->s[i]);
  }
  if (!w.st) w.st = ms_archive_put_boolean(w.a, "rng/has_spare", rng->has_spare);
  s_num(&w, "rng/spare", rng->spare);
  s_num(&w, "best/value", res->best_value);
  s_int(&w, "best/k", res->best_k);
  for (int i = 0; i < s->np; i++) {
    snprintf(w.name, sizeof w.name, "best/theta/#%d", i + 1);
    s_tensor(&w, w.name, res->best_theta[i]);
  }
  for (int64_t j = 0; res->history && j < res->n && !w.st; j++) {
    const ms_train_record *r = &res->history[j];
    long long jj = (long long)j + 1;
    s_int(&w, nm(&w, "history/#%lld/k", jj, 0), r->k);
    s_num(&w, nm(&w, "history/#%lld/value", jj, 0), r->value);
    s_int(&w, nm(&w, "history/#%lld/status", jj, 0), r->status);
    s_int(&w, nm(&w, "history/#%lld/fail_step", jj, 0), r->fail_step);
    if (!w.st)
      w.st = ms_archive_put_boolean(w.a, nm(&w, "history/#%lld/updated", jj, 0), r->updated);
    s_num(&w, nm(&w, "history/#%lld/lr", jj, 0), r->lr);
    for (int i = 0; i < s->np; i++) {
      s_tensor(&w, nm(&w, "history/#%lld/theta/#%lld", jj, i + 1), r->theta[i]);
      s_tensor(&w, nm(&w, "history/#%lld/grad/#%lld", jj, i + 1), r->grad[i]);
    }
  }
  optval ov[MAX_OPTVALS];
  int nov = option_values(o, ov);
  for (int i = 0; i < nov; i++) {
    snprintf(w.name, sizeof w.name, "options/%s", ov[i].name);
    s_num(&w, w.name, ov[i].value);
  }
  for (int i = 0; i < s->np && !w.st; i++) {
    if (!o->has_bounds[i]) continue;
    ms_tensor *b = NULL;
    w.st =
        ms_tensor_from_data(ctx, 1, (const int64_t[]){2}, (const double[]){o->lo[i], o->hi[i]}, &b);
    s_tensor(&w, nm(&w, "options/bounds/#%lld", i + 1, 0), b);
    ms_tensor_release(b);
  }
  if (!w.st && o->save_state) w.st = o->save_state(ctx, o->ud, w.a);
  if (!w.st) {
    w.st = ms_archive_save(w.a, o->checkpoint);
    if (w.st) {
      char msg[512];
      snprintf(msg, sizeof msg, "%s", ms_ctx_error(ctx)); /* the context's buffer is rewritten */
      w.st = ms_ctx_fail(ctx, w.st, "meta.train: iteration %lld: cannot save the checkpoint: %s",
                         (long long)k, msg);
    }
  }
  ms_archive_free(w.a);
  return w.st;
}

/* ---- resuming ---- */

typedef struct loader {
  ms_ctx *ctx;
  const ms_archive *a;
  const char *path;
} loader;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int
refuse(const loader *l, const char *fmt, ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return ms_ctx_fail(l->ctx, MS_EARG, "meta.train: cannot resume from '%s': %s", l->path, msg);
}

/* A missing entry or one of the wrong kind is a corrupt checkpoint. */
static int need(const loader *l, const char *name, ms_archive_kind kind) {
  ms_archive_kind got = ms_archive_find(l->a, name);
  if (got == kind) return MS_OK;
  return refuse(l, "entry '%s' is %s (not a meta.train checkpoint, or a damaged one)", name,
                got == MS_ARCHIVE_NONE ? "missing" : "of the wrong kind");
}

static int l_int(const loader *l, const char *name, int64_t *v) {
  int st = need(l, name, MS_ARCHIVE_INTEGER);
  return st ? st : ms_archive_get_integer(l->a, name, v);
}
static int l_num(const loader *l, const char *name, double *v) {
  int st = need(l, name, MS_ARCHIVE_NUMBER);
  return st ? st : ms_archive_get_number(l->a, name, v);
}

/* A tensor with exactly like's shape. */
static int l_tensor_like(const loader *l, const char *name, const ms_tensor *like,
                         ms_tensor **out) {
  int st = need(l, name, MS_ARCHIVE_TENSOR);
  if (st) return st;
  if ((st = ms_archive_get_tensor(l->a, name, out))) return st;
  int nd = ms_tensor_ndim(like);
  if (ms_tensor_ndim(*out) == nd &&
      memcmp(ms_tensor_shape(*out), ms_tensor_shape(like), (size_t)nd * sizeof(int64_t)) == 0)
    return MS_OK;
  char a[MS_SHAPE_STRLEN], b[MS_SHAPE_STRLEN];
  st = refuse(l, "entry '%s' has shape %s, the run's has %s", name,
              ms_shape_str(ms_tensor_ndim(*out), ms_tensor_shape(*out), a, sizeof a),
              ms_shape_str(nd, ms_tensor_shape(like), b, sizeof b));
  ms_tensor_release(*out);
  *out = NULL;
  return st;
}

static uint64_t bits_of(double x) {
  uint64_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static int check_run_matches(const loader *l, const ms_train_options *o, const ms__train_state *s) {
  const char *str;
  int st = need(l, "format", MS_ARCHIVE_STRING);
  if (st) return st;
  ms_archive_get_string(l->a, "format", &str, NULL);
  if (strcmp(str, FORMAT) != 0) return refuse(l, "it is not a meta.train checkpoint ('%s')", str);
  if ((st = need(l, "optimizer", MS_ARCHIVE_STRING))) return st;
  ms_archive_get_string(l->a, "optimizer", &str, NULL);
  if (strcmp(str, ms_optim_name(s->opt)) != 0)
    return refuse(l, "it was made with optimizer '%s', this run has '%s'", str,
                  ms_optim_name(s->opt));
  optval ov[MAX_OPTVALS];
  int nov = option_values(o, ov);
  for (int i = 0; i < nov; i++) {
    char name[64];
    double v;
    snprintf(name, sizeof name, "options/%s", ov[i].name);
    if ((st = l_num(l, name, &v))) return st;
    if (bits_of(v) != bits_of(ov[i].value))
      return refuse(l, "option '%s' was %g, this run has %g (a resume continues the same run)",
                    ov[i].name, v, ov[i].value);
  }
  for (int i = 0; i < s->np; i++) {
    char name[64];
    snprintf(name, sizeof name, "options/bounds/#%d", i + 1);
    ms_archive_kind kind = ms_archive_find(l->a, name);
    if ((kind == MS_ARCHIVE_TENSOR) != (o->has_bounds[i] != 0))
      return refuse(l, "the bounds of '%s' differ from this run's",
                    ms_optim_param_at(s->opt, i)->name);
    if (kind != MS_ARCHIVE_TENSOR) continue;
    ms_tensor *b = NULL;
    if ((st = ms_archive_get_tensor(l->a, name, &b))) return st;
    const double *d = ms_tensor_data(b);
    int same = ms_tensor_numel(b) == 2 && bits_of(d[0]) == bits_of(o->lo[i]) &&
               bits_of(d[1]) == bits_of(o->hi[i]);
    ms_tensor_release(b);
    if (!same)
      return refuse(l, "the bounds of '%s' differ from this run's",
                    ms_optim_param_at(s->opt, i)->name);
  }
  return MS_OK;
}

/* Reads record j (1-based) into rec (new references); shapes as the run's theta. */
static int load_record(const loader *l, const ms__train_state *s, int64_t j, ms_train_record *rec) {
  char name[96];
  int st;
  int64_t status = 0;
  memset(rec, 0, sizeof *rec);
#define REC(field) (snprintf(name, sizeof name, "history/#%lld/" field, (long long)j), name)
  if ((st = l_int(l, REC("k"), &rec->k))) return st;
  if ((st = l_num(l, REC("value"), &rec->value))) return st;
  if ((st = l_int(l, REC("status"), &status))) return st;
  if (status < MS_META_OK || status > MS_META_NAN)
    return refuse(l, "entry '%s' is %lld, not a meta-gradient status", name, (long long)status);
  rec->status = (int)status;
  if ((st = l_int(l, REC("fail_step"), &rec->fail_step))) return st;
  if ((st = need(l, REC("updated"), MS_ARCHIVE_BOOLEAN))) return st;
  ms_archive_get_boolean(l->a, name, &rec->updated);
  if ((st = l_num(l, REC("lr"), &rec->lr))) return st;
  for (int i = 0; i < s->np && !st; i++) {
    snprintf(name, sizeof name, "history/#%lld/theta/#%d", (long long)j, i + 1);
    st = l_tensor_like(l, name, s->cur[i], &rec->theta[i]);
    snprintf(name, sizeof name, "history/#%lld/grad/#%d", (long long)j, i + 1);
    if (!st && ms_archive_find(l->a, name) != MS_ARCHIVE_NONE)
      st = l_tensor_like(l, name, s->cur[i], &rec->grad[i]);
  }
#undef REC
  if (st) {
    for (int i = 0; i < MS_OPTIM_MAXPARAMS; i++) {
      ms_tensor_release(rec->theta[i]);
      ms_tensor_release(rec->grad[i]);
    }
    memset(rec, 0, sizeof *rec);
  }
  return st;
}

int ms__train_resume(ms_ctx *ctx, const ms_train_options *o, ms__train_state *s, int64_t *kout) {
  ms_archive *a = NULL;
  int st = ms_archive_load(ctx, o->resume, &a);
  if (st) {
    const char *m = ms_ctx_error(ctx);
    const char *pre = "ms_archive_load: ";
    if (strncmp(m, pre, strlen(pre)) == 0) m += strlen(pre);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", m);
    return ms_ctx_fail(ctx, st, "meta.train: cannot resume: %s", msg);
  }
  loader l = {ctx, a, o->resume};
  ms_train_result tmp;
  memset(&tmp, 0, sizeof tmp);
  tmp.nparams = s->np;
  ms_tensor *cur[MS_OPTIM_MAXPARAMS] = {0}, *mv[2] = {NULL, NULL};
  int64_t k = 0, n = 0, updates = 0, words[4] = {0, 0, 0, 0};
  int has_spare = 0;
  double spare = 0;
  if ((st = check_run_matches(&l, o, s))) goto out;
  if ((st = l_int(&l, "k", &k)) || (st = l_int(&l, "n", &n)) ||
      (st = l_int(&l, "updates", &updates)))
    goto out;
  if (k < 0 || n < 0 || n > k || updates < 0 || updates > k) {
    st = refuse(&l, "inconsistent counts: k = %lld, n = %lld, updates = %lld", (long long)k,
                (long long)n, (long long)updates);
    goto out;
  }
  if (k > o->iterations) {
    st = refuse(&l, "it was made at iteration %lld, past option 'iterations' = %lld", (long long)k,
                (long long)o->iterations);
    goto out;
  }
  for (int i = 0; i < s->np && !st; i++) {
    char name[32];
    snprintf(name, sizeof name, "theta/#%d", i + 1);
    st = l_tensor_like(&l, name, s->cur[i], &cur[i]);
  }
  if (st) goto out;
  ms_tensor *flat = NULL;
  if ((st = ms_tensor_zeros(ctx, 1, (const int64_t[]){s->nmom}, &flat))) goto out;
  st = l_tensor_like(&l, "moments/m", flat, &mv[0]);
  if (!st) st = l_tensor_like(&l, "moments/v", flat, &mv[1]);
  ms_tensor_release(flat);
  if (st) goto out;
  for (int i = 0; i < 4 && !st; i++) {
    char name[16];
    snprintf(name, sizeof name, "rng/#%d", i + 1);
    st = l_int(&l, name, &words[i]);
  }
  if (!st) st = need(&l, "rng/has_spare", MS_ARCHIVE_BOOLEAN);
  if (!st) st = ms_archive_get_boolean(a, "rng/has_spare", &has_spare);
  if (!st) st = l_num(&l, "rng/spare", &spare);
  if (!st) st = l_num(&l, "best/value", &tmp.best_value);
  if (!st) st = l_int(&l, "best/k", &tmp.best_k);
  if (st) goto out;
  if (tmp.best_k < 0 || tmp.best_k > k) {
    st = refuse(&l, "best/k = %lld is not an iteration done", (long long)tmp.best_k);
    goto out;
  }
  for (int i = 0; i < s->np && tmp.best_k > 0 && !st; i++) {
    char name[32];
    snprintf(name, sizeof name, "best/theta/#%d", i + 1);
    st = l_tensor_like(&l, name, s->cur[i], &tmp.best_theta[i]);
  }
  if (st) goto out;
  if (o->keep_history) {
    for (int64_t j = 1; j <= n; j++) {
      ms_train_record rec;
      if ((st = load_record(&l, s, j, &rec))) goto out;
      if ((st = ms__train_hist_push(ctx, &tmp, j - 1, &rec))) {
        for (int i = 0; i < MS_OPTIM_MAXPARAMS; i++) {
          ms_tensor_release(rec.theta[i]);
          ms_tensor_release(rec.grad[i]);
        }
        goto out;
      }
      tmp.n = j;
    }
  }
  tmp.n = n;
  /* the host's part last: it may change the host's state, so only once the rest is good */
  if (o->load_state && (st = o->load_state(ctx, o->ud, a, k))) goto out;

  /* commit: nothing below fails */
  for (int i = 0; i < s->np; i++) {
    ms_tensor_release(s->cur[i]);
    s->cur[i] = cur[i];
    cur[i] = NULL;
  }
  if (s->nmom > 0) {
    memcpy(s->m, ms_tensor_data(mv[0]), (size_t)s->nmom * sizeof(double));
    memcpy(s->v, ms_tensor_data(mv[1]), (size_t)s->nmom * sizeof(double));
  }
  *s->updates = updates;
  ms_rng *rng = ms_ctx_rng(ctx);
  for (int i = 0; i < 4; i++) rng->s[i] = (uint64_t)words[i];
  rng->has_spare = has_spare;
  rng->spare = spare;
  *s->result = tmp;
  memset(&tmp, 0, sizeof tmp);
  *kout = k;
out:
  for (int i = 0; i < MS_OPTIM_MAXPARAMS; i++) ms_tensor_release(cur[i]);
  ms_tensor_release(mv[0]);
  ms_tensor_release(mv[1]);
  ms_train_result_clear(ctx, &tmp);
  ms_archive_free(a);
  return st;
}
