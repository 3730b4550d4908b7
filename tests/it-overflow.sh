#!/bin/bash
# it-overflow.sh - inotify is a hint, the disk is the truth: outboxd is
# stopped with SIGSTOP while 20,000 files arrive in new directories, so
# the kernel's event queue overflows; after SIGCONT it warns, rescans, and
# every file is journaled and recorded exactly once.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init overflow
pg_start
ob_setup
ob_start
# The directories first, so they are watched: then every file written
# while outboxd is stopped queues two events (create, close), 40,000 in
# all, well past the kernel's default queue of 16,384.
for j in $(seq 1 20); do
	job=$(new_job)
	for d in $(seq 0 9); do mkdir -p "$UPLOADS/$job/d$d"; done
done
sleep 1
kill -STOP "$OB_PID"
python=/usr/bin/python3; [ -x "$python" ] || python=python3
"$python" - "$UPLOADS" <<'PY'
import os, sys
root = sys.argv[1]
for job in os.listdir(root):
    for d in range(10):
        for f in range(100):
            with open(os.path.join(root, job, "d%d" % d, "f%d.txt" % f), "w") as fh:
                fh.write("%s dir %d file %d\n" % (job, d, f))
PY
kill -CONT "$OB_PID"
t_is "$(find "$UPLOADS" -type f | wc -l)" 20000 "20,000 files arrived while outboxd was stopped"
t_ok "the overflow is noticed" wait_for 30 grep -q 'inotify queue overflowed' "$IT_DIR/outboxd.log"
t_ok "and a rescan journals everything" ob_wait_idle 240 20000
t_is "$(ob_status entries)" 20000 "20,000 entries, none twice"
t_is "$(pg_psql -c 'select count(*) from is_migration.documents')" 20000 "20,000 documents rows"
t_is "$(pg_psql -c "select count(*) from (select 1 from is_migration.user_activity group by activity_data->>'job_id', activity_data->>'file_path' having count(*) > 1) d")" 0 \
	"no file has two activities"
ob_stop
t_done
