/*
 * ternd - the Tern mail server daemon.
 *
 * Start-up: parse the configuration (-c FILE, -o key=value), load the
 * recipient tables, bind the listeners, drop root privileges to run_user,
 * open the queue, recover what it holds, serve the control socket, then run
 * the event loop. One process, one event loop for all network I/O; disk
 * syncs run on the queue's commit thread and on the delivery workers.
 *
 * Signals: SIGTERM/SIGINT stop accepting, tell idle sessions 421, let every
 * commit in flight finish (so each 250 sent is true), wait for running
 * deliveries, and exit 0. SIGHUP reloads the configuration and tables, and
 * builds a new milter chain (filter_env) for new connections; sessions
 * keep the configuration and chain they started with. The resolver that
 * mail authentication uses (dns_resolver) is made once, at start-up.
 *
 * Trusts: the configuration only after conf_load has checked it; nothing
 * from the network (that is the session's job).
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf/conf.h"
#include "core/buf.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/xalloc.h"
#include "event/conn.h"
#include "event/control.h"
#include "event/listener.h"
#include "event/worker.h"
#include "deliver/remote.h"
#include "policy/limits.h"
#include "dns/dns.h"
#include "lookup/lookup.h"
#include "policy/filter.h"
#include "queue/queue.h"
#include "sched/sched.h"
#include "smtp/smtp_server.h"
#include "tls/tls.h"

struct ternd {
	const char *conf_path;
	char **overrides;
	size_t noverrides;
	struct conf *conf;
	struct conf **old_confs; /* kept until exit: live sessions point at them */
	size_t nold;
	struct event_base *base;
	struct listener **listeners;
	size_t nlisteners;
	struct conn_server srv;
	struct queue *queue;
	struct sched *sched;
	struct remote *remote;
	struct control *control;
	struct dns *dns;           /* mail authentication's resolver */
	struct event *sig_term, *sig_int, *sig_hup, *deadline;
	int exit_code;
};

static void usage(void)
{
	fprintf(stderr, "usage: ternd -c FILE [-o key=value]...\n");
	exit(2);
}

static enum log_level level_of(const char *s)
{
	if (strcmp(s, "debug") == 0)
		return LOG_LEVEL_DEBUG;
	if (strcmp(s, "warn") == 0)
		return LOG_LEVEL_WARN;
	if (strcmp(s, "err") == 0)
		return LOG_LEVEL_ERR;
	return LOG_LEVEL_INFO;
}

/* ternd_load_conf - parse and check; NULL after printing every error */
static struct conf *ternd_load_conf(struct ternd *t)
{
	struct conf *c = xcalloc(1, sizeof(*c));
	struct strbuf errs;
	strbuf_init(&errs);
	if (conf_load(c, t->conf_path, t->overrides, t->noverrides, &errs) < 0) {
		fputs(errs.s ? errs.s : "configuration error\n", stderr);
		strbuf_free(&errs);
		conf_free(c);
		free(c);
		return NULL;
	}
	strbuf_free(&errs);
	return c;
}

static struct lookup_tables *ternd_load_tables(const struct conf *c)
{
	struct strbuf errs;
	strbuf_init(&errs);
	struct lookup_tables *tab = lookup_load(c->users_file, c->aliases_file, &errs);
	if (tab == NULL)
		fputs(errs.s ? errs.s : "cannot load users/aliases\n", stderr);
	strbuf_free(&errs);
	return tab;
}

/* ternd_raise_nofile - every connection is a descriptor: take all we may */
static unsigned long ternd_raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		struct log_line l;
		log_begin(&l, LOG_LEVEL_INFO, "limits");
		log_kvi(&l, "nofile", (long long)rl.rlim_cur);
		log_end(&l);
		return rl.rlim_cur == RLIM_INFINITY ? 0 : (unsigned long)rl.rlim_cur;
	}
	return 0;
}

static void ternd_on_accept(void *arg, struct listener *l, int fd, const struct sockaddr_storage *peer,
			    socklen_t peerlen)
{
	struct ternd *t = arg;
	conn_accept(&t->srv, fd, listener_kind(l), peer, peerlen);
}

static int ternd_listen_list(struct ternd *t, const struct conf_list *list, int kind)
{
	for (size_t i = 0; i < list->n; i++) {
		char err[512];
		struct listener *l = listener_open(t->base, list->v[i], kind, ternd_on_accept, t, err, sizeof(err));
		if (l == NULL) {
			log_event(LOG_LEVEL_CRIT, "listen_failed", "%s", err);
			return -1;
		}
		t->listeners = xrealloc(t->listeners, (t->nlisteners + 1) * sizeof(*t->listeners));
		t->listeners[t->nlisteners++] = l;
		struct log_line ll;
		log_begin(&ll, LOG_LEVEL_INFO, "listening");
		log_kv(&ll, "addr", list->v[i]);
		log_kv(&ll, "service", smtp_listener_kind_str((enum smtp_listener_kind)kind));
		log_end(&ll);
	}
	return 0;
}

/* ternd_prepare_dirs - the queue, mailboxes and socket directory exist and
 * belong to the user that will run the daemon, owner-only */
static int ternd_prepare_dirs(const struct conf *c, uid_t uid, gid_t gid)
{
	char err[512];
	char sockdir[4096];
	snprintf(sockdir, sizeof(sockdir), "%s", c->control_socket);
	char *slash = strrchr(sockdir, '/');
	if (slash)
		*slash = '\0';
	const char *dirs[] = {c->queue_dir, c->mail_dir, slash ? sockdir : "."};
	for (size_t i = 0; i < 3; i++) {
		if (fs_mkdir_p(dirs[i], 0700, err, sizeof(err)) < 0) {
			log_event(LOG_LEVEL_CRIT, "startup_failed", "%s", err);
			return -1;
		}
		if (geteuid() == 0 && chown(dirs[i], uid, gid) < 0) {
			log_event(LOG_LEVEL_CRIT, "startup_failed", "chown %s: %s", dirs[i], strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* ternd_drop_privileges - started as root: become run_user for good.
 * Listeners are already bound; nothing after this needs root. */
static int ternd_drop_privileges(const struct conf *c)
{
	if (geteuid() != 0)
		return ternd_prepare_dirs(c, geteuid(), getegid());
	struct passwd *pw = getpwnam(c->run_user);
	if (pw == NULL) {
		log_event(LOG_LEVEL_CRIT, "startup_failed",
			  "run_user %s does not exist (create it, e.g. useradd --system %s)", c->run_user,
			  c->run_user);
		return -1;
	}
	if (ternd_prepare_dirs(c, pw->pw_uid, pw->pw_gid) < 0)
		return -1;
	if (pw->pw_uid == 0) {
		/* delivery writes files named by remote input: never as root
		 * unless the operator says so explicitly (tests, benchmarks) */
		if (!c->allow_root) {
			log_event(LOG_LEVEL_CRIT, "startup_failed",
				  "run_user %s is root: refusing to receive and deliver mail as root "
				  "(use an unprivileged user, or allow_root = yes for tests)",
				  c->run_user);
			return -1;
		}
		log_event(LOG_LEVEL_WARN, "running_as_root",
			  "run_user %s is root and allow_root = yes: ternd keeps root privileges", c->run_user);
		return 0;
	}
	if (setgroups(1, &pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
		log_event(LOG_LEVEL_CRIT, "startup_failed", "cannot switch to %s: %s", c->run_user,
			  strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		log_event(LOG_LEVEL_CRIT, "startup_failed", "privileges could be regained after dropping them");
		return -1;
	}
	struct log_line l;
	log_begin(&l, LOG_LEVEL_INFO, "privileges_dropped");
	log_kv(&l, "user", c->run_user);
	log_end(&l);
	return 0;
}

static void ternd_on_idle(struct conn_server *srv);

static void ternd_on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct ternd *t = arg;
	(void)fd;
	(void)what;
	log_event(LOG_LEVEL_WARN, "shutdown_deadline", "sessions still open after 30s; stopping anyway");
	event_base_loopexit(t->base, NULL);
}

/* ternd_stop - SIGTERM/SIGINT: stop accepting, end sessions safely */
static void ternd_stop(struct ternd *t)
{
	if (t->srv.shutting_down)
		return;
	log_event(LOG_LEVEL_INFO, "shutdown", "stopping: no new connections; finishing sessions");
	for (size_t i = 0; i < t->nlisteners; i++)
		listener_close(t->listeners[i]);
	t->nlisteners = 0;
	t->deadline = evtimer_new(t->base, ternd_on_deadline, t);
	struct timeval tv = {30, 0};
	event_add(t->deadline, &tv);
	conn_shutdown_all(&t->srv);
}

static struct ternd *ternd_global; /* for the on_idle callback only */

static void ternd_on_idle(struct conn_server *srv)
{
	(void)srv;
	event_base_loopexit(ternd_global->base, NULL);
}

/* ternd_filter_env - milters and mail authentication for configuration c */
static struct filter_env *ternd_filter_env(struct ternd *t, const struct conf *c, char *err, size_t errlen)
{
	struct filter_env_conf fc = {
		.base = t->base,
		.conf = c,
		.dns = t->dns,
		.queue = t->queue,
		.workers = t->srv.workers,
	};
	return filter_env_new(&fc, err, errlen);
}

/* ternd_reload - SIGHUP: new configuration and tables, or keep the old */
static int ternd_reload(struct ternd *t)
{
	struct conf *c = ternd_load_conf(t);
	if (c == NULL) {
		log_event(LOG_LEVEL_ERR, "reload_failed", "configuration has errors; keeping the running one");
		return -1;
	}
	struct lookup_tables *tab = ternd_load_tables(c);
	if (tab == NULL) {
		log_event(LOG_LEVEL_ERR, "reload_failed", "users or aliases have errors; keeping the running ones");
		conf_free(c);
		free(c);
		return -1;
	}
	char ferr[512];
	struct filter_env *fe = ternd_filter_env(t, c, ferr, sizeof(ferr));
	if (fe == NULL) {
		log_event(LOG_LEVEL_ERR, "reload_failed", "%s; keeping the running configuration", ferr);
		lookup_free(tab);
		conf_free(c);
		free(c);
		return -1;
	}
	struct tls_server *tls = NULL;
	if (c->tls_cert) {
		char err[512];
		tls = tls_server_new(c->tls_cert, c->tls_key, err, sizeof(err));
		if (tls == NULL) {
			log_event(LOG_LEVEL_ERR, "reload_failed", "%s; keeping the running configuration", err);
			filter_env_unref(fe);
			lookup_free(tab);
			conf_free(c);
			free(c);
			return -1;
		}
	}
	/* sessions already under TLS keep their context (refcounted); new
	 * handshakes use the new certificate */
	tls_server_unref(t->srv.tls);
	t->srv.tls = tls;
	lookup_free(t->srv.tables);
	t->srv.tables = tab;
	/* live sessions hold references to the old env (and its milters) */
	filter_env_unref(t->srv.filter_env);
	t->srv.filter_env = fe;
	t->old_confs = xrealloc(t->old_confs, (t->nold + 1) * sizeof(*t->old_confs));
	t->old_confs[t->nold++] = t->conf;
	t->conf = c;
	t->srv.conf = c;
	sched_set_conf(t->sched, c);
	remote_set_conf(t->remote, c);
	dns_set_timeout_s(t->dns, c->dns_timeout);
	log_init("ternd", level_of(c->log_level));
	log_event(LOG_LEVEL_INFO, "reloaded", "configuration and tables reloaded (listeners unchanged)");
	return 0;
}

static int ternd_reload_cb(void *arg)
{
	return ternd_reload(arg);
}

/* ternd_smtp_cb - ternctl sendmail: the control socket hands over a local
 * SMTP connection */
static void ternd_smtp_cb(void *arg, int fd)
{
	struct ternd *t = arg;
	conn_accept_local(&t->srv, fd);
}



static void ternd_on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct ternd *t = arg;
	(void)what;
	if (sig == SIGHUP)
		(void)ternd_reload(t);
	else
		ternd_stop(t);
}

int main(int argc, char **argv)
{
	struct ternd t;
	memset(&t, 0, sizeof(t));
	ternd_global = &t;
	int opt;
	while ((opt = getopt(argc, argv, "c:o:h")) != -1) {
		switch (opt) {
		case 'c':
			t.conf_path = optarg;
			break;
		case 'o':
			t.overrides = xrealloc(t.overrides, (t.noverrides + 1) * sizeof(char *));
			t.overrides[t.noverrides++] = optarg;
			break;
		default:
			usage();
		}
	}
	if (t.conf_path == NULL || optind != argc)
		usage();
	log_init("ternd", LOG_LEVEL_INFO);
	/* a core dump would hold passwords from AUTH and private keys */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	t.conf = ternd_load_conf(&t);
	if (t.conf == NULL)
		return 1;
	log_init("ternd", level_of(t.conf->log_level));
	if (t.conf->smtp_listen.n == 0 && t.conf->submission_listen.n == 0 && t.conf->submissions_listen.n == 0) {
		fprintf(stderr, "%s:0: smtp_listen: no listener configured\n", t.conf_path);
		return 1;
	}
	if ((t.conf->submission_listen.n || t.conf->submissions_listen.n) && t.conf->tls_cert == NULL) {
		/* submission is STARTTLS then AUTH (RFC 6409); AUTH is offered only
		 * under TLS, so without a certificate it could never be used */
		fprintf(stderr, "%s:0: %s: submission needs tls_cert and tls_key\n", t.conf_path,
			t.conf->submission_listen.n ? "submission_listen" : "submissions_listen");
		return 1;
	}

	conn_server_init(&t.srv);
	t.srv.conf = t.conf;
	t.srv.on_idle = ternd_on_idle;
	t.srv.tables = ternd_load_tables(t.conf);
	if (t.srv.tables == NULL)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	t.srv.fd_limit = ternd_raise_nofile();
	if (t.conf->tls_cert) {
		/* read the key while still privileged: it may be readable by root only */
		char terr[512];
		t.srv.tls = tls_server_new(t.conf->tls_cert, t.conf->tls_key, terr, sizeof(terr));
		if (t.srv.tls == NULL) {
			fprintf(stderr, "%s:0: tls_cert: %s\n", t.conf_path, terr);
			return 1;
		}
	}

	t.base = event_base_new();
	if (t.base == NULL) {
		log_event(LOG_LEVEL_CRIT, "startup_failed", "event_base_new failed");
		return 1;
	}
	t.srv.base = t.base;
	if (ternd_listen_list(&t, &t.conf->smtp_listen, SMTP_LISTENER_MX) < 0 ||
	    ternd_listen_list(&t, &t.conf->submission_listen, SMTP_LISTENER_SUBMISSION) < 0 ||
	    ternd_listen_list(&t, &t.conf->submissions_listen, SMTP_LISTENER_SUBMISSIONS) < 0)
		return 1;
	if (ternd_drop_privileges(t.conf) < 0)
		return 1;

	char err[512];
	t.queue = queue_open(t.conf->queue_dir, t.base, err, sizeof(err));
	if (t.queue == NULL) {
		log_event(LOG_LEVEL_CRIT, "startup_failed", "queue: %s", err);
		return 1;
	}
	t.srv.queue = t.queue;
	t.sched = sched_new(t.base, t.conf, t.queue);
	t.srv.sched = t.sched;
	t.remote = remote_new(t.base, t.conf, t.queue, t.sched, err, sizeof(err));
	if (t.remote == NULL) {
		log_event(LOG_LEVEL_CRIT, "startup_failed", "remote delivery: %s", err);
		return 1;
	}
	t.srv.workers = worker_pool_new(t.base, 2);
	t.srv.limits = limits_new(100000);
	t.dns = dns_new(t.base, t.conf->dns_resolver, err, sizeof(err));
	if (t.dns == NULL) {
		log_event(LOG_LEVEL_CRIT, "startup_failed", "resolver: %s", err);
		return 1;
	}
	dns_set_timeout_s(t.dns, t.conf->dns_timeout); /* also for SPF, DKIM and DMARC */
	t.srv.filter_env = ternd_filter_env(&t, t.conf, err, sizeof(err));
	if (t.srv.filter_env == NULL) {
		fprintf(stderr, "%s:0: %s\n", t.conf_path, err);
		return 1;
	}
	if (sched_recover(t.sched, err, sizeof(err)) < 0) {
		log_event(LOG_LEVEL_CRIT, "startup_failed", "queue recovery: %s", err);
		return 1;
	}
	t.control = control_start(t.base, t.conf->control_socket, t.sched, err, sizeof(err));
	if (t.control == NULL) {
		log_event(LOG_LEVEL_CRIT, "startup_failed", "control socket: %s", err);
		return 1;
	}
	control_set_reload(t.control, ternd_reload_cb, &t);
	control_set_smtp_handler(t.control, ternd_smtp_cb, &t);
	t.sig_term = evsignal_new(t.base, SIGTERM, ternd_on_signal, &t);
	t.sig_int = evsignal_new(t.base, SIGINT, ternd_on_signal, &t);
	t.sig_hup = evsignal_new(t.base, SIGHUP, ternd_on_signal, &t);
	event_add(t.sig_term, NULL);
	event_add(t.sig_int, NULL);
	event_add(t.sig_hup, NULL);

	struct log_line l;
	log_begin(&l, LOG_LEVEL_INFO, "started");
	log_kv(&l, "hostname", t.conf->hostname);
	log_kvi(&l, "pid", (long long)getpid());
	log_end(&l);

	event_base_dispatch(t.base);
	filter_env_unref(t.srv.filter_env); /* sessions still open keep theirs */
	t.srv.filter_env = NULL;
	remote_free(t.remote);
	worker_pool_free(t.srv.workers);
	limits_free(t.srv.limits);

	/* orderly end: sessions are gone; finish deliveries, release all */
	sched_drain(t.sched);
	control_stop(t.control);
	for (size_t i = 0; i < t.nlisteners; i++)
		listener_close(t.listeners[i]);
	free(t.listeners);
	sched_free(t.sched);
	queue_close(t.queue);
	lookup_free(t.srv.tables);
	tls_server_unref(t.srv.tls);
	conn_server_fini(&t.srv);
	dns_free(t.dns);
	event_free(t.sig_term);
	event_free(t.sig_int);
	event_free(t.sig_hup);
	if (t.deadline)
		event_free(t.deadline);
	event_base_free(t.base);
	for (size_t i = 0; i < t.nold; i++) {
		conf_free(t.old_confs[i]);
		free(t.old_confs[i]);
	}
	free(t.old_confs);
	conf_free(t.conf);
	free(t.conf);
	free(t.overrides);
	log_event(LOG_LEVEL_INFO, "stopped", "ternd exited cleanly");
	return t.exit_code;
}
