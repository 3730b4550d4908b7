/*
 * outbox.c - the SQLite outbox (see outbox.h and schema/outbox.sql).
 *
 * All SQL text lives in the table below, prepared once per connection and
 * reset after each use. Times are written by C as ISO-8601 UTC with
 * milliseconds, so comparisons of *_next_at are plain string comparisons
 * that the partial indexes serve.
 *
 * The statements run per file (journal, claim, outcome) say OR FAIL:
 * their callers roll the whole transaction back on any error, so they
 * need no statement journal to undo them alone, and with the triggers of
 * schema/outbox5.sql SQLite then keeps none (see there; it was a third
 * of the outbox's CPU per file). Where SQLite has the pre-update hook,
 * this connection keeps the counts in C instead of by those triggers
 * ("The counts, kept in C" below).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/file.h>
#include <unistd.h>

#ifdef HAVE_SQLITE3_PREUPDATE_HOOK
#define SQLITE_ENABLE_PREUPDATE_HOOK 1	/* sqlite3.h declares it then */
#endif
#include <sqlite3.h>

#include "base/keymap.h"
#include "base/log.h"
#include "schema/sql.h"
#include "store/outbox.h"

#define OUTBOX_BUSY_MS 10000

enum stmt_id {
	ST_FILE_GET,
	ST_ENTRY_INSERT,
	ST_FILE_PUT,
	ST_SUPERSEDE_S3,
	ST_SUPERSEDE_DB,
	ST_NOT_JOB,
	ST_CLAIM_S3,
	ST_CLAIM_DB,
	ST_MARK_S3,
	ST_MARK_DB,
	ST_FINISH_S3,
	ST_FINISH_DB,
	ST_UPLOAD_ID,
	ST_ETAG_TODO,
	ST_ETAG_DONE,
	ST_NEXT_S3,
	ST_NEXT_DB,
	ST_LAST_S3,
	ST_LAST_DB,
	ST_NEXT_DB_ALL,
	ST_LAST_DB_ALL,
	ST_CLAIM_DB_ALL,
	ST_DUE_NOW_S3,
	ST_DUE_NOW_DB,
	ST_CLAIMED_UPTO,
	ST_JOB_SEQ_GET,
	ST_JOB_SEQ_PUT,
	ST_PRUNE_PARTS,
	ST_PRUNE_ENTRY,
	ST_ABORT_SKIPPED,
	ST_CLEAR_SKIPPED,
	ST_LEG_NOW,
	ST_FORGET_STAT,
	ST_ABORT_ENTRY,
	ST_CLEAR_ENTRY,
	ST_PARTS_CLEAR,
	ST_COUNT
};

/* The newest entry journaled for the row's path. */
#define NEWEST_OF_PATH "(SELECT entry_id FROM files f WHERE f.path = entries.path)"

#define ENTRY_COLUMNS \
	"id, event_id, job_id, path, s3_key, kind, version, size, mtime_ns, " \
	"inode, coalesce(sha256, ''), s3_etag, s3_state, db_state, " \
	"s3_attempts, db_attempts, s3_upload_id, repair IS NOT NULL, seq, " \
	"db_needs_etag"

/* The database leg's "ready" set: the S3 leg is decided, or has been
 * tried (a database leg does not wait for a failing S3). Spelled as in
 * the partial indexes entries_db_ready*, so SQLite can use them. */
#define DB_READY \
	"db_state = 'pending' AND (s3_state IN ('done', 'skipped') " \
	"OR (s3_attempts > 0 AND s3_state IN ('pending', 'failed')))"

static int run(struct outbox *o, const char *sql, const char *fmt,
    struct err *e, ...);
#ifdef HAVE_SQLITE3_PREUPDATE_HOOK
static int counts_hook_on(struct outbox *o, struct err *e);
#endif

static const char *const stmt_sql[ST_COUNT] = {
	[ST_FILE_GET] =
	    "SELECT size, mtime_ns, inode, versions FROM files WHERE path = ?1",
	[ST_ENTRY_INSERT] =
	    "INSERT OR FAIL INTO entries (event_id, job_id, path, kind, version, "
	    "  size, mtime, mtime_ns, inode, s3_key, journaled_at, updated_at, "
	    "  s3_state, s3_error, s3_next_at, db_state, db_error, db_next_at, "
	    "  seq) "
	    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, "
	    "  ?12, ?13, ?16, ?14, ?15, ?16, ?17)",
	[ST_FILE_PUT] =
	    "INSERT INTO files (path, size, mtime_ns, inode, versions, entry_id) "
	    "VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
	    "ON CONFLICT (path) DO UPDATE SET size = excluded.size, "
	    "  mtime_ns = excluded.mtime_ns, inode = excluded.inode, "
	    "  versions = excluded.versions, entry_id = excluded.entry_id",
	/* legstate.h's "superseded" rule, from state ?4 to ?5. */
	[ST_SUPERSEDE_S3] =
	    "UPDATE entries SET s3_state = ?5, updated_at = ?3, "
	    "  s3_error = 'superseded by entry ' || ?2 || ' (a newer version)' "
	    "WHERE path = ?1 AND id < ?2 AND s3_state = ?4",
	[ST_SUPERSEDE_DB] =
	    "UPDATE entries SET db_state = ?5, updated_at = ?3, "
	    "  db_error = 'superseded by entry ' || ?2 || ' (a newer version)' "
	    "WHERE path = ?1 AND id < ?2 AND db_state = ?4",
	[ST_NOT_JOB] =
	    "INSERT INTO not_jobs (dir, first_seen, last_seen) VALUES (?1, ?2, ?2) "
	    "ON CONFLICT (dir) DO UPDATE SET last_seen = excluded.last_seen",
	/* Claims go in fair order (seq, id; see schema/outbox4.sql) through
	 * the index that has it, skipping the few legs still backing off. */
	[ST_CLAIM_S3] =
	    "SELECT " ENTRY_COLUMNS " FROM entries INDEXED BY entries_s3_fair "
	    "WHERE s3_state = 'pending' AND s3_next_at <= ?1 "
	    "  AND id = " NEWEST_OF_PATH " "
	    "ORDER BY seq, id LIMIT ?2",
	[ST_CLAIM_DB] =
	    "SELECT " ENTRY_COLUMNS " FROM entries "
	    "  INDEXED BY entries_db_ready_fair "
	    "WHERE " DB_READY " AND db_next_at <= ?1 "
	    "  AND id = " NEWEST_OF_PATH " "
	    "ORDER BY seq, id LIMIT ?2",
	[ST_CLAIM_DB_ALL] =
	    "SELECT " ENTRY_COLUMNS " FROM entries INDEXED BY entries_db_fair "
	    "WHERE db_state = 'pending' AND db_next_at <= ?1 "
	    "  AND id = " NEWEST_OF_PATH " "
	    "ORDER BY seq, id LIMIT ?2",
	/* A next attempt beyond any backoff means the wall clock was set
	 * back: such legs are due now (a range of the next-attempt index). */
	[ST_DUE_NOW_S3] =
	    "UPDATE entries SET s3_next_at = ?1 "
	    "WHERE s3_state = 'pending' AND s3_next_at > ?2",
	[ST_DUE_NOW_DB] =
	    "UPDATE entries SET db_next_at = ?1 "
	    "WHERE db_state = 'pending' AND db_next_at > ?2",
	[ST_CLAIMED_UPTO] =
	    "INSERT INTO claim_seq (leg, seq) VALUES (?1, ?2) "
	    "ON CONFLICT (leg) DO UPDATE SET seq = max(seq, excluded.seq)",
	/* The new entry's seq: its job's last + 1, but not below the lowest
	 * frontier of the live legs (a job quiet for long starts there). */
	[ST_JOB_SEQ_GET] =
	    "SELECT max(coalesce((SELECT last_seq FROM job_seq "
	    "  WHERE job_id = ?1), 0) + 1, "
	    "  coalesce((SELECT min(seq) FROM claim_seq), 0))",
	/* Retention deletes an entry and its parts (outbox_prune). */
	[ST_PRUNE_PARTS] = "DELETE FROM parts WHERE entry_id = ?1",
	[ST_PRUNE_ENTRY] = "DELETE FROM entries WHERE id = ?1",
	[ST_JOB_SEQ_PUT] =
	    "INSERT INTO job_seq (job_id, last_seq) VALUES (?1, ?2) "
	    "ON CONFLICT (job_id) DO UPDATE SET last_seq = excluded.last_seq",
	/* legstate.h's "claim" rule: from ?3 to ?4. */
	[ST_MARK_S3] =
	    "UPDATE OR FAIL entries SET s3_state = ?4, "
	    "  s3_attempts = s3_attempts + 1, updated_at = ?2 "
	    "WHERE id = ?1 AND s3_state = ?3",
	[ST_MARK_DB] =
	    "UPDATE OR FAIL entries SET db_state = ?4, "
	    "  db_attempts = db_attempts + 1, updated_at = ?2 "
	    "WHERE id = ?1 AND db_state = ?3",
	/* A transition of legstate.h's table: ?2 the new state, ?3 the
	 * error (kept when NULL unless done), ?4 next attempt, ?5 1 to
	 * count an attempt, ?6 the ETag (S3) or 1 to back-fill it (db), ?7
	 * SHA-256, ?8 now. */
	[ST_FINISH_S3] =
	    "UPDATE OR FAIL entries SET s3_state = ?2, "
	    "  s3_error = CASE WHEN ?2 = 'done' THEN NULL "
	    "             ELSE coalesce(?3, s3_error) END, s3_next_at = ?4, "
	    "  s3_attempts = s3_attempts + ?5, "
	    "  s3_etag = coalesce(?6, s3_etag), sha256 = coalesce(?7, sha256), "
	    "  s3_done_at = CASE WHEN ?2 = 'done' THEN ?8 ELSE s3_done_at END, "
	    "  s3_upload_id = CASE WHEN ?2 = 'done' THEN NULL "
	    "                 ELSE s3_upload_id END, "
	    "  updated_at = ?8 "
	    "WHERE id = ?1",
	[ST_FINISH_DB] =
	    "UPDATE OR FAIL entries SET db_state = ?2, "
	    "  db_error = CASE WHEN ?2 = 'done' THEN NULL "
	    "             ELSE coalesce(?3, db_error) END, db_next_at = ?4, "
	    "  db_attempts = db_attempts + ?5, "
	    "  sha256 = coalesce(?7, sha256), "
	    "  db_needs_etag = CASE WHEN ?2 = 'done' THEN ?6 "
	    "                  ELSE db_needs_etag END, "
	    "  db_done_at = CASE WHEN ?2 = 'done' THEN ?8 ELSE db_done_at END, "
	    "  updated_at = ?8 "
	    "WHERE id = ?1",
	[ST_LEG_NOW] =
	    "SELECT s3_state, db_state, id = " NEWEST_OF_PATH ", path, "
	    "  db_needs_etag, s3_attempts, db_attempts, size "
	    "FROM entries WHERE id = ?1",
	[ST_FORGET_STAT] =
	    "UPDATE files SET size = -1 WHERE path = ?1 AND entry_id = ?2",
	[ST_ABORT_ENTRY] =
	    "INSERT OR IGNORE INTO aborts (upload_id, s3_key, reason, "
	    "  created_at, next_at) "
	    "SELECT s3_upload_id, s3_key, ?2, ?3, ?3 FROM entries "
	    "WHERE id = ?1 AND s3_upload_id IS NOT NULL",
	[ST_CLEAR_ENTRY] =
	    "UPDATE entries SET s3_upload_id = NULL WHERE id = ?1",
	[ST_PARTS_CLEAR] =
	    "DELETE FROM parts WHERE entry_id = ?1",
	[ST_UPLOAD_ID] =
	    "UPDATE entries SET s3_upload_id = ?2 WHERE id = ?1",
	[ST_ETAG_TODO] =
	    "SELECT " ENTRY_COLUMNS " FROM entries "
	    "WHERE db_needs_etag = 1 AND s3_state = 'done' AND db_state = 'done' "
	    "ORDER BY id LIMIT ?1",
	[ST_ETAG_DONE] =
	    "UPDATE OR FAIL entries SET db_needs_etag = 0 WHERE id = ?1",
	/* ORDER BY ... LIMIT 1 walks the partial index and stops at the
	 * first row that qualifies; min() would visit them all. */
	[ST_NEXT_S3] =
	    "SELECT s3_next_at FROM entries WHERE s3_state = 'pending' "
	    "ORDER BY s3_next_at LIMIT 1",
	[ST_LAST_S3] =
	    "SELECT s3_next_at FROM entries WHERE s3_state = 'pending' "
	    "ORDER BY s3_next_at DESC LIMIT 1",
	[ST_NEXT_DB] =
	    "SELECT db_next_at FROM entries WHERE " DB_READY " "
	    "ORDER BY db_next_at LIMIT 1",
	[ST_NEXT_DB_ALL] =
	    "SELECT db_next_at FROM entries WHERE db_state = 'pending' "
	    "ORDER BY db_next_at LIMIT 1",
	[ST_LAST_DB_ALL] =
	    "SELECT db_next_at FROM entries WHERE db_state = 'pending' "
	    "ORDER BY db_next_at DESC LIMIT 1",
	/* Multipart uploads of versions no longer wanted go to the abort
	 * queue, so their parts do not stay in S3. */
	[ST_ABORT_SKIPPED] =
	    "INSERT OR IGNORE INTO aborts (upload_id, s3_key, reason, "
	    "  created_at, next_at) "
	    "SELECT s3_upload_id, s3_key, 'superseded by a newer version', ?2, ?2 "
	    "FROM entries WHERE path = ?1 AND s3_state = 'skipped' "
	    "  AND s3_upload_id IS NOT NULL",
	[ST_CLEAR_SKIPPED] =
	    "UPDATE entries SET s3_upload_id = NULL WHERE path = ?1 "
	    "  AND s3_state = 'skipped' AND s3_upload_id IS NOT NULL",
	[ST_LAST_DB] =
	    "SELECT db_next_at FROM entries WHERE " DB_READY " "
	    "ORDER BY db_next_at DESC LIMIT 1",
};

/* Statements prepared where they run (rarely, or on read-only
 * connections), named so outbox_explain can show their plans. */
static const char sql_etag_due[] =
    "SELECT 1 FROM entries WHERE db_needs_etag = 1 AND s3_state = 'done' "
    "AND db_state = 'done' LIMIT 1";
static const char sql_abort_due[] =
    "SELECT upload_id, s3_key, attempts FROM aborts WHERE next_at <= ?1 "
    "ORDER BY next_at LIMIT ?2";
static const char sql_prune_walk[] =
    "SELECT id, journaled_at, s3_state, db_state, db_needs_etag, updated_at "
    "FROM entries WHERE id > ?1 AND id < (SELECT max(id) FROM entries) "
    "ORDER BY id LIMIT ?2";
/* The redundant IN term lets SQLite use the partial entries_*_open. */
static const char *const sql_oldest[2] = {
	"SELECT id, journaled_at FROM entries WHERE s3_state IN "
	"('pending', 'in_flight') AND s3_state = ?1 ORDER BY id LIMIT 1",
	"SELECT id, journaled_at FROM entries WHERE db_state IN "
	"('pending', 'in_flight') AND db_state = ?1 ORDER BY id LIMIT 1",
};
static const char sql_last_error[] =
    "SELECT CASE WHEN s3_state IN ('pending', 'failed') "
    "  AND s3_error IS NOT NULL THEN 's3: ' || s3_error "
    "  ELSE 'database: ' || db_error END, updated_at FROM entries "
    "WHERE (s3_state IN ('pending', 'failed') AND s3_error IS NOT NULL) "
    "   OR (db_state IN ('pending', 'failed') AND db_error IS NOT NULL) "
    "ORDER BY updated_at DESC LIMIT 1";
static const char sql_counts_kept[] =
    "SELECT s3_state, db_state, needs_etag, n, bytes_done, s3_retries, "
    "db_retries FROM counts";
static const char sql_last_done[] =
    "SELECT (SELECT count(*) FROM not_jobs), "
    " (SELECT value FROM meta WHERE key = 'last_s3_done'), "
    " (SELECT value FROM meta WHERE key = 'last_db_done')";

/*
 * The counts, kept in C (issue 11). The triggers of schema/outbox5.sql
 * cost two UPDATEs of counts for every change of a row of entries: a
 * third of a claim's time. Where SQLite has its pre-update hook, an
 * outbox connection that writes turns its triggers off and sums the same
 * changes (counts_hook) into one delta per bucket of the counts table,
 * written at COMMIT (counts_flush): one UPDATE per bucket a transaction
 * touched. Other connections (an admin's sqlite3, an earlier release)
 * keep the triggers, which keep the same numbers.
 *
 * A savepoint keeps the deltas it began with, for its rollback. Where the
 * deltas might not match what SQLite kept (a statement failed inside the
 * transaction, or entries changed outside outbox_begin), the commit
 * counts afresh instead (counts_recount).
 */
enum { CC_S3_STATE, CC_DB_STATE, CC_NEEDS_ETAG, CC_S3_ATTEMPTS,
	CC_DB_ATTEMPTS, CC_SIZE, CC_N };
/* Buckets: (s3 state, db state, needs_etag), then the pruned row. */
#define CB_PRUNED (OUTBOX_NSTATES * OUTBOX_NSTATES * 2)
#define CB_N (CB_PRUNED + 1)
#define OUTBOX_NEST 8		/* savepoints the deltas can undo */

struct cdelta {
	int64_t n, bytes_done, s3_retries, db_retries;
};
struct cacc {
	uint64_t touched;		/* bit b: bucket b has a delta */
	struct cdelta b[CB_N];
};

/* Slots of struct outbox's named[]. */
enum { NAMED_BEGIN, NAMED_COMMIT, NAMED_SAVEPOINT, NAMED_RELEASE,
	NAMED_ETAG_DUE, NAMED_ABORT_DUE, NAMED_LAST_DONE, NAMED_COUNTS_ADD,
	NAMED_COUNT };

struct outbox {
	sqlite3 *db;			/* this thread's connection */
	sqlite3_stmt *st[ST_COUNT];	/* prepared lazily, reset after use */
	char *path;			/* the database file */
	int lock_fd;			/* the held lock file, or -1 */
	int depth;			/* nested outbox_begin calls */
	int64_t horizon_ms;		/* a next attempt later than now + this
					   means the clock was set back */
	sqlite3_stmt *named[NAMED_COUNT];	/* statements run every turn
					   outside stmt_sql, prepared once */
	char done_at[2][32];		/* per leg, the newest done the open
					   transaction recorded, or "" */
	char done_save[4][2][32];	/* done_at when savepoint sN began
					   (N = 1..4), for its rollback */
	/* The last job_seq written in the open transaction (job_seq_put):
	 * a batch of one job's files reads and writes its row once, not
	 * once a file. SEQ_DIRTY: not written to job_seq yet. */
	enum { SEQ_NONE, SEQ_CLEAN, SEQ_DIRTY } seq_state;
	char seq_job[40];
	int64_t seq_last;
	/* The counts kept in C (see "The counts, kept in C"). */
	int counts_by_hook;		/* 1: the hook, triggers off */
	int ccol[CC_N];			/* counted_column[]'s indexes */
	int crecount;			/* count afresh at COMMIT */
	int cstray;			/* entries changed outside outbox_begin */
	int crecounted;			/* this commit counted afresh */
	long cstray_seen;		/* how often (outbox_counts_stray) */
	struct cacc cacc;		/* the open transaction's deltas */
	struct cacc csave[OUTBOX_NEST];	/* cacc when savepoint sN began */
};

static void
db_err(struct outbox *o, struct err *e, const char *what)
{
	int code = sqlite3_extended_errcode(o->db);
	/* A full disk or an I/O error is not something a retry fixes soon,
	 * but it is not the file's fault either: the caller pauses. */
	enum err_class cls = (code == SQLITE_BUSY || code == SQLITE_LOCKED ||
	    (code & 0xff) == SQLITE_FULL) ? ERR_TRANSIENT : ERR_FATAL;

	err_set(e, cls, "outbox %s: %s: %s", o->path, what,
	    sqlite3_errmsg(o->db));
	/* The statement may have changed rows before it failed, and SQLite
	 * may or may not have undone them: the deltas cannot tell. */
	if (!sqlite3_get_autocommit(o->db))
		o->crecount = 1;
}

static sqlite3_stmt *
stmt(struct outbox *o, enum stmt_id id, struct err *e)
{
	if (o->st[id] == NULL &&
	    sqlite3_prepare_v3(o->db, stmt_sql[id], -1,
	    SQLITE_PREPARE_PERSISTENT, &o->st[id], NULL) != SQLITE_OK) {
		db_err(o, e, "preparing a statement");
		return NULL;
	}
	return o->st[id];
}

/* A statement of named[] (sql is always the same for a slot). */
static sqlite3_stmt *
named_stmt(struct outbox *o, int slot, const char *sql)
{
	if (o->named[slot] == NULL)
		sqlite3_prepare_v3(o->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
		    &o->named[slot], NULL);
	return o->named[slot];
}

/* Runs a statement of named[] that returns no rows; SQLITE_DONE or the
 * error. */
static int
named_run(struct outbox *o, int slot, const char *sql)
{
	sqlite3_stmt *s = named_stmt(o, slot, sql);
	int rc;

	if (s == NULL)
		return sqlite3_errcode(o->db);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

static void
done_with(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

static void
now_iso(char *out)
{
	time_iso8601(time_now_ms(), out, 32);
}

static int
exec(struct outbox *o, const char *sql, struct err *e)
{
	char *msg = NULL;

	if (sqlite3_exec(o->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		err_set(e, ERR_FATAL, "outbox %s: %s", o->path,
		    msg ? msg : sqlite3_errmsg(o->db));
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

/* 1 when table has column, 0 when not, -1 with e. */
static int
has_column(struct outbox *o, const char *table, const char *column,
    struct err *e)
{
	sqlite3_stmt *s = NULL;
	int has = 0;

	if (sqlite3_prepare_v2(o->db, "SELECT count(*) FROM pragma_table_info("
	    "?1) WHERE name = ?2", -1, &s, NULL) != SQLITE_OK) {
		db_err(o, e, "reading the schema");
		return -1;
	}
	sqlite3_bind_text(s, 1, table, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, column, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW)
		has = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	return has;
}

/*
 * Columns added since schema 1; ALTER TABLE is not idempotent, so each
 * runs only where its column is missing. Schema 2: parts.md5, the MD5 of
 * each part as sent, so a resumed upload keeps a part whose ETag is no
 * MD5 (SSE-KMS). Schema 4: entries.seq, the fair claim order (0 for the
 * entries journaled before: they go first).
 */
static int
upgrade_columns(struct outbox *o, struct err *e)
{
	int has;

	if ((has = has_column(o, "parts", "md5", e)) < 0)
		return -1;
	if (!has && exec(o, "ALTER TABLE parts ADD COLUMN md5 TEXT; "
	    "UPDATE meta SET value = '2' WHERE key = 'schema_version'", e) < 0)
		return -1;
	if ((has = has_column(o, "entries", "seq", e)) < 0)
		return -1;
	if (!has && exec(o, "ALTER TABLE entries ADD COLUMN seq INTEGER NOT "
	    "NULL DEFAULT 0", e) < 0)
		return -1;
	/* entries.repair: why a repair (outboxctl verify --repair, the
	 * scrub) journaled the entry; NULL for the user's own versions. */
	if ((has = has_column(o, "entries", "repair", e)) < 0)
		return -1;
	if (!has && exec(o, "ALTER TABLE entries ADD COLUMN repair TEXT", e) < 0)
		return -1;
	return 0;
}

/* What counts a full scan of entries gives, in the shape of the counts
 * table (schema/outbox4.sql): for upgrading and for checking it. */
#define FULL_COUNT \
	"SELECT s3_state, db_state, db_needs_etag, count(*), " \
	"  sum(CASE WHEN s3_state = 'done' THEN size ELSE 0 END), " \
	"  sum(max(s3_attempts - 1, 0)), sum(max(db_attempts - 1, 0)) " \
	"FROM entries GROUP BY s3_state, db_state, db_needs_etag"
/* Every bucket of counts, at zero where there is none yet. */
#define COUNTS_GRID \
	"INSERT OR IGNORE INTO counts SELECT s3.v, db.v, etag.v, 0, 0, 0, 0 " \
	"FROM (SELECT 'pending' AS v UNION ALL SELECT 'in_flight' " \
	"  UNION ALL SELECT 'done' UNION ALL SELECT 'failed' " \
	"  UNION ALL SELECT 'skipped') AS s3, " \
	" (SELECT 'pending' AS v UNION ALL SELECT 'in_flight' " \
	"  UNION ALL SELECT 'done' UNION ALL SELECT 'failed' " \
	"  UNION ALL SELECT 'skipped') AS db, " \
	" (SELECT 0 AS v UNION ALL SELECT 1) AS etag; " \
	"INSERT OR IGNORE INTO counts VALUES ('pruned', 'pruned', 0, 0, 0, 0, 0)"

/*
 * Schema 4: the counts the triggers keep start from one full count, and
 * the newest done times from one scan; the entries still to do get their
 * job's sequence (1, 2, ... by id within the job), so a backlog left by
 * an earlier release is claimed fairly too. All once, when an outbox
 * from an earlier release is first opened.
 */
static int
upgrade_counts(struct outbox *o, struct err *e)
{
	char *v = outbox_meta_get(o, "schema_version");
	int old = v == NULL || atoi(v) < 4;

	free(v);
	if (!old)
		return 0;
	return exec(o, "DELETE FROM counts; INSERT INTO counts " FULL_COUNT "; "
	    "INSERT OR REPLACE INTO meta (key, value) SELECT 'last_s3_done', "
	    "  max(s3_done_at) FROM entries HAVING max(s3_done_at) NOT NULL; "
	    "INSERT OR REPLACE INTO meta (key, value) SELECT 'last_db_done', "
	    "  max(db_done_at) FROM entries HAVING max(db_done_at) NOT NULL; "
	    "WITH r AS (SELECT id, row_number() OVER (PARTITION BY job_id "
	    "  ORDER BY id) AS rn FROM entries WHERE s3_state IN ('pending', "
	    "  'in_flight') OR db_state IN ('pending', 'in_flight')) "
	    "UPDATE entries SET seq = r.rn FROM r WHERE entries.id = r.id; "
	    "INSERT OR REPLACE INTO job_seq (job_id, last_seq) "
	    "  SELECT job_id, max(seq) FROM entries WHERE seq > 0 "
	    "  GROUP BY job_id; "
	    "UPDATE meta SET value = '4' WHERE key = 'schema_version'", e);
}

/*
 * Schema 5: schema 4's triggers that keep the counts are replaced, once,
 * by outbox5.sql's of the same names (the script makes them only where
 * none exist). A release before schema 5 that opens the outbox later
 * finds them and keeps them: they keep the same counts.
 */
static int
upgrade_triggers(struct outbox *o, struct err *e)
{
	const struct sql_file *f;
	char *v = outbox_meta_get(o, "schema_version");
	int old = v == NULL || atoi(v) < 5;

	free(v);
	if (!old)
		return 0;
	if (exec(o, "DROP TRIGGER IF EXISTS entries_count_insert; "
	    "DROP TRIGGER IF EXISTS entries_count_update; "
	    "DROP TRIGGER IF EXISTS entries_count_delete", e) < 0)
		return -1;
	for (f = outbox_schema_sql; f->name != NULL; f++)
		if (strcmp(f->name, "outbox5.sql") == 0 && exec(o, f->text, e) < 0)
			return -1;
	return exec(o, "UPDATE meta SET value = '5' WHERE key = "
	    "'schema_version'", e);
}

/*
 * Since issue 14 every UploadPart carries x-amz-checksum-sha256 and
 * Complete lists each part's, which S3 refuses for an upload created
 * without x-amz-checksum-algorithm (400 InvalidRequest, "Checksum Type
 * mismatch"): a permanent failure. The multipart uploads an earlier
 * release left open were created so. Once, at the first open by this
 * release, they are queued for abort and forgotten with their parts, so
 * each entry starts a new upload at its next attempt (meta
 * uploads_checksum records that it ran; a new outbox has nothing to do).
 */
static int
upgrade_uploads(struct outbox *o, struct err *e)
{
	char *v = outbox_meta_get(o, "uploads_checksum");
	char now[32];
	sqlite3_stmt *s;
	int rc;

	free(v);
	if (v != NULL)
		return 0;
	now_iso(now);
	if (sqlite3_prepare_v2(o->db, "INSERT OR IGNORE INTO aborts (upload_id, "
	    "s3_key, reason, created_at, next_at) SELECT s3_upload_id, s3_key, "
	    "'created by an earlier release, without checksums', ?1, ?1 FROM "
	    "entries WHERE s3_upload_id IS NOT NULL", -1, &s, NULL) != SQLITE_OK) {
		db_err(o, e, "queueing earlier releases' uploads for abort");
		return -1;
	}
	sqlite3_bind_text(s, 1, now, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE) {
		db_err(o, e, "queueing earlier releases' uploads for abort");
		return -1;
	}
	return exec(o, "DELETE FROM parts WHERE entry_id IN (SELECT id FROM "
	    "entries WHERE s3_upload_id IS NOT NULL); UPDATE entries SET "
	    "s3_upload_id = NULL WHERE s3_upload_id IS NOT NULL; INSERT OR "
	    "REPLACE INTO meta (key, value) VALUES ('uploads_checksum', "
	    "'sha256')", e);
}

/* The states' CHECKs of schema 1 to 5, and what schema 6 says instead. */
static const char *const old_checks[2] = {
	"CHECK (s3_state IN ('pending','in_flight','done','failed','skipped'))",
	"CHECK (db_state IN ('pending','in_flight','done','failed','skipped'))",
};
static const char *const new_checks[2] = {
	"CONSTRAINT s3_state_known\n"
	"                 CHECK (s3_state = 'pending' OR s3_state = 'in_flight' OR\n"
	"                     s3_state = 'done' OR s3_state = 'failed' OR\n"
	"                     s3_state = 'skipped')",
	"CONSTRAINT db_state_known\n"
	"                 CHECK (db_state = 'pending' OR db_state = 'in_flight' OR\n"
	"                     db_state = 'done' OR db_state = 'failed' OR\n"
	"                     db_state = 'skipped')",
};

/* entries' CREATE TABLE text with schema 6's CHECKs, or NULL when it has
 * none of the old ones (made by schema 6, or changed by someone). */
static char *
checks_rewritten(const char *sql)
{
	char *text = xstrdup(sql), *p;
	struct buf b = {0};
	int i, changed = 0;

	for (i = 0; i < 2; i++) {
		if ((p = strstr(text, old_checks[i])) == NULL)
			continue;
		buf_append(&b, text, (size_t)(p - text));
		buf_puts(&b, new_checks[i]);
		buf_puts(&b, p + strlen(old_checks[i]));
		free(text);
		text = buf_take(&b);
		changed = 1;
	}
	if (!changed) {
		free(text);
		return NULL;
	}
	return text;
}

/*
 * Schema 6: the CHECKs on s3_state and db_state compare instead of
 * listing. SQLite codes an IN list of more than two values as a temporary
 * b-tree, built each time the constraint runs, and it ran with every
 * journal insert, claim mark and outcome: four b-trees a file, 15% of
 * `outboxd --once`'s instructions. outbox.sql makes new outboxes so; an
 * outbox made before gets the table's stored text rewritten, which is how
 * SQLite documents changing a CHECK (lang_altertable.html, "Making other
 * kinds of table schema changes"): the rows are the same, and the
 * constraint accepts exactly what the old one did; named, so a violation
 * says "CHECK constraint failed: s3_state_known" on one line. Where SQLite
 * refuses the rewrite (a defensive build) or the new text does not parse
 * (someone changed the table's text), the savepoint undoes it, a warning
 * says so and the outbox works as before, only slower; the next start
 * tries again. If SQLite rolled the whole transaction back meanwhile, the
 * open fails instead, as it would for any other upgrade.
 */
static int
upgrade_checks(struct outbox *o, struct err *e)
{
	char *v = outbox_meta_get(o, "schema_version"), bump[64];
	int old = v == NULL || atoi(v) < 6, cookie = -1;
	sqlite3_stmt *s = NULL;
	char *sql = NULL;
	struct err why = {0};

	free(v);
	if (!old)
		return 0;
	if (sqlite3_prepare_v2(o->db, "SELECT sql FROM sqlite_master WHERE "
	    "type = 'table' AND name = 'entries'", -1, &s, NULL) != SQLITE_OK) {
		db_err(o, e, "reading the schema");
		return -1;
	}
	if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0) != NULL)
		sql = checks_rewritten((const char *)sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
	s = NULL;
	if (sql == NULL)
		return exec(o, "UPDATE meta SET value = '6' WHERE key = "
		    "'schema_version'", e);
	if (exec(o, "SAVEPOINT checks6", e) < 0) {
		free(sql);
		return -1;
	}
	if (sqlite3_prepare_v2(o->db, "PRAGMA schema_version", -1, &s,
	    NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
		cookie = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	s = NULL;
	if (cookie < 0)
		db_err(o, &why, "reading the schema cookie");
	else if (exec(o, "PRAGMA writable_schema = ON", &why) == 0 &&
	    (sqlite3_prepare_v2(o->db, "UPDATE sqlite_master SET sql = ?1 "
	    "WHERE type = 'table' AND name = 'entries'", -1, &s,
	    NULL) != SQLITE_OK || sqlite3_bind_text(s, 1, sql, -1,
	    SQLITE_STATIC) != SQLITE_OK || sqlite3_step(s) != SQLITE_DONE))
		db_err(o, &why, "rewriting the table's text");
	sqlite3_finalize(s);
	free(sql);
	/* A new cookie makes every connection (this one too) read the
	 * schema again; the SELECT proves the new text parses. */
	snprintf(bump, sizeof(bump), "PRAGMA schema_version = %d", cookie + 1);
	if (why.msg[0] == '\0' && exec(o, bump, &why) == 0 &&
	    exec(o, "PRAGMA writable_schema = OFF", &why) == 0)
		(void)exec(o, "SELECT s3_state FROM entries LIMIT 0", &why);
	if (why.msg[0] == '\0')
		return exec(o, "RELEASE checks6; UPDATE meta SET value = '6' "
		    "WHERE key = 'schema_version'", e);
	sqlite3_exec(o->db, "PRAGMA writable_schema = OFF", NULL, NULL, NULL);
	/* SQLite may have rolled the whole start-up transaction back itself
	 * (out of memory, an I/O error): then nothing of the upgrade is left
	 * to keep, and the open fails with the first error. */
	if (sqlite3_get_autocommit(o->db) || sqlite3_exec(o->db,
	    "ROLLBACK TO checks6; RELEASE checks6", NULL, NULL, NULL) !=
	    SQLITE_OK) {
		*e = why;
		return -1;
	}
	log_warnx("%s (rewriting the states' CHECKs, schema 6): they keep "
	    "their old text; the outbox works as before, a little slower, and "
	    "the next start tries again", why.msg);
	return 0;
}

/* SQLite's memory statistics take a global mutex on every allocation
 * (hundreds a file); nothing reads them. Set before SQLite starts. */
static void
sqlite_setup(void)
{
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

struct outbox *
outbox_open(const char *path, int readonly, struct err *e)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	struct outbox *o;
	int flags = readonly ? SQLITE_OPEN_READONLY :
	    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
	const struct sql_file *f;

	pthread_once(&once, sqlite_setup);
	o = xcalloc(1, sizeof(*o));
	o->path = xstrdup(path);
	o->lock_fd = -1;
	o->horizon_ms = 86400000;
	if (sqlite3_open_v2(path, &o->db, flags | SQLITE_OPEN_NOMUTEX |
	    SQLITE_OPEN_EXRESCODE, NULL) != SQLITE_OK) {
		err_set(e, ERR_FATAL, "outbox %s: %s", path,
		    o->db ? sqlite3_errmsg(o->db) : "out of memory");
		outbox_close(o);
		return NULL;
	}
	sqlite3_busy_timeout(o->db, OUTBOX_BUSY_MS);
	if (readonly)
		return o;
	/* A new outbox gives the pages retention frees back to the file
	 * system (outbox_prune); SQLite can switch this on only before the
	 * first table exists, so older outboxes reuse freed pages instead. */
	if (exec(o, "PRAGMA auto_vacuum = INCREMENTAL", e) < 0)
		goto fail;
	/* WAL lets readers (outboxctl, sqlite3) run beside the writers;
	 * NORMAL sync is durable across a crash of the process, and after a
	 * power loss the start-up rescan finds what the last commits lost. */
	/* A 512 KiB page cache per connection (SQLite's default is 2 MiB):
	 * the queries go by index, and the OS caches the file anyway. */
	/* Statement and savepoint journals in memory: they only undo a
	 * statement (or a nested outbox_begin) inside a transaction, and in a
	 * file under /var/tmp each was a write per page changed: about half
	 * the writes of a turn (issue 11). Their size is a transaction's. */
	if (exec(o, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; "
	    "PRAGMA foreign_keys = ON; PRAGMA cache_size = -512; "
	    "PRAGMA temp_store = MEMORY;", e) < 0)
		goto fail;
	if (exec(o, "BEGIN IMMEDIATE", e) < 0)
		goto fail;
	/* outbox.sql, the columns added since, then the later files, which
	 * may index those columns. */
	for (f = outbox_schema_sql; f->name != NULL; f++) {
		if (exec(o, f->text, e) < 0 || (f == outbox_schema_sql &&
		    upgrade_columns(o, e) < 0)) {
			sqlite3_exec(o->db, "ROLLBACK", NULL, NULL, NULL);
			goto fail;
		}
	}
	if (upgrade_counts(o, e) < 0 || upgrade_triggers(o, e) < 0 ||
	    upgrade_checks(o, e) < 0 || upgrade_uploads(o, e) < 0 ||
	    exec(o, "COMMIT", e) < 0) {
		sqlite3_exec(o->db, "ROLLBACK", NULL, NULL, NULL);
		goto fail;
	}
#ifdef HAVE_SQLITE3_PREUPDATE_HOOK
	if (counts_hook_on(o, e) < 0)
		goto fail;
#endif
	return o;
fail:
	outbox_close(o);
	return NULL;
}

void
outbox_close(struct outbox *o)
{
	int i;

	if (o == NULL)
		return;
	for (i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(o->st[i]);
	for (i = 0; i < NAMED_COUNT; i++)
		sqlite3_finalize(o->named[i]);
	sqlite3_close(o->db);
	if (o->lock_fd >= 0)
		close(o->lock_fd);
	free(o->path);
	free(o);
}

sqlite3 *
outbox_db(struct outbox *o)
{
	return o->db;
}

static char *
lock_path(const char *db_path)
{
	return xasprintf("%s.lock", db_path);
}

int
outbox_lock(struct outbox *o, struct err *e)
{
	char *lp = lock_path(o->path), pid[32];
	int fd, n;

	fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		err_sys(e, ERR_FATAL, "%s", lp);
		free(lp);
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		long owner = outbox_lock_owner(o->path);

		if (errno == EWOULDBLOCK)
			err_set(e, ERR_FATAL, "another outboxd (pid %ld) is "
			    "already using the outbox %s", owner, o->path);
		else
			err_sys(e, ERR_FATAL, "%s", lp);
		close(fd);
		free(lp);
		return -1;
	}
	n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
		err_sys(e, ERR_FATAL, "%s", lp);
		close(fd);
		free(lp);
		return -1;
	}
	o->lock_fd = fd;
	free(lp);
	return 0;
}

long
outbox_lock_owner(const char *db_path)
{
	char *lp = lock_path(db_path), buf[32];
	long pid = 0;
	ssize_t n;
	int fd;

	fd = open(lp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	free(lp);
	if (fd < 0)
		return 0;
	/* Held means a live outboxd: only then is the pid in it meaningful. */
	if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
		close(fd);
		return 0;
	}
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n > 0) {
		buf[n] = '\0';
		pid = strtol(buf, NULL, 10);
	}
	close(fd);
	return pid;
}

/*
 * meta's last_s3_done and last_db_done (the metrics' newest store of each
 * leg): the newest done time outbox_apply recorded in the transaction,
 * written just before it commits, once. SQLITE_DONE or the error.
 */
static int
write_done_at(struct outbox *o)
{
	sqlite3_stmt *s;
	int l, rc = SQLITE_DONE;

	for (l = 0; l < 2 && rc == SQLITE_DONE; l++) {
		if (o->done_at[l][0] == '\0')
			continue;
		if ((s = named_stmt(o, NAMED_LAST_DONE, "INSERT INTO meta "
		    "(key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE "
		    "SET value = max(value, excluded.value)")) == NULL)
			return sqlite3_errcode(o->db);
		sqlite3_bind_text(s, 1, l == OUTBOX_S3 ? "last_s3_done" :
		    "last_db_done", -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, o->done_at[l], -1, SQLITE_STATIC);
		rc = sqlite3_step(s);
		done_with(s);
	}
	return rc;
}

static int seq_flush(struct outbox *o, struct err *e);

/* What the open transaction kept in memory, forgotten with it. */
static void
txn_forget(struct outbox *o)
{
	o->done_at[0][0] = o->done_at[1][0] = '\0';
	o->seq_state = SEQ_NONE;
	while (o->cacc.touched != 0) {
		int b = __builtin_ctzll(o->cacc.touched);

		memset(&o->cacc.b[b], 0, sizeof(o->cacc.b[b]));
		o->cacc.touched &= o->cacc.touched - 1;
	}
	o->crecount = 0;
}

/* A row's share of the counts: its bucket and what it adds there. */
struct cshare {
	int bucket;
	struct cdelta d;
};

/* The share of a row with these values; -1 if the counts table has no
 * bucket for it. */
static int
cshare_set(struct cshare *c, int s3, int dbs, int64_t needs_etag,
    int64_t s3_attempts, int64_t db_attempts, int64_t size)
{
	if (s3 < 0 || s3 >= OUTBOX_NSTATES || dbs < 0 ||
	    dbs >= OUTBOX_NSTATES || (needs_etag != 0 && needs_etag != 1)) {
		c->bucket = -1;
		return -1;
	}
	c->bucket = (s3 * OUTBOX_NSTATES + dbs) * 2 + (int)needs_etag;
	c->d.n = 1;
	c->d.bytes_done = s3 == OUTBOX_DONE ? size : 0;
	c->d.s3_retries = s3_attempts > 1 ? s3_attempts - 1 : 0;
	c->d.db_retries = db_attempts > 1 ? db_attempts - 1 : 0;
	return 0;
}

static void
cadd(struct outbox *o, int bucket, const struct cdelta *d, int sign)
{
	struct cdelta *t = &o->cacc.b[bucket];

	t->n += sign * d->n;
	t->bytes_done += sign * d->bytes_done;
	t->s3_retries += sign * d->s3_retries;
	t->db_retries += sign * d->db_retries;
	o->cacc.touched |= UINT64_C(1) << bucket;
}

#ifdef HAVE_SQLITE3_PREUPDATE_HOOK
static void counts_hook(void *arg, sqlite3 *db, int op, const char *zdb,
    const char *table, sqlite3_int64 key1, sqlite3_int64 key2);
#endif

/*
 * Runs a bound statement that changes at most one row of entries, whose
 * share of the counts the caller knows: was before (NULL for an INSERT),
 * now after. The hook is off meanwhile: it would read back from SQLite
 * what the caller has at hand (a claim, an outcome and a journal insert
 * paid 5-7k instructions each for it). A share of -1 (bucket) makes the
 * commit count afresh.
 */
static int
step_counted(struct outbox *o, sqlite3_stmt *s, const struct cshare *was,
    const struct cshare *now, struct err *e, const char *what)
{
	int rc;

#ifdef HAVE_SQLITE3_PREUPDATE_HOOK
	if (o->counts_by_hook)
		sqlite3_preupdate_hook(o->db, NULL, NULL);
#endif
	rc = sqlite3_step(s);
#ifdef HAVE_SQLITE3_PREUPDATE_HOOK
	if (o->counts_by_hook)
		sqlite3_preupdate_hook(o->db, counts_hook, o);
#endif
	done_with(s);
	if (rc != SQLITE_DONE) {
		db_err(o, e, what);
		return -1;
	}
	if (!o->counts_by_hook || sqlite3_changes(o->db) == 0)
		return 0;
	if (o->depth == 0 || sqlite3_get_autocommit(o->db)) {
		o->cstray = 1;
		o->cstray_seen++;
	}
	if ((was != NULL && was->bucket < 0) || now->bucket < 0) {
		o->crecount = 1;
		return 0;
	}
	if (was != NULL)
		cadd(o, was->bucket, &was->d, -1);
	cadd(o, now->bucket, &now->d, 1);
	return 0;
}

#ifdef HAVE_SQLITE3_PREUPDATE_HOOK

/* The old (or new) row of the change the hook is told of; -1 if it is
 * none the counts table has a bucket for (the commit counts afresh). */
static int
cshare_of(struct outbox *o, sqlite3 *db, int old, struct cshare *c)
{
	sqlite3_value *v[CC_N];
	int i, s3, dbs;
	int64_t etag, a3, adb;

	for (i = 0; i < CC_N; i++)
		if ((old ? sqlite3_preupdate_old(db, o->ccol[i], &v[i]) :
		    sqlite3_preupdate_new(db, o->ccol[i], &v[i])) != SQLITE_OK)
			return -1;
	s3 = outbox_state_parse((const char *)sqlite3_value_text(
	    v[CC_S3_STATE]));
	dbs = outbox_state_parse((const char *)sqlite3_value_text(
	    v[CC_DB_STATE]));
	etag = sqlite3_value_int64(v[CC_NEEDS_ETAG]);
	a3 = sqlite3_value_int64(v[CC_S3_ATTEMPTS]);
	adb = sqlite3_value_int64(v[CC_DB_ATTEMPTS]);
	return cshare_set(c, s3, dbs, etag, a3, adb,
	    sqlite3_value_int64(v[CC_SIZE]));
}

/* SQLite's pre-update hook: what the count triggers would do, in memory.
 * A DELETE is a prune: the row's share moves to the pruned bucket. */
static void
counts_hook(void *arg, sqlite3 *db, int op, const char *zdb,
    const char *table, sqlite3_int64 key1, sqlite3_int64 key2)
{
	struct outbox *o = arg;
	struct cshare was, now;

	(void)key1;
	(void)key2;
	if (strcmp(table, "entries") != 0 || strcmp(zdb, "main") != 0)
		return;
	if ((op != SQLITE_INSERT && cshare_of(o, db, 1, &was) < 0) ||
	    (op != SQLITE_DELETE && cshare_of(o, db, 0, &now) < 0)) {
		o->crecount = 1;
		if (o->depth == 0 || sqlite3_get_autocommit(db)) {
			o->cstray = 1;
			o->cstray_seen++;
		}
		return;
	}
	if (op == SQLITE_UPDATE && was.bucket == now.bucket &&
	    memcmp(&was.d, &now.d, sizeof(was.d)) == 0)
		return;		/* a column the counts do not keep */
	if (o->depth == 0 || sqlite3_get_autocommit(db)) {
		/* No outbox_begin (or SQLite ended it): nothing will write
		 * the deltas. */
		o->cstray = 1;
		o->cstray_seen++;
	}
	if (op != SQLITE_INSERT)
		cadd(o, was.bucket, &was.d, -1);
	if (op == SQLITE_DELETE)
		cadd(o, CB_PRUNED, &was.d, 1);
	if (op != SQLITE_DELETE)
		cadd(o, now.bucket, &now.d, 1);
}

/* After the schema is current: the hook instead of the triggers. 0, or
 * -1 with e (then the triggers stay on). */
static int
counts_hook_on(struct outbox *o, struct err *e)
{
	static const char *const counted_column[CC_N] = { "s3_state",
		"db_state", "db_needs_etag", "s3_attempts", "db_attempts", "size" };
	sqlite3_stmt *s = NULL;
	int i, found = 0, off = 1;

	if (sqlite3_prepare_v2(o->db, "SELECT cid, name FROM "
	    "pragma_table_info('entries')", -1, &s, NULL) != SQLITE_OK) {
		db_err(o, e, "reading the columns of entries");
		return -1;
	}
	while (sqlite3_step(s) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(s, 1);

		for (i = 0; name != NULL && i < CC_N; i++)
			if (strcmp(name, counted_column[i]) == 0) {
				o->ccol[i] = sqlite3_column_int(s, 0);
				found |= 1 << i;
			}
	}
	sqlite3_finalize(s);
	if (found != (1 << CC_N) - 1) {
		err_set(e, ERR_FATAL, "outbox %s: entries lacks a counted "
		    "column", o->path);
		return -1;
	}
	if (sqlite3_db_config(o->db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, &off)
	    != SQLITE_OK || off != 0) {
		db_err(o, e, "turning the count triggers off");
		return -1;
	}
	sqlite3_preupdate_hook(o->db, counts_hook, o);
	o->counts_by_hook = 1;
	return 0;
}
#endif

/* Counts afresh, in the open transaction: the pruned row is kept (its
 * entries are gone), every other bucket is what entries holds. */
static int
counts_recount(struct outbox *o)
{
	return sqlite3_exec(o->db, "DELETE FROM counts WHERE s3_state <> "
	    "'pruned'; INSERT INTO counts " FULL_COUNT "; " COUNTS_GRID,
	    NULL, NULL, NULL) == SQLITE_OK ? SQLITE_DONE : SQLITE_ERROR;
}

/* One bucket's delta into counts: SQLITE_DONE, SQLITE_NOTFOUND when its
 * row is gone, or an error code. */
static int
counts_add_bucket(struct outbox *o, int b)
{
	const struct cdelta *d = &o->cacc.b[b];
	sqlite3_stmt *s;
	int rc;

	if (d->n == 0 && d->bytes_done == 0 && d->s3_retries == 0 &&
	    d->db_retries == 0)
		return SQLITE_DONE;
	s = named_stmt(o, NAMED_COUNTS_ADD, "UPDATE counts SET "
	    "n = n + ?4, bytes_done = bytes_done + ?5, "
	    "s3_retries = s3_retries + ?6, db_retries = db_retries + ?7 "
	    "WHERE s3_state = ?1 AND db_state = ?2 AND needs_etag = ?3");
	if (s == NULL)
		return SQLITE_ERROR;
	if (b == CB_PRUNED) {
		sqlite3_bind_text(s, 1, "pruned", -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, "pruned", -1, SQLITE_STATIC);
		sqlite3_bind_int(s, 3, 0);
	} else {
		sqlite3_bind_text(s, 1, outbox_state_name(
		    (enum outbox_state)(b / 2 / OUTBOX_NSTATES)), -1,
		    SQLITE_STATIC);
		sqlite3_bind_text(s, 2, outbox_state_name(
		    (enum outbox_state)(b / 2 % OUTBOX_NSTATES)), -1,
		    SQLITE_STATIC);
		sqlite3_bind_int(s, 3, b % 2);
	}
	sqlite3_bind_int64(s, 4, d->n);
	sqlite3_bind_int64(s, 5, d->bytes_done);
	sqlite3_bind_int64(s, 6, d->s3_retries);
	sqlite3_bind_int64(s, 7, d->db_retries);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc == SQLITE_DONE && sqlite3_changes(o->db) != 1)
		return SQLITE_NOTFOUND;		/* the bucket's row is gone */
	return rc;
}

/* Counts afresh; the pruned row, which no full count can give, still
 * gets the transaction's prunes. */
static int
counts_recount_all(struct outbox *o)
{
	int rc = counts_recount(o);

	if (rc == SQLITE_DONE)
		rc = counts_add_bucket(o, CB_PRUNED);
	if (rc == SQLITE_DONE)
		o->crecounted = 1;	/* outbox_commit clears cstray */
	return rc;
}

/* Before COMMIT: the deltas of the transaction into counts. SQLITE_DONE
 * or an error code. */
static int
counts_flush(struct outbox *o)
{
	uint64_t t;
	int rc;

	o->crecounted = 0;
	if (!o->counts_by_hook)
		return SQLITE_DONE;
	if (o->crecount || o->cstray) {
		if (o->cstray)
			log_warnx("outbox %s: entries changed outside a "
			    "transaction; the counts are counted afresh",
			    o->path);
		return counts_recount_all(o);
	}
	for (t = o->cacc.touched; t != 0; t &= t - 1) {
		rc = counts_add_bucket(o, __builtin_ctzll(t));
		if (rc == SQLITE_NOTFOUND)
			return counts_recount_all(o);
		if (rc != SQLITE_DONE)
			return rc;
	}
	return SQLITE_DONE;
}

long
outbox_counts_stray(const struct outbox *o)
{
	return o->cstray_seen;
}

/*
 * Transactions nest: the outermost is BEGIN IMMEDIATE ... COMMIT, inner
 * ones are savepoints, so a helper that needs atomicity (journaling a
 * version) can be called inside a caller's batch.
 */
int
outbox_begin(struct outbox *o, struct err *e)
{
	char sql[48];
	int rc;

	/* Inside a transaction SQLite ended itself (an I/O error), a
	 * savepoint would start a new one that commits on its own. */
	if (o->depth > 0 && sqlite3_get_autocommit(o->db)) {
		err_set(e, ERR_TRANSIENT, "outbox %s: the transaction was rolled "
		    "back by an error", o->path);
		return -1;
	}
	/* The outermost, once a turn, and the savepoint just inside it
	 * (a claim inside the turn's transaction) are prepared once. */
	if (o->depth == 0) {
		rc = named_run(o, NAMED_BEGIN, "BEGIN IMMEDIATE") == SQLITE_DONE ?
		    SQLITE_OK : SQLITE_ERROR;
		txn_forget(o);
	} else if (seq_flush(o, e) < 0) {
		/* A savepoint's rollback then forgets only its own. */
		return -1;
	} else if (o->counts_by_hook && o->depth > OUTBOX_NEST) {
		err_set(e, ERR_FATAL, "outbox %s: savepoints nested deeper "
		    "than %d", o->path, OUTBOX_NEST);
		return -1;
	} else {
		if (o->depth <= 4)	/* for the savepoint's rollback */
			memcpy(o->done_save[o->depth - 1], o->done_at,
			    sizeof(o->done_at));
		if (o->counts_by_hook)
			o->csave[o->depth - 1] = o->cacc;
		if (o->depth == 1) {
			rc = named_run(o, NAMED_SAVEPOINT, "SAVEPOINT s1") ==
			    SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
		} else {
			snprintf(sql, sizeof(sql), "SAVEPOINT s%d", o->depth);
			rc = sqlite3_exec(o->db, sql, NULL, NULL, NULL);
		}
	}
	if (rc != SQLITE_OK) {
		db_err(o, e, "BEGIN");
		return -1;
	}
	o->depth++;
	return 0;
}

int
outbox_commit(struct outbox *o, struct err *e)
{
	char sql[48];
	int rc;

	if (o->depth == 0) {
		err_set(e, ERR_FATAL, "outbox %s: COMMIT without BEGIN", o->path);
		return -1;
	}
	if (sqlite3_get_autocommit(o->db)) {
		/* SQLite rolled the transaction back itself (an I/O error, a
		 * full disk): what the caller wrote since is not in it. */
		err_set(e, ERR_TRANSIENT, "outbox %s: the transaction was rolled "
		    "back by an error", o->path);
		o->depth = 0;
		txn_forget(o);
		return -1;
	}
	if (o->depth == 1) {
		struct err se = {0};

		rc = seq_flush(o, &se) == 0 && write_done_at(o) == SQLITE_DONE &&
		    counts_flush(o) == SQLITE_DONE &&
		    named_run(o, NAMED_COMMIT, "COMMIT") == SQLITE_DONE ?
		    SQLITE_OK : SQLITE_ERROR;
		if (rc == SQLITE_OK && o->crecounted)
			o->cstray = 0;	/* only once the recount is durable */
		txn_forget(o);
	}
	else if (o->depth == 2)
		rc = named_run(o, NAMED_RELEASE, "RELEASE s1") == SQLITE_DONE ?
		    SQLITE_OK : SQLITE_ERROR;
	else {
		snprintf(sql, sizeof(sql), "RELEASE s%d", o->depth - 1);
		rc = sqlite3_exec(o->db, sql, NULL, NULL, NULL);
	}
	if (rc != SQLITE_OK) {
		db_err(o, e, "COMMIT");
		outbox_rollback(o);
		return -1;
	}
	o->depth--;
	return 0;
}

void
outbox_rollback(struct outbox *o)
{
	char sql[64];

	if (o->depth > 1) {
		snprintf(sql, sizeof(sql), "ROLLBACK TO s%d; RELEASE s%d",
		    o->depth - 1, o->depth - 1);
		sqlite3_exec(o->db, sql, NULL, NULL, NULL);
		o->depth--;
		o->seq_state = SEQ_NONE;	/* flushed when it began */
		/* Its stores are undone: so is the newest done time they set
		 * (savepoints deeper than s4, which nothing opens, keep it). */
		if (o->depth <= 4)
			memcpy(o->done_at, o->done_save[o->depth - 1],
			    sizeof(o->done_at));
		if (o->counts_by_hook)	/* outbox_begin went no deeper */
			o->cacc = o->csave[o->depth - 1];
		return;
	}
	if (!sqlite3_get_autocommit(o->db))
		sqlite3_exec(o->db, "ROLLBACK", NULL, NULL, NULL);
	o->depth = 0;
	txn_forget(o);
}

/* Runs a bound statement that returns no rows. */
static int
step_done(struct outbox *o, sqlite3_stmt *s, struct err *e, const char *what)
{
	int rc = sqlite3_step(s);

	done_with(s);
	if (rc != SQLITE_DONE) {
		db_err(o, e, what);
		return -1;
	}
	return 0;
}

/* Queues aborts for skipped legs of path that still hold an upload. */
static int
abort_skipped(struct outbox *o, const char *path, struct err *e)
{
	enum stmt_id ids[2] = { ST_ABORT_SKIPPED, ST_CLEAR_SKIPPED };
	sqlite3_stmt *s;
	char now[32];
	int i;

	now_iso(now);
	for (i = 0; i < 2; i++) {
		if ((s = stmt(o, ids[i], e)) == NULL)
			return -1;
		sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
		if (i == 0)
			sqlite3_bind_text(s, 2, now, -1, SQLITE_STATIC);
		if (step_done(o, s, e, "queueing aborts") < 0)
			return -1;
	}
	return 0;
}

/* 1 when path was last journaled with f's stat, 0 when not (*versions
 * set to its count so far), -1 with e. */
static int
file_known(struct outbox *o, const struct outbox_file *f, int *versions,
    struct err *e)
{
	sqlite3_stmt *s = stmt(o, ST_FILE_GET, e);
	int rc, same = 0;

	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, f->path, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		same = sqlite3_column_int64(s, 0) == f->size &&
		    sqlite3_column_int64(s, 1) == f->mtime_ns &&
		    sqlite3_column_int64(s, 2) == f->inode;
		*versions = sqlite3_column_int(s, 3);
	}
	done_with(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		db_err(o, e, "reading files");
		return -1;
	}
	return same;
}

/* Records f's stat as path's newest version, entry id. */
static int
file_put(struct outbox *o, const struct outbox_file *f, int versions,
    int64_t id, struct err *e)
{
	sqlite3_stmt *s = stmt(o, ST_FILE_PUT, e);

	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, f->path, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, f->size);
	sqlite3_bind_int64(s, 3, f->mtime_ns);
	sqlite3_bind_int64(s, 4, f->inode);
	sqlite3_bind_int(s, 5, versions);
	sqlite3_bind_int64(s, 6, id);
	return step_done(o, s, e, "recording the file");
}

/* The seq a new entry of job takes (see schema/outbox4.sql), or -1. */
static int64_t
job_next_seq(struct outbox *o, const char *job, struct err *e)
{
	sqlite3_stmt *s;
	int64_t seq = -1;

	/* Within the transaction nothing else writes job_seq or moves the
	 * frontier (claimed_upto forgets the cache). */
	if (o->depth > 0 && o->seq_state != SEQ_NONE &&
	    strcmp(o->seq_job, job) == 0)
		return o->seq_last + 1;
	if (seq_flush(o, e) < 0 || (s = stmt(o, ST_JOB_SEQ_GET, e)) == NULL)
		return -1;
	sqlite3_bind_text(s, 1, job, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW)
		seq = sqlite3_column_int64(s, 0);
	done_with(s);
	if (seq < 0)
		db_err(o, e, "reading the job's sequence");
	return seq;
}

static int
seq_write(struct outbox *o, const char *job, int64_t seq, struct err *e)
{
	sqlite3_stmt *s = stmt(o, ST_JOB_SEQ_PUT, e);

	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, job, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, seq);
	return step_done(o, s, e, "recording the job's sequence");
}

/* Writes the cached job_seq row, if it is not written yet. */
static int
seq_flush(struct outbox *o, struct err *e)
{
	if (o->seq_state != SEQ_DIRTY)
		return 0;
	if (seq_write(o, o->seq_job, o->seq_last, e) < 0)
		return -1;
	o->seq_state = SEQ_CLEAN;
	return 0;
}

/* Writes the kept row and forgets it: the claim frontier, the lowest
 * seq a new entry may get, is about to move. */
static int
seq_settle(struct outbox *o, struct err *e)
{
	if (seq_flush(o, e) < 0)
		return -1;
	o->seq_state = SEQ_NONE;
	return 0;
}

/* Inside a transaction, the row is written once: when another job's is,
 * when a savepoint begins, or just before COMMIT (outbox_commit). */
static int
job_seq_put(struct outbox *o, const char *job, int64_t seq, struct err *e)
{
	if (o->depth == 0 || strlen(job) >= sizeof(o->seq_job))
		return seq_write(o, job, seq, e);
	if (o->seq_state == SEQ_DIRTY && strcmp(o->seq_job, job) != 0 &&
	    seq_flush(o, e) < 0)
		return -1;
	memcpy(o->seq_job, job, strlen(job) + 1);
	o->seq_last = seq;
	o->seq_state = SEQ_DIRTY;
	return 0;
}

/* legstate.h's "superseded" rule for the legs of path's entries older
 * than new_id, and the aborts of their multipart uploads. */
static int
supersede_older(struct outbox *o, const char *path, int64_t new_id,
    const char *now, struct err *e)
{
	enum stmt_id ids[2] = { ST_SUPERSEDE_S3, ST_SUPERSEDE_DB };
	sqlite3_stmt *s;
	int i, from;

	for (i = 0; i < 2; i++)
		for (from = 0; from < OUTBOX_NSTATES; from++) {
			const struct leg_rule *r = leg_next(
			    (enum outbox_state)from, EV_SUPERSEDED, 0);

			if (r == NULL)
				continue;
			if ((s = stmt(o, ids[i], e)) == NULL)
				return -1;
			sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
			sqlite3_bind_int64(s, 2, new_id);
			sqlite3_bind_text(s, 3, now, -1, SQLITE_STATIC);
			sqlite3_bind_text(s, 4, outbox_state_name(r->from), -1,
			    SQLITE_STATIC);
			sqlite3_bind_text(s, 5, outbox_state_name(r->to), -1,
			    SQLITE_STATIC);
			if (step_done(o, s, e, "superseding old versions") < 0)
				return -1;
		}
	return abort_skipped(o, path, e);
}

static int
journal_in(struct outbox *o, const struct outbox_file *f, int64_t *id,
    struct err *e)
{
	sqlite3_stmt *s;
	enum keymap_kind kind;
	const char *rest = NULL;
	size_t job_len = 0;
	char job[37], event[37], now[32], mtime[32], next[32];
	char *key = NULL;
	int versions = 0, rc;
	int64_t new_id, seq;
	struct err kerr = {0};
	struct cshare share;
	const char *s3_state = "pending", *s3_error = NULL;
	const char *db_state = "pending", *db_error = NULL;

	kind = keymap_classify(f->path, &job_len, &rest);
	if (kind == KEYMAP_NOT_A_JOB) {
		err_set(e, ERR_PERMANENT, "%s is not in a job directory",
		    f->path);
		return -1;
	}
	memcpy(job, f->path, job_len);
	job[job_len] = '\0';

	if ((rc = file_known(o, f, &versions, e)) != 0)
		return rc > 0 ? 0 : -1;

	if (kind == KEYMAP_JOB_META) {
		s3_state = "skipped";
		s3_error = "job metadata: applied to the database, not uploaded";
	} else {
		key = keymap_s3_key(job, rest);
		if (keymap_check_key(key, &kerr) < 0) {
			s3_state = db_state = "failed";
			s3_error = db_error = kerr.msg;
		}
	}

	uuid_v7(event);
	now_iso(now);
	time_iso8601(f->not_before_ms > time_now_ms() ? f->not_before_ms :
	    time_parse_iso8601(now), next, sizeof(next));
	time_iso8601(f->mtime_ns / 1000000, mtime, sizeof(mtime));
	if ((seq = job_next_seq(o, job, e)) < 0 ||
	    (s = stmt(o, ST_ENTRY_INSERT, e)) == NULL)
		goto fail;
	sqlite3_bind_text(s, 1, event, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, job, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, f->path, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, kind == KEYMAP_JOB_META ? "job_meta" :
	    "document", -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 5, versions + 1);
	sqlite3_bind_int64(s, 6, f->size);
	sqlite3_bind_text(s, 7, mtime, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 8, f->mtime_ns);
	sqlite3_bind_int64(s, 9, f->inode);
	if (key != NULL)
		sqlite3_bind_text(s, 10, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 11, now, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 12, s3_state, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 13, s3_error, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 14, db_state, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 15, db_error, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 16, next, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 17, seq);
	cshare_set(&share, outbox_state_parse(s3_state),
	    outbox_state_parse(db_state), 0, 0, 0, f->size);
	if (step_counted(o, s, NULL, &share, e, "journaling an entry") < 0 ||
	    job_seq_put(o, job, seq, e) < 0)
		goto fail;
	new_id = sqlite3_last_insert_rowid(o->db);

	if (file_put(o, f, versions + 1, new_id, e) < 0)
		goto fail;

	if (versions > 0 && supersede_older(o, f->path, new_id, now, e) < 0)
		goto fail;
	if (id != NULL)
		*id = new_id;
	free(key);
	return 1;
fail:
	free(key);
	return -1;
}

int
outbox_note_not_job(struct outbox *o, const char *dir, struct err *e)
{
	sqlite3_stmt *s;
	char now[32];

	if ((s = stmt(o, ST_NOT_JOB, e)) == NULL)
		return -1;
	now_iso(now);
	sqlite3_bind_text(s, 1, dir, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, now, -1, SQLITE_STATIC);
	return step_done(o, s, e, "recording a directory that is not a job");
}

static char *
col_dup(sqlite3_stmt *s, int i)
{
	const unsigned char *t = sqlite3_column_text(s, i);

	return t ? xstrdup((const char *)t) : NULL;
}

static void
copy_fixed(char *dst, size_t n, sqlite3_stmt *s, int i)
{
	const unsigned char *t = sqlite3_column_text(s, i);

	utf8_snprintf(dst, n, "%s", t ? (const char *)t : "");
}

/* Reads a row of ENTRY_COLUMNS. */
static void
read_entry(sqlite3_stmt *s, struct outbox_entry *en)
{
	const unsigned char *kind;

	memset(en, 0, sizeof(*en));
	en->id = sqlite3_column_int64(s, 0);
	copy_fixed(en->event_id, sizeof(en->event_id), s, 1);
	copy_fixed(en->job_id, sizeof(en->job_id), s, 2);
	en->path = col_dup(s, 3);
	en->s3_key = col_dup(s, 4);
	kind = sqlite3_column_text(s, 5);
	en->job_meta = kind && strcmp((const char *)kind, "job_meta") == 0;
	en->version = sqlite3_column_int(s, 6);
	en->size = sqlite3_column_int64(s, 7);
	en->mtime_ns = sqlite3_column_int64(s, 8);
	en->inode = sqlite3_column_int64(s, 9);
	copy_fixed(en->sha256, sizeof(en->sha256), s, 10);
	en->s3_etag = col_dup(s, 11);
	en->s3_state = outbox_state_parse((const char *)sqlite3_column_text(s,
	    12));
	en->db_state = outbox_state_parse((const char *)sqlite3_column_text(s,
	    13));
	en->s3_attempts = sqlite3_column_int(s, 14);
	en->db_attempts = sqlite3_column_int(s, 15);
	en->upload_id = col_dup(s, 16);
	en->repair = sqlite3_column_int(s, 17);
	en->seq = sqlite3_column_int64(s, 18);
	en->db_needs_etag = sqlite3_column_int(s, 19);
}

void
outbox_entry_free(struct outbox_entry *en)
{
	free(en->path);
	free(en->s3_key);
	free(en->s3_etag);
	free(en->upload_id);
	memset(en, 0, sizeof(*en));
}

void
outbox_entries_free(struct outbox_entry *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		outbox_entry_free(&v[i]);
	free(v);
}

/* Legs whose next attempt lies beyond any backoff (the wall clock was
 * set back) become due now, so the claim's range on the time finds them. */
static int
clock_went_back(struct outbox *o, enum outbox_leg leg, const char *now,
    struct err *e)
{
	sqlite3_stmt *s = stmt(o, leg == OUTBOX_S3 ? ST_DUE_NOW_S3 :
	    ST_DUE_NOW_DB, e);
	char horizon[32];

	if (s == NULL)
		return -1;
	time_iso8601(time_now_ms() + o->horizon_ms, horizon, sizeof(horizon));
	sqlite3_bind_text(s, 1, now, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, horizon, -1, SQLITE_TRANSIENT);
	return step_done(o, s, e, "pulling in next attempts");
}

/* Moves leg's claim frontier (claim_seq) up to seq. */
static int
claimed_upto(struct outbox *o, enum outbox_leg leg, int64_t seq,
    struct err *e)
{
	sqlite3_stmt *s;

	if (seq_settle(o, e) < 0 || (s = stmt(o, ST_CLAIMED_UPTO, e)) == NULL)
		return -1;
	sqlite3_bind_text(s, 1, leg == OUTBOX_S3 ? "s3" : "db", -1,
	    SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, seq);
	return step_done(o, s, e, "recording the claim frontier");
}

int
outbox_live_legs(struct outbox *o, int s3_on, int db_on, struct err *e)
{
	if (seq_settle(o, e) < 0)
		return -1;
	if (!s3_on && run(o, "DELETE FROM claim_seq WHERE leg = 's3'", "", e) < 0)
		return -1;
	if (!db_on && run(o, "DELETE FROM claim_seq WHERE leg = 'db'", "", e) < 0)
		return -1;
	return 0;
}

int
outbox_claim(struct outbox *o, enum outbox_leg leg, int max, int s3_on,
    int (*skip)(void *arg, int64_t id, const char *path), void *skip_arg,
    struct outbox_entry **out, size_t *nout, struct err *e)
{
	return outbox_claim_ahead(o, leg, max, 0, 0, s3_on, skip, skip_arg,
	    out, nout, e);
}

int
outbox_claim_ahead(struct outbox *o, enum outbox_leg leg, int firm,
    int ahead, int64_t ahead_bytes, int s3_on,
    int (*skip)(void *arg, int64_t id, const char *path), void *skip_arg,
    struct outbox_entry **out, size_t *nout, struct err *e)
{
	struct outbox_entry *v = NULL;
	size_t n = 0, cap = 0;
	sqlite3_stmt *s, *mark;
	char now[32];
	int64_t upto = 0, extra = 0;
	int rc, max;

	*out = NULL;
	*nout = 0;
	if (firm < 0)
		firm = 0;
	if (ahead < 0 || ahead_bytes <= 0)
		ahead = 0;
	max = firm + ahead;
	if (max <= 0)
		return 0;
	/* Nothing due is the common case when idle: find out with a read,
	 * not a write transaction. Inside the caller's transaction (the
	 * turn's, which asked already) the claim's own select says it. */
	if (o->depth == 0 && outbox_next_due(o, leg, s3_on, e) != 0)
		return 0;
	now_iso(now);
	if (outbox_begin(o, e) < 0)
		return -1;
	if (clock_went_back(o, leg, now, e) < 0)
		goto fail;
	s = stmt(o, leg == OUTBOX_S3 ? ST_CLAIM_S3 : s3_on ? ST_CLAIM_DB :
	    ST_CLAIM_DB_ALL, e);
	mark = stmt(o, leg == OUTBOX_S3 ? ST_MARK_S3 : ST_MARK_DB, e);
	if (s == NULL || mark == NULL)
		goto fail;
	sqlite3_bind_text(s, 1, now, -1, SQLITE_STATIC);
	/* Ask for extra rows: some may be skipped, as already in flight or
	 * (a paused leg's probe) as keys the engine saw denied, up to the 64
	 * it remembers. Rows are read only as far as needed. */
	sqlite3_bind_int(s, 2, max * 2 + 8 + (skip != NULL ? 64 : 0));
	while ((rc = sqlite3_step(s)) == SQLITE_ROW && n < (size_t)max) {
		const char *path = (const char *)sqlite3_column_text(s, 3);

		if (skip != NULL && skip(skip_arg, sqlite3_column_int64(s, 0),
		    path))
			continue;
		if (n >= (size_t)firm) {
			extra += sqlite3_column_int64(s, 7); /* size */
			if (extra > ahead_bytes)
				break;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			v = xrealloc(v, cap * sizeof(*v));
		}
		read_entry(s, &v[n]);
		if (leg == OUTBOX_S3)
			v[n].s3_attempts++;
		else
			v[n].db_attempts++;
		if (v[n].seq > upto)
			upto = v[n].seq;
		n++;
	}
	done_with(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		db_err(o, e, "selecting due entries");
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		const struct leg_rule *r = leg_next(OUTBOX_PENDING, EV_CLAIM, 1);
		const struct outbox_entry *en = &v[i];
		struct cshare was, to;
		int s3 = leg == OUTBOX_S3;

		/* en's attempts count the claim already. */
		cshare_set(&was, en->s3_state, en->db_state, en->db_needs_etag,
		    en->s3_attempts - s3, en->db_attempts - !s3, en->size);
		cshare_set(&to, s3 ? (int)r->to : en->s3_state,
		    s3 ? en->db_state : (int)r->to, en->db_needs_etag,
		    en->s3_attempts, en->db_attempts, en->size);
		sqlite3_bind_int64(mark, 1, en->id);
		sqlite3_bind_text(mark, 2, now, -1, SQLITE_STATIC);
		sqlite3_bind_text(mark, 3, outbox_state_name(r->from), -1,
		    SQLITE_STATIC);
		sqlite3_bind_text(mark, 4, outbox_state_name(r->to), -1,
		    SQLITE_STATIC);
		if (step_counted(o, mark, &was, &to, e,
		    "marking entries in flight") < 0)
			goto fail;
	}
	if (upto > 0 && claimed_upto(o, leg, upto, e) < 0)
		goto fail;
	if (outbox_commit(o, e) < 0)
		goto gone;	/* rolled back (its savepoint only) already */
	*out = v;
	*nout = n;
	return 0;
fail:
	outbox_rollback(o);
gone:
	outbox_entries_free(v, n);
	return -1;
}

/* Queues the entry's multipart upload for abort and forgets it here. */
static int
abort_entry(struct outbox *o, int64_t id, const char *why, struct err *e)
{
	enum stmt_id ids[3] = { ST_ABORT_ENTRY, ST_CLEAR_ENTRY, ST_PARTS_CLEAR };
	sqlite3_stmt *s;
	char now[32];
	int i;

	now_iso(now);
	for (i = 0; i < 3; i++) {
		if ((s = stmt(o, ids[i], e)) == NULL)
			return -1;
		sqlite3_bind_int64(s, 1, id);
		if (i == 0) {
			sqlite3_bind_text(s, 2, why, -1, SQLITE_STATIC);
			sqlite3_bind_text(s, 3, now, -1, SQLITE_STATIC);
		}
		if (step_done(o, s, e, "queueing an abort") < 0)
			return -1;
	}
	return 0;
}

/* What an outcome is applied to: the entry's legs and what of it the
 * counts keep. */
struct legs_now {
	int state[2];		/* per leg */
	int newest;		/* id is its path's newest entry */
	int needs_etag;
	int64_t attempts[2], size;
};

/* The entry's legs now (and its path, which the caller frees). 1 found,
 * 0 no such entry, -1 with e. */
static int
leg_now(struct outbox *o, int64_t id, struct legs_now *ln, char **path,
    struct err *e)
{
	sqlite3_stmt *s = stmt(o, ST_LEG_NOW, e);
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		ln->state[OUTBOX_S3] = outbox_state_parse((const char *)
		    sqlite3_column_text(s, 0));
		ln->state[OUTBOX_DB] = outbox_state_parse((const char *)
		    sqlite3_column_text(s, 1));
		ln->newest = sqlite3_column_int(s, 2);
		*path = col_dup(s, 3);
		ln->needs_etag = sqlite3_column_int(s, 4);
		ln->attempts[OUTBOX_S3] = sqlite3_column_int64(s, 5);
		ln->attempts[OUTBOX_DB] = sqlite3_column_int64(s, 6);
		ln->size = sqlite3_column_int64(s, 7);
	}
	done_with(s);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	db_err(o, e, "reading an entry");
	return -1;
}

static int
apply_in(struct outbox *o, enum outbox_leg leg, int64_t id,
    const struct outbox_outcome *oc, struct err *e)
{
	const struct leg_rule *r;
	sqlite3_stmt *s;
	char now[32], next[32], why[1200];
	const char *error = NULL;
	char *path = NULL;
	struct legs_now ln;
	struct cshare was, to;
	int state, s3_skipped, etag_later, delta, rc = -1;

	rc = leg_now(o, id, &ln, &path, e);
	if (rc <= 0)
		return rc == 0 ? OUTBOX_SKIPPED : -1;
	rc = -1;
	state = ln.state[leg];
	s3_skipped = ln.state[OUTBOX_S3] == OUTBOX_SKIPPED;
	if ((r = leg_next((enum outbox_state)state, oc->event, ln.newest)) ==
	    NULL) {
		free(path);
		return state;
	}
	etag_later = (r->rec & REC_ETAG_LATER) && !s3_skipped ? 1 : 0;
	cshare_set(&was, ln.state[OUTBOX_S3], ln.state[OUTBOX_DB],
	    ln.needs_etag, ln.attempts[OUTBOX_S3], ln.attempts[OUTBOX_DB],
	    ln.size);
	ln.state[leg] = (int)r->to;
	/* An upload claimed ahead and given back unsent (the leg failed
	 * meanwhile) was not attempted: its claim's count is undone, so it
	 * neither backs off further nor counts as a retry. */
	delta = (r->rec & REC_ATTEMPT) ? 1 : oc->event == EV_STOPPED &&
	    oc->unsent && r->to == OUTBOX_PENDING && ln.attempts[leg] > 0 ?
	    -1 : 0;
	ln.attempts[leg] += delta;
	if (leg == OUTBOX_DB && r->to == OUTBOX_DONE)
		ln.needs_etag = etag_later;
	cshare_set(&to, ln.state[OUTBOX_S3], ln.state[OUTBOX_DB],
	    ln.needs_etag, ln.attempts[OUTBOX_S3], ln.attempts[OUTBOX_DB],
	    ln.size);
	now_iso(now);
	if (r->rec & REC_BACKOFF)
		time_iso8601(oc->next_at_ms, next, sizeof(next));
	else
		memcpy(next, now, sizeof(next));
	if ((r->rec & REC_ERROR) && r->entry == LEG_OLDER) {
		utf8_snprintf(why, sizeof(why), "superseded by a newer "
		    "version%s%s", oc->error ? "; last: " : "",
		    oc->error ? oc->error : "");
		error = why;
	} else if (r->rec & REC_ERROR) {
		error = oc->error;
	}
	if ((s = stmt(o, leg == OUTBOX_S3 ? ST_FINISH_S3 : ST_FINISH_DB, e))
	    == NULL)
		goto out;
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_text(s, 2, outbox_state_name(r->to), -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, error, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(s, 4, next, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 5, delta);
	if (leg == OUTBOX_S3)
		sqlite3_bind_text(s, 6, (r->rec & REC_RESULT) ? oc->etag : NULL,
		    -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_int(s, 6, etag_later);
	sqlite3_bind_text(s, 7, (r->rec & REC_RESULT) ? oc->sha256 : NULL, -1,
	    SQLITE_TRANSIENT);
	sqlite3_bind_text(s, 8, now, -1, SQLITE_STATIC);
	if (step_counted(o, s, &was, &to, e, "recording a result") < 0)
		goto out;
	if (r->to == OUTBOX_DONE && strcmp(now, o->done_at[leg]) > 0)
		memcpy(o->done_at[leg], now, sizeof(now));
	if (r->rec & REC_FORGET_STAT) {
		if ((s = stmt(o, ST_FORGET_STAT, e)) == NULL)
			goto out;
		sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, id);
		if (step_done(o, s, e, "forgetting a file's stat") < 0)
			goto out;
	}
	if ((r->rec & REC_ABORT_UPLOAD) && leg == OUTBOX_S3 &&
	    abort_entry(o, id, error ? error : "the S3 leg ended", e) < 0)
		goto out;
	rc = r->to;
out:
	free(path);
	return rc;
}

int
outbox_set_upload_id(struct outbox *o, int64_t id, const char *upload_id,
    struct err *e)
{
	sqlite3_stmt *s;

	if ((s = stmt(o, ST_UPLOAD_ID, e)) == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_text(s, 2, upload_id, -1, SQLITE_TRANSIENT);
	return step_done(o, s, e, "recording a multipart upload");
}

int
outbox_etag_todo(struct outbox *o, int max, struct outbox_entry **out,
    size_t *nout, struct err *e)
{
	struct outbox_entry *v = NULL;
	size_t n = 0;
	sqlite3_stmt *s;
	int rc;

	*out = NULL;
	*nout = 0;
	if ((s = stmt(o, ST_ETAG_TODO, e)) == NULL)
		return -1;
	sqlite3_bind_int(s, 1, max);
	v = xcalloc((size_t)max, sizeof(*v));
	while ((rc = sqlite3_step(s)) == SQLITE_ROW && n < (size_t)max)
		read_entry(s, &v[n++]);
	done_with(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		db_err(o, e, "selecting entries missing an ETag");
		outbox_entries_free(v, n);
		return -1;
	}
	*out = v;
	*nout = n;
	return 0;
}

int
outbox_etag_due(struct outbox *o)
{
	sqlite3_stmt *s = named_stmt(o, NAMED_ETAG_DUE, sql_etag_due);
	int due = 0;

	if (s != NULL && sqlite3_step(s) == SQLITE_ROW)
		due = 1;
	if (s != NULL)
		sqlite3_reset(s);
	return due;
}

static int
etag_done_in(struct outbox *o, int64_t id, struct err *e)
{
	sqlite3_stmt *s;

	if ((s = stmt(o, ST_ETAG_DONE, e)) == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, id);
	return step_done(o, s, e, "recording an ETag");
}

/* A term the partial indexes carry, so SQLite walks one of them (the
 * legs of leg l in state from) rather than the table; "" when none
 * does. */
static void
move_hint(char *hint, size_t n, int l, enum outbox_state from)
{
	hint[0] = '\0';
	if (from == OUTBOX_PENDING || from == OUTBOX_IN_FLIGHT)
		snprintf(hint, n, " AND %s_state IN ('pending', 'in_flight')",
		    l == 0 ? "s3" : "db");
	else if (from == OUTBOX_FAILED)
		snprintf(hint, n, " AND (s3_state = 'failed' OR "
		    "db_state = 'failed')");
}

/* move_all's UPDATE for leg l (0 S3, 1 database) in state from, of the
 * newest entries of their paths or of older ones; the caller frees it. */
static char *
move_sql(int l, enum outbox_state from, int newest, int retry)
{
	const char *L = l == 0 ? "s3" : "db";
	char attempts[32] = "", hint[64];

	if (retry && newest)
		snprintf(attempts, sizeof(attempts), ", %s_attempts = 0", L);
	move_hint(hint, sizeof(hint), l, from);
	return xasprintf("UPDATE entries SET %s_state = ?1, %s_next_at = ?2, "
	    "updated_at = ?2, %s_error = coalesce(?3, %s_error)%s "
	    "WHERE %s_state = ?4%s AND id %s " NEWEST_OF_PATH, L, L, L, L,
	    attempts, L, hint, newest ? "=" : "<");
}

/*
 * Has leg l any entry in state from? 1 yes (or cannot tell by an index:
 * the UPDATE will look), 0 no, -1 with e. Asked by an index before
 * move_all compiles its UPDATEs: each carries the counts triggers and
 * a dozen partial indexes, and compiling them was a fifth of the start
 * of an outboxd --once (issue 11), when there is mostly nothing to move.
 */
static char *
probe_sql(int l, enum outbox_state from)
{
	char hint[64];

	move_hint(hint, sizeof(hint), l, from);
	if (hint[0] == '\0')
		return NULL;
	return xasprintf("SELECT 1 FROM entries WHERE %s_state = ?1%s LIMIT 1",
	    l == 0 ? "s3" : "db", hint);
}

static int
leg_in_state(struct outbox *o, int l, enum outbox_state from, struct err *e)
{
	sqlite3_stmt *s = NULL;
	char *sql;
	int rc;

	if ((sql = probe_sql(l, from)) == NULL)
		return 1;
	rc = sqlite3_prepare_v2(o->db, sql, -1, &s, NULL);
	free(sql);
	if (rc != SQLITE_OK) {
		db_err(o, e, "looking for legs to move");
		return -1;
	}
	sqlite3_bind_text(s, 1, outbox_state_name(from), -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	sqlite3_finalize(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		db_err(o, e, "looking for legs to move");
		return -1;
	}
	return rc == SQLITE_ROW;
}

/*
 * Moves every leg in state from by event, per legstate.h: one UPDATE for
 * the newest entries of their paths and one for older ones. Adds the
 * number of legs moved to *n.
 */
static int
move_all(struct outbox *o, enum outbox_state from, enum leg_event ev,
    const char *why, int *n, struct err *e)
{
	sqlite3_stmt *s = NULL;
	char now[32], *sql;
	int l, newest;

	now_iso(now);
	for (l = 0; l < 2; l++) {
		int some = leg_in_state(o, l, from, e);

		if (some < 0)
			return -1;
		for (newest = 0; some && newest <= 1; newest++) {
			const struct leg_rule *r = leg_next(from, ev, newest);

			if (r == NULL)
				continue;
			sql = move_sql(l, from, newest, ev == EV_RETRY);
			if (sqlite3_prepare_v2(o->db, sql, -1, &s, NULL) !=
			    SQLITE_OK) {
				free(sql);
				db_err(o, e, "moving legs");
				return -1;
			}
			free(sql);
			sqlite3_bind_text(s, 1, outbox_state_name(r->to), -1,
			    SQLITE_STATIC);
			sqlite3_bind_text(s, 2, now, -1, SQLITE_STATIC);
			sqlite3_bind_text(s, 3, (r->rec & REC_ERROR) ?
			    (newest ? why : "superseded by a newer version") :
			    NULL, -1, SQLITE_STATIC);
			sqlite3_bind_text(s, 4, outbox_state_name(from), -1,
			    SQLITE_STATIC);
			if (sqlite3_step(s) != SQLITE_DONE) {
				sqlite3_finalize(s);
				db_err(o, e, "moving legs");
				return -1;
			}
			*n += sqlite3_changes(o->db);
			sqlite3_finalize(s);
		}
	}
	return 0;
}

static const char sql_skipped_upload[] = "SELECT 1 FROM entries WHERE "
    "s3_upload_id IS NOT NULL AND s3_state = 'skipped' LIMIT 1";

/* Queues for abort the uploads of every skipped S3 leg that has one. */
static int
abort_all_skipped(struct outbox *o, struct err *e)
{
	sqlite3_stmt *s = NULL;
	char now[32];
	int rc;

	/* By entries_upload, before compiling the three that change rows. */
	if (sqlite3_prepare_v2(o->db, sql_skipped_upload, -1, &s, NULL) !=
	    SQLITE_OK) {
		db_err(o, e, "looking for skipped uploads");
		return -1;
	}
	rc = sqlite3_step(s);
	sqlite3_finalize(s);
	if (rc == SQLITE_DONE)
		return 0;
	if (rc != SQLITE_ROW) {
		db_err(o, e, "looking for skipped uploads");
		return -1;
	}
	now_iso(now);
	if (run(o, "INSERT OR IGNORE INTO aborts (upload_id, s3_key, reason, "
	    "created_at, next_at) SELECT s3_upload_id, s3_key, "
	    "coalesce(s3_error, 'skipped'), ?1, ?1 FROM entries "
	    "WHERE s3_state = 'skipped' AND s3_upload_id IS NOT NULL", "t", e,
	    now) < 0)
		return -1;
	if (run(o, "DELETE FROM parts WHERE entry_id IN (SELECT id FROM "
	    "entries WHERE s3_state = 'skipped' AND s3_upload_id IS NOT NULL)",
	    "", e) < 0)
		return -1;
	return run(o, "UPDATE entries SET s3_upload_id = NULL "
	    "WHERE s3_state = 'skipped' AND s3_upload_id IS NOT NULL", "", e);
}

int
outbox_recover(struct outbox *o, struct err *e)
{
	int n = 0, from;

	if (outbox_begin(o, e) < 0)
		return -1;
	if (move_all(o, OUTBOX_IN_FLIGHT, EV_STOPPED,
	    "interrupted: outboxd stopped while working on it", &n, e) < 0)
		goto fail;
	/* Older versions left waiting by earlier releases: never sent. */
	for (from = 0; from < OUTBOX_NSTATES; from++)
		if (leg_next((enum outbox_state)from, EV_SUPERSEDED, 0) != NULL &&
		    move_all(o, (enum outbox_state)from, EV_SUPERSEDED, NULL,
		    &n, e) < 0)
			goto fail;
	if (abort_all_skipped(o, e) < 0)
		goto fail;
	if (outbox_commit(o, e) < 0)
		return -1;
	return n;
fail:
	outbox_rollback(o);
	return -1;
}

/* The first (or last) next-attempt time of leg's pending entries, or -1. */
static int64_t
pending_edge(struct outbox *o, enum stmt_id id, int s3_on, struct err *e)
{
	sqlite3_stmt *s = stmt(o, id, e);
	int64_t t = -1;

	if (s == NULL)
		return -1;
	(void)s3_on;
	if (sqlite3_step(s) == SQLITE_ROW &&
	    sqlite3_column_type(s, 0) != SQLITE_NULL) {
		t = time_parse_iso8601((const char *)sqlite3_column_text(s, 0));
		if (t < 0)
			t = 0;
	}
	done_with(s);
	return t;
}

int64_t
outbox_next_due(struct outbox *o, enum outbox_leg leg, int s3_on,
    struct err *e)
{
	int64_t now = time_now_ms(), first, last;

	first = pending_edge(o, leg == OUTBOX_S3 ? ST_NEXT_S3 : s3_on ?
	    ST_NEXT_DB : ST_NEXT_DB_ALL, s3_on, e);
	if (first < 0)
		return -1;
	if (first <= now)
		return 0;
	/* Times beyond any backoff mean the clock went back: due now. */
	last = pending_edge(o, leg == OUTBOX_S3 ? ST_LAST_S3 : s3_on ?
	    ST_LAST_DB : ST_LAST_DB_ALL, s3_on, e);
	if (last > now + o->horizon_ms)
		return 0;
	return first - now;
}

void
outbox_set_horizon(struct outbox *o, int64_t ms)
{
	o->horizon_ms = ms;
}

/* 1 when the outbox has the counts table (schema 4); a read-only
 * outboxctl may meet an outbox that no outboxd of this release opened. */
static int
has_counts(struct outbox *o)
{
	sqlite3_stmt *s = NULL;
	int has = 0;

	if (sqlite3_prepare_v2(o->db, "SELECT 1 FROM sqlite_master WHERE "
	    "type = 'table' AND name = 'counts'", -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		has = 1;
	sqlite3_finalize(s);
	return has;
}

/*
 * Adds one row of counts (s3 state, db state, needs_etag, n, bytes,
 * retries) to c. Per entry: failed when a live leg failed, pending when a
 * live leg is still to do (or its row still waits for the ETag), done
 * otherwise. A leg that is off counts as done: there is nothing this
 * setup can do about it.
 */
static void
count_group(struct outbox_counts *c, int s3_on, int db_on, int s3, int db,
    int etag, int64_t n)
{
	int open3 = s3 == OUTBOX_PENDING || s3 == OUTBOX_IN_FLIGHT;
	int opendb = db == OUTBOX_PENDING || db == OUTBOX_IN_FLIGHT;

	c->s3[s3] += n;
	c->db[db] += n;
	c->entries += n;
	if ((s3_on && s3 == OUTBOX_FAILED) || (db_on && db == OUTBOX_FAILED))
		c->failed += n;
	else if ((s3_on && open3) || (db_on && (opendb || (s3_on && etag &&
	    s3 != OUTBOX_SKIPPED))))
		c->pending += n;
}

/* The per-state counts of outbox_counts: from the counts the triggers
 * keep, or from a full count on an outbox older than schema 4. */
static int
count_states(struct outbox *o, int s3_on, int db_on, struct outbox_counts *c,
    struct err *e)
{
	sqlite3_stmt *s = NULL;
	int rc;

	if (sqlite3_prepare_v2(o->db, has_counts(o) ? sql_counts_kept :
	    FULL_COUNT, -1, &s, NULL) != SQLITE_OK) {
		db_err(o, e, "counting entries");
		return -1;
	}
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *s3n = (const char *)sqlite3_column_text(s, 0);
		int s3 = outbox_state_parse(s3n);
		int db = outbox_state_parse((const char *)sqlite3_column_text(s, 1));
		int64_t n = sqlite3_column_int64(s, 3);

		if (s3 >= 0 && db >= 0)
			count_group(c, s3_on, db_on, s3, db,
			    sqlite3_column_int(s, 2), n);
		else if (s3n != NULL && strcmp(s3n, "pruned") == 0)
			c->pruned += n;
		c->bytes_done += sqlite3_column_int64(s, 4);
		c->retries[OUTBOX_S3] += sqlite3_column_int64(s, 5);
		c->retries[OUTBOX_DB] += sqlite3_column_int64(s, 6);
	}
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE) {
		db_err(o, e, "counting entries");
		return -1;
	}
	c->done = c->entries - c->failed - c->pending;
	return 0;
}

/*
 * journaled_at of the oldest entry with a live leg pending or in flight:
 * ids grow with time, so it is the lowest id of entries_s3_open and
 * entries_db_open, one row each (the redundant IN term lets SQLite use
 * the partial index).
 */
static int
oldest_open(struct outbox *o, int s3_on, int db_on, struct outbox_counts *c,
    struct err *e)
{
	const char *const *sql = sql_oldest;
	int64_t best = -1;
	char at[32] = "";
	int l, st;

	for (l = 0; l < 2; l++) {
		sqlite3_stmt *s = NULL;

		if ((l == 0 && !s3_on) || (l == 1 && !db_on))
			continue;
		if (sqlite3_prepare_v2(o->db, sql[l], -1, &s, NULL) != SQLITE_OK) {
			db_err(o, e, "finding the oldest pending entry");
			return -1;
		}
		for (st = OUTBOX_PENDING; st <= OUTBOX_IN_FLIGHT; st++) {
			sqlite3_bind_text(s, 1, outbox_state_name(st), -1,
			    SQLITE_STATIC);
			if (sqlite3_step(s) == SQLITE_ROW &&
			    (best < 0 || sqlite3_column_int64(s, 0) < best)) {
				best = sqlite3_column_int64(s, 0);
				copy_fixed(at, sizeof(at), s, 1);
			}
			sqlite3_reset(s);
		}
		sqlite3_finalize(s);
	}
	if (at[0] != '\0')
		c->oldest_pending_ms = time_parse_iso8601(at);
	return 0;
}

/* The newest error of a leg that is not done yet, by entries_error. */
static int
last_error(struct outbox *o, struct outbox_counts *c, struct err *e)
{
	sqlite3_stmt *s = NULL;

	if (sqlite3_prepare_v2(o->db, sql_last_error, -1, &s, NULL) !=
	    SQLITE_OK) {
		db_err(o, e, "reading the last error");
		return -1;
	}
	if (sqlite3_step(s) == SQLITE_ROW) {
		copy_fixed(c->last_error, sizeof(c->last_error), s, 0);
		copy_fixed(c->last_error_at, sizeof(c->last_error_at), s, 1);
	}
	sqlite3_finalize(s);
	return 0;
}

/* The newest done times: kept in meta by triggers (schema 4). */
static int
last_done(struct outbox *o, struct outbox_counts *c, struct err *e)
{
	sqlite3_stmt *s = NULL;
	int kept = has_counts(o);

	if (sqlite3_prepare_v2(o->db, kept ? sql_last_done :
	    "SELECT (SELECT count(*) FROM not_jobs), "
	    " (SELECT max(s3_done_at) FROM entries), "
	    " (SELECT max(db_done_at) FROM entries)", -1, &s, NULL) != SQLITE_OK
	    || sqlite3_step(s) != SQLITE_ROW) {
		db_err(o, e, "counting entries");
		sqlite3_finalize(s);
		return -1;
	}
	c->not_jobs = sqlite3_column_int64(s, 0);
	copy_fixed(c->last_s3_done, sizeof(c->last_s3_done), s, 1);
	copy_fixed(c->last_db_done, sizeof(c->last_db_done), s, 2);
	sqlite3_finalize(s);
	return 0;
}

int
outbox_counts(struct outbox *o, int s3_on, int db_on,
    struct outbox_counts *c, struct err *e)
{
	memset(c, 0, sizeof(*c));
	c->oldest_pending_ms = -1;
	if (count_states(o, s3_on, db_on, c, e) < 0 ||
	    oldest_open(o, s3_on, db_on, c, e) < 0 || last_done(o, c, e) < 0 ||
	    last_error(o, c, e) < 0)
		return -1;
	return 0;
}

int
outbox_counts_check(struct outbox *o, struct err *e)
{
	sqlite3_stmt *s = NULL;
	int rc = 0;

	if (o->cstray_seen > 0) {
		err_set(e, ERR_FATAL, "outbox %s: %ld changes of entries outside "
		    "outbox_begin (the counts kept in C missed them)", o->path,
		    o->cstray_seen);
		return -1;
	}
	/* Rows of either side that the other lacks (groups all zero aside:
	 * a bucket of no entries that still holds bytes or retries is
	 * wrong too). */
	if (sqlite3_prepare_v2(o->db,
	    "WITH kept AS (SELECT s3_state, db_state, needs_etag, n, bytes_done, "
	    "  s3_retries, db_retries FROM counts "
	    "  WHERE s3_state <> 'pruned' AND (n <> 0 OR bytes_done <> 0 OR "
	    "  s3_retries <> 0 OR db_retries <> 0)), full AS (" FULL_COUNT ") "
	    "SELECT 'kept', * FROM (SELECT * FROM kept EXCEPT SELECT * FROM full) "
	    "UNION ALL "
	    "SELECT 'full', * FROM (SELECT * FROM full EXCEPT SELECT * FROM kept) "
	    "LIMIT 1", -1, &s, NULL) != SQLITE_OK) {
		db_err(o, e, "checking the counts");
		return -1;
	}
	if (sqlite3_step(s) == SQLITE_ROW) {
		err_set(e, ERR_FATAL, "outbox %s: the %s count has (s3 %s, db %s, "
		    "etag %d): %lld entries, %lld bytes, retries %lld/%lld, "
		    "which the other lacks", o->path, sqlite3_column_text(s, 0),
		    sqlite3_column_text(s, 1), sqlite3_column_text(s, 2),
		    sqlite3_column_int(s, 3),
		    (long long)sqlite3_column_int64(s, 4),
		    (long long)sqlite3_column_int64(s, 5),
		    (long long)sqlite3_column_int64(s, 6),
		    (long long)sqlite3_column_int64(s, 7));
		rc = -1;
	}
	sqlite3_finalize(s);
	return rc;
}

int
outbox_retry(struct outbox *o, int64_t id, struct err *e)
{
	int n = 0, older = 0;

	if (outbox_begin(o, e) < 0)
		return -1;
	if (id >= 0) {
		/* One entry: its legs, by the same rule. */
		struct outbox_outcome oc = { .event = EV_RETRY };
		int l, st;

		for (l = 0; l < 2; l++) {
			if ((st = outbox_apply(o, (enum outbox_leg)l, id, &oc,
			    e)) < 0)
				goto fail;
			n += st == OUTBOX_PENDING;
		}
		if (run(o, "UPDATE entries SET s3_attempts = CASE WHEN "
		    "s3_state = 'pending' THEN 0 ELSE s3_attempts END, "
		    "db_attempts = CASE WHEN db_state = 'pending' THEN 0 ELSE "
		    "db_attempts END WHERE id = ?1", "i", e, id) < 0)
			goto fail;
	} else {
		if (move_all(o, OUTBOX_FAILED, EV_RETRY, NULL, &older, e) < 0)
			goto fail;
		n = older;
	}
	if (abort_all_skipped(o, e) < 0)
		goto fail;
	if (outbox_commit(o, e) < 0)
		return -1;
	return n;
fail:
	outbox_rollback(o);
	return -1;
}

/* Deletes entry id and its recorded parts. */
static int
prune_one(struct outbox *o, int64_t id, struct err *e)
{
	enum stmt_id ids[2] = { ST_PRUNE_PARTS, ST_PRUNE_ENTRY };
	sqlite3_stmt *s;
	int i;

	for (i = 0; i < 2; i++) {
		if ((s = stmt(o, ids[i], e)) == NULL)
			return -1;
		sqlite3_bind_int64(s, 1, id);
		if (step_done(o, s, e, "pruning") < 0)
			return -1;
	}
	return 0;
}

/* 1 when the row (s3 state, db state, needs_etag, updated_at) of the
 * prune walk may go: both legs final, nothing waiting, old enough. */
static int
prunable(sqlite3_stmt *s, const char *cut)
{
	int s3 = outbox_state_parse((const char *)sqlite3_column_text(s, 2));
	int db = outbox_state_parse((const char *)sqlite3_column_text(s, 3));
	const char *upd = (const char *)sqlite3_column_text(s, 5);

	return (s3 == OUTBOX_DONE || s3 == OUTBOX_SKIPPED) &&
	    (db == OUTBOX_DONE || db == OUTBOX_SKIPPED) &&
	    sqlite3_column_int(s, 4) == 0 && upd != NULL && strcmp(upd, cut) < 0;
}

int
outbox_prune(struct outbox *o, int64_t cut_ms, int max, struct outbox_prune *p,
    struct err *e)
{
	sqlite3_stmt *s = NULL;
	char cut[32];
	int rc, seen = 0, deleted = 0;
	int64_t *ids = xcalloc((size_t)max, sizeof(*ids));

	time_iso8601(cut_ms, cut, sizeof(cut));
	p->finished = 0;
	if (outbox_begin(o, e) < 0) {
		free(ids);
		return -1;
	}
	if (sqlite3_prepare_v2(o->db, sql_prune_walk, -1, &s, NULL) !=
	    SQLITE_OK) {
		db_err(o, e, "pruning");
		goto fail;
	}
	sqlite3_bind_int64(s, 1, p->cursor);
	sqlite3_bind_int(s, 2, max);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *j = (const char *)sqlite3_column_text(s, 1);

		if (j == NULL || strcmp(j, cut) >= 0) {
			p->finished = 1;	/* the rest is younger */
			break;
		}
		p->cursor = sqlite3_column_int64(s, 0);
		seen++;
		if (prunable(s, cut))
			ids[deleted++] = p->cursor;
	}
	if (rc == SQLITE_DONE && seen < max)
		p->finished = 1;
	sqlite3_finalize(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		db_err(o, e, "pruning");
		goto fail;
	}
	for (int i = 0; i < deleted; i++)
		if (prune_one(o, ids[i], e) < 0)
			goto fail;
	if (outbox_commit(o, e) < 0)
		goto fail_done;
	/* Outside the transaction: hands freed pages back (auto_vacuum
	 * INCREMENTAL), a no-op in outboxes made without it. */
	if (deleted > 0)
		sqlite3_exec(o->db, "PRAGMA incremental_vacuum(256)", NULL, NULL,
		    NULL);
	if (p->finished)
		p->cursor = 0;
	free(ids);
	return deleted;
fail:
	outbox_rollback(o);
fail_done:
	free(ids);
	return -1;
}

int
outbox_was_pruned(struct outbox *o, int64_t id)
{
	sqlite3_stmt *s = NULL;
	int pruned = 0;

	/* Ids are never reused (the newest entry is never pruned), and only
	 * retention deletes entries: a missing id below the newest was it. */
	if (sqlite3_prepare_v2(o->db, "SELECT ?1 > 0 AND ?1 < (SELECT max(id) "
	    "FROM entries) AND NOT EXISTS (SELECT 1 FROM entries WHERE id = ?1)",
	    -1, &s, NULL) == SQLITE_OK) {
		sqlite3_bind_int64(s, 1, id);
		if (sqlite3_step(s) == SQLITE_ROW)
			pruned = sqlite3_column_int(s, 0);
	}
	sqlite3_finalize(s);
	return pruned;
}

int
outbox_meta_set(struct outbox *o, const char *key, const char *value,
    struct err *e)
{
	sqlite3_stmt *s = NULL;
	int rc;

	if (sqlite3_prepare_v2(o->db, "INSERT INTO meta (key, value) "
	    "VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = "
	    "excluded.value", -1, &s, NULL) != SQLITE_OK) {
		db_err(o, e, "writing meta");
		return -1;
	}
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
	rc = sqlite3_step(s) == SQLITE_DONE ? 0 : -1;
	if (rc < 0)
		db_err(o, e, "writing meta");
	sqlite3_finalize(s);
	return rc;
}

char *
outbox_meta_get(struct outbox *o, const char *key)
{
	sqlite3_stmt *s = NULL;
	char *v = NULL;

	if (sqlite3_prepare_v2(o->db, "SELECT value FROM meta WHERE key = ?1",
	    -1, &s, NULL) != SQLITE_OK)
		return NULL;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW)
		v = col_dup(s, 0);
	sqlite3_finalize(s);
	return v;
}

/* Runs sql with text/int64 parameters given as a format: 't' text (const
 * char *), 'i' int64_t. For the rarely used statements below. */
static int
run(struct outbox *o, const char *sql, const char *fmt, struct err *e, ...)
{
	sqlite3_stmt *s = NULL;
	va_list ap;
	int i, rc;

	if (sqlite3_prepare_v2(o->db, sql, -1, &s, NULL) != SQLITE_OK) {
		db_err(o, e, "preparing a statement");
		return -1;
	}
	va_start(ap, e);
	for (i = 0; fmt[i] != '\0'; i++) {
		if (fmt[i] == 't')
			sqlite3_bind_text(s, i + 1, va_arg(ap, const char *), -1,
			    SQLITE_TRANSIENT);
		else
			sqlite3_bind_int64(s, i + 1, va_arg(ap, int64_t));
	}
	va_end(ap);
	rc = sqlite3_step(s);
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE) {
		db_err(o, e, "writing");
		return -1;
	}
	return 0;
}

int
outbox_part_done(struct outbox *o, int64_t id, int number, int64_t size,
    const char *etag, const char *digest_hex, struct err *e)
{
	char now[32];

	now_iso(now);
	return run(o, "INSERT OR REPLACE INTO parts (entry_id, part_number, "
	    "size, etag, done_at, md5) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	    "iiittt", e, id, (int64_t)number, size, etag, now, digest_hex);
}

int
outbox_parts(struct outbox *o, int64_t id, struct outbox_part **v, size_t *n,
    struct err *e)
{
	sqlite3_stmt *s = NULL;
	size_t cap = 0;
	int rc;

	*v = NULL;
	*n = 0;
	if (sqlite3_prepare_v2(o->db, "SELECT part_number, size, etag, "
	    "coalesce(md5, '') FROM parts "
	    "WHERE entry_id = ?1 ORDER BY part_number", -1, &s, NULL) !=
	    SQLITE_OK) {
		db_err(o, e, "reading parts");
		return -1;
	}
	sqlite3_bind_int64(s, 1, id);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (*n == cap) {
			cap = cap ? cap * 2 : 16;
			*v = xrealloc(*v, cap * sizeof(**v));
		}
		(*v)[*n].number = sqlite3_column_int(s, 0);
		(*v)[*n].size = sqlite3_column_int64(s, 1);
		copy_fixed((*v)[*n].etag, sizeof((*v)[*n].etag), s, 2);
		copy_fixed((*v)[*n].digest, sizeof((*v)[*n].digest), s, 3);
		(*n)++;
	}
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE) {
		db_err(o, e, "reading parts");
		free(*v);
		*v = NULL;
		*n = 0;
		return -1;
	}
	return 0;
}

int
outbox_upload_clear(struct outbox *o, int64_t id, struct err *e)
{
	if (run(o, "DELETE FROM parts WHERE entry_id = ?1", "i", e, id) < 0)
		return -1;
	return run(o, "UPDATE entries SET s3_upload_id = NULL WHERE id = ?1",
	    "i", e, id);
}

int
outbox_abort_add(struct outbox *o, const char *upload_id, const char *key,
    const char *reason, struct err *e)
{
	char now[32];

	now_iso(now);
	return run(o, "INSERT OR IGNORE INTO aborts (upload_id, s3_key, reason, "
	    "created_at, next_at) VALUES (?1, ?2, ?3, ?4, ?4)", "tttt", e,
	    upload_id, key, reason, now);
}

int
outbox_abort_due(struct outbox *o, int max, struct outbox_abort **v,
    size_t *n, struct err *e)
{
	sqlite3_stmt *s = named_stmt(o, NAMED_ABORT_DUE, sql_abort_due);
	char now[32];
	int rc;

	*v = xcalloc((size_t)max, sizeof(**v));
	*n = 0;
	now_iso(now);
	if (s == NULL) {
		db_err(o, e, "reading aborts");
		return -1;
	}
	sqlite3_bind_text(s, 1, now, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, max);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW && *n < (size_t)max) {
		copy_fixed((*v)[*n].upload_id, sizeof((*v)[*n].upload_id), s, 0);
		(*v)[*n].s3_key = col_dup(s, 1);
		(*v)[*n].attempts = sqlite3_column_int(s, 2);
		(*n)++;
	}
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		db_err(o, e, "reading aborts");
		done_with(s);
		return -1;
	}
	done_with(s);
	return 0;
}

void
outbox_aborts_free(struct outbox_abort *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(v[i].s3_key);
	free(v);
}

int
outbox_abort_done(struct outbox *o, const char *upload_id, struct err *e)
{
	return run(o, "DELETE FROM aborts WHERE upload_id = ?1", "t", e,
	    upload_id);
}

int
outbox_abort_later(struct outbox *o, const char *upload_id, int64_t next_at_ms,
    const char *error, struct err *e)
{
	char next[32];

	time_iso8601(next_at_ms, next, sizeof(next));
	return run(o, "UPDATE aborts SET attempts = attempts + 1, next_at = ?2, "
	    "last_error = ?3 WHERE upload_id = ?1", "ttt", e, upload_id, next,
	    error);
}

/* ---- repairs and the scrub ------------------------------------------------ */

/* A repair of a path whose entries retention pruned: a new entry made
 * from its files row (outbox_journal_repair with of = 0). */
static int
repair_pruned(struct outbox *o, const struct outbox_repair *r, int64_t *id,
    struct err *e)
{
	const char *rest = NULL;
	size_t jl = 0;
	char job[37], event[37], now[32], mtime[32];
	char *key;
	int64_t seq, new_id;
	int rc = -1;

	if (keymap_classify(r->path, &jl, &rest) != KEYMAP_DOCUMENT ||
	    jl >= sizeof(job))
		return 0;
	memcpy(job, r->path, jl);
	job[jl] = '\0';
	key = keymap_s3_key(job, rest);
	uuid_v7(event);
	now_iso(now);
	time_iso8601(r->mtime_ns / 1000000, mtime, sizeof(mtime));
	if ((seq = job_next_seq(o, job, e)) < 0)
		goto out;
	if (run(o, "INSERT INTO entries (event_id, job_id, path, kind, version, "
	    "  size, mtime, mtime_ns, inode, s3_key, sha256, journaled_at, "
	    "  updated_at, s3_state, s3_next_at, s3_etag, s3_error, db_state, "
	    "  db_next_at, repair, seq) "
	    "SELECT ?1, ?2, path, 'document', versions, size, ?3, mtime_ns, "
	    "  inode, ?4, ?5, ?6, ?6, "
	    "  CASE WHEN ?7 IS NULL THEN 'pending' ELSE 'skipped' END, ?6, ?7, "
	    "  CASE WHEN ?7 IS NULL THEN NULL ELSE 'a repair: S3 holds this "
	    "    version already' END, 'pending', ?6, ?8, ?9 "
	    "FROM files WHERE path = ?10 AND size = ?11 AND mtime_ns = ?12 "
	    "  AND inode = ?13 "
	    "  AND NOT EXISTS (SELECT 1 FROM entries WHERE id = files.entry_id)",
	    "ttttttttitiii", e, event, job, mtime, key, r->sha256, now,
	    r->s3_etag, r->why, seq, r->path, r->size, r->mtime_ns,
	    r->inode) < 0)
		goto out;
	rc = 0;
	if (sqlite3_changes(o->db) == 0)
		goto out;
	new_id = sqlite3_last_insert_rowid(o->db);
	if (job_seq_put(o, job, seq, e) < 0 ||
	    run(o, "UPDATE files SET entry_id = ?2 WHERE path = ?1", "ti", e,
	    r->path, new_id) < 0) {
		rc = -1;
		goto out;
	}
	if (id != NULL)
		*id = new_id;
	rc = 1;
out:
	free(key);
	return rc;
}

static int
journal_repair_in(struct outbox *o, const struct outbox_repair *r,
    int64_t *id, struct err *e)
{
	char event[37], now[32];
	char *path = NULL, *job = NULL;
	sqlite3_stmt *s = NULL;
	int64_t new_id, seq;
	int rc = -1;

	if (r->of == 0)
		return repair_pruned(o, r, id, e);
	/* Only while `of` is its path's newest: a version the watcher
	 * journaled meanwhile wins, and needs no repair. */
	if (sqlite3_prepare_v2(o->db, "SELECT path, job_id FROM entries WHERE "
	    "id = ?1 AND id = " NEWEST_OF_PATH, -1, &s, NULL) != SQLITE_OK) {
		db_err(o, e, "journaling a repair");
		return -1;
	}
	sqlite3_bind_int64(s, 1, r->of);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		path = col_dup(s, 0);
		job = col_dup(s, 1);
	} else if (rc != SQLITE_DONE) {
		/* An I/O error may have ended the caller's transaction: not
		 * "nothing to repair", or the rest of it would run outside. */
		db_err(o, e, "journaling a repair");
		sqlite3_finalize(s);
		return -1;
	}
	sqlite3_finalize(s);
	rc = -1;
	if (path == NULL)
		return 0;
	uuid_v7(event);
	now_iso(now);
	/* A copy of `of` as a new entry, in its job's fair order like any
	 * new one; the S3 leg starts skipped when S3 holds the version. */
	if ((seq = job_next_seq(o, job, e)) < 0 ||
	    run(o, "INSERT INTO entries (event_id, job_id, path, kind, version, "
	    "  size, mtime, mtime_ns, inode, s3_key, sha256, journaled_at, "
	    "  updated_at, s3_state, s3_next_at, s3_etag, s3_error, db_state, "
	    "  db_next_at, repair, seq) "
	    "SELECT ?1, job_id, path, kind, version, size, mtime, mtime_ns, "
	    "  inode, s3_key, coalesce(?3, sha256), ?2, ?2, "
	    "  CASE WHEN ?4 IS NULL THEN 'pending' ELSE 'skipped' END, ?2, ?4, "
	    "  CASE WHEN ?4 IS NULL THEN NULL ELSE 'a repair: S3 holds this "
	    "    version already' END, 'pending', ?2, ?5, ?7 "
	    "FROM entries WHERE id = ?6",
	    "tttttii", e, event, now, r->sha256, r->s3_etag, r->why, r->of,
	    seq) < 0 || job_seq_put(o, job, seq, e) < 0)
		goto out;
	new_id = sqlite3_last_insert_rowid(o->db);
	/* The repair is now the path's newest; versions stays (it is the
	 * same version), and the stat is the one journaled. */
	if (run(o, "UPDATE files SET entry_id = ?2 WHERE path = ?1", "ti", e,
	    path, new_id) < 0 ||
	    supersede_older(o, path, new_id, now, e) < 0)
		goto out;
	if (id != NULL)
		*id = new_id;
	rc = 1;
out:
	free(path);
	free(job);
	return rc;
}

/* Reads the entries a query with ENTRY_COLUMNS returns into *out. */
static int
read_entries(struct outbox *o, sqlite3_stmt *s, struct outbox_entry **out,
    size_t *nout, struct err *e)
{
	struct outbox_entry *v = NULL;
	size_t n = 0, cap = 0;
	int rc;

	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			v = xrealloc(v, cap * sizeof(*v));
		}
		read_entry(s, &v[n++]);
	}
	if (rc != SQLITE_DONE) {
		db_err(o, e, "reading entries");
		outbox_entries_free(v, n);
		return -1;
	}
	*out = v;
	*nout = n;
	return 0;
}

int
outbox_newest(struct outbox *o, const char *path, struct outbox_entry *en,
    struct err *e)
{
	struct outbox_entry *v = NULL;
	sqlite3_stmt *s = NULL;
	size_t n = 0;
	int rc;

	if (sqlite3_prepare_v2(o->db, "SELECT " ENTRY_COLUMNS " FROM entries "
	    "WHERE id = (SELECT entry_id FROM files WHERE path = ?1)", -1, &s,
	    NULL) != SQLITE_OK) {
		db_err(o, e, "reading an entry");
		return -1;
	}
	sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
	rc = read_entries(o, s, &v, &n, e);
	sqlite3_finalize(s);
	if (rc < 0)
		return -1;
	if (n == 0) {
		free(v);
		return 0;
	}
	*en = v[0];
	free(v);
	return 1;
}

int
outbox_scrub_batch(struct outbox *o, int64_t after, int max,
    struct outbox_entry **v, size_t *n, struct err *e)
{
	sqlite3_stmt *s = NULL;
	int rc;

	*v = NULL;
	*n = 0;
	/* By primary key from the cursor: bounded, no scan. Only settled
	 * entries: a pending leg, or a row still waiting for its ETag, is
	 * no difference to repair (review finding: a back-fill due looked
	 * like a wrong ETag). */
	if (sqlite3_prepare_v2(o->db, "SELECT " ENTRY_COLUMNS " FROM entries "
	    "WHERE id > ?1 AND kind = 'document' AND id = " NEWEST_OF_PATH
	    "  AND s3_state IN ('done', 'skipped') "
	    "  AND db_state IN ('done', 'skipped') AND db_needs_etag = 0 "
	    "ORDER BY id LIMIT ?2", -1, &s, NULL) != SQLITE_OK) {
		db_err(o, e, "reading entries to scrub");
		return -1;
	}
	sqlite3_bind_int64(s, 1, after);
	sqlite3_bind_int(s, 2, max);
	rc = read_entries(o, s, v, n, e);
	sqlite3_finalize(s);
	return rc;
}

int
outbox_scrub_pruned(struct outbox *o, int64_t after, int64_t upto, int max,
    struct outbox_entry **v, size_t *n, struct err *e)
{
	sqlite3_stmt *s = NULL;
	size_t cap = 0;
	int rc;

	*v = NULL;
	*n = 0;
	/* By files_entry from the cursor, to upto: each files row is looked
	 * at once a pass. */
	if (sqlite3_prepare_v2(o->db, "SELECT entry_id, path, size, mtime_ns, "
	    "inode, versions FROM files WHERE entry_id > ?1 AND entry_id <= ?2 "
	    "AND NOT EXISTS (SELECT 1 FROM entries WHERE id = files.entry_id) "
	    "ORDER BY entry_id LIMIT ?3", -1, &s, NULL) != SQLITE_OK) {
		db_err(o, e, "reading pruned paths to scrub");
		return -1;
	}
	sqlite3_bind_int64(s, 1, after);
	sqlite3_bind_int64(s, 2, upto);
	sqlite3_bind_int(s, 3, max);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *path = (const char *)sqlite3_column_text(s, 1);
		const char *rest = NULL;
		struct outbox_entry *en;
		size_t jl = 0;

		if (path == NULL || keymap_classify(path, &jl, &rest) !=
		    KEYMAP_DOCUMENT || jl >= sizeof(en->job_id))
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 16;
			*v = xrealloc(*v, cap * sizeof(**v));
		}
		en = &(*v)[(*n)++];
		memset(en, 0, sizeof(*en));
		en->id = sqlite3_column_int64(s, 0);
		memcpy(en->job_id, path, jl);
		en->job_id[jl] = '\0';
		en->path = xstrdup(path);
		en->s3_key = keymap_s3_key(en->job_id, rest);
		en->size = sqlite3_column_int64(s, 2);
		en->mtime_ns = sqlite3_column_int64(s, 3);
		en->inode = sqlite3_column_int64(s, 4);
		en->version = sqlite3_column_int(s, 5);
		en->s3_state = en->db_state = OUTBOX_DONE;
	}
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE) {
		db_err(o, e, "reading pruned paths to scrub");
		outbox_entries_free(*v, *n);
		*v = NULL;
		*n = 0;
		return -1;
	}
	return 0;
}

int64_t
outbox_max_id(struct outbox *o)
{
	sqlite3_stmt *s = NULL;
	int64_t id = 0;

	if (sqlite3_prepare_v2(o->db, "SELECT coalesce(max(id), 0) FROM entries",
	    -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
		id = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return id;
}

/* The scrub's meta keys and where each lives in struct outbox_scrub. */
#define SCRUB_FIELD(name, field) { "scrub." name, offsetof(struct outbox_scrub, \
	field) }
static const struct { const char *key; size_t off; } scrub_ints[] = {
	SCRUB_FIELD("pass", pass), SCRUB_FIELD("cursor", cursor),
	SCRUB_FIELD("end_id", end_id), SCRUB_FIELD("checked", checked),
	SCRUB_FIELD("found", found), SCRUB_FIELD("repaired", repaired),
	SCRUB_FIELD("total_checked", total_checked),
	SCRUB_FIELD("total_found", total_found),
	SCRUB_FIELD("total_repaired", total_repaired),
};

int
outbox_scrub_get(struct outbox *o, struct outbox_scrub *st, struct err *e)
{
	sqlite3_stmt *s = NULL;
	size_t i;
	int rc;

	memset(st, 0, sizeof(*st));
	if (sqlite3_prepare_v2(o->db, "SELECT key, value FROM meta WHERE key "
	    "BETWEEN 'scrub.' AND 'scrub.~'", -1, &s, NULL) != SQLITE_OK) {
		db_err(o, e, "reading the scrub's state");
		return -1;
	}
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *k = (const char *)sqlite3_column_text(s, 0);

		for (i = 0; i < sizeof(scrub_ints) / sizeof(scrub_ints[0]); i++)
			if (strcmp(k, scrub_ints[i].key) == 0)
				*(int64_t *)((char *)st + scrub_ints[i].off) =
				    sqlite3_column_int64(s, 1);
		if (strcmp(k, "scrub.running") == 0)
			st->running = sqlite3_column_int(s, 1);
		else if (strcmp(k, "scrub.started_at") == 0)
			copy_fixed(st->started_at, sizeof(st->started_at), s, 1);
		else if (strcmp(k, "scrub.finished_at") == 0)
			copy_fixed(st->finished_at, sizeof(st->finished_at), s, 1);
	}
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE) {
		db_err(o, e, "reading the scrub's state");
		return -1;
	}
	return 0;
}

int
outbox_scrub_put(struct outbox *o, const struct outbox_scrub *st,
    struct err *e)
{
	char num[32];
	size_t i;

	for (i = 0; i < sizeof(scrub_ints) / sizeof(scrub_ints[0]); i++) {
		snprintf(num, sizeof(num), "%lld", (long long)*(const int64_t *)
		    ((const char *)st + scrub_ints[i].off));
		if (outbox_meta_set(o, scrub_ints[i].key, num, e) < 0)
			return -1;
	}
	snprintf(num, sizeof(num), "%d", st->running);
	if (outbox_meta_set(o, "scrub.running", num, e) < 0 ||
	    outbox_meta_set(o, "scrub.started_at", st->started_at, e) < 0 ||
	    outbox_meta_set(o, "scrub.finished_at", st->finished_at, e) < 0)
		return -1;
	return 0;
}

/* Calls fn with sql and its EXPLAIN QUERY PLAN, one detail a line. */
static int
explain_one(struct outbox *o, const char *sql,
    void (*fn)(void *arg, const char *sql, const char *plan), void *arg)
{
	char *q = xasprintf("EXPLAIN QUERY PLAN %s", sql);
	struct buf b = {0};
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(o->db, q, -1, &s, NULL);

	free(q);
	if (rc != SQLITE_OK) {
		buf_printf(&b, "error: %s", sqlite3_errmsg(o->db));
	} else {
		while (sqlite3_step(s) == SQLITE_ROW)
			buf_printf(&b, "%s\n", sqlite3_column_text(s, 3));
	}
	sqlite3_finalize(s);
	fn(arg, sql, b.len ? b.data : "");
	buf_free(&b);
	return rc == SQLITE_OK ? 0 : -1;
}

int
outbox_explain(struct outbox *o,
    void (*fn)(void *arg, const char *sql, const char *plan), void *arg)
{
	const char *const named[] = { sql_etag_due, sql_abort_due,
	    sql_prune_walk, sql_oldest[0], sql_oldest[1], sql_last_error,
	    sql_counts_kept, sql_last_done, sql_skipped_upload };
	static const enum outbox_state froms[] = { OUTBOX_IN_FLIGHT,
	    OUTBOX_PENDING, OUTBOX_FAILED };
	int i, l, k, newest, n = 0;

	for (i = 0; i < ST_COUNT; i++, n++)
		if (explain_one(o, stmt_sql[i], fn, arg) < 0)
			return -1;
	for (i = 0; i < (int)(sizeof(named) / sizeof(named[0])); i++, n++)
		if (explain_one(o, named[i], fn, arg) < 0)
			return -1;
	for (l = 0; l < 2; l++)
		for (k = 0; k < 3; k++)
			for (newest = 0; newest <= 1; newest++, n++) {
				char *sql = move_sql(l, froms[k], newest,
				    froms[k] == OUTBOX_FAILED);
				int rc = explain_one(o, sql, fn, arg);

				free(sql);
				if (rc < 0)
					return -1;
			}
	/* recovery's probes before those */
	for (l = 0; l < 2; l++)
		for (k = 0; k < 3; k++, n++) {
			char *sql = probe_sql(l, froms[k]);
			int rc = explain_one(o, sql, fn, arg);

			free(sql);
			if (rc < 0)
				return -1;
		}
	return n;
}

/*
 * The calls that change what the counts keep, each in a transaction of
 * its own when the caller holds none (the counts kept in C are written
 * at COMMIT; see "The counts, kept in C"). outbox_claim and the calls
 * that move many legs open their own.
 */
static int
own_begin(struct outbox *o, struct err *e)
{
	if (o->depth > 0 && sqlite3_get_autocommit(o->db)) {
		err_set(e, ERR_TRANSIENT, "outbox %s: the transaction was rolled "
		    "back by an error", o->path);
		return -1;
	}
	if (o->depth > 0)
		return 0;
	return outbox_begin(o, e) < 0 ? -1 : 1;
}

/* rc of the call inside; -1 if the own transaction did not commit. */
static int
own_end(struct outbox *o, int own, int rc, struct err *e)
{
	if (own <= 0)
		return rc;
	if (rc < 0) {
		outbox_rollback(o);
		return rc;
	}
	return outbox_commit(o, e) < 0 ? -1 : rc;
}

int
outbox_journal(struct outbox *o, const struct outbox_file *f, int64_t *id,
    struct err *e)
{
	int own = own_begin(o, e);

	if (own < 0)
		return -1;
	return own_end(o, own, journal_in(o, f, id, e), e);
}

int
outbox_apply(struct outbox *o, enum outbox_leg leg, int64_t id,
    const struct outbox_outcome *oc, struct err *e)
{
	int own = own_begin(o, e);

	if (own < 0)
		return -1;
	return own_end(o, own, apply_in(o, leg, id, oc, e), e);
}

int
outbox_etag_done(struct outbox *o, int64_t id, struct err *e)
{
	int own = own_begin(o, e);

	if (own < 0)
		return -1;
	return own_end(o, own, etag_done_in(o, id, e), e);
}

int
outbox_journal_repair(struct outbox *o, const struct outbox_repair *r,
    int64_t *id, struct err *e)
{
	int own = own_begin(o, e);

	if (own < 0)
		return -1;
	return own_end(o, own, journal_repair_in(o, r, id, e), e);
}
