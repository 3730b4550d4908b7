#!/bin/bash
# it-supabase.sh - outboxd on a PostgreSQL 15 set up as Supabase's is
# (tests/lib.sh pg_supabase: postgres not a superuser, the API roles,
# authenticator, auth owned by supabase_auth_admin with Supabase's own
# auth.uid(), extensions), the app reading through the Data API:
#  1. outboxctl migrate as postgres; outboxd as a login role granted
#     outboxd_writer, through pgbouncer in transaction mode; then the Data
#     API as PostgREST plays it (authenticator, SET LOCAL ROLE, the JWT
#     claims in request.jwt.claims): user A as authenticated sees A's
#     jobs, documents, history, activity and view rows and none of B's,
#     and cannot write; anon sees nothing, schema_migrations included;
#     service_role sees and writes all; no API role reaches
#     schema_migrations or applied_events, even after the usual
#     custom-schema "grant all"; outboxctl doctor checks the grants and
#     whether the schema is exposed (authenticator's pgrst.db_schemas).
#  2. adoption: tables made by a plausible app schema, with rows; what
#     cannot be adopted is named in one error and nothing changes; once
#     fixed, migrate keeps every row, adds what outboxd needs, validates
#     the constraints the rows allow and reports the others.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init supabase
IT_PG_SUPERUSER=supabase_admin pg_start
pg_supabase
pgbouncer_start
s3_start
ob_setup
super() { DATABASE_URL=$PG_ADMIN_URL pg_psql "$@"; }
S=is_migration

t_is "$(pg_psql -c "select rolsuper::text || rolcreaterole::text || rolbypassrls::text from pg_roles where rolname = current_user")" \
	falsetruetrue "postgres is NOSUPERUSER CREATEROLE BYPASSRLS, as on Supabase"
rc=0
pg_psql -c "create function auth.x() returns int language sql as 'select 1'" >/dev/null 2>&1 || rc=$?
t_ok "and may not create in schema auth" test "$rc" != 0

# --- 1. migrate as postgres, outboxd as its writer through pgbouncer
"$OUTBOXCTL" migrate >"$IT_DIR/migrate.out" 2>&1
t_ok "outboxctl migrate as postgres" grep -q '^schema is_migration: 5 migrations applied now' "$IT_DIR/migrate.out"
t_is "$(pg_psql -c "select pg_get_userbyid(proowner) || ' ' || (prosrc like '%request.jwt.claims%')::text from pg_proc where oid = 'auth.uid()'::regprocedure")" \
	"supabase_auth_admin true" "Supabase's auth.uid() is left as it is"
pg_psql -c "create role outboxd_agent login" -c "grant outboxd_writer to outboxd_agent" >/dev/null
bouncer_port=${PGBOUNCER_URL##*:}
bouncer_port=${bouncer_port%%/*}
A=6d1f3c1e-7b53-4d8e-9a8c-0b3c1a2f0a01
B=0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e02
D=00000000-0000-4000-8000-0000000000dd
a1=$(new_job) a2=$(new_job) b1=$(new_job) n1=$(new_job)
# a2's row was made by the app, naming its owner; the others by outboxd
pg_psql -c "insert into $S.jobs (id, filename, user_id) values ('$a2', 'a2.xml', '$A')" >/dev/null
write_file "$a1/job.json" "{\"user_id\":\"$A\",\"status\":\"queued\"}"
write_file "$a1/integration.xml" "$(cat "$IT_DATA/mulesoft-orders.xml")"
write_file "$a1/docs/notes.md" '# notes'
write_file "$a1/results/generated_iflow.xml" '<iflow/>'
write_file "$a2/a2.xml" "$(cat "$IT_DATA/boomi-invoice.xml")"
write_file "$b1/job.json" "{\"user_id\":\"$B\",\"status\":\"queued\"}"
write_file "$b1/b.xml" "$(cat "$IT_DATA/tibco-shipment.process")"
write_file "$b1/b.md" 'b'
write_file "$n1/n.txt" 'no owner'
agent_url=postgresql://outboxd_agent@127.0.0.1:$bouncer_port/outboxd
DATABASE_URL=$agent_url OUTBOXD_DEFAULT_USER=$D ob_start
t_ok "outboxd as outboxd_agent through pgbouncer records the tree" ob_wait_idle 60 9
ob_stop
t_is "$(ob_status failed)" 0 "nothing failed"
t_is "$(pg_psql -c "select count(*) from $S.documents")" 7 "every file is recorded"
t_ok "no prepared-statement or permission trouble in the log" \
	bash -c "! grep -qi 'prepared statement\|permission denied' '$IT_DIR/outboxd.log'"
ob_check_s3

# --- the Data API, per role
rels="jobs documents job_history user_activity upload_stats job_completion schema_migrations applied_events"
# count ROLE SUB REL: rows the role sees (for the views: what they count),
# or "denied"; ROLE postgres: as the tables' owner
count() {
	local q
	case $3 in
	upload_stats) q="select coalesce(sum(files), 0) from $S.upload_stats" ;;
	job_completion) q="select coalesce(sum(jobs), 0) from $S.job_completion" ;;
	*) q="select count(*) from $S.$3" ;;
	esac
	if [ "$1" = postgres ]; then
		pg_psql -c "$q"
	else
		supa_api "$1" "$2" "$q" 2>/dev/null || echo denied
	fi
}
# what A and service_role must see, counted as postgres (BYPASSRLS)
own="select id from $S.jobs where user_id = '$A'"
declare -A want_a=(
	[jobs]=$(pg_psql -c "select count(*) from ($own) j")
	[documents]=$(pg_psql -c "select count(*) from $S.documents where job_id in ($own)")
	[job_history]=$(pg_psql -c "select count(*) from $S.job_history where job_id in ($own)")
	[user_activity]=$(pg_psql -c "select count(*) from $S.user_activity where user_id = '$A'")
	[upload_stats]=$(pg_psql -c "select count(*) from $S.documents where job_id in ($own)")
	[job_completion]=$(pg_psql -c "select count(*) from ($own) j")
	[schema_migrations]=denied [applied_events]=denied)
declare -A want_all=(
	[jobs]=$(pg_psql -c "select count(*) from $S.jobs")
	[documents]=$(pg_psql -c "select count(*) from $S.documents")
	[job_history]=$(pg_psql -c "select count(*) from $S.job_history")
	[user_activity]=$(pg_psql -c "select count(*) from $S.user_activity")
	[upload_stats]=$(pg_psql -c "select count(*) from $S.documents")
	[job_completion]=$(pg_psql -c "select count(*) from $S.jobs")
	[schema_migrations]=denied [applied_events]=denied)
t_is "${want_a[jobs]} ${want_a[documents]}" "2 4" "A owns two jobs with four documents (one job's row made by the app)"
t_is "$(pg_psql -c "select count(*) from $S.user_activity where activity_data->>'job_id' = '$a2' and user_id is distinct from '$A'")" 0 \
	"the app-made job's activity is its owner's, not OUTBOXD_DEFAULT_USER's"
printf '# %-24s' "rows seen, per role:" >"$IT_DIR/counts.txt"
for r in $rels; do printf ' %-17s' "$r" >>"$IT_DIR/counts.txt"; done
echo >>"$IT_DIR/counts.txt"
for who in "authenticated:$A:authenticated, user A" "authenticated:$B:authenticated, user B" \
	"anon::anon" "service_role::service_role" "postgres::postgres (owner)"; do
	role=${who%%:*} rest=${who#*:}
	sub=${rest%%:*} label=${rest#*:}
	printf '# %-24s' "$label" >>"$IT_DIR/counts.txt"
	for r in $rels; do
		c=$(count "$role" "$sub" "$r")
		printf ' %-17s' "$c" >>"$IT_DIR/counts.txt"
		case $label in
		*"user A") t_is "$c" "${want_a[$r]}" "authenticated as A: $r shows A's rows only (${want_a[$r]})" ;;
		anon) t_is "$c" denied "anon: $r denied" ;;
		service_role) t_is "$c" "${want_all[$r]}" "service_role: $r ${want_all[$r]}" ;;
		esac
	done
	echo >>"$IT_DIR/counts.txt"
done
cat "$IT_DIR/counts.txt"
t_is "$(count authenticated "$B" documents) $(count authenticated "$B" jobs)" "2 1" "B sees B's one job and two documents"
t_is "$(supa_api authenticated "$A" "select count(*) from $S.jobs where user_id is distinct from '$A'")" 0 "A sees none of B's or the ownerless jobs"
t_is "$(count authenticated "" jobs)" 0 "authenticated without a sub sees nothing"
for w in "insert into $S.jobs (id, user_id) values (gen_random_uuid(), '$A')" \
	"update $S.jobs set status = 'failed'" "delete from $S.documents" \
	"insert into $S.user_activity (user_id, activity_type) values ('$A', 'x')" \
	"delete from $S.schema_migrations" "select $S.outboxd_record_document(gen_random_uuid(), '$a1', 'x', 'x', 'other', 1, null, null, null, null, null, null, '$A')"; do
	rc=0
	supa_api authenticated "$A" "$w" >/dev/null 2>&1 || rc=$?
	t_ok "authenticated cannot: ${w:0:60}" test "$rc" != 0
done
t_is "$(supa_api service_role "" "with u as (update $S.jobs set updated_at = updated_at returning 1) select count(*) from u")" \
	"${want_all[jobs]}" "service_role writes (updates every job)"
rc=0
supa_api service_role "" "delete from $S.applied_events" >/dev/null 2>&1 || rc=$?
t_ok "service_role cannot touch applied_events" test "$rc" != 0

# --- the usual custom-schema grants, made after migrate: RLS still
# keeps the API roles out of outboxd's bookkeeping
pg_psql -c "grant usage on schema $S to anon, authenticated, service_role" \
	-c "grant all on all tables in schema $S to anon, authenticated, service_role" >/dev/null
t_is "$(supa_api anon "" "with d as (delete from $S.schema_migrations returning 1) select count(*) from d")" 0 \
	"after 'grant all' anon deletes no schema_migrations row (RLS, no policy)"
rc=0
supa_api anon "" "insert into $S.schema_migrations values ('999_evil')" >/dev/null 2>&1 || rc=$?
t_ok "and cannot insert one" test "$rc" != 0
t_is "$(count anon "" jobs)" 0 "anon sees no job even with the grant"
"$OUTBOXCTL" doctor >"$IT_DIR/doctor-granted.out" 2>&1 || true
t_ok "doctor names the grants too wide" grep -q '^FAIL database: Data API grants: anon has [A-Z/]*SELECT[A-Z/]* on [a-z_, ]*jobs' "$IT_DIR/doctor-granted.out"
grep '^FAIL database: Data API' "$IT_DIR/doctor-granted.out" | cut -c1-300 | sed 's/^/# doctor after grant all: /'
pg_psql -c "delete from $S.schema_migrations where version = '005_supabase'" >/dev/null
t_ok "005 applied again (idempotent) puts the grants right" "$OUTBOXCTL" migrate
t_is "$(count anon "" jobs) $(count authenticated "$A" documents)" "denied ${want_a[documents]}" "anon denied again, A still sees A's"

# --- doctor: grants, and whether the schema is exposed
"$OUTBOXCTL" doctor >"$IT_DIR/doctor1.out" 2>&1 || true
t_ok "doctor: Data API grants ok" grep -q '^ok   database: Data API grants' "$IT_DIR/doctor1.out"
t_ok "doctor: without pgrst.db_schemas in the database it prints the dashboard step" \
	grep -q 'Exposed schemas' "$IT_DIR/doctor1.out"
grep '^note' "$IT_DIR/doctor1.out" | sed 's/^/# doctor: /'
super -c "alter role authenticator set pgrst.db_schemas = 'public, graphql_public'" >/dev/null
rc=0
"$OUTBOXCTL" doctor >"$IT_DIR/doctor2.out" 2>&1 || rc=$?
t_ok "doctor: a pgrst.db_schemas without the schema is a failure" grep -q "^FAIL database: schema is_migration is not exposed" "$IT_DIR/doctor2.out"
grep '^FAIL database: schema' "$IT_DIR/doctor2.out" | sed 's/^/# doctor: /'
super -c "alter role authenticator set pgrst.db_schemas = 'public, graphql_public, is_migration'" >/dev/null
rc=0
DATABASE_URL=$agent_url OUTBOXD_DB_MIGRATE=0 "$OUTBOXCTL" doctor >"$IT_DIR/doctor.out" 2>&1 || rc=$?
t_is "$rc" 0 "doctor as outboxd_agent through pgbouncer on the populated tree: every check passes"
t_ok "and says the schema is exposed" grep -q '^ok   database: schema is_migration is exposed' "$IT_DIR/doctor.out"
sed 's/^/# doctor: /' "$IT_DIR/doctor.out"

# --- 2. adoption of the app's own tables
pg_supabase_db adopt
adopt_url=postgresql://postgres@127.0.0.1:$PG_PORT/adopt
adopt() { DATABASE_URL=$adopt_url pg_psql "$@"; }
adopt -q <<SQL
-- is_migration_schema.sql, as the app has it
create schema is_migration;
create table is_migration.jobs (
    id uuid primary key default gen_random_uuid(),
    filename text,
    platform text,
    user_id uuid,
    status text default 'processing',
    enhance_with_llm boolean default false,
    file_info jsonb,
    created_at timestamptz default now());
create table is_migration.documents (
    id uuid primary key default gen_random_uuid(),
    job_id uuid references is_migration.jobs (id),
    filename text, document_type text, file_path text, file_size bigint,
    content_type text, created_at timestamptz default now());
create table is_migration.job_history (
    id uuid primary key default gen_random_uuid(),
    job_id uuid references is_migration.jobs (id),
    old_data jsonb, new_data jsonb, changed_fields text[],
    created_at timestamptz default now());
create table is_migration.user_activity (
    id uuid primary key default gen_random_uuid(),
    user_id text, activity_type text, activity_data jsonb,
    created_at timestamptz default now());
insert into is_migration.jobs (id, filename, platform, user_id, status) values
    ('$a1', 'orders.xml', 'mulesoft', '$A', 'completed'),
    ('$a2', 'old.xml', null, '$A', 'archived'),
    ('$b1', 'b.xml', 'tibco', '$B', 'queued');
insert into is_migration.documents (job_id, filename, document_type, file_path, file_size, content_type) values
    ('$a1', 'orders.xml', 'integration', 'orders.xml', 10, 'application/xml'),
    ('$a1', 'orders.md', 'documentation', 'docs/orders.md', 5, 'text/markdown'),
    ('$a2', 'old.pdf', 'pdf', 'old.pdf', 7, 'application/pdf'),
    ('$b1', 'b.xml', 'integration', 'b.xml', 3, 'application/xml');
insert into is_migration.job_history (job_id, old_data, new_data, changed_fields) values
    ('$a1', null, '{"status":"processing"}', '{status}'),
    ('$a1', '{"status":"processing"}', '{"status":"completed"}', '{status}');
insert into is_migration.user_activity (user_id, activity_type, activity_data) values
    ('$A', 'file_upload', '{}'), ('$A', 'login', '{}'), ('$B', 'file_upload', '{}');
SQL
# the rows as the app made them, to compare after adoption
snapshot() {
	adopt -c "select md5(string_agg(x, ',' order by x)) from (
	    select j::text x from (select id, filename, user_id, status, enhance_with_llm, file_info, created_at from is_migration.jobs) j
	    union all select d::text from (select id, job_id, filename, document_type, file_path, file_size, content_type, created_at from is_migration.documents) d
	    union all select h::text from (select id, job_id, old_data, new_data, changed_fields, created_at from is_migration.job_history) h
	    union all select a::text from (select id, user_id::text, activity_type, activity_data, created_at from is_migration.user_activity) a) s"
}
rc=0
DATABASE_URL=$adopt_url "$OUTBOXCTL" migrate >"$IT_DIR/adopt1.out" 2>&1 || rc=$?
t_is "$rc" 70 "a column of the wrong type: migrate stops"
t_ok "with one error naming it" grep -q 'cannot adopt the existing tables of schema "is_migration" (nothing was changed): user_activity.user_id is text, outboxd needs uuid' "$IT_DIR/adopt1.out"
t_is "$(adopt -c "select count(*) from information_schema.columns where table_schema = 'is_migration' and column_name in ('s3_key', 'updated_at')") $(adopt -c "select count(*) from information_schema.tables where table_schema = 'is_migration'")" \
	"0 4" "and nothing was changed"
adopt -c "alter table is_migration.user_activity alter user_id type uuid using user_id::uuid" >/dev/null
before=$(snapshot)
rows_before=$(adopt -c "select (select count(*) from is_migration.jobs) || ' ' || (select count(*) from is_migration.documents) || ' ' || (select count(*) from is_migration.job_history) || ' ' || (select count(*) from is_migration.user_activity)")
rc=0
DATABASE_URL=$adopt_url "$OUTBOXCTL" migrate >"$IT_DIR/adopt2.out" 2>&1 || rc=$?
t_is "$rc" 0 "migrate adopts the app's tables ($(grep -v '^WARNING\|^DETAIL\|^HINT' "$IT_DIR/adopt2.out" | tail -1))"
sed 's/^/# migrate: /' "$IT_DIR/adopt2.out"
t_is "$(snapshot)" "$before" "every row the app made is kept, every value unchanged (rows: $rows_before)"
t_ok "the violated status check is reported" grep -q 'constraint jobs.jobs_status_check stays NOT VALID' "$IT_DIR/adopt2.out"
t_ok "and the violated document type check" grep -q 'constraint documents.documents_type_check stays NOT VALID' "$IT_DIR/adopt2.out"
t_is "$(adopt -c "select string_agg(conname || '=' || convalidated::text, ' ' order by conname) from pg_constraint where conrelid in ('is_migration.jobs'::regclass, 'is_migration.documents'::regclass) and contype in ('c', 'u')")" \
	"documents_job_path_key=true documents_sha256_check=true documents_type_check=false jobs_status_check=false" \
	"constraints the rows allow are validated, the others stay NOT VALID"
t_is "$(adopt -c "select count(*) from information_schema.columns where table_schema = 'is_migration' and (table_name, column_name) in (('documents', 's3_key'), ('documents', 'etag'), ('documents', 'sha256'), ('documents', 'updated_at'), ('jobs', 'updated_at'))")" 5 \
	"s3_key, etag, sha256 and updated_at are added"
t_is "$(adopt -c "select count(*) from pg_policies where schemaname = 'is_migration'") $(adopt -c "select count(*) from pg_indexes where schemaname = 'is_migration' and indexname in ('jobs_user_id_idx', 'documents_created_idx', 'user_activity_job_idx')")" \
	"10 3" "the policies and indexes are made"
t_is "$(DATABASE_URL=$adopt_url "$OUTBOXCTL" migrate 2>&1 | tail -1)" "schema is_migration: 0 migrations applied now, up to date" "migrating again applies nothing"
rc=0
DATABASE_URL=$adopt_url "$OUTBOXCTL" doctor >"$IT_DIR/doctor-adopt.out" 2>&1 || rc=$?
t_ok "doctor reports the constraints the rows violate" grep -q '^FAIL database: constraints not validated.*jobs.jobs_status_check' "$IT_DIR/doctor-adopt.out"
grep '^FAIL' "$IT_DIR/doctor-adopt.out" | sed 's/^/# doctor (adopted): /'
# outboxd records into the adopted tables
rm -rf "$UPLOADS" "$OUTBOXD_STATE_DB"
mkdir -p "$UPLOADS"
write_file "$a1/orders.xml" "$(cat "$IT_DATA/mulesoft-orders.xml")"
write_file "$a2/new.md" 'new'
t_ok "outboxd records into the adopted tables" env DATABASE_URL=$adopt_url OUTBOXD_DB_MIGRATE=0 "$OUTBOXD" --once
t_is "$(adopt -c "select count(*) from is_migration.documents") $(adopt -c "select count(*) from is_migration.documents where s3_key is not null and sha256 is not null")" \
	"5 2" "the app's row of orders.xml is updated in place, new.md added"
t_is "$(adopt -c "select count(*) from is_migration.user_activity where activity_data->>'job_id' in ('$a1', '$a2') and user_id = '$A'")" 2 \
	"their activities are the owner's"
t_is "$(supa_api authenticated "$A" "select 1" >/dev/null; DATABASE_URL=$adopt_url pg_psql -c "select 1")" 1 "the adopted database still answers"
t_done
