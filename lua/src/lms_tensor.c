/*
 * Lua bindings of the engine's tensor core: the Tensor userdata, constructors,
 * arithmetic, math, reductions and linear algebra. Each binding checks its
 * arguments, calls one engine function, then pushes the result or raises.
 *
 * Rule kept throughout: a Lua error never jumps over a C resource. Result boxes are
 * created (lms_newbox) before the engine allocates, so every tensor is owned by the
 * Lua stack the moment it exists, and lms_error is the last statement of a failure.
 *
 * Second rule: a raw ms_tensor pointer is fetched from its box only after the binding's
 * last Lua allocation and the last call that can run Lua code (luaL_len, lua_geti on a
 * user table). An allocation can run finalizers, and a finalizer or metamethod can close
 * any tensor (getmetatable(t).__close(t), or a to-be-closed variable), so a pointer read
 * earlier may be freed before the engine uses it. Hence the shape of most bindings:
 * lua_settop to fix the argument slots, lms_newbox, then lms_checktensor, then the engine.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lms.h"

/* ---- the Tensor userdata (boxes: lms_aux.c) ---- */

static int tensor_gc(lua_State *L) {
  ms_tensor **box = luaL_checkudata(L, 1, LMS_TENSOR);
  ms_tensor_release(*box);
  *box = NULL;
  return 0;
}

/* ---- argument helpers ---- */

int lms_checkshape(lua_State *L, int arg, int64_t *shape) {
  int n;
  if (lua_istable(L, arg)) {
    /* compared before narrowing: a __len of 2^32 + 1 must not pass as 1 */
    lua_Integer len = luaL_len(L, arg);
    if (len < 0 || len > MS_MAXDIM)
      luaL_argerror(L, arg, lua_pushfstring(L, "at most %d dimensions, got %I", MS_MAXDIM, len));
    n = (int)len;
    for (int i = 0; i < n; i++) {
      lua_geti(L, arg, i + 1);
      int isint;
      lua_Integer v = lua_tointegerx(L, -1, &isint);
      if (!isint)
        luaL_argerror(L, arg,
                      lua_pushfstring(L, "shape entry %d must be an integer, got %s", i + 1,
                                      luaL_typename(L, -1)));
      if (v < 0)
        luaL_argerror(L, arg, lua_pushfstring(L, "shape entry %d must be >= 0, got %I", i + 1, v));
      shape[i] = v;
      lua_pop(L, 1);
    }
    return n;
  }
  int top = lua_gettop(L);
  for (n = 0; arg + n <= top && lua_type(L, arg + n) == LUA_TNUMBER; n++) {
    if (n >= MS_MAXDIM)
      luaL_argerror(L, arg + n, lua_pushfstring(L, "at most %d dimensions", MS_MAXDIM));
    lua_Integer v = luaL_checkinteger(L, arg + n);
    if (v < 0) luaL_argerror(L, arg + n, lua_pushfstring(L, "size must be >= 0, got %I", v));
    shape[n] = v;
  }
  if (n == 0 && lua_type(L, arg) != LUA_TNONE && lua_type(L, arg) != LUA_TTABLE &&
      lua_type(L, arg) != LUA_TNIL)
    luaL_typeerror(L, arg, "shape (table of sizes or sizes)");
  return n;
}

/* Lua axis (1-based, negative from the end) -> engine axis (0-based, negative from the end). */
static int checkaxis(lua_State *L, int arg, int ndim) {
  lua_Integer a = luaL_checkinteger(L, arg);
  if (a == 0 || a > ndim || a < -ndim)
    luaL_argerror(L, arg, lua_pushfstring(L, "dimension %I out of range for %d-d tensor", a, ndim));
  return a > 0 ? (int)a - 1 : (int)(a + ndim);
}

/* Options table at arg (or nil): number field with default. */
static double optfield(lua_State *L, int arg, const char *name, double def) {
  if (lua_isnoneornil(L, arg)) return def;
  luaL_checktype(L, arg, LUA_TTABLE);
  double v = def;
  int t = lua_getfield(L, arg, name);
  if (t != LUA_TNIL) {
    if (t != LUA_TNUMBER)
      luaL_argerror(
          L, arg,
          lua_pushfstring(L, "field '%s' must be a number, got %s", name, luaL_typename(L, -1)));
    v = lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

/* ---- constructors ---- */

/* Walks a nested table once to find its shape (along the first elements). */
static int nested_shape(lua_State *L, int idx, int64_t *shape) {
  int nd = 0;
  lua_pushvalue(L, idx);
  while (lua_istable(L, -1)) {
    if (nd >= MS_MAXDIM) luaL_error(L, "tensor: nested table deeper than %d levels", MS_MAXDIM);
    shape[nd++] = (int64_t)luaL_len(L, -1);
    if (shape[nd - 1] == 0) break;
    lua_geti(L, -1, 1);
    lua_remove(L, -2);
  }
  lua_pop(L, 1);
  return nd;
}

/* Copies a nested table into data, checking that it is rectangular and numeric. */
static void nested_fill(lua_State *L, int idx, int depth, int nd, const int64_t *shape,
                        double **data, char *path, size_t pathlen) {
  int64_t n = (int64_t)luaL_len(L, idx);
  if (n != shape[depth])
    luaL_error(L, "tensor: ragged nested table: %s has %I elements, expected %I",
               depth == 0 ? "the table" : path, (lua_Integer)n, (lua_Integer)shape[depth]);
  for (int64_t i = 1; i <= n; i++) {
    int t = lua_geti(L, idx, i);
    size_t len = strlen(path);
    snprintf(path + len, pathlen - len, "[%lld]", (long long)i);
    if (depth + 1 < nd) {
      if (t != LUA_TTABLE)
        luaL_error(L, "tensor: expected a table at %s, got %s", path, luaL_typename(L, -1));
      nested_fill(L, lua_gettop(L), depth + 1, nd, shape, data, path, pathlen);
    } else {
      int isnum;
      lua_Number v = lua_tonumberx(L, -1, &isnum);
      if (!isnum || t == LUA_TSTRING)
        luaL_error(L, "tensor: expected a number at %s, got %s", path, luaL_typename(L, -1));
      *(*data)++ = v;
    }
    path[len] = '\0';
    lua_pop(L, 1);
  }
}

static int l_tensor(lua_State *L) {
  ms_ctx *ctx = lms_ctx(L);
  lua_settop(L, 1);
  if (lua_type(L, 1) == LUA_TNUMBER) {
    ms_tensor **box = lms_newbox(L);
    ms_tensor *t;
    return lms_finish(L, box, ms_tensor_scalar(ctx, lua_tonumber(L, 1), &t), &t);
  }
  if (luaL_testudata(L, 1, LMS_TENSOR)) {
    ms_tensor **box = lms_newbox(L);
    ms_tensor *src = lms_checktensor(L, 1), *t;
    return lms_finish(L, box, ms_tensor_copy(ctx, src, &t), &t);
  }
  if (!lua_istable(L, 1)) return luaL_typeerror(L, 1, "table, number or tensor");
  int64_t shape[MS_MAXDIM];
  int nd = nested_shape(L, 1, shape);
  int64_t n = 1;
  /* __len may report any size: refuse products the staging buffer cannot hold (and
   * that would overflow n) before sizing it, since nested_fill trusts n. */
  for (int i = 0; i < nd; i++) {
    if (shape[i] < 0)
      return luaL_error(L, "tensor: nested table has negative length %I", (lua_Integer)shape[i]);
    if (shape[i] > 0 && n > ((int64_t)1 << 50) / shape[i])
      return luaL_error(L, "tensor: nested table has more than 2^50 elements");
    n *= shape[i];
  }
  /* __len may also claim more elements than the budget allows: say so before staging them */
  size_t budget = ms_ctx_limit(ctx);
  if (budget > 0 && (uint64_t)n > budget / sizeof(double))
    return luaL_error(L,
                      "tensor: nested table claims %I elements, past the memory budget of %I bytes",
                      (lua_Integer)n, (lua_Integer)budget);
  /* Stage the numbers in a Lua-owned buffer so an error while reading leaks nothing. */
  double *buf = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof(double), 0);
  int bufidx = lua_gettop(L);
  double *p = buf;
  char path[MS_MAXDIM * 24 + 1] = "";
  nested_fill(L, 1, 0, nd, shape, &p, path,
              sizeof path); /* also when n == 0: {{}, {1}} is ragged */
  ms_tensor **box = lms_newbox(L);
  ms_tensor *t;
  int st = ms_tensor_from_data(ctx, nd, shape, buf, &t);
  lua_remove(L, bufidx);
  return lms_finish(L, box, st, &t);
}

/* zeros(shape), ones(shape): a tensor made from the shape alone. */
static int from_shape(lua_State *L, int (*make)(ms_ctx *, int, const int64_t *, ms_tensor **)) {
  int64_t shape[MS_MAXDIM];
  int nd = lms_checkshape(L, 1, shape);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *t;
  return lms_finish(L, box, make(lms_ctx(L), nd, shape, &t), &t);
}

static int l_zeros(lua_State *L) { return from_shape(L, ms_tensor_zeros); }

static int l_ones(lua_State *L) { return from_shape(L, ms_tensor_ones); }

static int l_full(lua_State *L) {
  int64_t shape[MS_MAXDIM];
  luaL_checktype(L, 1, LUA_TTABLE);
  int nd = lms_checkshape(L, 1, shape);
  double v = luaL_checknumber(L, 2);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *t;
  return lms_finish(L, box, ms_tensor_full(lms_ctx(L), nd, shape, v, &t), &t);
}

static int l_eye(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  lua_Integer m = luaL_optinteger(L, 2, n);
  if (n < 0) return luaL_argerror(L, 1, lua_pushfstring(L, "size must be >= 0, got %I", n));
  if (m < 0) return luaL_argerror(L, 2, lua_pushfstring(L, "size must be >= 0, got %I", m));
  ms_tensor **box = lms_newbox(L);
  ms_tensor *t;
  return lms_finish(L, box, ms_tensor_eye(lms_ctx(L), n, m, &t), &t);
}

/* f(a): a new tensor from one tensor argument */
typedef int (*unfn)(ms_ctx *, const ms_tensor *, ms_tensor **);

static int tensor1(lua_State *L, unfn fn) {
  lua_settop(L, 1);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *a = lms_checktensor(L, 1), *t;
  return lms_finish(L, box, fn(lms_ctx(L), a, &t), &t);
}

static int l_diag(lua_State *L) { return tensor1(L, ms_tensor_diag); }

static int l_arange(lua_State *L) {
  double start = 0, stop, step = 1;
  if (lua_isnoneornil(L, 2)) {
    stop = luaL_checknumber(L, 1);
  } else {
    start = luaL_checknumber(L, 1);
    stop = luaL_checknumber(L, 2);
    step = luaL_optnumber(L, 3, 1);
  }
  ms_tensor **box = lms_newbox(L);
  ms_tensor *t;
  return lms_finish(L, box, ms_tensor_arange(lms_ctx(L), start, stop, step, &t), &t);
}

static int l_linspace(lua_State *L) {
  double a = luaL_checknumber(L, 1), b = luaL_checknumber(L, 2);
  lua_Integer n = luaL_checkinteger(L, 3);
  luaL_argcheck(L, n >= 1, 3, lua_pushfstring(L, "count must be >= 1, got %I", n));
  ms_tensor **box = lms_newbox(L);
  ms_tensor *t;
  return lms_finish(L, box, ms_tensor_linspace(lms_ctx(L), a, b, n, &t), &t);
}

/* rand(shape [, {seed=, lo=, hi=}]) and randn(shape [, {seed=, mean=, std=}]):
 * with a seed the numbers come from a fresh generator, else from the context's. */
static int random_tensor(lua_State *L, int normal) {
  int64_t shape[MS_MAXDIM];
  if (!lua_istable(L, 1)) return luaL_typeerror(L, 1, "shape table");
  int nd = lms_checkshape(L, 1, shape);
  ms_rng local, *rng = NULL;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const known[2][4] = {{"seed", "lo", "hi", NULL},
                                            {"seed", "mean", "std", NULL}};
    lms_checkoptions(L, 2, known[normal]);
    if (lua_getfield(L, 2, "seed") != LUA_TNIL) {
      int isint;
      lua_Integer seed = lua_tointegerx(L, -1, &isint);
      if (!isint)
        luaL_argerror(
            L, 2,
            lua_pushfstring(L, "field 'seed' must be an integer, got %s", luaL_typename(L, -1)));
      ms_rng_seed(&local, (uint64_t)seed);
      rng = &local;
    }
    lua_pop(L, 1);
  }
  double a = optfield(L, 2, normal ? "mean" : "lo", 0.0);
  double b = optfield(L, 2, normal ? "std" : "hi", 1.0);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *t;
  int st = normal ? ms_tensor_randn(lms_ctx(L), rng, nd, shape, a, b, &t)
                  : ms_tensor_rand(lms_ctx(L), rng, nd, shape, a, b, &t);
  return lms_finish(L, box, st, &t);
}

static int l_rand(lua_State *L) { return random_tensor(L, 0); }
static int l_randn(lua_State *L) { return random_tensor(L, 1); }

static int l_seed(lua_State *L) {
  lua_Integer s = luaL_checkinteger(L, 1);
  ms_ctx_seed(lms_ctx(L), (uint64_t)s);
  return 0;
}

static int l_memory(lua_State *L) {
  ms_ctx *ctx = lms_ctx(L);
  lua_pushinteger(L, (lua_Integer)ms_ctx_bytes(ctx));
  lua_pushinteger(L, (lua_Integer)ms_ctx_limit(ctx));
  return 2;
}

static int l_set_memory_limit(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0, 1, "limit must be >= 0 bytes (0 = unlimited)");
  /* A host's sandbox (metastep_lua.h) caps the budget: a script may only lower it. */
  if (lua_getfield(L, LUA_REGISTRYINDEX, LMS_SANDBOX_LIMIT) == LUA_TNUMBER) {
    lua_Integer cap = lua_tointeger(L, -1);
    if (n == 0 || n > cap)
      return luaL_error(L,
                        "set_memory_limit: the host's sandbox caps the budget at %I bytes, "
                        "got %I (0 = unlimited)",
                        cap, n);
  }
  lua_pop(L, 1);
  ms_ctx_set_limit(lms_ctx(L), (size_t)n);
  return 0;
}

/* set_check_numerics(on): the first primitive producing NaN or inf from finite inputs
 * raises (ms_ctx_set_check_numerics); returns the previous setting. */
static int l_set_check_numerics(lua_State *L) {
  luaL_checktype(L, 1, LUA_TBOOLEAN);
  ms_ctx *ctx = lms_ctx(L);
  lua_pushboolean(L, ms_ctx_check_numerics(ctx));
  ms_ctx_set_check_numerics(ctx, lua_toboolean(L, 1));
  return 1;
}

/* ---- inspection ---- */

static int m_shape(lua_State *L) {
  lms_checktensor(L, 1);
  lua_createtable(L, MS_MAXDIM, 0); /* presized: the loop below allocates nothing */
  ms_tensor *t = lms_checktensor(L, 1);
  int nd = ms_tensor_ndim(t);
  for (int i = 0; i < nd; i++) {
    lua_pushinteger(L, ms_tensor_dim(t, i));
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int m_size(lua_State *L) {
  ms_tensor *t = lms_checktensor(L, 1);
  if (lua_isnoneornil(L, 2)) return m_shape(L);
  int a = checkaxis(L, 2, ms_tensor_ndim(t));
  lua_pushinteger(L, ms_tensor_dim(t, a));
  return 1;
}

static int m_numel(lua_State *L) {
  lua_pushinteger(L, ms_tensor_numel(lms_checktensor(L, 1)));
  return 1;
}

static int m_ndim(lua_State *L) {
  lua_pushinteger(L, ms_tensor_ndim(lms_checktensor(L, 1)));
  return 1;
}

static int m_is_contiguous(lua_State *L) {
  lua_pushboolean(L, ms_tensor_is_contiguous(lms_checktensor(L, 1)));
  return 1;
}

static int m_shares_storage(lua_State *L) {
  lua_pushboolean(L, ms_tensor_shares_storage(lms_checktensor(L, 1), lms_checktensor(L, 2)));
  return 1;
}

static int m_version(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)ms_tensor_version(lms_checktensor(L, 1)));
  return 1;
}

static int m_item(lua_State *L) {
  ms_tensor *t = lms_checktensor(L, 1);
  double v;
  if (ms_tensor_item(lms_ctx(L), t, &v) != MS_OK) return lms_error(L);
  lua_pushnumber(L, v);
  return 1;
}

static void push_nested(lua_State *L, const double *data, int nd, const int64_t *shape, int depth,
                        int64_t *pos) {
  if (depth == nd) {
    lua_pushnumber(L, data[pos[0]++]);
    return;
  }
  luaL_checkstack(L, 4, "tensor too deep");
  /* Poll the interrupt flag (Ctrl-C, a host's time budget) every 1024 tables: the shape
   * {1, 2^40, 4, 0} has no elements but 2^42 tables. c stays owned by its box. */
  if ((++pos[1] & 1023) == 0 && ms_ctx_check_interrupt(lms_ctx(L), "totable") != MS_OK)
    lms_error(L);
  lua_createtable(L, (int)shape[depth], 0);
  for (int64_t i = 0; i < shape[depth]; i++) {
    push_nested(L, data, nd, shape, depth + 1, pos);
    lua_rawseti(L, -2, i + 1);
  }
}

/*
 * totable builds one Lua table per row at every depth, also when the last axis is empty: a
 * [1, 2^40, 4, 0] tensor has no element but 5 * 2^40 tables. The tables and numbers are
 * counted first and the call refused when their estimated size (a table header is ~56 bytes,
 * an array slot 16) exceeds the engine's memory budget, or 1 GiB when none is set.
 */
#define TOTABLE_DEFAULT_LIMIT ((int64_t)1 << 30)

static int check_totable_size(lua_State *L, const ms_tensor *t) {
  int nd = ms_tensor_ndim(t);
  const int64_t *shape = ms_tensor_shape(t);
  int64_t tables = 1, rows = 1; /* shape products <= 2^50 (the engine's shape invariant) */
  for (int d = 0; d + 1 < nd && rows > 0; d++) {
    rows *= shape[d];
    tables += rows;
  }
  int64_t numel = ms_tensor_numel(t);
  int64_t bytes = 56 * tables + 16 * (tables - 1 + numel);
  size_t budget = ms_ctx_limit(lms_ctx(L));
  int64_t limit =
      budget > 0 && budget < (size_t)INT64_MAX ? (int64_t)budget : TOTABLE_DEFAULT_LIMIT;
  if (bytes <= limit) return 0;
  char b[MS_SHAPE_STRLEN];
  return luaL_error(L,
                    "totable: a tensor of shape %s makes %I Lua tables and %I numbers (about %I "
                    "MiB), past the limit of %I MiB (the memory budget, or 1 GiB when none is set)",
                    ms_shape_str(nd, shape, b, sizeof b), (lua_Integer)tables, (lua_Integer)numel,
                    (lua_Integer)(bytes >> 20), (lua_Integer)(limit >> 20));
}

static int m_totable(lua_State *L) {
  lua_settop(L, 1);
  /* Keep c owned by the stack while building tables (they may raise on memory errors). */
  ms_tensor **box = lms_newbox(L);
  ms_tensor *t = lms_checktensor(L, 1);
  if (ms_tensor_ndim(t) == 0) {
    lua_pushnumber(L, ms_tensor_data(t)[0]);
    return 1;
  }
  check_totable_size(L, t); /* raises: no resource held yet (the box is empty) */
  ms_tensor *c;
  if (ms_tensor_contiguous(lms_ctx(L), t, &c) != MS_OK) return lms_error(L);
  *box = c;
  int64_t pos[2] = {0, 0}; /* next element, tables made */
  push_nested(L, ms_tensor_data(c), ms_tensor_ndim(c), ms_tensor_shape(c), 0, pos);
  return 1;
}

/* A formatted string lives in a box with __gc until Lua has copied it. */
typedef struct strbox {
  ms_ctx *ctx;
  char *s;
} strbox;

static int strbox_gc(lua_State *L) {
  strbox *b = lua_touserdata(L, 1);
  if (b->s) ms_string_free(b->ctx, b->s);
  b->s = NULL;
  return 0;
}

static int m_tostring(lua_State *L) {
  ms_tensor **tb = luaL_testudata(L, 1, LMS_TENSOR); /* a released tensor prints, not raises */
  if (tb == NULL) return luaL_typeerror(L, 1, "tensor");
  lua_Integer threshold = luaL_optinteger(L, 2, 1000);
  lua_Integer edge = luaL_optinteger(L, 3, 3);
  strbox *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->ctx = lms_ctx(L);
  b->s = NULL;
  if (luaL_newmetatable(L, "metastep.String")) {
    lua_pushcfunction(L, strbox_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  if (*tb == NULL) { /* checked after the allocations above, which may run finalizers */
    lua_pushliteral(L, "tensor (released)");
    return 1;
  }
  if (ms_tensor_format(b->ctx, *tb, threshold, (int)edge, &b->s) != MS_OK) return lms_error(L);
  lua_pushstring(L, b->s);
  ms_string_free(b->ctx, b->s);
  b->s = NULL;
  return 1;
}

static int m_len(lua_State *L) {
  ms_tensor *t = lms_checktensor(L, 1);
  if (ms_tensor_ndim(t) == 0) return luaL_error(L, "len: a 0-d tensor has no length");
  lua_pushinteger(L, ms_tensor_dim(t, 0));
  return 1;
}

/* ---- copies and views ---- */

static int m_clone(lua_State *L) { return tensor1(L, ms_tensor_copy); }

static int m_contiguous(lua_State *L) { return tensor1(L, ms_tensor_contiguous); }

static int reshape_impl(lua_State *L, int is_view) {
  lms_checktensor(L, 1);
  int64_t shape[MS_MAXDIM];
  int nd;
  /* Sizes are not sign-checked here: one may be -1 (inferred), and the engine names any
   * other negative size together with the whole shape. */
  if (lua_istable(L, 2)) {
    lua_Integer n = luaL_len(L, 2);
    if (n < 0 || n > MS_MAXDIM)
      return luaL_argerror(L, 2, lua_pushfstring(L, "at most %d dimensions, got %I", MS_MAXDIM, n));
    nd = (int)n;
    for (int i = 0; i < nd; i++) {
      lua_geti(L, 2, i + 1);
      int isint;
      shape[i] = lua_tointegerx(L, -1, &isint);
      if (!isint || lua_type(L, -1) != LUA_TNUMBER)
        return luaL_argerror(L, 2,
                             lua_pushfstring(L, "shape entry %d must be an integer, got %s", i + 1,
                                             luaL_typename(L, -1)));
      lua_pop(L, 1);
    }
  } else {
    nd = lua_gettop(L) - 1;
    if (nd > MS_MAXDIM)
      return luaL_argerror(L, 2 + MS_MAXDIM,
                           lua_pushfstring(L, "at most %d dimensions, got %d", MS_MAXDIM, nd));
    for (int i = 0; i < nd; i++) shape[i] = luaL_checkinteger(L, i + 2);
  }
  ms_tensor **box = lms_newbox(L);
  ms_tensor *a = lms_checktensor(L, 1), *t;
  int st = is_view ? ms_tensor_view(lms_ctx(L), a, nd, shape, &t)
                   : ms_tensor_reshape(lms_ctx(L), a, nd, shape, &t);
  return lms_finish(L, box, st, &t);
}

static int m_view(lua_State *L) { return reshape_impl(L, 1); }
static int m_reshape(lua_State *L) { return reshape_impl(L, 0); }

static int m_flatten(lua_State *L) {
  lua_settop(L, 1);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *a = lms_checktensor(L, 1), *t;
  int64_t n = ms_tensor_numel(a);
  return lms_finish(L, box, ms_tensor_reshape(lms_ctx(L), a, 1, &n, &t), &t);
}

static int m_transpose(lua_State *L) {
  lua_settop(L, 3);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *a = lms_checktensor(L, 1), *t;
  int nd = ms_tensor_ndim(a);
  int d0, d1;
  if (lua_isnoneornil(L, 2)) {
    if (nd != 2)
      return luaL_argerror(L, 2, lua_pushfstring(L, "dimensions required for a %d-d tensor", nd));
    d0 = 0, d1 = 1;
  } else {
    d0 = checkaxis(L, 2, nd);
    d1 = checkaxis(L, 3, nd);
  }
  return lms_finish(L, box, ms_tensor_transpose(lms_ctx(L), a, d0, d1, &t), &t);
}

/* t:permute{...}: the table is read raw, so no Lua code runs while a is held. */
static int m_permute(lua_State *L) {
  lms_checktensor(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *a = lms_checktensor(L, 1), *t;
  int nd = ms_tensor_ndim(a), perm[MS_MAXDIM], seen[MS_MAXDIM] = {0};
  lua_Unsigned n = lua_rawlen(L, 2);
  if (n != (lua_Unsigned)nd)
    return luaL_argerror(L, 2,
                         lua_pushfstring(L, "expected %d dimensions, got %I", nd, (lua_Integer)n));
  for (int i = 0; i < nd; i++) {
    lua_rawgeti(L, 2, i + 1);
    int isint;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    if (!isint || lua_type(L, -1) != LUA_TNUMBER)
      return luaL_argerror(
          L, 2,
          lua_pushfstring(L, "entry %d must be an integer, got %s", i + 1, luaL_typename(L, -1)));
    if (v == 0 || v > nd || v < -nd)
      return luaL_argerror(
          L, 2,
          lua_pushfstring(L, "entry %d: dimension %I out of range for %d-d tensor", i + 1, v, nd));
    perm[i] = v > 0 ? (int)v - 1 : (int)(v + nd);
    if (seen[perm[i]]++)
      return luaL_argerror(L, 2, lua_pushfstring(L, "entry %d: dimension %I repeated", i + 1, v));
    lua_pop(L, 1);
  }
  return lms_finish(L, box, ms_tensor_permute(lms_ctx(L), a, perm, &t), &t);
}

/* t:slice(dim, i, j [, step]): elements i..j inclusive (1-based, negative from the end). */
static int m_slice(lua_State *L) {
  lua_settop(L, 5);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *a = lms_checktensor(L, 1), *t;
  int nd = ms_tensor_ndim(a);
  int d = checkaxis(L, 2, nd);
  int64_t n = ms_tensor_dim(a, d);
  lua_Integer i = luaL_optinteger(L, 3, 1), j = luaL_optinteger(L, 4, n);
  lua_Integer step = luaL_optinteger(L, 5, 1);
  if (i < 0) i += n + 1;
  if (j < 0) j += n + 1;
  luaL_argcheck(L, step >= 1, 5, lua_pushfstring(L, "step must be >= 1, got %I", step));
  if (i < 1 || i > n + 1)
    return luaL_argerror(
        L, 3, lua_pushfstring(L, "start %I out of range for size %I", i, (lua_Integer)n));
  if (j < i - 1 || j > n)
    return luaL_argerror(
        L, 4,
        lua_pushfstring(L, "end %I out of range for start %I and size %I", j, i, (lua_Integer)n));
  return lms_finish(L, box, ms_tensor_slice(lms_ctx(L), a, d, i - 1, j, step, &t), &t);
}

static int m_select(lua_State *L) {
  lua_settop(L, 3);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *a = lms_checktensor(L, 1), *t;
  int d = checkaxis(L, 2, ms_tensor_ndim(a));
  lua_Integer i = luaL_checkinteger(L, 3);
  int64_t n = ms_tensor_dim(a, d);
  if (i < 0) i += n + 1;
  if (i < 1 || i > n)
    return luaL_argerror(
        L, 3, lua_pushfstring(L, "index %I out of range for size %I", i, (lua_Integer)n));
  return lms_finish(L, box, ms_tensor_select(lms_ctx(L), a, d, i - 1, &t), &t);
}

static int m_expand(lua_State *L) {
  lms_checktensor(L, 1);
  int64_t shape[MS_MAXDIM];
  int nd = lms_checkshape(L, 2, shape); /* may run __len/__index: before a is fetched */
  ms_tensor **box = lms_newbox(L);
  ms_tensor *a = lms_checktensor(L, 1), *t;
  return lms_finish(L, box, ms_tensor_expand(lms_ctx(L), a, nd, shape, &t), &t);
}

/* ms.cat(list [, dim]). The list may be a proxy whose __index runs Lua code (which may
 * collect or close tensors), so every element is first anchored in a fresh table; the
 * pointers are read from that table only after the last allocation. */
static int l_cat(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  lua_Integer n = luaL_len(L, 1);
  if (n < 1 || n > INT_MAX)
    return luaL_argerror(
        L, 1, lua_pushfstring(L, "expected a non-empty table of tensors, got %I elements", n));
  lua_createtable(L, (int)n, 0); /* 3: the anchor */
  for (int i = 1; i <= (int)n; i++) {
    lua_geti(L, 1, i);
    lua_rawseti(L, 3, i);
  }
  ms_tensor **ts = lua_newuserdatauv(L, (size_t)n * sizeof *ts, 0);
  ms_tensor **box = lms_newbox(L);
  int nd = 0;
  for (int i = 0; i < (int)n; i++) {
    lua_rawgeti(L, 3, i + 1);
    ms_tensor *t = lms_testtensor(L, -1);
    if (t == NULL && lms_isreleased(L, -1))
      return luaL_argerror(L, 1, lua_pushfstring(L, "element %d: tensor has been released", i + 1));
    if (t == NULL)
      return luaL_argerror(
          L, 1,
          lua_pushfstring(L, "element %d must be a tensor, got %s", i + 1, luaL_typename(L, -1)));
    ts[i] = t;
    if (i == 0) nd = ms_tensor_ndim(t);
    lua_pop(L, 1); /* still referenced by the anchor */
  }
  int axis = lua_isnoneornil(L, 2) ? 0 : checkaxis(L, 2, nd);
  ms_tensor *t;
  return lms_finish(L, box, ms_tensor_cat(lms_ctx(L), (int)n, ts, axis, &t), &t);
}

/* ---- element access and indexing ---- */

/* Reads indices (1-based, negative from the end) from the table at idx into 0-based idxs.
 * The table is read raw: no metamethod (Lua code) may run while t is held. */
static int checkindex_table(lua_State *L, int idx, ms_tensor *t, int64_t *out) {
  lua_Unsigned len = lua_rawlen(L, idx);
  int nd = ms_tensor_ndim(t);
  if (len > (lua_Unsigned)nd)
    return luaL_error(L, "index: %I indices for a %d-d tensor", (lua_Integer)len, nd);
  int n = (int)len;
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, idx, i + 1);
    int isint;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    if (!isint)
      return luaL_error(L, "index: entry %d must be an integer, got %s", i + 1,
                        luaL_typename(L, -1));
    int64_t size = ms_tensor_dim(t, i);
    if (v < 0) v += size + 1;
    if (v < 1 || v > size)
      return luaL_error(L, "index: %I out of range for dimension %d of size %I",
                        lua_tointeger(L, -1), i + 1, (lua_Integer)size);
    out[i] = v - 1;
    lua_pop(L, 1);
  }
  return n;
}

/* Resolves an integer or table key into a sub-view (pushed) or, when the key addresses one
 * element, returns 1 and stores its offset via the full index. */
static int index_view(lua_State *L, ms_tensor *t, int key, int64_t *idx, ms_tensor **view) {
  int n;
  if (lua_type(L, key) == LUA_TNUMBER) {
    int isint;
    lua_Integer v = lua_tointegerx(L, key, &isint);
    if (!isint) return luaL_error(L, "index: expected an integer, got %s", lua_tostring(L, key));
    if (ms_tensor_ndim(t) == 0)
      return luaL_error(L, "index: cannot index a 0-d tensor (use :item())");
    int64_t size = ms_tensor_dim(t, 0);
    if (v < 0) v += size + 1;
    if (v < 1 || v > size)
      return luaL_error(L, "index: %I out of range for dimension 1 of size %I",
                        lua_tointeger(L, key), (lua_Integer)size);
    idx[0] = v - 1;
    n = 1;
  } else {
    n = checkindex_table(L, key, t, idx);
  }
  if (n == ms_tensor_ndim(t)) return 1;
  ms_tensor *cur = ms_tensor_retain(t), *next;
  for (int i = 0; i < n; i++) {
    int st = ms_tensor_select(lms_ctx(L), cur, 0, idx[i], &next);
    ms_tensor_release(cur);
    if (st != MS_OK) return lms_error(L);
    cur = next;
  }
  *view = cur;
  return 0;
}

static int tensor_index(lua_State *L) {
  lms_checktensor(L, 1);
  lua_settop(L, 2);
  int kt = lua_type(L, 2);
  if (kt == LUA_TSTRING) {
    lua_pushvalue(L, 2);
    lua_gettable(L, lua_upvalueindex(1)); /* methods */
    return 1;
  }
  if (kt != LUA_TNUMBER && kt != LUA_TTABLE)
    return luaL_error(L, "index: expected an integer, a table of integers or a method name, got %s",
                      luaL_typename(L, 2));
  int64_t idx[MS_MAXDIM];
  ms_tensor **box = lms_newbox(L);
  ms_tensor *t = lms_checktensor(L, 1), *view = NULL;
  if (index_view(L, t, 2, idx, &view)) {
    ms_ctx *ctx = lms_ctx(L);
    if (ms_ad_is_traced(ctx, t)) {
      /* Under grad/jvp an element stays a (0-d) tensor: a plain number would silently
       * drop its derivative. */
      ms_tensor *cur = ms_tensor_retain(t), *next;
      for (int i = 0, nd = ms_tensor_ndim(t); i < nd; i++) {
        int st = ms_tensor_select(ctx, cur, 0, idx[i], &next);
        ms_tensor_release(cur);
        if (st != MS_OK) return lms_error(L);
        cur = next;
      }
      *box = cur;
      return lms_result(L, MS_OK, 1);
    }
    double v;
    if (ms_tensor_get(ctx, t, idx, &v) != MS_OK) return lms_error(L);
    lua_pushnumber(L, v);
    return 1;
  }
  *box = view;
  return lms_result(L, MS_OK, 1);
}

/* Raises "what: cannot broadcast source of shape [..] to destination of shape [..]" for a
 * failed ms_tensor_copy_ (whose own message names its helper, expand). */
static int copy_error(lua_State *L, const char *what, const ms_tensor *dst, const ms_tensor *src) {
  ms_ctx *ctx = lms_ctx(L);
  if (ms_ctx_status(ctx) != MS_ESHAPE) return lms_error(L);
  char b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
  ms_ctx_clear_error(ctx);
  return luaL_error(L, "%s: cannot broadcast source of shape %s to destination of shape %s", what,
                    ms_shape_str(ms_tensor_ndim(src), ms_tensor_shape(src), b1, sizeof b1),
                    ms_shape_str(ms_tensor_ndim(dst), ms_tensor_shape(dst), b2, sizeof b2));
}

static int tensor_newindex(lua_State *L) {
  lms_checktensor(L, 1);
  lua_settop(L, 3);
  int kt = lua_type(L, 2);
  if (kt != LUA_TNUMBER && kt != LUA_TTABLE)
    return luaL_error(L, "index: expected an integer or a table of integers, got %s",
                      luaL_typename(L, 2));
  if (lua_type(L, 3) != LUA_TNUMBER && !luaL_testudata(L, 3, LMS_TENSOR))
    return luaL_error(L, "index assignment: expected a number or a tensor, got %s",
                      luaL_typename(L, 3));
  if (lms_isreleased(L, 3))
    return luaL_error(L, "index assignment: the source tensor has been released");
  int64_t idx[MS_MAXDIM];
  ms_tensor **box = lms_newbox(L); /* owns the sub-view, if any */
  ms_tensor *t = lms_checktensor(L, 1), *view = NULL, *src = NULL;
  if (lua_type(L, 3) != LUA_TNUMBER && (src = lms_testtensor(L, 3)) == NULL)
    return luaL_error(L, "index assignment: the source tensor has been released");
  int whole = index_view(L, t, 2, idx, &view);
  *box = view;
  ms_ctx *ctx = lms_ctx(L);
  if (src == NULL) {
    double v = lua_tonumber(L, 3);
    int st = whole ? ms_tensor_set(ctx, t, idx, v) : ms_tensor_fill_(ctx, view, v);
    if (st != MS_OK) return lms_error(L);
    return 0;
  }
  if (whole) {
    double v;
    if (ms_tensor_numel(src) != 1) {
      char b[MS_SHAPE_STRLEN];
      return luaL_error(
          L, "index assignment: one element needs a number or a one-element tensor, got shape %s",
          ms_shape_str(ms_tensor_ndim(src), ms_tensor_shape(src), b, sizeof b));
    }
    if (ms_tensor_item(ctx, src, &v) != MS_OK) return lms_error(L);
    if (ms_tensor_set(ctx, t, idx, v) != MS_OK) return lms_error(L);
    return 0;
  }
  if (ms_tensor_copy_(ctx, view, src) != MS_OK) return copy_error(L, "index assignment", view, src);
  return 0;
}

static int m_fill(lua_State *L) {
  ms_tensor *t = lms_checktensor(L, 1);
  double v = luaL_checknumber(L, 2);
  if (ms_tensor_fill_(lms_ctx(L), t, v) != MS_OK) return lms_error(L);
  lua_settop(L, 1);
  return 1;
}

static int m_assign(lua_State *L) {
  ms_tensor *t = lms_checktensor(L, 1);
  ms_tensor *src = lms_checktensor(L, 2);
  if (ms_tensor_copy_(lms_ctx(L), t, src) != MS_OK) return copy_error(L, "assign", t, src);
  lua_settop(L, 1);
  return 1;
}

/* ---- arithmetic, math and reductions (op code in upvalue 1) ---- */

/* A tensor-or-number argument: raises on any other type and on a released tensor. */
static void checkoperand(lua_State *L, int arg) {
  if (lua_type(L, arg) == LUA_TNUMBER) return;
  lua_Debug ar;
  if (lua_type(L, arg) == LUA_TSTRING && lua_getstack(L, 1, &ar) && lua_getinfo(L, "l", &ar) &&
      ar.currentline <= 0) {
    /* `"x" + t` reaches us through the string library's own __add (a C function), so
     * luaL_argerror would name '?' and no line: blame the nearest Lua caller instead */
    lms_where(L, 1);
    lua_pushfstring(L, "tensor arithmetic: operand %d must be a tensor or a number, got string",
                    arg);
    lua_concat(L, 2);
    lua_error(L);
  }
  if (!luaL_testudata(L, arg, LMS_TENSOR)) luaL_typeerror(L, arg, "tensor or number");
  if (lms_isreleased(L, arg)) luaL_argerror(L, arg, "tensor has been released");
}

static int binary(lua_State *L, ms_binop op, int a_arg, int b_arg) {
  ms_ctx *ctx = lms_ctx(L);
  checkoperand(L, a_arg);
  checkoperand(L, b_arg);
  ms_tensor **box = lms_newbox(L);
  /* Read after the last allocation; an operand released meanwhile is reported by the check. */
  checkoperand(L, a_arg);
  checkoperand(L, b_arg);
  ms_tensor *a = lms_testtensor(L, a_arg), *b = lms_testtensor(L, b_arg), *t;
  int st;
  if (a && b) {
    st = ms_binary(ctx, op, a, b, &t);
  } else if (a) {
    st = ms_binary_scalar(ctx, op, a, lua_tonumber(L, b_arg), 0, &t);
  } else if (b) {
    st = ms_binary_scalar(ctx, op, b, lua_tonumber(L, a_arg), 1, &t);
  } else {
    ms_tensor *s;
    st = ms_tensor_scalar(ctx, lua_tonumber(L, a_arg), &s);
    if (st == MS_OK) {
      st = ms_binary_scalar(ctx, op, s, lua_tonumber(L, b_arg), 0, &t);
      ms_tensor_release(s);
    }
  }
  return lms_finish(L, box, st, &t);
}

static int l_binary(lua_State *L) {
  lua_settop(L, 2);
  return binary(L, (ms_binop)lua_tointeger(L, lua_upvalueindex(1)), 1, 2);
}

static int l_unary(lua_State *L) {
  ms_unop op = (ms_unop)lua_tointeger(L, lua_upvalueindex(1));
  lua_settop(L, 1);
  lms_checktensorish(L, 1); /* a number becomes a 0-d tensor in slot 1 */
  ms_tensor **box = lms_newbox(L);
  ms_tensor *a = lms_checktensor(L, 1), *t;
  return lms_finish(L, box, ms_unary(lms_ctx(L), op, a, &t), &t);
}

static int tensor_unm(lua_State *L) {
  lua_settop(L, 1);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *a = lms_checktensor(L, 1), *t;
  return lms_finish(L, box, ms_unary(lms_ctx(L), MS_NEG, a, &t), &t);
}

/* t:sum([dim [, keepdim]]): over everything gives a 0-d tensor; argmax/argmin are 1-based. */
static int l_reduce(lua_State *L) {
  ms_redop op = (ms_redop)lua_tointeger(L, lua_upvalueindex(1));
  lua_settop(L, 3);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *a = lms_checktensor(L, 1);
  int axis = lua_isnoneornil(L, 2) ? MS_ALL : checkaxis(L, 2, ms_tensor_ndim(a));
  int keepdim = lua_toboolean(L, 3);
  /* Checked here so the message names the axis as Lua numbers it (the engine's is 0-based). */
  if (axis != MS_ALL && ms_tensor_dim(a, axis) == 0 &&
      (op == MS_MAX || op == MS_MIN || op == MS_ARGMAX || op == MS_ARGMIN)) {
    char b[MS_SHAPE_STRLEN];
    return luaL_error(L, "%s: cannot reduce empty axis %d of shape %s", ms_redop_name(op), axis + 1,
                      ms_shape_str(ms_tensor_ndim(a), ms_tensor_shape(a), b, sizeof b));
  }
  ms_tensor *t, *t1;
  int st = ms_reduce(lms_ctx(L), op, a, axis, keepdim, &t);
  if (st == MS_OK && (op == MS_ARGMAX || op == MS_ARGMIN)) {
    st = ms_binary_scalar(lms_ctx(L), MS_ADD, t, 1.0, 0, &t1);
    ms_tensor_release(t);
    t = t1;
  }
  return lms_finish(L, box, st, &t);
}

static int l_where(lua_State *L) {
  lua_settop(L, 3);
  for (int i = 1; i <= 3; i++) lms_checktensorish(L, i); /* numbers become 0-d tensors */
  ms_tensor **box = lms_newbox(L);
  ms_tensor *c = lms_checktensor(L, 1), *a = lms_checktensor(L, 2), *b = lms_checktensor(L, 3), *t;
  return lms_finish(L, box, ms_where(lms_ctx(L), c, a, b, &t), &t);
}

static int l_clamp(lua_State *L) {
  lua_settop(L, 3);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *a = lms_checktensor(L, 1), *t;
  double lo = luaL_optnumber(L, 2, -HUGE_VAL), hi = luaL_optnumber(L, 3, HUGE_VAL);
  return lms_finish(L, box, ms_clamp(lms_ctx(L), a, lo, hi, &t), &t);
}

static int l_all_finite(lua_State *L) {
  lua_pushboolean(L, ms_tensor_all_finite(lms_checktensor(L, 1)));
  return 1;
}

static int l_max_abs_diff(lua_State *L) {
  ms_tensor *a = lms_checktensor(L, 1), *b = lms_checktensor(L, 2);
  double d;
  if (ms_max_abs_diff(lms_ctx(L), a, b, &d) != MS_OK) return lms_error(L);
  lua_pushnumber(L, d);
  return 1;
}

/* Comparisons with < and <= give booleans, so only one-element operands make sense. */
static double checkscalar(lua_State *L, int arg, const char *op) {
  checkoperand(L, arg);
  if (lua_type(L, arg) == LUA_TNUMBER) return lua_tonumber(L, arg);
  ms_tensor *t = lms_checktensor(L, arg);
  double v;
  if (ms_tensor_numel(t) != 1) {
    char b[MS_SHAPE_STRLEN];
    luaL_error(L,
               "%s: comparison operators need one-element tensors, got shape %s (use ms.%s for "
               "element-wise)",
               op, ms_shape_str(ms_tensor_ndim(t), ms_tensor_shape(t), b, sizeof b),
               op[0] == '<' && op[1] == '=' ? "le" : "lt");
  }
  ms_tensor_item(lms_ctx(L), t, &v);
  return v;
}

static int tensor_lt(lua_State *L) {
  double a = checkscalar(L, 1, "<"), b = checkscalar(L, 2, "<");
  lua_pushboolean(L, a < b);
  return 1;
}

static int tensor_le(lua_State *L) {
  double a = checkscalar(L, 1, "<="), b = checkscalar(L, 2, "<=");
  lua_pushboolean(L, a <= b);
  return 1;
}

/* ---- linear algebra ---- */

typedef int (*binfn)(ms_ctx *, const ms_tensor *, const ms_tensor *, ms_tensor **);

static int linalg2(lua_State *L, binfn fn) {
  lua_settop(L, 2);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *a = lms_checktensor(L, 1), *b = lms_checktensor(L, 2), *t;
  return lms_finish(L, box, fn(lms_ctx(L), a, b, &t), &t);
}

static int l_dot(lua_State *L) { return linalg2(L, ms_dot); }
static int l_matvec(lua_State *L) { return linalg2(L, ms_matvec); }
static int l_matmul(lua_State *L) { return linalg2(L, ms_matmul); }
static int l_outer(lua_State *L) { return linalg2(L, ms_outer); }
static int l_solve(lua_State *L) { return linalg2(L, ms_solve); }

static int l_cholesky(lua_State *L) { return tensor1(L, ms_cholesky); }
static int l_inv(lua_State *L) { return tensor1(L, ms_inv); }
static int l_det(lua_State *L) { return tensor1(L, ms_det); }

typedef int (*pairfn)(ms_ctx *, const ms_tensor *, ms_tensor **, ms_tensor **);

static int linalg_pair(lua_State *L, pairfn fn) {
  lua_settop(L, 1);
  ms_tensor **b1 = lms_newbox(L);
  ms_tensor **b2 = lms_newbox(L);
  ms_tensor *a = lms_checktensor(L, 1), *x, *y;
  if (fn(lms_ctx(L), a, &x, &y) != MS_OK) return lms_error(L);
  *b1 = x;
  *b2 = y;
  return lms_result(L, MS_OK, 2);
}

static int l_eigh(lua_State *L) { return linalg_pair(L, ms_eigh); }
static int l_qr(lua_State *L) { return linalg_pair(L, ms_qr); }

/* ---- registration ---- */

static const luaL_Reg functions[] = {{"tensor", l_tensor},
                                     {"zeros", l_zeros},
                                     {"ones", l_ones},
                                     {"full", l_full},
                                     {"eye", l_eye},
                                     {"diag", l_diag},
                                     {"arange", l_arange},
                                     {"linspace", l_linspace},
                                     {"rand", l_rand},
                                     {"randn", l_randn},
                                     {"seed", l_seed},
                                     {"cat", l_cat},
                                     {"where", l_where},
                                     {"clamp", l_clamp},
                                     {"all_finite", l_all_finite},
                                     {"max_abs_diff", l_max_abs_diff},
                                     {"dot", l_dot},
                                     {"matvec", l_matvec},
                                     {"matmul", l_matmul},
                                     {"outer", l_outer},
                                     {"solve", l_solve},
                                     {"cholesky", l_cholesky},
                                     {"inv", l_inv},
                                     {"det", l_det},
                                     {"eigh", l_eigh},
                                     {"qr", l_qr},
                                     {"memory", l_memory},
                                     {"set_memory_limit", l_set_memory_limit},
                                     {"set_check_numerics", l_set_check_numerics},
                                     {NULL, NULL}};

static const luaL_Reg methods[] = {{"shape", m_shape},
                                   {"size", m_size},
                                   {"numel", m_numel},
                                   {"ndim", m_ndim},
                                   {"is_contiguous", m_is_contiguous},
                                   {"shares_storage", m_shares_storage},
                                   {"version", m_version},
                                   {"item", m_item},
                                   {"totable", m_totable},
                                   {"clone", m_clone},
                                   {"contiguous", m_contiguous},
                                   {"view", m_view},
                                   {"reshape", m_reshape},
                                   {"flatten", m_flatten},
                                   {"transpose", m_transpose},
                                   {"t", m_transpose},
                                   {"permute", m_permute},
                                   {"slice", m_slice},
                                   {"select", m_select},
                                   {"expand", m_expand},
                                   {"fill", m_fill},
                                   {"assign", m_assign},
                                   {"diag", l_diag},
                                   {"where", l_where},
                                   {"clamp", l_clamp},
                                   {"all_finite", l_all_finite},
                                   {"dot", l_dot},
                                   {"matvec", l_matvec},
                                   {"matmul", l_matmul},
                                   {"outer", l_outer},
                                   {"tostring", m_tostring},
                                   {NULL, NULL}};

/* One op as a closure over its number, under its name in the functions and the methods. */
static void register_op(lua_State *L, lua_CFunction fn, int op, const char *name, int functions_idx,
                        int methods_idx) {
  lua_pushinteger(L, op);
  lua_pushcclosure(L, fn, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, functions_idx, name);
  lua_setfield(L, methods_idx, name);
}

static void register_ops(lua_State *L, int functions_idx, int methods_idx) {
  for (int op = 0; op < MS_BINOP_COUNT; op++)
    register_op(L, l_binary, op, ms_binop_name((ms_binop)op), functions_idx, methods_idx);
  for (int op = 0; op < MS_UNOP_COUNT; op++)
    register_op(L, l_unary, op, ms_unop_name((ms_unop)op), functions_idx, methods_idx);
  for (int op = 0; op < MS_REDOP_COUNT; op++)
    register_op(L, l_reduce, op, ms_redop_name((ms_redop)op), functions_idx, methods_idx);
}

static void set_arith(lua_State *L, const char *event, ms_binop op) {
  lua_pushinteger(L, op);
  lua_pushcclosure(L, l_binary, 1);
  lua_setfield(L, -2, event);
}

/* The tensor metatable's functions (__index, a closure over the methods, and the arithmetic
 * events are set apart). */
static const luaL_Reg tensor_meta[] = {{"__newindex", tensor_newindex},
                                       {"__gc", tensor_gc},
                                       {"__close", tensor_gc},
                                       {"__tostring", m_tostring},
                                       {"__len", m_len},
                                       {"__unm", tensor_unm},
                                       {"__lt", tensor_lt},
                                       {"__le", tensor_le},
                                       {NULL, NULL}};

int luaopen_metastep_core(lua_State *L) {
  lms_ctx(L); /* create the context before any tensor can exist */
  luaL_newlib(L, functions);
  int lib = lua_gettop(L);
  luaL_newlib(L, methods);
  int meths = lua_gettop(L);
  register_ops(L, lib, meths);

  if (luaL_newmetatable(L, LMS_TENSOR)) {
    lua_pushvalue(L, meths);
    lua_pushcclosure(L, tensor_index, 1);
    lua_setfield(L, -2, "__index");
    luaL_setfuncs(L, tensor_meta, 0);
    set_arith(L, "__add", MS_ADD);
    set_arith(L, "__sub", MS_SUB);
    set_arith(L, "__mul", MS_MUL);
    set_arith(L, "__div", MS_DIV);
    set_arith(L, "__pow", MS_POW);
    lua_pushliteral(L, "Tensor");
    lua_setfield(L, -2, "__name");
  }
  lua_setfield(L, lib, "Tensor_mt"); /* the metatable, for type tests */
  lua_pushvalue(L, meths);
  lua_setfield(L, lib, "Tensor"); /* methods table, so Lua code can add methods */
  lua_pop(L, 1);
  lms_open_autodiff(L);
  lms_open_objective(L);
  lms_open_l2l(L);
  lms_open_archive(L);
  lms_open_nn(L);
  lms_open_sys(L);
  lms_open_learned(L);
  lua_pushliteral(L, METASTEP_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}
