/*
 * dns_parse - pure parsers of DNS wire data and address text. See
 * dns_parse.h. Everything here is hostile input: lengths are checked
 * before every read, output is capped, nothing is allocated.
 */
#include "dns/dns_parse.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "core/str.h"

/* dns_parse_plain_byte - label bytes written as themselves in text */
static int dns_parse_plain_byte(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

/* dns_parse_put - append n bytes to out, keeping room for the NUL */
static int dns_parse_put(char *out, size_t outlen, size_t *pos, const char *s, size_t n)
{
	if (outlen == 0 || n > outlen - 1 - *pos)
		return -1;
	memcpy(out + *pos, s, n);
	*pos += n;
	out[*pos] = '\0';
	return 0;
}

int dns_parse_name(const unsigned char *p, size_t len, size_t *used, char *out, size_t outlen)
{
	size_t i = 0, o = 0, wire = 0;

	if (outlen == 0)
		return -1;
	out[0] = '\0';
	for (;;) {
		if (i >= len)
			return -1; /* ran off the rdata before the root label */
		unsigned char l = p[i];
		/* 0xC0 is a compression pointer, 0x40/0x80 are obsolete/reserved
		 * label types: none can appear in rdata libunbound hands out. */
		if (l & 0xC0)
			return -1;
		wire += 1u + l;
		if (wire > DNS_NAME_WIRE_MAX)
			return -1;
		i++;
		if (l == 0)
			break;
		if (l > len - i)
			return -1;
		if (o > 0 && dns_parse_put(out, outlen, &o, ".", 1) < 0)
			return -1;
		for (size_t k = 0; k < l; k++) {
			unsigned char c = p[i + k];
			char esc[5];
			if (dns_parse_plain_byte(c)) {
				esc[0] = (char)c;
				if (dns_parse_put(out, outlen, &o, esc, 1) < 0)
					return -1;
			} else if (c == '.' || c == '\\') {
				esc[0] = '\\';
				esc[1] = (char)c;
				if (dns_parse_put(out, outlen, &o, esc, 2) < 0)
					return -1;
			} else {
				esc[0] = '\\';
				esc[1] = (char)('0' + c / 100);
				esc[2] = (char)('0' + (c / 10) % 10);
				esc[3] = (char)('0' + c % 10);
				if (dns_parse_put(out, outlen, &o, esc, 4) < 0)
					return -1;
			}
		}
		i += l;
	}
	if (o == 0 && dns_parse_put(out, outlen, &o, ".", 1) < 0)
		return -1;
	if (used)
		*used = i;
	return 0;
}

int dns_parse_mx(const unsigned char *p, size_t len, unsigned *pref, char *name, size_t namelen)
{
	size_t used = 0;

	if (len < 3)
		return -1;
	if (dns_parse_name(p + 2, len - 2, &used, name, namelen) < 0)
		return -1;
	if (used != len - 2)
		return -1; /* trailing bytes: not an MX rdata */
	*pref = ((unsigned)p[0] << 8) | p[1];
	return 0;
}

int dns_parse_txt(const unsigned char *p, size_t len, char *out, size_t outcap, size_t *outlen)
{
	size_t i = 0, o = 0;

	if (len == 0 || outcap == 0)
		return -1; /* RFC 1035 3.3.14: one or more strings */
	while (i < len) {
		size_t l = p[i++];
		if (l > len - i)
			return -1;
		if (l > outcap - 1 - o)
			return -1;
		memcpy(out + o, p + i, l);
		o += l;
		i += l;
	}
	out[o] = '\0';
	*outlen = o;
	return 0;
}

int dns_parse_a(const unsigned char *p, size_t len, int family, struct dns_addr *out)
{
	size_t want = family == AF_INET ? 4 : family == AF_INET6 ? 16 : 0;

	if (want == 0 || len != want)
		return -1;
	memset(out, 0, sizeof(*out));
	out->family = family;
	memcpy(out->bytes, p, want);
	if (!inet_ntop(family, out->bytes, out->text, sizeof(out->text)))
		return -1;
	return 0;
}

int dns_parse_ip(const char *s, struct dns_addr *out)
{
	unsigned char b[16];

	if (strchr(s, ':')) {
		if (inet_pton(AF_INET6, s, b) != 1)
			return -1;
		return dns_parse_a(b, 16, AF_INET6, out);
	}
	if (inet_pton(AF_INET, s, b) != 1)
		return -1;
	return dns_parse_a(b, 4, AF_INET, out);
}

int dns_parse_literal(const char *s, struct dns_addr *out)
{
	char tmp[64];
	size_t n = strlen(s);

	if (n < 3 || s[0] != '[' || s[n - 1] != ']' || n - 2 >= sizeof(tmp))
		return -1;
	memcpy(tmp, s + 1, n - 2);
	tmp[n - 2] = '\0';
	/* RFC 5321 4.1.3: IPv6 literals carry the "IPv6:" tag; a bare IPv4
	 * literal has none. */
	if (str_has_prefix_ci(tmp, n - 2, "IPv6:")) {
		unsigned char b[16];
		if (inet_pton(AF_INET6, tmp + 5, b) != 1)
			return -1;
		return dns_parse_a(b, 16, AF_INET6, out);
	}
	unsigned char b4[4];
	if (inet_pton(AF_INET, tmp, b4) != 1)
		return -1;
	return dns_parse_a(b4, 4, AF_INET, out);
}

int dns_parse_hostname_ok(const char *s)
{
	size_t n = strlen(s), label = 0;

	if (n > 0 && s[n - 1] == '.')
		n--;
	if (n == 0 || n > 253)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!dns_parse_plain_byte(c))
			return 0;
		if (++label > 63)
			return 0;
	}
	return label > 0;
}

socklen_t dns_addr_sockaddr(const struct dns_addr *a, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (a->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, a->bytes, 4);
		return sizeof(*sin);
	}
	if (a->family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, a->bytes, 16);
		return sizeof(*sin6);
	}
	return 0;
}
