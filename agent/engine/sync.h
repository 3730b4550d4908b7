/*
 * sync.h - the sync thread: replays the outbox to S3 and to PostgreSQL
 * until both have every entry. It owns curl (through struct s3), libpq
 * (struct pg) and its own outbox connection; nothing it holds is shared.
 *
 * Each leg of each entry is claimed (in_flight), worked on with no outbox
 * transaction open, and its outcome recorded: done, pending again with
 * backoff (transient), failed (permanent, until outboxctl retry) or
 * skipped (the file vanished, or a newer version superseded it). A leg
 * that keeps failing is paused as a whole (one probe at a time) so an
 * outage costs a trickle of requests, not a storm; the other leg carries
 * on regardless.
 */
#ifndef OUTBOXD_SYNC_H
#define OUTBOXD_SYNC_H

#include <stdint.h>

#include "agent/engine/io.h"
#include "config/cfg.h"
#include "base/util.h"

struct sync;

/* Sets up the legs cfg configures. wake_fd is an eventfd the watcher
 * writes after journaling; the sync thread reads it. NULL with e. */
struct sync *sync_new(const struct cfg *cfg, int wake_fd, struct err *e);
/* The same with the stores and waiting given (io.h; io's clients are
 * taken over and freed with the engine): the simulator's way in. */
struct sync *sync_new_io(const struct cfg *cfg, int wake_fd,
    const struct engine_io *io, struct err *e);
/* Stops cleanly: requests in flight are cancelled and their outcomes
 * recorded, then everything is freed. NULL is a no-op. */
void sync_free(struct sync *s);
/* Drops everything without writing a thing more to the outbox, as a
 * crash would (the simulator). */
void sync_crash(struct sync *s);

/* The thread body: works until sync_stop, then lets transfers in flight
 * finish (up to 30 s) and returns 0; -1 on a fatal outbox error. */
int sync_run(struct sync *s);

/* Batch mode (outboxd --once): works until nothing is due within a few
 * seconds. Returns 0, or -1 on a fatal outbox error. */
int sync_once(struct sync *s);

/* One step of the loop (work, wait, collect, record); 0, or -1 on a
 * fatal outbox error. The simulator drives the engine with it. */
int sync_step(struct sync *s);
/* Steps taken so far. */
long long sync_turns(const struct sync *s);
/* S3 legs claimed ahead of free slots so far (the simulator reports it). */
long long sync_claimed_ahead(const struct sync *s);
/* Findings that forget a path's stat (gone, changed) still queued while
 * the queue's writes succeed; 0 after every step (the simulator checks). */
int sync_held_findings(const struct sync *s);
/* S3 legs in progress (uploads); the simulator's checks. */
int sync_uploads(const struct sync *s);
/* The smallest multipart part (8 MiB; the simulator's files are small). */
void sync_set_min_part(struct sync *s, uint64_t bytes);

/* SIGHUP (any thread): takes n's S3 credential settings and
 * DATABASE_URL; a leg paused by a refusal is probed with them at once. */
void sync_reload(struct sync *s, const struct cfg *n);

/* From any thread. */
void sync_stop(struct sync *s);
long long sync_heartbeat(struct sync *s);
/* The counters for the metrics; valid until sync_free. */
struct metrics_live;
const struct metrics_live *sync_live(const struct sync *s);

#endif
