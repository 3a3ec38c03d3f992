#!/usr/bin/env bash
# `fedtune admin` against a running coordinator, as real processes over TLS on 127.0.0.1
# with certificates from certs/fedtune-certs (docs/ADMIN.md):
#   - usage mistakes (no or unknown ACTION, a SITE missing or extra) are exit 2;
#   - an admin certificate is refused by `fedtune client` (exit 2) and never counted as a
#     site; a site's certificate used with `fedtune admin` meets the coordinator's refusal
#     (exit 1);
#   - status prints the coordinator's JSON; pause stops new rounds (rounds_done stops
#     growing once the round in flight is done) and resume starts them again;
#   - evict closes a site's session and refuses its rejoin until readmit; an unknown site
#     is an error reply;
#   - reload-crl after fedtune-certs revoke closes the revoked site's session at once and
#     its reconnect is refused; a broken CRL file is an error reply and the old CRL stays;
#   - stop ends the coordinator as SIGTERM does (exit 0);
#   - every action is logged with the admin's CN, the action, the target and the outcome.
# Usage: cli_admin.sh <path to fedtune> <source dir>
set -u
FEDTUNE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
CERTS=$SRC/certs/fedtune-certs
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
cd "$tmp" || exit 1

[ -n "$PY" ] || skip "no python3 to pick a free port and read JSON"
at_least() { # <n> <text> <file>: the file has n lines or more with the text
  [ "$(grep -c -- "$2" "$3" 2>/dev/null)" -ge "$1" ] 2>/dev/null
}

{
  "$CERTS" init-ca ca && "$CERTS" coordinator ca localhost --ip 127.0.0.1
  "$CERTS" site ca site-a && "$CERTS" site ca site-b && "$CERTS" site ca site-c
  "$CERTS" admin ca ops
} >/dev/null 2>&1
ok "certificates made" test -s ca/admins/ops/ops.crt -a -s ca/sites/site-c/site-c.crt
head -1 "$SRC/tests/data/blobs.csv" >d.csv
tail -n +2 "$SRC/tests/data/blobs.csv" | head -40 >>d.csv
"$FEDTUNE" init --arch '{"input":[4],"layers":[{"type":"linear","out":3}]}' --out init.st >/dev/null
ok "model made" test -s init.st

P=$(port)
E="tcp://127.0.0.1:$P"
ADMIN=("$FEDTUNE" admin --coordinator "$E" --server-name localhost --ca ca/ca.crt
  --cert ca/admins/ops/ops.crt --key ca/admins/ops/ops.key --timeout 20)
client() { # <site> [flags...]
  local s=$1
  shift
  exec "$FEDTUNE" client --coordinator "$E" --server-name localhost --ca ca/ca.crt \
    --cert "ca/sites/$s/$s.crt" --key "ca/sites/$s/$s.key" --data d.csv \
    --classes blue,green,red --reconnect-initial 0.2 --reconnect-max 0.5 "$@"
}
# status_field <expression over the JSON j>: prints it, from a fresh `fedtune admin status`.
status_field() {
  "${ADMIN[@]}" status 2>/dev/null | "$PY" -c 'import json, sys; j = json.load(sys.stdin); print('"$1"')'
}
rounds() { status_field 'j["rounds_done"]'; }
rounds_above() { [ "$(rounds)" -gt "$1" ] 2>/dev/null; }
state_is() { [ "$(status_field 'j["state"]')" = "$1" ]; }
site_state_is() { # <site> <state>
  [ "$(status_field '[s["state"] for s in j["sites"] if s["name"] == "'"$1"'"][0]')" = "$2" ]
}
site_state_in() { # <site> <state>...: its state is one of them
  local site=$1 st
  shift
  st=$(status_field '[s["state"] for s in j["sites"] if s["name"] == "'"$site"'"][0]')
  [[ " $* " == *" $st "* ]] && [ -n "$st" ]
}

# ---- usage mistakes: exit 2 before anything connects -------------------------------------
expect 0 "usage: fedtune admin" -- "$FEDTUNE" admin --help
expect 2 "fedtune admin: missing ACTION: status, pause, resume, stop, reload-crl, evict SITE or readmit SITE" \
  -- "${ADMIN[@]}"
expect 2 'fedtune admin: ACTION "frob": not one of status, pause, resume, stop, reload-crl, evict, readmit' \
  -- "${ADMIN[@]}" frob
expect 2 "fedtune admin: evict needs a SITE (the site's certificate CN)" -- "${ADMIN[@]}" evict
expect 2 'fedtune admin: pause takes no SITE (got "site-a")' -- "${ADMIN[@]}" pause site-a
expect 2 "fedtune admin: SITE: 65 characters, a site's name has at most 64" \
  -- "${ADMIN[@]}" evict "$(printf 'x%.0s' {1..65})"
expect 2 "a site's name is printable ASCII" -- "${ADMIN[@]}" evict "$(printf 'a\tb')"
expect 2 "fedtune admin: --coordinator is required" -- "$FEDTUNE" admin status
expect 2 "fedtune admin: --cert /nonexistent.crt: No such file or directory" \
  -- "${ADMIN[@]}" status --cert /nonexistent.crt
expect 2 "fedtune admin: --cert ca/coordinator/localhost.crt: the coordinator's certificate" \
  -- "${ADMIN[@]}" status --cert ca/coordinator/localhost.crt --key ca/coordinator/localhost.key
expect 1 "fedtune admin: coordinator $E: not welcomed within 1000 ms: no connection to $E" \
  -- "${ADMIN[@]}" status --timeout 1
ok "in one line" test "$("${ADMIN[@]}" status --timeout 0.5 2>&1 | wc -l)" -eq 1
ok "examples/admin.ini is stale: regenerate with fedtune admin --print-config" \
  cmp -s <("$FEDTUNE" admin --print-config) "$SRC/examples/admin.ini"
# An admin certificate is not a site's.
expect 2 "fedtune client: --cert ca/admins/ops/ops.crt: an admin's certificate (fedtune-certs admin), not a site's" \
  -- "$FEDTUNE" client --coordinator "$E" --server-name localhost --ca ca/ca.crt \
  --cert ca/admins/ops/ops.crt --key ca/admins/ops/ops.key --data d.csv

# ---- a running federation ------------------------------------------------------------------
"$FEDTUNE" coordinator --listen "$E" --ca ca/ca.crt --cert ca/coordinator/localhost.crt \
  --key ca/coordinator/localhost.key --crl ca/crl.pem --model init.st --rounds 100000 \
  --min-clients 2 --min-fit 2 --epochs 1 --input-stats off --checkpoint-dir ckpt \
  --keep-checkpoints 1 >coord.log 2>&1 &
cpid=$!
pids+=("$cpid")
ok "coordinator up" wait_for 20 grep -q "coordinator on $E" coord.log

# Only an admin may ask: a site's certificate is refused by the coordinator.
expect 1 "fedtune admin: coordinator $E: status: refused: site-c holds a site certificate, not an admin's" \
  -- "${ADMIN[@]}" status --cert ca/sites/site-c/site-c.crt --key ca/sites/site-c/site-c.key
ok "the coordinator logged the site's request" grep -q "site site-c sent an admin request (status): refused" coord.log

"${ADMIN[@]}" status >s0.json 2>s0.err
ok_status "status before any site" $? 0 s0.err
ok "status is the JSON with every key: $(cat s0.json)" "$PY" -c '
import json, sys
j = json.load(open("s0.json"))
assert set(j) >= {"state", "paused", "rounds_done", "model_version", "sites"}, j
assert j["state"] == "waiting" and j["paused"] is False and j["rounds_done"] == 0, j
for s in j["sites"]:
    assert set(s) >= {"name", "state", "last_seen", "rounds", "rejections"}, s
assert "ops" not in [s["name"] for s in j["sites"]], j
'
ok "the admin session is not a site: $(grep 'admin ops connected' coord.log | head -1)" \
  grep -q "admin ops connected" coord.log
printf '[admin]\ncoordinator = %s\nserver-name = localhost\nca = ca/ca.crt\ncert = ca/admins/ops/ops.crt\nkey = ca/admins/ops/ops.key\n' "$E" >admin.ini
expect 0 '"rounds_done":0' -- "$FEDTUNE" admin status --config admin.ini
printf '[admin]\ntimeout = 0\n' >bad.ini
expect 2 "bad.ini:2: timeout: 0 is outside (0, 3600]" -- "$FEDTUNE" admin status --config bad.ini
ok "status logged with the admin's CN" grep -q "admin ops: status: ok: [0-9]* bytes of status JSON" coord.log

client site-a >a.log 2>&1 &
apid=$!
pids+=("$apid")
client site-b >b.log 2>&1 &
bpid=$!
pids+=("$bpid")
ok "rounds run" wait_for 60 rounds_above 1

# pause: the round in flight finishes, then nothing starts.
expect 0 "paused: no new round starts" -- "${ADMIN[@]}" pause
ok "the coordinator settles in waiting" wait_for 30 state_is waiting
r1=$(rounds)
ok "status says paused" test "$(status_field 'j["paused"]')" = True
sleep 1.5
ok "rounds_done stays at $r1 while paused" test "$(rounds)" = "$r1"
expect 0 "already paused" -- "${ADMIN[@]}" pause
expect 0 "resumed" -- "${ADMIN[@]}" resume
ok "rounds run again after resume" wait_for 60 rounds_above "$r1"
expect 0 "not paused: nothing to do" -- "${ADMIN[@]}" resume

# evict: site-b's session closes, its rejoin is refused, readmit lets it back.
expect 0 "evicted site-b: its session is closed; its rejoin is refused until readmit" \
  -- "${ADMIN[@]}" evict site-b
ok "its session closed" wait_for 10 grep -q "peer site-b left: dropped by the coordinator: evicted by admin ops" coord.log
ok "its rejoin is refused" wait_for 20 grep -q "site-b refused: evicted by an admin" coord.log
ok "status says evicted" site_state_is site-b evicted
expect 0 "site site-b is already evicted" -- "${ADMIN[@]}" evict site-b
expect 1 "fedtune admin: coordinator $E: evict: unknown site \"nobody\": no site of that name has joined" \
  -- "${ADMIN[@]}" evict nobody
expect 1 "fedtune admin: coordinator $E: readmit: site site-c is not evicted" -- "${ADMIN[@]}" readmit site-c
joins=$(grep -c "site-b joined (" coord.log)
expect 0 "readmitted site-b: it may join again" -- "${ADMIN[@]}" readmit site-b
ok "site-b joins again" wait_for 30 at_least $((joins + 1)) "site-b joined (" coord.log
# Back among the sites: connected, or already sampled again (training, idle).
ok "status no longer says evicted" wait_for 10 site_state_in site-b connected training idle

# reload-crl: revoke site-a; its session closes at once and its reconnect is refused.
"$CERTS" revoke ca site-a >/dev/null 2>&1
expect 0 "reloaded ca/crl.pem: 1 session of revoked certificates closed" -- "${ADMIN[@]}" reload-crl
ok "the coordinator closed site-a's session" grep -q "dropped peer site-a: certificate revoked (CRL reloaded)" coord.log
wait_status "site-a's client ends (its reconnect is refused)" "$apid" 1 a.log
ok "...saying why: $(tail -1 a.log)" grep -q "the coordinator refused this site's certificate: revoked" a.log
ok "site-b is still there" kill -0 "$bpid"
cp ca/crl.pem crl.good
echo "not a CRL" >ca/crl.pem
expect 1 "reload-crl: reload CRL: ca/crl.pem: no CRL in the file: not a PEM CRL" -- "${ADMIN[@]}" reload-crl
expect 1 "the CRL in force stays" -- "${ADMIN[@]}" reload-crl
expect 1 "the coordinator refused this site's certificate: revoked" \
  -- timeout 30 "$FEDTUNE" client --coordinator "$E" --server-name localhost --ca ca/ca.crt \
  --cert ca/sites/site-a/site-a.crt --key ca/sites/site-a/site-a.key --data d.csv \
  --classes blue,green,red
cp crl.good ca/crl.pem

# Every action in the log, with the admin's CN, the target and the outcome.
for line in "admin ops: pause: ok: paused" "admin ops: resume: ok: resumed" \
  "admin ops: evict site-b: ok: evicted site-b" "admin ops: evict nobody: refused: unknown site" \
  "admin ops: readmit site-b: ok: readmitted site-b" "admin ops: reload-crl: ok: reloaded ca/crl.pem" \
  "admin ops: reload-crl: refused: reload CRL: ca/crl.pem: no CRL in the file"; do
  ok "logged: $line" grep -qF "$line" coord.log
done

# stop: the clean stop of SIGTERM.
expect 0 "stopping (as on SIGTERM)" -- "${ADMIN[@]}" stop
wait_status "the coordinator exits 0 after stop" "$cpid" 0 coord.log
ok "logged: admin ops: stop: ok" grep -qF "admin ops: stop: ok: stopping (as on SIGTERM)" coord.log
ok "it stopped as on SIGTERM" grep -q "stopping after [0-9]* rounds: stop requested" coord.log
ok "site-b hears the coordinator is going away" wait_for 10 grep -q "the coordinator is going away" b.log
kill "$bpid" 2>/dev/null
wait "$bpid" 2>/dev/null
report
