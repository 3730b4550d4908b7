/*
 * log.c - see log.h. Formatting happens into a stack buffer and the line
 * leaves with a single write(2) to stderr, which keeps lines whole across
 * threads without a lock.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

/* CODE_FILE would name log.c for every line: no use. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "base/keymap.h"
#include "base/log.h"

static const char *log_prog = "outboxd";
static atomic_int log_fmt = LOG_FORMAT_TEXT;
static int log_max = LOG_INFO;
static int log_journal;		/* stderr is connected to journald */
static int log_native;		/* and its native socket is there */

/* True when JOURNAL_STREAM names the device and inode of our stderr. */
static int
stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
		return 0;
	if (fstat(2, &st) < 0)
		return 0;
	return (unsigned long long)st.st_dev == dev &&
	    (unsigned long long)st.st_ino == ino;
}

void
log_init(const char *progname, enum log_format format, int max_priority)
{
	log_prog = progname;
	log_fmt = format;
	log_max = max_priority;
	log_journal = stderr_is_journal();
	/* sd_journal_sendv drops a line silently when the socket is missing
	 * (ENOENT): then the stream, which we know is there, carries it. */
	log_native = log_journal &&
	    access("/run/systemd/journal/socket", W_OK) == 0;
}

void
log_set_format(enum log_format format)
{
	atomic_store(&log_fmt, (int)format);
}

static const char *
level_name(int priority)
{
	switch (priority) {
	case LOG_EMERG: case LOG_ALERT: case LOG_CRIT: return "fatal";
	case LOG_ERR: return "error";
	case LOG_WARNING: return "warning";
	case LOG_NOTICE: case LOG_INFO: return "info";
	default: return "debug";
	}
}

/*
 * Appends s as a JSON string body (without quotes), escaping as needed.
 * File names need not be UTF-8: a byte that does not start a valid
 * sequence is written as \u00XX (its Latin-1 reading), so every line
 * stays valid JSON.
 */
static void
json_escape(struct buf *b, const char *s)
{
	size_t n = strlen(s), i = 0;

	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		size_t len = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;

		if (c == '"' || c == '\\') {
			buf_printf(b, "\\%c", c);
		} else if (c < 0x20) {
			buf_printf(b, "\\u%04x", c);
		} else if (c < 0x80) {
			buf_append(b, s + i, 1);
		} else if (i + len <= n && keymap_utf8_valid(s + i, len)) {
			buf_append(b, s + i, len);
			i += len;
			continue;
		} else {
			buf_printf(b, "\\u%04x", c);
		}
		i++;
	}
}

/* The job a path is in: its first component, when ctx names no job. */
static char *
ctx_job(const struct log_ctx *ctx)
{
	if (ctx->job != NULL)
		return xstrdup(ctx->job);
	if (ctx->path != NULL && strchr(ctx->path, '/') != NULL)
		return xstrndup(ctx->path, strcspn(ctx->path, "/"));
	return NULL;
}

/*
 * Sends one line to journald as a native entry: MESSAGE (the line, with
 * no prefix and no newline), PRIORITY, and the entry's fields. Field
 * values are binary-safe in the native protocol (a newline in a path is
 * carried, not split). 0 when journald took it.
 */
static int
journal_send(int priority, const struct log_ctx *ctx, const char *line,
    size_t len)
{
	struct iovec iov[7];
	char *f[7];
	int n = 0, i, rc;

	f[n++] = xasprintf("MESSAGE=%.*s", (int)len, line);
	f[n++] = xasprintf("PRIORITY=%d", priority);
	f[n++] = xasprintf("SYSLOG_IDENTIFIER=%s", log_prog);
	if (ctx != NULL) {
		char *job = ctx_job(ctx);

		if (job != NULL)
			f[n++] = xasprintf("OUTBOXD_JOB=%s", job);
		if (ctx->path != NULL)
			f[n++] = xasprintf("OUTBOXD_PATH=%s", ctx->path);
		if (ctx->leg != NULL)
			f[n++] = xasprintf("OUTBOXD_LEG=%s", ctx->leg);
		if (ctx->entry > 0)
			f[n++] = xasprintf("OUTBOXD_ENTRY=%lld",
			    (long long)ctx->entry);
		free(job);
	}
	for (i = 0; i < n; i++)
		iov[i] = (struct iovec){ f[i], strlen(f[i]) };
	rc = sd_journal_sendv(iov, n);
	for (i = 0; i < n; i++)
		free(f[i]);
	return rc < 0 ? -1 : 0;
}

static void
log_vmsg(int priority, const struct log_ctx *ctx, const char *msg)
{
	struct buf b = {0};

	if (log_journal)
		buf_printf(&b, "<%d>", priority);
	if (log_fmt == LOG_FORMAT_JSON) {
		char ts[32];

		time_iso8601(time_now_ms(), ts, sizeof(ts));
		buf_printf(&b, "{\"time\":\"%s\",\"level\":\"%s\","
		    "\"program\":\"%s\"", ts, level_name(priority), log_prog);
		if (ctx != NULL && ctx->leg != NULL)
			buf_printf(&b, ",\"leg\":\"%s\"", ctx->leg);
		if (ctx != NULL && ctx->job != NULL) {
			buf_puts(&b, ",\"job\":\"");
			json_escape(&b, ctx->job);
			buf_puts(&b, "\"");
		}
		if (ctx != NULL && ctx->path != NULL) {
			buf_puts(&b, ",\"path\":\"");
			json_escape(&b, ctx->path);
			buf_puts(&b, "\"");
		}
		buf_puts(&b, ",\"msg\":\"");
		json_escape(&b, msg);
		buf_puts(&b, "\"}\n");
	} else {
		/* Appends, not buf_printf: one line a stored file (issue 11). */
		buf_reserve(&b, 256);
		buf_puts(&b, log_prog);
		buf_puts(&b, ": ");
		if (priority != LOG_INFO && priority != LOG_NOTICE) {
			buf_puts(&b, level_name(priority));
			buf_puts(&b, ": ");
		}
		if (ctx != NULL && (ctx->leg || ctx->job || ctx->path)) {
			const char *sep = "";

			if (ctx->leg != NULL) {
				buf_puts(&b, ctx->leg);
				sep = " ";
			}
			/* Names and messages quote uploads' names: escaped
			 * (buf_escape), so none can forge a line. */
			if (ctx->path != NULL) {
				buf_puts(&b, sep);
				buf_escape(&b, ctx->path);
			} else if (ctx->job != NULL) {
				buf_puts(&b, sep);
				buf_puts(&b, "job ");
				buf_escape(&b, ctx->job);
			}
			buf_puts(&b, ": ");
		}
		buf_escape(&b, msg);
		buf_puts(&b, "\n");
	}
	if (log_native) {
		size_t skip = strcspn(b.data, ">") + 1;	/* the "<N>" */

		if (journal_send(priority, ctx, b.data + skip,
		    b.len - skip - 1) == 0) {
			buf_free(&b);
			return;
		}
	}
	(void)write_all(2, b.data, b.len);
	buf_free(&b);
}

void
log_msg(int priority, const struct log_ctx *ctx, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	if (priority > log_max)
		return;
	va_start(ap, fmt);
	if (vsnprintf(msg, sizeof(msg), fmt, ap) >= (int)sizeof(msg))
		utf8_cut_tail(msg);	/* never half a character */
	va_end(ap);
	log_vmsg(priority, ctx, msg);
}

void
log_warn(const char *fmt, ...)
{
	char msg[2048];
	int saved = errno;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s",
		    strerror(saved));
	log_vmsg(LOG_WARNING, NULL, msg);
	errno = saved;
}

void
fatalx(int status, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_vmsg(LOG_CRIT, NULL, msg);
	exit(status);
}
