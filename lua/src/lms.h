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

/* The engine context of this Lua state, created on first use and kept in the registry. */
ms_ctx *lms_ctx(lua_State *L);

/* Argument arg must be a live tensor; raises "bad argument #arg to 'fname' (tensor expected, got T)". */
ms_tensor *lms_checktensor(lua_State *L, int arg);
/* The tensor at arg, or NULL if it is not one (never raises). */
ms_tensor *lms_testtensor(lua_State *L, int arg);
/* Tensor at arg, or a number turned into a 0-d tensor that replaces it on the stack
 * (so Lua owns it; nothing to release). */
ms_tensor *lms_checktensorish(lua_State *L, int arg);
/*
 * Pushes a userdata owning t (takes over the caller's reference). To keep the rule
 * "never longjmp over a C resource", call lms_newbox first, then fill it with lms_setbox.
 */
void lms_pushtensor(lua_State *L, ms_tensor *t);
ms_tensor **lms_newbox(lua_State *L);
/* Raises the context's last error as a Lua error: call as the last statement. */
int lms_error(lua_State *L);
/* If status != MS_OK, raise the context's message (after the caller freed its resources). */
#define lms_check(L, st) ((st) == MS_OK ? (void)0 : (void)lms_error(L))
/* Reads a shape from a table {2, 3} or from integer arguments starting at arg. */
int lms_checkshape(lua_State *L, int arg, int64_t *shape);

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
/* Adds the optimizer, meta-gradient and meta-training bindings (lms_l2l.c). */
void lms_open_l2l(lua_State *L);

#endif
