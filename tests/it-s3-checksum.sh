#!/bin/bash
# it-s3-checksum.sh - the checksum S3 keeps (issue 14): every PUT and
# UploadPart carries x-amz-checksum-sha256 (the base64 of its body's
# SHA-256), signed; CreateMultipartUpload declares x-amz-checksum-algorithm
# SHA256 and Complete lists each part's ChecksumSHA256 (the proxy refuses
# a list without them, as S3 does); the proxy refuses a body whose
# checksum is wrong (BadDigest), so its check can fail; a HEAD in checksum
# mode returns the stored checksum (the full-object one for a PUT, the
# composite "<base64>-N" for a multipart upload), none without it; and
# outboxctl verify and the scrub report an object whose stored checksum
# differs from the file although its size and x-amz-meta-sha256 match.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init s3-checksum
pg_start
s3_start
ob_setup

b64sha() { openssl dgst -sha256 -binary "$@" | base64; }
# composite FILE PARTSIZE: S3's composite checksum of FILE sent in parts
composite() {
	local f=$1 ps=$2 size n=0 off=0
	size=$(stat -c %s "$f")
	: >"$IT_DIR/digests"
	while [ "$off" -lt "$size" ]; do
		tail -c +$((off + 1)) "$f" | head -c "$ps" | openssl dgst -sha256 -binary >>"$IT_DIR/digests"
		off=$((off + ps))
		n=$((n + 1))
	done
	printf '%s-%d\n' "$(b64sha "$IT_DIR/digests")" "$n"
}
head_checksum() {	# head_checksum KEY [CURL ARGS]: the x-amz-checksum-sha256 answered
	local k=$1
	shift
	_it_s3_curl -f -I -H "x-amz-content-sha256: $IT_EMPTY_SHA256" "$@" \
		"$S3_PROXY_URL/$S3_BUCKET/$(s3_urlencode "$k")" | tr -d '\r' |
		awk -F': ' 'tolower($1) == "x-amz-checksum-sha256" {print $2}'
}

export OUTBOXD_MULTIPART_THRESHOLD=5MiB OUTBOXD_SCRUB_INTERVAL=0
s3_reset_stats
ob_start
j=$(new_job)
mkdir -p "$UPLOADS/$j"
head -c 3000 /dev/urandom >"$IT_DIR/small.bin"		# a PUT from memory
head -c $((400 * 1024)) /dev/urandom >"$IT_DIR/mid.bin"	# a PUT from the file
head -c $((20 * 1024 * 1024)) /dev/urandom >"$IT_DIR/big.bin"	# 3 parts of 8 MiB
mv "$IT_DIR/small.bin" "$IT_DIR/mid.bin" "$IT_DIR/big.bin" "$UPLOADS/$j/"
t_ok "the three files are stored" ob_wait_idle 60 3
t_is "$(ob_status failed)" 0 "nothing failed"
t_is "$(s3_rejections)" 0 "the proxy refused nothing (Complete listed every part's checksum)"
t_ok "the multipart object has the file's bytes" cmp "$UPLOADS/$j/big.bin" "$(s3_object_file "jobs/$j/uploads/big.bin")"

# Every PUT's x-amz-checksum-sha256 is its body's own, and signed.
curl -sS --noproxy '*' -f "$S3_PROXY_URL/__proxy/puts" >"$IT_DIR/puts.json"
curl -sS --noproxy '*' -f "$S3_PROXY_URL/__proxy/writes" >"$IT_DIR/writes.json"
read -r nput nck <<<"$(node -e '
	const v = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
	const ok = v.filter(p => p.checksum_sha256 === Buffer.from(p.sha256, "hex").toString("base64"));
	console.log(`${v.length} ${ok.length}`);' "$IT_DIR/puts.json")"
t_ok "all $nput PUTs (2 objects + 3 parts) carry x-amz-checksum-sha256 of their own body" \
	test "$nput" -ge 5 -a "$nck" = "$nput"
read -r nsigned <<<"$(node -e '
	const v = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
	console.log(v.filter(w => w.method === "PUT" && w.signed.includes("x-amz-checksum-sha256")).length);' "$IT_DIR/writes.json")"
t_is "$nsigned" "$nput" "and sign it"
read -r ncreate <<<"$(node -e '
	const v = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
	console.log(v.filter(w => w.method === "POST" && w.query === "uploads" &&
		w.headers["x-amz-checksum-algorithm"] === "SHA256" &&
		w.signed.includes("x-amz-checksum-algorithm")).length);' "$IT_DIR/writes.json")"
t_is "$ncreate" 1 "CreateMultipartUpload declares x-amz-checksum-algorithm: SHA256, signed"

# HEAD in checksum mode returns what S3 keeps; without it, nothing.
got=$(head_checksum "jobs/$j/uploads/small.bin" -H 'x-amz-checksum-mode: ENABLED')
t_is "$got" "$(b64sha "$UPLOADS/$j/small.bin")" "HEAD in checksum mode returns the PUT's full-object checksum"
got=$(head_checksum "jobs/$j/uploads/big.bin" -H 'x-amz-checksum-mode: ENABLED')
t_is "$got" "$(composite "$UPLOADS/$j/big.bin" $((8 * 1024 * 1024)))" \
	"and the multipart object's composite checksum (of the 3 parts' SHA-256s, -3)"
t_is "$(head_checksum "jobs/$j/uploads/small.bin")" "" "a HEAD without checksum mode returns no checksum"
hidden=$(_it_s3_curl -f -I -H "x-amz-content-sha256: $IT_EMPTY_SHA256" -H 'x-amz-checksum-mode: ENABLED' \
	"$S3_PROXY_URL/$S3_BUCKET/jobs/$j/uploads/small.bin" | grep -ci 's3proxy' || true)
t_is "$hidden" 0 "no reply shows the proxy's hidden x-amz-meta-s3proxy-* headers"

# The proxy's check can fail: a signed PUT (x-amz-content-sha256 right)
# whose x-amz-checksum-sha256 is another body's is refused, not stored.
echo "some bytes" >"$IT_DIR/one.txt"
echo "other bytes" >"$IT_DIR/two.txt"
code=$(_it_s3_curl -o "$IT_DIR/bad.xml" -w '%{http_code}' -X PUT --data-binary "@$IT_DIR/one.txt" \
	-H "x-amz-content-sha256: $(sha256sum <"$IT_DIR/one.txt" | cut -d' ' -f1)" \
	-H "x-amz-checksum-sha256: $(b64sha "$IT_DIR/two.txt")" \
	"$S3_PROXY_URL/$S3_BUCKET/probe/wrong-checksum.txt")
t_is "$code" 400 "a PUT whose x-amz-checksum-sha256 does not match its body is refused"
t_ok "with S3's BadDigest" grep -q '<Code>BadDigest</Code>' "$IT_DIR/bad.xml"
t_ok "and nothing is stored" test ! -e "$(s3_object_file probe/wrong-checksum.txt)"
code=$(_it_s3_curl -o "$IT_DIR/bad2.xml" -w '%{http_code}' -X PUT --data-binary "@$IT_DIR/one.txt" \
	-H "x-amz-content-sha256: $(sha256sum <"$IT_DIR/one.txt" | cut -d' ' -f1)" \
	-H "x-amz-checksum-sha256: not-base64" \
	"$S3_PROXY_URL/$S3_BUCKET/probe/bad-checksum.txt")
t_is "$code" 400 "a malformed x-amz-checksum-sha256 is refused"
t_ok "with InvalidRequest" grep -q '<Code>InvalidRequest</Code>' "$IT_DIR/bad2.xml"
code=$(_it_s3_curl -o /dev/null -w '%{http_code}' -X PUT --data-binary "@$IT_DIR/one.txt" \
	-H "x-amz-content-sha256: $(sha256sum <"$IT_DIR/one.txt" | cut -d' ' -f1)" \
	-H "x-amz-checksum-sha256: $(b64sha "$IT_DIR/one.txt")" \
	"$S3_PROXY_URL/$S3_BUCKET/probe/right-checksum.txt")
t_is "$code" 200 "the same PUT with its own checksum is stored"
# An upload created with x-amz-checksum-algorithm SHA256 whose Complete
# does not list the part's checksum is refused, as S3 does.
mp=probe/no-part-checksum.bin
head -c $((5 * 1024 * 1024 + 1)) /dev/urandom >"$IT_DIR/part1"
_it_s3_curl -f -o "$IT_DIR/create.xml" -X POST -H "x-amz-content-sha256: $IT_EMPTY_SHA256" \
	-H 'x-amz-checksum-algorithm: SHA256' "$S3_PROXY_URL/$S3_BUCKET/$mp?uploads="
uid=$(sed -n 's:.*<UploadId>\([^<]*\)</UploadId>.*:\1:p' "$IT_DIR/create.xml")
etag=$(_it_s3_curl -f -D - -o /dev/null -X PUT --data-binary "@$IT_DIR/part1" \
	-H "x-amz-content-sha256: $(sha256sum <"$IT_DIR/part1" | cut -d' ' -f1)" \
	-H "x-amz-checksum-sha256: $(b64sha "$IT_DIR/part1")" \
	"$S3_PROXY_URL/$S3_BUCKET/$mp?partNumber=1&uploadId=$uid" | tr -d '\r' | awk -F': ' 'tolower($1) == "etag" {print $2}')
complete() {	# complete XML: Complete's HTTP status, the reply in complete.xml
	printf '%s' "$1" >"$IT_DIR/complete-req.xml"
	_it_s3_curl -o "$IT_DIR/complete.xml" -w '%{http_code}' -X POST --data-binary "@$IT_DIR/complete-req.xml" \
		-H "x-amz-content-sha256: $(sha256sum <"$IT_DIR/complete-req.xml" | cut -d' ' -f1)" \
		"$S3_PROXY_URL/$S3_BUCKET/$mp?uploadId=$uid"
}
t_is "$(complete "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>$etag</ETag></Part></CompleteMultipartUpload>")" 400 \
	"a Complete without the part's ChecksumSHA256 (the upload declared SHA256) is refused"
t_ok "with InvalidRequest" grep -q '<Code>InvalidRequest</Code>' "$IT_DIR/complete.xml"
t_is "$(complete "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>$etag</ETag><ChecksumSHA256>$(b64sha "$IT_DIR/one.txt")</ChecksumSHA256></Part></CompleteMultipartUpload>")" 400 \
	"a Complete naming another checksum than the part was sent with is refused"
t_ok "with InvalidPart" grep -q '<Code>InvalidPart</Code>' "$IT_DIR/complete.xml"
t_is "$(complete "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>$etag</ETag><ChecksumSHA256>$(b64sha "$IT_DIR/part1")</ChecksumSHA256></Part></CompleteMultipartUpload>")" 200 \
	"with the part's own checksum it completes"
t_is "$(head_checksum "$mp" -H 'x-amz-checksum-mode: ENABLED')" "$(composite "$IT_DIR/part1" $((6 * 1024 * 1024)))" \
	"and keeps the composite of one part (-1)"
s3_expect_rejections 4

# verify: all good; then an object whose stored checksum differs (its
# size and x-amz-meta-sha256 still match) is reported.
set +e
"$OUTBOXCTL" verify >"$IT_DIR/verify.out" 2>&1
rc=$?
set -e
t_is "$rc" 0 "outboxctl verify passes (checksums, sizes and x-amz-meta-sha256 agree)"
curl -sS --noproxy '*' -f -o /dev/null -X POST -H 'Content-Type: application/json' \
	--data-binary "{\"path\":\"/$S3_BUCKET/jobs/$j/uploads/mid.bin\",\"sha256\":\"$(b64sha "$IT_DIR/one.txt")\"}" \
	"$S3_PROXY_URL/__proxy/checksum"
set +e
"$OUTBOXCTL" verify >"$IT_DIR/verify2.out" 2>&1
rc=$?
set -e
t_is "$rc" 1 "verify exits 1 when S3's stored checksum differs from the file"
t_ok "and names the object" grep -q "^differs in S3: jobs/$j/uploads/mid.bin .*checksum $(b64sha "$IT_DIR/one.txt")" "$IT_DIR/verify2.out"
t_is "$(grep -c '^differs in S3' "$IT_DIR/verify2.out")" 1 "only that one"
t_diag "$(grep '^differs' "$IT_DIR/verify2.out")"

# The scrub judges with the same rule: it finds the one and journals a repair.
ob_stop
# (the interval counts from the outbox's creation: a pass starts at once)
export OUTBOXD_SCRUB_INTERVAL=2s OUTBOXD_SCRUB_RATE=50
ob_start
_scrub_found() { "$OUTBOXCTL" status | grep -Eq '^scrub:    pass [0-9]+ finished .*: 3 checked, 1 difference,'; }
t_ok "the scrub finds the object whose stored checksum differs" wait_for 30 _scrub_found
t_diag "$("$OUTBOXCTL" status | grep '^scrub:')"
ob_stop
t_done
