/*
 * milter - the MTA side of the Sendmail milter protocol (version 6), so
 * Tern can use rspamd, OpenDKIM, OpenDMARC, ClamAV and other milters the
 * way Postfix does. Asynchronous on libevent: no call blocks the loop.
 *
 * A chain (configuration: the `milters` list, timeouts, default action) is
 * made once; each SMTP connection makes a session, which connects to every
 * milter of the chain at once and negotiates, then reports each stage of
 * the SMTP dialogue. A stage is run through the milters in chain order; the
 * first that does not answer "continue" decides the stage and later
 * milters do not see it. The message content goes to every milter still
 * in the transaction at the same time; at end of message every one of them
 * answers (with modifications) and the answers are combined in chain
 * order: the first refusal wins, else the modifications of all milters,
 * in chain order (each milter saw the original message).
 *
 * Exports:
 *   milter_chain_new / _free     the configured milters (addresses checked)
 *   milter_sess_new / _free      one per SMTP connection (free sends QUIT)
 *   milter_sess_connect, _helo, _mail, _rcpt, _data   one stage each: cb
 *                                once, later, with the chain's verdict
 *   milter_sess_set_qid          the queue id, for the {i} macro, once known
 *   milter_sess_set_tls          the session went under TLS (macros)
 *   milter_sess_content          the stored message bytes, any chunking
 *   milter_sess_eom              end of message: verdict + modifications
 *   milter_sess_abort            the transaction is over (RSET, refused, done)
 *   milter_sess_backlog          octets queued toward the slowest milter
 *   milter_default_str, milter_mod_kind_str   names for logs and conf
 * Trusts: nothing a milter sends (src/policy/milter_codec.c checks every
 * packet; a milter that breaks the protocol, times out or is down gets the
 * default action: TEMPFAIL answers 4xx at every stage while it is missing,
 * ACCEPT leaves it out for the rest of the connection). Memory per milter
 * is bounded: replies by MILTER_PKT_MAX, the replaced body by the chain's
 * max_body, queued output by max_body plus one packet limit.
 * Implements: the milter protocol v6 as libmilter (Sendmail 8.14+) speaks
 * it; Postfix's milter8.c behaviour for stage semantics (a refusal at
 * CONNECT/HELO holds for the connection, ACCEPT at CONNECT/HELO ends the
 * milter's part in the connection, DISCARD before end of message discards
 * the message at its end).
 */
#ifndef TERN_POLICY_MILTER_H
#define TERN_POLICY_MILTER_H

#include <stddef.h>

#include "core/buf.h"
#include "smtp/smtp_server.h"

struct event_base;
struct milter_chain;
struct milter_sess;

enum milter_default {
	MILTER_DEFAULT_TEMPFAIL, /* 4xx at each stage while a milter is missing */
	MILTER_DEFAULT_ACCEPT,   /* go on without that milter for the connection */
};
const char *milter_default_str(enum milter_default d);

struct milter_chain_conf {
	const char *const *addrs; /* "unix:/path", "inet:host:port", "inet6:[addr]:port" */
	size_t n;                 /* applied in this order */
	unsigned connect_timeout, cmd_timeout, eom_timeout; /* seconds; 0: 10, 30, 120 */
	enum milter_default on_error; /* milter down, timed out or broke the protocol */
	const char *hostname;     /* macro j (NULL: "localhost") */
	const char *daemon_name;  /* macro {daemon_name} (NULL: "tern") */
	size_t max_body;          /* cap on a replaced body (SMFIR_REPLBODY; over it:
				     TEMPFAIL with the table's reply) and on
				     output queued to one milter; 0: 64 MB */
};

/* milter_chain_new - check and resolve every address (host names are
 * looked up here, once: call at start-up or reload, not per session);
 * NULL with err set on a bad address */
struct milter_chain *milter_chain_new(struct event_base *base, const struct milter_chain_conf *c,
				      char *err, size_t errlen);
/* milter_chain_free - sessions made from the chain must be freed first */
void milter_chain_free(struct milter_chain *ch);
/* milter_chain_size - number of milters */
size_t milter_chain_size(const struct milter_chain *ch);

struct milter_conninfo {
	const char *client_addr;  /* "192.0.2.1", "2001:db8::1" (NULL: unknown) */
	unsigned short client_port;
	const char *client_name;  /* reverse name or NULL ("[addr]" is sent) */
	int tls;                  /* the session is under TLS */
	const char *session_id;   /* for logs */
	const char *if_addr;      /* our address the client reached ({if_addr},
				     {daemon_addr}); may be NULL */
	const char *tls_version;  /* {tls_version}, e.g. "TLSv1.3"; may be NULL */
	const char *tls_cipher;   /* {cipher}; may be NULL */
};

/* milter_sess_new - starts connecting to every milter; never NULL */
struct milter_sess *milter_sess_new(struct milter_chain *ch, const struct milter_conninfo *ci);
/* milter_sess_free - QUIT to each milter, close; no callback runs after */
void milter_sess_free(struct milter_sess *s);

/* a stage's callback: v is the combined verdict (CONTINUE, REJECT,
 * TEMPFAIL, SHUTDOWN; DISCARD only at end of message); v->reply is "" for
 * the table's reply or a milter's checked SMFIR_REPLYCODE text. Runs
 * exactly once, from the event loop, never inside the call that started
 * the stage. One stage at a time per session. */
typedef void (*milter_cb)(void *arg, const struct smtp_verdict *v);

void milter_sess_connect(struct milter_sess *s, milter_cb cb, void *arg);
void milter_sess_helo(struct milter_sess *s, const char *helo, milter_cb cb, void *arg);

/* the transaction's macros (copied; NULL fields are not sent) */
struct milter_macros {
	const char *qid, *auth_user, *mail_addr, *rcpt_addr;
	const char *auth_type; /* SASL mechanism, {auth_type} */
};
/* milter_sess_mail - from without brackets ("" = null sender); esmtp_args
 * "KEY=VALUE" each, NULL-terminated, may be NULL. Starts a transaction */
void milter_sess_mail(struct milter_sess *s, const char *from, const char *const *esmtp_args,
		      const struct milter_macros *m, milter_cb cb, void *arg);
void milter_sess_rcpt(struct milter_sess *s, const char *rcpt, const char *const *esmtp_args,
		      const struct milter_macros *m, milter_cb cb, void *arg);
void milter_sess_data(struct milter_sess *s, milter_cb cb, void *arg);
/* milter_sess_set_qid - {i} from now on (DATA, headers, end of message) */
void milter_sess_set_qid(struct milter_sess *s, const char *qid);
/* milter_sess_set_tls - after STARTTLS: {tls_version}, {cipher} (may be NULL) */
void milter_sess_set_tls(struct milter_sess *s, const char *version, const char *cipher);
/* milter_sess_content - the raw message as stored (CRLF), after the DATA
 * stage continued; the header section goes out field by field
 * (SMFIC_HEADER), then SMFIC_EOH, then body chunks of at most 65535 octets,
 * queued per milter and written one reply at a time (without waiting
 * under the milter's SMFIP_NR_* flags). Replies are collected as they
 * come; a refusal is kept for the end of message, and that milter gets
 * nothing more of the message. */
void milter_sess_content(struct milter_sess *s, const char *p, size_t n);

enum milter_mod_kind {
	MILTER_MOD_ADDHEADER,  /* name, value */
	MILTER_MOD_INSHEADER,  /* index = fields before it (0: top), name, value */
	MILTER_MOD_CHGHEADER,  /* index = occurrence of name, 1-based; value "" = delete */
	MILTER_MOD_CHGFROM,    /* value = address ("" = <>), args or NULL */
	MILTER_MOD_ADDRCPT,    /* value = address, args or NULL */
	MILTER_MOD_DELRCPT,    /* value = address */
	MILTER_MOD_QUARANTINE, /* value = reason */
};
const char *milter_mod_kind_str(enum milter_mod_kind k);

struct milter_mod {
	enum milter_mod_kind kind;
	unsigned index;
	char *name;   /* header field name (RFC 5322 ftext, checked), else NULL */
	char *value;  /* header: the text after "name: " (write name, ": ", value),
			 line breaks only as CRLF + white space; address; reason */
	char *args;   /* CHGFROM/ADDRCPT ESMTP arguments or NULL */
	const char *milter; /* the milter's address, for logs */
};

struct milter_mods {
	struct milter_mod *v;
	size_t n; /* in the order received, milters in chain order */
	int body_replaced;
	struct strbuf body; /* SMFIR_REPLBODY chunks joined, line ends made CRLF,
			       ending in CRLF; at most max_body octets */
};

/* end of message: v as for milter_cb (DISCARD possible); mods valid during
 * the call only (copy what is needed), empty unless v->kind is CONTINUE */
typedef void (*milter_eom_cb)(void *arg, const struct smtp_verdict *v,
			      const struct milter_mods *mods);
void milter_sess_eom(struct milter_sess *s, milter_eom_cb cb, void *arg);
/* milter_sess_abort - RSET / transaction end: SMFIC_ABORT to each milter
 * still in the transaction (none after an end of message that ran);
 * forgets the per-message state. Meant for when no stage is pending; if
 * one is, it is done just before that stage's callback runs. */
void milter_sess_abort(struct milter_sess *s);
/* milter_sess_backlog - octets waiting to be written to the milter with
 * the most; a caller may stop reading its client while this is large */
size_t milter_sess_backlog(const struct milter_sess *s);

#endif
