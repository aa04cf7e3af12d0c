/*
 * Shared helpers of the Lua bindings (lauxlib's verbs: check* raises, opt* defaults on nil,
 * to* never raises, test* returns NULL, push* pushes).
 */
#ifndef METASTEP_LMS_H
#define METASTEP_LMS_H

#include <lauxlib.h>
#include <lua.h>

#include "metastep/metastep.h"

#define LMS_TENSOR "metastep.Tensor"

/* ---- lms_aux.c: the helper library every binding uses ---- */

/* The engine context of this Lua state, created on first use and kept in the registry. */
ms_ctx *lms_ctx(lua_State *L);
/* The state's main thread. */
lua_State *lms_mainthread(lua_State *L);

/* Raises the context's last error as a Lua error: call as the last statement. When the
 * failure is a callback's (MS_ECALLBACK) whose error object was kept (LMS_CB_KEEP, _PLAIN),
 * that object is raised again unchanged, as Lua propagates errors through table.sort's
 * comparator; otherwise the engine's message, blamed on the binding's caller, with the
 * element indices it names ("H[0,1] (0-based)") made 1-based. */
int lms_error(lua_State *L);
/* Registry key of a host sandbox's memory cap in bytes (an integer; absent outside a sandbox):
 * ms.set_memory_limit refuses 0 and anything above it (lms_host.c sets it). */
#define LMS_SANDBOX_LIMIT "metastep.sandbox_limit"
/* The status of the last engine failure lms_error raised (MS_OK if none since the last call),
 * and resets it: a host tells "out of memory" from other script errors. */
int lms_take_raised(lua_State *L);
/* Registry key of a kept callback error object (nil when none is pending). */
#define LMS_CALLBACK_ERROR "metastep.callback_error"

/* Like luaL_where, but skips C frames from `level` up: pushes "chunk:line: " of the nearest
 * Lua function (for bindings reached through another C function, such as a string
 * library metamethod), or "" when there is none. */
void lms_where(lua_State *L, int level);

/* Argument arg must be a live tensor; raises "bad argument #arg to 'fname' (tensor expected, got
 * T)". */
ms_tensor *lms_checktensor(lua_State *L, int arg);
/* The tensor at arg, or NULL if it is not one (never raises). */
ms_tensor *lms_testtensor(lua_State *L, int arg);
/* True if arg is a tensor box whose tensor was released (closed or collected). */
int lms_isreleased(lua_State *L, int arg);
/* Tensor at arg, or a number turned into a 0-d tensor that replaces it on the stack
 * (so Lua owns it; nothing to release). */
ms_tensor *lms_checktensorish(lua_State *L, int arg);
/*
 * An empty tensor box (userdata). To keep the rule "never longjmp over a C resource", a
 * binding creates its result boxes first and lets the engine fill them.
 */
ms_tensor **lms_newbox(lua_State *L);
/* Pushes t in a new box holding a new reference (nil for NULL). */
void lms_pushref(lua_State *L, ms_tensor *t);
/* Ends a binding whose engine call returned st and filled its result boxes: raises on
 * failure, else steps the collector (tensors are small userdata that may own megabytes)
 * and returns nret. */
int lms_result(lua_State *L, int st, int nret);
/* lms_result for one result t (passed by address: the engine call that sets it is usually
 * a sibling argument, and C leaves the order of evaluation unspecified), stored in box. */
int lms_finish(lua_State *L, ms_tensor **box, int st, ms_tensor **t);

/* Raises "bad argument #arg (unknown option 'k' (expected a, b))" for a key of the options
 * table at arg (nothing if it is not a table) missing from known (a NULL-terminated list). */
void lms_checkoptions(lua_State *L, int arg, const char *const *known);

/* Reads a shape from a table {2, 3} or from integer arguments starting at arg. */
int lms_checkshape(lua_State *L, int arg, int64_t *shape);

/*
 * Calling Lua from an engine callback. lms_running is the thread to run on: the one that
 * entered the engine (lms_enter), or the main thread outside engine calls. lms_callback
 * calls the function under registry reference ref under lua_pcall, with arguments pushed
 * by push(L, ud) (returning their count; it runs protected, so it may allocate), and leaves
 * nres results on top of L's stack. On error it restores the stack and returns
 * MS_ECALLBACK with the message and a traceback, "<name>: error in <what>: <msg>" (just
 * "<msg>" when name is NULL). keep: 0, or LMS_CB_KEEP to keep the error object for
 * lms_error, or LMS_CB_PLAIN to keep it and give the message without traceback.
 */
typedef int (*lms_pushfn)(lua_State *L, void *ud);
enum { LMS_CB_KEEP = 1, LMS_CB_PLAIN = 2 };
lua_State *lms_running(ms_ctx *ctx);
int lms_callback(ms_ctx *ctx, lua_State *L, int ref, lms_pushfn push, void *ud, int nres, int keep,
                 const char *name, const char *what);

/*
 * The engine-call handoff: lms_enter makes L the running thread for callbacks,
 * lms_hold_* retain what the call reads (a callback may close its Lua box meanwhile),
 * lms_leave restores the previous thread and releases them. Enter after the binding's last
 * check that can raise (entering allocates nothing) and leave before raising.
 */
#define LMS_HOLD 4
typedef struct lms_entry {
  ms_ctx *ctx;
  void *prev;
  ms_tensor *tensors[LMS_HOLD];
  int ntensors;
  ms_tensor *const *list; /* the caller's array, alive for the call */
  int nlist;
  ms_objective *objective;
  ms_custom *custom;
} lms_entry;
ms_ctx *lms_enter(lua_State *L, lms_entry *e);
void lms_hold_tensor(lms_entry *e, ms_tensor *t);
void lms_hold_tensors(lms_entry *e, int n, ms_tensor *const *ts);
void lms_hold_objective(lms_entry *e, ms_objective *o);
void lms_hold_custom(lms_entry *e, ms_custom *op);
void lms_leave(lms_entry *e);

/* ---- the binding files ---- */

/* Registers "metastep", "metastep.core" and the embedded front modules in package.preload. */
void lms_preload(lua_State *L);
/* luaopen for the C core (engine functions and the Tensor metatable). */
int luaopen_metastep_core(lua_State *L);
/* Adds the autodiff bindings to the table on top of the stack (lms_autodiff.c). */
void lms_open_autodiff(lua_State *L);
/* Nonzero while a custom primitive's forward or jvp rule runs with the engine's levels
 * hidden (lms_autodiff.c): engine calls that push levels of their own must not run then. */
int lms_ad_hiding(lua_State *L);
/* Adds the objective bindings (lms_objective.c). */
void lms_open_objective(lua_State *L);
/* Pushes a new objective box holding a new reference to obj (an objective made in C). */
void lms_pushobjective(lua_State *L, ms_objective *obj);
/* Adds the optimizer, meta-gradient and meta-training bindings (lms_l2l.c). */
void lms_open_l2l(lua_State *L);
/* Adds save and load (lms_archive.c). */
void lms_open_archive(lua_State *L);
/* Stores the Lua value at idx in a under the name prefix ("" = the top: a table's entries
 * are then named by their keys alone), as docs/format.md lays out; raises "<who>: ..." for a
 * value that cannot be stored (function, cycle, float key, ...). */
void lms_archive_encode(lua_State *L, int idx, ms_archive *a, const char *prefix, const char *who);
/* Pushes the value stored under prefix (nil when there is none); raises "<who>: ..." for
 * entries that do not form a value. */
void lms_archive_decode(lua_State *L, const ms_archive *a, const char *prefix, const char *who);
/* An empty Objective box pushed on the stack (lms_objective.c), for constructors in other
 * binding files: the engine fills *box; the box owns the reference. */
ms_objective **lms_newobjective(lua_State *L);
/* Adds the network and data bindings (lms_nn.c). */
void lms_open_nn(lua_State *L);
/* Adds spawn, spawn_pipes, wait, isatty, front_source, clock, the thread setting and the
 * product counter (lms_sys.c). */
void lms_open_sys(lua_State *L);
/* The optimizer at arg (raises when it is not a live one) and an empty Optim box pushed on
 * the stack for the engine to fill (lms_l2l.c); the learned optimizers' bindings
 * (lms_learned.c), added by lms_open_learned. */
ms_optim *lms_checkoptim(lua_State *L, int arg);
ms_optim **lms_newoptim(lua_State *L);
void lms_open_learned(lua_State *L);

#endif
