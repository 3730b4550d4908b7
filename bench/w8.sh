#!/bin/bash
# bench/w8.sh - W8, the outbox at scale (issue 11): a year of files and a
# backlog, made fast with SQLite in the real schema (bench/mkoutbox.py),
# then the real daemon with both legs against the tests' PostgreSQL and
# s3rver (directly, not through the verifying proxy, as bench/run.sh).
#
#   bash bench/w8.sh [--quick] [--done N] [--pending N] [--out FILE]
#
# Measures, and prints as a Markdown table (also into FILE, default
# bench/w8.md):
#   - `outboxctl status` wall and CPU time on the big outbox;
#   - the drain of the backlog (N pending, one job): files/s and the
#     daemon's CPU (user+sys) per file;
#   - the delay of one new file in another job written 10 s into the
#     drain: from its close() to its object in s3rver;
#   - the daemon's idle CPU over 60 s once everything is done;
#   - retention: the time a restart with OUTBOXD_RETENTION=30d takes to
#     prune, and the outbox's size, pages and free pages before and after.
# Defaults: 1,000,000 done over 365 days and 100,000 pending (--quick:
# 100,000 and 10,000).
set -euo pipefail
export LC_ALL=C

BENCH=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$BENCH/.." && pwd)
DONE=1000000 PENDING=100000 OUTF=$BENCH/w8.md IDLE_S=60
while [ $# -gt 0 ]; do
	case $1 in
	--quick) DONE=100000 PENDING=10000; shift ;;
	--done) DONE=$2; shift 2 ;;
	--pending) PENDING=$2; shift 2 ;;
	--out) OUTF=$2; shift 2 ;;
	--idle) IDLE_S=$2; shift 2 ;;
	*) echo "w8: unknown argument $1" >&2; exit 64 ;;
	esac
done
say() { printf '[w8 %s] %s\n' "$(date +%T)" "$*" >&2; }

BUILD=$(bash "$TOP/tools/build.sh" "$TOP/_build-bench")
abs_top_srcdir=$TOP
abs_top_builddir=$BUILD
# shellcheck source=../tests/lib.sh
. "$TOP/tests/lib.sh"
it_init w8
W=$IT_DIR
OUTBOXD=$BUILD/outboxd
OUTBOXCTL=$BUILD/outboxctl
PY=/usr/bin/python3
HZ=$(getconf CLK_TCK)

say "starting PostgreSQL and s3rver"
pg_start
s3_start
S3DATA=$S3_DATA_DIR/$S3_BUCKET
export AWS_ENDPOINT_URL_S3=$S3_UPSTREAM_URL
export OUTBOXD_WATCH_DIR=$W/up OUTBOXD_STATE_DB=$W/outbox.db
mkdir -p "$OUTBOXD_WATCH_DIR"
"$OUTBOXCTL" migrate >"$W/migrate.log" 2>&1 || { cat "$W/migrate.log" >&2; exit 1; }

say "making the outbox: $DONE done, $PENDING pending"
OUTBOXD_RETENTION=0 env -u S3_BUCKET -u DATABASE_URL "$OUTBOXD" --once >"$W/create.log" 2>&1
t0=$EPOCHREALTIME
JOB=$("$PY" "$BENCH/mkoutbox.py" "$OUTBOXD_STATE_DB" "$OUTBOXD_WATCH_DIR" --done "$DONE" --pending "$PENDING")
make_s=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
size_made=$(stat -c %s "$OUTBOXD_STATE_DB")

cpu() { sed 's/^.*) //' "/proc/$1/stat" | awk -v hz="$HZ" '{ printf "%.2f", ($12 + $13) / hz }'; }
pragma() { sqlite3 "$OUTBOXD_STATE_DB" "PRAGMA $1"; }
status_time() { # -> "wall_ms cpu_ms" of the fastest of 3
	local best=
	for _ in 1 2 3; do
		/usr/bin/time -f '%e %U %S' -o "$W/time" "$OUTBOXCTL" status >/dev/null
		best=$(awk -v b="$best" '{ w = $1 * 1000; c = ($2 + $3) * 1000
			if (b == "" || w < b + 0) print w, c; else print b }' "$W/time" | head -1)
	done
	echo "$best"
}
st_json() { "$OUTBOXCTL" status --json | "$PY" -c "import sys, json; print(json.load(sys.stdin)['$1'])"; }

read -r status_cold_ms status_cold_cpu < <(status_time)
say "status on the made outbox: ${status_cold_ms} ms wall, ${status_cold_cpu} ms CPU"

say "draining the backlog with the daemon (S3 + database)"
log=$W/daemon.log
OUTBOXD_RETENTION=0 "$OUTBOXD" </dev/null >"$log" 2>&1 &
DPID=$!
it_track "$DPID"
wait_for 600 grep -q 'rescan (start-up)' "$log" || { tail "$log" >&2; exit 1; }
c0=$(cpu "$DPID")
t0=$EPOCHREALTIME
sleep 10
# A new file in another job during the drain.
OTHER=$(cat /proc/sys/kernel/random/uuid)
mkdir -p "$OUTBOXD_WATCH_DIR/$OTHER"
printf '<?xml version="1.0"?><other/>\n' >"$OUTBOXD_WATCH_DIR/$OTHER/new.xml"
tw=$EPOCHREALTIME
obj=$S3DATA/jobs/$OTHER/uploads/new.xml._S3rver_object
while [ ! -f "$obj" ]; do sleep 0.01; done
delay_ms=$(awk -v a="$tw" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
backlog_then=$(st_json pending)
say "new file in another job stored $delay_ms ms after its close ($backlog_then entries pending then)"
while [ "$(st_json pending)" != 0 ]; do sleep 1; done
t1=$EPOCHREALTIME
c1=$(cpu "$DPID")
drain_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
rate=$(awk -v n="$PENDING" -v s="$drain_s" 'BEGIN { printf "%.0f", n / s }')
us_per_file=$(awk -v a="$c0" -v b="$c1" -v n="$PENDING" 'BEGIN { printf "%.0f", (b - a) * 1e6 / n }')
stored=$(find "$S3DATA/jobs/$JOB" -name '*._S3rver_object' | wc -l)
say "drained $PENDING in $drain_s s ($rate files/s), $us_per_file us CPU per file, $stored objects"

say "idle for $IDLE_S s"
sleep 5
c0=$(cpu "$DPID")
sleep "$IDLE_S"
c1=$(cpu "$DPID")
idle_pct=$(awk -v a="$c0" -v b="$c1" -v s="$IDLE_S" 'BEGIN { printf "%.2f", (b - a) * 100 / s }')
read -r status_ms status_cpu < <(status_time)
say "idle: $idle_pct% of a core; status ${status_ms} ms wall, ${status_cpu} ms CPU"
it_stop "$DPID" TERM 60

say "retention: a restart with OUTBOXD_RETENTION=30d"
size_before=$(stat -c %s "$OUTBOXD_STATE_DB") pages_before=$(pragma page_count)
entries_before=$(st_json entries)
OUTBOXD_RETENTION=30d "$OUTBOXD" </dev/null >"$log" 2>&1 &
DPID=$!
it_track "$DPID"
wait_for 600 grep -q 'rescan (start-up)' "$log" || { tail "$log" >&2; exit 1; }
t0=$EPOCHREALTIME
c0=$(cpu "$DPID")
wait_for 3600 grep -q 'retention: pruned' "$log" || { tail "$log" >&2; exit 1; }
prune_s=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
prune_cpu=$(awk -v a="$c0" -v b="$(cpu "$DPID")" 'BEGIN { printf "%.1f", b - a }')
it_stop "$DPID" TERM 60
pruned=$(st_json pruned) entries_after=$(st_json entries)
size_after=$(stat -c %s "$OUTBOXD_STATE_DB") pages_after=$(pragma page_count)
free_after=$(pragma freelist_count) av=$(pragma auto_vacuum)
mib() { awk -v b="$1" 'BEGIN { printf "%.0f MiB", b / 1048576 }'; }

{
	printf '| W8 (%d done over 365 days + %d pending in one job) | measured |\n|---|---|\n' "$DONE" "$PENDING"
	printf '| outbox made with SQLite (mkoutbox.py) | %s s, %s |\n' "$make_s" "$(mib "$size_made")"
	printf '| `outboxctl status`, fresh outbox (fastest of 3) | %s ms wall, %s ms CPU |\n' "$status_cold_ms" "$status_cold_cpu"
	printf '| drain of the backlog (S3 + database) | %s files/s (%s s), %s us CPU per file, %s objects stored |\n' "$rate" "$drain_s" "$us_per_file" "$stored"
	printf '| a new file in another job, 10 s into the drain (%s pending) | stored %s ms after its close |\n' "$backlog_then" "$delay_ms"
	printf '| idle daemon, both legs, over %s s | %s%% of one core |\n' "$IDLE_S" "$idle_pct"
	printf '| `outboxctl status`, idle daemon (fastest of 3) | %s ms wall, %s ms CPU |\n' "$status_ms" "$status_cpu"
	printf '| retention 30d after a restart | %s of %s entries pruned in %s s (%s s CPU) |\n' "$pruned" "$entries_before" "$prune_s" "$prune_cpu"
	printf '| outbox size before, after retention | %s (%s pages), %s (%s pages, %s free; auto_vacuum=%s) |\n' \
		"$(mib "$size_before")" "$pages_before" "$(mib "$size_after")" "$pages_after" "$free_after" "$av"
} | tee "$OUTF"
t_done
