/*
 * listener - listening TCP sockets on the event loop.
 *
 * Exports:
 *   listener_open     bind addr:port (IPv4 or [IPv6]), listen, and call
 *                     accept_cb for each new connection (non-blocking fd)
 *   listener_close    stop accepting and close the socket
 *   listener_pause    stop/resume accepting (when at the connection cap)
 * When the process is out of file descriptors, a reserved descriptor is
 * released so the connection can be told 421 and closed instead of being
 * left in the backlog forever.
 * Trusts: nothing from the peer; it only accepts.
 */
#ifndef TERN_EVENT_LISTENER_H
#define TERN_EVENT_LISTENER_H

#include <stddef.h>
#include <sys/socket.h>

struct event_base;
struct listener;

typedef void (*listener_accept_cb)(void *arg, struct listener *l, int fd,
				   const struct sockaddr_storage *peer, socklen_t peerlen);

struct listener *listener_open(struct event_base *base, const char *addrport, int kind,
			       listener_accept_cb cb, void *arg, char *err, size_t errlen);
void listener_close(struct listener *l);
void listener_pause(struct listener *l, int paused);
int listener_kind(const struct listener *l);
const char *listener_name(const struct listener *l);

#endif
