/*
 * pg.c - see pg.h.
 *
 * SQL text is built once per struct pg with the schema name quoted in;
 * every value travels as a parameter. Migrations are the only multi-
 * statement scripts and run with PQexec inside one transaction, guarded
 * by an advisory lock so two migrators cannot interleave.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "agent/db/jobmeta.h"
#include "agent/db/pg.h"
#include "config/redact.h"
#include "schema/sql.h"

#define MIGRATE_LOCK_KEY "7364518203"

/*
 * Per transaction, never per session (poolers share sessions): a bound on
 * how long a statement may wait, and a commit that is durable before it is
 * acknowledged even where the server defaults to synchronous_commit=off,
 * because outboxd marks an entry done on that acknowledgement.
 */
#define SQL_TXN_SETTINGS "SELECT pg_catalog.set_config('statement_timeout', " \
	"$1, true), pg_catalog.set_config('synchronous_commit', 'on', true)"

struct pg {
	PGconn *conn;		/* NULL when not connected */
	char *url;		/* DATABASE_URL ("" for PG* variables) */
	char *schema;		/* quoted identifier, e.g. "is_migration" */
	char *schema_raw;	/* as configured */
	int migrate;		/* OUTBOXD_DB_MIGRATE */
	char timeout[16];	/* statement_timeout, e.g. "30s" */
	int migrated;		/* tried once since start */
	char *sql_record;	/* SELECT schema.outboxd_record_document(...) */
	char *sql_repair;	/* SELECT schema.outboxd_repair_document(...) */
	char *sql_rows;		/* the rows of (job, path) pairs, as JSON */
	char *sql_etag;
	char *sql_job_get;
	char *sql_job_insert;
	char *sql_history;
	char *sql_event;
};

struct pg *
pg_new(const struct cfg *cfg)
{
	struct pg *p = xcalloc(1, sizeof(*p));

	p->url = xstrdup(cfg->database_url ? cfg->database_url : "");
	p->schema_raw = xstrdup(cfg->db_schema);
	p->schema = xasprintf("\"%s\"", cfg->db_schema);
	p->migrate = cfg->db_migrate;
	snprintf(p->timeout, sizeof(p->timeout), "%ds", cfg->db_timeout_s);
	p->sql_record = xasprintf("SELECT %s.outboxd_record_document($1, $2, "
	    "$3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)", p->schema);
	p->sql_repair = xasprintf("SELECT %s.outboxd_repair_document($1, $2, "
	    "$3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)", p->schema);
	p->sql_rows = xasprintf("SELECT x.i, d.file_size, coalesce(d.sha256, ''), "
	    "coalesce(d.etag, ''), d.s3_key FROM jsonb_to_recordset($1::jsonb) "
	    "AS x(i int, j uuid, p text) JOIN %s.documents d ON d.job_id = x.j "
	    "AND d.file_path = x.p", p->schema);
	p->sql_etag = xasprintf("UPDATE %s.documents SET etag = $4, "
	    "s3_key = $5 WHERE job_id = $1 AND file_path = $2 AND sha256 = $3 "
	    "AND (etag IS DISTINCT FROM $4 OR s3_key IS DISTINCT FROM $5)",
	    p->schema);
	/* Qualified: outboxd's session search_path is the role's, and an
	 * overload in public would beat pg_catalog's VARIADIC "any". */
	p->sql_job_get = xasprintf("SELECT pg_catalog.jsonb_build_object("
	    "'filename', "
	    "filename, 'platform', platform, 'user_id', user_id, 'status', "
	    "status, 'enhance_with_llm', enhance_with_llm) FROM %s.jobs "
	    "WHERE id = $1 FOR UPDATE", p->schema);
	p->sql_job_insert = xasprintf("INSERT INTO %s.jobs (id, filename, "
	    "platform, user_id, status, enhance_with_llm) VALUES ($1, $2, "
	    "coalesce($3, 'unknown'), $4, coalesce($5, 'processing'), "
	    "coalesce($6::boolean, false))", p->schema);
	p->sql_history = xasprintf("INSERT INTO %s.job_history (job_id, "
	    "old_data, new_data, changed_fields) VALUES ($1, $2, $3, $4)",
	    p->schema);
	p->sql_event = xasprintf("INSERT INTO %s.applied_events (event_id, "
	    "job_id, kind) VALUES ($1, $2, 'job_meta') ON CONFLICT (event_id) "
	    "DO NOTHING", p->schema);
	return p;
}

static int simple(struct pg *p, const char *sql, struct err *e);

static void
drop(struct pg *p)
{
	if (p->conn != NULL) {
		PQfinish(p->conn);
		p->conn = NULL;
	}
}

void
pg_set_url(struct pg *p, const char *url)
{
	if (strcmp(p->url, url) == 0)
		return;
	memset(p->url, 0, strlen(p->url));
	free(p->url);
	p->url = xstrdup(url);
	drop(p);
}

void
pg_free(struct pg *p)
{
	if (p == NULL)
		return;
	drop(p);
	free(p->url);
	free(p->schema);
	free(p->schema_raw);
	free(p->sql_record);
	free(p->sql_repair);
	free(p->sql_rows);
	free(p->sql_etag);
	free(p->sql_job_get);
	free(p->sql_job_insert);
	free(p->sql_history);
	free(p->sql_event);
	free(p);
}

struct pg_conn *
pg_conn(struct pg *p)
{
	return p->conn;
}

enum err_class
pg_classify(const char *state)
{
	static const char *const transient[] = {
		"25006",	/* read-only transaction: a failover */
		"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03",
	};
	size_t i;

	if (state == NULL || state[0] == '\0')
		return ERR_TRANSIENT;	/* no reply: the connection broke */
	/* 08 connection, 53 resources (too many connections), 58 system. */
	if (strncmp(state, "08", 2) == 0 || strncmp(state, "53", 2) == 0 ||
	    strncmp(state, "58", 2) == 0)
		return ERR_TRANSIENT;
	for (i = 0; i < ARRAY_SIZE(transient); i++)
		if (strcmp(state, transient[i]) == 0)
			return ERR_TRANSIENT;
	/* A refused password or role (28P01, 28000) or a missing privilege
	 * (42501) concerns every entry alike: the leg pauses, none fails. */
	if (strcmp(state, "28P01") == 0 || strcmp(state, "28000") == 0 ||
	    strcmp(state, "42501") == 0)
		return ERR_REFUSED;
	return ERR_PERMANENT;
}

/* The first line of libpq's message for a failed result or connection. */
static void
result_error(struct pg *p, const PGresult *res, struct err *e,
    const char *what)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) :
	    NULL;
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
	    : NULL;
	char line[512], *clean;

	if (msg == NULL)
		msg = p->conn ? PQerrorMessage(p->conn) : "no connection";
	/* A connection's message may quote the connection string. */
	clean = cfg_redact(msg, p->url);
	utf8_snprintf(line, sizeof(line), "%s", clean);
	free(clean);
	if (state == NULL && res != NULL && PQresultStatus(res) == PGRES_FATAL_ERROR
	    && p->conn && PQstatus(p->conn) == CONNECTION_OK)
		state = "XX000";
	err_set(e, pg_classify(state), "%s: %s%s%s%s", what, line,
	    state ? " (SQLSTATE " : "", state ? state : "", state ? ")" : "");
	if (p->conn != NULL && PQstatus(p->conn) != CONNECTION_OK)
		drop(p);
}

static int
exec_ok(struct pg *p, PGresult *res, ExecStatusType want, struct err *e,
    const char *what)
{
	if (res != NULL && PQresultStatus(res) == want)
		return 0;
	result_error(p, res, e, what);
	return -1;
}

int
pg_ensure(struct pg *p, struct err *e)
{
	/* Defaults first: whatever DATABASE_URL says overrides them. */
	static const char *const keys[] = { "connect_timeout", "keepalives",
	    "keepalives_idle", "keepalives_interval", "keepalives_count",
	    "tcp_user_timeout", "application_name", "dbname", NULL };
	/* A dead peer is noticed in about a minute, not after TCP's 15. */
	const char *vals[] = { "10", "1", "30", "10", "3", "60000", "outboxd",
	    NULL, NULL };

	if (p->conn != NULL && PQstatus(p->conn) == CONNECTION_OK)
		return 0;
	drop(p);
	vals[7] = p->url;
	p->conn = PQconnectdbParams(keys, vals, 1);
	if (p->conn == NULL || PQstatus(p->conn) != CONNECTION_OK) {
		char line[512];
		/* libpq quotes what it cannot parse of the string, which
		 * may be its password (cfg_redact; it keeps one line). */
		char *clean = cfg_redact(p->conn ? PQerrorMessage(p->conn) :
		    "out of memory", p->url);

		utf8_snprintf(line, sizeof(line), "%s", clean);
		free(clean);
		/* libpq gives no SQLSTATE for a refused connection, only the
		 * server's text (28P01, 28000): the leg pauses on it as on a
		 * refused statement. */
		err_set(e, strstr(line, "password authentication failed") ||
		    strstr(line, "no pg_hba.conf entry") ||
		    strstr(line, "role \"") ? ERR_REFUSED : ERR_TRANSIENT,
		    "cannot connect to the database: %s", line);
		drop(p);
		return -1;
	}
	if (p->migrate && !p->migrated) {
		/* Tried at each connection until it works once. */
		if (pg_migrate(p, e) < 0)
			return -1;
		p->migrated = 1;
	}
	return 0;
}

static char *
expand_schema(const char *text, const char *schema)
{
	struct buf b = {0};
	const char *p = text, *at;

	while ((at = strstr(p, "@schema@")) != NULL) {
		buf_append(&b, p, (size_t)(at - p));
		buf_puts(&b, schema);
		p = at + strlen("@schema@");
	}
	buf_puts(&b, p);
	return buf_take(&b);
}

/* The migration's version: its file name without ".sql". */
static char *
version_of(const char *name)
{
	const char *dot = strrchr(name, '.');

	return xstrndup(name, dot ? (size_t)(dot - name) : strlen(name));
}

/* Reads applied versions; NULL result (not an error) when the table is
 * missing. Returns -1 on a real error. */
static int
applied_versions(struct pg *p, PGresult **out, struct err *e)
{
	char *sql = xasprintf("SELECT version, to_char(applied_at AT TIME ZONE "
	    "'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM %s.schema_migrations "
	    "ORDER BY version", p->schema);
	PGresult *res = PQexecParams(p->conn, sql, 0, NULL, NULL, NULL, NULL, 0);
	const char *state;

	free(sql);
	*out = NULL;
	if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK) {
		*out = res;
		return 0;
	}
	state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	if (state != NULL && (strcmp(state, "42P01") == 0 ||
	    strcmp(state, "3F000") == 0)) {
		PQclear(res);
		return 0;	/* no schema or table yet */
	}
	result_error(p, res, e, "reading schema_migrations");
	PQclear(res);
	return -1;
}

static int
is_applied(PGresult *res, const char *version)
{
	int i;

	for (i = 0; res != NULL && i < PQntuples(res); i++)
		if (strcmp(PQgetvalue(res, i, 0), version) == 0)
			return 1;
	return 0;
}

int
pg_migration_status(struct pg *p, struct buf *out, int *missing,
    struct err *e)
{
	const struct sql_file *f;
	PGresult *res;

	*missing = 0;
	if (pg_ensure(p, e) < 0 || applied_versions(p, &res, e) < 0)
		return -1;
	for (f = pg_migrations_sql; f->name != NULL; f++) {
		char *v = version_of(f->name);
		int i;

		for (i = 0; res != NULL && i < PQntuples(res); i++)
			if (strcmp(PQgetvalue(res, i, 0), v) == 0)
				break;
		if (res != NULL && i < PQntuples(res)) {
			buf_printf(out, "%s applied %s\n", v, PQgetvalue(res, i, 1));
		} else {
			buf_printf(out, "%s missing\n", v);
			(*missing)++;
		}
		free(v);
	}
	PQclear(res);
	return 0;
}

/*
 * The server's notices during a migration, on stderr as libpq prints them,
 * but for "... already exists, skipping" and "... does not exist,
 * skipping": every statement of a migration is idempotent, so those say
 * only that it ran before (or over an adopted table).
 */
static void
migrate_notice(void *arg, const PGresult *res)
{
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	size_t n = msg ? strlen(msg) : 0;

	(void)arg;
	if (n >= 10 && strcmp(msg + n - 10, ", skipping") == 0)
		return;
	fputs(PQresultErrorMessage(res), stderr);
}

int
pg_migrate(struct pg *p, struct err *e)
{
	const struct sql_file *f;
	PGresult *res = NULL, *r;
	int applied = 0, todo = 0;
	char *sql;

	if (p->conn == NULL && pg_ensure(p, e) < 0)
		return -1;
	/* Read first: when all is applied, a role without CREATE rights on
	 * the database (the usual agent role) does no DDL at all. */
	if (applied_versions(p, &res, e) < 0)
		return -1;
	for (f = pg_migrations_sql; f->name != NULL; f++) {
		char *v = version_of(f->name);

		todo += !is_applied(res, v);
		free(v);
	}
	PQclear(res);
	res = NULL;
	if (todo == 0)
		return 0;

	PQsetNoticeReceiver(p->conn, migrate_notice, NULL);
	r = PQexec(p->conn, "BEGIN");
	if (exec_ok(p, r, PGRES_COMMAND_OK, e, "migrate: BEGIN") < 0) {
		PQclear(r);
		return -1;
	}
	PQclear(r);
	/* search_path pinned for the migration: names the migrations leave
	 * unqualified (types, now(), count()) resolve in pg_catalog when a
	 * view, default or policy is made, never to an overload in public. */
	sql = xasprintf("SELECT pg_catalog.pg_advisory_xact_lock("
	    MIGRATE_LOCK_KEY ");"
	    "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', "
	    "true);"
	    "CREATE SCHEMA IF NOT EXISTS %s;"
	    "CREATE TABLE IF NOT EXISTS %s.schema_migrations ("
	    " version text PRIMARY KEY,"
	    " applied_at timestamptz NOT NULL DEFAULT now());",
	    p->schema, p->schema);
	r = PQexec(p->conn, sql);
	free(sql);
	if (exec_ok(p, r, PGRES_COMMAND_OK, e, "migrate: creating the schema")
	    < 0)
		goto fail;
	PQclear(r);
	r = NULL;
	/* Read again under the lock: another migrator may have finished. */
	if (applied_versions(p, &res, e) < 0)
		goto fail;
	for (f = pg_migrations_sql; f->name != NULL; f++) {
		char *v = version_of(f->name), *text;
		const char *param[1] = { v };
		char what[128];

		if (is_applied(res, v)) {
			free(v);
			continue;
		}
		text = expand_schema(f->text, p->schema);
		r = PQexec(p->conn, text);
		free(text);
		snprintf(what, sizeof(what), "migration %s", v);
		if (exec_ok(p, r, r && PQresultStatus(r) == PGRES_TUPLES_OK ?
		    PGRES_TUPLES_OK : PGRES_COMMAND_OK, e, what) < 0) {
			free(v);
			goto fail;
		}
		PQclear(r);
		sql = xasprintf("INSERT INTO %s.schema_migrations (version) "
		    "VALUES ($1)", p->schema);
		r = PQexecParams(p->conn, sql, 1, NULL, param, NULL, NULL, 0);
		free(sql);
		free(v);
		if (exec_ok(p, r, PGRES_COMMAND_OK, e, what) < 0)
			goto fail;
		PQclear(r);
		r = NULL;
		applied++;
	}
	PQclear(res);
	res = NULL;
	r = PQexec(p->conn, "COMMIT");
	if (exec_ok(p, r, PGRES_COMMAND_OK, e, "migrate: COMMIT") < 0)
		goto fail;
	PQclear(r);
	return applied;
fail:
	PQclear(r);
	PQclear(res);
	if (p->conn != NULL)
		PQclear(PQexec(p->conn, "ROLLBACK"));
	return -1;
}

/* ---- documents ----------------------------------------------------------- */

/* Queues the call recording d (no sync). */
static int
send_call(struct pg *p, const struct pg_doc *d)
{
	char size[32];
	const char *v[13];

	snprintf(size, sizeof(size), "%lld", d->file_size);
	v[0] = d->event_id;
	v[1] = d->job_id;
	v[2] = d->file_path;
	v[3] = d->filename;
	v[4] = d->document_type;
	v[5] = size;
	v[6] = d->content_type;
	v[7] = d->s3_key;
	v[8] = d->etag;
	v[9] = d->sha256;
	v[10] = d->platform;
	v[11] = d->file_info;
	v[12] = d->user_id;
	return PQsendQueryParams(p->conn, d->repair ? p->sql_repair :
	    p->sql_record, 13, NULL, v, NULL, NULL, 0);
}

static int
send_settings(struct pg *p)
{
	const char *t[1] = { p->timeout };

	return PQsendQueryParams(p->conn, SQL_TXN_SETTINGS, 1, NULL, t, NULL,
	    NULL, 0);
}

/*
 * Reads the results of one transaction up to its sync: the settings, then
 * n calls for docs. No BEGIN/COMMIT is sent: the statements up to a sync
 * are one implicit transaction, committed at the sync and rolled back by
 * the server on an error, so nothing is ever left in an aborted block.
 * Returns 1 when every call worked, 0 when one failed (its doc holds the
 * error; the transaction was rolled back), -1 when the connection broke.
 */
static int
read_txn(struct pg *p, struct pg_doc *docs, size_t n, struct err *e)
{
	size_t call = 0;
	int step = 0, failed = 0;

	for (;;) {
		PGresult *res = PQgetResult(p->conn);
		ExecStatusType st;

		if (res == NULL) {
			/* Between two queries' results; on a broken
			 * connection libpq says so in the status. */
			if (PQstatus(p->conn) != CONNECTION_OK) {
				result_error(p, NULL, e, "recording documents");
				goto broken;
			}
			continue;
		}
		st = PQresultStatus(res);
		if (st == PGRES_PIPELINE_SYNC) {
			PQclear(res);
			break;
		}
		if (step > 0)
			call = (size_t)(step - 1);
		if (st == PGRES_FATAL_ERROR) {
			failed = 1;
			if (step > 0 && call < n)
				result_error(p, res, &docs[call].err,
				    "recording the document");
			else
				result_error(p, res, e, "setting up the transaction");
		} else if (st == PGRES_TUPLES_OK && step > 0 && call < n &&
		    PQntuples(res) == 1) {
			snprintf(docs[call].outcome, sizeof(docs[call].outcome),
			    "%s", PQgetvalue(res, 0, 0));
		} else if (st == PGRES_PIPELINE_ABORTED) {
			failed = 1;
		}
		PQclear(res);
		step++;
		if (p->conn == NULL)
			goto broken;
	}
	return failed ? 0 : 1;
broken:
	/* No sync, no commit: results that arrived mean nothing. */
	for (call = 0; call < n; call++)
		docs[call].outcome[0] = '\0';
	return -1;
}

/* Sends what is queued and enters nothing new; 0 or -1. */
static int
flush_pipeline(struct pg *p, struct err *e)
{
	if (PQpipelineSync(p->conn) && PQflush(p->conn) == 0)
		return 0;
	result_error(p, NULL, e, "sending to the database");
	return -1;
}

/* All n documents in one transaction: one commit (and one WAL flush) for
 * the batch. 1 all recorded, 0 one failed (nothing kept), -1 broken. */
static int
record_batch(struct pg *p, struct pg_doc *docs, size_t n, struct err *e)
{
	size_t i;
	int rc;

	if (!send_settings(p))
		goto broken;
	for (i = 0; i < n; i++)
		if (!send_call(p, &docs[i]))
			goto broken;
	if (flush_pipeline(p, e) < 0)
		return -1;
	rc = read_txn(p, docs, n, e);
	if (rc <= 0)
		for (i = 0; i < n; i++) {
			/* Rolled back: none of them counts. */
			docs[i].outcome[0] = '\0';
			err_clear(&docs[i].err);
		}
	return rc;
broken:
	result_error(p, NULL, e, "sending to the database");
	return -1;
}

/* Each document in its own transaction, all in one round trip: a failing
 * one does not hold the others back. 0, or -1 when the connection broke. */
static int
record_each(struct pg *p, struct pg_doc *docs, size_t n, struct err *e)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!send_settings(p) || !send_call(p, &docs[i]) ||
		    !PQpipelineSync(p->conn)) {
			result_error(p, NULL, e, "sending to the database");
			return -1;
		}
	if (PQflush(p->conn) != 0) {
		result_error(p, NULL, e, "sending to the database");
		return -1;
	}
	for (i = 0; i < n; i++) {
		int rc = read_txn(p, &docs[i], 1, e);

		if (rc < 0)
			return -1;
		if (rc == 0 && docs[i].err.cls == ERR_NONE)
			docs[i].err = *e;
		if (docs[i].err.cls == ERR_NONE && docs[i].outcome[0] == '\0')
			err_set(&docs[i].err, ERR_TRANSIENT, "recording the "
			    "document: no result");
	}
	return 0;
}

int
pg_record_documents(struct pg *p, struct pg_doc *docs, size_t n,
    struct err *e)
{
	size_t i;
	int rc;

	for (i = 0; i < n; i++) {
		docs[i].outcome[0] = '\0';
		err_clear(&docs[i].err);
	}
	if (pg_ensure(p, e) < 0)
		goto broken;
	if (!PQenterPipelineMode(p->conn)) {
		result_error(p, NULL, e, "entering pipeline mode");
		goto broken;
	}
	/* The whole batch in one transaction first; if any document fails,
	 * nothing of it was kept, and each goes again on its own so one bad
	 * file cannot hold the others back. Replays are idempotent. */
	rc = n > 1 ? record_batch(p, docs, n, e) : 0;
	if (rc == 0)
		rc = record_each(p, docs, n, e) == 0 ? 1 : -1;
	if (rc < 0)
		goto broken;
	if (!PQexitPipelineMode(p->conn)) {
		result_error(p, NULL, e, "leaving pipeline mode");
		drop(p);
	}
	return 0;
broken:
	/* Whatever got no result is retried later, as a transient failure. */
	for (i = 0; i < n; i++)
		if (docs[i].outcome[0] == '\0' && docs[i].err.cls == ERR_NONE)
			docs[i].err = *e;
	drop(p);
	return -1;
}

int
pg_set_etag(struct pg *p, const char *job_id, const char *file_path,
    const char *sha256, const char *etag, const char *s3_key, struct err *e)
{
	const char *v[5] = { job_id, file_path, sha256, etag, s3_key };
	PGresult *r;
	int rc;

	const char *t[1] = { p->timeout };

	if (pg_ensure(p, e) < 0)
		return -1;
	if (simple(p, "BEGIN", e) < 0)
		return -1;
	r = PQexecParams(p->conn, SQL_TXN_SETTINGS, 1, NULL, t, NULL, NULL, 0);
	rc = exec_ok(p, r, PGRES_TUPLES_OK, e, "setting the timeout");
	PQclear(r);
	if (rc == 0) {
		r = PQexecParams(p->conn, p->sql_etag, 5, NULL, v, NULL, NULL, 0);
		rc = exec_ok(p, r, PGRES_COMMAND_OK, e, "recording the ETag");
		PQclear(r);
	}
	if (rc == 0)
		rc = simple(p, "COMMIT", e);
	if (rc < 0 && p->conn != NULL)
		PQclear(PQexec(p->conn, "ROLLBACK"));
	return rc;
}

int
pg_read_documents(struct pg *p, const char *const *job_ids,
    const char *const *file_paths, size_t n, struct pg_row *rows,
    struct err *e)
{
	cJSON *arr = cJSON_CreateArray();
	const char *v[1];
	char *json;
	PGresult *r;
	size_t i;
	int k, rc;

	memset(rows, 0, n * sizeof(*rows));
	/* The pairs travel as one JSON parameter: names are hostile, and
	 * cJSON escapes them. */
	for (i = 0; i < n; i++) {
		cJSON *o = cJSON_CreateObject();

		cJSON_AddNumberToObject(o, "i", (double)i);
		cJSON_AddStringToObject(o, "j", job_ids[i]);
		cJSON_AddStringToObject(o, "p", file_paths[i]);
		cJSON_AddItemToArray(arr, o);
	}
	json = cJSON_PrintUnformatted(arr);
	cJSON_Delete(arr);
	if (json == NULL)
		abort();
	if (pg_ensure(p, e) < 0) {
		free(json);
		return -1;
	}
	v[0] = json;
	r = PQexecParams(p->conn, p->sql_rows, 1, NULL, v, NULL, NULL, 0);
	free(json);
	rc = exec_ok(p, r, PGRES_TUPLES_OK, e, "reading documents");
	for (k = 0; rc == 0 && k < PQntuples(r); k++) {
		long idx = strtol(PQgetvalue(r, k, 0), NULL, 10);
		struct pg_row *w;

		if (idx < 0 || (size_t)idx >= n)
			continue;
		w = &rows[idx];
		w->found = 1;
		w->file_size = strtoll(PQgetvalue(r, k, 1), NULL, 10);
		snprintf(w->sha256, sizeof(w->sha256), "%s", PQgetvalue(r, k, 2));
		snprintf(w->etag, sizeof(w->etag), "%s", PQgetvalue(r, k, 3));
		free(w->s3_key);
		w->s3_key = PQgetisnull(r, k, 4) ? NULL :
		    xstrdup(PQgetvalue(r, k, 4));
	}
	PQclear(r);
	return rc;
}

/* ---- job.json ------------------------------------------------------------ */

static const char *
str_field(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A text[] literal for changed_fields; names are plain identifiers. */
static char *
text_array(char **v, size_t n)
{
	struct buf b = {0};
	size_t i;

	buf_puts(&b, "{");
	for (i = 0; i < n; i++)
		buf_printf(&b, "%s\"%s\"", i ? "," : "", v[i]);
	buf_puts(&b, "}");
	return buf_take(&b);
}

static int
simple(struct pg *p, const char *sql, struct err *e)
{
	PGresult *r = PQexecParams(p->conn, sql, 0, NULL, NULL, NULL, NULL, 0);
	int rc = exec_ok(p, r, PGRES_COMMAND_OK, e, sql);

	PQclear(r);
	return rc;
}

int
pg_apply_job_meta(struct pg *p, const char *event_id, const char *job_id,
    const cJSON *fields, const char **outcome, struct err *e)
{
	PGresult *r = NULL;
	cJSON *row = NULL;
	struct jobmeta_diff d = {0};
	char *old_s = NULL, *new_s = NULL, *changed = NULL;
	const cJSON *llm;
	int rc = -1;

	*outcome = "";
	if (pg_ensure(p, e) < 0)
		return -1;
	if (simple(p, "BEGIN", e) < 0)
		return -1;
	{
		const char *t[1] = { p->timeout };

		r = PQexecParams(p->conn, SQL_TXN_SETTINGS, 1, NULL, t, NULL,
		    NULL, 0);
		if (exec_ok(p, r, PGRES_TUPLES_OK, e, "setting the timeout") < 0)
			goto out;
		PQclear(r);
		r = NULL;
	}
	{
		const char *v[2] = { event_id, job_id };

		r = PQexecParams(p->conn, p->sql_event, 2, NULL, v, NULL, NULL, 0);
		if (exec_ok(p, r, PGRES_COMMAND_OK, e, "recording the event") < 0)
			goto out;
		if (strcmp(PQcmdTuples(r), "0") == 0) {
			*outcome = "duplicate";
			PQclear(r);
			r = NULL;
			rc = simple(p, "COMMIT", e);
			goto out;
		}
		PQclear(r);
	}
	{
		const char *v[1] = { job_id };

		r = PQexecParams(p->conn, p->sql_job_get, 1, NULL, v, NULL, NULL, 0);
		if (exec_ok(p, r, PGRES_TUPLES_OK, e, "reading the job") < 0)
			goto out;
		if (PQntuples(r) == 1)
			row = cJSON_Parse(PQgetvalue(r, 0, 0));
		PQclear(r);
		r = NULL;
	}
	jobmeta_diff(row, fields, &d);
	if (row == NULL) {
		const char *v[6];

		llm = cJSON_GetObjectItemCaseSensitive(fields, "enhance_with_llm");
		v[0] = job_id;
		v[1] = str_field(fields, "filename");
		v[2] = str_field(fields, "platform");
		v[3] = str_field(fields, "user_id");
		v[4] = str_field(fields, "status");
		v[5] = cJSON_IsBool(llm) ? (cJSON_IsTrue(llm) ? "true" : "false")
		    : NULL;
		r = PQexecParams(p->conn, p->sql_job_insert, 6, NULL, v, NULL,
		    NULL, 0);
		if (exec_ok(p, r, PGRES_COMMAND_OK, e, "creating the job") < 0)
			goto out;
		PQclear(r);
		r = NULL;
		*outcome = "created";
	} else if (d.n == 0) {
		*outcome = "unchanged";
	} else {
		struct buf sql = {0};
		const char *v[6];
		int nv = 1;
		size_t i;

		v[0] = job_id;
		buf_printf(&sql, "UPDATE %s.jobs SET updated_at = now()",
		    p->schema);
		for (i = 0; i < d.n; i++) {
			const cJSON *nv_j = cJSON_GetObjectItemCaseSensitive(
			    d.new_data, d.changed[i]);

			if (cJSON_IsNull(nv_j))
				v[nv] = NULL;
			else if (cJSON_IsBool(nv_j))
				v[nv] = cJSON_IsTrue(nv_j) ? "true" : "false";
			else
				v[nv] = nv_j->valuestring;
			nv++;
			buf_printf(&sql, ", %s = $%d", d.changed[i], nv);
		}
		buf_puts(&sql, " WHERE id = $1");
		r = PQexecParams(p->conn, sql.data, nv, NULL, v, NULL, NULL, 0);
		buf_free(&sql);
		if (exec_ok(p, r, PGRES_COMMAND_OK, e, "updating the job") < 0)
			goto out;
		PQclear(r);
		r = NULL;
		*outcome = "updated";
	}
	if (d.n > 0) {
		const char *v[4];

		old_s = d.old_data ? cJSON_PrintUnformatted(d.old_data) : NULL;
		new_s = cJSON_PrintUnformatted(d.new_data);
		changed = text_array(d.changed, d.n);
		v[0] = job_id;
		v[1] = old_s;
		v[2] = new_s;
		v[3] = changed;
		r = PQexecParams(p->conn, p->sql_history, 4, NULL, v, NULL, NULL, 0);
		if (exec_ok(p, r, PGRES_COMMAND_OK, e, "recording job_history") < 0)
			goto out;
		PQclear(r);
		r = NULL;
	}
	rc = simple(p, "COMMIT", e);
out:
	PQclear(r);
	if (rc < 0 && p->conn != NULL)
		PQclear(PQexec(p->conn, "ROLLBACK"));
	cJSON_Delete(row);
	jobmeta_diff_free(&d);
	free(old_s);
	free(new_s);
	free(changed);
	return rc;
}

int
pg_check_access(struct pg *p, struct buf *problems, struct err *e)
{
	static const char sql[] =
	    "SELECT t.priv || ' on ' || t.tbl FROM (VALUES ('jobs', 'INSERT'), "
	    " ('jobs', 'UPDATE'), ('documents', 'INSERT'), "
	    " ('documents', 'UPDATE'), ('job_history', 'INSERT'), "
	    " ('user_activity', 'INSERT'), ('applied_events', 'INSERT')) "
	    " AS t(tbl, priv) "
	    "WHERE NOT has_table_privilege($1 || '.' || t.tbl, t.priv) "
	    "UNION ALL SELECT 'EXECUTE on outboxd_record_document' "
	    "WHERE NOT has_function_privilege($1 || '.outboxd_record_document("
	    "uuid, uuid, text, text, text, bigint, text, text, text, text, text, "
	    "jsonb, uuid)', 'EXECUTE')";
	const char *v[1] = { p->schema };
	PGresult *r;
	int i, n = -1;

	if (pg_ensure(p, e) < 0)
		goto out;
	r = PQexecParams(p->conn, sql, 1, NULL, v, NULL, NULL, 0);
	if (exec_ok(p, r, PGRES_TUPLES_OK, e, "checking privileges") == 0) {
		n = PQntuples(r);
		for (i = 0; i < n; i++)
			buf_printf(problems, "%s%s", i ? ", " : "",
			    PQgetvalue(r, i, 0));
	}
	PQclear(r);
out:
	return n;
}

/* ---- Supabase's Data API ------------------------------------------------ */

/*
 * What the API roles (those of anon, authenticated, service_role that
 * exist) may do on outboxd's objects, against what 005_supabase grants:
 * authenticated SELECT on the four tables and two views, service_role
 * SELECT/INSERT/UPDATE/DELETE on the tables and SELECT on the views, anon
 * nothing, none of them anything on schema_migrations, applied_events or
 * outboxd's functions; and row-level security on every table. $1 is
 * the quoted schema, $2 the schema's name.
 */
static const char sql_api_grants[] =
    "WITH rel(name, kind) AS (VALUES ('jobs', 't'), ('documents', 't'), "
    "  ('job_history', 't'), ('user_activity', 't'), ('upload_stats', 'v'), "
    "  ('job_completion', 'v'), ('schema_migrations', 'b'), "
    "  ('applied_events', 'b')), "
    " priv(p) AS (VALUES ('SELECT'), ('INSERT'), ('UPDATE'), ('DELETE'), "
    "  ('TRUNCATE'), ('REFERENCES'), ('TRIGGER')), "
    " api(r) AS (SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname "
    "  IN ('anon', 'authenticated', 'service_role')), "
    " want AS (SELECT r, name, p, CASE WHEN kind = 'b' OR r = 'anon' "
    "  THEN false WHEN r = 'authenticated' THEN p = 'SELECT' "
    "  WHEN kind = 'v' THEN p = 'SELECT' "
    "  ELSE p IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE') END AS should "
    "  FROM api, rel, priv "
    "  WHERE pg_catalog.to_regclass($1 || '.' || name) IS NOT NULL) "
    /* One item per role, direction and set of privileges: "anon has
     * SELECT/INSERT on jobs, documents". */
    " , wrong AS (SELECT r, should, name, pg_catalog.string_agg(p, '/' "
    "  ORDER BY p) AS ps FROM want WHERE pg_catalog.has_table_privilege(r, "
    "  $1 || '.' || name, p) <> should GROUP BY r, should, name) "
    "SELECT r || CASE WHEN should THEN ' lacks ' ELSE ' has ' END || ps || "
    " ' on ' || pg_catalog.string_agg(name, ', ' ORDER BY name) FROM wrong "
    " GROUP BY r, should, ps "
    "UNION ALL SELECT r || ' lacks USAGE on schema ' || $2 FROM api "
    " WHERE r <> 'anon' AND NOT pg_catalog.has_schema_privilege(r, $2, 'USAGE') "
    "UNION ALL SELECT r || ' may execute ' || f FROM api, (VALUES "
    " ('outboxd_record_document'), ('outboxd_repair_document')) AS fn(f) "
    " WHERE pg_catalog.to_regprocedure($1 || '.' || f || '(uuid, uuid, text, "
    " text, text, bigint, text, text, text, text, text, jsonb, uuid)') IS NOT "
    " NULL AND pg_catalog.has_function_privilege(r, $1 || '.' || f || "
    " '(uuid, uuid, text, text, text, bigint, text, text, text, text, text, "
    " jsonb, uuid)', 'EXECUTE') "
    "UNION ALL SELECT 'row-level security is off on ' || c.relname "
    " FROM pg_catalog.pg_class c JOIN rel ON rel.name = c.relname "
    " WHERE c.relnamespace = pg_catalog.to_regnamespace($1) "
    " AND rel.kind <> 'v' AND NOT c.relrowsecurity "
    "  AND EXISTS (SELECT 1 FROM api)";

/* Runs a one-column query with the schema's two names as $1 and $2 and
 * appends its rows, comma separated, to out. Returns the row count. */
static int
schema_rows(struct pg *p, const char *sql, struct buf *out, struct err *e,
    const char *what)
{
	static const Oid text[2] = { 25, 25 };	/* TEXTOID */
	const char *v[2] = { p->schema, p->schema_raw };
	PGresult *r;
	int i, n = -1;

	if (pg_ensure(p, e) < 0)
		return -1;
	r = PQexecParams(p->conn, sql, 2, text, v, NULL, NULL, 0);
	if (exec_ok(p, r, PGRES_TUPLES_OK, e, what) == 0) {
		n = PQntuples(r);
		for (i = 0; i < n; i++)
			buf_printf(out, "%s%s", i ? ", " : "", PQgetvalue(r, i, 0));
	}
	PQclear(r);
	return n;
}

int
pg_api_roles(struct pg *p, struct err *e)
{
	struct buf b = {0};
	int n = schema_rows(p, "SELECT rolname FROM pg_catalog.pg_roles WHERE "
	    "rolname IN ('anon', 'authenticated', 'service_role') AND "
	    "$1 IS NOT NULL AND $2 IS NOT NULL", &b, e, "reading the roles");

	buf_free(&b);
	return n;
}

int
pg_check_api_grants(struct pg *p, struct buf *problems, struct err *e)
{
	return schema_rows(p, sql_api_grants, problems, e,
	    "checking the Data API grants");
}

int
pg_exposed_schemas(struct pg *p, struct buf *out, struct err *e)
{
	/* The database's own setting wins over the role-wide one, as for
	 * PostgREST's in-database configuration. */
	return schema_rows(p, "SELECT pg_catalog.substr(cfg, 18) FROM "
	    "pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_roles r ON "
	    "r.oid = s.setrole, pg_catalog.unnest(s.setconfig) AS cfg "
	    "WHERE r.rolname = 'authenticator' AND s.setdatabase IN (0, "
	    "(SELECT oid FROM pg_catalog.pg_database WHERE datname = "
	    "pg_catalog.current_database())) AND cfg LIKE 'pgrst.db\\_schemas=%' "
	    "AND $1 IS NOT NULL AND $2 IS NOT NULL "
	    "ORDER BY s.setdatabase DESC LIMIT 1", out, e,
	    "reading authenticator's pgrst.db_schemas");
}

int
pg_unvalidated_constraints(struct pg *p, struct buf *out, struct err *e)
{
	return schema_rows(p, "SELECT c.relname || '.' || k.conname FROM "
	    "pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = "
	    "k.conrelid WHERE k.connamespace = pg_catalog.to_regnamespace($1) "
	    "AND NOT k.convalidated AND $2 IS NOT NULL ORDER BY 1", out, e,
	    "reading the constraints");
}
