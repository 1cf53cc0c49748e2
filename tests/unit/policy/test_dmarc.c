/*
 * test_dmarc - DMARC (RFC 7489): the record parser with broken and hostile
 * records, domain normalization, organisational domains on the real PSL
 * (multi-label suffixes, wildcard and exception rules, private section),
 * alignment, RFC5322.From extraction (6.6.1) with hostile header sections,
 * policy discovery with a fake TXT fetcher (sync and deferred), and the
 * evaluation: pass/fail for SPF and DKIM, relaxed/strict, p/sp, pct,
 * temperror and permerror.
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
#include "policy/dmarc.h"

/* ------------------------------------------------------------ records */

/* parse - parse a NUL-ended record */
static enum dmarc_rec_status parse(const char *txt, struct dmarc_record *r)
{
	char err[160];
	return dmarc_record_parse(txt, strlen(txt), r, err, sizeof(err));
}

static void test_record_minimal(void **st)
{
	(void)st;
	struct dmarc_record r;
	assert_int_equal(parse("v=DMARC1; p=reject", &r), DMARC_REC_OK);
	assert_int_equal(r.p, DMARC_P_REJECT);
	assert_int_equal(r.sp, DMARC_P_REJECT); /* sp defaults to p */
	assert_int_equal(r.has_sp, 0);
	assert_int_equal(r.adkim, DMARC_ALIGN_RELAXED);
	assert_int_equal(r.aspf, DMARC_ALIGN_RELAXED);
	assert_int_equal(r.pct, 100);
	assert_int_equal(r.ri, 86400);
	assert_string_equal(r.fo, "0");
	assert_string_equal(r.rua, "");
	assert_int_equal(r.defaulted, 0);
	assert_int_equal(parse("v=DMARC1;p=none;", &r), DMARC_REC_OK);
	assert_int_equal(r.p, DMARC_P_NONE);
	assert_int_equal(parse("  v = DMARC1 ;\tp = quarantine ; ", &r), DMARC_REC_OK);
	assert_int_equal(r.p, DMARC_P_QUARANTINE);
	/* keywords are case-insensitive; DMARC1 is not */
	assert_int_equal(parse("V=DMARC1; P=Reject; SP=NONE", &r), DMARC_REC_OK);
	assert_int_equal(r.p, DMARC_P_REJECT);
	assert_int_equal(r.sp, DMARC_P_NONE);
}

static void test_record_full(void **st)
{
	(void)st;
	struct dmarc_record r;
	assert_int_equal(parse("v=DMARC1; p=quarantine; sp=none; adkim=s; aspf=s; pct=50; "
			       "rua=mailto:agg@example.com,mailto:b@example.net!10m; ruf=mailto:f@example.com; "
			       "fo=1:d:s; ri=3600; rf=afrf",
			       &r),
			 DMARC_REC_OK);
	assert_int_equal(r.p, DMARC_P_QUARANTINE);
	assert_int_equal(r.sp, DMARC_P_NONE);
	assert_int_equal(r.has_sp, 1);
	assert_int_equal(r.adkim, DMARC_ALIGN_STRICT);
	assert_int_equal(r.aspf, DMARC_ALIGN_STRICT);
	assert_int_equal(r.pct, 50);
	assert_int_equal(r.ri, 3600);
	assert_string_equal(r.fo, "1:d:s");
	assert_string_equal(r.rua, "mailto:agg@example.com,mailto:b@example.net!10m");
	assert_string_equal(r.ruf, "mailto:f@example.com");
	assert_int_equal(r.defaulted, 0);
	/* FWS inside a value (several URIs) becomes one space */
	assert_int_equal(parse("v=DMARC1; p=none; rua=mailto:a@x.example,\r\n mailto:b@y.example", &r), DMARC_REC_OK);
	assert_string_equal(r.rua, "mailto:a@x.example, mailto:b@y.example");
}

static void test_record_not_dmarc(void **st)
{
	(void)st;
	struct dmarc_record r;
	const char *bad[] = {
		"", " ", "p=reject; v=DMARC1", "v=DMARC2; p=reject", "v=dmarc1; p=reject", "v=DMARC1 p=reject",
		"v=spf1 -all", "v=DMARC10; p=reject", "vv=DMARC1; p=reject", "=DMARC1", "v DMARC1",
		"\x01v=DMARC1; p=reject", "v=DMARC1x; p=reject",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(parse(bad[i], &r), DMARC_REC_NOT_DMARC);
	/* a NUL after the version keeps it from being DMARC1 */
	assert_int_equal(dmarc_record_parse("v=DMARC1\0; p=reject", 19, &r, NULL, 0), DMARC_REC_NOT_DMARC);
}

static void test_record_invalid(void **st)
{
	(void)st;
	struct dmarc_record r;
	char err[160];
	const char *bad[] = {
		"v=DMARC1",                       /* no p, no rua */
		"v=DMARC1; p=block",              /* bad p */
		"v=DMARC1; p=",                   /* empty p */
		"v=DMARC1; p=reject; sp=maybe",   /* bad sp */
		"v=DMARC1; p=reject; p=none",     /* duplicate */
		"v=DMARC1; p=reject; P=none",     /* duplicate, other case */
		"v=DMARC1; 1p=reject",            /* bad tag name */
		"v=DMARC1; p reject",             /* no '=' */
		"v=DMARC1; p=reject; rua",        /* no '=' */
		"v=DMARC1; p=re\x01ject",         /* control byte */
		"v=DMARC1; p=reject; x=\xff",     /* 8-bit byte */
		"v=DMARC1; p=reject\r\nsp=none",  /* CRLF without WSP */
		"v=DMARC1; p=none; rua=nothing",  /* p ok but... */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]) - 1; i++) {
		assert_int_equal(dmarc_record_parse(bad[i], strlen(bad[i]), &r, err, sizeof(err)), DMARC_REC_INVALID);
		assert_true(err[0] != '\0');
	}
	/* the last one is valid: rua= syntax only matters without a good p= */
	assert_int_equal(parse(bad[sizeof(bad) / sizeof(bad[0]) - 1], &r), DMARC_REC_OK);
	/* NUL inside a value */
	assert_int_equal(dmarc_record_parse("v=DMARC1; p=rej\0ect", 19, &r, err, sizeof(err)), DMARC_REC_INVALID);
	/* more tags than the parser keeps */
	struct strbuf sb;
	strbuf_init(&sb);
	strbuf_adds(&sb, "v=DMARC1; p=reject");
	for (int i = 0; i < 40; i++)
		strbuf_addf(&sb, "; x%d=y", i);
	assert_int_equal(dmarc_record_parse(sb.s, sb.len, &r, err, sizeof(err)), DMARC_REC_INVALID);
	strbuf_free(&sb);
}

/* RFC 7489 6.6.3 step 6: a bad or missing p= with a valid rua= is p=none */
static void test_record_p_fallback(void **st)
{
	(void)st;
	struct dmarc_record r;
	assert_int_equal(parse("v=DMARC1; rua=mailto:d@example.com", &r), DMARC_REC_OK);
	assert_int_equal(r.p, DMARC_P_NONE);
	assert_int_equal(r.sp, DMARC_P_NONE);
	assert_int_equal(r.p_fallback, 1);
	assert_int_equal(parse("v=DMARC1; p=bogus; rua=mailto:d@example.com", &r), DMARC_REC_OK);
	assert_int_equal(r.p, DMARC_P_NONE);
	assert_int_equal(parse("v=DMARC1; p=reject; sp=bogus; rua=mailto:d@example.com", &r), DMARC_REC_OK);
	assert_int_equal(r.p, DMARC_P_NONE); /* the whole record is taken as p=none */
	assert_int_equal(r.sp, DMARC_P_NONE);
	/* rua without a scheme is no help */
	assert_int_equal(parse("v=DMARC1; rua=d@example.com", &r), DMARC_REC_INVALID);
	assert_int_equal(parse("v=DMARC1; rua=:x", &r), DMARC_REC_INVALID);
	assert_int_equal(parse("v=DMARC1; rua=mailto:", &r), DMARC_REC_INVALID);
	assert_int_equal(parse("v=DMARC1; rua=junk, mailto:x@y", &r), DMARC_REC_OK);
}

/* bad values of optional tags fall back to defaults (6.3) */
static void test_record_defaults(void **st)
{
	(void)st;
	struct dmarc_record r;
	assert_int_equal(parse("v=DMARC1; p=reject; adkim=x; aspf=strict; pct=101; ri=-1; fo=2", &r), DMARC_REC_OK);
	assert_int_equal(r.p, DMARC_P_REJECT);
	assert_int_equal(r.adkim, DMARC_ALIGN_RELAXED);
	assert_int_equal(r.aspf, DMARC_ALIGN_RELAXED);
	assert_int_equal(r.pct, 100);
	assert_int_equal(r.ri, 86400);
	assert_string_equal(r.fo, "0");
	assert_int_equal(r.defaulted, 5);
	assert_int_equal(parse("v=DMARC1; p=reject; pct=99999999999999999999999; ri=99999999999", &r), DMARC_REC_OK);
	assert_int_equal(r.pct, 100);
	assert_int_equal(r.ri, 86400);
	assert_int_equal(parse("v=DMARC1; p=reject; pct=0", &r), DMARC_REC_OK);
	assert_int_equal(r.pct, 0);
	assert_int_equal(parse("v=DMARC1; p=reject; pct=007", &r), DMARC_REC_OK);
	assert_int_equal(r.pct, 7);
	assert_int_equal(parse("v=DMARC1; p=reject; fo=1:", &r), DMARC_REC_OK);
	assert_string_equal(r.fo, "0");
	/* unknown tags (np= of RFC 9091, anything) are ignored; ";;" tolerated */
	assert_int_equal(parse("v=DMARC1;; p=reject;;; np=reject; foo_bar=x y z;", &r), DMARC_REC_OK);
	assert_int_equal(r.p, DMARC_P_REJECT);
	assert_int_equal(r.defaulted, 0);
}

/* hostile sizes: a huge rua is dropped (not truncated), a huge record is
 * parsed without harm */
static void test_record_huge(void **st)
{
	(void)st;
	struct dmarc_record r;
	struct strbuf sb;
	strbuf_init(&sb);
	strbuf_adds(&sb, "v=DMARC1; p=reject; rua=mailto:");
	for (int i = 0; i < 3000; i++)
		strbuf_addc(&sb, 'a');
	strbuf_adds(&sb, "@example.com");
	assert_int_equal(dmarc_record_parse(sb.s, sb.len, &r, NULL, 0), DMARC_REC_OK);
	assert_string_equal(r.rua, "");
	assert_int_equal(r.defaulted, 1);
	strbuf_reset(&sb);
	strbuf_adds(&sb, "v=DMARC1; p=reject; x=");
	for (int i = 0; i < 200000; i++)
		strbuf_adds(&sb, "ab ");
	assert_int_equal(dmarc_record_parse(sb.s, sb.len, &r, NULL, 0), DMARC_REC_OK);
	strbuf_free(&sb);
}

/* ------------------------------------------------------------ domains */

static void test_domain_normalize(void **st)
{
	(void)st;
	char d[DMARC_DOMAIN_MAX + 1];
	assert_int_equal(dmarc_domain_normalize("Example.COM.", 12, d, sizeof(d)), 0);
	assert_string_equal(d, "example.com");
	assert_int_equal(dmarc_domain_normalize("_x.a-b.example", 14, d, sizeof(d)), 0);
	assert_int_equal(dmarc_domain_normalize("localhost", 9, d, sizeof(d)), 0);
	/* "i..": an empty last label once passed (fuzz_dmarc regression) */
	const char *bad[] = {"", ".", "a..b", ".a", "a b.com", "a@b.com", "exa\0mple", "[1.2.3.4]", "a/b", "..",
			     "i..", "example.com.."};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(dmarc_domain_normalize(bad[i], i == 6 ? 8 : strlen(bad[i]), d, sizeof(d)), -1);
	char lab[80];
	memset(lab, 'a', 64);
	strcpy(lab + 64, ".com");
	assert_int_equal(dmarc_domain_normalize(lab, strlen(lab), d, sizeof(d)), -1);
	memset(lab, 'a', 63);
	strcpy(lab + 63, ".com");
	assert_int_equal(dmarc_domain_normalize(lab, strlen(lab), d, sizeof(d)), 0);
	char big[300];
	for (int i = 0; i < 300; i++)
		big[i] = i % 2 ? '.' : 'a';
	assert_int_equal(dmarc_domain_normalize(big, 253, d, sizeof(d)), 0);
	assert_int_equal(dmarc_domain_normalize(big, 255, d, sizeof(d)), -1);
	/* 8-bit: an EAI domain (no DMARC lookup), kept as is */
	assert_int_equal(dmarc_domain_normalize("b\xc3\xbc" "cher.example", 14, d, sizeof(d)), 1);
	/* too small an output buffer */
	assert_int_equal(dmarc_domain_normalize("example.com", 11, d, 5), -1);
}

/* expect_org - the organisational domain of d */
static void expect_org(const char *d, const char *want)
{
	char o[DMARC_DOMAIN_MAX + 1];
	assert_int_equal(dmarc_org_domain(d, o, sizeof(o)), 0);
	assert_string_equal(o, want);
}

static void test_org_domain(void **st)
{
	(void)st;
	expect_org("example.com", "example.com");
	expect_org("a.b.c.example.com", "example.com");
	/* multi-label public suffixes */
	expect_org("example.co.uk", "example.co.uk");
	expect_org("mail.example.co.uk", "example.co.uk");
	expect_org("a.b.example.com.au", "example.com.au");
	/* a public suffix is its own organisational domain */
	expect_org("co.uk", "co.uk");
	expect_org("uk", "uk");
	expect_org("com", "com");
	/* *.kawasaki.jp: any x.kawasaki.jp is a suffix; !city.kawasaki.jp is not */
	expect_org("a.b.example.kawasaki.jp", "b.example.kawasaki.jp");
	expect_org("example.kawasaki.jp", "example.kawasaki.jp");
	expect_org("x.city.kawasaki.jp", "city.kawasaki.jp");
	expect_org("city.kawasaki.jp", "city.kawasaki.jp");
	/* private section: each blogspot.com subdomain is its own organisation */
	expect_org("www.foo.blogspot.com", "foo.blogspot.com");
	/* unknown TLD (the tests' .test): the default "*" rule */
	expect_org("mail.example.test", "example.test");
	/* IDN suffixes in A-label form */
	expect_org("a.example.xn--fiqs8s", "example.xn--fiqs8s");
}

static void test_alignment(void **st)
{
	(void)st;
	assert_true(dmarc_aligned("example.com", "example.com", DMARC_ALIGN_STRICT));
	assert_true(dmarc_aligned("example.com", "EXAMPLE.com", DMARC_ALIGN_STRICT));
	assert_false(dmarc_aligned("example.com", "mail.example.com", DMARC_ALIGN_STRICT));
	assert_true(dmarc_aligned("example.com", "mail.example.com", DMARC_ALIGN_RELAXED));
	assert_true(dmarc_aligned("news.example.com", "bounce.example.com", DMARC_ALIGN_RELAXED));
	assert_false(dmarc_aligned("example.com", "example.net", DMARC_ALIGN_RELAXED));
	assert_false(dmarc_aligned("example.com", "badexample.com", DMARC_ALIGN_RELAXED));
	assert_false(dmarc_aligned("example.com", "example.com.evil.net", DMARC_ALIGN_RELAXED));
	/* multi-label suffix: two organisations under co.uk never align */
	assert_true(dmarc_aligned("example.co.uk", "mail.example.co.uk", DMARC_ALIGN_RELAXED));
	assert_false(dmarc_aligned("example.co.uk", "other.co.uk", DMARC_ALIGN_RELAXED));
	assert_false(dmarc_aligned("example.co.uk", "co.uk", DMARC_ALIGN_RELAXED));
	/* wildcard rule: x.example.kawasaki.jp and y.example.kawasaki.jp are
	 * two organisations */
	assert_false(dmarc_aligned("x.example.kawasaki.jp", "y.example.kawasaki.jp", DMARC_ALIGN_RELAXED));
	assert_true(dmarc_aligned("a.b.example.kawasaki.jp", "b.example.kawasaki.jp", DMARC_ALIGN_RELAXED));
	assert_true(dmarc_aligned("x.city.kawasaki.jp", "y.city.kawasaki.jp", DMARC_ALIGN_RELAXED));
	assert_false(dmarc_aligned("foo.blogspot.com", "bar.blogspot.com", DMARC_ALIGN_RELAXED));
	/* junk never aligns */
	assert_false(dmarc_aligned("example.com", "", DMARC_ALIGN_RELAXED));
	assert_false(dmarc_aligned("example.com", "[192.0.2.1]", DMARC_ALIGN_RELAXED));
	assert_false(dmarc_aligned("example.com", NULL, DMARC_ALIGN_RELAXED));
}

/* --------------------------------------------------------------- From */

/* from_ok - the value gives domain want */
static void from_ok(const char *val, const char *want)
{
	char d[DMARC_DOMAIN_MAX + 1], err[160] = "";
	int rc = dmarc_from_value(val, strlen(val), d, sizeof(d), err, sizeof(err));
	if (rc != 0)
		fail_msg("From: %s -> %d (%s)", val, rc, err);
	assert_string_equal(d, want);
}

/* from_bad - the value is refused */
static void from_bad(const char *val)
{
	char d[DMARC_DOMAIN_MAX + 1], err[160] = "";
	int rc = dmarc_from_value(val, strlen(val), d, sizeof(d), err, sizeof(err));
	if (rc != -1)
		fail_msg("From: %s accepted (%d, %s)", val, rc, d);
	assert_true(err[0] != '\0');
}

static void test_from_values(void **st)
{
	(void)st;
	from_ok(" a@example.com", "example.com");
	from_ok(" A@Example.COM ", "example.com");
	from_ok(" John Doe <john@example.com>", "example.com");
	from_ok(" \"Doe, John\" <john@example.com>", "example.com");
	from_ok(" \"a@evil.example\" <john@example.com>", "example.com");
	from_ok(" \"q\\\"uote\" <x@example.com>", "example.com");
	from_ok(" <john@example.com>", "example.com");
	from_ok(" john@example.com (John Doe)", "example.com");
	from_ok(" (c) john (x) @ (y) example.com (z)", "example.com");
	from_ok(" (nested (comment (deep)) here) <j@example.com>", "example.com");
	from_ok(" j@ example . com", "example.com");
	from_ok(" \"quoted local\"@example.com", "example.com");
	from_ok(" John Q. Public <j@example.com>", "example.com");
	from_ok(" =?utf-8?q?J=C3=B6rg?= <j@example.com>", "example.com");
	from_ok(" =?utf-8?q?a@evil.example?= <b@good.example>", "good.example");
	from_ok(" =?utf-8?B?Sm9obg==?= =?utf-8?B?RG9l?= <j@example.com>", "example.com");
	from_ok(" J\xc3\xb6rg <j@example.com>", "example.com");
	from_ok("\r\n John\r\n Doe\r\n\t<j@example.com>", "example.com");
	from_ok(" <@relay.example:j@example.com>", "example.com");
	from_ok(" a@example.com, b@EXAMPLE.com", "example.com");
	from_ok(" a@example.com,, ,b@example.com,", "example.com");
	from_ok(" team: a@example.com, Bob <b@example.com>;", "example.com");
	from_ok(" team: a@example.com;, c@example.com", "example.com");
	from_ok(" x@example.com.", "example.com");
	from_ok(" x@sub_domain.example.com", "sub_domain.example.com");
}

static void test_from_refused(void **st)
{
	(void)st;
	from_bad("");
	from_bad("   ");
	from_bad(" (only a comment)");
	from_bad(" John Doe");                        /* no address */
	from_bad(" undisclosed-recipients:;");        /* empty group */
	from_bad(" <>");
	from_bad(" a@example.com, b@example.net");    /* two domains */
	from_bad(" team: a@example.com, b@example.net;");
	from_bad(" a@[192.0.2.1]");                   /* address literal */
	from_bad(" a@");
	from_bad(" @example.com");
	from_bad(" a@example..com");
	from_bad(" a@.example.com");
	from_bad(" a@example.com paypal.com");        /* space inside the domain */
	from_bad(" a@evil.example <b@good.example>"); /* an address as the name */
	from_bad(" <a@example.com> <b@example.com>");
	from_bad(" <a@example.com");
	from_bad(" a@example.com>");
	from_bad(" \"unterminated <a@example.com>");
	from_bad(" (unterminated <a@example.com>");
	from_bad(" a@example.com)");
	from_bad(" a\\b@example.com");
	from_bad(" a@exa\x01mple.com");
	from_bad(" Jo\x01hn <a@example.com>");
	from_bad(" a@exam[ple.com");
	from_bad(" =?utf-8?q?x?=@example.com");        /* encoded word as a local part */
	from_bad(" g1: g2: a@example.com;;");          /* nested group */
	from_bad(" team: a@example.com");              /* unterminated group */
	from_bad(" a@b\xc3\xbc.example, c@d.example");
	from_bad(" a@ex ample.com");
	from_bad(" a@example.com..");                 /* fuzz_dmarc regression */
	/* comments nested deeper than the limit */
	struct strbuf sb;
	strbuf_init(&sb);
	strbuf_adds(&sb, " a@example.com ");
	for (int i = 0; i < 100; i++)
		strbuf_addc(&sb, '(');
	for (int i = 0; i < 100; i++)
		strbuf_addc(&sb, ')');
	from_bad(sb.s);
	/* more mailboxes than DMARC_FROM_ADDRS_MAX, even of one domain */
	strbuf_reset(&sb);
	for (int i = 0; i < DMARC_FROM_ADDRS_MAX + 1; i++)
		strbuf_addf(&sb, "%su%d@example.com", i ? ", " : " ", i);
	from_bad(sb.s);
	/* a domain label of 64 octets, a domain over 253 */
	strbuf_reset(&sb);
	strbuf_adds(&sb, " a@");
	for (int i = 0; i < 64; i++)
		strbuf_addc(&sb, 'x');
	strbuf_adds(&sb, ".com");
	from_bad(sb.s);
	strbuf_reset(&sb);
	strbuf_adds(&sb, " a@");
	for (int i = 0; i < 200; i++)
		strbuf_adds(&sb, "x.");
	strbuf_adds(&sb, "com");
	from_bad(sb.s);
	strbuf_free(&sb);
}

/* an EAI (UTF-8) From domain: 1, no DMARC lookup */
static void test_from_eai(void **st)
{
	(void)st;
	char d[DMARC_DOMAIN_MAX + 1], err[160];
	const char *v = " J <j@b\xc3\xbc" "cher.example>";
	assert_int_equal(dmarc_from_value(v, strlen(v), d, sizeof(d), err, sizeof(err)), 1);
	assert_string_equal(d, "b\xc3\xbc" "cher.example");
}

/* hdr_rc - dmarc_from_domain of a header section */
static int hdr_rc(const char *h, char *d, char *err)
{
	return dmarc_from_domain(h, strlen(h), d, DMARC_DOMAIN_MAX + 1, err, 160);
}

static void test_from_header_section(void **st)
{
	(void)st;
	char d[DMARC_DOMAIN_MAX + 1], err[160];
	assert_int_equal(hdr_rc("Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
				"Subject: hi\r\nFrom: A <a@example.com>\r\nTo: b@example.net\r\n\r\nbody\r\n",
				d, err),
			 0);
	assert_string_equal(d, "example.com");
	/* case of the name, WSP before the colon (obs-), LF line ends */
	assert_int_equal(hdr_rc("FROM: a@one.example\n\n", d, err), 0);
	assert_string_equal(d, "one.example");
	assert_int_equal(hdr_rc("from  : a@two.example\r\n\r\n", d, err), 0);
	assert_string_equal(d, "two.example");
	/* folded over several lines */
	assert_int_equal(hdr_rc("Subject: x\r\nFrom: \"Very\r\n Long Name\"\r\n\t<a@fold.example>\r\nTo: y\r\n\r\n", d,
				err),
			 0);
	assert_string_equal(d, "fold.example");
	/* no From / two From fields (6.6.1) */
	assert_int_equal(hdr_rc("Subject: x\r\nTo: y@example.com\r\n\r\n", d, err), -1);
	assert_string_equal(err, "no From field");
	assert_int_equal(hdr_rc("From: a@example.com\r\nSubject: x\r\nfrom: b@example.com\r\n\r\n", d, err), -1);
	assert_string_equal(err, "2 From fields");
	/* the same address twice is still two fields */
	assert_int_equal(hdr_rc("From: a@example.com\r\nFrom: a@example.com\r\n\r\n", d, err), -1);
	/* a From in the body does not count; neither do lookalike names */
	assert_int_equal(hdr_rc("Subject: x\r\n\r\nFrom: a@example.com\r\n", d, err), -1);
	assert_int_equal(hdr_rc("From a@example.com Mon Jan 1\r\nX-From: a@example.com\r\nFromx: b@example.com\r\n"
				"Resent-From: c@example.com\r\n\r\n",
				d, err),
			 -1);
	assert_string_equal(err, "no From field");
	/* a continuation line that looks like a field is part of the previous */
	assert_int_equal(hdr_rc("Subject: x\r\n From: evil@evil.example\r\nFrom: a@example.com\r\n\r\n", d, err), 0);
	assert_string_equal(d, "example.com");
	/* no empty line: the whole text is the header section */
	assert_int_equal(hdr_rc("From: a@example.com", d, err), 0);
	assert_int_equal(hdr_rc("", d, err), -1);
	/* many From fields */
	struct strbuf sb;
	strbuf_init(&sb);
	for (int i = 0; i < 5000; i++)
		strbuf_addf(&sb, "From: u%d@example.com\r\n", i);
	strbuf_adds(&sb, "\r\n");
	assert_int_equal(dmarc_from_domain(sb.s, sb.len, d, sizeof(d), err, sizeof(err)), -1);
	assert_string_equal(err, "5000 From fields");
	strbuf_free(&sb);
}

/* ----------------------------------------------------- policy discovery */

struct fake_rr {
	const char *name;
	enum dns_status st;
	const char *txt[3];
};

struct fake_dns {
	const struct fake_rr *rr;
	size_t n;
	int deferred;         /* 1: answer later (fake_run) */
	int queries, cancels;
	char asked[4][300];
	/* the pending deferred query */
	dns_txt_cb cb;
	void *arg;
	char pending[300];
};

/* fake_answer - answer name from the table */
static void fake_answer(struct fake_dns *f, const char *name, dns_txt_cb cb, void *arg)
{
	struct dns_txt txts[3];
	struct dns_txt_result res = {.status = DNS_NXDOMAIN, .name = name, .txts = txts};
	for (size_t i = 0; i < f->n; i++) {
		if (strcmp(f->rr[i].name, name) != 0)
			continue;
		res.status = f->rr[i].st;
		for (size_t k = 0; k < 3 && f->rr[i].txt[k]; k++) {
			txts[k].data = f->rr[i].txt[k];
			txts[k].len = strlen(f->rr[i].txt[k]);
			res.ntxts++;
		}
		break;
	}
	cb(&res, arg);
}

/* fake_fetch - record the query; answer now or later */
static int fake_fetch(void *ctx, const char *name, dns_txt_cb cb, void *arg, void **handle)
{
	struct fake_dns *f = ctx;
	if (f->queries < 4)
		snprintf(f->asked[f->queries], sizeof(f->asked[0]), "%s", name);
	f->queries++;
	*handle = f;
	if (!f->deferred) {
		fake_answer(f, name, cb, arg);
		return 0;
	}
	f->cb = cb;
	f->arg = arg;
	snprintf(f->pending, sizeof(f->pending), "%s", name);
	return 0;
}

static void fake_cancel(void *handle)
{
	struct fake_dns *f = handle;
	f->cancels++;
	f->cb = NULL;
}

/* fake_run - answer deferred queries until none is pending */
static void fake_run(struct fake_dns *f)
{
	while (f->cb) {
		dns_txt_cb cb = f->cb;
		char name[300];
		snprintf(name, sizeof(name), "%s", f->pending);
		f->cb = NULL;
		fake_answer(f, name, cb, f->arg);
	}
}

struct disc_out {
	int calls;
	struct dmarc_discovery d;
};

static void disc_cb(void *arg, const struct dmarc_discovery *d)
{
	struct disc_out *o = arg;
	o->calls++;
	o->d = *d;
}

/* discover - run one discovery for from (sync and deferred give the same) */
static struct disc_out discover(const struct fake_rr *rr, size_t n, const char *from, int *queries)
{
	struct disc_out out[2];
	for (int deferred = 0; deferred < 2; deferred++) {
		struct fake_dns f = {.rr = rr, .n = n, .deferred = deferred};
		struct dmarc_fetcher fe = {fake_fetch, fake_cancel, &f};
		memset(&out[deferred], 0, sizeof(out[0]));
		struct dmarc_lookup *l = dmarc_lookup_start(&fe, from, disc_cb, &out[deferred]);
		assert_non_null(l);
		fake_run(&f);
		assert_int_equal(out[deferred].calls, 1);
		dmarc_lookup_cancel(l);
		assert_int_equal(f.cancels, 0);
		if (queries)
			*queries = f.queries;
	}
	assert_int_equal(out[0].d.status, out[1].d.status);
	assert_string_equal(out[0].d.domain, out[1].d.domain);
	return out[0];
}

static void test_discovery(void **st)
{
	(void)st;
	const struct fake_rr rr[] = {
		{"_dmarc.example.com", DNS_OK, {"v=spf1 -all", "v=DMARC1; p=reject; sp=quarantine", NULL}},
		{"_dmarc.example.co.uk", DNS_OK, {"v=DMARC1; p=quarantine", NULL, NULL}},
		{"_dmarc.two.example", DNS_OK, {"v=DMARC1; p=reject", "v=DMARC1; p=none", NULL}},
		{"_dmarc.broken.example", DNS_OK, {"v=DMARC1; p=nope", NULL, NULL}},
		{"_dmarc.sub.broken.example", DNS_NODATA, {NULL, NULL, NULL}},
		{"_dmarc.other.example", DNS_OK, {"some other text", NULL, NULL}},
		{"_dmarc.temp.example", DNS_TEMPFAIL, {NULL, NULL, NULL}},
		{"_dmarc.a.org.example", DNS_NXDOMAIN, {NULL, NULL, NULL}},
		{"_dmarc.org.example", DNS_TEMPFAIL, {NULL, NULL, NULL}},
		{"_dmarc.bad.example", DNS_BADDATA, {NULL, NULL, NULL}},
	};
	size_t n = sizeof(rr) / sizeof(rr[0]);
	int q;
	struct disc_out o;

	o = discover(rr, n, "example.com", &q);
	assert_int_equal(o.d.status, DMARC_DISC_FOUND);
	assert_string_equal(o.d.domain, "example.com");
	assert_int_equal(o.d.at_org, 0);
	assert_int_equal(o.d.rec.p, DMARC_P_REJECT);
	assert_int_equal(q, 1); /* the From domain is the org domain: one query */

	/* a subdomain without a record: the org domain's record, at_org */
	o = discover(rr, n, "deep.mail.example.com", &q);
	assert_int_equal(o.d.status, DMARC_DISC_FOUND);
	assert_string_equal(o.d.domain, "example.com");
	assert_int_equal(o.d.at_org, 1);
	assert_int_equal(q, 2);

	/* multi-label public suffix: the org domain is example.co.uk */
	o = discover(rr, n, "mail.example.co.uk", &q);
	assert_int_equal(o.d.status, DMARC_DISC_FOUND);
	assert_string_equal(o.d.domain, "example.co.uk");
	assert_int_equal(o.d.at_org, 1);

	/* several DMARC records: no policy (6.6.3 step 5) */
	o = discover(rr, n, "two.example", NULL);
	assert_int_equal(o.d.status, DMARC_DISC_INVALID);
	/* a broken record at the From domain stops the discovery there */
	o = discover(rr, n, "broken.example", NULL);
	assert_int_equal(o.d.status, DMARC_DISC_INVALID);
	o = discover(rr, n, "sub.broken.example", NULL);
	assert_int_equal(o.d.status, DMARC_DISC_INVALID);
	assert_int_equal(o.d.at_org, 1);
	/* only non-DMARC TXT: as if none */
	o = discover(rr, n, "other.example", &q);
	assert_int_equal(o.d.status, DMARC_DISC_NONE);
	assert_int_equal(q, 1);
	/* nothing anywhere */
	o = discover(rr, n, "x.y.nothing.example", &q);
	assert_int_equal(o.d.status, DMARC_DISC_NONE);
	assert_int_equal(q, 2);
	/* DNS failures: temperror, at either step */
	o = discover(rr, n, "temp.example", NULL);
	assert_int_equal(o.d.status, DMARC_DISC_TEMPERROR);
	o = discover(rr, n, "a.org.example", NULL);
	assert_int_equal(o.d.status, DMARC_DISC_TEMPERROR);
	o = discover(rr, n, "bad.example", NULL);
	assert_int_equal(o.d.status, DMARC_DISC_TEMPERROR);
}

static void test_discovery_queries_and_cancel(void **st)
{
	(void)st;
	const struct fake_rr rr[] = {{"_dmarc.example.com", DNS_OK, {"v=DMARC1; p=reject", NULL, NULL}}};
	struct fake_dns f = {.rr = rr, .n = 1, .deferred = 1};
	struct dmarc_fetcher fe = {fake_fetch, fake_cancel, &f};
	struct disc_out o = {0};
	struct dmarc_lookup *l = dmarc_lookup_start(&fe, "a.b.example.com", disc_cb, &o);
	assert_non_null(l);
	assert_string_equal(f.asked[0], "_dmarc.a.b.example.com");
	dmarc_lookup_cancel(l); /* pending: the fetch is cancelled, cb never runs */
	assert_int_equal(f.cancels, 1);
	assert_int_equal(o.calls, 0);
	/* the second query goes straight to the org domain */
	struct fake_dns g = {.rr = rr, .n = 1, .deferred = 0};
	fe.ctx = &g;
	l = dmarc_lookup_start(&fe, "a.b.example.com", disc_cb, &o);
	assert_int_equal(g.queries, 2);
	assert_string_equal(g.asked[1], "_dmarc.example.com");
	assert_int_equal(o.calls, 1);
	dmarc_lookup_cancel(l);
	assert_int_equal(g.cancels, 0);
}

/* ---------------------------------------------------------- evaluation */

/* disc_with - a FOUND discovery of record txt at domain */
static struct dmarc_discovery disc_with(const char *txt, const char *domain, int at_org)
{
	struct dmarc_discovery d;
	memset(&d, 0, sizeof(d));
	assert_int_equal(parse(txt, &d.rec), DMARC_REC_OK);
	d.status = DMARC_DISC_FOUND;
	snprintf(d.domain, sizeof(d.domain), "%s", domain);
	d.at_org = at_org;
	return d;
}

/* sig - a DKIM result */
static struct dkim_sig_result sig(enum dkim_result r, const char *d)
{
	struct dkim_sig_result s;
	memset(&s, 0, sizeof(s));
	s.result = r;
	snprintf(s.domain, sizeof(s.domain), "%s", d);
	snprintf(s.selector, sizeof(s.selector), "sel");
	return s;
}

/* eval - evaluate and return the outcome */
static struct dmarc_outcome eval(const char *from, enum spf_result spf, const char *spf_domain,
				 const struct dkim_sig_result *dk, size_t ndk, const struct dmarc_discovery *d,
				 unsigned roll)
{
	struct dmarc_eval e = {from, spf, spf_domain, dk, ndk, d, roll};
	struct dmarc_outcome o;
	dmarc_evaluate(&e, &o);
	dmarc_log_report("TESTQID", "192.0.2.1", &e, &o, NULL); /* must not crash */
	return o;
}

static void test_eval_pass_fail(void **st)
{
	(void)st;
	struct dmarc_discovery d = disc_with("v=DMARC1; p=reject", "example.com", 0);
	struct dkim_sig_result s[3];
	struct dmarc_outcome o;

	/* SPF pass, aligned (relaxed: a bounce subdomain) */
	o = eval("example.com", SPF_PASS, "bounce.example.com", NULL, 0, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_PASS);
	assert_int_equal(o.spf_aligned, 1);
	assert_int_equal(o.disposition, DMARC_P_NONE);
	assert_int_equal(o.policy, DMARC_P_REJECT);
	/* SPF pass for another domain, no DKIM: fail -> reject */
	o = eval("example.com", SPF_PASS, "mailer.example.net", NULL, 0, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_FAIL);
	assert_int_equal(o.disposition, DMARC_P_REJECT);
	/* SPF softfail/neutral/none for the aligned domain: not a pass */
	o = eval("example.com", SPF_SOFTFAIL, "example.com", NULL, 0, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_FAIL);
	o = eval("example.com", SPF_NEUTRAL, "example.com", NULL, 0, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_FAIL);
	/* DKIM pass aligned (relaxed) */
	s[0] = sig(DKIM_PASS, "mail.example.com");
	o = eval("example.com", SPF_FAIL, "example.com", s, 1, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_PASS);
	assert_int_equal(o.dkim_aligned, 1);
	assert_string_equal(o.dkim_domain, "mail.example.com");
	/* DKIM pass, unaligned; DKIM fail aligned: fail */
	s[0] = sig(DKIM_PASS, "esp.example.net");
	s[1] = sig(DKIM_FAIL, "example.com");
	o = eval("example.com", SPF_NONE, "esp.example.net", s, 2, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_FAIL);
	assert_int_equal(o.dkim_aligned, 0);
	/* one of several signatures aligned and passing is enough */
	s[2] = sig(DKIM_PASS, "example.com");
	o = eval("example.com", SPF_NONE, "esp.example.net", s, 3, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_PASS);
	assert_string_equal(o.dkim_domain, "example.com");
	/* lookalike domains never align */
	s[0] = sig(DKIM_PASS, "example.com.evil.example");
	o = eval("example.com", SPF_PASS, "notexample.com", s, 1, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_FAIL);
}

static void test_eval_strict(void **st)
{
	(void)st;
	struct dmarc_discovery d = disc_with("v=DMARC1; p=reject; adkim=s; aspf=s", "example.com", 0);
	struct dkim_sig_result s = sig(DKIM_PASS, "mail.example.com");
	struct dmarc_outcome o;
	o = eval("example.com", SPF_PASS, "bounce.example.com", &s, 1, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_FAIL);
	assert_int_equal(o.disposition, DMARC_P_REJECT);
	o = eval("example.com", SPF_PASS, "example.com", &s, 1, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_PASS);
	assert_int_equal(o.spf_aligned, 1);
	assert_int_equal(o.dkim_aligned, 0);
	s = sig(DKIM_PASS, "EXAMPLE.COM");
	o = eval("example.com", SPF_FAIL, "x.example.net", &s, 1, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_PASS);
	/* strict SPF, relaxed DKIM */
	d = disc_with("v=DMARC1; p=quarantine; aspf=s", "example.com", 0);
	s = sig(DKIM_PASS, "mail.example.com");
	o = eval("example.com", SPF_PASS, "bounce.example.com", &s, 1, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_PASS);
	assert_int_equal(o.spf_aligned, 0);
	assert_int_equal(o.dkim_aligned, 1);
	/* multi-label suffix, relaxed: another co.uk organisation fails */
	d = disc_with("v=DMARC1; p=reject", "example.co.uk", 0);
	s = sig(DKIM_PASS, "other.co.uk");
	o = eval("example.co.uk", SPF_PASS, "co.uk", &s, 1, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_FAIL);
	s = sig(DKIM_PASS, "mail.example.co.uk");
	o = eval("example.co.uk", SPF_FAIL, "co.uk", &s, 1, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_PASS);
}

static void test_eval_policies(void **st)
{
	(void)st;
	struct dmarc_discovery d;
	struct dmarc_outcome o;
	const char *p[] = {"none", "quarantine", "reject"};
	for (int i = 0; i < 3; i++) {
		char rec[80];
		snprintf(rec, sizeof(rec), "v=DMARC1; p=%s", p[i]);
		d = disc_with(rec, "example.com", 0);
		o = eval("example.com", SPF_FAIL, "example.com", NULL, 0, &d, 99);
		assert_int_equal(o.result, DMARC_RESULT_FAIL);
		assert_int_equal(o.policy, (enum dmarc_p)i);
		assert_int_equal(o.disposition, (enum dmarc_p)i);
		assert_int_equal(o.sampled_out, 0);
	}
	/* subdomain: sp= applies when the record came from the org domain */
	d = disc_with("v=DMARC1; p=reject; sp=quarantine", "example.com", 1);
	o = eval("mail.example.com", SPF_FAIL, "x.example.net", NULL, 0, &d, 0);
	assert_int_equal(o.policy, DMARC_P_QUARANTINE);
	assert_int_equal(o.disposition, DMARC_P_QUARANTINE);
	d = disc_with("v=DMARC1; p=none; sp=reject", "example.com", 1);
	o = eval("mail.example.com", SPF_FAIL, "x.example.net", NULL, 0, &d, 0);
	assert_int_equal(o.disposition, DMARC_P_REJECT);
	/* the same record at the From domain itself: p= */
	d = disc_with("v=DMARC1; p=none; sp=reject", "example.com", 0);
	o = eval("example.com", SPF_FAIL, "x.example.net", NULL, 0, &d, 0);
	assert_int_equal(o.disposition, DMARC_P_NONE);
	/* no sp=: the subdomain gets p= */
	d = disc_with("v=DMARC1; p=reject", "example.com", 1);
	o = eval("a.b.example.com", SPF_FAIL, "x.example.net", NULL, 0, &d, 0);
	assert_int_equal(o.disposition, DMARC_P_REJECT);
	/* a subdomain passes with the org domain's signature (relaxed) */
	struct dkim_sig_result s = sig(DKIM_PASS, "example.com");
	o = eval("a.b.example.com", SPF_FAIL, "x.example.net", &s, 1, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_PASS);
}

static void test_eval_pct(void **st)
{
	(void)st;
	struct dmarc_discovery d = disc_with("v=DMARC1; p=reject; pct=30", "example.com", 0);
	struct dmarc_outcome o;
	int applied = 0;
	for (unsigned roll = 0; roll < 100; roll++) {
		o = eval("example.com", SPF_FAIL, "example.com", NULL, 0, &d, roll);
		assert_int_equal(o.result, DMARC_RESULT_FAIL);
		assert_int_equal(o.policy, DMARC_P_REJECT);
		if (o.disposition == DMARC_P_REJECT) {
			applied++;
			assert_int_equal(o.sampled_out, 0);
		} else {
			/* 6.6.4: the next policy down */
			assert_int_equal(o.disposition, DMARC_P_QUARANTINE);
			assert_int_equal(o.sampled_out, 1);
		}
	}
	assert_int_equal(applied, 30);
	d = disc_with("v=DMARC1; p=quarantine; pct=0", "example.com", 0);
	for (unsigned roll = 0; roll < 100; roll += 33) {
		o = eval("example.com", SPF_FAIL, "example.com", NULL, 0, &d, roll);
		assert_int_equal(o.disposition, DMARC_P_NONE);
		assert_int_equal(o.sampled_out, 1);
	}
	d = disc_with("v=DMARC1; p=reject; pct=100", "example.com", 0);
	o = eval("example.com", SPF_FAIL, "example.com", NULL, 0, &d, 99);
	assert_int_equal(o.disposition, DMARC_P_REJECT);
	/* p=none is never "sampled" */
	d = disc_with("v=DMARC1; p=none; pct=10", "example.com", 0);
	o = eval("example.com", SPF_FAIL, "example.com", NULL, 0, &d, 50);
	assert_int_equal(o.sampled_out, 0);
	/* a pass is a pass whatever the roll */
	o = eval("example.com", SPF_PASS, "example.com", NULL, 0, &d, 50);
	assert_int_equal(o.result, DMARC_RESULT_PASS);
}

static void test_eval_errors(void **st)
{
	(void)st;
	struct dmarc_discovery d;
	struct dmarc_outcome o;
	memset(&d, 0, sizeof(d));
	d.status = DMARC_DISC_NONE;
	o = eval("example.com", SPF_FAIL, "example.com", NULL, 0, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_NONE);
	assert_int_equal(o.disposition, DMARC_P_NONE);
	d.status = DMARC_DISC_INVALID;
	o = eval("example.com", SPF_FAIL, "example.com", NULL, 0, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_PERMERROR);
	assert_int_equal(o.disposition, DMARC_P_NONE);
	d.status = DMARC_DISC_TEMPERROR;
	o = eval("example.com", SPF_PASS, "example.com", NULL, 0, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_TEMPERROR);
	assert_int_equal(o.disposition, DMARC_P_NONE);
	/* an aligned identifier that could not be checked: temperror, never a reject */
	d = disc_with("v=DMARC1; p=reject", "example.com", 0);
	o = eval("example.com", SPF_TEMPERROR, "example.com", NULL, 0, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_TEMPERROR);
	assert_int_equal(o.disposition, DMARC_P_NONE);
	struct dkim_sig_result s = sig(DKIM_TEMPERROR, "example.com");
	o = eval("example.com", SPF_FAIL, "example.com", &s, 1, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_TEMPERROR);
	assert_int_equal(o.disposition, DMARC_P_NONE);
	/* a temperror for an unaligned domain changes nothing */
	s = sig(DKIM_TEMPERROR, "example.net");
	o = eval("example.com", SPF_TEMPERROR, "example.org", &s, 1, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_FAIL);
	assert_int_equal(o.disposition, DMARC_P_REJECT);
	/* SPF permerror: a fail */
	o = eval("example.com", SPF_PERMERROR, "example.com", NULL, 0, &d, 0);
	assert_int_equal(o.result, DMARC_RESULT_FAIL);
}

static void test_strs(void **st)
{
	(void)st;
	assert_string_equal(dmarc_p_str(DMARC_P_QUARANTINE), "quarantine");
	assert_string_equal(dmarc_align_str(DMARC_ALIGN_STRICT), "s");
	assert_string_equal(dmarc_rec_status_str(DMARC_REC_INVALID), "invalid");
	assert_string_equal(dmarc_disc_str(DMARC_DISC_TEMPERROR), "temperror");
	assert_string_equal(dmarc_result_str(DMARC_RESULT_PERMERROR), "permerror");
	assert_string_equal(dmarc_result_str((enum dmarc_result)42), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_record_minimal),
		cmocka_unit_test(test_record_full),
		cmocka_unit_test(test_record_not_dmarc),
		cmocka_unit_test(test_record_invalid),
		cmocka_unit_test(test_record_p_fallback),
		cmocka_unit_test(test_record_defaults),
		cmocka_unit_test(test_record_huge),
		cmocka_unit_test(test_domain_normalize),
		cmocka_unit_test(test_org_domain),
		cmocka_unit_test(test_alignment),
		cmocka_unit_test(test_from_values),
		cmocka_unit_test(test_from_refused),
		cmocka_unit_test(test_from_eai),
		cmocka_unit_test(test_from_header_section),
		cmocka_unit_test(test_discovery),
		cmocka_unit_test(test_discovery_queries_and_cancel),
		cmocka_unit_test(test_eval_pass_fail),
		cmocka_unit_test(test_eval_strict),
		cmocka_unit_test(test_eval_policies),
		cmocka_unit_test(test_eval_pct),
		cmocka_unit_test(test_eval_errors),
		cmocka_unit_test(test_strs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
