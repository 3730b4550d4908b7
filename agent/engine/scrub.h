/*
 * scrub.h - the background scrub of the sync engine (scrub.c): a
 * periodic, rate-limited pass over the settled entries that checks S3's
 * object and the database's row of each against the local file and
 * journals a repair for what a store lost or altered. Sync thread only;
 * internal to agent/engine/.
 */
#ifndef OUTBOXD_SCRUB_H
#define OUTBOXD_SCRUB_H

#include <stdint.h>

#include "agent/s3/s3.h"
#include "base/util.h"

struct sync;

/* One turn of the scrub: starts a pass when one is due, checks the next
 * entries the rate and the free transfer slots allow. */
void scrub_turn(struct sync *s, int stopping);
/* 1 when r is one of the scrub's HEADs; scrub_reply takes it back. */
int scrub_owns(const struct s3_req *r);
void scrub_reply(struct sync *s, struct s3_req *r);
/* Milliseconds until the scrub has its next check to make, -1 none. */
int64_t scrub_wait_ms(const struct sync *s);
/* The outbox took a repair the scrub queued (journaled 1), or dropped it
 * (0: a newer version of path was journaled meanwhile): counts it. */
void scrub_repaired(struct sync *s, int journaled, const char *path);
/* Writes the scrub's state to the outbox (a queued R_SCRUB record). */
int scrub_write(struct sync *s, struct err *e);
/* Queues the state as it stands, at a stop (after the HEADs are back). */
void scrub_stop(struct sync *s);
/* Frees the scrub (its HEADs must have come back). NULL-safe. */
void scrub_free(struct sync *s);

#endif
