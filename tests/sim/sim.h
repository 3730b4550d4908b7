/*
 * sim.h - the deterministic simulation of the sync engine (t-sim): what
 * the driver (sim.c) and the simulated stores (fakes.c) share.
 *
 * One struct world is one schedule: a simulated clock, one seeded
 * generator for every choice, a real uploads tree and outbox in a
 * temporary directory, the simulated S3 and database (which outlive the
 * engine across crashes, as remote stores do), and what the reference
 * model needs to judge the end state.
 */
#ifndef OUTBOXD_SIM_H
#define OUTBOXD_SIM_H

#include <stddef.h>
#include <stdint.h>

#include "agent/engine/io.h"
#include "base/strmap.h"

/* How a store behaves for the next requests. */
enum store_mode {
	MODE_UP,	/* answers, with rare faults when the world is faulty */
	MODE_DOWN,	/* connection refused */
	MODE_FLAKY,	/* every fault, often */
	MODE_REFUSED,	/* refuses the credentials or the bucket (S3: one
			   of its refusals, drawn per period; the database:
			   a wrong password or a revoked privilege) */
};

/* In the message of every refusal, so the checks tell an entry failed
 * because of one. */
#define SIM_REFUSED "(sim: refused)"

/* A fault forced on the next request of a store (named schedules). */
enum fault {
	F_NONE,
	F_500,		/* 500 InternalError */
	F_503,		/* 503 SlowDown */
	F_RESET,	/* the connection reset before a reply */
	F_STALL,	/* no progress until the client's timeout */
	F_LOST,		/* done by the store, but the reply was lost */
	F_403,		/* 403 AccessDenied: permanent */
	F_NFAULTS
};

/* One version a store took, for the order checks. */
struct taken {
	char sha[65];
	int node;		/* S3: the instance whose PUT this was */
	struct taken *next;
};

/* An object in the simulated bucket. */
struct fobject {
	char sha[65];		/* of its bytes */
	char etag[80];
	char meta_sha[65];	/* x-amz-meta-sha256 */
	int64_t size;
	struct taken *history;	/* every version stored at the key, newest
				   first */
};

/* A document row in the simulated database. */
struct fdoc {
	char sha[65];
	char etag[80];		/* "" for NULL */
	int has_key;		/* s3_key is set */
	int64_t size;
	struct taken *history;	/* every sha the row held, newest first */
};

/* A user_activity row. */
struct factivity {
	char *path;		/* <job>/<file_path> */
	char type[16];		/* file_upload, file_update */
	char sha[65];
};

struct fake_s3;
struct fake_db;

struct world {
	uint64_t seed;
	uint64_t rng[4];		/* the driver's choices */
	int64_t wall, mono;		/* simulated clocks, ms */
	int faulty;			/* random faults at every interaction */
	int kms;			/* the bucket answers like SSE-KMS */
	struct fake_s3 *s3;
	struct fake_db *db;
	long long faults;		/* faults injected */
	long long requests;		/* store interactions */
	long long refusals;		/* periods a store refused */
	long long refused;		/* requests refused in them */
	char violation[1024];		/* the first broken promise, or "" */
	int node;			/* the instance whose engine runs now */
	/* Called whenever the engine waits (idle or for S3): the driver's
	 * chance to stop an engine that never ends. */
	void (*on_wait)(struct world *w);
	void *driver;
};

uint64_t world_rand(struct world *w, uint64_t n);

/* The simulated stores. They belong to the world; the engine's free
 * hooks leave them alone. */
struct fake_s3 *fake_s3_new(struct world *w);
void fake_s3_free(struct fake_s3 *f);
void fake_s3_io(struct fake_s3 *f, struct engine_s3 *io);
void fake_s3_mode(struct fake_s3 *f, enum store_mode m);
void fake_s3_force(struct fake_s3 *f, enum fault fl);
/* A policy on key: every request for it is denied (403 AccessDenied)
 * while on; the other keys are stored as usual. */
void fake_s3_deny(struct fake_s3 *f, const char *key, int on);
/* MODE_REFUSED with refusal kind (0..FAKE_S3_REFUSALS-1), -1 drawn. */
#define FAKE_S3_REFUSALS 6
void fake_s3_refuse(struct fake_s3 *f, int kind);
const char *fake_s3_refusal_name(int kind);
/* Traps for one named schedule: the reply to the next
 * CompleteMultipartUpload is lost (S3 completes it); the first HEAD
 * switches to MODE_REFUSED with kind. fake_s3_trapped: 1 once the HEAD
 * trap fired. */
void fake_s3_lose_next_complete(struct fake_s3 *f);
void fake_s3_refuse_at_head(struct fake_s3 *f, int kind);
int fake_s3_trapped(const struct fake_s3 *f);
/* Trap: the next PUT of key, started while the store is up, takes ms
 * and succeeds even if the store refuses everyone meanwhile (S3 checked
 * its signature when it began: a long upload outlives a revocation). */
void fake_s3_slow(struct fake_s3 *f, const char *key, int64_t ms);
/* The most requests in flight at once that began while the store
 * refused (since the last reset). */
int fake_s3_peak_refused(struct fake_s3 *f, int reset);
/* Every request started while the store is up takes ms (0: the seeded
 * latency again). */
void fake_s3_pace(struct fake_s3 *f, int64_t ms);
/* The n-th PUT started from now (while up) is answered 503 SlowDown;
 * returns how many PUTs the last such trap still waited for (0: it
 * fired, or none was set). */
int fake_s3_fail_put(struct fake_s3 *f, int n);
/* The next PUT of key (while up) is answered 503 SlowDown; NULL clears.
 * Returns 1 if the last such trap had not fired. */
int fake_s3_fail_key(struct fake_s3 *f, const char *key);
/* on: the store takes every CreateMultipartUpload and then answers each
 * of its parts 404 NoSuchUpload (an S3-compatible store that loses its
 * uploads). */
void fake_s3_lose_uploads(struct fake_s3 *f, int on);
/* 1 while the trap of fake_s3_slow waits for its PUT. */
int fake_s3_slow_armed(const struct fake_s3 *f);
/* on: every request begun from now while the store is up (but a slow
 * one's, authorized before) is answered 503 SlowDown within 10 ms, while
 * those begun before still succeed; the count of fake_s3_peak_after_failure starts
 * again. off: requests succeed again. */
void fake_s3_fail_new(struct fake_s3 *f, int on);
/* The most object PUTs of the current instance in flight at once that
 * began after the client was first answered 503 under fake_s3_fail_new
 * (-1: no 503 answered yet). */
int fake_s3_peak_after_failure(const struct fake_s3 *f);
/* The process died: each request in flight was either completed by the
 * server before the connection dropped, or not (seeded). */
void fake_s3_crash(struct fake_s3 *f);
struct fobject *fake_s3_object(struct fake_s3 *f, const char *key);
/* The bucket loses key (a lifecycle rule, a person): 1 when it was there. */
int fake_s3_lose(struct fake_s3 *f, const char *key);
/* Part uploads of parts already sent once to the same upload. */
long long fake_s3_parts_resent(const struct fake_s3 *f);
const struct strmap *fake_s3_objects(const struct fake_s3 *f);
/* Times part n was sent to upload upload_id. */
long long fake_s3_part_sends(const struct fake_s3 *f, const char *upload_id,
    int n);

struct fake_db *fake_db_new(struct world *w);
void fake_db_free(struct fake_db *f);
void fake_db_io(struct fake_db *f, struct engine_db *io);
void fake_db_mode(struct fake_db *f, enum store_mode m);
void fake_db_force(struct fake_db *f, enum fault fl);
struct fdoc *fake_db_doc(struct fake_db *f, const char *path);
/* A restore loses path's documents row: 1 when it was there. */
int fake_db_lose(struct fake_db *f, const char *path);
const struct factivity *fake_db_activities(const struct fake_db *f,
    size_t *n);
/* The status job.json last set for job, or NULL. */
const char *fake_db_job_status(struct fake_db *f, const char *job);
size_t fake_db_ndocs(const struct fake_db *f);

/* Notes the first violation (printf-style). */
void world_violation(struct world *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
