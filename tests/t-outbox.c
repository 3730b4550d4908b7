/*
 * t-outbox.c - proves the outbox's promises on a real SQLite file: a file
 * is journaled once per version (a rescan of an unchanged file adds
 * nothing), a newer version supersedes an older one not yet stored, legs
 * move pending -> in_flight -> done/pending/failed, a crash's in_flight
 * legs come back as pending, the database leg waits for the S3 leg's
 * first attempt, retry revives failed legs, and a second process cannot
 * take the lock.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "base/util.h"
#include "store/outbox.h"
#include "tap.h"

#define JOB "6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f"

static int
count(struct outbox *o, const char *where)
{
	char sql[512];
	sqlite3_stmt *s;
	int n = -1;

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM entries WHERE %s",
	    where);
	if (sqlite3_prepare_v2(outbox_db(o), sql, -1, &s, NULL) == 0 &&
	    sqlite3_step(s) == 100)
		n = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	return n;
}

/* The first column of the first row of sql, or NULL; the caller frees. */
static char *
query_text(struct outbox *o, const char *sql)
{
	sqlite3_stmt *s;
	char *t = NULL;

	if (sqlite3_prepare_v2(outbox_db(o), sql, -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0) != NULL)
		t = strdup((const char *)sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
	return t;
}

static int
journal(struct outbox *o, const char *path, int64_t size, int64_t mtime,
    int64_t *id)
{
	struct outbox_file f = { path, size, mtime, 42, 0 };
	struct err e = {0};
	int rc;

	outbox_begin(o, &e);
	rc = outbox_journal(o, &f, id, &e);
	outbox_commit(o, &e);
	return rc;
}

/* One outcome in its own transaction, as the engine's flush writes it. */
static int
finish(struct outbox *o, enum outbox_leg leg, int64_t id,
    const struct outbox_outcome *oc, struct err *e)
{
	if (outbox_begin(o, e) < 0)
		return -1;
	if (outbox_apply(o, leg, id, oc, e) < 0) {
		outbox_rollback(o);
		return -1;
	}
	return outbox_commit(o, e);
}

/* Skips the first 20 entries it is asked about (as a paused leg's probe
 * skips keys denied since the last success). */
static int
skip_twenty(void *arg, int64_t id, const char *path)
{
	int64_t *first = arg;

	(void)path;
	return id < *first + 20;
}

/* outbox_claim_ahead: a skip reaches past many rows, and rows claimed
 * beyond the firm ones stop at their byte budget. */
static void
claims_ahead(const char *dir)
{
	char path[256], name[64];
	struct outbox *o;
	struct outbox_entry *v = NULL;
	struct err e = {0};
	size_t nv = 0;
	int64_t first = 0, id;
	int i;

	snprintf(path, sizeof(path), "%s/claims.db", dir);
	if (!tap_ok((o = outbox_open(path, 0, &e)) != NULL, "open an outbox "
	    "for claims ahead (%s)", e.msg))
		return;
	for (i = 0; i < 30; i++) {
		snprintf(name, sizeof(name), JOB "/c%02d.xml", i);
		journal(o, name, 100, 1000, &id);
		if (i == 0)
			first = id;
	}
	tap_int(outbox_claim(o, OUTBOX_S3, 1, 1, skip_twenty, &first, &v, &nv,
	    &e), 0, "a probe's claim that skips 20 due entries");
	tap_ok(nv == 1 && v[0].id == first + 20, "still claims the 21st "
	    "(the claim used to read 10 rows and find none)");
	outbox_entries_free(v, nv);
	tap_int(outbox_claim_ahead(o, OUTBOX_S3, 2, 5, 250, 1, NULL, NULL, &v,
	    &nv, &e), 0, "claim 2 firm and up to 5 ahead within 250 bytes");
	tap_int((int64_t)nv, 4, "2 firm, then 2 of 100 bytes: a third would "
	    "pass the budget");
	outbox_entries_free(v, nv);
	tap_int(outbox_claim_ahead(o, OUTBOX_S3, 0, 5, 50, 1, NULL, NULL, &v,
	    &nv, &e), 0, "claim none firm and ahead within 50 bytes");
	tap_int((int64_t)nv, 0, "a file larger than the budget is not "
	    "claimed ahead");
	outbox_entries_free(v, nv);
	outbox_close(o);
}

int
main(void)
{
	char dir[] = "tests/tmp/t-outbox.XXXXXX", path[256];
	struct outbox *o, *o2;
	struct outbox_entry *v = NULL;
	struct outbox_counts n;
	struct err e = {0};
	size_t nv = 0;
	int64_t id1 = 0, id2 = 0, id3 = 0, t0, t1, ms;
	char *evt;
	struct outbox_outcome done = { .event = EV_STORED, .etag = "\"e\"",
	    .sha256 = "ab" };
	struct outbox_outcome later = { .event = EV_TRANSIENT,
	    .error = "HTTP 503 SlowDown", .next_at_ms = 0 };

	mkdir("tests/tmp", 0700);
	if (mkdtemp(dir) == NULL) {
		tap_ok(0, "make a temporary directory");
		return tap_done();
	}
	snprintf(path, sizeof(path), "%s/outbox.db", dir);
	o = outbox_open(path, 0, &e);
	if (!tap_ok(o != NULL, "open a new outbox (%s)", e.msg))
		return tap_done();
	tap_int(outbox_lock(o, &e), 0, "take the lock");

	t0 = time_now_ms();
	tap_int(journal(o, JOB "/a.xml", 10, 1000, &id1), 1, "journal a file");
	t1 = time_now_ms();
	/* Event ids are version 7: the journal's milliseconds first, so the
	 * unique index of a million of them grows at its end instead of
	 * dirtying a random page a file. */
	tap_int(count(o, "substr(event_id, 15, 1) = '7' AND substr(event_id, "
	    "20, 1) IN ('8', '9', 'a', 'b')"), 1, "its event id is a version 7 "
	    "UUID");
	evt = query_text(o, "SELECT substr(event_id, 1, 8) || "
	    "substr(event_id, 10, 4) FROM entries WHERE id = 1");
	ms = evt ? (int64_t)strtoll(evt, NULL, 16) : -1;
	tap_ok(ms >= t0 && ms <= t1, "that begins with the time it was "
	    "journaled (%lld in [%lld, %lld])", (long long)ms, (long long)t0,
	    (long long)t1);
	free(evt);
	tap_int(journal(o, JOB "/a.xml", 10, 1000, NULL), 0, "the same stat "
	    "again journals nothing (rescans are cheap)");
	tap_int(journal(o, JOB "/job.json", 5, 1000, NULL), 1, "journal job.json");
	tap_int(count(o, "kind = 'job_meta' AND s3_state = 'skipped'"), 1,
	    "job.json is not uploaded: its S3 leg is skipped");
	tap_int(count(o, "path = '" JOB "/a.xml' AND s3_key = 'jobs/" JOB
	    "/uploads/a.xml' AND version = 1 AND length(event_id) = 36"), 1,
	    "an entry carries its key, version and a UUID event id");

	/* Database legs wait for the S3 leg's first attempt. */
	tap_int(outbox_claim(o, OUTBOX_DB, 10, 1, NULL, NULL, &v, &nv, &e), 0,
	    "claim database legs");
	tap_int((int64_t)nv, 1, "only job.json's is due before S3 was tried");
	outbox_entries_free(v, nv);

	tap_int(outbox_claim(o, OUTBOX_S3, 10, 1, NULL, NULL, &v, &nv, &e), 0,
	    "claim S3 legs");
	tap_int((int64_t)nv, 1, "one S3 leg due");
	tap_int(nv ? v[0].s3_attempts : 0, 1, "attempts counted at the claim");
	tap_int(count(o, "s3_state = 'in_flight'"), 1, "it is in_flight");
	outbox_entries_free(v, nv);

	/* A crash now: the claimed leg comes back. */
	tap_int(outbox_recover(o, &e), 2, "recover puts both in_flight legs "
	    "back to pending");
	tap_int(count(o, "s3_state = 'pending' AND s3_error LIKE 'interrupted%'"),
	    1, "with the reason");

	outbox_claim(o, OUTBOX_S3, 10, 1, NULL, NULL, &v, &nv, &e);
	tap_int(finish(o, OUTBOX_S3, v[0].id, &later, &e), 0,
	    "record a transient failure");
	outbox_entries_free(v, nv);
	tap_int(count(o, "s3_state = 'pending' AND s3_attempts = 2 AND "
	    "s3_error = 'HTTP 503 SlowDown'"), 1, "pending with its error and "
	    "attempts");
	/* Claimed, then given back before anything was sent (the leg
	 * failed meanwhile): the claim's attempt is taken back. */
	outbox_claim(o, OUTBOX_S3, 10, 1, NULL, NULL, &v, &nv, &e);
	tap_int(nv ? v[0].s3_attempts : 0, 3, "claimed again: 3 attempts");
	{
		struct outbox_outcome unsent = { .event = EV_STOPPED,
		    .error = "not sent: the S3 leg is failing", .unsent = 1 };

		tap_int(finish(o, OUTBOX_S3, v[0].id, &unsent, &e), 0,
		    "give it back unsent");
	}
	outbox_entries_free(v, nv);
	tap_int(count(o, "s3_state = 'pending' AND s3_attempts = 2"), 1,
	    "pending, its attempts as before the claim (3 before session 10)");
	tap_int(outbox_claim(o, OUTBOX_DB, 10, 1, NULL, NULL, &v, &nv, &e), 0,
	    "claim database legs again");
	tap_int((int64_t)nv, 2, "a failing S3 leg no longer holds the "
	    "database leg back");
	outbox_entries_free(v, nv);
	outbox_recover(o, &e);

	/* A newer version while the old one is pending supersedes it. */
	tap_int(journal(o, JOB "/a.xml", 11, 2000, &id2), 1, "a changed file "
	    "is a new version");
	tap_int(count(o, "id = 1 AND s3_state = 'skipped' AND s3_error LIKE "
	    "'superseded by entry%'"), 1, "the older version will not be sent");
	tap_int(count(o, "path = '" JOB "/a.xml' AND version = 2"), 1,
	    "the new entry is version 2");

	/* A path in flight is left alone by the claim. */
	tap_int(outbox_claim(o, OUTBOX_S3, 10, 1, NULL, NULL, &v, &nv, &e), 0,
	    "claim the new version");
	tap_int(journal(o, JOB "/a.xml", 12, 3000, &id3), 1, "a third version "
	    "arrives while the second is in flight");
	tap_int(count(o, "id = 3 AND s3_state = 'in_flight'"), 1,
	    "an in-flight leg is not superseded under the sender's feet");
	tap_int(finish(o, OUTBOX_S3, v[0].id, &done, &e), 0, "finish it");
	outbox_entries_free(v, nv);
	tap_int(count(o, "id = 3 AND s3_state = 'done' AND s3_etag = '\"e\"' "
	    "AND sha256 = 'ab' AND s3_done_at IS NOT NULL"), 1,
	    "done with its ETag, hash and time");

	/* Failed legs wait for retry. */
	outbox_claim(o, OUTBOX_S3, 10, 1, NULL, NULL, &v, &nv, &e);
	{
		struct outbox_outcome failed = { .event = EV_PERMANENT,
		    .error = "HTTP 403 AccessDenied" };

		finish(o, OUTBOX_S3, v[0].id, &failed, &e);
	}
	outbox_entries_free(v, nv);
	tap_int(outbox_counts(o, 1, 1, &n, &e), 0, "count");
	tap_int(n.failed, 1, "one entry failed");
	tap_str(n.last_error, "s3: HTTP 403 AccessDenied", "status shows the "
	    "last error");
	tap_int(outbox_retry(o, -1, &e), 1, "retry --failed revives it");
	tap_int(count(o, "s3_state = 'failed'"), 0, "none failed any more");

	tap_int(outbox_next_due(o, OUTBOX_S3, 1, &e), 0, "something is due now");

	/* Never an older version after a newer one: a claim takes only the
	 * newest entry of a path, and an older leg that comes back for a
	 * retry after a newer version arrived is skipped. */
	{
		int64_t a = 0, b = 0;
		struct outbox_outcome again = { .event = EV_TRANSIENT,
		    .error = "HTTP 500", .next_at_ms = 0 };

		journal(o, JOB "/v.txt", 1, 5000, &a);
		outbox_claim(o, OUTBOX_DB, 100, 0, NULL, NULL, &v, &nv, &e);
		outbox_entries_free(v, nv);
		journal(o, JOB "/v.txt", 2, 6000, &b);
		tap_int(finish(o, OUTBOX_DB, a, &again, &e), 0,
		    "the older version's database leg fails transiently");
		tap_int(count(o, "id = (select min(id) from entries where path like "
		    "'%/v.txt') and db_state = 'skipped' and db_error like "
		    "'superseded%'"), 1, "and is skipped, not retried after the "
		    "newer one");
		outbox_claim(o, OUTBOX_DB, 100, 0, NULL, NULL, &v, &nv, &e);
		tap_ok(nv >= 1 && v[nv - 1].id == b, "the newer one is claimed");
		outbox_entries_free(v, nv);
	}

	/* A version journaled with not_before_ms waits for it (a file that
	 * changed under the sync thread waits to be quiet). */
	{
		struct outbox_file f = { .path = JOB "/quiet.txt", .size = 1,
		    .mtime_ns = 7, .inode = 9,
		    .not_before_ms = time_now_ms() + 60000 };
		int64_t due, q = 0;
		size_t i;
		int seen = 0;

		outbox_begin(o, &e);
		outbox_journal(o, &f, &q, &e);
		outbox_commit(o, &e);
		outbox_claim(o, OUTBOX_S3, 100, 1, NULL, NULL, &v, &nv, &e);
		for (i = 0; i < nv; i++)
			seen |= v[i].id == q;
		outbox_entries_free(v, nv);
		tap_ok(q > 0 && !seen, "a version journaled not before a minute "
		    "from now is not claimed now");
		due = outbox_next_due(o, OUTBOX_S3, 1, &e);
		tap_ok(due > 55000 && due <= 60000, "it is due in a minute "
		    "(%lld ms)", (long long)due);
	}

	/* Issue 10, sequence 3: version 1 in flight, version 2 journaled,
	 * then a crash. Recovery must not leave version 1 pending for good
	 * (no claim ever takes an older version). */
	{
		int64_t a = 0, b = 0;

		journal(o, JOB "/stuck.txt", 1, 8000, &a);
		outbox_claim(o, OUTBOX_S3, 100, 1, NULL, NULL, &v, &nv, &e);
		outbox_entries_free(v, nv);
		journal(o, JOB "/stuck.txt", 2, 9000, &b);
		outbox_recover(o, &e);
		tap_int(count(o, "path like '%/stuck.txt' and s3_state in "
		    "('pending', 'in_flight') and id < (select max(id) from "
		    "entries where path like '%/stuck.txt')"), 0,
		    "after a crash an older version in flight is skipped, not "
		    "left pending");
		tap_int(count(o, "path like '%/stuck.txt' and s3_state = "
		    "'pending'"), 1, "only the newest version is left to send");
	}

	/* Issue 10, sequence 1: the file vanished (moved away) under the
	 * S3 leg and came back unchanged: it must journal again. */
	{
		int64_t a = 0;
		struct outbox_outcome gone = { .event = EV_GONE,
		    .error = "the file vanished" };

		journal(o, JOB "/away.txt", 3, 10000, &a);
		outbox_claim(o, OUTBOX_S3, 100, 1, NULL, NULL, &v, &nv, &e);
		outbox_entries_free(v, nv);
		tap_int(finish(o, OUTBOX_S3, a, &gone, &e), 0, "the S3 leg "
		    "finds the file gone");
		tap_int(journal(o, JOB "/away.txt", 3, 10000, NULL), 1,
		    "the same file back with the same stat is journaled again");
	}

	/* Review of issue 14: a multipart upload an earlier release created
	 * (no checksum algorithm declared) cannot take this release's
	 * checksummed parts; the first open by this release aborts it and
	 * the entry starts over. Uploads made after are kept. */
	{
		int64_t a = 0;
		struct outbox_part *pv = NULL;
		size_t np = 0;
		char sql[300];

		journal(o, JOB "/big.bin", 100000000, 11000, &a);
		outbox_set_upload_id(o, a, "old-upload", &e);
		outbox_part_done(o, a, 1, 8388608, "\"p1\"", "00", &e);
		sqlite3_exec(outbox_db(o), "DELETE FROM meta WHERE key = "
		    "'uploads_checksum'", NULL, NULL, NULL);
		o2 = outbox_open(path, 0, &e);
		tap_ok(o2 != NULL, "reopen an outbox as an earlier release "
		    "left it (%s)", e.msg);
		snprintf(sql, sizeof(sql), "id = %lld AND s3_upload_id IS NULL",
		    (long long)a);
		tap_int(count(o2, sql), 1, "its open multipart upload is "
		    "forgotten: the entry starts a new one, declared SHA256");
		outbox_parts(o2, a, &pv, &np, &e);
		tap_int((int64_t)np, 0, "with its recorded parts");
		free(pv);
		/* (count() counts entries: one row stands for "it exists") */
		tap_int(count(o2, "id = (SELECT min(id) FROM entries) AND "
		    "EXISTS (SELECT 1 FROM aborts WHERE upload_id = "
		    "'old-upload')"), 1, "and the old upload is queued for "
		    "abort in S3");
		outbox_close(o2);
		outbox_set_upload_id(o, a, "new-upload", &e);
		o2 = outbox_open(path, 0, &e);
		snprintf(sql, sizeof(sql), "id = %lld AND s3_upload_id = "
		    "'new-upload'", (long long)a);
		tap_int(count(o2, sql), 1, "an upload this release made survives "
		    "the next open");
		outbox_close(o2);
	}

	/* Start-up recovery: an S3 leg skipped while it held a multipart
	 * upload (as a crash between the skip and the abort leaves it) has
	 * that upload queued for abort and forgotten with its parts; an
	 * outbox with none compiles nothing that changes rows (the probe
	 * before the three statements must not hide this one). */
	{
		int64_t a = 0;
		struct outbox_part *pv = NULL;
		size_t np = 0;
		char sql[300];

		journal(o, JOB "/skipped-big.bin", 90000000, 12000, &a);
		outbox_set_upload_id(o, a, "skipped-upload", &e);
		outbox_part_done(o, a, 1, 8388608, "\"p1\"", "00", &e);
		snprintf(sql, sizeof(sql), "UPDATE entries SET s3_state = "
		    "'skipped' WHERE id = %lld", (long long)a);
		sqlite3_exec(outbox_db(o), sql, NULL, NULL, NULL);
		tap_ok(outbox_recover(o, &e) >= 0, "recover (%s)", e.msg);
		snprintf(sql, sizeof(sql), "id = %lld AND s3_upload_id IS NULL "
		    "AND EXISTS (SELECT 1 FROM aborts WHERE upload_id = "
		    "'skipped-upload')", (long long)a);
		tap_int(count(o, sql), 1, "a skipped leg's multipart upload is "
		    "queued for abort and forgotten at recovery");
		outbox_parts(o, a, &pv, &np, &e);
		tap_int((int64_t)np, 0, "with its recorded parts");
		free(pv);
	}

	/* SQLite may end a transaction itself (an I/O error, a full disk):
	 * what follows must not run, or commit, outside it. */
	{
		int before = count(o, "1");

		outbox_begin(o, &e);
		journal(o, JOB "/gone-with-it.xml", 3, 3000, NULL);
		sqlite3_exec(outbox_db(o), "ROLLBACK", NULL, NULL, NULL);
		tap_int(outbox_begin(o, &e), -1, "a savepoint inside a "
		    "transaction SQLite ended is refused (%s)", e.msg);
		tap_int(outbox_commit(o, &e), -1, "and so is its commit");
		outbox_rollback(o);
		tap_int(count(o, "1"), before, "nothing of it was written");
		tap_int(outbox_begin(o, &e), 0, "the next transaction begins");
		outbox_rollback(o);
	}

	o2 = outbox_open(path, 0, &e);
	tap_int(outbox_lock(o2, &e), -1, "a second outboxd cannot take the lock");
	tap_ok(strstr(e.msg, "another outboxd (pid") != NULL, "and is told "
	    "why: %s", e.msg);
	tap_int(outbox_lock_owner(path), (int64_t)getpid(), "the lock names "
	    "its owner");
	outbox_close(o2);
	outbox_close(o);
	tap_int(outbox_lock_owner(path), 0, "no owner once closed");
	claims_ahead(dir);
	{
		char cmd[600];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			tap_diag("could not remove %s", dir);
	}
	(void)id1;
	(void)id3;
	return tap_done();
}
