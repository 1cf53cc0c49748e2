/*
 * test_smtp_replyparse - the SMTP reply parser on good, split and hostile
 * input, and EHLO keyword parsing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/smtp_replyparse.h"

/* parse_all - feed s whole; expect one status; *used: bytes consumed */
static enum smtp_replyparse_status parse_all(const char *s, size_t n, struct smtp_rep *out, size_t *used)
{
	static struct smtp_replyparse rp;
	size_t u = 0;

	smtp_replyparse_init(&rp);
	enum smtp_replyparse_status st = smtp_replyparse_feed(&rp, s, n, &u, out);
	if (used)
		*used = u;
	return st;
}

/* parse_split - feed s in pieces cut at every position: same result as whole */
static void check_split(const char *s, int want_code, const char *want_enh, size_t want_lines)
{
	size_t n = strlen(s);
	static struct smtp_rep whole, part;
	size_t used;

	assert_int_equal(parse_all(s, n, &whole, &used), SMTP_REPLYPARSE_REPLY);
	assert_int_equal(used, n);
	assert_int_equal(whole.code, want_code);
	assert_string_equal(whole.enh, want_enh);
	assert_int_equal(whole.nlines, want_lines);
	for (size_t cut = 0; cut <= n; cut++) {
		static struct smtp_replyparse rp;
		smtp_replyparse_init(&rp);
		size_t u1 = 0, u2 = 0;
		enum smtp_replyparse_status st = smtp_replyparse_feed(&rp, s, cut, &u1, &part);
		if (cut < n) {
			assert_int_equal(st, SMTP_REPLYPARSE_NEED_MORE);
			assert_int_equal(u1, cut);
			st = smtp_replyparse_feed(&rp, s + cut, n - cut, &u2, &part);
		}
		assert_int_equal(st, SMTP_REPLYPARSE_REPLY);
		assert_int_equal(u1 + u2, n);
		assert_int_equal(part.code, whole.code);
		assert_string_equal(part.enh, whole.enh);
		assert_int_equal(part.nstored, whole.nstored);
		for (size_t i = 0; i < whole.nstored; i++)
			assert_string_equal(smtp_rep_line(&part, i), smtp_rep_line(&whole, i));
	}
	/* one byte at a time */
	static struct smtp_replyparse rp;
	smtp_replyparse_init(&rp);
	for (size_t i = 0; i < n; i++) {
		size_t u = 0;
		enum smtp_replyparse_status st = smtp_replyparse_feed(&rp, s + i, 1, &u, &part);
		assert_int_equal(u, 1);
		assert_int_equal(st, i + 1 == n ? SMTP_REPLYPARSE_REPLY : SMTP_REPLYPARSE_NEED_MORE);
	}
	assert_int_equal(part.code, want_code);
}

static void test_good_replies_split(void **state)
{
	(void)state;
	check_split("220 mx.example.net ESMTP ready\r\n", 220, "", 1);
	check_split("250 2.1.0 Ok\r\n", 250, "2.1.0", 1);
	check_split("550-5.1.1 no such\r\n550-5.1.1 user here\r\n550 5.1.1 sorry\r\n", 550, "5.1.1", 3);
	check_split("250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n", 250, "", 4);
	check_split("250\r\n", 250, "", 1);
	check_split("250-\r\n250 \r\n", 250, "", 2);
	check_split("354 go ahead\n", 354, "", 1);                 /* lone LF, leniently */
	check_split("451-4.3.0 a\n451 4.3.0 b\r\n", 451, "4.3.0", 2);
	check_split("221 2.0.0 Bye\r\n", 221, "2.0.0", 1);
}

static void test_lines_and_text(void **state)
{
	(void)state;
	struct smtp_rep r;
	char text[64];
	const char *s = "550-5.7.1 first\r\n550 5.7.1  second\tline\r\n";

	assert_int_equal(parse_all(s, strlen(s), &r, NULL), SMTP_REPLYPARSE_REPLY);
	assert_int_equal(r.nstored, 2);
	assert_string_equal(smtp_rep_line(&r, 0), "5.7.1 first");
	assert_string_equal(smtp_rep_line(&r, 1), "5.7.1  second\tline");
	assert_int_equal(smtp_replyparse_text(&r, text, sizeof(text)), strlen("first second?line"));
	assert_string_equal(text, "first second?line");
	/* cut to fit */
	assert_int_equal(smtp_replyparse_text(&r, text, 6), 5);
	assert_string_equal(text, "first");
	/* a CR inside the text is text; NUL becomes '?' */
	static const char nul[] = "250 a\rb\0c\r\r\n";
	assert_int_equal(parse_all(nul, sizeof(nul) - 1, &r, NULL), SMTP_REPLYPARSE_REPLY);
	assert_int_equal(memcmp(smtp_rep_line(&r, 0), "a\rb?c\r", 7), 0);
	smtp_replyparse_text(&r, text, sizeof(text));
	assert_string_equal(text, "a?b?c?");
}

static void test_enhanced_codes(void **state)
{
	(void)state;
	struct smtp_rep r;
	static const struct {
		const char *in, *enh;
	} cases[] = {
		{"550 5.1.1 user unknown\r\n", "5.1.1"},
		{"550 5.123.456 x\r\n", "5.123.456"},
		{"550 5.1234.1 x\r\n", ""},   /* subject too long */
		{"550 4.1.1 x\r\n", ""},      /* class differs from the code */
		{"250 2.0.0\r\n", "2.0.0"},   /* code alone */
		{"250 2.0.0x y\r\n", ""},
		{"250 2.0 ok\r\n", ""},
		{"250 2..0 ok\r\n", ""},
		{"354 3.0.0 go\r\n", ""},     /* 3 is no RFC 3463 class */
		{"451 4.7.1 later\r\n", "4.7.1"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(parse_all(cases[i].in, strlen(cases[i].in), &r, NULL), SMTP_REPLYPARSE_REPLY);
		assert_string_equal(r.enh, cases[i].enh);
	}
}

static void test_two_replies_in_one_buffer(void **state)
{
	(void)state;
	struct smtp_replyparse rp;
	struct smtp_rep r;
	const char *s = "250 2.1.0 Ok\r\n550 5.1.1 No\r\n250 2.1.5";
	size_t n = strlen(s), used;

	smtp_replyparse_init(&rp);
	assert_int_equal(smtp_replyparse_feed(&rp, s, n, &used, &r), SMTP_REPLYPARSE_REPLY);
	assert_int_equal(used, 14);
	assert_int_equal(r.code, 250);
	assert_false(smtp_replyparse_midline(&rp));
	s += used, n -= used;
	assert_int_equal(smtp_replyparse_feed(&rp, s, n, &used, &r), SMTP_REPLYPARSE_REPLY);
	assert_int_equal(r.code, 550);
	s += used, n -= used;
	assert_int_equal(smtp_replyparse_feed(&rp, s, n, &used, &r), SMTP_REPLYPARSE_NEED_MORE);
	assert_int_equal(used, n);
	assert_true(smtp_replyparse_midline(&rp));
	assert_int_equal(smtp_replyparse_feed(&rp, " Ok\r\n", 5, &used, &r), SMTP_REPLYPARSE_REPLY);
	assert_int_equal(r.code, 250);
	assert_string_equal(r.enh, "2.1.5");
}

/* expect_error - s must fail with e, and stay failed */
static void expect_error(const char *s, size_t n, enum smtp_replyparse_error e)
{
	static struct smtp_replyparse rp;
	static struct smtp_rep r;
	size_t used;

	smtp_replyparse_init(&rp);
	assert_int_equal(smtp_replyparse_feed(&rp, s, n, &used, &r), SMTP_REPLYPARSE_ERROR);
	assert_int_equal(rp.error, e);
	assert_true(used <= n);
	assert_int_equal(smtp_replyparse_feed(&rp, "250 ok\r\n", 8, &used, &r), SMTP_REPLYPARSE_ERROR);
	assert_non_null(smtp_replyparse_error_str(e));
}

static void test_hostile_codes(void **state)
{
	(void)state;
	expect_error("199 hi\r\n", 8, SMTP_REPLYPARSE_E_CODE);
	expect_error("600 hi\r\n", 8, SMTP_REPLYPARSE_E_CODE);
	expect_error("260 hi\r\n", 8, SMTP_REPLYPARSE_E_CODE);
	expect_error("2x0 hi\r\n", 8, SMTP_REPLYPARSE_E_CODE);
	expect_error("25\r\n", 4, SMTP_REPLYPARSE_E_CODE);
	expect_error("\r\n", 2, SMTP_REPLYPARSE_E_CODE);
	expect_error(" 250 x\r\n", 8, SMTP_REPLYPARSE_E_CODE);
	expect_error("HTTP/1.1 400 Bad\r\n", 18, SMTP_REPLYPARSE_E_CODE);
	expect_error("2500 x\r\n", 8, SMTP_REPLYPARSE_E_SEPARATOR);
	expect_error("250x\r\n", 6, SMTP_REPLYPARSE_E_SEPARATOR);
	expect_error("250-a\r\n550 b\r\n", 14, SMTP_REPLYPARSE_E_CODE_MISMATCH);
	expect_error("250-a\r\n251 b\r\n", 14, SMTP_REPLYPARSE_E_CODE_MISMATCH);
	expect_error("250-a\r\n\r\n", 9, SMTP_REPLYPARSE_E_CODE);
	static const char nulcode[] = "2\0" "0 x\r\n";
	expect_error(nulcode, sizeof(nulcode) - 1, SMTP_REPLYPARSE_E_CODE);
}

static void test_limits(void **state)
{
	(void)state;
	struct smtp_rep r;
	size_t used;
	char *s = malloc(200000);

	/* a line of exactly SMTP_REP_LINE_MAX octets passes, one more fails */
	memcpy(s, "250 ", 4);
	memset(s + 4, 'a', SMTP_REP_LINE_MAX - 4);
	memcpy(s + SMTP_REP_LINE_MAX, "\r\n", 2);
	assert_int_equal(parse_all(s, SMTP_REP_LINE_MAX + 2, &r, &used), SMTP_REPLYPARSE_REPLY);
	assert_int_equal(strlen(smtp_rep_line(&r, 0)), SMTP_REP_LINE_MAX - 4);
	memset(s + 4, 'a', SMTP_REP_LINE_MAX - 3);
	memcpy(s + SMTP_REP_LINE_MAX + 1, "\r\n", 2);
	expect_error(s, SMTP_REP_LINE_MAX + 3, SMTP_REPLYPARSE_E_LINE_TOO_LONG);
	/* many CRs count too */
	memcpy(s, "250 ", 4);
	memset(s + 4, '\r', 5000);
	expect_error(s, 5004, SMTP_REPLYPARSE_E_LINE_TOO_LONG);

	/* endless continuation lines: error at the limit, not growth */
	size_t n = 0;
	for (int i = 0; i < 150; i++)
		n += (size_t)sprintf(s + n, "250-line %d\r\n", i);
	expect_error(s, n, SMTP_REPLYPARSE_E_TOO_MANY_LINES);
	/* exactly SMTP_REP_LINES_MAX lines is fine */
	n = 0;
	for (int i = 0; i < SMTP_REP_LINES_MAX - 1; i++)
		n += (size_t)sprintf(s + n, "250-line %d\r\n", i);
	n += (size_t)sprintf(s + n, "250 last\r\n");
	assert_int_equal(parse_all(s, n, &r, &used), SMTP_REPLYPARSE_REPLY);
	assert_int_equal(r.nlines, SMTP_REP_LINES_MAX);
	assert_int_equal(r.nstored, SMTP_REP_LINES_MAX);
	assert_false(r.truncated);

	/* more text than the store: whole lines dropped, the first ones kept */
	n = 0;
	for (int i = 0; i < 5; i++) {
		n += (size_t)sprintf(s + n, "250-");
		memset(s + n, 'a' + i, 3000);
		n += 3000;
		n += (size_t)sprintf(s + n, "\r\n");
	}
	n += (size_t)sprintf(s + n, "250 SIZE 12345678\r\n");
	assert_int_equal(parse_all(s, n, &r, &used), SMTP_REPLYPARSE_REPLY);
	assert_int_equal(r.nlines, 6);
	assert_int_equal(r.nstored, 2);
	assert_true(r.truncated);
	assert_int_equal(strlen(smtp_rep_line(&r, 1)), 3000);
	assert_int_equal(smtp_rep_line(&r, 1)[0], 'b');
	free(s);
}

static void test_ehlo_caps(void **state)
{
	(void)state;
	struct smtp_rep r;
	struct smtp_caps caps;
	const char *s = "250-mx.example.net Hello PIPELINING\r\n"  /* first line is not a keyword */
			"250-pipelining\r\n"
			"250-SIZE 10240000\r\n"
			"250-8BITMIME\r\n"
			"250-SMTPUTF8\r\n"
			"250-CHUNKING\r\n"
			"250-BINARYMIME\r\n"
			"250-DSN\r\n"
			"250-STARTTLS\r\n"
			"250-AUTH PLAIN login\r\n"
			"250-AUTH=CRAM-MD5\r\n"
			"250-X-UNKNOWN foo\r\n"
			"250 ENHANCEDSTATUSCODES\r\n";

	assert_int_equal(parse_all(s, strlen(s), &r, NULL), SMTP_REPLYPARSE_REPLY);
	smtp_replyparse_ehlo(&r, &caps);
	assert_int_equal(caps.flags, SMTP_CAP_PIPELINING | SMTP_CAP_SIZE | SMTP_CAP_8BITMIME | SMTP_CAP_SMTPUTF8 |
					     SMTP_CAP_CHUNKING | SMTP_CAP_BINARYMIME | SMTP_CAP_DSN |
					     SMTP_CAP_STARTTLS | SMTP_CAP_AUTH | SMTP_CAP_ENHANCEDSTATUSCODES);
	assert_int_equal(caps.size_max, 10240000);
	assert_string_equal(caps.auth, "PLAIN LOGIN CRAM-MD5");

	const char *t = "250-mx\r\n250-SIZE\r\n250-PIPELININGX\r\n250-8BITMIME=1\r\n250 SIZE=5\r\n";
	assert_int_equal(parse_all(t, strlen(t), &r, NULL), SMTP_REPLYPARSE_REPLY);
	smtp_replyparse_ehlo(&r, &caps);
	assert_int_equal(caps.flags, SMTP_CAP_SIZE);
	assert_int_equal(caps.size_max, 0);

	const char *u = "250-mx\r\n250-SIZE 99999999999999999999999\r\n250 SIZE -1\r\n";
	assert_int_equal(parse_all(u, strlen(u), &r, NULL), SMTP_REPLYPARSE_REPLY);
	smtp_replyparse_ehlo(&r, &caps);
	assert_int_equal(caps.flags, SMTP_CAP_SIZE);
	assert_int_equal(caps.size_max, 0);

	/* HELO-style single line: no keywords */
	assert_int_equal(parse_all("250 mx PIPELINING\r\n", 19, &r, NULL), SMTP_REPLYPARSE_REPLY);
	smtp_replyparse_ehlo(&r, &caps);
	assert_int_equal(caps.flags, 0);

	/* an AUTH list that does not fit is cut by whole words */
	char big[2000];
	size_t n = (size_t)sprintf(big, "250-mx\r\n250 AUTH");
	for (int i = 0; i < 60; i++)
		n += (size_t)sprintf(big + n, " MECH%02d", i);
	n += (size_t)sprintf(big + n, "\r\n");
	assert_int_equal(parse_all(big, n, &r, NULL), SMTP_REPLYPARSE_REPLY);
	smtp_replyparse_ehlo(&r, &caps);
	assert_true(strlen(caps.auth) < SMTP_CAPS_AUTH_MAX);
	assert_int_equal(strlen(caps.auth) % 7, 6); /* "MECHnn" words joined by spaces */
	assert_string_equal(smtp_cap_str(SMTP_CAP_DSN), "DSN");
}

static void test_names(void **state)
{
	(void)state;
	assert_string_equal(smtp_replyparse_status_str(SMTP_REPLYPARSE_REPLY), "reply");
	assert_string_equal(smtp_replyparse_error_str(SMTP_REPLYPARSE_E_TOO_MANY_LINES), "too many reply lines");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_replies_split),
		cmocka_unit_test(test_lines_and_text),
		cmocka_unit_test(test_enhanced_codes),
		cmocka_unit_test(test_two_replies_in_one_buffer),
		cmocka_unit_test(test_hostile_codes),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_ehlo_caps),
		cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
