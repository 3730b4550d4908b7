-- The outbox: outboxd's durable journal of every finished file under the
-- uploads root, and of what each remote store has of it. Made to be read
-- by people with `sqlite3 outbox.db`: plain names, states as words, times
-- as ISO-8601 UTC text ("2026-11-28T18:54:00.123Z"), and the views
-- `pending`, `failed` and `recent` at the end.
--
-- This script is applied by outboxd at start-up inside one transaction;
-- every statement is idempotent. Schema changes add a new numbered block
-- and bump meta.schema_version; schema 4's objects are in outbox4.sql.

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per journaled version of a file. A file that changes after it
-- was journaled gets a new entry (same path, next version).
CREATE TABLE IF NOT EXISTS entries (
    id           INTEGER PRIMARY KEY,       -- what outboxctl show/retry take
    event_id     TEXT NOT NULL UNIQUE,      -- UUID (v7, time-ordered): makes
                                            -- remote effects idempotent
    job_id       TEXT NOT NULL,             -- the <job_id> directory
    path         TEXT NOT NULL,             -- relative to the uploads root
    kind         TEXT NOT NULL CHECK (kind IN ('document', 'job_meta')),
    version      INTEGER NOT NULL,          -- 1 for a path's first version
    size         INTEGER NOT NULL,          -- bytes, as journaled
    mtime        TEXT NOT NULL,             -- the file's mtime, as journaled
    mtime_ns     INTEGER NOT NULL,          -- the same in nanoseconds
    inode        INTEGER NOT NULL,
    s3_key       TEXT,                      -- jobs/<job_id>/uploads/...
    sha256       TEXT,                      -- hex, once a leg has read the file
    journaled_at TEXT NOT NULL,
    updated_at   TEXT NOT NULL,

    -- The S3 leg. States: pending, in_flight, done, failed, skipped.
    -- (Comparisons, not IN (...): SQLite builds a temporary b-tree for an
    -- IN list of more than two values each time the CHECK runs, that is
    -- with every journal insert, claim and outcome; schema 6.)
    s3_state     TEXT NOT NULL DEFAULT 'pending'
                 CONSTRAINT s3_state_known
                 CHECK (s3_state = 'pending' OR s3_state = 'in_flight' OR
                     s3_state = 'done' OR s3_state = 'failed' OR
                     s3_state = 'skipped'),
    s3_attempts  INTEGER NOT NULL DEFAULT 0,
    s3_next_at   TEXT NOT NULL,             -- not tried again before this
    s3_error     TEXT,                      -- last error, or why skipped
    s3_etag      TEXT,                      -- as S3 returned it
    s3_upload_id TEXT,                      -- an unfinished multipart upload
    s3_done_at   TEXT,

    -- The database leg, same states.
    db_state     TEXT NOT NULL DEFAULT 'pending'
                 CONSTRAINT db_state_known
                 CHECK (db_state = 'pending' OR db_state = 'in_flight' OR
                     db_state = 'done' OR db_state = 'failed' OR
                     db_state = 'skipped'),
    db_attempts  INTEGER NOT NULL DEFAULT 0,
    db_next_at   TEXT NOT NULL,
    db_error     TEXT,
    db_done_at   TEXT,
    db_needs_etag INTEGER NOT NULL DEFAULT 0, -- recorded before S3 answered
    seq          INTEGER NOT NULL DEFAULT 0 -- claim order across jobs (schema 4)
);

CREATE INDEX IF NOT EXISTS entries_path ON entries (path, id);
CREATE INDEX IF NOT EXISTS entries_job ON entries (job_id, id);
CREATE INDEX IF NOT EXISTS entries_s3_todo ON entries (s3_next_at)
    WHERE s3_state = 'pending';
CREATE INDEX IF NOT EXISTS entries_db_todo ON entries (db_next_at)
    WHERE db_state = 'pending';
CREATE INDEX IF NOT EXISTS entries_etag_due ON entries (id)
    WHERE db_needs_etag = 1 AND s3_state = 'done' AND db_state = 'done';
CREATE INDEX IF NOT EXISTS entries_failed ON entries (id)
    WHERE s3_state = 'failed' OR db_state = 'failed';

-- What was last journaled for each path, so a rescan journals only what
-- changed (by size, mtime and inode).
CREATE TABLE IF NOT EXISTS files (
    path     TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode    INTEGER NOT NULL,
    versions INTEGER NOT NULL,              -- entries journaled for it
    entry_id INTEGER NOT NULL               -- the newest one
) WITHOUT ROWID;
-- The scrub walks paths whose entries retention pruned in entry id order
-- (outbox_scrub_pruned), a range at a time.
CREATE INDEX IF NOT EXISTS files_entry ON files (entry_id);

-- Top-level directories that are not jobs (not a UUID): skipped, counted.
CREATE TABLE IF NOT EXISTS not_jobs (
    dir        TEXT PRIMARY KEY,
    first_seen TEXT NOT NULL,
    last_seen  TEXT NOT NULL
) WITHOUT ROWID;

-- Parts of unfinished multipart uploads that S3 has acknowledged, so an
-- upload interrupted by a crash resumes instead of starting over.
CREATE TABLE IF NOT EXISTS parts (
    entry_id    INTEGER NOT NULL,
    part_number INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    etag        TEXT NOT NULL,
    done_at     TEXT NOT NULL,
    PRIMARY KEY (entry_id, part_number)
) WITHOUT ROWID;

-- Multipart uploads given up on (the file changed, vanished, or the leg
-- failed): aborted in S3 so no parts are left behind, retried until S3
-- confirms.
CREATE TABLE IF NOT EXISTS aborts (
    upload_id  TEXT PRIMARY KEY,
    s3_key     TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    TEXT NOT NULL,
    last_error TEXT
) WITHOUT ROWID;

CREATE VIEW IF NOT EXISTS pending AS
    SELECT id, job_id, path, version, size,
           s3_state, s3_attempts, s3_next_at, s3_error,
           db_state, db_attempts, db_next_at, db_error, journaled_at
      FROM entries
     WHERE s3_state IN ('pending', 'in_flight')
        OR db_state IN ('pending', 'in_flight')
     ORDER BY id;

CREATE VIEW IF NOT EXISTS failed AS
    SELECT id, job_id, path, version,
           s3_state, s3_attempts, s3_error,
           db_state, db_attempts, db_error, updated_at
      FROM entries
     WHERE s3_state = 'failed' OR db_state = 'failed'
     ORDER BY id;

CREATE VIEW IF NOT EXISTS recent AS
    SELECT id, job_id, path, version, size, s3_state, s3_key, s3_etag,
           db_state, sha256, journaled_at, updated_at
      FROM entries
     ORDER BY updated_at DESC, id DESC
     LIMIT 100;

INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');
INSERT OR IGNORE INTO meta (key, value)
    VALUES ('created_at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
