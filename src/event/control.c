/*
 * control - the control socket: a tiny line protocol between ternctl and
 * ternd over a Unix socket. See control.h for the protocol.
 *
 * Exports: control_start, control_stop, control_handle, control_set_reload,
 * control_set_smtp_handler (see control.h).
 * Trusts: the file permissions (directory 0700, socket 0600) and, on top of
 * them, the peer's credentials: only our own uid or root may talk to us.
 * Requests are capped at CONTROL_REQUEST_MAX bytes, must be printable ASCII,
 * and queue IDs are checked before they reach the scheduler. A socket
 * handed to the SMTP engine ("smtp") is trusted no further than any SMTP
 * client: the engine parses every byte.
 */
#include "event/control.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "core/fsutil.h"
#include "core/log.h"
#include "core/xalloc.h"
#include "queue/queue.h"
#include "sched/sched.h"

#define CONTROL_CONN_MAX 32
#define CONTROL_TIMEOUT_SEC 10
#define CONTROL_ARGS_MAX 4

struct control_conn {
	struct control *ctl;
	struct control_conn *prev, *next;
	int fd;
	struct event *ev;
	char in[CONTROL_REQUEST_MAX + 1];
	size_t inlen;
	struct strbuf out;
	size_t outoff;
	int writing;
};

struct control {
	struct event_base *base;
	struct sched *sched;
	char *path;
	int fd;
	struct event *ev_accept;
	struct control_conn *conns;
	size_t nconns;
	int (*reload_fn)(void *arg);
	void *reload_arg;
	void (*smtp_fn)(void *arg, int fd);
	void *smtp_arg;
};

/* control_qid_arg - the QID argument, checked; NULL after writing ERR */
static const char *control_qid_arg(char **argv, size_t argc, struct strbuf *out)
{
	if (argc != 3) {
		strbuf_adds(out, "ERR expected one queue ID\n");
		return NULL;
	}
	if (!queue_id_valid(argv[2])) {
		strbuf_adds(out, "ERR invalid queue ID\n");
		return NULL;
	}
	return argv[2];
}

/* control_queue - "queue ..." requests */
static void control_queue(struct sched *s, char **argv, size_t argc, struct strbuf *out)
{
	char err[256] = "";
	const char *sub = argc > 1 ? argv[1] : "list";
	const char *qid;
	if (strcmp(sub, "list") == 0) {
		if (argc > 2) {
			strbuf_adds(out, "ERR usage: queue list\n");
			return;
		}
		strbuf_adds(out, "OK\n");
		sched_list(s, out);
	} else if (strcmp(sub, "show") == 0) {
		if ((qid = control_qid_arg(argv, argc, out)) == NULL)
			return;
		struct strbuf body;
		strbuf_init(&body);
		if (sched_show(s, qid, &body, err, sizeof(err)) < 0) {
			strbuf_addf(out, "ERR %s\n", err);
		} else {
			strbuf_adds(out, "OK\n");
			strbuf_add(out, body.s, body.len);
		}
		strbuf_free(&body);
	} else if (strcmp(sub, "flush") == 0) {
		if (argc == 2) {
			sched_flush(s, NULL);
			strbuf_adds(out, "OK\nflushing every queued message\n");
			return;
		}
		if ((qid = control_qid_arg(argv, argc, out)) == NULL)
			return;
		if (!sched_has(s, qid)) {
			strbuf_addf(out, "ERR no such message: %s\n", qid);
			return;
		}
		sched_flush(s, qid);
		strbuf_addf(out, "OK\nflushing %s\n", qid);
	} else if (strcmp(sub, "delete") == 0) {
		if ((qid = control_qid_arg(argv, argc, out)) == NULL)
			return;
		if (sched_delete(s, qid, err, sizeof(err)) < 0)
			strbuf_addf(out, "ERR %s\n", err);
		else
			strbuf_addf(out, "OK\ndeleted %s\n", qid);
	} else if (strcmp(sub, "hold") == 0 || strcmp(sub, "release") == 0) {
		int hold = sub[0] == 'h';
		if ((qid = control_qid_arg(argv, argc, out)) == NULL)
			return;
		if (sched_hold(s, qid, hold, err, sizeof(err)) < 0)
			strbuf_addf(out, "ERR %s\n", err);
		else
			strbuf_addf(out, "OK\n%s %s\n", hold ? "held" : "released", qid);
	} else {
		strbuf_adds(out, "ERR unknown queue command\n");
	}
}

void control_handle(struct sched *s, const char *line, size_t n, struct strbuf *out)
{
	if (n > CONTROL_REQUEST_MAX) {
		strbuf_adds(out, "ERR request too long\n");
		return;
	}
	char buf[CONTROL_REQUEST_MAX + 1];
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)line[i];
		if (c < 0x20 || c >= 0x7f) {
			strbuf_adds(out, "ERR request must be printable ASCII\n");
			return;
		}
	}
	memcpy(buf, line, n);
	buf[n] = '\0';
	char *argv[CONTROL_ARGS_MAX];
	size_t argc = 0;
	char *save = NULL;
	for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
		if (argc == CONTROL_ARGS_MAX) {
			strbuf_adds(out, "ERR too many arguments\n");
			return;
		}
		argv[argc++] = t;
	}
	if (argc == 0) {
		strbuf_adds(out, "ERR empty request\n");
		return;
	}
	if (strcmp(argv[0], "ping") == 0 && argc == 1) {
		strbuf_adds(out, "OK\npong\n");
	} else if (strcmp(argv[0], "stats") == 0 && argc == 1) {
		strbuf_adds(out, "OK\n");
		sched_stats(s, out);
	} else if (strcmp(argv[0], "queue") == 0) {
		control_queue(s, argv, argc, out);
	} else {
		strbuf_adds(out, "ERR unknown command\n");
	}
}

/* control_conn_release - unlink and free one connection; the fd is the caller's */
static int control_conn_release(struct control_conn *cc)
{
	struct control *c = cc->ctl;
	if (cc->prev)
		cc->prev->next = cc->next;
	else
		c->conns = cc->next;
	if (cc->next)
		cc->next->prev = cc->prev;
	c->nconns--;
	event_free(cc->ev);
	strbuf_free(&cc->out);
	int fd = cc->fd;
	free(cc);
	return fd;
}

/* control_conn_close - release one connection and close its socket */
static void control_conn_close(struct control_conn *cc)
{
	close(control_conn_release(cc));
}

static void control_conn_cb(evutil_socket_t fd, short what, void *arg);

/* control_conn_reply - switch the connection to writing the answer */
static void control_conn_reply(struct control_conn *cc)
{
	cc->writing = 1;
	event_free(cc->ev);
	cc->ev = event_new(cc->ctl->base, cc->fd, EV_WRITE | EV_PERSIST, control_conn_cb, cc);
	struct timeval tv = {.tv_sec = CONTROL_TIMEOUT_SEC, .tv_usec = 0};
	event_add(cc->ev, &tv);
}

/* control_is - does the request line equal word exactly? */
static int control_is(const char *line, size_t n, const char *word)
{
	return n == strlen(word) && memcmp(line, word, n) == 0;
}

/*
 * control_conn_dispatch - answer a complete request line, or hand the
 * socket to the SMTP engine ("smtp"). The requests that need the daemon's
 * callbacks are taken here; the rest go to control_handle.
 */
static void control_conn_dispatch(struct control_conn *cc, const char *line, size_t n, int eof)
{
	struct control *c = cc->ctl;
	if (control_is(line, n, "smtp") && !eof) {
		if (c->smtp_fn == NULL) {
			strbuf_adds(&cc->out, "ERR local submission not available\n");
			control_conn_reply(cc);
			return;
		}
		/* from here the socket is the SMTP engine's: we neither close it
		 * nor read from it again (nothing past the request's LF was read) */
		void (*fn)(void *, int) = c->smtp_fn;
		void *arg = c->smtp_arg;
		int fd = control_conn_release(cc);
		fn(arg, fd);
		return;
	}
	if (control_is(line, n, "reload")) {
		if (c->reload_fn == NULL)
			strbuf_adds(&cc->out, "ERR reload not available\n");
		else if (c->reload_fn(c->reload_arg) < 0)
			strbuf_adds(&cc->out, "ERR reload failed; the running configuration and tables are kept "
					      "(see ternd's log)\n");
		else
			strbuf_adds(&cc->out, "OK\nreloaded\n");
		control_conn_reply(cc);
		return;
	}
	control_handle(c->sched, line, n, &cc->out);
	control_conn_reply(cc);
}

/*
 * control_conn_read - take bytes until a full line; then answer it. Bytes
 * are peeked first and only the line itself is consumed: after "smtp" the
 * rest of the stream belongs to the SMTP session.
 */
static void control_conn_read(struct control_conn *cc)
{
	for (;;) {
		size_t room = CONTROL_REQUEST_MAX - cc->inlen;
		if (room == 0) {
			strbuf_adds(&cc->out, "ERR request too long\n");
			control_conn_reply(cc);
			return;
		}
		ssize_t r = recv(cc->fd, cc->in + cc->inlen, room, MSG_PEEK);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			control_conn_close(cc);
			return;
		}
		if (r == 0) {
			if (cc->inlen == 0) {
				control_conn_close(cc);
				return;
			}
			/* a request without its line end is still a request */
			control_conn_dispatch(cc, cc->in, cc->inlen, 1);
			return;
		}
		char *nl = memchr(cc->in + cc->inlen, '\n', (size_t)r);
		size_t take = nl ? (size_t)(nl - (cc->in + cc->inlen)) + 1 : (size_t)r;
		ssize_t got;
		do
			got = recv(cc->fd, cc->in + cc->inlen, take, 0);
		while (got < 0 && errno == EINTR);
		/* the bytes were there a moment ago and only we read this socket */
		if (got != (ssize_t)take) {
			control_conn_close(cc);
			return;
		}
		cc->inlen += take;
		if (nl) {
			size_t n = cc->inlen - 1;
			if (n > 0 && cc->in[n - 1] == '\r')
				n--;
			control_conn_dispatch(cc, cc->in, n, 0);
			return;
		}
	}
}

/* control_conn_write - send the answer; close when done */
static void control_conn_write(struct control_conn *cc)
{
	while (cc->outoff < cc->out.len) {
		ssize_t w = send(cc->fd, cc->out.s + cc->outoff, cc->out.len - cc->outoff, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			break;
		}
		cc->outoff += (size_t)w;
	}
	control_conn_close(cc);
}

/* control_conn_cb - readiness or timeout on a connection */
static void control_conn_cb(evutil_socket_t fd, short what, void *arg)
{
	struct control_conn *cc = arg;
	if (what & EV_TIMEOUT) {
		control_conn_close(cc);
		return;
	}
	if (cc->writing)
		control_conn_write(cc);
	else
		control_conn_read(cc);
}

/* control_peer_ok - only our own user or root may command the daemon */
static int control_peer_ok(int fd)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		return 0;
	return cr.uid == 0 || cr.uid == geteuid();
}

/* control_accept_cb - a new ternctl connection */
static void control_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct control *c = arg;
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR)
				continue;
			return; /* EAGAIN, or EMFILE: try again on the next wake-up */
		}
		if (c->nconns >= CONTROL_CONN_MAX || !control_peer_ok(fd)) {
			static const char busy[] = "ERR not allowed or too many connections\n";
			ssize_t w = send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
			(void)w;
			close(fd);
			continue;
		}
		struct control_conn *cc = xcalloc(1, sizeof(*cc));
		cc->ctl = c;
		cc->fd = fd;
		strbuf_init(&cc->out);
		cc->ev = event_new(c->base, fd, EV_READ | EV_PERSIST, control_conn_cb, cc);
		struct timeval tv = {.tv_sec = CONTROL_TIMEOUT_SEC, .tv_usec = 0};
		event_add(cc->ev, &tv);
		cc->next = c->conns;
		if (c->conns)
			c->conns->prev = cc;
		c->conns = cc;
		c->nconns++;
	}
}

struct control *control_start(struct event_base *base, const char *path, struct sched *s, char *err,
			      size_t errlen)
{
	struct sockaddr_un sun;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (path == NULL || path[0] == '\0' || strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "control socket path empty or longer than %zu bytes",
			 sizeof(sun.sun_path) - 1);
		return NULL;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);

	/* the directory is owner-only: the socket's own mode is not honoured
	 * everywhere, the directory's is */
	const char *slash = strrchr(path, '/');
	if (slash && slash != path) {
		char *dir = xstrndup(path, (size_t)(slash - path));
		int r = fs_mkdir_p(dir, 0700, err, errlen);
		free(dir);
		if (r < 0)
			return NULL;
	}
	/* a socket left by a crashed ternd; refuse to unlink anything else */
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "%s exists and is not a socket", path);
			return NULL;
		}
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
			close(probe);
			snprintf(err, errlen, "%s is in use: another ternd is running", path);
			return NULL;
		}
		if (probe >= 0)
			close(probe);
		if (unlink(path) < 0) {
			snprintf(err, errlen, "unlink %s: %s", path, strerror(errno));
			return NULL;
		}
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return NULL;
	}
	/* no umask dance: umask is process-wide and worker threads may be
	 * creating Maildir directories right now; the 0700 directory closes
	 * the window before the chmod */
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		snprintf(err, errlen, "bind %s: %s", path, strerror(errno));
		close(fd);
		return NULL;
	}
	if (chmod(path, 0600) < 0 || listen(fd, 16) < 0) {
		snprintf(err, errlen, "listen %s: %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return NULL;
	}
	struct control *c = xcalloc(1, sizeof(*c));
	c->base = base;
	c->sched = s;
	c->path = xstrdup(path);
	c->fd = fd;
	c->ev_accept = event_new(base, fd, EV_READ | EV_PERSIST, control_accept_cb, c);
	event_add(c->ev_accept, NULL);
	return c;
}

void control_set_reload(struct control *c, int (*fn)(void *arg), void *arg)
{
	c->reload_fn = fn;
	c->reload_arg = arg;
}

void control_set_smtp_handler(struct control *c, void (*fn)(void *arg, int fd), void *arg)
{
	c->smtp_fn = fn;
	c->smtp_arg = arg;
}

void control_stop(struct control *c)
{
	if (c == NULL)
		return;
	while (c->conns)
		control_conn_close(c->conns);
	event_free(c->ev_accept);
	close(c->fd);
	unlink(c->path);
	free(c->path);
	free(c);
}
