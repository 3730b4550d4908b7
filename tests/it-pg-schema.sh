#!/bin/bash
# it-pg-schema.sh - the PostgreSQL schema on plain PostgreSQL 15:
#  - search_path hijack: a second role that may create in public defines
#    overloads of jsonb_build_object matching every call outboxd makes
#    (in its migrations' functions and in its own queries), before the
#    migration and after; none of them is ever called while outboxd
#    records files and applies job.json as its least-privilege role
#    (issue 12);
#  - every function the migrations create pins its search_path;
#  - user_activity rows carry the job owner's user_id when the job's row
#    names one, and OUTBOXD_DEFAULT_USER only for jobs with no owner;
#  - the stand-in auth.uid() reads request.jwt.claims (PostgREST 9 and
#    later, JSON) as well as request.jwt.claim.sub, and replaces the first
#    stand-in, which read only the latter;
#  - the Data API grants are skipped with a notice where there are no
#    Supabase roles;
#  - every migration is idempotent: a schema_migrations row deleted, a
#    policy dropped by hand, and migrate completes and restores them; the
#    first half of 001 applied by hand, and migrate completes over it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init pg-schema
pg_start
ob_setup
admin_url=$DATABASE_URL
admin() { DATABASE_URL=$admin_url pg_psql "$@"; }

# --- the hijacker: may create in public, defines its overloads first
admin -c "create role mallory login" -c "grant create on schema public to mallory" >/dev/null
mallory_url=postgresql://mallory@127.0.0.1:$PG_PORT/outboxd
# hijack SIGNATURE: an overload that logs who called it, then does what
# the real one does (so nothing else breaks and only the log tells)
hijack() {
	local sig=$1 args=() i n
	IFS=, read -r -a types <<<"$sig"
	n=${#types[@]}
	for ((i = 1; i <= n; i++)); do args+=("\$$i"); done
	local list
	list=$(IFS=,; echo "${args[*]}")
	DATABASE_URL=$mallory_url pg_psql -q <<-SQL
	create function public.jsonb_build_object($sig) returns jsonb
	language plpgsql volatile as \$f\$
	begin
	    insert into public.hijack_calls (who, sig) values (session_user, '$sig');
	    return pg_catalog.jsonb_build_object($list);
	end \$f\$;
	SQL
}
DATABASE_URL=$mallory_url pg_psql -q \
	-c "create table public.hijack_calls (who text, sig text, at timestamptz default now())" \
	-c "grant insert on public.hijack_calls to public"
# The shapes of every jsonb_build_object call in schema/pg and agent/db.
hijack "text,text,text,text,text,uuid,text,text,text,boolean"
hijack "text,text,text,jsonb"
hijack "text,uuid,text,text,text,text,text,text,text,bigint,text,text,text,uuid"
calls() { admin -c "select count(*) from public.hijack_calls"; }
# the hijack works where the search_path is not pinned: the proof that
# the overloads are better matches than pg_catalog's (VARIADIC "any")
DATABASE_URL=$mallory_url pg_psql -c "select jsonb_build_object('a', 'b'::text, 'c', '{}'::jsonb)" >/dev/null
t_is "$(calls)" 1 "the overloads are chosen over pg_catalog's by an unpinned caller (control)"
admin -c "truncate public.hijack_calls" >/dev/null

t_ok "migrate" "$OUTBOXCTL" migrate
t_is "$(admin -c "select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace
	where n.nspname in ('is_migration', 'auth')
	and not coalesce('search_path=pg_catalog, pg_temp' = any (p.proconfig), false)")" 0 \
	"every function of schema is_migration and the stand-in auth has search_path pinned"
t_is "$(calls)" 0 "migrating called no overload"
# and again, with the overloads in place before a function is replaced
admin -c "delete from is_migration.schema_migrations where version > '001_init'" >/dev/null
t_ok "migrate again" "$OUTBOXCTL" migrate

# --- outboxd as its least-privilege role, search_path "$user", public
admin -c "create role outboxd_agent login" -c "grant outboxd_writer to outboxd_agent" >/dev/null
export DATABASE_URL=postgresql://outboxd_agent@127.0.0.1:$PG_PORT/outboxd
owner=3b241101-e2bb-4255-8caf-4136c566a962
default=00000000-0000-4000-8000-00000000d0d0
other=9c5b94b1-35ad-49bb-b118-8e8fc24abf80
export OUTBOXD_DEFAULT_USER=$default
j_row=$(new_job)	# the app created its row, naming its owner; no job.json
j_json=$(new_job)	# job.json names its owner
j_none=$(new_job)	# no owner anywhere
admin -c "insert into is_migration.jobs (id, filename, user_id) values ('$j_row', 'app.xml', '$owner')" >/dev/null
write_file "$j_row/integration.xml" '<mule xmlns="http://www.mulesoft.org/schema/mule/core"/>'
write_file "$j_row/docs/a.md" 'a'
write_file "$j_json/job.json" "{\"user_id\":\"$other\",\"status\":\"queued\"}"
write_file "$j_json/boomi.xml" "$(cat "$IT_DATA/boomi-invoice.xml")"
write_file "$j_none/b.txt" 'b'
t_ok "outboxd --once records the files" "$OUTBOXD" --once
t_is "$(ob_status failed)" 0 "nothing failed"
write_file "$j_json/boomi.xml" "$(cat "$IT_DATA/boomi-invoice.xml") "
write_file "$j_json/job.json" "{\"user_id\":\"$other\",\"status\":\"completed\"}"
t_ok "and a second version and a job.json rewrite" "$OUTBOXD" --once
act() { admin -c "select coalesce(string_agg(distinct coalesce(user_id::text, 'NULL'), ','), 'none') from is_migration.user_activity where activity_data->>'job_id' = '$1'"; }
t_is "$(act "$j_row")" "$owner" "a job whose row names its owner: its activities are the owner's, not OUTBOXD_DEFAULT_USER's"
t_is "$(act "$j_json")" "$other" "a job whose job.json names its owner: the owner's"
t_is "$(act "$j_none")" "$default" "a job with no owner: OUTBOXD_DEFAULT_USER"
t_is "$(admin -c "select user_id from is_migration.jobs where id = '$j_row'")" "$owner" "the app's owner stays on the job"
t_is "$(calls)" 0 "no jsonb_build_object overload of another role was called (search_path pinned, names qualified)"
admin -c "select who, sig from public.hijack_calls" | sed 's/^/# called: /'

# --- the stand-in auth.uid(): both ways PostgREST passes the user
admin -c "create role app_user nologin" -c "grant usage on schema is_migration to app_user" \
	-c "grant select on all tables in schema is_migration to app_user" >/dev/null
seen() { admin -c "begin" -c "set local role app_user" -c "$1" -c "select count(*) from is_migration.jobs" -c "commit" | tail -2 | head -1; }
t_is "$(seen "select set_config('request.jwt.claims', '{\"sub\":\"$owner\",\"role\":\"authenticated\"}', true)")" 1 \
	"auth.uid() reads request.jwt.claims ->> 'sub' (PostgREST 9 and later)"
t_is "$(seen "select set_config('request.jwt.claim.sub', '$other', true)")" 1 \
	"and request.jwt.claim.sub (older PostgREST)"
t_is "$(seen "select 1")" 0 "no claims: no rows"

# --- an install whose stand-in is 001's first one (claim.sub only) gets
# the new one from 005
admin -c "create database oldauth" >/dev/null
old_url=${admin_url%/*}/oldauth
"$IT_PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d "$old_url" -c 'create schema auth' \
	-c "create function auth.uid() returns uuid language sql stable as \$f\$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid \$f\$"
DATABASE_URL=$old_url "$OUTBOXCTL" migrate >/dev/null 2>&1
t_is "$("$IT_PG_BINDIR/psql" -X -At -d "$old_url" -c "select set_config('request.jwt.claims', '{\"sub\":\"$owner\"}', false)" -c "select auth.uid()" | tail -1)" \
	"$owner" "migrate replaces the first stand-in auth.uid() by one reading request.jwt.claims"

# --- no Supabase roles: the grants are skipped, saying so
admin -c "create database fresh" >/dev/null
fresh_url=${admin_url%/*}/fresh
DATABASE_URL=$fresh_url "$OUTBOXCTL" migrate >"$IT_DIR/fresh.out" 2>&1
t_ok "without anon, authenticated, service_role the Data API grants are skipped with a notice" \
	grep -q 'no role anon, authenticated, service_role: Data API grants skipped' "$IT_DIR/fresh.out"

# --- idempotent: rows of schema_migrations deleted, a policy dropped,
# an index dropped; migrate applies them again and completes
DATABASE_URL=$fresh_url pg_psql -c "delete from is_migration.schema_migrations" \
	-c "drop policy jobs_owner_read on is_migration.jobs" \
	-c "drop index is_migration.documents_created_idx" >/dev/null
rc=0
DATABASE_URL=$fresh_url "$OUTBOXCTL" migrate >"$IT_DIR/again.out" 2>&1 || rc=$?
t_is "$rc" 0 "every migration applied again over its own objects completes ($(tail -1 "$IT_DIR/again.out"))"
t_is "$(DATABASE_URL=$fresh_url pg_psql -c "select count(*) from pg_policies where policyname = 'jobs_owner_read'")" 1 \
	"the dropped policy is back"
t_is "$(DATABASE_URL=$fresh_url pg_psql -c "select count(*) from pg_indexes where indexname = 'documents_created_idx'")" 1 \
	"and the dropped index"

# --- interrupted: the first half of 001 applied by hand (statement by
# statement, as psql -f does, stopped before job_history); migrate then
# applies every migration over it and completes
admin -c "create database halfway" >/dev/null
half_url=${admin_url%/*}/halfway
sed -n '1,/^CREATE TABLE IF NOT EXISTS @schema@.job_history/p' "$abs_top_srcdir/schema/pg/001_init.sql" |
	sed -e '$d' -e 's/@schema@/"is_migration"/g' >"$IT_DIR/half.sql"
"$IT_PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d "$half_url" -c 'set client_min_messages = warning' \
	-c 'create schema is_migration' -f "$IT_DIR/half.sql" >/dev/null
rc=0
DATABASE_URL=$half_url "$OUTBOXCTL" migrate >"$IT_DIR/half.out" 2>&1 || rc=$?
t_is "$rc" 0 "a migration interrupted halfway by hand completes when run ($(tail -1 "$IT_DIR/half.out"))"
t_is "$(DATABASE_URL=$half_url pg_psql -c "select count(*) from pg_tables where schemaname = 'is_migration'")" 6 \
	"with all six tables"
t_done
