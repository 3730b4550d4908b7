/*
 * tap.h - a tiny TAP producer for outboxd's unit tests (tests/t-*.c).
 *
 * Each check prints "ok N - what" or "not ok N - what" with the expected
 * and actual values as "#" diagnostics; tap_done() prints the plan and
 * returns the exit status (non-zero when any check failed), so a unit test
 * ends with "return tap_done();". Checks return 1 when they passed.
 */
#ifndef OUTBOXD_TAP_H
#define OUTBOXD_TAP_H

#include <stdint.h>

int tap_ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int tap_int(int64_t got, int64_t want, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int tap_str(const char *got, const char *want, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int tap_done(void);

#endif
