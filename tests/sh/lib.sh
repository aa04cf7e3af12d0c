# Shared by the shell tests (sourced, not run): TAP-like lines, counts and the exit status.
# The sourcing script sets pass=0 fail=0 first, and tmp (a scratch directory) for check_err.

ok() { pass=$((pass + 1)); echo "ok   - $1"; }
not_ok() {
  fail=$((fail + 1))
  echo "FAIL - $1"
  if [ -n "${2:-}" ]; then printf '%s\n' "$2" | sed 's/^/       /'; fi
}
# expect NAME EXPECTED ACTUAL
expect() {
  if [ "$3" = "$2" ]; then ok "$1"; else not_ok "$1" "expected: $(printf %q "$2")
actual:   $(printf %q "$3")"; fi
}
# check_err NAME WANT RC PATTERN...: the exit status RC is WANT and the stderr saved in
# $tmp/err matches every grep PATTERN.
check_err() {
  local name=$1 want=$2 rc=$3 p
  shift 3
  if [ "$rc" -eq "$want" ]; then
    for p in "$@"; do
      if ! grep -q -e "$p" "$tmp/err"; then
        not_ok "$name" "rc=$rc stderr=$(cat "$tmp/err")"
        return
      fi
    done
    ok "$name"
  else
    not_ok "$name" "rc=$rc stderr=$(cat "$tmp/err")"
  fi
}
# The counts line; exits 0 when nothing failed.
finish() {
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
  exit
}
