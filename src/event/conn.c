/*
 * conn - socket I/O, timers and limits around one smtp_session.
 * See conn.h. The session is a pure state machine; this file is the only
 * place that reads and writes client sockets for plain-text SMTP. The
 * session's policy operations (stage_check, txn_end, the content and the
 * commit) go to the connection's filter (policy/filter.h: milters, mail
 * authentication), which answers the session itself and calls
 * conn_filter_resume when it did so from an event.
 */
#include "event/conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/netaddr.h"
#include "core/xalloc.h"
#include "lookup/lookup.h"
#include "queue/queue.h"
#include "sched/sched.h"
#include "smtp/smtp_reply.h"
#include "smtp/smtp_server.h"
#include "tls/tls.h"
#include "tls/tls_io.h"
#include "auth/passwd.h"
#include "event/worker.h"
#include "policy/filter.h"
#include "policy/limits.h"
#include <openssl/crypto.h>
#include <time.h>

#define CONN_READ_CHUNK 16384
/* stop reading from a client that does not read our replies */
#define CONN_OUT_HIGH_WATER (256 * 1024)
/* stop reading message content while a milter lags this far behind, and
 * look again after CONN_BACKLOG_POLL_MS (the milter client has no "drained"
 * callback) */
#define CONN_MILTER_HIGH_WATER (1024 * 1024)
#define CONN_BACKLOG_POLL_MS 50

struct conn {
	struct conn_server *srv;
	struct conn *prev, *next;
	int fd;                  /* -1 once closed */
	int kind;
	char id[24];
	char addr[64];
	const struct conf *conf; /* the configuration this session started with */
	struct smtp_session *session;
	struct filter *filter;   /* milters and mail authentication (policy/filter.h) */
	struct event *rev, *wev, *timer, *greet;
	struct event *backlog;   /* re-check a milter's backlog (CONN_MILTER_HIGH_WATER) */
	int lagging;             /* not reading while a milter lags */
	struct strbuf out;
	size_t out_off;
	int reading;
	int close_requested;
	int auth_pending;        /* a password check is in flight: keep the session */
	struct event *auth_timer; /* the delay before a failed AUTH is answered */
	int started;
	/* TLS: the same read/write interface for TCP and TLS (conn_io_*) */
	struct tls_server *tls;  /* context this connection's SSL came from */
	SSL *ssl;
	int handshaking;         /* SSL_accept in progress */
	int starttls_pending;    /* 220 queued: start TLS once it is sent */
	int ssl_want_write;      /* the last SSL call needs the socket writable */
	char tls_desc[96];       /* "TLSv1.3 TLS_AES_256_GCM_SHA384" */
};

/* ---- per-address connection counts ---- */

#define IPTAB_BUCKETS 4096

struct iptab_entry {
	struct iptab_entry *next;
	size_t count;
	char addr[64];
};

struct conn_iptab {
	struct iptab_entry *b[IPTAB_BUCKETS];
};

static unsigned iptab_hash(const char *s)
{
	unsigned h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h % IPTAB_BUCKETS;
}

/* iptab_adjust - add delta to addr's count; returns the new count */
static size_t iptab_adjust(struct conn_iptab *t, const char *addr, int delta)
{
	struct iptab_entry **pp = &t->b[iptab_hash(addr)];
	for (; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->addr, addr) == 0)
			break;
	if (*pp == NULL) {
		if (delta <= 0)
			return 0;
		struct iptab_entry *e = xcalloc(1, sizeof(*e));
		snprintf(e->addr, sizeof(e->addr), "%s", addr);
		*pp = e;
	}
	struct iptab_entry *e = *pp;
	if (delta < 0 && e->count > 0)
		e->count--;
	else if (delta > 0)
		e->count++;
	size_t n = e->count;
	if (n == 0) {
		*pp = e->next;
		free(e);
	}
	return n;
}

static size_t iptab_get(struct conn_iptab *t, const char *addr)
{
	for (struct iptab_entry *e = t->b[iptab_hash(addr)]; e; e = e->next)
		if (strcmp(e->addr, addr) == 0)
			return e->count;
	return 0;
}

void conn_server_init(struct conn_server *srv)
{
	memset(srv, 0, sizeof(*srv));
	srv->iptab = xcalloc(1, sizeof(*srv->iptab));
}

void conn_server_fini(struct conn_server *srv)
{
	for (size_t i = 0; i < IPTAB_BUCKETS; i++) {
		struct iptab_entry *e = srv->iptab->b[i];
		while (e) {
			struct iptab_entry *n = e->next;
			free(e);
			e = n;
		}
	}
	free(srv->iptab);
	srv->iptab = NULL;
}

/* ---- connection lifetime ---- */

static void conn_update(struct conn *c);
static void conn_on_backlog(evutil_socket_t fd, short what, void *arg);
static int conn_tls_begin(struct conn *c);
static void conn_tls_failed(struct conn *c, const char *why);

/* conn_free - release everything; the session and all its memory go at once */
static void conn_free(struct conn *c)
{
	struct conn_server *srv = c->srv;
	/* the filter first: it may still name the session in a log line */
	filter_free(c->filter);
	if (c->session)
		smtp_session_free(c->session);
	if (c->rev)
		event_free(c->rev);
	if (c->wev)
		event_free(c->wev);
	if (c->timer)
		event_free(c->timer);
	if (c->greet)
		event_free(c->greet);
	if (c->backlog)
		event_free(c->backlog);
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->tls)
		tls_server_unref(c->tls);
	if (c->fd >= 0)
		close(c->fd);
	strbuf_free(&c->out);
	iptab_adjust(srv->iptab, c->addr, -1);
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->nconns--;
	free(c);
	if (srv->shutting_down && srv->nconns == 0 && srv->on_idle)
		srv->on_idle(srv);
}

/* conn_close_socket - stop all I/O; the conn may live on for a commit */
static void conn_close_socket(struct conn *c)
{
	if (c->fd < 0)
		return;
	event_del(c->rev);
	event_del(c->wev);
	event_del(c->timer);
	if (c->greet)
		event_del(c->greet);
	close(c->fd);
	c->fd = -1;
}

/* conn_io_read - read from TCP or TLS: >0 bytes, 0 end, -1 with errno
 * (EAGAIN when nothing can be read now) */
static ssize_t conn_io_read(struct conn *c, char *buf, size_t n)
{
	return tls_io_read(c->ssl, c->fd, buf, n, &c->ssl_want_write);
}

/* conn_io_write - write to TCP or TLS: bytes written, or -1 with errno */
static ssize_t conn_io_write(struct conn *c, const char *p, size_t n)
{
	return tls_io_write(c->ssl, c->fd, p, n);
}

/* conn_flush - write as much pending output as the socket takes; -1 on error */
static int conn_flush(struct conn *c)
{
	if (c->fd < 0) {
		strbuf_reset(&c->out);
		c->out_off = 0;
		return -1;
	}
	while (c->out_off < c->out.len) {
		ssize_t w = conn_io_write(c, c->out.s + c->out_off, c->out.len - c->out_off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				event_add(c->wev, NULL);
				return 0;
			}
			return -1;
		}
		c->out_off += (size_t)w;
	}
	strbuf_reset(&c->out);
	c->out_off = 0;
	if (!c->ssl_want_write && !c->handshaking)
		event_del(c->wev);
	return 0;
}

/* conn_update - after any call into the session: flush, close, re-arm */
static void conn_update(struct conn *c)
{
	if (conn_flush(c) < 0 && c->fd >= 0) {
		conn_close_socket(c);
		smtp_session_eof(c->session);
	}
	int pending_out = c->out.len > c->out_off;
	if (c->close_requested && !pending_out)
		conn_close_socket(c);
	/* a policy check or an end of message (the queue commit with it)
	 * in flight keeps the session, like a password check */
	int waiting = c->auth_pending || filter_busy(c->filter);
	if (c->fd < 0) {
		if (!waiting)
			conn_free(c);
		return;
	}
	if (c->starttls_pending && !pending_out) {
		c->starttls_pending = 0;
		if (conn_tls_begin(c) < 0)
			conn_tls_failed(c, "cannot start TLS");
		return; /* the handshake path re-arms (or frees) the connection */
	}
	int lagging = filter_backlog(c->filter) > CONN_MILTER_HIGH_WATER;
	int want = c->started && !c->close_requested && !c->starttls_pending &&
		   smtp_session_wants_input(c->session) &&
		   (c->out.len - c->out_off) < CONN_OUT_HIGH_WATER && !lagging;
	if (lagging != c->lagging) {
		struct log_line l;
		log_begin(&l, LOG_LEVEL_DEBUG, lagging ? "milter_backlog_pause" : "milter_backlog_resume");
		log_kv(&l, "session", c->id);
		log_kvi(&l, "backlog", (long long)filter_backlog(c->filter));
		log_end(&l);
		c->lagging = lagging;
	}
	if (lagging && !c->handshaking) {
		if (c->backlog == NULL)
			c->backlog = evtimer_new(c->srv->base, conn_on_backlog, c);
		struct timeval btv = {0, CONN_BACKLOG_POLL_MS * 1000};
		if (c->backlog)
			event_add(c->backlog, &btv);
	}
	if (c->handshaking)
		want = 1;
	if (want && !c->reading)
		event_add(c->rev, NULL);
	else if (!want && c->reading)
		event_del(c->rev);
	c->reading = want;
	/* decrypted bytes already inside OpenSSL do not make the socket readable */
	if (want && c->ssl && !c->handshaking && SSL_pending(c->ssl) > 0)
		event_active(c->rev, EV_READ, 0);
	if (c->ssl_want_write)
		event_add(c->wev, NULL);
	if (c->started && !waiting) {
		struct timeval tv = {(time_t)smtp_session_timeout_secs(c->session), 0};
		event_add(c->timer, &tv);
	} else if (waiting) {
		event_del(c->timer); /* the checks have their own deadlines */
	}
}

static void conn_handshake(struct conn *c);

/* conn_on_backlog - a milter was lagging: read again once it caught up */
static void conn_on_backlog(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_update(arg);
}

static void conn_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	char buf[CONN_READ_CHUNK];
	(void)what;
	(void)fd;
	if (c->handshaking) {
		conn_handshake(c);
		return;
	}
	if (c->ssl_want_write) {
		conn_update(c);
		return;
	}
	ssize_t n = conn_io_read(c, buf, sizeof(buf));
	if (n > 0) {
		smtp_session_input(c->session, buf, (size_t)n);
	} else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
		conn_close_socket(c);
		smtp_session_eof(c->session);
	}
	conn_update(c);
}

static void conn_on_write(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)fd;
	(void)what;
	if (c->handshaking) {
		conn_handshake(c);
		return;
	}
	if (c->ssl_want_write) {
		/* an SSL_read was waiting for the socket to be writable */
		c->ssl_want_write = 0;
		event_del(c->wev);
		conn_on_read(c->fd, EV_READ, c);
		return;
	}
	conn_update(c);
}

/* conn_tls_failed - a handshake that fails harms nobody else: log, close */
static void conn_tls_failed(struct conn *c, const char *why)
{
	struct log_line l;
	log_begin(&l, LOG_LEVEL_WARN, "tls_failed");
	log_kv(&l, "session", c->id);
	log_kv(&l, "client", c->addr);
	log_kv(&l, "reason", why);
	log_end(&l);
	c->handshaking = 0;
	conn_close_socket(c);
	smtp_session_eof(c->session);
	conn_update(c);
}

/* conn_handshake - drive SSL_accept; on success the session starts over
 * (implicit TLS: greeting; STARTTLS: a fresh session, EHLO again) */
static void conn_handshake(struct conn *c)
{
	char why[256];
	switch (tls_io_handshake(c->ssl, why, sizeof(why))) {
	case TLS_IO_WANT_READ:
		event_del(c->wev);
		return;
	case TLS_IO_WANT_WRITE:
		event_add(c->wev, NULL);
		return;
	case TLS_IO_FAILED:
		conn_tls_failed(c, why);
		return;
	case TLS_IO_DONE:
		break;
	}
	c->handshaking = 0;
	event_del(c->wev);
	tls_describe(c->ssl, c->tls_desc, sizeof(c->tls_desc));
	if (!c->started) {
		/* implicit TLS; after STARTTLS the session logs it */
		struct log_line l;
		log_begin(&l, LOG_LEVEL_INFO, "tls");
		log_kv(&l, "session", c->id);
		log_kv(&l, "client", c->addr);
		log_kv(&l, "tls", c->tls_desc);
		log_end(&l);
		c->started = 1;
		smtp_session_start(c->session, 0);
	} else {
		smtp_session_tls_done(c->session, c->tls_desc);
	}
	conn_update(c);
}

/* conn_tls_begin - wrap the socket in TLS and start the handshake */
static int conn_tls_begin(struct conn *c)
{
	struct tls_server *t = c->srv->tls;
	if (t == NULL)
		return -1;
	c->ssl = tls_server_ssl(t, c->fd);
	if (c->ssl == NULL)
		return -1;
	tls_server_ref(t);
	c->tls = t;
	c->handshaking = 1;
	event_del(c->timer);
	struct timeval tv = {(time_t)c->conf->command_timeout, 0};
	event_add(c->timer, &tv);
	event_add(c->rev, NULL);
	c->reading = 1;
	conn_handshake(c);
	return 0;
}

static void conn_on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)fd;
	(void)what;
	if (c->auth_pending || filter_busy(c->filter))
		return;
	if (c->handshaking) {
		conn_tls_failed(c, "handshake timeout");
		return;
	}
	smtp_session_timeout(c->session);
	conn_update(c);
}

/* conn_on_greet - the greeting pause is over: did the client talk first? */
static void conn_on_greet(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)fd;
	(void)what;
	char b;
	ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	c->started = 1;
	smtp_session_start(c->session, n > 0);
	conn_update(c);
}

/* ---- the session's effects ---- */

static void conn_op_write(void *ctx, const char *p, size_t n)
{
	struct conn *c = ctx;
	if (c->fd < 0)
		return;
	strbuf_add(&c->out, p, n);
}

/* conn_op_starttls - the session sent 220 and dropped everything it had
 * buffered (RFC 3207 5, CVE-2011-0411): flush the 220 in plaintext, then
 * hand the socket to TLS; bytes still in the socket are the handshake */
static void conn_op_starttls(void *ctx)
{
	struct conn *c = ctx;
	/* called from inside the session: act in conn_update, after it returns */
	c->starttls_pending = 1;
}

static void conn_op_close(void *ctx)
{
	struct conn *c = ctx;
	c->close_requested = 1;
}

static enum smtp_rcpt_verdict conn_op_rcpt_check(void *ctx, const struct smtp_path *rcpt, int may_relay,
						 struct envelope *env, const char *orcpt, unsigned notify)
{
	struct conn *c = ctx;
	return lookup_rcpt(c->srv->tables, c->srv->conf, rcpt, may_relay, env, orcpt, notify);
}

static struct queue_file *conn_op_msg_open(void *ctx, struct envelope *env)
{
	struct conn *c = ctx;
	char err[256];
	struct queue_file *f = queue_file_create(c->srv->queue, env, err, sizeof(err));
	if (f == NULL) {
		int e = errno;
		struct log_line l;
		log_begin(&l, LOG_LEVEL_ERR, "queue_error");
		log_kv(&l, "session", c->id);
		log_kv(&l, "error", err);
		log_end(&l);
		errno = e;
	}
	return f;
}

/* conn_op_msg_write - the content to the filter (milters, DKIM hashes)
 * and to the queue file */
static int conn_op_msg_write(void *ctx, struct queue_file *f, const char *p, size_t n)
{
	struct conn *c = ctx;
	filter_write(c->filter, p, n);
	if (queue_file_write(f, p, n) < 0) {
		errno = queue_file_errno(f);
		return -1;
	}
	return 0;
}

/* conn_op_msg_commit - end of data: the filter runs the end-of-message
 * checks and edits, commits the queue file and answers the session */
static void conn_op_msg_commit(void *ctx, struct queue_file *f, struct smtp_session *s)
{
	struct conn *c = ctx;
	event_del(c->timer);
	filter_commit(c->filter, f, s);
}

/* conn_op_stage_check - the policy checks of a stage (policy/filter.c) */
static void conn_op_stage_check(void *ctx, enum smtp_stage stage, struct smtp_session *s)
{
	struct conn *c = ctx;
	filter_stage(c->filter, stage, s);
}

/* conn_op_txn_end - the transaction is over: the filter forgets it */
static void conn_op_txn_end(void *ctx, struct smtp_session *s)
{
	struct conn *c = ctx;
	(void)s;
	filter_txn_end(c->filter);
}

/* conn_filter_resume - the filter answered the session from an event:
 * flush its replies, re-arm reading (may free the connection) */
static void conn_filter_resume(void *arg)
{
	conn_update(arg);
}

static void conn_op_msg_abort(void *ctx, struct queue_file *f)
{
	(void)ctx;
	queue_file_abort(f);
}

static void conn_op_msg_accepted(void *ctx, const struct envelope *env)
{
	struct conn *c = ctx;
	sched_submit(c->srv->sched, env);
}

/* ---- AUTH: password checks on a worker thread ---- */

struct conn_auth_job {
	struct conn *c;
	char user[256];
	char password[256];
	char *stored;   /* the account's hash, copied on the loop thread */
	char account[256];
	int ok;
};

/* conn_auth_work - worker thread: the slow hash, same cost for unknown users */
static void conn_auth_work(void *arg)
{
	struct conn_auth_job *j = arg;
	j->ok = passwd_verify(j->stored, j->password);
	OPENSSL_cleanse(j->password, sizeof(j->password));
}

static void conn_auth_finish(struct conn *c, struct conn_auth_job *j, int result)
{
	c->auth_pending = 0;
	smtp_session_auth_done(c->session, result, result == SMTP_AUTH_OK ? j->account : NULL);
	free(j->stored);
	OPENSSL_cleanse(j, sizeof(*j));
	free(j);
	conn_update(c);
}

static void conn_auth_delayed(evutil_socket_t fd, short what, void *arg);

/* conn_auth_done - loop thread: answer now, or after the failure delay */
static void conn_auth_done(void *arg)
{
	struct conn_auth_job *j = arg;
	struct conn *c = j->c;
	if (j->ok) {
		limits_auth_success(c->srv->limits, c->addr);
		conn_auth_finish(c, j, SMTP_AUTH_OK);
		return;
	}
	/* slow the next guess down; the address, not the account, pays */
	unsigned delay = limits_auth_failure(c->srv->limits, c->addr, time(NULL), c->conf->auth_lockout);
	struct event *ev = evtimer_new(c->srv->base, conn_auth_delayed, j);
	struct timeval tv = {(time_t)delay, 0};
	evtimer_add(ev, &tv);
	c->auth_timer = ev;
}

static void conn_auth_delayed(evutil_socket_t fd, short what, void *arg)
{
	struct conn_auth_job *j = arg;
	struct conn *c = j->c;
	(void)fd;
	(void)what;
	event_free(c->auth_timer);
	c->auth_timer = NULL;
	int locked = limits_auth_locked(c->srv->limits, c->addr, time(NULL), c->conf->auth_max_failures,
					c->conf->auth_lockout);
	conn_auth_finish(c, j, locked ? SMTP_AUTH_LOCKED : SMTP_AUTH_FAIL);
}

static void conn_op_auth_check(void *ctx, const char *user, const char *password, struct smtp_session *s)
{
	struct conn *c = ctx;
	(void)s;
	if (limits_auth_locked(c->srv->limits, c->addr, time(NULL), c->conf->auth_max_failures,
			       c->conf->auth_lockout)) {
		smtp_session_auth_done(c->session, SMTP_AUTH_LOCKED, NULL);
		return;
	}
	struct conn_auth_job *j = calloc(1, sizeof(*j));
	if (j == NULL || strlen(user) >= sizeof(j->user) || strlen(password) >= sizeof(j->password)) {
		free(j);
		smtp_session_auth_done(c->session, j ? SMTP_AUTH_FAIL : SMTP_AUTH_TEMPFAIL, NULL);
		return;
	}
	j->c = c;
	snprintf(j->user, sizeof(j->user), "%s", user);
	snprintf(j->password, sizeof(j->password), "%s", password);
	const char *at = strrchr(user, '@');
	const char *acct = NULL;
	if (at) {
		char local[256];
		snprintf(local, sizeof(local), "%.*s", (int)(at - user), user);
		acct = lookup_user(c->srv->tables, local, at + 1);
	}
	const char *stored = acct ? lookup_password_hash(c->srv->tables, acct) : NULL;
	j->stored = stored ? strdup(stored) : NULL;
	snprintf(j->account, sizeof(j->account), "%s", acct ? acct : "");
	c->auth_pending = 1;
	if (worker_submit(c->srv->workers, conn_auth_work, conn_auth_done, j) < 0) {
		c->auth_pending = 0;
		OPENSSL_cleanse(j->password, sizeof(j->password));
		free(j->stored);
		free(j);
		smtp_session_auth_done(c->session, SMTP_AUTH_TEMPFAIL, NULL);
	}
}

static int conn_op_sender_check(void *ctx, const char *account, const struct smtp_path *from)
{
	struct conn *c = ctx;
	return lookup_sender_owned(c->srv->tables, account, from->addr);
}

static int conn_op_rate_check(void *ctx, const char *account)
{
	struct conn *c = ctx;
	time_t now = time(NULL);
	char key[320];
	if (account && c->conf->rate_limit_user) {
		snprintf(key, sizeof(key), "user:%s", account);
		if (limits_rate_take(c->srv->limits, key, now, c->conf->rate_limit_user))
			return 1;
	}
	if (c->conf->rate_limit_ip && strcmp(c->addr, "local") != 0) {
		snprintf(key, sizeof(key), "ip:%s", c->addr);
		if (limits_rate_take(c->srv->limits, key, now, c->conf->rate_limit_ip))
			return 1;
	}
	return 0;
}

/* conn_op_input_pending - bytes waiting in the socket (plain SMTP; with
 * TLS the socket holds records, not what the client said) */
static int conn_op_input_pending(void *ctx)
{
	struct conn *c = ctx;
	char b;
	return c->fd >= 0 && !c->tls && recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

static const struct smtp_server_ops conn_ops = {
	.write = conn_op_write,
	.close = conn_op_close,
	.rcpt_check = conn_op_rcpt_check,
	.msg_open = conn_op_msg_open,
	.msg_write = conn_op_msg_write,
	.msg_commit = conn_op_msg_commit,
	.msg_abort = conn_op_msg_abort,
	.msg_accepted = conn_op_msg_accepted,
	.starttls = conn_op_starttls,
	.auth_check = conn_op_auth_check,
	.sender_check = conn_op_sender_check,
	.rate_check = conn_op_rate_check,
	.stage_check = conn_op_stage_check,
	.txn_end = conn_op_txn_end,
	.input_pending = conn_op_input_pending,
};

/* conn_refuse - answer a connection we will not serve, and close it */
static void conn_refuse(int fd, enum smtp_reply_id id, const char *addr, const char *why)
{
	struct strbuf sb;
	strbuf_init(&sb);
	smtp_reply_add(&sb, id, NULL);
	ssize_t w = send(fd, sb.s, sb.len, MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)w;
	strbuf_free(&sb);
	close(fd);
	struct log_line l;
	log_begin(&l, LOG_LEVEL_WARN, "connection_refused");
	log_kv(&l, "client", addr);
	log_kv(&l, "reason", why);
	log_end(&l);
}

/* conn_fd_reserve - descriptors kept free for work on accepted sessions */
static unsigned long conn_fd_reserve(unsigned long limit)
{
	return limit >= 1024 ? 128 : limit / 4;
}

/* conn_start - checks limits, then a session for the socket */
static void conn_start(struct conn_server *srv, int fd, int kind, const char *addr, unsigned short port,
		       int trusted)
{
	const struct conf *conf = srv->conf;
	if (srv->shutting_down) {
		conn_refuse(fd, SMTP_R_SHUTDOWN, addr, "shutting down");
		return;
	}
	/* keep descriptors back for the queue files, Maildirs and outbound
	 * connections that accepted sessions will need: past the mark, new
	 * clients get 421 rather than starving the ones already in */
	if (srv->fd_limit > 0 && (unsigned long)fd >= srv->fd_limit - conn_fd_reserve(srv->fd_limit)) {
		conn_refuse(fd, SMTP_R_TOO_MANY_CONNS, addr, "file descriptors reserved");
		return;
	}
	if (srv->nconns >= conf->max_connections) {
		conn_refuse(fd, SMTP_R_TOO_MANY_CONNS, addr, "max_connections");
		return;
	}
	if (iptab_get(srv->iptab, addr) >= conf->max_connections_per_ip) {
		conn_refuse(fd, SMTP_R_TOO_MANY_CONNS, addr, "max_connections_per_ip");
		return;
	}
	struct conn *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		conn_refuse(fd, SMTP_R_NO_MEMORY, addr, "out of memory");
		return;
	}
	c->srv = srv;
	c->fd = fd;
	c->kind = kind;
	c->conf = conf;
	snprintf(c->addr, sizeof(c->addr), "%s", addr);
	snprintf(c->id, sizeof(c->id), "%llx", ++srv->next_id);
	strbuf_init(&c->out);
	struct smtp_client_info info = {
		.addr = c->addr,
		.name = NULL,
		.kind = (enum smtp_listener_kind)kind,
		.trusted = trusted,
		.tls = kind == SMTP_LISTENER_SUBMISSIONS,
		.tls_available = srv->tls != NULL,
		.hide_client = (int)conf->hide_client_address,
		.session_id = c->id,
	};
	struct filter_client fc = {
		.addr = c->addr,
		.port = port,
		.name = NULL,
		.session_id = c->id,
		.local = strcmp(addr, "local") == 0 && port == 0,
	};
	c->filter = srv->filter_env ? filter_new(srv->filter_env, &fc, conn_filter_resume, c) : NULL;
	c->session = c->filter ? smtp_session_new(conf, &info, &conn_ops, c) : NULL;
	if (c->session == NULL) {
		filter_free(c->filter);
		free(c);
		conn_refuse(fd, SMTP_R_NO_MEMORY, addr, srv->filter_env ? "out of memory" : "no filter");
		return;
	}
	c->rev = event_new(srv->base, fd, EV_READ | EV_PERSIST, conn_on_read, c);
	c->wev = event_new(srv->base, fd, EV_WRITE | EV_PERSIST, conn_on_write, c);
	c->timer = evtimer_new(srv->base, conn_on_timeout, c);
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	srv->nconns++;
	iptab_adjust(srv->iptab, c->addr, +1);


	if (kind == SMTP_LISTENER_SUBMISSIONS) {
		/* implicit TLS (RFC 8314): handshake first, greeting after */
		if (conn_tls_begin(c) < 0)
			conn_tls_failed(c, "cannot start TLS");
		return;
	}
	if (conf->greet_pause > 0) {
		/* do not read during the pause: what the client sends stays in the
		 * kernel buffer, where the greeting check can see it */
		c->greet = evtimer_new(srv->base, conn_on_greet, c);
		struct timeval tv = {(time_t)conf->greet_pause, 0};
		event_add(c->greet, &tv);
		return;
	}
	/* even without a pause, bytes already waiting at accept were sent
	 * before any greeting could have reached the client */
	char b;
	ssize_t early = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	c->started = 1;
	smtp_session_start(c->session, early > 0);
	conn_update(c);
}

void conn_accept(struct conn_server *srv, int fd, int kind, const struct sockaddr_storage *peer,
		 socklen_t peerlen)
{
	(void)peerlen;
	char addr[64];
	netaddr_str(peer, addr, sizeof(addr));
	unsigned short port = 0;
	if (peer->ss_family == AF_INET)
		port = ntohs(((const struct sockaddr_in *)peer)->sin_port);
	else if (peer->ss_family == AF_INET6)
		port = ntohs(((const struct sockaddr_in6 *)peer)->sin6_port);
	conn_start(srv, fd, kind, addr, port, netaddr_in_list(&srv->conf->mynetworks, peer));
}

void conn_accept_local(struct conn_server *srv, int fd)
{
	/* the control socket only admits our own uid or root (control.c):
	 * local programs may send anywhere, like mynetworks */
	conn_start(srv, fd, SMTP_LISTENER_MX, "local", 0, 1);
}

void conn_shutdown_all(struct conn_server *srv)
{
	srv->shutting_down = 1;
	struct conn *c = srv->conns;
	if (c == NULL && srv->on_idle) {
		srv->on_idle(srv);
		return;
	}
	while (c) {
		struct conn *next = c->next;
		if (c->handshaking) {
			conn_tls_failed(c, "server shutting down"); /* frees c */
			c = next;
			continue;
		}
		if (!c->started) {
			c->started = 1;
			if (c->greet)
				event_del(c->greet);
		}
		smtp_session_shutdown(c->session);
		conn_update(c); /* may free c */
		c = next;
	}
}
