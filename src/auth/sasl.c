/*
 * sasl - AUTH PLAIN / LOGIN response decoding. See sasl.h.
 */
#include "auth/sasl.h"

#include <string.h>

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

long sasl_b64_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
	if (n == 1 && in[0] == '=')
		return 0;
	if (n % 4 != 0)
		return -1;
	size_t o = 0;
	for (size_t i = 0; i < n; i += 4) {
		int v[4];
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)in[i + k];
			if (c == '=' && i + 4 == n && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad)
				return -1; /* data after padding */
			v[k] = b64val(c);
			if (v[k] < 0)
				return -1;
		}
		unsigned triple = ((unsigned)v[0] << 18) | ((unsigned)v[1] << 12) | ((unsigned)v[2] << 6) | (unsigned)v[3];
		size_t bytes = 3 - (size_t)pad;
		if (o + bytes > cap)
			return -1;
		out[o++] = (unsigned char)(triple >> 16);
		if (bytes > 1)
			out[o++] = (unsigned char)(triple >> 8);
		if (bytes > 2)
			out[o++] = (unsigned char)triple;
	}
	return (long)o;
}

size_t sasl_b64_encode(const unsigned char *in, size_t n, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)in[i] << 16;
		if (i + 1 < n)
			v |= (unsigned)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		out[o++] = b64chars[(v >> 18) & 63];
		out[o++] = b64chars[(v >> 12) & 63];
		out[o++] = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? b64chars[v & 63] : '=';
	}
	out[o] = '\0';
	return o;
}

int sasl_plain_parse(const unsigned char *msg, size_t n, struct sasl_plain *out)
{
	const unsigned char *nul1 = memchr(msg, '\0', n);
	if (nul1 == NULL)
		return -1;
	size_t zlen = (size_t)(nul1 - msg);
	const unsigned char *rest = nul1 + 1;
	size_t rn = n - zlen - 1;
	const unsigned char *nul2 = memchr(rest, '\0', rn);
	if (nul2 == NULL)
		return -1;
	size_t clen = (size_t)(nul2 - rest);
	size_t plen = rn - clen - 1;
	if (memchr(nul2 + 1, '\0', plen) != NULL)
		return -1;
	if (zlen > SASL_FIELD_MAX || clen > SASL_FIELD_MAX || plen > SASL_FIELD_MAX || clen == 0 || plen == 0)
		return -1;
	memcpy(out->authzid, msg, zlen);
	out->authzid[zlen] = '\0';
	memcpy(out->authcid, rest, clen);
	out->authcid[clen] = '\0';
	memcpy(out->passwd, nul2 + 1, plen);
	out->passwd[plen] = '\0';
	return 0;
}
