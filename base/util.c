/*
 * util.c - allocation that cannot fail, error values, growable buffers,
 * time formatting, UUIDs and a few I/O helpers shared by all modules.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base/util.h"

static void
err_vset(struct err *e, enum err_class cls, int sys_errno, const char *fmt,
    va_list ap)
{
	int n;

	if (e == NULL)
		return;
	e->cls = cls;
	e->sys_errno = sys_errno;
	n = vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	if (n < 0)
		e->msg[0] = '\0';
	if (sys_errno != 0 && n >= 0 && (size_t)n < sizeof(e->msg))
		n += snprintf(e->msg + n, sizeof(e->msg) - (size_t)n, ": %s",
		    strerror(sys_errno));
	if (n >= (int)sizeof(e->msg))
		utf8_cut_tail(e->msg);
}

void
utf8_cut_tail(char *s)
{
	size_t len = strlen(s), lead = len, back = 0, need;
	unsigned char c;

	/* Step back over up to three continuation bytes to a lead byte. */
	while (lead > 0 && back < 3 &&
	    ((unsigned char)s[lead - 1] & 0xC0) == 0x80) {
		lead--;
		back++;
	}
	if (lead == 0)
		return;
	c = (unsigned char)s[lead - 1];
	if (c < 0x80)
		return;			/* ASCII: complete */
	need = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
	if (need > back)
		s[lead - 1] = '\0';	/* a sequence cut short */
}

int
utf8_snprintf(char *dst, size_t n, const char *fmt, ...)
{
	va_list ap;
	int len;

	if (n == 0)
		return 1;
	va_start(ap, fmt);
	len = vsnprintf(dst, n, fmt, ap);
	va_end(ap);
	if (len < 0) {
		dst[0] = '\0';
		return 1;
	}
	if ((size_t)len < n)
		return 0;
	utf8_cut_tail(dst);
	return 1;
}

void
err_set(struct err *e, enum err_class cls, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vset(e, cls, 0, fmt, ap);
	va_end(ap);
}

void
err_sys(struct err *e, enum err_class cls, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	err_vset(e, cls, saved, fmt, ap);
	va_end(ap);
	errno = saved;
}

void
err_clear(struct err *e)
{
	if (e == NULL)
		return;
	e->cls = ERR_NONE;
	e->sys_errno = 0;
	e->msg[0] = '\0';
}

static void
oom(void)
{
	static const char msg[] = "outboxd: out of memory\n";

	if (write(2, msg, sizeof(msg) - 1) < 0)
		abort();	/* nothing more to say */
	abort();
}

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		oom();
	return p;
}

void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL)
		oom();
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (p == NULL)
		oom();
	return p;
}

char *
xstrdup(const char *s)
{
	char *p = strdup(s);

	if (p == NULL)
		oom();
	return p;
}

char *
xstrndup(const char *s, size_t n)
{
	char *p = strndup(s, n);

	if (p == NULL)
		oom();
	return p;
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&p, fmt, ap);
	va_end(ap);
	if (n < 0)
		oom();
	return p;
}

static void
buf_grow(struct buf *b, size_t extra)
{
	size_t need = b->len + extra + 1;

	if (need <= b->cap)
		return;
	if (b->cap == 0)
		b->cap = 64;
	while (b->cap < need)
		b->cap *= 2;
	b->data = xrealloc(b->data, b->cap);
}

void
buf_reserve(struct buf *b, size_t n)
{
	buf_grow(b, n);
}

void
buf_append(struct buf *b, const void *p, size_t n)
{
	buf_grow(b, n);
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void
buf_puts(struct buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

void
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	size_t room = b->cap > b->len ? b->cap - b->len : 0;
	int n;

	/* Formatted once when it fits the room left (the usual case on a
	 * request's hot path), else measured, grown and formatted again. */
	va_start(ap, fmt);
	n = vsnprintf(room > 0 ? b->data + b->len : NULL, room, fmt, ap);
	va_end(ap);
	if (n < 0) {
		if (room > 0)
			b->data[b->len] = '\0';
		return;
	}
	if ((size_t)n >= room) {
		buf_grow(b, (size_t)n);
		va_start(ap, fmt);
		vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
}

/* Length of the well-formed UTF-8 sequence starting at s (n bytes
 * left; the Unicode Standard's Table 3-7: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or 0 when it is not one. */
static size_t
utf8_seq_len(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len, i;

	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		len = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (p[0] == 0xe0)
		lo = 0xa0;
	else if (p[0] == 0xed)
		hi = 0x9f;
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f;
	if (len > n || p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

void
buf_escape(struct buf *b, const char *s)
{
	size_t n = strlen(s), i = 0;

	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		size_t len;

		/* A run of printable ASCII, the usual text, in one append. */
		for (len = 0; i + len < n && (unsigned char)s[i + len] >= 0x20 &&
		    (unsigned char)s[i + len] < 0x7f && s[i + len] != '\\'; len++)
			;
		if (len > 0) {
			buf_append(b, s + i, len);
			i += len;
			continue;
		}
		if (c == '\\') {
			buf_puts(b, "\\\\");
		} else if (c == '\n') {
			buf_puts(b, "\\n");
		} else if (c == '\r') {
			buf_puts(b, "\\r");
		} else if (c == '\t') {
			buf_puts(b, "\\t");
		} else if (c < 0x20 || c == 0x7f) {
			buf_printf(b, "\\x%02x", c);
		} else if (c < 0x80) {
			buf_append(b, s + i, 1);
		} else if ((len = utf8_seq_len(s + i, n - i)) > 0 &&
		    !(c == 0xc2 && (unsigned char)s[i + 1] < 0xa0)) {
			buf_append(b, s + i, len);	/* not C1: keep it */
			i += len;
			continue;
		} else {
			buf_printf(b, "\\x%02x", c);
		}
		i++;
	}
}

void
buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
}

void
buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

char *
buf_take(struct buf *b)
{
	char *p = b->data ? b->data : xstrdup("");

	b->data = NULL;
	b->len = b->cap = 0;
	return p;
}

static struct util_sim sim;	/* set only by the simulator */

int64_t
time_now_ms(void)
{
	struct timespec ts;

	if (sim.now_ms != NULL)
		return sim.now_ms(sim.arg);

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
time_mono_ms(void)
{
	struct timespec ts;

	if (sim.mono_ms != NULL)
		return sim.mono_ms(sim.arg);

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Days since 1970-01-01 of a proleptic Gregorian date, and back (the
 * civil calendar's eras of 400 years, 146,097 days each). */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

static void
civil_from_days(int64_t z, int *y, int *m, int *d)
{
	int64_t era, doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = (int)(yoe + era * 400 + (*m <= 2));
}

static void
put_digits(char *p, int v, int n)
{
	while (n-- > 0) {
		p[n] = (char)('0' + v % 10);
		v /= 10;
	}
}

/* 2026-12-02T06:15:41.123Z, by hand: strftime and snprintf were 2,600
 * instructions a call, several calls a file (issue 11). Years past 9999
 * (and a short buffer) take the library's way, which prints them so. */
void
time_iso8601(int64_t ms, char *out, size_t n)
{
	time_t secs;
	struct tm tm;
	char tmp[32];

	if (ms < 0)
		ms = 0;
	secs = (time_t)(ms / 1000);
	if (n >= 25 && ms < INT64_C(253402300800000)) {
		int64_t day = ms / 86400000, t = ms % 86400000;
		int y, mo, d;

		civil_from_days(day, &y, &mo, &d);
		put_digits(out, y, 4);
		out[4] = '-';
		put_digits(out + 5, mo, 2);
		out[7] = '-';
		put_digits(out + 8, d, 2);
		out[10] = 'T';
		put_digits(out + 11, (int)(t / 3600000), 2);
		out[13] = ':';
		put_digits(out + 14, (int)(t / 60000 % 60), 2);
		out[16] = ':';
		put_digits(out + 17, (int)(t / 1000 % 60), 2);
		out[19] = '.';
		put_digits(out + 20, (int)(t % 1000), 3);
		out[23] = 'Z';
		out[24] = '\0';
		return;
	}
	gmtime_r(&secs, &tm);
	strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, n, "%s.%03dZ", tmp, (int)(ms % 1000));
}

/* n digits at p as a number, or -1. */
static int
digits_at(const char *p, int n)
{
	int v = 0;

	while (n-- > 0) {
		if (*p < '0' || *p > '9')
			return -1;
		v = v * 10 + (*p++ - '0');
	}
	return v;
}

int64_t
time_parse_iso8601(const char *s)
{
	struct tm tm;
	const char *p;
	int64_t secs;
	int ms = 0, y, mo, d, h, mi, sec;

	/* The form outboxd writes, by hand, within the ranges strptime
	 * takes (seconds to 61); any other the library reads as before. */
	if ((y = digits_at(s, 4)) >= 0 && s[4] == '-' &&
	    (mo = digits_at(s + 5, 2)) >= 1 && mo <= 12 && s[7] == '-' &&
	    (d = digits_at(s + 8, 2)) >= 1 && d <= 31 && s[10] == 'T' &&
	    (h = digits_at(s + 11, 2)) >= 0 && h <= 23 && s[13] == ':' &&
	    (mi = digits_at(s + 14, 2)) >= 0 && mi <= 59 && s[16] == ':' &&
	    (sec = digits_at(s + 17, 2)) >= 0 && sec <= 61) {
		secs = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 +
		    sec;
		p = s + 19;
	} else {
		memset(&tm, 0, sizeof(tm));
		p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
		if (p == NULL)
			return -1;
		secs = (int64_t)timegm(&tm);
	}
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
	return secs * 1000 + ms;
}

static void
getrandom_all(void *p, size_t n)
{
	unsigned char *c = p;

	while (n > 0) {
		ssize_t r = getrandom(c, n, 0);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			abort();	/* no entropy source at all: nothing sane to do */
		}
		c += r;
		n -= (size_t)r;
	}
}

/*
 * Small requests (an event id's bits) come from a per-thread pool that
 * one getrandom call fills, instead of a system call each. The pool is
 * emptied in a forked child, so parent and child never share bytes.
 */
static _Thread_local unsigned char rnd_pool[256];
static _Thread_local size_t rnd_left;

static void
rnd_pool_drop(void)
{
	rnd_left = 0;
}

static void
rnd_pool_setup(void)
{
	pthread_atfork(NULL, NULL, rnd_pool_drop);
}

static void
random_bytes(void *p, size_t n)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	if (n > sizeof(rnd_pool) / 4) {
		getrandom_all(p, n);
		return;
	}
	pthread_once(&once, rnd_pool_setup);
	if (rnd_left < n) {
		getrandom_all(rnd_pool, sizeof(rnd_pool));
		rnd_left = sizeof(rnd_pool);
	}
	memcpy(p, rnd_pool + sizeof(rnd_pool) - rnd_left, n);
	/* Bytes handed out are not kept. */
	memset(rnd_pool + sizeof(rnd_pool) - rnd_left, 0, n);
	rnd_left -= n;
}

void
uuid_v4(char *out)
{
	unsigned char b[16];
	char hex[33];

	if (sim.now_ms != NULL) {
		uint64_t r[2] = { rand_below(UINT64_MAX), rand_below(UINT64_MAX) };

		memcpy(b, r, sizeof(b));
	} else {
		random_bytes(b, sizeof(b));
	}
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	hex_encode(b, sizeof(b), hex);
	snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8,
	    hex + 12, hex + 16, hex + 20);
}

void
uuid_v7(char *out)
{
	unsigned char b[16];
	char hex[33];
	uint64_t ms = (uint64_t)time_now_ms();
	int i;

	if (sim.now_ms != NULL) {
		uint64_t r[2] = { rand_below(UINT64_MAX), rand_below(UINT64_MAX) };

		memcpy(b, r, sizeof(b));
	} else {
		random_bytes(b, sizeof(b));
	}
	for (i = 0; i < 6; i++)
		b[i] = (unsigned char)(ms >> (8 * (5 - i)));
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x70);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	hex_encode(b, sizeof(b), hex);
	snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8,
	    hex + 12, hex + 16, hex + 20);
}

int
uuid_valid(const char *s)
{
	static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
	size_t i;

	for (i = 0; shape[i] != '\0'; i++) {
		char c = s[i];

		if (shape[i] == '-') {
			if (c != '-')
				return 0;
		} else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		    (c >= 'A' && c <= 'F'))) {
			return 0;
		}
	}
	return s[i] == '\0';
}

void
hex_encode(const unsigned char *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void
sha256_fetch(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

const EVP_MD *
sha256_evp(void)
{
	pthread_once(&sha256_once, sha256_fetch);
	if (sha256_md == NULL)
		abort();
	return sha256_md;
}

/* xoshiro256** seeded from getrandom, one state per thread. */
static _Thread_local uint64_t rng_state[4];
static _Thread_local int rng_seeded;

static uint64_t
rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t
rng_step(uint64_t s[4])
{
	uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

void
rng_seed(uint64_t s[4], uint64_t seed)
{
	int i;

	for (i = 0; i < 4; i++) {	/* splitmix64 */
		uint64_t z = (seed += 0x9e3779b97f4a7c15ull);

		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		s[i] = z ^ (z >> 31);
	}
}

static uint64_t
rng_next(void)
{
	if (!rng_seeded) {
		random_bytes(rng_state, sizeof(rng_state));
		rng_seeded = 1;
	}
	return rng_step(rng_state);
}

uint64_t
rand_below(uint64_t n)
{
	uint64_t limit, r;

	if (n <= 1)
		return 0;
	/* Reject the top sliver so every value is equally likely. */
	limit = UINT64_MAX - UINT64_MAX % n;
	do
		r = rng_next();
	while (r >= limit);
	return r % n;
}

int
write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = write(fd, c, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

void
util_simulate(const struct util_sim *s, uint64_t seed)
{
	sim = *s;
	rng_seed(rng_state, seed);
	rng_seeded = 1;
}

void
test_crash_point(const char *name)
{
	static atomic_int hits;
	static const char unread[1];
	/* Read once: the hook runs for every file, and getenv walks the
	 * whole environment (0.8% of a --once run's CPU, perf). */
	static const char *_Atomic cached = unread;
	const char *spec = atomic_load(&cached);
	size_t n;
	int want = 1;

	if (spec == unread) {
		spec = getenv("OUTBOXD_TEST_CRASH");
		atomic_store(&cached, spec);
	}

	if (spec == NULL)
		return;
	n = strlen(name);
	if (strncmp(spec, name, n) != 0 || (spec[n] != '\0' && spec[n] != ':'))
		return;
	if (spec[n] == ':')
		want = atoi(spec + n + 1);
	if (atomic_fetch_add(&hits, 1) + 1 >= want) {
		static const char msg[] = "outboxd: test crash point reached\n";

		if (write(2, msg, sizeof(msg) - 1) < 0)
			raise(SIGKILL);
		raise(SIGKILL);
	}
}

void
eventfd_poke(int fd)
{
	uint64_t one = 1;

	if (fd >= 0 && write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return;	/* the reader polls anyway; nothing else to do */
}

void
eventfd_drain(int fd)
{
	uint64_t v;

	if (fd >= 0 && read(fd, &v, sizeof(v)) < 0)
		return;	/* EAGAIN: nothing was pending */
}
