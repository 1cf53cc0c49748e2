/*
 * milter - asynchronous milter client (MTA side, protocol v6) on libevent:
 * the chain, the session and its stages. See milter.h for the model;
 * milter_conn.c is one milter's socket and queue, milter_codec.c the wire
 * format and every check of what a milter sends, milter_frame.c cuts the
 * message into header/body events.
 *
 * Exports: milter_chain_new/_free/_size, milter_sess_new/_free,
 * milter_sess_connect/_helo/_mail/_rcpt/_data/_set_qid/_set_tls/_content/
 * _eom/_abort/_backlog, milter_default_str, milter_mod_kind_str; internal
 * (milter_int.h): milter_sess_kick, milter_sess_final, milter_sess_stage_str.
 *
 * Per milter of a session there is one socket and a queue of packets. A
 * packet that expects a reply is written only when the previous reply has
 * arrived (stop and wait, as Postfix does; packets that expect none, such
 * as macros or events under an SMFIP_NR_* flag, go out at once). So each
 * reply is matched to exactly one command and a refusal in the middle of
 * the headers cannot leave replies in flight (libmilter ignores the events
 * that follow a refusal). Replies to a transaction that was aborted are
 * recognised by a generation number and ignored.
 *
 * Callbacks run from a deferred event of their own (event_active), never
 * from inside a public call or from deep inside a socket handler, so a
 * callback may free the session.
 *
 * Trusts: nothing a milter sends (the codec checks it); the caller's
 * strings are copied and cut to the protocol's limits.
 * Implements: the Sendmail milter protocol v6 (libmilter), with Postfix's
 * milter8.c as the reference for what an MTA does with each reply.
 */
#include "policy/milter_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/log.h"
#include "core/xalloc.h"
#include "policy/milter_codec.h"
#include "policy/milter_frame.h"

#define DEF_CONNECT_TIMEOUT 10
#define DEF_CMD_TIMEOUT 30
#define DEF_EOM_TIMEOUT 120
#define DEF_MAX_BODY ((size_t)64 << 20)

/* stage_name - a stage for logs */
static const char *stage_name(enum sstage st)
{
	switch (st) {
	case S_CONNECT: return "connect";
	case S_HELO: return "helo";
	case S_MAIL: return "mail";
	case S_RCPT: return "rcpt";
	case S_DATA: return "data";
	case S_EOM: return "eom";
	default: return "none";
	}
}

/* milter_sess_stage_str - the stage for logs */
const char *milter_sess_stage_str(const struct milter_sess *s)
{
	return s->stage == S_NONE && s->content_open ? "content" : stage_name(s->stage);
}

/* milter_default_str - "tempfail" / "accept" */
const char *milter_default_str(enum milter_default d)
{
	return d == MILTER_DEFAULT_ACCEPT ? "accept" : "tempfail";
}

/* milter_mod_kind_str - name of a modification */
const char *milter_mod_kind_str(enum milter_mod_kind k)
{
	switch (k) {
	case MILTER_MOD_ADDHEADER: return "addheader";
	case MILTER_MOD_INSHEADER: return "insheader";
	case MILTER_MOD_CHGHEADER: return "chgheader";
	case MILTER_MOD_CHGFROM: return "chgfrom";
	case MILTER_MOD_ADDRCPT: return "addrcpt";
	case MILTER_MOD_DELRCPT: return "delrcpt";
	case MILTER_MOD_QUARANTINE: return "quarantine";
	}
	return "unknown";
}

/* ---- the chain ---- */

/* parse_port - 1..65535 */
static int parse_port(const char *s, unsigned *port)
{
	char *end;
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v == 0 || v > 65535)
		return -1;
	*port = (unsigned)v;
	return 0;
}

/* parse_addr - "unix:/path", "local:/path", "inet:host:port", "inet:port@host",
 * "inet6:[addr]:port", "inet6:port@addr"; host names are resolved here */
static int parse_addr(const char *text, struct milter_addr *a, char *err, size_t errlen)
{
	memset(a, 0, sizeof(*a));
	const char *colon = strchr(text, ':');
	if (colon == NULL) {
		snprintf(err, errlen, "milter %s: expected unix:/path or inet:host:port", text);
		return -1;
	}
	size_t tl = (size_t)(colon - text);
	const char *rest = colon + 1;
	if ((tl == 4 && memcmp(text, "unix", 4) == 0) || (tl == 5 && memcmp(text, "local", 5) == 0)) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&a->ss;
		if (rest[0] != '/' || strlen(rest) >= sizeof(sun->sun_path)) {
			snprintf(err, errlen, "milter %s: unix socket needs an absolute path", text);
			return -1;
		}
		sun->sun_family = AF_UNIX;
		memcpy(sun->sun_path, rest, strlen(rest) + 1);
		a->family = AF_UNIX;
		a->sslen = (socklen_t)sizeof(*sun);
		a->text = xstrdup(text);
		return 0;
	}
	int family;
	if (tl == 4 && memcmp(text, "inet", 4) == 0)
		family = AF_UNSPEC;
	else if (tl == 5 && memcmp(text, "inet6", 5) == 0)
		family = AF_INET6;
	else {
		snprintf(err, errlen, "milter %s: unknown transport (unix, inet, inet6)", text);
		return -1;
	}
	char host[256], portstr[16];
	const char *at = strchr(rest, '@');
	if (at != NULL) { /* Sendmail's port@host */
		size_t pl = (size_t)(at - rest);
		if (pl == 0 || pl >= sizeof(portstr) || strlen(at + 1) >= sizeof(host)) {
			snprintf(err, errlen, "milter %s: bad port@host", text);
			return -1;
		}
		memcpy(portstr, rest, pl);
		portstr[pl] = 0;
		snprintf(host, sizeof(host), "%s", at + 1);
	} else {
		const char *pc = strrchr(rest, ':');
		if (pc == NULL || strlen(pc + 1) >= sizeof(portstr) ||
		    (size_t)(pc - rest) >= sizeof(host)) {
			snprintf(err, errlen, "milter %s: expected host:port", text);
			return -1;
		}
		size_t hl = (size_t)(pc - rest);
		memcpy(host, rest, hl);
		host[hl] = 0;
		snprintf(portstr, sizeof(portstr), "%s", pc + 1);
	}
	size_t hl = strlen(host);
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = 0;
	}
	unsigned port;
	if (host[0] == 0 || parse_port(portstr, &port) < 0) {
		snprintf(err, errlen, "milter %s: bad host or port", text);
		return -1;
	}
	struct addrinfo hints = {0}, *res = NULL;
	hints.ai_family = family;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	int rc = getaddrinfo(host, portstr, &hints, &res);
	if (rc != 0 || res == NULL) {
		snprintf(err, errlen, "milter %s: cannot resolve %s: %s", text, host, gai_strerror(rc));
		if (res)
			freeaddrinfo(res);
		return -1;
	}
	memcpy(&a->ss, res->ai_addr, res->ai_addrlen);
	a->sslen = res->ai_addrlen;
	a->family = res->ai_family;
	freeaddrinfo(res);
	a->text = xstrdup(text);
	return 0;
}

/* milter_chain_new - check the configuration */
struct milter_chain *milter_chain_new(struct event_base *base, const struct milter_chain_conf *c,
				      char *err, size_t errlen)
{
	struct milter_chain *ch = xcalloc(1, sizeof(*ch));
	ch->base = base;
	ch->addrs = xcalloc(c->n ? c->n : 1, sizeof(*ch->addrs));
	for (size_t i = 0; i < c->n; i++) {
		if (c->addrs[i] == NULL || parse_addr(c->addrs[i], &ch->addrs[i], err, errlen) < 0) {
			if (c->addrs[i] == NULL)
				snprintf(err, errlen, "milter %zu: no address", i + 1);
			milter_chain_free(ch);
			return NULL;
		}
		ch->n = i + 1;
	}
	ch->connect_timeout = c->connect_timeout ? c->connect_timeout : DEF_CONNECT_TIMEOUT;
	ch->cmd_timeout = c->cmd_timeout ? c->cmd_timeout : DEF_CMD_TIMEOUT;
	ch->eom_timeout = c->eom_timeout ? c->eom_timeout : DEF_EOM_TIMEOUT;
	ch->on_error = c->on_error;
	ch->hostname = xstrdup(c->hostname ? c->hostname : "localhost");
	ch->daemon_name = xstrdup(c->daemon_name ? c->daemon_name : "tern");
	ch->max_body = c->max_body ? c->max_body : DEF_MAX_BODY;
	return ch;
}

/* milter_chain_free - release the configuration */
void milter_chain_free(struct milter_chain *ch)
{
	if (ch == NULL)
		return;
	for (size_t i = 0; i < ch->n; i++)
		free(ch->addrs[i].text);
	free(ch->addrs);
	free(ch->hostname);
	free(ch->daemon_name);
	free(ch);
}

/* milter_chain_size - number of milters */
size_t milter_chain_size(const struct milter_chain *ch)
{
	return ch ? ch->n : 0;
}

/* ---- small helpers ---- */

/* dup_or_null - copy a caller's string, cut to max octets */
static char *dup_or_null(const char *s, size_t max)
{
	return s ? xstrndup(s, strnlen(s, max)) : NULL;
}

/* set_str - replace an owned copy */
static void set_str(char **dst, const char *s, size_t max)
{
	free(*dst);
	*dst = dup_or_null(s, max);
}

/* free_argv - a NULL-terminated owned array */
static void free_argv(char **v)
{
	for (size_t i = 0; v != NULL && v[i] != NULL; i++)
		free(v[i]);
	free(v);
}

/* copy_argv - the ESMTP arguments, at most 32 of 1024 octets */
static char **copy_argv(const char *const *v)
{
	size_t n = 0;
	while (v != NULL && v[n] != NULL && n < 32)
		n++;
	char **c = xcalloc(n + 1, sizeof(*c));
	for (size_t i = 0; i < n; i++)
		c[i] = xstrndup(v[i], strnlen(v[i], 1024));
	return c;
}

/* verdict - fill a verdict with why = "milter" */
static void verdict(struct smtp_verdict *v, enum smtp_verdict_kind k, const char *reply)
{
	smtp_verdict_set(v, k, reply, "milter");
}

/* reply_verdict - what a final reply means for the SMTP client */
static void reply_verdict(const struct milter_reply *r, struct smtp_verdict *v)
{
	switch (r->kind) {
	case MILTER_REPLY_REJECT: verdict(v, SMTP_VERDICT_REJECT, NULL); return;
	case MILTER_REPLY_TEMPFAIL: verdict(v, SMTP_VERDICT_TEMPFAIL, NULL); return;
	case MILTER_REPLY_DISCARD: verdict(v, SMTP_VERDICT_DISCARD, NULL); return;
	case MILTER_REPLY_SHUTDOWN: verdict(v, SMTP_VERDICT_SHUTDOWN, NULL); return;
	case MILTER_REPLY_REPLYCODE:
		if (r->code == 421)
			verdict(v, SMTP_VERDICT_SHUTDOWN, r->text);
		else
			verdict(v, r->code >= 500 ? SMTP_VERDICT_REJECT : SMTP_VERDICT_TEMPFAIL, r->text);
		return;
	default: verdict(v, SMTP_VERDICT_CONTINUE, NULL); return;
	}
}


/* ---- macros ---- */

/* macro_value - the current value of a macro we know, or NULL */
static const char *macro_value(struct milter_sess *s, const char *name, char *tmp, size_t tmplen)
{
	const char *n = name;
	size_t nl = strlen(name);
	if (nl >= 2 && n[0] == '{' && n[nl - 1] == '}') {
		n++;
		nl -= 2;
	}
#define IS(x) (nl == sizeof(x) - 1 && memcmp(n, x, nl) == 0)
	if (IS("j"))
		return s->ch->hostname;
	if (IS("v"))
		return "Tern";
	if (IS("_")) {
		snprintf(tmp, tmplen, "%s [%s]", s->client_name ? s->client_name : "unknown",
			 s->client_addr ? s->client_addr : "unknown");
		return tmp;
	}
	if (IS("i"))
		return s->qid;
	if (IS("daemon_name"))
		return s->ch->daemon_name;
	if (IS("if_addr") || IS("daemon_addr"))
		return s->if_addr;
	if (IS("client_addr"))
		return s->client_addr;
	if (IS("client_port"))
		return s->client_port[0] ? s->client_port : NULL;
	if (IS("client_name"))
		return s->client_name ? s->client_name : "unknown";
	if (IS("client_ptr"))
		return s->client_name ? s->client_name : "unknown";
	if (IS("tls_version"))
		return s->tls ? (s->tls_version ? s->tls_version : "TLS") : NULL;
	if (IS("cipher"))
		return s->tls ? s->tls_cipher : NULL;
	if (IS("auth_type"))
		return s->auth_user ? s->auth_type : NULL;
	if (IS("auth_authen"))
		return s->auth_user;
	if (IS("mail_addr"))
		return s->mail_addr;
	if (IS("rcpt_addr"))
		return s->rcpt_addr;
#undef IS
	return NULL;
}

/* the names sent by default at each stage (as Postfix's defaults) */
static const char *const def_connect[] = {"j", "{daemon_name}", "{daemon_addr}", "{if_addr}", "v",
					  "_", "{client_addr}", "{client_port}", "{client_name}",
					  "{client_ptr}", NULL};
static const char *const def_helo[] = {"{tls_version}", "{cipher}", NULL};
static const char *const def_mail[] = {"i", "{auth_type}", "{auth_authen}", "{mail_addr}", NULL};
static const char *const def_rcpt[] = {"i", "{rcpt_addr}", NULL};
static const char *const def_data[] = {"i", NULL};
static const char *const def_eoh[] = {"i", NULL};
static const char *const def_eom[] = {"i", NULL};

/* queue_macros - SMFIC_MACRO for command cmd with the milter's list for
 * stage (or our default), values as known now */
static int queue_macros(struct milter_conn *m, int cmd, int stage, struct strbuf *sb)
{
	static const char *const *defs[MILTER_MACRO_STAGES] = {
		[SMFIM_CONNECT] = def_connect, [SMFIM_HELO] = def_helo, [SMFIM_ENVFROM] = def_mail,
		[SMFIM_ENVRCPT] = def_rcpt,    [SMFIM_DATA] = def_data, [SMFIM_EOM] = def_eom,
		[SMFIM_EOH] = def_eoh,
	};
	struct milter_sess *s = m->s;
	const char *kv[64];
	char tmp[16][300];
	char names[16][64];
	size_t np = 0;
	const char *list = m->neg.macros[stage];
	if (list != NULL) {
		/* the milter's own list: every name in it that we know */
		for (const char *p = list; *p && np < 16;) {
			p += strspn(p, " ,\t");
			size_t len = strcspn(p, " ,\t");
			if (len == 0)
				break;
			if (len < sizeof(names[0])) {
				memcpy(names[np], p, len);
				names[np][len] = 0;
				const char *val = macro_value(s, names[np], tmp[np], sizeof(tmp[np]));
				if (val != NULL) {
					kv[2 * np] = names[np];
					kv[2 * np + 1] = val;
					np++;
				}
			}
			p += len;
		}
	} else {
		for (const char *const *d = defs[stage]; *d != NULL && np < 16; d++) {
			const char *val = macro_value(s, *d, tmp[np], sizeof(tmp[np]));
			if (val != NULL) {
				kv[2 * np] = *d;
				kv[2 * np + 1] = val;
				np++;
			}
		}
	}
	if (np == 0)
		return 0;
	milter_codec_enc_macros(sb, cmd, kv, np);
	return milter_conn_queue(m, sb, SMFIC_MACRO, 0);
}

/* ---- stages ---- */

static void sess_finish(struct milter_sess *s, const struct smtp_verdict *v);

/* stage_event - per stage: command, macro stage, "don't send" and "no reply" flags */
static void stage_event(enum sstage st, int *cmd, int *mstage, uint32_t *no, uint32_t *nr)
{
	switch (st) {
	case S_CONNECT: *cmd = SMFIC_CONNECT; *mstage = SMFIM_CONNECT; *no = SMFIP_NOCONNECT; *nr = SMFIP_NR_CONN; return;
	case S_HELO: *cmd = SMFIC_HELO; *mstage = SMFIM_HELO; *no = SMFIP_NOHELO; *nr = SMFIP_NR_HELO; return;
	case S_MAIL: *cmd = SMFIC_MAIL; *mstage = SMFIM_ENVFROM; *no = SMFIP_NOMAIL; *nr = SMFIP_NR_MAIL; return;
	case S_RCPT: *cmd = SMFIC_RCPT; *mstage = SMFIM_ENVRCPT; *no = SMFIP_NORCPT; *nr = SMFIP_NR_RCPT; return;
	default: *cmd = SMFIC_DATA; *mstage = SMFIM_DATA; *no = SMFIP_NODATA; *nr = SMFIP_NR_DATA; return;
	}
}

/* send_stage - macros and the stage's command to milter m; returns 1 when
 * a reply is awaited, 0 when the milter was told without reply (or not at
 * all), -1 when m failed */
static int send_stage(struct milter_sess *s, struct milter_conn *m)
{
	int cmd, mstage;
	uint32_t no, nr;
	struct strbuf sb;
	stage_event(s->stage, &cmd, &mstage, &no, &nr);
	if (s->stage == S_DATA && m->neg.version < 4)
		return 0; /* no DATA event before protocol version 4 */
	strbuf_init(&sb);
	if (queue_macros(m, cmd, mstage, &sb) < 0)
		goto failed;
	if (s->stage == S_MAIL)
		m->in_txn = 1;
	if (m->neg.proto & no) {
		strbuf_free(&sb);
		milter_conn_pump(m);
		return m->fd < 0 ? -1 : 0;
	}
	switch (s->stage) {
	case S_CONNECT: {
		const char *addr = s->client_addr;
		char host[300];
		int fam = addr == NULL ? 'U' : strchr(addr, ':') ? '6' : '4';
		if (s->client_name)
			snprintf(host, sizeof(host), "%s", s->client_name);
		else
			snprintf(host, sizeof(host), "[%s]", addr ? addr : "unknown");
		milter_codec_enc_connect(&sb, host, fam, (unsigned)atoi(s->client_port), addr ? addr : "");
		break;
	}
	case S_HELO: milter_codec_enc_helo(&sb, s->arg_str ? s->arg_str : ""); break;
	case S_MAIL:
	case S_RCPT:
		milter_codec_enc_envelope(&sb, cmd, s->arg_str ? s->arg_str : "",
					  (const char *const *)s->arg_v);
		break;
	default: milter_codec_enc_cmd(&sb, SMFIC_DATA); break;
	}
	int reply = (m->neg.proto & nr) == 0;
	if (milter_conn_queue(m, &sb, cmd, reply) < 0)
		goto failed;
	strbuf_free(&sb);
	milter_conn_pump(m);
	if (m->fd < 0)
		return -1;
	return reply;
failed:
	strbuf_free(&sb);
	return -1;
}

/* takes_stage - may m be told about this envelope stage */
static int takes_stage(const struct milter_sess *s, const struct milter_conn *m)
{
	if (s->stage == S_RCPT || s->stage == S_DATA)
		return m->in_txn && !m->txn_done;
	if (s->stage == S_MAIL)
		return !m->txn_done;
	return 1;
}

/* stage_step - run the envelope stage through the chain from s->cur */
static void stage_step(struct milter_sess *s)
{
	while (s->pending && !s->finished && s->cur < s->n) {
		struct milter_conn *m = &s->m[s->cur];
		if (m->st == M_FAILED) {
			if (s->ch->on_error == MILTER_DEFAULT_TEMPFAIL) {
				struct smtp_verdict v;
				verdict(&v, SMTP_VERDICT_TEMPFAIL, NULL);
				sess_finish(s, &v);
				return;
			}
		} else if (m->conn_refused) {
			sess_finish(s, &m->conn_verdict);
			return;
		} else if (m->st == M_DONE || !takes_stage(s, m)) {
			/* out of this connection or transaction */
		} else if (m->st != M_READY || m->awaiting) {
			return; /* still connecting, or a reply to older work is due */
		} else if (!s->cur_sent) {
			s->cur_sent = 1;
			int rc = send_stage(s, m);
			if (rc != 0)
				continue; /* awaiting a reply, or m failed: look again */
		} else {
			/* its reply came (milter_sess_final) */
		}
		s->cur++;
		s->cur_sent = 0;
	}
	if (s->pending && !s->finished && s->cur >= s->n) {
		struct smtp_verdict v;
		verdict(&v, SMTP_VERDICT_CONTINUE, NULL);
		sess_finish(s, &v);
	}
}

static void eom_check(struct milter_sess *s);

/* log_reply - a milter said something other than continue */
static void log_reply(struct milter_conn *m, int cmd, const struct milter_reply *r)
{
	struct log_line l;
	milter_conn_log(&l, LOG_LEVEL_INFO, "milter", m);
	log_kv(&l, "command", milter_codec_cmd_str(cmd));
	log_kv(&l, "reply", milter_reply_kind_str(r->kind));
	if (r->text)
		log_kvn(&l, "text", r->text, strcspn(r->text, "\r"));
	log_end(&l);
}

/* milter_sess_final - a final reply to command cmd of generation gen */
void milter_sess_final(struct milter_conn *m, int cmd, unsigned gen, const struct milter_reply *r)
{
	struct milter_sess *s = m->s;
	struct smtp_verdict v;
	reply_verdict(r, &v);
	if (r->kind != MILTER_REPLY_CONTINUE)
		log_reply(m, cmd, r);
	switch (cmd) {
	case SMFIC_CONNECT:
	case SMFIC_HELO:
		if (r->kind == MILTER_REPLY_ACCEPT) {
			milter_conn_quit(m, M_DONE); /* no more events for this connection */
		} else if (v.kind != SMTP_VERDICT_CONTINUE && v.kind != SMTP_VERDICT_DISCARD) {
			/* a refusal holds for the whole connection */
			m->conn_refused = 1;
			m->conn_verdict = v;
			milter_conn_quit(m, M_DONE);
		}
		break; /* DISCARD is meaningless here (as in Postfix): continue */
	case SMFIC_MAIL:
	case SMFIC_RCPT:
	case SMFIC_DATA:
		if (gen != s->gen)
			break;
		if (r->kind == MILTER_REPLY_ACCEPT) {
			m->txn_done = 1;
		} else if (r->kind == MILTER_REPLY_DISCARD) {
			m->txn_done = 1;
			m->txn_discard = 1;
		} else if (v.kind != SMTP_VERDICT_CONTINUE) {
			if (cmd != SMFIC_RCPT) { /* the milter left the transaction */
				m->in_txn = 0;
				m->txn_done = 1;
			}
			if (s->pending && !s->finished && s->stage != S_EOM &&
			    &s->m[s->cur] == m)
				sess_finish(s, &v);
			return;
		}
		break;
	case SMFIC_HEADER:
	case SMFIC_EOH:
	case SMFIC_BODY:
		if (gen != s->gen)
			break;
		if (r->kind == MILTER_REPLY_SKIP) {
			if (cmd == SMFIC_BODY)
				m->skip_body = 1;
			else
				m->skip_hdrs = 1;
			milter_conn_drop_queued(m, cmd);
		} else if (r->kind != MILTER_REPLY_CONTINUE) {
			if (r->kind != MILTER_REPLY_ACCEPT) {
				m->has_txn_verdict = 1;
				m->txn_verdict = v;
			}
			m->txn_done = 1;
			m->in_txn = 0;
			milter_conn_drop_queued(m, 0);
			if (m->eom_sent) { /* its end of message was dropped with the rest */
				m->eom_done = 1;
				verdict(&m->eom_verdict, SMTP_VERDICT_CONTINUE, NULL);
			}
		}
		break;
	case SMFIC_BODYEOB:
		if (gen != s->gen)
			break;
		m->eom_done = 1;
		m->in_txn = 0;
		m->eom_verdict = v;
		if (r->kind == MILTER_REPLY_ACCEPT)
			verdict(&m->eom_verdict, SMTP_VERDICT_CONTINUE, NULL);
		break;
	default:
		break;
	}
	milter_sess_kick(s);
}

/* ---- the session ---- */

/* on_done - run the stage's callback (deferred: never inside a public call) */
static void on_done(evutil_socket_t fd, short what, void *arg)
{
	struct milter_sess *s = arg;
	(void)fd;
	(void)what;
	if (!s->pending || !s->finished)
		return;
	struct smtp_verdict v = s->result;
	milter_cb cb = s->cb;
	milter_eom_cb ecb = s->eom_cb;
	void *cbarg = s->cb_arg;
	s->pending = s->finished = 0;
	s->stage = S_NONE;
	if (s->abort_pending) {
		s->abort_pending = 0;
		milter_sess_abort(s); /* s->mods stays until the next end of message */
	}
	if (ecb)
		ecb(cbarg, &v, &s->mods);
	else if (cb)
		cb(cbarg, &v);
	/* s may be gone now */
}

/* sess_finish - the stage's verdict is known: schedule the callback */
static void sess_finish(struct milter_sess *s, const struct smtp_verdict *v)
{
	if (!s->pending || s->finished)
		return;
	s->result = *v;
	s->finished = 1;
	if (v->kind != SMTP_VERDICT_CONTINUE) {
		struct log_line l;
		log_begin(&l, LOG_LEVEL_INFO, "milter_verdict");
		if (s->session_id)
			log_kv(&l, "session", s->session_id);
		if (s->qid)
			log_kv(&l, "qid", s->qid);
		log_kv(&l, "stage", stage_name(s->stage));
		log_kv(&l, "verdict", smtp_verdict_kind_str(v->kind));
		if (v->reply[0])
			log_kvn(&l, "reply", v->reply, strcspn(v->reply, "\r"));
		log_end(&l);
	}
	event_active(s->ev_done, EV_TIMEOUT, 1);
}

/* milter_sess_kick - something changed (a milter is ready, failed or replied) */
void milter_sess_kick(struct milter_sess *s)
{
	if (!s->pending || s->finished || s->quiet)
		return;
	if (s->stage == S_EOM)
		eom_check(s);
	else
		stage_step(s);
}

/* stage_begin - a new envelope stage */
static int stage_begin(struct milter_sess *s, enum sstage st, milter_cb cb, void *arg)
{
	if (s->pending) { /* a caller bug: one stage at a time */
		log_event(LOG_LEVEL_ERR, "milter_misuse", "stage %s while %s is pending",
			  stage_name(st), stage_name(s->stage));
		return -1;
	}
	s->stage = st;
	s->pending = 1;
	s->finished = 0;
	s->cur = 0;
	s->cur_sent = 0;
	s->cb = cb;
	s->eom_cb = NULL;
	s->cb_arg = arg;
	return 0;
}

/* milter_sess_new - connect to every milter of the chain */
struct milter_sess *milter_sess_new(struct milter_chain *ch, const struct milter_conninfo *ci)
{
	struct milter_sess *s = xcalloc(1, sizeof(*s));
	s->ch = ch;
	s->n = ch->n;
	s->m = xcalloc(s->n ? s->n : 1, sizeof(*s->m));
	s->client_addr = dup_or_null(ci->client_addr, 64);
	s->client_name = dup_or_null(ci->client_name, 255);
	s->session_id = dup_or_null(ci->session_id, 64);
	s->if_addr = dup_or_null(ci->if_addr, 64);
	s->tls_version = dup_or_null(ci->tls_version, 32);
	s->tls_cipher = dup_or_null(ci->tls_cipher, 128);
	s->tls = ci->tls;
	if (ci->client_port)
		snprintf(s->client_port, sizeof(s->client_port), "%u", (unsigned)ci->client_port);
	s->ev_done = event_new(ch->base, -1, 0, on_done, s);
	if (s->ev_done == NULL) {
		fprintf(stderr, "milter: out of memory\n");
		abort();
	}
	for (size_t i = 0; i < s->n; i++) {
		struct milter_conn *m = &s->m[i];
		m->s = s;
		m->addr = &ch->addrs[i];
		m->fd = -1;
		strbuf_init(&m->body);
	}
	s->stage = S_CONNECT; /* for the log of a milter that is down */
	for (size_t i = 0; i < s->n; i++)
		milter_conn_start(&s->m[i]);
	s->stage = S_NONE;
	return s;
}

/* milter_sess_free - QUIT and close each milter */
void milter_sess_free(struct milter_sess *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < s->n; i++) {
		struct milter_conn *m = &s->m[i];
		if (m->st == M_READY && m->in_txn) {
			/* best effort, as m_quit: ABORT then QUIT in one write */
			struct strbuf sb;
			strbuf_init(&sb);
			milter_codec_enc_cmd(&sb, SMFIC_ABORT);
			milter_codec_enc_cmd(&sb, SMFIC_QUIT);
			if (m->woff == m->wlen)
				(void)send(m->fd, sb.s, sb.len, MSG_NOSIGNAL | MSG_DONTWAIT);
			strbuf_free(&sb);
			milter_conn_close(m);
		} else {
			milter_conn_quit(m, M_DONE);
		}
		milter_codec_neg_clear(&m->neg);
		milter_conn_mods_clear(m);
	}
	free(s->m);
	if (s->ev_done)
		event_free(s->ev_done);
	if (s->frame_ok)
		milter_frame_free(&s->frame);
	for (size_t i = 0; i < s->mods.n; i++) {
		free(s->mods.v[i].name);
		free(s->mods.v[i].value);
		free(s->mods.v[i].args);
	}
	free(s->mods.v);
	strbuf_free(&s->mods.body);
	free(s->client_addr);
	free(s->client_name);
	free(s->session_id);
	free(s->if_addr);
	free(s->tls_version);
	free(s->tls_cipher);
	free(s->qid);
	free(s->auth_user);
	free(s->auth_type);
	free(s->mail_addr);
	free(s->rcpt_addr);
	free(s->arg_str);
	free_argv(s->arg_v);
	free(s);
}

/* milter_sess_connect - SMFIC_CONNECT */
void milter_sess_connect(struct milter_sess *s, milter_cb cb, void *arg)
{
	if (stage_begin(s, S_CONNECT, cb, arg) == 0)
		stage_step(s);
}

/* milter_sess_helo - SMFIC_HELO */
void milter_sess_helo(struct milter_sess *s, const char *helo, milter_cb cb, void *arg)
{
	if (stage_begin(s, S_HELO, cb, arg) < 0)
		return;
	set_str(&s->arg_str, helo ? helo : "", 255);
	stage_step(s);
}

/* take_macros - the transaction's macros */
static void take_macros(struct milter_sess *s, const struct milter_macros *mac)
{
	if (mac == NULL)
		return;
	if (mac->qid)
		set_str(&s->qid, mac->qid, 64);
	if (mac->auth_user)
		set_str(&s->auth_user, mac->auth_user, 255);
	if (mac->auth_type)
		set_str(&s->auth_type, mac->auth_type, 32);
	if (mac->mail_addr)
		set_str(&s->mail_addr, mac->mail_addr, 1000);
	if (mac->rcpt_addr)
		set_str(&s->rcpt_addr, mac->rcpt_addr, 1000);
}

/* txn_reset - forget a transaction's state on every milter */
static void txn_reset(struct milter_sess *s)
{
	s->gen++;
	for (size_t i = 0; i < s->n; i++) {
		struct milter_conn *m = &s->m[i];
		m->in_txn = m->txn_done = m->txn_discard = m->has_txn_verdict = 0;
		m->skip_body = m->skip_hdrs = m->eom_sent = m->eom_done = 0;
		/* no verdict of this message may speak for the next one */
		verdict(&m->txn_verdict, SMTP_VERDICT_CONTINUE, NULL);
		verdict(&m->eom_verdict, SMTP_VERDICT_CONTINUE, NULL);
		milter_conn_mods_clear(m);
	}
	if (s->frame_ok)
		milter_frame_free(&s->frame);
	s->frame_ok = 0;
	s->content_open = 0;
}

/* milter_sess_mail - SMFIC_MAIL: a new transaction */
void milter_sess_mail(struct milter_sess *s, const char *from, const char *const *esmtp_args,
		      const struct milter_macros *mac, milter_cb cb, void *arg)
{
	int was_in_txn = 0;
	for (size_t i = 0; i < s->n; i++)
		was_in_txn |= s->m[i].in_txn;
	if (!s->pending && was_in_txn) /* the caller did not end the last one: do it now */
		milter_sess_abort(s);
	if (stage_begin(s, S_MAIL, cb, arg) < 0)
		return;
	txn_reset(s);
	free(s->qid);
	free(s->rcpt_addr);
	s->qid = s->rcpt_addr = NULL;
	set_str(&s->mail_addr, from ? from : "", 1000);
	take_macros(s, mac);
	set_str(&s->arg_str, from ? from : "", 1000);
	free_argv(s->arg_v);
	s->arg_v = copy_argv(esmtp_args);
	stage_step(s);
}

/* milter_sess_rcpt - SMFIC_RCPT */
void milter_sess_rcpt(struct milter_sess *s, const char *rcpt, const char *const *esmtp_args,
		      const struct milter_macros *mac, milter_cb cb, void *arg)
{
	if (stage_begin(s, S_RCPT, cb, arg) < 0)
		return;
	set_str(&s->rcpt_addr, rcpt ? rcpt : "", 1000);
	take_macros(s, mac);
	set_str(&s->arg_str, rcpt ? rcpt : "", 1000);
	free_argv(s->arg_v);
	s->arg_v = copy_argv(esmtp_args);
	stage_step(s);
}

static const struct milter_frame_ops frame_ops;

/* milter_sess_data - SMFIC_DATA; content may follow once it continued */
void milter_sess_data(struct milter_sess *s, milter_cb cb, void *arg)
{
	if (stage_begin(s, S_DATA, cb, arg) < 0)
		return;
	if (!s->frame_ok)
		s->frame_ok = milter_frame_init(&s->frame, &frame_ops, s) == 0;
	s->content_open = s->frame_ok;
	stage_step(s);
}

/* milter_sess_set_tls - the session went under TLS (STARTTLS) */
void milter_sess_set_tls(struct milter_sess *s, const char *version, const char *cipher)
{
	s->tls = 1;
	set_str(&s->tls_version, version, 32);
	set_str(&s->tls_cipher, cipher, 128);
}

/* milter_sess_set_qid - {i} */
void milter_sess_set_qid(struct milter_sess *s, const char *qid)
{
	set_str(&s->qid, qid, 64);
}

/* takes_content - m gets the message */
static int takes_content(const struct milter_conn *m)
{
	return m->st == M_READY && m->in_txn && !m->txn_done;
}

/* content_to - queue one content event for every milter that takes it */
static void content_to(struct milter_sess *s, int cmd, const char *a, size_t an, const char *b,
		       size_t bn)
{
	struct strbuf sb;
	strbuf_init(&sb);
	for (size_t i = 0; i < s->n; i++) {
		struct milter_conn *m = &s->m[i];
		if (!takes_content(m))
			continue;
		uint32_t no = 0, nr = 0;
		if (cmd == SMFIC_HEADER) {
			if (m->skip_hdrs || (m->neg.proto & SMFIP_NOHDRS))
				continue;
			no = SMFIP_NOHDRS;
			nr = SMFIP_NR_HDR;
			/* without HDR_LEADSPC the milter expects the one space after the colon gone */
			if (!(m->neg.proto & SMFIP_HDR_LEADSPC) && bn > 0 && b[0] == ' ')
				milter_codec_enc_header(&sb, a, an, b + 1, bn - 1);
			else
				milter_codec_enc_header(&sb, a, an, b, bn);
		} else if (cmd == SMFIC_EOH) {
			no = SMFIP_NOEOH;
			nr = SMFIP_NR_EOH;
			if (queue_macros(m, SMFIC_EOH, SMFIM_EOH, &sb) < 0)
				continue;
			if (!(m->neg.proto & no))
				milter_codec_enc_cmd(&sb, SMFIC_EOH);
		} else {
			if (m->skip_body || (m->neg.proto & SMFIP_NOBODY))
				continue;
			no = SMFIP_NOBODY;
			nr = SMFIP_NR_BODY;
			milter_codec_enc_body(&sb, a, an);
		}
		if (m->neg.proto & no) {
			strbuf_reset(&sb);
			continue;
		}
		if (milter_conn_queue(m, &sb, cmd, (m->neg.proto & nr) == 0) == 0)
			milter_conn_pump(m);
	}
	strbuf_free(&sb);
}

/* frame_header - a header field from the framer */
static void frame_header(void *arg, const char *name, size_t nlen, const char *value, size_t vlen)
{
	content_to(arg, SMFIC_HEADER, name, nlen, value, vlen);
}

/* frame_eoh - end of the header section */
static void frame_eoh(void *arg)
{
	content_to(arg, SMFIC_EOH, NULL, 0, NULL, 0);
}

/* frame_body - a body chunk */
static void frame_body(void *arg, const char *p, size_t n)
{
	content_to(arg, SMFIC_BODY, p, n, NULL, 0);
}

static const struct milter_frame_ops frame_ops = {frame_header, frame_eoh, frame_body};

/* milter_sess_content - message bytes as stored */
void milter_sess_content(struct milter_sess *s, const char *p, size_t n)
{
	if (!s->content_open || s->pending)
		return;
	milter_frame_feed(&s->frame, p, n);
}

/* combine - the end-of-message verdict of the chain, and its modifications */
static void combine(struct milter_sess *s, struct smtp_verdict *v)
{
	verdict(v, SMTP_VERDICT_CONTINUE, NULL);
	for (size_t i = 0; i < s->n; i++) {
		struct milter_conn *m = &s->m[i];
		if (m->st == M_FAILED) {
			if (s->ch->on_error == MILTER_DEFAULT_TEMPFAIL) {
				verdict(v, SMTP_VERDICT_TEMPFAIL, NULL);
				return;
			}
			continue;
		}
		if (m->conn_refused) {
			*v = m->conn_verdict;
			return;
		}
		if (m->has_txn_verdict) {
			*v = m->txn_verdict;
			return;
		}
		if (m->txn_discard) {
			verdict(v, SMTP_VERDICT_DISCARD, NULL);
			return;
		}
		if (!m->eom_done || !m->eom_sent)
			continue;
		if (m->eom_verdict.kind != SMTP_VERDICT_CONTINUE) {
			*v = m->eom_verdict;
			return;
		}
		milter_conn_body_end(m);
		if (m->body_over) {
			struct log_line l;
			milter_conn_log(&l, LOG_LEVEL_WARN, "milter_error", m);
			log_kv(&l, "reason", "replaced body over the size limit");
			log_end(&l);
			verdict(v, SMTP_VERDICT_TEMPFAIL, NULL);
			return;
		}
	}
	/* every milter continued: its modifications, in chain order */
	for (size_t i = 0; i < s->n; i++) {
		struct milter_conn *m = &s->m[i];
		if (m->st == M_FAILED || !m->eom_done || !m->eom_sent)
			continue;
		for (size_t k = 0; k < m->nmods; k++) {
			if (s->mods.n % 16 == 0)
				s->mods.v = xrealloc(s->mods.v, (s->mods.n + 16) * sizeof(*s->mods.v));
			s->mods.v[s->mods.n++] = m->mods[k];
		}
		free(m->mods);
		m->mods = NULL;
		m->nmods = m->capmods = 0;
		if (m->body_replaced) { /* the last milter in the chain to replace it wins */
			strbuf_free(&s->mods.body);
			s->mods.body = m->body;
			s->mods.body_replaced = 1;
			strbuf_init(&m->body);
			m->body_replaced = 0;
		}
	}
	if (s->mods.n > 0 || s->mods.body_replaced) {
		struct log_line l;
		log_begin(&l, LOG_LEVEL_INFO, "milter_mods");
		if (s->session_id)
			log_kv(&l, "session", s->session_id);
		if (s->qid)
			log_kv(&l, "qid", s->qid);
		log_kvi(&l, "mods", (long long)s->mods.n);
		log_kvi(&l, "body_replaced", s->mods.body_replaced);
		log_end(&l);
	}
}

/* eom_check - every milter told of the end of message has answered? */
static void eom_check(struct milter_sess *s)
{
	for (size_t i = 0; i < s->n; i++) {
		struct milter_conn *m = &s->m[i];
		if (m->st == M_READY && m->eom_sent && !m->eom_done)
			return;
	}
	struct smtp_verdict v;
	combine(s, &v);
	sess_finish(s, &v);
}

/* mods_reset - forget the last end of message's result */
static void mods_reset(struct milter_sess *s)
{
	for (size_t i = 0; i < s->mods.n; i++) {
		free(s->mods.v[i].name);
		free(s->mods.v[i].value);
		free(s->mods.v[i].args);
	}
	free(s->mods.v);
	s->mods.v = NULL;
	s->mods.n = 0;
	strbuf_free(&s->mods.body);
	s->mods.body_replaced = 0;
}

/* milter_sess_eom - SMFIC_BODYEOB to every milter in the transaction */
void milter_sess_eom(struct milter_sess *s, milter_eom_cb cb, void *arg)
{
	if (s->pending) {
		log_event(LOG_LEVEL_ERR, "milter_misuse", "eom while %s is pending", stage_name(s->stage));
		return;
	}
	mods_reset(s);
	s->stage = S_EOM;
	s->pending = 1;
	s->finished = 0;
	s->cb = NULL;
	s->eom_cb = cb;
	s->cb_arg = arg;
	/* quiet from here: a milter failing on the last body chunk must not
	 * end the stage before the others are asked */
	s->quiet = 1;
	if (s->content_open)
		milter_frame_finish(&s->frame);
	s->content_open = 0;
	struct strbuf sb;
	strbuf_init(&sb);
	for (size_t i = 0; i < s->n; i++) {
		struct milter_conn *m = &s->m[i];
		if (!takes_content(m))
			continue;
		if (queue_macros(m, SMFIC_BODYEOB, SMFIM_EOM, &sb) < 0)
			continue;
		milter_codec_enc_cmd(&sb, SMFIC_BODYEOB);
		m->eom_sent = 1;
		if (milter_conn_queue(m, &sb, SMFIC_BODYEOB, 1) == 0)
			milter_conn_pump(m);
	}
	s->quiet = 0;
	strbuf_free(&sb);
	eom_check(s);
}

/* milter_sess_abort - SMFIC_ABORT to the milters in a transaction */
void milter_sess_abort(struct milter_sess *s)
{
	if (s->pending) {
		s->abort_pending = 1;
		return;
	}
	struct strbuf sb;
	strbuf_init(&sb);
	for (size_t i = 0; i < s->n; i++) {
		struct milter_conn *m = &s->m[i];
		if (m->st != M_READY || !m->in_txn)
			continue;
		milter_conn_drop_queued(m, 0);
		milter_codec_enc_cmd(&sb, SMFIC_ABORT);
		if (milter_conn_queue(m, &sb, SMFIC_ABORT, 0) == 0)
			milter_conn_pump(m);
	}
	strbuf_free(&sb);
	txn_reset(s);
}

/* milter_sess_backlog - the most octets waiting for one milter */
size_t milter_sess_backlog(const struct milter_sess *s)
{
	size_t most = 0;
	for (size_t i = 0; i < s->n; i++) {
		const struct milter_conn *m = &s->m[i];
		size_t b = m->qbytes + (m->wlen - m->woff);
		if (b > most)
			most = b;
	}
	return most;
}
