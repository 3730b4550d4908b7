/*
 * sigv4.c - AWS Signature Version 4, following the four tasks of AWS's
 * "Create a signed AWS API request" page:
 *
 *   1. the canonical request: method, encoded path, sorted encoded query,
 *      lowercase sorted headers with trimmed values, the signed header
 *      list, and the payload hash;
 *   2. the string to sign: algorithm, timestamp, credential scope and the
 *      hex SHA-256 of the canonical request;
 *   3. the signing key: HMAC-SHA256 chained over "AWS4"+secret, date,
 *      region, service and "aws4_request";
 *   4. the signature: hex HMAC of the string to sign with that key, placed
 *      either in the Authorization header or in X-Amz-Signature.
 *
 * S3 differs from other services in two ways honoured here: paths are
 * encoded once (not normalised, not double-encoded), and the payload hash is
 * the x-amz-content-sha256 header's value.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "agent/s3/sigv4.h"

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"

void
sigv4_uri_encode(struct buf *b, const char *s, int keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	const char *run = s;

	/* Runs of characters kept go in one append (a key is mostly
	 * those: twice a request, signed and sent). */
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[3];

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_' ||
		    c == '.' || c == '~' || (c == '/' && keep_slash))
			continue;
		if (s > run)
			buf_append(b, run, (size_t)(s - run));
		esc[0] = '%';
		esc[1] = hex[c >> 4];
		esc[2] = hex[c & 15];
		buf_append(b, esc, 3);
		run = s + 1;
	}
	if (s > run)
		buf_append(b, run, (size_t)(s - run));
}

void
sigv4_amz_date(time_t t, char *out)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

/* A header prepared for the canonical form. */
struct canon_header {
	char *name;		/* lowercase */
	char *value;		/* trimmed, inner runs of spaces collapsed */
};

static int
canon_header_cmp(const void *a, const void *b)
{
	const struct canon_header *x = a, *y = b;

	return strcmp(x->name, y->name);
}

/* Copies s lowercased into dst; returns the byte after its NUL. */
static char *
lowercase_into(char *dst, const char *s)
{
	for (; *s != '\0'; s++)
		*dst++ = *s >= 'A' && *s <= 'Z' ? (char)(*s - 'A' + 'a') : *s;
	*dst = '\0';
	return dst + 1;
}

/* Copies s into dst trimmed, inner runs of blanks as one space (at most
 * strlen(s) + 1 bytes); returns the byte after its NUL. */
static char *
trim_into(char *dst, const char *s)
{
	char *q = dst;
	int space = 0;

	while (*s == ' ' || *s == '\t')
		s++;
	for (; *s != '\0'; s++) {
		if (*s == ' ' || *s == '\t') {
			space = 1;
			continue;
		}
		if (space && q > dst)
			*q++ = ' ';
		space = 0;
		*q++ = *s;
	}
	*q = '\0';
	return q + 1;
}

/* Encoded "name=value" items sorted by name, then value. */
static int
query_item_cmp(const void *a, const void *b)
{
	const char *x = *(const char *const *)a, *y = *(const char *const *)b;
	size_t nx = strcspn(x, "="), ny = strcspn(y, "=");
	int c = strncmp(x, y, nx < ny ? nx : ny);

	if (c != 0)
		return c;
	if (nx != ny)
		return nx < ny ? -1 : 1;
	return strcmp(x + nx, y + ny);
}

static void
canonical_query(struct buf *out, const struct sigv4_pair *q, size_t n)
{
	char **items = xcalloc(n, sizeof(*items));
	size_t i;

	for (i = 0; i < n; i++) {
		struct buf b = {0};

		sigv4_uri_encode(&b, q[i].name, 0);
		buf_append(&b, "=", 1);
		sigv4_uri_encode(&b, q[i].value ? q[i].value : "", 0);
		items[i] = buf_take(&b);
	}
	qsort(items, n, sizeof(*items), query_item_cmp);
	for (i = 0; i < n; i++) {
		if (i > 0)
			buf_append(out, "&", 1);
		buf_puts(out, items[i]);
		free(items[i]);
	}
	free(items);
}

/*
 * SHA-256 and HMAC-SHA256 on the digest fetched once (sha256_evp): the
 * one-shot SHA256() and HMAC() of OpenSSL 3 look the algorithm up at
 * every call (about 15,000 and 24,000 instructions each, more than the
 * hashing of a request's few hundred bytes: most of the signing, issue
 * 11).
 */
static void
sha256_bin(EVP_MD_CTX *c, const void *p, size_t n, unsigned char *out)
{
	if (EVP_DigestInit_ex(c, sha256_evp(), NULL) != 1 ||
	    EVP_DigestUpdate(c, p, n) != 1 ||
	    EVP_DigestFinal_ex(c, out, NULL) != 1)
		abort();
}

static void
sha256_hex(EVP_MD_CTX *c, const void *p, size_t n, char *out)
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	sha256_bin(c, p, n, md);
	hex_encode(md, sizeof(md), out);
}

/* HMAC-SHA256 (RFC 2104): H(K ^ opad, H(K ^ ipad, msg)). */
static void
hmac(EVP_MD_CTX *c, const void *key, size_t keylen, const char *msg,
    unsigned char *out)
{
	unsigned char k[64] = {0}, pad[64], inner[SHA256_DIGEST_LENGTH];
	size_t i;

	if (keylen > sizeof(k))
		sha256_bin(c, key, keylen, k);
	else
		memcpy(k, key, keylen);
	for (i = 0; i < sizeof(pad); i++)
		pad[i] = k[i] ^ 0x36;
	if (EVP_DigestInit_ex(c, sha256_evp(), NULL) != 1 ||
	    EVP_DigestUpdate(c, pad, sizeof(pad)) != 1 ||
	    EVP_DigestUpdate(c, msg, strlen(msg)) != 1 ||
	    EVP_DigestFinal_ex(c, inner, NULL) != 1)
		abort();
	for (i = 0; i < sizeof(pad); i++)
		pad[i] = k[i] ^ 0x5c;
	if (EVP_DigestInit_ex(c, sha256_evp(), NULL) != 1 ||
	    EVP_DigestUpdate(c, pad, sizeof(pad)) != 1 ||
	    EVP_DigestUpdate(c, inner, sizeof(inner)) != 1 ||
	    EVP_DigestFinal_ex(c, out, NULL) != 1)
		abort();
	OPENSSL_cleanse(k, sizeof(k));
	OPENSSL_cleanse(pad, sizeof(pad));
	OPENSSL_cleanse(inner, sizeof(inner));
}

/* Task 3: the signing key for a date (YYYYMMDD), region and service. */
static void
signing_key(EVP_MD_CTX *c, const char *secret, const char *date,
    const char *region, const char *service, unsigned char *key)
{
	char *k0 = xasprintf("AWS4%s", secret);
	unsigned char k1[32], k2[32], k3[32];

	hmac(c, k0, strlen(k0), date, k1);
	hmac(c, k1, sizeof(k1), region, k2);
	hmac(c, k2, sizeof(k2), service, k3);
	hmac(c, k3, sizeof(k3), "aws4_request", key);
	OPENSSL_cleanse(k0, strlen(k0));
	free(k0);
	OPENSSL_cleanse(k1, sizeof(k1));
	OPENSSL_cleanse(k2, sizeof(k2));
	OPENSSL_cleanse(k3, sizeof(k3));
}

/*
 * The last signing key this thread derived, for the next request of the
 * same day and scope: four HMACs less per request (each one fetches its
 * algorithm anew; together about a twelfth of outboxd's CPU on small files,
 * issue 11). The secret is known by its SHA-256 only, never kept.
 */
static _Thread_local struct {
	int set;
	char date[9], region[64], service[16];
	unsigned char secret_sha[32];
	unsigned char key[32];
} key_cache;

static void
signing_key_cached(EVP_MD_CTX *c, const char *secret, const char *date,
    const char *region, const char *service, unsigned char *key)
{
	unsigned char sha[32];

	sha256_bin(c, secret, strlen(secret), sha);
	if (key_cache.set && strcmp(key_cache.date, date) == 0 &&
	    strcmp(key_cache.region, region) == 0 &&
	    strcmp(key_cache.service, service) == 0 &&
	    CRYPTO_memcmp(key_cache.secret_sha, sha, sizeof(sha)) == 0) {
		memcpy(key, key_cache.key, 32);
		return;
	}
	signing_key(c, secret, date, region, service, key);
	if (strlen(date) >= sizeof(key_cache.date) ||
	    strlen(region) >= sizeof(key_cache.region) ||
	    strlen(service) >= sizeof(key_cache.service))
		return;		/* not kept: too long for the cache */
	strcpy(key_cache.date, date);
	strcpy(key_cache.region, region);
	strcpy(key_cache.service, service);
	memcpy(key_cache.secret_sha, sha, sizeof(sha));
	memcpy(key_cache.key, key, 32);
	key_cache.set = 1;
}

/* The credential scope: date/region/service/aws4_request. Appends, not
 * buf_printf: two a request, each formatted twice into an empty buffer
 * (issue 11). */
static void
append_scope(struct buf *b, const char *date, const char *region,
    const char *service)
{
	buf_puts(b, date);
	buf_append(b, "/", 1);
	buf_puts(b, region);
	buf_append(b, "/", 1);
	buf_puts(b, service);
	buf_puts(b, "/aws4_request");
}

/*
 * Tasks 1, 2 and 4: builds the canonical request from the given headers
 * (host and x-amz-date are added here when add_date is set), and writes the
 * signature's hex into sig (65 bytes) and the signed header list into
 * signed_out.
 */
static void
sign_common(const struct sigv4_request *r, const struct sigv4_creds *c,
    const struct sigv4_pair *query, size_t n_query, int add_date,
    const char *amz_date, struct buf *signed_out, char *sig,
    struct buf *canonical_out)
{
	size_t n = r->n_headers + 2, i, nh = 0, room;
	struct canon_header *h = xcalloc(n, sizeof(*h));
	struct buf creq = {0}, sts = {0};
	char *text, *at;
	char date[9], creq_hash[65];
	unsigned char key[32], mac[32];
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	if (md == NULL)
		abort();

	memcpy(date, amz_date, 8);
	date[8] = '\0';

	/* Every name and value in one allocation (two each, twenty a
	 * request, before; issue 11). */
	room = sizeof("host") + strlen(r->host) + 1 +
	    sizeof("x-amz-date") + strlen(amz_date) + 1;
	for (i = 0; i < r->n_headers; i++)
		room += strlen(r->headers[i].name) + 1 +
		    strlen(r->headers[i].value) + 1;
	at = text = xmalloc(room);
	h[nh].name = at;
	at = lowercase_into(at, "host");
	h[nh].value = at;
	at = trim_into(at, r->host);
	nh++;
	if (add_date) {
		h[nh].name = at;
		at = lowercase_into(at, "x-amz-date");
		h[nh].value = at;
		at = trim_into(at, amz_date);
		nh++;
	}
	for (i = 0; i < r->n_headers; i++) {
		h[nh].name = at;
		at = lowercase_into(at, r->headers[i].name);
		h[nh].value = at;
		at = trim_into(at, r->headers[i].value);
		nh++;
	}
	qsort(h, nh, sizeof(*h), canon_header_cmp);

	/* Task 1: the canonical request. */
	buf_reserve(&creq, 1024);
	buf_reserve(signed_out, 256);
	buf_puts(&creq, r->method);
	buf_append(&creq, "\n", 1);
	sigv4_uri_encode(&creq, r->path, 1);
	buf_append(&creq, "\n", 1);
	canonical_query(&creq, query, n_query);
	buf_append(&creq, "\n", 1);
	/* Appends, not buf_printf: this runs for every header of every
	 * request (issue 11: formatting was a third of the signing). */
	for (i = 0; i < nh; i++) {
		buf_puts(&creq, h[i].name);
		buf_append(&creq, ":", 1);
		buf_puts(&creq, h[i].value);
		buf_append(&creq, "\n", 1);
	}
	buf_append(&creq, "\n", 1);
	for (i = 0; i < nh; i++) {
		if (i > 0)
			buf_append(signed_out, ";", 1);
		buf_puts(signed_out, h[i].name);
	}
	buf_puts(&creq, signed_out->data);
	buf_append(&creq, "\n", 1);
	buf_puts(&creq, r->payload_hash);

	/* Task 2: the string to sign. */
	sha256_hex(md, creq.data, creq.len, creq_hash);
	buf_reserve(&sts, 160);
	buf_puts(&sts, SIGV4_ALGORITHM "\n");
	buf_puts(&sts, amz_date);
	buf_append(&sts, "\n", 1);
	append_scope(&sts, date, r->region, r->service);
	buf_append(&sts, "\n", 1);
	buf_puts(&sts, creq_hash);

	/* Tasks 3 and 4: the key and the signature. */
	signing_key_cached(md, c->secret_key, date, r->region, r->service, key);
	hmac(md, key, sizeof(key), sts.data, mac);
	EVP_MD_CTX_free(md);
	hex_encode(mac, sizeof(mac), sig);
	OPENSSL_cleanse(key, sizeof(key));

	if (canonical_out != NULL)
		buf_append(canonical_out, creq.data, creq.len);
	free(text);
	free(h);
	buf_free(&creq);
	buf_free(&sts);
}

void
sigv4_sign(const struct sigv4_request *r, const struct sigv4_creds *c,
    struct buf *auth, char *amz_date, struct buf *canonical)
{
	struct buf signed_headers = {0};
	char sig[65], date[9];

	sigv4_amz_date(r->time, amz_date);
	sign_common(r, c, r->query, r->n_query, 1, amz_date, &signed_headers,
	    sig, canonical);
	memcpy(date, amz_date, 8);
	date[8] = '\0';
	buf_reserve(auth, 200 + signed_headers.len);
	buf_puts(auth, SIGV4_ALGORITHM " Credential=");
	buf_puts(auth, c->access_key);
	buf_append(auth, "/", 1);
	append_scope(auth, date, r->region, r->service);
	buf_puts(auth, ", SignedHeaders=");
	buf_puts(auth, signed_headers.data);
	buf_puts(auth, ", Signature=");
	buf_puts(auth, sig);
	buf_free(&signed_headers);
}

void
sigv4_presign(const struct sigv4_request *r, const struct sigv4_creds *c,
    long expires, struct buf *query)
{
	size_t n = r->n_query + 6, i, nq = 0;
	struct sigv4_pair *q = xcalloc(n, sizeof(*q));
	struct sigv4_request hr = *r;
	struct buf signed_headers = {0}, canon = {0};
	char amz_date[17], date[9], sig[65], *credential, *expires_s;

	sigv4_amz_date(r->time, amz_date);
	memcpy(date, amz_date, 8);
	date[8] = '\0';
	credential = xasprintf("%s/%s/%s/%s/aws4_request", c->access_key,
	    date, r->region, r->service);
	expires_s = xasprintf("%ld", expires);

	for (i = 0; i < r->n_query; i++)
		q[nq++] = r->query[i];
	q[nq++] = (struct sigv4_pair){ "X-Amz-Algorithm", SIGV4_ALGORITHM };
	q[nq++] = (struct sigv4_pair){ "X-Amz-Credential", credential };
	q[nq++] = (struct sigv4_pair){ "X-Amz-Date", amz_date };
	q[nq++] = (struct sigv4_pair){ "X-Amz-Expires", expires_s };
	if (c->session_token != NULL)
		q[nq++] = (struct sigv4_pair){ "X-Amz-Security-Token",
		    c->session_token };
	q[nq++] = (struct sigv4_pair){ "X-Amz-SignedHeaders", "host" };

	/* Only the host header is signed in a presigned URL. */
	hr.headers = NULL;
	hr.n_headers = 0;
	hr.payload_hash = "UNSIGNED-PAYLOAD";
	sign_common(&hr, c, q, nq, 0, amz_date, &signed_headers, sig, NULL);

	canonical_query(&canon, q, nq);
	buf_append(query, canon.data, canon.len);
	buf_printf(query, "&X-Amz-Signature=%s", sig);

	buf_free(&canon);
	buf_free(&signed_headers);
	free(credential);
	free(expires_s);
	free(q);
}
