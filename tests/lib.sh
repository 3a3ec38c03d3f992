# Shared by the shell tests (source it): counters, a temporary directory, the python
# used for checks, and the assertion helpers. Each script ends with `report`.
# shellcheck shell=bash

# A sanitizer report must not pass for an expected "exit 1".
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}exitcode=86"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}exitcode=86"
pass=0
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Debian's python3 (with numpy and torch when installed), else any python3, else none.
PY="" # shellcheck disable=SC2034  # used by the scripts that source this file
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; elif command -v python3 >/dev/null; then
  PY=$(command -v python3)
fi

# expect <exit code> <substring of stderr+stdout or ""> -- command...
expect() {
  local code=$1 want=$2
  shift 3
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  if [[ "$out" == *Sanitizer* || "$out" == *"runtime error:"* ]]; then
    echo "FAIL: $* -> sanitizer report: $out" >&2
    fail=$((fail + 1))
  elif [ "$rc" -ne "$code" ]; then
    echo "FAIL: $* -> exit $rc, expected $code; output: $out" >&2
    fail=$((fail + 1))
  elif [ -n "$want" ] && [[ "$out" != *"$want"* ]]; then
    echo "FAIL: $* -> output lacks \"$want\": $out" >&2
    fail=$((fail + 1))
  else
    pass=$((pass + 1))
  fi
}

# ok <description> <condition command...>
ok() {
  local what=$1
  shift
  if "$@"; then pass=$((pass + 1)); else
    echo "FAIL: $what" >&2
    fail=$((fail + 1))
  fi
}

# Prints the totals and exits non-zero on any failure.
report() {
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
  exit $?
}
