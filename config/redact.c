/*
 * redact.c - see redact.h.
 */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "base/util.h"
#include "config/redact.h"

#define MASK "***"
#define MAX_SECRETS 64

struct secrets {
	char *v[MAX_SECRETS];	/* the texts to remove, owned */
	size_t len[MAX_SECRETS];	/* their lengths */
	size_t n;
};

static void
add(struct secrets *s, const char *p, size_t n)
{
	size_t i;

	n = strnlen(p, n);	/* a decoded %00 ends it as a C string */
	if (n == 0 || s->n == MAX_SECRETS)
		return;
	for (i = 0; i < s->n; i++)
		if (s->len[i] == n && memcmp(s->v[i], p, n) == 0)
			return;
	s->len[s->n] = n;
	s->v[s->n++] = xstrndup(p, n);
}

static int
hexval(int c)
{
	return isdigit(c) ? c - '0' : isxdigit(c) ? tolower(c) - 'a' + 10 : -1;
}

/* A secret and each of its space-separated words (a decoded NUL
 * separates words too). */
static void
add_words(struct secrets *s, const char *p, size_t n)
{
	size_t i, w;

	add(s, p, n);
	for (i = 0; i < n; i = w) {
		while (i < n && (isspace((unsigned char)p[i]) || p[i] == '\0'))
			i++;
		for (w = i; w < n && !isspace((unsigned char)p[w]) &&
		    p[w] != '\0'; w++)
			;
		if (w > i && w - i < n)
			add(s, p + i, w - i);
	}
}

/* A secret as written and percent-decoded (a URI's), word by word. */
static void
add_value(struct secrets *s, const char *p, size_t n, int uri)
{
	char *dec = xmalloc(n + 1);
	size_t i, k = 0;

	add_words(s, p, n);
	for (i = 0; i < n; i++) {
		if (uri && p[i] == '%' && i + 2 < n &&
		    hexval((unsigned char)p[i + 1]) >= 0 &&
		    hexval((unsigned char)p[i + 2]) >= 0) {
			dec[k++] = (char)(hexval((unsigned char)p[i + 1]) * 16 +
			    hexval((unsigned char)p[i + 2]));
			i += 2;
		} else {
			dec[k++] = p[i];
		}
	}
	add_words(s, dec, k);
	free(dec);
}

/* The URI's user:password@ and ?password= / &sslpassword= values. */
static void
from_uri(struct secrets *s, const char *ci)
{
	const char *start = strstr(ci, "://"), *colon, *at, *q;

	if (start == NULL)
		return;
	start += 3;
	colon = strchr(start, ':');
	/* libpq takes the first '@'; a raw '@' in a password makes it the
	 * last one: both candidates go. */
	if (colon != NULL) {
		at = strchr(colon, '@');
		if (at != NULL)
			add_value(s, colon + 1, (size_t)(at - colon - 1), 1);
		at = strrchr(colon, '@');
		if (at != NULL)
			add_value(s, colon + 1, (size_t)(at - colon - 1), 1);
	}
	for (q = strchr(start, '?'); q != NULL; q = strchr(q + 1, '&')) {
		const char *k = q + 1, *eq = strchr(k, '='), *end;

		if (eq == NULL)
			break;
		if ((size_t)(eq - k) >= 8 && strncmp(eq - 8, "password", 8) == 0) {
			end = strchr(eq + 1, '&');
			if (end == NULL)
				end = eq + 1 + strlen(eq + 1);
			add_value(s, eq + 1, (size_t)(end - eq - 1), 1);
		}
	}
}

/* Does "keyword =" follow at p, for one of libpq's keywords (defs, from
 * PQconndefaults; the next option of a key/value string; "x=" of another
 * word is the password's)? */
static int
key_follows(const char *p, const PQconninfoOption *defs)
{
	const PQconninfoOption *o;
	const char *k = p;
	int found = 0;

	while (isalnum((unsigned char)*k) || *k == '_')
		k++;
	if (k == p || defs == NULL)
		return 0;
	for (o = defs; o->keyword != NULL && !found; o++)
		found = strlen(o->keyword) == (size_t)(k - p) &&
		    strncmp(o->keyword, p, (size_t)(k - p)) == 0;
	while (*k == ' ' || *k == '\t')
		k++;
	return found && *k == '=';
}

/* password= and sslpassword= of a key/value string: a quoted value, or
 * everything up to the next "key=" (so "password=PW X" gives "PW X"). */
static void
from_keyvalue(struct secrets *s, const char *ci)
{
	/* libpq's keywords once, and only for a string with a password=
	 * in it: PQconndefaults reads the environment and the password
	 * database, and was called at every space (found by review:
	 * "xpassword=y " 5,000 times took minutes). */
	PQconninfoOption *defs = NULL;
	const char *p;

	/* Each "password=" not yet read adds a value: once the secrets are
	 * full, the rest of a hostile string adds nothing but work. */
	for (p = strstr(ci, "password"); p != NULL && s->n < MAX_SECRETS;
	    p = strstr(p + 1, "password")) {
		const char *v = p + 8, *end;

		while (*v == ' ' || *v == '\t')
			v++;
		if (*v != '=')
			continue;
		v++;
		while (*v == ' ' || *v == '\t')
			v++;
		if (defs == NULL)
			defs = PQconndefaults();
		/* Each reading of an ambiguous value: up to the next
		 * "keyword=", as libpq cuts it (at a space), and quoted. */
		for (end = v; *end; end++)
			if (isspace((unsigned char)*end) &&
			    key_follows(end + strspn(end, " \t\r\n"), defs))
				break;
		add_value(s, v, (size_t)(end - v), 0);
		add_value(s, v, strcspn(v, " \t\r\n"), 0);
		if (*v == '\'') {
			for (end = ++v; *end && *end != '\''; end++)
				if (*end == '\\' && end[1] != '\0')
					end++;
			add_value(s, v, (size_t)(end - v), 0);
		}
	}
	PQconninfoFree(defs);
}

/* What libpq itself parses as a password, when it can. 1 when it could
 * not parse the string. */
static int
from_libpq(struct secrets *s, const char *ci)
{
	PQconninfoOption *opts, *o;
	char *err = NULL;

	opts = PQconninfoParse(ci, &err);
	PQfreemem(err);
	if (opts == NULL)
		return 1;
	for (o = opts; o->keyword != NULL; o++)
		if (o->val != NULL && (strcmp(o->keyword, "password") == 0 ||
		    strcmp(o->keyword, "sslpassword") == 0))
			add_value(s, o->val, strlen(o->val), 0);
	PQconninfoFree(opts);
	return 0;
}

static int
is_word(int c)
{
	return isalnum(c) || c == '_' || c >= 0x80;
}

/* Marks (in m, a byte for each byte of text, n bytes) every occurrence
 * of the secret (sn bytes) in text, as a whole token when it is short:
 * "a" must not eat every a of the message. Marks, not replacements: each
 * secret is found in the message as it was, whatever another one covers.
 * memmem, not strstr: glibc's AVX-512 strstr takes time quadratic in a
 * long needle of one repeated byte (found by review: seconds for a
 * 50,000-byte word). */
static void
mark(const char *text, size_t n, char *m, const char *secret, size_t sn)
{
	int token = sn < 4;
	const char *p = text, *end = text + n, *hit;

	/* An empty secret is found everywhere (found by fuzz-redact: a
	 * 13-byte connection string once hung). */
	if (sn == 0)
		return;
	/* Past a marked hit, not one byte on: overlapping hits of a long
	 * secret were a memset each, quadratic (found by review). What an
	 * overlap leaves unmarked is shorter than the secret. */
	while ((size_t)(end - p) >= sn &&
	    (hit = memmem(p, (size_t)(end - p), secret, sn)) != NULL) {
		if (!token || ((hit == text ||
		    !is_word((unsigned char)hit[-1])) &&
		    !is_word((unsigned char)hit[sn]))) {
			memset(m + (hit - text), 1, sn);
			p = hit + sn;
		} else {
			p = hit + 1;
		}
	}
}

/* Marks everything between the first quote and the last (but the "="
 * of libpq's `missing "=" after "X"`): the quoted piece of the string
 * may itself hold quotes, so quotes cannot be paired. */
static void
mark_quoted(const char *text, char *m)
{
	const char *q = strchr(text, '"'), *last = strrchr(text, '"');

	/* Only libpq's own `missing "=" after "X"`: a quoted piece that
	 * itself begins with =" is not skipped (found by review). */
	while (q != NULL && strncmp(q, "\"=\" after \"", 11) == 0)
		q = strchr(q + 3, '"');
	if (q == NULL || last == NULL || last <= q + 1)
		return;
	memset(m + (q + 1 - text), 1, (size_t)(last - q - 1));
}

/* Whatever still looks like scheme://user:secret@ or password=secret. */
static void
mask_shapes(char *s)
{
	char *q, *p;

	for (q = strstr(s, "://"); q != NULL; q = strstr(q + 3, "://")) {
		char *end = q + 3 + strcspn(q + 3, " \t\"'/?#");
		char *at = memchr(q + 3, '@', (size_t)(end - q - 3));
		char *colon = memchr(q + 3, ':', (size_t)(end - q - 3));

		if (at == NULL)
			at = strrchr(q + 3, '@');
		if (at != NULL && colon != NULL && colon < at)
			memset(colon + 1, '*', (size_t)(at - colon - 1));
	}
	for (p = strstr(s, "password"); p != NULL; p = strstr(p + 1, "password")) {
		char *v = p + 8;

		while (*v == ' ')
			v++;
		if (*v != '=')
			continue;
		for (v++; *v && !isspace((unsigned char)*v) && *v != '"' &&
		    *v != '&'; v++)
			*v = '*';
	}
}

char *
cfg_redact(const char *msg, const char *conninfo)
{
	struct secrets s = {0};
	struct buf b = {0};
	const char *text = msg ? msg : "";
	size_t i, n = strlen(text);
	char *m = xcalloc(n + 1, 1), *out;

	if (conninfo != NULL && conninfo[0] != '\0') {
		if (from_libpq(&s, conninfo))
			mark_quoted(text, m);
		from_uri(&s, conninfo);
		from_keyvalue(&s, conninfo);
	}
	for (i = 0; i < s.n; i++) {
		mark(text, n, m, s.v[i], s.len[i]);
		free(s.v[i]);
	}
	/* Each run of marked bytes becomes one mask. */
	buf_puts(&b, "");
	for (i = 0; i < n; i++) {
		size_t j = i;

		if (!m[i]) {
			while (j < n && !m[j])
				j++;
			buf_append(&b, text + i, j - i);
		} else {
			while (j < n && m[j])
				j++;
			buf_puts(&b, MASK);
		}
		i = j - 1;
	}
	free(m);
	/* One line, cut only now: a password may hold a newline, and a
	 * quoted piece cut before its closing quote would leave its tail
	 * unmasked (found by fuzz-redact). */
	out = buf_take(&b);
	out[strcspn(out, "\n")] = '\0';
	mask_shapes(out);
	return out;
}
