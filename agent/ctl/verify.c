/*
 * verify.c - outboxctl verify [--repair] [--job ID]: walks the uploads
 * tree, hashes each document and compares it with S3 (HEAD in checksum
 * mode, 16 at a time: size, the full-object x-amz-checksum-sha256 S3
 * keeps, x-amz-meta-sha256, or the ETag outboxd recorded where the object
 * has neither: s3_head_matches) and the database's documents table (size, SHA-256, and
 * the ETag the row records against the one S3 answers); exit 1 on any
 * difference, saying when the outbox simply has not got to a file yet.
 *
 * With --repair, each file whose copies differ while its newest outbox
 * entry is settled and still this version gets a repair entry
 * (outbox_journal_repair): it goes through the normal legs, so it is
 * retried, recorded and counted like any other, and its database leg adds
 * no user activity. The local disk is the truth: remote copies without a
 * local file are listed, never deleted (objects by a ListObjectsV2 of
 * jobs/, streamed a page at a time; they are not counted as differences).
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

/* What a check of one store found for a file. */
enum vstate { V_UNCHECKED, V_OK, V_BAD, V_UNKNOWN };

/* A local file to compare. */
struct vfile {
	char *path;		/* relative to the uploads root */
	char *job, *rest, *key;
	int64_t size, mtime_ns, inode;	/* as the walk saw it */
	char sha256[65];
	char s3_etag[128];	/* what S3's HEAD answered, "" unknown */
	char known_etag[128];	/* the ETag the outbox recorded, "" none */
	int checked;		/* the database row was found */
	enum vstate s3, db;	/* what each store's check found */
	char why[256];		/* the differences, short, for the repair */
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
	w->v[w->n].mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 +
	    st->st_mtim.tv_nsec;
	w->v[w->n].inode = (int64_t)st->st_ino;
	w->n++;
	return 0;
}

/* The SHA-256 of f's bytes, when the file is still the version the walk
 * saw (a rewrite since would pair its bytes with the old stat). */
static int
sha256_of(int rootfd, const struct vfile *f, char *hex)
{
	const char *rel = f->path;
	struct stat st, now;
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
	if (n >= 0 && (fstat(fd, &now) < 0 || now.st_size != f->size ||
	    (int64_t)now.st_ino != f->inode || (int64_t)now.st_mtim.tv_sec *
	    1000000000 + now.st_mtim.tv_nsec != f->mtime_ns))
		n = -1;
	close(fd);
	if (n < 0)
		return -1;
	hex_encode(md, sizeof(md), hex);
	return 0;
}

static int differences, only_remote;
static long only_s3;	/* objects with no local file */

/* A name from the uploads tree as it may be printed: in outboxd's one
 * escape form (ctl_esc, buf_escape in util.h), so a hostile name cannot
 * forge output lines. The slot is kept for the callers; ctl_esc's texts
 * stay valid for 15 more calls. */
static const char *
shown(const char *s, int slot)
{
	(void)slot;
	return ctl_esc(s);
}

/* Notes what a store's check found, for --repair's reason. */
static void
mark(struct vfile *f, enum vstate *leg, enum vstate st, const char *what)
{
	size_t n = strlen(f->why);

	if (st == V_BAD || *leg == V_UNCHECKED || *leg == V_OK)
		*leg = st;
	if (st == V_BAD)
		utf8_snprintf(f->why + n, sizeof(f->why) - n, "%s%s",
		    n ? "; " : "", what);
}

static void
difference(struct outbox *ob, const struct vfile *f, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
difference(struct outbox *ob, const struct vfile *f, const char *fmt, ...)
{
	sqlite3_stmt *s = NULL;
	char line[4096];
	va_list ap;
	int pending = 0;

	va_start(ap, fmt);
	if (vsnprintf(line, sizeof(line), fmt, ap) >= (int)sizeof(line))
		utf8_cut_tail(line);
	va_end(ap);
	printf("%s", line);	/* callers escape what they quote (shown) */
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

/* Judges a HEAD's answer for f: S3 holds the file's version when the size
 * matches and so do the checksum S3 keeps and x-amz-meta-sha256 where it
 * returns them, or, for an object with neither, the ETag outboxd recorded
 * for it (s3_head_matches). */
static void
judge_s3(struct outbox *ob, struct vfile *f, const struct s3_req *r)
{
	const char *k = shown(f->key, 0);

	if (r->status == 404) {
		mark(f, &f->s3, V_BAD, "missing in S3");
		difference(ob, f, "missing in S3: %s", k);
	} else if (r->err.cls != ERR_NONE) {
		mark(f, &f->s3, V_UNKNOWN, NULL);
		difference(ob, f, "cannot check %s in S3: %s", k,
		    ctl_esc(r->err.msg));
	} else if (!s3_head_matches(r, f->size, f->sha256, f->known_etag)) {
		char mine[45];

		s3_checksum_b64(f->sha256, mine);
		mark(f, &f->s3, V_BAD, "differs in S3");
		difference(ob, f, "differs in S3: %s (S3 has %lld bytes, sha256 "
		    "%.12s, checksum %s, ETag %s; the file has %lld, %.12s, "
		    "checksum %s)", k, (long long)r->content_length,
		    r->meta_sha256[0] ? r->meta_sha256 : "unknown",
		    r->checksum[0] ? ctl_esc(r->checksum) : "none",
		    ctl_esc(r->etag), (long long)f->size, f->sha256, mine);
	} else {
		mark(f, &f->s3, V_OK, NULL);
		snprintf(f->s3_etag, sizeof(f->s3_etag), "%s", r->etag);
	}
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
		printf("cannot check S3: %s\n", ctl_esc(e.msg));
		differences++;
		for (next = 0; next < n; next++)
			mark(&v[next], &v[next].s3, V_UNKNOWN, NULL);
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
				mark(&v[next], &v[next].s3, V_UNKNOWN, NULL);
				difference(ob, &v[next], "cannot check %s in S3: "
				    "%s", shown(v[next].key, 0),
				    ctl_esc(reqs[next].err.msg));
				done++;
			}
			next++;
		}
		s3_wait(s, 1000, -1);
		while ((r = s3_done(s)) != NULL) {
			s3_req_clear(r);
			done++;
			judge_s3(ob, r->user, r);
			buf_free(&r->body);
		}
	}
	free(reqs);
	s3_free(s);
}

/* Compares one documents row (columns: path, size, sha256, etag, s3_key)
 * with f. */
static void
judge_row(struct outbox *ob, struct vfile *f, PGresult *r, int k)
{
	const char *etag = PQgetvalue(r, k, 3);

	f->checked = 1;
	if (strtoll(PQgetvalue(r, k, 1), NULL, 10) != f->size ||
	    strcmp(PQgetvalue(r, k, 2), f->sha256) != 0) {
		mark(f, &f->db, V_BAD, "differs in the database");
		difference(ob, f, "differs in the database: %s (%s bytes, "
		    "sha256 %.12s; the file has %lld, %.12s)", shown(f->path, 0),
		    PQgetvalue(r, k, 1), PQgetvalue(r, k, 2),
		    (long long)f->size, f->sha256);
	} else if (f->s3_etag[0] != '\0' && (strcmp(etag, f->s3_etag) != 0 ||
	    strcmp(PQgetvalue(r, k, 4), f->key) != 0)) {
		mark(f, &f->db, V_BAD, "the database's ETag or key differs");
		difference(ob, f, "the database's ETag for %s is %s; S3 has %s",
		    shown(f->path, 0), etag[0] ? ctl_esc(etag) : "missing",
		    f->s3_etag);
	} else {
		mark(f, &f->db, V_OK, NULL);
	}
}

static void
verify_db(struct cfg *c, struct vfile *v, size_t n, const char *job,
    struct outbox *ob, struct strmap *db_only)
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
		printf("cannot check the database: %s\n", ctl_esc(e.msg));
		differences++;
		for (i = 0; i < n; i++)
			mark(&v[i], &v[i].db, V_UNKNOWN, NULL);
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
	    "coalesce(sha256, ''), coalesce(etag, ''), coalesce(s3_key, '') "
	    "FROM \"%s\".documents WHERE $1::uuid IS NULL "
	    "OR job_id = $1::uuid", c->db_schema);
	{
		const char *params[1] = { job };

		r = PQexecParams((PGconn *)pg_conn(p), sql, 1, NULL, params, NULL,
		    NULL, 0);
	}
	free(sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		printf("cannot check the database: %s\n",
		    ctl_esc(PQresultErrorMessage(r)));
		differences++;
		PQclear(r);
		for (i = 0; i < n; i++)
			mark(&v[i], &v[i].db, V_UNKNOWN, NULL);
		goto out;
	}
	for (k = 0; k < PQntuples(r); k++) {
		struct vfile *f = strmap_get(idx, PQgetvalue(r, k, 0));

		if (f == NULL) {
			printf("only in the database: %s (deleted locally? "
			    "deletions are not propagated)\n",
			    shown(PQgetvalue(r, k, 0), 0));
			only_remote++;
			strmap_put(db_only, PQgetvalue(r, k, 0), db_only);
			continue;
		}
		judge_row(ob, f, r, k);
	}
	PQclear(r);
	for (i = 0; i < n; i++)
		if (!v[i].checked) {
			mark(&v[i], &v[i].db, V_BAD, "missing in the database");
			difference(ob, &v[i], "missing in the database: %s",
			    shown(v[i].path, 0));
		}
out:
	strmap_free(idx);
	pg_free(p);
}

/* What the listing compares each key with. */
struct vlist {
	struct strmap *local;	/* the walked files' keys */
	struct strmap *db_only;	/* "<job lower-case>/<rest>" of rows with no
				 * local file */
};

/* One listed key: said when no local file maps to it. The key is a
 * stranger's: it is only compared and printed escaped. */
static void
list_key(void *arg, const char *key, size_t len, int raw)
{
	struct vlist *l = arg;
	char *rel, *p;
	int row = 0;

	(void)len;
	if (!raw && strmap_get(l->local, key) != NULL)
		return;
	if (!raw && (rel = keymap_path_of_key(key)) != NULL) {
		for (p = rel; *p != '\0' && *p != '/'; p++)
			*p = (char)tolower((unsigned char)*p);
		row = strmap_get(l->db_only, rel) != NULL;
		free(rel);
	}
	if (raw)
		printf("in S3 only: %s (as listed: its %%-escapes do not "
		    "decode; kept; deletions are not propagated)\n",
		    shown(key, 0));
	else
		printf("in S3 only: %s (%skept; deletions are not "
		    "propagated)\n", shown(key, 0), row ? "its row is listed "
		    "above; " : "");
	only_s3++;
}

/*
 * Lists the bucket under jobs/ (jobs/<job>/ with --job) and names every
 * object no local file maps to. Such an object is kept (the local disk
 * is the truth, and a local deletion is not propagated), so it is not a
 * difference: verify's exit status does not count it. A listing that
 * fails is one, as a HEAD that fails is.
 */
static void
verify_list(const struct cfg *c, const struct vwalk *w,
    struct strmap *db_only)
{
	struct vlist l = { strmap_new(), db_only };
	struct err e = {0};
	struct s3 *s;
	char *prefix;
	size_t i;

	for (i = 0; i < w->n; i++)
		strmap_put(l.local, w->v[i].key, &w->v[i]);
	/* The job's directory spells the keys: use its case when walked. */
	prefix = w->job == NULL ? xstrdup("jobs/") : xasprintf("jobs/%s/",
	    w->n > 0 ? w->v[0].job : w->job);
	s = s3_new(c, &e);
	if (s == NULL || s3_list(s, prefix, list_key, &l, &e) < 0) {
		/* AccessDenied on the listing alone: the role lacks
		 * s3:ListBucket (S3 then also answers 403, not 404, for a
		 * missing object, so outboxd needs it as well). */
		printf("cannot list S3 under %s: %s%s\n", shown(prefix, 0),
		    ctl_esc(e.msg), e.cls == ERR_DENIED || e.cls ==
		    ERR_REFUSED ? " (the credentials need s3:ListBucket on "
		    "the bucket)" : "");
		differences++;
	}
	s3_free(s);
	free(prefix);
	strmap_free(l.local);
}

/* The ETag the outbox recorded for each file's newest version, so an
 * object without x-amz-meta-sha256 can still be judged. */
static void
known_etags(struct outbox *ob, struct vfile *v, size_t n)
{
	struct outbox_entry en;
	struct err e = {0};
	size_t i;

	for (i = 0; ob != NULL && i < n; i++)
		if (outbox_newest(ob, v[i].path, &en, &e) > 0) {
			if (en.s3_etag != NULL)
				snprintf(v[i].known_etag, sizeof(v[i].known_etag),
				    "%s", en.s3_etag);
			outbox_entry_free(&en);
		}
}

/* Counts of --repair's outcome. */
struct vrepair {
	int journaled;		/* repair entries made */
	int left;		/* differences that got none */
};

/* Why f cannot be repaired now (NULL: it can), given its newest entry. */
static const char *
not_repairable(const struct cfg *c, const struct vfile *f,
    const struct outbox_entry *en)
{
	int s3_open = c->bucket != NULL && (en->s3_state == OUTBOX_PENDING ||
	    en->s3_state == OUTBOX_IN_FLIGHT);
	int db_open = c->db_on && (en->db_state == OUTBOX_PENDING ||
	    en->db_state == OUTBOX_IN_FLIGHT);

	if (f->s3 == V_UNKNOWN || f->db == V_UNKNOWN)
		return "a store could not be checked; run verify again";
	if (f->sha256[0] == '\0')
		return "the file could not be read, or it changed while "
		    "it was read";
	if (en->s3_state == OUTBOX_FAILED || en->db_state == OUTBOX_FAILED)
		return "its entry failed: see outboxctl list --state failed, "
		    "then outboxctl retry";
	if (s3_open || db_open)
		return "the outbox is still working on it";
	if (en->size != f->size || en->mtime_ns != f->mtime_ns ||
	    en->inode != f->inode)
		return "it changed since it was journaled: outboxd journals it "
		    "(outboxctl rescan)";
	return NULL;
}

/* Journals rp in its own transaction: 1, 0 (nothing to repair), -1. */
static int
journal(struct outbox *ob, const struct outbox_repair *rp, int64_t *id,
    struct err *e)
{
	int rc = outbox_begin(ob, e);

	if (rc == 0 && (rc = outbox_journal_repair(ob, rp, id, e)) >= 0 &&
	    outbox_commit(ob, e) < 0)
		rc = -1;
	if (rc < 0)
		outbox_rollback(ob);
	return rc;
}

/* f's path has no entry: never journaled, or pruned by retention (its
 * files row remains); a repair is made from that row. */
static void
repair_pruned_one(struct outbox *ob, struct vfile *f, struct vrepair *out)
{
	struct outbox_repair rp = { 0, f->sha256, f->s3 == V_OK ? f->s3_etag :
	    NULL, f->why, f->path, f->size, f->mtime_ns, f->inode };
	struct err e = {0};
	int64_t id = 0;
	int rc;

	if (f->s3 == V_UNKNOWN || f->db == V_UNKNOWN || f->sha256[0] == '\0')
		rc = -2;
	else
		rc = journal(ob, &rp, &id, &e);
	if (rc == 1) {
		printf("repair journaled: %s (entry %lld; its entries were "
		    "pruned): %s\n", shown(f->path, 0), (long long)id, f->why);
		out->journaled++;
		return;
	}
	printf("not repaired: %s: %s\n", shown(f->path, 0), rc == -1 ?
	    ctl_esc(e.msg) : rc == -2 ? "a store could not be checked; run "
	    "verify again" : "not journaled yet, or changed since: outboxd "
	    "journals it (outboxctl rescan)");
	out->left++;
}

/* Journals a repair for f, or says why not. */
static void
repair_one(const struct cfg *c, struct outbox *ob, struct vfile *f,
    struct vrepair *out)
{
	struct outbox_entry en;
	struct outbox_repair rp;
	struct err e = {0};
	const char *why;
	int64_t id = 0;
	int rc;

	rc = outbox_newest(ob, f->path, &en, &e);
	if (rc == 0) {
		repair_pruned_one(ob, f, out);
		return;
	}
	if (rc < 0) {
		printf("not repaired: %s: %s\n", shown(f->path, 0), ctl_esc(e.msg));
		out->left++;
		return;
	}
	if ((why = not_repairable(c, f, &en)) != NULL) {
		printf("not repaired: %s: %s\n", shown(f->path, 0), why);
		out->left++;
		outbox_entry_free(&en);
		return;
	}
	rp = (struct outbox_repair){ en.id, f->sha256,
	    f->s3 == V_OK ? f->s3_etag : NULL, f->why, NULL, 0, 0, 0 };
	rc = journal(ob, &rp, &id, &e);
	if (rc == 1) {
		printf("repair journaled: %s (entry %lld, of entry %lld): %s\n",
		    shown(f->path, 0), (long long)id, (long long)en.id, f->why);
		out->journaled++;
	} else {
		printf("not repaired: %s: %s\n", shown(f->path, 0), rc < 0 ?
		    ctl_esc(e.msg) : "a newer version was journaled meanwhile");
		out->left++;
	}
	outbox_entry_free(&en);
}

/* --repair: a repair entry for every file a store lost or altered. */
static void
verify_repair(const struct cfg *c, struct vfile *v, size_t n,
    struct vrepair *out)
{
	struct outbox *ob = ctl_open_outbox(c, 0);
	size_t i;

	if (ob == NULL) {
		for (i = 0; i < n; i++)
			out->left += v[i].s3 >= V_BAD || v[i].db >= V_BAD;
		return;
	}
	for (i = 0; i < n; i++)
		if (v[i].s3 == V_BAD || v[i].db == V_BAD)
			repair_one(c, ob, &v[i], out);
		else if (v[i].s3 == V_UNKNOWN || v[i].db == V_UNKNOWN)
			out->left++;	/* said above: cannot check */
	outbox_close(ob);
}

/* Parses verify's arguments; 0, or -1 after the usage text. */
static int
verify_args(int argc, char **argv, const char **job, int *repair)
{
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--repair") == 0)
			*repair = 1;
		else if (strcmp(argv[i], "--job") == 0 && i + 1 < argc &&
		    uuid_valid(argv[i + 1]))
			*job = argv[++i];
		else {
			ctl_usage(stderr);
			return -1;
		}
	}
	return 0;
}

static void
vfiles_free(struct vwalk *w)
{
	size_t i;

	for (i = 0; i < w->n; i++) {
		free(w->v[i].path);
		free(w->v[i].job);
		free(w->v[i].rest);
		free(w->v[i].key);
	}
	free(w->v);
}

int
ctl_cmd_verify(struct cfg *c, int argc, char **argv)
{
	struct vwalk w = { c, NULL, NULL, 0, 0 };
	struct vrepair rep = { 0, 0 };
	struct outbox *ob = NULL;
	struct strmap *db_only = strmap_new();
	struct err e = {0};
	size_t i;
	int fd, repair = 0;

	if (verify_args(argc, argv, &w.job, &repair) < 0) {
		strmap_free(db_only);
		return EX_USAGE;
	}
	if (c->bucket == NULL && !c->db_on) {
		fprintf(stderr, "outboxctl: configuration: neither S3_BUCKET nor "
		    "DATABASE_URL is set: nothing to verify against\n");
		strmap_free(db_only);
		return EX_CONFIG;
	}
	if (repair && access(c->state_db, F_OK) < 0) {
		fprintf(stderr, "outboxctl: no outbox at %s (OUTBOXD_STATE_DB): "
		    "repairs are journaled there\n", c->state_db);
		strmap_free(db_only);
		return EX_NOINPUT;
	}
	fd = open(c->watch_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || tree_walk(fd, "", verify_ignore, verify_visit, &w, &e) < 0) {
		fprintf(stderr, "outboxctl: %s: %s\n", ctl_esc(c->watch_dir),
		    ctl_esc(fd < 0 ? strerror(errno) : e.msg));
		if (fd >= 0)
			close(fd);
		vfiles_free(&w);
		strmap_free(db_only);
		return EX_NOINPUT;
	}
	for (i = 0; i < w.n; i++)
		if (sha256_of(fd, &w.v[i], w.v[i].sha256) < 0)
			w.v[i].sha256[0] = '\0';
	close(fd);
	if (access(c->state_db, F_OK) == 0)
		ob = outbox_open(c->state_db, 1, &e);
	known_etags(ob, w.v, w.n);
	if (c->bucket != NULL)
		verify_s3(c, w.v, w.n, ob);
	if (c->db_on)
		verify_db(c, w.v, w.n, w.job, ob, db_only);
	outbox_close(ob);
	if (c->bucket != NULL)
		verify_list(c, &w, db_only);
	strmap_free(db_only);
	printf("verified %zu file%s against %s%s%s: %d difference%s%s", w.n,
	    w.n == 1 ? "" : "s", c->bucket ? "S3" : "",
	    c->bucket && c->db_on ? " and " : "", c->db_on ? "the database" : "",
	    differences, differences == 1 ? "" : "s",
	    only_remote ? " (and rows only in the database, see above)" : "");
	if (only_s3)
		printf(" (and %ld object%s only in S3, kept, see above)", only_s3,
		    only_s3 == 1 ? "" : "s");
	printf("\n");
	if (repair) {
		verify_repair(c, w.v, w.n, &rep);
		printf("journaled %d repair%s%s", rep.journaled, rep.journaled == 1
		    ? "" : "s", rep.journaled ? " (outboxd sends them: see "
		    "outboxctl status)" : "");
		if (rep.left)
			printf("; %d file%s not repaired (see above)", rep.left,
			    rep.left == 1 ? "" : "s");
		printf("\n");
	}
	vfiles_free(&w);
	/* With --repair, 0 means every difference has its repair. */
	if (repair)
		return rep.left > 0 || (differences > 0 && rep.journaled == 0);
	return differences ? 1 : 0;
}
