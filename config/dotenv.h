/*
 * dotenv.h - reads the app's .env file: KEY=VALUE lines, '#' comments,
 * single quotes (literal), double quotes (\n \t \r \" \\ \$ escapes),
 * values spanning lines inside quotes, an optional "export " prefix, and
 * ${NAME} and ${NAME:-default} references expanded in unquoted and
 * double-quoted values, as python-dotenv does; a later line for the same
 * key wins. A line that is none of these is an error naming the
 * line: a configuration file is never half-read in silence.
 */
#ifndef OUTBOXD_DOTENV_H
#define OUTBOXD_DOTENV_H

#include <stddef.h>

#include "base/util.h"

/* Called for each assignment in order; return non-zero to stop. */
typedef int (*dotenv_assign_fn)(void *arg, const char *key, const char *value);
/* Looks a name up for ${NAME}; may return NULL (expands to ""). */
typedef const char *(*dotenv_lookup_fn)(void *arg, const char *name);

/*
 * Parses text (len bytes, need not be NUL terminated). Returns 0, or -1
 * with e->msg as "line N: problem". The lookup sees earlier assignments
 * only through what assign did with them. Pure: no environment access.
 */
int dotenv_parse(const char *text, size_t len, dotenv_assign_fn assign,
    dotenv_lookup_fn lookup, void *arg, struct err *e);

/*
 * Loads path into the process environment without overriding variables
 * already set (the environment wins, as with docker and systemd). Call
 * before any thread starts. Returns 0, or -1 with e->msg naming the file.
 */
int dotenv_load(const char *path, struct err *e);

#endif
