#!/usr/bin/env bash
# `fedtune sim` as a user drives it: the same seed prints the same final SHA-256 and
# that is the hash of the --out model's parameter bytes; --csv (with the initial model
# as round 0), --metrics and --plot outputs; --target-accuracy reports its round;
# --pretrain-data; --tls gives the plaintext run's bytes; and one-line errors for bad
# options, missing data and an impossible partition.
# Usage: cli_sim.sh <path to fedtune> <source dir>
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
  --clients 12 --partition iid --fraction 0.5 --rounds 4 --epochs 2 --batch 10 --lr 0.1
  --workers 2 --seed 3)


expect 0 "final model sha256" -- "${SIM[@]}" --out "$tmp/a.safetensors" --csv "$tmp/a.csv" \
  --metrics "$tmp/a.jsonl"
"${SIM[@]}" --out "$tmp/a.safetensors" >"$tmp/a.out" 2>&1
"${SIM[@]}" >"$tmp/b.out" 2>&1
ha=$(hash_of "$tmp/a.out")
hb=$(hash_of "$tmp/b.out")
ok "a hash is printed" test -n "$ha"
ok_same "same seed, same final bytes" "$hb" "$ha"
ok "every round has its line" test "$(grep -c '^round ' "$tmp/a.out")" -eq 4
ok "the partition is described" grep -q "^partition: 12 clients: examples per client" "$tmp/a.out"
ok "the summary line" grep -q "^summary: 4 rounds in " "$tmp/a.out"
if [ -n "$PY" ]; then
  hf=$("$PY" -c '
import hashlib, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
print(hashlib.sha256(b[8 + n:]).hexdigest())' "$tmp/a.safetensors")
  ok_same "the printed hash is that of the --out model's parameters" "$hf" "$ha"
fi
"${SIM[@]}" --seed 4 >"$tmp/c.out" 2>&1
ok_differ "another seed, other bytes" "$(hash_of "$tmp/c.out")" "$ha"

# CSV: a header, the initial model as round 0, one row per round; JSON lines per round.
ok "csv has header + round 0 + 4 rounds" test "$(wc -l <"$tmp/a.csv")" -eq 6
ok "csv header" grep -qx "round,sampled,returned,train_loss,test_loss,test_accuracy,bytes,seconds" "$tmp/a.csv"
ok "csv round 0 is the initial model" grep -q "^0,0,0,nan," "$tmp/a.csv"
ok "csv round 4 sampled 6, returned 6" grep -q "^4,6,6," "$tmp/a.csv"
ok "metrics has one line per round" test "$(wc -l <"$tmp/a.jsonl")" -eq 4
ok "no temporary file left" test ! -e "$tmp/a.csv.tmp"

# The task is easy: the model learns, and --target-accuracy stops at the first round.
acc0=$(awk -F, 'NR == 2 { print $6 }' "$tmp/a.csv")
acc=$(awk -F, 'END { print $6 }' "$tmp/a.csv")
ok "final accuracy $acc > start $acc0 + 0.2" awk -v a="$acc" -v z="$acc0" 'BEGIN { exit !(a > z + 0.2) }'
expect 0 "target accuracy 0.8500 first reached in round" -- "${SIM[@]}" --rounds 60 \
  --target-accuracy 0.85
"${SIM[@]}" --rounds 60 --target-accuracy 0.85 >"$tmp/t.out" 2>&1
r=$(sed -n 's/^target accuracy 0.8500 first reached in round \([0-9]*\)$/\1/p' "$tmp/t.out")
ok_same "stopped at the target's round" "$(grep -c '^round ' "$tmp/t.out")" "$r"

# Dropouts: rounds still complete and the run repeats.
"${SIM[@]}" --dropout 0.3 >"$tmp/d1.out" 2>&1
"${SIM[@]}" --dropout 0.3 >"$tmp/d2.out" 2>&1
ok "dropout runs complete" grep -q "^summary: 4 rounds" "$tmp/d1.out"
ok_same "dropout runs repeat" "$(hash_of "$tmp/d2.out")" "$(hash_of "$tmp/d1.out")"
ok "dropouts counted" grep -Eq "[1-9][0-9]* dropouts" "$tmp/d1.out"

# Full TLS in-process: the same bytes as plaintext inproc.
"${SIM[@]}" --clients 4 --tls >"$tmp/tls.out" 2>&1
"${SIM[@]}" --clients 4 >"$tmp/plain.out" 2>&1
ok "--tls runs" grep -q "^sim: .* TLS;" "$tmp/tls.out"
ok_same "--tls gives the plaintext bytes" "$(hash_of "$tmp/tls.out")" "$(hash_of "$tmp/plain.out")"

# Differential privacy: epsilon on every round line, the same bytes again (seeded noise),
# and --target-epsilon stops before a round would spend more.
"${SIM[@]}" --dp-clip 1 --dp-noise 1.1 >"$tmp/dp1.out" 2>&1
"${SIM[@]}" --dp-clip 1 --dp-noise 1.1 >"$tmp/dp2.out" 2>&1
ok "DP rounds report epsilon" test "$(grep -c '^round .*, epsilon [0-9.]*$' "$tmp/dp1.out")" -eq 4
ok_same "DP runs repeat" "$(hash_of "$tmp/dp2.out")" "$(hash_of "$tmp/dp1.out")"
ok_differ "DP noise changes the model" "$(hash_of "$tmp/dp1.out")" "$ha"
"${SIM[@]}" --rounds 100 --dp-clip 1 --dp-noise 1.1 --target-epsilon 8 >"$tmp/dp3.out" 2>&1
n=$(grep -c '^round ' "$tmp/dp3.out")
last=$(grep '^round ' "$tmp/dp3.out" | tail -1 | sed 's/.*epsilon //')
ok "target epsilon stops early ($n rounds, epsilon $last)" awk -v n="$n" -v e="$last" \
  'BEGIN { exit !(n > 1 && n < 100 && e <= 8) }'
expect 2 "target-epsilon needs dp-clip and dp-noise > 0" -- "${SIM[@]}" --target-epsilon 3
if [ -n "$PY" ]; then
  "${SIM[@]}" --dp-clip 1 --dp-noise 1.1 --out "$tmp/dp.safetensors" >"$tmp/dp4.out" 2>&1
  e=$("$PY" -c '
import json, struct, sys
b = open(sys.argv[1], "rb").read()
h = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
d = json.loads(h["__metadata__"]["fedtune.dp"])
print("%.4g %g %g %d" % (d["epsilon"], d["clip"], d["noise_multiplier"], d["rounds"]))' "$tmp/dp.safetensors")
  last=$(grep '^round ' "$tmp/dp4.out" | tail -1 | sed 's/.*epsilon //')
  ok_same "the model's fedtune.dp metadata matches the last round" "$e" "$last 1 1.1 4"
fi

# Secure aggregation: the rounds complete and learn like plain FedAvg (IID sites of equal
# size: the unweighted mean is the weighted one, up to the fixed-point rounding); with DP
# the sites add the noise and the epsilon is the central one; over TLS the key blocks are
# signed with the sites' certificates.
"${SIM[@]}" --secagg >"$tmp/sa.out" 2>&1
ok "secagg runs complete: $(tail -1 "$tmp/sa.out")" grep -q "^summary: 4 rounds" "$tmp/sa.out"
accp=$(grep '^round   4/4' "$tmp/a.out" | sed 's/.* acc \([0-9.]*\),.*/\1/')
accs=$(grep '^round   4/4' "$tmp/sa.out" | sed 's/.* acc \([0-9.]*\),.*/\1/')
ok "secagg learns like plain FedAvg ($accs vs $accp)" awk -v a="$accs" -v b="$accp" \
  'BEGIN { d = a - b; exit !(d < 0.02 && d > -0.02 && a > 0.5) }'
"${SIM[@]}" --secagg --dp-clip 1 --dp-noise 1.1 >"$tmp/sadp.out" 2>&1
ok "secagg + DP runs complete" grep -q "^summary: 4 rounds" "$tmp/sadp.out"
ok_same "secagg + DP spends the central epsilon" \
  "$(grep '^round   4/4' "$tmp/sadp.out" | sed -n 's/.*epsilon //p')" \
  "$(grep '^round   4/4' "$tmp/dp1.out" | sed -n 's/.*epsilon //p')"
"${SIM[@]}" --clients 4 --secagg --tls >"$tmp/satls.out" 2>&1
ok "secagg over TLS completes: $(tail -1 "$tmp/satls.out")" grep -q "^summary: 4 rounds" "$tmp/satls.out"
expect 2 "secagg needs min-fit >= 2" -- "${SIM[@]}" --secagg --min-fit 1
expect 2 "threshold" -- "${SIM[@]}" --secagg --secagg-degree 5 --secagg-threshold 2

# Central pre-training on "public" data first.
expect 0 "pretrain: 150 examples of $tmp/test.csv, 2 epochs" -- "${SIM[@]}" \
  --pretrain-data "$tmp/test.csv" --pretrain-epochs 2

# Plot: a PNG with gnuplot, else a clear error.
if command -v gnuplot >/dev/null; then
  expect 0 "plot written to $tmp/p.png" -- "${SIM[@]}" --csv "$tmp/p.csv" --plot "$tmp/p.png"
  ok "the plot is a PNG" test "$(head -c 4 "$tmp/p.png" | od -An -c | tr -d ' ')" = '211PNG'
else
  expect 1 "--plot: gnuplot is not installed (Debian package gnuplot-nox)" -- "${SIM[@]}" \
    --csv "$tmp/p.csv" --plot "$tmp/p.png"
fi

# Errors.
expect 2 "--plot needs --csv" -- "${SIM[@]}" --plot "$tmp/x.png"
expect 2 'fedtune sim: --partition: "zipf" is not one of iid|dirichlet|shards|labels' -- \
  "${SIM[@]}" --partition zipf
expect 2 "fedtune sim: --dropout: 1 is outside" -- "${SIM[@]}" --dropout 1
expect 1 "$tmp/none.csv" -- "${SIM[@]}" --data "$tmp/none.csv"
expect 2 "--model or --arch is required" -- "$FEDTUNE" sim --data "$tmp/train.csv"
expect 2 "partition: clients 1000 exceeds the 600 examples" -- "${SIM[@]}" --clients 1000
expect 1 "the default scenario needs $tmp/nodata/fashion-mnist/train-images-idx3-ubyte.gz" -- \
  env FEDTUNE_DATA="$tmp/nodata" "$FEDTUNE" sim
expect 0 "--partition iid|dirichlet|shards|labels" -- "$FEDTUNE" sim --help

# ---- --freeze: train, sim and coordinator share one parser (a bare layer index N is "N.*";
# sim and coordinator used to refuse "0" as a glob matching nothing).
"$FEDTUNE" init --arch "$ARCH" --seed 5 --out "$tmp/fz-init.st" >/dev/null 2>&1
SIMF=("$FEDTUNE" sim --data "$tmp/train.csv" --model "$tmp/fz-init.st" --clients 6
  --partition iid --rounds 2 --epochs 1 --batch 10 --lr 0.1 --workers 2 --seed 3)
expect 0 "final model sha256" -- "${SIMF[@]}" --freeze 0 --out "$tmp/fz-sim.st"
expect 0 'fedtune.frozen = ["0.weight","0.bias"]' -- "$FEDTUNE" info "$tmp/fz-sim.st"
expect 0 "parameters 67, trainable 27, frozen 40" -- "$FEDTUNE" info "$tmp/fz-sim.st"
# st_bytes <file> <tensor>: the tensor's raw bytes in hex.
st_bytes() {
  "$PY" -c '
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
o = json.loads(b[8:8 + n])[sys.argv[2]]["data_offsets"]
print(b[8 + n + o[0]:8 + n + o[1]].hex())' "$1" "$2"
}
if [ -n "$PY" ]; then
  for t in 0.weight 0.bias 2.weight 2.bias; do
    a=$(st_bytes "$tmp/fz-init.st" "$t")
    b=$(st_bytes "$tmp/fz-sim.st" "$t")
    ok "sim --freeze 0: $t was read ($t: ${#a} hex digits)" test "${#a}" -gt 0 -a "${#a}" -eq "${#b}"
    case $t in
    0.*) ok "sim --freeze 0: frozen $t bit for bit unchanged" test "$a" = "$b" ;;
    *) ok "sim --freeze 0: trainable $t changed" test "$a" != "$b" ;;
    esac
  done
fi
expect 2 'fedtune sim: freeze: "nomatch" matches no tensor of the model' -- \
  "${SIMF[@]}" --freeze nomatch
expect 2 'fedtune sim: freeze: "1" (layer 1, "1.*") matches no tensor of the model' -- \
  "${SIMF[@]}" --freeze 0,1
expect 2 'fedtune sim: freeze: empty pattern in "0,"' -- "${SIMF[@]}" --freeze 0,

# The coordinator: a stop file present at start-up makes it export the initial model at
# once, with the flags --freeze set.
if [ -n "$PY" ] && "$SRC/certs/fedtune-certs" init-ca "$tmp/ca" >/dev/null 2>&1 &&
  "$SRC/certs/fedtune-certs" coordinator "$tmp/ca" localhost --ip 127.0.0.1 >/dev/null 2>&1; then
  port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  touch "$tmp/stop"
  COORD=(timeout 60 "$FEDTUNE" coordinator --listen "tcp://127.0.0.1:$port" --ca "$tmp/ca/ca.crt"
    --cert "$tmp/ca/coordinator/localhost.crt" --key "$tmp/ca/coordinator/localhost.key"
    --model "$tmp/fz-init.st" --rounds 3 --stop-file "$tmp/stop")
  expect 0 "4 tensors, 27 of 67 parameters trainable" -- "${COORD[@]}" --freeze 0 \
    --out "$tmp/fz-coord.st"
  expect 0 'fedtune.frozen = ["0.weight","0.bias"]' -- "$FEDTUNE" info "$tmp/fz-coord.st"
  expect 0 "4 tensors, 8 of 67 parameters trainable" -- "${COORD[@]}" --freeze ' 0.weight , 2' \
    --out "$tmp/fz-coord2.st"
  expect 0 'fedtune.frozen = ["0.weight","2.weight","2.bias"]' -- "$FEDTUNE" info "$tmp/fz-coord2.st"
  expect 2 'fedtune coordinator: freeze: "nomatch" matches no tensor of the model' -- \
    "${COORD[@]}" --freeze 0,nomatch --out "$tmp/fz-coord3.st"
  ok "a refused --freeze writes no --out" test ! -e "$tmp/fz-coord3.st"
else
  echo "FAIL: no python3 or no certificates for the coordinator --freeze checks" >&2
  fail=$((fail + 1))
fi

report
