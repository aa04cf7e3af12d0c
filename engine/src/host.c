/*
 * What a C host's own code plugs into: objectives written with raw loops, and optimizer steps
 * on the host's buffers.
 *
 * Objectives whose callbacks compute with raw loops (ms_objective_new_raw): each callback is
 * wrapped as a custom primitive whose derivative rules call the next callback up, so the
 * autodiff levels see through them as through a built-in objective:
 *   value(w)    derivative grad(w)        (vjp: gout * grad(w); jvp: grad(w) . dw)
 *   grad(w)     derivative H(w)           (vjp: hvp(w, gout), H symmetric; jvp: hvp(w, dw))
 *   hvp(w, v)   linear in v: hvp(w, .)    (its derivative in w, a third derivative, is refused)
 * and the rules apply the primitives again, so second derivatives through value are right.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "metastep/autodiff.h"
#include "metastep/linalg.h"
#include "metastep/ops.h"
#include "metastep/optim.h"

typedef struct raw {
  ms_objective_def def; /* the host's callbacks and ud */
  char name[64];
  ms_custom *value, *grad, *hvp;
} raw;

/* The host's callbacks read contiguous data. */
static int contiguous_in(ms_ctx *ctx, ms_tensor *const *in, int n, ms_tensor **c) {
  for (int i = 0; i < n; i++) c[i] = NULL;
  for (int i = 0; i < n; i++) {
    int st = ms_tensor_contiguous(ctx, in[i], &c[i]);
    if (st) {
      for (int j = 0; j < i; j++) ms_tensor_release(c[j]);
      return st;
    }
  }
  return MS_OK;
}

static int fwd_value(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor **out) {
  raw *r = ud;
  ms_tensor *c[1];
  int st = contiguous_in(ctx, in, 1, c);
  if (st) return st;
  st = r->def.value(ctx, r->def.ud, c[0], out);
  ms_tensor_release(c[0]);
  return st;
}

static int fwd_grad(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor **out) {
  raw *r = ud;
  ms_tensor *c[1];
  int st = contiguous_in(ctx, in, 1, c);
  if (st) return st;
  st = r->def.grad(ctx, r->def.ud, c[0], out);
  ms_tensor_release(c[0]);
  return st;
}

static int fwd_hvp(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor **out) {
  raw *r = ud;
  ms_tensor *c[2];
  int st = contiguous_in(ctx, in, 2, c);
  if (st) return st;
  st = r->def.hvp(ctx, r->def.ud, c[0], c[1], out);
  ms_tensor_release(c[0]);
  ms_tensor_release(c[1]);
  return st;
}

static int no_hvp(ms_ctx *ctx, const raw *r) {
  return ms_ctx_fail(ctx, MS_EARG,
                     "%s: second derivatives need the objective's hvp callback (none was given)",
                     r->name);
}

/* value: gin = gout * grad(w); tout = grad(w) . dw */
static int vjp_value(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor *out, ms_tensor *gout,
                     const int *need, ms_tensor **gin) {
  (void)out;
  raw *r = ud;
  if (!need[0]) return MS_OK;
  ms_tensor *g = NULL;
  int st = ms_custom_apply(ctx, r->grad, in, &g);
  if (!st) st = ms_binary(ctx, MS_MUL, gout, g, &gin[0]);
  ms_tensor_release(g);
  return st;
}

static int jvp_value(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor *const *tin,
                     ms_tensor *out, ms_tensor **tout) {
  (void)out;
  raw *r = ud;
  if (tin[0] == NULL) return ms_tensor_scalar(ctx, 0.0, tout);
  ms_tensor *g = NULL;
  int st = ms_custom_apply(ctx, r->grad, in, &g);
  if (!st) st = ms_dot(ctx, g, tin[0], tout);
  ms_tensor_release(g);
  return st;
}

/* grad: gin = H gout (H symmetric); tout = H dw */
static int vjp_grad(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor *out, ms_tensor *gout,
                    const int *need, ms_tensor **gin) {
  (void)out;
  raw *r = ud;
  if (!need[0]) return MS_OK;
  if (r->hvp == NULL) return no_hvp(ctx, r);
  ms_tensor *args[2] = {in[0], gout};
  return ms_custom_apply(ctx, r->hvp, args, &gin[0]);
}

static int jvp_grad(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor *const *tin,
                    ms_tensor *out, ms_tensor **tout) {
  (void)out;
  raw *r = ud;
  if (tin[0] == NULL) return ms_tensor_zeros(ctx, 1, &r->def.dim, tout);
  if (r->hvp == NULL) return no_hvp(ctx, r);
  ms_tensor *args[2] = {in[0], tin[0]};
  return ms_custom_apply(ctx, r->hvp, args, tout);
}

/* hvp(w, v): linear in v (gin_v = H gout), no derivative in w */
static int vjp_hvp(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor *out, ms_tensor *gout,
                   const int *need, ms_tensor **gin) {
  (void)out;
  raw *r = ud;
  if (need[0])
    return ms_ctx_fail(ctx, MS_EARG, "%s: third derivatives of a raw objective are not available",
                       r->name);
  ms_tensor *args[2] = {in[0], gout};
  return need[1] ? ms_custom_apply(ctx, r->hvp, args, &gin[1]) : MS_OK;
}

static int jvp_hvp(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor *const *tin,
                   ms_tensor *out, ms_tensor **tout) {
  (void)out;
  raw *r = ud;
  if (tin[0] != NULL)
    return ms_ctx_fail(ctx, MS_EARG, "%s: third derivatives of a raw objective are not available",
                       r->name);
  if (tin[1] == NULL) return ms_tensor_zeros(ctx, 1, &r->def.dim, tout);
  ms_tensor *args[2] = {in[0], tin[1]};
  return ms_custom_apply(ctx, r->hvp, args, tout);
}

/* The objective's callbacks: apply the primitives. */
static int obj_value(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  raw *r = ud;
  return ms_custom_apply(ctx, r->value, &w, out);
}

static int obj_grad(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  raw *r = ud;
  return ms_custom_apply(ctx, r->grad, &w, out);
}

static int obj_hvp(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor *v, ms_tensor **out) {
  raw *r = ud;
  ms_tensor *args[2] = {w, v};
  return ms_custom_apply(ctx, r->hvp, args, out);
}

static int obj_grad_batch(ms_ctx *ctx, void *ud, ms_tensor *w, int64_t n, const int64_t *idx,
                          ms_tensor **out) {
  raw *r = ud;
  ms_tensor *c = NULL;
  int st = ms_tensor_contiguous(ctx, w, &c);
  if (st) return st;
  st = r->def.grad_batch(ctx, r->def.ud, c, n, idx, out);
  ms_tensor_release(c);
  return st;
}

/* The objective's free_ud: the box holds the context it was allocated in. */
typedef struct raw_box {
  ms_ctx *ctx;
  raw r;
} raw_box;

static void box_free(void *ud) {
  raw *r = ud;
  raw_box *b = (raw_box *)((char *)r - offsetof(raw_box, r));
  ms_ctx *ctx = b->ctx;
  ms_custom_release(r->value);
  ms_custom_release(r->grad);
  ms_custom_release(r->hvp);
  if (r->def.free_ud) r->def.free_ud(r->def.ud);
  ms_ctx_dealloc(ctx, b, sizeof *b);
}

int ms_objective_new_raw(ms_ctx *ctx, const ms_objective_def *def, ms_objective **out) {
  *out = NULL;
  if (def->value == NULL || def->grad == NULL)
    return ms_ctx_fail(ctx, MS_EARG,
                       "ms_objective_new_raw: value and grad callbacks are required (got%s%s)",
                       def->value ? " value" : " no value", def->grad ? " and grad" : ", no grad");
  if (def->dim < 1)
    return ms_ctx_fail(ctx, MS_EARG, "ms_objective_new_raw: dim must be >= 1, got %lld",
                       (long long)def->dim);
  raw_box *b = ms_ctx_alloc(ctx, sizeof *b);
  if (b == NULL) return MS_ENOMEM;
  memset(b, 0, sizeof *b);
  b->ctx = ctx;
  raw *r = &b->r;
  r->def = *def;
  snprintf(r->name, sizeof r->name, "%s", def->name ? def->name : "objective");
  r->def.name = r->name;
  ms_custom_op op;
  memset(&op, 0, sizeof op);
  op.ud = r;
  op.name = r->name;
  int st;
  op.nin = 1, op.forward = fwd_value, op.vjp = vjp_value, op.jvp = jvp_value;
  if ((st = ms_custom_new(ctx, &op, &r->value))) goto fail;
  op.forward = fwd_grad, op.vjp = vjp_grad, op.jvp = jvp_grad;
  if ((st = ms_custom_new(ctx, &op, &r->grad))) goto fail;
  if (def->hvp) {
    op.nin = 2, op.forward = fwd_hvp, op.vjp = vjp_hvp, op.jvp = jvp_hvp;
    if ((st = ms_custom_new(ctx, &op, &r->hvp))) goto fail;
  }
  ms_objective_def od = *def;
  od.name = r->name;
  od.value = obj_value;
  od.grad = obj_grad;
  od.hvp = def->hvp ? obj_hvp : NULL;
  od.grad_batch = def->grad_batch ? obj_grad_batch : NULL;
  od.ud = r;
  od.free_ud = box_free;
  if ((st = ms_objective_new(ctx, &od, out))) goto fail;
  return MS_OK;
fail:
  ms_custom_release(r->value);
  ms_custom_release(r->grad);
  ms_custom_release(r->hvp);
  ms_ctx_dealloc(ctx, b, sizeof *b); /* the caller still owns def->ud */
  return st;
}

/* ---- stepping on the host's buffers ---- */

int ms_optim_state_step_buffer(ms_ctx *ctx, ms_optim_state *s, int64_t n, double *w, double fw,
                               const double *g) {
  if (n < 1 || w == NULL || g == NULL)
    return ms_ctx_fail(
        ctx, MS_EARG,
        "ms_optim_state_step_buffer: needs n >= 1 and buffers w and g, got n = %lld%s%s",
        (long long)n, w ? "" : ", w NULL", g ? "" : ", g NULL");
  ms_tensor *tw = NULL, *tg = NULL, *tf = NULL, *next = NULL;
  /* g is only read: the wrapper's const cast is safe, the engine never writes an input */
  int st = ms_tensor_wrap(ctx, w, 1, &n, &tw);
  if (!st) st = ms_tensor_wrap(ctx, (double *)(uintptr_t)g, 1, &n, &tg);
  if (!st) st = ms_tensor_scalar(ctx, fw, &tf);
  if (!st) st = ms_optim_state_step(ctx, s, tw, tf, tg, &next);
  if (!st) st = ms_tensor_read(ctx, next, w, n);
  ms_tensor_release(next);
  ms_tensor_release(tf);
  ms_tensor_release(tg);
  ms_tensor_release(tw);
  return st;
}
