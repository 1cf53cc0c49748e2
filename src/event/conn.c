/*
 * conn - socket I/O, timers and limits around one smtp_session.
 * See conn.h. The session is a pure state machine; this file is the only
 * place that reads and writes client sockets for plain-text SMTP.
 */
#include "event/conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/netaddr.h"
#include "core/xalloc.h"
#include "lookup/lookup.h"
#include "queue/queue.h"
#include "sched/sched.h"
#include "smtp/smtp_reply.h"
#include "smtp/smtp_server.h"

#define CONN_READ_CHUNK 16384
/* stop reading from a client that does not read our replies */
#define CONN_OUT_HIGH_WATER (256 * 1024)

struct conn {
	struct conn_server *srv;
	struct conn *prev, *next;
	int fd;                  /* -1 once closed */
	int kind;
	char id[24];
	char addr[64];
	const struct conf *conf; /* the configuration this session started with */
	struct smtp_session *session;
	struct event *rev, *wev, *timer, *greet;
	struct strbuf out;
	size_t out_off;
	int reading;
	int close_requested;
	int commit_pending;      /* a queue commit is in flight: keep the session */
	int started;
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

/* conn_free - release everything; the session and all its memory go at once */
static void conn_free(struct conn *c)
{
	struct conn_server *srv = c->srv;
	struct log_line l;
	log_begin(&l, LOG_LEVEL_INFO, "disconnect");
	log_kv(&l, "session", c->id);
	log_kv(&l, "client", c->addr);
	log_end(&l);
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

/* conn_flush - write as much pending output as the socket takes; -1 on error */
static int conn_flush(struct conn *c)
{
	if (c->fd < 0) {
		strbuf_reset(&c->out);
		c->out_off = 0;
		return -1;
	}
	while (c->out_off < c->out.len) {
		ssize_t w = send(c->fd, c->out.s + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
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
	event_del(c->wev);
	return 0;
}

/* conn_update - after any call into the session: flush, close, re-arm */
static void conn_update(struct conn *c)
{
	if (conn_flush(c) < 0 && c->fd >= 0) {
		conn_close_socket(c);
		if (!c->commit_pending)
			smtp_session_eof(c->session);
	}
	int pending_out = c->out.len > c->out_off;
	if (c->close_requested && !pending_out)
		conn_close_socket(c);
	if (c->fd < 0) {
		if (!c->commit_pending)
			conn_free(c);
		return;
	}
	int want = c->started && !c->close_requested && smtp_session_wants_input(c->session) &&
		   (c->out.len - c->out_off) < CONN_OUT_HIGH_WATER;
	if (want && !c->reading)
		event_add(c->rev, NULL);
	else if (!want && c->reading)
		event_del(c->rev);
	c->reading = want;
	if (c->started && !c->commit_pending) {
		struct timeval tv = {(time_t)smtp_session_timeout_secs(c->session), 0};
		event_add(c->timer, &tv);
	}
}

static void conn_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	char buf[CONN_READ_CHUNK];
	(void)what;
	ssize_t n = recv(fd, buf, sizeof(buf), 0);
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
	(void)fd;
	(void)what;
	conn_update(arg);
}

static void conn_on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)fd;
	(void)what;
	if (c->commit_pending)
		return;
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

static int conn_op_msg_write(void *ctx, struct queue_file *f, const char *p, size_t n)
{
	(void)ctx;
	if (queue_file_write(f, p, n) < 0) {
		errno = queue_file_errno(f);
		return -1;
	}
	return 0;
}

/* conn_on_commit - the queue says the message is (or is not) durable */
static void conn_on_commit(void *arg, int status, const char *reason)
{
	struct conn *c = arg;
	int e = status == 0 ? 0 : errno;
	c->commit_pending = 0;
	smtp_session_commit_done(c->session, status, e, reason);
	conn_update(c);
}

static void conn_op_msg_commit(void *ctx, struct queue_file *f, struct smtp_session *s)
{
	struct conn *c = ctx;
	(void)s;
	c->commit_pending = 1;
	event_del(c->timer);
	queue_file_commit(f, conn_on_commit, c);
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

static const struct smtp_server_ops conn_ops = {
	.write = conn_op_write,
	.close = conn_op_close,
	.rcpt_check = conn_op_rcpt_check,
	.msg_open = conn_op_msg_open,
	.msg_write = conn_op_msg_write,
	.msg_commit = conn_op_msg_commit,
	.msg_abort = conn_op_msg_abort,
	.msg_accepted = conn_op_msg_accepted,
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

void conn_accept(struct conn_server *srv, int fd, int kind, const struct sockaddr_storage *peer,
		 socklen_t peerlen)
{
	(void)peerlen;
	const struct conf *conf = srv->conf;
	char addr[64];
	netaddr_str(peer, addr, sizeof(addr));
	if (srv->shutting_down) {
		conn_refuse(fd, SMTP_R_SHUTDOWN, addr, "shutting down");
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
		.trusted = netaddr_in_list(&conf->mynetworks, peer),
		.tls = 0,
		.session_id = c->id,
	};
	c->session = smtp_session_new(conf, &info, &conn_ops, c);
	if (c->session == NULL) {
		free(c);
		conn_refuse(fd, SMTP_R_NO_MEMORY, addr, "out of memory");
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

	struct log_line l;
	log_begin(&l, LOG_LEVEL_INFO, "connect");
	log_kv(&l, "session", c->id);
	log_kv(&l, "client", c->addr);
	log_kv(&l, "service", smtp_listener_kind_str((enum smtp_listener_kind)kind));
	log_kvi(&l, "trusted", info.trusted);
	log_end(&l);

	if (conf->greet_pause > 0) {
		/* do not read during the pause: what the client sends stays in the
		 * kernel buffer, where the greeting check can see it */
		c->greet = evtimer_new(srv->base, conn_on_greet, c);
		struct timeval tv = {(time_t)conf->greet_pause, 0};
		event_add(c->greet, &tv);
		return;
	}
	c->started = 1;
	smtp_session_start(c->session, 0);
	conn_update(c);
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
