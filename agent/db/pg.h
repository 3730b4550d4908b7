/*
 * pg.h - the database leg's client: libpq, unnamed statements only
 * (PQexecParams, PQsendQueryParams), no session state, so it works through
 * Supabase's transaction pooler and pgbouncer. Each stored file version is
 * one short transaction calling outboxd_record_document() (schema/pg/),
 * idempotent by the outbox event id; a batch of them travels in one
 * round trip in libpq's pipeline mode and commits once.
 *
 * A struct pg belongs to one thread. It connects lazily and drops the
 * connection after any connection-level failure; the caller backs off.
 */
#ifndef OUTBOXD_PG_H
#define OUTBOXD_PG_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "config/cfg.h"
#include "base/util.h"

struct pg;

struct pg *pg_new(const struct cfg *cfg);
void pg_free(struct pg *p);

/* Connects when not connected (and, the first time with
 * OUTBOXD_DB_MIGRATE=1, applies missing migrations). 0 or -1 with e. */
int pg_ensure(struct pg *p, struct err *e);

/* Applies the migrations schema_migrations does not list, in one
 * transaction. Returns how many were applied, or -1 with e. */
int pg_migrate(struct pg *p, struct err *e);

/* Lists migrations: applied ones first ("001_init applied at ..."),
 * then missing ones, one line each, into out. 0 or -1. */
int pg_migration_status(struct pg *p, struct buf *out, int *missing,
    struct err *e);

/* One stored version of a file, and the outcome of recording it. */
struct pg_doc {
	const char *event_id, *job_id, *file_path, *filename, *document_type;
	const char *content_type, *s3_key, *etag, *sha256;
	const char *platform;	/* NULL when not known from this file */
	const char *file_info;	/* JSON text, or NULL */
	const char *user_id;	/* NULL when unknown */
	long long file_size;
	int repair;		/* a repair (outboxd_repair_document): the
				   row is put back without a user activity */

	char outcome[16];	/* job_created, inserted, updated, unchanged,
				   duplicate; "" on error */
	struct err err;		/* per document */
};

/*
 * Records n documents, pipelined: all in one transaction (one commit),
 * or, when one of them fails, each in its own, so the others are kept.
 * Fills each doc's outcome or err. Returns 0 when the round trip worked
 * (individual documents may still have failed), -1 with e when the
 * connection failed (every doc then has err set).
 */
int pg_record_documents(struct pg *p, struct pg_doc *docs, size_t n,
    struct err *e);

/*
 * Applies job.json fields (from jobmeta_parse) to the job's row, with a
 * job_history row for what changed, once per event_id. *outcome gets
 * "created", "updated", "unchanged" or "duplicate". 0 or -1 with e.
 */
int pg_apply_job_meta(struct pg *p, const char *event_id, const char *job_id,
    const cJSON *fields, const char **outcome, struct err *e);

/* Records the ETag and S3 key of a version S3 stored after its document
 * row was written (the row then had neither: S3 did not have it yet). */
int pg_set_etag(struct pg *p, const char *job_id, const char *file_path,
    const char *sha256, const char *etag, const char *s3_key, struct err *e);

/* A documents row as the scrub compares it. */
struct pg_row {
	int found;		/* the row exists */
	long long file_size;
	char sha256[65];	/* "" for NULL */
	char etag[128];		/* "" for NULL */
	char *s3_key;		/* NULL for NULL; owned */
};

/*
 * Reads the documents rows of n (job id, file path) pairs in one query
 * into rows[0..n-1] (the caller frees each s3_key). 0, or -1 with e.
 */
int pg_read_documents(struct pg *p, const char *const *job_ids,
    const char *const *file_paths, size_t n, struct pg_row *rows,
    struct err *e);

/* Checks the privileges outboxd needs; appends what is missing, comma
 * separated, to problems. Returns how many are missing, or -1 with e. */
int pg_check_access(struct pg *p, struct buf *problems, struct err *e);

/* How many of Supabase's API roles (anon, authenticated, service_role)
 * exist: 0 on plain PostgreSQL. -1 with e. */
int pg_api_roles(struct pg *p, struct err *e);

/* Compares the API roles' privileges on outboxd's objects with what
 * 005_supabase grants; appends each difference ("anon has SELECT on
 * jobs"), comma separated, to problems. Returns how many, or -1 with e. */
int pg_check_api_grants(struct pg *p, struct buf *problems, struct err *e);

/* Appends authenticator's pgrst.db_schemas (PostgREST's exposed schemas,
 * where they are configured in the database) to out. Returns 1 when it
 * is set, 0 when not, -1 with e. */
int pg_exposed_schemas(struct pg *p, struct buf *out, struct err *e);

/* Appends the schema's constraints that are NOT VALID (rows made before
 * the migration violate them), "table.constraint", comma separated, to
 * out. Returns how many, or -1 with e. */
int pg_unvalidated_constraints(struct pg *p, struct buf *out, struct err *e);
/* Connects with url (a new DATABASE_URL, on SIGHUP) from the next
 * statement on; the current connection is closed. */
void pg_set_url(struct pg *p, const char *url);

/* The class of a failed result's SQLSTATE (NULL: connection trouble). */
enum err_class pg_classify(const char *sqlstate);

/* The connection, connected, for outboxctl's read queries. */
struct pg_conn *pg_conn(struct pg *p);

#endif
