/*
 * passwd - verify and create password hashes with libxcrypt. See passwd.h.
 */
#include "auth/passwd.h"

#include <crypt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "core/str.h"

/* a hash of a random string at the default cost: checked against when the
 * user does not exist, so the reply takes as long as for a wrong password */
static char passwd_dummy[CRYPT_OUTPUT_SIZE];
static pthread_once_t passwd_dummy_once = PTHREAD_ONCE_INIT;

static void passwd_dummy_init(void)
{
	unsigned char r[16];
	char pw[33];
	if (RAND_bytes(r, sizeof(r)) != 1)
		memset(r, 0x5a, sizeof(r));
	for (size_t i = 0; i < sizeof(r); i++)
		snprintf(pw + 2 * i, 3, "%02x", r[i]);
	if (passwd_hash_new(pw, passwd_dummy, sizeof(passwd_dummy)) < 0)
		snprintf(passwd_dummy, sizeof(passwd_dummy), "*");
}

/* passwd_crypt_part - the crypt string inside a stored value, or NULL */
static const char *passwd_crypt_part(const char *stored)
{
	static const char *const schemes[] = {"{CRYPT}", "{BLF-CRYPT}", "{SHA512-CRYPT}", "{SHA256-CRYPT}",
					      "{MD5-CRYPT}"};
	if (stored[0] == '$')
		return stored;
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
		size_t n = strlen(schemes[i]);
		if (str_ncasecmp_ascii(stored, schemes[i], n) == 0 && stored[n] == '$')
			return stored + n;
	}
	return NULL;
}

int passwd_verify(const char *stored, const char *password)
{
	const char *hash = stored ? passwd_crypt_part(stored) : NULL;
	int real = hash != NULL;
	if (!real) {
		pthread_once(&passwd_dummy_once, passwd_dummy_init);
		hash = passwd_dummy;
	}
	struct crypt_data *cd = calloc(1, sizeof(*cd));
	if (cd == NULL)
		return 0;
	const char *out = crypt_r(password, hash, cd);
	int ok = 0;
	if (out && out[0] != '*') {
		size_t a = strlen(out), b = strlen(hash);
		ok = a == b && CRYPTO_memcmp(out, hash, a) == 0;
	}
	/* the work area held the password: wipe it */
	OPENSSL_cleanse(cd, sizeof(*cd));
	free(cd);
	return real && ok;
}

int passwd_hash_new(const char *password, char *out, size_t outlen)
{
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	if (crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof(salt)) == NULL)
		return -1;
	struct crypt_data *cd = calloc(1, sizeof(*cd));
	if (cd == NULL)
		return -1;
	const char *h = crypt_r(password, salt, cd);
	int r = -1;
	if (h && h[0] != '*' && strlen(h) < outlen) {
		snprintf(out, outlen, "%s", h);
		r = 0;
	}
	OPENSSL_cleanse(cd, sizeof(*cd));
	free(cd);
	return r;
}
