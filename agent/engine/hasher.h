/*
 * hasher.h - SHA-256 of file byte ranges on worker threads, so a large
 * file's digests are computed on the machine's other cores while the sync
 * thread keeps sending: the whole file's (the document's sha256, signed
 * into a single PUT) on one worker while another hashes the parts of a
 * multipart upload (each signed into its UploadPart).
 *
 * A job names a descriptor and a range; a worker preads the range in
 * 64 KiB chunks, hashes it and marks the job done, then pokes the sync
 * thread's eventfd. The sync thread submits jobs and polls them with
 * hash_job_done; it owns the job's memory, which it must not reuse or free
 * while the job is pending (hash_job_pending). A pending job can be
 * cancelled: it finishes early with HASH_CANCELLED. Workers touch nothing
 * but the job and the file: no curl, no SQLite.
 *
 * For the fault tests only, OUTBOXD_TEST_HASH_DELAY_MS (1..60000) makes
 * each job start that many milliseconds late.
 */
#ifndef OUTBOXD_HASHER_H
#define OUTBOXD_HASHER_H

#include <stdatomic.h>
#include <stdint.h>

enum hash_result {
	HASH_OK,		/* sha256 is the range's digest */
	HASH_SHORT,		/* the file ended inside the range */
	HASH_IOERR,		/* pread failed: errnum says why */
	HASH_CANCELLED,		/* hash_job_cancel, or the hasher stopped */
};

/* One range to hash. Fields above `result` are the submitter's. */
struct hash_job {
	int fd;			/* read with pread; not closed */
	uint64_t offset, length;	/* the range */
	int poke_on_start;	/* poke the eventfd when a worker takes it */
	enum hash_result result;	/* set when done */
	int errnum;		/* HASH_IOERR: errno of the failed pread */
	char sha256[65];	/* HASH_OK: hex digest */
	/* Private to hasher.c. */
	atomic_uint_least64_t progress;	/* bytes of the range hashed so far
				   (release: a streamed PUT's sender
				   keeps within a lead of it) */
	atomic_int state;	/* idle, queued, running, done */
	atomic_int cancel;	/* finish early */
	struct hash_job *next;	/* in the queue */
};

struct hasher;

/* Starts n worker threads that poke wake_fd (an eventfd) when a job is
 * done. NULL when no thread could be started (then hash inline). */
struct hasher *hasher_new(int n, int wake_fd);
/* Cancels every queued job, waits for the workers and frees h; jobs
 * still queued end HASH_CANCELLED. NULL is a no-op. */
void hasher_free(struct hasher *h);

/* Queues j (idle or done; its fd and range set). Sync thread only. */
void hasher_submit(struct hasher *h, struct hash_job *j);
/* Done (result set)? A job never submitted is not. */
int hash_job_done(const struct hash_job *j);
/* Queued or being hashed: its memory is the hasher's until done. */
int hash_job_pending(const struct hash_job *j);
/* A worker has taken it (running or done). */
int hash_job_started(const struct hash_job *j);
/* Ends a pending job early (HASH_CANCELLED): one still queued leaves the
 * queue at once (done when this returns), one running stops at its next
 * chunk. */
void hash_job_cancel(struct hasher *h, struct hash_job *j);

#endif
