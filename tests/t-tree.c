/*
 * t-tree.c - proves files are only ever read beneath the uploads root:
 * symlinks (to files, to directories, in the middle of a path) and ".."
 * are refused, a FIFO neither blocks nor is read, a walk reports each
 * kind of thing for what it is, a file another process holds a write
 * lease on is reported busy at once (not opened in a loop until the lease
 * breaks), and the ignore rules match DESIGN.md.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "watchers/tree.h"
#include "watchers/watch.h"
#include "tap.h"

static int files, dirs, links, others;

static int
count_visit(void *arg, enum tree_what what, const char *rel,
    const struct stat *st)
{
	(void)arg;
	(void)rel;
	(void)st;
	switch (what) {
	case TREE_DIR: dirs++; return 1;
	case TREE_FILE: files++; break;
	case TREE_SYMLINK: links++; break;
	case TREE_OTHER: others++; break;
	}
	return 0;
}

static void
touch(const char *dir, const char *rel, const char *text)
{
	char p[512];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	f = fopen(p, "w");
	if (f != NULL) {
		fputs(text, f);
		fclose(f);
	}
}


/*
 * A child that takes a write lease on path and holds it for hold_ms,
 * ignoring the kernel's request to let go (SIGIO), as a stuck lease
 * holder would; the kernel breaks such a lease only after
 * /proc/sys/fs/lease-break-time (45 s). Returns its pid once the lease is
 * held, or -1 (leases not available here).
 */
static pid_t
hold_write_lease(const char *path, int hold_ms)
{
	int pfd[2];
	char ok = 0;
	pid_t pid;

	if (pipe(pfd) < 0)
		return -1;
	if ((pid = fork()) == 0) {
		int fd = open(path, O_RDWR);

		signal(SIGIO, SIG_IGN);
		ok = fd >= 0 && fcntl(fd, F_SETLEASE, F_WRLCK) == 0;
		if (write(pfd[1], &ok, 1) != 1 || !ok)
			_exit(1);
		usleep((useconds_t)hold_ms * 1000);
		_exit(0);
	}
	close(pfd[1]);
	if (pid < 0 || read(pfd[0], &ok, 1) != 1 || !ok) {
		if (pid > 0)
			waitpid(pid, NULL, 0);
		pid = -1;
	}
	close(pfd[0]);
	return pid;
}

/* Opening a file under another process's write lease: busy, at once. */
static void
leased(int rootfd, const char *root, const char *how)
{
	char path[600];
	struct err e = {0};
	struct stat st;
	int64_t t0, took;
	pid_t pid;
	int fd;

	snprintf(path, sizeof(path), "%s/job/leased.xml", root);
	if ((pid = hold_write_lease(path, 3000)) < 0) {
		tap_diag("%s: no write lease could be taken here: not checked",
		    how);
		return;
	}
	t0 = time_mono_ms();
	fd = tree_open_file(rootfd, "job/leased.xml", &st, &e);
	took = time_mono_ms() - t0;
	tap_ok(fd < 0 && took < 1000, "%s: a file under another process's "
	    "write lease is not waited for (%lld ms)", how, (long long)took);
	tap_int(e.cls, ERR_TRANSIENT, "%s: it is busy, to be tried again "
	    "later (%s)", how, e.msg);
	tap_ok(strstr(e.msg, "lease") != NULL, "%s: the message says why",
	    how);
	if (fd >= 0)
		close(fd);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

int
main(void)
{
	char base[] = "tests/tmp/t-tree.XXXXXX", root[300], p[600], q[600];
	char *globs[] = { "*.bak", "draft-*", NULL };
	struct stat st;
	struct err e = {0};
	int rootfd, fd;

	mkdir("tests/tmp", 0700);
	if (mkdtemp(base) == NULL)
		return tap_ok(0, "temporary directory"), tap_done();
	snprintf(root, sizeof(root), "%s/uploads", base);
	mkdir(root, 0700);
	snprintf(p, sizeof(p), "%s/job", root);
	mkdir(p, 0700);
	snprintf(p, sizeof(p), "%s/job/sub", root);
	mkdir(p, 0700);
	touch(root, "job/a.xml", "<a/>");
	touch(root, "job/sub/b.md", "# b");
	touch(root, "job/leased.xml", "<l/>");
	touch(base, "secret.txt", "outside");
	snprintf(p, sizeof(p), "%s/secret.txt", base);
	snprintf(q, sizeof(q), "%s/job/link-to-secret", root);
	tap_int(symlink("../../secret.txt", q), 0, "plant a symlink to a file "
	    "outside the root");
	snprintf(q, sizeof(q), "%s/job/dirlink", root);
	tap_int(symlink("..", q), 0, "plant a symlink to a directory");
	snprintf(q, sizeof(q), "%s/job/fifo", root);
	tap_int(mkfifo(q, 0600), 0, "plant a FIFO");

	rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	for (int pass = 0; pass < 2; pass++) {
		const char *how = pass == 0 ? "openat2" : "O_NOFOLLOW fallback";

		tree_use_openat2(pass == 0);
		fd = tree_open_file(rootfd, "job/a.xml", &st, &e);
		tap_ok(fd >= 0 && st.st_size == 4, "%s: a regular file opens", how);
		if (fd >= 0)
			close(fd);
		fd = tree_open_file(rootfd, "job/sub/b.md", &st, &e);
		tap_ok(fd >= 0, "%s: a nested file opens", how);
		if (fd >= 0)
			close(fd);
		tap_int(tree_open_file(rootfd, "job/link-to-secret", &st, &e), -1,
		    "%s: a symlink is not followed", how);
		tap_int(e.cls, ERR_PERMANENT, "%s: refused for good, not retried",
		    how);
		tap_int(tree_open_file(rootfd, "job/dirlink/job/a.xml", &st, &e),
		    -1, "%s: a symlinked directory in the path is not followed",
		    how);
		tap_int(tree_open_file(rootfd, "../secret.txt", &st, &e), -1,
		    "%s: '..' cannot leave the root", how);
		tap_int(tree_open_file(rootfd, "job/../../secret.txt", &st, &e), -1,
		    "%s: nor '..' in the middle", how);
		tap_int(tree_open_file(rootfd, "/etc/passwd", &st, &e), -1,
		    "%s: absolute paths are refused", how);
		tap_int(tree_open_file(rootfd, "job/fifo", &st, &e), -1,
		    "%s: a FIFO is refused without blocking", how);
		tap_ok(strstr(e.msg, "not a regular file") != NULL, "%s: as not "
		    "a regular file", how);
		tap_int(tree_open_file(rootfd, "job/missing", &st, &e), -1,
		    "%s: a missing file fails", how);
		tap_int(e.cls, ERR_GONE, "%s: as gone", how);
		tap_int(tree_stat(rootfd, "job/link-to-secret", &st, &e), 0,
		    "%s: tree_stat sees the link itself", how);
		tap_ok(S_ISLNK(st.st_mode), "%s: as a link", how);
		leased(rootfd, root, how);
	}
	tree_use_openat2(1);

	tap_int(tree_walk(rootfd, "", NULL, count_visit, NULL, &e), 0,
	    "walk the tree");
	tap_ok(files == 3 && dirs == 2 && links == 2 && others == 1,
	    "3 files, 2 directories, 2 links, 1 FIFO (got %d %d %d %d)",
	    files, dirs, links, others);

	tap_ok(watch_ignored(NULL, ".hidden"), "dot files are ignored");
	tap_ok(watch_ignored(NULL, "upload.tmp"), "*.tmp");
	tap_ok(watch_ignored(NULL, "big.part"), "*.part");
	tap_ok(watch_ignored(NULL, ".x.swp") && watch_ignored(NULL, "x.swp"),
	    "*.swp");
	tap_ok(watch_ignored(NULL, "notes.md~"), "*~");
	tap_ok(watch_ignored(NULL, "~$report.docx"), "~$* (Office lock files)");
	tap_ok(!watch_ignored(NULL, "integration.xml"), "normal names are not");
	tap_ok(!watch_ignored(NULL, "tmp.xml"), "tmp as a prefix is fine");
	tap_ok(watch_ignored(globs, "x.bak") && watch_ignored(globs,
	    "draft-1.xml"), "OUTBOXD_IGNORE globs apply");
	tap_ok(!watch_ignored(globs, "final.xml"), "and only where they match");
	close(rootfd);
	snprintf(p, sizeof(p), "rm -rf '%s'", base);
	if (system(p) != 0)
		tap_diag("could not remove %s", base);
	return tap_done();
}
