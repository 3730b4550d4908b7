#!/bin/bash
# it-poison.sh - a file whose inspection kills outboxd is set aside, and
# the rest flows. The crash point 'inspecting' kills outboxd (SIGKILL)
# inside the database leg's reading of an XML file, at every start, as a
# file that crashed libxml2 or hung it until the watchdog would. After
# OUTBOXD_POISON_ATTEMPTS (3) such deaths the entry's database leg is
# failed with a reason naming that; the other file of the job is
# recorded; outboxctl retry takes the entry back. Without the limit (as
# before) every start died on the same entry and nothing after it flowed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init poison
pg_start
s3_start
ob_setup

job=$(new_job)
write_file "$job/poison.xml" '<mule xmlns="http://www.mulesoft.org/schema/mule/core"/>'
write_file "$job/notes.txt" 'an ordinary file in the same job'

once() { rc=0; "$OUTBOXD" --once >>"$IT_DIR/outboxd.log" 2>&1 || rc=$?; echo "$rc"; }
export OUTBOXD_TEST_CRASH=inspecting
for i in 1 2 3; do
	t_is "$(once)" 137 "start $i dies inside the inspection (SIGKILL at 'inspecting')"
done
t_ok "the deaths were counted (2 of 3 before the third)" \
	grep -q 'died while reading or inspecting its file (2 of 3 times' "$IT_DIR/outboxd.log"
t_is "$(once)" 65 "start 4 sets the entry aside and finishes (65: one failed for good), crash point still armed"
t_ok "one error line names the entry, the count and outboxctl retry" \
	grep -q 'set aside as failed: outboxd died 3 times while reading or inspecting its file (OUTBOXD_POISON_ATTEMPTS=3); see outboxctl show' "$IT_DIR/outboxd.log"
id=$("$OUTBOXCTL" list --state failed | awk '$5 ~ /poison.xml$/ { print $1 }')
t_ok "outboxctl list shows poison.xml failed" test -n "$id"
t_ok "its database error says why" \
	bash -c "'$OUTBOXCTL' show '$id' | grep -q 'set aside: outboxd died 3 times while reading or inspecting this file'"
t_is "$(pg_psql -c "select string_agg(filename, ',' order by filename) from is_migration.documents where job_id = '$job'")" \
	"notes.txt" "the other file of the job was recorded"
t_is "$(pg_psql -c "select count(*) from is_migration.documents where filename = 'poison.xml'")" 0 \
	"poison.xml has no row yet (its S3 leg is done: the bytes are safe)"
unset OUTBOXD_TEST_CRASH
t_ok "outboxctl retry takes it back" "$OUTBOXCTL" retry "$id"
t_is "$(once)" 0 "with the fault gone, --once stores it and exits 0"
t_is "$(pg_psql -c "select platform from is_migration.jobs where id = '$job'")" "mulesoft" \
	"poison.xml is recorded and its job classified"
t_done
