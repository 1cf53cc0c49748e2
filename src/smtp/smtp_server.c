/*
 * smtp_server - the SMTP server session: a state machine with no sockets.
 * See smtp_server.h for the interface and its contract with the daemon.
 *
 * Exports (one line each; prototypes in smtp_server.h):
 *   smtp_listener_kind_str       name of a listener kind, for logs
 *   smtp_session_new/free        one session per connection
 *   smtp_session_start           greeting, or 554 to a client that spoke first
 *   smtp_session_input           bytes read from the client
 *   smtp_session_eof             the client closed its side
 *   smtp_session_timeout         the caller's idle timer fired: 421 4.4.2
 *   smtp_session_shutdown        the server is stopping: 421 4.3.2
 *   smtp_session_commit_done     completion of ops->msg_commit
 *   smtp_session_tls_done        the STARTTLS handshake completed
 *   smtp_session_auth_done       completion of ops->auth_check
 *   smtp_session_auth_user       the authenticated account
 *   smtp_session_stage_done      completion of ops->stage_check (policy)
 *   smtp_session_commit_verdict  end of data refused or discarded by policy
 *   smtp_session_helo/_esmtp/_envelope/_client/_rcpt/_esmtp_args
 *                                what the policy checks look at
 *   smtp_stage_str, smtp_verdict_kind_str  names for logs
 *   smtp_verdict_set             fill a verdict
 *   smtp_verdict_reply_valid     may a policy's custom reply be sent
 *   smtp_auth_result_str         name of an auth outcome, for logs
 *   smtp_session_wants_input     0 while a commit is in flight or once closing
 *   smtp_session_timeout_secs    data_timeout inside DATA/BDAT, else command_timeout
 *   smtp_session_closed          ops->close has been called
 *   smtp_session_state_str       the state, for logs and tests
 *
 * How it works. Input is copied into a capped buffer (SMTP_SESSION_INPUT_MAX)
 * and consumed in one loop: command lines (smtp_line_next, CRLF only),
 * DATA content (smtp_data_feed, streamed to ops->msg_write, never held
 * whole) or BDAT chunk octets (raw, streamed the same way). A command is
 * parsed by smtp_parse_command and dispatched through smtp_verb_table (in
 * smtp_server_verbs.c; the two share smtp_server_int.h): each
 * row has a check (order, syntax, parameters -> a reply id to refuse, or
 * SMTP_R_COUNT to go on) and a proceed (the work and the success reply).
 * Every reply comes from smtp_reply's table and goes into one strbuf that is
 * handed to ops->write once per batch (PIPELINING, RFC 2920): when the input
 * runs dry, when the session starts waiting on a commit, and before close.
 *
 * Re-entrancy: ops->msg_commit may call smtp_session_commit_done before it
 * returns. Every public entry point raises s->depth; only the outermost one
 * flushes, closes and resumes buffered input, so the inner call only records
 * the outcome and the loop that called msg_commit carries on.
 *
 * A commit in flight is never abandoned: eof, timeout and shutdown during
 * it are remembered and acted on in smtp_session_commit_done, after the
 * real outcome (250 or 4xx) has been replied and the message handed on.
 * An auth check in flight is waited for the same way (smtp_session_auth_done),
 * so the daemon never has a check outstanding on a closed session; so is a
 * policy check (ops->stage_check, smtp_session_stage_done).
 *
 * Policy stages: CONNECT (before the greeting, here), HELO, MAIL, RCPT and
 * DATA (smtp_server_verbs.c) each end in smtp_server_stage_begin once the
 * session's own checks passed; the command's reply waits for the verdict.
 * A custom reply from a policy (a milter's SMFIR_REPLYCODE) is sent only
 * after smtp_verdict_reply_valid: one reply, the right class, printable,
 * CRLF only between lines, so a milter can never inject protocol lines.
 *
 * AUTH (RFC 4954): the command is a verb row (smtp_server_verbs.c); its
 * response lines are read here in SMTP_STATE_AUTH with their own cap
 * (SMTP_AUTH_LINE_MAX, 500 5.5.6 beyond). Every input octet that carried
 * credentials (the AUTH line with an initial response, each response line)
 * is wiped from the input buffer once handled, so a password never lingers
 * in session memory.
 *
 * Trusts: nothing from the client. The HELO name, addresses and parameter
 * values are checked or sanitised before they reach a reply, a log line,
 * the envelope or the Received header.
 * Implements: RFC 5321 (4.1.1 commands, 4.1.4 order, 4.3.2 replies, 4.4
 * Received, 4.5.2 transparency via smtp_parse, 4.5.3 limits), RFC 1869,
 * RFC 1652, RFC 1870, RFC 2920, RFC 3030, RFC 2034/3463, RFC 3461 (NOTIFY,
 * ORCPT, RET, ENVID), RFC 3848 (with-protocol types), RFC 6531, RFC 4954
 * (AUTH response lines, 4 and 5.5.6).
 */
#include "smtp/smtp_server.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/str.h"
#include "smtp/smtp_reply.h"
#include "smtp/smtp_server_int.h"

static const char *const smtp_state_names[] = {
	[SMTP_STATE_INIT] = "init",     [SMTP_STATE_GREETED] = "greeted", [SMTP_STATE_READY] = "ready",
	[SMTP_STATE_MAIL] = "mail",     [SMTP_STATE_RCPT] = "rcpt",       [SMTP_STATE_DATA] = "data",
	[SMTP_STATE_BDAT] = "bdat",     [SMTP_STATE_COMMIT] = "commit",   [SMTP_STATE_TLS] = "starttls",
	[SMTP_STATE_AUTH] = "auth",     [SMTP_STATE_AUTH_WAIT] = "auth-wait", [SMTP_STATE_CLOSED] = "closed",
};

/* smtp_state_name - name of a state for logs */
static const char *smtp_state_name(enum smtp_state st)
{
	if ((unsigned)st < sizeof(smtp_state_names) / sizeof(smtp_state_names[0]))
		return smtp_state_names[st];
	return "unknown";
}

/* ---------------------------------------------------------------- helpers */

const char *smtp_listener_kind_str(enum smtp_listener_kind k)
{
	switch (k) {
	case SMTP_LISTENER_MX: return "mx";
	case SMTP_LISTENER_SUBMISSION: return "submission";
	case SMTP_LISTENER_SUBMISSIONS: return "submissions";
	}
	return "unknown";
}

/* smtp_auth_result_str - name of an smtp_session_auth_done outcome */
const char *smtp_auth_result_str(int ok)
{
	switch (ok) {
	case SMTP_AUTH_OK: return "ok";
	case SMTP_AUTH_FAIL: return "failed";
	case SMTP_AUTH_LOCKED: return "locked";
	case SMTP_AUTH_TEMPFAIL: return "tempfail";
	}
	return "tempfail";
}

/* smtp_server_waiting - a commit, an auth check or a policy check is in flight */
int smtp_server_waiting(const struct smtp_session *s)
{
	return s->state == SMTP_STATE_COMMIT || s->state == SMTP_STATE_AUTH_WAIT || s->stage_wait;
}

/* ------------------------------------------------------ policy verdicts */

/* smtp_stage_str - name of a policy stage, for logs */
const char *smtp_stage_str(enum smtp_stage st)
{
	switch (st) {
	case SMTP_STAGE_CONNECT: return "connect";
	case SMTP_STAGE_HELO: return "helo";
	case SMTP_STAGE_MAIL: return "mail";
	case SMTP_STAGE_RCPT: return "rcpt";
	case SMTP_STAGE_DATA: return "data";
	}
	return "unknown";
}

/* smtp_verdict_kind_str - name of a verdict kind, for logs */
const char *smtp_verdict_kind_str(enum smtp_verdict_kind k)
{
	switch (k) {
	case SMTP_VERDICT_CONTINUE: return "continue";
	case SMTP_VERDICT_REJECT: return "reject";
	case SMTP_VERDICT_TEMPFAIL: return "tempfail";
	case SMTP_VERDICT_DISCARD: return "discard";
	case SMTP_VERDICT_SHUTDOWN: return "shutdown";
	}
	return "unknown";
}

/* smtp_verdict_set - fill a verdict; reply and why are truncated to fit */
void smtp_verdict_set(struct smtp_verdict *v, enum smtp_verdict_kind kind, const char *reply,
		      const char *why)
{
	memset(v, 0, sizeof(*v));
	v->kind = kind;
	snprintf(v->reply, sizeof(v->reply), "%s", reply ? reply : "");
	snprintf(v->why, sizeof(v->why), "%s", why ? why : "");
}

/* smtp_verdict_reply_valid - see smtp_server.h: one well-formed reply of
 * the class the verdict promises, nothing a client could take for more */
int smtp_verdict_reply_valid(enum smtp_verdict_kind kind, const char *reply)
{
	char cls;
	if (kind == SMTP_VERDICT_REJECT)
		cls = '5';
	else if (kind == SMTP_VERDICT_TEMPFAIL || kind == SMTP_VERDICT_SHUTDOWN)
		cls = '4';
	else
		return 0;
	size_t n = strnlen(reply, SMTP_VERDICT_REPLY_MAX);
	if (n == 0 || n >= SMTP_VERDICT_REPLY_MAX)
		return 0;
	const char *p = reply, *end = reply + n;
	char code[3];
	for (int first = 1;; first = 0) {
		if (end - p < 3 || p[0] != cls || p[1] < '0' || p[1] > '5' || p[2] < '0' || p[2] > '9')
			return 0;
		if (first)
			memcpy(code, p, 3);
		else if (memcmp(code, p, 3) != 0)
			return 0;
		if (kind == SMTP_VERDICT_SHUTDOWN && memcmp(p, "421", 3) != 0)
			return 0;
		p += 3;
		char sep = p < end ? *p : ' ';
		if (sep != ' ' && sep != '-')
			return 0;
		if (p < end)
			p++;
		/* an enhanced status code must be of the same class (RFC 3463) */
		if (end - p >= 2 && p[0] >= '2' && p[0] <= '5' && p[1] == '.' && p[0] != cls)
			return 0;
		while (p < end && *p != '\r') {
			if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
				return 0;
			p++;
		}
		if (p == end)
			return sep == ' '; /* the last line: "CODE text" or "CODE" */
		if (sep != '-' || end - p < 3 || p[1] != '\n')
			return 0; /* CRLF only after a continued line, and never last */
		p += 2;
	}
}

/* smtp_server_verdict_log - one line for a refusing verdict */
void smtp_server_verdict_log(const struct smtp_session *s, const char *stage,
			     const struct smtp_verdict *v)
{
	struct log_line l;
	smtp_server_log_start(s, &l, LOG_LEVEL_INFO, "policy");
	log_kv(&l, "stage", stage);
	log_kv(&l, "verdict", smtp_verdict_kind_str(v->kind));
	log_kv(&l, "why", v->why[0] ? v->why : "-");
	if (s->env.sender)
		log_kv(&l, "from", s->env.sender);
	if (v->reply[0]) {
		char r[128];
		smtp_server_sanitise(r, sizeof(r), v->reply, strcspn(v->reply, "\r"));
		log_kv(&l, "reply", r);
	}
	log_end(&l);
}

/* smtp_server_verdict_reply - the verdict's own reply when it is valid,
 * else the table's for kind and stage (connect: what = NULL) */
static void verdict_reply_what(struct smtp_session *s, const char *what, const struct smtp_verdict *v)
{
	/* and fit for where it is sent: before the greeting a refusal closes,
	 * so only 554 or 421 (RFC 5321 3.1, 3.8); later a temporary refusal
	 * keeps the session open, so never the 421 that announces a close */
	int fits = what ? !(v->kind == SMTP_VERDICT_TEMPFAIL && strncmp(v->reply, "421", 3) == 0)
			: strncmp(v->reply, v->kind == SMTP_VERDICT_REJECT ? "554" : "421", 3) == 0;
	if (v->reply[0] && fits && smtp_verdict_reply_valid(v->kind, v->reply)) {
		strbuf_adds(&s->out, v->reply);
		strbuf_add(&s->out, "\r\n", 2);
		s->errors++;
		return;
	}
	if (v->reply[0]) {
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_WARN, "policy_reply_invalid");
		log_kv(&l, "verdict", smtp_verdict_kind_str(v->kind));
		log_kv(&l, "why", v->why[0] ? v->why : "-");
		log_end(&l);
	}
	switch (v->kind) {
	case SMTP_VERDICT_REJECT:
		if (what)
			smtp_server_reply(s, SMTP_R_POLICY_REJECT, what);
		else
			smtp_server_reply(s, SMTP_R_POLICY_CONN_REJECT, NULL);
		return;
	case SMTP_VERDICT_SHUTDOWN:
		smtp_server_reply(s, SMTP_R_POLICY_SHUTDOWN, NULL);
		return;
	default: /* TEMPFAIL, or a verdict that may not refuse: never a 2xx here */
		if (what)
			smtp_server_reply(s, SMTP_R_POLICY_TEMPFAIL, what);
		else
			smtp_server_reply(s, SMTP_R_POLICY_CONN_TEMPFAIL, NULL);
		return;
	}
}

/* smtp_server_verdict_reply - see smtp_server_int.h */
void smtp_server_verdict_reply(struct smtp_session *s, enum smtp_stage stage,
			       const struct smtp_verdict *v)
{
	static const char *const what[] = {
		[SMTP_STAGE_CONNECT] = NULL, [SMTP_STAGE_HELO] = "HELO",
		[SMTP_STAGE_MAIL] = "Sender", [SMTP_STAGE_RCPT] = "Recipient",
		[SMTP_STAGE_DATA] = "Message",
	};
	verdict_reply_what(s, (unsigned)stage < 5 ? what[stage] : "Command", v);
}

/* smtp_server_dup - strdup that keeps NULL; *failed set on allocation failure */
char *smtp_server_dup(const char *v, int *failed)
{
	if (v == NULL)
		return NULL;
	char *d = strdup(v);
	if (d == NULL)
		*failed = 1;
	return d;
}

/* smtp_server_log_start - a log line with the session fields every line carries */
void smtp_server_log_start(const struct smtp_session *s, struct log_line *l, enum log_level lvl,
		      const char *event)
{
	log_begin(l, lvl, event);
	log_kv(l, "session", s->session_id ? s->session_id : "-");
	log_kv(l, "client", s->addr ? s->addr : "unknown");
	if (s->env.qid[0])
		log_kv(l, "qid", s->env.qid);
}

/* smtp_server_reply - append one reply from the table; 4xx/5xx count as errors */
void smtp_server_reply(struct smtp_session *s, enum smtp_reply_id id, const char *arg)
{
	smtp_reply_add(&s->out, id, arg);
	const struct smtp_reply_def *d = smtp_reply_def(id);
	if (d && d->code >= 400)
		s->errors++;
}

/* session_flush - hand the batch of replies to the transport in one write */
static void session_flush(struct smtp_session *s)
{
	if (s->out.len == 0)
		return;
	s->ops->write(s->ctx, s->out.s, s->out.len);
	strbuf_reset(&s->out);
}

/* smtp_server_txn_abort - drop the transaction: discard an open queue file, reset */
void smtp_server_txn_abort(struct smtp_session *s)
{
	/* a file being committed belongs to the commit: never abort it here */
	if (s->qf) {
		s->ops->msg_abort(s->ctx, s->qf);
		s->qf = NULL;
	}
	env_free(&s->env);
	env_init(&s->env);
	free(s->first_rcpt);
	s->first_rcpt = NULL;
	s->nrcpt = 0;
	if (s->txn_told) {
		/* the policy checks saw MAIL: their per-message state can go */
		s->txn_told = 0;
		if (s->ops->txn_end)
			s->ops->txn_end(s->ctx, s);
	}
	s->txn_smtputf8 = 0;
	s->txn_body = ENV_BODY_7BIT;
	s->content_size = 0;
	s->stored = 0;
	s->oversize = 0;
	s->write_errno = 0;
	if (s->state != SMTP_STATE_CLOSED && s->state != SMTP_STATE_INIT)
		s->state = s->helo ? SMTP_STATE_READY : SMTP_STATE_GREETED;
}

/* smtp_server_txn_open - whether a transaction (MAIL given) is in progress */
int smtp_server_txn_open(const struct smtp_session *s)
{
	return s->state == SMTP_STATE_MAIL || s->state == SMTP_STATE_RCPT ||
	       s->state == SMTP_STATE_DATA || s->state == SMTP_STATE_BDAT;
}

/* smtp_server_close - request close: ignore further input, abort a transaction */
void smtp_server_close(struct smtp_session *s, const char *reason)
{
	if (s->state == SMTP_STATE_CLOSED)
		return;
	if (smtp_server_txn_open(s)) {
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_INFO, "abort");
		log_kv(&l, "reason", reason);
		log_end(&l);
	}
	s->chunk_active = 0;
	smtp_server_txn_abort(s);
	s->state = SMTP_STATE_CLOSED;
	if (s->close_reason == NULL)
		s->close_reason = reason;
}

/* smtp_server_oom - out of memory inside the session: 421 for this client only */
void smtp_server_oom(struct smtp_session *s)
{
	struct log_line l;
	smtp_server_log_start(s, &l, LOG_LEVEL_ERR, "oom");
	log_end(&l);
	smtp_server_reply(s, SMTP_R_NO_MEMORY, NULL);
	smtp_server_close(s, "oom");
}

/* session_finish - at the end of the outermost entry point: write the batch,
 * then close if asked (close comes after the bytes it follows) */
static void session_finish(struct smtp_session *s)
{
	if (s->depth > 0)
		return;
	session_flush(s);
	if (s->state == SMTP_STATE_CLOSED && !s->close_called) {
		s->close_called = 1;
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_INFO, "disconnect");
		log_kv(&l, "reason", s->close_reason ? s->close_reason : "-");
		log_kvi(&l, "commands", (long long)s->ncmds);
		log_kvi(&l, "messages", (long long)s->nmsgs);
		log_kvi(&l, "rcpts", (long long)s->nrcpts_ok);
		log_kvi(&l, "rcpts_rejected", (long long)s->nrcpts_bad);
		log_kvi(&l, "errors", (long long)s->errors);
		log_end(&l);
		s->ops->close(s->ctx);
	}
}

/* smtp_server_sanitise - copy untrusted text keeping [A-Za-z0-9.-_:[]]; other
 * bytes become '?', length capped; for the Received header and logs */
void smtp_server_sanitise(char *dst, size_t dstlen, const char *src, size_t n)
{
	size_t j = 0;
	for (size_t i = 0; i < n && j + 1 < dstlen; i++) {
		unsigned char c = (unsigned char)src[i];
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			 c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']';
		dst[j++] = ok ? (char)c : '?';
	}
	dst[j] = '\0';
}

/* ------------------------------------------------------- Received header */

/* smtp_server_received_proto - RFC 3848 / RFC 6531 with-protocol type */
static const char *smtp_server_received_proto(const struct smtp_session *s)
{
	if (!s->esmtp)
		return "SMTP";
	int tls = s->tls, auth = s->auth_user != NULL;
	if (s->txn_smtputf8) {
		if (tls && auth)
			return "UTF8SMTPSA";
		if (tls)
			return "UTF8SMTPS";
		if (auth)
			return "UTF8SMTPA";
		return "UTF8SMTP";
	}
	if (tls && auth)
		return "ESMTPSA";
	if (tls)
		return "ESMTPS";
	if (auth)
		return "ESMTPA";
	return "ESMTP";
}

/* received_date - RFC 5322 3.3 date in local time with a numeric zone;
 * names written out so the locale can never change them */
static void received_date(struct strbuf *sb, time_t t)
{
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;
	if (localtime_r(&t, &tm) == NULL) {
		strbuf_adds(sb, "Thu, 01 Jan 1970 00:00:00 +0000");
		return;
	}
	long off = tm.tm_gmtoff / 60;
	char sign = off < 0 ? '-' : '+';
	if (off < 0)
		off = -off;
	strbuf_addf(sb, "%s, %02d %s %04d %02d:%02d:%02d %c%02ld%02ld", days[tm.tm_wday % 7],
		    tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
		    tm.tm_sec, sign, off / 60, off % 60);
}

/* header_safe - an address may go into the header as is (no controls) */
static int header_safe(const char *v)
{
	for (; *v; v++)
		if ((unsigned char)*v < 0x20 || *v == 0x7f || *v == '<' || *v == '>')
			return 0;
	return 1;
}

/* smtp_received_format - the trace field we prepend (RFC 5321 4.4) */
static void smtp_received_format(const struct smtp_session *s, struct strbuf *sb)
{
	char name[256], addr[128], host[256];
	smtp_server_sanitise(name, sizeof(name), s->name ? s->name : "unknown",
		      strlen(s->name ? s->name : "unknown"));
	const char *a = s->addr ? s->addr : "unknown";
	smtp_server_sanitise(addr, sizeof(addr), a, strlen(a));
	const char *h = s->conf->hostname ? s->conf->hostname : "localhost";
	smtp_server_sanitise(host, sizeof(host), h, strlen(h));

	if (s->hide_client && s->auth_user != NULL)
		/* privacy for authenticated submission: the user's address and
		 * reverse name stay out of the message (Postfix's
		 * smtpd_sasl_authenticated_header off plus header_checks) */
		strbuf_addf(sb, "Received: from %s (authenticated)\r\n", s->helo ? s->helo : "unknown");
	else
		strbuf_addf(sb, "Received: from %s (%s [%s%s])\r\n", s->helo ? s->helo : "unknown", name,
			    strchr(addr, ':') ? "IPv6:" : "", addr);
	strbuf_addf(sb, "\tby %s (Tern) with %s id %s", host, smtp_server_received_proto(s), s->env.qid);
	if (s->nrcpt == 1 && s->first_rcpt && header_safe(s->first_rcpt))
		strbuf_addf(sb, "\r\n\tfor <%s>; ", s->first_rcpt);
	else
		strbuf_adds(sb, ";\r\n\t");
	received_date(sb, s->env.arrival ? s->env.arrival : time(NULL));
	strbuf_adds(sb, "\r\n");
}

/* ------------------------------------------------------- message content */

/* content_write - hand content to the queue unless it is already refused */
static void content_write(struct smtp_session *s, const char *p, size_t n)
{
	if (s->write_errno || s->oversize || s->qf == NULL || n == 0)
		return;
	if (s->ops->msg_write(s->ctx, s->qf, p, n) < 0) {
		/* keep reading to the end of the content so client and server
		 * stay in step; the error is replied at the end */
		s->write_errno = errno ? errno : EIO;
		return;
	}
	s->stored += n;
}

/* content_account - count content octets against max_message_size */
static void content_account(struct smtp_session *s, size_t n)
{
	s->content_size += n;
	uint64_t max = s->conf->max_message_size;
	if (max && s->content_size > max)
		s->oversize = 1; /* stop storing: the message will be refused */
}

/* data_sink - smtp_data_feed's sink: unstuffed DATA content */
static void data_sink(void *arg, const char *p, size_t n)
{
	struct smtp_session *s = arg;
	content_account(s, n);
	content_write(s, p, n);
}

/* smtp_server_msg_start - open the queue file and write the Received header first */
enum smtp_reply_id smtp_server_msg_start(struct smtp_session *s)
{
	errno = 0;
	s->qf = s->ops->msg_open(s->ctx, &s->env);
	if (s->qf == NULL) {
		int e = errno;
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_WARN, "queue_error");
		log_kv(&l, "op", "open");
		log_kv(&l, "error", strerror(e ? e : EIO));
		log_end(&l);
		return (e == ENOSPC || e == EDQUOT) ? SMTP_R_DISK_FULL : SMTP_R_TEMP_QUEUE;
	}
	s->content_size = 0;
	s->stored = 0;
	s->oversize = 0;
	s->write_errno = 0;
	struct strbuf hdr;
	strbuf_init(&hdr);
	smtp_received_format(s, &hdr);
	content_write(s, hdr.s, hdr.len);
	strbuf_free(&hdr);
	return SMTP_R_NONE;
}

/* smtp_server_msg_reject - refuse the content: log, reply, abort the transaction */
void smtp_server_msg_reject(struct smtp_session *s, enum smtp_reply_id id, const char *arg,
		       const char *why)
{
	struct log_line l;
	smtp_server_log_start(s, &l, LOG_LEVEL_INFO, "reject");
	log_kv(&l, "stage", "content");
	log_kv(&l, "reason", why);
	const struct smtp_reply_def *d = smtp_reply_def(id);
	log_kvi(&l, "code", d ? d->code : 0);
	log_kv(&l, "from", s->env.sender ? s->env.sender : "");
	log_kvi(&l, "size", (long long)s->content_size);
	log_end(&l);
	smtp_server_reply(s, id, arg);
	smtp_server_txn_abort(s);
}

/* write_error_reply - 452 when out of space, else 451 */
static enum smtp_reply_id write_error_reply(int e)
{
	return (e == ENOSPC || e == EDQUOT) ? SMTP_R_DISK_FULL : SMTP_R_TEMP_QUEUE;
}

/* msg_commit_start - hand the complete file to the queue and wait */
static void msg_commit_start(struct smtp_session *s)
{
	struct queue_file *f = s->qf;
	/* from here the file belongs to the commit: never msg_abort it */
	s->qf = NULL;
	s->env.content_size = s->stored;
	s->state = SMTP_STATE_COMMIT;
	s->ops->msg_commit(s->ctx, f, s);
	/* commit_done may already have run (synchronous queue): the state then
	 * is no longer COMMIT and the caller's loop simply goes on */
}

/* smtp_server_chunk_end - all octets of a BDAT chunk read: reply, or commit on LAST */
void smtp_server_chunk_end(struct smtp_session *s)
{
	s->chunk_active = 0;
	if (s->chunk_has_verdict) {
		/* the DATA stage refused the first chunk, now consumed */
		struct smtp_verdict v = s->chunk_verdict;
		s->chunk_has_verdict = 0;
		smtp_server_verdict_log(s, "data", &v);
		smtp_server_verdict_reply(s, SMTP_STAGE_DATA, &v);
		smtp_server_txn_abort(s);
		if (v.kind == SMTP_VERDICT_SHUTDOWN)
			smtp_server_close(s, "policy");
		return;
	}
	if (s->chunk_err != SMTP_R_NONE) {
		enum smtp_reply_id e = s->chunk_err;
		if (smtp_server_txn_open(s))
			smtp_server_msg_reject(s, e, s->chunk_err_arg, "bdat");
		else
			smtp_server_reply(s, e, s->chunk_err_arg);
		return;
	}
	if (s->oversize) {
		smtp_server_msg_reject(s, SMTP_R_SIZE_EXCEEDED, NULL, "size");
		return;
	}
	uint64_t maxr = s->conf->max_received_headers;
	if (maxr && s->scan.received > maxr) {
		smtp_server_msg_reject(s, SMTP_R_LOOP, NULL, "loop");
		return;
	}
	if (s->write_errno) {
		smtp_server_msg_reject(s, write_error_reply(s->write_errno), NULL, "write_error");
		return;
	}
	if (s->chunk_last) {
		msg_commit_start(s);
		return;
	}
	char n[24];
	snprintf(n, sizeof(n), "%" PRIu64, s->chunk_size);
	smtp_server_reply(s, SMTP_R_BDAT_OK, n);
}

/* hdr_scan_feed - count Received: fields at the start of header lines */
static void hdr_scan_feed(struct smtp_hdr_scan *h, const char *p, size_t n)
{
	static const char want[] = "received:";
	for (size_t i = 0; i < n && h->in_headers; i++) {
		char c = p[i];
		if (c == '\n') {
			if (h->col == 0)
				h->in_headers = 0; /* the empty line ends the header section */
			h->col = 0;
			h->match = 0;
			h->matching = 1;
			continue;
		}
		if (c == '\r')
			continue;
		if (h->matching) {
			char lc = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
			if (lc == want[h->match]) {
				if (++h->match == sizeof(want) - 1) {
					h->received++;
					h->matching = 0;
				}
			} else {
				h->matching = 0;
			}
		}
		h->col++;
	}
}

/* ---------------------------------------------------------- input loop */

/* session_data_step - feed DATA content; at its end decide and commit */
static void session_data_step(struct smtp_session *s)
{
	size_t consumed = 0;
	enum smtp_data_status st =
		smtp_data_feed(&s->data, buf_head(&s->in), buf_len(&s->in), &consumed, data_sink, s);
	buf_consume(&s->in, consumed);
	if (st != SMTP_DATA_END)
		return;
	uint64_t maxr = s->conf->max_received_headers;
	unsigned fl = s->data.flaws;
	if (s->oversize)
		smtp_server_msg_reject(s, SMTP_R_SIZE_EXCEEDED, NULL, "size");
	else if (fl & SMTP_DATA_FLAW_BARE_LF)
		smtp_server_msg_reject(s, SMTP_R_DATA_FLAW, "bare <LF> in message content (RFC 5321 2.3.8)",
			   "bare_lf");
	else if (fl & SMTP_DATA_FLAW_BARE_CR)
		smtp_server_msg_reject(s, SMTP_R_DATA_FLAW, "bare <CR> in message content (RFC 5321 2.3.8)",
			   "bare_cr");
	else if (fl & SMTP_DATA_FLAW_LONG_LINE)
		smtp_server_msg_reject(s, SMTP_R_LINE_TOO_LONG, NULL, "long_line");
	else if (fl & SMTP_DATA_FLAW_NUL)
		smtp_server_msg_reject(s, SMTP_R_DATA_FLAW, "NUL character in message content", "nul");
	else if (maxr && s->data.received_count > maxr)
		smtp_server_msg_reject(s, SMTP_R_LOOP, NULL, "loop");
	else if (s->write_errno)
		smtp_server_msg_reject(s, write_error_reply(s->write_errno), NULL, "write_error");
	else
		msg_commit_start(s);
}

/* session_chunk_step - consume BDAT octets as they are, no line rules */
static void session_chunk_step(struct smtp_session *s)
{
	size_t take = buf_len(&s->in);
	if ((uint64_t)take > s->chunk_left)
		take = (size_t)s->chunk_left;
	if (!s->chunk_discard) {
		const char *p = buf_head(&s->in);
		hdr_scan_feed(&s->scan, p, take);
		content_account(s, take);
		content_write(s, p, take);
	}
	buf_consume(&s->in, take);
	s->chunk_left -= take;
	if (s->chunk_left == 0)
		smtp_server_chunk_end(s);
}

/* session_wipe - cleanse n input octets just handled (they carried
 * credentials) and every octet of the buffer outside the unread part:
 * compaction may have left older copies of them there */
static void session_wipe(struct smtp_session *s, char *p, size_t n)
{
	OPENSSL_cleanse(p, n);
	buf_consume(&s->in, n);
	if (s->in.start > 0)
		OPENSSL_cleanse(s->in.data, s->in.start);
	if (s->in.cap > s->in.end)
		OPENSSL_cleanse(s->in.data + s->in.end, s->in.cap - s->in.end);
}

/* session_line_step - one command line, or the reply to a bad one; 0 when
 * more input is needed */
static int session_line_step(struct smtp_session *s)
{
	char *p = buf_head(&s->in);
	size_t n = buf_len(&s->in);
	if (s->discard_line) {
		/* the rest of an over-long line, replied already: skip to its
		 * CRLF (a bare LF inside it does not end it) */
		size_t skip = 0;
		enum smtp_line_status ds = smtp_line_skip(p, n, &skip);
		buf_consume(&s->in, skip);
		if (ds == SMTP_LINE_OK)
			s->discard_line = 0;
		return skip > 0 || ds == SMTP_LINE_OK;
	}
	size_t line_len = 0, consumed = 0;
	enum smtp_line_status st = smtp_line_next(p, n, &line_len, &consumed);
	switch (st) {
	case SMTP_LINE_NEED_MORE:
		return 0;
	case SMTP_LINE_OK:
		smtp_server_command(s, p, line_len);
		/* p stays valid until consumed: the command never touches s->in */
		if (s->wipe_line) {
			/* "AUTH PLAIN <initial response>" carried a password */
			s->wipe_line = 0;
			session_wipe(s, p, consumed);
		} else {
			buf_consume(&s->in, consumed);
		}
		if (s->state == SMTP_STATE_TLS)
			buf_reset(&s->in); /* plaintext after STARTTLS: dropped */
		return 1;
	case SMTP_LINE_BARE_LF:
	case SMTP_LINE_BARE_CR:
		/* a lone LF or CR is never a line end: the whole line is refused
		 * so a smuggled command can never be acted on */
		buf_consume(&s->in, consumed ? consumed : n);
		s->ncmds++;
		smtp_server_reply(s, SMTP_R_BARE_LF, NULL);
		return 1;
	case SMTP_LINE_TOO_LONG:
		if (consumed > n)
			consumed = n;
		/* line_len 0: no line end yet; the rest is skipped as it comes */
		if (line_len == 0)
			s->discard_line = 1;
		buf_consume(&s->in, consumed);
		s->ncmds++;
		smtp_server_reply(s, SMTP_R_LINE_TOO_LONG, NULL);
		return 1;
	}
	return 0;
}

/* session_auth_step - one AUTH response line (SMTP_STATE_AUTH); 0 when
 * more input is needed. The line is wiped once handled: it holds secrets */
static int session_auth_step(struct smtp_session *s)
{
	char *p = buf_head(&s->in);
	size_t n = buf_len(&s->in);
	size_t max = (size_t)SMTP_AUTH_LINE_MAX + 2; /* with its CRLF */
	char *lf = memchr(p, '\n', n < max ? n : max);
	if (lf == NULL) {
		/* still possible: up to the limit, or exactly at it with the CR
		 * of the CRLF already here */
		if (n < max - 1 || (n == max - 1 && p[n - 1] == '\r'))
			return 0;
		/* RFC 4954 4: 500 5.5.6; the rest of the line is skipped as
		 * any over-long line, and the exchange is over */
		session_wipe(s, p, n);
		s->discard_line = 1;
		smtp_server_auth_log(s, "line_too_long");
		smtp_server_auth_end(s);
		smtp_server_reply(s, SMTP_R_AUTH_LINE_TOO_LONG, NULL);
		return 1;
	}
	size_t consumed = (size_t)(lf - p) + 1;
	size_t len = consumed - 1;
	if (len == 0 || p[len - 1] != '\r') {
		/* a bare LF ends no line (RFC 5321 2.3.8): refuse, end the exchange */
		session_wipe(s, p, consumed);
		smtp_server_auth_log(s, "bare_lf");
		smtp_server_auth_end(s);
		smtp_server_reply(s, SMTP_R_BARE_LF, NULL);
		return 1;
	}
	smtp_server_auth_response(s, p, len - 1);
	session_wipe(s, p, consumed);
	return 1;
}

/* session_errors_check - too many errors: 421 and close */
static void session_errors_check(struct smtp_session *s)
{
	uint64_t max = s->conf->max_errors;
	if (s->state == SMTP_STATE_CLOSED || max == 0 || s->errors < max)
		return;
	struct log_line l;
	smtp_server_log_start(s, &l, LOG_LEVEL_INFO, "too_many_errors");
	log_kvi(&l, "errors", (long long)s->errors);
	log_end(&l);
	smtp_server_reply(s, SMTP_R_TOO_MANY_ERRORS, NULL);
	smtp_server_close(s, "errors");
}

/* session_process - consume buffered input until it runs dry or we wait */
static void session_process(struct smtp_session *s)
{
	while (buf_len(&s->in) > 0) {
		if (s->state == SMTP_STATE_CLOSED) {
			buf_reset(&s->in);
			return;
		}
		if (smtp_server_waiting(s) || s->state == SMTP_STATE_INIT || s->state == SMTP_STATE_TLS)
			return;
		if (s->chunk_active)
			session_chunk_step(s);
		else if (s->state == SMTP_STATE_DATA)
			session_data_step(s);
		else if (s->state == SMTP_STATE_AUTH) {
			if (!session_auth_step(s))
				return;
		} else if (!session_line_step(s))
			return;
		session_errors_check(s);
	}
	/* a zero-length step (BDAT 0 after the last byte) needs no input */
}

/* session_eof_act - the client is gone and nothing is in flight: close */
static void session_eof_act(struct smtp_session *s)
{
	if (s->state == SMTP_STATE_CLOSED)
		return;
	smtp_server_close(s, "eof");
}

/* ------------------------------------------------------------ interface */

/* the input buffer of a session that has read nothing yet: capacity 0 */
static char smtp_session_no_input[1];

struct smtp_session *smtp_session_new(const struct conf *conf, const struct smtp_client_info *info,
				      const struct smtp_server_ops *ops, void *ctx)
{
	struct smtp_session *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	s->conf = conf;
	s->ops = ops;
	s->ctx = ctx;
	int failed = 0;
	s->addr = smtp_server_dup(info->addr, &failed);
	s->name = smtp_server_dup(info->name, &failed);
	s->session_id = smtp_server_dup(info->session_id, &failed);
	s->kind = info->kind;
	s->trusted = info->trusted;
	s->tls = info->tls;
	s->tls_available = info->tls_available;
	s->hide_client = info->hide_client;
	s->info = *info;
	s->info.addr = s->addr;
	s->info.name = s->name;
	s->info.session_id = s->session_id;
	s->state = SMTP_STATE_INIT;
	s->pending_close = SMTP_R_NONE;
	s->chunk_err = SMTP_R_NONE;
	strbuf_init(&s->out);
	env_init(&s->env);
	/* why no input buffer yet: an idle connection (greeted, silent) then
	 * costs no 16 KiB; the buffer is allocated at the first input */
	s->in.data = smtp_session_no_input;
	if (failed) {
		free(s->addr);
		free(s->name);
		free(s->session_id);
		free(s);
		return NULL;
	}
	return s;
}

void smtp_session_free(struct smtp_session *s)
{
	if (s == NULL)
		return;
	if (s->state == SMTP_STATE_COMMIT) {
		/* broken caller contract: the commit still owns its file; the
		 * message may still be delivered, we only lose the reply */
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_CRIT, "session_free_during_commit");
		log_end(&l);
	}
	if (s->state == SMTP_STATE_AUTH_WAIT) {
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_CRIT, "session_free_during_auth");
		log_end(&l);
	}
	if (s->stage_wait) {
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_CRIT, "session_free_during_check");
		log_kv(&l, "stage", smtp_stage_str(s->stage));
		log_end(&l);
	}
	smtp_server_auth_end(s);
	if (s->qf)
		s->ops->msg_abort(s->ctx, s->qf);
	s->qf = NULL;
	env_free(&s->env);
	if (s->in.cap) {
		OPENSSL_cleanse(s->in.data, s->in.cap);
		buf_free(&s->in);
	}
	strbuf_free(&s->out);
	free(s->first_rcpt);
	free(s->helo);
	free(s->auth_user);
	free(s->addr);
	free(s->name);
	free(s->session_id);
	free(s);
}

/* session_pregreet - a client that talks before the greeting is not an
 * SMTP client waiting its turn (RFC 5321 3.1): typically a spam engine */
static void session_pregreet(struct smtp_session *s)
{
	s->state = SMTP_STATE_GREETED;
	smtp_server_reply(s, SMTP_R_PREGREET, NULL);
	smtp_server_close(s, "pregreet");
	buf_reset(&s->in);
}

void smtp_session_start(struct smtp_session *s, int client_spoke_first)
{
	if (s->state != SMTP_STATE_INIT || s->stage_wait)
		return;
	s->depth++;
	struct log_line l;
	smtp_server_log_start(s, &l, LOG_LEVEL_INFO, "connect");
	log_kv(&l, "name", s->name ? s->name : "unknown");
	log_kv(&l, "listener", smtp_listener_kind_str(s->kind));
	if (client_spoke_first)
		log_kvi(&l, "pregreet", 1);
	log_end(&l);
	if (client_spoke_first) {
		session_pregreet(s);
	} else {
		/* the greeting waits for the CONNECT stage (session_connect_finish) */
		smtp_server_stage_begin(s, SMTP_STAGE_CONNECT);
		if (!smtp_server_waiting(s)) {
			session_process(s);
			if (s->eof && !smtp_server_waiting(s))
				session_eof_act(s);
		}
	}
	s->depth--;
	session_finish(s);
}

void smtp_session_input(struct smtp_session *s, const char *p, size_t n)
{
	if (s->state == SMTP_STATE_CLOSED || s->eof)
		return;
	if (s->in.cap == 0 && n > 0 && buf_init(&s->in, SMTP_SESSION_INPUT_MAX) < 0) {
		s->in.data = smtp_session_no_input;
		smtp_server_oom(s); /* out of memory costs this session a 421 */
		return;
	}
	s->depth++;
	while (n > 0 && s->state != SMTP_STATE_CLOSED && s->state != SMTP_STATE_TLS) {
		size_t room = s->in.cap - buf_len(&s->in);
		if (room == 0) {
			/* only while waiting (a commit, an auth check, or the
			 * greeting not sent): the caller should have stopped
			 * reading (wants_input) */
			if (smtp_server_waiting(s)) {
				if (s->pending_close == SMTP_R_NONE)
					s->pending_close = SMTP_R_NO_MEMORY;
				s->eof = 1; /* ignore the rest */
			}
			break;
		}
		size_t take = n < room ? n : room;
		(void)buf_append(&s->in, p, take);
		p += take;
		n -= take;
		session_process(s);
	}
	s->depth--;
	session_finish(s);
}

void smtp_session_eof(struct smtp_session *s)
{
	if (s->state == SMTP_STATE_CLOSED || s->eof)
		return;
	s->depth++;
	s->eof = 1;
	/* during a commit the outcome is still wanted: the message is handed
	 * on (msg_accepted) in commit_done, which then closes; an auth check
	 * is waited for the same way (auth_done closes) */
	if (!smtp_server_waiting(s))
		session_eof_act(s);
	s->depth--;
	session_finish(s);
}

/* session_end_with - timeout / shutdown: 421 and close, after a commit */
static void session_end_with(struct smtp_session *s, enum smtp_reply_id id, const char *reason)
{
	if (s->state == SMTP_STATE_CLOSED)
		return;
	s->depth++;
	if (smtp_server_waiting(s)) {
		s->pending_close = id;
		s->close_reason = reason;
	} else {
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_INFO, reason);
		log_kv(&l, "state", smtp_session_state_str(s));
		log_end(&l);
		smtp_server_reply(s, id, NULL);
		smtp_server_close(s, reason);
	}
	s->depth--;
	session_finish(s);
}

void smtp_session_timeout(struct smtp_session *s)
{
	session_end_with(s, SMTP_R_TIMEOUT, "timeout");
}

void smtp_session_shutdown(struct smtp_session *s)
{
	session_end_with(s, SMTP_R_SHUTDOWN, "shutdown");
}

/* session_resume - after a commit or an auth check: a close that waited
 * for it, the error limit, then (called from outside) the held input */
static void session_resume(struct smtp_session *s)
{
	if (s->pending_close != SMTP_R_NONE && s->state != SMTP_STATE_CLOSED) {
		smtp_server_reply(s, s->pending_close, NULL);
		smtp_server_close(s, s->close_reason ? s->close_reason : "closing");
	}
	session_errors_check(s);
	s->depth--;
	if (s->depth == 0) {
		/* called from outside: resume the pipelined input we held */
		s->depth++;
		session_process(s);
		if (s->eof && !smtp_server_waiting(s))
			session_eof_act(s);
		s->depth--;
		session_finish(s);
	}
}

void smtp_session_commit_done(struct smtp_session *s, int status, int err_no, const char *reason)
{
	if (s->state != SMTP_STATE_COMMIT) {
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_CRIT, "commit_done_unexpected");
		log_kv(&l, "state", smtp_session_state_str(s));
		log_end(&l);
		return;
	}
	s->depth++;
	s->state = s->helo ? SMTP_STATE_READY : SMTP_STATE_GREETED;
	if (status == 0) {
		s->nmsgs++;
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_INFO, "queued");
		log_kv(&l, "from", s->env.sender ? s->env.sender : "");
		log_kvi(&l, "nrcpt", (long long)s->env.nrcpts);
		log_kvi(&l, "size", (long long)s->env.content_size);
		log_kv(&l, "proto", smtp_server_received_proto(s));
		log_end(&l);
		smtp_server_reply(s, SMTP_R_QUEUED, s->env.qid);
		if (s->ops->msg_accepted)
			s->ops->msg_accepted(s->ctx, &s->env);
	} else {
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_WARN, "queue_error");
		log_kv(&l, "op", "commit");
		log_kv(&l, "error", reason ? reason : (err_no ? strerror(err_no) : "unknown"));
		log_end(&l);
		smtp_server_reply(s, write_error_reply(err_no), NULL);
	}
	smtp_server_txn_abort(s); /* qf is NULL: only the envelope is reset */
	session_resume(s);
}

/* session_connect_finish - the CONNECT verdict: greet, or refuse and close */
static void session_connect_finish(struct smtp_session *s, const struct smtp_verdict *v)
{
	s->state = SMTP_STATE_GREETED;
	if (v->kind == SMTP_VERDICT_CONTINUE || v->kind == SMTP_VERDICT_DISCARD) {
		if (s->ops->input_pending && s->ops->input_pending(s->ctx)) {
			/* it talked while the check ran: before the greeting too */
			struct log_line l;
			smtp_server_log_start(s, &l, LOG_LEVEL_INFO, "pregreet");
			log_kv(&l, "during", "connect check");
			log_end(&l);
			session_pregreet(s);
			return;
		}
		smtp_server_reply(s, SMTP_R_GREETING, s->conf->hostname ? s->conf->hostname : "localhost");
		return;
	}
	/* RFC 5321 3.1: 554 (or 421) instead of 220; we do not wait for the
	 * client's QUIT, as for a client that talks first */
	smtp_server_verdict_log(s, "connect", v);
	smtp_server_verdict_reply(s, SMTP_STAGE_CONNECT, v);
	smtp_server_close(s, "policy");
	buf_reset(&s->in);
}

/* smtp_server_stage_begin - see smtp_server_int.h */
void smtp_server_stage_begin(struct smtp_session *s, enum smtp_stage stage)
{
	s->stage = stage;
	s->stage_wait = 1;
	if (s->ops->stage_check == NULL) {
		struct smtp_verdict v;
		smtp_verdict_set(&v, SMTP_VERDICT_CONTINUE, NULL, NULL);
		smtp_session_stage_done(s, &v);
		return;
	}
	/* stage_check may call smtp_session_stage_done before it returns: the
	 * depth counter keeps that inner call from flushing or resuming */
	s->ops->stage_check(s->ctx, stage, s);
}

/* smtp_server_stage_args - the MAIL/RCPT parameters as "KEY=VALUE" */
void smtp_server_stage_args(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	size_t off = 0, k = 0;
	for (size_t i = 0; i < cmd->nparams && i < SMTP_PARAMS_MAX; i++) {
		const struct smtp_param *pr = &cmd->params[i];
		size_t need = pr->key.len + (pr->has_value ? 1 + pr->value.len : 0) + 1;
		if (off + need > sizeof(s->stage_argbuf))
			break; /* cannot happen: they came from one line */
		char *d = s->stage_argbuf + off;
		memcpy(d, pr->key.p, pr->key.len);
		size_t w = pr->key.len;
		if (pr->has_value) {
			d[w++] = '=';
			memcpy(d + w, pr->value.p, pr->value.len);
			w += pr->value.len;
		}
		d[w] = '\0';
		s->stage_args[k++] = d;
		off += w + 1;
	}
	s->stage_args[k] = NULL;
}

void smtp_session_stage_done(struct smtp_session *s, const struct smtp_verdict *v)
{
	if (!s->stage_wait) {
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_CRIT, "stage_done_unexpected");
		log_kv(&l, "state", smtp_session_state_str(s));
		log_end(&l);
		return;
	}
	s->depth++;
	s->stage_wait = 0;
	struct smtp_verdict dflt;
	if (v == NULL) {
		smtp_verdict_set(&dflt, SMTP_VERDICT_TEMPFAIL, NULL, "no verdict");
		v = &dflt;
	}
	if (s->stage == SMTP_STAGE_CONNECT)
		session_connect_finish(s, v);
	else
		smtp_server_stage_finish(s, v);
	s->stage_args[0] = NULL;
	s->stage_rcpt[0] = '\0';
	s->stage_rcpt_first = s->stage_rcpt_n = 0;
	session_resume(s);
}

void smtp_session_commit_verdict(struct smtp_session *s, const struct smtp_verdict *v)
{
	if (s->state != SMTP_STATE_COMMIT) {
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_CRIT, "commit_verdict_unexpected");
		log_kv(&l, "state", smtp_session_state_str(s));
		log_end(&l);
		return;
	}
	s->depth++;
	s->state = s->helo ? SMTP_STATE_READY : SMTP_STATE_GREETED;
	struct smtp_verdict fix;
	if (v == NULL || v->kind == SMTP_VERDICT_CONTINUE) {
		/* a verdict that lets the message through must commit it */
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_CRIT, "commit_verdict_continue");
		log_end(&l);
		smtp_verdict_set(&fix, SMTP_VERDICT_TEMPFAIL, NULL, v ? v->why : "no verdict");
		v = &fix;
	}
	if (v->kind == SMTP_VERDICT_DISCARD) {
		/* the client sees success; nothing is handed on */
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_INFO, "discarded");
		log_kv(&l, "from", s->env.sender ? s->env.sender : "");
		log_kvi(&l, "nrcpt", (long long)s->env.nrcpts);
		log_kvi(&l, "size", (long long)s->env.content_size);
		log_kv(&l, "why", v->why[0] ? v->why : "-");
		log_end(&l);
		smtp_server_reply(s, SMTP_R_QUEUED, s->env.qid);
	} else {
		smtp_server_verdict_log(s, "eom", v);
		verdict_reply_what(s, "Message", v);
		if (v->kind == SMTP_VERDICT_SHUTDOWN)
			smtp_server_close(s, "policy");
	}
	smtp_server_txn_abort(s); /* qf is NULL: only the envelope is reset */
	session_resume(s);
}

void smtp_session_tls_done(struct smtp_session *s, const char *tls_desc)
{
	if (s->state != SMTP_STATE_TLS)
		return;
	s->depth++;
	s->tls = 1;
	s->info.tls = 1;
	/* RFC 3207 4.2: forget everything learnt before the handshake */
	free(s->helo);
	s->helo = NULL;
	free(s->auth_user);
	s->auth_user = NULL;
	s->esmtp = 0;
	s->state = SMTP_STATE_GREETED;
	smtp_server_txn_abort(s);
	buf_reset(&s->in);
	struct log_line l;
	smtp_server_log_start(s, &l, LOG_LEVEL_INFO, "starttls");
	log_kv(&l, "tls", tls_desc ? tls_desc : "-");
	log_end(&l);
	if (s->eof)
		session_eof_act(s);
	s->depth--;
	session_finish(s);
}

/* account_usable - an account name from the daemon that may go into the
 * envelope and logs: printable ASCII or UTF-8, no controls, not too long */
static int account_usable(const char *a)
{
	size_t n = 0;
	for (; a[n]; n++)
		if ((unsigned char)a[n] < 0x21 || a[n] == 0x7f || n >= SMTP_PATH_MAX)
			return 0;
	return n > 0;
}

void smtp_session_auth_done(struct smtp_session *s, int ok, const char *account)
{
	if (s->state != SMTP_STATE_AUTH_WAIT) {
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_CRIT, "auth_done_unexpected");
		log_kv(&l, "state", smtp_session_state_str(s));
		log_end(&l);
		return;
	}
	s->depth++;
	s->state = s->helo ? SMTP_STATE_READY : SMTP_STATE_GREETED;
	if (ok == SMTP_AUTH_OK) {
		const char *acct = account && account_usable(account) ? account : s->auth_name;
		char *a = acct && account_usable(acct) ? strdup(acct) : NULL;
		if (a == NULL) {
			smtp_server_auth_log(s, "tempfail");
			smtp_server_reply(s, SMTP_R_AUTH_TEMPFAIL, NULL);
		} else {
			free(s->auth_user);
			s->auth_user = a;
			smtp_server_auth_log(s, "ok");
			smtp_server_reply(s, SMTP_R_AUTH_OK, NULL);
		}
	} else if (ok == SMTP_AUTH_FAIL) {
		smtp_server_auth_log(s, "failed");
		smtp_server_reply(s, SMTP_R_AUTH_INVALID, NULL);
	} else if (ok == SMTP_AUTH_LOCKED) {
		smtp_server_auth_log(s, "locked");
		smtp_server_reply(s, SMTP_R_AUTH_LOCKED, NULL);
		smtp_server_close(s, "auth_locked");
	} else {
		smtp_server_auth_log(s, "tempfail");
		smtp_server_reply(s, SMTP_R_AUTH_TEMPFAIL, NULL);
	}
	smtp_server_auth_end(s);
	session_resume(s);
}

const char *smtp_session_auth_user(const struct smtp_session *s)
{
	return s->auth_user;
}

const char *smtp_session_helo(const struct smtp_session *s)
{
	return s->helo;
}

int smtp_session_esmtp(const struct smtp_session *s)
{
	return s->esmtp;
}

struct envelope *smtp_session_envelope(struct smtp_session *s)
{
	return &s->env;
}

const struct smtp_client_info *smtp_session_client(const struct smtp_session *s)
{
	return &s->info;
}

const char *smtp_session_rcpt(const struct smtp_session *s, size_t *first, size_t *n)
{
	int at = s->stage_wait && s->stage == SMTP_STAGE_RCPT;
	if (first)
		*first = at ? s->stage_rcpt_first : 0;
	if (n)
		*n = at ? s->stage_rcpt_n : 0;
	return at ? s->stage_rcpt : "";
}

const char *const *smtp_session_esmtp_args(const struct smtp_session *s)
{
	static const char *const none[] = {NULL};
	if (s->stage_wait && (s->stage == SMTP_STAGE_MAIL || s->stage == SMTP_STAGE_RCPT))
		return s->stage_args;
	return none;
}

int smtp_session_wants_input(const struct smtp_session *s)
{
	return s->state != SMTP_STATE_CLOSED && !smtp_server_waiting(s) &&
	       s->state != SMTP_STATE_TLS && !s->eof &&
	       (s->in.cap == 0 || buf_len(&s->in) < s->in.cap); /* cap 0: not allocated yet */
}

unsigned smtp_session_timeout_secs(const struct smtp_session *s)
{
	uint64_t t = (s->state == SMTP_STATE_DATA || s->chunk_active) ? s->conf->data_timeout
								       : s->conf->command_timeout;
	return t > 0xffffffffu ? 0xffffffffu : (unsigned)t;
}

int smtp_session_closed(const struct smtp_session *s)
{
	return s->close_called;
}

const char *smtp_session_state_str(const struct smtp_session *s)
{
	static const char *const checks[] = {
		[SMTP_STAGE_CONNECT] = "check-connect", [SMTP_STAGE_HELO] = "check-helo",
		[SMTP_STAGE_MAIL] = "check-mail", [SMTP_STAGE_RCPT] = "check-rcpt",
		[SMTP_STAGE_DATA] = "check-data",
	};
	if (s->stage_wait && (unsigned)s->stage < sizeof(checks) / sizeof(checks[0]))
		return checks[s->stage];
	if (s->chunk_active)
		return "bdat-chunk";
	return smtp_state_name(s->state);
}
