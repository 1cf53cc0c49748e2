/*
 * test_spf - SPF record parser and macro expander (RFC 7208 4.6, 7),
 * including the RFC 7.4 examples and hostile inputs; target-name escaping;
 * the Received-SPF field (9.1); and whole check_host() runs against a
 * small authoritative DNS server forked here (fake_*: a table of records,
 * every query logged), for the lookup limits (4.6.4), names with any
 * octet, %{p}, exp=, HELO checks and the DNS error paths.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "core/buf.h"
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
	/* RFC 7208 7.4 writes the nibbles in lower case, the RFC 7208 test
	 * suite (v-macro-ip6, an explanation) in upper case; DNS does not
	 * care (RFC 4343), the explanation text does: upper case */
	assert_string_equal(expand(&c6, "%{ir}.%{v}._spf.%{d2}", 0),
			    "1.0.B.C.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.B.D.0.1.0.0.2.ip6._spf.example.com");
	assert_string_equal(expand(&c6, "%{i}", 1),
			    "2.0.0.1.0.D.B.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.C.B.0.1");
	assert_string_equal(expand(&c6, "%{c} %{v}", 1), "2001:db8::cb01 ip6");
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

/* ---- target names: escaping for DNS and back ---- */

static void test_name_escape(void **state)
{
	(void)state;
	char out[DNS_NAME_TEXT_MAX], back[DNS_NAME_TEXT_MAX];
	/* the suite's names: every octet kept, as \DDD where not plain */
	assert_int_equal(spf_name_escape("foo:bar/baz.example.com", out, sizeof(out)), 0);
	assert_string_equal(out, "foo\\058bar\\047baz.example.com");
	assert_int_equal(spf_name_escape("macro%percent  space%20url-space.example.com", out, sizeof(out)), 0);
	assert_string_equal(out, "macro\\037percent\\032\\032space\\03720url-space.example.com");
	/* a backslash is an octet, never an escape; 8-bit and controls too */
	assert_int_equal(spf_name_escape("a\\b.\x01\xff.Ex_-9", out, sizeof(out)), 0);
	assert_string_equal(out, "a\\\\b.\\001\\255.Ex_-9");
	assert_int_equal(spf_name_escape("", out, sizeof(out)), 0);
	assert_string_equal(out, "");
	/* never past the buffer */
	assert_int_equal(spf_name_escape("a:b", out, 4), -1);
	assert_int_equal(spf_name_escape("a:b", out, 7), 0);
	assert_int_equal(spf_name_escape("a:b", out, 6), -1);
	assert_int_equal(spf_name_escape("a", out, 0), -1);
	/* the longest target (253 octets, all escaped) fits a name buffer */
	char big[254];
	memset(big, '%', 253);
	big[253] = '\0';
	assert_int_equal(spf_name_escape(big, out, sizeof(out)), 0);
	assert_int_equal(strlen(out), 253 * 4);
	/* round trip */
	assert_int_equal(spf_name_escape("foo:bar/baz.example.com", out, sizeof(out)), 0);
	assert_int_equal(spf_name_unescape(out, back, sizeof(back)), 0);
	assert_string_equal(back, "foo:bar/baz.example.com");
	assert_int_equal(spf_name_unescape("a\\\\b.c\\041d", back, sizeof(back)), 0);
	assert_string_equal(back, "a\\b.c)d");
	/* hostile: bad escapes, an escaped dot, a space, NUL, 8-bit, overflow */
	static const char *bad[] = {"a\\", "a\\0", "a\\04", "a\\04x", "a\\.b", "a\\046b", "a\\032b",
				    "a\\000b", "a\\255b", "a\\999b", "a b", "\xc3\xa9.com"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (spf_name_unescape(bad[i], back, sizeof(back)) != -1)
			fail_msg("unescaped: %s", bad[i]);
	assert_int_equal(spf_name_unescape("abc", back, 3), -1);
	assert_int_equal(spf_name_unescape("abc", back, 4), 0);
}

/* ---- Received-SPF (RFC 7208 9.1) ---- */

/* hdr - the field for these values, as a NUL-ended string (static) */
static const char *hdr(enum spf_result r, const char *ip, const char *from, const char *helo, const char *rcv)
{
	static char text[4096];
	struct strbuf sb;
	strbuf_init(&sb);
	spf_received_header(r, ip, from, helo, rcv, &sb);
	assert_true(sb.len < sizeof(text));
	memcpy(text, sb.s, sb.len);
	text[sb.len] = '\0';
	strbuf_free(&sb);
	return text;
}

/* unfold - the field with each fold (CRLF WSP) as one space */
static const char *unfold(const char *h)
{
	static char text[4096];
	size_t o = 0;
	for (size_t i = 0; h[i]; i++) {
		if (h[i] == '\r' && h[i + 1] == '\n' && (h[i + 2] == '\t' || h[i + 2] == ' ')) {
			text[o++] = ' '; /* the fold stands for one space */
			i += 2;
			continue;
		}
		text[o++] = h[i];
	}
	text[o] = '\0';
	return text;
}

/* assert_field_shape - one field: CRLF only at the end or before WSP,
 * no other control byte, no line over 78 octets */
static void assert_field_shape(const char *h)
{
	size_t n = strlen(h), col = 0;
	assert_true(n > 2);
	assert_memory_equal(h + n - 2, "\r\n", 2);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)h[i];
		if (ch == '\r') {
			assert_int_equal(h[i + 1], '\n');
			assert_true(i + 2 == n || h[i + 2] == '\t');
			assert_true(col <= 78);
			col = 0;
			i++;
			continue;
		}
		assert_true(ch == '\t' || (ch >= 0x20 && ch <= 0x7e));
		col++;
	}
}

static void test_received_header(void **state)
{
	(void)state;
	const char *h = hdr(SPF_PASS, "192.0.2.1", "myname@example.com", "foo.example.com", "mybox.example.org");
	assert_field_shape(h);
	assert_string_equal(unfold(h),
			    "Received-SPF: pass (mybox.example.org: domain of myname@example.com designates "
			    "192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from=\"myname@example.com\"; "
			    "helo=foo.example.com; receiver=mybox.example.org; identity=mailfrom\r\n");
	/* the null path: the HELO identity, postmaster@helo, no envelope-from */
	h = hdr(SPF_FAIL, "2001:db8::1", "", "mx.example.net", "rx.example");
	assert_field_shape(h);
	assert_string_equal(unfold(h),
			    "Received-SPF: fail (rx.example: domain of postmaster@mx.example.net does not "
			    "designate 2001:db8::1 as permitted sender) client-ip=\"2001:db8::1\"; "
			    "helo=mx.example.net; receiver=rx.example; identity=helo\r\n");
	/* every result has its word and comment */
	static const struct {
		enum spf_result r;
		const char *start;
	} words[] = {
		{SPF_NONE, "Received-SPF: none (r.example: domain of a@b.example does not designate permitted"},
		{SPF_NEUTRAL, "Received-SPF: neutral (r.example: 192.0.2.9 is neither permitted nor denied"},
		{SPF_SOFTFAIL, "Received-SPF: softfail (r.example: domain of transitioning a@b.example"},
		{SPF_TEMPERROR, "Received-SPF: temperror (r.example: temporary error in processing"},
		{SPF_PERMERROR, "Received-SPF: permerror (r.example: permanent error in processing"},
		{(enum spf_result)77, "Received-SPF: permerror (r.example: permanent error in processing"},
	};
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		h = hdr(words[i].r, "192.0.2.9", "a@b.example", "h.example", "r.example");
		assert_field_shape(h);
		if (strncmp(unfold(h), words[i].start, strlen(words[i].start)) != 0)
			fail_msg("%s", h);
	}
}

static void test_received_header_hostile(void **state)
{
	(void)state;
	/* header injection through any identity: CR/LF and controls become
	 * '?', so the result stays one field */
	const char *h = hdr(SPF_PASS, "192.0.2.1\r\nX-Evil: 1", "a@b.example\r\nX-Evil: 2",
			    "h.example\nX-Evil: 3", "rx\r.example\x01\x7f");
	assert_field_shape(h);
	assert_null(strstr(h, "\nX-Evil"));
	assert_non_null(strstr(unfold(h), "helo=\"h.example?X-Evil: 3\";"));
	assert_non_null(strstr(unfold(h), "receiver=rx?.example??;"));
	/* quotes and backslashes are quoted-pairs in a quoted-string; parens
	 * and backslashes in the comment too; 8-bit becomes '?' */
	h = hdr(SPF_FAIL, "192.0.2.1", "\"x y\"\\(z)@b.example", "h\xc3\xa9.example", NULL);
	assert_field_shape(h);
	const char *u = unfold(h);
	assert_non_null(strstr(u, "envelope-from=\"\\\"x y\\\"\\\\(z)@b.example\";"));
	assert_non_null(strstr(u, "(domain of \"x\\ y\"\\\\\\(z\\)@b.example does not designate"));
	assert_non_null(strstr(u, "helo=h??.example;"));
	assert_null(strstr(u, "receiver="));
	/* a dot-atom needs no quotes; leading, trailing, double dots do */
	assert_non_null(strstr(unfold(hdr(SPF_PASS, "1.2.3.4", "a.b@c", ".h", "r.")), "helo=\".h\";"));
	assert_non_null(strstr(unfold(hdr(SPF_PASS, "1.2.3.4", "a..b@c", "h", "r.")), "envelope-from=\"a..b@c\";"));
	assert_non_null(strstr(unfold(hdr(SPF_PASS, "1.2.3.4", "a.b@c", "h", "r.")), "receiver=\"r.\";"));
	/* NULLs and empties */
	h = hdr(SPF_NONE, NULL, NULL, NULL, NULL);
	assert_field_shape(h);
	assert_string_equal(unfold(h), "Received-SPF: none (domain of postmaster@ does not designate permitted "
				       "sender hosts) client-ip=\"\"; identity=helo\r\n");
	/* huge values are cut to 255 bytes each, lines stay short enough to
	 * fold, and the field ends in CRLF */
	char *big = malloc(5001);
	memset(big, 'a', 5000);
	big[5000] = '\0';
	h = hdr(SPF_PASS, big, big, big, big);
	assert_true(strlen(h) < 2500);
	assert_memory_equal(h + strlen(h) - 2, "\r\n", 2);
	for (const char *p = h; *p; p++)
		assert_true(*p == '\r' || *p == '\n' || *p == '\t' || (*p >= 0x20 && *p <= 0x7e));
	free(big);
	/* it appends */
	struct strbuf sb;
	strbuf_init(&sb);
	strbuf_adds(&sb, "X-First: 1\r\n");
	spf_received_header(SPF_PASS, "192.0.2.1", "a@b.example", "h.example", "r.example", &sb);
	assert_true(strncmp(sb.s, "X-First: 1\r\nReceived-SPF: pass (", 32) == 0);
	strbuf_free(&sb);
}

/* ---- a small authoritative DNS server for whole checks ---- */

/* one record: name as text (any octets; '.' between labels), type
 * "A" "AAAA" "MX" ("10 name") "PTR" "CNAME" "TXT" (strings split at
 * '\x1e') or "SERVFAIL" (the name answers every query with SERVFAIL) */
struct zrec {
	const char *name, *type, *data;
};

struct fake {
	pid_t pid;
	int port;
	int logfd;        /* read end: one "TYPE name" line per query */
	char log[16384];
};

/* fake_name - wire name at p into text (octets as is), lower case; -1 bad */
static int fake_name(const unsigned char *p, size_t len, size_t *used, char *out, size_t outlen)
{
	size_t i = 0, o = 0;
	while (i < len && p[i] != 0) {
		size_t l = p[i++];
		if (l > 63 || i + l > len || o + l + 2 > outlen)
			return -1;
		if (o)
			out[o++] = '.';
		for (size_t k = 0; k < l; k++) {
			unsigned char ch = p[i + k];
			out[o++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
		}
		i += l;
	}
	if (i >= len)
		return -1;
	out[o] = '\0';
	*used = i + 1;
	return 0;
}

/* fake_put_name - text name as wire labels ("\\." is a dot in a label) */
static size_t fake_put_name(unsigned char *w, const char *name)
{
	size_t o = 0;
	const char *p = name;
	while (*p) {
		size_t len = o++;
		while (*p && *p != '.') {
			if (p[0] == '\\' && p[1] == '.')
				p++;
			w[o++] = (unsigned char)*p++;
		}
		w[len] = (unsigned char)(o - len - 1);
		if (*p == '.')
			p++;
	}
	w[o++] = 0;
	return o;
}

/* fake_type - the type number of a record type name */
static int fake_type(const char *t)
{
	static const struct {
		const char *n;
		int v;
	} types[] = {{"A", 1}, {"CNAME", 5}, {"PTR", 12}, {"MX", 15}, {"TXT", 16}, {"AAAA", 28}};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (strcmp(types[i].n, t) == 0)
			return types[i].v;
	return -1;
}

/* fake_rdata - a record's rdata into w; its length */
static size_t fake_rdata(unsigned char *w, const struct zrec *r)
{
	size_t o = 0;
	if (strcmp(r->type, "A") == 0) {
		assert_int_equal(inet_pton(AF_INET, r->data, w), 1);
		return 4;
	}
	if (strcmp(r->type, "AAAA") == 0) {
		assert_int_equal(inet_pton(AF_INET6, r->data, w), 1);
		return 16;
	}
	if (strcmp(r->type, "MX") == 0) {
		char *end;
		unsigned long pref = strtoul(r->data, &end, 10);
		w[0] = (unsigned char)(pref >> 8);
		w[1] = (unsigned char)pref;
		return 2 + fake_put_name(w + 2, end + 1);
	}
	if (strcmp(r->type, "TXT") == 0) {
		const char *p = r->data;
		for (;;) {
			const char *sep = strchr(p, '\x1e');
			size_t l = sep ? (size_t)(sep - p) : strlen(p);
			w[o++] = (unsigned char)l;
			memcpy(w + o, p, l);
			o += l;
			if (!sep)
				return o;
			p = sep + 1;
		}
	}
	return fake_put_name(w, r->data); /* PTR, CNAME */
}

/* fake_answer - build the reply to one query */
static size_t fake_answer(const struct zrec *z, size_t nz, const unsigned char *q, size_t qn,
			  unsigned char *w, char *qname, int *qtype)
{
	size_t used;
	char name[1100];
	if (qn < 12 || fake_name(q + 12, qn - 12, &used, qname, 1100) < 0 || 12 + used + 4 > qn)
		return 0;
	*qtype = (q[12 + used] << 8) | q[12 + used + 1];
	memcpy(w, q, 12 + used + 4);
	w[2] = 0x84 | (q[2] & 1); /* QR AA RD */
	w[3] = 0x80;              /* RA, NOERROR */
	memset(w + 6, 0, 6);
	size_t o = 12 + used + 4, an = 0;
	snprintf(name, sizeof(name), "%s", qname);
	for (int hop = 0; hop < 8; hop++) {
		int known = 0, cname = -1;
		for (size_t i = 0; i < nz; i++) {
			if (strcasecmp(z[i].name, name) != 0)
				continue;
			known = 1;
			if (strcmp(z[i].type, "SERVFAIL") == 0) {
				w[3] = 0x82;
				memset(w + 6, 0, 6);
				return 12 + used + 4;
			}
			if (strcmp(z[i].type, "CNAME") == 0 && *qtype != 5)
				cname = (int)i;
		}
		if (!known) {
			if (hop == 0)
				w[3] = 0x83; /* NXDOMAIN */
			break;
		}
		for (size_t i = 0; i < nz; i++) {
			if (strcasecmp(z[i].name, name) != 0)
				continue;
			int t = fake_type(z[i].type);
			if (cname >= 0 ? (size_t)cname != i : t != *qtype)
				continue;
			o += fake_put_name(w + o, name);
			w[o++] = (unsigned char)(t >> 8);
			w[o++] = (unsigned char)t;
			memcpy(w + o, "\0\1\0\0\0\x3c", 6); /* IN, TTL 60 */
			o += 6;
			size_t rl = fake_rdata(w + o + 2, &z[i]);
			w[o] = (unsigned char)(rl >> 8);
			w[o + 1] = (unsigned char)rl;
			o += 2 + rl;
			an++;
		}
		if (cname < 0)
			break;
		snprintf(name, sizeof(name), "%s", z[cname].data);
	}
	w[6] = (unsigned char)(an >> 8);
	w[7] = (unsigned char)an;
	return o;
}

/* fake_start - fork the server for zone z on a free loopback port */
static void fake_start(struct fake *f, const struct zrec *z, size_t nz)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t sl = sizeof(sin);
	int pfd[2];
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	assert_true(s >= 0);
	assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sin, &sl), 0);
	f->port = ntohs(sin.sin_port);
	assert_int_equal(pipe(pfd), 0);
	f->pid = fork();
	assert_true(f->pid >= 0);
	if (f->pid > 0) {
		close(s);
		close(pfd[1]);
		f->logfd = pfd[0];
		fcntl(f->logfd, F_SETFL, O_NONBLOCK);
		f->log[0] = '\0';
		return;
	}
	close(pfd[0]);
	prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
	if (getppid() == 1)
		_exit(0);
	for (;;) {
		unsigned char q[1500], w[8192];
		char qname[1100], line[1200];
		int qtype = 0;
		struct sockaddr_storage from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(s, q, sizeof(q), 0, (struct sockaddr *)&from, &fl);
		if (n <= 0)
			continue;
		size_t wl = fake_answer(z, nz, q, (size_t)n, w, qname, &qtype);
		if (wl == 0)
			continue;
		/* the log: the name with every octet outside %x21-7E as \DDD */
		size_t o = (size_t)snprintf(line, sizeof(line), "%d ", qtype);
		for (const unsigned char *p = (const unsigned char *)qname; *p && o + 6 < sizeof(line); p++)
			o += (size_t)(*p > 0x20 && *p < 0x7f ? snprintf(line + o, 2, "%c", *p)
							     : snprintf(line + o, 5, "\\%03u", *p));
		line[o++] = '\n';
		if (write(pfd[1], line, o) < 0)
			_exit(1);
		sendto(s, w, wl, 0, (struct sockaddr *)&from, fl);
	}
}

/* fake_stop - end the server, keep its query log in f->log */
static void fake_stop(struct fake *f)
{
	size_t n = 0;
	ssize_t r;
	kill(f->pid, SIGKILL);
	waitpid(f->pid, NULL, 0);
	while (n + 1 < sizeof(f->log) && (r = read(f->logfd, f->log + n, sizeof(f->log) - 1 - n)) > 0)
		n += (size_t)r;
	f->log[n] = '\0';
	close(f->logfd);
}

/* count_lines - queries in a log */
static size_t count_lines(const char *log)
{
	size_t n = 0;
	for (; *log; log++)
		n += *log == '\n';
	return n;
}

struct run {
	int calls;
	enum spf_result r;
	char expl[1100];
	int have_expl;
	struct event_base *base;
	struct fake fake;
};

/* run_done - the check's callback */
static void run_done(void *arg, enum spf_result r, const char *expl)
{
	struct run *x = arg;
	x->calls++;
	x->r = r;
	x->have_expl = expl != NULL;
	snprintf(x->expl, sizeof(x->expl), "%s", expl ? expl : "");
	event_base_loopbreak(x->base);
}

#define ZN(z) (sizeof(z) / sizeof((z)[0]))

/* check - one whole check_host() against zone z; the result, with the
 * explanation and the query log in *x */
static enum spf_result check(struct run *x, const struct zrec *z, size_t nz, const char *ip,
			     const char *from, const char *helo)
{
	char err[128];
	memset(x, 0, sizeof(*x));
	fake_start(&x->fake, z, nz);
	x->base = event_base_new();
	snprintf(err, sizeof(err), "127.0.0.1:%d", x->fake.port);
	struct dns *dns = dns_new(x->base, err, err, sizeof(err));
	assert_non_null(dns);
	dns_set_timeout(dns, 3000);
	struct spf_check *c = spf_check_start(dns, ip, from, helo, "rx.example", run_done, x);
	assert_non_null(c);
	assert_int_equal(x->calls, 0);
	event_base_dispatch(x->base);
	assert_int_equal(x->calls, 1);
	dns_free(dns);
	event_base_free(x->base);
	fake_stop(&x->fake);
	return x->r;
}

/* expect - check and compare the result, printing the log on a mismatch */
static void expect(const struct zrec *z, size_t nz, const char *ip, const char *from, const char *helo,
		   enum spf_result want, struct run *x)
{
	enum spf_result r = check(x, z, nz, ip, from, helo);
	if (r != want)
		fail_msg("%s from %s: got %s want %s; queries:\n%s", from, ip, spf_result_str(r),
			 spf_result_str(want), x->fake.log);
}

/* the suite's deviations: names with ':' '/' '%' and spaces are asked
 * for octet for octet (a-colon-domain, mx-colon-domain,
 * macro-mania-in-domain); a backslash is an octet, not an escape */
static void test_check_any_octet_names(void **state)
{
	(void)state;
	static const struct zrec z[] = {
		{"a.example", "TXT", "v=spf1 a:foo:bar/baz.example.com -all"},
		{"mx.example", "TXT", "v=spf1 mx:foo:bar/baz.example.com -all"},
		{"foo:bar/baz.example.com", "A", "192.0.2.1"},
		{"foo:bar/baz.example.com", "MX", "0 foo:bar/baz.example.com"},
		{"mm.example", "TXT", "v=spf1 a:macro%%percent%_%_space%-url-space.example.com -all"},
		{"macro%percent  space%20url-space.example.com", "A", "192.0.2.1"},
		{"bs.example", "TXT", "v=spf1 a:back\\slash.example.com a:back\\092x.example.com -all"},
		{"back\\slash.example.com", "A", "192.0.2.1"},
		{"inc.example", "TXT", "v=spf1 include:in(c)lude=x.example -all"},
		{"in(c)lude=x.example", "TXT", "v=spf1 +ip4:192.0.2.0/24 -all"},
		{"l.example", "TXT", "v=spf1 exists:%{l}.user.example -all"},
		{"a b\"c.user.example", "A", "127.0.0.2"},
	};
	struct run x;
	expect(z, ZN(z), "192.0.2.1", "a@a.example", "h.example", SPF_PASS, &x);
	assert_non_null(strstr(x.fake.log, "1 foo:bar/baz.example.com\n"));
	expect(z, ZN(z), "::ffff:192.0.2.1", "a@a.example", "h.example", SPF_PASS, &x);
	expect(z, ZN(z), "192.0.2.2", "a@a.example", "h.example", SPF_FAIL, &x);
	expect(z, ZN(z), "192.0.2.1", "a@mx.example", "h.example", SPF_PASS, &x);
	assert_non_null(strstr(x.fake.log, "15 foo:bar/baz.example.com\n"));
	expect(z, ZN(z), "192.0.2.1", "a@mm.example", "h.example", SPF_PASS, &x);
	assert_non_null(strstr(x.fake.log, "1 macro%percent\\032\\032space%20url-space.example.com\n"));
	expect(z, ZN(z), "192.0.2.1", "a@bs.example", "h.example", SPF_PASS, &x);
	assert_non_null(strstr(x.fake.log, "1 back\\slash.example.com\n"));
	expect(z, ZN(z), "192.0.2.9", "a@bs.example", "h.example", SPF_FAIL, &x);
	assert_non_null(strstr(x.fake.log, "1 back\\092x.example.com\n")); /* not "back\\x" */
	expect(z, ZN(z), "192.0.2.7", "a@inc.example", "h.example", SPF_PASS, &x);
	/* a local-part with a space and a quote, from MAIL FROM */
	expect(z, ZN(z), "192.0.2.7", "a b\"c@l.example", "h.example", SPF_PASS, &x);
	assert_non_null(strstr(x.fake.log, "1 a\\032b\"c.user.example\n"));
}

/* names that cannot exist are never asked for: an empty label from a
 * macro, a label over 63 octets; the mechanism just does not match */
static void test_check_bad_target_names(void **state)
{
	(void)state;
	static const struct zrec z[] = {
		{"e.example", "TXT", "v=spf1 a:%{l}.x.example mx:%{l}.y.example exists:%{l}.z.example ?all"},
		{"i.example", "TXT", "v=spf1 include:%{l}.x.example ?all"},
	};
	struct run x;
	/* "a..x.example": an empty label */
	expect(z, ZN(z), "192.0.2.1", "a.@e.example", "h.example", SPF_NEUTRAL, &x);
	assert_int_equal(count_lines(x.fake.log), 1); /* the record only */
	char from[128];
	memset(from, 'b', 64);
	snprintf(from + 64, sizeof(from) - 64, "@e.example");
	expect(z, ZN(z), "192.0.2.1", from, "h.example", SPF_NEUTRAL, &x);
	assert_int_equal(count_lines(x.fake.log), 1);
	/* an include of such a name finds no record: permerror (5.2) */
	expect(z, ZN(z), "192.0.2.1", "a.@i.example", "h.example", SPF_PERMERROR, &x);
}

/* null-text and multi-string records (RFC 7208 3.3): strings are joined
 * without separator; an empty string or a non-SPF TXT is not a record */
static void test_check_txt_strings(void **state)
{
	(void)state;
	static const struct zrec z[] = {
		{"null.example", "TXT", "v=spf1 ip4:\x1e" "192.0.2.5 -all"},
		{"null.example", "TXT", ""},
		{"null.example", "TXT", "\x1e\x1e"},
		{"null.example", "TXT", "google-site-verification=x"},
		{"two.example", "TXT", "v=spf1 -all"},
		{"two.example", "TXT", "v=spf1 +all"},
		{"spfx.example", "TXT", "v=spf10 +all"},
		{"ctl.example", "TXT", "v=spf1 ip4:192.0.2.5\x0d -all"},
		{"upper.example", "TXT", "V=SPF1 ip4:192.0.2.5 -all"},
		{"sf.example", "SERVFAIL", ""},
	};
	struct run x;
	expect(z, ZN(z), "192.0.2.5", "a@null.example", "h.example", SPF_PASS, &x);
	expect(z, ZN(z), "192.0.2.6", "a@null.example", "h.example", SPF_FAIL, &x);
	assert_false(x.have_expl);
	expect(z, ZN(z), "192.0.2.5", "a@two.example", "h.example", SPF_PERMERROR, &x);
	expect(z, ZN(z), "192.0.2.5", "a@spfx.example", "h.example", SPF_NONE, &x);
	expect(z, ZN(z), "192.0.2.5", "a@ctl.example", "h.example", SPF_PERMERROR, &x);
	expect(z, ZN(z), "192.0.2.5", "a@upper.example", "h.example", SPF_PASS, &x);
	expect(z, ZN(z), "192.0.2.5", "a@missing.example", "h.example", SPF_NONE, &x);
	expect(z, ZN(z), "192.0.2.5", "a@sf.example", "h.example", SPF_TEMPERROR, &x);
}

/* 4.6.4: at most 10 DNS-querying terms (include, a, mx, ptr, exists,
 * redirect), whatever nests them */
static void test_check_lookup_limit(void **state)
{
	(void)state;
	static const struct zrec z[] = {
		{"ten.example", "TXT", "v=spf1 a:h.example a:h.example a:h.example a:h.example a:h.example "
				       "a:h.example a:h.example a:h.example a:h.example a:h.example -all"},
		{"eleven.example", "TXT", "v=spf1 a:h.example a:h.example a:h.example a:h.example a:h.example "
					  "a:h.example a:h.example a:h.example a:h.example a:h.example "
					  "a:h.example -all"},
		/* ip4 and all do not count */
		{"ip.example", "TXT", "v=spf1 ip4:10.0.0.1 ip4:10.0.0.2 ip4:10.0.0.3 ip4:10.0.0.4 ip4:10.0.0.5 "
				      "ip4:10.0.0.6 ip4:10.0.0.7 ip4:10.0.0.8 ip4:10.0.0.9 ip4:10.0.0.10 "
				      "ip4:10.0.0.11 include:inc9.example -all"},
		{"h.example", "A", "10.9.9.9"},
		/* includes and redirects count, at every depth */
		{"inc9.example", "TXT", "v=spf1 include:inc8.example a:h.example"},
		{"inc8.example", "TXT", "v=spf1 include:inc7.example a:h.example"},
		{"inc7.example", "TXT", "v=spf1 redirect=inc6.example"},
		{"inc6.example", "TXT", "v=spf1 include:inc5.example"},
		{"inc5.example", "TXT", "v=spf1 ip4:192.0.2.1"},
		{"loop.example", "TXT", "v=spf1 include:loop.example -all"},
		{"rloop.example", "TXT", "v=spf1 redirect=rloop.example"},
	};
	struct run x;
	expect(z, ZN(z), "192.0.2.1", "a@ten.example", "h.example", SPF_FAIL, &x);
	assert_int_equal(count_lines(x.fake.log), 2); /* the record, then h.example (cached) */
	expect(z, ZN(z), "192.0.2.1", "a@eleven.example", "h.example", SPF_PERMERROR, &x);
	/* 1 (inc9) + 1 (inc8) + 1 (inc7) + 1 (redirect) + 1 (inc5) = 5: pass */
	expect(z, ZN(z), "192.0.2.1", "a@ip.example", "h.example", SPF_PASS, &x);
	expect(z, ZN(z), "192.0.2.1", "a@loop.example", "h.example", SPF_PERMERROR, &x);
	expect(z, ZN(z), "192.0.2.1", "a@rloop.example", "h.example", SPF_PERMERROR, &x);
}

/* 4.6.4: at most 2 void lookups (NXDOMAIN or no answer) */
static void test_check_void_limit(void **state)
{
	(void)state;
	static const struct zrec z[] = {
		{"two.example", "TXT", "v=spf1 a:nx1.example mx:nodata.example ip4:192.0.2.1 -all"},
		{"three.example", "TXT", "v=spf1 a:nx1.example exists:nx2.example a:nodata.example "
					 "ip4:192.0.2.1 -all"},
		{"nodata.example", "TXT", "x"},
		/* voids across an include count together */
		{"inc.example", "TXT", "v=spf1 a:nx1.example include:inc2.example ip4:192.0.2.1 -all"},
		{"inc2.example", "TXT", "v=spf1 a:nx2.example a:nx3.example"},
		/* a non-void lookup does not reset the count */
		{"mixed.example", "TXT", "v=spf1 a:nx1.example a:h.example a:nx2.example a:h.example "
					 "a:nx3.example ip4:192.0.2.1 -all"},
		{"h.example", "A", "10.9.9.9"},
	};
	struct run x;
	expect(z, ZN(z), "192.0.2.1", "a@two.example", "h.example", SPF_PASS, &x);
	expect(z, ZN(z), "192.0.2.1", "a@three.example", "h.example", SPF_PERMERROR, &x);
	expect(z, ZN(z), "192.0.2.1", "a@inc.example", "h.example", SPF_PERMERROR, &x);
	expect(z, ZN(z), "192.0.2.1", "a@mixed.example", "h.example", SPF_PERMERROR, &x);
}

/* 4.6.4: an mx with more than 10 MX records is a permerror; every MX
 * name's address is looked up in the client's family */
static void test_check_mx_limit(void **state)
{
	(void)state;
	static const struct zrec z[] = {
		{"ten.example", "TXT", "v=spf1 mx -all"},
		{"ten.example", "MX", "1 m1.example"}, {"ten.example", "MX", "2 m2.example"},
		{"ten.example", "MX", "3 m3.example"}, {"ten.example", "MX", "4 m4.example"},
		{"ten.example", "MX", "5 m5.example"}, {"ten.example", "MX", "6 m6.example"},
		{"ten.example", "MX", "7 m7.example"}, {"ten.example", "MX", "8 m8.example"},
		{"ten.example", "MX", "9 m9.example"}, {"ten.example", "MX", "10 m10.example"},
		{"eleven.example", "TXT", "v=spf1 mx ip4:192.0.2.10 -all"},
		{"eleven.example", "MX", "1 m1.example"}, {"eleven.example", "MX", "2 m2.example"},
		{"eleven.example", "MX", "3 m3.example"}, {"eleven.example", "MX", "4 m4.example"},
		{"eleven.example", "MX", "5 m5.example"}, {"eleven.example", "MX", "6 m6.example"},
		{"eleven.example", "MX", "7 m7.example"}, {"eleven.example", "MX", "8 m8.example"},
		{"eleven.example", "MX", "9 m9.example"}, {"eleven.example", "MX", "10 m10.example"},
		{"eleven.example", "MX", "11 m11.example"},
		{"m10.example", "A", "192.0.2.10"},
		{"m10.example", "AAAA", "2001:db8::10"},
		{"m11.example", "A", "192.0.2.11"},
		{"null.example", "TXT", "v=spf1 mx/24 -all"},
		{"null.example", "MX", "0 ."},
	};
	struct run x;
	expect(z, ZN(z), "192.0.2.10", "a@ten.example", "h.example", SPF_PASS, &x);
	expect(z, ZN(z), "2001:db8::10", "a@ten.example", "h.example", SPF_PASS, &x);
	assert_non_null(strstr(x.fake.log, "28 m10.example\n"));
	assert_null(strstr(x.fake.log, "\n1 m10.example\n"));
	expect(z, ZN(z), "192.0.2.99", "a@ten.example", "h.example", SPF_FAIL, &x);
	expect(z, ZN(z), "192.0.2.10", "a@eleven.example", "h.example", SPF_PERMERROR, &x);
	/* a null MX has no name to look up */
	expect(z, ZN(z), "192.0.2.10", "a@null.example", "h.example", SPF_FAIL, &x);
	assert_int_equal(count_lines(x.fake.log), 2);
}

/* 5.5 and 4.6.4: ptr validates at most the first 10 PTR names, and only
 * those in the target domain (the order of an RRset is the resolver's:
 * the cases do not depend on it) */
static void test_check_ptr_limit(void **state)
{
	(void)state;
	static const struct zrec z[] = {
		{"ptr.example", "TXT", "v=spf1 ptr -all"},
		{"ptr2.example", "TXT", "v=spf1 ptr:ptr.example -all"},
		/* 11 names, none validates: exactly 10 are looked up */
		{"1.2.0.192.in-addr.arpa", "PTR", "a1.ptr.example"},
		{"1.2.0.192.in-addr.arpa", "PTR", "a2.ptr.example"},
		{"1.2.0.192.in-addr.arpa", "PTR", "a3.ptr.example"},
		{"1.2.0.192.in-addr.arpa", "PTR", "a4.ptr.example"},
		{"1.2.0.192.in-addr.arpa", "PTR", "a5.ptr.example"},
		{"1.2.0.192.in-addr.arpa", "PTR", "a6.ptr.example"},
		{"1.2.0.192.in-addr.arpa", "PTR", "a7.ptr.example"},
		{"1.2.0.192.in-addr.arpa", "PTR", "a8.ptr.example"},
		{"1.2.0.192.in-addr.arpa", "PTR", "a9.ptr.example"},
		{"1.2.0.192.in-addr.arpa", "PTR", "a10.ptr.example"},
		{"1.2.0.192.in-addr.arpa", "PTR", "a11.ptr.example"},
		/* 10 names, one validates; others outside the domain are skipped */
		{"5.2.0.192.in-addr.arpa", "PTR", "b1.ptr.example"},
		{"5.2.0.192.in-addr.arpa", "PTR", "b2.ptr.example"},
		{"5.2.0.192.in-addr.arpa", "PTR", "b3.ptr.example"},
		{"5.2.0.192.in-addr.arpa", "PTR", "b4.ptr.example"},
		{"5.2.0.192.in-addr.arpa", "PTR", "b5.ptr.example"},
		{"5.2.0.192.in-addr.arpa", "PTR", "b6.ptr.example"},
		{"5.2.0.192.in-addr.arpa", "PTR", "b7.ptr.example"},
		{"5.2.0.192.in-addr.arpa", "PTR", "other.test"},
		{"5.2.0.192.in-addr.arpa", "PTR", "b9.ptr.example"},
		{"5.2.0.192.in-addr.arpa", "PTR", "b10.ptr.example"},
		{"b10.ptr.example", "A", "192.0.2.5"},
		{"other.test", "A", "192.0.2.5"},
		{"2.2.0.192.in-addr.arpa", "PTR", "evilptr.example"},
		{"evilptr.example", "A", "192.0.2.2"},
		{"3.2.0.192.in-addr.arpa", "PTR", "x\\.ptr.example"},
		{"x\\.ptr.example", "A", "192.0.2.3"},
	};
	struct run x;
	expect(z, ZN(z), "192.0.2.1", "a@ptr.example", "h.example", SPF_FAIL, &x);
	assert_int_equal(count_lines(x.fake.log), 12); /* TXT, PTR, 10 A */
	expect(z, ZN(z), "192.0.2.5", "a@ptr.example", "h.example", SPF_PASS, &x);
	assert_null(strstr(x.fake.log, "other.test"));
	expect(z, ZN(z), "192.0.2.5", "a@ptr2.example", "h.example", SPF_PASS, &x);
	/* "evilptr.example" is not a subdomain of "ptr.example" */
	expect(z, ZN(z), "192.0.2.2", "a@ptr.example", "h.example", SPF_FAIL, &x);
	assert_int_equal(count_lines(x.fake.log), 2);
	/* nor is a label "x.ptr" (a dot inside the label) */
	expect(z, ZN(z), "192.0.2.3", "a@ptr.example", "h.example", SPF_FAIL, &x);
	assert_int_equal(count_lines(x.fake.log), 2);
	/* no PTR at all: no match, not an error */
	expect(z, ZN(z), "192.0.2.4", "a@ptr.example", "h.example", SPF_FAIL, &x);
}

/* 7.3: %{p} is the validated client name, preferring the current domain,
 * then its subdomains; "unknown" without one; usable in mechanisms,
 * redirect=, exp= and the explanation */
static void test_check_p_macro(void **state)
{
	(void)state;
	static const struct zrec z[] = {
		{"p.example", "TXT", "v=spf1 exists:%{p}.ok.test -all"},
		{"mail.p.example", "TXT", "v=spf1 exists:%{p}.ok.test -all"},
		{"1.2.0.192.in-addr.arpa", "PTR", "forged.p.example"},
		{"1.2.0.192.in-addr.arpa", "PTR", "host.other.test"},
		{"1.2.0.192.in-addr.arpa", "PTR", "mail.p.example"},
		{"3.2.0.192.in-addr.arpa", "PTR", "forged.p.example"},
		{"3.2.0.192.in-addr.arpa", "PTR", "host.other.test"},
		{"forged.p.example", "A", "192.0.2.99"},
		{"host.other.test", "A", "192.0.2.1"},
		{"host.other.test", "A", "192.0.2.3"},
		{"mail.p.example", "A", "192.0.2.1"},
		{"mail.p.example.ok.test", "A", "127.0.0.2"},
		{"unknown.ok.test", "A", "127.0.0.2"},
		{"r.example", "TXT", "v=spf1 redirect=%{p1r}.r.test"},
		{"host.r.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"},
		{"e.example", "TXT", "v=spf1 -all exp=%{p2}.e.test"},
		{"other.test.e.test", "TXT", "%{p} (%{d}) at %{i} is not allowed"},
		{"t.example", "TXT", "v=spf1 -all exp=t.test"},
		{"t.test", "TXT", "host %{p}"},
	};
	struct run x;
	/* forged.p.example does not validate; mail.p.example (a subdomain)
	 * ranks over host.other.test, and so does the domain itself */
	expect(z, ZN(z), "192.0.2.1", "a@p.example", "h.example", SPF_PASS, &x);
	assert_non_null(strstr(x.fake.log, "1 mail.p.example.ok.test\n"));
	expect(z, ZN(z), "192.0.2.1", "a@mail.p.example", "h.example", SPF_PASS, &x);
	assert_non_null(strstr(x.fake.log, "1 mail.p.example.ok.test\n"));
	/* no PTR: "unknown" */
	expect(z, ZN(z), "192.0.2.7", "a@p.example", "h.example", SPF_PASS, &x);
	assert_non_null(strstr(x.fake.log, "1 unknown.ok.test\n"));
	/* no name in r.example: one that validates */
	expect(z, ZN(z), "192.0.2.3", "a@r.example", "h.example", SPF_PASS, &x);
	assert_non_null(strstr(x.fake.log, "16 host.r.test\n"));
	expect(z, ZN(z), "192.0.2.3", "a@e.example", "h.example", SPF_FAIL, &x);
	assert_string_equal(x.expl, "host.other.test (e.example) at 192.0.2.3 is not allowed");
	expect(z, ZN(z), "192.0.2.3", "a@t.example", "h.example", SPF_FAIL, &x);
	assert_string_equal(x.expl, "host host.other.test");
	expect(z, ZN(z), "192.0.2.8", "a@t.example", "h.example", SPF_FAIL, &x);
	assert_string_equal(x.expl, "host unknown");
}

/* 6.2: the explanation, and every way it is dropped (the result stays
 * fail); the suite's v-macro-ip6 */
static void test_check_exp(void **state)
{
	(void)state;
	static const struct zrec z[] = {
		{"e.example", "TXT", "v=spf1 -all exp=msg.%{d}"},
		{"msg.e.example", "TXT", "%{c} is queried as %{ir}.%{v}.arpa; %{l}@%{o} via %{h} by %{r}"},
		{"two.example", "TXT", "v=spf1 -all exp=msg.two.example"},
		{"msg.two.example", "TXT", "one"},
		{"msg.two.example", "TXT", "two"},
		{"bad.example", "TXT", "v=spf1 -all exp=msg.bad.example"},
		{"msg.bad.example", "TXT", "bad %{x} macro"},
		{"ctl.example", "TXT", "v=spf1 -all exp=msg.ctl.example"},
		{"msg.ctl.example", "TXT", "line\r\nX-Evil: 1"},
		{"nx.example", "TXT", "v=spf1 -all exp=nowhere.example"},
		{"sf.example", "TXT", "v=spf1 -all exp=msg.sf.example"},
		{"msg.sf.example", "SERVFAIL", ""},
		/* redirect: the target's exp=, not the original's */
		{"red.example", "TXT", "v=spf1 redirect=red2.example exp=msg.two.example"},
		{"red2.example", "TXT", "v=spf1 -all exp=msg.e.example"},
		/* include: the included record's exp= is never used */
		{"inc.example", "TXT", "v=spf1 include:inc2.example -all"},
		{"inc2.example", "TXT", "v=spf1 ip4:10.0.0.1 exp=msg.e.example"},
		{"soft.example", "TXT", "v=spf1 ~all exp=msg.e.example"},
	};
	struct run x;
	expect(z, ZN(z), "192.0.2.1", "a@e.example", "h.example", SPF_FAIL, &x);
	assert_string_equal(x.expl, "192.0.2.1 is queried as 1.2.0.192.in-addr.arpa; a@e.example via h.example "
				    "by rx.example");
	expect(z, ZN(z), "cafe:babe::1", "a@e.example", "h.example", SPF_FAIL, &x);
	assert_string_equal(x.expl, "cafe:babe::1 is queried as 1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0."
				    "0.E.B.A.B.E.F.A.C.ip6.arpa; a@e.example via h.example by rx.example");
	static const char *none[] = {"a@two.example", "a@bad.example", "a@ctl.example", "a@nx.example",
				     "a@sf.example"};
	for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
		expect(z, ZN(z), "192.0.2.1", none[i], "h.example", SPF_FAIL, &x);
		if (x.have_expl)
			fail_msg("%s: explanation \"%s\"", none[i], x.expl);
	}
	expect(z, ZN(z), "192.0.2.1", "a@red.example", "h.example", SPF_FAIL, &x);
	assert_string_equal(x.expl, "192.0.2.1 is queried as 1.2.0.192.in-addr.arpa; a@red.example via "
				    "h.example by rx.example");
	expect(z, ZN(z), "192.0.2.1", "a@inc.example", "h.example", SPF_FAIL, &x);
	assert_false(x.have_expl);
	/* only a fail is explained */
	expect(z, ZN(z), "192.0.2.1", "a@soft.example", "h.example", SPF_SOFTFAIL, &x);
	assert_false(x.have_expl);
	assert_int_equal(count_lines(x.fake.log), 1);
}

/* 2.3, 4.3: the null path checks postmaster@HELO; a HELO that is not a
 * multi-label domain (or an address literal, or numeric) is "none" with
 * no DNS at all; a missing local-part is postmaster */
static void test_check_helo(void **state)
{
	(void)state;
	static const struct zrec z[] = {
		{"mail.example", "TXT", "v=spf1 exists:%{l}.%{o}.%{d}.id.test -all"},
		{"postmaster.mail.example.mail.example.id.test", "A", "127.0.0.2"},
		{"1.2.3.4", "TXT", "v=spf1 +all"},
		{"example", "TXT", "v=spf1 +all"},
	};
	struct run x;
	expect(z, ZN(z), "192.0.2.1", "", "mail.example", SPF_PASS, &x);
	expect(z, ZN(z), "192.0.2.1", "mail.example", "other.example", SPF_PASS, &x);
	expect(z, ZN(z), "192.0.2.1", "@mail.example", "other.example", SPF_PASS, &x);
	expect(z, ZN(z), "192.0.2.1", "bob@mail.example", "mail.example", SPF_FAIL, &x);
	static const char *helos[] = {"[192.0.2.1]", "1.2.3.4", "example", "a..example", ".", ""};
	for (size_t i = 0; i < sizeof(helos) / sizeof(helos[0]); i++) {
		expect(z, ZN(z), "192.0.2.1", "", helos[i], SPF_NONE, &x);
		if (count_lines(x.fake.log) != 0)
			fail_msg("HELO %s queried: %s", helos[i], x.fake.log);
	}
}

/* 4.4, 5.2, 6.1: DNS errors and records that are not there */
static void test_check_errors(void **state)
{
	(void)state;
	static const struct zrec z[] = {
		{"inc.example", "TXT", "v=spf1 include:nx.example -all"},
		{"incsf.example", "TXT", "v=spf1 include:sf.example -all"},
		{"red.example", "TXT", "v=spf1 redirect=nx.example"},
		{"amx.example", "TXT", "v=spf1 a:sf.example -all"},
		{"mxa.example", "TXT", "v=spf1 mx:mx.example -all"},
		{"mx.example", "MX", "10 sf.example"},
		{"cn.example", "CNAME", "real.example"},
		{"real.example", "TXT", "v=spf1 ip4:192.0.2.1 -all"},
		{"sf.example", "SERVFAIL", ""},
		{"neutral.example", "TXT", "v=spf1"},
	};
	struct run x;
	expect(z, ZN(z), "192.0.2.1", "a@inc.example", "h.example", SPF_PERMERROR, &x);
	expect(z, ZN(z), "192.0.2.1", "a@incsf.example", "h.example", SPF_TEMPERROR, &x);
	expect(z, ZN(z), "192.0.2.1", "a@red.example", "h.example", SPF_PERMERROR, &x);
	expect(z, ZN(z), "192.0.2.1", "a@amx.example", "h.example", SPF_TEMPERROR, &x);
	expect(z, ZN(z), "192.0.2.1", "a@mxa.example", "h.example", SPF_TEMPERROR, &x);
	expect(z, ZN(z), "192.0.2.1", "a@cn.example", "h.example", SPF_PASS, &x);
	expect(z, ZN(z), "192.0.2.1", "a@neutral.example", "h.example", SPF_NEUTRAL, &x);
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
		cmocka_unit_test(test_name_escape),
		cmocka_unit_test(test_received_header),
		cmocka_unit_test(test_received_header_hostile),
		cmocka_unit_test(test_check_any_octet_names),
		cmocka_unit_test(test_check_bad_target_names),
		cmocka_unit_test(test_check_txt_strings),
		cmocka_unit_test(test_check_lookup_limit),
		cmocka_unit_test(test_check_void_limit),
		cmocka_unit_test(test_check_mx_limit),
		cmocka_unit_test(test_check_ptr_limit),
		cmocka_unit_test(test_check_p_macro),
		cmocka_unit_test(test_check_exp),
		cmocka_unit_test(test_check_helo),
		cmocka_unit_test(test_check_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
