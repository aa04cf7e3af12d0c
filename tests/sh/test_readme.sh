#!/usr/bin/env bash
# The C program in README's "Embedding metastep in a C program" compiles against the build and
# runs, so the README cannot go stale: it is extracted from the README text itself.
set -u
: "${METASTEP:?set by ctest to the metastep executable in the build directory}"
build=$(cd "$(dirname "$METASTEP")" && pwd)
pass=0 fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. tests/sh/lib.sh

# the first ```c block after the section's heading
awk '/^## Embedding metastep in a C program/ {s = 1; next}
     s == 1 && /^```c$/ {s = 2; next}
     s == 2 && /^```$/ {exit}
     s == 2 {print}' README.md >"$tmp/example.c"
if [ "$(grep -c 'int main' "$tmp/example.c")" = 1 ]; then ok "README has the example"; else
  not_ok "README has the example" "$(cat "$tmp/example.c")"
fi
cflags=""
grep -q '^METASTEP_SANITIZE:BOOL=ON' "$build/CMakeCache.txt" && cflags="-fsanitize=address,undefined"
# shellcheck disable=SC2086
if cc -std=c11 -Wall -Wextra -Werror $cflags -I engine/include -o "$tmp/example" "$tmp/example.c" \
  "$build/libmetastep.a" -llapacke -lopenblas -lm 2>"$tmp/err"; then
  ok "the example compiles warning-free"
else
  not_ok "the example compiles warning-free" "$(cat "$tmp/err")"
  finish
fi
out=$("$tmp/example" 2>&1)
rc=$?
expect "the example exits 0" "0" "$rc"
# the tuned step size beats 0.05: f(w_20) below the closed form the example prints for 0.05
# fields: tuned lr <lr>, f(w_20) = <f> (lr 0.05: <f at 0.05>)
if awk -v o="$out" 'BEGIN { split(o, a, /[ =(),:]+/)
     exit !(o ~ /^tuned lr / && a[3] + 0 > 0.05 && a[6] + 0 < a[9] + 0) }'; then
  ok "the tuned lr is larger and trains to a lower loss: $out"
else
  not_ok "the tuned lr is larger and trains to a lower loss" "$out"
fi
finish
