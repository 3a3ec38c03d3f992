#!/usr/bin/env bash
# Internal things stay internal (the libuv uv__ / internal.h pattern): an internal header
# is one whose opening comment says "Internal to" (net/net_internal.h, net/sock.h,
# core/alloc_internal.h, ...); every other header under core/ net/ proto/ privacy/ models/
# client/ coordinator/ sim/ cli/ is public. No public header declares a fed__ name or a
# test hook, or includes an internal header; no file of coordinator/ client/ sim/ cli/
# includes another module's internal header or calls another module's fed__ function or
# the allocation hook (coordinator/'s own fed__coord_* and internal.h are its business). Then the
# same check over a copy with one planted breach of each kind must report each.
# Usage: internal_names.sh <source dir>
set -u
SRC=$(cd "$1" && pwd)
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"

DIRS=(core net proto privacy models client coordinator sim cli)
USERS=(coordinator client sim cli)
HOOKS='fed__[a-z_]*[ (]|fed_alloc_fail_at|fed_alloc_count'
# The internal prefix of each user module's own shared functions.
declare -A OWN=([coordinator]=coord [client]=site [sim]=sim [cli]=cli)

# Prints one line per breach in the tree at $1 (nothing when clean).
breaches() {
  local root=$1 h f inc
  local -A internal=()
  cd "$root" || return 1
  for h in $(find "${DIRS[@]}" -name '*.h' 2>/dev/null | sort); do
    sed -n '1,/\*\//p' "$h" | grep -q "Internal to" && internal[$h]=1
  done
  for h in $(find "${DIRS[@]}" -name '*.h' 2>/dev/null | sort); do
    [ -n "${internal[$h]:-}" ] && continue
    grep -nE "$HOOKS" "$h" | sed "s|^|$h: public header declares an internal name: |"
    for inc in $(sed -n 's/^#include "\(.*\)"$/\1/p' "$h"); do
      [ -n "${internal[$inc]:-}" ] && echo "$h: public header includes internal $inc"
    done
  done
  local dir own
  for f in $(find "${USERS[@]}" -name '*.[ch]' 2>/dev/null | sort); do
    dir=${f%%/*}
    own=${OWN[$dir]}
    # Its own module's internals are the module's business.
    grep -nE "$HOOKS" "$f" | grep -vE "fed__${own}_" | sed "s|^|$f: uses an internal name: |"
    for inc in $(sed -n 's/^#include "\(.*\)"$/\1/p' "$f"); do
      [ -n "${internal[$inc]:-}" ] && [ "${inc%%/*}" != "$dir" ] && echo "$f: includes internal $inc"
    done
  done
  return 0
}

out=$(breaches "$SRC")
ok "no internal name outside its module: ${out:-none}" test -z "$out"
ok "net_internal.h is seen as internal" grep -q "Internal to" "$SRC/net/net_internal.h"

# The check can fail: a copy of the tree with one breach of each kind.
mkdir -p "$tmp/tree"
(cd "$SRC" && cp -r "${DIRS[@]}" "$tmp/tree/")
printf 'void fed__oops(void);\n' >>"$tmp/tree/net/channel.h"
printf '#include "net/sock.h"\n' >>"$tmp/tree/core/rng.h"
printf '#include "net/net_internal.h"\n' >>"$tmp/tree/sim/sim.c"
printf 'static void f(void) { fed_alloc_fail_at(1); }\n' >>"$tmp/tree/cli/prep.c"
printf 'static void g(void) { fed__coord_finish(0, 0, 0); }\n' >>"$tmp/tree/sim/sim.c"
out=$(breaches "$tmp/tree")
ok "a fed__ declaration in a public header is caught: $out" \
  grep -q "^net/channel.h: public header declares an internal name: .*fed__oops" <<<"$out"
ok "a public header including an internal one is caught" \
  grep -q "^core/rng.h: public header includes internal net/sock.h" <<<"$out"
ok "a user of the channel including net_internal.h is caught" \
  grep -q "^sim/sim.c: includes internal net/net_internal.h" <<<"$out"
ok "the allocation hook in the CLI is caught" \
  grep -q "^cli/prep.c: uses an internal name: .*fed_alloc_fail_at" <<<"$out"
ok "another module's fed__coord_ function in sim is caught" \
  grep -q "^sim/sim.c: uses an internal name: .*fed__coord_finish" <<<"$out"
ok "exactly those five" test "$(wc -l <<<"$out")" -eq 5
report
