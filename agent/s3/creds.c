/*
 * creds.c - the credential chain and its refresh (see creds.h).
 *
 * Choosing the provider (once at start and on SIGHUP) looks only at the
 * configuration and the files it names, in the AWS SDKs' order:
 *
 *   1. static keys: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (with
 *      AWS_SESSION_TOKEN), or a bound service's keys in VCAP_SERVICES;
 *   2. a profile (AWS_PROFILE, else "default" when the files hold it) of
 *      AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE (~/.aws/credentials
 *      and ~/.aws/config): role_arn with web_identity_token_file, or with
 *      source_profile / credential_source through STS AssumeRole;
 *      credential_process; static keys;
 *   3. web identity: AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, through
 *      STS AssumeRoleWithWebIdentity;
 *   4. the container endpoint: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (at
 *      169.254.170.2) or _FULL_URI, with AWS_CONTAINER_AUTHORIZATION_TOKEN
 *      or _TOKEN_FILE;
 *   5. the EC2 instance metadata service, IMDSv2 (a session token first),
 *      unless AWS_EC2_METADATA_DISABLED.
 *
 * Fetching is done by the object's thread (and once, blocking, by
 * creds_new), never by the sync thread: a request signs with the copy
 * creds_get hands out, so a refresh never holds a transfer up. Temporary
 * credentials are fetched again when half their life, at most 5 minutes,
 * is left (the SDKs refresh 5 to 15 minutes ahead of an hour's keys);
 * a failed fetch is tried again with backoff while the old keys are
 * still good. Every reply is bounded (64 KiB) and parsed with cJSON or
 * libxml2; no secret, token or signed request is ever logged.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <openssl/evp.h>

#include "agent/s3/creds.h"
#include "agent/s3/sigv4.h"
#include "base/log.h"

#define REPLY_MAX	(64 * 1024)	/* bytes of a provider's reply */
#define MARGIN_MAX_MS	(5 * 60 * 1000)	/* refresh this long before expiry */
#define RETRY_MAX_MS	(60 * 1000)	/* backoff cap of a failed fetch */
#define PROFILE_DEPTH	4		/* source_profile hops */
#define ECS_HOST	"http://169.254.170.2"
#define IMDS_HOST	"http://169.254.169.254"

enum prov {
	P_STATIC,		/* keys given */
	P_PROCESS,		/* credential_process */
	P_ASSUME_ROLE,		/* STS AssumeRole with src->base's keys */
	P_WEB_IDENTITY,		/* STS AssumeRoleWithWebIdentity */
	P_CONTAINER,		/* the ECS/EKS credentials endpoint */
	P_IMDS,			/* EC2 instance metadata, IMDSv2 */
};

/* Where credentials come from; immutable once built. */
struct src {
	enum prov prov;
	char *name;		/* for the log: "environment", "profile dev", ... */
	char *ak, *sk, *token;	/* P_STATIC */
	char *command;		/* P_PROCESS */
	char *role_arn, *session_name, *external_id;	/* STS */
	char *token_file;	/* P_WEB_IDENTITY */
	struct src *base;	/* P_ASSUME_ROLE: the keys that assume it */
	char *url;		/* P_CONTAINER, P_IMDS: where to ask */
	char *auth, *auth_file;	/* P_CONTAINER: Authorization header */
	char *sts_url;		/* STS endpoint */
	char *region;		/* signing region of STS */
	char *ca_bundle;
};

struct creds {
	pthread_mutex_t mu;
	pthread_cond_t cv;	/* wakes the thread: stop, kick, reload */
	pthread_t thread;
	int started;		/* the thread runs */
	int stop;		/* creds_free was called */
	int kick;		/* refresh now (ExpiredToken, reload) */
	struct src *src;	/* the provider, owned by the thread once started */
	struct src *next_src;	/* from creds_reload, taken by the thread */
	char *problem;		/* a reload that found no provider */
	struct creds_val cur;	/* the credentials in use */
	int have;		/* cur holds credentials */
	char why[1024];		/* the last fetch's failure, "" after success */
	int failures;		/* consecutive failed fetches */
	int64_t fetched_ms;	/* when cur was fetched (wall) */
	char provider[160];	/* src->name, for creds_provider */
};

/* ---- small helpers -------------------------------------------------------- */

static char *
dup_or_null(const char *s)
{
	return s != NULL && *s != '\0' ? xstrdup(s) : NULL;
}

static void
wipe_free(char *s)
{
	if (s != NULL) {
		memset(s, 0, strlen(s));
		free(s);
	}
}

static void
src_free(struct src *s)
{
	if (s == NULL)
		return;
	free(s->name);
	free(s->ak);
	wipe_free(s->sk);
	wipe_free(s->token);
	free(s->command);
	free(s->role_arn);
	free(s->session_name);
	free(s->external_id);
	free(s->token_file);
	src_free(s->base);
	free(s->url);
	wipe_free(s->auth);
	free(s->auth_file);
	free(s->sts_url);
	free(s->region);
	free(s->ca_bundle);
	free(s);
}

static struct src *
src_new(enum prov p, const struct cfg *cfg, char *name)
{
	struct src *s = xcalloc(1, sizeof(*s));

	s->prov = p;
	s->name = name;
	s->region = xstrdup(cfg->region ? cfg->region : "us-east-1");
	s->sts_url = cfg->sts_endpoint ? xstrdup(cfg->sts_endpoint) :
	    xasprintf("https://sts.%s.amazonaws.com", s->region);
	s->ca_bundle = dup_or_null(cfg->ca_bundle);
	return s;
}

/* Reads a small file whole (a token file); NULL with e. */
static char *
read_small_file(const char *path, struct err *e)
{
	struct buf b = {0};
	char tmp[4096];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		err_sys(e, ERR_REFUSED, "reading %s", path);
		return NULL;
	}
	while ((n = read(fd, tmp, sizeof(tmp))) > 0 && b.len < REPLY_MAX)
		buf_append(&b, tmp, (size_t)n);
	close(fd);
	if (n < 0 || b.len >= REPLY_MAX) {
		err_set(e, ERR_REFUSED, "reading %s: %s", path, n < 0 ?
		    strerror(errno) : "too large");
		buf_free(&b);
		return NULL;
	}
	buf_append(&b, "", 1);
	b.len--;
	/* Token files end with a newline more often than not. */
	while (b.len > 0 && (b.data[b.len - 1] == '\n' ||
	    b.data[b.len - 1] == '\r' || b.data[b.len - 1] == ' '))
		b.data[--b.len] = '\0';
	return buf_take(&b);
}

/* ---- the shared files (~/.aws/credentials, ~/.aws/config) ----------------- */

/* One profile's keys, read from both files (credentials wins). */
struct profile {
	char *keys[16], *vals[16];
	int n;
	int found;
};

static void
profile_free(struct profile *p)
{
	int i;

	for (i = 0; i < p->n; i++) {
		free(p->keys[i]);
		wipe_free(p->vals[i]);
	}
	memset(p, 0, sizeof(*p));
}

static const char *
profile_get(const struct profile *p, const char *key)
{
	int i;

	for (i = 0; i < p->n; i++)
		if (strcmp(p->keys[i], key) == 0)
			return p->vals[i];
	return NULL;
}

static char *
trim(char *s)
{
	char *end;

	while (*s == ' ' || *s == '\t')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' ||
	    end[-1] == '\r' || end[-1] == '\n'))
		*--end = '\0';
	return s;
}

/*
 * Adds the keys of section want of an INI file to p (a key already there
 * stays). In the config file a section is "[profile NAME]" ("[default]"
 * for the default); in the credentials file it is "[NAME]".
 */
static void
read_ini(const char *path, const char *want, int config, struct profile *p)
{
	FILE *f = path ? fopen(path, "re") : NULL;
	char *line = NULL;
	size_t cap = 0;
	int in = 0, lines = 0;

	if (f == NULL)
		return;
	while (getline(&line, &cap, f) > 0 && lines++ < 10000) {
		char *l = trim(line), *eq, *name;

		if (*l == '#' || *l == ';' || *l == '\0')
			continue;
		if (*l == '[') {
			char *end = strchr(l, ']');

			if (end == NULL)
				continue;
			*end = '\0';
			name = trim(l + 1);
			if (config && strncmp(name, "profile ", 8) == 0)
				name = trim(name + 8);
			else if (config && strcmp(name, "default") != 0)
				name = "";	/* [sso-session x], [services x] */
			in = strcmp(name, want) == 0;
			if (in)
				p->found = 1;
			continue;
		}
		if (!in || (eq = strchr(l, '=')) == NULL || p->n >= 16)
			continue;
		*eq = '\0';
		if (profile_get(p, trim(l)) != NULL)
			continue;
		p->keys[p->n] = xstrdup(trim(l));
		p->vals[p->n] = xstrdup(trim(eq + 1));
		p->n++;
	}
	free(line);
	fclose(f);
}

static char *
default_path(const char *given, const char *file)
{
	const char *home = getenv("HOME");

	if (given != NULL)
		return xstrdup(given);
	return home ? xasprintf("%s/.aws/%s", home, file) : NULL;
}

static struct src *from_profile(const struct cfg *cfg, const char *name,
    int depth, struct err *e);

/* A profile's credential_source: the keys a role is assumed with. */
static struct src *
from_credential_source(const struct cfg *cfg, const char *what,
    struct err *e)
{
	if (strcmp(what, "Environment") == 0 && cfg->access_key != NULL &&
	    cfg->secret_key != NULL) {
		struct src *s = src_new(P_STATIC, cfg, xstrdup("environment"));

		s->ak = xstrdup(cfg->access_key);
		s->sk = xstrdup(cfg->secret_key);
		s->token = dup_or_null(cfg->session_token);
		return s;
	}
	if (strcmp(what, "EcsContainer") == 0 && cfg->container_uri != NULL) {
		struct src *s = src_new(P_CONTAINER, cfg,
		    xstrdup("the container endpoint"));

		s->url = xstrdup(cfg->container_uri);
		s->auth = dup_or_null(cfg->container_token);
		s->auth_file = dup_or_null(cfg->container_token_file);
		return s;
	}
	if (strcmp(what, "Ec2InstanceMetadata") == 0) {
		struct src *s = src_new(P_IMDS, cfg,
		    xstrdup("the instance metadata service"));

		s->url = xstrdup(cfg->imds_endpoint ? cfg->imds_endpoint :
		    IMDS_HOST);
		return s;
	}
	err_set(e, ERR_FATAL, "credential_source = %s: not Environment, "
	    "EcsContainer or Ec2InstanceMetadata with its settings present",
	    what);
	return NULL;
}

/* The role part of a profile: role_arn with how it is assumed. */
static struct src *
profile_role(const struct cfg *cfg, const char *name, const struct profile *p,
    int depth, struct err *e)
{
	const char *v;
	struct src *s, *base = NULL;

	if ((v = profile_get(p, "web_identity_token_file")) != NULL) {
		s = src_new(P_WEB_IDENTITY, cfg, xasprintf("profile %s (web "
		    "identity, role %s)", name, profile_get(p, "role_arn")));
		s->token_file = xstrdup(v);
	} else {
		if ((v = profile_get(p, "source_profile")) != NULL) {
			/* A profile naming itself takes its own static keys. */
			if (strcmp(v, name) == 0 &&
			    profile_get(p, "aws_access_key_id") != NULL) {
				base = src_new(P_STATIC, cfg, xasprintf("profile "
				    "%s", name));
				base->ak = xstrdup(profile_get(p,
				    "aws_access_key_id"));
				base->sk = dup_or_null(profile_get(p,
				    "aws_secret_access_key"));
			} else {
				base = from_profile(cfg, v, depth + 1, e);
			}
		} else if ((v = profile_get(p, "credential_source")) != NULL) {
			base = from_credential_source(cfg, v, e);
		} else {
			err_set(e, ERR_FATAL, "profile %s: role_arn needs "
			    "source_profile, credential_source or "
			    "web_identity_token_file", name);
		}
		if (base == NULL)
			return NULL;
		s = src_new(P_ASSUME_ROLE, cfg, xasprintf("profile %s (role %s, "
		    "assumed with %s)", name, profile_get(p, "role_arn"),
		    base->name));
		s->base = base;
	}
	s->role_arn = xstrdup(profile_get(p, "role_arn"));
	s->session_name = xstrdup(profile_get(p, "role_session_name") ?
	    profile_get(p, "role_session_name") : "outboxd");
	s->external_id = dup_or_null(profile_get(p, "external_id"));
	return s;
}

/* The credentials a named profile stands for; NULL with e. */
static struct src *
from_profile(const struct cfg *cfg, const char *name, int depth, struct err *e)
{
	struct profile p = {0};
	struct src *s = NULL;
	char *cred = default_path(cfg->credentials_file, "credentials");
	char *conf = default_path(cfg->config_file, "config");
	const char *v;

	if (depth > PROFILE_DEPTH) {
		err_set(e, ERR_FATAL, "profile %s: source_profile goes more "
		    "than %d deep (a loop?)", name, PROFILE_DEPTH);
		goto out;
	}
	read_ini(cred, name, 0, &p);
	read_ini(conf, name, 1, &p);
	if (!p.found) {
		err_set(e, ERR_FATAL, "AWS_PROFILE=%s: no such profile in %s or "
		    "%s", name, cred ? cred : "(no HOME)", conf ? conf :
		    "(no HOME)");
		goto out;
	}
	if (profile_get(&p, "role_arn") != NULL) {
		s = profile_role(cfg, name, &p, depth, e);
	} else if ((v = profile_get(&p, "credential_process")) != NULL) {
		s = src_new(P_PROCESS, cfg, xasprintf("profile %s "
		    "(credential_process)", name));
		s->command = xstrdup(v);
	} else if (profile_get(&p, "aws_access_key_id") != NULL &&
	    profile_get(&p, "aws_secret_access_key") != NULL) {
		s = src_new(P_STATIC, cfg, xasprintf("profile %s (static "
		    "keys)", name));
		s->ak = xstrdup(profile_get(&p, "aws_access_key_id"));
		s->sk = xstrdup(profile_get(&p, "aws_secret_access_key"));
		s->token = dup_or_null(profile_get(&p, "aws_session_token"));
	} else {
		err_set(e, ERR_FATAL, "profile %s: no credentials in it (keys, "
		    "credential_process or role_arn)", name);
	}
out:
	profile_free(&p);
	free(cred);
	free(conf);
	return s;
}

/* 1 when the default profile exists in either file. */
static int
have_default_profile(const struct cfg *cfg)
{
	struct profile p = {0};
	char *cred = default_path(cfg->credentials_file, "credentials");
	char *conf = default_path(cfg->config_file, "config");
	int found;

	read_ini(cred, "default", 0, &p);
	read_ini(conf, "default", 1, &p);
	found = p.found && p.n > 0;
	profile_free(&p);
	free(cred);
	free(conf);
	return found;
}

/* The chain's choice for cfg; NULL with e (a configuration problem). */
static struct src *
choose(const struct cfg *cfg, struct err *e)
{
	struct src *s;

	if (cfg->access_key != NULL && cfg->secret_key != NULL) {
		s = src_new(P_STATIC, cfg, xstrdup(cfg->creds_source ?
		    cfg->creds_source : "environment"));
		s->ak = xstrdup(cfg->access_key);
		s->sk = xstrdup(cfg->secret_key);
		s->token = dup_or_null(cfg->session_token);
		return s;
	}
	if (cfg->profile != NULL)
		return from_profile(cfg, cfg->profile, 0, e);
	if (have_default_profile(cfg))
		return from_profile(cfg, "default", 0, e);
	if (cfg->web_identity_token_file != NULL && cfg->role_arn != NULL) {
		s = src_new(P_WEB_IDENTITY, cfg, xasprintf("web identity (role "
		    "%s, token file %s)", cfg->role_arn,
		    cfg->web_identity_token_file));
		s->token_file = xstrdup(cfg->web_identity_token_file);
		s->role_arn = xstrdup(cfg->role_arn);
		s->session_name = xstrdup(cfg->role_session_name ?
		    cfg->role_session_name : "outboxd");
		return s;
	}
	if (cfg->container_uri != NULL) {
		s = src_new(P_CONTAINER, cfg, xasprintf("the container "
		    "credentials endpoint %s", cfg->container_uri));
		s->url = xstrdup(cfg->container_uri);
		s->auth = dup_or_null(cfg->container_token);
		s->auth_file = dup_or_null(cfg->container_token_file);
		return s;
	}
	if (!cfg->imds_disabled) {
		s = src_new(P_IMDS, cfg, xasprintf("the EC2 instance metadata "
		    "service (IMDSv2) at %s", cfg->imds_endpoint ?
		    cfg->imds_endpoint : IMDS_HOST));
		s->url = xstrdup(cfg->imds_endpoint ? cfg->imds_endpoint :
		    IMDS_HOST);
		return s;
	}
	err_set(e, ERR_FATAL, "no S3 credentials: set AWS_ACCESS_KEY_ID and "
	    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_WEB_IDENTITY_TOKEN_FILE "
	    "with AWS_ROLE_ARN, or a container endpoint (the instance metadata "
	    "service is disabled by AWS_EC2_METADATA_DISABLED)");
	return NULL;
}

/* ---- HTTP ----------------------------------------------------------------- */

static size_t
collect_reply(char *p, size_t size, size_t n, void *arg)
{
	struct buf *b = arg;

	if (b->len + size * n > REPLY_MAX)
		return 0;	/* curl fails the transfer: too large */
	buf_append(b, p, size * n);
	return size * n;
}

/*
 * One request, blocking, at most timeout_ms. Fills out (the body, NUL
 * ended) and returns the HTTP status, or -1 with e when none came. The
 * URL is named in errors (none carries a secret: tokens go in headers).
 */
static long
http_do(const struct src *s, const char *method, const char *url,
    struct curl_slist *headers, const char *body, long timeout_ms,
    struct buf *out, struct err *e)
{
	CURL *h = curl_easy_init();
	char errbuf[CURL_ERROR_SIZE] = "";
	long status = -1;
	CURLcode cc;

	buf_reset(out);
	if (h == NULL) {
		err_set(e, ERR_REFUSED, "curl_easy_init failed");
		return -1;
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 2000 ?
	    timeout_ms : 2000);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect_reply);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
	if (s->ca_bundle != NULL)
		curl_easy_setopt(h, CURLOPT_CAINFO, s->ca_bundle);
	if (strcmp(method, "POST") == 0) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
	} else if (strcmp(method, "GET") != 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
		if (strcmp(method, "PUT") == 0) {
			curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
			curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
		}
	}
	cc = curl_easy_perform(h);
	if (cc == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	else
		err_set(e, ERR_REFUSED, "%s %s: %s", method, url, errbuf[0] ?
		    errbuf : curl_easy_strerror(cc));
	curl_easy_cleanup(h);
	buf_append(out, "", 1);
	out->len--;
	return status;
}

static struct curl_slist *
header(struct curl_slist *l, const char *name, const char *value)
{
	char *line = xasprintf("%s: %s", name, value);
	struct curl_slist *n = curl_slist_append(l, line);

	memset(line, 0, strlen(line));
	free(line);
	if (n == NULL)
		abort();
	return n;
}

/* The first line of a reply body, for an error message; bounded. */
static void
reply_error(struct err *e, const char *what, long status, const struct buf *b)
{
	char line[200];

	snprintf(line, sizeof(line), "%s", b->data ? b->data : "");
	line[strcspn(line, "\r\n")] = '\0';
	err_set(e, ERR_REFUSED, "%s: HTTP %ld%s%s", what, status, line[0] ?
	    ": " : "", line);
}

/* ---- parsing replies ------------------------------------------------------ */

static int64_t
parse_expiration(const char *s)
{
	char tmp[64];
	size_t n;

	if (s == NULL)
		return -1;
	snprintf(tmp, sizeof(tmp), "%s", s);
	n = strlen(tmp);
	/* credential_process may say +00:00 where AWS says Z. */
	if (n > 6 && strcmp(tmp + n - 6, "+00:00") == 0)
		strcpy(tmp + n - 6, "Z");
	return time_parse_iso8601(tmp);
}

/* Fills v from three strings; -1 with e when they do not fit or miss. */
static int
fill(struct creds_val *v, const char *ak, const char *sk, const char *token,
    const char *expires, const char *what, struct err *e)
{
	if (ak == NULL || sk == NULL || *ak == '\0' || *sk == '\0') {
		err_set(e, ERR_REFUSED, "%s: the reply holds no access key and "
		    "secret", what);
		return -1;
	}
	if (strlen(ak) >= sizeof(v->access_key) || strlen(sk) >=
	    sizeof(v->secret_key) || (token && strlen(token) >=
	    sizeof(v->token))) {
		err_set(e, ERR_REFUSED, "%s: credentials longer than outboxd "
		    "takes", what);
		return -1;
	}
	memset(v, 0, sizeof(*v));
	strcpy(v->access_key, ak);
	strcpy(v->secret_key, sk);
	if (token)
		strcpy(v->token, token);
	v->expires_ms = 0;
	if (expires != NULL && (v->expires_ms = parse_expiration(expires)) < 0) {
		err_set(e, ERR_REFUSED, "%s: Expiration %.40s is not an ISO "
		    "8601 UTC time", what, expires);
		return -1;
	}
	return 0;
}

static const char *
jstr(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The JSON the container endpoint, IMDS and credential_process answer. */
static int
parse_json_creds(const struct buf *b, const char *token_name,
    struct creds_val *v, const char *what, struct err *e)
{
	cJSON *j = cJSON_ParseWithLength(b->data ? b->data : "", b->len);
	const char *code;
	int rc;

	if (j == NULL || !cJSON_IsObject(j)) {
		err_set(e, ERR_REFUSED, "%s: the reply is not a JSON object",
		    what);
		cJSON_Delete(j);
		return -1;
	}
	code = jstr(j, "Code");
	if (code != NULL && strcmp(code, "Success") != 0) {
		err_set(e, ERR_REFUSED, "%s: Code %.60s: %.200s", what, code,
		    jstr(j, "Message") ? jstr(j, "Message") : "");
		cJSON_Delete(j);
		return -1;
	}
	rc = fill(v, jstr(j, "AccessKeyId"), jstr(j, "SecretAccessKey"),
	    jstr(j, token_name), jstr(j, "Expiration"), what, e);
	cJSON_Delete(j);
	return rc;
}

static const xmlNode *
find_elem(const xmlNode *n, const char *name)
{
	for (; n != NULL; n = n->next) {
		const xmlNode *f;

		if (n->type == XML_ELEMENT_NODE &&
		    strcmp((const char *)n->name, name) == 0)
			return n;
		if ((f = find_elem(n->children, name)) != NULL)
			return f;
	}
	return NULL;
}

static char *
elem_text(const xmlNode *root, const char *name)
{
	const xmlNode *n = find_elem(root, name);
	xmlChar *t = n ? xmlNodeGetContent(n) : NULL;
	char *s = t ? xstrdup((const char *)t) : NULL;

	if (t != NULL) {
		memset(t, 0, strlen((const char *)t));
		xmlFree(t);
	}
	return s;
}

/* STS's XML reply: Credentials, or an Error with Code and Message. */
static int
parse_sts(const struct buf *b, long status, struct creds_val *v,
    const char *what, struct err *e)
{
	xmlDocPtr doc = xmlReadMemory(b->data ? b->data : "", (int)b->len,
	    "sts.xml", NULL, XML_PARSE_NONET | XML_PARSE_NOERROR |
	    XML_PARSE_NOWARNING);
	const xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
	char *ak, *sk, *tok, *exp, *code, *msg;
	int rc = -1;

	if (root == NULL) {
		reply_error(e, what, status, b);
		xmlFreeDoc(doc);
		return -1;
	}
	if (status != 200) {
		code = elem_text(root, "Code");
		msg = elem_text(root, "Message");
		err_set(e, ERR_REFUSED, "%s: HTTP %ld %.80s: %.300s", what,
		    status, code ? code : "", msg ? msg : "");
		free(code);
		free(msg);
		xmlFreeDoc(doc);
		return -1;
	}
	ak = elem_text(root, "AccessKeyId");
	sk = elem_text(root, "SecretAccessKey");
	tok = elem_text(root, "SessionToken");
	exp = elem_text(root, "Expiration");
	rc = fill(v, ak, sk, tok, exp, what, e);
	free(ak);
	wipe_free(sk);
	wipe_free(tok);
	free(exp);
	xmlFreeDoc(doc);
	return rc;
}

/* ---- the providers -------------------------------------------------------- */

static int fetch(const struct src *s, struct creds_val *v, struct err *e);

/* Appends name=value, form-encoded (SigV4's encoding is RFC 3986). */
static void
form(struct buf *b, const char *name, const char *value)
{
	if (b->len > 0)
		buf_puts(b, "&");
	sigv4_uri_encode(b, name, 0);
	buf_puts(b, "=");
	sigv4_uri_encode(b, value, 0);
}

/* Host (with port) and path of an STS endpoint URL. */
static int
split_url(const char *url, char **host, char **path)
{
	CURLU *u = curl_url();
	char *h = NULL, *port = NULL, *p = NULL;
	int rc = -1;

	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK) {
		curl_url_get(u, CURLUPART_PORT, &port, 0);
		curl_url_get(u, CURLUPART_PATH, &p, 0);
		*host = port ? xasprintf("%s:%s", h, port) : xstrdup(h);
		*path = xstrdup(p && *p ? p : "/");
		rc = 0;
	}
	curl_free(h);
	curl_free(port);
	curl_free(p);
	curl_url_cleanup(u);
	return rc;
}

/* An STS Query API call; signed with base when not NULL. */
static int
sts_call(const struct src *s, const char *body, const struct creds_val *base,
    struct creds_val *v, const char *what, struct err *e)
{
	struct curl_slist *h = NULL;
	struct buf reply = {0};
	long status;
	int rc = -1;

	h = header(h, "Content-Type", "application/x-www-form-urlencoded; "
	    "charset=utf-8");
	h = header(h, "Accept", "application/xml");
	if (base != NULL) {
		unsigned char sha[32];
		char hex[65], amz[17], *host = NULL, *path = NULL;
		struct buf auth = {0};
		struct sigv4_pair hd[2];
		size_t nh = 0;
		struct sigv4_creds c = { base->access_key, base->secret_key,
		    base->token[0] ? base->token : NULL };
		struct sigv4_request r;

		if (split_url(s->sts_url, &host, &path) < 0) {
			err_set(e, ERR_REFUSED, "%s: not a URL: %s", what,
			    s->sts_url);
			curl_slist_free_all(h);
			return -1;
		}
		EVP_Digest(body, strlen(body), sha, NULL, EVP_sha256(), NULL);
		hex_encode(sha, sizeof(sha), hex);
		hd[nh++] = (struct sigv4_pair){ "content-type",
		    "application/x-www-form-urlencoded; charset=utf-8" };
		if (c.session_token != NULL)
			hd[nh++] = (struct sigv4_pair){ "x-amz-security-token",
			    c.session_token };
		r = (struct sigv4_request){ .method = "POST", .host = host,
		    .path = path, .headers = hd, .n_headers = nh,
		    .payload_hash = hex, .region = s->region, .service = "sts",
		    .time = time(NULL) };
		sigv4_sign(&r, &c, &auth, amz, NULL);
		h = header(h, "Host", host);
		h = header(h, "x-amz-date", amz);
		h = header(h, "x-amz-content-sha256", hex);
		if (c.session_token != NULL)
			h = header(h, "x-amz-security-token", c.session_token);
		h = header(h, "Authorization", auth.data);
		memset(auth.data, 0, auth.len);
		buf_free(&auth);
		free(host);
		free(path);
	}
	status = http_do(s, "POST", s->sts_url, h, body, 10000, &reply, e);
	if (status >= 0)
		rc = parse_sts(&reply, status, v, what, e);
	curl_slist_free_all(h);
	memset(reply.data ? reply.data : "", 0, reply.len);
	buf_free(&reply);
	return rc;
}

static int
fetch_assume_role(const struct src *s, struct creds_val *v, struct err *e)
{
	struct creds_val base;
	struct buf body = {0};
	int rc;

	if (fetch(s->base, &base, e) < 0)
		return -1;
	form(&body, "Action", "AssumeRole");
	form(&body, "Version", "2011-06-15");
	form(&body, "RoleArn", s->role_arn);
	form(&body, "RoleSessionName", s->session_name);
	if (s->external_id != NULL)
		form(&body, "ExternalId", s->external_id);
	rc = sts_call(s, body.data, &base, v, "STS AssumeRole", e);
	memset(&base, 0, sizeof(base));
	buf_free(&body);
	return rc;
}

static int
fetch_web_identity(const struct src *s, struct creds_val *v, struct err *e)
{
	char *token = read_small_file(s->token_file, e);
	struct buf body = {0};
	int rc;

	if (token == NULL)
		return -1;
	form(&body, "Action", "AssumeRoleWithWebIdentity");
	form(&body, "Version", "2011-06-15");
	form(&body, "RoleArn", s->role_arn);
	form(&body, "RoleSessionName", s->session_name);
	form(&body, "WebIdentityToken", token);
	rc = sts_call(s, body.data, NULL, v, "STS AssumeRoleWithWebIdentity",
	    e);
	wipe_free(token);
	memset(body.data, 0, body.len);
	buf_free(&body);
	return rc;
}

static int
fetch_container(const struct src *s, struct creds_val *v, struct err *e)
{
	struct curl_slist *h = NULL;
	struct buf reply = {0};
	char *token = NULL;
	long status;
	int rc = -1;

	if (s->auth_file != NULL && (token = read_small_file(s->auth_file,
	    e)) == NULL)
		return -1;
	if (token != NULL || s->auth != NULL)
		h = header(h, "Authorization", token ? token : s->auth);
	status = http_do(s, "GET", s->url, h, NULL, 5000, &reply, e);
	if (status == 200)
		rc = parse_json_creds(&reply, "Token", v, "the container "
		    "credentials endpoint", e);
	else if (status >= 0)
		reply_error(e, "the container credentials endpoint", status,
		    &reply);
	wipe_free(token);
	curl_slist_free_all(h);
	memset(reply.data ? reply.data : "", 0, reply.len);
	buf_free(&reply);
	return rc;
}

/* IMDSv2: a session token (PUT), the role's name, then its keys. */
static int
fetch_imds(const struct src *s, struct creds_val *v, struct err *e)
{
	struct curl_slist *h = NULL;
	struct buf reply = {0};
	char *url, *token = NULL, *role = NULL;
	long status;
	int rc = -1;

	url = xasprintf("%s/latest/api/token", s->url);
	h = header(h, "X-aws-ec2-metadata-token-ttl-seconds", "21600");
	status = http_do(s, "PUT", url, h, NULL, 1000, &reply, e);
	curl_slist_free_all(h);
	h = NULL;
	free(url);
	if (status != 200) {
		if (status >= 0)
			reply_error(e, "IMDSv2 session token", status, &reply);
		goto out;
	}
	token = buf_take(&reply);
	h = header(h, "X-aws-ec2-metadata-token", token);
	url = xasprintf("%s/latest/meta-data/iam/security-credentials/",
	    s->url);
	status = http_do(s, "GET", url, h, NULL, 1000, &reply, e);
	free(url);
	if (status != 200) {
		if (status >= 0)
			reply_error(e, "IMDS: the instance's role (is an "
			    "instance profile attached?)", status, &reply);
		goto out;
	}
	role = xstrdup(reply.data ? reply.data : "");
	role[strcspn(role, "\r\n")] = '\0';
	if (role[0] == '\0' || strchr(role, '/') != NULL) {
		err_set(e, ERR_REFUSED, "IMDS: no role name in the reply");
		goto out;
	}
	url = xasprintf("%s/latest/meta-data/iam/security-credentials/%s",
	    s->url, role);
	status = http_do(s, "GET", url, h, NULL, 1000, &reply, e);
	free(url);
	if (status == 200)
		rc = parse_json_creds(&reply, "Token", v, "IMDS", e);
	else if (status >= 0)
		reply_error(e, "IMDS: the role's credentials", status, &reply);
out:
	wipe_free(token);
	free(role);
	curl_slist_free_all(h);
	memset(reply.data ? reply.data : "", 0, reply.len);
	buf_free(&reply);
	return rc;
}

/* credential_process: the command's stdout is the JSON (Version 1). */
static int
fetch_process(const struct src *s, struct creds_val *v, struct err *e)
{
	int out[2], status, rc = -1;
	struct buf b = {0};
	char tmp[4096];
	ssize_t n;
	pid_t pid;

	if (pipe2(out, O_CLOEXEC) < 0) {
		err_sys(e, ERR_REFUSED, "credential_process: pipe");
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		err_sys(e, ERR_REFUSED, "credential_process: fork");
		close(out[0]);
		close(out[1]);
		return -1;
	}
	if (pid == 0) {
		sigset_t all;

		sigemptyset(&all);
		pthread_sigmask(SIG_SETMASK, &all, NULL);
		dup2(out[1], 1);
		execl("/bin/sh", "sh", "-c", s->command, (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	while ((n = read(out[0], tmp, sizeof(tmp))) > 0 && b.len < REPLY_MAX)
		buf_append(&b, tmp, (size_t)n);
	close(out[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		err_set(e, ERR_REFUSED, "credential_process exited with %d",
		    WIFEXITED(status) ? WEXITSTATUS(status) : 128 +
		    WTERMSIG(status));
	else
		rc = parse_json_creds(&b, "SessionToken", v,
		    "credential_process", e);
	memset(b.data ? b.data : "", 0, b.len);
	buf_free(&b);
	return rc;
}

static int
fetch(const struct src *s, struct creds_val *v, struct err *e)
{
	switch (s->prov) {
	case P_STATIC:
		return fill(v, s->ak, s->sk, s->token, NULL, s->name, e);
	case P_PROCESS:
		return fetch_process(s, v, e);
	case P_ASSUME_ROLE:
		return fetch_assume_role(s, v, e);
	case P_WEB_IDENTITY:
		return fetch_web_identity(s, v, e);
	case P_CONTAINER:
		return fetch_container(s, v, e);
	case P_IMDS:
		return fetch_imds(s, v, e);
	}
	return -1;
}

/* ---- the object and its thread ------------------------------------------- */

static void
describe_expiry(const struct creds_val *v, char *out, size_t n)
{
	char when[32];

	if (v->expires_ms == 0) {
		snprintf(out, n, "keys that do not expire");
		return;
	}
	time_iso8601(v->expires_ms, when, sizeof(when));
	snprintf(out, n, "temporary, expire at %s", when);
}

/* Fetches with c->src (mutex not held); stores the outcome. */
static void
refresh(struct creds *c, const struct src *src, int first)
{
	struct creds_val v;
	struct err e = {0};
	char exp[80];
	int rc = fetch(src, &v, &e);

	pthread_mutex_lock(&c->mu);
	if (rc == 0) {
		v.gen = c->cur.gen + 1;
		c->cur = v;
		c->have = 1;
		c->fetched_ms = time_now_ms();
		c->failures = 0;
		c->why[0] = '\0';
	} else {
		c->failures++;
		snprintf(c->why, sizeof(c->why), "%s", e.msg);
	}
	pthread_mutex_unlock(&c->mu);
	describe_expiry(&v, exp, sizeof(exp));
	if (rc == 0 && first)
		log_info("S3 credentials from %s (%s)", src->name, exp);
	else if (rc == 0)
		log_info("S3 credentials refreshed from %s (%s)", src->name, exp);
	else
		log_warnx("S3 credentials from %s: %s (trying again with "
		    "backoff)", src->name, e.msg);
	memset(&v, 0, sizeof(v));
}

/* When the thread should fetch next (wall ms; INT64_MAX: only on kick). */
static int64_t
next_fetch(const struct creds *c)
{
	int64_t life, margin, backoff;

	if (c->failures > 0) {
		backoff = 1000ll << (c->failures < 7 ? c->failures - 1 : 6);
		return time_now_ms() + (backoff < RETRY_MAX_MS ? backoff :
		    RETRY_MAX_MS);
	}
	if (!c->have || c->cur.expires_ms == 0)
		return INT64_MAX;
	life = c->cur.expires_ms - c->fetched_ms;
	margin = life / 2 < MARGIN_MAX_MS ? life / 2 : MARGIN_MAX_MS;
	return c->cur.expires_ms - margin;
}

static void *
refresher(void *arg)
{
	struct creds *c = arg;

	pthread_mutex_lock(&c->mu);
	while (!c->stop) {
		int64_t at = next_fetch(c);
		int first = 0;

		if (!c->kick && c->next_src == NULL && time_now_ms() < at) {
			struct timespec ts;

			if (at == INT64_MAX) {
				pthread_cond_wait(&c->cv, &c->mu);
			} else {
				ts.tv_sec = (time_t)(at / 1000);
				ts.tv_nsec = (long)(at % 1000) * 1000000;
				pthread_cond_timedwait(&c->cv, &c->mu, &ts);
			}
			continue;
		}
		c->kick = 0;
		if (c->next_src != NULL) {
			src_free(c->src);
			c->src = c->next_src;
			c->next_src = NULL;
			snprintf(c->provider, sizeof(c->provider), "%s",
			    c->src->name);
			first = 1;
		}
		if (c->src == NULL)
			continue;
		pthread_mutex_unlock(&c->mu);
		refresh(c, c->src, first);
		pthread_mutex_lock(&c->mu);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

struct creds *
creds_new(const struct cfg *cfg)
{
	struct creds *c = xcalloc(1, sizeof(*c));
	struct err e = {0};

	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	c->src = choose(cfg, &e);
	if (c->src == NULL) {
		snprintf(c->why, sizeof(c->why), "%s", e.msg);
		c->problem = xstrdup(e.msg);
		log_err("S3 credentials: %s", e.msg);
	} else {
		snprintf(c->provider, sizeof(c->provider), "%s", c->src->name);
		refresh(c, c->src, 1);
	}
	if (pthread_create(&c->thread, NULL, refresher, c) == 0)
		c->started = 1;
	return c;
}

void
creds_free(struct creds *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mu);
	c->stop = 1;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
	if (c->started)
		pthread_join(c->thread, NULL);
	src_free(c->src);
	src_free(c->next_src);
	free(c->problem);
	memset(&c->cur, 0, sizeof(c->cur));
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

int
creds_get(struct creds *c, struct creds_val *v, struct err *e)
{
	int rc = 0;

	pthread_mutex_lock(&c->mu);
	if (c->have && (c->cur.expires_ms == 0 || c->cur.expires_ms >
	    time_now_ms())) {
		*v = c->cur;
	} else {
		err_set(e, ERR_REFUSED, "no S3 credentials%s: %s", c->have ?
		    " (the last ones expired)" : "", c->why[0] ? c->why :
		    "not fetched yet");
		rc = -1;
	}
	pthread_mutex_unlock(&c->mu);
	return rc;
}

void
creds_expired(struct creds *c, unsigned gen)
{
	pthread_mutex_lock(&c->mu);
	if (c->cur.gen == gen && c->src != NULL && c->src->prov != P_STATIC) {
		c->kick = 1;
		pthread_cond_signal(&c->cv);
	}
	pthread_mutex_unlock(&c->mu);
}

void
creds_reload(struct creds *c, const struct cfg *n)
{
	struct err e = {0};
	struct src *s = choose(n, &e);

	if (s == NULL) {
		log_warnx("SIGHUP: S3 credentials not reloaded: %s", e.msg);
		return;
	}
	pthread_mutex_lock(&c->mu);
	src_free(c->next_src);
	c->next_src = s;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

unsigned
creds_generation(struct creds *c)
{
	unsigned g;

	pthread_mutex_lock(&c->mu);
	g = c->cur.gen;
	pthread_mutex_unlock(&c->mu);
	return g;
}

const char *
creds_provider(struct creds *c)
{
	return c->provider[0] ? c->provider : "none";
}
