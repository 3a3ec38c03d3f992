#!/usr/bin/env bash
# bench_sim_scale: how fedtune sim grows with the federation. For each number of sites,
# one fresh process (so its peak RSS is its own) runs a few rounds of the 2NN on MNIST
# with 100 sites sampled per round (fraction = 100 / sites), plaintext inproc, and the
# table gives the set-up time, the seconds per round and the peak RSS. The reference row is a plain `fedtune train` of the same
# model on the same data for one epoch (the memory any run needs: the data set and the
# model), measured in the same run. Optionally the CNN at 1,000 sites (--cnn).
# Usage: bench/bench_sim_scale.sh [--quick] [--cnn] [FEDTUNE]   (run from the repo root)
set -euo pipefail
quick=0 cnn=0
while [ $# -gt 0 ]; do
  case $1 in
  --quick) quick=1 ;;
  --cnn) cnn=1 ;;
  -h | --help)
    sed -n '2,9p' "$0"
    exit 0
    ;;
  *) break ;;
  esac
  shift
done
FEDTUNE=${1:-build/release/bin/fedtune}
DATA=${FEDTUNE_DATA:-data}/mnist/train-images-idx3-ubyte
[ -x "$FEDTUNE" ] || { echo "bench_sim_scale: $FEDTUNE: not executable (scripts/setup builds it)" >&2; exit 1; }
[ -r "$DATA" ] || { echo "bench_sim_scale: $DATA missing (scripts/fetch-data --only mnist)" >&2; exit 1; }
ROUNDS=5
SIZES=(100 1000 10000)
if [ "$quick" = 1 ]; then ROUNDS=2 SIZES=(100 1000); fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# peak RSS (MB) and wall seconds of a command; its stdout to $tmp/out (GNU time may be
# missing: Python's getrusage of the one child instead)
measure() {
  python3 - "$tmp" "$@" <<'EOF' || return 1
import resource, subprocess, sys, time
tmp = sys.argv[1]
t = time.perf_counter()
with open(tmp + "/out", "w") as o, open(tmp + "/err", "w") as e:
    rc = subprocess.call(sys.argv[2:], stdout=o, stderr=e)
if rc != 0:
    sys.stderr.write(open(tmp + "/err").read())
    sys.exit(1)
kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("%d %.2f" % (kb // 1024, time.perf_counter() - t))
EOF
}

echo "bench_sim_scale: $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)," \
  "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, $ROUNDS rounds, 2NN on $DATA"
read -r ref_mb ref_s < <(measure "$FEDTUNE" train --arch fedavg-2nn --data "$DATA" --epochs 1 \
  --batch 10 --optimizer sgd --lr 0.05 --val-split 0 --test-split 0 --threads 1 --out "$tmp/m.safetensors")
printf '\n| run | sites | per round | set-up s | s/round | peak RSS MB |\n'
printf '|---|---:|---:|---:|---:|---:|\n'
printf '| fedtune train, 1 epoch (ref) | - | - | - | %.2f (epoch) | %d |\n' "$ref_s" "$ref_mb"
run() { # arch sites
  local arch=$1 n=$2 frac mb secs setup per
  frac=$(awk -v n="$n" 'BEGIN { printf "%.6g", 100 / n }')
  read -r mb secs < <(measure "$FEDTUNE" sim --data "$DATA" --arch "$arch" --clients "$n" \
    --partition iid --fraction "$frac" --rounds "$ROUNDS" --epochs 1 --batch 10 --workers 2)
  setup=$(sed -n 's/^summary: .* in \([0-9.]*\) s (+\([0-9.]*\) s set-up).*/\2/p' "$tmp/out")
  per=$(sed -n 's/^summary: [0-9]* rounds in \([0-9.]*\) s .*/\1/p' "$tmp/out")
  per=$(awk -v s="$per" -v r="$ROUNDS" 'BEGIN { printf "%.2f", s / r }')
  printf '| fedtune sim %s | %d | 100 | %s | %s | %d |\n' "$arch" "$n" "$setup" "$per" "$mb"
}
for n in "${SIZES[@]}"; do run fedavg-2nn "$n"; done
if [ "$cnn" = 1 ]; then run fedavg-cnn 1000; fi
