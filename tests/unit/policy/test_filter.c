/*
 * test_filter - the filter (src/policy/filter.c) between a real session
 * and a real queue on an event loop, without milters: stages answered
 * within the call, the end of message through the queue's commit thread
 * with the owner resumed, DKIM signatures prepended for trusted clients,
 * nothing for untrusted ones without a resolver, txn_end, and a filter
 * freed while its commit is in flight (the commit's callback releases it).
 * The milter and mail-authentication paths run end to end in
 * tests/integration/test_filter.py.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "conf/conf.h"
#include "core/buf.h"
#include "core/log.h"
#include "policy/filter.h"
#include "queue/queue.h"

struct world {
	char dir[64];
	struct event_base *base;
	struct conf conf;
	struct queue *q;
	struct filter_env *fe;
	struct filter *f;
	struct smtp_session *s;
	struct strbuf out;
	int resumed;
	int closed;
	size_t txn_ends;
	char qid[QUEUE_ID_MAX];
	struct envelope accepted;
};

static void op_write(void *ctx, const char *p, size_t n)
{
	strbuf_add(&((struct world *)ctx)->out, p, n);
}

static void op_close(void *ctx)
{
	((struct world *)ctx)->closed = 1;
}

static enum smtp_rcpt_verdict op_rcpt(void *ctx, const struct smtp_path *rcpt, int may_relay,
				      struct envelope *env, const char *orcpt, unsigned notify)
{
	(void)ctx;
	(void)may_relay;
	env_rcpt_add(env, rcpt->addr, orcpt, notify);
	return SMTP_RCPT_ACCEPT;
}

static struct queue_file *op_open(void *ctx, struct envelope *env)
{
	struct world *w = ctx;
	char err[256];
	struct queue_file *qf = queue_file_create(w->q, env, err, sizeof(err));
	if (qf)
		snprintf(w->qid, sizeof(w->qid), "%s", env->qid);
	return qf;
}

static int op_write_msg(void *ctx, struct queue_file *qf, const char *p, size_t n)
{
	struct world *w = ctx;
	filter_write(w->f, p, n);
	return queue_file_write(qf, p, n);
}

static void op_commit(void *ctx, struct queue_file *qf, struct smtp_session *s)
{
	filter_commit(((struct world *)ctx)->f, qf, s);
}

static void op_abort(void *ctx, struct queue_file *qf)
{
	(void)ctx;
	queue_file_abort(qf);
}

static void op_accepted(void *ctx, const struct envelope *env)
{
	struct world *w = ctx;
	env_free(&w->accepted);
	env_copy(&w->accepted, env);
}

static void op_stage(void *ctx, enum smtp_stage st, struct smtp_session *s)
{
	filter_stage(((struct world *)ctx)->f, st, s);
}

static void op_txn_end(void *ctx, struct smtp_session *s)
{
	(void)s;
	struct world *w = ctx;
	w->txn_ends++;
	filter_txn_end(w->f);
}

static const struct smtp_server_ops ops = {
	.write = op_write,
	.close = op_close,
	.rcpt_check = op_rcpt,
	.msg_open = op_open,
	.msg_write = op_write_msg,
	.msg_commit = op_commit,
	.msg_abort = op_abort,
	.msg_accepted = op_accepted,
	.stage_check = op_stage,
	.txn_end = op_txn_end,
};

static void on_resume(void *arg)
{
	((struct world *)arg)->resumed++;
}

/* make_key - an Ed25519 signing key for example.test, selector tern */
static void make_key(const char *dir)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd),
		 "mkdir -p %s/keys/example.test && openssl genpkey -algorithm ED25519 "
		 "-out %s/keys/example.test/tern.ed25519.pem 2>/dev/null",
		 dir, dir);
	assert_int_equal(system(cmd), 0);
}

/* world_new - queue and filter in a temp dir; trusted client or not */
static struct world *world_new(int trusted)
{
	struct world *w = calloc(1, sizeof(*w));
	assert_non_null(w);
	log_init("test", LOG_LEVEL_CRIT);
	snprintf(w->dir, sizeof(w->dir), "/tmp/tern-filter-XXXXXX");
	assert_non_null(mkdtemp(w->dir));
	make_key(w->dir);
	char kd[128];
	snprintf(kd, sizeof(kd), "dkim_key_dir=%s/keys", w->dir);
	char *ov[] = {(char *)"hostname=mx.example.test", kd};
	struct strbuf errs;
	strbuf_init(&errs);
	assert_int_equal(conf_load(&w->conf, "/dev/null", ov, 2, &errs), 0);
	strbuf_free(&errs);
	w->base = event_base_new();
	char qd[128], err[256];
	snprintf(qd, sizeof(qd), "%s/queue", w->dir);
	w->q = queue_open(qd, w->base, err, sizeof(err));
	assert_non_null(w->q);
	struct filter_env_conf fc = {.base = w->base, .conf = &w->conf, .dns = NULL, .queue = w->q};
	w->fe = filter_env_new(&fc, err, sizeof(err));
	assert_non_null(w->fe);
	struct filter_client ci = {.addr = "192.0.2.7", .port = 4242, .session_id = "s1"};
	w->f = filter_new(w->fe, &ci, on_resume, w);
	assert_non_null(w->f);
	struct smtp_client_info info = {.addr = "192.0.2.7", .kind = SMTP_LISTENER_MX, .trusted = trusted,
					.session_id = "s1"};
	strbuf_init(&w->out);
	env_init(&w->accepted);
	w->s = smtp_session_new(&w->conf, &info, &ops, w);
	assert_non_null(w->s);
	return w;
}

static void world_free(struct world *w)
{
	if (w->f)
		filter_free(w->f);
	if (w->s)
		smtp_session_free(w->s);
	filter_env_unref(w->fe);
	queue_close(w->q);
	event_base_free(w->base);
	conf_free(&w->conf);
	strbuf_free(&w->out);
	env_free(&w->accepted);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", w->dir);
	assert_int_equal(system(cmd), 0);
	free(w);
}

/* take - the replies so far */
static char *take(struct world *w)
{
	char *r = strdup(w->out.s ? w->out.s : "");
	strbuf_reset(&w->out);
	return r;
}

/* run_until_reply - turn the loop until a reply line arrives */
static void run_until_reply(struct world *w)
{
	for (int i = 0; i < 2000 && w->out.len == 0; i++)
		event_base_loop(w->base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
}

#define CMDS "HELO c\r\nMAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"

/* send - client text */
static void client_send(struct world *w, const char *t)
{
	smtp_session_input(w->s, t, strlen(t));
}

static const char MSG[] = "From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: hi\r\n"
			  "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nhello\r\n.\r\n";

/* stored - the committed message's content */
static char *stored(struct world *w)
{
	int fd;
	off_t off, len;
	char err[256];
	assert_int_equal(queue_msg_content(w->q, w->qid, &fd, &off, &len, err, sizeof(err)), 0);
	char *b = calloc(1, (size_t)len + 1);
	assert_non_null(b);
	assert_int_equal(pread(fd, b, (size_t)len, off), len);
	close(fd);
	return b;
}

static void test_trusted_signed(void **state)
{
	(void)state;
	struct world *w = world_new(1);
	smtp_session_start(w->s, 0);
	char *r = take(w);
	assert_string_equal(r, "220 mx.example.test ESMTP Tern\r\n"); /* CONNECT answered within */
	free(r);
	client_send(w, CMDS);
	r = take(w);
	assert_string_equal(r, "250 mx.example.test\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
	free(r);
	assert_int_equal(w->resumed, 0);
	smtp_session_input(w->s, MSG, sizeof(MSG) - 1);
	assert_true(filter_busy(w->f));
	assert_int_equal(smtp_session_wants_input(w->s), 0);
	run_until_reply(w);
	r = take(w);
	assert_true(strncmp(r, "250 2.0.0 Ok: queued as ", 24) == 0);
	free(r);
	assert_false(filter_busy(w->f));
	assert_int_equal(w->resumed, 1);     /* answered from an event: the owner re-arms */
	assert_int_equal(w->txn_ends, 1);
	assert_string_equal(w->accepted.sender, "alice@example.test");
	char *c = stored(w);
	assert_true(strncmp(c, "DKIM-Signature: v=1; a=ed25519-sha256;", 38) == 0);
	assert_non_null(strstr(c, " d=example.test; s=tern;"));
	assert_non_null(strstr(c, "\r\nReceived: from c (unknown [192.0.2.7])\r\n"));
	assert_non_null(strstr(c, "\r\n\r\nhello\r\n"));
	free(c);
	/* RSET after a MAIL: the transaction ends once more */
	client_send(w, "MAIL FROM:<>\r\nRSET\r\n");
	free(take(w));
	assert_int_equal(w->txn_ends, 2);
	world_free(w);
}

static void test_untrusted_without_resolver(void **state)
{
	(void)state;
	/* no resolver: nothing is verified; an untrusted client is not signed */
	struct world *w = world_new(0);
	smtp_session_start(w->s, 0);
	client_send(w, CMDS);
	smtp_session_input(w->s, MSG, sizeof(MSG) - 1);
	free(take(w));
	run_until_reply(w);
	char *r = take(w);
	assert_true(strncmp(r, "250 2.0.0 Ok: queued as ", 24) == 0);
	free(r);
	char *c = stored(w);
	assert_true(strncmp(c, "Received: from c", 16) == 0);
	assert_null(strstr(c, "DKIM-Signature"));
	assert_null(strstr(c, "Authentication-Results"));
	free(c);
	world_free(w);
}

static void test_freed_while_committing(void **state)
{
	(void)state;
	/* a broken owner frees filter and session mid-commit: the commit's
	 * callback still comes and releases the filter (ASan: no leak, no
	 * use after free) */
	struct world *w = world_new(1);
	smtp_session_start(w->s, 0);
	client_send(w, CMDS);
	smtp_session_input(w->s, MSG, sizeof(MSG) - 1);
	assert_true(filter_busy(w->f));
	/* let the end of message reach the queue commit */
	for (int i = 0; i < 50; i++)
		event_base_loop(w->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	filter_free(w->f);
	w->f = NULL;
	smtp_session_free(w->s);
	w->s = NULL;
	for (int i = 0; i < 500; i++)
		event_base_loop(w->base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
	assert_int_equal(w->resumed, 0); /* never called after filter_free */
	world_free(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_trusted_signed),
		cmocka_unit_test(test_untrusted_without_resolver),
		cmocka_unit_test(test_freed_while_committing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
