#!/bin/bash
# it-outage.sh - one leg failing never blocks the other, and both catch
# up: with S3 unreachable, files still reach PostgreSQL (ETag filled in
# later); with PostgreSQL stopped, files still reach S3; when each comes
# back, everything arrives exactly once. While a store is down outboxd
# probes it with backoff instead of hammering it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init outage
pg_start
s3_start
ob_setup
ob_start

j=$(new_job)
# --- S3 down
s3_down
for i in $(seq 1 20); do write_file "$j/s3-down/f$i.txt" "s3 was down $i"; done
_db_rows() { [ "$(pg_psql -c "select count(*) from is_migration.documents where file_path like 's3-down/%'")" = "$1" ]; }
t_ok "with S3 down, all 20 files reach PostgreSQL" wait_for 30 _db_rows 20
t_is "$(pg_psql -c "select count(*) from is_migration.documents where etag is null")" 20 \
	"their ETags are not known yet"
t_is "$(ob_status s3 pending)" 20 "the S3 legs wait"
before=$(grep -c 'attempt [0-9]* failed' "$IT_DIR/outboxd.log" || true)
sleep 3
attempts=$(( $(grep -c 'attempt [0-9]* failed' "$IT_DIR/outboxd.log" || true) - before ))
# One probe at a time with backoff (100 ms doubling to 2 s here): a
# handful of attempts in 3 s, where a retry loop would make hundreds.
t_ok "S3 is probed, not hammered: $attempts attempts in 3 s" test "$attempts" -le 10
s3_up
t_ok "S3 back: the backlog drains" ob_wait_idle 60 20
_etags_filled() { [ "$(pg_psql -c "select count(*) from is_migration.documents where etag is null")" = 0 ]; }
t_ok "the ETags are recorded once S3 has them" wait_for 20 _etags_filled

# --- PostgreSQL down
pg_stop
for i in $(seq 1 20); do write_file "$j/db-down/f$i.txt" "the database was down $i"; done
_s3_objects() { [ "$(s3_list "jobs/$j/uploads/db-down/" | wc -l)" = "$1" ]; }
t_ok "with PostgreSQL down, all 20 files reach S3" wait_for 30 _s3_objects 20
# One of them may be in flight as the paused leg's probe at this moment.
_db_waiting() {
	local j
	j=$("$OUTBOXCTL" status --json) || return 1
	echo $(($(json_get db pending <<<"$j") + $(json_get db in_flight <<<"$j")))
}
t_is "$(_db_waiting)" 20 "the database legs wait (pending, one maybe in flight as the probe)"
pg_up
t_ok "PostgreSQL back: the backlog drains" ob_wait_idle 60 40
t_is "$(ob_status failed)" 0 "nothing failed"
ob_check_s3
ob_check_db
ob_stop
t_done
