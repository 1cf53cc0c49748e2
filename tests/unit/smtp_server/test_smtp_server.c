/*
 * test_smtp_server - the SMTP session state machine against fake ops:
 * every verb, order rules, MAIL/RCPT parameters, DATA and BDAT content,
 * PIPELINING batches, deferred commits, limits and hostile input.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp_server/fake_ops.h"

#define GREETING "220 mx.example.test ESMTP Tern\r\n"
#define EHLO_REPLY                                                                                 \
	"250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 26214400\r\n250-8BITMIME\r\n"           \
	"250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-BINARYMIME\r\n250 DSN\r\n"
#define MAIL_OK "250 2.1.0 Ok\r\n"
#define RCPT_OK "250 2.1.5 Ok\r\n"
#define OK "250 2.0.0 Ok\r\n"
#define GO "354 End data with <CR><LF>.<CR><LF>\r\n"

/* assert_prefix - r starts with prefix */
#define assert_prefix(r, prefix)                                                                   \
	do {                                                                                       \
		if (strncmp((r), (prefix), strlen(prefix)) != 0)                                   \
			fail_msg("expected prefix \"%s\", got \"%s\"", (prefix), (r));             \
	} while (0)

/* setup_with - a fake world with overrides, greeted, EHLO done */
static struct fake *setup_with(const char *const *ov, size_t n, int ehlo)
{
	struct fake *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_int_equal(fake_init(f, ov, n), 0);
	fake_start(f, 0);
	assert_non_null(f->s);
	assert_string_equal(fake_take(f), GREETING);
	if (ehlo) {
		fake_send(f, "EHLO client.example\r\n");
		const char *r = fake_take(f);
		if (n == 0)
			assert_string_equal(r, EHLO_REPLY);
		else
			assert_prefix(r, "250-mx.example.test\r\n250-PIPELINING\r\n");
	}
	return f;
}

static struct fake *setup(void)
{
	return setup_with(NULL, 0, 1);
}

static void teardown(struct fake *f)
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

/* content_after_received - the stored content past our Received header */
static const char *content_after_received(struct fake *f)
{
	const char *c = f->last_content.s;
	assert_non_null(c);
	assert_true(strncmp(c, "Received: ", 10) == 0);
	/* the header ends at the first CRLF not followed by a tab */
	const char *p = c;
	for (;;) {
		const char *e = strstr(p, "\r\n");
		assert_non_null(e);
		if (e[2] != '\t')
			return e + 2;
		p = e + 2;
	}
}

/* ------------------------------------------------------------ greeting */

static void test_greeting_and_ehlo(void **state)
{
	struct fake *f = setup();
	expect(f, "HELO client.example\r\n", "250 mx.example.test\r\n");
	expect(f, "EHLO\r\n", "501 5.5.4 Syntax error: hostname expected\r\n");
	expect(f, "HELO \r\n", "501 5.5.4 Syntax error: hostname expected\r\n");
	expect(f, "ehlo again.example\r\n", EHLO_REPLY);
	assert_string_equal(smtp_session_state_str(f->s), "ready");
	teardown(f);
}

static void test_pregreet(void **state)
{
	struct fake f;
	assert_int_equal(fake_init(&f, NULL, 0), 0);
	fake_start(&f, 1);
	assert_string_equal(fake_take(&f),
			    "554 5.5.0 Protocol error: client talked before the greeting\r\n");
	assert_true(smtp_session_closed(f.s));
	assert_int_equal(f.nclose, 1);
	assert_false(smtp_session_wants_input(f.s));
	fake_send(&f, "EHLO x\r\n");
	assert_string_equal(fake_take(&f), "");
	fake_fini(&f);
}

static void test_input_before_start(void **state)
{
	struct fake f;
	assert_int_equal(fake_init(&f, NULL, 0), 0);
	f.s = smtp_session_new(&f.conf, &f.info, &f.ops, &f);
	smtp_session_input(f.s, "NOOP\r\n", 6);
	assert_string_equal(fake_take(&f), "");
	smtp_session_start(f.s, 0);
	assert_string_equal(fake_take(&f), GREETING OK);
	assert_int_equal(f.nwrites, 1);
	fake_fini(&f);
}

/* ---------------------------------------------------------- simple verbs */

static void test_simple_verbs(void **state)
{
	struct fake *f = setup();
	expect(f, "NOOP\r\n", OK);
	expect(f, "NOOP anything\r\n", OK);
	expect(f, "RSET\r\n", OK);
	expect(f, "VRFY alice\r\n",
	       "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n");
	expect(f, "EXPN staff\r\n", "502 5.5.1 Command not implemented\r\n");
	expect(f, "HELP\r\n", "214 2.0.0 See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)\r\n");
	expect(f, "STARTTLS\r\n", "502 5.5.1 Command not implemented\r\n");
	/* no TLS: AUTH is refused, never a password in clear text */
	expect(f, "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
	       "538 5.7.11 Encryption required for requested authentication mechanism\r\n");
	expect(f, "FOO bar\r\n", "500 5.5.1 Command unrecognized\r\n");
	expect(f, "\r\n", "500 5.5.1 Command unrecognized\r\n");
	expect(f, "QUIT\r\n", "221 2.0.0 Bye\r\n");
	assert_true(smtp_session_closed(f->s));
	assert_int_equal(f->nclose, 1);
	fake_send(f, "NOOP\r\n");
	assert_string_equal(fake_take(f), "");
	teardown(f);
}

/* ------------------------------------------------------------- order */

static void test_order_errors(void **state)
{
	const char *ov[] = {"max_errors=0"};
	struct fake *f = setup_with(ov, 1, 0);
	expect(f, "MAIL FROM:<a@b.example>\r\n",
	       "503 5.5.1 Bad sequence of commands: send HELO/EHLO first\r\n");
	expect(f, "RCPT TO:<alice@example.test>\r\n",
	       "503 5.5.1 Bad sequence of commands: need MAIL before RCPT\r\n");
	expect(f, "DATA\r\n", "503 5.5.1 Bad sequence of commands: need MAIL command\r\n");
	expect(f, "EHLO c.example\r\n", EHLO_REPLY);
	expect(f, "DATA\r\n", "503 5.5.1 Bad sequence of commands: need MAIL command\r\n");
	expect(f, "MAIL FROM:<a@b.example>\r\n", MAIL_OK);
	expect(f, "MAIL FROM:<a@b.example>\r\n",
	       "503 5.5.1 Bad sequence of commands: nested MAIL command\r\n");
	expect(f, "DATA\r\n", "554 5.5.1 No valid recipients\r\n");
	expect(f, "RCPT TO:<nobody@example.test>\r\n",
	       "550 5.1.1 Recipient address rejected: User unknown\r\n");
	expect(f, "DATA\r\n", "554 5.5.1 No valid recipients\r\n");
	expect(f, "RCPT TO:<alice@example.test>\r\n", RCPT_OK);
	expect(f, "DATA now\r\n", "501 5.5.4 Syntax error: no argument allowed\r\n");
	/* EHLO resets the transaction */
	expect(f, "EHLO c.example\r\n", EHLO_REPLY);
	expect(f, "RCPT TO:<alice@example.test>\r\n",
	       "503 5.5.1 Bad sequence of commands: need MAIL before RCPT\r\n");
	/* RSET too */
	expect(f, "MAIL FROM:<>\r\nRCPT TO:<bob@example.test>\r\nRSET\r\nDATA\r\n",
	       MAIL_OK RCPT_OK OK "503 5.5.1 Bad sequence of commands: need MAIL command\r\n");
	assert_int_equal(f->nopen, 0);
	teardown(f);
}

/* ------------------------------------------------------------- DATA */

static void test_data_roundtrip(void **state)
{
	struct fake *f = setup();
	expect(f, "MAIL FROM:<sender@remote.example> BODY=8BITMIME\r\n", MAIL_OK);
	expect(f, "RCPT TO:<alice@example.test>\r\n", RCPT_OK);
	expect(f, "DATA\r\n", GO);
	assert_string_equal(smtp_session_state_str(f->s), "data");
	assert_int_equal(smtp_session_timeout_secs(f->s), 180);
	fake_send(f, "Subject: hi\r\n\r\n..leading dot\r\n.\r\n");
	assert_string_equal(fake_take(f), "250 2.0.0 Ok: queued as Q0001\r\n");
	assert_int_equal(smtp_session_timeout_secs(f->s), 300);
	assert_int_equal(f->ncommit, 1);
	assert_int_equal(f->naccepted, 1);
	assert_int_equal(f->nabort, 0);
	const char *c = f->last_content.s;
	const char *want_prefix = "Received: from client.example (unknown [192.0.2.1])\r\n"
				  "\tby mx.example.test (Tern) with ESMTP id Q0001\r\n"
				  "\tfor <alice@example.test>; ";
	assert_true(strncmp(c, want_prefix, strlen(want_prefix)) == 0);
	/* a date like "Mon, 02 Jan 2006 15:04:05 +0100" then CRLF */
	const char *date = c + strlen(want_prefix);
	const char *eol = strstr(date, "\r\n");
	assert_non_null(eol);
	assert_int_equal(eol - date, 31);
	assert_true(date[3] == ',' && (date[26] == '+' || date[26] == '-'));
	assert_string_equal(eol + 2, "Subject: hi\r\n\r\n.leading dot\r\n");
	/* the envelope */
	assert_string_equal(f->last_env.sender, "sender@remote.example");
	assert_string_equal(f->last_env.helo, "client.example");
	assert_string_equal(f->last_env.client_addr, "192.0.2.1");
	assert_int_equal(f->last_env.body, ENV_BODY_8BITMIME);
	assert_int_equal(f->last_env.nrcpts, 1);
	assert_string_equal(f->last_env.rcpts[0].addr, "alice@example.test");
	assert_string_equal(f->last_env.qid, "Q0001");
	assert_int_equal(f->last_env.content_size, f->last_content.len);
	assert_true(f->last_env.arrival > 0);
	/* the transaction was reset: a new one works */
	expect(f, "RCPT TO:<alice@example.test>\r\n",
	       "503 5.5.1 Bad sequence of commands: need MAIL before RCPT\r\n");
	expect(f, "MAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
		  "DATA\r\n",
	       MAIL_OK RCPT_OK RCPT_OK GO);
	expect(f, ".\r\n", "250 2.0.0 Ok: queued as Q0002\r\n");
	/* two recipients: no "for" clause; empty content */
	assert_non_null(strstr(f->last_content.s, "with ESMTP id Q0002;\r\n\t"));
	assert_null(strstr(f->last_content.s, "for <"));
	assert_string_equal(content_after_received(f), "");
	assert_string_equal(f->last_env.sender, "");
	assert_int_equal(f->last_env.nrcpts, 2);
	teardown(f);
}

static void test_data_helo_proto_and_sanitising(void **state)
{
	struct fake *f = setup_with(NULL, 0, 0);
	expect(f, "HELO evil;host(x)\"y\r\n", "250 mx.example.test\r\n");
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO);
	expect(f, "x\r\n.\r\n", "250 2.0.0 Ok: queued as Q0001\r\n");
	const char *want = "Received: from evil?host?x??y (unknown [192.0.2.1])\r\n"
			   "\tby mx.example.test (Tern) with SMTP id Q0001\r\n";
	assert_true(strncmp(f->last_content.s, want, strlen(want)) == 0);
	/* params after HELO are refused */
	expect(f, "MAIL FROM:<a@remote.example> SIZE=10\r\n", "555 5.5.4 Unsupported parameter: SIZE\r\n");
	teardown(f);
}

static void test_data_dot_stuffing(void **state)
{
	struct fake *f = setup();
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO);
	/* split across calls at awkward points: the end marker arrives in parts */
	fake_send(f, "line1\r\n.");
	fake_send(f, ".two\r\n..\r\n");
	fake_send(f, "...\r\n");
	fake_send(f, ".x\r");
	fake_send(f, "\n\r");
	assert_string_equal(fake_take(f), "");
	fake_send(f, "\n.");
	fake_send(f, "\r");
	assert_string_equal(fake_take(f), "");
	fake_send(f, "\n");
	assert_string_equal(fake_take(f), "250 2.0.0 Ok: queued as Q0001\r\n");
	assert_string_equal(content_after_received(f), "line1\r\n.two\r\n.\r\n..\r\nx\r\n\r\n");
	teardown(f);
}

static void test_data_bare_lf_smuggling(void **state)
{
	struct fake *f = setup();
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO);
	/* a smuggled end and command behind a bare LF: content, not commands */
	fake_send(f, "Subject: x\r\n\r\nhello\n.\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<bob@example.test>\r\n");
	assert_string_equal(fake_take(f), "");
	assert_string_equal(smtp_session_state_str(f->s), "data");
	fake_send(f, "\r\n.\r\nNOOP\r\n");
	assert_string_equal(fake_take(f),
			    "550 5.6.0 Message refused: bare <LF> in message content (RFC 5321 2.3.8)\r\n" OK);
	assert_int_equal(f->ncommit, 0);
	assert_int_equal(f->nabort, 1);
	/* bare CR likewise */
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO);
	expect(f, "a\rb\r\n.\r\n",
	       "550 5.6.0 Message refused: bare <CR> in message content (RFC 5321 2.3.8)\r\n");
	/* "\r\n.\n" is not the end either */
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO);
	expect(f, "a\r\n.\nQUIT\r\n", "");
	assert_false(smtp_session_closed(f->s));
	expect(f, ".\r\n", "550 5.6.0 Message refused: bare <LF> in message content (RFC 5321 2.3.8)\r\n");
	assert_int_equal(f->nabort, 3);
	assert_int_equal(f->ncommit, 0);
	teardown(f);
}

static void test_data_long_line_and_nul(void **state)
{
	struct fake *f = setup();
	char line[1100];
	memset(line, 'a', sizeof(line));
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO);
	fake_sendn(f, line, 999); /* 999 + CRLF = 1001 octets */
	expect(f, "\r\n.\r\n", "500 5.5.2 Line too long\r\n");
	assert_int_equal(f->nabort, 1);
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO);
	fake_sendn(f, line, 998); /* exactly 1000 with CRLF: fine */
	expect(f, "\r\n.\r\n", "250 2.0.0 Ok: queued as Q0002\r\n");
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO);
	fake_sendn(f, "a\0b\r\n.\r\n", 8);
	assert_string_equal(fake_take(f),
			    "550 5.6.0 Message refused: NUL character in message content\r\n");
	teardown(f);
}

static void test_data_size_limit(void **state)
{
	const char *ov[] = {"max_message_size=1024"};
	struct fake *f = setup_with(ov, 1, 0);
	expect(f, "EHLO c.example\r\n",
	       "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 1024\r\n250-8BITMIME\r\n"
	       "250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-BINARYMIME\r\n250 DSN\r\n");
	expect(f, "MAIL FROM:<a@remote.example> SIZE=1025\r\n",
	       "552 5.3.4 Message size exceeds fixed limit\r\n");
	expect(f, "MAIL FROM:<a@remote.example> SIZE=1024\r\n", MAIL_OK);
	expect(f, "RCPT TO:<alice@example.test>\r\nDATA\r\n", RCPT_OK GO);
	char body[100];
	memset(body, 'x', sizeof(body));
	for (int i = 0; i < 11; i++) { /* 1100 octets */
		fake_sendn(f, body, 98);
		fake_send(f, "\r\n");
	}
	expect(f, ".\r\n", "552 5.3.4 Message size exceeds fixed limit\r\n");
	assert_int_equal(f->ncommit, 0);
	assert_int_equal(f->nabort, 1);
	/* exactly 1024 octets of content is fine (the Received header is ours) */
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO);
	for (int i = 0; i < 10; i++) {
		fake_sendn(f, body, 98);
		fake_send(f, "\r\n");
	}
	fake_sendn(f, body, 22);
	expect(f, "\r\n.\r\n", "250 2.0.0 Ok: queued as Q0002\r\n");
	assert_int_equal(strlen(content_after_received(f)), 1024);
	teardown(f);
}

/* make_received - n Received: header fields then a body */
static void send_received(struct fake *f, int n)
{
	for (int i = 0; i < n; i++)
		fake_send(f, i % 2 ? "received: from x by y; date\r\n"
				   : "Received: from a\r\n\tby b; date\r\n");
	fake_send(f, "Subject: loop\r\n\r\nReceived: in the body does not count\r\n");
}

static void test_data_loop_detection(void **state)
{
	struct fake *f = setup();
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO);
	send_received(f, 51);
	expect(f, ".\r\n", "554 5.4.6 Too many Received headers: mail loop\r\n");
	assert_int_equal(f->nabort, 1);
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO);
	send_received(f, 50);
	expect(f, ".\r\n", "250 2.0.0 Ok: queued as Q0002\r\n");
	teardown(f);
}

static void test_queue_failures(void **state)
{
	struct fake *f = setup();
	f->open_errno = ENOSPC;
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK "452 4.3.1 Insufficient system storage\r\n");
	f->open_errno = EACCES;
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK "451 4.3.0 Temporary failure: message not queued\r\n");
	f->open_errno = 0;
	/* a write error is remembered and the content still read to its end */
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO);
	f->write_errno = ENOSPC;
	expect(f, "x\r\n.\r\n", "452 4.3.1 Insufficient system storage\r\n");
	assert_int_equal(f->nabort, 1);
	f->write_errno = 0;
	/* commit failures */
	f->commit_status = -1;
	f->commit_errno = ENOSPC;
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO);
	expect(f, "x\r\n.\r\n", "452 4.3.1 Insufficient system storage\r\n");
	f->commit_errno = EIO;
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO);
	expect(f, "x\r\n.\r\n", "451 4.3.0 Temporary failure: message not queued\r\n");
	assert_int_equal(f->naccepted, 0);
	/* the transaction is over either way */
	expect(f, "RCPT TO:<alice@example.test>\r\n",
	       "503 5.5.1 Bad sequence of commands: need MAIL before RCPT\r\n");
	teardown(f);
}

/* ------------------------------------------------------ MAIL parameters */

static void test_mail_params(void **state)
{
	const char *ov[] = {"max_errors=0"};
	struct fake *f = setup_with(ov, 1, 1);
	struct {
		const char *cmd, *reply;
	} cases[] = {
		{"MAIL FROM:<a@remote.example> SIZE=1000", MAIL_OK},
		{"MAIL FROM:<a@remote.example> SIZE=26214401", "552 5.3.4 Message size exceeds fixed limit\r\n"},
		{"MAIL FROM:<a@remote.example> SIZE=12x", "501 5.5.4 Bad parameter value: SIZE\r\n"},
		{"MAIL FROM:<a@remote.example> SIZE", "501 5.5.4 Bad parameter value: SIZE\r\n"},
		{"MAIL FROM:<a@remote.example> SIZE=99999999999999999999999", "501 5.5.4 Bad parameter value: SIZE\r\n"},
		{"MAIL FROM:<a@remote.example> BODY=7BIT", MAIL_OK},
		{"MAIL FROM:<a@remote.example> body=8bitmime", MAIL_OK},
		{"MAIL FROM:<a@remote.example> BODY=BINARYMIME", MAIL_OK},
		{"MAIL FROM:<a@remote.example> BODY=9BIT", "501 5.5.4 Bad parameter value: BODY\r\n"},
		{"MAIL FROM:<a@remote.example> SMTPUTF8", MAIL_OK},
		{"MAIL FROM:<a@remote.example> SMTPUTF8=yes", "501 5.5.4 Bad parameter value: SMTPUTF8\r\n"},
		{"MAIL FROM:<a@remote.example> RET=FULL", MAIL_OK},
		{"MAIL FROM:<a@remote.example> RET=HDRS", MAIL_OK},
		{"MAIL FROM:<a@remote.example> RET=ALL", "501 5.5.4 Bad parameter value: RET\r\n"},
		{"MAIL FROM:<a@remote.example> ENVID=abc+2Bdef", MAIL_OK},
		{"MAIL FROM:<a@remote.example> ENVID=abc+2x", "501 5.5.4 Bad parameter value: ENVID\r\n"},
		{"MAIL FROM:<a@remote.example> ENVID=abc+", "501 5.5.4 Bad parameter value: ENVID\r\n"},
		{"MAIL FROM:<a@remote.example> AUTH=<>", MAIL_OK},
		{"MAIL FROM:<a@remote.example> SIZE=1 SIZE=2", "501 5.5.4 Bad parameter value: SIZE\r\n"},
		{"MAIL FROM:<a@remote.example> XFOO=1", "555 5.5.4 Unsupported parameter: XFOO\r\n"},
		{"MAIL FROM:<>", MAIL_OK},
		{"MAIL FROM:<j\xc3\xb6rg@remote.example>", "553 5.6.7 SMTPUTF8 needed for this address\r\n"},
		{"MAIL FROM:<j\xc3\xb6rg@remote.example> SMTPUTF8", MAIL_OK},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char buf[256];
		snprintf(buf, sizeof(buf), "%s\r\n", cases[i].cmd);
		fake_send(f, buf);
		const char *got = fake_take(f);
		if (strcmp(got, cases[i].reply) != 0)
			fail_msg("%s: got %s", cases[i].cmd, got);
		fake_send(f, "RSET\r\n");
		assert_string_equal(fake_take(f), OK);
	}
	/* the values reach the envelope */
	expect(f, "MAIL FROM:<a@remote.example> RET=HDRS ENVID=QQ+2B1 BODY=8BITMIME SMTPUTF8\r\n"
		  "RCPT TO:<alice@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO);
	expect(f, ".\r\n", "250 2.0.0 Ok: queued as Q0001\r\n");
	assert_int_equal(f->last_env.ret, ENV_RET_HDRS);
	assert_string_equal(f->last_env.envid, "QQ+2B1");
	assert_int_equal(f->last_env.body, ENV_BODY_8BITMIME);
	assert_int_equal(f->last_env.smtputf8, 1);
	assert_non_null(strstr(f->last_content.s, " with UTF8SMTP id Q0001"));
	teardown(f);
}

static void test_mail_rcpt_syntax(void **state)
{
	struct fake *f = setup();
	fake_send(f, "MAIL FROM:<not an address>\r\n");
	const char *r = fake_take(f);
	assert_prefix(r, "501 5.1.7 Bad sender address syntax: ");
	fake_send(f, "MAIL FROM:a@b\r\n");
	r = fake_take(f);
	assert_prefix(r, "501 5.1.7 ");
	expect(f, "MAIL FROM:<a@remote.example>\r\n", MAIL_OK);
	fake_send(f, "RCPT TO:<@@>\r\n");
	r = fake_take(f);
	assert_prefix(r, "501 5.1.3 Bad recipient address syntax: ");
	fake_send(f, "RCPT TO:<>\r\n");
	r = fake_take(f);
	assert_prefix(r, "501 5.1.3 ");
	fake_send(f, "RCPT alice@example.test\r\n");
	r = fake_take(f);
	assert_prefix(r, "501 ");
	teardown(f);
}

/* ------------------------------------------------------ RCPT */

static void test_rcpt_verdicts_and_params(void **state)
{
	const char *ov[] = {"max_errors=0"};
	struct fake *f = setup_with(ov, 1, 1);
	expect(f, "MAIL FROM:<a@remote.example>\r\n", MAIL_OK);
	expect(f, "RCPT TO:<alice@example.test>\r\n", RCPT_OK);
	assert_int_equal(f->last_may_relay, 0);
	expect(f, "RCPT TO:<carol@example.test>\r\n",
	       "550 5.1.1 Recipient address rejected: User unknown\r\n");
	expect(f, "RCPT TO:<someone@elsewhere.example>\r\n", "554 5.7.1 Relay access denied\r\n");
	expect(f, "RCPT TO:<tempfail@example.test>\r\n",
	       "451 4.3.0 Temporary failure: message not queued\r\n");
	expect(f, "RCPT TO:<Postmaster>\r\n", RCPT_OK);
	expect(f, "RCPT TO:<bob@localhost> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;bob+40localhost\r\n",
	       RCPT_OK);
	assert_int_equal(f->last_notify, ENV_NOTIFY_SUCCESS | ENV_NOTIFY_FAILURE | ENV_NOTIFY_DELAY);
	assert_string_equal(f->last_orcpt, "rfc822;bob+40localhost");
	expect(f, "RCPT TO:<bob@localhost> NOTIFY=never\r\n", RCPT_OK);
	assert_int_equal(f->last_notify, ENV_NOTIFY_NEVER);
	expect(f, "RCPT TO:<bob@localhost> NOTIFY=NEVER,SUCCESS\r\n",
	       "501 5.5.4 Bad parameter value: NOTIFY\r\n");
	expect(f, "RCPT TO:<bob@localhost> NOTIFY=SOMETIMES\r\n",
	       "501 5.5.4 Bad parameter value: NOTIFY\r\n");
	expect(f, "RCPT TO:<bob@localhost> NOTIFY=SUCCESS,,DELAY\r\n",
	       "501 5.5.4 Bad parameter value: NOTIFY\r\n");
	expect(f, "RCPT TO:<bob@localhost> NOTIFY=DELAY,DELAY\r\n",
	       "501 5.5.4 Bad parameter value: NOTIFY\r\n");
	expect(f, "RCPT TO:<bob@localhost> ORCPT=rfc822\r\n", "501 5.5.4 Bad parameter value: ORCPT\r\n");
	expect(f, "RCPT TO:<bob@localhost> ORCPT=;x\r\n", "501 5.5.4 Bad parameter value: ORCPT\r\n");
	expect(f, "RCPT TO:<bob@localhost> ORCPT=rfc822;a+zz\r\n",
	       "501 5.5.4 Bad parameter value: ORCPT\r\n");
	expect(f, "RCPT TO:<bob@localhost> ORCPT=utf-8;b\\x{e9}@x\r\n", RCPT_OK);
	expect(f, "RCPT TO:<bob@localhost> XRCPT=1\r\n", "555 5.5.4 Unsupported parameter: XRCPT\r\n");
	expect(f, "RCPT TO:<b\xc3\xa9@example.test>\r\n", "553 5.6.7 SMTPUTF8 needed for this address\r\n");
	expect(f, "DATA\r\n", GO);
	expect(f, ".\r\n", "250 2.0.0 Ok: queued as Q0001\r\n");
	assert_int_equal(f->last_env.nrcpts, 3); /* alice, postmaster, bob (deduplicated) */
	/* a trusted client may relay */
	teardown(f);
	struct fake g;
	assert_int_equal(fake_init(&g, NULL, 0), 0);
	g.info.trusted = 1;
	fake_start(&g, 0);
	fake_send(&g, "EHLO c\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<x@elsewhere.example>\r\n");
	assert_string_equal(fake_take(&g), GREETING EHLO_REPLY MAIL_OK RCPT_OK);
	assert_int_equal(g.last_may_relay, 1);
	fake_fini(&g);
}

static void test_max_recipients(void **state)
{
	const char *ov[] = {"max_recipients=2"};
	struct fake *f = setup_with(ov, 1, 1);
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
		  "RCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
		  "RCPT TO:<postmaster@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK "550 5.1.1 Recipient address rejected: User unknown\r\n" RCPT_OK
			       "452 4.5.3 Too many recipients\r\n" GO);
	expect(f, ".\r\n", "250 2.0.0 Ok: queued as Q0001\r\n");
	assert_int_equal(f->last_env.nrcpts, 2);
	teardown(f);
}

/* ------------------------------------------------------------- BDAT */

static void test_bdat_chunks(void **state)
{
	struct fake *f = setup();
	expect(f, "MAIL FROM:<a@remote.example> BODY=BINARYMIME\r\nRCPT TO:<alice@example.test>\r\n",
	       MAIL_OK RCPT_OK);
	expect(f, "DATA\r\n", "503 5.5.1 BINARYMIME requires BDAT\r\n");
	/* octets are raw: a lone LF, a leading dot and "\r\n.\r\n" are content */
	fake_send(f, "BDAT 14\r\nSubject: a\n.\r");
	assert_string_equal(smtp_session_state_str(f->s), "bdat-chunk");
	assert_int_equal(smtp_session_timeout_secs(f->s), 180);
	assert_string_equal(fake_take(f), "");
	fake_send(f, "\n");
	assert_string_equal(fake_take(f), "250 2.0.0 14 octets received\r\n");
	assert_string_equal(smtp_session_state_str(f->s), "bdat");
	expect(f, "DATA\r\n", "503 5.5.1 Bad sequence of commands: DATA after BDAT\r\n");
	expect(f, "MAIL FROM:<b@remote.example>\r\n",
	       "503 5.5.1 Bad sequence of commands: nested MAIL command\r\n");
	expect(f, "BDAT 5\r\n\r\n.\r\nBDAT 0 LAST\r\n",
	       "250 2.0.0 5 octets received\r\n250 2.0.0 Ok: queued as Q0001\r\n");
	assert_string_equal(content_after_received(f), "Subject: a\n.\r\n\r\n.\r\n");
	assert_int_equal(f->last_env.body, ENV_BODY_BINARYMIME);
	/* one chunk with LAST, pipelined with the envelope */
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<bob@example.test>\r\nBDAT 3 LAST\r\nabcNOOP\r\n",
	       MAIL_OK RCPT_OK "250 2.0.0 Ok: queued as Q0002\r\n" OK);
	assert_string_equal(content_after_received(f), "abc");
	/* BDAT 0 LAST alone: an empty message */
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<bob@example.test>\r\nbdat 0 last\r\n",
	       MAIL_OK RCPT_OK "250 2.0.0 Ok: queued as Q0003\r\n");
	assert_string_equal(content_after_received(f), "");
	/* RSET between chunks aborts the open file */
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<bob@example.test>\r\nBDAT 2\r\nabRSET\r\n",
	       MAIL_OK RCPT_OK "250 2.0.0 2 octets received\r\n" OK);
	assert_int_equal(f->nabort, 1);
	teardown(f);
}

static void test_bdat_errors_consume_octets(void **state)
{
	const char *ov[] = {"max_message_size=1024", "max_errors=0"};
	char kb[1024];
	memset(kb, 'z', sizeof(kb));
	struct fake *f = setup_with(ov, 2, 1);
	/* no MAIL: the octets (which look like commands) are still consumed */
	expect(f, "BDAT 25\r\nMAIL FROM:<evil@x.test>\r\nNOOP\r\n",
	       "503 5.5.1 Bad sequence of commands: need MAIL and RCPT before BDAT\r\n" OK);
	/* MAIL but no RCPT */
	expect(f, "MAIL FROM:<a@remote.example>\r\nBDAT 4 LAST\r\nQUITNOOP\r\n",
	       MAIL_OK "554 5.5.1 No valid recipients\r\n" OK);
	assert_false(smtp_session_closed(f->s));
	/* the failed BDAT aborted the transaction */
	expect(f, "RCPT TO:<alice@example.test>\r\n",
	       "503 5.5.1 Bad sequence of commands: need MAIL before RCPT\r\n");
	/* over the size limit: consumed, 552, aborted; later chunks get 503 */
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT 600\r\n",
	       MAIL_OK RCPT_OK);
	fake_sendn(f, kb, 600);
	assert_string_equal(fake_take(f), "250 2.0.0 600 octets received\r\n");
	fake_send(f, "BDAT 500\r\n");
	fake_sendn(f, kb, 500);
	expect(f, "BDAT 2 LAST\r\nabNOOP\r\n",
	       "552 5.3.4 Message size exceeds fixed limit\r\n"
	       "503 5.5.1 Bad sequence of commands: need MAIL and RCPT before BDAT\r\n" OK);
	assert_int_equal(f->nabort, 1);
	assert_int_equal(f->ncommit, 0);
	/* a chunk larger than the limit on its own, split across reads */
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT 3000 LAST\r\n",
	       MAIL_OK RCPT_OK);
	fake_sendn(f, kb, 1000);
	fake_sendn(f, kb, 1000);
	assert_string_equal(fake_take(f), "");
	fake_sendn(f, kb, 1000);
	expect(f, "NOOP\r\n", "552 5.3.4 Message size exceeds fixed limit\r\n" OK);
	/* unreadable size: nothing can be consumed, just 501 */
	expect(f, "BDAT x\r\n", "501 5.5.4 Syntax error: BDAT chunk size expected\r\n");
	expect(f, "BDAT\r\n", "501 5.5.4 Syntax error: BDAT chunk size expected\r\n");
	expect(f, "BDAT -1\r\n", "501 5.5.4 Syntax error: BDAT chunk size expected\r\n");
	/* a size with junk after it: the octets are consumed, then 501 */
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT 3 FIRST\r\nabcNOOP\r\n",
	       MAIL_OK RCPT_OK "501 5.5.4 Syntax error: BDAT size [LAST] expected\r\n" OK);
	/* queue open failure: consumed, 452 */
	f->open_errno = ENOSPC;
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT 3 LAST\r\nabcNOOP\r\n",
	       MAIL_OK RCPT_OK "452 4.3.1 Insufficient system storage\r\n" OK);
	f->open_errno = 0;
	/* write failure in a chunk: consumed, 451, aborted */
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n", MAIL_OK RCPT_OK);
	f->write_errno = EIO;
	expect(f, "BDAT 3\r\nabcNOOP\r\n", "451 4.3.0 Temporary failure: message not queued\r\n" OK);
	f->write_errno = 0;
	assert_int_equal(f->ncommit, 0);
	teardown(f);
}

static void test_bdat_loop(void **state)
{
	struct fake *f = setup();
	struct strbuf hdr;
	strbuf_init(&hdr);
	for (int i = 0; i < 51; i++)
		strbuf_adds(&hdr, "Received: from a by b; x\r\n");
	strbuf_adds(&hdr, "\r\nbody\r\n");
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "BDAT %zu LAST\r\n", hdr.len);
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n", MAIL_OK RCPT_OK);
	fake_send(f, cmd);
	/* split the header section in odd places */
	fake_sendn(f, hdr.s, 5);
	fake_sendn(f, hdr.s + 5, 700);
	fake_sendn(f, hdr.s + 705, hdr.len - 705);
	assert_string_equal(fake_take(f), "554 5.4.6 Too many Received headers: mail loop\r\n");
	assert_int_equal(f->nabort, 1);
	strbuf_free(&hdr);
	teardown(f);
}

/* ------------------------------------------------------------ pipelining */

static void test_pipelining_one_write(void **state)
{
	struct fake *f = setup();
	size_t w = f->nwrites;
	fake_send(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
		     "RCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n");
	assert_int_equal(f->nwrites, w + 1);
	assert_string_equal(fake_take(f), MAIL_OK RCPT_OK
			    "550 5.1.1 Recipient address rejected: User unknown\r\n" RCPT_OK GO);
	/* content, end, next transaction and QUIT in one read: one write */
	w = f->nwrites;
	fake_send(f, "hi\r\n.\r\nMAIL FROM:<b@remote.example>\r\nRCPT TO:<bob@example.test>\r\nQUIT\r\n");
	assert_int_equal(f->nwrites, w + 1);
	assert_string_equal(fake_take(f),
			    "250 2.0.0 Ok: queued as Q0001\r\n" MAIL_OK RCPT_OK "221 2.0.0 Bye\r\n");
	assert_true(smtp_session_closed(f->s));
	/* the transaction open at QUIT was dropped; nothing was opened for it */
	assert_int_equal(f->nopen, 1);
	teardown(f);
}

static void test_pipelining_byte_by_byte(void **state)
{
	struct fake *f = setup();
	const char *in = "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
			 "a\r\n..b\r\n.\r\nQUIT\r\n";
	for (size_t i = 0; in[i]; i++)
		fake_sendn(f, in + i, 1);
	assert_string_equal(fake_take(f),
			    MAIL_OK RCPT_OK GO "250 2.0.0 Ok: queued as Q0001\r\n221 2.0.0 Bye\r\n");
	assert_string_equal(content_after_received(f), "a\r\n.b\r\n");
	teardown(f);
}

static void test_commit_deferred(void **state)
{
	struct fake *f = setup();
	f->commit_deferred = 1;
	size_t w = f->nwrites;
	fake_send(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
	fake_send(f, "hello\r\n.\r\nMAIL FROM:<b@remote.example>\r\nRCPT TO:<bob@example.test>\r\nNOOP\r\n");
	/* the replies before the commit are out; nothing after the dot is read */
	assert_string_equal(fake_take(f), MAIL_OK RCPT_OK GO);
	assert_string_equal(smtp_session_state_str(f->s), "commit");
	assert_false(smtp_session_wants_input(f->s));
	assert_int_equal(f->ncommit, 1);
	assert_int_equal(f->naccepted, 0);
	/* input that arrives anyway is held, not processed */
	fake_send(f, "RSET\r\n");
	assert_string_equal(fake_take(f), "");
	w = f->nwrites;
	fake_commit_finish(f, 0, 0);
	assert_int_equal(f->nwrites, w + 1);
	assert_string_equal(fake_take(f), "250 2.0.0 Ok: queued as Q0001\r\n" MAIL_OK RCPT_OK OK OK);
	assert_int_equal(f->naccepted, 1);
	assert_true(smtp_session_wants_input(f->s));
	assert_string_equal(content_after_received(f), "hello\r\n");
	/* a deferred failure */
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO);
	expect(f, "x\r\n.\r\n", "");
	fake_commit_finish(f, -1, ENOSPC);
	assert_string_equal(fake_take(f), "452 4.3.1 Insufficient system storage\r\n");
	assert_int_equal(f->naccepted, 1);
	/* a stray completion is ignored */
	smtp_session_commit_done(f->s, 0, 0, NULL);
	assert_string_equal(fake_take(f), "");
	teardown(f);
}

static void test_commit_deferred_overflow(void **state)
{
	struct fake *f = setup();
	f->commit_deferred = 1;
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO);
	fake_send(f, "x\r\n.\r\n");
	char *junk = malloc(40000);
	assert_non_null(junk);
	for (size_t i = 0; i < 40000; i += 6)
		memcpy(junk + i, "NOOP\r\n", 40000 - i < 6 ? 40000 - i : 6);
	fake_sendn(f, junk, 40000);
	free(junk);
	assert_string_equal(fake_take(f), "");
	fake_commit_finish(f, 0, 0);
	/* the outcome is replied, then the session ends for its flood */
	const char *r = fake_take(f);
	assert_prefix(r, "250 2.0.0 Ok: queued as Q0001\r\n");
	assert_non_null(strstr(r, "421 4.3.0 Out of resources, closing connection\r\n"));
	assert_int_equal(f->naccepted, 1);
	assert_true(smtp_session_closed(f->s));
	teardown(f);
}

/* ------------------------------------------------------- command lines */

static void test_command_line_flaws(void **state)
{
	struct fake *f = setup();
	expect(f, "QUIT\nNOOP\r\n", "500 5.5.2 Bare <LF> or <CR> not allowed (RFC 5321 2.3.8)\r\n" OK);
	expect(f, "QUIT\rNOOP\r\n", "500 5.5.2 Bare <LF> or <CR> not allowed (RFC 5321 2.3.8)\r\n");
	assert_false(smtp_session_closed(f->s));
	fake_sendn(f, "NO\0OP\r\n", 7);
	assert_string_equal(fake_take(f), "500 5.5.2 Bare <LF> or <CR> not allowed (RFC 5321 2.3.8)\r\n");
	/* a line over 1000 octets, sent in pieces: one 500, the tail ignored */
	char big[3000];
	memset(big, 'A', sizeof(big));
	memcpy(big, "NOOP ", 5);
	fake_sendn(f, big, 1500);
	assert_string_equal(fake_take(f), "500 5.5.2 Line too long\r\n");
	fake_sendn(f, big, 1500);
	fake_send(f, "QUIT\r\nNOOP\r\n");
	assert_string_equal(fake_take(f), OK);
	assert_false(smtp_session_closed(f->s));
	/* exactly 1000 octets with CRLF is fine */
	memcpy(big, "NOOP ", 5);
	fake_sendn(f, big, 998);
	expect(f, "\r\n", OK);
	fake_sendn(f, big, 999);
	expect(f, "\r\nNOOP\r\n", "500 5.5.2 Line too long\r\n" OK);
	/* a bare LF inside the tail of an over-long line does not end it: the
	 * "QUIT" after it is still part of the refused line */
	fake_sendn(f, big, 1500);
	assert_string_equal(fake_take(f), "500 5.5.2 Line too long\r\n");
	fake_send(f, "AAA\nQUIT\r");
	fake_send(f, "\nNOOP\r\n");
	assert_string_equal(fake_take(f), OK);
	assert_false(smtp_session_closed(f->s));
	teardown(f);
}

static void test_max_errors(void **state)
{
	const char *ov[] = {"max_errors=3"};
	struct fake *f = setup_with(ov, 1, 1);
	fake_send(f, "FOO\r\nBAR\r\nNOOP\r\nBAZ\r\nNOOP\r\n");
	assert_string_equal(fake_take(f), "500 5.5.1 Command unrecognized\r\n"
					  "500 5.5.1 Command unrecognized\r\n" OK
					  "500 5.5.1 Command unrecognized\r\n"
					  "421 4.7.0 Too many errors, closing connection\r\n");
	assert_true(smtp_session_closed(f->s));
	assert_int_equal(f->nclose, 1);
	teardown(f);
}

/* ---------------------------------------------------------- ending */

static void test_timeout(void **state)
{
	struct fake *f = setup();
	assert_int_equal(smtp_session_timeout_secs(f->s), 300);
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\npartial",
	       MAIL_OK RCPT_OK GO);
	smtp_session_timeout(f->s);
	assert_string_equal(fake_take(f), "421 4.4.2 Timeout exceeded, closing connection\r\n");
	assert_int_equal(f->nabort, 1);
	assert_int_equal(f->ncommit, 0);
	assert_true(smtp_session_closed(f->s));
	smtp_session_timeout(f->s); /* idempotent */
	assert_string_equal(fake_take(f), "");
	assert_int_equal(f->nclose, 1);
	teardown(f);
}

static void test_eof_mid_data(void **state)
{
	struct fake *f = setup();
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nsome text\r\n",
	       MAIL_OK RCPT_OK GO);
	smtp_session_eof(f->s);
	assert_int_equal(f->nabort, 1);
	assert_int_equal(f->ncommit, 0);
	assert_int_equal(f->naccepted, 0);
	assert_true(smtp_session_closed(f->s));
	assert_string_equal(fake_take(f), "");
	teardown(f);
}

static void test_eof_during_commit(void **state)
{
	struct fake *f = setup();
	f->commit_deferred = 1;
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nx\r\n.\r\n",
	       MAIL_OK RCPT_OK GO);
	smtp_session_eof(f->s);
	assert_false(smtp_session_closed(f->s)); /* the commit is still ours */
	assert_int_equal(f->nabort, 0);
	fake_commit_finish(f, 0, 0);
	assert_int_equal(f->naccepted, 1); /* durable: handed on although the client left */
	assert_true(smtp_session_closed(f->s));
	teardown(f);
}

static void test_shutdown(void **state)
{
	struct fake *f = setup();
	smtp_session_shutdown(f->s);
	assert_string_equal(fake_take(f), "421 4.3.2 Service shutting down, closing connection\r\n");
	assert_true(smtp_session_closed(f->s));
	teardown(f);

	/* during a commit: the real outcome first, then 421 */
	f = setup();
	f->commit_deferred = 1;
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n",
	       MAIL_OK RCPT_OK GO);
	smtp_session_shutdown(f->s);
	assert_string_equal(fake_take(f), "");
	assert_false(smtp_session_closed(f->s));
	fake_commit_finish(f, 0, 0);
	assert_string_equal(fake_take(f), "250 2.0.0 Ok: queued as Q0001\r\n"
					  "421 4.3.2 Service shutting down, closing connection\r\n");
	assert_int_equal(f->naccepted, 1);
	assert_true(smtp_session_closed(f->s));
	teardown(f);

	/* timeout during a commit: same rule */
	f = setup();
	f->commit_deferred = 1;
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nx\r\n.\r\n",
	       MAIL_OK RCPT_OK GO);
	smtp_session_timeout(f->s);
	fake_commit_finish(f, -1, EIO);
	assert_string_equal(fake_take(f), "451 4.3.0 Temporary failure: message not queued\r\n"
					  "421 4.4.2 Timeout exceeded, closing connection\r\n");
	assert_int_equal(f->naccepted, 0);
	teardown(f);
}

static void test_free_with_open_transaction(void **state)
{
	struct fake *f = setup();
	expect(f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT 100\r\nabc",
	       MAIL_OK RCPT_OK);
	assert_int_equal(f->nopen, 1);
	smtp_session_free(f->s);
	f->s = NULL;
	assert_int_equal(f->nabort, 1);
	teardown(f);
}

/* ---------------------------------------------------------- STARTTLS */

static void test_starttls(void **state)
{
	struct fake f;
	assert_int_equal(fake_init(&f, NULL, 0), 0);
	f.info.tls_available = 1;
	f.info.name = "client.example";
	fake_start(&f, 0);
	fake_send(&f, "EHLO c.example\r\n");
	const char *r = fake_take(&f);
	assert_non_null(strstr(r, "250-DSN\r\n250 STARTTLS\r\n"));
	fake_send(&f, "MAIL FROM:<a@remote.example>\r\nSTARTTLS\r\n");
	assert_string_equal(fake_take(&f), MAIL_OK
			    "503 5.5.1 Bad sequence of commands: STARTTLS inside a mail transaction\r\n");
	/* commands pipelined behind STARTTLS in plaintext are dropped */
	fake_send(&f, "RSET\r\nSTARTTLS\r\nMAIL FROM:<evil@x.example>\r\n");
	assert_string_equal(fake_take(&f), OK "220 2.0.0 Ready to start TLS\r\n");
	assert_int_equal(f.nstarttls, 1);
	assert_false(smtp_session_wants_input(f.s));
	smtp_session_tls_done(f.s, "TLSv1.3");
	assert_true(smtp_session_wants_input(f.s));
	assert_string_equal(fake_take(&f), "");
	/* HELO is forgotten */
	expect(&f, "MAIL FROM:<a@remote.example>\r\n",
	       "503 5.5.1 Bad sequence of commands: send HELO/EHLO first\r\n");
	fake_send(&f, "EHLO c.example\r\n");
	r = fake_take(&f);
	assert_null(strstr(r, "STARTTLS"));
	expect(&f, "STARTTLS\r\n", "503 5.5.1 Bad sequence of commands: TLS already active\r\n");
	expect(&f, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nx\r\n.\r\n",
	       MAIL_OK RCPT_OK GO "250 2.0.0 Ok: queued as Q0001\r\n");
	const char *want = "Received: from c.example (client.example [192.0.2.1])\r\n"
			   "\tby mx.example.test (Tern) with ESMTPS id Q0001\r\n";
	assert_true(strncmp(f.last_content.s, want, strlen(want)) == 0);
	fake_fini(&f);
}

static void test_ipv6_received(void **state)
{
	struct fake f;
	assert_int_equal(fake_init(&f, NULL, 0), 0);
	f.info.addr = "2001:db8::1";
	fake_start(&f, 0);
	fake_send(&f, "EHLO [IPv6:2001:db8::1]\r\nMAIL FROM:<> SMTPUTF8\r\nRCPT TO:<alice@example.test>\r\n"
		      "DATA\r\n.\r\n");
	assert_string_equal(fake_take(&f), GREETING EHLO_REPLY MAIL_OK RCPT_OK GO
			    "250 2.0.0 Ok: queued as Q0001\r\n");
	const char *want = "Received: from [IPv6:2001:db8::1] (unknown [IPv6:2001:db8::1])\r\n"
			   "\tby mx.example.test (Tern) with UTF8SMTP id Q0001\r\n";
	assert_true(strncmp(f.last_content.s, want, strlen(want)) == 0);
	fake_fini(&f);
}

/* ------------------------------------------------------------ random */

/* rnd - xorshift, deterministic */
static uint32_t rnd(uint32_t *st)
{
	uint32_t x = *st;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *st = x;
}

static void test_random_sessions(void **state)
{
	static const char *const toks[] = {
		"EHLO client.example\r\n", "HELO c\r\n", "MAIL FROM:<a@remote.example>\r\n",
		"MAIL FROM:<> BODY=BINARYMIME SIZE=10\r\n", "RCPT TO:<alice@example.test>\r\n",
		"RCPT TO:<x@elsewhere.example>\r\n", "DATA\r\n", ".\r\n", "\r\n.\r\n", "BDAT 5\r\n",
		"BDAT 3 LAST\r\n", "BDAT 0 LAST\r\n", "BDAT 99999999999999999999\r\n", "RSET\r\n",
		"NOOP\r\n", "\n", "\r", "..\r\n", "Received: x\r\n", "STARTTLS\r\n", "QUIT\r\n",
		"text line\r\n", "\n.\r\n", "VRFY x\r\n"};
	uint32_t st = 0x12345678;
	char junk[2048];
	for (int iter = 0; iter < 300; iter++) {
		const char *ov[] = {"max_errors=0", "max_message_size=2048"};
		struct fake f;
		assert_int_equal(fake_init(&f, ov, 2), 0);
		f.info.tls_available = rnd(&st) % 2;
		f.commit_deferred = rnd(&st) % 2;
		fake_start(&f, rnd(&st) % 20 == 0);
		for (int step = 0; step < 60 && !smtp_session_closed(f.s); step++) {
			uint32_t r = rnd(&st) % 100;
			if (r < 70) {
				const char *t = toks[rnd(&st) % (sizeof(toks) / sizeof(toks[0]))];
				fake_send(&f, t);
			} else if (r < 85) {
				size_t n = rnd(&st) % sizeof(junk);
				for (size_t i = 0; i < n; i++)
					junk[i] = (char)rnd(&st);
				fake_sendn(&f, junk, n);
			} else if (r < 93) {
				if (f.pending)
					fake_commit_finish(&f, rnd(&st) % 3 ? 0 : -1, ENOSPC);
			} else if (r < 96) {
				smtp_session_tls_done(f.s, "x");
			} else if (r < 98) {
				smtp_session_timeout(f.s);
			} else {
				smtp_session_eof(f.s);
			}
			(void)fake_take(&f);
			assert_true(f.nclose <= 1);
			assert_true(f.naccepted <= f.ncommit);
			if (smtp_session_closed(f.s))
				assert_false(smtp_session_wants_input(f.s));
		}
		if (f.pending)
			fake_commit_finish(&f, 0, 0);
		smtp_session_free(f.s);
		f.s = NULL;
		/* every queue file ended in exactly one commit or abort */
		assert_int_equal(f.nopen, f.ncommit + f.nabort);
		fake_fini(&f);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greeting_and_ehlo),
		cmocka_unit_test(test_pregreet),
		cmocka_unit_test(test_input_before_start),
		cmocka_unit_test(test_simple_verbs),
		cmocka_unit_test(test_order_errors),
		cmocka_unit_test(test_data_roundtrip),
		cmocka_unit_test(test_data_helo_proto_and_sanitising),
		cmocka_unit_test(test_data_dot_stuffing),
		cmocka_unit_test(test_data_bare_lf_smuggling),
		cmocka_unit_test(test_data_long_line_and_nul),
		cmocka_unit_test(test_data_size_limit),
		cmocka_unit_test(test_data_loop_detection),
		cmocka_unit_test(test_queue_failures),
		cmocka_unit_test(test_mail_params),
		cmocka_unit_test(test_mail_rcpt_syntax),
		cmocka_unit_test(test_rcpt_verdicts_and_params),
		cmocka_unit_test(test_max_recipients),
		cmocka_unit_test(test_bdat_chunks),
		cmocka_unit_test(test_bdat_errors_consume_octets),
		cmocka_unit_test(test_bdat_loop),
		cmocka_unit_test(test_pipelining_one_write),
		cmocka_unit_test(test_pipelining_byte_by_byte),
		cmocka_unit_test(test_commit_deferred),
		cmocka_unit_test(test_commit_deferred_overflow),
		cmocka_unit_test(test_command_line_flaws),
		cmocka_unit_test(test_max_errors),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_eof_mid_data),
		cmocka_unit_test(test_eof_during_commit),
		cmocka_unit_test(test_shutdown),
		cmocka_unit_test(test_free_with_open_transaction),
		cmocka_unit_test(test_starttls),
		cmocka_unit_test(test_ipv6_received),
		cmocka_unit_test(test_random_sessions),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
