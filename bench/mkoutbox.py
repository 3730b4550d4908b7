#!/usr/bin/python3
"""mkoutbox.py - a big outbox, made fast, directly with SQLite (bench W8).

    mkoutbox.py DB ROOT [--done N] [--pending N] [--days D] [--per-job N]

DB must already carry outboxd's schema (bench/w8.sh creates it by running
`outboxd --once` on an empty tree, so the schema is the real one, upgrades
and all). Adds:

  - N done entries (default 1,000,000): both legs done, journaled evenly
    over the last D days (default 365), PER_JOB files per job (default
    500); their files are not on disk (done long ago, deleted locally
    since), their `files` rows are, as outboxd leaves them;
  - N pending entries (default 100,000) in one job (a burst after an
    outage): real 4 KiB XML files under ROOT/<job>/, journaled with their
    real stat, so the daemon's start-up rescan journals nothing again.

Prints the pending job's id on stdout. Inserts run in one transaction
with synchronous off; the triggers that keep the counts (schema 3) run
as they would for the daemon.
"""
import argparse
import hashlib
import os
import sqlite3
import sys
import time
import uuid


def iso(ms):
    t = time.gmtime(ms // 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + ".%03dZ" % (ms % 1000)


def xml_body(i):
    head = '<?xml version="1.0" encoding="UTF-8"?>\n<bench n="%07d">' % i
    return (head + "x" * (4096 - len(head) - 9) + "</bench>\n").encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("root")
    ap.add_argument("--done", type=int, default=1000000)
    ap.add_argument("--pending", type=int, default=100000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--per-job", type=int, default=500)
    a = ap.parse_args()

    db = sqlite3.connect(a.db, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    cols = [r[1] for r in db.execute("PRAGMA table_info(entries)")]
    if "event_id" not in cols:
        sys.exit("mkoutbox: %s has no outbox schema (run outboxd once)" % a.db)
    now = int(time.time() * 1000)
    span = a.days * 86400000
    db.execute("BEGIN")

    # Done: a year of files, oldest first (ids grow with time, as outboxd's).
    job = None
    ins = ("INSERT INTO entries (event_id, job_id, path, kind, version, size, "
           "mtime, mtime_ns, inode, s3_key, sha256, journaled_at, updated_at, "
           "s3_state, s3_attempts, s3_next_at, s3_etag, s3_done_at, "
           "db_state, db_attempts, db_next_at, db_done_at) VALUES "
           "(?,?,?,'document',1,4096,?,?,?,?,?,?,?,'done',1,?,?,?,'done',1,?,?)")
    fput = ("INSERT INTO files (path, size, mtime_ns, inode, versions, "
            "entry_id) VALUES (?, 4096, ?, ?, 1, last_insert_rowid())")
    for i in range(a.done):
        if i % a.per_job == 0:
            job = str(uuid.uuid4())
        t = now - span + (span - 3600000) * i // max(a.done, 1)
        path = "%s/f%06d.xml" % (job, i % a.per_job)
        ts, tdone = iso(t), iso(t + 200)
        sha = hashlib.sha256(path.encode()).hexdigest()
        db.execute(ins, (str(uuid.uuid4()), job, path, iso(t - 1000),
                         (t - 1000) * 1000000, 1000000 + i,
                         "jobs/%s/uploads/%s" % (job, path[37:]), sha, ts,
                         tdone, ts, '"%s"' % sha[:32], tdone, ts, tdone))
        db.execute(fput, (path, (t - 1000) * 1000000, 1000000 + i))

    # Pending: one job's burst, real files.
    job = str(uuid.uuid4())
    d = os.path.join(a.root, job)
    os.makedirs(d, exist_ok=True)
    old = time.time() - 10
    # seq as outboxd's journal gives it: the job's 1, 2, 3, ...
    ins = ("INSERT INTO entries (event_id, job_id, path, kind, version, size, "
           "mtime, mtime_ns, inode, s3_key, journaled_at, updated_at, "
           "s3_next_at, db_next_at, seq) "
           "VALUES (?,?,?,'document',1,?,?,?,?,?,?,?,?,?,?)")
    fput = ("INSERT INTO files (path, size, mtime_ns, inode, versions, "
            "entry_id) VALUES (?, ?, ?, ?, 1, last_insert_rowid())")
    ts = iso(now)
    for i in range(a.pending):
        name = "p%07d.xml" % i
        p = os.path.join(d, name)
        with open(p, "wb") as f:
            f.write(xml_body(i))
        os.utime(p, (old, old))
        st = os.stat(p)
        path = "%s/%s" % (job, name)
        db.execute(ins, (str(uuid.uuid4()), job, path, st.st_size,
                         iso(st.st_mtime_ns // 1000000), st.st_mtime_ns,
                         st.st_ino, "jobs/%s/uploads/%s" % (job, name), ts,
                         ts, ts, ts, i + 1))
        db.execute(fput, (path, st.st_size, st.st_mtime_ns, st.st_ino))
    db.execute("INSERT OR REPLACE INTO job_seq (job_id, last_seq) "
               "VALUES (?, ?)", (job, a.pending))
    db.execute("COMMIT")
    db.close()
    print(job)


if __name__ == "__main__":
    main()
