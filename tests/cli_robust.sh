#!/usr/bin/env bash
# `--aggregation RULE` in `fedtune sim` (the coordinator's robust rules): with 2 of 10 sites
# adding Gaussian noise of std 3 to their updates, FedAvg loses 27 points and every
# robust rule stays within 5 points of the clean run (seeded, exact accuracies); the spill
# file leaves nothing in its folder; the configurations a rule cannot defend, and those
# with secure aggregation or central DP, are refused at start-up with one line.
# Usage: cli_robust.sh <path to fedtune> <source dir>
set -u
FEDTUNE=$1
SRC=$2
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"

blobs 600 0 >"$tmp/train.csv"
blobs 150 1000 >"$tmp/test.csv"
ARCH='{"input":[4],"layers":[{"type":"linear","out":8},{"type":"relu"},{"type":"linear","out":3}]}'
SIM=("$FEDTUNE" sim --data "$tmp/train.csv" --test-data "$tmp/test.csv" --arch "$ARCH"
  --clients 10 --partition iid --fraction 1 --rounds 10 --epochs 1 --batch 10 --lr 0.1
  --workers 2 --seed 3)
# within <a> <b> <points>: |a - b| <= points / 100
within() { awk -v a="$1" -v b="$2" -v p="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= p / 100 + 1e-9) }'; }

"${SIM[@]}" >"$tmp/clean.out" 2>&1
clean=$(acc_of "$tmp/clean.out")
ok "clean FedAvg: 0.7667" test "$clean" = "0.7667"
"${SIM[@]}" --malicious 0.2 --attack noise:3 >"$tmp/mean.out" 2>&1
ok "noise on 2 of 10 sites: FedAvg falls to 0.4933" test "$(acc_of "$tmp/mean.out")" = "0.4933"

mkdir "$tmp/spill"
for rw in median:0.7467 trimmed-mean:0.7600 krum:0.7267 multi-krum:0.7733 rfa:0.7600 norm:0.7333; do
  rule=${rw%%:*} want=${rw#*:}
  byz=(--byzantine 2)
  [ "$rule" = norm ] && byz=()
  "${SIM[@]}" --malicious 0.2 --attack noise:3 --aggregation "$rule" "${byz[@]}" \
    --spill-dir "$tmp/spill" >"$tmp/$rule.out" 2>&1
  got=$(acc_of "$tmp/$rule.out")
  ok "$rule under attack: $want (got $got)" test "$got" = "$want"
  ok "$rule under attack: within 5 points of clean $clean" within "$got" "$clean" 5
done
ok "krum: its line" grep -qx "aggregation: krum, byzantine 2, at least 7 updates a round" \
  "$tmp/krum.out"
ok "the spill file leaves nothing behind" test -z "$(ls -A "$tmp/spill")"
# Without attackers a robust rule is another aggregate (the cost of robustness): median.
"${SIM[@]}" --aggregation median >"$tmp/median0.out" 2>&1
ok "median, nobody attacking: 0.7533" test "$(acc_of "$tmp/median0.out")" = "0.7533"
ok_differ "median is not the mean" "$(hash_of "$tmp/median0.out")" "$(hash_of "$tmp/clean.out")"
# A fixed norm bound is the aggregator's clipping; a huge bound clips nothing: FedAvg.
"${SIM[@]}" --aggregation norm --norm-bound 1e9 >"$tmp/norm9.out" 2>&1
ok_same "norm bound 1e9 is FedAvg byte for byte" "$(hash_of "$tmp/norm9.out")" \
  "$(hash_of "$tmp/clean.out")"

expect 2 "aggregation krum with byzantine 2 needs min-fit >= 7 (a round may close with min-fit updates), not 5" -- \
  "${SIM[@]}" --aggregation krum --byzantine 2 --min-fit 5
expect 2 "aggregation median with secagg: the coordinator sees only the masked sum, never an update" -- \
  "${SIM[@]}" --aggregation median --secagg
expect 2 "aggregation rfa with dp-clip: the DP noise is calibrated to the mean of clipped updates" -- \
  "${SIM[@]}" --aggregation rfa --dp-clip 1
expect 2 "byzantine 1: aggregation mean does not use it" -- "${SIM[@]}" --byzantine 1
expect 2 "trim needs aggregation trimmed-mean, not median" -- "${SIM[@]}" --aggregation median --trim 0.1
expect 2 "norm-bound needs aggregation norm, not mean" -- "${SIM[@]}" --norm-bound 2
expect 2 "trim 0.1 cuts 1 of min-fit 10 updates at each end, fewer than byzantine 2" -- \
  "${SIM[@]}" --aggregation trimmed-mean --trim 0.1 --byzantine 2 --min-fit 10
expect 2 '--aggregation: "bulyan" is not one of mean|median|trimmed-mean|krum|multi-krum|norm|rfa' -- \
  "${SIM[@]}" --aggregation bulyan
expect 1 "spill: cannot create a file in $tmp/none" -- "${SIM[@]}" --aggregation median --spill-dir "$tmp/none"
for f in "$tmp"/*.out; do
  ok "$f: no sanitizer report" test "$(grep -c -e Sanitizer -e 'runtime error:' "$f")" -eq 0
done

report
