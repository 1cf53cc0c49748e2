/*
 * test_smtp_client - the outbound SMTP session against scripted server
 * replies, in memory: what it sends, and the result of every recipient.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "smtp/smtp_client.h"

#define MAXR 8

/* the fake driver */
struct fake {
	struct strbuf wr;   /* everything written */
	size_t seen;        /* bytes of wr already checked */
	int closed;
	const char *content;
	size_t clen, cpos;
	size_t read_max;    /* bytes per content_read call (0 = as asked) */
	int read_err;
	int pause;          /* write returns 1 */
	int ndone;
	struct smtp_client_rcpt_result res[MAXR];
	size_t nres;
	int session_error, reusable, tls;
	enum smtp_client_tls pol;
	int offered_seen;
	int starttls_called;
};

static int f_write(void *ctx, const char *p, size_t n)
{
	struct fake *f = ctx;
	assert_false(f->closed);
	strbuf_add(&f->wr, p, n);
	return f->pause;
}

static void f_close(void *ctx)
{
	struct fake *f = ctx;
	assert_false(f->closed);
	f->closed = 1;
}

static ssize_t f_read(void *ctx, char *buf, size_t cap)
{
	struct fake *f = ctx;
	if (f->read_err)
		return -1;
	size_t n = f->clen - f->cpos;
	if (n > cap)
		n = cap;
	if (f->read_max && n > f->read_max)
		n = f->read_max;
	memcpy(buf, f->content + f->cpos, n);
	f->cpos += n;
	return (ssize_t)n;
}

static void f_done(void *ctx, const struct smtp_client_result *r)
{
	struct fake *f = ctx;
	assert_true(r->nrcpts <= MAXR);
	f->ndone++;
	memcpy(f->res, r->rcpts, r->nrcpts * sizeof(*r->rcpts));
	f->nres = r->nrcpts;
	f->session_error = r->session_error;
	f->reusable = r->reusable;
	f->tls = r->tls;
}

static enum smtp_client_tls f_policy(void *ctx, int offered)
{
	struct fake *f = ctx;
	f->offered_seen = offered;
	return f->pol;
}

static void f_starttls(void *ctx)
{
	struct fake *f = ctx;
	f->starttls_called++;
}

static const struct smtp_client_ops ops = {
	.write = f_write,
	.close = f_close,
	.content_read = f_read,
	.done = f_done,
	.tls_policy = f_policy,
	.starttls = f_starttls,
};

/* test fixture: an envelope, params and the fake */
struct fx {
	struct envelope env;
	struct smtp_client_params p;
	struct fake f;
	struct smtp_client *c;
};

static struct fx *fx_new(size_t nrcpt, const char *content)
{
	struct fx *x = calloc(1, sizeof(*x));
	env_init(&x->env);
	x->env.sender = strdup("alice@a.test");
	for (size_t i = 0; i < nrcpt; i++) {
		char a[64];
		snprintf(a, sizeof(a), "r%zu@b.test", i);
		env_rcpt_add(&x->env, a, NULL, 0);
	}
	strbuf_init(&x->f.wr);
	x->f.content = content;
	x->f.clen = strlen(content);
	x->p.helo_name = "client.test";
	x->p.remote_host = "mx.b.test[192.0.2.1]";
	x->p.env = &x->env;
	x->p.size = x->f.clen;
	return x;
}

static void fx_start(struct fx *x)
{
	x->c = smtp_client_new(&x->p, &ops, &x->f);
	assert_non_null(x->c);
	assert_int_equal(smtp_client_state(x->c), SMTP_CLIENT_S_GREETING);
}

static void fx_free(struct fx *x)
{
	smtp_client_free(x->c);
	env_free(&x->env);
	strbuf_free(&x->f.wr);
	free(x);
}

/* in - the server says s */
static void in(struct fx *x, const char *s)
{
	smtp_client_input(x->c, s, strlen(s));
}

/* in_bytewise - the server says s one byte at a time */
static void in_bytewise(struct fx *x, const char *s)
{
	for (; *s; s++)
		smtp_client_input(x->c, s, 1);
}

/* out - what the client wrote since the last call must be exactly s */
static void out(struct fx *x, const char *s)
{
	size_t n = x->f.wr.len - x->f.seen;
	if (n != strlen(s) || (n > 0 && memcmp(x->f.wr.s + x->f.seen, s, n) != 0)) {
		fprintf(stderr, "expected [%s]\n     got [%.*s]\n", s, (int)n, x->f.wr.s + x->f.seen);
		fail();
	}
	x->f.seen = x->f.wr.len;
}

#define EHLO_PLAIN "250-mx.b.test\r\n250 HELP\r\n"
#define EHLO_PIPE "250-mx.b.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"

/* handshake - greeting and EHLO with the given reply */
static void handshake(struct fx *x, const char *ehlo)
{
	fx_start(x);
	in(x, "220 mx.b.test ESMTP\r\n");
	out(x, "EHLO client.test\r\n");
	in(x, ehlo);
}

/* res - result of recipient slot i */
static void expect_res(struct fx *x, size_t i, enum smtp_client_status st, int code, const char *enh)
{
	assert_true(i < x->f.nres);
	if (x->f.res[i].status != st || x->f.res[i].code != code || strcmp(x->f.res[i].enh, enh) != 0) {
		fprintf(stderr, "rcpt %zu: %s %d %s %s\n", i, smtp_client_status_str(x->f.res[i].status),
			x->f.res[i].code, x->f.res[i].enh, x->f.res[i].text);
		fail();
	}
	assert_int_equal(x->f.res[i].index, i);
}

static void test_plain_delivery(void **state)
{
	(void)state;
	struct fx *x = fx_new(2, "Subject: hi\r\n\r\nbody\r\n");
	handshake(x, EHLO_PLAIN);
	out(x, "MAIL FROM:<alice@a.test>\r\n");
	assert_int_equal(smtp_client_timeout_secs(x->c), 300);
	in(x, "250 2.1.0 Ok\r\n");
	out(x, "RCPT TO:<r0@b.test>\r\n");
	in(x, "250 2.1.5 Ok\r\n");
	out(x, "RCPT TO:<r1@b.test>\r\n");
	in(x, "250 2.1.5 Ok\r\n");
	out(x, "DATA\r\n");
	assert_int_equal(smtp_client_timeout_secs(x->c), 120);
	in(x, "354 go\r\n");
	out(x, "Subject: hi\r\n\r\nbody\r\n.\r\n");
	assert_int_equal(smtp_client_state(x->c), SMTP_CLIENT_S_DOT);
	assert_int_equal(smtp_client_timeout_secs(x->c), 600);
	assert_int_equal(x->f.ndone, 0);
	in(x, "250 2.0.0 Ok: queued as ABC\r\n");
	assert_int_equal(x->f.ndone, 1);
	expect_res(x, 0, SMTP_CLIENT_DELIVERED, 250, "2.0.0");
	expect_res(x, 1, SMTP_CLIENT_DELIVERED, 250, "2.0.0");
	assert_string_equal(x->f.res[0].text, "Ok: queued as ABC");
	assert_string_equal(x->f.res[0].host, "mx.b.test[192.0.2.1]");
	assert_int_equal(x->f.res[0].stage, SMTP_CLIENT_STAGE_CONTENT);
	assert_true(x->f.reusable);
	assert_false(x->f.session_error);
	assert_int_equal(smtp_client_state(x->c), SMTP_CLIENT_S_IDLE);
	assert_int_equal(smtp_client_timeout_secs(x->c), 60);
	smtp_client_quit(x->c);
	out(x, "QUIT\r\n");
	in(x, "221 2.0.0 Bye\r\n");
	assert_true(x->f.closed);
	assert_int_equal(x->f.ndone, 1);
	fx_free(x);
}

static void test_pipelined_delivery(void **state)
{
	(void)state;
	struct fx *x = fx_new(2, "x\r\n");
	handshake(x, EHLO_PIPE);
	out(x, "MAIL FROM:<alice@a.test>\r\nRCPT TO:<r0@b.test>\r\nRCPT TO:<r1@b.test>\r\nDATA\r\n");
	in(x, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n");
	out(x, "x\r\n.\r\n");
	in_bytewise(x, "250 2.0.0 queued\r\n");
	expect_res(x, 0, SMTP_CLIENT_DELIVERED, 250, "2.0.0");
	expect_res(x, 1, SMTP_CLIENT_DELIVERED, 250, "2.0.0");
	smtp_client_eof(x->c); /* the server hangs up on an idle connection */
	assert_true(x->f.closed);
	assert_int_equal(x->f.ndone, 1);
	fx_free(x);
}

static void test_multiline_ehlo_bytewise(void **state)
{
	(void)state;
	struct fx *x = fx_new(1, "x\r\n");
	x->env.body = ENV_BODY_8BITMIME;
	fx_start(x);
	in_bytewise(x, "220-mx.b.test ESMTP\r\n220 second line\r\n");
	out(x, "EHLO client.test\r\n");
	in_bytewise(x, "250-mx.b.test\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n");
	out(x, "MAIL FROM:<alice@a.test> SIZE=3 BODY=8BITMIME\r\n");
	const struct smtp_caps *caps = smtp_client_caps(x->c);
	assert_int_equal(caps->size_max, 1000);
	assert_true(caps->flags & SMTP_CAP_DSN);
	fx_free(x);
}

static void test_helo_fallback(void **state)
{
	(void)state;
	struct fx *x = fx_new(1, "x\r\n");
	x->env.body = ENV_BODY_8BITMIME;
	x->env.ret = ENV_RET_HDRS;
	handshake(x, "502 5.5.1 EHLO not implemented\r\n");
	out(x, "HELO client.test\r\n");
	in(x, "250 mx.b.test\r\n");
	/* no ESMTP parameters after HELO; 8-bit content goes as it is */
	out(x, "MAIL FROM:<alice@a.test>\r\n");
	in(x, "250 ok\r\n");
	out(x, "RCPT TO:<r0@b.test>\r\n");
	in(x, "250 ok\r\n");
	out(x, "DATA\r\n");
	in(x, "354 go\r\n");
	out(x, "x\r\n.\r\n");
	in(x, "250 ok\r\n");
	expect_res(x, 0, SMTP_CLIENT_DELIVERED, 250, "");
	fx_free(x);
}

static void test_helo_refused_too(void **state)
{
	(void)state;
	struct fx *x = fx_new(1, "x\r\n");
	handshake(x, "500 what\r\n");
	out(x, "HELO client.test\r\n");
	in(x, "554 5.7.1 go away\r\n");
	expect_res(x, 0, SMTP_CLIENT_PERMFAIL, 554, "5.7.1");
	assert_int_equal(x->f.res[0].stage, SMTP_CLIENT_STAGE_EHLO);
	assert_true(x->f.session_error);
	out(x, "QUIT\r\n");
	fx_free(x);
}

static void test_ehlo_4xx(void **state)
{
	(void)state;
	struct fx *x = fx_new(1, "x\r\n");
	handshake(x, "450 4.7.1 slow down\r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 450, "4.7.1");
	out(x, "QUIT\r\n");
	fx_free(x);
}

static void test_size(void **state)
{
	(void)state;
	struct fx *x = fx_new(1, "0123456789\r\n");
	handshake(x, "250-mx\r\n250 SIZE 100\r\n");
	out(x, "MAIL FROM:<alice@a.test> SIZE=12\r\n");
	fx_free(x);

	/* too big for the peer: refused here, nothing sent */
	x = fx_new(2, "0123456789\r\n");
	handshake(x, "250-mx\r\n250 SIZE 11\r\n");
	out(x, "");
	expect_res(x, 0, SMTP_CLIENT_PERMFAIL, 0, "5.3.4");
	expect_res(x, 1, SMTP_CLIENT_PERMFAIL, 0, "5.3.4");
	assert_int_equal(x->f.res[0].stage, SMTP_CLIENT_STAGE_LOCAL);
	assert_false(x->f.res[0].remote);
	assert_non_null(strstr(x->f.res[0].text, "exceeds size limit 11"));
	assert_true(x->f.reusable);
	smtp_client_quit(x->c);
	out(x, "QUIT\r\n");
	fx_free(x);
}

static void test_smtputf8(void **state)
{
	(void)state;
	/* needed (the originating client asked) but not offered: 5.6.7 */
	struct fx *x = fx_new(2, "x\r\n");
	x->env.smtputf8 = 1;
	handshake(x, EHLO_PIPE);
	out(x, "");
	expect_res(x, 0, SMTP_CLIENT_PERMFAIL, 0, "5.6.7");
	expect_res(x, 1, SMTP_CLIENT_PERMFAIL, 0, "5.6.7");
	assert_non_null(strstr(x->f.res[0].text, "SMTPUTF8 is required"));
	fx_free(x);

	/* a UTF-8 address needs it even without the flag */
	x = fx_new(0, "x\r\n");
	env_rcpt_add(&x->env, "j\xc3\xb6rg@b.test", NULL, 0);
	handshake(x, EHLO_PLAIN);
	out(x, "");
	expect_res(x, 0, SMTP_CLIENT_PERMFAIL, 0, "5.6.7");
	fx_free(x);

	/* offered: MAIL FROM carries SMTPUTF8 */
	x = fx_new(0, "x\r\n");
	env_rcpt_add(&x->env, "j\xc3\xb6rg@b.test", NULL, 0);
	handshake(x, "250-mx\r\n250 SMTPUTF8\r\n");
	out(x, "MAIL FROM:<alice@a.test> SMTPUTF8\r\n");
	in(x, "250 ok\r\n");
	out(x, "RCPT TO:<j\xc3\xb6rg@b.test>\r\n");
	fx_free(x);
}

static void test_dsn_params(void **state)
{
	(void)state;
	struct fx *x = fx_new(0, "x\r\n");
	x->env.ret = ENV_RET_HDRS;
	x->env.envid = strdup("QQ+2B1");
	env_rcpt_add(&x->env, "r0@b.test", "a+b=c@orig.test", ENV_NOTIFY_SUCCESS | ENV_NOTIFY_FAILURE);
	env_rcpt_add(&x->env, "r1@b.test", "rfc822;x+2By@orig.test", ENV_NOTIFY_NEVER);
	env_rcpt_add(&x->env, "r2@b.test", "j\xc3\xb6rg@orig.test", ENV_NOTIFY_DELAY);
	env_rcpt_add(&x->env, "r3@b.test", "bad\xff@orig.test", 0);
	handshake(x, "250-mx\r\n250-DSN\r\n250 PIPELINING\r\n");
	out(x, "MAIL FROM:<alice@a.test> RET=HDRS ENVID=QQ+2B1\r\n"
	       "RCPT TO:<r0@b.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb+3Dc@orig.test\r\n"
	       "RCPT TO:<r1@b.test> NOTIFY=NEVER ORCPT=rfc822;x+2By@orig.test\r\n"
	       "RCPT TO:<r2@b.test> NOTIFY=DELAY ORCPT=utf-8;j\\x{F6}rg@orig.test\r\n"
	       "RCPT TO:<r3@b.test>\r\n"
	       "DATA\r\n");
	fx_free(x);

	/* without DSN offered: no DSN parameters */
	x = fx_new(0, "x\r\n");
	x->env.ret = ENV_RET_FULL;
	x->env.envid = strdup("id");
	env_rcpt_add(&x->env, "r0@b.test", "o@orig.test", ENV_NOTIFY_SUCCESS);
	handshake(x, EHLO_PIPE);
	out(x, "MAIL FROM:<alice@a.test>\r\nRCPT TO:<r0@b.test>\r\nDATA\r\n");
	fx_free(x);
}

static void test_partial_rcpt_failures(void **state)
{
	(void)state;
	struct fx *x = fx_new(3, "x\r\n");
	handshake(x, EHLO_PIPE);
	out(x, "MAIL FROM:<alice@a.test>\r\nRCPT TO:<r0@b.test>\r\nRCPT TO:<r1@b.test>\r\nRCPT TO:<r2@b.test>\r\n"
	       "DATA\r\n");
	in(x, "250 2.1.0 Ok\r\n550-5.1.1 no such user\r\n550 5.1.1 really\r\n450 4.2.1 mailbox busy\r\n"
	      "250 2.1.5 Ok\r\n354 go\r\n");
	out(x, "x\r\n.\r\n");
	in(x, "250 2.0.0 queued\r\n");
	assert_int_equal(x->f.ndone, 1);
	expect_res(x, 0, SMTP_CLIENT_PERMFAIL, 550, "5.1.1");
	assert_string_equal(x->f.res[0].text, "no such user really");
	assert_int_equal(x->f.res[0].stage, SMTP_CLIENT_STAGE_RCPT);
	assert_true(x->f.res[0].remote);
	expect_res(x, 1, SMTP_CLIENT_TEMPFAIL, 450, "4.2.1");
	expect_res(x, 2, SMTP_CLIENT_DELIVERED, 250, "2.0.0");
	fx_free(x);

	/* the same without pipelining: DATA only after the accepted one */
	x = fx_new(3, "x\r\n");
	handshake(x, EHLO_PLAIN);
	out(x, "MAIL FROM:<alice@a.test>\r\n");
	in(x, "250 ok\r\n");
	out(x, "RCPT TO:<r0@b.test>\r\n");
	in(x, "550 5.1.1 no\r\n");
	out(x, "RCPT TO:<r1@b.test>\r\n");
	in(x, "450 4.2.1 busy\r\n");
	out(x, "RCPT TO:<r2@b.test>\r\n");
	in(x, "250 ok\r\n");
	out(x, "DATA\r\n");
	in(x, "354 go\r\n");
	out(x, "x\r\n.\r\n");
	in(x, "554 5.7.1 spam\r\n");
	expect_res(x, 0, SMTP_CLIENT_PERMFAIL, 550, "5.1.1");
	expect_res(x, 1, SMTP_CLIENT_TEMPFAIL, 450, "4.2.1");
	expect_res(x, 2, SMTP_CLIENT_PERMFAIL, 554, "5.7.1");
	assert_true(x->f.reusable);
	fx_free(x);
}

static void test_all_refused(void **state)
{
	(void)state;
	struct fx *x = fx_new(2, "x\r\n");
	handshake(x, EHLO_PLAIN);
	out(x, "MAIL FROM:<alice@a.test>\r\n");
	in(x, "250 ok\r\n");
	out(x, "RCPT TO:<r0@b.test>\r\n");
	in(x, "550 5.1.1 no\r\n");
	out(x, "RCPT TO:<r1@b.test>\r\n");
	in(x, "551 5.1.6 moved\r\n");
	out(x, "RSET\r\n");
	assert_int_equal(x->f.ndone, 0);
	assert_int_equal(smtp_client_timeout_secs(x->c), 60);
	in(x, "250 ok\r\n");
	assert_int_equal(x->f.ndone, 1);
	expect_res(x, 0, SMTP_CLIENT_PERMFAIL, 550, "5.1.1");
	expect_res(x, 1, SMTP_CLIENT_PERMFAIL, 551, "5.1.6");
	assert_true(x->f.reusable);
	fx_free(x);

	/* pipelined: the refused DATA is read, then RSET */
	x = fx_new(2, "x\r\n");
	handshake(x, EHLO_PIPE);
	out(x, "MAIL FROM:<alice@a.test>\r\nRCPT TO:<r0@b.test>\r\nRCPT TO:<r1@b.test>\r\nDATA\r\n");
	in(x, "250 ok\r\n550 no\r\n450 later\r\n");
	out(x, "");
	assert_int_equal(smtp_client_state(x->c), SMTP_CLIENT_S_DRAIN);
	in(x, "554 5.5.1 no valid recipients\r\n");
	out(x, "RSET\r\n");
	in(x, "250 ok\r\n");
	expect_res(x, 0, SMTP_CLIENT_PERMFAIL, 550, "");
	expect_res(x, 1, SMTP_CLIENT_TEMPFAIL, 450, "");
	assert_true(x->f.reusable);
	fx_free(x);

	/* a broken server says 354 to DATA with no recipient: end it empty */
	x = fx_new(1, "x\r\n");
	handshake(x, EHLO_PIPE);
	out(x, "MAIL FROM:<alice@a.test>\r\nRCPT TO:<r0@b.test>\r\nDATA\r\n");
	in(x, "250 ok\r\n550 no\r\n354 go\r\n");
	out(x, ".\r\n");
	in(x, "250 queued for nobody\r\n");
	out(x, "RSET\r\n");
	in(x, "500 what\r\n");
	expect_res(x, 0, SMTP_CLIENT_PERMFAIL, 550, "");
	assert_false(x->f.reusable);
	out(x, "QUIT\r\n");
	fx_free(x);
}

static void test_mail_refused(void **state)
{
	(void)state;
	struct fx *x = fx_new(2, "x\r\n");
	handshake(x, EHLO_PIPE);
	out(x, "MAIL FROM:<alice@a.test>\r\nRCPT TO:<r0@b.test>\r\nRCPT TO:<r1@b.test>\r\nDATA\r\n");
	in(x, "553 5.1.8 bad sender\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n");
	out(x, "");
	in(x, "503 5.5.1 need MAIL\r\n");
	out(x, "RSET\r\n");
	in(x, "250 ok\r\n");
	expect_res(x, 0, SMTP_CLIENT_PERMFAIL, 553, "5.1.8");
	expect_res(x, 1, SMTP_CLIENT_PERMFAIL, 553, "5.1.8");
	assert_int_equal(x->f.res[1].stage, SMTP_CLIENT_STAGE_MAIL);
	fx_free(x);

	x = fx_new(1, "x\r\n");
	handshake(x, EHLO_PLAIN);
	out(x, "MAIL FROM:<alice@a.test>\r\n");
	in(x, "451 4.3.0 try later\r\n");
	out(x, "RSET\r\n");
	in(x, "250 ok\r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 451, "4.3.0");
	fx_free(x);
}

static void test_421_midway(void **state)
{
	(void)state;
	struct fx *x = fx_new(3, "x\r\n");
	handshake(x, EHLO_PIPE);
	out(x, "MAIL FROM:<alice@a.test>\r\nRCPT TO:<r0@b.test>\r\nRCPT TO:<r1@b.test>\r\nRCPT TO:<r2@b.test>\r\n"
	       "DATA\r\n");
	in(x, "250 ok\r\n550 5.1.1 no\r\n250 ok\r\n421 4.3.2 shutting down\r\n");
	assert_true(x->f.closed);
	assert_int_equal(x->f.ndone, 1);
	expect_res(x, 0, SMTP_CLIENT_PERMFAIL, 550, "5.1.1");
	expect_res(x, 1, SMTP_CLIENT_TEMPFAIL, 421, "4.3.2");
	expect_res(x, 2, SMTP_CLIENT_TEMPFAIL, 421, "4.3.2");
	assert_true(x->f.session_error);
	assert_false(x->f.reusable);
	in(x, "250 late\r\n"); /* ignored once closed */
	smtp_client_eof(x->c);
	smtp_client_timeout(x->c);
	assert_int_equal(x->f.ndone, 1);
	fx_free(x);

	/* 421 as the greeting */
	x = fx_new(1, "x\r\n");
	fx_start(x);
	in(x, "421 4.7.0 too busy\r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 421, "4.7.0");
	assert_true(x->f.closed);
	out(x, "");
	fx_free(x);

	/* 421 after end of data: not delivered */
	x = fx_new(1, "x\r\n");
	handshake(x, EHLO_PIPE);
	in(x, "250 ok\r\n250 ok\r\n354 go\r\n");
	in(x, "421 4.4.2 timeout\r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 421, "4.4.2");
	fx_free(x);
}

static void test_greeting_refused(void **state)
{
	(void)state;
	struct fx *x = fx_new(2, "x\r\n");
	fx_start(x);
	in(x, "554 5.7.1 no service for you\r\n");
	expect_res(x, 0, SMTP_CLIENT_PERMFAIL, 554, "5.7.1");
	expect_res(x, 1, SMTP_CLIENT_PERMFAIL, 554, "5.7.1");
	assert_int_equal(x->f.res[0].stage, SMTP_CLIENT_STAGE_CONNECT);
	assert_true(x->f.session_error);
	out(x, "QUIT\r\n");
	in(x, "221 bye\r\n");
	assert_true(x->f.closed);
	fx_free(x);
}

static void test_disconnects(void **state)
{
	(void)state;
	/* mid-DATA: content sent, no final reply */
	struct fx *x = fx_new(2, "x\r\n");
	handshake(x, EHLO_PIPE);
	in(x, "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
	out(x, "MAIL FROM:<alice@a.test>\r\nRCPT TO:<r0@b.test>\r\nRCPT TO:<r1@b.test>\r\nDATA\r\nx\r\n.\r\n");
	in(x, "250 2.0.0 que"); /* half a reply is no reply */
	smtp_client_eof(x->c);
	assert_true(x->f.closed);
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.4.2");
	expect_res(x, 1, SMTP_CLIENT_TEMPFAIL, 0, "4.4.2");
	assert_non_null(strstr(x->f.res[0].text, "lost connection with mx.b.test[192.0.2.1]"));
	assert_true(x->f.session_error);
	fx_free(x);

	/* while content is still going out (the output is full) */
	x = fx_new(1, "x\r\n");
	handshake(x, EHLO_PIPE);
	x->f.pause = 1;
	in(x, "250 ok\r\n250 ok\r\n354 go\r\n");
	assert_int_equal(smtp_client_state(x->c), SMTP_CLIENT_S_CONTENT);
	assert_int_equal(smtp_client_timeout_secs(x->c), 180);
	smtp_client_eof(x->c);
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.4.2");
	fx_free(x);

	/* before the greeting */
	x = fx_new(1, "x\r\n");
	fx_start(x);
	smtp_client_eof(x->c);
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.4.2");
	assert_int_equal(x->f.res[0].stage, SMTP_CLIENT_STAGE_CONNECT);
	fx_free(x);
}

static void test_timeouts(void **state)
{
	(void)state;
	struct fx *x = fx_new(1, "x\r\n");
	x->p.timeouts.greeting = 7;
	x->p.timeouts.data_end = 9;
	fx_start(x);
	assert_int_equal(smtp_client_timeout_secs(x->c), 7);
	in(x, "220 hi\r\n");
	assert_int_equal(smtp_client_timeout_secs(x->c), 300);
	in(x, EHLO_PIPE);
	in(x, "250 ok\r\n250 ok\r\n354 go\r\n");
	assert_int_equal(smtp_client_timeout_secs(x->c), 9);
	smtp_client_timeout(x->c);
	assert_true(x->f.closed);
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.4.2");
	assert_non_null(strstr(x->f.res[0].text, "timed out while sending end of data"));
	fx_free(x);

	/* at the greeting */
	x = fx_new(1, "x\r\n");
	fx_start(x);
	smtp_client_timeout(x->c);
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.4.2");
	assert_true(x->f.closed);
	fx_free(x);

	/* an idle connection: QUIT, then close on the next timeout */
	x = fx_new(1, "x\r\n");
	handshake(x, EHLO_PIPE);
	in(x, "250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n");
	out(x, "MAIL FROM:<alice@a.test>\r\nRCPT TO:<r0@b.test>\r\nDATA\r\nx\r\n.\r\n");
	smtp_client_timeout(x->c);
	out(x, "QUIT\r\n");
	assert_false(x->f.closed);
	smtp_client_timeout(x->c);
	assert_true(x->f.closed);
	assert_int_equal(x->f.ndone, 1);
	expect_res(x, 0, SMTP_CLIENT_DELIVERED, 250, "");
	fx_free(x);
}

/* deliver - run one message through a pipelining server; returns what was sent as content */
static void deliver_content(const char *content, size_t read_max, const char *want)
{
	struct fx *x = fx_new(1, content);
	x->f.read_max = read_max;
	handshake(x, EHLO_PIPE);
	out(x, "MAIL FROM:<alice@a.test>\r\nRCPT TO:<r0@b.test>\r\nDATA\r\n");
	in(x, "250 ok\r\n250 ok\r\n354 go\r\n");
	out(x, want);
	in(x, "250 ok\r\n");
	expect_res(x, 0, SMTP_CLIENT_DELIVERED, 250, "");
	fx_free(x);
}

static void test_dot_stuffing(void **state)
{
	(void)state;
	static const char *cases[][2] = {
		{".hello\r\n..x\r\nnot.dot\r\n.\r\n", "..hello\r\n...x\r\nnot.dot\r\n..\r\n.\r\n"},
		{"a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"},
		{"abc", "abc\r\n.\r\n"},             /* no final CRLF */
		{"", ".\r\n"},                        /* empty */
		{"a\r\n.", "a\r\n..\r\n.\r\n"},
		{"a\nb\rc\r\r\n.d\n", "a\r\nb\r\nc\r\n\r\n..d\r\n.\r\n"}, /* bare LF/CR never reach the wire */
		{"x\r", "x\r\n.\r\n"},
		{"\r\n.\r\n", "\r\n..\r\n.\r\n"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		deliver_content(cases[i][0], 0, cases[i][1]);
		deliver_content(cases[i][0], 1, cases[i][1]); /* split at every byte */
		deliver_content(cases[i][0], 2, cases[i][1]);
	}
}

static void test_large_content_and_pause(void **state)
{
	(void)state;
	size_t n = 200000;
	char *big = malloc(n + 1);
	for (size_t i = 0; i < n; i++)
		big[i] = (i % 100 == 98) ? '\r' : (i % 100 == 99) ? '\n' : (i % 100 == 0) ? '.' : 'a';
	big[n] = '\0';
	struct fx *x = fx_new(1, big);
	handshake(x, EHLO_PIPE);
	x->f.pause = 1;
	in(x, "250 ok\r\n250 ok\r\n354 go\r\n");
	int rounds = 0;
	while (smtp_client_state(x->c) == SMTP_CLIENT_S_CONTENT) {
		smtp_client_writable(x->c);
		rounds++;
		assert_true(rounds < 100);
	}
	assert_true(rounds >= 3);
	assert_int_equal(smtp_client_state(x->c), SMTP_CLIENT_S_DOT);
	in(x, "250 ok\r\n");
	expect_res(x, 0, SMTP_CLIENT_DELIVERED, 250, "");
	/* every line had its dot doubled */
	const char *w = x->f.wr.s + x->f.seen;
	size_t len = x->f.wr.len - x->f.seen;
	assert_int_equal(len, strlen("MAIL FROM:<alice@a.test>\r\nRCPT TO:<r0@b.test>\r\nDATA\r\n") + n + n / 100 + 3);
	assert_int_equal(memcmp(w + len - 5, "\r\n.\r\n", 5), 0);
	fx_free(x);
	free(big);
}

static void test_content_read_error(void **state)
{
	(void)state;
	struct fx *x = fx_new(1, "x\r\n");
	handshake(x, EHLO_PIPE);
	x->f.read_err = 1;
	in(x, "250 ok\r\n250 ok\r\n354 go\r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.3.0");
	assert_int_equal(x->f.res[0].stage, SMTP_CLIENT_STAGE_LOCAL);
	assert_false(x->f.session_error);
	assert_true(x->f.closed);
	fx_free(x);
}

static void test_bdat(void **state)
{
	(void)state;
	/* CHUNKING preferred, one chunk, binary content goes as it is */
	struct fx *x = fx_new(1, ".a\nb");
	x->p.prefer_bdat = 1;
	handshake(x, "250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n");
	out(x, "MAIL FROM:<alice@a.test>\r\nRCPT TO:<r0@b.test>\r\n");
	in(x, "250 ok\r\n250 ok\r\n");
	out(x, "BDAT 4 LAST\r\n.a\nb");
	assert_int_equal(smtp_client_timeout_secs(x->c), 600);
	in(x, "250 2.0.0 4 octets received\r\n");
	expect_res(x, 0, SMTP_CLIENT_DELIVERED, 250, "2.0.0");
	assert_true(x->f.reusable);
	fx_free(x);

	/* BINARYMIME: needs BINARYMIME and CHUNKING */
	x = fx_new(1, "bin");
	x->env.body = ENV_BODY_BINARYMIME;
	handshake(x, "250-mx\r\n250 CHUNKING\r\n");
	out(x, "");
	expect_res(x, 0, SMTP_CLIENT_PERMFAIL, 0, "5.6.3");
	fx_free(x);

	/* BINARYMIME offered, no PIPELINING, content of exactly two chunks:
	 * one BDAT at a time, then BDAT 0 LAST */
	size_t n = 2 * 65536;
	char *big = malloc(n + 1);
	memset(big, 'z', n);
	big[n] = '\0';
	x = fx_new(2, big);
	x->env.body = ENV_BODY_BINARYMIME;
	handshake(x, "250-mx\r\n250-BINARYMIME\r\n250-SIZE\r\n250 CHUNKING\r\n");
	out(x, "MAIL FROM:<alice@a.test> SIZE=131072 BODY=BINARYMIME\r\n");
	in(x, "250 ok\r\n");
	out(x, "RCPT TO:<r0@b.test>\r\n");
	in(x, "250 ok\r\n");
	out(x, "RCPT TO:<r1@b.test>\r\n");
	in(x, "550 no\r\n");
	assert_int_equal(x->f.wr.len - x->f.seen, strlen("BDAT 65536\r\n") + 65536);
	assert_int_equal(memcmp(x->f.wr.s + x->f.seen, "BDAT 65536\r\nzz", 14), 0);
	x->f.seen = x->f.wr.len;
	assert_int_equal(smtp_client_timeout_secs(x->c), 180);
	in(x, "250 ok\r\n");
	assert_int_equal(memcmp(x->f.wr.s + x->f.seen, "BDAT 65536\r\nzz", 14), 0);
	x->f.seen = x->f.wr.len;
	in(x, "250 ok\r\n");
	out(x, "BDAT 0 LAST\r\n");
	assert_int_equal(x->f.ndone, 0);
	in(x, "250 2.0.0 done\r\n");
	expect_res(x, 0, SMTP_CLIENT_DELIVERED, 250, "2.0.0");
	expect_res(x, 1, SMTP_CLIENT_PERMFAIL, 550, "");
	fx_free(x);

	/* pipelined chunks, the first refused: all replies read, then RSET */
	x = fx_new(1, big);
	x->p.prefer_bdat = 1;
	handshake(x, "250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n");
	in(x, "250 ok\r\n250 ok\r\n");
	assert_int_equal(x->f.wr.len - x->f.seen,
			 strlen("MAIL FROM:<alice@a.test>\r\nRCPT TO:<r0@b.test>\r\n") + 2 * (12 + 65536) + 13);
	x->f.seen = x->f.wr.len;
	in(x, "552 5.3.4 too big\r\n503 5.5.1 no\r\n");
	out(x, "");
	in(x, "503 5.5.1 no\r\n");
	out(x, "RSET\r\n");
	in(x, "250 ok\r\n");
	expect_res(x, 0, SMTP_CLIENT_PERMFAIL, 552, "5.3.4");
	assert_true(x->f.reusable);
	fx_free(x);
	free(big);
}

static void test_two_messages(void **state)
{
	(void)state;
	struct fx *x = fx_new(1, "one\r\n");
	handshake(x, EHLO_PIPE);
	out(x, "MAIL FROM:<alice@a.test>\r\nRCPT TO:<r0@b.test>\r\nDATA\r\n");
	in(x, "250 ok\r\n250 ok\r\n354 go\r\n");
	out(x, "one\r\n.\r\n");
	in(x, "250 2.0.0 first\r\n");
	expect_res(x, 0, SMTP_CLIENT_DELIVERED, 250, "2.0.0");
	assert_true(x->f.reusable);

	/* the second message: other envelope, only some recipients */
	struct envelope e2;
	env_init(&e2);
	e2.sender = strdup("");
	env_rcpt_add(&e2, "skip@c.test", NULL, 0);
	env_rcpt_add(&e2, "bob@c.test", NULL, 0);
	size_t idx[] = {1};
	struct smtp_client_params p2 = x->p;
	p2.env = &e2;
	p2.rcpt_idx = idx;
	p2.nrcpt_idx = 1;
	x->f.content = "two\r\n";
	x->f.clen = 5;
	x->f.cpos = 0;
	assert_int_equal(smtp_client_next(x->c, &p2), 0);
	out(x, "MAIL FROM:<>\r\nRCPT TO:<bob@c.test>\r\nDATA\r\n");
	assert_int_equal(smtp_client_next(x->c, &p2), -1); /* busy */
	in(x, "250 ok\r\n250 ok\r\n354 go\r\n");
	out(x, "two\r\n.\r\n");
	in(x, "250 2.0.0 second\r\n");
	assert_int_equal(x->f.ndone, 2);
	assert_int_equal(x->f.nres, 1);
	assert_int_equal(x->f.res[0].index, 1);
	assert_int_equal(x->f.res[0].status, SMTP_CLIENT_DELIVERED);
	assert_string_equal(x->f.res[0].text, "second");
	smtp_client_quit(x->c);
	out(x, "QUIT\r\n");
	env_free(&e2);
	fx_free(x);
}

/* hostile - a session that gets bad bytes at the given point must fail
 * every recipient temporarily with a protocol error and close */
static void hostile_after_mail(const char *bad)
{
	struct fx *x = fx_new(2, "x\r\n");
	handshake(x, EHLO_PIPE);
	in(x, bad);
	assert_true(x->f.closed);
	assert_int_equal(x->f.ndone, 1);
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(x->f.res[i].status, SMTP_CLIENT_TEMPFAIL);
		assert_string_equal(x->f.res[i].enh, "4.5.0");
		assert_non_null(strstr(x->f.res[i].text, "protocol error"));
	}
	assert_true(x->f.session_error);
	fx_free(x);
}

static void test_hostile_replies(void **state)
{
	(void)state;
	hostile_after_mail("600 what\r\n");
	hostile_after_mail("250-ok\r\n550 mixed\r\n");
	hostile_after_mail("GARBAGE\r\n");
	hostile_after_mail("\x16\x03\x01\x02\x00");           /* a TLS record */
	hostile_after_mail("250 ok\r\n250 ok\r\n250 ok\r\n250 ok to DATA\r\n");
	hostile_after_mail("354 go ahead to MAIL\r\n");
	hostile_after_mail("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n354 again\r\n");
	/* endless continuation lines */
	char *s = malloc(300 * 20);
	size_t n = 0;
	for (int i = 0; i < 300; i++)
		n += (size_t)sprintf(s + n, "250-more %d\r\n", i);
	hostile_after_mail(s);
	/* one endless line */
	memset(s, 'A', 5999);
	memcpy(s, "250 ", 4);
	s[5999] = '\0';
	hostile_after_mail(s);
	free(s);

	/* at the greeting */
	struct fx *x = fx_new(1, "x\r\n");
	fx_start(x);
	in(x, "SSH-2.0-OpenSSH\r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.5.0");
	assert_true(x->f.closed);
	fx_free(x);

	/* a 3xx to EHLO (found by fuzz_smtp_client) or as the greeting */
	x = fx_new(1, "x\r\n");
	handshake(x, "354 go\r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.5.0");
	assert_true(x->f.closed);
	fx_free(x);
	x = fx_new(1, "x\r\n");
	fx_start(x);
	in(x, "354 hello\r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.5.0");
	fx_free(x);
	x = fx_new(1, "x\r\n");
	x->f.pol = SMTP_CLIENT_TLS_MUST;
	handshake(x, "250-mx\r\n250 STARTTLS\r\n");
	in(x, "334 what\r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.5.0");
	assert_int_equal(x->f.starttls_called, 0);
	fx_free(x);

	/* after the end of data: a 3xx is no final answer */
	x = fx_new(1, "x\r\n");
	handshake(x, EHLO_PIPE);
	in(x, "250 ok\r\n250 ok\r\n354 go\r\n354 again\r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.5.0");
	fx_free(x);

	/* unsolicited reply on an idle connection */
	x = fx_new(1, "x\r\n");
	handshake(x, EHLO_PIPE);
	in(x, "250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n250 surprise\r\n");
	assert_int_equal(x->f.ndone, 1);
	expect_res(x, 0, SMTP_CLIENT_DELIVERED, 250, "");
	assert_true(x->f.closed);
	fx_free(x);
}

static void test_starttls(void **state)
{
	(void)state;
	struct fx *x = fx_new(1, "x\r\n");
	x->f.pol = SMTP_CLIENT_TLS_MAY;
	handshake(x, "250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
	assert_true(x->f.offered_seen);
	out(x, "STARTTLS\r\n");
	in(x, "220 2.0.0 ready\r\n");
	assert_int_equal(x->f.starttls_called, 1);
	assert_int_equal(smtp_client_state(x->c), SMTP_CLIENT_S_TLS);
	smtp_client_tls_done(x->c, 1);
	out(x, "EHLO client.test\r\n");
	/* capabilities are learnt again; STARTTLS is not repeated */
	in(x, "250-mx\r\n250-SIZE 50\r\n250 STARTTLS\r\n");
	out(x, "MAIL FROM:<alice@a.test> SIZE=3\r\n");
	assert_false(smtp_client_caps(x->c)->flags & SMTP_CAP_PIPELINING);
	in(x, "250 ok\r\n");
	out(x, "RCPT TO:<r0@b.test>\r\n");
	in(x, "250 ok\r\n");
	out(x, "DATA\r\n");
	in(x, "354 go\r\n");
	in(x, "250 ok\r\n");
	expect_res(x, 0, SMTP_CLIENT_DELIVERED, 250, "");
	assert_true(x->f.tls);
	fx_free(x);

	/* handshake failure */
	x = fx_new(1, "x\r\n");
	x->f.pol = SMTP_CLIENT_TLS_MAY;
	handshake(x, "250-mx\r\n250 STARTTLS\r\n");
	in(x, "220 go\r\n");
	smtp_client_tls_done(x->c, 0);
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.7.5");
	assert_true(x->f.session_error);
	assert_true(x->f.closed);
	fx_free(x);

	/* refused, opportunistic: on in plain text */
	x = fx_new(1, "x\r\n");
	x->f.pol = SMTP_CLIENT_TLS_MAY;
	handshake(x, "250-mx\r\n250 STARTTLS\r\n");
	out(x, "STARTTLS\r\n");
	in(x, "454 4.7.0 TLS not available\r\n");
	out(x, "MAIL FROM:<alice@a.test>\r\n");
	fx_free(x);

	/* refused, required: tempfail */
	x = fx_new(1, "x\r\n");
	x->f.pol = SMTP_CLIENT_TLS_MUST;
	handshake(x, "250-mx\r\n250 STARTTLS\r\n");
	out(x, "STARTTLS\r\n");
	in(x, "454 4.7.0 TLS not available\r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 454, "4.7.0");
	assert_int_equal(x->f.res[0].stage, SMTP_CLIENT_STAGE_STARTTLS);
	out(x, "QUIT\r\n");
	fx_free(x);

	/* required but not offered */
	x = fx_new(1, "x\r\n");
	x->f.pol = SMTP_CLIENT_TLS_MUST;
	handshake(x, EHLO_PIPE);
	assert_false(x->f.offered_seen);
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.7.4");
	out(x, "QUIT\r\n");
	fx_free(x);

	/* not wanted: STARTTLS offered but the policy says no */
	x = fx_new(1, "x\r\n");
	x->f.pol = SMTP_CLIENT_TLS_NONE;
	handshake(x, "250-mx\r\n250 STARTTLS\r\n");
	out(x, "MAIL FROM:<alice@a.test>\r\n");
	fx_free(x);

	/* response injection: bytes after the 220 in plain text */
	x = fx_new(1, "x\r\n");
	x->f.pol = SMTP_CLIENT_TLS_MAY;
	handshake(x, "250-mx\r\n250 STARTTLS\r\n");
	in(x, "220 go\r\n250-injected\r\n");
	assert_int_equal(x->f.starttls_called, 0);
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.5.0");
	assert_true(x->f.closed);
	fx_free(x);
}

static void test_bad_addresses_and_params(void **state)
{
	(void)state;
	/* an address with CR LF never goes into a command */
	struct fx *x = fx_new(0, "x\r\n");
	env_rcpt_add(&x->env, "evil@b.test>\r\nRCPT TO:<other@c.test", NULL, 0);
	env_rcpt_add(&x->env, "good@b.test", NULL, 0);
	handshake(x, EHLO_PIPE);
	out(x, "MAIL FROM:<alice@a.test>\r\nRCPT TO:<good@b.test>\r\nDATA\r\n");
	in(x, "250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n");
	expect_res(x, 0, SMTP_CLIENT_PERMFAIL, 0, "5.1.3");
	expect_res(x, 1, SMTP_CLIENT_DELIVERED, 250, "");
	fx_free(x);

	x = fx_new(1, "x\r\n");
	free(x->env.sender);
	x->env.sender = strdup("a@b\r\nDATA");
	handshake(x, EHLO_PIPE);
	out(x, "");
	expect_res(x, 0, SMTP_CLIENT_PERMFAIL, 0, "5.1.7");
	fx_free(x);

	/* bad params are refused */
	x = fx_new(1, "x\r\n");
	struct smtp_client_params p = x->p;
	p.helo_name = "bad name";
	assert_null(smtp_client_new(&p, &ops, &x->f));
	p = x->p;
	p.helo_name = NULL;
	assert_null(smtp_client_new(&p, &ops, &x->f));
	p = x->p;
	size_t idx[] = {5};
	p.rcpt_idx = idx;
	p.nrcpt_idx = 1;
	assert_null(smtp_client_new(&p, &ops, &x->f));
	p = x->p;
	p.env = NULL;
	assert_null(smtp_client_new(&p, &ops, &x->f));
	fx_free(x);
}

static void test_quit_in_flight(void **state)
{
	(void)state;
	struct fx *x = fx_new(2, "x\r\n");
	handshake(x, EHLO_PLAIN);
	in(x, "250 ok\r\n");
	in(x, "550 5.1.1 no\r\n");
	smtp_client_quit(x->c);
	assert_int_equal(x->f.ndone, 1);
	expect_res(x, 0, SMTP_CLIENT_PERMFAIL, 550, "5.1.1");
	expect_res(x, 1, SMTP_CLIENT_TEMPFAIL, 0, "4.3.2");
	assert_true(x->f.closed);
	fx_free(x);
}

/* ---- AUTH toward a relayhost (RFC 4954) ---- */

#define B64_PASS "czNjcmV0" /* base64("s3cret") */

/* auth_fx - one recipient, credentials, TLS required; up to the EHLO
 * after a successful handshake, which gets ehlo2 */
static struct fx *auth_fx(const char *ehlo2)
{
	struct fx *x = fx_new(1, "x\r\n");
	x->p.auth_user = "user";
	x->p.auth_pass = "s3cret";
	x->f.pol = SMTP_CLIENT_TLS_MUST;
	handshake(x, "250-mx\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n");
	/* AUTH is offered in plain text too: nothing before TLS */
	out(x, "STARTTLS\r\n");
	in(x, "220 2.0.0 ready\r\n");
	smtp_client_tls_done(x->c, 1);
	out(x, "EHLO client.test\r\n");
	in(x, ehlo2);
	return x;
}

/* no_secret - the password never went out in any form but the one allowed */
static void no_secret(struct fx *x)
{
	strbuf_addc(&x->f.wr, '\0');
	assert_null(strstr(x->f.wr.s, "s3cret"));
	assert_null(strstr(x->f.wr.s, B64_PASS));
	assert_null(strstr(x->f.wr.s, "AUTH PLAIN"));
	x->f.wr.len--;
}

static void test_auth_plain(void **state)
{
	(void)state;
	struct fx *x = auth_fx("250-mx\r\n250-AUTH LOGIN PLAIN CRAM-MD5\r\n250 8BITMIME\r\n");
	/* base64("\0user\0s3cret"): empty authzid, RFC 4616 */
	out(x, "AUTH PLAIN AHVzZXIAczNjcmV0\r\n");
	assert_int_equal(smtp_client_state(x->c), SMTP_CLIENT_S_AUTH);
	assert_int_equal(smtp_client_timeout_secs(x->c), 300);
	in(x, "235 2.7.0 Authentication successful\r\n");
	out(x, "MAIL FROM:<alice@a.test>\r\n");
	in(x, "250 ok\r\n");
	out(x, "RCPT TO:<r0@b.test>\r\n");
	fx_free(x);

	/* a whole delivery, then a second message without a second AUTH */
	x = auth_fx("250-mx\r\n250-PIPELINING\r\n250 AUTH PLAIN\r\n");
	out(x, "AUTH PLAIN AHVzZXIAczNjcmV0\r\n");
	in(x, "235 ok\r\n");
	out(x, "MAIL FROM:<alice@a.test>\r\nRCPT TO:<r0@b.test>\r\nDATA\r\n");
	in(x, "250 ok\r\n250 ok\r\n354 go\r\n");
	out(x, "x\r\n.\r\n");
	in(x, "250 queued\r\n");
	expect_res(x, 0, SMTP_CLIENT_DELIVERED, 250, "");
	assert_true(x->f.tls);
	x->f.cpos = 0;
	assert_int_equal(smtp_client_next(x->c, &x->p), 0);
	out(x, "MAIL FROM:<alice@a.test>\r\nRCPT TO:<r0@b.test>\r\nDATA\r\n");
	fx_free(x);
}

static void test_auth_login(void **state)
{
	(void)state;
	struct fx *x = auth_fx("250-mx\r\n250 AUTH LOGIN\r\n");
	out(x, "AUTH LOGIN\r\n");
	in(x, "334 VXNlcm5hbWU6\r\n");
	out(x, "dXNlcg==\r\n");
	in(x, "334 UGFzc3dvcmQ6\r\n");
	out(x, B64_PASS "\r\n");
	in(x, "235 2.7.0 ok\r\n");
	out(x, "MAIL FROM:<alice@a.test>\r\n");
	fx_free(x);

	/* a third 334 is out of step */
	x = auth_fx("250-mx\r\n250 AUTH LOGIN\r\n");
	out(x, "AUTH LOGIN\r\n");
	in(x, "334 a\r\n334 b\r\n");
	out(x, "dXNlcg==\r\n" B64_PASS "\r\n");
	in(x, "334 c\r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.5.0");
	assert_true(x->f.closed);
	fx_free(x);

	/* "accepted" before the password was asked for */
	x = auth_fx("250-mx\r\n250 AUTH LOGIN\r\n");
	out(x, "AUTH LOGIN\r\n");
	in(x, "235 ok\r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.5.0");
	assert_true(x->f.closed);
	fx_free(x);
}

static void test_auth_refused(void **state)
{
	(void)state;
	/* 535: temporary for us, with the server's text, and QUIT */
	struct fx *x = auth_fx("250-mx\r\n250 AUTH PLAIN\r\n");
	out(x, "AUTH PLAIN AHVzZXIAczNjcmV0\r\n");
	in(x, "535 5.7.8 Authentication credentials invalid\r\n");
	assert_int_equal(x->f.ndone, 1);
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 535, "5.7.8");
	assert_int_equal(x->f.res[0].stage, SMTP_CLIENT_STAGE_AUTH);
	assert_true(x->f.res[0].remote);
	assert_string_equal(x->f.res[0].text, "Authentication credentials invalid");
	assert_true(x->f.session_error);
	assert_false(x->f.reusable);
	out(x, "QUIT\r\n");
	fx_free(x);

	/* 454: temporary too */
	x = auth_fx("250-mx\r\n250 AUTH PLAIN\r\n");
	out(x, "AUTH PLAIN AHVzZXIAczNjcmV0\r\n");
	in(x, "454 4.7.0 Temporary authentication failure\r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 454, "4.7.0");
	out(x, "QUIT\r\n");
	fx_free(x);

	/* 421 while authenticating */
	x = auth_fx("250-mx\r\n250 AUTH PLAIN\r\n");
	out(x, "AUTH PLAIN AHVzZXIAczNjcmV0\r\n");
	in(x, "421 4.3.2 bye\r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 421, "4.3.2");
	assert_int_equal(x->f.res[0].stage, SMTP_CLIENT_STAGE_AUTH);
	assert_true(x->f.closed);
	fx_free(x);

	/* a 334 to PLAIN with its initial response: out of step */
	x = auth_fx("250-mx\r\n250 AUTH PLAIN\r\n");
	out(x, "AUTH PLAIN AHVzZXIAczNjcmV0\r\n");
	in(x, "334 \r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.5.0");
	assert_true(x->f.closed);
	fx_free(x);

	/* lost connection and timeout while authenticating */
	x = auth_fx("250-mx\r\n250 AUTH PLAIN\r\n");
	out(x, "AUTH PLAIN AHVzZXIAczNjcmV0\r\n");
	smtp_client_eof(x->c);
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.4.2");
	assert_non_null(strstr(x->f.res[0].text, "while authenticating"));
	fx_free(x);
	x = auth_fx("250-mx\r\n250 AUTH PLAIN\r\n");
	smtp_client_timeout(x->c);
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.4.2");
	fx_free(x);
}

static void test_auth_needs_tls(void **state)
{
	(void)state;
	/* STARTTLS not offered (stripped?): AUTH PLAIN offered, never sent */
	struct fx *x = fx_new(1, "x\r\n");
	x->p.auth_user = "user";
	x->p.auth_pass = "s3cret";
	x->f.pol = SMTP_CLIENT_TLS_MAY;
	handshake(x, "250-mx\r\n250 AUTH PLAIN LOGIN\r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.7.0");
	assert_int_equal(x->f.res[0].stage, SMTP_CLIENT_STAGE_AUTH);
	assert_non_null(strstr(x->f.res[0].text, "relayhost requires TLS for AUTH"));
	assert_true(x->f.session_error);
	out(x, "QUIT\r\n");
	no_secret(x);
	fx_free(x);

	/* STARTTLS refused under an opportunistic policy */
	x = fx_new(1, "x\r\n");
	x->p.auth_user = "user";
	x->p.auth_pass = "s3cret";
	x->f.pol = SMTP_CLIENT_TLS_MAY;
	handshake(x, "250-mx\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n");
	out(x, "STARTTLS\r\n");
	in(x, "454 4.7.0 TLS not available\r\n");
	assert_non_null(strstr(x->f.res[0].text, "relayhost requires TLS for AUTH"));
	out(x, "QUIT\r\n");
	no_secret(x);
	fx_free(x);

	/* the policy says no TLS at all */
	x = fx_new(1, "x\r\n");
	x->p.auth_user = "user";
	x->p.auth_pass = "s3cret";
	x->f.pol = SMTP_CLIENT_TLS_NONE;
	handshake(x, "250-mx\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n");
	assert_non_null(strstr(x->f.res[0].text, "relayhost requires TLS for AUTH"));
	no_secret(x);
	fx_free(x);

	/* handshake failure: no credentials after it */
	x = fx_new(1, "x\r\n");
	x->p.auth_user = "user";
	x->p.auth_pass = "s3cret";
	x->f.pol = SMTP_CLIENT_TLS_MAY;
	handshake(x, "250-mx\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n");
	in(x, "220 go\r\n");
	smtp_client_tls_done(x->c, 0);
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.7.5");
	no_secret(x);
	fx_free(x);

	/* HELO fallback: no TLS, no AUTH */
	x = fx_new(1, "x\r\n");
	x->p.auth_user = "user";
	x->p.auth_pass = "s3cret";
	fx_start(x);
	in(x, "220 mx\r\n");
	out(x, "EHLO client.test\r\n");
	in(x, "502 no\r\n");
	out(x, "HELO client.test\r\n");
	in(x, "250 mx\r\n");
	assert_non_null(strstr(x->f.res[0].text, "relayhost requires TLS for AUTH"));
	no_secret(x);
	fx_free(x);
}

static void test_auth_not_offered(void **state)
{
	(void)state;
	struct fx *x = auth_fx("250-mx\r\n250 8BITMIME\r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.7.0");
	assert_int_equal(x->f.res[0].stage, SMTP_CLIENT_STAGE_AUTH);
	assert_non_null(strstr(x->f.res[0].text, "relayhost offers no AUTH"));
	assert_true(x->f.session_error);
	out(x, "QUIT\r\n");
	no_secret(x);
	fx_free(x);

	/* offered, but only mechanisms we do not speak (PLAINX is not PLAIN) */
	x = auth_fx("250-mx\r\n250 AUTH CRAM-MD5 PLAINX XLOGIN\r\n");
	expect_res(x, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.7.0");
	assert_non_null(strstr(x->f.res[0].text, "no AUTH mechanism we support"));
	out(x, "QUIT\r\n");
	no_secret(x);
	fx_free(x);
}

static void test_auth_bad_params(void **state)
{
	(void)state;
	struct fx *x = fx_new(1, "x\r\n");
	char longpw[300];
	memset(longpw, 'p', sizeof(longpw) - 1);
	longpw[sizeof(longpw) - 1] = '\0';
	const char *bad[][2] = {
		{"user", NULL}, {NULL, "pw"}, {"", "pw"}, {"user", ""},
		{"us\r\ner", "pw"}, {"user", "p\nw"}, {"user", longpw}, {longpw, "pw"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		x->p.auth_user = bad[i][0];
		x->p.auth_pass = bad[i][1];
		assert_null(smtp_client_new(&x->p, &ops, &x->f));
	}
	/* 255 octets each and a ':' in the password are fine */
	longpw[255] = '\0';
	x->p.auth_user = longpw;
	x->p.auth_pass = "a:b";
	x->c = smtp_client_new(&x->p, &ops, &x->f);
	assert_non_null(x->c);
	assert_string_equal(smtp_client_stage_str(SMTP_CLIENT_STAGE_AUTH), "auth");
	assert_string_equal(smtp_client_state_str(SMTP_CLIENT_S_AUTH), "auth");
	fx_free(x);
}

static void test_names(void **state)
{
	(void)state;
	assert_string_equal(smtp_client_status_str(SMTP_CLIENT_PERMFAIL), "permfail");
	assert_string_equal(smtp_client_stage_str(SMTP_CLIENT_STAGE_RCPT), "rcpt");
	assert_string_equal(smtp_client_tls_str(SMTP_CLIENT_TLS_MUST), "must");
	for (int s = SMTP_CLIENT_S_GREETING; s <= SMTP_CLIENT_S_CLOSED; s++)
		assert_string_not_equal(smtp_client_state_str((enum smtp_client_state)s), "?");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_delivery),
		cmocka_unit_test(test_pipelined_delivery),
		cmocka_unit_test(test_multiline_ehlo_bytewise),
		cmocka_unit_test(test_helo_fallback),
		cmocka_unit_test(test_helo_refused_too),
		cmocka_unit_test(test_ehlo_4xx),
		cmocka_unit_test(test_size),
		cmocka_unit_test(test_smtputf8),
		cmocka_unit_test(test_dsn_params),
		cmocka_unit_test(test_partial_rcpt_failures),
		cmocka_unit_test(test_all_refused),
		cmocka_unit_test(test_mail_refused),
		cmocka_unit_test(test_421_midway),
		cmocka_unit_test(test_greeting_refused),
		cmocka_unit_test(test_disconnects),
		cmocka_unit_test(test_timeouts),
		cmocka_unit_test(test_dot_stuffing),
		cmocka_unit_test(test_large_content_and_pause),
		cmocka_unit_test(test_content_read_error),
		cmocka_unit_test(test_bdat),
		cmocka_unit_test(test_two_messages),
		cmocka_unit_test(test_hostile_replies),
		cmocka_unit_test(test_starttls),
		cmocka_unit_test(test_bad_addresses_and_params),
		cmocka_unit_test(test_quit_in_flight),
		cmocka_unit_test(test_auth_plain),
		cmocka_unit_test(test_auth_login),
		cmocka_unit_test(test_auth_refused),
		cmocka_unit_test(test_auth_needs_tls),
		cmocka_unit_test(test_auth_not_offered),
		cmocka_unit_test(test_auth_bad_params),
		cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
