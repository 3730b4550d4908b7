/*
 * dbleg.c - the database leg: records each stored version of a document
 * (outboxd_record_document, one pipelined batch per turn) and applies
 * job.json entries to the job's row, then back-fills ETags into rows
 * recorded before S3 answered (see engine.h for how outcomes are
 * reported, and legstate.h for what they do to the leg).
 *
 * A document needs its SHA-256 (from the S3 leg, or hashed here when S3
 * is off) and, for XML, its platform (the root element, read here). Once
 * the S3 leg has stored a version, that version is recorded even when the
 * local file has since vanished or changed: S3 has the bytes, so the
 * database must have the row; only the platform cannot be told then.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "agent/db/jobmeta.h"
#include "agent/db/platform.h"
#include "agent/engine/engine.h"
#include "base/keymap.h"
#include "base/log.h"
#include "watchers/tree.h"

#define DB_BATCH	64		/* database legs per round trip */
#define ETAG_BATCH	32		/* ETags back-filled per turn */
#define JOB_JSON_MAX	(1024 * 1024)

/*
 * Reads fd (size bytes) computing its SHA-256, 64 KiB at a time (platform
 * detection reads its own head: read_head). Returns 0, or -1 with e
 * (ERR_CHANGED when the file turned out shorter or longer than size).
 * Beats the thread's heartbeat as it goes: a huge file on slow storage is
 * progress, not a hang for the watchdog.
 */
static int
hash_file(int fd, uint64_t size, char *sha_hex, atomic_llong *beat,
    struct err *e)
{
	EVP_MD_CTX *sha = EVP_MD_CTX_new();
	unsigned char chunk[64 * 1024], dsha[32];
	uint64_t off = 0;
	int rc = -1;

	if (sha == NULL)
		abort();
	EVP_DigestInit_ex(sha, sha256_evp(), NULL);
	for (;;) {
		ssize_t n = pread(fd, chunk, sizeof(chunk), (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			goto ioerr;
		}
		if (n == 0)
			break;
		EVP_DigestUpdate(sha, chunk, (size_t)n);
		off += (uint64_t)n;
		if (off > size)
			goto changed;
		if (beat != NULL && (off & ((16u << 20) - 1)) < (uint64_t)n)
			atomic_store(beat, time_mono_ms());	/* every 16 MiB */
	}
	if (off != size)
		goto changed;
	EVP_DigestFinal_ex(sha, dsha, NULL);
	hex_encode(dsha, sizeof(dsha), sha_hex);
	rc = 0;
	goto out;
changed:
	err_set(e, ERR_CHANGED, "the file's size changed while it was read");
	goto out;
ioerr:
	err_sys(e, ERR_TRANSIENT, "reading the file");
out:
	EVP_MD_CTX_free(sha);
	return rc;
}

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

void
dbleg_free(struct sync *s)
{
	size_t i = 0;
	const char *k;
	void *v;

	if (s->job_users == NULL)
		return;
	while (strmap_next(s->job_users, &i, &k, &v))
		free(v);
	strmap_free(s->job_users);
	s->job_users = NULL;
}

/* A failure reported by the database client. */
static void
db_failed(struct sync *s, const struct outbox_entry *en, const struct err *e)
{
	if (e->cls == ERR_TRANSIENT)
		engine_retry_later(s, OUTBOX_DB, en, e);
	else if (e->cls == ERR_REFUSED)
		engine_refused(s, OUTBOX_DB, en, e);
	else
		engine_fail(s, OUTBOX_DB, en, e);
}

/* Applies a job.json entry. */
static void
apply_job_meta(struct sync *s, struct outbox_entry *en)
{
	struct log_ctx ctx = { en->job_id, en->path, "db", en->id };
	struct stat st;
	struct err e = {0};
	const char *outcome;
	size_t len;
	char *text;
	cJSON *fields;
	char why[1200];

	text = read_small(s->rootfd, en->path, JOB_JSON_MAX, &len, &st, &e);
	if (text == NULL) {
		engine_file_problem(s, OUTBOX_DB, en, &e);
		return;
	}
	if (!engine_same_file(&st, en)) {
		free(text);
		engine_skip(s, OUTBOX_DB, en, EV_CHANGED, "job.json changed "
		    "after it was journaled; the watcher journals the new "
		    "version");
		return;
	}
	fields = jobmeta_parse(text, len, &e);
	free(text);
	if (fields == NULL) {
		/* Not applied; the next version of the file is a new entry. */
		utf8_snprintf(why, sizeof(why), "job.json not applied: %s",
		    e.msg);
		log_msg(LOG_WARNING, &ctx, "%s", why);
		engine_skip(s, OUTBOX_DB, en, EV_INVALID, why);
		return;
	}
	forget_job_user(s, en->job_id);
	if (s->io.db.apply_job_meta(s->io.db.h, en->event_id, en->job_id, fields,
	    &outcome, &e) < 0) {
		db_failed(s, en, &e);
	} else {
		struct outbox_outcome oc = { .event = EV_STORED };
		const cJSON *st_j = cJSON_GetObjectItemCaseSensitive(fields,
		    "status");

		engine_outcome(s, OUTBOX_DB, en->id, &oc);
		engine_leg_ok(s, OUTBOX_DB);
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
	int ok;			/* ready to send */
};

/* S3 has this version's bytes and SHA-256: the row can be written from
 * what the outbox knows, without the file. */
static int
known_from_s3(const struct outbox_entry *en)
{
	return en->s3_state == OUTBOX_DONE && en->sha256[0] != '\0';
}

/* The S3 leg may yet store this version (it is on and not decided; a
 * failed leg waits for an admin, so it counts as decided). */
static int
s3_undecided(const struct sync *s, const struct outbox_entry *en)
{
	return s->io.s3.h != NULL && (en->s3_state == OUTBOX_PENDING ||
	    en->s3_state == OUTBOX_IN_FLIGHT);
}

/* The file is gone or changed: recorded from S3's facts (1), left to wait
 * for the S3 leg's outcome, or skipped (-1, reported). */
static int
without_file(struct sync *s, struct outbox_entry *en, enum leg_event ev)
{
	struct outbox_outcome oc = { .event = EV_WAIT };

	if (known_from_s3(en))
		return 1;
	if (s3_undecided(s, en)) {
		/* Moved away while S3 sends it from an open descriptor: if
		 * S3 ends with the bytes, the row must follow. */
		oc.error = "the file is no longer there; waiting for the S3 "
		    "leg, which may still store this version";
		oc.next_at_ms = time_now_ms() + (int64_t)s->cfg->retry_base_ms *
		    (en->db_attempts < 6 ? 1 << en->db_attempts : 64);
		engine_outcome(s, OUTBOX_DB, en->id, &oc);
		return -1;
	}
	if (ev == EV_GONE)
		engine_file_problem(s, OUTBOX_DB, en, &(struct err){ .cls =
		    ERR_GONE });
	else
		engine_skip(s, OUTBOX_DB, en, EV_CHANGED, "the file changed "
		    "before it was recorded; the watcher journals the new "
		    "version");
	return -1;
}

/* The first PLATFORM_SCAN_BYTES of the file (all of a smaller one) into
 * *mem, NUL terminated: the part platform detection reads. */
static int
read_head(int fd, off_t size, unsigned char **mem, struct err *e)
{
	size_t want = size < PLATFORM_SCAN_BYTES ? (size_t)size :
	    PLATFORM_SCAN_BYTES, got = 0;
	unsigned char *buf = xmalloc(want + 1);

	while (got < want) {
		ssize_t n = pread(fd, buf + got, want - got, (off_t)got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(buf);
			if (n < 0) {
				err_sys(e, ERR_TRANSIENT, "reading");
				return -1;
			}
			err_set(e, ERR_CHANGED, "the file got shorter while "
			    "it was read");
			return -1;

		}
		got += (size_t)n;
	}
	buf[got] = '\0';
	*mem = buf;
	return 0;
}

/*
 * Reads en's file for its SHA-256 (unless sha has it) and (XML) its head
 * into *mem. 0 when
 * read; 1 when the file is gone or no longer this version but S3 has it
 * (record without reading); -1 when the leg's outcome is already
 * reported.
 */
static int
read_doc(struct sync *s, struct outbox_entry *en, int keep, char *sha,
    unsigned char **mem)
{
	struct stat st, now;
	struct err e = {0};
	int fd, rc;

	fd = tree_open_file(s->rootfd, en->path, &st, &e);
	if (fd < 0) {
		if (e.cls == ERR_GONE)
			return without_file(s, en, EV_GONE);
		engine_file_problem(s, OUTBOX_DB, en, &e);
		return -1;
	}
	/* An XML file whose SHA-256 the S3 leg already has (this version:
	 * the stat is checked before and after) is not read whole again,
	 * only its head. */
	if (!engine_same_file(&st, en))
		rc = -1;
	else if (sha[0] != '\0')
		rc = 0;
	else
		rc = hash_file(fd, (uint64_t)st.st_size, sha, &s->heartbeat,
		    &e);
	if (rc == 0 && keep)
		rc = read_head(fd, st.st_size, mem, &e);
	if (rc == 0 && (fstat(fd, &now) < 0 || !engine_same_file(&now, en))) {
		free(*mem);
		*mem = NULL;
		rc = -1;
	}
	close(fd);
	if (rc == 0)
		return 0;
	if (e.cls == ERR_TRANSIENT || e.cls == ERR_PERMANENT) {
		engine_file_problem(s, OUTBOX_DB, en, &e);
		return -1;
	}
	return without_file(s, en, EV_CHANGED);
}

static int
prepare_doc(struct sync *s, struct outbox_entry *en, struct doc_prep *dp)
{
	int xml = keymap_is_xml(en->path);
	const char *rest = en->path + strlen(en->job_id) + 1;
	const char *base = strrchr(en->path, '/');
	const char *user;
	unsigned char *mem = NULL;
	int marked = 0;

	memset(dp, 0, sizeof(*dp));
	snprintf(dp->sha256, sizeof(dp->sha256), "%s", en->sha256);
	if (dp->sha256[0] == '\0' || xml) {
		int rc;

		/* Reading and inspecting the file is where a hostile or
		 * broken one can kill outboxd: mark it (poison.h). */
		poison_begin(s->poison, en->id);
		marked = 1;
		rc = read_doc(s, en, xml, dp->sha256, &mem);
		if (rc < 0) {
			poison_end(s->poison);
			return -1;
		}
		if (rc == 1)
			snprintf(dp->sha256, sizeof(dp->sha256), "%s",
			    en->sha256);
		else if (en->sha256[0] != '\0' &&
		    strcmp(en->sha256, dp->sha256) != 0)
			/* Same size, mtime and inode but other bytes: someone
			 * reset the mtime. The disk wins: record this. */
			log_msg(LOG_WARNING, &(struct log_ctx){ en->job_id,
			    en->path, "db", en->id }, "content differs from "
			    "what S3 received although size and mtime match");
	}
	if (mem != NULL) {
		struct platform_info pi;
		size_t len = en->size < PLATFORM_SCAN_BYTES ?
		    (size_t)en->size : PLATFORM_SCAN_BYTES;

		test_crash_point("inspecting");
		platform_detect((const char *)mem, len, len == (size_t)en->size,
		    &pi);
		dp->platform = pi.platform;
		dp->file_info = platform_file_info(&pi, rest, en->size);
		free(mem);
	}
	if (marked)
		poison_end(s->poison);
	dp->doc = (struct pg_doc){
		.event_id = en->event_id, .job_id = en->job_id,
		.file_path = rest, .filename = base ? base + 1 : en->path,
		.document_type = keymap_document_type(rest),
		.content_type = keymap_content_type(en->path),
		/* Until S3 has this version the row names no object: a
		 * row written ahead of S3 (an outage) points at nothing
		 * rather than at another version's bytes. */
		.s3_key = en->s3_etag ? en->s3_key : NULL,
		.etag = en->s3_etag, .sha256 = dp->sha256,
		.platform = dp->platform, .file_info = dp->file_info,
		.file_size = en->size, .repair = en->repair,
	};
	if ((user = job_user(s, en->job_id)) != NULL)
		dp->user_id = xstrdup(user);
	dp->doc.user_id = dp->user_id;
	dp->ok = 1;
	return 0;
}

static void
conclude_doc(struct sync *s, struct outbox_entry *en, struct doc_prep *dp)
{
	struct log_ctx ctx = { en->job_id, en->path, "db", en->id };
	const struct pg_doc *d = &dp->doc;
	struct outbox_outcome oc = { .event = EV_STORED, .sha256 = dp->sha256 };

	if (d->err.cls != ERR_NONE) {
		db_failed(s, en, &d->err);
		return;
	}
	/* A replay finds the event applied and touches nothing: the row may
	 * lack the ETag, so the ETag pass writes it. So does a row written
	 * before S3 answered. */
	if (strcmp(d->outcome, "duplicate") == 0)
		oc.event = EV_DUPLICATE;
	else if (d->etag == NULL)
		oc.event = EV_STORED_NO_ETAG;
	engine_outcome(s, OUTBOX_DB, en->id, &oc);
	if (strcmp(d->outcome, "job_created") == 0)
		log_msg(LOG_INFO, &ctx, "%s and job created: %s", d->etag ?
		    "File uploaded to S3" : "File recorded", en->job_id);
	else if (en->repair)
		log_msg(LOG_INFO, &ctx, "repair recorded in documents (%s)",
		    d->outcome);
	else
		log_msg(LOG_INFO, &ctx, "recorded in documents (%s)",
		    d->outcome);
}

int
dbleg_run(struct sync *s, struct outbox_entry *v, size_t n)
{
	struct doc_prep *dp = NULL;
	struct pg_doc *docs = NULL;
	size_t i, nd = 0, k = 0;
	struct err e = {0};
	int rc;

	if (n == 0) {
		free(v);
		return 0;
	}
	metrics_claimed(&s->live, OUTBOX_DB, v, n);
	dp = xcalloc(n, sizeof(*dp));
	docs = xcalloc(n, sizeof(*docs));
	for (i = 0; i < n; i++) {
		if (v[i].job_meta)
			apply_job_meta(s, &v[i]);
		else if (prepare_doc(s, &v[i], &dp[i]) == 0)
			docs[nd++] = dp[i].doc;
	}
	if (nd > 0) {
		rc = s->io.db.record_documents(s->io.db.h, docs, nd, &e);
		if (rc == 0)
			test_crash_point("db-committed");
		for (i = 0; i < n; i++) {
			if (!dp[i].ok)
				continue;
			dp[i].doc = docs[k++];
			conclude_doc(s, &v[i], &dp[i]);
		}
		if (rc == 0)
			engine_leg_ok(s, OUTBOX_DB);
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

int
dbleg_etags(struct sync *s, int stopping)
{
	struct outbox_entry *v;
	size_t n = 0, i;
	struct err e = {0};

	if (s->io.db.h == NULL || stopping ||
	    engine_leg_allowance(s, OUTBOX_DB, 1) == 0)
		return 0;
	/* Asked once a second, or at once when a row may lack its ETag
	 * (engine_outcome) or a full batch came back. */
	if (s->etags_read_at != 0 &&
	    time_mono_ms() - s->etags_read_at < RECHECK_MS)
		return 0;
	s->etags_read_at = time_mono_ms();
	if (outbox_etag_todo(s->ob, ETAG_BATCH, &v, &n, &e) < 0) {
		log_err("%s", e.msg);
		return 0;
	}
	if (n == ETAG_BATCH)
		s->etags_read_at = 0;
	for (i = 0; i < n; i++) {
		const char *rest = v[i].path + strlen(v[i].job_id) + 1;

		if (s->io.db.set_etag(s->io.db.h, v[i].job_id, rest,
		    v[i].sha256, v[i].s3_etag, v[i].s3_key, &e) < 0) {
			log_warnx("recording an ETag: %s", e.msg);
			engine_leg_failed(s, OUTBOX_DB);
			break;
		}
		engine_note(s, R_ETAG_DONE, v[i].id, NULL, NULL, NULL, 0, 0);
		engine_leg_ok(s, OUTBOX_DB);
	}
	outbox_entries_free(v, n);
	return (int)n;
}
