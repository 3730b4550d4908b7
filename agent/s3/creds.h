/*
 * creds.h - the AWS credentials S3 requests are signed with, from the
 * standard chain in the SDKs' order (DESIGN.md, "Credentials"), kept
 * fresh.
 *
 * One struct creds serves every thread: the sync thread signs each
 * request with a copy taken by creds_get; the main thread reloads it on
 * SIGHUP; temporary credentials (STS, the container endpoint, IMDSv2,
 * credential_process with an Expiration) are refreshed by the object's
 * own thread some minutes before they expire, so no transfer waits for a
 * refresh. A request that meets ExpiredToken asks for one at once
 * (creds_expired). The provider is named in the log once at start;
 * secrets never reach a log line or an error message.
 */
#ifndef OUTBOXD_CREDS_H
#define OUTBOXD_CREDS_H

#include <stdint.h>

#include "base/util.h"
#include "config/cfg.h"

struct creds;

/* A copy of the credentials in use, for one request. */
struct creds_val {
	char access_key[128];
	char secret_key[128];
	char token[4096];	/* session token, "" for none */
	int64_t expires_ms;	/* wall-clock ms, 0 for keys that do not expire */
	unsigned gen;		/* changes with every new set of credentials */
};

/*
 * Chooses the provider cfg and the environment name, fetches the first
 * credentials (blocking, a few seconds at most) and, for temporary ones,
 * starts the refresh thread. Never NULL: a failed first fetch is retried
 * by the thread, and creds_get reports it meanwhile.
 */
struct creds *creds_new(const struct cfg *cfg);
/* Stops the refresh thread and wipes the secrets. NULL is a no-op. */
void creds_free(struct creds *c);

/* Copies the current credentials into v. -1 with e (class ERR_REFUSED)
 * while there are none (the provider failed; e says why). Any thread. */
int creds_get(struct creds *c, struct creds_val *v, struct err *e);

/* A request signed with generation gen met ExpiredToken (or a like
 * refusal): refresh now unless a newer generation is already there. */
void creds_expired(struct creds *c, unsigned gen);

/* SIGHUP: takes the credential settings of n (new static keys, another
 * profile...) and fetches again. Any thread. */
void creds_reload(struct creds *c, const struct cfg *n);

/* Changes whenever new credentials are taken (a refresh, a reload):
 * the sync thread probes a paused leg at once then. Any thread. */
unsigned creds_generation(struct creds *c);

/* The provider in use, for doctor and status ("environment", ...). */
const char *creds_provider(struct creds *c);

#endif
