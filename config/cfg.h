/*
 * cfg.h - outboxd's configuration, read from environment variables named
 * like the app's .env (DESIGN.md, "Configuration"), plus Cloud Foundry's
 * VCAP_SERVICES. struct cfg is a plain value, immutable once loaded and
 * shared read-only by all threads.
 *
 * Every value is validated at load: a bad one becomes a problem line
 * naming the variable and what is wrong ("OUTBOXD_CONCURRENCY=abc: not a
 * whole number"), and the program exits 78 listing them all. Secrets are
 * never echoed in problem lines.
 */
#ifndef OUTBOXD_CFG_H
#define OUTBOXD_CFG_H

#include <stddef.h>
#include <stdint.h>

enum watch_mode { WATCH_AUTO, WATCH_INOTIFY, WATCH_POLL };

struct cfg {
	char *watch_dir;		/* OUTBOXD_WATCH_DIR, as given */
	char *state_db;			/* OUTBOXD_STATE_DB */

	/* The S3 leg is on when bucket is set. */
	char *bucket;			/* S3_BUCKET or S3_BUCKET_NAME */
	char *region;			/* AWS_REGION, AWS_DEFAULT_REGION */
	char *access_key;		/* AWS_ACCESS_KEY_ID */
	char *secret_key;		/* AWS_SECRET_ACCESS_KEY: never logged */
	char *session_token;		/* AWS_SESSION_TOKEN or NULL */
	char *endpoint;			/* AWS_ENDPOINT_URL_S3 or NULL for AWS */
	int path_style;			/* S3_FORCE_PATH_STYLE, resolved */
	char *ca_bundle;		/* AWS_CA_BUNDLE or NULL */
	const char *creds_source;	/* "VCAP_SERVICES" when the keys came
					   from it, else NULL */

	/* The rest of the credential chain (agent/s3/creds.h), used when
	 * no keys are given; NULL when unset. */
	char *profile;			/* AWS_PROFILE (AWS_DEFAULT_PROFILE) */
	char *credentials_file;		/* AWS_SHARED_CREDENTIALS_FILE */
	char *config_file;		/* AWS_CONFIG_FILE */
	char *web_identity_token_file;	/* AWS_WEB_IDENTITY_TOKEN_FILE */
	char *role_arn;			/* AWS_ROLE_ARN */
	char *role_session_name;	/* AWS_ROLE_SESSION_NAME */
	char *container_uri;		/* AWS_CONTAINER_CREDENTIALS_FULL_URI, or
					   the RELATIVE_URI at 169.254.170.2 */
	char *container_token;		/* AWS_CONTAINER_AUTHORIZATION_TOKEN:
					   never logged */
	char *container_token_file;	/* ..._AUTHORIZATION_TOKEN_FILE */
	char *imds_endpoint;		/* AWS_EC2_METADATA_SERVICE_ENDPOINT */
	int imds_disabled;		/* AWS_EC2_METADATA_DISABLED */
	char *sts_endpoint;		/* AWS_ENDPOINT_URL_STS */

	/* Sent on PutObject and CreateMultipartUpload; NULL when unset. */
	char *sse;			/* OUTBOXD_S3_SSE: AES256 or aws:kms */
	char *sse_kms_key_id;		/* OUTBOXD_S3_SSE_KMS_KEY_ID */
	char *storage_class;		/* OUTBOXD_S3_STORAGE_CLASS */
	int s3_streaming;		/* OUTBOXD_S3_STREAMING resolved: large
					   single PUTs go aws-chunked with a
					   trailing checksum (https: only to
					   an https endpoint) */
	uint64_t max_bandwidth;		/* OUTBOXD_MAX_BANDWIDTH: bytes per
					   second for all uploads, 0 = no cap */

	/* The database leg is on when db_on is set. */
	int db_on;
	char *database_url;		/* DATABASE_URL, "" for PG* alone */
	char *db_schema;		/* OUTBOXD_DB_SCHEMA */
	int db_migrate;			/* OUTBOXD_DB_MIGRATE */
	int db_timeout_s;		/* OUTBOXD_DB_TIMEOUT_S: per statement */

	char *default_user;		/* OUTBOXD_DEFAULT_USER (a UUID) or NULL */
	char **ignore;			/* OUTBOXD_IGNORE globs, NULL ended */
	int concurrency;		/* OUTBOXD_CONCURRENCY */
	uint64_t multipart_threshold;	/* OUTBOXD_MULTIPART_THRESHOLD bytes */
	int settle_ms;			/* OUTBOXD_SETTLE_MS */
	enum watch_mode watch_mode;	/* OUTBOXD_WATCH_MODE */
	int poll_ms;			/* OUTBOXD_POLL_MS */
	int rescan_s;			/* OUTBOXD_RESCAN_S, 0 = never */
	char *metrics_file;		/* OUTBOXD_METRICS_FILE or NULL */
	char *http_listen;		/* OUTBOXD_HTTP_LISTEN or NULL (off) */
	int log_json;			/* OUTBOXD_LOG_FORMAT=json */
	int retry_base_ms;		/* OUTBOXD_RETRY_BASE_MS: first backoff */
	int retry_max_s;		/* OUTBOXD_RETRY_MAX_S: backoff cap */
	int s3_timeout_s;		/* OUTBOXD_S3_TIMEOUT_S: stall limit */
	int hardlinks_allow;		/* OUTBOXD_HARDLINKS=allow: read files
					   with more than one link */
	int poison_attempts;		/* OUTBOXD_POISON_ATTEMPTS: deaths in
					   one file's inspection, then failed */
	int64_t scrub_interval_s;	/* OUTBOXD_SCRUB_INTERVAL: between the
					   starts of two scrub passes, 0 off */
	int scrub_rate;			/* OUTBOXD_SCRUB_RATE: HEADs per second */
	int64_t retention_s;		/* OUTBOXD_RETENTION: done entries older
					   than this are pruned; 0 keeps all */

	/* Where the S3 and database settings came from, for doctor. */
	const char *s3_source;		/* "environment" or "VCAP_SERVICES" */
	const char *db_source;
};

/* Where variables come from: the process environment, or a test's table. */
typedef const char *(*cfg_getenv_fn)(void *arg, const char *name);

/* Problem lines collected while loading. */
struct cfg_problems {
	char **lines;
	size_t n;
};

/*
 * Loads c from get (getenv when get is NULL). Returns the number of
 * problems (0 when c is usable); each is a line in p. c owns its strings;
 * free them with cfg_free. check_paths=0 skips the file system checks
 * (for tools that only need some of it, and for unit tests).
 */
size_t cfg_load(struct cfg *c, cfg_getenv_fn get, void *arg, int check_paths,
    struct cfg_problems *p);
void cfg_free(struct cfg *c);
void cfg_problems_free(struct cfg_problems *p);

/* Parses "64MiB", "5 GB", "1048576" into bytes; -1 when it is not one. */
int cfg_parse_size(const char *s, uint64_t *out);
/* Parses "7d", "12h", "30m", "90s", "2w" or plain seconds; -1 when it
 * is not one. */
int cfg_parse_duration(const char *s, int64_t *seconds);
/* Parses true/false/1/0/yes/no/on/off; -1 when it is none of them. */
int cfg_parse_bool(const char *s);

/*
 * Takes S3 and PostgreSQL credentials from a VCAP_SERVICES document. Fills
 * only the fields given non-NULL and still empty (explicit variables win).
 * Returns 0, or -1 with a problem line in p when the JSON is unusable.
 */
struct cfg_vcap {
	char *bucket, *region, *access_key, *secret_key, *endpoint;
	char *database_url;
};
int cfg_parse_vcap(const char *json, struct cfg_vcap *v, struct cfg_problems *p);
void cfg_vcap_free(struct cfg_vcap *v);

#endif
