/*
 * keymap.c - see keymap.h. Extension tables are small sorted-by-nothing
 * arrays: they are read once per file, and clarity wins over lookup speed.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/keymap.h"

enum keymap_kind
keymap_classify(const char *rel, size_t *job_len, const char **rest)
{
	const char *slash = strchr(rel, '/');

	if (slash == NULL || slash - rel != 36)
		return KEYMAP_NOT_A_JOB;
	{
		char job[37];

		memcpy(job, rel, 36);
		job[36] = '\0';
		if (!uuid_valid(job))
			return KEYMAP_NOT_A_JOB;
	}
	if (slash[1] == '\0')
		return KEYMAP_NOT_A_JOB;
	*job_len = 36;
	*rest = slash + 1;
	return strcmp(slash + 1, "job.json") == 0 ? KEYMAP_JOB_META :
	    KEYMAP_DOCUMENT;
}

char *
keymap_s3_key(const char *job, const char *rest)
{
	if (strncmp(rest, "results/", 8) == 0 && rest[8] != '\0')
		return xasprintf("jobs/%s/results/%s", job, rest + 8);
	return xasprintf("jobs/%s/uploads/%s", job, rest);
}

char *
keymap_path_of_key(const char *key)
{
	char job[37], *rel;
	const char *rest;
	size_t jl;

	if (strncmp(key, "jobs/", 5) != 0 || strlen(key) < 5 + 36 + 1)
		return NULL;
	memcpy(job, key + 5, 36);
	job[36] = '\0';
	rest = key + 5 + 36;
	if (!uuid_valid(job))
		return NULL;
	if (strncmp(rest, "/uploads/", 9) == 0)
		rel = xasprintf("%s/%s", job, rest + 9);
	else if (strncmp(rest, "/results/", 9) == 0)
		rel = xasprintf("%s/%s", job, rest + 1);
	else
		return NULL;
	/* Only a document maps to a key, and only to its own: a key such
	 * as jobs/<job>/uploads/results/x names no file. */
	if (keymap_classify(rel, &jl, &rest) != KEYMAP_DOCUMENT) {
		free(rel);
		return NULL;
	}
	{
		char *back = keymap_s3_key(job, rest);
		int same = strcmp(back, key) == 0;

		free(back);
		if (!same) {
			free(rel);
			return NULL;
		}
	}
	return rel;
}

/* The extension of the last path component, without the dot, or "". */
static const char *
extension(const char *name)
{
	const char *base = strrchr(name, '/');
	const char *dot;

	base = base ? base + 1 : name;
	dot = strrchr(base, '.');
	return (dot == NULL || dot == base) ? "" : dot + 1;
}

static int
ext_in(const char *ext, const char *const *list)
{
	for (; *list != NULL; list++)
		if (strcasecmp(ext, *list) == 0)
			return 1;
	return 0;
}

const char *
keymap_document_type(const char *rest)
{
	static const char *const doc[] = { "md", "markdown", "html", "pdf",
	    "docx", "txt", NULL };
	static const char *const integ[] = { "xml", "iflw", "process", "zip",
	    "jar", NULL };
	const char *ext = extension(rest);

	if (strncmp(rest, "results/", 8) == 0)
		return "result";
	if (ext_in(ext, doc))
		return "documentation";
	if (ext_in(ext, integ))
		return "integration";
	return "other";
}

const char *
keymap_content_type(const char *name)
{
	static const struct { const char *ext, *type; } types[] = {
		{ "xml", "application/xml" },
		{ "iflw", "application/xml" },
		{ "process", "application/xml" },
		{ "bpmn", "application/xml" },
		{ "xsd", "application/xml" },
		{ "wsdl", "application/xml" },
		{ "json", "application/json" },
		{ "md", "text/markdown; charset=utf-8" },
		{ "markdown", "text/markdown; charset=utf-8" },
		{ "txt", "text/plain; charset=utf-8" },
		{ "csv", "text/csv" },
		{ "html", "text/html; charset=utf-8" },
		{ "htm", "text/html; charset=utf-8" },
		{ "pdf", "application/pdf" },
		{ "docx", "application/vnd.openxmlformats-officedocument."
		    "wordprocessingml.document" },
		{ "zip", "application/zip" },
		{ "jar", "application/java-archive" },
		{ "png", "image/png" },
		{ "jpg", "image/jpeg" },
		{ "jpeg", "image/jpeg" },
		{ "svg", "image/svg+xml" },
		{ "xhtml", "application/xhtml+xml" },
		{ "xht", "application/xhtml+xml" },
		{ "js", "text/javascript" },
		{ "mjs", "text/javascript" },
		{ "yaml", "application/yaml" },
		{ "yml", "application/yaml" },
		{ "properties", "text/plain; charset=utf-8" },
	};
	const char *ext = extension(name);
	size_t i;

	for (i = 0; i < ARRAY_SIZE(types); i++)
		if (strcasecmp(ext, types[i].ext) == 0)
			return types[i].type;
	return "application/octet-stream";
}

const char *
keymap_content_disposition(const char *content_type)
{
	static const char *const active[] = { "text/html",
	    "application/xhtml+xml", "image/svg+xml", "text/javascript",
	    "application/javascript", "application/xml", "text/xml", NULL };
	size_t n = strcspn(content_type, ";"), i;

	for (i = 0; active[i] != NULL; i++)
		if (strlen(active[i]) == n &&
		    strncasecmp(content_type, active[i], n) == 0)
			return "attachment";
	/* Any other XML (application/...+xml) is rendered as XML too. */
	if (n > 4 && strncasecmp(content_type + n - 4, "+xml", 4) == 0)
		return "attachment";
	return NULL;
}

int
keymap_is_xml(const char *name)
{
	static const char *const xml[] = { "xml", "iflw", "process", "bpmn",
	    NULL };

	return ext_in(extension(name), xml);
}

int
keymap_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < n) {
		unsigned char c = p[i];
		size_t len;
		unsigned cp;

		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			len = 2, cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			len = 3, cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4, cp = c & 0x07;
		} else {
			return 0;
		}
		if (i + len > n)
			return 0;
		for (size_t k = 1; k < len; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += len;
	}
	return 1;
}

int
keymap_check_key(const char *key, struct err *e)
{
	size_t n = strlen(key);

	if (!keymap_utf8_valid(key, n)) {
		err_set(e, ERR_PERMANENT, "the file name is not valid UTF-8; "
		    "S3 keys must be (rename the file to upload it)");
		return -1;
	}
	if (n > KEYMAP_MAX_KEY) {
		err_set(e, ERR_PERMANENT, "the S3 key would be %zu bytes; S3 "
		    "allows at most %d (shorten the path)", n, KEYMAP_MAX_KEY);
		return -1;
	}
	return 0;
}
