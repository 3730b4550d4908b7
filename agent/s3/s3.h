/*
 * s3.h - a thin S3 client on libcurl's multi interface, signed with our
 * own SigV4 signer (sigv4.h).
 *
 * One struct s3 belongs to the sync thread: it owns a CURLM handle that
 * drives every transfer at once, a pool of reusable easy handles (so
 * connections, DNS and TLS sessions are reused), and the clock offset
 * learned from RequestTimeTooSkewed replies. Requests are started with
 * s3_start, progress with s3_wait, and come back finished from s3_done.
 * Bodies are streamed from a file descriptor (pread at an offset) or from
 * memory; they are never copied whole.
 *
 * Secrets and signed URLs never reach a log line or an error message.
 */
#ifndef OUTBOXD_S3_H
#define OUTBOXD_S3_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "config/cfg.h"
#include "agent/s3/sigv4.h"
#include "base/util.h"

struct s3;

/* One request and, once finished, its outcome. The caller owns it and
 * keeps it alive until s3_done hands it back. */
struct s3_req {
	/* Set by the caller. */
	const char *method;		/* "PUT", "POST", "DELETE", "HEAD", "GET" */
	char *key;			/* object key, unencoded; owned by caller */
	struct sigv4_pair query[5];	/* e.g. partNumber, uploadId; a
					 * listing (s3_list) takes 5 */
	size_t n_query;
	int fd;				/* body from this file ..., or -1 */
	uint64_t offset, length;	/* ... these bytes of it */
	const unsigned char *mem;	/* body from memory when fd < 0 */
	char sha256[65];		/* hex SHA-256 of the body */
	char md5[25];			/* base64 MD5 of the body, "" for none */
	const char *content_type;	/* NULL for none */
	const char *content_disposition; /* NULL for none */
	const char *job_id;		/* x-amz-meta-job-id, or NULL */
	const char *file_sha256;	/* x-amz-meta-sha256, or NULL */
	int stream;			/* a PUT from fd sent aws-chunked with its
					   SHA-256 in a trailer: the caller
					   hashes it beside the send and sets
					   sha256 and stream_digest = 1 once
					   known (before or during the transfer;
					   the body waits, paused, at the
					   trailer until then), or -1 to abort
					   the transfer (no digest will come) */
	int stream_digest;		/* stream: 0 pending, 1 sha256 set, -1 */
	const atomic_uint_least64_t *stream_hashed;
					/* stream: bytes of the body the
					   caller's hasher has read, or NULL;
					   the send keeps within STREAM_LEAD
					   of it, so a slow hasher slows the
					   body instead of leaving it paused
					   at its trailer (curl counts a
					   paused upload as stalled) */
	size_t body_cap;		/* reply bytes kept, 0: 1 MiB */
	void *user;			/* the caller's */

	/* Filled when finished. */
	long status;			/* HTTP status, 0 when none came */
	char etag[128];			/* ETag header, quotes included */
	int kms;			/* server-side encryption was aws:kms */
	char meta_sha256[65];		/* x-amz-meta-sha256 of a HEAD, or "" */
	char checksum[64];		/* x-amz-checksum-sha256 of a HEAD (asked
					   for with checksum mode): base64, with
					   "-N" for a multipart object; or "" */
	int64_t content_length;		/* Content-Length of the reply, or -1 */
	struct buf body;		/* reply body (capped), for errors/XML */
	int body_over;			/* the reply was longer than the cap */
	struct err err;			/* cls ERR_NONE on success */
	char code[64];			/* S3 error code, "" when none */

	/* Private to s3.c. */
	void *priv;
};

/* Creates the client; NULL with e when curl cannot be set up. */
struct s3 *s3_new(const struct cfg *cfg, struct err *e);
/* Frees the client. Collect cancelled requests (s3_cancel_all, s3_done)
 * first: requests still in flight here are dropped without a word. */
void s3_free(struct s3 *s);

/* Starts r. Returns 0, or -1 with r->err set (then r is not in flight). */
int s3_start(struct s3 *s, struct s3_req *r);
/* Transfers in flight. */
int s3_running(const struct s3 *s);
/*
 * Drives transfers for up to timeout_ms, returning early when one
 * finishes or wake_fd (when >= 0) becomes readable. Returns 0 or -1.
 */
int s3_wait(struct s3 *s, int timeout_ms, int wake_fd);
/* A finished request, or NULL. Its easy handle is back in the pool. */
struct s3_req *s3_done(struct s3 *s);
/* Releases what s3_start allocated for r (after s3_done returned it). */
void s3_req_clear(struct s3_req *r);

/* Stops every request in flight; each comes back from s3_done with a
 * transient "cancelled" error, for its owner to release. */
void s3_cancel_all(struct s3 *s);

/* Runs one request to completion (for outboxctl and start-up checks). */
int s3_perform(struct s3 *s, struct s3_req *r);

/*
 * Presigns a GET of key valid for expires seconds; returns the URL, which
 * the caller frees, or NULL when there are no credentials. Used only by
 * outboxctl presign.
 */
char *s3_presign(struct s3 *s, const char *key, long expires);

/*
 * Tells what a failure means: ERR_TRANSIENT (retry with backoff) or
 * ERR_PERMANENT (the leg fails until an admin retries). status is the
 * HTTP status (0 when the transfer failed before a reply), code the S3
 * error code ("" when none). Pure; unit-tested.
 */
enum err_class s3_classify(long status, const char *code);
/*
 * s3_classify for a reply to method: S3 sends no body to a HEAD, so a
 * HEAD's bare 400 is taken for what it nearly always is, an expired or
 * malformed token or Authorization (the SDKs print "400 Bad Request"
 * there), and a bare 301 for the bucket's other region
 * (PermanentRedirect): refusals that pause the leg, not permanent
 * failures of the object (found by t-sim: expired-token-at-head, seed
 * 14000991; each failed a multipart upload whose Complete reply had been
 * lost).
 */
enum err_class s3_classify_reply(const char *method, long status,
    const char *code);

/*
 * Parses an S3 XML error body: fills code and message (truncated to fit).
 * Returns 0 when it was an <Error> document. Pure; fuzzed.
 */
int s3_parse_error(const char *xml, size_t len, char *code, size_t ncode,
    char *message, size_t nmessage);

/*
 * A listing's object keys are handed one at a time to an s3_key_fn: key
 * is decoded (len bytes, NUL-terminated, no NUL inside) unless raw is 1,
 * when it is the key as the server sent it because it did not decode
 * (a bad %-escape, or a NUL). Keys come from whoever can write to the
 * bucket: escape them before printing.
 */
typedef void s3_key_fn(void *arg, const char *key, size_t len, int raw);

/*
 * Parses one ListObjectsV2 page (ListBucketResult): calls each for every
 * <Contents><Key>, decoding it when the page says EncodingType url.
 * Returns 1 with token set when there are more pages, 0 after the last,
 * -1 when it is not a listing, or claims more pages without a token that
 * fits. Pure; unit-tested.
 */
int s3_parse_list(const char *xml, size_t len, s3_key_fn *each, void *arg,
    char *token, size_t ntoken);

/*
 * Lists the keys under prefix with ListObjectsV2, 1,000 to a page, asking
 * for URL-encoded keys, one page in memory at a time (each page's reply
 * is capped at 8 MiB). Returns the number of pages, or -1 with e (the
 * keys of the pages before the failing one were handed to each).
 */
long s3_list(struct s3 *s, const char *prefix, s3_key_fn *each, void *arg,
    struct err *e);

/*
 * The checksum S3 keeps for a body whose hex SHA-256 is hex: the base64 of
 * the binary digest (x-amz-checksum-sha256, <ChecksumSHA256>). out holds
 * 45 bytes. Returns -1 when hex is not 64 hex digits.
 */
int s3_checksum_b64(const char *hex, char out[45]);

/*
 * Judges a HEAD's answer against a local file's version (size, hex
 * SHA-256, the ETag outboxd recorded or NULL): 1 when S3 holds it. The
 * checksum S3 keeps decides where the object has a full-object one; a
 * composite one ("-N", multipart) covers the parts, not the file, so
 * x-amz-meta-sha256 decides there; the recorded ETag only when S3 returns
 * neither. Used by outboxctl verify and the scrub. Pure.
 */
int s3_head_matches(const struct s3_req *head, int64_t size,
    const char *sha256, const char *known_etag);

/* The clock offset in seconds applied when signing (server - local). */
long s3_clock_offset(const struct s3 *s);

/* The credentials the client signs with (creds.h; owned by the client,
 * safe to use from any thread while it lives). */
struct creds *s3_creds(struct s3 *s);

#endif
