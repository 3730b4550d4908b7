/* listen.c - see listen.h. */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "base/listen.h"

static int
parse_port(const char *s, in_port_t *port)
{
	char *end;
	long n;

	if (*s < '0' || *s > '9')
		return -1;
	n = strtol(s, &end, 10);
	if (*end != '\0' || n < 1 || n > 65535)
		return -1;
	*port = htons((in_port_t)n);
	return 0;
}

static int
parse_unix(const char *path, struct listen_addr *a, const char **why)
{
	struct sockaddr_un *un = (struct sockaddr_un *)&a->sa;

	if (path[0] != '/') {
		*why = "a Unix socket needs an absolute path";
		return -1;
	}
	if (strlen(path) >= sizeof(un->sun_path)) {
		*why = "the Unix socket path is too long";
		return -1;
	}
	un->sun_family = AF_UNIX;
	strcpy(un->sun_path, path);
	a->len = sizeof(*un);
	a->unix_path = un->sun_path;
	return 0;
}

int
listen_parse(const char *spec, struct listen_addr *a, const char **why)
{
	struct sockaddr_in *in4 = (struct sockaddr_in *)&a->sa;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->sa;
	char host[64];
	const char *colon, *port;
	size_t hl;

	memset(a, 0, sizeof(*a));
	*why = "must be PORT, HOST:PORT, [IPV6]:PORT or unix:/PATH";
	if (strncmp(spec, "unix:", 5) == 0)
		return parse_unix(spec + 5, a, why);
	if (spec[0] == '/')
		return parse_unix(spec, a, why);
	colon = strrchr(spec, ':');
	port = colon ? colon + 1 : spec;
	hl = colon ? (size_t)(colon - spec) : 0;
	if (spec[0] == '[') {
		if (colon == NULL || hl < 3 || spec[hl - 1] != ']')
			return -1;
		hl -= 2;
		spec++;
	}
	if (hl >= sizeof(host))
		return -1;
	memcpy(host, spec, hl);
	host[hl] = '\0';
	if (parse_port(port, &in4->sin_port) < 0) {
		*why = "the port must be a number from 1 to 65535";
		return -1;
	}
	if (hl == 0 || strcmp(host, "localhost") == 0)
		strcpy(host, "127.0.0.1");
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		a->len = sizeof(*in4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in_port_t p = in4->sin_port;

		in6->sin6_family = AF_INET6;
		in6->sin6_flowinfo = 0;
		in6->sin6_port = p;
		a->len = sizeof(*in6);
		return 0;
	}
	*why = "the host must be an IP address or localhost (no DNS)";
	return -1;
}
