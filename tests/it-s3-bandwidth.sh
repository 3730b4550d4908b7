#!/bin/bash
# it-s3-bandwidth.sh - OUTBOXD_MAX_BANDWIDTH is a total for all transfers:
# 24 MiB in six 4 MiB files, sent 4 at a time at a 2 MiB/s cap, take
# 12 s within 10% (from the first byte the verifying proxy received to
# the last), shared by the transfers running together; a bad value stops
# outboxd at start.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init s3-bandwidth
s3_start
ob_setup

set +e
OUTBOXD_MAX_BANDWIDTH=fast "$OUTBOXD" --once >"$IT_DIR/bad.out" 2>&1
rc=$?
set -e
t_is "$rc" 78 "OUTBOXD_MAX_BANDWIDTH=fast stops outboxd with EX_CONFIG"
t_ok "and is named" grep -q 'OUTBOXD_MAX_BANDWIDTH=fast: not a rate' "$IT_DIR/bad.out"

j=$(new_job)
mkdir -p "$UPLOADS/$j"
for i in 1 2 3 4 5 6; do head -c $((4 * 1024 * 1024)) /dev/urandom >"$UPLOADS/$j/f$i.bin"; done
bytes=$((24 * 1024 * 1024)) cap=$((2 * 1024 * 1024))
s3_reset_stats
t0=$(_it_now_us)
OUTBOXD_MAX_BANDWIDTH=2MiB/s OUTBOXD_CONCURRENCY=4 "$OUTBOXD" --once >>"$IT_DIR/outboxd.log" 2>&1
t1=$(_it_now_us)
wall_ms=$(((t1 - t0) / 1000))
t_is "$("$OUTBOXCTL" status --json | json_get pending)" 0 "all six files were sent"
t_ok "every object has its file's bytes" bash -c 'for i in 1 2 3 4 5 6; do cmp -s "$1/f$i.bin" "$2/jobs/$3/uploads/f$i.bin._S3rver_object" || exit 1; done' _ \
	"$UPLOADS/$j" "$S3_DATA_DIR/$S3_BUCKET" "$j"
# The proxy logs when each PUT's body began and ended: from the first
# byte to the last, the bytes went at the cap.
read -r span_ms ends <<<"$(curl -sS --noproxy '*' -f "$S3_PROXY_URL/__proxy/puts" | node -e '
	let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
		const v = JSON.parse(s);
		const t0 = Math.min(...v.map(p => Date.parse(p.started)));
		const ends = v.map(p => Date.parse(p.time) - t0);
		console.log(`${Math.max(...ends)} ${ends.join(",")}`);
	});')"
want_ms=$((bytes * 1000 / cap))
t_diag "24 MiB at 2 MiB/s: bodies ended at $ends ms after the first began (bytes/cap = $want_ms ms; outboxd --once's wall time $wall_ms ms)"
t_ok "the cap holds within 10% over $((want_ms / 1000)) s (first byte to last: $span_ms ms)" \
	test "$span_ms" -ge $((want_ms * 9 / 10)) -a "$span_ms" -le $((want_ms * 11 / 10))
t_ok "the cap is a total: 4 transfers at once shared it (the first 4 ended after >= 60% of the time, not one every 2 s)" \
	test "$(tr ',' '\n' <<<"$ends" | sort -n | head -1)" -ge $((want_ms * 6 / 10))
t_done
