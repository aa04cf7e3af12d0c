/*
 * Autodiff levels: recording on reverse tapes, tangent propagation on forward levels,
 * and the backward pass. See autodiff.h for the model.
 */
#include "ad.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ms_node {
  ms_prim prim;
  int nin;
  ms_attr attr;
  ms_tensor **in;   /* retained inputs (saved for the backward pass) */
  int64_t *in_node; /* node of each input on this tape, -1 if untracked here */
  uint64_t *in_ver; /* storage versions of the inputs when recorded */
  ms_tensor *out;   /* retained output */
  uint64_t out_ver;
} ms_node;

/* The nodes' input arrays come from chunks freed with the level: one bump per node instead
 * of a malloc and a free (a long unroll records hundreds of thousands of nodes). */
typedef struct ms_chunk {
  struct ms_chunk *next;
  size_t size, used; /* bytes of data after the header */
} ms_chunk;

struct ms_level {
  ms_ctx *ctx;
  uint64_t id;
  ms_ad_mode mode;
  int active;
  ms_node *nodes;
  int64_t n, cap;
  ms_chunk *chunks; /* newest first */
};

static void *level_bump(ms_ctx *ctx, ms_level *l, size_t n) {
  n = (n + 15) & ~(size_t)15;
  ms_chunk *c = l->chunks;
  if (c == NULL || c->size - c->used < n) {
    size_t size = n > 65536 ? n : 65536;
    c = ms_ctx_alloc(ctx, sizeof(ms_chunk) + size);
    if (c == NULL) return NULL;
    c->next = l->chunks;
    c->size = size;
    c->used = 0;
    l->chunks = c;
  }
  void *p = (char *)(c + 1) + c->used;
  c->used += n;
  return p;
}

/* ---- tracking entries on tensors ---- */

static struct ms_track *find_track(const ms_tensor *t, uint64_t level) {
  for (int i = 0; i < t->ntrack; i++)
    if (t->track[i].level == level) return (struct ms_track *)&t->track[i];
  return NULL;
}

/* Adds an entry, dropping entries of levels no longer active to make room. */
static struct ms_track *add_track(ms_ctx *ctx, ms_tensor *t, uint64_t level) {
  if (t->ntrack == MS_AD_MAXLEVELS) {
    int k = 0;
    for (int i = 0; i < t->ntrack; i++) {
      int live = 0;
      for (int j = 0; j < ctx->nlevels; j++) live |= ctx->levels[j]->id == t->track[i].level;
      if (live) {
        t->track[k++] = t->track[i];
      } else {
        ms_tensor_release(t->track[i].tangent);
      }
    }
    t->ntrack = k;
  }
  struct ms_track *e = &t->track[t->ntrack++];
  e->level = level;
  e->node = -1;
  e->tangent = NULL;
  return e;
}

void ms__track_clear(ms_tensor *t) {
  for (int i = 0; i < t->ntrack; i++) ms_tensor_release(t->track[i].tangent);
  t->ntrack = 0;
}

int ms__any_tracked(ms_ctx *ctx, int n, const ms_tensor *const *ts) {
  for (int j = 0; j < ctx->nlevels; j++)
    for (int i = 0; i < n; i++)
      if (find_track(ts[i], ctx->levels[j]->id)) return 1;
  return 0;
}

int ms__not_differentiable(ms_ctx *ctx, const char *what, int n, const ms_tensor *const *ts) {
  if (ctx->nlevels == 0 || !ms__any_tracked(ctx, n, ts)) return MS_OK;
  return ms_ctx_fail(ctx, MS_EARG,
                     "%s: not differentiable (an input is being traced by grad/jvp; "
                     "use stop_gradient if its derivative is not needed)",
                     what);
}

/* ---- levels ---- */

int ms_ad_push(ms_ctx *ctx, ms_ad_mode mode, ms_level **out) {
  *out = NULL;
  if (mode != MS_AD_REVERSE && mode != MS_AD_FORWARD)
    return ms_ctx_fail(ctx, MS_EARG, "ad_push: unknown mode %d", (int)mode);
  if (ctx->nlevels == MS_AD_MAXLEVELS)
    return ms_ctx_fail(ctx, MS_ESTATE, "ad_push: at most %d nested differentiation levels",
                       MS_AD_MAXLEVELS);
  ms_level *l = ms_ctx_alloc(ctx, sizeof *l);
  if (l == NULL) return MS_ENOMEM;
  memset(l, 0, sizeof *l);
  l->ctx = ctx;
  l->id = ++ctx->next_level_id;
  l->mode = mode;
  l->active = 1;
  ctx->levels[ctx->nlevels++] = l;
  *out = l;
  return MS_OK;
}

int ms_ad_pop(ms_ctx *ctx, ms_level *level) {
  if (!level->active) return ms_ctx_fail(ctx, MS_ESTATE, "ad_pop: level is not active");
  if (ctx->nlevels == 0 || ctx->levels[ctx->nlevels - 1] != level)
    return ms_ctx_fail(ctx, MS_ESTATE, "ad_pop: level is not the innermost one");
  ctx->nlevels--;
  level->active = 0;
  return MS_OK;
}

static void node_free(ms_ctx *ctx, ms_node *nd) {
  (void)ctx;
  for (int i = 0; i < nd->nin; i++) ms_tensor_release(nd->in[i]);
  ms_tensor_release(nd->out);
  if (nd->attr.custom) ms_custom_release(nd->attr.custom);
}

void ms_ad_free(ms_level *level) {
  if (level == NULL) return;
  ms_ctx *ctx = level->ctx;
  if (level->active) {
    /* pop it with every level pushed after it */
    int i = ctx->nlevels - 1;
    while (i >= 0 && ctx->levels[i] != level) i--;
    for (int j = i; j >= 0 && j < ctx->nlevels; j++) ctx->levels[j]->active = 0;
    if (i >= 0) ctx->nlevels = i;
  }
  for (int64_t k = 0; k < level->n; k++) node_free(ctx, &level->nodes[k]);
  ms_ctx_dealloc(ctx, level->nodes, (size_t)level->cap * sizeof(ms_node));
  while (level->chunks) {
    ms_chunk *next = level->chunks->next;
    ms_ctx_dealloc(ctx, level->chunks, sizeof(ms_chunk) + level->chunks->size);
    level->chunks = next;
  }
  ms_ctx_dealloc(ctx, level, sizeof *level);
}

int ms_ad_depth(const ms_ctx *ctx) { return ctx->nlevels; }
int64_t ms_ad_size(const ms_level *level) { return level->n; }

int ms_ad_is_traced(ms_ctx *ctx, const ms_tensor *t) {
  return ctx->nlevels > 0 && ms__any_tracked(ctx, 1, &t);
}

int ms_ad_is_tracked(const ms_level *level, const ms_tensor *t) {
  return find_track(t, level->id) != NULL;
}

/* Appends a node; takes references to inputs and output. */
static int record(ms_ctx *ctx, ms_level *l, ms_prim p, const ms_attr *attr, int nin,
                  ms_tensor *const *in, ms_tensor *out, int64_t *node) {
  if (l->n == l->cap) {
    int64_t cap = l->cap ? 2 * l->cap : 64;
    /* realloc: a long tape's node array moves by remapping, not by copying */
    ms_node *nodes = ms__ctx_realloc(ctx, l->nodes, (size_t)l->cap * sizeof(ms_node),
                                     (size_t)cap * sizeof(ms_node));
    if (nodes == NULL) return MS_ENOMEM;
    l->nodes = nodes;
    l->cap = cap;
  }
  ms_node *nd = &l->nodes[l->n];
  memset(nd, 0, sizeof *nd);
  if (nin > 0) {
    char *blk = level_bump(ctx, l, (size_t)nin * (sizeof(ms_tensor *) + 2 * sizeof(int64_t)));
    if (blk == NULL) return MS_ENOMEM;
    nd->in = (ms_tensor **)blk;
    nd->in_node = (int64_t *)(blk + (size_t)nin * sizeof(ms_tensor *));
    nd->in_ver = (uint64_t *)(nd->in_node + nin);
  }
  nd->prim = p;
  nd->nin = nin;
  if (attr) nd->attr = *attr;
  if (nd->attr.custom) ms_custom_retain(nd->attr.custom);
  for (int i = 0; i < nin; i++) {
    nd->in[i] = ms_tensor_retain(in[i]);
    struct ms_track *e = find_track(in[i], l->id);
    nd->in_node[i] = e ? e->node : -1;
    nd->in_ver[i] = in[i]->st->version;
  }
  nd->out = ms_tensor_retain(out);
  nd->out_ver = out->st->version;
  *node = l->n++;
  return MS_OK;
}

/* Records out = p(in) on every active level where an input is tracked, outermost first,
 * so a tangent rule at level i sees the tracking of outer levels already in place.
 * The input tangents live on the stack for the usual few inputs; a cat of many tensors
 * gets a heap array, allocated when a forward level first needs it. */
static int propagate(ms_ctx *ctx, ms_prim p, const ms_attr *attr, int nin, ms_tensor *const *in,
                     ms_tensor *out) {
  ms_tensor *tin_small[16], **tin = NULL;
  int depth = ctx->nlevels, st = MS_OK;
  for (int li = 0; li < depth && st == MS_OK; li++) {
    ms_level *l = ctx->levels[li];
    int any = 0, any_t = 0;
    for (int i = 0; i < nin && !any; i++) any = find_track(in[i], l->id) != NULL;
    if (!any) continue;
    if (l->mode == MS_AD_REVERSE) {
      int64_t node;
      st = record(ctx, l, p, attr, nin, in, out, &node);
      if (st == MS_OK) add_track(ctx, out, l->id)->node = node;
      continue;
    }
    const ms_prim_def *def = &ms__prims[p];
    if (def->jvp == NULL) {
      st = ms_ctx_fail(ctx, MS_EARG, "%s: no forward-mode rule", ms__prim_name(p, attr));
      break;
    }
    if (tin == NULL) {
      tin = nin <= 16 ? tin_small : ms_ctx_alloc(ctx, (size_t)nin * sizeof *tin);
      if (tin == NULL) {
        st = MS_ENOMEM;
        break;
      }
    }
    for (int i = 0; i < nin; i++) {
      struct ms_track *e = find_track(in[i], l->id);
      tin[i] = e ? e->tangent : NULL;
      any_t |= tin[i] != NULL;
    }
    if (!any_t) continue;
    ms_tensor *tout = NULL;
    ctx->nlevels = li; /* the rule is recorded on outer levels only */
    st = def->jvp(ctx, attr, in, tin, out, &tout);
    ctx->nlevels = depth;
    if (st || tout == NULL) continue;
    if (tout->ndim != out->ndim ||
        memcmp(tout->shape, out->shape, sizeof(int64_t) * (size_t)out->ndim)) {
      char b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
      /* format before releasing: the message reads tout's shape */
      st = ms_ctx_fail(ctx, MS_ESHAPE,
                       "%s: forward-mode rule returned shape %s for an output of shape %s",
                       ms__prim_name(p, attr), ms_shape_str(tout->ndim, tout->shape, b1, sizeof b1),
                       ms_shape_str(out->ndim, out->shape, b2, sizeof b2));
      ms_tensor_release(tout);
      break;
    }
    add_track(ctx, out, l->id)->tangent = tout;
  }
  if (tin != NULL && tin != tin_small) ms_ctx_dealloc(ctx, tin, (size_t)nin * sizeof *tin);
  return st;
}

/*
 * Check mode (ms_ctx_set_check_numerics): the output of a primitive whose inputs are all
 * finite must be finite too; the first one that is not fails, naming the primitive, the
 * first non-finite value and the input shapes. Inputs already non-finite propagate
 * silently: the primitive that produced them was reported (or they came from the caller).
 */
static int check_numerics(ms_ctx *ctx, ms_prim p, const ms_attr *attr, int nin,
                          ms_tensor *const *in, const ms_tensor *out) {
  /* a view computes nothing (and an expand may show 2^40 elements of a small storage) */
  for (int i = 0; i < nin; i++)
    if (ms_tensor_shares_storage(out, in[i])) return MS_OK;
  if (ms_tensor_all_finite(out)) return MS_OK;
  for (int i = 0; i < nin; i++)
    if (!ms_tensor_all_finite(in[i])) return MS_OK;
  const double *d = MS_TENSOR_DATA(out);
  double bad = NAN;
  int64_t at = 0;
  for (int64_t i = 0; i < out->numel; i++) {
    double v = d[ms__offset_of(out, i)];
    if (!isfinite(v)) {
      bad = v, at = i;
      break;
    }
  }
  char shapes[3 * MS_SHAPE_STRLEN + 16] = "";
  size_t used = 0;
  for (int i = 0; i < nin && i < 3; i++) {
    char b[MS_SHAPE_STRLEN];
    used += (size_t)snprintf(shapes + used, sizeof shapes - used, "%s%s",
                             i == 0 ? "" : (i == nin - 1 ? " and " : ", "),
                             ms_shape_str(in[i]->ndim, in[i]->shape, b, sizeof b));
    if (used >= sizeof shapes) break;
  }
  /* the element as a multi-index, "out[1,0]": the Lua layer shows it 1-based */
  int64_t idx[MS_MAXDIM] = {0};
  for (int d = out->ndim - 1; d >= 0; d--) {
    idx[d] = out->shape[d] ? at % out->shape[d] : 0;
    at = out->shape[d] ? at / out->shape[d] : 0;
  }
  char where[MS_SHAPE_STRLEN] = "out";
  if (out->ndim > 0) {
    ms_shape_str(out->ndim, idx, where + 3, sizeof where - 3); /* "[1,0]" */
  } else {
    snprintf(where, sizeof where, "its 0-d output");
  }
  return ms_ctx_fail(ctx, MS_ENUMERIC,
                     "check_numerics: %s produced %s at %s (0-based) from finite inputs of shape%s "
                     "%s",
                     ms__prim_name(p, attr), isnan(bad) ? "nan" : (bad > 0 ? "inf" : "-inf"), where,
                     nin > 1 ? "s" : "", nin > 0 ? shapes : "(none)");
}

int ms__apply(ms_ctx *ctx, ms_prim p, const ms_attr *attr, int nin, ms_tensor *const *in,
              ms_tensor **out) {
  *out = NULL;
  const ms_prim_def *def = &ms__prims[p];
  int depth = ctx->nlevels;
  ctx->nlevels = 0; /* forward functions compute; they never record */
  int st = def->forward(ctx, attr, in, out);
  ctx->nlevels = depth;
  if (st) return st;
  if (ctx->check_numerics && (st = check_numerics(ctx, p, attr, nin, in, *out))) {
    ms_tensor_release(*out);
    *out = NULL;
    return st;
  }
  if (depth == 0 || !ms__any_tracked(ctx, nin, (const ms_tensor *const *)in)) return MS_OK;
  /* A view op may hand back the very same tensor object: give it its own header so
   * tracking entries stay per-value. */
  for (int i = 0; i < nin; i++) {
    if (*out != in[i]) continue;
    ms_tensor *v, *o = *out;
    st = ms__tensor_view(ctx, o, o->ndim, o->shape, o->strides, o->offset, &v);
    ms_tensor_release(o);
    *out = v;
    if (st) return st;
    break;
  }
  st = propagate(ctx, p, attr, nin, in, *out);
  if (st) {
    ms_tensor_release(*out);
    *out = NULL;
  }
  return st;
}

/* ---- watching, gradients, tangents ---- */

int ms_ad_watch(ms_ctx *ctx, ms_level *level, ms_tensor *x, ms_tensor *tangent, ms_tensor **out) {
  *out = NULL;
  if (!level->active) return ms_ctx_fail(ctx, MS_ESTATE, "watch: level is not active");
  int li = ctx->nlevels - 1;
  while (li >= 0 && ctx->levels[li] != level) li--;
  if (tangent && (tangent->ndim != x->ndim ||
                  memcmp(tangent->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim))) {
    char b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
    return ms_ctx_fail(ctx, MS_ESHAPE, "watch: tangent has shape %s, point has shape %s",
                       ms_shape_str(tangent->ndim, tangent->shape, b1, sizeof b1),
                       ms_shape_str(x->ndim, x->shape, b2, sizeof b2));
  }
  /* identity on the levels outside this one, so outer derivatives flow through */
  int depth = ctx->nlevels;
  ctx->nlevels = li;
  int st = ms__apply(ctx, P_IDENTITY, NULL, 1, &x, out);
  ctx->nlevels = depth;
  if (st) return st;
  if (*out == x) {
    ms_tensor *v;
    st = ms__tensor_view(ctx, x, x->ndim, x->shape, x->strides, x->offset, &v);
    ms_tensor_release(*out);
    *out = v;
    if (st) return st;
  }
  /* drop any stale entry for this level (cannot exist: level ids are fresh) */
  if (level->mode == MS_AD_REVERSE) {
    int64_t node;
    st = record(ctx, level, P_LEAF, NULL, 0, NULL, *out, &node);
    if (st == MS_OK) add_track(ctx, *out, level->id)->node = node;
  } else if (tangent) {
    /* Made contiguous with the differentiable op, recorded on the outer levels: a tangent
     * may itself depend on an outer level's variables (reverse over forward), and the raw
     * copy of a strided tangent would cut that dependence. */
    ms_tensor *t = NULL;
    ctx->nlevels = li;
    st = ms_tensor_contiguous(ctx, tangent, &t);
    ctx->nlevels = depth;
    if (st == MS_OK) add_track(ctx, *out, level->id)->tangent = t;
  } else {
    st = ms_tensor_zeros(ctx, x->ndim, x->shape, &tangent);
    if (st == MS_OK) add_track(ctx, *out, level->id)->tangent = tangent;
  }
  if (st) {
    ms_tensor_release(*out);
    *out = NULL;
  }
  return st;
}

static int same_shape(const ms_tensor *a, const ms_tensor *b) {
  return a->ndim == b->ndim && memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) == 0;
}

/* Adds g into acc[k] (differentiably: the sum is recorded on the outer levels). */
static int accumulate(ms_ctx *ctx, ms_tensor **acc, ms_tensor *g) {
  if (*acc == NULL) {
    *acc = g;
    return MS_OK;
  }
  ms_tensor *sum;
  int st = ms_binary(ctx, MS_ADD, *acc, g, &sum);
  ms_tensor_release(g);
  if (st) return st;
  ms_tensor_release(*acc);
  *acc = sum;
  return MS_OK;
}

int ms_ad_gradient(ms_ctx *ctx, ms_level *tape, ms_tensor *y, ms_tensor *seed, int n,
                   ms_tensor *const *xs, ms_tensor **grads) {
  char b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
  for (int i = 0; i < n; i++) grads[i] = NULL;
  if (tape->mode != MS_AD_REVERSE)
    return ms_ctx_fail(ctx, MS_EARG, "gradient: level is a forward-mode level, not a tape");
  if (tape->active)
    return ms_ctx_fail(ctx, MS_ESTATE, "gradient: the tape is still recording (pop it first)");
  if (seed == NULL && y->numel != 1)
    return ms_ctx_fail(ctx, MS_ESHAPE,
                       "gradient: the function must return a scalar (one element), got shape %s",
                       ms_shape_str(y->ndim, y->shape, b1, sizeof b1));
  if (seed && !same_shape(seed, y))
    return ms_ctx_fail(ctx, MS_ESHAPE, "gradient: seed has shape %s, output has shape %s",
                       ms_shape_str(seed->ndim, seed->shape, b1, sizeof b1),
                       ms_shape_str(y->ndim, y->shape, b2, sizeof b2));
  int st = MS_OK;
  struct ms_track *ye = find_track(y, tape->id);
  int64_t top = ye ? ye->node : -1;
  ms_tensor **g = NULL;
  char *keep = NULL;
  /* Per-node scratch for the rules' need flags and input gradients: on the stack for the
   * usual few inputs, on the heap (sized by the widest node, e.g. a cat of many tensors)
   * otherwise. */
  int need_small[16], *need = need_small, maxin = 0;
  ms_tensor *gin_small[16], **gin = gin_small;
  if (top >= 0) {
    for (int64_t k = 0; k <= top; k++)
      if (tape->nodes[k].nin > maxin) maxin = tape->nodes[k].nin;
    if (maxin > 16) {
      need = ms_ctx_alloc(ctx, (size_t)maxin * sizeof *need);
      gin = ms_ctx_alloc(ctx, (size_t)maxin * sizeof *gin);
      if (need == NULL || gin == NULL) {
        st = MS_ENOMEM;
        goto done;
      }
    }
    g = ms_ctx_alloc(ctx, (size_t)(top + 1) * sizeof *g);
    if (g) memset(g, 0, (size_t)(top + 1) * sizeof *g); /* before any goto done: it is released */
    keep = ms_ctx_alloc(ctx, (size_t)(top + 1));
    if (g == NULL || keep == NULL) {
      st = MS_ENOMEM;
      goto done;
    }
    memset(keep, 0, (size_t)(top + 1));
    for (int i = 0; i < n; i++) {
      struct ms_track *e = find_track(xs[i], tape->id);
      if (e && e->node <= top) keep[e->node] = 1;
    }
    if (seed) {
      g[top] = ms_tensor_retain(seed);
    } else {
      st = ms_tensor_ones(ctx, y->ndim, y->shape, &g[top]);
      if (st) goto done;
    }
    for (int64_t k = top; k >= 0; k--) {
      ms_node *nd = &tape->nodes[k];
      if (g[k] == NULL || nd->prim == P_LEAF) continue;
      if ((st = ms_ctx_check_interrupt(ctx, "gradient"))) goto done;
      const ms_prim_def *def = &ms__prims[nd->prim];
      int any = 0;
      for (int i = 0; i < nd->nin; i++) {
        need[i] = nd->in_node[i] >= 0;
        any |= need[i];
        gin[i] = NULL;
        if (nd->in[i]->st->version != nd->in_ver[i]) {
          st = ms_ctx_fail(ctx, MS_ESTATE,
                           "gradient: input %d of '%s' (step %lld of the tape) was modified in "
                           "place after being saved (version %llu, saved at %llu)",
                           i + 1, ms__prim_name(nd->prim, &nd->attr), (long long)k + 1,
                           (unsigned long long)nd->in[i]->st->version,
                           (unsigned long long)nd->in_ver[i]);
          goto done;
        }
      }
      if (nd->out->st->version != nd->out_ver) {
        st = ms_ctx_fail(ctx, MS_ESTATE,
                         "gradient: the output of '%s' (step %lld of the tape) was modified in "
                         "place after being saved",
                         ms__prim_name(nd->prim, &nd->attr), (long long)k + 1);
        goto done;
      }
      if (!any) continue;
      if (def->vjp == NULL) {
        st = ms_ctx_fail(ctx, MS_EARG, "gradient: '%s' has no reverse-mode rule",
                         ms__prim_name(nd->prim, &nd->attr));
        goto done;
      }
      st = def->vjp(ctx, &nd->attr, nd->in, nd->out, g[k], need, gin);
      if (st) {
        for (int i = 0; i < nd->nin; i++) ms_tensor_release(gin[i]);
        goto done;
      }
      for (int i = 0; i < nd->nin; i++) {
        if (gin[i] == NULL) continue;
        if (!need[i]) { /* a rule may compute more than asked: drop it, keep the others */
          ms_tensor_release(gin[i]);
          gin[i] = NULL;
          continue;
        }
        if (!same_shape(gin[i], nd->in[i])) {
          st = ms_ctx_fail(ctx, MS_ESHAPE,
                           "gradient: the reverse-mode rule of '%s' returned shape %s for input "
                           "%d of shape %s",
                           ms__prim_name(nd->prim, &nd->attr),
                           ms_shape_str(gin[i]->ndim, gin[i]->shape, b1, sizeof b1), i + 1,
                           ms_shape_str(nd->in[i]->ndim, nd->in[i]->shape, b2, sizeof b2));
          for (int j = i; j < nd->nin; j++) ms_tensor_release(gin[j]);
          goto done;
        }
        st = accumulate(ctx, &g[nd->in_node[i]], gin[i]);
        gin[i] = NULL;
        if (st) {
          for (int j = i + 1; j < nd->nin; j++) ms_tensor_release(gin[j]);
          goto done;
        }
      }
      if (!keep[k]) {
        ms_tensor_release(g[k]);
        g[k] = NULL;
      }
    }
  }
  for (int i = 0; i < n; i++) {
    struct ms_track *e = find_track(xs[i], tape->id);
    if (e && e->node <= top && g[e->node]) {
      grads[i] = ms_tensor_retain(g[e->node]);
    } else if ((st = ms_tensor_zeros(ctx, xs[i]->ndim, xs[i]->shape, &grads[i]))) {
      goto done;
    }
  }
done:
  if (g) {
    for (int64_t k = 0; k <= top; k++) ms_tensor_release(g[k]);
    ms_ctx_dealloc(ctx, g, (size_t)(top + 1) * sizeof *g);
  }
  if (keep) ms_ctx_dealloc(ctx, keep, (size_t)(top + 1));
  if (need != need_small) ms_ctx_dealloc(ctx, need, (size_t)maxin * sizeof *need);
  if (gin != gin_small) ms_ctx_dealloc(ctx, gin, (size_t)maxin * sizeof *gin);
  if (st) {
    for (int i = 0; i < n; i++) {
      ms_tensor_release(grads[i]);
      grads[i] = NULL;
    }
  }
  return st;
}

int ms_ad_tangent(ms_ctx *ctx, ms_level *level, ms_tensor *y, ms_tensor **out) {
  *out = NULL;
  if (level->mode != MS_AD_FORWARD)
    return ms_ctx_fail(ctx, MS_EARG, "tangent: level is a reverse tape, not a forward level");
  struct ms_track *e = find_track(y, level->id);
  if (e && e->tangent) {
    *out = ms_tensor_retain(e->tangent);
    return MS_OK;
  }
  return ms_tensor_zeros(ctx, y->ndim, y->shape, out);
}

int ms_stop_gradient(ms_ctx *ctx, ms_tensor *x, ms_tensor **out) {
  return ms__tensor_view(ctx, x, x->ndim, x->shape, x->strides, x->offset, out);
}

/* ---- custom primitives ---- */

struct ms_custom {
  ms_ctx *ctx;
  int refcount;
  ms_custom_op def;
  char name[64];
};

int ms_custom_new(ms_ctx *ctx, const ms_custom_op *def, ms_custom **out) {
  *out = NULL;
  if (def->forward == NULL)
    return ms_ctx_fail(ctx, MS_EARG, "custom primitive: a forward function is required");
  if (def->nin < 1 || def->nin > 16)
    return ms_ctx_fail(ctx, MS_EARG, "custom primitive: nin must be in 1..16, got %d", def->nin);
  ms_custom *op = ms_ctx_alloc(ctx, sizeof *op);
  if (op == NULL) return MS_ENOMEM;
  op->ctx = ctx;
  op->refcount = 1;
  op->def = *def;
  snprintf(op->name, sizeof op->name, "%s", def->name ? def->name : "custom");
  op->def.name = op->name;
  *out = op;
  return MS_OK;
}

ms_custom *ms_custom_retain(ms_custom *op) {
  if (op) op->refcount++;
  return op;
}

void ms_custom_release(ms_custom *op) {
  if (op == NULL || --op->refcount > 0) return;
  if (op->def.free_ud) op->def.free_ud(op->def.ud);
  ms_ctx_dealloc(op->ctx, op, sizeof *op);
}

const char *ms__custom_name(const ms_attr *attr) { return attr->custom->name; }

int ms__custom_forward(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out) {
  ms_custom *op = attr->custom;
  int st = op->def.forward(ctx, op->def.ud, in, out);
  if (st == MS_OK && *out == NULL)
    st = ms_ctx_fail(ctx, MS_ECALLBACK, "%s: forward returned no tensor", op->name);
  return st;
}

int ms__custom_vjp(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                   ms_tensor *gout, const int *need, ms_tensor **gin) {
  ms_custom *op = attr->custom;
  if (op->def.vjp == NULL)
    return ms_ctx_fail(ctx, MS_EARG, "%s: custom primitive has no VJP rule", op->name);
  return op->def.vjp(ctx, op->def.ud, in, out, gout, need, gin);
}

int ms__custom_jvp(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *const *tin,
                   ms_tensor *out, ms_tensor **tout) {
  ms_custom *op = attr->custom;
  if (op->def.jvp == NULL)
    return ms_ctx_fail(ctx, MS_EARG, "%s: custom primitive has no JVP rule", op->name);
  return op->def.jvp(ctx, op->def.ud, in, tin, out, tout);
}

int ms_custom_apply(ms_ctx *ctx, ms_custom *op, ms_tensor *const *in, ms_tensor **out) {
  ms_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.custom = op;
  return ms__apply(ctx, P_CUSTOM, &attr, op->def.nin, in, out);
}

/* ---- one-call gradient for hosts ---- */

int ms_grad(ms_ctx *ctx, int (*f)(ms_ctx *ctx, void *ud, ms_tensor *x, ms_tensor **y), void *ud,
            ms_tensor *x, ms_tensor **value, ms_tensor **grad) {
  if (value) *value = NULL;
  *grad = NULL;
  if (f == NULL) return ms_ctx_fail(ctx, MS_EARG, "grad: the function is NULL");
  ms_level *tape = NULL;
  ms_tensor *xw = NULL, *y = NULL;
  int st = ms_ad_push(ctx, MS_AD_REVERSE, &tape);
  if (st) return st;
  if (!(st = ms_ad_watch(ctx, tape, x, NULL, &xw))) {
    st = f(ctx, ud, xw, &y);
    if (!st && y == NULL)
      st = ms_ctx_fail(ctx, MS_ECALLBACK, "grad: the function returned no tensor");
  }
  int pst = ms_ad_pop(ctx, tape);
  if (!st) st = pst;
  if (!st) st = ms_ad_gradient(ctx, tape, y, NULL, 1, &xw, grad);
  if (!st && value) *value = ms_tensor_retain(y);
  ms_tensor_release(y);
  ms_tensor_release(xw);
  ms_ad_free(tape);
  return st;
}
