#!/usr/bin/env bash
# Coordinator memory with real processes over TLS: a 100 MB model (one linear layer
# 5000 -> 5000, 25 005 000 float32 parameters), N client processes on 127.0.0.1, R rounds,
# so N x R uploads of 100 MB reach the coordinator. Prints the coordinator's peak RSS
# (VmHWM) against the model size, for --slots 1 and 2 (updates received at once).
#
# Usage: bench/bench_coord_mem.sh [--clients N] [--rounds R]    (defaults 8 x 4 = 32)
# Needs a release build (scripts/setup); about 1 GB of memory per client.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
clients=8
rounds=4
while [ $# -gt 0 ]; do
  case $1 in
    --clients) clients=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_coord_mem: unknown option $1" >&2; exit 2 ;;
  esac
done
fedtune=$here/build/release/bin/fedtune
certs=$here/certs/fedtune-certs
[ -x "$fedtune" ] || { echo "bench_coord_mem: no $fedtune; run scripts/setup" >&2; exit 1; }
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; [ -n "${KEEP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"' EXIT
cd "$tmp"
export OPENBLAS_NUM_THREADS=1

"$certs" init-ca ca >/dev/null 2>&1
"$certs" coordinator ca localhost --ip 127.0.0.1 >/dev/null 2>&1
for i in $(seq "$clients"); do "$certs" site ca "s$i" >/dev/null 2>&1; done
# 12 labeled rows of 5000 features per site: the point is the upload, not the learning.
/usr/bin/python3 - "$clients" <<'EOF'
import random, sys
random.seed(1)
for i in range(1, int(sys.argv[1]) + 1):
    with open("s%d.csv" % i, "w") as f:
        for r in range(12):
            f.write(",".join("%.2f" % random.random() for _ in range(5000)) + ",%d\n" % (r % 3))
EOF
"$fedtune" init --arch '{"input":[5000],"layers":[{"type":"linear","out":5000}]}' \
  --out model.st >/dev/null
model_mb=$(stat -c %s model.st | awk '{printf "%.1f", $1 / 1e6}')

echo "bench_coord_mem: $(date -u '+%Y-%m-%d %H:%M') UTC, model $model_mb MB," \
  "$clients clients x $rounds rounds = $((clients * rounds)) uploads"
printf '%-6s %12s %10s %12s\n' slots "peak RSS MB" "x model" "seconds"
for slots in 1 2; do
  port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  start=$(date +%s.%N)
  "$fedtune" coordinator --listen "tcp://127.0.0.1:$port" --ca ca/ca.crt \
    --cert ca/coordinator/localhost.crt --key ca/coordinator/localhost.key \
    --model model.st --rounds "$rounds" --min-clients "$clients" --min-fit "$clients" \
    --epochs 1 --batch 12 --optimizer sgd --lr 0.01 --slots "$slots" >coord.log 2>&1 &
  cpid=$!
  pids+=("$cpid")
  for i in $(seq "$clients"); do
    "$fedtune" client --coordinator "tcp://127.0.0.1:$port" --server-name localhost \
      --ca ca/ca.crt --cert "ca/sites/s$i/s$i.crt" --key "ca/sites/s$i/s$i.key" \
      --data "s$i.csv" --header no --test-split 0 --standardize off >"c$i.log" 2>&1 &
    pids+=($!)
  done
  peak=0
  while kill -0 "$cpid" 2>/dev/null; do
    kb=$(awk '/VmHWM/ {print $2}' "/proc/$cpid/status" 2>/dev/null || echo 0)
    [ -n "$kb" ] && [ "$kb" -gt "$peak" ] && peak=$kb
    sleep 0.2
  done
  wait "$cpid" || { echo "bench_coord_mem: the coordinator failed:" >&2; tail -3 coord.log >&2; exit 1; }
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  done_rounds=$(grep -c "$clients returned, 0 rejected" coord.log || true)
  [ "$done_rounds" -eq "$rounds" ] || { echo "bench_coord_mem: only $done_rounds rounds" >&2; exit 1; }
  awk -v kb="$peak" -v m="$model_mb" -v s="$slots" -v t="$secs" \
    'BEGIN {printf "%-6s %12.0f %10.2f %12s\n", s, kb / 1024 * 1.048576, kb * 1.024 / 1000 / m, t}'
  wait
done
echo "goal: peak RSS < 4 x the model size"
