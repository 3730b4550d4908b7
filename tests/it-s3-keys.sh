#!/bin/bash
# it-s3-keys.sh - awkward names map to the exact keys the app expects
# (spaces, + % = & ; ( ) and non-ASCII go through SigV4's encoding and the
# verifying proxy); a name that is not UTF-8 and a key over 1,024 bytes
# fail their entry with a clear message and the file stays untouched;
# outboxctl presign prints a URL that S3 (the verifying proxy) accepts; a
# session token is sent signed; a wrong clock is corrected from the
# server's Date after RequestTimeTooSkewed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init s3-keys
pg_start
s3_start
ob_setup

j=$(new_job)
names=("with space.xml" "plus+sign.md" "percent%41.txt" "eq=amp&semi;.txt"
	"paren (1).xml" "café.xml" "日本語/ファイル.txt" "tilde~dash-under_dot.txt"
	"quote'apos.txt" "star*bang!.txt" "results/out (final).xml")
for n in "${names[@]}"; do write_file "$j/$n" "content of $n"; done
mkdir -p "$UPLOADS/$j"
bad=$(printf 'bad\xff\xfename.txt')
printf 'not utf-8' >"$UPLOADS/$j/$bad"
long=$(printf 'x%.0s' $(seq 1 200))
mkdir -p "$UPLOADS/$j/$long/$long/$long/$long"
printf 'deep' >"$UPLOADS/$j/$long/$long/$long/$long/$long.txt"
touch -d '1 minute ago' "$UPLOADS/$j/$bad"
ob_start
n=${#names[@]}
t_ok "the awkward names are stored" ob_wait_idle 30 $((n + 2))
missing=0
for name in "${names[@]}"; do
	case $name in
	results/*) key="jobs/$j/results/${name#results/}" ;;
	*) key="jobs/$j/uploads/$name" ;;
	esac
	if ! cmp -s "$UPLOADS/$j/$name" "$(s3_object_file "$key")"; then
		missing=$((missing + 1))
		t_diag "not stored under the exact key: $key"
	fi
done
t_is "$missing" 0 "all $n awkward names are stored under their exact keys"
t_is "$(pg_psql -c "select count(*) from is_migration.documents where s3_key like 'jobs/$j/%'")" "$n" \
	"and recorded with those keys"
t_is "$(ob_status failed)" 2 "the two impossible names failed"
"$OUTBOXCTL" list --state failed >"$IT_DIR/failed.txt"
t_ok "the invalid UTF-8 name fails with a clear message" grep -q 'not valid UTF-8' "$IT_DIR/failed.txt"
t_ok "the key over 1,024 bytes fails with a clear message" grep -q 'S3 allows at most 1024' "$IT_DIR/failed.txt"
t_is "$(cat "$UPLOADS/$j/$bad")" "not utf-8" "the local file is untouched"

# presign
key="jobs/$j/uploads/café.xml"
url=$("$OUTBOXCTL" presign "$key" --expires 300)
t_ok "outboxctl presign prints a SigV4 presigned URL" bash -c "grep -q 'X-Amz-Signature=' <<<'$url'"
t_ok "the URL works through the verifying proxy" curl -sf --noproxy '*' -o "$IT_DIR/presigned" "$url"
t_ok "and returns the object's bytes" cmp "$UPLOADS/$j/café.xml" "$IT_DIR/presigned"
rc=0
"$OUTBOXCTL" presign "$key" --expires 0 2>/dev/null || rc=$?
t_is "$rc" 64 "an expiry out of range is a usage error"
t_ok "outboxd's log holds no signed URL" bash -c "! grep -q 'X-Amz-Signature' '$IT_DIR/outboxd.log'"
t_ok "nor the secret key" bash -c "! grep -q 'S3RVER:' '$IT_DIR/outboxd.log'"
ob_stop

# A session token must be signed (the proxy refuses it otherwise).
export AWS_SESSION_TOKEN="FwoGZXIvYXdzEBY/session+token=="
ob_start
write_file "$j/with-token.txt" "signed with a session token"
t_ok "uploads work with AWS_SESSION_TOKEN" ob_wait_idle 30 $((n + 3))
t_ok "stored" test -f "$(s3_object_file "jobs/$j/uploads/with-token.txt")"
ob_stop
unset AWS_SESSION_TOKEN

# A clock 20 minutes behind: S3 answers RequestTimeTooSkewed with its
# Date; outboxd signs with the corrected time and the upload goes through.
if command -v faketime >/dev/null 2>&1; then
	write_file "$j/skewed.txt" "sent by a host whose clock is wrong"
	touch -d '1 minute ago' "$UPLOADS/$j/skewed.txt"
	rc=0
	# NO_FAKE_STAT: only the clock is wrong, not the files' times.
	FAKETIME=-20m NO_FAKE_STAT=1 ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0 LD_PRELOAD=$(find /usr/lib -name libfaketime.so.1 | head -1) \
		"$OUTBOXD" --once >"$IT_DIR/skew.log" 2>&1 || rc=$?
	# 65: the two impossible names above are still failed, as they should be.
	t_is "$rc" 65 "outboxd --once with a clock 20 minutes slow runs to the end"
	t_ok "after one RequestTimeTooSkewed" grep -q RequestTimeTooSkewed "$IT_DIR/skew.log"
	t_ok "the object is stored" test -f "$(s3_object_file "jobs/$j/uploads/skewed.txt")"
	s3_expect_rejections 1
else
	t_skip "clock skew" "faketime is not installed"
fi
t_done
