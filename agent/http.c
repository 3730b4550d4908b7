/*
 * http.c - see http.h. One thread, one poll(2) loop over the listening
 * socket, an eventfd that asks it to stop, and up to HTTP_MAX_CONN
 * non-blocking connections. A connection reads its request head into a
 * fixed buffer, gets its whole answer built at once, writes it as the
 * socket takes it and is closed; one past its deadline is closed as it
 * is.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/http.h"
#include "base/listen.h"

#define HTTP_HEAD_MAX	8192	/* request line and headers */

struct conn {
	int fd;				/* -1: the slot is free */
	char head[HTTP_HEAD_MAX + 1];	/* what was read, NUL terminated */
	size_t nhead;
	char *out;			/* the answer, once built */
	size_t nout, sent;
	long long deadline;		/* monotonic ms */
};

struct http {
	int lfd;			/* the listening socket */
	int stop_fd;			/* eventfd: http_free asks to stop */
	char *unix_path;		/* to remove at the end, or NULL */
	struct http_source src;
	pthread_t tid;
	int started;
	struct conn conns[HTTP_MAX_CONN];
};

struct http *
http_open(const char *spec, struct err *e)
{
	struct listen_addr a;
	const char *why;
	struct http *h;
	int fd, one = 1;

	if (listen_parse(spec, &a, &why) < 0) {
		err_set(e, ERR_PERMANENT, "OUTBOXD_HTTP_LISTEN=%s: %s", spec, why);
		return NULL;
	}
	fd = socket(a.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd < 0) {
		err_sys(e, ERR_PERMANENT, "OUTBOXD_HTTP_LISTEN=%s: socket", spec);
		return NULL;
	}
	if (a.unix_path != NULL) {
		struct stat st;

		/* Left by an outboxd that died; the outbox lock says no other
		 * runs on this outbox. Anything but a socket stays. */
		if (lstat(a.unix_path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(a.unix_path);
	} else {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	}
	if (bind(fd, (struct sockaddr *)&a.sa, a.len) < 0 ||
	    listen(fd, HTTP_MAX_CONN) < 0) {
		err_sys(e, ERR_PERMANENT, "OUTBOXD_HTTP_LISTEN=%s: cannot listen",
		    spec);
		close(fd);
		return NULL;
	}
	h = xcalloc(1, sizeof(*h));
	h->lfd = fd;
	h->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	h->unix_path = a.unix_path ? xstrdup(a.unix_path) : NULL;
	for (int i = 0; i < HTTP_MAX_CONN; i++)
		h->conns[i].fd = -1;
	return h;
}

/* ---- answers -------------------------------------------------------------- */

static const char *
status_text(int code)
{
	switch (code) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 431: return "Request Header Fields Too Large";
	case 503: return "Service Unavailable";
	default: return "Error";
	}
}

static void
answer(struct conn *c, int code, const char *type, const char *body)
{
	struct buf b = {0};
	size_t n = strlen(body);

	buf_printf(&b, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n"
	    "Cache-Control: no-store\r\n%s\r\n", code, status_text(code), type,
	    n, code == 405 ? "Allow: GET\r\n" : "");
	buf_append(&b, body, n);
	c->nout = b.len;
	c->out = buf_take(&b);
	c->sent = 0;
}

static void
answer_text(struct conn *c, int code, const char *body)
{
	answer(c, code, "text/plain; charset=utf-8", body);
}

/* A header's value in the request head (case-insensitive name), or NULL. */
static const char *
header(const char *head, const char *name, size_t *vlen)
{
	size_t nl = strlen(name);
	const char *p = strchr(head, '\n');

	while (p != NULL && p[1] != '\0') {
		const char *line = p + 1, *end = strchr(line, '\n');

		if (end == NULL)
			break;
		if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
			const char *v = line + nl + 1;

			while (*v == ' ' || *v == '\t')
				v++;
			*vlen = (size_t)(end - v);
			while (*vlen > 0 && (v[*vlen - 1] == '\r' ||
			    v[*vlen - 1] == ' ' || v[*vlen - 1] == '\t'))
				(*vlen)--;
			return v;
		}
		p = end;
	}
	return NULL;
}

/* The request has no body: no Transfer-Encoding, Content-Length 0 or none,
 * and nothing read beyond the head. */
static int
bodiless(const struct conn *c, size_t head_len)
{
	const char *v;
	size_t n;

	if (header(c->head, "Transfer-Encoding", &n) != NULL)
		return 0;
	v = header(c->head, "Content-Length", &n);
	if (v != NULL && !(n == 1 && v[0] == '0'))
		return 0;
	return c->nhead == head_len;
}

static void
route(struct http *h, struct conn *c, size_t head_len)
{
	char method[16], target[256], version[16];
	char why[512];
	size_t q;

	if (sscanf(c->head, "%15[^ ] %255[^ ] %15[^\r\n]", method, target,
	    version) != 3 || strncmp(version, "HTTP/1.", 7) != 0) {
		answer_text(c, 400, "bad request line\n");
		return;
	}
	if (strcmp(method, "GET") != 0) {
		answer_text(c, 405, "only GET is served\n");
		return;
	}
	if (!bodiless(c, head_len)) {
		answer_text(c, 400, "a GET takes no body\n");
		return;
	}
	q = strcspn(target, "?");
	target[q] = '\0';
	if (strcmp(target, "/metrics") == 0) {
		char *text = h->src.metrics(h->src.arg);

		if (text == NULL)
			answer_text(c, 503, "no metrics yet\n");
		else
			answer(c, 200, "text/plain; version=0.0.4; "
			    "charset=utf-8", text);
		free(text);
	} else if (strcmp(target, "/healthz") == 0) {
		if (h->src.healthy(h->src.arg, why, sizeof(why) - 1)) {
			answer_text(c, 200, "ok\n");
		} else {
			strcat(why, "\n");
			answer_text(c, 503, why);
		}
	} else if (strcmp(target, "/readyz") == 0) {
		if (h->src.ready(h->src.arg))
			answer_text(c, 200, "ready\n");
		else
			answer_text(c, 503, "starting: the start-up rescan is "
			    "not journaled yet\n");
	} else {
		answer_text(c, 404, "not found: /metrics, /healthz and "
		    "/readyz are served\n");
	}
}

/* ---- connections ---------------------------------------------------------- */

static void
conn_close(struct conn *c)
{
	close(c->fd);
	c->fd = -1;
	free(c->out);
	c->out = NULL;
	c->nhead = c->nout = c->sent = 0;
}

/* Where the head ends (just past the blank line), or 0 while it does not. */
static size_t
head_end(const struct conn *c)
{
	const char *p = strstr(c->head, "\r\n\r\n");
	const char *q = strstr(c->head, "\n\n");

	if (p != NULL && (q == NULL || p < q))
		return (size_t)(p - c->head) + 4;
	return q != NULL ? (size_t)(q - c->head) + 2 : 0;
}

static void
conn_read(struct http *h, struct conn *c)
{
	ssize_t n;
	size_t end;

	n = read(c->fd, c->head + c->nhead, HTTP_HEAD_MAX - c->nhead);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_close(c);
		return;
	}
	c->nhead += (size_t)n;
	c->head[c->nhead] = '\0';
	/* A NUL in the head would hide the rest from the string search. */
	if (memchr(c->head, '\0', c->nhead) != NULL) {
		answer_text(c, 400, "bad request\n");
		return;
	}
	end = head_end(c);
	if (end > 0)
		route(h, c, end);
	else if (c->nhead == HTTP_HEAD_MAX)
		answer_text(c, 431, "request head too large\n");
}

static void
conn_write(struct conn *c)
{
	ssize_t n = send(c->fd, c->out + c->sent, c->nout - c->sent,
	    MSG_NOSIGNAL);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n < 0) {
		conn_close(c);
		return;
	}
	c->sent += (size_t)n;
	if (c->sent == c->nout) {
		shutdown(c->fd, SHUT_WR);
		conn_close(c);
	}
}

/* Accepts what waits; past the limit a connection is told so and closed. */
static void
accept_all(struct http *h)
{
	static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
	    "Content-Length: 21\r\nConnection: close\r\n\r\n"
	    "too many connections\n";
	int fd, i;

	while ((fd = accept4(h->lfd, NULL, NULL, SOCK_NONBLOCK |
	    SOCK_CLOEXEC)) >= 0) {
		for (i = 0; i < HTTP_MAX_CONN && h->conns[i].fd >= 0; i++)
			;
		if (i == HTTP_MAX_CONN) {
			(void)!send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL);
			close(fd);
			continue;
		}
		h->conns[i].fd = fd;
		h->conns[i].deadline = time_mono_ms() + HTTP_TIMEOUT_MS;
	}
}

static void *
serve(void *arg)
{
	struct http *h = arg;
	struct pollfd p[HTTP_MAX_CONN + 2];
	int slot[HTTP_MAX_CONN + 2];

	for (;;) {
		long long now = time_mono_ms(), wait = HTTP_TIMEOUT_MS;
		int n = 2, i;

		p[0] = (struct pollfd){ h->stop_fd, POLLIN, 0 };
		p[1] = (struct pollfd){ h->lfd, POLLIN, 0 };
		for (i = 0; i < HTTP_MAX_CONN; i++) {
			struct conn *c = &h->conns[i];

			if (c->fd < 0)
				continue;
			if (now >= c->deadline) {
				conn_close(c);
				continue;
			}
			if (c->deadline - now < wait)
				wait = c->deadline - now;
			slot[n] = i;
			p[n++] = (struct pollfd){ c->fd, c->out ? POLLOUT :
			    POLLIN, 0 };
		}
		if (poll(p, (nfds_t)n, (int)wait) < 0 && errno != EINTR)
			break;
		if (p[0].revents)
			break;
		for (i = 2; i < n; i++) {
			struct conn *c = &h->conns[slot[i]];

			if (p[i].revents == 0)
				continue;
			if (c->out == NULL)
				conn_read(h, c);
			if (c->fd >= 0 && c->out != NULL)
				conn_write(c);
		}
		if (p[1].revents)
			accept_all(h);
	}
	return NULL;
}

int
http_start(struct http *h, const struct http_source *src, struct err *e)
{
	h->src = *src;
	if (pthread_create(&h->tid, NULL, serve, h) != 0) {
		err_set(e, ERR_FATAL, "cannot start the HTTP thread");
		return -1;
	}
	h->started = 1;
	return 0;
}

void
http_free(struct http *h)
{
	int i;

	if (h == NULL)
		return;
	if (h->started) {
		(void)!write(h->stop_fd, &(uint64_t){ 1 }, sizeof(uint64_t));
		pthread_join(h->tid, NULL);
	}
	for (i = 0; i < HTTP_MAX_CONN; i++)
		if (h->conns[i].fd >= 0)
			conn_close(&h->conns[i]);
	close(h->lfd);
	close(h->stop_fd);
	if (h->unix_path != NULL)
		unlink(h->unix_path);
	free(h->unix_path);
	free(h);
}
