#!/bin/bash
# it-crash.sh - kill -9 outboxd three times while a stream of 300 files is
# being written, restart it each time: in the end every file is in S3 with
# identical bytes, and has exactly one documents row and one file_upload
# activity (the outbox event ids make replays harmless).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init crash
pg_start
s3_start
ob_setup

jobs=($(new_job) $(new_job) $(new_job))
writer() {
	local i
	for i in $(seq 1 300); do
		write_file "${jobs[$((i % 3))]}/stream/file-$i.dat" "$(head -c $((100 + i * 13)) /dev/urandom | base64 -w0)"
		sleep 0.01
	done
}
ob_start
writer &
writer_pid=$!
it_track "$writer_pid"
kills=0
for round in 1 2 3; do
	sleep "0.$((RANDOM % 6 + 3))"
	ob_kill
	kills=$((kills + 1))
	sleep 0.2
	ob_start
done
it_wait "$writer_pid" 120
t_is "$kills" 3 "outboxd was killed with SIGKILL three times mid-stream"
t_ok "after the last restart everything drains" ob_wait_idle 90 300
t_is "$(ob_status failed)" 0 "nothing failed"
t_is "$(ls "$UPLOADS"/*/stream | grep -c '^file-')" 300 "300 files were written"
ob_check_s3
ob_check_db
t_is "$(pg_psql -c "select count(*) from is_migration.applied_events")" \
	"$(pg_psql -c "select count(*) from is_migration.user_activity")" \
	"one activity per applied event: no replay applied twice"
ob_stop
t_done
