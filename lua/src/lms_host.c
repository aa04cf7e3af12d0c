/*
 * The host API of metastep_lua.h: a Lua state with metastep loaded, run under a memory budget
 * (a counting lua_Alloc that the engine context shares), an instruction and time budget (a
 * count hook for Lua code, a poll for engine loops) and a choice of standard libraries.
 *
 * The ms_lua itself is malloc'ed (outside the budget, so the allocator can always reach it);
 * every byte of the Lua state and the engine context goes through host_alloc. Each Lua thread
 * finds its ms_lua in the state's extra space, so nothing here is global.
 */
#define _POSIX_C_SOURCE 199309L

#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lms.h"
#include "metastep_lua.h"

#define HOOK_EVERY 1000        /* Lua instructions between two looks at the budget */
#define POLL_INSTRUCTIONS 1000 /* what one engine poll is charged against instruction_limit */

struct ms_lua {
  lua_State *L;
  ms_ctx *ctx;
  ms_lua_options opt;
  size_t bytes, peak;
  int refused;     /* the allocator refused a request during this run */
  int64_t count;   /* instructions charged during this run */
  double deadline; /* monotonic seconds; 0 = none */
  int expired;     /* 0, or which budget this run spent: 1 instructions, 2 time */
  int running;     /* budgets apply (inside ms_lua_run_*) */
  char err[1024];
};

/* ---- the budgets ---- */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* lua_Alloc counting every byte against opt.memory_limit (Lua passes a type tag as osize
 * when ptr is NULL). Shrinking never fails, as Lua requires. */
static void *host_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  ms_lua *h = ud;
  if (ptr == NULL) osize = 0;
  if (nsize == 0) {
    free(ptr);
    h->bytes -= osize;
    return NULL;
  }
  if (nsize > osize && h->opt.memory_limit > 0) {
    size_t grow = nsize - osize;
    if (grow > h->opt.memory_limit || h->bytes > h->opt.memory_limit - grow) {
      h->refused = 1;
      return NULL;
    }
  }
  void *p = realloc(ptr, nsize);
  if (p == NULL) {
    if (nsize <= osize) return ptr; /* keep the larger block */
    h->refused = 1;
    return NULL;
  }
  h->bytes = h->bytes - osize + nsize;
  if (h->bytes > h->peak) h->peak = h->bytes;
  return p;
}

static ms_lua *host_of(lua_State *L) { return *(ms_lua **)lua_getextraspace(L); }

/* Charges n instructions and looks at the clock; sets expired when a budget is spent. */
static int spent(ms_lua *h, int64_t n) {
  if (!h->running) return 0;
  if (!h->expired) {
    h->count += n;
    if (h->opt.instruction_limit > 0 && h->count > h->opt.instruction_limit)
      h->expired = 1;
    else if (h->deadline > 0 && now() > h->deadline)
      h->expired = 2;
  }
  return h->expired;
}

static const char *budget_message(const ms_lua *h) {
  return h->expired == 1 ? "instruction budget exceeded" : "time budget exceeded";
}

/* Count hook: once a budget is spent it fires on every instruction, so a script that catches
 * the error with pcall gets it again at its next instruction. */
static void count_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  ms_lua *h = host_of(L);
  if (spent(h, lua_gethookcount(L))) {
    lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "%s", budget_message(h));
  }
}

/* The engine's poll (ms_ctx_set_poll): the same budgets, for loops that run no Lua. */
static int engine_poll(void *ud) { return spent(ud, POLL_INSTRUCTIONS); }

/* ---- the state ---- */

static void seterr(char *err, size_t size, const char *msg) {
  if (size > 0) snprintf(err, size, "%s", msg);
}

/* Opens the chosen libraries and metastep (global ms); runs protected (lua_pcall). */
static int open_libs(lua_State *L) {
  ms_lua *h = host_of(L);
  unsigned libs = h->opt.libs;
  static const struct {
    unsigned bit;
    const char *name;
    lua_CFunction open;
  } table[] = {{MS_LUA_LIB_COROUTINE, LUA_COLIBNAME, luaopen_coroutine},
               {MS_LUA_LIB_TABLE, LUA_TABLIBNAME, luaopen_table},
               {MS_LUA_LIB_STRING, LUA_STRLIBNAME, luaopen_string},
               {MS_LUA_LIB_MATH, LUA_MATHLIBNAME, luaopen_math},
               {MS_LUA_LIB_UTF8, LUA_UTF8LIBNAME, luaopen_utf8},
               {MS_LUA_LIB_OS, LUA_OSLIBNAME, luaopen_os},
               {MS_LUA_LIB_IO, LUA_IOLIBNAME, luaopen_io},
               {MS_LUA_LIB_DEBUG, LUA_DBLIBNAME, luaopen_debug}};
  luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
  luaL_requiref(L, LUA_LOADLIBNAME, luaopen_package, 1);
  lua_pop(L, 2);
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
    if (libs & table[i].bit) {
      luaL_requiref(L, table[i].name, table[i].open, 1);
      lua_pop(L, 1);
    }
  }
  if (!(libs & MS_LUA_LIB_PACKAGE)) {
    /* require finds package.preload only (the embedded metastep modules): no file, no C
     * library; load takes text only (precompiled chunks can break the VM's invariants);
     * dofile and loadfile go unless the host gave io. */
    static const char strip[] =
        "local package, load = package, load\n"
        "package.searchers = {package.searchers[1]}\n"
        "package.path, package.cpath, package.loadlib = '', '', nil\n"
        "_ENV.load = function(chunk, name, mode, env) return load(chunk, name, 't', env) end\n";
    if (luaL_loadbuffer(L, strip, sizeof strip - 1, "=host") != LUA_OK) return lua_error(L);
    lua_call(L, 0, 0);
  }
  if (!(libs & MS_LUA_LIB_OS)) {
    /* os without the process and the file system: clock, time and difftime (meta.train times
     * its progress with os.clock), not registered in package.loaded */
    lua_pushcfunction(L, luaopen_os);
    lua_call(L, 0, 1);
    lua_createtable(L, 0, 3);
    static const char *const keep[] = {"clock", "time", "difftime"};
    for (int i = 0; i < 3; i++) {
      lua_getfield(L, -2, keep[i]);
      lua_setfield(L, -2, keep[i]);
    }
    lua_setglobal(L, LUA_OSLIBNAME);
    lua_pop(L, 1);
  }
  if (!(libs & MS_LUA_LIB_IO)) {
    lua_pushnil(L);
    lua_setglobal(L, "dofile");
    lua_pushnil(L);
    lua_setglobal(L, "loadfile");
  }
  /* The front library keeps debug.getinfo for its error messages: it loads with debug
   * present, which is then hidden again unless the host gave it. */
  if (!(libs & MS_LUA_LIB_DEBUG)) {
    luaL_requiref(L, LUA_DBLIBNAME, luaopen_debug, 1);
    lua_pop(L, 1);
  }
  lms_preload(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "metastep");
  lua_call(L, 1, 1);
  lua_setglobal(L, "ms");
  if (!(libs & MS_LUA_LIB_DEBUG)) {
    lua_pushnil(L);
    lua_setglobal(L, LUA_DBLIBNAME);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushnil(L);
    lua_setfield(L, -2, LUA_DBLIBNAME);
    lua_pop(L, 1);
  }
  if (!(libs & MS_LUA_LIB_IO)) {
    /* meta.train writes progress to io.stderr and logs with io.open: without io, progress
     * goes nowhere and io.open answers nil, msg as for a file it cannot open */
    static const char noio[] =
        "local sink = setmetatable({}, {__index = {write = function(self) return self end,\n"
        "  flush = function(self) return self end}})\n"
        "io = {stderr = sink, stdout = sink,\n"
        "  open = function(path) return nil, tostring(path) .. ': no files in this host' end}\n";
    if (luaL_loadbuffer(L, noio, sizeof noio - 1, "=host") != LUA_OK) return lua_error(L);
    lua_call(L, 0, 0);
  }
  if (h->opt.sandbox && h->opt.memory_limit > 0) {
    lua_pushinteger(L, (lua_Integer)h->opt.memory_limit);
    lua_setfield(L, LUA_REGISTRYINDEX, LMS_SANDBOX_LIMIT);
  }
  return 0;
}

int ms_lua_new(const ms_lua_options *opts, ms_lua **out, char *err, size_t err_size) {
  *out = NULL;
  seterr(err, err_size, "");
  ms_lua_options o;
  memset(&o, 0, sizeof o);
  if (opts) o = *opts;
  if (o.libs == 0) o.libs = MS_LUA_LIBS_SAFE;
  if (o.libs & ~(unsigned)MS_LUA_LIBS_ALL) {
    if (err_size)
      snprintf(err, err_size, "ms_lua_new: option 'libs' has unknown bits 0x%x", o.libs);
    return MS_EARG;
  }
  if (o.instruction_limit < 0 || !(o.time_limit >= 0) || isinf(o.time_limit)) {
    if (err_size)
      snprintf(err, err_size,
               "ms_lua_new: options 'instruction_limit' and 'time_limit' must be finite and >= 0, "
               "got %lld and %g",
               (long long)o.instruction_limit, o.time_limit);
    return MS_EARG;
  }
  ms_lua *h = calloc(1, sizeof *h);
  if (h == NULL) {
    seterr(err, err_size, "ms_lua_new: out of memory");
    return MS_ENOMEM;
  }
  h->opt = o;
  h->L = lua_newstate(host_alloc, h);
  if (h->L == NULL) {
    if (err_size)
      snprintf(err, err_size, "ms_lua_new: memory_limit %zu bytes cannot hold a Lua state",
               o.memory_limit);
    int st = h->refused ? MS_EARG : MS_ENOMEM;
    free(h);
    return st;
  }
  *(ms_lua **)lua_getextraspace(h->L) = h;
  lua_pushcfunction(h->L, open_libs);
  if (lua_pcall(h->L, 0, 0, 0) != LUA_OK) {
    int st = h->refused ? MS_EARG : MS_ENOMEM;
    if (err_size) {
      if (h->refused)
        snprintf(err, err_size,
                 "ms_lua_new: memory_limit %zu bytes is too small to load metastep (%s)",
                 o.memory_limit, lua_tostring(h->L, -1));
      else
        snprintf(err, err_size, "ms_lua_new: loading metastep failed: %s", lua_tostring(h->L, -1));
    }
    if (!h->refused) st = MS_ECALLBACK;
    lua_close(h->L);
    free(h);
    return st;
  }
  h->ctx = lms_ctx(h->L); /* made by require "metastep", so this does not allocate */
  if (o.memory_limit > 0) ms_ctx_set_limit(h->ctx, o.memory_limit);
  *out = h;
  return MS_OK;
}

void ms_lua_free(ms_lua *h) {
  if (h == NULL) return;
  lua_close(h->L);
  free(h);
}

lua_State *ms_lua_state(ms_lua *h) { return h->L; }
ms_ctx *ms_lua_ctx(ms_lua *h) { return h->ctx; }
size_t ms_lua_bytes(const ms_lua *h) { return h->bytes; }
size_t ms_lua_peak_bytes(const ms_lua *h) { return h->peak; }
const char *ms_lua_error(const ms_lua *h) { return h->err; }

/* ---- running ---- */

/* Message handler: a traceback, unless memory is short (a traceback needs memory). */
static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  if (!host_of(L)->refused) luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Error message on top of the stack (or a fixed text) into h->err; pops it. */
static void take_error(ms_lua *h, const char *prefix) {
  const char *msg = lua_tostring(h->L, -1);
  snprintf(h->err, sizeof h->err, "%s%s", prefix, msg ? msg : "(error object is not a string)");
  lua_pop(h->L, 1);
}

/* Runs the chunk on top of the stack (or reports the load status st) under the budgets. */
static int run(ms_lua *h, int st) {
  lua_State *L = h->L;
  h->err[0] = '\0';
  if (st != LUA_OK) {
    int mem = st == LUA_ERRMEM || h->refused;
    take_error(h, mem ? "memory budget exceeded: " : "");
    lua_gc(L, LUA_GCCOLLECT);
    return mem ? MS_ENOMEM : MS_EARG;
  }
  h->refused = 0;
  int base = lua_gettop(L);
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  h->count = 0;
  h->expired = 0;
  h->deadline = h->opt.time_limit > 0 ? now() + h->opt.time_limit : 0;
  h->running = 1;
  ms_ctx_clear_interrupt(h->ctx);
  ms_ctx_clear_error(h->ctx);
  lms_take_raised(L);
  if (h->opt.instruction_limit > 0 || h->opt.time_limit > 0) {
    lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
    ms_ctx_set_poll(h->ctx, engine_poll, h);
  }
  st = lua_pcall(L, 0, 0, base);
  h->running = 0;
  lua_sethook(L, NULL, 0, 0);
  ms_ctx_set_poll(h->ctx, NULL, NULL);
  int status = MS_OK, raised = lms_take_raised(L);
  if (st != LUA_OK) {
    if (h->expired) {
      status = MS_EINTERRUPT;
      /* the hook's own error says it; an engine loop's "...: interrupted" gets the reason */
      const char *msg = lua_tostring(L, -1);
      char prefix[64] = "";
      if (msg == NULL || strstr(msg, budget_message(h)) == NULL)
        snprintf(prefix, sizeof prefix, "%s: ", budget_message(h));
      take_error(h, prefix);
    } else if (st == LUA_ERRMEM || h->refused || raised == MS_ENOMEM) {
      status = MS_ENOMEM;
      take_error(h, "memory budget exceeded: ");
    } else {
      status = MS_ECALLBACK;
      take_error(h, "");
    }
  }
  lua_remove(L, base);
  ms_ctx_clear_interrupt(h->ctx);
  ms_ctx_clear_error(h->ctx);
  if (status != MS_OK) lua_gc(L, LUA_GCCOLLECT);
  return status;
}

int ms_lua_run_string(ms_lua *h, const char *code, const char *name) {
  h->refused = 0;
  return run(h, luaL_loadbuffer(h->L, code, strlen(code), name ? name : "=script"));
}

int ms_lua_run_file(ms_lua *h, const char *path) {
  h->refused = 0;
  return run(h, luaL_loadfile(h->L, path));
}

/* ---- values both ways ---- */

static int fail_global(ms_lua *h, const char *name, const char *want) {
  snprintf(h->err, sizeof h->err, "global '%s' is %s, expected %s", name, luaL_typename(h->L, -1),
           want);
  lua_pop(h->L, 1);
  return MS_EARG;
}

int ms_lua_get_number(ms_lua *h, const char *name, double *out) {
  if (lua_getglobal(h->L, name) != LUA_TNUMBER) return fail_global(h, name, "a number");
  *out = lua_tonumber(h->L, -1);
  lua_pop(h->L, 1);
  return MS_OK;
}

int ms_lua_get_string(ms_lua *h, const char *name, char *buf, size_t size) {
  if (lua_getglobal(h->L, name) != LUA_TSTRING) return fail_global(h, name, "a string");
  if (size > 0) snprintf(buf, size, "%s", lua_tostring(h->L, -1));
  lua_pop(h->L, 1);
  return MS_OK;
}

int ms_lua_get_tensor(ms_lua *h, const char *name, ms_tensor **out) {
  *out = NULL;
  lua_getglobal(h->L, name);
  ms_tensor *t = lms_testtensor(h->L, -1);
  if (t == NULL)
    return fail_global(h, name, lms_isreleased(h->L, -1) ? "a live tensor" : "a tensor");
  *out = ms_tensor_retain(t);
  lua_pop(h->L, 1);
  return MS_OK;
}

enum { SET_NUMBER, SET_TENSOR, SET_OBJECTIVE };
typedef struct setarg {
  int kind;
  const char *name;
  double x;
  ms_tensor *t;
  ms_objective *obj;
} setarg;

static int set_global(lua_State *L) {
  setarg *a = lua_touserdata(L, 1);
  if (a->kind == SET_NUMBER)
    lua_pushnumber(L, a->x);
  else if (a->kind == SET_TENSOR)
    lms_pushref(L, a->t);
  else
    lms_pushobjective(L, a->obj);
  lua_setglobal(L, a->name);
  return 0;
}

static int set(ms_lua *h, setarg *a) {
  h->refused = 0;
  lua_pushcfunction(h->L, set_global);
  lua_pushlightuserdata(h->L, a);
  if (lua_pcall(h->L, 1, 0, 0) == LUA_OK) return MS_OK;
  int mem = h->refused;
  take_error(h, mem ? "memory budget exceeded: " : "");
  return mem ? MS_ENOMEM : MS_EARG;
}

int ms_lua_set_number(ms_lua *h, const char *name, double value) {
  setarg a = {SET_NUMBER, name, value, NULL, NULL};
  return set(h, &a);
}

int ms_lua_set_tensor(ms_lua *h, const char *name, ms_tensor *t) {
  if (t != NULL && ms_tensor_ctx(t) != h->ctx) {
    snprintf(h->err, sizeof h->err,
             "ms_lua_set_tensor: tensor for '%s' was made in another context", name);
    return MS_EARG;
  }
  setarg a = {SET_TENSOR, name, 0, t, NULL};
  return set(h, &a);
}

int ms_lua_set_objective(ms_lua *h, const char *name, ms_objective *obj) {
  setarg a = {SET_OBJECTIVE, name, 0, NULL, obj};
  return set(h, &a);
}

void ms_lua_push_objective(lua_State *L, ms_objective *obj) { lms_pushobjective(L, obj); }
void ms_lua_push_tensor(lua_State *L, ms_tensor *t) { lms_pushref(L, t); }
