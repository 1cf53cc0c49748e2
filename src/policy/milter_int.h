/*
 * milter_int - the structures shared by milter.c (chain, session, stages)
 * and milter_conn.c (one milter's socket, queue and replies). Internal to
 * src/policy: nothing outside includes it.
 */
#ifndef TERN_POLICY_MILTER_INT_H
#define TERN_POLICY_MILTER_INT_H

#include <stdint.h>
#include <sys/socket.h>

#include "core/log.h"
#include "policy/milter.h"
#include "policy/milter_codec.h"
#include "policy/milter_frame.h"

struct event;

#define MILTER_PROGRESS_MAX 100 /* SMFIR_PROGRESS replies that restart one timeout */

struct milter_addr {
	char *text;
	int family;
	struct sockaddr_storage ss;
	socklen_t sslen;
};

struct milter_chain {
	struct event_base *base;
	struct milter_addr *addrs;
	size_t n;
	unsigned connect_timeout, cmd_timeout, eom_timeout;
	enum milter_default on_error;
	char *hostname, *daemon_name;
	size_t max_body;
};

enum mstate {
	M_CONNECTING,  /* non-blocking connect in progress */
	M_NEGOTIATING, /* SMFIC_OPTNEG sent */
	M_READY,
	M_DONE,        /* its part in the connection is over (accepted, refused): closed */
	M_FAILED,      /* down, timed out, broke the protocol: closed, default action */
};

struct pkt {
	struct pkt *next;
	int cmd;       /* SMFIC_* */
	int reply;     /* the milter answers it */
	unsigned gen;  /* transaction generation it belongs to */
	size_t len;
	char data[];
};

struct milter_conn {
	struct milter_sess *s;
	const struct milter_addr *addr;
	int fd;
	struct event *ev_rd, *ev_wr, *ev_tm;
	enum mstate st;
	struct milter_neg neg;
	/* output: packets waiting, then bytes being written */
	struct pkt *qhead, *qtail;
	size_t qbytes;
	char *wbuf;
	size_t wlen, woff, wcap;
	int awaiting;      /* a command expecting a reply is out */
	int await_cmd;
	unsigned await_gen;
	unsigned progress;  /* SMFIR_PROGRESS replies to the command out */
	/* input */
	unsigned char *in;
	size_t inlen, incap;
	/* connection level */
	int conn_refused;
	struct smtp_verdict conn_verdict;
	/* transaction level */
	int in_txn;        /* MAIL reached it, end of message not yet */
	int txn_done;      /* no more events this transaction */
	int txn_discard;
	int has_txn_verdict;
	struct smtp_verdict txn_verdict;
	int skip_body, skip_hdrs;
	int eom_sent, eom_done;
	struct smtp_verdict eom_verdict;
	struct milter_mod *mods;
	size_t nmods, capmods;
	int body_replaced, body_cr, body_over;
	struct strbuf body;
};

enum sstage { S_NONE, S_CONNECT, S_HELO, S_MAIL, S_RCPT, S_DATA, S_EOM };

struct milter_sess {
	struct milter_chain *ch;
	struct milter_conn *m;
	size_t n;
	/* connection facts, copied */
	char *client_addr, *client_name, *session_id, *if_addr, *tls_version, *tls_cipher;
	char client_port[8];
	int tls;
	/* transaction facts */
	char *qid, *auth_user, *auth_type, *mail_addr, *rcpt_addr;
	unsigned gen;
	/* the stage in flight */
	enum sstage stage;
	int pending;       /* callback not yet run */
	int finished;      /* result known, callback scheduled */
	size_t cur;        /* milter being asked (envelope stages) */
	int cur_sent;
	char *arg_str;     /* HELO name, sender, recipient */
	char **arg_v;      /* ESMTP arguments */
	milter_cb cb;
	milter_eom_cb eom_cb;
	void *cb_arg;
	struct smtp_verdict result;
	struct milter_mods mods;
	struct event *ev_done;
	int abort_pending;
	int quiet;         /* setting up a stage: a failing milter must not end it early */
	/* content */
	struct milter_frame frame;
	int content_open;  /* DATA continued, end of message not yet */
	int frame_ok;
};

/* ---- milter_conn.c: one milter of a session ---- */
/* milter_conn_start - open the socket, connect, then negotiate */
void milter_conn_start(struct milter_conn *m);
/* milter_conn_close - drop the socket and everything queued */
void milter_conn_close(struct milter_conn *m);
/* milter_conn_quit - best effort SMFIC_QUIT, close, state st */
void milter_conn_quit(struct milter_conn *m, enum mstate st);
/* milter_conn_fail - down, timed out or broke the protocol: log, close,
 * M_FAILED, and tell the session (default action) */
void milter_conn_fail(struct milter_conn *m, const char *why);
/* milter_conn_queue - the packet in sb (emptied) onto m's queue; -1 if m failed */
int milter_conn_queue(struct milter_conn *m, struct strbuf *sb, int cmd, int reply);
/* milter_conn_pump - write queued packets up to one that expects a reply */
void milter_conn_pump(struct milter_conn *m);
/* milter_conn_drop_queued - drop this transaction's queued packets (of one command) */
void milter_conn_drop_queued(struct milter_conn *m, int only_cmd);
/* milter_conn_mods_clear - forget m's modifications and replaced body */
void milter_conn_mods_clear(struct milter_conn *m);
/* milter_conn_body_end - finish the replaced body (final CRLF) */
void milter_conn_body_end(struct milter_conn *m);
/* milter_conn_log - start a log line about m (session, qid, milter, stage) */
void milter_conn_log(struct log_line *l, enum log_level lvl, const char *event, struct milter_conn *m);

/* ---- milter.c: the session side ---- */
/* milter_sess_kick - a milter became ready, failed or answered: go on */
void milter_sess_kick(struct milter_sess *s);
/* milter_sess_final - a final reply of m to command cmd of generation gen */
void milter_sess_final(struct milter_conn *m, int cmd, unsigned gen, const struct milter_reply *r);
/* milter_sess_stage_str - the stage for logs ("content" between DATA and EOM) */
const char *milter_sess_stage_str(const struct milter_sess *s);

#endif
