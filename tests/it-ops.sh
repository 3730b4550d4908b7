#!/bin/bash
# it-ops.sh - what operators use: outboxctl doctor passes on a good set-up
# and names each problem on bad ones (unreachable S3, a wrong secret,
# the database down, the schema missing, a bad variable); outboxctl verify
# finds an object deleted from S3 and a row deleted from the database
# (exit 1) and passes once outboxd has put them back after a rescan; the
# Prometheus metrics file is written atomically and reads right; JSON
# logs are one object per line; SIGHUP switches the log format and names
# what needs a restart; show, list and status read well.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init ops
pg_start
s3_start
ob_setup

# --- doctor: a good set-up, before and after migrate
rc=0
"$OUTBOXCTL" doctor >"$IT_DIR/doctor0.out" 2>&1 || rc=$?
t_is "$rc" 1 "doctor fails while the schema is missing"
t_ok "and says to run migrate" grep -q '^FAIL database: schema is_migration lacks migrations: run outboxctl migrate' "$IT_DIR/doctor0.out"
"$OUTBOXCTL" migrate >/dev/null
t_ok "doctor passes on a good set-up" "$OUTBOXCTL" doctor
"$OUTBOXCTL" doctor >"$IT_DIR/doctor.out"
t_is "$(grep -c '^ok  ' "$IT_DIR/doctor.out")" 8 "eight checks, each ok"
t_ok "the S3 check wrote to the bucket" grep -q '^ok   s3: bucket outboxd-test at .* is writable' "$IT_DIR/doctor.out"
t_is "$(s3_list outboxd-doctor/ | wc -l)" 0 "and removed its probe"

# --- doctor: bad set-ups, one clear line each
doctor_fails() {
	local desc=$1 pattern=$2 want=$3 rc=0
	shift 3
	env "$@" "$OUTBOXCTL" doctor >"$IT_DIR/d.out" 2>&1 || rc=$?
	t_is "$rc" "$want" "doctor with $desc exits $want"
	if grep -q -- "$pattern" "$IT_DIR/d.out"; then
		t_ok "doctor with $desc: says so" true
	else
		t_ok "doctor with $desc: says so ($(grep FAIL "$IT_DIR/d.out" | head -2))" false
	fi
}
doctor_fails "S3 unreachable" "^FAIL s3: cannot write to bucket outboxd-test" 1 \
	AWS_ENDPOINT_URL_S3=http://127.0.0.1:1
doctor_fails "a wrong secret" "^FAIL s3: .*SignatureDoesNotMatch" 1 AWS_SECRET_ACCESS_KEY=wrong
s3_expect_rejections 1
doctor_fails "the database down" "^FAIL database: cannot connect" 1 \
	DATABASE_URL=postgresql://postgres@127.0.0.1:1/outboxd
doctor_fails "a bad variable" "^FAIL configuration: OUTBOXD_CONCURRENCY=x" 78 OUTBOXD_CONCURRENCY=x
doctor_fails "an unreadable uploads root" "^FAIL configuration: OUTBOXD_WATCH_DIR=$IT_DIR/none" 78 \
	OUTBOXD_WATCH_DIR="$IT_DIR/none"

# --- metrics, JSON logs
export OUTBOXD_METRICS_FILE=$IT_DIR/outboxd.prom
# From the env file, not the environment: the environment would win.
echo "OUTBOXD_LOG_FORMAT=json" >"$IT_DIR/app.env"
ob_start --env-file "$IT_DIR/app.env"
j=$(new_job)
for i in 1 2 3; do write_file "$j/f$i.xml" "<f$i/>"; done
t_ok "files are stored" ob_wait_idle 30 3
_metrics_done() { grep -q '^outboxd_entries{leg="s3",state="done"} 3$' "$OUTBOXD_METRICS_FILE"; }
t_ok "the metrics file shows 3 entries done in S3" wait_for 20 _metrics_done
t_ok "and in the database" grep -q '^outboxd_entries{leg="db",state="done"} 3$' "$OUTBOXD_METRICS_FILE"
t_ok "it carries HELP and TYPE lines" grep -q '^# TYPE outboxd_entries gauge' "$OUTBOXD_METRICS_FILE"
t_ok "and the last success per leg" grep -Eq '^outboxd_last_success_timestamp_seconds\{leg="s3"\} [1-9]' "$OUTBOXD_METRICS_FILE"
t_is "$(ls "$IT_DIR" | grep -c 'outboxd.prom.tmp' || true)" 0 "no temporary file left behind"
t_ok "JSON log lines parse, one object each" bash -c "grep -v '^---' '$IT_DIR/outboxd.log' | /usr/bin/python3 -c 'import sys, json
for l in sys.stdin: json.loads(l)'"
t_ok "with the job and path of each upload" bash -c "grep -q '\"job\":\"$j\",\"path\":\"$j/f1.xml\"' '$IT_DIR/outboxd.log'"

# --- SIGHUP: the log format changes at once; others are named
echo "OUTBOXD_LOG_FORMAT=text" >"$IT_DIR/app.env"
echo "OUTBOXD_CONCURRENCY=3" >>"$IT_DIR/app.env"
kill -HUP "$OB_PID"
_reloaded() { grep -q '^outboxd: SIGHUP: configuration reloaded' "$IT_DIR/outboxd.log"; }
t_ok "SIGHUP reloads: the log turns to text" wait_for 10 _reloaded
t_ok "and names what needs a restart" grep -q 'applied only after a restart: OUTBOXD_CONCURRENCY' "$IT_DIR/outboxd.log"
t_ok "outboxd still runs" _it_alive "$OB_PID"
ob_stop

# --- verify
t_ok "verify passes when S3 and the database have everything" "$OUTBOXCTL" verify
rm -f "$(s3_object_file "jobs/$j/uploads/f2.xml")" "$(s3_object_metadata "jobs/$j/uploads/f2.xml")"
pg_psql -c "delete from is_migration.documents where file_path = 'f3.xml'" >/dev/null
rc=0
"$OUTBOXCTL" verify >"$IT_DIR/verify.out" || rc=$?
t_is "$rc" 1 "after deletions verify exits 1"
t_ok "it reports the object missing in S3" grep -q "^missing in S3: jobs/$j/uploads/f2.xml" "$IT_DIR/verify.out"
t_ok "and the row missing in the database" grep -q "^missing in the database: $j/f3.xml" "$IT_DIR/verify.out"
t_ok "with a count" grep -q '^verified 3 files against S3 and the database: 2 differences' "$IT_DIR/verify.out"
rc=0
"$OUTBOXCTL" verify --job "$(new_job)" >/dev/null || rc=$?
t_is "$rc" 0 "verify --job of another job finds nothing to differ"

# --- show, list, status
t_ok "show prints an entry's fields" bash -c "'$OUTBOXCTL' show 1 | grep -q '^s3_state  *done'"
rc=0
"$OUTBOXCTL" show 999 2>/dev/null || rc=$?
t_is "$rc" 65 "show of no such entry exits 65"
t_ok "list --job shows that job's entries" bash -c "'$OUTBOXCTL' list --job $j | grep -c '$j/f' | grep -q 3"
t_ok "status --json has integer pending, failed and done" bash -c \
	"'$OUTBOXCTL' status --json | /usr/bin/python3 -c 'import sys, json; d = json.load(sys.stdin); assert all(isinstance(d[k], int) for k in (\"pending\", \"failed\", \"done\"))'"
t_done
