#!/bin/bash
# it-watch.sh - the watcher in the cases lsyncd, mc mirror and watchman
# users have been bitten by: a file appended in quick reopen-write-close
# bursts is journaled once, in its final form; a file still being written
# when a rescan finds it is not sent half-written; temp-then-rename
# writers and an editor's save (swap file, backup, vim's 4913 probe) yield
# one upload of the final name; a directory moved in is scanned, one moved
# out is forgotten, a rename inside the tree journals the new name; with
# the watch limit reached the unwatched directories are polled; polling
# mode sees files without inotify; a second outboxd on the same outbox
# refuses to start; a file journaled by the start-up rescan while its
# writer paused is journaled again in its final form.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init watch
s3_start
ob_setup
# A wider settle window than the default 20 ms keeps the timing of these
# checks independent of a loaded CI machine; the logic is the same.
export OUTBOXD_SETTLE_MS=200
entries_for() { sqlite3 "$OUTBOXD_STATE_DB" "select count(*) from entries where path like '%$1'"; }
stored() { cmp -s "$UPLOADS/$1" "$(s3_object_file "jobs/${1%%/*}/uploads/${1#*/}")"; }

j=$(new_job)
mkdir -p "$UPLOADS/$j"
# A file still being written when outboxd starts (its rescan finds it):
# the writer goes on through the whole start-up, however long it takes.
exec 3>"$UPLOADS/$j/growing.log"
printf 'first half ' >&3
(for i in $(seq 1 200); do
	sleep 0.3; printf 'more %d ' "$i" >&3
	[ -e "$IT_DIR/writer.stop" ] && break
done) &
writer=$!
# One written before the start whose writer then paused for longer than
# the rescan's quiet window: the rescan journals what is there, and the
# writer's later close is not reported by Linux (the file was opened
# before the directory was watched), so outboxd must notice the change.
exec 4>"$UPLOADS/$j/paused.log"
printf 'before the restart ' >&4
touch -d '5 seconds ago' "$UPLOADS/$j/paused.log"
ob_start
sleep 1
touch "$IT_DIR/writer.stop"; wait "$writer"
printf 'end' >&3
exec 3>&-
printf 'and after it' >&4
exec 4>&-
t_ok "the growing file is stored" wait_for 20 stored "$j/growing.log"
t_is "$(entries_for growing.log)" 1 "once, in its final form (not half-written)"
t_ok "a file written on after the start-up rescan is stored in its final form" \
	wait_for 20 stored "$j/paused.log"

# Reopened and appended five times within the settle window.
for i in 1 2 3 4 5; do printf 'line %d\n' "$i" >>"$UPLOADS/$j/appended.txt"; sleep 0.02; done
t_ok "the appended file is stored" wait_for 20 stored "$j/appended.txt"
t_is "$(entries_for appended.txt)" 1 "journaled once"
t_is "$(wc -l <"$(s3_object_file "jobs/$j/uploads/appended.txt")")" 5 "with all five lines"

# Temp-then-rename, as the app does.
printf '<doc/>' >"$UPLOADS/$j/report.xml.part"
printf '<doc/>' >"$UPLOADS/$j/.report.xml.tmp"
mv "$UPLOADS/$j/.report.xml.tmp" "$UPLOADS/$j/report.xml"
rm "$UPLOADS/$j/report.xml.part"
# An editor's save: swap file, vim's 4913 probe, a backup~, the new file.
printf 'swap' >"$UPLOADS/$j/.notes.md.swp"
printf 'v1' >"$UPLOADS/$j/notes.md"
sleep 0.2
printf '' >"$UPLOADS/$j/4913"; rm -f "$UPLOADS/$j/4913"
mv "$UPLOADS/$j/notes.md" "$UPLOADS/$j/notes.md~"
printf 'v2 saved by the editor' >"$UPLOADS/$j/notes.md"
rm -f "$UPLOADS/$j/.notes.md.swp"
t_ok "the renamed file is stored" wait_for 20 stored "$j/report.xml"
t_ok "the edited file is stored" wait_for 20 stored "$j/notes.md"
sleep 0.5
t_is "$(s3_list "jobs/$j/uploads/" | grep -c -e '\.tmp$' -e '\.part$' -e '\.swp$' -e '~$' -e '/4913$' || true)" 0 \
	"no temporary, swap, backup or probe file was uploaded"
t_is "$(entries_for report.xml)" 1 "one entry for the renamed file"

# A directory moved in with files already inside; one moved out; a rename.
mkdir -p "$IT_DIR/outside/sub"
printf 'a' >"$IT_DIR/outside/a.txt"; printf 'b' >"$IT_DIR/outside/sub/b.txt"
touch -d '1 minute ago' "$IT_DIR/outside/a.txt" "$IT_DIR/outside/sub/b.txt"
mv "$IT_DIR/outside" "$UPLOADS/$j/moved-in"
t_ok "files of a directory moved in are stored" wait_for 20 stored "$j/moved-in/sub/b.txt"
mv "$UPLOADS/$j/moved-in" "$IT_DIR/moved-out"
printf 'written outside' >"$IT_DIR/moved-out/later.txt"
sleep 0.5
t_is "$(entries_for later.txt)" 0 "a directory moved out of the tree is forgotten"
printf 'r' >"$UPLOADS/$j/before-rename.txt"
sleep 0.3
mv "$UPLOADS/$j/before-rename.txt" "$UPLOADS/$j/after-rename.txt"
t_ok "a rename inside the tree journals the new name" wait_for 20 stored "$j/after-rename.txt"
ob_stop

# OUTBOXD_IGNORE applies to events and to rescans alike.
export OUTBOXD_IGNORE="*.bak, scratch-*"
mkdir -p "$UPLOADS/$j/ign"
printf 'x' >"$UPLOADS/$j/ign/old.bak"; printf 'y' >"$UPLOADS/$j/ign/scratch-1.txt"
printf 'z' >"$UPLOADS/$j/ign/kept.txt"
touch -d '1 minute ago' "$UPLOADS/$j/ign/"*
ob_start
printf 'live' >"$UPLOADS/$j/ign/live.bak"
t_ok "a file next to the ignored ones is stored" wait_for 20 stored "$j/ign/kept.txt"
sleep 0.5
t_is "$(sqlite3 "$OUTBOXD_STATE_DB" "select count(*) from entries where path like '%.bak' or path like '%scratch-%'")" 0 \
	"OUTBOXD_IGNORE patterns are not journaled, by the rescan or by events"
ob_stop
unset OUTBOXD_IGNORE

# The watch limit: only 3 watches allowed; deeper directories are polled.
export OUTBOXD_TEST_WATCH_LIMIT=3 OUTBOXD_POLL_MS=300
ob_start
j2=$(new_job)
mkdir -p "$UPLOADS/$j2/d1/d2/d3"
printf 'deep' >"$UPLOADS/$j2/d1/d2/d3/deep.txt"
t_ok "a file in an unwatched directory is found by polling" wait_for 20 stored "$j2/d1/d2/d3/deep.txt"
t_ok "the warning names fs.inotify.max_user_watches" grep -q 'max_user_watches' "$IT_DIR/outboxd.log"
ob_stop
unset OUTBOXD_TEST_WATCH_LIMIT

# Polling instead of inotify.
export OUTBOXD_WATCH_MODE=poll
ob_start
printf 'polled' >"$UPLOADS/$j2/polled.txt"
t_ok "OUTBOXD_WATCH_MODE=poll finds new files" wait_for 20 stored "$j2/polled.txt"
rc=0
"$OUTBOXD" --once >"$IT_DIR/second.out" 2>&1 || rc=$?
t_is "$rc" 75 "a second outboxd on the same outbox exits 75"
t_ok "saying which process holds it" grep -q "another outboxd (pid $OB_PID)" "$IT_DIR/second.out"
ob_stop
t_done
