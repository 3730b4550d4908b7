/*
 * dotenv.c - a small hand-written scanner for the .env format (see
 * dotenv.h). It works on a byte range with an explicit cursor so that
 * quoted values may span lines and every error can name its line.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/dotenv.h"
#include "base/strmap.h"

#define DOTENV_MAX_BYTES (1024 * 1024)

struct scanner {
	const char *p;		/* next byte */
	const char *end;	/* one past the last byte */
	int line;		/* line number of p, from 1 */
	dotenv_lookup_fn lookup;
	void *arg;
};

static int
at_end(const struct scanner *s)
{
	return s->p >= s->end;
}

static void
skip_blanks(struct scanner *s)
{
	while (!at_end(s) && (*s->p == ' ' || *s->p == '\t'))
		s->p++;
}

/* Skips to the start of the next line. */
static void
skip_line(struct scanner *s)
{
	while (!at_end(s) && *s->p != '\n')
		s->p++;
	if (!at_end(s)) {
		s->p++;
		s->line++;
	}
}

static int
is_key_start(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int
is_key_char(char c)
{
	return is_key_start(c) || (c >= '0' && c <= '9') || c == '.';
}

/* Expands ${NAME} at s->p (just after '$') into out; 0 when it was one. */
static int
expand_ref(struct scanner *s, struct buf *out)
{
	const char *q = s->p;
	char *name;
	const char *val;

	if (q >= s->end || *q != '{')
		return -1;
	q++;
	const char *def = NULL;
	size_t deflen = 0;

	if (q >= s->end || !is_key_start(*q))
		return -1;
	while (q < s->end && is_key_char(*q))
		q++;
	name = xstrndup(s->p + 1, (size_t)(q - s->p - 1));
	/* ${NAME:-default}: the default when NAME is unset or empty. */
	if (q + 1 < s->end && q[0] == ':' && q[1] == '-') {
		def = q + 2;
		for (q = def; q < s->end && *q != '}' && *q != '\n'; q++)
			;
		deflen = (size_t)(q - def);
	}
	if (q >= s->end || *q != '}') {
		free(name);
		return -1;
	}
	val = s->lookup ? s->lookup(s->arg, name) : NULL;
	if (val != NULL && *val != '\0')
		buf_puts(out, val);
	else if (def != NULL)
		buf_append(out, def, deflen);
	free(name);
	s->p = q + 1;
	return 0;
}

/* After a closing quote only blanks and a comment may follow. */
static int
finish_line(struct scanner *s, struct err *e)
{
	skip_blanks(s);
	if (!at_end(s) && *s->p == '\r')
		s->p++;
	if (!at_end(s) && *s->p == '#') {
		skip_line(s);
		return 0;
	}
	if (!at_end(s) && *s->p != '\n') {
		err_set(e, ERR_PERMANENT, "line %d: unexpected text after the "
		    "closing quote", s->line);
		return -1;
	}
	skip_line(s);
	return 0;
}

static int
scan_single(struct scanner *s, struct buf *out, struct err *e)
{
	int start = s->line;

	s->p++;
	while (!at_end(s) && *s->p != '\'') {
		if (*s->p == '\n')
			s->line++;
		buf_append(out, s->p++, 1);
	}
	if (at_end(s)) {
		err_set(e, ERR_PERMANENT, "line %d: single quote is never "
		    "closed", start);
		return -1;
	}
	s->p++;
	return finish_line(s, e);
}

static int
scan_double(struct scanner *s, struct buf *out, struct err *e)
{
	int start = s->line;

	s->p++;
	while (!at_end(s) && *s->p != '"') {
		char c = *s->p;

		if (c == '\\' && s->p + 1 < s->end) {
			char n = s->p[1], r;

			switch (n) {
			case 'n': r = '\n'; break;
			case 't': r = '\t'; break;
			case 'r': r = '\r'; break;
			case '"': case '\\': case '$': case '\'': r = n; break;
			default: r = 0; break;
			}
			if (r != 0) {
				buf_append(out, &r, 1);
				s->p += 2;
				continue;
			}
		} else if (c == '$') {
			s->p++;
			if (expand_ref(s, out) == 0)
				continue;
			buf_append(out, "$", 1);
			continue;
		} else if (c == '\n') {
			s->line++;
		}
		buf_append(out, s->p++, 1);
	}
	if (at_end(s)) {
		err_set(e, ERR_PERMANENT, "line %d: double quote is never "
		    "closed", start);
		return -1;
	}
	s->p++;
	return finish_line(s, e);
}

static void
scan_unquoted(struct scanner *s, struct buf *out)
{
	while (!at_end(s) && *s->p != '\n') {
		char c = *s->p;

		/* "value #note" ends at the blank before '#'; "a#b" and a
		 * value that starts with '#' ("KEY=#secret") are values, as
		 * python-dotenv reads them. */
		if (c == '#' && out->len > 0 && (out->data[out->len - 1] == ' '
		    || out->data[out->len - 1] == '\t'))
			break;
		if (c == '$') {
			s->p++;
			if (expand_ref(s, out) != 0)
				buf_append(out, "$", 1);
			continue;
		}
		buf_append(out, s->p++, 1);
	}
	while (out->len > 0 && (out->data[out->len - 1] == ' ' ||
	    out->data[out->len - 1] == '\t' || out->data[out->len - 1] == '\r'))
		out->data[--out->len] = '\0';
	skip_line(s);
}

int
dotenv_parse(const char *text, size_t len, dotenv_assign_fn assign,
    dotenv_lookup_fn lookup, void *arg, struct err *e)
{
	struct scanner s = { text, text + len, 1, lookup, arg };
	struct buf key = {0}, val = {0};
	int rc = -1;

	/* A UTF-8 byte order mark from a Windows editor is not a key. */
	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
		s.p += 3;
	while (!at_end(&s)) {
		const char *k;

		skip_blanks(&s);
		if (at_end(&s))
			break;
		if (*s.p == '\n' || *s.p == '#' || *s.p == '\r') {
			skip_line(&s);
			continue;
		}
		if ((size_t)(s.end - s.p) > 7 && memcmp(s.p, "export", 6) == 0
		    && (s.p[6] == ' ' || s.p[6] == '\t')) {
			s.p += 7;
			skip_blanks(&s);
		}
		k = s.p;
		if (at_end(&s) || !is_key_start(*s.p)) {
			err_set(e, ERR_PERMANENT, "line %d: expected KEY=VALUE",
			    s.line);
			goto out;
		}
		while (!at_end(&s) && is_key_char(*s.p))
			s.p++;
		buf_reset(&key);
		buf_append(&key, k, (size_t)(s.p - k));
		skip_blanks(&s);
		if (at_end(&s) || *s.p != '=') {
			err_set(e, ERR_PERMANENT, "line %d: expected '=' after "
			    "%s", s.line, key.data);
			goto out;
		}
		s.p++;
		skip_blanks(&s);
		buf_reset(&val);
		buf_append(&val, "", 0);
		if (!at_end(&s) && *s.p == '\'') {
			if (scan_single(&s, &val, e) < 0)
				goto out;
		} else if (!at_end(&s) && *s.p == '"') {
			if (scan_double(&s, &val, e) < 0)
				goto out;
		} else {
			scan_unquoted(&s, &val);
		}
		if (memchr(val.data, '\0', val.len) != NULL) {
			err_set(e, ERR_PERMANENT, "line %d: value of %s holds a "
			    "NUL byte", s.line, key.data);
			goto out;
		}
		if (assign(arg, key.data, val.data) != 0)
			break;
	}
	rc = 0;
out:
	buf_free(&key);
	buf_free(&val);
	return rc;
}

/*
 * Loading: the file's assignments are collected first (a later line for
 * the same key wins, as in the app's dotenv libraries), then each key is
 * set unless the environment already has it.
 */
struct env_load {
	struct strmap *seen;	/* key -> value from the file */
};

static int
env_assign(void *arg, const char *key, const char *value)
{
	struct env_load *l = arg;

	free(strmap_put(l->seen, key, xstrdup(value)));
	return 0;
}

static const char *
env_lookup(void *arg, const char *name)
{
	struct env_load *l = arg;
	const char *v = getenv(name);

	return v != NULL ? v : strmap_get(l->seen, name);
}

int
dotenv_load(const char *path, struct err *e)
{
	struct buf text = {0};
	struct env_load load;
	char chunk[8192];
	struct stat st;
	int fd, rc = -1;
	ssize_t n;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		err_sys(e, ERR_PERMANENT, "%s", path);
		return -1;
	}
	load.seen = strmap_new();
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		err_set(e, ERR_PERMANENT, "%s: not a regular file", path);
		goto out;
	}
	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err_sys(e, ERR_PERMANENT, "%s", path);
			goto out;
		}
		buf_append(&text, chunk, (size_t)n);
		if (text.len > DOTENV_MAX_BYTES) {
			err_set(e, ERR_PERMANENT, "%s: larger than 1 MiB, not "
			    "an env file", path);
			goto out;
		}
	}
	if (dotenv_parse(text.data ? text.data : "", text.len, env_assign,
	    env_lookup, &load, e) < 0) {
		char msg[sizeof(e->msg)];

		utf8_snprintf(msg, sizeof(msg), "%s", e->msg);
		err_set(e, ERR_PERMANENT, "%s: %s", path, msg);
		goto out;
	}
	{
		size_t i = 0;
		const char *k;
		void *v;

		while (strmap_next(load.seen, &i, &k, &v))
			setenv(k, v, 0);
	}
	rc = 0;
out:
	{
		size_t i = 0;
		const char *k;
		void *v;

		while (strmap_next(load.seen, &i, &k, &v))
			free(v);
	}
	strmap_free(load.seen);
	close(fd);
	buf_free(&text);
	return rc;
}
