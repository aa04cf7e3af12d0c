/*
 * Unrolls, meta-objectives and the meta-gradient methods reverse (plain, truncated,
 * checkpointed), forward and fd; the dispatcher ms_meta_value_and_grad, which hands the
 * stable and exact methods to stable.c.
 *
 * One function advances a run by one step (advance); every method drives it: the plain
 * unroll with levels active around it, the checkpointed reverse mode once without levels and
 * then segment by segment on short tapes, and finite differences with nothing traced.
 */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "meta_internal.h"

static const char *const METHOD_NAMES[] = {"reverse", "forward", "stable", "exact", "fd"};
_Static_assert(sizeof METHOD_NAMES / sizeof *METHOD_NAMES == MS_METHOD_FD + 1,
               "one name per ms_meta_method");

const char *ms_meta_method_name(ms_meta_method m) {
  return (int)m >= 0 && m <= MS_METHOD_FD ? METHOD_NAMES[m] : "unknown";
}

ms_meta_spec ms_meta_spec_one(ms_optim *opt, const ms_task *task, int64_t steps, ms_meta_kind kind,
                              ms_meta_method method) {
  ms_meta_spec s;
  memset(&s, 0, sizeof s);
  s.optimizer = opt;
  s.ntasks = 1;
  s.tasks = task;
  s.steps = steps;
  s.meta.kind = kind;
  s.method = method;
  return s;
}

void ms_meta_out_clear(ms_meta_out *out) {
  for (int i = 0; i < MS_OPTIM_MAXPARAMS; i++) {
    ms_tensor_release(out->grad[i]);
    out->grad[i] = NULL;
  }
}

static void out_init(ms_meta_out *out, int nparams) {
  memset(out, 0, sizeof *out);
  out->nparams = nparams;
  out->fail_step = -1;
  out->task = -1;
  out->log_loss = NAN;
  for (int i = 0; i < MS_OPTIM_MAXPARAMS; i++) out->log_abs_grad[i] = NAN;
}

/* ---- checking a spec ---- */

static int shape_is(const ms_tensor *t, int64_t d) { return t->ndim == 1 && t->shape[0] == d; }

void ms_run_state_clear(ms_run_state *rs) {
  if (rs == NULL) return;
  ms_tensor_release(rs->w);
  for (int i = 0; i < MS_OPTIM_MAXSTATE; i++) ms_tensor_release(rs->state[i]);
  memset(rs, 0, sizeof *rs);
}

/* Index of task in spec->tasks, or -1 (a task given separately, as to ms_meta_unroll). */
static int task_index(const ms_meta_spec *spec, const ms_task *task) {
  for (int i = 0; spec->tasks && i < spec->ntasks; i++)
    if (&spec->tasks[i] == task) return i;
  return -1;
}

/* Where task's run starts (NULL: w0 and a fresh init) and where it records its stop. */
static const ms_run_state *start_of(const ms_meta_spec *spec, const ms_task *task) {
  int i = spec->start ? task_index(spec, task) : -1;
  return i >= 0 && spec->start[i].w ? &spec->start[i] : NULL;
}
static ms_run_state *stop_of(const ms_meta_spec *spec, const ms_task *task) {
  int i = spec->stop ? task_index(spec, task) : -1;
  return i >= 0 ? &spec->stop[i] : NULL;
}

static int check_task(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task, int i) {
  char b[MS_SHAPE_STRLEN];
  ms_objective *obj = task->objective;
  if (obj == NULL) return ms_ctx_fail(ctx, MS_EARG, "meta: task %d has no objective", i + 1);
  int64_t d = ms_objective_dim(obj);
  if (task->w0 && !shape_is(task->w0, d))
    return ms_ctx_fail(ctx, MS_ESHAPE,
                       "meta: 'w0' has shape %s but the objective has dimension %lld",
                       ms_shape_str(task->w0->ndim, task->w0->shape, b, sizeof b), (long long)d);
  if (task->w0 && !ms_tensor_all_finite(task->w0))
    return ms_ctx_fail(ctx, MS_EARG, "meta: 'w0' of task %d has non-finite entries", i + 1);
  if (spec->meta.on == MS_META_VALID) {
    if (task->valid == NULL)
      return ms_ctx_fail(ctx, MS_EARG,
                         "meta: the meta-objective reads the validation loss, but task %d has no "
                         "validation objective",
                         i + 1);
    if (ms_objective_dim(task->valid) != d)
      return ms_ctx_fail(
          ctx, MS_ESHAPE,
          "meta: task %d's validation objective has dimension %lld, its objective %lld", i + 1,
          (long long)ms_objective_dim(task->valid), (long long)d);
  }
  const ms_run_state *rs = start_of(spec, task);
  if (rs && !shape_is(rs->w, d))
    return ms_ctx_fail(ctx, MS_ESHAPE,
                       "meta: 'start' of task %d has w of shape %s but the objective has "
                       "dimension %lld",
                       i + 1, ms_shape_str(rs->w->ndim, rs->w->shape, b, sizeof b), (long long)d);
  if (rs && rs->t < 0)
    return ms_ctx_fail(ctx, MS_EARG, "meta: 'start' of task %d has t = %lld, expected >= 0", i + 1,
                       (long long)rs->t);
  for (int k = 0; rs && k < ms_optim_nstate(spec->optimizer); k++)
    if (rs->state[k] == NULL)
      return ms_ctx_fail(ctx, MS_EARG, "meta: 'start' of task %d has no state entry %d", i + 1,
                         k + 1);
  if (ms_optim_batch(spec->optimizer) > 0 && ms_objective_nsamples(obj) < 1)
    return ms_ctx_fail(
        ctx, MS_EARG,
        "meta: optimizer '%s' draws mini-batches and needs an objective with samples "
        "(least squares, logistic), got '%s'",
        ms_optim_name(spec->optimizer), ms_objective_name(obj));
  return MS_OK;
}

int ms_meta_check_spec(ms_ctx *ctx, const ms_meta_spec *spec) {
  if (spec->optimizer == NULL) return ms_ctx_fail(ctx, MS_EARG, "meta: 'optimizer' is required");
  if (spec->ntasks < 1 || spec->tasks == NULL)
    return ms_ctx_fail(ctx, MS_EARG, "meta: needs at least one task, got %d", spec->ntasks);
  if (spec->steps < 1)
    return ms_ctx_fail(ctx, MS_EARG, "meta: 'steps' must be >= 1, got %lld",
                       (long long)spec->steps);
  const ms_meta_objective *m = &spec->meta;
  if ((int)m->kind < MS_META_NAIVE || m->kind > MS_META_CUSTOM)
    return ms_ctx_fail(ctx, MS_EARG, "meta: unknown meta-objective kind %d", (int)m->kind);
  if (m->kind == MS_META_CUSTOM && m->fn == NULL)
    return ms_ctx_fail(ctx, MS_EARG, "meta: a custom meta-objective needs a callback (fn)");
  if (m->on != MS_META_TRAIN && m->on != MS_META_VALID)
    return ms_ctx_fail(ctx, MS_EARG, "meta: 'on' must be MS_META_TRAIN or MS_META_VALID, got %d",
                       (int)m->on);
  if (m->kind == MS_META_CUSTOM && m->on == MS_META_VALID)
    return ms_ctx_fail(ctx, MS_EARG,
                       "meta: a custom meta-objective reads the trajectory itself ('on' must be "
                       "MS_META_TRAIN; evaluate the validation objective inside it)");
  if ((int)spec->method < 0 || spec->method > MS_METHOD_FD)
    return ms_ctx_fail(ctx, MS_EARG, "meta: unknown method %d", (int)spec->method);
  const char *method = ms_meta_method_name(spec->method);
  if (spec->truncate < 0)
    return ms_ctx_fail(ctx, MS_EARG, "meta: 'truncate' must be >= 1 (or 0 = off), got %lld",
                       (long long)spec->truncate);
  if (spec->truncate > 0 && spec->method != MS_METHOD_REVERSE && spec->method != MS_METHOD_FORWARD)
    return ms_ctx_fail(ctx, MS_EARG,
                       "meta: method '%s' does not handle truncation (reverse and forward do)",
                       method);
  if (spec->checkpoint < 0)
    return ms_ctx_fail(ctx, MS_EARG, "meta: 'checkpoint' must be >= 1 (or 0 = off), got %lld",
                       (long long)spec->checkpoint);
  if (spec->checkpoint > 0 && spec->method != MS_METHOD_REVERSE)
    return ms_ctx_fail(ctx, MS_EARG, "meta: 'checkpoint' applies to method 'reverse', not '%s'",
                       method);
  if (!(spec->freeze_norm >= 0) || isinf(spec->freeze_norm))
    return ms_ctx_fail(ctx, MS_EARG,
                       "meta: 'freeze_norm' must be finite and > 0 (or 0 = off), got %g",
                       spec->freeze_norm);
  if (!(spec->fd_step >= 0) || isinf(spec->fd_step))
    return ms_ctx_fail(ctx, MS_EARG,
                       "meta: 'fd_step' must be finite and > 0 (or 0 = relative), got %g",
                       spec->fd_step);
  if ((spec->start || spec->stop) &&
      (spec->method == MS_METHOD_STABLE || spec->method == MS_METHOD_EXACT))
    return ms_ctx_fail(ctx, MS_EARG, "meta: method '%s' does not continue runs ('start', 'stop')",
                       method);
  if (spec->start && spec->start == spec->stop)
    return ms_ctx_fail(ctx, MS_EARG, "meta: 'stop' must not be the 'start' array");
  if (spec->fd_step > 0 && spec->method != MS_METHOD_FD)
    return ms_ctx_fail(ctx, MS_EARG, "meta: 'fd_step' applies to method 'fd', not '%s'", method);
  int st = ms_optim_check_theta(ctx, spec->optimizer, "meta", spec->theta);
  if (st) return st;
  int np = ms_optim_nparams(spec->optimizer);
  if (spec->nselect > 0 && spec->select == NULL)
    return ms_ctx_fail(ctx, MS_EARG, "meta: 'nselect' is %d but 'select' is NULL", spec->nselect);
  if (spec->nselect < 0 || spec->nselect > np)
    return ms_ctx_fail(ctx, MS_EARG, "meta: 'select' lists %d parameters of an optimizer with %d",
                       spec->nselect, np);
  for (int i = 0; spec->select && i < spec->nselect; i++) {
    int k = spec->select[i];
    if (k < 0 || k >= np)
      return ms_ctx_fail(ctx, MS_EINDEX, "meta: 'select' entry %d is %d, expected 0..%d", i + 1, k,
                         np - 1);
    for (int j = 0; j < i; j++)
      if (spec->select[j] == k)
        return ms_ctx_fail(ctx, MS_EARG, "meta: 'select' names parameter '%s' twice",
                           ms_optim_param_at(spec->optimizer, k)->name);
  }
  for (int i = 0; i < spec->ntasks; i++)
    if ((st = check_task(ctx, spec, &spec->tasks[i], i))) return st;
  return MS_OK;
}

/* ---- one run ---- */

typedef struct run {
  ms_ctx *ctx;
  const ms_meta_spec *spec;
  const ms_task *task;
  ms_optim *opt;
  ms_objective *obj;
  ms_tensor *const *mapped; /* borrowed */
  ms_tensor *w, *fw, *vl;   /* current point, its training loss, its validation loss (or NULL) */
  ms_tensor *g;             /* grad f(w) made with an untraced loss (fuse), for the next step */
  ms_tensor *state[MS_OPTIM_MAXSTATE];
  int64_t k;  /* updates made */
  int64_t t0; /* steps made before this run (a continued run) */
  int frozen;
  int zero_is_failure;    /* a loss of 0 breaks LOG and LOGSUM on the training loss */
  int valid_zero_failure; /* ... and on the validation loss */
  int valid_each;         /* validation loss needed at every step (SUM, LOGSUM on VALID) */
  int loss_traced;        /* every step's training loss carries derivatives (else only f(w_T)) */
  int fuse;               /* a quadratic's untraced loss comes from the next step's gradient */
  int64_t cut;            /* truncation: the step whose inputs are held constant (0 = none) */
  int64_t *idx;           /* mini-batch indices (batch entries) */
} run;

static void run_clear(run *r) {
  ms_tensor_release(r->w);
  ms_tensor_release(r->fw);
  ms_tensor_release(r->vl);
  ms_tensor_release(r->g);
  r->w = r->fw = r->vl = r->g = NULL;
  for (int i = 0; i < MS_OPTIM_MAXSTATE; i++) ms_tensor_release(r->state[i]), r->state[i] = NULL;
  if (r->idx) ms_ctx_dealloc(r->ctx, r->idx, (size_t)ms_optim_batch(r->opt) * sizeof *r->idx);
  r->idx = NULL;
}

static int run_setup(run *r, ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                     ms_tensor *const *mapped) {
  memset(r, 0, sizeof *r);
  r->ctx = ctx;
  r->spec = spec;
  r->task = task;
  r->opt = spec->optimizer;
  r->obj = task->objective;
  r->mapped = mapped;
  const ms_run_state *rs = start_of(spec, task);
  r->t0 = rs ? rs->t : 0;
  r->k = r->t0;
  ms_meta_kind kind = spec->meta.kind;
  r->zero_is_failure = !spec->allow_zero_loss && spec->meta.on == MS_META_TRAIN &&
                       (kind == MS_META_LOG || kind == MS_META_LOGSUM);
  r->valid_each = spec->meta.on == MS_META_VALID && (kind == MS_META_SUM || kind == MS_META_LOGSUM);
  r->valid_zero_failure = !spec->allow_zero_loss && spec->meta.on == MS_META_VALID &&
                          (kind == MS_META_LOG || kind == MS_META_LOGSUM);
  /* A built-in optimizer never reads f(w), and NAIVE and LOG read the last loss only: the
   * other losses are computed for their status alone, untraced (no tape nodes to record). */
  r->loss_traced =
      ms_optim_kind_of(spec->optimizer) == MS_OPTIM_CUSTOM || kind == MS_META_CUSTOM ||
      (spec->meta.on == MS_META_TRAIN && (kind == MS_META_SUM || kind == MS_META_LOGSUM));
  if (spec->truncate > 0 && spec->truncate < spec->steps) r->cut = spec->steps - spec->truncate + 1;
  int64_t batch = ms_optim_batch(r->opt);
  r->fuse = batch == 0 && ms_objective_kind_of(r->obj) == MS_OBJECTIVE_QUADRATIC;
  if (batch > 0) {
    r->idx = ms_ctx_alloc(ctx, (size_t)batch * sizeof *r->idx);
    if (r->idx == NULL) return MS_ENOMEM;
  }
  return MS_OK;
}

/* w_0, f(w_0) and the optimizer's initial state. */
static int run_start(run *r) {
  ms_ctx *ctx = r->ctx;
  int st;
  const ms_run_state *rs = start_of(r->spec, r->task);
  if (rs) {
    r->w = ms_tensor_retain(rs->w);
  } else if (r->task->w0) {
    r->w = ms_tensor_retain(r->task->w0);
  } else {
    int64_t d = ms_objective_dim(r->obj);
    if ((st = ms_tensor_zeros(ctx, 1, &d, &r->w))) return st;
  }
  if ((st = ms_objective_value(ctx, r->obj, r->w, &r->fw))) return st;
  if (r->valid_each && (st = ms_objective_value(ctx, r->task->valid, r->w, &r->vl))) return st;
  if (rs) {
    for (int i = 0; i < ms_optim_nstate(r->opt); i++) r->state[i] = ms_tensor_retain(rs->state[i]);
    return MS_OK;
  }
  return ms__optim_init(ctx, r->opt, r->w, r->mapped, r->state);
}

/* Stores where the run stopped in the spec's stop entry of the task (untraced copies). */
static int run_end(run *r, int64_t done) {
  ms_run_state *end = stop_of(r->spec, r->task), e;
  if (end == NULL) return MS_OK;
  memset(&e, 0, sizeof e);
  e.nstate = ms_optim_nstate(r->opt);
  e.t = r->t0 + done;
  int st = ms_stop_gradient(r->ctx, r->w, &e.w);
  for (int i = 0; !st && i < e.nstate; i++) st = ms_stop_gradient(r->ctx, r->state[i], &e.state[i]);
  if (st) {
    ms_run_state_clear(&e);
    return st;
  }
  ms_run_state_clear(end);
  *end = e;
  return MS_OK;
}

static void replace(ms_tensor **slot, ms_tensor *t) {
  ms_tensor_release(*slot);
  *slot = t;
}

/* The gradient the step reads: full, or on a mini-batch drawn from (seed, t). */
static int step_gradient(run *r, int64_t t, ms_tensor **gw) {
  int64_t batch = ms_optim_batch(r->opt);
  if (batch == 0 && r->g) { /* made with the last loss (fused_loss) at this very w */
    *gw = r->g;
    r->g = NULL;
    return MS_OK;
  }
  if (batch == 0) return ms_objective_grad(r->ctx, r->obj, r->w, gw);
  ms_rng rng;
  ms_rng_seed(&rng, ms__optim_seed(r->opt) * 7919u + (uint64_t)t);
  double n = (double)ms_objective_nsamples(r->obj);
  for (int64_t i = 0; i < batch; i++) {
    double x = n * ms_rng_uniform(&rng); /* as ms_tensor_rand draws in [0, n) */
    if (!(x < n)) x = nextafter(n, 0);
    r->idx[i] = (int64_t)floor(x);
  }
  return ms_objective_grad_batch(r->ctx, r->obj, r->w, batch, r->idx, gw);
}

/* Holds w_{t-1}, its losses and the state constant: truncation's cut. */
static int hold(run *r) {
  ms_ctx *ctx = r->ctx;
  ms_tensor *t;
  int st;
  replace(&r->g, NULL); /* made from the traced w: the step recomputes it from the held one */
  if ((st = ms_stop_gradient(ctx, r->w, &t))) return st;
  replace(&r->w, t);
  if ((st = ms_stop_gradient(ctx, r->fw, &t))) return st;
  replace(&r->fw, t);
  if (r->vl) {
    if ((st = ms_stop_gradient(ctx, r->vl, &t))) return st;
    replace(&r->vl, t);
  }
  for (int i = 0; i < ms_optim_nstate(r->opt); i++) {
    if ((st = ms_stop_gradient(ctx, r->state[i], &t))) return st;
    replace(&r->state[i], t);
  }
  return MS_OK;
}

/* Projects w to norm R and freezes the run once |w| >= R. */
static int freeze(run *r, ms_tensor **w) {
  ms_tensor *nrm = NULL, *scale = NULL, *p = NULL;
  double v;
  int st = ms_reduce(r->ctx, MS_NORM, *w, MS_ALL, 0, &nrm);
  if (!st) st = ms_tensor_item(r->ctx, nrm, &v);
  if (!st && v >= r->spec->freeze_norm) {
    if (!(st = ms_binary_scalar(r->ctx, MS_DIV, nrm, r->spec->freeze_norm, 1, &scale)) &&
        !(st = ms_binary(r->ctx, MS_MUL, *w, scale, &p))) {
      replace(w, p);
      r->frozen = 1;
    }
  }
  ms_tensor_release(nrm);
  ms_tensor_release(scale);
  return st;
}

/* Status of a loss value, or OK; zero_fails: a loss of 0 (or below DBL_MIN) is an underflow. */
static int loss_status(int zero_fails, double v) {
  if (isnan(v)) return MS_META_NAN;
  if (isinf(v)) return MS_META_OVERFLOW;
  if (zero_fails && (v == 0 || fabs(v) < DBL_MIN)) return MS_META_UNDERFLOW;
  return MS_META_OK;
}

/*
 * An untraced loss of a quadratic from the gradient the next step reads: g = H (w - w*) is
 * made here (traced, kept in r->g) and f = 1/2 (w - w*)^T g + f* from it with the raw kernels
 * (recorded nowhere), the objective's own operations on the same operands, so the same bits as
 * ms_objective_value: one product by H per step instead of two. The tape is unchanged too:
 * the product is the node the next step's gradient would have recorded, in the same place.
 */
static int fused_loss(run *r, ms_tensor **f) {
  ms_ctx *ctx = r->ctx;
  ms_tensor *ws = NULL, *res = NULL, *d = NULL, *h = NULL;
  double fstar = 0;
  ms_objective_quadratic_parts(r->obj, NULL, &ws, &fstar);
  replace(&r->g, NULL); /* a frozen run keeps its w: the last one is remade */
  int st = ms_objective_grad(ctx, r->obj, r->w, &r->g);
  if (!st && ws) st = ms__binary(ctx, MS_SUB, r->w, ws, &res);
  if (!st && !ws) res = ms_tensor_retain(r->w);
  if (!st) st = ms__dot(ctx, res, r->g, &d);
  if (!st) st = ms__binary_scalar(ctx, MS_MUL, d, 0.5, 0, &h);
  if (!st && fstar != 0) {
    st = ms__binary_scalar(ctx, MS_ADD, h, fstar, 0, f);
  } else if (!st) {
    *f = h;
    h = NULL;
  }
  ms_tensor_release(res);
  ms_tensor_release(d);
  ms_tensor_release(h);
  return st;
}

/* Step t: w_{t-1} -> w_t and its losses. *mstatus is set when w_t or f(w_t) is not a faithful
 * double (the run must stop there). */
static int advance(run *r, int64_t t, int *mstatus) {
  ms_ctx *ctx = r->ctx;
  int st;
  *mstatus = MS_META_OK;
  if ((st = ms_ctx_check_interrupt(ctx, "meta"))) return st;
  if (r->cut && t == r->cut && (st = hold(r))) return st;
  if (!r->frozen) {
    ms_tensor *gw = NULL, *wn = NULL;
    ms_optim_io io = {r->t0 + t, r->k + 1, 1.0, r->w, r->fw, NULL, r->mapped, r->state};
    if ((st = ms_optim_factor(ctx, r->opt, io.t, &io.factor))) return st;
    if ((st = step_gradient(r, io.t, &gw))) return st;
    io.gw = gw;
    st = ms__optim_step(ctx, r->opt, &io, r->state, &wn);
    ms_tensor_release(gw);
    if (st) return st;
    r->k++;
    if (r->spec->freeze_norm > 0 && (st = freeze(r, &wn))) {
      ms_tensor_release(wn);
      return st;
    }
    replace(&r->w, wn);
  }
  if (!ms_tensor_all_finite(r->w)) {
    *mstatus = MS_META_OVERFLOW;
    const double *p = ms_tensor_data(r->w);
    for (int64_t i = 0; i < ms_tensor_numel(r->w); i++)
      if (isnan(p[ms__offset_of(r->w, i)])) *mstatus = MS_META_NAN;
    return MS_OK;
  }
  ms_tensor *f = NULL, *wu = NULL;
  double v;
  if (r->loss_traced || (t == r->spec->steps && r->spec->meta.on == MS_META_TRAIN)) {
    st = ms_objective_value(ctx, r->obj, r->w, &f);
  } else if (r->fuse) {
    st = fused_loss(r, &f);
  } else if (!(st = ms_stop_gradient(ctx, r->w, &wu))) {
    st = ms_objective_value(ctx, r->obj, wu, &f);
    ms_tensor_release(wu);
  }
  if (st) return st;
  replace(&r->fw, f);
  if ((st = ms_tensor_item(ctx, f, &v))) return st;
  if ((*mstatus = loss_status(r->zero_is_failure, v))) return MS_OK;
  if (r->valid_each) {
    if ((st = ms_objective_value(ctx, r->task->valid, r->w, &f))) return st;
    replace(&r->vl, f);
    if ((st = ms_tensor_item(ctx, f, &v))) return st;
    *mstatus = loss_status(r->valid_zero_failure, v);
  }
  return MS_OK;
}

/* ---- trajectories ---- */

/* Methods that record the trajectory keep O(T) entries: refuse a T whose arrays would not fit
 * a size_t (the stable and exact methods take any T). */
#define MAX_RECORDED_STEPS ((int64_t)1 << 40)

static int check_recorded(ms_ctx *ctx, int64_t T) {
  if (T > MAX_RECORDED_STEPS)
    return ms_ctx_fail(
        ctx, MS_EARG,
        "meta: 'steps' = %lld is more than a recorded trajectory can hold (at most %lld; "
        "the stable and exact methods take any T)",
        (long long)T, (long long)MAX_RECORDED_STEPS);
  return MS_OK;
}

static size_t slots(const ms_traj *traj) { return (size_t)(traj->T + 1) * sizeof(ms_tensor *); }

void ms_traj_clear(ms_ctx *ctx, ms_traj *traj) {
  ms_tensor **arrays[] = {traj->losses, traj->valid_losses, traj->w};
  for (int a = 0; a < 3; a++) {
    if (arrays[a] == NULL) continue;
    for (int64_t t = 0; t <= traj->T; t++) ms_tensor_release(arrays[a][t]);
    ms_ctx_dealloc(ctx, arrays[a], slots(traj));
  }
  ms_tensor_release(traj->w_T);
  for (int i = 0; i < MS_OPTIM_MAXPARAMS; i++) ms_tensor_release(traj->theta[i]);
  memset(traj, 0, sizeof *traj);
}

static int traj_alloc(ms_ctx *ctx, ms_tensor ***arr, const ms_traj *traj) {
  *arr = ms_ctx_alloc(ctx, slots(traj));
  if (*arr == NULL) return MS_ENOMEM;
  memset(*arr, 0, slots(traj));
  return MS_OK;
}

/* Runs T steps recording the trajectory. theta: stored values (as the traj reports them);
 * mapped: what the steps see. */
static int unroll(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                  ms_tensor *const *theta, ms_tensor *const *mapped, int keep_w, ms_traj *traj) {
  memset(traj, 0, sizeof *traj);
  traj->T = spec->steps;
  traj->fail_step = -1;
  traj->task = task;
  traj->nparams = ms_optim_nparams(spec->optimizer);
  for (int i = 0; i < traj->nparams; i++) traj->theta[i] = ms_tensor_retain(theta[i]);
  run r;
  memset(&r, 0, sizeof r);
  int st = check_recorded(ctx, spec->steps);
  if (!st) st = run_setup(&r, ctx, spec, task, mapped);
  if (!st) st = traj_alloc(ctx, &traj->losses, traj);
  if (!st && r.valid_each) st = traj_alloc(ctx, &traj->valid_losses, traj);
  if (!st && keep_w) st = traj_alloc(ctx, &traj->w, traj);
  if (!st) st = run_start(&r);
  if (!st) {
    traj->losses[0] = ms_tensor_retain(r.fw);
    if (r.vl) traj->valid_losses[0] = ms_tensor_retain(r.vl);
    if (keep_w) traj->w[0] = ms_tensor_retain(r.w);
  }
  for (int64_t t = 1; !st && t <= spec->steps; t++) {
    int ms;
    if ((st = advance(&r, t, &ms))) break;
    if (ms) {
      traj->status = ms;
      traj->fail_step = t;
      break;
    }
    traj->done = t;
    traj->losses[t] = ms_tensor_retain(r.fw);
    if (r.vl) traj->valid_losses[t] = ms_tensor_retain(r.vl);
    if (keep_w) traj->w[t] = ms_tensor_retain(r.w);
  }
  if (!st) traj->w_T = ms_tensor_retain(r.w);
  if (!st) st = run_end(&r, traj->done);
  run_clear(&r);
  if (st) ms_traj_clear(ctx, traj);
  return st;
}

/* ---- meta-objectives ---- */

/* The built-in meta-objectives, with the operations of the former Lua front library (the
 * reproduction's numbers must not move): LOGSUM keeps a running log(exp(s) + exp(l)) =
 * max(s, l) + log1p(exp(-|s - l|)), stable for any T. */
static int builtin_meta(ms_ctx *ctx, const ms_meta_spec *spec, const ms_traj *traj,
                        ms_tensor **out) {
  ms_tensor *const *l = spec->meta.on == MS_META_VALID ? traj->valid_losses : traj->losses;
  int64_t T = traj->T;
  ms_meta_kind kind = spec->meta.kind;
  ms_tensor *s = NULL, *a = NULL, *b = NULL, *c = NULL;
  int st = MS_OK;
  *out = NULL;
  if (kind == MS_META_NAIVE || kind == MS_META_LOG) {
    if (spec->meta.on == MS_META_VALID) {
      st = ms_objective_value(ctx, traj->task->valid, traj->w_T, &s);
    } else {
      s = ms_tensor_retain(l[T]);
    }
    if (!st && kind == MS_META_LOG) {
      if (!(st = ms_unary(ctx, MS_LOG, s, &a)))
        st = ms_binary_scalar(ctx, MS_DIV, a, (double)T, 0, &b);
      ms_tensor_release(a);
      ms_tensor_release(s);
      s = b;
    }
  } else if (kind == MS_META_SUM) {
    s = ms_tensor_retain(l[1]);
    for (int64_t t = 2; !st && t <= T; t++) {
      if (!(st = ms_binary(ctx, MS_ADD, s, l[t], &a))) replace(&s, a);
    }
  } else {
    st = ms_unary(ctx, MS_LOG, l[1], &s);
    for (int64_t t = 2; !st && t <= T; t++) {
      ms_tensor *lt = NULL, *mx = NULL, *d = NULL;
      a = b = c = NULL;
      if (!(st = ms_unary(ctx, MS_LOG, l[t], &lt)) &&
          !(st = ms_binary(ctx, MS_MAXIMUM, s, lt, &mx)) &&
          !(st = ms_binary(ctx, MS_SUB, s, lt, &d)) && !(st = ms_unary(ctx, MS_ABS, d, &a)) &&
          !(st = ms_unary(ctx, MS_NEG, a, &b)) && !(st = ms_unary(ctx, MS_EXP, b, &c))) {
        ms_tensor *e = NULL, *n = NULL;
        if (!(st = ms_unary(ctx, MS_LOG1P, c, &e)) && !(st = ms_binary(ctx, MS_ADD, mx, e, &n)))
          replace(&s, n);
        ms_tensor_release(e);
      }
      ms_tensor_release(lt), ms_tensor_release(mx), ms_tensor_release(d);
      ms_tensor_release(a), ms_tensor_release(b), ms_tensor_release(c);
    }
    if (!st) {
      if (!(st = ms_binary_scalar(ctx, MS_DIV, s, (double)T, 0, &a))) replace(&s, a);
    }
  }
  if (st) {
    ms_tensor_release(s);
    return st;
  }
  *out = s;
  return MS_OK;
}

static int meta_value(ms_ctx *ctx, const ms_meta_spec *spec, const ms_traj *traj, ms_tensor **out) {
  char b[MS_SHAPE_STRLEN];
  *out = NULL;
  if (spec->meta.kind != MS_META_CUSTOM) return builtin_meta(ctx, spec, traj, out);
  const char *name = spec->meta.name ? spec->meta.name : "custom";
  int st = spec->meta.fn(ctx, spec->meta.ud, traj, out);
  if (st) {
    ms_tensor_release(*out);
    *out = NULL;
    return st;
  }
  if (*out == NULL)
    return ms_ctx_fail(ctx, MS_ECALLBACK, "meta: the meta-objective '%s' returned no tensor", name);
  if (ms_tensor_numel(*out) != 1) {
    int st2 =
        ms_ctx_fail(ctx, MS_ESHAPE,
                    "meta: the meta-objective '%s' must return a one-element tensor, got shape %s",
                    name, ms_shape_str(ms_tensor_ndim(*out), ms_tensor_shape(*out), b, sizeof b));
    ms_tensor_release(*out);
    *out = NULL;
    return st2;
  }
  return MS_OK;
}

/* A value cut off from the trajectory has derivative 0 by construction: say so. */
static int detached(ms_ctx *ctx, const ms_meta_spec *spec) {
  return ms_ctx_fail(
      ctx, MS_EARG,
      "meta: the meta-objective '%s' returned a value cut off from the trajectory "
      "(it does not depend on theta, so its meta-gradient would be 0); compute it "
      "with tensor operations from the trajectory's losses or w_T, not from plain numbers",
      spec->meta.name ? spec->meta.name : "custom");
}

/* ---- results ---- */

static int status_of(double x) {
  if (isnan(x)) return MS_META_NAN;
  if (isinf(x)) return MS_META_OVERFLOW;
  return MS_META_OK;
}

/* Status of a meta-objective's value: for LOG and LOGSUM, -inf is a loss that reached 0. */
static int value_status(const ms_meta_spec *spec, double x) {
  ms_meta_kind kind = spec->meta.kind;
  if (x == -INFINITY && (kind == MS_META_LOG || kind == MS_META_LOGSUM))
    return spec->allow_zero_loss ? MS_META_OK : MS_META_UNDERFLOW;
  return status_of(x);
}

static void set_status(ms_meta_out *out, int status, int64_t step) {
  if (out->status == MS_META_OK && status != MS_META_OK) {
    out->status = status;
    out->fail_step = step;
  }
}

/* Status of a gradient tensor's entries: nan if any is NaN, else overflow if any is inf. */
static int tensor_status(const ms_tensor *g) {
  int s = MS_META_OK;
  const double *p = ms_tensor_data(g);
  for (int64_t i = 0; i < ms_tensor_numel(g); i++) {
    double x = p[ms__offset_of(g, i)];
    if (isnan(x)) return MS_META_NAN;
    if (isinf(x)) s = MS_META_OVERFLOW;
  }
  return s;
}

/* A run that stopped early: value and gradients are NaN, the status says where. */
static int failed(ms_ctx *ctx, ms_tensor *const *theta, const int *sel, int np, const ms_traj *traj,
                  ms_meta_out *out) {
  out->value = NAN;
  out->status = traj->status;
  out->fail_step = traj->fail_step;
  for (int i = 0; i < np; i++) {
    if (!sel[i]) continue;
    int st = ms_tensor_full(ctx, ms_tensor_ndim(theta[i]), ms_tensor_shape(theta[i]), NAN,
                            &out->grad[i]);
    if (st) return st;
  }
  return MS_OK;
}

/* ---- reverse mode ---- */

/* GD on a quadratic without a tape (below, after the checkpointed reverse mode it shares its
 * sweep with). */
static int fast_applies(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                        ms_tensor *const *theta, const int *sel);
static int fast_reverse(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                        ms_tensor *const *theta, const int *sel, ms_meta_out *out);

static int method_reverse(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                          ms_tensor *const *theta, const int *sel, ms_meta_out *out) {
  if (fast_applies(ctx, spec, task, theta, sel))
    return fast_reverse(ctx, spec, task, theta, sel, out);
  int np = ms_optim_nparams(spec->optimizer), nsel = 0;
  ms_tensor *th[MS_OPTIM_MAXPARAMS] = {0}, *xs[MS_OPTIM_MAXPARAMS] = {0},
            *mapped[MS_OPTIM_MAXPARAMS] = {0}, *grads[MS_OPTIM_MAXPARAMS] = {0}, *v = NULL;
  int where[MS_OPTIM_MAXPARAMS];
  ms_traj traj;
  memset(&traj, 0, sizeof traj);
  ms_level *tape = NULL;
  int st = ms_ad_push(ctx, MS_AD_REVERSE, &tape);
  if (st) return st;
  for (int i = 0; !st && i < np; i++) {
    if (sel[i]) {
      st = ms_ad_watch(ctx, tape, theta[i], NULL, &xs[nsel]);
      th[i] = xs[nsel];
      where[nsel++] = i;
    } else {
      th[i] = theta[i];
    }
  }
  if (!st) st = ms_optim_map_theta(ctx, spec->optimizer, th, mapped);
  if (!st) st = unroll(ctx, spec, task, th, mapped, 0, &traj);
  if (!st && traj.status == MS_META_OK) st = meta_value(ctx, spec, &traj, &v);
  int pst = ms_ad_pop(ctx, tape);
  if (!st) st = pst;
  if (!st && traj.status != MS_META_OK) {
    st = failed(ctx, theta, sel, np, &traj, out);
  } else if (!st) {
    if (spec->meta.kind == MS_META_CUSTOM && nsel > 0 && !ms_ad_is_tracked(tape, v))
      st = detached(ctx, spec);
    if (!st) st = ms_ad_gradient(ctx, tape, v, NULL, nsel, xs, grads);
    if (!st) st = ms_tensor_item(ctx, v, &out->value);
    if (!st) {
      set_status(out, value_status(spec, out->value), spec->steps);
      for (int j = 0; j < nsel; j++) {
        set_status(out, tensor_status(grads[j]), spec->steps);
        out->grad[where[j]] = grads[j];
        grads[j] = NULL;
      }
    }
  }
  for (int j = 0; j < MS_OPTIM_MAXPARAMS; j++) {
    ms_tensor_release(grads[j]);
    ms_tensor_release(xs[j]);
    ms_tensor_release(mapped[j]);
  }
  ms_tensor_release(v);
  ms_traj_clear(ctx, &traj);
  ms_ad_free(tape);
  return st;
}

/* ---- checkpointed reverse mode ----
 * The forward pass runs with no level and keeps, every K steps, the point, its loss, the
 * optimizer's state (references: steps make new tensors, so keeping one is free) and the
 * loss values. The meta-objective is differentiated on a tape of its own with the losses and
 * w_T as leaves. Then each segment [a, b] is recomputed on a short tape whose leaves are
 * its starting point, loss and state and the mapped theta; the scalar
 *   J = <acc, theta~> + sum_t dM/dl_t l_t + <lambda_w, w_b> + lambda_f f(w_b) + <lambda_s, s_b>
 * is back-propagated: its gradient in the starting leaves is the next lambda, and in theta~
 * the running sum acc. The terms of J are recorded after the segment, so the backward pass
 * adds the seeds first and then the segment's own contributions in the order the plain tape
 * adds them: the result is the plain reverse mode's, bit for bit. */

typedef struct ckpt {
  ms_tensor *w, *fw, *vl, *state[MS_OPTIM_MAXSTATE];
  int64_t k;
  int frozen;
} ckpt;

static void ckpt_clear(ckpt *c) {
  ms_tensor_release(c->w);
  ms_tensor_release(c->fw);
  ms_tensor_release(c->vl);
  for (int i = 0; i < MS_OPTIM_MAXSTATE; i++) ms_tensor_release(c->state[i]);
  memset(c, 0, sizeof *c);
}

static void ckpt_save(ckpt *c, const run *r) {
  c->w = ms_tensor_retain(r->w);
  c->fw = ms_tensor_retain(r->fw);
  c->vl = ms_tensor_retain(r->vl);
  for (int i = 0; i < MS_OPTIM_MAXSTATE; i++) c->state[i] = ms_tensor_retain(r->state[i]);
  c->k = r->k;
  c->frozen = r->frozen;
}

/* J += sum(a * x) (a NULL: nothing). J starts NULL. */
static int add_term(ms_ctx *ctx, ms_tensor **J, ms_tensor *a, ms_tensor *x) {
  if (a == NULL) return MS_OK;
  ms_tensor *p = NULL, *s = NULL, *n = NULL;
  int st = ms_binary(ctx, MS_MUL, a, x, &p);
  if (!st) st = ms_reduce(ctx, MS_SUM, p, MS_ALL, 0, &s);
  ms_tensor_release(p);
  if (st) return st;
  if (*J == NULL) {
    *J = s;
    return MS_OK;
  }
  st = ms_binary(ctx, MS_ADD, *J, s, &n);
  ms_tensor_release(s);
  if (!st) replace(J, n);
  return st;
}

typedef struct sweep {
  int64_t T, K;
  int nstate, nsel, where[MS_OPTIM_MAXPARAMS];
  double *dl, *dvl; /* dM/dl_t, dM/dvl_t (t = 0..T) */
  ms_tensor *lam_w, *lam_f, *lam_v, *lam_s[MS_OPTIM_MAXSTATE];
  ms_tensor *acc[MS_OPTIM_MAXPARAMS]; /* d M / d mapped theta (selected), running */
} sweep;

/* Recomputes segment (a, b] from checkpoint c and back-propagates J into the sweep. */
static int segment(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                   ms_tensor *const *mapped, const ckpt *c, int64_t a, int64_t b, sweep *sw) {
  ms_level *tape = NULL;
  ms_tensor *mp[MS_OPTIM_MAXPARAMS] = {0},
            *leaves[3 + MS_OPTIM_MAXSTATE + MS_OPTIM_MAXPARAMS] = {0};
  ms_tensor *grads[3 + MS_OPTIM_MAXSTATE + MS_OPTIM_MAXPARAMS] = {0}, *J = NULL, *dlt = NULL;
  int np = ms_optim_nparams(spec->optimizer), nl = 0;
  run r;
  int st = run_setup(&r, ctx, spec, task, NULL);
  if (!st) st = ms_ad_push(ctx, MS_AD_REVERSE, &tape);
  if (st) {
    run_clear(&r);
    return st;
  }
  for (int i = 0, j = 0; !st && i < np; i++) {
    if (j < sw->nsel && sw->where[j] == i) {
      st = ms_ad_watch(ctx, tape, mapped[i], NULL, &mp[i]);
      j++;
    } else {
      mp[i] = ms_tensor_retain(mapped[i]);
    }
  }
  r.mapped = mp;
  if (!st) st = ms_ad_watch(ctx, tape, c->w, NULL, &r.w);
  if (!st) st = ms_ad_watch(ctx, tape, c->fw, NULL, &r.fw);
  if (!st && c->vl) st = ms_ad_watch(ctx, tape, c->vl, NULL, &r.vl);
  for (int i = 0; !st && i < sw->nstate; i++)
    st = ms_ad_watch(ctx, tape, c->state[i], NULL, &r.state[i]);
  if (!st) {
    leaves[nl++] = ms_tensor_retain(r.w);
    leaves[nl++] = ms_tensor_retain(r.fw);
    leaves[nl++] = r.vl ? ms_tensor_retain(r.vl) : NULL;
    for (int i = 0; i < sw->nstate; i++) leaves[nl++] = ms_tensor_retain(r.state[i]);
    for (int j = 0; j < sw->nsel; j++) leaves[nl++] = ms_tensor_retain(mp[sw->where[j]]);
  }
  r.k = c->k;
  r.frozen = c->frozen;
  /* the losses of the segment's steps, for the terms dM/dl_t l_t */
  int64_t n = b - a;
  ms_tensor **ls = ms_ctx_alloc(ctx, (size_t)(2 * n) * sizeof *ls);
  if (!st && ls == NULL) st = MS_ENOMEM;
  if (ls) memset(ls, 0, (size_t)(2 * n) * sizeof *ls);
  for (int64_t t = a + 1; !st && t <= b; t++) {
    int ms;
    if (!(st = advance(&r, t, &ms)) && ms)
      st = ms_ctx_fail(ctx, MS_ESTATE,
                       "meta: checkpointed recomputation of step %lld disagrees with the "
                       "forward pass",
                       (long long)t);
    if (!st) {
      ls[2 * (t - a - 1)] = ms_tensor_retain(r.fw);
      ls[2 * (t - a - 1) + 1] = ms_tensor_retain(r.vl);
    }
  }
  for (int j = 0; !st && j < sw->nsel; j++) st = add_term(ctx, &J, sw->acc[j], mp[sw->where[j]]);
  for (int64_t t = a + 1; !st && t <= b; t++) {
    for (int v = 0; !st && v < 2; v++) {
      double *d = v ? sw->dvl : sw->dl;
      /* a zero adjoint adds nothing (the plain tape never visits such a loss): skip it */
      if (d == NULL || d[t] == 0 || ls[2 * (t - a - 1) + v] == NULL) continue;
      if (!(st = ms_tensor_scalar(ctx, d[t], &dlt)))
        st = add_term(ctx, &J, dlt, ls[2 * (t - a - 1) + v]);
      ms_tensor_release(dlt);
      dlt = NULL;
    }
  }
  if (!st) st = add_term(ctx, &J, sw->lam_w, r.w);
  if (!st) st = add_term(ctx, &J, sw->lam_f, r.fw);
  if (!st && r.vl) st = add_term(ctx, &J, sw->lam_v, r.vl);
  for (int i = 0; !st && i < sw->nstate; i++) st = add_term(ctx, &J, sw->lam_s[i], r.state[i]);
  int pst = ms_ad_pop(ctx, tape);
  if (!st) st = pst;
  if (!st && J == NULL) st = ms_tensor_scalar(ctx, 0.0, &J);
  /* leaves[2] may be NULL (no validation loss): gradient over the others */
  ms_tensor *xs[3 + MS_OPTIM_MAXSTATE + MS_OPTIM_MAXPARAMS];
  int map[3 + MS_OPTIM_MAXSTATE + MS_OPTIM_MAXPARAMS], nx = 0;
  for (int i = 0; i < nl; i++)
    if (leaves[i]) xs[nx] = leaves[i], map[nx++] = i;
  ms_tensor *gx[3 + MS_OPTIM_MAXSTATE + MS_OPTIM_MAXPARAMS] = {0};
  if (!st) st = ms_ad_gradient(ctx, tape, J, NULL, nx, xs, gx);
  for (int i = 0; i < nx; i++) grads[map[i]] = gx[i];
  if (!st) {
    replace(&sw->lam_w, grads[0]);
    replace(&sw->lam_f, grads[1]);
    replace(&sw->lam_v, grads[2]);
    for (int i = 0; i < sw->nstate; i++) replace(&sw->lam_s[i], grads[3 + i]);
    for (int j = 0; j < sw->nsel; j++) replace(&sw->acc[j], grads[3 + sw->nstate + j]);
  } else {
    for (int i = 0; i < nl; i++) ms_tensor_release(grads[i]);
  }
  if (ls) {
    for (int64_t i = 0; i < 2 * n; i++) ms_tensor_release(ls[i]);
    ms_ctx_dealloc(ctx, ls, (size_t)(2 * n) * sizeof *ls);
  }
  for (int i = 0; i < nl; i++) ms_tensor_release(leaves[i]);
  for (int i = 0; i < np; i++) ms_tensor_release(mp[i]);
  ms_tensor_release(J);
  run_clear(&r);
  ms_ad_free(tape);
  return st;
}

/* The meta-objective on a tape whose leaves are the recorded losses and w_T: its value and
 * dM/dl_t, dM/dvl_t, dM/dw_T and dM/dtheta (custom meta-objectives may read theta). */
static int meta_adjoints(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                         ms_tensor *const *theta, const double *lv, const double *vv, ms_tensor *wT,
                         sweep *sw, ms_tensor **direct, double *value) {
  int64_t T = sw->T;
  int np = ms_optim_nparams(spec->optimizer);
  ms_meta_kind kind = spec->meta.kind;
  /* leaves only for the losses the meta-objective reads: NAIVE and LOG read l_T alone, so a
   * long checkpointed run keeps no per-step tensors for them */
  int64_t first = kind == MS_META_NAIVE || kind == MS_META_LOG ? T : 0;
  ms_traj traj;
  memset(&traj, 0, sizeof traj);
  traj.T = traj.done = T;
  traj.task = task;
  traj.fail_step = -1;
  traj.nparams = np;
  ms_level *tape = NULL;
  ms_tensor *v = NULL, **xs = NULL, **gs = NULL;
  int64_t nx = 0;
  for (int64_t t = 0; t <= T; t++) sw->dl[t] = 0;
  if (vv)
    for (int64_t t = 0; t <= T; t++) sw->dvl[t] = 0;
  int st = ms_ad_push(ctx, MS_AD_REVERSE, &tape);
  if (st) return st;
  if (!(st = traj_alloc(ctx, &traj.losses, &traj)) && vv)
    st = traj_alloc(ctx, &traj.valid_losses, &traj);
  size_t nmax = (size_t)(2 * (T - first + 1) + 1 + np);
  if (!st) {
    xs = ms_ctx_alloc(ctx, nmax * sizeof *xs);
    gs = ms_ctx_alloc(ctx, nmax * sizeof *gs);
    if (gs) memset(gs, 0, nmax * sizeof *gs);
    if (xs == NULL || gs == NULL) st = MS_ENOMEM;
  }
  for (int64_t t = first; !st && t <= T; t++) {
    ms_tensor *s = NULL;
    if (!(st = ms_tensor_scalar(ctx, lv[t], &s)))
      st = ms_ad_watch(ctx, tape, s, NULL, &traj.losses[t]);
    ms_tensor_release(s);
    if (!st) xs[nx++] = traj.losses[t];
    if (!st && vv) {
      s = NULL;
      if (!(st = ms_tensor_scalar(ctx, vv[t], &s)))
        st = ms_ad_watch(ctx, tape, s, NULL, &traj.valid_losses[t]);
      ms_tensor_release(s);
      if (!st) xs[nx++] = traj.valid_losses[t];
    }
  }
  if (!st) st = ms_ad_watch(ctx, tape, wT, NULL, &traj.w_T);
  if (!st) xs[nx++] = traj.w_T;
  for (int i = 0; !st && i < np; i++) {
    if (!(st = ms_ad_watch(ctx, tape, theta[i], NULL, &traj.theta[i]))) xs[nx++] = traj.theta[i];
  }
  if (!st) st = meta_value(ctx, spec, &traj, &v);
  int pst = ms_ad_pop(ctx, tape);
  if (!st) st = pst;
  if (!st && kind == MS_META_CUSTOM && sw->nsel > 0 && !ms_ad_is_tracked(tape, v))
    st = detached(ctx, spec);
  if (!st) st = ms_tensor_item(ctx, v, value);
  if (!st) st = ms_ad_gradient(ctx, tape, v, NULL, (int)nx, xs, gs);
  if (!st) {
    int64_t k = 0;
    for (int64_t t = first; t <= T; t++) {
      if ((st = ms_tensor_item(ctx, gs[k++], &sw->dl[t]))) break;
      if (vv && (st = ms_tensor_item(ctx, gs[k++], &sw->dvl[t]))) break;
    }
    if (!st) {
      sw->lam_w = gs[k];
      gs[k++] = NULL;
      for (int i = 0; i < np; i++) direct[i] = gs[k], gs[k++] = NULL;
    }
  }
  if (gs)
    for (size_t i = 0; i < nmax; i++) ms_tensor_release(gs[i]);
  if (xs) ms_ctx_dealloc(ctx, xs, nmax * sizeof *xs);
  if (gs) ms_ctx_dealloc(ctx, gs, nmax * sizeof *gs);
  ms_tensor_release(v);
  ms_traj_clear(ctx, &traj);
  ms_ad_free(tape);
  return st;
}

/* d M / d theta from d M / d mapped theta, through the map, plus what M reads of theta itself. */
static int through_map(ms_ctx *ctx, const ms_meta_spec *spec, ms_tensor *const *theta, sweep *sw,
                       ms_tensor *const *direct, ms_tensor **grads) {
  int np = ms_optim_nparams(spec->optimizer);
  ms_level *tape = NULL;
  ms_tensor *xs[MS_OPTIM_MAXPARAMS] = {0}, *th[MS_OPTIM_MAXPARAMS] = {0},
            *mp[MS_OPTIM_MAXPARAMS] = {0};
  ms_tensor *J = NULL, *g[MS_OPTIM_MAXPARAMS] = {0};
  int st = ms_ad_push(ctx, MS_AD_REVERSE, &tape);
  if (st) return st;
  for (int i = 0; i < np; i++) th[i] = theta[i];
  for (int j = 0; !st && j < sw->nsel; j++) {
    st = ms_ad_watch(ctx, tape, theta[sw->where[j]], NULL, &xs[j]);
    th[sw->where[j]] = xs[j];
  }
  if (!st) st = ms_optim_map_theta(ctx, spec->optimizer, th, mp);
  for (int j = 0; !st && j < sw->nsel; j++) st = add_term(ctx, &J, sw->acc[j], mp[sw->where[j]]);
  int pst = ms_ad_pop(ctx, tape);
  if (!st) st = pst;
  if (!st && J == NULL) st = ms_tensor_scalar(ctx, 0.0, &J);
  if (!st) st = ms_ad_gradient(ctx, tape, J, NULL, sw->nsel, xs, g);
  for (int j = 0; !st && j < sw->nsel; j++) {
    int i = sw->where[j];
    ms_tensor *d = direct[i];
    if (d && spec->meta.kind == MS_META_CUSTOM) {
      ms_tensor *s = NULL;
      if (!(st = ms_binary(ctx, MS_ADD, d, g[j], &s))) replace(&g[j], s);
    }
    if (!st) grads[i] = g[j], g[j] = NULL;
  }
  for (int j = 0; j < MS_OPTIM_MAXPARAMS; j++) {
    ms_tensor_release(g[j]);
    ms_tensor_release(xs[j]);
    ms_tensor_release(mp[j]);
  }
  ms_tensor_release(J);
  ms_ad_free(tape);
  return st;
}

/* ---- reverse mode of GD on a quadratic, on buffers ----
 * GD's steps w_t = w_{t-1} - lr_t g_{t-1}, g = H (w - w*), under a NAIVE or LOG meta-objective of
 * the training loss, back-propagated by hand: the forward pass keeps the gradients g_t (one
 * product by H each, which also gives the loss f(w_t) = 1/2 (w_t - w*)^T g_t + f*), the backward
 * pass runs the adjoint lambda_{t-1} = lambda_t - H^T (lr_t lambda_t) (one product by H^T each)
 * and sums dM/dlr_t = -<lambda_t, g_{t-1}>: no tape and no tensor per step. An H that equals its
 * transpose exactly (checked once per call, a pass over H) is read through dsymv, one triangle:
 * half the bytes of a product. Otherwise the forward pass does the tape's own operations on the
 * same numbers (the same value and status, bit for bit). Either way the results differ from the
 * tape's by rounding only. checkpoint = K keeps every K-th point
 * and recomputes one segment's gradients at a time, the same products on the same inputs, so
 * the result is the one of K = 0 bit for bit. Used only when no autodiff level is active (no
 * derivative of the result can be asked for) and the step size has one entry or one per
 * coordinate. */

static int fast_applies(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                        ms_tensor *const *theta, const int *sel) {
  ms_meta_kind kind = spec->meta.kind;
  if (ms_ad_depth(ctx) > 0 || ms_optim_kind_of(spec->optimizer) != MS_OPTIM_GD || !sel[0]) return 0;
  if ((kind != MS_META_NAIVE && kind != MS_META_LOG) || spec->meta.on != MS_META_TRAIN) return 0;
  if (spec->truncate > 0 || spec->freeze_norm > 0) return 0;
  if (ms_objective_kind_of(task->objective) != MS_OBJECTIVE_QUADRATIC) return 0;
  ms_tensor *H = NULL;
  ms_objective_quadratic_parts(task->objective, &H, NULL, NULL);
  int64_t d = ms_objective_dim(task->objective), n = ms_tensor_numel(theta[0]);
  if (!ms_tensor_is_contiguous(H) || d > INT_MAX) return 0;
  return (n == 1 && ms_tensor_ndim(theta[0]) <= 1) || (ms_tensor_ndim(theta[0]) == 1 && n == d);
}

/* The buffers of fast_reverse, from one allocation. */
typedef struct fastbuf {
  double *block;
  size_t bytes;
  double *g;  /* K rows: g_t of the segment [a, b), row t - a */
  double *ck; /* nck rows: w_{cK} */
  double *w, *r, *hr, *lam, *tmp, *lr, *acc, *fac; /* d, d, d, d, d, nlr, nlr, T */
} fastbuf;

static int fastbuf_alloc(ms_ctx *ctx, fastbuf *b, int64_t d, int64_t K, int64_t nck, int64_t T,
                         int64_t nlr) {
  memset(b, 0, sizeof *b);
  uint64_t rows = (uint64_t)K + (uint64_t)nck + 5;
  if (rows > (SIZE_MAX / sizeof(double) - (uint64_t)(2 * nlr + T)) / (uint64_t)d)
    return ms_ctx_fail(ctx, MS_ENOMEM,
                       "meta: reverse mode would need more than a size_t of memory");
  size_t n = (size_t)rows * (size_t)d + (size_t)(2 * nlr + T);
  b->block = ms_ctx_alloc(ctx, n * sizeof(double));
  if (b->block == NULL) return MS_ENOMEM;
  b->bytes = n * sizeof(double);
  double *p = b->block;
  b->g = p, p += K * d;
  b->ck = p, p += nck * d;
  b->w = p, p += d;
  b->r = p, p += d;
  b->hr = p, p += d;
  b->lam = p, p += d;
  b->tmp = p, p += d;
  b->lr = p, p += nlr;
  b->acc = p, p += nlr;
  b->fac = p;
  return MS_OK;
}

/* Nonzero if the contiguous [d,d] h equals its transpose exactly (compared block by block, so
 * both reads stream). */
static int exactly_symmetric(const double *h, int64_t d) {
  enum { B = 64 };
  for (int64_t i0 = 0; i0 < d; i0 += B)
    for (int64_t j0 = 0; j0 <= i0; j0 += B)
      for (int64_t i = i0; i < i0 + B && i < d; i++)
        for (int64_t j = j0; j < j0 + B && j < i; j++)
          if (h[i * d + j] != h[j * d + i]) return 0;
  return 1;
}

/* y = H x + beta y: dsymv (one triangle, half the bytes) when H is exactly symmetric, else
 * dgemv with H or (trans) H^T. */
static void fast_mv(ms_ctx *ctx, const ms_tensor *H, int sym, int trans, const double *x,
                    double beta, double *y) {
  if (sym) {
    ms__symv_raw(ctx, H, 1.0, x, beta, y);
  } else {
    ms__gemv_raw(ctx, H, trans, 1.0, x, beta, y);
  }
}

/* r = w - w* (or w), and g = H r: one product. */
static void fast_grad(ms_ctx *ctx, const ms_tensor *H, int sym, const double *ws, int64_t d,
                      const double *w, double *r, double *g) {
  for (int64_t i = 0; i < d; i++) r[i] = ws ? w[i] - ws[i] : w[i];
  fast_mv(ctx, H, sym, 0, r, 0.0, g);
}

/* w -= g * (lr factor), per coordinate when nlr > 1: GD's step with the tape's roundings. */
static void fast_step(double *w, const double *g, const double *lr, int64_t nlr, double factor,
                      int64_t d) {
  for (int64_t i = 0; i < d; i++) w[i] = w[i] - g[i] * (lr[nlr > 1 ? i : 0] * factor);
}

static int fast_reverse(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                        ms_tensor *const *theta, const int *sel, ms_meta_out *out) {
  int64_t T = spec->steps, K = spec->checkpoint > 0 && spec->checkpoint < T ? spec->checkpoint : T;
  int64_t d = ms_objective_dim(task->objective), nck = (T - 1) / K + 1;
  int64_t nlr = ms_tensor_numel(theta[0]);
  ms_tensor *H = NULL, *wst = NULL, *mapped[MS_OPTIM_MAXPARAMS] = {0}, *direct[1] = {NULL};
  double fstar = 0;
  ms_objective_quadratic_parts(task->objective, &H, &wst, &fstar);
  const double *ws = wst ? ms_tensor_data(wst) : NULL; /* the objective's copy: contiguous */
  int sym = exactly_symmetric(ms_tensor_data(H), d);
  int zero_fails = !spec->allow_zero_loss && spec->meta.kind == MS_META_LOG;
  fastbuf b;
  sweep sw;
  memset(&sw, 0, sizeof sw);
  ms_traj fail;
  memset(&fail, 0, sizeof fail);
  int st = check_recorded(ctx, T);
  if (!st) st = fastbuf_alloc(ctx, &b, d, K, nck, T, nlr);
  if (st) return st;
  if (!(st = ms_optim_map_theta(ctx, spec->optimizer, theta, mapped))) {
    for (int64_t i = 0; i < nlr; i++)
      b.lr[i] = ms_tensor_data(mapped[0])[ms__offset_of(mapped[0], i)];
    for (int64_t i = 0; i < d; i++)
      b.w[i] = task->w0 ? ms_tensor_data(task->w0)[ms__offset_of(task->w0, i)] : 0.0;
  }
  /* forward: g_{t-1} in row (t - 1) mod K; f(w_t) from g_t */
  double f = 0;
  if (!st) fast_grad(ctx, H, sym, ws, d, b.w, b.r, b.g);
  memcpy(b.ck, b.w, (size_t)d * sizeof(double));
  for (int64_t t = 1; !st && t <= T; t++) {
    if ((st = ms_ctx_check_interrupt(ctx, "meta"))) break;
    if ((st = ms_optim_factor(ctx, spec->optimizer, t, &b.fac[t - 1]))) break;
    fast_step(b.w, b.g + ((t - 1) % K) * d, b.lr, nlr, b.fac[t - 1], d);
    for (int64_t i = 0; i < d && !fail.status; i++)
      if (!isfinite(b.w[i])) fail.status = MS_META_OVERFLOW;
    for (int64_t i = 0; fail.status && i < d; i++)
      if (isnan(b.w[i])) fail.status = MS_META_NAN;
    if (!fail.status) {
      fast_grad(ctx, H, sym, ws, d, b.w, b.r, t < T ? b.g + (t % K) * d : b.hr);
      f = 0.5 * ms__dot_raw(d, b.r, t < T ? b.g + (t % K) * d : b.hr);
      if (fstar != 0) f = f + fstar;
      fail.status = loss_status(zero_fails, f);
    }
    if (fail.status) {
      fail.fail_step = t;
      break;
    }
    if (t % K == 0 && t < T) memcpy(b.ck + (t / K) * d, b.w, (size_t)d * sizeof(double));
  }
  if (!st && fail.status) {
    st = failed(ctx, theta, sel, ms_optim_nparams(spec->optimizer), &fail, out);
    goto done;
  }
  if (st) goto done;
  out->value = spec->meta.kind == MS_META_LOG ? log(f) / (double)T : f;
  /* backward: the meta-objective, then f(w_T) = 1/2 r^T (H r) + f* */
  double a = spec->meta.kind == MS_META_LOG ? 1.0 / (double)T / f : 1.0, ad = a * 0.5;
  for (int64_t i = 0; i < d; i++) b.lam[i] = ad * b.hr[i], b.tmp[i] = ad * b.r[i];
  fast_mv(ctx, H, sym, 1, b.tmp, 1.0, b.lam);
  for (int64_t i = 0; i < nlr; i++) b.acc[i] = 0;
  for (int64_t c = nck - 1; !st && c >= 0; c--) {
    int64_t s0 = c * K, s1 = s0 + K < T ? s0 + K : T;
    if (K < T) { /* recompute the segment's gradients from its checkpoint */
      memcpy(b.w, b.ck + c * d, (size_t)d * sizeof(double));
      for (int64_t t = s0; t < s1; t++) {
        fast_grad(ctx, H, sym, ws, d, b.w, b.r, b.g + (t - s0) * d);
        if (t + 1 < s1) fast_step(b.w, b.g + (t - s0) * d, b.lr, nlr, b.fac[t], d);
      }
    }
    for (int64_t t = s1; t > s0; t--) { /* step t: w_t = w_{t-1} - g_{t-1} (lr fac_t) */
      const double *g = b.g + (t - 1 - s0) * d;
      double fac = b.fac[t - 1];
      if (nlr == 1) {
        b.acc[0] -= ms__dot_raw(d, b.lam, g) * fac;
      } else {
        for (int64_t i = 0; i < d; i++) b.acc[i] -= b.lam[i] * g[i] * fac;
      }
      if (t == 1) break; /* w_0 is a constant: no adjoint needed */
      if ((st = ms_ctx_check_interrupt(ctx, "meta"))) break;
      for (int64_t i = 0; i < d; i++) b.tmp[i] = -b.lam[i] * (b.lr[nlr > 1 ? i : 0] * fac);
      fast_mv(ctx, H, sym, 1, b.tmp, 1.0, b.lam);
    }
  }
  /* d M / d lr as the mapped parameter's gradient, then through the map to the stored one */
  if (!st)
    st = ms_tensor_from_data(ctx, ms_tensor_ndim(mapped[0]), ms_tensor_shape(mapped[0]), b.acc,
                             &sw.acc[0]);
  if (!st) {
    sw.nsel = 1;
    sw.where[0] = 0;
    st = through_map(ctx, spec, theta, &sw, direct, out->grad);
  }
  if (!st) {
    set_status(out, value_status(spec, out->value), T);
    set_status(out, tensor_status(out->grad[0]), T);
  }
done:
  ms_ctx_dealloc(ctx, b.block, b.bytes);
  ms_tensor_release(sw.acc[0]);
  for (int i = 0; i < MS_OPTIM_MAXPARAMS; i++) ms_tensor_release(mapped[i]);
  if (st) ms_meta_out_clear(out);
  return st;
}

static int method_checkpoint(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                             ms_tensor *const *theta, const int *sel, ms_meta_out *out) {
  if (fast_applies(ctx, spec, task, theta, sel))
    return fast_reverse(ctx, spec, task, theta, sel, out);
  int64_t T = spec->steps, K = spec->checkpoint;
  int np = ms_optim_nparams(spec->optimizer);
  int st = check_recorded(ctx, T);
  if (st) return st;
  /* the sweep carries dM/dl_t as numbers: a meta-gradient that is itself differentiated (theta
   * or w0 traced by an outer level) would lose that dependence, so it is refused */
  int traced = task->w0 && ms_ad_is_traced(ctx, task->w0);
  for (int i = 0; i < np; i++) traced |= ms_ad_is_traced(ctx, theta[i]);
  if (traced)
    return ms_ctx_fail(
        ctx, MS_EARG,
        "meta: 'checkpoint' gives first-order meta-gradients only, and theta or w0 is "
        "traced by an outer autodiff level; use reverse mode without checkpointing");
  int64_t nck = (T - 1) / K + 1; /* checkpoints at t = 0, K, 2K, ... < T */
  ms_tensor *mapped[MS_OPTIM_MAXPARAMS] = {0}, *direct[MS_OPTIM_MAXPARAMS] = {0}, *wT = NULL;
  sweep sw;
  memset(&sw, 0, sizeof sw);
  sw.T = T;
  sw.K = K;
  sw.nstate = ms_optim_nstate(spec->optimizer);
  for (int i = 0; i < np; i++)
    if (sel[i]) sw.where[sw.nsel++] = i;
  ckpt *cks = ms_ctx_alloc(ctx, (size_t)nck * sizeof *cks);
  double *lv = ms_ctx_alloc(ctx, (size_t)(T + 1) * sizeof *lv);
  sw.dl = ms_ctx_alloc(ctx, (size_t)(T + 1) * sizeof *sw.dl);
  run r;
  st = run_setup(&r, ctx, spec, task, mapped);
  double *vv = NULL;
  if (!st && r.valid_each) {
    vv = ms_ctx_alloc(ctx, (size_t)(T + 1) * sizeof *vv);
    sw.dvl = ms_ctx_alloc(ctx, (size_t)(T + 1) * sizeof *sw.dvl);
    if (vv == NULL || sw.dvl == NULL) st = MS_ENOMEM;
  }
  if (!st && (cks == NULL || lv == NULL || sw.dl == NULL)) st = MS_ENOMEM;
  if (cks) memset(cks, 0, (size_t)nck * sizeof *cks);
  if (!st) st = ms_optim_map_theta(ctx, spec->optimizer, theta, mapped);
  if (!st) st = run_start(&r);
  if (!st) {
    st = ms_tensor_item(ctx, r.fw, &lv[0]);
    if (!st && vv) st = ms_tensor_item(ctx, r.vl, &vv[0]);
    ckpt_save(&cks[0], &r);
  }
  ms_traj fail;
  memset(&fail, 0, sizeof fail);
  for (int64_t t = 1; !st && t <= T; t++) {
    int ms;
    if ((st = advance(&r, t, &ms))) break;
    if (ms) {
      fail.status = ms;
      fail.fail_step = t;
      break;
    }
    if (!(st = ms_tensor_item(ctx, r.fw, &lv[t])) && vv) st = ms_tensor_item(ctx, r.vl, &vv[t]);
    if (t % K == 0 && t < T) ckpt_save(&cks[t / K], &r);
  }
  if (!st && fail.status) {
    st = failed(ctx, theta, sel, np, &fail, out);
    goto done;
  }
  if (st) goto done;
  wT = ms_tensor_retain(r.w);
  if ((st = run_end(&r, T))) goto done;
  run_clear(&r);
  if ((st = meta_adjoints(ctx, spec, task, theta, lv, vv, wT, &sw, direct, &out->value))) goto done;
  for (int64_t c = nck - 1; !st && c >= 0; c--) {
    int64_t a = c * K, b = a + K < T ? a + K : T;
    st = segment(ctx, spec, task, mapped, &cks[c], a, b, &sw);
    ckpt_clear(&cks[c]); /* memory goes back as the sweep proceeds */
  }
  if (!st) st = through_map(ctx, spec, theta, &sw, direct, out->grad);
  if (!st) {
    set_status(out, value_status(spec, out->value), T);
    for (int i = 0; i < np; i++)
      if (out->grad[i]) set_status(out, tensor_status(out->grad[i]), T);
  }
done:
  run_clear(&r);
  if (cks) {
    for (int64_t c = 0; c < nck; c++) ckpt_clear(&cks[c]);
    ms_ctx_dealloc(ctx, cks, (size_t)nck * sizeof *cks);
  }
  if (lv) ms_ctx_dealloc(ctx, lv, (size_t)(T + 1) * sizeof *lv);
  if (vv) ms_ctx_dealloc(ctx, vv, (size_t)(T + 1) * sizeof *vv);
  if (sw.dl) ms_ctx_dealloc(ctx, sw.dl, (size_t)(T + 1) * sizeof *sw.dl);
  if (sw.dvl) ms_ctx_dealloc(ctx, sw.dvl, (size_t)(T + 1) * sizeof *sw.dvl);
  ms_tensor_release(sw.lam_w);
  ms_tensor_release(sw.lam_f);
  ms_tensor_release(sw.lam_v);
  for (int i = 0; i < MS_OPTIM_MAXSTATE; i++) ms_tensor_release(sw.lam_s[i]);
  for (int i = 0; i < MS_OPTIM_MAXPARAMS; i++) {
    ms_tensor_release(sw.acc[i]);
    ms_tensor_release(mapped[i]);
    ms_tensor_release(direct[i]);
  }
  ms_tensor_release(wT);
  if (st) ms_meta_out_clear(out);
  return st;
}

/* ---- plain value (no derivatives) ---- */

static int plain_value(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                       ms_tensor *const *theta, double *value, int *status, int64_t *fail_step) {
  int np = ms_optim_nparams(spec->optimizer);
  int nosel[MS_OPTIM_MAXPARAMS] = {0};
  *fail_step = -1;
  if (!spec->start && !spec->stop && ms__meta_stable_applies(ctx, spec, task, NULL, 0)) {
    ms_meta_out o;
    out_init(&o, np);
    int st = ms__meta_stable(ctx, spec, task, theta, nosel, &o);
    ms_meta_out_clear(&o);
    *value = o.value;
    *status = o.status;
    *fail_step = o.fail_step;
    return st;
  }
  ms_tensor *mapped[MS_OPTIM_MAXPARAMS] = {0}, *v = NULL;
  ms_traj traj;
  memset(&traj, 0, sizeof traj);
  int st = ms_optim_map_theta(ctx, spec->optimizer, theta, mapped);
  if (!st) st = unroll(ctx, spec, task, theta, mapped, 0, &traj);
  if (!st && traj.status) {
    *value = NAN;
    *status = traj.status;
    *fail_step = traj.fail_step;
  } else if (!st) {
    if (!(st = meta_value(ctx, spec, &traj, &v)) && !(st = ms_tensor_item(ctx, v, value))) {
      *status = value_status(spec, *value);
      if (*status) *fail_step = spec->steps;
    }
  }
  for (int i = 0; i < MS_OPTIM_MAXPARAMS; i++) ms_tensor_release(mapped[i]);
  ms_tensor_release(v);
  ms_traj_clear(ctx, &traj);
  return st;
}

/* ---- forward mode: one pass per entry of each selected parameter ---- */

static int forward_pass(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                        ms_tensor *const *theta, int i, int64_t e, double *value, double *deriv,
                        ms_traj *fail) {
  int np = ms_optim_nparams(spec->optimizer);
  ms_level *level = NULL;
  ms_tensor *tan = NULL, *x = NULL, *th[MS_OPTIM_MAXPARAMS], *mapped[MS_OPTIM_MAXPARAMS] = {0},
            *v = NULL, *dv = NULL;
  ms_traj traj;
  memset(&traj, 0, sizeof traj);
  int64_t zero[MS_MAXDIM] = {0};
  int st = ms_ad_push(ctx, MS_AD_FORWARD, &level);
  if (st) return st;
  if (!(st = ms_tensor_zeros(ctx, ms_tensor_ndim(theta[i]), ms_tensor_shape(theta[i]), &tan))) {
    /* entry e in row-major order */
    int64_t rem = e;
    for (int k = ms_tensor_ndim(tan) - 1; k >= 0; k--) {
      zero[k] = rem % ms_tensor_dim(tan, k);
      rem /= ms_tensor_dim(tan, k);
    }
    st = ms_tensor_set(ctx, tan, zero, 1.0);
  }
  if (!st) st = ms_ad_watch(ctx, level, theta[i], tan, &x);
  for (int k = 0; k < np; k++) th[k] = k == i ? x : theta[k];
  if (!st) st = ms_optim_map_theta(ctx, spec->optimizer, th, mapped);
  if (!st) st = unroll(ctx, spec, task, th, mapped, 0, &traj);
  if (!st && traj.status == MS_META_OK) st = meta_value(ctx, spec, &traj, &v);
  int pst = ms_ad_pop(ctx, level);
  if (!st) st = pst;
  if (!st && traj.status) {
    fail->status = traj.status;
    fail->fail_step = traj.fail_step;
  } else if (!st) {
    if (spec->meta.kind == MS_META_CUSTOM && !ms_ad_is_tracked(level, v)) st = detached(ctx, spec);
    if (!st) st = ms_tensor_item(ctx, v, value);
    if (!st) st = ms_ad_tangent(ctx, level, v, &dv);
    if (!st) st = ms_tensor_item(ctx, dv, deriv);
  }
  for (int k = 0; k < MS_OPTIM_MAXPARAMS; k++) ms_tensor_release(mapped[k]);
  ms_tensor_release(tan), ms_tensor_release(x), ms_tensor_release(v), ms_tensor_release(dv);
  ms_traj_clear(ctx, &traj);
  ms_ad_free(level);
  return st;
}

static int method_forward(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                          ms_tensor *const *theta, const int *sel, ms_meta_out *out) {
  int np = ms_optim_nparams(spec->optimizer), passes = 0, handled;
  /* gd, momentum, nesterov on a quadratic or least squares: one fused pass per step */
  int st = ms__meta_forward_fast(ctx, spec, task, theta, sel, out, &handled);
  if (handled) return st;
  ms_traj fail;
  memset(&fail, 0, sizeof fail);
  for (int i = 0; !st && i < np; i++) {
    if (!sel[i]) continue;
    if ((st = ms_tensor_zeros(ctx, ms_tensor_ndim(theta[i]), ms_tensor_shape(theta[i]),
                              &out->grad[i])))
      break;
    double *g = ms_tensor_data(out->grad[i]);
    for (int64_t e = 0; !st && e < ms_tensor_numel(theta[i]); e++) {
      st = forward_pass(ctx, spec, task, theta, i, e, &out->value, &g[e], &fail);
      passes++;
      if (!st && fail.status) {
        ms_meta_out_clear(out);
        return failed(ctx, theta, sel, np, &fail, out);
      }
    }
  }
  if (!st && passes == 0) {
    int64_t fs;
    int status;
    st = plain_value(ctx, spec, task, theta, &out->value, &status, &fs);
    if (!st) set_status(out, status, fs);
    return st;
  }
  if (st) {
    ms_meta_out_clear(out);
    return st;
  }
  set_status(out, value_status(spec, out->value), spec->steps);
  for (int i = 0; i < np; i++)
    if (out->grad[i]) set_status(out, tensor_status(out->grad[i]), spec->steps);
  return MS_OK;
}

/* ---- finite differences ---- */

/* The default step: relative to the parameter (an absolute floor would straddle the
 * divergence threshold at tiny step sizes), 1e-6 where it is 0. */
static double fd_step(const ms_meta_spec *spec, double x) {
  if (spec->fd_step > 0) return spec->fd_step;
  return x != 0 ? 1e-4 * fabs(x) : 1e-6;
}

static int method_fd(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task,
                     ms_tensor *const *theta, const int *sel, ms_meta_out *out) {
  int np = ms_optim_nparams(spec->optimizer), status;
  int64_t fs;
  int st = plain_value(ctx, spec, task, theta, &out->value, &status, &fs);
  if (st) return st;
  set_status(out, status, fs);
  ms_tensor *th[MS_OPTIM_MAXPARAMS], *pert = NULL;
  ms_meta_spec quiet = *spec; /* the perturbed runs leave spec->stop alone */
  quiet.stop = NULL;
  for (int i = 0; !st && i < np; i++) {
    if (!sel[i]) continue;
    const ms_optim_param *p = ms_optim_param_at(spec->optimizer, i);
    if ((st = ms_tensor_zeros(ctx, ms_tensor_ndim(theta[i]), ms_tensor_shape(theta[i]),
                              &out->grad[i])))
      break;
    if ((st = ms_tensor_copy(ctx, theta[i], &pert))) break;
    double *g = ms_tensor_data(out->grad[i]), *pp = ms_tensor_data(pert);
    for (int k = 0; k < np; k++) th[k] = k == i ? pert : theta[k];
    for (int64_t e = 0; !st && e < ms_tensor_numel(theta[i]); e++) {
      double x = pp[e], h = fd_step(spec, x), vals[5];
      /* one-sided, fourth order, only within two steps of a bound of the domain */
      int dir = x - 2 * h < p->lo ? 1 : x + 2 * h > p->hi ? -1 : 0;
      static const double central[4] = {-2, -1, 1, 2}, side[5] = {0, 1, 2, 3, 4};
      int npts = dir ? 5 : 4;
      for (int s = 0; !st && s < npts; s++) {
        pp[e] = dir ? x + dir * side[s] * h : x + central[s] * h;
        int pst;
        st = plain_value(ctx, &quiet, task, th, &vals[s], &pst, &fs);
        if (!st) set_status(out, pst, fs);
      }
      pp[e] = x;
      if (st) break;
      g[e] = dir ? dir *
                       (-25 * vals[0] + 48 * vals[1] - 36 * vals[2] + 16 * vals[3] - 3 * vals[4]) /
                       (12 * h)
                 : (vals[0] - 8 * vals[1] + 8 * vals[2] - vals[3]) / (12 * h);
    }
    ms_tensor_release(pert);
    pert = NULL;
    if (!st) set_status(out, tensor_status(out->grad[i]), spec->steps);
  }
  if (st) ms_meta_out_clear(out);
  return st;
}

/* ---- the dispatcher ---- */

typedef int (*method_fn)(ms_ctx *, const ms_meta_spec *, const ms_task *, ms_tensor *const *,
                         const int *, ms_meta_out *);

static method_fn method_of(const ms_meta_spec *spec) {
  switch (spec->method) {
    case MS_METHOD_REVERSE:
      return spec->checkpoint > 0 ? method_checkpoint : method_reverse;
    case MS_METHOD_FORWARD:
      return method_forward;
    case MS_METHOD_STABLE:
      return ms__meta_stable;
    case MS_METHOD_EXACT:
      return ms__meta_exact;
    default:
      return method_fd;
  }
}

/* Stored values with the optimizer's initial ones filled in (borrowed), and the selection. */
static void resolve(const ms_meta_spec *spec, ms_tensor **theta, int *sel) {
  int np = ms_optim_nparams(spec->optimizer);
  for (int i = 0; i < np; i++) {
    theta[i] = spec->theta && spec->theta[i] ? spec->theta[i]
                                             : ms_optim_param_at(spec->optimizer, i)->init;
    sel[i] = spec->select == NULL;
  }
  for (int j = 0; spec->select && j < spec->nselect; j++) sel[spec->select[j]] = 1;
}

int ms_meta_value_and_grad(ms_ctx *ctx, const ms_meta_spec *spec, ms_meta_out *out) {
  int np = spec->optimizer ? ms_optim_nparams(spec->optimizer) : 0;
  out_init(out, np);
  int st = ms_meta_check_spec(ctx, spec);
  if (st) return st;
  ms_tensor *theta[MS_OPTIM_MAXPARAMS] = {0};
  int sel[MS_OPTIM_MAXPARAMS] = {0};
  resolve(spec, theta, sel);
  method_fn fn = method_of(spec);
  if (spec->ntasks == 1) {
    st = fn(ctx, spec, &spec->tasks[0], theta, sel, out);
    if (!st && out->status) out->task = 0;
    if (st) ms_meta_out_clear(out);
    return st;
  }
  /* several tasks: the mean of the values and of the meta-gradients */
  double n = (double)spec->ntasks;
  out->value = 0;
  for (int k = 0; !st && k < spec->ntasks; k++) {
    ms_meta_out r;
    out_init(&r, np);
    if ((st = fn(ctx, spec, &spec->tasks[k], theta, sel, &r))) {
      ms_meta_out_clear(&r);
      break;
    }
    out->value += r.value / n;
    for (int i = 0; !st && i < np; i++) {
      if (r.grad[i] == NULL) continue;
      ms_tensor *q = NULL, *s = NULL;
      if (!(st = ms_binary_scalar(ctx, MS_DIV, r.grad[i], n, 0, &q))) {
        if (out->grad[i] == NULL) {
          out->grad[i] = q;
          q = NULL;
        } else if (!(st = ms_binary(ctx, MS_ADD, out->grad[i], q, &s))) {
          replace(&out->grad[i], s);
        }
      }
      ms_tensor_release(q);
    }
    if (r.status && out->status == MS_META_OK) {
      out->status = r.status;
      out->fail_step = r.fail_step;
      out->task = k;
    }
    ms_meta_out_clear(&r);
  }
  if (st) ms_meta_out_clear(out);
  return st;
}

int ms_meta_value(ms_ctx *ctx, const ms_meta_spec *spec, double *value, int *status) {
  *value = NAN;
  *status = MS_META_OK;
  int st = ms_meta_check_spec(ctx, spec);
  if (st) return st;
  ms_tensor *theta[MS_OPTIM_MAXPARAMS] = {0};
  int sel[MS_OPTIM_MAXPARAMS];
  resolve(spec, theta, sel);
  double sum = 0;
  for (int k = 0; k < spec->ntasks; k++) {
    double v;
    int s;
    int64_t fs;
    if ((st = plain_value(ctx, spec, &spec->tasks[k], theta, &v, &s, &fs))) return st;
    sum += v / (double)spec->ntasks;
    if (s && *status == MS_META_OK) *status = s;
  }
  *value = sum;
  return MS_OK;
}

int ms_meta_unroll(ms_ctx *ctx, const ms_meta_spec *spec, const ms_task *task, int keep_iterates,
                   ms_traj *traj) {
  memset(traj, 0, sizeof *traj);
  int st = ms_meta_check_spec(ctx, spec);
  if (!st && task == NULL) st = ms_ctx_fail(ctx, MS_EARG, "meta: unroll: the task is NULL");
  if (!st) st = check_task(ctx, spec, task, 0);
  if (st) return st;
  ms_tensor *theta[MS_OPTIM_MAXPARAMS] = {0}, *mapped[MS_OPTIM_MAXPARAMS] = {0};
  int sel[MS_OPTIM_MAXPARAMS];
  resolve(spec, theta, sel);
  if (!(st = ms_optim_map_theta(ctx, spec->optimizer, theta, mapped)))
    st = unroll(ctx, spec, task, theta, mapped, keep_iterates, traj);
  for (int i = 0; i < MS_OPTIM_MAXPARAMS; i++) ms_tensor_release(mapped[i]);
  return st;
}
