/*
 * keymap.h - how a file under the uploads root maps to the app's names:
 * its job, its S3 key, its document type and its content type. Pure
 * functions of the relative path, shared by the S3 and database legs and
 * by outboxctl, so both stores always agree.
 *
 *   <job>/integration.xml        -> jobs/<job>/uploads/integration.xml
 *   <job>/docs/notes.md          -> jobs/<job>/uploads/docs/notes.md
 *   <job>/results/iflow.xml      -> jobs/<job>/results/iflow.xml
 *   <job>/job.json               -> job metadata, not a document
 */
#ifndef OUTBOXD_KEYMAP_H
#define OUTBOXD_KEYMAP_H

#include <stddef.h>

#include "base/util.h"

/* S3's limit on a key's length in bytes. */
#define KEYMAP_MAX_KEY 1024

enum keymap_kind {
	KEYMAP_NOT_A_JOB,	/* not under a <uuid>/ directory */
	KEYMAP_DOCUMENT,	/* a file to upload and record */
	KEYMAP_JOB_META,	/* <job>/job.json */
};

/*
 * Classifies rel ("<job>/<rest>"). When it is in a job, *job_len is the
 * length of the job id prefix and *rest points into rel after the slash.
 */
enum keymap_kind keymap_classify(const char *rel, size_t *job_len,
    const char **rest);

/* The S3 key for rest within job; caller frees. */
char *keymap_s3_key(const char *job, const char *rest);

/*
 * The relative path whose S3 key is key (the inverse of keymap_s3_key),
 * or NULL when no file under the uploads root maps to key; caller frees.
 */
char *keymap_path_of_key(const char *key);

/* "result", "documentation", "integration" or "other" (static strings). */
const char *keymap_document_type(const char *rest);

/* A MIME type by extension, "application/octet-stream" when unknown. */
const char *keymap_content_type(const char *name);

/* "attachment" for a type a browser would run in the bucket's origin
 * (HTML, XHTML, SVG, JavaScript, and XML, which may carry XHTML
 * script): stored so, it is downloaded, never shown. NULL otherwise. */
const char *keymap_content_disposition(const char *content_type);

/* 1 when the file name's extension says it may be XML worth parsing. */
int keymap_is_xml(const char *name);

/*
 * Checks that key can be stored in S3: valid UTF-8, at most 1,024 bytes. Returns 0, or -1 with e (ERR_PERMANENT) saying why.
 */
int keymap_check_key(const char *key, struct err *e);

/* 1 when s (n bytes) is well-formed UTF-8 (no overlongs, no surrogates). */
int keymap_utf8_valid(const char *s, size_t n);

#endif
