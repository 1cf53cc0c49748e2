/*
 * test_passwd - src/auth/passwd.c: a yescrypt hash made by passwd_hash_new
 * verifies and a wrong password does not; fixed SHA512-CRYPT,
 * SHA256-CRYPT and MD5-CRYPT vectors (made with `openssl passwd`) with and
 * without their Dovecot scheme prefix; {PLAIN} and unknown schemes are
 * refused; a NULL or garbage stored hash never matches.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "auth/passwd.h"

/* openssl passwd -6 / -5 / -1 -salt saltsalt 'correct horse' */
#define SHA512 "$6$saltsalt$hRM5XZ86KXEw9UOmjigeVqFgULtFB2sgpC9lXQDfMib3Zgw7mEiUvBJI2EplzfAqxL5Vvwp2scFtv/uamSo5z0"
#define SHA256 "$5$saltsalt$myjXcpMpE2Ofk7fj9hqyNYSn6lmWG4Mqnjx.KIRRr4/"
#define MD5 "$1$saltsalt$NuzA7WTAelpl95xgBGWN60"

static void test_yescrypt_roundtrip(void **state)
{
	char h[256];
	assert_int_equal(passwd_hash_new("s3cret pass", h, sizeof(h)), 0);
	assert_memory_equal(h, "$y$", 3);
	assert_int_equal(passwd_verify(h, "s3cret pass"), 1);
	assert_int_equal(passwd_verify(h, "s3cret pasS"), 0);
	assert_int_equal(passwd_verify(h, "s3cret pass "), 0);
	assert_int_equal(passwd_verify(h, ""), 0);
	/* two hashes of one password differ (random salt) and both verify */
	char h2[256];
	assert_int_equal(passwd_hash_new("s3cret pass", h2, sizeof(h2)), 0);
	assert_string_not_equal(h, h2);
	assert_int_equal(passwd_verify(h2, "s3cret pass"), 1);
	/* the Dovecot prefix form */
	char pre[300];
	strcpy(pre, "{CRYPT}");
	strcat(pre, h);
	assert_int_equal(passwd_verify(pre, "s3cret pass"), 1);
	/* an output buffer too small is an error, not an overflow */
	char tiny[8];
	assert_int_equal(passwd_hash_new("x", tiny, sizeof(tiny)), -1);
	/* a tampered hash never matches */
	h[strlen(h) - 1] ^= 1;
	assert_int_equal(passwd_verify(h, "s3cret pass"), 0);
}

static void test_known_vectors(void **state)
{
	assert_int_equal(passwd_verify(SHA512, "correct horse"), 1);
	assert_int_equal(passwd_verify("{SHA512-CRYPT}" SHA512, "correct horse"), 1);
	assert_int_equal(passwd_verify("{sha512-crypt}" SHA512, "correct horse"), 1);
	assert_int_equal(passwd_verify("{SHA512-CRYPT}" SHA512, "correct horsE"), 0);
	assert_int_equal(passwd_verify(SHA256, "correct horse"), 1);
	assert_int_equal(passwd_verify("{SHA256-CRYPT}" SHA256, "correct horse"), 1);
	assert_int_equal(passwd_verify("{MD5-CRYPT}" MD5, "correct horse"), 1);
	assert_int_equal(passwd_verify(MD5, "wrong"), 0);
	/* the prefix must be followed by a crypt string */
	assert_int_equal(passwd_verify("{SHA512-CRYPT}", "correct horse"), 0);
	assert_int_equal(passwd_verify("{SHA512-CRYPT}x" SHA512, "correct horse"), 0);
}

static void test_refused_forms(void **state)
{
	/* clear-text and unknown schemes are never a match, even when the
	 * password is "right" */
	assert_int_equal(passwd_verify("{PLAIN}secret", "secret"), 0);
	assert_int_equal(passwd_verify("{plain}secret", "secret"), 0);
	assert_int_equal(passwd_verify("{CLEARTEXT}secret", "secret"), 0);
	assert_int_equal(passwd_verify("{SSHA}abcdef", "secret"), 0);
	assert_int_equal(passwd_verify("secret", "secret"), 0);
	assert_int_equal(passwd_verify("", ""), 0);
	assert_int_equal(passwd_verify("*", "*"), 0);
	assert_int_equal(passwd_verify("!", ""), 0);
	assert_int_equal(passwd_verify("$", "x"), 0);
	assert_int_equal(passwd_verify("$6$", "x"), 0);
	assert_int_equal(passwd_verify("$y$garbage", "x"), 0);
	/* unknown user: NULL hash, still 0 (and spends a hash's time) */
	assert_int_equal(passwd_verify(NULL, "secret"), 0);
	assert_int_equal(passwd_verify(NULL, ""), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_yescrypt_roundtrip),
		cmocka_unit_test(test_known_vectors),
		cmocka_unit_test(test_refused_forms),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
