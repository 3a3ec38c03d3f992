#!/usr/bin/env bash
# `fedtune relay`: FedAvg through relays equals flat FedAvg. Real processes over TLS on
# 127.0.0.1 (certificates from certs/fedtune-certs), tests/data/blobs.csv split over four
# sites: (a) flat, a coordinator and the four sites; (b) a tree, a coordinator, two
# relays and two sites under each; (c) nested, a relay under a relay for two of the sites.
# Same seeds, same rounds, ordered uploads: the final models agree tensor by tensor within
# float rounding (the max abs difference is printed), and the top's federated loss and
# accuracy per round are the flat ones. Then what a relay refuses: a robust rule on the relay (exit 2, the reason),
# min-fit above min-clients, missing identities; and per round, upstream, secure
# aggregation and the statistics round (the top coordinator gives up with the relay's
# reason), and a top coordinator whose max-examples-per-site is below a relay's total.
# KEEP=1 keeps the work folder.
# Usage: fed_relay.sh <path to fedtune> <source dir>
set -u
FEDTUNE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
CERTS=$SRC/certs/fedtune-certs
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
cd "$tmp" || exit 1
[ -n "$PY" ] || skip "python3 is not installed (free ports, the model comparison)"

"$CERTS" init-ca ca >/dev/null 2>&1
for h in localhost hub-1 hub-2 hub-3; do "$CERTS" coordinator ca "$h" --ip 127.0.0.1 >/dev/null 2>&1; done
for s in a b c d relay-1 relay-2 relay-3; do "$CERTS" site ca "$s" >/dev/null 2>&1; done
ok "certificates made" test -f ca/sites/relay-2/relay-2.crt -a -f ca/coordinator/hub-2.crt

# Four sites, each with every class (blocks of three consecutive rows cycle the classes).
head -1 "$SRC/tests/data/blobs.csv" >header
for i in 0 1 2 3; do
  { cat header; tail -n +2 "$SRC/tests/data/blobs.csv" | awk -v i=$i 'int((NR-1)/3)%4==i'; } >site$i.csv
done
"$FEDTUNE" init --arch '{"input":[4],"layers":[{"type":"linear","out":16},{"type":"relu"},{"type":"linear","out":3}]}' \
  --seed 3 --out init.st >/dev/null

coordinator() { # <port> <min clients> <out> [extra flags...]
  local p=$1 m=$2 out=$3
  shift 3
  timeout 120 "$FEDTUNE" coordinator --listen "tcp://127.0.0.1:$p" --ca ca/ca.crt \
    --cert ca/coordinator/localhost.crt --key ca/coordinator/localhost.key --model init.st \
    --rounds 3 --min-clients "$m" --min-fit "$m" --epochs 2 --lr 0.01 --ordered-uploads \
    --input-stats off --linger-ms 0 --out "$out" "$@"
}
client() { # <port> <server name> <site letter> <data index>
  timeout 120 "$FEDTUNE" client --coordinator "tcp://127.0.0.1:$1" --server-name "$2" \
    --ca ca/ca.crt --cert "ca/sites/$3/$3.crt" --key "ca/sites/$3/$3.key" \
    --data "site$4.csv" --classes blue,green,red --reconnect-initial 0.1 --reconnect-max 0.3
}
relay() { # <upstream port> <listen port> <relay number> [extra flags...]
  local up=$1 p=$2 n=$3
  shift 3
  timeout 120 "$FEDTUNE" relay --upstream "tcp://127.0.0.1:$up" --server-name "${UPNAME:-localhost}" \
    --ca ca/ca.crt --cert "ca/sites/relay-$n/relay-$n.crt" --key "ca/sites/relay-$n/relay-$n.key" \
    --listen "tcp://127.0.0.1:$p" --listen-cert "ca/coordinator/hub-$n.crt" \
    --listen-key "ca/coordinator/hub-$n.key" --min-clients 2 --min-fit 2 --ordered-uploads \
    --reconnect-initial 0.1 --reconnect-max 0.3 "$@"
}

# ---- (a) flat: the coordinator and four sites --------------------------------------------
P=$(port)
coordinator "$P" 4 flat.st --metrics flat.jsonl >flat.log 2>&1 &
cpid=$!
pids+=("$cpid")
spids=()
for i in 0 1 2 3; do
  s=$(echo abcd | cut -c$((i + 1)))
  client "$P" localhost "$s" "$i" >"flat-$s.log" 2>&1 &
  spids+=($!)
done
pids+=("${spids[@]}")
wait_status "flat: the coordinator exits 0" "$cpid" 0 flat.log
for i in 0 1 2 3; do wait_status "flat: site $i exits 0" "${spids[$i]}" 0 "flat-$i.log"; done
ok "flat: 3 rounds of 4 updates" test "$(grep -c 'round [0-9]/3: clients 4 sampled, 4 returned, 0 rejected' flat.log)" -eq 3

# ---- (b) the tree: the coordinator, two relays, two sites under each ---------------------
P=$(port)
R1=$(port)
R2=$(port)
coordinator "$P" 2 tree.st --metrics tree.jsonl >tree.log 2>&1 &
cpid=$!
relay "$P" "$R1" 1 >relay-1.log 2>&1 &
r1=$!
relay "$P" "$R2" 2 >relay-2.log 2>&1 &
r2=$!
pids+=("$cpid" "$r1" "$r2")
client "$R1" hub-1 a 0 >tree-a.log 2>&1 &
sa=$!
client "$R1" hub-1 b 1 >tree-b.log 2>&1 &
sb=$!
client "$R2" hub-2 c 2 >tree-c.log 2>&1 &
sc=$!
client "$R2" hub-2 d 3 >tree-d.log 2>&1 &
sd=$!
pids+=("$sa" "$sb" "$sc" "$sd")
wait_status "tree: the coordinator exits 0" "$cpid" 0 tree.log
wait_status "tree: relay 1 exits 0 when the federation ends" "$r1" 0 relay-1.log
wait_status "tree: relay 2 exits 0 when the federation ends" "$r2" 0 relay-2.log
for s in a b c d; do
  eval "pid=\$s$s"
  wait_status "tree: site $s exits 0 (its relay said the federation is over)" "$pid" 0 "tree-$s.log"
done
ok "tree: 3 rounds of 2 relay updates" test "$(grep -c 'round [0-9]/3: clients 2 sampled, 2 returned, 0 rejected' tree.log)" -eq 3
ok "tree: relay 1 relayed 3 rounds of its 2 sites" test "$(grep -c 'relay: round [0-9]: 2 of 2 sites. updates' relay-1.log)" -eq 3
# The relays' weights are their sites' totals: the top's rounds count the same examples.
ex_flat=$(sed -n 's/.*returned, 0 rejected, 0 failed; \([0-9]*\) examples.*/\1/p' flat.log | tr '\n' ' ')
ex_tree=$(sed -n 's/.*returned, 0 rejected, 0 failed; \([0-9]*\) examples.*/\1/p' tree.log | tr '\n' ' ')
ok_same "tree: each round weighs the same examples as flat" "$ex_tree" "$ex_flat"

# The two final models, tensor by tensor (safetensors: an 8-byte header length, a JSON
# header, then little-endian data).
cat >cmp.py <<'EOF'
import json, struct, sys
def read(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        out[k] = struct.unpack("<%df" % ((e - s) // 4), b[8 + n + s:8 + n + e])
    return out
a, b = read(sys.argv[1]), read(sys.argv[2])
assert sorted(a) == sorted(b), (sorted(a), sorted(b))
diff = max(abs(x - y) for k in a for x, y in zip(a[k], b[k]))
moved = max(abs(x) for k in a for x in a[k])
print("tensors %d max_abs_diff %.3g max_abs_weight %.3g" % (len(a), diff, moved))
EOF
"$FEDTUNE" info init.st >/dev/null 2>&1
cmp_out=$("$PY" cmp.py flat.st tree.st 2>&1)
echo "flat vs tree: $cmp_out"
diff=$(echo "$cmp_out" | sed -n 's/.*max_abs_diff \([^ ]*\).*/\1/p')
ok "the final models have the same 4 tensors" grep -q "^tensors 4 " <<<"$cmp_out"
ok "flat and tree agree within float rounding (max abs diff $diff <= 1e-5)" \
  "$PY" -c "import sys; sys.exit(0 if 0 <= float('$diff') <= 1e-5 else 1)"
init_diff=$("$PY" cmp.py init.st tree.st | sed -n 's/.*max_abs_diff \([^ ]*\).*/\1/p')
ok "the tree's model moved from the initial one ($init_diff > 1e-3)" \
  "$PY" -c "import sys; sys.exit(0 if float('$init_diff') > 1e-3 else 1)"

# The top coordinator's federated loss and accuracy (the global model measured on the
# sites' test splits) are the flat federation's: each relay passes up its sites' weighted
# evaluation with their eval-example count.
cat >fedmetrics.py <<'EOF'
import json, math, sys
def rows(p):
    return [json.loads(l) for l in open(p) if '"federated_loss"' in l]
a, b = rows(sys.argv[1]), rows(sys.argv[2])
assert len(a) == len(b) == 3, (len(a), len(b))
worst = 0.0
for x, y in zip(a, b):
    for k in ("federated_loss", "federated_accuracy"):
        assert isinstance(y[k], float) and math.isfinite(y[k]), (k, x[k], y[k])
        worst = max(worst, abs(x[k] - y[k]))
print("federated metrics max abs diff %.3g" % worst)
sys.exit(0 if worst <= 1e-6 else 1)
EOF
run_status "the top's federated loss and accuracy through relays are the flat ones" 0 fedm.out \
  -- "$PY" fedmetrics.py flat.jsonl tree.jsonl
cat fedm.out

# ---- (c) relays nest: the coordinator <- relay 1 <- relay 3 <- sites a, b; <- relay 2 <- c, d
P=$(port)
R1=$(port)
R2=$(port)
R3=$(port)
coordinator "$P" 2 nest.st >nest.log 2>&1 &
cpid=$!
relay "$P" "$R1" 1 --min-clients 1 --min-fit 1 >nest-relay-1.log 2>&1 &
r1=$!
relay "$P" "$R2" 2 >nest-relay-2.log 2>&1 &
r2=$!
UPNAME=hub-1 relay "$R1" "$R3" 3 >nest-relay-3.log 2>&1 &
r3=$!
pids+=("$cpid" "$r1" "$r2" "$r3")
nest=()
for x in "a 0 $R3 hub-3" "b 1 $R3 hub-3" "c 2 $R2 hub-2" "d 3 $R2 hub-2"; do
  read -r s i rp rn <<<"$x"
  client "$rp" "$rn" "$s" "$i" >"nest-$s.log" 2>&1 &
  nest+=($!)
done
pids+=("${nest[@]}")
wait_status "nested: the coordinator exits 0" "$cpid" 0 nest.log
for r in 1 2 3; do
  eval "pid=\$r$r"
  wait_status "nested: relay $r exits 0" "$pid" 0 "nest-relay-$r.log"
done
ok "nested: relay 1 relayed 3 rounds of its 1 site, relay 3" \
  test "$(grep -c 'relay: round [0-9]: 1 of 1 sites. updates, 60 examples' nest-relay-1.log)" -eq 3
ex_nest=$(sed -n 's/.*returned, 0 rejected, 0 failed; \([0-9]*\) examples.*/\1/p' nest.log | tr '\n' ' ')
ok_same "nested: each round weighs the same examples as flat" "$ex_nest" "$ex_flat"
nest_out=$("$PY" cmp.py flat.st nest.st 2>&1)
echo "flat vs nested: $nest_out"
ndiff=$(echo "$nest_out" | sed -n 's/.*max_abs_diff \([^ ]*\).*/\1/p')
ok "flat and nested agree within float rounding (max abs diff $ndiff <= 1e-5)" \
  "$PY" -c "import sys; sys.exit(0 if 0 <= float('$ndiff') <= 1e-5 else 1)"

# ---- what a relay refuses at start-up (exit 2, one line with the reason) -----------------
expect 2 "--aggregation median: a relay sends its sites' weighted mean upstream" -- \
  relay 1 2 1 --aggregation median
expect 2 "--min-fit 3: must be at most --min-clients 2" -- relay 1 2 1 --min-fit 3
expect 2 "--listen-cert is required" -- "$FEDTUNE" relay --upstream tcp://127.0.0.1:1 \
  --server-name localhost --ca ca/ca.crt --cert ca/sites/relay-1/relay-1.crt \
  --key ca/sites/relay-1/relay-1.key
expect 2 "--listen-cert" -- relay 1 2 1 --listen-cert ca/sites/a/a.crt --listen-key ca/sites/a/a.key
expect 2 "--upstream" -- relay 1 2 1 --upstream "tcp://127.0.0.1:99999"

# ---- what a relay refuses per round: the top coordinator gives up with its reason ---------
refused() { # <log> <flags for the top coordinator...>: two relays without sites
  local log=$1
  shift
  P=$(port)
  coordinator "$P" 2 never.st --max-failed-attempts 1 "$@" >"$log" 2>&1 &
  cpid=$!
  relay "$P" "$(port)" 1 >"$log.r1" 2>&1 &
  r1=$!
  relay "$P" "$(port)" 2 >"$log.r2" 2>&1 &
  r2=$!
  pids+=("$cpid" "$r1" "$r2")
  wait_status "$log: the top coordinator gives up (exit 1)" "$cpid" 1 "$log"
  wait_status "$log: relay 1 exits 0 on the Bye" "$r1" 0 "$log.r1"
  wait_status "$log: relay 2 exits 0 on the Bye" "$r2" 0 "$log.r2"
}
refused secagg.log --secagg
ok "secagg: the relays' reason reaches the top" \
  grep -q "2x \"relay: secure aggregation is not relayed (the relay would see its sites' updates in the clear)" secagg.log
refused stats.log --input-stats on
ok "input statistics: the relays' reason reaches the top" \
  grep -q "2x \"relay: the statistics round is not relayed (a relay holds no data)" stats.log

# A top coordinator whose max-examples-per-site is below a relay's total (its two sites'
# 60 examples) rejects its update, and says why.
P=$(port)
R1=$(port)
coordinator "$P" 1 never.st --max-failed-attempts 1 --max-examples-per-site 50 >bound.log 2>&1 &
cpid=$!
relay "$P" "$R1" 1 >bound.r1 2>&1 &
r1=$!
client "$R1" hub-1 a 0 >bound-a.log 2>&1 &
sa=$!
client "$R1" hub-1 b 1 >bound-b.log 2>&1 &
sb=$!
pids+=("$cpid" "$r1" "$sa" "$sb")
wait_status "bound: the top coordinator gives up (exit 1)" "$cpid" 1 bound.log
wait_status "bound: the relay exits 0 on the Bye" "$r1" 0 bound.r1
wait_status "bound: its site a exits 0" "$sa" 0 bound-a.log
wait_status "bound: its site b exits 0" "$sb" 0 bound-b.log
ok "bound: the rejection names the relay's total and says to raise the bound" \
  grep -q "examples 60: above max-examples-per-site 50 (a relay claims all of its sites' examples: raise it for relays)" bound.log

report
