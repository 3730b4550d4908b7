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

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <strings.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sysexits.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <libxml/parser.h>
#include <sqlite3.h>

#include "agent/cfg.h"
#include "agent/dotenv.h"
#include "agent/log.h"
#include "agent/pg.h"
#include "agent/keymap.h"
#include "agent/s3.h"
#include "agent/strmap.h"
#include "watchers/tree.h"
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
	    "  presign KEY [--expires S]    print a presigned GET URL (default 3600 s)\n"
	    "  verify [--job ID]            compare local files with S3 and the\n"
	    "                               database; exit 1 on any difference\n"
	    "  doctor                       check configuration, stores, limits; one\n"
	    "                               line per check, exit 0 when all pass\n");
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

/* ---- doctor -------------------------------------------------------------- */

static int doctor_failed;

static void
check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
check(int ok, const char *fmt, ...)
{
	va_list ap;

	printf("%s ", ok ? "ok  " : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (!ok)
		doctor_failed++;
}

static long
read_long(const char *path)
{
	FILE *f = fopen(path, "re");
	long v = -1;

	if (f != NULL) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

struct dircount {
	long dirs, files;
};

static int
count_visit(void *arg, enum tree_what what, const char *rel,
    const struct stat *st)
{
	struct dircount *d = arg;

	(void)rel;
	(void)st;
	if (what == TREE_DIR) {
		d->dirs++;
		return 1;
	}
	if (what == TREE_FILE)
		d->files++;
	return 0;
}

static int
doctor_ignore(void *arg, const char *name)
{
	return watch_ignored(arg, name);
}

static void
doctor_tree(const struct cfg *c)
{
	struct dircount d = { 1, 0 };
	struct err e = {0};
	long watches, queued;
	int fd;

	fd = open(c->watch_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || tree_walk(fd, "", doctor_ignore, count_visit, &d, &e) < 0) {
		check(0, "uploads root %s: %s", c->watch_dir, fd < 0 ?
		    strerror(errno) : e.msg);
		if (fd >= 0)
			close(fd);
		return;
	}
	close(fd);
	check(1, "uploads root %s: readable, %ld directories, %ld files",
	    c->watch_dir, d.dirs, d.files);
	watches = read_long("/proc/sys/fs/inotify/max_user_watches");
	queued = read_long("/proc/sys/fs/inotify/max_queued_events");
	if (watches < 0)
		check(0, "inotify: cannot read /proc/sys/fs/inotify (is this "
		    "Linux?)");
	else
		check(d.dirs * 10 < watches * 9, "inotify: %ld directories to "
		    "watch, fs.inotify.max_user_watches=%ld (shared by all of "
		    "this user's processes), max_queued_events=%ld%s", d.dirs,
		    watches, queued, d.dirs * 10 < watches * 9 ? "" :
		    ": raise it (packaging/sysctl.d/60-outboxd.conf)");
}

static void
doctor_outbox(const struct cfg *c)
{
	struct outbox *ob;
	struct err e = {0};
	struct statvfs sv;
	char *dir = xstrdup(c->state_db), *slash = strrchr(dir, '/');
	long pid = outbox_lock_owner(c->state_db);

	if (slash != NULL)
		*(slash == dir ? slash + 1 : slash) = '\0';
	else
		snprintf(dir, strlen(dir) + 1, ".");
	ob = outbox_open(c->state_db, 0, &e);
	if (ob == NULL || outbox_begin(ob, &e) < 0) {
		check(0, "outbox %s: %s", c->state_db, e.msg);
	} else {
		outbox_rollback(ob);
		if (statvfs(dir, &sv) == 0) {
			double free_mib = (double)sv.f_bavail * sv.f_frsize /
			    (1024.0 * 1024.0);

			check(free_mib >= 64, "outbox %s: writable, %.0f MiB free%s%s",
			    c->state_db, free_mib, free_mib >= 64 ? "" :
			    " (low: journaling pauses when it is full)",
			    pid > 0 ? ", outboxd running" : ", outboxd not running");
		} else {
			check(1, "outbox %s: writable", c->state_db);
		}
	}
	outbox_close(ob);
	free(dir);
}

static void
doctor_s3(const struct cfg *c)
{
	struct s3 *s;
	struct s3_req r;
	struct err e = {0};
	char id[37], body[96];
	unsigned char sha[32], md5[16];
	int n;

	if (c->bucket == NULL) {
		check(1, "s3: off (S3_BUCKET is not set): files are journaled "
		    "and wait for it");
		return;
	}
	s = s3_new(c, &e);
	if (s == NULL) {
		check(0, "s3: %s", e.msg);
		return;
	}
	/* A small probe object outside jobs/, removed again. */
	uuid_v4(id);
	n = snprintf(body, sizeof(body), "outboxd doctor probe %s\n", id);
	EVP_Digest(body, (size_t)n, sha, NULL, EVP_sha256(), NULL);
	EVP_Digest(body, (size_t)n, md5, NULL, EVP_md5(), NULL);
	memset(&r, 0, sizeof(r));
	r.method = "PUT";
	r.key = xasprintf("outboxd-doctor/probe-%s", id);
	r.fd = -1;
	r.mem = (const unsigned char *)body;
	r.length = (uint64_t)n;
	hex_encode(sha, sizeof(sha), r.sha256);
	EVP_EncodeBlock((unsigned char *)r.md5, md5, sizeof(md5));
	r.content_type = "text/plain";
	if (s3_perform(s, &r) < 0) {
		check(0, "s3: cannot write to bucket %s at %s: %s", c->bucket,
		    c->endpoint ? c->endpoint : "AWS", r.err.msg);
	} else {
		struct s3_req d;

		memset(&d, 0, sizeof(d));
		d.method = "DELETE";
		d.key = r.key;
		d.fd = -1;
		if (s3_perform(s, &d) < 0)
			check(1, "s3: bucket %s is writable (the probe %s stays: "
			    "%s)", c->bucket, r.key, d.err.msg);
		else
			check(1, "s3: bucket %s at %s is writable", c->bucket,
			    c->endpoint ? c->endpoint : "AWS");
		buf_free(&d.body);
	}
	buf_free(&r.body);
	free(r.key);
	s3_free(s);
}

static void
doctor_db(struct cfg *c)
{
	struct pg *p;
	struct err e = {0};
	struct buf out = {0}, missing_privs = {0};
	int missing;

	if (!c->db_on) {
		check(1, "database: off (DATABASE_URL is not set): files are "
		    "journaled and wait for it");
		return;
	}
	c->db_migrate = 0;	/* doctor looks, it does not change */
	p = pg_new(c);
	if (pg_ensure(p, &e) < 0) {
		check(0, "database: %s", e.msg);
		goto out;
	}
	check(1, "database: reachable (%s)", c->db_source);
	if (pg_migration_status(p, &out, &missing, &e) < 0) {
		check(0, "database: schema %s: %s", c->db_schema, e.msg);
		goto out;
	}
	check(missing == 0, "database: schema %s %s", c->db_schema,
	    missing == 0 ? "is up to date" : "lacks migrations: run outboxctl "
	    "migrate (or let outboxd with OUTBOXD_DB_MIGRATE=1)");
	if (missing == 0) {
		int n = pg_check_access(p, &missing_privs, &e);

		if (n < 0)
			check(0, "database: privileges: %s", e.msg);
		else
			check(n == 0, "database: privileges %s%s", n == 0 ?
			    "to record files" : "missing: ", n == 0 ? "" :
			    missing_privs.data);
	}
out:
	buf_free(&out);
	buf_free(&missing_privs);
	pg_free(p);
}

static int
cmd_doctor(void)
{
	struct cfg_problems p = {0};
	struct cfg c;
	size_t i, n;

	n = cfg_load(&c, NULL, NULL, 1, &p);
	for (i = 0; i < n; i++)
		check(0, "configuration: %s", p.lines[i]);
	cfg_problems_free(&p);
	if (n > 0) {
		cfg_free(&c);
		return EX_CONFIG;
	}
	check(1, "configuration: S3 leg %s, database leg %s",
	    c.bucket ? "on" : "off", c.db_on ? "on" : "off");
	doctor_tree(&c);
	doctor_outbox(&c);
	doctor_s3(&c);
	doctor_db(&c);
	cfg_free(&c);
	return doctor_failed ? 1 : 0;
}

/* ---- verify -------------------------------------------------------------- */

/* A local file to compare. */
struct vfile {
	char *path;		/* relative to the uploads root */
	char *job, *rest, *key;
	int64_t size;
	char sha256[65];
	int checked;		/* the database row was found */
};

struct vwalk {
	const struct cfg *c;
	const char *job;	/* only this job, or NULL */
	struct vfile *v;
	size_t n, cap;
};

static int
verify_ignore(void *arg, const char *name)
{
	struct vwalk *w = arg;

	return watch_ignored(w->c->ignore, name);
}

static int
verify_visit(void *arg, enum tree_what what, const char *rel,
    const struct stat *st)
{
	struct vwalk *w = arg;
	const char *rest;
	size_t jl;

	if (what == TREE_DIR) {
		if (strchr(rel, '/') == NULL)
			return uuid_valid(rel) && (w->job == NULL ||
			    strcasecmp(rel, w->job) == 0);
		return 1;
	}
	if (what != TREE_FILE ||
	    keymap_classify(rel, &jl, &rest) != KEYMAP_DOCUMENT)
		return 0;
	if (w->n == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 64;
		w->v = xrealloc(w->v, w->cap * sizeof(*w->v));
	}
	memset(&w->v[w->n], 0, sizeof(w->v[w->n]));
	w->v[w->n].path = xstrdup(rel);
	w->v[w->n].job = xstrndup(rel, jl);
	w->v[w->n].rest = xstrdup(rest);
	w->v[w->n].key = keymap_s3_key(w->v[w->n].job, rest);
	w->v[w->n].size = (int64_t)st->st_size;
	w->n++;
	return 0;
}

static int
sha256_of(int rootfd, const char *rel, char *hex)
{
	struct stat st;
	struct err e;
	EVP_MD_CTX *ctx;
	unsigned char buf[65536], md[32];
	ssize_t n;
	int fd = tree_open_file(rootfd, rel, &st, &e);

	if (fd < 0)
		return -1;
	ctx = EVP_MD_CTX_new();
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		EVP_DigestUpdate(ctx, buf, (size_t)n);
	EVP_DigestFinal_ex(ctx, md, NULL);
	EVP_MD_CTX_free(ctx);
	close(fd);
	if (n < 0)
		return -1;
	hex_encode(md, sizeof(md), hex);
	return 0;
}

static int differences, only_remote;

static void
difference(struct outbox *ob, const struct vfile *f, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
difference(struct outbox *ob, const struct vfile *f, const char *fmt, ...)
{
	sqlite3_stmt *s = NULL;
	va_list ap;
	int pending = 0;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	/* Say so when outboxd simply has not got to it yet. */
	if (ob != NULL && sqlite3_prepare_v2(outbox_db(ob), "SELECT count(*) "
	    "FROM entries WHERE path = ?1 AND (s3_state IN ('pending', "
	    "'in_flight', 'failed') OR db_state IN ('pending', 'in_flight', "
	    "'failed'))", -1, &s, NULL) == SQLITE_OK) {
		sqlite3_bind_text(s, 1, f->path, -1, SQLITE_STATIC);
		if (sqlite3_step(s) == SQLITE_ROW)
			pending = sqlite3_column_int(s, 0) > 0;
	}
	sqlite3_finalize(s);
	printf("%s\n", pending ? " (not yet done in the outbox: see outboxctl "
	    "list)" : "");
	differences++;
}

static void
verify_s3(const struct cfg *c, struct vfile *v, size_t n, struct outbox *ob)
{
	struct s3_req *reqs;
	struct s3 *s;
	struct err e = {0};
	size_t next = 0, done = 0;

	s = s3_new(c, &e);
	if (s == NULL) {
		printf("cannot check S3: %s\n", e.msg);
		differences++;
		return;
	}
	reqs = xcalloc(n ? n : 1, sizeof(*reqs));
	while (done < n) {
		struct s3_req *r;

		while (next < n && s3_running(s) < 16) {
			reqs[next].method = "HEAD";
			reqs[next].key = v[next].key;
			reqs[next].fd = -1;
			reqs[next].user = &v[next];
			if (s3_start(s, &reqs[next]) < 0) {
				difference(ob, &v[next], "cannot check %s in S3: %s",
				    v[next].key, reqs[next].err.msg);
				done++;
			}
			next++;
		}
		s3_wait(s, 1000, -1);
		while ((r = s3_done(s)) != NULL) {
			struct vfile *f = r->user;

			s3_req_clear(r);
			done++;
			if (r->status == 404)
				difference(ob, f, "missing in S3: %s", f->key);
			else if (r->err.cls != ERR_NONE)
				difference(ob, f, "cannot check %s in S3: %s",
				    f->key, r->err.msg);
			else if (r->content_length != f->size ||
			    (r->meta_sha256[0] && strcmp(r->meta_sha256,
			    f->sha256) != 0))
				difference(ob, f, "differs in S3: %s (S3 has %lld "
				    "bytes, sha256 %.12s; the file has %lld, %.12s)",
				    f->key, (long long)r->content_length,
				    r->meta_sha256[0] ? r->meta_sha256 : "unknown",
				    (long long)f->size, f->sha256);
			buf_free(&r->body);
		}
	}
	free(reqs);
	s3_free(s);
}

static void
verify_db(struct cfg *c, struct vfile *v, size_t n, const char *job,
    struct outbox *ob)
{
	struct strmap *idx = strmap_new();
	struct pg *p;
	struct err e = {0};
	PGresult *r;
	char *sql;
	size_t i;
	int k;

	c->db_migrate = 0;
	p = pg_new(c);
	if (pg_ensure(p, &e) < 0) {
		printf("cannot check the database: %s\n", e.msg);
		differences++;
		goto out;
	}
	for (i = 0; i < n; i++) {
		char *key = xasprintf("%s/%s", v[i].job, v[i].rest);
		char *lower = key;

		for (; *lower && *lower != '/'; lower++)
			*lower = (char)tolower((unsigned char)*lower);
		strmap_put(idx, key, &v[i]);
		free(key);
	}
	sql = xasprintf("SELECT job_id::text || '/' || file_path, file_size, "
	    "coalesce(sha256, '') FROM \"%s\".documents WHERE $1::uuid IS NULL "
	    "OR job_id = $1::uuid", c->db_schema);
	{
		const char *params[1] = { job };

		r = PQexecParams((PGconn *)pg_conn(p), sql, 1, NULL, params, NULL,
		    NULL, 0);
	}
	free(sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		printf("cannot check the database: %s",
		    PQresultErrorMessage(r));
		differences++;
		PQclear(r);
		goto out;
	}
	for (k = 0; k < PQntuples(r); k++) {
		struct vfile *f = strmap_get(idx, PQgetvalue(r, k, 0));

		if (f == NULL) {
			printf("only in the database: %s (deleted locally? "
			    "deletions are not propagated)\n", PQgetvalue(r, k, 0));
			only_remote++;
			continue;
		}
		f->checked = 1;
		if (strtoll(PQgetvalue(r, k, 1), NULL, 10) != f->size ||
		    strcmp(PQgetvalue(r, k, 2), f->sha256) != 0)
			difference(ob, f, "differs in the database: %s (%s bytes, "
			    "sha256 %.12s; the file has %lld, %.12s)", f->path,
			    PQgetvalue(r, k, 1), PQgetvalue(r, k, 2),
			    (long long)f->size, f->sha256);
	}
	PQclear(r);
	for (i = 0; i < n; i++)
		if (!v[i].checked)
			difference(ob, &v[i], "missing in the database: %s",
			    v[i].path);
out:
	strmap_free(idx);
	pg_free(p);
}

static int
cmd_verify(struct cfg *c, int argc, char **argv)
{
	struct vwalk w = { c, NULL, NULL, 0, 0 };
	struct outbox *ob = NULL;
	struct err e = {0};
	size_t i;
	int fd;

	if (argc == 3 && strcmp(argv[1], "--job") == 0 && uuid_valid(argv[2]))
		w.job = argv[2];
	else if (argc != 1) {
		usage(stderr);
		return EX_USAGE;
	}
	if (c->bucket == NULL && !c->db_on) {
		fprintf(stderr, "outboxctl: configuration: neither S3_BUCKET nor "
		    "DATABASE_URL is set: nothing to verify against\n");
		return EX_CONFIG;
	}
	fd = open(c->watch_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || tree_walk(fd, "", verify_ignore, verify_visit, &w, &e) < 0) {
		fprintf(stderr, "outboxctl: %s: %s\n", c->watch_dir, fd < 0 ?
		    strerror(errno) : e.msg);
		if (fd >= 0)
			close(fd);
		return EX_NOINPUT;
	}
	for (i = 0; i < w.n; i++)
		if (sha256_of(fd, w.v[i].path, w.v[i].sha256) < 0)
			w.v[i].sha256[0] = '\0';
	close(fd);
	if (access(c->state_db, F_OK) == 0)
		ob = outbox_open(c->state_db, 1, &e);
	if (c->bucket != NULL)
		verify_s3(c, w.v, w.n, ob);
	if (c->db_on)
		verify_db(c, w.v, w.n, w.job, ob);
	printf("verified %zu file%s against %s%s%s: %d difference%s%s\n", w.n,
	    w.n == 1 ? "" : "s", c->bucket ? "S3" : "",
	    c->bucket && c->db_on ? " and " : "", c->db_on ? "the database" : "",
	    differences, differences == 1 ? "" : "s",
	    only_remote ? " (and rows only in the database, see above)" : "");
	outbox_close(ob);
	for (i = 0; i < w.n; i++) {
		free(w.v[i].path);
		free(w.v[i].job);
		free(w.v[i].rest);
		free(w.v[i].key);
	}
	free(w.v);
	return differences ? 1 : 0;
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
	if (strcmp(verb, "doctor") == 0 && argc - argi == 1) {
		xmlInitParser();
		curl_global_init(CURL_GLOBAL_DEFAULT);
		rc = cmd_doctor();
		curl_global_cleanup();
		return rc;
	}
	/* Only rescan and verify read the uploads tree; others need not. */
	if (config(&c, strcmp(verb, "rescan") == 0 ||
	    strcmp(verb, "verify") == 0) < 0)
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
	else if (strcmp(verb, "verify") == 0)
		rc = cmd_verify(&c, argc, argv);
	else {
		fprintf(stderr, "outboxctl: unknown command: %s\n", verb);
		usage(stderr);
		rc = EX_USAGE;
	}
	cfg_free(&c);
	curl_global_cleanup();
	return rc;
}
