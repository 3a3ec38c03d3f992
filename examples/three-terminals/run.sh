#!/usr/bin/env bash
# A real federation on one machine: `fedtune coordinator` and two `fedtune client`s as
# three processes talking TLS 1.3 with certificates on both sides over 127.0.0.1. The CA,
# the coordinator's certificate and the two site kits come from certs/fedtune-certs;
# scikit-learn's digits are split into two disjoint private site files and a held-out
# file for the coordinator's central evaluation. See README.md in this folder.
#
# Usage: run.sh [FEDTUNE] [WORKDIR]
#   FEDTUNE  the fedtune executable (default: the repository's build/release/bin/fedtune,
#            which scripts/setup builds, else build/bin/fedtune)
#   WORKDIR  an empty or new folder for everything made (default: a fresh mktemp -d)
# Environment: ROUNDS (default 5), LIMIT (seconds any one process may run, default 300).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
certs=$repo/certs/fedtune-certs
digits=$repo/data/sklearn/digits.csv.gz
rounds=${ROUNDS:-5}
limit=${LIMIT:-300}
arch='{"input":[64],"layers":[{"type":"linear","out":32},{"type":"relu"},{"type":"linear","out":10}]}'

die() {
  echo "run.sh: $*" >&2
  exit 1
}

fedtune=${1:-$repo/build/release/bin/fedtune}
[ -n "${1:-}" ] || [ -x "$fedtune" ] || fedtune=$repo/build/bin/fedtune
[ -x "$fedtune" ] || die "$fedtune is not an executable (build first, or pass its path)"
fedtune=$(cd "$(dirname "$fedtune")" && pwd)/$(basename "$fedtune")
work=${2:-$(mktemp -d "${TMPDIR:-/tmp}/fedtune-3t.XXXXXX")}
mkdir -p "$work"
work=$(cd "$work" && pwd)
[ -z "$(ls -A "$work")" ] || die "$work is not empty"
[ -f "$digits" ] || die "$digits missing: run scripts/fetch-data --only sklearn"
command -v python3 >/dev/null || die "python3 is needed to pick a free port"
command -v openssl >/dev/null || die "openssl is needed by certs/fedtune-certs"

start=$(date +%s%N)
declare -A pid=()
cleanup() { # stop whatever is still running (on error or interrupt)
  local p
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "work folder: $work"

# ---- 1. certificates (on the CA machine) -------------------------------------------------
# The coordinator's certificate names "localhost" (and 127.0.0.1); sites check that name.
{
  "$certs" init-ca "$work/ca"
  "$certs" coordinator "$work/ca" localhost --ip 127.0.0.1
  "$certs" site "$work/ca" site-1
  "$certs" site "$work/ca" site-2
} >"$work/certs.log" 2>&1 || die "certificates failed: $(tail -1 "$work/certs.log")"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
for s in site-1 site-2; do # each kit: ca.crt, the site's key and certificate, client.ini
  "$certs" kit "$work/ca" "$s" --coordinator "localhost:$port" --out "$work/$s" >>"$work/certs.log" 2>&1 ||
    die "kit for $s failed: $(tail -1 "$work/certs.log")"
done
# The coordinator host gets the CA certificate, the CRL and its own key and certificate.
mkdir "$work/coordinator"
cp -p "$work/ca/ca.crt" "$work/ca/crl.pem" "$work/ca/coordinator/localhost.crt" \
  "$work/ca/coordinator/localhost.key" "$work/coordinator/"
echo "certificates: CA $(openssl x509 -in "$work/ca/ca.crt" -noout -fingerprint -sha256 | cut -d= -f2 | cut -c1-23)...," \
  "coordinator localhost, kits $work/site-1 and $work/site-2 (port $port)"

# ---- 2. data: every 5th row held out for the coordinator, the rest alternate between the
# sites (so the two private files are disjoint and each holds all ten digits) --------------
gzip -dc "$digits" | awk -v a="$work/site-1/digits.csv" -v b="$work/site-2/digits.csv" \
  -v e="$work/coordinator/eval.csv" 'NR % 5 == 0 { print > e; next } { k++; print > (k % 2 ? a : b) }'
for s in site-1 site-2; do # the site's operator edits "data =" in the kit's client.ini
  sed -i 's|^data = .*|data = digits.csv|' "$work/$s/client.ini"
done
n1=$(wc -l <"$work/site-1/digits.csv") n2=$(wc -l <"$work/site-2/digits.csv") ne=$(wc -l <"$work/coordinator/eval.csv")
[ $((n1 + n2 + ne)) -eq "$(gzip -dc "$digits" | wc -l)" ] || die "the split lost rows"
echo "data: site-1 $n1 rows, site-2 $n2 rows, coordinator's held-out eval $ne rows (digits, 64 features, 10 classes)"

# ---- 3. a fresh 64-32-10 MLP, then the three processes ---------------------------------------
"$fedtune" init --arch "$arch" --seed 1 --out "$work/coordinator/init.safetensors" >/dev/null
fed_start=$(date +%s%N)
# Terminal 1. The model carries no input standardisation, so the sites train on the raw
# pixels (--standardize off) like the coordinator evaluates them.
(cd "$work/coordinator" && exec timeout "$limit" "$fedtune" coordinator \
  --listen "tcp://127.0.0.1:$port" --ca ca.crt --cert localhost.crt --key localhost.key \
  --crl crl.pem --model init.safetensors --rounds "$rounds" --min-clients 2 --min-fit 2 \
  --epochs 2 --lr 0.01 --eval-data eval.csv --checkpoint-dir checkpoints \
  --metrics metrics.jsonl --out final.safetensors) >"$work/coordinator.log" 2>&1 &
pid[coordinator]=$!
# Terminals 2 and 3: each site runs from its kit folder with its own client.ini.
for s in site-1 site-2; do
  (cd "$work/$s" && exec timeout "$limit" "$fedtune" client --config client.ini \
    --standardize off) >"$work/$s.log" 2>&1 &
  pid[$s]=$!
done
echo "started: coordinator (pid ${pid[coordinator]}) on tcp://127.0.0.1:$port," \
  "site-1 (pid ${pid[site-1]}), site-2 (pid ${pid[site-2]}); logs in $work/*.log"

# ---- 4. wait for all three; any failure stops the others ----------------------------------
declare -A name=()
for n in "${!pid[@]}"; do name[${pid[$n]}]=$n; done
while [ ${#name[@]} -gt 0 ]; do
  rc=0
  wait -n -p finished "${!name[@]}" || rc=$?
  n=${name[$finished]}
  unset "name[$finished]" "pid[$n]"
  if [ "$rc" -ne 0 ]; then
    tail -5 "$work/$n.log" >&2
    [ "$rc" -ne 124 ] || die "$n ran longer than ${limit} s ($work/$n.log)"
    die "$n exited with status $rc ($work/$n.log)"
  fi
done
echo "all three processes exited 0, $(( ($(date +%s%N) - fed_start) / 1000000 )) ms after the start"
full=$(grep -c "round [0-9]*/$rounds: clients 2 sampled, 2 returned, 0 rejected" "$work/coordinator.log" || true)
[ "$full" -eq "$rounds" ] || die "only $full of $rounds rounds had both sites' updates"

# ---- 5. per-round accuracy, final model, evaluation -----------------------------------------
python3 - "$work/coordinator/metrics.jsonl" <<'EOF'
import json, sys
print("central: the new global model on the coordinator's held-out file; federated: the model")
print("sent in that round, on the sites' local test splits (example-weighted mean)")
print("round  central acc  federated acc  examples")
for line in open(sys.argv[1]):
    m = json.loads(line)
    print("%5d  %11.4f  %13.4f  %8d" % (m["round"], m["central_accuracy"],
                                       m["federated_accuracy"], m["examples"]))
EOF
final=$work/coordinator/final.safetensors
[ -s "$final" ] || die "no final model"
echo "final model: $final"
"$fedtune" eval --model "$final" --data "$work/coordinator/eval.csv" | sed -n '1,2p'
echo "done in $(( ($(date +%s%N) - start) / 1000000 )) ms"
