/*
 * t-s3err.c - proves S3's XML error replies are parsed with libxml2 and
 * classified: throttling, 5xx and timeouts are retried; wrong credentials
 * or bucket (and ExpiredToken) pause the leg (ERR_REFUSED), AccessDenied is
 * for the engine to place (the leg or the key, ERR_DENIED); key and size
 * errors wait for an admin.
 */
#include "config.h"

#include <string.h>

#include <libxml/parser.h>

#include "agent/s3/s3.h"
#include "tap.h"

int
main(void)
{
	char code[64], msg[256];
	const char *slow = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>"
	    "<Code>SlowDown</Code><Message>Please reduce your request rate."
	    "</Message><RequestId>1</RequestId></Error>";
	const char *denied = "<Error><Code>AccessDenied</Code><Message>Access "
	    "Denied &amp; logged</Message></Error>";
	struct { long status; const char *code; enum err_class want; } cases[] = {
		{ 503, "SlowDown", ERR_TRANSIENT },
		{ 500, "InternalError", ERR_TRANSIENT },
		{ 400, "RequestTimeout", ERR_TRANSIENT },
		{ 403, "RequestTimeTooSkewed", ERR_TRANSIENT },
		{ 400, "BadDigest", ERR_TRANSIENT },
		{ 0, "", ERR_TRANSIENT },
		{ 502, "", ERR_TRANSIENT },
		{ 429, "", ERR_TRANSIENT },
		{ 403, "AccessDenied", ERR_DENIED },
		{ 404, "NoSuchBucket", ERR_REFUSED },
		{ 403, "InvalidAccessKeyId", ERR_REFUSED },
		{ 403, "SignatureDoesNotMatch", ERR_REFUSED },
		{ 400, "EntityTooLarge", ERR_PERMANENT },
		{ 400, "KeyTooLongError", ERR_PERMANENT },
		{ 301, "PermanentRedirect", ERR_REFUSED },
		{ 400, "ExpiredToken", ERR_REFUSED },
		{ 403, "", ERR_DENIED },
		{ 404, "", ERR_PERMANENT },
	};
	size_t i;

	xmlInitParser();
	tap_int(s3_parse_error(slow, strlen(slow), code, sizeof(code), msg,
	    sizeof(msg)), 0, "an S3 error document parses");
	tap_str(code, "SlowDown", "its code");
	tap_str(msg, "Please reduce your request rate.", "its message");
	s3_parse_error(denied, strlen(denied), code, sizeof(code), msg,
	    sizeof(msg));
	tap_str(msg, "Access Denied & logged", "entities in the message decode");
	tap_int(s3_parse_error("<html>502</html>", 16, code, sizeof(code), msg,
	    sizeof(msg)), -1, "an HTML proxy page is not an S3 error");
	tap_int(s3_parse_error("<Error><Code>X", 14, code, sizeof(code), msg,
	    sizeof(msg)), -1, "a truncated reply is not trusted");
	{
		const char *lng = "<Error><Code>AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA</Code>"
		    "</Error>";

		s3_parse_error(lng, strlen(lng), code, sizeof(code), msg,
		    sizeof(msg));
	}
	tap_int((int64_t)strlen(code), 63, "a long code is truncated to fit");
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		tap_int(s3_classify(cases[i].status, cases[i].code), cases[i].want,
		    "HTTP %ld %s is %s", cases[i].status, cases[i].code,
		    cases[i].want == ERR_TRANSIENT ? "retried" : cases[i].want ==
		    ERR_REFUSED ? "a refusal that pauses the leg" : cases[i].want ==
		    ERR_DENIED ? "a denial the engine places" : "permanent");
	xmlCleanupParser();
	return tap_done();
}
