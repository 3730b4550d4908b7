#!/bin/bash
# it-harness.sh -- the integration-test harness itself: PostgreSQL starts and
# keeps data across a restart; the verifying S3 proxy accepts what AWS
# accepts, refuses what AWS refuses (bad signature, bad Content-MD5, bad
# x-amz-content-sha256), reproduces AWS's published SigV4 vectors, and
# injects each fault once before letting requests through again.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

it_init harness

ms_since() { echo $((($(_it_now_us) - $1) / 1000)); }

# ------------------------------------------------------------ PostgreSQL
t0=$(_it_now_us)
pg_start
t_diag "PostgreSQL 15 up (initdb, start, createdb) in $(ms_since "$t0") ms on port $PG_PORT"
t_is "$(pg_psql 'select 1')" 1 "pg_psql 'select 1' works"
t_is "$DATABASE_URL" "postgresql://$PG_USER@127.0.0.1:$PG_PORT/outboxd" "DATABASE_URL names the test database"
t_ok "a table can be created and filled" \
	pg_psql 'create table t (x int)' 'insert into t values (41), (1)'
t0=$(_it_now_us)
t_ok "pg_restart" pg_restart
t_diag "pg_restart took $(ms_since "$t0") ms"
t_is "$(pg_psql 'select sum(x) from t')" 42 "data survives pg_restart"
t_ok "pg_stop" pg_stop
t_ok "the database refuses connections while stopped" \
	bash -c '! "$0" -X -At -d "$1" -c "select 1"' "$IT_PG_BINDIR/psql" "$DATABASE_URL"
t_ok "pg_up starts it again" pg_up
t_is "$(pg_psql 'select count(*) from t')" 2 "same data after pg_stop / pg_up"

# ------------------------------------------------------------ S3
t0=$(_it_now_us)
s3_start
t_diag "s3rver + verifying proxy up in $(ms_since "$t0") ms (s3rver $S3_UPSTREAM_URL, proxy $S3_PROXY_URL)"
t_is "$AWS_ENDPOINT_URL_S3" "$S3_PROXY_URL" "AWS_ENDPOINT_URL_S3 is the proxy"
t_is "$S3_BUCKET/$AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY/$AWS_REGION" \
	"outboxd-test/S3RVER/S3RVER/us-east-1" "bucket, credentials and region exported"

t_ok "the proxy reproduces AWS's SigV4 vectors 1-3 (incl. presign vector 3)" \
	env OUTBOXD_NODE_MODULES="$NODE_MODULES" node "$IT_SRCDIR/s3proxy.js" \
	--self-test "$IT_DATA/sigv4-vectors.md"

W=$IT_DIR/work
mkdir -p "$W"
head -c 100000 /dev/urandom >"$W/body"
sha=$(sha256sum <"$W/body" | cut -d' ' -f1)
md5=$(openssl dgst -md5 -binary <"$W/body" | base64)
key='jobs/6f1c0b4e-0000-4000-8000-000000000001/uploads/a b+c$(ü)&=~x.xml'
url=$S3_PROXY_URL/$S3_BUCKET/$(s3_urlencode "$key")

# put URL [curl args]: a PUT of $W/body signed by curl; prints the HTTP code
# then the body of the answer
put() {
	local u=$1
	shift
	_it_s3_curl -o "$W/answer" -w '%{http_code}' -X PUT --data-binary "@$W/body" \
		-H 'Content-Type: application/octet-stream' "$@" "$u" || true
	echo
	cat "$W/answer" 2>/dev/null || true
}
code() { sed -n 's/.*<Code>\(.*\)<\/Code>.*/\1/p' "$W/answer"; }

out=$(put "$url" -H "x-amz-content-sha256: $sha" -H "Content-MD5: $md5")
t_is "$(head -1 <<<"$out")" 200 "a correctly signed PUT (curl --aws-sigv4, SHA-256, Content-MD5) is accepted"
t_ok "s3_get: a signed GET (curl --aws-sigv4) is accepted" s3_get "$key" "$W/got"
t_ok "the object round-trips byte for byte" cmp "$W/got" "$W/body"
t_ok "s3_object_file holds the same bytes" cmp "$(s3_object_file "$key")" "$W/body"
t_is "$(s3_list jobs/)" "$key" "s3_list finds the key"
t_ok "s3_head shows the ETag (MD5 of the body)" \
	grep -qi "^etag: \"$(md5sum <"$W/body" | cut -d' ' -f1)\"" <(s3_head "$key")
u=$(OUTBOXD_NODE_MODULES=$NODE_MODULES node "$IT_SRCDIR/s3proxy.js" --presign "$url" \
	--access-key S3RVER --secret-key S3RVER --region us-east-1 --expires 60)
t_ok "a presigned GET (UNSIGNED-PAYLOAD) is accepted" \
	curl -sSf --noproxy '*' -o "$W/got2" "$u"
t_ok "... and returns the object" cmp "$W/got2" "$W/body"

# ------------------------------------------------------------ rejections
rej=0
out=$(_it_s3_curl -o "$W/answer" -w '%{http_code}' -X PUT --data-binary "@$W/body" \
	--user S3RVER:wrong-secret -H "x-amz-content-sha256: $sha" -H "Content-MD5: $md5" "$url")
rej=$((rej + 1))
t_is "$out $(code)" "403 SignatureDoesNotMatch" "a PUT signed with a wrong secret is refused"
out=$(put "$url" -H "x-amz-content-sha256: $sha" -H "Content-MD5: 1B2M2Y8AsgTpgAmY7PhCfg==")
rej=$((rej + 1))
t_is "$(head -1 <<<"$out") $(code)" "400 BadDigest" "a PUT whose body does not match its Content-MD5 is refused"
out=$(put "$url" -H "x-amz-content-sha256: $IT_EMPTY_SHA256" -H "Content-MD5: $md5")
rej=$((rej + 1))
t_is "$(head -1 <<<"$out") $(code)" "400 XAmzContentSHA256Mismatch" \
	"a PUT whose x-amz-content-sha256 does not match the body is refused"
out=$(put "$url" -H "x-amz-content-sha256: $sha")
t_is "$(head -1 <<<"$out")" 200 \
	"a PUT signed with its body's SHA-256 needs no Content-MD5 (the signed digest covers the body)"
pu=$(OUTBOXD_NODE_MODULES=$NODE_MODULES node "$IT_SRCDIR/s3proxy.js" --presign "$url" \
	--access-key S3RVER --secret-key S3RVER --region us-east-1 --expires 60 --method PUT)
out=$(curl -sS --noproxy '*' -o "$W/answer" -w '%{http_code}' -X PUT --data-binary "@$W/body" "$pu" || true)
rej=$((rej + 1))
t_is "$out $(code)" "400 InvalidRequest" \
	"a presigned PUT (UNSIGNED-PAYLOAD) without Content-MD5 is refused: no digest covers its body"
out=$(curl -sS --noproxy '*' -o "$W/answer" -w '%{http_code}' -X PUT --data-binary "@$W/body" \
	-H "Content-MD5: $md5" "$pu" || true)
t_is "$out" 200 "... and accepted with a Content-MD5 that matches"
out=$(_it_s3_curl -o "$W/answer" -w '%{http_code}' --user OTHERKEY:S3RVER \
	-H "x-amz-content-sha256: $IT_EMPTY_SHA256" "$url")
rej=$((rej + 1))
t_is "$out $(code)" "403 InvalidAccessKeyId" "a wrong access key is refused"
out=$(curl -sS --noproxy '*' -o "$W/answer" -w '%{http_code}' "$url")
rej=$((rej + 1))
t_is "$out $(code)" "403 AccessDenied" "an unsigned GET is refused"
t_is "$(s3_rejections)" "$rej" "each refusal is logged"
t_ok "the log names the reason" grep -q '"reason":"SignatureDoesNotMatch' "$IT_DIR/s3proxy-rejections.jsonl"
t_is "$(s3_stats | json_get rejected)" "$rej" "and counted"
s3_expect_rejections "$rej"
t_ok "the object is unchanged by the refused PUTs" cmp "$(s3_object_file "$key")" "$W/body"

# ------------------------------------------------------------ multipart (proxy's S3 semantics)
mkey=jobs/6f1c0b4e-0000-4000-8000-000000000001/uploads/big.bin
murl=$S3_PROXY_URL/$S3_BUCKET/$mkey
mp() { # METHOD QUERY [curl args]: prints the code, answer in $W/answer
	local m=$1 q=$2
	shift 2
	_it_s3_curl -o "$W/answer" -w '%{http_code}' -X "$m" "$@" "$murl?$q" || true
}
mp POST 'uploads=' -H "x-amz-content-sha256: $IT_EMPTY_SHA256" >/dev/null
upid=$(sed -n 's/.*<UploadId>\(.*\)<\/UploadId>.*/\1/p' "$W/answer")
t_ok "CreateMultipartUpload answers an UploadId" test -n "$upid"
head -c $((5 * 1024 * 1024)) /dev/urandom >"$W/p1"
head -c 1000 /dev/urandom >"$W/p2"
etags=()
for n in 1 2; do
	psha=$(sha256sum <"$W/p$n" | cut -d' ' -f1)
	pmd5=$(openssl dgst -md5 -binary <"$W/p$n" | base64)
	c=$(mp PUT "partNumber=$n&uploadId=$upid" --data-binary "@$W/p$n" \
		-H "x-amz-content-sha256: $psha" -H "Content-MD5: $pmd5")
	t_is "$c" 200 "UploadPart $n accepted"
	etags+=("$(md5sum <"$W/p$n" | cut -d' ' -f1)")
done
c=$(mp GET "uploadId=$upid" -H "x-amz-content-sha256: $IT_EMPTY_SHA256")
t_is "$c $(grep -o '<PartNumber>[0-9]*</PartNumber>' "$W/answer" | tr -d '\n')" \
	"200 <PartNumber>1</PartNumber><PartNumber>2</PartNumber>" "ListParts (done by the proxy) lists both parts"
complete() { # XML: CompleteMultipartUpload with that body
	printf '%s' "$1" >"$W/cx"
	mp POST "uploadId=$upid" --data-binary "@$W/cx" \
		-H "x-amz-content-sha256: $(sha256sum <"$W/cx" | cut -d' ' -f1)" \
		-H "Content-MD5: $(openssl dgst -md5 -binary <"$W/cx" | base64)"
}
c=$(complete "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"${etags[0]}\"</ETag></Part><Part><PartNumber>3</PartNumber><ETag>\"x\"</ETag></Part></CompleteMultipartUpload>")
rej=$((rej + 1))
t_is "$c $(code)" "400 InvalidPart" "Complete naming a part never uploaded is refused (s3rver would crash)"
c=$(complete "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"${etags[0]}\"</ETag></Part><Part><PartNumber>2</PartNumber><ETag>\"${etags[1]}\"</ETag></Part></CompleteMultipartUpload>")
t_is "$c" 200 "CompleteMultipartUpload with the right ETags is accepted"
t_ok "the multipart object is the concatenation of the parts" \
	cmp "$(s3_object_file "$mkey")" <(cat "$W/p1" "$W/p2")
t_diag "s3rver's multipart ETag: $(sed -n -e 's/&quot;/"/g' -e 's/.*<ETag>\(.*\)<\/ETag>.*/\1/p' "$W/answer") (md5 of the whole object: $(cat "$W/p1" "$W/p2" | md5sum | cut -d' ' -f1))"
c=$(mp PUT "partNumber=1&uploadId=$upid" --data-binary "@$W/p2" \
	-H "x-amz-content-sha256: $(sha256sum <"$W/p2" | cut -d' ' -f1)" \
	-H "Content-MD5: $(openssl dgst -md5 -binary <"$W/p2" | base64)")
t_is "$c $(code)" "404 NoSuchUpload" "UploadPart to a completed upload: 404 NoSuchUpload"
mp POST 'uploads=' -H "x-amz-content-sha256: $IT_EMPTY_SHA256" >/dev/null
upid=$(sed -n 's/.*<UploadId>\(.*\)<\/UploadId>.*/\1/p' "$W/answer")
c=$(mp DELETE "uploadId=$upid" -H "x-amz-content-sha256: $IT_EMPTY_SHA256")
t_is "$c" 204 "AbortMultipartUpload (done by the proxy) answers 204"
t_ok "... and removes the upload from s3rver's directory" \
	test ! -e "$S3_DATA_DIR/$S3_BUCKET/._S3rver_uploads/$upid"
s3_expect_rejections "$rej"

# ------------------------------------------------------------ faults
fkey=jobs/6f1c0b4e-0000-4000-8000-000000000001/uploads/fault.txt
furl=$S3_PROXY_URL/$S3_BUCKET/$fkey
fput() { put "$furl" -H "x-amz-content-sha256: $sha" -H "Content-MD5: $md5" "$@"; }
injected=0

for spec in "slowdown 503 SlowDown" "error500 500 InternalError" "bad_digest 400 BadDigest" \
	"access_denied 403 AccessDenied" "skewed 403 RequestTimeTooSkewed"; do
	set -- $spec
	s3_fault "{\"type\":\"$1\"}"
	out=$(fput)
	injected=$((injected + 1))
	t_is "$(head -1 <<<"$out") $(code)" "$2 $3" "fault $1: $2 $3"
	out=$(fput)
	t_is "$(head -1 <<<"$out")" 200 "fault $1: the next request passes"
done
s3_fault '{"type":"skewed"}'
fput >/dev/null
injected=$((injected + 1))
st=$(sed -n 's/.*<ServerTime>\(.*\)<\/ServerTime>.*/\1/p' "$W/answer")
d=$(($(date -u -d "$st" +%s) - $(date -u +%s)))
t_ok "RequestTimeTooSkewed fault: ServerTime ~20 min ahead (got ${d}s)" test "$d" -gt 1100 -a "$d" -lt 1300

s3_fault '{"type":"reset"}'
rm -f "$(s3_object_file "$fkey")"
rc=0
_it_s3_curl -o /dev/null -X PUT --data-binary "@$W/body" -H "x-amz-content-sha256: $sha" \
	-H "Content-MD5: $md5" "$furl" 2>"$W/err" || rc=$?
injected=$((injected + 1))
t_ok "fault reset: the client gets no answer (curl exit $rc)" test "$rc" -ne 0 -a "$rc" -ne 22
t_ok "fault reset: nothing stored" test ! -e "$(s3_object_file "$fkey")"
t_is "$(head -1 <<<"$(fput)")" 200 "fault reset: the next request passes"

s3_fault '{"type":"stall"}'
t0=$(_it_now_us)
rc=0
_it_s3_curl -o /dev/null --max-time 1 -X PUT --data-binary "@$W/body" -H "x-amz-content-sha256: $sha" \
	-H "Content-MD5: $md5" "$furl" 2>"$W/err" || rc=$?
injected=$((injected + 1))
t_is "$rc" 28 "fault stall: the client times out (curl exit 28)"
t_is "$(head -1 <<<"$(fput)")" 200 "fault stall: the next request passes"

rm -f "$(s3_object_file "$fkey")"
s3_fault '{"type":"lost_reply"}'
rc=0
_it_s3_curl -o /dev/null -X PUT --data-binary "@$W/body" -H "x-amz-content-sha256: $sha" \
	-H "Content-MD5: $md5" "$furl" 2>"$W/err" || rc=$?
injected=$((injected + 1))
t_ok "fault lost_reply: the client gets no answer (curl exit $rc)" test "$rc" -ne 0 -a "$rc" -ne 22
t_ok "fault lost_reply: yet the object is stored" cmp "$(s3_object_file "$fkey")" "$W/body"
t_is "$(head -1 <<<"$(fput)")" 200 "fault lost_reply: the next request passes"

s3_fault '{"type":"down"}'
rc=0
curl -sS --noproxy '*' -o /dev/null "$S3_PROXY_URL/$S3_BUCKET/x" 2>"$W/err" || rc=$?
injected=$((injected + 1))
t_ok "fault down: the connection is dropped (curl exit $rc)" test "$rc" -ne 0 -a "$rc" -ne 22
t_is "$(head -1 <<<"$(fput)")" 200 "fault down: the next request passes"

s3_fault '{"type":"delay","ms":400}'
t0=$(_it_now_us)
out=$(fput)
injected=$((injected + 1))
el=$(ms_since "$t0")
t_ok "fault delay: answered after >= 400 ms (${el} ms)" test "$(head -1 <<<"$out")" = 200 -a "$el" -ge 400

# filters, counts and time windows
s3_fault '{"type":"slowdown","count":2,"method":"PUT","match":"only-this"}'
t_is "$(head -1 <<<"$(fput)")" 200 "a fault matching another path does not fire"
other=$S3_PROXY_URL/$S3_BUCKET/jobs/only-this.txt
t_is "$(head -1 <<<"$(put "$other" -H "x-amz-content-sha256: $sha" -H "Content-MD5: $md5")") $(code)" \
	"503 SlowDown" "a fault with match/method fires on its path (1 of 2)"
t_is "$(head -1 <<<"$(put "$other" -H "x-amz-content-sha256: $sha" -H "Content-MD5: $md5")")" \
	503 "a fault with count 2 fires twice"
t_is "$(head -1 <<<"$(put "$other" -H "x-amz-content-sha256: $sha" -H "Content-MD5: $md5")")" \
	200 "and then passes"
injected=$((injected + 2))
s3_fault '{"type":"error500","seconds":2}'
a=$(head -1 <<<"$(fput)")
b=$(head -1 <<<"$(fput)")
t_is "$a $b" "500 500" "a fault with seconds fires on every request in its window"
injected=$((injected + 2))
no_armed() { [ "$(s3_stats | json_get armed)" = "[]" ]; }
t_ok "the fault expires after its seconds" wait_for 5 no_armed
t_is "$(head -1 <<<"$(fput)")" 200 "and does not fire after it"
s3_fault '{"type":"slowdown","count":5}'
t_is "$(s3_stats | json_get armed 0 remaining)" 5 "stats list armed faults"
s3_clear_faults
t_is "$(head -1 <<<"$(fput)")" 200 "s3_clear_faults disarms them"
t_ok "an unknown fault type is refused" bash -c '! "$@"' _ curl -sSf --noproxy '*' -o /dev/null \
	-X POST --data-binary '{"type":"nope"}' "$S3_PROXY_URL/__proxy/fault"

stats=$(s3_stats)
t_is "$(json_get faults_injected <<<"$stats")" "$injected" "stats count injected faults"
t_is "$(json_get rejected <<<"$stats")" "$rej" "faults are not counted as rejections"
t_ok "stats count by method" test "$(json_get by_method PUT <<<"$stats")" -gt 20
t_ok "stats count by path" test "$(json_get by_path "/$S3_BUCKET/$fkey" <<<"$stats")" -gt 10
s3_reset_stats
t_is "$(s3_stats | json_get requests)" 0 "s3_reset_stats zeroes the counters"

# ------------------------------------------------------------ s3_down / s3_up
port=$S3_PROXY_PORT
s3_down
rc=0
curl -sS --noproxy '*' -o /dev/null "$S3_PROXY_URL/__proxy/stats" 2>/dev/null || rc=$?
t_is "$rc" 7 "after s3_down the S3 port refuses connections"
s3_up
t_is "$S3_PROXY_PORT" "$port" "s3_up listens on the same port"
t_is "$(head -1 <<<"$(fput)")" 200 "after s3_up requests pass again"
t_is "$(s3_rejections)" "$rej" "the rejection count survives a proxy restart"

t_done
