/*
 * fuzz-dotenv.c - libFuzzer target for dotenv_parse() (config/dotenv.c).
 *
 * The input is the text of a .env file, any bytes at all. The callbacks
 * behave as dotenv_load's do (the first assignment of a name wins, as
 * setenv(..., 0) does) on a private table, plus a few names that are
 * "already in the environment". Checked on every input:
 *   - dotenv_parse returns 0 or -1; on -1 the message starts "line N:"
 *     with N between 1 and the number of lines, and no assignment was
 *     made after the failing line;
 *   - every key is non-empty, matches [A-Za-z_][A-Za-z0-9_.]*, and occurs
 *     in the input as it is; so does every name the lookup is asked for;
 *   - a value is never longer than the input plus what ${NAME} references
 *     could have expanded to; assignments never outnumber the '=' bytes;
 *   - a second parse of the same text gives the same assignments, and an
 *     assign callback that stops early stops the parse with 0.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/dotenv.h"

#define MAX_VARS 64

struct var {
	char *key;
	char *value;
};

struct ctx {
	const char *text;
	size_t len;
	struct var vars[MAX_VARS];	/* first assignment wins */
	size_t nvars;
	size_t nassign;			/* assignments seen */
	uint64_t hash;			/* of every (key, value) in order */
	size_t max_lookup;		/* longest value lookup returned */
	size_t stop_after;		/* 0: never stop */
};

#define FUZZ_NAME "fuzz-dotenv"
#include "tests/fuzz/fuzz.h"

static int
key_valid(const char *k)
{
	const char *p = k;

	if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || *p == '_'))
		return 0;
	for (p++; *p != '\0'; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		    (*p >= '0' && *p <= '9') || *p == '_' || *p == '.'))
			return 0;
	return 1;
}

static int
in_text(const struct ctx *c, const char *s)
{
	return memmem(c->text, c->len, s, strlen(s)) != NULL;
}

static uint64_t
fnv(uint64_t h, const char *s)
{
	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return (h ^ 0xff) * 0x100000001b3ULL;
}

static int
assign(void *arg, const char *key, const char *value)
{
	struct ctx *c = arg;
	size_t vlen = strlen(value), i, refs;

	CHECK(key != NULL && value != NULL, "NULL key or value");
	CHECK(key[0] != '\0', "empty key");
	CHECK(key_valid(key), "key \"%s\"", key);
	CHECK(in_text(c, key), "key \"%s\" is not in the input", key);
	/* A ${X} reference is at least 4 input bytes. */
	refs = c->len / 4;
	CHECK(vlen <= c->len + refs * c->max_lookup,
	    "value of %s is %zu bytes from a %zu-byte input", key, vlen,
	    c->len);
	c->nassign++;
	c->hash = fnv(fnv(c->hash, key), value);
	for (i = 0; i < c->nvars; i++)
		if (strcmp(c->vars[i].key, key) == 0)
			break;
	if (i == c->nvars && c->nvars < MAX_VARS) {
		c->vars[i].key = strdup(key);
		c->vars[i].value = strdup(value);
		c->nvars++;
	}
	return c->stop_after != 0 && c->nassign >= c->stop_after;
}

static const char *
lookup(void *arg, const char *name)
{
	static char longval[301];
	struct ctx *c = arg;
	const char *v = NULL;
	size_t i;

	CHECK(name != NULL && key_valid(name), "lookup of \"%s\"",
	    name ? name : "(null)");
	CHECK(in_text(c, name), "lookup of \"%s\" not in the input", name);
	if (longval[0] == '\0')
		memset(longval, 'L', sizeof(longval) - 1);
	/* "The environment": these win over the file, as in dotenv_load. */
	if (strcmp(name, "HOME") == 0)
		v = "/home/app";
	else if (strcmp(name, "EMPTY") == 0)
		v = "";
	else if (strcmp(name, "LONG") == 0)
		v = longval;
	else if (strcmp(name, "UNSET") == 0)
		v = NULL;
	else
		for (i = 0; i < c->nvars; i++)
			if (strcmp(c->vars[i].key, name) == 0) {
				v = c->vars[i].value;
				break;
			}
	if (v != NULL && strlen(v) > c->max_lookup)
		c->max_lookup = strlen(v);
	return v;
}

static void
ctx_free(struct ctx *c)
{
	size_t i;

	for (i = 0; i < c->nvars; i++) {
		free(c->vars[i].key);
		free(c->vars[i].value);
	}
	c->nvars = 0;
}

static int
run(struct ctx *c, const uint8_t *data, size_t size, size_t stop_after,
    struct err *e)
{
	memset(c, 0, sizeof(*c));
	c->text = (const char *)data;
	c->len = size;
	c->stop_after = stop_after;
	c->max_lookup = 300;	/* LONG may be looked up at any time */
	memset(e, 0, sizeof(*e));
	return dotenv_parse((const char *)data, size, assign, lookup, c, e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctx a, b;
	struct err e, e2;
	size_t eq = 0, lines = 1, i;
	int rc, rc2;

	if (size > 64 * 1024)
		return -1;
	for (i = 0; i < size; i++) {
		eq += data[i] == '=';
		lines += data[i] == '\n';
	}

	/* A copy of exactly size bytes: any read past the end is caught. */
	{
		uint8_t *copy = malloc(size ? size : 1);

		memcpy(copy, data, size);
		rc = run(&a, copy, size, 0, &e);
		free(copy);
	}
	CHECK(rc == 0 || rc == -1, "returned %d", rc);
	CHECK(a.nassign <= eq, "%zu assignments from %zu '='", a.nassign, eq);
	if (rc == -1) {
		unsigned long n = 0;
		char *end = NULL;

		CHECK(strncmp(e.msg, "line ", 5) == 0, "message \"%s\"", e.msg);
		n = strtoul(e.msg + 5, &end, 10);
		CHECK(end != e.msg + 5 && *end == ':', "message \"%s\"", e.msg);
		CHECK(n >= 1 && n <= lines, "line %lu of %zu: \"%s\"", n, lines,
		    e.msg);
		CHECK(e.cls == ERR_PERMANENT, "class %d", (int)e.cls);
	} else {
		CHECK(e.msg[0] == '\0', "success with a message \"%s\"", e.msg);
	}

	/* Deterministic: the same text gives the same assignments. */
	rc2 = run(&b, data, size, 0, &e2);
	CHECK(rc2 == rc && b.nassign == a.nassign && b.hash == a.hash,
	    "second parse differs");
	CHECK(strcmp(e.msg, e2.msg) == 0, "messages differ");
	ctx_free(&b);

	/* An assign callback that says stop ends the parse, successfully. */
	if (a.nassign > 0) {
		rc2 = run(&b, data, size, 1, &e2);
		CHECK(rc2 == 0 && b.nassign == 1, "stop: rc %d after %zu", rc2,
		    b.nassign);
		ctx_free(&b);
	}
	ctx_free(&a);
	return 0;
}
