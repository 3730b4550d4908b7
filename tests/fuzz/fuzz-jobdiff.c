/*
 * fuzz-jobdiff.c - libFuzzer target for jobmeta_parse() and
 * jobmeta_diff() (agent/db/jobmeta.c, cJSON).
 *
 * The input is split at its first NUL byte: the part before is a job.json,
 * the part after (when there is one) the job's current row as JSON, as
 * PostgreSQL's row_to_json would give it. Checked:
 *   - jobmeta_parse returns NULL with a message, or an object holding only
 *     the five known fields, each of its type (status one of the five
 *     statuses, user_id a lower-case UUID or null, enhance_with_llm a
 *     boolean, platform a non-empty string, filename a string);
 *   - jobmeta_diff against NULL (a new job): old_data is NULL and every
 *     field present changed;
 *   - against the row (and against the parsed fields themselves, and the
 *     second part parsed as a job.json too): old_data is NULL exactly when
 *     the row is; only the five names appear in changed, in the fixed
 *     order, once each; n equals the keys of new_data (and of old_data);
 *     new_data holds the fields' values, old_data the row's (null when
 *     the row lacks it); a field left out agrees with the row;
 *   - applying new_data to the row and diffing again changes nothing.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/db/jobmeta.h"

#define FUZZ_NAME "fuzz-jobdiff"
#include "tests/fuzz/fuzz.h"

static const char *const known[] = { "filename", "platform", "user_id",
	"status", "enhance_with_llm" };
#define NKNOWN (sizeof(known) / sizeof(known[0]))

static int
known_index(const char *name)
{
	size_t i;

	for (i = 0; i < NKNOWN; i++)
		if (strcmp(name, known[i]) == 0)
			return (int)i;
	return -1;
}

static int
keys(const cJSON *o)
{
	return cJSON_GetArraySize(o);
}

static int
lower_uuid(const char *s)
{
	size_t i;

	if (strlen(s) != 36)
		return 0;
	for (i = 0; i < 36; i++) {
		char c = s[i];

		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return 0;
		} else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
			return 0;
		}
	}
	return 1;
}

static void
check_fields(const cJSON *f)
{
	const cJSON *v;
	int seen[NKNOWN] = {0};

	CHECK(cJSON_IsObject(f), "not an object");
	cJSON_ArrayForEach(v, f) {
		int k;

		CHECK(v->string != NULL, "a field without a name");
		k = known_index(v->string);
		CHECK(k >= 0, "unknown field \"%s\" kept", v->string);
		CHECK(!seen[k], "field \"%s\" twice", v->string);
		seen[k] = 1;
		if (strcmp(v->string, "status") == 0) {
			const char *const *s;

			CHECK(cJSON_IsString(v), "status not a string");
			for (s = jobmeta_statuses; *s != NULL; s++)
				if (strcmp(*s, v->valuestring) == 0)
					break;
			CHECK(*s != NULL, "status \"%s\"", v->valuestring);
		} else if (strcmp(v->string, "user_id") == 0) {
			CHECK(cJSON_IsNull(v) || (cJSON_IsString(v) &&
			    lower_uuid(v->valuestring)), "user_id");
		} else if (strcmp(v->string, "enhance_with_llm") == 0) {
			CHECK(cJSON_IsBool(v), "enhance_with_llm");
		} else if (strcmp(v->string, "platform") == 0) {
			CHECK(cJSON_IsString(v) && v->valuestring[0] != '\0',
			    "platform");
		} else {
			CHECK(cJSON_IsString(v), "filename");
		}
	}
}

/* The row's value of name, as jobmeta_diff sees it. */
static const cJSON *
get(const cJSON *o, const char *name)
{
	return o ? cJSON_GetObjectItemCaseSensitive(o, name) : NULL;
}

static void
check_diff(const cJSON *row, const cJSON *fields, size_t *n_out)
{
	struct jobmeta_diff d;
	size_t i, j;
	int last = -1;

	jobmeta_diff(row, fields, &d);
	CHECK(d.new_data != NULL && cJSON_IsObject(d.new_data), "new_data");
	CHECK((d.old_data == NULL) == (row == NULL), "old_data %p, row %p",
	    (void *)d.old_data, (const void *)row);
	CHECK(d.n <= NKNOWN, "n = %zu", d.n);
	CHECK((size_t)keys(d.new_data) == d.n, "n = %zu, new_data has %d keys",
	    d.n, keys(d.new_data));
	if (d.old_data != NULL)
		CHECK((size_t)keys(d.old_data) == d.n, "n = %zu, old_data has %d "
		    "keys", d.n, keys(d.old_data));
	CHECK(d.n == 0 || d.changed != NULL, "changed is NULL");
	for (i = 0; i < d.n; i++) {
		const char *f = d.changed[i];
		int k;

		CHECK(f != NULL, "changed[%zu] is NULL", i);
		k = known_index(f);
		CHECK(k >= 0, "changed[%zu] = \"%s\"", i, f);
		CHECK(k > last, "changed out of order or doubled at \"%s\"", f);
		last = k;
		CHECK(cJSON_Compare(get(d.new_data, f), get(fields, f), 1),
		    "new_data.%s differs from job.json", f);
		if (d.old_data != NULL) {
			const cJSON *ov = get(row, f), *od = get(d.old_data, f);

			CHECK(od != NULL, "old_data lacks %s", f);
			if (ov != NULL)
				CHECK(cJSON_Compare(od, ov, 1), "old_data.%s "
				    "differs from the row", f);
			else
				CHECK(cJSON_IsNull(od), "old_data.%s not null", f);
		}
	}
	/* A known field not reported as changed agrees with the row. */
	for (j = 0; j < NKNOWN; j++) {
		const cJSON *nv = get(fields, known[j]), *ov = get(row, known[j]);

		for (i = 0; i < d.n; i++)
			if (strcmp(d.changed[i], known[j]) == 0)
				break;
		if (i < d.n)
			continue;
		if (nv == NULL)
			continue;
		CHECK(row != NULL, "new job: %s present but not changed",
		    known[j]);
		CHECK((ov != NULL && cJSON_Compare(ov, nv, 1)) ||
		    (ov == NULL && cJSON_IsNull(nv)), "%s differs but did not "
		    "change", known[j]);
	}

	/* Apply new_data to the row: then nothing is left to change. */
	if (row != NULL && cJSON_IsObject(row) && d.n > 0) {
		cJSON *applied = cJSON_Duplicate(row, 1);
		struct jobmeta_diff d2;
		const cJSON *v;

		CHECK(applied != NULL, "cJSON_Duplicate failed");
		cJSON_ArrayForEach(v, d.new_data) {
			cJSON *dup = cJSON_Duplicate(v, 1);

			if (cJSON_GetObjectItemCaseSensitive(applied, v->string))
				cJSON_ReplaceItemInObjectCaseSensitive(applied,
				    v->string, dup);
			else
				cJSON_AddItemToObject(applied, v->string, dup);
		}
		jobmeta_diff(applied, fields, &d2);
		CHECK(d2.n == 0, "%zu field(s) still differ after applying "
		    "the change, first %s", d2.n, d2.changed[0]);
		jobmeta_diff_free(&d2);
		cJSON_Delete(applied);
	}
	if (n_out != NULL)
		*n_out = d.n;
	jobmeta_diff_free(&d);
	CHECK(d.n == 0 && d.changed == NULL && d.old_data == NULL &&
	    d.new_data == NULL, "jobmeta_diff_free left something");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul;
	size_t alen, blen = 0, n;
	char *a, *b = NULL;
	cJSON *fields, *row = NULL, *brow = NULL;
	struct err e;

	if (size > 64 * 1024)
		return -1;
	nul = memchr(data, '\0', size);
	alen = nul ? (size_t)(nul - data) : size;
	/* Exact-size copies, not NUL terminated: cJSON must honour len. */
	a = malloc(alen ? alen : 1);
	memcpy(a, data, alen);
	if (nul != NULL) {
		blen = size - alen - 1;
		b = malloc(blen ? blen : 1);
		memcpy(b, nul + 1, blen);
	}

	memset(&e, 0, sizeof(e));
	fields = jobmeta_parse(a, alen, &e);
	if (fields == NULL) {
		CHECK(e.cls == ERR_PERMANENT && e.msg[0] != '\0', "NULL without "
		    "a message");
		goto out;
	}
	check_fields(fields);

	check_diff(NULL, fields, &n);
	CHECK(n == (size_t)keys(fields), "new job: %zu changed of %d fields",
	    n, keys(fields));
	check_diff(fields, fields, &n);
	CHECK(n == 0, "a job diffed with itself changed %zu", n);
	if (b != NULL) {
		row = cJSON_ParseWithLength(b, blen);
		if (row != NULL && cJSON_IsObject(row))
			check_diff(row, fields, NULL);
		memset(&e, 0, sizeof(e));
		brow = jobmeta_parse(b, blen, &e);
		if (brow != NULL) {
			check_fields(brow);
			check_diff(brow, fields, NULL);
			check_diff(fields, brow, NULL);
		}
	}
out:
	cJSON_Delete(fields);
	cJSON_Delete(row);
	cJSON_Delete(brow);
	free(a);
	free(b);
	return 0;
}
