/*
 * t-jobmeta.c - proves job.json is checked before anything is written
 * (unknown status, bad user_id, invalid JSON are refused with a message),
 * and that the JSON diff yields the old_data, new_data and changed_fields
 * the job_history rows need.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "agent/db/jobmeta.h"
#include "tap.h"

static cJSON *
parse(const char *s, struct err *e)
{
	return jobmeta_parse(s, strlen(s), e);
}

static char *
print(const cJSON *j)
{
	return j ? cJSON_PrintUnformatted(j) : strdup("null");
}

int
main(void)
{
	struct err e = {0};
	struct jobmeta_diff d;
	cJSON *f, *row;
	char *s;

	f = parse("{\"id\":\"x\",\"filename\":\"a.xml\",\"platform\":\"mulesoft\","
	    "\"user_id\":\"3B241101-E2BB-4255-8CAF-4136C566A962\","
	    "\"status\":\"queued\",\"enhance_with_llm\":true,\"extra\":1}", &e);
	tap_ok(f != NULL, "the app's job.json parses");
	s = print(f);
	tap_str(s, "{\"status\":\"queued\",\"user_id\":\"3b241101-e2bb-4255-8caf-"
	    "4136c566a962\",\"enhance_with_llm\":true,\"platform\":\"mulesoft\","
	    "\"filename\":\"a.xml\"}", "only known fields kept, user_id "
	    "lower-cased");
	free(s);

	jobmeta_diff(NULL, f, &d);
	tap_int((int64_t)d.n, 5, "a new job: every field present changed");
	tap_ok(d.old_data == NULL, "a new job has no old_data");
	jobmeta_diff_free(&d);

	row = cJSON_Parse("{\"filename\":\"a.xml\",\"platform\":\"mulesoft\","
	    "\"user_id\":\"3b241101-e2bb-4255-8caf-4136c566a962\","
	    "\"status\":\"processing\",\"enhance_with_llm\":true}");
	jobmeta_diff(row, f, &d);
	tap_int((int64_t)d.n, 1, "one field changed");
	tap_str(d.n ? d.changed[0] : "", "status", "it is status");
	s = print(d.old_data);
	tap_str(s, "{\"status\":\"processing\"}", "old_data holds the old value");
	free(s);
	s = print(d.new_data);
	tap_str(s, "{\"status\":\"queued\"}", "new_data holds the new value");
	free(s);
	jobmeta_diff_free(&d);
	cJSON_Delete(f);

	f = parse("{\"status\":\"processing\",\"enhance_with_llm\":true}", &e);
	jobmeta_diff(row, f, &d);
	tap_int((int64_t)d.n, 0, "nothing changed: no history row needed");
	jobmeta_diff_free(&d);
	cJSON_Delete(f);

	f = parse("{\"user_id\":null,\"enhance_with_llm\":false}", &e);
	jobmeta_diff(row, f, &d);
	tap_int((int64_t)d.n, 2, "null and false are changes too");
	s = print(d.new_data);
	tap_str(s, "{\"user_id\":null,\"enhance_with_llm\":false}",
	    "new_data keeps the null");
	free(s);
	jobmeta_diff_free(&d);
	cJSON_Delete(f);
	cJSON_Delete(row);

	tap_ok(parse("{\"status\":\"done\"}", &e) == NULL, "an unknown status "
	    "is refused");
	tap_ok(strstr(e.msg, "status \"done\" is not one of") != NULL,
	    "naming the status: %s", e.msg);
	tap_ok(parse("{\"user_id\":\"bob\"}", &e) == NULL, "a bad user_id is "
	    "refused");
	tap_ok(parse("{\"enhance_with_llm\":\"yes\"}", &e) == NULL,
	    "a non-boolean enhance_with_llm is refused");
	tap_ok(parse("{\"status\":", &e) == NULL, "truncated JSON is refused");
	tap_str(e.msg, "not valid JSON", "as not valid JSON");
	tap_ok(parse("[1]", &e) == NULL, "an array is refused");
	tap_ok(parse("{\"filename\":\"a\\u0000b.xml\"}", &e) == NULL,
	    "a string with an escaped NUL is refused (cJSON would cut it)");
	tap_ok(strstr(e.msg, "u0000") != NULL, "saying so: %s", e.msg);
	f = parse("{\"filename\":\"a\\\\u0000.xml\"}", &e);
	tap_ok(f != NULL, "an escaped backslash before u0000 is not a NUL");
	cJSON_Delete(f);
	tap_ok(parse("{\"filename\":\"caf\xe9.xml\"}", &e) == NULL,
	    "a filename that is not UTF-8 is refused (the database rejects it)");
	tap_ok(parse("{\"platform\":\"\xff\"}", &e) == NULL,
	    "so is such a platform");
	f = parse("{\"filename\":\"caf\xc3\xa9 \\u00e9.xml\"}", &e);
	tap_ok(f != NULL, "UTF-8 and \\u escapes are taken");
	cJSON_Delete(f);
	return tap_done();
}
