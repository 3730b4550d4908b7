/*
 * t-dotenv.c - proves the .env parser reads what the app's .env files hold
 * (comments, quotes, export, ${VAR}, multi-line values, CRLF), and that
 * a malformed line is an error naming its line rather than a silent skip.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/dotenv.h"
#include "tap.h"

struct kv {
	char key[64];
	char value[256];
};

static struct kv got[32];
static int ngot;

static int
collect(void *arg, const char *key, const char *value)
{
	(void)arg;
	if (ngot < 32) {
		snprintf(got[ngot].key, sizeof(got[ngot].key), "%s", key);
		snprintf(got[ngot].value, sizeof(got[ngot].value), "%s", value);
		ngot++;
	}
	return 0;
}

/* Lookup sees earlier assignments, then a fixed "environment". */
static const char *
lookup(void *arg, const char *name)
{
	int i;

	(void)arg;
	for (i = ngot - 1; i >= 0; i--)
		if (strcmp(got[i].key, name) == 0)
			return got[i].value;
	if (strcmp(name, "HOME") == 0)
		return "/home/app";
	return NULL;
}

static const char *
value_of(const char *key)
{
	int i;

	for (i = 0; i < ngot; i++)
		if (strcmp(got[i].key, key) == 0)
			return got[i].value;
	return NULL;
}

static int
parse(const char *text, struct err *e)
{
	ngot = 0;
	return dotenv_parse(text, strlen(text), collect, lookup, NULL, e);
}

int
main(void)
{
	struct err e = {0};
	const char *env =
	    "# the app's settings\n"
	    "S3_BUCKET=is-migration-uploads\n"
	    "export AWS_REGION=eu-central-1\n"
	    "AWS_SECRET_ACCESS_KEY='abc#def \"x\"'\n"
	    "DATABASE_URL=\"postgresql://u:p%40ss@db.example.com:6543/postgres?sslmode=require\"\n"
	    "EMPTY=\n"
	    "SPACED = value with spaces   # a comment\n"
	    "HASH=a#b\n"
	    "ESCAPES=\"line1\\nline2\\t\\\"q\\\"\"\n"
	    "MULTI=\"first\nsecond\"\n"
	    "REF=${S3_BUCKET}/sub\n"
	    "HOMEREF=\"${HOME}/x\"\n"
	    "LITERAL='${HOME}'\n"
	    "WIN=crlf\r\n"
	    "\n"
	    "   # indented comment\n"
	    "LAST=end";

	tap_int(parse(env, &e), 0, "a typical .env parses");
	tap_int(ngot, 14, "every assignment is reported");
	tap_str(value_of("S3_BUCKET"), "is-migration-uploads", "plain value");
	tap_str(value_of("AWS_REGION"), "eu-central-1", "export prefix");
	tap_str(value_of("AWS_SECRET_ACCESS_KEY"), "abc#def \"x\"",
	    "single quotes are literal, # inside kept");
	tap_str(value_of("DATABASE_URL"), "postgresql://u:p%40ss@db.example."
	    "com:6543/postgres?sslmode=require", "double-quoted URL");
	tap_str(value_of("EMPTY"), "", "empty value");
	tap_str(value_of("SPACED"), "value with spaces",
	    "blanks around = and a trailing comment");
	tap_str(value_of("HASH"), "a#b", "# without a blank before is a value");
	tap_str(value_of("ESCAPES"), "line1\nline2\t\"q\"",
	    "escapes in double quotes");
	tap_str(value_of("MULTI"), "first\nsecond",
	    "a double-quoted value spans lines");
	tap_str(value_of("REF"), "is-migration-uploads/sub",
	    "${VAR} expands an earlier line");
	tap_str(value_of("HOMEREF"), "/home/app/x",
	    "${VAR} expands the environment inside double quotes");
	tap_str(value_of("LITERAL"), "${HOME}", "no expansion in single quotes");
	tap_str(value_of("WIN"), "crlf", "a CRLF line ending is not a value");
	tap_str(value_of("LAST"), "end", "last line without a newline");

	tap_int(parse("A=1\nthis is not an assignment\n", &e), -1,
	    "a line without = is an error");
	tap_str(e.msg, "line 2: expected '=' after this", "the error names "
	    "the line");
	tap_int(parse("A='open\nB=2\n", &e), -1, "an unclosed quote is an error");
	tap_str(e.msg, "line 1: single quote is never closed",
	    "the error names where the quote opened");
	tap_int(parse("A=\"x\" trailing\n", &e), -1,
	    "text after a closing quote is an error");
	tap_int(parse("1BAD=x\n", &e), -1, "a key cannot start with a digit");
	tap_int(parse("\xef\xbb\xbf" "A=1\n", &e), 0, "a UTF-8 BOM is skipped");
	tap_str(value_of("A"), "1", "the key after a BOM is read");
	tap_int(parse("PW=#not-a-comment\nB= #also-a-value\nC=x #note\n", &e),
	    0, "values starting with '#'");
	tap_str(value_of("PW"), "#not-a-comment", "a value may start with '#' "
	    "(a password)");
	tap_str(value_of("B"), "#also-a-value", "even after blanks");
	tap_str(value_of("C"), "x", "'#' after a blank that follows a value "
	    "starts a comment");
	tap_int(parse("U=${UNSET:-fallback}/x\nH=${HOME:-no}\nE=\"${EMPTY:-d}\"\n",
	    &e), 0, "${NAME:-default}");
	tap_str(value_of("U"), "fallback/x", "the default when unset");
	tap_str(value_of("H"), "/home/app", "the value when set");
	tap_str(value_of("E"), "d", "inside double quotes too");
	tap_int(parse("", &e), 0, "an empty file is fine");
	tap_int(ngot, 0, "and assigns nothing");
	return tap_done();
}
