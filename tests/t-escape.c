/*
 * t-escape.c - proves outboxd's one escape form (buf_escape, util.h),
 * used by the text log and every outboxctl output: a name with a newline
 * cannot start a forged line, terminal escape sequences (C0 ESC, C1 CSI)
 * and invalid UTF-8 come out as \xHH, valid UTF-8 is kept, and a
 * backslash is doubled so the bytes can be told back. Also that the
 * text log writes such a name on one line, and that utf8_snprintf never
 * splits a character.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/keymap.h"
#include "base/log.h"
#include "base/util.h"
#include "tap.h"

static void
form(const char *in, const char *want, const char *what)
{
	struct buf b = {0};

	buf_puts(&b, "");
	buf_escape(&b, in);
	tap_str(b.data, want, "%s", what);
	buf_free(&b);
}

/* Runs log_msg with stderr sent to a pipe and returns what it wrote. */
static char *
logged(const char *path, const char *msg)
{
	int p[2], saved = dup(2);
	char out[8192];
	ssize_t n;

	if (pipe(p) < 0)
		abort();
	dup2(p[1], 2);
	log_msg(LOG_ERR, &(struct log_ctx){ .path = path, .leg = "db" }, "%s",
	    msg);
	dup2(saved, 2);
	close(saved);
	close(p[1]);
	n = read(p[0], out, sizeof(out) - 1);
	close(p[0]);
	out[n > 0 ? n : 0] = '\0';
	return xstrdup(out);
}

int
main(void)
{
	char cut[7], *line;	/* 6 bytes and the NUL */

	form("plain/é.xml", "plain/é.xml", "ASCII and valid UTF-8 are kept");
	form("inj\noutboxd: error: FORGED", "inj\\noutboxd: error: FORGED",
	    "a newline is \\n: no forged line");
	form("a\r\tb\\c", "a\\r\\tb\\\\c", "CR, tab, and a doubled backslash");
	form("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m",
	    "an ANSI escape sequence is inert");
	form("\xc2\x9b" "2J", "\\xc2\\x9b2J", "a C1 CSI is escaped byte by byte");
	form("bad\xff\xfe", "bad\\xff\\xfe", "bytes that are not UTF-8 are \\xHH");
	form("half\xe2\x82", "half\\xe2\\x82", "a sequence cut short is \\xHH");
	form("\x7f", "\\x7f", "DEL is escaped");
	form("<0>emerg", "<0>emerg", "text is not changed otherwise");

	log_init("outboxd", LOG_FORMAT_TEXT, LOG_INFO);
	line = logged("job/inj\noutboxd: error: FORGED \x1b[2J",
	    "message with\nnewline");
	tap_str(line, "outboxd: error: db job/inj\\noutboxd: error: FORGED "
	    "\\x1b[2J: message with\\nnewline\n", "the text log keeps a hostile "
	    "name and message on one line");
	tap_ok(strchr(line, '\n') == line + strlen(line) - 1,
	    "exactly one newline, at the end");
	free(line);

	tap_int(utf8_snprintf(cut, sizeof(cut), "%s", "abcd\xe2\x82\xac"), 1,
	    "utf8_snprintf says it cut");
	tap_str(cut, "abcd", "and cut before the euro sign, not inside it");
	tap_int(utf8_snprintf(cut, sizeof(cut), "%s", "ab\xc3\xa9"), 0,
	    "a fitting text is whole");
	tap_ok(keymap_utf8_valid(cut, strlen(cut)), "and valid UTF-8");
	return tap_done();
}
