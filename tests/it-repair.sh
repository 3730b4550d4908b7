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
# Objects put into the bucket with no local file (one with a hostile name,
# 1,100 more so the listing takes two pages) are listed by verify as "in
# S3 only", are not differences, and --repair leaves them untouched.
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
# Objects with no local file: put straight into the bucket. One has a name
# that would forge a line of verify's output if printed raw; 1,100 more
# are copies made in s3rver's data directory (as fast as cp), so that the
# listing needs a continuation token.
JC=$(new_job)
orphan_a="jobs/$JA/uploads/docs/only-in-s3.txt"
orphan_evil="jobs/$JB/uploads/x"$'\n'"missing in S3: forged.txt"
orphan_odd="jobs/$JA/uploads/results/not-a-path.xml"
printf 'put by someone else' >"$IT_DIR/orphan.bin"
for k in "$orphan_a" "$orphan_evil" "$orphan_odd" "jobs/$JC/uploads/bulk/o-0.txt"; do
	s3_put "$k" "$IT_DIR/orphan.bin" >/dev/null
done
/usr/bin/python3 - "$S3_DATA_DIR/$S3_BUCKET/jobs/$JC/uploads/bulk" <<'PY'
import os, shutil, sys
d = sys.argv[1]
for i in range(1, 1100):
    for f in os.listdir(d):
        if f.startswith('o-0.txt._S3rver_'):
            shutil.copyfile(os.path.join(d, f), os.path.join(d, f.replace('o-0.txt', 'o-%d.txt' % i)))
PY
t_is "$(s3_list "jobs/$JC/" | wc -l)" 1100 "1,100 objects of a job with no local directory"
etag_a=$(s3_head "$orphan_a" | grep -i '^etag:')
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
t_is "$(grep -c '^missing in S3' "$IT_DIR/verify1.out")" 5 "5 missing in S3"
t_is "$(grep -c 'missing in the database' "$IT_DIR/verify1.out")" 3 "3 missing in the database"
t_is "$(grep -c 'differs in S3' "$IT_DIR/verify1.out")" 2 "2 differ in S3"
grep -q 'file-1[1-9].txt\|file-2[0-9].txt' "$IT_DIR/verify1.out" &&
	t_diag "$(cat "$IT_DIR/verify1.out")"
t_is "$(grep -c '^in S3 only: .*(kept; deletions are not propagated)$' "$IT_DIR/verify1.out")" 1103 \
	"verify lists the 1,103 objects with no local file (2 listing pages)"
t_ok "by their keys" grep -qxF "in S3 only: $orphan_a (kept; deletions are not propagated)" "$IT_DIR/verify1.out"
t_ok "a key under uploads/results/ maps to no path: listed too" grep -qF "in S3 only: $orphan_odd " "$IT_DIR/verify1.out"
t_ok "the 1,100th bulk object is listed (the second page)" grep -qF "in S3 only: jobs/$JC/uploads/bulk/o-999.txt " "$IT_DIR/verify1.out"
t_ok "a hostile key is printed escaped, on one line" grep -qF 'in S3 only: '"jobs/$JB/uploads/x"'\nmissing in S3: forged.txt (kept' "$IT_DIR/verify1.out"
t_is "$(grep -c '^missing in S3: forged' "$IT_DIR/verify1.out" || true)" 0 "and forges no line"
t_ok "the summary counts them apart from the differences" \
	grep -q '^verified 50 files against S3 and the database: 10 differences (and 1103 objects only in S3, kept, see above)$' "$IT_DIR/verify1.out"
s3_reset_stats
"$OUTBOXCTL" verify --job "$JC" >"$IT_DIR/verify-jc.out" 2>&1 || true
t_is "$(grep -c '^in S3 only: ' "$IT_DIR/verify-jc.out")" 1100 "verify --job lists only that job's objects"
t_is "$(s3_stats | json_get by_method GET)" 2 "in two signed ListObjectsV2 pages the proxy verified (1,000 keys each at most)"
# Credentials without s3:ListBucket: the listing alone is denied.
s3_fault '{"type":"access_denied","count":1,"method":"GET","query":"list-type"}'
set +e
"$OUTBOXCTL" verify --job "$JC" >"$IT_DIR/verify-nolist.out" 2>&1
rc=$?
set -e
s3_clear_faults
t_is "$rc" 1 "a listing denied is a difference: verify exits 1"
t_ok "and names the permission it needs" grep -q '^cannot list S3 under jobs/.*AccessDenied.*(the credentials need s3:ListBucket on the bucket)$' "$IT_DIR/verify-nolist.out"

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
t_is "$(s3_head "$orphan_a" | grep -i '^etag:')" "$etag_a" "--repair left an object with no local file as it was"
t_is "$(s3_list "jobs/$JC/" | wc -l)" 1100 "and all 1,100 others"
t_ok "and the hostile one" s3_head "$orphan_evil"
t_is "$(sqlite3 "$OUTBOXD_STATE_DB" "select count(*) from entries where path like '%only-in-s3%' or path like '$JC/%' or path like '%forged%'")" 0 \
	"nothing was journaled for them"
# The bulk copies only slow later listings down.
rm -rf "$S3_DATA_DIR/$S3_BUCKET/jobs/$JC"

t_ok "outboxd stops" ob_stop

# ---- case 2: the background scrub alone
damage
acts0=$(activities)
scrub() { "$OUTBOXCTL" status --json | json_get scrub "$1"; }
# A pass is due an interval after the outbox was made: make sure it is.
created=$(sqlite3 "$OUTBOXD_STATE_DB" "select value from meta where key = 'created_at'")
_past_interval() { [ $(($(date +%s) - $(date -d "$created" +%s))) -ge 21 ]; }
wait_for 30 _past_interval
export OUTBOXD_SCRUB_INTERVAL=20s OUTBOXD_SCRUB_RATE=5
export OUTBOXD_METRICS_FILE=$IT_DIR/metrics.prom
s3_reset_stats
t0=$(date +%s.%N)
ob_start
_cursor_moved() { [ "$(scrub cursor)" -gt 0 ]; }
t_ok "the scrub starts by itself and checks a first batch" wait_for 30 _cursor_moved
t_is "$(scrub running)" true "a pass is under way"
t_ok "outboxd stops in the middle of the pass" ob_stop
# Where the stop left the cursor (it is written at the stop).
cursor1=$(scrub cursor)
t_ok "the stop kept the pass's place (cursor $cursor1, not 0)" test "$cursor1" -gt 0
t1=$(date +%s.%N)
heads1=$(s3_stats | json_get by_method HEAD)
s3_reset_stats
t2=$(date +%s.%N)
ob_start
t_ok "a restart continues the pass where it stopped" \
	grep -q "scrub: continuing pass 1 after entry $cursor1" "$IT_DIR/outboxd.log"
write_file "$JB/during-scrub.txt" "a file the app saves while the scrub runs"
_new_done() {
	[ "$(sqlite3 "$OUTBOXD_STATE_DB" "select s3_state || db_state from entries where path = '$JB/during-scrub.txt'")" = donedone ]
}
t_ok "a new file written during the scrub is stored" wait_for 10 _new_done
t_is "$(scrub running)" true "while the pass is still running"
lat=$(sqlite3 "$OUTBOXD_STATE_DB" "select cast((julianday(s3_done_at) - julianday(journaled_at)) * 86400000 as integer) from entries where path = '$JB/during-scrub.txt'")
t_ok "without waiting for the scrub: journaled to stored in ${lat} ms (< 1000)" test "$lat" -lt 1000
_pass_done() { [ "$(scrub running)" = false ] && [ "$(scrub pass)" = 1 ]; }
t_ok "the pass finishes" wait_for 60 _pass_done
t3=$(date +%s.%N)
heads2=$(s3_stats | json_get by_method HEAD)
t_is "$(scrub found)" 10 "the scrub found the 10 damaged files"
t_is "$(scrub repaired)" 10 "and journaled 10 repairs"
t_is "$(scrub checked)" 50 "it checked each of the 50 files once, across the restart"
heads=$((heads1 + heads2))
secs=$(echo "$t1 - $t0 + $t3 - $t2" | bc)
t_diag "HEAD requests: $heads1 before the restart, $heads2 after, in $secs s of running at OUTBOXD_SCRUB_RATE=5"
t_ok "one HEAD per file, not a second pass after the restart ($heads <= 50 + 32)" test "$heads" -ge 50 -a "$heads" -le 82
t_ok "at most the configured rate ($heads HEADs <= 5/s * $secs s + 2)" \
	test "$(echo "$heads <= 5 * $secs + 2" | bc)" = 1
t_ok "the repairs arrive" ob_wait_idle 60 71
t_ok "verify exits 0 after the scrub's repairs" "$OUTBOXCTL" verify
ob_check_s3
t_is "$(activities)" "$((acts0 + 1))" "the scrub's repairs added no user_activity row (one: the new file's file_upload)"
t_is "$(pg_psql -c "select activity_type || ' ' || (activity_data->>'file_path') from is_migration.user_activity order by created_at desc limit 1")" \
	"file_upload during-scrub.txt" "the one new activity is the new file's upload"
t_ok "status shows the scrub" sh -c "'$OUTBOXCTL' status | grep -q '^scrub:    pass 1 finished .*: 50 checked, 10 differences, 10 repairs journaled'"
_metrics_scrub() { grep -q '^outboxd_scrub_checked_total [1-9]' "$OUTBOXD_METRICS_FILE"; }
t_ok "the metrics count the scrub's checks" wait_for 10 _metrics_scrub
t_is "$(grep -c 'scrub: .*repair journaled' "$IT_DIR/outboxd.log")" 10 "the log names each of the 10 findings"

# ---- case 3: a path whose entries retention pruned
t_ok "outboxd stops" ob_stop
p12="$JA/docs/file-12.txt"
# As outbox_prune leaves it: the files row stays, its entries go.
sqlite3 "$OUTBOXD_STATE_DB" "delete from parts where entry_id in (select id from entries where path = '$p12'); delete from entries where path = '$p12'"
s3_delete "jobs/$JA/uploads/docs/file-12.txt" >/dev/null
set +e
"$OUTBOXCTL" verify --repair >"$IT_DIR/repair3.out" 2>&1
rc=$?
set -e
t_is "$rc" 0 "verify --repair repairs a file whose entries were pruned"
t_ok "it says so" grep -q "^repair journaled: $p12 (entry [0-9]*; its entries were pruned): missing in S3" "$IT_DIR/repair3.out"
OUTBOXD_SCRUB_INTERVAL=0 ob_start
t_ok "the repair arrives" ob_wait_idle 60
t_ok "verify exits 0" "$OUTBOXCTL" verify
t_ok "outboxd stops" ob_stop

# ---- case 4: the scrub covers pruned paths, and retries a failed HEAD
# Two more paths pruned as outbox_prune leaves them; one's object deleted,
# the other's intact (the scrub hashes the file to judge it: no entry has
# its SHA-256). A HEAD of a third file fails once with a 500: the pass
# sends it again rather than leaving the file unchecked for a week.
prune_path() {
	sqlite3 "$OUTBOXD_STATE_DB" "delete from parts where entry_id in (select id from entries where path = '$1'); delete from entries where path = '$1'"
}
p13="$JA/docs/file-13.txt"
p14="$JA/docs/file-14.txt"
prune_path "$p13"
prune_path "$p14"
s3_delete "jobs/$JA/uploads/docs/file-13.txt" >/dev/null
started=$(sqlite3 "$OUTBOXD_STATE_DB" "select value from meta where key = 'scrub.started_at'")
_pass2_due() { [ $(($(date +%s) - $(date -d "$started" +%s))) -ge 21 ]; }
wait_for 30 _pass2_due
s3_reset_stats
s3_fault '{"type":"error500","count":1,"method":"HEAD","match":"docs/file-15.txt"}' >/dev/null
export OUTBOXD_SCRUB_INTERVAL=20s OUTBOXD_SCRUB_RATE=10
ob_start
_pass2_done() { [ "$(scrub running)" = false ] && [ "$(scrub pass)" = 2 ]; }
t_ok "pass 2 runs and finishes" wait_for 60 _pass2_done
t_is "$(scrub checked)" 51 "it checked all 51 paths: 49 entries, the 2 pruned paths, and file-15 despite its failed HEAD"
t_is "$(scrub found)" 1 "it found the pruned path whose object was deleted"
t_is "$(scrub repaired)" 1 "and journaled its repair"
t_ok "the log says so" grep -q "scrub: missing in S3 (its entries were pruned); repair journaled" "$IT_DIR/outboxd.log"
t_is "$(s3_stats | json_get faults_injected)" 1 "the proxy answered one HEAD 500"
t_is "$(s3_stats | json_get by_path "/$S3_BUCKET/jobs/$JA/uploads/docs/file-15.txt")" 2 \
	"file-15 was HEADed twice in the pass: the 500, then again"
t_ok "the repair arrives" ob_wait_idle 60
t_is "$(sqlite3 "$OUTBOXD_STATE_DB" "select count(*) from entries where path = '$p13' and repair is not null and s3_state = 'done' and db_state = 'done'")" 1 \
	"the pruned path's repair entry is done through both legs"
t_is "$(sqlite3 "$OUTBOXD_STATE_DB" "select count(*) from entries where path = '$p14'")" 0 \
	"the intact pruned path, judged by its file's hash, got none"
t_ok "verify exits 0" "$OUTBOXCTL" verify
ob_check_s3
t_ok "outboxd stops" ob_stop
t_done
