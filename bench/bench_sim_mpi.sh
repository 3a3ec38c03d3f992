#!/usr/bin/env bash
# bench_sim_mpi: `fedtune sim` in one process against `mpirun -n N fedtune sim` (rank 0
# the coordinator, N-1 ranks of sites over TCP with TLS), N = 2, 3, 4 with
# --oversubscribe: the final hash (which must be the same), the wall time of the launch,
# the seconds of the rounds, every rank's peak RSS and the bytes the coordinator moved
# per round (each site rank moves its share of them). The scenario is fedtune sim's
# default (a 2NN pre-trained on MNIST, fine-tuned on Fashion-MNIST by 100 sites, 10 a
# round), for ROUNDS rounds; every rank loads the data and pre-trains the model itself.
# Usage: bench/bench_sim_mpi.sh [--rounds R] [FEDTUNE]   (run from the repo root)
set -euo pipefail
ROUNDS=10
while [ $# -gt 0 ]; do
  case $1 in
  --rounds)
    ROUNDS=$2
    shift
    ;;
  -h | --help)
    sed -n '2,9p' "$0"
    exit 0
    ;;
  *) break ;;
  esac
  shift
done
FEDTUNE=${1:-build/release/bin/fedtune}
[ -x "$FEDTUNE" ] || { echo "bench_sim_mpi: $FEDTUNE: not executable (scripts/setup builds it)" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "bench_sim_mpi: mpirun missing (openmpi-bin)" >&2; exit 1; }
FEDTUNE=$(realpath "$FEDTUNE")
# The runs happen in a temporary folder (the default scenario's plot lands in the current
# one): the data from here.
if [ -z "${FEDTUNE_DATA:-}" ] && [ -d data ]; then export FEDTUNE_DATA=$PWD/data; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
SIM=("$FEDTUNE" sim --rounds "$ROUNDS" --workers 2 --seed 1 --csv "$tmp/r.csv")

echo "bench_sim_mpi: $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)," \
  "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, $ROUNDS rounds of the default scenario"
printf '\n| run | wall s | rounds s | MB/round (coordinator) | MB/round per site rank | peak RSS MB per rank | sha256 |\n'
printf '|---|---:|---:|---:|---|---|---|\n'
# run <label> <command...>: one line of the table from the run's output.
run() {
  local label=$1 t0 t1 wall rounds mb per rss hash
  shift
  t0=$(date +%s.%N)
  "$@" >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
  t1=$(date +%s.%N)
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  rounds=$(sed -n 's/^summary: [0-9]* rounds in \([0-9.]*\) s .*/\1/p' "$tmp/out")
  mb=$(awk -F, -v r="$ROUNDS" 'NR > 2 { b += $7 } END { printf "%.1f", b / r / 1e6 }' "$tmp/r.csv")
  rss=$(sed -n 's/^rank \([0-9]*\): .* peak RSS \([0-9.]*\) MB$/\1: \2/p' "$tmp/out" | paste -sd' ' -)
  per=$(sed -n 's/^rank \([0-9]*\): [0-9]* sites, .*, \([0-9.]* [kM]B\) a round,.*/\1: \2/p' "$tmp/out" | paste -sd' ' -)
  hash=$(sed -n 's/^final model sha256 \([0-9a-f]\{12\}\).*/\1/p' "$tmp/out")
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$wall" "$rounds" "$mb" "${per:--}" "$rss" "$hash"
}
# One process: its peak RSS from a python parent's getrusage of its only child, printed
# as a rank line.
ONE=(python3 -c '
import subprocess, sys, resource
rc = subprocess.call(sys.argv[1:])
print("rank 0: one process, peak RSS %.1f MB" % (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024))
sys.exit(rc)')
run "one process (plaintext inproc)" "${ONE[@]}" "${SIM[@]}"
run "one process --tls" "${ONE[@]}" "${SIM[@]}" --tls
for n in 2 3 4; do
  run "mpirun -n $n" mpirun -n "$n" --oversubscribe --allow-run-as-root "${SIM[@]}"
done
