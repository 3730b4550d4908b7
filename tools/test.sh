#!/bin/bash
# tools/test.sh - the whole test suite, from a fresh clone on Debian 12:
# installs what it needs, builds, and runs every unit and integration test
# (each integration test starts its own PostgreSQL and S3 server), then
# the same suite under AddressSanitizer and UBSan, then `make distcheck`.
# The last line is the count: "N passed, M failed"; the exit status is
# non-zero when anything failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
top=$PWD
export OUTBOXD_NODE_MODULES=$top/node_modules
# Integration tests mostly wait on servers: one more job than cores.
jobs=$(($(nproc) + 1))
steps_failed=0
passed=0
failed=0

step() { printf '\n== %s\n' "$*"; }

# Adds a test-suite.log's summary to the totals.
count() {
	local log=$1 p f e x
	[ -f "$log" ] || { failed=$((failed + 1)); return; }
	p=$(awk '/^# PASS:/ {print $3}' "$log")
	f=$(awk '/^# FAIL:/ {print $3}' "$log")
	e=$(awk '/^# ERROR:/ {print $3}' "$log")
	x=$(awk '/^# XPASS:/ {print $3}' "$log")
	passed=$((passed + ${p:-0}))
	failed=$((failed + ${f:-0} + ${e:-0} + ${x:-0}))
	grep -E '^(FAIL|ERROR|XPASS):' "$log" | head -20 || true
}

step "dependencies"
bash tools/deps.sh || { echo "0 passed, 1 failed"; exit 1; }

step "build (warnings are errors)"
if ! bash tools/build.sh _build CFLAGS="-O2 -g -Werror -D_FORTIFY_SOURCE=2" >/dev/null; then
	echo "0 passed, 1 failed"
	exit 1
fi

step "make check"
# The package test installs the .deb: only here, once, as root.
(cd _build && OUTBOXD_TEST_DEB=1 make -s -j"$jobs" check >/dev/null 2>&1) ||
	steps_failed=$((steps_failed + 1))
count _build/test-suite.log

step "the outbox without SQLite's pre-update hook (counts kept by triggers)"
# Debian's SQLite has the hook, so the build above keeps the counts in C;
# a SQLite built without it keeps them by the schema's triggers. The
# outbox's tests and the simulation check that path too.
if bash tools/build.sh _build-nohook ac_cv_func_sqlite3_preupdate_hook=no \
	CFLAGS="-O2 -g -Werror" >/dev/null &&
	! grep -q 'define HAVE_SQLITE3_PREUPDATE_HOOK' _build-nohook/config.h; then
	(cd _build-nohook && OUTBOXD_SIM_SCHEDULES=300 make -s -j"$jobs" check \
		TESTS="tests/t-outbox tests/t-scale tests/t-sim" >/dev/null 2>&1) ||
		steps_failed=$((steps_failed + 1))
	count _build-nohook/test-suite.log
else
	echo "the build without the pre-update hook failed"
	failed=$((failed + 1))
fi

step "make check under AddressSanitizer and UBSan"
if bash tools/build.sh _build-asan --enable-sanitizers CFLAGS="-O1 -g" >/dev/null; then
	# The simulation's 2000 schedules ran above; here it hunts memory
	# errors, for which a few hundred do.
	(cd _build-asan && OUTBOXD_FUZZ_SECONDS=0 OUTBOXD_SIM_SCHEDULES=300 ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		make -s -j"$jobs" check >/dev/null 2>&1) || steps_failed=$((steps_failed + 1))
	count _build-asan/test-suite.log
else
	echo "the sanitizer build failed"
	failed=$((failed + 1))
fi

step "make distcheck"
if (cd _build && OUTBOXD_FUZZ_SECONDS=0 OUTBOXD_SIM_SCHEDULES=200 make -s -j"$jobs" distcheck >distcheck.log 2>&1); then
	echo "distcheck passed"
else
	echo "distcheck failed:"
	tail -30 _build/distcheck.log
	failed=$((failed + 1))
fi

[ "$steps_failed" -gt 0 ] && [ "$failed" -eq 0 ] && failed=$steps_failed
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
