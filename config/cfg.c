/*
 * cfg.c - loads and validates struct cfg (see cfg.h). Each variable has
 * its own small parser that either stores a value or adds one problem
 * line; nothing here falls back silently to a default when a value was
 * given but is wrong.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <libpq-fe.h>

#include "base/listen.h"
#include "config/cfg.h"
#include "config/redact.h"
#include "base/util.h"

#define MIB (1024ull * 1024ull)

static const char *
env_get(void *arg, const char *name)
{
	(void)arg;
	return getenv(name);
}

static void
problem(struct cfg_problems *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void
problem(struct cfg_problems *p, const char *fmt, ...)
{
	va_list ap;
	char *line;

	va_start(ap, fmt);
	if (vasprintf(&line, fmt, ap) < 0)
		abort();
	va_end(ap);
	p->lines = xrealloc(p->lines, (p->n + 1) * sizeof(*p->lines));
	p->lines[p->n++] = line;
}

void
cfg_problems_free(struct cfg_problems *p)
{
	size_t i;

	for (i = 0; i < p->n; i++)
		free(p->lines[i]);
	free(p->lines);
	p->lines = NULL;
	p->n = 0;
}

/* The first of the names that is set and not empty, or NULL. */
static const char *
first_set(cfg_getenv_fn get, void *arg, const char **names, const char **which)
{
	for (; *names != NULL; names++) {
		const char *v = get(arg, *names);

		if (v != NULL && *v != '\0') {
			if (which != NULL)
				*which = *names;
			return v;
		}
	}
	return NULL;
}

int
cfg_parse_bool(const char *s)
{
	static const char *yes[] = { "1", "true", "yes", "on" };
	static const char *no[] = { "0", "false", "no", "off" };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(yes); i++)
		if (strcasecmp(s, yes[i]) == 0)
			return 1;
	for (i = 0; i < ARRAY_SIZE(no); i++)
		if (strcasecmp(s, no[i]) == 0)
			return 0;
	return -1;
}

int
cfg_parse_size(const char *s, uint64_t *out)
{
	static const struct { const char *unit; uint64_t mult; } units[] = {
		{ "", 1 }, { "b", 1 },
		{ "k", 1024 }, { "kb", 1000 }, { "kib", 1024 },
		{ "m", MIB }, { "mb", 1000000 }, { "mib", MIB },
		{ "g", 1024 * MIB }, { "gb", 1000000000 }, { "gib", 1024 * MIB },
	};
	unsigned long long n;
	char *end;
	size_t i;

	if (s == NULL || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	while (*end == ' ')
		end++;
	for (i = 0; i < ARRAY_SIZE(units); i++) {
		if (strcasecmp(end, units[i].unit) == 0) {
			if (units[i].mult > 1 && n > UINT64_MAX / units[i].mult)
				return -1;
			*out = (uint64_t)n * units[i].mult;
			return 0;
		}
	}
	return -1;
}

int
cfg_parse_duration(const char *s, int64_t *seconds)
{
	static const struct { const char *unit; int64_t s; } units[] = {
		{ "", 1 }, { "s", 1 }, { "m", 60 }, { "min", 60 }, { "h", 3600 },
		{ "d", 86400 }, { "w", 7 * 86400 },
	};
	char *end;
	long long n;
	size_t i;

	errno = 0;
	n = strtoll(s, &end, 10);
	if (errno != 0 || end == s || n < 0 || !isdigit((unsigned char)*s))
		return -1;
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcmp(end, units[i].unit) == 0) {
			if (n > INT64_MAX / units[i].s)
				return -1;
			*seconds = (int64_t)n * units[i].s;
			return 0;
		}
	return -1;
}

/* An integer variable within [lo, hi], or its default when unset. */
static int
int_var(cfg_getenv_fn get, void *arg, const char *name, int def, long lo,
    long hi, struct cfg_problems *p)
{
	const char *v = get(arg, name);
	char *end;
	long n;

	if (v == NULL || *v == '\0')
		return def;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0') {
		problem(p, "%s=%s: not a whole number", name, v);
		return def;
	}
	if (n < lo || n > hi) {
		problem(p, "%s=%s: must be between %ld and %ld", name, v, lo, hi);
		return def;
	}
	return (int)n;
}

static int
bool_var(cfg_getenv_fn get, void *arg, const char *name, int def,
    struct cfg_problems *p)
{
	const char *v = get(arg, name);
	int b;

	if (v == NULL || *v == '\0')
		return def;
	b = cfg_parse_bool(v);
	if (b < 0) {
		problem(p, "%s=%s: not a boolean (use true or false)", name, v);
		return def;
	}
	return b;
}

/* An http(s) URL with a host; rejects anything curl would not accept. */
static int
valid_endpoint(const char *url, const char **why)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *query = NULL, *user = NULL;
	int ok = 0;

	if (u == NULL)
		abort();
	*why = "not a URL (expected http://host[:port] or https://host)";
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
		goto out;
	if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
		*why = "scheme must be http or https";
		goto out;
	}
	if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    *host == '\0') {
		*why = "no host";
		goto out;
	}
	if (curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK) {
		*why = "must not have a query string";
		goto out;
	}
	if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK) {
		*why = "must not hold credentials (use AWS_ACCESS_KEY_ID)";
		goto out;
	}
	ok = 1;
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(query);
	curl_free(user);
	curl_url_cleanup(u);
	return ok;
}

static int
valid_region(const char *s)
{
	if (*s == '\0' || strlen(s) > 32)
		return 0;
	for (; *s != '\0'; s++)
		if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) &&
		    *s != '-')
			return 0;
	return 1;
}

/*
 * Bucket names: today's rule is 3-63 of a-z 0-9 . -; buckets made before
 * 2018 in us-east-1 may also hold capitals and '_' (up to 255), so those
 * pass too. Anything else could not be put in a URL's host or path.
 */
static int
valid_bucket(const char *s)
{
	size_t n = strlen(s), i;

	if (n < 3 || n > 255)
		return 0;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '-'
		    && s[i] != '_')
			return 0;
	return isalnum((unsigned char)s[0]) && isalnum((unsigned char)s[n - 1]);
}

static int
valid_identifier(const char *s)
{
	size_t n = strlen(s), i;

	if (n == 0 || n > 63 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
		return 0;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_')
			return 0;
	return 1;
}

/* Splits OUTBOXD_IGNORE on commas, trimming blanks and dropping empties. */
static char **
split_globs(const char *s)
{
	char **v = xcalloc(1, sizeof(*v));
	size_t n = 0;

	while (s != NULL && *s != '\0') {
		const char *end = strchr(s, ',');
		size_t len = end ? (size_t)(end - s) : strlen(s);

		while (len > 0 && isspace((unsigned char)*s))
			s++, len--;
		while (len > 0 && isspace((unsigned char)s[len - 1]))
			len--;
		if (len > 0) {
			v = xrealloc(v, (n + 2) * sizeof(*v));
			v[n++] = xstrndup(s, len);
			v[n] = NULL;
		}
		s = end ? end + 1 : NULL;
	}
	return v;
}

/* The directory part of path, for checking that a file can be made. */
static char *
parent_dir(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return xstrdup(".");
	if (slash == path)
		return xstrdup("/");
	return xstrndup(path, (size_t)(slash - path));
}

static void
check_watch_dir(const char *dir, struct cfg_problems *p)
{
	struct stat st;

	if (stat(dir, &st) < 0) {
		problem(p, "OUTBOXD_WATCH_DIR=%s: %s", dir, strerror(errno));
		return;
	}
	if (!S_ISDIR(st.st_mode)) {
		problem(p, "OUTBOXD_WATCH_DIR=%s: not a directory", dir);
		return;
	}
	if (access(dir, R_OK | X_OK) < 0)
		problem(p, "OUTBOXD_WATCH_DIR=%s: not readable: %s", dir,
		    strerror(errno));
}

static void
check_writable_parent(const char *name, const char *path,
    struct cfg_problems *p)
{
	char *dir = parent_dir(path);
	struct stat st;

	if (stat(path, &st) == 0) {
		if (!S_ISREG(st.st_mode))
			problem(p, "%s=%s: not a regular file", name, path);
		else if (access(path, R_OK | W_OK) < 0)
			problem(p, "%s=%s: not writable: %s", name, path,
			    strerror(errno));
	} else if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		problem(p, "%s=%s: directory %s does not exist", name, path, dir);
	} else if (access(dir, W_OK | X_OK) < 0) {
		problem(p, "%s=%s: directory %s is not writable: %s", name,
		    path, dir, strerror(errno));
	}
	free(dir);
}

/* A non-empty variable, copied; NULL when unset or empty. */
static char *
str_var(cfg_getenv_fn get, void *arg, const char *name)
{
	const char *v = get(arg, name);

	return v != NULL && *v != '\0' ? xstrdup(v) : NULL;
}

/* A URL variable checked like the S3 endpoint; trailing slashes cut. */
static char *
url_var(cfg_getenv_fn get, void *arg, const char *name,
    struct cfg_problems *p)
{
	char *v = str_var(get, arg, name);
	const char *why;

	if (v == NULL)
		return NULL;
	while (strlen(v) > 0 && v[strlen(v) - 1] == '/')
		v[strlen(v) - 1] = '\0';
	if (!valid_endpoint(v, &why)) {
		char *shown = cfg_redact(v, NULL);

		problem(p, "%s=%s: %s", name, shown, why);
		free(shown);
	}
	return v;
}

/*
 * The SDKs take plain http for the container endpoint only from the
 * loopback or the ECS and EKS agents' link-local addresses: a token sent
 * anywhere else in the clear could be read on the way.
 */
static int
container_host_ok(const char *url)
{
	static const char *const hosts[] = { "localhost", "169.254.170.2",
	    "169.254.170.23", "[::1]", "[fd00:ec2::23]" };
	const char *h, *end;
	size_t i, n;

	if (strncmp(url, "https://", 8) == 0)
		return 1;
	if (strncmp(url, "http://", 7) != 0)
		return 0;
	h = url + 7;
	end = h[0] == '[' ? strchr(h, ']') : h + strcspn(h, ":/");
	if (end == NULL)
		return 0;
	n = (size_t)(end - h) + (h[0] == '[');
	if (n > 4 && strncmp(h, "127.", 4) == 0)
		return 1;
	for (i = 0; i < ARRAY_SIZE(hosts); i++)
		if (strlen(hosts[i]) == n && strncmp(h, hosts[i], n) == 0)
			return 1;
	return 0;
}

/* The credential chain's variables (agent/s3/creds.h). */
static void
load_chain(struct cfg *c, cfg_getenv_fn get, void *arg,
    struct cfg_problems *p)
{
	char *rel;

	c->profile = str_var(get, arg, "AWS_PROFILE");
	if (c->profile == NULL)
		c->profile = str_var(get, arg, "AWS_DEFAULT_PROFILE");
	c->credentials_file = str_var(get, arg, "AWS_SHARED_CREDENTIALS_FILE");
	c->config_file = str_var(get, arg, "AWS_CONFIG_FILE");
	c->web_identity_token_file = str_var(get, arg,
	    "AWS_WEB_IDENTITY_TOKEN_FILE");
	c->role_arn = str_var(get, arg, "AWS_ROLE_ARN");
	c->role_session_name = str_var(get, arg, "AWS_ROLE_SESSION_NAME");
	if (c->role_arn != NULL && strncmp(c->role_arn, "arn:", 4) != 0)
		problem(p, "AWS_ROLE_ARN=%s: not an ARN (arn:aws:iam::"
		    "ACCOUNT:role/NAME)", c->role_arn);
	if ((c->web_identity_token_file == NULL) != (c->role_arn == NULL) &&
	    c->profile == NULL)
		problem(p, "%s: set, but not %s (web identity needs both)",
		    c->role_arn ? "AWS_ROLE_ARN" : "AWS_WEB_IDENTITY_TOKEN_FILE",
		    c->role_arn ? "AWS_WEB_IDENTITY_TOKEN_FILE" : "AWS_ROLE_ARN");
	rel = str_var(get, arg, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	if (rel != NULL) {
		c->container_uri = xasprintf("http://169.254.170.2%s%s",
		    rel[0] == '/' ? "" : "/", rel);
		free(rel);
	} else {
		c->container_uri = url_var(get, arg,
		    "AWS_CONTAINER_CREDENTIALS_FULL_URI", p);
		if (c->container_uri != NULL &&
		    !container_host_ok(c->container_uri))
			problem(p, "AWS_CONTAINER_CREDENTIALS_FULL_URI=%s: plain "
			    "http only to the loopback or the ECS/EKS agent "
			    "(169.254.170.2, 169.254.170.23); use https",
			    c->container_uri);
	}
	c->container_token = str_var(get, arg,
	    "AWS_CONTAINER_AUTHORIZATION_TOKEN");
	c->container_token_file = str_var(get, arg,
	    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	c->imds_endpoint = url_var(get, arg, "AWS_EC2_METADATA_SERVICE_ENDPOINT",
	    p);
	c->imds_disabled = bool_var(get, arg, "AWS_EC2_METADATA_DISABLED", 0, p);
	c->sts_endpoint = url_var(get, arg, "AWS_ENDPOINT_URL_STS", p);
}

/* OUTBOXD_MAX_BANDWIDTH: a size per second ("20MiB/s", "500KiB"), 0 or
 * unset for no cap; below 1 KiB/s every transfer would trip the stall
 * limit. */
static void
load_bandwidth(struct cfg *c, cfg_getenv_fn get, void *arg,
    struct cfg_problems *p)
{
	const char *v = get(arg, "OUTBOXD_MAX_BANDWIDTH");
	char *size;
	size_t n;
	uint64_t b;

	if (v == NULL || *v == '\0')
		return;
	size = xstrdup(v);
	n = strlen(size);
	if (n > 2 && strcmp(size + n - 2, "/s") == 0)
		size[n - 2] = '\0';
	if (cfg_parse_size(size, &b) < 0)
		problem(p, "OUTBOXD_MAX_BANDWIDTH=%s: not a rate (like 20MiB/s, "
		    "500KiB/s, or 0 for no cap)", v);
	else if (b != 0 && b < 1024)
		problem(p, "OUTBOXD_MAX_BANDWIDTH=%s: must be 0 (no cap) or at "
		    "least 1KiB/s", v);
	else
		c->max_bandwidth = b;
	free(size);
}

/* How objects are stored: encryption and storage class, checked against
 * the values S3 takes so a typo stops at start, not at every PUT. */
static void
load_s3_storage(struct cfg *c, cfg_getenv_fn get, void *arg,
    struct cfg_problems *p)
{
	static const char *const classes[] = { "STANDARD", "STANDARD_IA",
	    "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER",
	    "DEEP_ARCHIVE", "REDUCED_REDUNDANCY", "EXPRESS_ONEZONE" };
	const char *v;
	size_t i;

	c->sse = str_var(get, arg, "OUTBOXD_S3_SSE");
	if (c->sse != NULL && strcmp(c->sse, "AES256") != 0 &&
	    strcmp(c->sse, "aws:kms") != 0)
		problem(p, "OUTBOXD_S3_SSE=%s: must be AES256 or aws:kms", c->sse);
	c->sse_kms_key_id = str_var(get, arg, "OUTBOXD_S3_SSE_KMS_KEY_ID");
	if (c->sse_kms_key_id != NULL && (c->sse == NULL ||
	    strcmp(c->sse, "aws:kms") != 0))
		problem(p, "OUTBOXD_S3_SSE_KMS_KEY_ID is set but OUTBOXD_S3_SSE "
		    "is not aws:kms (the key applies only to SSE-KMS)");
	else if (c->sse_kms_key_id != NULL &&
	    strcspn(c->sse_kms_key_id, " \t\r\n") != strlen(c->sse_kms_key_id))
		problem(p, "OUTBOXD_S3_SSE_KMS_KEY_ID: must be a key id, ARN or "
		    "alias without spaces");
	load_bandwidth(c, get, arg, p);
	v = get(arg, "OUTBOXD_S3_STORAGE_CLASS");
	if (v == NULL || *v == '\0')
		return;
	for (i = 0; i < ARRAY_SIZE(classes); i++)
		if (strcmp(v, classes[i]) == 0)
			c->storage_class = xstrdup(v);
	if (c->storage_class == NULL)
		problem(p, "OUTBOXD_S3_STORAGE_CLASS=%s: must be one of STANDARD, "
		    "STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING, GLACIER_IR, "
		    "GLACIER, DEEP_ARCHIVE, REDUCED_REDUNDANCY, EXPRESS_ONEZONE", v);
}

/* Is the endpoint's host one of AWS's own (s3.<region>.amazonaws.com and
 * the like, whose certificates are *.s3.<region>.amazonaws.com)? No
 * endpoint means AWS's regional one. */
static int
aws_endpoint(const char *endpoint)
{
	static const char *suffixes[] = { ".amazonaws.com", ".amazonaws.com.cn",
	    NULL };
	CURLU *u;
	char *host = NULL;
	size_t n, k;
	int i, aws = 0;

	if (endpoint == NULL)
		return 1;
	if ((u = curl_url()) == NULL)
		abort();
	if (curl_url_set(u, CURLUPART_URL, endpoint, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
		n = strlen(host);
		for (i = 0; suffixes[i] != NULL && !aws; i++) {
			k = strlen(suffixes[i]);
			aws = n > k && strcasecmp(host + n - k, suffixes[i]) == 0;
		}
	}
	curl_free(host);
	curl_url_cleanup(u);
	return aws;
}

/* An S3 access-point alias (…-s3alias, S3 on Outposts' …--op-s3): a name
 * S3 takes wherever a bucket name goes, but only in the host. */
static int
access_point_alias(const char *bucket)
{
	static const char *suffixes[] = { "-s3alias", "--op-s3", NULL };
	size_t n = strlen(bucket), k;
	int i;

	for (i = 0; suffixes[i] != NULL; i++) {
		k = strlen(suffixes[i]);
		if (n > k && strcmp(bucket + n - k, suffixes[i]) == 0)
			return 1;
	}
	return 0;
}

/*
 * Virtual-hosted or path-style (DESIGN.md, issue 14, "Addressing"). On
 * AWS: virtual-hosted, which access points and their aliases require;
 * path-style for a bucket with dots, whose name breaks the wildcard
 * certificate's single label over HTTPS. Elsewhere (MinIO, Ceph, an
 * endpoint from VCAP_SERVICES): path-style, which needs no wildcard DNS
 * or certificate. S3_FORCE_PATH_STYLE overrides, except where AWS would
 * certainly refuse the result.
 */
static void
choose_addressing(struct cfg *c, const char *force, struct cfg_problems *p)
{
	int aws = aws_endpoint(c->endpoint), ps;
	int dots = strchr(c->bucket, '.') != NULL;
	int https = c->endpoint == NULL || strncmp(c->endpoint, "https:", 6) == 0;

	c->path_style = aws ? dots : 1;
	if (force == NULL || *force == '\0')
		return;
	ps = cfg_parse_bool(force);
	if (ps < 0)
		problem(p, "S3_FORCE_PATH_STYLE=%s: not a boolean (use "
		    "true or false)", force);
	else if (ps && aws && access_point_alias(c->bucket))
		problem(p, "S3_FORCE_PATH_STYLE=%s: %s is an S3 access-point "
		    "alias, which AWS takes only virtual-hosted (leave "
		    "S3_FORCE_PATH_STYLE unset)", force, c->bucket);
	else if (!ps && aws && dots && https)
		problem(p, "S3_FORCE_PATH_STYLE=%s: the bucket %s has dots, so "
		    "its virtual host does not match AWS's TLS certificate "
		    "(leave S3_FORCE_PATH_STYLE unset for path-style)", force,
		    c->bucket);
	else
		c->path_style = ps;
}

/*
 * OUTBOXD_S3_STREAMING: whether a large single PUT sends its SHA-256 in an
 * aws-chunked trailer, computed while it is sent (https, the default: only
 * to an https endpoint, as the AWS SDKs do, since over plain http nothing
 * but the trailer, itself unsigned, vouches for the bytes; always; off).
 * Runs after load_s3 (the endpoint).
 */
static void
load_s3_streaming(struct cfg *c, cfg_getenv_fn get, void *arg,
    struct cfg_problems *p)
{
	const char *v = get(arg, "OUTBOXD_S3_STREAMING");
	int https = c->endpoint == NULL ||
	    strncasecmp(c->endpoint, "https://", 8) == 0;

	if (v == NULL || *v == '\0' || strcmp(v, "https") == 0)
		c->s3_streaming = https;
	else if (strcmp(v, "always") == 0)
		c->s3_streaming = 1;
	else if (strcmp(v, "off") == 0)
		c->s3_streaming = 0;
	else
		problem(p, "OUTBOXD_S3_STREAMING=%s: must be https (stream large "
		    "PUTs to an https endpoint only), always or off", v);
}

static void
load_s3(struct cfg *c, cfg_getenv_fn get, void *arg, struct cfg_vcap *vcap,
    struct cfg_problems *p)
{
	static const char *bucket_names[] = { "S3_BUCKET", "S3_BUCKET_NAME", NULL };
	static const char *region_names[] = { "AWS_REGION", "AWS_DEFAULT_REGION",
	    NULL };
	static const char *endpoint_names[] = { "AWS_ENDPOINT_URL_S3",
	    "AWS_ENDPOINT_URL", NULL };
	const char *bucket_var = "S3_BUCKET", *endpoint_var = "AWS_ENDPOINT_URL_S3";
	const char *v, *why;

	v = first_set(get, arg, bucket_names, &bucket_var);
	c->s3_source = "environment";
	if (v == NULL && vcap->bucket != NULL) {
		v = vcap->bucket;
		bucket_var = "VCAP_SERVICES bucket";
		c->s3_source = "VCAP_SERVICES";
	}
	if (v == NULL)
		return;
	c->bucket = xstrdup(v);
	/* Access-point aliases are lowercase too; dotted names need path style. */
	if (!valid_bucket(c->bucket))
		problem(p, "%s=%s: not a valid bucket name (letters, "
		    "digits, '.', '-', 3 to 63 long)", bucket_var, c->bucket);

	v = first_set(get, arg, region_names, NULL);
	if (v == NULL)
		v = vcap->region;
	c->region = xstrdup(v ? v : "us-east-1");
	if (!valid_region(c->region))
		problem(p, "AWS_REGION=%s: not a region name like us-east-1",
		    c->region);

	v = get(arg, "AWS_ACCESS_KEY_ID");
	if (v == NULL || *v == '\0') {
		v = vcap->access_key;
		c->creds_source = v ? "VCAP_SERVICES" : NULL;
	}
	c->access_key = v && *v ? xstrdup(v) : NULL;
	v = get(arg, "AWS_SECRET_ACCESS_KEY");
	if (v == NULL || *v == '\0')
		v = vcap->secret_key;
	c->secret_key = v && *v ? xstrdup(v) : NULL;
	/* Without keys the rest of the chain is asked; half a pair is a
	 * mistake. */
	if ((c->access_key == NULL) != (c->secret_key == NULL)) {
		if (c->access_key == NULL)
			problem(p, "AWS_ACCESS_KEY_ID: not set, but %s is and "
			    "AWS_SECRET_ACCESS_KEY is", bucket_var);
		else
			problem(p, "AWS_SECRET_ACCESS_KEY: not set, but %s is "
			    "and AWS_ACCESS_KEY_ID is", bucket_var);
	}
	v = get(arg, "AWS_SESSION_TOKEN");
	c->session_token = (v && *v) ? xstrdup(v) : NULL;
	load_chain(c, get, arg, p);

	v = first_set(get, arg, endpoint_names, &endpoint_var);
	if (v == NULL && vcap->endpoint != NULL) {
		v = vcap->endpoint;
		endpoint_var = "VCAP_SERVICES endpoint";
	}
	if (v != NULL) {
		c->endpoint = xstrdup(v);
		/* Strip trailing slashes so joining paths stays simple. */
		while (strlen(c->endpoint) > 0 &&
		    c->endpoint[strlen(c->endpoint) - 1] == '/')
			c->endpoint[strlen(c->endpoint) - 1] = '\0';
		if (!valid_endpoint(c->endpoint, &why)) {
			char *shown = cfg_redact(v, NULL);

			problem(p, "%s=%s: %s", endpoint_var, shown, why);
			free(shown);
		}
	}
	choose_addressing(c, get(arg, "S3_FORCE_PATH_STYLE"), p);
	v = get(arg, "AWS_CA_BUNDLE");
	c->ca_bundle = (v && *v) ? xstrdup(v) : NULL;
}

static void
load_db(struct cfg *c, cfg_getenv_fn get, void *arg, struct cfg_vcap *vcap,
    struct cfg_problems *p)
{
	static const char *pg_names[] = { "PGHOST", "PGHOSTADDR", "PGSERVICE",
	    NULL };
	PQconninfoOption *opts;
	const char *v;
	char *msg = NULL;

	v = get(arg, "DATABASE_URL");
	c->db_source = "environment";
	if ((v == NULL || *v == '\0') && vcap->database_url != NULL) {
		v = vcap->database_url;
		c->db_source = "VCAP_SERVICES";
	}
	if (v != NULL && *v != '\0') {
		c->db_on = 1;
		c->database_url = xstrdup(v);
	} else if (first_set(get, arg, pg_names, NULL) != NULL) {
		c->db_on = 1;
		c->database_url = xstrdup("");
		c->db_source = "PG* variables";
	}
	if (c->db_on) {
		opts = PQconninfoParse(c->database_url, &msg);
		if (opts == NULL) {
			char *clean = cfg_redact(msg ? msg : "out of memory",
			    c->database_url);

			problem(p, "DATABASE_URL: not a libpq connection string "
			    "or URI: %s", clean);
			free(clean);
			PQfreemem(msg);
		}
		PQconninfoFree(opts);
	}
	v = get(arg, "OUTBOXD_DB_SCHEMA");
	c->db_schema = xstrdup(v && *v ? v : "is_migration");
	if (!valid_identifier(c->db_schema))
		problem(p, "OUTBOXD_DB_SCHEMA=%s: not a plain SQL identifier "
		    "(letters, digits, '_', at most 63)", c->db_schema);
	c->db_migrate = bool_var(get, arg, "OUTBOXD_DB_MIGRATE", 1, p);
	c->db_timeout_s = int_var(get, arg, "OUTBOXD_DB_TIMEOUT_S", 30, 1, 3600,
	    p);
}

size_t
cfg_load(struct cfg *c, cfg_getenv_fn get, void *arg, int check_paths,
    struct cfg_problems *p)
{
	struct cfg_vcap vcap = {0};
	const char *v;

	memset(c, 0, sizeof(*c));
	if (get == NULL)
		get = env_get;

	v = get(arg, "VCAP_SERVICES");
	if (v != NULL && *v != '\0')
		cfg_parse_vcap(v, &vcap, p);

	v = get(arg, "OUTBOXD_WATCH_DIR");
	c->watch_dir = xstrdup(v && *v ? v : "./uploads");
	v = get(arg, "OUTBOXD_STATE_DB");
	c->state_db = xstrdup(v && *v ? v : "./outbox.db");
	if (check_paths) {
		check_watch_dir(c->watch_dir, p);
		check_writable_parent("OUTBOXD_STATE_DB", c->state_db, p);
	}

	load_s3(c, get, arg, &vcap, p);
	load_s3_storage(c, get, arg, p);
	load_s3_streaming(c, get, arg, p);
	load_db(c, get, arg, &vcap, p);

	v = get(arg, "OUTBOXD_DEFAULT_USER");
	if (v != NULL && *v != '\0') {
		c->default_user = xstrdup(v);
		if (!uuid_valid(v))
			problem(p, "OUTBOXD_DEFAULT_USER=%s: not a UUID (user_id "
			    "is a uuid column)", v);
	}
	c->ignore = split_globs(get(arg, "OUTBOXD_IGNORE"));

	c->concurrency = int_var(get, arg, "OUTBOXD_CONCURRENCY", 16, 1, 256, p);
	c->multipart_threshold = 64 * MIB;
	v = get(arg, "OUTBOXD_MULTIPART_THRESHOLD");
	if (v != NULL && *v != '\0') {
		uint64_t n;

		if (cfg_parse_size(v, &n) < 0)
			problem(p, "OUTBOXD_MULTIPART_THRESHOLD=%s: not a size "
			    "(like 64MiB, 100MB or 67108864)", v);
		else if (n < 5 * MIB || n > 5 * 1024 * MIB)
			problem(p, "OUTBOXD_MULTIPART_THRESHOLD=%s: must be "
			    "between 5MiB and 5GiB (S3's part and PUT limits)", v);
		else
			c->multipart_threshold = n;
	}
	c->settle_ms = int_var(get, arg, "OUTBOXD_SETTLE_MS", 20, 0, 600000, p);

	v = get(arg, "OUTBOXD_WATCH_MODE");
	if (v == NULL || *v == '\0' || strcmp(v, "auto") == 0)
		c->watch_mode = WATCH_AUTO;
	else if (strcmp(v, "inotify") == 0)
		c->watch_mode = WATCH_INOTIFY;
	else if (strcmp(v, "poll") == 0)
		c->watch_mode = WATCH_POLL;
	else
		problem(p, "OUTBOXD_WATCH_MODE=%s: must be inotify, poll or "
		    "auto", v);
	c->poll_ms = int_var(get, arg, "OUTBOXD_POLL_MS", 1000, 50, 3600000, p);
	c->rescan_s = int_var(get, arg, "OUTBOXD_RESCAN_S", 3600, 0, 7 * 86400,
	    p);

	v = get(arg, "OUTBOXD_METRICS_FILE");
	if (v != NULL && *v != '\0') {
		c->metrics_file = xstrdup(v);
		if (check_paths)
			check_writable_parent("OUTBOXD_METRICS_FILE", v, p);
	}
	v = get(arg, "OUTBOXD_HTTP_LISTEN");
	if (v != NULL && *v != '\0') {
		struct listen_addr la;
		const char *why;

		if (listen_parse(v, &la, &why) < 0)
			problem(p, "OUTBOXD_HTTP_LISTEN=%s: %s", v, why);
		else
			c->http_listen = xstrdup(v);
	}
	v = get(arg, "OUTBOXD_LOG_FORMAT");
	if (v == NULL || *v == '\0' || strcmp(v, "text") == 0)
		c->log_json = 0;
	else if (strcmp(v, "json") == 0)
		c->log_json = 1;
	else
		problem(p, "OUTBOXD_LOG_FORMAT=%s: must be text or json", v);
	c->retry_base_ms = int_var(get, arg, "OUTBOXD_RETRY_BASE_MS", 1000, 10,
	    600000, p);
	c->retry_max_s = int_var(get, arg, "OUTBOXD_RETRY_MAX_S", 60, 1, 86400,
	    p);
	c->retention_s = 30 * 86400;
	v = get(arg, "OUTBOXD_RETENTION");
	if (v != NULL && *v != '\0') {
		int64_t n;

		if (cfg_parse_duration(v, &n) < 0)
			problem(p, "OUTBOXD_RETENTION=%s: not a duration (like "
			    "30d, 12h or 0 to keep every entry)", v);
		else if (n != 0 && (n < 3600 || n > 100LL * 365 * 86400))
			problem(p, "OUTBOXD_RETENTION=%s: must be 0 (keep every "
			    "entry) or between 1h and 100 years", v);
		else
			c->retention_s = n;
	}
	c->s3_timeout_s = int_var(get, arg, "OUTBOXD_S3_TIMEOUT_S", 30, 1, 3600,
	    p);
	c->poison_attempts = int_var(get, arg, "OUTBOXD_POISON_ATTEMPTS", 3, 1,
	    1000, p);
	c->scrub_interval_s = 7 * 86400;
	v = get(arg, "OUTBOXD_SCRUB_INTERVAL");
	if (v != NULL && *v != '\0') {
		int64_t secs;

		if (cfg_parse_duration(v, &secs) < 0)
			problem(p, "OUTBOXD_SCRUB_INTERVAL=%s: not a duration "
			    "(like 7d, 12h, 30m, 90s; 0 turns the scrub off)", v);
		else if (secs > 366 * 86400)
			problem(p, "OUTBOXD_SCRUB_INTERVAL=%s: must be at most a "
			    "year (366d)", v);
		else
			c->scrub_interval_s = secs;
	}
	c->scrub_rate = int_var(get, arg, "OUTBOXD_SCRUB_RATE", 5, 1, 1000, p);
	v = get(arg, "OUTBOXD_HARDLINKS");
	if (v != NULL && *v != '\0' && strcmp(v, "allow") != 0 &&
	    strcmp(v, "skip") != 0)
		problem(p, "OUTBOXD_HARDLINKS=%s: must be skip or allow", v);
	c->hardlinks_allow = v != NULL && strcmp(v, "allow") == 0;

	cfg_vcap_free(&vcap);
	return p->n;
}

void
cfg_free(struct cfg *c)
{
	char **g;

	free(c->watch_dir);
	free(c->state_db);
	free(c->bucket);
	free(c->region);
	free(c->access_key);
	if (c->secret_key != NULL)
		memset(c->secret_key, 0, strlen(c->secret_key));
	free(c->secret_key);
	free(c->session_token);
	free(c->profile);
	free(c->credentials_file);
	free(c->config_file);
	free(c->web_identity_token_file);
	free(c->role_arn);
	free(c->role_session_name);
	free(c->container_uri);
	if (c->container_token != NULL)
		memset(c->container_token, 0, strlen(c->container_token));
	free(c->container_token);
	free(c->container_token_file);
	free(c->imds_endpoint);
	free(c->sts_endpoint);
	free(c->sse);
	free(c->sse_kms_key_id);
	free(c->storage_class);
	free(c->endpoint);
	free(c->ca_bundle);
	free(c->database_url);
	free(c->db_schema);
	free(c->default_user);
	for (g = c->ignore; g != NULL && *g != NULL; g++)
		free(*g);
	free(c->ignore);
	free(c->metrics_file);
	free(c->http_listen);
	memset(c, 0, sizeof(*c));
}

/* ---- VCAP_SERVICES ------------------------------------------------------ */

static const char *
json_str(const cJSON *obj, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);

	return cJSON_IsString(v) && v->valuestring[0] != '\0' ?
	    v->valuestring : NULL;
}

static void
set_once(char **dst, const char *v)
{
	if (*dst == NULL && v != NULL)
		*dst = xstrdup(v);
}

/* Does a service instance look like PostgreSQL, by label, tags or URI? */
static int
is_postgres(const cJSON *svc, const cJSON *cred)
{
	const char *label = json_str(svc, "label");
	const char *uri = json_str(cred, "uri");
	const cJSON *tags = cJSON_GetObjectItemCaseSensitive(svc, "tags"), *t;

	if (uri != NULL && (strncmp(uri, "postgres://", 11) == 0 ||
	    strncmp(uri, "postgresql://", 13) == 0))
		return 1;
	if (label != NULL && strstr(label, "postgres") != NULL)
		return 1;
	cJSON_ArrayForEach(t, tags)
		if (cJSON_IsString(t) && strstr(t->valuestring, "postgres"))
			return 1;
	return 0;
}

/* Appends key='value' to a conninfo string, quoting as libpq wants. */
static void
conninfo_add(struct buf *b, const char *key, const char *value)
{
	const char *s;

	if (value == NULL)
		return;
	buf_printf(b, "%s%s='", b->len ? " " : "", key);
	for (s = value; *s != '\0'; s++) {
		if (*s == '\'' || *s == '\\')
			buf_append(b, "\\", 1);
		buf_append(b, s, 1);
	}
	buf_append(b, "'", 1);
}

static void
vcap_postgres(const cJSON *cred, struct cfg_vcap *v)
{
	const char *uri = json_str(cred, "uri");
	const cJSON *port;
	struct buf b = {0};
	char portbuf[16] = "";

	if (v->database_url != NULL)
		return;
	if (uri != NULL) {
		v->database_url = xstrdup(uri);
		return;
	}
	/* SAP BTP and others list the parts instead of a URI. */
	port = cJSON_GetObjectItemCaseSensitive(cred, "port");
	if (cJSON_IsNumber(port))
		snprintf(portbuf, sizeof(portbuf), "%d", port->valueint);
	else if (cJSON_IsString(port))
		snprintf(portbuf, sizeof(portbuf), "%s", port->valuestring);
	conninfo_add(&b, "host", json_str(cred, "hostname") ?
	    json_str(cred, "hostname") : json_str(cred, "host"));
	conninfo_add(&b, "port", portbuf[0] ? portbuf : NULL);
	conninfo_add(&b, "dbname", json_str(cred, "dbname") ?
	    json_str(cred, "dbname") : json_str(cred, "name"));
	conninfo_add(&b, "user", json_str(cred, "username") ?
	    json_str(cred, "username") : json_str(cred, "user"));
	conninfo_add(&b, "password", json_str(cred, "password"));
	if (json_str(cred, "sslmode") != NULL)
		conninfo_add(&b, "sslmode", json_str(cred, "sslmode"));
	if (b.len > 0)
		v->database_url = buf_take(&b);
	buf_free(&b);
}

static void
vcap_s3(const cJSON *cred, struct cfg_vcap *v)
{
	const char *endpoint = json_str(cred, "endpoint");
	const char *host = json_str(cred, "host");

	if (v->bucket != NULL)
		return;
	set_once(&v->bucket, json_str(cred, "bucket") ? json_str(cred, "bucket")
	    : json_str(cred, "bucket_name"));
	set_once(&v->access_key, json_str(cred, "access_key_id"));
	set_once(&v->secret_key, json_str(cred, "secret_access_key"));
	set_once(&v->region, json_str(cred, "region"));
	if (endpoint == NULL && host != NULL) {
		/* A bare host is HTTPS; an AWS host means "no custom endpoint". */
		if (strstr(host, "amazonaws.com") == NULL)
			v->endpoint = strstr(host, "://") ? xstrdup(host) :
			    xasprintf("https://%s", host);
	} else if (endpoint != NULL && strstr(endpoint, "amazonaws.com") == NULL) {
		v->endpoint = strstr(endpoint, "://") ? xstrdup(endpoint) :
		    xasprintf("https://%s", endpoint);
	}
}

int
cfg_parse_vcap(const char *json, struct cfg_vcap *v, struct cfg_problems *p)
{
	cJSON *root = cJSON_Parse(json);
	const cJSON *label, *svc;

	if (root == NULL || !cJSON_IsObject(root)) {
		problem(p, "VCAP_SERVICES: not a JSON object");
		cJSON_Delete(root);
		return -1;
	}
	cJSON_ArrayForEach(label, root) {
		if (!cJSON_IsArray(label))
			continue;
		cJSON_ArrayForEach(svc, label) {
			const cJSON *cred = cJSON_GetObjectItemCaseSensitive(svc,
			    "credentials");

			if (!cJSON_IsObject(cred))
				continue;
			if (json_str(cred, "access_key_id") != NULL &&
			    json_str(cred, "secret_access_key") != NULL &&
			    (json_str(cred, "bucket") != NULL ||
			    json_str(cred, "bucket_name") != NULL))
				vcap_s3(cred, v);
			else if (is_postgres(svc, cred))
				vcap_postgres(cred, v);
		}
	}
	cJSON_Delete(root);
	return 0;
}

void
cfg_vcap_free(struct cfg_vcap *v)
{
	free(v->bucket);
	free(v->region);
	free(v->access_key);
	free(v->secret_key);
	free(v->endpoint);
	free(v->database_url);
	memset(v, 0, sizeof(*v));
}
