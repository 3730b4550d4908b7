/*
 * t-hasher.c - proves the hasher's workers give each range the SHA-256
 * of exactly its bytes (many jobs on two threads at once, ranges that end
 * anywhere), tell a file that ended early (HASH_SHORT) from one that did
 * not, poke the eventfd when a job is done, and give back every job,
 * cancelled or stopped, so its memory can be freed.
 */
#include "config.h"

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "agent/engine/hasher.h"
#include "base/util.h"
#include "tap.h"

#define SIZE	(3 * 1024 * 1024 + 12345)
#define NJOBS	40

static void
want_sha(const unsigned char *b, size_t n, char *hex)
{
	unsigned char d[32];

	EVP_Digest(b, n, d, NULL, EVP_sha256(), NULL);
	hex_encode(d, sizeof(d), hex);
}

/* Waits (polling the eventfd, at most 20 s) until every job is done. */
static int
wait_all(int efd, struct hash_job *v, int n)
{
	int64_t end = time_mono_ms() + 20000;
	int i;

	for (;;) {
		struct pollfd p = { efd, POLLIN, 0 };

		for (i = 0; i < n && hash_job_done(&v[i]); i++)
			;
		if (i == n)
			return 1;
		if (time_mono_ms() > end)
			return 0;
		poll(&p, 1, 100);
		eventfd_drain(efd);
	}
}

int
main(void)
{
	char path[] = "/tmp/t-hasher.XXXXXX", hex[65];
	unsigned char *b = xmalloc(SIZE);
	struct hash_job jobs[NJOBS], one;
	struct hasher *h;
	int fd, efd, i, good = 0;
	uint64_t val;

	for (i = 0; i < SIZE; i++)
		b[i] = (unsigned char)(i * 7 + (i >> 9));
	fd = mkstemp(path);
	if (fd < 0 || write(fd, b, SIZE) != SIZE)
		abort();
	unlink(path);
	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	h = hasher_new(2, efd);
	tap_ok(h != NULL, "two workers start");

	memset(jobs, 0, sizeof(jobs));
	for (i = 0; i < NJOBS; i++) {
		jobs[i].fd = fd;
		jobs[i].offset = (uint64_t)i * 77777u;
		jobs[i].length = (uint64_t)SIZE - jobs[i].offset - (uint64_t)i;
		if (i == 0)
			jobs[i].length = 0;	/* the empty range */
		hasher_submit(h, &jobs[i]);
	}
	tap_ok(wait_all(efd, jobs, NJOBS), "%d jobs queued at once are all "
	    "done, the eventfd waking the waiter", NJOBS);
	for (i = 0; i < NJOBS; i++) {
		want_sha(b + jobs[i].offset, jobs[i].length, hex);
		good += jobs[i].result == HASH_OK &&
		    strcmp(jobs[i].sha256, hex) == 0;
	}
	tap_int(good, NJOBS, "each has the SHA-256 of exactly its range");

	memset(&one, 0, sizeof(one));
	one.fd = fd;
	one.offset = SIZE - 100;
	one.length = 101;
	hasher_submit(h, &one);
	tap_ok(wait_all(efd, &one, 1) && one.result == HASH_SHORT,
	    "a range one byte past the end of the file is HASH_SHORT");
	one.offset = 0;
	one.length = SIZE;
	hasher_submit(h, &one);
	tap_ok(wait_all(efd, &one, 1) && one.result == HASH_OK,
	    "the same job, submitted again for the whole file, is HASH_OK");
	want_sha(b, SIZE, hex);
	tap_str(one.sha256, hex, "with the whole file's SHA-256");

	/* Many jobs queued, most cancelled: all come back, none wrong. */
	for (i = 0; i < NJOBS; i++) {
		jobs[i].offset = 0;
		jobs[i].length = SIZE;
		hasher_submit(h, &jobs[i]);
	}
	for (i = 1; i < NJOBS; i++)
		hash_job_cancel(h, &jobs[i]);
	tap_ok(wait_all(efd, jobs, NJOBS), "cancelled jobs come back done");
	for (i = 0, good = 0; i < NJOBS; i++)
		good += jobs[i].result == HASH_CANCELLED ||
		    (jobs[i].result == HASH_OK && strcmp(jobs[i].sha256, hex) == 0);
	tap_int(good, NJOBS, "each cancelled or with the right digest");
	tap_int(jobs[0].result, HASH_OK, "the one not cancelled is hashed");

	tap_ok(atomic_load(&jobs[0].progress) == SIZE,
	    "a hashed job's progress is its whole range");

	/* A cancelled job still queued leaves the queue at once: its upload
	 * (and the path it holds) must not wait until a worker reaches it.
	 * One worker, each job slowed to 1.5 s (the tests' hook). */
	{
		struct hasher *slow;
		struct hash_job a = { .fd = fd, .offset = 0, .length = SIZE };
		struct hash_job c = { .fd = fd, .offset = 0, .length = SIZE };

		setenv("OUTBOXD_TEST_HASH_DELAY_MS", "1500", 1);
		slow = hasher_new(1, efd);
		unsetenv("OUTBOXD_TEST_HASH_DELAY_MS");
		hasher_submit(slow, &a);
		hasher_submit(slow, &c);
		hash_job_cancel(slow, &c);
		tap_ok(hash_job_done(&c) && c.result == HASH_CANCELLED,
		    "a queued job cancelled is done when the cancel returns");
		tap_ok(hash_job_pending(&a),
		    "while the one before it is still being hashed");
		tap_ok(wait_all(efd, &a, 1) && a.result == HASH_OK,
		    "which ends hashed");
		hasher_free(slow);
	}

	/* Stopping with work queued: every job is given back. */
	for (i = 0; i < NJOBS; i++)
		hasher_submit(h, &jobs[i]);
	hasher_free(h);
	for (i = 0, good = 0; i < NJOBS; i++)
		good += hash_job_done(&jobs[i]) && !hash_job_pending(&jobs[i]);
	tap_int(good, NJOBS, "hasher_free gives back every queued job done");
	tap_ok(read(efd, &val, sizeof(val)) == sizeof(val) && val > 0,
	    "the eventfd was poked");
	close(efd);
	close(fd);
	free(b);
	return tap_done();
}
