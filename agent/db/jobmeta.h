/*
 * jobmeta.h - the app's job.json: the fields outboxd applies to the job's
 * row (user_id, platform, status, enhance_with_llm, filename), checked
 * before anything is written, and the difference against the row as it
 * is, for job_history (old_data, new_data, changed_fields). Pure, cJSON.
 */
#ifndef OUTBOXD_JOBMETA_H
#define OUTBOXD_JOBMETA_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "base/util.h"

/* The statuses jobs.status allows, in the app's order. */
extern const char *const jobmeta_statuses[];

/*
 * Parses job.json text. Returns an object holding only the known fields
 * present (user_id lowercased), or NULL with e saying what is wrong
 * (invalid JSON, unknown status, a user_id that is not a UUID, ...).
 */
cJSON *jobmeta_parse(const char *text, size_t len, struct err *e);

struct jobmeta_diff {
	cJSON *old_data;	/* changed fields' old values; NULL for a new job */
	cJSON *new_data;	/* changed fields' new values */
	char **changed;		/* their names, in a fixed order */
	size_t n;		/* how many changed; 0 means nothing to do */
};

/*
 * Compares fields (from jobmeta_parse) with row (the job's current row
 * as JSON, or NULL when there is none yet). Fills d; free it with
 * jobmeta_diff_free.
 */
void jobmeta_diff(const cJSON *row, const cJSON *fields, struct jobmeta_diff *d);
void jobmeta_diff_free(struct jobmeta_diff *d);

#endif
