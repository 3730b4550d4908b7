#!/bin/bash
# it-multipart.sh - files over OUTBOXD_MULTIPART_THRESHOLD go as multipart
# uploads streamed from disk: an 80 MiB and a 300 MiB file arrive intact
# with outboxd's memory bounded (reported); a kill -9 in the middle of a
# multipart upload resumes from the parts recorded in the outbox and the
# file is stored once; a reply lost after CompleteMultipartUpload is
# resolved with a HEAD; a file that changes mid-upload is not marked done,
# its upload is aborted, the new version wins; no upload is left dangling.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init multipart
pg_start
s3_start
ob_setup

hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$OB_PID/status"; }
uploads_left() {
	local d=$S3_DATA_DIR/$S3_BUCKET/._S3rver_uploads
	[ -d "$d" ] && find "$d" -mindepth 1 -maxdepth 1 | wc -l || echo 0
}

ob_start
j=$(new_job)
head -c $((80 * 1024 * 1024)) /dev/urandom >"$IT_DIR/big80"
head -c $((300 * 1024 * 1024)) /dev/urandom >"$IT_DIR/big300"
mv "$IT_DIR/big80" "$UPLOADS/$j/" 2>/dev/null || { mkdir -p "$UPLOADS/$j"; mv "$IT_DIR/big80" "$UPLOADS/$j/"; }
t_ok "the 80 MiB file is stored" ob_wait_idle 120 1
mv "$IT_DIR/big300" "$UPLOADS/$j/"
t_ok "the 300 MiB file is stored" ob_wait_idle 240 2
hwm=$(hwm_kib)
t_diag "outboxd peak RSS after 380 MiB in multipart uploads: $((hwm / 1024)) MiB"
if built_with_asan; then
	t_skip "peak RSS stays bounded" "AddressSanitizer's shadow memory dominates RSS"
else
	t_ok "peak RSS stays bounded ($((hwm / 1024)) MiB <= 48 MiB)" test "$hwm" -le $((48 * 1024))
fi
t_ok "the 80 MiB object has the file's bytes" cmp "$UPLOADS/$j/big80" "$(s3_object_file "jobs/$j/uploads/big80")"
t_ok "the 300 MiB object has the file's bytes" cmp "$UPLOADS/$j/big300" "$(s3_object_file "jobs/$j/uploads/big300")"
t_is "$(s3_stats | json_get by_method POST)" 4 "two Create and two Complete requests"
# Each body is covered by one digest, the SHA-256 it is signed with (which
# S3 checks); outboxd computes no MD5 and sends no Content-MD5 (issue 15).
_puts_covered() {
	curl -sS --noproxy '*' -f "$S3_PROXY_URL/__proxy/puts" | node -e '
		let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
			const v = JSON.parse(s);
			const signed = v.filter(p => p.content_sha256 === p.sha256).length;
			const md5 = v.filter(p => p.content_md5).length;
			console.log(`${v.length} ${signed} ${md5}`);
		});'
}
read -r nput nsigned nmd5 <<<"$(_puts_covered)"
t_ok "all $nput part PUTs (>= 10 + 38) are signed with their body's own SHA-256" \
	test "$nput" -ge 48 -a "$nsigned" = "$nput"
t_is "$nmd5" 0 "no PUT carries Content-MD5: the signed SHA-256 already covers the body"
t_is "$(grep -c 'parts)' "$IT_DIR/outboxd.log")" 2 "both logged as multipart uploads"

# kill -9 in the middle of a multipart upload.
s3_reset_stats
s3_fault '{"type":"delay","seconds":60,"ms":400,"method":"PUT","query":"partNumber"}'
head -c $((200 * 1024 * 1024)) /dev/urandom >"$IT_DIR/crash200"
mv "$IT_DIR/crash200" "$UPLOADS/$j/"
_parts_recorded() { [ "$(sqlite3 "$OUTBOXD_STATE_DB" 'select count(*) from parts')" -ge 5 ]; }
t_ok "parts are recorded as S3 acknowledges them" wait_for 120 _parts_recorded
ob_kill
recorded=$(sqlite3 "$OUTBOXD_STATE_DB" 'select count(*) from parts')
t_ok "the upload id survived the crash" test -n "$(sqlite3 "$OUTBOXD_STATE_DB" "select s3_upload_id from entries where path like '%crash200'")"
s3_clear_faults
ob_start
t_ok "after the restart the upload resumes and completes" ob_wait_idle 240 3
parts_put=$(s3_stats | json_get by_method PUT)
t_diag "$recorded of 25 parts were recorded before the kill; $parts_put part PUTs in all"
t_ok "recorded parts were not sent again ($parts_put PUTs <= 25 + 16 in flight at the kill, the default concurrency)" test "$parts_put" -le 41
t_ok "the resumed object has the file's bytes" cmp "$UPLOADS/$j/crash200" "$(s3_object_file "jobs/$j/uploads/crash200")"
t_is "$(sqlite3 "$OUTBOXD_STATE_DB" 'select count(*) from parts')" 0 "no parts left recorded"

# A reply lost after CompleteMultipartUpload stored the object.
s3_fault '{"type":"lost_reply","count":1,"method":"POST","query":"uploadId"}'
head -c $((70 * 1024 * 1024)) /dev/urandom >"$IT_DIR/lost70"
mv "$IT_DIR/lost70" "$UPLOADS/$j/"
t_ok "a lost Complete reply still ends with the file stored" ob_wait_idle 120 4
t_ok "with its bytes" cmp "$UPLOADS/$j/lost70" "$(s3_object_file "jobs/$j/uploads/lost70")"

# A file that changes while it is being uploaded.
s3_fault '{"type":"delay","seconds":60,"ms":300,"method":"PUT","query":"partNumber"}'
head -c $((100 * 1024 * 1024)) /dev/urandom >"$IT_DIR/moving"
mv "$IT_DIR/moving" "$UPLOADS/$j/"
_sending() { [ "$(sqlite3 "$OUTBOXD_STATE_DB" "select count(*) from parts p join entries e on e.id = p.entry_id where e.path like '%moving'")" -ge 1 ]; }
t_ok "the upload of a 100 MiB file is under way" wait_for 120 _sending
head -c $((90 * 1024 * 1024)) /dev/urandom >"$UPLOADS/$j/.moving.tmp"
mv "$UPLOADS/$j/.moving.tmp" "$UPLOADS/$j/moving"
s3_clear_faults
t_ok "the new version is stored" ob_wait_idle 240 6
t_ok "S3 has the new version's bytes" cmp "$UPLOADS/$j/moving" "$(s3_object_file "jobs/$j/uploads/moving")"
# The first version is either abandoned mid-upload (a part's reply saw the
# file replaced) or, when S3 had completed it already, stored whole before
# the second: a completed upload holds exactly the bytes hashed.
t_ok "the first version's upload was abandoned, or stored whole before the second" \
	grep -Eq 'moving: (skipped: the file changed while it was being sent|stored s3://.* \(104857600 bytes)' "$IT_DIR/outboxd.log"
_aborted_if_abandoned() {
	! grep -q 'moving: skipped: the file changed while it was being sent' "$IT_DIR/outboxd.log" ||
		grep -q 'aborted the abandoned multipart upload of .*moving' "$IT_DIR/outboxd.log"
}
t_ok "an abandoned upload is aborted in S3" _aborted_if_abandoned
_no_dangling() { [ "$(uploads_left)" = 0 ] && [ "$(sqlite3 "$OUTBOXD_STATE_DB" 'select count(*) from aborts')" = 0 ]; }
t_ok "no multipart upload is left dangling in S3" wait_for 30 _no_dangling
t_is "$(ob_status failed)" 0 "nothing failed"
ob_check_db
ob_stop
t_done
