#!/bin/bash
# it-metrics.sh - the Prometheus metrics as node_exporter and Prometheus
# read them: `outboxd --once` writes the file once at the end, mode 0644
# even under the unit's UMask=0077; `promtool check metrics` finds no
# problem in it; real counters (files stored, bytes, retries, failures by
# class) count what happened, gauges carry no _total, outboxd_build_info
# names the version, readiness is its own gauge. Then the shipped unit's
# sandbox: ProtectSystem=strict emulated in a private mount namespace
# (every mount read-only but /proc, /sys, /dev, the state directory and
# the unit's ReadWritePaths=), in which outboxd -n and --once can write
# the README's metrics file, and without the ReadWritePaths= line cannot.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init metrics
s3_start
ob_setup
command -v promtool >/dev/null || t_bail "promtool not found (apt-get install prometheus)"
UNIT=$abs_top_srcdir/packaging/systemd/outboxd.service

# promtool_clean FILE: promtool reads it and reports nothing at all
promtool_clean() {
	local out rc=0
	out=$(promtool check metrics <"$1" 2>&1) || rc=$?
	[ -z "$out" ] && [ "$rc" = 0 ] && return 0
	t_diag "promtool (exit $rc): $out"
	return 1
}
# metric FILE SERIES: the value of one series (exact name and labels)
metric() { awk -v s="$2" '$1 == s { print $2 }' "$1"; }

# --- --once, with one transient S3 failure to count
export OUTBOXD_METRICS_FILE=$IT_DIR/prom/outboxd.prom
mkdir -p "$IT_DIR/prom"
j=$(new_job)
write_file "$j/a.xml" "<a/>"
write_file "$j/b.xml" "<bb/>"
write_file "$j/c.xml" "<ccc/>"
s3_fault '{"type":"slowdown","count":1,"method":"PUT","match":"/a.xml"}'
rc=0
(umask 0077; "$OUTBOXD" --once >"$IT_DIR/once.log" 2>&1) || rc=$?
t_is "$rc" 0 "outboxd --once stores everything (exit 0)"
M=$OUTBOXD_METRICS_FILE
t_ok "--once wrote the metrics file at the end" test -s "$M"
t_is "$(stat -c %a "$M")" 644 "the file is 0644 under umask 0077 (node_exporter can read it)"
t_ok "promtool check metrics: no problem" promtool_clean "$M"
t_is "$(metric "$M" 'outboxd_stored_total{leg="s3"}')" 3 "outboxd_stored_total counts the 3 files S3 stored"
t_is "$(metric "$M" 'outboxd_uploaded_bytes_total')" 15 "outboxd_uploaded_bytes_total counts their 15 bytes"
t_is "$(metric "$M" 'outboxd_failures_total{leg="s3",class="transient"}')" 1 "the SlowDown is one transient failure"
t_is "$(metric "$M" 'outboxd_failures_total{leg="s3",class="permanent"}')" 0 "and no permanent one"
t_is "$(metric "$M" 'outboxd_retries_total{leg="s3"}')" 1 "and one retry"
t_ok "every counter family ends in _total, no gauge does" bash -c "
	grep '^# TYPE' '$M' | awk '(\$4 == \"counter\") != (\$3 ~ /_total\$/) { bad = 1; print } END { exit bad }'"
t_ok "outboxd_build_info names the version" bash -c "grep -Eq '^outboxd_build_info\\{version=\"[0-9][^\"]*\"\\} 1\$' '$M'"
t_is "$(metric "$M" outboxd_ready)" 1 "readiness is its own gauge (1 after the rescan)"
t_is "$(grep -Ec '^outboxd_up[ {]' "$M")" 1 "outboxd_up is one series without labels"
t_is "$(metric "$M" 'outboxd_entries{leg="s3",state="done"}')" 3 "the outbox gauges: 3 entries done in S3"
t_is "$(find "$IT_DIR/prom" -name '*tmp*' | wc -l)" 0 "no temporary file left behind"

# --- the unit's sandbox
# sandbox RW... -- CMD: CMD in a private mount namespace where, as
# ProtectSystem=strict makes it, every mount is read-only except the API
# file systems and the RW paths (bind-mounted on themselves first, so they
# keep their own writable mount). /var/lib/prometheus is a tmpfs there
# (with node-exporter/ in it), so the README's path exists and the host's
# is untouched. The umask is the unit's UMask=.
sandbox() {
	local rw=()
	while [ "$1" != -- ]; do rw+=("$1"); shift; done
	shift
	unshare -m bash -s -- "$(unit_value UMask)" "${rw[@]}" -- "$@" <<-'SANDBOX'
	set -e
	mount --make-rprivate /
	mount -t tmpfs -o mode=0755 tmpfs /var/lib/prometheus
	mkdir -m 0755 /var/lib/prometheus/node-exporter
	umask "$1"; shift
	keep=()
	while [ "$1" != -- ]; do
		[ -d "$1" ] && mount --bind "$1" "$1" && keep+=("$1")
		shift
	done
	shift
	findmnt -rn -o TARGET | while read -r m; do
		case $m in /proc | /proc/* | /sys | /sys/* | /dev | /dev/*) continue ;; esac
		for k in "${keep[@]}"; do [ "$m" = "$k" ] && continue 2; done
		mount -o remount,bind,ro "$m"
	done
	exec "$@"
	SANDBOX
}
# unit_value KEY: the values of KEY= in the shipped unit, space-separated
unit_value() { sed -n "s/^$1=//p" "$UNIT" | paste -sd ' '; }
# the unit's ReadWritePaths= (a leading - means "if it exists")
rw_paths() { local p; for p in $(unit_value ReadWritePaths); do echo "${p#-}"; done; }

t_ok "the unit allows the README's metrics directory" grep -Eq '^ReadWritePaths=.*/var/lib/prometheus/node-exporter' "$UNIT"
export OUTBOXD_METRICS_FILE=/var/lib/prometheus/node-exporter/outboxd.prom
t_ok "the sandbox is read-only where the unit does not allow writes" \
	sandbox "$IT_DIR" -- bash -c "! touch /var/lib/prometheus/node-exporter/x 2>/dev/null && ! touch '$abs_top_srcdir/x' 2>/dev/null"
rc=0
sandbox "$IT_DIR" -- "$OUTBOXD" -n >"$IT_DIR/n-denied.log" 2>&1 || rc=$?
t_is "$rc" 78 "without ReadWritePaths= outboxd -n refuses the metrics file (exit 78)"
rc=0
# shellcheck disable=SC2046 # one argument per path
sandbox "$IT_DIR" $(rw_paths) -- "$OUTBOXD" -n >"$IT_DIR/n.log" 2>&1 || rc=$?
t_is "$rc" 0 "with the unit's ReadWritePaths= outboxd -n accepts it"
write_file "$j/d.xml" "<d/>"
rc=0
# shellcheck disable=SC2046 # one argument per path
sandbox "$IT_DIR" $(rw_paths) -- bash -c "'$OUTBOXD' --once >'$IT_DIR/once-sandbox.log' 2>&1 &&
	stat -c %a '$OUTBOXD_METRICS_FILE' && promtool check metrics <'$OUTBOXD_METRICS_FILE'" \
	>"$IT_DIR/sandbox.out" 2>&1 || rc=$?
t_is "$rc" 0 "--once in the sandbox writes the file and promtool passes it"
t_is "$(head -1 "$IT_DIR/sandbox.out")" 644 "mode 0644 there too (the unit's UMask=$(unit_value UMask))"
t_done
