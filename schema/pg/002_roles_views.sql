-- 002_roles_views: the least-privilege writer role outboxd runs as, and
-- the reporting views the app's dashboard reads.
--
-- outboxd_writer is a NOLOGIN role holding exactly what outboxd needs:
-- grant it to the login role outboxd connects as (see README,
-- "Database"). Creating a role needs CREATEROLE; where the migrating user
-- lacks it (some managed services), the role is skipped with a notice and
-- the grants below are made only if the role exists. Every statement is
-- idempotent (policies are dropped and made again), so a re-run completes.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outboxd_writer') THEN
        CREATE ROLE outboxd_writer NOLOGIN;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cannot create role outboxd_writer (no CREATEROLE): create it and rerun the grants in 002_roles_views.sql';
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outboxd_writer') THEN
        GRANT USAGE ON SCHEMA @schema@ TO outboxd_writer;
        GRANT SELECT ON @schema@.schema_migrations TO outboxd_writer;
        GRANT SELECT, INSERT, UPDATE ON @schema@.jobs, @schema@.documents,
            @schema@.job_history, @schema@.user_activity,
            @schema@.applied_events TO outboxd_writer;
        GRANT EXECUTE ON FUNCTION @schema@.outboxd_record_document(uuid,
            uuid, text, text, text, bigint, text, text, text, text, text,
            jsonb, uuid) TO outboxd_writer;
        -- Row-level security is on: the writer sees and writes every row.
        DROP POLICY IF EXISTS jobs_outboxd_writer ON @schema@.jobs;
        CREATE POLICY jobs_outboxd_writer ON @schema@.jobs
            FOR ALL TO outboxd_writer USING (true) WITH CHECK (true);
        DROP POLICY IF EXISTS documents_outboxd_writer ON @schema@.documents;
        CREATE POLICY documents_outboxd_writer ON @schema@.documents
            FOR ALL TO outboxd_writer USING (true) WITH CHECK (true);
        DROP POLICY IF EXISTS job_history_outboxd_writer ON @schema@.job_history;
        CREATE POLICY job_history_outboxd_writer ON @schema@.job_history
            FOR ALL TO outboxd_writer USING (true) WITH CHECK (true);
        DROP POLICY IF EXISTS user_activity_outboxd_writer ON @schema@.user_activity;
        CREATE POLICY user_activity_outboxd_writer ON @schema@.user_activity
            FOR ALL TO outboxd_writer USING (true) WITH CHECK (true);
        DROP POLICY IF EXISTS applied_events_outboxd_writer ON @schema@.applied_events;
        CREATE POLICY applied_events_outboxd_writer ON @schema@.applied_events
            FOR ALL TO outboxd_writer USING (true) WITH CHECK (true);
    END IF;
END
$$;

-- File upload statistics: per day, files, bytes and jobs.
CREATE OR REPLACE VIEW @schema@.upload_stats WITH (security_invoker = true) AS
    SELECT date_trunc('day', created_at)::date AS day,
           count(*) AS files,
           coalesce(sum(file_size), 0)::bigint AS bytes,
           count(DISTINCT job_id) AS jobs
      FROM @schema@.documents
     GROUP BY 1;

-- Job completion metrics: jobs per status.
CREATE OR REPLACE VIEW @schema@.job_completion WITH (security_invoker = true) AS
    SELECT status, count(*) AS jobs,
           max(updated_at) AS last_change
      FROM @schema@.jobs
     GROUP BY status;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outboxd_writer') THEN
        GRANT SELECT ON @schema@.upload_stats, @schema@.job_completion
            TO outboxd_writer;
    END IF;
END
$$;
