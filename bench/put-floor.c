/*
 * The floor of W1: what any client that must do what outboxd does on the
 * wire spends per small file, with nothing else. For each regular file of
 * DIR it opens and reads the file, hashes it (SHA-256, as SigV4 with a
 * signed payload wants), signs a PUT with outboxd's own signer and sends it
 * with libcurl's multi interface, CONCURRENCY at a time over kept-alive
 * connections, as outboxd does. No outbox, no journal, no retries, no
 * checksum header, no logging: the bound below which outboxd cannot go with
 * libcurl on this machine, and so the measure of what the outbox costs.
 *
 *   make bench/put-floor
 *   AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
 *       bench/put-floor ENDPOINT BUCKET PREFIX DIR [CONCURRENCY] [REGION]
 *
 * Stores DIR/NAME as s3://BUCKET/PREFIX/NAME (NAME as it is: bench files
 * have plain names). Exits 0 when every PUT answered 200, 1 otherwise, 64
 * on bad arguments. Not a test and not part of outboxd: bench/run.sh runs
 * it as W1's "floor" row.
 */
#include "config.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/s3/sigv4.h"
#include "base/util.h"

#define MAX_FILE	(16 * 1024 * 1024)

struct slot {
	CURL *h;
	struct curl_slist *hdrs;
	char *body;
	size_t len;
	char *name;
};

static const char *endpoint, *bucket, *prefix, *region;
static char host[256];
static struct sigv4_creds creds;
static int dirfd_;

static size_t
sink(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return size * n;
}

/* Reads NAME whole; NULL (and a message) when it cannot. */
static char *
slurp(const char *name, size_t *len)
{
	struct stat st;
	char *b;
	ssize_t got;
	size_t off = 0;
	int fd = openat(dirfd_, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size > MAX_FILE) {
		fprintf(stderr, "put-floor: %s: %s\n", name,
		    fd < 0 ? strerror(errno) : "too large or unreadable");
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	b = xmalloc((size_t)st.st_size + 1);
	while (off < (size_t)st.st_size &&
	    (got = read(fd, b + off, (size_t)st.st_size - off)) > 0)
		off += (size_t)got;
	close(fd);
	*len = off;
	return b;
}

static int
start(CURLM *m, struct slot *s, const char *name)
{
	unsigned char md[32];
	char hex[65], amz[17], url[4096];
	struct buf path = {0}, auth = {0}, hv = {0};
	struct sigv4_pair hdr[1];
	struct sigv4_request r = {0};
	unsigned int i;

	if ((s->body = slurp(name, &s->len)) == NULL)
		return -1;
	s->name = xstrdup(name);
	EVP_Digest(s->body, s->len, md, NULL, EVP_sha256(), NULL);
	for (i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	buf_printf(&path, "/%s/%s/%s", bucket, prefix, name);
	hdr[0].name = "x-amz-content-sha256";
	hdr[0].value = hex;
	r.method = "PUT";
	r.host = host;
	r.path = path.data;
	r.headers = hdr;
	r.n_headers = 1;
	r.payload_hash = hex;
	r.region = region;
	r.service = "s3";
	r.time = time(NULL);
	sigv4_sign(&r, &creds, &auth, amz, NULL);
	snprintf(url, sizeof(url), "%s%s", endpoint, path.data);
	buf_printf(&hv, "Authorization: %s", auth.data);
	s->hdrs = curl_slist_append(NULL, hv.data);
	buf_reset(&hv);
	buf_printf(&hv, "x-amz-date: %s", amz);
	s->hdrs = curl_slist_append(s->hdrs, hv.data);
	buf_reset(&hv);
	buf_printf(&hv, "x-amz-content-sha256: %s", hex);
	s->hdrs = curl_slist_append(s->hdrs, hv.data);
	s->hdrs = curl_slist_append(s->hdrs, "Expect:");
	buf_free(&hv);
	buf_free(&auth);
	buf_free(&path);
	curl_easy_setopt(s->h, CURLOPT_URL, url);
	/* The body from memory, as outboxd sends a small file: curl writes
	 * the headers and the body in one send. */
	curl_easy_setopt(s->h, CURLOPT_CUSTOMREQUEST, "PUT");
	curl_easy_setopt(s->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->len);
	curl_easy_setopt(s->h, CURLOPT_POSTFIELDS, s->body);
	/* No signal handlers around each name lookup (outboxd sets it too):
	 * without it curl calls sigaction some 30 times a file. */
	curl_easy_setopt(s->h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(s->h, CURLOPT_WRITEFUNCTION, sink);
	curl_easy_setopt(s->h, CURLOPT_HTTPHEADER, s->hdrs);
	curl_easy_setopt(s->h, CURLOPT_PRIVATE, s);
	curl_easy_setopt(s->h, CURLOPT_NOPROXY, "*");
	curl_multi_add_handle(m, s->h);
	return 0;
}

static void
finish(CURLM *m, struct slot *s)
{
	curl_multi_remove_handle(m, s->h);
	curl_slist_free_all(s->hdrs);
	s->hdrs = NULL;
	free(s->body);
	s->body = NULL;
	free(s->name);
	s->name = NULL;
}

static int
by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int
main(int argc, char **argv)
{
	struct slot *slots;
	char **names = NULL;
	size_t n = 0, cap = 0, next = 0, ok = 0, bad = 0;
	int conc, i, running;
	const char *h, *e;
	DIR *d;
	struct dirent *de;
	CURLM *m;

	if (argc < 5 || argc > 7) {
		fprintf(stderr, "usage: put-floor ENDPOINT BUCKET PREFIX DIR "
		    "[CONCURRENCY] [REGION]\n");
		return 64;
	}
	endpoint = argv[1];
	bucket = argv[2];
	prefix = argv[3];
	conc = argc > 5 ? atoi(argv[5]) : 16;
	region = argc > 6 ? argv[6] : "us-east-1";
	creds.access_key = getenv("AWS_ACCESS_KEY_ID");
	creds.secret_key = getenv("AWS_SECRET_ACCESS_KEY");
	h = strstr(endpoint, "://");
	if (conc < 1 || conc > 256 || creds.access_key == NULL ||
	    creds.secret_key == NULL || h == NULL) {
		fprintf(stderr, "put-floor: need an http(s):// ENDPOINT, "
		    "CONCURRENCY 1-256 and AWS_ACCESS_KEY_ID, "
		    "AWS_SECRET_ACCESS_KEY\n");
		return 64;
	}
	h += 3;
	e = strchr(h, '/');
	snprintf(host, sizeof(host), "%.*s", e ? (int)(e - h) : (int)strlen(h),
	    h);
	if ((d = opendir(argv[4])) == NULL) {
		fprintf(stderr, "put-floor: %s: %s\n", argv[4], strerror(errno));
		return 64;
	}
	dirfd_ = dirfd(d);
	while ((de = readdir(d)) != NULL) {
		if (de->d_type != DT_REG)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 1024;
			names = xrealloc(names, cap * sizeof(*names));
		}
		names[n++] = xstrdup(de->d_name);
	}
	qsort(names, n, sizeof(*names), by_name);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	m = curl_multi_init();
	curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)conc);
	slots = xcalloc((size_t)conc, sizeof(*slots));
	for (i = 0; i < conc; i++)
		slots[i].h = curl_easy_init();
	for (i = 0; i < conc && next < n; i++)
		while (next < n && start(m, &slots[i], names[next++]) < 0)
			bad++;
	do {
		CURLMsg *msg;
		int left;

		curl_multi_perform(m, &running);
		while ((msg = curl_multi_info_read(m, &left)) != NULL) {
			struct slot *s;
			long code = 0;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE,
			    (char **)&s);
			curl_easy_getinfo(msg->easy_handle,
			    CURLINFO_RESPONSE_CODE, &code);
			if (msg->data.result == CURLE_OK && code == 200)
				ok++;
			else {
				bad++;
				fprintf(stderr, "put-floor: %s: %s (HTTP %ld)\n",
				    s->name, curl_easy_strerror(
				    msg->data.result), code);
			}
			finish(m, s);
			while (next < n && start(m, s, names[next++]) < 0)
				bad++;
			running = 1;
		}
		if (running)
			curl_multi_poll(m, NULL, 0, 1000, NULL);
	} while (running);
	for (i = 0; i < conc; i++)
		curl_easy_cleanup(slots[i].h);
	free(slots);
	curl_multi_cleanup(m);
	curl_global_cleanup();
	for (size_t k = 0; k < n; k++)
		free(names[k]);
	free(names);
	closedir(d);
	fprintf(stderr, "put-floor: %zu stored, %zu failed\n", ok, bad);
	return bad == 0 && ok == n ? 0 : 1;
}
