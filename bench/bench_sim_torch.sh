#!/usr/bin/env bash
# fedtune sim against a plain PyTorch FedAvg loop (bench/fedavg_torch.py) on MNIST, one
# after the other in one run: the same federation (IID over --clients sites, --fraction
# sampled per round, --epochs local passes of plain SGD in batches of --batch at --lr,
# the global model evaluated on the 10 000 test images after every round), the same
# initial weights (`fedtune init --seed 1`), run until the test accuracy reaches --target
# (0: off) or for --rounds rounds. Each side draws its split and sampling from its own
# seeded RNG.
# Prints per side: wall seconds of the whole process, seconds of the rounds (to target),
# rounds, seconds per round, final accuracy, peak RSS (the child's ru_maxrss), and the
# ratios fedtune/PyTorch. PyTorch runs once per --threads value (its OpenBLAS and OpenMP
# pools sized to it); fedtune sim runs with --workers of the same value.
#
# Usage: bench/bench_sim_torch.sh [--model 2nn|cnn] [--clients N] [--fraction X]
#          [--epochs N] [--batch N] [--lr X] [--target X] [--rounds N]
#          [--threads "1 2"] [--skip-torch]
# Needs: scripts/fetch-data --only mnist, a release build (scripts/setup; $FEDTUNE another
# binary), python3-torch.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
model=2nn clients=100 fraction=0.1 epochs=1 batch=10 lr=0.1 target=0.97 rounds=200
threads="1 2" skip_torch=0
while [ $# -gt 0 ]; do
  case $1 in
    --model) model=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --fraction) fraction=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --lr) lr=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --skip-torch) skip_torch=1; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_sim_torch: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case $model in 2nn|cnn) ;; *) echo "bench_sim_torch: --model 2nn or cnn" >&2; exit 2 ;; esac

fedtune=${FEDTUNE:-$here/build/release/bin/fedtune}
data=${FEDTUNE_DATA:-$here/data}
mnist=$data/mnist
py=/usr/bin/python3
[ -x "$fedtune" ] || { echo "bench_sim_torch: no $fedtune; run scripts/setup first" >&2; exit 1; }
[ -f "$mnist/train-images-idx3-ubyte" ] ||
  { echo "bench_sim_torch: no MNIST in $mnist; run scripts/fetch-data --only mnist" >&2; exit 1; }
if [ "$skip_torch" = 0 ]; then
  "$py" -c 'import torch' 2>/dev/null ||
    { echo "bench_sim_torch: $py cannot import torch (apt-get install python3-torch)" >&2; exit 1; }
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Runs a command with stdout to $1 and stderr to $1.err; prints "wall_s peak_rss_mb"
# (GNU time may be missing: Python's getrusage of the one child instead).
measure() {
  local out=$1
  shift
  "$py" - "$out" "$@" <<'EOF'
import resource, subprocess, sys, time
out = sys.argv[1]
t = time.perf_counter()
with open(out, "w") as o, open(out + ".err", "w") as e:
    rc = subprocess.call(sys.argv[2:], stdout=o, stderr=e)
wall = time.perf_counter() - t
if rc != 0:
    sys.stderr.write(open(out + ".err").read())
    sys.exit(f"bench_sim_torch: {sys.argv[2]} exited with {rc}")
print("%.2f %.0f" % (wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024))
EOF
}

echo "fedtune sim vs a PyTorch FedAvg loop on MNIST: $(date -u '+%Y-%m-%d %H:%M') UTC," \
  "$(getconf _NPROCESSORS_ONLN) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)," \
  "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
echo "$("$fedtune" --version | head -1)$([ "$skip_torch" = 1 ] || echo "; torch $("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null)")"
echo "fedavg-$model, IID over $clients sites, fraction $fraction, E=$epochs, B=$batch, SGD lr $lr," \
  "target $target, at most $rounds rounds, same initial weights"
echo
printf '| side | threads | wall s | rounds s | rounds | s/round | final acc | target | peak RSS MB |\n'
printf '|---|---:|---:|---:|---:|---:|---:|---|---:|\n'

"$fedtune" init --arch "fedavg-$model" --seed 1 --out "$tmp/init.safetensors" >/dev/null
for t in $threads; do
  if [ "$skip_torch" = 0 ]; then
    read -r t_wall t_mb < <(OPENBLAS_NUM_THREADS=$t OMP_NUM_THREADS=$t MKL_NUM_THREADS=$t \
      measure "$tmp/t.json" "$py" "$here/bench/fedavg_torch.py" --data "$data" --model "$model" \
      --clients "$clients" --fraction "$fraction" --epochs "$epochs" --batch "$batch" --lr "$lr" \
      --target "$target" --rounds "$rounds" --threads "$t" --seed 1 --init "$tmp/init.safetensors")
    read -r t_secs t_rounds t_per t_acc t_hit < <("$py" -c 'import json,sys; j=json.load(open(sys.argv[1]))
print(j["seconds"], j["rounds"], j["seconds_per_round"], j["final_accuracy"], "yes" if j["reached"] else "no")' "$tmp/t.json")
    printf '| PyTorch | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$t_wall" "$t_secs" \
      "$t_rounds" "$t_per" "$t_acc" "$t_hit" "$t_mb"
  fi
  read -r f_wall f_mb < <(OPENBLAS_NUM_THREADS=1 measure "$tmp/f.out" "$fedtune" sim \
    --data "$mnist/train-images-idx3-ubyte" --test-data "$mnist/t10k-images-idx3-ubyte" \
    --model "$tmp/init.safetensors" --clients "$clients" --partition iid \
    --fraction "$fraction" --epochs "$epochs" --batch "$batch" --optimizer sgd --lr "$lr" \
    --target-accuracy "$target" --rounds "$rounds" --workers "$t" --seed 1)
  f_secs=$(sed -n 's/^summary: [0-9]* rounds in \([0-9.]*\) s .*/\1/p' "$tmp/f.out")
  f_rounds=$(sed -n 's/^summary: \([0-9]*\) rounds in .*/\1/p' "$tmp/f.out")
  f_acc=$(sed -n 's/^summary: .* final accuracy \([0-9.]*\),.*/\1/p' "$tmp/f.out")
  f_hit=$(grep -q '^target accuracy .* first reached' "$tmp/f.out" && echo yes || echo no)
  f_per=$(awk -v s="$f_secs" -v r="$f_rounds" 'BEGIN { printf "%.4f", s / (r ? r : 1) }')
  printf '| fedtune sim | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$f_wall" "$f_secs" \
    "$f_rounds" "$f_per" "$f_acc" "$f_hit" "$f_mb"
  if [ "$skip_torch" = 0 ]; then
    awk -v fw="$f_wall" -v tw="$t_wall" -v fp="$f_per" -v tp="$t_per" -v fm="$f_mb" -v tm="$t_mb" \
      -v t="$t" 'BEGIN { printf "| ratio (%s threads) | | %.2fx faster | | | %.2fx faster | | | %.2fx the memory |\n",
        t, tw / fw, tp / fp, fm / tm }'
  fi
done
