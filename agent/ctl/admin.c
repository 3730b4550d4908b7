/*
 * admin.c - outboxctl's verbs that change or hand out something: retry
 * (failed legs back to pending), rescan (asks a running outboxd, or journals
 * what changed itself), migrate (applies the PostgreSQL schema) and presign
 * (a presigned GET URL).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "base/util.h"
#include "config/cfg.h"
#include "store/outbox.h"
#include "watchers/watch.h"
#include "agent/db/pg.h"
#include "agent/s3/s3.h"
#include "agent/ctl/ctl.h"

int
ctl_cmd_retry(struct cfg *c, int argc, char **argv)
{
	struct outbox *ob;
	struct err e = {0};
	long long id = -1;
	char *end;
	int n;
	long pid;

	if (argc != 2) {
		ctl_usage(stderr);
		return EX_USAGE;
	}
	if (strcmp(argv[1], "--failed") != 0) {
		id = strtoll(argv[1], &end, 10);
		if (*end != '\0' || id < 1) {
			ctl_usage(stderr);
			return EX_USAGE;
		}
	}
	if ((ob = ctl_open_outbox(c, 0)) == NULL)
		return EX_NOINPUT;
	n = outbox_retry(ob, id, &e);
	outbox_close(ob);
	if (n < 0) {
		fprintf(stderr, "outboxctl: %s\n", ctl_esc(e.msg));
		return EX_IOERR;
	}
	printf("%d failed leg%s back to pending\n", n, n == 1 ? "" : "s");
	if (n == 0 && id > 0)
		return EX_DATAERR;
	/* Wake a running outboxd so it does not wait for its next turn. */
	if ((pid = outbox_lock_owner(c->state_db)) > 0)
		kill((pid_t)pid, SIGUSR1);
	return 0;
}

int
ctl_cmd_rescan(struct cfg *c)
{
	long pid = outbox_lock_owner(c->state_db);
	struct outbox *ob;
	struct watch *w;
	struct err e = {0};
	int n;

	if (pid > 0) {
		if (kill((pid_t)pid, SIGUSR1) < 0) {
			fprintf(stderr, "outboxctl: cannot signal outboxd (pid "
			    "%ld): %s\n", pid, strerror(errno));
			return EX_NOPERM;
		}
		printf("asked outboxd (pid %ld) to rescan\n", pid);
		return 0;
	}
	/* No daemon: do it here, holding its lock meanwhile. */
	if ((ob = ctl_open_outbox(c, 0)) == NULL)
		return EX_CANTCREAT;
	if (outbox_lock(ob, &e) < 0) {
		fprintf(stderr, "outboxctl: %s\n", ctl_esc(e.msg));
		outbox_close(ob);
		return EX_TEMPFAIL;
	}
	w = watch_create(c, 0, -1, &e);
	n = w ? watch_rescan_now(w, &e) : -1;
	watch_free(w);
	outbox_close(ob);
	if (n < 0) {
		fprintf(stderr, "outboxctl: %s\n", ctl_esc(e.msg));
		return EX_IOERR;
	}
	printf("rescanned: %d new or changed file%s journaled\n", n,
	    n == 1 ? "" : "s");
	return 0;
}

int
ctl_cmd_migrate(struct cfg *c)
{
	struct pg *p;
	struct err e = {0};
	struct buf out = {0};
	int n, missing;

	if (!c->db_on) {
		fprintf(stderr, "outboxctl: configuration: DATABASE_URL is not "
		    "set\n");
		return EX_CONFIG;
	}
	c->db_migrate = 0;	/* migrate here, explicitly, and say what it did */
	p = pg_new(c);
	n = pg_migrate(p, &e);
	if (n < 0) {
		fprintf(stderr, "outboxctl: migrate: %s\n", ctl_esc(e.msg));
		pg_free(p);
		return e.cls == ERR_TRANSIENT ? EX_UNAVAILABLE : EX_SOFTWARE;
	}
	if (pg_migration_status(p, &out, &missing, &e) == 0)
		printf("%s", out.data ? out.data : "");
	printf("schema %s: %d migration%s applied now, up to date\n",
	    c->db_schema, n, n == 1 ? "" : "s");
	buf_free(&out);
	pg_free(p);
	return 0;
}

int
ctl_cmd_presign(struct cfg *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "expires", required_argument, NULL, 'x' },
		{ NULL, 0, NULL, 0 },
	};
	long expires = 3600;
	struct s3 *s;
	struct err e = {0};
	char *url, *end;
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (ch != 'x') {
			ctl_usage(stderr);
			return EX_USAGE;
		}
		expires = strtol(optarg, &end, 10);
		if (*end != '\0' || expires < 1 || expires > 604800) {
			fprintf(stderr, "outboxctl: --expires %s: must be 1 to "
			    "604800 seconds (7 days, SigV4's limit)\n", optarg);
			return EX_USAGE;
		}
	}
	if (optind != argc - 1) {
		ctl_usage(stderr);
		return EX_USAGE;
	}
	if (c->bucket == NULL) {
		fprintf(stderr, "outboxctl: configuration: S3_BUCKET is not set\n");
		return EX_CONFIG;
	}
	s = s3_new(c, &e);
	if (s == NULL) {
		fprintf(stderr, "outboxctl: %s\n", ctl_esc(e.msg));
		return EX_SOFTWARE;
	}
	url = s3_presign(s, argv[optind], expires);
	if (url == NULL) {
		fprintf(stderr, "outboxctl: no S3 credentials to sign with "
		    "(see the lines above)\n");
		s3_free(s);
		return EX_UNAVAILABLE;
	}
	printf("%s\n", url);
	free(url);
	s3_free(s);
	return 0;
}
