/*
 * watch.c - the watcher thread (see watch.h).
 *
 * Three structures carry its state:
 *  - wd_paths: inotify watch descriptor -> directory relative to the root;
 *  - the settle queue: files seen finished, each due to be journaled once
 *    it has been quiet for its window, ordered by due time, with a map
 *    from path to node so a repeated event only moves the deadline;
 *  - the batch: files ready to journal, written in one transaction, so a
 *    burst of ten thousand files is a handful of commits. Files that come
 *    due while others are due within JOURNAL_WAIT_MS wait for them (the
 *    batch's first file at most JOURNAL_WAIT_MS): a lone file is journaled
 *    at once, a burst in transactions of tens of files instead of a few.
 * Events are read at most every EVENT_NAP_MS: a file waits for its settle
 * window anyway, and a burst then costs a wake-up per few tens of events
 * instead of one per event (the kernel queues 16384 by default). A new
 * file's IN_CREATE is looked at (a hard link appears with no close) only
 * when no close or rename of it came in the same read.
 * Rescans walk the tree with tree_walk and feed the same batch; files that
 * were modified very recently go through the settle queue instead, so a
 * file still being written is not journaled half-done.
 *
 * A file a walk finds recently changed may still be open by its writer,
 * and Linux sends no close event for a file opened before its directory
 * was watched (after a restart, or in a directory just moved in). Such
 * files are kept in the young map and stat'ed every second until they
 * have been unchanged for YOUNG_MS; a change sends them through the settle
 * queue again, so the final version is journaled without waiting for the
 * periodic rescan. No quiet time tells a writer that pauses from one that
 * has finished, so a changed young file that someone still holds open for
 * writing (a read lease cannot be had on it) is not journaled: it stays
 * young until the writer lets go. Where leases are not available (NFS, or
 * no CAP_LEASE for files of another owner) the quiet time is all there is.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "base/keymap.h"
#include "base/log.h"
#include "base/strmap.h"
#include "store/outbox.h"
#include "watchers/tree.h"
#include "watchers/watch.h"

#define BATCH_MAX	256	/* files per journaling transaction */
#define JOURNAL_WAIT_MS	20	/* a batch waits this long for company */
#define EVENT_NAP_MS	5	/* inotify is read at most this often */
#define RESCAN_QUIET_MS	1000	/* a rescan waits this long after an mtime */
#define RETRY_RESCAN_MS	5000	/* after a journaling failure */
#define YOUNG_MS	60000	/* re-examine files changed this recently */
#define YOUNG_CHECK_MS	1000	/* how often */
#define YOUNG_MAX	4096	/* beyond this, a full rescan later instead */

#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | \
	IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | \
	IN_EXCL_UNLINK)

/* A file waiting for its settle window to pass. */
struct settle {
	char *path;		/* relative to the root; the map's key too */
	int64_t due;		/* monotonic ms when it may be journaled */
	int quiet_ms;		/* how long its mtime must be in the past */
	struct settle *prev, *next;	/* ordered by due */
};

/* What a young file looked like when last seen. */
struct young {
	int64_t size, mtime_ns, ino;
	int held;		/* open for writing when last looked at:
				   journaled once the writer lets go */
};

/* A file ready to journal. */
struct ready {
	char *path;
	struct stat st;
};

struct watch {
	const struct cfg *cfg;		/* read-only, owned by main */
	int rootfd;			/* the uploads root, O_PATH */
	struct outbox *ob;		/* this thread's connection */
	int notify_fd;			/* eventfd of the sync thread, or -1 */
	int ctl_fd;			/* eventfd: stop or rescan requested */
	atomic_int stop_req;
	atomic_int rescan_req;
	atomic_int ready;		/* start-up rescan journaled */
	atomic_llong heartbeat;		/* monotonic ms of the last turn */
	int ifd;			/* inotify, or -1 when polling */
	int polling;			/* no inotify: rescan every poll_ms */
	struct strmap *wd_paths;	/* "wd" -> char * directory */
	struct strmap *settle_map;	/* path -> struct settle * */
	struct settle *head, *tail;
	struct ready *batch;		/* files to journal next */
	size_t nbatch, batch_cap;
	int64_t batch_since;		/* monotonic ms the batch's first file
					   came, 0 when it is empty */
	int flush_failed;		/* a journaling batch was dropped */
	int paused;			/* journaling failed; said so once */
	struct strmap *warned;		/* things warned about once */
	struct strmap *unwatched;	/* dirs without a watch (limit hit) */
	struct strmap *young;		/* path -> struct young * */
	struct strmap *created;		/* files created in this read of
					   events, not yet closed: marker */
	int64_t nap_until;		/* monotonic ms: inotify is not read
					   before (EVENT_NAP_MS) */
	int64_t next_young;		/* monotonic ms of the next check, 0 */
	char *self_rel;			/* the outbox file under the root */
	int64_t next_rescan;		/* monotonic ms of the next full rescan */
	int64_t next_poll;		/* polling or unwatched dirs: next pass */
	int journaled;			/* entries journaled by the last rescan */
	int overflow_backoff_ms;	/* grows while overflows repeat */
	int64_t last_overflow;		/* monotonic ms of the last one */
	int overflowed;			/* the next rescan is because of one */
	int fatal;			/* the outbox failed in a way we stop on */
	int test_watch_limit;		/* OUTBOXD_TEST_WATCH_LIMIT, 0: none */
};

/* ---- ignore rules -------------------------------------------------------- */

int
watch_ignored(char *const *globs, const char *name)
{
	static const char *const builtin[] = { "*.tmp", "*.part", "*.swp",
	    "*~", "~$*" };
	size_t i;

	if (name[0] == '.')
		return 1;
	for (i = 0; i < ARRAY_SIZE(builtin); i++)
		if (fnmatch(builtin[i], name, FNM_PERIOD) == 0)
			return 1;
	for (; globs != NULL && *globs != NULL; globs++)
		if (fnmatch(*globs, name, FNM_PERIOD) == 0)
			return 1;
	return 0;
}

/* tree_walk's ignore callback; arg is the walk's struct walk_ctx. */
static int ignore_name(void *arg, const char *name);

/* The outbox database and its companions, when they sit in the tree. */
static int
is_self(const struct watch *w, const char *rel)
{
	static const char *const suffix[] = { "", "-wal", "-shm", "-journal",
	    ".lock" };
	size_t n, i;

	if (w->self_rel == NULL)
		return 0;
	n = strlen(w->self_rel);
	if (strncmp(rel, w->self_rel, n) != 0)
		return 0;
	for (i = 0; i < ARRAY_SIZE(suffix); i++)
		if (strcmp(rel + n, suffix[i]) == 0)
			return 1;
	return 0;
}

static char *
relative_self(const char *root, const char *db)
{
	char rroot[PATH_MAX], rdir[PATH_MAX];
	const char *slash = strrchr(db, '/');
	char *dir = slash ? xstrndup(db, (size_t)(slash - db)) : xstrdup(".");
	const char *base = slash ? slash + 1 : db;
	char *rel = NULL;
	size_t n;

	if (slash == db) {
		free(dir);
		dir = xstrdup("/");
	}
	if (realpath(root, rroot) != NULL && realpath(dir, rdir) != NULL) {
		n = strlen(rroot);
		if (strcmp(rdir, rroot) == 0)
			rel = xstrdup(base);
		else if (strncmp(rdir, rroot, n) == 0 && rdir[n] == '/')
			rel = xasprintf("%s/%s", rdir + n + 1, base);
	}
	free(dir);
	return rel;
}

/* Logs a warning the first time key is seen; later ones only at debug. */
static void
warn_once(struct watch *w, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
warn_once(struct watch *w, const char *key, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	if (vsnprintf(msg, sizeof(msg), fmt, ap) >= (int)sizeof(msg))
		utf8_cut_tail(msg);	/* a name cut between characters */
	va_end(ap);
	if (strmap_get(w->warned, key) != NULL) {
		log_debug("%s", msg);
		return;
	}
	if (strmap_count(w->warned) >= 10000) {
		/* Remembering every odd name forever would grow without end:
		 * start over (a name may be warned about once more). */
		strmap_free(w->warned);
		w->warned = strmap_new();
	}
	strmap_put(w->warned, key, (void *)1);
	log_warnx("%s", msg);
}

/* ---- journaling ---------------------------------------------------------- */

/* A name S3 cannot take is journaled with its legs failed; say so here,
 * once, where an operator reads. */
static void
warn_unstorable(struct watch *w, const char *rel)
{
	const char *rest;
	size_t jl;
	char job[37], *key;
	struct err e = {0};

	if (keymap_classify(rel, &jl, &rest) != KEYMAP_DOCUMENT)
		return;
	memcpy(job, rel, jl);
	job[jl] = '\0';
	key = keymap_s3_key(job, rest);
	if (keymap_check_key(key, &e) < 0) {
		char k[PATH_MAX + 8];

		snprintf(k, sizeof(k), "key:%s", rel);
		warn_once(w, k, "%s: cannot be stored: %s (see outboxctl list "
		    "--state failed)", rel, e.msg);
	}
	free(key);
}

static void
notify_sync(struct watch *w)
{
	eventfd_poke(w->notify_fd);
}

static void
batch_clear(struct watch *w)
{
	size_t i;

	for (i = 0; i < w->nbatch; i++)
		free(w->batch[i].path);
	w->nbatch = 0;
	w->batch_since = 0;
}

/*
 * Journals the batch in one transaction. On failure the batch is dropped
 * and a rescan scheduled: the files are still on disk and will be found.
 */
static int
flush(struct watch *w)
{
	struct err e = {0};
	size_t i;
	int n = 0, rc;

	if (w->nbatch == 0)
		return 0;
	if (outbox_begin(w->ob, &e) < 0)
		goto fail;
	for (i = 0; i < w->nbatch; i++) {
		const struct stat *st = &w->batch[i].st;
		struct outbox_file f = {
			.path = w->batch[i].path,
			.size = (int64_t)st->st_size,
			.mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 +
			    st->st_mtim.tv_nsec,
			.inode = (int64_t)st->st_ino,
		};
		struct log_ctx ctx = { NULL, f.path, NULL, 0 };

		rc = outbox_journal(w->ob, &f, NULL, &e);
		if (rc < 0)
			goto fail;
		if (rc > 0)
			warn_unstorable(w, f.path);
		if (rc > 0) {
			n++;
			log_msg(LOG_DEBUG, &ctx, "journaled (%lld bytes)",
			    (long long)f.size);
		}
	}
	if (outbox_commit(w->ob, &e) < 0)
		goto fail;
	if (n > 0)
		test_crash_point("journaled");
	if (w->paused) {
		log_info("journaling resumed");
		w->paused = 0;
	}
	batch_clear(w);
	w->journaled += n;
	if (n > 0)
		notify_sync(w);
	return n;
fail:
	outbox_rollback(w->ob);
	/* Once per episode: a full disk would otherwise fill the log too. */
	log_msg(w->paused ? LOG_DEBUG : LOG_ERR, NULL, "journaling paused: %s; "
	    "the files stay on disk and are journaled by a rescan once the "
	    "outbox can be written (tried every %d s)", e.msg,
	    RETRY_RESCAN_MS / 1000);
	w->paused = 1;
	if (e.cls == ERR_FATAL && e.sys_errno == 0 &&
	    strstr(e.msg, "disk I/O error") != NULL)
		w->fatal = 1;	/* never trust a failed fsync */
	batch_clear(w);
	w->flush_failed = 1;
	w->next_rescan = time_mono_ms() + RETRY_RESCAN_MS;
	return -1;
}

static int
batch_add(struct watch *w, const char *rel, const struct stat *st)
{
	/* A hard link in the tree may name a file from anywhere on its
	 * file system (the credentials, with fs.protected_hardlinks off).
	 * A later link to a journaled file is harmless: the legs read
	 * only the journaled inode. */
	if (st->st_nlink > 1 && !w->cfg->hardlinks_allow) {
		char key[PATH_MAX + 8];

		snprintf(key, sizeof(key), "hardlink:%s", rel);
		warn_once(w, key, "%s: has %lu hard links, so it may be a "
		    "file from outside the uploads root: skipped (set "
		    "OUTBOXD_HARDLINKS=allow to upload such files)", rel,
		    (unsigned long)st->st_nlink);
		return 0;
	}
	if (w->nbatch == w->batch_cap) {
		w->batch_cap = w->batch_cap ? w->batch_cap * 2 : BATCH_MAX;
		w->batch = xrealloc(w->batch, w->batch_cap * sizeof(*w->batch));
	}
	if (w->nbatch == 0)
		w->batch_since = time_mono_ms();
	w->batch[w->nbatch].path = xstrdup(rel);
	w->batch[w->nbatch].st = *st;
	w->nbatch++;
	if (w->nbatch >= BATCH_MAX)
		return flush(w);
	return 0;
}

/* ---- the settle queue ---------------------------------------------------- */

static void
settle_unlink(struct watch *w, struct settle *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		w->head = s->next;
	if (s->next)
		s->next->prev = s->prev;
	else
		w->tail = s->prev;
	s->prev = s->next = NULL;
}

/* Inserts by due time, searching from the tail where new ones belong. */
static void
settle_link(struct watch *w, struct settle *s)
{
	struct settle *after = w->tail;

	while (after != NULL && after->due > s->due)
		after = after->prev;
	s->prev = after;
	s->next = after ? after->next : w->head;
	if (s->next)
		s->next->prev = s;
	else
		w->tail = s;
	if (after)
		after->next = s;
	else
		w->head = s;
}

/* (Re)arms rel to be journaled after delay_ms, quiet for quiet_ms. */
static void
settle_arm(struct watch *w, const char *rel, int delay_ms, int quiet_ms)
{
	struct settle *s = strmap_get(w->settle_map, rel);

	if (s != NULL) {
		settle_unlink(w, s);
		if (quiet_ms < s->quiet_ms)
			quiet_ms = s->quiet_ms;
	} else {
		s = xcalloc(1, sizeof(*s));
		s->path = xstrdup(rel);
		strmap_put(w->settle_map, rel, s);
	}
	s->due = time_mono_ms() + delay_ms;
	s->quiet_ms = quiet_ms;
	settle_link(w, s);
}

static void
settle_free(struct watch *w, struct settle *s)
{
	strmap_del(w->settle_map, s->path);
	free(s->path);
	free(s);
}

/* When the batch must be journaled: at once when no other file is due
 * within JOURNAL_WAIT_MS, else once its first file has waited that long
 * (INT64_MAX when it is empty). */
static int64_t
batch_due(const struct watch *w)
{
	if (w->nbatch == 0)
		return INT64_MAX;
	if (w->head == NULL || w->head->due > time_mono_ms() + JOURNAL_WAIT_MS)
		return 0;
	return w->batch_since + JOURNAL_WAIT_MS;
}

/* Moves every settled file that is due into the batch, re-arms ones still
 * changing, and journals the batch when it is due (batch_due). */
static int
settle_fire(struct watch *w)
{
	int64_t now = time_mono_ms();

	while (w->head != NULL && w->head->due <= now) {
		struct settle *s = w->head;
		struct stat st;
		struct err e;
		int64_t age_ms;

		settle_unlink(w, s);
		if (tree_stat(w->rootfd, s->path, &st, &e) < 0) {
			if (e.cls != ERR_GONE)
				log_warnx("%s", e.msg);
			settle_free(w, s);
			continue;
		}
		if (!S_ISREG(st.st_mode)) {
			settle_free(w, s);
			continue;
		}
		age_ms = time_now_ms() - ((int64_t)st.st_mtim.tv_sec * 1000 +
		    st.st_mtim.tv_nsec / 1000000);
		if (age_ms >= 0 && age_ms < s->quiet_ms) {
			/* Written again since: wait until it has been quiet. */
			s->due = now + (s->quiet_ms - age_ms) + 1;
			settle_link(w, s);
			continue;
		}
		if (batch_add(w, s->path, &st) < 0 && w->fatal)
			return -1;
		settle_free(w, s);
	}
	if (batch_due(w) > time_mono_ms())
		return 0;
	return flush(w) < 0 && w->fatal ? -1 : 0;
}

/* ---- watches ------------------------------------------------------------- */

static void
add_watch(struct watch *w, const char *rel)
{
	char key[16], path[64];
	struct err e;
	int wd, dfd, saved;

	if (w->ifd < 0)
		return;
	/* inotify_add_watch takes a path. Open the directory safely (no
	 * symlinks, beneath the root) and watch it through its descriptor's
	 * /proc link, which names exactly the directory we opened. */
	dfd = tree_open(w->rootfd, rel, O_PATH | O_DIRECTORY, &e);
	if (dfd < 0) {
		if (e.cls != ERR_GONE)
			log_warnx("cannot watch %s", e.msg);
		return;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", dfd);
	if (w->test_watch_limit > 0 &&
	    (int)strmap_count(w->wd_paths) >= w->test_watch_limit) {
		wd = -1;	/* the fault tests' stand-in for a full table */
		errno = ENOSPC;
	} else {
		wd = inotify_add_watch(w->ifd, path, WATCH_MASK & ~IN_DONT_FOLLOW);
	}
	saved = errno;
	close(dfd);
	errno = saved;
	if (wd < 0) {
		if (errno == ENOSPC) {
			warn_once(w, "#ENOSPC", "inotify watch limit reached "
			    "(raise fs.inotify.max_user_watches, see packaging/"
			    "sysctl.d): directories without a watch are "
			    "rescanned every %d ms", w->cfg->poll_ms);
			if (strmap_get(w->unwatched, rel) == NULL)
				strmap_put(w->unwatched, rel, (void *)1);
			if (w->next_poll == 0)
				w->next_poll = time_mono_ms() + w->cfg->poll_ms;
		} else if (errno != ENOENT && errno != ENOTDIR) {
			log_warn("cannot watch %s", rel[0] ? rel : "the root");
		}
		return;
	}
	snprintf(key, sizeof(key), "%d", wd);
	free(strmap_put(w->wd_paths, key, xstrdup(rel)));
	strmap_del(w->unwatched, rel);	/* its values are markers, not memory */
}

/* Forgets the watches of dir and everything under it (moved away). */
static void
drop_watches(struct watch *w, const char *dir)
{
	size_t i = 0, n = strlen(dir);
	const char *key;
	void *val;

	while (strmap_next(w->wd_paths, &i, &key, &val)) {
		const char *p = val;

		if (strncmp(p, dir, n) == 0 && (p[n] == '\0' || p[n] == '/')) {
			int wd = atoi(key);

			inotify_rm_watch(w->ifd, wd);
			free(strmap_del(w->wd_paths, key));
		}
	}
}

/* ---- young files --------------------------------------------------------- */

static void
young_set(struct young *y, const struct stat *st)
{
	y->size = (int64_t)st->st_size;
	y->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 +
	    st->st_mtim.tv_nsec;
	y->ino = (int64_t)st->st_ino;
}

/* Keeps an eye on rel, found by a walk age_ms after its last change. */
static void
young_note(struct watch *w, const char *rel, const struct stat *st,
    int64_t age_ms)
{
	struct young *y;

	if (w->ifd < 0 || age_ms >= YOUNG_MS)
		return;		/* polling sees every change anyway */
	y = strmap_get(w->young, rel);
	if (y == NULL) {
		if (strmap_count(w->young) >= YOUNG_MAX) {
			/* Too many to stat each second: rescan once they
			 * have all had time to finish. */
			if (w->next_rescan > time_mono_ms() + YOUNG_MS)
				w->next_rescan = time_mono_ms() + YOUNG_MS;
			return;
		}
		y = xcalloc(1, sizeof(*y));
		strmap_put(w->young, rel, y);
	}
	young_set(y, st);
	if (w->next_young == 0)
		w->next_young = time_mono_ms() + YOUNG_CHECK_MS;
}

/*
 * 1 when someone has rel open for writing, 0 when nobody has, -1 when it
 * cannot be told. The kernel refuses a read lease (EAGAIN) on a file open
 * for writing; the lease is dropped at once. (A writer opening it in
 * between waits for that, and the SIGIO it sends is blocked: outboxd.c.)
 */
static int
being_written(int rootfd, const char *rel)
{
	struct stat st;
	struct err e;
	int fd = tree_open_file(rootfd, rel, &st, &e), rc = -1;

	if (fd < 0)
		return -1;
	if (fcntl(fd, F_SETLEASE, F_RDLCK) == 0) {
		fcntl(fd, F_SETLEASE, F_UNLCK);
		rc = 0;
	} else if (errno == EAGAIN) {
		rc = 1;
	}
	close(fd);
	return rc;
}

/* Stats every young file: a changed one settles again unless it is still
 * open for writing, one unchanged for YOUNG_MS (or gone) is forgotten. */
static void
young_check(struct watch *w)
{
	size_t i = 0;
	const char *key;
	void *val;

	while (strmap_next(w->young, &i, &key, &val)) {
		struct young *y = val, now = {0};
		struct stat st;
		struct err e;
		int64_t age_ms;

		if (tree_stat(w->rootfd, key, &st, &e) < 0 ||
		    !S_ISREG(st.st_mode)) {
			free(strmap_del(w->young, key));
			continue;
		}
		young_set(&now, &st);
		if (now.size != y->size || now.mtime_ns != y->mtime_ns ||
		    now.ino != y->ino || y->held) {
			*y = now;
			y->held = being_written(w->rootfd, key) == 1;
			if (!y->held)
				settle_arm(w, key, w->cfg->settle_ms,
				    RESCAN_QUIET_MS);
			continue;
		}
		age_ms = time_now_ms() - now.mtime_ns / 1000000;
		if (age_ms < 0 || age_ms >= YOUNG_MS)
			free(strmap_del(w->young, key));
	}
	w->next_young = strmap_count(w->young) > 0 ?
	    time_mono_ms() + YOUNG_CHECK_MS : 0;
}

/* ---- rescans ------------------------------------------------------------- */

struct walk_ctx {
	struct watch *w;
	int from_event;		/* a directory that just appeared */
	int files;		/* regular files seen */
};

static int
ignore_name(void *arg, const char *name)
{
	struct walk_ctx *c = arg;

	return watch_ignored(c->w->cfg->ignore, name);
}

static int
is_top_level(const char *rel)
{
	return strchr(rel, '/') == NULL;
}

static int
visit(void *arg, enum tree_what what, const char *rel, const struct stat *st)
{
	struct walk_ctx *c = arg;
	struct watch *w = c->w;
	struct young *y;
	int64_t age_ms;

	switch (what) {
	case TREE_DIR:
		if (is_top_level(rel) && !uuid_valid(rel)) {
			struct err e = {0};
			char key[PATH_MAX + 8];

			snprintf(key, sizeof(key), "dir:%s", rel);
			warn_once(w, key, "%s: not a job directory (the name is "
			    "not a UUID): its files are skipped", rel);
			if (outbox_note_not_job(w->ob, rel, &e) < 0)
				log_warnx("%s", e.msg);
			return 0;
		}
		add_watch(w, rel);
		return 1;
	case TREE_FILE:
		c->files++;
		if (is_self(w, rel))
			return 0;
		if (is_top_level(rel)) {
			char key[PATH_MAX + 8];

			snprintf(key, sizeof(key), "top:%s", rel);
			warn_once(w, key, "%s: not in a job directory: skipped",
			    rel);
			return 0;
		}
		age_ms = time_now_ms() - ((int64_t)st->st_mtim.tv_sec * 1000 +
		    st->st_mtim.tv_nsec / 1000000);
		young_note(w, rel, st, age_ms);
		if (c->from_event) {
			settle_arm(w, rel, w->cfg->settle_ms, w->cfg->settle_ms);
		} else if (age_ms >= 0 && age_ms < RESCAN_QUIET_MS) {
			/* Maybe still being written: let it settle first. */
			settle_arm(w, rel, (int)(RESCAN_QUIET_MS - age_ms),
			    RESCAN_QUIET_MS);
		} else if (age_ms >= 0 && age_ms < YOUNG_MS &&
		    (y = strmap_get(w->young, rel)) != NULL &&
		    being_written(w->rootfd, rel) == 1) {
			y->held = 1;	/* a writer pausing: not finished */
		} else if (batch_add(w, rel, st) < 0 && w->fatal) {
			return -1;
		}
		return 0;
	case TREE_OTHER: {
		char key[PATH_MAX + 8];

		snprintf(key, sizeof(key), "other:%s", rel);
		warn_once(w, key, "%s: not a regular file (FIFO, socket or "
		    "device): skipped", rel);
		return 0;
	}
	case TREE_SYMLINK: {
		char key[PATH_MAX + 8];

		snprintf(key, sizeof(key), "link:%s", rel);
		warn_once(w, key, "%s: a symlink: never followed, skipped", rel);
		return 0;
	}
	}
	return 0;
}

/* Walks the tree under rel; returns the regular files seen, or -1. */
static int
rescan(struct watch *w, const char *rel, int from_event)
{
	struct walk_ctx c = { w, from_event, 0 };
	struct err e = {0};

	if (rel[0] != '\0' && is_top_level(rel) && !uuid_valid(rel)) {
		struct stat st;

		memset(&st, 0, sizeof(st));
		visit(&c, TREE_DIR, rel, &st);
		return 0;
	}
	if (rel[0] != '\0')
		add_watch(w, rel);
	if (tree_walk(w->rootfd, rel, ignore_name, visit, &c, &e) < 0) {
		if (w->fatal)
			return -1;
		if (e.msg[0] != '\0' && e.cls != ERR_GONE)
			log_warnx("rescan of %s: %s", rel[0] ? rel : "the uploads "
			    "root", e.msg);
	}
	if (flush(w) < 0 && w->fatal)
		return -1;
	return c.files;
}

static int
full_rescan(struct watch *w, const char *why)
{
	int64_t t0 = time_mono_ms();
	int files;

	w->journaled = 0;
	files = rescan(w, "", 0);
	if (files < 0)
		return -1;
	log_info("rescan (%s): %d files, %d journaled, %lld ms", why, files,
	    w->journaled, (long long)(time_mono_ms() - t0));
	if (w->paused)	/* journaling still fails: try again soon */
		w->next_rescan = time_mono_ms() + RETRY_RESCAN_MS;
	else if (w->cfg->rescan_s > 0)
		w->next_rescan = time_mono_ms() + (int64_t)w->cfg->rescan_s * 1000;
	else
		w->next_rescan = INT64_MAX;
	return 0;
}

/* ---- inotify events ------------------------------------------------------ */

static int
handle_event(struct watch *w, const struct inotify_event *ev)
{
	char key[16], *rel;
	const char *dir;

	if (ev->mask & IN_Q_OVERFLOW) {
		log_warnx("inotify queue overflowed (events were lost): full "
		    "rescan in %d ms", w->overflow_backoff_ms);
		w->next_rescan = time_mono_ms() + w->overflow_backoff_ms;
		/* Overflows in a row back off; a quiet minute resets it. */
		if (time_mono_ms() - w->last_overflow > 60000)
			w->overflow_backoff_ms = 100;
		else
			w->overflow_backoff_ms = w->overflow_backoff_ms * 2 > 60000 ?
			    60000 : w->overflow_backoff_ms * 2;
		w->last_overflow = time_mono_ms();
		w->overflowed = 1;
		return 0;
	}
	snprintf(key, sizeof(key), "%d", ev->wd);
	if (ev->mask & IN_IGNORED) {
		free(strmap_del(w->wd_paths, key));
		return 0;
	}
	dir = strmap_get(w->wd_paths, key);
	if (dir == NULL)
		return 0;
	if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
		if (dir[0] == '\0')
			log_err("the uploads root %s was %s: outboxd keeps its "
			    "handle, but new files will not be seen",
			    w->cfg->watch_dir, (ev->mask & IN_DELETE_SELF) ?
			    "deleted" : "moved");
		return 0;
	}
	if (ev->len == 0 || ev->name[0] == '\0')
		return 0;
	if (watch_ignored(w->cfg->ignore, ev->name))
		return 0;
	rel = tree_join(dir, ev->name);
	if (ev->mask & IN_ISDIR) {
		if (ev->mask & (IN_CREATE | IN_MOVED_TO)) {
			/* Watch first, then scan: nothing made in between is
			 * missed, and a repeat is harmless (same stat). */
			if (rescan(w, rel, 1) < 0) {
				free(rel);
				return -1;
			}
		} else if (ev->mask & IN_MOVED_FROM) {
			drop_watches(w, rel);
		}
	} else if ((ev->mask & IN_CREATE) && !is_top_level(rel) &&
	    !is_self(w, rel)) {
		/* Looked at once the events read so far are handled, unless
		 * its close or rename came with them (created_check). */
		strmap_put(w->created, rel, (void *)1);
	} else if (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO)) {
		strmap_del(w->created, rel);	/* its values are markers */
		if (is_top_level(rel)) {
			char k[PATH_MAX + 8];

			snprintf(k, sizeof(k), "top:%s", rel);
			warn_once(w, k, "%s: not in a job directory: skipped",
			    rel);
		} else if (!is_self(w, rel)) {
			settle_arm(w, rel, w->cfg->settle_ms, w->cfg->settle_ms);
		}
	}
	free(rel);
	return 0;
}

/*
 * The files created in the events just read whose close or rename did not
 * come with them. A hard link (or linkat of an O_TMPFILE) appears complete
 * with no close or rename event to follow: settle it now. An ordinary new
 * file has one link and waits for its close.
 */
static void
created_check(struct watch *w)
{
	size_t i = 0;
	const char *key;
	void *val;

	if (strmap_count(w->created) == 0)
		return;
	while (strmap_next(w->created, &i, &key, &val)) {
		struct stat st;
		struct err e;

		if (tree_stat(w->rootfd, key, &st, &e) == 0 &&
		    S_ISREG(st.st_mode) && st.st_nlink > 1)
			settle_arm(w, key, w->cfg->settle_ms, w->cfg->settle_ms);
	}
	strmap_free(w->created);
	w->created = strmap_new();
}

/* Handles every queued event; returns how many, or -1 (fatal). */
static int
read_events(struct watch *w)
{
	char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
	int events = 0;

	for (;;) {
		ssize_t n = read(w->ifd, buf, sizeof(buf));
		char *p;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				log_warn("reading inotify events");
			created_check(w);
			return events;
		}
		for (p = buf; p < buf + n; events++) {
			const struct inotify_event *ev = (void *)p;

			if (handle_event(w, ev) < 0)
				return -1;
			p += sizeof(*ev) + ev->len;
		}
	}
}

/* ---- life cycle ---------------------------------------------------------- */

/* Network and user-space file systems where inotify sees nothing remote. */
static int
needs_polling(int fd, const char **fsname)
{
	struct statfs sf;

	if (fstatfs(fd, &sf) < 0)
		return 0;
	switch ((unsigned long)sf.f_type) {
	case 0x6969: *fsname = "NFS"; return 1;
	case 0xFF534D42: *fsname = "CIFS"; return 1;
	case 0xFE534D42: *fsname = "SMB2"; return 1;
	case 0x517B: *fsname = "SMB"; return 1;
	case 0x65735546: *fsname = "FUSE"; return 1;
	case 0x01021997: *fsname = "9P"; return 1;
	case 0x73757245: *fsname = "Coda"; return 1;
	case 0x6B414653: *fsname = "AFS"; return 1;
	default: return 0;
	}
}

struct watch *
watch_create(const struct cfg *cfg, int live, int notify_fd, struct err *e)
{
	struct watch *w = xcalloc(1, sizeof(*w));
	const char *fsname = NULL;

	w->cfg = cfg;
	w->notify_fd = notify_fd;
	w->ifd = -1;
	w->ctl_fd = -1;
	w->overflow_backoff_ms = 100;
	if (getenv("OUTBOXD_TEST_WATCH_LIMIT") != NULL)
		w->test_watch_limit = atoi(getenv("OUTBOXD_TEST_WATCH_LIMIT"));
	w->wd_paths = strmap_new();
	w->settle_map = strmap_new();
	w->warned = strmap_new();
	w->unwatched = strmap_new();
	w->young = strmap_new();
	w->created = strmap_new();
	w->rootfd = open(cfg->watch_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (w->rootfd < 0) {
		err_sys(e, ERR_FATAL, "OUTBOXD_WATCH_DIR=%s", cfg->watch_dir);
		goto fail;
	}
	w->self_rel = relative_self(cfg->watch_dir, cfg->state_db);
	w->ob = outbox_open(cfg->state_db, 0, e);
	if (w->ob == NULL)
		goto fail;
	w->ctl_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->ctl_fd < 0) {
		err_sys(e, ERR_FATAL, "eventfd");
		goto fail;
	}
	if (!live)
		return w;
	if (cfg->watch_mode == WATCH_POLL) {
		w->polling = 1;
	} else if (cfg->watch_mode == WATCH_AUTO &&
	    needs_polling(w->rootfd, &fsname)) {
		log_info("%s is on %s, where inotify misses remote changes: "
		    "polling every %d ms", cfg->watch_dir, fsname, cfg->poll_ms);
		w->polling = 1;
	}
	if (!w->polling) {
		w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
		if (w->ifd < 0) {
			if (cfg->watch_mode == WATCH_INOTIFY) {
				err_sys(e, ERR_FATAL, "inotify_init1");
				goto fail;
			}
			log_warn("inotify unavailable, polling every %d ms",
			    cfg->poll_ms);
			w->polling = 1;
		}
	}
	return w;
fail:
	watch_free(w);
	return NULL;
}

void
watch_free(struct watch *w)
{
	size_t i = 0;
	const char *key;
	void *val;

	if (w == NULL)
		return;
	while (strmap_next(w->wd_paths, &i, &key, &val))
		free(val);
	strmap_free(w->wd_paths);
	while (w->head != NULL) {
		struct settle *s = w->head;

		settle_unlink(w, s);
		settle_free(w, s);
	}
	strmap_free(w->settle_map);
	strmap_free(w->warned);
	strmap_free(w->unwatched);
	i = 0;
	while (w->young != NULL && strmap_next(w->young, &i, &key, &val))
		free(val);
	strmap_free(w->young);
	strmap_free(w->created);
	batch_clear(w);
	free(w->batch);
	free(w->self_rel);
	outbox_close(w->ob);
	if (w->ifd >= 0)
		close(w->ifd);
	if (w->ctl_fd >= 0)
		close(w->ctl_fd);
	if (w->rootfd >= 0)
		close(w->rootfd);
	free(w);
}

int
watch_rescan_now(struct watch *w, struct err *e)
{
	w->journaled = 0;
	w->flush_failed = 0;
	if (rescan(w, "", 0) < 0)
		goto fail;
	/* Wait out the files that were still settling. */
	while (w->head != NULL) {
		int64_t wait = w->head->due - time_mono_ms();

		if (wait > 0)
			usleep((useconds_t)(wait > 1000 ? 1000 : wait) * 1000);
		if (settle_fire(w) < 0)
			goto fail;
	}
	if (w->flush_failed)
		goto fail;
	return w->journaled;
fail:
	err_set(e, w->fatal ? ERR_FATAL : ERR_TRANSIENT, "journaling failed "
	    "(see the error above)");
	return -1;
}

void
watch_stop(struct watch *w)
{
	atomic_store(&w->stop_req, 1);
	eventfd_poke(w->ctl_fd);
}

void
watch_request_rescan(struct watch *w)
{
	atomic_store(&w->rescan_req, 1);
	eventfd_poke(w->ctl_fd);
}

int
watch_ready(struct watch *w)
{
	return atomic_load(&w->ready);
}

long long
watch_heartbeat(struct watch *w)
{
	return atomic_load(&w->heartbeat);
}

/* Rescans the directories that have no watch (the watch limit). */
static int
poll_unwatched(struct watch *w)
{
	size_t i = 0, n = 0;
	const char *key;
	void *val;
	char **dirs = xcalloc(strmap_count(w->unwatched) + 1, sizeof(*dirs));
	int rc = 0;

	while (strmap_next(w->unwatched, &i, &key, &val))
		dirs[n++] = xstrdup(key);
	for (i = 0; i < n; i++) {
		if (rc == 0 && rescan(w, dirs[i], 0) < 0)
			rc = -1;
		free(dirs[i]);
	}
	free(dirs);
	return rc;
}

int
watch_run(struct watch *w)
{
	atomic_store(&w->heartbeat, time_mono_ms());
	if (w->ifd >= 0)
		add_watch(w, "");
	if (full_rescan(w, "start-up") < 0)
		return -1;
	atomic_store(&w->ready, 1);
	if (w->polling)
		w->next_poll = time_mono_ms() + w->cfg->poll_ms;

	while (!atomic_load(&w->stop_req)) {
		struct pollfd pfd[2];
		int64_t now = time_mono_ms(), wake = w->next_rescan;
		int nfd = 0, timeout, napping = now < w->nap_until, events;

		if (w->head != NULL && w->head->due < wake)
			wake = w->head->due;
		if (batch_due(w) < wake)
			wake = batch_due(w);
		if (napping && w->nap_until < wake)
			wake = w->nap_until;
		if (w->next_poll != 0 && w->next_poll < wake)
			wake = w->next_poll;
		if (w->next_young != 0 && w->next_young < wake)
			wake = w->next_young;
		/* Wake at least once a second for the watchdog heartbeat. */
		timeout = wake - now > 1000 ? 1000 : (int)(wake > now ? wake - now : 0);

		pfd[nfd].fd = w->ctl_fd;
		pfd[nfd++].events = POLLIN;
		if (w->ifd >= 0 && !napping) {
			pfd[nfd].fd = w->ifd;
			pfd[nfd++].events = POLLIN;
		}
		if (poll(pfd, (nfds_t)nfd, timeout) < 0 && errno != EINTR) {
			log_warn("poll");
			usleep(100000);
		}
		atomic_store(&w->heartbeat, time_mono_ms());
		if (pfd[0].revents & POLLIN)
			eventfd_drain(w->ctl_fd);
		if (atomic_load(&w->stop_req))
			break;
		if (w->ifd >= 0 && nfd > 1 && (pfd[1].revents & POLLIN)) {
			if ((events = read_events(w)) < 0)
				return -1;
			if (events > 0)
				w->nap_until = time_mono_ms() + EVENT_NAP_MS;
		}
		if (w->next_young != 0 && time_mono_ms() >= w->next_young)
			young_check(w);
		if (settle_fire(w) < 0)
			return -1;
		if (atomic_exchange(&w->rescan_req, 0)) {
			if (full_rescan(w, "requested") < 0)
				return -1;
		} else if (time_mono_ms() >= w->next_rescan) {
			const char *why = w->overflowed ? "after lost events" :
			    w->paused ? "journaling again" : "periodic";

			w->overflowed = 0;
			if (full_rescan(w, why) < 0)
				return -1;
		}
		if (w->next_poll != 0 && time_mono_ms() >= w->next_poll) {
			if (w->polling) {
				w->journaled = 0;
				if (rescan(w, "", 0) < 0)
					return -1;
			} else if (poll_unwatched(w) < 0) {
				return -1;
			}
			w->next_poll = (w->polling ||
			    strmap_count(w->unwatched) > 0) ?
			    time_mono_ms() + w->cfg->poll_ms : 0;
		}
		if (w->fatal)
			return -1;
	}
	/* Journal what already settled enough; the rest is found at start. */
	flush(w);
	return 0;
}
