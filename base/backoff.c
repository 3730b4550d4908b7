/* backoff.c - see backoff.h. */
#include "config.h"

#include "base/backoff.h"

int64_t
backoff_ceiling(int n, int64_t base_ms, int64_t cap_ms)
{
	int64_t c = base_ms;

	if (n < 1)
		n = 1;
	while (--n > 0 && c < cap_ms)
		c *= 2;
	return c < cap_ms ? c : cap_ms;
}

int64_t
backoff_delay(int n, int64_t base_ms, int64_t cap_ms, uint64_t rnd)
{
	int64_t ceiling = backoff_ceiling(n, base_ms, cap_ms);
	int64_t floor = base_ms < 100 ? base_ms : 100;

	if (ceiling <= floor)
		return ceiling;
	return floor + (int64_t)(rnd % (uint64_t)(ceiling - floor + 1));
}
