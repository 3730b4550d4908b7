/*
 * upload.h - one entry's S3 leg, from opening the file to the object
 * stored: a single PUT up to OUTBOXD_MULTIPART_THRESHOLD, a multipart
 * upload above it. Used by the sync thread only.
 *
 * An upload first hashes its file: the SHA-256 of the whole file (the
 * document's sha256, x-amz-meta-sha256, and a single PUT's signed payload
 * hash) and, for a multipart upload, each part's SHA-256 (its signed
 * payload hash). Large files are hashed on the hasher's worker threads,
 * the file's and the parts' at once; small ones, and every file in the
 * simulator, in bounded steps on the sync thread (upload_work), so it
 * keeps driving every other transfer. Then the upload sends what it is
 * ready to send as the sync thread gives it request slots (upload_send):
 * parts as soon as they are hashed and the multipart upload exists; and
 * advances on each reply (upload_reply).
 *
 * Multipart uploads are resumable: the upload id and each acknowledged
 * part (with the SHA-256 of what was sent) go to the outbox as progress notes
 * (engine.h; an upload never writes the outbox itself), so after a crash the
 * next attempt sends only the missing parts. An upload given up on is
 * queued for AbortMultipartUpload, never left dangling. Bodies are read
 * from the file as they are sent; memory stays bounded whatever the size.
 */
#ifndef OUTBOXD_UPLOAD_H
#define OUTBOXD_UPLOAD_H

#include <sys/stat.h>

#include "config/cfg.h"
#include "agent/engine/io.h"
#include "agent/s3/s3.h"
#include "base/util.h"
#include "store/outbox.h"

struct sync;
struct hasher;

/* What uploads need from the sync thread. */
struct upload_env {
	const struct cfg *cfg;
	const struct engine_s3 *s3;	/* the S3 client */
	struct sync *sync;		/* takes the uploads' progress notes */
	int rootfd;			/* the uploads root */
	uint64_t min_part;		/* smallest part size (8 MiB; the
					   simulator uses less) */
	struct hasher *hasher;		/* hashes large files on worker
					   threads; NULL: inline (simulator) */
};

enum upload_result {
	UPLOAD_BUSY,		/* still working */
	UPLOAD_DONE,		/* stored: etag and sha256 are set */
	UPLOAD_RETRY,		/* transient failure: err says why */
	UPLOAD_FAILED,		/* permanent failure: err says why */
	UPLOAD_GONE,		/* the file vanished */
	UPLOAD_CHANGED,		/* the file changed: st is the new stat */
	UPLOAD_STOPPED,		/* dropped on request before finishing */
};

struct upload_outcome {
	enum upload_result result;
	struct err err;
	char etag[128];
	char sha256[65];
	struct stat st;		/* UPLOAD_CHANGED: the file as it is now */
	const char *when;	/* UPLOAD_CHANGED: "while it was read", ... */
	int parts;		/* parts of a multipart upload, 0 for a PUT */
};

struct upload;

/* Starts the S3 leg of en (taken), resuming the n parts an earlier
 * attempt recorded. Opens and checks the file at once; the upload may
 * already be finished (gone, changed) when this returns. */
struct upload *upload_new(const struct upload_env *env, struct outbox_entry *en,
    const struct outbox_part *parts, size_t n);
/* Frees u; only when it is finished (no request in flight). */
void upload_free(struct upload *u);

const struct outbox_entry *upload_entry(const struct upload *u);

/* Hashes up to budget bytes on this thread, or collects and queues the
 * hasher's jobs; returns the bytes consumed from the budget (0 when u has
 * no local work left: the hasher pokes the sync thread's eventfd). */
size_t upload_work(struct upload *u, size_t budget);

/* Starts the requests u is ready for while *slots > 0, decrementing it.
 * With stopping set it starts nothing new. */
void upload_send(struct upload *u, int *slots, int stopping);

/* A request of u finished (r->user is u's request). */
void upload_reply(struct s3_req *r);

/* The upload a finished request belongs to. */
struct upload *upload_of(struct s3_req *r);

/* Gives up on u as soon as nothing is in flight (shutdown, or the leg
 * failing before u sent anything); why (a static string) is the error
 * its outcome records if it sent nothing. */
void upload_stop(struct upload *u, const char *why);
const char *upload_stop_why(const struct upload *u);

/* Requests of u in flight. */
int upload_inflight(const struct upload *u);

/* The ticket of u's last request sent (engine_s3_ticket, engine.h). */
long long upload_ticket(const struct upload *u);

/* Whether u sent a request yet (an upload claimed ahead waits for a
 * slot before its first). */
int upload_started(const struct upload *u);

/* Whether u's outcome is known (it may still wait for a request in
 * flight or the hasher before it is finished). */
int upload_decided(const struct upload *u);

/* Finished (no request in flight)? Fills out when so. */
int upload_finished(const struct upload *u, struct upload_outcome *out);

#endif
