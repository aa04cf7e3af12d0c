#!/usr/bin/env bash
# The rockspec: `luarocks make` on a fresh copy of the sources (the files git tracks, no build
# directory) installs, into a temporary tree, a module that the stock lua5.4 loads, with the
# front library's Lua sources (and the LuaLS stub doc.lua) beside it and the executable.
# Skipped, with a message, when luarocks or lua5.4 is not installed.
# Run from the repo root.
set -u
pass=0
fail=0
. "$(dirname "$0")/lib.sh"

for tool in luarocks lua5.4 git; do
  if ! command -v "$tool" > /dev/null 2>&1; then
    echo "skip - $tool is not installed: the rockspec is not tested"
    finish
  fi
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src"
# a fresh copy of the checkout as git sees it (the working tree's versions of tracked files)
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$tmp/src"
rockspec=$(cd "$tmp/src" && ls metastep-*.rockspec 2> /dev/null | head -n 1)
if [ -z "$rockspec" ]; then
  not_ok "a metastep-*.rockspec is tracked"
  finish
fi

if (cd "$tmp/src" && CMAKE_BUILD_PARALLEL_LEVEL=2 luarocks --lua-version 5.4 make --tree "$tmp/tree" "$rockspec") \
  > "$tmp/log" 2>&1; then
  ok "luarocks make $rockspec installs into a fresh tree"
else
  not_ok "luarocks make $rockspec installs into a fresh tree" "$(tail -n 30 "$tmp/log")"
  finish
fi

for f in lib/lua/5.4/metastep.so share/lua/5.4/metastep/init.lua share/lua/5.4/metastep/meta.lua \
  share/lua/5.4/metastep/doc.lua bin/metastep; do
  if [ -f "$tmp/tree/$f" ]; then ok "installed $f"; else not_ok "installed $f" "$(cd "$tmp/tree" && find . -type f)"; fi
done

paths=$(luarocks --lua-version 5.4 path --tree "$tmp/tree")
out=$(cd "$tmp" && eval "$paths" && env -u LUA_INIT -u LUA_INIT_5_4 lua5.4 -e '
local ms = require "metastep"
local r = ms.meta.value_and_grad{objective = ms.objective.quadratic(ms.eye(2)), optimizer = ms.optim.gd{lr = 0.1},
  w0 = ms.ones{2}, steps = 3, meta = "naive"}
-- f(w_3) = 1/2 |w0|^2 (1 - lr)^6 = 0.9^6, closed form
print(ms.version, math.abs(r.value - 0.9 ^ 6) < 1e-12)' 2>&1)
expect "lua5.4 -e 'require \"metastep\"' loads the installed module and computes" "0.2.0	true" "$out"

out=$(cd "$tmp" && env -u LUA_INIT -u LUA_INIT_5_4 LUA_CPATH="$tmp/tree/lib/lua/5.4/?.so" lua5.4 -e \
  'print(require("metastep").zeros{3}:numel())' 2>&1)
expect "the module alone (LUA_CPATH only) runs its embedded front library" "3" "$out"

out=$("$tmp/tree/bin/metastep" -e 'print(ms.ones{2}:sum():item())' 2>&1)
expect "the installed executable runs" "2.0" "$out"

finish
