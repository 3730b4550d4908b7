#!/bin/bash
# it-regress.sh - seven ways a file or a row was lost, or an entry stuck,
# reproduced against the real daemon, PostgreSQL 15 and s3rver behind the
# verifying proxy. Each case has its own uploads tree, outbox and job, and
# its TAP lines start with its number; "setup:" lines only check that the
# scenario was really set up (they are not what the case proves).
#   1 a journaled file moved away (ignored name, or out of the tree) and
#     back unchanged while S3 was down is still uploaded
#   2 a file that reached S3 and was deleted while the database was down
#     still gets its documents row, with sha256 and ETag
#   3 a version whose PUT was in flight when outboxd died (SIGKILL, or
#     SIGTERM with the upload cut short by the stop grace) while a newer
#     version waited does not stay pending for ever: --once exits 0
#   4 an ETag is recorded in documents even when the row was committed
#     before S3 answered and outboxd died before noting it (4a), or when
#     the rows were recorded with the S3 leg off (4b)
#   5 a stored file rewritten slowly (truncated, half written, a pause of
#     more than 2.5 s, the rest) has no activity and no PUT for its
#     half-written state
#   6 with S3 down (503 on everything, default retry settings, one
#     transfer at a time) 30 files reach PostgreSQL within 60 s
#   7 a multipart upload to an SSE-KMS bucket (no ETag is an MD5) resumes
#     after kill -9 without sending the recorded parts again
# Every case but 3b fails on the code it was written against (see 3b).
# Order: 2 first (it stops PostgreSQL), then 6 and 3 are set up and left
# to run in the background (6's 60 s window, 3b's 30 s stop grace and the
# --once runs overlap the other cases), then 1, 4, 5, 7, then the checks
# of 3 and 6. The faults armed on the shared proxy name their case's job
# or key, and case 6 has a proxy of its own, so the cases do not meet.
# About 35 s when the bugs are fixed; about 65 s on the buggy code (the
# bounds of the failing waits: 60 s for case 6, 30 s for --once, 20 s or
# 10 s for the others).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init regress
pg_start
s3_start
# Case 2 stops PostgreSQL before its outboxd has connected: apply the
# schema first.
t_ok "setup: outboxctl migrate applies the PostgreSQL schema" "$OUTBOXCTL" migrate

# ---------------------------------------------------------------- helpers

# rg_case NAME: a fresh uploads tree, outbox and log for one case; the
# shared proxy's faults cleared (those of cases set up earlier were used
# up by then), its counters and PUT log zeroed, SSE-KMS emulation off
rg_case() {
	CASE=$1
	CASE_DIR=$IT_DIR/$CASE
	mkdir -p "$CASE_DIR/uploads"
	UPLOADS=$CASE_DIR/uploads
	OB_LOG=$CASE_DIR/outboxd.log
	export OUTBOXD_WATCH_DIR=$UPLOADS OUTBOXD_STATE_DB=$CASE_DIR/outbox.db
	export OUTBOXD_RETRY_BASE_MS=100 OUTBOXD_RETRY_MAX_S=2
	unset OUTBOXD_TEST_CRASH OUTBOXD_MULTIPART_THRESHOLD OUTBOXD_CONCURRENCY \
		OUTBOXD_S3_TIMEOUT_S
	RG_ENV=()
	s3_clear_faults
	s3_reset_stats
	s3_kms '{"on":false}'
}

# rg_start: outboxd in the background for the current case ($OB_PID),
# with "${RG_ENV[@]}" given to env(1) first; waits for its start-up rescan
rg_start() {
	local before
	: >>"$OB_LOG"
	echo "--- start $(date -u +%T.%N)" >>"$OB_LOG"
	before=$(grep -c 'rescan (start-up)' "$OB_LOG" || true)
	it_bg "$CASE/outboxd" env "${RG_ENV[@]}" "$OUTBOXD"
	OB_PID=$IT_BG_PID
	wait_for 20 _rg_rescanned_since "$before" || {
		t_diag "outboxd did not finish its start-up rescan"
		_it_diag_file "$OB_LOG" 20
		return 1
	}
}
_rg_rescanned_since() { [ "$(grep -c 'rescan (start-up)' "$OB_LOG" || true)" -gt "$1" ]; }

# rg_end: the case is decided; stop its daemon without a stop grace
rg_end() {
	if [ -n "${OB_PID:-}" ] && _it_alive "$OB_PID"; then ob_kill; fi
	OB_PID=
	s3_clear_faults
}

# ob_sql SQL: a query on the current case's outbox
ob_sql() { sqlite3 -batch "$OUTBOXD_STATE_DB" "$1"; }

# s3_puts: the proxy's PUT log (JSON); s3_kms JSON: SSE-KMS emulation
s3_puts() { curl -sS --noproxy '*' -f "$S3_PROXY_URL/__proxy/puts"; }
s3_kms() {
	curl -sS --noproxy '*' --fail-with-body -o /dev/null -X POST \
		-H 'Content-Type: application/json' --data-binary "$1" "$S3_PROXY_URL/__proxy/kms"
}
# s3_puts_count FILTER: PUTs in the log matching a JavaScript predicate on p
# (fields: path, query, length, sha256, fault)
s3_puts_count() {
	s3_puts | node -e '
		let d = ""; process.stdin.on("data", c => d += c).on("end", () => {
			const f = new Function("p", "return (" + process.argv[1] + ");");
			console.log(JSON.parse(d).filter(f).length);
		});' "$1"
}

# s3_etag KEY: the ETag S3 holds (a signed HEAD), quotes removed
s3_etag() { s3_head "$1" | sed -n 's/^[Ee][Tt][Aa][Gg]: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p'; }
unquote() { sed 's/"//g'; }

# doc_field JOB PATH COLUMN: a column of the job's documents row ('' if none)
doc_field() {
	pg_psql "select coalesce($3::text, 'NULL') from is_migration.documents where job_id = '$1' and file_path = '$2'"
}

sha_of() { sha256sum <"$1" | cut -d' ' -f1; }
elapsed_s() { awk -v a="$1" -v b="$(_it_now_us)" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'; }

# ------------------------------------------- 2: the row whose file went
rg_case c2-lost-row
rg_start
j=$(new_job)
pg_stop
mkdir -p "$UPLOADS/$j"
cp "$IT_DATA/mulesoft-orders.xml" "$UPLOADS/$j/flow.xml"
sha=$(sha_of "$UPLOADS/$j/flow.xml")
_c2_in_s3() { [ "$(ob_sql "select s3_state from entries where path = '$j/flow.xml'")" = "done" ]; }
t_ok "2 setup: with PostgreSQL stopped, flow.xml reaches S3" wait_for 20 _c2_in_s3
etag=$(s3_etag "jobs/$j/uploads/flow.xml")
t_ok "2 setup: S3 returned an ETag for it ($etag)" test -n "$etag"
rm "$UPLOADS/$j/flow.xml"
t_ok "2 setup: PostgreSQL starts again" pg_up
_c2_settled() { [ "$(ob_sql "select db_state from entries where path = '$j/flow.xml'")" != pending ] &&
	[ "$(ob_sql "select db_state from entries where path = '$j/flow.xml'")" != in_flight ]; }
wait_for 20 _c2_settled || true
t_is "$(doc_field "$j" flow.xml "sha256 || ' ' || coalesce(etag, 'NULL')" | unquote)" "$sha $etag" \
	"2 lost row: a file stored in S3 and deleted locally while the database was down gets its documents row with sha256 and ETag"
t_is "$(ob_sql "select db_state || ' ' || coalesce(db_error, '') from entries where path = '$j/flow.xml'")" "done " \
	"2 lost row: its database leg is done, not skipped"
rg_end

# ------------------------------------------- 6: one store holds the other
# Started here, checked at the end: its 60 s window overlaps the cases
# below. "S3 down" is a second verifying proxy of its own that answers 503
# SlowDown to every request, so the faults the other cases arm and clear
# on the main proxy cannot touch it.
#
# One S3 transfer at a time (OUTBOXD_CONCURRENCY=1; the retry settings are
# outboxd's defaults): while S3 fails, the S3 leg's circuit breaker lets
# one probe through per backoff pause, and today a file's database leg
# waits for its S3 leg's first attempt, so only about one row per pause
# arrives (7-8 in 60 s; a simulation of the backoff never reached 15).
# With the default concurrency (16) the same bug shows, but a probe that
# follows a pause often claims a burst of 5-8 entries before its 503 is
# counted (a race), so today's count in 60 s ranges from about 8 to all
# 30, and the case could pass on the buggy code.
rg_case c6-one-holds-other
unset OUTBOXD_RETRY_BASE_MS OUTBOXD_RETRY_MAX_S   # outboxd's own defaults
export OUTBOXD_CONCURRENCY=1
it_bg "$CASE/s3proxy" env OUTBOXD_NODE_MODULES="$NODE_MODULES" node "$IT_SRCDIR/s3proxy.js" \
	--listen 127.0.0.1:0 --upstream "$S3_UPSTREAM_URL" --access-key "$AWS_ACCESS_KEY_ID" \
	--secret-key "$AWS_SECRET_ACCESS_KEY" --region "$AWS_REGION" --data-dir "$S3_DATA_DIR" \
	--port-file "$CASE_DIR/s3proxy.port" --log "$CASE_DIR/s3proxy-rejections.jsonl"
wait_for 15 test -s "$CASE_DIR/s3proxy.port" || t_bail "case 6's S3 proxy did not start"
c6_url=http://127.0.0.1:$(cat "$CASE_DIR/s3proxy.port")
curl -sS --noproxy '*' --fail-with-body -o /dev/null -X POST -H 'Content-Type: application/json' \
	--data-binary '{"type":"slowdown","seconds":600}' "$c6_url/__proxy/fault"
RG_ENV=(AWS_ENDPOINT_URL_S3="$c6_url")
rg_start
j6=$(new_job)
for i in $(seq 1 30); do write_file "$j6/f$i.txt" "file $i while S3 is down"; done
c6_dir=$CASE_DIR c6_pid=$OB_PID
# Polls every 0.5 s and stops as soon as the 30 rows are there (or at 60 s).
(
	t0=$(_it_now_us)
	while :; do
		n=$(pg_psql "select count(*) from is_migration.documents where job_id = '$j6'" 2>/dev/null) || n='?'
		if [ "$n" = 30 ] || [ "$(_it_now_us)" -ge $((t0 + 60000000)) ]; then break; fi
		sleep 0.5
	done
	echo "$n $(elapsed_s "$t0")" >"$c6_dir/result"
) &
c6_poller=$!
it_track "$c6_poller"
OB_PID=

# ------------------------------------------- 3: the version stuck in flight
# stuck_setup NAME: v1's PUT stalled at the proxy, v2 journaled behind it
stuck_setup() {
	local name=$1
	rg_start
	j=$(new_job)
	s3_fault '{"type":"stall","count":1,"method":"PUT","match":"/jobs/'"$j"'/"}'
	write_file "$j/report.txt" "version 1 $(head -c 3000 /dev/urandom | base64 -w0)"
	_c3_stalled() {
		[ "$(ob_sql "select s3_state from entries where path = '$j/report.txt' and version = 1")" = in_flight ] &&
			[ "$(s3_stats | json_get armed | tr -d '[] ')" = "" ]
	}
	t_ok "3$name setup: version 1's PUT is in flight and stalled at the proxy" wait_for 15 _c3_stalled
	write_file "$j/report.txt" "version 2 $(head -c 5000 /dev/urandom | base64 -w0)"
	cp "$UPLOADS/$j/report.txt" "$CASE_DIR/v2"
	echo "$j" >"$CASE_DIR/job"
	_c3_v2() { [ "$(ob_sql "select count(*) from entries where path = '$j/report.txt'")" = 2 ]; }
	t_ok "3$name setup: version 2 is journaled while version 1 is in flight" wait_for 10 _c3_v2
}
# stuck_once: `outboxd --once` bounded by 30 s in the current case's
# outbox, in the background; its exit status and seconds go to once.rc and
# once.secs. A correct run here (two small entries, both stores healthy)
# takes about a second: 30 s is a generous bound.
stuck_once() {
	it_bg "$CASE/once" bash -c 't0=${EPOCHREALTIME/./}; rc=0; timeout 30 "$1" --once || rc=$?
		t1=${EPOCHREALTIME/./}; echo "$rc" >"$2/once.rc"
		awk -v d=$((t1 - t0)) "BEGIN { printf \"%.2f\n\", d / 1e6 }" >"$2/once.secs"; exit $rc' \
		once "$OUTBOXD" "$CASE_DIR"
}
# stuck_check NAME DIR: what --once left
stuck_check() {
	local name=$1 dir=$2 rc secs j
	rc=$(cat "$dir/once.rc" 2>/dev/null || echo '(did not finish)')
	secs=$(cat "$dir/once.secs" 2>/dev/null || echo '?')
	j=$(cat "$dir/job")
	t_is "$rc" 0 "3$name stuck: outboxd --once afterwards exits 0 within 30 s (exit $rc after $secs s; 124 = killed by the timeout)"
	t_ok "3$name stuck: S3 has version 2's bytes" cmp "$dir/v2" "$(s3_object_file "jobs/$j/uploads/report.txt")"
	t_is "$(sqlite3 -batch "$dir/outbox.db" "select count(*) from entries where s3_state in ('pending','in_flight') or db_state in ('pending','in_flight')")" 0 \
		"3$name stuck: no entry is left pending (version 1 included)"
}

# 3b, SIGTERM: the stall must outlast the 30 s stop grace (not be ended by
# the low-speed timeout first), so that the grace is what cuts the PUT
# short. The grace is waited out in the background, then --once runs.
# Note: this variant passes on the code it was written against: at the
# end of the grace the cancelled PUT is recorded as a failed attempt, and
# the outbox turns a retry of a superseded version into 'skipped'. It stays
# as a guard; 3a (SIGKILL) is the one that fails.
rg_case c3b-stuck-term
export OUTBOXD_S3_TIMEOUT_S=90
stuck_setup b
unset OUTBOXD_S3_TIMEOUT_S
c3b_dir=$CASE_DIR c3b_pid=$OB_PID
kill -TERM "$c3b_pid"
(
	wait_for 45 eval '! _it_alive '"$c3b_pid" || exit 1
	stuck_once
	wait
) &
c3b_bg=$!
it_track "$c3b_bg"
OB_PID=

# 3a, SIGKILL
rg_case c3a-stuck-kill
stuck_setup a
ob_kill
OB_PID=
s3_clear_faults
c3a_dir=$CASE_DIR
stuck_once
c3a_once=$IT_BG_PID

# ------------------------------------------- 1: the file that came back
rg_case c1-lost-file
rg_start
j=$(new_job)
s3_fault '{"type":"slowdown","seconds":300,"match":"/jobs/'"$j"'/"}'
write_file "$j/a.txt" "a: $(head -c 2000 /dev/urandom | base64 -w0)"
write_file "$j/b.txt" "b: $(head -c 2000 /dev/urandom | base64 -w0)"
_c1_tried() {
	[ "$(ob_sql "select count(*) from entries where job_id = '$j' and s3_attempts >= 1 and db_state = 'done'")" = 2 ]
}
t_ok "1 setup: with S3 answering 503, a.txt and b.txt are journaled, tried on S3 and recorded in the database" \
	wait_for 20 _c1_tried
# The app moves the files away and back unchanged: a.txt to an ignored name
# beside it, b.txt out of the uploads tree. rename(2) keeps size, mtime and
# inode, so the outbox's files table still matches when they come back.
mkdir -p "$CASE_DIR/away"
mv "$UPLOADS/$j/a.txt" "$UPLOADS/$j/.a.txt"
mv "$UPLOADS/$j/b.txt" "$CASE_DIR/away/b.txt"
_c1_skipped() {
	[ "$(ob_sql "select count(*) from entries where job_id = '$j' and s3_state = 'skipped'")" = 2 ]
}
t_ok "1 setup: S3 is retried while the files are away and both S3 legs are skipped (vanished)" \
	wait_for 15 _c1_skipped
mv "$UPLOADS/$j/.a.txt" "$UPLOADS/$j/a.txt"
mv "$CASE_DIR/away/b.txt" "$UPLOADS/$j/b.txt"
s3_clear_faults
_c1_stored() {
	cmp -s "$UPLOADS/$j/a.txt" "$(s3_object_file "jobs/$j/uploads/a.txt")" &&
		cmp -s "$UPLOADS/$j/b.txt" "$(s3_object_file "jobs/$j/uploads/b.txt")"
}
t_ok "1 lost file: files moved away while S3 was down and moved back unchanged reach S3 once it is up" \
	wait_for 20 _c1_stored
t_ok "1 lost file: outboxctl status settles with nothing pending" ob_wait_idle 10
t_ok "1 lost file: outboxctl verify finds local, S3 and database in agreement" \
	"$OUTBOXCTL" verify --job "$j"
rg_end

# ------------------------------------------- 4: the ETag never recorded
rg_case c4a-etag-crash
j=$(new_job)
s3_fault '{"type":"error500","seconds":300,"method":"PUT","match":"/jobs/'"$j"'/"}'
RG_ENV=(OUTBOXD_TEST_CRASH=db-committed)
rg_start
write_file "$j/spec.txt" "spec $(head -c 2000 /dev/urandom | base64 -w0)"
_c4_died() { ! _it_alive "$OB_PID"; }
t_ok "4a setup: with S3 answering 500, outboxd dies at the crash point right after the database commit" \
	wait_for 20 _c4_died
it_wait "$OB_PID" 1 || true
OB_PID=
t_is "$(doc_field "$j" spec.txt etag)" NULL "4a setup: the documents row was committed without an ETag"
t_is "$(ob_sql "select db_state from entries where path = '$j/spec.txt'")" in_flight \
	"4a setup: the outbox never heard of the commit"
RG_ENV=()
s3_clear_faults
rg_start
t_ok "4a setup: restarted with S3 healthy, everything drains" ob_wait_idle 20 1
etag=$(s3_etag "jobs/$j/uploads/spec.txt")
_c4_etag() { [ "$(doc_field "$j" spec.txt etag)" != NULL ]; }
wait_for 10 _c4_etag || true
t_is "$(doc_field "$j" spec.txt etag | unquote)" "$etag" \
	"4a ETag: documents.etag is the ETag S3 holds, though the row was committed before S3 answered and the outbox lost that"
t_is "$(ob_sql "select coalesce(s3_etag, 'NULL') from entries where path = '$j/spec.txt'" | unquote)" "$etag" \
	"4a ETag: the outbox's s3_etag agrees"
t_ok "4a verify: outboxctl verify --job finds the row and S3 agree" "$OUTBOXCTL" verify --job "$j"
pg_psql "update is_migration.documents set etag = NULL where job_id = '$j'" >/dev/null
_c4_verify_says() {
	! "$OUTBOXCTL" verify --job "$j" >"$CASE_DIR/verify.out" 2>&1 &&
		grep -q "ETag for $j/spec.txt is missing" "$CASE_DIR/verify.out"
}
t_ok "4a verify: a row whose ETag is missing is a difference verify reports" _c4_verify_says
rg_end

rg_case c4b-etag-late
j=$(new_job)
RG_ENV=(-u S3_BUCKET -u S3_BUCKET_NAME)
rg_start
write_file "$j/late.txt" "late $(head -c 2000 /dev/urandom | base64 -w0)"
_c4b_row() { [ "$(doc_field "$j" late.txt "'row'")" = row ]; }
t_ok "4b setup: with the S3 leg off, the documents row is recorded" wait_for 20 _c4b_row
ob_stop || true
OB_PID=
RG_ENV=()
rg_start
t_ok "4b setup: restarted with S3 configured, the file is uploaded" ob_wait_idle 20 1
etag=$(s3_etag "jobs/$j/uploads/late.txt")
wait_for 10 eval '[ "$(doc_field "$j" late.txt etag)" != NULL ]' || true
t_is "$(doc_field "$j" late.txt etag | unquote)" "$etag" \
	"4b ETag: documents.etag is filled in once S3 is configured and has the file"
rg_end

# ------------------------------------------- 5: the half-written version
rg_case c5-half-write
rg_start
j=$(new_job)
key=jobs/$j/uploads/notes.md
# v1's S3 leg keeps being retried (503), so the sync thread looks at the
# file again while it is rewritten; its database leg records v1.
s3_fault '{"type":"slowdown","seconds":300,"method":"PUT","match":"/'"$key"'"}'
head -c 3000 /dev/urandom | base64 -w0 >"$CASE_DIR/v1"
head -c 7500 /dev/urandom | base64 -w0 >"$CASE_DIR/final"   # 10000 bytes
head -c 5000 "$CASE_DIR/final" >"$CASE_DIR/half"
tail -c +5001 "$CASE_DIR/final" >"$CASE_DIR/rest"
half_size=$(stat -c %s "$CASE_DIR/half")
half_sha=$(sha_of "$CASE_DIR/half")
mkdir -p "$UPLOADS/$j"
cp "$CASE_DIR/v1" "$UPLOADS/$j/notes.md"
_c5_v1() {
	[ "$(pg_psql "select count(*) from is_migration.user_activity where activity_data->>'job_id' = '$j' and activity_type = 'file_upload'")" = 1 ] &&
		[ "$(ob_sql "select s3_attempts >= 1 from entries where path = '$j/notes.md' and version = 1")" = 1 ]
}
t_ok "5 setup: v1 is recorded in the database (file_upload) while its S3 leg is being retried" wait_for 20 _c5_v1
# The app rewrites the file slowly: truncate, half, a pause with the file
# open, the rest, close.
exec {w}>"$UPLOADS/$j/notes.md"
cat "$CASE_DIR/half" >&"$w"
t_half=$(_it_now_us)
# During the pause: let S3 through once the sync thread has noticed the
# change, so whatever it does with the half-written state reaches the
# stores. The pause lasts at least 3 s (the sync thread journals a change
# it notices with a 2 s quiet time), longer while a half-size entry it
# journaled is still being worked on (at most 8 s in all).
_c5_noticed() { [ "$(ob_sql "select s3_state from entries where path = '$j/notes.md' and version = 1")" = skipped ]; }
wait_for 6 _c5_noticed || true
s3_clear_faults
_c5_paused() {
	[ "$(_it_now_us)" -ge $((t_half + 3000000)) ] &&
		[ "$(ob_sql "select count(*) from entries where path = '$j/notes.md' and size = $half_size and (s3_state in ('pending','in_flight') or db_state in ('pending','in_flight'))")" = 0 ]
}
wait_for $((8 - ($(_it_now_us) - t_half) / 1000000)) _c5_paused || true
t_diag "5: the writer paused $(elapsed_s "$t_half") s with the file half written"
cat "$CASE_DIR/rest" >&"$w"
exec {w}>&-
_c5_final() { cmp -s "$CASE_DIR/final" "$(s3_object_file "$key")"; }
t_ok "5 half-written: S3 ends with the final bytes" wait_for 20 _c5_final
t_ok "5 setup: everything drains" ob_wait_idle 20
t_is "$(pg_psql "select string_agg(activity_type || '=' || n, ' ' order by activity_type) from (select activity_type, count(*) n from is_migration.user_activity where activity_data->>'job_id' = '$j' and activity_data->>'file_path' = 'notes.md' group by 1) a")" \
	"file_update=1 file_upload=1" \
	"5 half-written: user_activity has exactly one file_upload and one file_update for the file"
t_is "$(s3_puts_count "p.path.endsWith('/$key') && p.sha256 === '$half_sha'")" 0 \
	"5 half-written: no PUT ever carried the half-written body"
t_is "$(ob_sql "select count(*) from entries where path = '$j/notes.md' and size = $half_size and (s3_state = 'done' or db_state = 'done')")" 0 \
	"5 half-written: no half-size entry was stored by either leg"
rg_end

# ------------------------------------------- 7: multipart resume under SSE-KMS
rg_case c7-kms-resume
export OUTBOXD_MULTIPART_THRESHOLD=5MiB OUTBOXD_CONCURRENCY=2
j=$(new_job)
key=jobs/$j/uploads/big.bin
s3_kms '{"on":true,"match":"/'"$key"'"}'
# six 8 MiB parts (outboxd's smallest part size), each held 700 ms
head -c $((48 * 1024 * 1024)) /dev/urandom >"$CASE_DIR/big.bin"
s3_fault '{"type":"delay","seconds":120,"ms":700,"method":"PUT","query":"partNumber","match":"/'"$key"'"}'
rg_start
mkdir -p "$UPLOADS/$j"
mv "$CASE_DIR/big.bin" "$UPLOADS/$j/big.bin"
_c7_parts() { [ "$(ob_sql 'select count(*) from parts')" -ge 3 ]; }
t_ok "7 setup: parts are recorded in the outbox as S3 acknowledges them" wait_for 60 _c7_parts
ob_kill
OB_PID=
nparts=6
recorded=$(ob_sql 'select count(*) from parts')
part1=$(head -c $((8 * 1024 * 1024)) "$UPLOADS/$j/big.bin" | openssl dgst -md5 -r | cut -d' ' -f1)
t_ok "7 setup: SSE-KMS emulated: the recorded ETags are not the parts' MD5s" \
	test "$(ob_sql 'select etag from parts where part_number = 1' | unquote)" != "$part1" -a \
	"$(ob_sql 'select count(*) from parts')" -ge 1
s3_clear_faults
# The killed outboxd's last parts still sit in the proxy's 700 ms delay
# and are forwarded to s3rver after it died. s3rver writes a part into
# its file in place, so one of them landing during the restarted
# outboxd's upload of the same part garbles it (S3 replaces parts
# atomically). Let them land first: the one fixed wait in these tests,
# for a timer inside the test server that nothing outside can observe.
sleep 2
s3_reset_stats
rg_start
t_ok "7 setup: after the restart the upload completes" ob_wait_idle 60 1
t_ok "7 setup: the object has the file's bytes" cmp "$UPLOADS/$j/big.bin" "$(s3_object_file "$key")"
sent=$(s3_puts_count "p.path.endsWith('/$key') && /partNumber=/.test(p.query)")
t_ok "7 KMS resume: the $recorded parts recorded before kill -9 are not sent again ($sent part PUTs after the restart for $nparts parts; at most $((nparts - recorded)))" \
	test "$sent" -le $((nparts - recorded))
rg_end
s3_kms '{"on":false}'

# ------------------------------------------- 3: (checked)
it_wait "$c3a_once" 40 || true
stuck_check a "$c3a_dir"
it_wait "$c3b_bg" 90 || true
it_wait "$c3b_pid" 1 || true
t_ok "3b setup: the stop grace cut version 1's PUT short" \
	grep -q 'stopped with 1 request(s) unfinished' "$c3b_dir/outboxd.log"
stuck_check b "$c3b_dir"

# ------------------------------------------- 6: (checked)
it_wait "$c6_poller" 70 || true
read -r c6_rows c6_secs <"$c6_dir/result" || c6_rows='?'
t_is "$c6_rows" 30 \
	"6 one store holds the other: with S3 down (503 on everything, default retries, one transfer at a time) 30 files reach PostgreSQL within 60 s (${c6_rows} rows after ${c6_secs:-?} s)"
OB_PID=$c6_pid
rg_end

t_done
