/*
 * t-cfg.c - proves configuration is validated the way DESIGN.md says:
 * defaults when unset, each bad value one problem line naming the
 * variable, no secret echoed, and Cloud Foundry's VCAP_SERVICES read with
 * explicit variables winning.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "config/cfg.h"
#include "tap.h"

/* A test environment: NULL-terminated name/value pairs. */
static const char *
table_get(void *arg, const char *name)
{
	const char **t = arg;

	for (; *t != NULL; t += 2)
		if (strcmp(t[0], name) == 0)
			return t[1];
	return NULL;
}

static size_t
load(struct cfg *c, const char **env, struct cfg_problems *p)
{
	memset(p, 0, sizeof(*p));
	return cfg_load(c, table_get, env, 0, p);
}

static int
has_line(const struct cfg_problems *p, const char *prefix)
{
	size_t i;

	for (i = 0; i < p->n; i++)
		if (strncmp(p->lines[i], prefix, strlen(prefix)) == 0)
			return 1;
	return 0;
}

static void
test_defaults(void)
{
	const char *env[] = { NULL };
	struct cfg_problems p;
	struct cfg c;

	tap_int((int64_t)load(&c, env, &p), 0, "no variables: no problems");
	tap_str(c.watch_dir, "./uploads", "default watch dir");
	tap_str(c.state_db, "./outbox.db", "default outbox");
	tap_ok(c.bucket == NULL && !c.db_on, "both legs off by default "
	    "(the embedded default journals only)");
	tap_int(c.concurrency, 16, "default concurrency");
	tap_int((int64_t)c.multipart_threshold, 64 << 20, "default multipart "
	    "threshold 64 MiB");
	tap_int(c.settle_ms, 20, "default settle window");
	tap_int(c.poll_ms, 1000, "default poll interval");
	tap_int(c.rescan_s, 3600, "default rescan period");
	tap_int(c.scrub_interval_s, 7 * 86400, "default scrub interval: 7 days");
	tap_int(c.scrub_rate, 5, "default scrub rate: 5 HEADs per second");
	tap_str(c.db_schema, "is_migration", "default schema");
	tap_int(c.db_migrate, 1, "migrate by default");
	cfg_free(&c);
	cfg_problems_free(&p);
}

static void
test_s3(void)
{
	const char *env[] = {
		"S3_BUCKET_NAME", "app-uploads-s3alias",
		"AWS_DEFAULT_REGION", "eu-west-2",
		"AWS_ACCESS_KEY_ID", "AKIA1", "AWS_SECRET_ACCESS_KEY", "s3cr3t",
		"AWS_ENDPOINT_URL", "http://127.0.0.1:9000/",
		NULL };
	const char *aws[] = { "S3_BUCKET", "b1", "AWS_ACCESS_KEY_ID", "k",
		"AWS_SECRET_ACCESS_KEY", "s", NULL };
	struct cfg_problems p;
	struct cfg c;

	tap_int((int64_t)load(&c, env, &p), 0, "S3 from the alternative names");
	tap_str(c.bucket, "app-uploads-s3alias", "S3_BUCKET_NAME is read");
	tap_str(c.region, "eu-west-2", "AWS_DEFAULT_REGION is read");
	tap_str(c.endpoint, "http://127.0.0.1:9000", "endpoint, trailing "
	    "slash dropped");
	tap_int(c.path_style, 1, "a custom endpoint implies path style");
	cfg_free(&c);
	cfg_problems_free(&p);

	load(&c, aws, &p);
	tap_ok(c.endpoint == NULL && c.path_style == 0 &&
	    strcmp(c.region, "us-east-1") == 0, "AWS: virtual-hosted, us-east-1");
	cfg_free(&c);
	cfg_problems_free(&p);
}

/* One case's addressing: path_style (or -1 for "a problem naming
 * S3_FORCE_PATH_STYLE") from the table's variables. */
static int
addressing(const char **env)
{
	struct cfg_problems p;
	struct cfg c;
	int r;

	load(&c, env, &p);
	r = has_line(&p, "S3_FORCE_PATH_STYLE=") ? -1 : p.n ? -2 : c.path_style;
	cfg_free(&c);
	cfg_problems_free(&p);
	return r;
}

#define KEYS "AWS_ACCESS_KEY_ID", "k", "AWS_SECRET_ACCESS_KEY", "s"

/* DESIGN.md, issue 14, "Addressing": what AWS's documentation says works,
 * case by case (1 = path-style, 0 = virtual-hosted, -1 = refused). */
static void
test_addressing(void)
{
	const char *alias[] = { KEYS, "S3_BUCKET", "app-uploads-ab12cd-s3alias",
		NULL };
	const char *alias_ep[] = { KEYS, "S3_BUCKET", "app-uploads-ab12cd-s3alias",
		"AWS_ENDPOINT_URL_S3", "https://s3.eu-west-2.amazonaws.com", NULL };
	const char *alias_fips[] = { KEYS, "S3_BUCKET", "ap-1a2b-s3alias",
		"AWS_ENDPOINT_URL", "https://s3-fips.us-east-1.amazonaws.com/",
		NULL };
	const char *alias_force[] = { KEYS, "S3_BUCKET", "ap-1a2b-s3alias",
		"S3_FORCE_PATH_STYLE", "true", NULL };
	const char *outposts[] = { KEYS, "S3_BUCKET",
		"my-access-po-o01ac5d28a6a232904e8xz5w8ijx1qzlbp3i3kuse10--op-s3",
		"AWS_ENDPOINT_URL_S3", "https://s3-outposts.us-west-2.amazonaws.com",
		"S3_FORCE_PATH_STYLE", "1", NULL };
	const char *alias_minio[] = { KEYS, "S3_BUCKET", "ap-1a2b-s3alias",
		"AWS_ENDPOINT_URL_S3", "https://minio.example:9000",
		"S3_FORCE_PATH_STYLE", "true", NULL };
	const char *dots[] = { KEYS, "S3_BUCKET", "logs.example.com", NULL };
	const char *dots_cn[] = { KEYS, "S3_BUCKET", "logs.example.com",
		"AWS_REGION", "cn-north-1", "AWS_ENDPOINT_URL_S3",
		"https://s3.cn-north-1.amazonaws.com.cn", NULL };
	const char *dots_force[] = { KEYS, "S3_BUCKET", "logs.example.com",
		"S3_FORCE_PATH_STYLE", "false", NULL };
	const char *dots_http[] = { KEYS, "S3_BUCKET", "logs.example.com",
		"AWS_ENDPOINT_URL_S3", "http://s3.us-east-1.amazonaws.com",
		"S3_FORCE_PATH_STYLE", "false", NULL };
	const char *plain[] = { KEYS, "S3_BUCKET", "uploads-1", NULL };
	const char *plain_force[] = { KEYS, "S3_BUCKET", "uploads-1",
		"S3_FORCE_PATH_STYLE", "yes", NULL };
	const char *minio[] = { KEYS, "S3_BUCKET", "uploads-1",
		"AWS_ENDPOINT_URL_S3", "https://minio.example:9000", NULL };
	const char *minio_vh[] = { KEYS, "S3_BUCKET", "uploads-1",
		"AWS_ENDPOINT_URL_S3", "https://storage.example",
		"S3_FORCE_PATH_STYLE", "false", NULL };
	const char *vcap_aws[] = { "VCAP_SERVICES",
	    "{\"s3\": [{\"label\": \"s3\", \"credentials\": {"
	    "\"access_key_id\": \"A\", \"secret_access_key\": \"B\","
	    "\"bucket\": \"cg-4f1c-s3alias\", \"region\": \"us-gov-west-1\","
	    "\"host\": \"s3-fips.us-gov-west-1.amazonaws.com\"}}]}", NULL };
	const char *vcap_ecs[] = { "VCAP_SERVICES",
	    "{\"ecs-bucket\": [{\"label\": \"ecs-bucket\", \"credentials\": {"
	    "\"access_key_id\": \"A\", \"secret_access_key\": \"B\","
	    "\"bucket\": \"uploads-1\", \"endpoint\": \"https://object.ecs.example\""
	    "}}]}", NULL };

	tap_int(addressing(alias), 0, "an access-point alias on AWS: "
	    "virtual-hosted (access points take only virtual-host URLs)");
	tap_int(addressing(alias_ep), 0, "... also with AWS's regional "
	    "endpoint given as AWS_ENDPOINT_URL_S3");
	tap_int(addressing(alias_fips), 0, "... and with a FIPS endpoint");
	tap_int(addressing(alias_force), -1, "S3_FORCE_PATH_STYLE=true with an "
	    "alias on AWS is refused, named");
	tap_int(addressing(outposts), -1, "... an Outposts alias (--op-s3) too");
	tap_int(addressing(alias_minio), 1, "elsewhere the override stands "
	    "(the name is only a name there)");
	tap_int(addressing(dots), 1, "a bucket with dots on AWS: path-style "
	    "(the wildcard certificate covers one label)");
	tap_int(addressing(dots_cn), 1, "... in China's partition too");
	tap_int(addressing(dots_force), -1, "S3_FORCE_PATH_STYLE=false with dots "
	    "over HTTPS on AWS is refused, named");
	tap_int(addressing(dots_http), 0, "... over plain HTTP it stands");
	tap_int(addressing(plain), 0, "a plain bucket on AWS: virtual-hosted");
	tap_int(addressing(plain_force), 1, "S3_FORCE_PATH_STYLE=yes: path-style");
	tap_int(addressing(minio), 1, "a custom endpoint: path-style");
	tap_int(addressing(minio_vh), 0, "S3_FORCE_PATH_STYLE=false: "
	    "virtual-hosted on a custom endpoint");
	tap_int(addressing(vcap_aws), 0, "VCAP_SERVICES with an AWS host and an "
	    "alias: AWS's regional endpoint, virtual-hosted");
	tap_int(addressing(vcap_ecs), 1, "VCAP_SERVICES with a non-AWS "
	    "endpoint: path-style");
}

static void
test_bad_values(void)
{
	const char *env[] = {
		"S3_BUCKET", "ok-bucket",
		"AWS_SECRET_ACCESS_KEY", "do-not-print-me",
		"AWS_ENDPOINT_URL_S3", "not a url",
		"OUTBOXD_CONCURRENCY", "abc",
		"OUTBOXD_SETTLE_MS", "-5",
		"OUTBOXD_MULTIPART_THRESHOLD", "1MiB",
		"OUTBOXD_WATCH_MODE", "magic",
		"OUTBOXD_LOG_FORMAT", "xml",
		"S3_FORCE_PATH_STYLE", "maybe",
		"OUTBOXD_DEFAULT_USER", "bob",
		"OUTBOXD_DB_SCHEMA", "bad-schema;drop",
		"DATABASE_URL", "postgresql://u:hunter2@[oops",
		NULL };
	const char *env2[] = { "DATABASE_URL",
		"postgresql://u:hunter2@h/db?bogus=1&x=postgresql://v:pw2@h", NULL };
	struct cfg_problems p;
	struct cfg c;
	size_t i;
	int leaked = 0;

	load(&c, env, &p);
	tap_ok(has_line(&p, "AWS_ENDPOINT_URL_S3=not a url: "),
	    "a bad endpoint is named");
	tap_ok(has_line(&p, "OUTBOXD_CONCURRENCY=abc: not a whole number"),
	    "a non-numeric concurrency is named");
	tap_ok(has_line(&p, "OUTBOXD_SETTLE_MS=-5: must be between"),
	    "an out-of-range settle window is named");
	tap_ok(has_line(&p, "OUTBOXD_MULTIPART_THRESHOLD=1MiB: must be between "
	    "5MiB and 5GiB"), "a threshold below S3's part minimum is named");
	tap_ok(has_line(&p, "OUTBOXD_WATCH_MODE=magic"), "a bad watch mode");
	tap_ok(has_line(&p, "OUTBOXD_LOG_FORMAT=xml"), "a bad log format");
	tap_ok(has_line(&p, "S3_FORCE_PATH_STYLE=maybe"), "a bad boolean");
	tap_ok(has_line(&p, "OUTBOXD_DEFAULT_USER=bob: not a UUID"),
	    "a default user that is not a UUID");
	tap_ok(has_line(&p, "OUTBOXD_DB_SCHEMA=bad-schema;drop"),
	    "a schema name that is not an identifier");
	tap_ok(has_line(&p, "DATABASE_URL: not a libpq connection string"),
	    "a bad DATABASE_URL is named");
	tap_ok(has_line(&p, "AWS_ACCESS_KEY_ID: not set, but S3_BUCKET is"),
	    "a missing access key is named");
	for (i = 0; i < p.n; i++)
		if (strstr(p.lines[i], "do-not-print-me") ||
		    strstr(p.lines[i], "hunter2"))
			leaked = 1;
	tap_ok(!leaked, "no problem line contains a secret");
	tap_int((int64_t)p.n, 11, "one line per problem");
	cfg_free(&c);
	cfg_problems_free(&p);

	{
		const char *env3[] = { "S3_BUCKET", "b1b", "AWS_ACCESS_KEY_ID", "k",
			"AWS_SECRET_ACCESS_KEY", "s",
			"AWS_ENDPOINT_URL_S3", "https://AKIAX:topsecret@host/?x=1",
			NULL };

		load(&c, env3, &p);
		tap_ok(p.n == 1 && strstr(p.lines[0], "topsecret") == NULL &&
		    strstr(p.lines[0], "AWS_ENDPOINT_URL_S3=https://AKIAX:") != NULL,
		    "an endpoint with credentials is refused without printing "
		    "them: %s", p.n ? p.lines[0] : "");
		cfg_free(&c);
		cfg_problems_free(&p);
	}
	load(&c, env2, &p);
	tap_ok(p.n == 1 && strstr(p.lines[0], "hunter2") == NULL &&
	    strstr(p.lines[0], "pw2") == NULL, "libpq's quoted text is redacted: "
	    "%s", p.n ? p.lines[0] : "");
	cfg_free(&c);
	cfg_problems_free(&p);
}

static void
test_sizes(void)
{
	uint64_t n = 0;

	tap_ok(cfg_parse_size("64MiB", &n) == 0 && n == 64ull << 20, "64MiB");
	tap_ok(cfg_parse_size("100 MB", &n) == 0 && n == 100000000ull, "100 MB");
	tap_ok(cfg_parse_size("5g", &n) == 0 && n == 5ull << 30, "5g");
	tap_ok(cfg_parse_size("1048576", &n) == 0 && n == 1048576, "bytes");
	tap_ok(cfg_parse_size("12 parsecs", &n) < 0, "unknown unit refused");
	tap_ok(cfg_parse_size("-1", &n) < 0, "negative refused");
	tap_ok(cfg_parse_size("99999999999999999999GiB", &n) < 0,
	    "overflow refused");
	tap_int(cfg_parse_bool("TRUE"), 1, "TRUE");
	tap_int(cfg_parse_bool("off"), 0, "off");
	tap_int(cfg_parse_bool("2"), -1, "2 is not a boolean");
}

/* OUTBOXD_RETENTION (issue 11): days by default, 0 keeps everything. */
static void
test_retention(void)
{
	const char *def[] = { NULL }, *zero[] = { "OUTBOXD_RETENTION", "0",
	    NULL }, *hours[] = { "OUTBOXD_RETENTION", "12h", NULL },
	    *bad[] = { "OUTBOXD_RETENTION", "soon", NULL },
	    *tiny[] = { "OUTBOXD_RETENTION", "10m", NULL };
	struct cfg_problems p;
	struct cfg c;
	int64_t n = 0;

	load(&c, def, &p);
	tap_int(c.retention_s, 30 * 86400, "retention is 30 days by default");
	cfg_free(&c);
	cfg_problems_free(&p);
	load(&c, zero, &p);
	tap_ok(p.n == 0 && c.retention_s == 0, "OUTBOXD_RETENTION=0 keeps "
	    "every entry");
	cfg_free(&c);
	cfg_problems_free(&p);
	load(&c, hours, &p);
	tap_int(c.retention_s, 12 * 3600, "12h");
	cfg_free(&c);
	cfg_problems_free(&p);
	load(&c, bad, &p);
	tap_ok(has_line(&p, "OUTBOXD_RETENTION=soon: not a duration"),
	    "a word is refused: %s", p.n ? p.lines[0] : "");
	cfg_free(&c);
	cfg_problems_free(&p);
	load(&c, tiny, &p);
	tap_ok(has_line(&p, "OUTBOXD_RETENTION=10m: must be 0"),
	    "less than an hour is refused: %s", p.n ? p.lines[0] : "");
	cfg_free(&c);
	cfg_problems_free(&p);
	tap_ok(cfg_parse_duration("90", &n) == 0 && n == 90,
	    "a bare number is seconds");
	tap_ok(cfg_parse_duration("2w", &n) == 0 && n == 14 * 86400, "2w");
	tap_ok(cfg_parse_duration("-1d", &n) < 0, "negative refused");
}

static void
test_vcap(void)
{
	const char *vcap =
	    "{\"objectstore\": [{\"name\": \"uploads\", \"label\": \"objectstore\","
	    "  \"credentials\": {\"access_key_id\": \"VKEY\", \"secret_access_key\":"
	    "  \"VSECRET\", \"bucket\": \"hcp-1234\", \"region\": \"eu-central-1\","
	    "  \"host\": \"s3-eu-central-1.amazonaws.com\"}}],"
	    " \"postgresql-db\": [{\"name\": \"db\", \"label\": \"postgresql-db\","
	    "  \"credentials\": {\"username\": \"u\", \"password\": \"p'w\","
	    "  \"hostname\": \"pg.internal\", \"port\": \"2345\", \"dbname\": \"d\"}}]}";
	const char *minio =
	    "{\"user-provided\": [{\"name\": \"s3\", \"credentials\": {"
	    "\"access_key_id\": \"A\", \"secret_access_key\": \"B\","
	    "\"bucket\": \"b1\", \"endpoint\": \"https://minio.example:9000\"}},"
	    "{\"name\": \"pg\", \"tags\": [\"postgresql\"], \"credentials\": {"
	    "\"uri\": \"postgres://x:y@h:5432/z\"}}]}";
	const char *env[] = { "VCAP_SERVICES", vcap, NULL };
	const char *env2[] = { "VCAP_SERVICES", vcap, "S3_BUCKET", "mine",
		"DATABASE_URL", "postgresql://localhost/mine", NULL };
	struct cfg_vcap v = {0};
	struct cfg_problems p = {0};
	struct cfg c;

	tap_int(cfg_parse_vcap(vcap, &v, &p), 0, "a VCAP_SERVICES document parses");
	tap_str(v.bucket, "hcp-1234", "bucket of the bound object store");
	tap_str(v.access_key, "VKEY", "its access key");
	tap_str(v.region, "eu-central-1", "its region");
	tap_ok(v.endpoint == NULL, "an AWS host means no custom endpoint");
	tap_str(v.database_url, "host='pg.internal' port='2345' dbname='d' "
	    "user='u' password='p\\'w'", "PostgreSQL parts become a quoted "
	    "conninfo");
	cfg_vcap_free(&v);

	tap_int(cfg_parse_vcap(minio, &v, &p), 0, "user-provided services");
	tap_str(v.endpoint, "https://minio.example:9000", "a custom endpoint");
	tap_str(v.database_url, "postgres://x:y@h:5432/z", "a PostgreSQL uri "
	    "found by its tag");
	cfg_vcap_free(&v);

	tap_int(cfg_parse_vcap("[1,2", &v, &p), -1, "broken JSON is a problem");
	tap_ok(has_line(&p, "VCAP_SERVICES: not a JSON object"),
	    "named as VCAP_SERVICES");
	cfg_problems_free(&p);
	cfg_vcap_free(&v);

	load(&c, env, &p);
	tap_int((int64_t)p.n, 0, "configuration from VCAP alone is complete");
	tap_ok(c.bucket && strcmp(c.bucket, "hcp-1234") == 0 && c.db_on &&
	    strcmp(c.s3_source, "VCAP_SERVICES") == 0, "both legs on from VCAP");
	cfg_free(&c);
	cfg_problems_free(&p);

	load(&c, env2, &p);
	tap_ok(strcmp(c.bucket, "mine") == 0 &&
	    strcmp(c.database_url, "postgresql://localhost/mine") == 0,
	    "explicit variables win over VCAP_SERVICES");
	cfg_free(&c);
	cfg_problems_free(&p);
}

/* OUTBOXD_SCRUB_INTERVAL takes durations; both scrub variables are
 * checked like every other. */
static void
test_scrub(void)
{
	const char *good[] = { "OUTBOXD_SCRUB_INTERVAL", "12h",
		"OUTBOXD_SCRUB_RATE", "20", NULL };
	const char *off[] = { "OUTBOXD_SCRUB_INTERVAL", "0", NULL };
	const char *bad[] = { "OUTBOXD_SCRUB_INTERVAL", "soon",
		"OUTBOXD_SCRUB_RATE", "0", NULL };
	const char *long_[] = { "OUTBOXD_SCRUB_INTERVAL", "400d", NULL };
	struct cfg_problems p;
	struct cfg c;
	int64_t d = -1;

	tap_int((int64_t)load(&c, good, &p), 0, "12h and 20/s are accepted");
	tap_int(c.scrub_interval_s, 12 * 3600, "12h is 43200 s");
	tap_int(c.scrub_rate, 20, "the rate as given");
	cfg_free(&c);
	cfg_problems_free(&p);
	load(&c, off, &p);
	tap_int(c.scrub_interval_s, 0, "0 turns the scrub off");
	cfg_free(&c);
	cfg_problems_free(&p);
	tap_int((int64_t)load(&c, bad, &p), 2, "a bad interval and rate: two "
	    "problems");
	tap_ok(has_line(&p, "OUTBOXD_SCRUB_INTERVAL=soon: not a duration"),
	    "a bad interval is named");
	tap_ok(has_line(&p, "OUTBOXD_SCRUB_RATE=0: must be between 1"),
	    "a zero rate is named");
	cfg_free(&c);
	cfg_problems_free(&p);
	load(&c, long_, &p);
	tap_ok(has_line(&p, "OUTBOXD_SCRUB_INTERVAL=400d: must be at most"),
	    "an interval over a year is named");
	cfg_free(&c);
	cfg_problems_free(&p);
	tap_ok(cfg_parse_duration("2w", &d) == 0 && d == 14 * 86400, "2w");
	tap_ok(cfg_parse_duration("90", &d) == 0 && d == 90, "plain seconds");
	tap_ok(cfg_parse_duration("-1d", &d) < 0 && cfg_parse_duration("5x",
	    &d) < 0 && cfg_parse_duration("", &d) < 0, "-1d, 5x and \"\" are "
	    "not durations");
}

/* OUTBOXD_HTTP_LISTEN: off unless set; a port alone, an address, [v6] or
 * a Unix socket are taken; a name (DNS), a bad port or a relative socket
 * path is one problem naming the variable. */
static void
test_http_listen(void)
{
	static const char *const good[] = { "9187", "127.0.0.1:9187",
	    "0.0.0.0:80", "[::1]:9187", "localhost:9187",
	    "unix:/run/outboxd/http.sock", "/run/outboxd/http.sock" };
	static const char *const bad[] = { "example.com:80", "0", "65536",
	    "127.0.0.1:", "127.0.0.1:x", "unix:rel.sock", "[::1]9187" };
	struct cfg_problems p;
	struct cfg c;
	size_t i;

	load(&c, (const char *[]){ NULL }, &p);
	tap_ok(c.http_listen == NULL, "the HTTP endpoint is off by default");
	cfg_free(&c);
	cfg_problems_free(&p);
	for (i = 0; i < ARRAY_SIZE(good); i++) {
		const char *env[] = { "OUTBOXD_HTTP_LISTEN", good[i], NULL };

		tap_int((int64_t)load(&c, env, &p), 0, "OUTBOXD_HTTP_LISTEN=%s "
		    "is taken", good[i]);
		cfg_free(&c);
		cfg_problems_free(&p);
	}
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		const char *env[] = { "OUTBOXD_HTTP_LISTEN", bad[i], NULL };

		load(&c, env, &p);
		tap_ok(p.n == 1 && has_line(&p, "OUTBOXD_HTTP_LISTEN="),
		    "OUTBOXD_HTTP_LISTEN=%s is one problem naming it", bad[i]);
		cfg_free(&c);
		cfg_problems_free(&p);
	}
}

/* OUTBOXD_S3_SSE, _SSE_KMS_KEY_ID and _STORAGE_CLASS: unset by default,
 * S3's own values taken, anything else (or a KMS key without aws:kms) one
 * problem naming the variable. */
static void
test_sse(void)
{
	const char *kms[] = { "OUTBOXD_S3_SSE", "aws:kms",
		"OUTBOXD_S3_SSE_KMS_KEY_ID", "alias/outboxd",
		"OUTBOXD_S3_STORAGE_CLASS", "GLACIER_IR", NULL };
	const char *aes[] = { "OUTBOXD_S3_SSE", "AES256", NULL };
	const char *bad[] = { "OUTBOXD_S3_SSE", "aes256",
		"OUTBOXD_S3_STORAGE_CLASS", "standard", NULL };
	const char *lone_key[] = { "OUTBOXD_S3_SSE", "AES256",
		"OUTBOXD_S3_SSE_KMS_KEY_ID", "alias/outboxd", NULL };
	const char *spaced[] = { "OUTBOXD_S3_SSE", "aws:kms",
		"OUTBOXD_S3_SSE_KMS_KEY_ID", "alias/a b", NULL };
	struct cfg_problems p;
	struct cfg c;

	load(&c, (const char *[]){ NULL }, &p);
	tap_ok(c.sse == NULL && c.sse_kms_key_id == NULL &&
	    c.storage_class == NULL, "no encryption or class asked by default "
	    "(the bucket's defaults apply)");
	cfg_free(&c);
	cfg_problems_free(&p);
	tap_int((int64_t)load(&c, kms, &p), 0, "aws:kms with a key and "
	    "GLACIER_IR are taken");
	tap_ok(c.sse && strcmp(c.sse, "aws:kms") == 0 && c.sse_kms_key_id &&
	    strcmp(c.sse_kms_key_id, "alias/outboxd") == 0 && c.storage_class &&
	    strcmp(c.storage_class, "GLACIER_IR") == 0, "as given");
	cfg_free(&c);
	cfg_problems_free(&p);
	tap_int((int64_t)load(&c, aes, &p), 0, "AES256 alone is taken");
	cfg_free(&c);
	cfg_problems_free(&p);
	tap_int((int64_t)load(&c, bad, &p), 2, "a lower-case SSE and class: "
	    "two problems (S3's values are case-sensitive)");
	tap_ok(has_line(&p, "OUTBOXD_S3_SSE=aes256: must be AES256 or aws:kms"),
	    "the SSE value is named");
	tap_ok(has_line(&p, "OUTBOXD_S3_STORAGE_CLASS=standard: must be one of"),
	    "the class is named");
	cfg_free(&c);
	cfg_problems_free(&p);
	tap_int((int64_t)load(&c, lone_key, &p), 1, "a KMS key with AES256 is "
	    "one problem");
	tap_ok(has_line(&p, "OUTBOXD_S3_SSE_KMS_KEY_ID is set but"), "naming "
	    "the key variable");
	cfg_free(&c);
	cfg_problems_free(&p);
	tap_int((int64_t)load(&c, spaced, &p), 1, "a key id with a space is "
	    "one problem");
	cfg_free(&c);
	cfg_problems_free(&p);
}

/* OUTBOXD_MAX_BANDWIDTH: a size per second, 0 or unset for no cap. */
static void
test_bandwidth(void)
{
	static const struct { const char *v; uint64_t want; } good[] = {
		{ "20MiB/s", 20u << 20 }, { "500KiB/s", 500u << 10 },
		{ "1000000", 1000000 }, { "0", 0 }, { "2MB/s", 2000000 } };
	static const char *const bad[] = { "fast", "-1MiB/s", "10 parsecs",
		"512/s" };
	struct cfg_problems p;
	struct cfg c;
	size_t i;

	load(&c, (const char *[]){ NULL }, &p);
	tap_int((int64_t)c.max_bandwidth, 0, "no bandwidth cap by default");
	cfg_free(&c);
	cfg_problems_free(&p);
	for (i = 0; i < ARRAY_SIZE(good); i++) {
		const char *env[] = { "OUTBOXD_MAX_BANDWIDTH", good[i].v, NULL };

		tap_ok(load(&c, env, &p) == 0 && c.max_bandwidth == good[i].want,
		    "OUTBOXD_MAX_BANDWIDTH=%s is %llu bytes/s", good[i].v,
		    (unsigned long long)good[i].want);
		cfg_free(&c);
		cfg_problems_free(&p);
	}
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		const char *env[] = { "OUTBOXD_MAX_BANDWIDTH", bad[i], NULL };

		load(&c, env, &p);
		tap_ok(p.n == 1 && has_line(&p, "OUTBOXD_MAX_BANDWIDTH="),
		    "OUTBOXD_MAX_BANDWIDTH=%s is one problem naming it", bad[i]);
		cfg_free(&c);
		cfg_problems_free(&p);
	}
}

int
main(void)
{
	test_bandwidth();
	test_defaults();
	test_sse();
	test_scrub();
	test_http_listen();
	test_s3();
	test_bad_values();
	test_sizes();
	test_retention();
	test_vcap();
	test_addressing();
	return tap_done();
}
