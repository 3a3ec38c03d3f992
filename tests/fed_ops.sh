#!/usr/bin/env bash
# What an operator meets when a federation goes wrong, with real processes over TLS on
# 127.0.0.1 (certificates from certs/fedtune-certs, sites on tests/data/blobs.csv):
#   - a training configuration every site refuses stops the coordinator at start-up
#     (exit 2), on the command line and in a config file, and the same ranges hold for
#     train and sim;
#   - sites whose data cannot fit the model: the coordinator backs off between attempts,
#     logs one line per attempt with the sites' reason, and after --max-failed-attempts
#     stops with exit 1 and that reason; the sites are told and exit;
#   - an example count above --max-examples-per-site: refused, same stop;
#   - --ordered-uploads: two daemon runs give the same final model bytes;
#   - a coordinator restarted after its last round's checkpoint exports the model and
#     tells the waiting sites the federation is over; crash leftovers are swept;
#   - a short --deadline-ms with long local training: the sites stop at the deadline and
#     send what they have, and the coordinator says so.
# Usage: fed_ops.sh <path to fedtune> <source dir>
set -u
FEDTUNE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
CERTS=$SRC/certs/fedtune-certs
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
cd "$tmp" || exit 1

[ -n "$PY" ] || { echo "no python3 to pick a free port" >&2; exit 1; }

"$CERTS" init-ca ca >/dev/null 2>&1 && "$CERTS" coordinator ca localhost --ip 127.0.0.1 >/dev/null 2>&1
for s in a b c; do "$CERTS" site ca "site-$s" >/dev/null 2>&1; done
ok "certificates made" test -f ca/sites/site-c/site-c.crt
head -1 "$SRC/tests/data/blobs.csv" >header
for i in 0 1 2; do
  { cat header; tail -n +2 "$SRC/tests/data/blobs.csv" | awk -v i=$i 'int((NR-1)/3)%3==i'; } >site$i.csv
done
ARCH='{"input":[4],"layers":[{"type":"linear","out":16},{"type":"relu"},{"type":"linear","out":3}]}'
"$FEDTUNE" init --arch "$ARCH" --seed 3 --out init.st >/dev/null
"$FEDTUNE" init --arch fedavg-2nn --seed 3 --out m784.st >/dev/null
ok "models made" test -s init.st -a -s m784.st

TLS=(--ca ca/ca.crt --cert ca/coordinator/localhost.crt --key ca/coordinator/localhost.key
  --crl ca/crl.pem)
coordinator() { # <port> [flags...]
  local p=$1
  shift
  timeout 120 "$FEDTUNE" coordinator --listen "tcp://127.0.0.1:$p" "${TLS[@]}" \
    --min-clients 3 --min-fit 3 --epochs 2 --lr 0.01 "$@"
}
client() { # <port> <site letter> <data index> [flags...]
  local p=$1 l=$2 i=$3
  shift 3
  timeout 120 "$FEDTUNE" client --coordinator "tcp://127.0.0.1:$p" --server-name localhost \
    --ca ca/ca.crt --cert "ca/sites/site-$l/site-$l.crt" --key "ca/sites/site-$l/site-$l.key" \
    --data "site$i.csv" --classes blue,green,red --reconnect-initial 0.2 --reconnect-max 1 "$@"
}
# Starts the three sites in the background (pids in spids).
sites() { # <port> <log prefix> [client flags...]
  local p=$1 pre=$2
  shift 2
  spids=()
  local i=0
  for l in a b c; do
    client "$p" "$l" "$i" "$@" >"$pre-$l.log" 2>&1 &
    spids+=($!)
    pids+=($!)
    i=$((i + 1))
  done
}
# Runs a coordinator (flags...) and the three sites until every one exited: logs NAME.log
# and NAME-{a,b,c}.log; rc is the coordinator's exit status, site_rc[0..2] the sites'.
federation() { # <name> [coordinator flags...]
  local name=$1 p c s
  shift
  p=$(port)
  coordinator "$p" "$@" >"$name.log" 2>&1 &
  c=$!
  pids+=("$c")
  sites "$p" "$name"
  wait "$c"
  rc=$?
  site_rc=()
  for s in "${spids[@]}"; do
    wait "$s"
    site_rc+=("$?")
  done
}
sha() { sha256sum "$1" | cut -c1-64; }

# ---- configurations every site refuses: refused at start-up -----------------------------
expect 2 "fedtune coordinator: --lr: 0 is outside (0, 10]" -- \
  "$FEDTUNE" coordinator --listen tcp://127.0.0.1:1 "${TLS[@]}" --model init.st --lr 0
printf '[coordinator]\nmodel = init.st\nlr = 0\n' >lr0.ini
expect 2 "lr0.ini:3: lr: 0 is outside (0, 10]" -- \
  "$FEDTUNE" coordinator --config lr0.ini --listen tcp://127.0.0.1:1 "${TLS[@]}"
expect 2 "--batch: 65537 is outside [1, 65536]" -- \
  "$FEDTUNE" coordinator --listen tcp://127.0.0.1:1 "${TLS[@]}" --model init.st --batch 65537
expect 2 "--momentum: 1 is outside [0, 0.9999]" -- \
  "$FEDTUNE" coordinator --listen tcp://127.0.0.1:1 "${TLS[@]}" --model init.st --momentum 1
expect 2 "fedtune sim: --lr: 0 is outside (0, 10]" -- "$FEDTUNE" sim --lr 0
expect 2 "fedtune train: --lr: 0 is outside (0, 10]" -- \
  "$FEDTUNE" train --model init.st --data site0.csv --out x.st --lr 0
expect 2 "--max-examples-per-site: 0 is outside" -- \
  "$FEDTUNE" coordinator --listen tcp://127.0.0.1:1 "${TLS[@]}" --model init.st \
  --max-examples-per-site 0
ok "nothing written on refusal" test ! -e x.st

# ---- sites that cannot train the model: backoff, one line per attempt, then exit 1 ------
federation fit --model m784.st --rounds 3 --retry-backoff-ms 100 --retry-backoff-max-ms 300 \
  --max-failed-attempts 4 --input-stats off --out never.st
ok "the coordinator stops with exit 1 (got $rc)" test "$rc" -eq 1
want="round 1 failed 4 attempts in a row for the same reason: evaluating the global model: the local data (4 features, 3 classes) do not fit the model (784 inputs, 10 outputs)"
ok "its last line gives the sites' reason: $(tail -1 fit.log)" grep -qF "fedtune coordinator: $want" fit.log
ok "one line per failed attempt (3 retries)" test "$(grep -c 'retrying in' fit.log)" -eq 3
ok "the waits double and are capped" grep -q "attempt 1: .*retrying in 0.1 s" fit.log
ok "  ... 0.2 s" grep -q "attempt 2: .*retrying in 0.2 s" fit.log
ok "  ... 0.3 s" grep -q "attempt 3: .*retrying in 0.3 s" fit.log
ok "each names the sites: $(grep -m1 'retrying in' fit.log | cut -c1-220)" \
  grep -q '3 of 3 sampled gave no update: 3x "evaluating the global model: the local data (4 features, 3 classes) do not fit the model (784 inputs, 10 outputs)" (site-a, site-b, site-c)' fit.log
ok "the coordinator log stays short ($(wc -l <fit.log) lines)" test "$(wc -l <fit.log)" -lt 40
ok "no model exported" test ! -e never.st
i=0
for l in a b c; do
  ok "site $l exits 0 once told (got ${site_rc[$i]})" test "${site_rc[$i]}" -eq 0
  ok "site $l heard why" grep -q "federation stopped: round 1 failed 4 attempts" "fit-$l.log"
  i=$((i + 1))
done

# ---- the same sites when the statistics round comes first: it fails the same way --------
federation fit0 --model m784.st --rounds 3 --retry-backoff-ms 50 --max-failed-attempts 2
ok "the statistics round stops it with exit 1 (got $rc)" test "$rc" -eq 1
ok "naming the sites' reason: $(tail -1 fit0.log | cut -c1-200)" grep -qF "fedtune coordinator: statistics round failed 2 attempts in a row for the same reason: statistics: the local data (4 features, 3 classes) do not fit the model (784 inputs, 10 outputs)" fit0.log
for l in a b c; do wait "${spids[0]}"; spids=("${spids[@]:1}"); done

# ---- the statistics round: one input standardisation for the federation -----------------
# Sites with different scales (site b's data in other units: x 1000); no test split, so
# the pooled training data are exactly the three files. Plain and through the secure sum.
awk -F, 'NR==1{print;next}{printf "%.3f,%.3f,%.3f,%.3f,%s\n",$1*1000,$2*1000,$3*1000,$4*1000,$5}' \
  site1.csv >site1k.csv
for mode in plain secagg; do
  extra=()
  [ "$mode" = secagg ] && extra=(--secagg)
  P=$(port)
  coordinator "$P" --model init.st --rounds 1 --out "st-$mode.st" "${extra[@]}" >"st-$mode.log" 2>&1 &
  cpid=$!
  pids+=("$cpid")
  spids=()
  client "$P" a 0 --test-split 0 >"st-$mode-a.log" 2>&1 &
  spids+=($!)
  timeout 120 "$FEDTUNE" client --coordinator "tcp://127.0.0.1:$P" --server-name localhost \
    --ca ca/ca.crt --cert ca/sites/site-b/site-b.crt --key ca/sites/site-b/site-b.key \
    --data site1k.csv --classes blue,green,red --test-split 0 >"st-$mode-b.log" 2>&1 &
  spids+=($!)
  client "$P" c 2 --test-split 0 >"st-$mode-c.log" 2>&1 &
  spids+=($!)
  pids+=("${spids[@]}")
  wait "$cpid"
  rc=$?
  ok "$mode: the run with a statistics round exits 0 (got $rc)" test "$rc" -eq 0
  for l in a b c; do wait "${spids[0]}"; spids=("${spids[@]:1}"); done
  ok "$mode: the coordinator fitted it from every example" \
    grep -q "statistics round: the federation's input standardisation from 150 examples of 3 sites (4 features" "st-$mode.log"
  ok "$mode: every site uses it" test "$(grep -l "using the model's input standardisation (4 features)" st-$mode-?.log | wc -l)" -eq 3
  ok "$mode: round 1 ran" grep -q "round 1/1: clients 3 sampled, 3 returned" "st-$mode.log"
  # The exported transform is the pooled population mean and std of the three files.
  "$PY" - "st-$mode.st" site0.csv site1k.csv site2.csv >"st-$mode.check" 2>&1 <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
t = json.loads(json.loads(raw[8:8 + n])["__metadata__"]["fedtune.standardize"])
rows = []
for f in sys.argv[2:]:
    for line in open(f).read().splitlines()[1:]:
        rows.append([float(v) for v in line.split(",")[:4]])
worst = 0.0
for j in range(4):
    col = [r[j] for r in rows]
    m = sum(col) / len(col)
    sd = (sum((v - m) ** 2 for v in col) / len(col)) ** 0.5
    worst = max(worst, abs(t["mean"][j] - m) / sd, abs(t["std"][j] - sd) / sd)
open(sys.argv[1] + ".transform", "w").write(json.dumps(t))
print("rows", len(rows), "worst relative difference", worst)
sys.exit(0 if len(rows) == 150 and t["dim"] == 4 and worst < 1e-6 else 1)
PY
  rc=$?
  ok "$mode: the exported transform is the pooled data's ($(cat "st-$mode.check"))" test "$rc" -eq 0
done
ok "plain and secure sums give the same transform ($(cut -c1-60 st-plain.st.transform)...)" \
  cmp -s st-plain.st.transform st-secagg.st.transform

# ---- an example count above the coordinator's bound: refused, and the same stop ---------
federation ex --model init.st --rounds 2 --max-examples-per-site 10 --retry-backoff-ms 50 \
  --max-failed-attempts 2
ok "the coordinator stops with exit 1 (got $rc)" test "$rc" -eq 1
ok "the reason is the bound: $(tail -1 ex.log)" \
  grep -q "statistics round failed 2 attempts in a row for the same reason: update rejected: examples 42: above max-examples-per-site 10" ex.log
ok "the sites' Hello counts are above it: warned" test "$(grep -c 'announces [0-9]* training examples, above max-examples-per-site 10' ex.log)" -eq 3

# ---- --ordered-uploads: the same bytes twice ---------------------------------------------
for run in 1 2; do
  federation "ord$run" --model init.st --rounds 3 --ordered-uploads --seed 9 --out "ord$run.st"
  ok "ordered run $run exits 0 (got $rc)" test "$rc" -eq 0
done
ok "ordered runs wrote their models" test -s ord1.st -a -s ord2.st
ok "two ordered runs give the same bytes" test "$(sha ord1.st)" = "$(sha ord2.st)"
ok "three rounds each" test "$(grep -c 'round [0-9]/3: clients 3 sampled, 3 returned' ord2.log)" -eq 3

# ---- a restart after the last round's checkpoint finishes from it -----------------------
federation r1 --model init.st --rounds 2 --checkpoint-dir ck --out first.st
ok "first run exits 0 (got $rc)" test "$rc" -eq 0
# As if killed between the last checkpoint and the export, after a crash mid-write too.
printf 'half' >ck/round-000002.safetensors.tmp.Xy12Zq
printf 'half' >ck/round-000003.strategy.safetensors.tmp.abcdef
printf 'mine' >ck/notes.tmp.abcdef
P=$(port)
sites "$P" r2 # the sites wait for the coordinator
sleep 0.5
coordinator "$P" --model init.st --rounds 2 --checkpoint-dir ck --out final.st --linger-ms 30000 \
  >r2.log 2>&1 &
cpid=$!
pids+=("$cpid")
wait "$cpid"
rc=$?
ok "restarted coordinator exits 0 (got $rc)" test "$rc" -eq 0
ok "it exported the last round's model" test -s final.st
ok "the same model as the first run's export" cmp -s <(tail -c 524 first.st) <(tail -c 524 final.st)
ok "no round ran again" test "$(grep -c 'round [0-9]/2: clients' r2.log)" -eq 0
ok "crash leftovers swept: $(grep -m1 'temporary files' r2.log)" \
  grep -q "ck: removed 2 temporary files (8 bytes) of an interrupted checkpoint write" r2.log
ok "only the coordinator's own pattern" test -e ck/notes.tmp.abcdef -a ! -e ck/round-000002.safetensors.tmp.Xy12Zq
for l in a b c; do
  wait "${spids[0]}"
  rc=$?
  spids=("${spids[@]:1}")
  ok "waiting site $l told the federation is over, exits 0 (got $rc)" test "$rc" -eq 0
  ok "site $l saw the goodbye" grep -q "all rounds done" "r2-$l.log"
done

# ---- a deadline shorter than the local training ------------------------------------------
federation dl --model init.st --rounds 1 --epochs 1000000 --deadline-ms 2000 --out dl.st
ok "the deadline run exits 0 (got $rc)" test "$rc" -eq 0
ok "the coordinator says which sites stopped at the deadline" \
  test "$(grep -c 'stopped training at the deadline after [0-9]* steps and sent what it had' dl.log)" -eq 3
ok "the round used all three updates" grep -q "round 1/1: clients 3 sampled, 3 returned" dl.log
ok "site a says so too" grep -q "training stopped at the deadline after" dl-a.log

report
