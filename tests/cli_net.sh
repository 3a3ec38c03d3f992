#!/usr/bin/env bash
# `fedtune client` and `fedtune coordinator` facing network and certificate mistakes, as
# real processes over TLS on 127.0.0.1 with certificates from certs/fedtune-certs:
#   - malformed endpoints and every kind of bad TLS file (--ca, --cert, --key, --crl) are
#     usage errors (exit 2) naming the option, the value and what is wrong, before
#     anything starts (no data or model is read, nothing binds or connects);
#   - a coordinator given a site (clientAuth-only) certificate refuses to start;
#   - refusals that retrying cannot change end the client with exit 1 and the reason in
#     words, within a bounded time (the `timeout` guard would give 124): a revoked
#     certificate (the coordinator has --crl), a certificate of another CA, a coordinator
#     certificate for another name or from a CA the site does not trust;
#   - a client whose coordinator is not there yet keeps retrying with backoff and joins
#     once it starts; a coordinator killed with SIGKILL and started again is noticed at
#     once by an idle client (the lost connection), which joins the new one.
# `fedtune sim` takes neither endpoints nor TLS files (its endpoint is made inside).
# Usage: cli_net.sh <path to fedtune> <source dir>
set -u
FEDTUNE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
CERTS=$SRC/certs/fedtune-certs
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
cd "$tmp" || exit 1

[ -n "$PY" ] || { echo "SKIP: no python3 to pick a free port"; exit 77; }
at_least() { # <n> <text> <file>: the file has n lines or more with the text
  [ "$(grep -c -- "$2" "$3" 2>/dev/null)" -ge "$1" ] 2>/dev/null
}

{
  "$CERTS" init-ca ca && "$CERTS" coordinator ca localhost --ip 127.0.0.1
  "$CERTS" site ca site-a && "$CERTS" site ca revoked && "$CERTS" revoke ca revoked
  "$CERTS" site ca expired --not-before 20200101000000Z --not-after 20210101000000Z
  "$CERTS" init-ca ca2 --name 'other CA' && "$CERTS" site ca2 intruder
} >/dev/null 2>&1
(export FEDTUNE_CA_DIR=ca && openssl ca -gencrl -config ca/openssl.cnf -crl_lastupdate \
  20200101000000Z -crl_nextupdate 20200201000000Z -out old-crl.pem >/dev/null 2>&1)
openssl pkey -in ca/sites/site-a/site-a.key -aes256 -passout pass:x -out enc.key 2>/dev/null
ok "certificates made" test -s ca2/sites/intruder/intruder.crt -a -s ca/sites/expired/expired.crt
ok "expired CRL made" test -s old-crl.pem
ok "encrypted key made" test -s enc.key
head -31 "$SRC/tests/data/blobs.csv" >d.csv
"$FEDTUNE" init --arch '{"input":[4],"layers":[{"type":"linear","out":3}]}' --out init.st >/dev/null
ok "model made" test -s init.st

SITE=(--ca ca/ca.crt --cert ca/sites/site-a/site-a.crt --key ca/sites/site-a/site-a.key)
COORD=(--ca ca/ca.crt --cert ca/coordinator/localhost.crt --key ca/coordinator/localhost.key)
# A client with site-a's files and data; flags added after these win.
CLIENT=("$FEDTUNE" client --server-name localhost "${SITE[@]}" --data d.csv
  --classes blue,green,red --reconnect-initial 0.2 --reconnect-max 0.5)

# ---- usage errors before anything starts ------------------------------------------------
# A missing data file / model proves nothing was read before the check.
cl() { expect 2 "$1" -- "${CLIENT[@]}" --coordinator "${2:-tcp://127.0.0.1:1}" --data /nonexistent.csv "${@:3}"; }
cl "fedtune client: --coordinator localhost:7443: no transport: write tcp://localhost:7443" localhost:7443
cl "--coordinator tcp://127.0.0.1:99999: port 99999 is outside 1..65535" tcp://127.0.0.1:99999
cl "--coordinator tcp://127.0.0.1:0: port 0 is outside 1..65535" tcp://127.0.0.1:0
cl "--coordinator tcp://*:7443: \"*\" (every interface) is for listening" "tcp://*:7443"
cl "--coordinator ipc:///tmp/x: transport \"ipc\" not supported" ipc:///tmp/x
cl "--ca /x/ca.crt: No such file or directory" "" --ca /x/ca.crt
cl "--ca $tmp: is a directory, not a PEM CA certificate" "" --ca "$tmp"
cl "--ca ca/sites/site-a/site-a.crt: holds no CA certificate" "" --ca ca/sites/site-a/site-a.crt
cl "--cert /tmp: is a directory, not a PEM certificate" "" --cert /tmp
cl "--cert ca/sites/site-a/site-a.key: not a PEM certificate (it holds a PRIVATE KEY)" "" \
  --cert ca/sites/site-a/site-a.key
cl "--cert ca/sites/expired/expired.crt: expired on 2021-01-01 00:00:00 UTC" "" \
  --cert ca/sites/expired/expired.crt --key ca/sites/expired/expired.key
cl "--cert ca/coordinator/localhost.crt: the coordinator's certificate (extended key usage serverAuth only), not a site's" "" \
  "${COORD[@]}"
cl "--key ca/sites/site-a/site-a.crt: not a PEM private key (it holds a CERTIFICATE)" "" \
  --key ca/sites/site-a/site-a.crt
cl "--key ca/sites/revoked/revoked.key: does not match the certificate ca/sites/site-a/site-a.crt" "" \
  --key ca/sites/revoked/revoked.key
cl "--key enc.key: an encrypted private key: fedtune cannot ask for its passphrase" "" --key enc.key
cl "--key /x.key: No such file or directory" "" --key /x.key
cl "--crl old-crl.pem: expired on 2020-02-01 00:00:00 UTC (its next update)" "" --crl old-crl.pem
cl "--crl ca2/crl.pem: not issued by the CA in ca/ca.crt" "" --crl ca2/crl.pem
cl "--crl ca/ca.crt: no CRL in the file: not a PEM CRL (it holds a CERTIFICATE)" "" --crl ca/ca.crt

co() { expect 2 "$1" -- "$FEDTUNE" coordinator --listen "${2:-tcp://127.0.0.1:0}" "${COORD[@]}" \
  --model /nonexistent.st "${@:3}"; }
co "fedtune coordinator: --listen tcp://127.0.0.1:99999: port 99999 is outside 0..65535 (0: a free port)" \
  tcp://127.0.0.1:99999
co "--listen localhost:7443: no transport: write tcp://localhost:7443" localhost:7443
co "--listen tcp://127.0.0.1: no port: tcp://HOST:PORT" tcp://127.0.0.1
co "--ca /x/ca.crt: No such file or directory" "" --ca /x/ca.crt
co "--cert ca/sites/site-a/site-a.crt: a site certificate (extended key usage clientAuth only), not the coordinator's" "" \
  "${SITE[@]}"
co "--cert $tmp: is a directory, not a PEM certificate" "" --cert "$tmp"
co "--key ca/sites/site-a/site-a.key: does not match the certificate ca/coordinator/localhost.crt" "" \
  --key ca/sites/site-a/site-a.key
co "--crl ca/ca.crt: no CRL in the file" "" --crl ca/ca.crt
co "--crl old-crl.pem: expired on 2020-02-01" "" --crl old-crl.pem

# A coordinator with a site certificate and a real model refuses to start (exit 2), where
# it used to listen and wait forever (the guard would give 124).
expect 2 "--cert ca/sites/site-a/site-a.crt: a site certificate" -- timeout 20 "$FEDTUNE" \
  coordinator --listen "tcp://127.0.0.1:$(port)" "${SITE[@]}" --model init.st

# ---- refusals that retrying cannot change: exit 1 with the reason ------------------------
P=$(port)
"$FEDTUNE" coordinator --listen "tcp://127.0.0.1:$P" "${COORD[@]}" --crl ca/crl.pem --model init.st \
  --rounds 1 --min-clients 1 --min-fit 1 >coord.log 2>&1 &
pids+=($!)
ok "coordinator up" wait_for 20 grep -q "coordinator on tcp://127.0.0.1:$P" coord.log
E="tcp://127.0.0.1:$P"
expect 1 "fedtune client: the coordinator refused this site's certificate: revoked (TLS alert 44); not retrying" \
  -- timeout 30 "${CLIENT[@]}" --coordinator "$E" --cert ca/sites/revoked/revoked.crt --key ca/sites/revoked/revoked.key
expect 1 "fedtune client: the coordinator refused this site's certificate: unknown CA" \
  -- timeout 30 "${CLIENT[@]}" --coordinator "$E" --cert ca2/sites/intruder/intruder.crt --key ca2/sites/intruder/intruder.key
expect 1 "fedtune client: the coordinator's certificate with CN localhost is refused: hostname mismatch (it is not issued for fed.example.org); not retrying" \
  -- timeout 30 "${CLIENT[@]}" --coordinator "$E" --server-name fed.example.org
expect 1 "the coordinator's certificate with CN localhost is refused: self-signed certificate in certificate chain; not retrying" \
  -- timeout 30 "${CLIENT[@]}" --coordinator "$E" --ca ca2/ca.crt --cert ca2/sites/intruder/intruder.crt \
  --key ca2/sites/intruder/intruder.key
ok "coordinator logged the revoked site" grep -q "certificate CN revoked): certificate refused: certificate revoked" coord.log
kill "${pids[-1]}" 2>/dev/null
wait "${pids[-1]}" 2>/dev/null

# ---- network trouble keeps a client retrying -------------------------------------------
# No coordinator yet: the handshake window (10 s) runs out, the client backs off and
# tries again, twice; then the coordinator starts and the client joins.
P=$(port)
E="tcp://127.0.0.1:$P"
"${CLIENT[@]}" --coordinator "$E" >wait.log 2>&1 &
cpid=$!
pids+=("$cpid")
ok "client retries while nobody listens" wait_for 40 at_least 2 "reconnecting in" wait.log
ok "...saying why: $(grep -m1 'reconnecting in' wait.log)" grep -q "no connection to $E (refused, unreachable or not resolved" wait.log
ok "client still running after two backoffs" kill -0 "$cpid"
coordinator() { # <log>: the coordinator on $P, waiting for two sites (so it stays idle)
  exec "$FEDTUNE" coordinator --listen "$E" "${COORD[@]}" --crl ca/crl.pem --model init.st --rounds 1 \
    --min-clients 2 --min-fit 2 >"$1" 2>&1
}
coordinator c1.log &
pids+=($!)
ok "client joins once the coordinator is up" wait_for 30 grep -q "site: joined the coordinator" wait.log
ok "coordinator admitted it" wait_for 10 grep -q "peer site-a joined" c1.log

# A coordinator killed (no Bye, no CLOSE) and started again: the idle client learns from
# the lost connection, not from its next keepalive (10 s away), and joins the new one.
kill -9 "${pids[-1]}"
wait "${pids[-1]}" 2>/dev/null
coordinator c2.log &
pids+=($!)
ok "client noticed the lost connection" wait_for 30 grep -q "ended (lost the connection: the coordinator went away" wait.log
ok "client joins the restarted coordinator" wait_for 30 at_least 2 "site: joined the coordinator" wait.log
ok "restarted coordinator admitted it" wait_for 10 grep -q "peer site-a joined" c2.log
ok "no stale session reached it" test "$(grep -c "dropped peer" c2.log)" -eq 0
# SIGTERM: the coordinator says Bye (it is only going away) and the client waits for it.
kill "${pids[-1]}"
wait_status "coordinator stops cleanly on SIGTERM" "${pids[-1]}" 0 c2.log
ok "client hears it is only going away" wait_for 10 grep -q "the coordinator is going away" wait.log
ok "client keeps running" kill -0 "$cpid"
kill "$cpid"
wait_status "client stops cleanly on SIGTERM" "$cpid" 0 wait.log
report
