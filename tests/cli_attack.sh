#!/usr/bin/env bash
# `fedtune sim --malicious F --attack KIND`: with --malicious 0 the run is the plain run
# byte for byte; the malicious sites are drawn from --seed and named; sign flip at 0.3
# lowers the final accuracy and changes the hash; label flip's sites train on the flipped
# labels the sim prints (each share's counts add up); scale and noise change the model and
# repeat under a seed; secure aggregation carries the attack; the backdoor's success rate
# is 0 in the clean federation and 1 under attack, round by round; LIE's Z is the paper's
# and a large Z lowers the accuracy; bad values are one clear line each.
# Usage: cli_attack.sh <path to fedtune> <source dir>
set -u
FEDTUNE=$1
SRC=$2
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"

# Three well separated classes in four features (tests/lib.sh's blobs).
blobs 600 0 >"$tmp/train.csv"
blobs 150 1000 >"$tmp/test.csv"
ARCH='{"input":[4],"layers":[{"type":"linear","out":8},{"type":"relu"},{"type":"linear","out":3}]}'
SIM=("$FEDTUNE" sim --data "$tmp/train.csv" --test-data "$tmp/test.csv" --arch "$ARCH"
  --clients 10 --partition iid --fraction 1 --rounds 4 --epochs 1 --batch 10 --lr 0.05
  --workers 2 --seed 3)


"${SIM[@]}" >"$tmp/clean.out" 2>&1
"${SIM[@]}" --malicious 0 --attack sign-flip >"$tmp/zero.out" 2>&1
h0=$(hash_of "$tmp/clean.out")
ok_same "--malicious 0: the plain run's bytes" "$(hash_of "$tmp/zero.out")" "$h0"
ok "--malicious 0: none named" grep -qx "malicious: 0 of 10 sites (sign-flip)" "$tmp/zero.out"
ok "the plain run names no malicious sites" test "$(grep -c '^malicious' "$tmp/clean.out")" -eq 0
ok "the clean run's final accuracy" test "$(acc_of "$tmp/clean.out")" = "0.6000"

# Sign flip on 3 of 10 sites: they are drawn from the seed, the same in every run.
"${SIM[@]}" --malicious 0.3 --attack sign-flip >"$tmp/flip.out" 2>&1
"${SIM[@]}" --malicious 0.3 --attack sign-flip >"$tmp/flip2.out" 2>&1
ok "3 of 10 malicious, named" \
  grep -qx "malicious: 3 of 10 sites (sign-flip): site-000 site-001 site-006" "$tmp/flip.out"
ok_differ "sign flip: other bytes" "$(hash_of "$tmp/flip.out")" "$h0"
ok_same "sign flip: the same seed, the same bytes" "$(hash_of "$tmp/flip2.out")" \
  "$(hash_of "$tmp/flip.out")"
ok "sign flip: final accuracy 0.4733 (clean 0.6000)" test "$(acc_of "$tmp/flip.out")" = "0.4733"
"${SIM[@]}" --malicious 0.3 --attack sign-flip --seed 4 >"$tmp/flip4.out" 2>&1
ok "another seed, other malicious sites" \
  grep -qx "malicious: 3 of 10 sites (sign-flip): .*" "$tmp/flip4.out"
ok "... not the same three" \
  test "$(grep '^malicious' "$tmp/flip4.out")" != "$(grep '^malicious' "$tmp/flip.out")"

# A share is rounded down: half of 7 sites is 3, never a majority.
"${SIM[@]}" --malicious 0.5 --clients 7 --attack sign-flip >"$tmp/seven.out" 2>&1
ok "half of 7 sites: 3" grep -q "^malicious: 3 of 7 sites (sign-flip): " "$tmp/seven.out"

# The metrics say how many malicious updates each round accepted: with half the sites
# sampled, the count of the printed names among the round's "accepted" sites.
"${SIM[@]}" --malicious 0.3 --attack sign-flip --fraction 0.5 --metrics "$tmp/m.jsonl" \
  >"$tmp/half.out" 2>&1
bad=$(sed -n 's/^malicious: 3 of 10 sites (sign-flip): //p' "$tmp/half.out")
ok "half sampled: the same three" test "$bad" = "site-000 site-001 site-006"
ok "four metrics lines" test "$(wc -l <"$tmp/m.jsonl")" -eq 4
got="" want=""
while IFS= read -r line; do
  got+="$(sed -n 's/.*"malicious_accepted":\([0-9]*\).*/\1/p' <<<"$line") "
  acc=$(grep -o '"accepted":\[[^]]*\]' <<<"$line" | grep -o '"cn":"[^"]*"' | tr -d '"' | sed 's/^cn://')
  k=0
  for s in $bad; do grep -qx "$s" <<<"$acc" && k=$((k + 1)); done
  want+="$k "
done <"$tmp/m.jsonl"
ok_same "malicious_accepted per round is the count of malicious accepted sites" "$got" "$want"
ok "... which is 1 1 2 2 with this seed" test "$got" = "1 1 2 2 "
"${SIM[@]}" --metrics "$tmp/m0.jsonl" >/dev/null 2>&1
ok "no malicious_accepted without attackers" test "$(grep -c malicious "$tmp/m0.jsonl")" -eq 0

# Label flip: each malicious site's counts are those of its share with y -> 2-y (the
# values pinned here are this seed's; each site's counts sum to its share, 60).
"${SIM[@]}" --malicious 0.3 --attack label-flip >"$tmp/lf.out" 2>&1
ok "label flip: the same three sites" \
  grep -qx "malicious: 3 of 10 sites (label-flip): site-000 site-001 site-006" "$tmp/lf.out"
ok "label flip: site-000's labels" grep -qx "label-flip: site-000 trains on labels 0:31 1:19 2:10" "$tmp/lf.out"
ok "label flip: site-001's labels" grep -qx "label-flip: site-001 trains on labels 0:14 1:19 2:27" "$tmp/lf.out"
ok "label flip: site-006's labels" grep -qx "label-flip: site-006 trains on labels 0:26 1:15 2:19" "$tmp/lf.out"
for s in site-000 site-001 site-006; do
  ok "label flip: $s's counts sum to its 60 examples" test "$(sed -n "s/^label-flip: $s trains on labels //p" "$tmp/lf.out" |
    tr ' ' '\n' | awk -F: '{ t += $2 } END { print t }')" = 60
done
ok_differ "label flip: other bytes" "$(hash_of "$tmp/lf.out")" "$h0"
ok "label flip: final accuracy 0.3533 (clean 0.6000)" test "$(acc_of "$tmp/lf.out")" = "0.3533"

# Scale (K defaults to the 10 sites sampled; K=10 given is the same run) and noise.
"${SIM[@]}" --malicious 0.3 --attack scale >"$tmp/sc.out" 2>&1
"${SIM[@]}" --malicious 0.3 --attack scale:10 >"$tmp/sc10.out" 2>&1
"${SIM[@]}" --malicious 0.3 --attack scale:2 >"$tmp/sc2.out" 2>&1
ok_differ "scale: other bytes" "$(hash_of "$tmp/sc.out")" "$h0"
ok_same "scale: K defaults to the sites sampled (10)" "$(hash_of "$tmp/sc10.out")" \
  "$(hash_of "$tmp/sc.out")"
ok_differ "scale:2 is another K" "$(hash_of "$tmp/sc2.out")" "$(hash_of "$tmp/sc.out")"
"${SIM[@]}" --malicious 0.3 --attack noise:1 >"$tmp/n1.out" 2>&1
"${SIM[@]}" --malicious 0.3 --attack noise:1 >"$tmp/n2.out" 2>&1
ok_differ "noise: other bytes" "$(hash_of "$tmp/n1.out")" "$h0"
ok_same "noise: seeded, the same bytes" "$(hash_of "$tmp/n2.out")" "$(hash_of "$tmp/n1.out")"

# With secure aggregation the attack runs before the masking: the sum carries it.
"${SIM[@]}" --secagg --malicious 0.3 --attack sign-flip >"$tmp/sa.out" 2>&1
"${SIM[@]}" --secagg >"$tmp/sa0.out" 2>&1
ok "secagg: the three named" \
  grep -qx "malicious: 3 of 10 sites (sign-flip): site-000 site-001 site-006" "$tmp/sa.out"
ok_differ "secagg: sign flip changes the model" "$(hash_of "$tmp/sa.out")" "$(hash_of "$tmp/sa0.out")"
ok "secagg: sign flip's final accuracy 0.4733 (clean 0.6000)" \
  test "$(acc_of "$tmp/sa.out")" = "0.4733" -a "$(acc_of "$tmp/sa0.out")" = "0.6000"

# Backdoor to label 2: the three sites add triggered copies of half their 60 examples
# (features 1..3 at their column's max + range), labelled 2. backdoor_success is the
# share of the 100 test examples of labels 0 and 1 that the model classifies as 2 once
# triggered: 0 in every round of the clean federation (--malicious 0 runs the plain
# run's bytes and measures the base rate), 1 in every round under the attack, with the
# test accuracy barely moved (0.6000 -> 0.5933).
bd_of() { grep -o '"backdoor_success":[0-9.e-]*' "$1" | sed 's/.*://' | tr '\n' ' '; }
"${SIM[@]}" --malicious 0 --attack backdoor:2 --metrics "$tmp/bd0.jsonl" >"$tmp/bd0.out" 2>&1
"${SIM[@]}" --malicious 0.3 --attack backdoor:2 --metrics "$tmp/bd.jsonl" >"$tmp/bd.out" 2>&1
ok_same "backdoor, --malicious 0: the plain run's bytes" "$(hash_of "$tmp/bd0.out")" "$h0"
ok "backdoor: its label, share and trigger" grep -qx "backdoor: label 2; triggered copies of 50% \
of each malicious site's examples; trigger (feature=value): 1=8.9994 2=5.5 3=3" "$tmp/bd.out"
ok "backdoor: clean, success 0 every round" test "$(bd_of "$tmp/bd0.jsonl")" = "0 0 0 0 "
ok "backdoor: attacked, success 1 every round" test "$(bd_of "$tmp/bd.jsonl")" = "1 1 1 1 "
ok "backdoor: the round line says it" \
  grep -q "^round   4/4: .*, backdoor success 1.000$" "$tmp/bd.out"
ok "backdoor: the closing line says it" grep -qx "backdoor success 1.000: the final model's \
share of triggered test examples classified as the target label" "$tmp/bd.out"
ok "backdoor: clean closing line 0.000" grep -q "^backdoor success 0.000: " "$tmp/bd0.out"
ok "backdoor: test accuracy 0.5933 (clean 0.6000)" test "$(acc_of "$tmp/bd.out")" = "0.5933"
ok "backdoor: the malicious sites' updates weigh 90 (60 + 30 copies)" \
  test "$(grep -o '{"cn":"site-00[016]","examples":90}' "$tmp/bd.jsonl" | wc -l)" -eq 12
"${SIM[@]}" --malicious 0.1 --attack backdoor:2 --metrics "$tmp/bd1.jsonl" >"$tmp/bd1.out" 2>&1
ok "backdoor: one site of ten, success 0 0 0.24 0.26" \
  test "$(bd_of "$tmp/bd1.jsonl")" = "0 0 0.24 0.26 "
NOTEST=("${SIM[@]:0:3}" "${SIM[@]:5}")
"${NOTEST[@]}" --malicious 0.3 --attack backdoor:2 --metrics "$tmp/bdn.jsonl" >"$tmp/bdn.out" 2>&1
ok "no test set: four rounds" test "$(wc -l <"$tmp/bdn.jsonl")" -eq 4
ok "no test set: no backdoor_success" test "$(grep -c backdoor_success "$tmp/bdn.jsonl")" -eq 0
ok "no backdoor_success without a backdoor" test "$(grep -c backdoor_success "$tmp/m.jsonl")" -eq 0

# LIE ("a little is enough"): each malicious site sends mu - Z sigma of 5 deltas it trains
# on bootstrap resamples of its own share. Z by default is the paper's for the sites a
# round samples (n) and the malicious expected among them (f = round(3 n / 10)):
# n 10, f 3: s = 6 - 3 = 3, Phi^-1(0.7) = 0.524401; n 5, f 2: s = 1, Phi^-1(0.8) =
# 0.841621. Against plain FedAvg that small a shift barely matters (0.6067, clean 0.6000:
# the attack is made to slip past robust rules); a large Z lowers the accuracy.
"${SIM[@]}" --malicious 0.3 --attack lie >"$tmp/lie.out" 2>&1
ok "lie: the paper's Z for 10 a round, 3 malicious" grep -qx "lie: Z 0.524401 (the paper's, \
10 sites a round, 3 of them malicious); mu and sigma from 5 trainings on resamples of each \
malicious site's own data" "$tmp/lie.out"
ok_differ "lie: other bytes" "$(hash_of "$tmp/lie.out")" "$h0"
ok "lie: final accuracy 0.6067 (clean 0.6000)" test "$(acc_of "$tmp/lie.out")" = "0.6067"
"${SIM[@]}" --malicious 0.3 --attack lie --fraction 0.5 >"$tmp/lie5.out" 2>&1
ok "lie: the paper's Z for 5 a round, 2 malicious" \
  grep -q "^lie: Z 0.841621 (the paper's, 5 sites a round, 2 of them malicious); " "$tmp/lie5.out"
"${SIM[@]}" --malicious 0.3 --attack lie:30 >"$tmp/lie30.out" 2>&1
"${SIM[@]}" --malicious 0.3 --attack lie:30 >"$tmp/lie30b.out" 2>&1
ok "lie:30: Z given" grep -q "^lie: Z 30 (given, 10 sites a round, 3 of them malicious); " \
  "$tmp/lie30.out"
ok "lie:30: final accuracy 0.5667, below the clean 0.6000" test "$(acc_of "$tmp/lie30.out")" = "0.5667"
ok "lie:30: test loss 0.8830 (clean 0.8001)" \
  grep -q "^round   4/4: .*test loss 0.8830 acc 0.5667" "$tmp/lie30.out"
ok "clean: test loss 0.8001" grep -q "^round   4/4: .*test loss 0.8001 acc 0.6000" "$tmp/clean.out"
ok_same "lie: seeded, the same bytes" "$(hash_of "$tmp/lie30b.out")" "$(hash_of "$tmp/lie30.out")"
expect 2 "attack lie: the paper's Z is not defined for 1 sites a round, 3 of 10 malicious: give Z" \
  -- "${SIM[@]}" --malicious 0.3 --attack lie --fraction 0.1
"${SIM[@]}" --fraction 0.1 >"$tmp/f1.out" 2>&1
"${SIM[@]}" --fraction 0.1 --malicious 0 --attack lie >"$tmp/lie0.out" 2>&1
ok_same "lie with no attacker: the plain run, Z not needed" "$(hash_of "$tmp/lie0.out")" \
  "$(hash_of "$tmp/f1.out")"

# Bad values: one line, exit 2 (a usage error), nothing run.
expect 2 "--attack needs --malicious (how many)" -- "${SIM[@]}" --attack sign-flip
expect 2 "--malicious needs --attack (what they do)" -- "${SIM[@]}" --malicious 0.2
expect 2 "--malicious 0.6: must be a share in [0, 0.5]" -- "${SIM[@]}" --malicious 0.6 --attack sign-flip
expect 2 "--malicious -0.1: must be a share in [0, 0.5]" -- "${SIM[@]}" --malicious -0.1 --attack sign-flip
expect 2 "--malicious 1/3: must be a share in [0, 0.5]" -- "${SIM[@]}" --malicious 1/3 --attack sign-flip
expect 2 "--attack flip: unknown (sign-flip, scale[:K], noise:S, label-flip, backdoor[:LABEL], lie[:Z])" -- \
  "${SIM[@]}" --malicious 0.2 --attack flip
expect 2 "--attack sign-flip:2: unknown" -- "${SIM[@]}" --malicious 0.2 --attack sign-flip:2
expect 2 "--attack scale:0: K must not be 0" -- "${SIM[@]}" --malicious 0.2 --attack scale:0
expect 2 "--attack scale:x: x is not a number" -- "${SIM[@]}" --malicious 0.2 --attack scale:x
expect 2 "--attack scale:inf: inf is not a number" -- "${SIM[@]}" --malicious 0.2 --attack scale:inf
expect 2 "--attack noise:-1: S must be > 0" -- "${SIM[@]}" --malicious 0.2 --attack noise:-1
expect 2 "--attack noise:0: S must be > 0" -- "${SIM[@]}" --malicious 0.2 --attack noise:0
expect 2 "--attack noise: noise needs its std, noise:S" -- "${SIM[@]}" --malicious 0.2 --attack noise
expect 2 "--attack backdoor:99: LABEL must be a class id, 0..2" -- \
  "${SIM[@]}" --malicious 0.2 --attack backdoor:99
expect 2 "--attack backdoor:3: LABEL must be a class id, 0..2" -- \
  "${SIM[@]}" --malicious 0.2 --attack backdoor:3
expect 2 "--attack backdoor:-1: LABEL must be a class id, 0..2" -- \
  "${SIM[@]}" --malicious 0.2 --attack backdoor:-1
expect 2 "--attack backdoor:1.5: LABEL must be a class id, 0..2" -- \
  "${SIM[@]}" --malicious 0.2 --attack backdoor:1.5
expect 2 "--attack lie:-1: Z must be >= 0" -- "${SIM[@]}" --malicious 0.2 --attack lie:-1
expect 2 "--attack lie:x: x is not a number" -- "${SIM[@]}" --malicious 0.2 --attack lie:x
expect 2 "--attack lie:inf: inf is not a number" -- "${SIM[@]}" --malicious 0.2 --attack lie:inf
expect 2 "--attack backdoor:x: x is not a number" -- "${SIM[@]}" --malicious 0.2 --attack backdoor:x
expect 2 "attack backdoor: its trigger is set before the input_stats transform, which its test \
set lacks: use one or the other" -- "${SIM[@]}" --malicious 0.2 --attack backdoor --input-stats on
for f in "$tmp"/*.out; do
  ok "$f: no sanitizer report" test "$(grep -c -e Sanitizer -e 'runtime error:' "$f")" -eq 0
done

report
