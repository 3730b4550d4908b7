/*
 * poison.h - entries whose file killed outboxd. Reading and inspecting
 * an upload's bytes (hashing, platform detection) is the one place a
 * hostile or broken file can crash the process or hang it until the
 * watchdog kills it; the same entry is then claimed first again at every
 * start. So the sync thread marks the entry it is inspecting in a small
 * file beside the outbox (<outbox>.inspect): a pwrite of one line, no
 * fsync, no transaction, since it has only to outlive the process, not
 * the machine. At start-up the mark of a process that died inside an
 * inspection counts one death for that entry; at the limit
 * (OUTBOXD_POISON_ATTEMPTS, 3) its database leg goes to failed with the
 * reason (legstate.h's "poison" event) and the rest flows. An inspection
 * that ends, or one of another entry, resets the count; outboxctl retry
 * takes the entry back.
 */
#ifndef OUTBOXD_POISON_H
#define OUTBOXD_POISON_H

#include <stdint.h>

#include "base/util.h"
#include "store/outbox.h"

struct poison;

/* Opens (creating) the mark beside the outbox at db_path; NULL when it
 * cannot be opened, which only turns the marking off. One thread. */
struct poison *poison_open(const char *db_path);
/* NULL is a no-op. */
void poison_close(struct poison *p);

/* Marks entry id as being inspected, and clears the mark. p may be NULL. */
void poison_begin(struct poison *p, int64_t id);
void poison_end(struct poison *p);

/*
 * At start-up, before outbox_recover (the entry is still in flight):
 * when the last process died inside an inspection, counts the death;
 * at limit deaths the entry's database leg is set aside (failed). Sets
 * *id and *deaths to the entry and its count (0 when there was no
 * death). Returns 1 when it was set aside, 0 when not, -1 with e.
 */
int poison_recover(struct outbox *o, const char *db_path, int limit,
    int64_t *id, int *deaths, struct err *e);

#endif
