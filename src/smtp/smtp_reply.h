/*
 * smtp_reply - every SMTP reply Tern sends, from one table: code, enhanced
 * status code (RFC 3463, RFC 5248) and text.
 *
 * Exports:
 *   enum smtp_reply_id       one constant per reply
 *   smtp_reply_def           the table row (code, enhanced code, text)
 *   smtp_reply_add           append "CODE ENH TEXT\r\n" to a strbuf; an entry's
 *                            text may hold one %s filled from arg (sanitised:
 *                            control bytes become '?', length capped)
 *   smtp_reply_add_utf8      the same, keeping well-formed UTF-8 in arg
 *                            (only for SMTPUTF8 sessions, RFC 6531 3.7.4)
 *   smtp_reply_add_custom    a reply not in the table (text sanitised)
 *   smtp_reply_add_multi     "250-a\r\n250-b\r\n250 c\r\n" (EHLO, HELP)
 *   smtp_reply_is_perm/temp  5xx / 4xx, for transaction and bounce decisions
 *   smtp_reply_id_str        constant name for logs
 * Trusts: arg is untrusted and sanitised before it enters a reply.
 * Implements: RFC 5321 4.2 (reply lines), RFC 2034 / RFC 3463 / RFC 5248
 * (enhanced status codes: none on the greeting, EHLO/HELO or 354).
 */
#ifndef TERN_SMTP_SMTP_REPLY_H
#define TERN_SMTP_SMTP_REPLY_H

#include "core/buf.h"

enum smtp_reply_id {
	SMTP_R_GREETING,          /* 220 <host> ESMTP Tern */
	SMTP_R_PREGREET,          /* 554 5.5.0 talked before the greeting */
	SMTP_R_BYE,               /* 221 2.0.0 Bye */
	SMTP_R_OK,                /* 250 2.0.0 Ok */
	SMTP_R_HELO,              /* 250 <host> */
	SMTP_R_MAIL_OK,           /* 250 2.1.0 Ok */
	SMTP_R_RCPT_OK,           /* 250 2.1.5 Ok */
	SMTP_R_QUEUED,            /* 250 2.0.0 Ok: queued as %s */
	SMTP_R_BDAT_OK,           /* 250 2.0.0 %s octets received */
	SMTP_R_DATA_GO,           /* 354 End data with <CR><LF>.<CR><LF> */
	SMTP_R_VRFY,              /* 252 2.5.0 Cannot VRFY user, but will accept message */
	SMTP_R_HELP,              /* 214 2.0.0 ... */
	SMTP_R_UNKNOWN_CMD,       /* 500 5.5.1 Command unrecognized */
	SMTP_R_LINE_TOO_LONG,     /* 500 5.5.2 Line too long */
	SMTP_R_BARE_LF,           /* 500 5.5.2 Bare <LF> or <CR> not allowed (RFC 5321 2.3.8) */
	SMTP_R_SYNTAX,            /* 501 5.5.4 Syntax error: %s */
	SMTP_R_ADDR_SYNTAX,       /* 501 5.1.3 Bad address syntax: %s */
	SMTP_R_SENDER_SYNTAX,     /* 501 5.1.7 Bad sender address syntax: %s */
	SMTP_R_NOT_IMPLEMENTED,   /* 502 5.5.1 Command not implemented */
	SMTP_R_BAD_SEQUENCE,      /* 503 5.5.1 Bad sequence of commands: %s */
	SMTP_R_PARAM_UNKNOWN,     /* 555 5.5.4 Unsupported parameter: %s */
	SMTP_R_PARAM_BAD,         /* 501 5.5.4 Bad parameter value: %s */
	SMTP_R_SIZE_EXCEEDED,     /* 552 5.3.4 Message size exceeds fixed limit */
	SMTP_R_NO_SUCH_USER,      /* 550 5.1.1 Recipient address rejected: User unknown */
	SMTP_R_RELAY_DENIED,      /* 554 5.7.1 Relay access denied */
	SMTP_R_TOO_MANY_RCPTS,    /* 452 4.5.3 Too many recipients */
	SMTP_R_NO_VALID_RCPTS,    /* 554 5.5.1 No valid recipients */
	SMTP_R_LOOP,              /* 554 5.4.6 Too many Received headers: mail loop */
	SMTP_R_DATA_FLAW,         /* 550 5.6.0 Message refused: %s */
	SMTP_R_TEMP_QUEUE,        /* 451 4.3.0 Temporary failure: message not queued */
	SMTP_R_DISK_FULL,         /* 452 4.3.1 Insufficient system storage */
	SMTP_R_TOO_MANY_ERRORS,   /* 421 4.7.0 Too many errors */
	SMTP_R_TIMEOUT,           /* 421 4.4.2 Timeout exceeded */
	SMTP_R_SHUTDOWN,          /* 421 4.3.2 Service shutting down */
	SMTP_R_TOO_MANY_CONNS,    /* 421 4.7.0 Too many connections */
	SMTP_R_NO_MEMORY,         /* 421 4.3.0 Out of resources */
	SMTP_R_UTF8_REQUIRED,     /* 553 5.6.7 SMTPUTF8 needed for this address */
	SMTP_R_BODY_UNSUPPORTED,  /* 504 5.5.4 BODY type not supported */
	SMTP_R_BDAT_NEEDS_BINARY, /* 503 5.5.1 BINARYMIME requires BDAT */
	SMTP_R_TLS_READY,         /* 220 2.0.0 Ready to start TLS */
	SMTP_R_TLS_UNAVAILABLE,   /* 454 4.7.0 TLS not available */
	SMTP_R_AUTH_REQUIRED,     /* 530 5.7.0 Authentication required */
	/* SMTP AUTH (RFC 4954 4, 6; RFC 5248) and submission policy (RFC 6409) */
	SMTP_R_AUTH_OK,           /* 235 2.7.0 Authentication successful */
	SMTP_R_AUTH_CHALLENGE,    /* 334 %s (base64 challenge, may be empty) */
	SMTP_R_AUTH_INVALID,      /* 535 5.7.8 Authentication credentials invalid */
	SMTP_R_AUTH_ENCRYPT,      /* 538 5.7.11 Encryption required for requested authentication mechanism */
	SMTP_R_AUTH_MECH,         /* 504 5.5.4 Unrecognized authentication type */
	SMTP_R_AUTH_CANCELLED,    /* 501 5.0.0 Authentication cancelled */
	SMTP_R_AUTH_BAD_RESPONSE, /* 501 5.5.2 Cannot decode response */
	SMTP_R_AUTH_LINE_TOO_LONG, /* 500 5.5.6 Authentication exchange line is too long */
	SMTP_R_AUTH_TEMPFAIL,     /* 454 4.7.0 Temporary authentication failure */
	SMTP_R_AUTH_LOCKED,       /* 421 4.7.0 Too many authentication failures */
	SMTP_R_SENDER_NOT_OWNED,  /* 553 5.7.1 Sender address rejected: not owned by user %s */
	SMTP_R_RATE_LIMIT,        /* 450 4.7.1 Rate limit exceeded, try again later */
	/* policy verdicts (milters, mail authentication) without a reply of their own */
	SMTP_R_POLICY_CONN_REJECT,   /* 554 5.7.1 Connection refused by policy */
	SMTP_R_POLICY_CONN_TEMPFAIL, /* 421 4.7.1 Service temporarily unavailable, closing connection */
	SMTP_R_POLICY_REJECT,     /* 550 5.7.1 %s rejected by policy */
	SMTP_R_POLICY_TEMPFAIL,   /* 451 4.7.1 %s temporarily rejected by policy, try again later */
	SMTP_R_POLICY_SHUTDOWN,   /* 421 4.7.0 Connection closed by policy */
	SMTP_R_COUNT              /* keep last */
};

struct smtp_reply_def {
	int code;
	const char *enh; /* NULL for replies before EHLO that carry none (greeting) */
	const char *text;
};

#define SMTP_REPLY_ARG_MAX 200 /* octets of a sanitised %s argument */

/* smtp_reply_def - the table row; an out-of-range id gets a 451 4.3.0 row */
const struct smtp_reply_def *smtp_reply_def(enum smtp_reply_id id);
const char *smtp_reply_id_str(enum smtp_reply_id id);
/* smtp_reply_add - append the reply line; arg fills a %s (may be NULL);
 * octets < 0x20, 0x7f and >= 0x80 in arg become '?' */
void smtp_reply_add(struct strbuf *out, enum smtp_reply_id id, const char *arg);
/* smtp_reply_add_utf8 - as smtp_reply_add, but well-formed UTF-8 is kept */
void smtp_reply_add_utf8(struct strbuf *out, enum smtp_reply_id id, const char *arg);
/* smtp_reply_add_custom - a reply not in the table (e.g. a remote's text
 * relayed): code outside 200..599 becomes 451, a malformed enh is dropped,
 * text is sanitised like arg and capped to 400 octets */
void smtp_reply_add_custom(struct strbuf *out, int code, const char *enh, const char *text);
/* smtp_reply_add_multi - a multi-line reply, one line per lines[i]
 * (sanitised); n == 0 gives "CODE\r\n" */
void smtp_reply_add_multi(struct strbuf *out, int code, const char *const *lines, size_t n);
/* smtp_reply_is_perm / _temp - the reply is 5xx / 4xx */
int smtp_reply_is_perm(enum smtp_reply_id id);
int smtp_reply_is_temp(enum smtp_reply_id id);

#endif
