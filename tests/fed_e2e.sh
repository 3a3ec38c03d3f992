#!/usr/bin/env bash
# A federation of real processes over TLS on 127.0.0.1: certificates from
# certs/fedtune-certs, `fedtune coordinator` and three `fedtune client`s, each site with
# its own third of tests/data/blobs.csv. Checks that all rounds complete, that the
# federated accuracy rises, that the final model and checkpoints are written, that a
# restarted coordinator resumes from its checkpoint, and that a revoked site cannot join.
# Usage: fed_e2e.sh <path to fedtune> <source dir>
set -u
FEDTUNE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
CERTS=$SRC/certs/fedtune-certs
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
cd "$tmp" || exit 1
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$tmp"' EXIT

# A free TCP port on 127.0.0.1.
port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
[ -n "$PY" ] || { echo "SKIP: no python3 to pick a free port"; exit 77; }

"$CERTS" init-ca ca >/dev/null 2>&1 && "$CERTS" coordinator ca localhost --ip 127.0.0.1 >/dev/null 2>&1
for s in a b c d; do "$CERTS" site ca "site-$s" >/dev/null 2>&1; done
ok "certificates made" test -f ca/sites/site-d/site-d.crt

# Three sites, each with every class (blocks of three consecutive rows cycle the classes).
head -1 "$SRC/tests/data/blobs.csv" >header
for i in 0 1 2; do
  { cat header; tail -n +2 "$SRC/tests/data/blobs.csv" | awk -v i=$i 'int((NR-1)/3)%3==i'; } >site$i.csv
done
"$FEDTUNE" init --arch '{"input":[4],"layers":[{"type":"linear","out":16},{"type":"relu"},{"type":"linear","out":3}]}' \
  --seed 3 --out init.st >/dev/null

coordinator() { # <port> <rounds> [extra flags...]
  local p=$1 r=$2
  shift 2
  timeout 120 "$FEDTUNE" coordinator --listen "tcp://127.0.0.1:$p" --ca ca/ca.crt \
    --cert ca/coordinator/localhost.crt --key ca/coordinator/localhost.key --crl ca/crl.pem \
    --model init.st --rounds "$r" --min-clients 3 --min-fit 3 --epochs 2 --lr 0.01 \
    --checkpoint-dir ckpt --metrics coord.jsonl --out final.st "$@"
}
client() { # <port> <site letter> <data index>
  timeout 120 "$FEDTUNE" client --coordinator "tcp://127.0.0.1:$1" --server-name localhost \
    --ca ca/ca.crt --cert "ca/sites/site-$2/site-$2.crt" --key "ca/sites/site-$2/site-$2.key" \
    --data "site$3.csv" --classes blue,green,red --reconnect-initial 0.2 --reconnect-max 1
}

# ---- 4 rounds with three sites ----------------------------------------------------------
P=$(port)
coordinator "$P" 4 >coord.log 2>&1 &
cpid=$!
pids+=("$cpid")
client "$P" a 0 >a.log 2>&1 &
pids+=($!)
client "$P" b 1 >b.log 2>&1 &
pids+=($!)
client "$P" c 2 >c.log 2>&1 &
pids+=($!)
wait "$cpid"
ok "coordinator exits 0: $(tail -3 coord.log)" test $? -eq 0
for s in a b c; do
  wait "${pids[-1]}" 2>/dev/null
done
ok "4 rounds logged" test "$(grep -c 'round [0-9]/4: clients 3 sampled, 3 returned, 0 rejected' coord.log)" -eq 4
ok "final model written" test -s final.st
ok "checkpoints kept (3)" test "$(ls ckpt/round-*[0-9].safetensors | wc -l)" -eq 3
ok "metrics: 4 lines" test "$(wc -l <coord.jsonl)" -eq 4
first=$(sed -n 's/.*round 1\/4:.*federated loss [0-9.]* acc \([0-9.]*\).*/\1/p' coord.log)
last=$(sed -n 's/.*round 4\/4:.*federated loss [0-9.]* acc \([0-9.]*\).*/\1/p' coord.log)
ok "federated accuracy rises ($first -> $last)" awk -v a="$first" -v b="$last" 'BEGIN{exit !(b > a && b >= 0.9)}'
for s in a b c; do
  ok "site $s saw the goodbye: $(tail -2 $s.log)" grep -q "the coordinator ended the federation after 4 rounds" $s.log
  ok "site $s logs no data values" test "$(grep -c -E '[0-9]+\.[0-9]{3},' $s.log)" -eq 0
done
expect 0 "fedtune.arch" -- "$FEDTUNE" info final.st

# ---- a restarted coordinator resumes from its newest checkpoint --------------------------
P=$(port)
coordinator "$P" 5 >coord2.log 2>&1 &
cpid=$!
pids+=("$cpid")
client "$P" a 0 >a2.log 2>&1 &
client "$P" b 1 >b2.log 2>&1 &
client "$P" c 2 >c2.log 2>&1 &
wait "$cpid"
ok "restarted coordinator exits 0: $(tail -3 coord2.log)" test $? -eq 0
ok "resumed at round 5: $(head -3 coord2.log)" grep -q "round 5 of 5" coord2.log
ok "only round 5 ran" test "$(grep -c 'round [0-9]/5: clients' coord2.log)" -eq 1

# ---- a revoked site is refused -----------------------------------------------------------
"$CERTS" revoke ca site-d >/dev/null 2>&1
P=$(port)
timeout 20 "$FEDTUNE" coordinator --listen "tcp://127.0.0.1:$P" --ca ca/ca.crt \
  --cert ca/coordinator/localhost.crt --key ca/coordinator/localhost.key --crl ca/crl.pem \
  --model init.st --rounds 1 --min-clients 1 --min-fit 1 --stop-file stop >coord3.log 2>&1 &
cpid=$!
pids+=("$cpid")
timeout 5 "$FEDTUNE" client --coordinator "tcp://127.0.0.1:$P" --server-name localhost \
  --ca ca/ca.crt --cert ca/sites/site-d/site-d.crt --key ca/sites/site-d/site-d.key \
  --data site0.csv --reconnect-initial 0.5 >d.log 2>&1
sleep 0.5
touch stop
wait "$cpid"
ok "revoked site refused: $(grep -i revoked coord3.log | head -1)" grep -qi "revoked" coord3.log
ok "revoked site never joined" test "$(grep -c 'site-d joined' coord3.log)" -eq 0

# No process may have hit a sanitizer (ASan build) on the way.
ok "no sanitizer reports: $(grep -l -E 'Sanitizer|runtime error:' ./*.log)" \
  test -z "$(grep -l -E 'Sanitizer|runtime error:' ./*.log)"

report
