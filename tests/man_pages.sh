#!/usr/bin/env bash
# The manual pages the build made (packaging/gen-man.sh into <build>/man): one per command
# of `fedtune --help` plus fedtune(1) and fedtune-certs(1); each renders with man -l at
# MANWIDTH=80 without a warning, has its sections, and holds exactly the options its
# --help lists (every --name in the help is in the page and vice versa) with the defaults
# --help shows; the roff is escaped (no raw "--", no stray request lines) and the
# gzipped copies are the same pages. Then the generators on bad input.
# Usage: man_pages.sh <path to fedtune> <source dir> <man dir of the build>
set -u
FEDTUNE=$1
SRC=$2
MAN=$3
# shellcheck source=tests/lib.sh
. "$SRC/tests/lib.sh"
CERTS=$SRC/certs/fedtune-certs
command -v man >/dev/null || skip "man (Debian package man-db) is not installed"
[ -n "$PY" ] || skip "python3 is not installed"
export MANWIDTH=80 LC_ALL=C.UTF-8

# render <page>: the page as man shows it (no backspace overstrikes), warnings to $tmp/warn.
render() { man --warnings -l "$1" 2>"$tmp/warn" | col -bx; }

cmds=$("$FEDTUNE" --help | awk '/^commands:/ { on = 1; next } on && /^  [a-z]/ { print $1 } /^$/ { on = 0 }')
ok "fedtune --help lists the commands ($(echo "$cmds" | wc -l))" test "$(echo "$cmds" | wc -l)" -ge 16
want=$( (echo fedtune.1 fedtune-certs.1; for c in $cmds; do echo "fedtune-$c.1"; done) | tr ' ' '\n' | sort)
got=$(cd "$MAN/man1" && ls -- *.1 | sort)
ok_same "the pages are fedtune, fedtune-certs and one per command" "$got" "$want"

for f in "$MAN"/man1/*.1; do
  page=${f##*/}
  render "$f" >"$tmp/$page.txt"
  ok "$page renders without warnings: $(head -c 300 "$tmp/warn")" test ! -s "$tmp/warn"
  ok "$page renders to text" test "$(wc -l <"$tmp/$page.txt")" -gt 15
  for s in NAME SYNOPSIS DESCRIPTION "SEE ALSO"; do
    ok "$page has the section $s" grep -q "^$s\$" "$tmp/$page.txt"
  done
  # Escaped: every line starting with . or ' is one of the requests the generators use,
  # and no raw "--" (it must be \-\-) outside the comment line.
  bad=$(grep -n "^[.']" "$f" | grep -Ev "^[0-9]+:\\.(TH|SH|SS|TP|PP|br|nh|ad l|\\\\\")( |\$)" | head -3)
  ok_same "$page: no stray request lines: $bad" "${bad:-none}" none
  raw=$(grep -v '^\.\\"' "$f" | grep -c -- '--')
  ok_same "$page: no unescaped --" "$raw" 0
  ok "$page.gz is the same page" cmp -s "$f" <(gzip -dc "$MAN/gz/$page.gz")
done

# check_options <page text> <help text>: the same --names, and every "Default: D." of the
# page is the [D] of that option's --help line.
check_options() {
  "$PY" - "$1" "$2" <<'PYEOF'
import re, sys
page = open(sys.argv[1]).read()
helptext = open(sys.argv[2]).read()
names = lambda s: set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", s))
hp, pp = names(helptext), names(page)
# a switch's page says how to turn it off: --no-NAME
pp = {n for n in pp if not (n.startswith("--no-") and "--" + n[5:] in hp)}
if hp != pp:
    sys.exit("only in --help: %s; only in the page: %s" % (sorted(hp - pp), sorted(pp - hp)))
helpdef = {}
for line in helptext.splitlines():
    m = re.match(r"  (--[a-z][a-z0-9-]*)\b.*\[([^\]]*)\]$", line)
    if m:
        helpdef.setdefault(m.group(1), set()).add(m.group(2))
blocks = re.split(r"\n       (?=--[a-z])", page.split("\nOPTIONS", 1)[1].split("\nEXIT STATUS")[0])
seen = 0
for b in blocks[1:]:
    name = b.split()[0]
    text = " ".join(b.split())
    m = re.search(r"Default: (.*?)\.(?: |$)", text)
    if m:
        seen += 1
        if m.group(1) not in helpdef.get(name, ()):
            sys.exit("%s: the page's default %r, --help's %s" % (name, m.group(1), helpdef.get(name)))
if seen < 1 and helpdef:
    sys.exit("--help shows defaults, the page none")
print("%d options, %d defaults" % (len(hp), seen))
PYEOF
}

for c in $cmds; do
  page=$tmp/fedtune-$c.1.txt
  # A command with subcommands lists each in its synopsis: fedtune data info ...
  subs=$(awk -v c="$c" '$1 == "fedtune" && $2 == c && $3 ~ /^[a-z]+$/ { print $3 }' "$page")
  : >"$tmp/help.txt"
  if [ -n "$subs" ]; then
    for s in $subs; do "$FEDTUNE" "$c" "$s" --help >>"$tmp/help.txt"; done
  else
    "$FEDTUNE" "$c" --help >"$tmp/help.txt"
  fi
  ok "fedtune-$c.1 has OPTIONS, EXIT STATUS and FILES" \
    grep -q -e '^OPTIONS' -e '^EXIT STATUS$' -e '^FILES$' "$page"
  out=$(check_options "$page" "$tmp/help.txt" 2>&1)
  rc=$?
  ok_status "fedtune-$c.1 against fedtune $c --help: $out" "$rc" 0
done
# Spot checks of real values.
ok "coordinator: --rounds is an integer in [1, 1000000000], default 10" \
  grep -q 'An integer in \[1, 1000000000\]. Default: 10\.' "$tmp/fedtune-coordinator.1.txt"
ok "demo: --optimizer's choices" grep -q 'One of: sgd, adam, adamw. Default: adam\.' "$tmp/fedtune-demo.1.txt"
ok "fedtune(1) names every command's page" grep -q 'fedtune-coordinator(1)' "$tmp/fedtune.1.txt"
for c in $cmds; do
  ok "fedtune(1) lists fedtune $c" grep -q "^       fedtune $c\$" "$tmp/fedtune.1.txt"
done

# fedtune-certs(1): every --option of every command's --help, and the commands.
"$CERTS" --help >"$tmp/certs-help.txt"
certs_cmds=$(awk '/^commands:/ { on = 1; next } on && /^  [a-z]/ { print $1 } /^$/ { on = 0 }' "$tmp/certs-help.txt")
for c in $certs_cmds; do
  "$CERTS" "$c" --help >>"$tmp/certs-help.txt"
  ok "fedtune-certs(1) has the command $c" grep -q "^   $c\$" "$tmp/fedtune-certs.1.txt"
done
hn=$(grep -oE -- '--[a-z][a-z0-9-]*' "$tmp/certs-help.txt" | sort -u)
pn=$(grep -oE -- '--[a-z][a-z0-9-]*' "$tmp/fedtune-certs.1.txt" | sort -u)
ok_same "fedtune-certs(1) has the options of its --help" "$pn" "$hn"
ok "fedtune-certs(1): NAME from the help's first sentence" \
  grep -q 'fedtune-certs - makes and manages the certificates of a fedtune' "$tmp/fedtune-certs.1.txt"

# Bad input: fedtune --man, certs-man.awk, gen-man.sh.
expect 2 'fedtune --man: unknown command "frobnicate"' -- "$FEDTUNE" --man frobnicate
expect 2 "fedtune --man: takes at most one command name" -- "$FEDTUNE" --man demo train
expect 0 ".TH FEDTUNE\\-DEMO 1" -- "$FEDTUNE" --man demo
expect 0 ".SH NAME" -- "$FEDTUNE" demo --man
expect 1 'certs-man.awk: the help text does not start with "usage:"' -- \
  awk -v part=main -f "$SRC/packaging/certs-man.awk" "$SRC/packaging/certs-man.awk"
printf 'usage: x\n\n  just a list\n' >"$tmp/nodesc.txt"
expect 1 "certs-man.awk: the main help text has no description" -- \
  awk -v part=main -f "$SRC/packaging/certs-man.awk" "$tmp/nodesc.txt"
printf 'usage: x y\n\n.dot and -dash \\back\n' >"$tmp/esc.txt"
awk -v part=command -v name=x -f "$SRC/packaging/certs-man.awk" "$tmp/esc.txt" >"$tmp/esc.roff"
ok "certs-man.awk escapes a leading dot, hyphens and backslashes" \
  grep -qxF '\&.dot and \-dash \eback' "$tmp/esc.roff"
# A fedtune whose command cannot print its page: the build stops, naming it.
printf '#!/bin/sh\ncase "$*" in\n--man) echo .TH X 1 ;;\n--help) printf "commands:\\n  broken   b\\n" ;;\n*) exit 2 ;;\nesac\n' >"$tmp/fake"
chmod +x "$tmp/fake"
expect 1 'gen-man.sh: "'"$tmp"'/fake broken --man" failed' -- sh "$SRC/packaging/gen-man.sh" "$tmp/fake" "$CERTS" "$tmp/out"
ok "gen-man.sh left no output behind on failure" test ! -e "$tmp/out" -a ! -e "$tmp/out.tmp"
report
