/*
 * smtp_server_verbs - the SMTP session's verb table: one row per command,
 * each a check (order, argument syntax, ESMTP parameters -> a reply that
 * refuses, or SMTP_R_NONE) and a proceed (the work and its reply). The
 * session core (smtp_server.c) parses nothing itself: it hands each
 * complete command line to smtp_server_command.
 *
 * Exports (private, smtp_server_int.h):
 *   smtp_server_command        parse one command line and run its row
 *   smtp_server_auth_response  one AUTH response line (after a 334)
 *   smtp_server_auth_end       leave the AUTH exchange, wipe its state
 *   smtp_server_auth_log       one event=auth line (never a password)
 *   smtp_auth_mech_str         mechanism name for logs
 *   smtp_server_stage_finish   the policy verdict of a HELO/MAIL/RCPT/DATA
 *                              stage: the command's reply, or the refusal
 * Policy stages: HELO, MAIL, RCPT and DATA (and the first BDAT) do their
 * work up to the point of no return, then ask ops->stage_check
 * (smtp_server_stage_begin); the success reply, or the undoing of the work
 * and the refusal, comes in smtp_server_stage_finish.
 * Trusts: nothing. Every parameter value is checked before it reaches the
 * envelope; the HELO name is sanitised before it is stored. AUTH responses
 * are decoded strictly (src/auth/sasl.h); passwords are handed to
 * ops->auth_check and wiped (OPENSSL_cleanse) right after, and never
 * logged. AUTH is refused outside TLS (538) so no password crosses in
 * clear text; on submission listeners MAIL needs AUTH first (RFC 6409 4.3).
 * Implements: RFC 5321 4.1.1 (commands), 4.1.4 (order), 3.5.3 (VRFY);
 * RFC 1869 (parameters only after EHLO), RFC 1870 (SIZE), RFC 1652 and
 * RFC 3030 (BODY, BDAT), RFC 6531 (SMTPUTF8), RFC 3461 (RET, ENVID,
 * NOTIFY, ORCPT), RFC 4954 (AUTH; 5: AUTH= accepted), RFC 4616 (PLAIN),
 * RFC 3207 (STARTTLS), RFC 6409 (submission: 4.3 authentication, 6.1
 * sender ownership).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <inttypes.h>

#include <openssl/crypto.h>

#include "auth/sasl.h"
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

/* auth_offered - AUTH only under TLS, and only when the daemon can check */
static int auth_offered(const struct smtp_session *s)
{
	return s->tls && s->ops->auth_check != NULL;
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
	smtp_server_stage_begin(s, SMTP_STAGE_HELO); /* helo_reply follows */
}

/* helo_reply - the HELO stage passed: 250, or the EHLO keyword list */
static void helo_reply(struct smtp_session *s)
{
	const char *host = s->conf->hostname ? s->conf->hostname : "localhost";
	if (!s->esmtp) {
		smtp_server_reply(s, SMTP_R_HELO, host);
		return;
	}
	char size_line[48];
	snprintf(size_line, sizeof(size_line), "SIZE %" PRIu64, s->conf->max_message_size);
	const char *lines[12] = {host,       "PIPELINING",          size_line,  "8BITMIME",
				 "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "BINARYMIME",
				 "DSN"};
	size_t n = 9;
	if (starttls_offered(s))
		lines[n++] = "STARTTLS";
	if (auth_offered(s))
		lines[n++] = "AUTH PLAIN LOGIN";
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
	/* RFC 6409 4.3: the submission ports take mail from authenticated
	 * users only, whatever the client address */
	if ((s->kind == SMTP_LISTENER_SUBMISSION || s->kind == SMTP_LISTENER_SUBMISSIONS) &&
	    s->auth_user == NULL)
		return SMTP_R_AUTH_REQUIRED;
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
	/* RFC 6409 6.1: an authenticated user sends only as an address of
	 * its own, so a stolen or shared login cannot forge other users; the
	 * null sender (bounces, receipts) is allowed as in Postfix's
	 * reject_sender_login_mismatch */
	if (s->auth_user != NULL && !cmd->path.is_null && s->ops->sender_check != NULL &&
	    !s->ops->sender_check(s->ctx, s->auth_user, &cmd->path)) {
		*arg = s->auth_user;
		return SMTP_R_SENDER_NOT_OWNED;
	}
	/* last, so only a MAIL that would be accepted counts against the limit */
	if (s->ops->rate_check != NULL && s->ops->rate_check(s->ctx, s->auth_user) != 0)
		return SMTP_R_RATE_LIMIT;
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
	smtp_server_stage_args(s, cmd);
	s->txn_told = 1; /* from here the checks hold per-message state */
	smtp_server_stage_begin(s, SMTP_STAGE_MAIL); /* mail_accept follows */
}

/* mail_accept - the MAIL stage passed: log and 250 */
static void mail_accept(struct smtp_session *s)
{
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
	size_t before = s->env.nrcpts;
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
		/* the recipient(s) are in the envelope: the policy checks see
		 * them, and rcpt_finish takes them out again on a refusal */
		snprintf(s->stage_rcpt, sizeof(s->stage_rcpt), "%s", cmd->path.addr);
		s->stage_rcpt_first = before <= s->env.nrcpts ? before : s->env.nrcpts;
		s->stage_rcpt_n = s->env.nrcpts - s->stage_rcpt_first;
		smtp_server_stage_args(s, cmd);
		smtp_server_stage_begin(s, SMTP_STAGE_RCPT);
		return;
	}
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
	smtp_server_reply(s, id, NULL);
}

/* env_rcpts_truncate - drop the envelope's recipients from index first on */
static void env_rcpts_truncate(struct envelope *e, size_t first)
{
	while (e->nrcpts > first) {
		struct env_rcpt *r = &e->rcpts[--e->nrcpts];
		free(r->addr);
		free(r->orcpt);
		free(r->last_error);
		memset(r, 0, sizeof(*r));
	}
}

/* rcpt_finish - the RCPT stage's verdict: accept, or undo and refuse */
static void rcpt_finish(struct smtp_session *s, const struct smtp_verdict *v)
{
	const char *addr = s->stage_rcpt;
	if (v->kind != SMTP_VERDICT_CONTINUE && v->kind != SMTP_VERDICT_DISCARD) {
		env_rcpts_truncate(&s->env, s->stage_rcpt_first);
		s->nrcpts_bad++;
		struct log_line l;
		smtp_server_log_start(s, &l, LOG_LEVEL_INFO, "rcpt_reject");
		log_kv(&l, "from", s->env.sender ? s->env.sender : "");
		log_kv(&l, "to", addr);
		log_kv(&l, "verdict", "policy");
		log_kv(&l, "policy", smtp_verdict_kind_str(v->kind));
		log_kv(&l, "why", v->why[0] ? v->why : "-");
		log_end(&l);
		smtp_server_verdict_reply(s, SMTP_STAGE_RCPT, v);
		if (v->kind == SMTP_VERDICT_SHUTDOWN)
			smtp_server_close(s, "policy");
		return;
	}
	if (s->nrcpt == 0) {
		s->first_rcpt = strdup(addr);
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
	log_kv(&l, "to", addr);
	log_end(&l);
	smtp_server_reply(s, SMTP_R_RCPT_OK, NULL);
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

/* proceed_data - the DATA stage, then data_start */
static void proceed_data(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	smtp_server_stage_begin(s, SMTP_STAGE_DATA);
}

/* data_start - open the queue file, write Received, reply 354 */
static void data_start(struct smtp_session *s)
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
		/* the first chunk: the DATA stage first (bdat_start follows);
		 * the chunk's octets wait unread meanwhile */
		s->chunk_discard = 1;
		smtp_server_stage_begin(s, SMTP_STAGE_DATA);
		return;
	}
	s->chunk_discard = s->chunk_err != SMTP_R_NONE;
	if (n == 0)
		smtp_server_chunk_end(s);
}

/* bdat_start - the DATA stage of the first BDAT chunk decided: open the
 * queue file, or keep the verdict for the chunk's end; then read the chunk */
static void bdat_start(struct smtp_session *s, const struct smtp_verdict *v)
{
	if (v->kind == SMTP_VERDICT_CONTINUE || v->kind == SMTP_VERDICT_DISCARD) {
		enum smtp_reply_id r = smtp_server_msg_start(s);
		if (r != SMTP_R_NONE) {
			s->chunk_err = r;
		} else {
			s->state = SMTP_STATE_BDAT;
			memset(&s->scan, 0, sizeof(s->scan));
			s->scan.in_headers = 1;
			s->scan.matching = 1;
		}
	} else {
		s->chunk_verdict = *v;
		s->chunk_has_verdict = 1;
	}
	s->chunk_discard = s->chunk_err != SMTP_R_NONE || s->chunk_has_verdict;
	if (s->chunk_left == 0)
		smtp_server_chunk_end(s);
}

/* smtp_server_stage_finish - see smtp_server_int.h */
void smtp_server_stage_finish(struct smtp_session *s, const struct smtp_verdict *v)
{
	int go = v->kind == SMTP_VERDICT_CONTINUE || v->kind == SMTP_VERDICT_DISCARD;
	switch (s->stage) {
	case SMTP_STAGE_HELO:
		if (go) {
			helo_reply(s);
			return;
		}
		/* a refused name is forgotten: the client has not said HELO */
		smtp_server_verdict_log(s, "helo", v);
		free(s->helo);
		s->helo = NULL;
		s->esmtp = 0;
		s->state = SMTP_STATE_GREETED;
		break;
	case SMTP_STAGE_MAIL:
		if (go) {
			mail_accept(s);
			return;
		}
		smtp_server_verdict_log(s, "mail", v);
		smtp_server_txn_abort(s);
		break;
	case SMTP_STAGE_RCPT:
		rcpt_finish(s, v);
		return;
	case SMTP_STAGE_DATA:
		if (s->chunk_active) {
			bdat_start(s, v);
			return;
		}
		if (go) {
			data_start(s);
			return;
		}
		smtp_server_verdict_log(s, "data", v);
		smtp_server_txn_abort(s);
		break;
	case SMTP_STAGE_CONNECT:
		return; /* the session core's */
	}
	smtp_server_verdict_reply(s, s->stage, v);
	if (v->kind == SMTP_VERDICT_SHUTDOWN)
		smtp_server_close(s, "policy");
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

/* proceed_not_impl - 502 (EXPN) */
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

/* ------------------------------------------------------------------ AUTH */

/* smtp_auth_mech_str - mechanism name for logs */
const char *smtp_auth_mech_str(enum smtp_auth_mech m)
{
	switch (m) {
	case SMTP_AUTH_MECH_NONE: return "none";
	case SMTP_AUTH_MECH_PLAIN: return "PLAIN";
	case SMTP_AUTH_MECH_LOGIN: return "LOGIN";
	}
	return "unknown";
}

/* smtp_server_auth_log - event=auth: user name (as sent) and outcome only */
void smtp_server_auth_log(const struct smtp_session *s, const char *result)
{
	struct log_line l;
	smtp_server_log_start(s, &l, LOG_LEVEL_INFO, "auth");
	log_kv(&l, "mech", smtp_auth_mech_str(s->auth_mech));
	log_kv(&l, "user", s->auth_name ? s->auth_name
					: s->auth_login_user[0] ? s->auth_login_user : "-");
	if (s->auth_user != NULL && strcmp(result, "ok") == 0)
		log_kv(&l, "account", s->auth_user);
	log_kv(&l, "result", result);
	log_end(&l);
}

/* smtp_server_auth_end - leave the exchange; the login name is wiped too */
void smtp_server_auth_end(struct smtp_session *s)
{
	if (s->state == SMTP_STATE_AUTH || s->state == SMTP_STATE_AUTH_WAIT)
		s->state = s->helo ? SMTP_STATE_READY : SMTP_STATE_GREETED;
	free(s->auth_name);
	s->auth_name = NULL;
	OPENSSL_cleanse(s->auth_login_user, sizeof(s->auth_login_user));
	s->auth_mech = SMTP_AUTH_MECH_NONE;
	s->auth_step = 0;
}

/* auth_fail_here - end the exchange with a reply decided by the session */
static void auth_fail_here(struct smtp_session *s, enum smtp_reply_id id, const char *why)
{
	smtp_server_auth_log(s, why);
	smtp_server_auth_end(s);
	smtp_server_reply(s, id, NULL);
}

/* auth_submit - hand the credentials to the daemon and wait; the caller
 * wipes password as soon as this returns */
static void auth_submit(struct smtp_session *s, const char *user, const char *password)
{
	free(s->auth_name);
	s->auth_name = strdup(user);
	if (s->auth_name == NULL) {
		smtp_server_auth_end(s);
		smtp_server_oom(s);
		return;
	}
	s->state = SMTP_STATE_AUTH_WAIT;
	/* auth_check may call smtp_session_auth_done before it returns: the
	 * depth counter keeps that inner call from flushing or resuming */
	s->ops->auth_check(s->ctx, user, password, s);
}

/* auth_decode - strict base64 of one response into out (cap octets, NUL
 * added); -1 on bad base64, too long, or (text) an embedded NUL */
static long auth_decode(const char *p, size_t n, unsigned char *out, size_t cap, int text)
{
	long k = sasl_b64_decode(p, n, out, cap - 1);
	if (k < 0)
		return -1;
	out[k] = '\0';
	if (text && memchr(out, '\0', (size_t)k) != NULL)
		return -1;
	return k;
}

/* auth_plain - RFC 4616 message: authzid NUL authcid NUL passwd */
static void auth_plain(struct smtp_session *s, const char *p, size_t n)
{
	/* three fields of at most 255 octets and two NULs; anything longer
	 * is malformed, so the buffer never needs to be bigger */
	unsigned char msg[3 * SASL_FIELD_MAX + 3];
	struct sasl_plain pl;
	long k = auth_decode(p, n, msg, sizeof(msg), 0);
	if (k < 0 || sasl_plain_parse(msg, (size_t)k, &pl) < 0) {
		OPENSSL_cleanse(msg, sizeof(msg));
		OPENSSL_cleanse(&pl, sizeof(pl));
		auth_fail_here(s, SMTP_R_AUTH_BAD_RESPONSE, "malformed");
		return;
	}
	OPENSSL_cleanse(msg, sizeof(msg));
	/* acting for another identity (authzid) is not supported: it must be
	 * empty or the authentication identity itself */
	if (pl.authzid[0] != '\0' && strcmp(pl.authzid, pl.authcid) != 0) {
		free(s->auth_name);
		s->auth_name = strdup(pl.authcid);
		OPENSSL_cleanse(&pl, sizeof(pl));
		auth_fail_here(s, SMTP_R_AUTH_INVALID, "authzid");
		return;
	}
	auth_submit(s, pl.authcid, pl.passwd);
	OPENSSL_cleanse(&pl, sizeof(pl));
}

/* auth_login - LOGIN: a username, then a password, each its own response */
static void auth_login(struct smtp_session *s, const char *p, size_t n)
{
	unsigned char v[SMTP_AUTH_USER_MAX + 1];
	long k = auth_decode(p, n, v, sizeof(v), 1);
	if (k <= 0) {
		OPENSSL_cleanse(v, sizeof(v));
		auth_fail_here(s, SMTP_R_AUTH_BAD_RESPONSE, "malformed");
		return;
	}
	if (s->auth_step == 0) {
		memcpy(s->auth_login_user, v, (size_t)k + 1);
		s->auth_step = 1;
		s->state = SMTP_STATE_AUTH;
		smtp_server_reply(s, SMTP_R_AUTH_CHALLENGE, "UGFzc3dvcmQ6"); /* "Password:" */
		return;
	}
	char user[SMTP_AUTH_USER_MAX + 1];
	memcpy(user, s->auth_login_user, sizeof(user));
	auth_submit(s, user, (const char *)v);
	OPENSSL_cleanse(v, sizeof(v));
	OPENSSL_cleanse(user, sizeof(user));
}

/* auth_respond - one response (initial or after a 334) to the mechanism */
static void auth_respond(struct smtp_session *s, const char *p, size_t n)
{
	if (s->auth_mech == SMTP_AUTH_MECH_PLAIN)
		auth_plain(s, p, n);
	else
		auth_login(s, p, n);
}

/* smtp_server_auth_response - a line after 334: "*" cancels (RFC 4954 4) */
void smtp_server_auth_response(struct smtp_session *s, const char *line, size_t len)
{
	s->ncmds++;
	if (len == 1 && line[0] == '*') {
		auth_fail_here(s, SMTP_R_AUTH_CANCELLED, "cancelled");
		return;
	}
	auth_respond(s, line, len);
}

/* check_auth - order, TLS, mechanism; the initial response is checked later */
static enum smtp_reply_id check_auth(struct smtp_session *s, const struct smtp_cmd *cmd,
				     enum smtp_parse_error perr, const char *detail, const char **arg)
{
	if (s->state == SMTP_STATE_GREETED || !s->esmtp) {
		*arg = "send EHLO first";
		return SMTP_R_BAD_SEQUENCE;
	}
	if (s->auth_user != NULL) {
		*arg = "already authenticated"; /* RFC 4954 4 */
		return SMTP_R_BAD_SEQUENCE;
	}
	if (smtp_server_txn_open(s)) {
		*arg = "AUTH not allowed during a mail transaction";
		return SMTP_R_BAD_SEQUENCE;
	}
	if (s->ops->auth_check == NULL)
		return SMTP_R_NOT_IMPLEMENTED;
	/* never ask for a password over a clear-text connection (RFC 4954
	 * 4, RFC 8314): AUTH is not even advertised there */
	if (!auth_offered(s))
		return SMTP_R_AUTH_ENCRYPT;
	enum smtp_reply_id r = check_syntax(perr, detail, arg);
	if (r != SMTP_R_NONE)
		return r;
	struct slice a = slice_trim(cmd->arg);
	size_t i = 0;
	while (i < a.len && a.p[i] != ' ')
		i++;
	struct slice mech = {a.p, i};
	struct slice ir = slice_trim((struct slice){a.p + i, a.len - i});
	if (str_slice_eq_ci(mech, "PLAIN"))
		s->auth_mech = SMTP_AUTH_MECH_PLAIN;
	else if (str_slice_eq_ci(mech, "LOGIN"))
		s->auth_mech = SMTP_AUTH_MECH_LOGIN;
	else
		return SMTP_R_AUTH_MECH;
	if (memchr(ir.p, ' ', ir.len) != NULL || memchr(ir.p, '\t', ir.len) != NULL) {
		s->auth_mech = SMTP_AUTH_MECH_NONE;
		*arg = "AUTH mechanism [initial-response]";
		return SMTP_R_SYNTAX;
	}
	return SMTP_R_NONE;
}

/* proceed_auth - start the exchange: use the initial response, or 334 */
static void proceed_auth(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	struct slice a = slice_trim(cmd->arg);
	size_t i = 0;
	while (i < a.len && a.p[i] != ' ')
		i++;
	struct slice ir = slice_trim((struct slice){a.p + i, a.len - i});
	s->auth_step = 0;
	s->auth_login_user[0] = '\0';
	free(s->auth_name);
	s->auth_name = NULL;
	if (ir.len > 0) {
		if (ir.len == 1 && ir.p[0] == '*') {
			auth_fail_here(s, SMTP_R_AUTH_CANCELLED, "cancelled");
			return;
		}
		auth_respond(s, ir.p, ir.len);
		return;
	}
	s->state = SMTP_STATE_AUTH;
	/* PLAIN: an empty challenge; LOGIN: "Username:" */
	smtp_server_reply(s, SMTP_R_AUTH_CHALLENGE,
			  s->auth_mech == SMTP_AUTH_MECH_PLAIN ? "" : "VXNlcm5hbWU6");
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
	{SMTP_VERB_STARTTLS, check_starttls, proceed_starttls},
	{SMTP_VERB_AUTH, check_auth, proceed_auth},
};

/* smtp_server_command - parse one command line and run its row */
void smtp_server_command(struct smtp_session *s, const char *line, size_t len)
{
	struct smtp_cmd cmd;
	const char *detail = NULL;
	memset(&cmd, 0, sizeof(cmd));
	enum smtp_parse_error perr = smtp_parse_command(line, len, &cmd, &detail);
	s->ncmds++;
	/* the line may carry an AUTH initial response: the caller wipes it
	 * from the input buffer, whatever the reply */
	if (len >= 4 && str_ncasecmp_ascii(line, "AUTH", 4) == 0)
		s->wipe_line = 1;
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
