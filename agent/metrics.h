/*
 * metrics.h - outboxd's state in Prometheus text format (exposition
 * format 0.0.4), for node_exporter's textfile collector
 * (OUTBOXD_METRICS_FILE) and for GET /metrics (OUTBOXD_HTTP_LISTEN).
 *
 * Two kinds of numbers go in:
 *  - gauges read from the outbox (entries per leg and state, the oldest
 *    pending entry, ...), through outbox_counts, so they survive restarts
 *    because the outbox does;
 *  - counters the engine keeps in memory since the process started
 *    (struct metrics_live): files stored, bytes uploaded, retries,
 *    failures by class. Prometheus counters are expected to reset when the
 *    process does (rate() and increase() handle it, and
 *    outboxd_start_time_seconds says when); sums over the outbox would not
 *    be counters at all, since retention and outboxctl retry make them go
 *    down.
 *
 * Adding a metric the engine keeps: one enum metrics_id value and one row
 * in metrics.c's table (name, type, help, extra labels, per leg or not);
 * metrics_add or metrics_set from the engine. Series never appear or
 * vanish with the state, and no label value flips: a value does.
 *
 * The file is replaced atomically (written beside it, then renamed), so
 * the collector never reads half of it; it is made 0644 whatever the
 * umask, so node_exporter (another user) can read it.
 */
#ifndef OUTBOXD_METRICS_H
#define OUTBOXD_METRICS_H

#include <stdatomic.h>

#include "store/outbox.h"

/* What the engine counts (or sets); each names a row in metrics.c. */
enum metrics_id {
	M_STORED,		/* counter, per leg: versions stored */
	M_RETRIES,		/* counter, per leg: claims after an attempt */
	M_FAIL_TRANSIENT,	/* counter, per leg: failed, retried later */
	M_FAIL_PERMANENT,	/* counter, per leg: failed until retried */
	M_UPLOADED_BYTES,	/* counter: bytes of the files S3 stored */
	M_LEG_PAUSED,		/* gauge, per leg: the breaker holds it */
	M_SCRUB_CHECKED,	/* counter: entries the scrub checked */
	M_SCRUB_FOUND,		/* counter: differences the scrub found */
	M_SCRUB_REPAIRED,	/* counter: repairs the scrub journaled */
	M_SCRUB_RUNNING,	/* gauge: 1 while a scrub pass is under way */
	M_SCRUB_CURSOR,		/* gauge: the pass has checked up to this id */
	M_SCRUB_END,		/* gauge: the pass ends at this entry id */
	M_LEG_REFUSED,		/* gauge, per leg: paused because the store
				   refused the credentials or the bucket */
	M_NIDS
};

/* The engine's numbers; written by the sync thread, read by any. */
struct metrics_live {
	atomic_llong v[M_NIDS][2];	/* [id][leg]; slot 0 if not per leg */
};

/* Adds n to (or sets to v) metric id of leg (OUTBOX_S3 for the ones that
 * are not per leg). Any thread; l may be NULL (nothing kept). */
void metrics_add(struct metrics_live *l, enum metrics_id id, int leg,
    long long n);
void metrics_set(struct metrics_live *l, enum metrics_id id, int leg,
    long long v);
/* Counts a leg outcome (stored, failed ...) by its event. */
void metrics_outcome(struct metrics_live *l, int leg, enum leg_event ev);
/* Counts the retries among n claimed entries (attempts > 1). */
void metrics_claimed(struct metrics_live *l, int leg,
    const struct outbox_entry *v, size_t n);

struct metrics_extra {
	int s3_on, db_on;		/* which legs are configured */
	long long start_time_s;		/* when outboxd started (epoch s) */
	int ready;			/* the start-up rescan is journaled */
	const char *version;		/* outboxd's version */
};

/* Renders the metrics text; the caller frees it. live may be NULL
 * (counters at 0). Pure but for reading live; any thread. */
char *metrics_render(const struct outbox_counts *c,
    const struct metrics_extra *x, const struct metrics_live *live,
    long long now_ms);

/* Writes text to path atomically, mode 0644. 0, or -1 with e. */
int metrics_write(const char *path, const char *text, struct err *e);

#endif
