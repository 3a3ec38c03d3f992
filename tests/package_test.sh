#!/usr/bin/env bash
# The INSTALLED Debian packages, as a user meets them: scripts/test's package stage builds
# them (cpack -G DEB: fedtune, libfedtune0, libfedtune-dev), checks them with lintian,
# installs them (apt-get install ./fedtune_*.deb ./libfedtune*.deb) and runs this script,
# which ends by removing and purging them. Not a CTest entry: it
# needs the package installed and root (or sudo), and it changes the system.
#   - /usr/bin/fedtune --version, fedtune demo, fedtune sim --tls, fedtune-certs init-ca;
#   - man fedtune-coordinator through the man database (whatis, man -w);
#   - the user and group fedtune, /var/lib/fedtune and /var/log/fedtune, the conffile;
#   - systemd-analyze verify of the installed unit; then the unit's ExecStart, read from
#     the unit file, run as its User=/Group= in its WorkingDirectory= with its
#     Environment= and the shipped /etc/fedtune/coordinator.ini (certificates and model
#     put where that file says; only --listen added, a free port on 127.0.0.1): it
#     starts (log line), writes its metrics file as fedtune, and SIGTERM stops it with
#     exit 0 (this container has no systemd as PID 1 to start the unit itself);
#   - libfedtune0 + libfedtune-dev: pkg-config knows fedtune, and tests/embed_site.sh
#     builds examples/embed-site out of tree against /usr (find_package and pkg-config)
#     and runs its two builds as the two sites of the installed coordinator over TLS;
#   - apt-get remove keeps the conffile, the state and the user; purge of the three
#     packages leaves nothing.
# Usage: tests/package_test.sh <source dir>
set -u
SRC=$1
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || skip "needs root or sudo"
  SUDO=sudo
fi
export MANWIDTH=80 DEBIAN_FRONTEND=noninteractive
dpkg-query -W -f='${Status}' fedtune 2>/dev/null | grep -q "install ok installed" ||
  { echo "FAIL: the package fedtune is not installed (apt-get install ./fedtune_*.deb)" >&2; exit 1; }
UNIT=/lib/systemd/system/fedtune-coordinator.service
cd "$tmp" || exit 1

# ---- the programs
ok "fedtune is /usr/bin/fedtune" test "$(command -v fedtune)" = /usr/bin/fedtune
version=$(sed -n 's/^project(fedtune VERSION \([0-9.]*\) .*/\1/p' "$SRC/CMakeLists.txt")
expect 0 "fedtune $version" -- /usr/bin/fedtune --version
run_status "fedtune demo" 0 demo.out -- /usr/bin/fedtune demo --samples 300 --epochs 3 --hidden 16
ok "fedtune demo printed its summary: $(tail -n 1 demo.out)" grep -q "^demo: test accuracy .* in 3 epochs" demo.out
# sim --tls makes its certificates with the fedtune-certs installed beside fedtune.
blobs 300 0 >train.csv
run_status "fedtune sim --tls" 0 sim.out -- /usr/bin/fedtune sim --data train.csv --arch \
  '{"input":[4],"layers":[{"type":"linear","out":3}]}' --clients 3 --rounds 2 --epochs 1 \
  --batch 10 --lr 0.1 --workers 1 --tls
ok "fedtune sim --tls ran over TLS: $(tail -n 1 sim.out)" grep -q "^sim: .* TLS;" sim.out
run_status "fedtune-certs init-ca" 0 ca.out -- /usr/bin/fedtune-certs init-ca ca
subject=$(openssl x509 -in ca/ca.crt -noout -subject 2>&1)
ok_same "the CA certificate's subject" "$subject" "subject=CN = fedtune federation CA"

# ---- the manual through the man database
what=$(whatis fedtune-coordinator 2>&1)
ok "whatis fedtune-coordinator: $what" grep -q "^fedtune-coordinator (1) *- run the federation coordinator" <<<"$what"
ok_same "man -w fedtune-coordinator" "$(man -w fedtune-coordinator 2>&1)" \
  /usr/share/man/man1/fedtune-coordinator.1.gz
man fedtune-coordinator 2>man.err | col -bx >man.txt
ok "man fedtune-coordinator shows --rounds: $(head -c 200 man.err)" \
  grep -q 'An integer in \[1, 1000000000\]. Default: 10\.' man.txt
ok "man fedtune-coordinator names the service's config" grep -q "/etc/fedtune/coordinator.ini" man.txt
for page in fedtune fedtune-certs fedtune-client fedtune-sim; do
  ok "man -w $page" test -f "$(man -w "$page" 2>/dev/null)"
done

# ---- what postinst made, and the conffile
IFS=: read -r _ _ uid _ _ home shell <<<"$(getent passwd fedtune)"
ok_same "user fedtune: home" "$home" /var/lib/fedtune
ok_same "user fedtune: shell" "$shell" /usr/sbin/nologin
ok "user fedtune is a system user (uid $uid)" test "${uid:-1000}" -lt 1000
ok "group fedtune" test -n "$(getent group fedtune)"
for d in /var/lib/fedtune /var/log/fedtune; do
  ok_same "$d: owner and mode" "$(stat -c '%U:%G %a' "$d" 2>&1)" "fedtune:fedtune 750"
done
ok "coordinator.ini is a conffile" grep -q "/etc/fedtune/coordinator.ini" \
  <<<"$(dpkg-query -W -f='${Conffiles}' fedtune)"

# ---- the systemd unit
run_status "systemd-analyze verify $UNIT" 0 verify.out -- systemd-analyze verify "$UNIT"
ok "systemd-analyze verify said nothing: $(head -c 300 verify.out)" test ! -s verify.out
key() { sed -n "s/^$1=//p" "$UNIT"; }
exec_start=$(key ExecStart) user=$(key User) group=$(key Group) wd=$(key WorkingDirectory)
ok_same "ExecStart" "$exec_start" "/usr/bin/fedtune coordinator --config /etc/fedtune/coordinator.ini"
ok_same "User=" "$user" fedtune
ok_same "WorkingDirectory=" "$wd" /var/lib/fedtune
# What the shipped coordinator.ini refers to: certificates, an initial model.
/usr/bin/fedtune-certs coordinator ca localhost --ip 127.0.0.1 >/dev/null
$SUDO install -d -m 0750 -g fedtune /etc/fedtune/tls
$SUDO install -m 0640 -g fedtune ca/ca.crt /etc/fedtune/tls/ca.crt
$SUDO install -m 0640 -g fedtune ca/coordinator/localhost.crt /etc/fedtune/tls/coordinator.crt
$SUDO install -m 0640 -g fedtune ca/coordinator/localhost.key /etc/fedtune/tls/coordinator.key
/usr/bin/fedtune init --arch '{"input":[4],"layers":[{"type":"linear","out":3}]}' --out m.st >/dev/null
$SUDO install -m 0640 -o fedtune -g fedtune m.st /var/lib/fedtune/model.safetensors
p=$(port)
read -ra argv <<<"$exec_start"
envs=()
while read -r e; do [ -n "$e" ] && envs+=("$e"); done < <(key Environment)
: >service.out # there before the child opens it: the checks below read it at once
(cd "$wd" && exec $SUDO env "${envs[@]}" setpriv --reuid="$user" --regid="$group" --init-groups -- \
  "${argv[@]}" --listen "tcp://127.0.0.1:$p") >service.out 2>&1 &
spid=$!
pids+=("$spid")
ok "the service's ExecStart started: $(tail -n 3 service.out)" \
  wait_for 20 grep -q "info: coordinator on tcp://127.0.0.1:$p: 2 tensors" service.out
ok_same "it writes its metrics file as fedtune" "$($SUDO stat -c %U /var/log/fedtune/metrics.jsonl 2>&1)" fedtune
$SUDO kill -TERM "$spid"
wait_status "SIGTERM stops it cleanly" "$spid" 0 service.out
ok "it said why it stopped" grep -q "stopping after 0 rounds: stop requested" service.out

# ---- the embeddable site library (libfedtune0 + libfedtune-dev): examples/embed-site built
# out of tree against /usr with find_package(fedtune CONFIG) and with pkg-config, its two
# builds the two sites of a coordinator (the installed fedtune) over TLS
for p in libfedtune0 libfedtune-dev; do
  ok "$p is installed" grep -q "install ok installed" <<<"$(dpkg-query -W -f='${Status}' "$p" 2>&1)"
done
ok_same "pkg-config --modversion fedtune" "$(pkg-config --modversion fedtune 2>&1)" "$version"
run_status "embed-site built and run against the installed library (tests/embed_site.sh)" 0 \
  embed.out -- "$SRC/tests/embed_site.sh" /usr/bin/fedtune "$SRC" /usr
ok "embed_site.sh checked everything: $(tail -n 1 embed.out)" grep -q "^[0-9]* passed, 0 failed$" embed.out

# ---- remove, then purge
mapfile -t files < <(dpkg -L fedtune | while read -r f; do [ -f "$f" ] && echo "$f"; done)
ok "the package lists its files (${#files[@]})" test "${#files[@]}" -ge 30
$SUDO rm -rf /etc/fedtune/tls # the administrator's own files, not the package's
run_status "apt-get remove fedtune" 0 remove.out -- $SUDO apt-get remove -y -q fedtune
ok "removed: /usr/bin/fedtune is gone" test ! -e /usr/bin/fedtune
ok "removed: the unit is gone" test ! -e "$UNIT"
ok "removed: the conffile stays" test -f /etc/fedtune/coordinator.ini
ok "removed: the state stays" $SUDO test -f /var/lib/fedtune/model.safetensors
ok "removed: the user stays" test -n "$(getent passwd fedtune)"
mapfile -t libfiles < <(dpkg -L libfedtune0 libfedtune-dev | while read -r f; do [ -f "$f" ] && echo "$f"; done)
ok "the library packages list their files (${#libfiles[@]})" test "${#libfiles[@]}" -ge 10
run_status "apt-get purge fedtune libfedtune0 libfedtune-dev" 0 purge.out -- \
  $SUDO apt-get purge -y -q fedtune libfedtune0 libfedtune-dev
left=()
for f in "${files[@]}" "${libfiles[@]}" /etc/fedtune /var/lib/fedtune /var/log/fedtune; do
  [ -e "$f" ] && left+=("$f")
done
ok "purged: nothing left (${left[*]:-})" test "${#left[@]}" -eq 0
ok "purged: no user fedtune" test -z "$(getent passwd fedtune)"
ok "purged: no group fedtune" test -z "$(getent group fedtune)"
for p in fedtune libfedtune0 libfedtune-dev; do
  ok "purged: dpkg knows no $p" test -z "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)"
done
report
