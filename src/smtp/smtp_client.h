/*
 * smtp_client - the outbound SMTP client session as a state machine with no
 * sockets: the mirror image of smtp_server.
 *
 * The driver (remote delivery) connects, then feeds the server's bytes in
 * (smtp_client_input) and reports EOF and timer expiry; the session sends
 * commands and content through a table of functions (struct
 * smtp_client_ops) and reports, once per message, a result for every
 * recipient through ops->done. Tests replace the ops and script the server.
 *
 * Flow (RFC 5321 3.3, 4.1.4): 220 greeting, EHLO (HELO if EHLO gets 5xx),
 * optionally STARTTLS and EHLO again, MAIL FROM with SIZE, BODY, SMTPUTF8,
 * RET, ENVID when offered, RCPT TO for each recipient (with NOTIFY, ORCPT
 * when DSN is offered), then DATA + dot-stuffed content or BDAT chunks,
 * the final reply, then the connection stays open for smtp_client_next or
 * smtp_client_quit. With PIPELINING, MAIL, every RCPT and DATA go in one
 * write and the replies are matched in order (RFC 2920).
 *
 * Guarantees:
 *  - a recipient is reported DELIVERED only after a 2xx reply to the end
 *    of the content (the dot, or BDAT LAST): losing the connection, a
 *    timeout, a protocol error or a 421 at any earlier point leaves every
 *    recipient without a final answer TEMPFAIL;
 *  - every recipient of a message gets exactly one result, once;
 *  - content goes out with CRLF line ends only (a bare CR or LF in the
 *    queue file becomes CRLF), so we never emit what another server might
 *    read as a different end of data (SMTP smuggling);
 *  - nothing the server says grows memory: replies go through the capped
 *    smtp_replyparse and protocol errors close the connection.
 *
 * Re-entrancy: ops callbacks must not call back into this session; call
 * smtp_client_next/quit/free after the smtp_client_* call that ran ->done
 * has returned.
 *
 * Exports:
 *   smtp_client_new/free          one session per connection
 *   smtp_client_input             bytes read from the server
 *   smtp_client_eof               the server closed (or the socket failed)
 *   smtp_client_timeout           the timer of smtp_client_timeout_secs fired
 *   smtp_client_writable          output drained after ops->write asked to pause
 *   smtp_client_tls_done          the driver finished the TLS handshake
 *   smtp_client_next              send another message on this connection
 *   smtp_client_quit              QUIT and close
 *   smtp_client_timeout_secs      the timeout for the current step
 *   smtp_client_state             current state; smtp_client_state_str
 *   smtp_client_caps              the capabilities of the last EHLO
 *   smtp_client_status_str, smtp_client_stage_str, smtp_client_tls_str
 *
 * AUTH (RFC 4954): when params carry auth_user/auth_pass, the session
 * authenticates after the EHLO that follows STARTTLS (PLAIN with an
 * initial response, RFC 4616; LOGIN when only LOGIN is offered), and only
 * then sends MAIL. The credentials never go out without TLS: no TLS, AUTH
 * not offered, no usable mechanism, or a 4xx/5xx answer to AUTH all end
 * the session with every recipient TEMPFAIL (stage AUTH, session_error),
 * as Postfix defers rather than bounces on SASL failures. The password is
 * wiped from the session's memory at smtp_client_free.
 * Trusts: nothing from the server. The envelope is trusted to come from
 * our queue, but addresses are checked for CR, LF and NUL before they are
 * written into a command.
 * Implements: RFC 5321 (client side: 3.3, 4.1.4, 4.2, 4.5.2 transparency,
 * 4.5.3.2 timeouts), RFC 1869, RFC 1870 (SIZE), RFC 6152 (8BITMIME),
 * RFC 2920 (PIPELINING), RFC 3030 (CHUNKING, BINARYMIME), RFC 3461 (DSN
 * parameters), RFC 3463 (enhanced codes), RFC 3207 (STARTTLS), RFC 6531
 * (SMTPUTF8), RFC 4954 + RFC 4616 (AUTH PLAIN, client side).
 */
#ifndef TERN_SMTP_SMTP_CLIENT_H
#define TERN_SMTP_SMTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "queue/envelope.h"
#include "smtp/smtp_replyparse.h"

struct smtp_client;

/* what happened to one recipient */
enum smtp_client_status {
	SMTP_CLIENT_DELIVERED,
	SMTP_CLIENT_TEMPFAIL,
	SMTP_CLIENT_PERMFAIL,
};
const char *smtp_client_status_str(enum smtp_client_status s);

/* the step a result belongs to ("in reply to ... command", for bounces) */
enum smtp_client_stage {
	SMTP_CLIENT_STAGE_CONNECT,   /* before or at the greeting */
	SMTP_CLIENT_STAGE_EHLO,      /* EHLO or HELO */
	SMTP_CLIENT_STAGE_STARTTLS,
	SMTP_CLIENT_STAGE_MAIL,
	SMTP_CLIENT_STAGE_RCPT,
	SMTP_CLIENT_STAGE_DATA,      /* the DATA command */
	SMTP_CLIENT_STAGE_CONTENT,   /* sending content, end of data, BDAT */
	SMTP_CLIENT_STAGE_LOCAL,     /* decided here without asking (e.g. 5.6.7) */
	SMTP_CLIENT_STAGE_AUTH,      /* AUTH toward a relayhost (RFC 4954) */
};
const char *smtp_client_stage_str(enum smtp_client_stage s);

/* STARTTLS policy, asked of ops->tls_policy after EHLO */
enum smtp_client_tls {
	SMTP_CLIENT_TLS_NONE,  /* do not use STARTTLS */
	SMTP_CLIENT_TLS_MAY,   /* opportunistic: use when offered, go on in plain text if refused */
	SMTP_CLIENT_TLS_MUST,  /* tempfail unless TLS is established */
};
const char *smtp_client_tls_str(enum smtp_client_tls t);

enum smtp_client_state {
	SMTP_CLIENT_S_GREETING,  /* waiting for 220 */
	SMTP_CLIENT_S_EHLO,
	SMTP_CLIENT_S_HELO,
	SMTP_CLIENT_S_STARTTLS,  /* sent STARTTLS, waiting for 220 */
	SMTP_CLIENT_S_TLS,       /* handshake in the driver's hands */
	SMTP_CLIENT_S_AUTH,      /* sent AUTH (or a LOGIN response), waiting for 334/235 */
	SMTP_CLIENT_S_MAIL,
	SMTP_CLIENT_S_RCPT,
	SMTP_CLIENT_S_DATA,      /* waiting for 354 */
	SMTP_CLIENT_S_CONTENT,   /* sending content after 354 */
	SMTP_CLIENT_S_DOT,       /* waiting for the reply to the end of data */
	SMTP_CLIENT_S_BDAT,      /* sending BDAT chunks / waiting for their replies */
	SMTP_CLIENT_S_DRAIN,     /* reading replies to pipelined commands after a failure */
	SMTP_CLIENT_S_RSET,      /* ending a failed transaction, keeping the connection */
	SMTP_CLIENT_S_IDLE,      /* open, no transaction: smtp_client_next or _quit */
	SMTP_CLIENT_S_QUIT,      /* sent QUIT */
	SMTP_CLIENT_S_CLOSED,
};
const char *smtp_client_state_str(enum smtp_client_state s);

#define SMTP_CLIENT_TEXT_MAX 512
#define SMTP_CLIENT_ENH_MAX SMTP_REP_ENH_MAX

/* the result for one recipient */
struct smtp_client_rcpt_result {
	size_t index;                   /* into the envelope's rcpts */
	enum smtp_client_status status;
	enum smtp_client_stage stage;   /* which command the reply answered */
	int code;                       /* the reply code, 0 when none (lost connection, local) */
	int remote;                     /* 1: code/enh/text are what the server said */
	char enh[SMTP_CLIENT_ENH_MAX];  /* RFC 3463 code ("" if the server gave none) */
	char text[SMTP_CLIENT_TEXT_MAX]; /* reply text (printable ASCII, lines joined) or our diagnostic */
	const char *host;               /* params->remote_host, for Diagnostic-Code / Remote-MTA */
};

/* what ops->done gets: valid only during the call */
struct smtp_client_result {
	const struct smtp_client_rcpt_result *rcpts;
	size_t nrcpts;
	/* 1 when the failure concerns the connection or the host, not this
	 * message (greeting, EHLO, TLS, protocol error, timeout, lost
	 * connection, 421): the driver may try the next MX host */
	int session_error;
	int reusable;  /* the connection is open and idle: smtp_client_next may follow */
	int tls;       /* the message went under TLS */
};

/* timeouts in seconds; 0 picks the default shown (RFC 5321 4.5.3.2) */
struct smtp_client_timeouts {
	unsigned greeting;   /* 300: initial 220 */
	unsigned helo;       /* 300: EHLO, HELO, STARTTLS */
	unsigned mail;       /* 300 */
	unsigned rcpt;       /* 300 */
	unsigned data_init;  /* 120: DATA's 354 */
	unsigned data_block; /* 180: each block of content sent, each BDAT reply */
	unsigned data_end;   /* 600: reply to the end of data */
	unsigned rset;       /* 60: RSET, QUIT */
	unsigned idle;       /* 60: an idle connection kept for reuse */
};

struct smtp_client_params {
	const char *helo_name;          /* our hostname for EHLO/HELO */
	const char *remote_host;        /* "mx.example.net[192.0.2.1]", for results; may be NULL */
	const struct envelope *env;     /* borrowed until ->done */
	const size_t *rcpt_idx;         /* indexes of env->rcpts to deliver; NULL = all */
	size_t nrcpt_idx;
	uint64_t size;                  /* content size in bytes (for SIZE=) */
	int prefer_bdat;                /* use BDAT whenever CHUNKING is offered (BINARYMIME always does) */
	struct smtp_client_timeouts timeouts;
	/* AUTH credentials (both or neither; copied by smtp_client_new and
	 * ignored by smtp_client_next: authentication is per connection).
	 * At most 255 octets each, no control characters. Sent only under TLS. */
	const char *auth_user;
	const char *auth_pass;
};

struct smtp_client_ops {
	/* write - queue bytes for the server. Return 0 to take more now, 1 when
	 * the output is full: content stops until smtp_client_writable */
	int (*write)(void *ctx, const char *p, size_t n);
	/* close - close the connection once the written bytes are sent */
	void (*close)(void *ctx);
	/* content_read - next bytes of the message content (CRLF line ends,
	 * not dot-stuffed): bytes read, 0 at the end, -1 on error */
	ssize_t (*content_read)(void *ctx, char *buf, size_t cap);
	/* done - the results of one message; see struct smtp_client_result */
	void (*done)(void *ctx, const struct smtp_client_result *res);
	/* tls_policy - may be NULL (no TLS): asked after EHLO (offered: 1 if
	 * the server offered STARTTLS) */
	enum smtp_client_tls (*tls_policy)(void *ctx, int offered);
	/* starttls - begin the TLS handshake on the connection; the driver
	 * answers with smtp_client_tls_done. NULL: TLS is never used */
	void (*starttls)(void *ctx);
};

/*
 * smtp_client_new - a session for a connection just opened; it waits for
 * the greeting. params (and what it points to) are copied, except env,
 * which must stay valid until ->done. NULL on bad params (no helo_name,
 * no env, a recipient index out of range, only one of auth_user/auth_pass,
 * or either of them empty, over 255 octets or with a control character).
 */
struct smtp_client *smtp_client_new(const struct smtp_client_params *p, const struct smtp_client_ops *ops,
				    void *ctx);
/* smtp_client_free - release the session (does not call ops) */
void smtp_client_free(struct smtp_client *c);

void smtp_client_input(struct smtp_client *c, const char *p, size_t n);
void smtp_client_eof(struct smtp_client *c);
void smtp_client_timeout(struct smtp_client *c);
void smtp_client_writable(struct smtp_client *c);
/* smtp_client_tls_done - ok: handshake succeeded, EHLO again; else fail */
void smtp_client_tls_done(struct smtp_client *c, int ok);
/* smtp_client_next - start another message (state IDLE only); -1 if not
 * possible (then nothing was sent and ->done will not be called) */
int smtp_client_next(struct smtp_client *c, const struct smtp_client_params *p);
/* smtp_client_quit - QUIT when idle; otherwise close. A message in
 * flight (e.g. the daemon is stopping) is reported first through ->done,
 * its recipients without a final answer TEMPFAIL */
void smtp_client_quit(struct smtp_client *c);

unsigned smtp_client_timeout_secs(const struct smtp_client *c);
enum smtp_client_state smtp_client_state(const struct smtp_client *c);
const struct smtp_caps *smtp_client_caps(const struct smtp_client *c);

#endif
