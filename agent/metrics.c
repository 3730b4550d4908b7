/* metrics.c - see metrics.h. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/metrics.h"

static void
family(struct buf *b, const char *name, const char *type, const char *help)
{
	buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

char *
metrics_render(const struct outbox_counts *c, const struct metrics_extra *x,
    long long now_ms)
{
	static const char *const legs[2] = { "s3", "db" };
	struct buf b = {0};
	int i, k;

	family(&b, "outboxd_up", "gauge", "1 while outboxd runs; ready is 1 "
	    "once its start-up rescan is journaled.");
	buf_printf(&b, "outboxd_up{ready=\"%d\"} 1\n", x->ready);
	family(&b, "outboxd_start_time_seconds", "gauge", "When outboxd "
	    "started, seconds since the epoch.");
	buf_printf(&b, "outboxd_start_time_seconds %lld\n", x->start_time_s);
	family(&b, "outboxd_leg_enabled", "gauge", "1 when the leg (S3, "
	    "database) is configured.");
	buf_printf(&b, "outboxd_leg_enabled{leg=\"s3\"} %d\n", x->s3_on);
	buf_printf(&b, "outboxd_leg_enabled{leg=\"db\"} %d\n", x->db_on);
	family(&b, "outboxd_entries", "gauge", "Outbox entries by leg and "
	    "state of that leg.");
	for (i = 0; i < 2; i++) {
		const int64_t *v = i == 0 ? c->s3 : c->db;

		for (k = 0; k < OUTBOX_NSTATES; k++)
			buf_printf(&b, "outboxd_entries{leg=\"%s\",state=\"%s\"} "
			    "%lld\n", legs[i], outbox_state_name(k),
			    (long long)v[k]);
	}
	family(&b, "outboxd_entries_total", "gauge", "Outbox entries by "
	    "overall state (a failed or pending leg makes the entry so).");
	buf_printf(&b, "outboxd_entries_total{state=\"done\"} %lld\n",
	    (long long)c->done);
	buf_printf(&b, "outboxd_entries_total{state=\"pending\"} %lld\n",
	    (long long)c->pending);
	buf_printf(&b, "outboxd_entries_total{state=\"failed\"} %lld\n",
	    (long long)c->failed);
	family(&b, "outboxd_uploaded_bytes", "gauge", "Bytes of the entries "
	    "stored in S3.");
	buf_printf(&b, "outboxd_uploaded_bytes %lld\n", (long long)c->bytes_done);
	family(&b, "outboxd_retries", "gauge", "Attempts beyond the first, "
	    "summed over the entries in the outbox, by leg.");
	for (i = 0; i < 2; i++)
		buf_printf(&b, "outboxd_retries{leg=\"%s\"} %lld\n", legs[i],
		    (long long)c->retries[i]);
	family(&b, "outboxd_oldest_pending_age_seconds", "gauge", "Age of the "
	    "oldest entry not yet stored by every live leg (0 when none).");
	buf_printf(&b, "outboxd_oldest_pending_age_seconds %.3f\n",
	    c->oldest_pending_ms >= 0 ? (double)(now_ms - c->oldest_pending_ms)
	    / 1000.0 : 0.0);
	family(&b, "outboxd_last_success_timestamp_seconds", "gauge", "When a "
	    "leg last stored an entry, seconds since the epoch (0: never).");
	for (i = 0; i < 2; i++) {
		const char *t = i == 0 ? c->last_s3_done : c->last_db_done;
		int64_t ms = t[0] ? time_parse_iso8601(t) : 0;

		buf_printf(&b, "outboxd_last_success_timestamp_seconds{leg=\"%s\"} "
		    "%.3f\n", legs[i], ms > 0 ? (double)ms / 1000.0 : 0.0);
	}
	family(&b, "outboxd_not_job_directories", "gauge", "Top-level "
	    "directories skipped because their name is not a UUID.");
	buf_printf(&b, "outboxd_not_job_directories %lld\n",
	    (long long)c->not_jobs);
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
	if (write_all(fd, text, n) < 0) {
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
