/*
 * test_smtp_parse - the pure SMTP parser: line framing (CRLF only, limits),
 * commands and verbs, RFC 5321 paths (quoted, literals, UTF-8, routes,
 * relay tricks, length limits), ESMTP parameters, and the DATA stream fed
 * at every split position. Ends with a deterministic random-input loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_parse.h"

/* ------------------------------------------------------------ lines */

static enum smtp_line_status line(const char *p, size_t n, size_t *len, size_t *used)
{
	*len = 12345;
	*used = 12345;
	return smtp_line_next(p, n, len, used);
}

static void test_line_basic(void **st)
{
	size_t len, used;
	(void)st;
	assert_int_equal(line("QUIT\r\n", 6, &len, &used), SMTP_LINE_OK);
	assert_int_equal(len, 4);
	assert_int_equal(used, 6);
	assert_int_equal(line("\r\n", 2, &len, &used), SMTP_LINE_OK);
	assert_int_equal(len, 0);
	assert_int_equal(used, 2);
	assert_int_equal(line("NOOP\r\nQUIT\r\n", 12, &len, &used), SMTP_LINE_OK);
	assert_int_equal(len, 4);
	assert_int_equal(used, 6);
	assert_int_equal(line("QUIT", 4, &len, &used), SMTP_LINE_NEED_MORE);
	assert_int_equal(used, 0);
	assert_int_equal(line("QUIT\r", 5, &len, &used), SMTP_LINE_NEED_MORE);
	assert_int_equal(line("", 0, &len, &used), SMTP_LINE_NEED_MORE);
	assert_string_equal(smtp_line_status_str(SMTP_LINE_BARE_LF), "bare_lf");
}

static void test_line_bare(void **st)
{
	size_t len, used;
	(void)st;
	/* a lone LF is never a line end: the smuggling rule */
	assert_int_equal(line("QUIT\n", 5, &len, &used), SMTP_LINE_BARE_LF);
	assert_int_equal(used, 5);
	assert_int_equal(len, 4);
	assert_int_equal(line("\n", 1, &len, &used), SMTP_LINE_BARE_LF);
	assert_int_equal(used, 1);
	assert_int_equal(line("a\nRSET\r\n", 8, &len, &used), SMTP_LINE_BARE_LF);
	assert_int_equal(used, 2);
	/* a CR not followed by LF: the bad line runs to the next LF */
	assert_int_equal(line("MAIL\rRCPT\r\nQUIT\r\n", 17, &len, &used), SMTP_LINE_BARE_CR);
	assert_int_equal(used, 11);
	assert_int_equal(line("a\r\r\n", 4, &len, &used), SMTP_LINE_BARE_CR);
	assert_int_equal(used, 4);
	assert_int_equal(line("\rX\n", 3, &len, &used), SMTP_LINE_BARE_LF);
	assert_int_equal(used, 3);
	assert_int_equal(line("a\rb", 3, &len, &used), SMTP_LINE_NEED_MORE);
	/* keep in step: after skipping the bad line the next is intact */
	const char *s = "x\ny\r\nQUIT\r\n";
	size_t off = 0;
	assert_int_equal(line(s, strlen(s), &len, &used), SMTP_LINE_BARE_LF);
	off += used;
	assert_int_equal(line(s + off, strlen(s) - off, &len, &used), SMTP_LINE_OK);
	assert_int_equal(len, 1);
	off += used;
	assert_int_equal(line(s + off, strlen(s) - off, &len, &used), SMTP_LINE_OK);
	assert_memory_equal(s + off, "QUIT", 4);
}

static void test_line_limits(void **st)
{
	char b[3000];
	size_t len, used;
	(void)st;
	/* 998 content octets + CRLF = 1000: the maximum */
	memset(b, 'a', sizeof b);
	memcpy(b + 998, "\r\n", 2);
	assert_int_equal(line(b, 1000, &len, &used), SMTP_LINE_OK);
	assert_int_equal(len, 998);
	assert_int_equal(used, 1000);
	assert_int_equal(line(b, 999, &len, &used), SMTP_LINE_NEED_MORE);
	assert_int_equal(line(b, 998, &len, &used), SMTP_LINE_NEED_MORE);
	/* 999 content octets: too long, CRLF in the buffer */
	memset(b, 'a', sizeof b);
	memcpy(b + 999, "\r\nQUIT\r\n", 8);
	assert_int_equal(line(b, 1007, &len, &used), SMTP_LINE_TOO_LONG);
	assert_int_equal(len, 999);
	assert_int_equal(used, 1001);
	assert_int_equal(line(b + used, 6, &len, &used), SMTP_LINE_OK);
	/* 999 octets, no CR at the end: certainly too long already */
	assert_int_equal(line(b, 999, &len, &used), SMTP_LINE_TOO_LONG);
	assert_int_equal(len, 0);
	assert_int_equal(used, 999);
	/* 1000 content octets */
	memset(b, 'a', sizeof b);
	memcpy(b + 1000, "\r\n", 2);
	assert_int_equal(line(b, 1002, &len, &used), SMTP_LINE_TOO_LONG);
	assert_int_equal(len, 1000);
	assert_int_equal(used, 1002);
	/* no end at all: consume everything, caller then skips */
	memset(b, 'a', sizeof b);
	assert_int_equal(line(b, 2000, &len, &used), SMTP_LINE_TOO_LONG);
	assert_int_equal(len, 0);
	assert_int_equal(used, 2000);
	/* a trailing CR is kept for the next read */
	b[1999] = '\r';
	assert_int_equal(line(b, 2000, &len, &used), SMTP_LINE_TOO_LONG);
	assert_int_equal(used, 1999);
	/* bare LFs inside an over-long line do not end it */
	memset(b, 'a', sizeof b);
	b[1200] = '\n';
	memcpy(b + 1500, "\r\n", 2);
	assert_int_equal(line(b, 2000, &len, &used), SMTP_LINE_TOO_LONG);
	assert_int_equal(used, 1502);
	/* an LF at index 999 without CR: bare LF wins (line is over anyway) */
	memset(b, 'a', sizeof b);
	b[999] = '\n';
	assert_int_equal(line(b, 1000, &len, &used), SMTP_LINE_BARE_LF);
	assert_int_equal(used, 1000);
	/* CR at index 998, LF at 999: the maximal line */
	b[998] = '\r';
	assert_int_equal(line(b, 1000, &len, &used), SMTP_LINE_OK);
}

static void test_line_skip(void **st)
{
	size_t used;
	(void)st;
	assert_int_equal(smtp_line_skip("abc\r\nQUIT\r\n", 11, &used), SMTP_LINE_OK);
	assert_int_equal(used, 5);
	assert_int_equal(smtp_line_skip("abc\nd", 5, &used), SMTP_LINE_NEED_MORE);
	assert_int_equal(used, 5);
	assert_int_equal(smtp_line_skip("abc\r", 4, &used), SMTP_LINE_NEED_MORE);
	assert_int_equal(used, 3);
	assert_int_equal(smtp_line_skip("\r", 1, &used), SMTP_LINE_NEED_MORE);
	assert_int_equal(used, 0);
	assert_int_equal(smtp_line_skip("\r\n", 2, &used), SMTP_LINE_OK);
	assert_int_equal(used, 2);
	assert_int_equal(smtp_line_skip("", 0, &used), SMTP_LINE_NEED_MORE);
	assert_int_equal(used, 0);
}

/* ------------------------------------------------------------ commands */

static enum smtp_parse_error parse(const char *s, struct smtp_cmd *c, const char **detail)
{
	return smtp_parse_command(s, strlen(s), c, detail);
}

static void test_verbs(void **st)
{
	static const struct {
		const char *line;
		enum smtp_verb verb;
		const char *arg;
	} ok[] = {
		{"HELO mx.example", SMTP_VERB_HELO, "mx.example"},
		{"EHLO [127.0.0.1]", SMTP_VERB_EHLO, "[127.0.0.1]"},
		{"ehlo x", SMTP_VERB_EHLO, "x"},
		{"MAIL FROM:<a@b.c>", SMTP_VERB_MAIL, "FROM:<a@b.c>"},
		{"RCPT TO:<a@b.c>", SMTP_VERB_RCPT, "TO:<a@b.c>"},
		{"DATA", SMTP_VERB_DATA, ""},
		{"data", SMTP_VERB_DATA, ""},
		{"BDAT 100", SMTP_VERB_BDAT, "100"},
		{"BDAT 0 LAST", SMTP_VERB_BDAT, "0 LAST"},
		{"bdat 5 last", SMTP_VERB_BDAT, "5 last"},
		{"RSET", SMTP_VERB_RSET, ""},
		{"NOOP", SMTP_VERB_NOOP, ""},
		{"NOOP anything at all", SMTP_VERB_NOOP, "anything at all"},
		{"QUIT", SMTP_VERB_QUIT, ""},
		{"qUiT", SMTP_VERB_QUIT, ""},
		{"VRFY postmaster", SMTP_VERB_VRFY, "postmaster"},
		{"EXPN list", SMTP_VERB_EXPN, "list"},
		{"HELP", SMTP_VERB_HELP, ""},
		{"HELP MAIL", SMTP_VERB_HELP, "MAIL"},
		{"STARTTLS", SMTP_VERB_STARTTLS, ""},
		{"StartTls", SMTP_VERB_STARTTLS, ""},
		{"AUTH PLAIN AGFAYgBj", SMTP_VERB_AUTH, "PLAIN AGFAYgBj"},
		{"QUIT  ", SMTP_VERB_QUIT, ""},
		{"QUIT\t", SMTP_VERB_QUIT, ""},
		{"EHLO   spaced ", SMTP_VERB_EHLO, "spaced"},
	};
	struct smtp_cmd c;
	const char *d;
	(void)st;
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		assert_int_equal(parse(ok[i].line, &c, &d), SMTP_PARSE_OK);
		assert_int_equal(c.verb, ok[i].verb);
		assert_int_equal(c.arg.len, strlen(ok[i].arg));
		assert_memory_equal(c.arg.p, ok[i].arg, c.arg.len);
	}
	assert_string_equal(smtp_verb_str(SMTP_VERB_STARTTLS), "STARTTLS");
	assert_string_equal(smtp_verb_str(SMTP_VERB_UNKNOWN), "UNKNOWN");
	assert_string_equal(smtp_parse_error_str(SMTP_PARSE_NUL), "nul");
}

static void test_verbs_bad(void **st)
{
	struct smtp_cmd c;
	const char *d;
	(void)st;
	assert_int_equal(parse("", &c, &d), SMTP_PARSE_UNKNOWN_VERB);
	assert_string_equal(d, "empty command");
	assert_int_equal(parse("FOO bar", &c, &d), SMTP_PARSE_UNKNOWN_VERB);
	assert_int_equal(parse("HELOX", &c, &d), SMTP_PARSE_UNKNOWN_VERB);
	assert_int_equal(parse("HEL", &c, &d), SMTP_PARSE_UNKNOWN_VERB);
	assert_int_equal(parse("HELO\tx", &c, &d), SMTP_PARSE_UNKNOWN_VERB);
	assert_int_equal(parse(" QUIT", &c, &d), SMTP_PARSE_UNKNOWN_VERB);
	assert_int_equal(parse("MAILFROM:<a@b>", &c, &d), SMTP_PARSE_UNKNOWN_VERB);
	assert_int_equal(parse("HELO", &c, &d), SMTP_PARSE_SYNTAX);
	assert_int_equal(parse("EHLO ", &c, &d), SMTP_PARSE_SYNTAX);
	assert_string_equal(d, "hostname expected");
	assert_int_equal(parse("DATA x", &c, &d), SMTP_PARSE_SYNTAX);
	assert_int_equal(parse("QUIT now", &c, &d), SMTP_PARSE_SYNTAX);
	assert_int_equal(parse("RSET 1", &c, &d), SMTP_PARSE_SYNTAX);
	assert_int_equal(parse("STARTTLS x", &c, &d), SMTP_PARSE_SYNTAX);
	assert_int_equal(parse("VRFY", &c, &d), SMTP_PARSE_SYNTAX);
	assert_int_equal(parse("AUTH", &c, &d), SMTP_PARSE_SYNTAX);
	assert_int_equal(parse("BDAT", &c, &d), SMTP_PARSE_SYNTAX);
	assert_int_equal(parse("BDAT x", &c, &d), SMTP_PARSE_SYNTAX);
	assert_int_equal(parse("BDAT 1 FIRST", &c, &d), SMTP_PARSE_SYNTAX);
	assert_int_equal(parse("BDAT 99999999999999999999999", &c, &d), SMTP_PARSE_SYNTAX);
	assert_int_equal(parse("MAIL", &c, &d), SMTP_PARSE_SYNTAX);
	/* NUL anywhere, even after a valid command */
	assert_int_equal(smtp_parse_command("QUIT\0", 5, &c, &d), SMTP_PARSE_NUL);
	assert_string_equal(d, "NUL byte in command");
	assert_int_equal(smtp_parse_command("MAIL FROM:<a\0@b>", 16, &c, &d), SMTP_PARSE_NUL);
	assert_int_equal(smtp_parse_command("\0", 1, &c, NULL), SMTP_PARSE_NUL);
	/* detail may be NULL */
	assert_int_equal(parse("MAIL FROM:x", &c, NULL), SMTP_PARSE_PATH_SYNTAX);
}

static void test_bdat(void **st)
{
	uint64_t size;
	int last;
	(void)st;
	assert_int_equal(smtp_parse_bdat((struct slice){"123", 3}, &size, &last), 0);
	assert_int_equal(size, 123);
	assert_int_equal(last, 0);
	assert_int_equal(smtp_parse_bdat((struct slice){"0 LAST", 6}, &size, &last), 0);
	assert_int_equal(size, 0);
	assert_int_equal(last, 1);
	assert_int_equal(smtp_parse_bdat((struct slice){"", 0}, &size, &last), -1);
	assert_int_equal(smtp_parse_bdat((struct slice){"1  LAST", 7}, &size, &last), -1);
	assert_int_equal(smtp_parse_bdat((struct slice){"-1", 2}, &size, &last), -1);
	assert_int_equal(smtp_parse_bdat((struct slice){"18446744073709551615", 20}, &size, &last), 0);
	assert_true(size == UINT64_MAX);
	assert_int_equal(smtp_parse_bdat((struct slice){"18446744073709551616", 20}, &size, &last), -1);
}

static void test_mail_rcpt(void **st)
{
	struct smtp_cmd c;
	const char *d;
	(void)st;
	assert_int_equal(parse("MAIL FROM:<User@Example.COM>", &c, &d), SMTP_PARSE_OK);
	assert_int_equal(c.verb, SMTP_VERB_MAIL);
	assert_string_equal(c.path.addr, "User@example.com");
	assert_string_equal(c.path.local, "User");
	assert_string_equal(c.path.domain, "example.com");
	assert_int_equal(c.nparams, 0);
	assert_int_equal(parse("mail from:<a@b>", &c, &d), SMTP_PARSE_OK);
	assert_int_equal(parse("MAIL From:<a@b>", &c, &d), SMTP_PARSE_OK);
	assert_int_equal(parse("MAIL FROM: <a@b>", &c, &d), SMTP_PARSE_OK);
	assert_string_equal(c.path.addr, "a@b");
	assert_int_equal(parse("MAIL FROM:  <a@b>", &c, &d), SMTP_PARSE_PATH_SYNTAX);
	assert_int_equal(parse("MAIL FROM:<>", &c, &d), SMTP_PARSE_OK);
	assert_int_equal(c.path.is_null, 1);
	assert_string_equal(c.path.addr, "");
	assert_int_equal(parse("MAIL FROM:<> ", &c, &d), SMTP_PARSE_OK);
	assert_int_equal(parse("RCPT TO:<>", &c, &d), SMTP_PARSE_PATH_SYNTAX);
	assert_int_equal(parse("RCPT TO:<Postmaster>", &c, &d), SMTP_PARSE_OK);
	assert_int_equal(c.path.is_postmaster, 1);
	assert_string_equal(c.path.addr, "postmaster");
	assert_int_equal(parse("rcpt to:<POSTMASTER>", &c, &d), SMTP_PARSE_OK);
	assert_int_equal(c.path.is_postmaster, 1);
	assert_int_equal(parse("RCPT TO:<postmaster@example.org>", &c, &d), SMTP_PARSE_OK);
	assert_int_equal(c.path.is_postmaster, 0);
	assert_int_equal(parse("RCPT TO:<root>", &c, &d), SMTP_PARSE_PATH_SYNTAX);
	assert_int_equal(parse("RCPT TO: <x@y.z>  ", &c, &d), SMTP_PARSE_OK);
	assert_string_equal(c.path.addr, "x@y.z");
	/* missing keyword / brackets */
	assert_int_equal(parse("MAIL <a@b>", &c, &d), SMTP_PARSE_SYNTAX);
	assert_int_equal(parse("MAIL FROM <a@b>", &c, &d), SMTP_PARSE_SYNTAX);
	assert_int_equal(parse("MAIL TO:<a@b>", &c, &d), SMTP_PARSE_SYNTAX);
	assert_int_equal(parse("RCPT FROM:<a@b>", &c, &d), SMTP_PARSE_SYNTAX);
	assert_int_equal(parse("MAIL FROM:a@b", &c, &d), SMTP_PARSE_PATH_SYNTAX);
	assert_string_equal(d, "address must be enclosed in <>");
	assert_int_equal(parse("MAIL FROM:<a@b", &c, &d), SMTP_PARSE_PATH_SYNTAX);
	assert_string_equal(d, "address must be enclosed in <>");
	assert_int_equal(parse("MAIL FROM:", &c, &d), SMTP_PARSE_PATH_SYNTAX);
	assert_int_equal(parse("MAIL FROM:<\"a@b>", &c, &d), SMTP_PARSE_PATH_SYNTAX);
	assert_string_equal(d, "unbalanced quotes in local part");
	assert_int_equal(parse("MAIL FROM:<a@b>x", &c, &d), SMTP_PARSE_SYNTAX);
	assert_int_equal(parse("MAIL FROM:<a@b>>", &c, &d), SMTP_PARSE_SYNTAX);
	assert_int_equal(parse("MAIL FROM:<<a@b>>", &c, &d), SMTP_PARSE_PATH_SYNTAX);
	/* a '>' inside a quoted local part does not end the path */
	assert_int_equal(parse("RCPT TO:<\"a>b\"@c.d> NOTIFY=NEVER", &c, &d), SMTP_PARSE_OK);
	assert_string_equal(c.path.addr, "\"a>b\"@c.d");
	assert_int_equal(c.nparams, 1);
	assert_int_equal(parse("RCPT TO:<\"a\\\">b\"@c.d>", &c, &d), SMTP_PARSE_OK);
	assert_string_equal(c.path.addr, "\"a\\\">b\"@c.d");
}

static void test_params(void **st)
{
	struct smtp_cmd c;
	const char *d;
	const struct smtp_param *p;
	char b[2048];
	(void)st;
	assert_int_equal(parse("MAIL FROM:<a@b.c> SIZE=1000 BODY=8BITMIME", &c, &d), SMTP_PARSE_OK);
	assert_int_equal(c.nparams, 2);
	p = smtp_param_find(&c, "size");
	assert_non_null(p);
	assert_int_equal(p->has_value, 1);
	assert_int_equal(p->value.len, 4);
	assert_memory_equal(p->value.p, "1000", 4);
	p = smtp_param_find(&c, "BODY");
	assert_non_null(p);
	assert_memory_equal(p->value.p, "8BITMIME", 8);
	assert_null(smtp_param_find(&c, "SMTPUTF8"));
	assert_null(smtp_param_find(&c, "SIZ"));
	/* keyword only, unknown keywords, extra spaces, trailing whitespace */
	assert_int_equal(parse("MAIL FROM:<a@b.c>  SMTPUTF8   X-FOO=bar-1 ", &c, &d), SMTP_PARSE_OK);
	assert_int_equal(c.nparams, 2);
	p = smtp_param_find(&c, "smtputf8");
	assert_non_null(p);
	assert_int_equal(p->has_value, 0);
	assert_int_equal(p->value.len, 0);
	assert_non_null(p->value.p);
	assert_non_null(smtp_param_find(&c, "x-foo"));
	/* RFC 3461 values with +XX and (RFC 6531) UTF-8 */
	assert_int_equal(parse("RCPT TO:<a@b.c> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b@c", &c, &d),
			 SMTP_PARSE_OK);
	assert_int_equal(c.nparams, 2);
	assert_int_equal(parse("MAIL FROM:<a@b.c> ENVID=\xc3\xa9t\xc3\xa9", &c, &d), SMTP_PARSE_OK);
	/* bad ones */
	assert_int_equal(parse("MAIL FROM:<a@b.c> SIZE=", &c, &d), SMTP_PARSE_PARAM_SYNTAX);
	assert_string_equal(d, "empty parameter value");
	assert_int_equal(parse("MAIL FROM:<a@b.c> =1", &c, &d), SMTP_PARSE_PARAM_SYNTAX);
	assert_int_equal(parse("MAIL FROM:<a@b.c> -X=1", &c, &d), SMTP_PARSE_PARAM_SYNTAX);
	assert_int_equal(parse("MAIL FROM:<a@b.c> X_Y=1", &c, &d), SMTP_PARSE_PARAM_SYNTAX);
	assert_int_equal(parse("MAIL FROM:<a@b.c> SIZE=1=2", &c, &d), SMTP_PARSE_PARAM_SYNTAX);
	assert_string_equal(d, "invalid character in parameter value");
	assert_int_equal(parse("MAIL FROM:<a@b.c> SIZE=1\x7f", &c, &d), SMTP_PARSE_PARAM_SYNTAX);
	assert_int_equal(parse("MAIL FROM:<a@b.c> SIZE=1\x01", &c, &d), SMTP_PARSE_PARAM_SYNTAX);
	assert_int_equal(parse("MAIL FROM:<a@b.c> SIZE=1\tBODY=7BIT", &c, &d), SMTP_PARSE_PARAM_SYNTAX);
	assert_int_equal(parse("MAIL FROM:<a@b.c> ENVID=\xc0\xaf", &c, &d), SMTP_PARSE_PARAM_SYNTAX);
	assert_int_equal(parse("MAIL FROM:<a@b.c> ENVID=\xff", &c, &d), SMTP_PARSE_PARAM_SYNTAX);
	/* at and over the parameter limit */
	strcpy(b, "MAIL FROM:<a@b.c>");
	for (int i = 0; i < SMTP_PARAMS_MAX; i++)
		sprintf(b + strlen(b), " P%d=%d", i, i);
	assert_int_equal(parse(b, &c, &d), SMTP_PARSE_OK);
	assert_int_equal(c.nparams, SMTP_PARAMS_MAX);
	assert_non_null(smtp_param_find(&c, "P15"));
	strcat(b, " ONE-MORE");
	assert_int_equal(parse(b, &c, &d), SMTP_PARSE_TOO_MANY_PARAMS);
	assert_string_equal(d, "too many parameters");
}

/* ------------------------------------------------------------ paths */

static enum smtp_parse_error path(const char *s, int allow_null, struct smtp_path *p, const char **d)
{
	return smtp_parse_path(s, strlen(s), allow_null, p, d);
}

static void test_path_valid(void **st)
{
	static const struct {
		const char *in;
		const char *addr;
		int quoted, literal, utf8;
	} ok[] = {
		{"<a@b>", "a@b", 0, 0, 0},
		{"<First.Last@Sub.Example.ORG>", "First.Last@sub.example.org", 0, 0, 0},
		{"<a+tag@b-c.d1>", "a+tag@b-c.d1", 0, 0, 0},
		{"<!#$%&'*+-/=?^_`{|}~@x.y>", "!#$%&'*+-/=?^_`{|}~@x.y", 0, 0, 0},
		{"<u@localhost>", "u@localhost", 0, 0, 0},
		{"<u@1.2.3.4>", "u@1.2.3.4", 0, 0, 0},
		{"<u@xn--bcher-kva.example>", "u@xn--bcher-kva.example", 0, 0, 0},
		/* quoted: unquoted when it is a dot-string anyway */
		{"<\"abc\"@x.y>", "abc@x.y", 0, 0, 0},
		{"<\"a.b\"@x.y>", "a.b@x.y", 0, 0, 0},
		{"<\"\\a\"@x.y>", "a@x.y", 0, 0, 0},
		{"<\"a b\"@x.y>", "\"a b\"@x.y", 1, 0, 0},
		{"<\"a..b\"@x.y>", "\"a..b\"@x.y", 1, 0, 0},
		{"<\".a\"@x.y>", "\".a\"@x.y", 1, 0, 0},
		{"<\"\"@x.y>", "\"\"@x.y", 1, 0, 0},
		{"<\"a\\\"b\"@x.y>", "\"a\\\"b\"@x.y", 1, 0, 0},
		{"<\"a\\\\b\"@x.y>", "\"a\\\\b\"@x.y", 1, 0, 0},
		{"<\"a\\ b\"@x.y>", "\"a b\"@x.y", 1, 0, 0},
		{"<\"a(b)\"@x.y>", "\"a(b)\"@x.y", 1, 0, 0},
		/* address literals */
		{"<u@[192.0.2.1]>", "u@[192.0.2.1]", 0, 1, 0},
		{"<u@[IPv6:2001:DB8::1]>", "u@[IPv6:2001:db8::1]", 0, 1, 0},
		{"<u@[ipv6:::1]>", "u@[IPv6:::1]", 0, 1, 0},
		{"<u@[IPv6:::ffff:192.0.2.1]>", "u@[IPv6:::ffff:192.0.2.1]", 0, 1, 0},
		/* UTF-8 (RFC 6531) */
		{"<j\xc3\xb6rg@b\xc3\xbc\x63her.example>", "j\xc3\xb6rg@b\xc3\xbc\x63her.example", 0, 0, 1},
		{"<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\x85\xac\xe5\x8f\xb8>",
		 "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\x85\xac\xe5\x8f\xb8", 0, 0, 1},
		{"<a@\xc3\x96Z.example>", "a@\xc3\x96z.example", 0, 0, 1},
		{"<\xf0\x9f\x98\x80@x.y>", "\xf0\x9f\x98\x80@x.y", 0, 0, 1},
		{"<\"\xc3\xa9 x\"@x.y>", "\"\xc3\xa9 x\"@x.y", 1, 0, 1},
		{"<\xf4\x8f\xbf\xbf@x.y>", "\xf4\x8f\xbf\xbf@x.y", 0, 0, 1},
		/* source routes are accepted and discarded */
		{"<@a.example:u@b.example>", "u@b.example", 0, 0, 0},
		{"<@a.example,@b.example:u@c.example>", "u@c.example", 0, 0, 0},
		/* relay tricks stay literal */
		{"<@a:u@remote>", "u@remote", 0, 0, 0},
		{"<u%remote@local>", "u%remote@local", 0, 0, 0},
		{"<remote!u@local>", "remote!u@local", 0, 0, 0},
		{"<\"u@remote\"@local>", "\"u@remote\"@local", 1, 0, 0},
		{"<\"u@remote\"@LOCAL.example>", "\"u@remote\"@local.example", 1, 0, 0},
	};
	struct smtp_path p;
	const char *d;
	(void)st;
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		enum smtp_parse_error e = path(ok[i].in, 0, &p, &d);
		if (e != SMTP_PARSE_OK)
			fail_msg("%s: %s (%s)", ok[i].in, smtp_parse_error_str(e), d);
		assert_string_equal(p.addr, ok[i].addr);
		assert_int_equal(p.quoted, ok[i].quoted);
		assert_int_equal(p.domain_literal, ok[i].literal);
		assert_int_equal(p.utf8, ok[i].utf8);
		assert_int_equal(p.is_null, 0);
		assert_int_equal(p.is_postmaster, 0);
	}
	assert_int_equal(path("<\"u@remote\"@local>", 0, &p, &d), SMTP_PARSE_OK);
	assert_string_equal(p.local, "\"u@remote\"");
	assert_string_equal(p.domain, "local");
	assert_int_equal(path("<>", 1, &p, &d), SMTP_PARSE_OK);
	assert_int_equal(p.is_null, 1);
	assert_int_equal(path("<postmaster>", 1, &p, &d), SMTP_PARSE_OK);
	assert_int_equal(p.is_postmaster, 1);
}

static void test_path_invalid(void **st)
{
	static const struct {
		const char *in;
		enum smtp_parse_error err;
		const char *detail; /* NULL: not checked */
	} bad[] = {
		{"", SMTP_PARSE_PATH_SYNTAX, "address must be enclosed in <>"},
		{"<", SMTP_PARSE_PATH_SYNTAX, "address must be enclosed in <>"},
		{"a@b", SMTP_PARSE_PATH_SYNTAX, "address must be enclosed in <>"},
		{"<a@b", SMTP_PARSE_PATH_SYNTAX, "address must be enclosed in <>"},
		{"a@b>", SMTP_PARSE_PATH_SYNTAX, "address must be enclosed in <>"},
		{"<>", SMTP_PARSE_PATH_SYNTAX, "null address <> not allowed here"},
		{"<a>", SMTP_PARSE_PATH_SYNTAX, "address must be local@domain"},
		{"<postmaster@>", SMTP_PARSE_PATH_SYNTAX, "domain name expected after @"},
		{"<\"postmaster\">", SMTP_PARSE_PATH_SYNTAX, NULL},
		{"<@a:postmaster>", SMTP_PARSE_PATH_SYNTAX, NULL},
		{"<a@>", SMTP_PARSE_PATH_SYNTAX, "domain name expected after @"},
		{"<@b>", SMTP_PARSE_PATH_SYNTAX, "bad source route"},
		{"<@b:>", SMTP_PARSE_PATH_SYNTAX, "local part expected"},
		{"<@:a@b>", SMTP_PARSE_PATH_SYNTAX, "bad source route"},
		{"<@a,b:u@c>", SMTP_PARSE_PATH_SYNTAX, "bad source route"},
		{"<@a..b:u@c>", SMTP_PARSE_PATH_SYNTAX, "bad source route"},
		{"<a@b.c.>", SMTP_PARSE_PATH_SYNTAX, "trailing dot in domain"},
		{"<a@.b.c>", SMTP_PARSE_PATH_SYNTAX, "leading dot in domain"},
		{"<a@b..c>", SMTP_PARSE_PATH_SYNTAX, "empty label (..) in domain"},
		{"<a@-b.c>", SMTP_PARSE_PATH_SYNTAX, "domain label may not start or end with a hyphen"},
		{"<a@b-.c>", SMTP_PARSE_PATH_SYNTAX, "domain label may not start or end with a hyphen"},
		{"<a@b.c->", SMTP_PARSE_PATH_SYNTAX, "domain label may not start or end with a hyphen"},
		{"<a@b_c.d>", SMTP_PARSE_PATH_SYNTAX, "invalid character in domain"},
		{"<a@b c>", SMTP_PARSE_PATH_SYNTAX, "invalid character in domain"},
		{"<a@b@c>", SMTP_PARSE_PATH_SYNTAX, "invalid character in domain"},
		{"<a b@c>", SMTP_PARSE_PATH_SYNTAX, "invalid character in local part"},
		{"<.a@b>", SMTP_PARSE_PATH_SYNTAX, "local part may not start with a dot"},
		{"<a.@b>", SMTP_PARSE_PATH_SYNTAX, "local part may not end with a dot"},
		{"<a..b@c>", SMTP_PARSE_PATH_SYNTAX, "empty atom (..) in local part"},
		{"<a\"b@c>", SMTP_PARSE_PATH_SYNTAX, "unbalanced quotes in local part"},
		{"<\"ab@c>", SMTP_PARSE_PATH_SYNTAX, "unbalanced quotes in local part"},
		{"<\"a\"b@c>", SMTP_PARSE_PATH_SYNTAX, "@ expected after local part"},
		{"<\"a\tb\"@c>", SMTP_PARSE_PATH_SYNTAX, "invalid character in quoted local part"},
		{"<\"a\\\x01\"@c>", SMTP_PARSE_PATH_SYNTAX, "bad quoted-pair in local part"},
		{"<(comment)a@b>", SMTP_PARSE_PATH_SYNTAX, NULL},
		{"<a@[1.2.3]>", SMTP_PARSE_PATH_SYNTAX, "invalid IPv4 address literal"},
		{"<a@[1.2.3.256]>", SMTP_PARSE_PATH_SYNTAX, "invalid IPv4 address literal"},
		{"<a@[01.2.3.4]>", SMTP_PARSE_PATH_SYNTAX, "invalid IPv4 address literal"},
		{"<a@[1.2.3.4.5]>", SMTP_PARSE_PATH_SYNTAX, "invalid IPv4 address literal"},
		{"<a@[]>", SMTP_PARSE_PATH_SYNTAX, "address literal must end with ]"},
		{"<a@[1.2.3.4>", SMTP_PARSE_PATH_SYNTAX, "address literal must end with ]"},
		{"<a@[1.2.3.4]x>", SMTP_PARSE_PATH_SYNTAX, "address literal must end with ]"},
		{"<a@[IPv6:1::2::3]>", SMTP_PARSE_PATH_SYNTAX, "invalid IPv6 address literal"},
		{"<a@[IPv6:]>", SMTP_PARSE_PATH_SYNTAX, "invalid IPv6 address literal"},
		{"<a@[IPv6:1.2.3.4]>", SMTP_PARSE_PATH_SYNTAX, "invalid IPv6 address literal"},
		{"<a@[::1]>", SMTP_PARSE_PATH_SYNTAX, "unsupported address literal"},
		{"<a@[x400:foo]>", SMTP_PARSE_PATH_SYNTAX, "unsupported address literal"},
		{"<a@b.[1.2.3.4]>", SMTP_PARSE_PATH_SYNTAX, "invalid character in domain"},
		/* malformed UTF-8: lone continuation, overlong, surrogate, > U+10FFFF, truncated */
		{"<\x80@b>", SMTP_PARSE_PATH_SYNTAX, "invalid UTF-8 in local part"},
		{"<\xc0\xaf@b>", SMTP_PARSE_PATH_SYNTAX, "invalid UTF-8 in local part"},
		{"<\xc1\xbf@b>", SMTP_PARSE_PATH_SYNTAX, "invalid UTF-8 in local part"},
		{"<\xe0\x80\xaf@b>", SMTP_PARSE_PATH_SYNTAX, "invalid UTF-8 in local part"},
		{"<\xed\xa0\x80@b>", SMTP_PARSE_PATH_SYNTAX, "invalid UTF-8 in local part"},
		{"<\xf0\x80\x80\xaf@b>", SMTP_PARSE_PATH_SYNTAX, "invalid UTF-8 in local part"},
		{"<\xf4\x90\x80\x80@b>", SMTP_PARSE_PATH_SYNTAX, "invalid UTF-8 in local part"},
		{"<\xf5\x80\x80\x80@b>", SMTP_PARSE_PATH_SYNTAX, "invalid UTF-8 in local part"},
		{"<\xff@b>", SMTP_PARSE_PATH_SYNTAX, "invalid UTF-8 in local part"},
		{"<\xc3@b>", SMTP_PARSE_PATH_SYNTAX, "invalid UTF-8 in local part"},
		{"<\"\xc3\"@b>", SMTP_PARSE_PATH_SYNTAX, "invalid UTF-8 in local part"},
		{"<a@b\xc3>", SMTP_PARSE_PATH_SYNTAX, "invalid UTF-8 in domain"},
		{"<a@\xed\xbf\xbf.b>", SMTP_PARSE_PATH_SYNTAX, "invalid UTF-8 in domain"},
		{"<a@\xc0\xae.b>", SMTP_PARSE_PATH_SYNTAX, "invalid UTF-8 in domain"},
	};
	struct smtp_path p;
	const char *d;
	(void)st;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		memset(&p, 0x55, sizeof p);
		d = NULL;
		enum smtp_parse_error e = path(bad[i].in, 0, &p, &d);
		if (e != bad[i].err)
			fail_msg("%s: got %s (%s)", bad[i].in, smtp_parse_error_str(e), d ? d : "-");
		assert_non_null(d);
		assert_true(strlen(d) > 0);
		if (bad[i].detail != NULL && strcmp(d, bad[i].detail) != 0)
			fail_msg("%s: detail \"%s\", want \"%s\"", bad[i].in, d, bad[i].detail);
		/* on error nothing half-parsed is left behind */
		assert_string_equal(p.addr, "");
		assert_int_equal(p.is_postmaster, 0);
	}
}

/* build "<" L*'l' "@" domain ">" with a domain of dn octets in labels */
static void make_path(char *b, size_t ln, size_t dn)
{
	size_t o = 0;
	b[o++] = '<';
	memset(b + o, 'l', ln);
	o += ln;
	b[o++] = '@';
	for (size_t i = 0; i < dn; i++)
		b[o + i] = (i % 50 == 49 && i + 1 < dn) ? '.' : 'd';
	o += dn;
	b[o++] = '>';
	b[o] = '\0';
}

static void test_path_lengths(void **st)
{
	char b[1024];
	struct smtp_path p;
	const char *d;
	(void)st;
	/* local part: 64 ok, 65 too long */
	make_path(b, 64, 10);
	assert_int_equal(path(b, 0, &p, &d), SMTP_PARSE_OK);
	assert_int_equal(strlen(p.local), 64);
	make_path(b, 65, 10);
	assert_int_equal(path(b, 0, &p, &d), SMTP_PARSE_LOCAL_TOO_LONG);
	make_path(b, 500, 10);
	assert_int_equal(path(b, 0, &p, &d), SMTP_PARSE_LOCAL_TOO_LONG);
	/* quoted local part: 64 octets as written including the quotes */
	strcpy(b, "<\"");
	memset(b + 2, 'q', 62);
	strcpy(b + 64, "\"@x.y>");
	assert_int_equal(path(b, 0, &p, &d), SMTP_PARSE_OK);
	strcpy(b, "<\"");
	memset(b + 2, ' ', 62);
	strcpy(b + 64, "\"@x.y>");
	assert_int_equal(path(b, 0, &p, &d), SMTP_PARSE_OK);
	assert_int_equal(p.quoted, 1);
	strcpy(b, "<\"");
	memset(b + 2, 'q', 63);
	strcpy(b + 65, "\"@x.y>");
	assert_int_equal(path(b, 0, &p, &d), SMTP_PARSE_LOCAL_TOO_LONG);
	/* worst-case escaping: 31 quoted-pairs of '"' */
	strcpy(b, "<\"");
	for (int i = 0; i < 31; i++)
		strcat(b, "\\\"");
	strcat(b, "\"@x.y>");
	assert_int_equal(path(b, 0, &p, &d), SMTP_PARSE_OK);
	assert_int_equal(strlen(p.local), 64);
	/* a label: 63 ok, 64 not */
	strcpy(b, "<a@");
	memset(b + 3, 'x', 63);
	strcpy(b + 66, ".y>");
	assert_int_equal(path(b, 0, &p, &d), SMTP_PARSE_OK);
	strcpy(b, "<a@");
	memset(b + 3, 'x', 64);
	strcpy(b + 67, ".y>");
	assert_int_equal(path(b, 0, &p, &d), SMTP_PARSE_PATH_SYNTAX);
	assert_string_equal(d, "domain label longer than 63 octets");
	/* whole path: 256 with <> ok, 257 too long */
	make_path(b, 1, 252); /* 1 + 1 + 252 + 2 = 256 */
	assert_int_equal(strlen(b), 256);
	assert_int_equal(path(b, 0, &p, &d), SMTP_PARSE_OK);
	assert_int_equal(strlen(p.addr), 254);
	make_path(b, 2, 252);
	assert_int_equal(path(b, 0, &p, &d), SMTP_PARSE_PATH_TOO_LONG);
	assert_string_equal(d, "path longer than 256 octets");
	make_path(b, 64, 190);
	assert_int_equal(strlen(b), 257);
	assert_int_equal(path(b, 0, &p, &d), SMTP_PARSE_PATH_TOO_LONG);
	/* domain: 255 fine on its own (smtp_parse_domain), 256 too long */
	make_path(b, 1, 255);
	assert_int_equal(path(b, 0, &p, &d), SMTP_PARSE_PATH_TOO_LONG);
	make_path(b, 1, 256);
	assert_int_equal(path(b, 0, &p, &d), SMTP_PARSE_DOMAIN_TOO_LONG);
	make_path(b, 1, 700);
	assert_int_equal(path(b, 0, &p, &d), SMTP_PARSE_DOMAIN_TOO_LONG);
	/* a long source route makes the path too long */
	strcpy(b, "<");
	for (int i = 0; i < 30; i++)
		strcat(b, i ? ",@relay.example" : "@relay.example");
	strcat(b, ":u@x.y>");
	assert_int_equal(path(b, 0, &p, &d), SMTP_PARSE_PATH_TOO_LONG);
}

static void test_domain(void **st)
{
	char out[SMTP_DOMAIN_MAX + 1];
	char b[400];
	int lit, u8;
	const char *d;
	(void)st;
	assert_int_equal(smtp_parse_domain("MX.Example", 10, out, &lit, &u8, &d), SMTP_PARSE_OK);
	assert_string_equal(out, "mx.example");
	assert_int_equal(lit, 0);
	assert_int_equal(smtp_parse_domain("[10.0.0.1]", 10, out, &lit, &u8, &d), SMTP_PARSE_OK);
	assert_int_equal(lit, 1);
	assert_int_equal(smtp_parse_domain("a..b", 4, out, NULL, NULL, NULL), SMTP_PARSE_PATH_SYNTAX);
	assert_int_equal(smtp_parse_domain("", 0, out, NULL, NULL, &d), SMTP_PARSE_PATH_SYNTAX);
	memset(b, 'a', sizeof b);
	for (int i = 50; i < 400; i += 50)
		b[i] = '.';
	assert_int_equal(smtp_parse_domain(b, 255, out, NULL, NULL, &d), SMTP_PARSE_OK);
	assert_int_equal(strlen(out), 255);
	assert_int_equal(smtp_parse_domain(b, 256, out, NULL, NULL, &d), SMTP_PARSE_DOMAIN_TOO_LONG);
	assert_int_equal(smtp_parse_domain("a\0b", 3, out, NULL, NULL, &d), SMTP_PARSE_PATH_SYNTAX);
	assert_int_equal(smtp_parse_domain("[1.2.3.4\0]", 10, out, NULL, NULL, &d), SMTP_PARSE_PATH_SYNTAX);
	assert_int_equal(smtp_parse_domain("[IPv6:::1\0]", 11, out, NULL, NULL, &d), SMTP_PARSE_PATH_SYNTAX);
}

static void test_utf8(void **st)
{
	(void)st;
	assert_int_equal(smtp_utf8_valid("", 0), 1);
	assert_int_equal(smtp_utf8_valid("abc", 3), 1);
	assert_int_equal(smtp_utf8_valid("\xc2\x80", 2), 1);
	assert_int_equal(smtp_utf8_valid("\xdf\xbf", 2), 1);
	assert_int_equal(smtp_utf8_valid("\xe0\xa0\x80", 3), 1);
	assert_int_equal(smtp_utf8_valid("\xed\x9f\xbf", 3), 1);
	assert_int_equal(smtp_utf8_valid("\xee\x80\x80", 3), 1);
	assert_int_equal(smtp_utf8_valid("\xf0\x90\x80\x80", 4), 1);
	assert_int_equal(smtp_utf8_valid("\xf4\x8f\xbf\xbf", 4), 1);
	assert_int_equal(smtp_utf8_valid("\xc2", 1), 0);
	assert_int_equal(smtp_utf8_valid("\xc2\x41", 2), 0);
	assert_int_equal(smtp_utf8_valid("\xc1\x81", 2), 0);
	assert_int_equal(smtp_utf8_valid("\xe0\x9f\xbf", 3), 0);
	assert_int_equal(smtp_utf8_valid("\xed\xa0\x80", 3), 0);
	assert_int_equal(smtp_utf8_valid("\xf0\x8f\xbf\xbf", 4), 0);
	assert_int_equal(smtp_utf8_valid("\xf4\x90\x80\x80", 4), 0);
	assert_int_equal(smtp_utf8_valid("\xf8\x88\x80\x80\x80", 5), 0);
	assert_int_equal(smtp_utf8_valid("\xe2\x82", 2), 0);
}

/* ------------------------------------------------------------ DATA */

struct sink {
	char *buf;
	size_t len, cap;
	size_t calls;
};

static void sink_add(void *arg, const char *p, size_t n)
{
	struct sink *s = arg;
	assert_true(n > 0);
	if (s->len + n > s->cap) {
		s->cap = (s->len + n) * 2;
		s->buf = realloc(s->buf, s->cap);
		assert_non_null(s->buf);
	}
	memcpy(s->buf + s->len, p, n);
	s->len += n;
	s->calls++;
}

struct data_result {
	enum smtp_data_status status;
	size_t consumed;
	struct smtp_data d;
	struct sink out;
};

/* feed_chunks - feed in[0..n) in pieces given by cuts[] (ascending) */
static void feed_chunks(const char *in, size_t n, const size_t *cuts, size_t ncuts, struct data_result *r)
{
	size_t off = 0;
	memset(r, 0, sizeof *r);
	smtp_data_init(&r->d);
	r->status = SMTP_DATA_MORE;
	for (size_t c = 0; c <= ncuts; c++) {
		size_t end = c < ncuts ? cuts[c] : n;
		size_t used = 999999;
		if (end < off)
			continue;
		r->status = smtp_data_feed(&r->d, in + off, end - off, &used, sink_add, &r->out);
		assert_true(used <= end - off);
		if (r->status == SMTP_DATA_END) {
			r->consumed = off + used;
			return;
		}
		assert_int_equal(used, end - off);
		off = end;
	}
	r->consumed = off;
}

static void result_equal(const struct data_result *a, const struct data_result *b)
{
	assert_int_equal(a->status, b->status);
	assert_int_equal(a->consumed, b->consumed);
	assert_int_equal(a->out.len, b->out.len);
	if (a->out.len)
		assert_memory_equal(a->out.buf, b->out.buf, a->out.len);
	assert_int_equal(a->d.flaws, b->d.flaws);
	assert_int_equal(a->d.received_count, b->d.received_count);
	assert_int_equal(a->d.in_headers, b->d.in_headers);
	assert_int_equal(a->d.out_bytes, b->d.out_bytes);
	assert_int_equal(a->d.out_bytes, a->out.len);
}

/* check_splits - whole, every 2-way split, every 3-way split of short
 * inputs, and one byte at a time must all give the same result */
static void check_splits(const char *in, size_t n, struct data_result *whole)
{
	struct data_result r;
	size_t cuts[2];

	feed_chunks(in, n, NULL, 0, whole);
	for (size_t k = 0; k <= n; k++) {
		cuts[0] = k;
		feed_chunks(in, n, cuts, 1, &r);
		result_equal(whole, &r);
		free(r.out.buf);
	}
	if (n <= 64) {
		for (size_t i = 0; i <= n; i++)
			for (size_t j = i; j <= n; j++) {
				cuts[0] = i;
				cuts[1] = j;
				feed_chunks(in, n, cuts, 2, &r);
				result_equal(whole, &r);
				free(r.out.buf);
			}
	}
	size_t *all = malloc((n + 1) * sizeof *all);
	assert_non_null(all);
	for (size_t k = 0; k < n; k++)
		all[k] = k + 1;
	feed_chunks(in, n, all, n, &r);
	result_equal(whole, &r);
	free(r.out.buf);
	free(all);
}

#define ALL ((size_t)-1) /* data(): the whole input is consumed */

/* data - run in (a C string) at every split; check output and state */
static void data(const char *in, enum smtp_data_status st, size_t consumed, const char *out, unsigned flaws,
		 size_t rcvd, int in_headers)
{
	struct data_result w;
	size_t n = strlen(in);
	if (consumed == ALL)
		consumed = n;
	check_splits(in, n, &w);
	if (w.status != st || w.consumed != consumed || w.out.len != strlen(out) ||
	    (w.out.len && memcmp(w.out.buf, out, w.out.len) != 0) || w.d.flaws != flaws ||
	    w.d.received_count != rcvd || w.d.in_headers != in_headers)
		fail_msg("input \"%s\": status %d consumed %zu out \"%.*s\" flaws %u rcvd %zu hdr %d", in, w.status,
			 w.consumed, (int)w.out.len, w.out.buf ? w.out.buf : "", w.d.flaws, w.d.received_count,
			 w.d.in_headers);
	free(w.out.buf);
}

static void test_data_basic(void **st)
{
	(void)st;
	const char *m = "Subject: hi\r\n\r\nbody\r\n.\r\n";
	data(m, SMTP_DATA_END, strlen(m), "Subject: hi\r\n\r\nbody\r\n", 0, 0, 0);
	/* an empty message: ".\r\n" as the very first line */
	data(".\r\n", SMTP_DATA_END, 3, "", 0, 0, 1);
	data(".\r\nQUIT\r\n", SMTP_DATA_END, 3, "", 0, 0, 1);
	/* trailing bytes after the end are not consumed (pipelined QUIT) */
	data("a\r\n.\r\nQUIT\r\n", SMTP_DATA_END, 6, "a\r\n", 0, 0, 1);
	/* not finished */
	data("a\r\n", SMTP_DATA_MORE, 3, "a\r\n", 0, 0, 1);
	data("a\r\n.", SMTP_DATA_MORE, 4, "a\r\n", 0, 0, 1);
	data("a\r\n.\r", SMTP_DATA_MORE, 5, "a\r\n", 0, 0, 1);
	data("", SMTP_DATA_MORE, 0, "", 0, 0, 1);
	/* a message without a final CRLF cannot end: "x.\r\n" is content */
	data("x.\r\n", SMTP_DATA_MORE, 4, "x.\r\n", 0, 0, 1);
	data("x\r\n.x\r\n.\r\n", SMTP_DATA_END, 10, "x\r\nx\r\n", 0, 0, 1);
}

static void test_data_stuffing(void **st)
{
	(void)st;
	data("..\r\n.\r\n", SMTP_DATA_END, 7, ".\r\n", 0, 0, 1);
	data("...\r\n.\r\n", SMTP_DATA_END, 8, "..\r\n", 0, 0, 1);
	data("a\r\n..b\r\n.\r\n", SMTP_DATA_END, 11, "a\r\n.b\r\n", 0, 0, 1);
	data(".a\r\n.\r\n", SMTP_DATA_END, 7, "a\r\n", 0, 0, 1);
	data("a.b\r\n.\r\n", SMTP_DATA_END, 8, "a.b\r\n", 0, 0, 1);
	data("\r\n..\r\n..\r\n.\r\n", SMTP_DATA_END, 13, "\r\n.\r\n.\r\n", 0, 0, 0);
	/* only the leading dot is removed */
	data("..x..\r\n.\r\n", SMTP_DATA_END, 10, ".x..\r\n", 0, 0, 1);
	/* ". \r\n" is not the end: stuffing removes the dot */
	data(". \r\n.\r\n", SMTP_DATA_END, 7, " \r\n", 0, 0, 1);
}

static void test_data_end_variants(void **st)
{
	(void)st;
	/* none of these is the end of data (smuggling) */
	data("a\n.\nb\r\n", SMTP_DATA_MORE, 7, "a\n.\nb\r\n", SMTP_DATA_FLAW_BARE_LF, 0, 1);
	data("a\r\n.\nb\r\n", SMTP_DATA_MORE, 8, "a\r\n\nb\r\n", SMTP_DATA_FLAW_BARE_LF, 0, 1);
	data("a\n.\r\nb\r\n", SMTP_DATA_MORE, 8, "a\n.\r\nb\r\n", SMTP_DATA_FLAW_BARE_LF, 0, 1);
	data("a\r.\r\nb\r\n", SMTP_DATA_MORE, 8, "a\r.\r\nb\r\n", SMTP_DATA_FLAW_BARE_CR, 0, 1);
	data("a\r\n.\rb\r\n", SMTP_DATA_MORE, 8, "a\r\n\rb\r\n", SMTP_DATA_FLAW_BARE_CR, 0, 1);
	data("a\r\n.\r\r\n", SMTP_DATA_MORE, 7, "a\r\n\r\r\n", SMTP_DATA_FLAW_BARE_CR, 0, 1);
	/* the smuggling payload: one message, read to its real end */
	const char *smug = "Subject: x\r\n\r\nhi\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nowned\r\n.\r\n";
	data(smug, SMTP_DATA_END, strlen(smug),
	     "Subject: x\r\n\r\nhi\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nowned\r\n",
	     SMTP_DATA_FLAW_BARE_LF, 0, 0);
	/* a bare CR held back after ".\r" then released as content */
	data(".\rX\r\n.\r\n", SMTP_DATA_END, 8, "\rX\r\n", SMTP_DATA_FLAW_BARE_CR, 0, 1);
	data(".\r.\r\n.\r\n", SMTP_DATA_END, 8, "\r.\r\n", SMTP_DATA_FLAW_BARE_CR, 0, 1);
	data("\r\r\n.\r\n", SMTP_DATA_END, 6, "\r\r\n", SMTP_DATA_FLAW_BARE_CR, 0, 1);
}

static void test_data_flaws(void **st)
{
	struct data_result w;
	const char nul[] = "a\0b\r\n\0\r\n.\r\n";
	(void)st;
	/* NUL is content, flagged; the scan goes on to the real end */
	check_splits(nul, sizeof nul - 1, &w);
	assert_int_equal(w.status, SMTP_DATA_END);
	assert_int_equal(w.consumed, sizeof nul - 1);
	assert_int_equal(w.out.len, 8);
	assert_memory_equal(w.out.buf, "a\0b\r\n\0\r\n", 8);
	assert_int_equal(w.d.flaws, SMTP_DATA_FLAW_NUL);
	free(w.out.buf);
	data("a\nb\r\n.\r\n", SMTP_DATA_END, ALL, "a\nb\r\n", SMTP_DATA_FLAW_BARE_LF, 0, 1);
	data("a\rb\r\n.\r\n", SMTP_DATA_END, ALL, "a\rb\r\n", SMTP_DATA_FLAW_BARE_CR, 0, 1);
	data("\n\r\n.\r\n", SMTP_DATA_END, ALL, "\n\r\n", SMTP_DATA_FLAW_BARE_LF, 0, 1);
	data("a\r\r\n\n\r\n.\r\n", SMTP_DATA_END, ALL, "a\r\r\n\n\r\n",
	     SMTP_DATA_FLAW_BARE_CR | SMTP_DATA_FLAW_BARE_LF, 0, 1);
	/* a flaw early does not stop the scan: the end is still found */
	data("\n.\n\r\n.\r\nQUIT\r\n", SMTP_DATA_END, 8, "\n.\n\r\n", SMTP_DATA_FLAW_BARE_LF, 0, 1);
}

static void test_data_long_lines(void **st)
{
	static char b[5000];
	struct data_result w;
	(void)st;
	memset(b, 'x', 998);
	strcpy(b + 998, "\r\n.\r\n");
	check_splits(b, strlen(b), &w);
	assert_int_equal(w.status, SMTP_DATA_END);
	assert_int_equal(w.d.flaws, 0);
	assert_int_equal(w.out.len, 1000);
	free(w.out.buf);
	/* a stuffed dot counts: "." + 998 octets is 1001 on the wire */
	b[0] = '.';
	memset(b + 1, 'x', 998);
	strcpy(b + 999, "\r\n.\r\n");
	check_splits(b, strlen(b), &w);
	assert_int_equal(w.d.flaws, SMTP_DATA_FLAW_LONG_LINE);
	assert_int_equal(w.out.len, 1000);
	free(w.out.buf);
	memset(b, 'x', 999);
	strcpy(b + 999, "\r\nnext\r\n.\r\n");
	check_splits(b, strlen(b), &w);
	assert_int_equal(w.status, SMTP_DATA_END);
	assert_int_equal(w.d.flaws, SMTP_DATA_FLAW_LONG_LINE);
	assert_int_equal(w.consumed, strlen(b));
	free(w.out.buf);
	memset(b, 'x', 4000);
	strcpy(b + 4000, "\r\n.\r\n");
	check_splits(b, strlen(b), &w);
	assert_int_equal(w.status, SMTP_DATA_END);
	assert_int_equal(w.d.flaws, SMTP_DATA_FLAW_LONG_LINE);
	assert_int_equal(w.out.len, 4002);
	/* the content goes out in few calls, not per byte */
	assert_true(w.out.calls <= 2);
	free(w.out.buf);
	assert_string_equal(smtp_data_flaw_str(0), "");
	assert_non_null(strstr(smtp_data_flaw_str(SMTP_DATA_FLAW_BARE_LF | SMTP_DATA_FLAW_NUL), "LF"));
	assert_non_null(strstr(smtp_data_flaw_str(SMTP_DATA_FLAW_LONG_LINE), "1000"));
	assert_string_equal(smtp_data_status_str(SMTP_DATA_END), "end");
}

static void test_data_headers(void **st)
{
	(void)st;
	data("Received: a\r\nreceived: b\r\n\tReceived: not a field\r\nRECEIVED:c\r\nX: y\r\n\r\nReceived: body\r\n.\r\n",
	     SMTP_DATA_END, ALL,
	     "Received: a\r\nreceived: b\r\n\tReceived: not a field\r\nRECEIVED:c\r\nX: y\r\n\r\nReceived: body\r\n", 0,
	     3, 0);
	data("Received : a\r\nReceivedx: b\r\nX-Received: c\r\nReceive\r\n\r\n.\r\n", SMTP_DATA_END, ALL,
	     "Received : a\r\nReceivedx: b\r\nX-Received: c\r\nReceive\r\n\r\n", 0, 0, 0);
	/* unstuffing comes first: ".Received:" is a Received field */
	data(".Received: a\r\n..Received: b\r\n.\r\n", SMTP_DATA_END, ALL, "Received: a\r\n.Received: b\r\n", 0, 1, 1);
	/* a bare CR or LF inside the name breaks it */
	data("Rec\reived: a\r\nRec\neived: b\r\n.\r\n", SMTP_DATA_END, ALL, "Rec\reived: a\r\nRec\neived: b\r\n",
	     SMTP_DATA_FLAW_BARE_CR | SMTP_DATA_FLAW_BARE_LF, 0, 1);
	/* still in headers until the empty line */
	data("Received: a\r\n", SMTP_DATA_MORE, ALL, "Received: a\r\n", 0, 1, 1);
	data("\r\nReceived: a\r\n.\r\n", SMTP_DATA_END, ALL, "\r\nReceived: a\r\n", 0, 0, 0);
	/* a line of only a bare LF is not the empty line */
	data("\nReceived: a\r\n.\r\n", SMTP_DATA_END, ALL, "\nReceived: a\r\n", SMTP_DATA_FLAW_BARE_LF, 0, 1);
}

static void test_data_after_end(void **st)
{
	struct smtp_data d;
	struct sink s = {0};
	size_t used;
	(void)st;
	smtp_data_init(&d);
	assert_int_equal(smtp_data_feed(&d, ".\r\n", 3, &used, sink_add, &s), SMTP_DATA_END);
	assert_int_equal(used, 3);
	assert_int_equal(smtp_data_feed(&d, "more", 4, &used, sink_add, &s), SMTP_DATA_END);
	assert_int_equal(used, 0);
	assert_int_equal(s.len, 0);
	/* a NULL sink only counts */
	smtp_data_init(&d);
	assert_int_equal(smtp_data_feed(&d, "ab\r\n.\r\n", 7, &used, NULL, NULL), SMTP_DATA_END);
	assert_int_equal(d.out_bytes, 4);
}

/* ------------------------------------------------------------ hostile input */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* rand_bytes - random input biased towards the octets parsers care about */
static void rand_bytes(char *b, size_t n)
{
	static const char special[] = "\r\n.<>@\":[]\\ =,\0\x80\xc3\xa9\xff" "MAIL FROM:RCPT TO:IPv6";
	for (size_t i = 0; i < n; i++) {
		uint64_t r = rng();
		if (r % 3 == 0)
			b[i] = (char)(r >> 8);
		else
			b[i] = special[(r >> 8) % (sizeof special - 1)];
	}
}

static void test_random(void **st)
{
	char b[1500];
	(void)st;
	for (int iter = 0; iter < 4000; iter++) {
		size_t n = (size_t)(rng() % sizeof b);
		rand_bytes(b, n);
		if (iter % 2 == 0 && n > 10) {
			memcpy(b, iter % 4 ? "MAIL FROM:<" : "RCPT TO:<", iter % 4 ? 11 : 9);
		}
		/* lines */
		size_t off = 0, len, used;
		while (off < n) {
			enum smtp_line_status s = smtp_line_next(b + off, n - off, &len, &used);
			if (s == SMTP_LINE_NEED_MORE)
				break;
			assert_true(used > 0 || (s == SMTP_LINE_TOO_LONG && n - off == 1));
			assert_true(used <= n - off);
			if (s == SMTP_LINE_OK) {
				assert_true(len <= SMTP_LINE_MAX - 2);
				struct smtp_cmd c;
				const char *d = NULL;
				enum smtp_parse_error e = smtp_parse_command(b + off, len, &c, &d);
				assert_non_null(d);
				if (e == SMTP_PARSE_OK && (c.verb == SMTP_VERB_MAIL || c.verb == SMTP_VERB_RCPT)) {
					assert_true(strlen(c.path.addr) <= SMTP_PATH_MAX - 2);
					assert_true(strlen(c.path.local) <= SMTP_LOCAL_MAX);
					assert_true(strlen(c.path.domain) <= SMTP_DOMAIN_MAX);
				}
				if (e != SMTP_PARSE_OK)
					assert_true(strlen(d) > 0);
			}
			if (used == 0)
				break;
			off += used;
		}
		/* paths */
		struct smtp_path p;
		const char *d;
		if (n >= 2) {
			b[0] = '<';
			b[n - 1] = '>';
		}
		if (smtp_parse_path(b, n, (int)(n & 1), &p, &d) == SMTP_PARSE_OK) {
			assert_true(strlen(p.addr) <= SMTP_PATH_MAX - 2);
			assert_true(p.is_null || p.is_postmaster || strchr(p.addr, '@') != NULL);
		}
		/* data: whole versus random chunks */
		struct data_result whole, parts;
		size_t cuts[8];
		feed_chunks(b, n, NULL, 0, &whole);
		size_t last = 0;
		for (int k = 0; k < 8; k++) {
			last += n ? (size_t)(rng() % (n / 4 + 1)) : 0;
			cuts[k] = last > n ? n : last;
		}
		feed_chunks(b, n, cuts, 8, &parts);
		result_equal(&whole, &parts);
		free(whole.out.buf);
		free(parts.out.buf);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_line_basic),
		cmocka_unit_test(test_line_bare),
		cmocka_unit_test(test_line_limits),
		cmocka_unit_test(test_line_skip),
		cmocka_unit_test(test_verbs),
		cmocka_unit_test(test_verbs_bad),
		cmocka_unit_test(test_bdat),
		cmocka_unit_test(test_mail_rcpt),
		cmocka_unit_test(test_params),
		cmocka_unit_test(test_path_valid),
		cmocka_unit_test(test_path_invalid),
		cmocka_unit_test(test_path_lengths),
		cmocka_unit_test(test_domain),
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_data_basic),
		cmocka_unit_test(test_data_stuffing),
		cmocka_unit_test(test_data_end_variants),
		cmocka_unit_test(test_data_flaws),
		cmocka_unit_test(test_data_long_lines),
		cmocka_unit_test(test_data_headers),
		cmocka_unit_test(test_data_after_end),
		cmocka_unit_test(test_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
