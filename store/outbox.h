/*
 * outbox.h - the durable SQLite journal between the watcher and the sync
 * thread (schema in schema/outbox.sql).
 *
 * Each thread opens its own struct outbox: a connection in WAL mode with a
 * busy timeout and its statements prepared once. Transactions are short
 * (BEGIN IMMEDIATE ... COMMIT) and never span network I/O: the sync thread
 * claims entries (marking them in_flight), talks to the stores with no
 * transaction open, then records the outcome.
 *
 * Invariants:
 *  - an entry leaves the table only by retention (outbox_prune), once
 *    both its legs are done or skipped; its legs end in done, failed
 *    (until an admin retries) or skipped (with the reason in *_error);
 *    the files table keeps its path's row, so it is never journaled again;
 *  - the counts table equals a full count of the entries (triggers keep
 *    it in the transaction that changes them; outbox_counts_check);
 *  - a newer version of a path supersedes older ones not yet stored, so a
 *    stale version can never overwrite a newer one remotely;
 *  - in_flight exists only while a process works on the leg; outbox_recover
 *    turns leftovers from a crash back into pending.
 */
#ifndef OUTBOXD_OUTBOX_H
#define OUTBOXD_OUTBOX_H

#include <stdint.h>
#include <stddef.h>

#include "base/util.h"
#include "store/legstate.h"

struct outbox;

enum outbox_leg { OUTBOX_S3, OUTBOX_DB };



/*
 * Opens (creating when missing) the outbox at path and applies its schema.
 * readonly=1 for outboxctl's read-only verbs. Returns NULL with e filled.
 */
struct outbox *outbox_open(const char *path, int readonly, struct err *e);
/* Closes the connection; NULL is a no-op. */
void outbox_close(struct outbox *o);

/*
 * Takes the exclusive lock that marks the one outboxd working on this
 * outbox (a lock file beside it). Returns 0, -1 with e when another
 * process holds it (e says which pid), or -1 on error.
 */
int outbox_lock(struct outbox *o, struct err *e);
/* The pid of the outboxd holding the lock, or 0 when none does. */
long outbox_lock_owner(const char *db_path);

int outbox_begin(struct outbox *o, struct err *e);
int outbox_commit(struct outbox *o, struct err *e);
void outbox_rollback(struct outbox *o);

/* A finished file as the watcher saw it. */
struct outbox_file {
	const char *path;	/* relative to the uploads root, "<job>/..." */
	int64_t size;
	int64_t mtime_ns;
	int64_t inode;
	int64_t not_before_ms;	/* wall-clock ms before which neither leg
				   is tried; 0: at once */
};

/*
 * Journals f unless the newest entry for its path has the same size,
 * mtime and inode. Returns 1 when a new entry was made (*id set when id is
 * not NULL), 0 when nothing changed, -1 on error. Call inside a
 * transaction; the path must be in a job (see keymap_classify).
 */
int outbox_journal(struct outbox *o, const struct outbox_file *f, int64_t *id,
    struct err *e);

/* Records (or refreshes) a top-level directory that is not a job. */
int outbox_note_not_job(struct outbox *o, const char *dir, struct err *e);

/* An entry as the sync thread works on it. Strings are owned by it. */
struct outbox_entry {
	int64_t id;
	char event_id[37];
	char job_id[37];
	char *path;		/* relative to the uploads root */
	char *s3_key;
	int job_meta;		/* <job>/job.json: applied, not uploaded */
	int version;
	int64_t size, mtime_ns, inode;
	char sha256[65];	/* "" until known */
	char *s3_etag;		/* NULL until the S3 leg is done */
	int s3_state, db_state;
	int s3_attempts, db_attempts;	/* including the claim */
	char *upload_id;	/* an unfinished multipart upload, or NULL */
	int repair;		/* journaled by verify --repair or the scrub,
				   not by the user: the database leg adds no
				   activity */
	int64_t seq;		/* fair claim order (schema 4) */
	int db_needs_etag;	/* recorded before S3 answered */
};

void outbox_entry_free(struct outbox_entry *en);
void outbox_entries_free(struct outbox_entry *v, size_t n);

/*
 * Claims up to max legs that are due (pending, next attempt reached) and
 * marks them in_flight, attempts + 1, in one transaction. For the
 * database leg, an entry is due once its S3 leg is done or skipped, has
 * failed at least once, or s3_on is 0. Oldest first. skip(arg, id, path)
 * returning 1 leaves an entry alone (its path is already in flight).
 */
int outbox_claim(struct outbox *o, enum outbox_leg leg, int max, int s3_on,
    int (*skip)(void *arg, int64_t id, const char *path), void *skip_arg,
    struct outbox_entry **v, size_t *n, struct err *e);
/*
 * The same, claiming ahead: up to firm legs as outbox_claim does, then up
 * to ahead more, in order, while the sizes of those extra legs sum to at
 * most ahead_bytes (the first that would pass it ends the claim), so a
 * turn claims a batch of small files and no large file early.
 */
int outbox_claim_ahead(struct outbox *o, enum outbox_leg leg, int firm,
    int ahead, int64_t ahead_bytes, int s3_on,
    int (*skip)(void *arg, int64_t id, const char *path), void *skip_arg,
    struct outbox_entry **out, size_t *nout, struct err *e);

/* What the engine learned of one claimed leg. */
struct outbox_outcome {
	enum leg_event event;		/* stored, transient, gone, ... */
	const char *error;		/* the message for errors and skips */
	int64_t next_at_ms;		/* transient: not before (wall ms) */
	const char *etag;		/* S3 stored: the ETag */
	const char *sha256;		/* when the leg learned it, else NULL */
	int unsent;			/* EV_STOPPED before any request was
					   sent: the claim's attempt is taken
					   back */
};

/*
 * Moves leg of entry id by the state table (legstate.h): reads the leg's
 * state and whether the entry is its path's newest version, and records
 * what the rule says (the new state, error, next attempt, ETag, stat
 * forgotten, multipart abort queued). Returns the state the leg is in
 * afterwards (unchanged when no rule applies, e.g. a late outcome), 0..4,
 * or -1 with e. Call inside a transaction (outbox_begin).
 */
int outbox_apply(struct outbox *o, enum outbox_leg leg, int64_t id,
    const struct outbox_outcome *oc, struct err *e);

/* Sets or clears (upload_id NULL) the entry's multipart upload id. */
int outbox_set_upload_id(struct outbox *o, int64_t id, const char *upload_id,
    struct err *e);

/* A part of a multipart upload that S3 acknowledged. */
struct outbox_part {
	int number;
	int64_t size;
	char etag[128];		/* as S3 returned it */
	char digest[65];	/* hex SHA-256 of the bytes sent (column md5:
				   an MD5 before issue 15, "" in outboxes
				   older than schema 2) */
};

/* Records part number of entry id as stored (replacing an older record). */
int outbox_part_done(struct outbox *o, int64_t id, int number, int64_t size,
    const char *etag, const char *digest_hex, struct err *e);
/* The recorded parts of entry id, by number; the caller frees *v. */
int outbox_parts(struct outbox *o, int64_t id, struct outbox_part **v,
    size_t *n, struct err *e);
/* Forgets entry id's upload: its upload id and recorded parts. */
int outbox_upload_clear(struct outbox *o, int64_t id, struct err *e);

/* A multipart upload to abort. */
struct outbox_abort {
	char upload_id[1024];
	char *s3_key;
	int attempts;
};
/* Queues upload_id (of key) for AbortMultipartUpload. */
int outbox_abort_add(struct outbox *o, const char *upload_id, const char *key,
    const char *reason, struct err *e);
/* Up to max queued aborts that are due; free with outbox_aborts_free. */
int outbox_abort_due(struct outbox *o, int max, struct outbox_abort **v,
    size_t *n, struct err *e);
void outbox_aborts_free(struct outbox_abort *v, size_t n);
/* S3 confirmed (or never knew) the upload: forget it. */
int outbox_abort_done(struct outbox *o, const char *upload_id, struct err *e);
/* The abort failed transiently: try again at next_at_ms. */
int outbox_abort_later(struct outbox *o, const char *upload_id,
    int64_t next_at_ms, const char *error, struct err *e);

/* Entries whose database row still lacks the S3 ETag that is now known. */
int outbox_etag_todo(struct outbox *o, int max, struct outbox_entry **v,
    size_t *n, struct err *e);
int outbox_etag_done(struct outbox *o, int64_t id, struct err *e);
/* 1 when some row's ETag can be back-filled now (see outbox_etag_todo). */
int outbox_etag_due(struct outbox *o);

/* Legs left in flight by a crash or a stop are "stopped" (legstate.h:
 * pending again, or skipped when a newer version exists), and any older
 * version's leg still pending or failed is superseded. Returns how many
 * legs moved. */
int outbox_recover(struct outbox *o, struct err *e);

/* Tells the outbox which legs run (at the sync thread's start): only live
 * legs' claim frontiers hold back the seq of new entries. 0 or -1. */
int outbox_live_legs(struct outbox *o, int s3_on, int db_on, struct err *e);

/*
 * Milliseconds until leg's next pending entry is due (0 when one is due
 * now), or -1 when none is pending. For the database leg only entries
 * that outbox_claim would take count (s3_on as there).
 */
int64_t outbox_next_due(struct outbox *o, enum outbox_leg leg, int s3_on,
    struct err *e);

/* Tells the outbox the longest backoff in use: a next attempt further in
 * the future than that means the wall clock was set back, and the entry
 * is taken as due now rather than left waiting (default: one day). */
void outbox_set_horizon(struct outbox *o, int64_t ms);

/* Counts for status and metrics. */
struct outbox_counts {
	int64_t s3[OUTBOX_NSTATES];	/* entries per S3 leg state */
	int64_t db[OUTBOX_NSTATES];	/* entries per database leg state */
	int64_t entries, pending, failed, done;	/* per entry (both legs) */
	int64_t oldest_pending_ms;	/* journaled_at of the oldest, or -1 */
	int64_t not_jobs;		/* top-level dirs that are not jobs */
	int64_t bytes_done;		/* sum of sizes with the S3 leg done */
	int64_t retries[2];		/* attempts beyond the first, per leg */
	char last_error[512];		/* newest *_error of a non-done leg */
	char last_error_at[32];
	char last_s3_done[32];		/* newest s3_done_at, or "" */
	char last_db_done[32];
	int64_t pruned;			/* done entries retention deleted */
};
/* Fills c from the counts kept beside the entries (no scan of the
 * entries table; schema 4) and a few indexed lookups. 0 or -1 with e. */
int outbox_counts(struct outbox *o, int s3_on, int db_on,
    struct outbox_counts *c, struct err *e);
/* 0 when the kept counts equal a full count of the entries, else -1 with
 * e naming a difference. For tests and the simulation. */
int outbox_counts_check(struct outbox *o, struct err *e);
/* How many changes of entries this connection saw outside outbox_begin,
 * where the counts it keeps in C (store/outbox.c) had to be counted
 * afresh. Always 0 unless a caller writes entries behind the outbox's
 * back; the simulation checks it. */
long outbox_counts_stray(const struct outbox *o);

/*
 * Retention: one batch (at most max entries looked at, one short
 * transaction) of the walk that deletes entries whose legs are both done
 * or skipped and that nothing changed since cut_ms (wall ms). Failed,
 * pending and in-flight entries, and the newest entry (so ids are never
 * reused), stay. The walk goes by id from p->cursor and ends at the first
 * entry journaled after cut_ms (ids grow with time); then p->finished is
 * set and the cursor goes back to 0 for the next walk. Freed pages go
 * back to the file system in an outbox made with incremental auto-vacuum
 * (new ones), else they are reused. Returns entries deleted, or -1.
 */
struct outbox_prune {
	int64_t cursor;		/* the last id looked at; 0 to start */
	int finished;		/* set when the walk reached its end */
};
int outbox_prune(struct outbox *o, int64_t cut_ms, int max,
    struct outbox_prune *p, struct err *e);
/* 1 when entry id existed but was deleted by retention, else 0. */
int outbox_was_pruned(struct outbox *o, int64_t id);

/* For tests: calls fn with each statement the outbox runs (per turn, for
 * status, retention and recovery) and its EXPLAIN QUERY PLAN, one detail
 * a line. Returns how many, or -1 when one fails to prepare. */
int outbox_explain(struct outbox *o,
    void (*fn)(void *arg, const char *sql, const char *plan), void *arg);

/* Retries failed legs of entry id (or of every entry when id < 0):
 * pending and due now, or skipped for an older version (legstate.h).
 * Returns the number of legs that went back to pending, or -1. */
int outbox_retry(struct outbox *o, int64_t id, struct err *e);

/*
 * A repair: the newest entry of a path is settled, the file is still that
 * version, but a store lost or altered its copy (found by outboxctl verify
 * --repair or the scrub). outbox_journal_repair journals a new entry for
 * the same version (same stat and version number, a new event id, column
 * repair = why) that becomes the path's newest and goes through both legs
 * like any entry, except that its database leg adds no user activity.
 * When s3_etag is given, S3 was found to hold this version already: the
 * S3 leg starts skipped with that ETag, and only the database leg runs.
 * Returns 1 (*id set), 0 when entry `of` is no longer its path's newest
 * (the watcher journaled a newer version meanwhile: nothing to repair),
 * or -1 with e. Call inside a transaction.
 * With of = 0, the path's entries were pruned by retention: the repair is
 * made from its files row, when that still has the stat given (0
 * otherwise: the file changed, the watcher journals it).
 */
struct outbox_repair {
	int64_t of;		/* the entry whose version is repaired, or 0 */
	const char *sha256;	/* of the file now, or NULL: of's */
	const char *s3_etag;	/* S3 holds the version already, or NULL */
	const char *why;	/* what was found, for people */
	const char *path;	/* of = 0: the path, and its stat now
				   (otherwise unused) */
	int64_t size, mtime_ns, inode;
};
int outbox_journal_repair(struct outbox *o, const struct outbox_repair *r,
    int64_t *id, struct err *e);

/* The newest entry journaled for path: 1 (en filled; free it with
 * outbox_entry_free), 0 when there is none, -1 with e. */
int outbox_newest(struct outbox *o, const char *path, struct outbox_entry *en,
    struct err *e);

/* Up to max document entries with id > after that are their path's newest
 * and have no leg in flight or failed, by id: what the scrub checks next.
 * The caller frees *v with outbox_entries_free. */
int outbox_scrub_batch(struct outbox *o, int64_t after, int max,
    struct outbox_entry **v, size_t *n, struct err *e);
/*
 * Up to max document paths whose entries retention pruned (their files
 * row names an entry that is gone), with after < that entry's id <= upto,
 * by that id: what the scrub checks beside outbox_scrub_batch's entries.
 * Each comes as an entry with the pruned entry's id, the files row's
 * stat and version, its S3 key, sha256 "" (the scrub hashes the file)
 * and both legs done. Free *v with outbox_entries_free.
 */
int outbox_scrub_pruned(struct outbox *o, int64_t after, int64_t upto,
    int max, struct outbox_entry **v, size_t *n, struct err *e);
/* The largest entry id so far (0 when none). */
int64_t outbox_max_id(struct outbox *o);

/* Where the scrub stands, kept in the meta table (keys scrub.*) so a
 * restart continues the pass and outboxctl status can show it. */
struct outbox_scrub {
	int64_t pass;		/* passes started so far */
	int running;		/* a pass is under way */
	int64_t cursor;		/* entries up to this id are checked */
	int64_t end_id;		/* the largest id when the pass started */
	int64_t checked, found, repaired;	/* in this (or the last) pass */
	int64_t total_checked, total_found, total_repaired;	/* ever */
	char started_at[32];	/* ISO-8601, "" never */
	char finished_at[32];	/* of the last finished pass, "" none */
};
/* Reads the state (zeros when the scrub never ran); 0 or -1 with e. */
int outbox_scrub_get(struct outbox *o, struct outbox_scrub *st, struct err *e);
/* Writes the state (call inside a transaction to keep it with repairs). */
int outbox_scrub_put(struct outbox *o, const struct outbox_scrub *st,
    struct err *e);

/* Sets a meta key (e.g. which legs the daemon runs); 0 or -1 with e. */
int outbox_meta_set(struct outbox *o, const char *key, const char *value,
    struct err *e);
/* A meta value, or NULL when unset; the caller frees it. */
char *outbox_meta_get(struct outbox *o, const char *key);

/* The raw connection, for outboxctl's listings. Owned by o. */
struct sqlite3 *outbox_db(struct outbox *o);

#endif
