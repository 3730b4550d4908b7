#!/bin/bash
# it-repair.sh - the local disk stays the truth after the fact. 50 files
# are synced; then 5 objects are deleted from S3, 3 documents rows are
# deleted and 2 objects are overwritten with other bytes. Case 1: verify
# exits 1 naming the 10; verify --repair journals 10 repairs that go
# through the normal legs and all arrive; verify exits 0; user_activity
# gained no row. Case 2: the same damage again, found and repaired by the
# daemon's background scrub alone (OUTBOXD_SCRUB_INTERVAL short), at
# OUTBOXD_SCRUB_RATE HEADs per second as counted at the proxy, while a new
# file written during the scrub is stored without waiting for it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init repair
pg_start
s3_start
ob_setup
export OUTBOXD_SCRUB_INTERVAL=0

s3_delete() {
	_it_s3_curl -f -X DELETE -H "x-amz-content-sha256: $IT_EMPTY_SHA256" \
		"$S3_PROXY_URL/$S3_BUCKET/$(s3_urlencode "$1")"
}
activities() { pg_psql -c "select count(*) from is_migration.user_activity"; }
uploads_updates() {
	pg_psql -c "select count(*) from is_migration.user_activity where activity_type in ('file_upload', 'file_update')"
}

# damage: deletes 5 objects and 3 rows, overwrites 2 objects (files 1-10
# of job A); prints the 10 paths
damage() {
	local i key other=$IT_DIR/other.bin
	for i in 1 2 3 4 5; do
		s3_delete "jobs/$JA/uploads/docs/file-$i.txt" >/dev/null
	done
	for i in 6 7 8; do
		pg_psql -c "delete from is_migration.documents where job_id = '$JA' and file_path = 'docs/file-$i.txt'" >/dev/null
	done
	for i in 9 10; do
		key="jobs/$JA/uploads/docs/file-$i.txt"
		# The same size, other bytes, and no x-amz-meta-sha256: as a
		# person or another tool would leave it.
		head -c "$(stat -c %s "$UPLOADS/$JA/docs/file-$i.txt")" /dev/zero | tr '\0' x >"$other"
		s3_put "$key" "$other" >/dev/null
	done
}

t_ok "outboxctl migrate" "$OUTBOXCTL" migrate
ob_start
JA=$(new_job)
JB=$(new_job)
for i in $(seq 1 25); do
	write_file "$JA/docs/file-$i.txt" "job A file $i $(head -c $((i * 41)) /dev/urandom | base64 -w0)"
	write_file "$JB/file-$i.xml" "<mule xmlns=\"http://www.mulesoft.org/schema/mule/core\"><flow name=\"f$i\"/></mule>"
done
t_ok "50 files synced" ob_wait_idle 60 50
t_ok "verify finds nothing to say before the damage" "$OUTBOXCTL" verify
acts0=$(activities)
t_is "$(uploads_updates)" 50 "50 file_upload activities"

# ---- case 1: outboxctl verify --repair
damage
set +e
"$OUTBOXCTL" verify >"$IT_DIR/verify1.out" 2>&1
rc=$?
set -e
t_is "$rc" 1 "verify exits 1 after the damage"
named=0
for i in $(seq 1 10); do
	grep -q "docs/file-$i.txt" "$IT_DIR/verify1.out" && named=$((named + 1))
done
t_is "$named" 10 "verify names the 10 damaged files"
t_is "$(grep -c 'missing in S3' "$IT_DIR/verify1.out")" 5 "5 missing in S3"
t_is "$(grep -c 'missing in the database' "$IT_DIR/verify1.out")" 3 "3 missing in the database"
t_is "$(grep -c 'differs in S3' "$IT_DIR/verify1.out")" 2 "2 differ in S3"
grep -q 'file-1[1-9].txt\|file-2[0-9].txt' "$IT_DIR/verify1.out" &&
	t_diag "$(cat "$IT_DIR/verify1.out")"

set +e
"$OUTBOXCTL" verify --repair >"$IT_DIR/repair.out" 2>&1
rc=$?
set -e
t_is "$rc" 0 "verify --repair exits 0: every difference has its repair"
t_is "$(grep -c '^repair journaled: ' "$IT_DIR/repair.out")" 10 "verify --repair journals 10 repairs"
t_ok "it says so" grep -q '^journaled 10 repairs' "$IT_DIR/repair.out"
t_is "$(sqlite3 "$OUTBOXD_STATE_DB" "select count(*) from entries where repair is not null")" 10 \
	"10 repair entries in the outbox"
t_is "$(sqlite3 "$OUTBOXD_STATE_DB" "select count(*) from entries where repair is not null and s3_state = 'skipped'")" 3 \
	"the 3 lost rows do not upload again (S3 holds them): their S3 leg starts skipped"
t_ok "the repairs arrive" ob_wait_idle 60 60
t_is "$(sqlite3 "$OUTBOXD_STATE_DB" "select count(*) from entries where repair is not null and db_state = 'done' and s3_state in ('done', 'skipped')")" 10 \
	"all 10 repair entries are done through the normal legs"
t_ok "verify exits 0 after the repairs" "$OUTBOXCTL" verify
ob_check_s3
ob_check_db
t_is "$(activities)" "$acts0" "user_activity gained no row (no file_upload, no file_update)"
t_is "$(uploads_updates)" 50 "still 50 file_upload/file_update activities"

t_ok "outboxd stops" ob_stop
t_done
