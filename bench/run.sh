#!/bin/bash
# bench/run.sh - outboxd's benchmarks, side by side with rclone, s3cmd, the
# AWS CLI and curl, on the same local servers, as ratios from one run.
#
#   bash bench/run.sh [--rounds N] [--quick] [--only W1,W3,...] [--out DIR]
#                     [--no-profile] [--keep]
#
# Installs what is missing (Debian packages, the test servers' npm
# packages), builds outboxd out of tree in _build-bench, starts the local
# PostgreSQL 15 and s3rver 3.7.1 that the integration tests use (through
# tests/lib.sh), runs every workload for outboxd and each peer in turn,
# round after round (A B C A B C ...), and writes RESULTS.md, raw.tsv and
# results.png into DIR (default: bench/). See bench/README.md.
#
#   --rounds N    rounds of every workload (default 3)
#   --quick       1 round, small sizes: checks the machinery in ~2 minutes
#   --only LIST   only these workloads (W1..W7, comma separated)
#   --out DIR     where RESULTS.md, raw.tsv and results.png go
#   --no-profile  skip the perf profiles of outboxd (bench/profile-*.txt)
#   --keep        keep the work directory (it is printed)
#
# OUTBOXD_BENCH_TREE=DIR measures the outboxd built from another checkout
# (e.g. a git worktree of an older commit) with this benchmark.
set -euo pipefail
export LC_ALL=C

BENCH=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$BENCH/.." && pwd)
ROUNDS=3
QUICK=
ONLY=W1,W2,W3,W4,W5,W6,W7
OUT=$BENCH
PROFILE=1
KEEP=
while [ $# -gt 0 ]; do
	case $1 in
	--rounds) ROUNDS=$2; shift 2 ;;
	--rounds=*) ROUNDS=${1#*=}; shift ;;
	--quick) QUICK=1; shift ;;
	--only) ONLY=$2; shift 2 ;;
	--only=*) ONLY=${1#*=}; shift ;;
	--out) OUT=$2; shift 2 ;;
	--out=*) OUT=${1#*=}; shift ;;
	--no-profile) PROFILE=; shift ;;
	--keep) KEEP=1; shift ;;
	-h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench: unknown argument $1" >&2; exit 64 ;;
	esac
done
[ -n "$QUICK" ] && ROUNDS=1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
T_START=$EPOCHREALTIME

# ---------------------------------------------------------------- sizes
if [ -n "$QUICK" ]; then
	W1_N=200 W2_JOBS=5 W2_PER=200 W3_MIB=32 W3B_MIB=128 W4_N=40
	W5_JOBS=4 W5_PER=500 W6_N=1000
else
	W1_N=1000 W2_JOBS=20 W2_PER=500 W3_MIB=256 W3B_MIB=1024 W4_N=200
	W5_JOBS=50 W5_PER=1000 W6_N=5000
fi
SMALL=4096          # bytes per small file
W4_GAP_MS=50        # W4: one file every 50 ms

say() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
want() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# ---------------------------------------------------------------- set-up
say "installing what is missing (Debian packages, npm ci)"
bash "$TOP/tools/deps.sh" rclone s3cmd awscli gnuplot-nox nginx time \
	inotify-tools python3 linux-perf strace
if [ -n "${OUTBOXD_BENCH_TREE:-}" ]; then
	# Measure another checkout (an older commit, for before/after figures)
	# with this checkout's benchmark and harness.
	say "building outboxd from $OUTBOXD_BENCH_TREE"
	BUILD=$(bash "$OUTBOXD_BENCH_TREE/tools/build.sh" "$OUTBOXD_BENCH_TREE/_build-bench")
	COMMIT=$(git -C "$OUTBOXD_BENCH_TREE" rev-parse --short HEAD 2>/dev/null || echo unknown)
else
	say "building outboxd out of tree"
	BUILD=$(bash "$TOP/tools/build.sh" "$TOP/_build-bench")
	COMMIT=$(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo unknown)
fi
DIRTY=$(git -C "$TOP" status --porcelain --untracked-files=no -- . ':(exclude)bench' 2>/dev/null |
	awk '{print $2}' | paste -sd' ' -)
DIRTY_UNTRACKED=$(git -C "$TOP" status --porcelain -- base config agent store watchers schema Makefile.am configure.ac 2>/dev/null |
	awk '$1 == "??" {print $2}' | paste -sd' ' -)

abs_top_srcdir=$TOP
abs_top_builddir=$BUILD
# shellcheck source=../tests/lib.sh
. "$TOP/tests/lib.sh"
it_init bench
W=$IT_DIR
[ -z "$KEEP" ] || say "work directory: $W (kept)"
RAW=$W/raw.tsv
printf '#workload\ttarget\ttool\tround\tfiles\tbytes\twall_s\tuser_s\tsys_s\trss_kib\tok\textra\n' >"$RAW"
OUTBOXD=$BUILD/outboxd
OUTBOXCTL=$BUILD/outboxctl
# W1's floor: a bare libcurl client with outboxd's signer (bench/put-floor.c),
# built from this checkout, so an older OUTBOXD_BENCH_TREE is compared with
# the same floor.
FLOOR=$TOP/_build-bench/bench/put-floor
if [ "$BUILD" != "$TOP/_build-bench" ]; then
	bash "$TOP/tools/build.sh" "$TOP/_build-bench" >/dev/null
fi
make -s -C "$TOP/_build-bench" bench/put-floor >/dev/null ||
	{ say "bench/put-floor did not build: W1 has no floor row"; FLOOR=; }
BUCKET=outboxd-test
AK=S3RVER SK=S3RVER REGION=us-east-1
CLK_TCK=$(getconf CLK_TCK)
PY=/usr/bin/python3
MEASURE=("$PY" "$BENCH/measure.py")

say "starting PostgreSQL 15 and s3rver (tests/lib.sh)"
pg_start
s3_start
# Every tool talks to s3rver directly, not through the verifying proxy.
S3URL=$S3_UPSTREAM_URL
S3DATA=$S3_DATA_DIR/$BUCKET
unset S3_BUCKET AWS_ENDPOINT_URL_S3 AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
PGURL=$DATABASE_URL
unset DATABASE_URL
psql_() { "$IT_PG_BINDIR/psql" -X -At -v ON_ERROR_STOP=1 -d "$PGURL" "$@"; }

# The fast sink: nginx on loopback, PUT into tmpfs (WebDAV), canned
# replies for the multipart calls (POST ?uploads, POST ?uploadId).
SINK_ROOT=$(mktemp -d /dev/shm/outboxd-bench-sink.XXXXXX)
SINK_PORT=$(free_port)
mkdir -p "$W/nginx" "$SINK_ROOT/data" "$SINK_ROOT/tmp"
cat >"$W/nginx/nginx.conf" <<EOF
user root;
daemon off;
master_process on;
worker_processes 1;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log warn;
events { worker_connections 256; }
http {
	log_format bench '\$request_method \$status \$content_length \$http_x_amz_decoded_content_length';
	access_log $W/nginx/access.log bench;
	client_body_temp_path $SINK_ROOT/tmp;
	proxy_temp_path $W/nginx/proxy;
	fastcgi_temp_path $W/nginx/fastcgi;
	uwsgi_temp_path $W/nginx/uwsgi;
	scgi_temp_path $W/nginx/scgi;
	sendfile on;
	server {
		listen 127.0.0.1:$SINK_PORT;
		client_max_body_size 0;
		client_body_buffer_size 1m;
		location / {
			root $SINK_ROOT/data;
			if (\$args ~ "(^|&)uploads(=|&|\$)") {
				return 200 '<?xml version="1.0" encoding="UTF-8"?><InitiateMultipartUploadResult><Bucket>$BUCKET</Bucket><Key>k</Key><UploadId>sink</UploadId></InitiateMultipartUploadResult>';
			}
			if (\$request_method = POST) {
				return 200 '<?xml version="1.0" encoding="UTF-8"?><CompleteMultipartUploadResult><ETag>"nginxsinkmultipart"</ETag></CompleteMultipartUploadResult>';
			}
			dav_methods PUT DELETE;
			create_full_put_path on;
			# an ETag that is no MD5 (no 32 hex digits, no "-N"): clients
			# cannot check it, as with some S3-compatible stores
			add_header ETag '"nginxsink"' always;
		}
	}
}
EOF
_it_detach "$W/nginx/.pid" "$W/nginx/stdout.log" nginx -p "$W/nginx" -c "$W/nginx/nginx.conf"
it_track "$(cat "$W/nginx/.pid")"
SINKURL=http://127.0.0.1:$SINK_PORT
wait_for 10 curl -s --noproxy '*' -o /dev/null "$SINKURL/" || { cat "$W/nginx/error.log" >&2; t_bail "nginx did not start"; }
trap 'rm -rf "$SINK_ROOT"; _it_on_exit' EXIT

# ---------------------------------------------------------------- helpers
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", a - b }'; }
new_job() { cat /proc/sys/kernel/random/uuid; }

# gen_files DIR N SIZE: N XML files of SIZE bytes, f000001.xml ...
gen_files() {
	local dir=$1 n=$2 size=$3 i name pad head='<?xml version="1.0" encoding="UTF-8"?>
<bench n="' tail='">'
	mkdir -p "$dir"
	pad=$(head -c $((size - ${#head} - 6 - ${#tail} - 10)) /dev/zero | tr '\0' x)
	for ((i = 1; i <= n; i++)); do
		printf -v name 'f%06d.xml' "$i"
		printf '%s%06d%s%s</bench>\n' "$head" "$i" "$tail" "$pad" >"$dir/$name"
	done
}
# age DIR: every file's mtime 10 s in the past (a rescan journals them at
# once instead of letting them settle for a second)
age() { find "$1" -type f -exec touch -m -d "@$((EPOCHSECONDS - 10))" {} +; }

count_objects() { # PREFIX [DATADIR]: objects stored in s3rver under PREFIX
	local d=${2:-$S3DATA}/$1
	[ -d "$d" ] || { echo 0; return; }
	find "$d" -name '*._S3rver_object' | wc -l
}
drop_objects() { rm -rf "${2:-$S3DATA}/${1:?}"; }
object_size() { stat -c %s "$S3DATA/$1._S3rver_object" 2>/dev/null || echo 0; }

# st KEY [STATEDB]: a top-level number of `outboxctl status --json`
st() {
	local j
	j=$(OUTBOXD_STATE_DB=${2:-$STATEDB} "$OUTBOXCTL" status --json 2>/dev/null) || { echo -1; return; }
	sed -n "s/^	\"$1\":[[:space:]]*\([0-9-]*\).*/\1/p" <<<"$j"
}

# rec WORKLOAD TARGET TOOL ROUND FILES BYTES MEASUREFILE OK [EXTRA]
rec() {
	local wall user sys rss
	read -r wall user sys rss _ <"$7"
	rec_raw "$1" "$2" "$3" "$4" "$5" "$6" "$wall" "$user" "$sys" "$rss" "$8" "${9:-}"
}
# rec_raw WORKLOAD TARGET TOOL ROUND FILES BYTES WALL USER SYS RSS OK [EXTRA]
rec_raw() {
	local extra=${12:-}
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" \
		"$7" "$8" "$9" "${10}" "${11}" "$extra" >>"$RAW"
	say "$1 $2 $3 r$4: ${7}s wall, ${8}+${9}s CPU, ${10} KiB, ok=${11} $extra"
}
exit_of() { awk '{print $5}' "$1"; }

# ---------------------------------------------------------------- the tools
# Each runs under measure.py: run_TOOL MFILE LOG ... ; returns 0.

s3env=(AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK AWS_REGION=$REGION)

# outboxd --once on ROOT with a fresh outbox; LEGS: s3, db or s3+db
run_outboxd() { # MFILE LOG ROOT STATEDB ENDPOINT LEGS [VAR=VALUE...]
	local m=$1 log=$2 root=$3 db=$4 ep=$5 legs=$6 e=()
	shift 6
	case $legs in *s3*) e+=(S3_BUCKET=$BUCKET AWS_ENDPOINT_URL_S3=$ep "${s3env[@]}") ;; esac
	case $legs in *db*) e+=(DATABASE_URL=$PGURL) ;; esac
	env OUTBOXD_WATCH_DIR="$root" OUTBOXD_STATE_DB="$db" "${e[@]}" "$@" \
		"${MEASURE[@]}" "$m" -- "$OUTBOXD" --once >"$log" 2>&1
}

RCLONE_ENV=(RCLONE_CONFIG="$W/rclone.conf" RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other
	RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=$AK RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=$SK
	RCLONE_CONFIG_BENCH_REGION=$REGION RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true)
: >"$W/rclone.conf"
run_rclone() { # MFILE LOG SRC PREFIX ENDPOINT [FLAGS...]
	local m=$1 log=$2 src=$3 prefix=$4 ep=$5
	shift 5
	env -u AWS_CA_BUNDLE "${RCLONE_ENV[@]}" RCLONE_CONFIG_BENCH_ENDPOINT="$ep" \
		"${MEASURE[@]}" "$m" -- rclone copy "$src" "bench:$BUCKET/$prefix" "$@" >"$log" 2>&1
}

s3cmd_cfg() { # ENDPOINT -> config file path
	local hp=${1#http://} f=$W/s3cmd-${1//[^0-9]/}.cfg
	[ -f "$f" ] || cat >"$f" <<EOF
[default]
access_key = $AK
secret_key = $SK
host_base = $hp
host_bucket = $hp
use_https = False
signature_v2 = False
bucket_location = $REGION
EOF
	echo "$f"
}
run_s3cmd() { # MFILE LOG SRC PREFIX ENDPOINT
	local cfg
	cfg=$(s3cmd_cfg "$5")
	env -u AWS_CA_BUNDLE "${MEASURE[@]}" "$1" -- /usr/bin/s3cmd -c "$cfg" --no-progress \
		put --recursive "$3/" "s3://$BUCKET/$4/" >"$2" 2>&1
}

printf '[default]\nregion = %s\ns3 =\n    addressing_style = path\n' "$REGION" >"$W/aws.cfg"
: >"$W/aws.credentials"
run_aws() { # MFILE LOG SRC PREFIX ENDPOINT
	env -u AWS_CA_BUNDLE AWS_CONFIG_FILE="$W/aws.cfg" AWS_SHARED_CREDENTIALS_FILE="$W/aws.credentials" \
		AWS_EC2_METADATA_DISABLED=true "${s3env[@]}" \
		"${MEASURE[@]}" "$1" -- /usr/bin/aws --endpoint-url "$5" s3 cp --recursive \
		--only-show-errors "$3" "s3://$BUCKET/$4/" >"$2" 2>&1
}

CURL_SIGN=(--aws-sigv4 "aws:amz:$REGION:s3" --user "$AK:$SK" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")
run_curl_par() { # MFILE LOG SRC PREFIX ENDPOINT: every file of SRC, 16 at a time
	local m=$1 log=$2 src=$3 prefix=$4 ep=$5 cfg=$W/curl-$RANDOM.cfg f rel
	(cd "$src" && find . -type f -printf '%P\n') | while IFS= read -r rel; do
		printf 'url = "%s/%s/%s/%s"\nupload-file = "%s/%s"\noutput = "/dev/null"\n' \
			"$ep" "$BUCKET" "$prefix" "$rel" "$src" "$rel"
	done >"$cfg"
	"${MEASURE[@]}" "$m" -- curl --noproxy '*' -sS --fail --parallel --parallel-max 16 \
		"${CURL_SIGN[@]}" -K "$cfg" >"$log" 2>&1
	rm -f "$cfg"
}
run_put_floor() { # MFILE LOG SRC PREFIX ENDPOINT: bench/put-floor, 16 at a time
	AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK "${MEASURE[@]}" "$1" -- \
		"$FLOOR" "$5" "$BUCKET" "$4" "$3" 16 "$REGION" >"$2" 2>&1
}
run_curl_one() { # MFILE LOG FILE KEY ENDPOINT: one PUT
	"${MEASURE[@]}" "$1" -- curl --noproxy '*' -sS --fail -o /dev/null "${CURL_SIGN[@]}" \
		-T "$3" "$5/$BUCKET/$4" >"$2" 2>&1
}
# The floor for any client that must hash what it sends: the same PUT
# while `openssl dgst -sha256` hashes the same file, timed together (wall
# until both end, CPU of both; peak RSS the larger process's).
run_floor() { # MFILE LOG FILE KEY ENDPOINT
	"${MEASURE[@]}" "$1" -- bash -c 'f=$1 url=$2; shift 2
		curl --noproxy "*" -sS --fail -o /dev/null "$@" -T "$f" "$url" & c=$!
		openssl dgst -sha256 "$f" >/dev/null || { wait "$c"; exit 1; }
		wait "$c"' floor "$3" "$5/$BUCKET/$4" "${CURL_SIGN[@]}" >"$2" 2>&1
}

# ---------------------------------------------------------------- daemon helpers
DPID=
start_daemon() { # LOG VAR=VALUE...: outboxd in the background; DPID
	local log=$1
	shift
	: >"$log"
	env "$@" "$OUTBOXD" </dev/null >>"$log" 2>&1 &
	DPID=$!
	it_track "$DPID"
	wait_for 30 grep -q 'rescan (start-up)' "$log" || { tail "$log" >&2; return 1; }
}
stop_daemon() { local rc=0; it_stop "$DPID" TERM 60 || rc=$?; DPID=; return "$rc"; }
proc_cpu() { # PID: user and system seconds so far ("U S")
	sed 's/^.*) //' "/proc/$1/stat" | awk -v hz="$CLK_TCK" '{ printf "%.2f %.2f", $12 / hz, $13 / hz }'
}
proc_hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

# wait_idle STATEDB MIN_ENTRIES TIMEOUT: until entries >= MIN and nothing
# pending; polls outboxctl every 0.2 s; returns 1 on timeout
_idle() {
	local j
	j=$(OUTBOXD_STATE_DB=$1 "$OUTBOXCTL" status --json 2>/dev/null) || return 1
	[ "$(sed -n 's/^	"pending":[[:space:]]*\([0-9]*\).*/\1/p' <<<"$j")" = 0 ] &&
		[ "$(sed -n 's/^	"entries":[[:space:]]*\([0-9]*\).*/\1/p' <<<"$j")" -ge "$2" ]
}
wait_idle() {
	local end=$((EPOCHSECONDS + $3))
	while ! _idle "$1" "$2"; do
		[ "$EPOCHSECONDS" -lt "$end" ] || return 1
		sleep 0.2
	done
}
_entries_at_least() {
	[ "$(st entries "$1")" -ge "$2" ] 2>/dev/null
}

# ---------------------------------------------------------------- warm-up
say "warm-up: one tiny run of every tool (not recorded)"
OUTBOXD_STATE_DB=$W/migrate.db DATABASE_URL=$PGURL "$OUTBOXCTL" migrate >"$W/migrate.log" 2>&1 ||
	{ cat "$W/migrate.log" >&2; t_bail "outboxctl migrate failed"; }
wj=$(new_job)
gen_files "$W/warm/up/$wj" 20 "$SMALL"
age "$W/warm"
run_outboxd "$W/m" "$W/warm/outboxd.log" "$W/warm/up" "$W/warm/o.db" "$S3URL" s3+db
run_rclone "$W/m" "$W/warm/rclone.log" "$W/warm/up/$wj" "warm/rclone" "$S3URL"
run_s3cmd "$W/m" "$W/warm/s3cmd.log" "$W/warm/up/$wj" "warm/s3cmd" "$S3URL"
run_aws "$W/m" "$W/warm/aws.log" "$W/warm/up/$wj" "warm/aws" "$S3URL"
run_curl_par "$W/m" "$W/warm/curl.log" "$W/warm/up/$wj" "warm/curl" "$S3URL"
for t in rclone s3cmd aws curl; do
	n=$(count_objects "warm/$t")
	[ "$n" = 20 ] || { cat "$W/warm/$t.log" >&2; t_bail "warm-up: $t stored $n of 20 objects"; }
done
[ "$(count_objects "jobs/$wj")" = 20 ] || { cat "$W/warm/outboxd.log" >&2; t_bail "warm-up: outboxd did not store 20 objects"; }
drop_objects warm
drop_objects "jobs/$wj"
rm -rf "$W/warm"

# ---------------------------------------------------------------- W1
# 1,000 files x 4 KiB in one job, from files present to all stored.
W1_TOOLS=(outboxd outboxd-c8 outboxd+db rclone rclone-t16 s3cmd aws curl-p16)
[ -z "$FLOOR" ] || W1_TOOLS+=(put-floor)
w1_run() { # TOOL ROUND
	local tool=$1 r=$2 job d m ok=1 extra= n want
	job=$(new_job)
	d=$W/w1/$tool-$r
	gen_files "$d/up/$job" "$W1_N" "$SMALL"
	age "$d"
	m=$d/measure
	case $tool in
	outboxd) run_outboxd "$m" "$d/log" "$d/up" "$d/o.db" "$S3URL" s3 ;;
	outboxd-c8) run_outboxd "$m" "$d/log" "$d/up" "$d/o.db" "$S3URL" s3 OUTBOXD_CONCURRENCY=8 ;;
	outboxd+db) run_outboxd "$m" "$d/log" "$d/up" "$d/o.db" "$S3URL" s3+db ;;
	rclone) run_rclone "$m" "$d/log" "$d/up/$job" "jobs/$job/uploads" "$S3URL" ;;
	rclone-t16) run_rclone "$m" "$d/log" "$d/up/$job" "jobs/$job/uploads" "$S3URL" --transfers 16 ;;
	s3cmd) run_s3cmd "$m" "$d/log" "$d/up/$job" "jobs/$job/uploads" "$S3URL" ;;
	aws) run_aws "$m" "$d/log" "$d/up/$job" "jobs/$job/uploads" "$S3URL" ;;
	curl-p16) run_curl_par "$m" "$d/log" "$d/up/$job" "jobs/$job/uploads" "$S3URL" ;;
	put-floor) run_put_floor "$m" "$d/log" "$d/up/$job" "jobs/$job/uploads" "$S3URL" ;;
	esac
	[ "$(exit_of "$m")" = 0 ] || { ok=0; extra+="exit=$(exit_of "$m");"; }
	n=$(count_objects "jobs/$job")
	[ "$n" = "$W1_N" ] || { ok=0; extra+="stored=$n;"; }
	case $tool in
	outboxd*)
		[ "$(st failed "$d/o.db")" = 0 ] || { ok=0; extra+="failed=$(st failed "$d/o.db");"; }
		[ "$(st done "$d/o.db")" = "$W1_N" ] || { ok=0; extra+="done=$(st done "$d/o.db");"; }
		;;
	esac
	if [ "$tool" = outboxd+db ]; then
		want=$(psql_ -c "select count(*) from is_migration.documents where job_id = '$job'")
		[ "$want" = "$W1_N" ] || { ok=0; extra+="rows=$want;"; }
	fi
	[ $ok = 1 ] || { say "W1 $tool round $r not clean: $extra (log $d/log)"; tail -5 "$d/log" >&2; }
	rec W1 s3rver "$tool" "$r" "$W1_N" $((W1_N * SMALL)) "$m" "$ok" "$extra"
	drop_objects "jobs/$job"
	[ $ok = 1 ] && rm -rf "$d"
	sleep 0.5
}
if want W1; then
	say "W1: $W1_N files x $SMALL bytes in one job, $ROUNDS rounds of ${W1_TOOLS[*]}"
	for ((r = 1; r <= ROUNDS; r++)); do
		for t in "${W1_TOOLS[@]}"; do w1_run "$t" "$r"; done
	done
fi

# ---------------------------------------------------------------- W2
# A burst of 10,000 files into 20 jobs while outboxd runs (S3 + database).
w2_run() { # ROUND
	local r=$1 d=$W/w2/r$1 jobs=() j i t0 t1 t2 c0 c1 ok=1 extra= n rows total=$((W2_JOBS * W2_PER)) rc=0
	local jl
	mkdir -p "$d/up"
	STATEDB=$d/o.db
	start_daemon "$d/log" OUTBOXD_WATCH_DIR="$d/up" OUTBOXD_STATE_DB="$STATEDB" S3_BUCKET=$BUCKET \
		AWS_ENDPOINT_URL_S3="$S3URL" "${s3env[@]}" DATABASE_URL="$PGURL"
	for ((i = 0; i < W2_JOBS; i++)); do jobs+=("$(new_job)"); done
	c0=$(proc_cpu "$DPID")
	t0=$EPOCHREALTIME
	for j in "${jobs[@]}"; do gen_files "$d/up/$j" "$W2_PER" "$SMALL"; done
	t1=$EPOCHREALTIME
	wait_idle "$STATEDB" "$total" 600 || { ok=0; extra+="timeout;"; }
	t2=$EPOCHREALTIME
	c1=$(proc_cpu "$DPID")
	hwm=$(proc_hwm "$DPID")
	stop_daemon || rc=$?
	[ "$rc" = 0 ] || { ok=0; extra+="exit=$rc;"; }
	n=0
	for j in "${jobs[@]}"; do n=$((n + $(count_objects "jobs/$j"))); done
	jl=$(printf "'%s'," "${jobs[@]}")
	rows=$(psql_ -c "select count(*) from is_migration.documents where job_id in (${jl%,})")
	[ "$n" = "$total" ] || { ok=0; extra+="stored=$n;"; }
	[ "$rows" = "$total" ] || { ok=0; extra+="rows=$rows;"; }
	[ "$(st failed)" = 0 ] || { ok=0; extra+="failed=$(st failed);"; }
	extra+="write_s=$(fsub "$t1" "$t0");lost=$((total - n));lost_rows=$((total - rows));"
	grep -q -i overflow "$d/log" && extra+="overflow=1;"
	read -r u0 s0 <<<"$c0"
	read -r u1 s1 <<<"$c1"
	rec_raw W2 s3rver+pg outboxd "$r" "$total" $((total * SMALL)) "$(fsub "$t2" "$t0")" \
		"$(fsub "$u1" "$u0")" "$(fsub "$s1" "$s0")" "$hwm" "$ok" "$extra"
	for j in "${jobs[@]}"; do drop_objects "jobs/$j"; done
	[ $ok = 1 ] && rm -rf "$d"
	sleep 1
}
w2_curl() { # ROUND: the same 10,000 files with curl --parallel-max 16 (the ceiling)
	local r=$1 d=$W/w2/curl-$1 job m n total=$((W2_JOBS * W2_PER)) ok=1 extra= j i
	job=$(new_job)
	for ((i = 0; i < W2_JOBS; i++)); do gen_files "$d/up/$(new_job)" "$W2_PER" "$SMALL"; done
	m=$d/measure
	run_curl_par "$m" "$d/log" "$d/up" "w2curl/$job" "$S3URL"
	n=$(count_objects "w2curl/$job")
	[ "$(exit_of "$m")" = 0 ] || { ok=0; extra+="exit=$(exit_of "$m");"; }
	[ "$n" = "$total" ] || { ok=0; extra+="stored=$n;"; }
	rec W2 s3rver curl-p16 "$r" "$total" $((total * SMALL)) "$m" "$ok" "$extra"
	drop_objects "w2curl/$job"
	[ $ok = 1 ] && rm -rf "$d"
	sleep 1
}
if want W2; then
	say "W2: burst of $((W2_JOBS * W2_PER)) files into $W2_JOBS jobs while outboxd runs, $ROUNDS rounds"
	for ((r = 1; r <= ROUNDS; r++)); do
		w2_run "$r"
		w2_curl "$r"
	done
fi

# ---------------------------------------------------------------- W3
# One 256 MiB file; on s3rver, and on the fast sink (nginx -> tmpfs).
# Also one 1 GiB file to the sink (outboxd's peak RSS). outboxd-1put is
# outboxd with OUTBOXD_MULTIPART_THRESHOLD=5GiB: one PUT, like curl -T,
# streamed to the sink (aws-chunked, the SHA-256 in a trailer, hashed
# while sent: OUTBOXD_S3_STREAMING=always, as the sink is plain http;
# s3rver takes no aws-chunked trailer, so not there).
W3_TOOLS=(outboxd outboxd-1put rclone s3cmd aws curl)
sink_reset() { rm -rf "$SINK_ROOT/data/$BUCKET"; : >"$W/nginx/access.log"; }
# sink_bytes: bytes of the PUTs nginx stored (201/204) since sink_reset (an
# aws-chunked PUT's decoded length: nginx stores the framing too, S3 would not)
sink_bytes() { awk '$1 == "PUT" && ($2 == 201 || $2 == 204) { n += ($4 ~ /^[0-9]+$/ ? $4 : $3) } END { printf "%d", n }' "$W/nginx/access.log"; }
w3_run() { # TARGET TOOL ROUND MIB
	local target=$1 tool=$2 r=$3 mib=$4 d job m ok=1 extra= size ep key
	d=$W/w3/$target-$tool-$r
	job=$(new_job)
	mkdir -p "$d/up/$job"
	ln "$W/w3/big-$mib.bin" "$d/up/$job/big.bin"
	key=jobs/$job/uploads/big.bin
	m=$d/measure
	if [ "$target" = s3rver ]; then ep=$S3URL; else ep=$SINKURL; sink_reset; fi
	# s3rver refuses aws-chunked with a trailer: streaming to the sink only
	local stream=(OUTBOXD_S3_STREAMING=off)
	[ "$target" = s3rver ] || stream=(OUTBOXD_S3_STREAMING=always)
	case $tool in
	# The file is a hard link to one copy: allowed explicitly (outboxd
	# skips hard-linked files by default, issue 12).
	outboxd) run_outboxd "$m" "$d/log" "$d/up" "$d/o.db" "$ep" s3 OUTBOXD_HARDLINKS=allow ;;
	outboxd-1put) run_outboxd "$m" "$d/log" "$d/up" "$d/o.db" "$ep" s3 OUTBOXD_HARDLINKS=allow \
		OUTBOXD_MULTIPART_THRESHOLD=5GiB "${stream[@]}" ;;
	rclone) run_rclone "$m" "$d/log" "$d/up/$job" "jobs/$job/uploads" "$ep" ;;
	s3cmd) run_s3cmd "$m" "$d/log" "$d/up/$job" "jobs/$job/uploads" "$ep" ;;
	aws) run_aws "$m" "$d/log" "$d/up/$job" "jobs/$job/uploads" "$ep" ;;
	curl) run_curl_one "$m" "$d/log" "$d/up/$job/big.bin" "$key" "$ep" ;;
	floor) run_floor "$m" "$d/log" "$d/up/$job/big.bin" "$key" "$ep" ;;
	esac
	[ "$(exit_of "$m")" = 0 ] || { ok=0; extra+="exit=$(exit_of "$m");"; }
	if [ "$target" = s3rver ]; then
		size=$(object_size "$key")
	else
		size=$(sink_bytes)
		extra+="requests=$(awk '{print $1}' "$W/nginx/access.log" | sort | uniq -c | awk '{printf "%s%s:%s", (NR > 1 ? "," : ""), $2, $1}');"
	fi
	[ "$size" = $((mib * 1048576)) ] || { ok=0; extra+="stored_bytes=$size;"; }
	case $tool in outboxd*) [ "$(st failed "$d/o.db")" = 0 ] || { ok=0; extra+="failed;"; } ;; esac
	[ $ok = 1 ] || { say "W3 $target $tool round $r not clean: $extra"; tail -5 "$d/log" >&2; }
	rec W3 "$target" "$tool" "$r" 1 $((mib * 1048576)) "$m" "$ok" "$extra"
	drop_objects "jobs/$job"
	[ "$target" = s3rver ] || sink_reset
	[ $ok = 1 ] && rm -rf "$d"
	sleep 0.5
}
if want W3; then
	say "W3: one $W3_MIB MiB file (s3rver and the nginx sink), one $W3B_MIB MiB file (sink), $ROUNDS rounds"
	mkdir -p "$W/w3"
	head -c $((W3_MIB * 1048576)) /dev/urandom >"$W/w3/big-$W3_MIB.bin"
	head -c $((W3B_MIB * 1048576)) /dev/urandom >"$W/w3/big-$W3B_MIB.bin"
	touch -m -d "@$((EPOCHSECONDS - 10))" "$W/w3/"big-*.bin
	for ((r = 1; r <= ROUNDS; r++)); do
		for t in "${W3_TOOLS[@]}"; do w3_run s3rver "$t" "$r" "$W3_MIB"; done
		for t in outboxd outboxd-1put curl floor; do w3_run sink "$t" "$r" "$W3_MIB"; done
		for t in outboxd outboxd-1put curl floor; do w3_run sink-1g "$t" "$r" "$W3B_MIB"; done
	done
	rm -f "$W/w3/"big-*.bin
fi

# ---------------------------------------------------------------- W4
# Latency: 200 files of 4 KiB, one every 50 ms, while outboxd runs with
# the default settle window (S3 + database).
w4_run() { # ROUND
	local r=$1 d=$W/w4/r$1 job i name next now ok=1 extra= c0 c1 hwm n rows rc=0 t0 t1
	job=$(new_job)
	mkdir -p "$d/up/$job"
	STATEDB=$d/o.db
	start_daemon "$d/log" OUTBOXD_WATCH_DIR="$d/up" OUTBOXD_STATE_DB="$STATEDB" S3_BUCKET=$BUCKET \
		AWS_ENDPOINT_URL_S3="$S3URL" "${s3env[@]}" DATABASE_URL="$PGURL"
	local pad
	pad=$(head -c $((SMALL - 64)) /dev/zero | tr '\0' y)
	c0=$(proc_cpu "$DPID")
	t0=$EPOCHREALTIME
	next=${EPOCHREALTIME/./}
	: >"$d/closed.tsv"
	for ((i = 1; i <= W4_N; i++)); do
		printf -v name 'f%06d.xml' "$i"
		printf '<?xml version="1.0"?>\n<w4 n="%06d">%s</w4>\n' "$i" "$pad" >"$d/up/$job/$name"
		printf '%s\t%s\n' "$name" "$EPOCHREALTIME" >>"$d/closed.tsv"
		next=$((next + W4_GAP_MS * 1000))
		now=${EPOCHREALTIME/./}
		if [ "$next" -gt "$now" ]; then
			sleep "$(awk -v u=$((next - now)) 'BEGIN { printf "%.6f", u / 1e6 }')"
		fi
	done
	wait_idle "$STATEDB" "$W4_N" 120 || { ok=0; extra+="timeout;"; }
	t1=$EPOCHREALTIME
	c1=$(proc_cpu "$DPID")
	hwm=$(proc_hwm "$DPID")
	stop_daemon || rc=$?
	[ "$rc" = 0 ] || { ok=0; extra+="exit=$rc;"; }
	n=$(count_objects "jobs/$job")
	[ "$n" = "$W4_N" ] || { ok=0; extra+="stored=$n;"; }
	# stored: the mtime of s3rver's metadata file, written after the
	# object's bytes, just before s3rver answers the PUT
	(cd "$S3DATA/jobs/$job/uploads" && for f in *._S3rver_metadata.json; do
		printf '%s\t%s\n' "${f%._S3rver_metadata.json}" "$(stat -c %.6Y "$f")"
	done) | sort >"$d/stored.tsv"
	psql_ -F $'\t' -c "select file_path, to_char(extract(epoch from created_at), 'FM9999999999.000000') from is_migration.documents where job_id = '$job' order by 1" >"$d/rows.tsv"
	rows=$(wc -l <"$d/rows.tsv")
	[ "$rows" = "$W4_N" ] || { ok=0; extra+="rows=$rows;"; }
	extra+=$(sort "$d/closed.tsv" | "$PY" "$BENCH/latency.py" /dev/stdin "$d/stored.tsv" "$d/rows.tsv")
	read -r u0 s0 <<<"$c0"
	read -r u1 s1 <<<"$c1"
	rec_raw W4 s3rver+pg outboxd "$r" "$W4_N" $((W4_N * SMALL)) "$(fsub "$t1" "$t0")" \
		"$(fsub "$u1" "$u0")" "$(fsub "$s1" "$s0")" "$hwm" "$ok" "$extra"
	drop_objects "jobs/$job"
	[ $ok = 1 ] && rm -rf "$d"
	sleep 0.5
}
if want W4; then
	say "W4: latency, $W4_N files one every $W4_GAP_MS ms, $ROUNDS rounds"
	for ((r = 1; r <= ROUNDS; r++)); do w4_run "$r"; done
fi

# ---------------------------------------------------------------- W5
# Backlog: 50,000 files journaled while S3 is unreachable, then the drain.
# S3 is "down" as a port nothing listens on; "up" is a second s3rver
# started on that port (its own data directory).
w5_run() { # ROUND
	local r=$1 d=$W/w5/r$1 port jobs=() j i t0 t1 t2 t3 ok=1 extra= c0 c1 c2 hwm hwm1 n rc=0 spid
	local total=$((W5_JOBS * W5_PER)) data
	mkdir -p "$d/up"
	data=$d/s3data
	port=$(free_port)
	STATEDB=$d/o.db
	start_daemon "$d/log" OUTBOXD_WATCH_DIR="$d/up" OUTBOXD_STATE_DB="$STATEDB" S3_BUCKET=$BUCKET \
		AWS_ENDPOINT_URL_S3="http://127.0.0.1:$port" "${s3env[@]}" \
		OUTBOXD_RETRY_BASE_MS=100 OUTBOXD_RETRY_MAX_S=1
	for ((i = 0; i < W5_JOBS; i++)); do jobs+=("$(new_job)"); done
	c0=$(proc_cpu "$DPID")
	t0=$EPOCHREALTIME
	for j in "${jobs[@]}"; do gen_files "$d/up/$j" "$W5_PER" "$SMALL"; done
	wait_for 600 _entries_at_least "$STATEDB" "$total" || { ok=0; extra+="journal_timeout;"; }
	t1=$EPOCHREALTIME
	c1=$(proc_cpu "$DPID")
	hwm1=$(proc_hwm "$DPID")
	[ "$(st pending)" = "$total" ] || extra+="pending_before=$(st pending);"
	# S3 comes back
	mkdir -p "$data"
	rm -f "$d/.s3rver.pid"
	_it_detach "$d/.s3rver.pid" "$d/s3rver.log" node --openssl-legacy-provider \
		"$NODE_MODULES/s3rver/bin/s3rver.js" --directory "$data" --address 127.0.0.1 \
		--port "$port" --silent --no-vhost-buckets --configure-bucket "$BUCKET"
	spid=$(cat "$d/.s3rver.pid")
	it_track "$spid"
	wait_for 30 curl -sf --noproxy '*' -o /dev/null "http://127.0.0.1:$port/" || { ok=0; extra+="s3rver2_start;"; }
	t2=$EPOCHREALTIME
	wait_idle "$STATEDB" "$total" 1200 || { ok=0; extra+="drain_timeout;"; }
	t3=$EPOCHREALTIME
	c2=$(proc_cpu "$DPID")
	hwm=$(proc_hwm "$DPID")
	[ "$r" != "$ROUNDS" ] || memory_map "$DPID" "W5 round $r: after the drain of $total files" >"$OUT/profile-w5-memory.txt"
	stop_daemon || rc=$?
	[ "$rc" = 0 ] || { ok=0; extra+="exit=$rc;"; }
	n=0
	for j in "${jobs[@]}"; do n=$((n + $(count_objects "jobs/$j" "$data/$BUCKET"))); done
	[ "$n" = "$total" ] || { ok=0; extra+="stored=$n;"; }
	[ "$(st failed)" = 0 ] || { ok=0; extra+="failed=$(st failed);"; }
	it_stop "$spid" TERM 10 || true
	read -r u0 s0 <<<"$c0"
	read -r u1 s1 <<<"$c1"
	read -r u2 s2 <<<"$c2"
	extra+="journal_s=$(fsub "$t1" "$t0");journal_cpu_s=$(awk -v a="$u1" -v b="$s1" -v c="$u0" -v d="$s0" 'BEGIN { printf "%.2f", a + b - c - d }');rss_journaled_kib=$hwm1;lost=$((total - n));"
	grep -q -i overflow "$d/log" && extra+="overflow=1;"
	rec_raw W5 s3rver outboxd "$r" "$total" $((total * SMALL)) "$(fsub "$t3" "$t2")" \
		"$(fsub "$u2" "$u1")" "$(fsub "$s2" "$s1")" "$hwm" "$ok" "$extra"
	[ $ok = 1 ] && rm -rf "$d"
	sleep 1
}
# memory_map PID TITLE: where a process's resident memory is
memory_map() {
	echo "# outboxd's memory, $2 (commit $COMMIT${DIRTY:+, dirty tree})"
	grep -E '^(VmPeak|VmHWM|VmRSS|RssAnon|RssFile|RssShmem|Threads)' "/proc/$1/status"
	echo
	echo "# the largest mappings by Rss (KiB): /proc/PID/smaps"
	awk '/^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "" ? "[anon]" : $6); range = $1 }
		/^Rss:/ { if ($2 > 0) printf "%8d  %s  %s\n", $2, range, name }' "/proc/$1/smaps" | sort -rn | head -25
	echo
	echo "# Rss by file (KiB)"
	awk '/^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "" ? "[anon]" : $6) }
		/^Rss:/ { rss[name] += $2 } END { for (n in rss) if (rss[n] > 0) printf "%8d  %s\n", rss[n], n }' "/proc/$1/smaps" | sort -rn | head -25
}
if want W5; then
	say "W5: backlog of $((W5_JOBS * W5_PER)) files while S3 is down, then the drain; $ROUNDS rounds"
	for ((r = 1; r <= ROUNDS; r++)); do w5_run "$r"; done
fi

# ---------------------------------------------------------------- W6
# Database only: files recorded per second into PostgreSQL, with
# PostgreSQL durable (fsync, synchronous_commit, full_page_writes on) and
# as the tests run it (all three off).
pg_mode() { # durable | harness
	if [ "$1" = durable ]; then
		psql_ -c "alter system set fsync = on" -c "alter system set synchronous_commit = on" \
			-c "alter system set full_page_writes = on" -c "select pg_reload_conf()" >/dev/null
	else
		psql_ -c "alter system reset fsync" -c "alter system reset synchronous_commit" \
			-c "alter system reset full_page_writes" -c "select pg_reload_conf()" >/dev/null
	fi
	sleep 0.5
	say "PostgreSQL now: fsync=$(psql_ -c 'show fsync') synchronous_commit=$(psql_ -c 'show synchronous_commit')"
}
# commits in the database and WAL flushes (pg_stat_wal.wal_sync) so far
pg_counters() {
	psql_ -F ' ' -c "select (select xact_commit from pg_stat_database where datname = current_database()), (select wal_sync from pg_stat_wal)"
}
# the JSON log's time of the first line whose msg starts with PREFIX, in s
log_time() {
	"$PY" -c '
import json, sys, datetime
for line in open(sys.argv[1]):
    try: r = json.loads(line)
    except ValueError: continue
    if r.get("msg", "").startswith(sys.argv[2]):
        t = datetime.datetime.fromisoformat(r["time"].replace("Z", "+00:00"))
        print("%.3f" % t.timestamp()); break' "$1" "$2"
}
w6_run() { # MODE ROUND
	local mode=$1 r=$2 d=$W/w6/$1-$2 jobs=() j i m ok=1 extra= rows tj td jl per=$((W6_N / 10))
	for ((i = 0; i < 10; i++)); do jobs+=("$(new_job)"); done
	for j in "${jobs[@]}"; do gen_files "$d/up/$j" "$per" "$SMALL"; done
	age "$d"
	m=$d/measure
	pg_counters >"$d/pg0"
	run_outboxd "$m" "$d/log" "$d/up" "$d/o.db" - db OUTBOXD_LOG_FORMAT=json
	sleep 1
	pg_counters >"$d/pg1"
	extra+=$(paste "$d/pg0" "$d/pg1" | awk '{ printf "pg_commits=%d;wal_syncs=%d;", $3 - $1, $4 - $2 }')
	[ "$(exit_of "$m")" = 0 ] || { ok=0; extra+="exit=$(exit_of "$m");"; }
	jl=$(printf "'%s'," "${jobs[@]}")
	rows=$(psql_ -c "select count(*) from is_migration.documents where job_id in (${jl%,})")
	[ "$rows" = "$W6_N" ] || { ok=0; extra+="rows=$rows;"; }
	[ "$(st failed "$d/o.db")" = 0 ] || { ok=0; extra+="failed;"; }
	tj=$(log_time "$d/log" "journaled ")
	td=$(log_time "$d/log" "done: ")
	if [ -n "$tj" ] && [ -n "$td" ]; then
		extra+="sync_s=$(fsub "$td" "$tj");"
	else
		ok=0
		extra+="no_log_times;"
	fi
	[ $ok = 1 ] || { say "W6 $mode round $r not clean: $extra"; tail -5 "$d/log" >&2; }
	rec W6 "pg-$mode" outboxd "$r" "$W6_N" $((W6_N * SMALL)) "$m" "$ok" "$extra"
	[ $ok = 1 ] && rm -rf "$d"
	sleep 0.5
}
if want W6; then
	say "W6: $W6_N files into PostgreSQL only, durable and harness settings, $ROUNDS rounds"
	for ((r = 1; r <= ROUNDS; r++)); do
		pg_mode durable
		w6_run durable "$r"
		pg_mode harness
		w6_run harness "$r"
	done
fi

# ---------------------------------------------------------------- W7
# Production-like S3: HTTPS with real round trips (bench/w7.sh).
# shellcheck source=w7.sh
. "$BENCH/w7.sh"

# ---------------------------------------------------------------- profiles
if [ -n "$PROFILE" ] && command -v perf >/dev/null 2>&1; then
	say "profiles: perf record of outboxd --once (W1 S3 + database, W6 durable, W3 sink) and of the daemon (W2)"
	perf_summary() { # PERF.DATA: top symbols, then by library
		echo "# perf record -F 2000 (cpu-clock); perf report --no-children --sort dso,sym; entries >= 0.7%"
		perf report -i "$1" --stdio --no-children --sort dso,sym -g none --percent-limit 0.7 2>/dev/null |
			grep -v -e '^$' -e '^# *$' -e '^# To display' -e '^# (Tip' -e '^# Total Lost' | head -60
		echo
		echo "# by library (dso)"
		perf report -i "$1" --stdio --no-children --sort dso -g none 2>/dev/null |
			grep -v '^#' | grep -v '^$' | head -20
	}
	# The daemon (S3 + database) during a burst: perf, then strace -c.
	prof_daemon() { # FILES
		local d=$W/prof/daemon n=$1 i j tool pp c0 c1 t0 t1
		for tool in perf strace; do
			rm -rf "$d"
			mkdir -p "$d/up"
			STATEDB=$d/o.db
			start_daemon "$d/log" OUTBOXD_WATCH_DIR="$d/up" OUTBOXD_STATE_DB="$STATEDB" S3_BUCKET=$BUCKET \
				AWS_ENDPOINT_URL_S3="$S3URL" "${s3env[@]}" DATABASE_URL="$PGURL"
			if [ $tool = perf ]; then
				perf record -q -F 499 --call-graph dwarf,16384 -p "$DPID" -o "$d/perf.data" >"$d/perf.log" 2>&1 &
			else
				strace -c -f -p "$DPID" -o "$d/strace.txt" >"$d/strace.log" 2>&1 &
			fi
			pp=$!
			sleep 1
			c0=$(proc_cpu "$DPID")
			t0=$EPOCHREALTIME
			for ((i = 0; i < 4; i++)); do
				j=$(new_job)
				gen_files "$d/up/$j" $((n / 4)) "$SMALL"
			done
			wait_idle "$STATEDB" "$n" 300 || say "profile: the daemon did not drain"
			t1=$EPOCHREALTIME
			c1=$(proc_cpu "$DPID")
			kill -INT "$pp" 2>/dev/null || true
			wait "$pp" || true
			stop_daemon || true
			if [ $tool = perf ]; then
				{
					echo "# perf profile of the outboxd daemon (S3 + database) during a burst of $n files of 4 KiB"
					echo "# in 4 jobs (commit $COMMIT${DIRTY:+, dirty tree}); with perf attached: $(fsub "$t1" "$t0") s to drain,"
					echo "# outboxd CPU $(awk -v a="$c0" -v b="$c1" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "user %.2f s, sys %.2f s", y[1] - x[1], y[2] - x[2] }')"
					perf_summary "$d/perf.data"
					echo
					echo "# outboxd's own functions with what they call (perf record --call-graph dwarf; perf report --children),"
					echo "# entries >= 2%: where the time above is spent, by caller"
					perf report -i "$d/perf.data" --stdio --children --sort dso,sym -g none --percent-limit 2 2>/dev/null |
						grep -E '^ +[0-9.]+% +[0-9.]+% +outboxd ' | head -40
				} >"$OUT/profile-w2-daemon.txt"
			else
				{
					echo
					echo "# strace -c -f of the same daemon during another burst of $n files (syscalls per file = calls / $n)"
					grep -v '^$' "$d/strace.txt"
				} >>"$OUT/profile-w2-daemon.txt"
			fi
		done
		rm -rf "$d"
	}
	prof() { # NAME LEGS ENDPOINT SETUP...
		local name=$1 legs=$2 ep=$3 d=$W/prof/$1 job
		shift 3
		job=$(new_job)
		mkdir -p "$d/up/$job"
		"$@" "$d/up/$job"
		age "$d/up"
		local e=()
		case $legs in *s3*) e+=(S3_BUCKET=$BUCKET AWS_ENDPOINT_URL_S3=$ep "${s3env[@]}") ;; esac
		case $legs in *db*) e+=(DATABASE_URL=$PGURL) ;; esac
		env OUTBOXD_WATCH_DIR="$d/up" OUTBOXD_STATE_DB="$d/o.db" "${e[@]}" \
			perf record -q -F 2000 -o "$d/perf.data" -- "$OUTBOXD" --once >"$d/log" 2>&1 || true
		{
			echo "# perf profile of outboxd --once: $name (commit $COMMIT${DIRTY:+, dirty tree})"
			perf_summary "$d/perf.data"
		} >"$OUT/profile-$name.txt"
		drop_objects "jobs/$job"
		sink_reset
	}
	w1_files() { gen_files "$1" "$W1_N" "$SMALL"; }
	w6_files() { gen_files "$1" "$W6_N" "$SMALL"; }
	w3_file() { head -c $((W3_MIB * 1048576)) /dev/urandom >"$1/big.bin"; }
	prof w1-s3-db s3+db "$S3URL" w1_files
	pg_mode durable
	prof w6-db-durable db - w6_files
	pg_mode harness
	prof w3-sink s3 "$SINKURL" w3_file
	prof_daemon "$([ -n "$QUICK" ] && echo 400 || echo 2000)"
	rm -rf "$W/prof"
fi

# ---------------------------------------------------------------- report
T_END=$EPOCHREALTIME
{
	echo "#meta	date	$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "#meta	commit	$COMMIT"
	echo "#meta	dirty	${DIRTY:-no}"
	echo "#meta	untracked	${DIRTY_UNTRACKED:-none}"
	echo "#meta	rounds	$ROUNDS"
	echo "#meta	quick	${QUICK:-0}"
	echo "#meta	duration_s	$(fsub "$T_END" "$T_START")"
	echo "#meta	cpu	$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores"
	echo "#meta	memory	$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
	echo "#meta	os	$(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
	echo "#meta	disk	$(df -T "$W" | awk 'NR == 2 { print $2 }') (work dir), tmpfs (nginx sink)"
	echo "#meta	outboxd	$("$OUTBOXD" --version 2>&1 | head -1)"
	echo "#meta	rclone	$(rclone version 2>/dev/null | head -1)"
	echo "#meta	s3cmd	$(/usr/bin/s3cmd --version 2>&1 | head -1)"
	echo "#meta	aws	$(env -u AWS_CA_BUNDLE /usr/bin/aws --version 2>&1 | head -1)"
	echo "#meta	curl	$(curl --version | head -1 | cut -d' ' -f1-3)"
	echo "#meta	nginx	$(nginx -v 2>&1 | sed 's/^nginx version: //')"
	echo "#meta	s3rver	$(node -p "require('$NODE_MODULES/s3rver/package.json').version") on node $(node --version)"
	echo "#meta	postgresql	$("$IT_PG_BINDIR/postgres" --version | sed 's/^postgres //')"
	echo "#meta	gnuplot	$(gnuplot --version)"
	echo "#meta	sizes	W1=$W1_N W2=${W2_JOBS}x$W2_PER W3=${W3_MIB}MiB W3b=${W3B_MIB}MiB W4=$W4_N W5=${W5_JOBS}x$W5_PER W6=$W6_N small=$SMALL"
	cat "$RAW"
} >"$OUT/raw.tsv"
say "writing $OUT/RESULTS.md and $OUT/results.png"
"$PY" "$BENCH/report.py" "$OUT/raw.tsv" "$OUT" "$BENCH/notes.md" "$BENCH/w8.md"
say "done in $(fsub "$EPOCHREALTIME" "$T_START") s: $OUT/RESULTS.md"
_it_done=1
if [ -n "$KEEP" ]; then
	say "keeping $W"
	IT_DIR=     # lib.sh's exit trap removes only a set IT_DIR
fi
exit 0
