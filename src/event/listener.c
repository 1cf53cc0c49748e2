/*
 * listener - accept loop for TCP listeners. See listener.h.
 */
#include "event/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf/conf.h"
#include "core/log.h"
#include "core/xalloc.h"

struct listener {
	int fd;
	int kind;
	char *name;
	struct event *ev;
	listener_accept_cb cb;
	void *arg;
	int paused;
};

/* a spare descriptor, released when accept fails with EMFILE so the
 * waiting client can be answered and closed rather than left hanging */
static int listener_reserve_fd = -1;

static void listener_reserve(void)
{
	if (listener_reserve_fd < 0)
		listener_reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* listener_shed - out of descriptors: answer one waiting client 421 */
static void listener_shed(struct listener *l)
{
	if (listener_reserve_fd < 0)
		return;
	close(listener_reserve_fd);
	listener_reserve_fd = -1;
	int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd >= 0) {
		static const char msg[] = "421 4.3.2 Too many open connections, try again later\r\n";
		ssize_t w = write(fd, msg, sizeof(msg) - 1);
		(void)w;
		close(fd);
	}
	listener_reserve();
	log_event(LOG_LEVEL_WARN, "fd_limit", "out of file descriptors; connection refused with 421");
}

/* listener_on_accept - accept every pending connection */
static void listener_on_accept(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	(void)fd;
	(void)what;
	for (int i = 0; i < 256 && !l->paused; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int c = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE)
				listener_shed(l);
			return;
		}
		l->cb(l->arg, l, c, &ss, sl);
	}
}

struct listener *listener_open(struct event_base *base, const char *addrport, int kind,
			       listener_accept_cb cb, void *arg, char *err, size_t errlen)
{
	char host[256];
	unsigned port;
	if (conf_split_addrport(addrport, host, sizeof(host), &port) < 0) {
		snprintf(err, errlen, "%s: expected addr:port", addrport);
		return NULL;
	}
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	socklen_t sl;
	int family;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		family = sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		sl = sizeof(*sin);
	} else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		family = sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		sl = sizeof(*sin6);
	} else {
		snprintf(err, errlen, "%s: not a numeric address", addrport);
		return NULL;
	}
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket %s: %s", addrport, strerror(errno));
		return NULL;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 1024) < 0) {
		snprintf(err, errlen, "bind %s: %s", addrport, strerror(errno));
		close(fd);
		return NULL;
	}
	listener_reserve();
	struct listener *l = xcalloc(1, sizeof(*l));
	l->fd = fd;
	l->kind = kind;
	l->name = xstrdup(addrport);
	l->cb = cb;
	l->arg = arg;
	l->ev = event_new(base, fd, EV_READ | EV_PERSIST, listener_on_accept, l);
	event_add(l->ev, NULL);
	return l;
}

void listener_pause(struct listener *l, int paused)
{
	if (l->paused == paused)
		return;
	l->paused = paused;
	if (paused)
		event_del(l->ev);
	else
		event_add(l->ev, NULL);
}

void listener_close(struct listener *l)
{
	if (l == NULL)
		return;
	event_free(l->ev);
	close(l->fd);
	free(l->name);
	free(l);
}

int listener_kind(const struct listener *l)
{
	return l->kind;
}

const char *listener_name(const struct listener *l)
{
	return l->name;
}
