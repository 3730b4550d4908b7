-- 003_record_once: outboxd_record_document takes a transaction-level
-- lock on the (job, path) it records, so two outboxd instances over one
-- shared uploads folder (each with its own outbox) recording the same
-- version at the same moment add one activity, not two; and its
-- search_path is pinned. The body is otherwise 001's.

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
    PERFORM pg_advisory_xact_lock(hashtextextended(
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
