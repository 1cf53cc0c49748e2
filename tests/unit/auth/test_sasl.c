/*
 * test_sasl - src/auth/sasl.c against hostile input: base64 with bad
 * characters, bad padding, data after padding, lengths not a multiple of
 * 4, whitespace, output that does not fit, huge input; PLAIN messages with
 * 0, 1 and 3 NULs, empty fields, fields at and over 255 octets; and the
 * encoder round trip.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth/sasl.h"

/* dec - decode a string into a large buffer */
static long dec(const char *in, unsigned char *out)
{
	return sasl_b64_decode(in, strlen(in), out, 4096);
}

static void test_b64_valid(void **state)
{
	unsigned char out[4096];
	assert_int_equal(dec("", out), 0);
	assert_int_equal(dec("=", out), 0); /* RFC 4954 4: the empty response */
	assert_int_equal(dec("YQ==", out), 1);
	assert_memory_equal(out, "a", 1);
	assert_int_equal(dec("YWI=", out), 2);
	assert_memory_equal(out, "ab", 2);
	assert_int_equal(dec("YWJj", out), 3);
	assert_memory_equal(out, "abc", 3);
	assert_int_equal(dec("AGFsaWNlAHNlY3JldA==", out), 13);
	assert_memory_equal(out, "\0alice\0secret", 13);
	assert_int_equal(dec("+/+/", out), 3);
	assert_memory_equal(out, "\xfb\xff\xbf", 3);
}

static void test_b64_hostile(void **state)
{
	unsigned char out[4096];
	static const char *const bad[] = {
		"Y",        "YW",       "YWJ",       "YWJjZ",     /* length not a multiple of 4 */
		"YWJj\r\n", "YW Jj",    " YWJj",     "YWJj ",     /* whitespace */
		"YW-j",     "YW_j",     "YW.j",      "YWJ\x80",   /* not in the alphabet (url-safe too) */
		"YWJ\0",    "====",     "Y===",      "=YWJ",      /* padding in the wrong place */
		"YQ=a",     "YQ==YWJj", "YWI=YWJj",  "YQ==\0\0\0\0", /* data after padding */
		"==",       "YQ=",      "YWJj=",     "YWJj====",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n = strlen(bad[i]);
		if (i == 12 || i == 19)
			n = 4 + (i == 19 ? 4 : 0); /* embedded NULs */
		if (sasl_b64_decode(bad[i], n, out, sizeof(out)) != -1)
			fail_msg("accepted bad base64 #%zu \"%s\"", i, bad[i]);
	}
	/* output capacity is respected exactly */
	assert_int_equal(sasl_b64_decode("YWJj", 4, out, 3), 3);
	assert_int_equal(sasl_b64_decode("YWJj", 4, out, 2), -1);
	assert_int_equal(sasl_b64_decode("YWI=", 4, out, 2), 2);
	assert_int_equal(sasl_b64_decode("YWI=", 4, out, 1), -1);
	assert_int_equal(sasl_b64_decode("YWJj", 4, out, 0), -1);
	/* the capacity check comes before the write: no overflow of a small
	 * buffer followed by a canary */
	unsigned char small[5];
	memset(small, 0xAA, sizeof(small));
	assert_int_equal(sasl_b64_decode("YWJjZGVm", 8, small, 4), -1);
	assert_int_equal(small[4], 0xAA);
}

static void test_b64_huge(void **state)
{
	/* 1 MiB of valid base64 into a small buffer: refused, not overrun */
	size_t n = 1 << 20;
	char *in = malloc(n);
	unsigned char *out = malloc(n);
	assert_non_null(in);
	assert_non_null(out);
	memset(in, 'A', n);
	unsigned char small[768];
	assert_int_equal(sasl_b64_decode(in, n, small, sizeof(small)), -1);
	assert_int_equal(sasl_b64_decode(in, n, out, n), (long)(n / 4 * 3));
	/* one bad octet at the very end */
	in[n - 1] = '!';
	assert_int_equal(sasl_b64_decode(in, n, out, n), -1);
	free(in);
	free(out);
}

static void test_b64_roundtrip(void **state)
{
	unsigned char data[300], back[300];
	char enc[4 * 100 + 8];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i * 37 + 11);
	for (size_t n = 0; n <= 250; n++) {
		size_t k = sasl_b64_encode(data, n, enc);
		assert_int_equal(k, 4 * ((n + 2) / 3));
		assert_int_equal(enc[k], '\0');
		long d = sasl_b64_decode(enc, k, back, sizeof(back));
		assert_int_equal(d, (long)n);
		assert_memory_equal(back, data, n);
	}
	char e[8];
	assert_int_equal(sasl_b64_encode((const unsigned char *)"Username:", 9, enc), 12);
	assert_string_equal(enc, "VXNlcm5hbWU6");
	assert_int_equal(sasl_b64_encode((const unsigned char *)"", 0, e), 0);
	assert_string_equal(e, "");
}

/* plain - sasl_plain_parse over n octets */
static int plain(const void *msg, size_t n, struct sasl_plain *out)
{
	return sasl_plain_parse(msg, n, out);
}

static void test_plain(void **state)
{
	struct sasl_plain p;
	assert_int_equal(plain("\0alice\0secret", 13, &p), 0);
	assert_string_equal(p.authzid, "");
	assert_string_equal(p.authcid, "alice");
	assert_string_equal(p.passwd, "secret");
	assert_int_equal(plain("admin\0alice\0s e c r e t", 23, &p), 0);
	assert_string_equal(p.authzid, "admin");
	assert_string_equal(p.authcid, "alice");
	assert_string_equal(p.passwd, "s e c r e t");
	/* wrong NUL counts */
	assert_int_equal(plain("", 0, &p), -1);
	assert_int_equal(plain("alicesecret", 11, &p), -1);        /* 0 NULs */
	assert_int_equal(plain("alice\0secret", 12, &p), -1);      /* 1 NUL */
	assert_int_equal(plain("\0alice\0sec\0ret", 14, &p), -1);  /* 3 NULs */
	assert_int_equal(plain("\0alice\0secret\0", 14, &p), -1);  /* trailing NUL */
	assert_int_equal(plain("\0\0\0", 3, &p), -1);
	/* empty authcid or password */
	assert_int_equal(plain("\0\0secret", 8, &p), -1);
	assert_int_equal(plain("\0alice\0", 7, &p), -1);
	assert_int_equal(plain("\0\0", 2, &p), -1);
}

static void test_plain_field_lengths(void **state)
{
	struct sasl_plain p;
	unsigned char msg[3 * 257 + 2];
	for (int which = 0; which < 3; which++) {
		for (size_t len = 254; len <= 257; len++) {
			size_t lens[3] = {3, 5, 6};
			lens[which] = len;
			size_t o = 0;
			for (int k = 0; k < 3; k++) {
				memset(msg + o, 'a' + k, lens[k]);
				o += lens[k];
				if (k < 2)
					msg[o++] = '\0';
			}
			int r = plain(msg, o, &p);
			if (len <= SASL_FIELD_MAX) {
				assert_int_equal(r, 0);
				assert_int_equal(strlen(p.authzid), lens[0]);
				assert_int_equal(strlen(p.authcid), lens[1]);
				assert_int_equal(strlen(p.passwd), lens[2]);
			} else {
				assert_int_equal(r, -1);
			}
		}
	}
	/* all three at the maximum */
	memset(msg, 'z', sizeof(msg));
	msg[255] = '\0';
	msg[511] = '\0';
	assert_int_equal(plain(msg, 767, &p), 0);
	assert_int_equal(strlen(p.passwd), 255);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_b64_valid),
		cmocka_unit_test(test_b64_hostile),
		cmocka_unit_test(test_b64_huge),
		cmocka_unit_test(test_b64_roundtrip),
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_plain_field_lengths),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
