/*
 * test_spf - SPF record parser and macro expander (RFC 7208 4.6, 7),
 * including the RFC 7.4 examples and hostile inputs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "dns/dns.h"
#include "policy/spf.h"

static const struct spf_macro_ctx ctx4 = {
	.sender = "strong-bad@email.example.com", .local = "strong-bad",
	.sender_domain = "email.example.com", .domain = "email.example.com",
	.ip = "192.0.2.3", .ipv6 = 0, .ipbytes = {192, 0, 2, 3},
	.helo = "mx.example.org", .receiver = "rx.example", .timestamp = 42};

/* expand - expand s as a domain-spec with ctx, asserting success */
static const char *expand(const struct spf_macro_ctx *ctx, const char *s, int exp)
{
	static char out[1024];
	long n = spf_macro_expand(s, strlen(s), ctx, exp, out, sizeof(out));
	assert_true(n >= 0);
	assert_int_equal((size_t)n, strlen(out));
	return out;
}

static void test_macro_rfc_examples(void **state)
{
	(void)state;
	assert_string_equal(expand(&ctx4, "%{s}", 0), "strong-bad@email.example.com");
	assert_string_equal(expand(&ctx4, "%{o}", 0), "email.example.com");
	assert_string_equal(expand(&ctx4, "%{d4}", 0), "email.example.com");
	assert_string_equal(expand(&ctx4, "%{d3}", 0), "email.example.com");
	assert_string_equal(expand(&ctx4, "%{d2}", 0), "example.com");
	assert_string_equal(expand(&ctx4, "%{d1}", 0), "com");
	assert_string_equal(expand(&ctx4, "%{dr}", 0), "com.example.email");
	assert_string_equal(expand(&ctx4, "%{d2r}", 0), "example.email");
	assert_string_equal(expand(&ctx4, "%{l}", 0), "strong-bad");
	assert_string_equal(expand(&ctx4, "%{l-}", 0), "strong.bad");
	assert_string_equal(expand(&ctx4, "%{lr}", 0), "strong-bad");
	assert_string_equal(expand(&ctx4, "%{lr-}", 0), "bad.strong");
	assert_string_equal(expand(&ctx4, "%{l1r-}", 0), "strong");
	assert_string_equal(expand(&ctx4, "%{ir}.%{v}._spf.%{d2}", 0), "3.2.0.192.in-addr._spf.example.com");
	assert_string_equal(expand(&ctx4, "%{lr-}.lp._spf.%{d2}", 0), "bad.strong.lp._spf.example.com");
	assert_string_equal(expand(&ctx4, "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", 0),
			    "bad.strong.lp.3.2.0.192.in-addr._spf.example.com");
	assert_string_equal(expand(&ctx4, "%{d2}.trusted-domains.example.net", 0),
			    "example.com.trusted-domains.example.net");
}

static void test_macro_ipv6_and_escapes(void **state)
{
	(void)state;
	struct spf_macro_ctx c6 = ctx4;
	static const unsigned char a6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xcb, 0x01};
	c6.ipv6 = 1;
	memcpy(c6.ipbytes, a6, 16);
	c6.ip = "2001:db8::cb01";
	assert_string_equal(expand(&c6, "%{ir}.%{v}._spf.%{d2}", 0),
			    "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com");
	assert_string_equal(expand(&ctx4, "a%%b%_c%-d", 1), "a%b c%20d");
	assert_string_equal(expand(&ctx4, "%{S}", 0), "strong-bad%40email.example.com");
	assert_string_equal(expand(&ctx4, "%{c} %{r} %{t}", 1), "192.0.2.3 rx.example 42");
	assert_string_equal(expand(&ctx4, "%{p}", 0), "unknown");
	/* a huge digit count keeps every part */
	assert_string_equal(expand(&ctx4, "%{d99999999999999999999}", 0), "email.example.com");
}

static void test_macro_hostile(void **state)
{
	(void)state;
	static const char *bad[] = {"%", "%{", "%{s", "%{}", "%{x}", "%{s0}", "%{d2r+x}",
				    "%a", "%{c}", "%{r}", "%{t}", "a b", "\x01", "%{1}"};
	char out[64];
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(spf_macro_expand(bad[i], strlen(bad[i]), &ctx4, 0, out, sizeof(out)), -1);
	/* overflow is reported, never written past the buffer */
	assert_int_equal(spf_macro_expand("%{s}%{s}%{s}", 12, &ctx4, 0, out, 20), -2);
	assert_int_equal(spf_macro_expand("abc", 3, &ctx4, 0, out, 3), -2);
	assert_int_equal(spf_macro_expand("abc", 3, &ctx4, 0, out, 0), -2);
	/* many delimiters in the value */
	struct spf_macro_ctx c = ctx4;
	char *big = malloc(1001);
	memset(big, '.', 1000);
	big[1000] = '\0';
	c.local = big;
	char *o = malloc(4096);
	assert_true(spf_macro_expand("%{lr}", 5, &c, 0, o, 4096) == 1000);
	assert_true(spf_macro_expand("%{l3}", 5, &c, 0, o, 4096) == 2);
	free(o);
	free(big);
}

/* parse - parse a NUL-ended record */
static int parse(const char *s, struct spf_record *r)
{
	return spf_record_parse(s, strlen(s), r);
}

static void test_record_parse_ok(void **state)
{
	(void)state;
	struct spf_record *r = malloc(sizeof(*r));
	assert_int_equal(parse("v=spf1", r), 0);
	assert_int_equal(r->nterms, 0);
	assert_int_equal(parse("V=SPF1  a:mail.%{d}/24//64 -MX ~ip4:192.0.2.0/24 ?ip6:2001:db8::/32 "
			       "include:_spf.example.com exists:%{ir}.x.example ptr -all "
			       "redirect=_spf.example.net exp=exp.%{d} foo=bar%{l}", r), 0);
	assert_int_equal(r->nterms, 8);
	assert_int_equal(r->terms[0].mech, SPF_MECH_A);
	assert_int_equal(r->terms[0].qual, SPF_PASS);
	assert_int_equal(r->terms[0].cidr4, 24);
	assert_int_equal(r->terms[0].cidr6, 64);
	assert_int_equal(r->terms[0].speclen, strlen("mail.%{d}"));
	assert_int_equal(r->terms[1].mech, SPF_MECH_MX);
	assert_int_equal(r->terms[1].qual, SPF_FAIL);
	assert_null(r->terms[1].spec);
	assert_int_equal(r->terms[2].qual, SPF_SOFTFAIL);
	assert_int_equal(r->terms[2].cidr4, 24);
	assert_int_equal(r->terms[2].addr[0], 192);
	assert_int_equal(r->terms[3].qual, SPF_NEUTRAL);
	assert_int_equal(r->terms[3].cidr6, 32);
	assert_int_equal(r->terms[7].mech, SPF_MECH_ALL);
	assert_non_null(r->redirect);
	assert_int_equal(r->redirectlen, strlen("_spf.example.net"));
	assert_non_null(r->exp);
	/* a '/' that does not start a dual-cidr belongs to the domain-spec */
	assert_int_equal(parse("v=spf1 a:foo:bar/baz.example.com mx:x.example.com/24//64", r), 0);
	assert_int_equal(r->terms[0].speclen, strlen("foo:bar/baz.example.com"));
	assert_int_equal(r->terms[0].cidr4, 32);
	assert_int_equal(r->terms[1].speclen, strlen("x.example.com"));
	assert_int_equal(r->terms[1].cidr6, 64);
	/* unknown modifiers are ignored, trailing spaces are fine */
	assert_int_equal(parse("v=spf1 moo.cow-far_out=man:dog/cat ip4:192.0.2.0/0 ", r), 0);
	assert_int_equal(r->nterms, 1);
	assert_int_equal(r->terms[0].cidr4, 0);
	free(r);
}

static void test_record_parse_bad(void **state)
{
	(void)state;
	static const char *bad[] = {
		"v=spf10", "spf1", "v=spf1 foo", "v=spf1 a:", "v=spf1 ip4:1.2.3", "v=spf1 ip4:192.0.2.0/33",
		"v=spf1 ip4:192.0.2.0/024", "v=spf1 ip6:2001:db8::/129", "v=spf1 a/33", "v=spf1 a//129",
		"v=spf1 include", "v=spf1 include:", "v=spf1 exists", "v=spf1 all:x", "v=spf1 -redirect=x.com",
		"v=spf1 redirect=a.com redirect=b.com", "v=spf1 exp=a.com exp=b.com", "v=spf1 a:foo.1",
		"v=spf1 a:foo", "v=spf1 a:%{x}.com", "v=spf1 mx:%{s0}.com", "v=spf1 ptr/24",
		"v=spf1 1x=y", "v=spf1 foo=%", "v=spf1 ip4:192.0.2.1/", "v=spf1 a:b.com/24/",
		"v=spf1 ip6:192.0.2.1", "v=spf1 ip4:::1", "v=spf1 \x80", "v=spf1 ++all", "v=spf1 =x",
	};
	struct spf_record *r = malloc(sizeof(*r));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i], r) != -1)
			fail_msg("accepted: %s", bad[i]);
	}
	/* too many terms */
	char *big = malloc(8 + (SPF_TERMS_MAX + 1) * 4 + 1);
	strcpy(big, "v=spf1");
	for (int i = 0; i <= SPF_TERMS_MAX; i++)
		strcat(big, " all");
	assert_int_equal(parse(big, r), -1);
	/* embedded NUL is not a valid character */
	assert_int_equal(spf_record_parse("v=spf1 a\0b", 10, r), -1);
	free(big);
	free(r);
}

static void test_result_names(void **state)
{
	(void)state;
	assert_string_equal(spf_result_str(SPF_PASS), "pass");
	assert_string_equal(spf_result_str(SPF_PERMERROR), "permerror");
	assert_string_equal(spf_result_str((enum spf_result)99), "unknown");
	assert_string_equal(spf_mech_str(SPF_MECH_EXISTS), "exists");
}

struct async_res {
	int calls;
	enum spf_result r;
	struct event_base *base;
};

/* async_done - record the callback */
static void async_done(void *arg, enum spf_result r, const char *expl)
{
	struct async_res *a = arg;
	(void)expl;
	a->calls++;
	a->r = r;
	event_base_loopbreak(a->base);
}

static void test_check_async(void **state)
{
	(void)state;
	char err[128];
	struct async_res a = {0};
	a.base = event_base_new();
	/* a resolver nobody answers: nothing below may need it */
	struct dns *dns = dns_new(a.base, "127.0.0.1:9", err, sizeof(err));
	assert_non_null(dns);
	/* bad client address: no check, no callback */
	assert_null(spf_check_start(dns, "300.1.2.3", "a@example.com", "h.example", NULL, async_done, &a));
	assert_null(spf_check_start(dns, "", "a@example.com", "h.example", NULL, async_done, &a));
	/* null path with a single-label HELO: "none" (RFC 7208 4.3), from the
	 * loop and never from inside spf_check_start */
	struct spf_check *c = spf_check_start(dns, "192.0.2.1", "", "OEMCOMPUTER", NULL, async_done, &a);
	assert_non_null(c);
	assert_int_equal(a.calls, 0);
	event_base_dispatch(a.base);
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.r, SPF_NONE);
	/* an address-literal domain is not a domain either */
	c = spf_check_start(dns, "2001:db8::1", "foo@[192.0.2.1]", "h.example", NULL, async_done, &a);
	assert_non_null(c);
	event_base_dispatch(a.base);
	assert_int_equal(a.calls, 2);
	assert_int_equal(a.r, SPF_NONE);
	/* cancel: the callback never runs, nothing leaks (ASan) */
	c = spf_check_start(dns, "192.0.2.1", "x@example.com", "h.example", "rx.example", async_done, &a);
	assert_non_null(c);
	spf_check_cancel(c);
	spf_check_cancel(NULL);
	/* an overlong identity is refused */
	char *big = malloc(5000);
	memset(big, 'a', 4999);
	big[4999] = '\0';
	assert_null(spf_check_start(dns, "192.0.2.1", big, "h.example", NULL, async_done, &a));
	free(big);
	dns_free(dns);
	assert_int_equal(a.calls, 2);
	event_base_free(a.base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_macro_rfc_examples),
		cmocka_unit_test(test_macro_ipv6_and_escapes),
		cmocka_unit_test(test_macro_hostile),
		cmocka_unit_test(test_record_parse_ok),
		cmocka_unit_test(test_record_parse_bad),
		cmocka_unit_test(test_result_names),
		cmocka_unit_test(test_check_async),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
