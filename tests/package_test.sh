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
#     Environment= and the shipped /etc/fedtune/coordinator.ini (certificates, CRL and
#     model put where that file says; only --listen and --http moved to free ports on
#     127.0.0.1): it starts (log lines), writes its metrics file as fedtune, and SIGTERM
#     stops it with exit 0 (this container has no systemd as PID 1 to start the unit);
#   - operations on that service without a restart: two installed `fedtune client` sites
#     train; /metrics (Prometheus text) counts the rounds and the sites, the status page
#     names the sites and charts the rounds; `fedtune admin` (an admin certificate from
#     `fedtune-certs admin`) reads the status, reloads the CRL after `fedtune-certs
#     revoke site-b` (site-b's session closes at once and it gives up), evicts site-a
#     (its rejoins are refused), each action logged with the admin's CN, and stops the
#     coordinator (exit 0);
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
# What the shipped coordinator.ini refers to: certificates and the CRL, an initial model.
{
  /usr/bin/fedtune-certs coordinator ca localhost --ip 127.0.0.1
  for site in site-a site-b; do /usr/bin/fedtune-certs site ca "$site"; done
  /usr/bin/fedtune-certs admin ca ops
} >certs.out 2>&1
ok "fedtune-certs made the coordinator's, two sites' and an admin's certificates" \
  test -s ca/coordinator/localhost.crt -a -s ca/sites/site-b/site-b.crt -a -s ca/admins/ops/ops.crt
install_crl() { $SUDO install -m 0640 -g fedtune ca/crl.pem /etc/fedtune/tls/crl.pem; }
$SUDO install -d -m 0750 -g fedtune /etc/fedtune/tls
$SUDO install -m 0640 -g fedtune ca/ca.crt /etc/fedtune/tls/ca.crt
$SUDO install -m 0640 -g fedtune ca/coordinator/localhost.crt /etc/fedtune/tls/coordinator.crt
$SUDO install -m 0640 -g fedtune ca/coordinator/localhost.key /etc/fedtune/tls/coordinator.key
install_crl
/usr/bin/fedtune init --arch '{"input":[4],"layers":[{"type":"linear","out":3}]}' --out m.st >/dev/null
$SUDO install -m 0640 -o fedtune -g fedtune m.st /var/lib/fedtune/model.safetensors
read -ra argv <<<"$exec_start"
envs=()
while read -r e; do [ -n "$e" ] && envs+=("$e"); done < <(key Environment)
# service <log> <flags...>: the unit's ExecStart as its User= in its WorkingDirectory= with
# its Environment=, the given flags added; in the background, pid in $spid.
service() {
  local log=$1
  shift
  : >"$log" # there before the child opens it: the checks below read it at once
  (cd "$wd" && exec $SUDO env "${envs[@]}" setpriv --reuid="$user" --regid="$group" --init-groups -- \
    "${argv[@]}" "$@") >"$log" 2>&1 &
  spid=$!
  pids+=("$spid")
}
p=$(port)
h=$(port)
# The shipped configuration as it is, but for the two ports (free ones on 127.0.0.1).
service service.out --listen "tcp://127.0.0.1:$p" --http "127.0.0.1:$h"
ok "the service's ExecStart started: $(tail -n 3 service.out)" \
  wait_for 20 grep -q "info: coordinator on tcp://127.0.0.1:$p: 2 tensors" service.out
ok "its monitoring server started (http = 127.0.0.1:9464 in the shipped config, moved)" \
  wait_for 20 grep -q "monitoring on http://127.0.0.1:$h" service.out
ok_same "it writes its metrics file as fedtune" "$($SUDO stat -c %U /var/log/fedtune/metrics.jsonl 2>&1)" fedtune
$SUDO kill -TERM "$spid"
wait_status "SIGTERM (systemctl stop) stops it cleanly" "$spid" 0 service.out
ok "it said why it stopped" grep -q "stopping after 0 rounds: stop requested" service.out

# ---- a day of operations on the installed service: two sites train, the status page and
# /metrics show it, an admin revokes one site (fedtune-certs revoke, reload-crl), evicts
# the other, and stops the coordinator, all without a restart.
$SUDO rm -rf /var/lib/fedtune/checkpoints
service ops.out --listen "tcp://127.0.0.1:$p" --http "127.0.0.1:$h" --rounds 1000000 --min-clients 2
ok "the service started again" wait_for 20 grep -q "info: coordinator on tcp://127.0.0.1:$p" ops.out
head -1 "$SRC/tests/data/blobs.csv" | tee a.csv >b.csv
tail -n +2 "$SRC/tests/data/blobs.csv" | awk 'NR % 2 == 0' >>a.csv
tail -n +2 "$SRC/tests/data/blobs.csv" | awk 'NR % 2 == 1' >>b.csv
sitepid=()
for site in site-a site-b; do
  /usr/bin/fedtune client --coordinator "tcp://127.0.0.1:$p" --server-name localhost \
    --ca ca/ca.crt --cert "ca/sites/$site/$site.crt" --key "ca/sites/$site/$site.key" \
    --data "${site#site-}.csv" --classes blue,green,red >"$site.out" 2>&1 &
  sitepid+=($!)
  pids+=($!)
done
metric() { curl -s --max-time 5 "http://127.0.0.1:$h/metrics" | sed -n "s/^$1 //p"; }
rounds_at_least() { [ "$(metric fedtune_rounds_total | cut -d. -f1)" -ge "$1" ] 2>/dev/null; }
ok "rounds run: /metrics counts 3 or more" wait_for 60 rounds_at_least 3
ok_same "/metrics: two sites connected" "$(metric fedtune_sites_connected)" 2
ok "/metrics is Prometheus text" grep -q "^content-type: text/plain; version=0.0.4" \
  <(curl -s -D - -o /dev/null --max-time 5 "http://127.0.0.1:$h/metrics" | tr -d '\r' | tr 'A-Z' 'a-z')
curl -s --max-time 5 "http://127.0.0.1:$h/" >page.html
ok "the status page names both sites" grep -q 'site-a</td>' page.html
ok "...and site-b" grep -q 'site-b</td>' page.html
ok "...and charts the rounds as inline SVG" grep -q '<svg id="accuracy-chart"' page.html
ok "...with nothing loaded from elsewhere" test -z "$(grep -oE '(src|href)="https?://[^"]*"' page.html)"
ADMIN=(/usr/bin/fedtune admin --coordinator "tcp://127.0.0.1:$p" --server-name localhost
  --ca ca/ca.crt --cert ca/admins/ops/ops.crt --key ca/admins/ops/ops.key)
expect 0 '"sites_connected":2' -- "${ADMIN[@]}" status
site_state() { # <site>: its state in /status
  curl -s --max-time 5 "http://127.0.0.1:$h/status" |
    "$PY" -c 'import json, sys; print([s["state"] for s in json.load(sys.stdin)["sites"] if s["name"] == sys.argv[1]][0])' "$1" 2>/dev/null
}
state_is() { [ "$(site_state "$1")" = "$2" ]; }
# Revoke site-b at the CA; the coordinator picks the new CRL up without a restart.
run_status "fedtune-certs revoke site-b" 0 revoke.out -- /usr/bin/fedtune-certs revoke ca site-b
install_crl
expect 0 "reloaded /etc/fedtune/tls/crl.pem: 1 session of revoked certificates closed" \
  -- "${ADMIN[@]}" reload-crl
ok "site-b's session was closed at once" grep -q "dropped peer site-b: certificate revoked (CRL reloaded)" ops.out
wait_status "site-b, revoked, gives up (exit 1)" "${sitepid[1]}" 1 site-b.out
ok "site-b says its certificate was revoked" grep -qi "revoked" site-b.out
ok "/status: site-b left" wait_for 10 state_is site-b left
# Evict site-a: its session closes and its rejoins are refused.
expect 0 "evicted site-a: its session is closed; its rejoin is refused until readmit" \
  -- "${ADMIN[@]}" evict site-a
ok "site-a's rejoin is refused" wait_for 30 grep -q "site-a refused: evicted by an admin" ops.out
ok "/status: site-a evicted" wait_for 10 state_is site-a evicted
for line in "admin ops: reload-crl: ok" "admin ops: evict site-a: ok" "admin ops: status: ok"; do
  ok "the coordinator logged \"$line\" (the admin's identity)" grep -q "$line" ops.out
done
expect 0 "stopping (as on SIGTERM)" -- "${ADMIN[@]}" stop
wait_status "fedtune admin stop stops it cleanly" "$spid" 0 ops.out
kill "${sitepid[0]}" 2>/dev/null
$SUDO rm -rf /var/lib/fedtune/checkpoints /var/lib/fedtune/final.safetensors

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
