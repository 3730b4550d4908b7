#!/bin/bash
# it-faults.sh - the fault suite behind outboxd's promise: no file lost,
# none doubled, whatever happens. While a stream of files is written (new
# files, rewrites, temp-then-rename, new directories), outboxd is killed
# with SIGKILL at 24 random moments and restarted; then it is made to die
# at the three named crash points (right after journaling, after S3
# answered but before that was recorded, after the database committed but
# before that was recorded); S3 and PostgreSQL go down and come back; the
# wall clock jumps back and forth. At the end the disk is the ledger:
# every file is in S3 with identical bytes and has exactly one documents
# row and one file_upload activity.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init faults
pg_start
s3_start
ob_setup
export OUTBOXD_S3_TIMEOUT_S=3
SEED=${OUTBOXD_TEST_SEED:-$RANDOM}
RANDOM=$SEED
t_diag "random seed $SEED (set OUTBOXD_TEST_SEED to replay)"

jobs=($(new_job) $(new_job) $(new_job) $(new_job))
# writer N: N files of assorted kinds, a few milliseconds apart.
writer() {
	local n=$1 i j f
	for i in $(seq 1 "$n"); do
		j=${jobs[$((RANDOM % 4))]}
		case $((RANDOM % 5)) in
		0) # a new file in a new directory
			f="$j/batch-$i/new-$i.txt" ;;
		1) # rewrite an existing one (a new version)
			f="$j/rewrite-$((RANDOM % 10)).xml" ;;
		2) # temp then rename, as the app does
			mkdir -p "$UPLOADS/$j"
			head -c $((RANDOM % 4000 + 1)) /dev/urandom >"$UPLOADS/$j/.tmp-$i"
			mv "$UPLOADS/$j/.tmp-$i" "$UPLOADS/$j/renamed-$i.bin"
			sleep 0.0$((RANDOM % 3))
			continue ;;
		*) f="$j/plain-$i.dat" ;;
		esac
		mkdir -p "$(dirname "$UPLOADS/$f")"
		head -c $((RANDOM % 6000 + 1)) /dev/urandom >"$UPLOADS/$f"
		sleep 0.0$((RANDOM % 3))
	done
}

# --- 1. SIGKILL at random moments during a stream
ob_start
writer 500 &
wpid=$!
it_track "$wpid"
kills=0
while _it_alive "$wpid"; do
	sleep "0.$((RANDOM % 4 + 2))"
	ob_kill
	kills=$((kills + 1))
	ob_start
	[ "$kills" -lt 40 ] || break
done
it_wait "$wpid" 120 || true
while [ "$kills" -lt 24 ]; do
	ob_kill
	kills=$((kills + 1))
	ob_start
	sleep "0.$((RANDOM % 3 + 1))"
done
t_ok "outboxd survived $kills kills with SIGKILL during the stream" ob_wait_idle 120 1

# --- 2. the named crash points
for point in journaled s3-answered db-committed; do
	ob_stop
	OUTBOXD_TEST_CRASH=$point:3 ob_start_crashing
	writer 12
	rc=0
	it_wait "$OB_PID" 30 || rc=$?
	t_is "$rc" 137 "outboxd died at the crash point '$point' (SIGKILL)"
	ob_start
	t_ok "after '$point' everything catches up" ob_wait_idle 60 1
done

# --- 3. S3 and PostgreSQL outages during the stream
writer 20 &
wpid=$!
s3_down
sleep 1
pg_stop immediate
sleep 1
s3_up
pg_up
it_wait "$wpid" 60 || true
t_ok "after S3 and PostgreSQL outages everything catches up" ob_wait_idle 120 1
ob_stop

# --- 4. the wall clock jumps back and forth (within S3's 15 minutes)
if lib=$(find /usr/lib -name libfaketime.so.1 2>/dev/null | head -1) && [ -n "$lib" ]; then
	echo "+0" >"$IT_DIR/faketime"
	FAKETIME_TIMESTAMP_FILE=$IT_DIR/faketime FAKETIME_NO_CACHE=1 NO_FAKE_STAT=1 \
		DONT_FAKE_MONOTONIC=1 ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0 LD_PRELOAD=$lib ob_start
	s3_down
	writer 10
	sleep 1.5
	echo "-10m" >"$IT_DIR/faketime"
	s3_up
	writer 10
	sleep 1
	echo "+10m" >"$IT_DIR/faketime"
	writer 10
	t_ok "with the clock set back 10 minutes and forward 20, everything catches up" ob_wait_idle 60 1
	ob_stop
else
	t_skip "clock jumps" "libfaketime is not installed"
fi

# --- the ledger
ob_start
t_ok "a last start finds nothing left" ob_wait_idle 60 1
files=$(ob_manifest | wc -l)
t_is "$(ob_status failed)" 0 "no entry failed"
ob_check_s3
ob_check_db
lost=$(awk -F'|' '$1=="missing"{print $2}' "$IT_DIR/dbcheck.out")
doubled=$(awk -F'|' '$1=="doubled"{print $2}' "$IT_DIR/dbcheck.out")
t_diag "fault suite: kills survived $kills (+3 crash points), files checked $files, lost $lost, doubled $doubled"
ob_stop
t_done
