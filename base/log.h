/*
 * log.h - one line per event on stderr, readable by people by default.
 *
 * Text lines look like "outboxd: warning: s3 job=… path=…: message".
 * With OUTBOXD_LOG_FORMAT=json each line is one JSON object
 * {"time","level","msg", optional "job","path","leg"}. Under systemd (the
 * JOURNAL_STREAM variable names our stderr) each line goes to journald
 * as a native entry (sd_journal_sendv) with its PRIORITY and, for a line
 * about an entry, the fields OUTBOXD_JOB, OUTBOXD_PATH, OUTBOXD_LEG and
 * OUTBOXD_ENTRY, so `journalctl OUTBOXD_JOB=<id>` tells one job's story;
 * MESSAGE is the line as it would be printed. Should journald refuse
 * it, the line goes to stderr with a "<N>" priority prefix (sd-daemon(3)).
 * Every call writes its line with one write(2), so threads do not
 * interleave. Messages never contain secrets: callers pass only what is
 * safe to show.
 */
#ifndef OUTBOXD_LOG_H
#define OUTBOXD_LOG_H

#include <syslog.h>

#include "base/util.h"

enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* Sets the program name, format and the most verbose priority shown
 * (LOG_INFO by default; LOG_DEBUG with OUTBOXD_DEBUG=1). Call before threads. */
void log_init(const char *progname, enum log_format format, int max_priority);

/* Context of a line about one outbox entry; any field may be NULL. */
/* Switches text/JSON while running (SIGHUP); any thread may be logging. */
void log_set_format(enum log_format format);

struct log_ctx {
	const char *job;	/* job id */
	const char *path;	/* path relative to the uploads root */
	const char *leg;	/* "s3", "db" or NULL */
	int64_t entry;		/* the outbox entry's id, or 0 */
};

void log_msg(int priority, const struct log_ctx *ctx, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_err(...)	log_msg(LOG_ERR, NULL, __VA_ARGS__)
#define log_warnx(...)	log_msg(LOG_WARNING, NULL, __VA_ARGS__)
#define log_info(...)	log_msg(LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...)	log_msg(LOG_DEBUG, NULL, __VA_ARGS__)

/* A warning with ": strerror(errno)" appended. */
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Logs at LOG_CRIT and exits with the given status; never returns. */
void fatalx(int status, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));

#endif
