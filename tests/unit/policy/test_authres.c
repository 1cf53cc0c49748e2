/*
 * test_authres - Authentication-Results (RFC 8601): the composed field
 * (exact text, quoting, folding under 78 columns, hostile values never
 * adding a line or a field), and the authserv-id parser behind the
 * forged-field check (CFWS, comments, quoted ids, versions, lookalikes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "policy/authres.h"

/* check_field - every CRLF but the last is followed by a tab (folding),
 * no bare CR/LF, no control byte or 8-bit byte, lines < 998 */
static void check_field(const struct strbuf *f, size_t maxline)
{
	assert_true(f->len >= 2);
	assert_memory_equal(f->s + f->len - 2, "\r\n", 2);
	size_t col = 0;
	for (size_t i = 0; i < f->len; i++) {
		unsigned char c = (unsigned char)f->s[i];
		if (c == '\r') {
			assert_true(i + 1 < f->len && f->s[i + 1] == '\n');
			if (i + 2 < f->len)
				assert_true(f->s[i + 2] == '\t');
			assert_true(col <= maxline);
			col = 0;
			i++;
			continue;
		}
		assert_true(c != '\n');
		assert_true(c == '\t' || (c >= 0x20 && c < 0x7f));
		col++;
	}
}

static void test_compose_basic(void **st)
{
	(void)st;
	struct strbuf sb;
	struct authres a;
	strbuf_init(&sb);
	authres_begin(&a, &sb, "mx.example.org");
	authres_method(&a, "spf", "pass");
	authres_prop(&a, "smtp.mailfrom", "sender@example.com");
	authres_method(&a, "dkim", "pass");
	authres_prop(&a, "header.d", "example.com");
	authres_prop(&a, "header.s", "sel");
	authres_prop(&a, "header.b", "AbCd+/12");
	authres_method(&a, "dmarc", "pass");
	authres_comment(&a, "p=reject dis=none");
	authres_prop(&a, "header.from", "example.com");
	authres_end(&a);
	assert_string_equal(sb.s, "Authentication-Results: mx.example.org;\r\n"
				  "\tspf=pass smtp.mailfrom=sender@example.com;\r\n"
				  "\tdkim=pass header.d=example.com header.s=sel header.b=\"AbCd+/12\";\r\n"
				  "\tdmarc=pass (p=reject dis=none) header.from=example.com\r\n");
	check_field(&sb, 78);
	/* nothing to report */
	strbuf_reset(&sb);
	authres_begin(&a, &sb, "mx.example.org");
	authres_end(&a);
	assert_string_equal(sb.s, "Authentication-Results: mx.example.org; none\r\n");
	strbuf_free(&sb);
}

/* prop_text - the text one property gives */
static void prop_text(const char *value, const char *want)
{
	struct strbuf sb;
	struct authres a;
	strbuf_init(&sb);
	authres_begin(&a, &sb, "h");
	authres_method(&a, "spf", "pass");
	authres_prop(&a, "smtp.mailfrom", value);
	authres_end(&a);
	const char *p = strstr(sb.s, "smtp.mailfrom=");
	assert_non_null(p);
	p += strlen("smtp.mailfrom=");
	size_t n = strlen(p) - 2; /* CRLF */
	if (n != strlen(want) || memcmp(p, want, n) != 0)
		fail_msg("value %s -> %.*s, want %s", value, (int)n, p, want);
	check_field(&sb, 998);
	strbuf_free(&sb);
}

static void test_quoting(void **st)
{
	(void)st;
	prop_text("example.com", "example.com");
	prop_text("a.b+tag@example.com", "a.b+tag@example.com");
	prop_text("@example.com", "@example.com");
	prop_text("token-only", "token-only");
	prop_text("", "\"\"");
	prop_text("a b@example.com", "\"a b@example.com\"");
	prop_text("\"x y\"@example.com", "\"\\\"x y\\\"@example.com\"");
	prop_text("back\\slash", "\"back\\\\slash\"");
	prop_text("a@exa_mple.com", "a@exa_mple.com");
	prop_text("a@-", "a@-");
	prop_text("a..b@example.com", "\"a..b@example.com\"");
	prop_text("a@example..com", "\"a@example..com\"");
	prop_text("a;b", "\"a;b\"");
	prop_text("a(b)", "\"a(b)\"");
	/* hostile: line breaks, NUL-free controls, 8-bit */
	prop_text("a@example.com\r\nX-Evil: 1", "\"a@example.com??X-Evil: 1\"");
	prop_text("a\x01\x7f@example.com", "a??@example.com"); /* '?' is atext */
	prop_text("j\xc3\xb6rg@example.com", "j??rg@example.com");
	prop_text("\t", "\"?\"");
}

static void test_hostile_and_folding(void **st)
{
	(void)st;
	struct strbuf sb;
	struct authres a;
	char big[5000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	strbuf_init(&sb);
	authres_begin(&a, &sb, "mx.example.org");
	authres_method(&a, "spf", "softfail");
	authres_prop(&a, "smtp.mailfrom", big);
	authres_method(&a, "dkim", "fail");
	authres_comment(&a, "evil) (comment\\ \r\n X-Injected: yes");
	for (int i = 0; i < 20; i++)
		authres_prop(&a, "header.d", "a-fairly-long-domain-name.example.com");
	authres_method(&a, "dmarc\r\n", "fail\r\nX: y");
	authres_end(&a);
	check_field(&sb, 400);
	/* values are capped */
	const char *x = strstr(sb.s, "smtp.mailfrom=");
	assert_non_null(x);
	assert_true(strspn(x + 14, "x") == AUTHRES_VALUE_MAX);
	/* the comment is escaped, its line break gone */
	assert_non_null(strstr(sb.s, "(evil\\) \\(comment\\\\ ?? X-Injected: yes)"));
	assert_null(strstr(sb.s, "\nX-Injected"));
	/* method and result keep only token characters */
	assert_non_null(strstr(sb.s, "\tdmarc=failXy"));
	/* short pieces are folded under 78 columns: every line of the
	 * header.d run fits */
	const char *p = strstr(sb.s, "\tdkim=fail");
	const char *end = strstr(p, ";\r\n");
	for (const char *l = p; l < end;) {
		const char *nl = strstr(l, "\r\n");
		assert_true(nl - l <= 78);
		l = nl + 2;
	}
	strbuf_free(&sb);
	/* a hostile authserv-id is quoted and cleaned */
	strbuf_init(&sb);
	authres_begin(&a, &sb, "mx example\r\nX-Evil: 1");
	authres_end(&a);
	assert_string_equal(sb.s, "Authentication-Results: \"mx example??X-Evil: 1\"; none\r\n");
	strbuf_reset(&sb);
	authres_begin(&a, &sb, "");
	authres_end(&a);
	assert_string_equal(sb.s, "Authentication-Results: localhost; none\r\n");
	strbuf_free(&sb);
}

/* id_of - authres_parse_id of a field, or "-" */
static const char *id_of(const char *field)
{
	static char id[AUTHRES_ID_MAX + 1];
	if (authres_parse_id(field, strlen(field), id, sizeof(id)) < 0)
		return "-";
	return id;
}

static void test_parse_id(void **st)
{
	(void)st;
	assert_string_equal(id_of("Authentication-Results: mx.example.org; spf=pass"), "mx.example.org");
	assert_string_equal(id_of("Authentication-Results:mx.example.org;spf=pass"), "mx.example.org");
	assert_string_equal(id_of("authentication-results : mx.example.org 1; none"), "mx.example.org");
	assert_string_equal(id_of("Authentication-Results: (c1 (nested \\) ) x) mx.example.org (v) 1; none"),
			    "mx.example.org");
	assert_string_equal(id_of("Authentication-Results:\r\n\t mx.example.org;\r\n\tdkim=pass"), "mx.example.org");
	assert_string_equal(id_of("Authentication-Results: \"mx.exa\\mple.org\"; none"), "mx.example.org");
	assert_string_equal(id_of("Authentication-Results: mx.example.org"), "mx.example.org");
	assert_string_equal(id_of("Authentication-Results: mx.example.org/v1; none"), "mx.example.org");
	/* not an A-R field or no id */
	assert_string_equal(id_of("X-Authentication-Results: mx.example.org; none"), "-");
	assert_string_equal(id_of("ARC-Authentication-Results: i=1; mx.example.org; none"), "-");
	assert_string_equal(id_of("Authentication-Results mx.example.org"), "-");
	assert_string_equal(id_of("Authentication-Results-X: mx.example.org"), "-");
	assert_string_equal(id_of("Authentication-Results:"), "-");
	assert_string_equal(id_of("Authentication-Results: ; spf=pass"), "-");
	assert_string_equal(id_of("Authentication-Results: (unterminated mx.example.org; none"), "-");
	assert_string_equal(id_of("Authentication-Results: \"unterminated; none"), "-");
	assert_string_equal(id_of("Authentication-Results: \"\"; none"), "-");
	assert_string_equal(id_of("Authentication"), "-");
	assert_string_equal(id_of(""), "-");
	/* an id longer than the buffer */
	char big[600];
	snprintf(big, sizeof(big), "Authentication-Results: %0500d; none", 0);
	assert_string_equal(id_of(big), "-");
	/* comments nested past the limit */
	char deep[200];
	size_t k = (size_t)snprintf(deep, sizeof(deep), "Authentication-Results: ");
	for (int i = 0; i < 40; i++)
		deep[k++] = '(';
	for (int i = 0; i < 40; i++)
		deep[k++] = ')';
	snprintf(deep + k, sizeof(deep) - k, " mx.example.org; none");
	assert_string_equal(id_of(deep), "-");
}

/* ours - authres_field_is_ours for mx.example.org */
static int ours(const char *field)
{
	return authres_field_is_ours(field, strlen(field), "mx.example.org");
}

static void test_is_ours(void **st)
{
	(void)st;
	assert_true(ours("Authentication-Results: mx.example.org; dkim=pass header.d=bank.example"));
	assert_true(ours("AUTHENTICATION-RESULTS: MX.Example.ORG; spf=pass"));
	assert_true(ours("Authentication-Results: mx.example.org.; spf=pass"));
	assert_true(ours("Authentication-Results: \"mx.example.org\"; spf=pass"));
	assert_true(ours("Authentication-Results: \" mx.example.org \"; spf=pass"));
	assert_true(ours("Authentication-Results: (forged) mx.example.org 1; spf=pass"));
	assert_true(ours("Authentication-Results:\r\n mx.example.org\r\n ; spf=pass\r\n"));
	assert_true(ours("Authentication-Results: mx.example.org"));
	assert_true(ours("Authentication-Results: mx.example.org/1; spf=pass"));
	assert_true(ours("Authentication-Results: mx.example.org(c); spf=pass"));
	assert_true(ours("Authentication-Results\t: mx.example.org; spf=pass"));
	/* not ours */
	assert_false(ours("Authentication-Results: mx.example.net; spf=pass"));
	assert_false(ours("Authentication-Results: mx.example.org.evil.example; spf=pass"));
	assert_false(ours("Authentication-Results: sub.mx.example.org; spf=pass"));
	assert_false(ours("Authentication-Results: mx.example.orgx; spf=pass"));
	assert_false(ours("Authentication-Results: xmx.example.org; spf=pass"));
	/* an id that cannot be read counts as ours (fail closed): an empty
	 * one, comments nested deeper than we follow, unterminated ones, an
	 * id longer than any host name */
	assert_true(ours("Authentication-Results: ; mx.example.org"));
	char deep[400];
	size_t k = (size_t)snprintf(deep, sizeof(deep), "Authentication-Results: ");
	for (int d = 0; d < 40; d++)
		deep[k++] = '(';
	for (int d = 0; d < 40; d++)
		deep[k++] = ')';
	snprintf(deep + k, sizeof(deep) - k, " mx.example.org; dkim=pass");
	assert_true(ours(deep));
	assert_true(ours("Authentication-Results: (unterminated mx.example.org; dkim=pass"));
	char longq[600];
	snprintf(longq, sizeof(longq), "Authentication-Results: \"mx.example.org%300s\"; dkim=pass", "");
	assert_true(ours(longq));
	assert_false(ours("Authentication-Results: (mx.example.org) other.example; spf=pass"));
	assert_false(ours("X-Authentication-Results: mx.example.org; spf=pass"));
	assert_false(ours("ARC-Authentication-Results: i=1; mx.example.org; spf=pass"));
	assert_false(ours("Received: from mx.example.org"));
	assert_false(ours(""));
	assert_false(authres_field_is_ours("Authentication-Results: mx.example.org", 10, "mx.example.org"));
	assert_false(authres_field_is_ours("Authentication-Results: x", 25, ""));
	assert_false(authres_field_is_ours(NULL, 0, "mx.example.org"));
	/* a NUL inside a quoted id ends it (fuzz_authres regression: the id
	 * read was "" and the field did not claim it) */
	static const char nulq[] = "Authentication-Results: (c\001x\000)\r\"\000 ample.org\" 1;\r\n\tspf=pass";
	char id[AUTHRES_ID_MAX + 1];
	assert_int_equal(authres_parse_id(nulq, sizeof(nulq) - 1, id, sizeof(id)), -1);
	static const char nulq2[] = "Authentication-Results: \"mx.example.org\000.evil\"; none";
	assert_int_equal(authres_parse_id(nulq2, sizeof(nulq2) - 1, id, sizeof(id)), 0);
	assert_string_equal(id, "mx.example.org");
	assert_true(authres_field_is_ours(nulq2, sizeof(nulq2) - 1, "mx.example.org"));
	/* a NUL after our name: a reader stopping there sees ours, so it is */
	assert_true(authres_field_is_ours("Authentication-Results: mx.example.org\0x; none", 46, "mx.example.org"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_compose_basic),
		cmocka_unit_test(test_quoting),
		cmocka_unit_test(test_hostile_and_folding),
		cmocka_unit_test(test_parse_id),
		cmocka_unit_test(test_is_ours),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
