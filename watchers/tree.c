/*
 * tree.c - see tree.h. openat2 is called through syscall(2) so the
 * program builds and runs on kernels and C libraries without it; the
 * fallback walks components with O_NOFOLLOW, which refuses symlinks at
 * every step, and rejects "..", so it cannot leave the root either.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifdef HAVE_LINUX_OPENAT2_H
#include <linux/openat2.h>
#endif

#include "watchers/tree.h"

#ifndef RESOLVE_BENEATH
struct open_how {
	unsigned long long flags;
	unsigned long long mode;
	unsigned long long resolve;
};
#define RESOLVE_NO_MAGICLINKS	0x02
#define RESOLVE_NO_SYMLINKS	0x04
#define RESOLVE_BENEATH		0x08
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif

/* 0 until tried, 1 when openat2 works, -1 when the kernel lacks it. */
static atomic_int have_openat2;

static void
open_error(struct err *e, const char *rel, int saved)
{
	errno = saved;
	if (saved == ENOENT || saved == ENOTDIR)
		err_sys(e, ERR_GONE, "%s", rel);
	else if (saved == ELOOP)
		err_set(e, ERR_PERMANENT, "%s: is (or passes through) a "
		    "symlink, which outboxd never follows", rel);
	else if (saved == EXDEV)
		err_set(e, ERR_PERMANENT, "%s: resolves outside the uploads "
		    "root", rel);
	else if (saved == EAGAIN)
		/* A file opened O_NONBLOCK under another process's lease
		 * (Samba, an NFS server's delegation): the open asks the
		 * holder to let go, and a later try finds it free. */
		err_set(e, ERR_TRANSIENT, "%s: busy: another process holds a "
		    "lease on it (or a directory on its path was being "
		    "renamed)", rel);
	else if (saved == EMFILE || saved == ENFILE || saved == ENOMEM ||
	    saved == EINTR)
		err_sys(e, ERR_TRANSIENT, "%s", rel);
	else
		err_sys(e, ERR_PERMANENT, "%s", rel);
}

static int
open_by_components(int rootfd, const char *rel, int flags)
{
	char *copy = xstrdup(rel), *p = copy, *slash;
	int dirfd = rootfd, fd = -1, saved;

	for (;;) {
		slash = strchr(p, '/');
		if (slash != NULL)
			*slash = '\0';
		if (strcmp(p, "..") == 0) {
			errno = EXDEV;
			break;
		}
		if (slash == NULL) {
			fd = openat(dirfd, *p ? p : ".", flags);
			break;
		}
		if (*p != '\0' && strcmp(p, ".") != 0) {
			int next = openat(dirfd, p, O_RDONLY | O_DIRECTORY |
			    O_NOFOLLOW | O_CLOEXEC);

			if (next < 0)
				break;
			if (dirfd != rootfd)
				close(dirfd);
			dirfd = next;
		}
		p = slash + 1;
	}
	saved = errno;
	if (dirfd != rootfd)
		close(dirfd);
	free(copy);
	errno = saved;
	return fd;
}

int
tree_open(int rootfd, const char *rel, int flags, struct err *e)
{
	int fd;

	flags |= O_CLOEXEC | O_NOFOLLOW;
	if (rel[0] == '/') {
		err_set(e, ERR_PERMANENT, "%s: not a relative path", rel);
		return -1;
	}
	if (rel[0] == '\0')
		rel = ".";
	if (have_openat2 >= 0) {
		struct open_how how;
		int tries = 0;

		memset(&how, 0, sizeof(how));
		how.flags = (unsigned long long)flags;
		how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
		    RESOLVE_NO_MAGICLINKS;
		/* EAGAIN: a rename raced the lookup (try again), or the file
		 * is under another process's lease, which no immediate retry
		 * ends: it used to spin here until the lease broke (45 s). */
		do
			fd = (int)syscall(SYS_openat2, rootfd, rel, &how,
			    sizeof(how));
		while (fd < 0 && errno == EAGAIN && ++tries < 3);
		if (fd >= 0 || errno != ENOSYS) {
			have_openat2 = 1;
			if (fd < 0)
				open_error(e, rel, errno);
			return fd;
		}
		have_openat2 = -1;
	}
	fd = open_by_components(rootfd, rel, flags);
	if (fd < 0)
		open_error(e, rel, errno);
	return fd;
}

int
tree_open_file(int rootfd, const char *rel, struct stat *st, struct err *e)
{
	int fd = tree_open(rootfd, rel, O_RDONLY | O_NONBLOCK, e);

	if (fd < 0)
		return -1;
	if (fstat(fd, st) < 0) {
		err_sys(e, ERR_TRANSIENT, "%s", rel);
		close(fd);
		return -1;
	}
	if (!S_ISREG(st->st_mode)) {
		err_set(e, ERR_PERMANENT, "%s: not a regular file", rel);
		close(fd);
		return -1;
	}
	return fd;
}

int
tree_stat(int rootfd, const char *rel, struct stat *st, struct err *e)
{
	const char *slash = strrchr(rel, '/');
	char *dir = slash ? xstrndup(rel, (size_t)(slash - rel)) : xstrdup("");
	const char *base = slash ? slash + 1 : rel;
	int dfd, rc = 0;

	dfd = tree_open(rootfd, dir, O_PATH | O_DIRECTORY, e);
	if (dfd < 0) {
		free(dir);
		return -1;
	}
	if (fstatat(dfd, base, st, AT_SYMLINK_NOFOLLOW) < 0) {
		open_error(e, rel, errno);
		rc = -1;
	}
	close(dfd);
	free(dir);
	return rc;
}

void
tree_use_openat2(int use)
{
	have_openat2 = use ? 0 : -1;
}

char *
tree_join(const char *dir, const char *name)
{
	if (dir == NULL || dir[0] == '\0' || strcmp(dir, ".") == 0)
		return xstrdup(name);
	return xasprintf("%s/%s", dir, name);
}

/* A stack of directories still to visit. */
struct dirstack {
	char **v;
	size_t n, cap;
};

static void
push(struct dirstack *s, char *rel)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 32;
		s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
	}
	s->v[s->n++] = rel;
}

static enum tree_what
what_of(const struct stat *st)
{
	if (S_ISDIR(st->st_mode))
		return TREE_DIR;
	if (S_ISREG(st->st_mode))
		return TREE_FILE;
	if (S_ISLNK(st->st_mode))
		return TREE_SYMLINK;
	return TREE_OTHER;
}

/* Visits one directory's entries, pushing subdirectories to descend. */
static int
walk_one(int rootfd, const char *rel, int (*ignore)(void *, const char *),
    tree_visit_fn visit, void *arg, struct dirstack *todo)
{
	struct err e;
	struct dirent *d;
	DIR *dir;
	int fd, rc = 0;

	fd = tree_open(rootfd, rel, O_RDONLY | O_DIRECTORY, &e);
	if (fd < 0)
		return 0;	/* gone or replaced since it was listed */
	dir = fdopendir(fd);
	if (dir == NULL) {
		close(fd);
		return 0;
	}
	while ((d = readdir(dir)) != NULL) {
		struct stat st;
		char *child;

		if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
			continue;
		if (ignore != NULL && ignore(arg, d->d_name))
			continue;
		if (fstatat(dirfd(dir), d->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;	/* vanished between readdir and stat */
		child = tree_join(rel, d->d_name);
		rc = visit(arg, what_of(&st), child, &st);
		if (rc < 0) {
			free(child);
			break;
		}
		if (S_ISDIR(st.st_mode) && rc == 1)
			push(todo, child);
		else
			free(child);
		rc = 0;
	}
	closedir(dir);
	return rc;
}

int
tree_walk(int rootfd, const char *rel, int (*ignore)(void *, const char *),
    tree_visit_fn visit, void *arg, struct err *e)
{
	struct dirstack todo = {0};
	int fd, rc = 0;

	fd = tree_open(rootfd, rel, O_PATH | O_DIRECTORY, e);
	if (fd < 0)
		return -1;
	close(fd);
	push(&todo, xstrdup(rel));
	while (todo.n > 0) {
		char *dir = todo.v[--todo.n];

		if (rc == 0)
			rc = walk_one(rootfd, dir, ignore, visit, arg, &todo);
		free(dir);
	}
	free(todo.v);
	return rc;
}
