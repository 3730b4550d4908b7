#!/bin/bash
# it-s3-streaming.sh - issue 15's streaming PUT: with OUTBOXD_S3_STREAMING
# a single PUT of a file over 256 KiB goes aws-chunked
# (STREAMING-UNSIGNED-PAYLOAD-TRAILER, signed with that literal) with its
# SHA-256 in a trailing x-amz-checksum-sha256 computed while it is sent;
# the proxy verifies the seed signature, decodes the body, checks the
# trailer against it and forwards the decoded bytes. By default (https
# only) nothing streams to this plain-http endpoint. The documents row's
# sha256 is the one computed during the send; the object has no
# x-amz-meta-sha256, so verify judges it by the checksum S3 keeps (and
# notices when that differs). A body damaged in transit is refused
# (BadDigest) and sent again; hand-made bodies with a wrong trailer or
# broken framing are refused; a bad setting stops outboxd (exit 78).
# The SHA-256 is a hasher thread's, computed beside the send: the body
# goes out before it is known and the trailer waits for it; a file
# changed between the hasher's read and the sender's is refused
# (BadDigest) and its new version stored with its own sha256.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init s3-streaming
pg_start
s3_start
ob_setup

b64sha() { openssl dgst -sha256 -binary "$@" | base64; }
# _puts FILTER: "N S" = PUTs matching FILTER (a JS expression of p), and
# how many of them were streamed with a trailer that was their decoded
# body's checksum
_puts() {
	curl -sS --noproxy '*' -f "$S3_PROXY_URL/__proxy/puts" | node -e '
		let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
			const v = JSON.parse(s).filter(p => ('"$1"'));
			const st = v.filter(p => p.content_sha256 === "STREAMING-UNSIGNED-PAYLOAD-TRAILER" &&
				p.content_encoding === "aws-chunked" && p.trailer_checksum !== null &&
				p.decoded_length !== null && p.length > p.decoded_length);
			console.log(`${v.length} ${st.length}`);
		});'
}

set +e
OUTBOXD_S3_STREAMING=sometimes "$OUTBOXD" --once >"$IT_DIR/bad.out" 2>&1
rc=$?
set -e
t_is "$rc" 78 "OUTBOXD_S3_STREAMING=sometimes stops outboxd with EX_CONFIG"
t_ok "and is named" grep -q 'OUTBOXD_S3_STREAMING=sometimes: must be https' "$IT_DIR/bad.out"

# The default streams only to https endpoints: this one is plain http.
j=$(new_job)
mkdir -p "$UPLOADS/$j"
head -c $((3 * 1024 * 1024)) /dev/urandom >"$IT_DIR/plain.bin"
mv "$IT_DIR/plain.bin" "$UPLOADS/$j/"
ob_start
t_ok "a 3 MiB file is stored" ob_wait_idle 60 1
read -r n st <<<"$(_puts "p.path.endsWith('/plain.bin')")"
t_ok "by default (https only) it is not streamed to a plain-http endpoint ($st of $n)" test "$n" -ge 1 -a "$st" = 0
ob_stop

export OUTBOXD_S3_STREAMING=always
s3_reset_stats
head -c $((3 * 1024 * 1024 + 12345)) /dev/urandom >"$IT_DIR/s3.bin"
head -c $((40 * 1024 * 1024)) /dev/urandom >"$IT_DIR/s40.bin"
head -c $((100 * 1024)) /dev/urandom >"$IT_DIR/small.bin"
mv "$IT_DIR/s3.bin" "$IT_DIR/s40.bin" "$IT_DIR/small.bin" "$UPLOADS/$j/"
ob_start
t_ok "with OUTBOXD_S3_STREAMING=always a 3 MiB, a 40 MiB and a 100 KiB file are stored" ob_wait_idle 60 4
t_is "$(ob_status failed)" 0 "nothing failed"
t_is "$(s3_rejections)" 0 "the proxy refused nothing"
for f in s3.bin s40.bin small.bin; do
	t_ok "$f: the object has the file's bytes (decoded by the proxy)" cmp "$UPLOADS/$j/$f" "$(s3_object_file "jobs/$j/uploads/$f")"
done
read -r n st <<<"$(_puts "/\\/s(3|40)\\.bin$/.test(p.path)")"
t_ok "both large PUTs went aws-chunked with a trailing checksum ($st of $n)" test "$n" = 2 -a "$st" = 2
read -r n st <<<"$(_puts "p.path.endsWith('/small.bin')")"
t_ok "the 100 KiB one (kept in memory) is signed with its SHA-256 as before ($st of $n streamed)" test "$n" = 1 -a "$st" = 0
got=$(curl -sS --noproxy '*' -f "$S3_PROXY_URL/__proxy/puts" | node -e '
	let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
		const p = JSON.parse(s).find(p => p.path.endsWith("/s40.bin"));
		console.log(p.trailer_checksum);
	});')
t_is "$got" "$(b64sha "$UPLOADS/$j/s40.bin")" "the trailer is the file's SHA-256"
meta=$(s3_object_metadata "jobs/$j/uploads/s40.bin")
t_ok "a streamed object has no x-amz-meta-sha256" sh -c "! grep -q 'x-amz-meta-sha256' '$meta'"
t_ok "and no aws-chunked Content-Encoding" sh -c "! grep -qi 'aws-chunked' '$meta'"
row=$(pg_psql -c "select sha256 from is_migration.documents where file_path like '%s40.bin'")
t_is "$row" "$(sha256sum <"$UPLOADS/$j/s40.bin" | cut -d' ' -f1)" "the documents row's sha256 is the one computed while sending"
ob_check_db

# verify: judged by the checksum S3 keeps (no x-amz-meta-sha256 here).
t_ok "outboxctl verify passes" "$OUTBOXCTL" verify
curl -sS --noproxy '*' -f -o /dev/null -X POST -H 'Content-Type: application/json' \
	--data-binary "{\"path\":\"/$S3_BUCKET/jobs/$j/uploads/s40.bin\",\"sha256\":\"$(b64sha "$UPLOADS/$j/small.bin")\"}" \
	"$S3_PROXY_URL/__proxy/checksum"
set +e
"$OUTBOXCTL" verify >"$IT_DIR/verify.out" 2>&1
rc=$?
set -e
t_is "$rc" 1 "verify exits 1 when a streamed object's stored checksum differs"
t_ok "naming it" grep -q "^differs in S3: jobs/$j/uploads/s40.bin " "$IT_DIR/verify.out"
s3_clear_faults

# Damage in transit: the proxy flips a byte of outboxd's body; the trailer
# check refuses it (BadDigest, retried) and the file arrives intact.
s3_reset_stats
s3_fault '{"type":"corrupt","count":1,"method":"PUT","match":"/again.bin"}'
head -c $((2 * 1024 * 1024)) /dev/urandom >"$IT_DIR/again.bin"
mv "$IT_DIR/again.bin" "$UPLOADS/$j/"
t_ok "a streamed file whose body was damaged in transit is stored after all" ob_wait_idle 60 5
t_ok "intact" cmp "$UPLOADS/$j/again.bin" "$(s3_object_file "jobs/$j/uploads/again.bin")"
t_ok "the damaged PUT was refused with BadDigest" grep -q '"code":"BadDigest".*again.bin\|again.bin.*"code":"BadDigest"' "$IT_DIR/s3proxy-rejections.jsonl"
read -r n st <<<"$(_puts "p.path.endsWith('/again.bin')")"
t_ok "and it was sent again: 2 streamed PUTs, the second decoded with a good trailer ($st of $n)" test "$n" = 2 -a "$st" = 1
ob_stop

# Hashed beside the send, paced by the hasher: every hasher job is slowed
# to take 9 s (OUTBOXD_TEST_HASH_DELAY_MS, spread over its chunks). A
# streamed 40 MiB file's body then arrives at the hasher's pace, never
# more than 8 MiB ahead of it, and the trailer comes alone once the last
# bytes are hashed. A digest computed in the read callback would be
# framed with the last bytes at once, and hashing first would send
# nothing for 9 s. With OUTBOXD_S3_TIMEOUT_S=2 the PUT is stored at its
# first attempt: it never waits long (the review found the old form, the
# whole body sent at once and the trailer paused 9 s for the digest,
# abandoned as stalled at every attempt: curl counts a paused upload as
# stalled).
# _put_field FILE FIELD: FIELD of the first PUT of FILE in the proxy's log
_put_field() {
	curl -sS --noproxy '*' -f "$S3_PROXY_URL/__proxy/puts" | node -e '
		let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
			const p = JSON.parse(s).find(p => p.path.endsWith("/'"$1"'"));
			console.log(p ? ("'"$2"'" === "body_ms" ? Date.parse(p.time) - Date.parse(p.started) : p["'"$2"'"]) : "none");
		});'
}
export OUTBOXD_TEST_HASH_DELAY_MS=9000
s3_reset_stats
OUTBOXD_S3_TIMEOUT_S=2 ob_start
head -c $((40 * 1024 * 1024)) /dev/urandom >"$IT_DIR/beside.bin"
mv "$IT_DIR/beside.bin" "$UPLOADS/$j/"
t_ok "a streamed 40 MiB file whose hasher takes 9 s is stored" ob_wait_idle 60 6
t_ok "intact" cmp "$UPLOADS/$j/beside.bin" "$(s3_object_file "jobs/$j/uploads/beside.bin")"
ms=$(_put_field beside.bin body_ms)
t_ok "its body was paced by the hasher: it took $ms ms to arrive (>= 6,000)" test "$ms" -ge 6000
len=$(_put_field beside.bin last_read)
gap=$(_put_field beside.bin last_wait_ms)
t_ok "the trailer came alone ($len bytes) after the hasher caught up ($gap ms)" \
	test "$len" -le 100 -a "$gap" -ge 100
t_ok "at the first attempt: the 2 s stall limit was never reached" sh -c "! grep -q 'beside.bin: attempt' '$IT_DIR/outboxd.log'"
t_is "$(_put_field beside.bin trailer_checksum)" "$(b64sha "$UPLOADS/$j/beside.bin")" "the trailer is the hasher's SHA-256 of the file"
row=$(pg_psql -c "select sha256 from is_migration.documents where file_path like '%beside.bin'")
t_is "$row" "$(sha256sum <"$UPLOADS/$j/beside.bin" | cut -d' ' -f1)" "and the documents row's"
ob_stop

# Queued behind other files' hashing: six streamed 8 MiB files at once,
# each hasher job taking 3 s on the 2 workers, so the last two wait about
# 6 s for a worker. A streamed PUT starts only once a worker hashes its
# file, so none waits long at its trailer: all six are stored at their
# first attempt with OUTBOXD_S3_TIMEOUT_S=2 (the review saw the last two
# abandoned as stalled when every PUT started at once).
export OUTBOXD_TEST_HASH_DELAY_MS=3000
s3_reset_stats
OUTBOXD_S3_TIMEOUT_S=2 ob_start
mkdir -p "$IT_DIR/six"
for i in 1 2 3 4 5 6; do head -c $((8 * 1024 * 1024)) /dev/urandom >"$IT_DIR/six/q$i.bin"; done
mv "$IT_DIR/six/"q*.bin "$UPLOADS/$j/"
t_ok "six streamed files queued on two slow hashers are stored" ob_wait_idle 60 12
t_ok "each at its first attempt" sh -c "! grep -q 'q[1-6].bin: attempt' '$IT_DIR/outboxd.log'"
read -r n st <<<"$(_puts "/\/q[1-6][.]bin\$/.test(p.path)")"
t_ok "with one streamed PUT each ($st of $n)" test "$n" = 6 -a "$st" = 6
for i in 1 6; do
	t_ok "q$i.bin intact" cmp "$UPLOADS/$j/q$i.bin" "$(s3_object_file "jobs/$j/uploads/q$i.bin")"
done
ob_stop

# Changed between the two reads: each hasher job slowed to 8 s, so the
# body is sent at the hasher's pace, up to 8 MiB ahead of it. Once the
# proxy has 16 MiB of the first version, the file is rewritten in place:
# the bytes between the hasher's position and the sender's went out as
# the first version but are hashed as the second, so the trailer does not
# match the body: S3 refuses it (BadDigest), outboxd finds the file
# changed (that version skipped, not a failed attempt that would pause
# the leg) and sends the new version the watcher journals, and the row's
# sha256 is the new content's, never the first body's nor a mix.
export OUTBOXD_TEST_HASH_DELAY_MS=8000
s3_reset_stats
ob_start
# _received PATH BYTES: the proxy has BYTES of the body of PATH so far
_received() {
	[ "$(s3_stats | json_get receiving "$1" 2>/dev/null || echo 0)" -ge "$2" ]
}
head -c $((40 * 1024 * 1024)) /dev/urandom >"$IT_DIR/chg.bin"
head -c $((40 * 1024 * 1024)) /dev/urandom >"$IT_DIR/chg2.bin"
mv "$IT_DIR/chg.bin" "$UPLOADS/$j/"
t_ok "16 MiB of the first version reach the proxy while it is hashed" \
	wait_for 15 _received "/$S3_BUCKET/jobs/$j/uploads/chg.bin" $((16 * 1024 * 1024))
dd if="$IT_DIR/chg2.bin" of="$UPLOADS/$j/chg.bin" bs=1M conv=notrunc status=none
new_sha=$(sha256sum <"$IT_DIR/chg2.bin" | cut -d' ' -f1)
_row_is_new() {
	[ "$(pg_psql -c "select sha256 from is_migration.documents where file_path = 'chg.bin'")" = "$new_sha" ]
}
t_ok "the file changed while it was streamed is stored with the new content's sha256" wait_for 60 _row_is_new
t_ok "the first PUT (the trailer hashed partly from the new bytes) was refused with BadDigest" \
	grep -q '"code":"BadDigest".*chg.bin\|chg.bin.*"code":"BadDigest"' "$IT_DIR/s3proxy-rejections.jsonl"
t_ok "and the object holds the new content" wait_for 20 cmp -s "$IT_DIR/chg2.bin" "$(s3_object_file "jobs/$j/uploads/chg.bin")"
t_ok "the refusal was taken as the file's change (that version skipped, the new one journaled)" \
	grep -q 'chg.bin.*changed while it was being sent' "$IT_DIR/outboxd.log"
t_ok "not as a failed attempt, which would pause the whole S3 leg for one file's change" \
	sh -c "! grep -q 'chg.bin.*attempt [0-9]* failed' '$IT_DIR/outboxd.log'"
t_ok "and nothing is pending" ob_wait_idle 60 13
t_is "$(ob_status failed)" 0 "nothing failed"
ob_stop
unset OUTBOXD_TEST_HASH_DELAY_MS

# Hand-made aws-chunked PUTs: a wrong trailer, and broken framing.
# chunked FILE TRAILER: the aws-chunked encoding of FILE (one chunk)
chunked() {
	printf '%x\r\n' "$(stat -c %s "$1")"
	cat "$1"
	printf '\r\n0\r\nx-amz-checksum-sha256:%s\r\n\r\n' "$2"
}
put_chunked() {	# put_chunked BODYFILE DECODEDLEN KEY: HTTP status
	_it_s3_curl -o "$IT_DIR/reply.xml" -w '%{http_code}' -X PUT --data-binary "@$1" \
		-H 'x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER' \
		-H 'Content-Encoding: aws-chunked' -H "x-amz-decoded-content-length: $2" \
		-H 'x-amz-trailer: x-amz-checksum-sha256' "$S3_PROXY_URL/$S3_BUCKET/$3"
}
echo "hello, streamed world" >"$IT_DIR/h.txt"
echo "another body" >"$IT_DIR/o.txt"
hl=$(stat -c %s "$IT_DIR/h.txt")
chunked "$IT_DIR/h.txt" "$(b64sha "$IT_DIR/h.txt")" >"$IT_DIR/good.body"
chunked "$IT_DIR/h.txt" "$(b64sha "$IT_DIR/o.txt")" >"$IT_DIR/wrong.body"
head -c $(($(stat -c %s "$IT_DIR/good.body") - 30)) "$IT_DIR/good.body" >"$IT_DIR/cut.body"
t_is "$(put_chunked "$IT_DIR/good.body" "$hl" probe/good.txt)" 200 "a hand-made aws-chunked PUT with the right trailer is stored"
t_ok "decoded" cmp "$IT_DIR/h.txt" "$(s3_object_file probe/good.txt)"
t_is "$(put_chunked "$IT_DIR/wrong.body" "$hl" probe/wrong.txt)" 400 "one whose trailer is another body's checksum is refused"
t_ok "with BadDigest" grep -q '<Code>BadDigest</Code>' "$IT_DIR/reply.xml"
t_is "$(put_chunked "$IT_DIR/cut.body" "$hl" probe/cut.txt)" 400 "one whose framing is cut short is refused"
t_ok "with IncompleteBody" grep -q '<Code>IncompleteBody</Code>' "$IT_DIR/reply.xml"
t_is "$(put_chunked "$IT_DIR/good.body" "$((hl + 1))" probe/len.txt)" 400 "one whose x-amz-decoded-content-length is wrong is refused"
t_ok "and none of the refused ones is stored" sh -c "! ls '$S3_DATA_DIR/$S3_BUCKET/probe/' | grep -Eq 'wrong|cut|len'"
s3_expect_rejections 5
t_done
