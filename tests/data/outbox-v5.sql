-- An outbox made by the schema-5 release (outboxd at 1a2466c, store/outbox.c
-- through a small program): 5 entries of one job: 2 stored in S3, 1 S3
-- leg in flight, 2 never tried; entries.repair added by ALTER TABLE.
-- sqlite3 .dump; tests/t-scale.c upgrades it to schema 6.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO meta VALUES('schema_version','5');
INSERT INTO meta VALUES('created_at','2026-12-02T03:56:36.486Z');
INSERT INTO meta VALUES('uploads_checksum','sha256');
INSERT INTO meta VALUES('last_s3_done','2026-12-02T03:56:36.494Z');
CREATE TABLE entries (
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
    s3_state     TEXT NOT NULL DEFAULT 'pending'
                 CHECK (s3_state IN ('pending','in_flight','done','failed','skipped')),
    s3_attempts  INTEGER NOT NULL DEFAULT 0,
    s3_next_at   TEXT NOT NULL,             -- not tried again before this
    s3_error     TEXT,                      -- last error, or why skipped
    s3_etag      TEXT,                      -- as S3 returned it
    s3_upload_id TEXT,                      -- an unfinished multipart upload
    s3_done_at   TEXT,

    -- The database leg, same states.
    db_state     TEXT NOT NULL DEFAULT 'pending'
                 CHECK (db_state IN ('pending','in_flight','done','failed','skipped')),
    db_attempts  INTEGER NOT NULL DEFAULT 0,
    db_next_at   TEXT NOT NULL,
    db_error     TEXT,
    db_done_at   TEXT,
    db_needs_etag INTEGER NOT NULL DEFAULT 0, -- recorded before S3 answered
    seq          INTEGER NOT NULL DEFAULT 0 -- claim order across jobs (schema 4)
, repair TEXT);
INSERT INTO entries VALUES(1,'01a234e5-ab0d-7549-a154-d952dc54972b','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/doc0.xml','document',1,1000,'2025-11-24T16:00:00.000Z',1764000000000000000,42,'jobs/6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/uploads/doc0.xml','ab','2026-12-02T03:56:36.493Z','2026-12-02T03:56:36.494Z','done',1,'2026-12-02T03:56:36.494Z',NULL,'"e"',NULL,'2026-12-02T03:56:36.494Z','pending',0,'2026-12-02T03:56:36.493Z',NULL,NULL,0,1,NULL);
INSERT INTO entries VALUES(2,'01a234e5-ab0d-73ae-a7dc-d5f6ce8ba6fb','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/doc1.xml','document',1,1001,'2025-11-24T16:00:00.000Z',1764000000000000001,43,'jobs/6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/uploads/doc1.xml','ab','2026-12-02T03:56:36.493Z','2026-12-02T03:56:36.494Z','done',1,'2026-12-02T03:56:36.494Z',NULL,'"e"',NULL,'2026-12-02T03:56:36.494Z','pending',0,'2026-12-02T03:56:36.493Z',NULL,NULL,0,2,NULL);
INSERT INTO entries VALUES(3,'01a234e5-ab0d-7dd4-a87a-b0fd23bc9d10','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/doc2.xml','document',1,1002,'2025-11-24T16:00:00.000Z',1764000000000000002,44,'jobs/6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/uploads/doc2.xml',NULL,'2026-12-02T03:56:36.493Z','2026-12-02T03:56:36.493Z','in_flight',1,'2026-12-02T03:56:36.493Z',NULL,NULL,NULL,NULL,'pending',0,'2026-12-02T03:56:36.493Z',NULL,NULL,0,3,NULL);
INSERT INTO entries VALUES(4,'01a234e5-ab0d-7a72-ae7e-9e3a63fd7541','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/doc3.xml','document',1,1003,'2025-11-24T16:00:00.000Z',1764000000000000003,45,'jobs/6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/uploads/doc3.xml',NULL,'2026-12-02T03:56:36.493Z','2026-12-02T03:56:36.493Z','pending',0,'2026-12-02T03:56:36.493Z',NULL,NULL,NULL,NULL,'pending',0,'2026-12-02T03:56:36.493Z',NULL,NULL,0,4,NULL);
INSERT INTO entries VALUES(5,'01a234e5-ab0d-7a35-9909-a3d9fd5aa40a','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/doc4.xml','document',1,1004,'2025-11-24T16:00:00.000Z',1764000000000000004,46,'jobs/6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/uploads/doc4.xml',NULL,'2026-12-02T03:56:36.493Z','2026-12-02T03:56:36.493Z','pending',0,'2026-12-02T03:56:36.493Z',NULL,NULL,NULL,NULL,'pending',0,'2026-12-02T03:56:36.493Z',NULL,NULL,0,5,NULL);
CREATE TABLE files (
    path     TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode    INTEGER NOT NULL,
    versions INTEGER NOT NULL,              -- entries journaled for it
    entry_id INTEGER NOT NULL               -- the newest one
) WITHOUT ROWID;
INSERT INTO files VALUES('6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/doc0.xml',1000,1764000000000000000,42,1,1);
INSERT INTO files VALUES('6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/doc1.xml',1001,1764000000000000001,43,1,2);
INSERT INTO files VALUES('6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/doc2.xml',1002,1764000000000000002,44,1,3);
INSERT INTO files VALUES('6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/doc3.xml',1003,1764000000000000003,45,1,4);
INSERT INTO files VALUES('6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/doc4.xml',1004,1764000000000000004,46,1,5);
CREATE TABLE not_jobs (
    dir        TEXT PRIMARY KEY,
    first_seen TEXT NOT NULL,
    last_seen  TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE parts (
    entry_id    INTEGER NOT NULL,
    part_number INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    etag        TEXT NOT NULL,
    done_at     TEXT NOT NULL, md5 TEXT,
    PRIMARY KEY (entry_id, part_number)
) WITHOUT ROWID;
CREATE TABLE aborts (
    upload_id  TEXT PRIMARY KEY,
    s3_key     TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    TEXT NOT NULL,
    last_error TEXT
) WITHOUT ROWID;
CREATE TABLE counts (
    s3_state   TEXT NOT NULL,
    db_state   TEXT NOT NULL,
    needs_etag INTEGER NOT NULL,           -- entries.db_needs_etag
    n          INTEGER NOT NULL,           -- entries
    bytes_done INTEGER NOT NULL,           -- sum of size where S3 is done
    s3_retries INTEGER NOT NULL,           -- sum of max(s3_attempts - 1, 0)
    db_retries INTEGER NOT NULL,
    PRIMARY KEY (s3_state, db_state, needs_etag)
) WITHOUT ROWID;
INSERT INTO counts VALUES('done','done',0,0,0,0,0);
INSERT INTO counts VALUES('done','done',1,0,0,0,0);
INSERT INTO counts VALUES('done','failed',0,0,0,0,0);
INSERT INTO counts VALUES('done','failed',1,0,0,0,0);
INSERT INTO counts VALUES('done','in_flight',0,0,0,0,0);
INSERT INTO counts VALUES('done','in_flight',1,0,0,0,0);
INSERT INTO counts VALUES('done','pending',0,2,2001,0,0);
INSERT INTO counts VALUES('done','pending',1,0,0,0,0);
INSERT INTO counts VALUES('done','skipped',0,0,0,0,0);
INSERT INTO counts VALUES('done','skipped',1,0,0,0,0);
INSERT INTO counts VALUES('failed','done',0,0,0,0,0);
INSERT INTO counts VALUES('failed','done',1,0,0,0,0);
INSERT INTO counts VALUES('failed','failed',0,0,0,0,0);
INSERT INTO counts VALUES('failed','failed',1,0,0,0,0);
INSERT INTO counts VALUES('failed','in_flight',0,0,0,0,0);
INSERT INTO counts VALUES('failed','in_flight',1,0,0,0,0);
INSERT INTO counts VALUES('failed','pending',0,0,0,0,0);
INSERT INTO counts VALUES('failed','pending',1,0,0,0,0);
INSERT INTO counts VALUES('failed','skipped',0,0,0,0,0);
INSERT INTO counts VALUES('failed','skipped',1,0,0,0,0);
INSERT INTO counts VALUES('in_flight','done',0,0,0,0,0);
INSERT INTO counts VALUES('in_flight','done',1,0,0,0,0);
INSERT INTO counts VALUES('in_flight','failed',0,0,0,0,0);
INSERT INTO counts VALUES('in_flight','failed',1,0,0,0,0);
INSERT INTO counts VALUES('in_flight','in_flight',0,0,0,0,0);
INSERT INTO counts VALUES('in_flight','in_flight',1,0,0,0,0);
INSERT INTO counts VALUES('in_flight','pending',0,1,0,0,0);
INSERT INTO counts VALUES('in_flight','pending',1,0,0,0,0);
INSERT INTO counts VALUES('in_flight','skipped',0,0,0,0,0);
INSERT INTO counts VALUES('in_flight','skipped',1,0,0,0,0);
INSERT INTO counts VALUES('pending','done',0,0,0,0,0);
INSERT INTO counts VALUES('pending','done',1,0,0,0,0);
INSERT INTO counts VALUES('pending','failed',0,0,0,0,0);
INSERT INTO counts VALUES('pending','failed',1,0,0,0,0);
INSERT INTO counts VALUES('pending','in_flight',0,0,0,0,0);
INSERT INTO counts VALUES('pending','in_flight',1,0,0,0,0);
INSERT INTO counts VALUES('pending','pending',0,2,0,0,0);
INSERT INTO counts VALUES('pending','pending',1,0,0,0,0);
INSERT INTO counts VALUES('pending','skipped',0,0,0,0,0);
INSERT INTO counts VALUES('pending','skipped',1,0,0,0,0);
INSERT INTO counts VALUES('pruned','pruned',0,0,0,0,0);
INSERT INTO counts VALUES('skipped','done',0,0,0,0,0);
INSERT INTO counts VALUES('skipped','done',1,0,0,0,0);
INSERT INTO counts VALUES('skipped','failed',0,0,0,0,0);
INSERT INTO counts VALUES('skipped','failed',1,0,0,0,0);
INSERT INTO counts VALUES('skipped','in_flight',0,0,0,0,0);
INSERT INTO counts VALUES('skipped','in_flight',1,0,0,0,0);
INSERT INTO counts VALUES('skipped','pending',0,0,0,0,0);
INSERT INTO counts VALUES('skipped','pending',1,0,0,0,0);
INSERT INTO counts VALUES('skipped','skipped',0,0,0,0,0);
INSERT INTO counts VALUES('skipped','skipped',1,0,0,0,0);
CREATE TABLE job_seq (
    job_id   TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL              -- seq of its newest entry
) WITHOUT ROWID;
INSERT INTO job_seq VALUES('6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f',5);
CREATE TABLE claim_seq (
    leg TEXT PRIMARY KEY,                  -- 's3', 'db': the live legs
    seq INTEGER NOT NULL                   -- the highest seq it claimed
) WITHOUT ROWID;
INSERT INTO claim_seq VALUES('s3',3);
CREATE INDEX entries_path ON entries (path, id);
CREATE INDEX entries_job ON entries (job_id, id);
CREATE INDEX entries_s3_todo ON entries (s3_next_at)
    WHERE s3_state = 'pending';
CREATE INDEX entries_db_todo ON entries (db_next_at)
    WHERE db_state = 'pending';
CREATE INDEX entries_etag_due ON entries (id)
    WHERE db_needs_etag = 1 AND s3_state = 'done' AND db_state = 'done';
CREATE INDEX entries_failed ON entries (id)
    WHERE s3_state = 'failed' OR db_state = 'failed';
CREATE INDEX files_entry ON files (entry_id);
CREATE VIEW pending AS
    SELECT id, job_id, path, version, size,
           s3_state, s3_attempts, s3_next_at, s3_error,
           db_state, db_attempts, db_next_at, db_error, journaled_at
      FROM entries
     WHERE s3_state IN ('pending', 'in_flight')
        OR db_state IN ('pending', 'in_flight')
     ORDER BY id;
CREATE VIEW failed AS
    SELECT id, job_id, path, version,
           s3_state, s3_attempts, s3_error,
           db_state, db_attempts, db_error, updated_at
      FROM entries
     WHERE s3_state = 'failed' OR db_state = 'failed'
     ORDER BY id;
CREATE VIEW recent AS
    SELECT id, job_id, path, version, size, s3_state, s3_key, s3_etag,
           db_state, sha256, journaled_at, updated_at
      FROM entries
     ORDER BY updated_at DESC, id DESC
     LIMIT 100;
CREATE INDEX entries_s3_fair ON entries (seq, id)
    WHERE s3_state = 'pending';
CREATE INDEX entries_db_fair ON entries (seq, id)
    WHERE db_state = 'pending';
CREATE INDEX entries_db_ready ON entries (db_next_at)
    WHERE db_state = 'pending' AND (s3_state IN ('done', 'skipped')
        OR (s3_attempts > 0 AND s3_state IN ('pending', 'failed')));
CREATE INDEX entries_db_ready_fair ON entries (seq, id)
    WHERE db_state = 'pending' AND (s3_state IN ('done', 'skipped')
        OR (s3_attempts > 0 AND s3_state IN ('pending', 'failed')));
CREATE INDEX entries_s3_open ON entries (s3_state, id)
    WHERE s3_state IN ('pending', 'in_flight');
CREATE INDEX entries_db_open ON entries (db_state, id)
    WHERE db_state IN ('pending', 'in_flight');
CREATE INDEX entries_error ON entries (updated_at)
    WHERE (s3_state IN ('pending', 'failed') AND s3_error IS NOT NULL)
       OR (db_state IN ('pending', 'failed') AND db_error IS NOT NULL);
CREATE INDEX entries_upload ON entries (id)
    WHERE s3_upload_id IS NOT NULL;
CREATE INDEX aborts_due ON aborts (next_at);
CREATE TRIGGER entries_count_insert AFTER INSERT ON entries
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
CREATE TRIGGER entries_count_update
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
CREATE TRIGGER entries_count_delete AFTER DELETE ON entries
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
COMMIT;
