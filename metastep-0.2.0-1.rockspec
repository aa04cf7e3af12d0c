-- luarocks make --local (in a clone) builds metastep with CMake against the system's
-- OpenBLAS and LAPACKE (Debian: libopenblas-dev liblapacke-dev libreadline-dev) and installs
-- the module metastep.so, the front library's Lua sources beside it (metastep/*.lua,
-- metastep/doc.lua being the LuaLS annotations) and the metastep executable.
-- Use it with Lua 5.4: luarocks --lua-version 5.4 make --local
rockspec_format = "3.0"
package = "metastep"
version = "0.2.0-1"
-- `luarocks make` builds the checkout it is run in; the project has no published archive yet.
source = {
  url = ".",
}
description = {
  summary = "Learning to learn on a C engine: tensors, autodiff, meta-gradients and meta-training",
  detailed = [[
A C11 engine (tensors, reverse and forward autodiff, objectives, optimizers, unrolls and
numerically stable meta-gradients) with Lua 5.4 bindings and a front library.]],
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  OPENBLAS = {library = "openblas"},
  LAPACKE = {header = "lapacke.h", library = "lapacke"},
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    METASTEP_LUA_CMOD_DIR = "$(LIBDIR)",
    METASTEP_LUA_DIR = "$(LUADIR)",
    METASTEP_BIN_DIR = "$(BINDIR)",
    METASTEP_INSTALL_DEV = "OFF",
    METASTEP_TESTS = "OFF",
  },
}
