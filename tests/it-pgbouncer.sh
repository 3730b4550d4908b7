#!/bin/bash
# it-pgbouncer.sh - the whole database leg through pgbouncer in
# transaction mode (as Supabase's transaction pooler): no named prepared
# statement, no session state, pipelined batches; files, job.json and
# replays after a kill -9 are all recorded exactly once.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init pgbouncer
pg_start
pgbouncer_start
s3_start
ob_setup
admin_url=$DATABASE_URL
export DATABASE_URL=$PGBOUNCER_URL
t_ok "migrate through pgbouncer" "$OUTBOXCTL" migrate
ob_start
jobs=()
for k in 1 2 3; do
	j=$(new_job)
	jobs+=("$j")
	for i in $(seq 1 100); do write_file "$j/d/f$i.txt" "through the pooler $k $i"; done
	printf '{"status":"queued","user_id":"3b241101-e2bb-4255-8caf-4136c566a962"}' >"$UPLOADS/$j/job.json"
done
sleep 0.5
ob_kill
ob_start
t_ok "300 files through pgbouncer" ob_wait_idle 60 303
t_is "$(ob_status failed)" 0 "nothing failed"
t_is "$(DATABASE_URL=$admin_url pg_psql -c "select count(*) from is_migration.jobs where status = 'queued'")" 3 \
	"job.json applied through the pooler"
t_ok "no prepared statement or session trouble in the log" \
	bash -c "! grep -qi 'prepared statement\|does not exist' '$IT_DIR/outboxd.log'"
DATABASE_URL=$admin_url ob_check_s3
DATABASE_URL=$admin_url ob_check_db
ob_stop
t_done
