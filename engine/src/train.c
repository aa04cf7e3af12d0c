/*
 * Meta-training (train.h): meta-gradient descent on an optimizer's stored meta-parameters.
 *
 * Each iteration takes the meta-gradient at the current theta with ms_meta_value_and_grad,
 * records it, and moves the selected parameters with SGD, Adam or RMSprop, entry by entry
 * over contiguous copies (theta tensors are small: raw loops, no tape). The current theta is
 * never written in place: an update makes fresh tensors, so a record can keep a reference to
 * the values its meta-gradient was taken at without copying them.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "meta_internal.h"
#include "train_ckpt.h"

/* The history array carries its capacity in a header just before the first record, so
 * ms_train_result_clear can hand the allocator the exact size. */
typedef union hist_header {
  size_t cap;
  max_align_t align;
} hist_header;

static hist_header *hist_head(ms_train_record *h) { return (hist_header *)(void *)h - 1; }

static void hist_free(ms_ctx *ctx, ms_train_record *h) {
  if (!h) return;
  hist_header *hd = hist_head(h);
  ms_ctx_dealloc(ctx, hd, sizeof *hd + hd->cap * sizeof *h);
}

static void record_clear(ms_train_record *rec) {
  for (int i = 0; i < MS_OPTIM_MAXPARAMS; i++) {
    ms_tensor_release(rec->theta[i]);
    ms_tensor_release(rec->grad[i]);
    rec->theta[i] = rec->grad[i] = NULL;
  }
}

void ms_train_result_clear(ms_ctx *ctx, ms_train_result *result) {
  if (!result) return;
  for (int i = 0; i < MS_OPTIM_MAXPARAMS; i++) {
    ms_tensor_release(result->theta[i]);
    ms_tensor_release(result->best_theta[i]);
  }
  if (result->history) {
    for (int64_t k = 0; k < result->n; k++) record_clear(&result->history[k]);
    hist_free(ctx, result->history);
  }
  memset(result, 0, sizeof *result);
}

/* Appends *rec to the history (moving its references); on failure rec is left untouched. */
static int hist_push(ms_ctx *ctx, ms_train_result *res, int64_t count, ms_train_record *rec) {
  size_t cap = res->history ? hist_head(res->history)->cap : 0;
  if ((size_t)count >= cap) {
    size_t ncap = cap ? 2 * cap : 16;
    if (ncap > (SIZE_MAX - sizeof(hist_header)) / sizeof *rec)
      return ms_ctx_fail(ctx, MS_ENOMEM, "meta.train: history of %lld records is too large",
                         (long long)count);
    hist_header *hd = ms_ctx_alloc(ctx, sizeof *hd + ncap * sizeof *rec);
    if (!hd) return MS_ENOMEM;
    hd->cap = ncap;
    ms_train_record *h = (ms_train_record *)(void *)(hd + 1);
    if (res->history) {
      memcpy(h, res->history, (size_t)count * sizeof *rec);
      hist_free(ctx, res->history);
    }
    res->history = h;
  }
  res->history[count] = *rec;
  memset(rec, 0, sizeof *rec);
  return MS_OK;
}

int ms__train_hist_push(ms_ctx *ctx, ms_train_result *res, int64_t count, ms_train_record *rec) {
  return hist_push(ctx, res, count, rec);
}

/* ---- options ---- */

static int check_unit(ms_ctx *ctx, const char *name, double x, double def) {
  if (!(x >= 0 && x < 1))
    return ms_ctx_fail(ctx, MS_EARG,
                       "meta.train: option '%s' must be in [0, 1) (0 = default %g), got %g", name,
                       def, x);
  return MS_OK;
}

/* x >= 0 and finite: else "must be <range>" or "must be <finite>" (with what 0 means). */
static int check_nonneg(ms_ctx *ctx, const char *name, double x, const char *range,
                        const char *finite) {
  if (!(x >= 0))
    return ms_ctx_fail(ctx, MS_EARG, "meta.train: option '%s' must be %s, got %g", name, range, x);
  if (isinf(x))
    return ms_ctx_fail(ctx, MS_EARG, "meta.train: option '%s' must be %s, got %g", name, finite, x);
  return MS_OK;
}

static int check_options(ms_ctx *ctx, const ms_train_options *o, const ms_optim *opt) {
  int st;
  if (o->iterations < 0)
    return ms_ctx_fail(ctx, MS_EARG, "meta.train: option 'iterations' must be >= 0, got %lld",
                       (long long)o->iterations);
  if ((st = check_nonneg(ctx, "meta_lr", o->meta_lr, ">= 0", "finite"))) return st;
  if ((int)o->schedule != MS_SCHEDULE_INV_SQRT && (int)o->schedule != MS_SCHEDULE_CONSTANT)
    return ms_ctx_fail(ctx, MS_EARG,
                       "meta.train: option 'schedule' must be inv_sqrt (0) or constant (1), got %d",
                       (int)o->schedule);
  if ((int)o->meta_optimizer != MS_METAOPT_SGD && (int)o->meta_optimizer != MS_METAOPT_ADAM &&
      (int)o->meta_optimizer != MS_METAOPT_RMSPROP)
    return ms_ctx_fail(
        ctx, MS_EARG,
        "meta.train: option 'meta_optimizer' must be sgd (0), adam (1) or rmsprop (2), "
        "got %d",
        (int)o->meta_optimizer);
  if ((st = check_unit(ctx, "beta1", o->beta1, 0.9))) return st;
  if ((st = check_unit(ctx, "beta2", o->beta2, 0.999))) return st;
  if ((st = check_unit(ctx, "rho", o->rho, 0.9))) return st;
  if ((st = check_nonneg(ctx, "eps", o->eps, "> 0 (0 = default 1e-8)", "finite"))) return st;
  if ((st = check_nonneg(ctx, "clip", o->clip, ">= 0", "finite (0 = off)"))) return st;
  if ((int)o->on_failure != MS_FAIL_SKIP && (int)o->on_failure != MS_FAIL_ZERO &&
      (int)o->on_failure != MS_FAIL_ERROR)
    return ms_ctx_fail(
        ctx, MS_EARG,
        "meta.train: option 'on_failure' must be skip (0), zero (1) or error (2), got %d",
        (int)o->on_failure);
  int np = ms_optim_nparams(opt);
  for (int i = 0; i < MS_OPTIM_MAXPARAMS; i++) {
    if (!o->has_bounds[i]) continue;
    if (i >= np)
      return ms_ctx_fail(ctx, MS_EARG,
                         "meta.train: option 'has_bounds[%d]' is set but optimizer '%s' has %d "
                         "parameter(s)",
                         i, ms_optim_name(opt), np);
    double lo = o->lo[i], hi = o->hi[i];
    if (!(lo <= hi) || lo == INFINITY || hi == -INFINITY)
      return ms_ctx_fail(
          ctx, MS_EARG,
          "meta.train: option 'bounds' of '%s' must have lo <= hi (lo < inf, hi > -inf), "
          "got [%g, %g]",
          ms_optim_param_at(opt, i)->name, lo, hi);
  }
  if (o->segments < 0)
    return ms_ctx_fail(ctx, MS_EARG, "meta.train: option 'segments' must be >= 0, got %lld",
                       (long long)o->segments);
  if (o->every < 0)
    return ms_ctx_fail(ctx, MS_EARG, "meta.train: option 'every' must be >= 0, got %lld",
                       (long long)o->every);
  /* a checkpoint does not hold the runs' states between segments (yet) */
  if (o->segments > 1 && (o->checkpoint || o->resume))
    return ms_ctx_fail(ctx, MS_EARG,
                       "meta.train: option 'segments' > 1 cannot be combined with 'checkpoint' or "
                       "'resume' (the checkpoint does not hold the inner runs' states)");
  if (o->sample && o->batch < 1)
    return ms_ctx_fail(ctx, MS_EARG,
                       "meta.train: option 'batch' must be >= 1 with a sampler, got %d", o->batch);
  return MS_OK;
}

/* ---- the run ---- */

typedef struct train_run {
  ms_ctx *ctx;
  const ms_meta_spec *spec;
  const ms_train_options *o;
  ms_optim *opt;
  int np;
  int sel[MS_OPTIM_MAXPARAMS];
  int64_t numel[MS_OPTIM_MAXPARAMS];
  int64_t off[MS_OPTIM_MAXPARAMS]; /* offsets of the parameters in m and v */
  ms_tensor *cur[MS_OPTIM_MAXPARAMS];
  double b1, b2, eps, rho;
  double lo[MS_OPTIM_MAXPARAMS], hi[MS_OPTIM_MAXPARAMS];
  double *m, *v, *g; /* one block: m and v (total entries each), g (largest parameter) */
  size_t block_bytes;
  int64_t updates; /* updates made so far (Adam's bias correction) */
  ms_task *tasks;  /* batch entries when sampling */
  int drawn;       /* tasks drawn and not yet released */
  /* segments > 1: the runs' states, two arrays of ntask entries (where the last segment
   * stopped, and where the next one records its stop); restart after a failed segment */
  ms_run_state *rs;
  int ntask, flip, restart;
} train_run;

static int schedule_factor(train_run *r, int64_t k, double *factor) {
  const ms_train_options *o = r->o;
  if (o->schedule_fn) {
    double f = NAN;
    int st = o->schedule_fn(r->ctx, o->ud, k, &f);
    if (st) return st;
    if (!(f >= 0) || isinf(f))
      return ms_ctx_fail(
          r->ctx, MS_EARG,
          "meta.train: schedule_fn gave factor %g at iteration %lld (expected finite "
          ">= 0)",
          f, (long long)k);
    *factor = f;
    return MS_OK;
  }
  *factor = o->schedule == MS_SCHEDULE_CONSTANT ? 1.0 : 1.0 / sqrt((double)k);
  return MS_OK;
}

/*
 * Moves the selected parameters by the meta-optimizer with step size lr, then projects
 * them onto their bounds and runs the project callback. On success r->cur holds the new
 * values; on failure r->cur is unchanged.
 */
static int update(train_run *r, ms_tensor *const *grad, double lr, int64_t k) {
  ms_ctx *ctx = r->ctx;
  const ms_train_options *o = r->o;
  ms_tensor *next[MS_OPTIM_MAXPARAMS] = {0};
  int st = MS_OK;
  for (int i = 0; i < r->np && st == MS_OK; i++) {
    /* a project callback may write in place: it gets copies, never the recorded tensors */
    if ((r->sel[i] && grad[i]) || o->project)
      st = ms__tensor_plain_copy(ctx, r->cur[i], &next[i]);
    else
      next[i] = ms_tensor_retain(r->cur[i]);
  }
  if (st) goto fail;
  int64_t u = r->updates + 1;
  double c1 = 1.0 - pow(r->b1, (double)u), c2 = 1.0 - pow(r->b2, (double)u);
  for (int i = 0; i < r->np; i++) {
    if (!r->sel[i] || !grad[i]) continue;
    int64_t n = r->numel[i];
    if (ms_tensor_numel(grad[i]) != n) {
      char a[MS_SHAPE_STRLEN], b[MS_SHAPE_STRLEN];
      st = ms_ctx_fail(
          ctx, MS_ESHAPE, "meta.train: meta-gradient of '%s' has shape %s, theta has %s",
          ms_optim_param_at(r->opt, i)->name,
          ms_shape_str(ms_tensor_ndim(grad[i]), ms_tensor_shape(grad[i]), a, sizeof a),
          ms_shape_str(ms_tensor_ndim(next[i]), ms_tensor_shape(next[i]), b, sizeof b));
      goto fail;
    }
    if ((st = ms_tensor_read(ctx, grad[i], r->g, n))) goto fail;
    double *th = ms_tensor_data(next[i]), *m = r->m + r->off[i], *v = r->v + r->off[i];
    double lo = r->lo[i], hi = r->hi[i];
    for (int64_t j = 0; j < n; j++) {
      double g = r->g[j];
      if (!isfinite(g))
        g = 0; /* ZERO: as the authors' code did (a meta-gradient that is ok is finite) */
      if (o->clip > 0) g = g < -o->clip ? -o->clip : g > o->clip ? o->clip : g;
      double x = th[j];
      switch (o->meta_optimizer) {
        case MS_METAOPT_ADAM: {
          m[j] = r->b1 * m[j] + (1 - r->b1) * g;
          v[j] = r->b2 * v[j] + (1 - r->b2) * g * g;
          double mh = m[j] / c1, vh = v[j] / c2;
          x = x - lr * mh / (sqrt(vh) + r->eps);
          break;
        }
        case MS_METAOPT_RMSPROP:
          v[j] = r->rho * v[j] + (1 - r->rho) * g * g;
          x = x - lr * g / (sqrt(v[j]) + r->eps);
          break;
        default:
          x = x - lr * g;
          break;
      }
      if (x < lo) x = lo; /* comparisons keep a NaN, caught below */
      if (x > hi) x = hi;
      if (!isfinite(x)) {
        st = ms_ctx_fail(
            ctx, MS_ENUMERIC,
            "meta.train: iteration %lld: the update made '%s' non-finite (entry %lld: %g)",
            (long long)k, ms_optim_param_at(r->opt, i)->name, (long long)j, x);
        goto fail;
      }
      th[j] = x;
    }
  }
  if (o->project) {
    if ((st = o->project(ctx, o->ud, r->np, next))) goto fail;
    for (int i = 0; i < r->np; i++) {
      if (!next[i]) {
        st = ms_ctx_fail(ctx, MS_ECALLBACK, "meta.train: project left theta '%s' NULL",
                         ms_optim_param_at(r->opt, i)->name);
        goto fail;
      }
      if (ms_tensor_numel(next[i]) != r->numel[i]) {
        st = ms_ctx_fail(ctx, MS_ESHAPE,
                         "meta.train: project changed the size of theta '%s' from %lld to %lld",
                         ms_optim_param_at(r->opt, i)->name, (long long)r->numel[i],
                         (long long)ms_tensor_numel(next[i]));
        goto fail;
      }
    }
    if ((st = ms_optim_check_theta(ctx, r->opt, "meta.train: project", next))) goto fail;
  }
  for (int i = 0; i < r->np; i++) {
    ms_tensor_release(r->cur[i]);
    r->cur[i] = next[i];
  }
  r->updates = u;
  return MS_OK;
fail:
  for (int i = 0; i < r->np; i++) ms_tensor_release(next[i]);
  return st;
}

/* Releases the tasks drawn and forgets the runs' states (the next iteration starts afresh). */
static void drop_tasks(train_run *r) {
  if (r->o->release_task)
    for (int i = 0; i < r->drawn; i++) r->o->release_task(r->ctx, r->o->ud, &r->tasks[i]);
  r->drawn = 0;
  for (int i = 0; r->rs && i < 2 * r->ntask; i++) ms_run_state_clear(&r->rs[i]);
}

/* Draws the batch (or continues the runs), computes the meta-gradient at r->cur, releases the
 * tasks whose runs are over. */
static int meta_grad(train_run *r, int64_t k, ms_meta_out *out) {
  const ms_train_options *o = r->o;
  ms_meta_spec s = *r->spec;
  s.theta = r->cur;
  int st = MS_OK;
  int64_t S = o->segments > 1 ? o->segments : 1;
  int fresh = S == 1 || (k - 1) % S == 0 || r->restart;
  memset(out, 0, sizeof *out);
  if (fresh) drop_tasks(r);
  if (o->sample) {
    for (; fresh && r->drawn < o->batch; r->drawn++) {
      memset(&r->tasks[r->drawn], 0, sizeof r->tasks[r->drawn]);
      if ((st = o->sample(r->ctx, o->ud, k, r->drawn, &r->tasks[r->drawn]))) break;
    }
    s.ntasks = o->batch;
    s.tasks = r->tasks;
  }
  if (S > 1) {
    s.start = fresh ? NULL : &r->rs[r->flip * r->ntask];
    s.stop = &r->rs[(1 - r->flip) * r->ntask];
    r->flip = 1 - r->flip;
  }
  if (st == MS_OK) st = ms_meta_value_and_grad(r->ctx, &s, out);
  r->restart = st != MS_OK || out->status != MS_META_OK;
  if (S == 1 || st) drop_tasks(r);
  if (st) ms_meta_out_clear(out);
  return st;
}

int ms_meta_train(ms_ctx *ctx, const ms_meta_spec *spec, const ms_train_options *opts,
                  ms_train_result *result) {
  if (!result) return ms_ctx_fail(ctx, MS_EARG, "meta.train: result is NULL");
  memset(result, 0, sizeof *result);
  result->best_value = NAN;
  result->stopped = MS_STOP_ERROR;
  if (!spec) return ms_ctx_fail(ctx, MS_EARG, "meta.train: spec is NULL");
  if (!opts) return ms_ctx_fail(ctx, MS_EARG, "meta.train: options are NULL");
  if (!spec->optimizer) return ms_ctx_fail(ctx, MS_EARG, "meta.train: spec has no optimizer");
  train_run r;
  memset(&r, 0, sizeof r);
  r.ctx = ctx, r.spec = spec, r.o = opts, r.opt = spec->optimizer;
  r.np = ms_optim_nparams(r.opt);
  result->nparams = r.np;
  int st = check_options(ctx, opts, r.opt);
  if (st) return st;
  /* Without a sampler the whole spec can be checked before any work; with one, the tasks
   * arrive per iteration and ms_meta_value_and_grad checks them. */
  st = opts->sample ? ms_optim_check_theta(ctx, r.opt, "meta.train: theta", spec->theta)
                    : ms_meta_check_spec(ctx, spec);
  if (st) return st;
  if (spec->select) {
    if (spec->nselect < 0)
      return ms_ctx_fail(ctx, MS_EARG, "meta.train: spec nselect must be >= 0, got %d",
                         spec->nselect);
    for (int j = 0; j < spec->nselect; j++) {
      int i = spec->select[j];
      if (i < 0 || i >= r.np)
        return ms_ctx_fail(ctx, MS_EINDEX,
                           "meta.train: spec select[%d] = %d is not a parameter of '%s' (0..%d)", j,
                           i, ms_optim_name(r.opt), r.np - 1);
      r.sel[i] = 1;
    }
  } else {
    for (int i = 0; i < r.np; i++) r.sel[i] = 1;
  }
  r.b1 = opts->beta1 > 0 ? opts->beta1 : 0.9;
  r.b2 = opts->beta2 > 0 ? opts->beta2 : 0.999;
  r.rho = opts->rho > 0 ? opts->rho : 0.9;
  r.eps = opts->eps > 0 ? opts->eps : 1e-8;

  /* the stored values to start from: contiguous copies of spec->theta or the initial values */
  int64_t total = 0, largest = 1;
  for (int i = 0; i < r.np; i++) {
    const ms_optim_param *p = ms_optim_param_at(r.opt, i);
    const ms_tensor *t0 = spec->theta && spec->theta[i] ? spec->theta[i] : p->init;
    if ((st = ms__tensor_plain_copy(ctx, t0, &r.cur[i]))) {
      for (int j = 0; j < i; j++) ms_tensor_release(r.cur[j]), r.cur[j] = NULL;
      goto done;
    }
    r.numel[i] = ms_tensor_numel(r.cur[i]);
    r.off[i] = total;
    if (r.sel[i]) total += r.numel[i];
    if (r.numel[i] > largest) largest = r.numel[i];
    r.lo[i] = opts->has_bounds[i] ? opts->lo[i] : p->lo;
    r.hi[i] = opts->has_bounds[i] ? opts->hi[i] : p->hi;
  }
  r.block_bytes = (size_t)(2 * total + largest) * sizeof(double);
  r.m = ms_ctx_alloc(ctx, r.block_bytes);
  if (!r.m) {
    st = MS_ENOMEM;
    goto done;
  }
  memset(r.m, 0, r.block_bytes);
  r.v = r.m + total;
  r.g = r.v + total;
  if (opts->sample) {
    r.tasks = ms_ctx_alloc(ctx, (size_t)opts->batch * sizeof *r.tasks);
    if (!r.tasks) {
      st = MS_ENOMEM;
      goto done;
    }
  }
  if (opts->segments > 1) {
    r.ntask = opts->sample ? opts->batch : spec->ntasks;
    r.rs = ms_ctx_alloc(ctx, (size_t)(2 * r.ntask) * sizeof *r.rs);
    if (!r.rs) {
      st = MS_ENOMEM;
      goto done;
    }
    memset(r.rs, 0, (size_t)(2 * r.ntask) * sizeof *r.rs);
  }

  int stop_cb = 0;
  int64_t k0 = 0;
  ms__train_state ck = {r.opt, r.np, r.cur, r.m, r.v, total, &r.updates, result};
  if (opts->resume && (st = ms__train_resume(ctx, opts, &ck, &k0))) goto done;
  for (int64_t k = k0 + 1; k <= opts->iterations; k++) {
    if ((st = ms_ctx_check_interrupt(ctx, "meta.train"))) break;
    ms_meta_out out;
    if ((st = meta_grad(&r, k, &out))) break;
    double factor = 0;
    if ((st = schedule_factor(&r, k, &factor))) {
      ms_meta_out_clear(&out);
      break;
    }
    ms_train_record tmp, *rec = &tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.k = k;
    tmp.value = out.value;
    tmp.status = out.status;
    tmp.fail_step = out.fail_step;
    tmp.lr = opts->meta_lr * factor;
    for (int i = 0; i < r.np; i++) {
      tmp.theta[i] = ms_tensor_retain(r.cur[i]);
      if (r.sel[i])
        tmp.grad[i] = out.grad[i];
      else
        ms_tensor_release(out.grad[i]);
      out.grad[i] = NULL;
    }
    ms_meta_out_clear(&out);
    if (opts->keep_history) {
      if ((st = hist_push(ctx, result, result->n, &tmp))) {
        record_clear(&tmp);
        break;
      }
      rec = &result->history[result->n];
    }
    result->n++;
    if (rec->status == MS_META_OK && !isnan(rec->value) &&
        (result->best_k == 0 || rec->value < result->best_value)) {
      for (int i = 0; i < r.np; i++) {
        ms_tensor_release(result->best_theta[i]);
        result->best_theta[i] = ms_tensor_retain(r.cur[i]);
      }
      result->best_value = rec->value;
      result->best_k = k;
    }
    /* ERROR stops after the callback has seen the failing record (a log then holds it) */
    int error_stop = rec->status != MS_META_OK && opts->on_failure == MS_FAIL_ERROR;
    if (!error_stop && (rec->status == MS_META_OK || opts->on_failure == MS_FAIL_ZERO)) {
      st = update(&r, rec->grad, rec->lr, k);
      if (st == MS_OK) rec->updated = 1;
    }
    if (st == MS_OK && opts->callback) {
      int cb = opts->callback(ctx, opts->ud, rec, r.cur);
      if (error_stop) {
        cb = MS_OK; /* the run stops with the meta-gradient's failure whatever the callback says */
        ms_ctx_clear_error(ctx);
      }
      if (cb == 1) {
        stop_cb = 1;
      } else if (cb != MS_OK) {
        st = cb > 1 && cb <= MS_ECALLBACK
                 ? cb
                 : ms_ctx_fail(ctx, MS_ECALLBACK,
                               "meta.train: callback returned %d at iteration %lld", cb,
                               (long long)k);
      }
    }
    if (st == MS_OK && error_stop)
      st = ms_ctx_fail(ctx, MS_ENUMERIC,
                       "meta.train: iteration %lld: meta-gradient status %s (step %lld)",
                       (long long)k, ms_meta_status_name(rec->status), (long long)rec->fail_step);
    if (!opts->keep_history) record_clear(&tmp);
    if (st == MS_OK && opts->checkpoint &&
        (k % (opts->every > 0 ? opts->every : 1) == 0 || k == opts->iterations || stop_cb))
      st = ms__train_checkpoint(ctx, opts, &ck, k);
    if (st || stop_cb) break;
  }
  if (st == MS_OK) result->stopped = stop_cb ? MS_STOP_CALLBACK : MS_STOP_DONE;

done:
  if (st == MS_EINTERRUPT)
    result->stopped = MS_STOP_INTERRUPT;
  else if (st)
    result->stopped = MS_STOP_ERROR;
  for (int i = 0; i < r.np; i++) result->theta[i] = r.cur[i];
  drop_tasks(&r);
  if (r.rs) ms_ctx_dealloc(ctx, r.rs, (size_t)(2 * r.ntask) * sizeof *r.rs);
  if (r.m) ms_ctx_dealloc(ctx, r.m, r.block_bytes);
  if (r.tasks) ms_ctx_dealloc(ctx, r.tasks, (size_t)opts->batch * sizeof *r.tasks);
  return st;
}
