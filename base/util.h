/*
 * util.h - the small things every module of outboxd uses.
 *
 * Memory: out of memory is not an error we handle, it aborts (x* functions);
 * outboxd is a daemon whose outbox makes a restart safe.
 *
 * Errors: lower layers never log. They return a negative int and fill the
 * caller's struct err with a message and a class that tells the sync loop
 * what to do with the failure (retry later, give up until an admin retries,
 * or skip because the file is gone). The loop that owns the work logs once.
 *
 * Buffers: struct buf is a growable byte string that is always NUL
 * terminated (data[len] == 0 once anything was appended); buf_take moves
 * ownership of the bytes to the caller and leaves the buffer empty.
 */
#ifndef OUTBOXD_UTIL_H
#define OUTBOXD_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* What kind of failure a struct err holds; decides retry versus failed. */
enum err_class {
	ERR_NONE = 0,
	ERR_TRANSIENT,	/* try again later with backoff */
	ERR_PERMANENT,	/* will not get better by itself: leg goes to failed */
	ERR_GONE,	/* the local file vanished: leg skipped */
	ERR_CHANGED,	/* the local file changed under us: a newer version wins */
	ERR_FATAL,	/* the program cannot go on (outbox unusable) */
	ERR_REFUSED,	/* the store refused the credentials or the bucket:
			   the whole leg pauses, the entry stays pending */
	ERR_DENIED,	/* S3's AccessDenied: the leg's (as ERR_REFUSED) or
			   this key's alone; the engine tells which */
};

struct err {
	enum err_class cls;	/* what the caller should do about it */
	int sys_errno;		/* errno at the failure, 0 when not a system call */
	char msg[1024];		/* one line, no secrets, no trailing newline */
};

void err_set(struct err *e, enum err_class cls, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Like err_set, with ": strerror(errno)" appended and errno kept. */
void err_sys(struct err *e, enum err_class cls, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void err_clear(struct err *e);
/* Cuts a UTF-8 sequence left incomplete at the end of s (a message cut
 * to its buffer), so the rest stays valid UTF-8. */
void utf8_cut_tail(char *s);
/* snprintf that never splits a character: when the text does not fit
 * in n bytes, it is cut before the last whole UTF-8 sequence. 1 when it
 * was cut, 0 when whole. The one way text is cut into a fixed buffer. */
int utf8_snprintf(char *dst, size_t n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

struct buf {
	char *data;	/* NULL until the first append; NUL terminated after */
	size_t len;	/* bytes used, not counting the terminating NUL */
	size_t cap;	/* bytes allocated */
};

void buf_append(struct buf *b, const void *p, size_t n);
/* Makes room for n more bytes (and the NUL) in one allocation. */
void buf_reserve(struct buf *b, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void buf_reset(struct buf *b);
/*
 * Appends s in outboxd's one escape form for text meant for people (the
 * text log, every outboxctl output): a backslash is written "\\", a
 * newline "\n", a carriage return "\r", a tab "\t"; every other
 * control character (C0, DEL, and the C1 range U+0080-U+009F) and every
 * byte that is not part of valid UTF-8 is written "\xHH" (lowercase
 * hex), each byte on its own. Everything else is copied. So a hostile
 * name can neither start a line nor move the terminal's cursor, and the
 * bytes can be recovered from the text.
 */
void buf_escape(struct buf *b, const char *s);
void buf_free(struct buf *b);
/* Hands the bytes (never NULL, maybe "") to the caller, who frees them. */
char *buf_take(struct buf *b);

/* Wall clock in milliseconds since the epoch (CLOCK_REALTIME). */
int64_t time_now_ms(void);
/* Monotonic milliseconds, for timeouts and durations. */
int64_t time_mono_ms(void);
/* "2026-11-28T18:54:00.123Z" into out, which holds at least 25 bytes. */
void time_iso8601(int64_t ms, char *out, size_t n);
/* Parses the format above (and without milliseconds); -1 when it is not. */
int64_t time_parse_iso8601(const char *s);

/* A random (version 4) UUID in canonical lowercase form; out holds 37. */
void uuid_v4(char *out);
/* A time-ordered (version 7, RFC 9562) UUID: the wall clock's
 * milliseconds, then random bits; out holds 37. Ids made later sort after
 * (to the millisecond), so an index of them grows at its end. */
void uuid_v7(char *out);
/* 1 when s is a canonical UUID (8-4-4-4-12 hex digits, any case). */
int uuid_valid(const char *s);

/* Lowercase hex of n bytes into out, which holds 2n+1 bytes. */
void hex_encode(const unsigned char *p, size_t n, char *out);

/*
 * OpenSSL's SHA-256 (an EVP_MD), fetched once for the process and never
 * freed: a digest initialised with EVP_sha256() looks the algorithm up in
 * the provider store every time (about 8,000 instructions, more than
 * hashing a few hundred bytes). Any thread; aborts when OpenSSL has none.
 */
struct evp_md_st;
const struct evp_md_st *sha256_evp(void);

/* Uniform random integer in [0, n), from a per-thread generator. */
uint64_t rand_below(uint64_t n);
/* The generator itself (xoshiro256**), for a caller's own stream: seeds
 * s from one number (splitmix64), and steps it. */
void rng_seed(uint64_t s[4], uint64_t seed);
uint64_t rng_step(uint64_t s[4]);

/*
 * The simulator's world (tests/sim): once set, time_now_ms and
 * time_mono_ms answer from these functions, and rand_below and uuid_v4
 * from one generator seeded with seed, so a run is the same every time.
 * Test-only; call before any other thread starts.
 */
struct util_sim {
	int64_t (*now_ms)(void *arg);	/* the simulated wall clock */
	int64_t (*mono_ms)(void *arg);	/* the simulated monotonic clock */
	void *arg;
};
void util_simulate(const struct util_sim *sim, uint64_t seed);

/*
 * A named crash point for the fault tests: when OUTBOXD_TEST_CRASH is
 * "name" or "name:N", the N-th (default first) time the point is reached
 * the process kills itself with SIGKILL, as a power cut or kill -9 would
 * at exactly that moment. Does nothing otherwise.
 */
void test_crash_point(const char *name);

/* Adds one to an eventfd to wake its reader; a full counter (EAGAIN)
 * already means "wake up", so failures are of no consequence. */
void eventfd_poke(int fd);
/* Resets an eventfd's counter (non-blocking). */
void eventfd_drain(int fd);

/* Writes all n bytes, retrying on EINTR and short writes; -1 on error. */
int write_all(int fd, const void *p, size_t n);

#endif
