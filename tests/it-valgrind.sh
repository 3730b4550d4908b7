#!/bin/bash
# it-valgrind.sh - one full run of outboxd under valgrind's memcheck, against
# real servers: the shared sample files in two jobs (one with a results/
# file, a nested folder, a UTF-8 name and a job.json) go to S3 and
# PostgreSQL with `outboxd --once`, then `outboxctl status --json`, `list`
# and `show` read the outbox, each under valgrind. Passes when every
# program exits 0 with "ERROR SUMMARY: 0 errors" (invalid reads and
# writes, uses of uninitialised values, bad frees, and definite leaks all
# count) and the files reached both stores. S3 faults on the way (an XML
# error reply, a 500 on a part, a reset mid-body) run the retry paths too.
# Should a library (libcurl, OpenSSL, libxml2, libpq) ever report what is
# not outboxd's bug, tests/valgrind.supp is used when it exists (narrow,
# commented entries; none are needed with Debian 12's libraries). Skipped
# when valgrind is missing or the programs were built with AddressSanitizer.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init valgrind

if ! command -v valgrind >/dev/null 2>&1; then
	t_skip "outboxd under valgrind" "valgrind is not installed (apt-get install valgrind)"
	t_done
fi
# valgrind and AddressSanitizer do not mix
if built_with_asan; then
	t_skip "outboxd under valgrind" "$OUTBOXD is built with AddressSanitizer"
	t_done
fi

pg_start
s3_start
ob_setup

# vg NAME CMD [ARGS...]: CMD under memcheck; valgrind's report in
# $IT_DIR/NAME.vg, CMD's output in NAME.out and NAME.err; returns CMD's
# status (99: valgrind found errors)
vg() {
	local name=$1 supp=()
	shift
	[ -f "$IT_SRCDIR/valgrind.supp" ] && supp=(--suppressions="$IT_SRCDIR/valgrind.supp")
	valgrind --tool=memcheck --error-exitcode=99 --leak-check=full \
		--errors-for-leak-kinds=definite --show-leak-kinds=definite \
		--track-fds=no --num-callers=40 --gen-suppressions=all \
		"${supp[@]}" --log-file="$IT_DIR/$name.vg" \
		"$@" >"$IT_DIR/$name.out" 2>"$IT_DIR/$name.err"
}

# _vg_summary NAME: "N allocs, definitely lost X, possibly lost Y, S suppressed"
_vg_summary() {
	awk '
		/total heap usage:/ { a = $5 }
		/definitely lost:/ { d = $4 " " $5 }
		/possibly lost:/ { p = $4 " " $5 }
		/ERROR SUMMARY:/ { sub(/.*suppressed: /, ""); s = $1 }
		END {
			printf "%s allocs, definitely lost %s, possibly lost %s, %s suppressed\n",
				a != "" ? a : "?", d != "" ? d : "0 bytes", p != "" ? p : "0 bytes", s != "" ? s : "?"
		}' "$IT_DIR/$1.vg"
}

# vg_check NAME STATUS DESC: the TAP lines for one run under valgrind
vg_check() {
	local name=$1 rc=$2 desc=$3
	t_is "$rc" 0 "$desc exits 0 under valgrind"
	if [ "$rc" != 0 ]; then
		_it_diag_file "$IT_DIR/$name.err" 20
	fi
	if grep -q 'ERROR SUMMARY: 0 errors' "$IT_DIR/$name.vg"; then
		t_is 0 0 "$desc: memcheck reports no errors"
		t_diag "$desc: $(_vg_summary "$name")"
	else
		t_is "$(grep -o 'ERROR SUMMARY: [0-9]* errors' "$IT_DIR/$name.vg" | tail -1)" \
			"ERROR SUMMARY: 0 errors" "$desc: memcheck reports no errors"
		# the first reports, with their stacks
		grep -v -E '^==[0-9]+== *$' "$IT_DIR/$name.vg" |
			sed -n '/Invalid\|uninitiali\|definitely lost\|Mismatched\|free()\|overlap\|Syscall param/,+14p' |
			head -80 | sed 's/^/#   /'
		t_diag "(full report: $IT_DIR/$name.vg)"
	fi
}

# Two jobs of samples, as the app saves them.
job1=$(new_job)
job2=$(new_job)
mkdir -p "$UPLOADS/$job1/results" "$UPLOADS/$job1/docs" "$UPLOADS/$job2/flows"
cp "$IT_DATA/mulesoft-orders.xml" "$UPLOADS/$job1/"
cp "$IT_DATA/boomi-invoice.xml" "$UPLOADS/$job1/docs/"
cp "$IT_DATA/sap-customer.iflw" "$UPLOADS/$job1/results/generated_iflow.xml"
sed "s/6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/$job1/" "$IT_DATA/job.json" >"$UPLOADS/$job1/job.json"
cp "$IT_DATA/tibco-shipment.process" "$UPLOADS/$job2/"
cp "$IT_DATA/malformed.xml" "$UPLOADS/$job2/flows/"
write_file "$job2/flows/Übersicht (1) – notes.md" "# notes
caf$(printf '\xc3\xa9') 📄"
# Over the multipart threshold: a multipart upload.
export OUTBOXD_MULTIPART_THRESHOLD=5MiB
head -c $((11 * 1024 * 1024 + 1234)) /dev/urandom >"$UPLOADS/$job1/bundle.zip"
n_files=8

# S3 errors on the way, so that the error paths run under memcheck too:
# an XML error reply, a 500 on a part, a connection reset mid-body.
s3_fault "{\"type\":\"slowdown\",\"count\":1,\"method\":\"PUT\",\"match\":\"/$job2/\"}"
s3_fault '{"type":"error500","count":1,"method":"PUT","query":"partNumber"}'
s3_fault "{\"type\":\"reset\",\"count\":1,\"method\":\"PUT\",\"match\":\"/$job1/uploads/docs/\"}"

rc=0
vg outboxd "$OUTBOXD" --once || rc=$?
vg_check outboxd "$rc" "outboxd --once"
ob_check_s3
t_ok "the result file is under results/" \
	test -f "$(s3_object_file "jobs/$job1/results/generated_iflow.xml")"
t_ok "the UTF-8 name is in S3" \
	test -f "$(s3_object_file "jobs/$job2/uploads/flows/Übersicht (1) – notes.md")"
ob_check_db
t_is "$(json_get faults_injected < <(s3_stats) 2>/dev/null || echo "?")" 3 \
	"the three S3 faults were met (and retried)"
t_is "$(pg_psql -c "select platform || ' ' || status || ' ' || enhance_with_llm from is_migration.jobs where id = '$job1'")" \
	"mulesoft queued true" "job.json's fields are on the job's row"

rc=0
vg status "$OUTBOXCTL" status --json || rc=$?
vg_check status "$rc" "outboxctl status --json"
t_is "$(json_get "done" <"$IT_DIR/status.out" 2>/dev/null || echo "?")" "$n_files" \
	"status --json counts $n_files entries done"
t_is "$(json_get pending <"$IT_DIR/status.out" 2>/dev/null || echo "?")" 0 "and none pending"

rc=0
vg list "$OUTBOXCTL" list --limit 20 || rc=$?
vg_check list "$rc" "outboxctl list"
id=$(awk 'NR > 1 && $1 ~ /^[0-9]+$/ { print $1; exit }' "$IT_DIR/list.out")
rc=0
vg show "$OUTBOXCTL" show "${id:-1}" || rc=$?
vg_check show "$rc" "outboxctl show ${id:-1}"
t_done
