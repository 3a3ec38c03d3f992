#!/usr/bin/env bash
# A federation of real processes over TLS on 127.0.0.1: certificates from
# certs/fedtune-certs, `fedtune coordinator` and three `fedtune client`s, each site with
# its own third of tests/data/blobs.csv. Checks that all rounds complete, that the
# federated accuracy rises, that the final model and checkpoints are written, that a
# restarted coordinator resumes from its checkpoint (also after kill -9 mid-run), that a
# site killed mid-round with min_fit 3 makes the attempt time out and be retried until
# it returns, that central evaluation stops a FedAdam run at the target accuracy, that
# SIGHUP reopens the metrics file and SIGTERM stops a FedYogi coordinator cleanly while
# the sites wait to rejoin its restart, that secure aggregation (keys signed with the
# sites' certificates) runs between processes, and that a revoked site cannot join. The
# first run's FedAvg is recomputed twice outside the coordinator: bit for bit by
# tests/tools/fedavg_replay (the coordinator's own aggregation code, in the recorded fold
# order) and independently by tests/tools/fedavg_check.py (numpy, float32 error bound).
# KEEP=1 keeps the work folder.
# Usage: fed_e2e.sh <path to fedtune> <source dir> [<path to tests/tools/fedavg_replay>]
set -u
FEDTUNE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
REPLAY=${3:+$(cd "$(dirname "$3")" && pwd)/$(basename "$3")}
CERTS=$SRC/certs/fedtune-certs
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
cd "$tmp" || exit 1

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
    --data "site$3.csv" --classes blue,green,red --reconnect-initial 0.2 --reconnect-max 1 \
    --save-updates "u-$2"
}
exported() { # <model> <round>: the model was exported after that round
  "$FEDTUNE" info "$1" 2>&1 | grep -q "fedtune.round = $2\$"
}
mkdir -p u-a u-b u-c u-d

# ---- 4 rounds with three sites ----------------------------------------------------------
# Every round's checkpoint is kept (--keep-checkpoints 4) for fedavg_check.py; the restart
# below prunes with the default of 3.
P=$(port)
coordinator "$P" 4 --keep-checkpoints 4 >coord.log 2>&1 &
cpid=$!
pids+=("$cpid")
client "$P" a 0 >a.log 2>&1 &
site_a=$!
client "$P" b 1 >b.log 2>&1 &
site_b=$!
client "$P" c 2 >c.log 2>&1 &
site_c=$!
pids+=("$site_a" "$site_b" "$site_c")
wait_status "coordinator exits 0" "$cpid" 0 coord.log
wait_status "site a exits 0 after the last round" "$site_a" 0 a.log
wait_status "site b exits 0 after the last round" "$site_b" 0 b.log
wait_status "site c exits 0 after the last round" "$site_c" 0 c.log
ok "4 rounds logged" test "$(grep -c 'round [0-9]/4: clients 3 sampled, 3 returned, 0 rejected' coord.log)" -eq 4
ok "final model written after round 4" exported final.st 4
ok "checkpoints kept (4)" test "$(ls ckpt/round-*[0-9].safetensors | wc -l)" -eq 4
ok "metrics: 4 lines" test "$(wc -l <coord.jsonl)" -eq 4
first=$(sed -n 's/.*round 1\/4:.*federated loss [0-9.]* acc \([0-9.]*\).*/\1/p' coord.log)
last=$(sed -n 's/.*round 4\/4:.*federated loss [0-9.]* acc \([0-9.]*\).*/\1/p' coord.log)
ok "federated accuracy rises ($first -> $last)" awk -v a="$first" -v b="$last" 'BEGIN{exit !(b > a && b >= 0.9)}'
for s in a b c; do
  ok "site $s saw the goodbye: $(tail -2 $s.log)" grep -q "the coordinator ended the federation after 4 rounds" $s.log
  ok "site $s logs no data values" test "$(grep -c -E '[0-9]+\.[0-9]{3},' $s.log)" -eq 0
done
expect 0 "fedtune.arch" -- "$FEDTUNE" info final.st
# The final model is the FedAvg of what the sites sent, recomputed outside the
# coordinator from the sites' own copies, in the folding order the metrics record.
if [ -n "$REPLAY" ]; then
  expect 0 "4 rounds replayed; all 131 parameters identical" -- \
    "$REPLAY" init.st coord.jsonl final.st site-a=u-a site-b=u-b site-c=u-c
fi
# The same, independently: numpy checks every round's checkpoint (and the export) against
# old + weighted mean of the deltas, within float32 rounding. The check must refuse a
# round aggregated as a plain mean, and an export one value of which is 64 ulps off.
ok "$PY has numpy (Debian python3-numpy: scripts/setup --deps --test)" "$PY" -c 'import numpy'
CHECK=("$PY" "$SRC/tests/tools/fedavg_check.py")
FORGE=("$PY" "$SRC/tests/tools/fedavg_forge.py")
SITES=(site-a=u-a site-b=u-b site-c=u-c)
expect 0 "fedavg_check: 4 rounds verified" -- "${CHECK[@]}" init.st coord.jsonl ckpt final.st "${SITES[@]}"
rm -rf ck-bad && cp -r ckpt ck-bad && cp final.st bad.st
expect 0 "" -- "${FORGE[@]}" unweighted ck-bad/round-000002.safetensors ck-bad/round-000001.safetensors 2 u-a u-b u-c
expect 1 "fedavg_check: round 2: ck-bad/round-000002.safetensors: " -- \
  "${CHECK[@]}" init.st coord.jsonl ck-bad final.st "${SITES[@]}"
expect 0 "" -- "${FORGE[@]}" nudge bad.st 64
expect 1 "fedavg_check: round 4: bad.st: " -- "${CHECK[@]}" init.st coord.jsonl ckpt bad.st "${SITES[@]}"

# ---- a restarted coordinator resumes from its newest checkpoint --------------------------
# It writes final.st again: the first run's copy goes first.
rm -f final.st
P=$(port)
coordinator "$P" 5 >coord2.log 2>&1 &
cpid=$!
pids+=("$cpid")
client "$P" a 0 >a2.log 2>&1 &
client "$P" b 1 >b2.log 2>&1 &
client "$P" c 2 >c2.log 2>&1 &
wait_status "restarted coordinator exits 0" "$cpid" 0 coord2.log
ok "resumed at round 5: $(head -3 coord2.log)" grep -q "round 5 of 5" coord2.log
ok "only round 5 ran" test "$(grep -c 'round [0-9]/5: clients' coord2.log)" -eq 1
ok "the restart exported round 5" exported final.st 5
ok_same "checkpoints pruned to the newest 3" "$(cd ckpt && echo round-*[0-9].safetensors)" \
  "round-000003.safetensors round-000004.safetensors round-000005.safetensors"

# ---- a pre-trained model's input standardisation is shared with every site --------------
"$FEDTUNE" pretrain --arch '{"input":[4],"layers":[{"type":"linear","out":16},{"type":"relu"},{"type":"linear","out":3}]}' \
  --data site0.csv --epochs 3 --out pre.st >/dev/null 2>&1
ok "pre-trained model carries a transform" grep -q "fedtune.standardize" <("$FEDTUNE" info pre.st)
P=$(port)
timeout 120 "$FEDTUNE" coordinator --listen "tcp://127.0.0.1:$P" --ca ca/ca.crt \
  --cert ca/coordinator/localhost.crt --key ca/coordinator/localhost.key --crl ca/crl.pem \
  --model pre.st --rounds 4 --min-clients 3 --min-fit 3 --epochs 5 --lr 0.01 \
  --out fed-pre.st >p-coord.log 2>&1 &
cpid=$!
pids+=("$cpid")
client "$P" a 0 >p-a.log 2>&1 &
client "$P" b 1 >p-b.log 2>&1 &
client "$P" c 2 >p-c.log 2>&1 &
wait_status "federation from the pre-trained model exits 0" "$cpid" 0 p-coord.log
ok "sites use the model's transform: $(grep -h standardis p-a.log | tail -1)" \
  grep -q "using the model's input standardisation (4 features)" p-a.log
ok "exported model keeps classes and transform" \
  grep -q 'fedtune.classes = \["blue","green","red"\]' <("$FEDTUNE" info fed-pre.st)
acc=$("$FEDTUNE" eval --model fed-pre.st --data "$SRC/tests/data/blobs.csv" --json |
  sed 's/.*"accuracy":\([0-9.e-]*\).*/\1/')
ok "federated model evaluates at $acc on the whole fixture" awk -v a="$acc" 'BEGIN{exit !(a >= 0.85)}'

# ---- FedAdam with central evaluation: the run stops at the first round whose central
# accuracy reaches the target; the sites exit; the export evaluates the same. From the
# pre-trained model, whose input standardisation the coordinator and every site share --
P=$(port)
timeout 120 "$FEDTUNE" coordinator --listen "tcp://127.0.0.1:$P" --ca ca/ca.crt \
  --cert ca/coordinator/localhost.crt --key ca/coordinator/localhost.key --crl ca/crl.pem \
  --model pre.st --rounds 40 --min-clients 3 --min-fit 3 --epochs 2 --lr 0.01 \
  --strategy fedadam --eta 0.03 --eval-data "$SRC/tests/data/blobs.csv" --target-accuracy 0.95 \
  --metrics t.jsonl --out t.st >t.log 2>&1 &
cpid=$!
pids+=("$cpid")
client "$P" a 0 >t-a.log 2>&1 &
client "$P" b 1 >t-b.log 2>&1 &
client "$P" c 2 >t-c.log 2>&1 &
wait_status "FedAdam run exits 0" "$cpid" 0 t.log
ok "stopped on the target: $(grep stopping t.log)" grep -q "stopping after [0-9]* rounds: target accuracy reached" t.log
accs=$(sed 's/.*"central_accuracy":\([0-9.e-]*\).*/\1/' t.jsonl | tr '\n' ' ')
ok "central accuracy reaches 0.95 first in the last of $(wc -l <t.jsonl) rounds: $accs" \
  awk -v a="$accs" 'BEGIN {n = split(a, x, " "); if (n < 2 || n >= 40 || x[n] < 0.95) exit 1;
    for (i = 1; i < n; i++) if (x[i] >= 0.95) exit 1}'
ok "the round line shows central metrics" grep -q "central loss [0-9.]* acc [0-9.]*" t.log
last=$(echo "$accs" | awk '{printf "%.4f", $NF}')
evacc=$("$FEDTUNE" eval --model t.st --data "$SRC/tests/data/blobs.csv" --json |
  sed 's/.*"accuracy":\([0-9.e-]*\).*/\1/' | awk '{printf "%.4f", $1}')
ok_same "fedtune eval of the export agrees with the last central accuracy" "$evacc" "$last"
ok "exported model records the strategy" grep -q "fedtune.strategy = fedadam" <("$FEDTUNE" info t.st)
for s in a b c; do
  ok "site $s exits when the target ends the federation" \
    grep -q "the coordinator ended the federation" t-$s.log
done

# ---- kill -9 the coordinator mid-run: the restart resumes from its last checkpoint --------
# Slower rounds (1 000 examples per site, a wider network) so that a kill lands mid-round.
"$PY" - <<'EOF'
import random
random.seed(7)
c = {"red": (0, 0, 0, 0), "green": (3, 3, 0, 1), "blue": (0, 3, 3, -1)}
for i in range(3):
    with open("big%d.csv" % i, "w") as f:
        f.write("f1,f2,f3,f4,colour\n")
        for k in range(1000):
            n = ["red", "green", "blue"][k % 3]
            f.write(",".join("%.3f" % (c[n][j] + random.gauss(0, 1)) for j in range(4)) + "," + n + "\n")
EOF
"$FEDTUNE" init --arch '{"input":[4],"layers":[{"type":"linear","out":128},{"type":"relu"},{"type":"linear","out":128},{"type":"relu"},{"type":"linear","out":3}]}' \
  --seed 3 --out big.st >/dev/null
bigcoord() { # <port> <log> [extra flags...]: the final model goes to the log's name.st
  local p=$1 log=$2
  shift 2
  # exec: the background job's pid is the coordinator's own, for kill -9.
  exec "$FEDTUNE" coordinator --listen "tcp://127.0.0.1:$p" --ca ca/ca.crt \
    --cert ca/coordinator/localhost.crt --key ca/coordinator/localhost.key --crl ca/crl.pem \
    --model big.st --rounds 5 --min-clients 3 --epochs 20 --lr 0.003 --out "${log%.log}.st" \
    "$@" >"$log" 2>&1
}
bigclient() { # <port> <site letter> <data index>
  exec "$FEDTUNE" client --coordinator "tcp://127.0.0.1:$1" --server-name localhost \
    --ca ca/ca.crt --cert "ca/sites/site-$2/site-$2.crt" --key "ca/sites/site-$2/site-$2.key" \
    --data "big$3.csv" --classes blue,green,red --reconnect-initial 0.2 --reconnect-max 0.5
}
P=$(port)
bigcoord "$P" k1.log --min-fit 3 --checkpoint-dir ck2 &
cpid=$!
pids+=("$cpid")
bigclient "$P" a 0 >k-a.log 2>&1 &
pids+=($!)
bigclient "$P" b 1 >k-b.log 2>&1 &
pids+=($!)
bigclient "$P" c 2 >k-c.log 2>&1 &
pids+=($!)
ok "round 2 checkpointed before the kill" wait_for 60 test -f ck2/round-000002.safetensors
kill -9 "$cpid"
wait "$cpid" 2>/dev/null
done_rounds=$(find ck2 -name 'round-*[0-9].safetensors' | sed 's/.*round-0*\([0-9]*\)\.safetensors/\1/' | sort -n | tail -1)
bigcoord "$P" k2.log --min-fit 3 --checkpoint-dir ck2 &
cpid=$!
pids+=("$cpid")
wait_status "restarted coordinator finishes" "$cpid" 0 k2.log
ok "resumed from round $done_rounds: $(grep resumed k2.log)" grep -q "resumed from round $done_rounds " k2.log
ok "round 5 completed after the restart" grep -q "round 5/5: clients 3 sampled, 3 returned" k2.log
ok "final model written after round 5" exported k2.st 5

# ---- FedYogi daemon: SIGHUP reopens the metrics file (log rotation); SIGTERM stops the
# process cleanly, the sites keep reconnecting, and the restart resumes with the server
# optimizer's state --------------------------------------------------------------------------
P=$(port)
bigcoord "$P" y1.log --min-fit 3 --rounds 6 --strategy fedyogi --checkpoint-dir ck5 --metrics y.jsonl &
cpid=$!
pids+=("$cpid")
ypids=()
for i in 0 1 2; do
  bigclient "$P" "$(echo abc | cut -c$((i + 1)))" $i >y-$i.log 2>&1 &
  ypids+=($!)
  pids+=($!)
done
ok "round 1 checkpointed" wait_for 60 test -f ck5/round-000001.safetensors
mv y.jsonl y.jsonl.1
kill -HUP "$cpid"
ok "SIGHUP reopens the metrics file" wait_for 10 grep -q "metrics file reopened" y1.log
ok "round 3 checkpointed" wait_for 60 test -f ck5/round-000003.safetensors
kill -TERM "$cpid"
wait_status "SIGTERM: the coordinator exits 0" "$cpid" 0 y1.log
ok "SIGTERM is a clean stop" grep -q "stopping after [0-9]* rounds: stop requested" y1.log
ydone=$(find ck5 -name 'round-*[0-9].safetensors' | sed 's/.*round-0*\([0-9]*\)\.safetensors/\1/' | sort -n | tail -1)
ok "a metrics line per round across the rotation ($ydone rounds)" \
  test "$(cat y.jsonl.1 y.jsonl | wc -l)" -eq "$ydone"
ok "the new metrics file has the rounds after SIGHUP" test -s y.jsonl
ok "sites keep reconnecting after SIGTERM" wait_for 10 grep -q "the coordinator is going away" y-0.log
ok "sites still running" kill -0 "${ypids[@]}"
bigcoord "$P" y2.log --min-fit 3 --rounds 6 --strategy fedyogi --checkpoint-dir ck5 --metrics y.jsonl &
cpid=$!
pids+=("$cpid")
wait_status "restarted FedYogi coordinator finishes" "$cpid" 0 y2.log
ok "resumed from round $ydone" grep -q "resumed from round $ydone " y2.log
ok "with the strategy state (no fresh start)" test "$(grep -c 'starts afresh' y2.log)" -eq 0
ok "round 6 completed by the rejoined sites" grep -q "round 6/6: clients 3 sampled, 3 returned" y2.log
ok "final model written after round 6" exported y2.st 6
for i in 0 1 2; do
  wait_status "site $i exits 0 once the federation ends" "${ypids[$i]}" 0 "y-$i.log"
done

# ---- kill -9 a site mid-round with min_fit 3: the attempt times out and is retried -------
# Rounds take well under a second, so by the time the kill lands the victim may have
# finished round 2 and more: the first round it misses is the one retried, and enough
# rounds remain for that to happen before the coordinator is done.
P=$(port)
bigcoord "$P" k3.log --min-fit 3 --rounds 30 --deadline-ms 1500 --checkpoint-dir ck3 &
cpid=$!
pids+=("$cpid")
bigclient "$P" a 0 >m-a.log 2>&1 &
pids+=($!)
bigclient "$P" b 1 >m-b.log 2>&1 &
pids+=($!)
bigclient "$P" c 2 >m-c.log 2>&1 &
victim=$!
ok "round 2 started" wait_for 60 grep -q "round 2 attempt 1: sampled 3" k3.log
kill -9 "$victim"
wait "$victim" 2>/dev/null
ok "an attempt is retried: $(grep -i retrying k3.log | head -1)" \
  wait_for 30 grep -qE "round [0-9]+ attempt 1: .*retrying" k3.log
R=$(grep -oE "round [0-9]+ attempt 1: .*retrying" k3.log | head -1 | cut -d' ' -f2)
bigclient "$P" c 2 >m-c2.log 2>&1 &
pids+=($!)
wait_status "coordinator finishes after the site returns" "$cpid" 0 k3.log
ok "round $R closed on a later attempt" grep -q "round $R/30: clients 3 sampled, 3 returned" k3.log
ok "round 30 completed" grep -q "round 30/30: clients 3 sampled, 3 returned" k3.log
ok "final model written after round 30" exported k3.st 30

# ---- secure aggregation between processes: every key block is signed with the site's
# certificate key and checked by the coordinator and by each neighbour; the coordinator
# only ever sums masked updates.
P=$(port)
timeout 120 "$FEDTUNE" coordinator --listen "tcp://127.0.0.1:$P" --ca ca/ca.crt \
  --cert ca/coordinator/localhost.crt --key ca/coordinator/localhost.key --crl ca/crl.pem \
  --model init.st --rounds 3 --min-clients 3 --min-fit 3 --epochs 2 --lr 0.01 --secagg \
  --metrics sa.jsonl --out sa-final.st >sa.log 2>&1 &
cpid=$!
pids+=("$cpid")
i=0
for s in a b c; do
  timeout 120 "$FEDTUNE" client --coordinator "tcp://127.0.0.1:$P" --server-name localhost \
    --ca ca/ca.crt --cert "ca/sites/site-$s/site-$s.crt" --key "ca/sites/site-$s/site-$s.key" \
    --data "site$i.csv" --classes blue,green,red --reconnect-initial 0.2 --reconnect-max 1 \
    >"sa-$s.log" 2>&1 &
  pids+=($!)
  i=$((i + 1))
done
wait_status "secagg coordinator exits 0" "$cpid" 0 sa.log
ok "3 securely aggregated rounds" \
  test "$(grep -c 'round [0-9]/3: clients 3 sampled, 3 returned, 0 rejected, 0 failed.*secure sum of 3 (0 dropped' sa.log)" -eq 3
ok "the sites' capabilities include secagg, no update was refused" \
  test "$(grep -c -E 'rejected:|out of the secure aggregation' sa.log)" -eq 0
ok "secagg metrics name the summed updates" test "$(grep -c '"secagg_summed":3' sa.jsonl)" -eq 3
expect 0 '"protocol":"secagg+"' -- "$FEDTUNE" info sa-final.st
for s in a b c; do
  ok "secagg site $s saw the goodbye" grep -q "the coordinator ended the federation after 3 rounds" "sa-$s.log"
done

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
wait_status "the coordinator stops on its stop file" "$cpid" 0 coord3.log
ok "revoked site refused: $(grep -i revoked coord3.log | head -1)" grep -qi "revoked" coord3.log
ok "revoked site never joined" test "$(grep -c 'site-d joined' coord3.log)" -eq 0

# No process may have hit a sanitizer (ASan build) on the way.
ok "no sanitizer reports: $(grep -l -E 'Sanitizer|runtime error:' ./*.log)" \
  test -z "$(grep -l -E 'Sanitizer|runtime error:' ./*.log)"

report
