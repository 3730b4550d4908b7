/*
 * outboxd.c - the daemon's main(): configuration, then three threads.
 *
 *   main     signals (signalfd), systemd readiness, status and watchdog;
 *   watcher  inotify and rescans -> the outbox        (watchers/watch.c);
 *   sync     the outbox -> S3 and PostgreSQL          (agent/engine/sync.c).
 *
 * The threads share nothing but the outbox file and one eventfd by which
 * the watcher wakes the sync thread. SIGTERM or SIGINT stop both: the
 * watcher journals what has settled, the sync thread lets transfers in
 * flight finish, and outboxd exits 0. Whatever was cut short is in the
 * outbox as in_flight and is retried at the next start.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sysexits.h>
#include <unistd.h>

#include <curl/curl.h>
#include <libxml/parser.h>
#include <systemd/sd-daemon.h>

#include "config/cfg.h"
#include "config/dotenv.h"
#include "base/log.h"
#include "agent/http.h"
#include "agent/metrics.h"
#include "base/strmap.h"
#include "agent/engine/sync.h"
#include "store/outbox.h"
#include "store/poison.h"
#include "watchers/watch.h"

#define STATUS_EVERY_MS 5000
#define PRUNE_EVERY_MS	(10 * 60 * 1000)	/* a retention walk this often */
#define PRUNE_BATCH	256		/* entries looked at per transaction */
#define PRUNE_SLICE_MS	250		/* of each second, at most, while
					   a walk has a backlog to delete */

extern char **environ;

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: outboxd [--env-file PATH] [--once] [-n] [--version] [--help]\n"
	    "\n"
	    "Watches OUTBOXD_WATCH_DIR (default ./uploads), journals every finished\n"
	    "file in the outbox OUTBOXD_STATE_DB (default ./outbox.db), and replays\n"
	    "it to S3 (S3_BUCKET) and PostgreSQL (DATABASE_URL) until both have it.\n"
	    "\n"
	    "  --env-file PATH  load a dotenv file (variables already set win)\n"
	    "  --once           rescan, sync everything, exit: 0 all done, 75 some\n"
	    "                   entries still pending, 65 some failed for good\n"
	    "  -n, --check      check the configuration and exit\n"
	    "  --version        print the version\n"
	    "\n"
	    "Configuration is read from the environment: see outboxd.env(5)\n"
	    "and outboxd(8).\n");
}

/* Reports the configuration's problems, one line each; 0 when none. */
static int
load_config(struct cfg *c)
{
	struct cfg_problems p = {0};
	size_t i;

	if (cfg_load(c, NULL, NULL, 1, &p) == 0)
		return 0;
	for (i = 0; i < p.n; i++)
		log_err("configuration: %s", p.lines[i]);
	cfg_problems_free(&p);
	cfg_free(c);
	return -1;
}

static void
describe(const struct cfg *c)
{
	log_info("outboxd %s: watching %s, outbox %s", PACKAGE_VERSION,
	    c->watch_dir, c->state_db);
	if (c->bucket != NULL)
		log_info("S3 leg: bucket %s, region %s, %s%s%s", c->bucket,
		    c->region, c->endpoint ? "endpoint " : "AWS",
		    c->endpoint ? c->endpoint : "",
		    c->path_style ? ", path style" : "");
	else
		log_info("S3 leg: off (S3_BUCKET is not set)");
	if (c->db_on)
		log_info("database leg: on (schema %s, from %s)", c->db_schema,
		    c->db_source);
	else
		log_info("database leg: off (DATABASE_URL is not set)");
}

/* Writes which legs are on into the outbox, for outboxctl status. */
static void
note_legs(struct outbox *ob, const struct cfg *c)
{
	struct err e = {0};

	if (outbox_meta_set(ob, "s3_leg", c->bucket ? "on" : "off", &e) < 0 ||
	    outbox_meta_set(ob, "db_leg", c->db_on ? "on" : "off", &e) < 0)
		log_warnx("%s", e.msg);
}

static int
exit_status(struct outbox *ob, const struct cfg *c)
{
	struct outbox_counts n;
	struct err e = {0};

	if (outbox_counts(ob, c->bucket != NULL, c->db_on, &n, &e) < 0) {
		log_err("%s", e.msg);
		return EX_IOERR;
	}
	log_info("done: %lld entries done, %lld pending, %lld failed",
	    (long long)n.done, (long long)n.pending, (long long)n.failed);
	if (n.failed > 0)
		return EX_DATAERR;
	if (n.pending > 0)
		return EX_TEMPFAIL;
	return 0;
}

/* What the main thread keeps between reports and reloads. */
struct mainloop {
	const struct cfg *cfg;		/* as the threads use it */
	struct outbox *ob;		/* the main thread's connection */
	const char *env_file;		/* --env-file, or NULL */
	struct strmap *env_names;	/* variables set before --env-file */
	char *metrics_file;		/* may change on SIGHUP */
	long long start_time_s;
	atomic_int ready;		/* the start-up rescan is journaled */
	int metrics_failed;		/* said so once */
	const struct metrics_live *live;	/* the engine's counters */
	/* For the HTTP thread (http.h): the last count, copied under mu. */
	pthread_mutex_t mu;
	struct outbox_counts counts;
	int have_counts;
	struct watch *w;		/* heartbeats, for /healthz */
	struct sync *s;
	long long stale_ms;		/* a thread silent this long is unwell */
	struct sync *sync;		/* the sync thread's, for SIGHUP */
};

static void report(struct mainloop *m);
/*
 * Retention (OUTBOXD_RETENTION): batches of the walk that deletes done
 * entries older than the retention, for at most slice_ms (-1: until the
 * walk ends), each batch its own short transaction on the main thread's
 * connection, so the sync thread waits at most one batch. Returns 1 when
 * the walk ended.
 */
static int
prune_slice(struct outbox *ob, const struct cfg *c, struct outbox_prune *p,
    int64_t *total, int slice_ms)
{
	int64_t start = time_mono_ms();
	struct err e = {0};
	int n;

	if (c->retention_s == 0)
		return 1;
	do {
		n = outbox_prune(ob, time_now_ms() - c->retention_s * 1000,
		    PRUNE_BATCH, p, &e);
		if (n < 0) {
			log_warnx("retention: %s (tried again later)", e.msg);
			return 1;
		}
		*total += n;
	} while (!p->finished &&
	    (slice_ms < 0 || time_mono_ms() - start < slice_ms));
	if (p->finished && *total > 0)
		log_info("retention: pruned %lld done entries older than %lld%s",
		    (long long)*total, (long long)(c->retention_s % 86400 ?
		    c->retention_s / 3600 : c->retention_s / 86400),
		    c->retention_s % 86400 ? "h" : "d");
	if (p->finished)
		*total = 0;
	return p->finished;
}

static int
run_once(const struct cfg *c, struct outbox *ob, struct mainloop *m)
{
	struct watch *w;
	struct sync *s;
	struct err e = {0};
	int n, rc, wake;

	w = watch_create(c, 0, -1, &e);
	if (w == NULL) {
		log_err("%s", e.msg);
		return EX_IOERR;
	}
	n = watch_rescan_now(w, &e);
	watch_free(w);
	if (n < 0) {
		log_err("%s", e.msg);
		return EX_IOERR;
	}
	log_info("journaled %d new or changed files", n);
	m->ready = 1;
	/* No watcher to wake the sync thread, but the hasher's workers do
	 * when a file is hashed. */
	wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s = sync_new(c, wake, &e);
	if (s == NULL) {
		log_err("%s", e.msg);
		if (wake >= 0)
			close(wake);
		return EX_SOFTWARE;
	}
	rc = sync_once(s);
	m->live = sync_live(s);
	report(m);	/* the metrics file, once, at the end */
	m->live = NULL;
	sync_free(s);
	if (wake >= 0)
		close(wake);
	if (rc < 0)
		return EX_IOERR;
	{
		struct outbox_prune p = {0};
		int64_t total = 0;

		prune_slice(ob, c, &p, &total, -1);
	}
	return exit_status(ob, c);
}

/* Thread bodies and how they ended. */
struct worker {
	pthread_t tid;
	atomic_int finished;	/* set when the body returned */
	int rc;
	struct watch *w;
	struct sync *s;
};

static void *
watch_body(void *arg)
{
	struct worker *k = arg;

	k->rc = watch_run(k->w);
	atomic_store(&k->finished, 1);
	return NULL;
}

static void *
sync_body(void *arg)
{
	struct worker *k = arg;

	k->rc = sync_run(k->s);
	atomic_store(&k->finished, 1);
	return NULL;
}


/* systemd's STATUS= line and the metrics file, from one count. */
static void
report(struct mainloop *m)
{
	const struct cfg *c = m->cfg;
	struct outbox_counts n;
	struct err e = {0};

	if (outbox_counts(m->ob, c->bucket != NULL, c->db_on, &n, &e) < 0)
		return;
	pthread_mutex_lock(&m->mu);
	m->counts = n;
	m->have_counts = 1;
	pthread_mutex_unlock(&m->mu);
	sd_notifyf(0, "STATUS=%lld done, %lld pending, %lld failed%s%s",
	    (long long)n.done, (long long)n.pending, (long long)n.failed,
	    n.last_error[0] && n.pending + n.failed > 0 ? "; last error: " : "",
	    n.last_error[0] && n.pending + n.failed > 0 ? n.last_error : "");
	if (m->metrics_file != NULL) {
		struct metrics_extra x = { c->bucket != NULL, c->db_on,
		    m->start_time_s, m->ready, PACKAGE_VERSION };
		char *text = metrics_render(&n, &x, m->live, time_now_ms());

		if (metrics_write(m->metrics_file, text, &e) < 0) {
			if (!m->metrics_failed)
				log_warnx("%s", e.msg);
			m->metrics_failed = 1;
		} else {
			m->metrics_failed = 0;
		}
		free(text);
	}
}

/*
 * Reading variables again on SIGHUP: the environment outboxd started with
 * wins, as at start-up, then the --env-file as it is now. The process
 * environment itself is left alone (other threads read it).
 */
struct reload_env {
	struct mainloop *m;
	struct strmap *file;	/* name -> value from the env file */
};

static int
reload_assign(void *arg, const char *key, const char *value)
{
	struct reload_env *r = arg;

	free(strmap_put(r->file, key, xstrdup(value)));
	return 0;
}

static const char *
reload_lookup(void *arg, const char *name)
{
	struct reload_env *r = arg;

	if (strmap_get(r->m->env_names, name) != NULL)
		return getenv(name);
	return strmap_get(r->file, name);
}

static const char *
reload_get(void *arg, const char *name)
{
	return reload_lookup(arg, name);
}

static int
differs(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a != b;
	return strcmp(a, b) != 0;
}

/* Names what changed but needs a restart to apply. */
static void
needs_restart(const struct cfg *o, const struct cfg *n)
{
	struct buf b = {0};

#define CHANGED(field, name) do { if (o->field != n->field) \
	buf_printf(&b, "%s%s", b.len ? ", " : "", name); } while (0)
#define CHANGED_S(field, name) do { if (differs(o->field, n->field)) \
	buf_printf(&b, "%s%s", b.len ? ", " : "", name); } while (0)
	CHANGED_S(watch_dir, "OUTBOXD_WATCH_DIR");
	CHANGED_S(state_db, "OUTBOXD_STATE_DB");
	CHANGED_S(bucket, "S3_BUCKET");
	CHANGED_S(region, "AWS_REGION");
	CHANGED_S(endpoint, "AWS_ENDPOINT_URL_S3");
	CHANGED(path_style, "S3_FORCE_PATH_STYLE");
	CHANGED_S(http_listen, "OUTBOXD_HTTP_LISTEN");
	CHANGED_S(db_schema, "OUTBOXD_DB_SCHEMA");
	CHANGED_S(default_user, "OUTBOXD_DEFAULT_USER");
	CHANGED(concurrency, "OUTBOXD_CONCURRENCY");
	CHANGED(multipart_threshold, "OUTBOXD_MULTIPART_THRESHOLD");
	CHANGED(settle_ms, "OUTBOXD_SETTLE_MS");
	CHANGED(watch_mode, "OUTBOXD_WATCH_MODE");
	CHANGED(poll_ms, "OUTBOXD_POLL_MS");
	CHANGED(rescan_s, "OUTBOXD_RESCAN_S");
	CHANGED(retry_base_ms, "OUTBOXD_RETRY_BASE_MS");
	CHANGED(retry_max_s, "OUTBOXD_RETRY_MAX_S");
	CHANGED(s3_timeout_s, "OUTBOXD_S3_TIMEOUT_S");
	CHANGED(db_timeout_s, "OUTBOXD_DB_TIMEOUT_S");
#undef CHANGED
#undef CHANGED_S
	if (b.len > 0)
		log_warnx("SIGHUP: changed, but applied only after a restart: %s",
		    b.data);
	buf_free(&b);
}

/* SIGHUP: log format and level and the metrics file change at once;
 * everything else is named if it changed; then a rescan. */
static void
reload(struct mainloop *m)
{
	struct reload_env r = { m, strmap_new() };
	struct cfg_problems p = {0};
	struct cfg n;
	struct err e = {0};
	size_t i = 0;
	const char *k;
	void *v;

	if (m->env_file != NULL) {
		char *text = NULL;
		size_t len = 0;
		FILE *f = fopen(m->env_file, "re");

		int ok = 0;

		if (f == NULL || getdelim(&text, &len, '\0', f) < 0)
			log_warnx("SIGHUP: cannot read %s: configuration not "
			    "reloaded", m->env_file);
		else if (dotenv_parse(text, strlen(text), reload_assign,
		    reload_lookup, &r, &e) < 0)
			log_warnx("SIGHUP: %s: %s: configuration not reloaded",
			    m->env_file, e.msg);
		else
			ok = 1;
		free(text);
		if (f != NULL)
			fclose(f);
		if (!ok)
			goto out;
	}
	if (cfg_load(&n, reload_get, &r, 0, &p) > 0) {
		for (i = 0; i < p.n; i++)
			log_warnx("SIGHUP: configuration not reloaded: %s",
			    p.lines[i]);
		cfg_problems_free(&p);
		cfg_free(&n);
		goto out;
	}
	log_set_format(n.log_json ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT);
	if (differs(m->metrics_file, n.metrics_file)) {
		free(m->metrics_file);
		m->metrics_file = n.metrics_file ? xstrdup(n.metrics_file) : NULL;
		log_info("SIGHUP: metrics file now %s", m->metrics_file ?
		    m->metrics_file : "off");
	}
	needs_restart(m->cfg, &n);
	/* Credentials apply at once: a leg paused because they were
	 * refused is probed with the new ones. */
	if (m->sync != NULL)
		sync_reload(m->sync, &n);
	log_info("SIGHUP: configuration reloaded");
	cfg_free(&n);
out:
	i = 0;
	while (strmap_next(r.file, &i, &k, &v))
		free(v);
	strmap_free(r.file);
}

/* ---- the HTTP endpoint's answers (its own thread; nothing blocks) ---- */

static char *
http_metrics(void *arg)
{
	struct mainloop *m = arg;
	const struct cfg *c = m->cfg;
	struct outbox_counts n;
	int have;

	pthread_mutex_lock(&m->mu);
	n = m->counts;
	have = m->have_counts;
	pthread_mutex_unlock(&m->mu);
	if (!have)
		return NULL;
	return metrics_render(&n, &(struct metrics_extra){ c->bucket != NULL,
	    c->db_on, m->start_time_s, m->ready, PACKAGE_VERSION }, m->live,
	    time_now_ms());
}

/* Healthy while both threads turn, as the watchdog is fed. */
static int
http_healthy(void *arg, char *why, size_t n)
{
	struct mainloop *m = arg;
	long long now = time_mono_ms();
	long long w = now - watch_heartbeat(m->w), s = now - sync_heartbeat(m->s);

	if (w < m->stale_ms && s < m->stale_ms)
		return 1;
	snprintf(why, n, "unhealthy: the %s thread has not turned for %lld ms",
	    w >= m->stale_ms ? "watcher" : "sync", w >= m->stale_ms ? w : s);
	return 0;
}

static int
http_ready(void *arg)
{
	struct mainloop *m = arg;

	return watch_ready(m->w);
}

/* Serves OUTBOXD_HTTP_LISTEN, if set, for the threads of w and s. */
static int
http_begin(struct mainloop *m, struct http **hp, struct watch *w,
    struct sync *s, uint64_t watchdog_us)
{
	struct http_source src = { http_metrics, http_healthy, http_ready, m };
	struct err e = {0};

	*hp = NULL;
	if (m->cfg->http_listen == NULL)
		return 0;
	m->w = w;
	m->s = s;
	/* Half the watchdog's period, as the watchdog is fed; 30 s without. */
	m->stale_ms = watchdog_us > 0 ? (long long)(watchdog_us / 2000) : 30000;
	*hp = http_open(m->cfg->http_listen, &e);
	if (*hp == NULL || http_start(*hp, &src, &e) < 0) {
		log_err("%s", e.msg);
		http_free(*hp);
		*hp = NULL;
		return -1;
	}
	log_info("HTTP: serving /metrics, /healthz and /readyz on %s",
	    m->cfg->http_listen);
	return 0;
}

static int
run_daemon(const struct cfg *c, struct outbox *ob, struct mainloop *m)
{
	struct worker wk = {0}, sk = {0};
	struct http *http;
	struct err e = {0};
	sigset_t set;
	int sfd, wake, rc = 0, ready = 0;
	uint64_t watchdog_us = 0;
	int64_t last_status = 0, next_prune = 0, pruned = 0;
	struct outbox_prune prune = {0};

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	/* A lease the watcher takes for a moment (watch.c, being_written)
	 * breaks with SIGIO, whose default would end the process. */
	sigaddset(&set, SIGIO);
	/* Blocked here, inherited blocked by both threads: only signalfd
	 * sees them, so no work ever happens in a signal handler. */
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &set, SFD_CLOEXEC);
	wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (sfd < 0 || wake < 0) {
		log_warn("signalfd/eventfd");
		return EX_OSERR;
	}
	wk.w = watch_create(c, 1, wake, &e);
	if (wk.w == NULL) {
		log_err("%s", e.msg);
		return EX_IOERR;
	}
	sk.s = sync_new(c, wake, &e);
	if (sk.s == NULL) {
		log_err("%s", e.msg);
		watch_free(wk.w);
		return EX_SOFTWARE;
	}
	m->live = sync_live(sk.s);
	if (sd_watchdog_enabled(0, &watchdog_us) <= 0)
		watchdog_us = 0;
	if (http_begin(m, &http, wk.w, sk.s, watchdog_us) < 0) {
		sync_free(sk.s);
		watch_free(wk.w);
		return EX_UNAVAILABLE;
	}
	m->sync = sk.s;
	if (pthread_create(&wk.tid, NULL, watch_body, &wk) != 0 ||
	    pthread_create(&sk.tid, NULL, sync_body, &sk) != 0) {
		log_err("cannot start threads");
		return EX_OSERR;
	}

	for (;;) {
		struct pollfd p = { sfd, POLLIN, 0 };
		struct signalfd_siginfo si;
		long long now;

		if (poll(&p, 1, 1000) > 0 &&
		    read(sfd, &si, sizeof(si)) == sizeof(si)) {
			if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
				log_info("%s: stopping", strsignal((int)si.ssi_signo));
				break;
			}
			if (si.ssi_signo == SIGUSR1) {
				log_info("rescan requested");
				watch_request_rescan(wk.w);
			} else if (si.ssi_signo == SIGHUP) {
				reload(m);
				watch_request_rescan(wk.w);
				last_status = 0;
			}
		}
		if (atomic_load(&wk.finished) || atomic_load(&sk.finished)) {
			log_err("the %s thread stopped on an error: exiting so "
			    "a restart recovers from the outbox",
			    atomic_load(&wk.finished) ? "watcher" : "sync");
			rc = EX_IOERR;
			break;
		}
		now = time_mono_ms();
		if (!ready && watch_ready(wk.w)) {
			ready = 1;
			atomic_store(&m->ready, 1);
			sd_notify(0, "READY=1");
			last_status = 0;
		}
		if (now - last_status >= STATUS_EVERY_MS) {
			last_status = now;
			report(m);
		}
		if (ready && now >= next_prune &&
		    prune_slice(ob, c, &prune, &pruned, PRUNE_SLICE_MS))
			next_prune = now + PRUNE_EVERY_MS;
		/* Pet the watchdog only while both threads are turning. */
		if (watchdog_us > 0 &&
		    now - watch_heartbeat(wk.w) < (long long)(watchdog_us / 2000) &&
		    now - sync_heartbeat(sk.s) < (long long)(watchdog_us / 2000))
			sd_notify(0, "WATCHDOG=1");
	}
	sd_notify(0, "STOPPING=1");
	watch_stop(wk.w);
	sync_stop(sk.s);
	pthread_join(wk.tid, NULL);
	pthread_join(sk.tid, NULL);
	http_free(http);
	if (rc == 0 && (wk.rc < 0 || sk.rc < 0))
		rc = EX_IOERR;
	report(m);	/* the final counts */
	m->live = NULL;
	watch_free(wk.w);
	m->sync = NULL;
	sync_free(sk.s);
	close(wake);
	close(sfd);
	log_info("stopped");
	return rc;
}

/* Counts a death inside a file's inspection (store/poison.h) and sets
 * the entry aside at the limit; before outbox_recover. */
static int
set_aside_poison(struct outbox *ob, const struct cfg *c)
{
	struct err e = {0};
	int64_t id;
	int deaths, rc;

	rc = poison_recover(ob, c->state_db, c->poison_attempts, &id, &deaths,
	    &e);
	if (rc < 0) {
		log_err("%s", e.msg);
		return -1;
	}
	if (rc > 0)
		log_err("entry %lld set aside as failed: outboxd died %d times "
		    "while reading or inspecting its file (OUTBOXD_POISON_"
		    "ATTEMPTS=%d); see outboxctl show %lld, and outboxctl "
		    "retry %lld takes it back", (long long)id, deaths,
		    c->poison_attempts, (long long)id, (long long)id);
	else if (deaths > 0)
		log_warnx("entry %lld: outboxd died while reading or inspecting "
		    "its file (%d of %d times before it is set aside)",
		    (long long)id, deaths, c->poison_attempts);
	return 0;
}

/*
 * The process holds the S3 secret key and the database password: no core
 * file may ever hold them, and no process of the same user may read its
 * memory (/proc/PID/mem, ptrace) or its environment. Not under
 * AddressSanitizer, whose leak checker ptraces its own threads and cannot
 * once the process is not dumpable (tests only).
 */
static void
not_dumpable(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
	return;
#endif
#endif
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		log_warn("prctl(PR_SET_DUMPABLE, 0)");
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "env-file", required_argument, NULL, 'e' },
		{ "once", no_argument, NULL, 'o' },
		{ "check", no_argument, NULL, 'n' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *env_file = NULL;
	int once = 0, check = 0, ch, rc;
	struct cfg c;
	struct outbox *ob;
	struct err e = {0};
	struct mainloop m = {0};

	/* Descriptors inherited from whoever started us (a shell holding an
	 * upload open for writing, say) would keep files looking written to
	 * (watch.c, being_written) and leak: only 0-2 are ours. */
	close_range(3, ~0U, 0);
	not_dumpable();
	while ((ch = getopt_long(argc, argv, "n", opts, NULL)) != -1) {
		switch (ch) {
		case 'e': env_file = optarg; break;
		case 'o': once = 1; break;
		case 'n': check = 1; break;
		case 'V': printf("outboxd %s\n", PACKAGE_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EX_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "outboxd: unexpected argument: %s\n", argv[optind]);
		usage(stderr);
		return EX_USAGE;
	}
	/* Three threads with modest, bursty allocations: one malloc arena
	 * rather than one per thread (each holds megabytes once used). */
	mallopt(M_ARENA_MAX, 1);
	/* Which variables the environment set, before --env-file adds
	 * its own: on SIGHUP those still win over the file. */
	m.env_names = strmap_new();
	for (char **ep = environ; *ep != NULL; ep++) {
		char *name = xstrndup(*ep, strcspn(*ep, "="));

		strmap_put(m.env_names, name, (void *)1);
		free(name);
	}
	/* Until the configuration says otherwise: text, so that its own
	 * problems reach journald at "err" like every later line. */
	log_init("outboxd", LOG_FORMAT_TEXT, LOG_INFO);
	rc = EX_CONFIG;
	if (env_file != NULL && dotenv_load(env_file, &e) < 0) {
		log_err("configuration: --env-file %s", e.msg);
		goto out_env;
	}
	if (load_config(&c) < 0)
		goto out_env;
	log_init("outboxd", c.log_json ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT,
	    getenv("OUTBOXD_DEBUG") && strcmp(getenv("OUTBOXD_DEBUG"), "1") == 0 ?
	    LOG_DEBUG : LOG_INFO);
	if (check) {
		describe(&c);
		printf("configuration OK\n");
		rc = 0;
		goto out_cfg;
	}
	xmlInitParser();
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		fatalx(EX_SOFTWARE, "curl_global_init failed");
	describe(&c);

	ob = outbox_open(c.state_db, 0, &e);
	if (ob == NULL) {
		log_err("%s", e.msg);
		rc = EX_CANTCREAT;
		goto out_libs;
	}
	if (outbox_lock(ob, &e) < 0) {
		log_err("%s", e.msg);
		rc = EX_TEMPFAIL;
		goto out_outbox;
	}
	if (set_aside_poison(ob, &c) < 0) {
		rc = EX_IOERR;
		goto out_outbox;
	}
	rc = outbox_recover(ob, &e);
	if (rc < 0) {
		log_err("%s", e.msg);
		rc = EX_IOERR;
		goto out_outbox;
	}
	if (rc > 0)
		log_info("%d leg(s) interrupted by the last stop will be retried",
		    rc);
	note_legs(ob, &c);

	m.cfg = &c;
	m.ob = ob;
	m.env_file = env_file;
	m.metrics_file = c.metrics_file ? xstrdup(c.metrics_file) : NULL;
	m.start_time_s = time_now_ms() / 1000;
	pthread_mutex_init(&m.mu, NULL);
	rc = once ? run_once(&c, ob, &m) : run_daemon(&c, ob, &m);
	free(m.metrics_file);
out_outbox:
	outbox_close(ob);
out_libs:
	curl_global_cleanup();
	xmlCleanupParser();
out_cfg:
	cfg_free(&c);
out_env:
	strmap_free(m.env_names);
	return rc;
}
