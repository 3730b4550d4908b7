/*
 * tree.h - safe access to the uploads tree.
 *
 * Every file outboxd reads is opened relative to a descriptor of the
 * uploads root, never by an absolute path, and never through a symlink:
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) where the kernel has it,
 * else one openat(O_NOFOLLOW) per path component. Whatever an app (or an
 * attacker with write access to uploads/) puts in the tree, nothing outside
 * the root is read, and FIFOs or devices never block a thread (O_NONBLOCK
 * plus an fstat check for regular files).
 *
 * tree_walk visits the tree depth-first with the same rules, for the
 * start-up and periodic rescans and for directories that appear.
 */
#ifndef OUTBOXD_TREE_H
#define OUTBOXD_TREE_H

#include <sys/stat.h>

#include "base/util.h"

/*
 * Opens rel (relative to rootfd; "" or "." is the root itself) with flags
 * (O_RDONLY, O_DIRECTORY, O_PATH...; O_CLOEXEC and O_NOFOLLOW are added).
 * Returns a descriptor, or -1 with e: ERR_GONE when it does not exist,
 * ERR_PERMANENT for a symlink, a path escaping the root or no permission.
 */
int tree_open(int rootfd, const char *rel, int flags, struct err *e);

/*
 * Opens rel for reading as a regular file (O_NONBLOCK, no symlinks) and
 * fstats it into st. Anything but a regular file is refused (ERR_PERMANENT
 * "not a regular file"), a missing file is ERR_GONE.
 */
int tree_open_file(int rootfd, const char *rel, struct stat *st, struct err *e);

/* lstat of rel without following symlinks anywhere on the way. */
int tree_stat(int rootfd, const char *rel, struct stat *st, struct err *e);

/* What tree_walk found. */
enum tree_what {
	TREE_DIR,	/* a directory, before its contents */
	TREE_FILE,	/* a regular file */
	TREE_OTHER,	/* a FIFO, socket or device: never read */
	TREE_SYMLINK,	/* never followed */
};

/*
 * Called for each thing found; rel is relative to the root. For TREE_DIR
 * return 1 to descend, 0 to skip it; otherwise the result is ignored
 * unless negative, which stops the walk and is returned.
 */
typedef int (*tree_visit_fn)(void *arg, enum tree_what what, const char *rel,
    const struct stat *st);

/*
 * Walks the tree under rel (depth-first, "" for the whole tree), skipping
 * names that ignore(arg, name) says to ignore. Directories that vanish
 * during the walk are passed over. Returns 0, or the first negative result
 * of visit, or -1 with e when rel itself cannot be opened.
 */
int tree_walk(int rootfd, const char *rel, int (*ignore)(void *arg,
    const char *name), tree_visit_fn visit, void *arg, struct err *e);

/* For tests: 0 forces the per-component O_NOFOLLOW fallback that kernels
 * without openat2 (before 5.6) get; 1 goes back to trying openat2. */
void tree_use_openat2(int use);

/* Joins a relative directory and a name: "a/b" + "c" = "a/b/c". */
char *tree_join(const char *dir, const char *name);

#endif
