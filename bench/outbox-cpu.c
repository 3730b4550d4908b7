/*
 * The outbox alone, in CPU per file: what `outboxd --once` asks of it for
 * each file of a backlog, without the network or the file reads, whose
 * noise on a shared machine hides a change of 20 us a file in W1.
 *
 *   make bench/outbox-cpu && bench/outbox-cpu [N [BATCH]]
 *
 * Journals N files (default 20,000) of one job in transactions of 100, as
 * the watcher's rescan does, then turns as the sync thread's: claim BATCH
 * (default 8, half the default concurrency) S3 legs a turn and record
 * their outcomes (stored) in the next turn's transaction. Prints the CPU (user +
 * system, getrusage) per file of each phase. The outbox is made new in a
 * temporary directory and removed. Not a test: compare two builds on the
 * same machine, alternating, as bench/README.md says.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "store/outbox.h"

#define JOB "6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f"

static double
cpu_seconds(void)
{
	struct rusage r;

	getrusage(RUSAGE_SELF, &r);
	return (double)r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 +
	    (double)r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}

static int
fail(const char *what, const struct err *e)
{
	fprintf(stderr, "outbox-cpu: %s: %s\n", what, e->msg);
	return 1;
}

int
main(int argc, char **argv)
{
	struct outbox_outcome stored = { .event = EV_STORED,
	    .etag = "\"0123456789abcdef0123456789abcdef\"",
	    .sha256 = "0123456789abcdef0123456789abcdef"
	        "0123456789abcdef0123456789abcdef" };
	char dir[] = "/tmp/outbox-cpu.XXXXXX", db[64], path[128], cmd[96];
	int n = argc > 1 ? atoi(argv[1]) : 20000;
	int batch = argc > 2 ? atoi(argv[2]) : 8;
	struct outbox_entry *v = NULL;
	size_t got = 0, done = 0, k;
	struct err e = {0};
	struct outbox *o;
	double t0, t1, t2;
	int i, rc = 0;

	if (n <= 0 || batch <= 0) {
		fprintf(stderr, "usage: outbox-cpu [N [BATCH]]\n");
		return 64;
	}
	if (mkdtemp(dir) == NULL) {
		perror("outbox-cpu: mkdtemp");
		return 73;
	}
	snprintf(db, sizeof(db), "%s/outbox.db", dir);
	if ((o = outbox_open(db, 0, &e)) == NULL)
		return fail("open", &e);
	t0 = cpu_seconds();
	for (i = 0; i < n && rc == 0; i++) {
		struct outbox_file f = { path, 4096, 1000 + i, 42 + i, 0 };

		snprintf(path, sizeof(path), JOB "/f%07d.xml", i);
		if ((i % 100 == 0 && outbox_begin(o, &e) < 0) ||
		    outbox_journal(o, &f, NULL, &e) < 0 ||
		    ((i % 100 == 99 || i == n - 1) && outbox_commit(o, &e) < 0))
			rc = fail("journal", &e);
	}
	t1 = cpu_seconds();
	/* A turn: one transaction records the outcomes of the legs the
	 * last turn claimed and claims the next (agent/engine/sync.c). */
	for (;;) {
		struct outbox_entry *next = NULL;

		if (outbox_begin(o, &e) < 0) {
			rc = fail("begin", &e);
			break;
		}
		for (k = 0; k < got && rc == 0; k++)
			if (outbox_apply(o, OUTBOX_S3, v[k].id, &stored, &e) < 0)
				rc = fail("outcome", &e);
		done += got;
		outbox_entries_free(v, got);
		v = NULL;
		got = 0;
		if (rc == 0 && outbox_claim(o, OUTBOX_S3, batch, 1, NULL, NULL,
		    &next, &got, &e) < 0)
			rc = fail("claim", &e);
		if (rc == 0 && outbox_commit(o, &e) < 0)
			rc = fail("commit", &e);
		v = next;
		if (rc != 0 || got == 0)
			break;
	}
	outbox_entries_free(v, got);
	t2 = cpu_seconds();
	outbox_close(o);
	if (rc == 0 && done != (size_t)n) {
		fprintf(stderr, "outbox-cpu: %zu of %d stored\n", done, n);
		rc = 1;
	}
	if (rc == 0)
		printf("%d files, claims of %d: journal %.1f us a file, claim "
		    "and outcome %.1f, all %.1f\n", n, batch,
		    (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6,
		    (t2 - t0) / n * 1e6);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "outbox-cpu: could not remove %s\n", dir);
	return rc;
}
