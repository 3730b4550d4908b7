#!/bin/bash
# it-config.sh - bad configuration stops outboxd at once with exit 78
# (EX_CONFIG) and one line naming each variable and its problem, never a
# secret; --env-file reads the app's .env without overriding the
# environment; usage errors exit 64; -n checks and exits; --once with S3
# unreachable gives up within seconds (exit 75), with every file pending.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init config
ob_setup

# expect_config_error DESC PATTERN VAR=VALUE...
expect_config_error() {
	local desc=$1 pattern=$2 rc=0
	shift 2
	env "$@" "$OUTBOXD" --once >"$IT_DIR/out" 2>"$IT_DIR/err" || rc=$?
	t_is "$rc" 78 "$desc: exit 78"
	if grep -q -- "$pattern" "$IT_DIR/err"; then
		t_ok "$desc: stderr names it" true
	else
		t_ok "$desc: stderr names it ($(head -c 300 "$IT_DIR/err"))" false
	fi
}

expect_config_error "an endpoint that is not a URL" "AWS_ENDPOINT_URL_S3=not a url" \
	S3_BUCKET=b1b AWS_ACCESS_KEY_ID=k AWS_SECRET_ACCESS_KEY=s "AWS_ENDPOINT_URL_S3=not a url"
expect_config_error "a non-numeric concurrency" "OUTBOXD_CONCURRENCY=lots: not a whole number" \
	OUTBOXD_CONCURRENCY=lots
expect_config_error "an unreadable watch dir" "OUTBOXD_WATCH_DIR=$IT_DIR/nope: No such file" \
	OUTBOXD_WATCH_DIR="$IT_DIR/nope"
expect_config_error "a bucket without credentials" "AWS_SECRET_ACCESS_KEY: not set" \
	S3_BUCKET=b1b AWS_ACCESS_KEY_ID=k
expect_config_error "a bad DATABASE_URL" "DATABASE_URL: not a libpq connection string" \
	"DATABASE_URL=postgresql://u:sup3rsecret@[::1/db"
t_ok "the database password is not printed" bash -c "! grep -q sup3rsecret '$IT_DIR/err'"

env OUTBOXD_CONCURRENCY=0 OUTBOXD_SETTLE_MS=x OUTBOXD_WATCH_MODE=fast \
	"$OUTBOXD" --once 2>"$IT_DIR/err" >/dev/null || true
t_is "$(grep -c '^outboxd: error: configuration: ' "$IT_DIR/err")" 3 "three problems, three lines"

cat >"$IT_DIR/app.env" <<'ENV'
# the app's .env
export OUTBOXD_CONCURRENCY="4"
OUTBOXD_SETTLE_MS=abc   # overridden by the environment below
ENV
t_ok "--env-file with -n: configuration OK" env OUTBOXD_SETTLE_MS=30 "$OUTBOXD" --env-file "$IT_DIR/app.env" -n
rc=0
"$OUTBOXD" --env-file "$IT_DIR/app.env" -n >/dev/null 2>"$IT_DIR/err" || rc=$?
t_is "$rc" 78 "the .env's bad value counts when the environment does not override it"
t_ok "and is named" grep -q "OUTBOXD_SETTLE_MS=abc" "$IT_DIR/err"
printf 'BROKEN LINE\n' >"$IT_DIR/bad.env"
rc=0
"$OUTBOXD" --env-file "$IT_DIR/bad.env" -n 2>"$IT_DIR/err" || rc=$?
t_is "$rc" 78 "a malformed .env exits 78"
t_ok "naming the file and line" grep -q "bad.env: line 1" "$IT_DIR/err"
rc=0
"$OUTBOXD" --env-file "$IT_DIR/missing.env" -n 2>/dev/null || rc=$?
t_is "$rc" 78 "a missing .env exits 78"
rc=0
"$OUTBOXD" --bogus 2>/dev/null || rc=$?
t_is "$rc" 64 "an unknown option exits 64"
rc=0
"$OUTBOXCTL" frobnicate 2>/dev/null || rc=$?
t_is "$rc" 64 "outboxctl: an unknown command exits 64"
t_ok "--version prints the version" bash -c "'$OUTBOXD' --version | grep -q '^outboxd [0-9]'"

# The embedded default: no S3, no database, still journals.
write_file "$(new_job)/a.xml" "<a/>"
touch -d '1 minute ago' "$UPLOADS"/*/a.xml
t_ok "with no store configured outboxd --once journals and exits 0" "$OUTBOXD" --once
t_is "$(sqlite3 "$OUTBOXD_STATE_DB" 'select count(*) from entries')" 1 "the file is in the outbox"

# S3 refusing connections: --once tries, then exits 75 (EX_TEMPFAIL) with
# everything pending. With 100 files it claims ahead of its 16 slots; the
# uploads claimed but not sent must not make it wait for them probe by
# probe, with backoff (it did, for minutes, before they were given back).
j=$(new_job)
for i in $(seq 1 100); do write_file "$j/f$i.xml" "<a>$i</a>"; done
touch -d '1 minute ago' "$UPLOADS/$j"/*
rc=0
start=$EPOCHSECONDS
# (The default retry settings: with the harness's 2 s cap every retry
# falls within the 5 s that --once waits for, and it would never end.)
env S3_BUCKET=bucket-x AWS_ACCESS_KEY_ID=k AWS_SECRET_ACCESS_KEY=s \
	OUTBOXD_RETRY_BASE_MS=1000 OUTBOXD_RETRY_MAX_S=60 \
	AWS_ENDPOINT_URL_S3="http://127.0.0.1:$(free_port)" \
	timeout 60 "$OUTBOXD" --once >/dev/null 2>"$IT_DIR/err" || rc=$?
secs=$((EPOCHSECONDS - start))
t_is "$rc" 75 "with S3 unreachable --once exits 75 (exit $rc after $secs s; 124 = still running after 60 s)"
t_ok "within 15 s ($secs s)" test "$secs" -le 15
t_is "$(sqlite3 "$OUTBOXD_STATE_DB" "select count(*) from entries where path like '$j/%' and s3_state = 'pending'")" 100 \
	"all 100 files stay pending, none failed"
# Those claimed ahead and given back unsent were not attempted: only the
# first 16 (sent before the first failure came back) and the probes count
# an attempt (before session 10 every claimed file did: 63 of them).
n=$(sqlite3 "$OUTBOXD_STATE_DB" "select count(*) from entries where path like '$j/%' and s3_attempts > 0")
t_ok "files given back unsent count no attempt ($n files attempted)" test "$n" -le 24

# The same with retries capped at 2 s (the harness's setting, and an
# operator's who wants quick retries): every probe falls due within the
# 5 s --once waits for retries, and before the fix the run never ended
# (exit 124 after 40 s). --once now stops probing a store still down
# 10 s into the run.
rc=0
start=$EPOCHSECONDS
env S3_BUCKET=bucket-x AWS_ACCESS_KEY_ID=k AWS_SECRET_ACCESS_KEY=s \
	OUTBOXD_RETRY_BASE_MS=200 OUTBOXD_RETRY_MAX_S=2 \
	AWS_ENDPOINT_URL_S3="http://127.0.0.1:$(free_port)" \
	timeout 40 "$OUTBOXD" --once >/dev/null 2>"$IT_DIR/err" || rc=$?
secs=$((EPOCHSECONDS - start))
t_is "$rc" 75 "retries capped at 2 s, S3 unreachable: --once exits 75 (exit $rc after $secs s; 124 = still running after 40 s)"
t_ok "after probing for 10 s, within 15 s ($secs s)" test "$secs" -ge 9 -a "$secs" -le 15
t_is "$(sqlite3 "$OUTBOXD_STATE_DB" "select count(*) from entries where path like '$j/%' and s3_state = 'pending'")" 100 \
	"all 100 files still pending, none failed"
t_done
