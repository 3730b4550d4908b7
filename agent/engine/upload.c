/*
 * upload.c - one entry's S3 leg (see upload.h).
 *
 *   hash ──┬─> PUT ───────────────────────────────────────────> done
 *          └─> CreateMultipartUpload ─> UploadPart × n ─> Complete ─> done
 *   hash parts ─────────────────────────┘             lost reply? ─> HEAD
 *
 * Each body is covered by one digest: the SHA-256 it is signed with
 * (x-amz-content-sha256), which S3 checks against the bytes it receives.
 * A single PUT's is the file's SHA-256, which is also the document's and
 * x-amz-meta-sha256; a part's is its own. With a hasher (hasher.h) a large
 * file is hashed on worker threads: the file's SHA-256 on one while the
 * parts' are hashed on another, a few parts ahead of the sends; without one
 * (the simulator, and files small enough to keep in memory) upload_work
 * reads the file once in bounded steps on the sync thread, feeding the
 * file's digest and the current part's.
 *
 * Every request an upload makes is a struct ureq; the upload counts them
 * and is finished only when it has decided its outcome and none is left
 * in flight, so curl never holds a pointer into freed memory.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <openssl/evp.h>

#include "base/keymap.h"
#include "agent/engine/engine.h"
#include "agent/engine/hasher.h"
#include "agent/engine/upload.h"
#include "watchers/tree.h"

#define SMALL_FILE	(256 * 1024)	/* bodies kept in memory below this */
#define MAX_PARTS	10000
#define MAX_RESTARTS	2		/* fresh multipart uploads per attempt */
#define READ_CHUNK	(256 * 1024)
#define HASH_AHEAD	4		/* part jobs queued per upload */

enum phase { P_HASH, P_PUT, P_CREATE, P_PARTS, P_COMPLETE, P_HEAD, P_END };
enum kind { K_PUT, K_CREATE, K_PART, K_COMPLETE, K_HEAD };
enum part_state { PART_TODO, PART_SENDING, PART_DONE };

struct part {
	uint64_t offset, length;
	char sha256[65];	/* of the part's bytes, signed */
	int hashed;		/* sha256 is set */
	char etag[128];		/* recorded or returned */
	char done_digest[65];	/* digest recorded with a resumed part */
	enum part_state state;
};

/* A part being hashed by the hasher. */
struct part_job {
	struct hash_job job;
	int part;		/* index into parts, -1 when free */
};

/* A request in flight. */
struct ureq {
	struct s3_req req;	/* first: s3_req.user points to the ureq */
	struct upload *u;
	enum kind kind;
	int part;		/* K_PART: index into parts */
	char num[16];		/* partNumber as text */
	char *upload_id;	/* the upload it belongs to (parts) */
	struct buf xml;		/* K_COMPLETE: the body */
	long long ticket;	/* engine_s3_ticket at its start */
};

struct upload {
	const struct upload_env *env;	/* the sync thread's, outlives u */
	struct outbox_entry en;	/* owned */
	int fd;			/* the file, open until the upload ends */
	struct stat st;		/* as opened and hashed */
	uint64_t size;		/* bytes, as opened */
	enum phase phase;	/* what it does next */
	int inflight;		/* requests in flight */
	int put_sent;		/* P_PUT: the PUT was started */
	int stopping;		/* shutdown: start nothing new */
	uint64_t hashed;	/* inline: bytes hashed so far */
	EVP_MD_CTX *sha_file, *sha_part;	/* inline: running digests */
	struct hasher *hasher;	/* threaded: hashes for us, or NULL */
	struct hash_job file_job;	/* threaded: the whole file */
	int file_submitted;	/* threaded: file_job was queued */
	struct part_job pjobs[HASH_AHEAD];	/* threaded: parts */
	int next_part_job;	/* threaded: first part not yet queued */
	unsigned char *mem;	/* small single-PUT body */
	int stream;		/* a single PUT hashed as it is sent (its
				   SHA-256, file_job's, in an aws-chunked
				   trailer): no hashing first, no
				   x-amz-meta-sha256 */
	int stream_hashed;	/* stream: sha256 is file_job's digest */
	struct ureq *put_q;	/* stream: the PUT in flight, which waits
				   at its trailer for the digest */
	char sha256[65];	/* of the whole file */
	int multipart;		/* above OUTBOXD_MULTIPART_THRESHOLD */
	uint64_t part_size;	/* bytes per part but the last */
	int nparts;		/* parts planned */
	struct part *parts;	/* nparts, in order */
	char *upload_id;	/* the multipart upload, or NULL */
	int restarts;		/* fresh multipart uploads this attempt */
	int decided;		/* out is final */
	int started;		/* a request was sent */
	const char *stop_why;	/* upload_stop's first reason (static) */
	long long ticket;	/* its last request's (engine_s3_ticket) */
	const char *abandon_why;	/* abort the upload once idle */
	struct upload_outcome out;	/* what the sync thread records */
};

/* ---- outcome ------------------------------------------------------------- */

/* Gives up on the multipart upload: abort it in S3 and forget it here. */
static void
abandon(struct upload *u, const char *why)
{
	if (u->upload_id == NULL)
		return;
	engine_note(u->env->sync, R_ABORT_ADD, u->en.id, u->upload_id,
	    u->en.s3_key, why, 0, 0);
	engine_note(u->env->sync, R_UPLOAD_CLEAR, u->en.id, NULL, NULL, NULL, 0,
	    0);
	free(u->upload_id);
	u->upload_id = NULL;
}

/*
 * The abort waits until no part of the upload is in flight: a part that
 * lands after AbortMultipartUpload would be stored again and left behind
 * (S3 documents the same race).
 */
static void
settle(struct upload *u)
{
	if (u->decided && u->inflight == 0 && u->abandon_why != NULL) {
		abandon(u, u->abandon_why);
		u->abandon_why = NULL;
	}
}

/* Stops the hasher's work for u; upload_finished waits for it. */
static void
cancel_hashing(struct upload *u)
{
	int i;

	if (hash_job_pending(&u->file_job))
		hash_job_cancel(u->hasher, &u->file_job);
	for (i = 0; i < HASH_AHEAD; i++)
		if (hash_job_pending(&u->pjobs[i].job))
			hash_job_cancel(u->hasher, &u->pjobs[i].job);
	/* A streamed PUT paused at its trailer would wait for ever: it
	 * aborts instead (its reply finds the upload decided). */
	if (u->put_q != NULL && u->put_q->req.stream_digest == 0)
		u->put_q->req.stream_digest = -1;
}

static int
hashing_pending(const struct upload *u)
{
	int i;

	if (hash_job_pending(&u->file_job))
		return 1;
	for (i = 0; i < HASH_AHEAD; i++)
		if (hash_job_pending(&u->pjobs[i].job))
			return 1;
	return 0;
}

/* Settles the outcome; the first decision stands. */
static void
decide(struct upload *u, enum upload_result r, const struct err *e,
    const char *when)
{
	if (u->decided)
		return;
	u->decided = 1;
	u->phase = P_END;
	cancel_hashing(u);
	u->out.result = r;
	if (e != NULL)
		u->out.err = *e;
	u->out.when = when;
	u->out.parts = u->multipart ? u->nparts : 0;
	memcpy(u->out.sha256, u->sha256, sizeof(u->out.sha256));
	switch (r) {
	case UPLOAD_DONE:
		if (u->multipart)
			engine_note(u->env->sync, R_UPLOAD_CLEAR, u->en.id, NULL,
			    NULL, NULL, 0, 0);
		break;
	case UPLOAD_FAILED:
		u->abandon_why = "the S3 leg failed";
		break;
	case UPLOAD_GONE:
		u->abandon_why = "the file vanished";
		break;
	case UPLOAD_CHANGED:
		u->abandon_why = "the file changed";
		break;
	default:
		break;	/* RETRY and STOPPED keep the upload to resume */
	}
	settle(u);
}

static void
changed(struct upload *u, const char *when)
{
	if (fstat(u->fd, &u->out.st) < 0 || u->out.st.st_nlink == 0) {
		struct err e;

		err_set(&e, ERR_GONE, "the file vanished %s", when);
		decide(u, UPLOAD_GONE, &e, when);
		return;
	}
	decide(u, UPLOAD_CHANGED, NULL, when);
}

/* A failed request's error as the upload's outcome. */
static void
request_failed(struct upload *u, const struct s3_req *r)
{
	switch (r->err.cls) {
	case ERR_CHANGED:
		changed(u, "while it was being sent");
		break;
	case ERR_TRANSIENT:
	case ERR_REFUSED:	/* the engine pauses the leg; entry pending */
	case ERR_DENIED:	/* the engine tells the leg's from the key's */
		decide(u, UPLOAD_RETRY, &r->err, NULL);
		break;
	default:
		decide(u, UPLOAD_FAILED, &r->err, NULL);
		break;
	}
}

/* ---- set-up -------------------------------------------------------------- */

static void
plan_parts(struct upload *u)
{
	uint64_t off = 0;
	int i;

	u->part_size = (u->size + MAX_PARTS - 1) / MAX_PARTS;
	if (u->part_size < u->env->min_part)
		u->part_size = u->env->min_part;
	u->nparts = (int)((u->size + u->part_size - 1) / u->part_size);
	u->parts = xcalloc((size_t)u->nparts, sizeof(*u->parts));
	for (i = 0; i < u->nparts; i++) {
		u->parts[i].offset = off;
		u->parts[i].length = u->size - off < u->part_size ?
		    u->size - off : u->part_size;
		off += u->parts[i].length;
	}
}

/* Takes over parts recorded by an earlier attempt, if they still fit;
 * each is kept once hashing shows it holds the same bytes (part_hashed). */
static void
resume(struct upload *u, const struct outbox_part *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		int k = v[i].number - 1;

		if (k < 0 || k >= u->nparts ||
		    (uint64_t)v[i].size != u->parts[k].length) {
			/* Planned differently: start over cleanly. */
			abandon(u, "the part plan changed");
			break;
		}
		snprintf(u->parts[k].etag, sizeof(u->parts[k].etag), "%s",
		    v[i].etag);
		snprintf(u->parts[k].done_digest,
		    sizeof(u->parts[k].done_digest), "%s", v[i].digest);
		u->parts[k].state = PART_DONE;
	}
}

struct upload *
upload_new(const struct upload_env *env, struct outbox_entry *en,
    const struct outbox_part *parts, size_t nparts)
{
	struct upload *u = xcalloc(1, sizeof(*u));
	struct err e = {0};
	int i;

	u->env = env;
	for (i = 0; i < HASH_AHEAD; i++)
		u->pjobs[i].part = -1;
	u->en = *en;
	memset(en, 0, sizeof(*en));
	u->phase = P_HASH;
	/* Known at once, so that giving up below aborts it in S3. */
	if (u->en.upload_id != NULL)
		u->upload_id = xstrdup(u->en.upload_id);
	u->fd = tree_open_file(env->rootfd, u->en.path, &u->st, &e);
	if (u->fd < 0) {
		decide(u, e.cls == ERR_GONE ? UPLOAD_GONE : e.cls ==
		    ERR_TRANSIENT ? UPLOAD_RETRY : UPLOAD_FAILED, &e, NULL);
		return u;
	}
	if (!engine_same_file(&u->st, &u->en)) {
		u->out.st = u->st;
		decide(u, UPLOAD_CHANGED, NULL, "after it was journaled");
		return u;
	}
	u->size = (uint64_t)u->st.st_size;
	u->multipart = u->size > env->cfg->multipart_threshold;
	if (u->multipart) {
		plan_parts(u);
		if (u->upload_id != NULL)
			resume(u, parts, nparts);
	} else {
		if (u->upload_id != NULL) {
			/* Planned as multipart before (threshold changed). */
			abandon(u, "sent as a single PUT instead");
		}
		if (u->size <= SMALL_FILE)
			u->mem = xmalloc(u->size ? u->size : 1);
	}
	/* A single PUT too large to keep in memory streams when the
	 * configuration allows (OUTBOXD_S3_STREAMING): it starts at once
	 * while a hasher thread computes its SHA-256 beside the send, for
	 * the trailer (stream_digest). Not in the simulator (no hasher):
	 * its fake S3 takes digests up front. */
	if (!u->multipart && u->mem == NULL && env->hasher != NULL &&
	    env->cfg->s3_streaming) {
		u->stream = 1;
		u->hasher = env->hasher;
		u->phase = P_PUT;
		return u;
	}
	/* A body kept in memory is read here anyway; the rest is hashed on
	 * the hasher's threads when there is one. */
	u->hasher = u->mem == NULL ? env->hasher : NULL;
	if (u->hasher == NULL) {
		u->sha_file = EVP_MD_CTX_new();
		u->sha_part = u->multipart ? EVP_MD_CTX_new() : NULL;
		if (u->sha_file == NULL || (u->multipart && u->sha_part == NULL))
			abort();
		EVP_DigestInit_ex(u->sha_file, sha256_evp(), NULL);
		if (u->multipart)
			EVP_DigestInit_ex(u->sha_part, sha256_evp(), NULL);
	}
	return u;
}

void
upload_free(struct upload *u)
{
	if (u == NULL)
		return;
	if (u->fd >= 0)
		close(u->fd);
	EVP_MD_CTX_free(u->sha_file);
	EVP_MD_CTX_free(u->sha_part);
	free(u->mem);
	free(u->parts);
	free(u->upload_id);
	outbox_entry_free(&u->en);
	free(u);
}

const struct outbox_entry *
upload_entry(const struct upload *u)
{
	return &u->en;
}

/* ---- hashing ------------------------------------------------------------- */

/*
 * Part k's SHA-256 is known. A part recorded by an earlier attempt is
 * kept only if it holds these bytes, as its recorded SHA-256 says; one
 * recorded with another digest (an MD5, before issue 15) or none cannot
 * be compared, so it is sent again.
 */
static void
part_hashed(struct upload *u, int k, const char *sha256)
{
	struct part *p = &u->parts[k];

	snprintf(p->sha256, sizeof(p->sha256), "%s", sha256);
	p->hashed = 1;
	if (p->state == PART_DONE && strcmp(p->done_digest, p->sha256) != 0)
		p->state = PART_TODO;
}

/* All bytes hashed: the file must not have grown or changed meanwhile. */
static void
file_hashed(struct upload *u, const char *sha256)
{
	unsigned char extra;
	struct stat now;
	ssize_t n;

	do
		n = pread(u->fd, &extra, 1, (off_t)u->size);
	while (n < 0 && errno == EINTR);
	if (n != 0 || fstat(u->fd, &now) < 0 || !engine_same_file(&now, &u->en)) {
		changed(u, "while it was read");
		return;
	}
	snprintf(u->sha256, sizeof(u->sha256), "%s", sha256);
	if (!u->multipart)
		u->phase = P_PUT;
	else
		u->phase = u->upload_id ? P_PARTS : P_CREATE;
}

static void
read_failed(struct upload *u, int errnum)
{
	struct err e;

	errno = errnum;
	err_sys(&e, ERR_TRANSIENT, "reading %s", u->en.path);
	decide(u, UPLOAD_RETRY, &e, NULL);
}

/* A job of the hasher ended with r; 0 when its digest is good. */
static int
job_ended(struct upload *u, const struct hash_job *j)
{
	switch (j->result) {
	case HASH_OK:
		return 0;
	case HASH_SHORT:
		changed(u, "while it was read");	/* it shrank */
		break;
	case HASH_IOERR:
		read_failed(u, j->errnum);
		break;
	case HASH_CANCELLED:
		break;	/* decided already */
	}
	return -1;
}

/* Collects the hasher's finished part jobs and queues the next parts. */
static void
pump_parts(struct upload *u)
{
	int i;

	for (i = 0; i < HASH_AHEAD && !u->decided; i++) {
		struct part_job *pj = &u->pjobs[i];

		if (pj->part >= 0) {
			if (!hash_job_done(&pj->job))
				continue;
			if (job_ended(u, &pj->job) < 0)
				return;
			part_hashed(u, pj->part, pj->job.sha256);
			pj->part = -1;
		}
		if (u->next_part_job < u->nparts) {
			struct part *p = &u->parts[u->next_part_job];

			pj->part = u->next_part_job++;
			pj->job.fd = u->fd;
			pj->job.offset = p->offset;
			pj->job.length = p->length;
			hasher_submit(u->hasher, &pj->job);
		}
	}
}

/*
 * A streamed PUT's digest, once the hasher has it, goes to the PUT in
 * flight (or the one about to start), whose trailer waits for it. It is
 * of the bytes the worker read; if the sender read others (the file
 * changed in between), S3 refuses the body (BadDigest) and reply_put
 * finds the file changed: that version is gone, the watcher journals the
 * new one. After a 2xx reply_put checks the same (a change after both
 * reads).
 */
static void
stream_digest(struct upload *u)
{
	if (u->stream_hashed || !u->file_submitted ||
	    !hash_job_done(&u->file_job))
		return;
	if (job_ended(u, &u->file_job) < 0) {
		/* Decided (or the hasher stopped): the PUT must not wait. */
		if (u->put_q != NULL && u->put_q->req.stream_digest == 0)
			u->put_q->req.stream_digest = -1;
		return;
	}
	snprintf(u->sha256, sizeof(u->sha256), "%s", u->file_job.sha256);
	u->stream_hashed = 1;
	if (u->put_q != NULL) {
		memcpy(u->put_q->req.sha256, u->sha256,
		    sizeof(u->put_q->req.sha256));
		u->put_q->req.stream_digest = 1;
	}
}

/* The threaded form of upload_work: nothing is read on this thread. */
static void
work_threaded(struct upload *u)
{
	if (!u->file_submitted) {
		u->file_job.fd = u->fd;
		u->file_job.offset = 0;
		u->file_job.length = u->size;
		/* A streamed PUT starts when a worker takes the job. */
		u->file_job.poke_on_start = u->stream;
		hasher_submit(u->hasher, &u->file_job);
		u->file_submitted = 1;
	}
	if (u->stream) {
		stream_digest(u);
		return;
	}
	if (u->multipart)
		pump_parts(u);
	if (!u->decided && u->phase == P_HASH && hash_job_done(&u->file_job) &&
	    job_ended(u, &u->file_job) == 0)
		file_hashed(u, u->file_job.sha256);
}

/* Inline: the current part's bytes are all in sha_part. */
static void
finish_part(struct upload *u, int k)
{
	unsigned char sha[32];
	char hex[65];

	EVP_DigestFinal_ex(u->sha_part, sha, NULL);
	EVP_DigestInit_ex(u->sha_part, sha256_evp(), NULL);
	hex_encode(sha, sizeof(sha), hex);
	part_hashed(u, k, hex);
}

/* Inline: the bytes of the part (or the whole file) at u->hashed. */
static size_t
next_read(const struct upload *u, size_t want)
{
	if (u->multipart) {
		/* hashed < size here, so k names an existing part. */
		int k = (int)(u->hashed / u->part_size);
		uint64_t part_left = u->parts[k].offset + u->parts[k].length -
		    u->hashed;

		if (want > part_left)
			want = (size_t)part_left;
	}
	return want;
}

size_t
upload_work(struct upload *u, size_t budget)
{
	unsigned char chunk[READ_CHUNK], sha[32];
	char hex[65];
	size_t used = 0;

	if (u->hasher != NULL) {
		if (!u->decided)
			work_threaded(u);
		return 0;	/* the workers poke the loop when done */
	}
	while (!u->decided && u->phase == P_HASH && used < budget) {
		uint64_t left = u->size - u->hashed;
		size_t want = left < sizeof(chunk) ? (size_t)left : sizeof(chunk);
		unsigned char *dst = u->mem ? u->mem + u->hashed : chunk;
		ssize_t n;

		if (want == 0) {
			EVP_DigestFinal_ex(u->sha_file, sha, NULL);
			hex_encode(sha, sizeof(sha), hex);
			file_hashed(u, hex);
			break;
		}
		n = pread(u->fd, dst, next_read(u, want), (off_t)u->hashed);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			read_failed(u, errno);
			break;
		}
		if (n == 0) {
			changed(u, "while it was read");	/* it shrank */
			break;
		}
		EVP_DigestUpdate(u->sha_file, dst, (size_t)n);
		if (u->multipart) {
			int k = (int)(u->hashed / u->part_size);

			EVP_DigestUpdate(u->sha_part, dst, (size_t)n);
			u->hashed += (uint64_t)n;
			if (u->hashed == u->parts[k].offset + u->parts[k].length)
				finish_part(u, k);
		} else {
			u->hashed += (uint64_t)n;
		}
		used += (size_t)n;
	}
	return used;
}

/* ---- requests ------------------------------------------------------------ */

static struct ureq *
new_req(struct upload *u, enum kind kind, const char *method)
{
	struct ureq *q = xcalloc(1, sizeof(*q));

	q->u = u;
	q->kind = kind;
	q->part = -1;
	q->req.method = method;
	q->req.key = xstrdup(u->en.s3_key);
	q->req.fd = -1;
	q->req.user = q;
	return q;
}

static void
free_req(struct ureq *q)
{
	s3_req_clear(&q->req);
	free(q->req.key);
	free(q->upload_id);
	buf_free(&q->req.body);
	buf_free(&q->xml);
	free(q);
}

static int
start(struct upload *u, struct ureq *q, int *slots)
{
	if (u->env->s3->start(u->env->s3->h, &q->req) < 0) {
		request_failed(u, &q->req);
		free_req(q);
		return -1;
	}
	u->inflight++;
	u->started = 1;
	u->ticket = q->ticket = engine_s3_ticket(u->env->sync);
	(*slots)--;
	return 0;
}

static void
send_put(struct upload *u, int *slots)
{
	struct ureq *q = new_req(u, K_PUT, "PUT");

	q->req.fd = u->mem ? -1 : u->fd;
	q->req.mem = u->mem;
	q->req.length = u->size;
	memcpy(q->req.sha256, u->sha256, sizeof(q->req.sha256));
	q->req.content_type = keymap_content_type(u->en.path);
	/* Active content is stored as a download (stored XSS). */
	q->req.content_disposition =
	    keymap_content_disposition(q->req.content_type);
	q->req.job_id = u->en.job_id;
	/* A streamed PUT's digest is known only once sent: S3 keeps it as
	 * the object's checksum, which verify reads (there is no
	 * x-amz-meta-sha256 to compare). */
	q->req.file_sha256 = u->stream ? NULL : u->sha256;
	q->req.stream = u->stream;
	/* Streamed: the digest may come later (stream_digest); the body
	 * keeps within a lead of the hasher's reading. */
	q->req.stream_digest = u->stream_hashed;
	q->req.stream_hashed = u->stream ? &u->file_job.progress : NULL;
	u->put_sent = 1;
	if (start(u, q, slots) == 0 && u->stream)
		u->put_q = q;
}

static void
send_create(struct upload *u, int *slots)
{
	struct ureq *q = new_req(u, K_CREATE, "POST");

	q->req.query[0] = (struct sigv4_pair){ "uploads", "" };
	q->req.n_query = 1;
	q->req.content_type = keymap_content_type(u->en.path);
	/* Active content is stored as a download (stored XSS). */
	q->req.content_disposition =
	    keymap_content_disposition(q->req.content_type);
	q->req.job_id = u->en.job_id;
	q->req.file_sha256 = u->sha256;
	start(u, q, slots);
}

static void
send_part(struct upload *u, int k, int *slots)
{
	struct ureq *q = new_req(u, K_PART, "PUT");
	struct part *p = &u->parts[k];

	q->part = k;
	snprintf(q->num, sizeof(q->num), "%d", k + 1);
	q->req.query[0] = (struct sigv4_pair){ "partNumber", q->num };
	q->upload_id = xstrdup(u->upload_id);
	q->req.query[1] = (struct sigv4_pair){ "uploadId", q->upload_id };
	q->req.n_query = 2;
	q->req.fd = u->fd;
	q->req.offset = p->offset;
	q->req.length = p->length;
	memcpy(q->req.sha256, p->sha256, sizeof(q->req.sha256));
	p->state = PART_SENDING;
	if (start(u, q, slots) < 0)
		p->state = PART_TODO;
}

static void
send_complete(struct upload *u, int *slots)
{
	struct ureq *q = new_req(u, K_COMPLETE, "POST");
	unsigned char sha[32];
	int i;

	buf_puts(&q->xml, "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws"
	    ".com/doc/2006-03-01/\">");
	for (i = 0; i < u->nparts; i++) {
		char checksum[45];

		/* Each part's checksum, as its UploadPart sent it: S3 refuses
		 * the list unless they match (the upload declared SHA256). */
		s3_checksum_b64(u->parts[i].sha256, checksum);
		buf_printf(&q->xml, "<Part><PartNumber>%d</PartNumber><ETag>%s"
		    "</ETag><ChecksumSHA256>%s</ChecksumSHA256></Part>", i + 1,
		    u->parts[i].etag, checksum);
	}
	buf_puts(&q->xml, "</CompleteMultipartUpload>");
	EVP_Digest(q->xml.data, q->xml.len, sha, NULL, sha256_evp(), NULL);
	hex_encode(sha, sizeof(sha), q->req.sha256);
	q->req.query[0] = (struct sigv4_pair){ "uploadId", u->upload_id };
	q->req.n_query = 1;
	q->req.mem = (const unsigned char *)q->xml.data;
	q->req.length = q->xml.len;
	q->req.content_type = "application/xml";
	start(u, q, slots);
}

static void
send_head(struct upload *u, int *slots)
{
	start(u, new_req(u, K_HEAD, "HEAD"), slots);
}

void
upload_send(struct upload *u, int *slots, int stopping)
{
	int i;

	if (stopping)
		u->stopping = 1;
	if (u->decided || u->stopping)
		return;
	switch (u->phase) {
	case P_PUT:
		/* A streamed PUT starts once a worker hashes its file: one
		 * queued behind other files' hashing would wait at its
		 * trailer longer than S3 and curl keep a silent upload. */
		if (!u->put_sent && *slots > 0 && (!u->stream ||
		    u->stream_hashed || hash_job_started(&u->file_job)))
			send_put(u, slots);
		break;
	case P_CREATE:
		if (u->inflight == 0 && *slots > 0)
			send_create(u, slots);
		break;
	case P_PARTS:
		for (i = 0; i < u->nparts && *slots > 0 && !u->decided; i++)
			if (u->parts[i].state == PART_TODO && u->parts[i].hashed)
				send_part(u, i, slots);
		for (i = 0; i < u->nparts; i++)
			if (u->parts[i].state != PART_DONE || !u->parts[i].hashed)
				break;
		if (i == u->nparts && u->inflight == 0) {
			u->phase = P_COMPLETE;
			if (*slots > 0)
				send_complete(u, slots);
		}
		break;
	case P_COMPLETE:
		if (u->inflight == 0 && *slots > 0)
			send_complete(u, slots);
		break;
	case P_HEAD:
		if (u->inflight == 0 && *slots > 0)
			send_head(u, slots);
		break;
	default:
		break;
	}
}

long long
upload_ticket(const struct upload *u)
{
	return u->ticket;
}

int
upload_started(const struct upload *u)
{
	return u->started;
}

/* ---- replies ------------------------------------------------------------- */

/* The text of the first element called name anywhere in an XML reply. */
static int
xml_find(const struct buf *b, const char *root, const char *name, char *out,
    size_t n)
{
	xmlDocPtr doc;
	xmlNodePtr r, c;
	int found = 0;

	out[0] = '\0';
	if (b->len == 0 || b->len > 1024 * 1024)
		return 0;
	doc = xmlReadMemory(b->data, (int)b->len, "reply.xml", NULL,
	    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	if (doc == NULL)
		return 0;
	r = xmlDocGetRootElement(doc);
	if (r != NULL && strcmp((const char *)r->name, root) == 0) {
		for (c = r->children; c != NULL; c = c->next) {
			if (c->type == XML_ELEMENT_NODE &&
			    strcmp((const char *)c->name, name) == 0) {
				xmlChar *t = xmlNodeGetContent(c);

				utf8_snprintf(out, n, "%s",
				    t ? (const char *)t : "");
				xmlFree(t);
				found = 1;
				break;
			}
		}
	}
	xmlFreeDoc(doc);
	return found;
}

/*
 * The bytes sent must still be the version journaled, and still the file
 * at its path: one replaced by a rename (link count 0) is obsolete even
 * though the bytes we hold are consistent.
 */
static int
still_same(struct upload *u)
{
	struct stat now;

	if (fstat(u->fd, &now) == 0 && engine_same_file(&now, &u->en) &&
	    now.st_nlink > 0)
		return 1;
	if (fstat(u->fd, &now) == 0 && now.st_nlink == 0) {
		struct stat cur;
		struct err e = {0};

		/* Look at what the path holds now. */
		if (tree_stat(u->env->rootfd, u->en.path, &cur, &e) == 0 &&
		    S_ISREG(cur.st_mode)) {
			u->out.st = cur;
			decide(u, UPLOAD_CHANGED, NULL, "while it was being sent");
		} else {
			err_set(&e, ERR_GONE, "the file was deleted while it was "
			    "being sent");
			decide(u, UPLOAD_GONE, &e, NULL);
		}
		return 0;
	}
	changed(u, "while it was being sent");
	return 0;
}

static void
done(struct upload *u, const char *etag)
{
	snprintf(u->out.etag, sizeof(u->out.etag), "%s", etag);
	decide(u, UPLOAD_DONE, NULL, NULL);
}

/* Starts a fresh multipart upload after the old one vanished. */
static void
restart(struct upload *u, const char *why)
{
	struct err e = {0};
	int i;

	engine_note(u->env->sync, R_UPLOAD_CLEAR, u->en.id, NULL, NULL, NULL, 0,
	    0);
	free(u->upload_id);
	u->upload_id = NULL;
	for (i = 0; i < u->nparts; i++)
		u->parts[i].state = PART_TODO;
	if (++u->restarts > MAX_RESTARTS) {
		err_set(&e, ERR_TRANSIENT, "%s, again: will retry later", why);
		decide(u, UPLOAD_RETRY, &e, NULL);
		return;
	}
	u->phase = P_CREATE;
}

/* The file is no longer the version journaled: it grew past the size
 * journaled, or its size, mtime or inode differ. */
static int
file_moved_on(struct upload *u)
{
	unsigned char extra;
	struct stat now;
	ssize_t n;

	do
		n = pread(u->fd, &extra, 1, (off_t)u->size);
	while (n < 0 && errno == EINTR);
	return n != 0 || fstat(u->fd, &now) < 0 ||
	    !engine_same_file(&now, &u->en);
}

static void
reply_put(struct upload *u, struct s3_req *r)
{
	/* A body refused (BadDigest for a streamed one whose file changed
	 * between the hasher's read and the sender's) from a file that has
	 * changed since it was journaled: that version is gone, the watcher
	 * journals the new one. Not a failed attempt, which would pause the
	 * whole leg for one file's change. */
	if (r->err.cls == ERR_TRANSIENT && u->mem == NULL && file_moved_on(u)) {
		changed(u, "while it was being sent");
		return;
	}
	if (r->err.cls != ERR_NONE) {
		request_failed(u, r);
		return;
	}
	/* A 2xx for a body signed with its SHA-256 means S3 holds exactly
	 * the bytes hashed (it refuses others: XAmzContentSHA256Mismatch),
	 * the version journaled: stored, even if the file has changed since
	 * (its next version is journaled and sent after this one). */
	if (u->stream) {
		/* Hashed while sent: S3 holds the bytes of the trailer's
		 * SHA-256 (it refuses others: BadDigest), but they are the
		 * version journaled only if the file did not change while
		 * it was read (as file_hashed checks after hashing). */
		if (file_moved_on(u)) {
			changed(u, "while it was being sent");
			return;
		}
		/* u->sha256 (stream_digest) is the trailer S3 checked. */
	}
	done(u, r->etag);
}

static void
reply_create(struct upload *u, struct s3_req *r)
{
	char id[1024];
	struct err e = {0};

	if (r->err.cls != ERR_NONE) {
		request_failed(u, r);
		return;
	}
	if (!xml_find(&r->body, "InitiateMultipartUploadResult", "UploadId", id,
	    sizeof(id)) || id[0] == '\0') {
		err_set(&e, ERR_TRANSIENT, "CreateMultipartUpload for %s: no "
		    "UploadId in the reply", u->en.s3_key);
		decide(u, UPLOAD_RETRY, &e, NULL);
		return;
	}
	u->upload_id = xstrdup(id);
	engine_note(u->env->sync, R_UPLOAD_ID, u->en.id, id, NULL, NULL, 0, 0);
	u->phase = P_PARTS;
}

/* Part k is in S3 with etag: recorded with the SHA-256 it was signed
 * with, which a resumed upload compares before keeping the part. */
static void
note_part(struct upload *u, int k, const char *etag)
{
	engine_note(u->env->sync, R_PART, u->en.id, etag, u->parts[k].sha256,
	    NULL, k + 1,
	    (int64_t)u->parts[k].length);
}

static void
reply_part(struct upload *u, struct ureq *q)
{
	struct s3_req *r = &q->req;
	struct part *p = &u->parts[q->part];

	/* A reply for an upload given up since (restart) is no part of
	 * the current one: its ETag must not be listed in Complete. */
	if (u->upload_id == NULL || strcmp(q->upload_id, u->upload_id) != 0)
		return;
	if (r->err.cls != ERR_NONE) {
		p->state = PART_TODO;
		if (strcmp(r->code, "NoSuchUpload") == 0) {
			restart(u, "the multipart upload vanished");
			return;
		}
		request_failed(u, r);
		return;
	}
	snprintf(p->etag, sizeof(p->etag), "%s", r->etag);
	p->state = PART_DONE;
	note_part(u, q->part, r->etag);
	still_same(u);	/* stop early when the file was replaced */
}

static void
reply_complete(struct upload *u, struct s3_req *r)
{
	char code[64], msg[512], etag[128];
	struct err e = {0};

	if (r->err.cls != ERR_NONE) {
		if (strcmp(r->code, "NoSuchUpload") == 0) {
			/* Maybe our last Complete worked and its reply was
			 * lost: look at the object before starting over. */
			u->phase = P_HEAD;
			return;
		}
		request_failed(u, r);
		return;
	}
	/* Complete can fail after a 200: the error is in the body. */
	if (s3_parse_error(r->body.data ? r->body.data : "", r->body.len, code,
	    sizeof(code), msg, sizeof(msg)) == 0) {
		err_set(&e, s3_classify(500, code), "CompleteMultipartUpload %s: "
		    "%s: %s", u->en.s3_key, code, msg);
		decide(u, e.cls == ERR_PERMANENT ? UPLOAD_FAILED : UPLOAD_RETRY,
		    &e, NULL);
		return;
	}
	if (!xml_find(&r->body, "CompleteMultipartUploadResult", "ETag", etag,
	    sizeof(etag)))
		snprintf(etag, sizeof(etag), "%s", r->etag);
	/* Every part was refused unless it matched its signed SHA-256,
	 * and the signed body of Complete named their ETags: the object
	 * holds the file's bytes (an ETag need not be an MD5: SSE-KMS). */
	done(u, etag);
}

static void
reply_head(struct upload *u, struct s3_req *r)
{
	if (r->err.cls == ERR_NONE && r->content_length == (int64_t)u->size &&
	    strcmp(r->meta_sha256, u->sha256) == 0) {
		done(u, r->etag);	/* our Complete worked after all */
		return;
	}
	if (r->err.cls == ERR_NONE || r->status == 404) {
		restart(u, "the multipart upload vanished before it completed");
		return;
	}
	request_failed(u, r);
}

struct upload *
upload_of(struct s3_req *r)
{
	return ((struct ureq *)r->user)->u;
}

void
upload_reply(struct s3_req *r)
{
	struct ureq *q = r->user;
	struct upload *u = q->u;

	if (q == u->put_q)
		u->put_q = NULL;
	u->inflight--;
	s3_req_clear(r);
	/* A part stored shows the store works: a leg that failed meanwhile
	 * (a 503 on another file) need not wait for the whole upload to end
	 * before it claims again. Not an upload created: a store that takes
	 * every CreateMultipartUpload and then loses the upload (NoSuchUpload
	 * on each part) would end the pause at every attempt, and --once's
	 * bound on a failing leg would never be reached (review). */
	if (q->kind == K_PART && r->err.cls == ERR_NONE && r->status >= 200 &&
	    r->status < 300)
		engine_s3_progress(u->env->sync, q->ticket);
	if (!u->decided) {
		switch (q->kind) {
		case K_PUT: reply_put(u, r); break;
		case K_CREATE: reply_create(u, r); break;
		case K_PART: reply_part(u, q); break;
		case K_COMPLETE: reply_complete(u, r); break;
		case K_HEAD: reply_head(u, r); break;
		}
	} else if (q->kind == K_PART && r->err.cls == ERR_NONE &&
	    u->upload_id != NULL && strcmp(q->upload_id, u->upload_id) == 0) {
		/* Already failing, but a stored part is worth keeping. */
		note_part(u, q->part, r->etag);
	}
	if (u->stopping && u->inflight == 0 && !u->decided)
		decide(u, UPLOAD_STOPPED, NULL, NULL);
	settle(u);
	free_req(q);
}

void
upload_stop(struct upload *u, const char *why)
{
	u->stopping = 1;
	if (u->stop_why == NULL)
		u->stop_why = why;
	/* upload_work stops being called: a streamed PUT near its end
	 * still gets its digest and finishes. */
	if (u->stream && !u->decided)
		stream_digest(u);
	if (u->inflight == 0 && !u->decided)
		decide(u, UPLOAD_STOPPED, NULL, NULL);
}

const char *
upload_stop_why(const struct upload *u)
{
	return u->stop_why;
}

int
upload_inflight(const struct upload *u)
{
	return u->inflight;
}

int
upload_decided(const struct upload *u)
{
	return u->decided;
}

int
upload_finished(const struct upload *u, struct upload_outcome *out)
{
	if (!u->decided || u->inflight > 0 || hashing_pending(u))
		return 0;
	*out = u->out;
	return 1;
}
