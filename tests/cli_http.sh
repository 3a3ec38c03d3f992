#!/usr/bin/env bash
# `fedtune coordinator --http`: monitoring of a real federation (a coordinator and three
# `fedtune client`s over TLS on 127.0.0.1, certificates from certs/fedtune-certs):
#   - /metrics parsed with Debian's python3-prometheus-client: every family has HELP and
#     TYPE, and the values agree with the coordinator's log (rounds closed, attempts,
#     failed attempts) and with /status (accepted updates, sites connected);
#   - /status JSON: state, sites with their state, rounds and last seen, the history;
#   - / rendered by headless Chromium: the DOM holds a row and SVG points per round and
#     the site names; a screenshot is a PNG of the expected size that is not blank;
#   - requests that are refused: another method (405), an unknown path (404), a long
#     URL (414); a non-loopback --http without --http-tls is a usage error;
#   - --http-tls: without a client certificate, with a site's, with another CA's and with
#     a revoked admin certificate 403, with an admin certificate (clientAuth plus the
#     admin extended key usage, made by fedtune-certs admin) 200; refusals logged with the
#     peer and the reason, the admin's requests with its CN;
#   - --log-format json: every stderr line one JSON object with the text line's fields.
# The federation is held still for the checks by stopping one of three sites with
# min-clients 3: the coordinator then waits with two sites connected.
# Usage: cli_http.sh <path to fedtune> <source dir>
set -u
FEDTUNE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
CERTS=$SRC/certs/fedtune-certs
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
cd "$tmp" || exit 1

[ -n "$PY" ] || skip "no python3"
"$PY" -c 'import prometheus_client.parser' 2>/dev/null || skip "no python3-prometheus-client"
command -v curl >/dev/null || skip "no curl"
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || skip "no chromium"

{
  "$CERTS" init-ca ca && "$CERTS" coordinator ca localhost --ip 127.0.0.1
  for s in a b c; do "$CERTS" site ca "site-$s"; done
  "$CERTS" init-ca ca2 --name 'other CA' && "$CERTS" site ca2 intruder
} >/dev/null 2>&1
# Admin certificates (fedtune-certs admin): clientAuth and the admin role's extended key
# usage, signed by the CA.
ADMIN_OID=2.25.119735425215181750697262863098642166956
for a in alice mallory; do
  "$CERTS" admin ca "$a" >/dev/null 2>&1 && cp "ca/admins/$a/$a.crt" "ca/admins/$a/$a.key" .
done
ok "certificates made" test -s alice.crt -a -s mallory.crt -a -s ca2/sites/intruder/intruder.crt
ok "admin certificate carries the admin EKU" grep -q "$ADMIN_OID" <(openssl x509 -in alice.crt -noout -text)
head -31 "$SRC/tests/data/blobs.csv" >d.csv
"$FEDTUNE" init --arch '{"input":[4],"layers":[{"type":"linear","out":3}]}' --out init.st >/dev/null
ok "model made" test -s init.st

COORD=(--ca ca/ca.crt --cert ca/coordinator/localhost.crt --key ca/coordinator/localhost.key
  --crl ca/crl.pem --model init.st)
client() { # <port> <site letter> <log>
  "$FEDTUNE" client --coordinator "tcp://127.0.0.1:$1" --server-name localhost --ca ca/ca.crt \
    --cert "ca/sites/site-$2/site-$2.crt" --key "ca/sites/site-$2/site-$2.key" --data d.csv \
    --classes blue,green,red --reconnect-initial 0.2 --reconnect-max 0.5 >"$3" 2>&1 &
  pids+=($!)
}
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@"; }
# pycheck <script> <args...>: runs a python check; on failure its output goes to stderr.
pycheck() {
  local out
  out=$("$PY" "$@" 2>&1) || { echo "$out" | sed 's/^/  | /' >&2; return 1; }
}

# ---- usage errors -------------------------------------------------------------------------
expect 2 'fedtune coordinator: --http 0.0.0.0:9464: not a loopback address: serving it needs TLS with admin client certificates (--http-tls)' \
  -- "$FEDTUNE" coordinator --listen tcp://127.0.0.1:0 "${COORD[@]}" --http 0.0.0.0:9464
expect 2 'fedtune coordinator: --http localhost: no port: write HOST:PORT (127.0.0.1:9464)' \
  -- "$FEDTUNE" coordinator --listen tcp://127.0.0.1:0 "${COORD[@]}" --http localhost
expect 2 '--http 127.0.0.1:70000: port "70000" is outside 0..65535' \
  -- "$FEDTUNE" coordinator --listen tcp://127.0.0.1:0 "${COORD[@]}" --http 127.0.0.1:70000
expect 2 '--http example.org:80: "example.org" is not an IPv4 address or localhost' \
  -- "$FEDTUNE" coordinator --listen tcp://127.0.0.1:0 "${COORD[@]}" --http example.org:80
expect 2 "fedtune coordinator: --http-tls: no --http address to serve" \
  -- "$FEDTUNE" coordinator --listen tcp://127.0.0.1:0 "${COORD[@]}" --http-tls
expect 2 'fedtune coordinator: --log-format: "xml" is not one of text|json' \
  -- "$FEDTUNE" coordinator --log-format xml
# A usage error with --log-format json is one JSON object too.
run_status "usage error in JSON" 2 usage.json -- "$FEDTUNE" coordinator --log-format json \
  --listen tcp://127.0.0.1:0 "${COORD[@]}" --http 0.0.0.0:1
ok "...one JSON object with the text line's fields: $(cat usage.json)" "$PY" -c '
import json, sys
lines = open(sys.argv[1]).read().splitlines()
o = json.loads(lines[0])
assert len(lines) == 1 and o["level"] == "error" and o["command"] == "coordinator", o
assert o["message"].startswith("--http 0.0.0.0:1: not a loopback address"), o
assert set(o) == {"time", "level", "command", "message"}, o' usage.json

# ---- a federation with monitoring --------------------------------------------------------
P=$(port)
H=$(port)
"$FEDTUNE" coordinator --listen "tcp://127.0.0.1:$P" "${COORD[@]}" --rounds 1000000 \
  --min-clients 3 --min-fit 3 --wait-after-min-ms 0 \
  --http "127.0.0.1:$H" >coord.log 2>&1 &
cpid=$!
pids+=("$cpid")
ok "coordinator serves monitoring" wait_for 20 grep -qs "monitoring on http://127.0.0.1:$H (/metrics, /status, /)" coord.log
ok "/metrics answers before any site" test "$(code "http://127.0.0.1:$H/metrics")" = 200
client "$P" a a.log
pid_a=${pids[-1]}
client "$P" b b.log
pid_b=${pids[-1]}
client "$P" c c.log
cpid_c=${pids[-1]}
ok "rounds run" wait_for 60 grep -qs "round 3/1000000:" coord.log
# Scrapes while rounds run (the engine writes the record, the server's thread copies it):
# ten at once, all answered.
for i in 0 1 2 3 4; do
  code "http://127.0.0.1:$H/status" >"burst-s$i" &
  code "http://127.0.0.1:$H/metrics" >"burst-m$i" &
done
wait_for 30 test "$(cat burst-* 2>/dev/null | tr -d '\n')" = 200200200200200200200200200200
ok "ten scrapes during rounds: $(cat burst-* | tr '\n' ' ')" test "$(cat burst-* | tr -d '\n')" = 200200200200200200200200200200
# site-c goes away: no round can start again (min-clients 3), the open one cannot close.
kill -9 "$cpid_c"
wait "$cpid_c" 2>/dev/null
ok "coordinator noticed site-c leaving" wait_for 20 grep -qs "site-c left" coord.log
still() { # the state holds: waiting, two sites connected
  curl -s --max-time 10 "http://127.0.0.1:$H/status" >s.json &&
    "$PY" -c 'import json,sys; d=json.load(open("s.json")); sys.exit(not (d["state"]=="waiting" and d["sites_connected"]==2))'
}
ok "coordinator waits with two sites" wait_for 30 still
curl -s --max-time 10 -D m.hdr "http://127.0.0.1:$H/metrics" >m.txt
curl -s --max-time 10 -D s.hdr "http://127.0.0.1:$H/status" >s.json
ok "/metrics Content-Type: $(grep -i content-type m.hdr)" grep -qi '^Content-Type: text/plain; version=0.0.4; charset=utf-8' m.hdr
ok "/status Content-Type: $(grep -i content-type s.hdr)" grep -qi '^Content-Type: application/json' s.hdr
rounds=$(grep -c "info: round [0-9]*/1000000:" coord.log)
failed=$(grep -c "warn: round [0-9]* attempt [0-9]*:" coord.log)
ok "rounds closed: $rounds" test "$rounds" -ge 3
cat >metrics_check.py <<'EOF'
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
rounds, failed = int(sys.argv[1]), int(sys.argv[2])
text = open(sys.argv[3]).read()
st = json.load(open(sys.argv[4]))
fams = {f.name: f for f in text_string_to_metric_families(text)}
# Every family has HELP and TYPE lines, and no sample without its family's TYPE.
for f in fams.values():
    assert f.documentation, f.name
    assert f.type in ("counter", "gauge", "histogram"), (f.name, f.type)
    assert f"# HELP {f.name}" in text and f"# TYPE {f.name}" in text, f.name
    if f.type == "counter":
        assert all(s.name == f.name + "_total" for s in f.samples), f.name
def one(name, **labels):
    for f in fams.values():
        for s in f.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(name, labels)
assert len(fams) >= 20, sorted(fams)
assert one("fedtune_rounds_total") == rounds, (one("fedtune_rounds_total"), rounds)
assert one("fedtune_rounds_done") == rounds
assert one("fedtune_model_version") == rounds + 1
# Attempts: the statistics round, every closed round, and the attempts that failed or
# are open (site-c left while it was sampled: one failed attempt, then waiting).
fails = sum(one("fedtune_attempt_failures_total", reason=r) for r in
            ("deadline", "too_few_updates", "secagg", "statistics", "other"))
assert fails == failed, (fails, failed)
assert one("fedtune_attempts_total") == 1 + rounds + fails, (one("fedtune_attempts_total"), rounds, fails)
assert one("fedtune_sites_sampled_total") == 3 * one("fedtune_attempts_total")
assert one("fedtune_sites_connected") == 2
assert one("fedtune_sites", state="left") == 1
assert one("fedtune_sites", state="idle") == 2
assert one("fedtune_site_joins_total") == 3
assert one("fedtune_coordinator_state", state="waiting") == 1
assert one("fedtune_coordinator_state", state="collecting") == 0
rej = sum(s.value for s in fams["fedtune_updates_rejected"].samples)
assert rej == 0, rej
acc = one("fedtune_updates_accepted_total")
assert 3 * (rounds + 1) <= acc <= 3 * (rounds + 1) + 2, (acc, rounds)
assert acc == st["accepted"] == sum(s["rounds"] for s in st["sites"]), (acc, st["sites"])
assert one("fedtune_received_bytes_total") > 0 and one("fedtune_sent_bytes_total") > 0
# (fetched after /metrics: a keepalive may have come in between)
assert one("fedtune_received_bytes_total") <= st["bytes_in"], st["bytes_in"]
assert one("fedtune_sent_bytes_total") <= st["bytes_out"], st["bytes_out"]
assert one("fedtune_round_duration_seconds_count") == rounds
assert one("fedtune_round_duration_seconds_bucket", le="+Inf") == rounds
b = [s.value for s in fams["fedtune_round_duration_seconds"].samples if s.name.endswith("_bucket")]
assert b == sorted(b) and len(b) == 13, b
assert 0 <= one("fedtune_federated_accuracy") <= 1
assert math.isnan(one("fedtune_central_accuracy"))  # no --eval-data
assert math.isnan(one("fedtune_dp_epsilon"))
assert math.isnan(one("fedtune_checkpoint_age_seconds"))
# /status
assert st["state"] == "waiting" and st["paused"] is False, st["state"]
assert st["rounds_done"] == rounds and st["model_version"] == rounds + 1
names = sorted(s["name"] for s in st["sites"])
assert names == ["site-a", "site-b", "site-c"], names
state = {s["name"]: s["state"] for s in st["sites"]}
assert state == {"site-a": "idle", "site-b": "idle", "site-c": "left"}, state
for s in st["sites"]:
    assert abs(s["last_seen"] - st["time"]) < 600 and s["rejections"] == 0, s
    assert rounds + 1 <= s["rounds"] <= rounds + 2, s
h = st["history"]
assert len(h) == min(rounds, 1000) and h[-1]["round"] == rounds, (len(h), h[-1])
assert all(r["sampled"] == 3 and r["returned"] == 3 for r in h)
assert st["last_round"]["federated_accuracy"] == h[-1]["federated_accuracy"]
assert fails <= 1, fails  # site-c's leaving can fail one attempt, no more
assert len(st["warnings"]) == min(one("fedtune_warnings_total"), 20)
assert all(w["level"] in ("warn", "error") and w["message"] for w in st["warnings"])
print("ok")
EOF
ok "metrics agree with the log and /status" pycheck metrics_check.py "$rounds" "$failed" m.txt s.json

# ---- refused requests -----------------------------------------------------------------------
ok "POST /metrics is 405" test "$(code -X POST -d x=1 "http://127.0.0.1:$H/metrics")" = 405
ok "DELETE / is 405" test "$(code -X DELETE "http://127.0.0.1:$H/")" = 405
ok "405 names the methods" grep -qi '^Allow: GET, HEAD' <(curl -s -D - -o /dev/null -X PUT "http://127.0.0.1:$H/status")
ok "unknown path is 404" test "$(code "http://127.0.0.1:$H/admin")" = 404
ok "/metrics/ is 404" test "$(code "http://127.0.0.1:$H/metrics/")" = 404
long=$(printf '/%0300d' 0)
ok "a 301-byte URL is 414" test "$(code "http://127.0.0.1:$H$long")" = 414
huge=$(printf '/%070000d' 0)
ok "a 70 kB URL is refused" test "$(code "http://127.0.0.1:$H$huge")" -ge 400
ok "HEAD / is 200 without a body" test "$(curl -s -I --max-time 10 "http://127.0.0.1:$H/" | head -1 | tr -d '\r')" = "HTTP/1.1 200 OK"
ok "refusals logged with the peer and the reason" grep -q "warn: http: 127.0.0.1:[0-9]* POST /metrics refused (405): method not allowed" coord.log
ok "...the 404" grep -q "warn: http: 127.0.0.1:[0-9]* GET /admin refused (404): no such page" coord.log
ok "...the 414" grep -q "GET /0000.*\.\.\. refused (414): URL too long" coord.log
# A URL whose %0A decodes into a line break cannot forge a log line.
ok "a URL with an encoded line break is 404" test "$(code "http://127.0.0.1:$H/a%0Aerror:%20forged")" = 404
ok "...logged on one line, the break as ?" grep -q "GET /a?error: forged refused (404): no such page" coord.log
ok "...and no forged line" test "$(grep -c "^error: forged" coord.log)" -eq 0
ok "coordinator still serves after them" test "$(code "http://127.0.0.1:$H/status")" = 200

# ---- the page in headless Chromium -------------------------------------------------------------
mkdir -p chrome
browse() { # <output option> <output file>: chromium on the page, bounded in time
  timeout -k 5 90 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
    --user-data-dir="$tmp/chrome" --hide-scrollbars --window-size=1100,1400 \
    --virtual-time-budget=3000 "$1" "http://127.0.0.1:$H/" >"$2" 2>>chrome.log
}
browse --dump-dom dom.html
ok "chromium rendered the page ($(wc -c <dom.html) bytes)" grep -q '</html>' dom.html
shown=$((rounds < 200 ? rounds : 200))
ok "a row per round ($shown)" test "$(grep -o '<tr class="round"' dom.html | wc -l)" -eq "$shown"
ok "the last round's row" grep -q "<tr class=\"round\" data-round=\"$rounds\"><td>$rounds</td>" dom.html
ok "an accuracy point per round" test "$(grep -o '<circle class="pt federated"' dom.html | wc -l)" -eq $((2 * shown))
ok "the accuracy chart is SVG" grep -q '<svg id="accuracy-chart"' dom.html
ok "the charts' x axis names the window's first and last rounds" \
  test "$(grep -oE '<text class="xlabel"[^>]*>round [0-9]+</text>' dom.html | sed 's/.*>round //; s/<.*//' | sort -nu | tr '\n' ' ')" = "$((rounds - shown + 1)) $rounds "
ok "the site names and states" grep -q '<tr class="site idle"><td class="name">site-a</td>' dom.html
ok "...site-c left" grep -q '<tr class="site left"><td class="name">site-c</td>' dom.html
ok "the state line" grep -q "state <span class=\"state\">waiting</span> · round $rounds of 1000000 done" dom.html
ok "no external resource" test -z "$(grep -oE '(src|href)="https?://[^"]*"' dom.html)"
rm -f shot.png
(cd "$tmp" && browse --screenshot=shot.png /dev/null)
ok "screenshot written" test -s shot.png
cat >png_check.py <<'EOF'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, ihdr = 8, b"", None
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR": ihdr = struct.unpack(">IIBBBBB", body)
    if kind == b"IDAT": idat += body
    pos += 12 + n
w, h, depth, ctype = ihdr[:4]
assert (w, h) == (1100, 1400) and depth == 8 and ctype in (2, 6), ihdr
bpp = 3 if ctype == 2 else 4
raw, stride = zlib.decompress(idat), w * bpp
prev, rows, i = bytearray(stride), [], 0
for y in range(h):  # undo the PNG row filters
    f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
    i += 1 + stride
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b, c = prev[x], prev[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(bytes(line))
    prev = line
px = [r[x:x + 3] for r in rows[::4] for x in range(0, stride, bpp * 4)]
colors = set(px)
bg = max(colors, key=px.count)
dark = sum(1 for p in px if sum(p) < 200)
blue = sum(1 for p in px if p[2] > 150 and p[0] < 80)  # the federated series
assert len(colors) > 20, len(colors)
assert 0.5 < px.count(bg) / len(px) < 0.995, px.count(bg) / len(px)
assert dark > 100 and blue > 20, (dark, blue)
print("ok", len(colors), "colors", dark, "dark", blue, "blue")
EOF
ok "screenshot is 1100x1400, not blank" pycheck png_check.py shot.png
kill "$cpid"
wait_status "coordinator stops cleanly on SIGTERM" "$cpid" 0 coord.log
kill "$pid_a" "$pid_b"
wait "$pid_a" "$pid_b" 2>/dev/null

# ---- HTTPS: admin client certificates only, JSON logs ------------------------------------------
# alice's twin mallory is revoked in the CRL the coordinator reads (re-read per request).
"$CERTS" revoke ca mallory >/dev/null 2>&1
ok "mallory revoked" grep -q "^R.*/CN=mallory$" ca/index.txt
P=$(port)
H=$(port)
"$FEDTUNE" coordinator --listen "tcp://127.0.0.1:$P" "${COORD[@]}" --http "127.0.0.1:$H" \
  --http-tls --log-format json >tls.log 2>&1 &
tpid=$!
pids+=("$tpid")
ok "HTTPS monitoring up" wait_for 20 grep -qs "monitoring on https://127.0.0.1:$H" tls.log
U="https://127.0.0.1:$H/status"
C=(--cacert ca/ca.crt)
ok "plain HTTP gets no page" test "$(code "http://127.0.0.1:$H/status")" != 200
ok "no client certificate: 403" test "$(code "${C[@]}" "$U")" = 403
ok "a site's certificate: 403" test "$(code "${C[@]}" --cert ca/sites/site-a/site-a.crt --key ca/sites/site-a/site-a.key "$U")" = 403
ok "another CA's certificate: refused" test "$(code "${C[@]}" --cert ca2/sites/intruder/intruder.crt --key ca2/sites/intruder/intruder.key "$U")" != 200
ok "a revoked admin: 403" test "$(code "${C[@]}" --cert mallory.crt --key mallory.key "$U")" = 403
ok "an admin: 200" test "$(code "${C[@]}" --cert alice.crt --key alice.key "$U")" = 200
ok "...with the status" "$PY" -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d["state"] != "waiting")' \
  < <(curl -s --max-time 10 "${C[@]}" --cert alice.crt --key alice.key "$U")
ok "an admin's unknown path: 404" test "$(code "${C[@]}" --cert alice.crt --key alice.key "https://127.0.0.1:$H/x")" = 404
kill "$tpid"
wait_status "HTTPS coordinator stops cleanly" "$tpid" 0 tls.log
cat >json_check.py <<'EOF'
import json, re, sys
lines = open(sys.argv[1]).read().splitlines()
objs = [json.loads(l) for l in lines]  # every line one object
for o in objs:
    assert set(o) == {"time", "level", "message"}, o
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", o["time"]), o
    assert o["level"] in ("error", "warn", "info", "debug"), o
msgs = [(o["level"], o["message"]) for o in objs]
def has(level, pattern):
    assert any(l == level and re.search(pattern, m) for l, m in msgs), (level, pattern, msgs)
has("info", r"^coordinator on tcp://127\.0\.0\.1:\d+: ")
has("info", r"^monitoring on https://127\.0\.0\.1:%s \(/metrics, /status, /\)$" % sys.argv[2])
has("warn", r"^http: 127\.0\.0\.1:\d+ GET /status refused \(403\): no client certificate$")
has("warn", r"^http: 127\.0\.0\.1:\d+ GET /status refused \(403\): CN site-a: not an admin certificate \(no extended key usage 2\.25\.119735425215181750697262863098642166956\)$")
has("warn", r"refused \(403\): certificate refused: certificate revoked$")
has("info", r"^http: 127\.0\.0\.1:\d+ \(admin alice\) GET /status: 200$")
has("warn", r"^http: 127\.0\.0\.1:\d+ \(admin alice\) GET /x refused \(404\): no such page$")
print("ok", len(objs), "lines")
EOF
ok "log lines are JSON with the text fields, refusals and the admin named" pycheck json_check.py tls.log "$H"
# The text format of the same line: "TIME LEVEL: MESSAGE".
ok "text lines: time, level, message" grep -qE "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z info: monitoring on http://127.0.0.1:[0-9]+ \(/metrics, /status, /\)$" coord.log
report
