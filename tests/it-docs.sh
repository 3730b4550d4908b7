#!/bin/bash
# it-docs.sh - the documentation a Debian admin reaches for: the manual
# pages outboxd(8), outboxctl(8) and outboxd.env(5) format without a
# single groff or man warning, outboxd.env(5) names every variable
# config/cfg.c reads, `make install` puts the pages and the bash
# completion where man and bash-completion look; every outboxctl verb
# answers `help VERB` and `VERB --help` (exit 0), and the completion
# offers exactly the verbs the usage text lists, and each verb's options.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
it_init docs
MAN=$abs_top_srcdir/man
COMP=$abs_top_srcdir/packaging/bash-completion

for page in outboxd.8 outboxctl.8 outboxd.env.5; do
	out=$( { groff -ww -b -z -man "$MAN/$page"; LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$MAN/$page" >/dev/null; } 2>&1)
	t_is "$out" "" "$page: groff -ww and man --warnings print nothing"
done

# The variables cfg.c reads: every quoted NAME in it that looks like one.
vars=$(grep -oE '"(OUTBOXD|AWS|S3|PG|DATABASE|VCAP)[A-Z0-9_]*"' "$abs_top_srcdir/config/cfg.c" | tr -d '"' | sort -u)
# An entry is a .TP paragraph whose tag (the line after .TP) names it.
tags=$(awk 'tp { print; tp = 0 } /^\.TP/ { tp = 1 }' "$MAN/outboxd.env.5")
missing=$(for v in $vars OUTBOXD_DEBUG; do grep -qw -- "$v" <<<"$tags" || echo "$v"; done)
t_is "$missing" "" "outboxd.env(5) has an entry for each of the $(wc -w <<<"$vars") variables cfg.c reads"

# --- make install
make -s -C "$abs_top_builddir" install DESTDIR="$IT_DIR/root" >"$IT_DIR/install.log" 2>&1 ||
	_it_diag_file "$IT_DIR/install.log"
for f in man8/outboxd.8 man8/outboxctl.8 man5/outboxd.env.5; do
	t_is "$(find "$IT_DIR/root" -path "*/share/man/$f" | wc -l)" 1 "make install installs share/man/$f"
done
for f in outboxctl outboxd; do
	t_is "$(find "$IT_DIR/root" -path "*/share/bash-completion/completions/$f" | wc -l)" 1 \
		"and the $f completion in bash-completion's completionsdir"
done
mp=$(dirname "$(dirname "$(find "$IT_DIR/root" -path '*/man8/outboxd.8')")")
t_ok "man finds the installed page by name" bash -c "MANPATH='$mp' man -w outboxd.env | grep -q 'man5/outboxd.env.5'"

# --- per-verb help
verbs=$("$OUTBOXCTL" help | awk '/^  [a-z]/ { print $1 }' | sort -u)
t_ok "the usage text lists verbs" test -n "$verbs"
for v in $verbs; do
	rc=0
	"$OUTBOXCTL" help "$v" >"$IT_DIR/h1" 2>&1 || rc=$?
	t_is "$rc" 0 "outboxctl help $v exits 0"
	rc=0
	"$OUTBOXCTL" "$v" --help >"$IT_DIR/h2" 2>&1 || rc=$?
	t_is "$rc" 0 "outboxctl $v --help exits 0"
	t_ok "and both print its usage" bash -c "grep -q '^usage: outboxctl .* $v' '$IT_DIR/h1' && cmp -s '$IT_DIR/h1' '$IT_DIR/h2'"
	t_ok "outboxctl(8) describes $v" grep -Eq "^(\\\\fB|\\.B[IR]? )$v\\b" "$MAN/outboxctl.8"
done
rc=0
"$OUTBOXCTL" help nosuch >/dev/null 2>&1 || rc=$?
t_is "$rc" 64 "help of no such verb exits 64"
t_ok "retry --help needs no configuration" env OUTBOXD_CONCURRENCY=x "$OUTBOXCTL" retry --help

# --- bash completion
[ -f /usr/share/bash-completion/bash_completion ] || t_bail "bash-completion is not installed"
# complete LINE: what bash would offer for LINE (its last word completed)
complete_line() {
	bash -c '. /usr/share/bash-completion/bash_completion; . "$1/outboxctl"
	read -ra COMP_WORDS <<<"$2"; [[ $2 == *" " ]] && COMP_WORDS+=("")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1)) COMP_LINE=$2 COMP_POINT=${#2}
	_outboxctl outboxctl; printf "%s\n" "${COMPREPLY[@]}" | sort' _ "$COMP" "$1"
}
t_is "$(complete_line 'outboxctl ' | grep -v '^-' | tr '\n' ' ')" "$(tr '\n' ' ' <<<"$verbs")" "the completion offers exactly the usage text's verbs"
t_is "$(complete_line 'outboxctl --env-file x.env ve')" verify "after --env-file FILE too"
t_is "$(complete_line 'outboxctl list --state f' | tr '\n' ' ')" "failed " "list --state completes the states"
t_is "$(complete_line 'outboxctl verify --' | tr '\n' ' ')" "--help --job --repair " "verify's options"
t_is "$(complete_line 'outboxctl help re' | tr '\n' ' ')" "rescan retry " "help completes verbs"
t_ok "outboxd's completion loads" bash -c ". /usr/share/bash-completion/bash_completion; . '$COMP/outboxd'; complete -p outboxd"
t_done
