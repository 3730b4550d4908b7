#!/bin/bash
# it-s3-auth.sh - credentials a store refuses pause its leg, never fail
# the backlog: with a wrong S3 secret key every request is refused
# (SignatureDoesNotMatch), the S3 leg pauses with one log line, status and
# the metrics say so, and no entry fails; SIGHUP with the right key in the
# --env-file resumes the leg and every file arrives. The same for the
# database leg: a refused password (SQLSTATE 28P01) pauses it, SIGHUP
# with the right DATABASE_URL resumes it. AccessDenied on one key alone
# while others are stored fails that entry only.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init s3-auth
pg_start
s3_start
ob_setup

# A role with a password (the test cluster trusts everyone else).
pg_psql "CREATE ROLE writer LOGIN SUPERUSER PASSWORD 'right-pw'"
sed -i '1i host all writer 127.0.0.1/32 scram-sha-256' "$PG_DATA/pg_hba.conf"
pg_psql "SELECT pg_reload_conf()" >/dev/null
good_db="postgresql://writer:right-pw@127.0.0.1:$PG_PORT/outboxd"
bad_db="postgresql://writer:wrong-pw@127.0.0.1:$PG_PORT/outboxd"
wait_for 10 "$IT_PG_BINDIR/psql" -X -q "$bad_db" -c 'select 1' 2>/dev/null && \
	t_bail "the wrong password is accepted: pg_hba.conf not in effect"

# The keys come from the env file only (variables already set would win).
right_sk=$AWS_SECRET_ACCESS_KEY
ak=$AWS_ACCESS_KEY_ID
env_file=$IT_DIR/outboxd.env
write_env() {
	printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\nDATABASE_URL=%s\n' \
		"$ak" "$1" "$2" >"$env_file.tmp"
	mv "$env_file.tmp" "$env_file"
}
write_env "wrong-$right_sk" "$bad_db"
export OUTBOXD_METRICS_FILE=$IT_DIR/metrics.prom
# outboxd sees only the env file's keys; outboxctl keeps the right ones.
printf '#!/bin/sh\nexec env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u DATABASE_URL "%s" "$@"\n' \
	"$OUTBOXD" >"$IT_DIR/outboxd-env-file-only"
chmod +x "$IT_DIR/outboxd-env-file-only"
OUTBOXD=$IT_DIR/outboxd-env-file-only
export DATABASE_URL=$good_db

j=$(new_job)
for i in $(seq 1 12); do write_file "$j/doc-$i.md" "document $i"; done
write_file "$j/flow.xml" '<mule xmlns="http://www.mulesoft.org/schema/mule/core"/>'
touch -d '1 minute ago' "$UPLOADS/$j"/*
ob_start --env-file "$env_file"

paused_s3() { grep -q 'S3 leg paused: the S3 endpoint refused the credentials' "$IT_DIR/outboxd.log"; }
paused_db() { grep -q 'database leg paused: the database refused the credentials' "$IT_DIR/outboxd.log"; }
t_ok "a wrong secret key pauses the S3 leg with one clear log line" wait_for 20 paused_s3
t_ok "a refused password pauses the database leg with one clear log line" wait_for 20 paused_db
# Let the pause go on through several probes (backoff up to 2 s here).
probes_seen() { [ "$(s3_rejections)" -ge 4 ]; }
t_ok "the paused leg keeps probing with backoff" wait_for 30 probes_seen
t_is "$(grep -c 'S3 leg paused' "$IT_DIR/outboxd.log")" 1 "the pause is logged once, not per entry or probe"
t_is "$(ob_status failed)" 0 "no entry failed while the credentials were wrong"
t_is "$(ob_status pending)" 13 "all 13 entries are pending"
"$OUTBOXCTL" status >"$IT_DIR/status.txt"
t_ok "outboxctl status says the S3 leg is paused, and why" \
	grep -q 'S3 leg paused: .*SignatureDoesNotMatch' "$IT_DIR/status.txt"
t_ok "and that the database leg is paused" grep -q 'database leg paused: .*password authentication failed' "$IT_DIR/status.txt"
t_ok "outboxctl status --json has s3_paused" bash -c "'$OUTBOXCTL' status --json | grep -q '\"s3_paused\":[[:space:]]*\"S3 leg paused'"
metrics_paused() { grep -q '^outboxd_leg_refused{leg="s3"} 1$' "$OUTBOXD_METRICS_FILE"; }
t_ok "the metrics show the S3 leg paused" wait_for 15 metrics_paused
t_ok "and the database leg" grep -q '^outboxd_leg_refused{leg="db"} 1$' "$OUTBOXD_METRICS_FILE"
t_ok "the secret is not in the log" bash -c "! grep -q -- '$right_sk' '$IT_DIR/outboxd.log'"
t_ok "nor the database password" bash -c "! grep -q -- 'wrong-pw' '$IT_DIR/outboxd.log'"

# Every refusal so far was the wrong key; none may follow the fix.
all_sig() { node -e '
	const l = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean);
	process.exit(l.every(x => JSON.parse(x).code === "SignatureDoesNotMatch") ? 0 : 1);' \
	"$IT_DIR/s3proxy-rejections.jsonl"; }
t_ok "every refusal was SignatureDoesNotMatch" all_sig

write_env "$right_sk" "$good_db"
kill -HUP "$OB_PID"
refused=$(s3_rejections)
t_ok "after SIGHUP with the right key and password every file arrives" ob_wait_idle 30 13
t_is "$(ob_status failed)" 0 "and none failed"
s3_expect_rejections "$(s3_rejections)"
t_ok "no request was refused after the reload (at most those in flight)" \
	test "$(s3_rejections)" -le $((refused + 8))
t_ok "the S3 leg says it resumed" grep -q 'S3 leg resumed' "$IT_DIR/outboxd.log"
t_ok "the database leg says it resumed" grep -q 'database leg resumed' "$IT_DIR/outboxd.log"
"$OUTBOXCTL" status >"$IT_DIR/status.txt"
t_ok "status no longer shows a pause" bash -c "! grep -q 'leg paused' '$IT_DIR/status.txt'"
ob_check_s3
ob_check_db

# AccessDenied on one key alone (a bucket policy on that prefix), while
# other keys keep being stored (one every 0.3 s at most): that entry
# fails (at its third denial with others stored between each), the
# others arrive.
s3_fault '{"type":"access_denied","seconds":60,"match":"/denied-only.txt"}'
write_file "$j/denied-only.txt" "a key the bucket policy refuses"
failed_one() { [ "$(ob_status failed)" = 1 ] && [ "$(ob_status pending)" = 0 ]; }
ob_write_until failed_one "$j/after-%d.txt" "stored while one key is denied %d"
k=$OB_WRITTEN
t_ok "a key denied alone while others are stored fails alone" wait_for 30 failed_one
others=0
for i in $(seq 1 "$k"); do [ -f "$(s3_object_file "jobs/$j/uploads/after-$i.txt")" ] && others=$((others + 1)); done
t_is "$others" "$k" "the $k others arrived"
"$OUTBOXCTL" list --state failed >"$IT_DIR/failed.txt"
t_ok "the failed entry is the denied key, with S3's message" grep -q 'denied-only.txt' "$IT_DIR/failed.txt"
s3_clear_faults
ob_stop
t_done
