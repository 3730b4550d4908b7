/*
 * sync.c - the sync thread (see sync.h).
 *
 * One loop turn: hash a bounded slice of the files being uploaded, start
 * the requests the uploads are ready for up to OUTBOXD_CONCURRENCY,
 * claim new S3 legs when there is room, send queued multipart aborts;
 * record one pipelined batch of due database legs; record ETags learned
 * late; then wait in curl (or poll) until a transfer finishes, the
 * watcher journals something, or the next retry is due.
 *
 * The S3 leg of each entry is a struct upload (upload.c): the file is
 * opened beneath the uploads root (no symlinks), checked against what was
 * journaled, hashed, sent, and checked again; a file that changed in
 * between is not marked done, and its new version is journaled and wins.
 *
 * An outcome that cannot be written to the outbox (disk full, a lock held
 * too long) is kept in memory and written again each turn; no new work is
 * claimed until they are all written.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base/backoff.h"
#include "agent/db/jobmeta.h"
#include "base/keymap.h"
#include "base/log.h"
#include "agent/db/pg.h"
#include "agent/db/platform.h"
#include "agent/s3/s3.h"
#include "base/strmap.h"
#include "agent/engine/sync.h"
#include "agent/engine/upload.h"
#include "store/outbox.h"
#include "watchers/tree.h"

#define HASH_BUDGET	(4 * 1024 * 1024)	/* bytes hashed per loop turn */
#define ABORT_BATCH	4		/* multipart aborts started per turn */
#define SUPERSEDE_QUIET_MS 2000	/* a changed file waits to be this quiet */
#define DB_BATCH	64		/* database legs per round trip */
#define ONCE_WAIT_MS	5000		/* --once waits for retries this close */
#define STOP_GRACE_MS	30000		/* transfers may finish after a stop */
#define JOB_JSON_MAX	(1024 * 1024)

/* A leg's circuit breaker. */
struct leg {
	int failures;		/* consecutive transient failures */
	int64_t paused_until;	/* monotonic ms; one probe at a time till */
};

/* An outcome the outbox could not take yet. */
struct unrecorded {
	enum outbox_leg leg;
	int64_t id;
	struct outbox_result r;		/* its strings are owned here */
	struct unrecorded *next;
};

/* An AbortMultipartUpload in flight. */
struct abort_req {
	struct s3_req req;
	char *upload_id;
	int attempts;
};

struct sync {
	const struct cfg *cfg;		/* read-only, owned by main */
	struct outbox *ob;		/* this thread's connection */
	int rootfd;			/* the uploads root */
	struct s3 *s3;			/* NULL when the S3 leg is off */
	struct pg *pg;			/* NULL when the database leg is off */
	int wake_fd;			/* eventfd written by the watcher */
	atomic_int stop;
	atomic_llong heartbeat;
	struct upload_env env;		/* what uploads need */
	struct upload **ups;		/* S3 legs in progress */
	int nups, capups;
	int naborts;			/* aborts in flight */
	struct strmap *inflight;	/* paths with an S3 leg in progress */
	struct unrecorded *unrecorded;	/* outcomes to write again */
	int batching;			/* inside batch_begin/batch_end */
	struct unrecorded *batch;	/* outcomes written in the open batch */
	struct strmap *job_users;	/* job id -> user id ("" unknown) */
	struct leg legs[2];		/* OUTBOX_S3, OUTBOX_DB */
	int fatal;			/* the outbox failed: stop */
};

/* ---- helpers ------------------------------------------------------------- */

static int
same_file(const struct stat *st, const struct outbox_entry *en)
{
	return (int64_t)st->st_size == en->size &&
	    (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec ==
	    en->mtime_ns && (int64_t)st->st_ino == en->inode;
}

static int64_t
retry_at(const struct sync *s, int attempts)
{
	return time_now_ms() + backoff_delay(attempts, s->cfg->retry_base_ms,
	    (int64_t)s->cfg->retry_max_s * 1000, rand_below(UINT64_MAX));
}

static void
leg_ok(struct sync *s, enum outbox_leg leg)
{
	if (s->legs[leg].failures > 0)
		log_info("%s leg recovered", leg == OUTBOX_S3 ? "S3" :
		    "database");
	s->legs[leg].failures = 0;
	s->legs[leg].paused_until = 0;
}

static void
leg_failed(struct sync *s, enum outbox_leg leg)
{
	struct leg *l = &s->legs[leg];

	l->failures++;
	l->paused_until = time_mono_ms() + backoff_delay(l->failures,
	    s->cfg->retry_base_ms, (int64_t)s->cfg->retry_max_s * 1000,
	    rand_below(UINT64_MAX));
}

/* How many of leg's entries may be claimed now. */
static int
leg_allowance(const struct sync *s, enum outbox_leg leg, int want)
{
	const struct leg *l = &s->legs[leg];

	if (l->failures == 0)
		return want;
	if (time_mono_ms() < l->paused_until)
		return 0;
	return want > 0 ? 1 : 0;	/* one probe */
}

static char *
dup_or_null(const char *p)
{
	return p ? xstrdup(p) : NULL;
}

static void
unrecorded_free(struct unrecorded *u)
{
	free((char *)u->r.error);
	free((char *)u->r.etag);
	free((char *)u->r.sha256);
	free(u);
}

/* Writes the outcomes kept from earlier turns; 0 when none is left. */
static int
flush_unrecorded(struct sync *s)
{
	struct err e = {0};

	while (s->unrecorded != NULL) {
		struct unrecorded *u = s->unrecorded;

		if (outbox_finish(s->ob, u->leg, u->id, &u->r, &e) < 0)
			return -1;
		s->unrecorded = u->next;
		unrecorded_free(u);
	}
	return 0;
}

static struct unrecorded *
unrecorded_new(enum outbox_leg leg, int64_t id, const struct outbox_result *r)
{
	struct unrecorded *u = xcalloc(1, sizeof(*u));

	u->leg = leg;
	u->id = id;
	u->r = *r;
	u->r.error = dup_or_null(r->error);
	u->r.etag = dup_or_null(r->etag);
	u->r.sha256 = dup_or_null(r->sha256);
	return u;
}

static void
keep_unrecorded(struct sync *s, struct unrecorded *u)
{
	struct unrecorded **tail;

	for (tail = &s->unrecorded; *tail != NULL; tail = &(*tail)->next)
		;
	*tail = u;
}

static void
record(struct sync *s, enum outbox_leg leg, const struct outbox_entry *en,
    const struct outbox_result *r)
{
	struct unrecorded *u;
	struct err e = {0};

	if (s->unrecorded == NULL &&
	    outbox_finish(s->ob, leg, en->id, r, &e) == 0) {
		if (s->batching) {
			/* Undone if the batch's COMMIT fails: keep a copy. */
			u = unrecorded_new(leg, en->id, r);
			u->next = s->batch;
			s->batch = u;
		}
		return;
	}
	if (s->unrecorded == NULL)
		log_err("%s: outcomes are kept in memory and written again "
		    "until the outbox takes them", e.msg);
	if (e.cls == ERR_FATAL)
		s->fatal = 1;
	keep_unrecorded(s, unrecorded_new(leg, en->id, r));
}

/* Outcomes recorded between batch_begin and batch_end commit together. */
static void
batch_begin(struct sync *s)
{
	struct err e = {0};

	if (outbox_begin(s->ob, &e) == 0)
		s->batching = 1;
	else
		log_err("%s", e.msg);
}

static void
batch_end(struct sync *s)
{
	struct err e = {0};
	int failed;

	if (!s->batching)
		return;
	s->batching = 0;
	failed = outbox_commit(s->ob, &e) < 0;
	if (failed)
		log_err("%s: outcomes are kept in memory and written again "
		    "until the outbox takes them", e.msg);
	while (s->batch != NULL) {
		struct unrecorded *u = s->batch;

		s->batch = u->next;
		u->next = NULL;
		if (failed)
			keep_unrecorded(s, u);	/* the rollback undid it */
		else
			unrecorded_free(u);
	}
}

/* Records a transient failure: back to pending, retried after backoff. */
static void
retry_later(struct sync *s, enum outbox_leg leg, const struct outbox_entry *en,
    const struct err *e)
{
	struct log_ctx ctx = { en->job_id, en->path,
	    leg == OUTBOX_S3 ? "s3" : "db" };
	int attempts = leg == OUTBOX_S3 ? en->s3_attempts : en->db_attempts;
	struct outbox_result r = { .state = OUTBOX_PENDING, .error = e->msg,
	    .next_at_ms = retry_at(s, attempts) };

	log_msg(LOG_WARNING, &ctx, "attempt %d failed, will retry: %s",
	    attempts, e->msg);
	record(s, leg, en, &r);
	leg_failed(s, leg);
}

static void
fail_for_good(struct sync *s, enum outbox_leg leg,
    const struct outbox_entry *en, const struct err *e)
{
	struct log_ctx ctx = { en->job_id, en->path,
	    leg == OUTBOX_S3 ? "s3" : "db" };
	struct outbox_result r = { .state = OUTBOX_FAILED, .error = e->msg };

	log_msg(LOG_ERR, &ctx, "failed (fix it, then run outboxctl retry %lld): "
	    "%s", (long long)en->id, e->msg);
	record(s, leg, en, &r);
}

static void
skip(struct sync *s, enum outbox_leg leg, const struct outbox_entry *en,
    const char *why)
{
	struct log_ctx ctx = { en->job_id, en->path,
	    leg == OUTBOX_S3 ? "s3" : "db" };
	struct outbox_result r = { .state = OUTBOX_SKIPPED, .error = why };

	log_msg(LOG_INFO, &ctx, "skipped: %s", why);
	record(s, leg, en, &r);
}

/*
 * The file no longer matches its entry: journal what is there now (the
 * watcher may already have) and skip this leg in favour of that version.
 * A file changed in the last SUPERSEDE_QUIET_MS is likely still being
 * written: its new version waits until it has been quiet that long, so
 * a writer that takes minutes does not have its file read over and over.
 */
static void
superseded(struct sync *s, enum outbox_leg leg, const struct outbox_entry *en,
    const struct stat *st, const char *when)
{
	struct outbox_file f = {
		.path = en->path, .size = (int64_t)st->st_size,
		.mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 +
		    st->st_mtim.tv_nsec,
		.inode = (int64_t)st->st_ino,
		.not_before_ms = (int64_t)st->st_mtim.tv_sec * 1000 +
		    st->st_mtim.tv_nsec / 1000000 + SUPERSEDE_QUIET_MS,
	};
	struct err e = {0};
	int64_t id = 0;
	char why[128];
	int rc;

	if (outbox_begin(s->ob, &e) == 0) {
		rc = outbox_journal(s->ob, &f, &id, &e);
		if (rc < 0 || outbox_commit(s->ob, &e) < 0) {
			outbox_rollback(s->ob);
			log_err("%s", e.msg);
		}
	} else {
		log_err("%s", e.msg);
	}
	if (id > 0)
		snprintf(why, sizeof(why), "the file changed %s; entry %lld "
		    "has the new version", when, (long long)id);
	else
		snprintf(why, sizeof(why), "the file changed %s; a newer "
		    "entry has the new version", when);
	skip(s, leg, en, why);
}

/* Handles a failure to open or read en's file for leg. */
static void
file_problem(struct sync *s, enum outbox_leg leg, const struct outbox_entry *en,
    const struct err *e)
{
	char why[1100];

	if (e->cls == ERR_GONE) {
		snprintf(why, sizeof(why), "the file vanished before it was %s",
		    leg == OUTBOX_S3 ? "uploaded" : "recorded");
		skip(s, leg, en, why);
	} else if (e->cls == ERR_TRANSIENT) {
		retry_later(s, leg, en, e);
	} else {
		fail_for_good(s, leg, en, e);
	}
}

/*
 * Reads fd (size bytes) computing SHA-256 and MD5; keeps the bytes in
 * *mem when mem is not NULL. Returns 0, or -1 with e (ERR_CHANGED when
 * the file turned out shorter or longer than size). Beats the thread's
 * heartbeat as it goes: a huge file on slow storage is progress, not a
 * hang for the watchdog.
 */
static int
hash_file(int fd, uint64_t size, unsigned char **mem, char *sha_hex,
    char *md5_b64, char *md5_hex, atomic_llong *beat, struct err *e)
{
	EVP_MD_CTX *sha = EVP_MD_CTX_new(), *md5 = EVP_MD_CTX_new();
	unsigned char chunk[64 * 1024], dsha[32], dmd5[16], *buf = NULL;
	uint64_t off = 0;
	int rc = -1;

	if (sha == NULL || md5 == NULL)
		abort();
	EVP_DigestInit_ex(sha, EVP_sha256(), NULL);
	EVP_DigestInit_ex(md5, EVP_md5(), NULL);
	if (mem != NULL)
		buf = xmalloc(size ? size : 1);
	for (;;) {
		unsigned char *dst = buf ? buf + off : chunk;
		size_t want = buf ? (size_t)(size - off) : sizeof(chunk);
		ssize_t n;

		if (buf != NULL && want == 0) {
			/* Make sure nothing follows: one byte more means the
			 * file grew since it was journaled. */
			n = pread(fd, chunk, 1, (off_t)off);
			if (n > 0)
				goto changed;
			if (n < 0 && errno != EINTR)
				goto ioerr;
			break;
		}
		n = pread(fd, dst, want, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			goto ioerr;
		}
		if (n == 0)
			break;
		EVP_DigestUpdate(sha, dst, (size_t)n);
		EVP_DigestUpdate(md5, dst, (size_t)n);
		off += (uint64_t)n;
		if (off > size)
			goto changed;
		if (beat != NULL && (off & ((16u << 20) - 1)) < (uint64_t)n)
			atomic_store(beat, time_mono_ms());	/* every 16 MiB */
	}
	if (off != size)
		goto changed;
	EVP_DigestFinal_ex(sha, dsha, NULL);
	EVP_DigestFinal_ex(md5, dmd5, NULL);
	hex_encode(dsha, sizeof(dsha), sha_hex);
	if (md5_hex != NULL)
		hex_encode(dmd5, sizeof(dmd5), md5_hex);
	if (md5_b64 != NULL)
		EVP_EncodeBlock((unsigned char *)md5_b64, dmd5, sizeof(dmd5));
	if (mem != NULL) {
		*mem = buf;
		buf = NULL;
	}
	rc = 0;
	goto out;
changed:
	err_set(e, ERR_CHANGED, "the file's size changed while it was read");
	goto out;
ioerr:
	err_sys(e, ERR_TRANSIENT, "reading the file");
out:
	free(buf);
	EVP_MD_CTX_free(sha);
	EVP_MD_CTX_free(md5);
	return rc;
}

/* ---- the S3 leg ---------------------------------------------------------- */

static int
path_in_flight(void *arg, const char *path)
{
	struct sync *s = arg;

	return strmap_get(s->inflight, path) != NULL;
}

/* Records a finished upload's outcome and forgets the upload. */
static void
finish_upload(struct sync *s, int i, const struct upload_outcome *o)
{
	struct upload *u = s->ups[i];
	const struct outbox_entry *en = upload_entry(u);
	struct log_ctx ctx = { en->job_id, en->path, "s3" };
	struct outbox_result r = { .state = OUTBOX_DONE };
	char why[256];

	switch (o->result) {
	case UPLOAD_DONE:
		test_crash_point("s3-answered");
		r.etag = o->etag;
		r.sha256 = o->sha256;
		record(s, OUTBOX_S3, en, &r);
		leg_ok(s, OUTBOX_S3);
		if (o->parts > 0)
			log_msg(LOG_INFO, &ctx, "stored s3://%s/%s (%lld bytes, "
			    "%d parts)", s->cfg->bucket, en->s3_key,
			    (long long)en->size, o->parts);
		else
			log_msg(LOG_INFO, &ctx, "stored s3://%s/%s (%lld bytes)",
			    s->cfg->bucket, en->s3_key, (long long)en->size);
		break;
	case UPLOAD_RETRY:
		retry_later(s, OUTBOX_S3, en, &o->err);
		break;
	case UPLOAD_FAILED:
		fail_for_good(s, OUTBOX_S3, en, &o->err);
		break;
	case UPLOAD_GONE:
		snprintf(why, sizeof(why), "the file vanished before it was "
		    "uploaded");
		skip(s, OUTBOX_S3, en, why);
		break;
	case UPLOAD_CHANGED:
		superseded(s, OUTBOX_S3, en, &o->st, o->when);
		break;
	case UPLOAD_STOPPED:
	case UPLOAD_BUSY:
		break;	/* left in_flight: the next start retries it */
	}
	if (strmap_get(s->inflight, en->path) == u)
		strmap_del(s->inflight, en->path);
	upload_free(u);
	s->ups[i] = s->ups[--s->nups];
}

/* Records every upload that has finished. */
static void
reap_uploads(struct sync *s)
{
	struct upload_outcome o;
	int i, open = 0;

	for (i = 0; i < s->nups;) {
		if (!upload_finished(s->ups[i], &o)) {
			i++;
			continue;
		}
		if (!open) {
			batch_begin(s);
			open = 1;
		}
		finish_upload(s, i, &o);
	}
	if (open)
		batch_end(s);
}

static void
add_upload(struct sync *s, struct upload *u)
{
	if (s->nups == s->capups) {
		s->capups = s->capups ? s->capups * 2 : 16;
		s->ups = xrealloc(s->ups, (size_t)s->capups * sizeof(*s->ups));
	}
	s->ups[s->nups++] = u;
	strmap_put(s->inflight, upload_entry(u)->path, u);
}

/* Claims due S3 legs while fewer uploads than the concurrency run. */
static int
claim_uploads(struct sync *s)
{
	struct outbox_entry *v;
	size_t n = 0, i;
	struct err e = {0};
	int room = leg_allowance(s, OUTBOX_S3, s->cfg->concurrency - s->nups);

	if (room <= 0)
		return 0;
	if (outbox_claim(s->ob, OUTBOX_S3, room, 1, path_in_flight, s, &v, &n,
	    &e) < 0) {
		log_err("%s", e.msg);
		if (e.cls == ERR_FATAL)
			s->fatal = 1;
		return 0;
	}
	for (i = 0; i < n; i++)
		add_upload(s, upload_new(&s->env, &v[i]));
	outbox_entries_free(v, n);
	return (int)n;
}

/* Sends queued AbortMultipartUpload requests while slots are free. */
static void
send_aborts(struct sync *s, int *slots)
{
	struct outbox_abort *v = NULL;
	struct err e = {0};
	size_t n = 0, i;

	if (*slots <= 0 || s->naborts >= ABORT_BATCH ||
	    leg_allowance(s, OUTBOX_S3, 1) == 0)
		return;
	if (outbox_abort_due(s->ob, ABORT_BATCH - s->naborts, &v, &n, &e) < 0) {
		outbox_aborts_free(v, n);
		return;
	}
	for (i = 0; i < n && *slots > 0; i++) {
		struct abort_req *a = xcalloc(1, sizeof(*a));

		a->upload_id = xstrdup(v[i].upload_id);
		a->attempts = v[i].attempts + 1;
		a->req.method = "DELETE";
		a->req.key = xstrdup(v[i].s3_key);
		a->req.query[0] = (struct sigv4_pair){ "uploadId", a->upload_id };
		a->req.n_query = 1;
		a->req.fd = -1;
		a->req.user = NULL;	/* marks an abort, not an upload */
		if (s3_start(s->s3, &a->req) < 0) {
			outbox_abort_later(s->ob, a->upload_id,
			    retry_at(s, a->attempts), a->req.err.msg, &e);
			free(a->upload_id);
			free(a->req.key);
			free(a);
			continue;
		}
		/* Delay this upload id's next turn while it is in flight. */
		outbox_abort_later(s->ob, a->upload_id, time_now_ms() +
		    (int64_t)s->cfg->s3_timeout_s * 2000, "in flight", &e);
		s->naborts++;
		(*slots)--;
	}
	outbox_aborts_free(v, n);
}

static void
abort_reply(struct sync *s, struct abort_req *a)
{
	struct err e = {0};

	s3_req_clear(&a->req);
	s->naborts--;
	if (a->req.err.cls == ERR_NONE || strcmp(a->req.code, "NoSuchUpload") == 0
	    || a->req.status == 404) {
		log_info("aborted the abandoned multipart upload of %s",
		    a->req.key);
		outbox_abort_done(s->ob, a->upload_id, &e);
	} else {
		log_warnx("aborting the multipart upload of %s: %s (will retry)",
		    a->req.key, a->req.err.msg);
		outbox_abort_later(s->ob, a->upload_id, retry_at(s, a->attempts),
		    a->req.err.msg, &e);
	}
	buf_free(&a->req.body);
	free(a->req.key);
	free(a->upload_id);
	free(a);
}

/* Collects finished requests and the uploads they finish. */
static void
collect_s3(struct sync *s)
{
	struct s3_req *r;

	while ((r = s3_done(s->s3)) != NULL) {
		if (r->user == NULL)
			abort_reply(s, (struct abort_req *)r);
		else
			upload_reply(r);
	}
	reap_uploads(s);
}

/* The S3 part of a turn; returns 1 while hashing work is left. */
static int
run_s3(struct sync *s, int stopping)
{
	size_t budget = HASH_BUDGET;
	int slots, i, busy = 0;

	if (s->s3 == NULL)
		return 0;
	if (stopping)
		for (i = 0; i < s->nups; i++)
			upload_stop(s->ups[i]);
	else if (s->unrecorded == NULL)
		claim_uploads(s);
	/* Local work: hash a slice of each file still being read. */
	for (i = 0; i < s->nups && budget > 0 && !stopping; i++) {
		size_t share = budget / (size_t)(s->nups - i);
		size_t used = upload_work(s->ups[i], share > 0 ? share : budget);

		budget -= used;
		if (used > 0 && used >= share)
			busy = 1;
	}
	slots = s->cfg->concurrency - s3_running(s->s3);
	for (i = 0; i < s->nups && slots > 0; i++)
		upload_send(s->ups[i], &slots, stopping);
	if (!stopping)
		send_aborts(s, &slots);
	reap_uploads(s);
	return busy;
}

/* ---- the database leg ---------------------------------------------------- */

/* Reads a small file whole (job.json); NULL with e. */
static char *
read_small(int rootfd, const char *path, size_t max, size_t *len,
    struct stat *st, struct err *e)
{
	struct buf b = {0};
	char chunk[8192];
	int fd = tree_open_file(rootfd, path, st, e);
	ssize_t n;

	if (fd < 0)
		return NULL;
	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err_sys(e, ERR_TRANSIENT, "reading %s", path);
			goto fail;
		}
		buf_append(&b, chunk, (size_t)n);
		if (b.len > max) {
			err_set(e, ERR_PERMANENT, "%s is larger than %zu bytes",
			    path, max);
			goto fail;
		}
	}
	close(fd);
	*len = b.len;
	return buf_take(&b);
fail:
	close(fd);
	buf_free(&b);
	return NULL;
}

static void
forget_all_job_users(struct sync *s)
{
	size_t i = 0;
	const char *k;
	void *v;

	while (strmap_next(s->job_users, &i, &k, &v))
		free(v);
	strmap_free(s->job_users);
	s->job_users = strmap_new();
}

/* The user id for a job's rows: its job.json's, else the default. */
static const char *
job_user(struct sync *s, const char *job)
{
	char *path, *text;
	const char *cached = strmap_get(s->job_users, job);
	struct stat st;
	struct err e = {0};
	size_t len;
	cJSON *f;
	const cJSON *u;
	char *user = NULL;

	if (cached != NULL)
		return cached[0] ? cached : s->cfg->default_user;
	if (strmap_count(s->job_users) >= 4096)
		forget_all_job_users(s);	/* a cache, not a registry */
	path = xasprintf("%s/job.json", job);
	text = read_small(s->rootfd, path, JOB_JSON_MAX, &len, &st, &e);
	if (text != NULL && (f = jobmeta_parse(text, len, &e)) != NULL) {
		u = cJSON_GetObjectItemCaseSensitive(f, "user_id");
		if (cJSON_IsString(u))
			user = xstrdup(u->valuestring);
		cJSON_Delete(f);
	}
	free(text);
	free(path);
	if (user == NULL)
		user = xstrdup("");
	free(strmap_put(s->job_users, job, user));
	return user[0] ? user : s->cfg->default_user;
}

static void
forget_job_user(struct sync *s, const char *job)
{
	free(strmap_del(s->job_users, job));
}

/* Applies a job.json entry. */
static void
apply_job_meta(struct sync *s, struct outbox_entry *en)
{
	struct log_ctx ctx = { en->job_id, en->path, "db" };
	struct stat st;
	struct err e = {0};
	const char *outcome;
	size_t len;
	char *text;
	cJSON *fields;
	char why[1200];

	text = read_small(s->rootfd, en->path, JOB_JSON_MAX, &len, &st, &e);
	if (text == NULL) {
		file_problem(s, OUTBOX_DB, en, &e);
		return;
	}
	if (!same_file(&st, en)) {
		free(text);
		superseded(s, OUTBOX_DB, en, &st, "after it was journaled");
		return;
	}
	fields = jobmeta_parse(text, len, &e);
	free(text);
	if (fields == NULL) {
		/* Not applied; the next version of the file is a new entry. */
		snprintf(why, sizeof(why), "job.json not applied: %s", e.msg);
		log_msg(LOG_WARNING, &ctx, "%s", why);
		skip(s, OUTBOX_DB, en, why);
		return;
	}
	forget_job_user(s, en->job_id);
	if (pg_apply_job_meta(s->pg, en->event_id, en->job_id, fields, &outcome,
	    &e) < 0) {
		if (e.cls == ERR_TRANSIENT)
			retry_later(s, OUTBOX_DB, en, &e);
		else
			fail_for_good(s, OUTBOX_DB, en, &e);
	} else {
		struct outbox_result r = { .state = OUTBOX_DONE };
		const cJSON *st_j = cJSON_GetObjectItemCaseSensitive(fields,
		    "status");

		record(s, OUTBOX_DB, en, &r);
		leg_ok(s, OUTBOX_DB);
		if (strcmp(outcome, "updated") == 0 && cJSON_IsString(st_j))
			log_msg(LOG_INFO, &ctx, "Job status updated: %s -> %s",
			    en->job_id, st_j->valuestring);
		else
			log_msg(LOG_INFO, &ctx, "job.json applied (%s)", outcome);
	}
	cJSON_Delete(fields);
}

/* What a document needs from its file: hash, platform. */
struct doc_prep {
	struct pg_doc doc;
	char sha256[65];
	char *file_info;
	const char *platform;
	char *user_id;		/* a copy: job.json may change the cache */
	int needs_etag;
	int ok;			/* ready to send */
};

static int
prepare_doc(struct sync *s, struct outbox_entry *en, struct doc_prep *dp)
{
	int xml = keymap_is_xml(en->path);
	const char *rest = en->path + strlen(en->job_id) + 1;
	const char *base = strrchr(en->path, '/');
	struct stat st, now;
	struct err e = {0};
	unsigned char *mem = NULL;
	int fd;

	memset(dp, 0, sizeof(*dp));
	snprintf(dp->sha256, sizeof(dp->sha256), "%s", en->sha256);
	if (dp->sha256[0] == '\0' || (xml && en->size <= PLATFORM_MAX_BYTES)) {
		fd = tree_open_file(s->rootfd, en->path, &st, &e);
		if (fd < 0) {
			file_problem(s, OUTBOX_DB, en, &e);
			return -1;
		}
		if (!same_file(&st, en)) {
			close(fd);
			superseded(s, OUTBOX_DB, en, &st, "after it was journaled");
			return -1;
		}
		if (hash_file(fd, (uint64_t)st.st_size, xml &&
		    st.st_size <= PLATFORM_MAX_BYTES ? &mem : NULL, dp->sha256,
		    NULL, NULL, &s->heartbeat, &e) < 0 || (fstat(fd, &now) == 0 &&
		    !same_file(&now, en))) {
			if (fstat(fd, &now) == 0 && (e.cls == ERR_CHANGED ||
			    e.cls == ERR_NONE))
				superseded(s, OUTBOX_DB, en, &now,
				    "while it was read");
			else
				file_problem(s, OUTBOX_DB, en, &e);
			close(fd);
			free(mem);
			return -1;
		}
		close(fd);
		if (en->sha256[0] != '\0' && strcmp(en->sha256, dp->sha256) != 0) {
			/* Same size, mtime and inode but other bytes: someone
			 * reset the mtime. The disk wins: record this. */
			log_msg(LOG_WARNING, &(struct log_ctx){ en->job_id,
			    en->path, "db" }, "content differs from what S3 "
			    "received although size and mtime match");
		}
	}
	if (mem != NULL) {
		struct platform_info pi;

		platform_detect((const char *)mem, (size_t)en->size, &pi);
		dp->platform = pi.platform;
		dp->file_info = platform_file_info(&pi, rest, en->size);
		free(mem);
	}
	dp->needs_etag = s->s3 != NULL && en->s3_etag == NULL &&
	    en->s3_state != OUTBOX_SKIPPED;
	dp->doc = (struct pg_doc){
		.event_id = en->event_id, .job_id = en->job_id,
		.file_path = rest, .filename = base ? base + 1 : en->path,
		.document_type = keymap_document_type(rest),
		.content_type = keymap_content_type(en->path),
		.s3_key = en->s3_key, .etag = en->s3_etag, .sha256 = dp->sha256,
		.platform = dp->platform, .file_info = dp->file_info,
		.file_size = en->size,
	};
	if (job_user(s, en->job_id) != NULL)
		dp->user_id = xstrdup(job_user(s, en->job_id));
	dp->doc.user_id = dp->user_id;
	dp->ok = 1;
	return 0;
}

static void
conclude_doc(struct sync *s, struct outbox_entry *en, struct doc_prep *dp)
{
	struct log_ctx ctx = { en->job_id, en->path, "db" };
	const struct pg_doc *d = &dp->doc;

	if (d->err.cls == ERR_NONE) {
		struct outbox_result r = { .state = OUTBOX_DONE,
		    .sha256 = dp->sha256, .needs_etag = dp->needs_etag };

		record(s, OUTBOX_DB, en, &r);
		if (strcmp(d->outcome, "job_created") == 0)
			log_msg(LOG_INFO, &ctx, "%s and job created: %s",
			    s->s3 && !dp->needs_etag ? "File uploaded to S3" :
			    "File recorded", en->job_id);
		else
			log_msg(LOG_INFO, &ctx, "recorded in documents (%s)",
			    d->outcome);
	} else if (d->err.cls == ERR_TRANSIENT) {
		retry_later(s, OUTBOX_DB, en, &d->err);
	} else {
		fail_for_good(s, OUTBOX_DB, en, &d->err);
	}
}

static int
run_db(struct sync *s, int stopping)
{
	struct outbox_entry *v = NULL;
	struct doc_prep *dp = NULL;
	struct pg_doc *docs = NULL;
	size_t n = 0, i, nd = 0;
	struct err e = {0};
	int want;

	if (s->pg == NULL || stopping)
		return 0;
	want = leg_allowance(s, OUTBOX_DB, DB_BATCH);
	if (want <= 0)
		return 0;
	if (outbox_claim(s->ob, OUTBOX_DB, want, s->s3 != NULL, NULL, NULL, &v,
	    &n, &e) < 0) {
		log_err("%s", e.msg);
		if (e.cls == ERR_FATAL)
			s->fatal = 1;
		return 0;
	}
	if (n == 0)
		return 0;
	dp = xcalloc(n, sizeof(*dp));
	docs = xcalloc(n, sizeof(*docs));
	for (i = 0; i < n; i++) {
		if (v[i].job_meta) {
			apply_job_meta(s, &v[i]);
			continue;
		}
		prepare_doc(s, &v[i], &dp[i]);
	}
	for (i = 0; i < n; i++)
		if (dp[i].ok)
			docs[nd++] = dp[i].doc;
	if (nd > 0) {
		int rc = pg_record_documents(s->pg, docs, nd, &e);
		size_t k = 0;

		if (rc == 0)
			test_crash_point("db-committed");
		batch_begin(s);
		for (i = 0; i < n; i++) {
			if (!dp[i].ok)
				continue;
			dp[i].doc = docs[k++];
			conclude_doc(s, &v[i], &dp[i]);
		}
		batch_end(s);
		if (rc == 0)
			leg_ok(s, OUTBOX_DB);
	}
	for (i = 0; i < n; i++) {
		free(dp[i].file_info);
		free(dp[i].user_id);
	}
	free(dp);
	free(docs);
	outbox_entries_free(v, n);
	return (int)n;
}

/* Writes ETags into document rows recorded before S3 answered. */
static int
run_etags(struct sync *s, int stopping)
{
	struct outbox_entry *v;
	size_t n = 0, i;
	struct err e = {0};

	if (s->pg == NULL || stopping || leg_allowance(s, OUTBOX_DB, 1) == 0)
		return 0;
	if (outbox_etag_todo(s->ob, 32, &v, &n, &e) < 0) {
		log_err("%s", e.msg);
		return 0;
	}
	for (i = 0; i < n; i++) {
		const char *rest = v[i].path + strlen(v[i].job_id) + 1;

		if (pg_set_etag(s->pg, v[i].job_id, rest, v[i].sha256,
		    v[i].s3_etag, &e) < 0) {
			log_warnx("recording an ETag: %s", e.msg);
			leg_failed(s, OUTBOX_DB);
			break;
		}
		if (outbox_etag_done(s->ob, v[i].id, &e) < 0)
			log_err("%s", e.msg);
	}
	outbox_entries_free(v, n);
	return (int)n;
}

/* ---- the loop ------------------------------------------------------------ */

struct sync *
sync_new(const struct cfg *cfg, int wake_fd, struct err *e)
{
	struct sync *s = xcalloc(1, sizeof(*s));

	s->cfg = cfg;
	s->wake_fd = wake_fd;
	s->inflight = strmap_new();
	s->job_users = strmap_new();
	s->rootfd = open(cfg->watch_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (s->rootfd < 0) {
		err_sys(e, ERR_FATAL, "OUTBOXD_WATCH_DIR=%s", cfg->watch_dir);
		goto fail;
	}
	s->ob = outbox_open(cfg->state_db, 0, e);
	if (s->ob == NULL)
		goto fail;
	/* Retries are never further off than the cap; beyond it (plus a
	 * margin for a slow clock) the clock must have been set back. */
	outbox_set_horizon(s->ob, (int64_t)cfg->retry_max_s * 1000 + 60000);
	if (cfg->bucket != NULL && (s->s3 = s3_new(cfg, e)) == NULL)
		goto fail;
	s->env = (struct upload_env){ cfg, s->s3, s->ob, s->rootfd };
	if (cfg->db_on)
		s->pg = pg_new(cfg);
	atomic_store(&s->heartbeat, time_mono_ms());
	return s;
fail:
	sync_free(s);
	return NULL;
}

void
sync_free(struct sync *s)
{
	size_t i = 0;
	const char *k;
	void *v;

	if (s == NULL)
		return;
	/* Requests still in curl point into the uploads: cancel them and
	 * let their owners record a retry, then drop the client. */
	if (s->s3 != NULL) {
		s3_cancel_all(s->s3);
		collect_s3(s);
		s3_free(s->s3);
		s->s3 = NULL;
	}
	for (i = 0; i < (size_t)s->nups; i++)
		upload_free(s->ups[i]);
	free(s->ups);
	while (s->unrecorded != NULL) {
		struct unrecorded *u = s->unrecorded;

		s->unrecorded = u->next;
		unrecorded_free(u);
	}
	i = 0;
	while (strmap_next(s->job_users, &i, &k, &v))
		free(v);
	strmap_free(s->job_users);
	strmap_free(s->inflight);
	pg_free(s->pg);
	outbox_close(s->ob);
	if (s->rootfd >= 0)
		close(s->rootfd);
	free(s);
}

void
sync_stop(struct sync *s)
{
	atomic_store(&s->stop, 1);
	eventfd_poke(s->wake_fd);
}

long long
sync_heartbeat(struct sync *s)
{
	return atomic_load(&s->heartbeat);
}

/*
 * Milliseconds until work may be claimable: the next due entry of a live
 * leg, but not before that leg's pause ends. -1 when nothing is pending.
 */
static int64_t
next_work(struct sync *s)
{
	static const enum outbox_leg legs[2] = { OUTBOX_S3, OUTBOX_DB };
	int64_t best = -1;
	int i;

	for (i = 0; i < 2; i++) {
		struct err e = {0};
		int64_t due;

		if ((legs[i] == OUTBOX_S3 && s->s3 == NULL) ||
		    (legs[i] == OUTBOX_DB && s->pg == NULL))
			continue;
		due = outbox_next_due(s->ob, legs[i], s->s3 != NULL, &e);
		if (due < 0)
			continue;
		if (s->legs[legs[i]].failures > 0) {
			int64_t left = s->legs[legs[i]].paused_until -
			    time_mono_ms();

			if (left > due)
				due = left;
		}
		if (best < 0 || due < best)
			best = due;
	}
	return best;
}

/* Milliseconds to wait before the next turn. */
static int
idle_timeout(struct sync *s, int busy)
{
	int64_t t;

	if (busy)
		return 0;
	/* Requests in flight wake the loop when they finish; a short nap
	 * covers retries falling due meanwhile without asking the outbox
	 * every turn. */
	if (s->s3 != NULL && s3_running(s->s3) > 0)
		return 100;
	t = next_work(s);
	if (t < 0 || t > 1000)
		t = 1000;
	/* Due but not claimable (its path is in flight): do not spin. */
	if (t < 20)
		t = 20;
	return (int)t;
}

static void
drain_wake(struct sync *s)
{
	eventfd_drain(s->wake_fd);
}

static void
wait_turn(struct sync *s, int timeout)
{
	if (s->s3 != NULL && s3_running(s->s3) > 0) {
		s3_wait(s->s3, timeout, s->wake_fd);
	} else if (timeout > 0) {
		struct pollfd p = { s->wake_fd, POLLIN, 0 };

		poll(&p, s->wake_fd >= 0 ? 1 : 0, timeout);
	}
	drain_wake(s);
	if (s->s3 != NULL)
		collect_s3(s);
}

/* One turn of work; returns 1 when more may be due right away. */
static int
turn(struct sync *s, int stopping)
{
	int recorded, etags;

	int hashing;

	atomic_store(&s->heartbeat, time_mono_ms());
	if (s->unrecorded != NULL)
		flush_unrecorded(s);
	hashing = run_s3(s, stopping);
	recorded = s->unrecorded ? 0 : run_db(s, stopping);
	etags = s->unrecorded ? 0 : run_etags(s, stopping);
	/* Hashing left, or a full batch: more is waiting right now. */
	return hashing || recorded >= DB_BATCH || etags >= 32;
}

int
sync_run(struct sync *s)
{
	int64_t stop_deadline = 0;

	while (!s->fatal) {
		int stopping = atomic_load(&s->stop);

		if (stopping) {
			int busy = s->s3 ? s3_running(s->s3) : 0;

			if (stop_deadline == 0) {
				stop_deadline = time_mono_ms() + STOP_GRACE_MS;
				if (busy > 0)
					log_info("stopping: letting %d "
					    "request(s) finish", busy);
			}
			if (busy == 0 || time_mono_ms() > stop_deadline)
				break;
		}
		wait_turn(s, idle_timeout(s, turn(s, stopping)));
	}
	if (s->s3 != NULL && s3_running(s->s3) > 0)
		log_warnx("stopped with %d request(s) unfinished: they are "
		    "retried at the next start", s3_running(s->s3));
	return s->fatal ? -1 : 0;
}

int
sync_once(struct sync *s)
{
	while (!s->fatal && !atomic_load(&s->stop)) {
		int busy = turn(s, 0);
		int64_t due;

		if (!busy && s->nups == 0 && (s->s3 == NULL ||
		    s3_running(s->s3) == 0)) {
			due = next_work(s);
			if (due < 0 || due > ONCE_WAIT_MS)
				break;
		}
		wait_turn(s, idle_timeout(s, busy));
	}
	while (s->nups > 0 && !s->fatal)
		wait_turn(s, idle_timeout(s, turn(s, 0)));
	return s->fatal ? -1 : 0;
}
