/*
 * control - the Unix control socket ternd serves for ternctl.
 *
 * Protocol: one request line per connection, at most CONTROL_REQUEST_MAX
 * bytes ("queue list", "queue show QID", "queue flush [QID]",
 * "queue delete QID", "queue hold QID", "queue release QID", "ping",
 * "stats", "reload"); the answer is "OK\n" followed by a body, or
 * "ERR <reason>\n", then the server closes the connection.
 * "smtp" is different: no answer from the control socket; the connection
 * is handed to the SMTP engine, whose first words are the 220 greeting
 * (ternctl sendmail). The request line is read without reading past its
 * LF, so nothing the client sends after it is lost.
 *
 * Exports:
 *   control_start             create the socket (directory 0700, socket
 *                             0600) and serve
 *   control_stop              close every connection and remove the socket
 *   control_handle            answer one request line (pure dispatch, for
 *                             tests; "reload" and "smtp" need the daemon's
 *                             callbacks and are answered by the connection)
 *   control_set_reload        the daemon's "re-read configuration and
 *                             tables" function, for "reload"
 *   control_set_smtp_handler  the daemon's "serve SMTP on this fd" function,
 *                             for "smtp"
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

/*
 * control_set_reload - "reload" calls fn(arg): 0 = reloaded, -1 = failed
 * (the old configuration and tables stay; fn logged why). Without it,
 * "reload" is answered "ERR reload not available".
 */
void control_set_reload(struct control *c, int (*fn)(void *arg), void *arg);

/*
 * control_set_smtp_handler - "smtp" hands the connection's socket (non-
 * blocking, close-on-exec, peer already checked to be our uid or root) to
 * fn(arg, fd), which owns it from then on. Without it, "smtp" is answered
 * "ERR local submission not available".
 */
void control_set_smtp_handler(struct control *c, void (*fn)(void *arg, int fd), void *arg);
/* control_handle - the reply ("OK\n..." or "ERR ...\n") to a request line
 * of n bytes (without its line end) */
void control_handle(struct sched *s, const char *line, size_t n, struct strbuf *out);

#endif
