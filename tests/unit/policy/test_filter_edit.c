/*
 * test_filter_edit - the header section editor of the filter
 * (src/policy/filter_edit.c): parsing stored header sections (hostile
 * ones too), the milter edits with Sendmail's index rules, refused edits
 * that would inject fields or end the header section, and removal of
 * Authentication-Results fields that claim our authserv-id.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "policy/filter_edit.h"

/* text_of - the fields written out (caller frees) */
static char *text_of(const struct filter_edit *e)
{
	struct strbuf sb;
	strbuf_init(&sb);
	filter_edit_write(e, &sb);
	if (sb.s == NULL)
		strbuf_adds(&sb, "");
	return strbuf_detach(&sb);
}

/* parse_ok - parse a complete message; returns the body offset */
static size_t parse_ok(struct filter_edit *e, const char *msg)
{
	size_t off = 99999;
	filter_edit_init(e);
	assert_int_equal(filter_edit_parse(e, msg, strlen(msg), 1, &off), 0);
	return off;
}

#define MSG "Received: from a\r\n\tby b; date\r\nFrom: A <a@example.org>\r\nSubject: one\r\n" \
	    "subject: two\r\n\r\nbody\r\n"

static void test_parse(void **state)
{
	(void)state;
	struct filter_edit e;
	size_t off = parse_ok(&e, MSG);
	assert_int_equal(e.n, 4);
	assert_string_equal(e.v[0].text, "Received: from a\r\n\tby b; date\r\n");
	assert_int_equal(e.v[0].name_len, 8);
	assert_string_equal(MSG + off, "\r\nbody\r\n");
	char *t = text_of(&e);
	assert_int_equal(strncmp(t, MSG, strlen(t)), 0);
	assert_int_equal(strlen(t), off);
	free(t);
	assert_int_equal(e.changed, 0);
	filter_edit_free(&e);

	/* no body, no empty line: the section is the whole content */
	off = parse_ok(&e, "A: 1\r\nB: 2\r\n");
	assert_int_equal(off, 12);
	assert_int_equal(e.n, 2);
	filter_edit_free(&e);

	/* a line that is no field starts the body (no empty line) */
	off = parse_ok(&e, "A: 1\r\nnot a field\r\nB: 2\r\n");
	assert_int_equal(e.n, 1);
	assert_int_equal(off, 6);
	filter_edit_free(&e);

	/* obs- white space before the colon is a field; a space-led first
	 * line is not */
	off = parse_ok(&e, "Name  : v\r\n x\r\n\r\n");
	assert_int_equal(e.n, 1);
	assert_int_equal(e.v[0].name_len, 4);
	filter_edit_free(&e);
	off = parse_ok(&e, " cont\r\nA: b\r\n");
	assert_int_equal(e.n, 0);
	assert_int_equal(off, 0);
	filter_edit_free(&e);

	/* bare LF line ends are taken, and written back as CRLF */
	off = parse_ok(&e, "A: 1\nB: 2\n\nbody");
	assert_int_equal(e.n, 2);
	assert_int_equal(off, 10);
	t = text_of(&e);
	assert_string_equal(t, "A: 1\r\nB: 2\r\n");
	free(t);
	filter_edit_free(&e);

	/* the content ends inside a field: written with a CRLF added */
	off = parse_ok(&e, "A: 1\r\nB: unterminated");
	assert_int_equal(e.n, 2);
	t = text_of(&e);
	assert_string_equal(t, "A: 1\r\nB: unterminated\r\n");
	free(t);
	filter_edit_free(&e);

	/* an empty content */
	off = parse_ok(&e, "");
	assert_int_equal(e.n, 0);
	assert_int_equal(off, 0);
	filter_edit_free(&e);
}

static void test_parse_incomplete(void **state)
{
	(void)state;
	struct filter_edit e;
	size_t off;
	/* only part of the content, and the section does not end in it */
	const char *p = "A: 1\r\nB: 2\r\n";
	filter_edit_init(&e);
	assert_int_equal(filter_edit_parse(&e, p, strlen(p), 0, &off), -1);
	filter_edit_free(&e);
	/* the cut falls inside the empty line's CRLF */
	p = "A: 1\r\n\r";
	filter_edit_init(&e);
	assert_int_equal(filter_edit_parse(&e, p, strlen(p), 0, &off), -1);
	filter_edit_free(&e);
	/* a folded field cut at its continuation */
	p = "A: 1\r\n";
	filter_edit_init(&e);
	assert_int_equal(filter_edit_parse(&e, p, strlen(p), 0, &off), -1);
	filter_edit_free(&e);
	/* but with the empty line inside the part, fine */
	p = "A: 1\r\n\r\nbody goes on";
	filter_edit_init(&e);
	assert_int_equal(filter_edit_parse(&e, p, strlen(p), 0, &off), 0);
	assert_int_equal(off, 6);
	filter_edit_free(&e);
	/* too many fields */
	struct strbuf big;
	strbuf_init(&big);
	for (int i = 0; i < FILTER_EDIT_FIELDS_MAX + 5; i++)
		strbuf_adds(&big, "X: y\r\n");
	filter_edit_init(&e);
	assert_int_equal(filter_edit_parse(&e, big.s, big.len, 1, &off), -1);
	filter_edit_free(&e);
	strbuf_free(&big);
}

static void test_add_insert(void **state)
{
	(void)state;
	struct filter_edit e;
	parse_ok(&e, MSG);
	assert_int_equal(filter_edit_add(&e, "X-Spam", "yes"), 0);
	assert_int_equal(e.changed, 1);
	assert_int_equal(filter_edit_insert(&e, 0, "X-Top", "first"), 0);
	assert_int_equal(filter_edit_insert(&e, 2, "X-Two", "after Received"), 0);
	assert_int_equal(filter_edit_insert(&e, 1000, "X-End", "appended"), 0);
	assert_int_equal(filter_edit_add(&e, "X-Folded", "a\r\n\tb"), 0);
	assert_int_equal(filter_edit_add(&e, "X-Empty", ""), 0);
	char *t = text_of(&e);
	assert_string_equal(t, "X-Top: first\r\n"
			       "Received: from a\r\n\tby b; date\r\n"
			       "X-Two: after Received\r\n"
			       "From: A <a@example.org>\r\n"
			       "Subject: one\r\n"
			       "subject: two\r\n"
			       "X-Spam: yes\r\n"
			       "X-End: appended\r\n"
			       "X-Folded: a\r\n\tb\r\n"
			       "X-Empty: \r\n");
	free(t);
	assert_int_equal(e.v[0].origin, FILTER_FIELD_ADDED);
	assert_int_equal(e.v[1].origin, FILTER_FIELD_RECEIVED);
	filter_edit_free(&e);
}

static void test_change(void **state)
{
	(void)state;
	struct filter_edit e;
	parse_ok(&e, MSG);
	/* the second Subject (names match without regard to case) */
	assert_int_equal(filter_edit_change(&e, 2, "SUBJECT", "2nd"), 0);
	/* index 0 is taken as the first */
	assert_int_equal(filter_edit_change(&e, 0, "subject", "1st"), 0);
	/* delete the Received field */
	assert_int_equal(filter_edit_change(&e, 1, "received", ""), 0);
	/* no third Subject: appended; deleting a missing one does nothing */
	assert_int_equal(filter_edit_change(&e, 3, "Subject", "3rd"), 0);
	assert_int_equal(filter_edit_change(&e, 1, "X-Missing", ""), 0);
	char *t = text_of(&e);
	assert_string_equal(t, "From: A <a@example.org>\r\n"
			       "subject: 1st\r\n"
			       "SUBJECT: 2nd\r\n"
			       "Subject: 3rd\r\n");
	free(t);
	filter_edit_free(&e);
}

static void test_refused_edits(void **state)
{
	(void)state;
	struct filter_edit e;
	parse_ok(&e, MSG);
	const char *bad_names[] = {"", "Bad Name", "Bad:Name", "Tab\tName", "Nl\r\nX", "\x7f", "\xc3\xa9"};
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
		assert_int_equal(filter_edit_add(&e, bad_names[i], "v"), -1);
		assert_int_equal(filter_edit_insert(&e, 0, bad_names[i], "v"), -1);
		assert_int_equal(filter_edit_change(&e, 1, bad_names[i], "v"), -1);
	}
	char longname[1100];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(filter_edit_add(&e, longname, "v"), -1);
	/* values that would end the section or add a field */
	const char *bad_values[] = {"a\r\n\r\nbody", "a\r\nX-Injected: 1", "a\nb", "a\rb", "a\r\n",
				    "bell\x07", "del\x7f", "a\r\n\r\n\tb"};
	for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
		assert_int_equal(filter_edit_add(&e, "X-A", bad_values[i]), -1);
		assert_int_equal(filter_edit_change(&e, 1, "Subject", bad_values[i]), -1);
	}
	assert_int_equal(e.changed, 0);
	char *t = text_of(&e);
	assert_int_equal(strncmp(t, MSG, strlen(t)), 0);
	free(t);
	/* 8-bit (UTF-8) values are fine */
	assert_int_equal(filter_edit_add(&e, "X-Utf8", "caf\xc3\xa9"), 0);
	filter_edit_free(&e);
}

static void test_drop_ours(void **state)
{
	(void)state;
	struct filter_edit e;
	parse_ok(&e, "Received: x\r\n"
		     "Authentication-Results: mx.example.test; dkim=pass\r\n"
		     "Authentication-Results: other.example; spf=pass\r\n"
		     "authentication-results:  MX.Example.Test. ;\r\n spf=pass\r\n"
		     "Authentication-Results: mx.example.test.evil; none\r\n"
		     "Subject: s\r\n\r\nbody");
	/* one added by a milter with our id is the milter's own (kept) */
	assert_int_equal(filter_edit_add(&e, "Authentication-Results", "mx.example.test; dkim=pass"), 0);
	e.changed = 0;
	assert_int_equal(filter_edit_drop_ours(&e, "mx.example.test"), 2);
	assert_int_equal(e.changed, 1);
	char *t = text_of(&e);
	assert_string_equal(t, "Received: x\r\n"
			       "Authentication-Results: other.example; spf=pass\r\n"
			       "Authentication-Results: mx.example.test.evil; none\r\n"
			       "Subject: s\r\n"
			       "Authentication-Results: mx.example.test; dkim=pass\r\n");
	free(t);
	assert_int_equal(filter_edit_drop_ours(&e, "mx.example.test"), 0);
	filter_edit_free(&e);
}

/* test_hostile_sections - random bytes: parse never fails on complete
 * content, and writing gives back the section with CRLF line ends only */
static void test_hostile_sections(void **state)
{
	(void)state;
	static const char alphabet[] = "ab:\r\n \t\x00\xff-X";
	unsigned seed = 7;
	char buf[300];
	for (int round = 0; round < 20000; round++) {
		size_t n = 0;
		seed = seed * 1103515245u + 12345u;
		size_t len = (seed >> 16) % sizeof(buf);
		for (; n < len; n++) {
			seed = seed * 1103515245u + 12345u;
			buf[n] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
		}
		struct filter_edit e;
		filter_edit_init(&e);
		size_t off = 0;
		assert_int_equal(filter_edit_parse(&e, buf, n, 1, &off), 0);
		assert_true(off <= n);
		size_t sum = 0;
		for (size_t i = 0; i < e.n; i++)
			sum += e.v[i].len;
		assert_int_equal(sum, off); /* the fields are exactly the section */
		(void)filter_edit_add(&e, "X-R", "v");
		(void)filter_edit_change(&e, (seed >> 8) % 4, "a", (seed & 1) ? "" : "w");
		(void)filter_edit_drop_ours(&e, "mx.example.test");
		struct strbuf out;
		strbuf_init(&out);
		filter_edit_write(&e, &out);
		for (size_t i = 0; i < out.len; i++)
			if (out.s[i] == '\n')
				assert_true(i > 0 && out.s[i - 1] == '\r');
		/* never an empty line: the header section cannot end early */
		assert_null(out.len ? memmem(out.s, out.len, "\r\n\r\n", 4) : NULL);
		strbuf_free(&out);
		filter_edit_free(&e);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_parse_incomplete),
		cmocka_unit_test(test_add_insert),
		cmocka_unit_test(test_change),
		cmocka_unit_test(test_refused_edits),
		cmocka_unit_test(test_drop_ours),
		cmocka_unit_test(test_hostile_sections),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
