/*
 * t-s3err.c - proves S3's XML error replies are parsed with libxml2 and
 * classified: throttling, 5xx and timeouts are retried; wrong credentials
 * or bucket (and ExpiredToken) pause the leg (ERR_REFUSED), AccessDenied is
 * for the engine to place (the leg or the key, ERR_DENIED); key and size
 * errors wait for an admin. And that a ListObjectsV2 page (verify's list
 * of objects with no local file) is parsed defensively: url-encoded keys
 * decoded, bad escapes and NULs handed over raw, continuation tokens
 * followed, no entity expanded, anything else refused.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <libxml/parser.h>

#include "agent/s3/s3.h"
#include "tap.h"

/* Collects a listing's keys, "|"-joined, raw ones marked "!". */
static void
gather(void *arg, const char *key, size_t len, int raw)
{
	char *out = arg;
	size_t n = strlen(out);

	snprintf(out + n, 512 - n, "%s%s%.*s", n ? "|" : "", raw ? "!" : "",
	    (int)len, key);
}

static void
listing(void)
{
	char keys[512], token[64];
	const char *page1 = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
	    "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
	    "<Name>b</Name><Prefix>jobs%2F</Prefix><KeyCount>4</KeyCount>"
	    "<MaxKeys>1000</MaxKeys><EncodingType>url</EncodingType>"
	    "<IsTruncated>true</IsTruncated><NextContinuationToken>tok+/=1"
	    "</NextContinuationToken>"
	    "<Contents><Key>jobs/a%2Bb+c.txt</Key><Size>1</Size></Contents>"
	    "<Contents><Key>jobs/%E2%9C%93%0A%1B[2J</Key></Contents>"
	    "<Contents><Key>jobs/nul%00x</Key></Contents>"
	    "<Contents><Key>jobs/bad%G1</Key></Contents>"
	    "<Contents><Size>3</Size></Contents>"
	    "</ListBucketResult>";
	const char *plain = "<ListBucketResult><IsTruncated>false</IsTruncated>"
	    "<Contents><Key>jobs/a+b%41 &amp; c</Key></Contents>"
	    "</ListBucketResult>";
	const char *xxe = "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY e "
	    "SYSTEM \"file:///etc/passwd\">]><ListBucketResult><Contents><Key>"
	    "&e;</Key></Contents></ListBucketResult>";
	const char *notok = "<ListBucketResult><IsTruncated>true</IsTruncated>"
	    "<Contents><Key>k</Key></Contents></ListBucketResult>";

	keys[0] = '\0';
	tap_int(s3_parse_list(page1, strlen(page1), gather, keys, token,
	    sizeof(token)), 1, "a truncated page says there is more");
	tap_str(token, "tok+/=1", "and hands over its continuation token as is");
	tap_str(keys, "jobs/a+b c.txt|jobs/\xe2\x9c\x93\n\x1b[2J|!jobs/nul%00x|"
	    "!jobs/bad%G1", "url-encoded keys are decoded (+ is a space); a NUL "
	    "or a bad escape comes raw; a Contents without a Key is skipped");
	keys[0] = '\0';
	tap_int(s3_parse_list(plain, strlen(plain), gather, keys, token,
	    sizeof(token)), 0, "the last page says so");
	tap_str(keys, "jobs/a+b%41 & c", "without EncodingType url a key is "
	    "taken as sent (s3rver ignores encoding-type)");
	keys[0] = '\0';
	s3_parse_list(xxe, strlen(xxe), gather, keys, token, sizeof(token));
	tap_ok(strstr(keys, "root") == NULL, "an external entity is not "
	    "expanded (got \"%s\")", keys);
	tap_int(s3_parse_list(notok, strlen(notok), gather, keys, token,
	    sizeof(token)), -1, "more pages without a token is refused");
	tap_int(s3_parse_list(page1, strlen(page1), gather, keys, token, 4), -1,
	    "so is a token too long for the caller");
	tap_int(s3_parse_list("<Error><Code>AccessDenied</Code></Error>", 39,
	    gather, keys, token, sizeof(token)), -1, "an <Error> is no listing");
	tap_int(s3_parse_list("<ListBucketResult><Contents>", 28, gather, keys,
	    token, sizeof(token)), -1, "nor is a cut-off page");
	tap_int(s3_parse_list("", 0, gather, keys, token, sizeof(token)), -1,
	    "nor an empty reply");
}

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
	listing();
	tap_int(s3_classify_reply("HEAD", 400, ""), ERR_REFUSED, "a HEAD's bare "
	    "400 (an expired token: S3 sends a HEAD no body) pauses the leg");
	tap_int(s3_classify_reply("HEAD", 301, ""), ERR_REFUSED, "a HEAD's bare "
	    "301 (the bucket is in another region) pauses the leg");
	tap_int(s3_classify_reply("HEAD", 403, ""), ERR_DENIED, "a HEAD's bare "
	    "403 is a denial the engine places");
	tap_int(s3_classify_reply("HEAD", 404, ""), ERR_PERMANENT, "a HEAD's 404 "
	    "is the object's");
	tap_int(s3_classify_reply("PUT", 400, ""), ERR_PERMANENT, "a PUT's 400 "
	    "without a code stays permanent (a PUT's error has a body)");
	tap_int(s3_classify_reply("PUT", 400, "ExpiredToken"), ERR_REFUSED,
	    "a PUT's ExpiredToken is a refusal");
	xmlCleanupParser();
	return tap_done();
}
