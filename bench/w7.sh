# bench/w7.sh - W7, production-like S3: HTTPS with real round trips.
# Sourced by bench/run.sh (its helpers, tools and s3rver are in scope).
#
#   client ──TLS──> delay.js (+RTT/2 each way) ──> nginx (TLS, session
#   cache, logs each request's connection) ──HTTP keep-alive──> s3rver
#
# A self-signed CA signs the server's certificate for 127.0.0.1; every
# tool gets it (AWS_CA_BUNDLE, rclone --ca-cert, s3cmd ca_certs_file).
# Per round trip time (W7_RTTS, ms), every tool uploads a backlog of
# W7_N files of 4 KiB (s3cmd, one request at a time, W7_N_S3CMD of them)
# and one W7_MIB MiB file, at its defaults and at concurrency 16; curl
# gives the ceiling (--parallel-max 16 for the backlog, one PUT). TLS
# handshakes are the TCP connections delay.js accepted (each makes one);
# nginx's log tells how many resumed a session and how many requests came.

# (W7_RTTS, W7_N, W7_N_S3CMD, W7_MIB and W7_TOOLS may be set to try one.)
if [ -n "$QUICK" ]; then
	: "${W7_RTTS:=20}" "${W7_N:=300}" "${W7_N_S3CMD:=100}" "${W7_MIB:=16}"
else
	: "${W7_RTTS:=20 60}" "${W7_N:=5000}" "${W7_N_S3CMD:=500}" "${W7_MIB:=256}"
fi
read -r -a W7_TOOLS <<<"${W7_TOOLS:-outboxd rclone rclone-t16 aws aws-c16 s3cmd curl-p16 curl}"
W7_ROUNDS=${W7_ROUNDS:-1}	# W7 is long: one round unless asked
[ "$W7_ROUNDS" -le "$ROUNDS" ] || W7_ROUNDS=$ROUNDS

w7_setup() {
	local d=$W/w7 s3port=${S3URL##*:}
	mkdir -p "$d/tls" "$d/nginx"
	# The CA and the server's certificate (IP SAN 127.0.0.1, localhost).
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=outboxd bench CA" \
		-keyout "$d/tls/ca.key" -out "$d/tls/ca.pem" 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
		-keyout "$d/tls/server.key" -out "$d/tls/server.csr" 2>/dev/null
	printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$d/tls/ext.cnf"
	openssl x509 -req -in "$d/tls/server.csr" -CA "$d/tls/ca.pem" -CAkey "$d/tls/ca.key" \
		-CAcreateserial -days 2 -extfile "$d/tls/ext.cnf" -out "$d/tls/server.pem" 2>/dev/null
	W7_CA=$d/tls/ca.pem
	W7_TLS_PORT=$(free_port)
	cat >"$d/nginx/nginx.conf" <<EOF
user root;
daemon off;
master_process on;
worker_processes 1;
pid $d/nginx/nginx.pid;
error_log $d/nginx/error.log warn;
events { worker_connections 1024; }
http {
	log_format w7 '\$connection \$ssl_session_reused \$request_method \$status';
	access_log $d/nginx/access.log w7;
	client_body_temp_path $d/nginx/body;
	proxy_temp_path $d/nginx/proxy;
	fastcgi_temp_path $d/nginx/fastcgi;
	uwsgi_temp_path $d/nginx/uwsgi;
	scgi_temp_path $d/nginx/scgi;
	upstream s3rver { server 127.0.0.1:$s3port; keepalive 64; keepalive_timeout 4s; }
	server {
		listen 127.0.0.1:$W7_TLS_PORT ssl;
		ssl_certificate $d/tls/server.pem;
		ssl_certificate_key $d/tls/server.key;
		ssl_session_cache shared:w7:4m;
		ssl_session_timeout 1h;
		keepalive_timeout 120s;
		keepalive_requests 100000;
		client_max_body_size 0;
		location / {
			proxy_pass http://s3rver;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host \$http_host;
			proxy_request_buffering off;
			proxy_buffering off;
			proxy_read_timeout 300s;
		}
	}
}
EOF
	_it_detach "$d/nginx/.pid" "$d/nginx/stdout.log" nginx -p "$d/nginx" -c "$d/nginx/nginx.conf"
	it_track "$(cat "$d/nginx/.pid")"
	wait_for 10 curl -s --noproxy '*' --cacert "$W7_CA" -o /dev/null "https://127.0.0.1:$W7_TLS_PORT/" ||
		{ cat "$d/nginx/error.log" >&2; t_bail "W7: nginx (TLS) did not start"; }
}

W7_DPID=
w7_delay_start() { # RTT_MS: delay.js in front of nginx; W7_URL
	local d=$W/w7
	W7_DPORT=$(free_port)
	: >"$d/conns.log"
	_it_detach "$d/.delay.pid" "$d/delay.log" node "$BENCH/delay.js" --listen "$W7_DPORT" \
		--upstream "$W7_TLS_PORT" --rtt-ms "$1" --log "$d/conns.log"
	W7_DPID=$(cat "$d/.delay.pid")
	it_track "$W7_DPID"
	W7_URL=https://127.0.0.1:$W7_DPORT
	wait_for 10 curl -s --noproxy '*' --cacert "$W7_CA" -o /dev/null "$W7_URL/" ||
		t_bail "W7: delay.js did not start"
}
w7_delay_stop() { it_stop "$W7_DPID" TERM 10 || true; W7_DPID=; }
w7_reset_counts() { : >"$W/w7/conns.log"; : >"$W/w7/nginx/access.log"; }
# "handshakes=N;resumed=N;requests=N;" since w7_reset_counts
w7_counts() {
	local conns
	conns=$(wc -l <"$W/w7/conns.log")
	awk -v c="$conns" '{ n++; if (!($1 in seen)) { seen[$1] = 1; if ($2 == "r") r++ } }
		END { printf "handshakes=%d;resumed=%d;requests=%d;", c, r, n }' "$W/w7/nginx/access.log"
}

# The peers over TLS: as run_rclone, run_s3cmd and run_aws, with the CA.
w7_rclone() { # MFILE LOG SRC PREFIX [FLAGS...]
	local m=$1 log=$2 src=$3 prefix=$4
	shift 4
	env -u AWS_CA_BUNDLE "${RCLONE_ENV[@]}" RCLONE_CONFIG_BENCH_ENDPOINT="$W7_URL" \
		"${MEASURE[@]}" "$m" -- rclone copy --ca-cert "$W7_CA" "$src" "bench:$BUCKET/$prefix" "$@" >"$log" 2>&1
}
w7_s3cmd() { # MFILE LOG SRC PREFIX
	local f=$W/w7/s3cmd-$W7_DPORT.cfg
	[ -f "$f" ] || cat >"$f" <<EOF
[default]
access_key = $AK
secret_key = $SK
host_base = 127.0.0.1:$W7_DPORT
host_bucket = 127.0.0.1:$W7_DPORT
use_https = True
ca_certs_file = $W7_CA
check_ssl_certificate = True
signature_v2 = False
bucket_location = $REGION
EOF
	env -u AWS_CA_BUNDLE "${MEASURE[@]}" "$1" -- /usr/bin/s3cmd -c "$f" --no-progress \
		put --recursive "$3/" "s3://$BUCKET/$4/" >"$2" 2>&1
}
printf '[default]\nregion = %s\ns3 =\n    addressing_style = path\n    max_concurrent_requests = 16\n' \
	"$REGION" >"$W/aws-c16.cfg"
w7_aws() { # MFILE LOG SRC PREFIX CONFIG
	env AWS_CA_BUNDLE="$W7_CA" AWS_CONFIG_FILE="$5" AWS_SHARED_CREDENTIALS_FILE="$W/aws.credentials" \
		AWS_EC2_METADATA_DISABLED=true "${s3env[@]}" \
		"${MEASURE[@]}" "$1" -- /usr/bin/aws --endpoint-url "$W7_URL" s3 cp --recursive \
		--only-show-errors "$3" "s3://$BUCKET/$4/" >"$2" 2>&1
}

w7_run() { # RTT KIND(backlog|big) TOOL ROUND
	local rtt=$1 kind=$2 tool=$3 r=$4 d job m ok=1 extra= n want bytes
	job=$(new_job)
	d=$W/w7/run-$rtt-$kind-$tool-$r
	mkdir -p "$d/up/$job"
	if [ "$kind" = backlog ]; then
		want=$W7_N
		[ "$tool" = s3cmd ] && want=$W7_N_S3CMD
		cp "$W/w7/files/"f*.xml "$d/up/$job/"
		# s3cmd sends one request at a time: a tenth of the files keeps
		# its run bounded; its rates are per file all the same.
		[ "$want" = "$W7_N" ] || find "$d/up/$job" -name 'f*.xml' | sort | tail -n +$((want + 1)) | xargs rm -f
		bytes=$((want * SMALL))
	else
		want=1
		ln "$W/w7/big.bin" "$d/up/$job/big.bin"
		bytes=$((W7_MIB * 1048576))
	fi
	age "$d/up"
	m=$d/measure
	w7_reset_counts
	case $tool in
	# (the large file is a hard link: allowed, as in W3; s3rver behind nginx
	# takes no aws-chunked trailer, so OUTBOXD_S3_STREAMING=off)
	outboxd) run_outboxd "$m" "$d/log" "$d/up" "$d/o.db" "$W7_URL" s3 AWS_CA_BUNDLE="$W7_CA" \
		OUTBOXD_HARDLINKS=allow OUTBOXD_S3_STREAMING=off ;;
	outboxd-c16) run_outboxd "$m" "$d/log" "$d/up" "$d/o.db" "$W7_URL" s3 AWS_CA_BUNDLE="$W7_CA" \
		OUTBOXD_HARDLINKS=allow OUTBOXD_S3_STREAMING=off OUTBOXD_CONCURRENCY=16 ;;
	rclone) w7_rclone "$m" "$d/log" "$d/up/$job" "jobs/$job/uploads" ;;
	rclone-t16) w7_rclone "$m" "$d/log" "$d/up/$job" "jobs/$job/uploads" --transfers 16 ;;
	aws) w7_aws "$m" "$d/log" "$d/up/$job" "jobs/$job/uploads" "$W/aws.cfg" ;;
	aws-c16) w7_aws "$m" "$d/log" "$d/up/$job" "jobs/$job/uploads" "$W/aws-c16.cfg" ;;
	s3cmd) w7_s3cmd "$m" "$d/log" "$d/up/$job" "jobs/$job/uploads" ;;
	curl-p16) (export CURL_CA_BUNDLE=$W7_CA; run_curl_par "$m" "$d/log" "$d/up/$job" "jobs/$job/uploads" "$W7_URL") ;;
	curl) (export CURL_CA_BUNDLE=$W7_CA; run_curl_one "$m" "$d/log" "$d/up/$job/big.bin" "jobs/$job/uploads/big.bin" "$W7_URL") ;;
	esac
	[ "$(exit_of "$m")" = 0 ] || { ok=0; extra+="exit=$(exit_of "$m");"; }
	n=$(count_objects "jobs/$job")
	[ "$n" = "$want" ] || { ok=0; extra+="stored=$n;"; }
	if [ "$kind" = big ]; then
		local size
		size=$(object_size "jobs/$job/uploads/big.bin")
		[ "$size" = "$bytes" ] || { ok=0; extra+="stored_bytes=$size;"; }
	fi
	case $tool in outboxd*) [ "$(st failed "$d/o.db")" = 0 ] || { ok=0; extra+="failed;"; } ;; esac
	extra+="rtt_ms=$rtt;$(w7_counts)"
	[ $ok = 1 ] || { say "W7 $rtt ms $kind $tool round $r not clean: $extra (log $d/log)"; tail -5 "$d/log" >&2; }
	rec W7 "$kind-$rtt" "$tool" "$r" "$want" "$bytes" "$m" "$ok" "$extra"
	drop_objects "jobs/$job"
	[ $ok = 1 ] && rm -rf "$d"
	sleep 0.5
}

if want W7; then
	say "W7: HTTPS (nginx) with ${W7_RTTS// / and } ms round trips (delay.js): $W7_N files of 4 KiB and one $W7_MIB MiB file, $W7_ROUNDS round(s)"
	w7_setup
	gen_files "$W/w7/files" "$W7_N" "$SMALL"
	head -c $((W7_MIB * 1048576)) /dev/urandom >"$W/w7/big.bin"
	for ((r = 1; r <= W7_ROUNDS; r++)); do
		for rtt in $W7_RTTS; do
			w7_delay_start "$rtt"
			for t in "${W7_TOOLS[@]}"; do
				[ "$t" = curl ] || w7_run "$rtt" backlog "$t" "$r"
			done
			for t in "${W7_TOOLS[@]}"; do
				[ "$t" = curl-p16 ] || w7_run "$rtt" big "$t" "$r"
			done
			w7_delay_stop
		done
	done
	rm -rf "$W/w7/files" "$W/w7/big.bin"
fi
