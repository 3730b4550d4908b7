#!/bin/bash
# it-db.sh - the database leg as the app's operators see it in Supabase:
# migrations apply once and upgrade from an older version; outboxd works
# as a least-privilege role; row-level security shows users their own
# rows; each sample file sets the job's platform and file_info; job.json
# rewrites (queued -> documentation_ready -> completed) leave three
# job_history rows with the right changed_fields; an invalid job.json
# changes nothing; permission denied fails the entry naming the table
# until it is granted and retried; the reporting views count.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init db
pg_start
ob_setup

# --- migrations: twice, then an upgrade from the first version
t_ok "migrate" "$OUTBOXCTL" migrate
"$OUTBOXCTL" migrate >"$IT_DIR/m2.out"
t_ok "migrating again applies nothing" grep -q '0 migrations applied now, up to date' "$IT_DIR/m2.out"
t_is "$(pg_psql -c 'select string_agg(version, $$,$$ order by version) from is_migration.schema_migrations')" \
	"001_init,002_roles_views,003_record_once,004_repair,005_supabase" "every migration is recorded once"
pg_psql -c "create database old_version"
old_url=${DATABASE_URL%/*}/old_version
sed 's/@schema@/"is_migration"/g' "$abs_top_srcdir/schema/pg/001_init.sql" >"$IT_DIR/001.sql"
"$IT_PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d "$old_url" -c 'set client_min_messages = warning' \
	-c 'create schema is_migration' \
	-c 'create table is_migration.schema_migrations (version text primary key, applied_at timestamptz not null default now())' \
	-f "$IT_DIR/001.sql" -c "insert into is_migration.schema_migrations values ('001_init')" >/dev/null
DATABASE_URL=$old_url "$OUTBOXCTL" migrate >"$IT_DIR/up.out"
t_ok "a database at version 001 is upgraded" grep -q '4 migrations applied now' "$IT_DIR/up.out"
t_ok "with the views of 002" "$IT_PG_BINDIR/psql" -X -At -d "$old_url" -c 'select * from is_migration.job_completion'

# --- two outboxd instances over one shared folder (each with its own
# outbox, so each with its own event ids) record the same version at the
# same moment: one activity, not two. Session A records and holds its
# transaction open (pg_sleep) while session B records the same version.
race=$(new_job)
rec_sql() {
	echo "select is_migration.outboxd_record_document('$1'::uuid, '$race'::uuid, 'same.txt', 'same.txt', 'documentation', 5, 'text/plain', 'jobs/$race/uploads/same.txt', NULL, '$2', NULL, NULL, NULL)"
}
sha_old=$(printf '%064x' 170)
sha_new=$(printf '%064x' 187)
pg_psql "$(rec_sql "$(new_job)" "$sha_old")" >/dev/null	# the job and a first version exist
pg_psql -c "$(rec_sql "$(new_job)" "$sha_new"); select pg_sleep(2)" >"$IT_DIR/race-a.out" &
race_a=$!
_a_holds() { [ "$(pg_psql "select count(*) from pg_stat_activity where wait_event = 'PgSleep' and query like '%outboxd_record_document%'")" = 1 ]; }
t_ok "race setup: instance A has recorded the version and not committed yet" wait_for 10 _a_holds
pg_psql "$(rec_sql "$(new_job)" "$sha_new")" >"$IT_DIR/race-b.out"
wait "$race_a"
t_is "$(pg_psql "select count(*) from is_migration.user_activity where activity_data->>'job_id' = '$race' and activity_data->>'sha256' = '$sha_new'")" 1 \
	"two instances recording one version at the same moment add one activity (B: $(cat "$IT_DIR/race-b.out"))"
t_is "$(pg_psql "select proconfig::text from pg_proc where proname = 'outboxd_record_document'")" \
	'{"search_path=pg_catalog, pg_temp"}' "outboxd_record_document runs with a pinned search_path"
pg_psql "delete from is_migration.jobs where id = '$race'" >/dev/null	# the counts below are of the samples

# --- the least-privilege role
pg_psql -c "create role outboxd_agent login" -c "grant outboxd_writer to outboxd_agent"
admin_url=$DATABASE_URL
admin() { DATABASE_URL=$admin_url pg_psql "$@"; }
export DATABASE_URL=postgresql://outboxd_agent@127.0.0.1:$PG_PORT/outboxd
t_is "$(pg_psql -c "select rolsuper or rolbypassrls or rolcreaterole from pg_roles where rolname = 'outboxd_agent'")" f \
	"outboxd_agent is neither superuser nor BYPASSRLS"
ob_start
declare -A want=([mulesoft-orders.xml]=mulesoft [boomi-invoice.xml]=boomi
	[tibco-shipment.process]=tibco [sap-customer.iflw]=sap [malformed.xml]=unknown)
declare -A job
for f in "${!want[@]}"; do
	job[$f]=$(new_job)
	mkdir -p "$UPLOADS/${job[$f]}"
	cp "$IT_DATA/$f" "$UPLOADS/${job[$f]}/.$f.tmp"
	mv "$UPLOADS/${job[$f]}/.$f.tmp" "$UPLOADS/${job[$f]}/$f"
done
t_ok "the samples are recorded by the least-privilege role" ob_wait_idle 30 5
for f in "${!want[@]}"; do
	t_is "$(pg_psql -c "select platform from is_migration.jobs where id = '${job[$f]}'")" "${want[$f]}" \
		"$f: platform ${want[$f]}"
done
t_is "$(pg_psql -c "select file_info->>'root_element' || ' ' || (file_info->>'namespace') from is_migration.jobs where id = '${job[boomi-invoice.xml]}'")" \
	"Component http://api.platform.boomi.com/" "file_info has the root element and namespace"
t_is "$(pg_psql -c "select (file_info->>'well_formed') || ' ' || (file_info->>'error_line') from is_migration.jobs where id = '${job[malformed.xml]}'")" \
	"false 5" "file_info of the malformed file: not well-formed, with the parser's line (5: the </flow> where an attribute name was expected)"
t_is "$(pg_psql -c "select count(*) from is_migration.documents where filename = 'malformed.xml'")" 1 \
	"the malformed file is still recorded"

# --- job.json: three rewrites, three history rows
j=${job[mulesoft-orders.xml]}
user=3b241101-e2bb-4255-8caf-4136c566a962
history() { pg_psql -c "select count(*) from is_migration.job_history where job_id = '$j'"; }
write_job_json() {
	printf '{"id":"%s","filename":"mulesoft-orders.xml","platform":"mulesoft","user_id":"%s","status":"%s","enhance_with_llm":true}' \
		"$j" "$user" "$1" >"$UPLOADS/$j/.job.json.tmp"
	mv "$UPLOADS/$j/.job.json.tmp" "$UPLOADS/$j/job.json"
}
_status_is() { [ "$(pg_psql -c "select status from is_migration.jobs where id = '$j'")" = "$1" ]; }
before=$(history)
for st in queued documentation_ready completed; do
	write_job_json "$st"
	t_ok "job.json status $st is applied" wait_for 20 _status_is "$st"
done
t_is "$(($(history) - before))" 3 "three rewrites, three job_history rows"
t_is "$(pg_psql -c "select string_agg(array_to_string(changed_fields, '+'), ' ' order by created_at) from is_migration.job_history where job_id = '$j' and old_data is not null")" \
	"user_id+status+enhance_with_llm status status" "changed_fields: what each rewrite changed"
t_is "$(pg_psql -c "select old_data->>'status' || '>' || (new_data->>'status') from is_migration.job_history where job_id = '$j' order by created_at desc limit 1")" \
	"documentation_ready>completed" "old_data and new_data of the last one"
t_ok "the log says it in the app's words" grep -q "Job status updated: $j -> completed" "$IT_DIR/outboxd.log"

# --- invalid job.json: a warning, nothing changes, picked up when fixed
printf '{"status": "finished"}' >"$UPLOADS/$j/.job.json.tmp"
mv "$UPLOADS/$j/.job.json.tmp" "$UPLOADS/$j/job.json"
_warned() { grep -q 'job.json not applied: status "finished" is not one of' "$IT_DIR/outboxd.log"; }
t_ok "an unknown status: one clear warning" wait_for 20 _warned
printf '{"status": ' >"$UPLOADS/$j/.job.json.tmp"
mv "$UPLOADS/$j/.job.json.tmp" "$UPLOADS/$j/job.json"
_warned2() { grep -q 'job.json not applied: not valid JSON' "$IT_DIR/outboxd.log"; }
t_ok "invalid JSON: one clear warning" wait_for 20 _warned2
t_is "$(pg_psql -c "select status from is_migration.jobs where id = '$j'")" completed "no database change"
t_is "$(ob_status failed)" 0 "and no failed entry to retry"
write_job_json failed
t_ok "the corrected job.json is applied" wait_for 20 _status_is failed

# --- row-level security: users see their own rows
admin -c "create role app_user nologin" \
	-c "grant usage on schema is_migration to app_user" \
	-c "grant select on all tables in schema is_migration to app_user" >/dev/null
t_is "$(admin -c "set role app_user" -c "select set_config('request.jwt.claim.sub', '$user', false)" -c "select count(*) from is_migration.jobs" | tail -1)" 1 \
	"the job's user sees their one job"
t_is "$(admin -c "set role app_user" -c "select set_config('request.jwt.claim.sub', '$user', false)" -c "select count(*) from is_migration.documents" | tail -1)" 1 \
	"and its document"
t_is "$(admin -c "set role app_user" -c "select set_config('request.jwt.claim.sub', '00000000-0000-4000-8000-000000000000', false)" -c "select count(*) from is_migration.jobs" | tail -1)" 0 \
	"another user sees none"

# --- a missing privilege pauses the database leg (issue 14): it concerns
# every entry alike, so none fails; the pause names the table, and the leg
# records the file by itself once the privilege is back
admin -c "revoke insert on is_migration.documents from outboxd_writer"
write_file "$j/docs/denied.md" "# no insert"
_db_paused() { grep -q 'database leg paused: .*permission denied for table documents' "$IT_DIR/outboxd.log"; }
t_ok "without INSERT on documents the database leg pauses, naming the table" wait_for 20 _db_paused
t_is "$(ob_status failed)" 0 "no entry failed for it"
admin -c "grant insert on is_migration.documents to outboxd_writer"
t_ok "granted again, the paused leg records it without a retry" ob_wait_idle 30 6

# --- the reporting views
t_is "$(pg_psql -c "select sum(files) from is_migration.upload_stats")" 6 "upload_stats counts the files"
t_is "$(pg_psql -c "select jobs from is_migration.job_completion where status = 'processing'")" 4 \
	"job_completion counts jobs per status"
ob_stop
t_done
