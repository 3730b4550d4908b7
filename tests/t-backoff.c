/*
 * t-backoff.c - proves retries back off exponentially up to the cap,
 * with full jitter (any delay from the floor to the ceiling), and never
 * zero (no hot loop).
 */
#include "config.h"

#include "base/backoff.h"
#include "base/util.h"
#include "tap.h"

int
main(void)
{
	int64_t lo = INT64_MAX, hi = 0;
	int i;

	tap_int(backoff_ceiling(1, 1000, 300000), 1000, "first ceiling is base");
	tap_int(backoff_ceiling(2, 1000, 300000), 2000, "then doubles");
	tap_int(backoff_ceiling(9, 1000, 300000), 256000, "2^8 times base");
	tap_int(backoff_ceiling(10, 1000, 300000), 300000, "capped");
	tap_int(backoff_ceiling(1000, 1000, 300000), 300000, "no overflow far "
	    "past the cap");
	tap_int(backoff_delay(3, 1000, 300000, 0), 100, "a zero draw still "
	    "waits the floor");
	tap_int(backoff_delay(3, 1000, 300000, 3900), 4000, "the top draw is "
	    "the ceiling");
	tap_int(backoff_delay(1, 20, 1000, 0), 20, "floor is the base when "
	    "the base is under 100 ms");
	for (i = 0; i < 10000; i++) {
		int64_t d = backoff_delay(5, 1000, 300000, rand_below(UINT64_MAX));

		if (d < lo)
			lo = d;
		if (d > hi)
			hi = d;
	}
	tap_ok(lo >= 100 && lo < 1000, "full jitter reaches near the floor "
	    "(min %lld ms)", (long long)lo);
	tap_ok(hi <= 16000 && hi > 15000, "and near the ceiling (max %lld ms)",
	    (long long)hi);
	return tap_done();
}
