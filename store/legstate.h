/*
 * legstate.h - the one state machine of an entry's legs. Every change of
 * a leg's state, by the sync thread, the watcher's journal, crash
 * recovery or outboxctl retry, is looked up here; nothing else decides a
 * leg's next state. Pure: no I/O, tested exhaustively (t-legstate).
 *
 * A leg's states and what moves it (newest: the entry is the newest
 * journaled version of its path; older: a newer one exists):
 *
 *   from       event          entry   to         recorded
 *   ---------  -------------  ------  ---------  -----------------------------
 *   pending    claim          any     in_flight  attempts + 1
 *   pending    superseded     older   skipped    reason; multipart aborted
 *   failed     superseded     older   skipped    reason; multipart aborted
 *   failed     retry          newest  pending    due now
 *   failed     retry          older   skipped    reason; multipart aborted
 *   in_flight  stored         any     done       ETag, SHA-256, done time
 *   in_flight  stored_no_etag any     done       SHA-256; ETag back-filled later
 *   in_flight  duplicate      any     done       SHA-256; ETag back-filled later
 *   in_flight  transient      newest  pending    error; next attempt after backoff
 *   in_flight  transient      older   skipped    reason; multipart aborted
 *   in_flight  permanent      newest  failed     error (waits for outboxctl retry)
 *   in_flight  permanent      older   skipped    reason; multipart aborted
 *   in_flight  gone           any     skipped    reason; the path's stat forgotten
 *   in_flight  changed        any     skipped    reason; the path's stat forgotten
 *   in_flight  invalid        any     skipped    reason (job.json not applicable)
 *   in_flight  wait           newest  pending    reason; next attempt after backoff
 *   in_flight  wait           older   skipped    reason; multipart aborted
 *   in_flight  stopped        newest  pending    due now
 *   in_flight  stopped        older   skipped    reason; multipart aborted
 *   in_flight  poison         newest  failed     reason (waits for outboxctl retry)
 *   in_flight  poison         older   skipped    reason; multipart aborted
 *
 * Every other (state, event) pair changes nothing: done and skipped are
 * final, a leg in flight is not superseded (its outcome decides), and a
 * late outcome for a leg no longer in flight is dropped.
 *
 * Why "stat forgotten": a file that vanished (or changed) under a leg may
 * come back unchanged (moved away and back); the watcher journals a path
 * only when its size, mtime or inode differ from the last journaled, so
 * the last journaled stat is forgotten and the return journals it again.
 * Why "wait": a file can vanish (be moved away) while its S3 leg still
 * sends it from the open descriptor; if S3 then has the bytes, the row
 * must follow, so the database leg waits for the S3 leg's outcome.
 * Why "poison": a file whose reading or inspection killed outboxd
 * (crashed it, or hung it until the watchdog killed it) would be claimed
 * first at every start and kill it again; after OUTBOXD_POISON_ATTEMPTS
 * such deaths (store/poison.h counts them) it is set aside.
 * Why "ETag back-filled": a database row recorded before S3 answered, or
 * a replay that found the event applied already, may lack the ETag; the
 * ETag pass writes it once the S3 leg is done.
 */
#ifndef OUTBOXD_LEGSTATE_H
#define OUTBOXD_LEGSTATE_H

enum outbox_state {
	OUTBOX_PENDING,
	OUTBOX_IN_FLIGHT,
	OUTBOX_DONE,
	OUTBOX_FAILED,
	OUTBOX_SKIPPED,
	OUTBOX_NSTATES
};

enum leg_event {
	EV_CLAIM,		/* the scheduler takes a due leg */
	EV_STORED,		/* the store has this version (with its ETag) */
	EV_STORED_NO_ETAG,	/* database row written without the ETag */
	EV_DUPLICATE,		/* the database had applied the event before */
	EV_TRANSIENT,		/* a failure worth retrying after backoff */
	EV_PERMANENT,		/* a failure only an admin can fix */
	EV_GONE,		/* the file vanished before it was sent */
	EV_CHANGED,		/* the file is no longer this version */
	EV_INVALID,		/* job.json that cannot be applied */
	EV_WAIT,		/* database: the file is gone, but the S3 leg
				   (still undecided) may have its bytes */
	EV_STOPPED,		/* cut short: shutdown, or found after a crash */
	EV_SUPERSEDED,		/* a newer version of the path was journaled */
	EV_RETRY,		/* outboxctl retry */
	EV_POISON,		/* the leg's file killed outboxd N times */
	EV_NEVENTS
};

/* What a transition records besides the new state. */
enum {
	REC_ATTEMPT = 1 << 0,		/* attempts + 1 */
	REC_BACKOFF = 1 << 1,		/* next attempt after backoff */
	REC_DUE_NOW = 1 << 2,		/* next attempt now */
	REC_ERROR = 1 << 3,		/* keep the message (error or reason) */
	REC_RESULT = 1 << 4,		/* ETag (S3), SHA-256, done time */
	REC_ETAG_LATER = 1 << 5,	/* database: back-fill the ETag */
	REC_FORGET_STAT = 1 << 6,	/* the path journals again when seen */
	REC_ABORT_UPLOAD = 1 << 7,	/* queue the multipart upload's abort */
};

/* One row of the table above. */
struct leg_rule {
	enum outbox_state from;
	enum leg_event event;
	int entry;		/* LEG_ANY, LEG_NEWEST or LEG_OLDER */
	enum outbox_state to;
	unsigned rec;		/* REC_* */
};

enum { LEG_ANY = -1, LEG_OLDER = 0, LEG_NEWEST = 1 };

/*
 * The rule for event on a leg in state from, of an entry that is (newest
 * = 1) or is not (0) the newest version of its path; NULL when the event
 * changes nothing. Pure; any thread.
 */
const struct leg_rule *leg_next(enum outbox_state from, enum leg_event event,
    int newest);

/* "pending", "in_flight", ...; -1 from the parser for an unknown word. */
const char *outbox_state_name(enum outbox_state s);
int outbox_state_parse(const char *s);
/* "claim", "stored", ...: for logs and the simulator's report. */
const char *leg_event_name(enum leg_event ev);

#endif
