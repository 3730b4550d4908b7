/* jobmeta.c - see jobmeta.h. */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "agent/db/jobmeta.h"
#include "base/keymap.h"

const char *const jobmeta_statuses[] = { "processing", "queued",
	"documentation_ready", "completed", "failed", NULL };

/* The fields applied, in the order changed_fields lists them. */
static const char *const fields_known[] = { "filename", "platform",
	"user_id", "status", "enhance_with_llm", NULL };

static int
status_known(const char *s)
{
	const char *const *p;

	for (p = jobmeta_statuses; *p != NULL; p++)
		if (strcmp(s, *p) == 0)
			return 1;
	return 0;
}

/* Whether the JSON text escapes a NUL (\u0000) in a string: cJSON would
 * silently cut the string there, and PostgreSQL text cannot hold one. */
static int
escapes_nul(const char *text, size_t len)
{
	size_t i;

	for (i = 0; i + 1 < len; i++) {
		if (text[i] != '\\')
			continue;
		if (text[i + 1] == 'u' && i + 5 < len &&
		    memcmp(text + i + 2, "0000", 4) == 0)
			return 1;
		i++;	/* past the escaped character */
	}
	return 0;
}

/* A string the jobs table can store: valid UTF-8. */
static int
text_ok(const cJSON *v)
{
	return cJSON_IsString(v) &&
	    keymap_utf8_valid(v->valuestring, strlen(v->valuestring));
}

cJSON *
jobmeta_parse(const char *text, size_t len, struct err *e)
{
	cJSON *doc = cJSON_ParseWithLength(text, len), *out = NULL, *v;

	if (doc == NULL) {
		err_set(e, ERR_PERMANENT, "not valid JSON");
		return NULL;
	}
	if (!cJSON_IsObject(doc)) {
		err_set(e, ERR_PERMANENT, "not a JSON object");
		goto out;
	}
	if (escapes_nul(text, len)) {
		err_set(e, ERR_PERMANENT, "a string holds \\u0000, which the "
		    "database cannot store");
		goto out;
	}
	out = cJSON_CreateObject();

	v = cJSON_GetObjectItemCaseSensitive(doc, "status");
	if (v != NULL && !cJSON_IsNull(v)) {
		if (!cJSON_IsString(v) || !status_known(v->valuestring)) {
			err_set(e, ERR_PERMANENT, "status %s%s%s is not one of "
			    "processing, queued, documentation_ready, completed, "
			    "failed", cJSON_IsString(v) ? "\"" : "",
			    cJSON_IsString(v) ? v->valuestring : "(not a string)",
			    cJSON_IsString(v) ? "\"" : "");
			goto fail;
		}
		cJSON_AddStringToObject(out, "status", v->valuestring);
	}
	v = cJSON_GetObjectItemCaseSensitive(doc, "user_id");
	if (v != NULL) {
		if (cJSON_IsNull(v)) {
			cJSON_AddNullToObject(out, "user_id");
		} else if (cJSON_IsString(v) && uuid_valid(v->valuestring)) {
			char id[37];
			size_t i;

			for (i = 0; i < 36; i++)
				id[i] = (char)tolower((unsigned char)v->valuestring[i]);
			id[36] = '\0';
			cJSON_AddStringToObject(out, "user_id", id);
		} else {
			err_set(e, ERR_PERMANENT, "user_id is not a UUID");
			goto fail;
		}
	}
	v = cJSON_GetObjectItemCaseSensitive(doc, "enhance_with_llm");
	if (v != NULL && !cJSON_IsNull(v)) {
		if (!cJSON_IsBool(v)) {
			err_set(e, ERR_PERMANENT, "enhance_with_llm is not true "
			    "or false");
			goto fail;
		}
		cJSON_AddBoolToObject(out, "enhance_with_llm", cJSON_IsTrue(v));
	}
	v = cJSON_GetObjectItemCaseSensitive(doc, "platform");
	if (v != NULL && !cJSON_IsNull(v)) {
		if (!text_ok(v) || v->valuestring[0] == '\0') {
			err_set(e, ERR_PERMANENT, "platform is not a non-empty "
			    "UTF-8 string");
			goto fail;
		}
		cJSON_AddStringToObject(out, "platform", v->valuestring);
	}
	v = cJSON_GetObjectItemCaseSensitive(doc, "filename");
	if (v != NULL && !cJSON_IsNull(v)) {
		if (!text_ok(v)) {
			err_set(e, ERR_PERMANENT, "filename is not a UTF-8 "
			    "string");
			goto fail;
		}
		cJSON_AddStringToObject(out, "filename", v->valuestring);
	}
	goto out;
fail:
	cJSON_Delete(out);
	out = NULL;
out:
	cJSON_Delete(doc);
	return out;
}

void
jobmeta_diff(const cJSON *row, const cJSON *fields, struct jobmeta_diff *d)
{
	const char *const *f;

	memset(d, 0, sizeof(*d));
	d->new_data = cJSON_CreateObject();
	if (row != NULL)
		d->old_data = cJSON_CreateObject();
	d->changed = xcalloc(ARRAY_SIZE(fields_known), sizeof(*d->changed));
	for (f = fields_known; *f != NULL; f++) {
		const cJSON *nv = cJSON_GetObjectItemCaseSensitive(fields, *f);
		const cJSON *ov = row ? cJSON_GetObjectItemCaseSensitive(row, *f) :
		    NULL;

		if (nv == NULL)
			continue;	/* not in job.json: left as it is */
		if (row != NULL && ov != NULL && cJSON_Compare(ov, nv, 1))
			continue;
		if (row != NULL && ov == NULL && cJSON_IsNull(nv))
			continue;
		cJSON_AddItemToObject(d->new_data, *f, cJSON_Duplicate(nv, 1));
		if (d->old_data != NULL)
			cJSON_AddItemToObject(d->old_data, *f, ov ?
			    cJSON_Duplicate(ov, 1) : cJSON_CreateNull());
		d->changed[d->n++] = xstrdup(*f);
	}
}

void
jobmeta_diff_free(struct jobmeta_diff *d)
{
	size_t i;

	cJSON_Delete(d->old_data);
	cJSON_Delete(d->new_data);
	for (i = 0; i < d->n; i++)
		free(d->changed[i]);
	free(d->changed);
	memset(d, 0, sizeof(*d));
}
