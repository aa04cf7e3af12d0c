/*
 * Running metastep Lua scripts inside a C program, under limits the host sets.
 *
 * An ms_lua is a Lua state with the metastep library loaded (global `ms`) and the standard
 * libraries the host chooses (by default no io or debug, an os with only clock, time and
 * difftime, and `require` finds only the embedded metastep modules: no C library or file is
 * loaded from disk). Its engine context
 * (ms_lua_ctx) is the one the Lua bindings use, so tensors and objectives pass both ways.
 *
 * Limits (Redis's scripting model: a counting allocator and a count hook):
 *   memory      one budget for Lua's own allocations and the engine context's bytes: the
 *               allocator refuses past it, the script gets Lua's "not enough memory" error
 *               (or the engine's "out of memory"), the run returns MS_ENOMEM, and a full
 *               collection afterwards gives the memory back. In sandbox mode a script cannot
 *               raise the budget (ms.set_memory_limit refuses 0 and anything above it).
 *   instructions and wall time, per run: a count hook stops Lua code, and the engine
 *               context polls the same budget (ms_ctx_set_poll) in its long loops (unrolls,
 *               backward sweeps, meta-training, BLAS-sized products, totable), so a huge
 *               stable unroll stops too. The run returns MS_EINTERRUPT. After the budget is
 *               spent every further Lua instruction raises, so a script that catches the
 *               error with pcall cannot keep running.
 * After any failure the state serves the next run (the interrupt flag is cleared, garbage
 * collected). Nothing here is global: several ms_lua may live in one process (one thread
 * each at a time).
 *
 * Link: pkg-config --cflags --libs metastep-lua, or CMake's metastep::metastep_lua.
 */
#ifndef METASTEP_LUA_H
#define METASTEP_LUA_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "metastep/metastep.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Standard libraries a script may see (a bit mask). base and package are always opened (the
 * front library needs require); MS_LUA_LIB_PACKAGE also keeps package's file and C loaders. */
enum {
  MS_LUA_LIB_PACKAGE = 1 << 0, /* loaders from disk (package.path, cpath, loadlib) */
  MS_LUA_LIB_COROUTINE = 1 << 1,
  MS_LUA_LIB_TABLE = 1 << 2,
  MS_LUA_LIB_STRING = 1 << 3,
  MS_LUA_LIB_MATH = 1 << 4,
  MS_LUA_LIB_UTF8 = 1 << 5,
  MS_LUA_LIB_OS = 1 << 6,
  MS_LUA_LIB_IO = 1 << 7,
  MS_LUA_LIB_DEBUG = 1 << 8,
  /* the default: no disk loaders, os, io or debug */
  MS_LUA_LIBS_SAFE = MS_LUA_LIB_COROUTINE | MS_LUA_LIB_TABLE | MS_LUA_LIB_STRING | MS_LUA_LIB_MATH |
                     MS_LUA_LIB_UTF8,
  MS_LUA_LIBS_ALL = (1 << 9) - 1
};

typedef struct ms_lua_options {
  unsigned libs;             /* MS_LUA_LIB_* mask; 0 = MS_LUA_LIBS_SAFE */
  size_t memory_limit;       /* bytes, Lua and engine together; 0 = unlimited */
  int64_t instruction_limit; /* Lua VM instructions per run (counted in steps of 1000); 0 = none */
  double time_limit;         /* seconds of wall time per run, Lua and engine loops; 0 = none */
  int sandbox;               /* nonzero: scripts cannot raise memory_limit */
} ms_lua_options;

typedef struct ms_lua ms_lua;

/* Makes a state (opts NULL = defaults, no limits). MS_OK and *out, or MS_EARG for bad options
 * (memory_limit too small to load the library, negative or NaN limits; *out NULL) or
 * MS_ENOMEM. The message of a failure goes to err (err_size bytes, may be 0). */
int ms_lua_new(const ms_lua_options *opts, ms_lua **out, char *err, size_t err_size);
/* Closes the state: every tensor and objective a script made is released. NULL is ignored. */
void ms_lua_free(ms_lua *h);

/* The Lua state (borrowed; the host may push globals, call functions, ...). */
lua_State *ms_lua_state(ms_lua *h);
/* The engine context the scripts' tensors live in (borrowed). */
ms_ctx *ms_lua_ctx(ms_lua *h);
/* Bytes in use (Lua and engine) and the largest count seen. */
size_t ms_lua_bytes(const ms_lua *h);
size_t ms_lua_peak_bytes(const ms_lua *h);

/*
 * Runs a chunk (name: the chunk name in messages, NULL = "=script") or a file. Returns MS_OK,
 * or: MS_EARG (syntax error, file not found), MS_ENOMEM (memory budget), MS_EINTERRUPT
 * (instruction or time budget), MS_ECALLBACK (the script raised an error). ms_lua_error has
 * the message (with a traceback for runtime errors).
 */
int ms_lua_run_string(ms_lua *h, const char *code, const char *name);
int ms_lua_run_file(ms_lua *h, const char *path);
/* Message of the last failed run ("" after a successful one). Borrowed. */
const char *ms_lua_error(const ms_lua *h);

/* Reading results back from globals: MS_EARG "global 'x' is a string, expected a number" when
 * absent or of another type. A string is copied into buf (truncated to size - 1 bytes, NUL
 * ended). A tensor is a new reference (release with ms_tensor_release, before ms_lua_free). */
int ms_lua_get_number(ms_lua *h, const char *name, double *out);
int ms_lua_get_string(ms_lua *h, const char *name, char *buf, size_t size);
int ms_lua_get_tensor(ms_lua *h, const char *name, ms_tensor **out);

/* Giving values to scripts as globals: a number, a tensor (the script's box holds a new
 * reference), or an objective made in C (ms_objective_new), which scripts then use like a
 * built-in one (obj:value(w), ms.meta.train{objective = obj, ...}). t and obj must have been
 * made in ms_lua_ctx(h). MS_ENOMEM when the budget is spent. */
int ms_lua_set_number(ms_lua *h, const char *name, double value);
int ms_lua_set_tensor(ms_lua *h, const char *name, ms_tensor *t);
int ms_lua_set_objective(ms_lua *h, const char *name, ms_objective *obj);

/* For hosts that drive the Lua API themselves: pushes a new Lua box holding a new reference
 * to obj / t (raises a Lua memory error like any push). The metastep library must be loaded in
 * L (it is in an ms_lua's state; elsewhere require "metastep" first). */
void ms_lua_push_objective(lua_State *L, ms_objective *obj);
void ms_lua_push_tensor(lua_State *L, ms_tensor *t);

#ifdef __cplusplus
}
#endif
#endif
