/*
 * scrub.c - the background scrub (see scrub.h): ZFS's scrub for the
 * outbox. Once every OUTBOXD_SCRUB_INTERVAL the sync thread walks the
 * settled entries in id order, newest version of each document only,
 * and for each checks that the local file is still that version (its
 * stat; a file that changed is the watcher's to journal, one gone is
 * left alone: deletions are not propagated), HEADs its object and
 * compares its documents row (read 32 at a time in one query). What a
 * store lost or altered gets a repair entry (outbox_journal_repair, queued
 * like any outcome and written in the turn's transaction), which goes
 * through the normal legs.
 *
 * Paths whose entries retention pruned (the files row remains) are walked
 * with them, in the order of the pruned entry's id (outbox_scrub_pruned):
 * with no entry to give their SHA-256, each file is hashed (on the
 * hasher's worker, one file at a time) and judged the same way; a repair
 * is made from the files row (outbox_journal_repair with of = 0).
 *
 * It never delays new files: it checks at most OUTBOXD_SCRUB_RATE entries
 * a second, keeps few HEADs in flight, starts one only while a transfer
 * slot is free and the S3 leg is healthy, and not at all in --once. Where
 * it stands (pass, cursor, counts) is in the outbox's meta table, written
 * with each batch, so a restart continues the pass where it stopped and
 * outboxctl status and the metrics can show it.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "agent/engine/engine.h"
#include "agent/engine/hasher.h"
#include "agent/engine/scrub.h"
#include "base/log.h"
#include "watchers/tree.h"

#define SCRUB_BATCH	32		/* entries read (and rows fetched) at once */
#define CHECK_EVERY_MS	60000		/* how often an idle scrub looks if due */
#define PERSIST_MS	1000		/* the cursor is written this often */
#define HEAD_TRIES	3		/* a HEAD that fails is sent again
					   within the pass, this often at most */
#define HEAD_RETRY_MS	1000		/* after this long times the tries */

/* One entry of the batch being checked. */
struct item {
	struct s3_req req;		/* first: the client hands it back */
	struct scrub *sc;		/* the scrub it belongs to */
	struct outbox_entry en;		/* the entry, as the outbox has it */
	struct pg_row row;		/* its documents row, when read */
	int started;			/* checked or HEAD sent */
	int decided;			/* nothing more to do for it */
	int pruned;			/* a files row whose entries were
					   pruned: en.sha256 is hashed here */
	int hashing;			/* hj is the hasher's; fd is open */
	int ready;			/* hashed, or a HEAD to send again */
	int tries;			/* HEADs sent */
	int64_t retry_at;		/* monotonic: not again before */
	int fd;				/* the file being hashed */
	struct hash_job hj;		/* its digest, on a worker */
};

struct scrub {
	struct outbox_scrub st;		/* as persisted, plus this turn */
	int loaded;			/* st read from the outbox */
	struct item *items;		/* the batch, in id order */
	size_t n;
	size_t passed;			/* items[0..passed) are decided and
					   behind the cursor */
	int rows_read;			/* the batch's rows are in items */
	int64_t persisted_ms;		/* monotonic: state last queued */
	int inflight;			/* HEADs in flight */
	int hashing;			/* a pruned path's file is hashing */
	int64_t next_ms;		/* monotonic: the next check not before */
	int64_t idle_until;		/* monotonic: no pass due before */
};

/* Marks the HEADs the scrub sends (s3_req.user). */
static char scrub_tag;

static int
s3_on(const struct sync *s)
{
	return s->io.s3.h != NULL;
}

static int
db_on(const struct sync *s)
{
	return s->io.db.h != NULL && s->io.db.read_documents != NULL;
}

static void
batch_free(struct scrub *sc)
{
	size_t i;

	for (i = 0; i < sc->n; i++) {
		/* Only at the end (the hasher is gone: its jobs are done). */
		if (sc->items[i].hashing)
			close(sc->items[i].fd);
		outbox_entry_free(&sc->items[i].en);
		free(sc->items[i].row.s3_key);
		buf_free(&sc->items[i].req.body);
	}
	free(sc->items);
	sc->items = NULL;
	sc->n = 0;
	sc->passed = 0;
	sc->rows_read = 0;
	sc->hashing = 0;
}

void
scrub_free(struct sync *s)
{
	if (s->scrub == NULL)
		return;
	batch_free(s->scrub);
	free(s->scrub);
	s->scrub = NULL;
}

int
scrub_owns(const struct s3_req *r)
{
	return r->user == &scrub_tag;
}

/* Queues the state to be written with the turn's other records, and
 * shows it in the metrics. */
static void
persist(struct sync *s)
{
	const struct outbox_scrub *st = &s->scrub->st;

	metrics_set(&s->live, M_SCRUB_RUNNING, 0, st->running);
	metrics_set(&s->live, M_SCRUB_CURSOR, 0, st->cursor);
	metrics_set(&s->live, M_SCRUB_END, 0, st->end_id);
	engine_note(s, R_SCRUB, 0, NULL, NULL, NULL, 0, 0);
	s->scrub->persisted_ms = time_mono_ms();
}

/* Moves the cursor over the decided entries at the front of the batch,
 * in id order, so a restart re-checks none of them and skips none that
 * were not. Returns 1 when it moved. */
static int
advance(struct scrub *sc)
{
	size_t from = sc->passed;

	while (sc->passed < sc->n && sc->items[sc->passed].decided)
		sc->st.cursor = sc->items[sc->passed++].en.id;
	return sc->passed > from;
}

/* One entry checked (it->sc's counts and the metrics). */
static void
count_checked(struct sync *s, struct scrub *sc)
{
	sc->st.checked++;
	sc->st.total_checked++;
	metrics_add(&s->live, M_SCRUB_CHECKED, 0, 1);
}

/* 1 when a pass should start now: an interval after the last one began
 * (or after the outbox was made, so a fresh install syncs first). */
static int
pass_due(struct sync *s, struct scrub *sc)
{
	char *created = NULL;
	int64_t since;

	if (sc->st.started_at[0] != '\0')
		since = time_parse_iso8601(sc->st.started_at);
	else {
		created = outbox_meta_get(s->ob, "created_at");
		since = created ? time_parse_iso8601(created) : time_now_ms();
		free(created);
	}
	if (since < 0)
		since = 0;
	return time_now_ms() - since >= s->cfg->scrub_interval_s * 1000;
}

static void
pass_start(struct sync *s, struct scrub *sc)
{
	struct outbox_scrub *st = &sc->st;

	st->pass++;
	st->running = 1;
	st->cursor = 0;
	st->end_id = outbox_max_id(s->ob);
	st->checked = st->found = st->repaired = 0;
	time_iso8601(time_now_ms(), st->started_at, sizeof(st->started_at));
	log_info("scrub: pass %lld started: entries up to %lld, at most %d "
	    "a second", (long long)st->pass, (long long)st->end_id,
	    s->cfg->scrub_rate);
	persist(s);
}

static void
pass_end(struct sync *s, struct scrub *sc)
{
	struct outbox_scrub *st = &sc->st;

	st->running = 0;
	time_iso8601(time_now_ms(), st->finished_at, sizeof(st->finished_at));
	log_info("scrub: pass %lld finished: %lld checked, %lld difference%s "
	    "found, %lld repair%s journaled", (long long)st->pass,
	    (long long)st->checked, (long long)st->found, st->found == 1 ? "" :
	    "s", (long long)st->repaired, st->repaired == 1 ? "" : "s");
	persist(s);
}

/* Adds en (taken over) to the batch. */
static void
batch_add(struct scrub *sc, struct outbox_entry *en, int pruned)
{
	struct item *it = &sc->items[sc->n++];

	it->sc = sc;
	it->en = *en;
	it->pruned = pruned;
	it->fd = -1;
	memset(en, 0, sizeof(*en));
}

/*
 * Reads the next batch after the cursor; 0 when the pass is over. It is
 * every settled entry and every pruned path with an id in (cursor, upto],
 * merged in id order: upto is where the fuller of the two reads stopped,
 * so nothing in the range is skipped and each files row is read once.
 */
static int
batch_load(struct sync *s, struct scrub *sc)
{
	struct outbox_entry *v = NULL, *p = NULL;
	struct err e = {0};
	size_t n = 0, np = 0, i = 0, j = 0;
	int64_t upto = sc->st.end_id;

	if (outbox_scrub_batch(s->ob, sc->st.cursor, SCRUB_BATCH, &v, &n,
	    &e) < 0)
		goto fail;
	if (n == SCRUB_BATCH && v[n - 1].id < upto)
		upto = v[n - 1].id;
	if (outbox_scrub_pruned(s->ob, sc->st.cursor, upto, SCRUB_BATCH, &p,
	    &np, &e) < 0) {
		outbox_entries_free(v, n);
		goto fail;
	}
	if (np == SCRUB_BATCH)
		upto = p[np - 1].id;
	sc->items = xcalloc(n + np + 1, sizeof(*sc->items));
	/* Entries journaled after the pass began (its own repairs among
	 * them) wait for the next pass. */
	while (i < n || j < np) {
		if (j >= np || (i < n && v[i].id < p[j].id)) {
			if (v[i].id <= upto)
				batch_add(sc, &v[i], 0);
			i++;
		} else {
			batch_add(sc, &p[j++], 1);
		}
	}
	outbox_entries_free(v, n);
	outbox_entries_free(p, np);
	return sc->n > 0;
fail:
	log_err("scrub: %s", e.msg);
	sc->next_ms = time_mono_ms() + CHECK_EVERY_MS;
	return -1;
}

/* Reads the batch's documents rows in one query; 0, or -1 to try later. */
static int
rows_load(struct sync *s, struct scrub *sc)
{
	const char **jobs, **paths;
	struct pg_row *rows;
	struct err e = {0};
	size_t i;
	int rc;

	if (!db_on(s) || sc->rows_read)
		return 0;
	/* Not while the leg's breaker holds it; after that the read is as
	 * good a probe as any (waiting for the leg to prove itself stalled
	 * the pass for good when no file came to do it: t-sim seed
	 * 1001976). */
	if (engine_leg_allowance(s, OUTBOX_DB, 1) == 0)
		return -1;
	jobs = xcalloc(sc->n, sizeof(*jobs));
	paths = xcalloc(sc->n, sizeof(*paths));
	rows = xcalloc(sc->n, sizeof(*rows));
	for (i = 0; i < sc->n; i++) {
		jobs[i] = sc->items[i].en.job_id;
		paths[i] = sc->items[i].en.path + strlen(sc->items[i].en.job_id)
		    + 1;
	}
	rc = s->io.db.read_documents(s->io.db.h, jobs, paths, sc->n, rows, &e);
	if (rc < 0) {
		log_warnx("scrub: reading documents rows: %s (will retry)", e.msg);
		sc->next_ms = time_mono_ms() + (int64_t)s->cfg->retry_max_s * 1000;
	} else {
		for (i = 0; i < sc->n; i++)
			sc->items[i].row = rows[i];
		sc->rows_read = 1;
	}
	free(rows);
	free(jobs);
	free(paths);
	return rc;
}

/* Queues a repair of it's version and counts it. */
static void
repair(struct sync *s, struct item *it, const char *why, const char *etag)
{
	struct log_ctx ctx = { it->en.job_id, it->en.path, NULL, it->en.id };

	it->sc->st.found++;
	it->sc->st.total_found++;
	log_msg(LOG_WARNING, &ctx, "scrub: %s%s; repair journaled", why,
	    it->pruned ? " (its entries were pruned)" : "");
	/* Counted as a repair when the outbox takes it (scrub_repaired):
	 * it drops one when a newer version was journaled meanwhile. */
	engine_note_repair(s, &(struct outbox_repair){ it->pruned ? 0 :
	    it->en.id, it->pruned ? it->en.sha256 : NULL, etag, why,
	    it->en.path, it->en.size, it->en.mtime_ns,
	    it->en.inode });
	metrics_add(&s->live, M_SCRUB_FOUND, 0, 1);
	/* The counts go with the repair, in one transaction. */
	advance(it->sc);
	persist(s);
}

/* The row's verdict: NULL when it holds this version (with S3's ETag and
 * key when S3 was found to hold it: etag non-NULL), else what differs. */
static const char *
row_differs(const struct sync *s, const struct item *it, const char *etag)
{
	const struct pg_row *r = &it->row;

	if (!db_on(s))
		return NULL;
	if (!r->found)
		return "missing in the database";
	if (r->file_size != it->en.size || strcmp(r->sha256, it->en.sha256) != 0)
		return "differs in the database";
	if (etag != NULL && (strcmp(r->etag, etag) != 0 || r->s3_key == NULL ||
	    strcmp(r->s3_key, it->en.s3_key) != 0))
		return "the database's ETag or key differs from S3's";
	return NULL;
}

/* Decides one entry once its HEAD (r, or NULL with S3 off) is back. */
static void
judge(struct sync *s, struct item *it, const struct s3_req *r)
{
	const char *s3_bad = NULL, *db_bad, *etag = NULL;
	char why[160];

	it->decided = 1;
	if (r != NULL) {
		if (r->status == 404)
			s3_bad = "missing in S3";
		else if (r->err.cls != ERR_NONE) {
			/* A 5xx or a timeout: again in a while, this pass;
			 * after the last try the next pass checks it. */
			if (r->err.cls == ERR_TRANSIENT && it->tries < HEAD_TRIES) {
				it->decided = 0;
				it->ready = 1;
				it->retry_at = time_mono_ms() + HEAD_RETRY_MS *
				    it->tries;
			}
			return;
		}
		else if (!s3_head_matches(r, it->en.size, it->en.sha256,
		    it->en.s3_etag))
			s3_bad = "differs in S3";
		else
			etag = r->etag;
	}
	count_checked(s, it->sc);
	db_bad = row_differs(s, it, s3_bad ? NULL : etag);
	if (s3_bad == NULL && db_bad == NULL)
		return;
	snprintf(why, sizeof(why), "%s%s%s", s3_bad ? s3_bad : "",
	    s3_bad && db_bad ? "; " : "", db_bad ? db_bad : "");
	repair(s, it, why, s3_bad ? NULL : etag);
}

void
scrub_reply(struct sync *s, struct s3_req *r)
{
	struct item *it = (struct item *)r;
	struct scrub *sc = s->scrub;

	s3_req_clear(r);
	sc->inflight--;
	judge(s, it, r);
	buf_free(&r->body);
}

/* 1 when the local file is still the entry's version; else the entry is
 * decided, and not counted as checked (gone: not propagated; changed:
 * the watcher journals it). */
static int
file_still(struct sync *s, struct item *it)
{
	struct stat st;
	struct err e = {0};

	if (tree_stat(s->rootfd, it->en.path, &st, &e) == 0 &&
	    engine_same_file(&st, &it->en) && (it->pruned ||
	    it->en.sha256[0] != '\0'))
		return 1;
	it->decided = 1;
	return 0;
}

/* A pruned path's file has no entry to give its SHA-256: hashes it, on
 * the hasher's worker (hash_collect finishes it), or here without one
 * (the simulator's small files). 1 when the digest is known now; 0 while
 * it hashes, or when the entry is decided (the file changed or cannot
 * be read: the watcher's to journal). */
static int
hash_start(struct sync *s, struct scrub *sc, struct item *it)
{
	struct stat st;
	struct err e = {0};
	unsigned char buf[16384], md[32];
	EVP_MD_CTX *ctx;
	ssize_t got = 0;
	int64_t left;
	int fd = tree_open_file(s->rootfd, it->en.path, &st, &e);

	if (fd < 0 || !engine_same_file(&st, &it->en)) {
		if (fd >= 0)
			close(fd);
		it->decided = 1;
		return 0;
	}
	if (s->env.hasher != NULL) {
		memset(&it->hj, 0, sizeof(it->hj));
		it->hj.fd = fd;
		it->hj.length = (uint64_t)it->en.size;
		it->fd = fd;
		it->hashing = sc->hashing = 1;
		hasher_submit(s->env.hasher, &it->hj);
		return 0;
	}
	ctx = EVP_MD_CTX_new();
	if (ctx == NULL)
		abort();
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (left = it->en.size; left > 0; left -= got) {
		got = read(fd, buf, left < (int64_t)sizeof(buf) ? (size_t)left :
		    sizeof(buf));
		if (got <= 0)
			break;
		EVP_DigestUpdate(ctx, buf, (size_t)got);
	}
	EVP_DigestFinal_ex(ctx, md, NULL);
	EVP_MD_CTX_free(ctx);
	close(fd);
	if (left != 0) {
		it->decided = 1;
		return 0;
	}
	hex_encode(md, sizeof(md), it->en.sha256);
	return 1;
}

/* Takes back a finished hash: the item is ready for its HEAD when the
 * file was read whole and still has the stat it was judged by. */
static void
hash_collect(struct sync *s, struct scrub *sc)
{
	struct stat st;
	struct err e = {0};
	size_t i;

	for (i = 0; i < sc->n && sc->hashing; i++) {
		struct item *it = &sc->items[i];

		if (!it->hashing || !hash_job_done(&it->hj))
			continue;
		it->hashing = sc->hashing = 0;
		close(it->fd);
		it->fd = -1;
		if (it->hj.result == HASH_OK && tree_stat(s->rootfd, it->en.path,
		    &st, &e) == 0 && engine_same_file(&st, &it->en)) {
			memcpy(it->en.sha256, it->hj.sha256, sizeof(it->en.sha256));
			it->ready = 1;
		} else {
			it->decided = 1;
		}
	}
}

/* 1 when no live leg of the entry is still to do; else it is decided
 * unchecked (the legs are at work on it). */
static int
settled(const struct sync *s, struct item *it)
{
	if ((s3_on(s) && it->en.s3_state == OUTBOX_PENDING) ||
	    (s->io.db.h != NULL && it->en.db_state == OUTBOX_PENDING)) {
		it->decided = 1;
		return 0;
	}
	return 1;
}

/* 1 when it has a step to take: not started yet (a pruned path only when
 * no other file is hashing), or ready (hashed, or a HEAD to send again). */
static int
startable(const struct scrub *sc, const struct item *it)
{
	if (it->decided || it->hashing)
		return 0;
	if (it->started)
		return it->ready;
	return !it->pruned || !sc->hashing;
}

/* Starts the check of the next entries the rate and slots allow. */
static void
check_some(struct sync *s, struct scrub *sc)
{
	int max_inflight = s->cfg->concurrency / 4 > 0 ?
	    s->cfg->concurrency / 4 : 1;
	int64_t step = 1000 / s->cfg->scrub_rate, now = time_mono_ms();
	size_t i;

	for (i = 0; i < sc->n && now >= sc->next_ms; i++) {
		struct item *it = &sc->items[i];

		if (!startable(sc, it) || now < it->retry_at)
			continue;
		if (s3_on(s) && (sc->inflight >= max_inflight ||
		    s->io.s3.running(s->io.s3.h) >= s->cfg->concurrency ||
		    engine_leg_allowance(s, OUTBOX_S3, 1) == 0))
			return;
		sc->next_ms = (sc->next_ms > now ? sc->next_ms : now) + step;
		if (!it->started) {
			it->started = 1;
			if (!settled(s, it) || !file_still(s, it))
				continue;
			if (it->pruned && !hash_start(s, sc, it))
				continue;
		}
		it->ready = 0;
		if (!s3_on(s)) {
			judge(s, it, NULL);
			continue;
		}
		it->tries++;
		it->req.method = "HEAD";
		it->req.key = it->en.s3_key;
		it->req.fd = -1;
		it->req.user = &scrub_tag;
		if (s->io.s3.start(s->io.s3.h, &it->req) < 0) {
			it->decided = 1;	/* not checked */
			continue;
		}
		sc->inflight++;
	}
}

/* 1 when every entry of the batch is decided. */
static int
batch_done(const struct scrub *sc)
{
	size_t i;

	for (i = 0; i < sc->n; i++)
		if (!sc->items[i].decided)
			return 0;
	return sc->inflight == 0;
}

/* Whether the scrub may work at all this turn. */
static int
allowed(const struct sync *s, int stopping)
{
	return s->cfg->scrub_interval_s > 0 && !s->once && !stopping &&
	    !s->queue_failing && (s3_on(s) || db_on(s));
}

void
scrub_turn(struct sync *s, int stopping)
{
	struct scrub *sc = s->scrub;
	struct err e = {0};

	if (!allowed(s, stopping))
		return;
	if (sc == NULL)
		sc = s->scrub = xcalloc(1, sizeof(*sc));
	if (!sc->loaded) {
		if (outbox_scrub_get(s->ob, &sc->st, &e) < 0) {
			log_err("scrub: %s", e.msg);
			return;
		}
		sc->loaded = 1;
		if (sc->st.running)
			log_info("scrub: continuing pass %lld after entry %lld",
			    (long long)sc->st.pass, (long long)sc->st.cursor);
		metrics_set(&s->live, M_SCRUB_RUNNING, 0, sc->st.running);
		metrics_set(&s->live, M_SCRUB_CURSOR, 0, sc->st.cursor);
		metrics_set(&s->live, M_SCRUB_END, 0, sc->st.end_id);
	}
	if (!sc->st.running) {
		if (time_mono_ms() < sc->idle_until)
			return;
		if (!pass_due(s, sc)) {
			sc->idle_until = time_mono_ms() + CHECK_EVERY_MS;
			return;
		}
		pass_start(s, sc);
	}
	hash_collect(s, sc);
	if (advance(sc) && time_mono_ms() - sc->persisted_ms >= PERSIST_MS)
		persist(s);
	if (time_mono_ms() < sc->next_ms)
		return;
	if (sc->n > 0 && batch_done(sc)) {
		sc->st.cursor = sc->items[sc->n - 1].en.id;
		batch_free(sc);
		persist(s);
	}
	if (sc->n == 0) {
		int rc = batch_load(s, sc);

		if (rc <= 0) {
			if (rc == 0)
				pass_end(s, sc);
			return;
		}
	}
	if (rows_load(s, sc) < 0)
		return;
	check_some(s, sc);
}

int64_t
scrub_wait_ms(const struct sync *s)
{
	const struct scrub *sc = s->scrub;
	int64_t at = -1, now = time_mono_ms();
	size_t i;

	if (sc == NULL || !allowed(s, 0) || !sc->st.running)
		return -1;
	if (sc->n == 0 || batch_done(sc))
		at = sc->next_ms;	/* the next batch */
	/* Else when an entry can start: a HEAD back or a hash done wakes
	 * the loop anyway, so waiting on those is no reason to spin. */
	for (i = 0; i < sc->n; i++) {
		const struct item *it = &sc->items[i];
		int64_t t = it->retry_at > sc->next_ms ? it->retry_at :
		    sc->next_ms;

		if (!startable(sc, it))
			continue;
		if (at < 0 || t < at)
			at = t;
	}
	if (at < 0)
		return -1;
	return at > now ? at - now : 0;
}

void
scrub_stop(struct sync *s)
{
	if (s->scrub == NULL || !s->scrub->st.running)
		return;
	advance(s->scrub);
	persist(s);
}

void
scrub_repaired(struct sync *s, int journaled, const char *path)
{
	struct log_ctx ctx = { NULL, path, NULL, 0 };

	if (s->scrub == NULL)
		return;
	if (!journaled) {
		log_msg(LOG_INFO, &ctx, "scrub: repair dropped: a newer version "
		    "was journaled meanwhile (it restores both stores)");
		return;
	}
	s->scrub->st.repaired++;
	s->scrub->st.total_repaired++;
	metrics_add(&s->live, M_SCRUB_REPAIRED, 0, 1);
}

int
scrub_write(struct sync *s, struct err *e)
{
	if (s->scrub == NULL)
		return 0;
	return outbox_scrub_put(s->ob, &s->scrub->st, e);
}
