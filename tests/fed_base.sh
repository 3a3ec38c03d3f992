#!/usr/bin/env bash
# The frozen base crosses the wire once: real processes over TLS on 127.0.0.1, a
# coordinator whose model's first layer is frozen (--freeze 0: 80 of 131 floats) and two
# sites, one with --base-cache (a folder) and one without (memory). The transfer counters
# of the coordinator's metrics prove it:
#   - round 1 sends every tensor to both (2 x 524 bytes); from round 2 on each site gets
#     the 51 trainable floats only (2 x 204 bytes): no frozen byte crosses the wire;
#   - the cached file is named by the SHA-256 of its bytes, which are the frozen tensors
#     of the model file (recomputed here from init.st), and the exported model keeps them
#     bit for bit;
#   - a restarted federation (the coordinator resumes from its checkpoint, both sites are
#     new processes): the site with the folder announces the base and gets the trainable
#     part at once, the other the whole model again (524 + 204 bytes);
#   - a cached file whose bytes no longer match its name is removed with a warning, the
#     site asks for everything and the coordinator sends it (the round still completes),
#     and the file is written again, correct.
# Usage: fed_base.sh <path to fedtune> <source dir>
set -u
FEDTUNE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
CERTS=$SRC/certs/fedtune-certs
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
cd "$tmp" || exit 1

[ -n "$PY" ] || skip "no python3 to pick a free port"

"$CERTS" init-ca ca >/dev/null 2>&1 && "$CERTS" coordinator ca localhost --ip 127.0.0.1 >/dev/null 2>&1
for s in a b; do "$CERTS" site ca "site-$s" >/dev/null 2>&1; done
ok "certificates made" test -f ca/sites/site-b/site-b.crt
head -1 "$SRC/tests/data/blobs.csv" >header
for i in 0 1; do
  { cat header; tail -n +2 "$SRC/tests/data/blobs.csv" | awk -v i=$i 'int((NR-1)/3)%2==i'; } >site$i.csv
done
"$FEDTUNE" init --arch '{"input":[4],"layers":[{"type":"linear","out":16},{"type":"relu"},{"type":"linear","out":3}]}' \
  --seed 5 --out init.st >/dev/null
ok "model made" test -s init.st

coordinator() { # <port> <rounds> <metrics file>
  timeout 120 "$FEDTUNE" coordinator --listen "tcp://127.0.0.1:$1" --ca ca/ca.crt \
    --cert ca/coordinator/localhost.crt --key ca/coordinator/localhost.key \
    --model init.st --freeze 0 --rounds "$2" --min-clients 2 --min-fit 2 --epochs 1 --lr 0.01 \
    --checkpoint-dir ckpt --metrics "$3" --out final.st "${COORD_EXTRA[@]}"
}
COORD_EXTRA=()
client() { # <port> <site letter> <data index> [flags...]
  local p=$1 s=$2 d=$3
  shift 3
  timeout 120 "$FEDTUNE" client --coordinator "tcp://127.0.0.1:$p" --server-name localhost \
    --ca ca/ca.crt --cert "ca/sites/site-$s/site-$s.crt" --key "ca/sites/site-$s/site-$s.key" \
    --data "site$d.csv" --classes blue,green,red --reconnect-initial 0.2 --reconnect-max 1 "$@"
}
federation() { # <rounds> <metrics file> <log suffix>
  local P cpid a b
  P=$(port)
  coordinator "$P" "$1" "$2" >"coord$3.log" 2>&1 &
  cpid=$!
  client "$P" a 0 --base-cache bases-a >"a$3.log" 2>&1 &
  a=$!
  client "$P" b 1 >"b$3.log" 2>&1 &
  b=$!
  pids+=("$cpid" "$a" "$b")
  wait_status "coordinator ($3) exits 0" "$cpid" 0 "coord$3.log"
  wait_status "site a ($3) exits 0" "$a" 0 "a$3.log"
  wait_status "site b ($3) exits 0" "$b" 0 "b$3.log"
}
counters() { # <metrics file> <round>: "full trainable-only bytes" of that round
  sed -n 's/.*"round":'"$2"',.*"models_full":\([0-9]*\),"models_trainable_only":\([0-9]*\),"model_bytes":\([0-9]*\).*/\1 \2 \3/p' "$1"
}
# SHA-256 of the frozen tensors (0.weight, 0.bias) of a model file, back to back.
frozen_sha() {
  "$PY" - "$1" <<'EOF'
import hashlib, json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
body = raw[8 + n:]
h = hashlib.sha256()
for name in ("0.weight", "0.bias"):
    a, b = head[name]["data_offsets"]
    h.update(body[a:b])
print(h.hexdigest())
EOF
}

# ---- a folder that cannot be one: a usage error before anything is read ------------------
expect 2 "fedtune client: --base-cache site0.csv: not a folder" -- client 1 a 0 --base-cache site0.csv
expect 2 "fedtune client: --base-cache /nonexistent/x: No such file or directory" -- \
  client 1 a 0 --base-cache /nonexistent/x

# ---- 3 rounds: the base once, then the trainable part ------------------------------------
federation 3 m1.jsonl 1
ok_same "round 1: the whole model to both sites" "$(counters m1.jsonl 1)" "2 0 1048"
ok_same "round 2: trainable tensors only" "$(counters m1.jsonl 2)" "0 2 408"
ok_same "round 3: trainable tensors only" "$(counters m1.jsonl 3)" "0 2 408"
ok "the round line shows it" grep -q "round 2/3: .*(models: 0 full, 2 trainable-only, 408 bytes)" coord1.log
base=$(frozen_sha init.st)
ok "site a cached the base as bases-a/$base.base" test -f "bases-a/$base.base"
ok_same "the cached file: 320 bytes" "$(stat -c %s "bases-a/$base.base")" "320"
ok_same "the cached bytes are the frozen tensors" "$(sha256sum <"bases-a/$base.base" | cut -c1-64)" "$base"
ok_same "the exported model keeps the base bit for bit" "$(frozen_sha final.st)" "$base"
ok "site b keeps no folder" test "$(find . -name '*.base' | wc -l)" -eq 1
ok "site a's last line counts what it received" \
  grep -q "models received: 1 full, 2 trainable-only, 0 deltas, 932 bytes" a1.log

# ---- restarted: the folder's base is announced and used ----------------------------------
federation 5 m2.jsonl 2
ok_same "round 4: a (cached) trainable only, b (new process) everything" "$(counters m2.jsonl 4)" "1 1 728"
ok_same "round 5: trainable tensors only" "$(counters m2.jsonl 5)" "0 2 408"

# ---- a damaged file: removed, everything sent again, written again ------------------------
printf '\x01' | dd of="bases-a/$base.base" bs=1 seek=17 conv=notrunc 2>/dev/null
ok_differ "the file is damaged" "$(sha256sum <"bases-a/$base.base" | cut -c1-64)" "$base"
federation 6 m3.jsonl 3
ok "site a warns and removes it" grep -q "base cache: bases-a/$base.base does not hold the base its name says: removed" a3.log
ok "site a asks for everything" grep -q "no frozen base version 6 held; asking for it" a3.log
ok_same "round 6: a's trainable-only transfer, then both whole models" "$(counters m3.jsonl 6)" "2 1 1252"
ok_same "the file is written again, correct" "$(sha256sum <"bases-a/$base.base" | cut -c1-64)" "$base"
ok_same "round 6 completed with both sites" \
  "$(grep -c 'round 6/6: clients 2 sampled, 2 returned, 0 rejected' coord3.log)" "1"

# ---- the downlink compressed (--compress-down q8): resumed at version 6, round 7 sends
# the weights as before (new processes); from round 8 each site, holding the last version,
# gets the q8 change of the 51 trainable floats (24 + 8 + 51 = 83 bytes), rebuilds the
# version and checks its SHA-256 (a mismatch would ask for the whole model) ---------------
COORD_EXTRA=(--compress-down q8)
federation 9 m4.jsonl 4
ok_same "round 7: a trainable only, b everything" "$(counters m4.jsonl 7)" "1 1 728"
ok "round 8: two q8 deltas of 83 bytes" grep -q '"round":8,.*"models_full":0,"models_trainable_only":0,"model_bytes":166,"models_delta":2' m4.jsonl
ok "round 9: the same" grep -q '"round":9,.*"model_bytes":166,"models_delta":2' m4.jsonl
ok "the round line shows it" grep -q "round 9/9: .*(models: 0 full, 0 trainable-only, 2 q8 deltas, 166 bytes)" coord4.log
for s in a b; do
  ok "site $s rebuilt both versions, asked for nothing" \
    grep -q "models received: 0 full, 1 trainable-only, 2 deltas\|models received: 1 full, 0 trainable-only, 2 deltas" "$s"4.log
  ok "site $s never asked for a model" test "$(grep -c "asking for it" "$s"4.log)" -eq 0
done

report
