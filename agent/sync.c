/*
 * sync.c - the sync thread (see sync.h).
 *
 * One loop turn: start S3 transfers for due entries up to the concurrency
 * limit; record one pipelined batch of due database legs; record ETags
 * learned late; then wait in curl (or poll) until a transfer finishes,
 * the watcher journals something, or the next retry is due.
 *
 * Before a file is sent it is opened beneath the uploads root (no
 * symlinks), checked against what was journaled (size, mtime, inode),
 * and hashed (SHA-256 for the signature and metadata, MD5 for
 * Content-MD5). After it was sent it is checked again: a file that
 * changed in between is not marked done; the new version is journaled and
 * wins.
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

#include "agent/backoff.h"
#include "agent/jobmeta.h"
#include "agent/keymap.h"
#include "agent/log.h"
#include "agent/pg.h"
#include "agent/platform.h"
#include "agent/s3.h"
#include "agent/strmap.h"
#include "agent/sync.h"
#include "store/outbox.h"
#include "watchers/tree.h"

#define SMALL_FILE	(256 * 1024)	/* read whole into memory below this */
#define DB_BATCH	64		/* database legs per round trip */
#define ONCE_WAIT_MS	5000		/* --once waits for retries this close */
#define STOP_GRACE_MS	30000		/* transfers may finish after a stop */
#define JOB_JSON_MAX	(1024 * 1024)

/* A leg's circuit breaker. */
struct leg {
	int failures;		/* consecutive transient failures */
	int64_t paused_until;	/* wall ms; claim one probe at a time till */
};

/* One S3 transfer in flight. */
struct xfer {
	struct s3_req req;
	struct outbox_entry en;
	int fd;			/* the file, open while sending */
	unsigned char *mem;	/* its bytes when small */
	struct stat st;		/* as hashed */
	char md5_hex[33];
	struct xfer *next;
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
	struct xfer *xfers;		/* in flight */
	int nxfers;
	struct strmap *inflight;	/* paths with an S3 transfer in flight */
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
	l->paused_until = retry_at(s, l->failures);
}

/* How many of leg's entries may be claimed now. */
static int
leg_allowance(const struct sync *s, enum outbox_leg leg, int want)
{
	const struct leg *l = &s->legs[leg];

	if (l->failures == 0)
		return want;
	if (time_now_ms() < l->paused_until)
		return 0;
	return want > 0 ? 1 : 0;	/* one probe */
}

static void
record(struct sync *s, enum outbox_leg leg, const struct outbox_entry *en,
    const struct outbox_result *r)
{
	struct err e = {0};

	if (outbox_finish(s->ob, leg, en->id, r, &e) < 0) {
		log_err("%s", e.msg);
		if (e.cls == ERR_FATAL)
			s->fatal = 1;
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
 * the file turned out shorter or longer than size).
 */
static int
hash_file(int fd, uint64_t size, unsigned char **mem, char *sha_hex,
    char *md5_b64, char *md5_hex, struct err *e)
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

static void
xfer_free(struct xfer *x)
{
	if (x->fd >= 0)
		close(x->fd);
	free(x->mem);
	free(x->req.key);
	buf_free(&x->req.body);
	outbox_entry_free(&x->en);
	free(x);
}

/* Opens, checks and hashes the file, then starts its PUT. Takes en. */
static void
start_put(struct sync *s, struct outbox_entry *en)
{
	struct xfer *x = xcalloc(1, sizeof(*x));
	struct stat now;
	struct err e = {0};

	x->en = *en;
	memset(en, 0, sizeof(*en));
	x->fd = tree_open_file(s->rootfd, x->en.path, &x->st, &e);
	if (x->fd < 0) {
		file_problem(s, OUTBOX_S3, &x->en, &e);
		goto drop;
	}
	if (!same_file(&x->st, &x->en)) {
		superseded(s, OUTBOX_S3, &x->en, &x->st,
		    "after it was journaled");
		goto drop;
	}
	if (hash_file(x->fd, (uint64_t)x->st.st_size,
	    x->st.st_size <= SMALL_FILE ? &x->mem : NULL, x->en.sha256,
	    x->req.md5, x->md5_hex, &e) < 0) {
		if (e.cls == ERR_CHANGED && fstat(x->fd, &now) == 0)
			superseded(s, OUTBOX_S3, &x->en, &now,
			    "while it was read");
		else
			file_problem(s, OUTBOX_S3, &x->en, &e);
		goto drop;
	}
	if (fstat(x->fd, &now) == 0 && !same_file(&now, &x->en)) {
		superseded(s, OUTBOX_S3, &x->en, &now, "while it was read");
		goto drop;
	}
	if (x->mem != NULL) {
		close(x->fd);
		x->fd = -1;
	}
	x->req.method = "PUT";
	x->req.key = xstrdup(x->en.s3_key);
	x->req.fd = x->fd;
	x->req.mem = x->mem;
	x->req.offset = 0;
	x->req.length = (uint64_t)x->st.st_size;
	memcpy(x->req.sha256, x->en.sha256, sizeof(x->req.sha256));
	x->req.content_type = keymap_content_type(x->en.path);
	x->req.job_id = x->en.job_id;
	x->req.file_sha256 = x->en.sha256;
	x->req.user = x;
	if (s3_start(s->s3, &x->req) < 0) {
		retry_later(s, OUTBOX_S3, &x->en, &x->req.err);
		goto drop;
	}
	strmap_put(s->inflight, x->en.path, x);
	x->next = s->xfers;
	s->xfers = x;
	s->nxfers++;
	return;
drop:
	xfer_free(x);
}

/* 1 when etag is an MD5 ETag ("<32 hex>") that differs from md5_hex. */
static int
etag_mismatch(const char *etag, const char *md5_hex)
{
	size_t n = strlen(etag);

	if (n != 34 || etag[0] != '"' || etag[33] != '"')
		return 0;	/* multipart or not an MD5: nothing to compare */
	return strncasecmp(etag + 1, md5_hex, 32) != 0;
}

static void
unlink_xfer(struct sync *s, struct xfer *x)
{
	struct xfer **pp;

	for (pp = &s->xfers; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == x) {
			*pp = x->next;
			break;
		}
	}
	s->nxfers--;
	strmap_del(s->inflight, x->en.path);
}

static void
finish_put(struct sync *s, struct xfer *x)
{
	struct log_ctx ctx = { x->en.job_id, x->en.path, "s3" };
	struct stat now;
	struct err e = {0};

	s3_req_clear(&x->req);
	unlink_xfer(s, x);
	if (x->req.err.cls == ERR_NONE) {
		int fd = x->fd >= 0 ? x->fd : -1;

		/* The bytes sent must be the version journaled. */
		if (fd >= 0 && fstat(fd, &now) == 0 && !same_file(&now, &x->en)) {
			superseded(s, OUTBOX_S3, &x->en, &now,
			    "while it was being sent");
		} else if (!x->req.kms && etag_mismatch(x->req.etag, x->md5_hex)) {
			err_set(&e, ERR_TRANSIENT, "S3 returned ETag %s, not "
			    "the MD5 of what was sent", x->req.etag);
			retry_later(s, OUTBOX_S3, &x->en, &e);
		} else {
			struct outbox_result r = { .state = OUTBOX_DONE,
			    .etag = x->req.etag, .sha256 = x->en.sha256 };

			record(s, OUTBOX_S3, &x->en, &r);
			leg_ok(s, OUTBOX_S3);
			log_msg(LOG_INFO, &ctx, "stored s3://%s/%s (%lld bytes)",
			    s->cfg->bucket, x->en.s3_key, (long long)x->en.size);
		}
	} else if (x->req.err.cls == ERR_CHANGED) {
		if (fstat(x->fd, &now) == 0)
			superseded(s, OUTBOX_S3, &x->en, &now,
			    "while it was being sent");
		else
			retry_later(s, OUTBOX_S3, &x->en, &x->req.err);
	} else if (x->req.err.cls == ERR_TRANSIENT) {
		retry_later(s, OUTBOX_S3, &x->en, &x->req.err);
	} else {
		fail_for_good(s, OUTBOX_S3, &x->en, &x->req.err);
	}
	xfer_free(x);
}

static int
start_s3(struct sync *s, int stopping)
{
	struct outbox_entry *v;
	size_t n = 0, i;
	struct err e = {0};
	int room = s->cfg->concurrency - s->nxfers;

	if (s->s3 == NULL || stopping || room <= 0)
		return 0;
	room = leg_allowance(s, OUTBOX_S3, room);
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
		start_put(s, &v[i]);
	outbox_entries_free(v, n);
	return (int)n;
}

static void
collect_s3(struct sync *s)
{
	struct s3_req *r;
	struct err e = {0};
	int open = 0;

	while ((r = s3_done(s->s3)) != NULL) {
		if (!open && outbox_begin(s->ob, &e) == 0)
			open = 1;
		finish_put(s, r->user);
	}
	if (open && outbox_commit(s->ob, &e) < 0) {
		log_err("%s", e.msg);
		if (e.cls == ERR_FATAL)
			s->fatal = 1;
	}
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
		    NULL, NULL, &e) < 0 || (fstat(fd, &now) == 0 &&
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

		if (outbox_begin(s->ob, &e) < 0)
			log_err("%s", e.msg);
		for (i = 0; i < n; i++) {
			if (!dp[i].ok)
				continue;
			dp[i].doc = docs[k++];
			conclude_doc(s, &v[i], &dp[i]);
		}
		if (outbox_commit(s->ob, &e) < 0)
			log_err("%s", e.msg);
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
	if (cfg->bucket != NULL && (s->s3 = s3_new(cfg, e)) == NULL)
		goto fail;
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
	while (s->xfers != NULL) {
		struct xfer *x = s->xfers;

		s->xfers = x->next;
		s3_req_clear(&x->req);
		xfer_free(x);
	}
	while (strmap_next(s->job_users, &i, &k, &v))
		free(v);
	strmap_free(s->job_users);
	strmap_free(s->inflight);
	s3_free(s->s3);
	pg_free(s->pg);
	outbox_close(s->ob);
	if (s->rootfd >= 0)
		close(s->rootfd);
	free(s);
}

void
sync_stop(struct sync *s)
{
	uint64_t one = 1;

	atomic_store(&s->stop, 1);
	if (s->wake_fd >= 0)
		(void)write(s->wake_fd, &one, sizeof(one));
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
			    time_now_ms();

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
	int64_t t = next_work(s);

	if (busy)
		return 0;
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
	uint64_t v;

	if (s->wake_fd >= 0)
		(void)read(s->wake_fd, &v, sizeof(v));
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

	atomic_store(&s->heartbeat, time_mono_ms());
	start_s3(s, stopping);
	recorded = run_db(s, stopping);
	etags = run_etags(s, stopping);
	/* A full batch suggests more is waiting. */
	return recorded >= DB_BATCH || etags >= 32;
}

int
sync_run(struct sync *s)
{
	int64_t stop_deadline = 0;

	while (!s->fatal) {
		int stopping = atomic_load(&s->stop);

		if (stopping) {
			if (stop_deadline == 0) {
				stop_deadline = time_mono_ms() + STOP_GRACE_MS;
				if (s->nxfers > 0)
					log_info("stopping: letting %d "
					    "transfer(s) finish", s->nxfers);
			}
			if (s->nxfers == 0 || time_mono_ms() > stop_deadline)
				break;
		}
		wait_turn(s, idle_timeout(s, turn(s, stopping)));
	}
	if (s->nxfers > 0)
		log_warnx("stopped with %d transfer(s) unfinished: they are "
		    "retried at the next start", s->nxfers);
	return s->fatal ? -1 : 0;
}

int
sync_once(struct sync *s)
{
	while (!s->fatal && !atomic_load(&s->stop)) {
		int busy = turn(s, 0);
		int64_t due;

		if (!busy && s->nxfers == 0) {
			due = next_work(s);
			if (due < 0 || due > ONCE_WAIT_MS)
				break;
		}
		wait_turn(s, idle_timeout(s, busy));
	}
	while (s->nxfers > 0 && !s->fatal)
		wait_turn(s, 1000);
	return s->fatal ? -1 : 0;
}
