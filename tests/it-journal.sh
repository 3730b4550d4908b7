#!/bin/bash
# it-journal.sh - outboxd under journald, with a real systemd-journald run
# in a private mount namespace (its own /run and /var/log, so the host's
# journal, if any, is untouched) and outboxd started as systemd starts a
# service: stdout and stderr on a journal stream (systemd-cat) and
# JOURNAL_STREAM naming it. Proves: configuration errors are filed at
# priority err (journalctl -p err shows them); a job's lines carry the
# fields OUTBOXD_JOB, OUTBOXD_PATH, OUTBOXD_LEG and OUTBOXD_ENTRY, so
# `journalctl OUTBOXD_JOB=<job>` finds that job's story and nothing else;
# a retried failure is a warning, the start-up lines info.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init journal
JOURNALD=/lib/systemd/systemd-journald
[ -x "$JOURNALD" ] && command -v systemd-cat >/dev/null && command -v journalctl >/dev/null ||
	t_bail "systemd-journald, systemd-cat and journalctl are needed (apt-get install systemd)"
s3_start
ob_setup
j=$(new_job) other=$(new_job)
write_file "$j/a.xml" "<a/>"
write_file "$j/docs/b.md" "b"
write_file "$other/c.xml" "<c/>"
s3_fault '{"type":"slowdown","count":1,"method":"PUT","match":"/a.xml"}'
export J_OUT=$IT_DIR/journal J=$j
mkdir -p "$J_OUT"

rc=0
unshare -m bash -s >"$IT_DIR/ns.log" 2>&1 <<'NS' || rc=$?
set -eu
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs /var/log
mkdir -p /run/systemd/journal
/lib/systemd/systemd-journald &
jpid=$!
trap 'kill $jpid; wait $jpid || true' EXIT
for _ in $(seq 100); do [ -S /run/systemd/journal/stdout ] && break; sleep 0.1; done
# as systemd runs a service: the stream, and JOURNAL_STREAM=dev:inode of it
as_service() {
	systemd-cat -t outboxd -- bash -c 'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$@"' _ "$@"
}
rc=0; as_service env OUTBOXD_CONCURRENCY=x "$OUTBOXD" -n || rc=$?
echo "$rc" >"$J_OUT/check.rc"
rc=0; as_service "$OUTBOXD" --once || rc=$?
echo "$rc" >"$J_OUT/once.rc"
journalctl --sync
journalctl --no-pager -o cat -p err >"$J_OUT/err.txt"
journalctl --no-pager -o json --output-fields=MESSAGE,PRIORITY,OUTBOXD_JOB,OUTBOXD_PATH,OUTBOXD_LEG,OUTBOXD_ENTRY,SYSLOG_IDENTIFIER,_TRANSPORT \
	SYSLOG_IDENTIFIER=outboxd >"$J_OUT/all.json"
journalctl --no-pager -o cat OUTBOXD_JOB="$J" >"$J_OUT/job.txt"
journalctl --no-pager -o verbose OUTBOXD_JOB="$J" >"$J_OUT/job-verbose.txt"
NS
t_is "$rc" 0 "journald ran in its namespace and outboxd under it"
[ "$rc" = 0 ] || _it_diag_file "$IT_DIR/ns.log"
t_is "$(cat "$J_OUT/check.rc")" 78 "outboxd -n with a bad variable exits 78"
t_ok "journalctl -p err shows the configuration error" grep -q 'configuration: OUTBOXD_CONCURRENCY=x: not a whole number' "$J_OUT/err.txt"
t_is "$(cat "$J_OUT/once.rc")" 0 "outboxd --once stores everything"
# field VALUE... of the JSON lines whose MESSAGE matches a pattern
jq_py() { /usr/bin/python3 -c "import json, re, sys
rows = [json.loads(l) for l in open('$J_OUT/all.json')]
$1"; }
t_ok "every outboxd line is a native journal entry with its priority" jq_py "
assert rows and all(r['_TRANSPORT'] == 'journal' and r['PRIORITY'] in '01234567' for r in rows), rows"
t_ok "the stored line of a.xml carries job, path, leg and entry" jq_py "
r = [r for r in rows if re.search('stored s3://.*/a.xml', r['MESSAGE'])]
assert len(r) == 1, rows
r = r[0]
assert (r['OUTBOXD_JOB'], r['OUTBOXD_PATH'], r['OUTBOXD_LEG'], r['PRIORITY']) == ('$j', '$j/a.xml', 's3', '6'), r
assert int(r['OUTBOXD_ENTRY']) > 0, r"
t_ok "the retried SlowDown is a warning with the same fields" jq_py "
r = [r for r in rows if 'will retry' in r['MESSAGE']]
assert len(r) == 1 and r[0]['PRIORITY'] == '4' and r[0]['OUTBOXD_PATH'] == '$j/a.xml' and r[0]['OUTBOXD_LEG'] == 's3', rows"
t_ok "the configuration error is at err (3)" jq_py "
assert any('OUTBOXD_CONCURRENCY=x' in r['MESSAGE'] and r['PRIORITY'] == '3' for r in rows)"
t_ok "start-up lines are info (6)" jq_py "
assert all(r['PRIORITY'] == '6' for r in rows if 'watching' in r['MESSAGE'])"
t_ok "journalctl OUTBOXD_JOB=<job> finds its two files" bash -c "grep -q '$j/a.xml' '$J_OUT/job.txt' && grep -q '$j/docs/b.md' '$J_OUT/job.txt'"
t_ok "and nothing of the other job" bash -c "! grep -q '$other' '$J_OUT/job.txt'"
# Without the native socket (outside the namespace) the stream carries the
# lines, each with its sd-daemon(3) "<N>" prefix.
bash -c 'exec 2>>"$1"; export JOURNAL_STREAM=$(stat -c %d:%i "$1"); shift; exec "$@"' _ \
	"$IT_DIR/stream.txt" env OUTBOXD_CONCURRENCY=x "$OUTBOXD" -n || true
t_ok "on the stream a configuration error starts <3>" grep -q '^<3>outboxd: error: configuration: OUTBOXD_CONCURRENCY=x' "$IT_DIR/stream.txt"
t_ok "and every line has a priority prefix" bash -c "[ -s '$IT_DIR/stream.txt' ] && ! grep -qv '^<[0-7]>' '$IT_DIR/stream.txt'"
t_diag "journalctl -o verbose OUTBOXD_JOB=$j (first entry):"
sed -n '1,/^$/p' "$J_OUT/job-verbose.txt" | head -20 | sed 's/^/  /' | while IFS= read -r l; do t_diag "$l"; done
t_done
