/*
 * doctor.c - outboxctl doctor: checks the configuration, the uploads root
 * and inotify limits, the outbox, S3 (a probe object, removed again) and the
 * database (reachable, schema, privileges); one line per check, exit 0 when
 * all pass.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sysexits.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base/util.h"
#include "config/cfg.h"
#include "store/outbox.h"
#include "watchers/tree.h"
#include "watchers/watch.h"
#include "agent/db/pg.h"
#include "agent/s3/s3.h"
#include "agent/ctl/ctl.h"

static int doctor_failed;

static void
check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
check(int ok, const char *fmt, ...)
{
	char line[4096];
	va_list ap;

	va_start(ap, fmt);
	if (vsnprintf(line, sizeof(line), fmt, ap) >= (int)sizeof(line))
		utf8_cut_tail(line);
	va_end(ap);
	/* Lines quote paths and servers' messages: escaped. */
	printf("%s %s\n", ok ? "ok  " : "FAIL", ctl_esc(line));
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

/* What doctor_tree's walk carries: the ignore globs and its counts. */
struct dircount {
	char *const *ignore;	/* OUTBOXD_IGNORE globs, NULL ended */
	long dirs, files;	/* directories (the root too), files */
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
	const struct dircount *d = arg;

	return watch_ignored(d->ignore, name);
}

static void
doctor_tree(const struct cfg *c)
{
	struct dircount d = { c->ignore, 1, 0 };
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

/* A line that is not a check: what the program cannot find out itself. */
static void
note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
note(const char *fmt, ...)
{
	va_list ap;

	printf("note ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

/* Is name one of the comma-separated schemas of list (pgrst.db_schemas:
 * spaces around names, maybe double-quoted)? */
static int
schema_listed(const char *list, const char *name)
{
	size_t n = strlen(name);
	const char *p = list;

	while (*p != '\0') {
		const char *end;
		size_t len;

		while (*p == ' ' || *p == ',')
			p++;
		end = p + strcspn(p, ",");
		len = (size_t)(end - p);
		while (len > 0 && p[len - 1] == ' ')
			len--;
		if (len >= 2 && p[0] == '"' && p[len - 1] == '"') {
			p++;
			len -= 2;
		}
		if (len == n && strncmp(p, name, n) == 0)
			return 1;
		p = end;
	}
	return 0;
}

/*
 * Supabase's Data API: where its roles exist, their grants on outboxd's
 * objects, and whether the schema is exposed (known only where PostgREST
 * keeps its configuration in the database, as authenticator's settings).
 */
static void
doctor_api(struct pg *p, const struct cfg *c)
{
	static const char step[] = "on Supabase, Dashboard: Project Settings "
	    "> Data API (formerly API) > Exposed schemas: add";
	struct buf probs = {0}, exposed = {0};
	struct err e = {0};
	int n = pg_api_roles(p, &e);

	if (n <= 0) {
		if (n < 0)
			check(0, "database: Data API roles: %s", e.msg);
		goto out;	/* plain PostgreSQL: no API to check */
	}
	n = pg_check_api_grants(p, &probs, &e);
	if (n < 0)
		check(0, "database: Data API grants: %s", e.msg);
	else if (n > 0)
		check(0, "database: Data API grants: %s: run outboxctl migrate, "
		    "or revoke them (migration 005_supabase grants exactly "
		    "what the app needs)", probs.data);
	else
		check(1, "database: Data API grants: authenticated reads its "
		    "own rows, service_role reads and writes, anon nothing, "
		    "schema_migrations and applied_events closed");
	n = pg_exposed_schemas(p, &exposed, &e);
	if (n < 0)
		check(0, "database: %s", e.msg);
	else if (n == 0)
		note("database: the database does not say whether schema %s "
		    "is exposed to the Data API (authenticator has no "
		    "pgrst.db_schemas): %s %s, and save", c->db_schema, step,
		    c->db_schema);
	else if (schema_listed(exposed.data, c->db_schema))
		check(1, "database: schema %s is exposed to the Data API "
		    "(authenticator's pgrst.db_schemas)", c->db_schema);
	else
		check(0, "database: schema %s is not exposed to the Data API "
		    "(authenticator's pgrst.db_schemas is \"%s\"): %s %s",
		    c->db_schema, exposed.data, step, c->db_schema);
out:
	buf_free(&probs);
	buf_free(&exposed);
}

/* Constraints migrate added NOT VALID because existing rows break them. */
static void
doctor_constraints(struct pg *p)
{
	struct buf list = {0};
	struct err e = {0};
	int n = pg_unvalidated_constraints(p, &list, &e);

	if (n < 0)
		check(0, "database: constraints: %s", e.msg);
	else if (n > 0)
		check(0, "database: constraints not validated (rows made before "
		    "outboxd break them; new rows are checked): %s: fix those "
		    "rows, then ALTER TABLE ... VALIDATE CONSTRAINT", list.data);
	buf_free(&list);
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
		doctor_constraints(p);
		doctor_api(p, c);
	}
out:
	buf_free(&out);
	buf_free(&missing_privs);
	pg_free(p);
}

int
ctl_cmd_doctor(void)
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
