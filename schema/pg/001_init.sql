-- 001_init: the IS-Migration app's tables in schema @schema@, and what
-- outboxd needs to record into them exactly once.
--
-- Applied by `outboxctl migrate` (and by outboxd at start-up when
-- OUTBOXD_DB_MIGRATE=1) inside one transaction, with search_path pinned
-- to pg_catalog, pg_temp; schema_migrations remembers it. @schema@ is
-- replaced by OUTBOXD_DB_SCHEMA (default is_migration). Runs the same on
-- Supabase and on plain PostgreSQL 15.
--
-- The app's own schema may have made these tables already (with the
-- columns the app inserts). They are adopted, rows and all: what outboxd
-- needs is added, what would make them unusable is named in one error
-- before anything changes. Every statement is idempotent, so this file
-- also completes when run again over its own objects (an interrupted
-- run, a schema_migrations row deleted, a policy dropped by hand).

-- What cannot be adopted, all of it in one error, before any change.
DO $$
DECLARE
    v_schema  oid := pg_catalog.to_regnamespace('@schema@');
    v_problem text[] := '{}';
    r         record;
BEGIN
    -- Not tables: a view or foreign table of one of these names.
    FOR r IN
        SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
         WHERE c.relnamespace = v_schema AND c.relkind NOT IN ('r', 'p')
           AND c.relname IN ('jobs', 'documents', 'job_history',
                             'user_activity', 'applied_events')
    LOOP
        v_problem := v_problem || pg_catalog.format('%s is not a table (relkind %s)',
                                                    r.relname, r.relkind);
    END LOOP;

    -- Columns outboxd reads or writes, where they exist, and the types it
    -- can work with.
    FOR r IN
        SELECT w.tbl, w.col, w.types,
               pg_catalog.format_type(a.atttypid, NULL) AS have
          FROM (VALUES
            ('jobs', 'id', '{uuid}'),
            ('jobs', 'filename', '{text,"character varying"}'),
            ('jobs', 'platform', '{text,"character varying"}'),
            ('jobs', 'user_id', '{uuid}'),
            ('jobs', 'status', '{text,"character varying"}'),
            ('jobs', 'enhance_with_llm', '{boolean}'),
            ('jobs', 'file_info', '{jsonb}'),
            ('jobs', 'created_at', '{"timestamp with time zone","timestamp without time zone"}'),
            ('jobs', 'updated_at', '{"timestamp with time zone","timestamp without time zone"}'),
            ('documents', 'job_id', '{uuid}'),
            ('documents', 'filename', '{text,"character varying"}'),
            ('documents', 'document_type', '{text,"character varying"}'),
            ('documents', 'file_path', '{text,"character varying"}'),
            ('documents', 'file_size', '{bigint,integer,numeric}'),
            ('documents', 'content_type', '{text,"character varying"}'),
            ('documents', 's3_key', '{text,"character varying"}'),
            ('documents', 'etag', '{text,"character varying"}'),
            ('documents', 'sha256', '{text,"character varying"}'),
            ('documents', 'created_at', '{"timestamp with time zone","timestamp without time zone"}'),
            ('documents', 'updated_at', '{"timestamp with time zone","timestamp without time zone"}'),
            ('job_history', 'job_id', '{uuid}'),
            ('job_history', 'old_data', '{jsonb}'),
            ('job_history', 'new_data', '{jsonb}'),
            ('job_history', 'changed_fields', '{"text[]","character varying[]"}'),
            ('user_activity', 'user_id', '{uuid}'),
            ('user_activity', 'activity_type', '{text,"character varying"}'),
            ('user_activity', 'activity_data', '{jsonb}'),
            ('applied_events', 'event_id', '{uuid}'),
            ('applied_events', 'job_id', '{uuid}'),
            ('applied_events', 'kind', '{text,"character varying"}')
          ) AS w (tbl, col, types)
          JOIN pg_catalog.pg_class c
            ON c.relnamespace = v_schema AND c.relname = w.tbl
          JOIN pg_catalog.pg_attribute a
            ON a.attrelid = c.oid AND a.attname = w.col AND NOT a.attisdropped
         WHERE NOT pg_catalog.format_type(a.atttypid, NULL) = ANY (w.types::text[])
    LOOP
        v_problem := v_problem || pg_catalog.format('%s.%s is %s, outboxd needs %s',
            r.tbl, r.col, r.have, pg_catalog.array_to_string(r.types::text[], ' or '));
    END LOOP;

    -- A NOT NULL column without a default that outboxd may leave NULL
    -- (s3_key and etag stay NULL until S3 has the version) would make
    -- its inserts fail.
    FOR r IN
        SELECT c.relname, a.attname FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
         WHERE c.relnamespace = v_schema AND a.attnum > 0
           AND NOT a.attisdropped AND a.attnotnull AND NOT a.atthasdef
           AND a.attidentity = '' AND a.attgenerated = ''
           AND (c.relname, a.attname) NOT IN (
               ('jobs', 'id'), ('jobs', 'filename'), ('jobs', 'platform'),
               ('jobs', 'user_id'), ('jobs', 'status'),
               ('jobs', 'file_info'),
               ('documents', 'job_id'), ('documents', 'filename'),
               ('documents', 'document_type'), ('documents', 'file_path'),
               ('documents', 'file_size'), ('documents', 'content_type'),
               ('documents', 'sha256'),
               ('job_history', 'job_id'), ('job_history', 'old_data'),
               ('job_history', 'new_data'), ('job_history', 'changed_fields'),
               ('user_activity', 'user_id'), ('user_activity', 'activity_type'),
               ('user_activity', 'activity_data'),
               ('applied_events', 'event_id'), ('applied_events', 'job_id'),
               ('applied_events', 'kind'))
           AND c.relname IN ('jobs', 'documents', 'job_history',
                             'user_activity', 'applied_events')
    LOOP
        v_problem := v_problem || pg_catalog.format('%s.%s is NOT NULL without a default, and outboxd may leave it NULL',
                                                    r.relname, r.attname);
    END LOOP;

    -- outboxd upserts by jobs.id and by documents (job_id, file_path):
    -- where no unique index holds them yet, one is made below, which the
    -- rows must allow.
    IF pg_catalog.to_regclass('@schema@.jobs') IS NOT NULL THEN
        FOR r IN EXECUTE
            'SELECT count(*) AS n FROM (SELECT id FROM @schema@.jobs
              GROUP BY id HAVING count(*) > 1 OR id IS NULL) d'
        LOOP
            IF r.n > 0 THEN
                v_problem := v_problem || pg_catalog.format('jobs has %s id values that are NULL or on more than one row', r.n);
            END IF;
        END LOOP;
    END IF;
    IF pg_catalog.to_regclass('@schema@.documents') IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                    WHERE attrelid = pg_catalog.to_regclass('@schema@.documents')
                      AND attname IN ('job_id', 'file_path')
                      AND NOT attisdropped HAVING count(*) = 2) THEN
        FOR r IN EXECUTE
            'SELECT count(*) AS n FROM (SELECT 1 FROM @schema@.documents
              GROUP BY job_id, file_path HAVING count(*) > 1) d'
        LOOP
            IF r.n > 0 THEN
                v_problem := v_problem || pg_catalog.format('documents has %s (job_id, file_path) pairs on more than one row: outboxd keeps one row per file', r.n);
            END IF;
        END LOOP;
    END IF;

    IF pg_catalog.cardinality(v_problem) > 0 THEN
        RAISE EXCEPTION 'cannot adopt the existing tables of schema @schema@ (nothing was changed): %',
            pg_catalog.array_to_string(v_problem, '; ')
            USING HINT = 'change these columns or rows, then run outboxctl migrate again';
    END IF;
END
$$;

-- Supabase provides auth.uid() (the signed-in user). Elsewhere a stand-in
-- reads the JWT claims the same way Supabase's own does: PostgREST 9 and
-- later set request.jwt.claims (JSON), older ones request.jwt.claim.sub.
DO $$
BEGIN
    IF pg_catalog.to_regprocedure('auth.uid()') IS NULL THEN
        CREATE SCHEMA IF NOT EXISTS auth;
        CREATE FUNCTION auth.uid() RETURNS uuid
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

CREATE TABLE IF NOT EXISTS @schema@.jobs (
    id               uuid PRIMARY KEY,
    filename         text,
    platform         text NOT NULL DEFAULT 'unknown',
    user_id          uuid,
    status           text NOT NULL DEFAULT 'processing',
    enhance_with_llm boolean NOT NULL DEFAULT false,
    file_info        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- An adopted table gets what it lacks; on a new one these change nothing.
ALTER TABLE @schema@.jobs
    ADD COLUMN IF NOT EXISTS filename         text,
    ADD COLUMN IF NOT EXISTS platform         text NOT NULL DEFAULT 'unknown',
    ADD COLUMN IF NOT EXISTS user_id          uuid,
    ADD COLUMN IF NOT EXISTS status           text NOT NULL DEFAULT 'processing',
    ADD COLUMN IF NOT EXISTS enhance_with_llm boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS file_info        jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN IF NOT EXISTS created_at       timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS updated_at       timestamptz NOT NULL DEFAULT now();

CREATE TABLE IF NOT EXISTS @schema@.documents (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id        uuid NOT NULL,
    filename      text NOT NULL,
    document_type text NOT NULL,
    file_path     text NOT NULL,   -- relative to the job's directory
    file_size     bigint NOT NULL,
    content_type  text,
    s3_key        text,
    etag          text,
    sha256        text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE @schema@.documents
    ADD COLUMN IF NOT EXISTS id            uuid DEFAULT gen_random_uuid(),
    ADD COLUMN IF NOT EXISTS filename      text,
    ADD COLUMN IF NOT EXISTS document_type text,
    ADD COLUMN IF NOT EXISTS file_path     text,
    ADD COLUMN IF NOT EXISTS file_size     bigint,
    ADD COLUMN IF NOT EXISTS content_type  text,
    ADD COLUMN IF NOT EXISTS s3_key        text,
    ADD COLUMN IF NOT EXISTS etag          text,
    ADD COLUMN IF NOT EXISTS sha256        text,
    ADD COLUMN IF NOT EXISTS created_at    timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS updated_at    timestamptz NOT NULL DEFAULT now();

CREATE TABLE IF NOT EXISTS @schema@.job_history (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id         uuid NOT NULL,
    old_data       jsonb,
    new_data       jsonb NOT NULL,
    changed_fields text[] NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE @schema@.job_history
    ADD COLUMN IF NOT EXISTS id             uuid DEFAULT gen_random_uuid(),
    ADD COLUMN IF NOT EXISTS old_data       jsonb,
    ADD COLUMN IF NOT EXISTS new_data       jsonb,
    ADD COLUMN IF NOT EXISTS changed_fields text[],
    ADD COLUMN IF NOT EXISTS created_at     timestamptz NOT NULL DEFAULT now();

CREATE TABLE IF NOT EXISTS @schema@.user_activity (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       uuid,
    activity_type text NOT NULL,
    activity_data jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE @schema@.user_activity
    ADD COLUMN IF NOT EXISTS id            uuid DEFAULT gen_random_uuid(),
    ADD COLUMN IF NOT EXISTS user_id       uuid,
    ADD COLUMN IF NOT EXISTS activity_type text,
    ADD COLUMN IF NOT EXISTS activity_data jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN IF NOT EXISTS created_at    timestamptz NOT NULL DEFAULT now();

-- Every outbox event applied, so a replay after a crash changes nothing.
CREATE TABLE IF NOT EXISTS @schema@.applied_events (
    event_id   uuid PRIMARY KEY,
    job_id     uuid NOT NULL,
    kind       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- The keys outboxd upserts by, where no unique index holds them yet (the
-- rows were checked above).
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM (VALUES
        ('jobs', 'jobs_id_key', 'UNIQUE (id)', '{id}'),
        ('documents', 'documents_job_path_key', 'UNIQUE (job_id, file_path)', '{job_id,file_path}'))
        AS t (tbl, name, def, cols)
    LOOP
        IF NOT EXISTS (
            SELECT 1 FROM pg_catalog.pg_index i
             WHERE i.indrelid = pg_catalog.to_regclass('@schema@.' || r.tbl)
               AND i.indisunique AND i.indpred IS NULL
               AND (SELECT pg_catalog.array_agg(a.attname::text ORDER BY a.attname)
                      FROM pg_catalog.pg_attribute a
                     WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey))
                   = (SELECT pg_catalog.array_agg(c ORDER BY c) FROM pg_catalog.unnest(r.cols::text[]) c)
               AND i.indnatts = pg_catalog.cardinality(r.cols::text[])) THEN
            EXECUTE pg_catalog.format('ALTER TABLE @schema@.%I ADD CONSTRAINT %I %s',
                                      r.tbl, r.name, r.def);
        END IF;
    END LOOP;
END
$$;

-- Constraints existing rows might violate: added NOT VALID (new rows are
-- checked from now on), then validated; where old rows violate one it
-- stays NOT VALID with a warning naming it, and outboxctl doctor reports
-- it until the rows are fixed and it is validated.
DO $$
DECLARE
    r     record;
    v_rel regclass;
BEGIN
    FOR r IN SELECT * FROM (VALUES
        ('jobs', 'jobs_status_check', 'c',
         'CHECK (status IN (''processing'', ''queued'', ''documentation_ready'', ''completed'', ''failed''))'),
        ('documents', 'documents_type_check', 'c',
         'CHECK (document_type IN (''result'', ''documentation'', ''integration'', ''other''))'),
        ('documents', 'documents_sha256_check', 'c',
         'CHECK (sha256 ~ ''^[0-9a-f]{64}$'')'),
        ('documents', 'documents_job_id_fkey', 'f',
         'FOREIGN KEY (job_id) REFERENCES @schema@.jobs (id) ON DELETE CASCADE'),
        ('job_history', 'job_history_job_id_fkey', 'f',
         'FOREIGN KEY (job_id) REFERENCES @schema@.jobs (id) ON DELETE CASCADE'))
        AS t (tbl, name, kind, def)
    LOOP
        v_rel := pg_catalog.to_regclass('@schema@.' || r.tbl);
        -- The app's own foreign key to jobs does the same job as ours.
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                        WHERE conrelid = v_rel
                          AND (conname = r.name OR (r.kind = 'f' AND contype = 'f'
                               AND confrelid = '@schema@.jobs'::regclass))) THEN
            EXECUTE pg_catalog.format('ALTER TABLE @schema@.%I ADD CONSTRAINT %I %s NOT VALID',
                                      r.tbl, r.name, r.def);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                    WHERE conrelid = v_rel AND conname = r.name
                      AND NOT convalidated) THEN
            BEGIN
                EXECUTE pg_catalog.format('ALTER TABLE @schema@.%I VALIDATE CONSTRAINT %I',
                                          r.tbl, r.name);
            EXCEPTION WHEN check_violation OR foreign_key_violation THEN
                RAISE WARNING 'constraint %.% stays NOT VALID: existing rows violate it (%); new rows are checked. Fix those rows, then: ALTER TABLE @schema@.% VALIDATE CONSTRAINT %',
                    r.tbl, r.name, SQLERRM, r.tbl, r.name;
            END;
        END IF;
    END LOOP;
END
$$;

CREATE INDEX IF NOT EXISTS jobs_user_id_idx ON @schema@.jobs (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS jobs_status_idx ON @schema@.jobs (status);
CREATE INDEX IF NOT EXISTS documents_created_idx ON @schema@.documents (created_at);
CREATE INDEX IF NOT EXISTS job_history_job_idx ON @schema@.job_history (job_id, created_at);
CREATE INDEX IF NOT EXISTS user_activity_user_idx ON @schema@.user_activity (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS user_activity_job_idx ON @schema@.user_activity ((activity_data ->> 'job_id'));

-- Row-level security: a signed-in user sees the rows of their own jobs.
-- outboxd connects as the tables' owner or a role with BYPASSRLS (see
-- 002 for the least-privilege writer role). applied_events has no policy
-- for anyone but that writer.
ALTER TABLE @schema@.jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE @schema@.documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE @schema@.job_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE @schema@.user_activity ENABLE ROW LEVEL SECURITY;
ALTER TABLE @schema@.applied_events ENABLE ROW LEVEL SECURITY;

-- Dropped and made again: a policy changed by hand is put right.
DROP POLICY IF EXISTS jobs_owner_read ON @schema@.jobs;
CREATE POLICY jobs_owner_read ON @schema@.jobs
    FOR SELECT USING (user_id = auth.uid());
DROP POLICY IF EXISTS documents_owner_read ON @schema@.documents;
CREATE POLICY documents_owner_read ON @schema@.documents
    FOR SELECT USING (EXISTS (SELECT 1 FROM @schema@.jobs j
                              WHERE j.id = job_id AND j.user_id = auth.uid()));
DROP POLICY IF EXISTS job_history_owner_read ON @schema@.job_history;
CREATE POLICY job_history_owner_read ON @schema@.job_history
    FOR SELECT USING (EXISTS (SELECT 1 FROM @schema@.jobs j
                              WHERE j.id = job_id AND j.user_id = auth.uid()));
DROP POLICY IF EXISTS user_activity_owner_read ON @schema@.user_activity;
CREATE POLICY user_activity_owner_read ON @schema@.user_activity
    FOR SELECT USING (user_id = auth.uid());

-- Records one stored version of a file, all or nothing, exactly once:
-- creates the job when new (status processing, with a job_history row),
-- sets its platform from the first XML that tells it, upserts the
-- document, and adds one user_activity row (file_upload for the first
-- version, file_update after). A replayed event returns 'duplicate' and
-- changes nothing; a version identical to the stored one returns
-- 'unchanged' (an outbox rebuilt from disk adds no activity).
-- (003 and 005 replace it; this first version is kept for the upgrade
-- path's sake, with its search_path pinned like every function here.)
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
        IF v_old.platform = 'unknown' THEN
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

    INSERT INTO @schema@.user_activity (user_id, activity_type, activity_data)
    VALUES (coalesce(p_user_id,
                     (SELECT user_id FROM @schema@.jobs WHERE id = p_job_id)),
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
