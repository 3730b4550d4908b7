/*
 * sigv4.h - AWS Signature Version 4 for S3, header and query-string forms.
 *
 * The signer is pure: it takes the request's parts and a time, and returns
 * strings. It never sees a socket, so the unit tests reproduce AWS's
 * published vectors byte for byte, and presigned URLs come from the same
 * code as signed requests.
 *
 * Paths and query parameters are passed decoded; the signer encodes them
 * the way S3 expects (RFC 3986 unreserved characters kept, everything else
 * %XX in uppercase, '/' kept in paths), and callers send the encoded path
 * the signer returns, so what is signed is exactly what goes on the wire.
 */
#ifndef OUTBOXD_SIGV4_H
#define OUTBOXD_SIGV4_H

#include <stddef.h>
#include <time.h>

#include "base/util.h"

struct sigv4_creds {
	const char *access_key;		/* AWS_ACCESS_KEY_ID */
	const char *secret_key;		/* AWS_SECRET_ACCESS_KEY, never logged */
	const char *session_token;	/* AWS_SESSION_TOKEN or NULL */
};

/* A header or query parameter: name and value, both unencoded. */
struct sigv4_pair {
	const char *name;
	const char *value;
};

struct sigv4_request {
	const char *method;		/* "PUT", "GET", ... */
	const char *host;		/* the Host header's value */
	const char *path;		/* decoded, starting with '/' */
	const struct sigv4_pair *query;	/* decoded parameters, any order */
	size_t n_query;
	const struct sigv4_pair *headers; /* signed besides host, x-amz-date */
	size_t n_headers;
	const char *payload_hash;	/* hex SHA-256 or "UNSIGNED-PAYLOAD" */
	const char *region;		/* "us-east-1" */
	const char *service;		/* "s3" */
	time_t time;			/* the signing time, UTC seconds */
};

/* Appends s to b percent-encoded as SigV4 wants; '/' is kept when
 * keep_slash is set (paths) and encoded otherwise (query strings). */
void sigv4_uri_encode(struct buf *b, const char *s, int keep_slash);

/* "20130524T000000Z" for t, into out (at least 17 bytes). */
void sigv4_amz_date(time_t t, char *out);

/*
 * Signs r with header authentication. Fills auth (the Authorization
 * header's value) and amz_date (the x-amz-date header to send, 17 bytes).
 * When c->session_token is set the caller must also send it as the
 * x-amz-security-token header and list it in r->headers. Safe from any
 * thread. If canonical is not NULL it receives the canonical request.
 */
void sigv4_sign(const struct sigv4_request *r, const struct sigv4_creds *c,
    struct buf *auth, char *amz_date, struct buf *canonical);

/*
 * Presigns r (its headers other than host are not signed; payload is
 * UNSIGNED-PAYLOAD) for expires seconds. Appends the complete encoded
 * query string, X-Amz-Signature last, to query. r->query may hold extra
 * parameters (response-content-type, ...) that are signed too.
 */
void sigv4_presign(const struct sigv4_request *r, const struct sigv4_creds *c,
    long expires, struct buf *query);

#endif
