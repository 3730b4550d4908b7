#!/bin/bash
# it-ctl-verbs.sh - every outboxctl verb runs on an uploads tree that is
# not empty (files in two jobs, a nested directory, an ignored name, a
# non-job directory), with both stores on, and ends with its documented
# exit code, never a signal. outboxctl doctor once died of SIGSEGV (exit
# 139) on any non-empty tree: its tree walk handed its file counter to
# the ignore check as the list of globs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init ctl-verbs
pg_start
s3_start
ob_setup
export OUTBOXD_IGNORE='*.bak'
"$OUTBOXCTL" migrate >/dev/null
j1=$(new_job)
j2=$(new_job)
write_file "$j1/integration.xml" '<mule xmlns="http://www.mulesoft.org/schema/mule/core"/>'
write_file "$j1/docs/notes.md" '# notes'
write_file "$j1/results/generated_iflow.xml" '<iflow/>'
write_file "$j2/a.txt" 'a'
write_file "$j2/old.bak" 'ignored by OUTBOXD_IGNORE'
write_file "$j2/.hidden" 'ignored'
write_file "not-a-job/x.txt" 'skipped'
t_ok "outboxd --once stores the tree" "$OUTBOXD" --once

# run_verb WANT ARGS...: outboxctl ARGS exits WANT (and not by a signal)
run_verb() {
	local want=$1 rc=0
	shift
	"$OUTBOXCTL" "$@" >"$IT_DIR/verb.out" 2>&1 || rc=$?
	if [ "$rc" -ge 128 ]; then
		t_diag "outboxctl $* was killed by signal $((rc - 128))"
		_it_diag_file "$IT_DIR/verb.out" 10
	fi
	t_is "$rc" "$want" "outboxctl $* exits $want on a non-empty tree"
}
run_verb 0 doctor
t_ok "doctor counted the tree (the root and 5 directories, 5 files not ignored)" \
	grep -Eq '^ok   uploads root .*: readable, 6 directories, 5 files$' "$IT_DIR/verb.out"
run_verb 0 status
run_verb 0 status --json
run_verb 0 list
run_verb 0 list --state done
run_verb 0 list --job "$j1"
run_verb 0 show 1
run_verb 0 retry --failed
run_verb 65 retry 1	# entry 1 has no failed leg: EX_DATAERR
run_verb 0 rescan
run_verb 0 migrate
run_verb 0 presign "jobs/$j1/uploads/integration.xml"
run_verb 0 verify
run_verb 0 verify --job "$j2"
run_verb 0 --help
run_verb 0 --version
run_verb 64 no-such-verb
t_done
