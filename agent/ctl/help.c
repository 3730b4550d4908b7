/*
 * help.c - `outboxctl help VERB` and `outboxctl VERB --help`: one table of
 * verbs with their synopsis and what they do, the exit codes they use.
 * The man page outboxctl(8) says the same at length; the bash completion
 * (packaging/bash-completion/outboxctl) completes these verbs, and
 * it-docs checks the three agree.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <sysexits.h>

#include "agent/ctl/ctl.h"

static const struct verb_help {
	const char *name;
	const char *synopsis;
	const char *text;
} verbs[] = {
	{ "status", "status [--json]",
	  "Counts of the outbox's entries per leg and state, the oldest entry\n"
	  "still pending, and the last error. --json prints one JSON object\n"
	  "(integers for pending, failed, done). Reads only the outbox.\n" },
	{ "list", "list [--state S] [--job ID] [--limit N]",
	  "Entries, newest first, with the error of a leg not done.\n"
	  "  --state S   pending, in_flight, done, failed or skipped (either leg)\n"
	  "  --job ID    one job's entries\n"
	  "  --limit N   at most N rows (default 100)\n" },
	{ "show", "show ID",
	  "Every field of entry ID. Exit 65 when there is no such entry.\n" },
	{ "retry", "retry ID | retry --failed",
	  "Puts the failed legs of entry ID (or of every entry, --failed) back\n"
	  "to pending, due now, and wakes a running outboxd. Exit 65 when\n"
	  "entry ID had no failed leg.\n" },
	{ "rescan", "rescan",
	  "Journals what changed on disk: asks a running outboxd (SIGUSR1), or\n"
	  "walks the uploads tree itself, holding the outbox's lock.\n" },
	{ "migrate", "migrate",
	  "Applies the PostgreSQL schema's missing migrations (DATABASE_URL)\n"
	  "and prints which are applied. Exit 69 when the database is\n"
	  "unreachable, 78 when DATABASE_URL is not set.\n" },
	{ "presign", "presign KEY [--expires S]",
	  "Prints a presigned GET URL for object KEY, valid S seconds (default\n"
	  "3600, at most 604800). Nothing is sent to S3.\n" },
	{ "verify", "verify [--repair] [--job ID]",
	  "Compares every local file with its S3 object (size, SHA-256, ETag)\n"
	  "and its documents row; prints each difference and exits 1 if there\n"
	  "is any. --repair journals a repair entry for each file a store lost\n"
	  "or altered (it goes through the normal legs); --job limits it to one\n"
	  "job.\n" },
	{ "doctor", "doctor",
	  "Checks the configuration, the outbox, S3 (writes and removes a probe\n"
	  "object), the database and the system's limits; one line per check.\n"
	  "Exit 0 when all pass, 78 for configuration problems, 1 otherwise.\n" },
	{ "help", "help [VERB]",
	  "This text for VERB, or the list of verbs.\n" },
};

int
ctl_help(const char *verb, FILE *f)
{
	size_t i;

	for (i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (strcmp(verbs[i].name, verb) != 0)
			continue;
		fprintf(f, "usage: outboxctl [--env-file PATH] %s\n\n%s\n"
		    "Exit codes: 0 ok, 64 usage, 78 configuration; see "
		    "outboxctl(8).\n", verbs[i].synopsis, verbs[i].text);
		return 0;
	}
	return -1;
}

int
ctl_wants_help(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return 1;
	return 0;
}

int
ctl_cmd_help(int argc, char **argv)
{
	if (argc == 1) {
		ctl_usage(stdout);
		return 0;
	}
	if (argc == 2 && ctl_wants_help(argc, argv))
		return ctl_help("help", stdout) == 0 ? 0 : EX_SOFTWARE;
	if (argc == 2 && ctl_help(argv[1], stdout) == 0)
		return 0;
	fprintf(stderr, "outboxctl: help: %s: no such command\n",
	    argc == 2 ? argv[1] : "one command at a time");
	ctl_usage(stderr);
	return EX_USAGE;
}
