/*
 * metrics.h - outboxd's state in Prometheus text format, for
 * node_exporter's textfile collector (OUTBOXD_METRICS_FILE). The file is
 * replaced atomically (written beside it, then renamed), so the collector
 * never reads half of it. Written by the main thread every few seconds.
 */
#ifndef OUTBOXD_METRICS_H
#define OUTBOXD_METRICS_H

#include "store/outbox.h"

struct metrics_extra {
	int s3_on, db_on;		/* which legs are configured */
	long long start_time_s;		/* when outboxd started (epoch s) */
	int ready;			/* the start-up rescan is journaled */
};

/* Renders the metrics text; the caller frees it. Pure. */
char *metrics_render(const struct outbox_counts *c,
    const struct metrics_extra *x, long long now_ms);

/* Writes text to path atomically. 0, or -1 with e. */
int metrics_write(const char *path, const char *text, struct err *e);

#endif
