/*
 * test_smtp_auth - SMTP AUTH (RFC 4954), submission rules (RFC 6409) and
 * sender ownership in the session, against fake ops: what the daemon is
 * asked, what is logged (never a password), what is left in memory (no
 * credentials in the input buffer), deferred checks with eof, timeout,
 * shutdown and input overflow, hostile responses at the length limits;
 * and lookup_sender_owned directly.
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
#include <unistd.h>

#include <cmocka.h>

#include "auth/sasl.h"
#include "core/log.h"
#include "lookup/lookup.h"
#include "smtp/smtp_server_int.h"
#include "smtp_server/fake_ops.h"

#define GREETING "220 mx.example.test ESMTP Tern\r\n"
#define AUTH_OK "235 2.7.0 Authentication successful\r\n"
#define AUTH_BAD "535 5.7.8 Authentication credentials invalid\r\n"
#define MALFORMED "501 5.5.2 Cannot decode response\r\n"
#define MAIL_OK "250 2.1.0 Ok\r\n"
#define PLAIN_ALICE "AGFsaWNlAHNlY3JldA==" /* \0alice\0secret */

/* tls_session - a fake world under implicit TLS, greeted and EHLO done */
static struct fake *tls_session(const char *const *ov, size_t n, enum smtp_listener_kind kind)
{
	struct fake *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_int_equal(fake_init(f, ov, n), 0);
	f->info.tls = 1;
	f->info.kind = kind;
	fake_start(f, 0);
	assert_non_null(f->s);
	assert_string_equal(fake_take(f), GREETING);
	fake_send(f, "EHLO client.example\r\n");
	const char *r = fake_take(f);
	assert_non_null(strstr(r, "250 AUTH PLAIN LOGIN\r\n"));
	return f;
}

static void done(struct fake *f)
{
	fake_fini(f);
	free(f);
}

/* expect - send text, compare everything replied */
static void expect(struct fake *f, const char *send, const char *want)
{
	fake_send(f, send);
	assert_string_equal(fake_take(f), want);
}

/* b64 - base64 of n octets into a static buffer */
static const char *b64(const void *p, size_t n)
{
	static char out[4096];
	assert_true(4 * ((n + 2) / 3) + 1 <= sizeof(out));
	sasl_b64_encode(p, n, out);
	return out;
}

/* plain_resp - "b64(authzid NUL authcid NUL pw)\r\n", a response line */
static const char *plain_resp(const char *z, const char *c, const char *pw)
{
	static char line[4200];
	unsigned char msg[1024];
	size_t zn = strlen(z), cn = strlen(c), pn = strlen(pw);
	assert_true(zn + cn + pn + 2 <= sizeof(msg));
	memcpy(msg, z, zn);
	msg[zn] = 0;
	memcpy(msg + zn + 1, c, cn);
	msg[zn + 1 + cn] = 0;
	memcpy(msg + zn + cn + 2, pw, pn);
	snprintf(line, sizeof(line), "%s\r\n", b64(msg, zn + cn + pn + 2));
	return line;
}

/* plain_line - "AUTH PLAIN <initial response>\r\n" */
static const char *plain_line(const char *z, const char *c, const char *pw)
{
	static char line[4300];
	snprintf(line, sizeof(line), "AUTH PLAIN %s", plain_resp(z, c, pw));
	return line;
}

/* buffer_holds - the session's whole input buffer (read or not) holds needle */
static int buffer_holds(const struct smtp_session *s, const char *needle)
{
	return memmem(s->in.data, s->in.cap, needle, strlen(needle)) != NULL;
}

/* ------------------------------------------------------------ secrets */

static void test_password_never_logged(void **state)
{
	char path[] = "/tmp/tern-auth-log-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	int saved = dup(2);
	assert_true(saved >= 0);
	fflush(stderr);
	assert_int_equal(dup2(fd, 2), 2);

	struct fake *f = tls_session(NULL, 0, SMTP_LISTENER_SUBMISSION);
	log_init("test", LOG_LEVEL_DEBUG); /* after fake_init, which sets CRIT */
	expect(f, "AUTH PLAIN AGFsaWNlAHdyb25n\r\n", AUTH_BAD); /* wrong */
	expect(f, "AUTH LOGIN YWxpY2U=\r\n", "334 UGFzc3dvcmQ6\r\n");
	expect(f, "d3Jvbmc=\r\n", AUTH_BAD);
	expect(f, "AUTH PLAIN " PLAIN_ALICE "\r\n", AUTH_OK);
	log_init("test", LOG_LEVEL_CRIT);
	done(f);

	fflush(stderr);
	assert_int_equal(dup2(saved, 2), 2);
	close(saved);
	char buf[16384];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	assert_true(n > 0);
	buf[n] = '\0';
	/* the user name and outcome are logged, never the password, not
	 * even in base64 */
	assert_non_null(strstr(buf, "event=auth"));
	assert_non_null(strstr(buf, "user=alice"));
	assert_non_null(strstr(buf, "result=failed"));
	assert_non_null(strstr(buf, "result=ok"));
	assert_non_null(strstr(buf, "account=alice@example.test"));
	assert_null(strstr(buf, "secret"));
	assert_null(strstr(buf, "wrong"));
	assert_null(strstr(buf, "c2VjcmV0"));
	assert_null(strstr(buf, "d3Jvbmc"));
	assert_null(strstr(buf, "AGFsaWNl"));
}

static void test_input_buffer_wiped(void **state)
{
	struct fake *f = tls_session(NULL, 0, SMTP_LISTENER_MX);
	f->auth_deferred = 1;
	/* the initial response, with pipelined input behind it */
	fake_send(f, "AUTH PLAIN " PLAIN_ALICE "\r\nNOOP\r\n");
	assert_string_equal(fake_take(f), "");
	assert_int_equal(f->nauth_checks, 1);
	assert_string_equal(f->last_auth_pass, "secret");
	assert_false(buffer_holds(f->s, "AGFsaWNl"));
	assert_false(buffer_holds(f->s, "secret"));
	assert_true(buffer_holds(f->s, "NOOP")); /* still to be read */
	fake_auth_finish(f, -100, NULL);
	assert_string_equal(fake_take(f), AUTH_OK "250 2.0.0 Ok\r\n");
	done(f);

	/* LOGIN: both response lines, split across reads */
	f = tls_session(NULL, 0, SMTP_LISTENER_MX);
	expect(f, "AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n");
	expect(f, "YWxpY2U=\r\n", "334 UGFzc3dvcmQ6\r\n");
	fake_send(f, "c2Vj");
	assert_string_equal(fake_take(f), "");
	expect(f, "cmV0\r\n", AUTH_OK);
	assert_false(buffer_holds(f->s, "c2Vj"));
	assert_false(buffer_holds(f->s, "cmV0"));
	assert_false(buffer_holds(f->s, "YWxpY2U="));
	/* the login name is forgotten once the exchange is over */
	assert_int_equal(f->s->auth_login_user[0], 0);
	done(f);

	/* a refused AUTH line (no TLS) is wiped too */
	struct fake g;
	assert_int_equal(fake_init(&g, NULL, 0), 0);
	fake_start(&g, 0);
	fake_send(&g, "EHLO c.example\r\nAUTH PLAIN " PLAIN_ALICE "\r\n");
	assert_non_null(strstr(fake_take(&g), "538 5.7.11"));
	assert_false(buffer_holds(g.s, "AGFsaWNl"));
	assert_int_equal(g.nauth_checks, 0);
	fake_fini(&g);
}

/* ----------------------------------------------------- daemon's answer */

static void test_auth_done_values(void **state)
{
	struct fake *f = tls_session(NULL, 0, SMTP_LISTENER_MX);
	/* an answer with nothing in flight is ignored */
	smtp_session_auth_done(f->s, SMTP_AUTH_OK, "alice@example.test");
	assert_string_equal(fake_take(f), "");
	assert_null(smtp_session_auth_user(f->s));

	f->auth_deferred = 1;
	fake_send(f, "AUTH PLAIN " PLAIN_ALICE "\r\n");
	assert_string_equal(smtp_session_state_str(f->s), "auth-wait");
	assert_false(smtp_session_wants_input(f->s));
	f->auth_pending = 0;
	/* an unknown value is a temporary failure */
	smtp_session_auth_done(f->s, 7, "alice@example.test");
	assert_string_equal(fake_take(f), "454 4.7.0 Temporary authentication failure\r\n");
	assert_null(smtp_session_auth_user(f->s));
	assert_true(smtp_session_wants_input(f->s));
	/* a second answer is ignored */
	smtp_session_auth_done(f->s, SMTP_AUTH_OK, "alice@example.test");
	assert_string_equal(fake_take(f), "");

	/* OK without an account: the user name as sent */
	fake_send(f, plain_line("", "alice", "whatever"));
	f->auth_pending = 0;
	smtp_session_auth_done(f->s, SMTP_AUTH_OK, NULL);
	assert_string_equal(fake_take(f), AUTH_OK);
	assert_string_equal(smtp_session_auth_user(f->s), "alice");
	done(f);

	/* an unusable account falls back to the user, and an unusable user
	 * (spaces, controls) is a temporary failure */
	f = tls_session(NULL, 0, SMTP_LISTENER_MX);
	f->auth_deferred = 1;
	fake_send(f, plain_line("", "a b", "x"));
	f->auth_pending = 0;
	smtp_session_auth_done(f->s, SMTP_AUTH_OK, "bad\r\naccount");
	assert_string_equal(fake_take(f), "454 4.7.0 Temporary authentication failure\r\n");
	assert_null(smtp_session_auth_user(f->s));
	fake_send(f, plain_line("", "bob", "x"));
	f->auth_pending = 0;
	smtp_session_auth_done(f->s, SMTP_AUTH_OK, "");
	assert_string_equal(fake_take(f), AUTH_OK);
	assert_string_equal(smtp_session_auth_user(f->s), "bob");
	done(f);

	assert_string_equal(smtp_auth_result_str(SMTP_AUTH_OK), "ok");
	assert_string_equal(smtp_auth_result_str(SMTP_AUTH_FAIL), "failed");
	assert_string_equal(smtp_auth_result_str(SMTP_AUTH_LOCKED), "locked");
	assert_string_equal(smtp_auth_result_str(SMTP_AUTH_TEMPFAIL), "tempfail");
	assert_string_equal(smtp_auth_result_str(42), "tempfail");
}

static void test_deferred_waits(void **state)
{
	/* shutdown during the check: the answer first, then 421 */
	struct fake *f = tls_session(NULL, 0, SMTP_LISTENER_MX);
	f->auth_deferred = 1;
	fake_send(f, "AUTH PLAIN " PLAIN_ALICE "\r\n");
	smtp_session_shutdown(f->s);
	assert_string_equal(fake_take(f), "");
	assert_false(smtp_session_closed(f->s));
	fake_auth_finish(f, -100, NULL);
	assert_string_equal(fake_take(f), AUTH_OK "421 4.3.2 Service shutting down, closing connection\r\n");
	assert_true(smtp_session_closed(f->s));
	assert_int_equal(f->nclose, 1);
	done(f);

	/* input beyond the buffer while waiting: 421 4.3.0 after the answer */
	f = tls_session(NULL, 0, SMTP_LISTENER_MX);
	f->auth_deferred = 1;
	fake_send(f, "AUTH PLAIN " PLAIN_ALICE "\r\n");
	char *big = malloc(SMTP_SESSION_INPUT_MAX + 100);
	assert_non_null(big);
	memset(big, 'N', SMTP_SESSION_INPUT_MAX + 100);
	fake_sendn(f, big, SMTP_SESSION_INPUT_MAX + 100);
	free(big);
	assert_string_equal(fake_take(f), "");
	fake_auth_finish(f, SMTP_AUTH_FAIL, NULL);
	assert_string_equal(fake_take(f), AUTH_BAD "421 4.3.0 Out of resources, closing connection\r\n");
	assert_int_equal(f->nclose, 1);
	done(f);

	/* a synchronous lockout with pipelined commands behind: nothing after */
	f = tls_session(NULL, 0, SMTP_LISTENER_MX);
	f->auth_lockout_after = 1;
	f->auth_failures = 1;
	expect(f, "AUTH PLAIN " PLAIN_ALICE "\r\nNOOP\r\nQUIT\r\n",
	       "421 4.7.0 Too many authentication failures, closing connection\r\n");
	assert_int_equal(f->nclose, 1);
	assert_int_equal(f->nwrites, 3); /* greeting, EHLO, this batch */
	done(f);

	/* a deferred lockout after the client has gone */
	f = tls_session(NULL, 0, SMTP_LISTENER_MX);
	f->auth_deferred = 1;
	fake_send(f, "AUTH PLAIN " PLAIN_ALICE "\r\n");
	smtp_session_eof(f->s);
	smtp_session_timeout(f->s);
	assert_false(smtp_session_closed(f->s));
	fake_auth_finish(f, SMTP_AUTH_LOCKED, NULL);
	assert_string_equal(fake_take(f), "421 4.7.0 Too many authentication failures, closing connection\r\n");
	assert_int_equal(f->nclose, 1);
	done(f);
}

/* ------------------------------------------------------- hostile input */

static void test_field_limits(void **state)
{
	char f255[256], f256[257];
	memset(f255, 'u', 255);
	f255[255] = '\0';
	memset(f256, 'u', 256);
	f256[256] = '\0';
	struct fake *f = tls_session((const char *[]){"max_errors=0"}, 1, SMTP_LISTENER_MX);
	/* 255-octet fields are fine (RFC 4616 limit); the check decides.
	 * Too long for the AUTH command line (RFC 4954 4: the SMTP limit
	 * holds there): sent after the 334 */
	expect(f, plain_line(f255, f255, f255), "500 5.5.2 Line too long\r\n");
	expect(f, "AUTH PLAIN\r\n", "334 \r\n");
	expect(f, plain_resp(f255, f255, f255), AUTH_BAD);
	assert_int_equal(strlen(f->last_auth_user), 255);
	assert_int_equal(strlen(f->last_auth_pass), 255);
	/* 256 in any field is malformed, and never reaches the daemon */
	size_t before = f->nauth_checks;
	expect(f, plain_line("", f256, "pw"), MALFORMED);
	expect(f, plain_line("", "alice", f256), MALFORMED);
	expect(f, plain_line(f256, "alice", "pw"), MALFORMED);
	/* empty user or password */
	expect(f, plain_line("", "", "pw"), MALFORMED);
	expect(f, plain_line("", "alice", ""), MALFORMED);
	assert_int_equal(f->nauth_checks, before);
	/* an authzid other than the user: 535 without asking the daemon */
	expect(f, plain_line("bob", "alice", "secret"), AUTH_BAD);
	assert_int_equal(f->nauth_checks, before);

	/* LOGIN: 255 octets ok, 256 malformed, NUL inside malformed */
	char line[4200];
	expect(f, "AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n");
	snprintf(line, sizeof(line), "%s\r\n", b64(f255, 255));
	expect(f, line, "334 UGFzc3dvcmQ6\r\n");
	snprintf(line, sizeof(line), "%s\r\n", b64(f256, 256));
	expect(f, line, MALFORMED);
	expect(f, "AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n");
	snprintf(line, sizeof(line), "%s\r\n", b64("al\0ce", 5));
	expect(f, line, MALFORMED);
	expect(f, "AUTH LOGIN YWxpY2U=\r\n", "334 UGFzc3dvcmQ6\r\n");
	snprintf(line, sizeof(line), "%s\r\n", b64("sec\0ret", 7));
	expect(f, line, MALFORMED);
	assert_int_equal(f->nauth_checks, before);
	/* a password with odd octets reaches the daemon as it is */
	expect(f, "AUTH LOGIN YWxpY2U=\r\n", "334 UGFzc3dvcmQ6\r\n");
	snprintf(line, sizeof(line), "%s\r\n", b64("p\xff w\r\n%s", 8));
	expect(f, line, AUTH_BAD);
	assert_string_equal(f->last_auth_pass, "p\xff w\r\n%s");
	done(f);
}

static void test_response_line_limit(void **state)
{
	struct fake *f = tls_session((const char *[]){"max_errors=0"}, 1, SMTP_LISTENER_MX);
	size_t n = SMTP_AUTH_LINE_MAX;
	char *line = malloc(n + 3);
	assert_non_null(line);
	/* exactly the limit, its CRLF split across two reads: a line */
	memset(line, 'A', n);
	expect(f, "AUTH PLAIN\r\n", "334 \r\n");
	fake_sendn(f, line, n);
	assert_string_equal(fake_take(f), "");
	fake_send(f, "\r");
	assert_string_equal(fake_take(f), "");
	expect(f, "\n", MALFORMED);
	/* one more octet: 500 5.5.6 as soon as it is known, the rest skipped */
	expect(f, "AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n");
	fake_sendn(f, line, n);
	assert_string_equal(fake_take(f), "");
	fake_send(f, "A");
	assert_string_equal(fake_take(f), "500 5.5.6 Authentication exchange line is too long\r\n");
	assert_string_equal(smtp_session_state_str(f->s), "ready");
	fake_sendn(f, line, n);
	expect(f, "AUTH PLAIN " PLAIN_ALICE "\r\nNOOP\r\n", "250 2.0.0 Ok\r\n");
	assert_null(smtp_session_auth_user(f->s));
	expect(f, "AUTH PLAIN " PLAIN_ALICE "\r\n", AUTH_OK);
	free(line);
	assert_int_equal(f->nauth_checks, 1);
	done(f);
}

/* ------------------------------------------------- submission and MAIL */

static void test_submission_rules(void **state)
{
	/* even a trusted client must authenticate on a submission port */
	struct fake f;
	assert_int_equal(fake_init(&f, NULL, 0), 0);
	f.info.kind = SMTP_LISTENER_SUBMISSION;
	f.info.trusted = 1;
	fake_start(&f, 0);
	(void)fake_take(&f);
	fake_send(&f, "EHLO c.example\r\n");
	assert_null(strstr(fake_take(&f), "AUTH"));
	expect(&f, "MAIL FROM:<alice@example.test>\r\n", "530 5.7.0 Authentication required\r\n");
	expect(&f, "MAIL FROM:<>\r\n", "530 5.7.0 Authentication required\r\n");
	assert_int_equal(f.nrate_checks, 0);
	fake_fini(&f);

	/* the MX port: no AUTH needed; the rate check gets NULL */
	struct fake *g = tls_session(NULL, 0, SMTP_LISTENER_MX);
	expect(g, "MAIL FROM:<x@remote.example>\r\n", MAIL_OK);
	assert_string_equal(g->last_rate_account, "-");
	assert_int_equal(g->nsender_checks, 0);
	expect(g, "RCPT TO:<y@remote.example>\r\n", "554 5.7.1 Relay access denied\r\n");
	assert_int_equal(g->last_may_relay, 0);
	expect(g, "RSET\r\n", "250 2.0.0 Ok\r\n");
	expect(g, "AUTH PLAIN " PLAIN_ALICE "\r\n", AUTH_OK);
	/* the null sender is never an ownership question */
	expect(g, "MAIL FROM:<>\r\n", MAIL_OK);
	assert_int_equal(g->nsender_checks, 0);
	assert_string_equal(g->last_rate_account, "alice@example.test");
	expect(g, "RCPT TO:<y@remote.example>\r\n", "250 2.1.5 Ok\r\n");
	assert_int_equal(g->last_may_relay, 1);
	expect(g, "RSET\r\n", "250 2.0.0 Ok\r\n");
	/* a refused sender does not count against the rate */
	size_t rates = g->nrate_checks;
	expect(g, "MAIL FROM:<bob@example.test>\r\n",
	       "553 5.7.1 Sender address rejected: not owned by user alice@example.test\r\n");
	assert_int_equal(g->nrate_checks, rates);
	/* without a sender_check there is no ownership rule */
	g->ops.sender_check = NULL;
	expect(g, "MAIL FROM:<bob@example.test>\r\n", MAIL_OK);
	done(g);
}

static void test_starttls_forgets_auth(void **state)
{
	/* AUTH happens only under TLS, so STARTTLS never follows it; the
	 * session still drops any identity at the handshake (RFC 3207 4.2) */
	struct fake f;
	assert_int_equal(fake_init(&f, NULL, 0), 0);
	f.info.tls_available = 1;
	fake_start(&f, 0);
	fake_send(&f, "EHLO c.example\r\n");
	assert_null(strstr(fake_take(&f), "AUTH"));
	expect(&f, "STARTTLS\r\n", "220 2.0.0 Ready to start TLS\r\n");
	smtp_session_tls_done(f.s, "TLSv1.3");
	fake_send(&f, "EHLO c.example\r\n");
	assert_non_null(strstr(fake_take(&f), "250 AUTH PLAIN LOGIN\r\n"));
	expect(&f, "AUTH PLAIN " PLAIN_ALICE "\r\n", AUTH_OK);
	fake_send(&f, "EHLO c.example\r\n");
	(void)fake_take(&f);
	/* EHLO again does not undo AUTH (RFC 4954 4) */
	assert_string_equal(smtp_session_auth_user(f.s), "alice@example.test");
	fake_fini(&f);
}

/* ---------------------------------------------- lookup_sender_owned */

static void test_sender_owned(void **state)
{
	static const char users[] = "alice@example.test:x\nbob@example.test:x\nAnn@Other.test:x\n";
	char aliases[4096];
	int n = snprintf(aliases, sizeof(aliases),
			 "sales@example.test: alice@example.test, bob@example.test\n"
			 "info@example.test: sales@example.test\n"
			 "Staff@example.test: list+alice@example.test\n"
			 "list@example.test: alice+lists@example.test\n"
			 "fwd@example.test: carol@remote.example\n"
			 "loop1@example.test: loop2@example.test\n"
			 "loop2@example.test: loop1@example.test\n"
			 "self@example.test: self@example.test, alice@example.test\n"
			 "d@example.test: sales@example.test, info@example.test, bob@example.test\n");
	/* a chain deeper than the alias depth limit */
	for (int i = 0; i < 14; i++) {
		if (i == 13)
			n += snprintf(aliases + n, sizeof(aliases) - (size_t)n,
				      "c13@example.test: alice@example.test\n");
		else
			n += snprintf(aliases + n, sizeof(aliases) - (size_t)n,
				      "c%d@example.test: c%d@example.test\n", i, i + 1);
	}
	struct strbuf errs;
	strbuf_init(&errs);
	struct lookup_tables *t = lookup_load_text(users, sizeof(users) - 1, aliases, (size_t)n, &errs);
	if (t == NULL)
		fail_msg("%s", errs.s);
	strbuf_free(&errs);
	const char *a = "alice@example.test";
	assert_true(lookup_sender_owned(t, a, "alice@example.test"));
	assert_true(lookup_sender_owned(t, a, "ALICE@EXAMPLE.test"));
	assert_true(lookup_sender_owned(t, a, "alice+x@example.test"));
	assert_true(lookup_sender_owned(t, a, "alice+@example.test"));
	assert_true(lookup_sender_owned(t, a, "sales@example.test"));
	assert_true(lookup_sender_owned(t, a, "SALES+tag@example.test"));
	assert_true(lookup_sender_owned(t, a, "info@example.test"));
	assert_true(lookup_sender_owned(t, a, "staff@example.test")); /* via list, alice+lists */
	assert_true(lookup_sender_owned(t, a, "self@example.test"));
	assert_true(lookup_sender_owned(t, a, "d@example.test"));
	assert_true(lookup_sender_owned(t, "bob@example.test", "info@example.test"));
	assert_true(lookup_sender_owned(t, "ann@other.test", "Ann@Other.test"));
	assert_true(lookup_sender_owned(t, a, "c10@example.test")); /* 4 levels */

	assert_false(lookup_sender_owned(t, a, "bob@example.test"));
	assert_false(lookup_sender_owned(t, a, "bob+alice@example.test"));
	assert_false(lookup_sender_owned(t, a, "alice@example.test.evil"));
	assert_false(lookup_sender_owned(t, a, "alice@remote.example"));
	assert_false(lookup_sender_owned(t, a, "alicex@example.test"));
	assert_false(lookup_sender_owned(t, a, "+alice@example.test"));
	assert_false(lookup_sender_owned(t, a, "ali@example.test"));
	assert_false(lookup_sender_owned(t, a, "fwd@example.test"));
	assert_false(lookup_sender_owned(t, a, "loop1@example.test"));
	assert_false(lookup_sender_owned(t, a, "c0@example.test")); /* too deep */
	assert_false(lookup_sender_owned(t, "bob@example.test", "staff@example.test"));
	assert_false(lookup_sender_owned(t, a, ""));
	assert_false(lookup_sender_owned(t, a, "@"));
	assert_false(lookup_sender_owned(t, a, "alice"));
	assert_false(lookup_sender_owned(t, "", "alice@example.test"));
	assert_false(lookup_sender_owned(t, NULL, "alice@example.test"));
	assert_false(lookup_sender_owned(t, a, NULL));
	/* the account need not be in the tables: only the rule is asked */
	assert_true(lookup_sender_owned(NULL, a, "Alice+Tag@example.test"));
	assert_false(lookup_sender_owned(NULL, a, "sales@example.test"));
	lookup_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_password_never_logged),
		cmocka_unit_test(test_input_buffer_wiped),
		cmocka_unit_test(test_auth_done_values),
		cmocka_unit_test(test_deferred_waits),
		cmocka_unit_test(test_field_limits),
		cmocka_unit_test(test_response_line_limit),
		cmocka_unit_test(test_submission_rules),
		cmocka_unit_test(test_starttls_forgets_auth),
		cmocka_unit_test(test_sender_owned),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
