/*
 * fuzz-s3error.c - libFuzzer target for s3_parse_error() (agent/s3/s3.c,
 * libxml2): the body of an S3 error reply, any bytes at all, as a server
 * or anything between us and it might send.
 *
 * Each input is parsed into buffers of the sizes outboxd uses (64-byte
 * code, 512-byte message) and into tiny ones (1 and 7 bytes), each an
 * exact heap allocation filled with non-zero bytes. Checked:
 *   - the return value is 0 or -1; on -1 code and message are "";
 *   - code and message are NUL-terminated within their buffers (and
 *     AddressSanitizer sees any byte written past them);
 *   - a small buffer holds a prefix of what the large one got;
 *   - s3_classify() of the code, with any status, says transient or
 *     permanent;
 *   - libxml2 never loads an external entity or DTD named by the reply
 *     (no file or URL is read because of what a server sent).
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/parserInternals.h>

#include "agent/s3/s3.h"

#define FUZZ_NAME "fuzz-s3error"
#include "tests/fuzz/fuzz.h"

static xmlParserInputPtr
no_external(const char *url, const char *id, xmlParserCtxtPtr ctxt)
{
	(void)ctxt;
	fprintf(stderr, "fuzz-s3error: libxml2 tried to load an external "
	    "resource: url \"%s\" id \"%s\"\n", url ? url : "(null)",
	    id ? id : "(null)");
	abort();
	return NULL;
}

static void
quiet(void *ctx, const char *msg, ...)
{
	(void)ctx;
	(void)msg;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	xmlInitParser();
	xmlSetExternalEntityLoader(no_external);
	/* XML_PARSE_NOERROR already silences the parser; this catches the
	 * rest (a fuzzer's log full of libxml2 chatter hides the findings). */
	xmlSetGenericErrorFunc(NULL, quiet);
	return 0;
}

/* Parses into fresh ncode/nmsg-byte buffers; returns the rc. */
static int
parse(const uint8_t *data, size_t size, size_t ncode, size_t nmsg,
    char **code, char **msg)
{
	int rc;

	*code = malloc(ncode);
	*msg = malloc(nmsg);
	memset(*code, 0x5a, ncode);
	memset(*msg, 0x5a, nmsg);
	rc = s3_parse_error((const char *)data, size, *code, ncode, *msg, nmsg);
	CHECK(rc == 0 || rc == -1, "returned %d", rc);
	CHECK(memchr(*code, '\0', ncode) != NULL, "code not terminated "
	    "within %zu bytes", ncode);
	CHECK(memchr(*msg, '\0', nmsg) != NULL, "message not terminated "
	    "within %zu bytes", nmsg);
	if (rc != 0)
		CHECK((*code)[0] == '\0' && (*msg)[0] == '\0', "rc %d with code "
		    "\"%s\" message \"%s\"", rc, *code, *msg);
	return rc;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const long statuses[] = { 0, 200, 301, 400, 403, 404, 408, 409,
	    429, 500, 503, 599, -1 };
	static const size_t small[][2] = { { 1, 1 }, { 7, 13 } };
	char *code, *msg, *c2, *m2;
	int rc, rc2;
	size_t i;

	if (size > 256 * 1024)
		return -1;
	/* Exactly size bytes: no NUL after them, reads past are caught. */
	{
		uint8_t *copy = malloc(size ? size : 1);

		memcpy(copy, data, size);
		rc = parse(copy, size, 64, 512, &code, &msg);
		free(copy);
	}
	for (i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
		enum err_class c = s3_classify(statuses[i], code);

		/* Refused and denied (issue 14) pause the leg; nothing else
		 * than these four may come out. */
		CHECK(c == ERR_TRANSIENT || c == ERR_PERMANENT ||
		    c == ERR_REFUSED || c == ERR_DENIED, "class %d for "
		    "%ld \"%s\"", (int)c, statuses[i], code);
		if (statuses[i] == 0 || statuses[i] >= 500 ||
		    statuses[i] == 429)
			CHECK(c == ERR_TRANSIENT, "HTTP %ld \"%s\" is permanent",
			    statuses[i], code);
	}
	/* A 403 without a code (a HEAD has no body) is taken as AccessDenied. */
	CHECK(s3_classify(403, NULL) == ERR_DENIED, "NULL code");

	for (i = 0; i < sizeof(small) / sizeof(small[0]); i++) {
		rc2 = parse(data, size, small[i][0], small[i][1], &c2, &m2);
		CHECK(rc2 == rc, "rc %d with small buffers, %d with large", rc2,
		    rc);
		CHECK(strncmp(c2, code, strlen(c2)) == 0 &&
		    strncmp(m2, msg, strlen(m2)) == 0, "small buffers got "
		    "\"%s\"/\"%s\", large \"%s\"/\"%s\"", c2, m2, code, msg);
		free(c2);
		free(m2);
	}
	free(code);
	free(msg);
	return 0;
}
