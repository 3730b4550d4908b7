#!/bin/bash
# it-fuzz.sh - fuzzes what outboxd reads from outside: the .env parser, the
# path-to-key mapping, S3's XML error replies and job.json with its diff
# (tests/fuzz/fuzz-*.c, libFuzzer with AddressSanitizer and UBSan), and
# that no message shows a database password (fuzz-redact). Each
# target is built into $IT_DIR and run for OUTBOXD_FUZZ_SECONDS (default
# 20) seconds, two at a time, on a copy of its seed corpus
# (tests/fuzz/corpus/<target>/, every seed is run first, so a crash once
# found and kept there stays fixed). Passes when no target crashes, leaks,
# times out or breaks an invariant; a crashing input is left in the kept
# $IT_DIR. Skipped when OUTBOXD_FUZZ_SECONDS=0 or clang's libFuzzer
# runtime is missing (Debian: clang libclang-rt-14-dev).
set -euo pipefail
# it_init clears OUTBOXD_*: read the setting first.
fuzz_seconds=${OUTBOXD_FUZZ_SECONDS:-20}
. "$(dirname "$0")/lib.sh"
it_init fuzz

targets=(fuzz-dotenv fuzz-keymap fuzz-s3error fuzz-jobdiff fuzz-redact)

case $fuzz_seconds in
'' | *[!0-9]*) t_bail "OUTBOXD_FUZZ_SECONDS=$fuzz_seconds is not a number of seconds" ;;
esac
if [ "$fuzz_seconds" -eq 0 ]; then
	t_skip "fuzz targets" "OUTBOXD_FUZZ_SECONDS=0"
	t_done
fi

rc=0
bash "$IT_SRCDIR/fuzz/build.sh" "$IT_DIR/fuzz" "$abs_top_builddir" >"$IT_DIR/build.log" 2>&1 || rc=$?
if [ "$rc" -eq 77 ]; then
	t_skip "fuzz targets" "$(tail -1 "$IT_DIR/build.log" | sed "s/^build.sh: //")"
	t_done
fi
t_is "$rc" 0 "the fuzz targets build with clang, ASan and UBSan"
if [ "$rc" -ne 0 ]; then
	_it_diag_file "$IT_DIR/build.log" 30
	t_done
fi

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:allocator_may_return_null=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for s in llvm-symbolizer llvm-symbolizer-14; do
	if command -v "$s" >/dev/null 2>&1; then
		ASAN_SYMBOLIZER_PATH=$(command -v "$s")
		export ASAN_SYMBOLIZER_PATH
		break
	fi
done

# fuzz TARGET: runs it; its output in $IT_DIR/TARGET.log, status in .rc
fuzz() {
	local t=$1 corpus=$IT_DIR/corpus/$1
	mkdir -p "$IT_DIR/corpus"
	# a writable copy: the source tree is read-only under distcheck
	cp -R "$IT_SRCDIR/fuzz/corpus/$t" "$corpus"
	chmod -R u+w "$corpus"
	mkdir -p "$IT_DIR/artifacts/$t"
	local r=0
	nice -n 10 "$IT_DIR/fuzz/$t" -max_total_time="$fuzz_seconds" -timeout=10 \
		-rss_limit_mb=1024 -print_final_stats=1 \
		-artifact_prefix="$IT_DIR/artifacts/$t/" "$corpus" \
		</dev/null >"$IT_DIR/$t.log" 2>&1 || r=$?
	echo "$r" >"$IT_DIR/$t.rc"
}

# two at a time (each libFuzzer process is single-threaded)
for ((i = 0; i < ${#targets[@]}; i += 2)); do
	pids=()
	for t in "${targets[@]:i:2}"; do
		fuzz "$t" &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p" || true; done
done

for t in "${targets[@]}"; do
	r=$(cat "$IT_DIR/$t.rc" 2>/dev/null || echo missing)
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$IT_DIR/$t.log" | tail -1)
	seeds=$(find "$IT_SRCDIR/fuzz/corpus/$t" -type f | wc -l)
	if [ "$r" = 0 ]; then
		t_is "$r" 0 "$t: no crash in ${fuzz_seconds} s from $seeds seeds"
		t_diag "$t: ${runs:-?} runs, no crash"
	else
		t_is "$r" 0 "$t: no crash in ${fuzz_seconds} s from $seeds seeds"
		t_diag "$t: ${runs:-?} runs, exit status $r; the input that failed:"
		find "$IT_DIR/artifacts/$t" -type f | sed 's/^/#   /'
		t_diag "(reproduce: $IT_DIR/fuzz/$t FILE; add FILE to tests/fuzz/corpus/$t/ once fixed)"
		grep -E '^(==[0-9]+==|SUMMARY|fuzz-|.*runtime error|    #[0-9])' "$IT_DIR/$t.log" |
			head -40 | sed 's/^/#   /'
	fi
done
t_done
