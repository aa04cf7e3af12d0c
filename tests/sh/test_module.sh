#!/usr/bin/env bash
# The C module loads into the stock lua5.4 interpreter with only LUA_CPATH set,
# exactly as the README says.
set -u
: "${METASTEP_MODULE_DIR:?set by ctest to the directory holding metastep.so}"
passed=0 failed=0
check() { # name, expected substring, command...
  local name=$1 want=$2; shift 2
  local out
  out=$("$@" 2>&1)
  if [[ "$out" == *"$want"* ]]; then passed=$((passed + 1)); else
    failed=$((failed + 1)); echo "FAIL: $name: wanted '$want', got: $out"; fi
}
export LUA_CPATH="$METASTEP_MODULE_DIR/?.so;;"
check "eye prints" $'[[1., 0.],\n [0., 1.]]' lua5.4 -e 'local ms = require "metastep"; print(ms.eye(2))'
check "same seed, same numbers" "true" lua5.4 -e '
  local ms = require "metastep"
  local a, b = ms.randn({3, 3}, {seed = 1}), ms.randn({3, 3}, {seed = 1})
  print(tostring(a) == tostring(b) and ms.max_abs_diff(a, b) == 0)'
check "grad works in the stock interpreter" "[2., 4.]" lua5.4 -e '
  local ms = require "metastep"; print(ms.grad(function(x) return (x * x):sum() end)(ms.tensor{1, 2}))'
check "errors are Lua errors" "matmul: shapes [2,3] and [2,3] are not aligned" lua5.4 -e '
  local ms = require "metastep"; print(select(2, pcall(ms.matmul, ms.ones(2, 3), ms.ones(2, 3))))'
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
