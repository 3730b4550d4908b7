#!/bin/bash
# it-db-faults.sh - the database faults operators meet, each ending with
# every row present exactly once: outboxd's backend terminated in the
# middle of a transaction; a lock held past statement_timeout; the
# connection limit reached; the server crashing and coming back.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init db-faults
pg_start
s3_start
ob_setup
"$OUTBOXCTL" migrate >/dev/null
pg_psql -c "create role outboxd_agent login" -c "grant outboxd_writer to outboxd_agent" >/dev/null
admin_url=$DATABASE_URL
export DATABASE_URL=postgresql://outboxd_agent@127.0.0.1:$PG_PORT/outboxd
export OUTBOXD_DB_TIMEOUT_S=2
admin() { DATABASE_URL=$admin_url pg_psql "$@"; }
ob_start
j=$(new_job)
n=0
batch() {
	local i
	for i in $(seq 1 "$2"); do write_file "$j/$1/f$i.txt" "$1 $i"; done
	n=$((n + $2))
}
# hold_lock SECONDS: a session holding an exclusive lock on documents
hold_lock() {
	it_bg locker "$IT_PG_BINDIR/psql" -X -q -d "$admin_url" \
		-c "begin; lock table is_migration.documents in access exclusive mode; select pg_sleep($1); commit;"
	LOCKER=$IT_BG_PID
	wait_for 10 bash -c "[ \"\$(DATABASE_URL='$admin_url' '$IT_PG_BINDIR/psql' -X -At -d '$admin_url' -c \"select count(*) from pg_locks where relation = 'is_migration.documents'::regclass and mode = 'AccessExclusiveLock' and granted\")\" = 1 ]"
}
waiting_backend() {
	admin -c "select pid from pg_stat_activity where application_name = 'outboxd' and wait_event_type = 'Lock'" | head -1
}

# 1. pg_terminate_backend in the middle of a transaction
hold_lock 30
batch terminate 10
_blocked() { [ -n "$(waiting_backend)" ]; }
t_ok "outboxd's transaction waits on the lock" wait_for 20 _blocked
t_is "$(admin -c "select pg_terminate_backend($(waiting_backend))")" t "its backend is terminated mid-transaction"
it_stop "$LOCKER" TERM 5 || true
admin -c "select pg_terminate_backend(pid) from pg_stat_activity where query like '%pg_sleep%' and pid <> pg_backend_pid()" >/dev/null
t_ok "after the reconnect all rows arrive" ob_wait_idle 40 "$n"

# 1b. terminated in the middle of a batch: results the server sent for
# the documents before the one waiting must not count (nothing was
# committed). All ten go in one batch: written while outboxd is stopped,
# recorded by a run without the S3 leg, with the fifth one's row locked.
jb=$(new_job)
admin -c "insert into is_migration.jobs (id) values ('$jb')" >/dev/null
it_bg rowlock "$IT_PG_BINDIR/psql" -X -q -d "$admin_url" \
	-c "begin; insert into is_migration.documents (job_id, filename, document_type, file_path, file_size) values ('$jb', 'f5.txt', 'other', 'mid/f5.txt', 1); select pg_sleep(30); commit;"
ROWLOCK=$IT_BG_PID
ob_stop
for i in $(seq 1 10); do write_file "$jb/mid/f$i.txt" "mid batch $i"; done
touch -d '1 minute ago' "$UPLOADS/$jb"/mid/*
n=$((n + 10))
S3_BUCKET= ob_start
t_ok "the batch waits on one document's row lock" wait_for 20 _blocked
admin -c "select pg_terminate_backend($(waiting_backend))" >/dev/null
it_stop "$ROWLOCK" TERM 5 || true
admin -c "select pg_terminate_backend(pid) from pg_stat_activity where query like '%pg_sleep%' and pid <> pg_backend_pid()" >/dev/null
_mid_rows() { [ "$(admin -c "select count(*) from is_migration.documents where job_id = '$jb'")" = 10 ]; }
t_ok "after the reconnect all ten rows are recorded: none was taken for done when its batch died" \
	wait_for 40 _mid_rows
ob_stop
ob_start

# 2. a lock held past statement_timeout
hold_lock 5
batch timeout 10
_timed_out() { grep -q 'statement timeout' "$IT_DIR/outboxd.log"; }
t_ok "the statement times out after OUTBOXD_DB_TIMEOUT_S" wait_for 20 _timed_out
it_wait "$LOCKER" 20 || true
t_ok "and is retried when the lock is gone" ob_wait_idle 40 "$n"

# 3. the connection limit reached
admin -c "alter role outboxd_agent connection limit 0" \
	-c "select pg_terminate_backend(pid) from pg_stat_activity where usename = 'outboxd_agent'" >/dev/null
batch limit 10
_refused() { grep -q 'too many connections for role' "$IT_DIR/outboxd.log"; }
t_ok "the connection limit is met" wait_for 30 _refused
admin -c "alter role outboxd_agent connection limit -1" >/dev/null
t_ok "and the rows arrive once it is lifted" ob_wait_idle 40 "$n"

# 4. the server crashes and comes back
pg_stop immediate
batch crash 10
sleep 1
pg_up
t_ok "after a crash of PostgreSQL the rows arrive" ob_wait_idle 60 "$n"

t_is "$(ob_status failed)" 0 "nothing failed"
DATABASE_URL=$admin_url ob_check_db
DATABASE_URL=$admin_url t_is "$(admin -c 'select count(*) from is_migration.applied_events')" "$n" \
	"one applied event per file"
ob_stop
t_done
