#!/usr/bin/env bash
# libfedtune as a program outside the tree uses it: installed into a prefix (`cmake
# --install` of the build tree, or already there, e.g. /usr from the .deb), it
#   - exports only the fedtune_* functions its header declares, under SONAME
#     libfedtune.so.<major>, and pkg-config reports the headers' version;
#   - builds examples/embed-site out of tree BOTH ways, with find_package(fedtune CONFIG)
#     (CMAKE_PREFIX_PATH) and with its Makefile (pkg-config, PKG_CONFIG_PATH), C++ included;
#   - and the two builds are the two sites of a real `fedtune coordinator` over TLS on
#     127.0.0.1 (certificates from certs/fedtune-certs): all 3 rounds complete, the
#     coordinator exits 0, each site prints its 3 rounds with metrics (exact example and
#     byte counts) and exits 0; a site of another CA is refused with the reason (exit 1);
#     a bad config key and a bad CSV line are one clear line (exit 1).
# Usage: embed_site.sh <path to fedtune> <source dir> <prefix> [<build dir to install
#        into the prefix first (the prefix is emptied)>]
set -u
FEDTUNE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
PREFIX=$3
BUILD=${4:-}
case $PREFIX in /*) ;; *) PREFIX=$PWD/$PREFIX ;; esac
case $BUILD in /* | "") ;; *) BUILD=$PWD/$BUILD ;; esac
CERTS=$SRC/certs/fedtune-certs
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
cd "$tmp" || exit 1

[ -n "$PY" ] || skip "no python3 to pick a free port"
command -v c++ >/dev/null || skip "no C++ compiler for the header check"

# ---- the installed files ------------------------------------------------------------------
if [ -n "$BUILD" ]; then
  rm -rf "$PREFIX"
  run_status "cmake --install into $PREFIX" 0 install.log -- cmake --install "$BUILD" --prefix "$PREFIX"
fi
PREFIX=$(cd "$PREFIX" && pwd)
pc=$(find "$PREFIX"/lib* -maxdepth 3 -path '*/pkgconfig/fedtune.pc' 2>/dev/null | head -1)
ok "fedtune.pc installed under $PREFIX" test -n "$pc"
LIBDIR=$(dirname "$(dirname "${pc:-/x/x/x}")")
INC=$PREFIX/include/fedtune
major=$(sed -n 's/^#define FEDTUNE_VERSION_MAJOR *\([0-9]*\)$/\1/p' "$INC/version.h")
version=$(sed -n 's/^#define FEDTUNE_VERSION_STRING "\(.*\)"$/\1/p' "$INC/version.h")
ok "fedtune.h installed" test -f "$INC/fedtune.h"
ok_same "version.h's version is the project's" "$version" \
  "$(sed -n 's/^project(fedtune VERSION \([0-9.]*\) .*/\1/p' "$SRC/CMakeLists.txt")"
ok "CMake package installed" test -f "$LIBDIR/cmake/fedtune/fedtuneConfig.cmake" -a \
  -f "$LIBDIR/cmake/fedtune/fedtuneConfigVersion.cmake" -a -f "$LIBDIR/cmake/fedtune/fedtuneTargets.cmake"
LIB=$LIBDIR/libfedtune.so.$major
ok "libfedtune.so.$major and libfedtune.so installed" test -f "$LIB" -a -L "$LIBDIR/libfedtune.so"
ok_same "SONAME" "$(objdump -p "$LIB" | awk '$1 == "SONAME" {print $2}')" "libfedtune.so.$major"

# Exactly the functions the header declares are exported, nothing else.
nm -D --defined-only "$LIB" | awk '{print $NF}' | sed 's/@.*//' | sort >exported
sed -n 's/^FEDTUNE_API [^(]*[ *]\(fedtune_[a-z_]*\)(.*/\1/p' "$INC/fedtune.h" | sort >declared
ok "the header declares 20 functions ($(wc -l <declared))" test "$(wc -l <declared)" -eq 20
ok_same "exported symbols = declared functions" "$(tr '\n' ' ' <exported)" "$(tr '\n' ' ' <declared)"
ok "no other symbol ($(grep -vc '^fedtune_[a-z]' exported) not fedtune_*)" test "$(grep -vc '^fedtune_[a-z]' exported)" -eq 0
export PKG_CONFIG_PATH=$LIBDIR/pkgconfig
ok_same "pkg-config --modversion fedtune" "$(pkg-config --modversion fedtune)" "$version"
ok_same "pkg-config: the prefix installed into" "$(pkg-config --variable=prefix fedtune)" "$PREFIX"
ok_same "pkg-config --libs fedtune" "$(pkg-config --libs fedtune | sed 's/^-L[^ ]* //; s/ *$//')" "-lfedtune"

# The library was built with sanitizers (the ASan tree): its runtime comes in with it.
if ldd "$LIB" | grep -q libasan; then
  export ASAN_OPTIONS="$ASAN_OPTIONS:verify_asan_link_order=0"
fi

# ---- the example, built both ways ------------------------------------------------------------
run_status "example configured with find_package (CMAKE_PREFIX_PATH)" 0 cm-config.log -- \
  cmake -S "$SRC/examples/embed-site" -B cm -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_BUILD_TYPE=Release
run_status "example built with CMake" 0 cm-build.log -- cmake --build cm
cp -r "$SRC/examples/embed-site" mk
rm -rf mk/build
run_status "example built with its Makefile (pkg-config)" 0 mk-build.log -- make -C mk
CM=$tmp/cm/embed-site
MK=$tmp/mk/embed-site
# The library the loader picks, by its real path: on a merged-/usr system ldd names
# /lib/x86_64-linux-gnu/... for a library installed in /usr/lib/x86_64-linux-gnu.
linked=$(ldd "$CM" 2>/dev/null | sed -n "s/^[[:space:]]*libfedtune\.so\.$major => \([^ ]*\) .*/\1/p")
ok_same "the CMake build links $LIB" "$(readlink -f "$linked" 2>/dev/null)" \
  "$(readlink -f "$LIBDIR/libfedtune.so.$major")"
export LD_LIBRARY_PATH=$LIBDIR
expect 0 "libfedtune $version from C++: success" -- "$tmp/cm/header-check"
expect 0 "libfedtune $version from C++: success" -- "$tmp/mk/header-check"
expect 2 "usage: embed-site SITE.ini DATA.csv [KEY=VALUE...]" -- "$MK"

# ---- a federation of the two builds -----------------------------------------------------------
{
  "$CERTS" init-ca ca && "$CERTS" coordinator ca localhost --ip 127.0.0.1
  "$CERTS" site ca site-a && "$CERTS" site ca site-b
  "$CERTS" init-ca ca2 --name 'other CA' && "$CERTS" site ca2 intruder
} >/dev/null 2>&1
ok "certificates made" test -s ca/sites/site-b/site-b.crt -a -s ca2/sites/intruder/intruder.crt
# blobs.csv with class ids (blue 0, green 1, red 2); each site every other row.
tail -n +2 "$SRC/tests/data/blobs.csv" | sed 's/,blue$/,0/; s/,green$/,1/; s/,red$/,2/' >all.csv
{ echo "f1,f2,f3,f4,class"; awk 'NR % 2 == 1' all.csv; } >a.csv
{ echo "f1,f2,f3,f4,class"; awk 'NR % 2 == 0' all.csv; } >b.csv
ok "75 rows each" test "$(wc -l <a.csv)" -eq 76 -a "$(wc -l <b.csv)" -eq 76
"$FEDTUNE" init --arch '{"input":[4],"layers":[{"type":"linear","out":16},{"type":"relu"},{"type":"linear","out":3}]}' \
  --seed 3 --out init.st >/dev/null
ok "model made" test -s init.st

P=$(port)
site_ini() { # <site>: its config
  printf '[client]\ncoordinator = tcp://127.0.0.1:%s\nserver-name = localhost\nca = ca/ca.crt\n' "$P"
  printf 'cert = ca/sites/%s/%s.crt\nkey = ca/sites/%s/%s.key\n' "$1" "$1" "$1" "$1"
  printf 'reconnect-initial = 0.2\nreconnect-max = 1\n'
}
site_ini site-a >a.ini
site_ini site-b >b.ini
site_ini intruder | sed 's|ca/sites/intruder|ca2/sites/intruder|g' >x.ini

printf '[client]\ncolour = red\n' >bad.ini
expect 1 "embed-site: bad.ini:2: colour: unknown key" -- "$CM" bad.ini a.csv
sed '3s/.*/1.0,2.0,x,4.0,1/' a.csv >bad.csv
expect 1 "embed-site: bad.csv:3: expected 4 numbers and a class id" -- "$MK" a.ini bad.csv
expect 1 "embed-site: seed: \"x\" is not an integer" -- "$MK" a.ini a.csv seed=x

timeout 120 "$FEDTUNE" coordinator --listen "tcp://127.0.0.1:$P" --ca ca/ca.crt \
  --cert ca/coordinator/localhost.crt --key ca/coordinator/localhost.key --model init.st \
  --rounds 3 --min-clients 2 --min-fit 2 --epochs 2 --lr 0.01 --out final.st >coord.log 2>&1 &
cpid=$!
pids+=("$cpid")
ok "coordinator up" wait_for 20 grep -q "coordinator on tcp://127.0.0.1:$P" coord.log
expect 1 "embed-site: the coordinator refused this site's certificate: unknown CA" -- \
  timeout 30 "$MK" x.ini a.csv
timeout 120 "$CM" a.ini a.csv >a.log 2>&1 &
apid=$!
timeout 120 "$MK" b.ini b.csv test-split=0.4 >b.log 2>&1 &
bpid=$!
pids+=("$apid" "$bpid")
wait_status "coordinator exits 0" "$cpid" 0 coord.log
wait_status "site a (CMake build) exits 0" "$apid" 0 a.log
wait_status "site b (Makefile build) exits 0" "$bpid" 0 b.log
ok "3 rounds of 2 sites" test "$(grep -c 'round [1-3]/3: clients 2 sampled, 2 returned, 0 rejected' coord.log)" -eq 3
ok "final model written" test -s final.st

# 75 rows, 25 a class: test-split 0.2 holds out 5 of each, 0.4 10 of each.
ok_same "site a's start" "$(grep -c '^libfedtune '"$version"': a site with 4 features, 3 classes$' a.log)" 1
ok_same "site a joined" "$(grep -c '^joined the coordinator with 60 training and 15 test examples$' a.log)" 1
ok_same "site b joined (test-split=0.4 given as an argument)" \
  "$(grep -c '^joined the coordinator with 45 training and 30 test examples$' b.log)" 1
# The model has 4*16+16+16*3+3 = 131 floats: 524 bytes each way a round; the statistics
# round before round 1 sends the exact input moments: 5 limbs x (a count, 4 sums, 4 sums
# of squares) = 65 floats (dataset/moments.h), 260 bytes.
for r in 1 2 3; do
  ok_same "site a: round $r started" "$(grep -c "^round-started (round $r)$" a.log)" 1
  ok "site a: round $r done with metrics: $(grep "^round $r done" a.log)" grep -Eq \
    "^round $r done: 60 examples, train loss [0-9]+\.[0-9]{4} acc [0-9]+\.[0-9]%, global model loss [0-9]+\.[0-9]{4} acc [0-9]+\.[0-9]%, $((524 * r)) bytes in, $((524 * r + 260)) out$" a.log
  ok "site b: round $r done with metrics" grep -Eq \
    "^round $r done: 45 examples, train loss [0-9]+\.[0-9]{4} acc .*, $((524 * r)) bytes in, $((524 * r + 260)) out$" b.log
done
ok_same "site a: 3 rounds, no other" "$(grep -c '^round [0-9]* done' a.log)" 3
for s in a b; do
  ok_same "site $s: the end" "$(grep -c '^the coordinator ended the federation after 3 rounds of this site$' $s.log)" 1
  ok_same "site $s: left once, at the end" "$(grep -c '^left$' $s.log)" 1
  ok "site $s: no failed or dropped round" test "$(grep -c 'round-failed\|round-dropped\|^error' $s.log)" -eq 0
done
# ---- a site whose data do not fit the model: every attempt fails ---------------------------
# The coordinator gives up after 2 attempts of round 1 (exit 1) and ends the federation;
# the site hears a start and a failure per attempt, and the end (exit 0).
cut -d, -f2- a.csv >narrow.csv
P=$(port)
site_ini site-a >n.ini
timeout 60 "$FEDTUNE" coordinator --listen "tcp://127.0.0.1:$P" --ca ca/ca.crt \
  --cert ca/coordinator/localhost.crt --key ca/coordinator/localhost.key --model init.st \
  --rounds 1 --min-clients 1 --min-fit 1 --input-stats off --retry-backoff-ms 100 \
  --max-failed-attempts 2 >coord2.log 2>&1 &
cpid=$!
pids+=("$cpid")
ok "second coordinator up" wait_for 20 grep -q "coordinator on tcp://127.0.0.1:$P" coord2.log
run_status "a site of bad data runs to the end" 0 n.log -- timeout 60 "$CM" n.ini narrow.csv
wait_status "the coordinator gives up (exit 1)" "$cpid" 1 coord2.log
ok "...after 2 failed attempts" grep -q "round 1 failed 2 attempts in a row" coord2.log
ok_same "the site's events" "$(grep -v '^libfedtune\|^joined\|^embed-site:' n.log | tr '\n' '|')" \
  "round-started (round 1)|round-failed (round 1)|round-started (round 1)|round-failed (round 1)|the coordinator ended the federation after 0 rounds of this site|left|"
ok "the site's warning names the shapes" grep -q "embed-site: libfedtune: site: round 1 failed: evaluation data has 3 features per example; the model takes 4" n.log
ok "the coordinator admitted site-a and site-b" grep -q "site-a joined" coord.log
ok "...and site-b" grep -q "site-b joined" coord.log
report
