/*
 * verify.c - outboxctl verify: walks the uploads tree, hashes each document
 * and compares it with S3 (HEAD, 16 at a time) and the database's documents
 * table (size, SHA-256, and the ETag the row records against the one S3
 * answers); exit 1 on any difference, saying when the outbox simply has
 * not got to a file yet.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <openssl/evp.h>
#include <sqlite3.h>

#include "base/keymap.h"
#include "base/strmap.h"
#include "base/util.h"
#include "config/cfg.h"
#include "store/outbox.h"
#include "watchers/tree.h"
#include "watchers/watch.h"
#include "agent/db/pg.h"
#include "agent/s3/s3.h"
#include "agent/ctl/ctl.h"

/* A local file to compare. */
struct vfile {
	char *path;		/* relative to the uploads root */
	char *job, *rest, *key;
	int64_t size;
	char sha256[65];
	char s3_etag[128];	/* what S3's HEAD answered, "" unknown */
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
			else
				snprintf(f->s3_etag, sizeof(f->s3_etag), "%s",
				    r->etag);
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
	    "coalesce(sha256, ''), coalesce(etag, '') FROM \"%s\".documents "
	    "WHERE $1::uuid IS NULL "
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
		else if (f->s3_etag[0] != '\0' && strcmp(PQgetvalue(r, k, 3),
		    f->s3_etag) != 0)
			difference(ob, f, "the database's ETag for %s is %s; S3 "
			    "has %s", f->path, PQgetvalue(r, k, 3)[0] ?
			    PQgetvalue(r, k, 3) : "missing", f->s3_etag);
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

int
ctl_cmd_verify(struct cfg *c, int argc, char **argv)
{
	struct vwalk w = { c, NULL, NULL, 0, 0 };
	struct outbox *ob = NULL;
	struct err e = {0};
	size_t i;
	int fd;

	if (argc == 3 && strcmp(argv[1], "--job") == 0 && uuid_valid(argv[2]))
		w.job = argv[2];
	else if (argc != 1) {
		ctl_usage(stderr);
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
