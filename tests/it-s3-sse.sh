#!/bin/bash
# it-s3-sse.sh - OUTBOXD_S3_SSE, OUTBOXD_S3_SSE_KMS_KEY_ID and
# OUTBOXD_S3_STORAGE_CLASS reach S3 on the requests that make an object
# (a single PutObject, a CreateMultipartUpload), signed, and on no part or
# Complete (S3 refuses them there); under an SSE-KMS bucket (the proxy's
# emulation: no ETag is an MD5) both files are stored and outboxctl verify
# finds nothing wrong. A bad value stops outboxd at start (exit 78).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init s3-sse
pg_start
s3_start
ob_setup

KEY_ARN=arn:aws:kms:us-east-1:111122223333:key/0ut60xd0-test-4kms-0000-000000000000

# A bad value: one problem line each, exit 78 (EX_CONFIG), nothing sent.
set +e
OUTBOXD_S3_SSE=kms OUTBOXD_S3_STORAGE_CLASS=COLD OUTBOXD_S3_SSE_KMS_KEY_ID=k \
	"$OUTBOXD" --once >"$IT_DIR/bad.out" 2>&1
rc=$?
set -e
t_is "$rc" 78 "bad SSE and storage class values stop outboxd with EX_CONFIG"
t_ok "OUTBOXD_S3_SSE=kms is named" grep -q 'OUTBOXD_S3_SSE=kms: must be AES256 or aws:kms' "$IT_DIR/bad.out"
t_ok "OUTBOXD_S3_STORAGE_CLASS=COLD is named" grep -q 'OUTBOXD_S3_STORAGE_CLASS=COLD: must be one of' "$IT_DIR/bad.out"
t_ok "a KMS key without aws:kms is named" grep -q 'OUTBOXD_S3_SSE_KMS_KEY_ID is set but OUTBOXD_S3_SSE is not aws:kms' "$IT_DIR/bad.out"

export OUTBOXD_S3_SSE=aws:kms OUTBOXD_S3_SSE_KMS_KEY_ID=$KEY_ARN
export OUTBOXD_S3_STORAGE_CLASS=STANDARD_IA
export OUTBOXD_MULTIPART_THRESHOLD=5MiB
curl -sS --noproxy '*' -f -o /dev/null -X POST -H 'Content-Type: application/json' \
	--data-binary '{"on":true}' "$S3_PROXY_URL/__proxy/kms"
s3_reset_stats
ob_start
j=$(new_job)
mkdir -p "$UPLOADS/$j"
head -c 3000 /dev/urandom >"$IT_DIR/small.bin"
head -c $((20 * 1024 * 1024)) /dev/urandom >"$IT_DIR/big.bin"	# 3 parts of 8 MiB
mv "$IT_DIR/small.bin" "$IT_DIR/big.bin" "$UPLOADS/$j/"
t_ok "both files are stored under SSE-KMS" ob_wait_idle 60 2
t_is "$(ob_status failed)" 0 "nothing failed"
t_ok "the small object has the file's bytes" cmp "$UPLOADS/$j/small.bin" "$(s3_object_file "jobs/$j/uploads/small.bin")"
t_ok "the multipart object has the file's bytes" cmp "$UPLOADS/$j/big.bin" "$(s3_object_file "jobs/$j/uploads/big.bin")"

# The proxy's log of PUTs and POSTs: which carried the headers, signed.
curl -sS --noproxy '*' -f "$S3_PROXY_URL/__proxy/writes" >"$IT_DIR/writes.json"
# _writes FILTER: "N W S" = requests matching FILTER (a JS expression of w),
# how many carry all three headers with the configured values, how many
# carry any of them; and S = how many of those carrying them signed them.
_writes() {
	KEY_ARN=$KEY_ARN node -e '
		const v = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
		const names = ["x-amz-server-side-encryption",
			"x-amz-server-side-encryption-aws-kms-key-id", "x-amz-storage-class"];
		const want = ["aws:kms", process.env.KEY_ARN, "STANDARD_IA"];
		const m = v.filter(w => ('"$1"'));
		const all = m.filter(w => names.every((n, i) => w.headers[n] === want[i])).length;
		const any = m.filter(w => names.some(n => n in w.headers));
		const signed = any.filter(w => Object.keys(w.headers).every(n => w.signed.includes(n))).length;
		console.log(`${m.length} ${all} ${any.length} ${signed}`);
	' "$IT_DIR/writes.json"
}
read -r n all any signed <<<"$(_writes "w.method === 'PUT' && w.path.endsWith('/small.bin') && w.query === ''")"
t_ok "the single PutObject carried SSE, the KMS key id and the storage class ($all of $n)" test "$n" -ge 1 -a "$all" = "$n"
t_is "$signed" "$any" "and signed them (in SignedHeaders)"
read -r n all any signed <<<"$(_writes "w.method === 'POST' && w.path.endsWith('/big.bin') && w.query === 'uploads'")"
t_ok "CreateMultipartUpload carried all three ($all of $n)" test "$n" -ge 1 -a "$all" = "$n"
t_is "$signed" "$any" "and signed them"
read -r n all any signed <<<"$(_writes "w.method === 'PUT' && w.path.endsWith('/big.bin') && /partNumber=/.test(w.query)")"
t_ok "no UploadPart carried them ($any of $n parts; S3 refuses them there)" test "$n" -ge 3 -a "$any" = 0
read -r n all any signed <<<"$(_writes "w.method === 'POST' && w.path.endsWith('/big.bin') && /uploadId=/.test(w.query)")"
t_ok "nor CompleteMultipartUpload ($any of $n)" test "$n" -ge 1 -a "$any" = 0

# The ETags outboxd recorded are the KMS ones, not MD5s; verify still holds.
md5=$(openssl dgst -md5 -r "$UPLOADS/$j/small.bin" | cut -d' ' -f1)
etag=$(sqlite3 "$OUTBOXD_STATE_DB" "select s3_etag from entries where path like '%small.bin'" | tr -d '"')
t_ok "under SSE-KMS the small object's ETag ($etag) is not its MD5 ($md5)" test -n "$etag" -a "$etag" != "$md5"
set +e
"$OUTBOXCTL" verify >"$IT_DIR/verify.out" 2>&1
rc=$?
set -e
t_is "$rc" 0 "outboxctl verify passes under SSE-KMS (it compares sizes and x-amz-meta-sha256, not ETags as MD5s)"
t_diag "verify: $(tail -1 "$IT_DIR/verify.out")"
ob_check_db
ob_stop
t_done
