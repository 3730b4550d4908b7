# tests/ob.sh -- helpers for integration tests that run outboxd itself.
# shellcheck shell=bash
# Sourced after lib.sh and it_init. Gives:
#   ob_setup            the uploads tree and outbox under $IT_DIR, fast retries
#   ob_start / ob_stop / ob_kill   the daemon in the background ($OB_PID)
#   ob_status FIELD     a field of `outboxctl status --json`
#   ob_wait_idle T      until nothing is pending (T seconds at most)
#   ob_manifest         what should be stored: job, path, size, sha256, key
#   ob_check_s3         every file's bytes in S3, one TAP line
#   ob_check_db         every file's documents row and activity, TAP lines
#   new_job             a fresh job id
#   write_file REL TEXT a file written the way the app writes (close)

ob_setup() {
	UPLOADS=$IT_DIR/uploads
	mkdir -p "$UPLOADS"
	export OUTBOXD_WATCH_DIR=$UPLOADS
	export OUTBOXD_STATE_DB=$IT_DIR/outbox.db
	# Quick retries keep fault tests short; production defaults are 1 s/300 s.
	export OUTBOXD_RETRY_BASE_MS=${OUTBOXD_RETRY_BASE_MS:-100}
	export OUTBOXD_RETRY_MAX_S=${OUTBOXD_RETRY_MAX_S:-2}
}

_ob_started() { grep -q 'rescan (start-up)' "$IT_DIR/outboxd.log"; }

# ob_start ARGS...: starts outboxd and waits for its start-up rescan.
ob_start() { _ob_start_until _ob_rescanned_since "$@"; }
# _ob_start_until COND ARGS...: starts outboxd with ARGS and waits until
# COND N holds, N being the count of rescan lines before this start.
_ob_start_until() {
	local cond=$1 before
	shift
	: >>"$IT_DIR/outboxd.log"
	echo "--- start $(date -u +%T.%N)" >>"$IT_DIR/outboxd.log"
	# Wait for this start's rescan line (earlier starts left theirs).
	before=$(grep -c 'rescan (start-up)' "$IT_DIR/outboxd.log" || true)
	it_bg outboxd "$OUTBOXD" "$@"
	OB_PID=$IT_BG_PID
	wait_for 20 "$cond" "$before" || {
		t_diag "outboxd did not finish its start-up rescan"
		tail -20 "$IT_DIR/outboxd.log" | sed 's/^/# /'
		return 1
	}
}
_ob_rescanned_since() {
	[ "$(grep -c 'rescan (start-up)' "$IT_DIR/outboxd.log" || true)" -gt "$1" ]
}

# ob_start_crashing ARGS...: as ob_start, for a start armed with
# OUTBOXD_TEST_CRASH. The sync thread sends what earlier runs left pending
# while the start-up rescan walks the tree, so the crash point may come
# before the rescan's line (under ASan, with hundreds of files: it-faults
# in CI); a start that died so counts as started.
ob_start_crashing() { _ob_start_until _ob_rescanned_or_crashed "$@"; }
_ob_rescanned_or_crashed() {
	_ob_rescanned_since "$1" || awk '/^--- start/ { died = 0 }
		/test crash point reached/ { died = 1 } END { exit !died }' \
		"$IT_DIR/outboxd.log"
}

# ob_write_until COND PATH_FMT CONTENT_FMT: writes file after file (the
# formats take its number, from 1) until COND holds, 0.3 s after each, at
# most 60; OB_WRITTEN is how many were written.
ob_write_until() {
	local cond=$1 path_fmt=$2 content_fmt=$3
	OB_WRITTEN=0
	while [ "$OB_WRITTEN" -lt 60 ]; do
		OB_WRITTEN=$((OB_WRITTEN + 1))
		# shellcheck disable=SC2059
		write_file "$(printf "$path_fmt" "$OB_WRITTEN")" "$(printf "$content_fmt" "$OB_WRITTEN")"
		! wait_for 0.3 "$cond" || break
	done
}

ob_stop() { it_stop "$OB_PID" TERM 60; }
ob_kill() { it_stop "$OB_PID" KILL 5 || true; }

ob_status() { "$OUTBOXCTL" status --json | json_get "$@"; }

_ob_idle() {
	local j
	j=$("$OUTBOXCTL" status --json) || return 1
	[ "$(json_get pending <<<"$j")" = 0 ] && [ "$(json_get entries <<<"$j")" -ge "${1:-0}" ]
}

# ob_wait_idle TIMEOUT [MIN_ENTRIES]
ob_wait_idle() {
	if ! wait_for "$1" _ob_idle "${2:-0}"; then
		t_diag "still pending after $1 s:"
		"$OUTBOXCTL" status | sed 's/^/#   /'
		return 1
	fi
}

new_job() { cat /proc/sys/kernel/random/uuid; }

# write_file REL TEXT: creates the directories and writes TEXT
write_file() {
	mkdir -p "$(dirname "$UPLOADS/$1")"
	printf '%s' "$2" >"$UPLOADS/$1"
}

# ob_manifest: one line per file that must be stored, tab separated:
# job_id, path in the job, size, sha256, S3 key. job.json and ignored
# names are not documents.
ob_manifest() {
	(cd "$UPLOADS" && find . -mindepth 2 -type f ! -name job.json \
		! -name '.*' ! -name '*.tmp' ! -name '*.part' ! -name '*.swp' \
		! -name '*~' ! -name '~$*' -print0) |
		while IFS= read -r -d '' f; do
			f=${f#./}
			job=${f%%/*}
			rest=${f#*/}
			case $rest in
			results/*) key="jobs/$job/results/${rest#results/}" ;;
			*) key="jobs/$job/uploads/$rest" ;;
			esac
			printf '%s\t%s\t%s\t%s\t%s\n' "$job" "$rest" \
				"$(stat -c %s "$UPLOADS/$f")" \
				"$(sha256sum <"$UPLOADS/$f" | cut -d' ' -f1)" "$key"
		done | LC_ALL=C sort
}

# ob_check_s3: every manifest file is in S3 with identical bytes
ob_check_s3() {
	local job rest size sha key bad=0 n=0
	while IFS=$'\t' read -r job rest size sha key; do
		n=$((n + 1))
		if ! cmp -s "$UPLOADS/$job/$rest" "$(s3_object_file "$key")"; then
			bad=$((bad + 1))
			[ "$bad" -le 5 ] && t_diag "not in S3 or different bytes: $key"
		fi
	done < <(ob_manifest)
	t_is "$bad" 0 "all $n files are in S3 with identical bytes"
}

# ob_check_db: one documents row per file with the right size and sha256,
# no other rows, and exactly one file_upload activity each
ob_check_db() {
	ob_manifest >"$IT_DIR/manifest.tsv"
	local n
	n=$(wc -l <"$IT_DIR/manifest.tsv" | tr -d ' ')
	pg_psql -q <<-SQL >"$IT_DIR/dbcheck.out"
	CREATE TEMP TABLE want (job_id uuid, file_path text, size bigint, sha256 text, s3_key text);
	\copy want FROM '$IT_DIR/manifest.tsv'
	SELECT 'missing', count(*) FROM want w WHERE NOT EXISTS (SELECT 1 FROM is_migration.documents d
	    WHERE d.job_id = w.job_id AND d.file_path = w.file_path AND d.file_size = w.size
	    AND d.sha256 = w.sha256 AND d.s3_key = w.s3_key);
	SELECT 'extra', count(*) FROM is_migration.documents d WHERE NOT EXISTS (SELECT 1 FROM want w
	    WHERE d.job_id = w.job_id AND d.file_path = w.file_path);
	SELECT 'uploads', count(*) FROM (SELECT 1 FROM is_migration.user_activity
	    WHERE activity_type = 'file_upload' GROUP BY activity_data->>'job_id', activity_data->>'file_path') a;
	SELECT 'doubled', count(*) FROM (SELECT 1 FROM is_migration.user_activity
	    WHERE activity_type = 'file_upload' GROUP BY activity_data->>'job_id', activity_data->>'file_path'
	    HAVING count(*) > 1) a;
	SQL
	t_is "$(awk -F'|' '$1=="missing"{print $2}' "$IT_DIR/dbcheck.out")" 0 \
		"every file of $n has its documents row with the right size, sha256 and key"
	t_is "$(awk -F'|' '$1=="extra"{print $2}' "$IT_DIR/dbcheck.out")" 0 "no documents row without a file"
	t_is "$(awk -F'|' '$1=="uploads"{print $2}' "$IT_DIR/dbcheck.out")" "$n" \
		"every file has a file_upload activity"
	t_is "$(awk -F'|' '$1=="doubled"{print $2}' "$IT_DIR/dbcheck.out")" 0 \
		"no file has two file_upload activities"
}
