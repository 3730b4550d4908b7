/*
 * main.c - outboxctl, the admin tool: reads and nudges the outbox, applies
 * the database schema, and presigns URLs. It reads the same configuration
 * as outboxd (environment, --env-file), and needs only what a verb uses:
 * `status` needs just the outbox, `migrate` just the database. This file
 * parses the arguments and dispatches to the verbs (status.c, admin.c,
 * doctor.c, verify.c); the helpers they share are declared in ctl.h.
 *
 * Exit codes: 0 ok, 1 the answer is "no" (verify found differences), 64
 * usage, 65 no such entry, 69 a store is unreachable, 78 configuration.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include <curl/curl.h>
#include <libxml/parser.h>

#include "base/log.h"
#include "config/cfg.h"
#include "config/dotenv.h"
#include "store/outbox.h"
#include "agent/ctl/ctl.h"

void
ctl_usage(FILE *f)
{
	fprintf(f,
	    "usage: outboxctl [--env-file PATH] COMMAND [ARGS]\n"
	    "\n"
	    "  status [--json]              counts per state, oldest pending, last error\n"
	    "  list [--state S] [--job ID] [--limit N]\n"
	    "                               entries, newest first (S: pending, in_flight,\n"
	    "                               done, failed, skipped)\n"
	    "  show ID                      one entry, every field\n"
	    "  retry ID | retry --failed    put failed legs back to pending\n"
	    "  rescan                       journal what changed on disk (asks a running\n"
	    "                               outboxd, or does it itself)\n"
	    "  migrate                      apply the PostgreSQL schema\n"
	    "  presign KEY [--expires S]    print a presigned GET URL (default 3600 s)\n"
	    "  verify [--repair] [--job ID] compare local files with S3 and the\n"
	    "                               database; exit 1 on any difference;\n"
	    "                               --repair journals a repair for each\n"
	    "                               file a store lost or altered\n"
	    "  doctor                       check configuration, stores, limits; one\n"
	    "                               line per check, exit 0 when all pass\n"
	    "  help [VERB]                  what VERB does (also: VERB --help)\n");
}

/* Loads the configuration; with strict=0 path problems are not fatal. */
static int
config(struct cfg *c, int strict)
{
	struct cfg_problems p = {0};
	size_t i, n;

	n = cfg_load(c, NULL, NULL, strict, &p);
	for (i = 0; i < n; i++)
		fprintf(stderr, "outboxctl: configuration: %s\n",
		    ctl_esc(p.lines[i]));
	cfg_problems_free(&p);
	if (n > 0)
		cfg_free(c);
	return n == 0 ? 0 : -1;
}

const char *
ctl_esc(const char *s)
{
	static struct buf ring[16];
	static unsigned next;
	struct buf *b = &ring[next++ % 16];

	buf_reset(b);
	buf_puts(b, "");
	buf_escape(b, s ? s : "");
	return b->data;
}

struct outbox *
ctl_open_outbox(const struct cfg *c, int readonly)
{
	struct err e = {0};
	struct outbox *ob;

	if (readonly && access(c->state_db, F_OK) < 0) {
		fprintf(stderr, "outboxctl: no outbox at %s (OUTBOXD_STATE_DB): "
		    "has outboxd run here?\n", c->state_db);
		return NULL;
	}
	ob = outbox_open(c->state_db, readonly, &e);
	if (ob == NULL)
		fprintf(stderr, "outboxctl: %s\n", ctl_esc(e.msg));
	return ob;
}


int
main(int argc, char **argv)
{
	const char *env_file = NULL;
	struct cfg c;
	struct err e = {0};
	const char *verb;
	int rc, argi = 1;

	while (argi < argc && argv[argi][0] == '-') {
		if (strcmp(argv[argi], "--env-file") == 0 && argi + 1 < argc) {
			env_file = argv[argi + 1];
			argi += 2;
		} else if (strncmp(argv[argi], "--env-file=", 11) == 0) {
			env_file = argv[argi] + 11;
			argi++;
		} else if (strcmp(argv[argi], "--help") == 0 ||
		    strcmp(argv[argi], "-h") == 0) {
			ctl_usage(stdout);
			return 0;
		} else if (strcmp(argv[argi], "--version") == 0) {
			printf("outboxctl %s\n", PACKAGE_VERSION);
			return 0;
		} else {
			ctl_usage(stderr);
			return EX_USAGE;
		}
	}
	if (argi >= argc) {
		ctl_usage(stderr);
		return EX_USAGE;
	}
	verb = argv[argi];
	/* Help needs no configuration: answered before it is read. */
	if (strcmp(verb, "help") == 0)
		return ctl_cmd_help(argc - argi, argv + argi);
	if (ctl_wants_help(argc - argi, argv + argi)) {
		if (ctl_help(verb, stdout) == 0)
			return 0;
		fprintf(stderr, "outboxctl: unknown command: %s\n", verb);
		ctl_usage(stderr);
		return EX_USAGE;
	}
	if (env_file != NULL && dotenv_load(env_file, &e) < 0) {
		fprintf(stderr, "outboxctl: configuration: --env-file %s\n",
		    ctl_esc(e.msg));
		return EX_CONFIG;
	}
	log_init("outboxctl", LOG_FORMAT_TEXT, LOG_INFO);
	if (strcmp(verb, "doctor") == 0 && argc - argi == 1) {
		xmlInitParser();
		curl_global_init(CURL_GLOBAL_DEFAULT);
		rc = ctl_cmd_doctor();
		curl_global_cleanup();
		return rc;
	}
	/* Only rescan and verify read the uploads tree; others need not. */
	if (config(&c, strcmp(verb, "rescan") == 0 ||
	    strcmp(verb, "verify") == 0) < 0)
		return EX_CONFIG;
	xmlInitParser();
	curl_global_init(CURL_GLOBAL_DEFAULT);
	argc -= argi;
	argv += argi;
	if (strcmp(verb, "status") == 0)
		rc = ctl_cmd_status(&c, argc, argv);
	else if (strcmp(verb, "list") == 0)
		rc = ctl_cmd_list(&c, argc, argv);
	else if (strcmp(verb, "show") == 0)
		rc = ctl_cmd_show(&c, argc, argv);
	else if (strcmp(verb, "retry") == 0)
		rc = ctl_cmd_retry(&c, argc, argv);
	else if (strcmp(verb, "rescan") == 0 && argc == 1)
		rc = ctl_cmd_rescan(&c);
	else if (strcmp(verb, "migrate") == 0 && argc == 1)
		rc = ctl_cmd_migrate(&c);
	else if (strcmp(verb, "presign") == 0)
		rc = ctl_cmd_presign(&c, argc, argv);
	else if (strcmp(verb, "verify") == 0)
		rc = ctl_cmd_verify(&c, argc, argv);
	else {
		fprintf(stderr, "outboxctl: unknown command: %s\n", verb);
		ctl_usage(stderr);
		rc = EX_USAGE;
	}
	cfg_free(&c);
	curl_global_cleanup();
	return rc;
}
