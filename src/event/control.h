/*
 * control - the Unix control socket ternd serves for ternctl.
 *
 * Protocol: one request line per connection, at most CONTROL_REQUEST_MAX
 * bytes ("queue list", "queue show QID", "queue flush [QID]",
 * "queue delete QID", "queue hold QID", "queue release QID", "ping",
 * "stats"); the answer is "OK\n" followed by a body, or "ERR <reason>\n",
 * then the server closes the connection.
 *
 * Exports:
 *   control_start   create the socket (directory 0700, socket 0600) and serve
 *   control_stop    close every connection and remove the socket file
 *   control_handle  answer one request line (pure dispatch, for tests)
 * Trusts: only peers running as our own user or root (SO_PEERCRED), and
 * even their requests are parsed strictly.
 */
#ifndef TERN_EVENT_CONTROL_H
#define TERN_EVENT_CONTROL_H

#include <stddef.h>

#include "core/buf.h"

#define CONTROL_REQUEST_MAX 1024

struct event_base;
struct sched;
struct control;

struct control *control_start(struct event_base *base, const char *path, struct sched *s, char *err,
			      size_t errlen);
void control_stop(struct control *c);
/* control_handle - the reply ("OK\n..." or "ERR ...\n") to a request line
 * of n bytes (without its line end) */
void control_handle(struct sched *s, const char *line, size_t n, struct strbuf *out);

#endif
