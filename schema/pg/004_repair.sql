-- 004_repair: outboxd_repair_document puts back a document row that a
-- store lost or altered after the fact (found by `outboxctl verify
-- --repair` or outboxd's scrub). It records like outboxd_record_document
-- (exactly once per outbox event, the job created when it is gone too)
-- but adds no user_activity row: a repair is not the user's doing. It
-- leaves the job's platform as it is. Idempotent: CREATE OR REPLACE, and
-- the grant only where the writer role exists.

CREATE OR REPLACE FUNCTION @schema@.outboxd_repair_document(
    p_event_id uuid, p_job_id uuid, p_file_path text, p_filename text,
    p_document_type text, p_file_size bigint, p_content_type text,
    p_s3_key text, p_etag text, p_sha256 text, p_platform text,
    p_file_info jsonb, p_user_id uuid)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job     @schema@.jobs;
    v_created boolean := false;
    v_doc     @schema@.documents;
BEGIN
    -- The same lock as outboxd_record_document: one version of one path
    -- at a time, whoever records it.
    PERFORM pg_advisory_xact_lock(hashtextextended(
        'outboxd:' || p_job_id::text || '/' || p_file_path, 0));

    INSERT INTO @schema@.applied_events (event_id, job_id, kind)
    VALUES (p_event_id, p_job_id, 'repair')
    ON CONFLICT (event_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'duplicate';
    END IF;

    -- A restore that lost the row may have lost its job as well.
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
    END IF;

    SELECT * INTO v_doc FROM @schema@.documents
     WHERE job_id = p_job_id AND file_path = p_file_path FOR UPDATE;
    IF FOUND AND v_doc.sha256 = p_sha256 AND v_doc.file_size = p_file_size
       AND v_doc.etag IS NOT DISTINCT FROM coalesce(p_etag, v_doc.etag)
       AND v_doc.s3_key IS NOT DISTINCT FROM coalesce(p_s3_key, v_doc.s3_key) THEN
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
           updated_at = now();

    IF v_created THEN
        RETURN 'job_created';
    END IF;
    RETURN 'repaired';
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outboxd_writer') THEN
        GRANT EXECUTE ON FUNCTION @schema@.outboxd_repair_document(uuid,
            uuid, text, text, text, bigint, text, text, text, text, text,
            jsonb, uuid) TO outboxd_writer;
    END IF;
END
$$;
