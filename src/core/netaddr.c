/*
 * netaddr - address text and CIDR matching. See netaddr.h.
 */
#include "core/netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/str.h"

/* netaddr_bytes - the address as 4 or 16 bytes; IPv4-mapped IPv6 becomes IPv4 */
static int netaddr_bytes(const struct sockaddr_storage *ss, unsigned char *b)
{
	if (ss->ss_family == AF_INET) {
		memcpy(b, &((const struct sockaddr_in *)ss)->sin_addr, 4);
		return 4;
	}
	if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a)) {
			memcpy(b, a->s6_addr + 12, 4);
			return 4;
		}
		memcpy(b, a->s6_addr, 16);
		return 16;
	}
	return 0;
}

void netaddr_str(const struct sockaddr_storage *ss, char *out, size_t outlen)
{
	unsigned char b[16];
	int n = netaddr_bytes(ss, b);
	if (n == 0 || inet_ntop(n == 4 ? AF_INET : AF_INET6, b, out, (socklen_t)outlen) == NULL)
		snprintf(out, outlen, "unknown");
}

/* netaddr_parse_cidr - "a.b.c.d/len", "v6/len" or a bare address */
static int netaddr_parse_cidr(const char *entry, unsigned char *net, int *alen, unsigned *plen)
{
	char host[64];
	const char *slash = strchr(entry, '/');
	size_t hl = slash ? (size_t)(slash - entry) : strlen(entry);
	if (hl == 0 || hl >= sizeof(host))
		return -1;
	memcpy(host, entry, hl);
	host[hl] = '\0';
	if (inet_pton(AF_INET, host, net) == 1)
		*alen = 4;
	else if (inet_pton(AF_INET6, host, net) == 1)
		*alen = 16;
	else
		return -1;
	uint64_t p = (uint64_t)*alen * 8;
	if (slash && (str_parse_u64(slash + 1, strlen(slash + 1), &p) < 0 || p > (uint64_t)*alen * 8))
		return -1;
	*plen = (unsigned)p;
	return 0;
}

int netaddr_check_cidr(const char *entry)
{
	unsigned char net[16];
	int alen;
	unsigned plen;
	return netaddr_parse_cidr(entry, net, &alen, &plen);
}

int netaddr_in_list(const struct conf_list *list, const struct sockaddr_storage *ss)
{
	unsigned char a[16];
	int n = netaddr_bytes(ss, a);
	if (n == 0)
		return 0;
	for (size_t i = 0; i < list->n; i++) {
		unsigned char net[16];
		int alen;
		unsigned plen;
		if (netaddr_parse_cidr(list->v[i], net, &alen, &plen) < 0 || alen != n)
			continue;
		unsigned full = plen / 8, rest = plen % 8;
		if (memcmp(a, net, full) != 0)
			continue;
		if (rest) {
			unsigned char mask = (unsigned char)(0xff << (8 - rest));
			if ((a[full] & mask) != (net[full] & mask))
				continue;
		}
		return 1;
	}
	return 0;
}
