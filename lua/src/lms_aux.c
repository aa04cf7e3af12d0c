/*
 * The bindings' helper library: the per-state context, errors, tensor boxes, the
 * Lua-callback helper and the engine-call handoff. Every binding file uses these; none
 * writes its own.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lms.h"

/* ---- per-state context ---- */

typedef struct lms_state {
  ms_ctx *ctx;
  size_t gc_threshold; /* live engine bytes at which the next full collection runs */
  int raised;          /* status of the last engine failure raised by lms_error */
} lms_state;

static const char *const STATE_KEY = "metastep.state";
#define GC_MIN_THRESHOLD ((size_t)64 << 20)

static int state_gc(lua_State *L) {
  lms_state *s = lua_touserdata(L, 1);
  if (s->ctx) ms_ctx_free(s->ctx);
  s->ctx = NULL;
  return 0;
}

static lms_state *getstate(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, STATE_KEY) == LUA_TUSERDATA) {
    lms_state *s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return s;
  }
  lua_pop(L, 1);
  /* The box exists (empty) before the context is acquired, so a failure cannot leak it. */
  lms_state *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->ctx = NULL;
  s->gc_threshold = GC_MIN_THRESHOLD;
  s->raised = MS_OK;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, state_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  /* The context allocates through the state's allocator: a host's lua_Alloc (metastep_lua.h)
   * then counts Lua's and the engine's bytes against one budget. */
  void *aud;
  lua_Alloc af = lua_getallocf(L, &aud);
  s->ctx = ms_ctx_new(af, aud);
  if (s->ctx == NULL) luaL_error(L, "metastep: cannot create the engine context (out of memory)");
  /* Outside any engine call, callbacks run on the main thread (see lms_enter). */
  ms_ctx_set_userdata(s->ctx, lms_mainthread(L));
  lua_setfield(L, LUA_REGISTRYINDEX, STATE_KEY);
  return s;
}

ms_ctx *lms_ctx(lua_State *L) { return getstate(L)->ctx; }

lua_State *lms_mainthread(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  lua_State *M = lua_tothread(L, -1);
  lua_pop(L, 1);
  return M;
}

/* ---- errors ---- */

void lms_where(lua_State *L, int level) {
  lua_Debug ar;
  for (; lua_getstack(L, level, &ar); level++) {
    lua_getinfo(L, "Sl", &ar);
    if (ar.currentline > 0) {
      lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
      return;
    }
  }
  lua_pushliteral(L, "");
}

/*
 * Pushes msg with its element indices 1-based: the engine numbers elements from 0, Lua
 * users from 1. Rewritten are the messages that name elements as "name[i,j]" (integers in
 * brackets right after an identifier; shapes follow a space and are left alone): those the
 * engine marks "(0-based" (the mark is dropped) and the pivots of a singular matrix.
 */
static void push_one_based(lua_State *L, const char *msg) {
  const char *mark = strstr(msg, " (0-based");
  if (mark == NULL && strstr(msg, "is singular (U[") == NULL) {
    lua_pushstring(L, msg);
    return;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  const char *p = msg;
  while (*p) {
    if (p == mark) {
      p += strlen(" (0-based");
      if (*p == ')') { /* " (0-based)" */
        p++;
      } else if (*p == ';') { /* " (0-based; more)" -> " (more)" */
        p++;
        if (*p == ' ') p++;
        luaL_addstring(&b, " (");
      } else {
        luaL_addstring(&b, " (0-based");
      }
      continue;
    }
    if (*p == '[' && p > msg && (isalnum((unsigned char)p[-1]) || p[-1] == '_')) {
      luaL_addchar(&b, *p++);
      while (*p && *p != ']') {
        if (isdigit((unsigned char)*p)) {
          char *end;
          long long v = strtoll(p, &end, 10);
          char num[32];
          snprintf(num, sizeof num, "%lld", v + 1);
          luaL_addstring(&b, num);
          p = end;
        } else {
          luaL_addchar(&b, *p++);
        }
      }
      continue;
    }
    luaL_addchar(&b, *p++);
  }
  luaL_pushresult(&b);
}

int lms_take_raised(lua_State *L) {
  lms_state *s = getstate(L);
  int st = s->raised;
  s->raised = MS_OK;
  return st;
}

int lms_error(lua_State *L) {
  ms_ctx *ctx = lms_ctx(L);
  getstate(L)->raised = ms_ctx_status(ctx);
  if (ms_ctx_status(ctx) == MS_ECALLBACK &&
      lua_getfield(L, LUA_REGISTRYINDEX, LMS_CALLBACK_ERROR) != LUA_TNIL) {
    /* a callback's own error object, raised again unchanged */
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, LMS_CALLBACK_ERROR);
    ms_ctx_clear_error(ctx);
    return lua_error(L);
  }
  const char *msg = ms_ctx_error(ctx);
  luaL_where(L, 1);
  if (!*msg)
    lua_pushstring(L, ms_status_name(ms_ctx_status(ctx)));
  else if (ms_ctx_status(ctx) == MS_ECALLBACK) /* a callback's text, as it was written */
    lua_pushstring(L, msg);
  else
    push_one_based(L, msg);
  ms_ctx_clear_error(ctx);
  lua_concat(L, 2);
  return lua_error(L);
}

void lms_checkoptions(lua_State *L, int arg, const char *const *known) {
  if (!lua_istable(L, arg)) return;
  arg = lua_absindex(L, arg);
  lua_pushnil(L);
  while (lua_next(L, arg)) {
    lua_pop(L, 1);
    int ok = 0;
    if (lua_type(L, -1) == LUA_TSTRING)
      for (const char *const *k = known; *k && !ok; k++) ok = strcmp(lua_tostring(L, -1), *k) == 0;
    if (!ok) {
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (const char *const *k = known; *k; k++) {
        if (k != known) luaL_addstring(&b, ", ");
        luaL_addstring(&b, *k);
      }
      luaL_pushresult(&b);
      const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : luaL_typename(L, -2);
      luaL_argerror(
          L, arg,
          lua_pushfstring(L, "unknown option '%s' (expected %s)", key, lua_tostring(L, -1)));
    }
  }
}

/* ---- tensor boxes ---- */

ms_tensor **lms_newbox(lua_State *L) {
  ms_tensor **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, LMS_TENSOR);
  return box;
}

ms_tensor *lms_testtensor(lua_State *L, int arg) {
  ms_tensor **box = luaL_testudata(L, arg, LMS_TENSOR);
  return box ? *box : NULL;
}

int lms_isreleased(lua_State *L, int arg) {
  ms_tensor **box = luaL_testudata(L, arg, LMS_TENSOR);
  return box != NULL && *box == NULL;
}

ms_tensor *lms_checktensor(lua_State *L, int arg) {
  ms_tensor **box = luaL_testudata(L, arg, LMS_TENSOR);
  if (box == NULL) luaL_typeerror(L, arg, "tensor");
  if (*box == NULL) luaL_argerror(L, arg, "tensor has been released");
  return *box;
}

ms_tensor *lms_checktensorish(lua_State *L, int arg) {
  if (lua_type(L, arg) == LUA_TNUMBER) {
    /* The scalar tensor lives in a box that replaces the number: Lua owns it at once. */
    arg = lua_absindex(L, arg);
    double v = lua_tonumber(L, arg);
    ms_tensor **box = lms_newbox(L);
    if (ms_tensor_scalar(lms_ctx(L), v, box) != MS_OK) lms_error(L);
    lua_replace(L, arg);
    return *box;
  }
  ms_tensor **box = luaL_testudata(L, arg, LMS_TENSOR);
  if (box == NULL) luaL_typeerror(L, arg, "tensor or number");
  if (*box == NULL) luaL_argerror(L, arg, "tensor has been released");
  return *box;
}

void lms_pushref(lua_State *L, ms_tensor *t) {
  if (t == NULL) {
    lua_pushnil(L);
    return;
  }
  ms_tensor **box = lms_newbox(L);
  *box = ms_tensor_retain(t);
}

/* Runs a full collection once live tensor bytes pass a threshold: a tensor userdata is
 * small to Lua's collector but may own megabytes, so the collector must be told. */
static void gc_step(lua_State *L) {
  lms_state *s = getstate(L);
  size_t bytes = ms_ctx_bytes(s->ctx);
  if (bytes < s->gc_threshold) return;
  lua_gc(L, LUA_GCCOLLECT);
  bytes = ms_ctx_bytes(s->ctx);
  s->gc_threshold = bytes * 2 > GC_MIN_THRESHOLD ? bytes * 2 : GC_MIN_THRESHOLD;
}

int lms_result(lua_State *L, int st, int nret) {
  if (st != MS_OK) return lms_error(L);
  gc_step(L);
  return nret;
}

int lms_finish(lua_State *L, ms_tensor **box, int st, ms_tensor **t) {
  if (st == MS_OK) *box = *t;
  return lms_result(L, st, 1);
}

/* ---- calling Lua from engine callbacks ---- */

lua_State *lms_running(ms_ctx *ctx) { return ms_ctx_userdata(ctx); }

typedef struct cbcall {
  int ref, nres;
  lms_pushfn push;
  void *ud;
} cbcall;

/* Message handlers (light C functions: pushing one allocates nothing, and an allocation
 * error before lua_pcall would jump over the engine frames below us): the message with a
 * traceback; the same, keeping the error object for lms_error; or keeping it with the
 * message alone. */
static const char *cb_message(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  return msg ? msg : lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
}

static int cb_msgh(lua_State *L) {
  luaL_traceback(L, L, cb_message(L), 1);
  return 1;
}

static void keep_error(lua_State *L) {
  lua_pushvalue(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, LMS_CALLBACK_ERROR);
}

static int cb_msgh_keep(lua_State *L) {
  keep_error(L);
  return cb_msgh(L);
}

static int cb_msgh_plain(lua_State *L) {
  keep_error(L);
  lua_pushstring(L, cb_message(L));
  return 1;
}

/* Runs under lua_pcall: clearing the pending error and pushing the arguments allocate, and
 * an allocation error must not jump over the engine frames below us. */
static int cb_protected(lua_State *L) {
  const cbcall *c = lua_touserdata(L, 1);
  lua_pushnil(L);
  lua_setfield(L, LUA_REGISTRYINDEX, LMS_CALLBACK_ERROR);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
  int n = c->push ? c->push(L, c->ud) : 0;
  lua_call(L, n, c->nres);
  return c->nres;
}

int lms_callback(ms_ctx *ctx, lua_State *L, int ref, lms_pushfn push, void *ud, int nres, int keep,
                 const char *name, const char *what) {
  if (!lua_checkstack(L, nres + 4))
    return ms_ctx_fail(ctx, MS_ENOMEM, "%s%sLua stack overflow", name ? name : "",
                       name ? ": " : "");
  int base = lua_gettop(L);
  cbcall c = {ref, nres, push, ud};
  lua_pushcfunction(L, keep == LMS_CB_PLAIN ? cb_msgh_plain : keep ? cb_msgh_keep : cb_msgh);
  lua_pushcfunction(L, cb_protected);
  lua_pushlightuserdata(L, &c);
  if (lua_pcall(L, 1, nres, base + 1) != LUA_OK) {
    const char *msg = lua_isstring(L, -1) ? lua_tostring(L, -1) : "(error object is not a string)";
    int st = name ? ms_ctx_fail(ctx, MS_ECALLBACK, "%s: error in %s: %s", name, what, msg)
                  : ms_ctx_fail(ctx, MS_ECALLBACK, "%s", msg);
    lua_settop(L, base);
    return st;
  }
  lua_remove(L, base + 1); /* the handler */
  return MS_OK;
}

/* ---- the engine-call handoff ---- */

ms_ctx *lms_enter(lua_State *L, lms_entry *e) {
  memset(e, 0, sizeof *e);
  e->ctx = lms_ctx(L);
  e->prev = ms_ctx_userdata(e->ctx);
  ms_ctx_set_userdata(e->ctx, L);
  return e->ctx;
}

void lms_hold_tensor(lms_entry *e, ms_tensor *t) {
  if (t == NULL) return;
  /* LMS_HOLD slots: a binding holding more passes a list (lms_hold_tensors) */
  e->tensors[e->ntensors++] = ms_tensor_retain(t);
}

void lms_hold_tensors(lms_entry *e, int n, ms_tensor *const *ts) {
  for (int i = 0; i < n; i++) ms_tensor_retain(ts[i]);
  e->list = ts;
  e->nlist = n;
}

void lms_hold_objective(lms_entry *e, ms_objective *o) { e->objective = ms_objective_retain(o); }

void lms_hold_custom(lms_entry *e, ms_custom *op) { e->custom = ms_custom_retain(op); }

void lms_leave(lms_entry *e) {
  ms_ctx_set_userdata(e->ctx, e->prev);
  for (int i = 0; i < e->nlist; i++) ms_tensor_release(e->list[i]);
  for (int i = e->ntensors - 1; i >= 0; i--) ms_tensor_release(e->tensors[i]);
  ms_objective_release(e->objective);
  ms_custom_release(e->custom);
  e->nlist = e->ntensors = 0;
  e->objective = NULL;
  e->custom = NULL;
}
