-- 001_init: the IS-Migration app's tables in schema @schema@, and what
-- outboxd needs to record into them exactly once.
--
-- Applied by `outboxctl migrate` (and by outboxd at start-up when
-- OUTBOXD_DB_MIGRATE=1) inside one transaction, once: schema_migrations
-- remembers it. @schema@ is replaced by OUTBOXD_DB_SCHEMA (default
-- is_migration). Runs the same on Supabase and on plain PostgreSQL 15.

-- Supabase provides auth.uid() (the signed-in user). Elsewhere a stand-in
-- reads the same JWT claim setting, so the same policies apply.
DO $$
BEGIN
    IF to_regprocedure('auth.uid()') IS NULL THEN
        CREATE SCHEMA IF NOT EXISTS auth;
        CREATE FUNCTION auth.uid() RETURNS uuid
            LANGUAGE sql STABLE
            AS $f$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $f$;
    END IF;
END
$$;

CREATE TABLE @schema@.jobs (
    id               uuid PRIMARY KEY,
    filename         text,
    platform         text NOT NULL DEFAULT 'unknown',
    user_id          uuid,
    status           text NOT NULL DEFAULT 'processing'
                     CONSTRAINT jobs_status_check CHECK (status IN
                     ('processing', 'queued', 'documentation_ready',
                      'completed', 'failed')),
    enhance_with_llm boolean NOT NULL DEFAULT false,
    file_info        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_user_id_idx ON @schema@.jobs (user_id, created_at DESC);
CREATE INDEX jobs_status_idx ON @schema@.jobs (status);

CREATE TABLE @schema@.documents (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id        uuid NOT NULL REFERENCES @schema@.jobs (id) ON DELETE CASCADE,
    filename      text NOT NULL,
    document_type text NOT NULL
                  CONSTRAINT documents_type_check CHECK (document_type IN
                  ('result', 'documentation', 'integration', 'other')),
    file_path     text NOT NULL,   -- relative to the job's directory
    file_size     bigint NOT NULL,
    content_type  text,
    s3_key        text,
    etag          text,
    sha256        text CONSTRAINT documents_sha256_check
                  CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT documents_job_path_key UNIQUE (job_id, file_path)
);
CREATE INDEX documents_created_idx ON @schema@.documents (created_at);

CREATE TABLE @schema@.job_history (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id         uuid NOT NULL REFERENCES @schema@.jobs (id) ON DELETE CASCADE,
    old_data       jsonb,
    new_data       jsonb NOT NULL,
    changed_fields text[] NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_history_job_idx ON @schema@.job_history (job_id, created_at);

CREATE TABLE @schema@.user_activity (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       uuid,
    activity_type text NOT NULL,
    activity_data jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_activity_user_idx ON @schema@.user_activity (user_id, created_at DESC);
CREATE INDEX user_activity_job_idx ON @schema@.user_activity ((activity_data ->> 'job_id'));

-- Every outbox event applied, so a replay after a crash changes nothing.
CREATE TABLE @schema@.applied_events (
    event_id   uuid PRIMARY KEY,
    job_id     uuid NOT NULL,
    kind       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Row-level security: a signed-in user sees the rows of their own jobs.
-- outboxd connects as the tables' owner or a role with BYPASSRLS (see
-- 002 for the least-privilege writer role).
ALTER TABLE @schema@.jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE @schema@.documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE @schema@.job_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE @schema@.user_activity ENABLE ROW LEVEL SECURITY;
ALTER TABLE @schema@.applied_events ENABLE ROW LEVEL SECURITY;

CREATE POLICY jobs_owner_read ON @schema@.jobs
    FOR SELECT USING (user_id = auth.uid());
CREATE POLICY documents_owner_read ON @schema@.documents
    FOR SELECT USING (EXISTS (SELECT 1 FROM @schema@.jobs j
                              WHERE j.id = job_id AND j.user_id = auth.uid()));
CREATE POLICY job_history_owner_read ON @schema@.job_history
    FOR SELECT USING (EXISTS (SELECT 1 FROM @schema@.jobs j
                              WHERE j.id = job_id AND j.user_id = auth.uid()));
CREATE POLICY user_activity_owner_read ON @schema@.user_activity
    FOR SELECT USING (user_id = auth.uid());

-- Records one stored version of a file, all or nothing, exactly once:
-- creates the job when new (status processing, with a job_history row),
-- sets its platform from the first XML that tells it, upserts the
-- document, and adds one user_activity row (file_upload for the first
-- version, file_update after). A replayed event returns 'duplicate' and
-- changes nothing; a version identical to the stored one returns
-- 'unchanged' (an outbox rebuilt from disk adds no activity).
CREATE FUNCTION @schema@.outboxd_record_document(
    p_event_id uuid, p_job_id uuid, p_file_path text, p_filename text,
    p_document_type text, p_file_size bigint, p_content_type text,
    p_s3_key text, p_etag text, p_sha256 text, p_platform text,
    p_file_info jsonb, p_user_id uuid)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    v_job      @schema@.jobs;
    v_old      @schema@.jobs;
    v_created  boolean := false;
    v_inserted boolean;
    v_prev_sha text;
BEGIN
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
                jsonb_build_object('filename', v_job.filename,
                                   'platform', v_job.platform,
                                   'user_id', v_job.user_id,
                                   'status', v_job.status,
                                   'enhance_with_llm', v_job.enhance_with_llm),
                ARRAY['filename', 'platform', 'user_id', 'status',
                      'enhance_with_llm']);
    ELSIF p_platform IS NOT NULL AND p_platform <> 'unknown' THEN
        SELECT * INTO v_old FROM @schema@.jobs WHERE id = p_job_id FOR UPDATE;
        IF v_old.platform = 'unknown' THEN
            UPDATE @schema@.jobs
               SET platform = p_platform, file_info = p_file_info,
                   updated_at = now()
             WHERE id = p_job_id;
            INSERT INTO @schema@.job_history (job_id, old_data, new_data, changed_fields)
            VALUES (p_job_id,
                    jsonb_build_object('platform', v_old.platform,
                                       'file_info', v_old.file_info),
                    jsonb_build_object('platform', p_platform,
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

    INSERT INTO @schema@.user_activity (user_id, activity_type, activity_data)
    VALUES (coalesce(p_user_id,
                     (SELECT user_id FROM @schema@.jobs WHERE id = p_job_id)),
            CASE WHEN v_inserted THEN 'file_upload' ELSE 'file_update' END,
            jsonb_build_object('job_id', p_job_id, 'file_path', p_file_path,
                               'filename', p_filename, 's3_key', p_s3_key,
                               'file_size', p_file_size, 'sha256', p_sha256,
                               'event_id', p_event_id));

    IF v_created THEN
        RETURN 'job_created';
    END IF;
    RETURN CASE WHEN v_inserted THEN 'inserted' ELSE 'updated' END;
END
$$;
