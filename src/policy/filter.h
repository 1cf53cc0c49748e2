/*
 * filter - the policy checks of one SMTP connection: the milter chain and
 * mail authentication (SPF, DKIM, DMARC verification; DKIM signing), run
 * at every stage of the session and at the end of each message, without
 * ever blocking the event loop. The daemon's conn (src/event/conn.c)
 * implements the session's stage_check, txn_end, msg_write and msg_commit
 * operations by calling into one filter per connection.
 *
 * The path of a message:
 *   CONNECT, HELO, MAIL, RCPT, DATA   the milters' verdict at each stage
 *                                     (first refusal wins); MAIL starts
 *                                     mail authentication (SPF) when the
 *                                     message is verified
 *   content                           every octet written to the queue
 *                                     file (our Received field first) is
 *                                     also given to the milters and to
 *                                     mail authentication (DKIM hashes)
 *   end of data (filter_commit)       milter end-of-message and mail
 *                                     authentication finish together; then
 *                                     a refusal, a discard, or: milter
 *                                     edits (envelope changes, header
 *                                     edits, body replacement) and removal
 *                                     of forged Authentication-Results by
 *                                     writing the content anew
 *                                     (queue_file_restart + copy, a slice
 *                                     per loop turn); DKIM signatures over
 *                                     the final content; A-R and signatures
 *                                     prepended (queue_file_prepend); the
 *                                     queue commit; a quarantine hold; the
 *                                     session's 250 (or 4xx if the commit
 *                                     failed). One log line per message:
 *                                     event=filter qid= with the results.
 *
 * Which messages: verified (SPF, DKIM, DMARC, A-R added) when mail_auth =
 * yes and the client came to an MX listener, is not in mynetworks and did
 * not authenticate; signed when dkim_sign = yes and the client
 * authenticated, is in mynetworks, or is a local submission (ternctl
 * sendmail). Milters (milters = ...) see every message.
 *
 * Exports:
 *   filter_env_new / _ref / _unref   what the filters of one configuration
 *                                    share (milter chain, DNS, queue ...);
 *                                    ternd replaces it on SIGHUP, sessions
 *                                    keep the one they started with
 *   filter_new / filter_free         one per connection
 *   filter_stage                     ops->stage_check
 *   filter_write                     the content tee (ops->msg_write)
 *   filter_commit                    ops->msg_commit
 *   filter_txn_end                   ops->txn_end
 *   filter_busy                      a check or an end of message in flight
 *   filter_backlog                   content not yet taken by the milters
 * Trusts: the configuration; nothing from the client, the milters
 * (milter.c checks their replies; edits are checked again by
 * filter_edit) or DNS (mailauth).
 * Implements: the MTA side of milter modifications (Sendmail/Postfix
 * semantics), RFC 8601 5 (removal of A-R fields claiming our authserv-id),
 * RFC 6376 5 (sign after the last change to the message).
 */
#ifndef TERN_POLICY_FILTER_H
#define TERN_POLICY_FILTER_H

#include <stddef.h>

#include "conf/conf.h"
#include "smtp/smtp_server.h"

struct event_base;
struct dns;
struct queue;
struct queue_file;
struct worker_pool;
struct filter_env;
struct filter;

struct filter_env_conf {
	struct event_base *base;
	const struct conf *conf;     /* must outlive the env (ternd keeps old ones) */
	struct dns *dns;             /* for verification; NULL: nothing is verified */
	struct queue *queue;         /* queue_msg_hold for quarantine */
	struct worker_pool *workers; /* re-signing after edits, holds; NULL: on the loop */
};

/* filter_env_new - build the milter chain of conf (if any); NULL with err
 * (a milter address the milter module refuses) */
struct filter_env *filter_env_new(const struct filter_env_conf *c, char *err, size_t errlen);
void filter_env_ref(struct filter_env *fe);
/* filter_env_unref - the last reference frees the chain */
void filter_env_unref(struct filter_env *fe);

struct filter_client {
	const char *addr;       /* textual IP, or "local" */
	unsigned short port;    /* 0 when unknown */
	const char *name;       /* reverse name or NULL */
	const char *session_id; /* for logs */
	int local;              /* ternctl sendmail (control socket) */
};

/* filter_resume_cb - the filter answered the session from an event (not
 * from within a call by the session): the owner flushes and re-arms I/O;
 * it may free the filter from here */
typedef void (*filter_resume_cb)(void *arg);

/* filter_new - a filter for one connection; holds a reference to fe.
 * NULL when out of memory */
struct filter *filter_new(struct filter_env *fe, const struct filter_client *ci,
			  filter_resume_cb resume, void *arg);
/* filter_free - cancels everything (milter sessions get QUIT, lookups are
 * cancelled, an unfinished queue file is aborted); only when !filter_busy
 * in normal operation */
void filter_free(struct filter *f);

/* filter_stage - ops->stage_check: answers smtp_session_stage_done now
 * (nothing to ask) or from an event */
void filter_stage(struct filter *f, enum smtp_stage stage, struct smtp_session *s);
/* filter_write - content as stored, before it goes to the queue file */
void filter_write(struct filter *f, const char *p, size_t n);
/* filter_commit - ops->msg_commit: the filter owns qf from here; answers
 * smtp_session_commit_done or smtp_session_commit_verdict */
void filter_commit(struct filter *f, struct queue_file *qf, struct smtp_session *s);
/* filter_txn_end - ops->txn_end: forget the message (milters get ABORT
 * unless their end of message ran) */
void filter_txn_end(struct filter *f);
/* filter_busy - 1 while the session waits for the filter */
int filter_busy(const struct filter *f);
/* filter_backlog - content octets queued toward the slowest milter: the
 * owner stops reading its client while this is large */
size_t filter_backlog(const struct filter *f);

#endif
