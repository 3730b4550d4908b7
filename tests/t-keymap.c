/*
 * t-keymap.c - proves the path-to-key mapping the app relies on
 * (uploads/ and results/ prefixes), document types, content types, and
 * that names S3 cannot take (invalid UTF-8, over 1,024 bytes) are refused
 * with a clear message.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "base/keymap.h"
#include "tap.h"

#define JOB "6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f"

int
main(void)
{
	const char *rest = NULL;
	size_t jl = 0;
	char *key, long_name[1100];
	struct err e = {0};

	tap_int(keymap_classify(JOB "/integration.xml", &jl, &rest),
	    KEYMAP_DOCUMENT, "a file in a job directory is a document");
	tap_ok(jl == 36 && strcmp(rest, "integration.xml") == 0,
	    "job id and rest split at the first slash");
	tap_int(keymap_classify(JOB "/job.json", &jl, &rest), KEYMAP_JOB_META,
	    "job.json at the job's top is job metadata");
	tap_int(keymap_classify(JOB "/docs/job.json", &jl, &rest),
	    KEYMAP_DOCUMENT, "a job.json deeper down is just a document");
	tap_int(keymap_classify("not-a-job/file.xml", &jl, &rest),
	    KEYMAP_NOT_A_JOB, "a directory that is not a UUID is not a job");
	tap_int(keymap_classify("file.xml", &jl, &rest), KEYMAP_NOT_A_JOB,
	    "a file at the root is not in a job");
	tap_int(keymap_classify("6F1C2B9E-3D4A-4C5B-9E8F-0A1B2C3D4E5F/a", &jl,
	    &rest), KEYMAP_DOCUMENT, "upper-case UUIDs are jobs too");

	key = keymap_s3_key(JOB, "integration.xml");
	tap_str(key, "jobs/" JOB "/uploads/integration.xml", "upload key");
	free(key);
	key = keymap_s3_key(JOB, "docs/notes.md");
	tap_str(key, "jobs/" JOB "/uploads/docs/notes.md", "nested upload key");
	free(key);
	key = keymap_s3_key(JOB, "results/generated_iflow.xml");
	tap_str(key, "jobs/" JOB "/results/generated_iflow.xml", "result key");
	free(key);
	key = keymap_s3_key(JOB, "resultsfoo/x");
	tap_str(key, "jobs/" JOB "/uploads/resultsfoo/x",
	    "only the results/ directory maps to results");
	free(key);

	/* The way back, for verify's list of objects with no local file. */
	key = keymap_path_of_key("jobs/" JOB "/uploads/docs/notes.md");
	tap_str(key, JOB "/docs/notes.md", "an upload key maps back to its path");
	free(key);
	key = keymap_path_of_key("jobs/" JOB "/results/generated_iflow.xml");
	tap_str(key, JOB "/results/generated_iflow.xml",
	    "a result key maps back to the results/ directory");
	free(key);
	tap_ok(keymap_path_of_key("jobs/" JOB "/uploads/results/x.xml") == NULL,
	    "uploads/results/x names no file (results/x maps to results/)");
	tap_ok(keymap_path_of_key("jobs/" JOB "/uploads/job.json") == NULL,
	    "nor does uploads/job.json (job metadata is not uploaded)");
	tap_ok(keymap_path_of_key("jobs/not-a-uuid/uploads/a.xml") == NULL &&
	    keymap_path_of_key("jobs/" JOB "/other/a.xml") == NULL &&
	    keymap_path_of_key("jobs/" JOB "/uploads/") == NULL &&
	    keymap_path_of_key("jobs/") == NULL &&
	    keymap_path_of_key("other/" JOB "/uploads/a") == NULL,
	    "keys outside jobs/<uuid>/uploads|results/ name no file");

	tap_str(keymap_document_type("results/a.md"), "result", "results win");
	tap_str(keymap_document_type("notes.MD"), "documentation", ".MD");
	tap_str(keymap_document_type("x.docx"), "documentation", ".docx");
	tap_str(keymap_document_type("flow.iflw"), "integration", ".iflw");
	tap_str(keymap_document_type("lib.jar"), "integration", ".jar");
	tap_str(keymap_document_type("photo.png"), "other", ".png");
	tap_str(keymap_document_type(".hidden"), "other", "no extension");
	tap_str(keymap_content_type("a/b.xml"), "application/xml", "xml type");
	tap_str(keymap_content_type("a.pdf"), "application/pdf", "pdf type");
	{
		/* Active content is stored as a download (issue 12). */
		static const char *const active[] = { "x.html", "x.HTM",
		    "x.svg", "x.xhtml", "x.js", "x.mjs", "x.xml", "x.iflw" };
		static const char *const passive[] = { "x.pdf", "x.txt",
		    "x.md", "x.png", "x.json", "x.weird" };
		size_t i;
		int bad = 0;

		for (i = 0; i < ARRAY_SIZE(active); i++)
			bad += keymap_content_disposition(keymap_content_type(
			    active[i])) == NULL;
		for (i = 0; i < ARRAY_SIZE(passive); i++)
			bad += keymap_content_disposition(keymap_content_type(
			    passive[i])) != NULL;
		tap_int(bad, 0, "HTML, SVG, XHTML, JavaScript and XML are "
		    "attachments; PDF, text, images, JSON are not");
		tap_str(keymap_content_type("x.svg"), "image/svg+xml",
		    "the type itself stays the real one");
	}
	tap_str(keymap_content_type("a.weird"), "application/octet-stream",
	    "unknown type");
	tap_ok(keymap_is_xml("x.process") && !keymap_is_xml("x.json"),
	    "XML by extension");

	tap_int(keymap_check_key("jobs/x/uploads/caf\xc3\xa9 (1) +=&;.xml", &e),
	    0, "awkward but valid UTF-8 names are fine");
	tap_int(keymap_check_key("jobs/x/uploads/bad\xff.xml", &e), -1,
	    "invalid UTF-8 is refused");
	tap_ok(strstr(e.msg, "not valid UTF-8") != NULL, "with a clear message");
	tap_int(keymap_check_key("jobs/\xc0\xaf", &e), -1, "overlong UTF-8 "
	    "is refused");
	tap_int(keymap_check_key("jobs/\xed\xa0\x80", &e), -1, "UTF-16 "
	    "surrogates are refused");
	memset(long_name, 'a', sizeof(long_name));
	long_name[1024] = '\0';
	tap_int(keymap_check_key(long_name, &e), 0, "1,024 bytes is allowed");
	long_name[1024] = 'a';
	long_name[1025] = '\0';
	tap_int(keymap_check_key(long_name, &e), -1, "1,025 bytes is refused");
	tap_ok(strstr(e.msg, "1025 bytes") != NULL, "the message gives the "
	    "length");

	/* A message longer than its buffer is cut on a character boundary. */
	{
		char big[3000];
		size_t i, len;

		for (i = 0; i + 2 < sizeof(big); i += 2)
			memcpy(big + i, "\xc3\xa9", 2);	/* e-acute */
		big[i] = '\0';
		err_set(&e, ERR_PERMANENT, "%s", big);	/* cut mid-character */
		len = strlen(e.msg);
		tap_ok(len < sizeof(e.msg), "a long message is cut (%zu bytes)",
		    len);
		tap_ok(keymap_utf8_valid(e.msg, len), "and stays valid UTF-8");
		tap_ok(len >= sizeof(e.msg) - 4, "losing at most the cut "
		    "character");
		tap_int((int64_t)len, (int64_t)sizeof(e.msg) - 2,
		    "the half character is dropped");
		err_set(&e, ERR_PERMANENT, "x%s", big);	/* between characters */
		tap_int((int64_t)strlen(e.msg), (int64_t)sizeof(e.msg) - 1,
		    "a message cut between characters keeps every byte");
	}
	return tap_done();
}
