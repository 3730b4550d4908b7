-- 005_supabase: what the app's users and Supabase's Data API need, and
-- nothing more.
--
-- - outboxd_record_document: the activity's user_id is the job owner's
--   when the job's row names one; the value outboxd passes (job.json's
--   user, else OUTBOXD_DEFAULT_USER) only for a job with no owner. Every
--   function name inside is schema-qualified and its search_path pinned,
--   so an overload someone defines in public is never called.
-- - The stand-in auth.uid() of 001's first version (which read only
--   request.jwt.claim.sub, which PostgREST 9 and later no longer set) is
--   replaced by one reading request.jwt.claims too; an auth.uid() that
--   is not outboxd's own (Supabase's) is left alone.
-- - schema_migrations gets row-level security with a policy for
--   outboxd_writer only, like applied_events: no API role reads or writes
--   either, even if granted.
-- - Grants for Supabase's API roles, where they exist: authenticated
--   reads the four tables and the two views through the row-level
--   security policies (its own jobs and their rows); service_role (which
--   has BYPASSRLS) reads and writes the four tables and reads the views;
--   anon gets nothing; none of them gets anything on schema_migrations,
--   applied_events, outboxd_record_document or outboxd_repair_document. What they held there
--   before (the usual "grant all on all tables in schema" of a custom
--   schema) is revoked, on outboxd's objects only. Where the roles do not
--   exist (plain PostgreSQL) this is skipped with a notice.
--
-- A later migration that creates a table or view must make its grants
-- the same way. Every statement is idempotent.

CREATE OR REPLACE FUNCTION @schema@.outboxd_record_document(
    p_event_id uuid, p_job_id uuid, p_file_path text, p_filename text,
    p_document_type text, p_file_size bigint, p_content_type text,
    p_s3_key text, p_etag text, p_sha256 text, p_platform text,
    p_file_info jsonb, p_user_id uuid)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job      @schema@.jobs;
    v_old      @schema@.jobs;
    v_created  boolean := false;
    v_inserted boolean;
    v_prev_sha text;
BEGIN
    -- One version of one path at a time: two outboxd instances sharing
    -- a folder may record the same version at the same moment; without
    -- this both would find no row (or the old one) and both would add an
    -- activity. Released at COMMIT, so it works through a pooler.
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(
        'outboxd:' || p_job_id::text || '/' || p_file_path, 0));

    INSERT INTO @schema@.applied_events (event_id, job_id, kind)
    VALUES (p_event_id, p_job_id, 'document')
    ON CONFLICT (event_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'duplicate';
    END IF;

    INSERT INTO @schema@.jobs (id, filename, platform, user_id, status, file_info)
    VALUES (p_job_id, p_filename, coalesce(p_platform, 'unknown'), p_user_id,
            'processing', coalesce(p_file_info, '{}'::jsonb))
    ON CONFLICT (id) DO NOTHING
    RETURNING * INTO v_job;
    IF FOUND THEN
        v_created := true;
        INSERT INTO @schema@.job_history (job_id, old_data, new_data, changed_fields)
        VALUES (p_job_id, NULL,
                pg_catalog.jsonb_build_object('filename', v_job.filename,
                                   'platform', v_job.platform,
                                   'user_id', v_job.user_id,
                                   'status', v_job.status,
                                   'enhance_with_llm', v_job.enhance_with_llm),
                ARRAY['filename', 'platform', 'user_id', 'status',
                      'enhance_with_llm']);
    ELSIF p_platform IS NOT NULL AND p_platform <> 'unknown' THEN
        SELECT * INTO v_old FROM @schema@.jobs WHERE id = p_job_id FOR UPDATE;
        IF coalesce(v_old.platform, 'unknown') = 'unknown' THEN  -- NULL: an app's row
            UPDATE @schema@.jobs
               SET platform = p_platform, file_info = p_file_info,
                   updated_at = now()
             WHERE id = p_job_id;
            INSERT INTO @schema@.job_history (job_id, old_data, new_data, changed_fields)
            VALUES (p_job_id,
                    pg_catalog.jsonb_build_object('platform', v_old.platform,
                                       'file_info', v_old.file_info),
                    pg_catalog.jsonb_build_object('platform', p_platform,
                                       'file_info', p_file_info),
                    ARRAY['platform', 'file_info']);
        END IF;
    END IF;

    SELECT sha256 INTO v_prev_sha FROM @schema@.documents
     WHERE job_id = p_job_id AND file_path = p_file_path;
    IF FOUND AND v_prev_sha = p_sha256 THEN
        UPDATE @schema@.documents
           SET etag = coalesce(p_etag, etag), s3_key = coalesce(p_s3_key, s3_key)
         WHERE job_id = p_job_id AND file_path = p_file_path;
        RETURN 'unchanged';
    END IF;

    INSERT INTO @schema@.documents (job_id, filename, document_type, file_path,
                                    file_size, content_type, s3_key, etag, sha256)
    VALUES (p_job_id, p_filename, p_document_type, p_file_path, p_file_size,
            p_content_type, p_s3_key, p_etag, p_sha256)
    ON CONFLICT (job_id, file_path) DO UPDATE
       SET filename = excluded.filename,
           document_type = excluded.document_type,
           file_size = excluded.file_size,
           content_type = excluded.content_type,
           s3_key = excluded.s3_key,
           etag = excluded.etag,
           sha256 = excluded.sha256,
           updated_at = now()
    RETURNING (xmax = 0) INTO v_inserted;

    -- The job's owner, as its row names it (the app's, or job.json's once
    -- applied); p_user_id (job.json's, else OUTBOXD_DEFAULT_USER) only
    -- for a job that has none.
    INSERT INTO @schema@.user_activity (user_id, activity_type, activity_data)
    VALUES (coalesce((SELECT user_id FROM @schema@.jobs WHERE id = p_job_id),
                     p_user_id),
            CASE WHEN v_inserted THEN 'file_upload' ELSE 'file_update' END,
            pg_catalog.jsonb_build_object('job_id', p_job_id, 'file_path', p_file_path,
                               'filename', p_filename, 's3_key', p_s3_key,
                               'file_size', p_file_size, 'sha256', p_sha256,
                               'event_id', p_event_id));

    IF v_created THEN
        RETURN 'job_created';
    END IF;
    RETURN CASE WHEN v_inserted THEN 'inserted' ELSE 'updated' END;
END
$$;

-- Only outboxd's roles may call outboxd's functions (EXECUTE is PUBLIC's
-- by default, and PostgREST offers every function a role may execute as
-- an RPC).
REVOKE EXECUTE ON FUNCTION @schema@.outboxd_record_document(uuid, uuid, text,
    text, text, bigint, text, text, text, text, text, jsonb, uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @schema@.outboxd_repair_document(uuid, uuid, text,
    text, text, bigint, text, text, text, text, text, jsonb, uuid) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'outboxd_writer') THEN
        GRANT EXECUTE ON FUNCTION @schema@.outboxd_record_document(uuid,
            uuid, text, text, text, bigint, text, text, text, text, text,
            jsonb, uuid) TO outboxd_writer;
        GRANT EXECUTE ON FUNCTION @schema@.outboxd_repair_document(uuid,
            uuid, text, text, text, bigint, text, text, text, text, text,
            jsonb, uuid) TO outboxd_writer;
    END IF;
END
$$;

-- The stand-in auth.uid(), where it is outboxd's own first version.
DO $$
DECLARE
    v_fn oid := pg_catalog.to_regprocedure('auth.uid()');
BEGIN
    IF v_fn IS NOT NULL AND (
        (SELECT pg_catalog.btrim(prosrc) FROM pg_catalog.pg_proc WHERE oid = v_fn)
            = 'SELECT nullif(current_setting(''request.jwt.claim.sub'', true), '''')::uuid'
        OR pg_catalog.obj_description(v_fn, 'pg_proc')
            = 'outboxd stand-in for Supabase''s auth.uid()') THEN
        CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
            LANGUAGE sql STABLE
            SET search_path = pg_catalog, pg_temp
            AS $f$
            SELECT coalesce(
                nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), ''),
                nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
            )::uuid
            $f$;
        COMMENT ON FUNCTION auth.uid() IS 'outboxd stand-in for Supabase''s auth.uid()';
    END IF;
END
$$;

-- outboxd's bookkeeping: row-level security on, a policy for its writer
-- only (it reads schema_migrations at start-up).
ALTER TABLE @schema@.schema_migrations ENABLE ROW LEVEL SECURITY;
ALTER TABLE @schema@.applied_events ENABLE ROW LEVEL SECURITY;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'outboxd_writer') THEN
        DROP POLICY IF EXISTS schema_migrations_outboxd_writer ON @schema@.schema_migrations;
        CREATE POLICY schema_migrations_outboxd_writer ON @schema@.schema_migrations
            FOR SELECT TO outboxd_writer USING (true);
    END IF;
END
$$;

-- The API roles.
DO $$
DECLARE
    v_role    text;
    v_missing text[] := '{}';
BEGIN
    FOREACH v_role IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = v_role) THEN
            v_missing := v_missing || v_role;
            CONTINUE;
        END IF;
        -- First take back whatever the role held on outboxd's objects.
        EXECUTE pg_catalog.format('REVOKE ALL ON @schema@.jobs, @schema@.documents,
            @schema@.job_history, @schema@.user_activity, @schema@.upload_stats,
            @schema@.job_completion, @schema@.schema_migrations,
            @schema@.applied_events FROM %I', v_role);
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION
            @schema@.outboxd_record_document(uuid, uuid, text, text, text,
            bigint, text, text, text, text, text, jsonb, uuid),
            @schema@.outboxd_repair_document(uuid, uuid, text, text, text,
            bigint, text, text, text, text, text, jsonb, uuid) FROM %I', v_role);
        IF v_role = 'authenticated' THEN
            GRANT USAGE ON SCHEMA @schema@ TO authenticated;
            GRANT SELECT ON @schema@.jobs, @schema@.documents,
                @schema@.job_history, @schema@.user_activity,
                @schema@.upload_stats, @schema@.job_completion TO authenticated;
        ELSIF v_role = 'service_role' THEN
            GRANT USAGE ON SCHEMA @schema@ TO service_role;
            GRANT SELECT, INSERT, UPDATE, DELETE ON @schema@.jobs,
                @schema@.documents, @schema@.job_history,
                @schema@.user_activity TO service_role;
            GRANT SELECT ON @schema@.upload_stats, @schema@.job_completion
                TO service_role;
        END IF;
    END LOOP;
    IF pg_catalog.cardinality(v_missing) > 0 THEN
        RAISE NOTICE 'no role %: Data API grants skipped for it (Supabase''s API roles; not needed on plain PostgreSQL)',
            pg_catalog.array_to_string(v_missing, ', ');
    END IF;
END
$$;
