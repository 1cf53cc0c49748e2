/*
 * sasl - the client responses of SMTP AUTH (RFC 4954) for the PLAIN
 * (RFC 4616) and LOGIN mechanisms, decoded without I/O.
 *
 * Exports:
 *   sasl_b64_decode    strict base64 (RFC 4648 4), no whitespace; "=" alone
 *                      is the empty response (RFC 4954 4)
 *   sasl_b64_encode    for server challenges
 *   sasl_plain_parse   "authzid NUL authcid NUL passwd" into its parts
 * Trusts: nothing; every input is client bytes. Decoded secrets are the
 * caller's to wipe (OPENSSL_cleanse) when done.
 */
#ifndef TERN_AUTH_SASL_H
#define TERN_AUTH_SASL_H

#include <stddef.h>

#define SASL_FIELD_MAX 255 /* RFC 4616: at most 255 octets per field */

/* sasl_b64_decode - decode in[0..n) into out (capacity cap); length or -1 */
long sasl_b64_decode(const char *in, size_t n, unsigned char *out, size_t cap);
/* sasl_b64_encode - encode into out (needs 4*ceil(n/3)+1); returns length */
size_t sasl_b64_encode(const unsigned char *in, size_t n, char *out);

struct sasl_plain {
	char authzid[SASL_FIELD_MAX + 1];
	char authcid[SASL_FIELD_MAX + 1];
	char passwd[SASL_FIELD_MAX + 1];
};

/* sasl_plain_parse - 0 ok; -1 malformed (wrong NUL count, empty authcid or
 * password, a field over 255 octets) */
int sasl_plain_parse(const unsigned char *msg, size_t n, struct sasl_plain *out);

#endif
