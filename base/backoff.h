/*
 * backoff.h - when to try again: capped exponential backoff with full
 * jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"), used
 * per entry and per leg. Pure; the random number is passed in so tests
 * can pin it.
 */
#ifndef OUTBOXD_BACKOFF_H
#define OUTBOXD_BACKOFF_H

#include <stdint.h>

/* The ceiling for the n-th consecutive failure (n >= 1):
 * min(cap_ms, base_ms * 2^(n-1)). */
int64_t backoff_ceiling(int n, int64_t base_ms, int64_t cap_ms);

/*
 * The delay after the n-th failure: uniform in [floor, ceiling] where the
 * floor, min(100 ms, base_ms), keeps a zero draw from becoming a hot loop.
 * rnd is any uniformly random 64-bit number.
 */
int64_t backoff_delay(int n, int64_t base_ms, int64_t cap_ms, uint64_t rnd);

#endif
