/*
 * conn - one client connection: socket I/O, timers and limits around an
 * smtp_session. The session never touches the socket; conn reads into it,
 * writes what it replies, and implements its effects with the queue, the
 * lookup tables and the scheduler.
 *
 * Exports:
 *   struct conn_server     what every connection shares (conf, queue, ...)
 *   conn_server_init/fini  the shared state, incl. per-client-IP counts
 *   conn_accept            take a new socket from a listener
 *   conn_accept_local      take a local submission socket (ternctl sendmail)
 *   conn_shutdown_all      SIGTERM: 421 to idle sessions, finish commits
 *   conn_count             live connections
 * Trusts: nothing from the socket; every byte goes to the session.
 */
#ifndef TERN_EVENT_CONN_H
#define TERN_EVENT_CONN_H

#include <stddef.h>
#include <sys/socket.h>

#include "conf/conf.h"

struct event_base;
struct lookup_tables;
struct queue;
struct sched;
struct tls_server;
struct worker_pool;
struct limits;
struct conn;
struct conn_iptab;
struct filter_env;

struct conn_server {
	struct event_base *base;
	const struct conf *conf;      /* replaced on SIGHUP */
	struct lookup_tables *tables; /* replaced on SIGHUP */
	struct queue *queue;
	struct sched *sched;
	struct tls_server *tls;       /* NULL without tls_cert; replaced on SIGHUP */
	struct worker_pool *workers;  /* password checks, off the loop */
	struct limits *limits;        /* AUTH failures, message rates */
	struct filter_env *filter_env; /* milters, mail authentication; replaced on SIGHUP
				       * (each connection keeps a reference to its own) */
	struct conn *conns;           /* list of live connections */
	size_t nconns;
	struct conn_iptab *iptab;     /* connections per client address */
	unsigned long long next_id;
	unsigned long fd_limit;       /* RLIMIT_NOFILE; part of it is kept in reserve */
	int shutting_down;
	void (*on_idle)(struct conn_server *srv); /* called when nconns drops to 0 while shutting down */
};

void conn_server_init(struct conn_server *srv);
void conn_server_fini(struct conn_server *srv);
void conn_accept(struct conn_server *srv, int fd, int kind, const struct sockaddr_storage *peer,
		 socklen_t peerlen);
/* conn_accept_local - an SMTP session on a local socket handed over by the
 * control socket (ternctl sendmail): trusted, client address "local" */
void conn_accept_local(struct conn_server *srv, int fd);
void conn_shutdown_all(struct conn_server *srv);

#endif
