/*
 * fuzz-redact.c - libFuzzer target for cfg_redact (config/redact.c): a
 * database password never appears in a message, whatever libpq quotes.
 *
 * The input chooses how a connection string is written and holds the
 * password: byte 0 the form (a URI; key/value, unquoted; key/value,
 * quoted; VCAP_SERVICES with a credentials uri; VCAP_SERVICES with a
 * credentials password), byte 1 which of the URI's password bytes are
 * percent-encoded (the others stay raw, so "%XY" and raw '@', '/' occur),
 * the rest the password (no NUL, no '*', the mask's own byte; no '=' in
 * an unquoted key/value one, whose grammar would make it another option,
 * nor a leading space, which that grammar skips).
 * Checked on every input, for libpq's own parse error of the string, for
 * a message quoting the whole string, for the string itself, and (VCAP)
 * for cfg_parse_vcap's problems: the password as the user meant it, as
 * written in the string, and each of its space-separated words of 4 bytes
 * or more, never appear in what cfg_redact returns.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <libpq-fe.h>

#include "base/util.h"
#include "config/cfg.h"
#include "config/redact.h"

#define FUZZ_NAME "fuzz-redact"
#include "tests/fuzz/fuzz.h"

enum form { URI, KV_RAW, KV_QUOTED, VCAP_URI, VCAP_PASSWORD, NFORMS };

struct secret {
	char meant[80];		/* the password */
	char written[256];	/* as it stands in the string */
};

static void
never_in(const char *text, const struct secret *s, const char *where)
{
	const char *p = s->meant;

	if (strlen(s->meant) >= 4)
		CHECK(strstr(text, s->meant) == NULL, "%s: password [%s] in "
		    "[%s]", where, s->meant, text);
	if (strlen(s->written) >= 4)
		CHECK(strstr(text, s->written) == NULL, "%s: password as "
		    "written [%s] in [%s]", where, s->written, text);
	while (*p != '\0') {
		size_t n;
		char w[80];

		p += strspn(p, " \t\r\n\v\f");
		n = strcspn(p, " \t\r\n\v\f");
		if (n >= 4) {
			memcpy(w, p, n);
			w[n] = '\0';
			CHECK(strstr(text, w) == NULL, "%s: word [%s] of the "
			    "password in [%s]", where, w, text);
		}
		p += n;
	}
}

/* Every message the string can give, redacted, checked. */
static void
messages(const char *ci, const struct secret *s)
{
	char *err = NULL, *red, *quoted;
	PQconninfoOption *o = PQconninfoParse(ci, &err);

	if (err != NULL) {
		red = cfg_redact(err, ci);
		never_in(red, s, "libpq's parse error");
		free(red);
	}
	PQconninfoFree(o);
	PQfreemem(err);
	quoted = xasprintf("could not use \"%s\" here", ci);
	red = cfg_redact(quoted, ci);
	never_in(red, s, "a message quoting the string");
	free(red);
	free(quoted);
	red = cfg_redact(ci, ci);
	never_in(red, s, "the string itself");
	free(red);
}

static void
vcap(const cJSON *cred, const struct secret *s)
{
	cJSON *root = cJSON_CreateObject(), *arr = cJSON_CreateArray();
	cJSON *svc = cJSON_CreateObject();
	struct cfg_vcap v = {0};
	struct cfg_problems p = {0};
	char *json;
	size_t i;

	cJSON_AddStringToObject(svc, "name", "db");
	cJSON_AddItemToArray(cJSON_AddArrayToObject(svc, "tags"),
	    cJSON_CreateString("postgresql"));
	cJSON_AddItemToObject(svc, "credentials", cJSON_Duplicate(cred, 1));
	cJSON_AddItemToArray(arr, svc);
	cJSON_AddItemToObject(root, "postgresql", arr);
	json = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	cfg_parse_vcap(json, &v, &p);
	for (i = 0; i < p.n; i++) {
		char *red = cfg_redact(p.lines[i], v.database_url);

		never_in(red, s, "a VCAP_SERVICES problem");
		free(red);
	}
	if (v.database_url != NULL)
		messages(v.database_url, s);
	cfg_problems_free(&p);
	cfg_vcap_free(&v);
	free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct secret s = {{0}};
	enum form f;
	unsigned enc;
	size_t i, n = 0, k = 0;
	char *ci = NULL;
	cJSON *cred;

	if (size < 3)
		return 0;
	f = (enum form)(data[0] % NFORMS);
	enc = data[1];
	for (i = 2; i < size && n < sizeof(s.meant) - 1; i++) {
		char c = (char)data[i];

		if (c == '\0' || c == '*' || (f == KV_RAW && c == '='))
			continue;
		/* libpq skips the spaces after "password=": an unquoted
		 * password cannot start with one. */
		if (f == KV_RAW && n == 0 && strchr(" \t\r\n\v\f", c))
			continue;
		s.meant[n++] = c;
	}
	if (n == 0)
		return 0;
	/* How the password stands in the string. */
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s.meant[i];

		if ((f == URI || f == VCAP_URI) && ((enc >> (i % 8)) & 1))
			k += (size_t)snprintf(s.written + k,
			    sizeof(s.written) - k, "%%%02X", c);
		else if (f == KV_QUOTED && (c == '\'' || c == '\\'))
			k += (size_t)snprintf(s.written + k,
			    sizeof(s.written) - k, "\\%c", c);
		else
			s.written[k++] = (char)c;
	}
	s.written[k] = '\0';
	switch (f) {
	case URI:
		ci = xasprintf("postgresql://u:%s@db.example:5432/postgres",
		    s.written);
		messages(ci, &s);
		break;
	case KV_RAW:
		ci = xasprintf("host=db.example password=%s dbname=postgres",
		    s.written);
		messages(ci, &s);
		break;
	case KV_QUOTED:
		ci = xasprintf("host=db.example password='%s' dbname=postgres",
		    s.written);
		messages(ci, &s);
		break;
	case VCAP_URI:
		ci = xasprintf("postgres://u:%s@db.example:5432/postgres",
		    s.written);
		cred = cJSON_CreateObject();
		cJSON_AddStringToObject(cred, "uri", ci);
		vcap(cred, &s);
		cJSON_Delete(cred);
		break;
	default:
		cred = cJSON_CreateObject();
		cJSON_AddStringToObject(cred, "hostname", "db.example");
		cJSON_AddStringToObject(cred, "username", "u");
		cJSON_AddStringToObject(cred, "password", s.meant);
		cJSON_AddStringToObject(cred, "port", "5x32");
		/* The string outboxd builds quotes it: written = meant
		 * with ' and \ escaped, which never_in checks as meant. */
		s.written[0] = '\0';
		vcap(cred, &s);
		cJSON_Delete(cred);
		break;
	}
	free(ci);
	return 0;
}
