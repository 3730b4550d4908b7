/*
 * status.c - outboxctl's read-only verbs: status (counts per state, oldest
 * pending, last error; --json), list (entries, newest first) and show (one
 * entry, every field). They open the outbox read-only.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "base/util.h"
#include "config/cfg.h"
#include "store/outbox.h"
#include "agent/ctl/ctl.h"

/* Which legs are live: configured here, or as the daemon last ran. */
static void
live_legs(struct outbox *ob, const struct cfg *c, int *s3, int *db)
{
	char *v;

	*s3 = c->bucket != NULL;
	*db = c->db_on;
	if ((v = outbox_meta_get(ob, "s3_leg")) != NULL) {
		*s3 |= strcmp(v, "on") == 0;
		free(v);
	}
	if ((v = outbox_meta_get(ob, "db_leg")) != NULL) {
		*db |= strcmp(v, "on") == 0;
		free(v);
	}
}

static void
print_age(int64_t ms)
{
	int64_t s = ms / 1000;

	if (s < 120)
		printf("%llds", (long long)s);
	else if (s < 7200)
		printf("%lldm %llds", (long long)(s / 60), (long long)(s % 60));
	else if (s < 172800)
		printf("%lldh %lldm", (long long)(s / 3600),
		    (long long)(s / 60 % 60));
	else
		printf("%lldd %lldh", (long long)(s / 86400),
		    (long long)(s / 3600 % 24));
}

static cJSON *
leg_json(const int64_t *v, int on)
{
	cJSON *o = cJSON_CreateObject();
	int i;

	cJSON_AddBoolToObject(o, "on", on);
	for (i = 0; i < OUTBOX_NSTATES; i++)
		cJSON_AddNumberToObject(o, outbox_state_name(i), (double)v[i]);
	return o;
}

/* The scrub's state (scrub.c keeps it in the meta table). */
static cJSON *
scrub_json(const struct outbox_scrub *sc)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddNumberToObject(o, "pass", (double)sc->pass);
	cJSON_AddBoolToObject(o, "running", sc->running);
	cJSON_AddNumberToObject(o, "cursor", (double)sc->cursor);
	cJSON_AddNumberToObject(o, "end_id", (double)sc->end_id);
	cJSON_AddNumberToObject(o, "checked", (double)sc->checked);
	cJSON_AddNumberToObject(o, "found", (double)sc->found);
	cJSON_AddNumberToObject(o, "repaired", (double)sc->repaired);
	cJSON_AddNumberToObject(o, "total_checked", (double)sc->total_checked);
	cJSON_AddNumberToObject(o, "total_found", (double)sc->total_found);
	cJSON_AddNumberToObject(o, "total_repaired", (double)sc->total_repaired);
	if (sc->started_at[0])
		cJSON_AddStringToObject(o, "started_at", sc->started_at);
	else
		cJSON_AddNullToObject(o, "started_at");
	if (sc->finished_at[0])
		cJSON_AddStringToObject(o, "finished_at", sc->finished_at);
	else
		cJSON_AddNullToObject(o, "finished_at");
	return o;
}

static void
scrub_print(const struct outbox_scrub *sc)
{
	if (sc->pass == 0) {
		printf("scrub:    no pass yet (OUTBOXD_SCRUB_INTERVAL)\n");
		return;
	}
	if (sc->running)
		printf("scrub:    pass %lld since %s: %lld checked (up to entry "
		    "%lld of %lld), %lld difference%s, %lld repair%s journaled\n",
		    (long long)sc->pass, sc->started_at, (long long)sc->checked,
		    (long long)sc->cursor, (long long)sc->end_id,
		    (long long)sc->found, sc->found == 1 ? "" : "s",
		    (long long)sc->repaired, sc->repaired == 1 ? "" : "s");
	else
		printf("scrub:    pass %lld finished %s: %lld checked, %lld "
		    "difference%s, %lld repair%s journaled\n", (long long)sc->pass,
		    sc->finished_at, (long long)sc->checked, (long long)sc->found,
		    sc->found == 1 ? "" : "s", (long long)sc->repaired,
		    sc->repaired == 1 ? "" : "s");
}

int
ctl_cmd_status(struct cfg *c, int argc, char **argv)
{
	int json = argc > 1 && strcmp(argv[1], "--json") == 0;
	struct outbox_counts n;
	struct outbox_scrub sc;
	struct outbox *ob;
	struct err e = {0};
	int s3, db, i;
	long pid;
	char *paused[2];

	if (argc > 1 && !json) {
		ctl_usage(stderr);
		return EX_USAGE;
	}
	if ((ob = ctl_open_outbox(c, 1)) == NULL)
		return EX_NOINPUT;
	live_legs(ob, c, &s3, &db);
	if (outbox_counts(ob, s3, db, &n, &e) < 0) {
		fprintf(stderr, "outboxctl: %s\n", ctl_esc(e.msg));
		outbox_close(ob);
		return EX_IOERR;
	}
	pid = outbox_lock_owner(c->state_db);
	if (outbox_scrub_get(ob, &sc, &e) < 0)
		memset(&sc, 0, sizeof(sc));	/* status shows the rest */
	/* A pause is the running daemon's: a stopped one's is stale. */
	for (i = 0; i < 2; i++) {
		paused[i] = pid > 0 ? outbox_meta_get(ob, i == 0 ? "s3_paused" :
		    "db_paused") : NULL;
		if (paused[i] != NULL && paused[i][0] == '\0') {
			free(paused[i]);
			paused[i] = NULL;
		}
	}
	if (json) {
		cJSON *o = cJSON_CreateObject();
		char *text;

		cJSON_AddNumberToObject(o, "entries", (double)n.entries);
		cJSON_AddNumberToObject(o, "pending", (double)n.pending);
		cJSON_AddNumberToObject(o, "failed", (double)n.failed);
		cJSON_AddNumberToObject(o, "done", (double)n.done);
		cJSON_AddItemToObject(o, "s3", leg_json(n.s3, s3));
		cJSON_AddItemToObject(o, "db", leg_json(n.db, db));
		if (n.oldest_pending_ms >= 0)
			cJSON_AddNumberToObject(o, "oldest_pending_age_s",
			    (double)((time_now_ms() - n.oldest_pending_ms) / 1000));
		else
			cJSON_AddNullToObject(o, "oldest_pending_age_s");
		if (n.last_error[0]) {
			/* Valid UTF-8 JSON whatever the name: escaped. */
			cJSON_AddStringToObject(o, "last_error",
			    ctl_esc(n.last_error));
			cJSON_AddStringToObject(o, "last_error_at", n.last_error_at);
		} else {
			cJSON_AddNullToObject(o, "last_error");
		}
		for (i = 0; i < 2; i++) {
			const char *name = i == 0 ? "s3_paused" : "db_paused";

			if (paused[i] != NULL)
				cJSON_AddStringToObject(o, name, paused[i]);
			else
				cJSON_AddNullToObject(o, name);
		}
		cJSON_AddNumberToObject(o, "bytes_uploaded", (double)n.bytes_done);
		cJSON_AddNumberToObject(o, "not_job_dirs", (double)n.not_jobs);
		cJSON_AddNumberToObject(o, "pruned", (double)n.pruned);
		cJSON_AddItemToObject(o, "scrub", scrub_json(&sc));
		if (pid > 0)
			cJSON_AddNumberToObject(o, "outboxd_pid", (double)pid);
		else
			cJSON_AddNullToObject(o, "outboxd_pid");
		text = cJSON_Print(o);
		printf("%s\n", text);
		free(text);
		cJSON_Delete(o);
	} else {
		printf("outbox:   %s (%s", ctl_esc(c->state_db), pid > 0 ? "" :
		    "outboxd not running");
		if (pid > 0)
			printf("outboxd running, pid %ld", pid);
		printf(")\n");
		printf("entries:  %lld: %lld done, %lld pending, %lld failed\n",
		    (long long)n.entries, (long long)n.done, (long long)n.pending,
		    (long long)n.failed);
		for (i = 0; i < 2; i++) {
			const int64_t *v = i == 0 ? n.s3 : n.db;
			int on = i == 0 ? s3 : db;
			int k;

			printf("%-9s %s", i == 0 ? "s3:" : "database:",
			    on ? "" : "off; ");
			for (k = 0; k < OUTBOX_NSTATES; k++)
				printf("%s%lld %s", k ? ", " : "", (long long)v[k],
				    outbox_state_name(k));
			printf("\n");
		}
		if (n.oldest_pending_ms >= 0) {
			printf("oldest pending: journaled ");
			print_age(time_now_ms() - n.oldest_pending_ms);
			printf(" ago\n");
		}
		for (i = 0; i < 2; i++)
			if (paused[i] != NULL)
				printf("%s\n", paused[i]);
		if (n.last_error[0])
			printf("last error: %s (%s)\n", ctl_esc(n.last_error),
			    n.last_error_at);
		if (n.not_jobs > 0)
			printf("not jobs: %lld top-level director%s skipped (the "
			    "name is not a UUID)\n", (long long)n.not_jobs,
			    n.not_jobs == 1 ? "y" : "ies");
		if (n.pruned > 0)
			printf("pruned:   %lld done entr%s older than the "
			    "retention (OUTBOXD_RETENTION)\n", (long long)n.pruned,
			    n.pruned == 1 ? "y" : "ies");
		scrub_print(&sc);
	}
	free(paused[0]);
	free(paused[1]);
	outbox_close(ob);
	return 0;
}

/* Says that retention deleted entries, so a listing is not taken for
 * the whole history. */
static void
print_pruned(struct outbox *ob)
{
	struct outbox_counts n;
	struct err e = {0};

	if (outbox_counts(ob, 1, 1, &n, &e) == 0 && n.pruned > 0)
		printf("(%lld done entr%s older than the retention "
		    "(OUTBOXD_RETENTION) %s pruned: not listed)\n",
		    (long long)n.pruned, n.pruned == 1 ? "y" : "ies",
		    n.pruned == 1 ? "was" : "were");
}

int
ctl_cmd_list(struct cfg *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "state", required_argument, NULL, 's' },
		{ "job", required_argument, NULL, 'j' },
		{ "limit", required_argument, NULL, 'l' },
		{ NULL, 0, NULL, 0 },
	};
	const char *state = NULL, *job = NULL;
	long limit = 100;
	struct outbox *ob;
	sqlite3_stmt *s;
	int ch, rows = 0;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 's': state = optarg; break;
		case 'j': job = optarg; break;
		case 'l': limit = strtol(optarg, NULL, 10); break;
		default: ctl_usage(stderr); return EX_USAGE;
		}
	}
	if (state != NULL && outbox_state_parse(state) < 0) {
		fprintf(stderr, "outboxctl: --state %s: use pending, in_flight, "
		    "done, failed or skipped\n", state);
		return EX_USAGE;
	}
	if ((ob = ctl_open_outbox(c, 1)) == NULL)
		return EX_NOINPUT;
	if (sqlite3_prepare_v2(outbox_db(ob),
	    "SELECT id, s3_state, db_state, s3_attempts + db_attempts, path, "
	    "  coalesce(CASE WHEN s3_state NOT IN ('done') THEN s3_error END, "
	    "           CASE WHEN db_state NOT IN ('done') THEN db_error END, '') "
	    "FROM entries WHERE (?1 IS NULL OR s3_state = ?1 OR db_state = ?1) "
	    "  AND (?2 IS NULL OR job_id = ?2) ORDER BY id DESC LIMIT ?3",
	    -1, &s, NULL) != SQLITE_OK) {
		fprintf(stderr, "outboxctl: %s\n",
		    ctl_esc(sqlite3_errmsg(outbox_db(ob))));
		outbox_close(ob);
		return EX_IOERR;
	}
	sqlite3_bind_text(s, 1, state, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, job, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, limit);
	printf("%-7s %-9s %-9s %-3s %s\n", "ID", "S3", "DATABASE", "TRY", "PATH");
	while (sqlite3_step(s) == SQLITE_ROW) {
		const char *err = (const char *)sqlite3_column_text(s, 5);

		printf("%-7lld %-9s %-9s %-3d %s%s%s\n",
		    (long long)sqlite3_column_int64(s, 0),
		    sqlite3_column_text(s, 1), sqlite3_column_text(s, 2),
		    sqlite3_column_int(s, 3),
		    ctl_esc((const char *)sqlite3_column_text(s, 4)),
		    err && err[0] ? "\n        " : "", ctl_esc(err));
		rows++;
	}
	sqlite3_finalize(s);
	if (rows == 0)
		printf("(no entries)\n");
	print_pruned(ob);
	outbox_close(ob);
	return 0;
}

int
ctl_cmd_show(struct cfg *c, int argc, char **argv)
{
	struct outbox *ob;
	sqlite3_stmt *s;
	char *end;
	long long id;
	int i, found = 0;

	if (argc != 2 || (id = strtoll(argv[1], &end, 10), *end != '\0')) {
		ctl_usage(stderr);
		return EX_USAGE;
	}
	if ((ob = ctl_open_outbox(c, 1)) == NULL)
		return EX_NOINPUT;
	if (sqlite3_prepare_v2(outbox_db(ob), "SELECT * FROM entries WHERE "
	    "id = ?1", -1, &s, NULL) != SQLITE_OK) {
		outbox_close(ob);
		return EX_IOERR;
	}
	sqlite3_bind_int64(s, 1, id);
	if (sqlite3_step(s) == SQLITE_ROW) {
		found = 1;
		for (i = 0; i < sqlite3_column_count(s); i++) {
			const unsigned char *v = sqlite3_column_text(s, i);

			printf("%-14s %s\n", sqlite3_column_name(s, i),
			    ctl_esc((const char *)v));
		}
	}
	sqlite3_finalize(s);
	if (!found && outbox_was_pruned(ob, id)) {
		printf("entry %lld was pruned: it was done (both legs) and older "
		    "than the retention (OUTBOXD_RETENTION)\n", id);
		found = 1;
	}
	outbox_close(ob);
	if (!found) {
		fprintf(stderr, "outboxctl: no entry %lld\n", id);
		return EX_DATAERR;
	}
	return 0;
}
