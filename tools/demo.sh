#!/bin/bash
# tools/demo.sh - outboxd's main job on its embedded default, on this
# machine: builds outboxd, starts a local PostgreSQL and S3 server (s3rver
# behind the SigV4-verifying proxy the tests use), runs outboxd on a
# sample uploads folder made from the sample integration files, and shows
# the S3 keys and database rows that resulted. Leaves the uploads folder
# and the outbox in _demo/ to look at with sqlite3 afterwards.
set -euo pipefail
cd "$(dirname "$0")/.." || exit 1
top=$PWD

echo "== installing what is missing and building"
bash tools/deps.sh
build=$(bash tools/build.sh _build)
export abs_top_srcdir=$top abs_top_builddir=$build
. "$top/tests/lib.sh"
. "$top/tests/ob.sh"
it_init demo

echo "== starting PostgreSQL 15 and an S3 server on loopback"
pg_start
s3_start
ob_setup
export OUTBOXD_RETRY_BASE_MS=1000 OUTBOXD_RETRY_MAX_S=60
echo "   DATABASE_URL=$DATABASE_URL"
echo "   S3: bucket $S3_BUCKET at $AWS_ENDPOINT_URL_S3"

echo "== starting outboxd (watching $UPLOADS)"
ob_start
sed 's/^/   /' "$IT_DIR/outboxd.log" | grep -v '^   ---'

echo "== the app saves uploads: one job per sample file"
sample_jobs=()
for f in mulesoft-orders.xml boomi-invoice.xml tibco-shipment.process sap-customer.iflw malformed.xml; do
	j=$(new_job)
	sample_jobs+=("$j")
	mkdir -p "$UPLOADS/$j"
	# The app's way: write a temporary name, then rename into place.
	cp "$IT_DATA/$f" "$UPLOADS/$j/.$f.tmp"
	mv "$UPLOADS/$j/.$f.tmp" "$UPLOADS/$j/$f"
	echo "   $j/$f"
done
j=${sample_jobs[0]}
sed "s/6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/$j/" "$IT_DATA/job.json" >"$UPLOADS/$j/job.json"
write_file "$j/docs/notes.md" "# Orders intake
Generated documentation for the orders flow."
write_file "$j/results/generated_iflow.xml" "$(cat "$IT_DATA/sap-customer.iflw")"
echo "   $j/job.json, docs/notes.md, results/generated_iflow.xml"
ob_wait_idle 60 8

echo "== outboxd's log"
grep -v -e '^---' -e 'outboxd 0\.' -e 'leg: ' -e 'rescan (start-up)' "$IT_DIR/outboxd.log" | sed 's/^/   /'

echo "== outboxctl status"
"$OUTBOXCTL" status | sed 's/^/   /'

echo "== S3: objects in s3://$S3_BUCKET"
s3_list jobs/ | while read -r key; do
	printf '   %-90s %6s bytes\n' "$key" "$(stat -c %s "$(s3_object_file "$key")")"
done

echo "== PostgreSQL: is_migration.jobs"
pg_psql -P pager=off -P format=aligned -P tuples_only=off -c \
	"select id, platform, status, user_id is not null as has_user, file_info->>'well_formed' as well_formed from is_migration.jobs order by created_at" |
	sed 's/^/   /'
echo "== PostgreSQL: is_migration.documents"
pg_psql -P pager=off -P format=aligned -P tuples_only=off -c \
	"select left(job_id::text, 8) as job, file_path, document_type, file_size, left(sha256, 12) as sha256, etag from is_migration.documents order by job_id, file_path" |
	sed 's/^/   /'
echo "== PostgreSQL: is_migration.user_activity and job_history"
pg_psql -P pager=off -P format=aligned -P tuples_only=off -c \
	"select activity_type, count(*) from is_migration.user_activity group by 1 order by 1" \
	-c "select left(job_id::text, 8) as job, changed_fields from is_migration.job_history order by created_at" |
	sed 's/^/   /'

ob_stop
rm -rf "$top/_demo"
mkdir -p "$top/_demo"
cp -r "$UPLOADS" "$top/_demo/uploads"
sqlite3 "$OUTBOXD_STATE_DB" ".backup '$top/_demo/outbox.db'"
echo "== done: the uploads and the outbox are in _demo/; try"
echo "   sqlite3 -header -column _demo/outbox.db 'select id, path, s3_state, db_state from recent'"
echo "== the verifying proxy checked $(s3_stats | json_get requests) S3 requests (SigV4 and each body"
echo "   against its signed x-amz-content-sha256) and refused $(s3_rejections)"
t_done >/dev/null
