/*
 * s3.c - the S3 client (see s3.h).
 *
 * A request's life: s3_start signs it (SigV4 over host, x-amz-date,
 * x-amz-content-sha256, Content-MD5, Content-Type and our metadata),
 * takes an easy handle from the pool, and adds it to the multi handle;
 * s3_wait polls the sockets curl watches (its socket interface) and runs
 * curl for those that are ready and the timers due, until something
 * finishes; s3_done classifies the outcome (curl error, HTTP status, S3's
 * XML error code) into r->err and returns the handle to the pool. Bodies
 * come from pread(2) on the caller's descriptor, so a 5 GiB file costs
 * one 16 KiB curl buffer, and curl may rewind them (seek callback) when
 * it resends on a dead keep-alive connection; a body in memory (a small
 * file) is handed to curl whole and goes out with the headers.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <openssl/evp.h>

#include "agent/s3/creds.h"
#include "agent/s3/s3.h"

#define EMPTY_SHA256 \
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define REPLY_CAP	(1024 * 1024)	/* bytes of a reply body we keep */
#define LIST_CAP	(8 * 1024 * 1024)	/* of a listing page: 1,000
					 * keys of 1,024 bytes, %-encoded */
#define POOL_MAX	64		/* idle easy handles kept */
#define STREAM_CHUNK	(64 * 1024)	/* decoded bytes per aws-chunked chunk,
					   as the SDKs send (S3 wants >= 8 KiB
					   but for the last) */
#define STREAM_LEAD	(8 * 1024 * 1024)	/* bytes a streamed body may be
					   ahead of its hasher (the wait at the
					   trailer is the hashing of at most
					   this much); paused there, it goes on
					   once the hasher is within half */
#define LEAD_POLL_MS	1		/* s3_wait's longest sleep while a
					   stream waits for its hasher */
#define STREAMING	"STREAMING-UNSIGNED-PAYLOAD-TRAILER"
#ifndef STREAM_UPLOAD_BUFFER
#define STREAM_UPLOAD_BUFFER	(256 * 1024)	/* curl's buffer for one */
#endif
#define TRAILER		"x-amz-checksum-sha256"

struct s3 {
	CURLM *multi;
	CURLSH *share;		/* TLS sessions and DNS, for every handle */
	char *scheme;		/* "https" or "http" */
	char *host;		/* Host header and URL authority */
	char *base_path;	/* endpoint path prefix, "" normally */
	char *bucket;
	int path_style;
	char *region;
	char *sse, *sse_kms_key_id, *storage_class;	/* NULL when unset */
	struct creds *creds;	/* the chain's credentials: never logged */
	uint64_t bw_cap;	/* bytes per second for all bodies, 0 = none */
	double bw_tokens;	/* bytes that may be sent now */
	int64_t bw_at;		/* when bw_tokens was last refilled (mono ms) */
	int bw_paused;		/* transfers paused for want of tokens */
	int digest_paused;	/* streams paused at the trailer for want of
				   their digest (s3_req.stream_digest) */
	const char *ca_bundle;
	long connect_timeout_ms;
	long stall_s;		/* abandon a transfer this long without progress */
	long clock_offset;	/* seconds to add to our clock when signing */
	CURL *pool[POOL_MAX];	/* idle easy handles */
	int npool;
	struct s3_req **running;	/* in flight */
	size_t nrunning, caprunning;
	struct s3_req **done;	/* finished, not yet collected */
	size_t ndone, capdone;
	struct pollfd *socks;	/* the sockets curl asked us to watch
				   (sock_cb), and for what */
	size_t nsocks, capsocks;
	struct pollfd *ready;	/* s3_wait's poll set: socks and wake_fd */
	size_t capready;
};

/* Per-request state that only s3.c sees. */
struct req_priv {
	struct s3 *s;
	CURL *easy;
	struct curl_slist *headers;
	char *url;
	uint64_t sent;		/* body bytes handed to curl */
	int paused;		/* waiting for bandwidth tokens */
	double allow;		/* its share of them this turn */
	int short_read;		/* the file ended early: it changed */
	int read_errno;
	int no_digest;		/* stream: aborted, its digest will not come */
	char server_date[64];	/* the Date header, "" if none: parsed
				   only for RequestTimeTooSkewed */
	unsigned creds_gen;	/* the credentials it was signed with */
	int digest_wait;	/* stream: paused for its digest */
	uint64_t at;		/* stream: body bytes read so far */
	uint64_t chunk_left;	/* stream: data bytes left in this chunk */
	char frame[96];		/* stream: framing bytes to send next */
	size_t frame_len, frame_off;
	int ended;		/* stream: the trailer is framed */
	char errbuf[CURL_ERROR_SIZE];
};

/* ---- configuration ------------------------------------------------------- */

static int sock_cb(CURL *easy, curl_socket_t fd, int what, void *arg,
    void *sockp);

struct s3 *
s3_new(const struct cfg *cfg, struct err *e)
{
	struct s3 *s = xcalloc(1, sizeof(*s));

	s->multi = curl_multi_init();
	if (s->multi == NULL) {
		err_set(e, ERR_FATAL, "curl_multi_init failed");
		free(s);
		return NULL;
	}
	curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
	    (long)cfg->concurrency);
	curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS,
	    (long)cfg->concurrency + 4);
	/* s3_wait drives curl by socket (curl_multi_socket_action), so a
	 * turn runs only the transfers whose sockets are ready. */
	curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
	/* The multi handle shares connections; TLS sessions are each easy
	 * handle's unless shared: with them shared, every connection after
	 * the first resumes a session (an abbreviated handshake). One
	 * thread uses them all, so no locks. */
	s->share = curl_share_init();
	if (s->share != NULL) {
		curl_share_setopt(s->share, CURLSHOPT_SHARE,
		    CURL_LOCK_DATA_SSL_SESSION);
		curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	}
	s->bucket = xstrdup(cfg->bucket);
	s->region = xstrdup(cfg->region);
	s->sse = cfg->sse ? xstrdup(cfg->sse) : NULL;
	s->sse_kms_key_id = cfg->sse_kms_key_id ?
	    xstrdup(cfg->sse_kms_key_id) : NULL;
	s->storage_class = cfg->storage_class ? xstrdup(cfg->storage_class) :
	    NULL;
	s->path_style = cfg->path_style;
	s->creds = creds_new(cfg);
	s->ca_bundle = cfg->ca_bundle;
	s->connect_timeout_ms = 10000;
	s->stall_s = cfg->s3_timeout_s;
	s->bw_cap = cfg->max_bandwidth;
	s->bw_at = time_mono_ms();

	if (cfg->endpoint != NULL) {
		CURLU *u = curl_url();
		char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;

		curl_url_set(u, CURLUPART_URL, cfg->endpoint, 0);
		curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
		curl_url_get(u, CURLUPART_HOST, &host, 0);
		curl_url_get(u, CURLUPART_PORT, &port, 0);
		curl_url_get(u, CURLUPART_PATH, &path, 0);
		s->scheme = xstrdup(scheme ? scheme : "https");
		if (s->path_style)
			s->host = port ? xasprintf("%s:%s", host, port) :
			    xstrdup(host);
		else
			s->host = port ? xasprintf("%s.%s:%s", s->bucket, host,
			    port) : xasprintf("%s.%s", s->bucket, host);
		s->base_path = xstrdup(path && strcmp(path, "/") != 0 ? path : "");
		curl_free(scheme);
		curl_free(host);
		curl_free(port);
		curl_free(path);
		curl_url_cleanup(u);
	} else {
		s->scheme = xstrdup("https");
		s->host = s->path_style ?
		    xasprintf("s3.%s.amazonaws.com", s->region) :
		    xasprintf("%s.s3.%s.amazonaws.com", s->bucket, s->region);
		s->base_path = xstrdup("");
	}
	/* Trailing slashes of the base path would double up. */
	while (strlen(s->base_path) > 0 &&
	    s->base_path[strlen(s->base_path) - 1] == '/')
		s->base_path[strlen(s->base_path) - 1] = '\0';
	return s;
}

void
s3_free(struct s3 *s)
{
	int i;

	if (s == NULL)
		return;
	/* Cancelled transfers give their handles back to the pool, and the
	 * share outlives every handle that uses it. */
	s3_cancel_all(s);
	while (s3_done(s) != NULL)
		;	/* their owners were told by s3_cancel_all's caller */
	for (i = 0; i < s->npool; i++)
		curl_easy_cleanup(s->pool[i]);
	curl_multi_cleanup(s->multi);
	if (s->share != NULL)
		curl_share_cleanup(s->share);
	creds_free(s->creds);
	free(s->running);
	free(s->scheme);
	free(s->host);
	free(s->base_path);
	free(s->bucket);
	free(s->region);
	free(s->sse);
	free(s->sse_kms_key_id);
	free(s->storage_class);
	free(s->done);
	free(s->socks);
	free(s->ready);
	free(s);
}

long
s3_clock_offset(const struct s3 *s)
{
	return s->clock_offset;
}

struct creds *
s3_creds(struct s3 *s)
{
	return s->creds;
}

/* The decoded path of key as signed: [/base][/bucket]/key. */
static char *
object_path(const struct s3 *s, const char *key)
{
	if (s->path_style)
		return xasprintf("%s/%s/%s", s->base_path, s->bucket, key);
	return xasprintf("%s/%s", s->base_path, key);
}

/* ---- bandwidth ----------------------------------------------------------- */

/*
 * OUTBOXD_MAX_BANDWIDTH is one token bucket for every transfer (curl's
 * CURLOPT_MAX_SEND_SPEED_LARGE is per transfer): the read callback takes
 * tokens for the bytes it hands curl and pauses its transfer when its
 * share is spent; s3_wait refills the bucket every 10 ms at most and
 * shares it out again. The bucket
 * holds at most 50 ms of the rate, so no burst exceeds the cap for long.
 */
static void
bw_refill(struct s3 *s)
{
	int64_t now = time_mono_ms();
	double most = (double)s->bw_cap / 20;

	if (most < 16384)
		most = 16384;	/* at least one curl buffer */
	s->bw_tokens += (double)(now - s->bw_at) * (double)s->bw_cap / 1000;
	if (s->bw_tokens > most)
		s->bw_tokens = most;
	s->bw_at = now;
}

/* How many of want bytes p's transfer may send now; 0: pause it. */
static size_t
bw_take(struct s3 *s, struct req_priv *p, size_t want)
{
	if (s->bw_cap == 0)
		return want;
	if ((double)want > p->allow)
		want = (size_t)p->allow;
	if ((double)want > s->bw_tokens)
		want = s->bw_tokens < 1 ? 0 : (size_t)s->bw_tokens;
	return want;
}

/* Counts n bytes sent against the bucket and the transfer's share. */
static void
bw_spend(struct s3 *s, struct req_priv *p, size_t n)
{
	if (s->bw_cap == 0)
		return;
	s->bw_tokens -= (double)n;
	p->allow -= (double)n;
}

/*
 * Once per turn of s3_wait: refills the bucket and shares it equally
 * among the running transfers (curl would otherwise hand it all to the
 * first handle it serves, and starve the others into the stall limit),
 * waking those paused for want of tokens.
 */
static void
bw_round(struct s3 *s)
{
	double share;
	size_t i;

	if (s->bw_cap == 0 || s->nrunning == 0)
		return;
	bw_refill(s);
	share = s->bw_tokens / (double)s->nrunning;
	for (i = 0; i < s->nrunning; i++) {
		struct req_priv *p = s->running[i]->priv;

		p->allow = share;
		if (p->paused && share >= 1) {
			p->paused = 0;
			s->bw_paused--;
			curl_easy_pause(p->easy, CURLPAUSE_CONT);
		}
	}
}

/* ---- curl callbacks ------------------------------------------------------ */

static size_t
read_body(char *dst, size_t size, size_t nitems, void *arg)
{
	struct s3_req *r = arg;
	struct req_priv *p = r->priv;
	size_t want = size * nitems;
	uint64_t left = r->length - p->sent;
	ssize_t n;

	if (want > left)
		want = (size_t)left;
	if (want == 0)
		return 0;
	want = bw_take(p->s, p, want);
	if (want == 0) {
		p->paused = 1;
		p->s->bw_paused++;
		return CURL_READFUNC_PAUSE;
	}
	if (r->fd < 0) {
		memcpy(dst, r->mem + p->sent, want);
		p->sent += want;
		bw_spend(p->s, p, want);
		return want;
	}
	do
		n = pread(r->fd, dst, want, (off_t)(r->offset + p->sent));
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		p->read_errno = errno;
		return CURL_READFUNC_ABORT;
	}
	if (n == 0) {
		/* Shorter than when it was hashed: the file changed. */
		p->short_read = 1;
		return CURL_READFUNC_ABORT;
	}
	p->sent += (uint64_t)n;
	bw_spend(p->s, p, (size_t)n);
	return (size_t)n;
}

/* ---- aws-chunked bodies -------------------------------------------------- */

/*
 * A streaming PUT (s3_req.stream) sends the file as S3's aws-chunked
 * encoding with an unsigned payload and a trailing checksum:
 *
 *   10000\r\n <64 KiB>\r\n ... <last size>\r\n <rest>\r\n
 *   0\r\n x-amz-checksum-sha256:<base64>\r\n \r\n
 *
 * so the first byte goes out before the SHA-256 is known: the caller
 * computes it beside the send (a hasher thread reading the same file) and
 * hands it over in r->sha256; the read callback only reads and frames,
 * and pauses the transfer at the trailer until the digest is there
 * (digest_round wakes it). S3 checks the trailer against the bytes it
 * received, so a file that changed between the two reads is refused
 * (BadDigest), not stored under the wrong digest. The encoded length is
 * known in advance (the trailer's value has a fixed length), so the
 * request has a Content-Length, as S3 requires.
 */
static uint64_t
hex_digits(uint64_t n)
{
	uint64_t d = 1;

	while (n >= 16) {
		n /= 16;
		d++;
	}
	return d;
}

static uint64_t
chunked_length(uint64_t n)
{
	uint64_t full = n / STREAM_CHUNK, rest = n % STREAM_CHUNK;
	uint64_t len = full * (hex_digits(STREAM_CHUNK) + 4 + STREAM_CHUNK);

	if (rest > 0)
		len += hex_digits(rest) + 4 + rest;
	/* "0\r\n", the trailer line (a base64 SHA-256 is 44 bytes), "\r\n" */
	return len + 3 + strlen(TRAILER) + 1 + 44 + 2 + 2;
}

static void
frame_set(struct req_priv *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void
frame_set(struct req_priv *p, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(p->frame, sizeof(p->frame), fmt, ap);
	va_end(ap);
	p->frame_len = n > 0 && (size_t)n < sizeof(p->frame) ? (size_t)n : 0;
	p->frame_off = 0;
}

/* All bytes read and the digest known (r->sha256): frames the trailer. */
static int
stream_end(struct s3_req *r, struct req_priv *p)
{
	char b64[45];

	if (s3_checksum_b64(r->sha256, b64) < 0)
		return -1;
	frame_set(p, "0\r\n" TRAILER ":%s\r\n\r\n", b64);
	p->ended = 1;
	return 0;
}

/* The body is at least `lead` bytes ahead of what the hasher has read. */
static int
stream_ahead(const struct s3_req *r, const struct req_priv *p, uint64_t lead)
{
	return r->stream_digest == 0 && r->stream_hashed != NULL &&
	    p->at >= atomic_load_explicit(r->stream_hashed,
		memory_order_acquire) + lead;
}

/* Pauses the stream until digest_round wakes it. */
static size_t
wait_for_hasher(struct req_priv *p)
{
	p->digest_wait = 1;
	p->s->digest_paused++;
	return CURL_READFUNC_PAUSE;
}

static size_t
read_stream(char *dst, size_t size, size_t nitems, void *arg)
{
	struct s3_req *r = arg;
	struct req_priv *p = r->priv;
	size_t want, out = 0, n;
	ssize_t got;

	if (p->ended && p->frame_off == p->frame_len)
		return 0;
	want = bw_take(p->s, p, size * nitems);
	if (want == 0) {
		p->paused = 1;
		p->s->bw_paused++;
		return CURL_READFUNC_PAUSE;
	}
	while (out < want) {
		if (p->frame_off < p->frame_len) {
			n = p->frame_len - p->frame_off;
			if (n > want - out)
				n = want - out;
			memcpy(dst + out, p->frame + p->frame_off, n);
			p->frame_off += n;
			out += n;
		} else if (p->chunk_left > 0) {
			n = p->chunk_left < want - out ? (size_t)p->chunk_left :
			    want - out;
			got = pread(r->fd, dst + out, n, (off_t)(r->offset + p->at));
			if (got < 0 && errno == EINTR)
				continue;
			if (got < 0) {
				p->read_errno = errno;
				return CURL_READFUNC_ABORT;
			}
			if (got == 0) {
				p->short_read = 1;	/* the file shrank */
				return CURL_READFUNC_ABORT;
			}
			p->at += (uint64_t)got;
			p->chunk_left -= (uint64_t)got;
			out += (size_t)got;
			if (p->chunk_left == 0)
				frame_set(p, "\r\n");
		} else if (p->ended) {
			break;
		} else if (p->at < r->length &&
		    stream_ahead(r, p, STREAM_LEAD)) {
			/* Too far ahead of the hasher: wait for it. */
			if (out > 0)
				break;
			if (r->stream_digest < 0) {
				p->no_digest = 1;
				return CURL_READFUNC_ABORT;
			}
			return wait_for_hasher(p);
		} else if (p->at < r->length) {
			p->chunk_left = r->length - p->at < STREAM_CHUNK ?
			    r->length - p->at : STREAM_CHUNK;
			frame_set(p, "%llx\r\n", (unsigned long long)p->chunk_left);
		} else if (r->stream_digest == 0) {
			/* Every byte read, the digest not yet computed:
			 * hand curl what we have, then wait for it. */
			if (out > 0)
				break;
			return wait_for_hasher(p);
		} else if (r->stream_digest < 0 || stream_end(r, p) < 0) {
			p->no_digest = 1;
			return CURL_READFUNC_ABORT;
		}
	}
	bw_spend(p->s, p, out);
	return out;
}

/*
 * Once per turn of s3_wait, before it polls: wakes the streams paused at
 * the trailer whose digest has come (or will not: they abort). Returns
 * the number woken.
 */
static int
digest_round(struct s3 *s)
{
	int woken = 0;
	size_t i;

	for (i = 0; i < s->nrunning && s->digest_paused > 0; i++) {
		struct s3_req *r = s->running[i];
		struct req_priv *p = r->priv;

		if (p->digest_wait && (r->stream_digest != 0 ||
		    (p->at < r->length &&
		    !stream_ahead(r, p, STREAM_LEAD / 2)))) {
			p->digest_wait = 0;
			s->digest_paused--;
			curl_easy_pause(p->easy, CURLPAUSE_CONT);
			woken++;
		}
	}
	return woken;
}

/* curl resends a body from the start (a dead keep-alive connection):
 * the framing starts over; the digest, the caller's, stays. */
static int
seek_stream(void *arg, curl_off_t offset, int origin)
{
	struct s3_req *r = arg;
	struct req_priv *p = r->priv;

	if (origin != SEEK_SET || offset != 0)
		return CURL_SEEKFUNC_CANTSEEK;
	p->at = p->chunk_left = 0;
	p->frame_len = p->frame_off = 0;
	p->ended = 0;
	/* Sent again from the start: no longer paused, so no longer
	 * counted (a stale count keeps s3_wait's sleeps at 1 ms). */
	if (p->digest_wait) {
		p->digest_wait = 0;
		p->s->digest_paused--;
	}
	return CURL_SEEKFUNC_OK;
}

static int
seek_body(void *arg, curl_off_t offset, int origin)
{
	struct s3_req *r = arg;
	struct req_priv *p = r->priv;

	if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > r->length)
		return CURL_SEEKFUNC_CANTSEEK;
	p->sent = (uint64_t)offset;
	return CURL_SEEKFUNC_OK;
}

static size_t
write_reply(char *src, size_t size, size_t nitems, void *arg)
{
	struct s3_req *r = arg;
	size_t n = size * nitems;

	if (r->body.len + n <= (r->body_cap ? r->body_cap : REPLY_CAP)) {
		buf_append(&r->body, src, n);
		return n;
	}
	r->body_over = 1;
	/* A caller that set its own cap needs the whole reply (a listing):
	 * stop at once. Others keep what fits of an error body. */
	return r->body_cap ? 0 : n;
}

/* Copies a header's value (trimmed) when its name matches. */
static int
header_value(const char *line, size_t len, const char *name, char *out,
    size_t n)
{
	size_t nl = strlen(name), vlen;
	const char *v, *end = line + len;

	if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
		return 0;
	for (v = line + nl + 1; v < end && (*v == ' ' || *v == '\t'); v++)
		;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' ||
	    end[-1] == ' '))
		end--;
	vlen = (size_t)(end - v);
	if (vlen >= n)
		vlen = n - 1;
	memcpy(out, v, vlen);
	out[vlen] = '\0';
	return 1;
}

static size_t
read_header(char *line, size_t size, size_t nitems, void *arg)
{
	struct s3_req *r = arg;
	struct req_priv *p = r->priv;
	size_t len = size * nitems;
	char tmp[128];

	if (header_value(line, len, "ETag", tmp, sizeof(tmp)))
		snprintf(r->etag, sizeof(r->etag), "%s", tmp);
	else if (header_value(line, len, "Date", p->server_date,
	    sizeof(p->server_date)))
		;
	else if (header_value(line, len, "x-amz-server-side-encryption", tmp,
	    sizeof(tmp)))
		r->kms = strncmp(tmp, "aws:kms", 7) == 0;
	else if (header_value(line, len, "x-amz-meta-sha256", r->meta_sha256,
	    sizeof(r->meta_sha256)))
		;
	else if (header_value(line, len, "x-amz-checksum-sha256", r->checksum,
	    sizeof(r->checksum)))
		;
	else if (header_value(line, len, "Content-Length", tmp, sizeof(tmp)))
		r->content_length = strtoll(tmp, NULL, 10);
	return len;
}

/* ---- requests ------------------------------------------------------------ */

static CURL *
take_easy(struct s3 *s)
{
	CURL *h;

	if (s->npool > 0) {
		h = s->pool[--s->npool];
		curl_easy_reset(h);
		return h;
	}
	return curl_easy_init();
}

static void
give_easy(struct s3 *s, CURL *h)
{
	if (s->npool < POOL_MAX)
		s->pool[s->npool++] = h;
	else
		curl_easy_cleanup(h);
}

/* Appends "name: value"; curl copies the line. Put together on the stack
 * when it fits (every header but a long session token): xasprintf's
 * formatting and allocation, ten times a request, were a tenth of
 * s3_start (issue 11). */
static struct curl_slist *
add_header(struct curl_slist *l, const char *name, const char *value)
{
	size_t nl = strlen(name), vl = strlen(value);
	char stack[512], *line = nl + vl + 3 <= sizeof(stack) ? stack :
	    xmalloc(nl + vl + 3);
	struct curl_slist *n;

	memcpy(line, name, nl);
	memcpy(line + nl, ": ", 2);
	memcpy(line + nl + 2, value, vl + 1);
	n = curl_slist_append(l, line);
	if (line != stack)
		free(line);
	if (n == NULL)
		abort();
	return n;
}

/* A PutObject or CreateMultipartUpload: the requests that make an object
 * and so carry how it is stored (S3 refuses these headers on UploadPart). */
static int
creates_object(const struct s3_req *r)
{
	if (strcmp(r->method, "PUT") == 0)
		return r->n_query == 0;
	return strcmp(r->method, "POST") == 0 && r->n_query == 1 &&
	    strcmp(r->query[0].name, "uploads") == 0;
}

int
s3_start(struct s3 *s, struct s3_req *r)
{
	struct req_priv *p = xcalloc(1, sizeof(*p));
	struct sigv4_pair hdr[16];
	size_t nh = 0, i;
	struct buf auth = {0}, url = {0};
	char amz_date[17], *path, checksum[45], declen[24];
	const char *payload;
	int has_body = r->fd >= 0 || r->mem != NULL;
	/* A body in memory (a small file, Complete's XML) is handed to curl
	 * whole, which sends it with the request's headers in one send(2)
	 * (it is read from curl's buffer again should curl resend it); the
	 * read callback, which counts bandwidth tokens, only under a cap. */
	int from_mem = r->fd < 0 && r->mem != NULL && s->bw_cap == 0;
	struct sigv4_request sr;
	struct creds_val cv;
	struct sigv4_creds sc;
	CURLMcode mc;

	err_clear(&r->err);
	r->status = 0;
	r->etag[0] = '\0';
	r->code[0] = '\0';
	r->kms = 0;
	r->meta_sha256[0] = '\0';
	r->checksum[0] = '\0';
	r->content_length = -1;
	buf_reset(&r->body);
	r->body_over = 0;
	p->s = s;
	r->priv = p;
	if (!has_body)
		snprintf(r->sha256, sizeof(r->sha256), "%s", EMPTY_SHA256);
	if (creds_get(s->creds, &cv, &r->err) < 0)
		goto fail;
	p->creds_gen = cv.gen;
	sc = (struct sigv4_creds){ cv.access_key, cv.secret_key,
	    cv.token[0] ? cv.token : NULL };

	/* A streaming PUT signs the literal STREAMING-... in place of the
	 * payload's hash: its checksum comes in the trailer, which S3 checks
	 * against the decoded body before it stores it. */
	r->stream = r->stream && r->fd >= 0 && strcmp(r->method, "PUT") == 0;
	payload = r->stream ? STREAMING : r->sha256;
	hdr[nh++] = (struct sigv4_pair){ "x-amz-content-sha256", payload };
	if (r->stream) {
		snprintf(declen, sizeof(declen), "%llu",
		    (unsigned long long)r->length);
		hdr[nh++] = (struct sigv4_pair){ "Content-Encoding",
		    "aws-chunked" };
		hdr[nh++] = (struct sigv4_pair){ "x-amz-decoded-content-length",
		    declen };
		hdr[nh++] = (struct sigv4_pair){ "x-amz-trailer", TRAILER };
	}
	if (r->md5[0] != '\0')
		hdr[nh++] = (struct sigv4_pair){ "Content-MD5", r->md5 };
	if (r->content_type != NULL)
		hdr[nh++] = (struct sigv4_pair){ "Content-Type", r->content_type };
	if (r->content_disposition != NULL)
		hdr[nh++] = (struct sigv4_pair){ "Content-Disposition",
		    r->content_disposition };
	if (r->job_id != NULL)
		hdr[nh++] = (struct sigv4_pair){ "x-amz-meta-job-id", r->job_id };
	if (r->file_sha256 != NULL)
		hdr[nh++] = (struct sigv4_pair){ "x-amz-meta-sha256",
		    r->file_sha256 };
	if (creates_object(r) && s->sse != NULL)
		hdr[nh++] = (struct sigv4_pair){ "x-amz-server-side-encryption",
		    s->sse };
	if (creates_object(r) && s->sse_kms_key_id != NULL)
		hdr[nh++] = (struct sigv4_pair){
		    "x-amz-server-side-encryption-aws-kms-key-id",
		    s->sse_kms_key_id };
	if (creates_object(r) && s->storage_class != NULL)
		hdr[nh++] = (struct sigv4_pair){ "x-amz-storage-class",
		    s->storage_class };
	/* The checksum S3 keeps: every body's SHA-256 (an object's, or a
	 * part's, from which S3 derives the composite), declared when a
	 * multipart upload is created, and asked for back on an object's
	 * HEAD and GET (S3 returns it only in checksum mode; not on a
	 * listing). */
	if (strcmp(r->method, "PUT") == 0 && !r->stream &&
	    s3_checksum_b64(r->sha256, checksum) == 0)
		hdr[nh++] = (struct sigv4_pair){ "x-amz-checksum-sha256",
		    checksum };
	else if (strcmp(r->method, "POST") == 0 && creates_object(r))
		hdr[nh++] = (struct sigv4_pair){ "x-amz-checksum-algorithm",
		    "SHA256" };
	else if ((strcmp(r->method, "HEAD") == 0 ||
	    strcmp(r->method, "GET") == 0) && r->n_query == 0)
		hdr[nh++] = (struct sigv4_pair){ "x-amz-checksum-mode",
		    "ENABLED" };
	if (sc.session_token != NULL)
		hdr[nh++] = (struct sigv4_pair){ "x-amz-security-token",
		    sc.session_token };

	path = object_path(s, r->key);
	sr = (struct sigv4_request){
		.method = r->method, .host = s->host, .path = path,
		.query = r->query, .n_query = r->n_query,
		.headers = hdr, .n_headers = nh,
		.payload_hash = payload, .region = s->region,
		.service = "s3", .time = time(NULL) + s->clock_offset,
	};
	sigv4_sign(&sr, &sc, &auth, amz_date, NULL);

	buf_reserve(&url, 256);
	buf_puts(&url, s->scheme);
	buf_puts(&url, "://");
	buf_puts(&url, s->host);
	sigv4_uri_encode(&url, path, 1);
	for (i = 0; i < r->n_query; i++) {
		buf_append(&url, i == 0 ? "?" : "&", 1);
		sigv4_uri_encode(&url, r->query[i].name, 0);
		if (r->query[i].value != NULL && r->query[i].value[0] != '\0') {
			buf_append(&url, "=", 1);
			sigv4_uri_encode(&url, r->query[i].value, 0);
		}
	}
	free(path);
	p->url = buf_take(&url);

	p->headers = add_header(p->headers, "Host", s->host);
	p->headers = add_header(p->headers, "x-amz-date", amz_date);
	for (i = 0; i < nh; i++)
		p->headers = add_header(p->headers, hdr[i].name, hdr[i].value);
	p->headers = add_header(p->headers, "Authorization", auth.data);
	/* Small bodies go at once; large ones may wait for 100 Continue so
	 * a refused request does not send the whole file first. */
	if (!has_body || r->length < 1024 * 1024)
		p->headers = curl_slist_append(p->headers, "Expect:");
	/* curl would label a body it is handed application/x-www-form-
	 * urlencoded. */
	if (from_mem && r->content_type == NULL)
		p->headers = curl_slist_append(p->headers, "Content-Type:");
	memset(auth.data, 0, auth.len);
	buf_free(&auth);
	memset(&cv, 0, sizeof(cv));

	p->easy = take_easy(s);
	if (p->easy == NULL) {
		err_set(&r->err, ERR_TRANSIENT, "curl_easy_init failed");
		goto fail;
	}
	curl_easy_setopt(p->easy, CURLOPT_URL, p->url);
	curl_easy_setopt(p->easy, CURLOPT_HTTPHEADER, p->headers);
	curl_easy_setopt(p->easy, CURLOPT_PRIVATE, r);
	curl_easy_setopt(p->easy, CURLOPT_ERRORBUFFER, p->errbuf);
	curl_easy_setopt(p->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(p->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(p->easy, CURLOPT_CONNECTTIMEOUT_MS,
	    s->connect_timeout_ms);
	curl_easy_setopt(p->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(p->easy, CURLOPT_LOW_SPEED_TIME, s->stall_s);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(p->easy, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
	if (s->ca_bundle != NULL)
		curl_easy_setopt(p->easy, CURLOPT_CAINFO, s->ca_bundle);
	if (s->share != NULL)
		curl_easy_setopt(p->easy, CURLOPT_SHARE, s->share);
	curl_easy_setopt(p->easy, CURLOPT_HEADERFUNCTION, read_header);
	curl_easy_setopt(p->easy, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(p->easy, CURLOPT_WRITEFUNCTION, write_reply);
	curl_easy_setopt(p->easy, CURLOPT_WRITEDATA, r);
	if (has_body && !from_mem) {
		curl_easy_setopt(p->easy, CURLOPT_READFUNCTION, r->stream ?
		    read_stream : read_body);
		curl_easy_setopt(p->easy, CURLOPT_READDATA, r);
		curl_easy_setopt(p->easy, CURLOPT_SEEKFUNCTION, r->stream ?
		    seek_stream : seek_body);
		curl_easy_setopt(p->easy, CURLOPT_SEEKDATA, r);
	}
	/* A streamed body is read and framed in the read callback:
	 * larger reads mean fewer calls and sends per byte (bench W3). */
	if (r->stream)
		curl_easy_setopt(p->easy, CURLOPT_UPLOAD_BUFFERSIZE,
		    (long)STREAM_UPLOAD_BUFFER);
	if (from_mem && (strcmp(r->method, "PUT") == 0 ||
	    strcmp(r->method, "POST") == 0)) {
		curl_easy_setopt(p->easy, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)r->length);
		curl_easy_setopt(p->easy, CURLOPT_POSTFIELDS, r->mem);
		if (strcmp(r->method, "PUT") == 0)
			curl_easy_setopt(p->easy, CURLOPT_CUSTOMREQUEST, "PUT");
	} else if (strcmp(r->method, "PUT") == 0) {
		curl_easy_setopt(p->easy, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(p->easy, CURLOPT_INFILESIZE_LARGE,
		    (curl_off_t)(r->stream ? chunked_length(r->length) :
		    has_body ? r->length : 0));
		if (!has_body) {
			r->length = 0;
			curl_easy_setopt(p->easy, CURLOPT_READFUNCTION, read_body);
			curl_easy_setopt(p->easy, CURLOPT_READDATA, r);
		}
	} else if (strcmp(r->method, "POST") == 0) {
		curl_easy_setopt(p->easy, CURLOPT_POST, 1L);
		curl_easy_setopt(p->easy, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)(has_body ? r->length : 0));
		if (!has_body)
			curl_easy_setopt(p->easy, CURLOPT_POSTFIELDS, "");
	} else if (strcmp(r->method, "HEAD") == 0) {
		curl_easy_setopt(p->easy, CURLOPT_NOBODY, 1L);
	} else if (strcmp(r->method, "GET") != 0) {
		curl_easy_setopt(p->easy, CURLOPT_CUSTOMREQUEST, r->method);
	}
	mc = curl_multi_add_handle(s->multi, p->easy);
	if (mc != CURLM_OK) {
		err_set(&r->err, ERR_TRANSIENT, "curl: %s",
		    curl_multi_strerror(mc));
		give_easy(s, p->easy);
		p->easy = NULL;
		goto fail;
	}
	if (s->nrunning == s->caprunning) {
		s->caprunning = s->caprunning ? s->caprunning * 2 : 16;
		s->running = xrealloc(s->running, s->caprunning *
		    sizeof(*s->running));
	}
	s->running[s->nrunning++] = r;
	return 0;
fail:
	s3_req_clear(r);
	return -1;
}

void
s3_req_clear(struct s3_req *r)
{
	struct req_priv *p = r->priv;

	if (p != NULL) {
		curl_slist_free_all(p->headers);
		free(p->url);
		free(p);
		r->priv = NULL;
	}
}

int
s3_running(const struct s3 *s)
{
	return (int)s->nrunning;
}

static void
forget_running(struct s3 *s, struct s3_req *r)
{
	size_t i;

	for (i = 0; i < s->nrunning; i++) {
		if (s->running[i] == r) {
			struct req_priv *p = r->priv;

			if (p->paused) {
				p->paused = 0;
				s->bw_paused--;
			}
			if (p->digest_wait) {
				p->digest_wait = 0;
				s->digest_paused--;
			}
			s->running[i] = s->running[--s->nrunning];
			return;
		}
	}
}

static void
push_done(struct s3 *s, struct s3_req *r)
{
	if (s->ndone == s->capdone) {
		s->capdone = s->capdone ? s->capdone * 2 : 16;
		s->done = xrealloc(s->done, s->capdone * sizeof(*s->done));
	}
	s->done[s->ndone++] = r;
}

void
s3_cancel_all(struct s3 *s)
{
	while (s->nrunning > 0) {
		struct s3_req *r = s->running[0];
		struct req_priv *p = r->priv;

		curl_multi_remove_handle(s->multi, p->easy);
		give_easy(s, p->easy);
		p->easy = NULL;
		forget_running(s, r);
		r->status = 0;
		err_set(&r->err, ERR_TRANSIENT, "%s %s: cancelled: outboxd is "
		    "stopping", r->method, r->key);
		push_done(s, r);
	}
}

/* ---- outcomes ------------------------------------------------------------ */

int
s3_checksum_b64(const char *hex, char out[45])
{
	unsigned char bin[32];
	size_t i;

	out[0] = '\0';
	if (strlen(hex) != 64)
		return -1;
	for (i = 0; i < 32; i++) {
		unsigned v = 0;
		int k;

		for (k = 0; k < 2; k++) {
			char c = hex[2 * i + (size_t)k];

			v <<= 4;
			if (c >= '0' && c <= '9')
				v |= (unsigned)(c - '0');
			else if (c >= 'a' && c <= 'f')
				v |= (unsigned)(c - 'a' + 10);
			else if (c >= 'A' && c <= 'F')
				v |= (unsigned)(c - 'A' + 10);
			else
				return -1;
		}
		bin[i] = (unsigned char)v;
	}
	EVP_EncodeBlock((unsigned char *)out, bin, sizeof(bin));
	return 0;
}

int
s3_head_matches(const struct s3_req *head, int64_t size, const char *sha256,
    const char *known_etag)
{
	char want[45];
	int judged = 0;

	if (head->content_length != size)
		return 0;
	/* A full-object checksum is the file's SHA-256 as S3 computed it
	 * from the bytes it holds; a composite one ("<base64>-N") is of the
	 * parts' checksums, which S3 checked part by part: the file's own
	 * digest is then x-amz-meta-sha256. */
	if (head->checksum[0] != '\0' && strchr(head->checksum, '-') == NULL) {
		if (s3_checksum_b64(sha256, want) < 0 ||
		    strcmp(head->checksum, want) != 0)
			return 0;
		judged = 1;
	}
	if (head->meta_sha256[0] != '\0') {
		if (strcmp(head->meta_sha256, sha256) != 0)
			return 0;
		judged = 1;
	}
	if (!judged && known_etag != NULL && known_etag[0] != '\0' &&
	    strcmp(head->etag, known_etag) != 0)
		return 0;
	return 1;
}

enum err_class
s3_classify(long status, const char *code)
{
	static const char *const transient[] = {
		"SlowDown", "InternalError", "RequestTimeout", "ServiceUnavailable",
		"RequestTimeTooSkewed", "OperationAborted", "BadDigest",
		"XAmzContentSHA256Mismatch", "IncompleteBody", "Throttling",
		"ThrottlingException", "RequestLimitExceeded",
		"TooManyRequestsException", "InternalFailure",
	};
	/* The credentials, or the bucket the leg is configured for, are
	 * wrong: no entry can succeed until that is fixed, so the leg pauses
	 * and nothing fails (a refreshed or reloaded credential resumes it). */
	static const char *const refused[] = {
		"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
		"TokenRefreshRequired", "InvalidToken", "NoSuchBucket",
		"PermanentRedirect", "AuthorizationHeaderMalformed",
		"AllAccessDisabled", "AccountProblem", "InvalidBucketName",
		"IllegalLocationConstraintException", "MissingSecurityHeader",
	};
	size_t i;

	/* No reply, the server's fault, or too many requests: whatever code
	 * a body names, trying again is right (found by fuzz-s3error: a 5xx
	 * naming AccessDenied paused the leg). */
	if (status == 0 || status >= 500 || status == 429)
		return ERR_TRANSIENT;
	if (code != NULL && code[0] != '\0') {
		for (i = 0; i < ARRAY_SIZE(transient); i++)
			if (strcmp(code, transient[i]) == 0)
				return ERR_TRANSIENT;
		for (i = 0; i < ARRAY_SIZE(refused); i++)
			if (strcmp(code, refused[i]) == 0)
				return ERR_REFUSED;
		if (strcmp(code, "AccessDenied") == 0)
			return ERR_DENIED;
	}
	/* A HEAD has no body to name the error: 403 is a refusal. */
	if (status == 403 && (code == NULL || code[0] == '\0'))
		return ERR_DENIED;
	if (status == 408)
		return ERR_TRANSIENT;
	return ERR_PERMANENT;
}

enum err_class
s3_classify_reply(const char *method, long status, const char *code)
{
	if (strcmp(method, "HEAD") == 0 && (status == 400 || status == 301) &&
	    (code == NULL || code[0] == '\0'))
		return ERR_REFUSED;
	return s3_classify(status, code);
}

static const xmlNode *
child(const xmlNode *n, const char *name)
{
	for (n = n ? n->children : NULL; n != NULL; n = n->next)
		if (n->type == XML_ELEMENT_NODE &&
		    strcmp((const char *)n->name, name) == 0)
			return n;
	return NULL;
}

static void
node_text(const xmlNode *n, char *out, size_t len)
{
	xmlChar *t;

	out[0] = '\0';
	if (n == NULL)
		return;
	t = xmlNodeGetContent(n);
	if (t != NULL) {
		utf8_snprintf(out, len, "%s", (const char *)t);
		xmlFree(t);
	}
}

int
s3_parse_error(const char *xml, size_t len, char *code, size_t ncode,
    char *message, size_t nmessage)
{
	xmlDocPtr doc;
	const xmlNode *root;
	int rc = -1;

	code[0] = message[0] = '\0';
	if (len == 0 || len > REPLY_CAP)
		return -1;
	doc = xmlReadMemory(xml, (int)len, "error.xml", NULL, XML_PARSE_NONET |
	    XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_NOBLANKS);
	if (doc == NULL)
		return -1;
	root = xmlDocGetRootElement(doc);
	if (root != NULL && strcmp((const char *)root->name, "Error") == 0) {
		node_text(child(root, "Code"), code, ncode);
		node_text(child(root, "Message"), message, nmessage);
		rc = 0;
	}
	xmlFreeDoc(doc);
	return rc;
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes an S3 url-encoded key in place (%XX, and + for a space, as S3
 * encodes them); -1 when an escape is malformed or yields a NUL. */
static int
url_decode(char *s, size_t *len)
{
	size_t i, o = 0;

	for (i = 0; s[i] != '\0'; i++) {
		if (s[i] == '%') {
			int hi = hex_value(s[i + 1]), lo = hi < 0 ? -1 :
			    hex_value(s[i + 2]);

			if (lo < 0 || (hi == 0 && lo == 0))
				return -1;
			s[o++] = (char)(hi * 16 + lo);
			i += 2;
		} else {
			s[o++] = s[i] == '+' ? ' ' : s[i];
		}
	}
	s[o] = '\0';
	*len = o;
	return 0;
}

int
s3_parse_list(const char *xml, size_t len, s3_key_fn *each, void *arg,
    char *token, size_t ntoken)
{
	xmlDocPtr doc;
	const xmlNode *root, *n;
	char flag[16], enc[16];
	int rc = -1, url;

	token[0] = '\0';
	if (len == 0 || len > LIST_CAP || len > INT_MAX)
		return -1;
	/* No DTD loading, no entity substitution, no network. */
	doc = xmlReadMemory(xml, (int)len, "list.xml", NULL, XML_PARSE_NONET |
	    XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_NOBLANKS);
	if (doc == NULL)
		return -1;
	root = xmlDocGetRootElement(doc);
	if (root == NULL || strcmp((const char *)root->name,
	    "ListBucketResult") != 0)
		goto out;
	node_text(child(root, "EncodingType"), enc, sizeof(enc));
	url = strcmp(enc, "url") == 0;
	for (n = root->children; n != NULL; n = n->next) {
		const xmlNode *k;
		xmlChar *t;
		size_t kl;

		if (n->type != XML_ELEMENT_NODE ||
		    strcmp((const char *)n->name, "Contents") != 0 ||
		    (k = child(n, "Key")) == NULL ||
		    (t = xmlNodeGetContent(k)) == NULL)
			continue;
		kl = strlen((const char *)t);
		if (url) {
			char *raw = xstrdup((const char *)t);

			if (url_decode((char *)t, &kl) < 0)
				each(arg, raw, strlen(raw), 1);
			else
				each(arg, (const char *)t, kl, 0);
			free(raw);
		} else {
			each(arg, (const char *)t, kl, 0);
		}
		xmlFree(t);
	}
	node_text(child(root, "IsTruncated"), flag, sizeof(flag));
	rc = 0;
	if (strcmp(flag, "true") == 0) {
		xmlChar *t = NULL;
		const xmlNode *tn = child(root, "NextContinuationToken");

		if (tn != NULL)
			t = xmlNodeGetContent(tn);
		rc = t != NULL && t[0] != '\0' &&
		    strlen((const char *)t) < ntoken ? 1 : -1;
		if (rc == 1)
			memcpy(token, t, strlen((const char *)t) + 1);
		xmlFree(t);
	}
out:
	xmlFreeDoc(doc);
	return rc;
}

long
s3_list(struct s3 *s, const char *prefix, s3_key_fn *each, void *arg,
    struct err *e)
{
	struct s3_req r;
	char token[1024] = "", next[1024];
	long pages = 0;
	int more;

	do {
		memset(&r, 0, sizeof(r));
		r.method = "GET";
		r.key = "";
		r.fd = -1;
		r.body_cap = LIST_CAP;
		r.query[r.n_query++] = (struct sigv4_pair){ "list-type", "2" };
		r.query[r.n_query++] = (struct sigv4_pair){ "prefix", prefix };
		r.query[r.n_query++] = (struct sigv4_pair){ "max-keys", "1000" };
		r.query[r.n_query++] = (struct sigv4_pair){ "encoding-type",
		    "url" };
		if (token[0] != '\0')
			r.query[r.n_query++] = (struct sigv4_pair){
			    "continuation-token", token };
		if (s3_perform(s, &r) < 0) {
			err_set(e, r.err.cls, "listing %s: %s", prefix, r.err.msg);
			if (r.body_over)
				err_set(e, ERR_PERMANENT, "listing %s: a page "
				    "longer than %d MiB", prefix, LIST_CAP >> 20);
			buf_free(&r.body);
			return -1;
		}
		more = s3_parse_list(r.body.data ? r.body.data : "", r.body.len,
		    each, arg, next, sizeof(next));
		buf_free(&r.body);
		if (more < 0 || (more == 1 && strcmp(next, token) == 0)) {
			err_set(e, ERR_PERMANENT, "listing %s: page %ld is not a "
			    "ListObjectsV2 reply, or repeats its token", prefix,
			    pages + 1);
			return -1;
		}
		memcpy(token, next, sizeof(token));
		pages++;
	} while (more == 1);
	return pages;
}

/* Turns a finished transfer into r->status, r->code and r->err. */
static void
conclude(struct s3 *s, struct s3_req *r, CURLcode cc)
{
	struct req_priv *p = r->priv;
	char message[512] = "";

	curl_easy_getinfo(p->easy, CURLINFO_RESPONSE_CODE, &r->status);
	if (p->short_read) {
		err_set(&r->err, ERR_CHANGED, "the file got shorter while "
		    "it was being sent");
		return;
	}
	if (p->read_errno != 0) {
		errno = p->read_errno;
		err_sys(&r->err, ERR_TRANSIENT, "reading the file");
		return;
	}
	if (p->no_digest) {
		err_set(&r->err, ERR_TRANSIENT, "%s %s: stopped: the body's "
		    "SHA-256 could not be computed", r->method, r->key);
		return;
	}
	if (cc != CURLE_OK) {
		err_set(&r->err, ERR_TRANSIENT, "%s %s: %s", r->method, r->key,
		    p->errbuf[0] ? p->errbuf : curl_easy_strerror(cc));
		r->status = 0;
		return;
	}
	if (r->status >= 200 && r->status < 300)
		return;
	s3_parse_error(r->body.data ? r->body.data : "", r->body.len, r->code,
	    sizeof(r->code), message, sizeof(message));
	if (strcmp(r->code, "RequestTimeTooSkewed") == 0 &&
	    p->server_date[0] != '\0') {
		time_t server = curl_getdate(p->server_date, NULL);

		/* Sign with the server's idea of now from here on. */
		if (server > 0)
			s->clock_offset = (long)(server - time(NULL));
	}
	/* Refresh now: the next probe signs with the new keys. A HEAD's
	 * bare 400 is most likely the same (s3_classify_reply). */
	if (strcmp(r->code, "ExpiredToken") == 0 ||
	    strcmp(r->code, "TokenRefreshRequired") == 0 ||
	    strcmp(r->code, "InvalidToken") == 0 ||
	    (r->code[0] == '\0' && s3_classify_reply(r->method, r->status,
	    r->code) == ERR_REFUSED))
		creds_expired(s->creds, p->creds_gen);
	if (strcmp(r->code, "PermanentRedirect") == 0 ||
	    strcmp(r->code, "AuthorizationHeaderMalformed") == 0)
		snprintf(message + strlen(message), sizeof(message) -
		    strlen(message), " (is AWS_REGION=%s the bucket's region?)",
		    s->region);
	err_set(&r->err, s3_classify_reply(r->method, r->status, r->code),
	    "%s %s: HTTP %ld%s%s%s%s",
	    r->method, r->key, r->status, r->code[0] ? " " : "", r->code,
	    message[0] ? ": " : "", message);
}

static void
collect(struct s3 *s)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(s->multi, &left)) != NULL) {
		struct s3_req *r = NULL;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		conclude(s, r, m->data.result);
		curl_multi_remove_handle(s->multi, m->easy_handle);
		give_easy(s, m->easy_handle);
		((struct req_priv *)r->priv)->easy = NULL;
		forget_running(s, r);
		push_done(s, r);
	}
}

/*
 * curl tells which sockets to watch, and for what (CURL_POLL_IN, _OUT,
 * _INOUT, _REMOVE); s3_wait polls them. A transfer's sockets are removed
 * when it ends: an idle connection in curl's cache is not watched.
 */
static int
sock_cb(CURL *easy, curl_socket_t fd, int what, void *arg, void *sockp)
{
	struct s3 *s = arg;
	size_t i;

	for (i = 0; i < s->nsocks && s->socks[i].fd != fd; i++)
		;
	if (what == CURL_POLL_REMOVE) {
		if (i < s->nsocks)
			s->socks[i] = s->socks[--s->nsocks];
		return 0;
	}
	if (i == s->nsocks) {
		if (s->nsocks == s->capsocks) {
			s->capsocks = s->capsocks ? s->capsocks * 2 : 16;
			s->socks = xrealloc(s->socks, s->capsocks *
			    sizeof(*s->socks));
		}
		s->socks[s->nsocks++].fd = fd;
	}
	s->socks[i].events = (short)((what & CURL_POLL_IN ? POLLIN : 0) |
	    (what & CURL_POLL_OUT ? POLLOUT : 0));
	s->socks[i].revents = 0;
	return 0;
}

/* What poll saw on a socket, as curl_multi_socket_action's bits. */
static int
select_bits(short revents)
{
	return (revents & (POLLIN | POLLHUP) ? CURL_CSELECT_IN : 0) |
	    (revents & POLLOUT ? CURL_CSELECT_OUT : 0) |
	    (revents & (POLLERR | POLLNVAL) ? CURL_CSELECT_ERR : 0);
}

/* 1 when curl still watches p's socket for the events it was polled for. */
static int
still_watched(const struct s3 *s, const struct pollfd *p)
{
	size_t i;

	for (i = 0; i < s->nsocks; i++)
		if (s->socks[i].fd == p->fd)
			return s->socks[i].events == p->events;
	return 0;
}

/*
 * One turn: poll the sockets curl watches (and wake_fd) for at most
 * timeout_ms or curl's next timer, then run curl for the sockets that
 * are ready and the timers that are due. curl_multi_perform would run
 * every transfer each turn, and look at each one's socket with a poll
 * of its own (5-8 polls a 4 KiB file, issue 11).
 */
int
s3_wait(struct s3 *s, int timeout_ms, int wake_fd)
{
	size_t n, i;
	long curl_ms = -1;
	int still, ready, rc = 0;
	CURLMcode mc;

	if (s->ndone > 0)
		timeout_ms = 0;
	if (s->bw_cap != 0 && s->nrunning > 0 && timeout_ms > 10)
		timeout_ms = 10;	/* the bucket refills meanwhile */
	if (s->digest_paused > 0 && digest_round(s) > 0)
		timeout_ms = 0;		/* a stream has bytes to send */
	else if (s->digest_paused > 0 && timeout_ms > LEAD_POLL_MS)
		timeout_ms = LEAD_POLL_MS;	/* a hasher's progress pokes no
						   one: look again soon */
	if (curl_multi_timeout(s->multi, &curl_ms) == CURLM_OK &&
	    curl_ms >= 0 && curl_ms < timeout_ms)
		timeout_ms = (int)curl_ms;
	if (s->capready < s->nsocks + 1) {
		s->capready = s->nsocks + 16;
		s->ready = xrealloc(s->ready, s->capready * sizeof(*s->ready));
	}
	n = s->nsocks;
	if (n > 0)	/* no socket yet: socks is NULL */
		memcpy(s->ready, s->socks, n * sizeof(*s->ready));
	if (wake_fd >= 0)
		s->ready[n++] = (struct pollfd){ wake_fd, POLLIN, 0 };
	ready = poll(s->ready, (nfds_t)n, timeout_ms);	/* < 0: no limit */
	if (ready < 0 && errno != EINTR)
		return -1;
	bw_round(s);
	/* The set is a copy: curl may change its sockets meanwhile. A
	 * socket it no longer watches as polled is skipped: its number may
	 * already name a new connection, which the old one's error flags
	 * would fail. */
	for (i = 0; ready > 0 && i < n; i++) {
		if (s->ready[i].fd == wake_fd || s->ready[i].revents == 0 ||
		    !still_watched(s, &s->ready[i]))
			continue;
		mc = curl_multi_socket_action(s->multi, s->ready[i].fd,
		    select_bits(s->ready[i].revents), &still);
		if (mc != CURLM_OK)
			rc = -1;
	}
	if (curl_multi_timeout(s->multi, &curl_ms) == CURLM_OK &&
	    curl_ms == 0) {
		mc = curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0,
		    &still);
		if (mc != CURLM_OK)
			rc = -1;
	}
	collect(s);
	return rc;
}

struct s3_req *
s3_done(struct s3 *s)
{
	struct s3_req *r;

	if (s->ndone == 0)
		return NULL;
	r = s->done[0];
	memmove(s->done, s->done + 1, (s->ndone - 1) * sizeof(*s->done));
	s->ndone--;
	return r;
}

int
s3_perform(struct s3 *s, struct s3_req *r)
{
	struct s3_req *d;

	if (s3_start(s, r) < 0)
		return -1;
	for (;;) {
		if (s3_wait(s, 1000, -1) < 0)
			break;
		while ((d = s3_done(s)) != NULL) {
			if (d == r)
				goto out;
			/* Not ours: should not happen with a private client. */
		}
	}
out:
	s3_req_clear(r);
	return r->err.cls == ERR_NONE ? 0 : -1;
}

char *
s3_presign(struct s3 *s, const char *key, long expires)
{
	char *path = object_path(s, key);
	struct sigv4_request sr = {
		.method = "GET", .host = s->host, .path = path,
		.region = s->region, .service = "s3",
		.time = time(NULL) + s->clock_offset,
	};
	struct buf url = {0}, query = {0};
	struct creds_val cv;
	struct sigv4_creds sc;
	struct err e = {0};

	if (creds_get(s->creds, &cv, &e) < 0) {
		free(path);
		return NULL;
	}
	sc = (struct sigv4_creds){ cv.access_key, cv.secret_key,
	    cv.token[0] ? cv.token : NULL };
	sigv4_presign(&sr, &sc, expires, &query);
	memset(&cv, 0, sizeof(cv));
	buf_printf(&url, "%s://%s", s->scheme, s->host);
	sigv4_uri_encode(&url, path, 1);
	buf_printf(&url, "?%s", query.data);
	buf_free(&query);
	free(path);
	return buf_take(&url);
}
