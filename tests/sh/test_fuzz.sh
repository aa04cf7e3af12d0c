#!/usr/bin/env bash
# The random fuzzer of the whole Lua surface (tests/fuzz/fuzz.lua): 100000 seeded calls from a
# scratch directory (option tables may name files). Fails when the process dies (a crash, or
# a sanitizer report under the ASan+UBSan build, which halts on the first one), on any
# unexpected outcome, or when raw Lua errors or errors blamed inside the library exceed 1% of
# the errors. On failure it prints the report and the reproducer of the call that was running.
# METASTEP_FUZZ_CALLS and METASTEP_FUZZ_SEED override the count and the seed.
set -u
: "${METASTEP:?set by ctest to the metastep executable}"
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
calls=${METASTEP_FUZZ_CALLS:-100000}
seed=${METASTEP_FUZZ_SEED:-1}
(cd "$tmp" && "$METASTEP" "$root/tests/fuzz/fuzz.lua" --calls "$calls" --seed "$seed" --out "$tmp" \
  --max-raw 1 --max-library 1 >/dev/null 2>"$tmp/err")
rc=$?
grep '^fuzz: \|^  ' "$tmp/err"
if [ "$rc" -ne 0 ]; then
  echo "FAIL - fuzzer exited with status $rc"
  tail -n 40 "$tmp/err"
  [ -f "$tmp/fuzz_last_call.lua" ] && { echo "-- the call running when it died:"; cat "$tmp/fuzz_last_call.lua"; }
  [ -f "$tmp/fuzz_report.txt" ] && sed -n '/== unexpected/,$p' "$tmp/fuzz_report.txt" | head -n 60
  echo "0 passed, 1 failed"
  exit 1
fi
if ! grep -q "^fuzz: seed $seed, $calls calls" "$tmp/err"; then
  echo "FAIL - the count line is missing"
  echo "0 passed, 1 failed"
  exit 1
fi
echo "1 passed, 0 failed"
