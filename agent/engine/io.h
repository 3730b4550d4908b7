/*
 * io.h - everything the sync engine asks of the world outside its own
 * memory and outbox, as a table of operations: the S3 client, the
 * database client, and waiting. Production fills it with the real calls
 * (engine_io_real: curl through struct s3, libpq through struct pg,
 * poll on the watcher's eventfd); the simulator (tests/sim/) fills it
 * with seeded fakes that keep simulated time. The clock and randomness
 * come from base/util.h, which the simulator switches to its own (see
 * util_simulate). Files are read beneath the uploads root by the real
 * calls in both cases: the simulator keeps a real tree in a temporary
 * directory and stamps its mtimes with simulated time.
 */
#ifndef OUTBOXD_ENGINE_IO_H
#define OUTBOXD_ENGINE_IO_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "agent/db/pg.h"
#include "agent/s3/s3.h"
#include "config/cfg.h"

/* The S3 client, as struct s3 offers it (see s3.h for each call). */
struct engine_s3 {
	void *h;		/* the client; NULL: the S3 leg is off */
	int (*start)(void *h, struct s3_req *r);
	int (*running)(const void *h);
	int (*wait)(void *h, int timeout_ms, int wake_fd);
	struct s3_req *(*done)(void *h);
	void (*cancel_all)(void *h);
	void (*free)(void *h);
	/* Changes when the client signs with new credentials (creds.h);
	 * NULL when they never change (the simulator). */
	unsigned (*creds_gen)(void *h);
};

/* The database client, as struct pg offers it (see pg.h). */
struct engine_db {
	void *h;		/* the client; NULL: the database leg is off */
	int (*record_documents)(void *h, struct pg_doc *docs, size_t n,
	    struct err *e);
	int (*apply_job_meta)(void *h, const char *event_id,
	    const char *job_id, const cJSON *fields, const char **outcome,
	    struct err *e);
	int (*set_etag)(void *h, const char *job_id, const char *file_path,
	    const char *sha256, const char *etag, const char *s3_key,
	    struct err *e);
	/* The scrub's batched row reads; NULL where the store cannot. */
	int (*read_documents)(void *h, const char *const *job_ids,
	    const char *const *file_paths, size_t n, struct pg_row *rows,
	    struct err *e);
	void (*free)(void *h);
	/* Connects with url from now on (SIGHUP); NULL in the simulator. */
	void (*set_url)(void *h, const char *url);
};

struct engine_io {
	struct engine_s3 s3;
	struct engine_db db;
	/* Waits up to ms for wake_fd (or only lets time pass when it is
	 * -1); the simulator advances its clock instead. */
	void (*idle)(void *arg, int wake_fd, int ms);
	void *idle_arg;
	/* The simulator's watcher thread: called just before a turn writes
	 * its outcomes, with how many report a vanished file, since the
	 * daemon's watcher may journal between a leg's finding and its
	 * record. NULL in the daemon. */
	void (*before_write)(void *arg, int gone);
};

/*
 * Fills io with the real clients cfg asks for (S3 when a bucket is set,
 * the database when it is on). 0, or -1 with e when curl cannot be set up.
 */
int engine_io_real(struct engine_io *io, const struct cfg *cfg,
    struct err *e);

#endif
