/* metrics.c - see metrics.h. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/metrics.h"

static const char *const legs[2] = { "s3", "db" };

/*
 * The metrics the engine keeps, in the order they are written. Rows that
 * share a name are one family (one HELP and TYPE) and must be adjacent;
 * they differ by their fixed label.
 */
static const struct live_def {
	const char *name;
	const char *type;	/* "counter" (name ends in _total) or "gauge" */
	const char *help;
	const char *label;	/* a fixed label pair, or NULL */
	int per_leg;		/* one series per leg, or one (slot 0) */
} live_defs[M_NIDS] = {
	[M_STORED] = { "outboxd_stored_total", "counter",
	    "Versions a leg stored (S3 object written, database row "
	    "recorded) since outboxd started.", NULL, 1 },
	[M_RETRIES] = { "outboxd_retries_total", "counter",
	    "Legs claimed again after an earlier attempt (a failure, or one "
	    "cut short by a stop) since outboxd started.", NULL, 1 },
	[M_FAIL_TRANSIENT] = { "outboxd_failures_total", "counter",
	    "Failed attempts since outboxd started, by leg and class: "
	    "transient ones are retried after backoff, permanent ones wait "
	    "for outboxctl retry.", "class=\"transient\"", 1 },
	[M_FAIL_PERMANENT] = { "outboxd_failures_total", "counter", NULL,
	    "class=\"permanent\"", 1 },
	[M_UPLOADED_BYTES] = { "outboxd_uploaded_bytes_total", "counter",
	    "Bytes of the files S3 stored since outboxd started.", NULL, 0 },
	[M_LEG_PAUSED] = { "outboxd_leg_paused", "gauge", "1 while the leg "
	    "is paused after consecutive transient failures (one probe at a "
	    "time until one succeeds).", NULL, 1 },
	[M_SCRUB_CHECKED] = { "outboxd_scrub_checked_total", "counter",
	    "Entries the background scrub checked against S3 and the "
	    "database since outboxd started.", NULL, 0 },
	[M_SCRUB_FOUND] = { "outboxd_scrub_differences_total", "counter",
	    "Entries whose S3 object or documents row the scrub found lost "
	    "or altered since outboxd started.", NULL, 0 },
	[M_SCRUB_REPAIRED] = { "outboxd_scrub_repairs_total", "counter",
	    "Repair entries the scrub journaled since outboxd started.", NULL,
	    0 },
	[M_SCRUB_RUNNING] = { "outboxd_scrub_running", "gauge", "1 while a "
	    "scrub pass is under way.", NULL, 0 },
	[M_SCRUB_CURSOR] = { "outboxd_scrub_cursor", "gauge", "The entry id "
	    "up to which the current (or last) scrub pass has checked.", NULL,
	    0 },
	[M_SCRUB_END] = { "outboxd_scrub_end_id", "gauge", "The entry id at "
	    "which the current (or last) scrub pass ends (its progress is "
	    "outboxd_scrub_cursor / outboxd_scrub_end_id).", NULL, 0 },
	[M_LEG_REFUSED] = { "outboxd_leg_refused", "gauge", "1 while the leg "
	    "is paused because its store refused the credentials, the bucket "
	    "or a privilege (entries stay pending; fix them and send SIGHUP).",
	    NULL, 1 },
};

void
metrics_add(struct metrics_live *l, enum metrics_id id, int leg, long long n)
{
	if (l != NULL)
		atomic_fetch_add(&l->v[id][leg ? 1 : 0], n);
}

void
metrics_set(struct metrics_live *l, enum metrics_id id, int leg, long long v)
{
	if (l != NULL)
		atomic_store(&l->v[id][leg ? 1 : 0], v);
}

void
metrics_outcome(struct metrics_live *l, int leg, enum leg_event ev)
{
	switch (ev) {
	case EV_STORED: case EV_STORED_NO_ETAG: case EV_DUPLICATE:
		metrics_add(l, M_STORED, leg, 1);
		break;
	case EV_TRANSIENT:
		metrics_add(l, M_FAIL_TRANSIENT, leg, 1);
		break;
	case EV_PERMANENT: case EV_INVALID:
		metrics_add(l, M_FAIL_PERMANENT, leg, 1);
		break;
	default:
		break;
	}
}

void
metrics_claimed(struct metrics_live *l, int leg, const struct outbox_entry *v,
    size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if ((leg == OUTBOX_S3 ? v[i].s3_attempts : v[i].db_attempts) > 1)
			metrics_add(l, M_RETRIES, leg, 1);
}

static void
family(struct buf *b, const char *name, const char *type, const char *help)
{
	buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value as the text format wants it: \ " and newline escaped. */
static void
label_value(struct buf *b, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '\\' || *s == '"')
			buf_printf(b, "\\%c", *s);
		else if (*s == '\n')
			buf_puts(b, "\\n");
		else
			buf_append(b, s, 1);
	}
}

static void
render_live(struct buf *b, const struct metrics_live *l)
{
	const char *prev = "";
	int id, i;

	for (id = 0; id < M_NIDS; id++) {
		const struct live_def *d = &live_defs[id];

		if (strcmp(d->name, prev) != 0)
			family(b, d->name, d->type, d->help);
		prev = d->name;
		for (i = 0; i < (d->per_leg ? 2 : 1); i++) {
			long long v = l ? atomic_load(&l->v[id][i]) : 0;
			const char *sep = d->per_leg && d->label ? "," : "";

			buf_puts(b, d->name);
			if (d->per_leg || d->label)
				buf_printf(b, "{%s%s%s%s%s}",
				    d->per_leg ? "leg=\"" : "",
				    d->per_leg ? legs[i] : "",
				    d->per_leg ? "\"" : "", sep,
				    d->label ? d->label : "");
			buf_printf(b, " %lld\n", v);
		}
	}
}

/* Gauges of the process itself. */
static void
render_process(struct buf *b, const struct metrics_extra *x)
{
	family(b, "outboxd_build_info", "gauge", "Always 1; the version of "
	    "outboxd that is running.");
	buf_puts(b, "outboxd_build_info{version=\"");
	label_value(b, x->version);
	buf_puts(b, "\"} 1\n");
	family(b, "outboxd_up", "gauge", "1 while outboxd runs.");
	buf_puts(b, "outboxd_up 1\n");
	family(b, "outboxd_ready", "gauge", "1 once the start-up rescan is "
	    "journaled (as READY=1 to systemd and GET /readyz).");
	buf_printf(b, "outboxd_ready %d\n", x->ready ? 1 : 0);
	family(b, "outboxd_start_time_seconds", "gauge", "When outboxd "
	    "started, seconds since the epoch (the counters start at 0 then).");
	buf_printf(b, "outboxd_start_time_seconds %lld\n", x->start_time_s);
	family(b, "outboxd_leg_enabled", "gauge", "1 when the leg (S3, "
	    "database) is configured.");
	buf_printf(b, "outboxd_leg_enabled{leg=\"s3\"} %d\n", x->s3_on);
	buf_printf(b, "outboxd_leg_enabled{leg=\"db\"} %d\n", x->db_on);
}

/* Gauges read from the outbox. */
static void
render_outbox(struct buf *b, const struct outbox_counts *c, long long now_ms)
{
	int i, k;

	family(b, "outboxd_entries", "gauge", "Outbox entries by leg and "
	    "state of that leg.");
	for (i = 0; i < 2; i++) {
		const int64_t *v = i == 0 ? c->s3 : c->db;

		for (k = 0; k < OUTBOX_NSTATES; k++)
			buf_printf(b, "outboxd_entries{leg=\"%s\",state=\"%s\"} "
			    "%lld\n", legs[i], outbox_state_name(k),
			    (long long)v[k]);
	}
	family(b, "outboxd_entries_overall", "gauge", "Outbox entries by "
	    "overall state (a failed or pending leg makes the entry so).");
	buf_printf(b, "outboxd_entries_overall{state=\"done\"} %lld\n",
	    (long long)c->done);
	buf_printf(b, "outboxd_entries_overall{state=\"pending\"} %lld\n",
	    (long long)c->pending);
	buf_printf(b, "outboxd_entries_overall{state=\"failed\"} %lld\n",
	    (long long)c->failed);
	family(b, "outboxd_s3_done_bytes", "gauge", "Bytes of the outbox's "
	    "entries whose S3 leg is done.");
	buf_printf(b, "outboxd_s3_done_bytes %lld\n", (long long)c->bytes_done);
	family(b, "outboxd_oldest_pending_age_seconds", "gauge", "Age of the "
	    "oldest entry not yet stored by every live leg (0 when none).");
	buf_printf(b, "outboxd_oldest_pending_age_seconds %.3f\n",
	    c->oldest_pending_ms >= 0 ? (double)(now_ms - c->oldest_pending_ms)
	    / 1000.0 : 0.0);
	family(b, "outboxd_last_success_timestamp_seconds", "gauge", "When a "
	    "leg last stored an entry, seconds since the epoch (0: never).");
	for (i = 0; i < 2; i++) {
		const char *t = i == 0 ? c->last_s3_done : c->last_db_done;
		int64_t ms = t[0] ? time_parse_iso8601(t) : 0;

		buf_printf(b, "outboxd_last_success_timestamp_seconds{leg=\"%s\"} "
		    "%.3f\n", legs[i], ms > 0 ? (double)ms / 1000.0 : 0.0);
	}
	family(b, "outboxd_entries_pruned_total", "counter", "Done entries "
	    "retention deleted from the outbox (OUTBOXD_RETENTION).");
	buf_printf(b, "outboxd_entries_pruned_total %lld\n",
	    (long long)c->pruned);
	family(b, "outboxd_not_job_directories", "gauge", "Top-level "
	    "directories skipped because their name is not a UUID.");
	buf_printf(b, "outboxd_not_job_directories %lld\n",
	    (long long)c->not_jobs);
}

char *
metrics_render(const struct outbox_counts *c, const struct metrics_extra *x,
    const struct metrics_live *live, long long now_ms)
{
	struct buf b = {0};

	render_process(&b, x);
	render_outbox(&b, c, now_ms);
	render_live(&b, live);
	return buf_take(&b);
}

int
metrics_write(const char *path, const char *text, struct err *e)
{
	char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
	size_t n = strlen(text);
	int fd, rc = -1;

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
	    0644);
	if (fd < 0) {
		err_sys(e, ERR_TRANSIENT, "OUTBOXD_METRICS_FILE: %s", tmp);
		goto out;
	}
	/* Readable by node_exporter (another user) whatever our umask: the
	 * unit's UMask=0077 would make it 0600. Nothing in it is secret. */
	if (fchmod(fd, 0644) < 0 || write_all(fd, text, n) < 0) {
		err_sys(e, ERR_TRANSIENT, "OUTBOXD_METRICS_FILE: %s", tmp);
		close(fd);
		unlink(tmp);
		goto out;
	}
	if (close(fd) < 0 || rename(tmp, path) < 0) {
		err_sys(e, ERR_TRANSIENT, "OUTBOXD_METRICS_FILE: %s", path);
		unlink(tmp);
		goto out;
	}
	rc = 0;
out:
	free(tmp);
	return rc;
}
