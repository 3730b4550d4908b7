#!/bin/bash
# it-http.sh - OUTBOXD_HTTP_LISTEN as Prometheus and a Kubernetes probe use
# it: GET /metrics gives the same text promtool passes, GET /healthz and
# /readyz answer 200 while all is well; /healthz turns 503 while the
# watcher thread is stuck (the outbox write-locked by another process)
# and 200 again after; any other method (405), path (404), a request body
# (400) or a huge head (431) is refused; 16 idle connections leave the
# 17th a 503 while files are still stored (the sync thread never waits on
# HTTP clients); a Unix socket serves the same; a bad value is exit 78.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init http
s3_start
ob_setup
command -v promtool >/dev/null || t_bail "promtool not found (apt-get install prometheus)"

# code URL [CURL ARGS]: the HTTP status curl got (000: none)
code() { local u=$1; shift; curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" "$u" || true; }

rc=0
OUTBOXD_HTTP_LISTEN=example.com:80 "$OUTBOXD" -n >"$IT_DIR/bad.out" 2>&1 || rc=$?
t_is "$rc" 78 "a host name in OUTBOXD_HTTP_LISTEN is a configuration error (78)"
t_ok "which names the variable" grep -q 'OUTBOXD_HTTP_LISTEN=example.com:80: the host must be an IP address' "$IT_DIR/bad.out"

PORT=$(free_port)
URL=http://127.0.0.1:$PORT
# The watchdog's period sets how long a silent thread may be: 1 s here.
export OUTBOXD_HTTP_LISTEN=$PORT WATCHDOG_USEC=2000000
ob_start
unset WATCHDOG_USEC
t_ok "a bare port listens on loopback" grep -q "HTTP: serving /metrics, /healthz and /readyz on $PORT" "$IT_DIR/outboxd.log"
t_is "$(code "$URL/healthz")" 200 "GET /healthz is 200 while both threads turn"
_ready() { [ "$(code "$URL/readyz" "$@")" = 200 ]; }
t_ok "GET /readyz is 200 after the start-up rescan" wait_for 5 _ready
j=$(new_job)
write_file "$j/a.xml" "<a/>"
t_ok "a file is stored" ob_wait_idle 20 1
_scraped() { curl -sf "$URL/metrics" >"$IT_DIR/scrape.prom" && grep -q '^outboxd_stored_total{leg="s3"} 1$' "$IT_DIR/scrape.prom"; }
t_ok "GET /metrics counts it (outboxd_stored_total)" wait_for 15 _scraped
t_ok "promtool check metrics on the scraped text: no problem" bash -c "[ -z \"\$(promtool check metrics <'$IT_DIR/scrape.prom' 2>&1)\" ]"
t_ok "served as the text format 0.0.4" bash -c "curl -sI -X GET '$URL/metrics' | grep -qi '^content-type: text/plain; version=0.0.4'"

# --- refused requests
t_is "$(code "$URL/metrics" -X POST -d x)" 405 "POST is 405"
t_ok "naming GET in Allow" bash -c "curl -s -i -X PUT '$URL/metrics' | grep -q '^Allow: GET'"
t_is "$(code "$URL/metrics" -I)" 405 "HEAD is 405 too"
t_is "$(code "$URL/")" 404 "another path is 404"
t_is "$(code "$URL/metrics/../etc" --path-as-is)" 404 "and so is a dotted one"
t_is "$(code "$URL/metrics" -X GET --data-binary abc)" 400 "a GET with a body is 400"
t_is "$(code "$URL/metrics" -X GET -H 'Transfer-Encoding: chunked' --data-binary abc)" 400 "a chunked GET is 400"
t_is "$(code "$URL/metrics" -H "X-Big: $(head -c 9000 /dev/zero | tr '\0' a)")" 431 "a head over 8 KiB is 431"

# --- bounded connections; the sync thread does not wait on them
fds=()
for _ in $(seq 16); do exec {fd}<>"/dev/tcp/127.0.0.1/$PORT"; fds+=("$fd"); done
_busy() { curl -s --max-time 2 "$URL/healthz" | grep -q 'too many connections'; }
t_ok "with 16 idle connections open the 17th is told 503" wait_for 3 _busy
write_file "$j/b.xml" "<b/>"
t_ok "and a file written meanwhile is stored" ob_wait_idle 20 2
for fd in "${fds[@]}"; do exec {fd}>&-; done
t_is "$(code "$URL/healthz")" 200 "closed again, the endpoint answers"
exec {fd}<>"/dev/tcp/127.0.0.1/$PORT"
t_ok "an idle connection is dropped after 5 s" timeout 8 cat <&$fd
exec {fd}>&-

# --- /healthz while the watcher is stuck
# sqlite3 holds the outbox's write lock; the watcher waits in its busy
# timeout (10 s) to journal the next file, and stops turning.
coproc LOCK { sqlite3 "$OUTBOXD_STATE_DB"; }
lock_pid=$LOCK_PID lock_in=${LOCK[1]} lock_out=${LOCK[0]}
echo "BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS it_http_lock(x); SELECT 'locked';" >&"$lock_in"
read -r -t 10 got <&"$lock_out" || got=
t_is "$got" locked "another process holds the outbox's write lock"
write_file "$j/c.xml" "<c/>"
_unhealthy() { curl -s --max-time 2 "$URL/healthz" | grep -q 'unhealthy: the watcher thread has not turned'; }
t_ok "GET /healthz turns 503 naming the stuck watcher" wait_for 8 _unhealthy
t_is "$(code "$URL/healthz")" 503 "with status 503"
echo "ROLLBACK;" >&"$lock_in"
exec {lock_in}>&-
wait "$lock_pid" 2>/dev/null || true
_healthy() { [ "$(code "$URL/healthz")" = 200 ]; }
t_ok "and 200 again once the lock is gone" wait_for 15 _healthy
t_ok "the file is stored after all" ob_wait_idle 20 3
ob_stop

# --- a Unix socket
export OUTBOXD_HTTP_LISTEN=unix:$IT_DIR/http.sock
ob_start
_sock_ready() { [ "$(code http://localhost/readyz --unix-socket "$IT_DIR/http.sock")" = 200 ]; }
t_ok "a Unix socket serves /readyz" wait_for 5 _sock_ready
_sock_metrics() { curl -sf --unix-socket "$IT_DIR/http.sock" http://localhost/metrics | grep -q "^outboxd_stored_total{leg=\"s3\"} 0$"; }
t_ok "and /metrics (the counters start again at 0)" wait_for 5 _sock_metrics
ob_stop
t_ok "the socket file is removed at the stop" test ! -e "$IT_DIR/http.sock"
t_done
