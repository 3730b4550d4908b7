/*
 * sync.c - the sync thread's scheduler (see sync.h and engine.h).
 *
 * One step: start the S3 legs the concurrency has room for (claiming due
 * entries), hash a bounded slice of the files being uploaded, start the
 * requests they are ready for, send queued multipart aborts; record one
 * pipelined batch of due database legs and back-fill ETags learned late
 * (dbleg.c); wait in curl (or on the watcher's eventfd) until a transfer
 * finishes, the watcher journals something, or the next retry is due;
 * collect the finished transfers; and write the step's outcomes in one
 * outbox transaction (engine_flush), or, while a backlog keeps uploads in
 * flight, with a later step's claims (at most BATCH_WAIT_MS later). Every state a leg takes comes
 * from the state table (store/legstate.h), applied by outbox_apply.
 *
 * The S3 leg of each entry is a struct upload (upload.c): the file is
 * opened beneath the uploads root (no symlinks), checked against what was
 * journaled, hashed, sent, and checked again; a file that changed in
 * between is not marked done. The engine never journals a version itself:
 * a file is finished when the watcher says so (closed or renamed in, then
 * quiet), so a file rewritten slowly is never stored half-written.
 *
 * The world outside (S3, the database, waiting) is a table of operations
 * (io.h), so the simulator (tests/sim/) runs this same code step by step.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/engine/engine.h"
#include "agent/engine/hasher.h"
#include "agent/engine/scrub.h"
#include "agent/engine/sync.h"
#include "agent/s3/creds.h"
#include "base/backoff.h"
#include "base/log.h"
#include "watchers/tree.h"

#define HASH_BUDGET	(4 * 1024 * 1024)	/* bytes hashed per loop turn */
#define HASH_WORKERS	2		/* the hasher's threads */
#define ABORT_BATCH	4		/* multipart aborts started per turn */
#define DB_BATCH	64		/* database legs per round trip */
#define ETAG_BATCH	32		/* ETags back-filled per turn */
#define ONCE_WAIT_MS	5000		/* --once waits for retries this close */
#define ONCE_REFUSALS	3		/* --once stops probing refused keys */
#define ONCE_OUTAGE_MS	10000		/* --once stops probing a leg still
					   failing this long into the run */
#define STOP_GRACE_MS	30000		/* transfers may finish after a stop */
#define MIN_PART	(8ull * 1024 * 1024)
/* While uploads are in flight, a claim of few S3 legs and a queue of few
 * outcomes wait this long for company: each outbox transaction costs its
 * pages (the row's, every index's, the counts'), so a backlog is claimed
 * and recorded half the concurrency at a time, not one file per turn. */
#define BATCH_WAIT_MS	25
#define DB_WAIT_MS	50		/* the same for the database leg's claim
					   (a batch is a PostgreSQL round trip) */
#define QUEUE_MAX	256		/* records written at once, at most */
/* Small files are claimed ahead of the free slots, up to AHEAD times the
 * concurrency more and AHEAD_BYTES of files (uploads in progress count),
 * so a turn claims and records a batch of them, not a few. */
#define AHEAD		3
#define AHEAD_BYTES	(4 * 1024 * 1024)
/* While more uploads are claimed than run (a backlog drains), outcomes
 * wait up to this long for the next claim, which comes once half of them
 * are done: a transaction per batch, not per BATCH_WAIT_MS of a slow
 * server. An outcome not yet written is an upload made again after a
 * crash, with the same key and bytes. */
#define BACKLOG_WAIT_MS	250

static const char *const leg_names[2] = { "s3", "db" };

/* ---- the queue of outcomes ------------------------------------------------ */

static char *
dup_or_null(const char *p)
{
	return p ? xstrdup(p) : NULL;
}

static void
rec_free(struct rec *r)
{
	free((char *)r->oc.error);
	free((char *)r->oc.etag);
	free((char *)r->oc.sha256);
	free(r->s1);
	free(r->s2);
	free(r->s3);
	free((char *)r->rp.sha256);
	free((char *)r->rp.s3_etag);
	free((char *)r->rp.why);
	free((char *)r->rp.path);
	free(r);
}

static void
enqueue(struct sync *s, struct rec *r)
{
	if (s->dead) {
		rec_free(r);
		return;
	}
	if (s->recs == NULL)
		s->recs_since = time_mono_ms();
	*s->recs_tail = r;
	s->recs_tail = &r->next;
	s->nrecs++;
	if (r->kind == R_LEG && r->leg == OUTBOX_S3)
		s->recs_s3++;
}

void
engine_outcome(struct sync *s, enum outbox_leg leg, int64_t id,
    const struct outbox_outcome *oc)
{
	struct rec *r = xcalloc(1, sizeof(*r));

	r->kind = R_LEG;
	r->leg = leg;
	r->id = id;
	r->oc = *oc;
	r->oc.error = dup_or_null(oc->error);
	r->oc.etag = dup_or_null(oc->etag);
	r->oc.sha256 = dup_or_null(oc->sha256);
	metrics_outcome(&s->live, leg, oc->event);
	/* Findings that forget a path's stat are written at the end of the
	 * turn that made them (STYLE.md, issue 11): never held longer. */
	if (oc->event == EV_GONE || oc->event == EV_CHANGED)
		s->recs_urgent = 1;
	/* A leg that ends otherwise than stored may queue its multipart
	 * upload's abort; a row written without its ETag needs it later. */
	if (oc->event != EV_STORED)
		s->aborts_read_at = 0;
	if (oc->event == EV_STORED_NO_ETAG || oc->event == EV_DUPLICATE)
		s->etags_read_at = 0;
	enqueue(s, r);
}

void
engine_note(struct sync *s, enum rec_kind kind, int64_t id, const char *s1,
    const char *s2, const char *s3, int64_t n1, int64_t n2)
{
	struct rec *r = xcalloc(1, sizeof(*r));

	r->kind = kind;
	r->id = id;
	r->s1 = dup_or_null(s1);
	r->s2 = dup_or_null(s2);
	r->s3 = dup_or_null(s3);
	r->n1 = n1;
	r->n2 = n2;
	if (kind == R_UPLOAD_ID)
		s->flush_now = 1;
	/* Progress is written at the end of the turn that queued it, as
	 * outcomes are not always: the next turn reads it back (the aborts
	 * due, the ETags to back-fill, the scrub's state), and a part S3
	 * acknowledged is not sent again after a crash (it-multipart). */
	s->recs_urgent = 1;
	if (kind == R_ABORT_ADD || kind == R_ABORT_LATER)
		s->aborts_read_at = 0;
	enqueue(s, r);
}

void
engine_note_repair(struct sync *s, const struct outbox_repair *rp)
{
	struct rec *r = xcalloc(1, sizeof(*r));

	r->kind = R_REPAIR;
	r->id = rp->of;
	r->rp = *rp;
	r->rp.sha256 = dup_or_null(rp->sha256);
	r->rp.s3_etag = dup_or_null(rp->s3_etag);
	r->rp.why = dup_or_null(rp->why);
	r->rp.path = dup_or_null(rp->path);
	enqueue(s, r);
}

/* Writes a scrub's repair. The scrub counts it once, when the outbox
 * takes it or drops it (a newer version came first): r->told, since a
 * failed transaction writes the queue again. */
static int
apply_repair(struct sync *s, struct rec *r, struct err *e)
{
	int rc = outbox_journal_repair(s->ob, &r->rp, NULL, e);

	if (rc < 0)
		return -1;
	if (!r->told) {
		r->told = 1;
		scrub_repaired(s, rc == 1, r->rp.path);
	}
	return 0;
}

/*
 * A leg found r's file gone, and "gone" forgets the path's stat so that the
 * watcher journals the file again if it comes back. But the watcher thread
 * may have seen it come back already, between the leg's finding and this
 * transaction, and skipped it as the version it knew. Inside the
 * transaction (the watcher journals in one too) the file is looked at
 * again: back, the leg retries instead, and reads it.
 */
static void
gone_unless_back(struct sync *s, struct rec *r)
{
	struct stat st;
	struct err e = {0};

	if (tree_stat(s->rootfd, r->s1, &st, &e) < 0 || !S_ISREG(st.st_mode))
		return;
	r->oc.event = EV_TRANSIENT;
	r->oc.next_at_ms = time_now_ms();
	free((char *)r->oc.error);
	r->oc.error = xstrdup("the file vanished and came back before that "
	    "was recorded; read again");
}

/* Writes one record; 0 or -1 with e. */
static int
write_rec(struct sync *s, struct rec *r, struct err *e)
{
	switch (r->kind) {
	case R_LEG:
		if (r->oc.event == EV_GONE && r->s1 != NULL)
			gone_unless_back(s, r);
		return outbox_apply(s->ob, r->leg, r->id, &r->oc, e) < 0 ? -1 : 0;
	case R_UPLOAD_ID:
		return outbox_set_upload_id(s->ob, r->id, r->s1, e);
	case R_PART:
		return outbox_part_done(s->ob, r->id, (int)r->n1, r->n2, r->s1,
		    r->s2, e);
	case R_UPLOAD_CLEAR:
		return outbox_upload_clear(s->ob, r->id, e);
	case R_ABORT_ADD:
		return outbox_abort_add(s->ob, r->s1, r->s2, r->s3, e);
	case R_ABORT_DONE:
		return outbox_abort_done(s->ob, r->s1, e);
	case R_ABORT_LATER:
		return outbox_abort_later(s->ob, r->s1, r->n1, r->s2, e);
	case R_ETAG_DONE:
		return outbox_etag_done(s->ob, r->id, e);
	case R_REPAIR:
		return apply_repair(s, r, e);
	case R_SCRUB:
		return scrub_write(s, e);
	case R_LEG_PAUSE:
		return outbox_meta_set(s->ob, r->n1 == OUTBOX_S3 ? "s3_paused" :
		    "db_paused", r->s1 ? r->s1 : "", e);
	}
	return 0;
}

/*
 * Writes the queue, then (when claim is not NULL) the turn's claims, in
 * one outbox transaction. On failure nothing is written or claimed: claim
 * must leave nothing behind that a rollback undoes (claims are kept in
 * *tc, which the caller drops).
 */
static int
flush_and(struct sync *s, int (*claim)(struct sync *, struct turn_claims *,
    struct err *), struct turn_claims *tc)
{
	struct err e = {0};
	struct rec *r;

	if ((s->recs == NULL && claim == NULL) || s->dead)
		return 0;
	if (s->io.before_write != NULL && s->recs != NULL) {
		int gone = 0;

		for (r = s->recs; r != NULL; r = r->next)
			gone += r->kind == R_LEG && r->oc.event == EV_GONE;
		s->io.before_write(s->io.idle_arg, gone);
	}
	if (outbox_begin(s->ob, &e) < 0)
		goto failed;
	for (r = s->recs; r != NULL; r = r->next)
		if (write_rec(s, r, &e) < 0) {
			outbox_rollback(s->ob);
			goto failed;
		}
	if (claim != NULL && claim(s, tc, &e) < 0) {
		outbox_rollback(s->ob);
		goto failed;
	}
	if (outbox_commit(s->ob, &e) < 0)
		goto failed;
	while ((r = s->recs) != NULL) {
		s->recs = r->next;
		rec_free(r);
	}
	s->recs_tail = &s->recs;
	s->nrecs = 0;
	s->recs_s3 = 0;
	s->recs_urgent = 0;
	s->wrote = 1;
	if (s->queue_failing)
		log_info("the outbox takes outcomes again");
	s->queue_failing = 0;
	return 0;
failed:
	if (!s->queue_failing)
		log_err("%s: outcomes are kept in memory and written again "
		    "until the outbox takes them", e.msg);
	s->queue_failing = 1;
	if (e.cls == ERR_FATAL)
		s->fatal = 1;
	return -1;
}

int
engine_flush(struct sync *s)
{
	return flush_and(s, NULL, NULL);
}

static void
queue_free(struct sync *s)
{
	struct rec *r;

	while ((r = s->recs) != NULL) {
		s->recs = r->next;
		rec_free(r);
	}
	s->recs_tail = &s->recs;
	s->recs_s3 = 0;
}

/* ---- outcomes and the breakers -------------------------------------------- */

static int64_t
retry_at(const struct sync *s, int attempts)
{
	return time_now_ms() + backoff_delay(attempts, s->cfg->retry_base_ms,
	    (int64_t)s->cfg->retry_max_s * 1000, rand_below(UINT64_MAX));
}

/* Records a success of the leg's work numbered ticket (engine.h). */
static void
leg_ok_ticket(struct sync *s, enum outbox_leg leg, long long ticket)
{
	struct leg *l = &s->legs[leg];

	if (ticket > l->ok_ticket)
		l->ok_ticket = ticket;
	/* A request sent before the refusal (a long PUT the store
	 * authorized when it began) proves nothing of the credentials now:
	 * the leg stays paused for its probe (t-sim
	 * old-success-after-revocation; before, the leg resumed and sent
	 * every pending file into the refusal). */
	if (l->refused && ticket <= l->refused_at)
		return;
	if (l->refused) {
		log_info("%s leg resumed: the %s takes the credentials again",
		    leg == OUTBOX_S3 ? "S3" : "database", leg == OUTBOX_S3 ?
		    "bucket" : "database");
		engine_note(s, R_LEG_PAUSE, 0, NULL, NULL, NULL, leg, 0);
	} else if (l->failures > 0) {
		log_info("%s leg recovered", leg == OUTBOX_S3 ? "S3" :
		    "database");
	}
	l->failures = 0;
	l->paused_until = 0;
	l->refused = 0;
	metrics_set(&s->live, M_LEG_PAUSED, leg, 0);
	metrics_set(&s->live, M_LEG_REFUSED, leg, 0);
}

long long
engine_s3_ticket(struct sync *s)
{
	return ++s->legs[OUTBOX_S3].tickets;
}

/* A success of the S3 leg's request numbered ticket (a file stored, a
 * part stored, an upload created). It always shows the credentials
 * worked when it was sent (ok_ticket: a key denied beside it is a policy
 * on that key). It ends the leg's pause only if it was sent after the
 * leg's last failure: requests in flight when the store began to fail
 * may still succeed, and each would end the pause the first failure
 * began and claim a burst into the outage (t-sim parts-before-outage,
 * put-before-outage). */
static void
s3_success(struct sync *s, long long ticket)
{
	struct leg *l = &s->legs[OUTBOX_S3];

	if (l->failures > 0 && ticket <= l->failed_ticket) {
		if (ticket > l->ok_ticket)
			l->ok_ticket = ticket;
		return;
	}
	leg_ok_ticket(s, OUTBOX_S3, ticket);
}

void
engine_s3_progress(struct sync *s, long long ticket)
{
	s3_success(s, ticket);
}

/* A success of work issued now (the database leg's batches). */
void
engine_leg_ok(struct sync *s, enum outbox_leg leg)
{
	leg_ok_ticket(s, leg, ++s->legs[leg].tickets);
}

void
engine_leg_failed(struct sync *s, enum outbox_leg leg)
{
	struct leg *l = &s->legs[leg];

	l->failed_at = time_mono_ms();
	l->failed_ticket = l->tickets;
	if (l->failures++ == 0)
		l->failing_since = l->failed_at;
	l->paused_until = l->failed_at + backoff_delay(l->failures,
	    s->cfg->retry_base_ms, (int64_t)s->cfg->retry_max_s * 1000,
	    rand_below(UINT64_MAX));
	metrics_set(&s->live, M_LEG_PAUSED, leg, 1);
}

int
engine_leg_allowance(const struct sync *s, enum outbox_leg leg, int want)
{
	const struct leg *l = &s->legs[leg];

	if (l->failures == 0)
		return want;
	if (time_mono_ms() < l->paused_until)
		return 0;
	return want > 0 ? 1 : 0;	/* one probe */
}

int
engine_same_file(const struct stat *st, const struct outbox_entry *en)
{
	return (int64_t)st->st_size == en->size &&
	    (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec ==
	    en->mtime_ns && (int64_t)st->st_ino == en->inode;
}

void
engine_retry_later(struct sync *s, enum outbox_leg leg,
    const struct outbox_entry *en, const struct err *e)
{
	struct log_ctx ctx = { en->job_id, en->path, leg_names[leg], en->id };
	int attempts = leg == OUTBOX_S3 ? en->s3_attempts : en->db_attempts;
	struct outbox_outcome oc = { .event = EV_TRANSIENT, .error = e->msg,
	    .next_at_ms = retry_at(s, attempts) };

	log_msg(LOG_WARNING, &ctx, "attempt %d failed, will retry: %s",
	    attempts, e->msg);
	engine_outcome(s, leg, en->id, &oc);
	engine_leg_failed(s, leg);
}

void
engine_fail(struct sync *s, enum outbox_leg leg, const struct outbox_entry *en,
    const struct err *e)
{
	struct log_ctx ctx = { en->job_id, en->path, leg_names[leg], en->id };
	struct outbox_outcome oc = { .event = EV_PERMANENT, .error = e->msg };

	log_msg(LOG_ERR, &ctx, "failed (fix it, then run outboxctl retry %lld): "
	    "%s", (long long)en->id, e->msg);
	engine_outcome(s, leg, en->id, &oc);
}

void
engine_skip(struct sync *s, enum outbox_leg leg, const struct outbox_entry *en,
    enum leg_event ev, const char *why)
{
	struct log_ctx ctx = { en->job_id, en->path, leg_names[leg], en->id };
	struct outbox_outcome oc = { .event = ev, .error = why };

	log_msg(LOG_INFO, &ctx, "skipped: %s", why);
	engine_outcome(s, leg, en->id, &oc);
}

/* engine_skip's "gone", with the path kept for gone_unless_back. */
static void
skip_gone(struct sync *s, enum outbox_leg leg, const struct outbox_entry *en,
    const char *why)
{
	struct log_ctx ctx = { en->job_id, en->path, leg_names[leg], en->id };
	struct rec *r = xcalloc(1, sizeof(*r));

	log_msg(LOG_INFO, &ctx, "skipped: %s", why);
	r->kind = R_LEG;
	r->leg = leg;
	r->id = en->id;
	r->oc = (struct outbox_outcome){ .event = EV_GONE };
	r->oc.error = xstrdup(why);
	r->s1 = xstrdup(en->path);
	metrics_outcome(&s->live, leg, EV_GONE);
	/* As engine_outcome: a finding that forgets the path's stat is
	 * written at the end of its own turn, never held (STYLE.md). */
	s->recs_urgent = 1;
	s->aborts_read_at = 0;
	enqueue(s, r);
}

/*
 * Notes a denial of entry id; counts it (returns how many were counted,
 * kept across pauses of the leg) when the credentials worked since: work
 * issued after the leg's last refusal, or after this entry's own last
 * denial, succeeded (tickets, engine.h: a long PUT authorized before a
 * bucket-wide revocation and finishing after it proves nothing). Returns
 * 0 when it does not count.
 */
static int
note_denied(struct leg *l, int64_t id)
{
	int i, counts;

	for (i = 0; i < DENIED_MAX; i++)
		if (l->denied[i] == id)
			break;
	if (i == DENIED_MAX) {
		i = l->ndenied;
		l->ndenied = (l->ndenied + 1) % DENIED_MAX;
		l->denied[i] = id;
		l->denials[i] = 0;
		l->denied_at[i] = l->refused_at;
	}
	counts = l->ok_ticket > l->refused_at || l->ok_ticket > l->denied_at[i];
	l->denied_at[i] = l->tickets;
	l->refused_at = l->tickets;
	return counts ? ++l->denials[i] : 0;
}

/* Pauses the leg for a refusal: one log line (and the status) when the
 * pause begins; the backoff grows once per probe, not once per request
 * that was already in flight when the first refusal came. */
static void
pause_refused(struct sync *s, enum outbox_leg leg, const struct err *e)
{
	struct leg *l = &s->legs[leg];
	char *why;

	if (l->refused && time_mono_ms() < l->paused_until)
		return;
	if (!l->refused) {
		why = xasprintf("%s leg paused: the %s refused the credentials "
		    "or the %s: %s", leg == OUTBOX_S3 ? "S3" : "database",
		    leg == OUTBOX_S3 ? "S3 endpoint" : "database", leg ==
		    OUTBOX_S3 ? "bucket" : "privileges", e->msg);
		log_err("%s (entries stay pending and are retried with backoff "
		    "up to %d s; fix the credentials%s, then send SIGHUP or wait)",
		    why, s->cfg->retry_max_s, leg == OUTBOX_S3 ? " or the bucket"
		    : "");
		engine_note(s, R_LEG_PAUSE, 0, why, NULL, NULL, leg, 0);
		free(why);
		metrics_set(&s->live, M_LEG_REFUSED, leg, 1);
	}
	l->refused = 1;
	engine_leg_failed(s, leg);
}

void
engine_refused(struct sync *s, enum outbox_leg leg,
    const struct outbox_entry *en, const struct err *e)
{
	struct log_ctx ctx = { en->job_id, en->path, leg_names[leg], en->id };
	struct leg *l = &s->legs[leg];
	int attempts = leg == OUTBOX_S3 ? en->s3_attempts : en->db_attempts;
	struct outbox_outcome oc = { .event = EV_TRANSIENT, .error = e->msg,
	    .next_at_ms = time_now_ms() };
	int n;

	if (e->cls == ERR_DENIED && (n = note_denied(l, en->id)) > 0) {
		/* Work issued since the last refusal, or since this key's
		 * last denial, succeeded: this may be a policy on this key
		 * alone. Met three times so (twice is not enough: the second
		 * may be the first request a bucket-wide refusal meets, t-sim
		 * seed 14001482), it is. A pause of the leg keeps the counts:
		 * two keys denied in turn pause the leg at each round, and
		 * forgetting then kept both from ever failing (t-sim
		 * denied-keys). Two keys denied in the same round: only the
		 * first found a success since the last refusal, and the
		 * other never counted until successes since its own last
		 * denial did (t-sim denied-keys, seeds 3, 18 and 21). */
		if (n >= DENIED_TIMES) {
			engine_fail(s, leg, en, e);
			return;
		}
		oc.next_at_ms = retry_at(s, attempts);
		log_msg(LOG_WARNING, &ctx, "access denied, will retry (the "
		    "entry fails if it is denied %d times while others are "
		    "stored): %s", DENIED_TIMES, e->msg);
		engine_outcome(s, leg, en->id, &oc);
		return;
	}
	/* Due at once, but the paused leg claims nothing before its probe;
	 * an entry denied is put behind the others, so the probe after it
	 * is another key. */
	if (e->cls == ERR_DENIED)
		oc.next_at_ms = retry_at(s, attempts);
	else
		l->refused_at = l->tickets;	/* what succeeds must follow */
	pause_refused(s, leg, e);
	engine_outcome(s, leg, en->id, &oc);
}

void
engine_file_problem(struct sync *s, enum outbox_leg leg,
    const struct outbox_entry *en, const struct err *e)
{
	char why[1100];

	if (e->cls == ERR_GONE) {
		snprintf(why, sizeof(why), "the file vanished before it was %s; "
		    "it is journaled again if it comes back", leg == OUTBOX_S3 ?
		    "uploaded" : "recorded");
		skip_gone(s, leg, en, why);
	} else if (e->cls == ERR_TRANSIENT) {
		engine_retry_later(s, leg, en, e);
	} else {
		engine_fail(s, leg, en, e);
	}
}

/* ---- the S3 leg ----------------------------------------------------------- */

static int
s3_on(const struct sync *s)
{
	return s->io.s3.h != NULL;
}

static int
s3_busy(const struct sync *s)
{
	return s3_on(s) ? s->io.s3.running(s->io.s3.h) : 0;
}

/* Whether the leg denied entry id after the work of its last success
 * was issued. */
static int
denied_since_ok(const struct leg *l, int64_t id)
{
	int i;

	for (i = 0; i < DENIED_MAX; i++)
		if (l->denied[i] == id)
			return l->ok_ticket <= l->denied_at[i];
	return 0;
}

/* What an S3 claim leaves alone: a path in flight, and while the leg is
 * probing (s->probe_skip) a key it denied since its last success. */
static int
skip_claim(void *arg, int64_t id, const char *path)
{
	struct sync *s = arg;

	return strmap_get(s->inflight, path) != NULL || (s->probe_skip &&
	    denied_since_ok(&s->legs[OUTBOX_S3], id));
}

static void
log_stored(struct sync *s, const struct outbox_entry *en,
    const struct upload_outcome *o)
{
	struct log_ctx ctx = { en->job_id, en->path, "s3", en->id };

	if (o->parts > 0)
		log_msg(LOG_INFO, &ctx, "stored s3://%s/%s (%lld bytes, %d "
		    "parts)", s->cfg->bucket, en->s3_key, (long long)en->size,
		    o->parts);
	else
		log_msg(LOG_INFO, &ctx, "stored s3://%s/%s (%lld bytes)",
		    s->cfg->bucket, en->s3_key, (long long)en->size);
}

/* Reports a finished upload's outcome and forgets the upload. */
static void
finish_upload(struct sync *s, int i, const struct upload_outcome *o)
{
	struct upload *u = s->ups[i];
	const struct outbox_entry *en = upload_entry(u);
	struct outbox_outcome oc = { .event = EV_STORED };
	char why[256];

	switch (o->result) {
	case UPLOAD_DONE:
		test_crash_point("s3-answered");
		oc.etag = o->etag;
		oc.sha256 = o->sha256;
		engine_outcome(s, OUTBOX_S3, en->id, &oc);
		s3_success(s, upload_ticket(u));
		metrics_add(&s->live, M_UPLOADED_BYTES, OUTBOX_S3, en->size);
		log_stored(s, en, o);
		break;
	case UPLOAD_RETRY:
		if (o->err.cls == ERR_REFUSED || o->err.cls == ERR_DENIED)
			engine_refused(s, OUTBOX_S3, en, &o->err);
		else
			engine_retry_later(s, OUTBOX_S3, en, &o->err);
		break;
	case UPLOAD_FAILED:
		engine_fail(s, OUTBOX_S3, en, &o->err);
		break;
	case UPLOAD_GONE:
		engine_file_problem(s, OUTBOX_S3, en, &(struct err){ .cls =
		    ERR_GONE });
		break;
	case UPLOAD_CHANGED:
		snprintf(why, sizeof(why), "the file changed %s; the watcher "
		    "journals the new version once it is finished", o->when);
		engine_skip(s, OUTBOX_S3, en, EV_CHANGED, why);
		break;
	case UPLOAD_STOPPED:
		oc.event = EV_STOPPED;
		/* The reason it was stopped for, not the leg's state when
		 * reaped: a probe's success reaped first would make one
		 * given back for the failing leg say outboxd stopped. */
		oc.unsent = !upload_started(u);
		oc.error = upload_started(u) ? "interrupted: outboxd stopped "
		    "while sending" : upload_stop_why(u) != NULL ?
		    upload_stop_why(u) : "outboxd stopped before sending it";
		engine_outcome(s, OUTBOX_S3, en->id, &oc);
		break;
	case UPLOAD_BUSY:
		break;
	}
	if (strmap_get(s->inflight, en->path) == u)
		strmap_del(s->inflight, en->path);
	s->ups_bytes -= en->size;
	upload_free(u);
	/* In claim order: slots go to the oldest first (run_s3), so one
	 * claimed ahead does not wait behind later claims (a swap with the
	 * last kept one at the back for as long as a backlog lasted). */
	s->nups--;
	memmove(&s->ups[i], &s->ups[i + 1], (size_t)(s->nups - i) *
	    sizeof(*s->ups));
}

/*
 * Gives the free slots to the uploads, fewest requests in flight first,
 * in claim order among equals: pass k offers one slot to each upload with
 * at most k in flight. A large file's parts take every slot only while no
 * other upload waits for one (given in claim order alone, its parts kept
 * every slot and each file claimed after it waited for the whole upload:
 * t-sim 503-beside-multipart, session 10).
 */
static void
share_slots(struct sync *s, int *slots, int stopping)
{
	int i, k, most = 0, sent = 1;

	for (i = 0; i < s->nups; i++)
		if (upload_inflight(s->ups[i]) > most)
			most = upload_inflight(s->ups[i]);
	for (k = 0; *slots > 0 && (sent || k <= most); k++) {
		sent = 0;
		for (i = 0; i < s->nups && *slots > 0; i++) {
			int one = 1;

			if (upload_inflight(s->ups[i]) > k)
				continue;
			upload_send(s->ups[i], &one, stopping);
			if (one == 0) {
				(*slots)--;
				sent = 1;
			}
		}
	}
}

/* Reports every upload that has finished. */
static void
reap_uploads(struct sync *s)
{
	struct upload_outcome o;
	int i;

	for (i = 0; i < s->nups;) {
		if (!upload_finished(s->ups[i], &o)) {
			i++;
			continue;
		}
		finish_upload(s, i, &o);
	}
}

static void
add_upload(struct sync *s, struct upload *u)
{
	if (s->nups == s->capups) {
		s->capups = s->capups ? s->capups * 2 : 16;
		s->ups = xrealloc(s->ups, (size_t)s->capups * sizeof(*s->ups));
	}
	s->ups[s->nups++] = u;
	s->ups_bytes += upload_entry(u)->size;
	strmap_put(s->inflight, upload_entry(u)->path, u);
}

/* Starts an upload for each S3 leg the turn claimed (tc->s3). */
static void
start_uploads(struct sync *s, struct turn_claims *tc)
{
	struct outbox_entry *v = tc->s3;
	size_t n = tc->ns3, i;
	struct err e = {0};

	tc->s3 = NULL;
	tc->ns3 = 0;
	if (n == 0) {
		free(v);
		return;
	}
	metrics_claimed(&s->live, OUTBOX_S3, v, n);
	for (i = 0; i < n; i++) {
		struct outbox_part *parts = NULL;
		size_t np = 0;

		if (s->nups >= s->cfg->concurrency)
			s->ahead++;

		if (v[i].upload_id != NULL &&
		    outbox_parts(s->ob, v[i].id, &parts, &np, &e) < 0)
			log_err("%s", e.msg);	/* resumes from scratch */
		add_upload(s, upload_new(&s->env, &v[i], parts, np));
		free(parts);
	}
	outbox_entries_free(v, n);
}

/*
 * Claims, inside the turn's transaction (flush_and): due S3 legs while
 * fewer uploads than the concurrency run, and a batch of due database
 * legs. Only reads and marks rows; what they need (uploads, the batch)
 * is made after the commit, from *tc.
 */
static int
claim_turn(struct sync *s, struct turn_claims *tc, struct err *e)
{
	/* A paused leg's probe is another key than those it denied, while
	 * there is one: probing a denied key again and again kept the leg
	 * paused and its denials from ever counting (t-sim denied-keys,
	 * seeds 3 and 18). */
	s->probe_skip = s->legs[OUTBOX_S3].failures > 0;
	if (tc->s3_room > 0 && outbox_claim_ahead(s->ob, OUTBOX_S3, tc->s3_firm,
	    tc->s3_room - tc->s3_firm, tc->s3_ahead_bytes, 1, skip_claim, s,
	    &tc->s3, &tc->ns3, e) < 0)
		return -1;
	if (tc->s3_room > 0 && tc->ns3 == 0 && s->probe_skip) {
		s->probe_skip = 0;
		if (outbox_claim_ahead(s->ob, OUTBOX_S3, tc->s3_firm,
		    tc->s3_room - tc->s3_firm, tc->s3_ahead_bytes, 1, skip_claim,
		    s, &tc->s3, &tc->ns3, e) < 0)
			return -1;
	}
	s->probe_skip = 0;
	if (tc->db_want > 0 && outbox_claim(s->ob, OUTBOX_DB, tc->db_want,
	    tc->db_s3_on, NULL, NULL, &tc->db, &tc->ndb, e) < 0)
		return -1;
	return 0;
}

/*
 * Whether leg claims now, with room for that many of at most cap: always
 * when no upload is in flight (a lone file goes at once), with room for
 * half of cap (S3), or once the leg's last claim is BATCH_WAIT_MS
 * (DB_WAIT_MS) old. Otherwise the turn waits for more uploads to finish
 * (BATCH_WAIT_MS).
 */
static int
claim_now(struct sync *s, enum outbox_leg leg, int room, int cap)
{
	int64_t wait = leg == OUTBOX_S3 ? BATCH_WAIT_MS : DB_WAIT_MS;

	/* (Every slot busy, an S3 claim waits for room: nothing idles.) */
	if (s->nups == 0 || (leg == OUTBOX_S3 && room * 2 >= cap) ||
	    ((leg != OUTBOX_S3 || s->nups < s->cfg->concurrency) &&
	    time_mono_ms() - s->claimed_at[leg] >= wait))
		return 1;
	s->deferred = 1;
	return 0;
}

/*
 * Whether the turn writes its queue now (else a later turn does, with its
 * claims): when stopping, when nothing is in flight (the turn may be the
 * last before a rest), for a finding about the file system, for a long
 * queue, or once the oldest record is BATCH_WAIT_MS old. A turn that
 * wrote already waits for the next (one transaction per turn).
 */
static int
queue_due(struct sync *s, int stopping)
{
	if (s->recs == NULL)
		return 0;
	if (stopping || s->nups == 0 || s->recs_urgent ||
	    s->nrecs >= QUEUE_MAX)
		return 1;
	if (!s->wrote && time_mono_ms() - s->recs_since >=
	    (s->nups > s->cfg->concurrency ? BACKLOG_WAIT_MS : BATCH_WAIT_MS))
		return 1;
	s->deferred = 1;
	return 0;
}

/* What the turn may claim: room and a due leg (read first, so an idle
 * turn opens no write transaction). */
static int
claims_wanted(struct sync *s, int stopping, struct turn_claims *tc)
{
	struct err e = {0};

	memset(tc, 0, sizeof(*tc));
	if (stopping || s->queue_failing)
		return 0;
	if (s3_on(s)) {
		int c = s->cfg->concurrency, cap = c;

		/* Free slots, then ahead of them while the leg is well. */
		tc->s3_firm = c - s->nups > 0 ? c - s->nups : 0;
		tc->s3_ahead_bytes = AHEAD_BYTES - s->ups_bytes;
		if (s->legs[OUTBOX_S3].failures == 0 && tc->s3_ahead_bytes > 0)
			cap = s->ups_cap;
		tc->s3_room = engine_leg_allowance(s, OUTBOX_S3,
		    cap - s->nups > 0 ? cap - s->nups : 0);
		/* A failing leg probes with one upload at a time: a claim
		 * beside one in progress would be given back at once (run_s3),
		 * its attempt counted, turn after turn (review of e6c655d). */
		if (s->legs[OUTBOX_S3].failures > 0 && s->nups > 0)
			tc->s3_room = 0;
		if (tc->s3_firm > tc->s3_room)
			tc->s3_firm = tc->s3_room;
		if (tc->s3_room > 0 && !claim_now(s, OUTBOX_S3, tc->s3_room,
		    cap))
			tc->s3_room = 0;
		if (tc->s3_room > 0 &&
		    outbox_next_due(s->ob, OUTBOX_S3, 1, &e) != 0)
			tc->s3_room = 0;
	}
	if (s->io.db.h != NULL) {
		/* While S3 is failing, documents do not wait for it: their
		 * rows are written now and get the ETag later. */
		tc->db_s3_on = s3_on(s) && s->legs[OUTBOX_S3].failures == 0;
		tc->db_want = engine_leg_allowance(s, OUTBOX_DB, DB_BATCH);
		if (tc->db_want > 0 && !claim_now(s, OUTBOX_DB, tc->db_want,
		    DB_BATCH))
			tc->db_want = 0;
		/* S3 outcomes make database legs due: a turn that writes
		 * them claims those in the same transaction, not a turn
		 * later (after a nap). */
		if (tc->db_want > 0 && !(s->recs_s3 > 0 && (tc->s3_room > 0 ||
		    queue_due(s, stopping))) && outbox_next_due(s->ob,
		    OUTBOX_DB, tc->db_s3_on, &e) != 0)
			tc->db_want = 0;
	}
	return tc->s3_room > 0 || tc->db_want > 0;
}

/*
 * The turn's last write (queue_due): with a database claim when S3
 * outcomes in it may make database legs due, and that batch recorded now,
 * not in a later turn after a nap. Returns the database legs it took.
 */
static int
flush_end(struct sync *s, int stopping)
{
	struct turn_claims tc = {0};
	int n;

	if (s->recs_s3 == 0 || stopping || s->queue_failing ||
	    s->io.db.h == NULL ||
	    (tc.db_want = engine_leg_allowance(s, OUTBOX_DB, DB_BATCH)) == 0 ||
	    !claim_now(s, OUTBOX_DB, tc.db_want, DB_BATCH)) {
		engine_flush(s);
		return 0;
	}
	tc.db_s3_on = s3_on(s) && s->legs[OUTBOX_S3].failures == 0;
	if (flush_and(s, claim_turn, &tc) < 0) {
		outbox_entries_free(tc.db, tc.ndb);
		return 0;
	}
	if (tc.ndb > 0)
		s->claimed_at[OUTBOX_DB] = time_mono_ms();
	n = dbleg_run(s, tc.db, tc.ndb);
	if (queue_due(s, stopping))
		engine_flush(s);
	return n;
}

static void
abort_req_free(struct abort_req *a)
{
	buf_free(&a->req.body);
	free(a->req.key);
	free(a->upload_id);
	free(a);
}

/* 1 when a queued abort is due now. */
static int
abort_due(struct sync *s)
{
	struct outbox_abort *v = NULL;
	struct err e = {0};
	size_t n = 0;

	if (outbox_abort_due(s->ob, 1, &v, &n, &e) < 0)
		n = 0;
	outbox_aborts_free(v, n);
	return n > 0;
}

/* Sends queued AbortMultipartUpload requests while slots are free. */
static void
send_aborts(struct sync *s, int *slots)
{
	struct outbox_abort *v = NULL;
	struct err e = {0};
	size_t n = 0, i;

	if (*slots <= 0 || s->naborts >= ABORT_BATCH ||
	    engine_leg_allowance(s, OUTBOX_S3, 1) == 0)
		return;
	/* Asked again once a second, or at once after this engine queued
	 * or delayed an abort (the watcher's come within the second). */
	if (s->aborts_read_at != 0 &&
	    time_mono_ms() - s->aborts_read_at < RECHECK_MS)
		return;
	s->aborts_read_at = time_mono_ms();
	if (outbox_abort_due(s->ob, ABORT_BATCH - s->naborts, &v, &n, &e) < 0) {
		outbox_aborts_free(v, n);
		return;
	}
	if (n == (size_t)(ABORT_BATCH - s->naborts))
		s->aborts_read_at = 0;	/* maybe more */
	for (i = 0; i < n && *slots > 0; i++) {
		struct abort_req *a = xcalloc(1, sizeof(*a));

		a->upload_id = xstrdup(v[i].upload_id);
		a->attempts = v[i].attempts + 1;
		a->req.method = "DELETE";
		a->req.key = xstrdup(v[i].s3_key);
		a->req.query[0] = (struct sigv4_pair){ "uploadId", a->upload_id };
		a->req.n_query = 1;
		a->req.fd = -1;
		a->req.user = NULL;	/* marks an abort, not an upload */
		if (s->io.s3.start(s->io.s3.h, &a->req) < 0) {
			engine_note(s, R_ABORT_LATER, 0, a->upload_id,
			    a->req.err.msg, NULL, retry_at(s, a->attempts), 0);
			abort_req_free(a);
			continue;
		}
		/* Delay this upload id's next turn while it is in flight. */
		engine_note(s, R_ABORT_LATER, 0, a->upload_id, "in flight", NULL,
		    time_now_ms() + (int64_t)s->cfg->s3_timeout_s * 2000, 0);
		s->naborts++;
		(*slots)--;
	}
	outbox_aborts_free(v, n);
}

static void
abort_reply(struct sync *s, struct abort_req *a)
{
	s3_req_clear(&a->req);
	s->naborts--;
	if (a->req.err.cls == ERR_NONE || strcmp(a->req.code, "NoSuchUpload") == 0
	    || a->req.status == 404) {
		log_info("aborted the abandoned multipart upload of %s",
		    a->req.key);
		engine_note(s, R_ABORT_DONE, 0, a->upload_id, NULL, NULL, 0, 0);
	} else {
		log_warnx("aborting the multipart upload of %s: %s (will retry)",
		    a->req.key, a->req.err.msg);
		engine_note(s, R_ABORT_LATER, 0, a->upload_id, a->req.err.msg,
		    NULL, retry_at(s, a->attempts), 0);
	}
	abort_req_free(a);
}

/* Collects finished requests and the uploads they finish. */
static void
collect_s3(struct sync *s)
{
	struct s3_req *r;

	while ((r = s->io.s3.done(s->io.s3.h)) != NULL) {
		if (r->user == NULL)
			abort_reply(s, (struct abort_req *)r);
		else if (scrub_owns(r))
			scrub_reply(s, r);
		else
			upload_reply(r);
	}
	reap_uploads(s);
}

/* The S3 part of a turn; returns 1 while hashing work is left. */
static int
run_s3(struct sync *s, int stopping)
{
	size_t budget = HASH_BUDGET;
	int slots, i, busy = 0;

	if (!s3_on(s))
		return 0;
	if (stopping)
		for (i = 0; i < s->nups; i++)
			upload_stop(s->ups[i], "outboxd stopped before "
			    "sending it");
	/* Local work: hash a slice of each file still being read. */
	for (i = 0; i < s->nups && budget > 0 && !stopping; i++) {
		size_t share = budget / (size_t)(s->nups - i);
		size_t used = upload_work(s->ups[i], share > 0 ? share : budget);

		budget -= used;
		if (used > 0 && used >= share)
			busy = 1;
	}
	/* While the leg fails, the uploads not started yet (claimed ahead)
	 * are given back, pending, rather than sent into the outage or held
	 * (--once would wait for them probe by probe); the oldest stays to
	 * go as the probe when the pause allows one and no other upload is
	 * under way. A multipart abort or a scrub's HEAD in flight does not
	 * count (the probe, hashing a large file, was given back for one,
	 * its hashing lost), nor does an upload already decided (gone,
	 * changed: it sends nothing, and took the probe's place). */
	if (s->legs[OUTBOX_S3].failures > 0 && !stopping) {
		int probe = engine_leg_allowance(s, OUTBOX_S3, 1) > 0;

		for (i = 0; probe && i < s->nups; i++)
			if (upload_started(s->ups[i]))
				probe = 0;
		for (i = 0; i < s->nups; i++) {
			if (upload_started(s->ups[i]) ||
			    upload_decided(s->ups[i]))
				continue;
			if (probe)
				probe = 0;
			else
				upload_stop(s->ups[i], "not sent: the S3 leg "
				    "is failing (due again once it works)");
		}
	}
	slots = s->cfg->concurrency - s3_busy(s);
	/* And the uploads under way send one request at a time: a large
	 * file claimed as the probe, resumed at P_PARTS, sent a part on
	 * every free slot into the refusal or the outage (the review of
	 * session 11: eight at once; t-sim multipart-probe). Its first
	 * answer decides: a part stored after the failure ends the pause
	 * (engine_s3_progress), a failure ends the upload. */
	if (s->legs[OUTBOX_S3].failures > 0 && !stopping) {
		int sending = 0;

		for (i = 0; i < s->nups; i++)
			sending += upload_inflight(s->ups[i]);
		if (slots > 1 - sending)
			slots = sending < 1 ? 1 - sending : 0;
	}
	share_slots(s, &slots, stopping);
	if (!stopping)
		send_aborts(s, &slots);
	reap_uploads(s);
	return busy;
}

/* ---- the loop ------------------------------------------------------------- */

static void
real_idle(void *arg, int wake_fd, int ms)
{
	struct pollfd p = { wake_fd, POLLIN, 0 };

	(void)arg;
	if (ms > 0)
		poll(&p, wake_fd >= 0 ? 1 : 0, ms);
}

static int
real_s3_start(void *h, struct s3_req *r)
{
	return s3_start(h, r);
}

static int
real_s3_running(const void *h)
{
	return s3_running(h);
}

static int
real_s3_wait(void *h, int timeout_ms, int wake_fd)
{
	return s3_wait(h, timeout_ms, wake_fd);
}

static struct s3_req *
real_s3_done(void *h)
{
	return s3_done(h);
}

static void
real_s3_cancel(void *h)
{
	s3_cancel_all(h);
}

static void
real_s3_free(void *h)
{
	s3_free(h);
}

static int
real_record(void *h, struct pg_doc *docs, size_t n, struct err *e)
{
	return pg_record_documents(h, docs, n, e);
}

static int
real_apply_meta(void *h, const char *event_id, const char *job_id,
    const cJSON *fields, const char **outcome, struct err *e)
{
	return pg_apply_job_meta(h, event_id, job_id, fields, outcome, e);
}

static int
real_set_etag(void *h, const char *job_id, const char *file_path,
    const char *sha256, const char *etag, const char *s3_key, struct err *e)
{
	return pg_set_etag(h, job_id, file_path, sha256, etag, s3_key, e);
}

static int
real_read_documents(void *h, const char *const *job_ids,
    const char *const *file_paths, size_t n, struct pg_row *rows,
    struct err *e)
{
	return pg_read_documents(h, job_ids, file_paths, n, rows, e);
}

static void
real_pg_free(void *h)
{
	pg_free(h);
}

static void
real_pg_set_url(void *h, const char *url)
{
	pg_set_url(h, url);
}

static unsigned
real_s3_creds_gen(void *h)
{
	return creds_generation(s3_creds(h));
}

int
engine_io_real(struct engine_io *io, const struct cfg *cfg, struct err *e)
{
	memset(io, 0, sizeof(*io));
	io->s3 = (struct engine_s3){ NULL, real_s3_start, real_s3_running,
	    real_s3_wait, real_s3_done, real_s3_cancel, real_s3_free,
	    real_s3_creds_gen };
	io->db = (struct engine_db){ NULL, real_record, real_apply_meta,
	    real_set_etag, real_read_documents, real_pg_free, real_pg_set_url };
	io->idle = real_idle;
	if (cfg->bucket != NULL && (io->s3.h = s3_new(cfg, e)) == NULL)
		return -1;
	if (cfg->db_on)
		io->db.h = pg_new(cfg);
	return 0;
}

static void
clear_pauses(struct sync *s)
{
	struct err e = {0};

	outbox_meta_set(s->ob, "s3_paused", "", &e);
	outbox_meta_set(s->ob, "db_paused", "", &e);
}

struct sync *
sync_new_io(const struct cfg *cfg, int wake_fd, const struct engine_io *io,
    struct err *e)
{
	struct sync *s = xcalloc(1, sizeof(*s));

	s->cfg = cfg;
	s->wake_fd = wake_fd;
	s->io = *io;
	s->recs_tail = &s->recs;
	pthread_mutex_init(&s->reload_mu, NULL);
	s->inflight = strmap_new();
	s->job_users = strmap_new();
	s->rootfd = open(cfg->watch_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (s->rootfd < 0) {
		err_sys(e, ERR_FATAL, "OUTBOXD_WATCH_DIR=%s", cfg->watch_dir);
		goto fail;
	}
	s->ob = outbox_open(cfg->state_db, 0, e);
	if (s->ob == NULL)
		goto fail;
	/* Retries are never further off than the cap; beyond it (plus a
	 * margin for a slow clock) the clock must have been set back. */
	outbox_set_horizon(s->ob, (int64_t)cfg->retry_max_s * 1000 + 60000);
	s->poison = poison_open(cfg->state_db);
	/* Only the legs that run hold new entries' claim order back. */
	if (outbox_live_legs(s->ob, s->io.s3.h != NULL, s->io.db.h != NULL,
	    e) < 0)
		goto fail;
	/* A pause a stopped outboxd left behind is not this one's. */
	clear_pauses(s);
	/* Each upload holds its file open from its claim: claims ahead stay
	 * well inside the descriptors this process may open. */
	{
		struct rlimit rl;
		int64_t cap = (int64_t)cfg->concurrency * (1 + AHEAD);

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
		    rl.rlim_cur != RLIM_INFINITY &&
		    (int64_t)rl.rlim_cur / 2 - cfg->concurrency < cap)
			cap = (int64_t)rl.rlim_cur / 2 - cfg->concurrency;
		s->ups_cap = cap > cfg->concurrency ? (int)cap :
		    cfg->concurrency;
	}
	s->env = (struct upload_env){ cfg, &s->io.s3, s, s->rootfd, MIN_PART,
	    NULL };
	atomic_store(&s->heartbeat, time_mono_ms());
	return s;
fail:
	sync_free(s);
	return NULL;
}

struct sync *
sync_new(const struct cfg *cfg, int wake_fd, struct err *e)
{
	struct engine_io io;
	struct sync *s;

	if (engine_io_real(&io, cfg, e) < 0)
		return NULL;
	s = sync_new_io(cfg, wake_fd, &io, e);
	/* Two workers: a large file's SHA-256 on one while the other hashes
	 * its parts (the simulator, with no hasher, hashes inline). */
	if (s != NULL && s3_on(s))
		s->env.hasher = hasher_new(HASH_WORKERS, wake_fd);
	if (s != NULL && io.s3.h != NULL)
		s->creds = s3_creds(io.s3.h);
	return s;
}

void
sync_reload(struct sync *s, const struct cfg *n)
{
	if (s->creds != NULL)
		creds_reload(s->creds, n);
	if (s->io.db.h != NULL && n->db_on) {
		pthread_mutex_lock(&s->reload_mu);
		free(s->new_db_url);
		s->new_db_url = xstrdup(n->database_url);
		pthread_mutex_unlock(&s->reload_mu);
		eventfd_poke(s->wake_fd);
	}
}

/*
 * New S3 credentials (refreshed, or reloaded on SIGHUP) or a new
 * DATABASE_URL end a refusal's pause at once: the next turn probes.
 */
static void
take_reloads(struct sync *s)
{
	char *url;

	if (s3_on(s) && s->io.s3.creds_gen != NULL) {
		unsigned g = s->io.s3.creds_gen(s->io.s3.h);

		if (g != s->creds_gen_seen) {
			s->creds_gen_seen = g;
			if (s->legs[OUTBOX_S3].refused) {
				log_info("new S3 credentials: probing the "
				    "paused S3 leg now");
				s->legs[OUTBOX_S3].paused_until = 0;
			}
		}
	}
	pthread_mutex_lock(&s->reload_mu);
	url = s->new_db_url;
	s->new_db_url = NULL;
	pthread_mutex_unlock(&s->reload_mu);
	if (url != NULL && s->io.db.set_url != NULL) {
		s->io.db.set_url(s->io.db.h, url);
		if (s->legs[OUTBOX_DB].failures > 0) {
			log_info("SIGHUP: probing the database leg with the "
			    "reloaded DATABASE_URL now");
			s->legs[OUTBOX_DB].paused_until = 0;
		}
	}
	if (url != NULL)
		memset(url, 0, strlen(url));
	free(url);
}

void
sync_set_min_part(struct sync *s, uint64_t bytes)
{
	s->env.min_part = bytes;
}

void
sync_free(struct sync *s)
{
	int i;

	if (s == NULL)
		return;
	/* Requests still in the client point into the uploads: cancel them
	 * and let their owners report, then drop the client. */
	if (s3_on(s)) {
		s->io.s3.cancel_all(s->io.s3.h);
		collect_s3(s);
	}
	scrub_stop(s);
	engine_flush(s);
	if (s3_on(s)) {
		s->io.s3.free(s->io.s3.h);
		s->io.s3.h = NULL;
	}
	/* Jobs still queued point into the uploads: stop the workers first. */
	hasher_free(s->env.hasher);
	s->env.hasher = NULL;
	for (i = 0; i < s->nups; i++)
		upload_free(s->ups[i]);
	free(s->ups);
	scrub_free(s);
	queue_free(s);
	dbleg_free(s);
	strmap_free(s->inflight);
	free(s->new_db_url);
	pthread_mutex_destroy(&s->reload_mu);
	if (s->io.db.h != NULL)
		s->io.db.free(s->io.db.h);
	outbox_close(s->ob);
	poison_close(s->poison);
	if (s->rootfd >= 0)
		close(s->rootfd);
	free(s);
}

void
sync_crash(struct sync *s)
{
	if (s == NULL)
		return;
	s->dead = 1;
	queue_free(s);
	sync_free(s);
}

void
sync_stop(struct sync *s)
{
	atomic_store(&s->stop, 1);
	eventfd_poke(s->wake_fd);
}

const struct metrics_live *
sync_live(const struct sync *s)
{
	return &s->live;
}

long long
sync_heartbeat(struct sync *s)
{
	return atomic_load(&s->heartbeat);
}

long long
sync_claimed_ahead(const struct sync *s)
{
	return s->ahead;
}

long long
sync_turns(const struct sync *s)
{
	return s->turns;
}

int
sync_uploads(const struct sync *s)
{
	return s->nups;
}

int
sync_held_findings(const struct sync *s)
{
	const struct rec *r;
	int n = 0;

	if (s->queue_failing)
		return 0;
	for (r = s->recs; r != NULL; r = r->next)
		if (r->kind == R_LEG && (r->oc.event == EV_GONE ||
		    r->oc.event == EV_CHANGED))
			n++;
	return n;
}

/* due, or later when leg is paused until then. */
static int64_t
pause_left(const struct sync *s, enum outbox_leg leg, int64_t due)
{
	/* --once does not wait for credentials refused a few times over:
	 * its entries stay pending (exit 75) for the next run. */
	if (s->once && s->legs[leg].refused &&
	    s->legs[leg].failures >= ONCE_REFUSALS)
		return INT64_MAX / 2;
	/* Nor for a store that failed every try for 10 s of the run: with
	 * retries capped under ONCE_WAIT_MS (OUTBOXD_RETRY_MAX_S=2, say)
	 * every probe would fall due within it, and the run would never
	 * end. The failures must span 10 s (a lone 503 late in a long run
	 * is retried: the review found the first version gave up on it,
	 * leaving the rest pending), and a leg that failed before the run
	 * (the simulator's engine steps on) is probed afresh. */
	if (s->once && s->legs[leg].failures > 0 && s->legs[leg].failed_at -
	    (s->legs[leg].failing_since > s->once_at ?
	    s->legs[leg].failing_since : s->once_at) >= ONCE_OUTAGE_MS)
		return INT64_MAX / 2;
	if (s->legs[leg].failures > 0) {
		int64_t left = s->legs[leg].paused_until - time_mono_ms();

		if (left > due)
			due = left;
	}
	return due;
}

/*
 * Milliseconds until work may be claimable: the next due entry of a live
 * leg, but not before that leg's pause ends. -1 when nothing is pending.
 */
static int64_t
next_work(struct sync *s)
{
	int64_t best = -1;
	int leg;

	/* An ETag to back-fill, or a multipart abort due, is work due once
	 * its leg's pause ends (--once waits for them). */
	if (s->io.db.h != NULL && outbox_etag_due(s->ob)) {
		best = pause_left(s, OUTBOX_DB, 0);
		s->etags_read_at = 0;
	}
	if (s3_on(s) && abort_due(s)) {
		s->aborts_read_at = 0;
		int64_t t = pause_left(s, OUTBOX_S3, 0);

		if (best < 0 || t < best)
			best = t;
	}
	for (leg = 0; leg < 2; leg++) {
		struct err e = {0};
		int64_t due;

		if ((leg == OUTBOX_S3 && !s3_on(s)) ||
		    (leg == OUTBOX_DB && s->io.db.h == NULL))
			continue;
		due = outbox_next_due(s->ob, (enum outbox_leg)leg, s3_on(s) &&
		    s->legs[OUTBOX_S3].failures == 0, &e);
		if (due < 0)
			continue;
		due = pause_left(s, (enum outbox_leg)leg, due);
		if (best < 0 || due < best)
			best = due;
	}
	return best;
}

/* Milliseconds to wait before the next turn. */
static int
idle_timeout(struct sync *s, int busy)
{
	int64_t t;

	if (busy)
		return 0;
	/* Requests in flight wake the loop when they finish; a short nap
	 * covers retries falling due meanwhile without asking the outbox
	 * every turn. */
	if (s3_busy(s) > 0)
		return s->deferred ? BATCH_WAIT_MS : 100;
	t = next_work(s);
	if (t < 0 || t > 1000)
		t = 1000;
	if (scrub_wait_ms(s) >= 0 && scrub_wait_ms(s) < t)
		t = scrub_wait_ms(s);	/* its next check, at its rate */
	if (s->deferred && t > BATCH_WAIT_MS)
		t = BATCH_WAIT_MS;	/* a claim or the queue waits */
	/* Due but not claimable (its path is in flight): do not spin. */
	if (t < 20)
		t = 20;
	return (int)t;
}

static void
wait_turn(struct sync *s, int timeout)
{
	if (s3_busy(s) > 0)
		s->io.s3.wait(s->io.s3.h, timeout, s->wake_fd);
	else if (timeout > 0)
		s->io.idle(s->io.idle_arg, s->wake_fd, timeout);
	eventfd_drain(s->wake_fd);
}

/*
 * One turn: collect the replies the last wait brought, start and send,
 * record a batch of database legs and ETags, write every outcome of the
 * turn in one outbox transaction, then wait. Returns 1 when more may be
 * due right away.
 */
static int
step_work(struct sync *s, int stopping)
{
	struct turn_claims tc;
	int hashing, recorded = 0, etags = 0;

	s->turns++;
	atomic_store(&s->heartbeat, time_mono_ms());
	take_reloads(s);
	if (s3_on(s))
		collect_s3(s);
	/* An upload id S3 just gave is written before any of its parts is
	 * sent, so a crash cannot leave parts behind that nothing aborts. */
	if (s->flush_now) {
		engine_flush(s);
		s->flush_now = 0;
	}
	/* Both legs' claims in one outbox transaction, with any outcome
	 * still queued. While uploads are in flight, a turn with room for few
	 * claims and few outcomes queued writes nothing (claim_now,
	 * queue_due): a later one writes them together, within BATCH_WAIT_MS.
	 * A finding about the file system (gone, changed) and progress the
	 * next turn reads back are written at the end of the turn that made
	 * them, as before (gone_unless_back looks again then, in case the
	 * watcher thread saw the file come back in between). */
	s->wrote = 0;
	s->deferred = 0;
	if (!claims_wanted(s, stopping, &tc)) {
		if (queue_due(s, stopping))
			engine_flush(s);
	} else if (flush_and(s, claim_turn, &tc) < 0) {
		/* Rolled back: nothing was claimed. */
		outbox_entries_free(tc.s3, tc.ns3);
		outbox_entries_free(tc.db, tc.ndb);
		memset(&tc, 0, sizeof(tc));
	} else {
		if (tc.ns3 > 0)
			s->claimed_at[OUTBOX_S3] = time_mono_ms();
		if (tc.ndb > 0)
			s->claimed_at[OUTBOX_DB] = time_mono_ms();
	}
	start_uploads(s, &tc);
	hashing = run_s3(s, stopping);
	if (!s->queue_failing) {
		recorded = dbleg_run(s, tc.db, tc.ndb);
		etags = dbleg_etags(s, stopping);
		/* Last: only what slots the legs left free. */
		scrub_turn(s, stopping);
	}
	if (queue_due(s, stopping))
		recorded += flush_end(s, stopping);
	/* Hashing left, or a full batch: more is waiting right now. */
	return hashing || recorded >= DB_BATCH || etags >= ETAG_BATCH;
}

static int
step(struct sync *s, int stopping)
{
	int busy = step_work(s, stopping);

	wait_turn(s, idle_timeout(s, busy));
	return busy;
}

int
sync_step(struct sync *s)
{
	step(s, 0);
	return s->fatal ? -1 : 0;
}

int
sync_run(struct sync *s)
{
	int64_t stop_deadline = 0;

	while (!s->fatal) {
		int stopping = atomic_load(&s->stop);

		if (stopping) {
			int busy = s3_busy(s);

			if (stop_deadline == 0) {
				stop_deadline = time_mono_ms() + STOP_GRACE_MS;
				if (busy > 0)
					log_info("stopping: letting %d "
					    "request(s) finish", busy);
			}
			if ((busy == 0 && s->nups == 0) ||
			    time_mono_ms() > stop_deadline)
				break;
		}
		step(s, stopping);
	}
	if (s3_busy(s) > 0)
		log_warnx("stopped with %d request(s) unfinished: they are "
		    "retried at the next start", s3_busy(s));
	return s->fatal ? -1 : 0;
}

int
sync_once(struct sync *s)
{
	s->once = 1;
	s->once_at = time_mono_ms();
	while (!s->fatal && !atomic_load(&s->stop)) {
		int busy = step_work(s, 0);
		int64_t due;

		/* Looked at before waiting: the last turn ends the run
		 * without a nap of up to a second after it. */
		if (!busy && s->nups == 0 && s3_busy(s) == 0 &&
		    s->recs == NULL) {
			due = next_work(s);
			if (due < 0 || due > ONCE_WAIT_MS)
				break;
		}
		wait_turn(s, idle_timeout(s, busy));
	}
	while (s->nups > 0 && !s->fatal)
		step(s, atomic_load(&s->stop));
	if (s3_on(s))
		collect_s3(s);	/* what the last wait brought */
	engine_flush(s);
	s->once = 0;	/* the simulator steps the same engine on */
	return s->fatal ? -1 : 0;
}
