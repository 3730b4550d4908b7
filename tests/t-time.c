/*
 * t-time.c - proves that time_iso8601 and time_parse_iso8601 (base/util.c,
 * by hand since issue 11) give exactly what the C library's strftime,
 * strptime and timegm give: for every edge of the calendar outboxd can
 * meet (the epoch, leap days of 2000 and 2024, 2100's missing one, the
 * last millisecond of 9999), for 200,000 random instants, for the forms
 * an admin might write by hand (no fraction, one digit of it, a leap
 * second, February 30th, an out-of-range month) and for the past-9999
 * and short-buffer cases the library still handles.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/util.h"
#include "tap.h"

/* The library's way, as base/util.c did it before. */
static void
ref_format(int64_t ms, char *out, size_t n)
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	char tmp[32];

	if (ms < 0)
		secs = 0, ms = 0;
	gmtime_r(&secs, &tm);
	strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, n, "%s.%03dZ", tmp, (int)(ms % 1000));
}

static int64_t
ref_parse(const char *s)
{
	struct tm tm;
	const char *p;
	int ms = 0;

	memset(&tm, 0, sizeof(tm));
	p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (p == NULL)
		return -1;
	if (*p == '.') {
		int digits = 0;

		for (p++; *p >= '0' && *p <= '9'; p++, digits++)
			if (digits < 3)
				ms = ms * 10 + (*p - '0');
		for (; digits < 3; digits++)
			ms *= 10;
	}
	if (*p != 'Z' || p[1] != '\0')
		return -1;
	return (int64_t)timegm(&tm) * 1000 + ms;
}

/* 1 when both ways agree on ms, formatted and parsed back. */
static int
agrees(int64_t ms, char *why, size_t n)
{
	char a[40], b[40];

	time_iso8601(ms, a, sizeof(a));
	ref_format(ms, b, sizeof(b));
	if (strcmp(a, b) != 0) {
		snprintf(why, n, "%lld formats as %s, the library says %s",
		    (long long)ms, a, b);
		return 0;
	}
	if (time_parse_iso8601(a) != ref_parse(b)) {
		snprintf(why, n, "%s parses as %lld, the library says %lld", a,
		    (long long)time_parse_iso8601(a), (long long)ref_parse(b));
		return 0;
	}
	return 1;
}

static uint64_t rng = 88172645463325252ULL;

static uint64_t
next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

int
main(void)
{
	static const char *const edges[] = { "1970-01-01T00:00:00.000Z",
	    "2000-02-29T12:34:56.789Z", "2024-02-29T23:59:59.999Z",
	    "2100-02-28T23:59:59.999Z", "2100-03-01T00:00:00.000Z",
	    "2026-12-02T06:15:41.123Z", "9999-12-31T23:59:59.999Z" };
	static const char *const hand[] = { "2026-12-02T06:15:41Z",
	    "2026-12-02T06:15:41.1Z", "2026-12-02T06:15:41.123456Z",
	    "2026-12-31T23:59:60.000Z", "2026-12-31T23:59:61Z",
	    "2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z",
	    "2026-00-01T00:00:00Z", "2026-12-00T00:00:00Z",
	    "2026-12-02T24:00:00Z", "2026-12-02T06:60:00Z",
	    "2026-12-02T06:15:62Z", "2026-12-02 06:15:41Z",
	    "2026-12-02T06:15:41", "2026-12-02T06:15:41.Z",
	    " 2026-12-02T06:15:41Z", "2026-1-02T06:15:41Z",
	    "20261-12-02T06:15:41Z", "0001-01-01T00:00:00Z", "", "Z",
	    "2026-12-02T06:15:41Zx" };
	char why[160] = "", a[40], b[40];
	size_t i;
	int ok = 1, bad = 0;

	for (i = 0; i < sizeof(edges) / sizeof(edges[0]) && ok; i++) {
		int64_t ms = ref_parse(edges[i]);

		ok = ms >= 0 && agrees(ms, why, sizeof(why)) &&
		    time_parse_iso8601(edges[i]) == ms;
		if (ok) {
			time_iso8601(ms, a, sizeof(a));
			ok = strcmp(a, edges[i]) == 0;
			if (!ok)
				snprintf(why, sizeof(why), "%s came back as %s",
				    edges[i], a);
		}
	}
	tap_ok(ok, "the calendar's edges format and parse as the library does "
	    "(%s)", ok ? "all" : why);
	for (i = 0, ok = 1; i < 200000 && ok; i++)
		ok = agrees((int64_t)(next() % UINT64_C(253402300800000)), why,
		    sizeof(why));
	tap_ok(ok, "200,000 random instants from 1970 to 9999 agree (%s)",
	    ok ? "all" : why);
	for (i = 0; i < sizeof(hand) / sizeof(hand[0]); i++)
		if (time_parse_iso8601(hand[i]) != ref_parse(hand[i])) {
			tap_diag("[%s]: %lld, the library %lld", hand[i],
			    (long long)time_parse_iso8601(hand[i]),
			    (long long)ref_parse(hand[i]));
			bad++;
		}
	tap_int(bad, 0, "forms written by hand (%zu, valid and not) parse as "
	    "the library parses them", sizeof(hand) / sizeof(hand[0]));
	tap_ok(agrees(-5, why, sizeof(why)), "a time before 1970 is the epoch, "
	    "as before");
	tap_ok(agrees(INT64_C(253402300800000), why, sizeof(why)) &&
	    agrees(INT64_C(400000000000000), why, sizeof(why)),
	    "years past 9999 as the library prints them (%s)", why);
	time_iso8601(INT64_C(1764656141123), a, 12);
	ref_format(INT64_C(1764656141123), b, 12);
	tap_str(a, b, "a short buffer is cut as snprintf cuts it");
	return tap_done();
}
