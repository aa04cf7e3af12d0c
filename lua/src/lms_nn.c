/*
 * Lua bindings of the networks (metastep/nn.h) and the data (metastep/data.h): positional
 * core functions that the front module lua/metastep/nn.lua wraps with option tables.
 *
 *   nn_dense(x, W [, b])                          -> tensor
 *   nn_lstm_cell(x, h, c, Wx, Wh [, b])           -> h', c'
 *   mlp_size(layers)                              -> integer
 *   mlp_init(layers, seed, scale)                 -> flat w
 *   mlp_layer(layers, w, l)                       -> W_l, b_l (views into w; l 1-based)
 *   mlp_forward(layers, w, X)                     -> logits
 *   mlp_accuracy(layers, w, X, y)                 -> number
 *   objective_mlp(layers, X, y)                   -> Objective
 *   data_idx(path)                                -> tensor | nil, msg
 *   data_fashion_mnist(dir | nil, split)          -> images, labels | nil, msg
 *   data_synthetic(seed, n, side, classes)        -> images, labels
 *   data_task(images, labels, n_train, n_valid, label_noise, seed) -> Xtr, ytr, Xva, yva
 *
 * layers is a table of 2..16 positive integers. Misuse raises; a file that cannot be read
 * (MS_EIO) returns nil and the message, as io.open does. Result boxes are created before the
 * engine allocates and errors are raised as the last act (see lms_tensor.c).
 */
#include <string.h>

#include "lms.h"
#include "metastep/data.h"
#include "metastep/nn.h"

/* layers: a sequence of 2..MS_MLP_MAXLAYERS positive integers (the engine checks sizes). */
static int checklayers(lua_State *L, int arg, int64_t *layers) {
  luaL_checktype(L, arg, LUA_TTABLE);
  lua_Integer n = luaL_len(L, arg);
  if (n < 2 || n > MS_MLP_MAXLAYERS)
    luaL_argerror(
        L, arg,
        lua_pushfstring(L, "layers must list 2..%d sizes (input, hidden..., output), got %d",
                        MS_MLP_MAXLAYERS, (int)n));
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, arg, i);
    int isint = 0;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    if (!isint || v < 1)
      luaL_argerror(L, arg,
                    lua_pushfstring(L, "layers[%d] must be a positive integer, got %s", (int)i,
                                    isint ? lua_tostring(L, -1) : luaL_typename(L, -1)));
    layers[i - 1] = v;
    lua_pop(L, 1);
  }
  return (int)n;
}

static ms_tensor *opttensor(lua_State *L, int arg) {
  return lua_isnoneornil(L, arg) ? NULL : lms_checktensor(L, arg);
}

static int l_dense(lua_State *L) {
  lua_settop(L, 3);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *x = lms_checktensor(L, 1), *W = lms_checktensor(L, 2), *b = opttensor(L, 3);
  return lms_result(L, ms_dense(lms_ctx(L), x, W, b, box), 1);
}

static int l_lstm_cell(lua_State *L) {
  lua_settop(L, 6);
  ms_tensor **hb = lms_newbox(L), **cb = lms_newbox(L);
  ms_tensor *x = lms_checktensor(L, 1), *h = lms_checktensor(L, 2), *c = lms_checktensor(L, 3);
  ms_tensor *Wx = lms_checktensor(L, 4), *Wh = lms_checktensor(L, 5), *b = opttensor(L, 6);
  return lms_result(L, ms_lstm_cell(lms_ctx(L), x, h, c, Wx, Wh, b, hb, cb), 2);
}

static int l_mlp_size(lua_State *L) {
  int64_t layers[MS_MLP_MAXLAYERS], P = 0;
  int n = checklayers(L, 1, layers);
  int st = ms_mlp_size(lms_ctx(L), layers, n, &P);
  if (st) return lms_error(L);
  lua_pushinteger(L, (lua_Integer)P);
  return 1;
}

static int l_mlp_init(lua_State *L) {
  int64_t layers[MS_MLP_MAXLAYERS];
  int n = checklayers(L, 1, layers);
  lua_Integer seed = luaL_checkinteger(L, 2);
  double scale = luaL_checknumber(L, 3);
  ms_tensor **box = lms_newbox(L);
  return lms_result(L, ms_mlp_init(lms_ctx(L), layers, n, (uint64_t)seed, scale, box), 1);
}

static int l_mlp_layer(lua_State *L) {
  int64_t layers[MS_MLP_MAXLAYERS];
  lua_settop(L, 3);
  int n = checklayers(L, 1, layers);
  lua_Integer l = luaL_checkinteger(L, 3);
  luaL_argcheck(L, l >= 1 && l < n, 3,
                lua_pushfstring(L, "layer %d out of range 1..%d", (int)l, n - 1));
  ms_tensor **Wb = lms_newbox(L), **bb = lms_newbox(L);
  ms_tensor *w = lms_checktensor(L, 2);
  return lms_result(L, ms_mlp_layer(lms_ctx(L), layers, n, w, (int)l, Wb, bb), 2);
}

static int l_mlp_forward(lua_State *L) {
  int64_t layers[MS_MLP_MAXLAYERS];
  lua_settop(L, 3);
  int n = checklayers(L, 1, layers);
  ms_tensor **box = lms_newbox(L);
  ms_tensor *w = lms_checktensor(L, 2), *X = lms_checktensor(L, 3);
  return lms_result(L, ms_mlp_forward(lms_ctx(L), layers, n, w, X, box), 1);
}

static int l_mlp_accuracy(lua_State *L) {
  int64_t layers[MS_MLP_MAXLAYERS];
  int n = checklayers(L, 1, layers);
  ms_tensor *w = lms_checktensor(L, 2), *X = lms_checktensor(L, 3), *y = lms_checktensor(L, 4);
  double acc = 0;
  if (ms_mlp_accuracy(lms_ctx(L), layers, n, w, X, y, &acc)) return lms_error(L);
  lua_pushnumber(L, acc);
  return 1;
}

static int l_objective_mlp(lua_State *L) {
  int64_t layers[MS_MLP_MAXLAYERS];
  lua_settop(L, 3);
  int n = checklayers(L, 1, layers);
  ms_objective **box = lms_newobjective(L);
  ms_tensor *X = lms_checktensor(L, 2), *y = lms_checktensor(L, 3);
  return lms_result(L, ms_objective_mlp(lms_ctx(L), layers, n, X, y, box), 1);
}

/* For loaders: MS_EIO gives nil, msg (the boxes are dropped); anything else raises. */
static int io_result(lua_State *L, int st, int nret) {
  if (st == MS_EIO) {
    ms_ctx *ctx = lms_ctx(L);
    lua_pushnil(L);
    lua_pushstring(L, ms_ctx_error(ctx));
    ms_ctx_clear_error(ctx);
    return 2;
  }
  return lms_result(L, st, nret);
}

static int l_idx(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  ms_tensor **box = lms_newbox(L);
  return io_result(L, ms_idx_load(lms_ctx(L), path, box), 1);
}

static int l_fashion_mnist(lua_State *L) {
  const char *dir = luaL_optstring(L, 1, NULL);
  const char *split = luaL_checkstring(L, 2);
  ms_tensor **ib = lms_newbox(L), **lb = lms_newbox(L);
  return io_result(L, ms_fashion_mnist_load(lms_ctx(L), dir, split, ib, lb), 2);
}

static int l_synthetic(lua_State *L) {
  lua_Integer seed = luaL_checkinteger(L, 1), n = luaL_checkinteger(L, 2);
  lua_Integer side = luaL_checkinteger(L, 3), classes = luaL_checkinteger(L, 4);
  luaL_argcheck(L, classes >= 2 && classes <= 100, 4, "classes must be in 2..100");
  ms_tensor **ib = lms_newbox(L), **lb = lms_newbox(L);
  return lms_result(
      L, ms_synthetic_images(lms_ctx(L), (uint64_t)seed, n, side, (int)classes, ib, lb), 2);
}

static int l_task(lua_State *L) {
  lua_Integer ntr = luaL_checkinteger(L, 3), nva = luaL_checkinteger(L, 4);
  double noise = luaL_checknumber(L, 5);
  lua_Integer seed = luaL_checkinteger(L, 6);
  lua_settop(L, 6);
  ms_tensor **b1 = lms_newbox(L), **b2 = lms_newbox(L), **b3 = lms_newbox(L), **b4 = lms_newbox(L);
  ms_tensor *X = lms_checktensor(L, 1), *y = lms_checktensor(L, 2);
  return lms_result(
      L, ms_image_task(lms_ctx(L), X, y, ntr, nva, noise, (uint64_t)seed, b1, b2, b3, b4), 4);
}

static const luaL_Reg functions[] = {{"nn_dense", l_dense},
                                     {"nn_lstm_cell", l_lstm_cell},
                                     {"mlp_size", l_mlp_size},
                                     {"mlp_init", l_mlp_init},
                                     {"mlp_layer", l_mlp_layer},
                                     {"mlp_forward", l_mlp_forward},
                                     {"mlp_accuracy", l_mlp_accuracy},
                                     {"objective_mlp", l_objective_mlp},
                                     {"data_idx", l_idx},
                                     {"data_fashion_mnist", l_fashion_mnist},
                                     {"data_synthetic", l_synthetic},
                                     {"data_task", l_task},
                                     {NULL, NULL}};

void lms_open_nn(lua_State *L) { luaL_setfuncs(L, functions, 0); }
