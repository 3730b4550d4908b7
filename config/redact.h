/*
 * redact.h - messages that may quote a connection string, made safe to
 * show. libpq quotes what it could not parse (a word of a password with a
 * space in it, a bad percent sequence of a URI's password, the whole URI)
 * and outboxd shows its messages in outboxd -n, doctor, migrate and the
 * log, which ExecStartPre sends to the journal. cfg_redact removes:
 *
 *  - every password the connection string gives (password= and
 *    sslpassword= of a key/value string, a URI's user:password@ and its
 *    ?password=), as written, percent-decoded, and each of its
 *    space-separated words: anywhere when 4 bytes or longer, as a whole
 *    token when shorter;
 *  - when libpq cannot parse the string, everything from the message's
 *    first double quote to its last (its parse errors quote a piece of
 *    the string, which may be any piece of a secret, quotes included);
 *  - whatever in the message still looks like a URI's user:password@ or a
 *    password=value.
 *
 * Each becomes "***"; only the first line is kept. The string is scanned
 * by hand as well as by libpq because the strings that matter most are
 * the ones libpq cannot parse.
 */
#ifndef OUTBOXD_REDACT_H
#define OUTBOXD_REDACT_H

/* msg made safe; conninfo may be NULL or "". The caller frees it. */
char *cfg_redact(const char *msg, const char *conninfo);

#endif
