/*
 * smtp_client - outbound SMTP session as a state machine with no sockets.
 * See smtp_client.h for the interface and the guarantees.
 *
 * Replies are matched to commands by the state alone: without PIPELINING
 * each command is sent when the previous reply arrives; with it, MAIL, the
 * RCPTs and DATA are sent at once and the same states then consume their
 * replies in order (RFC 2920 3.1). After a failure in a pipelined group the
 * remaining replies are drained (S_DRAIN) before RSET, so the reply stream
 * never goes out of step with the commands.
 *
 * Every recipient has a result slot and a "settled" flag. A slot is settled
 * by a negative RCPT reply, by the reply to the end of data (or BDAT LAST),
 * or by a failure that ends the transaction (then TEMPFAIL); only the reply
 * to the end of data can make it DELIVERED, so nothing else can report
 * success by mistake.
 *
 * Trusts: nothing from the server (smtp_replyparse is capped and strict;
 * unexpected replies are protocol errors). Envelope strings come from our
 * queue but are checked for CR, LF and NUL before going into a command.
 * Implements: RFC 5321 3.3, 4.1.1, 4.1.4, 4.2, 4.5.2, 4.5.3.2; RFC 1870,
 * RFC 6152, RFC 2920, RFC 3030, RFC 3461 4.1-4.4, RFC 3207, RFC 6531 3.4,
 * RFC 6533 3 (utf-8-addr-xtext for ORCPT), RFC 4954 4 + RFC 4616 (AUTH
 * PLAIN with an initial response; LOGIN as a fallback).
 *
 * AUTH sits between the (post-STARTTLS) EHLO and the first MAIL: every
 * path that would start the first transaction goes through auth_or_start,
 * which refuses to send credentials on a connection without TLS.
 */
#include "smtp/smtp_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "auth/sasl.h"
#include "core/buf.h"
#include "core/str.h"
#include "core/xalloc.h"

#define CONTENT_CHUNK 65536 /* bytes read from the queue file at a time; also the BDAT chunk */
#define AUTH_FIELD_MAX 255  /* RFC 4616: at most 255 octets per field */

/* which AUTH mechanism the session is in */
enum auth_mech {
	AUTH_MECH_NONE,
	AUTH_MECH_PLAIN,  /* AUTH PLAIN <initial response>: one reply */
	AUTH_MECH_LOGIN,  /* AUTH LOGIN, 334 user, 334 password, 235 */
};

struct smtp_client {
	enum smtp_client_state state;
	struct smtp_client_ops ops;
	void *ctx;

	/* connection */
	char *helo_name;
	char *remote_host;
	struct smtp_caps caps;
	int tls;
	enum smtp_client_tls tls_pol; /* ops->tls_policy's answer after the first EHLO */
	struct smtp_replyparse rp;
	struct smtp_rep rep; /* the reply being handled */
	struct strbuf out;   /* commands and stuffed content being composed */
	char *auth_user;     /* NULL: no AUTH */
	char *auth_pass;     /* wiped at free */
	int authed;          /* 235 received on this connection */
	enum auth_mech mech;
	int login_step;      /* LOGIN: responses sent after AUTH LOGIN (0, 1, 2) */

	/* the message */
	struct smtp_client_timeouts to;
	const struct envelope *env;
	uint64_t size;
	int prefer_bdat;
	int in_tx;        /* results not yet reported */
	int session_error;
	struct smtp_client_rcpt_result *res;
	unsigned char *settled;
	unsigned char *accepted;
	size_t nres;
	size_t *wire;     /* result slots whose RCPT goes to the server, in order */
	size_t nwire;
	size_t rcpt_next; /* next RCPT reply expected, index into wire */
	size_t naccepted;
	int pipelined;    /* this transaction's commands were sent as a group */
	int data_sent;    /* DATA is part of the pipelined group */
	int use_bdat;
	int utf8;         /* SMTPUTF8 on MAIL FROM */
	size_t drain;     /* S_DRAIN: replies still to read */

	/* content */
	char *cbuf;
	int paused;       /* ops->write asked to wait for smtp_client_writable */
	int bol;          /* dot-stuffing: at the beginning of a line */
	int pending_cr;
	size_t bdat_outstanding;
	int bdat_last_sent;
	int bdat_failed;
};

/* smtp_client_status_str - name for logs */
const char *smtp_client_status_str(enum smtp_client_status s)
{
	switch (s) {
	case SMTP_CLIENT_DELIVERED: return "delivered";
	case SMTP_CLIENT_TEMPFAIL: return "tempfail";
	case SMTP_CLIENT_PERMFAIL: return "permfail";
	}
	return "?";
}

/* smtp_client_stage_str - name for logs */
const char *smtp_client_stage_str(enum smtp_client_stage s)
{
	switch (s) {
	case SMTP_CLIENT_STAGE_CONNECT: return "connect";
	case SMTP_CLIENT_STAGE_EHLO: return "ehlo";
	case SMTP_CLIENT_STAGE_STARTTLS: return "starttls";
	case SMTP_CLIENT_STAGE_MAIL: return "mail";
	case SMTP_CLIENT_STAGE_RCPT: return "rcpt";
	case SMTP_CLIENT_STAGE_DATA: return "data";
	case SMTP_CLIENT_STAGE_CONTENT: return "content";
	case SMTP_CLIENT_STAGE_LOCAL: return "local";
	case SMTP_CLIENT_STAGE_AUTH: return "auth";
	}
	return "?";
}

/* smtp_client_tls_str - name for logs */
const char *smtp_client_tls_str(enum smtp_client_tls t)
{
	switch (t) {
	case SMTP_CLIENT_TLS_NONE: return "none";
	case SMTP_CLIENT_TLS_MAY: return "may";
	case SMTP_CLIENT_TLS_MUST: return "must";
	}
	return "?";
}

/* smtp_client_state_str - name for logs */
const char *smtp_client_state_str(enum smtp_client_state s)
{
	switch (s) {
	case SMTP_CLIENT_S_GREETING: return "greeting";
	case SMTP_CLIENT_S_EHLO: return "ehlo";
	case SMTP_CLIENT_S_HELO: return "helo";
	case SMTP_CLIENT_S_STARTTLS: return "starttls";
	case SMTP_CLIENT_S_TLS: return "tls";
	case SMTP_CLIENT_S_AUTH: return "auth";
	case SMTP_CLIENT_S_MAIL: return "mail";
	case SMTP_CLIENT_S_RCPT: return "rcpt";
	case SMTP_CLIENT_S_DATA: return "data";
	case SMTP_CLIENT_S_CONTENT: return "content";
	case SMTP_CLIENT_S_DOT: return "dot";
	case SMTP_CLIENT_S_BDAT: return "bdat";
	case SMTP_CLIENT_S_DRAIN: return "drain";
	case SMTP_CLIENT_S_RSET: return "rset";
	case SMTP_CLIENT_S_IDLE: return "idle";
	case SMTP_CLIENT_S_QUIT: return "quit";
	case SMTP_CLIENT_S_CLOSED: return "closed";
	}
	return "?";
}

/* state_stage - the stage a failure in the current state belongs to */
static enum smtp_client_stage state_stage(enum smtp_client_state s)
{
	switch (s) {
	case SMTP_CLIENT_S_GREETING: return SMTP_CLIENT_STAGE_CONNECT;
	case SMTP_CLIENT_S_EHLO:
	case SMTP_CLIENT_S_HELO: return SMTP_CLIENT_STAGE_EHLO;
	case SMTP_CLIENT_S_STARTTLS:
	case SMTP_CLIENT_S_TLS: return SMTP_CLIENT_STAGE_STARTTLS;
	case SMTP_CLIENT_S_AUTH: return SMTP_CLIENT_STAGE_AUTH;
	case SMTP_CLIENT_S_MAIL: return SMTP_CLIENT_STAGE_MAIL;
	case SMTP_CLIENT_S_RCPT:
	case SMTP_CLIENT_S_DRAIN: return SMTP_CLIENT_STAGE_RCPT;
	case SMTP_CLIENT_S_DATA: return SMTP_CLIENT_STAGE_DATA;
	default: return SMTP_CLIENT_STAGE_CONTENT;
	}
}

/* stage_phrase - "while ..." text for our own diagnostics */
static const char *stage_phrase(enum smtp_client_state s)
{
	switch (s) {
	case SMTP_CLIENT_S_GREETING: return "while receiving the initial server greeting";
	case SMTP_CLIENT_S_EHLO:
	case SMTP_CLIENT_S_HELO: return "while sending EHLO/HELO";
	case SMTP_CLIENT_S_STARTTLS:
	case SMTP_CLIENT_S_TLS: return "while starting TLS";
	case SMTP_CLIENT_S_AUTH: return "while authenticating";
	case SMTP_CLIENT_S_MAIL: return "while sending MAIL FROM";
	case SMTP_CLIENT_S_RCPT: return "while sending RCPT TO";
	case SMTP_CLIENT_S_DATA: return "while sending DATA command";
	case SMTP_CLIENT_S_CONTENT:
	case SMTP_CLIENT_S_BDAT: return "while sending message content";
	case SMTP_CLIENT_S_DOT: return "while sending end of data -- message may be sent more than once";
	default: return "after end of transaction";
	}
}

/* smtp_client_timeout_secs - the RFC 5321 4.5.3.2 timeout for the current step */
unsigned smtp_client_timeout_secs(const struct smtp_client *c)
{
	const struct smtp_client_timeouts *t = &c->to;

	switch (c->state) {
	case SMTP_CLIENT_S_GREETING: return t->greeting;
	case SMTP_CLIENT_S_EHLO:
	case SMTP_CLIENT_S_HELO:
	case SMTP_CLIENT_S_STARTTLS:
	case SMTP_CLIENT_S_TLS:
	case SMTP_CLIENT_S_AUTH: return t->helo;
	case SMTP_CLIENT_S_MAIL: return t->mail;
	case SMTP_CLIENT_S_RCPT:
	case SMTP_CLIENT_S_DRAIN: return t->rcpt;
	case SMTP_CLIENT_S_DATA: return t->data_init;
	case SMTP_CLIENT_S_CONTENT: return t->data_block;
	case SMTP_CLIENT_S_DOT: return t->data_end;
	case SMTP_CLIENT_S_BDAT: return c->bdat_last_sent && !c->paused ? t->data_end : t->data_block;
	case SMTP_CLIENT_S_RSET:
	case SMTP_CLIENT_S_QUIT: return t->rset;
	case SMTP_CLIENT_S_IDLE: return t->idle;
	case SMTP_CLIENT_S_CLOSED: return 0;
	}
	return t->mail;
}

/* smtp_client_state - current state */
enum smtp_client_state smtp_client_state(const struct smtp_client *c)
{
	return c->state;
}

/* smtp_client_caps - capabilities from the last EHLO (all 0 after HELO) */
const struct smtp_caps *smtp_client_caps(const struct smtp_client *c)
{
	return &c->caps;
}

/* ---- results ---- */

/* host_name - the remote host for diagnostics */
static const char *host_name(const struct smtp_client *c)
{
	return c->remote_host ? c->remote_host : "(unknown)";
}

/* set_result - settle one recipient */
static void set_result(struct smtp_client *c, size_t i, enum smtp_client_status st, enum smtp_client_stage stage,
		       int code, int remote, const char *enh, const char *text)
{
	struct smtp_client_rcpt_result *r = &c->res[i];

	r->status = st;
	r->stage = stage;
	r->code = code;
	r->remote = remote;
	snprintf(r->enh, sizeof(r->enh), "%s", enh ? enh : "");
	snprintf(r->text, sizeof(r->text), "%s", text ? text : "");
	c->settled[i] = 1;
}

/* set_result_rep - settle one recipient with the server's reply in c->rep */
static void set_result_rep(struct smtp_client *c, size_t i, enum smtp_client_stage stage)
{
	struct smtp_client_rcpt_result *r = &c->res[i];
	int cls = c->rep.code / 100;

	/* only the end of data can deliver; a stray class elsewhere is temporary */
	if (cls == 2 && stage == SMTP_CLIENT_STAGE_CONTENT)
		r->status = SMTP_CLIENT_DELIVERED;
	else
		r->status = cls == 5 ? SMTP_CLIENT_PERMFAIL : SMTP_CLIENT_TEMPFAIL;
	r->stage = stage;
	r->code = c->rep.code;
	r->remote = 1;
	snprintf(r->enh, sizeof(r->enh), "%s", c->rep.enh);
	smtp_replyparse_text(&c->rep, r->text, sizeof(r->text));
	c->settled[i] = 1;
}

/* fail_unsettled - settle every open recipient with a failure of ours */
static void fail_unsettled(struct smtp_client *c, enum smtp_client_status st, enum smtp_client_stage stage,
			   const char *enh, const char *text)
{
	for (size_t i = 0; i < c->nres; i++)
		if (!c->settled[i])
			set_result(c, i, st, stage, 0, 0, enh, text);
}

/* fail_unsettled_rep - settle every open recipient with the reply in c->rep
 * (a 2xx here would be a bug: callers pass failures only) */
static void fail_unsettled_rep(struct smtp_client *c, enum smtp_client_stage stage)
{
	for (size_t i = 0; i < c->nres; i++)
		if (!c->settled[i])
			set_result_rep(c, i, stage);
}

/* tx_finish - report the message's results once */
static void tx_finish(struct smtp_client *c, int reusable)
{
	if (!c->in_tx)
		return;
	/* a broken invariant would otherwise hand out garbage: never report
	 * an unsettled recipient, least of all as delivered */
	fail_unsettled(c, SMTP_CLIENT_TEMPFAIL, state_stage(c->state), "4.3.0", "internal error: no result");
	c->in_tx = 0;
	struct smtp_client_result res = {
		.rcpts = c->res,
		.nrcpts = c->nres,
		.session_error = c->session_error,
		.reusable = reusable,
		.tls = c->tls,
	};
	c->ops.done(c->ctx, &res);
}

/* conn_close - close the connection once */
static void conn_close(struct smtp_client *c)
{
	if (c->state == SMTP_CLIENT_S_CLOSED)
		return;
	c->state = SMTP_CLIENT_S_CLOSED;
	c->ops.close(c->ctx);
}

/* send_out - write the composed commands in c->out */
static void send_out(struct smtp_client *c)
{
	if (c->out.len > 0)
		(void)c->ops.write(c->ctx, c->out.s, c->out.len);
	strbuf_reset(&c->out);
}

/* send_cmd - write one command line (adds CRLF) */
static void send_cmd(struct smtp_client *c, const char *cmd)
{
	strbuf_reset(&c->out);
	strbuf_adds(&c->out, cmd);
	strbuf_add(&c->out, "\r\n", 2);
	send_out(c);
}

/* session_fail - a failure of the connection: open recipients TEMPFAIL,
 * report, then QUIT politely (quit) or just close */
static void session_fail(struct smtp_client *c, const char *enh, const char *text, int quit)
{
	fail_unsettled(c, SMTP_CLIENT_TEMPFAIL, state_stage(c->state), enh, text);
	c->session_error = 1;
	tx_finish(c, 0);
	if (quit && c->state != SMTP_CLIENT_S_CLOSED) {
		send_cmd(c, "QUIT");
		c->state = SMTP_CLIENT_S_QUIT;
	} else {
		conn_close(c);
	}
}

/* protocol_error - the server said something out of step: give up on it */
static void protocol_error(struct smtp_client *c, const char *what)
{
	char text[256];

	snprintf(text, sizeof(text), "protocol error: %s from %s %s", what, host_name(c), stage_phrase(c->state));
	session_fail(c, "4.5.0", text, 0);
}

/* session_fail_rep - the server refused the session (greeting, EHLO, TLS):
 * open recipients fail by the reply's class, then QUIT */
static void session_fail_rep(struct smtp_client *c)
{
	int cls = c->rep.code / 100;

	if (cls != 4 && cls != 5) {
		protocol_error(c, "unexpected reply");
		return;
	}
	fail_unsettled_rep(c, state_stage(c->state));
	c->session_error = 1;
	tx_finish(c, 0);
	send_cmd(c, "QUIT");
	c->state = SMTP_CLIENT_S_QUIT;
}

/* ---- commands ---- */

/* clean_str - 1 when s may go into a command line: no CR, LF (command
 * injection) and no NUL; all of it printable or UTF-8 */
static int clean_str(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 0;
	return 1;
}

/* has_8bit - any byte outside ASCII */
static int has_8bit(const char *s)
{
	for (; s && *s; s++)
		if ((unsigned char)*s >= 0x80)
			return 1;
	return 0;
}

/* xtext_ok - a value usable as xtext as it is (ENVID, typed ORCPT) */
static int xtext_ok(const char *s)
{
	size_t n = 0;

	for (; *s; s++, n++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || *s == '=')
			return 0;
	return n > 0 && n <= 500;
}

/* utf8_next - decode one UTF-8 sequence at s; its length, 0 if invalid */
static size_t utf8_next(const unsigned char *s, unsigned long *cp)
{
	size_t n;
	unsigned long v;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	} else if ((s[0] & 0xe0) == 0xc0) {
		n = 2, v = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 3, v = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 4, v = s[0] & 0x07;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (s[i] & 0x3f);
	}
	if (v < 0x80 || v > 0x10ffff || (n == 3 && v < 0x800) || (n == 4 && v < 0x10000))
		return 0;
	*cp = v;
	return n;
}

/* add_orcpt - " ORCPT=..." for an original recipient (RFC 3461 4.2 xtext,
 * RFC 6533 3 utf-8-addr-xtext for non-ASCII); nothing if it cannot be encoded */
static void add_orcpt(struct strbuf *sb, const char *orcpt)
{
	if (!orcpt || !*orcpt || strlen(orcpt) > 500 || !clean_str(orcpt))
		return;
	/* already typed by whoever queued it ("rfc822;a+2Bb@x") */
	if ((str_has_prefix_ci(orcpt, strlen(orcpt), "rfc822;") || str_has_prefix_ci(orcpt, strlen(orcpt), "utf-8;")) &&
	    xtext_ok(orcpt)) {
		strbuf_addf(sb, " ORCPT=%s", orcpt);
		return;
	}
	size_t mark = sb->len;
	if (!has_8bit(orcpt)) {
		strbuf_adds(sb, " ORCPT=rfc822;");
		for (const char *s = orcpt; *s; s++) {
			unsigned char b = (unsigned char)*s;
			if (b > 0x20 && b < 0x7f && b != '+' && b != '=')
				strbuf_addc(sb, (char)b);
			else
				strbuf_addf(sb, "+%02X", b);
		}
		return;
	}
	strbuf_adds(sb, " ORCPT=utf-8;");
	for (const unsigned char *s = (const unsigned char *)orcpt; *s;) {
		unsigned long cp;
		size_t k = utf8_next(s, &cp);
		if (k == 0) { /* not UTF-8: leave ORCPT out rather than send garbage */
			sb->len = mark;
			sb->s[mark] = '\0';
			return;
		}
		if (cp > 0x20 && cp < 0x7f && cp != '+' && cp != '=' && cp != '\\')
			strbuf_addc(sb, (char)cp);
		else
			strbuf_addf(sb, "\\x{%lX}", cp);
		s += k;
	}
}

/* add_notify - " NOTIFY=..." from enum env_notify bits (RFC 3461 4.1) */
static void add_notify(struct strbuf *sb, unsigned notify)
{
	if (notify == 0)
		return;
	if (notify & ENV_NOTIFY_NEVER) {
		strbuf_adds(sb, " NOTIFY=NEVER");
		return;
	}
	const char *sep = " NOTIFY=";
	if (notify & ENV_NOTIFY_SUCCESS) {
		strbuf_addf(sb, "%sSUCCESS", sep);
		sep = ",";
	}
	if (notify & ENV_NOTIFY_FAILURE) {
		strbuf_addf(sb, "%sFAILURE", sep);
		sep = ",";
	}
	if (notify & ENV_NOTIFY_DELAY)
		strbuf_addf(sb, "%sDELAY", sep);
}

/* add_mail - "MAIL FROM:<...> params\r\n" */
static void add_mail(struct smtp_client *c)
{
	const struct envelope *e = c->env;
	unsigned f = c->caps.flags;

	strbuf_addf(&c->out, "MAIL FROM:<%s>", e->sender ? e->sender : "");
	if (f & SMTP_CAP_SIZE)
		strbuf_addf(&c->out, " SIZE=%llu", (unsigned long long)c->size);
	if (e->body == ENV_BODY_BINARYMIME)
		strbuf_adds(&c->out, " BODY=BINARYMIME");
	else if (e->body == ENV_BODY_8BITMIME && (f & SMTP_CAP_8BITMIME))
		strbuf_adds(&c->out, " BODY=8BITMIME");
	if (c->utf8)
		strbuf_adds(&c->out, " SMTPUTF8");
	if (f & SMTP_CAP_DSN) {
		if (e->ret == ENV_RET_FULL)
			strbuf_adds(&c->out, " RET=FULL");
		else if (e->ret == ENV_RET_HDRS)
			strbuf_adds(&c->out, " RET=HDRS");
		if (e->envid && xtext_ok(e->envid))
			strbuf_addf(&c->out, " ENVID=%s", e->envid);
	}
	strbuf_add(&c->out, "\r\n", 2);
}

/* add_rcpt - "RCPT TO:<...> params\r\n" for wire slot w */
static void add_rcpt(struct smtp_client *c, size_t w)
{
	const struct env_rcpt *r = &c->env->rcpts[c->res[c->wire[w]].index];

	strbuf_addf(&c->out, "RCPT TO:<%s>", r->addr);
	if (c->caps.flags & SMTP_CAP_DSN) {
		add_notify(&c->out, r->notify);
		add_orcpt(&c->out, r->orcpt);
	}
	strbuf_add(&c->out, "\r\n", 2);
}

/* send_rset - end a failed transaction but keep the connection */
static void send_rset(struct smtp_client *c)
{
	send_cmd(c, "RSET");
	c->state = SMTP_CLIENT_S_RSET;
}

/* local_fail_all - settle every open recipient PERMFAIL without asking */
static void local_fail_all(struct smtp_client *c, const char *enh, const char *text)
{
	fail_unsettled(c, SMTP_CLIENT_PERMFAIL, SMTP_CLIENT_STAGE_LOCAL, enh, text);
}

/* tx_start - checks we can make without the server, then MAIL (and with
 * PIPELINING the RCPTs and DATA) */
static void tx_start(struct smtp_client *c)
{
	const struct envelope *e = c->env;
	unsigned f = c->caps.flags;
	char text[SMTP_CLIENT_TEXT_MAX];
	int need_utf8 = e->smtputf8 || has_8bit(e->sender);

	c->nwire = c->rcpt_next = c->naccepted = 0;
	c->pipelined = c->data_sent = c->use_bdat = c->utf8 = 0;
	c->bdat_outstanding = 0;
	c->bdat_last_sent = c->bdat_failed = 0;
	c->session_error = 0;
	for (size_t i = 0; i < c->nres; i++) {
		const struct env_rcpt *r = &e->rcpts[c->res[i].index];
		c->accepted[i] = 0;
		if (c->settled[i])
			continue;
		/* CR or LF in an address would let a queue entry inject commands */
		if (!r->addr || !clean_str(r->addr)) {
			set_result(c, i, SMTP_CLIENT_PERMFAIL, SMTP_CLIENT_STAGE_LOCAL, 0, 0, "5.1.3",
				   "bad recipient address syntax");
			continue;
		}
		need_utf8 |= has_8bit(r->addr);
		c->wire[c->nwire++] = i;
	}
	if (e->sender && !clean_str(e->sender)) {
		local_fail_all(c, "5.1.7", "bad sender address syntax");
	} else if (need_utf8 && !(f & SMTP_CAP_SMTPUTF8)) {
		snprintf(text, sizeof(text), "SMTPUTF8 is required, but was not offered by host %s", host_name(c));
		local_fail_all(c, "5.6.7", text);
	} else if (e->body == ENV_BODY_BINARYMIME && (f & (SMTP_CAP_BINARYMIME | SMTP_CAP_CHUNKING)) !=
							 (SMTP_CAP_BINARYMIME | SMTP_CAP_CHUNKING)) {
		snprintf(text, sizeof(text), "BINARYMIME is required, but was not offered by host %s", host_name(c));
		local_fail_all(c, "5.6.3", text);
	} else if ((f & SMTP_CAP_SIZE) && c->caps.size_max > 0 && c->size > c->caps.size_max) {
		snprintf(text, sizeof(text), "message size %llu exceeds size limit %llu of server %s",
			 (unsigned long long)c->size, (unsigned long long)c->caps.size_max, host_name(c));
		local_fail_all(c, "5.3.4", text);
	}
	/* local_fail_all settles every slot, so the first wire slot tells */
	if (c->nwire == 0 || c->settled[c->wire[0]]) {
		c->state = SMTP_CLIENT_S_IDLE;
		tx_finish(c, 1);
		return;
	}
	c->utf8 = need_utf8;
	c->use_bdat = (f & SMTP_CAP_CHUNKING) && (c->prefer_bdat || e->body == ENV_BODY_BINARYMIME);
	c->pipelined = (f & SMTP_CAP_PIPELINING) != 0;
	strbuf_reset(&c->out);
	add_mail(c);
	if (c->pipelined) {
		for (size_t w = 0; w < c->nwire; w++)
			add_rcpt(c, w);
		/* BDAT is held back until the RCPT replies are in: a chunk
		 * sent for no accepted recipient is wasted and must be drained */
		if (!c->use_bdat) {
			strbuf_add(&c->out, "DATA\r\n", 6);
			c->data_sent = 1;
		}
	}
	c->state = SMTP_CLIENT_S_MAIL;
	send_out(c);
}

/* send_hello - EHLO (or HELO) with our name */
static void send_hello(struct smtp_client *c, const char *verb, enum smtp_client_state next)
{
	strbuf_reset(&c->out);
	strbuf_addf(&c->out, "%s %s\r\n", verb, c->helo_name);
	c->state = next;
	send_out(c);
}

/* ---- AUTH (RFC 4954) ---- */

/* auth_fail - AUTH cannot or did not succeed: every open recipient
 * TEMPFAIL at stage AUTH (a credentials problem is ours to fix, never the
 * sender's bounce), then QUIT; the text must never contain the password */
static void auth_fail(struct smtp_client *c, const char *text)
{
	fail_unsettled(c, SMTP_CLIENT_TEMPFAIL, SMTP_CLIENT_STAGE_AUTH, "4.7.0", text);
	c->session_error = 1;
	tx_finish(c, 0);
	send_cmd(c, "QUIT");
	c->state = SMTP_CLIENT_S_QUIT;
}

/* auth_offers - 1 when the EHLO AUTH list names mech */
static int auth_offers(const struct smtp_client *c, const char *mech)
{
	size_t n = strlen(mech);
	const char *p = c->caps.auth;

	while (*p) {
		while (*p == ' ')
			p++;
		size_t k = strcspn(p, " ");
		if (k == n && memcmp(p, mech, n) == 0)
			return 1;
		p += k;
	}
	return 0;
}

/* auth_send_b64 - write "prefix" + base64(raw) + CRLF straight to the
 * driver from a stack buffer, then wipe it: the encoded secret never
 * lands in c->out, whose reallocations could leave copies behind */
static void auth_send_b64(struct smtp_client *c, const char *prefix, const unsigned char *raw, size_t n)
{
	char line[32 + 4 * ((2 * AUTH_FIELD_MAX + 2 + 2) / 3) + 4];
	size_t k = strlen(prefix);

	memcpy(line, prefix, k);
	k += sasl_b64_encode(raw, n, line + k);
	memcpy(line + k, "\r\n", 2);
	(void)c->ops.write(c->ctx, line, k + 2);
	OPENSSL_cleanse(line, sizeof(line));
}

/* auth_send_plain - AUTH PLAIN with the initial response "\0user\0pass"
 * (RFC 4616 2: empty authzid, act as the authentication identity) */
static void auth_send_plain(struct smtp_client *c)
{
	unsigned char raw[2 * AUTH_FIELD_MAX + 2];
	size_t u = strlen(c->auth_user), w = strlen(c->auth_pass);

	raw[0] = '\0';
	memcpy(raw + 1, c->auth_user, u);
	raw[1 + u] = '\0';
	memcpy(raw + 2 + u, c->auth_pass, w);
	auth_send_b64(c, "AUTH PLAIN ", raw, u + w + 2);
	OPENSSL_cleanse(raw, sizeof(raw));
}

/* auth_or_start - before the first MAIL of a connection: authenticate
 * when credentials were given, then the message */
static void auth_or_start(struct smtp_client *c)
{
	char text[SMTP_CLIENT_TEXT_MAX];

	if (!c->auth_user || c->authed) {
		tx_start(c);
		return;
	}
	/* credentials in plain text could be read (or, after a stripped
	 * STARTTLS, handed to an attacker): never, whatever the TLS policy */
	if (!c->tls) {
		snprintf(text, sizeof(text), "relayhost requires TLS for AUTH: no TLS session with host %s",
			 host_name(c));
		auth_fail(c, text);
		return;
	}
	if (!(c->caps.flags & SMTP_CAP_AUTH)) {
		snprintf(text, sizeof(text), "relayhost offers no AUTH: host %s", host_name(c));
		auth_fail(c, text);
		return;
	}
	c->login_step = 0;
	if (auth_offers(c, "PLAIN")) {
		c->mech = AUTH_MECH_PLAIN;
		auth_send_plain(c);
	} else if (auth_offers(c, "LOGIN")) {
		c->mech = AUTH_MECH_LOGIN;
		send_cmd(c, "AUTH LOGIN");
	} else {
		snprintf(text, sizeof(text), "relayhost offers no AUTH mechanism we support (PLAIN, LOGIN): host %s offers %s",
			 host_name(c), c->caps.auth);
		auth_fail(c, text);
		return;
	}
	c->state = SMTP_CLIENT_S_AUTH;
}

/* reply_auth - a reply to AUTH or to one of our LOGIN responses */
static void reply_auth(struct smtp_client *c)
{
	int cls = c->rep.code / 100;

	if (cls == 2) {
		/* RFC 4954 4: 235; a LOGIN cut short before the password is out of step */
		if (c->mech == AUTH_MECH_LOGIN && c->login_step < 2) {
			protocol_error(c, "AUTH accepted before the password");
			return;
		}
		c->authed = 1;
		c->mech = AUTH_MECH_NONE;
		tx_start(c);
		return;
	}
	if (cls == 3) {
		/* 334: only LOGIN asks, twice: the user name, then the password
		 * (the challenge text is not trusted, only counted) */
		if (c->rep.code != 334 || c->mech != AUTH_MECH_LOGIN || c->login_step >= 2) {
			protocol_error(c, "unexpected 3xx reply to AUTH");
			return;
		}
		if (c->login_step == 0)
			auth_send_b64(c, "", (const unsigned char *)c->auth_user, strlen(c->auth_user));
		else
			auth_send_b64(c, "", (const unsigned char *)c->auth_pass, strlen(c->auth_pass));
		c->login_step++;
		return;
	}
	if (cls != 4 && cls != 5) {
		protocol_error(c, "unexpected reply to AUTH");
		return;
	}
	/* 535 and friends: temporary for us, like Postfix's SASL defer, so a
	 * wrong or expired password delays mail instead of bouncing it */
	for (size_t i = 0; i < c->nres; i++) {
		if (c->settled[i])
			continue;
		set_result_rep(c, i, SMTP_CLIENT_STAGE_AUTH);
		c->res[i].status = SMTP_CLIENT_TEMPFAIL;
	}
	c->session_error = 1;
	tx_finish(c, 0);
	send_cmd(c, "QUIT");
	c->state = SMTP_CLIENT_S_QUIT;
}

/* after_hello - EHLO/HELO accepted: STARTTLS per policy, or the message */
static void after_hello(struct smtp_client *c)
{
	int offered = (c->caps.flags & SMTP_CAP_STARTTLS) != 0;
	enum smtp_client_tls pol = SMTP_CLIENT_TLS_NONE;
	char text[SMTP_CLIENT_TEXT_MAX];

	if (!c->tls && c->ops.tls_policy)
		pol = c->ops.tls_policy(c->ctx, offered);
	if (!c->tls)
		c->tls_pol = pol;
	if (pol != SMTP_CLIENT_TLS_NONE && offered && c->ops.starttls) {
		send_cmd(c, "STARTTLS");
		c->state = SMTP_CLIENT_S_STARTTLS;
		return;
	}
	if (pol == SMTP_CLIENT_TLS_MUST) {
		snprintf(text, sizeof(text), "TLS is required, but was not offered by host %s", host_name(c));
		session_fail(c, "4.7.4", text, 1);
		return;
	}
	auth_or_start(c);
}

/* ---- content ---- */

/* stuff - dot-stuff p[0..n) into c->out (RFC 5321 4.5.2), making every
 * line end CRLF: a bare CR or LF from the file never reaches the wire */
static void stuff(struct smtp_client *c, const char *p, size_t n)
{
	struct strbuf *sb = &c->out;

	for (size_t i = 0; i < n; i++) {
		char b = p[i];
		if (c->pending_cr) {
			c->pending_cr = 0;
			strbuf_add(sb, "\r\n", 2);
			c->bol = 1;
			if (b == '\n')
				continue;
		}
		if (b == '\r') {
			c->pending_cr = 1;
			continue;
		}
		if (b == '\n') {
			strbuf_add(sb, "\r\n", 2);
			c->bol = 1;
			continue;
		}
		if (c->bol && b == '.')
			strbuf_addc(sb, '.');
		strbuf_addc(sb, b);
		c->bol = 0;
	}
}

/* content_error - the queue file could not be read: our fault, not the
 * server's; the connection is dropped because a DATA cannot be taken back */
static void content_error(struct smtp_client *c)
{
	fail_unsettled(c, SMTP_CLIENT_TEMPFAIL, SMTP_CLIENT_STAGE_LOCAL, "4.3.0", "error reading message content");
	tx_finish(c, 0);
	conn_close(c);
}

/* data_pump - send content after 354 until done or the output is full */
static void data_pump(struct smtp_client *c)
{
	while (c->state == SMTP_CLIENT_S_CONTENT && !c->paused) {
		ssize_t n = c->ops.content_read(c->ctx, c->cbuf, CONTENT_CHUNK);
		if (n < 0 || n > CONTENT_CHUNK) {
			content_error(c);
			return;
		}
		strbuf_reset(&c->out);
		if (n == 0) {
			if (c->pending_cr) {
				strbuf_add(&c->out, "\r\n", 2);
				c->pending_cr = 0;
				c->bol = 1;
			}
			if (!c->bol) /* content without a final CRLF */
				strbuf_add(&c->out, "\r\n", 2);
			strbuf_add(&c->out, ".\r\n", 3);
			c->state = SMTP_CLIENT_S_DOT;
			c->paused = 0;
			send_out(c);
			return;
		}
		stuff(c, c->cbuf, (size_t)n);
		if (c->out.len > 0 && c->ops.write(c->ctx, c->out.s, c->out.len) > 0)
			c->paused = 1;
		strbuf_reset(&c->out);
	}
}

/* bdat_pump - send BDAT chunks (RFC 3030): pipelined when offered, else
 * one at a time; the last one is marked LAST (BDAT 0 LAST if needed) */
static void bdat_pump(struct smtp_client *c)
{
	while (c->state == SMTP_CLIENT_S_BDAT && !c->paused && !c->bdat_last_sent && !c->bdat_failed &&
	       (c->pipelined || c->bdat_outstanding == 0)) {
		size_t len = 0;
		int eof = 0;
		while (len < CONTENT_CHUNK) {
			ssize_t n = c->ops.content_read(c->ctx, c->cbuf + len, CONTENT_CHUNK - len);
			if (n < 0 || (size_t)n > CONTENT_CHUNK - len) {
				content_error(c);
				return;
			}
			if (n == 0) {
				eof = 1;
				break;
			}
			len += (size_t)n;
		}
		char cmd[64];
		int k = snprintf(cmd, sizeof(cmd), "BDAT %zu%s\r\n", len, eof ? " LAST" : "");
		c->bdat_outstanding++;
		c->bdat_last_sent = eof;
		int full = c->ops.write(c->ctx, cmd, (size_t)k) > 0;
		if (len > 0)
			full = c->ops.write(c->ctx, c->cbuf, len) > 0;
		if (full)
			c->paused = 1;
	}
}

/* smtp_client_writable - the output drained: go on with the content */
void smtp_client_writable(struct smtp_client *c)
{
	c->paused = 0;
	if (c->state == SMTP_CLIENT_S_CONTENT)
		data_pump(c);
	else if (c->state == SMTP_CLIENT_S_BDAT)
		bdat_pump(c);
}

/* ---- replies ---- */

/* rcpts_done - every RCPT reply is in: on to the content, or end */
static void rcpts_done(struct smtp_client *c)
{
	if (c->naccepted == 0) {
		if (c->data_sent) {
			/* RFC 2920 3.1: the server must refuse our DATA; read that reply */
			c->drain = 1;
			c->state = SMTP_CLIENT_S_DRAIN;
		} else {
			send_rset(c);
		}
		return;
	}
	if (c->use_bdat) {
		c->state = SMTP_CLIENT_S_BDAT;
		c->paused = 0;
		bdat_pump(c);
		return;
	}
	if (!c->data_sent)
		send_cmd(c, "DATA");
	c->state = SMTP_CLIENT_S_DATA;
}

/* reply_mail - the reply to MAIL FROM */
static void reply_mail(struct smtp_client *c)
{
	int cls = c->rep.code / 100;

	if (cls == 3) {
		protocol_error(c, "unexpected 3xx reply");
		return;
	}
	if (cls != 2) {
		fail_unsettled_rep(c, SMTP_CLIENT_STAGE_MAIL);
		if (c->pipelined) {
			c->drain = c->nwire + (size_t)c->data_sent;
			c->state = SMTP_CLIENT_S_DRAIN;
		} else {
			send_rset(c);
		}
		return;
	}
	c->state = SMTP_CLIENT_S_RCPT;
	if (!c->pipelined) {
		strbuf_reset(&c->out);
		add_rcpt(c, 0);
		send_out(c);
	}
}

/* reply_rcpt - the reply to one RCPT TO */
static void reply_rcpt(struct smtp_client *c)
{
	size_t i = c->wire[c->rcpt_next];
	int cls = c->rep.code / 100;

	if (cls == 3) {
		protocol_error(c, "unexpected 3xx reply");
		return;
	}
	if (cls == 2) {
		c->accepted[i] = 1;
		c->naccepted++;
	} else {
		set_result_rep(c, i, SMTP_CLIENT_STAGE_RCPT);
	}
	if (++c->rcpt_next < c->nwire) {
		if (!c->pipelined) {
			strbuf_reset(&c->out);
			add_rcpt(c, c->rcpt_next);
			send_out(c);
		}
		return;
	}
	rcpts_done(c);
}

/* reply_data - the reply to DATA */
static void reply_data(struct smtp_client *c)
{
	int cls = c->rep.code / 100;

	if (cls == 3) {
		c->state = SMTP_CLIENT_S_CONTENT;
		c->bol = 1;
		c->pending_cr = 0;
		c->paused = 0;
		data_pump(c);
	} else if (cls == 2) {
		protocol_error(c, "2xx reply to DATA");
	} else {
		fail_unsettled_rep(c, SMTP_CLIENT_STAGE_DATA);
		send_rset(c);
	}
}

/* reply_final - the reply to the end of data: the only way to DELIVERED */
static void reply_final(struct smtp_client *c)
{
	if (c->rep.code / 100 == 3) {
		protocol_error(c, "3xx reply to end of data");
		return;
	}
	for (size_t i = 0; i < c->nres; i++)
		if (c->accepted[i] && !c->settled[i])
			set_result_rep(c, i, SMTP_CLIENT_STAGE_CONTENT);
	c->state = SMTP_CLIENT_S_IDLE;
	tx_finish(c, 1);
}

/* reply_bdat - the reply to one BDAT chunk */
static void reply_bdat(struct smtp_client *c)
{
	int cls = c->rep.code / 100;

	if (cls == 3 || c->bdat_outstanding == 0) {
		protocol_error(c, cls == 3 ? "3xx reply to BDAT" : "reply to no command");
		return;
	}
	c->bdat_outstanding--;
	if (cls != 2 && !c->bdat_failed) {
		c->bdat_failed = 1;
		fail_unsettled_rep(c, SMTP_CLIENT_STAGE_CONTENT);
	}
	if (c->bdat_outstanding > 0)
		return;
	if (c->bdat_failed) {
		send_rset(c);
	} else if (c->bdat_last_sent) {
		reply_final(c);
	} else {
		bdat_pump(c);
	}
}

/* reply_starttls - the reply to STARTTLS; rest: input bytes after it */
static void reply_starttls(struct smtp_client *c, size_t rest)
{
	if (c->rep.code / 100 == 3) {
		protocol_error(c, "unexpected 3xx reply");
		return;
	}
	if (c->rep.code / 100 == 2) {
		/* anything the server sent after its 220 arrived in plain text
		 * and could be an injected reply to our first command under TLS
		 * (the mirror of CVE-2011-0411): refuse rather than trust it */
		if (rest > 0 || smtp_replyparse_midline(&c->rp)) {
			protocol_error(c, "data after STARTTLS reply");
			return;
		}
		c->state = SMTP_CLIENT_S_TLS;
		c->ops.starttls(c->ctx);
		return;
	}
	if (c->tls_pol == SMTP_CLIENT_TLS_MUST) {
		session_fail_rep(c);
		return;
	}
	auth_or_start(c); /* opportunistic: go on in plain text (AUTH then refuses) */
}

/* handle_reply - one complete reply in c->rep; rest: unread input bytes */
static void handle_reply(struct smtp_client *c, size_t rest)
{
	int cls = c->rep.code / 100;

	/* 421: the server is closing the channel, whatever we asked */
	if (c->rep.code == 421 && c->state != SMTP_CLIENT_S_QUIT) {
		if (c->in_tx) {
			fail_unsettled_rep(c, state_stage(c->state));
			c->session_error = 1;
			tx_finish(c, 0);
		}
		conn_close(c);
		return;
	}
	switch (c->state) {
	case SMTP_CLIENT_S_GREETING:
		if (cls == 2)
			send_hello(c, "EHLO", SMTP_CLIENT_S_EHLO);
		else
			session_fail_rep(c);
		break;
	case SMTP_CLIENT_S_EHLO:
		if (cls == 2) {
			smtp_replyparse_ehlo(&c->rep, &c->caps);
			after_hello(c);
		} else if (cls == 5) {
			send_hello(c, "HELO", SMTP_CLIENT_S_HELO);
		} else {
			session_fail_rep(c);
		}
		break;
	case SMTP_CLIENT_S_HELO:
		if (cls == 2) {
			memset(&c->caps, 0, sizeof(c->caps));
			after_hello(c);
		} else {
			session_fail_rep(c);
		}
		break;
	case SMTP_CLIENT_S_STARTTLS:
		reply_starttls(c, rest);
		break;
	case SMTP_CLIENT_S_AUTH:
		reply_auth(c);
		break;
	case SMTP_CLIENT_S_MAIL:
		reply_mail(c);
		break;
	case SMTP_CLIENT_S_RCPT:
		reply_rcpt(c);
		break;
	case SMTP_CLIENT_S_DATA:
		reply_data(c);
		break;
	case SMTP_CLIENT_S_DOT:
		reply_final(c);
		break;
	case SMTP_CLIENT_S_BDAT:
		reply_bdat(c);
		break;
	case SMTP_CLIENT_S_DRAIN:
		if (c->rep.code == 354) {
			/* a broken server took DATA for no recipient: end it
			 * empty and read that reply too (RFC 2920 3.1) */
			send_cmd(c, ".");
			break;
		}
		if (--c->drain == 0)
			send_rset(c);
		break;
	case SMTP_CLIENT_S_RSET:
		if (cls == 2) {
			c->state = SMTP_CLIENT_S_IDLE;
			tx_finish(c, 1);
		} else {
			tx_finish(c, 0);
			send_cmd(c, "QUIT");
			c->state = SMTP_CLIENT_S_QUIT;
		}
		break;
	case SMTP_CLIENT_S_QUIT:
		conn_close(c);
		break;
	case SMTP_CLIENT_S_CONTENT:
		protocol_error(c, "reply while sending content");
		break;
	case SMTP_CLIENT_S_TLS:
	case SMTP_CLIENT_S_IDLE:
		protocol_error(c, "unexpected reply");
		break;
	case SMTP_CLIENT_S_CLOSED:
		break;
	}
}

/* smtp_client_input - bytes from the server */
void smtp_client_input(struct smtp_client *c, const char *p, size_t n)
{
	while (n > 0 && c->state != SMTP_CLIENT_S_CLOSED) {
		size_t used = 0;
		enum smtp_replyparse_status st = smtp_replyparse_feed(&c->rp, p, n, &used, &c->rep);
		p += used;
		n -= used;
		if (st == SMTP_REPLYPARSE_ERROR) {
			protocol_error(c, smtp_replyparse_error_str(c->rp.error));
			return;
		}
		if (st == SMTP_REPLYPARSE_NEED_MORE)
			return;
		handle_reply(c, n);
	}
}

/* smtp_client_eof - the server closed the connection */
void smtp_client_eof(struct smtp_client *c)
{
	char text[256];

	if (c->state == SMTP_CLIENT_S_CLOSED)
		return;
	if (!c->in_tx) {
		conn_close(c);
		return;
	}
	snprintf(text, sizeof(text), "lost connection with %s %s", host_name(c), stage_phrase(c->state));
	session_fail(c, "4.4.2", text, 0);
}

/* smtp_client_timeout - the step's timer fired */
void smtp_client_timeout(struct smtp_client *c)
{
	char text[256];

	if (c->state == SMTP_CLIENT_S_CLOSED)
		return;
	if (c->state == SMTP_CLIENT_S_IDLE && !c->in_tx) {
		/* an idle cached connection: say goodbye */
		send_cmd(c, "QUIT");
		c->state = SMTP_CLIENT_S_QUIT;
		return;
	}
	if (!c->in_tx) {
		conn_close(c);
		return;
	}
	snprintf(text, sizeof(text), "conversation with %s timed out %s", host_name(c), stage_phrase(c->state));
	session_fail(c, "4.4.2", text, 0);
}

/* smtp_client_tls_done - the driver's handshake finished */
void smtp_client_tls_done(struct smtp_client *c, int ok)
{
	char text[256];

	if (c->state != SMTP_CLIENT_S_TLS)
		return;
	if (!ok) {
		snprintf(text, sizeof(text), "TLS handshake with %s failed", host_name(c));
		session_fail(c, "4.7.5", text, 0);
		return;
	}
	/* RFC 3207 4.2: forget everything learnt in plain text */
	c->tls = 1;
	memset(&c->caps, 0, sizeof(c->caps));
	smtp_replyparse_init(&c->rp);
	send_hello(c, "EHLO", SMTP_CLIENT_S_EHLO);
}

/* ---- lifetime ---- */

/* tx_setup - take a message's params; -1 if they are unusable */
static int tx_setup(struct smtp_client *c, const struct smtp_client_params *p)
{
	const struct envelope *e = p->env;
	size_t n;

	if (!e || (!p->rcpt_idx && p->nrcpt_idx > 0))
		return -1;
	n = p->rcpt_idx ? p->nrcpt_idx : e->nrcpts;
	if (n == 0)
		return -1;
	for (size_t i = 0; p->rcpt_idx && i < n; i++)
		if (p->rcpt_idx[i] >= e->nrcpts)
			return -1;
	free(c->res);
	free(c->settled);
	free(c->accepted);
	free(c->wire);
	c->res = xcalloc(n, sizeof(*c->res));
	c->settled = xcalloc(n, 1);
	c->accepted = xcalloc(n, 1);
	c->wire = xcalloc(n, sizeof(*c->wire));
	c->nres = n;
	for (size_t i = 0; i < n; i++) {
		c->res[i].index = p->rcpt_idx ? p->rcpt_idx[i] : i;
		c->res[i].host = c->remote_host;
		c->res[i].status = SMTP_CLIENT_TEMPFAIL;
	}
	c->env = e;
	c->size = p->size;
	c->prefer_bdat = p->prefer_bdat;
	c->in_tx = 1;
	c->session_error = 0;
	return 0;
}

/* pick - a timeout or its default */
static unsigned pick(unsigned v, unsigned def)
{
	return v ? v : def;
}

/* set_timeouts - copy params' timeouts with RFC 5321 4.5.3.2 defaults */
static void set_timeouts(struct smtp_client *c, const struct smtp_client_timeouts *t)
{
	c->to.greeting = pick(t->greeting, 300);
	c->to.helo = pick(t->helo, 300);
	c->to.mail = pick(t->mail, 300);
	c->to.rcpt = pick(t->rcpt, 300);
	c->to.data_init = pick(t->data_init, 120);
	c->to.data_block = pick(t->data_block, 180);
	c->to.data_end = pick(t->data_end, 600);
	c->to.rset = pick(t->rset, 60);
	c->to.idle = pick(t->idle, 60);
}

/* auth_field_ok - a user name or password we can send: 1..255 octets
 * (RFC 4616 2), no control characters (no NUL to split PLAIN's fields) */
static int auth_field_ok(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n <= AUTH_FIELD_MAX && clean_str(s);
}

/* smtp_client_new - a session waiting for the greeting */
struct smtp_client *smtp_client_new(const struct smtp_client_params *p, const struct smtp_client_ops *ops,
				    void *ctx)
{
	if (!p || !ops || !ops->write || !ops->close || !ops->content_read || !ops->done || !p->helo_name ||
	    !*p->helo_name || !clean_str(p->helo_name) || strchr(p->helo_name, ' '))
		return NULL;
	if ((p->auth_user == NULL) != (p->auth_pass == NULL) ||
	    (p->auth_user && (!auth_field_ok(p->auth_user) || !auth_field_ok(p->auth_pass))))
		return NULL;
	struct smtp_client *c = xcalloc(1, sizeof(*c));
	c->ops = *ops;
	c->ctx = ctx;
	if (p->auth_user) {
		c->auth_user = xstrdup(p->auth_user);
		c->auth_pass = xstrdup(p->auth_pass);
	}
	c->helo_name = xstrdup(p->helo_name);
	c->remote_host = p->remote_host ? xstrdup(p->remote_host) : NULL;
	if (c->remote_host && !clean_str(c->remote_host))
		c->remote_host[0] = '\0';
	strbuf_init(&c->out);
	smtp_replyparse_init(&c->rp);
	set_timeouts(c, &p->timeouts);
	if (tx_setup(c, p) < 0) {
		smtp_client_free(c);
		return NULL;
	}
	c->cbuf = xmalloc(CONTENT_CHUNK);
	c->state = SMTP_CLIENT_S_GREETING;
	return c;
}

/* smtp_client_next - another message on this idle connection */
int smtp_client_next(struct smtp_client *c, const struct smtp_client_params *p)
{
	if (c->state != SMTP_CLIENT_S_IDLE || c->in_tx || !p)
		return -1;
	if (tx_setup(c, p) < 0)
		return -1;
	set_timeouts(c, &p->timeouts);
	/* the previous transaction ended with 250 or RSET: no RSET needed */
	tx_start(c);
	return 0;
}

/* smtp_client_quit - end the session */
void smtp_client_quit(struct smtp_client *c)
{
	if (c->state == SMTP_CLIENT_S_CLOSED || c->state == SMTP_CLIENT_S_QUIT)
		return;
	if (c->in_tx) {
		fail_unsettled(c, SMTP_CLIENT_TEMPFAIL, state_stage(c->state), "4.3.2", "delivery abandoned: shutting down");
		tx_finish(c, 0);
	}
	if (c->state == SMTP_CLIENT_S_IDLE) {
		send_cmd(c, "QUIT");
		c->state = SMTP_CLIENT_S_QUIT;
	} else {
		conn_close(c);
	}
}

/* smtp_client_free - release everything (no ops are called) */
void smtp_client_free(struct smtp_client *c)
{
	if (!c)
		return;
	free(c->helo_name);
	free(c->remote_host);
	/* the relayhost password must not outlive the session in freed memory */
	if (c->auth_pass) {
		OPENSSL_cleanse(c->auth_pass, strlen(c->auth_pass));
		free(c->auth_pass);
	}
	if (c->auth_user) {
		OPENSSL_cleanse(c->auth_user, strlen(c->auth_user));
		free(c->auth_user);
	}
	free(c->res);
	free(c->settled);
	free(c->accepted);
	free(c->wire);
	free(c->cbuf);
	strbuf_free(&c->out);
	free(c);
}
