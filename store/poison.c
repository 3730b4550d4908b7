/*
 * poison.c - see poison.h. The mark is one fixed-width line,
 * "<entry id> <deaths> <1 inspecting | 0 not>\n", rewritten in place by
 * pwrite at offset 0, so a death at any moment leaves either the old
 * line or the new one (a write of 40 bytes at offset 0 of a regular file
 * is not torn by the death of the writer).
 */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/poison.h"

#define MARK_LEN 40

struct poison {
	int fd;			/* the mark file, open read-write */
	int64_t id;		/* the entry the mark names, 0 none */
	int deaths;		/* deaths counted for it so far */
};

static char *
mark_path(const char *db_path)
{
	return xasprintf("%s.inspect", db_path);
}

/* Reads the mark; 0 with the fields, -1 when there is none. */
static int
mark_read(int fd, int64_t *id, int *deaths, int *active)
{
	char line[MARK_LEN + 1];
	long long i;
	ssize_t n = pread(fd, line, MARK_LEN, 0);

	if (n <= 0)
		return -1;
	line[n] = '\0';
	if (sscanf(line, "%lld %d %d", &i, deaths, active) != 3 || i <= 0)
		return -1;
	*id = (int64_t)i;
	return 0;
}

static void
mark_write(int fd, int64_t id, int deaths, int active)
{
	char line[96];

	snprintf(line, sizeof(line), "%20lld %10d %d      \n", (long long)id,
	    deaths, active);
	/* A failed write only loses the count of one death. */
	(void)!pwrite(fd, line, MARK_LEN, 0);
}

struct poison *
poison_open(const char *db_path)
{
	char *path = mark_path(db_path);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	struct poison *p;
	int active;

	free(path);
	if (fd < 0)
		return NULL;
	p = xcalloc(1, sizeof(*p));
	p->fd = fd;
	if (mark_read(fd, &p->id, &p->deaths, &active) < 0) {
		p->id = 0;
		p->deaths = 0;
	}
	return p;
}

void
poison_close(struct poison *p)
{
	if (p == NULL)
		return;
	close(p->fd);
	free(p);
}

void
poison_begin(struct poison *p, int64_t id)
{
	if (p == NULL)
		return;
	if (id != p->id) {
		p->id = id;
		p->deaths = 0;
	}
	mark_write(p->fd, p->id, p->deaths, 1);
}

void
poison_end(struct poison *p)
{
	if (p == NULL)
		return;
	p->deaths = 0;
	mark_write(p->fd, p->id, 0, 0);
}

int
poison_recover(struct outbox *o, const char *db_path, int limit,
    int64_t *id, int *deaths, struct err *e)
{
	char *path = mark_path(db_path), why[160];
	int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW), active = 0, rc;
	struct outbox_outcome oc = { .event = EV_POISON, .error = why };

	free(path);
	*id = 0;
	*deaths = 0;
	if (fd < 0)
		return 0;	/* no mark: no inspection ever began */
	if (mark_read(fd, id, deaths, &active) < 0 || !active) {
		*id = 0;
		*deaths = 0;
		close(fd);
		return 0;
	}
	(*deaths)++;
	if (*deaths < limit) {
		mark_write(fd, *id, *deaths, 0);
		close(fd);
		return 0;
	}
	snprintf(why, sizeof(why), "set aside: outboxd died %d times while "
	    "reading or inspecting this file (a crash, or a hang ended by "
	    "the watchdog); outboxctl retry takes it back", *deaths);
	rc = outbox_begin(o, e);
	if (rc == 0 && outbox_apply(o, OUTBOX_DB, *id, &oc, e) < 0) {
		outbox_rollback(o);
		rc = -1;
	} else if (rc == 0) {
		rc = outbox_commit(o, e);
	}
	if (rc == 0)
		mark_write(fd, *id, 0, 0);
	close(fd);
	return rc < 0 ? -1 : 1;
}
