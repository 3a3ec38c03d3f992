#!/usr/bin/env bash
# Byzantine-robust aggregation against attacks, in `fedtune sim` (the real coordinator and
# site code): for each scenario, each share of malicious sites (0, 10, 20, 30%), each
# attack and each aggregation rule, the final clean test accuracy (and the backdoor's
# success rate when the attack is a backdoor), written to results/<scenario>.tsv and
# rendered as tables in results/<scenario>.md.
#
# Scenarios (100 sites, 10 sampled a round, 1 local epoch, batch 10):
#   fashion    the default `fedtune sim` scenario: a 2NN pre-trained on MNIST gets a new
#              head and is fine-tuned on Fashion-MNIST, Dirichlet 0.5 (lr 0.05)
#   mnist-2nn  FedAvg's 2NN from scratch on MNIST, Dirichlet 0.5 (lr 0.05)
#   mnist-cnn  FedAvg's CNN from scratch on MNIST, Dirichlet 0.5 (lr 0.05)
# Every robust rule is configured for f = 3 bad updates a round (--byzantine 3: what a
# defender sizing for 30% would choose), whatever the actual share, so the 0% column is
# the price of that defence when nobody attacks. Attacks: sign-flip, scale (K = the 10
# sampled: model replacement), noise:0.1 (std 0.1 per coordinate), label-flip, and, when
# the fedtune at hand knows them, lie and backdoor.
#
# Runs whose output exists are skipped (delete results/<scenario>/ to redo). Each run is
# one `fedtune sim --workers 1`; JOBS of them run at once (default: the cores).
# Usage: examples/robust-aggregation/run.sh [--rounds N] [--jobs J] [--fedtune BIN]
#        [--fractions "0 0.1 0.2 0.3"] [--attacks "..."] [--rules "..."] [scenario...]
# Needs scripts/fetch-data --only mnist,fashion-mnist
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${FEDTUNE_DATA:-$ROOT/data}
FEDTUNE=$ROOT/build/release/bin/fedtune
OUT=$ROOT/examples/robust-aggregation/results
ROUNDS=""
JOBS=$(nproc)
FRACTIONS="0 0.1 0.2 0.3"
ATTACKS=""
RULES="mean median trimmed-mean krum multi-krum norm rfa"
SCENARIOS=()
while [ $# -gt 0 ]; do
  case $1 in
  --rounds) ROUNDS=$2; shift 2 ;;
  --jobs) JOBS=$2; shift 2 ;;
  --fedtune) FEDTUNE=$2; shift 2 ;;
  --fractions) FRACTIONS=$2; shift 2 ;;
  --attacks) ATTACKS=$2; shift 2 ;;
  --rules) RULES=$2; shift 2 ;;
  fashion | mnist-2nn | mnist-cnn) SCENARIOS+=("$1"); shift ;;
  *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(fashion mnist-2nn mnist-cnn)
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell} # bench/README.md: misdetected otherwise
if [ -z "$ATTACKS" ]; then
  ATTACKS="sign-flip scale noise:0.1 label-flip"
  help=$("$FEDTUNE" sim --help 2>&1 || true)
  grep -q "lie\[:Z\]" <<<"$help" && ATTACKS+=" lie"
  grep -q "backdoor\[:LABEL\]" <<<"$help" && ATTACKS+=" backdoor"
fi
M=$DATA/mnist
for f in "$M/train-images-idx3-ubyte" "$M/t10k-images-idx3-ubyte" "$DATA/fashion-mnist"; do
  [ -e "$f" ] || [ -e "$f.gz" ] || { echo "run.sh: $f missing: scripts/fetch-data --only mnist,fashion-mnist" >&2; exit 1; }
done
mnist_file() { if [ -e "$M/$1" ]; then echo "$M/$1"; else echo "$M/$1.gz"; fi; }

scenario_args() { # the scenario's sim options (rounds included)
  case $1 in
  fashion) echo "--rounds ${ROUNDS:-50}" ;;
  mnist-2nn | mnist-cnn)
    local arch=fedavg-2nn r=${ROUNDS:-50}
    [ "$1" = mnist-cnn ] && arch=fedavg-cnn && r=${ROUNDS:-20}
    echo "--data $(mnist_file train-images-idx3-ubyte) --test-data $(mnist_file t10k-images-idx3-ubyte)" \
      "--arch $arch --clients 100 --partition dirichlet --alpha 0.5 --fraction 0.1 --epochs 1" \
      "--batch 10 --lr 0.05 --rounds $r"
    ;;
  esac
}

for sc in "${SCENARIOS[@]}"; do
  dir=$OUT/$sc
  mkdir -p "$dir"
  jobs=()
  for frac in $FRACTIONS; do
    for attack in $ATTACKS; do
      [ "$frac" = 0 ] && [ "$attack" != sign-flip ] && continue # 0%: one column per rule
      for rule in $RULES; do
        name="${rule}_${attack//:/-}_${frac}"
        [ "$frac" = 0 ] && name="${rule}_none_0"
        [ -s "$dir/$name.out" ] && grep -q '^final model sha256' "$dir/$name.out" && continue
        args="$(scenario_args "$sc") --workers 1 --seed 1 --aggregation $rule"
        [ "$rule" != mean ] && [ "$rule" != norm ] && args+=" --byzantine 3"
        [ "$frac" != 0 ] && args+=" --malicious $frac --attack $attack"
        jobs+=("$name|$args")
      done
    done
  done
  echo "$sc: ${#jobs[@]} runs to do, $JOBS at a time"
  if [ ${#jobs[@]} -gt 0 ]; then
    # shellcheck disable=SC2016 # the job's body expands in its own shell
    printf '%s\n' "${jobs[@]}" | FEDTUNE=$FEDTUNE DIR=$dir xargs -d '\n' -P "$JOBS" -I{} bash -c '
      name=${1%%|*} args=${1#*|}
      work=$(mktemp -d) && cd "$work" || exit 1 # the default scenario writes its plot here
      trap '\''rm -rf "$work"'\'' EXIT
      # shellcheck disable=SC2086
      if "$FEDTUNE" sim $args --metrics "$DIR/$name.jsonl.tmp" >"$DIR/$name.out.tmp" 2>&1; then
        mv "$DIR/$name.jsonl.tmp" "$DIR/$name.jsonl"; mv "$DIR/$name.out.tmp" "$DIR/$name.out"
        echo "  $name: $(sed -n "s/^summary: .*final accuracy \([0-9.]*\),.*/\1/p" "$DIR/$name.out")"
      else
        echo "  $name: FAILED (see $DIR/$name.out.tmp)"
      fi' _ {}
  fi
  # The table: rows attack@share, columns rules; a cell is the final accuracy (and the
  # backdoor's success after a slash).
  {
    printf 'rule\tattack\tshare\tfinal_accuracy\tbackdoor_success\n'
    for f in "$dir"/*.out; do
      b=$(basename "$f" .out)
      rule=${b%%_*} rest=${b#*_} attack=${rest%_*} share=${rest##*_}
      acc=$(sed -n 's/^summary: .*final accuracy \([0-9.]*\),.*/\1/p' "$f")
      bd=$(tail -n 1 "${f%.out}.jsonl" 2>/dev/null | grep -o '"backdoor_success":[0-9.]*' | cut -d: -f2 || true)
      printf '%s\t%s\t%s\t%s\t%s\n' "$rule" "$attack" "$share" "$acc" "${bd:--}"
    done
  } >"$OUT/$sc.tsv"
  awk -F'\t' -v rules="$RULES" -v sc="$sc" '
    NR == 1 { next }
    { key = $2 "@" $3; if (!(key in seen)) { seen[key] = 1; keys[++nk] = key }
      cell[key, $1] = sprintf("%.1f", 100 * $4) ($5 != "-" ? sprintf(" / %.0f%%", 100 * $5) : "") }
    END {
      n = split(rules, r, " ")
      printf "### %s\n\n| attack | share |", sc; for (i = 1; i <= n; i++) printf " %s |", r[i]; printf "\n"
      printf "| --- | ---: |"; for (i = 1; i <= n; i++) printf " ---: |"; printf "\n"
      # none first, then by attack and share
      for (k = 1; k <= nk; k++) order[k] = keys[k]
      for (a = 1; a <= nk; a++) for (b = a + 1; b <= nk; b++) {
        x = order[a]; y = order[b]
        if ((x !~ /^none/ && y ~ /^none/) || ((x ~ /^none/) == (y ~ /^none/) && x > y)) { order[a] = y; order[b] = x }
      }
      for (k = 1; k <= nk; k++) {
        split(order[k], p, "@"); printf "| %s | %d%% |", p[1], 100 * p[2]
        for (i = 1; i <= n; i++) printf " %s |", ((order[k], r[i]) in cell) ? cell[order[k], r[i]] : ""
        printf "\n"
      }
    }' "$OUT/$sc.tsv" >"$OUT/$sc.md"
  cat "$OUT/$sc.md"
done
