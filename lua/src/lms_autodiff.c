/*
 * Lua bindings of the autodiff engine: levels (tapes and forward levels) as userdata,
 * custom primitives whose rules are Lua functions, and the loss primitives. The
 * functional API (grad, jvp, vjp, hvp, check_grad) is Lua code in metastep/autodiff.lua.
 *
 * Rules kept (see lms_tensor.c): result boxes are created before the engine allocates, and
 * raw pointers are fetched from their boxes only after the binding's last Lua allocation and
 * the last call that can run Lua code (a finalizer or metamethod may close any tensor). The
 * engine calls that run Lua rules (custom_call, level:gradient) retain what they pass, since
 * a rule may close those tensors, release the primitive or free the level.
 *
 * Levels hidden by the engine. While it runs a custom primitive's forward rule the engine
 * hides every level (it sets the context's level count to 0), and while it runs a jvp rule
 * it hides the level being propagated and those inside it. A level pushed, popped or freed
 * from Lua meanwhile would overwrite or leave dangling the engine's pointers to the hidden
 * levels. So inside those rules ad_push and level:pop raise, and freeing a level that may be
 * hidden is deferred until the outermost custom_call returns.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lms.h"

#define LMS_LEVEL "metastep.Level"
#define LMS_CUSTOM "metastep.Custom"

/* ---- per-state bookkeeping: hidden levels and deferred frees ---- */

static const char *const ADSTATE_KEY = "metastep.adstate";

typedef struct adstate {
  int hidden;      /* forward/jvp rules running while the engine hides levels */
  int apply_depth; /* ms_ad_depth when the innermost custom_call started */
} adstate;

/* The levels whose free was deferred are light userdata in the adstate's user value. */
static void flush_deferred(lua_State *L, int adidx) {
  lua_getiuservalue(L, adidx, 1);
  for (lua_Integer i = (lua_Integer)lua_rawlen(L, -1); i >= 1; i--) {
    lua_rawgeti(L, -1, i);
    ms_level *lv = lua_touserdata(L, -1);
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_rawseti(L, -2, i);
    ms_ad_free(lv);
  }
  lua_pop(L, 1);
}

static int adstate_gc(lua_State *L) {
  flush_deferred(L, 1);
  return 0;
}

/* Pushes the adstate userdata (created by lms_open_autodiff) and returns it. */
static adstate *pushadstate(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, ADSTATE_KEY);
  return lua_touserdata(L, -1);
}

static adstate *getadstate(lua_State *L) {
  adstate *ad = pushadstate(L);
  lua_pop(L, 1); /* anchored in the registry */
  return ad;
}

/* Nonzero while a custom primitive's forward or jvp rule runs with levels hidden: engine
 * calls that push levels of their own (an objective's derived grad or hvp) must not run. */
int lms_ad_hiding(lua_State *L) {
  adstate *ad = getadstate(L);
  return ad != NULL && ad->hidden > 0;
}

/* ---- levels ---- */

typedef struct levelbox {
  ms_level *lv;
  int busy;   /* level:gradient calls running on this level (their rules may free it) */
  int doomed; /* freed while busy: released when the last of those calls returns */
  int pushed; /* pushed and not popped through this box (the engine may have popped it) */
} levelbox;

static levelbox *checklevel(lua_State *L, int arg) {
  levelbox *b = luaL_checkudata(L, arg, LMS_LEVEL);
  if (b->lv == NULL || b->doomed) luaL_argerror(L, arg, "level has been freed");
  return b;
}

/* Frees b's level now, or later if it may be one of the levels the engine hides. */
static void release_level(lua_State *L, levelbox *b) {
  adstate *ad = getadstate(L);
  if (b->pushed && ad != NULL && ad->hidden > 0) {
    pushadstate(L);
    lua_getiuservalue(L, -1, 1);
    lua_pushlightuserdata(L, b->lv);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1); /* may raise: b still owns lv */
    lua_pop(L, 2);
    b->lv = NULL;
    return;
  }
  ms_level *lv = b->lv;
  b->lv = NULL;
  ms_ad_free(lv);
}

static int level_free(lua_State *L) {
  levelbox *b = luaL_checkudata(L, 1, LMS_LEVEL);
  if (b->lv == NULL || b->doomed) return 0;
  if (b->busy) {
    b->doomed = 1;
    return 0;
  }
  release_level(L, b);
  return 0;
}

static int l_ad_push(lua_State *L) {
  static const char *const modes[] = {"reverse", "forward", NULL};
  int m = luaL_checkoption(L, 1, "reverse", modes);
  if (lms_ad_hiding(L))
    return luaL_error(L,
                      "ad_push: not allowed inside the forward or jvp rule of a custom "
                      "primitive applied while levels are active");
  ms_ctx *ctx = lms_ctx(L);
  levelbox *box = lua_newuserdatauv(L, sizeof *box, 0);
  memset(box, 0, sizeof *box);
  luaL_setmetatable(L, LMS_LEVEL);
  if (ms_ad_push(ctx, m == 0 ? MS_AD_REVERSE : MS_AD_FORWARD, &box->lv) != MS_OK)
    return lms_error(L);
  box->pushed = 1;
  return 1;
}

static int level_pop(lua_State *L) {
  levelbox *b = checklevel(L, 1);
  if (lms_ad_hiding(L))
    return luaL_error(L,
                      "pop: not allowed inside the forward or jvp rule of a custom "
                      "primitive applied while levels are active");
  if (ms_ad_pop(lms_ctx(L), b->lv) != MS_OK) return lms_error(L);
  b->pushed = 0;
  return 0;
}

static int level_watch(lua_State *L) {
  checklevel(L, 1);
  lua_settop(L, 3);
  lms_checktensorish(L, 2); /* a number becomes a 0-d tensor in slot 2 */
  if (!lua_isnil(L, 3)) lms_checktensor(L, 3);
  ms_ctx *ctx = lms_ctx(L);
  ms_tensor **box = lms_newbox(L);
  ms_level *lv = checklevel(L, 1)->lv;
  ms_tensor *x = lms_checktensor(L, 2);
  ms_tensor *v = lua_isnil(L, 3) ? NULL : lms_checktensor(L, 3);
  return lms_result(L, ms_ad_watch(ctx, lv, x, v, box), 1);
}

static int level_is_tracked(lua_State *L) {
  levelbox *b = checklevel(L, 1);
  lua_pushboolean(L, ms_ad_is_tracked(b->lv, lms_checktensor(L, 2)));
  return 1;
}

static int level_size(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)ms_ad_size(checklevel(L, 1)->lv));
  return 1;
}

/*
 * level:gradient(y, {x1, x2, ...} [, seed]) -> {g1, g2, ...}. The xs may be a proxy whose
 * __len and __index run Lua code, so they are first anchored in a fresh table, every
 * allocation is made, and only then are the pointers read.
 */
static int level_gradient(lua_State *L) {
  checklevel(L, 1);
  lms_checktensor(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  if (!lua_isnoneornil(L, 4)) lms_checktensor(L, 4);
  lua_settop(L, 4);
  lua_Integer len = luaL_len(L, 3);
  if (len < 0 || len > INT_MAX / (lua_Integer)sizeof(ms_tensor **))
    return luaL_argerror(L, 3,
                         lua_pushfstring(L, "expected a table of tensors, got %I elements", len));
  int n = (int)len;
  lua_createtable(L, n, 0); /* 5: anchors the xs */
  for (int i = 1; i <= n; i++) {
    lua_geti(L, 3, i);
    lua_rawseti(L, 5, i);
  }
  /* result boxes first, so no tensor is ever unowned when an error is raised */
  lua_createtable(L, n, 0); /* 6: the results */
  ms_tensor ***boxes = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *boxes, 0);
  for (int i = 0; i < n; i++) {
    boxes[i] = lms_newbox(L);
    lua_rawseti(L, 6, i + 1);
  }
  ms_tensor **xs = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *xs, 0);
  ms_tensor **grads = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *grads, 0);
  ms_ctx *ctx = lms_ctx(L);
  /* no allocation from here on: the pointers stay valid until the engine call */
  levelbox *lb = checklevel(L, 1);
  ms_tensor *y = lms_checktensor(L, 2);
  ms_tensor *seed = lua_isnil(L, 4) ? NULL : lms_checktensor(L, 4);
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, 5, i + 1);
    ms_tensor **xb = luaL_testudata(L, -1, LMS_TENSOR);
    if (xb != NULL && *xb == NULL)
      return luaL_argerror(L, 3, lua_pushfstring(L, "element %d: tensor has been released", i + 1));
    if (xb == NULL)
      return luaL_argerror(
          L, 3,
          lua_pushfstring(L, "element %d must be a tensor, got %s", i + 1, luaL_typename(L, -1)));
    xs[i] = *xb;
    lua_pop(L, 1); /* anchored in table 5 */
  }
  /* The vjp rules of custom primitives run Lua code that may close these or free the tape. */
  lms_entry e;
  lms_enter(L, &e);
  lms_hold_tensor(&e, y);
  lms_hold_tensor(&e, seed);
  lms_hold_tensors(&e, n, xs);
  lb->busy++;
  int st = ms_ad_gradient(ctx, lb->lv, y, seed, n, xs, grads);
  lb->busy--;
  lms_leave(&e);
  if (st == MS_OK)
    for (int i = 0; i < n; i++) *boxes[i] = grads[i];
  if (lb->busy == 0 && lb->doomed) { /* freed by a rule: release it now */
    lb->doomed = 0;
    release_level(L, lb);
  }
  lua_settop(L, 6);
  return lms_result(L, st, 1);
}

static int level_tangent(lua_State *L) {
  checklevel(L, 1);
  lms_checktensor(L, 2);
  lua_settop(L, 2);
  ms_ctx *ctx = lms_ctx(L);
  ms_tensor **box = lms_newbox(L);
  ms_level *lv = checklevel(L, 1)->lv;
  ms_tensor *y = lms_checktensor(L, 2);
  return lms_result(L, ms_ad_tangent(ctx, lv, y, box), 1);
}

static int l_ad_depth(lua_State *L) {
  lua_pushinteger(L, ms_ad_depth(lms_ctx(L)));
  return 1;
}

/* ---- loss and structural primitives ---- */

static int l_stop_gradient(lua_State *L) {
  lua_settop(L, 1);
  ms_ctx *ctx = lms_ctx(L);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *x = lms_checktensor(L, 1);
  return lms_result(L, ms_stop_gradient(ctx, x, box), 1);
}

static int l_sum_to(lua_State *L) {
  lms_checktensor(L, 1);
  int64_t shape[MS_MAXDIM];
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  int nd = lms_checkshape(L, 2, shape); /* may run __len/__index: before x is fetched */
  ms_ctx *ctx = lms_ctx(L);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *x = lms_checktensor(L, 1);
  return lms_result(L, ms_sum_to(ctx, x, nd, shape, box), 1);
}

static int l_log_softmax(lua_State *L) {
  int nd = ms_tensor_ndim(lms_checktensor(L, 1));
  lua_Integer d = luaL_optinteger(L, 2, -1);
  if (nd == 0) return luaL_argerror(L, 1, "expected at least a 1-d tensor, got a 0-d tensor");
  if (d == 0 || d > nd || d < -nd)
    return luaL_argerror(L, 2,
                         lua_pushfstring(L, "dimension %I out of range for %d-d tensor", d, nd));
  lua_settop(L, 2);
  ms_ctx *ctx = lms_ctx(L);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *x = lms_checktensor(L, 1);
  return lms_result(L, ms_log_softmax(ctx, x, d > 0 ? (int)d - 1 : (int)d, box), 1);
}

/* softmax_xent(logits [n,k], labels [n] holding 1-based class indices) -> losses [n] */
static int l_softmax_xent(lua_State *L) {
  lms_checktensor(L, 1);
  lms_checktensor(L, 2);
  lua_settop(L, 2);
  ms_ctx *ctx = lms_ctx(L);
  ms_tensor **tmp = lms_newbox(L);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *logits = lms_checktensor(L, 1);
  ms_tensor *labels = lms_checktensor(L, 2);
  if (ms_binary_scalar(ctx, MS_SUB, labels, 1.0, 0, tmp) != MS_OK) return lms_error(L);
  int st = ms_softmax_xent(ctx, logits, *tmp, box);
  double c;
  long long i, k;
  if (st == MS_EINDEX &&
      sscanf(ms_ctx_error(ctx),
             "softmax_xent: label %lg of example %lld is not a class index in 0..%lld", &c, &i,
             &k) == 3) {
    /* the engine saw 0-based labels and examples */
    char label[32];
    snprintf(label, sizeof label, "%g", c + 1);
    ms_ctx_clear_error(ctx);
    return luaL_error(L, "softmax_xent: label %s of example %I is not a class index in 1..%I",
                      label, (lua_Integer)i + 1, (lua_Integer)k + 1);
  }
  return lms_result(L, st, 1);
}

/* ---- custom primitives with Lua rules ---- */

typedef struct lcustom {
  int forward, vjp, jvp; /* registry references (LUA_NOREF when absent or released) */
  int nin;
  char name[64];
} lcustom;

typedef struct ruleargs {
  int nargs;
  ms_tensor *const *args;
} ruleargs;

/* Pushes a rule's arguments as tensors (run protected by lms_callback). */
static int push_rule_args(lua_State *L, void *ud) {
  const ruleargs *ra = ud;
  luaL_checkstack(L, ra->nargs + 1, "too many arguments for a custom rule");
  for (int i = 0; i < ra->nargs; i++) lms_pushref(L, ra->args[i]);
  return ra->nargs;
}

/* Calls rule ref with args as tensors. On success its nres results are at top + 1 ...
 * (top is the stack top on entry, which the caller restores). Callbacks run on the thread
 * that entered the engine (custom_call, level_gradient set it for their engine call only,
 * because a rule may apply a custom primitive from a coroutine that is finished and
 * collected by the time the engine calls the next rule). */
static int call_rule(ms_ctx *ctx, lua_State *L, lcustom *c, int ref, const char *what,
                     ms_tensor *const *args, int nargs, int nres) {
  ruleargs ra = {nargs, args};
  return lms_callback(ctx, L, ref, push_rule_args, &ra, nres, 0, c->name, what);
}

/* The tensor result at idx, retained into *out, or an MS_ECALLBACK error. */
static int take_result(ms_ctx *ctx, lua_State *L, lcustom *c, int idx, const char *what, int k,
                       int allow_nil, ms_tensor **out) {
  *out = NULL;
  if (allow_nil && lua_isnil(L, idx)) return MS_OK;
  ms_tensor *t = lms_testtensor(L, idx);
  if (t == NULL)
    return ms_ctx_fail(ctx, MS_ECALLBACK, "%s: %s must return a tensor%s (result %d), got %s",
                       c->name, what, allow_nil ? " or nil" : "", k, luaL_typename(L, idx));
  *out = ms_tensor_retain(t);
  return MS_OK;
}

/* The engine hides levels while a forward rule runs if any were active when the primitive
 * was applied, and always while a jvp rule runs (see the comment at the top). */
static void set_hiding(lua_State *L, int forward, int delta) {
  adstate *ad = getadstate(L);
  if (ad != NULL && (!forward || ad->apply_depth > 0)) ad->hidden += delta;
}

static int c_forward(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor **out) {
  lcustom *c = ud;
  lua_State *L = lms_running(ctx);
  if (c->forward < 0)
    return ms_ctx_fail(ctx, MS_ESTATE, "%s: custom primitive was released", c->name);
  int top = lua_gettop(L);
  set_hiding(L, 1, 1);
  int st = call_rule(ctx, L, c, c->forward, "forward", in, c->nin, 1);
  set_hiding(L, 1, -1);
  if (st == MS_OK) st = take_result(ctx, L, c, top + 1, "forward", 1, 0, out);
  lua_settop(L, top);
  return st;
}

/* vjp(g, out, x1, ..., xn) -> g1, ..., gn (nil for zero) */
static int c_vjp(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor *out, ms_tensor *gout,
                 const int *need, ms_tensor **gin) {
  lcustom *c = ud;
  lua_State *L = lms_running(ctx);
  if (c->forward < 0)
    return ms_ctx_fail(ctx, MS_ESTATE, "%s: custom primitive was released", c->name);
  if (c->vjp < 0) return ms_ctx_fail(ctx, MS_EARG, "%s: custom primitive has no vjp rule", c->name);
  ms_tensor *args[2 + 16];
  args[0] = gout;
  args[1] = out;
  for (int i = 0; i < c->nin; i++) args[2 + i] = in[i];
  int top = lua_gettop(L);
  int st = call_rule(ctx, L, c, c->vjp, "vjp", args, c->nin + 2, c->nin);
  for (int i = 0; st == MS_OK && i < c->nin; i++)
    if (need[i]) st = take_result(ctx, L, c, top + 1 + i, "vjp", i + 1, 1, &gin[i]);
  lua_settop(L, top);
  return st;
}

/* jvp(t1, ..., tn, out, x1, ..., xn) -> tangent of out; zero tangents are passed as zeros */
static int c_jvp(ms_ctx *ctx, void *ud, ms_tensor *const *in, ms_tensor *const *tin, ms_tensor *out,
                 ms_tensor **tout) {
  lcustom *c = ud;
  lua_State *L = lms_running(ctx);
  if (c->forward < 0)
    return ms_ctx_fail(ctx, MS_ESTATE, "%s: custom primitive was released", c->name);
  if (c->jvp < 0) return ms_ctx_fail(ctx, MS_EARG, "%s: custom primitive has no jvp rule", c->name);
  ms_tensor *args[2 * 16 + 1], *zeros[16] = {NULL};
  int st = MS_OK;
  for (int i = 0; st == MS_OK && i < c->nin; i++) {
    if (tin[i] == NULL)
      st = ms_tensor_zeros(ctx, ms_tensor_ndim(in[i]), ms_tensor_shape(in[i]), &zeros[i]);
    args[i] = tin[i] ? tin[i] : zeros[i];
    args[c->nin + 1 + i] = in[i];
  }
  args[c->nin] = out;
  if (st == MS_OK) {
    int top = lua_gettop(L);
    set_hiding(L, 0, 1);
    st = call_rule(ctx, L, c, c->jvp, "jvp", args, 2 * c->nin + 1, 1);
    set_hiding(L, 0, -1);
    if (st == MS_OK) st = take_result(ctx, L, c, top + 1, "jvp", 1, 1, tout);
    lua_settop(L, top);
  }
  for (int i = 0; i < c->nin; i++) ms_tensor_release(zeros[i]); /* the rule's boxes keep theirs */
  return st;
}

typedef struct custom_box {
  ms_custom *op;
  lcustom *lc; /* owned by op (free_ud) */
} custom_box;

static void lcustom_free(void *p) {
  lcustom *c = p;
  /* References are dropped by the box's __gc, while the registry still exists. */
  free(c);
}

static int custom_gc(lua_State *L) {
  custom_box *b = luaL_checkudata(L, 1, LMS_CUSTOM);
  if (b->op) {
    /* Drop the Lua references now; tapes (and a running custom_call) that still hold the op
     * keep the C side alive and report a clear error if its rules are needed after the
     * state let go of them. */
    luaL_unref(L, LUA_REGISTRYINDEX, b->lc->forward);
    luaL_unref(L, LUA_REGISTRYINDEX, b->lc->vjp);
    luaL_unref(L, LUA_REGISTRYINDEX, b->lc->jvp);
    b->lc->forward = b->lc->vjp = b->lc->jvp = LUA_NOREF;
    ms_custom *op = b->op;
    b->op = NULL;
    b->lc = NULL;
    ms_custom_release(op);
  }
  return 0;
}

static int fieldref(lua_State *L, int arg, const char *field, int required) {
  int t = lua_getfield(L, arg, field);
  if (t == LUA_TNIL && !required) {
    lua_pop(L, 1);
    return LUA_NOREF;
  }
  if (t != LUA_TFUNCTION)
    luaL_argerror(
        L, arg,
        lua_pushfstring(L, "field '%s' must be a function, got %s", field, luaL_typename(L, -1)));
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* custom{name =, nin =, forward =, vjp =, jvp =} -> a callable primitive */
static int l_custom(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "name");
  const char *name = luaL_optstring(L, -1, "custom");
  lua_getfield(L, 1, "nin");
  lua_Integer nin = luaL_optinteger(L, -1, 1);
  if (nin < 1 || nin > 16)
    return luaL_argerror(L, 1, lua_pushfstring(L, "field 'nin' must be in 1..16, got %I", nin));
  custom_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->op = NULL;
  b->lc = NULL;
  luaL_setmetatable(L, LMS_CUSTOM);
  lcustom *lc = malloc(sizeof *lc);
  if (lc == NULL) return luaL_error(L, "custom: out of memory");
  lc->forward = lc->vjp = lc->jvp = LUA_NOREF;
  lc->nin = (int)nin;
  snprintf(lc->name, sizeof lc->name, "%s", name);
  ms_custom_op def = {lc->name, (int)nin, c_forward, c_vjp, c_jvp, lcustom_free, lc};
  if (ms_custom_new(lms_ctx(L), &def, &b->op) != MS_OK) {
    free(lc);
    return lms_error(L);
  }
  b->lc = lc;
  /* refs taken after the box owns lc, so an error here leaks nothing */
  lc->forward = fieldref(L, 1, "forward", 1);
  lc->vjp = fieldref(L, 1, "vjp", 0);
  lc->jvp = fieldref(L, 1, "jvp", 0);
  return 1;
}

/* op(x1, ..., xn) */
static int custom_call(lua_State *L) {
  custom_box *b = luaL_checkudata(L, 1, LMS_CUSTOM);
  if (b->op == NULL) return luaL_error(L, "custom primitive has been released");
  int nin = b->lc->nin;
  for (int i = 0; i < nin; i++) lms_checktensorish(L, i + 2); /* numbers become 0-d tensors */
  ms_tensor **box = lms_newbox(L);
  adstate *ad = getadstate(L);
  /* no allocation from here on; a finalizer may have released the primitive or an input */
  if (b->op == NULL) return luaL_error(L, "custom primitive has been released");
  ms_custom *op = b->op;
  ms_tensor *in[16];
  for (int i = 0; i < nin; i++) in[i] = lms_checktensor(L, i + 2);
  /* The rules run Lua code that may close the inputs or release the primitive. */
  lms_entry e;
  ms_ctx *ctx = lms_enter(L, &e);
  lms_hold_custom(&e, op);
  lms_hold_tensors(&e, nin, in);
  int saved_depth = ad->apply_depth;
  ad->apply_depth = ms_ad_depth(ctx);
  int st = ms_custom_apply(ctx, op, in, box);
  ad->apply_depth = saved_depth;
  lms_leave(&e);
  if (ad->hidden == 0) { /* the levels are in view again: run the deferred frees */
    pushadstate(L);
    flush_deferred(L, lua_gettop(L));
    lua_pop(L, 1);
  }
  return lms_result(L, st, 1);
}

static const luaL_Reg level_methods[] = {{"pop", level_pop},
                                         {"watch", level_watch},
                                         {"gradient", level_gradient},
                                         {"tangent", level_tangent},
                                         {"is_tracked", level_is_tracked},
                                         {"size", level_size},
                                         {"free", level_free},
                                         {NULL, NULL}};

static const luaL_Reg level_meta[] = {{"__gc", level_free}, {"__close", level_free}, {NULL, NULL}};

static const luaL_Reg custom_meta[] = {{"__call", custom_call}, {"__gc", custom_gc}, {NULL, NULL}};

static const luaL_Reg functions[] = {{"ad_push", l_ad_push},
                                     {"ad_depth", l_ad_depth},
                                     {"stop_gradient", l_stop_gradient},
                                     {"sum_to", l_sum_to},
                                     {"log_softmax", l_log_softmax},
                                     {"softmax_xent", l_softmax_xent},
                                     {"custom", l_custom},
                                     {NULL, NULL}};

/* Adds the autodiff functions to the core table on top of the stack. */
void lms_open_autodiff(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, ADSTATE_KEY) != LUA_TUSERDATA) {
    adstate *ad = lua_newuserdatauv(L, sizeof *ad, 1);
    memset(ad, 0, sizeof *ad);
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, adstate_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, ADSTATE_KEY);
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, LMS_LEVEL)) {
    luaL_newlib(L, level_methods);
    lua_setfield(L, -2, "__index");
    luaL_setfuncs(L, level_meta, 0);
    lua_pushliteral(L, "Level");
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, LMS_CUSTOM)) {
    luaL_setfuncs(L, custom_meta, 0);
    lua_pushliteral(L, "Custom");
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, functions, 0);
}
