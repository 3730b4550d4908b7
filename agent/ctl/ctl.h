/*
 * ctl.h - what outboxctl's files share: the usage text, opening the outbox,
 * and one entry point per verb (called by main.c's dispatch). Each verb
 * takes the loaded configuration and its own argv (argv[0] is the verb) and
 * returns outboxctl's exit code (see main.c). outboxctl is single-threaded.
 */
#ifndef OUTBOXD_CTL_H
#define OUTBOXD_CTL_H

#include <stdio.h>

#include "config/cfg.h"
#include "store/outbox.h"

/* Prints the usage text to f. */
void ctl_usage(FILE *f);

/* s in the escape form of buf_escape (util.h): every name, path and
 * message outboxctl prints passes through it. The text stays valid until
 * 15 more calls; NULL gives "". */
const char *ctl_esc(const char *s);

/* Opens the outbox at c->state_db (when readonly, only if it exists);
 * NULL after saying why on stderr. The caller closes it with outbox_close(). */
struct outbox *ctl_open_outbox(const struct cfg *c, int readonly);

/* status.c: counts per state; a list of entries; one entry. */
int ctl_cmd_status(struct cfg *c, int argc, char **argv);
int ctl_cmd_list(struct cfg *c, int argc, char **argv);
int ctl_cmd_show(struct cfg *c, int argc, char **argv);

/* admin.c: failed legs back to pending; a rescan; the schema; a URL. */
int ctl_cmd_retry(struct cfg *c, int argc, char **argv);
int ctl_cmd_rescan(struct cfg *c);
int ctl_cmd_migrate(struct cfg *c);
int ctl_cmd_presign(struct cfg *c, int argc, char **argv);

/* doctor.c: loads the configuration itself (strict), checks everything. */
int ctl_cmd_doctor(void);

/* help.c: a verb's help on f (-1: no such verb); whether argv (a verb's)
 * asks for it (--help, -h); `outboxctl help [VERB]`. */
int ctl_help(const char *verb, FILE *f);
int ctl_wants_help(int argc, char **argv);
int ctl_cmd_help(int argc, char **argv);

/* verify.c: local files against S3 and the database; 1 on a difference. */
int ctl_cmd_verify(struct cfg *c, int argc, char **argv);

#endif
