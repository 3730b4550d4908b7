/*
 * engine.h - what the scheduler (sync.c) and the database leg (dbleg.c)
 * share inside agent/engine/: struct sync, the queue of outcomes, and the
 * helpers that report a leg's outcome. Not for use outside the engine.
 *
 * Legs never write the outbox. They do their I/O and report an outcome
 * (engine_outcome) or progress (engine_note); both wait in the queue
 * until the end of the turn, when engine_flush writes the whole queue in
 * one outbox transaction, each leg outcome through outbox_apply and so
 * through the state table (store/legstate.h). An outcome the outbox does
 * not take (disk full, a lock held too long) stays queued and is written
 * again next turn; no new work is claimed until the queue is empty. A
 * crash loses at most the queue: the legs are still in flight in the
 * outbox, come back as "stopped" at the next start, and are replayed,
 * which both stores make idempotent.
 */
#ifndef OUTBOXD_ENGINE_H
#define OUTBOXD_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "agent/engine/io.h"
#include "agent/engine/upload.h"
#include "agent/metrics.h"
#include "base/strmap.h"
#include "config/cfg.h"
#include "store/outbox.h"
#include "store/poison.h"

#define DENIED_MAX	64	/* entries remembered as denied */
#define DENIED_TIMES	3	/* denials, with others stored between, that
				   fail an entry */
#define RECHECK_MS	1000	/* aborts and ETags due: asked this often */

/* A leg's circuit breaker. */
struct leg {
	int failures;		/* consecutive transient failures */
	int64_t paused_until;	/* monotonic ms; one probe at a time till */
	int64_t failed_at;	/* monotonic ms of the last failure */
	int64_t failing_since;	/* monotonic ms of the first of them */
	int refused;		/* paused because the store refused the
				   credentials or the bucket (ERR_REFUSED) */
	/* Tickets number the leg's work as it is issued (S3: each request
	 * an upload sends, the upload keeping its last; the database: each
	 * success, its batches going one at a time), so a success can be
	 * told to be of work issued after a refusal, not of a request
	 * authorized before it: only the former counts a denial of another
	 * key, or ends the leg's pause. */
	long long tickets;	/* the last ticket issued */
	long long ok_ticket;	/* the highest ticket that succeeded */
	long long refused_at;	/* tickets at the last refusal or denial */
	long long failed_ticket;	/* tickets at the last failure */
	int64_t denied[DENIED_MAX];	/* entries denied (a ring) */
	int denials[DENIED_MAX];	/* how often each was while the
					   credentials worked */
	long long denied_at[DENIED_MAX]; /* tickets at each one's last */
	int ndenied;		/* next slot of the ring */
};

/* What a queued record writes. */
enum rec_kind {
	R_LEG,			/* a leg's outcome: outbox_apply */
	R_UPLOAD_ID,		/* a multipart upload's id (s1, or NULL) */
	R_PART,			/* part n1 (n2 bytes), ETag s1, SHA-256 s2 */
	R_UPLOAD_CLEAR,		/* forget the entry's upload and parts */
	R_ABORT_ADD,		/* queue upload s1 of key s2 for abort (s3) */
	R_ABORT_DONE,		/* upload s1 aborted, or unknown to S3 */
	R_ABORT_LATER,		/* abort of s1 failed (s2): retry at n1 */
	R_ETAG_DONE,		/* the document row of id has its ETag */
	R_REPAIR,		/* the scrub found entry id's version lost or
				   altered (s1 why; s2 S3's ETag when S3
				   holds it): journal a repair */
	R_SCRUB,		/* write the scrub's state (scrub.h) */
	R_LEG_PAUSE,		/* leg n1 paused because of s1 (NULL: resumed),
				   for status and metrics (outbox meta) */
};

/* One queued record; its strings are owned by it. */
struct rec {
	enum rec_kind kind;
	enum outbox_leg leg;		/* R_LEG */
	int64_t id;			/* the entry */
	struct outbox_outcome oc;	/* R_LEG; strings are copies */
	char *s1, *s2, *s3;		/* see enum rec_kind */
	int64_t n1, n2;
	struct outbox_repair rp;	/* R_REPAIR; strings are copies */
	int told;			/* R_REPAIR: the scrub was told */
	struct rec *next;
};

/* An AbortMultipartUpload in flight. */
struct abort_req {
	struct s3_req req;		/* first: the client hands it back */
	char *upload_id;		/* the upload to abort */
	int attempts;			/* including this one */
};

struct sync {
	const struct cfg *cfg;		/* read-only, owned by main */
	struct outbox *ob;		/* this thread's connection */
	int rootfd;			/* the uploads root */
	struct engine_io io;		/* the stores and the waiting */
	int wake_fd;			/* eventfd written by the watcher */
	atomic_int stop;		/* sync_stop was called (any thread) */
	atomic_llong heartbeat;		/* monotonic ms of the last turn */
	struct upload_env env;		/* what uploads need */
	struct upload **ups;		/* S3 legs in progress */
	int nups, capups;
	int64_t ups_bytes;		/* the sizes of their files, summed */
	int probe_skip;			/* the S3 claim skips denied keys */
	int ups_cap;			/* uploads claimed at most (AHEAD) */
	int naborts;			/* aborts in flight */
	struct strmap *inflight;	/* paths with an S3 leg in progress */
	struct rec *recs, **recs_tail;	/* the queue, oldest first */
	int queue_failing;		/* the last flush failed (logged once) */
	int flush_now;			/* a multipart upload id is queued: it
					   must be durable before its parts go */
	int nrecs;			/* records in the queue */
	int recs_s3;			/* of which S3 leg outcomes */
	int64_t recs_since;		/* monotonic ms the oldest was queued */
	int recs_urgent;		/* a finding about the file system is
					   queued: written at the turn's end */
	int64_t claimed_at[2];		/* monotonic ms of each leg's last
					   claim that took legs */
	int wrote;			/* this turn wrote the queue */
	int deferred;			/* this turn let a claim or the queue
					   wait for company (BATCH_WAIT_MS) */
	int64_t aborts_read_at;		/* monotonic ms send_aborts last
					   asked the outbox; 0: ask next turn */
	int64_t etags_read_at;		/* the same for dbleg_etags */
	struct strmap *job_users;	/* job id -> user id ("" unknown) */
	struct leg legs[2];		/* OUTBOX_S3, OUTBOX_DB */
	int dead;			/* sync_crash: write nothing more */
	int fatal;			/* the outbox failed: stop */
	int once;			/* outboxd --once: no scrub */
	int64_t once_at;		/* monotonic ms --once began */
	struct scrub *scrub;		/* the background scrub (scrub.c), or
					   NULL until its first turn */
	long long turns;		/* loop turns so far */
	long long ahead;		/* S3 legs claimed ahead of free slots */
	struct poison *poison;		/* marks the entry being inspected */
	struct metrics_live live;	/* counters for the metrics */
	unsigned creds_gen_seen;	/* the S3 credentials' generation */
	pthread_mutex_t reload_mu;	/* guards new_db_url */
	char *new_db_url;		/* from sync_reload, for the sync thread */
	struct creds *creds;		/* the S3 client's, or NULL (simulator) */
};

/* The legs a turn claims, in its one outbox transaction (sync.c). */
struct turn_claims {
	int s3_room;			/* S3 legs it may claim: */
	int s3_firm;			/*   this many for free slots, */
	int64_t s3_ahead_bytes;		/*   the rest while this many bytes */
	int db_want;			/* database legs it may claim */
	int db_s3_on;			/* the database legs wait for S3 */
	struct outbox_entry *s3, *db;	/* what it claimed */
	size_t ns3, ndb;
};

/* Queues a leg's outcome (copied) for the end of the turn. */
void engine_outcome(struct sync *s, enum outbox_leg leg, int64_t id,
    const struct outbox_outcome *oc);
/* Queues progress of entry id (see enum rec_kind; strings copied). */
void engine_note(struct sync *s, enum rec_kind kind, int64_t id,
    const char *s1, const char *s2, const char *s3, int64_t n1, int64_t n2);
/* Queues a repair (outbox_journal_repair; strings copied). */
void engine_note_repair(struct sync *s, const struct outbox_repair *rp);
/* Writes the queue in one outbox transaction; 0 when it is empty after. */
int engine_flush(struct sync *s);

/* Outcomes with their log line: a transient failure (retried after
 * backoff, the leg's breaker told), a permanent one, a skip. */
void engine_retry_later(struct sync *s, enum outbox_leg leg,
    const struct outbox_entry *en, const struct err *e);
void engine_fail(struct sync *s, enum outbox_leg leg,
    const struct outbox_entry *en, const struct err *e);
void engine_skip(struct sync *s, enum outbox_leg leg,
    const struct outbox_entry *en, enum leg_event ev, const char *why);
/* The store refused the leg's credentials or bucket (ERR_REFUSED), or
 * denied access (ERR_DENIED): the leg pauses with backoff up to the cap
 * and en stays pending; an AccessDenied met twice by en while other
 * requests succeed in between is en's own and fails it. */
void engine_refused(struct sync *s, enum outbox_leg leg,
    const struct outbox_entry *en, const struct err *e);
/* A failure to open or read en's file: gone, transient or permanent. */
void engine_file_problem(struct sync *s, enum outbox_leg leg,
    const struct outbox_entry *en, const struct err *e);

/* The leg's breaker: closed again, one more failure, or how many of its
 * entries may be claimed now (all, none while paused, or one probe). */
void engine_leg_ok(struct sync *s, enum outbox_leg leg);
/* The next ticket of the S3 leg (struct leg), taken by each request an
 * upload sends: its success proves what the credentials allow now only
 * if it was sent after the last refusal. */
long long engine_s3_ticket(struct sync *s);
/* A request of the S3 leg that took ticket succeeded on the way (a part
 * stored): as a stored file does, it counts as
 * a success of the credentials, and it ends the leg's pause if it was
 * sent after the leg's last failure and its last refusal. */
void engine_s3_progress(struct sync *s, long long ticket);
void engine_leg_failed(struct sync *s, enum outbox_leg leg);
int engine_leg_allowance(const struct sync *s, enum outbox_leg leg, int want);

/* 1 when st is still the version en journaled. */
int engine_same_file(const struct stat *st, const struct outbox_entry *en);

/* The database leg (dbleg.c): records the n database legs the turn
 * claimed (v, freed here) and job.json entries, then back-fills ETags.
 * Each returns how many it handled. */
int dbleg_run(struct sync *s, struct outbox_entry *v, size_t n);
int dbleg_etags(struct sync *s, int stopping);
void dbleg_free(struct sync *s);

#endif
