/*
 * legstate.c - the leg state table (see legstate.h, where the same table
 * stands for people to read; t-legstate checks the two agree).
 */
#include "config.h"

#include <stddef.h>
#include <string.h>

#include "store/legstate.h"

#define ABORT	REC_ABORT_UPLOAD
#define FORGET	REC_FORGET_STAT

static const struct leg_rule rules[] = {
	{ OUTBOX_PENDING, EV_CLAIM, LEG_ANY, OUTBOX_IN_FLIGHT, REC_ATTEMPT },
	{ OUTBOX_PENDING, EV_SUPERSEDED, LEG_OLDER, OUTBOX_SKIPPED,
	    REC_ERROR | ABORT },
	{ OUTBOX_FAILED, EV_SUPERSEDED, LEG_OLDER, OUTBOX_SKIPPED,
	    REC_ERROR | ABORT },
	{ OUTBOX_FAILED, EV_RETRY, LEG_NEWEST, OUTBOX_PENDING, REC_DUE_NOW },
	{ OUTBOX_FAILED, EV_RETRY, LEG_OLDER, OUTBOX_SKIPPED,
	    REC_ERROR | ABORT },
	{ OUTBOX_IN_FLIGHT, EV_STORED, LEG_ANY, OUTBOX_DONE, REC_RESULT },
	{ OUTBOX_IN_FLIGHT, EV_STORED_NO_ETAG, LEG_ANY, OUTBOX_DONE,
	    REC_RESULT | REC_ETAG_LATER },
	{ OUTBOX_IN_FLIGHT, EV_DUPLICATE, LEG_ANY, OUTBOX_DONE,
	    REC_RESULT | REC_ETAG_LATER },
	{ OUTBOX_IN_FLIGHT, EV_TRANSIENT, LEG_NEWEST, OUTBOX_PENDING,
	    REC_ERROR | REC_BACKOFF },
	{ OUTBOX_IN_FLIGHT, EV_TRANSIENT, LEG_OLDER, OUTBOX_SKIPPED,
	    REC_ERROR | ABORT },
	{ OUTBOX_IN_FLIGHT, EV_PERMANENT, LEG_NEWEST, OUTBOX_FAILED,
	    REC_ERROR | ABORT },
	{ OUTBOX_IN_FLIGHT, EV_PERMANENT, LEG_OLDER, OUTBOX_SKIPPED,
	    REC_ERROR | ABORT },
	{ OUTBOX_IN_FLIGHT, EV_GONE, LEG_ANY, OUTBOX_SKIPPED,
	    REC_ERROR | FORGET | ABORT },
	{ OUTBOX_IN_FLIGHT, EV_CHANGED, LEG_ANY, OUTBOX_SKIPPED,
	    REC_ERROR | FORGET | ABORT },
	{ OUTBOX_IN_FLIGHT, EV_INVALID, LEG_ANY, OUTBOX_SKIPPED, REC_ERROR },
	{ OUTBOX_IN_FLIGHT, EV_WAIT, LEG_NEWEST, OUTBOX_PENDING,
	    REC_ERROR | REC_BACKOFF },
	{ OUTBOX_IN_FLIGHT, EV_WAIT, LEG_OLDER, OUTBOX_SKIPPED,
	    REC_ERROR | ABORT },
	{ OUTBOX_IN_FLIGHT, EV_STOPPED, LEG_NEWEST, OUTBOX_PENDING,
	    REC_ERROR | REC_DUE_NOW },
	{ OUTBOX_IN_FLIGHT, EV_STOPPED, LEG_OLDER, OUTBOX_SKIPPED,
	    REC_ERROR | ABORT },
	{ OUTBOX_IN_FLIGHT, EV_POISON, LEG_NEWEST, OUTBOX_FAILED, REC_ERROR },
	{ OUTBOX_IN_FLIGHT, EV_POISON, LEG_OLDER, OUTBOX_SKIPPED,
	    REC_ERROR | ABORT },
};

const struct leg_rule *
leg_next(enum outbox_state from, enum leg_event event, int newest)
{
	size_t i;

	for (i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		const struct leg_rule *r = &rules[i];

		if (r->from == from && r->event == event &&
		    (r->entry == LEG_ANY || r->entry == (newest ? LEG_NEWEST :
		    LEG_OLDER)))
			return r;
	}
	return NULL;
}

static const char *const state_names[OUTBOX_NSTATES] = {
	"pending", "in_flight", "done", "failed", "skipped"
};

static const char *const event_names[EV_NEVENTS] = {
	"claim", "stored", "stored_no_etag", "duplicate", "transient",
	"permanent", "gone", "changed", "invalid", "wait", "stopped",
	"superseded",
	"retry", "poison"
};

const char *
outbox_state_name(enum outbox_state s)
{
	return (unsigned)s < OUTBOX_NSTATES ? state_names[s] : "?";
}

int
outbox_state_parse(const char *s)
{
	int i;

	for (i = 0; s != NULL && i < OUTBOX_NSTATES; i++)
		if (strcmp(s, state_names[i]) == 0)
			return i;
	return -1;
}

const char *
leg_event_name(enum leg_event ev)
{
	return (unsigned)ev < EV_NEVENTS ? event_names[ev] : "?";
}
