/*
 * fuzz-keymap.c - libFuzzer target for the path-to-key mapping
 * (base/keymap.c): keymap_classify, keymap_s3_key, keymap_document_type,
 * keymap_content_type, keymap_is_xml, keymap_check_key and
 * keymap_utf8_valid.
 *
 * The input, cut at its first NUL, is a path relative to the uploads root
 * ("<job>/<rest>"); the whole input (NULs included) also goes to
 * keymap_utf8_valid. Checked on every input:
 *   - classify agrees with an independent reading of "<uuid>/<rest>"; a
 *     job's id is the 36 bytes before the first slash, rest what follows;
 *     job.json at the job's top is metadata, anything else a document;
 *   - a document's key is jobs/<job>/uploads/<rest>, or
 *     jobs/<job>/results/<r> for rest = results/<r>, and nothing else;
 *   - the document type is one of the four names, "result" exactly for
 *     results/...; the content type is one of the table's;
 *   - keymap_utf8_valid agrees with a second, table-driven validator
 *     written from the Unicode Standard's Table 3-7 (well-formed byte
 *     sequences), not from keymap.c;
 *   - keymap_check_key accepts exactly the keys that are valid UTF-8 and
 *     at most 1,024 bytes, and explains a refusal (ERR_PERMANENT).
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/keymap.h"

#define JOB "6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f"

#define FUZZ_NAME "fuzz-keymap"
#include "tests/fuzz/fuzz.h"

/*
 * Unicode 15, Table 3-7: the well-formed UTF-8 byte sequences, row by row
 * (first byte range, then the allowed range of each following byte).
 */
static const struct {
	unsigned char lo[4], hi[4];
	int n;
} table37[] = {
	{ { 0x00 }, { 0x7f }, 1 },
	{ { 0xc2, 0x80 }, { 0xdf, 0xbf }, 2 },
	{ { 0xe0, 0xa0, 0x80 }, { 0xe0, 0xbf, 0xbf }, 3 },
	{ { 0xe1, 0x80, 0x80 }, { 0xec, 0xbf, 0xbf }, 3 },
	{ { 0xed, 0x80, 0x80 }, { 0xed, 0x9f, 0xbf }, 3 },
	{ { 0xee, 0x80, 0x80 }, { 0xef, 0xbf, 0xbf }, 3 },
	{ { 0xf0, 0x90, 0x80, 0x80 }, { 0xf0, 0xbf, 0xbf, 0xbf }, 4 },
	{ { 0xf1, 0x80, 0x80, 0x80 }, { 0xf3, 0xbf, 0xbf, 0xbf }, 4 },
	{ { 0xf4, 0x80, 0x80, 0x80 }, { 0xf4, 0x8f, 0xbf, 0xbf }, 4 },
};

static int
utf8_ok(const unsigned char *p, size_t n)
{
	size_t i = 0, r;
	int k;

	while (i < n) {
		for (r = 0; r < sizeof(table37) / sizeof(table37[0]); r++) {
			if (i + (size_t)table37[r].n > n)
				continue;
			for (k = 0; k < table37[r].n; k++)
				if (p[i + k] < table37[r].lo[k] ||
				    p[i + k] > table37[r].hi[k])
					break;
			if (k == table37[r].n)
				break;
		}
		if (r == sizeof(table37) / sizeof(table37[0]))
			return 0;
		i += (size_t)table37[r].n;
	}
	return 1;
}

static int
is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
	    (c >= 'A' && c <= 'F');
}

/* An independent reading of "<uuid>/<rest>": 1 when rel is in a job. */
static int
in_job(const char *rel)
{
	size_t i;

	if (strlen(rel) < 38 || rel[36] != '/')
		return 0;
	for (i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (rel[i] != '-')
				return 0;
		} else if (!is_hex(rel[i])) {
			return 0;
		}
	}
	return 1;
}

static int
starts(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void
check_key_fn(const char *key)
{
	struct err e;
	size_t n = strlen(key);
	int want = utf8_ok((const unsigned char *)key, n) && n <= KEYMAP_MAX_KEY;
	int rc;

	memset(&e, 0, sizeof(e));
	rc = keymap_check_key(key, &e);
	CHECK(rc == 0 || rc == -1, "check_key returned %d", rc);
	CHECK((rc == 0) == want, "check_key says %d for a %zu-byte key, "
	    "expected %s", rc, n, want ? "accepted" : "refused");
	if (rc < 0)
		CHECK(e.cls == ERR_PERMANENT && e.msg[0] != '\0',
		    "a refusal without ERR_PERMANENT and a message");
}

/* Checks the key, document type and content type of rest in job. */
static void
check_mapping(const char *job, const char *rest)
{
	static const char *const doc_types[] = { "result", "documentation",
	    "integration", "other" };
	char *key = keymap_s3_key(job, rest), *want;
	const char *dt = keymap_document_type(rest);
	const char *ct = keymap_content_type(rest);
	int results = starts(rest, "results/") && rest[8] != '\0';
	size_t i;

	CHECK(key != NULL, "no key");
	if (asprintf(&want, "jobs/%s/%s/%s", job, results ? "results" :
	    "uploads", results ? rest + 8 : rest) < 0)
		abort();
	CHECK(strcmp(key, want) == 0, "key \"%s\" for rest \"%s\"", key, rest);
	free(want);
	CHECK(starts(key, "jobs/") && strncmp(key + 5, job, strlen(job)) == 0 &&
	    (starts(key + 5 + strlen(job), "/uploads/") ||
	    starts(key + 5 + strlen(job), "/results/")), "key \"%s\"", key);

	CHECK(dt != NULL, "no document type");
	for (i = 0; i < 4; i++)
		if (strcmp(dt, doc_types[i]) == 0)
			break;
	CHECK(i < 4, "document type \"%s\"", dt);
	CHECK((strcmp(dt, "result") == 0) == starts(rest, "results/"),
	    "document type \"%s\" for \"%s\"", dt, rest);
	/* A result file's key is under results/ (rest "results/" itself
	 * names a directory, never a file). */
	if (strcmp(dt, "result") == 0 && rest[8] != '\0')
		CHECK(strstr(key, "/results/") != NULL, "result \"%s\" stored "
		    "as \"%s\"", rest, key);
	CHECK(ct != NULL && ct[0] != '\0' && strchr(ct, '/') != NULL,
	    "content type \"%s\"", ct ? ct : "(null)");
	(void)keymap_is_xml(rest);
	check_key_fn(key);
	free(key);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *rel;
	const char *rest = NULL;
	size_t job_len = 0;
	enum keymap_kind k;
	int v;

	if (size > 8192)
		return -1;
	/* keymap_utf8_valid on exactly the input's bytes, NULs and all. */
	{
		char *raw = malloc(size ? size : 1);

		memcpy(raw, data, size);
		v = keymap_utf8_valid(raw, size);
		CHECK(v == 0 || v == 1, "utf8_valid returned %d", v);
		CHECK(v == utf8_ok(data, size), "utf8_valid says %d for %zu "
		    "bytes", v, size);
		free(raw);
	}

	rel = malloc(size + 1);
	memcpy(rel, data, size);
	rel[size] = '\0';

	k = keymap_classify(rel, &job_len, &rest);
	CHECK(k == KEYMAP_NOT_A_JOB || k == KEYMAP_DOCUMENT ||
	    k == KEYMAP_JOB_META, "kind %d", (int)k);
	CHECK((k != KEYMAP_NOT_A_JOB) == in_job(rel), "kind %d for \"%s\"",
	    (int)k, rel);
	if (k != KEYMAP_NOT_A_JOB) {
		char job[37];

		CHECK(job_len == 36 && rest == rel + 37, "job_len %zu", job_len);
		CHECK((k == KEYMAP_JOB_META) == (strcmp(rest, "job.json") == 0),
		    "kind %d for rest \"%s\"", (int)k, rest);
		memcpy(job, rel, 36);
		job[36] = '\0';
		if (k == KEYMAP_DOCUMENT)
			check_mapping(job, rest);
	}
	/* Any name, in a fixed job, and as a key of its own. */
	check_mapping(JOB, rel);
	check_key_fn(rel);
	{
		const char *ct = keymap_content_type(rel);

		CHECK(ct != NULL, "no content type");
	}
	free(rel);
	return 0;
}
