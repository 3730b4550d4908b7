#!/bin/bash
# it-restart.sh - files that arrive while outboxd is stopped are found by
# the start-up rescan: stop outboxd, add 30 files (and change one that was
# already stored), start it again: all arrive, the changed one as a new
# version (file_update), nothing twice.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init restart
pg_start
s3_start
ob_setup

j=$(new_job)
write_file "$j/first.xml" "<a/>"
ob_start
t_ok "the first file is stored" ob_wait_idle 30 1
t_ok "outboxd stops on SIGTERM with status 0" ob_stop

for i in $(seq 1 30); do
	write_file "$j/offline/f$i.txt" "written while outboxd was stopped: $i"
done
printf '<a>changed</a>' >"$UPLOADS/$j/first.xml"
touch -d '1 minute ago' "$UPLOADS/$j"/offline/* "$UPLOADS/$j/first.xml"

ob_start
t_ok "the backlog drains after the restart" ob_wait_idle 60 32
t_is "$(ob_status done)" 32 "31 files, one of them in two versions: 32 entries done"
ob_check_s3
ob_check_db
t_is "$(pg_psql -c "select count(*) from is_migration.user_activity where activity_type = 'file_update'")" 1 \
	"the changed file has one file_update activity"
t_ok "outboxd stops again" ob_stop

# A third start with nothing new journals nothing.
ob_start
t_ok "a start with nothing new" ob_wait_idle 10 32
t_is "$(ob_status entries)" 32 "journals nothing"
ob_stop
t_done
