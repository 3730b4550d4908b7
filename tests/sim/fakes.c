/*
 * fakes.c - the simulated S3 and PostgreSQL the engine talks to in t-sim.
 *
 * The S3 fake takes the same struct s3_req the real client does, reads
 * the body from the file or memory when the request completes (a file
 * changed meanwhile gives a short read or a BadDigest, as with S3), and
 * answers PUT, the multipart calls, HEAD and abort with S3's statuses,
 * headers and XML. Requests complete after a seeded latency in simulated
 * time; faults (5xx, SlowDown, a reset, a stall until the client's
 * timeout, the reply lost after the object was stored, 403) are drawn at
 * start. Under "kms" every ETag is random, as under SSE-KMS.
 *
 * The database fake follows outboxd_record_document (schema/pg/001) step
 * by step: applied events make a replay a "duplicate", an unchanged
 * SHA-256 is "unchanged" (ETag coalesced), else the row is upserted with
 * one activity. A batch commits whole or not at all; "lost" commits and
 * then fails, like a reply lost after COMMIT.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "agent/s3/s3.h"
#include "base/keymap.h"
#include "tests/sim/sim.h"

/* ---- shared ------------------------------------------------------------ */

static void
taken_push(struct taken **h, const char *sha, int node)
{
	struct taken *t = xcalloc(1, sizeof(*t));

	snprintf(t->sha, sizeof(t->sha), "%s", sha);
	t->node = node;
	t->next = *h;
	*h = t;
}

static void
taken_free(struct taken *t)
{
	while (t != NULL) {
		struct taken *n = t->next;

		free(t);
		t = n;
	}
}

static void
digest_hex(const EVP_MD *md, const void *p, size_t n, char *hex)
{
	unsigned char d[32];
	unsigned int len = 0;

	EVP_Digest(p, n, d, &len, md, NULL);
	hex_encode(d, len, hex);
}

static enum fault
draw_fault(struct world *w, enum store_mode mode, enum fault *forced)
{
	enum fault f = *forced;

	*forced = F_NONE;
	w->requests++;
	if (f == F_NONE && mode == MODE_FLAKY && world_rand(w, 3) == 0)
		f = (enum fault)(1 + world_rand(w, F_NFAULTS - 2));
	else if (f == F_NONE && w->faulty && world_rand(w, 40) == 0)
		f = (enum fault)(1 + world_rand(w, F_NFAULTS - 1));
	if (f != F_NONE)
		w->faults++;
	return f;
}

/* ---- S3 ------------------------------------------------------------------ */

struct fpart {
	unsigned char *bytes;
	size_t len;
	char etag[80];
	int sends;		/* times this part number was uploaded */
};

struct fupload {
	char *key;
	char meta_sha[65];	/* x-amz-meta-sha256 given at the start */
	struct fpart parts[64];
};

struct freq {
	struct s3_req *r;
	int64_t due;		/* simulated mono ms */
	enum fault fault;
	int cancelled;
	int node;		/* the instance that started it */
	int authorized;		/* allowed at its start (fake_s3_slow) */
	int after_failure;	/* an object's PUT begun after the first
				   503 of fake_s3_fail_new */
	struct freq *next;
};

struct fake_s3 {
	struct world *w;
	enum store_mode mode;
	int refusal;			/* under MODE_REFUSED: which */
	int lose_complete;		/* trap: lose the next Complete's reply */
	int refuse_at_head;		/* trap: refusal kind + 1 at a HEAD */
	int trapped;			/* the HEAD trap fired */
	char *slow_key;			/* fake_s3_slow */
	int peak_refused;		/* fake_s3_peak_refused */
	int64_t pace_ms;		/* fake_s3_pace */
	int fail_put;			/* fake_s3_fail_put: PUTs to go */
	char *fail_key;			/* fake_s3_fail_key */
	int fail_new;			/* fake_s3_fail_new: on */
	int lose_uploads;		/* fake_s3_lose_uploads: on */
	int failure_seen;		/* one of its 503s was answered */
	int nafter, peak_after;		/* PUTs begun after it in flight */
	int64_t slow_ms;
	enum fault forced;
	struct strmap *denied;		/* keys a policy denies: 403 always */
	struct freq *flight;		/* requests in flight */
	struct freq *done, **done_tail;	/* finished, for done() */
	int nflight;
	struct strmap *objects;		/* key -> struct fobject */
	struct strmap *uploads;		/* upload id -> struct fupload */
	long long next_upload;
	long long resent;		/* parts sent again to one upload */
	struct strmap *sends;		/* "<upload id>#<n>" -> sends, as a
					   count in the pointer */
	int put_node;			/* the instance of the request being
					   executed */
};

struct fake_s3 *
fake_s3_new(struct world *w)
{
	struct fake_s3 *f = xcalloc(1, sizeof(*f));

	f->w = w;
	f->objects = strmap_new();
	f->uploads = strmap_new();
	f->sends = strmap_new();
	f->denied = strmap_new();
	f->done_tail = &f->done;
	return f;
}

static void
upload_free(struct fupload *u)
{
	int i;

	for (i = 0; i < 64; i++)
		free(u->parts[i].bytes);
	free(u->key);
	free(u);
}

void
fake_s3_free(struct fake_s3 *f)
{
	size_t i = 0;
	const char *k;
	void *v;

	while (strmap_next(f->objects, &i, &k, &v)) {
		taken_free(((struct fobject *)v)->history);
		free(v);
	}
	i = 0;
	while (strmap_next(f->uploads, &i, &k, &v))
		upload_free(v);
	strmap_free(f->objects);
	strmap_free(f->uploads);
	strmap_free(f->sends);
	strmap_free(f->denied);
	free(f->slow_key);
	free(f->fail_key);
	while (f->flight != NULL) {
		struct freq *q = f->flight;

		f->flight = q->next;
		free(q);
	}
	while (f->done != NULL) {
		struct freq *q = f->done;

		f->done = q->next;
		free(q);
	}
	free(f);
}

/* S3's refusals of the credentials or the bucket: status and code of a
 * request with a body, and the status of a HEAD, which has none (S3
 * sends no body to a HEAD: the SDKs print "400 Bad Request" for an
 * expired token there). */
static const struct refusal {
	long status, head_status;
	const char *code, *msg;
} refusals[FAKE_S3_REFUSALS] = {
	{ 403, 403, "InvalidAccessKeyId", "The AWS Access Key Id you provided "
	    "does not exist in our records." },
	{ 403, 403, "SignatureDoesNotMatch", "The request signature we "
	    "calculated does not match the signature you provided." },
	{ 400, 400, "ExpiredToken", "The provided token has expired." },
	{ 403, 403, "AccessDenied", "Access Denied" },	/* the bucket's policy */
	{ 404, 404, "NoSuchBucket", "The specified bucket does not exist" },
	{ 301, 301, "PermanentRedirect", "The bucket you are attempting to "
	    "access must be addressed using the specified endpoint." },
};

const char *
fake_s3_refusal_name(int kind)
{
	return refusals[kind].code;
}

void
fake_s3_refuse(struct fake_s3 *f, int kind)
{
	f->refusal = kind >= 0 ? kind : (int)world_rand(f->w, FAKE_S3_REFUSALS);
	if (f->mode != MODE_REFUSED)
		f->w->refusals++;
	f->mode = MODE_REFUSED;
}

void
fake_s3_lose_next_complete(struct fake_s3 *f)
{
	f->lose_complete = 1;
}

void
fake_s3_refuse_at_head(struct fake_s3 *f, int kind)
{
	f->refuse_at_head = kind + 1;
}

int
fake_s3_trapped(const struct fake_s3 *f)
{
	return f->trapped;
}

void
fake_s3_mode(struct fake_s3 *f, enum store_mode m)
{
	if (m == MODE_REFUSED) {
		fake_s3_refuse(f, -1);
		return;
	}
	f->mode = m;
}

void
fake_s3_force(struct fake_s3 *f, enum fault fl)
{
	f->forced = fl;
}

void
fake_s3_deny(struct fake_s3 *f, const char *key, int on)
{
	if (on)
		strmap_put(f->denied, key, f);
	else
		strmap_del(f->denied, key);
}

int
fake_s3_lose(struct fake_s3 *f, const char *key)
{
	struct fobject *o = strmap_del(f->objects, key);

	if (o == NULL)
		return 0;
	taken_free(o->history);
	free(o);
	return 1;
}

struct fobject *
fake_s3_object(struct fake_s3 *f, const char *key)
{
	return strmap_get(f->objects, key);
}

long long
fake_s3_parts_resent(const struct fake_s3 *f)
{
	return f->resent;
}

long long
fake_s3_part_sends(const struct fake_s3 *f, const char *upload_id, int n)
{
	char k[64];

	snprintf(k, sizeof(k), "%s#%d", upload_id, n);
	return (long long)((char *)strmap_get(f->sends, k) - (char *)NULL);
}

const struct strmap *
fake_s3_objects(const struct fake_s3 *f)
{
	return f->objects;
}

static const char *
query(const struct s3_req *r, const char *name)
{
	size_t i;

	for (i = 0; i < r->n_query; i++)
		if (strcmp(r->query[i].name, name) == 0)
			return r->query[i].value;
	return NULL;
}

/* An S3 error reply: status, XML body, and the client's classification. */
static void
reply_error(struct s3_req *r, long status, const char *code, const char *msg)
{
	r->status = status;
	if (code != NULL) {
		buf_printf(&r->body, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
		    "<Error><Code>%s</Code><Message>%s</Message></Error>", code,
		    msg);
		snprintf(r->code, sizeof(r->code), "%s", code);
	}
	err_set(&r->err, s3_classify_reply(r->method, status, code ? code : ""),
	    "%s %s: HTTP %ld %s: %s", r->method, r->key, status, code ? code :
	    "", msg);
}

static void
random_etag(struct world *w, char *out, size_t n)
{
	snprintf(out, n, "\"%016llx%016llx\"",
	    (unsigned long long)world_rand(w, UINT64_MAX),
	    (unsigned long long)world_rand(w, UINT64_MAX));
}

/* The body as it is now: 0, or -1 after replying (short read, BadDigest). */
static int
read_body(struct fake_s3 *f, struct s3_req *r, unsigned char **out)
{
	unsigned char *b = xmalloc(r->length ? r->length : 1);
	unsigned char md5[16];
	char b64[25];

	if (r->fd >= 0) {
		ssize_t n = pread(r->fd, b, r->length, (off_t)r->offset);

		if (n < 0 || (uint64_t)n != r->length) {
			free(b);
			err_set(&r->err, ERR_CHANGED, "the file got shorter "
			    "while it was being sent");
			return -1;
		}
	} else if (r->length > 0) {
		memcpy(b, r->mem, r->length);
	}
	if (r->md5[0] != '\0') {
		EVP_Digest(b, r->length, md5, NULL, EVP_md5(), NULL);
		EVP_EncodeBlock((unsigned char *)b64, md5, sizeof(md5));
		if (strcmp(b64, r->md5) != 0) {
			free(b);
			reply_error(r, 400, "BadDigest", "The Content-MD5 you "
			    "specified did not match what we received.");
			return -1;
		}
	}
	(void)f;
	*out = b;
	return 0;
}

static void
store_object(struct fake_s3 *f, const char *key, const unsigned char *b,
    size_t len, const char *etag, const char *meta_sha)
{
	struct fobject *o = strmap_get(f->objects, key);

	if (o == NULL) {
		o = xcalloc(1, sizeof(*o));
		strmap_put(f->objects, key, o);
	}
	digest_hex(EVP_sha256(), b, len, o->sha);
	snprintf(o->etag, sizeof(o->etag), "%s", etag);
	snprintf(o->meta_sha, sizeof(o->meta_sha), "%s", meta_sha ? meta_sha :
	    "");
	o->size = (int64_t)len;
	taken_push(&o->history, o->sha, f->put_node);
}

static void
do_put(struct fake_s3 *f, struct s3_req *r, const unsigned char *b)
{
	char md5[33];

	if (f->w->kms) {
		random_etag(f->w, r->etag, sizeof(r->etag));
	} else {
		digest_hex(EVP_md5(), b, r->length, md5);
		snprintf(r->etag, sizeof(r->etag), "\"%s\"", md5);
	}
	r->kms = f->w->kms;
	store_object(f, r->key, b, r->length, r->etag, r->file_sha256);
	r->status = 200;
}

static void
do_part(struct fake_s3 *f, struct s3_req *r, unsigned char *b)
{
	struct fupload *u = strmap_get(f->uploads, query(r, "uploadId"));
	int n = atoi(query(r, "partNumber"));
	struct fpart *p;
	char md5[33];

	if (u == NULL || n < 1 || n > 64) {
		free(b);
		reply_error(r, 404, "NoSuchUpload", "The specified upload does "
		    "not exist.");
		return;
	}
	p = &u->parts[n - 1];
	if (p->sends++ > 0)
		f->resent++;
	{
		char k[64];

		snprintf(k, sizeof(k), "%s#%d", query(r, "uploadId"), n);
		strmap_put(f->sends, k, (char *)strmap_get(f->sends, k) + 1);
	}
	free(p->bytes);
	p->bytes = b;
	p->len = r->length;
	if (f->w->kms) {
		random_etag(f->w, p->etag, sizeof(p->etag));
	} else {
		digest_hex(EVP_md5(), b, r->length, md5);
		snprintf(p->etag, sizeof(p->etag), "\"%s\"", md5);
	}
	snprintf(r->etag, sizeof(r->etag), "%s", p->etag);
	r->kms = f->w->kms;
	r->status = 200;
}

static void
do_complete(struct fake_s3 *f, struct s3_req *r, const unsigned char *xml)
{
	const char *id = query(r, "uploadId");
	struct fupload *u = strmap_get(f->uploads, id);
	struct buf all = {0};
	EVP_MD_CTX *c;
	unsigned char d[16], pm[16];
	const char *p = (const char *)xml, *end = p + r->length;
	char etag[80], hex[33], want[80];
	int n = 0, num;

	if (u == NULL) {
		reply_error(r, 404, "NoSuchUpload", "The specified upload does "
		    "not exist.");
		return;
	}
	c = EVP_MD_CTX_new();
	EVP_DigestInit_ex(c, EVP_md5(), NULL);
	/* Our own client's body: <Part><PartNumber>n</PartNumber><ETag>e</ETag></Part> */
	while (p < end && (p = memmem(p, (size_t)(end - p), "<PartNumber>",
	    12)) != NULL) {
		if (sscanf(p, "<PartNumber>%d</PartNumber><ETag>%79[^<]", &num,
		    want) != 2 || num != n + 1 || num > 64 ||
		    u->parts[num - 1].bytes == NULL ||
		    strcmp(u->parts[num - 1].etag, want) != 0) {
			EVP_MD_CTX_free(c);
			buf_free(&all);
			reply_error(r, 400, "InvalidPart", "One or more of the "
			    "specified parts could not be found.");
			return;
		}
		buf_append(&all, (const char *)u->parts[num - 1].bytes,
		    u->parts[num - 1].len);
		EVP_Digest(u->parts[num - 1].bytes, u->parts[num - 1].len, pm,
		    NULL, EVP_md5(), NULL);
		EVP_DigestUpdate(c, pm, 16);
		n++;
		p += 12;
	}
	EVP_DigestFinal_ex(c, d, NULL);
	EVP_MD_CTX_free(c);
	hex_encode(d, 16, hex);
	if (f->w->kms)
		random_etag(f->w, etag, sizeof(etag));
	else
		snprintf(etag, sizeof(etag), "\"%s-%d\"", hex, n);
	store_object(f, u->key, (const unsigned char *)(all.data ? all.data :
	    ""), all.len, etag, u->meta_sha);
	buf_free(&all);
	strmap_del(f->uploads, id);
	upload_free(u);
	buf_printf(&r->body, "<CompleteMultipartUploadResult><ETag>%s</ETag>"
	    "</CompleteMultipartUploadResult>", etag);
	r->kms = f->w->kms;
	r->status = 200;
}

/* Carries out r on the bucket (its fault already drawn). */
static void
execute(struct fake_s3 *f, struct freq *q)
{
	struct s3_req *r = q->r;
	unsigned char *b = NULL;

	f->put_node = q->node;
	if (q->cancelled) {
		err_set(&r->err, ERR_TRANSIENT, "%s %s: cancelled: outboxd is "
		    "stopping", r->method, r->key);
		return;
	}
	if (f->mode == MODE_DOWN) {
		err_set(&r->err, ERR_TRANSIENT, "%s %s: Failed to connect: "
		    "Connection refused", r->method, r->key);
		return;
	}
	if (f->refuse_at_head && strcmp(r->method, "HEAD") == 0) {
		fake_s3_refuse(f, f->refuse_at_head - 1);
		f->refuse_at_head = 0;
		f->trapped = 1;
	}
	if (f->mode == MODE_REFUSED && !q->authorized) {
		const struct refusal *x = &refusals[f->refusal];
		char msg[256];

		f->w->refused++;
		snprintf(msg, sizeof(msg), "%s %s", x->msg, SIM_REFUSED);
		if (strcmp(r->method, "HEAD") == 0)
			reply_error(r, x->head_status, NULL, SIM_REFUSED);
		else
			reply_error(r, x->status, x->code, msg);
		return;
	}
	if (strmap_get(f->denied, r->key) != NULL) {
		reply_error(r, 403, "AccessDenied", "Access Denied");
		return;
	}
	if (f->lose_uploads && strcmp(r->method, "PUT") == 0 &&
	    query(r, "uploadId") != NULL) {
		reply_error(r, 404, "NoSuchUpload", "The specified upload does "
		    "not exist.");
		return;
	}
	switch (q->fault) {
	case F_500:
		reply_error(r, 500, "InternalError", "We encountered an "
		    "internal error. Please try again.");
		return;
	case F_503:
		reply_error(r, 503, "SlowDown", "Please reduce your request "
		    "rate.");
		return;
	case F_RESET:
		err_set(&r->err, ERR_TRANSIENT, "%s %s: Connection reset by "
		    "peer", r->method, r->key);
		return;
	case F_STALL:
		err_set(&r->err, ERR_TRANSIENT, "%s %s: Operation too slow",
		    r->method, r->key);
		return;
	case F_403:
		reply_error(r, 403, "AccessDenied", "Access Denied");
		return;
	default:
		break;
	}
	if (strcmp(r->method, "PUT") == 0 || strcmp(r->method, "POST") == 0)
		if (read_body(f, r, &b) < 0)
			return;
	if (strcmp(r->method, "PUT") == 0 && query(r, "partNumber") == NULL) {
		do_put(f, r, b);
		free(b);
	} else if (strcmp(r->method, "PUT") == 0) {
		do_part(f, r, b);	/* takes b */
	} else if (strcmp(r->method, "POST") == 0 && query(r, "uploads")) {
		struct fupload *u = xcalloc(1, sizeof(*u));
		char id[32];

		snprintf(id, sizeof(id), "up%lld", ++f->next_upload);
		u->key = xstrdup(r->key);
		snprintf(u->meta_sha, sizeof(u->meta_sha), "%s",
		    r->file_sha256 ? r->file_sha256 : "");
		strmap_put(f->uploads, id, u);
		buf_printf(&r->body, "<InitiateMultipartUploadResult><Bucket>sim"
		    "</Bucket><Key>k</Key><UploadId>%s</UploadId>"
		    "</InitiateMultipartUploadResult>", id);
		r->status = 200;
		free(b);
	} else if (strcmp(r->method, "POST") == 0) {
		do_complete(f, r, b);
		free(b);
	} else if (strcmp(r->method, "HEAD") == 0) {
		struct fobject *o = strmap_get(f->objects, r->key);

		if (o == NULL) {
			reply_error(r, 404, NULL, "");
			return;
		}
		r->status = 200;
		r->content_length = o->size;
		snprintf(r->etag, sizeof(r->etag), "%s", o->etag);
		snprintf(r->meta_sha256, sizeof(r->meta_sha256), "%s",
		    o->meta_sha);
	} else if (strcmp(r->method, "DELETE") == 0) {
		struct fupload *u = strmap_del(f->uploads, query(r, "uploadId"));

		if (u == NULL) {
			reply_error(r, 404, "NoSuchUpload", "The specified "
			    "upload does not exist.");
			return;
		}
		upload_free(u);
		r->status = 204;
	}
	if (q->fault == F_LOST) {
		/* Done, but the reply never came. */
		buf_free(&r->body);
		r->status = 0;
		r->code[0] = '\0';
		err_set(&r->err, ERR_TRANSIENT, "%s %s: Connection reset by "
		    "peer after the request was sent", r->method, r->key);
	}
}

static int
s3_start_fake(void *h, struct s3_req *r)
{
	struct fake_s3 *f = h;
	struct freq *q = xcalloc(1, sizeof(*q));

	r->status = 0;
	r->etag[0] = '\0';
	r->code[0] = '\0';
	r->kms = 0;
	r->meta_sha256[0] = '\0';
	r->content_length = -1;
	r->err = (struct err){0};
	buf_free(&r->body);
	q->r = r;
	q->node = f->w->node;
	q->fault = f->mode == MODE_DOWN || f->mode == MODE_REFUSED ? F_NONE :
	    draw_fault(f->w, f->mode, &f->forced);
	if (f->lose_complete && strcmp(r->method, "POST") == 0 &&
	    query(r, "uploadId") != NULL) {
		q->fault = F_LOST;
		f->lose_complete = 0;
	}
	q->due = f->w->mono + 1 + (int64_t)world_rand(f->w, 120);
	if (f->slow_key != NULL && f->mode == MODE_UP && q->fault == F_NONE &&
	    strcmp(r->method, "PUT") == 0 && strcmp(r->key, f->slow_key) == 0) {
		q->due = f->w->mono + f->slow_ms;
		q->authorized = 1;
		free(f->slow_key);
		f->slow_key = NULL;
	}
	if (f->pace_ms > 0 && f->mode == MODE_UP && !q->authorized)
		q->due = f->w->mono + f->pace_ms;
	if (f->fail_put > 0 && f->mode == MODE_UP &&
	    strcmp(r->method, "PUT") == 0 && --f->fail_put == 0)
		q->fault = F_503;
	if (f->fail_key != NULL && f->mode == MODE_UP &&
	    strcmp(r->method, "PUT") == 0 && strcmp(r->key, f->fail_key) == 0) {
		q->fault = F_503;
		free(f->fail_key);
		f->fail_key = NULL;
	}
	if (f->fail_new && f->mode == MODE_UP && !q->authorized) {
		q->fault = F_503;	/* S3 sheds load at once */
		q->due = f->w->mono + 10;
	}
	if (f->failure_seen && strcmp(r->method, "PUT") == 0 &&
	    r->n_query == 0 && q->node == f->w->node) {
		q->after_failure = 1;
		if (++f->nafter > f->peak_after)
			f->peak_after = f->nafter;
	}
	if (q->fault == F_STALL)
		q->due = f->w->mono + 30000;	/* the client's timeout */
	q->next = f->flight;
	f->flight = q;
	f->nflight++;
	if (f->mode == MODE_REFUSED && f->nflight > f->peak_refused)
		f->peak_refused = f->nflight;
	return 0;
}

void
fake_s3_slow(struct fake_s3 *f, const char *key, int64_t ms)
{
	free(f->slow_key);
	f->slow_key = xstrdup(key);
	f->slow_ms = ms;
}

void
fake_s3_pace(struct fake_s3 *f, int64_t ms)
{
	f->pace_ms = ms;
}

void
fake_s3_lose_uploads(struct fake_s3 *f, int on)
{
	f->lose_uploads = on;
}

int
fake_s3_slow_armed(const struct fake_s3 *f)
{
	return f->slow_key != NULL;
}

void
fake_s3_fail_new(struct fake_s3 *f, int on)
{
	f->fail_new = on;
	if (on) {
		f->failure_seen = 0;
		f->peak_after = 0;
	}
}

int
fake_s3_peak_after_failure(const struct fake_s3 *f)
{
	return f->failure_seen ? f->peak_after : -1;
}

int
fake_s3_fail_put(struct fake_s3 *f, int n)
{
	int left = f->fail_put;

	f->fail_put = n;
	return left;
}

int
fake_s3_fail_key(struct fake_s3 *f, const char *key)
{
	int armed = f->fail_key != NULL;

	free(f->fail_key);
	f->fail_key = key != NULL ? xstrdup(key) : NULL;
	return armed;
}

int
fake_s3_peak_refused(struct fake_s3 *f, int reset)
{
	int n = f->peak_refused;

	if (reset)
		f->peak_refused = 0;
	return n;
}

/* Two instances share one fake S3 in two-engine schedules, as two
 * daemons share one bucket: the server runs every request, but each
 * instance's client sees, counts, cancels and loses only its own. */
static int
s3_running_fake(const void *h)
{
	const struct fake_s3 *f = h;
	const struct freq *q;
	int n = 0;

	for (q = f->flight; q != NULL; q = q->next)
		if (q->node == f->w->node)
			n++;
	return n;
}

/* Moves the requests due by now to the done queue, in start order. */
static void
complete_due(struct fake_s3 *f)
{
	struct freq **pp = &f->flight, *ready = NULL, *q;

	while ((q = *pp) != NULL) {
		if (q->due <= f->w->mono || q->cancelled) {
			*pp = q->next;
			q->next = ready;
			ready = q;	/* reversed twice: start order */
			f->nflight--;
			if (q->after_failure) {
				q->after_failure = 0;
				f->nafter--;
			}
		} else {
			pp = &q->next;
		}
	}
	while ((q = ready) != NULL) {
		ready = q->next;
		execute(f, q);
		q->next = NULL;
		*f->done_tail = q;
		f->done_tail = &q->next;
	}
}

static int
s3_wait_fake(void *h, int timeout_ms, int wake_fd)
{
	struct fake_s3 *f = h;
	int64_t first = -1, dt;
	struct freq *q;

	(void)wake_fd;
	if (f->w->on_wait != NULL)
		f->w->on_wait(f->w);
	for (q = f->flight; q != NULL; q = q->next)
		if (first < 0 || q->due < first)
			first = q->due;
	dt = first < 0 ? timeout_ms : first - f->w->mono;
	if (dt > timeout_ms)
		dt = timeout_ms;
	if (dt > 0) {
		f->w->mono += dt;
		f->w->wall += dt;
	}
	complete_due(f);
	return 0;
}

static struct s3_req *
s3_done_fake(void *h)
{
	struct fake_s3 *f = h;
	struct freq **pp = &f->done, *q;
	struct s3_req *r;

	while ((q = *pp) != NULL && q->node != f->w->node)
		pp = &q->next;
	if (q == NULL)
		return NULL;
	*pp = q->next;
	if (*pp == NULL)
		f->done_tail = pp;
	r = q->r;
	if (f->fail_new && r->status == 503)
		f->failure_seen = 1;
	free(q);
	return r;
}

static void
s3_cancel_fake(void *h)
{
	struct fake_s3 *f = h;
	struct freq *q;

	for (q = f->flight; q != NULL; q = q->next)
		if (q->node == f->w->node)
			q->cancelled = 1;
	complete_due(f);
}

void
fake_s3_crash(struct fake_s3 *f)
{
	struct freq *q;

	for (q = f->flight; q != NULL; q = q->next) {
		if (q->node != f->w->node)
			continue;
		if (world_rand(f->w, 2) == 0 && q->fault != F_STALL) {
			q->cancelled = 0;
			execute(f, q);	/* the server finished it anyway */
		}
		q->cancelled = 1;
	}
}

static void
s3_free_fake(void *h)
{
	(void)h;	/* the world owns the bucket */
}

void
fake_s3_io(struct fake_s3 *f, struct engine_s3 *io)
{
	*io = (struct engine_s3){ f, s3_start_fake, s3_running_fake,
	    s3_wait_fake, s3_done_fake, s3_cancel_fake, s3_free_fake, NULL };
}

/* ---- PostgreSQL ---------------------------------------------------------- */

struct fake_db {
	struct world *w;
	enum store_mode mode;
	int refusal;			/* under MODE_REFUSED: 0 password,
					   1 privilege */
	enum fault forced;
	struct strmap *events;		/* applied event ids */
	struct strmap *docs;		/* <job>/<file_path> -> struct fdoc */
	struct strmap *jobs;		/* job id -> status (char *) */
	struct factivity *acts;
	size_t nacts, capacts;
};

struct fake_db *
fake_db_new(struct world *w)
{
	struct fake_db *f = xcalloc(1, sizeof(*f));

	f->w = w;
	f->events = strmap_new();
	f->docs = strmap_new();
	f->jobs = strmap_new();
	return f;
}

void
fake_db_free(struct fake_db *f)
{
	size_t i = 0;
	const char *k;
	void *v;

	while (strmap_next(f->docs, &i, &k, &v)) {
		taken_free(((struct fdoc *)v)->history);
		free(v);
	}
	i = 0;
	while (strmap_next(f->jobs, &i, &k, &v))
		free(v);
	for (i = 0; i < f->nacts; i++)
		free(f->acts[i].path);
	free(f->acts);
	strmap_free(f->events);
	strmap_free(f->docs);
	strmap_free(f->jobs);
	free(f);
}

void
fake_db_mode(struct fake_db *f, enum store_mode m)
{
	if (m == MODE_REFUSED && f->mode != MODE_REFUSED) {
		f->w->refusals++;
		f->refusal = (int)world_rand(f->w, 2);
	}
	f->mode = m;
}

void
fake_db_force(struct fake_db *f, enum fault fl)
{
	f->forced = fl;
}

struct fdoc *
fake_db_doc(struct fake_db *f, const char *path)
{
	return strmap_get(f->docs, path);
}

const struct factivity *
fake_db_activities(const struct fake_db *f, size_t *n)
{
	*n = f->nacts;
	return f->acts;
}

const char *
fake_db_job_status(struct fake_db *f, const char *job)
{
	return strmap_get(f->jobs, job);
}

size_t
fake_db_ndocs(const struct fake_db *f)
{
	return strmap_count(f->docs);
}

/* Before the transaction: 1 when it fails (e set), 0 to go on; *lost
 * tells the caller to commit and then report a lost reply. */
static int
db_trouble(struct fake_db *f, int *lost, struct err *e)
{
	enum fault fl;

	*lost = 0;
	if (f->mode == MODE_DOWN) {
		f->w->requests++;
		err_set(e, ERR_TRANSIENT, "connection to server failed: "
		    "Connection refused");
		return 1;
	}
	if (f->mode == MODE_REFUSED) {
		/* As pg_classify classes 28P01 and 42501. */
		f->w->requests++;
		f->w->refused++;
		err_set(e, ERR_REFUSED, "%s %s", f->refusal ? "ERROR:  "
		    "permission denied for function outboxd_record_document" :
		    "FATAL:  password authentication failed for user "
		    "\"writer\"", SIM_REFUSED);
		return 1;
	}
	fl = draw_fault(f->w, f->mode, &f->forced);
	if (fl == F_LOST) {
		*lost = 1;
		return 0;
	}
	if (fl != F_NONE && fl != F_403) {
		err_set(e, ERR_TRANSIENT, "server closed the connection "
		    "unexpectedly");
		return 1;
	}
	return 0;
}

static void
add_activity(struct fake_db *f, const char *path, const char *type,
    const char *sha)
{
	if (f->nacts == f->capacts) {
		f->capacts = f->capacts ? f->capacts * 2 : 32;
		f->acts = xrealloc(f->acts, f->capacts * sizeof(*f->acts));
	}
	f->acts[f->nacts].path = xstrdup(path);
	snprintf(f->acts[f->nacts].type, sizeof(f->acts[f->nacts].type), "%s",
	    type);
	snprintf(f->acts[f->nacts].sha, sizeof(f->acts[f->nacts].sha), "%s",
	    sha);
	f->nacts++;
}

/* outboxd_record_document, as schema/pg/001_init.sql has it. */
static const char *
record_one(struct fake_db *f, const struct pg_doc *d)
{
	char path[1024];
	struct fdoc *doc;
	int created = 0;

	if (strmap_get(f->events, d->event_id) != NULL)
		return "duplicate";
	strmap_put(f->events, d->event_id, f);
	if (strmap_get(f->jobs, d->job_id) == NULL) {
		strmap_put(f->jobs, d->job_id, xstrdup("processing"));
		created = 1;
	}
	snprintf(path, sizeof(path), "%s/%s", d->job_id, d->file_path);
	doc = strmap_get(f->docs, path);
	if (doc != NULL && strcmp(doc->sha, d->sha256) == 0) {
		if (d->etag != NULL)
			snprintf(doc->etag, sizeof(doc->etag), "%s", d->etag);
		if (d->s3_key != NULL)
			doc->has_key = 1;
		return "unchanged";
	}
	/* A repair puts the row back without an activity (004_repair.sql). */
	if (!d->repair)
		add_activity(f, path, doc ? "file_update" : "file_upload",
		    d->sha256);
	if (doc == NULL) {
		doc = xcalloc(1, sizeof(*doc));
		strmap_put(f->docs, path, doc);
	} else if (!created) {
		created = -1;	/* updated */
	}
	snprintf(doc->sha, sizeof(doc->sha), "%s", d->sha256);
	snprintf(doc->etag, sizeof(doc->etag), "%s", d->etag ? d->etag : "");
	doc->has_key = d->s3_key != NULL;
	doc->size = d->file_size;
	taken_push(&doc->history, d->sha256, -1);
	return created > 0 ? "job_created" : created < 0 ? "updated" :
	    "inserted";
}

static int
db_record_fake(void *h, struct pg_doc *docs, size_t n, struct err *e)
{
	struct fake_db *f = h;
	size_t i;
	int lost;

	if (db_trouble(f, &lost, e)) {
		for (i = 0; i < n; i++) {
			docs[i].err = *e;
			docs[i].outcome[0] = '\0';
		}
		return -1;
	}
	for (i = 0; i < n; i++) {
		snprintf(docs[i].outcome, sizeof(docs[i].outcome), "%s",
		    record_one(f, &docs[i]));
		docs[i].err = (struct err){0};
	}
	if (lost) {
		err_set(e, ERR_TRANSIENT, "server closed the connection "
		    "unexpectedly (after COMMIT)");
		for (i = 0; i < n; i++) {
			docs[i].err = *e;
			docs[i].outcome[0] = '\0';
		}
		return -1;
	}
	return 0;
}

static int
db_meta_fake(void *h, const char *event_id, const char *job_id,
    const cJSON *fields, const char **outcome, struct err *e)
{
	struct fake_db *f = h;
	const cJSON *st = cJSON_GetObjectItemCaseSensitive(fields, "status");
	char *old;
	int lost;

	if (db_trouble(f, &lost, e))
		return -1;
	if (strmap_get(f->events, event_id) != NULL) {
		*outcome = "duplicate";
	} else {
		strmap_put(f->events, event_id, f);
		old = strmap_get(f->jobs, job_id);
		*outcome = old ? "updated" : "created";
		if (cJSON_IsString(st))
			free(strmap_put(f->jobs, job_id,
			    xstrdup(st->valuestring)));
		else if (old == NULL)
			strmap_put(f->jobs, job_id, xstrdup("processing"));
	}
	if (lost) {
		err_set(e, ERR_TRANSIENT, "server closed the connection "
		    "unexpectedly (after COMMIT)");
		return -1;
	}
	return 0;
}

static int
db_etag_fake(void *h, const char *job_id, const char *file_path,
    const char *sha256, const char *etag, const char *s3_key, struct err *e)
{
	struct fake_db *f = h;
	char path[1024];
	struct fdoc *doc;
	int lost;

	if (db_trouble(f, &lost, e))
		return -1;
	snprintf(path, sizeof(path), "%s/%s", job_id, file_path);
	doc = strmap_get(f->docs, path);
	if (doc != NULL && strcmp(doc->sha, sha256) == 0 && etag != NULL) {
		snprintf(doc->etag, sizeof(doc->etag), "%s", etag);
		doc->has_key = s3_key != NULL;
	}
	if (lost) {
		err_set(e, ERR_TRANSIENT, "server closed the connection "
		    "unexpectedly (after COMMIT)");
		return -1;
	}
	return 0;
}

/* The scrub's batched row reads: the rows as they stand. */
static int
db_rows_fake(void *h, const char *const *job_ids, const char *const *paths,
    size_t n, struct pg_row *rows, struct err *e)
{
	struct fake_db *f = h;
	char path[1024];
	size_t i;
	int lost;

	memset(rows, 0, n * sizeof(*rows));
	if (db_trouble(f, &lost, e))
		return -1;
	for (i = 0; i < n; i++) {
		const struct fdoc *d;

		snprintf(path, sizeof(path), "%s/%s", job_ids[i], paths[i]);
		if ((d = strmap_get(f->docs, path)) == NULL)
			continue;
		rows[i].found = 1;
		rows[i].file_size = d->size;
		snprintf(rows[i].sha256, sizeof(rows[i].sha256), "%s", d->sha);
		snprintf(rows[i].etag, sizeof(rows[i].etag), "%s", d->etag);
		/* The fake keeps only whether the key is set: the right one. */
		rows[i].s3_key = d->has_key ? keymap_s3_key(job_ids[i], paths[i])
		    : NULL;
	}
	return 0;
}

int
fake_db_lose(struct fake_db *f, const char *path)
{
	struct fdoc *d = strmap_del(f->docs, path);

	if (d == NULL)
		return 0;
	taken_free(d->history);
	free(d);
	return 1;
}

static void
db_free_fake(void *h)
{
	(void)h;
}

void
fake_db_io(struct fake_db *f, struct engine_db *io)
{
	*io = (struct engine_db){ f, db_record_fake, db_meta_fake,
	    db_etag_fake, db_rows_fake, db_free_fake, NULL };
}
