-- Schema 4 (issue 11): the outbox at scale. Applied after outbox.sql and
-- the column upgrades of store/outbox.c (entries.seq), every statement
-- idempotent. Nothing the sync thread runs per turn, and nothing status
-- or the metrics read, scans the entries table: see the indexes below
-- and the counts kept by triggers.

-- Entries per (S3 state, database state, waiting for an ETag), kept by
-- the triggers below in the same transaction as every change of a leg, so
-- status and the metrics read a few dozen rows, not a million. The row
-- ('pruned', 'pruned', 0) sums what retention (OUTBOXD_RETENTION) deleted.
CREATE TABLE IF NOT EXISTS counts (
    s3_state   TEXT NOT NULL,
    db_state   TEXT NOT NULL,
    needs_etag INTEGER NOT NULL,           -- entries.db_needs_etag
    n          INTEGER NOT NULL,           -- entries
    bytes_done INTEGER NOT NULL,           -- sum of size where S3 is done
    s3_retries INTEGER NOT NULL,           -- sum of max(s3_attempts - 1, 0)
    db_retries INTEGER NOT NULL,
    PRIMARY KEY (s3_state, db_state, needs_etag)
) WITHOUT ROWID;

CREATE TRIGGER IF NOT EXISTS entries_count_insert AFTER INSERT ON entries
BEGIN
    INSERT INTO counts VALUES (NEW.s3_state, NEW.db_state, NEW.db_needs_etag,
        1, CASE WHEN NEW.s3_state = 'done' THEN NEW.size ELSE 0 END,
        max(NEW.s3_attempts - 1, 0), max(NEW.db_attempts - 1, 0))
    ON CONFLICT (s3_state, db_state, needs_etag) DO UPDATE SET
        n = n + excluded.n, bytes_done = bytes_done + excluded.bytes_done,
        s3_retries = s3_retries + excluded.s3_retries,
        db_retries = db_retries + excluded.db_retries;
END;

CREATE TRIGGER IF NOT EXISTS entries_count_update
AFTER UPDATE OF s3_state, db_state, db_needs_etag, s3_attempts, db_attempts,
    size ON entries
WHEN OLD.s3_state IS NOT NEW.s3_state OR OLD.db_state IS NOT NEW.db_state
    OR OLD.db_needs_etag IS NOT NEW.db_needs_etag
    OR OLD.s3_attempts IS NOT NEW.s3_attempts
    OR OLD.db_attempts IS NOT NEW.db_attempts OR OLD.size IS NOT NEW.size
BEGIN
    UPDATE counts SET n = n - 1,
        bytes_done = bytes_done -
            CASE WHEN OLD.s3_state = 'done' THEN OLD.size ELSE 0 END,
        s3_retries = s3_retries - max(OLD.s3_attempts - 1, 0),
        db_retries = db_retries - max(OLD.db_attempts - 1, 0)
    WHERE s3_state = OLD.s3_state AND db_state = OLD.db_state
        AND needs_etag = OLD.db_needs_etag;
    INSERT INTO counts VALUES (NEW.s3_state, NEW.db_state, NEW.db_needs_etag,
        1, CASE WHEN NEW.s3_state = 'done' THEN NEW.size ELSE 0 END,
        max(NEW.s3_attempts - 1, 0), max(NEW.db_attempts - 1, 0))
    ON CONFLICT (s3_state, db_state, needs_etag) DO UPDATE SET
        n = n + excluded.n, bytes_done = bytes_done + excluded.bytes_done,
        s3_retries = s3_retries + excluded.s3_retries,
        db_retries = db_retries + excluded.db_retries;
END;

-- Only retention deletes entries: what it deleted moves to 'pruned', so
-- the uploaded bytes and the retries stay counters that never go back.
CREATE TRIGGER IF NOT EXISTS entries_count_delete AFTER DELETE ON entries
BEGIN
    UPDATE counts SET n = n - 1,
        bytes_done = bytes_done -
            CASE WHEN OLD.s3_state = 'done' THEN OLD.size ELSE 0 END,
        s3_retries = s3_retries - max(OLD.s3_attempts - 1, 0),
        db_retries = db_retries - max(OLD.db_attempts - 1, 0)
    WHERE s3_state = OLD.s3_state AND db_state = OLD.db_state
        AND needs_etag = OLD.db_needs_etag;
    INSERT INTO counts VALUES ('pruned', 'pruned', 0, 1,
        CASE WHEN OLD.s3_state = 'done' THEN OLD.size ELSE 0 END,
        max(OLD.s3_attempts - 1, 0), max(OLD.db_attempts - 1, 0))
    ON CONFLICT (s3_state, db_state, needs_etag) DO UPDATE SET
        n = n + excluded.n, bytes_done = bytes_done + excluded.bytes_done,
        s3_retries = s3_retries + excluded.s3_retries,
        db_retries = db_retries + excluded.db_retries;
END;

-- The newest time each leg stored something, for the metrics.
CREATE TRIGGER IF NOT EXISTS entries_s3_done_at AFTER UPDATE OF s3_done_at
ON entries WHEN NEW.s3_done_at IS NOT NULL
BEGIN
    INSERT INTO meta (key, value) VALUES ('last_s3_done', NEW.s3_done_at)
    ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value);
END;
CREATE TRIGGER IF NOT EXISTS entries_db_done_at AFTER UPDATE OF db_done_at
ON entries WHEN NEW.db_done_at IS NOT NULL
BEGIN
    INSERT INTO meta (key, value) VALUES ('last_db_done', NEW.db_done_at)
    ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value);
END;

-- Fair claims across jobs: each entry gets a sequence number, its job's
-- previous one + 1 but never below the frontier the legs have claimed up
-- to (claim_seq), and legs are claimed in (seq, id) order. A job's burst
-- of a million files takes seq F+1 .. F+1,000,000; a file of another job
-- journaled meanwhile takes about the frontier, so it is claimed within a
-- turn or two instead of after the burst.
CREATE TABLE IF NOT EXISTS job_seq (
    job_id   TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL              -- seq of its newest entry
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS claim_seq (
    leg TEXT PRIMARY KEY,                  -- 's3', 'db': the live legs
    seq INTEGER NOT NULL                   -- the highest seq it claimed
) WITHOUT ROWID;

-- Claims, in fair order; the database leg's "ready" set is the entries
-- whose S3 leg is decided or has been tried (see outbox_claim).
CREATE INDEX IF NOT EXISTS entries_s3_fair ON entries (seq, id)
    WHERE s3_state = 'pending';
CREATE INDEX IF NOT EXISTS entries_db_fair ON entries (seq, id)
    WHERE db_state = 'pending';
CREATE INDEX IF NOT EXISTS entries_db_ready ON entries (db_next_at)
    WHERE db_state = 'pending' AND (s3_state IN ('done', 'skipped')
        OR (s3_attempts > 0 AND s3_state IN ('pending', 'failed')));
CREATE INDEX IF NOT EXISTS entries_db_ready_fair ON entries (seq, id)
    WHERE db_state = 'pending' AND (s3_state IN ('done', 'skipped')
        OR (s3_attempts > 0 AND s3_state IN ('pending', 'failed')));
-- Legs still to do, by state then age: the oldest pending entry, and the
-- legs left in flight that start-up recovery moves.
CREATE INDEX IF NOT EXISTS entries_s3_open ON entries (s3_state, id)
    WHERE s3_state IN ('pending', 'in_flight');
CREATE INDEX IF NOT EXISTS entries_db_open ON entries (db_state, id)
    WHERE db_state IN ('pending', 'in_flight');
-- The last error of a leg not done yet.
CREATE INDEX IF NOT EXISTS entries_error ON entries (updated_at)
    WHERE (s3_state IN ('pending', 'failed') AND s3_error IS NOT NULL)
       OR (db_state IN ('pending', 'failed') AND db_error IS NOT NULL);
-- Entries holding a multipart upload.
CREATE INDEX IF NOT EXISTS entries_upload ON entries (id)
    WHERE s3_upload_id IS NOT NULL;
-- Replaced by entries_etag_due (outbox.sql): during an S3 outage every
-- row may wait for its ETag, and the old index held them all.
DROP INDEX IF EXISTS entries_etag_todo;
-- Multipart aborts due (read every turn).
CREATE INDEX IF NOT EXISTS aborts_due ON aborts (next_at);
