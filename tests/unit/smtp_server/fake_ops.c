/*
 * fake_ops - in-memory transport, queue and recipient check for the
 * smtp_server unit tests and the chat transcript runner. See fake_ops.h.
 */
#include "smtp_server/fake_ops.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/str.h"

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
	};
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
	smtp_session_free(f->s);
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
