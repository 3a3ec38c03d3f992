#!/usr/bin/env bash
# The front page's commands run as printed: the README's "A federation in three
# terminals" block is read out of README.md, and every line of it runs, with only three
# substitutions a test needs (the folder /tmp/fed -> a temporary one, the port 7443 -> a
# free one, build/release/bin/fedtune -> the binary under test). The coordinator's
# command runs in the background, each site's too; the coordinator must finish its 5
# rounds and export the model, both sites must exit 0. The links of every Markdown file
# the front page points to must resolve.
#   readme_test.sh <fedtune binary> <source root>
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/lib.sh"
fedtune=$1
root=$2
[ -n "$PY" ] || skip "python3 is needed for a free port"

# The block: the ```sh fence after the heading, up to the closing fence.
block=$(awk '/^## A federation in three terminals/ { on = 1 } on && /^```sh/ { inb = 1; next }
  inb && /^```/ { exit } inb { print }' "$root/README.md")
ok "README.md has the three-terminal block" test -n "$block"
ok "the block starts three programs" test "$(grep -c -E 'fedtune (coordinator|client) ' <<<"$block")" -eq 3

p=$(port)
script=$tmp/block.sh
# Join continued lines, then make the coordinator and the clients background jobs.
sed -e "s#/tmp/fed#$tmp/fed#g" -e "s#tcp://127.0.0.1:7443#tcp://127.0.0.1:$p#g" \
  -e "s#build/release/bin/fedtune#$fedtune#g" -e "s#certs/fedtune-certs#$root/certs/fedtune-certs#g" \
  -e "s#tests/data/#$root/tests/data/#g" <<<"$block" |
  awk '{ if (sub(/\\$/, "")) { acc = acc $0; next } print acc $0; acc = "" }' |
  awk -v t="$tmp" 'function bg(cmd, f) { print "(" cmd " >" t "/" f ".log 2>&1; echo $? >" t "/" f ".rc) & echo $! >" t "/" f ".pid" }
       / coordinator --listen/ { bg($0, "coord"); next }
       / client --coordinator/ { bg($0, "site" (++n)); next }
       { print }' >"$script"
ok "every program of the block runs in the background" test "$(grep -c '& echo' "$script")" -eq 3
mkdir -p "$tmp/fed"
run_status "the block's set-up commands and starts" 0 "$tmp/block.log" -- bash -e "$script"
for f in coord site1 site2; do
  if [ -s "$tmp/$f.pid" ]; then pids+=("$(cat "$tmp/$f.pid")"); fi
done
# The processes are not children of this shell: wait for them by polling.
gone() { ! kill -0 "$1" 2>/dev/null; }
for f in coord site1 site2; do
  pid=$(cat "$tmp/$f.pid" 2>/dev/null)
  ok "$f started" test -n "$pid"
  [ -n "$pid" ] && ok "$f ended within 90 s" wait_for 90 gone "$pid"
done
ok_status "the coordinator's exit status" "$(cat "$tmp/coord.rc" 2>/dev/null)" 0 "$tmp/coord.log"
ok "the coordinator ran 5 rounds" grep -q "round 5/5" "$tmp/coord.log"
ok "the final model was exported" test -s "$tmp/fed/final.safetensors"
for f in site1 site2; do
  ok_status "$f's exit status" "$(cat "$tmp/$f.rc" 2>/dev/null)" 0 "$tmp/$f.log"
  ok "$f heard the federation end, no round failed" \
    grep -q "the coordinator ended the federation after 5 rounds (0 failed, 0 dropped)" "$tmp/$f.log"
done
if ((fail)); then for f in coord site1 site2; do tail -n 5 "$tmp/$f.log" >&2; done; fi

# Links on the front page and in the docs it points to resolve.
"$PY" - "$root" >"$tmp/links.txt" 2>&1 <<'EOF'
import os, re, sys
root = sys.argv[1]
bad = 0
files = [os.path.join(root, "README.md")] + [os.path.join(root, "docs", f)
         for f in sorted(os.listdir(os.path.join(root, "docs"))) if f.endswith(".md")]
for f in files:
    for t in re.findall(r"\]\(([^)\s]+)\)", open(f, encoding="utf-8").read()):
        if t.startswith(("http://", "https://", "#", "mailto:")):
            continue
        path = os.path.normpath(os.path.join(os.path.dirname(f), t.split("#")[0]))
        if not os.path.exists(path):
            print("%s: broken link %s" % (os.path.relpath(f, root), t))
            bad += 1
print("checked %d files" % len(files))
sys.exit(1 if bad else 0)
EOF
rc=$?
ok_status "every relative link of README.md and docs/*.md resolves" "$rc" 0 "$tmp/links.txt"
report
