# Shared by the shell tests (source it): counters, a temporary directory, the python
# used for checks, the assertion helpers and a lint. Each script ends with `report`.
# Loading it lints the calling script (lint_status below): a test that reads `$?` after
# a command substitution on the same line counts a failure before it runs anything.
# tests/lib_selftest.sh checks these helpers with failing children.
# shellcheck shell=bash

# A sanitizer report must not pass for an expected "exit 1".
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}exitcode=86"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}exitcode=86"
pass=0
fail=0
tmp=$(mktemp -d)
# Background processes a test starts (add their pids): killed at exit. KEEP=1 keeps the
# work folder for a look afterwards.
pids=()
trap 'kill -9 "${pids[@]}" 2>/dev/null; [ -n "${KEEP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"' EXIT

# Debian's python3 (with numpy and torch when installed), else any python3, else none.
PY="" # shellcheck disable=SC2034  # used by the scripts that source this file
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; elif command -v python3 >/dev/null; then
  PY=$(command -v python3)
fi

# skip <reason>: a missing prerequisite (a tool, a data set) skips the test (exit 77), or
# fails it under CI=true, where every test must run (scripts/test's rule).
skip() {
  case ${CI:-} in
  true | True | TRUE | 1)
    echo "FAIL: $* (CI=true: this test must run)"
    exit 1
    ;;
  esac
  echo "SKIP: $*"
  exit 77
}

# Runs command... until it succeeds, every 0.05 s, for at most <seconds>; 1 if it never did.
wait_for() { # <seconds> <command...>
  local end=$((SECONDS + $1))
  shift
  until "$@"; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.05
  done
}
# A free TCP port on 127.0.0.1 (needs $PY).
port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

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

# ok <description> <condition command...>. Not for exit statuses: the arguments are
# expanded before the condition runs, so in `ok "$(tail f)" test $? -eq 0` the $? is the
# tail's. Use ok_status / wait_status.
ok() {
  local what=$1
  shift
  if "$@"; then pass=$((pass + 1)); else
    echo "FAIL: $what" >&2
    fail=$((fail + 1))
  fi
}

# ok_status <description> <exit status> <expected status> [<log file>]: the status was
# captured by the caller on the line after the command (`cmd; rc=$?`). A failure shows
# the status and the log's last lines; a status that is not a number fails.
ok_status() {
  local what=$1 rc=$2 want=$3 log=${4:-}
  if [[ "$rc" =~ ^[0-9]+$ ]] && [ "$rc" = "$want" ]; then
    pass=$((pass + 1))
    return 0
  fi
  echo "FAIL: $what: exit status ${rc:-(none)}, expected $want" >&2
  if [ -n "$log" ] && [ -f "$log" ]; then tail -n 5 "$log" | sed 's/^/  | /' >&2; fi
  fail=$((fail + 1))
  return 1
}

# wait_status <description> <pid> <expected status> [<log file>]: waits for a background
# child of this shell and checks its exit status as ok_status does (127: not a child).
wait_status() {
  local rc
  wait "$2"
  rc=$?
  ok_status "$1" "$rc" "$3" "${4:-}"
}

# run_status <description> <expected status> <output file> -- command...: runs the
# command with stdout and stderr into the file (removed first, so that what the checks
# after it read is this run's) and checks its exit status as ok_status does.
run_status() {
  local what=$1 want=$2 out=$3 rc
  shift 4
  rm -f "$out"
  "$@" >"$out" 2>&1
  rc=$?
  ok_status "$what" "$rc" "$want" "$out"
}

# ok_same <description> <got> <want> / ok_differ <description> <a> <b>: string
# comparisons where an empty side fails (two missing values are not "the same").
ok_same() {
  if [ -n "$2" ] && [ "$2" = "$3" ]; then pass=$((pass + 1)); else
    echo "FAIL: $1: got \"$2\", expected \"$3\" (neither may be empty)" >&2
    fail=$((fail + 1))
  fi
}
ok_differ() {
  if [ -n "$2" ] && [ -n "$3" ] && [ "$2" != "$3" ]; then pass=$((pass + 1)); else
    echo "FAIL: $1: \"$2\" and \"$3\" should differ (neither may be empty)" >&2
    fail=$((fail + 1))
  fi
}

# lint_status <file>...: prints "file:line: why" for every line that reads an exit
# status that is not the one its author meant, and returns 1 if there is any:
#   - a $? after a command substitution, $(...) or `...`, on the same line (lines ending
#     in a backslash are joined): it is the substitution's status, so
#     `ok "... $(tail -3 x.log)" test $? -eq 0` passes whatever the child did;
#   - a $? among the arguments of ok or check (use ok_status / wait_status / run_status).
# Comment lines and trailing comments are skipped; a $? inside a substitution
# (`rc=$(cmd; echo $?)`) or inside single quotes is fine. Deliberately strict: it also
# flags the rare line where such a $? happens to be right (`out=$(cmd) || rc=$?`): split
# it. A heuristic, not a shell parser: a `case` pattern's lone ")" inside a substitution
# confuses it. tests/shell_lint.sh runs it over every shell script of the tree.
lint_status() {
  awk '
    function scan(s,    n, i, c, depth, sq, bt, seen, dq, par, found) {
      n = length(s); depth = 0; sq = 0; bt = 0; seen = 0; found = 0; dq[0] = 0
      for (i = 1; i <= n; i++) {
        c = substr(s, i, 1)
        if (sq) { if (c == "\047") sq = 0; continue }
        if (c == "\\") { i++; continue }
        if (c == "\"") { dq[depth] = !dq[depth]; continue }
        if (c == "\047" && !dq[depth]) { sq = 1; continue }
        if (c == "#" && depth == 0 && !dq[0] && (i == 1 || substr(s, i - 1, 1) ~ /[ \t;]/)) break
        if (c == "`") { bt = !bt; if (!bt && depth == 0) seen = 1; continue }
        if (c == "$" && substr(s, i + 1, 1) == "(") { depth++; dq[depth] = 0; par[depth] = 0; i++; continue }
        if (c == "(" && depth > 0 && !dq[depth]) { par[depth]++; continue }
        if (c == ")" && depth > 0 && !dq[depth]) {
          if (par[depth] > 0) par[depth]--; else { depth--; if (depth == 0) seen = 1 }
          continue
        }
        if (c == "$" && substr(s, i + 1, 1) == "?" && depth == 0 && !bt) {
          if (seen) return 2
          found = 1
        }
      }
      return found
    }
    function check(s,    r, use) {
      r = scan(s)
      use = "capture the status first (cmd; rc=$?) and use ok_status / wait_status / run_status"
      if (r == 2) {
        printf "%s:%d: $? read after a command substitution on the same line is the " \
          "substitution\047s status: %s\n", FILENAME, start, use
        bad = 1
      } else if (r == 1 && s ~ /^[ \t]*(ok|check)[ \t]/) {
        printf "%s:%d: $? passed to ok/check: %s\n", FILENAME, start, use
        bad = 1
      }
    }
    FNR == 1 { buf = "" }
    {
      if (buf == "") {
        start = FNR
        if ($0 ~ /^[ \t]*#/) next
      }
      if ($0 ~ /\\$/) { buf = buf substr($0, 1, length($0) - 1) " "; next }
      check(buf $0)
      buf = ""
    }
    END { exit bad }
  ' "$@"
}

# The script that sourced this file must pass the lint (see above).
if [ -f "${BASH_SOURCE[1]:-}" ] && ! lint_out=$(lint_status "${BASH_SOURCE[1]}"); then
  printf 'FAIL: lint: %s\n' "$lint_out" | sed '2,$s/^/FAIL: lint: /' >&2
  fail=$((fail + 1))
fi

# blobs <n> <offset>: a CSV of n examples of three well separated classes in four features
# (deterministic, no RNG), header a,b,c,d,label: the simulator tests' scenario.
blobs() {
  awk -v n="$1" -v off="$2" 'BEGIN {
    print "a,b,c,d,label"
    for (i = 0; i < n; i++) {
      k = i % 3; t = i + off
      printf "%.4f,%.4f,%.4f,%.4f,%d\n", 3*k + sin(t), -3*k + cos(3*t), k + sin(7*t)/2, cos(5*t), k
    }
  }'
}
# hash_of <file>: the final model's SHA-256 a `fedtune sim` run printed (empty if none):
# compare with ok_same / ok_differ, which fail on an empty side.
hash_of() { sed -n 's/^final model sha256 \([0-9a-f]\{64\}\)$/\1/p' "$1"; }
# acc_of <file>: the final accuracy of a `fedtune sim` run's summary line (empty if none).
acc_of() { sed -n 's/^summary: .*final accuracy \([0-9.]*\),.*/\1/p' "$1"; }

# Prints the totals and exits non-zero on any failure.
report() {
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
  exit $?
}
