/*
 * smtp_server - the SMTP server session as a state machine with no sockets.
 *
 * Bytes from the client go in (smtp_session_input); replies and effects come
 * out through a table of functions (struct smtp_server_ops) that the daemon
 * implements with sockets and the queue, and that tests replace to replay a
 * transcript in memory. Each command is a row of a verb table with a check
 * (syntax, state, order) and a proceed (the work).
 *
 * PIPELINING (RFC 2920): all complete commands in the input are handled in
 * order; their replies are gathered and handed to ops->write in one call when
 * the input runs dry or the session must wait. While the session waits (a
 * queue commit in flight) it consumes no input; smtp_session_wants_input()
 * tells the caller to stop reading so memory stays bounded.
 *
 * Exports:
 *   smtp_session_new/free        one session per connection
 *   smtp_session_start           greeting (or 554 if the client spoke first)
 *   smtp_session_input           feed bytes read from the client
 *   smtp_session_eof             the client closed its side
 *   smtp_session_timeout         the caller's idle timer fired
 *   smtp_session_shutdown        the server is stopping: 421 and close
 *   smtp_session_commit_done     completion of ops->msg_commit
 *   smtp_session_tls_done        the STARTTLS handshake completed
 *   smtp_session_auth_done       completion of ops->auth_check (AUTH)
 *   smtp_session_auth_user       the authenticated account, or NULL
 *   smtp_session_stage_done      completion of ops->stage_check (policy)
 *   smtp_session_commit_verdict  end of data refused or discarded by policy
 *   smtp_session_helo/_envelope/_client/_rcpt/_esmtp_args  what the policy
 *                                checks look at (accessors)
 *   smtp_stage_str, smtp_verdict_kind_str, smtp_verdict_set,
 *   smtp_verdict_reply_valid     the policy verdict type
 *   smtp_session_wants_input     0 while waiting or closing
 *   smtp_session_timeout_secs    the idle timeout that applies now
 *   smtp_session_state_str       for logs
 * Trusts: nothing from the client. Every path through it ends in a reply
 * from smtp_reply's table or a close.
 * Implements: RFC 5321 (sessions, 4.1.4 order, 4.5.3.2 timeouts), RFC 1869,
 * RFC 1652 (8BITMIME), RFC 1870 (SIZE), RFC 2920, RFC 3030 (CHUNKING,
 * BINARYMIME), RFC 2034 / RFC 3463 (enhanced codes), RFC 6531 (SMTPUTF8),
 * RFC 3461 parameters (NOTIFY, ORCPT, RET, ENVID) as parsed values,
 * RFC 3207 (STARTTLS: the session side; the handshake is the caller's),
 * RFC 4954 (AUTH; PLAIN per RFC 4616 and LOGIN, only under TLS), RFC 6409
 * (submission: AUTH before MAIL, sender ownership), RFC 3848.
 */
#ifndef TERN_SMTP_SMTP_SERVER_H
#define TERN_SMTP_SMTP_SERVER_H

#include <stddef.h>

#include "conf/conf.h"
#include "queue/envelope.h"
#include "smtp/smtp_parse.h"

struct smtp_session;

/* input buffer of a session: a caller should read at most this much per
 * smtp_session_input call (more is fine while the session is not waiting) */
#define SMTP_SESSION_INPUT_MAX 16384
#define SMTP_HELO_MAX 255    /* octets of the HELO/EHLO name kept */
#define SMTP_ENVID_MAX 100   /* RFC 3461 4.4 */
#define SMTP_ORCPT_MAX 500   /* RFC 3461 4.2 (xtext, generous) */
/* RFC 4954 4: longest AUTH response line accepted, CRLF not counted;
 * longer ones get 500 5.5.6 (fits SMTP_SESSION_INPUT_MAX) */
#define SMTP_AUTH_LINE_MAX 12288

enum smtp_listener_kind {
	SMTP_LISTENER_MX,          /* port 25 */
	SMTP_LISTENER_SUBMISSION,  /* 587: STARTTLS then AUTH */
	SMTP_LISTENER_SUBMISSIONS, /* 465: implicit TLS */
};
const char *smtp_listener_kind_str(enum smtp_listener_kind k);

struct smtp_client_info {
	const char *addr;     /* textual client IP, e.g. "127.0.0.1" */
	const char *name;     /* reverse DNS name or NULL */
	enum smtp_listener_kind kind;
	int trusted;          /* client address is in mynetworks: may relay */
	int tls;              /* session already under TLS (implicit TLS port) */
	int tls_available;    /* a certificate is loaded: STARTTLS may be offered */
	const char *session_id; /* for logs */
	int hide_client;      /* privacy: once the client has authenticated, the
			       * Received header names only its HELO, not its
			       * address or reverse name */
};

/* outcome of a recipient check */
enum smtp_rcpt_verdict {
	SMTP_RCPT_ACCEPT,        /* recipients were appended to the envelope */
	SMTP_RCPT_UNKNOWN_USER,  /* 550 5.1.1 */
	SMTP_RCPT_RELAY_DENIED,  /* 554 5.7.1 */
	SMTP_RCPT_TEMPFAIL,      /* 451 4.3.0 e.g. alias loop / lookup trouble */
};

/*
 * Outcome of ops->auth_check, passed to smtp_session_auth_done as `ok`:
 *   SMTP_AUTH_OK        1: 235 2.7.0; the session is authenticated as
 *                          `account` (canonical "local@domain")
 *   SMTP_AUTH_FAIL      0: 535 5.7.8 (counts towards max_errors)
 *   SMTP_AUTH_LOCKED   -1: the client is locked out after too many
 *                          failures: 421 4.7.0 and close
 *   SMTP_AUTH_TEMPFAIL -2: 454 4.7.0 (the check could not be done); any
 *                          other value is taken as this
 */
enum smtp_auth_result {
	SMTP_AUTH_TEMPFAIL = -2,
	SMTP_AUTH_LOCKED = -1,
	SMTP_AUTH_FAIL = 0,
	SMTP_AUTH_OK = 1,
};
const char *smtp_auth_result_str(int ok);

/*
 * Policy stages (milters, mail authentication). At each stage the daemon
 * may run checks of its own (ops->stage_check) after the session's built-in
 * checks passed; the session waits for smtp_session_stage_done.
 */
enum smtp_stage {
	SMTP_STAGE_CONNECT, /* before the greeting */
	SMTP_STAGE_HELO,    /* HELO/EHLO: the name is stored (smtp_session_helo) */
	SMTP_STAGE_MAIL,    /* MAIL passed sender, ownership and rate checks */
	SMTP_STAGE_RCPT,    /* rcpt_check accepted: the recipient(s) are in the envelope */
	SMTP_STAGE_DATA,    /* DATA, or the first BDAT: before the queue file is opened */
};
const char *smtp_stage_str(enum smtp_stage st);

enum smtp_verdict_kind {
	SMTP_VERDICT_CONTINUE, /* go on */
	SMTP_VERDICT_REJECT,   /* 5xx */
	SMTP_VERDICT_TEMPFAIL, /* 4xx */
	SMTP_VERDICT_DISCARD,  /* 250: the message is accepted and dropped. At a stage
				* before the end of data the session goes on as for
				* CONTINUE: the implementation remembers it and
				* discards at msg_commit (smtp_session_commit_verdict) */
	SMTP_VERDICT_SHUTDOWN, /* 421 and close */
};
const char *smtp_verdict_kind_str(enum smtp_verdict_kind k);

#define SMTP_VERDICT_REPLY_MAX 512
struct smtp_verdict {
	enum smtp_verdict_kind kind;
	/* "" = the table's reply for kind and stage; else a complete reply
	 * without the final CRLF: "550 5.7.1 text", multi-line as
	 * "550-a\r\n550 b". Checked by the session (smtp_verdict_reply_valid,
	 * and at CONNECT only 554 for REJECT and 421 for TEMPFAIL, elsewhere
	 * no 421 for TEMPFAIL); one that fails is logged and the table's
	 * reply is used */
	char reply[SMTP_VERDICT_REPLY_MAX];
	char why[64]; /* for the log: "milter", "dmarc", ... */
};
/* smtp_verdict_set - fill v: kind, custom reply (NULL or "" for the
 * table's; truncated to fit) and why (NULL for none) */
void smtp_verdict_set(struct smtp_verdict *v, enum smtp_verdict_kind kind, const char *reply,
		      const char *why);
/* smtp_verdict_reply_valid - 1 when reply may be sent for kind: every line
 * three digits, the same code on each, 4xx for TEMPFAIL and SHUTDOWN, 5xx
 * for REJECT; '-' after the code on all lines but the last (' ' or nothing
 * there); printable ASCII text; lines joined by CRLF only, at most 512
 * octets each. CONTINUE and DISCARD never take a custom reply (0). */
int smtp_verdict_reply_valid(enum smtp_verdict_kind kind, const char *reply);

struct smtp_server_ops {
	/* write - send reply bytes to the client (one call per batch) */
	void (*write)(void *ctx, const char *p, size_t n);
	/* close - close the connection once the written bytes are sent */
	void (*close)(void *ctx);
	/* rcpt_check - resolve a RCPT address: on ACCEPT, append the final
	 * recipient(s) (aliases expanded, duplicates dropped) to env with orcpt
	 * and notify as given. may_relay: the client is trusted or authenticated */
	enum smtp_rcpt_verdict (*rcpt_check)(void *ctx, const struct smtp_path *rcpt, int may_relay,
					     struct envelope *env, const char *orcpt, unsigned notify);
	/* msg_open - start a queue file; fills env->qid; NULL with errno on failure */
	struct queue_file *(*msg_open)(void *ctx, struct envelope *env);
	/* msg_write - append content; -1 with errno on failure */
	int (*msg_write)(void *ctx, struct queue_file *f, const char *p, size_t n);
	/* msg_commit - make durable; must call smtp_session_commit_done later
	 * (or from within, for synchronous implementations) */
	void (*msg_commit)(void *ctx, struct queue_file *f, struct smtp_session *s);
	void (*msg_abort)(void *ctx, struct queue_file *f);
	/* msg_accepted - after 250 was queued for sending: hand the envelope to
	 * the scheduler (may be NULL in tests) */
	void (*msg_accepted)(void *ctx, const struct envelope *env);
	/* starttls - the 220 to STARTTLS is in the batch being written and all
	 * buffered plaintext input was dropped (RFC 3207 5, CVE-2011-0411):
	 * send the batch, then start the TLS handshake on the socket and call
	 * smtp_session_tls_done when it completes. NULL: STARTTLS not offered */
	void (*starttls)(void *ctx);
	/* auth_check - verify AUTH credentials (PLAIN or LOGIN) and call
	 * smtp_session_auth_done exactly once, later or from within. user is
	 * the authentication identity as the client sent it (any octets but
	 * NUL, at most 255); password is valid only during the call (the
	 * session wipes it right after: copy it if the check runs
	 * elsewhere, and wipe the copy). Per-address failure counting and
	 * lockout are the implementation's (SMTP_AUTH_LOCKED). While the check
	 * is in flight the session reads nothing (wants_input 0) and is not
	 * to be freed. NULL: AUTH is not offered (502). */
	void (*auth_check)(void *ctx, const char *user, const char *password, struct smtp_session *s);
	/* sender_check - 1 if the authenticated account may use `from` as
	 * MAIL FROM, else 0 (553 5.7.1). Asked only of authenticated sessions
	 * and never for the null sender <>. NULL: no ownership rule */
	int (*sender_check)(void *ctx, const char *account, const struct smtp_path *from);
	/* rate_check - at each MAIL that passed every other check: 0 go on,
	 * 1 over the limit (450 4.7.1). account is the authenticated account
	 * or NULL (the implementation may count per client address then).
	 * NULL: no limit */
	int (*rate_check)(void *ctx, const char *account);
	/* stage_check - policy checks of a stage (milters, mail
	 * authentication): call smtp_session_stage_done exactly once, later
	 * or from within. Asked after the session's own checks of the stage
	 * passed (MAIL: after sender_check and rate_check, with the envelope
	 * sender set; RCPT: after rcpt_check accepted, with the new
	 * recipient(s) already in the envelope: the session removes them
	 * again on a verdict other than CONTINUE/DISCARD). While a check is in
	 * flight the session reads nothing (wants_input 0) and is not to be
	 * freed; eof, timeout and shutdown wait for the answer as during a
	 * commit. NULL: no checks (every stage continues) */
	void (*stage_check)(void *ctx, enum smtp_stage stage, struct smtp_session *s);
	/* txn_end - the transaction whose MAIL stage was checked is over:
	 * committed (after msg_accepted), refused, discarded, or dropped by
	 * RSET, HELO/EHLO, a refused MAIL, QUIT, close or eof. Per-message
	 * state of the checks can go (a milter gets ABORT unless its end of
	 * message already ran). May be NULL */
	void (*txn_end)(void *ctx, struct smtp_session *s);
	/* input_pending - has the client sent bytes the session has not read
	 * (asked when the CONNECT check passed: bytes that arrived while it
	 * ran were sent before the greeting). May be NULL */
	int (*input_pending)(void *ctx);
};

/*
 * Caller contract (the daemon's conn, and the tests):
 * - Never free the session from inside an ops callback; free it after a
 *   public call returns and smtp_session_closed() is true (or on error).
 * - ops->close is called exactly once, after the last ops->write; the
 *   daemon closes the socket once the written bytes are sent.
 * - While smtp_session_wants_input() is 0 stop reading: a commit is in
 *   flight (or the session is closing). Input given anyway is buffered up to
 *   SMTP_SESSION_INPUT_MAX; beyond that the session ends with 421 4.3.0
 *   after the commit.
 * - A commit in flight is always finished: eof, timeout and shutdown that
 *   arrive during it are acted on in smtp_session_commit_done, after the
 *   real outcome (250 queued, or 451/452) has been replied and, on success,
 *   ops->msg_accepted called. So on SIGTERM the daemon calls
 *   smtp_session_shutdown on every session, keeps its loop running, and
 *   frees each session when smtp_session_closed() turns 1. With a
 *   synchronous queue a commit is never in flight between calls.
 * - An auth check in flight (ops->auth_check called, smtp_session_auth_done
 *   not yet) is treated like a commit: wants_input is 0, and eof, timeout
 *   and shutdown are acted on in smtp_session_auth_done. The session is
 *   never freed while one is in flight.
 * - AUTH is offered (EHLO "AUTH PLAIN LOGIN") only under TLS (implicit, or
 *   after STARTTLS) and only when ops->auth_check is set; elsewhere AUTH is
 *   refused with 538 5.7.11 so no password ever crosses in clear text. On
 *   submission listeners MAIL needs AUTH first (530 5.7.0). An
 *   authenticated client may relay (rcpt_check's may_relay).
 * - A policy check in flight (ops->stage_check called,
 *   smtp_session_stage_done not yet) is treated like an auth check:
 *   wants_input is 0, eof, timeout and shutdown are acted on after the
 *   answer, and the session is never freed while one is in flight.
 * - Limits of 0 in conf (max_errors, max_recipients, max_received_headers,
 *   max_message_size) mean no limit.
 */
struct smtp_session *smtp_session_new(const struct conf *conf, const struct smtp_client_info *info,
				      const struct smtp_server_ops *ops, void *ctx);
void smtp_session_free(struct smtp_session *s);

void smtp_session_start(struct smtp_session *s, int client_spoke_first);
void smtp_session_input(struct smtp_session *s, const char *p, size_t n);
void smtp_session_eof(struct smtp_session *s);
void smtp_session_timeout(struct smtp_session *s);
void smtp_session_shutdown(struct smtp_session *s);
/* status 0: durable (reply 250 with qid); else reply 451/452 */
void smtp_session_commit_done(struct smtp_session *s, int status, int err_no, const char *reason);
/* smtp_session_tls_done - the STARTTLS handshake succeeded: the session
 * forgets HELO and any transaction (RFC 3207 4.2) and reads commands again;
 * tls_desc (protocol and cipher, may be NULL) is logged */
void smtp_session_tls_done(struct smtp_session *s, const char *tls_desc);
/* smtp_session_auth_done - the outcome of ops->auth_check: ok is an enum
 * smtp_auth_result value (above); account is the canonical account for
 * SMTP_AUTH_OK (NULL or unusable: the user name as sent is kept), ignored
 * otherwise. A call with no check in flight is logged and ignored. */
void smtp_session_auth_done(struct smtp_session *s, int ok, const char *account);
/* smtp_session_auth_user - the authenticated account, NULL if none */
const char *smtp_session_auth_user(const struct smtp_session *s);

/* smtp_session_stage_done - the outcome of ops->stage_check: CONTINUE
 * goes on (the command's success reply); REJECT / TEMPFAIL reply v->reply
 * or the table's (CONNECT: 554 / 421 and close; HELO: the name is
 * forgotten; MAIL, DATA: the transaction is dropped; RCPT: its recipients
 * are removed again); SHUTDOWN replies 421 and closes; DISCARD goes on as
 * CONTINUE (the implementation discards at the end of data). A call with
 * no check in flight is logged and ignored. */
void smtp_session_stage_done(struct smtp_session *s, const struct smtp_verdict *v);
/* smtp_session_commit_verdict - instead of smtp_session_commit_done, the
 * implementation of ops->msg_commit refuses the message (REJECT 5xx,
 * TEMPFAIL 4xx, SHUTDOWN 421 and close) or drops it (DISCARD: the client
 * gets the usual 250 with the queue id, msg_accepted is not called). The
 * queue file handed to msg_commit is the implementation's to abort.
 * CONTINUE here is a caller bug and is taken as TEMPFAIL. */
void smtp_session_commit_verdict(struct smtp_session *s, const struct smtp_verdict *v);

/* accessors for the policy checks */
/* smtp_session_helo - the sanitised HELO/EHLO name, NULL before HELO */
const char *smtp_session_helo(const struct smtp_session *s);
/* smtp_session_esmtp - 1 after EHLO, 0 after HELO */
int smtp_session_esmtp(const struct smtp_session *s);
/* smtp_session_envelope - the transaction's envelope (sender, recipients,
 * qid once the queue file is open). The implementation of msg_commit may
 * change it (sender, recipients) before it commits the queue file. */
struct envelope *smtp_session_envelope(struct smtp_session *s);
/* smtp_session_client - the client as given to smtp_session_new; strings
 * are the session's copies; tls turns 1 after STARTTLS */
const struct smtp_client_info *smtp_session_client(const struct smtp_session *s);
/* smtp_session_rcpt - at SMTP_STAGE_RCPT: the address of the RCPT command
 * being checked as the client gave it ("local@domain"), and in *first /
 * *n (may be NULL) the envelope recipients it added; "" elsewhere */
const char *smtp_session_rcpt(const struct smtp_session *s, size_t *first, size_t *n);
/* smtp_session_esmtp_args - at SMTP_STAGE_MAIL / _RCPT: the command's
 * parameters, "KEY=VALUE" or "KEY" each, NULL-terminated (never NULL) */
const char *const *smtp_session_esmtp_args(const struct smtp_session *s);

int smtp_session_wants_input(const struct smtp_session *s);
unsigned smtp_session_timeout_secs(const struct smtp_session *s);
/* smtp_session_closed - 1 once ops->close has been called */
int smtp_session_closed(const struct smtp_session *s);
const char *smtp_session_state_str(const struct smtp_session *s);

#endif
