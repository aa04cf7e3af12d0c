#!/usr/bin/env bash
# metastep installs like a library: `cmake --install` into a temporary prefix, then the C
# examples are built against the installed copy twice, with pkg-config and with a CMake
# project using find_package(metastep), and run.
set -u
: "${METASTEP:?set by ctest to the metastep executable in the build directory}"
build=$(cd "$(dirname "$METASTEP")" && pwd)
src=$(pwd)
pass=0 fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. tests/sh/lib.sh

# A sanitized build's library needs the sanitizer runtime in every program linked to it.
cflags=""
if grep -q '^METASTEP_SANITIZE:BOOL=ON' "$build/CMakeCache.txt"; then
  cflags="-fsanitize=address,undefined"
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
fi

prefix=$tmp/prefix
if cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1; then ok "cmake --install"; else
  not_ok "cmake --install" "$(cat "$tmp/install.log")"
  finish
fi

for f in lib/libmetastep.so.0.2.0 lib/libmetastep.a lib/libmetastep_lua.a \
  include/metastep/metastep.h include/metastep/provider.h include/metastep_lua.h bin/metastep \
  lib/lua/5.4/metastep.so lib/pkgconfig/metastep.pc lib/pkgconfig/metastep-lua.pc \
  lib/cmake/metastep/metastepConfig.cmake lib/cmake/metastep/metastepConfigVersion.cmake; do
  if [ -f "$prefix/$f" ]; then ok "installed $f"; else not_ok "installed $f"; fi
done
expect "libmetastep.so -> libmetastep.so.0" "libmetastep.so.0" "$(readlink "$prefix/lib/libmetastep.so")"
expect "libmetastep.so.0 -> 0.2.0" "libmetastep.so.0.2.0" "$(readlink "$prefix/lib/libmetastep.so.0")"
expect "soname" "libmetastep.so.0" \
  "$(objdump -p "$prefix/lib/libmetastep.so.0.2.0" | awk '$1 == "SONAME" {print $2}')"

# ---- pkg-config ----
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
expect "pkg-config version" "0.2.0" "$(pkg-config --modversion metastep)"
export LD_LIBRARY_PATH=$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
for ex in host_logistic mlp_provider lua_host; do
  pc=metastep
  [ "$ex" = lua_host ] && pc=metastep-lua
  # word splitting of pkg-config's output is intended
  # shellcheck disable=SC2046
  if cc -std=c11 $cflags -o "$tmp/$ex" "$src/examples/$ex.c" $(pkg-config --cflags --libs $pc) \
    >"$tmp/err" 2>&1; then
    ok "pkg-config: $ex builds"
    if "$tmp/$ex" >"$tmp/out" 2>"$tmp/err"; then ok "pkg-config: $ex runs"; else
      not_ok "pkg-config: $ex runs" "$(cat "$tmp/out" "$tmp/err")"
    fi
  else
    not_ok "pkg-config: $ex builds" "$(cat "$tmp/err")"
  fi
done
if ldd "$tmp/host_logistic" | grep -q "libmetastep.so.0 => $prefix/lib/libmetastep.so.0"; then
  ok "the program uses the installed shared library"
else
  not_ok "the program uses the installed shared library" "$(ldd "$tmp/host_logistic")"
fi
unset LD_LIBRARY_PATH

# ---- CMake: find_package(metastep) ----
mkdir -p "$tmp/proj"
cat >"$tmp/proj/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.18)
project(host C)
find_package(metastep 0.2 REQUIRED)
add_executable(host_logistic $src/examples/host_logistic.c)
target_link_libraries(host_logistic PRIVATE metastep::metastep)
add_executable(mlp_provider $src/examples/mlp_provider.c)
target_link_libraries(mlp_provider PRIVATE metastep::metastep_static)
add_executable(lua_host $src/examples/lua_host.c)
target_link_libraries(lua_host PRIVATE metastep::metastep_lua)
EOF
if cmake -S "$tmp/proj" -B "$tmp/proj/build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_FLAGS="$cflags" >"$tmp/err" 2>&1 &&
  cmake --build "$tmp/proj/build" >>"$tmp/err" 2>&1; then
  ok "find_package(metastep): the examples build"
  for ex in host_logistic mlp_provider lua_host; do
    if "$tmp/proj/build/$ex" >"$tmp/out" 2>"$tmp/err"; then ok "find_package: $ex runs"; else
      not_ok "find_package: $ex runs" "$(cat "$tmp/out" "$tmp/err")"
    fi
  done
  if ldd "$tmp/proj/build/mlp_provider" | grep -q libmetastep.so; then
    not_ok "metastep::metastep_static links the static library"
  else
    ok "metastep::metastep_static links the static library"
  fi
else
  not_ok "find_package(metastep): the examples build" "$(cat "$tmp/err")"
fi

# ---- the executable, and the module where lua5.4 finds it under this prefix ----
expect "installed metastep runs" "6.0" "$("$prefix/bin/metastep" -e 'print(require("metastep").ones(3):sum():item() * 2)' 2>&1)"
if [ -z "$cflags" ]; then
  expect "lua5.4 loads the installed module" "0.2.0" \
    "$(LUA_CPATH="$prefix/lib/lua/5.4/?.so;;" lua5.4 -e 'print(require("metastep").version)' 2>&1)"
fi
finish
