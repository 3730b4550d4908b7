#!/bin/bash
# it-s3-faults.sh - every fault S3 shows in production, injected for real
# by the proxy: 503 SlowDown for some seconds, 500s, a connection reset in
# the middle of the body, a stalled server (the low-speed timeout gives
# up), a reply lost after the object was stored, BadDigest. After each,
# every file is in S3 intact and exactly once in the database, and the
# proxy's request count shows retries with backoff, not a hot loop. A
# permanent error on one key (AccessDenied again after other files were
# stored: issue 14's rule) fails only its entry, until retried.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init s3-faults
pg_start
s3_start
ob_setup
export OUTBOXD_S3_TIMEOUT_S=2
ob_start

total=0
# round NAME FAULT_JSON FILES MAX_EXTRA: arm the fault, write FILES files,
# wait, check; at most MAX_EXTRA requests beyond one PUT per file.
round() {
	local name=$1 fault=$2 files=$3 max_extra=$4 j puts
	j=$(new_job)
	s3_reset_stats
	s3_fault "$fault"
	for i in $(seq 1 "$files"); do
		write_file "$j/$name/f$i.bin" "$name $i $(head -c 3000 /dev/urandom | base64 -w0)"
	done
	total=$((total + files))
	t_ok "$name: all $files files arrive" ob_wait_idle 60 "$total"
	puts=$(s3_stats | json_get by_method PUT)
	t_ok "$name: $puts PUTs for $files files (at most $max_extra retries)" \
		test "$puts" -le $((files + max_extra))
	injected=$(s3_stats | json_get faults_injected)
	t_ok "$name: the proxy injected the fault ($injected times)" test "$injected" -ge 1
	s3_clear_faults
}

round slowdown '{"type":"slowdown","seconds":3,"method":"PUT"}' 10 40
round error500 '{"type":"error500","count":5,"method":"PUT"}' 10 5
round reset '{"type":"reset","count":3,"method":"PUT"}' 10 3
round stall '{"type":"stall","count":1,"method":"PUT"}' 5 1
round lost_reply '{"type":"lost_reply","count":3,"method":"PUT"}' 10 3
round bad_digest '{"type":"bad_digest","count":3,"method":"PUT"}' 10 3
t_ok "the stalled transfer was abandoned by the low-speed timeout" \
	grep -q 'Operation too slow\|timed out\|Timeout' "$IT_DIR/outboxd.log"

# A permanent error: only that entry fails, with S3's message, until retried.
# Denied once, the entry is retried behind the others (a refusal may be
# the bucket's); denied a third time with other files stored between each
# denial (DENIED_TIMES, issue 14), it fails. Others keep coming meanwhile.
j=$(new_job)
s3_fault '{"type":"access_denied","seconds":60,"match":"denied.xml"}'
write_file "$j/denied.xml" "<denied/>"
_failed_one() { [ "$(ob_status failed)" = 1 ]; }
ob_write_until _failed_one "$j/fine-%d.xml" '<fine n="%d"/>'
k=$OB_WRITTEN
t_ok "AccessDenied fails the entry" wait_for 30 _failed_one
t_ok "the error names S3's code" bash -c "'$OUTBOXCTL' list --state failed | grep -q AccessDenied"
t_ok "and the other files are stored anyway" test -f "$(s3_object_file "jobs/$j/uploads/fine-$k.xml")"
s3_clear_faults
t_ok "outboxctl retry --failed" "$OUTBOXCTL" retry --failed
total=$((total + 1 + k))
t_ok "after the retry it arrives" ob_wait_idle 30 "$total"
t_is "$(ob_status failed)" 0 "nothing failed any more"

ob_check_s3
ob_check_db
ob_stop
t_done
