/*
 * listen.h - the address OUTBOXD_HTTP_LISTEN names, parsed without DNS:
 *
 *   9187                 127.0.0.1:9187 (a bare port is loopback)
 *   127.0.0.1:9187       an IPv4 address and port
 *   [::1]:9187           an IPv6 address and port
 *   localhost:9187       127.0.0.1:9187
 *   unix:/run/outboxd/http.sock, or /run/...   a Unix socket
 *
 * A host must be a literal (or localhost): a name would need DNS at start
 * and could change meaning. Pure; any thread.
 */
#ifndef OUTBOXD_LISTEN_H
#define OUTBOXD_LISTEN_H

#include <stddef.h>
#include <sys/socket.h>

struct listen_addr {
	struct sockaddr_storage sa;	/* AF_INET, AF_INET6 or AF_UNIX */
	socklen_t len;
	const char *unix_path;		/* AF_UNIX: points into sa */
};

/* 0 with a filled, or -1 with why (a phrase, no trailing period). */
int listen_parse(const char *spec, struct listen_addr *a, const char **why);

#endif
