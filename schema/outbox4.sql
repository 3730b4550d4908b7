-- Schema 4 (issue 11): the outbox at scale. Applied after outbox.sql and
-- the column upgrades of store/outbox.c (entries.seq), every statement
-- idempotent. Nothing the sync thread runs per turn, and nothing status
-- or the metrics read, scans the entries table: see the indexes below
-- and the counts kept by triggers.

-- Entries per (S3 state, database state, waiting for an ETag), kept by
-- the triggers of outbox5.sql in the same transaction as every change of
-- a leg, so status and the metrics read a few dozen rows, not a million.
-- The row ('pruned', 'pruned', 0) sums what retention (OUTBOXD_RETENTION)
-- deleted.
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

-- The triggers that keep the counts are in outbox5.sql (schema 5): the
-- same names, cheaper bodies.

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
