/*
 * fake_ops - in-memory transport, queue and recipient check for the
 * smtp_server unit tests and the chat transcript runner. See fake_ops.h.
 */
#include "fake_ops.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/str.h"
#include "lookup/lookup.h"

struct queue_file {
	struct fake *f;
	struct strbuf data;
	char qid[QUEUE_ID_MAX];
};

/* fake_of - the ops context is the struct fake */
static struct fake *fake_of(void *ctx)
{
	return ctx;
}

/* fake_write - collect reply bytes */
static void fake_write(void *ctx, const char *p, size_t n)
{
	struct fake *f = fake_of(ctx);
	f->nwrites++;
	strbuf_add(&f->out, p, n);
}

/* fake_close - count close requests */
static void fake_close(void *ctx)
{
	fake_of(ctx)->nclose++;
}

/* fake_starttls - count handshakes started */
static void fake_starttls(void *ctx)
{
	fake_of(ctx)->nstarttls++;
}

/* fake_is_local - example.test and localhost */
static int fake_is_local(const char *d)
{
	return str_casecmp_ascii(d, "example.test") == 0 || str_casecmp_ascii(d, "localhost") == 0;
}

/* fake_rcpt_check - alice, bob, postmaster at local domains */
static enum smtp_rcpt_verdict fake_rcpt_check(void *ctx, const struct smtp_path *rcpt, int may_relay,
					      struct envelope *env, const char *orcpt, unsigned notify)
{
	struct fake *f = fake_of(ctx);
	f->nrcpt_checks++;
	f->last_may_relay = may_relay;
	f->last_notify = notify;
	snprintf(f->last_orcpt, sizeof(f->last_orcpt), "%s", orcpt ? orcpt : "");
	if (rcpt->is_postmaster) {
		env_rcpt_add(env, "postmaster@example.test", orcpt, notify);
		return SMTP_RCPT_ACCEPT;
	}
	if (fake_is_local(rcpt->domain)) {
		if (strcmp(rcpt->local, "tempfail") == 0)
			return SMTP_RCPT_TEMPFAIL;
		if (strcmp(rcpt->local, "alice") && strcmp(rcpt->local, "bob") &&
		    str_casecmp_ascii(rcpt->local, "postmaster"))
			return SMTP_RCPT_UNKNOWN_USER;
		if (env_rcpt_find(env, rcpt->addr) < 0)
			env_rcpt_add(env, rcpt->addr, orcpt, notify);
		return SMTP_RCPT_ACCEPT;
	}
	if (!may_relay)
		return SMTP_RCPT_RELAY_DENIED;
	env_rcpt_add(env, rcpt->addr, orcpt, notify);
	return SMTP_RCPT_ACCEPT;
}

/* the fake accounts and their passwords */
static const struct {
	const char *account, *password;
} fake_accounts[] = {
	{"alice@example.test", "secret"},
	{"bob@example.test", "hunter2"},
};

/* fake_auth_decide - OK with the canonical account, FAIL, or LOCKED */
static int fake_auth_decide(struct fake *f, const char *user, const char *password, const char **account)
{
	*account = NULL;
	if (f->auth_lockout_after && f->auth_failures >= f->auth_lockout_after)
		return SMTP_AUTH_LOCKED;
	for (size_t i = 0; i < sizeof(fake_accounts) / sizeof(fake_accounts[0]); i++) {
		const char *a = fake_accounts[i].account;
		size_t local = (size_t)(strchr(a, '@') - a);
		int same = str_casecmp_ascii(user, a) == 0 ||
			   (strlen(user) == local && str_ncasecmp_ascii(user, a, local) == 0);
		if (same && strcmp(password, fake_accounts[i].password) == 0) {
			*account = a;
			return SMTP_AUTH_OK;
		}
	}
	f->auth_failures++;
	return SMTP_AUTH_FAIL;
}

/* fake_auth_check - record, decide, answer now or later */
static void fake_auth_check(void *ctx, const char *user, const char *password, struct smtp_session *s)
{
	struct fake *f = fake_of(ctx);
	f->nauth_checks++;
	snprintf(f->last_auth_user, sizeof(f->last_auth_user), "%s", user);
	snprintf(f->last_auth_pass, sizeof(f->last_auth_pass), "%s", password);
	const char *account = NULL;
	int ok = fake_auth_decide(f, user, password, &account);
	if (f->auth_deferred) {
		f->auth_pending = 1;
		f->auth_pending_ok = ok;
		snprintf(f->auth_pending_account, sizeof(f->auth_pending_account), "%s",
			 account ? account : "");
		return;
	}
	smtp_session_auth_done(s, ok, account);
}

/* fake_sender_check - the real ownership rule over the fake tables */
static int fake_sender_check(void *ctx, const char *account, const struct smtp_path *from)
{
	struct fake *f = fake_of(ctx);
	f->nsender_checks++;
	return lookup_sender_owned(f->tables, account, from->addr);
}

/* fake_rate_check - over the limit after rate_limit messages */
static int fake_rate_check(void *ctx, const char *account)
{
	struct fake *f = fake_of(ctx);
	f->nrate_checks++;
	snprintf(f->last_rate_account, sizeof(f->last_rate_account), "%s", account ? account : "-");
	return f->rate_limit && f->nrate_checks > f->rate_limit;
}

/* fake_input_pending - the transcript says whether bytes wait */
static int fake_input_pending(void *ctx)
{
	struct fake *f = ctx;
	return f->input_pending;
}

/* fake_stage_check - record what the check sees; answer now or later */
static void fake_stage_check(void *ctx, enum smtp_stage stage, struct smtp_session *s)
{
	struct fake *f = fake_of(ctx);
	unsigned st = (unsigned)stage < 5 ? (unsigned)stage : 0;
	f->nstage_checks[st]++;
	const char *h = smtp_session_helo(s);
	snprintf(f->check_helo, sizeof(f->check_helo), "%s", h ? h : "-");
	size_t first = 0, n = 0;
	const char *r = smtp_session_rcpt(s, &first, &n);
	snprintf(f->check_rcpt, sizeof(f->check_rcpt), "%s", r);
	f->check_rcpt_first = first;
	f->check_rcpt_n = n;
	f->check_args[0] = '\0';
	size_t off = 0;
	for (const char *const *a = smtp_session_esmtp_args(s); *a; a++)
		off += (size_t)snprintf(f->check_args + off, sizeof(f->check_args) - off, "%s%s",
					off ? " " : "", *a);
	const struct envelope *env = smtp_session_envelope(s);
	f->check_env_rcpts = env->nrcpts;
	snprintf(f->check_sender, sizeof(f->check_sender), "%s", env->sender ? env->sender : "(none)");
	if (f->stage_defer[st]) {
		f->stage_pending = 1;
		return;
	}
	smtp_session_stage_done(s, &f->stage_verdict[st]);
}

/* fake_txn_end - count */
static void fake_txn_end(void *ctx, struct smtp_session *s)
{
	(void)s;
	fake_of(ctx)->ntxn_end++;
}

/* fake_msg_open - a memory "file" with the next Q%04u id, or open_errno */
static struct queue_file *fake_msg_open(void *ctx, struct envelope *env)
{
	struct fake *f = fake_of(ctx);
	if (f->open_errno) {
		errno = f->open_errno;
		return NULL;
	}
	struct queue_file *q = calloc(1, sizeof(*q));
	if (q == NULL)
		return NULL;
	q->f = f;
	strbuf_init(&q->data);
	f->nopen++;
	snprintf(q->qid, sizeof(q->qid), "Q%04u", ++f->next_qid);
	memcpy(env->qid, q->qid, sizeof(env->qid));
	return q;
}

/* fake_msg_write - append, or fail with write_errno */
static int fake_msg_write(void *ctx, struct queue_file *q, const char *p, size_t n)
{
	struct fake *f = fake_of(ctx);
	if (f->write_errno) {
		errno = f->write_errno;
		return -1;
	}
	strbuf_add(&q->data, p, n);
	return 0;
}

/* fake_file_done - free the file; keep its content when it was committed */
static void fake_file_done(struct fake *f, struct queue_file *q, int keep)
{
	if (keep) {
		strbuf_reset(&f->last_content);
		strbuf_add(&f->last_content, q->data.s ? q->data.s : "", q->data.len);
		memcpy(f->last_qid, q->qid, sizeof(f->last_qid));
	}
	strbuf_free(&q->data);
	free(q);
}

/* fake_msg_commit - complete now (commit_status) or keep it pending */
static void fake_msg_commit(void *ctx, struct queue_file *q, struct smtp_session *s)
{
	struct fake *f = fake_of(ctx);
	f->ncommit++;
	if (f->eom_refuse && !f->commit_deferred) {
		f->ncommit_verdicts++;
		fake_file_done(f, q, 0);
		smtp_session_commit_verdict(s, &f->eom_verdict);
		return;
	}
	if (f->commit_deferred) {
		f->pending = q;
		return;
	}
	int ok = f->commit_status == 0;
	fake_file_done(f, q, ok);
	smtp_session_commit_done(s, ok ? 0 : -1, ok ? 0 : f->commit_errno,
				 ok ? NULL : "fake commit failure");
}

/* fake_msg_abort - count and discard */
static void fake_msg_abort(void *ctx, struct queue_file *q)
{
	struct fake *f = fake_of(ctx);
	f->nabort++;
	fake_file_done(f, q, 0);
}

/* fake_msg_accepted - keep a copy of the envelope handed on */
static void fake_msg_accepted(void *ctx, const struct envelope *env)
{
	struct fake *f = fake_of(ctx);
	f->naccepted++;
	env_free(&f->last_env);
	env_copy(&f->last_env, env);
}

/* fake_init - see fake_ops.h */
int fake_init(struct fake *f, const char *const *overrides, size_t n)
{
	memset(f, 0, sizeof(*f));
	log_init("test", LOG_LEVEL_CRIT);
	char *ov[32];
	size_t k = 0;
	ov[k++] = (char *)"hostname=mx.example.test";
	ov[k++] = (char *)"local_domains=example.test,localhost";
	for (size_t i = 0; i < n && k < 32; i++)
		ov[k++] = (char *)overrides[i];
	struct strbuf errs;
	strbuf_init(&errs);
	int r = conf_load(&f->conf, "/dev/null", ov, k, &errs);
	if (r < 0)
		fprintf(stderr, "conf_load: %s", errs.s ? errs.s : "");
	strbuf_free(&errs);
	strbuf_init(&f->out);
	strbuf_init(&f->last_content);
	env_init(&f->last_env);
	f->ops = (struct smtp_server_ops){
		.write = fake_write,
		.close = fake_close,
		.rcpt_check = fake_rcpt_check,
		.msg_open = fake_msg_open,
		.msg_write = fake_msg_write,
		.msg_commit = fake_msg_commit,
		.msg_abort = fake_msg_abort,
		.msg_accepted = fake_msg_accepted,
		.starttls = fake_starttls,
		.auth_check = fake_auth_check,
		.sender_check = fake_sender_check,
		.rate_check = fake_rate_check,
		.stage_check = fake_stage_check,
		.input_pending = fake_input_pending,
		.txn_end = fake_txn_end,
	};
	for (int i = 0; i < 5; i++)
		smtp_verdict_set(&f->stage_verdict[i], SMTP_VERDICT_CONTINUE, NULL, NULL);
	smtp_verdict_set(&f->eom_verdict, SMTP_VERDICT_CONTINUE, NULL, NULL);
	static const char users[] = "alice@example.test:{PLAIN}x\nbob@example.test:{PLAIN}x\n";
	static const char aliases[] = "sales@example.test: alice@example.test, bob@example.test\n"
				      "info@example.test: sales@example.test\n"
				      "fwd@example.test: carol@remote.example\n"
				      "loop1@example.test: loop2@example.test\n"
				      "loop2@example.test: loop1@example.test\n";
	struct strbuf lerrs;
	strbuf_init(&lerrs);
	f->tables = lookup_load_text(users, sizeof(users) - 1, aliases, sizeof(aliases) - 1, &lerrs);
	if (f->tables == NULL) {
		fprintf(stderr, "lookup_load_text: %s", lerrs.s ? lerrs.s : "");
		r = -1;
	}
	strbuf_free(&lerrs);
	f->info = (struct smtp_client_info){
		.addr = "192.0.2.1",
		.name = NULL,
		.kind = SMTP_LISTENER_MX,
		.trusted = 0,
		.tls = 0,
		.tls_available = 0,
		.session_id = "t1",
	};
	return r;
}

/* fake_fini - finish a pending commit, free the session and the world */
void fake_fini(struct fake *f)
{
	if (f->pending) {
		/* a test that left a commit in flight: finish it first */
		fake_commit_finish(f, -1, EIO);
	}
	if (f->auth_pending)
		fake_auth_finish(f, SMTP_AUTH_TEMPFAIL, NULL);
	if (f->stage_pending) {
		struct smtp_verdict v;
		smtp_verdict_set(&v, SMTP_VERDICT_TEMPFAIL, NULL, "test end");
		fake_stage_finish(f, &v);
	}
	smtp_session_free(f->s);
	lookup_free(f->tables);
	f->tables = NULL;
	f->s = NULL;
	strbuf_free(&f->out);
	strbuf_free(&f->last_content);
	env_free(&f->last_env);
	conf_free(&f->conf);
}

/* fake_start - see fake_ops.h */
void fake_start(struct fake *f, int client_spoke_first)
{
	f->s = smtp_session_new(&f->conf, &f->info, &f->ops, f);
	if (f->s)
		smtp_session_start(f->s, client_spoke_first);
}

/* fake_sendn - client bytes */
void fake_sendn(struct fake *f, const char *p, size_t n)
{
	smtp_session_input(f->s, p, n);
}

/* fake_send - a client string */
void fake_send(struct fake *f, const char *text)
{
	fake_sendn(f, text, strlen(text));
}

/* fake_take - see fake_ops.h */
const char *fake_take(struct fake *f)
{
	static struct strbuf taken;
	strbuf_reset(&taken);
	strbuf_add(&taken, f->out.s ? f->out.s : "", f->out.len);
	strbuf_reset(&f->out);
	return taken.s;
}

/* fake_commit_finish - see fake_ops.h */
void fake_commit_finish(struct fake *f, int status, int err_no)
{
	struct queue_file *q = f->pending;
	if (q == NULL)
		return;
	f->pending = NULL;
	fake_file_done(f, q, status == 0);
	smtp_session_commit_done(f->s, status, err_no, status == 0 ? NULL : "fake commit failure");
}

/* fake_auth_finish - see fake_ops.h */
void fake_auth_finish(struct fake *f, int ok, const char *account)
{
	if (!f->auth_pending)
		return;
	f->auth_pending = 0;
	if (ok < SMTP_AUTH_TEMPFAIL)
		ok = f->auth_pending_ok;
	if (account == NULL)
		account = f->auth_pending_account[0] ? f->auth_pending_account : NULL;
	smtp_session_auth_done(f->s, ok, account);
}

/* fake_stage_finish - see fake_ops.h */
void fake_stage_finish(struct fake *f, const struct smtp_verdict *v)
{
	if (!f->stage_pending)
		return;
	f->stage_pending = 0;
	smtp_session_stage_done(f->s, v);
}

/* fake_commit_verdict - see fake_ops.h */
void fake_commit_verdict(struct fake *f, const struct smtp_verdict *v)
{
	struct queue_file *q = f->pending;
	if (q == NULL)
		return;
	f->pending = NULL;
	f->ncommit_verdicts++;
	fake_file_done(f, q, 0);
	smtp_session_commit_verdict(f->s, v);
}

/* fake_verdict_parse - see fake_ops.h */
int fake_verdict_parse(const char *text, struct smtp_verdict *v)
{
	static const struct {
		const char *name;
		enum smtp_verdict_kind kind;
	} kinds[] = {
		{"continue", SMTP_VERDICT_CONTINUE}, {"reject", SMTP_VERDICT_REJECT},
		{"tempfail", SMTP_VERDICT_TEMPFAIL}, {"discard", SMTP_VERDICT_DISCARD},
		{"shutdown", SMTP_VERDICT_SHUTDOWN},
	};
	size_t n = strcspn(text, " ");
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		if (strlen(kinds[i].name) == n && strncmp(text, kinds[i].name, n) == 0) {
			const char *reply = text[n] == ' ' ? text + n + 1 : "";
			smtp_verdict_set(v, kinds[i].kind, reply, "test");
			return 0;
		}
	}
	return -1;
}
