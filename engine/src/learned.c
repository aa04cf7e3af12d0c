/*
 * Learned optimizers (learned.h): a per-coordinate MLP (Metz et al. 2019) and a
 * per-coordinate LSTM (Andrychowicz et al. 2016) as ms_optim callbacks.
 *
 * Both steps build the [d, k] input matrix of all coordinates at once and run each layer as
 * one ms_matmul, with the public differentiable operations only, so every autodiff level
 * active around a step records it (meta-gradients, second order) and with none active the
 * same calls run untraced. Constants (decays, the step-count embedding) are plain tensors.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "meta_internal.h"
#include "metastep/archive.h"

#define NDECAY 5
#define NTIME 11
#define MLP_NIN (2 + 4 * NDECAY) /* g, w, m, v, 1/sqrt(v), m/sqrt(v) */
#define LSTM_P 10.0              /* gradient preprocessing: log|g| / p */

static const double DECAYS[NDECAY] = {0.5, 0.9, 0.99, 0.999, 0.9999};
/* timescales of the step-count embedding: 3, 10, 30, ..., 3e5 */
static const double TIMESCALES[NTIME] = {3, 10, 30, 1e2, 3e2, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5};

typedef enum learned_kind { LEARNED_MLP = 1, LEARNED_LSTM = 2 } learned_kind;

typedef struct learned {
  ms_ctx *ctx;
  learned_kind kind;
  ms_learned_options o;  /* defaults filled in; theta NULL */
  ms_tensor *beta, *omb; /* [1, NDECAY]: the decays and 1 - decays */
} learned;

/* ---- a chain of temporaries (the pattern of optim.c's built-in steps) ----
 * Each helper returns a new temporary registered in the chain, or NULL once anything failed;
 * finish releases every temporary, so a step reads as a formula. */

#define CHAIN_MAX 96

typedef struct chain {
  ms_ctx *ctx;
  int st;
  int n;
  ms_tensor *tmp[CHAIN_MAX];
} chain;

/* t is passed by address: it is read after the call that sets it (C leaves the order of
 * evaluation of arguments unspecified). */
static ms_tensor *keep(chain *c, int st, ms_tensor **tp) {
  ms_tensor *t = *tp;
  if (c->st || st) {
    ms_tensor_release(t);
    if (!c->st) c->st = st;
    return NULL;
  }
  if (c->n == CHAIN_MAX) {
    ms_tensor_release(t);
    c->st = ms_ctx_fail(c->ctx, MS_ESTATE, "learned optimizer: internal chain overflow");
    return NULL;
  }
  c->tmp[c->n++] = t;
  return t;
}
static ms_tensor *bin(chain *c, ms_binop op, ms_tensor *a, ms_tensor *b) {
  ms_tensor *t = NULL;
  return c->st ? NULL : keep(c, ms_binary(c->ctx, op, a, b, &t), &t);
}
static ms_tensor *bins(chain *c, ms_binop op, ms_tensor *a, double s) {
  ms_tensor *t = NULL;
  return c->st ? NULL : keep(c, ms_binary_scalar(c->ctx, op, a, s, 0, &t), &t);
}
static ms_tensor *un(chain *c, ms_unop op, ms_tensor *a) {
  ms_tensor *t = NULL;
  return c->st ? NULL : keep(c, ms_unary(c->ctx, op, a, &t), &t);
}
static ms_tensor *mm(chain *c, ms_tensor *a, ms_tensor *b) {
  ms_tensor *t = NULL;
  return c->st ? NULL : keep(c, ms_matmul(c->ctx, a, b, &t), &t);
}
static ms_tensor *mean0(chain *c, ms_tensor *a) {
  ms_tensor *t = NULL;
  return c->st ? NULL : keep(c, ms_reduce(c->ctx, MS_MEAN, a, 0, 1, &t), &t);
}
static ms_tensor *cat1(chain *c, int n, ms_tensor *const *ts) {
  ms_tensor *t = NULL;
  for (int i = 0; i < n; i++)
    if (ts[i] == NULL) return NULL;
  return c->st ? NULL : keep(c, ms_tensor_cat(c->ctx, n, ts, 1, &t), &t);
}
static ms_tensor *cols(chain *c, ms_tensor *a, int64_t start, int64_t stop) {
  ms_tensor *t = NULL;
  return c->st ? NULL : keep(c, ms_tensor_slice(c->ctx, a, 1, start, stop, 1, &t), &t);
}
static ms_tensor *reshape(chain *c, ms_tensor *a, int ndim, const int64_t *shape) {
  ms_tensor *t = NULL;
  return c->st ? NULL : keep(c, ms_tensor_reshape(c->ctx, a, ndim, shape, &t), &t);
}
static ms_tensor *where(chain *c, ms_tensor *cond, ms_tensor *a, ms_tensor *b) {
  ms_tensor *t = NULL;
  return c->st ? NULL : keep(c, ms_where(c->ctx, cond, a, b, &t), &t);
}
static ms_tensor *constant(chain *c, int ndim, const int64_t *shape, const double *data) {
  ms_tensor *t = NULL;
  return c->st ? NULL : keep(c, ms_tensor_from_data(c->ctx, ndim, shape, data, &t), &t);
}
static ms_tensor *take(chain *c, ms_tensor *t) {
  return c->st || t == NULL ? NULL : ms_tensor_retain(t);
}
static int finish_step(chain *c, ms_tensor **w_next, ms_tensor **state, int nstate) {
  for (int i = 0; i < c->n; i++) ms_tensor_release(c->tmp[i]);
  if (c->st) {
    ms_tensor_release(*w_next), *w_next = NULL;
    for (int i = 0; i < nstate; i++) ms_tensor_release(state[i]), state[i] = NULL;
  }
  return c->st;
}

/* w as a column [d, 1]. */
static ms_tensor *column(chain *c, ms_tensor *w) {
  int64_t shape[2] = {ms_tensor_numel(w), 1};
  return reshape(c, w, 2, shape);
}

/* ---- the MLP optimizer ---- */

enum { MLP_W1, MLP_W1T, MLP_B1, MLP_W2, MLP_B2, MLP_NPARAMS };

static int mlp_init(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor *const *theta,
                    ms_tensor **state) {
  (void)ud, (void)theta;
  int64_t shape[2] = {ms_tensor_numel(w), NDECAY};
  int st = ms_tensor_zeros(ctx, 2, shape, &state[0]);
  if (!st) st = ms_tensor_zeros(ctx, 2, shape, &state[1]);
  return st;
}

/* Divides each column by its root mean square over the rows: the inputs are scale-free,
 * whatever the size of the gradients or weights of the task. */
static ms_tensor *normalise(chain *c, ms_tensor *x) {
  return bin(c, MS_DIV, x, un(c, MS_SQRT, bins(c, MS_ADD, mean0(c, un(c, MS_SQUARE, x)), 1e-20)));
}

static int mlp_step(ms_ctx *ctx, void *ud, const ms_optim_io *io, ms_tensor **w_next,
                    ms_tensor **state) {
  const learned *L = ud;
  ms_tensor *const *th = io->theta;
  chain c = {ctx, MS_OK, 0, {0}};
  ms_tensor *g = column(&c, io->gw), *w = column(&c, io->w);
  ms_tensor *m =
      bin(&c, MS_ADD, bin(&c, MS_MUL, io->state[0], L->beta), bin(&c, MS_MUL, g, L->omb));
  ms_tensor *v = bin(&c, MS_ADD, bin(&c, MS_MUL, io->state[1], L->beta),
                     bin(&c, MS_MUL, un(&c, MS_SQUARE, g), L->omb));
  ms_tensor *rs = un(&c, MS_RECIPROCAL, un(&c, MS_SQRT, bins(&c, MS_ADD, v, 1e-8)));
  ms_tensor *parts[6] = {g, w, m, v, rs, bin(&c, MS_MUL, m, rs)};
  ms_tensor *x = normalise(&c, cat1(&c, 6, parts));
  /* the step-count embedding is the same for every coordinate: it enters as a bias */
  double tf[NTIME];
  for (int i = 0; i < NTIME; i++) tf[i] = tanh((double)io->k / TIMESCALES[i]);
  int64_t tshape[2] = {1, NTIME};
  ms_tensor *hb = bin(&c, MS_ADD, mm(&c, constant(&c, 2, tshape, tf), th[MLP_W1T]), th[MLP_B1]);
  ms_tensor *h = un(&c, MS_RELU, bin(&c, MS_ADD, mm(&c, x, th[MLP_W1]), hb));
  ms_tensor *out = bin(&c, MS_ADD, mm(&c, h, th[MLP_W2]), th[MLP_B2]);
  int64_t d = ms_tensor_numel(io->w);
  ms_tensor *dir = reshape(&c, cols(&c, out, 0, 1), 1, &d);
  ms_tensor *s = reshape(&c, cols(&c, out, 1, 2), 1, &d);
  ms_tensor *step =
      bins(&c, MS_MUL, bin(&c, MS_MUL, dir, un(&c, MS_EXP, bins(&c, MS_MUL, s, L->o.exp_scale))),
           L->o.step_scale);
  *w_next = take(&c, bin(&c, MS_SUB, io->w, step));
  state[0] = take(&c, m);
  state[1] = take(&c, v);
  return finish_step(&c, w_next, state, 2);
}

/* ---- the LSTM optimizer ---- */

/* theta layout: per layer (wx, wh, b), then wout, bout */
static int lstm_nparams(int layers) { return 3 * layers + 2; }

static int lstm_init(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor *const *theta,
                     ms_tensor **state) {
  const learned *L = ud;
  (void)theta;
  int64_t shape[2] = {ms_tensor_numel(w), L->o.hidden};
  int st = MS_OK;
  for (int i = 0; !st && i < 2 * L->o.layers; i++) st = ms_tensor_zeros(ctx, 2, shape, &state[i]);
  return st;
}

/* (log|g| / p, sign g) where |g| >= e^-p, else (-1, e^p g): the magnitude on a log scale and
 * the sign separately, so one set of weights sees gradients of every size. */
static ms_tensor *preprocess(chain *c, ms_tensor *g) {
  ms_tensor *a = un(c, MS_ABS, g);
  ms_tensor *big = bins(c, MS_GE, a, exp(-LSTM_P));
  int64_t one = 1;
  double vals[2] = {1.0, -1.0};
  ms_tensor *k1 = constant(c, 1, &one, &vals[0]), *km1 = constant(c, 1, &one, &vals[1]);
  /* log of a where it is big, of 1 elsewhere: no -inf (nor NaN derivative) at g = 0 */
  ms_tensor *f1 = where(c, big, bins(c, MS_DIV, un(c, MS_LOG, where(c, big, a, k1)), LSTM_P), km1);
  ms_tensor *f2 = where(c, big, un(c, MS_SIGN, g), bins(c, MS_MUL, g, exp(LSTM_P)));
  ms_tensor *parts[2] = {f1, f2};
  return cat1(c, 2, parts);
}

/* One LSTM layer: from input x [d, n] and state (h, c) to the new (h, c). */
static void lstm_layer(chain *c, int H, ms_tensor *x, ms_tensor *h, ms_tensor *cs, ms_tensor *wx,
                       ms_tensor *wh, ms_tensor *b, ms_tensor **h_out, ms_tensor **c_out) {
  ms_tensor *z = bin(c, MS_ADD, bin(c, MS_ADD, mm(c, x, wx), mm(c, h, wh)), b);
  ms_tensor *ig = un(c, MS_SIGMOID, cols(c, z, 0, H));
  ms_tensor *fg = un(c, MS_SIGMOID, cols(c, z, H, 2 * H));
  ms_tensor *cg = un(c, MS_TANH, cols(c, z, 2 * H, 3 * H));
  ms_tensor *og = un(c, MS_SIGMOID, cols(c, z, 3 * H, 4 * H));
  *c_out = bin(c, MS_ADD, bin(c, MS_MUL, fg, cs), bin(c, MS_MUL, ig, cg));
  *h_out = bin(c, MS_MUL, og, un(c, MS_TANH, *c_out));
}

static int lstm_step(ms_ctx *ctx, void *ud, const ms_optim_io *io, ms_tensor **w_next,
                     ms_tensor **state) {
  const learned *L = ud;
  ms_tensor *const *th = io->theta;
  int H = L->o.hidden, layers = L->o.layers;
  chain c = {ctx, MS_OK, 0, {0}};
  ms_tensor *x = preprocess(&c, column(&c, io->gw));
  ms_tensor *hn[2] = {0}, *cn[2] = {0};
  for (int l = 0; l < layers; l++) {
    lstm_layer(&c, H, x, io->state[2 * l], io->state[2 * l + 1], th[3 * l], th[3 * l + 1],
               th[3 * l + 2], &hn[l], &cn[l]);
    x = hn[l];
  }
  int64_t d = ms_tensor_numel(io->w);
  ms_tensor *y = bin(&c, MS_ADD, mm(&c, x, th[3 * layers]), th[3 * layers + 1]);
  ms_tensor *step = bins(&c, MS_MUL, reshape(&c, y, 1, &d), L->o.step_scale);
  *w_next = take(&c, bin(&c, MS_ADD, io->w, step));
  for (int l = 0; l < layers; l++) {
    state[2 * l] = take(&c, hn[l]);
    state[2 * l + 1] = take(&c, cn[l]);
  }
  return finish_step(&c, w_next, state, 2 * layers);
}

/* ---- construction ---- */

static void learned_free(void *ud) {
  learned *L = ud;
  ms_tensor_release(L->beta);
  ms_tensor_release(L->omb);
  ms_ctx_dealloc(L->ctx, L, sizeof *L);
}

/* A [rows, cols] (cols = 0: [rows]) tensor of N(0, std^2) draws. */
static int normal(ms_ctx *ctx, ms_rng *rng, int64_t rows, int64_t ncol, double std,
                  ms_tensor **out) {
  int64_t shape[2] = {rows, ncol};
  return ms_tensor_randn(ctx, rng, ncol ? 2 : 1, shape, 0.0, std, out);
}

/* Names and shapes of the meta-parameters. */
typedef struct pspec {
  char name[16];
  int ndim;
  int64_t shape[2];
} pspec;

static int param_specs(learned_kind kind, const ms_learned_options *o, pspec *ps) {
  int H = o->hidden;
  if (kind == LEARNED_MLP) {
    ps[MLP_W1] = (pspec){"w1", 2, {MLP_NIN, H}};
    ps[MLP_W1T] = (pspec){"w1t", 2, {NTIME, H}};
    ps[MLP_B1] = (pspec){"b1", 1, {H, 0}};
    ps[MLP_W2] = (pspec){"w2", 2, {H, 2}};
    ps[MLP_B2] = (pspec){"b2", 1, {2, 0}};
    return MLP_NPARAMS;
  }
  for (int l = 0; l < o->layers; l++) {
    ps[3 * l] = (pspec){"", 2, {l == 0 ? 2 : H, 4 * H}};
    ps[3 * l + 1] = (pspec){"", 2, {H, 4 * H}};
    ps[3 * l + 2] = (pspec){"", 1, {4 * H, 0}};
    snprintf(ps[3 * l].name, sizeof ps[3 * l].name, "wx%d", l + 1);
    snprintf(ps[3 * l + 1].name, sizeof ps[3 * l + 1].name, "wh%d", l + 1);
    snprintf(ps[3 * l + 2].name, sizeof ps[3 * l + 2].name, "b%d", l + 1);
  }
  ps[3 * o->layers] = (pspec){"wout", 2, {H, 1}};
  ps[3 * o->layers + 1] = (pspec){"bout", 1, {1, 0}};
  return lstm_nparams(o->layers);
}

/* The seeded initial values (see learned.h). */
static int seeded_init(ms_ctx *ctx, learned_kind kind, const ms_learned_options *o, const pspec *ps,
                       int np, ms_tensor **init) {
  ms_rng rng;
  ms_rng_seed(&rng, o->seed);
  int H = o->hidden, st = MS_OK;
  if (kind == LEARNED_MLP) {
    if (!(st = normal(ctx, &rng, MLP_NIN, H, 0.5 / sqrt((double)MLP_NIN), &init[MLP_W1])) &&
        !(st = normal(ctx, &rng, NTIME, H, 0.5 / sqrt((double)NTIME), &init[MLP_W1T])) &&
        !(st = ms_tensor_zeros(ctx, 1, ps[MLP_B1].shape, &init[MLP_B1])) &&
        !(st = normal(ctx, &rng, H, 2, 0.01 / sqrt((double)H), &init[MLP_W2])))
      st = ms_tensor_zeros(ctx, 1, ps[MLP_B2].shape, &init[MLP_B2]);
    if (st) return st;
    /* descent-like: units 1 and 2 are relu(+-m(0.9)) and d_out = h_1 - h_2 = m(0.9) */
    double *w1 = ms_tensor_data(init[MLP_W1]), *w1t = ms_tensor_data(init[MLP_W1T]);
    double *w2 = ms_tensor_data(init[MLP_W2]);
    int m09 = 2 + 1; /* feature column of m at decay 0.9 */
    for (int u = 0; u < 2 && u < H; u++) {
      for (int r = 0; r < MLP_NIN; r++) w1[r * H + u] = 0;
      for (int r = 0; r < NTIME; r++) w1t[r * H + u] = 0;
      w1[m09 * H + u] = u == 0 ? 1.0 : -1.0;
      w2[u * 2 + 0] = u == 0 ? 1.0 : -1.0;
      w2[u * 2 + 1] = 0;
    }
    return MS_OK;
  }
  for (int i = 0; !st && i < np; i++) {
    const pspec *p = &ps[i];
    int is_bias = p->ndim == 1;
    if (is_bias) {
      st = ms_tensor_zeros(ctx, 1, p->shape, &init[i]);
      /* forget gates start open (bias 1), the usual LSTM initialisation */
      if (!st && i < 3 * o->layers)
        for (int64_t k = H; k < 2 * H; k++) ms_tensor_data(init[i])[k] = 1.0;
    } else {
      double std = i == 3 * o->layers ? 0.1 / sqrt((double)H) : 1.0 / sqrt((double)p->shape[0]);
      st = normal(ctx, &rng, p->shape[0], p->shape[1], std, &init[i]);
    }
  }
  return st;
}

static int check_options(ms_ctx *ctx, const char *fname, learned_kind kind,
                         const ms_learned_options *in, ms_learned_options *o) {
  *o = *in;
  o->theta = NULL;
  if (o->hidden == 0) o->hidden = kind == LEARNED_MLP ? 32 : 20;
  if (o->hidden < (kind == LEARNED_MLP ? 2 : 1) || o->hidden > 4096)
    return ms_ctx_fail(ctx, MS_EARG, "%s: option 'hidden' must be in [%d, 4096], got %d", fname,
                       kind == LEARNED_MLP ? 2 : 1, o->hidden);
  if (kind == LEARNED_LSTM) {
    if (o->layers == 0) o->layers = 2;
    if (o->layers != 1 && o->layers != 2)
      return ms_ctx_fail(ctx, MS_EARG, "%s: option 'layers' must be 1 or 2, got %d", fname,
                         o->layers);
  } else if (o->layers != 0) {
    return ms_ctx_fail(ctx, MS_EARG, "%s: option 'layers' applies to the LSTM optimizer only",
                       fname);
  }
  if (o->step_scale == 0) o->step_scale = kind == LEARNED_MLP ? 1e-3 : 0.1;
  if (!(o->step_scale > 0) || isinf(o->step_scale))
    return ms_ctx_fail(ctx, MS_EARG, "%s: option 'step_scale' must be finite and > 0, got %g",
                       fname, o->step_scale);
  if (kind == LEARNED_MLP) {
    if (o->exp_scale == 0) o->exp_scale = 1e-3;
    if (!(o->exp_scale > 0) || isinf(o->exp_scale))
      return ms_ctx_fail(ctx, MS_EARG, "%s: option 'exp_scale' must be finite and > 0, got %g",
                         fname, o->exp_scale);
  } else if (o->exp_scale != 0) {
    return ms_ctx_fail(ctx, MS_EARG, "%s: option 'exp_scale' applies to the MLP optimizer only",
                       fname);
  }
  if (o->batch < 0)
    return ms_ctx_fail(ctx, MS_EARG, "%s: option 'batch' must be >= 0, got %lld", fname,
                       (long long)o->batch);
  return MS_OK;
}

static int make(ms_ctx *ctx, learned_kind kind, const ms_learned_options *opts, ms_optim **out) {
  const char *fname = kind == LEARNED_MLP ? "optim.learned_mlp" : "optim.learned_lstm";
  char b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
  *out = NULL;
  ms_learned_options o;
  int st = check_options(ctx, fname, kind, opts, &o);
  if (st) return st;
  pspec ps[MS_OPTIM_MAXPARAMS];
  int np = param_specs(kind, &o, ps);
  ms_tensor *init[MS_OPTIM_MAXPARAMS] = {0};
  if (opts->theta) {
    for (int i = 0; !st && i < np; i++) {
      ms_tensor *t = opts->theta[i];
      int same = t && ms_tensor_ndim(t) == ps[i].ndim;
      for (int k = 0; same && k < ps[i].ndim; k++) same = ms_tensor_dim(t, k) == ps[i].shape[k];
      if (t == NULL)
        st = ms_ctx_fail(ctx, MS_EARG, "%s: option 'theta' has no entry %d ('%s')", fname, i + 1,
                         ps[i].name);
      else if (!same)
        st = ms_ctx_fail(ctx, MS_ESHAPE, "%s: meta-parameter '%s' must have shape %s, got %s",
                         fname, ps[i].name, ms_shape_str(ps[i].ndim, ps[i].shape, b1, sizeof b1),
                         ms_shape_str(ms_tensor_ndim(t), ms_tensor_shape(t), b2, sizeof b2));
      else
        st = ms_tensor_copy(ctx, t, &init[i]);
    }
  } else {
    st = seeded_init(ctx, kind, &o, ps, np, init);
  }
  learned *L = st ? NULL : ms_ctx_alloc(ctx, sizeof *L);
  if (!st && L == NULL) st = MS_ENOMEM;
  if (L) {
    memset(L, 0, sizeof *L);
    L->ctx = ctx;
    L->kind = kind;
    L->o = o;
    double omb[NDECAY];
    for (int i = 0; i < NDECAY; i++) omb[i] = 1 - DECAYS[i];
    int64_t shape[2] = {1, NDECAY};
    if (!(st = ms_tensor_from_data(ctx, 2, shape, DECAYS, &L->beta)))
      st = ms_tensor_from_data(ctx, 2, shape, omb, &L->omb);
  }
  if (!st) {
    ms_optim_def def;
    memset(&def, 0, sizeof def);
    def.name = kind == LEARNED_MLP ? "learned_mlp" : "learned_lstm";
    def.nparams = np;
    for (int i = 0; i < np; i++)
      def.params[i] = (ms_optim_param){ps[i].name, init[i], MS_PARAM_PLAIN, -INFINITY, INFINITY};
    def.nstate = kind == LEARNED_MLP ? 2 : 2 * o.layers;
    def.init = kind == LEARNED_MLP ? mlp_init : lstm_init;
    def.step = kind == LEARNED_MLP ? mlp_step : lstm_step;
    def.batch = o.batch;
    def.seed = o.batch_seed;
    def.free_ud = learned_free;
    def.ud = L;
    st = ms_optim_new(ctx, &def, out);
  }
  if (st && L) learned_free(L);
  for (int i = 0; i < MS_OPTIM_MAXPARAMS; i++) ms_tensor_release(init[i]);
  return st;
}

int ms_optim_learned_mlp(ms_ctx *ctx, const ms_learned_options *opts, ms_optim **out) {
  return make(ctx, LEARNED_MLP, opts, out);
}

int ms_optim_learned_lstm(ms_ctx *ctx, const ms_learned_options *opts, ms_optim **out) {
  return make(ctx, LEARNED_LSTM, opts, out);
}

static const learned *learned_of(const ms_optim *opt) {
  const learned *L = ms__optim_ud_if(opt, mlp_step);
  return L ? L : ms__optim_ud_if(opt, lstm_step);
}

const ms_learned_options *ms_learned_options_of(const ms_optim *opt) {
  const learned *L = learned_of(opt);
  return L ? &L->o : NULL;
}

/* ---- saving and loading (an archive, docs/format.md) ----
 * Entries: "format" = "metastep.learned_optimizer", "version" = 1, "kind" ("learned_mlp" or
 * "learned_lstm"), the options ("seed", "hidden", "layers", "batch", "batch_seed" integers;
 * "step_scale", "exp_scale" numbers) and "theta/<name>" for each meta-parameter. */

#define LEARNED_FORMAT "metastep.learned_optimizer"
#define LEARNED_VERSION 1

int ms_optim_save(ms_ctx *ctx, const ms_optim *opt, ms_tensor *const *theta, const char *path) {
  const learned *L = learned_of(opt);
  if (L == NULL)
    return ms_ctx_fail(ctx, MS_EARG,
                       "optim.save: optimizer '%s' is not a learned optimizer (learned_mlp or "
                       "learned_lstm)",
                       ms_optim_name(opt));
  if (path == NULL) return ms_ctx_fail(ctx, MS_EARG, "optim.save: path is NULL");
  int st = ms_optim_check_theta(ctx, opt, "optim.save", theta);
  if (st) return st;
  ms_archive *a = NULL;
  if ((st = ms_archive_new(ctx, &a))) return st;
  const ms_learned_options *o = &L->o;
  if (!(st = ms_archive_put_string(a, "format", LEARNED_FORMAT)) &&
      !(st = ms_archive_put_integer(a, "version", LEARNED_VERSION)) &&
      !(st = ms_archive_put_string(a, "kind", ms_optim_name(opt))) &&
      !(st = ms_archive_put_integer(a, "seed", (int64_t)o->seed)) &&
      !(st = ms_archive_put_integer(a, "hidden", o->hidden)) &&
      !(st = ms_archive_put_integer(a, "layers", o->layers)) &&
      !(st = ms_archive_put_number(a, "step_scale", o->step_scale)) &&
      !(st = ms_archive_put_number(a, "exp_scale", o->exp_scale)) &&
      !(st = ms_archive_put_integer(a, "batch", o->batch)))
    st = ms_archive_put_integer(a, "batch_seed", (int64_t)o->batch_seed);
  for (int i = 0; !st && i < ms_optim_nparams(opt); i++) {
    const ms_optim_param *p = ms_optim_param_at(opt, i);
    char name[64];
    snprintf(name, sizeof name, "theta/%.31s", p->name);
    st = ms_archive_put_tensor(a, name, theta && theta[i] ? theta[i] : p->init);
  }
  if (!st) st = ms_archive_save(a, path);
  ms_archive_free(a);
  return st;
}

/* Re-words an archive failure as optim.load's, naming the path. */
static int load_fail(ms_ctx *ctx, int st, const char *path) {
  char msg[400];
  snprintf(msg, sizeof msg, "%s", ms_ctx_error(ctx));
  return ms_ctx_fail(ctx, st, "optim.load: '%s': %s", path, msg);
}

int ms_optim_load(ms_ctx *ctx, const char *path, ms_optim **out) {
  *out = NULL;
  if (path == NULL) return ms_ctx_fail(ctx, MS_EARG, "optim.load: path is NULL");
  ms_archive *a = NULL;
  int st = ms_archive_load(ctx, path, &a);
  if (st) return st; /* the archive's message names the path */
  const char *format = NULL, *kind = NULL;
  int64_t version = 0, seed = 0, hidden = 0, layers = 0, batch = 0, batch_seed = 0;
  ms_learned_options o;
  memset(&o, 0, sizeof o);
  if (ms_archive_find(a, "format") != MS_ARCHIVE_STRING ||
      ms_archive_get_string(a, "format", &format, NULL) || strcmp(format, LEARNED_FORMAT) != 0) {
    st = ms_ctx_fail(ctx, MS_EARG, "optim.load: '%s' is not a saved learned optimizer", path);
    goto done;
  }
  if ((st = ms_archive_get_integer(a, "version", &version))) goto fail;
  if (version != LEARNED_VERSION) {
    st = ms_ctx_fail(ctx, MS_EARG,
                     "optim.load: '%s' has format version %lld, this build reads version %d", path,
                     (long long)version, LEARNED_VERSION);
    goto done;
  }
  if ((st = ms_archive_get_string(a, "kind", &kind, NULL)) ||
      (st = ms_archive_get_integer(a, "seed", &seed)) ||
      (st = ms_archive_get_integer(a, "hidden", &hidden)) ||
      (st = ms_archive_get_integer(a, "layers", &layers)) ||
      (st = ms_archive_get_number(a, "step_scale", &o.step_scale)) ||
      (st = ms_archive_get_number(a, "exp_scale", &o.exp_scale)) ||
      (st = ms_archive_get_integer(a, "batch", &batch)) ||
      (st = ms_archive_get_integer(a, "batch_seed", &batch_seed)))
    goto fail;
  learned_kind lk = strcmp(kind, "learned_mlp") == 0    ? LEARNED_MLP
                    : strcmp(kind, "learned_lstm") == 0 ? LEARNED_LSTM
                                                        : (learned_kind)0;
  if (lk == 0 || hidden < 1 || hidden > 4096 || layers < 0 || layers > 2) {
    st = ms_ctx_fail(ctx, MS_EARG, "optim.load: '%s': unknown kind '%s' or options out of range",
                     path, kind);
    goto done;
  }
  o.seed = (uint64_t)seed;
  o.hidden = (int)hidden;
  o.layers = (int)layers;
  o.batch = batch;
  o.batch_seed = (uint64_t)batch_seed;
  pspec ps[MS_OPTIM_MAXPARAMS];
  int np = param_specs(lk, &o, ps);
  ms_tensor *theta[MS_OPTIM_MAXPARAMS] = {0};
  for (int i = 0; !st && i < np; i++) {
    char name[64];
    snprintf(name, sizeof name, "theta/%.15s", ps[i].name);
    st = ms_archive_get_tensor(a, name, &theta[i]);
  }
  if (!st) {
    o.theta = theta;
    st = make(ctx, lk, &o, out);
  }
  for (int i = 0; i < MS_OPTIM_MAXPARAMS; i++) ms_tensor_release(theta[i]);
  if (st) goto fail;
  goto done;
fail:
  st = load_fail(ctx, st, path);
done:
  ms_archive_free(a);
  return st;
}
