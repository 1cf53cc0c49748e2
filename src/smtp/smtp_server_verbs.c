/*
 * smtp_server_verbs - the SMTP session's verb table: one row per command,
 * each a check (order, argument syntax, ESMTP parameters -> a reply that
 * refuses, or SMTP_R_NONE) and a proceed (the work and its reply). The
 * session core (smtp_server.c) parses nothing itself: it hands each
 * complete command line to smtp_server_command.
 *
 * Exports (private, smtp_server_int.h):
 *   smtp_server_command     parse one command line and run its row
 * Trusts: nothing. Every parameter value is checked before it reaches the
 * envelope; the HELO name is sanitised before it is stored.
 * Implements: RFC 5321 4.1.1 (commands), 4.1.4 (order), 3.5.3 (VRFY);
 * RFC 1869 (parameters only after EHLO), RFC 1870 (SIZE), RFC 1652 and
 * RFC 3030 (BODY, BDAT), RFC 6531 (SMTPUTF8), RFC 3461 (RET, ENVID,
 * NOTIFY, ORCPT), RFC 4954 5 (AUTH= accepted), RFC 3207 (STARTTLS).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <inttypes.h>

#include "core/log.h"
#include "core/str.h"
#include "smtp/smtp_server_int.h"

/* slice_trim - drop leading and trailing spaces and tabs */
static struct slice slice_trim(struct slice a)
{
	while (a.len && (a.p[0] == ' ' || a.p[0] == '\t')) {
		a.p++;
		a.len--;
	}
	while (a.len && (a.p[a.len - 1] == ' ' || a.p[a.len - 1] == '\t'))
		a.len--;
	return a;
}

/* slice_copy - NUL-terminated copy of a slice into a fixed buffer, truncated */
static void slice_copy(char *dst, size_t dstlen, struct slice a)
{
	size_t n = a.len < dstlen - 1 ? a.len : dstlen - 1;
	memcpy(dst, a.p, n);
	dst[n] = '\0';
}

/* xtext_valid - RFC 3461 4: xchar is '!'..'~' except '+' and '=';
 * hexchar is '+' and two upper-case hex digits */
static int xtext_valid(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '+') {
			if (i + 2 >= n)
				return 0;
			for (size_t k = 1; k <= 2; k++) {
				unsigned char h = (unsigned char)p[i + k];
				if (!((h >= '0' && h <= '9') || (h >= 'A' && h <= 'F')))
					return 0;
			}
			i += 2;
			continue;
		}
		if (c < '!' || c > '~' || c == '=')
			return 0;
	}
	return 1;
}

struct smtp_verb_row {
	enum smtp_verb verb;
	/* check - order, syntax, parameters; SMTP_R_NONE to proceed, else the
	 * reply (with *arg for its %s) */
	enum smtp_reply_id (*check)(struct smtp_session *s, const struct smtp_cmd *cmd,
				    enum smtp_parse_error perr, const char *detail, const char **arg);
	/* proceed - do the work and reply */
	void (*proceed)(struct smtp_session *s, const struct smtp_cmd *cmd);
};

/* path_error_reply - parse error of MAIL/RCPT to its reply */
static enum smtp_reply_id path_error_reply(enum smtp_verb v, enum smtp_parse_error perr)
{
	switch (perr) {
	case SMTP_PARSE_PATH_SYNTAX:
	case SMTP_PARSE_LOCAL_TOO_LONG:
	case SMTP_PARSE_DOMAIN_TOO_LONG:
	case SMTP_PARSE_PATH_TOO_LONG:
		return v == SMTP_VERB_MAIL ? SMTP_R_SENDER_SYNTAX : SMTP_R_ADDR_SYNTAX;
	case SMTP_PARSE_NUL:
		return SMTP_R_BARE_LF;
	default:
		return SMTP_R_SYNTAX;
	}
}

/* check_syntax - the parser's verdict on the argument as a reply */
static enum smtp_reply_id check_syntax(enum smtp_parse_error perr, const char *detail,
				       const char **arg)
{
	if (perr == SMTP_PARSE_OK)
		return SMTP_R_NONE;
	*arg = detail && detail[0] ? detail : smtp_parse_error_str(perr);
	return SMTP_R_SYNTAX;
}

/* check_any - verbs allowed in any state: only the argument syntax */
static enum smtp_reply_id check_any(struct smtp_session *s, const struct smtp_cmd *cmd,
				    enum smtp_parse_error perr, const char *detail, const char **arg)
{
	return check_syntax(perr, detail, arg);
}

/* check_helo - HELO/EHLO need a domain or address literal argument */
static enum smtp_reply_id check_helo(struct smtp_session *s, const struct smtp_cmd *cmd,
				     enum smtp_parse_error perr, const char *detail, const char **arg)
{
	struct slice a = slice_trim(cmd->arg);
	if (perr == SMTP_PARSE_OK && a.len == 0) {
		*arg = "hostname expected";
		return SMTP_R_SYNTAX;
	}
	return check_syntax(perr, detail, arg);
}

/* starttls_offered - a certificate, a transport that can do it, not yet TLS */
static int starttls_offered(const struct smtp_session *s)
{
	return s->tls_available && !s->tls && s->ops->starttls != NULL;
}

/* proceed_helo - HELO/EHLO: reset any transaction, remember the name */
static void proceed_helo(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	struct slice a = slice_trim(cmd->arg);
	/* the HELO name is untrusted: it goes into the Received header, so
	 * only a conservative set of characters survives, length capped */
	char name[SMTP_HELO_MAX + 1];
	smtp_server_sanitise(name, sizeof(name), a.p, a.len);
	smtp_server_txn_abort(s);
	char *h = strdup(name);
	if (h == NULL) {
		smtp_server_oom(s);
		return;
	}
	free(s->helo);
	s->helo = h;
	s->esmtp = cmd->verb == SMTP_VERB_EHLO;
	s->state = SMTP_STATE_READY;
	struct log_line l;
	smtp_server_log_start(s, &l, LOG_LEVEL_DEBUG, s->esmtp ? "ehlo" : "helo");
	log_kv(&l, "helo", s->helo);
	log_end(&l);

	const char *host = s->conf->hostname ? s->conf->hostname : "localhost";
	if (!s->esmtp) {
		smtp_server_reply(s, SMTP_R_HELO, host);
		return;
	}
	char size_line[48];
	snprintf(size_line, sizeof(size_line), "SIZE %" PRIu64, s->conf->max_message_size);
	const char *lines[10] = {host,       "PIPELINING",          size_line,  "8BITMIME",
				 "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "BINARYMIME",
				 "DSN"};
	size_t n = 9;
	if (starttls_offered(s))
		lines[n++] = "STARTTLS";
	smtp_reply_add_multi(&s->out, 250, lines, n);
}

/* mail_params - SIZE, BODY, SMTPUTF8, RET, ENVID, AUTH (RFC 1870, 1652,
 * 3030, 6531, 3461, 4954) into s->p */
static enum smtp_reply_id mail_params(struct smtp_session *s, const struct smtp_cmd *cmd,
				      const char **arg)
{
	static char keybuf[32];
	struct smtp_txn_params *p = &s->p;
	unsigned seen = 0;
	for (size_t i = 0; i < cmd->nparams; i++) {
		const struct smtp_param *pr = &cmd->params[i];
		struct slice v = pr->value;
		unsigned bit;
		slice_copy(keybuf, sizeof(keybuf), pr->key);
		*arg = keybuf;
		if (!s->esmtp)
			return SMTP_R_PARAM_UNKNOWN; /* RFC 1869: no parameters after HELO */
		if (str_slice_eq_ci(pr->key, "SIZE")) {
			bit = 1;
			if (!pr->has_value || str_parse_u64(v.p, v.len, &p->size) < 0)
				return SMTP_R_PARAM_BAD;
			p->has_size = 1;
		} else if (str_slice_eq_ci(pr->key, "BODY")) {
			bit = 2;
			if (!pr->has_value)
				return SMTP_R_PARAM_BAD;
			if (str_slice_eq_ci(v, "7BIT"))
				p->body = ENV_BODY_7BIT;
			else if (str_slice_eq_ci(v, "8BITMIME"))
				p->body = ENV_BODY_8BITMIME;
			else if (str_slice_eq_ci(v, "BINARYMIME"))
				p->body = ENV_BODY_BINARYMIME;
			else
				return SMTP_R_PARAM_BAD;
		} else if (str_slice_eq_ci(pr->key, "SMTPUTF8")) {
			bit = 4;
			if (pr->has_value)
				return SMTP_R_PARAM_BAD;
			p->smtputf8 = 1;
		} else if (str_slice_eq_ci(pr->key, "RET")) {
			bit = 8;
			if (pr->has_value && str_slice_eq_ci(v, "FULL"))
				p->ret = ENV_RET_FULL;
			else if (pr->has_value && str_slice_eq_ci(v, "HDRS"))
				p->ret = ENV_RET_HDRS;
			else
				return SMTP_R_PARAM_BAD;
		} else if (str_slice_eq_ci(pr->key, "ENVID")) {
			bit = 16;
			if (!pr->has_value || v.len == 0 || v.len > SMTP_ENVID_MAX ||
			    !xtext_valid(v.p, v.len))
				return SMTP_R_PARAM_BAD;
			slice_copy(p->envid, sizeof(p->envid), v);
			p->has_envid = 1;
		} else if (str_slice_eq_ci(pr->key, "AUTH")) {
			bit = 32; /* RFC 4954 5: accepted; we do not relay the identity */
		} else {
			return SMTP_R_PARAM_UNKNOWN;
		}
		if (seen & bit)
			return SMTP_R_PARAM_BAD; /* the same parameter twice */
		seen |= bit;
	}
	*arg = NULL;
	return SMTP_R_NONE;
}

/* check_mail - order (HELO first, no nested MAIL), path, parameters */
static enum smtp_reply_id check_mail(struct smtp_session *s, const struct smtp_cmd *cmd,
				     enum smtp_parse_error perr, const char *detail, const char **arg)
{
	if (s->state == SMTP_STATE_GREETED) {
		*arg = "send HELO/EHLO first";
		return SMTP_R_BAD_SEQUENCE;
	}
	if (s->state != SMTP_STATE_READY) {
		*arg = "nested MAIL command";
		return SMTP_R_BAD_SEQUENCE;
	}
	if (perr != SMTP_PARSE_OK) {
		*arg = detail && detail[0] ? detail : smtp_parse_error_str(perr);
		return path_error_reply(cmd->verb, perr);
	}
	memset(&s->p, 0, sizeof(s->p));
	enum smtp_reply_id r = mail_params(s, cmd, arg);
	if (r != SMTP_R_NONE)
		return r;
	uint64_t max = s->conf->max_message_size;
	if (s->p.has_size && max && s->p.size > max)
		return SMTP_R_SIZE_EXCEEDED;
	if (cmd->path.utf8 && !s->p.smtputf8)
		return SMTP_R_UTF8_REQUIRED;
	return SMTP_R_NONE;
}

/* proceed_mail - open the transaction and fill the envelope */
static void proceed_mail(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	env_free(&s->env);
	env_init(&s->env);
	int failed = 0;
	s->env.sender = smtp_server_dup(cmd->path.is_null ? "" : cmd->path.addr, &failed);
	s->env.body = s->p.body;
	s->env.smtputf8 = s->p.smtputf8;
	s->env.ret = s->p.ret;
	s->env.envid = s->p.has_envid ? smtp_server_dup(s->p.envid, &failed) : NULL;
	s->env.client_addr = smtp_server_dup(s->addr, &failed);
	s->env.helo = smtp_server_dup(s->helo, &failed);
	s->env.auth_user = smtp_server_dup(s->auth_user, &failed);
	s->env.arrival = time(NULL);
	if (failed) {
		smtp_server_oom(s);
		return;
	}
	s->txn_smtputf8 = s->p.smtputf8;
	s->txn_body = s->p.body;
	s->state = SMTP_STATE_MAIL;
	struct log_line l;
	smtp_server_log_start(s, &l, LOG_LEVEL_INFO, "mail");
	log_kv(&l, "from", s->env.sender);
	if (s->p.has_size)
		log_kvi(&l, "size", (long long)s->p.size);
	log_kv(&l, "body", env_body_str(s->env.body));
	if (s->env.smtputf8)
		log_kvi(&l, "smtputf8", 1);
	log_end(&l);
	smtp_server_reply(s, SMTP_R_MAIL_OK, NULL);
}

/* notify_parse - RFC 3461 4.1: NEVER alone, or a list of SUCCESS, FAILURE,
 * DELAY; 0 on a bad value */
static unsigned notify_parse(struct slice v)
{
	unsigned bits = 0;
	size_t i = 0;
	while (i <= v.len) {
		size_t j = i;
		while (j < v.len && v.p[j] != ',')
			j++;
		struct slice w = {v.p + i, j - i};
		unsigned b;
		if (str_slice_eq_ci(w, "NEVER"))
			b = ENV_NOTIFY_NEVER;
		else if (str_slice_eq_ci(w, "SUCCESS"))
			b = ENV_NOTIFY_SUCCESS;
		else if (str_slice_eq_ci(w, "FAILURE"))
			b = ENV_NOTIFY_FAILURE;
		else if (str_slice_eq_ci(w, "DELAY"))
			b = ENV_NOTIFY_DELAY;
		else
			return 0;
		if (bits & b)
			return 0;
		bits |= b;
		i = j + 1;
	}
	if ((bits & ENV_NOTIFY_NEVER) && bits != ENV_NOTIFY_NEVER)
		return 0;
	return bits;
}

/* orcpt_valid - RFC 3461 4.2: addr-type ";" xtext (utf-8-addr-xtext for
 * addr-type utf-8, RFC 6533, which is printable ASCII too) */
static int orcpt_valid(struct slice v)
{
	size_t i = 0;
	while (i < v.len && v.p[i] != ';') {
		char c = v.p[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-'))
			return 0;
		i++;
	}
	if (i == 0 || i >= v.len - 1 || v.p[i] != ';')
		return 0;
	struct slice type = {v.p, i};
	const char *x = v.p + i + 1;
	size_t xn = v.len - i - 1;
	if (str_slice_eq_ci(type, "rfc822"))
		return xtext_valid(x, xn);
	for (size_t k = 0; k < xn; k++)
		if (x[k] < '!' || x[k] > '~' || x[k] == '=')
			return 0;
	return 1;
}

/* check_rcpt - order (MAIL first), path, NOTIFY/ORCPT, limits */
static enum smtp_reply_id check_rcpt(struct smtp_session *s, const struct smtp_cmd *cmd,
				     enum smtp_parse_error perr, const char *detail, const char **arg)
{
	static char keybuf[32];
	if (s->state != SMTP_STATE_MAIL && s->state != SMTP_STATE_RCPT) {
		*arg = s->state == SMTP_STATE_BDAT ? "RCPT after BDAT" : "need MAIL before RCPT";
		return SMTP_R_BAD_SEQUENCE;
	}
	if (perr != SMTP_PARSE_OK) {
		*arg = detail && detail[0] ? detail : smtp_parse_error_str(perr);
		return path_error_reply(cmd->verb, perr);
	}
	memset(&s->p, 0, sizeof(s->p));
	for (size_t i = 0; i < cmd->nparams; i++) {
		const struct smtp_param *pr = &cmd->params[i];
		slice_copy(keybuf, sizeof(keybuf), pr->key);
		*arg = keybuf;
		if (!s->esmtp)
			return SMTP_R_PARAM_UNKNOWN;
		if (str_slice_eq_ci(pr->key, "NOTIFY")) {
			if (s->p.notify || !pr->has_value)
				return SMTP_R_PARAM_BAD;
			s->p.notify = notify_parse(pr->value);
			if (s->p.notify == 0)
				return SMTP_R_PARAM_BAD;
		} else if (str_slice_eq_ci(pr->key, "ORCPT")) {
			if (s->p.has_orcpt || !pr->has_value || pr->value.len > SMTP_ORCPT_MAX ||
			    !orcpt_valid(pr->value))
				return SMTP_R_PARAM_BAD;
			slice_copy(s->p.orcpt, sizeof(s->p.orcpt), pr->value);
			s->p.has_orcpt = 1;
		} else {
			return SMTP_R_PARAM_UNKNOWN;
		}
	}
	*arg = NULL;
	if (cmd->path.utf8 && !s->txn_smtputf8)
		return SMTP_R_UTF8_REQUIRED;
	uint64_t max = s->conf->max_recipients;
	if (max && s->nrcpt >= max)
		return SMTP_R_TOO_MANY_RCPTS;
	return SMTP_R_NONE;
}

/* proceed_rcpt - ask ops->rcpt_check and reply its verdict */
static void proceed_rcpt(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	int may_relay = s->trusted || s->auth_user != NULL;
	enum smtp_rcpt_verdict v = s->ops->rcpt_check(s->ctx, &cmd->path, may_relay, &s->env,
						      s->p.has_orcpt ? s->p.orcpt : NULL, s->p.notify);
	enum smtp_reply_id id;
	switch (v) {
	case SMTP_RCPT_ACCEPT: id = SMTP_R_RCPT_OK; break;
	case SMTP_RCPT_UNKNOWN_USER: id = SMTP_R_NO_SUCH_USER; break;
	case SMTP_RCPT_RELAY_DENIED: id = SMTP_R_RELAY_DENIED; break;
	case SMTP_RCPT_TEMPFAIL:
	default: id = SMTP_R_TEMP_QUEUE; break;
	}
	if (id == SMTP_R_RCPT_OK) {
		if (s->nrcpt == 0) {
			s->first_rcpt = strdup(cmd->path.addr);
			if (s->first_rcpt == NULL) {
				smtp_server_oom(s);
				return;
			}
		}
		s->nrcpt++;
		s->nrcpts_ok++;
		s->state = SMTP_STATE_RCPT;
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_DEBUG, "rcpt");
		log_kv(&l, "to", cmd->path.addr);
		log_end(&l);
	} else {
		s->nrcpts_bad++;
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_INFO, "rcpt_reject");
		log_kv(&l, "from", s->env.sender ? s->env.sender : "");
		log_kv(&l, "to", cmd->path.addr);
		log_kvi(&l, "code", smtp_reply_def(id)->code);
		log_kv(&l, "verdict", v == SMTP_RCPT_UNKNOWN_USER   ? "unknown_user"
				      : v == SMTP_RCPT_RELAY_DENIED ? "relay_denied"
								    : "tempfail");
		log_end(&l);
	}
	smtp_server_reply(s, id, NULL);
}

/* check_data - MAIL and a recipient first, no BINARYMIME, no argument */
static enum smtp_reply_id check_data(struct smtp_session *s, const struct smtp_cmd *cmd,
				     enum smtp_parse_error perr, const char *detail, const char **arg)
{
	if (s->state == SMTP_STATE_BDAT) {
		*arg = "DATA after BDAT";
		return SMTP_R_BAD_SEQUENCE;
	}
	if (s->state == SMTP_STATE_MAIL)
		return SMTP_R_NO_VALID_RCPTS;
	if (s->state != SMTP_STATE_RCPT) {
		*arg = "need MAIL command";
		return SMTP_R_BAD_SEQUENCE;
	}
	if (s->txn_body == ENV_BODY_BINARYMIME)
		return SMTP_R_BDAT_NEEDS_BINARY;
	if (perr == SMTP_PARSE_OK && slice_trim(cmd->arg).len) {
		*arg = "no argument allowed";
		return SMTP_R_SYNTAX;
	}
	return check_syntax(perr, detail, arg);
}

/* proceed_data - open the queue file, write Received, reply 354 */
static void proceed_data(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	enum smtp_reply_id r = smtp_server_msg_start(s);
	if (r != SMTP_R_NONE) {
		smtp_server_reply(s, r, NULL);
		smtp_server_txn_abort(s);
		return;
	}
	smtp_data_init(&s->data);
	s->state = SMTP_STATE_DATA;
	smtp_server_reply(s, SMTP_R_DATA_GO, NULL);
}

/* check_bdat - "n [LAST]" into s->p; 501 only when n itself is unreadable */
static enum smtp_reply_id check_bdat(struct smtp_session *s, const struct smtp_cmd *cmd,
				     enum smtp_parse_error perr, const char *detail, const char **arg)
{
	struct slice a = cmd->arg;
	size_t i = 0;
	while (i < a.len && a.p[i] >= '0' && a.p[i] <= '9')
		i++;
	memset(&s->p, 0, sizeof(s->p));
	if (i == 0 || i > 20 || str_parse_u64(a.p, i, &s->p.chunk_size) < 0 ||
	    (i < a.len && a.p[i] != ' ')) {
		/* without a size we cannot know how many octets follow */
		*arg = "BDAT chunk size expected";
		return SMTP_R_SYNTAX;
	}
	struct slice rest = slice_trim((struct slice){a.p + i, a.len - i});
	if (rest.len == 0)
		s->p.chunk_last = 0;
	else if (str_slice_eq_ci(rest, "LAST"))
		s->p.chunk_last = 1;
	else
		s->p.chunk_junk = 1; /* octets still follow: consumed, then 501 */
	return SMTP_R_NONE;
}

/* proceed_bdat - start reading a chunk; errors wait until its octets are
 * consumed (RFC 3030 2: the client sends them regardless) */
static void proceed_bdat(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	uint64_t n = s->p.chunk_size;
	s->chunk_active = 1;
	s->chunk_left = n;
	s->chunk_size = n;
	s->chunk_last = s->p.chunk_last;
	s->chunk_err = SMTP_R_NONE;
	s->chunk_err_arg = NULL;
	uint64_t max = s->conf->max_message_size;
	if (s->p.chunk_junk) {
		s->chunk_err = SMTP_R_SYNTAX;
		s->chunk_err_arg = "BDAT size [LAST] expected";
	} else if (s->state == SMTP_STATE_MAIL) {
		s->chunk_err = SMTP_R_NO_VALID_RCPTS;
	} else if (s->state != SMTP_STATE_RCPT && s->state != SMTP_STATE_BDAT) {
		s->chunk_err = SMTP_R_BAD_SEQUENCE;
		s->chunk_err_arg = "need MAIL and RCPT before BDAT";
	} else if (max && (n > max || s->content_size > max - n)) {
		s->chunk_err = SMTP_R_SIZE_EXCEEDED;
	} else if (s->state == SMTP_STATE_RCPT) {
		enum smtp_reply_id r = smtp_server_msg_start(s);
		if (r != SMTP_R_NONE) {
			s->chunk_err = r;
		} else {
			s->state = SMTP_STATE_BDAT;
			memset(&s->scan, 0, sizeof(s->scan));
			s->scan.in_headers = 1;
			s->scan.matching = 1;
		}
	}
	s->chunk_discard = s->chunk_err != SMTP_R_NONE;
	if (n == 0)
		smtp_server_chunk_end(s);
}

/* proceed_rset - abort the transaction */
static void proceed_rset(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	if (s->qf) {
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_INFO, "abort");
		log_kv(&l, "reason", "rset");
		log_end(&l);
	}
	smtp_server_txn_abort(s);
	smtp_server_reply(s, SMTP_R_OK, NULL);
}

/* proceed_noop - 250 */
static void proceed_noop(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	smtp_server_reply(s, SMTP_R_OK, NULL);
}

/* proceed_quit - 221 and close */
static void proceed_quit(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	smtp_server_reply(s, SMTP_R_BYE, NULL);
	smtp_server_close(s, "quit");
}

/* proceed_vrfy - 252: never tells which users exist (RFC 5321 3.5.3) */
static void proceed_vrfy(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	smtp_server_reply(s, SMTP_R_VRFY, NULL);
}

/* proceed_help - 214 */
static void proceed_help(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	smtp_server_reply(s, SMTP_R_HELP, NULL);
}

/* proceed_not_impl - 502 (EXPN; STARTTLS and AUTH until they get rows) */
static void proceed_not_impl(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	smtp_server_reply(s, SMTP_R_NOT_IMPLEMENTED, NULL);
}

/* check_starttls - offered, outside a transaction, no argument */
static enum smtp_reply_id check_starttls(struct smtp_session *s, const struct smtp_cmd *cmd,
					 enum smtp_parse_error perr, const char *detail,
					 const char **arg)
{
	if (s->tls) {
		*arg = "TLS already active";
		return SMTP_R_BAD_SEQUENCE;
	}
	if (!starttls_offered(s))
		return SMTP_R_NOT_IMPLEMENTED;
	if (smtp_server_txn_open(s)) {
		*arg = "STARTTLS inside a mail transaction";
		return SMTP_R_BAD_SEQUENCE;
	}
	return check_syntax(perr, detail, arg);
}

/* proceed_starttls - 220, then wait for the handshake (RFC 3207) */
static void proceed_starttls(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	smtp_server_reply(s, SMTP_R_TLS_READY, NULL);
	s->state = SMTP_STATE_TLS;
	/* the caller drops the rest of the buffer after this line: anything
	 * pipelined behind STARTTLS was sent in plaintext and must never be
	 * taken as sent under TLS (CVE-2011-0411) */
	s->ops->starttls(s->ctx);
}

static const struct smtp_verb_row smtp_verb_table[] = {
	{SMTP_VERB_HELO, check_helo, proceed_helo},
	{SMTP_VERB_EHLO, check_helo, proceed_helo},
	{SMTP_VERB_MAIL, check_mail, proceed_mail},
	{SMTP_VERB_RCPT, check_rcpt, proceed_rcpt},
	{SMTP_VERB_DATA, check_data, proceed_data},
	{SMTP_VERB_BDAT, check_bdat, proceed_bdat},
	{SMTP_VERB_RSET, check_any, proceed_rset},
	{SMTP_VERB_NOOP, check_any, proceed_noop},
	{SMTP_VERB_QUIT, check_any, proceed_quit},
	{SMTP_VERB_VRFY, check_any, proceed_vrfy},
	{SMTP_VERB_EXPN, check_any, proceed_not_impl},
	{SMTP_VERB_HELP, check_any, proceed_help},
	/* AUTH comes later as its own check/proceed row */
	{SMTP_VERB_STARTTLS, check_starttls, proceed_starttls},
	{SMTP_VERB_AUTH, check_any, proceed_not_impl},
};

/* smtp_server_command - parse one command line and run its row */
void smtp_server_command(struct smtp_session *s, const char *line, size_t len)
{
	struct smtp_cmd cmd;
	const char *detail = NULL;
	memset(&cmd, 0, sizeof(cmd));
	enum smtp_parse_error perr = smtp_parse_command(line, len, &cmd, &detail);
	s->ncmds++;
	if (perr == SMTP_PARSE_NUL) {
		smtp_server_reply(s, SMTP_R_BARE_LF, NULL);
		return;
	}
	const struct smtp_verb_row *row = NULL;
	if (perr != SMTP_PARSE_UNKNOWN_VERB)
		for (size_t i = 0; i < sizeof(smtp_verb_table) / sizeof(smtp_verb_table[0]); i++)
			if (smtp_verb_table[i].verb == cmd.verb)
				row = &smtp_verb_table[i];
	if (row == NULL) {
		smtp_server_reply(s, SMTP_R_UNKNOWN_CMD, NULL);
		return;
	}
	const char *arg = NULL;
	/* order before syntax: a command out of sequence gets 503 whatever
	 * its argument (each check looks at perr after its order rules) */
	enum smtp_reply_id r = row->check(s, &cmd, perr, detail, &arg);
	if (r != SMTP_R_NONE) {
		if (cmd.verb == SMTP_VERB_MAIL || cmd.verb == SMTP_VERB_RCPT) {
			struct log_line l;
			smtp_server_log_start(s, &l, LOG_LEVEL_INFO, "reject");
			log_kv(&l, "stage", smtp_verb_str(cmd.verb));
			log_kvi(&l, "code", smtp_reply_def(r)->code);
			if (cmd.path.addr[0])
				log_kv(&l, cmd.verb == SMTP_VERB_MAIL ? "from" : "to", cmd.path.addr);
			log_end(&l);
		}
		smtp_server_reply(s, r, arg);
		return;
	}
	row->proceed(s, &cmd);
}
