#!/bin/sh
# Makes the manual pages (the build runs it after fedtune is linked; cmake/FedInstall.cmake):
#   fedtune(1)             `fedtune --man`, the commands of `fedtune --help`
#   fedtune-<command>(1)   `fedtune <command> --man`, from that command's option table
#   fedtune-certs(1)       from the --help texts of fedtune-certs and of each of its
#                          commands (packaging/certs-man.awk turns them into roff)
# into OUTDIR/man1/*.1 and gzipped copies (gzip -9n, as Debian wants) in OUTDIR/gz/,
# built in OUTDIR.tmp and renamed, with OUTDIR/stamp last.
# Usage: gen-man.sh FEDTUNE CERTS-SCRIPT OUTDIR
set -eu
[ $# -eq 3 ] || { echo "usage: gen-man.sh FEDTUNE CERTS-SCRIPT OUTDIR" >&2; exit 2; }
fedtune=$1 certs=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
tmp=$out.tmp
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT # a failed run leaves neither the half-made folder nor a stamp
mkdir -p "$tmp/man1" "$tmp/gz"

# page <file> <command...>: the command's roff output into file; it must be a page.
page() {
  f=$1
  shift
  if ! "$@" >"$f"; then
    echo "gen-man.sh: \"$*\" failed (a command with subcommands answers --man itself: see cli/cmd_data.c)" >&2
    exit 1
  fi
  grep -q '^\.TH ' "$f" || { echo "gen-man.sh: \"$*\" printed no manual page" >&2; exit 1; }
}

page "$tmp/man1/fedtune.1" "$fedtune" --man
cmds=$("$fedtune" --help | awk '/^commands:/ { on = 1; next } on && /^  [a-z]/ { print $1 } /^$/ { on = 0 }')
[ -n "$cmds" ] || { echo "gen-man.sh: fedtune --help lists no command" >&2; exit 1; }
for cmd in $cmds; do
  page "$tmp/man1/fedtune-$cmd.1" "$fedtune" "$cmd" --man
done

# fedtune-certs(1): the main help, then each command's.
version=$("$fedtune" --version | sed -n '1s/^fedtune //p')
certs_cmds=$("$certs" --help | awk '/^commands:/ { on = 1; next } on && /^  [a-z]/ { print $1 } /^$/ { on = 0 }')
[ -n "$certs_cmds" ] || { echo "gen-man.sh: fedtune-certs --help lists no command" >&2; exit 1; }
for cmd in $certs_cmds; do
  "$certs" "$cmd" --help | sed -n '1s/^usage: //p'
done >"$tmp/usages"
{
  "$certs" --help | awk -v part=main -v version="$version" -v usages="$tmp/usages" \
    -f "$here/certs-man.awk"
  for cmd in $certs_cmds; do
    "$certs" "$cmd" --help | awk -v part=command -v name="$cmd" -f "$here/certs-man.awk"
  done
  awk -v part=end -f "$here/certs-man.awk" </dev/null
} >"$tmp/man1/fedtune-certs.1"

rm "$tmp/usages"
for f in "$tmp"/man1/*.1; do
  gzip -9n -c "$f" >"$tmp/gz/${f##*/}.gz"
done
touch "$tmp/stamp"
rm -rf "$out"
mv "$tmp" "$out"
