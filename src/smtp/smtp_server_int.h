/*
 * smtp_server_int - private to the SMTP session: the session structure and
 * the functions smtp_server.c (the core: input loop, content, interface)
 * and smtp_server_verbs.c (the verb table: check and proceed per command)
 * share. Nothing outside src/smtp/smtp_server*.c includes it.
 */
#ifndef TERN_SMTP_SMTP_SERVER_INT_H
#define TERN_SMTP_SMTP_SERVER_INT_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/log.h"
#include "queue/envelope.h"
#include "smtp/smtp_parse.h"
#include "smtp/smtp_reply.h"
#include "smtp/smtp_server.h"

/* session state; the BDAT octet reader is a mode on top (s->chunk_active) */
enum smtp_state {
	SMTP_STATE_INIT,     /* created, greeting not sent */
	SMTP_STATE_GREETED,  /* greeting sent, no HELO/EHLO yet */
	SMTP_STATE_READY,    /* HELO/EHLO done, no transaction */
	SMTP_STATE_MAIL,     /* MAIL accepted, no recipient yet */
	SMTP_STATE_RCPT,     /* at least one RCPT accepted */
	SMTP_STATE_DATA,     /* reading the DATA stream */
	SMTP_STATE_BDAT,     /* between BDAT chunks (queue file open) */
	SMTP_STATE_COMMIT,   /* waiting for smtp_session_commit_done */
	SMTP_STATE_TLS,      /* 220 to STARTTLS sent, waiting for smtp_session_tls_done */
	SMTP_STATE_AUTH,     /* 334 sent: the next line is an AUTH response */
	SMTP_STATE_AUTH_WAIT, /* ops->auth_check called, waiting for smtp_session_auth_done */
	SMTP_STATE_CLOSED,   /* close requested; input ignored */
};

/* the SASL mechanisms of AUTH */
enum smtp_auth_mech {
	SMTP_AUTH_MECH_NONE,
	SMTP_AUTH_MECH_PLAIN, /* RFC 4616 */
	SMTP_AUTH_MECH_LOGIN, /* draft-murchison-sasl-login */
};
const char *smtp_auth_mech_str(enum smtp_auth_mech m);

#define SMTP_AUTH_USER_MAX 255 /* octets of an authentication identity */

/* "no reply": a check lets the command proceed */
#define SMTP_R_NONE SMTP_R_COUNT

/* parameters of MAIL / RCPT, parsed by the check, used by the proceed */
struct smtp_txn_params {
	uint64_t size;
	int has_size;
	enum env_body body;
	int smtputf8;
	enum env_ret ret;
	char envid[SMTP_ENVID_MAX + 1];
	int has_envid;
	unsigned notify;
	char orcpt[SMTP_ORCPT_MAX + 1];
	int has_orcpt;
	/* BDAT */
	uint64_t chunk_size;
	int chunk_last;
	int chunk_junk; /* size parsed but the rest of the argument is bad */
};

/* header-section scanner for BDAT content: counts Received: fields */
struct smtp_hdr_scan {
	int in_headers;
	size_t col;     /* octets in the current line, CR not counted */
	size_t match;   /* progress matching "received:" */
	int matching;
	size_t received;
};

struct smtp_session {
	const struct conf *conf;
	const struct smtp_server_ops *ops;
	void *ctx;
	/* our copies of the client info strings */
	char *addr;
	char *name;
	char *session_id;
	enum smtp_listener_kind kind;
	int trusted;
	int tls;
	int tls_available;
	int hide_client;
	struct smtp_client_info info; /* the above, for smtp_session_client */

	enum smtp_state state;
	struct buf in;     /* capped network input */
	struct strbuf out; /* replies of the current batch */
	int depth;         /* public entry points on the stack */
	int close_called;
	int eof;           /* no more input will come */
	int discard_line;  /* skipping the rest of an over-long line */
	enum smtp_reply_id pending_close; /* 421 to send once the commit is done */
	const char *close_reason;

	char *helo;        /* sanitised HELO/EHLO argument */
	int esmtp;
	char *auth_user;   /* the authenticated account, NULL before AUTH */
	/* the AUTH exchange in progress (SMTP_STATE_AUTH / _AUTH_WAIT) */
	enum smtp_auth_mech auth_mech;
	int auth_step;     /* LOGIN: 0 username expected, 1 password */
	char auth_login_user[SMTP_AUTH_USER_MAX + 1];
	char *auth_name;   /* user name being checked, for logs */
	int wipe_line;     /* the command line held secrets: cleanse it */
	unsigned errors;
	unsigned long ncmds, nmsgs, nrcpts_ok, nrcpts_bad;

	/* the transaction */
	struct envelope env;
	struct queue_file *qf;
	int txn_smtputf8;
	enum env_body txn_body;
	size_t nrcpt;          /* accepted RCPT commands */
	char *first_rcpt;      /* for Received "for" */
	uint64_t content_size; /* content octets received (unstuffed) */
	uint64_t stored;       /* octets handed to msg_write, header included */
	int oversize;
	int write_errno;
	struct smtp_data data;
	struct smtp_hdr_scan scan;

	/* the BDAT chunk being read */
	int chunk_active;
	uint64_t chunk_left;
	uint64_t chunk_size;
	int chunk_last;
	int chunk_discard;
	enum smtp_reply_id chunk_err;
	const char *chunk_err_arg;

	struct smtp_txn_params p; /* scratch for the current command */

	/* policy checks (ops->stage_check) */
	int stage_wait;            /* a check is in flight: smtp_session_stage_done */
	enum smtp_stage stage;     /* the stage being checked */
	int txn_told;              /* the MAIL stage ran: ops->txn_end is owed */
	char stage_rcpt[SMTP_PATH_MAX + 1]; /* RCPT stage: the address as given */
	size_t stage_rcpt_first, stage_rcpt_n; /* ... and the recipients it added */
	/* MAIL / RCPT stage: the parameters as "KEY=VALUE", NUL-separated in
	 * stage_argbuf (they came from one command line) */
	const char *stage_args[SMTP_PARAMS_MAX + 1];
	char stage_argbuf[SMTP_LINE_MAX + SMTP_PARAMS_MAX];
	struct smtp_verdict chunk_verdict; /* BDAT refused at the DATA stage */
	int chunk_has_verdict;
};

/* shared by smtp_server.c (the session core) and smtp_server_verbs.c */
char *smtp_server_dup(const char *v, int *failed);
void smtp_server_log_start(const struct smtp_session *s, struct log_line *l, enum log_level lvl,
			   const char *event);
void smtp_server_reply(struct smtp_session *s, enum smtp_reply_id id, const char *arg);
void smtp_server_txn_abort(struct smtp_session *s);
int smtp_server_txn_open(const struct smtp_session *s);
void smtp_server_close(struct smtp_session *s, const char *reason);
void smtp_server_oom(struct smtp_session *s);
void smtp_server_sanitise(char *dst, size_t dstlen, const char *src, size_t n);
enum smtp_reply_id smtp_server_msg_start(struct smtp_session *s);
void smtp_server_msg_reject(struct smtp_session *s, enum smtp_reply_id id, const char *arg,
			    const char *why);
void smtp_server_chunk_end(struct smtp_session *s);
/* smtp_server_waiting - a commit or an auth check is in flight */
int smtp_server_waiting(const struct smtp_session *s);
/* smtp_server_auth_response - one AUTH response line (no CRLF) in SMTP_STATE_AUTH */
void smtp_server_auth_response(struct smtp_session *s, const char *line, size_t len);
/* smtp_server_auth_end - leave the AUTH exchange, forget its state */
void smtp_server_auth_end(struct smtp_session *s);
/* smtp_server_auth_log - event=auth with the user, mechanism and outcome */
void smtp_server_auth_log(const struct smtp_session *s, const char *result);
/* smtp_server_stage_begin - ask ops->stage_check (or go on at once
 * without one); the stage's finish runs from smtp_session_stage_done */
void smtp_server_stage_begin(struct smtp_session *s, enum smtp_stage stage);
/* smtp_server_stage_args - keep a command's parameters for the MAIL/RCPT stage */
void smtp_server_stage_args(struct smtp_session *s, const struct smtp_cmd *cmd);
/* smtp_server_stage_finish - the verdict of a HELO/MAIL/RCPT/DATA stage
 * (smtp_server_verbs.c) */
void smtp_server_stage_finish(struct smtp_session *s, const struct smtp_verdict *v);
/* smtp_server_verdict_reply - reply a refusing verdict: its custom reply
 * when valid, else the table's row for kind and stage */
void smtp_server_verdict_reply(struct smtp_session *s, enum smtp_stage stage,
			       const struct smtp_verdict *v);
/* smtp_server_verdict_log - one event=reject/tempfail line for a verdict */
void smtp_server_verdict_log(const struct smtp_session *s, const char *stage,
			     const struct smtp_verdict *v);
/* smtp_server_command - parse one command line (no CRLF) and run its row */
void smtp_server_command(struct smtp_session *s, const char *line, size_t len);

#endif
