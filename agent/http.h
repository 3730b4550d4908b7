/*
 * http.h - the optional HTTP endpoint (OUTBOXD_HTTP_LISTEN) for
 * Prometheus and supervisors other than systemd (Kubernetes probes):
 *
 *   GET /metrics   the metrics text (metrics.h)
 *   GET /healthz   200 while the watcher and the sync thread are turning,
 *                  503 (with the reason) otherwise
 *   GET /readyz    200 once the start-up rescan is journaled, else 503
 *
 * Nothing else: another method is 405, another path 404, a request with
 * a body (Content-Length other than 0, Transfer-Encoding) 400, a request
 * head over 8 KiB 431. One request per connection (Connection: close).
 * At most HTTP_MAX_CONN connections at once (the next is told 503 and
 * closed), each given HTTP_TIMEOUT_MS in all.
 *
 * The server runs in its own thread and asks its source for answers
 * through callbacks, which must not block (they read atomics and copies
 * made under a mutex held only to copy); it never touches the outbox, so
 * a slow or hostile client can never hold back the sync thread.
 */
#ifndef OUTBOXD_HTTP_H
#define OUTBOXD_HTTP_H

#include <stddef.h>

#include "base/util.h"

#define HTTP_MAX_CONN	16
#define HTTP_TIMEOUT_MS	5000

/* What the server asks; called from the server's thread. */
struct http_source {
	/* The metrics text (caller frees), or NULL while none is known. */
	char *(*metrics)(void *arg);
	/* 1 when healthy; else 0 with why filled (one line). */
	int (*healthy)(void *arg, char *why, size_t n);
	/* 1 once ready. */
	int (*ready)(void *arg);
	void *arg;
};

struct http;

/* Binds and listens on spec (listen.h); a stale Unix socket file is
 * replaced. NULL with e. Call before http_start. */
struct http *http_open(const char *spec, struct err *e);
/* Starts serving src in a new thread. 0, or -1 with e. */
int http_start(struct http *h, const struct http_source *src, struct err *e);
/* Stops the thread, closes every connection, removes a Unix socket file.
 * NULL is a no-op. */
void http_free(struct http *h);

#endif
