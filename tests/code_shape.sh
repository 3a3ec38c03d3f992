#!/usr/bin/env bash
# The size guard rail (scripts/code-shape): no file over 800 lines and no function over
# 120 in coordinator/ client/ sim/ privacy/ cli/ unless a `/* long: <reason> */` comment on
# the line before says why. Then the same check over a copy with planted breaches (a long
# file, a long function, a long function with the marker, a long multi-line signature)
# must report exactly the two unmarked ones.
# Usage: code_shape.sh <source dir>
set -u
SRC=$(cd "$1" && pwd)
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"

out=$("$SRC/scripts/code-shape" "$SRC")
rc=$?
ok "no file over 800 lines, no function over 120: ${out:-none}" test -z "$out"
ok "and the script says so with exit 0 (got $rc)" test "$rc" -eq 0

# The check can fail: a tree with one breach of each kind and one allowed long function.
mkdir -p "$tmp/tree/sim" "$tmp/tree/privacy" "$tmp/tree/core"
body() { # a function of $1 lines in all
  printf 'fed_err %s(const char *a,\n            int b) {\n' "$2"
  for ((i = 0; i < $1 - 3; i++)); do printf '    x += %d;\n' "$i"; done
  printf '}\n'
}
{
  body 121 too_long
  printf '\n/* long: a flat switch over every message type */\n'
  body 200 allowed_long
  body 120 just_fits
} >"$tmp/tree/sim/planted.c"
for ((i = 0; i < 801; i++)); do echo "int v$i;"; done >"$tmp/tree/privacy/big.c"
for ((i = 0; i < 900; i++)); do echo "int w$i;"; done >"$tmp/tree/core/outside.c"
out=$("$SRC/scripts/code-shape" "$tmp/tree")
rc=$?
ok "a function of 121 lines is caught: $out" \
  grep -qx "sim/planted.c:too_long: 121 lines (> 120)" <<<"$out"
ok "a file of 801 lines is caught" grep -qx "privacy/big.c: 801 lines (> 800)" <<<"$out"
ok "exactly those two (the marked one, the one of 120 and core/ pass)" \
  test "$(wc -l <<<"$out")" -eq 2
ok "and the script fails (exit $rc)" test "$rc" -eq 1
all=$("$SRC/scripts/code-shape" --all "$tmp/tree")
ok "--all lists every function with its length, longest first: $all" \
  test "$(head -1 <<<"$all")" = "200 sim/planted.c:allowed_long 1"
report
