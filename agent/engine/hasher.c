/*
 * hasher.c - worker threads hashing file ranges (see hasher.h).
 *
 * One FIFO queue under a mutex; each worker takes the oldest job, hashes
 * it with no lock held and publishes the result with a release store of
 * the job's state, then pokes the eventfd so the sync thread looks. The
 * sync thread reads the state with an acquire load and only then the
 * result, so no lock is needed on its side.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "agent/engine/hasher.h"
#include "base/util.h"

#define CHUNK		(64 * 1024)	/* bytes per pread: copied into a buffer
				   that stays in cache while it is hashed
				   (256 KiB cost 0.4-0.6 CPU-s more per GiB
				   in kernel copies: issue 15, session 3) */
#define MAX_WORKERS	8
#define MAX_DELAY_MS	60000

enum { J_IDLE, J_QUEUED, J_RUNNING, J_DONE };

struct hasher {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct hash_job *head, *tail;	/* queued, oldest first */
	int stop;			/* workers exit */
	int wake_fd;
	int n;				/* workers started */
	int delay_ms;			/* OUTBOXD_TEST_HASH_DELAY_MS */
	pthread_t tid[MAX_WORKERS];
};

/* The fault tests' hook: each job takes at least this long, its chunks
 * spread over it (a slow hasher: a streamed PUT is paced by it, and jobs
 * queue behind each other; it-s3-streaming). */
static int
test_hash_delay_ms(void)
{
	const char *v = getenv("OUTBOXD_TEST_HASH_DELAY_MS");
	long ms = v != NULL ? strtol(v, NULL, 10) : 0;

	return ms > 0 && ms <= MAX_DELAY_MS ? (int)ms : 0;
}

static void
finish(struct hasher *h, struct hash_job *j, enum hash_result r)
{
	j->result = r;
	atomic_store_explicit(&j->state, J_DONE, memory_order_release);
	eventfd_poke(h->wake_fd);
}

/* Hashes j's range; the chunk buffer is the worker's own. */
static enum hash_result
hash_range(struct hash_job *j, unsigned char *chunk, int delay_ms)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	unsigned char sha[32];
	uint64_t off = 0;
	enum hash_result r = HASH_OK;

	if (c == NULL)
		abort();
	EVP_DigestInit_ex(c, sha256_evp(), NULL);
	while (off < j->length) {
		size_t want = j->length - off < CHUNK ?
		    (size_t)(j->length - off) : CHUNK;
		ssize_t n;

		if (atomic_load_explicit(&j->cancel, memory_order_relaxed)) {
			r = HASH_CANCELLED;
			break;
		}
		n = pread(j->fd, chunk, want, (off_t)(j->offset + off));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			j->errnum = errno;
			r = HASH_IOERR;
			break;
		}
		if (n == 0) {
			r = HASH_SHORT;
			break;
		}
		EVP_DigestUpdate(c, chunk, (size_t)n);
		off += (uint64_t)n;
		atomic_store_explicit(&j->progress, off, memory_order_release);
		if (delay_ms > 0 && j->length > 0)
			usleep((useconds_t)((uint64_t)delay_ms * 1000 *
			    (uint64_t)n / j->length));
	}
	if (r == HASH_OK) {
		EVP_DigestFinal_ex(c, sha, NULL);
		hex_encode(sha, sizeof(sha), j->sha256);
	}
	EVP_MD_CTX_free(c);
	return r;
}

static void *
worker(void *arg)
{
	struct hasher *h = arg;
	unsigned char *chunk = xmalloc(CHUNK);

	pthread_mutex_lock(&h->mu);
	for (;;) {
		struct hash_job *j;

		while (h->head == NULL && !h->stop)
			pthread_cond_wait(&h->cv, &h->mu);
		if (h->stop)
			break;
		j = h->head;
		h->head = j->next;
		if (h->head == NULL)
			h->tail = NULL;
		atomic_store(&j->state, J_RUNNING);
		pthread_mutex_unlock(&h->mu);
		if (j->poke_on_start)
			eventfd_poke(h->wake_fd);
		finish(h, j, atomic_load(&j->cancel) ? HASH_CANCELLED :
		    hash_range(j, chunk, h->delay_ms));
		pthread_mutex_lock(&h->mu);
	}
	pthread_mutex_unlock(&h->mu);
	free(chunk);
	return NULL;
}

struct hasher *
hasher_new(int n, int wake_fd)
{
	struct hasher *h = xcalloc(1, sizeof(*h));
	sigset_t all, old;

	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	h->wake_fd = wake_fd;
	h->delay_ms = test_hash_delay_ms();
	if (n > MAX_WORKERS)
		n = MAX_WORKERS;
	/* Signals are the main thread's (signalfd): workers block them. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (h->n = 0; h->n < n; h->n++)
		if (pthread_create(&h->tid[h->n], NULL, worker, h) != 0)
			break;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (h->n == 0) {
		hasher_free(h);
		return NULL;
	}
	return h;
}

void
hasher_free(struct hasher *h)
{
	int i;

	if (h == NULL)
		return;
	pthread_mutex_lock(&h->mu);
	h->stop = 1;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	for (i = 0; i < h->n; i++)
		pthread_join(h->tid[i], NULL);
	while (h->head != NULL) {
		struct hash_job *j = h->head;

		h->head = j->next;
		finish(h, j, HASH_CANCELLED);
	}
	pthread_cond_destroy(&h->cv);
	pthread_mutex_destroy(&h->mu);
	free(h);
}

void
hasher_submit(struct hasher *h, struct hash_job *j)
{
	j->result = HASH_CANCELLED;
	j->errnum = 0;
	j->sha256[0] = '\0';
	j->next = NULL;
	atomic_store(&j->progress, 0);
	atomic_store(&j->cancel, 0);
	atomic_store(&j->state, J_QUEUED);
	pthread_mutex_lock(&h->mu);
	if (h->tail != NULL)
		h->tail->next = j;
	else
		h->head = j;
	h->tail = j;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

int
hash_job_done(const struct hash_job *j)
{
	return atomic_load_explicit(&((struct hash_job *)j)->state,
	    memory_order_acquire) == J_DONE;
}

int
hash_job_pending(const struct hash_job *j)
{
	int s = atomic_load_explicit(&((struct hash_job *)j)->state,
	    memory_order_acquire);

	return s == J_QUEUED || s == J_RUNNING;
}

int
hash_job_started(const struct hash_job *j)
{
	int s = atomic_load_explicit(&((struct hash_job *)j)->state,
	    memory_order_acquire);

	return s == J_RUNNING || s == J_DONE;
}

void
hash_job_cancel(struct hasher *h, struct hash_job *j)
{
	struct hash_job *q, *prev = NULL;

	atomic_store(&j->cancel, 1);
	/* Still queued: out of the queue now, so that its upload (and the
	 * path it holds) need not wait for a worker to reach it. */
	pthread_mutex_lock(&h->mu);
	if (atomic_load(&j->state) != J_QUEUED) {
		pthread_mutex_unlock(&h->mu);
		return;
	}
	for (q = h->head; q != NULL && q != j; q = q->next)
		prev = q;
	if (q == j) {
		if (prev != NULL)
			prev->next = j->next;
		else
			h->head = j->next;
		if (h->tail == j)
			h->tail = prev;
	}
	pthread_mutex_unlock(&h->mu);
	finish(h, j, HASH_CANCELLED);
}
