/*
 * outboxctl.c - the admin tool: reads and nudges the outbox, applies the
 * database schema, and presigns URLs. It reads the same configuration as
 * outboxd (environment, --env-file), and needs only what a verb uses:
 * `status` needs just the outbox, `migrate` just the database.
 *
 * Exit codes: 0 ok, 1 the answer is "no" (verify found differences), 64
 * usage, 65 no such entry, 69 a store is unreachable, 78 configuration.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <libxml/parser.h>
#include <sqlite3.h>

#include "agent/cfg.h"
#include "agent/dotenv.h"
#include "agent/log.h"
#include "agent/pg.h"
#include "agent/s3.h"
#include "store/outbox.h"
#include "watchers/watch.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: outboxctl [--env-file PATH] COMMAND [ARGS]\n"
	    "\n"
	    "  status [--json]              counts per state, oldest pending, last error\n"
	    "  list [--state S] [--job ID] [--limit N]\n"
	    "                               entries, newest first (S: pending, in_flight,\n"
	    "                               done, failed, skipped)\n"
	    "  show ID                      one entry, every field\n"
	    "  retry ID | retry --failed    put failed legs back to pending\n"
	    "  rescan                       journal what changed on disk (asks a running\n"
	    "                               outboxd, or does it itself)\n"
	    "  migrate                      apply the PostgreSQL schema\n"
	    "  presign KEY [--expires S]    print a presigned GET URL (default 3600 s)\n");
}

/* Loads the configuration; with strict=0 path problems are not fatal. */
static int
config(struct cfg *c, int strict)
{
	struct cfg_problems p = {0};
	size_t i, n;

	n = cfg_load(c, NULL, NULL, strict, &p);
	for (i = 0; i < n; i++)
		fprintf(stderr, "outboxctl: configuration: %s\n", p.lines[i]);
	cfg_problems_free(&p);
	if (n > 0)
		cfg_free(c);
	return n == 0 ? 0 : -1;
}

static struct outbox *
open_outbox(const struct cfg *c, int readonly)
{
	struct err e = {0};
	struct outbox *ob;

	if (readonly && access(c->state_db, F_OK) < 0) {
		fprintf(stderr, "outboxctl: no outbox at %s (OUTBOXD_STATE_DB): "
		    "has outboxd run here?\n", c->state_db);
		return NULL;
	}
	ob = outbox_open(c->state_db, readonly, &e);
	if (ob == NULL)
		fprintf(stderr, "outboxctl: %s\n", e.msg);
	return ob;
}

/* Which legs are live: configured here, or as the daemon last ran. */
static void
live_legs(struct outbox *ob, const struct cfg *c, int *s3, int *db)
{
	char *v;

	*s3 = c->bucket != NULL;
	*db = c->db_on;
	if ((v = outbox_meta_get(ob, "s3_leg")) != NULL) {
		*s3 |= strcmp(v, "on") == 0;
		free(v);
	}
	if ((v = outbox_meta_get(ob, "db_leg")) != NULL) {
		*db |= strcmp(v, "on") == 0;
		free(v);
	}
}

static void
print_age(int64_t ms)
{
	int64_t s = ms / 1000;

	if (s < 120)
		printf("%llds", (long long)s);
	else if (s < 7200)
		printf("%lldm %llds", (long long)(s / 60), (long long)(s % 60));
	else if (s < 172800)
		printf("%lldh %lldm", (long long)(s / 3600),
		    (long long)(s / 60 % 60));
	else
		printf("%lldd %lldh", (long long)(s / 86400),
		    (long long)(s / 3600 % 24));
}

static cJSON *
leg_json(const int64_t *v, int on)
{
	cJSON *o = cJSON_CreateObject();
	int i;

	cJSON_AddBoolToObject(o, "on", on);
	for (i = 0; i < OUTBOX_NSTATES; i++)
		cJSON_AddNumberToObject(o, outbox_state_name(i), (double)v[i]);
	return o;
}

static int
cmd_status(struct cfg *c, int argc, char **argv)
{
	int json = argc > 1 && strcmp(argv[1], "--json") == 0;
	struct outbox_counts n;
	struct outbox *ob;
	struct err e = {0};
	int s3, db, i;
	long pid;

	if (argc > 1 && !json) {
		usage(stderr);
		return EX_USAGE;
	}
	if ((ob = open_outbox(c, 1)) == NULL)
		return EX_NOINPUT;
	live_legs(ob, c, &s3, &db);
	if (outbox_counts(ob, s3, db, &n, &e) < 0) {
		fprintf(stderr, "outboxctl: %s\n", e.msg);
		outbox_close(ob);
		return EX_IOERR;
	}
	pid = outbox_lock_owner(c->state_db);
	if (json) {
		cJSON *o = cJSON_CreateObject();
		char *text;

		cJSON_AddNumberToObject(o, "entries", (double)n.entries);
		cJSON_AddNumberToObject(o, "pending", (double)n.pending);
		cJSON_AddNumberToObject(o, "failed", (double)n.failed);
		cJSON_AddNumberToObject(o, "done", (double)n.done);
		cJSON_AddItemToObject(o, "s3", leg_json(n.s3, s3));
		cJSON_AddItemToObject(o, "db", leg_json(n.db, db));
		if (n.oldest_pending_ms >= 0)
			cJSON_AddNumberToObject(o, "oldest_pending_age_s",
			    (double)((time_now_ms() - n.oldest_pending_ms) / 1000));
		else
			cJSON_AddNullToObject(o, "oldest_pending_age_s");
		if (n.last_error[0]) {
			cJSON_AddStringToObject(o, "last_error", n.last_error);
			cJSON_AddStringToObject(o, "last_error_at", n.last_error_at);
		} else {
			cJSON_AddNullToObject(o, "last_error");
		}
		cJSON_AddNumberToObject(o, "bytes_uploaded", (double)n.bytes_done);
		cJSON_AddNumberToObject(o, "not_job_dirs", (double)n.not_jobs);
		if (pid > 0)
			cJSON_AddNumberToObject(o, "outboxd_pid", (double)pid);
		else
			cJSON_AddNullToObject(o, "outboxd_pid");
		text = cJSON_Print(o);
		printf("%s\n", text);
		free(text);
		cJSON_Delete(o);
	} else {
		printf("outbox:   %s (%s", c->state_db, pid > 0 ? "" :
		    "outboxd not running");
		if (pid > 0)
			printf("outboxd running, pid %ld", pid);
		printf(")\n");
		printf("entries:  %lld: %lld done, %lld pending, %lld failed\n",
		    (long long)n.entries, (long long)n.done, (long long)n.pending,
		    (long long)n.failed);
		for (i = 0; i < 2; i++) {
			const int64_t *v = i == 0 ? n.s3 : n.db;
			int on = i == 0 ? s3 : db;
			int k;

			printf("%-9s %s", i == 0 ? "s3:" : "database:",
			    on ? "" : "off; ");
			for (k = 0; k < OUTBOX_NSTATES; k++)
				printf("%s%lld %s", k ? ", " : "", (long long)v[k],
				    outbox_state_name(k));
			printf("\n");
		}
		if (n.oldest_pending_ms >= 0) {
			printf("oldest pending: journaled ");
			print_age(time_now_ms() - n.oldest_pending_ms);
			printf(" ago\n");
		}
		if (n.last_error[0])
			printf("last error: %s (%s)\n", n.last_error,
			    n.last_error_at);
		if (n.not_jobs > 0)
			printf("not jobs: %lld top-level director%s skipped (the "
			    "name is not a UUID)\n", (long long)n.not_jobs,
			    n.not_jobs == 1 ? "y" : "ies");
	}
	outbox_close(ob);
	return 0;
}

static int
cmd_list(struct cfg *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "state", required_argument, NULL, 's' },
		{ "job", required_argument, NULL, 'j' },
		{ "limit", required_argument, NULL, 'l' },
		{ NULL, 0, NULL, 0 },
	};
	const char *state = NULL, *job = NULL;
	long limit = 100;
	struct outbox *ob;
	sqlite3_stmt *s;
	int ch, rows = 0;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 's': state = optarg; break;
		case 'j': job = optarg; break;
		case 'l': limit = strtol(optarg, NULL, 10); break;
		default: usage(stderr); return EX_USAGE;
		}
	}
	if (state != NULL && outbox_state_parse(state) < 0) {
		fprintf(stderr, "outboxctl: --state %s: use pending, in_flight, "
		    "done, failed or skipped\n", state);
		return EX_USAGE;
	}
	if ((ob = open_outbox(c, 1)) == NULL)
		return EX_NOINPUT;
	if (sqlite3_prepare_v2(outbox_db(ob),
	    "SELECT id, s3_state, db_state, s3_attempts + db_attempts, path, "
	    "  coalesce(CASE WHEN s3_state NOT IN ('done') THEN s3_error END, "
	    "           CASE WHEN db_state NOT IN ('done') THEN db_error END, '') "
	    "FROM entries WHERE (?1 IS NULL OR s3_state = ?1 OR db_state = ?1) "
	    "  AND (?2 IS NULL OR job_id = ?2) ORDER BY id DESC LIMIT ?3",
	    -1, &s, NULL) != SQLITE_OK) {
		fprintf(stderr, "outboxctl: %s\n", sqlite3_errmsg(outbox_db(ob)));
		outbox_close(ob);
		return EX_IOERR;
	}
	sqlite3_bind_text(s, 1, state, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, job, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, limit);
	printf("%-7s %-9s %-9s %-3s %s\n", "ID", "S3", "DATABASE", "TRY", "PATH");
	while (sqlite3_step(s) == SQLITE_ROW) {
		const char *err = (const char *)sqlite3_column_text(s, 5);

		printf("%-7lld %-9s %-9s %-3d %s%s%s\n",
		    (long long)sqlite3_column_int64(s, 0),
		    sqlite3_column_text(s, 1), sqlite3_column_text(s, 2),
		    sqlite3_column_int(s, 3), sqlite3_column_text(s, 4),
		    err && err[0] ? "\n        " : "", err ? err : "");
		rows++;
	}
	sqlite3_finalize(s);
	outbox_close(ob);
	if (rows == 0)
		printf("(no entries)\n");
	return 0;
}

static int
cmd_show(struct cfg *c, int argc, char **argv)
{
	struct outbox *ob;
	sqlite3_stmt *s;
	char *end;
	long long id;
	int i, found = 0;

	if (argc != 2 || (id = strtoll(argv[1], &end, 10), *end != '\0')) {
		usage(stderr);
		return EX_USAGE;
	}
	if ((ob = open_outbox(c, 1)) == NULL)
		return EX_NOINPUT;
	if (sqlite3_prepare_v2(outbox_db(ob), "SELECT * FROM entries WHERE "
	    "id = ?1", -1, &s, NULL) != SQLITE_OK) {
		outbox_close(ob);
		return EX_IOERR;
	}
	sqlite3_bind_int64(s, 1, id);
	if (sqlite3_step(s) == SQLITE_ROW) {
		found = 1;
		for (i = 0; i < sqlite3_column_count(s); i++) {
			const unsigned char *v = sqlite3_column_text(s, i);

			printf("%-14s %s\n", sqlite3_column_name(s, i),
			    v ? (const char *)v : "");
		}
	}
	sqlite3_finalize(s);
	outbox_close(ob);
	if (!found) {
		fprintf(stderr, "outboxctl: no entry %lld\n", id);
		return EX_DATAERR;
	}
	return 0;
}

static int
cmd_retry(struct cfg *c, int argc, char **argv)
{
	struct outbox *ob;
	struct err e = {0};
	long long id = -1;
	char *end;
	int n;
	long pid;

	if (argc != 2) {
		usage(stderr);
		return EX_USAGE;
	}
	if (strcmp(argv[1], "--failed") != 0) {
		id = strtoll(argv[1], &end, 10);
		if (*end != '\0' || id < 1) {
			usage(stderr);
			return EX_USAGE;
		}
	}
	if ((ob = open_outbox(c, 0)) == NULL)
		return EX_NOINPUT;
	n = outbox_retry(ob, id, &e);
	outbox_close(ob);
	if (n < 0) {
		fprintf(stderr, "outboxctl: %s\n", e.msg);
		return EX_IOERR;
	}
	printf("%d failed leg%s back to pending\n", n, n == 1 ? "" : "s");
	if (n == 0 && id > 0)
		return EX_DATAERR;
	/* Wake a running outboxd so it does not wait for its next turn. */
	if ((pid = outbox_lock_owner(c->state_db)) > 0)
		kill((pid_t)pid, SIGUSR1);
	return 0;
}

static int
cmd_rescan(struct cfg *c)
{
	long pid = outbox_lock_owner(c->state_db);
	struct outbox *ob;
	struct watch *w;
	struct err e = {0};
	int n;

	if (pid > 0) {
		if (kill((pid_t)pid, SIGUSR1) < 0) {
			fprintf(stderr, "outboxctl: cannot signal outboxd (pid "
			    "%ld): %s\n", pid, strerror(errno));
			return EX_NOPERM;
		}
		printf("asked outboxd (pid %ld) to rescan\n", pid);
		return 0;
	}
	/* No daemon: do it here, holding its lock meanwhile. */
	if ((ob = open_outbox(c, 0)) == NULL)
		return EX_CANTCREAT;
	if (outbox_lock(ob, &e) < 0) {
		fprintf(stderr, "outboxctl: %s\n", e.msg);
		outbox_close(ob);
		return EX_TEMPFAIL;
	}
	w = watch_create(c, 0, -1, &e);
	n = w ? watch_rescan_now(w, &e) : -1;
	watch_free(w);
	outbox_close(ob);
	if (n < 0) {
		fprintf(stderr, "outboxctl: %s\n", e.msg);
		return EX_IOERR;
	}
	printf("rescanned: %d new or changed file%s journaled\n", n,
	    n == 1 ? "" : "s");
	return 0;
}

static int
cmd_migrate(struct cfg *c)
{
	struct pg *p;
	struct err e = {0};
	struct buf out = {0};
	int n, missing;

	if (!c->db_on) {
		fprintf(stderr, "outboxctl: configuration: DATABASE_URL is not "
		    "set\n");
		return EX_CONFIG;
	}
	c->db_migrate = 0;	/* migrate here, explicitly, and say what it did */
	p = pg_new(c);
	n = pg_migrate(p, &e);
	if (n < 0) {
		fprintf(stderr, "outboxctl: migrate: %s\n", e.msg);
		pg_free(p);
		return e.cls == ERR_TRANSIENT ? EX_UNAVAILABLE : EX_SOFTWARE;
	}
	if (pg_migration_status(p, &out, &missing, &e) == 0)
		printf("%s", out.data ? out.data : "");
	printf("schema %s: %d migration%s applied now, up to date\n",
	    c->db_schema, n, n == 1 ? "" : "s");
	buf_free(&out);
	pg_free(p);
	return 0;
}

static int
cmd_presign(struct cfg *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "expires", required_argument, NULL, 'x' },
		{ NULL, 0, NULL, 0 },
	};
	long expires = 3600;
	struct s3 *s;
	struct err e = {0};
	char *url, *end;
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (ch != 'x') {
			usage(stderr);
			return EX_USAGE;
		}
		expires = strtol(optarg, &end, 10);
		if (*end != '\0' || expires < 1 || expires > 604800) {
			fprintf(stderr, "outboxctl: --expires %s: must be 1 to "
			    "604800 seconds (7 days, SigV4's limit)\n", optarg);
			return EX_USAGE;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return EX_USAGE;
	}
	if (c->bucket == NULL) {
		fprintf(stderr, "outboxctl: configuration: S3_BUCKET is not set\n");
		return EX_CONFIG;
	}
	s = s3_new(c, &e);
	if (s == NULL) {
		fprintf(stderr, "outboxctl: %s\n", e.msg);
		return EX_SOFTWARE;
	}
	url = s3_presign(s, argv[optind], expires);
	printf("%s\n", url);
	free(url);
	s3_free(s);
	return 0;
}

int
main(int argc, char **argv)
{
	const char *env_file = NULL;
	struct cfg c;
	struct err e = {0};
	const char *verb;
	int rc, argi = 1;

	while (argi < argc && argv[argi][0] == '-') {
		if (strcmp(argv[argi], "--env-file") == 0 && argi + 1 < argc) {
			env_file = argv[argi + 1];
			argi += 2;
		} else if (strncmp(argv[argi], "--env-file=", 11) == 0) {
			env_file = argv[argi] + 11;
			argi++;
		} else if (strcmp(argv[argi], "--help") == 0 ||
		    strcmp(argv[argi], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[argi], "--version") == 0) {
			printf("outboxctl %s\n", PACKAGE_VERSION);
			return 0;
		} else {
			usage(stderr);
			return EX_USAGE;
		}
	}
	if (argi >= argc) {
		usage(stderr);
		return EX_USAGE;
	}
	verb = argv[argi];
	if (env_file != NULL && dotenv_load(env_file, &e) < 0) {
		fprintf(stderr, "outboxctl: configuration: --env-file %s\n",
		    e.msg);
		return EX_CONFIG;
	}
	log_init("outboxctl", LOG_FORMAT_TEXT, LOG_INFO);
	/* Only a rescan reads the uploads tree; others need not reach it. */
	if (config(&c, strcmp(verb, "rescan") == 0) < 0)
		return EX_CONFIG;
	xmlInitParser();
	curl_global_init(CURL_GLOBAL_DEFAULT);
	argc -= argi;
	argv += argi;
	if (strcmp(verb, "status") == 0)
		rc = cmd_status(&c, argc, argv);
	else if (strcmp(verb, "list") == 0)
		rc = cmd_list(&c, argc, argv);
	else if (strcmp(verb, "show") == 0)
		rc = cmd_show(&c, argc, argv);
	else if (strcmp(verb, "retry") == 0)
		rc = cmd_retry(&c, argc, argv);
	else if (strcmp(verb, "rescan") == 0 && argc == 1)
		rc = cmd_rescan(&c);
	else if (strcmp(verb, "migrate") == 0 && argc == 1)
		rc = cmd_migrate(&c);
	else if (strcmp(verb, "presign") == 0)
		rc = cmd_presign(&c, argc, argv);
	else {
		fprintf(stderr, "outboxctl: unknown command: %s\n", verb);
		usage(stderr);
		rc = EX_USAGE;
	}
	cfg_free(&c);
	curl_global_cleanup();
	return rc;
}
