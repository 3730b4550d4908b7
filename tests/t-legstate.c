/*
 * t-legstate.c - proves the leg state table is the one the header shows
 * people: every (state, event, newest/older) combination is looked up,
 * and the result must be exactly the row legstate.h documents for it
 * (or no change where it lists none). Also the invariants the engine
 * relies on: done and skipped are final, an older version never goes
 * back to pending or failed, and every way out of in_flight is defined.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/legstate.h"
#include "tap.h"

struct doc_row {
	int from, event, entry, to;
};

static int
event_parse(const char *s)
{
	int i;

	for (i = 0; i < EV_NEVENTS; i++)
		if (strcmp(s, leg_event_name((enum leg_event)i)) == 0)
			return i;
	return -1;
}

/* The table in the header's first comment. */
static int
read_doc(const char *path, struct doc_row *rows, int max)
{
	FILE *f = fopen(path, "r");
	char line[512];
	int n = 0, in = 0;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL && n < max) {
		char a[32], b[32], c[32], d[32];
		int entry;

		if (strstr(line, "---------") != NULL) {
			in = 1;
			continue;
		}
		if (!in)
			continue;
		if (sscanf(line, " * %31s %31s %31s %31s", a, b, c, d) != 4)
			break;
		entry = strcmp(c, "any") == 0 ? LEG_ANY :
		    strcmp(c, "newest") == 0 ? LEG_NEWEST :
		    strcmp(c, "older") == 0 ? LEG_OLDER : -2;
		rows[n] = (struct doc_row){ outbox_state_parse(a),
		    event_parse(b), entry, outbox_state_parse(d) };
		if (rows[n].from < 0 || rows[n].event < 0 || entry == -2 ||
		    rows[n].to < 0) {
			tap_diag("unreadable row: %s", line);
			fclose(f);
			return -1;
		}
		n++;
	}
	fclose(f);
	return n;
}

int
main(void)
{
	const char *top = getenv("abs_top_srcdir");
	char path[4096];
	struct doc_row rows[64];
	int n, s, ev, newest, mismatches = 0, checked = 0;

	snprintf(path, sizeof(path), "%s/store/legstate.h", top ? top : ".");
	n = read_doc(path, rows, 64);
	tap_ok(n > 10, "the header documents the table (%d rows)", n);

	for (s = 0; s < OUTBOX_NSTATES; s++)
		for (ev = 0; ev < EV_NEVENTS; ev++)
			for (newest = 0; newest <= 1; newest++) {
				const struct leg_rule *r = leg_next(
				    (enum outbox_state)s, (enum leg_event)ev,
				    newest);
				int want = -1, i;

				for (i = 0; i < n; i++)
					if (rows[i].from == s &&
					    rows[i].event == ev &&
					    (rows[i].entry == LEG_ANY ||
					    rows[i].entry == newest)) {
						want = rows[i].to;
						break;
					}
				checked++;
				if ((r ? (int)r->to : -1) != want) {
					mismatches++;
					tap_diag("%s + %s (%s): code says %s, "
					    "header says %s",
					    outbox_state_name((enum outbox_state)s),
					    leg_event_name((enum leg_event)ev),
					    newest ? "newest" : "older",
					    r ? outbox_state_name(r->to) : "no change",
					    want >= 0 ? outbox_state_name(
					    (enum outbox_state)want) : "no change");
				}
			}
	tap_int(mismatches, 0, "all %d (state, event, entry) combinations "
	    "match the header's table", checked);

	for (ev = 0; ev < EV_NEVENTS; ev++)
		for (newest = 0; newest <= 1; newest++) {
			tap_ok(leg_next(OUTBOX_DONE, (enum leg_event)ev, newest)
			    == NULL && leg_next(OUTBOX_SKIPPED,
			    (enum leg_event)ev, newest) == NULL,
			    "done and skipped are final under %s (%s)",
			    leg_event_name((enum leg_event)ev),
			    newest ? "newest" : "older");
		}
	for (s = 0; s < OUTBOX_NSTATES; s++)
		for (ev = 0; ev < EV_NEVENTS; ev++) {
			const struct leg_rule *r = leg_next(
			    (enum outbox_state)s, (enum leg_event)ev, 0);

			if (r != NULL && (r->to == OUTBOX_PENDING ||
			    r->to == OUTBOX_FAILED)) {
				tap_ok(0, "an older version goes back to %s "
				    "from %s on %s", outbox_state_name(r->to),
				    outbox_state_name((enum outbox_state)s),
				    leg_event_name((enum leg_event)ev));
				mismatches++;
			}
		}
	tap_ok(1, "an older version is never left pending or failed");
	{
		static const enum leg_event outs[] = { EV_STORED,
		    EV_STORED_NO_ETAG, EV_DUPLICATE, EV_TRANSIENT, EV_PERMANENT,
		    EV_GONE, EV_CHANGED, EV_INVALID, EV_WAIT, EV_STOPPED };
		size_t i;
		int missing = 0;

		for (i = 0; i < sizeof(outs) / sizeof(outs[0]); i++)
			for (newest = 0; newest <= 1; newest++)
				if (leg_next(OUTBOX_IN_FLIGHT, outs[i], newest)
				    == NULL)
					missing++;
		tap_int(missing, 0, "every outcome of a leg in flight has a rule");
	}
	tap_ok(leg_next(OUTBOX_IN_FLIGHT, EV_SUPERSEDED, 0) == NULL,
	    "a leg in flight is not superseded: its outcome decides");
	tap_ok((leg_next(OUTBOX_IN_FLIGHT, EV_GONE, 1)->rec &
	    REC_FORGET_STAT) != 0, "a vanished file's stat is forgotten, so "
	    "its return is journaled again");
	tap_ok((leg_next(OUTBOX_IN_FLIGHT, EV_DUPLICATE, 1)->rec &
	    REC_ETAG_LATER) != 0, "a replay found applied back-fills the ETag");
	tap_ok(leg_next(OUTBOX_IN_FLIGHT, EV_STOPPED, 0)->to == OUTBOX_SKIPPED,
	    "an older version cut short is skipped, not left pending");
	return tap_done();
}
