/*
 * test_dns_parse - the pure DNS parsers against well-formed and hostile
 * rdata: compression pointers, reserved label types, overruns, names over
 * 255 octets, odd bytes that must come out escaped, address literals.
 */
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dns/dns.h"
#include "dns/dns_parse.h"

#define U(s) ((const unsigned char *)(s))

/* test_name_simple - labels joined by dots, octets consumed reported */
static void test_name_simple(void **state)
{
	char out[DNS_NAME_TEXT_MAX];
	size_t used = 0;
	const char w[] = "\3mx1\7example\4test";
	assert_int_equal(dns_parse_name(U(w), sizeof(w), &used, out, sizeof(out)), 0);
	assert_string_equal(out, "mx1.example.test");
	assert_int_equal(used, sizeof(w));
	/* the root */
	assert_int_equal(dns_parse_name(U(""), 1, &used, out, sizeof(out)), 0);
	assert_string_equal(out, ".");
	assert_int_equal(used, 1);
}

/* test_name_hostile - pointers, reserved types, overruns, no terminator */
static void test_name_hostile(void **state)
{
	char out[DNS_NAME_TEXT_MAX];
	size_t used;
	assert_int_equal(dns_parse_name(U("\xC0\x0C"), 2, &used, out, sizeof(out)), -1);
	assert_int_equal(dns_parse_name(U("\3abc\xC0\x0C"), 6, &used, out, sizeof(out)), -1);
	assert_int_equal(dns_parse_name(U("\x40" "abc"), 4, &used, out, sizeof(out)), -1);
	assert_int_equal(dns_parse_name(U("\x80" "abc"), 4, &used, out, sizeof(out)), -1);
	assert_int_equal(dns_parse_name(U("\5abc"), 4, &used, out, sizeof(out)), -1);
	assert_int_equal(dns_parse_name(U("\3abc"), 4, &used, out, sizeof(out)), -1);
	assert_int_equal(dns_parse_name(U(""), 0, &used, out, sizeof(out)), -1);
	assert_int_equal(dns_parse_name(U("\0"), 1, &used, out, 0), -1);
	/* output buffer too small: refused, never overrun */
	char small[4];
	assert_int_equal(dns_parse_name(U("\3abc\3def"), 9, &used, small, sizeof(small)), -1);
	assert_int_equal(dns_parse_name(U("\3abc"), 5, &used, small, sizeof(small)), 0);
	assert_string_equal(small, "abc");
}

/* test_name_lengths - 63-octet labels and the 255-octet total */
static void test_name_lengths(void **state)
{
	unsigned char w[300];
	char out[DNS_NAME_TEXT_MAX];
	size_t used, n = 0;

	/* 3 x 63-octet labels + one 61-octet label + root = 255 octets */
	for (int l = 0; l < 3; l++) {
		w[n++] = 63;
		memset(w + n, 'a', 63);
		n += 63;
	}
	w[n++] = 61;
	memset(w + n, 'b', 61);
	n += 61;
	w[n++] = 0;
	assert_int_equal(n, 255);
	assert_int_equal(dns_parse_name(w, n, &used, out, sizeof(out)), 0);
	assert_int_equal(used, 255);
	assert_int_equal(strlen(out), 63 * 3 + 61 + 3);
	/* one more octet: 256 */
	n = 0;
	for (int l = 0; l < 3; l++) {
		w[n++] = 63;
		memset(w + n, 'a', 63);
		n += 63;
	}
	w[n++] = 62;
	memset(w + n, 'b', 62);
	n += 62;
	w[n++] = 0;
	assert_int_equal(dns_parse_name(w, n, &used, out, sizeof(out)), -1);
	/* the worst escape case still fits DNS_NAME_TEXT_MAX */
	n = 0;
	for (int l = 0; l < 3; l++) {
		w[n++] = 63;
		memset(w + n, 0xff, 63);
		n += 63;
	}
	w[n++] = 61;
	memset(w + n, 0xff, 61);
	n += 61;
	w[n++] = 0;
	assert_int_equal(dns_parse_name(w, n, &used, out, sizeof(out)), 0);
	assert_int_equal(strlen(out), 4 * 250 + 3);
}

/* test_name_escapes - odd bytes cannot forge separators or controls */
static void test_name_escapes(void **state)
{
	char out[DNS_NAME_TEXT_MAX];
	size_t used;
	const char w[] = "\3a.b\1\\\4x y\n\2\0\xff";
	assert_int_equal(dns_parse_name(U(w), sizeof(w), &used, out, sizeof(out)), 0);
	assert_string_equal(out, "a\\.b.\\\\.x\\032y\\010.\\000\\255");
	for (const char *p = out; *p; p++)
		assert_true(*p > ' ' && *p < 0x7f);
	assert_false(dns_parse_hostname_ok(out));
}

/* test_mx - preference + exchange; trailing garbage and short rdata refused */
static void test_mx(void **state)
{
	char name[DNS_NAME_TEXT_MAX];
	unsigned pref = 99;
	const char w[] = "\0\x0a\2mx\4test";
	assert_int_equal(dns_parse_mx(U(w), sizeof(w), &pref, name, sizeof(name)), 0);
	assert_int_equal(pref, 10);
	assert_string_equal(name, "mx.test");
	/* RFC 7505 null MX: 0 . */
	assert_int_equal(dns_parse_mx(U("\0\0\0"), 3, &pref, name, sizeof(name)), 0);
	assert_int_equal(pref, 0);
	assert_string_equal(name, ".");
	/* big preference */
	assert_int_equal(dns_parse_mx(U("\xff\xff\0"), 3, &pref, name, sizeof(name)), 0);
	assert_int_equal(pref, 65535);
	const char tail[] = "\0\x0a\2mx\4test\0junk";
	assert_int_equal(dns_parse_mx(U(tail), sizeof(tail), &pref, name, sizeof(name)), -1);
	assert_int_equal(dns_parse_mx(U("\0\x0a"), 2, &pref, name, sizeof(name)), -1);
	assert_int_equal(dns_parse_mx(U(""), 0, &pref, name, sizeof(name)), -1);
	assert_int_equal(dns_parse_mx(U("\0\x0a\xc0\x0c"), 4, &pref, name, sizeof(name)), -1);
}

/* test_txt - strings concatenated, lengths exact, overruns refused */
static void test_txt(void **state)
{
	char out[256];
	size_t len = 0;
	const char w[] = "\6v=spf1\12 -all mx a";
	assert_int_equal(dns_parse_txt(U(w), sizeof(w) - 1, out, sizeof(out), &len), 0);
	assert_string_equal(out, "v=spf1 -all mx a");
	assert_int_equal(len, 16);
	/* an empty string is a valid TXT */
	assert_int_equal(dns_parse_txt(U("\0"), 1, out, sizeof(out), &len), 0);
	assert_int_equal(len, 0);
	/* embedded NUL kept, length exact */
	assert_int_equal(dns_parse_txt(U("\3a\0b"), 4, out, sizeof(out), &len), 0);
	assert_int_equal(len, 3);
	assert_memory_equal(out, "a\0b", 3);
	/* zero-length rdata, overrun, short output */
	assert_int_equal(dns_parse_txt(U(""), 0, out, sizeof(out), &len), -1);
	assert_int_equal(dns_parse_txt(U("\5abc"), 4, out, sizeof(out), &len), -1);
	assert_int_equal(dns_parse_txt(U("\3abc\1"), 5, out, sizeof(out), &len), -1);
	assert_int_equal(dns_parse_txt(U("\3abc"), 4, out, 3, &len), -1);
	assert_int_equal(dns_parse_txt(U("\3abc"), 4, out, 4, &len), 0);
	/* 255-octet strings */
	unsigned char big[512];
	big[0] = 255;
	memset(big + 1, 'x', 255);
	big[256] = 255;
	memset(big + 257, 'y', 255);
	char bout[513];
	assert_int_equal(dns_parse_txt(big, 512, bout, sizeof(bout), &len), 0);
	assert_int_equal(len, 510);
	assert_int_equal(bout[254], 'x');
	assert_int_equal(bout[255], 'y');
}

/* test_addr - A and AAAA rdata of exactly the right size only */
static void test_addr(void **state)
{
	struct dns_addr a;
	assert_int_equal(dns_parse_a(U("\xc0\0\2\1"), 4, AF_INET, &a), 0);
	assert_string_equal(a.text, "192.0.2.1");
	assert_int_equal(a.family, AF_INET);
	assert_int_equal(dns_parse_a(U("\xc0\0\2\1\1"), 5, AF_INET, &a), -1);
	assert_int_equal(dns_parse_a(U("\xc0\0\2"), 3, AF_INET, &a), -1);
	unsigned char six[16] = {0x20, 0x01, 0x0d, 0xb8};
	six[15] = 1;
	assert_int_equal(dns_parse_a(six, 16, AF_INET6, &a), 0);
	assert_string_equal(a.text, "2001:db8::1");
	assert_int_equal(dns_parse_a(six, 15, AF_INET6, &a), -1);
	assert_int_equal(dns_parse_a(six, 4, 12345, &a), -1);
	struct sockaddr_storage ss;
	assert_int_equal(dns_addr_sockaddr(&a, 25, &ss), sizeof(struct sockaddr_in6));
	assert_int_equal(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 25);
	a.family = 0;
	assert_int_equal(dns_addr_sockaddr(&a, 25, &ss), 0);
}

/* test_literal - RFC 5321 4.1.3 literals, strict */
static void test_literal(void **state)
{
	struct dns_addr a;
	assert_int_equal(dns_parse_literal("[192.0.2.7]", &a), 0);
	assert_string_equal(a.text, "192.0.2.7");
	assert_int_equal(dns_parse_literal("[IPv6:2001:db8::7]", &a), 0);
	assert_string_equal(a.text, "2001:db8::7");
	assert_int_equal(dns_parse_literal("[ipv6:::1]", &a), 0);
	assert_int_equal(a.family, AF_INET6);
	const char *bad[] = {"192.0.2.7", "[192.0.2.7", "192.0.2.7]", "[]", "[::1]",
			     "[IPv6:192.0.2.7]", "[256.0.0.1]", "[1.2.3]", "[ 1.2.3.4]",
			     "[1.2.3.4]x", "[IPv6:]", "[IPv6:2001:db8::7%eth0]",
			     "[1111111111111111111111111111111111111111111111111111111111111111111]"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(dns_parse_literal(bad[i], &a), -1);
	assert_int_equal(dns_parse_ip("127.0.0.1", &a), 0);
	assert_int_equal(dns_parse_ip("::1", &a), 0);
	assert_int_equal(dns_parse_ip("localhost", &a), -1);
	assert_int_equal(dns_parse_ip("", &a), -1);
}

/* test_hostname_ok - what we agree to put in a query */
static void test_hostname_ok(void **state)
{
	assert_true(dns_parse_hostname_ok("example.test"));
	assert_true(dns_parse_hostname_ok("example.test."));
	assert_true(dns_parse_hostname_ok("_dmarc.example.test"));
	assert_true(dns_parse_hostname_ok("a"));
	assert_false(dns_parse_hostname_ok(""));
	assert_false(dns_parse_hostname_ok("."));
	assert_false(dns_parse_hostname_ok("a..b"));
	assert_false(dns_parse_hostname_ok(".a"));
	assert_false(dns_parse_hostname_ok("a b"));
	assert_false(dns_parse_hostname_ok("a\\.b"));
	assert_false(dns_parse_hostname_ok("a.b.."));
	assert_false(dns_parse_hostname_ok("[1.2.3.4]"));
	char l64[80];
	memset(l64, 'a', 64);
	l64[64] = '\0';
	assert_false(dns_parse_hostname_ok(l64));
	l64[63] = '\0';
	assert_true(dns_parse_hostname_ok(l64));
	char big[300];
	memset(big, 'a', sizeof(big));
	for (size_t i = 50; i < sizeof(big); i += 50)
		big[i] = '.';
	big[254] = '\0';
	assert_false(dns_parse_hostname_ok(big));
	big[253] = '\0';
	assert_true(dns_parse_hostname_ok(big));
}

/* test_status - names, permanence and enhanced codes */
static void test_status(void **state)
{
	assert_string_equal(dns_status_str(DNS_NULLMX), "nullmx");
	assert_string_equal(dns_status_str((enum dns_status)99), "unknown");
	assert_string_equal(dns_status_dsn(DNS_NULLMX), "5.1.10");
	assert_string_equal(dns_status_dsn(DNS_NXDOMAIN), "5.1.2");
	assert_string_equal(dns_status_dsn(DNS_TEMPFAIL), "4.4.3");
	assert_true(dns_status_is_permanent(DNS_NXDOMAIN));
	assert_true(dns_status_is_permanent(DNS_NULLMX));
	assert_false(dns_status_is_permanent(DNS_TEMPFAIL));
	assert_false(dns_status_is_permanent(DNS_BADDATA));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_simple), cmocka_unit_test(test_name_hostile),
		cmocka_unit_test(test_name_lengths), cmocka_unit_test(test_name_escapes),
		cmocka_unit_test(test_mx), cmocka_unit_test(test_txt),
		cmocka_unit_test(test_addr), cmocka_unit_test(test_literal),
		cmocka_unit_test(test_hostname_ok), cmocka_unit_test(test_status),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
