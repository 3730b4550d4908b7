/*
 * watch.h - the watcher: finds finished files under the uploads root and
 * journals them in the outbox. It owns inotify and its own outbox
 * connection, runs on its own thread, and never touches the network.
 *
 * A file is finished when its writer closed it (IN_CLOSE_WRITE) or it was
 * renamed into the tree (IN_MOVED_TO), and it then stayed quiet for the
 * settle window. Directories are watched as they appear and scanned right
 * after the watch is added, so files made in the race are not missed.
 * A full rescan (at start, after a queue overflow, on request, and every
 * OUTBOXD_RESCAN_S) journals whatever events could not tell, which makes
 * the disk the truth and inotify only a hint. Where inotify cannot see
 * (NFS, CIFS, FUSE, or OUTBOXD_WATCH_MODE=poll) the tree is polled.
 */
#ifndef OUTBOXD_WATCH_H
#define OUTBOXD_WATCH_H

#include "config/cfg.h"
#include "base/util.h"

struct watch;

/*
 * Opens the uploads root and the watcher's own outbox connection. With
 * live=1 it also sets up inotify (or polling) for watch_run; live=0 is for
 * a one-shot rescan (outboxd --once, outboxctl rescan). notify_fd, when
 * not -1, is an eventfd written after each journaled batch.
 */
struct watch *watch_create(const struct cfg *cfg, int live, int notify_fd,
    struct err *e);
void watch_free(struct watch *w);

/* Walks the whole tree and journals what changed; waits for files still
 * being written (their settle window) before returning. Returns the
 * number of entries journaled, or -1. */
int watch_rescan_now(struct watch *w, struct err *e);

/* The thread body: returns 0 after watch_stop, -1 on a fatal error
 * (logged; the outbox can no longer be written safely). */
int watch_run(struct watch *w);

/* From any thread: ask watch_run to return, or to rescan soon. */
void watch_stop(struct watch *w);
void watch_request_rescan(struct watch *w);

/* 1 after watch_run has journaled its start-up rescan. Any thread. */
int watch_ready(struct watch *w);
/* Monotonic ms of the watcher's last loop turn, for the watchdog. */
long long watch_heartbeat(struct watch *w);

/* Ignore rules on one file or directory name: dot files, *.tmp, *.part,
 * *.swp, *~, ~$*, and the extra globs (NULL ended, may be NULL). */
int watch_ignored(char *const *globs, const char *name);

#endif
