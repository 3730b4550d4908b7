# tests/lib.sh -- the harness for outboxd's integration tests (tests/it-*.sh).
# shellcheck shell=bash
#
# Sourced by bash scripts that automake runs under tap-driver.sh, from the
# build directory.  It gives them:
#   - TAP output:  t_ok, t_is, t_diag, t_skip, t_bail, t_done
#   - a private temporary directory $IT_DIR under the build tree, removed on
#     success and kept (its path printed) on failure, and a trap that stops
#     every server and process the script started, even on failure, ctrl-c,
#     SIGTERM, or (through a small sentinel) SIGKILL of the script
#   - real servers on random loopback ports: PostgreSQL 15 (pg_*), and
#     s3rver behind tests/s3proxy.js, a proxy that verifies every request as
#     AWS would and injects faults on command (s3_*)
#   - helpers: free_port, wait_for, json_get, it_bg / it_stop / it_wait
#
# Works under `set -euo pipefail`.  Needs bash >= 5, curl, openssl, node
# (for S3) and PostgreSQL 15's binaries (for the database).
#
# A test looks like:
#   #!/bin/bash
#   set -euo pipefail
#   . "$(cd "$(dirname "$0")" && pwd)/lib.sh"
#   it_init my-test
#   pg_start; s3_start
#   t_ok "outboxd syncs once" "$OUTBOXD" --once
#   t_is "$(s3_list jobs/ | wc -l)" 3 "three objects stored"
#   t_done

# ---------------------------------------------------------------- locations

_it_lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${abs_top_srcdir:=$(cd "$_it_lib_dir/.." && pwd)}"
abs_top_srcdir=$(cd "$abs_top_srcdir" && pwd)
if [ -z "${abs_top_builddir:-}" ]; then
	if [ -f "$PWD/config.status" ]; then
		abs_top_builddir=$PWD
	else
		abs_top_builddir=$abs_top_srcdir
	fi
fi
mkdir -p "$abs_top_builddir"
abs_top_builddir=$(cd "$abs_top_builddir" && pwd)
: "${srcdir:=$_it_lib_dir}"
# The tests' own source directory (where lib.sh, s3proxy.js and data/ are),
# whatever srcdir means to the caller.
IT_SRCDIR=$_it_lib_dir
IT_DATA=$_it_lib_dir/data
export abs_top_srcdir abs_top_builddir srcdir IT_SRCDIR IT_DATA

# ---------------------------------------------------------------- TAP

_it_n=0            # tests run so far
_it_failed=0       # of which failed
_it_done=          # t_done reached
IT_DIR=${IT_DIR:-}

_it_pass() { _it_n=$((_it_n + 1)); printf 'ok %d - %s\n' "$_it_n" "$1"; }
_it_fail() {
	_it_n=$((_it_n + 1))
	_it_failed=$((_it_failed + 1))
	printf 'not ok %d - %s\n' "$_it_n" "$1"
}

# t_diag MSG...: a TAP diagnostic (every line prefixed with '# ')
t_diag() { printf '%s\n' "$*" | sed 's/^/# /'; }

# the last lines of a file as diagnostics
_it_diag_file() {
	local f=$1 max=${2:-40} n
	[ -s "$f" ] || return 0
	n=$(wc -l <"$f")
	if [ "$n" -gt "$max" ]; then
		t_diag "... ($((n - max)) earlier lines in $f)"
	fi
	tail -n "$max" "$f" | sed 's/^/#   /'
}

# t_ok DESC CMD [ARGS...]: run CMD (output captured); ok if it exits 0.
# Note: bash disables `set -e` inside CMD when CMD is a shell function, so a
# function used here should chain its steps with && or return explicitly.
t_ok() {
	local desc=$1 out rc
	shift
	out=$(mktemp "${IT_DIR:-${TMPDIR:-/tmp}}/.t_ok.XXXXXX")
	if "$@" >"$out" 2>&1; then
		_it_pass "$desc"
		rm -f "$out"
		return 0
	else
		rc=$?
		_it_fail "$desc"
		t_diag "command failed (exit $rc): $*"
		_it_diag_file "$out"
		rm -f "$out"
		return 0
	fi
}

# t_is GOT EXPECTED DESC: ok if the two strings are equal
t_is() {
	if [ "$1" = "$2" ]; then
		_it_pass "$3"
	else
		_it_fail "$3"
		t_diag "     got: '$1'" "expected: '$2'"
	fi
}

# t_skip DESC REASON: a skipped test
t_skip() { _it_n=$((_it_n + 1)); printf 'ok %d - %s # SKIP %s\n' "$_it_n" "$1" "$2"; }

# t_bail MSG: abort the whole test run (servers are still stopped)
t_bail() {
	printf 'Bail out! %s\n' "$*"
	exit 99
}

# t_done: final checks (the verifying proxy refused nothing unexpected, s3rver
# is alive), the plan, and the exit status (1 if anything failed)
t_done() {
	_it_final_checks
	printf '1..%d\n' "$_it_n"
	_it_done=1
	if [ "$_it_failed" -gt 0 ]; then
		t_diag "$_it_failed of $_it_n tests failed"
		exit 1
	fi
	exit 0
}

# ---------------------------------------------------------------- processes

_it_pids=()        # background processes started by the test (it_bg)
_it_sentinel_pid=
_it_proxy_pid=
_it_s3rver_pid=
_it_pg_running=
_it_pg_tmp=

_it_alive() {
	local st
	[ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
	st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

_it_write_pids() {
	[ -n "$IT_DIR" ] && [ -d "$IT_DIR" ] || return 0
	local p
	{
		for p in "${_it_pids[@]}" $_it_proxy_pid $_it_s3rver_pid; do
			echo "$p"
		done
	} >"$IT_DIR/.it-pids"
}

# it_track PID: stop PID at the end of the test too
it_track() {
	_it_pids+=("$1")
	_it_write_pids
}

_it_untrack() {
	local p keep=()
	for p in "${_it_pids[@]}"; do
		[ "$p" = "$1" ] || keep+=("$p")
	done
	_it_pids=("${keep[@]}")
	_it_write_pids
}

# it_bg NAME CMD [ARGS...]: start CMD in the background, output in
# $IT_DIR/NAME.log; its pid is left in $IT_BG_PID.  Call it directly, not in
# $(...).
it_bg() {
	local name=$1
	shift
	"$@" </dev/null >>"$IT_DIR/$name.log" 2>&1 &
	IT_BG_PID=$!
	it_track "$IT_BG_PID"
}

# it_wait PID TIMEOUT: wait up to TIMEOUT seconds for PID to end by itself;
# returns its exit status, or 124 (and leaves it running) on timeout
it_wait() {
	local pid=$1 rc=0
	if ! wait_for "$2" _it_not_alive "$pid"; then
		return 124
	fi
	wait "$pid" 2>/dev/null || rc=$?
	_it_untrack "$pid"
	return "$rc"
}
_it_not_alive() { ! _it_alive "$1"; }

# it_stop PID [SIGNAL [TIMEOUT]]: send SIGNAL (TERM), wait up to TIMEOUT (10)
# seconds, then SIGKILL; returns the process's exit status
it_stop() {
	local pid=$1 sig=${2:-TERM} t=${3:-10} rc=0
	kill -s "$sig" "$pid" 2>/dev/null || true
	if ! wait_for "$t" _it_not_alive "$pid"; then
		t_diag "pid $pid ignored SIG$sig for ${t}s: killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || rc=$?
	_it_untrack "$pid"
	return "$rc"
}

# Terminate a list of pids: TERM to all, up to 5 s, then KILL; reap.
_it_terminate() {
	local p deadline
	[ $# -gt 0 ] || return 0
	for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
	deadline=$(($(_it_now_us) + 5000000))
	for p in "$@"; do
		while _it_alive "$p" && [ "$(_it_now_us)" -lt "$deadline" ]; do
			sleep 0.05
		done
		if _it_alive "$p"; then
			printf '# pid %s did not stop on SIGTERM: killing it\n' "$p"
			kill -KILL "$p" 2>/dev/null || true
		fi
		wait "$p" 2>/dev/null || true
	done
}

# A watcher that stops the servers if the test script itself is killed with
# SIGKILL (then no trap runs).
# It is detached (not a job of the script), so a bare `wait` in a test does
# not wait for it; neither are the servers (see _it_detach).
_it_sentinel_start() {
	local parent=$$ dir=$IT_DIR
	rm -f "$dir/.it-sentinel"
	(
		(
		echo "$BASHPID" >"$dir/.it-sentinel"
		trap '' INT HUP
		trap 'exit 0' TERM
		while kill -0 "$parent" 2>/dev/null; do
			sleep 1 &
			wait $! || true
		done
		if [ -f "$dir/.it-pids" ]; then
			while read -r p; do kill -KILL "$p" 2>/dev/null; done <"$dir/.it-pids"
		fi
		if [ -f "$dir/.it-pgstop" ]; then sh "$dir/.it-pgstop"; fi
		) </dev/null >/dev/null 2>&1 &
	)
	wait_for 5 test -s "$dir/.it-sentinel"
	_it_sentinel_pid=$(cat "$dir/.it-sentinel")
}

# _it_detach PIDFILE LOG CMD [ARGS...]: start a server that is not a job of
# the script (a bare `wait` in a test must not wait for servers); its pid is
# written to PIDFILE
_it_detach() {
	local pidfile=$1 log=$2
	shift 2
	rm -f "$pidfile"
	( "$@" </dev/null >>"$log" 2>&1 &
	  echo $! >"$pidfile" )
}

_it_now_us() { local t=${EPOCHREALTIME//[!0-9]/}; echo "$t"; }

# ---------------------------------------------------------------- init / exit

# it_init NAME: temporary directory, hermetic environment, cleanup trap
it_init() {
	local v
	IT_NAME=$1
	# hermetic: nothing from the caller's S3, AWS, database or outboxd setup
	for v in $(compgen -e); do
		case $v in
		# the harness's own knobs survive; outboxd's settings do not
		OUTBOXD_NODE_MODULES | OUTBOXD_TEST_DEB | OUTBOXD_TEST_SEED | OUTBOXD_FUZZ_SECONDS) ;;
		S3_* | AWS_* | DATABASE_URL | PG* | OUTBOXD_* | VCAP_SERVICES) unset "$v" ;;
		esac
	done
	unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy
	export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

	mkdir -p "$abs_top_builddir/tests/tmp"
	IT_DIR=$(mktemp -d "$abs_top_builddir/tests/tmp/$IT_NAME.XXXXXX")
	chmod 755 "$IT_DIR"
	export IT_DIR IT_NAME
	trap '_it_on_exit' EXIT
	trap '_it_on_signal INT 130' INT
	trap '_it_on_signal TERM 143' TERM
	trap '_it_on_signal HUP 129' HUP
	_it_sentinel_start

	OUTBOXD=$abs_top_builddir/outboxd
	OUTBOXCTL=$abs_top_builddir/outboxctl
	export OUTBOXD OUTBOXCTL
}

_it_on_signal() {
	printf '# interrupted by SIG%s\n' "$1"
	exit "$2"
}

_it_final_checks() {
	if [ -n "$_it_s3rver_pid" ]; then
		_it_check_rejections
		if _it_alive "$_it_s3rver_pid"; then
			_it_pass "s3rver survived the test"
		else
			_it_fail "s3rver survived the test"
			_it_diag_file "$IT_DIR/s3rver.log" 20
		fi
	fi
}

_it_check_rejections() {
	local n want
	if [ -n "$_it_s3rver_pid" ]; then
		n=$(s3_rejections)
		want=${_it_expect_rej:-0}
		if [ "$n" = "$want" ]; then
			if [ "$want" = 0 ]; then
				_it_pass "verifying proxy rejected nothing"
			else
				_it_pass "verifying proxy rejected exactly the $want expected request(s)"
			fi
		else
			_it_fail "verifying proxy rejected nothing"
			t_diag "the verifying S3 proxy refused $n request(s) (the test expected $want);" \
				"AWS would have refused them too. Rejection log ($IT_DIR/s3proxy-rejections.jsonl):"
			_it_rejections_diag
		fi
	fi
}

# the rejection log, readable: one line per refusal, then what the proxy
# computed (canonical request, string to sign) for signature mismatches
_it_rejections_diag() {
	node -e '
		const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean);
		for (const l of lines.slice(-10)) {
			let r;
			try { r = JSON.parse(l); } catch (e) { console.log("#   " + l); continue; }
			console.log(`#   ${r.time} ${r.method} ${r.url || r.path}: ${r.reason}`);
			for (const k of ["headers_not_signed", "canonical_request", "string_to_sign"]) {
				if (r[k] === undefined) continue;
				console.log(`#     ${k.replace(/_/g, " ")}:`);
				for (const x of String(r[k]).split("\n")) console.log(`#       ${x}`);
			}
		}
		if (lines.length > 10) console.log(`#   (${lines.length - 10} earlier refusals in ${process.argv[1]})`);
	' "$IT_DIR/s3proxy-rejections.jsonl" 2>&1 || _it_diag_file "$IT_DIR/s3proxy-rejections.jsonl" 20
}

_it_on_exit() {
	local rc=$?
	set +e
	trap '' INT TERM HUP
	if [ -z "$_it_done" ]; then
		if [ -n "$_it_s3rver_pid" ] && [ "$(s3_rejections)" != "${_it_expect_rej:-0}" ]; then
			_it_check_rejections
		fi
		if [ "$rc" -eq 0 ]; then
			printf '# %s ended without t_done\n' "${IT_NAME:-test}"
			rc=1
		fi
	fi

	[ -n "$_it_sentinel_pid" ] && _it_terminate "$_it_sentinel_pid"
	# the test's own processes first, then the servers
	_it_terminate "${_it_pids[@]}"
	_it_terminate $_it_proxy_pid $_it_s3rver_pid
	# anything else the script left in the background
	# shellcheck disable=SC2046
	_it_terminate $(jobs -p)
	if [ -n "$_it_pg_running" ]; then
		pg_stop immediate >/dev/null 2>&1 || _it_pg_kill
	fi
	if [ -n "$_it_pg_tmp" ] && [ -d "$_it_pg_tmp" ]; then
		if [ "$rc" -ne 0 ] && [ -n "$IT_DIR" ] && [ -d "$IT_DIR" ]; then
			cp "$_it_pg_tmp/postgres.log" "$IT_DIR/postgres.log" 2>/dev/null
		fi
		rm -rf "$_it_pg_tmp"
	fi
	if [ -n "$IT_DIR" ] && [ -d "$IT_DIR" ]; then
		if [ "$rc" -eq 0 ]; then
			rm -rf "$IT_DIR"
		else
			printf '# keeping %s for inspection\n' "$IT_DIR"
		fi
	fi
	exit "$rc"
}

# ---------------------------------------------------------------- utilities

# built_with_asan: true when outboxd carries AddressSanitizer (its memory
# figures are then the sanitizer's, not outboxd's)
# (no "nm | grep -q": with pipefail, nm's SIGPIPE would make it false)
built_with_asan() { case "$(nm "$OUTBOXD" 2>/dev/null)" in *__asan_*) return 0 ;; esac; return 1; }

# free_port: a free TCP port on 127.0.0.1
free_port() {
	if [ -x /usr/bin/python3 ]; then
		/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
	elif command -v node >/dev/null 2>&1; then
		node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
	else
		local p
		while :; do
			p=$((20000 + RANDOM % 40000))
			if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
				echo "$p"
				return 0
			fi
		done
	fi
}

# wait_for TIMEOUT_SECONDS CMD [ARGS...]: retry CMD every 0.1 s until it
# succeeds (0) or TIMEOUT (may be fractional) passes (1)
wait_for() {
	local t=$1 end
	shift
	end=$(($(_it_now_us) + $(awk -v t="$t" 'BEGIN { printf "%d", t * 1000000 }')))
	while :; do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		if [ "$(_it_now_us)" -ge "$end" ]; then
			return 1
		fi
		sleep 0.1
	done
}

# json_get KEY... < JSON: the value at that path (one argument per key or
# array index); strings raw, anything else as JSON; exit 1 when missing
json_get() {
	if [ -x /usr/bin/python3 ]; then
		/usr/bin/python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1:]:
    if isinstance(v, list) and k.isdigit() and int(k) < len(v):
        v = v[int(k)]
    elif isinstance(v, dict) and k in v:
        v = v[k]
    else:
        sys.exit(1)
print(v if isinstance(v, str) else json.dumps(v, separators=(",", ":")))' "$@"
	else
		node -e '
		let d = "";
		process.stdin.on("data", c => d += c).on("end", () => {
			let v = JSON.parse(d);
			for (const k of process.argv.slice(1)) {
				if (v === null || typeof v !== "object" || !(k in v)) process.exit(1);
				v = v[k];
			}
			process.stdout.write((typeof v === "string" ? v : JSON.stringify(v)) + "\n");
		});' -- "$@"
	fi
}

# ---------------------------------------------------------------- PostgreSQL

IT_PG_BINDIR=${IT_PG_BINDIR:-/usr/lib/postgresql/15/bin}

_it_pg_as() {
	if [ "$(id -u)" = 0 ]; then
		(cd "$_it_pg_tmp" && runuser -u postgres -- "$@")
	else
		(cd "$_it_pg_tmp" && "$@")
	fi
}

_it_pg_ctl_start() {
	_it_pg_as "$IT_PG_BINDIR/pg_ctl" -D "$PG_DATA" -l "$_it_pg_tmp/postgres.log" \
		-w -t 30 -s start >>"$_it_pg_tmp/pg_ctl.out" 2>&1
}

_it_pg_kill() {
	local pid
	pid=$(head -1 "$PG_DATA/postmaster.pid" 2>/dev/null) || return 0
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	_it_pg_running=
}

# pg_start: PostgreSQL 15 on a random loopback port, database "outboxd";
# exports DATABASE_URL, PG_PORT, PG_DATA (and PG_USER, PG_SOCKET_DIR, PG_LOG).
# IT_PG_SUPERUSER names the bootstrap superuser (when run as root; else it
# is the user running the test).
pg_start() {
	local try
	[ -x "$IT_PG_BINDIR/initdb" ] ||
		t_bail "PostgreSQL 15 not found in $IT_PG_BINDIR (apt-get install postgresql-15)"
	if [ "$(id -u)" = 0 ]; then
		_it_pg_tmp=$(mktemp -d /tmp/outboxd-pg.XXXXXX)
		chown postgres: "$_it_pg_tmp"
		# the bootstrap superuser's name (pg_supabase needs another)
		PG_USER=${IT_PG_SUPERUSER:-postgres}
	else
		_it_pg_tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-pg.XXXXXX")
		PG_USER=$(id -un)
	fi
	chmod 700 "$_it_pg_tmp"
	PG_DATA=$_it_pg_tmp/data
	PG_SOCKET_DIR=$_it_pg_tmp
	PG_LOG=$_it_pg_tmp/postgres.log
	if ! _it_pg_as "$IT_PG_BINDIR/initdb" -D "$PG_DATA" -U "$PG_USER" -A trust -E UTF8 \
		--locale=C --no-sync --no-instructions >"$IT_DIR/initdb.log" 2>&1; then
		_it_diag_file "$IT_DIR/initdb.log"
		t_bail "initdb failed"
	fi
	if [ "$(id -u)" = 0 ]; then
		printf '%s\n' "runuser -u postgres -- '$IT_PG_BINDIR/pg_ctl' -D '$PG_DATA' -m immediate -s stop" \
			"rm -rf '$_it_pg_tmp'" >"$IT_DIR/.it-pgstop"
	else
		printf '%s\n' "'$IT_PG_BINDIR/pg_ctl' -D '$PG_DATA' -m immediate -s stop" \
			"rm -rf '$_it_pg_tmp'" >"$IT_DIR/.it-pgstop"
	fi
	cat >>"$PG_DATA/postgresql.conf" <<EOF
# outboxd tests
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_SOCKET_DIR'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 50
log_min_messages = warning
EOF
	for try in 1 2 3 4 5; do
		PG_PORT=$(free_port)
		echo "port = $PG_PORT" >>"$PG_DATA/postgresql.conf"
		if _it_pg_ctl_start; then
			_it_pg_running=1
			break
		fi
		t_diag "PostgreSQL did not start on port $PG_PORT (try $try)"
	done
	if [ -z "$_it_pg_running" ]; then
		_it_diag_file "$PG_LOG"
		_it_diag_file "$_it_pg_tmp/pg_ctl.out"
		t_bail "PostgreSQL did not start"
	fi
	DATABASE_URL=postgresql://$PG_USER@127.0.0.1:$PG_PORT/outboxd
	export DATABASE_URL PG_PORT PG_DATA PG_USER PG_SOCKET_DIR PG_LOG
	if ! "$IT_PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 \
		"postgresql://$PG_USER@127.0.0.1:$PG_PORT/postgres" -c 'CREATE DATABASE outboxd' \
		>"$IT_DIR/createdb.log" 2>&1; then
		_it_diag_file "$IT_DIR/createdb.log"
		t_bail "cannot create the database outboxd"
	fi
}

# pg_psql [SQL...] | [psql options...]: psql -X -At -v ON_ERROR_STOP=1 on the
# test database.  Arguments that do not start with '-' are each run as SQL
# (-c); with a first argument starting with '-' all are passed to psql as is;
# with none, SQL is read from stdin.
pg_psql() {
	local a args=()
	if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
		for a in "$@"; do args+=(-c "$a"); done
	else
		args=("$@")
	fi
	"$IT_PG_BINDIR/psql" -X -At -v ON_ERROR_STOP=1 -d "$DATABASE_URL" "${args[@]}"
}

# pg_stop [MODE]: stop the server (MODE fast, the default, smart or
# immediate -- immediate is a crash as far as PostgreSQL is concerned)
pg_stop() {
	_it_pg_as "$IT_PG_BINDIR/pg_ctl" -D "$PG_DATA" -m "${1:-fast}" -w -t 30 -s stop \
		>>"$_it_pg_tmp/pg_ctl.out" 2>&1 || return 1
	_it_pg_running=
}

# pg_restart: stop, then start with the same data on the same port
pg_restart() {
	pg_stop
	pg_up
}

# pg_up: start a stopped server again (same data, same port)
pg_up() {
	_it_pg_ctl_start || {
		_it_diag_file "$PG_LOG"
		return 1
	}
	_it_pg_running=1
}

# pgbouncer_start: pgbouncer (Debian's, 1.18) in transaction mode in front
# of the test PostgreSQL, as Supabase's transaction pooler is: no session
# state survives a transaction, no named prepared statements. Exports
# PGBOUNCER_URL (same user and database as DATABASE_URL).
pgbouncer_start() {
	local port dir=$_it_pg_tmp/pgbouncer bin
	bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
	[ -x "$bin" ] || t_bail "pgbouncer not found (apt-get install pgbouncer)"
	port=$(free_port)
	mkdir -p "$dir"
	printf '"%s" ""\n' "$PG_USER" outboxd_agent >"$dir/userlist.txt"
	cat >"$dir/pgbouncer.ini" <<EOF
[databases]
outboxd = host=127.0.0.1 port=$PG_PORT dbname=outboxd
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
max_client_conn = 100
default_pool_size = 4
ignore_startup_parameters = extra_float_digits,options
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
	if [ "$(id -u)" = 0 ]; then chown -R postgres: "$dir"; fi
	if ! _it_pg_as "$bin" -d "$dir/pgbouncer.ini" >"$IT_DIR/pgbouncer.out" 2>&1; then
		_it_diag_file "$IT_DIR/pgbouncer.out"
		t_bail "pgbouncer did not start"
	fi
	wait_for 10 test -s "$dir/pgbouncer.pid" || t_bail "pgbouncer wrote no pid file"
	it_track "$(cat "$dir/pgbouncer.pid")"
	PGBOUNCER_URL=postgresql://$PG_USER@127.0.0.1:$port/outboxd
	export PGBOUNCER_URL
	wait_for 10 "$IT_PG_BINDIR/psql" -X -At -d "$PGBOUNCER_URL" -c 'select 1' ||
		t_bail "pgbouncer does not answer at $PGBOUNCER_URL"
}

# ---------------------------------------------------------------- S3

_it_s3_ak=S3RVER
_it_s3_sk=S3RVER
_it_s3_region=us-east-1
IT_EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

_it_s3rver_port() {
	sed -n 's/^S3rver listening on .*:\([0-9][0-9]*\)$/\1/p' "$IT_DIR/s3rver.log" 2>/dev/null | head -1
}
_it_s3rver_ready() { [ -n "$(_it_s3rver_port)" ]; }
_it_proxy_ready() { [ -s "$IT_DIR/s3proxy.port" ] || ! _it_alive "$_it_proxy_pid"; }

_it_proxy_start() {
	local port=$1
	rm -f "$IT_DIR/s3proxy.port"
	_it_detach "$IT_DIR/.s3proxy.pid" "$IT_DIR/s3proxy.log" \
		env OUTBOXD_NODE_MODULES="$NODE_MODULES" node "$_it_lib_dir/s3proxy.js" \
		--listen "127.0.0.1:$port" --upstream "$S3_UPSTREAM_URL" \
		--access-key "$_it_s3_ak" --secret-key "$_it_s3_sk" --region "$_it_s3_region" \
		--data-dir "$S3_DATA_DIR" --port-file "$IT_DIR/s3proxy.port" \
		--log "$IT_DIR/s3proxy-rejections.jsonl"
	_it_proxy_pid=$(cat "$IT_DIR/.s3proxy.pid")
	_it_write_pids
	if ! wait_for 15 _it_proxy_ready || ! _it_alive "$_it_proxy_pid"; then
		_it_diag_file "$IT_DIR/s3proxy.log"
		return 1
	fi
	S3_PROXY_PORT=$(cat "$IT_DIR/s3proxy.port")
}

# s3_start: s3rver 3.7.1 with the bucket outboxd-test, behind the verifying
# proxy; exports S3_BUCKET, AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_REGION, S3_PROXY_URL, S3_UPSTREAM_URL,
# S3_DATA_DIR (and S3_PROXY_PORT, NODE_MODULES)
s3_start() {
	NODE_MODULES=${OUTBOXD_NODE_MODULES:-$abs_top_srcdir/node_modules}
	command -v node >/dev/null 2>&1 || t_bail "node not found (apt-get install nodejs npm)"
	[ -f "$NODE_MODULES/s3rver/bin/s3rver.js" ] && [ -d "$NODE_MODULES/@smithy/signature-v4" ] ||
		t_bail "the test servers are not installed in $NODE_MODULES: run 'npm ci' in $abs_top_srcdir (or set OUTBOXD_NODE_MODULES)"
	S3_DATA_DIR=$IT_DIR/s3data
	S3_BUCKET=outboxd-test
	mkdir -p "$S3_DATA_DIR"
	_it_detach "$IT_DIR/.s3rver.pid" "$IT_DIR/s3rver.log" \
		node --openssl-legacy-provider "$NODE_MODULES/s3rver/bin/s3rver.js" \
		--directory "$S3_DATA_DIR" --address 127.0.0.1 --port 0 --silent \
		--no-vhost-buckets --configure-bucket "$S3_BUCKET"
	_it_s3rver_pid=$(cat "$IT_DIR/.s3rver.pid")
	_it_write_pids
	if ! wait_for 20 _it_s3rver_ready; then
		_it_diag_file "$IT_DIR/s3rver.log"
		t_bail "s3rver did not start"
	fi
	S3_UPSTREAM_URL=http://127.0.0.1:$(_it_s3rver_port)
	_it_proxy_start 0 || t_bail "the verifying S3 proxy did not start"
	S3_PROXY_URL=http://127.0.0.1:$S3_PROXY_PORT
	wait_for 10 curl -sf --noproxy '*' -o /dev/null "$S3_UPSTREAM_URL/" ||
		t_bail "s3rver does not answer at $S3_UPSTREAM_URL"
	wait_for 10 curl -sf --noproxy '*' -o /dev/null "$S3_PROXY_URL/__proxy/stats" ||
		t_bail "the verifying S3 proxy does not answer at $S3_PROXY_URL"
	AWS_ENDPOINT_URL_S3=$S3_PROXY_URL
	AWS_ACCESS_KEY_ID=$_it_s3_ak
	AWS_SECRET_ACCESS_KEY=$_it_s3_sk
	AWS_REGION=$_it_s3_region
	export S3_BUCKET AWS_ENDPOINT_URL_S3 AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION \
		S3_PROXY_URL S3_PROXY_PORT S3_UPSTREAM_URL S3_DATA_DIR NODE_MODULES
}

# s3_down: stop the proxy: the S3 endpoint refuses connections
s3_down() {
	[ -n "$_it_proxy_pid" ] || return 0
	_it_terminate "$_it_proxy_pid"
	_it_proxy_pid=
	_it_write_pids
}

# s3_up: start the proxy again on the same port
s3_up() {
	[ -z "$_it_proxy_pid" ] || return 0
	_it_proxy_start "$S3_PROXY_PORT" || {
		t_diag "the verifying S3 proxy did not start again on port $S3_PROXY_PORT"
		return 1
	}
}

# s3_urlencode STRING: every byte but A-Za-z0-9-._~/ as %XX (an S3 key in a
# URL path, as AWS's canonical URI has it)
s3_urlencode() {
	(
		export LC_ALL=C
		local s=$1 i c out=
		for ((i = 0; i < ${#s}; i++)); do
			c=${s:i:1}
			case $c in
			[A-Za-z0-9._~/-]) out+=$c ;;
			*) out+=$(printf '%%%02X' "'$c") ;;
			esac
		done
		printf '%s\n' "$out"
	)
}

# Signed request through the proxy: curl's own SigV4 (curl >= 7.75).  curl
# 7.88 signs the query string as given, unsorted and unescaped: pass query
# parameters already sorted and escaped.
_it_s3_curl() {
	curl -sS --noproxy '*' --aws-sigv4 "aws:amz:$_it_s3_region:s3" \
		--user "$_it_s3_ak:$_it_s3_sk" "$@"
}

# s3_object_file KEY: the stored bytes of KEY in s3rver's data directory
s3_object_file() { printf '%s\n' "$S3_DATA_DIR/$S3_BUCKET/$1._S3rver_object"; }
# s3_object_metadata KEY: its metadata (JSON: content-type, x-amz-meta-*)
s3_object_metadata() { printf '%s\n' "$S3_DATA_DIR/$S3_BUCKET/$1._S3rver_metadata.json"; }

# s3_get KEY OUTFILE: a signed GET through the proxy; fails on HTTP >= 400
s3_get() {
	_it_s3_curl -f -H "x-amz-content-sha256: $IT_EMPTY_SHA256" -o "$2" \
		"$S3_PROXY_URL/$S3_BUCKET/$(s3_urlencode "$1")"
}

# s3_head KEY: a signed HEAD through the proxy; prints the response headers
s3_head() {
	_it_s3_curl -f -I -H "x-amz-content-sha256: $IT_EMPTY_SHA256" \
		"$S3_PROXY_URL/$S3_BUCKET/$(s3_urlencode "$1")" | tr -d '\r'
}

# s3_put KEY FILE [CURL ARGS...]: a signed PUT with x-amz-content-sha256 and
# Content-MD5 through the proxy; prints the response headers
s3_put() {
	local key=$1 file=$2 sha md5
	shift 2
	sha=$(sha256sum <"$file" | cut -d' ' -f1)
	md5=$(openssl dgst -md5 -binary <"$file" | base64)
	_it_s3_curl -f -D - -o /dev/null -X PUT --data-binary "@$file" \
		-H "x-amz-content-sha256: $sha" -H "Content-MD5: $md5" \
		-H 'Content-Type: application/octet-stream' "$@" \
		"$S3_PROXY_URL/$S3_BUCKET/$(s3_urlencode "$key")" | tr -d '\r'
}

# s3_list [PREFIX]: the keys under PREFIX, one per line, in byte order (read
# from s3rver's data directory: no request, no limit)
s3_list() {
	local root=$S3_DATA_DIR/$S3_BUCKET
	[ -d "$root" ] || return 0
	(cd "$root" && find . -type f -name '*._S3rver_object' -print) |
		sed -e 's|^\./||' -e 's/\._S3rver_object$//' |
		P=${1:-} awk 'index($0, ENVIRON["P"]) == 1' | LC_ALL=C sort
}

# s3_fault JSON: arm a fault (see tests/s3proxy.js); e.g.
#   s3_fault '{"type":"slowdown","count":2,"method":"PUT","match":"/jobs/"}'
s3_fault() {
	curl -sS --noproxy '*' --fail-with-body -o /dev/null -X POST \
		-H 'Content-Type: application/json' --data-binary "$1" "$S3_PROXY_URL/__proxy/fault"
}
s3_clear_faults() { curl -sS --noproxy '*' -f -o /dev/null -X POST "$S3_PROXY_URL/__proxy/clear"; }
s3_reset_stats() { curl -sS --noproxy '*' -f -o /dev/null -X POST "$S3_PROXY_URL/__proxy/reset"; }
# s3_stats: the proxy's counters as JSON (see json_get)
s3_stats() { curl -sS --noproxy '*' -f "$S3_PROXY_URL/__proxy/stats"; }

# s3_rejections: how many requests the proxy refused since s3_start (across
# s3_down/s3_up)
s3_rejections() {
	if [ -f "$IT_DIR/s3proxy-rejections.jsonl" ]; then
		wc -l <"$IT_DIR/s3proxy-rejections.jsonl" | tr -d ' '
	else
		echo 0
	fi
}

# s3_expect_rejections N: the test means the proxy to refuse exactly N
# requests in all; any other number fails the test
s3_expect_rejections() { _it_expect_rej=$1; }

# ---------------------------------------------------------------- Supabase

# pg_supabase: turns the test database into one set up as Supabase's is.
# Call pg_start with IT_PG_SUPERUSER=supabase_admin first: Supabase's
# bootstrap superuser is supabase_admin, and PostgreSQL cannot demote its
# bootstrap user. Then:
#   - postgres: LOGIN NOSUPERUSER CREATEROLE CREATEDB REPLICATION BYPASSRLS,
#     owner of the database, search_path "$user", public, extensions
#   - anon, authenticated: NOLOGIN NOINHERIT; service_role: NOLOGIN
#     NOINHERIT BYPASSRLS; authenticator: LOGIN NOINHERIT, granted the
#     three (PostgREST logs in as it and switches per request)
#   - schema auth owned by supabase_auth_admin (postgres may use it, not
#     create in it) with Supabase's current auth.uid(), auth.role() and
#     auth.jwt(): request.jwt.claim.* of PostgREST before 9, else
#     request.jwt.claims (JSON)
#   - schema extensions with pgcrypto in it
# Exports PG_ADMIN_URL (supabase_admin), DATABASE_URL (now postgres's)
# and SUPA_AUTHENTICATOR_URL.
pg_supabase() {
	[ "$PG_USER" != postgres ] ||
		t_bail "pg_supabase: start PostgreSQL with IT_PG_SUPERUSER=supabase_admin (the bootstrap superuser cannot be demoted)"
	PG_ADMIN_URL=$DATABASE_URL
	pg_psql -q <<-'SQL' >"$IT_DIR/supabase-setup.log" 2>&1 || { _it_diag_file "$IT_DIR/supabase-setup.log"; t_bail "the Supabase-like set-up failed"; }
	SET client_min_messages = warning;
	CREATE ROLE postgres LOGIN NOSUPERUSER CREATEROLE CREATEDB REPLICATION BYPASSRLS;
	ALTER DATABASE outboxd OWNER TO postgres;
	CREATE ROLE anon NOLOGIN NOINHERIT;
	CREATE ROLE authenticated NOLOGIN NOINHERIT;
	CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
	CREATE ROLE authenticator LOGIN NOINHERIT;
	GRANT anon, authenticated, service_role TO authenticator;
	GRANT anon, authenticated, service_role TO postgres;
	CREATE ROLE supabase_auth_admin NOLOGIN NOINHERIT CREATEROLE;
	SQL
	pg_supabase_db outboxd
	DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/outboxd
	SUPA_AUTHENTICATOR_URL=postgresql://authenticator@127.0.0.1:$PG_PORT/outboxd
	export PG_ADMIN_URL DATABASE_URL SUPA_AUTHENTICATOR_URL
}

# pg_supabase_db DBNAME: a database owned by postgres, as pg_supabase
# sets up "outboxd" (auth with Supabase's functions, extensions); made
# when it does not exist
pg_supabase_db() {
	local db=$1
	if [ "$("$IT_PG_BINDIR/psql" -X -At -d "$PG_ADMIN_URL" -c "select count(*) from pg_database where datname = '$db'")" = 0 ]; then
		"$IT_PG_BINDIR/psql" -X -q -d "$PG_ADMIN_URL" -c "create database \"$db\" owner postgres" >/dev/null
	fi
	"$IT_PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d "${PG_ADMIN_URL%/*}/$db" <<-'SQL' >"$IT_DIR/supabase-db.log" 2>&1 || { _it_diag_file "$IT_DIR/supabase-db.log"; t_bail "the Supabase-like set-up of database $db failed"; }
	SET client_min_messages = warning;
	CREATE SCHEMA auth AUTHORIZATION supabase_auth_admin;
	GRANT USAGE ON SCHEMA auth TO postgres, anon, authenticated, service_role;
	SET ROLE supabase_auth_admin;
	CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
	  select coalesce(
	    nullif(current_setting('request.jwt.claim.sub', true), ''),
	    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
	  )::uuid
	$$;
	CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $$
	  select coalesce(
	    nullif(current_setting('request.jwt.claim.role', true), ''),
	    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
	  )::text
	$$;
	CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
	  select coalesce(
	    nullif(current_setting('request.jwt.claim', true), ''),
	    nullif(current_setting('request.jwt.claims', true), '')
	  )::jsonb
	$$;
	RESET ROLE;
	CREATE SCHEMA extensions;
	GRANT USAGE ON SCHEMA extensions TO postgres, anon, authenticated, service_role;
	CREATE EXTENSION pgcrypto WITH SCHEMA extensions;
	ALTER ROLE postgres SET search_path = "$user", public, extensions;
	SQL
}

# supa_api ROLE SUB SQL: SQL as the Data API (PostgREST) runs a request:
# logged in as authenticator, in one transaction, SET LOCAL ROLE ROLE and
# the request's JWT claims in request.jwt.claims (sub SUB, or none when
# SUB is empty). Prints SQL's result; fails with psql's error.
supa_api() {
	local role=$1 sub=$2 sql=$3 claims
	if [ -n "$sub" ]; then
		claims=$(printf '{"sub":"%s","role":"%s"}' "$sub" "$role")
	else
		claims=$(printf '{"role":"%s"}' "$role")
	fi
	"$IT_PG_BINDIR/psql" -X -At -q -v ON_ERROR_STOP=1 -d "$SUPA_AUTHENTICATOR_URL" <<-SQL
	BEGIN;
	SET LOCAL ROLE $role;
	SELECT set_config('request.jwt.claims', '$claims', true) \g /dev/null
	$sql;
	COMMIT;
	SQL
}
