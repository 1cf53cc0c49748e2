/*
 * smtp_reply - the one table of SMTP replies Tern sends, and their
 * formatting.
 *
 * Exports:
 *   smtp_reply_def / smtp_reply_id_str    the table row, the constant's name
 *   smtp_reply_add / _add_utf8            "CODE ENH TEXT\r\n" with %s filled
 *   smtp_reply_add_custom                 a reply not in the table
 *   smtp_reply_add_multi                  "CODE-line\r\n ... CODE line\r\n"
 *   smtp_reply_is_perm / _is_temp         5xx / 4xx
 * Trusts: the table. Arguments and custom texts are untrusted (a client's
 * address, a remote server's reply) and are sanitised: a CR or LF reaching
 * a reply would let the peer inject reply lines, so every octet below 0x20
 * and 0x7f becomes '?', as does non-ASCII unless the session negotiated
 * SMTPUTF8 and the octets are well-formed UTF-8; length is capped.
 * Implements: RFC 5321 4.2 (reply syntax), 4.2.1 (multiline replies), RFC
 * 2034 (no enhanced code on the greeting, EHLO/HELO and 354), RFC 3463 and
 * RFC 5248 (enhanced status codes).
 */
#include "smtp/smtp_reply.h"

#include <string.h>

#include "smtp/smtp_parse.h"

#define CUSTOM_TEXT_MAX 400 /* a reply line stays well under 512 octets */
#define MULTI_LINE_MAX 400

static const struct smtp_reply_def table[SMTP_R_COUNT] = {
	[SMTP_R_GREETING] = {220, NULL, "%s ESMTP Tern"},
	[SMTP_R_PREGREET] = {554, "5.5.0", "Protocol error: client talked before the greeting"},
	[SMTP_R_BYE] = {221, "2.0.0", "Bye"},
	[SMTP_R_OK] = {250, "2.0.0", "Ok"},
	[SMTP_R_HELO] = {250, NULL, "%s"},
	[SMTP_R_MAIL_OK] = {250, "2.1.0", "Ok"},
	[SMTP_R_RCPT_OK] = {250, "2.1.5", "Ok"},
	[SMTP_R_QUEUED] = {250, "2.0.0", "Ok: queued as %s"},
	[SMTP_R_BDAT_OK] = {250, "2.0.0", "%s octets received"},
	[SMTP_R_DATA_GO] = {354, NULL, "End data with <CR><LF>.<CR><LF>"},
	[SMTP_R_VRFY] = {252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"},
	[SMTP_R_HELP] = {214, "2.0.0", "See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)"},
	[SMTP_R_UNKNOWN_CMD] = {500, "5.5.1", "Command unrecognized"},
	[SMTP_R_LINE_TOO_LONG] = {500, "5.5.2", "Line too long"},
	[SMTP_R_BARE_LF] = {500, "5.5.2", "Bare <LF> or <CR> not allowed (RFC 5321 2.3.8)"},
	[SMTP_R_SYNTAX] = {501, "5.5.4", "Syntax error: %s"},
	[SMTP_R_ADDR_SYNTAX] = {501, "5.1.3", "Bad recipient address syntax: %s"},
	[SMTP_R_SENDER_SYNTAX] = {501, "5.1.7", "Bad sender address syntax: %s"},
	[SMTP_R_NOT_IMPLEMENTED] = {502, "5.5.1", "Command not implemented"},
	[SMTP_R_BAD_SEQUENCE] = {503, "5.5.1", "Bad sequence of commands: %s"},
	[SMTP_R_PARAM_UNKNOWN] = {555, "5.5.4", "Unsupported parameter: %s"},
	[SMTP_R_PARAM_BAD] = {501, "5.5.4", "Bad parameter value: %s"},
	[SMTP_R_SIZE_EXCEEDED] = {552, "5.3.4", "Message size exceeds fixed limit"},
	[SMTP_R_NO_SUCH_USER] = {550, "5.1.1", "Recipient address rejected: User unknown"},
	[SMTP_R_RELAY_DENIED] = {554, "5.7.1", "Relay access denied"},
	[SMTP_R_TOO_MANY_RCPTS] = {452, "4.5.3", "Too many recipients"},
	[SMTP_R_NO_VALID_RCPTS] = {554, "5.5.1", "No valid recipients"},
	[SMTP_R_LOOP] = {554, "5.4.6", "Too many Received headers: mail loop"},
	[SMTP_R_DATA_FLAW] = {550, "5.6.0", "Message refused: %s"},
	[SMTP_R_TEMP_QUEUE] = {451, "4.3.0", "Temporary failure: message not queued"},
	[SMTP_R_DISK_FULL] = {452, "4.3.1", "Insufficient system storage"},
	[SMTP_R_TOO_MANY_ERRORS] = {421, "4.7.0", "Too many errors, closing connection"},
	[SMTP_R_TIMEOUT] = {421, "4.4.2", "Timeout exceeded, closing connection"},
	[SMTP_R_SHUTDOWN] = {421, "4.3.2", "Service shutting down, closing connection"},
	[SMTP_R_TOO_MANY_CONNS] = {421, "4.7.0", "Too many connections, try again later"},
	[SMTP_R_NO_MEMORY] = {421, "4.3.0", "Out of resources, closing connection"},
	[SMTP_R_UTF8_REQUIRED] = {553, "5.6.7", "SMTPUTF8 needed for this address"},
	[SMTP_R_BODY_UNSUPPORTED] = {504, "5.5.4", "BODY type not supported"},
	[SMTP_R_BDAT_NEEDS_BINARY] = {503, "5.5.1", "BINARYMIME requires BDAT"},
	[SMTP_R_TLS_READY] = {220, "2.0.0", "Ready to start TLS"},
	[SMTP_R_TLS_UNAVAILABLE] = {454, "4.7.0", "TLS not available due to temporary reason"},
	[SMTP_R_AUTH_REQUIRED] = {530, "5.7.0", "Authentication required"},
	[SMTP_R_AUTH_OK] = {235, "2.7.0", "Authentication successful"},
	[SMTP_R_AUTH_CHALLENGE] = {334, NULL, "%s"},
	[SMTP_R_AUTH_INVALID] = {535, "5.7.8", "Authentication credentials invalid"},
	[SMTP_R_AUTH_ENCRYPT] = {538, "5.7.11", "Encryption required for requested authentication mechanism"},
	[SMTP_R_AUTH_MECH] = {504, "5.5.4", "Unrecognized authentication type"},
	[SMTP_R_AUTH_CANCELLED] = {501, "5.0.0", "Authentication cancelled"},
	[SMTP_R_AUTH_BAD_RESPONSE] = {501, "5.5.2", "Cannot decode response"},
	[SMTP_R_AUTH_LINE_TOO_LONG] = {500, "5.5.6", "Authentication exchange line is too long"},
	[SMTP_R_AUTH_TEMPFAIL] = {454, "4.7.0", "Temporary authentication failure"},
	[SMTP_R_AUTH_LOCKED] = {421, "4.7.0", "Too many authentication failures, closing connection"},
	[SMTP_R_SENDER_NOT_OWNED] = {553, "5.7.1", "Sender address rejected: not owned by user %s"},
	[SMTP_R_RATE_LIMIT] = {450, "4.7.1", "Rate limit exceeded, try again later"},
	[SMTP_R_POLICY_CONN_REJECT] = {554, "5.7.1", "Connection refused by policy"},
	[SMTP_R_POLICY_CONN_TEMPFAIL] = {421, "4.7.1", "Service temporarily unavailable, closing connection"},
	[SMTP_R_POLICY_REJECT] = {550, "5.7.1", "%s rejected by policy"},
	[SMTP_R_POLICY_TEMPFAIL] = {451, "4.7.1", "%s temporarily rejected by policy, try again later"},
	[SMTP_R_POLICY_SHUTDOWN] = {421, "4.7.0", "Connection closed by policy"},
};

static const char *const names[SMTP_R_COUNT] = {
	[SMTP_R_GREETING] = "greeting", [SMTP_R_PREGREET] = "pregreet", [SMTP_R_BYE] = "bye",
	[SMTP_R_OK] = "ok", [SMTP_R_HELO] = "helo", [SMTP_R_MAIL_OK] = "mail_ok",
	[SMTP_R_RCPT_OK] = "rcpt_ok", [SMTP_R_QUEUED] = "queued", [SMTP_R_BDAT_OK] = "bdat_ok",
	[SMTP_R_DATA_GO] = "data_go", [SMTP_R_VRFY] = "vrfy", [SMTP_R_HELP] = "help",
	[SMTP_R_UNKNOWN_CMD] = "unknown_cmd", [SMTP_R_LINE_TOO_LONG] = "line_too_long",
	[SMTP_R_BARE_LF] = "bare_lf", [SMTP_R_SYNTAX] = "syntax", [SMTP_R_ADDR_SYNTAX] = "addr_syntax",
	[SMTP_R_SENDER_SYNTAX] = "sender_syntax", [SMTP_R_NOT_IMPLEMENTED] = "not_implemented",
	[SMTP_R_BAD_SEQUENCE] = "bad_sequence", [SMTP_R_PARAM_UNKNOWN] = "param_unknown",
	[SMTP_R_PARAM_BAD] = "param_bad", [SMTP_R_SIZE_EXCEEDED] = "size_exceeded",
	[SMTP_R_NO_SUCH_USER] = "no_such_user", [SMTP_R_RELAY_DENIED] = "relay_denied",
	[SMTP_R_TOO_MANY_RCPTS] = "too_many_rcpts", [SMTP_R_NO_VALID_RCPTS] = "no_valid_rcpts",
	[SMTP_R_LOOP] = "loop", [SMTP_R_DATA_FLAW] = "data_flaw", [SMTP_R_TEMP_QUEUE] = "temp_queue",
	[SMTP_R_DISK_FULL] = "disk_full", [SMTP_R_TOO_MANY_ERRORS] = "too_many_errors",
	[SMTP_R_TIMEOUT] = "timeout", [SMTP_R_SHUTDOWN] = "shutdown",
	[SMTP_R_TOO_MANY_CONNS] = "too_many_conns", [SMTP_R_NO_MEMORY] = "no_memory",
	[SMTP_R_UTF8_REQUIRED] = "utf8_required", [SMTP_R_BODY_UNSUPPORTED] = "body_unsupported",
	[SMTP_R_BDAT_NEEDS_BINARY] = "bdat_needs_binary", [SMTP_R_TLS_READY] = "tls_ready",
	[SMTP_R_TLS_UNAVAILABLE] = "tls_unavailable", [SMTP_R_AUTH_REQUIRED] = "auth_required",
	[SMTP_R_AUTH_OK] = "auth_ok", [SMTP_R_AUTH_CHALLENGE] = "auth_challenge",
	[SMTP_R_AUTH_INVALID] = "auth_invalid", [SMTP_R_AUTH_ENCRYPT] = "auth_encrypt",
	[SMTP_R_AUTH_MECH] = "auth_mech", [SMTP_R_AUTH_CANCELLED] = "auth_cancelled",
	[SMTP_R_AUTH_BAD_RESPONSE] = "auth_bad_response",
	[SMTP_R_AUTH_LINE_TOO_LONG] = "auth_line_too_long", [SMTP_R_AUTH_TEMPFAIL] = "auth_tempfail",
	[SMTP_R_AUTH_LOCKED] = "auth_locked", [SMTP_R_SENDER_NOT_OWNED] = "sender_not_owned",
	[SMTP_R_RATE_LIMIT] = "rate_limit", [SMTP_R_POLICY_CONN_REJECT] = "policy_conn_reject",
	[SMTP_R_POLICY_CONN_TEMPFAIL] = "policy_conn_tempfail", [SMTP_R_POLICY_REJECT] = "policy_reject",
	[SMTP_R_POLICY_TEMPFAIL] = "policy_tempfail", [SMTP_R_POLICY_SHUTDOWN] = "policy_shutdown",
};

static const struct smtp_reply_def internal_error = {451, "4.3.0", "Internal error"};

/* smtp_reply_def - the row for id; a broken id still yields a sane 451 */
const struct smtp_reply_def *smtp_reply_def(enum smtp_reply_id id)
{
	if ((unsigned)id >= SMTP_R_COUNT || table[id].code == 0)
		return &internal_error;
	return &table[id];
}

/* smtp_reply_id_str - the constant's name for logs */
const char *smtp_reply_id_str(enum smtp_reply_id id)
{
	if ((unsigned)id >= SMTP_R_COUNT || names[id] == NULL)
		return "?";
	return names[id];
}

/* smtp_reply_is_perm - a 5xx reply: the transaction step failed for good */
int smtp_reply_is_perm(enum smtp_reply_id id)
{
	return smtp_reply_def(id)->code / 100 == 5;
}

/* smtp_reply_is_temp - a 4xx reply: the client should retry later */
int smtp_reply_is_temp(enum smtp_reply_id id)
{
	return smtp_reply_def(id)->code / 100 == 4;
}

/* utf8_lead_len - sequence length announced by a lead octet, 0 if none */
static size_t utf8_lead_len(unsigned char c)
{
	if (c >= 0xC2 && c <= 0xDF)
		return 2;
	if (c >= 0xE0 && c <= 0xEF)
		return 3;
	if (c >= 0xF0 && c <= 0xF4)
		return 4;
	return 0;
}

/*
 * add_sanitised - append s, at most max octets, with every octet that could
 * break the reply line (controls, DEL) or confuse a non-UTF-8 client
 * replaced by '?'. Truncation never splits a UTF-8 sequence; "..." marks it.
 */
static void add_sanitised(struct strbuf *out, const char *s, size_t max, int utf8)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, w = 0;

	while (u[i] != '\0') {
		size_t k = 1;
		if (u[i] >= 0x80 && utf8) {
			k = utf8_lead_len(u[i]);
			if (k == 0 || strnlen(s + i, k) < k || !smtp_utf8_valid(s + i, k))
				k = 1;
		}
		if (w + k > max) {
			strbuf_adds(out, "...");
			return;
		}
		if (k > 1)
			strbuf_add(out, s + i, k);
		else if (u[i] < 0x20 || u[i] >= 0x7f)
			strbuf_addc(out, '?');
		else
			strbuf_addc(out, (char)u[i]);
		i += k;
		w += k;
	}
}

/* enh_valid - "class.subject.detail" per RFC 3463: [245].1*3digit.1*3digit */
static int enh_valid(const char *e)
{
	if ((e[0] != '2' && e[0] != '4' && e[0] != '5') || e[1] != '.')
		return 0;
	e += 2;
	for (int part = 0; part < 2; part++) {
		int digits = 0;
		while (*e >= '0' && *e <= '9' && digits < 4) {
			e++;
			digits++;
		}
		if (digits < 1 || digits > 3)
			return 0;
		if (part == 0 && *e++ != '.')
			return 0;
	}
	return *e == '\0';
}

/* add_code - "CODE SP [ENH SP]" */
static void add_code(struct strbuf *out, int code, const char *enh)
{
	strbuf_addf(out, "%03d ", code);
	if (enh != NULL) {
		strbuf_adds(out, enh);
		strbuf_addc(out, ' ');
	}
}

/* reply_add - format a table row; the text is not a printf format: only the
 * first "%s" is replaced, so a stray '%' in a row can never misbehave */
static void reply_add(struct strbuf *out, enum smtp_reply_id id, const char *arg, int utf8)
{
	const struct smtp_reply_def *d = smtp_reply_def(id);
	const char *pct = strstr(d->text, "%s");

	add_code(out, d->code, d->enh);
	if (pct == NULL) {
		strbuf_adds(out, d->text);
	} else {
		strbuf_add(out, d->text, (size_t)(pct - d->text));
		add_sanitised(out, arg != NULL ? arg : "", SMTP_REPLY_ARG_MAX, utf8);
		strbuf_adds(out, pct + 2);
	}
	strbuf_add(out, "\r\n", 2);
}

/* smtp_reply_add - append a table reply, arg as printable ASCII */
void smtp_reply_add(struct strbuf *out, enum smtp_reply_id id, const char *arg)
{
	reply_add(out, id, arg, 0);
}

/* smtp_reply_add_utf8 - append a table reply, keeping UTF-8 in arg */
void smtp_reply_add_utf8(struct strbuf *out, enum smtp_reply_id id, const char *arg)
{
	reply_add(out, id, arg, 1);
}

/* smtp_reply_add_custom - a reply outside the table, e.g. a relayed one */
void smtp_reply_add_custom(struct strbuf *out, int code, const char *enh, const char *text)
{
	if (code < 200 || code > 599) {
		code = 451;
		enh = "4.3.0";
	}
	if (enh != NULL && (!enh_valid(enh) || enh[0] != (char)('0' + code / 100)))
		enh = NULL;
	add_code(out, code, enh);
	add_sanitised(out, text != NULL ? text : "", CUSTOM_TEXT_MAX, 0);
	strbuf_add(out, "\r\n", 2);
}

/* smtp_reply_add_multi - RFC 5321 4.2.1: "CODE-" on all lines but the last */
void smtp_reply_add_multi(struct strbuf *out, int code, const char *const *lines, size_t n)
{
	if (code < 200 || code > 599)
		code = 451;
	if (n == 0) {
		strbuf_addf(out, "%03d\r\n", code);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		strbuf_addf(out, "%03d%c", code, i + 1 < n ? '-' : ' ');
		add_sanitised(out, lines[i] != NULL ? lines[i] : "", MULTI_LINE_MAX, 0);
		strbuf_add(out, "\r\n", 2);
	}
}
