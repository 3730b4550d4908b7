BEGIN TRANSACTION;
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO meta VALUES('schema_version','2');
INSERT INTO meta VALUES('created_at','2026-12-01T11:35:00.219Z');
INSERT INTO meta VALUES('s3_leg','off');
INSERT INTO meta VALUES('db_leg','off');
CREATE TABLE entries (
    id           INTEGER PRIMARY KEY,       -- what outboxctl show/retry take
    event_id     TEXT NOT NULL UNIQUE,      -- UUID: makes remote effects idempotent
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
    db_needs_etag INTEGER NOT NULL DEFAULT 0 -- recorded before S3 answered
);
INSERT INTO entries VALUES(1,'3a30f1d9-c06e-4e1e-bce7-ddc7d1419e21','0b1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f','0b1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/a.txt','document',1,2,'2026-12-01T11:34:00.170Z',1796124840170048736,11002436,'jobs/0b1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/uploads/a.txt',NULL,'2026-12-01T11:35:00.226Z','2026-12-01T11:35:00.226Z','done',2,'2026-12-01T11:35:00.226Z',NULL,'"e"',NULL,'2026-12-01T11:35:00.226Z','done',1,'2026-12-01T11:35:00.226Z',NULL,'2026-12-01T11:35:00.226Z',0);
INSERT INTO entries VALUES(2,'67db6889-3f32-4db5-9e94-fa0171d8f1db','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/f4.xml','document',1,11,'2026-12-01T11:34:00.170Z',1796124840170048736,11002372,'jobs/6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/uploads/f4.xml',NULL,'2026-12-01T11:35:00.227Z','2026-12-01T11:35:00.227Z','done',2,'2026-12-01T11:35:00.227Z',NULL,'"e"',NULL,'2026-12-01T11:35:00.227Z','done',1,'2026-12-01T11:35:00.227Z',NULL,'2026-12-01T11:35:00.227Z',0);
INSERT INTO entries VALUES(3,'e2d09d2d-6d85-4c56-9721-23ccd9142dd9','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/f1.xml','document',1,11,'2026-12-01T11:34:00.170Z',1796124840170048736,11002309,'jobs/6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/uploads/f1.xml',NULL,'2026-12-01T11:35:00.227Z','2026-12-01T11:35:00.227Z','done',2,'2026-12-01T11:35:00.227Z',NULL,'"e"',NULL,'2026-12-01T11:35:00.227Z','done',1,'2026-12-01T11:35:00.227Z',NULL,'2026-12-01T11:35:00.227Z',0);
INSERT INTO entries VALUES(4,'2116bab9-d123-45eb-8740-37853d2fc53e','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/f5.xml','document',1,11,'2026-12-01T11:34:00.170Z',1796124840170048736,11002388,'jobs/6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/uploads/f5.xml',NULL,'2026-12-01T11:35:00.227Z','2026-12-01T11:35:00.227Z','failed',1,'2026-12-01T11:35:00.227Z','403 AccessDenied',NULL,NULL,NULL,'pending',0,'2026-12-01T11:35:00.227Z',NULL,NULL,0);
INSERT INTO entries VALUES(5,'b13dc03b-c86e-4326-b80a-4b2e6992fc1e','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/f3.xml','document',1,11,'2026-12-01T11:34:00.170Z',1796124840170048736,11002340,'jobs/6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/uploads/f3.xml',NULL,'2026-12-01T11:35:00.227Z','2026-12-01T11:35:00.227Z','pending',0,'2026-12-01T11:35:00.227Z',NULL,NULL,NULL,NULL,'in_flight',1,'2026-12-01T11:35:00.227Z',NULL,NULL,0);
INSERT INTO entries VALUES(6,'a764e7b6-ab7a-4ebc-9c51-f58c8217aea2','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/f2.xml','document',1,11,'2026-12-01T11:34:00.170Z',1796124840170048736,11002324,'jobs/6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/uploads/f2.xml',NULL,'2026-12-01T11:35:00.227Z','2026-12-01T11:35:00.227Z','pending',0,'2026-12-01T11:35:00.227Z',NULL,NULL,NULL,NULL,'done',1,'2026-12-01T11:35:00.227Z',NULL,NULL,1);
INSERT INTO entries VALUES(7,'ddac66ad-cb0c-4464-9a49-8492f36d4ef1','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/f6.xml','document',1,11,'2026-12-01T11:34:00.170Z',1796124840170048736,11002404,'jobs/6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/uploads/f6.xml',NULL,'2026-12-01T11:35:00.227Z','2026-12-01T11:35:00.227Z','pending',0,'2026-12-01T11:35:00.227Z',NULL,NULL,NULL,NULL,'pending',0,'2026-12-01T11:35:00.227Z',NULL,NULL,0);
INSERT INTO entries VALUES(8,'2243a7c0-8732-4068-b167-5cad14216bff','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f','6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/docs/n.md','document',1,6,'2026-12-01T11:34:00.170Z',1796124840170048736,11002420,'jobs/6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/uploads/docs/n.md',NULL,'2026-12-01T11:35:00.227Z','2026-12-01T11:35:00.227Z','pending',0,'2026-12-01T11:35:00.227Z',NULL,NULL,NULL,NULL,'pending',0,'2026-12-01T11:35:00.227Z',NULL,NULL,0);
CREATE TABLE files (
    path     TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode    INTEGER NOT NULL,
    versions INTEGER NOT NULL,              -- entries journaled for it
    entry_id INTEGER NOT NULL               -- the newest one
) WITHOUT ROWID;
INSERT INTO files VALUES('0b1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/a.txt',2,1796124840170048736,11002436,1,1);
INSERT INTO files VALUES('6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/docs/n.md',6,1796124840170048736,11002420,1,8);
INSERT INTO files VALUES('6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/f1.xml',11,1796124840170048736,11002309,1,3);
INSERT INTO files VALUES('6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/f2.xml',11,1796124840170048736,11002324,1,6);
INSERT INTO files VALUES('6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/f3.xml',11,1796124840170048736,11002340,1,5);
INSERT INTO files VALUES('6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/f4.xml',11,1796124840170048736,11002372,1,2);
INSERT INTO files VALUES('6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/f5.xml',11,1796124840170048736,11002388,1,4);
INSERT INTO files VALUES('6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f/f6.xml',11,1796124840170048736,11002404,1,7);
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
CREATE INDEX entries_path ON entries (path, id);
CREATE INDEX entries_job ON entries (job_id, id);
CREATE INDEX entries_s3_todo ON entries (s3_next_at)
    WHERE s3_state = 'pending';
CREATE INDEX entries_db_todo ON entries (db_next_at)
    WHERE db_state = 'pending';
CREATE INDEX entries_etag_todo ON entries (id)
    WHERE db_needs_etag = 1;
CREATE INDEX entries_failed ON entries (id)
    WHERE s3_state = 'failed' OR db_state = 'failed';
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
COMMIT;
