-- Schema 5 (issue 11, CPU per file): the triggers that keep the counts
-- table (outbox4.sql), applied after outbox4.sql, every statement
-- idempotent. store/outbox.c replaces schema 4's triggers of the same
-- names with these once (upgrade_triggers), and writes the newest done
-- times (meta last_s3_done, last_db_done) itself, once a transaction.
--
-- Where SQLite has the pre-update hook, outboxd's own connections turn
-- these triggers off and keep the same counts in C, written once per
-- bucket at COMMIT (store/outbox.c, "The counts, kept in C"); the
-- triggers keep them for every other connection (an admin's sqlite3, an
-- earlier release). Both do the same arithmetic.
--
-- Why they look as they do: SQLite gives a statement that fires a trigger
-- a statement journal (a copy of every page it changes, to undo the
-- statement alone) when anything in it may ABORT. An upsert's DO UPDATE
-- always may, and so does a call of max() or min(); a plain UPDATE of a
-- row that exists, with CASE for the arithmetic, does not, when the
-- statement that fires it says OR FAIL (outbox.c's per-file statements
-- do: on any error their caller rolls the whole transaction back). That
-- journal was a third of the outbox's CPU per file. So every bucket of
-- counts exists from the start (zero rows count nothing), and the bodies
-- below only add to and take from them.

-- Schema 4 kept the newest done times by triggers; outbox.c writes them
-- now. (Dropped at every open, in case a release before schema 5 ran on
-- this outbox since and made them again.)
DROP TRIGGER IF EXISTS entries_s3_done_at;
DROP TRIGGER IF EXISTS entries_db_done_at;

INSERT OR IGNORE INTO counts
    SELECT s3.v, db.v, etag.v, 0, 0, 0, 0
      FROM (SELECT 'pending' AS v UNION ALL SELECT 'in_flight'
            UNION ALL SELECT 'done' UNION ALL SELECT 'failed'
            UNION ALL SELECT 'skipped') AS s3,
           (SELECT 'pending' AS v UNION ALL SELECT 'in_flight'
            UNION ALL SELECT 'done' UNION ALL SELECT 'failed'
            UNION ALL SELECT 'skipped') AS db,
           (SELECT 0 AS v UNION ALL SELECT 1) AS etag;
INSERT OR IGNORE INTO counts VALUES ('pruned', 'pruned', 0, 0, 0, 0, 0);

CREATE TRIGGER IF NOT EXISTS entries_count_insert AFTER INSERT ON entries
BEGIN
    UPDATE counts SET n = n + 1,
        bytes_done = bytes_done +
            CASE WHEN NEW.s3_state = 'done' THEN NEW.size ELSE 0 END,
        s3_retries = s3_retries + CASE WHEN NEW.s3_attempts > 1
            THEN NEW.s3_attempts - 1 ELSE 0 END,
        db_retries = db_retries + CASE WHEN NEW.db_attempts > 1
            THEN NEW.db_attempts - 1 ELSE 0 END
    WHERE s3_state = NEW.s3_state AND db_state = NEW.db_state
        AND needs_etag = NEW.db_needs_etag;
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
        s3_retries = s3_retries - CASE WHEN OLD.s3_attempts > 1
            THEN OLD.s3_attempts - 1 ELSE 0 END,
        db_retries = db_retries - CASE WHEN OLD.db_attempts > 1
            THEN OLD.db_attempts - 1 ELSE 0 END
    WHERE s3_state = OLD.s3_state AND db_state = OLD.db_state
        AND needs_etag = OLD.db_needs_etag;
    UPDATE counts SET n = n + 1,
        bytes_done = bytes_done +
            CASE WHEN NEW.s3_state = 'done' THEN NEW.size ELSE 0 END,
        s3_retries = s3_retries + CASE WHEN NEW.s3_attempts > 1
            THEN NEW.s3_attempts - 1 ELSE 0 END,
        db_retries = db_retries + CASE WHEN NEW.db_attempts > 1
            THEN NEW.db_attempts - 1 ELSE 0 END
    WHERE s3_state = NEW.s3_state AND db_state = NEW.db_state
        AND needs_etag = NEW.db_needs_etag;
END;

-- Only retention deletes entries: what it deleted moves to 'pruned', so
-- the uploaded bytes and the retries stay counters that never go back.
CREATE TRIGGER IF NOT EXISTS entries_count_delete AFTER DELETE ON entries
BEGIN
    UPDATE counts SET n = n - 1,
        bytes_done = bytes_done -
            CASE WHEN OLD.s3_state = 'done' THEN OLD.size ELSE 0 END,
        s3_retries = s3_retries - CASE WHEN OLD.s3_attempts > 1
            THEN OLD.s3_attempts - 1 ELSE 0 END,
        db_retries = db_retries - CASE WHEN OLD.db_attempts > 1
            THEN OLD.db_attempts - 1 ELSE 0 END
    WHERE s3_state = OLD.s3_state AND db_state = OLD.db_state
        AND needs_etag = OLD.db_needs_etag;
    UPDATE counts SET n = n + 1,
        bytes_done = bytes_done +
            CASE WHEN OLD.s3_state = 'done' THEN OLD.size ELSE 0 END,
        s3_retries = s3_retries + CASE WHEN OLD.s3_attempts > 1
            THEN OLD.s3_attempts - 1 ELSE 0 END,
        db_retries = db_retries + CASE WHEN OLD.db_attempts > 1
            THEN OLD.db_attempts - 1 ELSE 0 END
    WHERE s3_state = 'pruned' AND db_state = 'pruned' AND needs_etag = 0;
END;
