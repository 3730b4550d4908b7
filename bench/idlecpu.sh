#!/bin/bash
# idlecpu.sh OUTBOXD SECONDS VAR=VALUE...: starts the daemon, waits for its
# start-up rescan to end, then prints its CPU (user+sys seconds, from
# /proc/PID/stat) over SECONDS and the share of one core; stops it.
set -eu
bin=$1 secs=$2
shift 2
log=$(mktemp)
env "$@" "$bin" </dev/null >"$log" 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q 'rescan (start-up)' "$log" && break; sleep 0.5; done
sleep 2
hz=$(getconf CLK_TCK)
cpu() { sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }'; }
a=$(cpu)
sleep "$secs"
b=$(cpu)
kill -TERM "$pid"
wait "$pid" || true
awk -v a="$a" -v b="$b" -v hz="$hz" -v s="$secs" 'BEGIN { printf "idle CPU: %.2f s user+sys in %d s = %.2f%% of one core\n", (b - a) / hz, s, 100 * (b - a) / hz / s }'
rm -f "$log"
