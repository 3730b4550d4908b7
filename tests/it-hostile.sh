#!/bin/bash
# it-hostile.sh - hostile uploads through the real daemon (S3 behind the
# verifying proxy, PostgreSQL), in a 64 MiB memory cgroup as the Cloud
# Foundry sidecar's "memory: 64M": a root start tag with 100,000
# attributes (libxml2's duplicate check is quadratic: it stalled the sync
# thread for 39 s), a 16 MiB flood of <a/> (it peaked at 561 MB), a
# billion laughs, an external entity naming /etc/passwd, 1,000 levels of
# nesting, names with a newline (a forged log line), terminal escapes and
# invalid UTF-8, a 1,025-byte S3 key, HTML and SVG (stored XSS), and a
# hard link to a file outside the tree. Throughout, an ordinary file in
# another job is written every 0.3 s and must be stored (S3 and its
# documents row) within 2 s. Prints per file what became of it, the
# ordinary file's worst delay and outboxd's peak RSS (VmHWM). Then the
# messages of outboxd -n, doctor and migrate for connection strings whose
# password libpq quotes. Under ASan the memory limit is not applied (its
# shadow memory alone exceeds it); without a writable memory cgroup it
# falls back to nothing and says so.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init hostile
pg_start
s3_start
ob_setup
export OUTBOXD_SETTLE_MS=20

LIMIT=$((64 * 1024 * 1024))
limit_how=none
# A memory cgroup of our own (v2, else v1), joined by outboxd at exec.
# Those of earlier runs that ended early are empty now: removed.
cg=
rmdir /sys/fs/cgroup/outboxd-it-* /sys/fs/cgroup/memory/outboxd-it-* 2>/dev/null || true
if built_with_asan; then
	limit_how="none: built with ASan, whose shadow memory alone exceeds 64 MiB"
elif [ -w /sys/fs/cgroup/cgroup.subtree_control ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null &&
	mkdir "/sys/fs/cgroup/outboxd-it-$$" 2>/dev/null; then
	cg=/sys/fs/cgroup/outboxd-it-$$
	echo "$LIMIT" >"$cg/memory.max"
	echo 0 >"$cg/memory.swap.max" 2>/dev/null || true
	limit_how="cgroup v2 memory.max=64M"
elif [ -d /sys/fs/cgroup/memory ] && mkdir "/sys/fs/cgroup/memory/outboxd-it-$$" 2>/dev/null; then
	cg=/sys/fs/cgroup/memory/outboxd-it-$$
	echo "$LIMIT" >"$cg/memory.limit_in_bytes"
	echo "$LIMIT" >"$cg/memory.memsw.limit_in_bytes" 2>/dev/null || true
	limit_how="cgroup v1 memory.limit_in_bytes=64M"
fi
cg_cleanup() { [ -z "$cg" ] || rmdir "$cg" 2>/dev/null || true; }
if [ -n "$cg" ]; then
	cat >"$IT_DIR/outboxd-limited" <<EOF
#!/bin/bash
echo \$\$ >"$cg/cgroup.procs" && exec "$OUTBOXD" "\$@"
EOF
	chmod +x "$IT_DIR/outboxd-limited"
fi
REAL_OUTBOXD=$OUTBOXD
[ -z "$cg" ] || OUTBOXD=$IT_DIR/outboxd-limited
t_diag "memory limit: $limit_how"

H=$(new_job)		# the hostile job
T=$(new_job)		# the ordinary job
mkdir -p "$UPLOADS/$H" "$UPLOADS/$T"
ob_start

# --- the ordinary file, every 0.3 s, timed until stored
ticker() {
	local i=0 t0 t1
	while [ ! -e "$IT_DIR/stop-ticks" ] || [ "$i" -lt 10 ]; do
		i=$((i + 1))
		t0=$(_it_now_us)
		printf 'tick %d\n' "$i" >"$UPLOADS/$T/.tick-$i.tmp"
		mv "$UPLOADS/$T/.tick-$i.tmp" "$UPLOADS/$T/tick-$i.txt"
		while [ "$(pg_psql -c "select count(*) from is_migration.documents where job_id = '$T' and file_path = 'tick-$i.txt' and s3_key is not null" 2>/dev/null)" != 1 ]; do
			t1=$(_it_now_us)
			if [ $((t1 - t0)) -gt 30000000 ]; then break; fi
			sleep 0.05
		done
		t1=$(_it_now_us)
		echo "$i $(((t1 - t0) / 1000))" >>"$IT_DIR/ticks"
		sleep 0.3
	done
}
ticker &
tpid=$!
it_track "$tpid"
sleep 1

# --- the corpus, written the way the app writes (temp, then rename)
put() { mv "$IT_DIR/corpus.tmp" "$UPLOADS/$H/$1"; }
MULE=http://www.mulesoft.org/schema/mule/core
perl -e 'print qq{<?xml version="1.0"?><mule xmlns="$ARGV[0]"}; $i = 0;
	for (; $i < 100000; $i++) { print qq{ a$i="v"} } print "/>\n"' "$MULE" >"$IT_DIR/corpus.tmp"
put quadratic.xml
perl -e 'print qq{<mule xmlns="$ARGV[0]">}; print "<a/>" x (4 * 1024 * 1024); print "</mule>\n"' "$MULE" >"$IT_DIR/corpus.tmp"
put flood.xml
{
	echo '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
	prev=lol
	for n in 1 2 3 4 5 6 7 8 9; do
		printf '<!ENTITY lol%d "' "$n"
		for _ in 1 2 3 4 5 6 7 8 9 10; do printf '&%s;' "$prev"; done
		printf '">'
		prev=lol$n
	done
	echo ']><lolz a="&lol9;">&lol9;</lolz>'
} >"$IT_DIR/corpus.tmp"
put laughs.xml
printf '<?xml version="1.0"?><!DOCTYPE mule [<!ENTITY x SYSTEM "file:///etc/passwd">]><mule xmlns="%s">&x;</mule>\n' "$MULE" >"$IT_DIR/corpus.tmp"
put external-entity.xml
perl -e 'print "<d>" x 1000, "</d>" x 1000, "\n"' >"$IT_DIR/corpus.tmp"
put nesting.xml
echo 'forged' >"$IT_DIR/corpus.tmp"
put $'inj\noutboxd: error: FORGED line'
echo 'escapes' >"$IT_DIR/corpus.tmp"
put $'esc-\e[31mred\e[0m-\e]0;title\a.txt'
echo 'not utf-8' >"$IT_DIR/corpus.tmp"
put $'bad-\xff\xfe.txt'
long=$(printf 'd%.0s' $(seq 1 200))
mkdir -p "$UPLOADS/$H/$long/$long/$long/$long"
# jobs/<36>/uploads/ is 50 bytes: a 975-byte rest makes a 1,025-byte key
rest="$long/$long/$long/$long/$(printf 'f%.0s' $(seq 1 167)).txt"
echo 'long key' >"$IT_DIR/corpus.tmp"
mv "$IT_DIR/corpus.tmp" "$UPLOADS/$H/$rest"
printf '<html><script>alert(document.cookie)</script></html>\n' >"$IT_DIR/corpus.tmp"
put page.html
printf '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>\n' >"$IT_DIR/corpus.tmp"
put pic.svg
echo 'AWS_SECRET_ACCESS_KEY=not-for-s3' >"$IT_DIR/credentials.env"
ln "$IT_DIR/credentials.env" "$UPLOADS/$H/linked.txt"

t_ok "every entry settles (none left pending)" ob_wait_idle 60 12
touch "$IT_DIR/stop-ticks"
it_wait "$tpid" 60 || true
t_ok "outboxd is still running" _it_alive "$OB_PID"
hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$OB_PID/status")
t_diag "outboxd peak RSS (VmHWM): $((hwm / 1024)) MiB ($hwm kB); limit: $limit_how"
if [ -n "$cg" ]; then
	t_ok "peak RSS under 64 MiB" test "$hwm" -lt 65536
else
	t_skip "peak RSS under 64 MiB" "$limit_how"
fi
worst=$(sort -k2 -n "$IT_DIR/ticks" | tail -1 | awk '{ print $2 }')
t_diag "the ordinary file: $(wc -l <"$IT_DIR/ticks") writes, worst delay $worst ms, each: $(awk '{ printf "%s ", $2 }' "$IT_DIR/ticks")"
t_ok "the ordinary file in another job was stored within 2 s every time (worst $worst ms)" test "$worst" -lt 2000

# --- per file
doc() { pg_psql -c "select $2 from is_migration.documents where job_id = '$H' and file_path = '$1'"; }
t_diag "per file (outboxctl list --job, escaped):"
"$OUTBOXCTL" list --job "$H" | sed 's/^/#   /'
t_diag "  linked.txt: not journaled (a hard link)"
t_diag "the hostile job's file_info (from its first XML file recorded): $(pg_psql -c "select file_info::text from is_migration.jobs where id = '$H'")"
for f in quadratic.xml flood.xml laughs.xml external-entity.xml nesting.xml page.html pic.svg; do
	t_is "$(doc "$f" "count(*) filter (where s3_key is not null)")" 1 "$f: stored (S3 and its row)"
done
no_passwd() { ! pg_psql -c "select file_info::text from is_migration.jobs" | grep -q 'root:'; }
t_ok "no file_info holds /etc/passwd's lines (the external entity is not read)" no_passwd
t_is "$(grep -c '^outboxd: error: FORGED' "$IT_DIR/outboxd.log" || true)" 0 \
	"no forged line in the log (the name's newline is written \\n)"
t_ok "the name is in the log, escaped" grep -qF 'inj\noutboxd: error: FORGED line' "$IT_DIR/outboxd.log"
t_is "$(grep -c $'\e' "$IT_DIR/outboxd.log" || true)" 0 "no terminal escape reaches the log"
t_is "$("$OUTBOXCTL" list --job "$H" | grep -c $'\e' || true)" 0 "nor outboxctl list"
listed() { "$OUTBOXCTL" list --job "$H" | grep -A1 -F "$1" | grep -qF "$2"; }
t_ok "outboxctl list shows the newline as \\n" listed 'inj\noutboxd: error: FORGED line' FORGED
t_ok "the invalid UTF-8 name fails S3 with the reason, written \\xff\\xfe" \
	listed 'bad-\xff\xfe.txt' 'not valid UTF-8'
t_ok "the 1,025-byte key fails S3 with the reason" listed 'ffff.txt' 'S3 key would be 1025 bytes'
t_ok "the hard link was skipped with one warning naming it and OUTBOXD_HARDLINKS=allow" \
	grep -q "$H/linked.txt: has 2 hard links.*OUTBOXD_HARDLINKS=allow" "$IT_DIR/outboxd.log"
t_is "$(doc linked.txt "count(*)")" 0 "and it is not in the database"
t_ok "nor in S3" test ! -e "$S3_DATA_DIR/$S3_BUCKET/jobs/$H/uploads/linked.txt"
attachment() { s3_head "$1" | grep -qi '^content-disposition: attachment'; }
for f in page.html pic.svg; do
	t_ok "$f: S3 serves it with Content-Disposition: attachment (through the proxy)" \
		attachment "$(doc "$f" s3_key)"
done
t_is "$(doc page.html content_type)" "text/html; charset=utf-8" "the row keeps page.html's real type"
t_is "$(doc pic.svg content_type)" "image/svg+xml" "and pic.svg's"
rc=0
ob_stop || rc=$?
t_is "$rc" 0 "outboxd stops cleanly (SIGTERM) after the corpus"

# --- connection strings whose password libpq quotes in its messages
leaks=0
for url in 'postgresql://u:abc%XYsecret@127.0.0.1:1/db' 'host=127.0.0.1 port=1 password=PW Xsecret dbname=x'; do
	out=$({ DATABASE_URL=$url "$REAL_OUTBOXD" -n; DATABASE_URL=$url "$OUTBOXCTL" doctor;
		DATABASE_URL=$url "$OUTBOXCTL" migrate; } 2>&1 || true)
	if grep -q 'secret' <<<"$out"; then
		leaks=$((leaks + 1))
		t_diag "password shown for $url:"
		grep 'secret' <<<"$out" | sed 's/^/#   /'
	fi
done
vcap='{"postgresql":[{"name":"db","credentials":{"uri":"postgres://u:abc%XYsecret@127.0.0.1:1/db"}}]}'
out=$({ VCAP_SERVICES=$vcap "$REAL_OUTBOXD" -n; VCAP_SERVICES=$vcap "$OUTBOXCTL" doctor; } 2>&1 || true)
grep -q 'secret' <<<"$out" && leaks=$((leaks + 1)) && grep 'secret' <<<"$out" | sed 's/^/#   /'
t_is "$leaks" 0 "outboxd -n, doctor and migrate never show the password (URI with %XY, password=PW X, VCAP_SERVICES)"
cg_cleanup
t_done
