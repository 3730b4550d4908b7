#!/bin/bash
# it-retention.sh - retention against the real stores (issue 11): files
# stored by the daemon (S3 through the verifying proxy, PostgreSQL), their
# entries made old, then a restart with OUTBOXD_RETENTION=30d prunes the
# done ones and keeps a failed and a pending one; a restart's rescan
# journals none of the pruned paths again (no new entry, no new activity
# row, no new PUT); outboxctl show says an entry was pruned, list and
# status count them; a changed file is still journaled as a new version.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init retention
pg_start
s3_start
ob_setup
"$OUTBOXCTL" migrate >/dev/null

j=$(new_job)
for i in 1 2 3 4 5; do write_file "$j/f$i.xml" "<f$i/>"; done
export OUTBOXD_RETENTION=0
ob_start
t_ok "five files are stored" ob_wait_idle 30 5
ob_stop
t_is "$(pg_psql -c "select count(*) from is_migration.user_activity")" 5 \
	"five activity rows"

# Make every entry 40 days old; entry 4's S3 leg failed, entry 5's is
# pending (its file stays as it is).
old=$(date -u -d '-40 days' +%Y-%m-%dT%H:%M:%S.000Z)
sqlite3 "$OUTBOXD_STATE_DB" "UPDATE entries SET journaled_at = '$old', updated_at = '$old';
	UPDATE entries SET s3_state = 'failed', s3_error = 'HTTP 403 AccessDenied' WHERE id = 4;
	UPDATE entries SET db_state = 'pending' WHERE id = 5;"

export OUTBOXD_RETENTION=30d
export OUTBOXD_METRICS_FILE=$IT_DIR/outboxd.prom
ob_start
_pruned() { grep -q 'retention: pruned 3 done entries older than 30d' "$IT_DIR/outboxd.log"; }
t_ok "the daemon prunes the 3 done entries older than 30 days" wait_for 30 _pruned
_metric_pruned() { grep -qx 'outboxd_entries_pruned_total 3' "$OUTBOXD_METRICS_FILE" 2>/dev/null; }
t_ok "the metrics count the 3 pruned entries (outboxd_entries_pruned_total)" wait_for 30 _metric_pruned
unset OUTBOXD_METRICS_FILE
ob_wait_idle 30 >/dev/null || true
ob_stop
t_is "$(sqlite3 "$OUTBOXD_STATE_DB" "SELECT group_concat(id) FROM (SELECT id FROM entries ORDER BY id)")" \
	"4,5" "the failed entry and the pending one are kept (and nothing new was journaled)"
t_is "$(sqlite3 "$OUTBOXD_STATE_DB" "SELECT count(*) FROM files")" 5 "the files table keeps every path"
t_is "$(ob_status pruned)" 3 "status --json counts 3 pruned"
t_ok "outboxctl status says so" bash -c "'$OUTBOXCTL' status | grep -q '^pruned:   3 done entries older than the retention'"
t_ok "outboxctl show 1 says entry 1 was pruned" bash -c \
	"'$OUTBOXCTL' show 1 | grep -q '^entry 1 was pruned: it was done'"
t_ok "outboxctl list says 3 were pruned" bash -c \
	"'$OUTBOXCTL' list | grep -q '(3 done entries older than the retention (OUTBOXD_RETENTION) were pruned: not listed)'"
rc=0; "$OUTBOXCTL" show 99 >/dev/null 2>&1 || rc=$?
t_is "$rc" 65 "an id that never existed is still an error (65)"

# A rescan of the unchanged tree journals nothing again; a changed file
# is a new version.
ob_start
t_is "$(sqlite3 "$OUTBOXD_STATE_DB" "SELECT count(*) FROM entries")" 2 \
	"a restart's rescan journals none of the pruned paths again"
write_file "$j/f1.xml" "<f1 changed=\"yes\"/>"
_v2() { [ "$(sqlite3 "$OUTBOXD_STATE_DB" "SELECT count(*) FROM entries WHERE path = '$j/f1.xml' AND version = 2 AND s3_state = 'done' AND db_state = 'done'")" = 1 ]; }
t_ok "a changed pruned path is journaled and stored as version 2" wait_for 30 _v2
ob_stop
t_is "$(pg_psql -c "select count(*) from is_migration.user_activity")" 6 \
	"one activity row more (the new version), none for the pruned ones"
t_is "$(pg_psql -c "select count(*) from is_migration.user_activity where activity_type = 'file_update'")" 1 \
	"and it is a file_update"
t_done
